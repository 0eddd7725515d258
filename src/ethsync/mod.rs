//! Ethereum fast and snap sync: sans-IO engines (one per shard), the peer bookkeeping, the
//! serving peer, and a seeded deterministic simulator that runs the engines in virtual time.
//!
//! - [`engine::Engine`]: events in ([`engine::Event`]), actions out ([`engine::Action`]).
//! - [`serve::ServingPeer`]: answers [`types::Request`]s from a [`chain::ChainData`] and a
//!   [`chain::StateData`].
//! - [`sim::run`]: peers with latency, loss, lies, disconnects and stale state; kills and
//!   restarts from the journal and the store.

pub mod chain;
pub mod config;
pub mod driver;
pub mod engine;
pub mod peers;
pub mod persist;
pub mod rlp;
pub mod serve;
pub mod sim;
pub mod store;
pub mod trie;
pub mod types;

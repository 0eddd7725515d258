//! Ethereum fast and snap sync: sans-IO engines (one per shard), the peer bookkeeping, the
//! serving peer and a seeded deterministic simulator. The one driver that runs the engines
//! on the shard runtime, over RLPx or in-process peers, is
//! [`crate::eth::net::sync_sharded`].
//!
//! - [`engine::Engine`]: events in ([`engine::Event`]: peer joined/left, response,
//!   timeout, shard message, tick), actions out ([`engine::Action`]: send a request to a
//!   peer, message a shard, drop a peer, finished). Shard 0 coordinates (pivot, header
//!   joins, snap trie top, end of each state walk). `get_status` / `get_progress` are
//!   [`engine::Engine::status`] and [`engine::Engine::get_progress`].
//! - [`crate::eth::serve::ServingPeer::handle`]: answers eth (GetBlockHeaders, GetBlockBodies,
//!   GetReceipts, GetNodeData) and snap/1 requests from a [`chain::ChainData`] and
//!   [`chain::StateData`] within the protocol limits.
//! - [`store::SyncStore`]: what the engines persist; [`store::MemStore`] in memory,
//!   [`persist::DiskStore`] over the per-shard io store and the atomic journal; both made
//!   durable at [`store::Commit::commit`] after each batch of events.
//! - [`sim::run`]: peers with latency, loss, lies, garbage, disconnects and stale state;
//!   kills and restarts from the journal and the store; a growing chain; mode switches.

pub mod chain;
pub mod config;
pub mod engine;
pub mod peers;
pub mod persist;
pub mod sim;
pub mod sim_cmd;
pub mod sim_live;
pub mod store;
pub mod trie;
pub mod types;

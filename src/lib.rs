//! catchup: a thread-per-core node that brings a validator from zero to the chain tip.
//!
//! The library holds the node itself (sync engines, peers, progress, admin endpoint,
//! the embedded devnet); the binary in `main.rs` is only the command line.

pub mod admin;
pub mod cli;
pub mod download;
pub mod ethsync;
pub mod obs;
pub mod p2p;
pub mod repair;
pub mod snapshot;

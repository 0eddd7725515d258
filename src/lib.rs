//! catchup: a thread-per-core node that brings a validator from zero to the chain tip.
//!
//! The library is the node, by chain family: [`eth`] (sync engines, the devp2p wire,
//! serving) and [`solana`] (download, snapshot loading, shred repair), beside [`node`]
//! (what both share: admin endpoint, observability). [`cli`] only parses arguments and
//! calls into them; the binary in `main.rs` runs it.

pub mod cli;
pub mod eth;
pub mod node;
pub mod solana;

//! Solana: snapshot discovery and download, the verifying snapshot loader, shred repair.
//!
//! - [`download`]: sources, the chunk coordinator, multi-source HTTP Range download with
//!   scoring and resume, pipelined into the loader.
//! - [`snapshot`]: zstd + tar unpack, the sharded account index, LtHash and capitalization
//!   checks; archive generation for devnets and benches.
//! - [`repair`]: shred repair of the slot gap to the tip, newest slots first, over UDP or
//!   AF_XDP, and the repair server.
//! - [`gossip`]: keypair files, the UDP gossip node, and the choice of a snapshot that
//!   known validators advertise.
//! - [`handoff`]: verified archives placed where agave-validator and Firedancer look.

pub mod download;
pub mod gossip;
pub mod handoff;
pub mod repair;
pub mod snapshot;
pub mod sync_cmd;

//! Sans-IO Ethereum node discovery.
//!
//! Bytes in, typed values or typed errors out; no sockets, files or runtime.
//! - [`enr::Enr`]: EIP-778 node records ("v4" identity scheme)
//! - [`v4`]: discovery v4 packets and a bonding/lookup service
//! - [`v5`]: discovery v5.1 packets, sessions and a lookup service
//! - [`dns`]: EIP-1459 DNS node lists and a tree walker; [`dns_wire`]: the TXT queries
//! - [`table::Table`]: the Kademlia table with endpoint proofs
//! - [`Discovery`]: the driver-facing interface both services implement

pub mod crypto;
pub mod dns;
pub mod dns_wire;
pub mod enr;
pub mod error;
pub mod service;
pub mod table;
pub mod v4;
pub mod v5;

pub use crypto::NodeId;
pub use enr::{Enr, EnrBuilder};
pub use error::{DiscError, DropCounters, DropReason};
/// The secp256k1 crate these APIs use for keys.
pub use secp256k1;
pub use service::{Discovery, ForkFilter, Peer, Transmit};

//! Sans-IO devp2p: RLPx ECIES handshake, framing and MACs, Hello, eth/66-70 and snap/1 messages.
//!
//! Bytes in, typed values or typed errors out; no sockets, files or runtime.
//! - [`handshake::Handshake`]: auth/ack (plain and EIP-8) → [`handshake::Secrets`]
//! - [`frame::Session`]: AES-CTR + keccak-MAC frames
//! - [`p2p::MessageConn`]: message ids and snappy over a session; Hello, Disconnect, capabilities
//! - [`eth::EthMessage`], [`snap::SnapMessage`], [`forkid::ForkId`], [`enode::Enode`]

pub mod ecies;
pub mod enode;
pub mod error;
pub mod eth;
pub mod forkid;
pub mod frame;
pub mod handshake;
pub mod p2p;
pub mod rlp;
pub mod snap;

pub use error::{Devp2pError, Result};
/// The secp256k1 crate these APIs use for keys.
pub use secp256k1;

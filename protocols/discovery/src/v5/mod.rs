//! Node Discovery v5.1: packet masking and framing, messages, handshake cryptography and a
//! sans-IO service.

pub mod crypto;
pub mod message;
pub mod packet;
pub mod service;

pub use crate::service::{Discovery, ForkFilter, Peer, Transmit};
pub use message::{Message, RequestId};
pub use packet::{AuthData, Packet};
pub use service::{Config, Event, FoundNode, Service};

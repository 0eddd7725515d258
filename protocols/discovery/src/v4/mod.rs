//! Node Discovery v4: the packet codec and a sans-IO service.

pub mod packet;
pub mod service;

pub use crate::service::{Discovery, ForkFilter, Peer, Transmit};
pub use packet::{decode, encode, Decoded, Endpoint, Message, NodeRecord};
pub use service::{Bootnode, Config, Event, FoundNode, Service};

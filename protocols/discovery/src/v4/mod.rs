//! Node Discovery v4: the packet codec and a sans-IO service.

pub mod packet;
pub mod service;

pub use packet::{decode, encode, Decoded, Endpoint, Message, NodeRecord};
pub use service::{Bootnode, Config, Event, FoundNode, Service, Transmit};

//! Node Discovery v4: the packet codec and a sans-IO service.

pub mod packet;

pub use packet::{decode, encode, Decoded, Endpoint, Message, NodeRecord};

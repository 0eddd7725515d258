//! Peers over the devp2p wire on glommio: RLPx connections (dial and accept), eth/snap
//! requests with ids and deadlines, the node key, and the serving node behind
//! `catchup eth serve`.
//!
//! A connection lives on the shard that opened or accepted it; every shard listens on the
//! same address (glommio binds with SO_REUSEPORT) so the kernel spreads inbound peers.

pub mod bench;
pub mod chain;
pub mod chainspec;
pub mod cmd;
pub mod conn;
pub mod convert;
pub mod devnet;
pub mod download;
pub mod engine_serve;
pub mod eth_peer;
pub mod live;
pub mod node_key;
pub mod server;
pub mod sync_net;
pub mod sync_sharded;
pub mod wire;

pub use conn::{LocalNode, NetConfig, NetError, PeerConn};
pub use eth_peer::{EthPeer, Responder, StatusInfo};
pub use wire::Wire;

//! What a driver needs from either discovery service: one trait over [`crate::v4::Service`]
//! and [`crate::v5::Service`], so the code that owns the UDP socket and the clock is the
//! same for both.

use std::net::SocketAddr;

use catchup_devp2p::forkid::ForkId;

use crate::crypto::NodeId;
use crate::enr::Enr;
use crate::error::DropCounters;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dest: SocketAddr,
    pub packet: Vec<u8>,
}

/// Decides whether a node's `eth` fork id is compatible with ours (for example with
/// `catchup_devp2p::forkid::ForkSchedule::validate`).
pub type ForkFilter = Box<dyn Fn(&ForkId) -> bool + Send>;

/// A node that proved its endpoint, as either protocol found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    /// Discovery endpoint.
    pub udp: SocketAddr,
    /// RLPx endpoint, when known.
    pub tcp: Option<SocketAddr>,
    pub enr: Option<Enr>,
    /// `None` without a record, an `eth` entry or a filter.
    pub eth_compatible: Option<bool>,
    pub last_seen_ms: u64,
}

/// The sans-IO interface both services implement. Time is milliseconds since the UNIX
/// epoch, supplied by the caller.
pub trait Discovery {
    /// Contact the bootnodes and start the first lookup.
    fn start(&mut self, now_ms: u64);
    fn handle_packet(&mut self, from: SocketAddr, data: &[u8], now_ms: u64);
    /// Call at (or after) [`Discovery::poll_timeout`].
    fn handle_timeout(&mut self, now_ms: u64);
    fn poll_timeout(&self) -> Option<u64>;
    fn poll_transmit(&mut self) -> Option<Transmit>;
    fn local_id(&self) -> NodeId;
    fn local_enr(&self) -> &Enr;
    /// Nodes found so far.
    fn peers(&self) -> Vec<Peer>;
    /// Dropped incoming packets by reason.
    fn drops(&self) -> &DropCounters;
}

pub(crate) fn eth_compatible(filter: Option<&ForkFilter>, enr: &Enr) -> Option<bool> {
    match (filter, enr.eth_fork_id()) {
        (Some(f), Some(Ok(fid))) => Some(f(&fid)),
        (Some(_), Some(Err(_))) => Some(false),
        _ => None,
    }
}

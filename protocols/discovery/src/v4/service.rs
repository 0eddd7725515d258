//! A sans-IO discovery v4 service: bonding (ping/pong endpoint proofs), the Kademlia table
//! with liveness checks, iterative lookups with `alpha = 3` parallel FindNode queries, and
//! ENR requests.
//!
//! The driver feeds it received datagrams ([`Service::handle_packet`]) and the time
//! ([`Service::handle_timeout`] at [`Service::poll_timeout`]), and sends what
//! [`Service::poll_transmit`] returns. Time is milliseconds since the UNIX epoch (packet
//! expirations are absolute UNIX seconds).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use catchup_devp2p::enode::Enode;
use catchup_devp2p::forkid::ForkId;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use secp256k1::{SecretKey, SECP256K1};

use crate::crypto::{self, NodeId};
use crate::enr::{Enr, EnrBuilder};
use crate::error::{DiscError, DropCounters, DropReason};
use crate::service::{self as common, Discovery, ForkFilter, Peer, Transmit};
use crate::table::{EndpointProofs, Insert, Table, BUCKET_SIZE};
use crate::v4::packet::{
    self, EnrRequest, EnrResponse, FindNode, Message, Neighbors, NodeRecord, Ping, Pong,
    MAX_NEIGHBORS_PER_PACKET,
};
use crate::v4::Endpoint;

/// Parallel FindNode queries per lookup.
pub const ALPHA: usize = 3;
/// Lifetime given to outgoing packets.
pub const EXPIRATION_SECS: u64 = 20;
pub const PING_TIMEOUT_MS: u64 = 1_000;
pub const RESPONSE_TIMEOUT_MS: u64 = 1_000;
/// How long a request waits for the remote's ping that completes the bond.
pub const BOND_TIMEOUT_MS: u64 = 2_000;
/// After the remote's ping arrives, queued queries wait this long so that our pong reaches
/// it first (datagrams sent back to back may be reordered).
pub const BOND_SETTLE_MS: u64 = 100;
/// After the pong to a bonding ping, queued queries go out after this wait even if the
/// remote does not ping back (it may still hold a proof of our endpoint).
pub const BOND_PONG_WAIT_MS: u64 = 500;
pub const REVALIDATE_INTERVAL_MS: u64 = 10_000;
pub const REFRESH_INTERVAL_MS: u64 = 30_000;
pub const MAX_PENDING: usize = 256;
pub const MAX_QUEUED_PER_NODE: usize = 4;
pub const MAX_FOUND_NODES: usize = 4_096;
pub const MAX_TRANSMIT_QUEUE: usize = 1_024;
pub const MAX_EVENTS: usize = 1_024;
pub const MAX_LOOKUPS: usize = 4;
/// Candidates a lookup keeps (closest to the target).
pub const MAX_LOOKUP_CANDIDATES: usize = 64;
pub const MAX_PROOFS: usize = 8_192;
/// Record requests retried per revalidation tick for nodes whose record never arrived.
pub const ENR_RETRIES_PER_TICK: usize = 3;

/// A bootstrap node: its public key and discovery endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bootnode {
    pub pubkey: [u8; 64],
    pub udp: SocketAddr,
}

impl From<Enode> for Bootnode {
    fn from(e: Enode) -> Self {
        Bootnode {
            pubkey: e.id,
            udp: e.addr,
        }
    }
}

pub struct Config {
    pub key: SecretKey,
    /// Our discovery endpoint as others reach it.
    pub endpoint: SocketAddr,
    pub tcp_port: u16,
    pub bootnodes: Vec<Bootnode>,
    /// Announced in our record's `eth` entry.
    pub fork_id: Option<ForkId>,
    pub fork_filter: Option<ForkFilter>,
    pub rng_seed: u64,
}

/// A node that answered our ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundNode {
    pub id: NodeId,
    pub pubkey: [u8; 64],
    pub udp: SocketAddr,
    pub tcp_port: u16,
    pub enr: Option<Enr>,
    /// `None` without a record, an `eth` entry or a filter.
    pub eth_compatible: Option<bool>,
    /// Last pong, neighbors or record received from it.
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A node proved its endpoint for the first time.
    NodeFound(NodeId),
    /// A node's record arrived (or a newer one).
    EnrUpdated(NodeId),
    LookupDone {
        target: NodeId,
        queried: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodeInfo {
    pubkey: [u8; 64],
    tcp_port: u16,
}

#[derive(Debug, Clone, Copy)]
struct PendingPing {
    hash: [u8; 32],
    addr: SocketAddr,
    sent_ms: u64,
    pubkey: [u8; 64],
}

#[derive(Debug, Clone, Copy)]
struct PendingFind {
    lookup: u64,
    addr: SocketAddr,
    sent_ms: u64,
    received: usize,
}

#[derive(Debug, Clone, Copy)]
enum Queued {
    FindNode { lookup: u64, target: [u8; 64] },
    EnrRequest,
}

#[derive(Debug, Clone)]
struct Waiting {
    addr: SocketAddr,
    since_ms: u64,
    /// Set when the remote's ping arrived: the queued queries go out at this time.
    ready_ms: Option<u64>,
    queued: Vec<Queued>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CandState {
    NotAsked,
    Asked,
    Responded,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    id: NodeId,
    pubkey: [u8; 64],
    addr: SocketAddr,
    state: CandState,
}

#[derive(Debug, Clone)]
struct Lookup {
    id: u64,
    target: NodeId,
    target_key: [u8; 64],
    candidates: Vec<Candidate>,
}

impl Lookup {
    fn add(&mut self, c: Candidate) {
        if self.candidates.iter().any(|x| x.id == c.id) {
            return;
        }
        let d = self.target.distance(&c.id);
        let pos = self
            .candidates
            .partition_point(|x| self.target.distance(&x.id) < d);
        if pos >= MAX_LOOKUP_CANDIDATES {
            return;
        }
        self.candidates.insert(pos, c);
        self.candidates.truncate(MAX_LOOKUP_CANDIDATES);
    }

    fn in_flight(&self) -> usize {
        self.candidates
            .iter()
            .filter(|c| c.state == CandState::Asked)
            .count()
    }

    /// Up to `n` not yet asked among the `k` closest live candidates.
    fn next_to_ask(&self, n: usize) -> Vec<usize> {
        self.candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state != CandState::Failed)
            .take(BUCKET_SIZE)
            .filter(|(_, c)| c.state == CandState::NotAsked)
            .map(|(i, _)| i)
            .take(n)
            .collect()
    }

    fn set_state(&mut self, id: &NodeId, state: CandState) {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.id == *id) {
            if c.state == CandState::Asked {
                c.state = state;
            }
        }
    }
}

/// The discovery v4 state machine.
pub struct Service {
    key: SecretKey,
    pub64: [u8; 64],
    local_id: NodeId,
    endpoint: SocketAddr,
    tcp_port: u16,
    enr: Enr,
    fork_filter: Option<ForkFilter>,
    bootnodes: Vec<Bootnode>,
    table: Table<NodeInfo>,
    /// Nodes that answered our ping (their endpoint is proven to us).
    proofs: EndpointProofs,
    /// Nodes whose ping we answered (our endpoint is proven to them).
    pinged_by: EndpointProofs,
    pending_pings: HashMap<NodeId, PendingPing>,
    pending_finds: HashMap<NodeId, PendingFind>,
    pending_enr: HashMap<NodeId, ([u8; 32], u64, SocketAddr)>,
    waiting: HashMap<NodeId, Waiting>,
    lookups: Vec<Lookup>,
    next_lookup_id: u64,
    nodes: HashMap<NodeId, FoundNode>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    drops: DropCounters,
    rng: StdRng,
    next_revalidate_ms: u64,
    next_refresh_ms: u64,
    started: bool,
}

impl Service {
    pub fn new(config: Config) -> Result<Service, DiscError> {
        let pk = config.key.public_key(SECP256K1);
        let mut b = EnrBuilder::new(1).endpoint(config.endpoint, config.tcp_port);
        if let Some(f) = config.fork_id {
            b = b.eth(f);
        }
        let enr = b.build(&config.key)?;
        let local_id = NodeId::from_public_key(&pk);
        Ok(Service {
            key: config.key,
            pub64: crypto::pub64(&pk),
            local_id,
            endpoint: config.endpoint,
            tcp_port: config.tcp_port,
            enr,
            fork_filter: config.fork_filter,
            bootnodes: config.bootnodes,
            table: Table::new(local_id),
            proofs: EndpointProofs::new(MAX_PROOFS),
            pinged_by: EndpointProofs::new(MAX_PROOFS),
            pending_pings: HashMap::new(),
            pending_finds: HashMap::new(),
            pending_enr: HashMap::new(),
            waiting: HashMap::new(),
            lookups: Vec::new(),
            next_lookup_id: 1,
            nodes: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            drops: DropCounters::default(),
            rng: StdRng::seed_from_u64(config.rng_seed),
            next_revalidate_ms: 0,
            next_refresh_ms: 0,
            started: false,
        })
    }

    pub fn local_id(&self) -> NodeId {
        self.local_id
    }

    pub fn local_enr(&self) -> &Enr {
        &self.enr
    }

    /// Entries in the Kademlia table.
    /// Whether `id` is in the Kademlia table (alive as far as we know).
    pub fn in_table(&self, id: &NodeId) -> bool {
        self.table.contains(id)
    }

    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// The `n` table entries closest to `target`: (id, discovery endpoint).
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<(NodeId, SocketAddr)> {
        self.table
            .closest(target, n)
            .into_iter()
            .map(|e| (e.id, e.addr))
            .collect()
    }

    /// Nodes that proved their endpoint, with their records once fetched.
    pub fn nodes(&self) -> impl Iterator<Item = &FoundNode> {
        self.nodes.values()
    }

    pub fn node(&self, id: &NodeId) -> Option<&FoundNode> {
        self.nodes.get(id)
    }

    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    pub fn lookups_running(&self) -> usize {
        self.lookups.len()
    }

    /// Ping the bootnodes and look up our own id.
    pub fn start(&mut self, now_ms: u64) {
        self.started = true;
        let boots = self.bootnodes.clone();
        for b in &boots {
            self.send_ping(NodeId::from_pub64(&b.pubkey), b.pubkey, b.udp, now_ms);
        }
        let target = self.pub64;
        self.start_lookup(target, now_ms);
        self.next_revalidate_ms = now_ms + REVALIDATE_INTERVAL_MS;
        self.next_refresh_ms = now_ms + REFRESH_INTERVAL_MS;
    }

    /// Start a lookup towards a random target.
    pub fn lookup_random(&mut self, now_ms: u64) {
        let mut target = [0u8; 64];
        self.rng.fill_bytes(&mut target);
        self.start_lookup(target, now_ms);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn event(&mut self, e: Event) {
        if self.events.len() < MAX_EVENTS {
            self.events.push_back(e);
        }
    }

    fn send(&mut self, dest: SocketAddr, msg: &Message) -> Option<[u8; 32]> {
        if self.transmits.len() >= MAX_TRANSMIT_QUEUE {
            self.drops.add(DropReason::QueueFull);
            return None;
        }
        let (packet, hash) = packet::encode(msg, &self.key).ok()?;
        self.transmits.push_back(Transmit { dest, packet });
        Some(hash)
    }

    fn expiration(now_ms: u64) -> u64 {
        now_ms / 1000 + EXPIRATION_SECS
    }

    fn our_endpoint(&self) -> Endpoint {
        Endpoint {
            ip: self.endpoint.ip(),
            udp_port: self.endpoint.port(),
            tcp_port: self.tcp_port,
        }
    }

    fn send_ping(&mut self, id: NodeId, pubkey: [u8; 64], addr: SocketAddr, now_ms: u64) {
        if id == self.local_id || self.pending_pings.contains_key(&id) {
            return;
        }
        if self.pending_pings.len() >= MAX_PENDING {
            return;
        }
        let msg = Message::Ping(Ping {
            version: 4,
            from: self.our_endpoint(),
            to: Endpoint {
                ip: addr.ip(),
                udp_port: addr.port(),
                tcp_port: 0,
            },
            expiration: Self::expiration(now_ms),
            enr_seq: Some(self.enr.seq()),
        });
        if let Some(hash) = self.send(addr, &msg) {
            self.pending_pings.insert(
                id,
                PendingPing {
                    hash,
                    addr,
                    sent_ms: now_ms,
                    pubkey,
                },
            );
            self.table.ping_sent(&id, now_ms);
        }
    }

    /// Send a query now if the remote has had our pong for a moment, else queue it (and
    /// ping the remote if it has never pinged us).
    fn query(&mut self, id: NodeId, pubkey: [u8; 64], addr: SocketAddr, q: Queued, now_ms: u64) {
        let bonded_at = self.pinged_by.recorded_at(&id, addr.ip(), now_ms);
        if bonded_at.is_some_and(|t| t + BOND_SETTLE_MS <= now_ms) {
            self.send_query(id, addr, q, now_ms);
            return;
        }
        if !self.waiting.contains_key(&id) && self.waiting.len() >= MAX_PENDING {
            self.fail_query(&id, q);
            return;
        }
        let w = self.waiting.entry(id).or_insert(Waiting {
            addr,
            since_ms: now_ms,
            ready_ms: bonded_at.map(|t| t + BOND_SETTLE_MS),
            queued: Vec::new(),
        });
        if w.queued.len() >= MAX_QUEUED_PER_NODE {
            self.fail_query(&id, q);
            return;
        }
        w.queued.push(q);
        if bonded_at.is_none() {
            self.send_ping(id, pubkey, addr, now_ms);
        }
    }

    fn fail_query(&mut self, id: &NodeId, q: Queued) {
        if let Queued::FindNode { lookup, .. } = q {
            if let Some(l) = self.lookups.iter_mut().find(|l| l.id == lookup) {
                l.set_state(id, CandState::Failed);
            }
        }
    }

    fn send_query(&mut self, id: NodeId, addr: SocketAddr, q: Queued, now_ms: u64) {
        match q {
            Queued::FindNode { lookup, target } => {
                if self.pending_finds.contains_key(&id) || self.pending_finds.len() >= MAX_PENDING {
                    self.fail_query(&id, q);
                    return;
                }
                let msg = Message::FindNode(FindNode {
                    target,
                    expiration: Self::expiration(now_ms),
                });
                if self.send(addr, &msg).is_some() {
                    self.pending_finds.insert(
                        id,
                        PendingFind {
                            lookup,
                            addr,
                            sent_ms: now_ms,
                            received: 0,
                        },
                    );
                } else {
                    self.fail_query(&id, q);
                }
            }
            Queued::EnrRequest => {
                if self.pending_enr.contains_key(&id) || self.pending_enr.len() >= MAX_PENDING {
                    return;
                }
                let msg = Message::EnrRequest(EnrRequest {
                    expiration: Self::expiration(now_ms),
                });
                if let Some(hash) = self.send(addr, &msg) {
                    self.pending_enr.insert(id, (hash, now_ms, addr));
                }
            }
        }
    }

    fn start_lookup(&mut self, target_key: [u8; 64], now_ms: u64) {
        if self.lookups.len() >= MAX_LOOKUPS {
            return;
        }
        let target = NodeId::from_pub64(&target_key);
        let mut l = Lookup {
            id: self.next_lookup_id,
            target,
            target_key,
            candidates: Vec::new(),
        };
        self.next_lookup_id += 1;
        for e in self.table.closest(&target, BUCKET_SIZE) {
            l.add(Candidate {
                id: e.id,
                pubkey: e.data.pubkey,
                addr: e.addr,
                state: CandState::NotAsked,
            });
        }
        for b in &self.bootnodes {
            l.add(Candidate {
                id: NodeId::from_pub64(&b.pubkey),
                pubkey: b.pubkey,
                addr: b.udp,
                state: CandState::NotAsked,
            });
        }
        self.lookups.push(l);
        self.advance_lookups(now_ms);
    }

    fn advance_lookups(&mut self, now_ms: u64) {
        let mut i = 0;
        while i < self.lookups.len() {
            let in_flight = self.lookups[i].in_flight();
            let next = self.lookups[i].next_to_ask(ALPHA.saturating_sub(in_flight));
            if next.is_empty() && in_flight == 0 {
                let l = self.lookups.swap_remove(i);
                let queried = l
                    .candidates
                    .iter()
                    .filter(|c| c.state == CandState::Responded)
                    .count();
                self.event(Event::LookupDone {
                    target: l.target,
                    queried,
                });
                continue;
            }
            let lookup_id = self.lookups[i].id;
            let target = self.lookups[i].target_key;
            for idx in next {
                let c = &mut self.lookups[i].candidates[idx];
                c.state = CandState::Asked;
                let (id, pubkey, addr) = (c.id, c.pubkey, c.addr);
                self.query(
                    id,
                    pubkey,
                    addr,
                    Queued::FindNode {
                        lookup: lookup_id,
                        target,
                    },
                    now_ms,
                );
            }
            i += 1;
        }
    }

    /// Handle one received datagram.
    pub fn handle_packet(&mut self, from: SocketAddr, data: &[u8], now_ms: u64) {
        let d = match packet::decode(data, now_ms / 1000) {
            Ok(d) => d,
            Err(e) => {
                self.drops.add(e.reason());
                return;
            }
        };
        if d.sender_id == self.local_id {
            self.drops.add(DropReason::Unsolicited);
            return;
        }
        match d.message {
            Message::Ping(p) => self.on_ping(from, d.sender, d.sender_id, d.hash, p, now_ms),
            Message::Pong(p) => self.on_pong(from, d.sender_id, p, now_ms),
            Message::FindNode(f) => self.on_find_node(from, d.sender_id, f, now_ms),
            Message::Neighbors(n) => self.on_neighbors(from, d.sender_id, n, now_ms),
            Message::EnrRequest(_) => self.on_enr_request(from, d.sender_id, d.hash, now_ms),
            Message::EnrResponse(r) => self.on_enr_response(from, d.sender_id, r, now_ms),
        }
    }

    fn on_ping(
        &mut self,
        from: SocketAddr,
        pubkey: [u8; 64],
        id: NodeId,
        hash: [u8; 32],
        p: Ping,
        now_ms: u64,
    ) {
        let pong = Message::Pong(Pong {
            to: Endpoint {
                ip: from.ip(),
                udp_port: from.port(),
                tcp_port: p.from.tcp_port,
            },
            ping_hash: hash,
            expiration: Self::expiration(now_ms),
            enr_seq: Some(self.enr.seq()),
        });
        if self.send(from, &pong).is_none() {
            return;
        }
        self.pinged_by.record(id, from.ip(), now_ms);
        let stale_record = match self.nodes.get_mut(&id) {
            Some(n) => {
                n.tcp_port = p.from.tcp_port;
                match (n.enr.as_ref(), p.enr_seq) {
                    (Some(e), Some(theirs)) => theirs > e.seq(),
                    _ => false,
                }
            }
            None => false,
        };
        if stale_record {
            self.query(id, pubkey, from, Queued::EnrRequest, now_ms);
        }
        if self.proofs.is_verified(&id, from.ip(), now_ms) {
            let info = NodeInfo {
                pubkey,
                tcp_port: p.from.tcp_port,
            };
            self.add_live(id, from, info, now_ms);
        } else {
            self.send_ping(id, pubkey, from, now_ms);
        }
        if let Some(w) = self.waiting.get_mut(&id) {
            let at = now_ms + BOND_SETTLE_MS;
            w.ready_ms = Some(w.ready_ms.map_or(at, |t| t.min(at)));
        }
    }

    fn on_pong(&mut self, from: SocketAddr, id: NodeId, p: Pong, now_ms: u64) {
        let matches = self
            .pending_pings
            .get(&id)
            .is_some_and(|pp| pp.hash == p.ping_hash && pp.addr == from);
        if !matches {
            self.drops.add(DropReason::Unsolicited);
            return;
        }
        let Some(pp) = self.pending_pings.remove(&id) else {
            return;
        };
        self.proofs.record(id, from.ip(), now_ms);
        if let Some(w) = self.waiting.get_mut(&id) {
            let at = now_ms + BOND_PONG_WAIT_MS;
            w.ready_ms = Some(w.ready_ms.map_or(at, |t| t.min(at)));
        }
        let info = NodeInfo {
            pubkey: pp.pubkey,
            tcp_port: self.nodes.get(&id).map_or(from.port(), |n| n.tcp_port),
        };
        self.add_live(id, from, info, now_ms);
        let known_seq = match self.nodes.get_mut(&id) {
            Some(n) => {
                n.last_seen_ms = now_ms;
                n.enr.as_ref().map(|e| e.seq())
            }
            None => {
                if self.nodes.len() < MAX_FOUND_NODES {
                    self.nodes.insert(
                        id,
                        FoundNode {
                            id,
                            pubkey: pp.pubkey,
                            udp: from,
                            tcp_port: info.tcp_port,
                            enr: None,
                            eth_compatible: None,
                            last_seen_ms: now_ms,
                        },
                    );
                    self.event(Event::NodeFound(id));
                }
                None
            }
        };
        let wants_enr = match (known_seq, p.enr_seq) {
            (None, _) => true,
            (Some(have), Some(theirs)) => theirs > have,
            (Some(_), None) => false,
        };
        if wants_enr && self.nodes.contains_key(&id) {
            self.query(id, pp.pubkey, from, Queued::EnrRequest, now_ms);
        }
    }

    /// A node with a proven endpoint showed it is alive: refresh or insert it; a full
    /// bucket gets its oldest entry pinged.
    fn add_live(&mut self, id: NodeId, addr: SocketAddr, info: NodeInfo, now_ms: u64) {
        if self.table.get(&id).is_some_and(|e| e.addr == addr) {
            self.table.seen(&id, now_ms);
            return;
        }
        if let Insert::Full { oldest } = self.table.insert(id, addr, info, now_ms) {
            if let Some(e) = self.table.get(&oldest) {
                let (pk, a) = (e.data.pubkey, e.addr);
                self.send_ping(oldest, pk, a, now_ms);
            }
        }
    }

    fn on_find_node(&mut self, from: SocketAddr, id: NodeId, f: FindNode, now_ms: u64) {
        if !self.proofs.is_verified(&id, from.ip(), now_ms) {
            self.drops.add(DropReason::Unverified);
            return;
        }
        let target = NodeId::from_pub64(&f.target);
        let nodes: Vec<NodeRecord> = self
            .table
            .closest(&target, BUCKET_SIZE)
            .into_iter()
            .map(|e| NodeRecord {
                endpoint: Endpoint {
                    ip: e.addr.ip(),
                    udp_port: e.addr.port(),
                    tcp_port: e.data.tcp_port,
                },
                id: e.data.pubkey,
            })
            .collect();
        // An empty table still answers, with one empty packet.
        let mut chunks: Vec<&[NodeRecord]> = nodes.chunks(MAX_NEIGHBORS_PER_PACKET).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for chunk in chunks {
            let msg = Message::Neighbors(Neighbors {
                nodes: chunk.to_vec(),
                expiration: Self::expiration(now_ms),
            });
            self.send(from, &msg);
        }
    }

    fn on_neighbors(&mut self, from: SocketAddr, id: NodeId, n: Neighbors, now_ms: u64) {
        let Some(pf) = self.pending_finds.get_mut(&id).filter(|pf| pf.addr == from) else {
            self.drops.add(DropReason::Unsolicited);
            return;
        };
        pf.received += n.nodes.len();
        let lookup = pf.lookup;
        // Answers are split into packets of `MAX_NEIGHBORS_PER_PACKET`: a shorter packet is
        // the last one, so a small network's answer completes without waiting for the
        // response timeout.
        let complete = pf.received >= BUCKET_SIZE || n.nodes.len() < MAX_NEIGHBORS_PER_PACKET;
        self.table.seen(&id, now_ms);
        if let Some(n) = self.nodes.get_mut(&id) {
            n.last_seen_ms = now_ms;
        }
        if let Some(l) = self.lookups.iter_mut().find(|l| l.id == lookup) {
            for rec in &n.nodes {
                let nid = NodeId::from_pub64(&rec.id);
                if nid == self.local_id || rec.endpoint.udp_port == 0 {
                    continue;
                }
                if crypto::pub_from64(&rec.id).is_none() {
                    continue;
                }
                l.add(Candidate {
                    id: nid,
                    pubkey: rec.id,
                    addr: SocketAddr::new(rec.endpoint.ip, rec.endpoint.udp_port),
                    state: CandState::NotAsked,
                });
            }
        }
        if complete {
            self.pending_finds.remove(&id);
            if let Some(l) = self.lookups.iter_mut().find(|l| l.id == lookup) {
                l.set_state(&id, CandState::Responded);
            }
        }
        self.advance_lookups(now_ms);
    }

    fn on_enr_request(&mut self, from: SocketAddr, id: NodeId, hash: [u8; 32], now_ms: u64) {
        if !self.proofs.is_verified(&id, from.ip(), now_ms) {
            self.drops.add(DropReason::Unverified);
            return;
        }
        let msg = Message::EnrResponse(EnrResponse {
            request_hash: hash,
            enr: self.enr.clone(),
        });
        self.send(from, &msg);
    }

    fn on_enr_response(&mut self, from: SocketAddr, id: NodeId, r: EnrResponse, now_ms: u64) {
        let expected = self
            .pending_enr
            .get(&id)
            .filter(|(_, _, addr)| *addr == from)
            .map(|(h, _, _)| *h);
        if expected != Some(r.request_hash) {
            self.drops.add(DropReason::Unsolicited);
            return;
        }
        self.pending_enr.remove(&id);
        if r.enr.node_id() != id {
            self.drops.add(DropReason::BadRecord);
            return;
        }
        let compatible = common::eth_compatible(self.fork_filter.as_ref(), &r.enr);
        if let Some(n) = self.nodes.get_mut(&id) {
            n.last_seen_ms = now_ms;
            if n.enr.as_ref().is_none_or(|e| e.seq() < r.enr.seq()) {
                if let Some(tcp) = r.enr.tcp4() {
                    n.tcp_port = tcp;
                }
                n.enr = Some(r.enr);
                n.eth_compatible = compatible;
                self.event(Event::EnrUpdated(id));
            }
        }
    }

    /// The next instant [`Service::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        if !self.started {
            return None;
        }
        let mut t = self.next_revalidate_ms.min(self.next_refresh_ms);
        for p in self.pending_pings.values() {
            t = t.min(p.sent_ms + PING_TIMEOUT_MS);
        }
        for p in self.pending_finds.values() {
            t = t.min(p.sent_ms + RESPONSE_TIMEOUT_MS);
        }
        for (_, sent, _) in self.pending_enr.values() {
            t = t.min(sent + RESPONSE_TIMEOUT_MS);
        }
        for w in self.waiting.values() {
            t = t.min(w.ready_ms.unwrap_or(w.since_ms + BOND_TIMEOUT_MS));
        }
        Some(t)
    }

    pub fn handle_timeout(&mut self, now_ms: u64) {
        if !self.started {
            return;
        }
        let expired: Vec<NodeId> = self
            .pending_pings
            .iter()
            .filter(|(_, p)| p.sent_ms + PING_TIMEOUT_MS <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.pending_pings.remove(&id);
            if self
                .table
                .get(&id)
                .is_some_and(|e| e.ping_sent_ms.is_some())
            {
                self.table.remove(&id);
            }
        }
        let expired: Vec<(NodeId, PendingFind)> = self
            .pending_finds
            .iter()
            .filter(|(_, p)| p.sent_ms + RESPONSE_TIMEOUT_MS <= now_ms)
            .map(|(id, p)| (*id, *p))
            .collect();
        for (id, p) in expired {
            self.pending_finds.remove(&id);
            let state = if p.received > 0 {
                CandState::Responded
            } else {
                // Silence may mean the remote lost our endpoint proof: bond again next time.
                self.pinged_by.forget(&id, p.addr.ip());
                CandState::Failed
            };
            if let Some(l) = self.lookups.iter_mut().find(|l| l.id == p.lookup) {
                l.set_state(&id, state);
            }
        }
        let expired: Vec<(NodeId, SocketAddr)> = self
            .pending_enr
            .iter()
            .filter(|(_, (_, sent, _))| *sent + RESPONSE_TIMEOUT_MS <= now_ms)
            .map(|(id, (_, _, addr))| (*id, *addr))
            .collect();
        for (id, addr) in expired {
            self.pending_enr.remove(&id);
            self.pinged_by.forget(&id, addr.ip());
        }
        let due: Vec<NodeId> = self
            .waiting
            .iter()
            .filter(|(_, w)| {
                w.ready_ms.is_some_and(|t| t <= now_ms)
                    || (w.ready_ms.is_none() && w.since_ms + BOND_TIMEOUT_MS <= now_ms)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(w) = self.waiting.remove(&id) {
                for q in w.queued {
                    if w.ready_ms.is_some() {
                        self.send_query(id, w.addr, q, now_ms);
                    } else {
                        self.fail_query(&id, q);
                    }
                }
            }
        }
        if now_ms >= self.next_revalidate_ms {
            self.next_revalidate_ms = now_ms + REVALIDATE_INTERVAL_MS;
            if let Some(e) = self
                .table
                .stalest(now_ms.saturating_sub(REVALIDATE_INTERVAL_MS))
            {
                let (id, pk, addr) = (e.id, e.data.pubkey, e.addr);
                self.send_ping(id, pk, addr, now_ms);
            }
            let mut missing: Vec<(NodeId, [u8; 64], SocketAddr)> = self
                .nodes
                .values()
                .filter(|n| {
                    n.enr.is_none()
                        && !self.pending_enr.contains_key(&n.id)
                        && !self.waiting.contains_key(&n.id)
                })
                .map(|n| (n.id, n.pubkey, n.udp))
                .collect();
            missing.sort_by_key(|(id, _, _)| *id);
            for (id, pk, addr) in missing.into_iter().take(ENR_RETRIES_PER_TICK) {
                self.query(id, pk, addr, Queued::EnrRequest, now_ms);
            }
        }
        if now_ms >= self.next_refresh_ms {
            self.next_refresh_ms = now_ms + REFRESH_INTERVAL_MS;
            if self.lookups.is_empty() {
                self.lookup_random(now_ms);
            }
        }
        self.advance_lookups(now_ms);
    }
}

impl Discovery for Service {
    fn start(&mut self, now_ms: u64) {
        Service::start(self, now_ms)
    }
    fn handle_packet(&mut self, from: SocketAddr, data: &[u8], now_ms: u64) {
        Service::handle_packet(self, from, data, now_ms)
    }
    fn handle_timeout(&mut self, now_ms: u64) {
        Service::handle_timeout(self, now_ms)
    }
    fn poll_timeout(&self) -> Option<u64> {
        Service::poll_timeout(self)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Service::poll_transmit(self)
    }
    fn local_id(&self) -> NodeId {
        self.local_id
    }
    fn local_enr(&self) -> &Enr {
        &self.enr
    }
    fn peers(&self) -> Vec<Peer> {
        self.nodes
            .values()
            .map(|n| Peer {
                id: n.id,
                udp: n.udp,
                tcp: (n.tcp_port != 0).then(|| SocketAddr::new(n.udp.ip(), n.tcp_port)),
                enr: n.enr.clone(),
                eth_compatible: n.eth_compatible,
                last_seen_ms: n.last_seen_ms,
            })
            .collect()
    }
    fn drops(&self) -> &DropCounters {
        &self.drops
    }
}

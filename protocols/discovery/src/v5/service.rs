//! A sans-IO discovery v5.1 service: sessions established by the WHOAREYOU handshake, the
//! Kademlia table of records, PING/PONG liveness, FINDNODE/NODES lookups with `alpha = 3`
//! and TALKREQ answered with an empty TALKRESP.
//!
//! The driver feeds it received datagrams ([`Service::handle_packet`]) and the time
//! ([`Service::handle_timeout`] at [`Service::poll_timeout`]), and sends what
//! [`Service::poll_transmit`] returns. A session is bound to the UDP endpoint it was made
//! with, so answering FINDNODE only within a session is the endpoint proof: the remote has
//! received our WHOAREYOU challenge at that address.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use catchup_devp2p::forkid::ForkId;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use secp256k1::SecretKey;

use crate::crypto::NodeId;
use crate::enr::{Enr, EnrBuilder};
use crate::error::{DiscError, DropCounters, DropReason};
use crate::service::{self as common, Discovery, ForkFilter, Peer, Transmit};
use crate::table::{Insert, Table, BUCKET_SIZE};
use crate::v5::crypto::{self as v5crypto, SessionKeys};
use crate::v5::message::{Message, RequestId};
use crate::v5::packet::{self, AuthData, Packet};

pub const ALPHA: usize = 3;
pub const REQUEST_TIMEOUT_MS: u64 = 1_000;
pub const MAX_HANDSHAKES_PER_REQUEST: u8 = 2;
pub const CHALLENGE_TIMEOUT_MS: u64 = 1_000;
pub const REVALIDATE_INTERVAL_MS: u64 = 10_000;
pub const REFRESH_INTERVAL_MS: u64 = 30_000;
/// Refresh interval while the table holds fewer than `k` nodes: FINDNODE asks for three
/// distances only, so a small network needs several random lookups to be seen whole.
pub const SPARSE_REFRESH_INTERVAL_MS: u64 = 5_000;
pub const MAX_SESSIONS: usize = 1_024;
pub const MAX_REQUESTS: usize = 256;
pub const MAX_CHALLENGES: usize = 256;
pub const MAX_FOUND_NODES: usize = 4_096;
pub const MAX_TRANSMIT_QUEUE: usize = 1_024;
pub const MAX_EVENTS: usize = 1_024;
pub const MAX_LOOKUPS: usize = 4;
pub const MAX_LOOKUP_CANDIDATES: usize = 64;
/// Records returned for one FINDNODE.
pub const MAX_NODES_RESPONSE: usize = 16;
/// NODES messages accepted for one FINDNODE.
pub const MAX_NODES_TOTAL: u64 = 8;
/// Record bytes packed into one NODES message (keeps the packet under 1280 bytes).
pub const NODES_PAYLOAD_BUDGET_BYTES: usize = 1_000;

pub struct Config {
    pub key: SecretKey,
    pub endpoint: SocketAddr,
    pub tcp_port: u16,
    pub bootnodes: Vec<Enr>,
    pub fork_id: Option<ForkId>,
    pub fork_filter: Option<ForkFilter>,
    pub rng_seed: u64,
}

/// A node that answered us within a session, with its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundNode {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub enr: Enr,
    pub eth_compatible: Option<bool>,
    /// Last answer received from it within a session.
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    NodeFound(NodeId),
    EnrUpdated(NodeId),
    SessionEstablished(NodeId),
    LookupDone { target: NodeId, queried: usize },
    TalkRequest { from: NodeId, protocol: Vec<u8> },
}

#[derive(Debug, Clone, Copy)]
struct Session {
    keys: SessionKeys,
    initiator: bool,
    addr: SocketAddr,
    /// The session this one replaced at the same address, still accepted for incoming
    /// messages: when both sides start a handshake at once, each ends up sending with the
    /// keys of the handshake it accepted last.
    previous: Option<(SessionKeys, bool)>,
}

impl Session {
    fn send_key(&self) -> &[u8; 16] {
        if self.initiator {
            &self.keys.initiator_key
        } else {
            &self.keys.recipient_key
        }
    }
    fn recv_key(&self) -> &[u8; 16] {
        if self.initiator {
            &self.keys.recipient_key
        } else {
            &self.keys.initiator_key
        }
    }

    fn previous_recv_key(&self) -> Option<&[u8; 16]> {
        self.previous.as_ref().map(|(k, initiator)| {
            if *initiator {
                &k.recipient_key
            } else {
                &k.initiator_key
            }
        })
    }
}

#[derive(Debug, Clone)]
struct Challenge {
    challenge_data: Vec<u8>,
    addr: SocketAddr,
    sent_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Ping,
    FindNode { lookup: u64 },
    FetchRecord,
    Talk,
}

#[derive(Debug, Clone)]
struct Request {
    node: NodeId,
    addr: SocketAddr,
    message: Message,
    nonce: [u8; 12],
    sent_ms: u64,
    purpose: Purpose,
    distances: Vec<u16>,
    /// NODES messages announced and received.
    total: Option<u64>,
    received: u64,
    /// Handshakes sent for this request (a remote that dropped its session, e.g. after
    /// two handshakes crossed, challenges again).
    handshakes: u8,
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
    state: CandState,
}

#[derive(Debug, Clone)]
struct Lookup {
    id: u64,
    target: NodeId,
    candidates: Vec<Candidate>,
}

impl Lookup {
    fn add(&mut self, id: NodeId) {
        if self.candidates.iter().any(|c| c.id == id) {
            return;
        }
        let d = self.target.distance(&id);
        let pos = self
            .candidates
            .partition_point(|c| self.target.distance(&c.id) < d);
        if pos >= MAX_LOOKUP_CANDIDATES {
            return;
        }
        self.candidates.insert(
            pos,
            Candidate {
                id,
                state: CandState::NotAsked,
            },
        );
        self.candidates.truncate(MAX_LOOKUP_CANDIDATES);
    }

    fn in_flight(&self) -> usize {
        self.candidates
            .iter()
            .filter(|c| c.state == CandState::Asked)
            .count()
    }

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

/// The distances asked of `node` in a lookup for `target`: the log-distance between them
/// and its two neighbours.
pub fn lookup_distances(target: &NodeId, node: &NodeId) -> Vec<u16> {
    let d = target.log_distance(node) as u16;
    let mut out = vec![d.max(1)];
    if d < 256 {
        out.push(d + 1);
    }
    if d > 1 {
        out.push(d - 1);
    }
    out
}

/// The discovery v5.1 state machine.
pub struct Service {
    key: SecretKey,
    local_id: NodeId,
    enr: Enr,
    fork_filter: Option<ForkFilter>,
    bootnodes: Vec<Enr>,
    table: Table<Enr>,
    /// Records known by id (bootnodes, table entries, lookup results), bounded.
    records: HashMap<NodeId, Enr>,
    sessions: HashMap<NodeId, Session>,
    challenges: HashMap<NodeId, Challenge>,
    requests: HashMap<RequestId, Request>,
    lookups: Vec<Lookup>,
    next_lookup_id: u64,
    nodes: HashMap<NodeId, FoundNode>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    drops: DropCounters,
    rng: StdRng,
    nonce_counter: u32,
    next_revalidate_ms: u64,
    next_refresh_ms: u64,
    started: bool,
}

impl Service {
    pub fn new(config: Config) -> Result<Service, DiscError> {
        let mut b = EnrBuilder::new(1).endpoint(config.endpoint, config.tcp_port);
        if let Some(f) = config.fork_id {
            b = b.eth(f);
        }
        let enr = b.build(&config.key)?;
        let local_id = enr.node_id();
        Ok(Service {
            key: config.key,
            local_id,
            enr,
            fork_filter: config.fork_filter,
            bootnodes: config.bootnodes,
            table: Table::new(local_id),
            records: HashMap::new(),
            sessions: HashMap::new(),
            challenges: HashMap::new(),
            requests: HashMap::new(),
            lookups: Vec::new(),
            next_lookup_id: 1,
            nodes: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            drops: DropCounters::default(),
            rng: StdRng::seed_from_u64(config.rng_seed),
            nonce_counter: 0,
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

    /// Whether `id` is in the Kademlia table (alive as far as we know).
    pub fn in_table(&self, id: &NodeId) -> bool {
        self.table.contains(id)
    }

    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    pub fn nodes(&self) -> impl Iterator<Item = &FoundNode> {
        self.nodes.values()
    }

    pub fn node(&self, id: &NodeId) -> Option<&FoundNode> {
        self.nodes.get(id)
    }

    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
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

    fn remember(&mut self, enr: Enr) {
        let id = enr.node_id();
        if id == self.local_id {
            return;
        }
        match self.records.get(&id) {
            Some(old) if old.seq() >= enr.seq() => {}
            _ => {
                if self.records.len() < MAX_FOUND_NODES || self.records.contains_key(&id) {
                    self.records.insert(id, enr);
                }
            }
        }
    }

    pub fn start(&mut self, now_ms: u64) {
        self.started = true;
        for b in self.bootnodes.clone() {
            self.remember(b.clone());
            self.request(b.node_id(), Purpose::Ping, Vec::new(), now_ms);
        }
        let target = self.local_id;
        self.start_lookup(target, now_ms);
        self.next_revalidate_ms = now_ms + REVALIDATE_INTERVAL_MS;
        self.next_refresh_ms = now_ms + REFRESH_INTERVAL_MS;
    }

    pub fn lookup_random(&mut self, now_ms: u64) {
        let mut t = [0u8; 32];
        self.rng.fill_bytes(&mut t);
        self.start_lookup(NodeId(t), now_ms);
    }

    fn new_nonce(&mut self) -> [u8; 12] {
        self.nonce_counter = self.nonce_counter.wrapping_add(1);
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.nonce_counter.to_be_bytes());
        self.rng.fill_bytes(&mut n[4..]);
        n
    }

    fn push(&mut self, dest: SocketAddr, packet: Vec<u8>) -> bool {
        if self.transmits.len() >= MAX_TRANSMIT_QUEUE {
            self.drops.add(DropReason::QueueFull);
            return false;
        }
        self.transmits.push_back(Transmit { dest, packet });
        true
    }

    /// Send `msg` to `id` in its session, or an undecryptable packet that draws a
    /// WHOAREYOU when there is none. Returns the packet nonce.
    fn send_message(&mut self, id: NodeId, addr: SocketAddr, msg: &Message) -> Option<[u8; 12]> {
        let nonce = self.new_nonce();
        let mut iv = [0u8; 16];
        self.rng.fill_bytes(&mut iv);
        let auth = AuthData::Message {
            src_id: self.local_id,
        };
        let pt = msg.encode();
        let session = self.sessions.get(&id).filter(|s| s.addr == addr).copied();
        let raw = match session {
            Some(s) => packet::encode(&id, &iv, &nonce, &auth, Some((s.send_key(), &pt))),
            None => {
                let mut junk_key = [0u8; 16];
                self.rng.fill_bytes(&mut junk_key);
                let mut junk = [0u8; 20];
                self.rng.fill_bytes(&mut junk);
                packet::encode(&id, &iv, &nonce, &auth, Some((&junk_key, &junk)))
            }
        };
        let (raw, _) = raw.ok()?;
        self.push(addr, raw).then_some(nonce)
    }

    /// Send a TALKREQ to a node whose record is known; the answer is matched and dropped
    /// (applications on top of discovery are not part of this crate).
    pub fn talk(&mut self, id: NodeId, protocol: &[u8], request: &[u8], now_ms: u64) -> bool {
        let talk = Message::TalkReq {
            req_id: RequestId::default(),
            protocol: protocol.to_vec(),
            request: request.to_vec(),
        };
        self.request_message(id, Purpose::Talk, Vec::new(), Some(talk), now_ms)
    }

    /// Start a request to a node whose record is known.
    fn request(&mut self, id: NodeId, purpose: Purpose, distances: Vec<u16>, now_ms: u64) -> bool {
        self.request_message(id, purpose, distances, None, now_ms)
    }

    fn request_message(
        &mut self,
        id: NodeId,
        purpose: Purpose,
        distances: Vec<u16>,
        talk: Option<Message>,
        now_ms: u64,
    ) -> bool {
        if id == self.local_id || self.requests.len() >= MAX_REQUESTS {
            return false;
        }
        let Some(enr) = self.records.get(&id) else {
            return false;
        };
        let Some(addr) = enr.udp_socket() else {
            return false;
        };
        let req_id = RequestId::from_u64(self.rng.gen());
        let message = match purpose {
            Purpose::Ping => Message::Ping {
                req_id,
                enr_seq: self.enr.seq(),
            },
            Purpose::FindNode { .. } | Purpose::FetchRecord => Message::FindNode {
                req_id,
                distances: distances.clone(),
            },
            Purpose::Talk => match talk {
                Some(Message::TalkReq {
                    protocol, request, ..
                }) => Message::TalkReq {
                    req_id,
                    protocol,
                    request,
                },
                _ => return false,
            },
        };
        let Some(nonce) = self.send_message(id, addr, &message) else {
            return false;
        };
        if matches!(purpose, Purpose::Ping) {
            self.table.ping_sent(&id, now_ms);
        }
        self.requests.insert(
            req_id,
            Request {
                node: id,
                addr,
                message,
                nonce,
                sent_ms: now_ms,
                purpose,
                distances,
                total: None,
                received: 0,
                handshakes: 0,
            },
        );
        true
    }

    fn start_lookup(&mut self, target: NodeId, now_ms: u64) {
        if self.lookups.len() >= MAX_LOOKUPS {
            return;
        }
        let mut l = Lookup {
            id: self.next_lookup_id,
            target,
            candidates: Vec::new(),
        };
        self.next_lookup_id += 1;
        for e in self.table.closest(&target, BUCKET_SIZE) {
            l.add(e.id);
        }
        for b in &self.bootnodes {
            l.add(b.node_id());
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
            let (lookup, target) = (self.lookups[i].id, self.lookups[i].target);
            for idx in next {
                let id = self.lookups[i].candidates[idx].id;
                self.lookups[i].candidates[idx].state = CandState::Asked;
                let distances = lookup_distances(&target, &id);
                if !self.request(id, Purpose::FindNode { lookup }, distances, now_ms) {
                    self.lookups[i].set_state(&id, CandState::Failed);
                }
            }
            i += 1;
        }
    }

    /// Handle one received datagram.
    pub fn handle_packet(&mut self, from: SocketAddr, data: &[u8], now_ms: u64) {
        let p = match packet::decode(&self.local_id, data) {
            Ok(p) => p,
            Err(e) => {
                self.drops.add(e.reason());
                return;
            }
        };
        match p.auth.clone() {
            AuthData::WhoAreYou { enr_seq, .. } => self.on_whoareyou(from, &p, enr_seq, now_ms),
            AuthData::Message { src_id } => self.on_message_packet(from, src_id, &p, now_ms),
            AuthData::Handshake {
                src_id,
                id_signature,
                eph_pubkey,
                record,
            } => self.on_handshake(from, src_id, &p, &id_signature, &eph_pubkey, record, now_ms),
        }
    }

    fn on_whoareyou(&mut self, from: SocketAddr, p: &Packet, their_seq: u64, now_ms: u64) {
        let Some((&req_id, req)) = self
            .requests
            .iter()
            .find(|(_, r)| r.nonce == p.nonce && r.addr == from)
        else {
            self.drops.add(DropReason::Unsolicited);
            return;
        };
        if req.handshakes >= MAX_HANDSHAKES_PER_REQUEST {
            // The remote keeps refusing our handshakes for this request.
            self.drops.add(DropReason::Unsolicited);
            return;
        }
        let (node, message) = (req.node, req.message.clone());
        let Some(remote) = self.records.get(&node).cloned() else {
            return;
        };
        let eph = loop {
            let mut b = [0u8; 32];
            self.rng.fill_bytes(&mut b);
            if let Ok(k) = SecretKey::from_slice(&b) {
                break k;
            }
        };
        let Some((id_signature, eph_pubkey, keys)) = v5crypto::initiate_handshake(
            &self.key,
            &self.local_id,
            &node,
            remote.public_key(),
            &p.header_data,
            &eph,
        ) else {
            return;
        };
        let record = (their_seq < self.enr.seq()).then(|| Box::new(self.enr.clone()));
        let auth = AuthData::Handshake {
            src_id: self.local_id,
            id_signature,
            eph_pubkey,
            record,
        };
        let nonce = self.new_nonce();
        let mut iv = [0u8; 16];
        self.rng.fill_bytes(&mut iv);
        let pt = message.encode();
        let Ok((raw, _)) =
            packet::encode(&node, &iv, &nonce, &auth, Some((&keys.initiator_key, &pt)))
        else {
            return;
        };
        if !self.push(from, raw) {
            return;
        }
        self.store_session(
            node,
            Session {
                keys,
                initiator: true,
                addr: from,
                previous: None,
            },
        );
        if let Some(r) = self.requests.get_mut(&req_id) {
            r.nonce = nonce;
            r.handshakes += 1;
            r.sent_ms = now_ms;
        }
    }

    fn store_session(&mut self, id: NodeId, mut s: Session) {
        if let Some(old) = self.sessions.get(&id) {
            if old.addr == s.addr {
                s.previous = Some((old.keys, old.initiator));
            }
        }
        if !self.sessions.contains_key(&id) && self.sessions.len() >= MAX_SESSIONS {
            // Evict an arbitrary session not in the table.
            let victim = self
                .sessions
                .keys()
                .find(|k| !self.table.contains(k))
                .copied()
                .or_else(|| self.sessions.keys().next().copied());
            if let Some(v) = victim {
                self.sessions.remove(&v);
            }
        }
        self.sessions.insert(id, s);
    }

    fn send_whoareyou(&mut self, from: SocketAddr, src_id: NodeId, nonce: [u8; 12], now_ms: u64) {
        if let Some(c) = self.challenges.get(&src_id) {
            // One outstanding challenge per node and address.
            if c.addr == from && c.sent_ms + CHALLENGE_TIMEOUT_MS > now_ms {
                return;
            }
        }
        if !self.challenges.contains_key(&src_id) && self.challenges.len() >= MAX_CHALLENGES {
            self.drops.add(DropReason::QueueFull);
            return;
        }
        let mut id_nonce = [0u8; 16];
        self.rng.fill_bytes(&mut id_nonce);
        let mut iv = [0u8; 16];
        self.rng.fill_bytes(&mut iv);
        let enr_seq = self.records.get(&src_id).map_or(0, |e| e.seq());
        let auth = AuthData::WhoAreYou { id_nonce, enr_seq };
        let Ok((raw, challenge_data)) = packet::encode(&src_id, &iv, &nonce, &auth, None) else {
            return;
        };
        if self.push(from, raw) {
            self.challenges.insert(
                src_id,
                Challenge {
                    challenge_data,
                    addr: from,
                    sent_ms: now_ms,
                },
            );
        }
    }

    fn on_message_packet(&mut self, from: SocketAddr, src_id: NodeId, p: &Packet, now_ms: u64) {
        if src_id == self.local_id {
            self.drops.add(DropReason::Unsolicited);
            return;
        }
        let session = self
            .sessions
            .get(&src_id)
            .filter(|s| s.addr == from)
            .copied();
        let pt = session.and_then(|s| {
            p.decrypt(s.recv_key())
                .ok()
                .or_else(|| s.previous_recv_key().and_then(|k| p.decrypt(k).ok()))
        });
        match pt {
            Some(pt) => match Message::decode(&pt) {
                Ok(m) => self.on_message(from, src_id, m, now_ms),
                Err(e) => self.drops.add(e.reason()),
            },
            None => self.send_whoareyou(from, src_id, p.nonce, now_ms),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_handshake(
        &mut self,
        from: SocketAddr,
        src_id: NodeId,
        p: &Packet,
        id_signature: &[u8; 64],
        eph_pubkey: &[u8; 33],
        record: Option<Box<Enr>>,
        now_ms: u64,
    ) {
        let Some(ch) = self.challenges.get(&src_id).cloned() else {
            self.drops.add(DropReason::Unsolicited);
            return;
        };
        if ch.addr != from {
            self.drops.add(DropReason::Unsolicited);
            return;
        }
        if let Some(r) = &record {
            if r.node_id() != src_id {
                self.drops.add(DropReason::BadRecord);
                return;
            }
        }
        let known = self.records.get(&src_id).cloned();
        let enr = match (record, known) {
            (Some(r), Some(k)) if k.seq() > r.seq() => k,
            (Some(r), _) => *r,
            (None, Some(k)) => k,
            (None, None) => {
                self.drops.add(DropReason::BadRecord);
                return;
            }
        };
        let keys = match v5crypto::accept_handshake(
            &self.key,
            &self.local_id,
            &src_id,
            enr.public_key(),
            &ch.challenge_data,
            id_signature,
            eph_pubkey,
        ) {
            Ok(k) => k,
            Err(e) => {
                self.drops.add(e.reason());
                return;
            }
        };
        let pt = match p.decrypt(&keys.initiator_key) {
            Ok(pt) => pt,
            Err(e) => {
                self.drops.add(e.reason());
                return;
            }
        };
        self.challenges.remove(&src_id);
        self.store_session(
            src_id,
            Session {
                keys,
                initiator: false,
                addr: from,
                previous: None,
            },
        );
        self.event(Event::SessionEstablished(src_id));
        self.remember(enr.clone());
        if enr.udp_socket() == Some(from) {
            self.node_alive(src_id, from, now_ms);
        }
        match Message::decode(&pt) {
            Ok(m) => self.on_message(from, src_id, m, now_ms),
            Err(e) => self.drops.add(e.reason()),
        }
    }

    /// The node answered within a session at `addr`: it is live.
    fn node_alive(&mut self, id: NodeId, addr: SocketAddr, now_ms: u64) {
        let Some(enr) = self.records.get(&id).cloned() else {
            return;
        };
        if self.table.get(&id).is_some_and(|e| e.addr == addr) {
            self.table.seen(&id, now_ms);
            if let Some(e) = self.table.get_mut(&id) {
                e.data = enr.clone();
            }
        } else if let Insert::Full { oldest } = self.table.insert(id, addr, enr.clone(), now_ms) {
            if !self.requests.values().any(|r| r.node == oldest) {
                self.request(oldest, Purpose::Ping, Vec::new(), now_ms);
            }
        }
        let compatible = common::eth_compatible(self.fork_filter.as_ref(), &enr);
        match self.nodes.get_mut(&id) {
            Some(n) => {
                n.addr = addr;
                n.last_seen_ms = now_ms;
                if n.enr.seq() < enr.seq() {
                    n.enr = enr;
                    n.eth_compatible = compatible;
                    self.event(Event::EnrUpdated(id));
                }
            }
            None => {
                if self.nodes.len() < MAX_FOUND_NODES {
                    self.nodes.insert(
                        id,
                        FoundNode {
                            id,
                            addr,
                            enr,
                            eth_compatible: compatible,
                            last_seen_ms: now_ms,
                        },
                    );
                    self.event(Event::NodeFound(id));
                }
            }
        }
    }

    fn on_message(&mut self, from: SocketAddr, src: NodeId, m: Message, now_ms: u64) {
        match m {
            Message::Ping { req_id, enr_seq } => {
                let pong = Message::Pong {
                    req_id,
                    enr_seq: self.enr.seq(),
                    ip: from.ip(),
                    port: from.port(),
                };
                self.send_message(src, from, &pong);
                let known = self.records.get(&src).map(|e| e.seq());
                if known.is_none_or(|s| s < enr_seq)
                    && !self
                        .requests
                        .values()
                        .any(|r| r.node == src && r.purpose == Purpose::FetchRecord)
                {
                    self.fetch_record(src, from, now_ms);
                }
            }
            Message::FindNode { req_id, distances } => {
                self.answer_find_node(from, src, req_id, &distances)
            }
            Message::TalkReq {
                req_id, protocol, ..
            } => {
                let resp = Message::TalkResp {
                    req_id,
                    response: Vec::new(),
                };
                self.send_message(src, from, &resp);
                self.event(Event::TalkRequest {
                    from: src,
                    protocol,
                });
            }
            Message::Pong {
                req_id, enr_seq, ..
            } => {
                let Some(r) = self.take_response(&req_id, src, from) else {
                    return;
                };
                let _ = r;
                self.node_alive(src, from, now_ms);
                let known = self.records.get(&src).map(|e| e.seq());
                if known.is_none_or(|s| s < enr_seq) {
                    self.fetch_record(src, from, now_ms);
                }
            }
            Message::Nodes {
                req_id,
                total,
                enrs,
            } => self.on_nodes(from, src, req_id, total, enrs, now_ms),
            Message::TalkResp { req_id, .. } => {
                let _ = self.take_response(&req_id, src, from);
            }
        }
    }

    /// Ask a node for its own record (FINDNODE at distance 0).
    fn fetch_record(&mut self, id: NodeId, addr: SocketAddr, now_ms: u64) {
        if self.requests.len() >= MAX_REQUESTS {
            return;
        }
        let req_id = RequestId::from_u64(self.rng.gen());
        let message = Message::FindNode {
            req_id,
            distances: vec![0],
        };
        if let Some(nonce) = self.send_message(id, addr, &message) {
            self.requests.insert(
                req_id,
                Request {
                    node: id,
                    addr,
                    message,
                    nonce,
                    sent_ms: now_ms,
                    purpose: Purpose::FetchRecord,
                    distances: vec![0],
                    total: None,
                    received: 0,
                    handshakes: 0,
                },
            );
        }
    }

    /// The request `req_id` if it was sent to `src` at `from`; counts an unsolicited drop.
    fn take_response(
        &mut self,
        req_id: &RequestId,
        src: NodeId,
        from: SocketAddr,
    ) -> Option<Request> {
        match self.requests.get(req_id) {
            Some(r) if r.node == src && r.addr == from => self.requests.remove(req_id),
            _ => {
                self.drops.add(DropReason::Unsolicited);
                None
            }
        }
    }

    fn answer_find_node(
        &mut self,
        from: SocketAddr,
        src: NodeId,
        req_id: RequestId,
        distances: &[u16],
    ) {
        let mut records: Vec<Enr> = Vec::new();
        for d in distances {
            if records.len() >= MAX_NODES_RESPONSE {
                break;
            }
            if *d == 0 {
                records.push(self.enr.clone());
                continue;
            }
            for e in self.table.at_distance(u32::from(*d)) {
                if records.len() >= MAX_NODES_RESPONSE {
                    break;
                }
                if e.id != src {
                    records.push(e.data.clone());
                }
            }
        }
        let mut messages: Vec<Vec<Enr>> = vec![Vec::new()];
        let mut used = 0usize;
        for r in records {
            let len = r.encoded().len();
            if used + len > NODES_PAYLOAD_BUDGET_BYTES {
                messages.push(Vec::new());
                used = 0;
            }
            used += len;
            if let Some(last) = messages.last_mut() {
                last.push(r);
            }
        }
        let total = messages.len() as u64;
        for enrs in messages {
            let m = Message::Nodes {
                req_id,
                total,
                enrs,
            };
            self.send_message(src, from, &m);
        }
    }

    fn on_nodes(
        &mut self,
        from: SocketAddr,
        src: NodeId,
        req_id: RequestId,
        total: u64,
        enrs: Vec<Enr>,
        now_ms: u64,
    ) {
        let Some(req) = self.requests.get_mut(&req_id) else {
            self.drops.add(DropReason::Unsolicited);
            return;
        };
        if req.node != src || req.addr != from {
            self.drops.add(DropReason::Unsolicited);
            return;
        }
        req.received += 1;
        let total = total.clamp(1, MAX_NODES_TOTAL);
        req.total = Some(total);
        let done = req.received >= total;
        let distances = req.distances.clone();
        let purpose = req.purpose;
        for enr in enrs {
            let d = src.log_distance(&enr.node_id()) as u16;
            if !distances.contains(&d) {
                self.drops.add(DropReason::BadRecord);
                continue;
            }
            let id = enr.node_id();
            self.remember(enr);
            if let Purpose::FindNode { lookup } = purpose {
                if id != self.local_id {
                    if let Some(l) = self.lookups.iter_mut().find(|l| l.id == lookup) {
                        l.add(id);
                    }
                }
            }
        }
        if done {
            self.requests.remove(&req_id);
            if let Purpose::FindNode { lookup } = purpose {
                if let Some(l) = self.lookups.iter_mut().find(|l| l.id == lookup) {
                    l.set_state(&src, CandState::Responded);
                }
            }
        }
        self.node_alive(src, from, now_ms);
        self.advance_lookups(now_ms);
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        if !self.started {
            return None;
        }
        let mut t = self.next_revalidate_ms.min(self.next_refresh_ms);
        for r in self.requests.values() {
            t = t.min(r.sent_ms + REQUEST_TIMEOUT_MS);
        }
        for c in self.challenges.values() {
            t = t.min(c.sent_ms + CHALLENGE_TIMEOUT_MS);
        }
        Some(t)
    }

    pub fn handle_timeout(&mut self, now_ms: u64) {
        if !self.started {
            return;
        }
        self.challenges
            .retain(|_, c| c.sent_ms + CHALLENGE_TIMEOUT_MS > now_ms);
        let expired: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, r)| r.sent_ms + REQUEST_TIMEOUT_MS <= now_ms)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            let Some(r) = self.requests.remove(&k) else {
                continue;
            };
            match r.purpose {
                Purpose::Ping => {
                    if self
                        .table
                        .get(&r.node)
                        .is_some_and(|e| e.ping_sent_ms.is_some())
                    {
                        self.table.remove(&r.node);
                    }
                    // A stale session may be why: start over next time.
                    self.sessions.remove(&r.node);
                }
                Purpose::FindNode { lookup } => {
                    let state = if r.received > 0 {
                        CandState::Responded
                    } else {
                        self.sessions.remove(&r.node);
                        CandState::Failed
                    };
                    if let Some(l) = self.lookups.iter_mut().find(|l| l.id == lookup) {
                        l.set_state(&r.node, state);
                    }
                }
                Purpose::FetchRecord | Purpose::Talk => {}
            }
        }
        if now_ms >= self.next_revalidate_ms {
            self.next_revalidate_ms = now_ms + REVALIDATE_INTERVAL_MS;
            if let Some(e) = self
                .table
                .stalest(now_ms.saturating_sub(REVALIDATE_INTERVAL_MS))
            {
                let id = e.id;
                if !self.requests.values().any(|r| r.node == id) {
                    self.request(id, Purpose::Ping, Vec::new(), now_ms);
                }
            }
        }
        if now_ms >= self.next_refresh_ms {
            let interval = if self.table.len() < BUCKET_SIZE {
                SPARSE_REFRESH_INTERVAL_MS
            } else {
                REFRESH_INTERVAL_MS
            };
            self.next_refresh_ms = now_ms + interval;
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
                udp: n.addr,
                tcp: n.enr.tcp_socket(),
                enr: Some(n.enr.clone()),
                eth_compatible: n.eth_compatible,
                last_seen_ms: n.last_seen_ms,
            })
            .collect()
    }
    fn drops(&self) -> &DropCounters {
        &self.drops
    }
}

//! The shred repair engine: a sans-IO state machine. Events in (a packet from a peer, a
//! timer tick, a peer added); actions out (send this packet to that peer, this slot is
//! complete). It repairs the slots of `from_slot..=to_slot` that this shard owns, newest
//! first, spreading requests over peers by score (latency and success), matching every
//! response to its request by nonce and verifying every shred (Merkle proof and leader
//! signature) before it is kept.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use catchup_shred::ed25519_dalek::SigningKey;
use catchup_shred::repair::{pubkey_of, Ping, Pong, Pubkey, RepairRequest, RequestKind};
use catchup_shred::{split_repair_response, Insert, Shred, SlotAssembler};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Index of a peer in the engine's table; the driver maps it to an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PeerId(pub usize);

/// Who signed each slot's shreds.
#[derive(Clone, Debug)]
pub enum LeaderSchedule {
    /// One leader for every slot (a local or generated ledger).
    Fixed(Pubkey),
    /// Leader per slot; slots not listed cannot be verified and are not repaired.
    PerSlot(BTreeMap<u64, Pubkey>),
}

impl LeaderSchedule {
    pub fn leader(&self, slot: u64) -> Option<&Pubkey> {
        match self {
            LeaderSchedule::Fixed(k) => Some(k),
            LeaderSchedule::PerSlot(m) => m.get(&slot),
        }
    }
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// First slot to repair (the slot after the snapshot).
    pub from_slot: u64,
    /// Last slot to repair (the tip), inclusive.
    pub to_slot: u64,
    /// This shard and the number of shards: slot `s` is owned by
    /// `catchup_shards::ownership::owner_of_range(s, 1, shards)`.
    pub shard: usize,
    pub shards: usize,
    /// A request not answered within this time is retried elsewhere.
    pub request_timeout_ms: u64,
    /// Requests in flight at once, over all peers.
    pub max_inflight_total: usize,
    /// Requests in flight to one peer at most.
    pub max_inflight_per_peer: usize,
    /// Slots worked on at once (the newest incomplete ones).
    pub active_slots: usize,
    /// Seed of the peer choice and nonces (deterministic runs).
    pub seed: u64,
    /// Emit [`Action::Store`] for every newly verified shred (the driver persists it).
    pub persist: bool,
}

impl EngineConfig {
    pub fn new(from_slot: u64, to_slot: u64) -> Self {
        EngineConfig {
            from_slot,
            to_slot,
            shard: 0,
            shards: 1,
            request_timeout_ms: 300,
            max_inflight_total: 256,
            max_inflight_per_peer: 128,
            active_slots: 32,
            seed: 0x5eed,
            persist: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `packet` to `peer`.
    Send { peer: PeerId, packet: Vec<u8> },
    /// All data shreds of `slot` (index order), verified.
    SlotComplete { slot: u64, shreds: Vec<Vec<u8>> },
    /// A data shred received and verified (only with `EngineConfig::persist`): keep it so
    /// that a restart does not request it again.
    Store {
        slot: u64,
        index: u32,
        shred: Vec<u8>,
    },
}

/// What [`RepairEngine::preload`] did with a stored shred.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preload {
    /// Verified and kept: it is not requested.
    Loaded,
    /// Already held.
    Duplicate,
    /// Not this shard's to repair (outside the range, another shard's slot, no leader).
    NotMine,
    /// Failed verification (parse, slot/index not the stored key, Merkle proof or leader
    /// signature): dropped, and requested from peers like any missing shred.
    Rejected,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PeerHealth {
    pub peer: usize,
    pub key_known: bool,
    pub inflight: usize,
    pub answered: u64,
    pub timeouts: u64,
    pub invalid: u64,
    pub latency_ms: f64,
    pub score: f64,
    /// No longer asked: its answers failed verification too often.
    pub dropped: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Progress {
    pub slots_total: u64,
    pub slots_complete: u64,
    pub slots_remaining: u64,
    pub shreds_received: u64,
    pub duplicates: u64,
    pub unsolicited: u64,
    pub invalid: u64,
    pub timeouts: u64,
    pub requests_sent: u64,
    pub inflight: usize,
    /// Slots completed from stored shreds alone (nothing requested).
    pub slots_loaded: u64,
    /// Stored shreds verified and used.
    pub shreds_loaded: u64,
    /// Stored shreds that failed verification (dropped, requested again).
    pub store_rejected: u64,
    /// Requests for a shred that was loaded from the store (never expected).
    pub requests_for_loaded: u64,
    pub peers: Vec<PeerHealth>,
}

#[derive(Debug)]
struct Peer {
    key: Option<Pubkey>,
    inflight: usize,
    answered: u64,
    timeouts: u64,
    invalid: u64,
    latency_ewma_ms: f64,
    last_discovery_ms: Option<u64>,
}

impl Peer {
    fn score(&self) -> f64 {
        let ok = self.answered as f64 + 1.0;
        let bad = self.timeouts as f64 + 1.0;
        let reliability = ok / (ok + bad);
        let honesty = 1.0 / (1.0 + 4.0 * self.invalid as f64 / ok);
        reliability * reliability * honesty / (self.latency_ewma_ms + 1.0)
    }
    /// A peer whose answers fail verification often (at least 8 times, and for one answer
    /// in five or more) is not asked again: an honest peer's shreds always verify.
    fn banned(&self) -> bool {
        self.invalid >= 8 && self.invalid * 5 >= self.answered
    }
}

#[derive(Debug, Clone, Copy)]
struct Inflight {
    peer: PeerId,
    kind: RequestKind,
    sent_at_ms: u64,
}

#[derive(Debug)]
struct SlotWork {
    asm: SlotAssembler,
    /// Data shred indices requested and not answered yet.
    pending: BTreeSet<u32>,
    highest_inflight: bool,
}

pub struct RepairEngine {
    cfg: EngineConfig,
    identity: SigningKey,
    my_id: Pubkey,
    leaders: LeaderSchedule,
    peers: Vec<Peer>,
    /// Owned slots not started yet, newest first.
    queue: VecDeque<u64>,
    active: BTreeMap<u64, SlotWork>,
    inflight: HashMap<u32, Inflight>,
    /// Roots already verified against the leader's signature: (slot, fec set) -> (root, sig).
    verified: HashMap<(u64, u32), ([u8; 32], [u8; 64])>,
    /// Slots not active yet holding shreds loaded from the store.
    preloaded: HashMap<u64, SlotAssembler>,
    /// (slot, index) of the stored shreds loaded, while their slot is incomplete.
    loaded: std::collections::HashSet<(u64, u32)>,
    actions: VecDeque<Action>,
    rng: StdRng,
    progress: Progress,
}

impl RepairEngine {
    pub fn new(cfg: EngineConfig, identity: SigningKey, leaders: LeaderSchedule) -> Self {
        let shards = cfg.shards.max(1);
        let queue: VecDeque<u64> = (cfg.from_slot..=cfg.to_slot)
            .rev()
            .filter(|s| catchup_shards::ownership::owner_of_range(*s, 1, shards).0 == cfg.shard)
            .filter(|s| leaders.leader(*s).is_some())
            .collect();
        let progress = Progress {
            slots_total: queue.len() as u64,
            slots_remaining: queue.len() as u64,
            ..Default::default()
        };
        let rng = StdRng::seed_from_u64(cfg.seed ^ (cfg.shard as u64).wrapping_mul(0x9e37_79b9));
        RepairEngine {
            my_id: pubkey_of(&identity),
            cfg,
            identity,
            leaders,
            peers: Vec::new(),
            queue,
            active: BTreeMap::new(),
            inflight: HashMap::new(),
            verified: HashMap::new(),
            preloaded: HashMap::new(),
            loaded: Default::default(),
            actions: VecDeque::new(),
            rng,
            progress,
        }
    }

    pub fn identity(&self) -> Pubkey {
        self.my_id
    }

    /// Add a repair peer; `key` is its identity if known (else learnt from its ping).
    pub fn add_peer(&mut self, key: Option<Pubkey>) -> PeerId {
        self.peers.push(Peer {
            key,
            inflight: 0,
            answered: 0,
            timeouts: 0,
            invalid: 0,
            latency_ewma_ms: 50.0,
            last_discovery_ms: None,
        });
        PeerId(self.peers.len() - 1)
    }

    pub fn is_done(&self) -> bool {
        self.queue.is_empty() && self.active.is_empty()
    }

    pub fn next_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn progress(&self) -> Progress {
        let mut p = self.progress.clone();
        p.inflight = self.inflight.len();
        p.peers = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, pe)| PeerHealth {
                peer: i,
                key_known: pe.key.is_some(),
                inflight: pe.inflight,
                answered: pe.answered,
                timeouts: pe.timeouts,
                invalid: pe.invalid,
                latency_ms: pe.latency_ewma_ms,
                score: pe.score(),
                dropped: pe.banned(),
            })
            .collect();
        p
    }

    /// A packet arrived from `peer`.
    pub fn on_packet(&mut self, now_ms: u64, peer: PeerId, packet: &[u8]) {
        if peer.0 >= self.peers.len() {
            self.progress.unsolicited += 1;
            return;
        }
        if let Some(ping) = Ping::decode_response(packet) {
            self.on_ping(peer, &ping);
            return;
        }
        let Ok((bytes, nonce)) = split_repair_response(packet) else {
            self.progress.unsolicited += 1;
            return;
        };
        let Some(req) = self.inflight.get(&nonce).copied() else {
            self.progress.unsolicited += 1;
            return;
        };
        if req.peer != peer {
            self.progress.unsolicited += 1;
            return;
        }
        self.finish_request(nonce, &req);
        match self.accept_shred(bytes, &req) {
            Ok(()) => {
                let p = &mut self.peers[peer.0];
                p.answered += 1;
                let rtt = now_ms.saturating_sub(req.sent_at_ms) as f64;
                p.latency_ewma_ms = 0.8 * p.latency_ewma_ms + 0.2 * rtt;
            }
            Err(()) => {
                self.peers[peer.0].invalid += 1;
                self.progress.invalid += 1;
            }
        }
    }

    fn on_ping(&mut self, peer: PeerId, ping: &Ping) {
        if ping.verify().is_err() {
            self.progress.invalid += 1;
            return;
        }
        let p = &mut self.peers[peer.0];
        match p.key {
            None => p.key = Some(ping.from),
            Some(k) if k != ping.from => {
                p.invalid += 1;
                return;
            }
            Some(_) => {}
        }
        let pong = Pong::new(&self.identity, ping).encode();
        self.actions.push_back(Action::Send { peer, packet: pong });
        // the server dropped the requests it pinged us for: re-issue them now
        let mut dropped: Vec<(u32, Inflight)> = self
            .inflight
            .iter()
            .filter(|(_, r)| r.peer == peer)
            .map(|(n, r)| (*n, *r))
            .collect();
        dropped.sort_unstable_by_key(|(n, _)| *n);
        for (nonce, req) in dropped {
            self.finish_request(nonce, &req);
        }
    }

    fn finish_request(&mut self, nonce: u32, req: &Inflight) {
        self.inflight.remove(&nonce);
        let p = &mut self.peers[req.peer.0];
        p.inflight = p.inflight.saturating_sub(1);
        if let Some(w) = self.active.get_mut(&req.kind.slot()) {
            match req.kind {
                RequestKind::WindowIndex { shred_index, .. } => {
                    w.pending.remove(&(shred_index as u32));
                }
                RequestKind::HighestWindowIndex { .. } => w.highest_inflight = false,
                _ => {}
            }
        }
    }

    /// Verify and store a response shred; Err means the peer sent something wrong.
    fn accept_shred(&mut self, bytes: &[u8], req: &Inflight) -> Result<(), ()> {
        let shred = Shred::from_bytes(bytes).map_err(|_| ())?;
        let slot = req.kind.slot();
        if shred.slot() != slot || !shred.is_data() {
            return Err(());
        }
        match req.kind {
            RequestKind::WindowIndex { shred_index, .. }
                if u64::from(shred.index()) != shred_index =>
            {
                return Err(())
            }
            RequestKind::HighestWindowIndex { shred_index, .. }
                if u64::from(shred.index()) < shred_index =>
            {
                return Err(())
            }
            _ => {}
        }
        self.verify_shred(&shred)?;
        let Some(w) = self.active.get_mut(&slot) else {
            // slot already complete
            self.progress.duplicates += 1;
            return Ok(());
        };
        let index = shred.index();
        let stored = self.cfg.persist.then(|| bytes.to_vec());
        match w.asm.insert(shred) {
            Ok(Insert::Duplicate) => self.progress.duplicates += 1,
            Ok(_) => {
                self.progress.shreds_received += 1;
                if let Some(shred) = stored {
                    self.actions.push_back(Action::Store { slot, index, shred });
                }
            }
            Err(_) => return Err(()),
        }
        if w.asm.is_complete() {
            let w = self.active.remove(&slot).expect("present");
            self.complete_slot(slot, &w.asm);
        }
        Ok(())
    }

    /// Merkle proof, and the leader's signature of the root (once per FEC set).
    fn verify_shred(&mut self, shred: &Shred) -> Result<(), ()> {
        let slot = shred.slot();
        let root = shred.merkle_root().map_err(|_| ())?;
        let key = (slot, shred.fec_set_index());
        match self.verified.get(&key) {
            Some((r, s)) if *r == root && s == shred.signature() => {}
            Some(_) => return Err(()),
            None => {
                let leader = *self.leaders.leader(slot).ok_or(())?;
                shred.verify(&leader).map_err(|_| ())?;
                self.verified.insert(key, (root, *shred.signature()));
            }
        }
        Ok(())
    }

    fn complete_slot(&mut self, slot: u64, asm: &SlotAssembler) {
        let shreds = asm.data_payloads().map(<[u8]>::to_vec).collect();
        self.verified.retain(|(s, _), _| *s != slot);
        self.loaded.retain(|(s, _)| *s != slot);
        self.progress.slots_complete += 1;
        self.progress.slots_remaining -= 1;
        self.actions
            .push_back(Action::SlotComplete { slot, shreds });
    }

    fn owns(&self, slot: u64) -> bool {
        (self.cfg.from_slot..=self.cfg.to_slot).contains(&slot)
            && catchup_shards::ownership::owner_of_range(slot, 1, self.cfg.shards.max(1)).0
                == self.cfg.shard
            && self.leaders.leader(slot).is_some()
    }

    /// A shred read back from this shard's store under the key (`slot`, `index`). It is
    /// verified like a shred from a peer (the disk is not trusted): a verified shred is kept
    /// and never requested; a shred that fails is dropped and counted (`store_rejected`).
    /// Call before the first [`RepairEngine::on_tick`].
    pub fn preload(&mut self, slot: u64, index: u32, bytes: &[u8]) -> Preload {
        if !self.owns(slot) {
            return Preload::NotMine;
        }
        let verdict = (|| {
            let shred = Shred::from_bytes(bytes).map_err(|_| ())?;
            if shred.slot() != slot || shred.index() != index || !shred.is_data() {
                return Err(());
            }
            self.verify_shred(&shred)?;
            Ok(shred)
        })();
        let Ok(shred) = verdict else {
            self.progress.store_rejected += 1;
            return Preload::Rejected;
        };
        let asm = match self.active.get_mut(&slot) {
            Some(w) => &mut w.asm,
            None => self
                .preloaded
                .entry(slot)
                .or_insert_with(|| SlotAssembler::new(slot)),
        };
        match asm.insert(shred) {
            Ok(Insert::Duplicate) => Preload::Duplicate,
            Ok(_) => {
                self.progress.shreds_loaded += 1;
                self.loaded.insert((slot, index));
                Preload::Loaded
            }
            Err(_) => {
                self.progress.store_rejected += 1;
                Preload::Rejected
            }
        }
    }

    /// Time passed: expire requests, then issue new ones.
    pub fn on_tick(&mut self, now_ms: u64) {
        let timeout = self.cfg.request_timeout_ms;
        let expired: Vec<(u32, Inflight)> = self
            .inflight
            .iter()
            .filter(|(_, r)| now_ms.saturating_sub(r.sent_at_ms) >= timeout)
            .map(|(n, r)| (*n, *r))
            .collect();
        let mut expired = expired;
        expired.sort_unstable_by_key(|(n, _)| *n);
        for (nonce, req) in expired {
            self.finish_request(nonce, &req);
            self.peers[req.peer.0].timeouts += 1;
            self.progress.timeouts += 1;
        }
        self.discover_keys(now_ms);
        while self.active.len() < self.cfg.active_slots {
            let Some(slot) = self.queue.pop_front() else {
                break;
            };
            let asm = self
                .preloaded
                .remove(&slot)
                .unwrap_or_else(|| SlotAssembler::new(slot));
            if asm.is_complete() {
                // Stored shreds alone complete it: nothing to request.
                self.progress.slots_loaded += 1;
                self.complete_slot(slot, &asm);
                continue;
            }
            self.active.insert(
                slot,
                SlotWork {
                    asm,
                    pending: BTreeSet::new(),
                    highest_inflight: false,
                },
            );
        }
        self.schedule(now_ms);
    }

    fn discover_keys(&mut self, now_ms: u64) {
        let slot = self.cfg.to_slot;
        for i in 0..self.peers.len() {
            let p = &mut self.peers[i];
            if p.key.is_some()
                || p.last_discovery_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) < 500)
            {
                continue;
            }
            p.last_discovery_ms = Some(now_ms);
            // addressed to nobody: a server answers with a ping that carries its key
            let packet = RepairRequest::signed(
                &self.identity,
                [0; 32],
                now_ms,
                0,
                RequestKind::HighestWindowIndex {
                    slot,
                    shred_index: 0,
                },
            );
            self.actions.push_back(Action::Send {
                peer: PeerId(i),
                packet,
            });
        }
    }

    fn pick_peer(&mut self) -> Option<PeerId> {
        let usable: Vec<(usize, f64)> = self
            .peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.key.is_some() && !p.banned())
            .map(|(i, p)| (i, p.score()))
            .collect();
        let total: f64 = usable.iter().map(|(_, s)| s).sum();
        if total <= 0.0 {
            return None;
        }
        // each peer may hold a share of the in-flight budget proportional to its score
        let open: Vec<(usize, f64)> = usable
            .into_iter()
            .filter(|(i, s)| {
                let share = ((self.cfg.max_inflight_total as f64) * s / total).ceil() as usize;
                self.peers[*i].inflight < share.clamp(2, self.cfg.max_inflight_per_peer)
            })
            .collect();
        let sum: f64 = open.iter().map(|(_, s)| s).sum();
        if open.is_empty() || sum <= 0.0 {
            return None;
        }
        let mut x = self.rng.gen::<f64>() * sum;
        for (i, s) in &open {
            if x < *s {
                return Some(PeerId(*i));
            }
            x -= s;
        }
        open.last().map(|(i, _)| PeerId(*i))
    }

    fn send_request(&mut self, now_ms: u64, kind: RequestKind) -> bool {
        if self.inflight.len() >= self.cfg.max_inflight_total {
            return false;
        }
        let Some(peer) = self.pick_peer() else {
            return false;
        };
        let mut nonce = self.rng.gen::<u32>();
        while nonce == 0 || self.inflight.contains_key(&nonce) {
            nonce = self.rng.gen::<u32>();
        }
        if let RequestKind::WindowIndex { slot, shred_index } = kind {
            if u32::try_from(shred_index).is_ok_and(|i| self.loaded.contains(&(slot, i))) {
                self.progress.requests_for_loaded += 1;
            }
        }
        let recipient = self.peers[peer.0].key.expect("picked peers have keys");
        let packet = RepairRequest::signed(&self.identity, recipient, now_ms, nonce, kind);
        self.inflight.insert(
            nonce,
            Inflight {
                peer,
                kind,
                sent_at_ms: now_ms,
            },
        );
        self.peers[peer.0].inflight += 1;
        self.progress.requests_sent += 1;
        self.actions.push_back(Action::Send { peer, packet });
        true
    }

    fn schedule(&mut self, now_ms: u64) {
        let slots: Vec<u64> = self.active.keys().rev().copied().collect();
        'slots: for slot in slots {
            let (want_highest, missing) = {
                let w = &self.active[&slot];
                let want_highest = w.asm.last_index().is_none() && !w.highest_inflight;
                let missing: Vec<u32> = w
                    .asm
                    .missing(4096)
                    .into_iter()
                    .filter(|i| !w.pending.contains(i))
                    .collect();
                (want_highest, missing)
            };
            if want_highest {
                let from = self.active[&slot]
                    .asm
                    .highest_index()
                    .map_or(0, |h| u64::from(h) + 1);
                if !self.send_request(
                    now_ms,
                    RequestKind::HighestWindowIndex {
                        slot,
                        shred_index: from,
                    },
                ) {
                    break;
                }
                self.active.get_mut(&slot).expect("active").highest_inflight = true;
            }
            for index in missing {
                if !self.send_request(
                    now_ms,
                    RequestKind::WindowIndex {
                        slot,
                        shred_index: u64::from(index),
                    },
                ) {
                    break 'slots;
                }
                self.active
                    .get_mut(&slot)
                    .expect("active")
                    .pending
                    .insert(index);
            }
        }
    }
}

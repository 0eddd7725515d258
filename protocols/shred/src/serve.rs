//! A sans-IO repair server: requests in, response packets out, answered from a store of
//! data shreds. Requests are checked as Agave checks them (recipient, time window,
//! signature), and a requester must answer a ping before it is served.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash as StdHash;

use ed25519_dalek::SigningKey;
use rand::{rngs::StdRng, RngCore, SeedableRng};

use crate::repair::*;
use crate::shred::Shred;

/// Data shreds by slot, with each slot's parent.
#[derive(Debug, Default, Clone)]
pub struct MemLedger {
    slots: BTreeMap<u64, LedgerSlot>,
}

#[derive(Debug, Default, Clone)]
struct LedgerSlot {
    parent: Option<u64>,
    data: BTreeMap<u32, Vec<u8>>,
    last_root: Option<[u8; 32]>,
}

impl MemLedger {
    pub fn new() -> Self {
        Self::default()
    }
    /// Add a shred (coding shreds are ignored: repair serves data shreds).
    pub fn insert(&mut self, shred: &Shred) {
        if !shred.is_data() {
            return;
        }
        let s = self.slots.entry(shred.slot()).or_default();
        s.parent = shred.parent_slot();
        if shred.last_in_slot() {
            s.last_root = shred.merkle_root().ok();
        }
        s.data.insert(shred.index(), shred.payload().to_vec());
    }
    pub fn get(&self, slot: u64, index: u64) -> Option<&[u8]> {
        let index = u32::try_from(index).ok()?;
        self.slots.get(&slot)?.data.get(&index).map(Vec::as_slice)
    }
    pub fn highest(&self, slot: u64) -> Option<(u32, &[u8])> {
        self.slots
            .get(&slot)?
            .data
            .iter()
            .next_back()
            .map(|(i, p)| (*i, p.as_slice()))
    }
    pub fn parent(&self, slot: u64) -> Option<u64> {
        self.slots.get(&slot)?.parent
    }
    pub fn slots(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.keys().copied()
    }
    pub fn num_data_shreds(&self, slot: u64) -> usize {
        self.slots.get(&slot).map_or(0, |s| s.data.len())
    }
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServeStats {
    pub requests: u64,
    pub served: u64,
    pub not_found: u64,
    pub invalid: u64,
    pub pings_sent: u64,
    pub pongs_ok: u64,
    pub awaiting_pong: u64,
}

#[derive(Debug, Clone, Copy)]
struct PingState {
    token: [u8; 32],
    pinged_at_ms: u64,
    verified_at_ms: Option<u64>,
}

pub struct ServeRepair<A> {
    key: SigningKey,
    id: Pubkey,
    pings: HashMap<(Pubkey, A), PingState>,
    rng: StdRng,
    pub stats: ServeStats,
}

impl<A: Copy + Eq + StdHash> ServeRepair<A> {
    pub fn new(key: SigningKey, seed: u64) -> Self {
        let id = pubkey_of(&key);
        Self {
            key,
            id,
            pings: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
            stats: ServeStats::default(),
        }
    }
    pub fn id(&self) -> Pubkey {
        self.id
    }

    /// Handle one packet from `from`; returns the packets to send back to `from`.
    /// Requests addressed to the all-zero pubkey (a requester that does not know this
    /// server's key yet) only get a ping, which carries the key.
    pub fn handle(
        &mut self,
        ledger: &MemLedger,
        now_ms: u64,
        from: A,
        packet: &[u8],
    ) -> Vec<Vec<u8>> {
        let msg = match decode_repair_protocol(packet) {
            Ok(m) => m,
            Err(_) => {
                self.stats.invalid += 1;
                return Vec::new();
            }
        };
        match msg {
            RepairProtocol::Pong(pong) => {
                if let Some(st) = self.pings.get_mut(&(pong.from, from)) {
                    if pong.verify(&st.token).is_ok() {
                        st.verified_at_ms = Some(now_ms);
                        self.stats.pongs_ok += 1;
                        return Vec::new();
                    }
                }
                self.stats.invalid += 1;
                Vec::new()
            }
            RepairProtocol::Request(req) => {
                self.stats.requests += 1;
                if req.header.recipient == [0u8; 32] && req.header.sender != self.id {
                    return self
                        .maybe_ping(now_ms, req.header.sender, from)
                        .into_iter()
                        .collect();
                }
                if req.verify(packet, &self.id, now_ms).is_err() {
                    self.stats.invalid += 1;
                    return Vec::new();
                }
                let trusted = self
                    .pings
                    .get(&(req.header.sender, from))
                    .and_then(|s| s.verified_at_ms)
                    .is_some_and(|t| now_ms.saturating_sub(t) <= REPAIR_PING_CACHE_TTL_MS);
                if !trusted {
                    self.stats.awaiting_pong += 1;
                    return self
                        .maybe_ping(now_ms, req.header.sender, from)
                        .into_iter()
                        .collect();
                }
                let out = answer(ledger, &req);
                if out.is_empty() {
                    self.stats.not_found += 1;
                } else {
                    self.stats.served += out.len() as u64;
                }
                out
            }
        }
    }

    fn maybe_ping(&mut self, now_ms: u64, peer: Pubkey, from: A) -> Option<Vec<u8>> {
        if let Some(st) = self.pings.get(&(peer, from)) {
            if now_ms.saturating_sub(st.pinged_at_ms) < REPAIR_PING_RATE_LIMIT_MS {
                return None;
            }
        }
        if self.pings.len() >= REPAIR_PING_CACHE_CAPACITY && !self.pings.contains_key(&(peer, from))
        {
            self.pings
                .retain(|_, s| now_ms.saturating_sub(s.pinged_at_ms) <= REPAIR_PING_CACHE_TTL_MS);
            if self.pings.len() >= REPAIR_PING_CACHE_CAPACITY {
                return None;
            }
        }
        let mut token = [0u8; 32];
        self.rng.fill_bytes(&mut token);
        let verified_at_ms = self.pings.get(&(peer, from)).and_then(|s| s.verified_at_ms);
        self.pings.insert(
            (peer, from),
            PingState {
                token,
                pinged_at_ms: now_ms,
                verified_at_ms,
            },
        );
        self.stats.pings_sent += 1;
        Some(Ping::new(&self.key, token).encode_response())
    }
}

/// The response packets for a verified request.
pub fn answer(ledger: &MemLedger, req: &RepairRequest) -> Vec<Vec<u8>> {
    let nonce = req.header.nonce;
    match req.kind {
        RequestKind::WindowIndex { slot, shred_index } => ledger
            .get(slot, shred_index)
            .map(|s| encode_shred_response(s, nonce))
            .into_iter()
            .collect(),
        RequestKind::HighestWindowIndex { slot, shred_index } => ledger
            .highest(slot)
            .filter(|(i, _)| u64::from(*i) >= shred_index)
            .map(|(_, s)| encode_shred_response(s, nonce))
            .into_iter()
            .collect(),
        RequestKind::Orphan { slot } => {
            let mut out = Vec::new();
            let mut cur = Some(slot);
            while let Some(s) = cur {
                if out.len() >= MAX_ORPHAN_REPAIR_RESPONSES {
                    break;
                }
                match ledger.highest(s) {
                    Some((_, p)) => out.push(encode_shred_response(p, nonce)),
                    None => break,
                }
                cur = ledger.parent(s).filter(|p| *p < s);
            }
            out
        }
        RequestKind::AncestorHashes { slot } => {
            let mut hashes = Vec::new();
            let mut cur = Some(slot);
            while let Some(s) = cur {
                if hashes.len() >= MAX_ANCESTOR_RESPONSES {
                    break;
                }
                match ledger.slots.get(&s).and_then(|l| l.last_root) {
                    Some(h) => hashes.push((s, h)),
                    None => break,
                }
                cur = ledger.parent(s).filter(|p| *p < s);
            }
            vec![encode_ancestor_hashes(&hashes, nonce)]
        }
    }
}

//! The Kademlia table: 256 buckets by log-distance from the local id, `k = 16` entries each
//! (least recently seen first) plus a bounded replacement cache, and the endpoint proofs
//! that gate answers to queries.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::crypto::NodeId;

pub const BUCKET_SIZE: usize = 16;
pub const NUM_BUCKETS: usize = 256;
/// Replacement candidates kept per bucket.
pub const MAX_REPLACEMENTS: usize = 10;
/// How long a completed ping/pong proves an endpoint (discv4: 12 hours).
pub const BOND_EXPIRATION_MS: u64 = 12 * 3600 * 1000;

/// One live entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry<T> {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub data: T,
    pub added_ms: u64,
    pub last_seen_ms: u64,
    /// Set while a liveness ping is outstanding.
    pub ping_sent_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct Bucket<T> {
    entries: Vec<NodeEntry<T>>,
    replacements: Vec<NodeEntry<T>>,
}

/// What [`Table::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Inserted,
    /// Already present: address and data updated, position kept.
    Updated,
    /// The bucket is full: the node went to the replacement cache; `oldest` should be
    /// pinged, and removed with [`Table::remove`] if it does not answer.
    Full {
        oldest: NodeId,
    },
    /// Our own id.
    Local,
}

#[derive(Debug, Clone)]
pub struct Table<T> {
    local: NodeId,
    buckets: Vec<Bucket<T>>,
    len: usize,
}

impl<T: Clone> Table<T> {
    pub fn new(local: NodeId) -> Self {
        Table {
            local,
            buckets: (0..NUM_BUCKETS)
                .map(|_| Bucket {
                    entries: Vec::new(),
                    replacements: Vec::new(),
                })
                .collect(),
            len: 0,
        }
    }

    pub fn local_id(&self) -> NodeId {
        self.local
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn bucket_index(&self, id: &NodeId) -> Option<usize> {
        let d = self.local.log_distance(id);
        (d > 0).then(|| d as usize - 1)
    }

    pub fn insert(&mut self, id: NodeId, addr: SocketAddr, data: T, now_ms: u64) -> Insert {
        let Some(bi) = self.bucket_index(&id) else {
            return Insert::Local;
        };
        let b = &mut self.buckets[bi];
        if let Some(e) = b.entries.iter_mut().find(|e| e.id == id) {
            e.addr = addr;
            e.data = data;
            return Insert::Updated;
        }
        let entry = NodeEntry {
            id,
            addr,
            data,
            added_ms: now_ms,
            last_seen_ms: now_ms,
            ping_sent_ms: None,
        };
        if b.entries.len() < BUCKET_SIZE {
            b.replacements.retain(|r| r.id != id);
            b.entries.push(entry);
            self.len += 1;
            return Insert::Inserted;
        }
        b.replacements.retain(|r| r.id != id);
        if b.replacements.len() >= MAX_REPLACEMENTS {
            b.replacements.remove(0);
        }
        b.replacements.push(entry);
        Insert::Full {
            oldest: b.entries[0].id,
        }
    }

    pub fn get(&self, id: &NodeId) -> Option<&NodeEntry<T>> {
        let bi = self.bucket_index(id)?;
        self.buckets[bi].entries.iter().find(|e| e.id == *id)
    }

    pub fn get_mut(&mut self, id: &NodeId) -> Option<&mut NodeEntry<T>> {
        let bi = self.bucket_index(id)?;
        self.buckets[bi].entries.iter_mut().find(|e| e.id == *id)
    }

    pub fn contains(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    /// The node answered: it moves to the tail of its bucket, its ping is settled.
    pub fn seen(&mut self, id: &NodeId, now_ms: u64) -> bool {
        let Some(bi) = self.bucket_index(id) else {
            return false;
        };
        let b = &mut self.buckets[bi];
        let Some(pos) = b.entries.iter().position(|e| e.id == *id) else {
            return false;
        };
        let mut e = b.entries.remove(pos);
        e.last_seen_ms = now_ms;
        e.ping_sent_ms = None;
        b.entries.push(e);
        true
    }

    pub fn ping_sent(&mut self, id: &NodeId, now_ms: u64) {
        if let Some(e) = self.get_mut(id) {
            e.ping_sent_ms = Some(now_ms);
        }
    }

    /// Remove a node (dead or misbehaving); the most recent replacement takes its place.
    pub fn remove(&mut self, id: &NodeId) -> Option<NodeEntry<T>> {
        let bi = self.bucket_index(id)?;
        let b = &mut self.buckets[bi];
        if let Some(pos) = b.replacements.iter().position(|e| e.id == *id) {
            b.replacements.remove(pos);
        }
        let pos = b.entries.iter().position(|e| e.id == *id)?;
        let removed = b.entries.remove(pos);
        self.len -= 1;
        if let Some(r) = b.replacements.pop() {
            b.entries.push(r);
            self.len += 1;
        }
        Some(removed)
    }

    /// The `n` entries closest to `target` by XOR distance, closest first.
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<&NodeEntry<T>> {
        let mut all: Vec<&NodeEntry<T>> = self.iter().collect();
        all.sort_by_key(|e| target.distance(&e.id));
        all.truncate(n);
        all
    }

    /// The entries at log-distance `distance` (1..=256) from the local id.
    pub fn at_distance(&self, distance: u32) -> &[NodeEntry<T>] {
        match distance {
            1..=256 => &self.buckets[distance as usize - 1].entries,
            _ => &[],
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &NodeEntry<T>> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// The least recently seen entry not seen since `before_ms` and without a ping
    /// outstanding (for revalidation).
    pub fn stalest(&self, before_ms: u64) -> Option<&NodeEntry<T>> {
        self.iter()
            .filter(|e| e.ping_sent_ms.is_none() && e.last_seen_ms < before_ms)
            .min_by_key(|e| e.last_seen_ms)
    }

    /// Entries whose liveness ping was sent before `before_ms` and never answered.
    pub fn ping_overdue(&self, before_ms: u64) -> Vec<NodeId> {
        self.iter()
            .filter(|e| e.ping_sent_ms.is_some_and(|t| t < before_ms))
            .map(|e| e.id)
            .collect()
    }
}

/// Endpoint proofs: a node at an IP is verified when it answered our ping with a matching
/// pong within the last [`BOND_EXPIRATION_MS`]. Queries (FINDNODE, ENRRequest) from
/// unverified endpoints are not answered, so a spoofed source cannot turn us into an
/// amplifier. Bounded: the oldest proof is dropped when full.
#[derive(Debug, Clone)]
pub struct EndpointProofs {
    proofs: HashMap<(NodeId, IpAddr), u64>,
    capacity: usize,
}

impl EndpointProofs {
    pub fn new(capacity: usize) -> Self {
        EndpointProofs {
            proofs: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn record(&mut self, id: NodeId, ip: IpAddr, now_ms: u64) {
        if self.proofs.len() >= self.capacity && !self.proofs.contains_key(&(id, ip)) {
            self.proofs
                .retain(|_, t| now_ms.saturating_sub(*t) < BOND_EXPIRATION_MS);
            if self.proofs.len() >= self.capacity {
                if let Some(oldest) = self.proofs.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                    self.proofs.remove(&oldest);
                }
            }
        }
        self.proofs.insert((id, ip), now_ms);
    }

    pub fn is_verified(&self, id: &NodeId, ip: IpAddr, now_ms: u64) -> bool {
        self.proofs
            .get(&(*id, ip))
            .is_some_and(|t| now_ms.saturating_sub(*t) < BOND_EXPIRATION_MS)
    }

    pub fn forget(&mut self, id: &NodeId, ip: IpAddr) {
        self.proofs.remove(&(*id, ip));
    }

    /// When the proof of `id` at `ip` was recorded, if it has not expired.
    pub fn recorded_at(&self, id: &NodeId, ip: IpAddr, now_ms: u64) -> Option<u64> {
        self.proofs
            .get(&(*id, ip))
            .copied()
            .filter(|t| now_ms.saturating_sub(*t) < BOND_EXPIRATION_MS)
    }

    pub fn len(&self) -> usize {
        self.proofs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.proofs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_at(local: &NodeId, distance: u32, salt: u8) -> NodeId {
        // Flip bit (distance - 1) counted from the least significant end, set a few low bits.
        let mut id = *local;
        let bit = distance - 1;
        id.0[31 - (bit / 8) as usize] ^= 1 << (bit % 8);
        if distance > 9 {
            id.0[31] ^= salt;
        }
        id
    }

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 30000 + i))
    }

    #[test]
    fn buckets_fill_then_replace() {
        let local = NodeId([0x11; 32]);
        let mut t: Table<()> = Table::new(local);
        assert_eq!(t.insert(local, addr(0), (), 0), Insert::Local);
        let ids: Vec<NodeId> = (0..BUCKET_SIZE as u8 + 3)
            .map(|i| id_at(&local, 200, i))
            .collect();
        for (i, id) in ids.iter().enumerate().take(BUCKET_SIZE) {
            assert_eq!(local.log_distance(id), 200);
            assert_eq!(
                t.insert(*id, addr(i as u16), (), i as u64),
                Insert::Inserted
            );
        }
        assert_eq!(t.insert(ids[3], addr(99), (), 50), Insert::Updated);
        assert_eq!(t.get(&ids[3]).unwrap().addr, addr(99));
        assert_eq!(t.len(), BUCKET_SIZE);
        assert_eq!(
            t.insert(ids[16], addr(16), (), 100),
            Insert::Full { oldest: ids[0] }
        );
        assert_eq!(
            t.insert(ids[17], addr(17), (), 101),
            Insert::Full { oldest: ids[0] }
        );
        assert!(!t.contains(&ids[16]));
        // The oldest answers: it moves to the tail, ids[1] becomes the oldest.
        t.ping_sent(&ids[0], 110);
        assert_eq!(t.ping_overdue(111), vec![ids[0]]);
        assert!(t.seen(&ids[0], 120));
        assert!(t.ping_overdue(1000).is_empty());
        assert_eq!(
            t.insert(ids[18], addr(18), (), 130),
            Insert::Full { oldest: ids[1] }
        );
        // ids[1] does not answer: removed, the latest replacement takes its place.
        assert!(t.remove(&ids[1]).is_some());
        assert!(t.contains(&ids[18]));
        assert_eq!(t.len(), BUCKET_SIZE);
        assert_eq!(t.at_distance(200).len(), BUCKET_SIZE);
        assert!(t.at_distance(0).is_empty() && t.at_distance(257).is_empty());
        // Other buckets are independent.
        assert_eq!(
            t.insert(id_at(&local, 1, 0), addr(50), (), 0),
            Insert::Inserted
        );
        assert_eq!(t.at_distance(1).len(), 1);
        // Stalest: least recently seen without a ping outstanding.
        assert_eq!(t.stalest(u64::MAX).map(|e| e.id), Some(id_at(&local, 1, 0)));
    }

    #[test]
    fn closest_orders_by_xor_distance() {
        let local = NodeId([0; 32]);
        let mut t: Table<u32> = Table::new(local);
        let mut ids = Vec::new();
        for i in 1..=40u8 {
            let mut id = NodeId([0; 32]);
            id.0[0] = i;
            id.0[31] = i.wrapping_mul(37);
            ids.push(id);
            t.insert(id, addr(u16::from(i)), u32::from(i), 0);
        }
        let target = ids[9];
        let got: Vec<NodeId> = t.closest(&target, 5).iter().map(|e| e.id).collect();
        let mut want = ids.clone();
        want.retain(|id| t.contains(id));
        want.sort_by_key(|id| target.distance(id));
        want.truncate(5);
        assert_eq!(got, want);
        assert_eq!(got[0], target);
        assert_eq!(t.closest(&target, 1000).len(), t.len());
    }

    #[test]
    fn endpoint_proofs_expire_and_are_bounded() {
        let mut p = EndpointProofs::new(2);
        let a = NodeId([1; 32]);
        let b = NodeId([2; 32]);
        let c = NodeId([3; 32]);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(!p.is_verified(&a, ip, 0));
        p.record(a, ip, 1000);
        assert!(p.is_verified(&a, ip, 1000 + BOND_EXPIRATION_MS - 1));
        assert!(!p.is_verified(&a, ip, 1000 + BOND_EXPIRATION_MS));
        assert!(!p.is_verified(&a, other, 1000), "proof is per address");
        p.record(b, ip, 2000);
        p.record(c, ip, 3000);
        assert_eq!(p.len(), 2);
        assert!(!p.is_verified(&a, ip, 3000), "oldest dropped");
        assert!(p.is_verified(&b, ip, 3000) && p.is_verified(&c, ip, 3000));
    }
}

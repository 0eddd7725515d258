//! One shard's share of the discovered peers: candidates handed to it by discovery (the
//! shard owns a node by `owner_of_peer` over its node id), dialed up to the shard's share
//! of `--max-peers`, refilled as peers leave, with counts of what happened to them.
//! Logic only: the sync driver performs the dials.

use std::collections::{BTreeMap, HashSet, VecDeque};

use catchup_devp2p::enode::Enode;
use serde::Serialize;

use crate::eth::sync::types::PeerId;

use super::conn::NetError;

/// Peer ids of discovered peers start here (static `--peer` entries are `0..n`): id
/// `DISCOVERED_BASE + seq * shards + owner`, so every shard knows a peer's owner from its id.
pub const DISCOVERED_BASE: PeerId = 1 << 24;
/// Candidates waiting to be dialed, per shard.
pub const MAX_QUEUED: usize = 1_024;
/// Node ids remembered (dialed or queued), per shard.
pub const MAX_KNOWN: usize = 16_384;
/// A peer that left for a passing reason (unreachable, full, disconnected) is dialed
/// again after `RETRY_AFTER_MS << n` (n = 0, 1, 2), at most `MAX_RETRIES` times.
pub const RETRY_AFTER_MS: u64 = 30_000;
pub const MAX_RETRIES: u32 = 3;

/// Reasons after which a discovered peer is worth dialing again later.
fn passing(reason: &str) -> bool {
    matches!(reason, "unreachable" | "too_many_peers" | "disconnected")
}

/// The shard that owns peer `pid` when it is a discovered peer.
pub fn discovered_owner(pid: PeerId, shards: usize) -> Option<usize> {
    (pid >= DISCOVERED_BASE).then(|| ((pid - DISCOVERED_BASE) as usize) % shards.max(1))
}

/// This shard's share of `max_peers` (the first `max_peers % shards` shards take one more).
pub fn share_of(max_peers: usize, shards: usize, me: usize) -> usize {
    let shards = shards.max(1);
    max_peers / shards + usize::from(me < max_peers % shards)
}

/// Why a discovered peer left the pool: a short, stable name for counters.
pub fn drop_reason(e: &NetError) -> &'static str {
    use catchup_devp2p::p2p::DisconnectReason;
    match e {
        NetError::Io { .. } | NetError::Timeout { .. } | NetError::Closed { .. } => "unreachable",
        NetError::Disconnected { reason, .. } => match reason {
            DisconnectReason::TooManyPeers => "too_many_peers",
            DisconnectReason::IncompatibleVersion => "version",
            DisconnectReason::UselessPeer => "useless",
            _ => "disconnected",
        },
        NetError::Protocol { .. } => "protocol",
        NetError::Useless { detail, .. } => {
            if detail.contains("fork id") {
                "fork_id"
            } else if detail.contains("different chain") {
                "network"
            } else if detail.contains("not shared") || detail.contains("shared capability") {
                "version"
            } else {
                "useless"
            }
        }
    }
}

/// What a shard's pool did, for the progress line, `/status` and the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolCounts {
    /// Distinct candidates handed to this shard.
    pub candidates: u64,
    /// Dial sessions started (a peer dialed again after a passing failure counts again).
    pub dialed: u64,
    /// Discovered peers connected right now.
    pub connected_now: u64,
    /// Discovered peers that completed the eth handshake at least once.
    pub connected_ever: u64,
    /// Discovered peers that left the pool, by reason.
    pub dropped: BTreeMap<String, u64>,
}

impl PoolCounts {
    pub fn add(&mut self, o: &PoolCounts) {
        self.candidates += o.candidates;
        self.dialed += o.dialed;
        self.connected_now += o.connected_now;
        self.connected_ever += o.connected_ever;
        for (k, v) in &o.dropped {
            *self.dropped.entry(k.clone()).or_default() += v;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    node: Enode,
    connected: bool,
    ever: bool,
    retries: u32,
}

/// A shard's pool of discovered peers.
#[derive(Debug)]
pub struct Pool {
    me: usize,
    shards: usize,
    share: usize,
    queue: VecDeque<Enode>,
    /// Peers to dial again: (not before, node, retries so far).
    retry: Vec<(u64, Enode, u32)>,
    known: HashSet<[u8; 64]>,
    active: BTreeMap<PeerId, Slot>,
    next_seq: u32,
    counts: PoolCounts,
}

impl Pool {
    /// `static_ids`: the `--peer` entries, never taken as candidates (they are dialed anyway).
    pub fn new(me: usize, shards: usize, max_peers: usize, static_ids: &[[u8; 64]]) -> Pool {
        Pool {
            me,
            shards: shards.max(1),
            share: share_of(max_peers, shards, me),
            queue: VecDeque::new(),
            retry: Vec::new(),
            known: static_ids.iter().copied().collect(),
            active: BTreeMap::new(),
            next_seq: 0,
            counts: PoolCounts::default(),
        }
    }

    pub fn share(&self) -> usize {
        self.share
    }

    /// A candidate from discovery; false when already known or the queue is full.
    pub fn offer(&mut self, e: Enode) -> bool {
        if self.queue.len() >= MAX_QUEUED
            || self.known.len() >= MAX_KNOWN
            || !self.known.insert(e.id)
        {
            return false;
        }
        self.counts.candidates += 1;
        self.queue.push_back(e);
        true
    }

    /// Candidates waiting for a free slot.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Peers waiting to be dialed again.
    pub fn retrying(&self) -> usize {
        self.retry.len()
    }

    /// The next candidate to dial at `now_ms` (new ones first, then peers whose retry is
    /// due), with its peer id, while the shard is below its share.
    pub fn next_dial(&mut self, now_ms: u64) -> Option<(PeerId, Enode)> {
        if self.active.len() >= self.share {
            return None;
        }
        let (e, retries) = match self.queue.pop_front() {
            Some(e) => (e, 0),
            None => {
                let i = self.retry.iter().position(|(due, _, _)| *due <= now_ms)?;
                let (_, e, n) = self.retry.swap_remove(i);
                (e, n)
            }
        };
        let pid = DISCOVERED_BASE + self.next_seq * self.shards as PeerId + self.me as PeerId;
        self.next_seq += 1;
        self.active.insert(
            pid,
            Slot {
                node: e,
                connected: false,
                ever: false,
                retries,
            },
        );
        self.counts.dialed += 1;
        Some((pid, e))
    }

    pub fn connected(&mut self, pid: PeerId) {
        if let Some(s) = self.active.get_mut(&pid) {
            if !s.connected {
                s.connected = true;
                self.counts.connected_now += 1;
            }
            if !s.ever {
                s.ever = true;
                self.counts.connected_ever += 1;
            }
        }
    }

    /// The peer's connection was lost; it is dialed again (it keeps its slot).
    pub fn lost(&mut self, pid: PeerId) {
        if let Some(s) = self.active.get_mut(&pid) {
            if s.connected {
                s.connected = false;
                self.counts.connected_now -= 1;
            }
        }
    }

    /// The peer left the pool for `reason` at `now_ms`; its slot is free for the next
    /// candidate, and for a passing reason it is dialed again later (with backoff).
    /// False when it was not in the pool (already ended).
    pub fn ended(&mut self, pid: PeerId, reason: &str, now_ms: u64) -> bool {
        let Some(s) = self.active.remove(&pid) else {
            return false;
        };
        if s.connected {
            self.counts.connected_now -= 1;
        }
        if passing(reason) && s.retries < MAX_RETRIES && self.retry.len() < MAX_QUEUED {
            self.retry.push((
                now_ms + (RETRY_AFTER_MS << s.retries),
                s.node,
                s.retries + 1,
            ));
        }
        *self.counts.dropped.entry(reason.to_string()).or_default() += 1;
        true
    }

    pub fn is_active(&self, pid: PeerId) -> bool {
        self.active.contains_key(&pid)
    }

    /// Connected discovered peers (candidates for eviction).
    pub fn connected_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.active
            .iter()
            .filter(|(_, s)| s.connected)
            .map(|(p, _)| *p)
    }

    pub fn counts(&self) -> &PoolCounts {
        &self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8) -> Enode {
        Enode {
            id: [i; 64],
            addr: format!("127.0.0.1:{}", 30000 + i as u16).parse().unwrap(),
        }
    }

    #[test]
    fn shares_add_up_to_max_peers() {
        for shards in 1..6 {
            for max in 0..20 {
                let total: usize = (0..shards).map(|s| share_of(max, shards, s)).sum();
                assert_eq!(total, max);
            }
        }
    }

    #[test]
    fn dials_up_to_its_share_and_refills_when_a_peer_leaves() {
        let mut p = Pool::new(1, 2, 4, &[[9; 64]]);
        assert_eq!(p.share(), 2);
        assert!(!p.offer(node(9)), "a static peer is not a candidate");
        for i in 0..4 {
            assert!(p.offer(node(i)));
        }
        assert!(!p.offer(node(0)), "offered twice");
        let (a, _) = p.next_dial(0).unwrap();
        let (b, _) = p.next_dial(0).unwrap();
        assert!(p.next_dial(0).is_none(), "share reached");
        assert_eq!(discovered_owner(a, 2), Some(1));
        assert_eq!(discovered_owner(b, 2), Some(1));
        assert_ne!(a, b);
        assert_eq!(discovered_owner(5, 2), None);
        p.connected(a);
        p.connected(a);
        assert_eq!(p.counts().connected_now, 1);
        p.lost(a);
        p.connected(a);
        assert_eq!(p.counts().connected_ever, 1);
        assert!(p.ended(a, "fork_id", 0));
        assert!(!p.ended(a, "fork_id", 0));
        assert_eq!(
            p.retrying(),
            0,
            "a peer of another fork is not dialed again"
        );
        assert_eq!(p.counts().connected_now, 0);
        assert_eq!(p.counts().dropped["fork_id"], 1);
        let (c, e) = p.next_dial(0).unwrap();
        assert_eq!(e.id, [2; 64]);
        assert!(p.is_active(c));
        assert_eq!(p.counts().dialed, 3);
        assert_eq!(p.queued(), 1);
    }

    #[test]
    fn an_unreachable_peer_is_dialed_again_with_backoff_then_given_up() {
        let mut p = Pool::new(0, 1, 1, &[]);
        p.offer(node(1));
        let mut now = 0;
        for n in 0..MAX_RETRIES {
            let (pid, e) = p.next_dial(now).unwrap();
            assert_eq!(e.id, [1; 64]);
            assert!(p.ended(pid, "unreachable", now));
            let due = now + (RETRY_AFTER_MS << n);
            assert!(p.next_dial(due - 1).is_none(), "retry {n} waits");
            now = due;
        }
        let (pid, _) = p.next_dial(now).unwrap();
        p.ended(pid, "unreachable", now);
        assert!(
            p.next_dial(u64::MAX).is_none(),
            "given up after {MAX_RETRIES} retries"
        );
        assert_eq!(p.counts().dropped["unreachable"], MAX_RETRIES as u64 + 1);
        assert_eq!(p.counts().dialed, MAX_RETRIES as u64 + 1);
    }
}

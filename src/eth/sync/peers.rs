//! Per-shard peer bookkeeping: scoring by latency, throughput and failures, adaptive
//! timeouts, exponential backoff, rotation, and dropping liars.

use std::collections::BTreeMap;

use serde::Serialize;

use super::types::PeerId;

/// Tunables of peer handling.
#[derive(Debug, Clone, Copy)]
pub struct PeerPolicy {
    pub min_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub initial_timeout_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Requests in flight to one peer from one shard.
    pub max_inflight_per_peer: u32,
}

/// What this shard knows of one peer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStats {
    pub rtt_ewma_ms: f64,
    pub bytes_per_ms_ewma: f64,
    pub inflight: u32,
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub lies: u64,
    pub empty: u64,
    pub backoff_until_ms: u64,
    pub backoff_ms: u64,
    pub dropped: bool,
    /// The peer answered a state request empty: it does not have the pivot state.
    pub no_state: bool,
    /// Receipts requests it answered empty, and whether that makes it a peer without them.
    pub empty_receipts: u64,
    pub no_receipts: bool,
    /// The highest block the peer announced (status, or a head announcement).
    pub best: Option<u64>,
    /// State requests for the current pivot's root it answered empty since it last
    /// served one, and whether the coordinator was told it no longer serves that root.
    pub state_empty: u64,
    pub state_unserved_told: bool,
}

/// The peers of one shard.
#[derive(Debug, Default, Clone)]
pub struct PeerSet {
    pub peers: BTreeMap<PeerId, PeerStats>,
}

impl PeerStats {
    fn score(&self) -> f64 {
        let reliability = (self.successes as f64 + 1.0)
            / (self.failures as f64 * 3.0 + self.successes as f64 + 1.0);
        let speed = (self.bytes_per_ms_ewma + 1.0) / (self.rtt_ewma_ms + 10.0);
        reliability * speed / (1.0 + self.inflight as f64)
    }
}

impl PeerSet {
    pub fn join(&mut self, id: PeerId, policy: &PeerPolicy) {
        self.peers.entry(id).or_insert_with(|| PeerStats {
            rtt_ewma_ms: policy.initial_timeout_ms as f64 / 4.0,
            ..Default::default()
        });
    }

    pub fn leave(&mut self, id: PeerId) {
        self.peers.remove(&id);
    }

    /// Usable peers, best first (ties by id, so the choice is deterministic).
    pub fn pick(
        &self,
        now_ms: u64,
        policy: &PeerPolicy,
        exclude: &[PeerId],
        need_state: bool,
    ) -> Option<PeerId> {
        self.pick_scored(now_ms, policy, exclude, need_state, None)
    }

    /// [`pick`](Self::pick) for a request about block `block` (headers or bodies up to it,
    /// the state at it): a peer whose announced head (status, BlockRangeUpdate) reaches the
    /// block is preferred to one known to be behind it; a peer that announced nothing
    /// counts as covering. When no usable peer covers it, the best of the others.
    pub fn pick_for(
        &self,
        now_ms: u64,
        policy: &PeerPolicy,
        exclude: &[PeerId],
        need_state: bool,
        block: u64,
    ) -> Option<PeerId> {
        self.pick_scored(now_ms, policy, exclude, need_state, Some(block))
            .or_else(|| self.pick_scored(now_ms, policy, exclude, need_state, None))
    }

    fn pick_scored(
        &self,
        now_ms: u64,
        policy: &PeerPolicy,
        exclude: &[PeerId],
        need_state: bool,
        covering: Option<u64>,
    ) -> Option<PeerId> {
        let mut best: Option<(f64, PeerId)> = None;
        for (&id, p) in &self.peers {
            if p.dropped
                || p.backoff_until_ms > now_ms
                || p.inflight >= policy.max_inflight_per_peer
            {
                continue;
            }
            if exclude.contains(&id) || (need_state && p.no_state) {
                continue;
            }
            if covering.is_some_and(|n| p.best.is_some_and(|b| b < n)) {
                continue;
            }
            let s = p.score();
            if best.is_none_or(|(bs, _)| s > bs) {
                best = Some((s, id));
            }
        }
        best.map(|b| b.1)
    }

    /// How many peers could serve at all (not dropped).
    pub fn live(&self) -> usize {
        self.peers.values().filter(|p| !p.dropped).count()
    }

    pub fn timeout_ms(&self, id: PeerId, policy: &PeerPolicy) -> u64 {
        let rtt = self
            .peers
            .get(&id)
            .map(|p| p.rtt_ewma_ms)
            .unwrap_or(policy.initial_timeout_ms as f64);
        ((rtt * 3.0) as u64 + 100).clamp(policy.min_timeout_ms, policy.max_timeout_ms)
    }

    pub fn sent(&mut self, id: PeerId) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.inflight += 1;
            p.requests += 1;
        }
    }

    pub fn success(&mut self, id: PeerId, rtt_ms: u64, bytes: usize) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.inflight = p.inflight.saturating_sub(1);
            p.successes += 1;
            p.rtt_ewma_ms = p.rtt_ewma_ms * 0.8 + rtt_ms as f64 * 0.2;
            p.bytes_per_ms_ewma =
                p.bytes_per_ms_ewma * 0.8 + (bytes as f64 / rtt_ms.max(1) as f64) * 0.2;
            p.backoff_ms = 0;
        }
    }

    /// A timeout or an unusable (but not provably false) answer: back off exponentially.
    pub fn failure(&mut self, id: PeerId, now_ms: u64, policy: &PeerPolicy, timeout: bool) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.inflight = p.inflight.saturating_sub(1);
            p.failures += 1;
            if timeout {
                p.timeouts += 1;
                p.rtt_ewma_ms = (p.rtt_ewma_ms * 1.5).min(policy.max_timeout_ms as f64);
            } else {
                p.empty += 1;
            }
            p.backoff_ms = if p.backoff_ms == 0 {
                policy.backoff_base_ms
            } else {
                (p.backoff_ms * 2).min(policy.backoff_max_ms)
            };
            p.backoff_until_ms = now_ms + p.backoff_ms;
        }
    }

    /// The peer sent data that failed verification: drop it for good.
    pub fn lied(&mut self, id: PeerId) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.inflight = p.inflight.saturating_sub(1);
            p.lies += 1;
            p.failures += 1;
            p.dropped = true;
        }
    }

    /// A response that only finishes the request's accounting (late or irrelevant).
    pub fn done(&mut self, id: PeerId) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.inflight = p.inflight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pol() -> PeerPolicy {
        PeerPolicy {
            min_timeout_ms: 200,
            max_timeout_ms: 10_000,
            initial_timeout_ms: 2000,
            backoff_base_ms: 100,
            backoff_max_ms: 5000,
            max_inflight_per_peer: 4,
        }
    }

    #[test]
    fn prefers_fast_reliable_peers_and_drops_liars() {
        let p = pol();
        let mut s = PeerSet::default();
        s.join(1, &p);
        s.join(2, &p);
        s.sent(1);
        s.success(1, 10, 10_000);
        s.sent(2);
        s.success(2, 500, 1000);
        assert_eq!(s.pick(0, &p, &[], false), Some(1));
        s.lied(1);
        assert_eq!(s.pick(0, &p, &[], false), Some(2));
        s.sent(2);
        s.failure(2, 0, &p, true);
        assert_eq!(s.pick(50, &p, &[], false), None, "backing off");
        assert_eq!(s.pick(200, &p, &[], false), Some(2));
        assert!(s.timeout_ms(2, &p) >= 200);
    }

    #[test]
    fn a_peer_whose_head_covers_the_block_is_preferred() {
        let p = pol();
        let mut s = PeerSet::default();
        s.join(1, &p);
        s.join(2, &p);
        s.join(3, &p);
        // Peer 1 is the fastest but announced a head behind block 100.
        s.sent(1);
        s.success(1, 5, 50_000);
        s.peers.get_mut(&1).unwrap().best = Some(90);
        s.peers.get_mut(&2).unwrap().best = Some(120);
        assert_eq!(s.pick(0, &p, &[], false), Some(1));
        assert_eq!(s.pick_for(0, &p, &[], false, 100), Some(2));
        assert_eq!(s.pick_for(0, &p, &[], false, 80), Some(1));
        // A peer that announced nothing counts as covering.
        assert_eq!(s.pick_for(0, &p, &[2], false, 100), Some(3));
        // None covers: the best of the others rather than nothing.
        assert_eq!(s.pick_for(0, &p, &[2, 3], false, 100), Some(1));
    }
}

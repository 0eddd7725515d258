//! Shred repair: the sans-IO engine, its deterministic simulator, and the network drivers
//! (UDP on glommio, AF_XDP).

pub mod cmd;
pub mod driver;
pub mod engine;
pub mod netns;
pub mod server;
pub mod sim;
pub mod xdp_driver;
pub mod xdp_queues;

pub use driver::{
    repair, repair_after_snapshot, NetPath, PeerSpec, RepairJob, RepairOutcome, ShardOutcome,
    StoreReport,
};
pub use engine::{Action, EngineConfig, LeaderSchedule, PeerId, Progress, RepairEngine};

/// One repair peer's health, summed over the shards that used it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PeerSummary {
    pub peer: String,
    pub answered: u64,
    pub timeouts: u64,
    pub invalid: u64,
    /// Mean of the shards' latency estimates, weighted by answers.
    pub latency_ms: f64,
    /// Dropped by a shard: its answers failed verification too often.
    pub dropped: bool,
}

/// A repair outcome as the Solana sync and the demo report it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairSummary {
    pub from_slot: u64,
    pub to_slot: u64,
    pub complete: bool,
    pub slots_total: u64,
    pub slots_repaired: u64,
    pub shreds: u64,
    /// Slots completed from the data directory's shred stores alone, stored shreds used,
    /// stored shreds dropped (damaged or failing verification: requested again), and
    /// requests for a loaded shred (never expected).
    pub slots_loaded: u64,
    pub shreds_loaded: u64,
    pub store_dropped: u64,
    pub requests_for_loaded: u64,
    pub elapsed_ms: u64,
    pub shreds_per_s: f64,
    /// Network path per shard ("udp" / "xdp").
    pub paths: Vec<String>,
    /// Why AF_XDP was not used, when it was asked for.
    pub fallback_reason: Option<String>,
    pub peers: Vec<PeerSummary>,
    /// Slots not repaired (the first 64 of them) and how many there were.
    pub missing_slots: Vec<u64>,
    pub missing_count: u64,
}

/// Summarise `o`, the repair of `from_slot..=to_slot` from `peers` (in the job's order).
pub fn summarize(
    from_slot: u64,
    to_slot: u64,
    peers: &[PeerSpec],
    o: &RepairOutcome,
) -> RepairSummary {
    let mut sums: Vec<PeerSummary> = peers
        .iter()
        .map(|p| PeerSummary {
            peer: match &p.key {
                Some(k) => format!("{}@{}", driver::pubkey_to_string(k), p.addr),
                None => p.addr.to_string(),
            },
            ..Default::default()
        })
        .collect();
    let mut weighted_latency = vec![0f64; sums.len()];
    for s in &o.shards {
        for h in &s.progress.peers {
            if let Some(p) = sums.get_mut(h.peer) {
                p.answered += h.answered;
                p.timeouts += h.timeouts;
                p.invalid += h.invalid;
                p.dropped |= h.dropped;
                weighted_latency[h.peer] += h.latency_ms * h.answered as f64;
            }
        }
    }
    for (p, w) in sums.iter_mut().zip(weighted_latency) {
        p.latency_ms = if p.answered > 0 {
            w / p.answered as f64
        } else {
            0.0
        };
    }
    let missing = (from_slot..=to_slot).filter(|s| !o.slots.contains_key(s));
    let missing_count = missing.clone().count() as u64;
    RepairSummary {
        from_slot,
        to_slot,
        complete: o.complete && missing_count == 0,
        slots_total: o.slots_total,
        slots_repaired: o.slots.len() as u64,
        shreds: o.shreds,
        slots_loaded: o.slots_loaded,
        shreds_loaded: o.shreds_loaded,
        store_dropped: o.store_dropped,
        requests_for_loaded: o.requests_for_loaded,
        elapsed_ms: o.elapsed_ms,
        shreds_per_s: o.shreds_per_s,
        paths: o.shards.iter().map(|s| s.path.clone()).collect(),
        fallback_reason: o.shards.iter().find_map(|s| s.fallback_reason.clone()),
        peers: sums,
        missing_slots: missing.take(64).collect(),
        missing_count,
    }
}

impl RepairSummary {
    /// One line: what was repaired, or what is missing.
    pub fn line(&self) -> String {
        // One transport per shard: name each once.
        let mut paths: Vec<&str> = Vec::new();
        for p in &self.paths {
            if !paths.contains(&p.as_str()) {
                paths.push(p);
            }
        }
        let head = format!(
            "repair of slots {}–{}: {}/{} slots, {} shreds in {} ms ({:.0} shreds/s) over {}",
            self.from_slot,
            self.to_slot,
            self.slots_repaired,
            self.to_slot.saturating_sub(self.from_slot) + 1,
            self.shreds,
            self.elapsed_ms,
            self.shreds_per_s,
            paths.join(" and ")
        );
        let head = if self.shreds_loaded > 0 || self.store_dropped > 0 {
            format!(
                "{head}; from the data directory: {} slots complete, {} shreds loaded, {} stored shreds dropped and requested again",
                self.slots_loaded, self.shreds_loaded, self.store_dropped
            )
        } else {
            head
        };
        if self.complete {
            head
        } else {
            format!(
                "{head} - INCOMPLETE: {} slots missing (first: {})",
                self.missing_count,
                self.missing_slots[..self.missing_slots.len().min(16)]
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}

#[cfg(test)]
mod summary_tests {
    use super::*;
    use engine::PeerHealth;

    fn peer(port: u16) -> PeerSpec {
        PeerSpec {
            addr: std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port),
            key: None,
        }
    }

    fn shard(health: &[(usize, u64, u64, f64)]) -> ShardOutcome {
        ShardOutcome {
            path: "udp".into(),
            progress: Progress {
                peers: health
                    .iter()
                    .map(|&(peer, answered, invalid, latency_ms)| PeerHealth {
                        peer,
                        answered,
                        invalid,
                        latency_ms,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn summary_sums_peers_over_shards_and_names_missing_slots() {
        let mut o = RepairOutcome {
            complete: true,
            shreds: 30,
            shards: vec![
                shard(&[(0, 10, 0, 2.0), (1, 5, 3, 8.0)]),
                shard(&[(0, 30, 0, 4.0)]),
            ],
            ..Default::default()
        };
        for slot in [11, 12, 14] {
            o.slots.insert(slot, vec![vec![1]]);
        }
        let s = summarize(11, 15, &[peer(1), peer(2)], &o);
        assert!(!s.complete, "slots 13 and 15 are missing");
        assert_eq!(s.missing_slots, vec![13, 15]);
        assert_eq!(s.missing_count, 2);
        assert_eq!(s.slots_repaired, 3);
        assert_eq!(s.peers[0].answered, 40);
        assert_eq!(s.peers[0].peer, "127.0.0.1:1");
        assert!((s.peers[0].latency_ms - 3.5).abs() < 1e-9);
        assert_eq!(s.peers[1].invalid, 3);
        assert_eq!(s.paths, vec!["udp", "udp"]);
        assert!(
            s.line()
                .contains("INCOMPLETE: 2 slots missing (first: 13, 15)"),
            "{}",
            s.line()
        );
        // Each transport once, the range in words.
        assert!(
            s.line().starts_with("repair of slots 11–15: 3/5 slots"),
            "{}",
            s.line()
        );
        assert!(s.line().contains("over udp"), "{}", s.line());
        assert!(
            !s.line().contains("udp,udp") && !s.line().contains("..="),
            "{}",
            s.line()
        );
        // A peer index the job does not know is ignored, not a panic.
        o.shards.push(shard(&[(7, 1, 1, 1.0)]));
        o.slots.insert(13, vec![]);
        o.slots.insert(15, vec![]);
        let s = summarize(11, 15, &[peer(1), peer(2)], &o);
        assert!(s.complete);
        assert!(!s.line().contains("INCOMPLETE"));
        assert!(!s.line().contains("data directory"), "{}", s.line());
        o.shreds_loaded = 9;
        o.slots_loaded = 1;
        o.store_dropped = 2;
        let s = summarize(11, 15, &[peer(1), peer(2)], &o);
        assert!(
            s.line()
                .contains("from the data directory: 1 slots complete, 9 shreds loaded, 2 stored shreds dropped"),
            "{}",
            s.line()
        );
    }
}

//! Fuzz-style: peers that answer random bytes in the right response shapes, for random
//! seeds, in both modes. The engines must never panic, must drop those peers, and must
//! still end with the right state and chain from the honest ones.

use catchup::eth::sync::config::SyncMode;
use catchup::eth::sync::sim::{run, Profile, SimConfig};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]
    #[test]
    fn garbage_answering_peers_are_survived(seed in 1u64..1_000_000, snap in any::<bool>(), kill in 0u32..100) {
        let mut cfg = SimConfig { peers: 8, profile: Profile::Garbage, seed, accounts: 80, blocks: 100, big_storage_slots: 100, shards: 2, ..SimConfig::default() };
        cfg.sync.mode = if snap { SyncMode::Snap } else { SyncMode::Fast };
        cfg.sync.header_batch = 32;
        if kill > 50 {
            cfg.kill_at_pct = vec![kill - 50];
        }
        let r = run(&cfg);
        prop_assert!(r.correct, "seed {} {:?}: {:?} {:?}", seed, cfg.sync.mode, r.failure, r.state_root);
        prop_assert!(r.lies_detected > 0);
    }
}

/// Seed 250120: honest peers decide the pivot round before the garbage peers answer, and
/// those late answers are the only checkable ones the garbage peers ever give. Each must
/// still be checked against the decision and counted as a lie.
#[test]
fn late_junk_answers_to_a_decided_pivot_round_are_lies() {
    let mut cfg = SimConfig {
        peers: 8,
        profile: Profile::Garbage,
        seed: 250_120,
        accounts: 80,
        blocks: 100,
        big_storage_slots: 100,
        shards: 2,
        ..SimConfig::default()
    };
    cfg.sync.mode = SyncMode::Fast;
    cfg.sync.header_batch = 32;
    let r = run(&cfg);
    assert!(r.correct, "{:?}", r.failure);
    let garbage = r.peers.iter().filter(|p| p.fault == "garbage").count() as u64;
    assert_eq!(garbage, 4);
    assert!(r.lies_detected >= garbage, "{} lies", r.lies_detected);
}

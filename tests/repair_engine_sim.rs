//! The repair engine under the deterministic simulator: lossy, slow, lying and silent peers.

use catchup::solana::repair::sim::{run, SimPeer};
use catchup::solana::repair::EngineConfig;
use catchup_shred::ed25519_dalek::SigningKey;
use catchup_shred::ledger::generate_ledger;
use catchup_shred::Shred;
use std::collections::BTreeMap;

/// Raw shreds, the leader's public key, and the shreds of each slot.
type Ledger = (Vec<Vec<u8>>, [u8; 32], BTreeMap<u64, Vec<Vec<u8>>>);

fn ledger() -> Ledger {
    let leader = SigningKey::from_bytes(&[9; 32]);
    let raw = generate_ledger(&leader, 1000, 12, 40, 3);
    let mut expect: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for b in &raw {
        let s = Shred::from_bytes(b).unwrap();
        if s.is_data() {
            expect.entry(s.slot()).or_default().push(b.clone());
        }
    }
    (raw, leader.verifying_key().to_bytes(), expect)
}

fn good() -> SimPeer {
    SimPeer {
        latency_ms: 5,
        jitter_ms: 3,
        key_known: true,
        ..Default::default()
    }
}

#[test]
fn clean_peers_repair_every_slot_identically() {
    let (raw, leader, expect) = ledger();
    let r = run(
        &raw,
        leader,
        EngineConfig::new(1000, 1011),
        &[good(), good()],
        1,
        60_000,
    );
    assert!(r.done);
    assert_eq!(r.completed, expect);
    assert_eq!(r.progress.slots_remaining, 0);
    assert_eq!(r.progress.invalid, 0);
}

#[test]
fn lossy_slow_lying_and_silent_peers_are_tolerated() {
    let (raw, leader, expect) = ledger();
    let peers = [
        SimPeer {
            latency_ms: 2,
            jitter_ms: 2,
            loss_per_mille: 0,
            lie_per_mille: 300,
            silent: false,
            key_known: true,
        },
        SimPeer {
            latency_ms: 5,
            jitter_ms: 20,
            loss_per_mille: 300,
            ..good()
        },
        SimPeer {
            latency_ms: 150,
            jitter_ms: 50,
            ..good()
        },
        SimPeer {
            silent: true,
            ..good()
        },
        SimPeer {
            key_known: false,
            ..good()
        },
    ];
    let r = run(
        &raw,
        leader,
        EngineConfig::new(1000, 1011),
        &peers,
        7,
        300_000,
    );
    assert!(r.done, "not done: {:?}", r.progress);
    assert_eq!(
        r.completed, expect,
        "repaired slots equal the ledger byte for byte"
    );
    let p = &r.progress;
    assert!(p.invalid > 0, "lies were seen and rejected");
    assert!(p.unsolicited > 0, "wrong nonces dropped");
    assert!(p.timeouts > 0, "losses and the silent peer time out");
    assert_eq!(p.peers[3].answered, 0);
    assert!(p.peers[4].key_known, "key learnt from the ping");
    assert!(p.peers[4].answered > 0);
    // faster honest peers answer more than the slow one
    assert!(
        p.peers[0].answered + p.peers[4].answered > p.peers[2].answered,
        "{:?}",
        p.peers
    );
}

#[test]
fn same_seed_same_run_and_slots_split_across_shards() {
    let (raw, leader, expect) = ledger();
    let peers = [
        SimPeer {
            loss_per_mille: 100,
            ..good()
        },
        good(),
    ];
    let a = run(
        &raw,
        leader,
        EngineConfig::new(1000, 1011),
        &peers,
        5,
        60_000,
    );
    let b = run(
        &raw,
        leader,
        EngineConfig::new(1000, 1011),
        &peers,
        5,
        60_000,
    );
    assert_eq!(a.virtual_ms, b.virtual_ms);
    assert_eq!(a.progress.requests_sent, b.progress.requests_sent);
    let mut all = BTreeMap::new();
    for shard in 0..3 {
        let cfg = EngineConfig {
            shard,
            shards: 3,
            ..EngineConfig::new(1000, 1011)
        };
        let r = run(&raw, leader, cfg, &peers, 5, 60_000);
        assert!(r.done);
        assert_eq!(r.progress.slots_total, 4);
        for (s, v) in r.completed {
            assert!(
                all.insert(s, v).is_none(),
                "slot {s} repaired by two shards"
            );
        }
    }
    assert_eq!(all, expect);
}

#[test]
fn newest_slots_complete_first() {
    let (raw, leader, _) = ledger();
    let cfg = EngineConfig {
        active_slots: 1,
        ..EngineConfig::new(1000, 1011)
    };
    let r = run(&raw, leader, cfg, &[good()], 2, 60_000);
    assert!(r.done);
    // with one active slot the order of completion is strictly newest first; the report
    // keeps slots sorted, so check via a partial run instead
    let partial = run(
        &raw,
        leader,
        EngineConfig {
            active_slots: 1,
            ..EngineConfig::new(1000, 1011)
        },
        &[good()],
        2,
        r.virtual_ms / 2,
    );
    let got: Vec<u64> = partial.completed.keys().copied().collect();
    assert!(!got.is_empty() && got.len() < 12);
    assert_eq!(*got.last().unwrap(), 1011);
    assert_eq!(got, (1012 - got.len() as u64..1012).collect::<Vec<_>>());
}

/// A run stopped part way persisted what it verified; a restarted engine loads it,
/// requests only the rest, and a damaged stored shred is dropped, counted and refetched.
#[test]
fn a_restart_loads_stored_shreds_requests_only_the_rest_and_drops_a_damaged_one() {
    use catchup::solana::repair::sim::run_resumed;
    let (raw, leader, expect) = ledger();
    let total: u64 = expect.values().map(|v| v.len() as u64).sum();
    let cfg = EngineConfig {
        persist: true,
        active_slots: 4,
        max_inflight_total: 16,
        ..EngineConfig::new(1000, 1011)
    };
    // Interrupted: part of the slots done, some shreds of others held.
    let first = run(&raw, leader, cfg.clone(), &[good()], 7, 120);
    assert!(!first.done, "the first run must stop part way");
    assert!(!first.stored.is_empty());
    assert_eq!(first.stored.len() as u64, first.progress.shreds_received);
    let mut stored = first.stored.clone();
    // Damage one stored shred (its signed payload) and relabel another under a wrong key.
    stored[0].2[100] ^= 0x5a;
    stored[1].1 += 1000;
    let held = stored.len() as u64 - 2;
    let second = run_resumed(&raw, leader, cfg.clone(), &[good()], 8, 60_000, &stored);
    assert!(second.done);
    assert_eq!(second.completed, expect, "same slots, same shreds");
    assert_eq!(second.progress.shreds_loaded, held);
    assert_eq!(second.progress.store_rejected, 2);
    assert_eq!(second.progress.requests_for_loaded, 0);
    assert!(second.progress.slots_loaded >= 1, "{:?}", second.progress);
    // Only what was missing came over the network (no loss: no duplicates).
    assert_eq!(second.progress.duplicates, 0);
    assert_eq!(second.progress.shreds_received + held, total);
    // The damaged one was refetched and persisted again.
    let (s0, i0, _) = &first.stored[0];
    assert!(second
        .stored
        .iter()
        .any(|(s, i, b)| (s, i) == (s0, i0) && *b == first.stored[0].2));
    // Baseline: without the store the same run fetches every shred.
    let fresh = run(&raw, leader, cfg, &[good()], 8, 60_000);
    assert_eq!(fresh.progress.shreds_received, total);
}

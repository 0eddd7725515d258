//! The lean index against a plain model: fingerprints forced to collide, and far more
//! storage files than open maps allowed.

use std::collections::HashMap;

use catchup_solana::LtHash;

use super::test_support::{file, stream};
use super::{IndexConfig, ShardSet};

/// Files of `accounts` entries drawn from `keys` pubkeys, so most pubkeys have versions in
/// several files; some versions have zero lamports, data sizes vary.
type Files = Vec<((u64, u64), Vec<([u8; 32], u64, Vec<u8>)>)>;

fn make_files(files: u64, per_file: u64, keys: u64) -> Files {
    let mut out = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for f in 0..files {
        let mut entries = Vec::new();
        for _ in 0..per_file {
            let k = next() % keys;
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&k.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
            key[31] = k as u8;
            let r = next();
            let lamports = if r % 7 == 0 { 0 } else { r % 1000 + 1 };
            entries.push((
                key,
                lamports,
                vec![(r >> 8) as u8; (r >> 16) as usize % 300],
            ));
        }
        // Slots out of streaming order, two files per slot, so (slot, id) decides.
        out.push(((100 + (f * 7919) % files / 2, f), entries));
    }
    out
}

/// Live accounts: pubkey → (lamports, data, slot).
type Live = HashMap<[u8; 32], (u64, Vec<u8>, u64)>;
/// Newest version so far: pubkey → ((slot, file id, index in file), lamports, data).
type Newest = HashMap<[u8; 32], ((u64, u64, usize), u64, Vec<u8>)>;

/// The live set by the rule: newest (slot, file id, offset) wins.
fn model(files: &Files) -> (LtHash, u128, Live) {
    let mut best: Newest = HashMap::new();
    for ((slot, id), entries) in files {
        for (i, (k, l, d)) in entries.iter().enumerate() {
            let order = (*slot, *id, i);
            match best.get(k) {
                Some((o, _, _)) if *o >= order => {}
                _ => {
                    best.insert(*k, (order, *l, d.clone()));
                }
            }
        }
    }
    let mut lt = LtHash::identity();
    let mut cap = 0u128;
    let mut live = HashMap::new();
    for (k, ((slot, _, _), l, d)) in best {
        if l != 0 {
            lt.mix_in(&LtHash::of_account(l, &d, false, &[9; 32], &k));
        }
        cap += l as u128;
        live.insert(k, (l, d, slot));
    }
    (lt, cap, live)
}

fn start(shards: usize, threads: bool, config: IndexConfig) -> ShardSet {
    if threads {
        ShardSet::start_on_threads_with(shards, 2, &catchup_shards::allowed_cores(), &config)
            .unwrap()
    } else {
        ShardSet::start_configured(shards, 2, None, config).unwrap()
    }
}

fn check(files: &Files, shards: usize, threads: bool, config: IndexConfig, late: bool) -> u64 {
    let (want_lt, want_cap, live) = model(files);
    let dir = tempfile::tempdir().unwrap();
    let mut set = start(shards, threads, config.clone());
    set.set_dir(0, dir.path()).unwrap();
    for ((slot, id), entries) in files {
        let refs: Vec<([u8; 32], u64, &[u8])> = entries
            .iter()
            .map(|(k, l, d)| (*k, *l, d.as_slice()))
            .collect();
        stream(&mut set, (*slot, *id), &file(&refs), 4096, late);
    }
    let what = format!("{shards} shards, threads {threads}, late {late}, {config:?}");
    for round in 0..2 {
        let totals = set.totals().unwrap();
        let mut lt = LtHash::identity();
        let mut cap = 0;
        for t in &totals {
            assert!(t.error.is_none(), "{what}: {:?}", t.error);
            lt.mix_in(&t.lt_hash);
            cap += t.capitalization;
            assert!(t.peak_open_maps <= config.max_open_maps as u64, "{what}");
            assert!(t.open_maps <= config.max_open_maps as u64, "{what}");
        }
        assert_eq!(lt, want_lt, "{what}, round {round}");
        assert_eq!(cap, want_cap, "{what}");
        let n = |f: fn(&super::ShardTotals) -> u64| totals.iter().map(f).sum::<u64>();
        assert_eq!(n(|t| t.accounts_live), live.len() as u64, "{what}");
        let zero = live.values().filter(|v| v.0 == 0).count() as u64;
        assert_eq!(n(|t| t.zero_lamport_live), zero, "{what}");
        let data: u64 = live
            .values()
            .filter(|v| v.0 != 0)
            .map(|v| v.1.len() as u64)
            .sum();
        assert_eq!(n(|t| t.data_bytes_live), data, "{what}");
        let all_versions: u64 = files.iter().map(|f| f.1.len() as u64).sum();
        assert_eq!(n(|t| t.accounts_total), all_versions, "{what}");
    }
    for (k, (l, d, slot)) in &live {
        let r = set
            .get(k)
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: {k:?}"));
        assert_eq!(
            (r.lamports, &r.data, r.location.slot),
            (*l, d, *slot),
            "{what}"
        );
    }
    // Absent pubkeys sharing a fingerprint with present ones are not found.
    for b in 0..6u8 {
        let mut k = [0xeeu8; 32];
        k[31] = b;
        assert!(set.get(&k).unwrap().is_none(), "{what}");
    }
    let all = set.all().unwrap();
    assert_eq!(all.len(), live.len(), "{what}");
    for r in &all {
        assert_eq!(live[&r.pubkey].0, r.lamports, "{what}");
    }
    let totals = set.totals().unwrap();
    assert!(set.error().is_none(), "{what}: {:?}", set.error());
    totals.iter().map(|t| t.maps_opened).sum()
}

#[test]
fn colliding_fingerprints_give_the_same_live_set() {
    let files = make_files(12, 150, 400);
    for (shards, threads) in [(1, false), (3, false), (1, true), (2, true)] {
        for late in [false, true] {
            let weak = IndexConfig {
                weak_fingerprint: true,
                ..IndexConfig::default()
            };
            check(&files, shards, threads, weak, late);
            check(&files, shards, threads, IndexConfig::default(), late);
        }
    }
}

#[test]
fn colliding_fingerprints_are_kept_in_the_side_table() {
    let files = make_files(3, 100, 100);
    let (_, _, live) = model(&files);
    let dir = tempfile::tempdir().unwrap();
    let mut set = start(
        2,
        true,
        IndexConfig {
            weak_fingerprint: true,
            ..IndexConfig::default()
        },
    );
    set.set_dir(0, dir.path()).unwrap();
    for ((slot, id), entries) in &files {
        let refs: Vec<([u8; 32], u64, &[u8])> = entries
            .iter()
            .map(|(k, l, d)| (*k, *l, d.as_slice()))
            .collect();
        stream(&mut set, (*slot, *id), &file(&refs), 1 << 20, false);
    }
    let totals = set.totals().unwrap();
    // Three fingerprint values per shard: all other pubkeys are exact side entries.
    let side: u64 = totals.iter().map(|t| t.index_collisions).sum();
    assert!(side as usize >= live.len() - 6, "{side} of {}", live.len());
    assert!(totals.iter().all(|t| t.index_bytes > 0));
}

#[test]
fn more_storage_files_than_open_maps_still_verify() {
    // 48 files, 4 maps per shard: retraction, late scans and lookups reopen cold files.
    let files = make_files(48, 40, 300);
    for (shards, threads) in [(2, false), (2, true), (1, true)] {
        for late in [false, true] {
            let small = IndexConfig {
                max_open_maps: 4,
                ..IndexConfig::default()
            };
            let opened = check(&files, shards, threads, small, late);
            assert!(opened > 4 * shards as u64, "maps were reopened: {opened}");
        }
    }
}

//! Conformance of the snapshot pipeline on real Agave snapshots (fixtures from Syndica/sig).

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::path::PathBuf;

use catchup::solana::snapshot::{verify_archive_snapshot, PipelineConfig};
use catchup_solana::{base58_32, LtHash};

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("CATCHUP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("solana/snapshots");
    if dir.join("test-snapshot-v4.2.0-beta.1.tar.zst").exists() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("snapshot fixtures missing at {}", dir.display());
    }
    skip_note!("skipped: snapshot fixtures missing at {}", dir.display());
    None
}

fn cfg(shards: usize) -> PipelineConfig {
    PipelineConfig {
        shards,
        memory_limit_bytes: 256 << 20,
        ..PipelineConfig::default()
    }
}

#[test]
fn v4_2_fixture_matches_ground_truth() {
    let Some(dir) = fixtures() else { return };
    let truth: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("test-snapshot-v4.2.0-beta.1.json")).unwrap(),
    )
    .unwrap();
    let datadir = tempfile::tempdir().unwrap();
    for shards in [1usize, 3] {
        let v = verify_archive_snapshot(
            &dir.join("test-snapshot-v4.2.0-beta.1.tar.zst"),
            None,
            datadir.path(),
            cfg(shards),
        )
        .unwrap();
        let r = &v.report;
        assert_eq!(r.slot, 100);
        assert_eq!(r.parent_slot, 99);
        assert_eq!(r.storages, 3);
        assert_eq!(r.accounts_total, 9);
        assert_eq!(r.accounts_live, 8);
        assert!(r.lt_hash_ok && r.capitalization_ok);
        assert_eq!(
            r.capitalization_expected,
            truth["bank_fields"]["capitalization"].as_u64().unwrap()
        );
        assert_eq!(r.bank_hash, truth["bank_fields"]["hash"].as_str().unwrap());
        assert_eq!(r.shards.len(), shards);
        let m = &v.manifest;
        // The bank's stakes per node (what leader schedules are drawn from): two nodes
        // in epochs 2 (slot 100's, under warm-up) and 3.
        assert_eq!(m.epoch_schedule.epoch_of(100).0, 2);
        for epoch in [2u64, 3] {
            let nodes = &m
                .epoch_node_stakes
                .iter()
                .find(|(e, _)| *e == epoch)
                .expect("stakes of the epoch")
                .1;
            assert_eq!(nodes.len(), 2);
            assert_eq!(nodes.iter().map(|(_, s)| s).sum::<u64>(), 5_000_000);
        }
        assert_eq!(m.block_height, 100);
        assert_eq!(m.transaction_count, 12345);
        assert_eq!(m.signature_count, 6789);
        assert_eq!(
            base58_32(truth["bank_fields"]["parent_hash"].as_str().unwrap()).unwrap(),
            m.parent_hash
        );
        let lt_hex = truth["extra_fields"]["accounts_lt_hash"].as_str().unwrap();
        assert_eq!(
            hex::encode(m.accounts_lt_hash.as_ref().unwrap().to_bytes()),
            lt_hex
        );
        // Storage lengths from the manifest.
        let files = truth["accounts"]["files"].as_array().unwrap();
        for f in files {
            let s = m
                .storages
                .iter()
                .find(|s| s.slot == f["slot"].as_u64().unwrap())
                .unwrap();
            assert_eq!(s.id, f["id"].as_u64().unwrap());
        }
        // Every account of the ground truth, with equal values.
        let entries = truth["accounts"]["entries"].as_array().unwrap();
        let live: Vec<u64> = truth["accounts"]["live_indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        for e in entries {
            let idx = e["index"].as_u64().unwrap();
            let pubkey = base58_32(e["pubkey"].as_str().unwrap()).unwrap();
            let owner = base58_32(e["owner"].as_str().unwrap()).unwrap();
            let data = hex::decode(e["data_hex"].as_str().unwrap()).unwrap();
            let lamports = e["lamports"].as_u64().unwrap();
            let exec = e["executable"].as_bool().unwrap();
            let lt = LtHash::of_account(lamports, &data, exec, &owner, &pubkey);
            assert_eq!(
                hex::encode(&lt.to_bytes()[..32]),
                e["account_lt_hash_first_32_hex"].as_str().unwrap(),
                "entry {idx} LtHash prefix"
            );
            if !live.contains(&idx) {
                // An older version: the index must hold a newer slot.
                let got = v
                    .get(&pubkey)
                    .unwrap()
                    .expect("overwritten account still indexed");
                assert!(got.location.slot > e["slot"].as_u64().unwrap());
                continue;
            }
            let got = v
                .get(&pubkey)
                .unwrap()
                .unwrap_or_else(|| panic!("entry {idx} missing"));
            assert_eq!(got.lamports, lamports, "entry {idx}");
            assert_eq!(got.owner, owner, "entry {idx}");
            assert_eq!(got.executable, exec, "entry {idx}");
            assert_eq!(
                got.rent_epoch,
                e["rent_epoch"].as_u64().unwrap(),
                "entry {idx}"
            );
            assert_eq!(got.data, data, "entry {idx}");
            assert_eq!(got.location.slot, e["slot"].as_u64().unwrap());
            assert_eq!(got.location.file_id, e["file_id"].as_u64().unwrap());
        }
        assert_eq!(v.accounts().unwrap().len(), 8);
        // Unpacked into place, no staging left behind.
        assert!(v.dir.join("accounts/100.3").exists());
        assert!(v.dir.join("snapshots/100/100").exists());
        let leftovers: Vec<_> = std::fs::read_dir(datadir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".staging"))
            .collect();
        assert!(leftovers.is_empty());
    }
}

#[test]
fn older_full_and_incremental_load_together() {
    let Some(dir) = fixtures() else { return };
    let full = dir.join("snapshot-1-5pgMpQj4MZYWauD1VnoNfmGAdUQCe6VVCSCQMNbDoxf7.tar.zst");
    let inc =
        dir.join("incremental-snapshot-1-4-43FT6mnmRW9XbxpCzqH3ogYexHXboG7d8vmf3gBLvLrR.tar.zst");
    let datadir = tempfile::tempdir().unwrap();
    let f = verify_archive_snapshot(&full, None, datadir.path(), cfg(2)).unwrap();
    assert_eq!(f.report.slot, 1);
    assert!(f.report.lt_hash_ok && f.report.capitalization_ok);
    assert_eq!(f.report.storages, 2);
    let full_accounts = f.accounts().unwrap();
    assert_eq!(full_accounts.len() as u64, f.report.accounts_live);
    eprintln!(
        "full slot 1: {} accounts ({} entries)",
        f.report.accounts_live, f.report.accounts_total
    );

    let v = verify_archive_snapshot(
        &full,
        Some(&inc),
        tempfile::tempdir().unwrap().path(),
        cfg(2),
    )
    .unwrap();
    let r = &v.report;
    assert_eq!((r.slot, r.base_slot), (4, Some(1)));
    assert!(r.lt_hash_ok && r.capitalization_ok);
    let all = v.accounts().unwrap();
    let from_inc = all.iter().filter(|a| a.location.slot == 4).count();
    eprintln!(
        "full+incremental slot 4: {} accounts, {} from the incremental",
        all.len(),
        from_inc
    );
    assert!(from_inc > 0);
    assert!(all.len() >= full_accounts.len());
    // Every account of the incremental's storage is the newest version in the index.
    for a in &all {
        if full_accounts
            .iter()
            .any(|b| b.pubkey == a.pubkey && b.location.slot > a.location.slot)
        {
            panic!(
                "an older version won for {}",
                catchup_solana::base58(&a.pubkey)
            );
        }
    }
}

/// The archives are named by their accounts LtHash checksum (SIMD-0220), the older-format
/// pair too: the name check compares the LtHash and needs no merkle hash. A wrong name is a
/// mismatch naming both hashes.
#[test]
fn archives_match_the_hash_in_their_names() {
    use catchup::solana::snapshot::name_hash::{check_name_hash, KIND_LT_HASH};
    let Some(dir) = fixtures() else { return };
    let full_name = "snapshot-1-5pgMpQj4MZYWauD1VnoNfmGAdUQCe6VVCSCQMNbDoxf7.tar.zst";
    let inc_name = "incremental-snapshot-1-4-43FT6mnmRW9XbxpCzqH3ogYexHXboG7d8vmf3gBLvLrR.tar.zst";
    let datadir = tempfile::tempdir().unwrap();
    let f = verify_archive_snapshot(&dir.join(full_name), None, datadir.path(), cfg(2)).unwrap();
    let c = check_name_hash(&f, full_name).unwrap().unwrap();
    assert!(c.ok, "{c:?}");
    assert_eq!(c.kind, KIND_LT_HASH);
    assert_eq!(c.computed, "5pgMpQj4MZYWauD1VnoNfmGAdUQCe6VVCSCQMNbDoxf7");
    assert_eq!(c.merkle_computed, None);
    // The same accounts under another hash: a mismatch naming both (and the merkle
    // snapshot hash, which was tried too).
    let wrong = "snapshot-1-4uQeVj5tqViQh7yWWGStvkEG1Zmhx6uasJtWCJziofM.tar.zst";
    let c = check_name_hash(&f, wrong).unwrap().unwrap();
    assert!(!c.ok);
    assert!(c.merkle_computed.is_some());
    let line = c.mismatch_line();
    assert!(
        line.contains("4uQeVj5tqViQh7yWWGStvkEG1Zmhx6uasJtWCJziofM"),
        "{line}"
    );
    assert!(
        line.contains("5pgMpQj4MZYWauD1VnoNfmGAdUQCe6VVCSCQMNbDoxf7"),
        "{line}"
    );

    let v = verify_archive_snapshot(
        &dir.join(full_name),
        Some(&dir.join(inc_name)),
        tempfile::tempdir().unwrap().path(),
        cfg(2),
    )
    .unwrap();
    let c = check_name_hash(&v, inc_name).unwrap().unwrap();
    assert!(c.ok, "{c:?}");
    assert_eq!(c.kind, KIND_LT_HASH);

    let v42 = "test-snapshot-v4.2.0-beta.1.tar.zst";
    let v = verify_archive_snapshot(
        &dir.join(v42),
        None,
        tempfile::tempdir().unwrap().path(),
        cfg(1),
    )
    .unwrap();
    let named = format!("snapshot-100-{}.tar.zst", v.report.lt_hash_computed);
    let c = check_name_hash(&v, &named).unwrap().unwrap();
    assert!(c.ok && c.kind == KIND_LT_HASH, "{c:?}");
    assert_eq!(
        check_name_hash(&v, v42).unwrap(),
        None,
        "not an archive name"
    );
}

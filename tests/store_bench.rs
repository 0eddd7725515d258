//! `catchup bench store --json` runs N shards, each with its own store, and reports
//! per-shard and total throughput beside the baseline; its benchmark files are removed.

use std::process::Command;

#[test]
fn bench_store_json_reports_every_shard_and_cleans_up() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args([
            "bench",
            "store",
            "--shards",
            "3",
            "--records",
            "500",
            "--value-size",
            "700",
            "--batch",
            "64",
            "--json",
            "--datadir",
        ])
        .arg(tmp.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run catchup bench store");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["shards"], 3);
    let per_shard = v["per_shard"].as_array().expect("per_shard array");
    assert_eq!(per_shard.len(), 3);
    let record_bytes = catchup_io::store::record::encoded_len(32, 700) as u64;
    for (i, s) in per_shard.iter().enumerate() {
        assert_eq!(s["shard"], i);
        assert_eq!(s["records"], 500);
        assert_eq!(s["bytes"].as_u64(), Some(500 * record_bytes));
        // 500 records at 64 per flush: 8 group commits (the last one partial).
        assert_eq!(s["syncs"], 8);
        assert!(s["records_per_sec"].as_f64().unwrap() > 0.0);
        assert!(s["mb_per_sec"].as_f64().unwrap() > 0.0);
        assert!(s["baseline_mb_per_sec"].as_f64().unwrap() > 0.0);
        assert!(s["ratio"].as_f64().unwrap() > 0.0);
        // Where the time went, and every record byte written at least once.
        assert!(s["write_wait_us"].as_u64().is_some());
        assert!(s["sync_wait_us"].as_u64().is_some());
        assert!(s["baseline_sync_wait_us"].as_u64().is_some());
        assert!(s["written_bytes"].as_u64().unwrap() >= 500 * record_bytes);
    }
    assert_eq!(v["rounds"], 8);
    assert_eq!(v["total"]["records"], 1500);
    assert_eq!(
        v["baseline_total"]["bytes"].as_u64(),
        Some(1500 * record_bytes)
    );
    assert!(v["ratio"].as_f64().unwrap() > 0.0);
    assert!(
        !tmp.path().join("bench-store").exists(),
        "benchmark files are removed"
    );
}

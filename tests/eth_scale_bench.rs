//! `catchup bench eth-scale` small: 2,000 accounts with 5,000 storage slots served by
//! three RLPx peers on loopback, synced on 2 shards in snap then fast mode into kept data
//! directories. The JSON report must carry every figure, and the root recomputed from each
//! stored trie must be the generated one. `eth state-root --datadir` over a kept data
//! directory gives the same root, and fails when the sync report names a root the store
//! does not hold.

use std::process::Command;

use serde_json::Value;

fn catchup() -> Command {
    Command::new(env!("CARGO_BIN_EXE_catchup"))
}

#[test]
fn eth_scale_small_snap_and_fast() {
    let work = tempfile::tempdir().unwrap();
    let out = catchup()
        .args([
            "bench",
            "eth-scale",
            "--accounts",
            "2000",
            "--storage-slots",
            "5000",
            "--shards",
            "2",
            "--mode",
            "snap,fast",
            "--peers",
            "3",
            "--blocks",
            "16",
            "--memory-budget",
            "268435456",
            "--timeout-s",
            "600",
            "--json",
            "--workdir",
        ])
        .arg(work.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["accounts"], 2000);
    assert_eq!(v["storage_slots"], 5000);
    assert_eq!(v["shards"], 2);
    assert_eq!(v["peers"], 3);
    // 2,000 accounts: contracts at indices 1, 17, …, 1985.
    assert_eq!(v["contracts"], 125);
    assert_eq!(v["memory_budget_bytes"], 268_435_456u64);
    // A sixteenth of the 256 MiB budget, at 512 bytes per open storage trie.
    assert_eq!(v["storage_backlog_accounts"], 32_768);
    let root = v["state_root"].as_str().unwrap().to_string();
    assert!(root.starts_with("0x") && root.len() == 66, "{root}");
    let state_nodes = v["state_nodes"].as_u64().unwrap();
    assert!(state_nodes > 2000, "{state_nodes} trie nodes");
    assert!(v["keccak_nodes_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["keccak_nodes_per_s_before_sync"].as_f64().unwrap() > 0.0);
    assert!(v["keccak_nodes_per_s_after_sync"].as_f64().unwrap() > 0.0);
    assert!(v["keccak4_nodes_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["peak_rss_generator_and_peers_bytes"].as_u64().unwrap() > 0);
    let modes = v["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 2);
    for (m, name) in modes.iter().zip(["snap", "fast"]) {
        assert_eq!(m["mode"], name);
        assert_eq!(m["root_matches"], true, "{m}");
        let peak = m["storage_backlog_peak"].as_u64().unwrap();
        assert!(peak <= 32_768, "{m}");
        if name == "snap" {
            assert!(peak > 0, "the snap sync opened storage tries: {m}");
        }
        assert_eq!(m["stored_root"].as_str().unwrap(), root);
        assert_eq!(m["accounts_walked"], 2000, "{m}");
        assert_eq!(m["storage_slots_walked"], 5000, "{m}");
        assert!(
            m["state_nodes_stored"].as_u64().unwrap() >= state_nodes,
            "{m}"
        );
        assert!(m["nodes_per_s_per_shard"].as_f64().unwrap() > 0.0, "{m}");
        let ratio = m["ratio_to_keccak"].as_f64().unwrap();
        assert!(ratio > 0.0 && ratio.is_finite(), "{m}");
        assert!(m["peak_rss_bytes"].as_u64().unwrap() > 0, "{m}");
        assert!(m["disk_apparent_bytes"].as_u64().unwrap() > 0, "{m}");
        assert!(m["state_root_ms"].is_u64(), "{m}");
        assert!(m["sync_ms"].as_u64().unwrap() > 0, "{m}");
    }

    // The command line's root walk over the kept snap data directory.
    let dd = work.path().join("sync-snap");
    let out = catchup()
        .args(["eth", "state-root", "--json", "--datadir"])
        .arg(&dd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(w["root"].as_str().unwrap(), root);
    assert_eq!(w["matches_claimed"], true);
    assert_eq!(w["storage_slots"], 5000);

    // A report naming a root the store does not hold: the walk finds no such node.
    let report_path = dd.join("sync-report.json");
    let text = std::fs::read_to_string(&report_path).unwrap();
    let other = format!("0x{}", "11".repeat(32));
    std::fs::write(&report_path, text.replace(&root, &other)).unwrap();
    let out = catchup()
        .args(["eth", "state-root", "--datadir"])
        .arg(&dd)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing node"), "{err}");
}

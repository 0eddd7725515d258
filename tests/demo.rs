//! `catchup demo` end to end, as a user runs it: the binary generates both devnets, serves
//! them on loopback, syncs them and must report every part verified.

use std::process::Command;

#[test]
fn demo_syncs_and_verifies_both_devnets() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args([
            "demo",
            "--json",
            "--eth-accounts",
            "3000",
            "--eth-blocks",
            "64",
            "--solana-accounts",
            "5000",
            "--workdir",
        ])
        .arg(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("demo --json prints JSON");
    assert_eq!(v["ok"], true);
    let eth = v["eth"].as_array().expect("eth parts");
    assert_eq!(eth.len(), 2, "fast and snap");
    for part in eth {
        assert_eq!(part["ok"], true, "{part}");
        assert_eq!(part["report"]["state_root"], part["expected_state_root"]);
        assert_eq!(part["report"]["head_hash"], part["expected_head_hash"]);
        // The second peer lies: it must have been caught, either dropped after a bad
        // answer or cut off at the handshake because it cannot prove its head header.
        let liar = &part["report"]["peers"][1];
        assert!(
            liar["dropped_by_us"] == true || !liar["error"].is_null(),
            "the lying peer was not caught: {liar}"
        );
    }
    let sol = &v["solana"]["sync"];
    assert_eq!(sol["complete"], true, "{sol}");
    assert_eq!(sol["verified"]["lt_hash_ok"], true);
    assert_eq!(sol["verified"]["capitalization_ok"], true);
    assert_eq!(sol["verified"]["accounts_live"], 5000);
    // The slots after the snapshot, repaired from three serve-repair servers (honest,
    // lossy, corrupting), must equal the served ledger byte for byte.
    let slot = sol["slot"].as_u64().expect("snapshot slot");
    let rep = &v["solana"]["repair"];
    assert_eq!(rep["verified"], true, "{rep}");
    assert_eq!(rep["summary"]["complete"], true, "{rep}");
    assert_eq!(rep["summary"]["from_slot"], slot + 1);
    assert_eq!(rep["summary"]["to_slot"], slot + 32);
    assert_eq!(rep["summary"]["slots_repaired"], 32);
    assert_eq!(rep["slots_identical"], 32);
    assert_eq!(rep["slots_differing"].as_array().unwrap().len(), 0);
    assert_eq!(rep["summary"]["missing_count"], 0);
    let servers = rep["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3);
    assert!(servers[2].as_str().unwrap().starts_with("wrong@"), "{rep}");
    // Corrupted shreds from the third server were caught by the signature/proof checks.
    let peers = rep["summary"]["peers"].as_array().unwrap();
    assert_eq!(peers[0]["invalid"], 0, "{rep}");
    assert!(peers[2]["invalid"].as_u64().unwrap() > 0, "{rep}");
}

#[test]
fn demo_rejects_zero_shards_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["demo", "--shards", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--shards"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

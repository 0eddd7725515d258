//! `catchup eth sim`: exit codes, JSON report, config file and flag errors.

use std::process::Command;

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["eth", "sim"])
        .args(args)
        .output()
        .expect("run catchup")
}

#[test]
fn byzantine_sim_succeeds_with_json_report() {
    for mode in ["fast", "snap"] {
        let out = sim(&[
            "--peers",
            "9",
            "--profile",
            "byzantine",
            "--seed",
            "4",
            "--accounts",
            "150",
            "--blocks",
            "120",
            "--mode",
            mode,
            "--kill-at",
            "50",
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
        assert_eq!(v["correct"], true);
        assert_eq!(v["state_root"], v["expected_state_root"]);
        assert_eq!(v["head_hash"], v["expected_head_hash"]);
        assert_eq!(v["restarts"], 1);
        assert_eq!(v["mode"], mode);
        assert_eq!(v["peers"].as_array().unwrap().len(), 9);
        assert!(v["headers_verified"].as_u64().unwrap() == 120);
    }
}

#[test]
fn too_few_peers_to_agree_on_a_pivot_fails() {
    // Two peers can never give the three agreeing pivot headers required.
    let out = sim(&[
        "--peers",
        "2",
        "--profile",
        "honest",
        "--accounts",
        "20",
        "--blocks",
        "20",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("correct:           false"), "{text}");
}

#[test]
fn config_file_and_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("catchup.toml");
    std::fs::write(
        &cfg,
        "[ethsync]\npivot_distance = 64\nheader_batch = 50\nmode = \"snap\"\n",
    )
    .unwrap();
    let out = sim(&[
        "--config",
        cfg.to_str().unwrap(),
        "--accounts",
        "50",
        "--blocks",
        "200",
        "--json",
        "--profile",
        "honest",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mode"], "snap");
    assert_eq!(v["pivot_block"], 200 - 64);

    std::fs::write(&cfg, "[ethsync]\nno_such_key = 1\n").unwrap();
    let out = sim(&["--config", cfg.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_key") && err.lines().count() <= 2, "{err}");

    let out = sim(&["--node-batch", "5000"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node-batch"));
}

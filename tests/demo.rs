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
        // The stored trie itself was walked from the root, not just the root compared.
        assert_eq!(part["stored_trie_complete"], true, "{part}");
        assert!(
            part["stored_trie_nodes_checked"].as_u64().unwrap_or(0) > 0
                && part["stored_trie_nodes_checked"] == part["report"]["state_nodes_stored"],
            "{part}"
        );
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
    // ... and it was dropped; the honest one was not.
    assert_eq!(peers[2]["dropped"], true, "{rep}");
    assert_eq!(peers[0]["dropped"], false, "{rep}");
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

/// The text demo ends with the commands to serve its Ethereum devnet and sync it; run as
/// printed, they sync and verify.
#[test]
fn the_demos_printed_next_steps_run_and_verify() {
    let next_dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args([
            "demo",
            "--only",
            "eth",
            "--eth-accounts",
            "2000",
            "--eth-blocks",
            "40",
        ])
        .args(["--next-listen", &format!("127.0.0.1:{port}"), "--next-dir"])
        .arg(next_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "demo failed: {stdout}");
    // One line per part, then the total and the next steps.
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("eth fast VERIFIED"), "{stdout}");
    assert!(lines[1].starts_with("eth snap VERIFIED"), "{stdout}");
    for l in &lines[..2] {
        assert!(l.contains("stored trie walked: "), "{l}");
        assert!(
            l.contains("lying dropped (lied)"),
            "the liar is not tagged: {l}"
        );
    }
    assert!(
        lines[2].starts_with("demo: every part synced and verified in "),
        "{stdout}"
    );
    let i = lines
        .iter()
        .position(|l| l.starts_with("next:"))
        .expect("next steps");
    let printed: Vec<&str> = lines[i + 1..].iter().map(|l| l.trim()).collect();
    let cmds: Vec<Vec<&str>> = printed
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(cmds.len(), 2, "{stdout}");
    assert_eq!(cmds[0][1..3], ["eth", "serve"], "{stdout}");
    assert_eq!(cmds[1][1..3], ["eth", "sync"], "{stdout}");
    // Run as printed: by a shell, as a user pastes them.
    let shell = |line: &str| {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!("exec {line}"));
        c
    };
    // The server, as printed: its enode must be the one the sync command names.
    let mut serve = shell(printed[0])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut serve_out = std::io::BufReader::new(serve.stdout.take().unwrap());
    let _serve = Kill(serve);
    let mut enode = String::new();
    std::io::BufRead::read_line(&mut serve_out, &mut enode).unwrap();
    std::thread::spawn(move || std::io::copy(&mut serve_out, &mut std::io::sink()));
    let peer = cmds[1][cmds[1].iter().position(|a| *a == "--peer").unwrap() + 1];
    assert_eq!(enode.trim(), peer, "the printed enode is not the server's");
    let sync = shell(printed[1]).output().unwrap();
    let text = String::from_utf8_lossy(&sync.stdout);
    assert!(
        sync.status.success(),
        "the printed sync failed: {text}\n{}",
        String::from_utf8_lossy(&sync.stderr)
    );
    assert!(text.contains("finished:    true"), "{text}");
    assert!(text.contains("complete, every node verified"), "{text}");
    // ... against the state root the demo verified.
    let want = cmds[1][cmds[1]
        .iter()
        .position(|a| *a == "--expect-state-root")
        .expect("the sync checks the root")
        + 1];
    assert!(
        text.contains(&format!("expected:    {want} (match)")),
        "{text}"
    );
    drop(_serve);
    // The demo again with another chain: its printed sync must not meet the data
    // directory of the first one (a chain of another genesis).
    let again = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args([
            "demo",
            "--only",
            "eth",
            "--eth-accounts",
            "1500",
            "--eth-blocks",
            "40",
        ])
        .args(["--next-listen", &format!("127.0.0.1:{port}"), "--next-dir"])
        .arg(next_dir.path())
        .output()
        .unwrap();
    let again = String::from_utf8_lossy(&again.stdout).to_string();
    let sync_again = again
        .lines()
        .map(|l| l.trim())
        .find(|l| l.contains(" eth sync "))
        .expect("next steps");
    let datadir = |l: &str| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w[w.iter().position(|a| *a == "--datadir").unwrap() + 1].to_string()
    };
    assert_ne!(datadir(sync_again), datadir(printed[1]), "{again}");
}

/// The Solana part as text: one line for the snapshot, one for the repair, with the slot
/// range written for people, each transport once and the corrupting server dropped.
#[test]
fn the_solana_demo_reads_as_one_line_per_part_and_its_next_steps_verify() {
    let work = tempfile::tempdir().unwrap();
    let next_dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["demo", "--only", "solana", "--solana-accounts", "5000"])
        .args(["--next-http-listen", &format!("127.0.0.1:{port}")])
        .arg("--next-dir")
        .arg(next_dir.path())
        .arg("--workdir")
        .arg(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("solana   VERIFIED  slot "), "{stdout}");
    let repair = lines[1];
    assert!(repair.starts_with("solana   REPAIRED  slots "), "{stdout}");
    let range = repair["solana   REPAIRED  slots ".len()..]
        .split(':')
        .next()
        .unwrap();
    let (from, to) = range.split_once('–').expect("a range like 101–132");
    assert!(
        from.parse::<u64>().unwrap() <= to.parse::<u64>().unwrap(),
        "{repair}"
    );
    assert!(
        repair.contains(" over udp;"),
        "one transport, once: {repair}"
    );
    let wrong = repair
        .split(", ")
        .find(|s| s.starts_with("wrong@"))
        .expect("the corrupting server");
    assert!(wrong.contains(" dropped ("), "{repair}");
    assert!(
        lines[2].starts_with("demo: every part synced and verified in "),
        "{stdout}"
    );
    // The next steps, run as printed by a shell: make the snapshot, serve it, sync it.
    let archive = lines[0].split_whitespace().nth(5).expect("archive name");
    assert!(lines[3].starts_with("next: "), "{stdout}");
    let printed: Vec<&str> = lines[4..].iter().map(|l| l.trim()).collect();
    assert_eq!(printed.len(), 3, "{stdout}");
    let shell = |line: &str| {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!("exec {line}"));
        c
    };
    let gen = shell(printed[0]).output().unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let mut serve = shell(printed[1])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut serve_out = std::io::BufReader::new(serve.stdout.take().unwrap());
    let _serve = Kill(serve);
    let mut listening = String::new();
    std::io::BufRead::read_line(&mut serve_out, &mut listening).unwrap();
    assert_eq!(listening.trim(), format!("listening on 127.0.0.1:{port}"));
    std::thread::spawn(move || std::io::copy(&mut serve_out, &mut std::io::sink()));
    let sync = shell(printed[2]).output().unwrap();
    let text = String::from_utf8_lossy(&sync.stdout);
    assert!(
        sync.status.success(),
        "the printed sync failed: {text}\n{}",
        String::from_utf8_lossy(&sync.stderr)
    );
    // The same archive as the demo's, verified.
    assert!(text.starts_with(&format!("{archive}: verified ")), "{text}");
    assert!(text.contains("    LtHash:          ok, "), "{text}");
    assert!(text.contains("    capitalization:  ok, "), "{text}");
}

//! SIGTERM during `eth sync` prints the report, marked interrupted, and writes the report
//! file, for every mode and shard count. Real processes on loopback.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_catchup");

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A slow `eth serve` (so that the sync is still running when the signal comes).
fn serve() -> (Running, serde_json::Value) {
    let mut child = Command::new(BIN)
        .args(["eth", "serve", "--listen", "127.0.0.1:0", "--json"])
        .args(["--generate-accounts", "3000", "--generate-blocks", "200"])
        .args(["--seed", "9", "--network-id", "779"])
        .args(["--profile", "slow", "--slow-delay-ms", "200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn eth serve");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).expect("enode line");
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (
        Running(child),
        serde_json::from_str(&line).expect("JSON line"),
    )
}

fn interrupted_sync(mode: &str, shards: u32, json: bool) {
    let (_serve, info) = serve();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "eth",
        "sync",
        "--mode",
        mode,
        "--shards",
        &shards.to_string(),
    ])
    .args(["--peer", info["enode"].as_str().unwrap()])
    .args(["--genesis-hash", info["genesis_hash"].as_str().unwrap()])
    .args([
        "--network-id",
        "779",
        "--timeout-s",
        "120",
        "--pivot-distance",
        "0",
    ])
    .arg("--datadir")
    .arg(dir.path())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if json {
        cmd.arg("--json");
    }
    let mut child = cmd.spawn().expect("spawn eth sync");
    // Let it connect and store something, then ask it to stop.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the sync ended before the signal"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{mode} sync with {shards} shard(s) did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        !status.success(),
        "an interrupted sync exited 0; stdout {out}; stderr {err}"
    );
    if json {
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("no JSON report ({e}); stdout {out:?}, stderr {err}"));
        assert_eq!(v["ok"], false);
        assert_eq!(v["report"]["failure"], "interrupted", "{v}");
    } else {
        assert!(
            out.contains("finished:    false (interrupted)"),
            "no text report; stdout {out:?}, stderr {err}"
        );
    }
    // stderr is a pipe here, not a terminal: plain text, no colour codes.
    assert!(err.contains("INFO"), "no log lines on stderr: {err}");
    assert!(
        !err.contains("\x1b["),
        "ANSI colour codes on a non-terminal stderr: {err:?}"
    );
    let file = dir.path().join("sync-report.json");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("sync-report.json written")).unwrap();
    assert_eq!(report["failure"], "interrupted");
}

#[test]
fn sigterm_during_a_two_shard_snap_sync_prints_the_report() {
    interrupted_sync("snap", 2, false);
}

#[test]
fn sigterm_during_a_two_shard_snap_sync_prints_the_json_report() {
    interrupted_sync("snap", 2, true);
}

#[test]
fn sigterm_during_a_one_shard_fast_sync_prints_the_report() {
    interrupted_sync("fast", 1, false);
}

//! SIGTERM during `solana sync` stops the download and prints its report, marked
//! interrupted, with a non-zero exit (text and `--json`). Real processes on loopback.

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

/// A generated snapshot served at 1 MB/s (so that the download is still running when the
/// signal comes); returns the server and its base URL.
fn slow_snapshot_server(dir: &std::path::Path) -> (Running, String) {
    let gen = Command::new(BIN)
        .args(["solana", "snapshot", "generate", "--accounts", "50000"])
        .args(["--slot", "100", "--out"])
        .arg(dir)
        .output()
        .expect("generate");
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let mut child = Command::new(BIN)
        .args(["solana", "snapshot", "serve", "--listen", "127.0.0.1:0"])
        .args(["--rate-limit", "1"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn snapshot serve");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).expect("listening line");
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    (Running(child), format!("http://{addr}"))
}

fn interrupted_sync(json: bool, shards: u32) {
    let snaps = tempfile::tempdir().unwrap();
    let (_server, url) = slow_snapshot_server(snaps.path());
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["solana", "sync", "--source", &url])
        .args(["--chunk-size", "262144"])
        .args(["--download-shards", &shards.to_string()])
        .arg("--datadir")
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if json {
        cmd.arg("--json");
    }
    let mut child = cmd.spawn().expect("spawn solana sync");
    std::thread::sleep(Duration::from_millis(1000));
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
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("solana sync did not stop within 20 s of SIGTERM");
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
    assert_eq!(status.code(), Some(1), "stdout {out}; stderr {err}");
    if json {
        // The report is the last line (progress lines may come before it).
        let last = out.lines().last().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("no JSON report ({e}); stdout {out:?}, stderr {err}"));
        assert_eq!(v["interrupted"], true, "{v}");
        assert_eq!(v["complete"], false, "{v}");
    } else {
        assert!(
            out.contains(": NOT complete (interrupted) ("),
            "no text report; stdout {out:?}, stderr {err}"
        );
    }
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: interrupted; ")
            && last.ends_with("run the same command again to resume"),
        "{err}"
    );
}

#[test]
fn sigterm_during_solana_sync_prints_the_report() {
    interrupted_sync(false, 1);
}

#[test]
fn sigterm_during_a_two_shard_solana_sync_prints_the_json_report() {
    interrupted_sync(true, 2);
}

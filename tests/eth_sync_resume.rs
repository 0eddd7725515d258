//! `catchup eth sync --datadir D` is persistent and resumable over the wire: four slow
//! `catchup eth serve` processes serve the devnet fixture; for fast and for snap sync, a
//! fresh sync gives the baseline; a second sync into another data directory is killed with
//! SIGKILL once its progress lines show state downloaded (its admin `/status` is read
//! first), then started again over the same directory. The restart must end with root
//! 8fcfb02c…728b and head 0x44e3809c…4d2a, report what it found on disk, receive none of
//! the stored items again and download less state than the fresh sync; a third start over
//! the finished directory downloads no state at all. A second sync over a locked data
//! directory, a data directory that is a file, and one written on another shard count
//! fail with one error line. SIGTERM (on a generated chain, no fixture needed) stops a
//! sync cleanly, and it resumes from there.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ROOT: &str = "0x8fcfb02cfca007773bd55bc1c3e50a3c8612a59c87ce057e5957e8bf17c1728b";
const HEAD_PREFIX: &str = "0x44e3809c";

fn devnet() -> Option<PathBuf> {
    let dir = std::env::var_os("CATCHUP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("ethereum/devnet");
    if dir.join("headstate.json").exists() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("devnet fixture missing at {} (CI=true)", dir.display());
    }
    skip_note!("skipping: devnet fixture missing at {}", dir.display());
    None
}

/// A child process killed (SIGKILL) when dropped, so a failing assertion leaves nothing
/// running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

struct Server {
    _child: Guard,
    enode: String,
    _stdout: BufReader<std::process::ChildStdout>,
}

fn start_server(dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["eth", "serve", "--listen", "127.0.0.1:0", "--json"])
        .args(["--profile", "slow", "--slow-delay-ms", "100"])
        .arg("--chain")
        .arg(dir.join("chain.rlp"))
        .arg("--genesis")
        .arg(dir.join("genesis.json"))
        .arg("--state")
        .arg(dir.join("headstate.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn catchup eth serve");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let child = Guard(child);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("serve printed {line:?}: {e}"));
    Server {
        _child: child,
        enode: v["enode"].as_str().unwrap().to_string(),
        _stdout: stdout,
    }
}

fn sync_cmd(dir: &Path, datadir: &Path, servers: &[Server]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_catchup"));
    cmd.args(["eth", "sync", "--shards", "2"])
        .args(["--pivot-distance", "0", "--receipts", "false"])
        .args(["--node-batch", "32", "--progress-every-ms", "200"])
        .args(["--timeout-s", "60", "--json", "--expect-state-root", ROOT])
        .arg("--genesis")
        .arg(dir.join("genesis.json"))
        .arg("--datadir")
        .arg(datadir)
        .env("RUST_LOG", "info");
    for s in servers {
        cmd.args(["--peer", &s.enode]);
    }
    cmd
}

/// Run a sync to its end; its JSON output.
fn sync_to_end(cmd: &mut Command) -> serde_json::Value {
    let out = cmd
        .stderr(Stdio::null())
        .output()
        .expect("run catchup eth sync");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "sync failed: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("sync printed {text:?}: {e}"))
}

/// The number after `marker` in a progress line.
fn count_after(line: &str, marker: &str) -> Option<u64> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn error_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_string)
        .collect()
}

fn u(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("{path:?} missing in {v}"))
}

#[test]
fn killed_fast_sync_resumes_from_its_data_directory() {
    kill_and_resume("fast", "state nodes ", 100);
}

#[test]
fn killed_snap_sync_resumes_from_its_data_directory() {
    kill_and_resume("snap", "accounts ", 20);
}

/// A free loopback port for the admin endpoint.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fresh sync in `mode`; then a sync killed once a shard's progress line shows at least
/// `threshold` after `marker`; then the restart over the same directory.
fn kill_and_resume(mode: &str, marker: &'static str, threshold: u64) {
    let Some(dir) = devnet() else { return };
    let servers: Vec<Server> = (0..4).map(|_| start_server(&dir)).collect();
    let accounts_or_nodes = if mode == "snap" {
        "accounts"
    } else {
        "state_nodes"
    };
    let downloaded = if mode == "snap" {
        "accounts_downloaded"
    } else {
        "state_nodes_downloaded"
    };

    // Baseline: a fresh sync.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = sync_to_end(sync_cmd(&dir, fresh_dir.path(), &servers).args(["--mode", mode]));
    let fresh = &fresh["report"];
    assert_eq!(fresh["state_root"], ROOT);
    assert_eq!(fresh["mode"], mode);
    assert_eq!(
        u(fresh, &["resumed", "records"]),
        0,
        "nothing to resume in a new directory"
    );
    let fresh_downloaded = u(fresh, &["progress", downloaded]);
    let all_items = u(fresh, &["fetched", accounts_or_nodes]);
    let all_nodes = u(fresh, &["state_nodes_stored"]);
    assert!(fresh_downloaded >= all_items && all_items > 100, "{fresh}");

    // A sync killed part-way, with its admin endpoint on.
    let datadir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = sync_cmd(&dir, datadir.path(), &servers)
        .args(["--mode", mode, "--admin", &admin])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn catchup eth sync");
    let stderr = child.stderr.take().unwrap();
    let mut child = Guard(child);
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = count_after(&line, marker) {
                let headers = count_after(&line, "headers ").unwrap_or(0);
                if tx.send((n, headers)).is_err() {
                    break;
                }
            }
        }
    });
    // Kill once progress shows both `threshold` of the marker and stored headers, and two
    // more progress lines have passed: each shard commits a batch of events before it goes
    // on to the next, so what those lines counted is on disk by then.
    let until = Instant::now() + Duration::from_secs(60);
    let (mut seen, mut headers, mut lines_after) = (0, 0, 0);
    while lines_after < 2 {
        assert!(
            Instant::now() < until,
            "no {marker}and header progress within 60 s ({seen} {marker}, {headers} headers)"
        );
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok((n, h)) => {
                if seen >= threshold && headers > 0 {
                    lines_after += 1;
                }
                seen = seen.max(n);
                headers = headers.max(h);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("sync ended before {threshold} {marker}and stored headers")
            }
        }
    }
    // Its `/status` has a section per shard.
    let status = catchup::node::admin::fetch(&admin, "/status", Duration::from_secs(5))
        .expect("GET /status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    for shard in ["eth_sync_shard_0", "eth_sync_shard_1"] {
        assert_eq!(status[shard]["status"]["mode"], mode, "{status}");
        assert!(
            status[shard]["progress"]["requests_sent"]
                .as_u64()
                .is_some(),
            "{status}"
        );
    }
    // The data directory is locked while the sync runs.
    let second = sync_cmd(&dir, datadir.path(), &servers).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let errs = error_lines(&second.stderr);
    assert_eq!(errs.len(), 1, "{}", String::from_utf8_lossy(&second.stderr));
    assert!(errs[0].contains("in use by another process"), "{}", errs[0]);
    // SIGKILL.
    child.0.kill().unwrap();
    let _ = child.0.wait();
    drop(child);
    drop(rx);
    let _ = reader.join();

    let resumed = sync_to_end(sync_cmd(&dir, datadir.path(), &servers).args(["--mode", mode]));
    let r = &resumed["report"];
    assert_eq!(resumed["ok"], true);
    assert_eq!(r["state_root"], ROOT);
    assert!(
        r["head_hash"].as_str().unwrap().starts_with(HEAD_PREFIX),
        "{r}"
    );
    assert_eq!(r["status"]["state_complete"], true);
    assert_eq!(r["status"]["pivot_block"], fresh["status"]["pivot_block"]);
    assert!(
        u(r, &["resumed", accounts_or_nodes]) > 0,
        "state found on disk: {r}"
    );
    assert!(
        u(r, &["resumed", "headers"]) > 0,
        "headers found on disk: {r}"
    );
    assert!(u(r, &["resumed", "records"]) > 0);
    assert_eq!(
        u(r, &["progress", "refetched_items"]),
        0,
        "the restart received stored items again: {r}"
    );
    assert_eq!(
        u(r, &["resumed", accounts_or_nodes]) + u(r, &["fetched", accounts_or_nodes]),
        all_items,
        "{r}"
    );
    assert_eq!(u(r, &["state_nodes_stored"]), all_nodes);
    assert!(
        u(r, &["progress", downloaded]) < fresh_downloaded,
        "restart downloaded {} ({downloaded}), a fresh sync {fresh_downloaded}",
        u(r, &["progress", downloaded])
    );
    assert_eq!(
        u(r, &["resumed", "headers"]) + u(r, &["fetched", "headers"]),
        u(fresh, &["headers_stored"])
    );
    assert!(datadir.path().join("sync-report.json").exists());
    eprintln!(
        "{mode}: fresh sync downloaded {fresh_downloaded} ({downloaded}); killed at >= {seen} {marker}on a shard; \
         restart: resumed {}, fetched {}, downloaded {}",
        r["resumed"],
        r["fetched"],
        r["progress"][downloaded]
    );

    // Started once more over the finished directory: nothing left to download.
    let again = sync_to_end(sync_cmd(&dir, datadir.path(), &servers).args(["--mode", mode]));
    let a = &again["report"];
    assert_eq!(a["state_root"], ROOT);
    assert_eq!(u(a, &["fetched", "state_nodes"]), 0, "{a}");
    assert_eq!(u(a, &["fetched", "accounts"]), 0, "{a}");
    assert_eq!(u(a, &["progress", downloaded]), 0, "{a}");
    assert_eq!(u(a, &["progress", "refetched_items"]), 0, "{a}");
}

#[test]
fn unusable_data_directory_gives_one_error_line() {
    let Some(dir) = devnet() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let enode = "enode://a979fb575495b8d6db44f750317d0f4622bf4c2aa3365d6af7c284339968eef29b69ad0dce72a4d8db5ebb4968de0e3bec910127f134779fbcb0cb6d3331163c@127.0.0.1:30303";
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["eth", "sync", "--peer", enode, "--genesis"])
        .arg(dir.join("genesis.json"))
        .arg("--datadir")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let errs = error_lines(&out.stderr);
    assert_eq!(errs.len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        errs[0].contains("not a directory") && errs[0].contains("not-a-dir"),
        "{}",
        errs[0]
    );

    // A data directory written by a sync on another shard count.
    let refused = |name: &str, meta: &[u8]| -> String {
        let d = scratch.path().join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("eth-sync.json"), meta).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
            .args(["eth", "sync", "--shards", "2", "--peer", enode, "--genesis"])
            .arg(dir.join("genesis.json"))
            .arg("--datadir")
            .arg(&d)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let errs = error_lines(&out.stderr);
        assert_eq!(errs.len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
        errs[0].clone()
    };
    let e = refused("three-shards", br#"{"shards": 3, "genesis": "0x00"}"#);
    assert!(e.contains("on 3 shards") && e.contains("--shards 3"), "{e}");

    // A data directory of an earlier build, whose trie map (1 nibble) was not recorded.
    let e = refused("one-nibble-map", br#"{"shards": 2, "genesis": "0x00"}"#);
    assert!(
        e.contains("split at 1 nibble(s)")
            && e.contains("at 3 for 2 shards")
            && e.contains("new --datadir"),
        "{e}"
    );
}

/// SIGTERM part-way through a sync of a generated chain (no fixture needed): the sync
/// stops, closes its stores, reports `interrupted` and exits 1; started again it resumes
/// and ends at the served head state root without receiving stored items again.
#[test]
fn interrupted_sync_stops_cleanly_and_resumes() {
    let mut servers = Vec::new();
    let mut served: Option<serde_json::Value> = None;
    for _ in 0..3 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_catchup"))
            .args(["eth", "serve", "--listen", "127.0.0.1:0", "--json"])
            .args(["--generate-accounts", "4000", "--generate-blocks", "200"])
            .args(["--seed", "11", "--network-id", "777"])
            .args(["--profile", "slow", "--slow-delay-ms", "40"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn catchup eth serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let child = Guard(child);
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("serve printed {line:?}: {e}"));
        servers.push(Server {
            _child: child,
            enode: v["enode"].as_str().unwrap().to_string(),
            _stdout: stdout,
        });
        served.get_or_insert(v);
    }
    let served = served.unwrap();
    let root = served["head_state_root"].as_str().unwrap().to_string();
    let datadir = tempfile::tempdir().unwrap();
    let sync = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_catchup"));
        cmd.args([
            "eth",
            "sync",
            "--shards",
            "2",
            "--json",
            "--timeout-s",
            "60",
        ])
        .args(["--node-batch", "32", "--progress-every-ms", "200"])
        .args(["--genesis-hash", served["genesis_hash"].as_str().unwrap()])
        .args(["--network-id", "777", "--expect-state-root", &root])
        .arg("--datadir")
        .arg(datadir.path())
        .env("RUST_LOG", "info");
        for s in &servers {
            cmd.args(["--peer", &s.enode]);
        }
        cmd
    };
    let mut child = sync()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn catchup eth sync");
    let stderr = child.stderr.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut child = Guard(child);
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = count_after(&line, "state nodes ") {
                let _ = tx.send(n);
            }
        }
    });
    let until = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < 300 {
        assert!(Instant::now() < until, "no state progress within 60 s");
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(n) => seen = seen.max(n),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("sync ended before 300 state nodes")
            }
        }
    }
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGTERM);
    }
    let until = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            Instant::now() < until,
            "sync did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(1), "an interrupted sync is not a finished one");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
    let stopped: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("sync printed {text:?}: {e}"));
    assert_eq!(stopped["ok"], false);
    assert_eq!(stopped["report"]["failure"], "interrupted", "{stopped}");
    let stored_before = u(&stopped["report"], &["state_nodes_stored"]);
    assert!(stored_before > 0);
    drop(child);
    drop(rx);
    let _ = reader.join();

    let out = sync().stderr(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "restart failed: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let r = &v["report"];
    assert_eq!(r["state_root"].as_str(), Some(root.as_str()));
    assert_eq!(r["head_hash"], served["head_hash"]);
    assert_eq!(u(r, &["resumed", "state_nodes"]), stored_before, "{r}");
    assert_eq!(u(r, &["progress", "refetched_items"]), 0, "{r}");
    assert_eq!(
        u(r, &["progress", "state_nodes_downloaded"]) + stored_before,
        u(r, &["state_nodes_stored"]),
        "{r}"
    );
}

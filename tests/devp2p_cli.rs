//! The command line end to end: four `catchup eth serve` processes on loopback (honest,
//! lying, honest, slow; the first accepts on two shards) serve the devnet fixture; `catchup eth sync` in fast and in snap
//! mode must reach state root 8fcfb02c…728b and head 0x44e3809c…4d2a and exit 0. The
//! servers stop cleanly on SIGTERM.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = "0x8fcfb02cfca007773bd55bc1c3e50a3c8612a59c87ce057e5957e8bf17c1728b";

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

struct Server {
    child: Child,
    enode: String,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Server {
    /// A failing assertion must not leave serving processes behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    fn start(dir: &std::path::Path, profile: &str, shards: usize) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_catchup"))
            .args([
                "eth",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--json",
                "--slow-delay-ms",
                "50",
                "--profile",
                profile,
            ])
            .args(["--shards", &shards.to_string()])
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
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("serve printed {line:?}: {e}"));
        assert_eq!(v["fork_id"], "0x377aaa78");
        Server {
            child,
            enode: v["enode"].as_str().unwrap().to_string(),
            _stdout: stdout,
        }
    }

    fn stop(mut self) -> Option<i32> {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

#[test]
fn serve_and_sync_commands_over_loopback() {
    let Some(dir) = devnet() else { return };
    let servers: Vec<Server> = [("honest", 2), ("lying", 1), ("honest", 1), ("slow", 1)]
        .iter()
        .map(|(p, n)| Server::start(&dir, p, *n))
        .collect();
    for mode in ["fast", "snap"] {
        let datadir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_catchup"));
        cmd.args([
            "eth",
            "sync",
            "--mode",
            mode,
            "--pivot-distance",
            "0",
            "--receipts",
            "false",
            "--timeout-s",
            "60",
            "--json",
        ])
        .args(["--expect-state-root", ROOT])
        .arg("--genesis")
        .arg(dir.join("genesis.json"))
        .arg("--datadir")
        .arg(datadir.path());
        for s in &servers {
            cmd.args(["--peer", &s.enode]);
        }
        let out = cmd
            .stderr(Stdio::null())
            .output()
            .expect("run catchup eth sync");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{mode} sync failed: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["report"]["state_root"], ROOT);
        assert!(v["report"]["head_hash"]
            .as_str()
            .unwrap()
            .starts_with("0x44e3809c"));
        assert_eq!(v["report"]["status"]["state_complete"], true);
        assert!(
            datadir.path().join("nodekey").exists()
                && datadir.path().join("sync-report.json").exists()
        );
    }
    for s in servers {
        assert_eq!(s.stop(), Some(0), "serve exits 0 on SIGTERM");
    }
}

/// The shape a new user meets first: one `eth serve` peer, default flags but the two the
/// devnet needs, and 1, 2 or 4 shards. Each must reach the devnet's head and state root.
#[test]
fn one_peer_and_one_two_or_four_shards_reach_the_devnet_head() {
    let Some(dir) = devnet() else { return };
    let server = Server::start(&dir, "honest", 1);
    for shards in [1, 2, 4] {
        let datadir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
            .args([
                "eth",
                "sync",
                "--mode",
                "snap",
                "--json",
                "--timeout-s",
                "60",
            ])
            .args(["--pivot-distance", "0", "--receipts", "false"])
            .args(["--shards", &shards.to_string(), "--peer", &server.enode])
            .arg("--genesis")
            .arg(dir.join("genesis.json"))
            .arg("--datadir")
            .arg(datadir.path())
            .stderr(Stdio::null())
            .output()
            .expect("run catchup eth sync");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{shards} shard(s): {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["report"]["state_root"], ROOT, "{shards} shard(s)");
        assert!(
            v["report"]["head_hash"]
                .as_str()
                .unwrap()
                .starts_with("0x44e3809c"),
            "{shards} shard(s): {text}"
        );
    }
    assert_eq!(server.stop(), Some(0), "serve exits 0 on SIGTERM");
}

/// A new user's first try: one devnet peer that holds only its head state and no
/// receipts. The default pivot (head − 128) names a state the peer does not hold: the
/// sync moves its pivot to a state the peer serves (the head's) and finishes. Receipts it
/// cannot serve: the sync stops after `--stall-timeout-s` with one line saying why and
/// which flag helps, not wait forever.
#[test]
fn a_peer_without_the_pivot_state_or_receipts_is_named_in_one_line() {
    let Some(dir) = devnet() else { return };
    let server = Server::start(&dir, "honest", 1);
    let sync = |flags: &[&str]| {
        let datadir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
            .args(["eth", "sync", "--mode", "snap", "--timeout-s", "120"])
            .args(["--status-check-s", "2", "--stall-timeout-s", "8"])
            .args(["--peer", &server.enode])
            .args(flags)
            .arg("--genesis")
            .arg(dir.join("genesis.json"))
            .arg("--datadir")
            .arg(datadir.path())
            .output()
            .expect("run catchup eth sync");
        (out, datadir)
    };
    // The state: the pivot moves to the head's state.
    let (out, _d) = sync(&["--receipts", "false", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["report"]["state_root"], ROOT, "{text}");
    assert!(v["report"]["repivots"].as_u64().unwrap() >= 1, "{text}");
    // Receipts: one line, naming the flag.
    let started = Instant::now();
    let (out, _d) = sync(&["--pivot-distance", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        last.starts_with("error:")
            && last.contains("no peer serves receipts")
            && last.contains("--receipts false")
            && last.contains("--stall-timeout-s"),
        "last line {last:?}"
    );
    eprintln!("stopped after {:?}: {last}", started.elapsed());
    assert_eq!(server.stop(), Some(0), "serve exits 0 on SIGTERM");
}

/// `eth serve --generate-accounts` processes and `eth sync --genesis-hash`: no fixture
/// needed. The sync must reach the served head and its state root; a second sync over the
/// same data directory finds everything there and downloads no state.
#[test]
fn generated_chain_served_and_synced_then_resumed_from_disk() {
    let mut servers = Vec::new();
    let mut enodes = Vec::new();
    let mut first: Option<serde_json::Value> = None;
    for _ in 0..2 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_catchup"))
            .args(["eth", "serve", "--listen", "127.0.0.1:0", "--json"])
            .args(["--generate-accounts", "3000", "--generate-blocks", "64"])
            .args(["--seed", "3", "--network-id", "4242"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn catchup eth serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("serve printed {line:?}: {e}"));
        enodes.push(v["enode"].as_str().unwrap().to_string());
        if let Some(f) = &first {
            assert_eq!(
                f["genesis_hash"], v["genesis_hash"],
                "same seed, same chain"
            );
            assert_eq!(f["head_state_root"], v["head_state_root"]);
        } else {
            first = Some(v);
        }
        servers.push(Server {
            child,
            enode: enodes.last().unwrap().clone(),
            _stdout: stdout,
        });
    }
    let served = first.unwrap();
    assert_eq!(served["network_id"], 4242);
    assert_eq!(served["head_number"], 64);
    let root = served["head_state_root"].as_str().unwrap().to_string();
    let datadir = tempfile::tempdir().unwrap();
    let sync = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_catchup"));
        cmd.args([
            "eth",
            "sync",
            "--json",
            "--timeout-s",
            "60",
            "--pivot-distance",
            "16",
        ])
        .args(["--genesis-hash", served["genesis_hash"].as_str().unwrap()])
        .args(["--network-id", "4242", "--expect-state-root", &root])
        .arg("--datadir")
        .arg(datadir.path());
        for e in &enodes {
            cmd.args(["--peer", e]);
        }
        let out = cmd
            .stderr(Stdio::null())
            .output()
            .expect("run catchup eth sync");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(0), "sync failed: {text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["report"].clone()
    };
    let r = sync();
    assert_eq!(r["state_root"].as_str(), Some(root.as_str()));
    assert_eq!(r["head_hash"], served["head_hash"]);
    assert_eq!(r["resumed"]["records"], 0);
    let nodes = r["state_nodes_stored"].as_u64().unwrap();
    assert!(nodes > 3000, "{r}");
    assert_eq!(r["fetched"]["state_nodes"].as_u64(), Some(nodes));
    let again = sync();
    assert_eq!(again["state_root"].as_str(), Some(root.as_str()));
    assert_eq!(
        again["resumed"]["state_nodes"].as_u64(),
        Some(nodes),
        "{again}"
    );
    assert_eq!(again["fetched"]["state_nodes"], 0, "{again}");
    assert_eq!(again["progress"]["state_nodes_downloaded"], 0, "{again}");
    for s in servers {
        assert_eq!(s.stop(), Some(0), "serve exits 0 on SIGTERM");
    }
}

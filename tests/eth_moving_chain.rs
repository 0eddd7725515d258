//! Snap sync over RLPx of a chain that moves while it is synced: real `catchup eth serve`
//! processes grow a block every 200 ms and keep only their last 32 states (as geth keeps
//! its last 128), so the default pivot (head − 128) asks for a state no peer holds any
//! more. The sync must move its pivot forward, keep what it verified, and end verified at
//! a pivot newer than the one it started from; from 1, 2 and 4 peers, with 1 and 2 shards;
//! and a sync killed (SIGKILL) part-way resumes from its data directory without fetching
//! anything verified again. A static peer lost mid-sync is dialed again once it is back.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_catchup");
const GROW_MS: &str = "200";
const HISTORY: u64 = 32;
const GENERATED_BLOCKS: u64 = 20;

/// An `eth serve` child (killed on drop) and every head line it printed.
struct Serve {
    child: Child,
    info: serde_json::Value,
    heads: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(accounts: u64) -> Serve {
        Serve::start_with(
            accounts,
            &[
                "--listen",
                "127.0.0.1:0",
                "--grow-every-ms",
                GROW_MS,
                "--state-history",
                &HISTORY.to_string(),
            ],
        )
    }

    fn start_with(accounts: u64, args: &[&str]) -> Serve {
        match Serve::try_start(accounts, args) {
            Ok(s) => s,
            Err(why) => panic!("eth serve prints its enode: {why}"),
        }
    }

    /// Start `eth serve`; when it ends before printing its address, the error is its
    /// stderr (a port not yet released by a process just killed, say).
    fn try_start(accounts: u64, args: &[&str]) -> Result<Serve, String> {
        let errf = tempfile::NamedTempFile::new().expect("stderr file");
        let mut child = Command::new(BIN)
            .args(["eth", "serve", "--json"])
            .args(["--network-id", "779", "--generate-accounts"])
            .arg(accounts.to_string())
            .args(["--generate-blocks", &GENERATED_BLOCKS.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(errf.reopen().expect("stderr file"))
            .spawn()
            .expect("spawn eth serve");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, rx) = mpsc::channel();
        let heads: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let h = heads.clone();
        std::thread::spawn(move || {
            let mut first = true;
            for l in out.lines() {
                let Ok(l) = l else { return };
                let v: serde_json::Value = serde_json::from_str(&l).expect("a JSON line");
                if first {
                    first = false;
                    let _ = tx.send(v);
                } else if v["event"] == "head" {
                    h.lock().unwrap().push(v);
                }
            }
        });
        let info = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(info) => info,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                let err = std::fs::read_to_string(errf.path()).unwrap_or_default();
                return Err(format!("{e} ({status:?}): {}", err.trim()));
            }
        };
        assert_eq!(info["event"], "listening", "{info}");
        Ok(Serve { child, info, heads })
    }

    fn enode(&self) -> &str {
        self.info["enode"].as_str().unwrap()
    }

    fn genesis(&self) -> &str {
        self.info["genesis_hash"].as_str().unwrap()
    }

    fn head(&self) -> u64 {
        self.heads
            .lock()
            .unwrap()
            .last()
            .and_then(|l| l["head_number"].as_u64())
            .unwrap_or(GENERATED_BLOCKS)
    }

    /// The head line the server printed for block `n`.
    fn line_of(&self, n: u64) -> Option<serde_json::Value> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .find(|l| l["head_number"].as_u64() == Some(n))
            .cloned()
    }
}

/// Wait until every server's chain grew past the generated blocks' state (forgotten
/// once `HISTORY` newer blocks exist).
fn wait_moved(servers: &[&Serve]) {
    let until = Instant::now() + Duration::from_secs(60);
    while servers
        .iter()
        .any(|s| s.head() < GENERATED_BLOCKS + HISTORY + 2)
    {
        assert!(Instant::now() < until, "the served chains did not grow");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sync_cmd(servers: &[&Serve], shards: usize, datadir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["eth", "sync", "--mode", "snap", "--json"])
        .args(["--shards", &shards.to_string()])
        .args(["--timeout-s", "120", "--stall-timeout-s", "60"])
        .args([
            "--network-id",
            "779",
            "--genesis-hash",
            servers[0].genesis(),
        ])
        .arg("--datadir")
        .arg(datadir);
    for s in servers {
        cmd.args(["--peer", s.enode()]);
    }
    cmd
}

fn u(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_u64().unwrap_or_else(|| panic!("{path:?} in {v}"))
}

/// The report's final pivot is a block the servers named, with their state root and
/// hash, newer than the first pivot and than the state history the sync started against.
fn check_moved(r: &serde_json::Value, servers: &[&Serve], head_at_start: u64, what: &str) {
    assert!(u(r, &["repivots"]) >= 1, "{what}: no re-pivot: {r}");
    let pivot = u(r, &["pivot_block"]);
    let first = u(r, &["status", "first_pivot_block"]);
    assert!(
        pivot > first,
        "{what}: pivot {pivot} not newer than the first {first}: {r}"
    );
    assert!(
        pivot + HISTORY > head_at_start,
        "{what}: pivot {pivot} older than the history kept at the start (head {head_at_start}): {r}"
    );
    // The first pivot was out of every peer's history: head - 128.
    assert!(first + HISTORY < head_at_start, "{what}: {r}");
    let named = servers[0]
        .line_of(pivot)
        .unwrap_or_else(|| panic!("{what}: no head line for block {pivot}"));
    assert_eq!(r["state_root"], named["state_root"], "{what}: {r}");
    assert_eq!(r["status"]["pivot_hash"], named["head_hash"], "{what}: {r}");
    assert_eq!(r["status"]["state_complete"], true, "{what}: {r}");
    assert!(
        r["head_hash"].as_str().is_some_and(|h| h.starts_with("0x")),
        "{r}"
    );
    // The peers' heads came from their eth/69 Status and BlockRangeUpdates.
    assert!(u(r, &["progress", "peer_heads"]) >= 1, "{what}: {r}");
    assert!(u(r, &["status", "peers_head"]) >= pivot, "{what}: {r}");
}

#[test]
fn a_moving_chain_is_snap_synced_from_1_2_and_4_peers_with_1_and_2_shards() {
    let servers: Vec<Serve> = (0..4).map(|_| Serve::start(3000)).collect();
    let all: Vec<&Serve> = servers.iter().collect();
    wait_moved(&all);
    for (peers, shards) in [(1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (4, 2)] {
        let what = format!("{peers} peer(s), {shards} shard(s)");
        let used = &all[..peers];
        let head_at_start = used.iter().map(|s| s.head()).min().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = sync_cmd(used, shards, dir.path())
            .output()
            .expect("run eth sync");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
        assert_eq!(v["ok"], true, "{what}: {v}");
        let r = &v["report"];
        check_moved(r, used, head_at_start, &what);
        eprintln!(
            "{what}: first pivot {}, pivot {}, repivots {}, healed {}, {} ms",
            r["status"]["first_pivot_block"],
            r["pivot_block"],
            r["repivots"],
            r["progress"]["healed_nodes"],
            r["elapsed_ms"]
        );
    }
}

fn count_after(line: &str, marker: &str) -> Option<u64> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[test]
fn a_moving_chain_sync_killed_part_way_resumes_and_fetches_nothing_verified_again() {
    // Enough accounts that the kill lands while they are arriving on a fast machine too.
    const ACCOUNTS: u64 = 50_000;
    let servers: Vec<Serve> = (0..2).map(|_| Serve::start(ACCOUNTS)).collect();
    let all: Vec<&Serve> = servers.iter().collect();
    wait_moved(&all);
    let head_at_start = all.iter().map(|s| s.head()).min().unwrap();
    let datadir = tempfile::tempdir().unwrap();
    let child = sync_cmd(&all, 2, datadir.path())
        .args(["--progress-every-ms", "50"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn eth sync");
    struct Guard(Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Guard(child);
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("total: ") {
                if let Some(n) = count_after(&line, "accounts ") {
                    if tx.send(n).is_err() {
                        break;
                    }
                }
            }
        }
    });
    // Killed once the accounts of the moved pivot are arriving and two more progress
    // lines have passed (each shard commits a batch before the next: what those lines
    // counted is on disk).
    let until = Instant::now() + Duration::from_secs(60);
    let (mut seen, mut lines_after) = (0, 0);
    while lines_after < 2 {
        assert!(Instant::now() < until, "no account progress within 60 s");
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(n) => {
                if seen >= 1000 {
                    lines_after += 1;
                }
                seen = seen.max(n);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the sync ended before it was killed ({seen} accounts)")
            }
        }
    }
    assert!(
        seen < ACCOUNTS,
        "killed before every account arrived: {seen}"
    );
    child.0.kill().unwrap();
    let _ = child.0.wait();
    drop(child);
    drop(rx);
    let _ = reader.join();

    let out = sync_cmd(&all, 2, datadir.path())
        .output()
        .expect("run eth sync again");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(v["ok"], true, "{v}");
    let r = &v["report"];
    assert!(u(r, &["resumed", "records"]) > 0, "{r}");
    assert!(u(r, &["resumed", "accounts"]) >= 1000, "{r}");
    assert_eq!(
        u(r, &["progress", "refetched_items"]),
        0,
        "the restart received verified items again: {r}"
    );
    // What it resumed plus what it fetched is the whole state, each account once.
    assert!(
        u(r, &["resumed", "accounts"]) + u(r, &["fetched", "accounts"]) >= ACCOUNTS,
        "{r}"
    );
    assert!(
        u(r, &["progress", "accounts_downloaded"]) < ACCOUNTS,
        "the restart downloaded every account again: {r}"
    );
    let pivot = u(r, &["pivot_block"]);
    assert!(pivot + HISTORY > head_at_start, "{r}");
    let named = all[0].line_of(pivot).expect("a head line for the pivot");
    assert_eq!(r["state_root"], named["state_root"], "{r}");
    assert_eq!(r["status"]["state_complete"], true, "{r}");
    eprintln!(
        "killed at {seen} accounts; restart: resumed {}, fetched {}, pivot {}, repivots {}",
        r["resumed"], r["fetched"], pivot, r["repivots"]
    );
}

#[test]
fn a_lost_static_peer_is_dialed_again_when_it_comes_back() {
    // A fixed port and node key, so the restarted server is the same enode. The port is
    // below the kernel's ephemeral range: while the server is down, no connection of this
    // or another test can take it as its source port.
    let port = port_outside_the_ephemeral_range();
    let keydir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "--listen",
        &listen,
        "--datadir",
        keydir.path().to_str().unwrap(),
    ];
    let first = Serve::start_with(20_000, &args);
    let datadir = tempfile::tempdir().unwrap();
    let child = sync_cmd(&[&first], 1, datadir.path())
        .args(["--progress-every-ms", "200"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn eth sync");
    struct Guard(Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Guard(child);
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("progress:") {
                if let Some(n) = count_after(&line, "accounts ") {
                    let _ = tx.send(n);
                }
            }
            lines.push(line);
        }
        lines
    });
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < until, "no account progress within 60 s");
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(n) if n >= 1000 => break,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the sync ended early"),
        }
    }
    // The peer goes away mid-sync, and comes back on the same address a second later.
    drop(first);
    std::thread::sleep(Duration::from_secs(1));
    // The address was released by a process just killed: a start that ends at once is
    // tried again for a few seconds, and each failure says why.
    let mut second = Serve::try_start(20_000, &args);
    for _ in 0..5 {
        match &second {
            Ok(_) => break,
            Err(why) => eprintln!("eth serve did not start on {listen} again yet: {why}"),
        }
        std::thread::sleep(Duration::from_secs(1));
        second = Serve::try_start(20_000, &args);
    }
    let second = second.unwrap_or_else(|why| panic!("eth serve prints its enode: {why}"));
    assert_eq!(second.info["listen"].as_str(), Some(listen.as_str()));
    let mut stdout = child.0.stdout.take().unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut out).unwrap();
    let status = child.0.wait().unwrap();
    let lines = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{}", lines.join("\n"));
    let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON report");
    assert_eq!(v["ok"], true, "{v}");
    let r = &v["report"];
    assert!(u(&r["peers"][0], &["reconnects"]) >= 1, "{r}");
    assert_eq!(r["status"]["state_complete"], true, "{r}");
    assert_eq!(r["state_root"], second.info["head_state_root"], "{r}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("peer lost; dialing it again")),
        "the loss was logged"
    );
}

/// A free TCP port on 127.0.0.1 below `ip_local_port_range`, which `connect` never picks.
fn port_outside_the_ephemeral_range() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = (low.saturating_sub(12_000).max(1024), low);
    assert!(
        to > from + 100,
        "ip_local_port_range starts at {low}: no room below it for a fixed port"
    );
    let start = from + (std::process::id() % u32::from(to - from)) as u16;
    (start..to)
        .chain(from..start)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below the ephemeral range")
}

//! The node's status page in a real browser: two slow `catchup eth serve` processes serve
//! the devnet fixture, `catchup eth sync --shards 2 --admin ADDR` syncs from them, and
//! while it runs headless Chromium loads `http://ADDR/`: its DOM must show a section per
//! shard with the eth stages, the phases with their progress, the peers and the placement;
//! a screenshot is written under the test's output directory. `catchup status --watch`
//! must draw the same parts on a terminal.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

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

fn chromium() -> Option<&'static str> {
    if Path::new(CHROMIUM).exists() {
        return Some(CHROMIUM);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{CHROMIUM} missing (CI=true): install Debian's chromium");
    }
    skip_note!("skipping: {CHROMIUM} missing (Debian package chromium)");
    None
}

/// A child process killed (SIGKILL) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start_server(dir: &Path) -> (Guard, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["eth", "serve", "--listen", "127.0.0.1:0", "--json"])
        .args(["--profile", "slow", "--slow-delay-ms", "400"])
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
    // Keep reading so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stdout.read_to_end(&mut sink);
    });
    (child, v["enode"].as_str().unwrap().to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from the admin endpoint with a plain HTTP/1.1 request.
fn get(addr: &str, path: &str) -> Option<(String, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.to_string(), body.to_string()))
}

/// Wait (bounded) until `/status` shows both shards moving eth items and a peer.
fn wait_for_activity(addr: &str, sync: &mut Guard) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            sync.0.try_wait().unwrap().is_none(),
            "the sync ended before its page was loaded"
        );
        if let Some((_, body)) = get(addr, "/status") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                let shards = v["throughput"]["shards"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let busy = shards.len() == 2
                    && shards
                        .iter()
                        .all(|s| s["stages"].as_array().is_some_and(|a| !a.is_empty()));
                let t = v["throughput"]["t_s"].as_array().map_or(0, Vec::len);
                let phases = v["phases"].as_array().is_some_and(|a| !a.is_empty());
                if busy && t >= 2 && phases && !v["peers"].as_array().unwrap().is_empty() {
                    return v;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no activity on {addr}/status in 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn chromium_cmd(bin: &str, profile: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1800",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null());
    c
}

/// Run a bounded child to its end; kill it after `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("process {pid} did not finish within {limit:?}");
        }
    }
}

#[test]
fn status_page_in_headless_chromium_during_a_sync() {
    let Some(dir) = devnet() else { return };
    let Some(bin) = chromium() else { return };
    let servers: Vec<(Guard, String)> = (0..2).map(|_| start_server(&dir)).collect();
    let datadir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_catchup"));
    cmd.args(["eth", "sync", "--shards", "2", "--pivot-distance", "0"])
        .args(["--node-batch", "16", "--timeout-s", "120", "--json"])
        .args(["--progress-every-ms", "500"])
        .args(["--admin", &admin])
        .arg("--genesis")
        .arg(dir.join("genesis.json"))
        .arg("--datadir")
        .arg(datadir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (_, enode) in &servers {
        cmd.args(["--peer", enode]);
    }
    let mut sync = Guard(cmd.spawn().expect("spawn catchup eth sync"));
    let status = wait_for_activity(&admin, &mut sync);
    assert!(
        status["phases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "eth headers"),
        "{status}"
    );

    // The page itself: HTML, no external assets.
    let (head, page) = get(&admin, "/").expect("GET /");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    for external in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "@import",
    ] {
        assert!(
            !page.contains(external),
            "page loads an external asset: {external}"
        );
    }

    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node_page");
    std::fs::create_dir_all(&out_dir).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{admin}/");

    let mut dump = chromium_cmd(bin, profile.path());
    dump.args(["--virtual-time-budget=3000", "--dump-dom", &url]);
    let out = run_bounded(dump, Duration::from_secs(90));
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    std::fs::write(out_dir.join("status.html"), &dom).unwrap();
    assert!(
        out.status.success() && !dom.is_empty(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for shard in 0..2 {
        let tag = format!("<section class=\"shard\" id=\"shard-{shard}\" data-shard=\"{shard}\">");
        assert!(
            dom.contains(&tag),
            "no section for shard {shard} in the DOM:\n{dom}"
        );
    }
    assert!(
        !dom.contains("id=\"shard-2\""),
        "a section for a shard that does not exist"
    );
    for want in [
        "data-stage=\"headers\"",
        "<polyline",
        "data-phase=\"eth headers\"",
        "class=\"peer\"",
        "eth peer",
    ] {
        assert!(dom.contains(want), "{want:?} missing in the DOM");
    }

    let shot = out_dir.join("status.png");
    let _ = std::fs::remove_file(&shot);
    let mut cap = chromium_cmd(bin, profile.path());
    cap.args(["--virtual-time-budget=3000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url);
    let out = run_bounded(cap, Duration::from_secs(90));
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {}: {e}; chromium said {}",
            shot.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "not a PNG"
    );
    eprintln!("screenshot: {}", shot.display());

    // The terminal picture of the same node.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["status", "--admin", &admin, "--watch", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn catchup status --watch");
    let mut stdout = watch.stdout.take().unwrap();
    let watch = Guard(watch);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut text = String::new();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            // Two frames: the screen is cleared twice.
            if text.matches("\x1b[2J").count() >= 2 {
                break;
            }
        }
        let _ = tx.send(text);
    });
    let text = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("two frames of catchup status --watch");
    drop(watch);
    for want in [
        "PHASES",
        "eth headers",
        "SHARD 0",
        "SHARD 1",
        "PEERS AND SOURCES",
        "PLACEMENT",
    ] {
        assert!(
            text.contains(want),
            "{want:?} missing in --watch output:\n{text}"
        );
    }
    drop(sync);
}

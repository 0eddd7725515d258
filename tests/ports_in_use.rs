//! A port another process holds is refused with one line, for every server catchup runs:
//! the serving shards bind with SO_REUSEPORT, which would otherwise let a second server
//! share the port silently. Real processes on loopback.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_catchup");

/// A child killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `eth serve` on a free port; returns it and the port it listens on.
fn eth_serve() -> (Running, String) {
    let mut child = Command::new(BIN)
        .args(["eth", "serve", "--listen", "127.0.0.1:0", "--json"])
        .args(["--generate-accounts", "50", "--generate-blocks", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn eth serve");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    out.read_line(&mut line)
        .expect("eth serve prints its enode");
    // Keep reading its stdout so that it never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let info: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
    let enode = info["enode"].as_str().expect("enode").to_string();
    let addr = enode.rsplit('@').next().expect("host:port").to_string();
    (Running(child), addr)
}

/// Run a server command that must refuse the port: it exits by itself (bounded), non-zero,
/// with one stderr line naming the address.
fn assert_refused(args: &[&str], addr: &str) {
    assert_refused_with(
        args,
        &format!("error: {addr} is already in use by another process; pick another --listen"),
    );
}

/// Run a command that must exit by itself (bounded), non-zero, with exactly `line` on stderr.
fn assert_refused_with(args: &[&str], line: &str) {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
            panic!("{args:?} kept running on a port another process holds; stderr: {err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{args:?} exited 0; stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert_eq!(lines[0], line);
}

/// `eth serve` on `addr` must be refused.
fn assert_eth_serve_refused(addr: &str) {
    assert_refused(
        &[
            "eth",
            "serve",
            "--listen",
            addr,
            "--generate-accounts",
            "50",
            "--generate-blocks",
            "4",
        ],
        addr,
    );
}

#[test]
fn a_second_eth_serve_on_a_port_in_use_is_refused() {
    let (_first, addr) = eth_serve();
    assert_eth_serve_refused(&addr);
}

#[test]
fn snapshot_serve_on_a_port_in_use_is_refused() {
    let (_first, addr) = eth_serve();
    let dir = tempfile::tempdir().unwrap();
    assert_refused(
        &[
            "solana",
            "snapshot",
            "serve",
            "--listen",
            &addr,
            dir.path().to_str().unwrap(),
        ],
        &addr,
    );
}

#[test]
fn eth_serve_on_a_snapshot_servers_port_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["solana", "snapshot", "serve", "--listen", "127.0.0.1:0"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn snapshot serve");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let _http = Running(child);
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    assert_eth_serve_refused(&addr);
}

#[test]
fn a_missing_snapshot_directory_is_said_to_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let out = Command::new(BIN)
        .args(["solana", "snapshot", "serve", "--listen", "127.0.0.1:0"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "error: snapshot directory {}: does not exist",
            missing.display()
        )
    );
}

#[test]
fn a_second_serve_repair_on_a_udp_port_in_use_is_refused() {
    let mut child = Command::new(BIN)
        .args(["solana", "serve-repair", "--listen", "127.0.0.1:0"])
        .args(["--generate-from", "100", "--generate-slots", "2"])
        .args(["--max-seconds", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve-repair");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line)
        .expect("serve-repair prints its address");
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let _first = Running(child);
    let info: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
    let addr = info["listen"].as_str().expect("listen").to_string();
    assert_refused(
        &[
            "solana",
            "serve-repair",
            "--listen",
            &addr,
            "--generate-from",
            "100",
            "--generate-slots",
            "2",
            "--max-seconds",
            "10",
        ],
        &addr,
    );
}

#[test]
fn an_admin_endpoint_on_a_port_in_use_is_refused() {
    let (_first, addr) = eth_serve();
    assert_refused_with(
        &[
            "eth",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--generate-accounts",
            "50",
            "--generate-blocks",
            "4",
            "--admin",
            &addr,
        ],
        &format!(
            "error: admin endpoint: {addr} is already in use by another process; pick another --admin"
        ),
    );
}

//! Interop with a real discv5 implementation: @chainsafe/discv5 11.0.0 (npm) on loopback.
//! Our v5 service runs behind a plain UDP socket driven by this test. Both directions are
//! checked: we find the foreign node (handshake as initiator, PING/FINDNODE answered) and it
//! finds us (handshake as recipient, our NODES/PONG accepted), and a ping from it is
//! answered.
//!
//! Needs `CATCHUP_DISCV5JS_DIR` naming a folder where `npm install @chainsafe/discv5@11.0.0`
//! was run (`.ci/run` does this). Without it the test fails under `CI=true` and is skipped
//! with one printed line elsewhere.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use catchup_discovery::secp256k1::SecretKey;
use catchup_discovery::v5::{Config, Service};
use catchup_discovery::{DropReason, Enr};

const SCRIPT: &str = include_str!("interop/discv5-peer.mjs");

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn js_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("CATCHUP_DISCV5JS_DIR")?);
    dir.join("node_modules/@chainsafe/discv5/package.json")
        .is_file()
        .then_some(dir)
}

struct Peer {
    child: Child,
    lines: Receiver<String>,
}

impl Peer {
    fn line_starting(&self, prefix: &str, timeout: Duration, drive: &mut dyn FnMut()) -> String {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            drive();
            while let Ok(l) = self.lines.try_recv() {
                if let Some(rest) = l.strip_prefix(prefix) {
                    return rest.to_string();
                }
                assert!(!l.starts_with("ERR"), "foreign node: {l}");
            }
        }
        panic!("foreign node printed no {prefix:?} line within {timeout:?}");
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to foreign node");
        stdin.flush().expect("flush");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One pass of the driver: send what the service queued, wait briefly for a datagram,
/// run due timers.
fn drive(svc: &mut Service, sock: &UdpSocket) {
    while let Some(t) = svc.poll_transmit() {
        sock.send_to(&t.packet, t.dest).expect("udp send");
    }
    let mut buf = [0u8; 2048];
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    if let Ok((n, from)) = sock.recv_from(&mut buf) {
        svc.handle_packet(from, &buf[..n], now_ms());
    }
    let now = now_ms();
    if svc.poll_timeout().is_some_and(|t| t <= now) {
        svc.handle_timeout(now);
    }
    while let Some(t) = svc.poll_transmit() {
        sock.send_to(&t.packet, t.dest).expect("udp send");
    }
}

#[test]
fn chainsafe_discv5_and_we_find_each_other() {
    let Some(dir) = js_dir() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CATCHUP_DISCV5JS_DIR with @chainsafe/discv5@11.0.0 installed is required under CI"
        );
        skip_note!(
            "skipped: set CATCHUP_DISCV5JS_DIR to a folder with @chainsafe/discv5@11.0.0 installed"
        );
        return;
    };
    let script = dir.join("catchup-discv5-peer.mjs");
    std::fs::write(&script, SCRIPT).expect("write peer script");
    // A free loopback port for the foreign node.
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port();
    let mut child = Command::new("node")
        .arg(&script)
        .arg(port.to_string())
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut peer = Peer { child, lines: rx };
    let their_text = peer.line_starting("ENR ", Duration::from_secs(30), &mut || {
        std::thread::sleep(Duration::from_millis(20))
    });
    let theirs = Enr::from_text(&their_text).expect("their record decodes and verifies");
    assert_eq!(
        theirs.udp_socket(),
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    );

    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let ours_addr = sock.local_addr().expect("addr");
    let mut svc = Service::new(Config {
        key: SecretKey::from_slice(&[0x5a; 32]).expect("key"),
        endpoint: ours_addr,
        tcp_port: 0,
        bootnodes: vec![theirs.clone()],
        fork_id: None,
        fork_filter: None,
        rng_seed: 7,
    })
    .expect("service");
    svc.start(now_ms());

    // We find them: our PING and FINDNODE go through a handshake they challenge.
    let deadline = Instant::now() + Duration::from_secs(20);
    while svc.node(&theirs.node_id()).is_none() {
        assert!(
            Instant::now() < deadline,
            "the foreign node never answered us"
        );
        drive(&mut svc, &sock);
    }
    assert_eq!(svc.node(&theirs.node_id()).map(|n| &n.enr), Some(&theirs));

    // They find us: they handshake with us and look up through us.
    let our_text = svc.local_enr().to_text();
    let our_id = svc.local_id().to_string();
    peer.send(&format!("ADD {our_text}"));
    let kad = peer.line_starting("KAD ", Duration::from_secs(30), &mut || {
        drive(&mut svc, &sock)
    });
    assert!(
        kad.split(',').any(|id| id == our_id),
        "we are in the foreign node's table: {kad}"
    );
    peer.send(&format!("PING {our_text}"));
    let pong = peer.line_starting("PONG ", Duration::from_secs(20), &mut || {
        drive(&mut svc, &sock)
    });
    assert_eq!(pong.trim(), svc.local_enr().seq().to_string());

    let d = svc.drops();
    for r in [
        DropReason::Malformed,
        DropReason::BadSignature,
        DropReason::Decrypt,
        DropReason::BadRecord,
        DropReason::UnknownType,
    ] {
        assert_eq!(
            d.get(r),
            0,
            "{} drops talking to a real implementation",
            r.name()
        );
    }
    peer.send("QUIT");
}

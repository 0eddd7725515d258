//! Interop with a real discv4 implementation: the discovery of @ethereumjs/client 0.10.5
//! (npm) on loopback. Our v4 service runs behind a plain UDP socket driven by this test
//! and is the client's bootnode; the client is ours. Checked: the client's packets decode
//! and verify, bonding completes both ways (it answers our ping, we answer its ping), and
//! our FindNode is answered with Neighbors.
//!
//! Needs `CATCHUP_ETHEREUMJS_DIR` naming a folder where `npm install @ethereumjs/client@0.10.5`
//! was run (`.ci/run` does this) and the devnet fixture (`CATCHUP_FIXTURES`). Without them
//! the test fails under `CI=true` and is skipped with one printed line elsewhere.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use catchup_devp2p::enode::Enode;
use catchup_discovery::crypto::pub64;
use catchup_discovery::secp256k1::{SecretKey, SECP256K1};
use catchup_discovery::v4::{Bootnode, Config, Event, Service};
use catchup_discovery::{DropReason, NodeId};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let bin = PathBuf::from(std::env::var_os("CATCHUP_ETHEREUMJS_DIR")?)
        .join("node_modules/.bin/ethereumjs");
    let fixtures = std::env::var_os("CATCHUP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        });
    let genesis = fixtures.join("ethereum/devnet/genesis.json");
    (bin.is_file() && genesis.is_file()).then_some((bin, genesis))
}

struct Killed(Child);

/// Removes the client's data folder however the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ethereumjs_discv4_bonds_and_answers() {
    let Some((bin, genesis)) = prerequisites() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CATCHUP_ETHEREUMJS_DIR (@ethereumjs/client@0.10.5) and the devnet fixture are required under CI"
        );
        skip_note!("skipped: set CATCHUP_ETHEREUMJS_DIR to a folder with @ethereumjs/client@0.10.5 installed");
        return;
    };
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let ours = sock.local_addr().expect("addr");
    let key = SecretKey::from_slice(&[0x4b; 32]).expect("key");
    let our_enode = format!(
        "enode://{}@{}",
        hex::encode(pub64(&key.public_key(SECP256K1))),
        ours
    );
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port();
    let datadir =
        std::env::temp_dir().join(format!("catchup-discv4-interop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&datadir);
    let _cleanup = TempDir(datadir.clone());
    std::fs::create_dir_all(&datadir).expect("data folder");
    // The client writes log files into its working folder (even with --logFile=false):
    // run it inside its data folder.
    let mut child = Command::new(&bin)
        .current_dir(&datadir)
        .arg(format!("--gethGenesis={}", genesis.display()))
        .arg(format!("--dataDir={}", datadir.display()))
        .args([
            "--discDns=false",
            "--discV4=true",
            "--extIP=127.0.0.1",
            "--logFile=false",
            "--logLevel=debug",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--bootnodes={our_enode}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ethereumjs");
    let stdout = child.stdout.take().expect("stdout");
    let child = Killed(child);
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first start after a fresh install loads and compiles the whole client: on a
    // loaded 2-core machine that has taken more than a minute.
    let deadline = Instant::now() + Duration::from_secs(180);
    let theirs = loop {
        assert!(
            Instant::now() < deadline,
            "ethereumjs printed no enode within 180 s"
        );
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(pos) = line.find("url=enode://") {
                let url = line[pos + 4..].split_whitespace().next().unwrap_or("");
                break Enode::parse(url).expect("their enode");
            }
        }
    };
    let their_id = NodeId::from_pub64(&theirs.id);
    let mut svc = Service::new(Config {
        key,
        endpoint: ours,
        tcp_port: ours.port(),
        bootnodes: vec![Bootnode::from(theirs)],
        fork_id: None,
        fork_filter: None,
        rng_seed: 3,
    })
    .expect("service");
    svc.start(now_ms());

    let mut buf = [0u8; 2048];
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let mut pinged_by_them = false;
    let mut lookup_done_with_answer = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(svc.node(&their_id).is_some() && pinged_by_them && lookup_done_with_answer) {
        assert!(
            Instant::now() < deadline,
            "no full exchange within 30 s: found {} pinged_by_them {pinged_by_them} lookup {lookup_done_with_answer} drops {:?}",
            svc.node(&their_id).is_some(),
            svc.drops()
        );
        while let Some(t) = svc.poll_transmit() {
            sock.send_to(&t.packet, t.dest).expect("udp send");
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if let Ok(d) = catchup_discovery::v4::decode(&buf[..n], 0) {
                if d.sender_id == their_id
                    && matches!(d.message, catchup_discovery::v4::Message::Ping(_))
                {
                    pinged_by_them = true;
                }
            }
            svc.handle_packet(from, &buf[..n], now_ms());
        }
        let now = now_ms();
        if svc.poll_timeout().is_some_and(|t| t <= now) {
            svc.handle_timeout(now);
        }
        while let Some(e) = svc.poll_event() {
            if let Event::LookupDone { queried, .. } = e {
                if queried > 0 {
                    lookup_done_with_answer = true;
                } else if svc.node(&their_id).is_some() {
                    svc.lookup_random(now_ms());
                }
            }
        }
    }
    let found = svc.node(&their_id).expect("found");
    assert_eq!(found.udp.port(), port);
    // This client does not implement ENRRequest (EIP-868): no record is expected from it.
    let d = svc.drops();
    for r in [
        DropReason::Malformed,
        DropReason::BadSignature,
        DropReason::Oversized,
        DropReason::Expired,
        DropReason::BadRecord,
    ] {
        assert_eq!(
            d.get(r),
            0,
            "{} drops talking to a real implementation",
            r.name()
        );
    }
    drop(child);
}

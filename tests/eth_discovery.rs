//! Peers from the network: eight `catchup eth serve --discovery v4,v5` processes on
//! loopback (one of them the bootnode the others announce themselves to) and one serving
//! another chain; `catchup eth sync --bootnodes <the bootnode's ENR>` without any `--peer`
//! must find the others by discovery, dial only the compatible ones, and sync the chain
//! to its state root. And discovery with nothing to start from fails in one line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    listening: serde_json::Value,
    enr: String,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn json_line(stdout: &mut BufReader<std::process::ChildStdout>) -> serde_json::Value {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("serve printed {line:?}: {e}"))
}

fn serve(seed: &str, bootnode: Option<&str>) -> Server {
    serve_on(seed, "4243", bootnode)
}

fn serve_on(seed: &str, network_id: &str, bootnode: Option<&str>) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_catchup"));
    cmd.args(["eth", "serve", "--listen", "127.0.0.1:0", "--json"])
        // A state of some size, so that the sync has work for every peer.
        .args(["--generate-accounts", "36000", "--generate-blocks", "48"])
        .args(["--seed", seed, "--network-id", network_id])
        .args(["--discovery", "v4,v5"]);
    if let Some(b) = bootnode {
        cmd.args(["--bootnodes", b]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn catchup eth serve");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let listening = json_line(&mut stdout);
    assert_eq!(listening["event"], "listening");
    let disc = json_line(&mut stdout);
    assert_eq!(disc["event"], "discovery");
    assert_eq!(
        disc["udp"], listening["listen"],
        "discovery on the --listen port"
    );
    let enr = disc["enr"].as_str().unwrap().to_string();
    assert!(enr.starts_with("enr:-"), "{enr}");
    Server {
        child,
        listening,
        enr,
        _stdout: stdout,
    }
}

#[test]
fn sync_finds_its_peers_through_one_bootnode() {
    let boot = serve("5", None);
    let mut servers = vec![];
    for _ in 0..7 {
        servers.push(serve("5", Some(&boot.enr)));
    }
    // Same network id, another genesis: its record's fork id is not ours.
    let other = serve("6", Some(&boot.enr));
    for s in servers.iter().chain([&other]) {
        assert_ne!(s.listening["enode"], boot.listening["enode"]);
    }
    assert_eq!(
        servers[0].listening["genesis_hash"],
        boot.listening["genesis_hash"]
    );
    assert_ne!(
        other.listening["genesis_hash"],
        boot.listening["genesis_hash"]
    );
    // The others have announced themselves (one ping/pong round on loopback).
    std::thread::sleep(Duration::from_millis(1500));
    let root = boot.listening["head_state_root"].as_str().unwrap();
    let datadir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args([
            "eth",
            "sync",
            "--json",
            "--timeout-s",
            "120",
            "--shards",
            "2",
        ])
        .args(["--pivot-distance", "8", "--progress-every-ms", "1000"])
        // The vote waits until 7 peers are connected: what discovery finds is counted
        // whether the sync itself is quick or slow.
        .args(["--min-peers", "7", "--min-peers-wait-s", "60"])
        .args(["--bootnodes", &boot.enr])
        .args(["--discovery-addr", "127.0.0.1:0"])
        .args([
            "--genesis-hash",
            boot.listening["genesis_hash"].as_str().unwrap(),
        ])
        .args(["--network-id", "4243", "--expect-state-root", root])
        .arg("--datadir")
        .arg(datadir.path())
        .stderr(Stdio::piped())
        .output()
        .expect("run catchup eth sync");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "sync failed: {text}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let r = &v["report"];
    assert_eq!(r["state_root"].as_str(), Some(root), "{r}");
    assert_eq!(r["head_hash"], boot.listening["head_hash"]);
    let discovered = r["peers_discovered"].as_u64().unwrap();
    let connected = r["peers_connected"].as_u64().unwrap();
    assert!(discovered >= 7, "found {discovered} of 9 nodes: {r}");
    assert!(connected > 1, "{r}");
    let d = &r["discovery"];
    assert!(d["eth_compatible"].as_u64().unwrap() >= 6, "{d}");
    // The other chain's node is never dialed (when found, it is counted as such).
    let other_addr = other.listening["listen"].as_str().unwrap();
    let peers = r["peers"].as_array().unwrap();
    assert!(
        peers.iter().all(|p| p["peer"] != other_addr),
        "the other chain's node was dialed: {r}"
    );
    assert!(
        peers.iter().filter(|p| p["eth_version"] != 0).count() as u64 == connected,
        "{r}"
    );
    assert!(
        err.contains("peers: discovered"),
        "progress line with peer counts: {err}"
    );
    eprintln!(
        "synced in {:?}: {discovered} nodes discovered ({} compatible, {} other chain), {} dialed, {connected} connected",
        started.elapsed(),
        d["eth_compatible"],
        d["eth_incompatible"],
        r["peers_dialed"]
    );
}

/// A node whose record passes the fork filter (same genesis and forks) but whose Status
/// names another network is dialed, dropped with the reason `network`, and its slot goes
/// to the next candidate, which the sync finishes with.
#[test]
fn a_peer_on_another_network_is_dropped_with_its_reason() {
    let wrong = serve_on("7", "4244", None);
    let good = serve_on("7", "4243", Some(&wrong.enr));
    assert_eq!(
        wrong.listening["genesis_hash"],
        good.listening["genesis_hash"]
    );
    std::thread::sleep(Duration::from_millis(1000));
    let root = good.listening["head_state_root"].as_str().unwrap();
    let datadir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args([
            "eth",
            "sync",
            "--json",
            "--timeout-s",
            "120",
            "--shards",
            "1",
        ])
        .args(["--pivot-distance", "8", "--pivot-agreement", "1"])
        .args(["--max-peers", "1", "--min-peers", "1"])
        .args(["--bootnodes", &wrong.enr])
        .args(["--discovery-addr", "127.0.0.1:0"])
        .args([
            "--genesis-hash",
            good.listening["genesis_hash"].as_str().unwrap(),
        ])
        .args(["--network-id", "4243", "--expect-state-root", root])
        .arg("--datadir")
        .arg(datadir.path())
        .stderr(Stdio::null())
        .output()
        .expect("run catchup eth sync");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "sync failed: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let r = &v["report"];
    assert_eq!(r["peers_dropped"]["network"], 1, "{r}");
    assert_eq!(r["peers_connected"], 1, "{r}");
    let wrong_addr = wrong.listening["listen"].as_str().unwrap();
    let p = r["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == wrong_addr)
        .unwrap_or_else(|| panic!("the bootnode was dialed: {r}"));
    assert!(
        p["error"]
            .as_str()
            .unwrap_or("")
            .contains("different chain"),
        "{p}"
    );
}

/// A `--peer` beside discovery stays a static peer: dialed once as given, never a second
/// time as a discovered candidate, while discovery adds the others.
#[test]
fn a_static_peer_is_kept_beside_discovered_ones() {
    let boot = serve_on("10", "4243", None);
    let others: Vec<Server> = (0..2)
        .map(|_| serve_on("10", "4243", Some(&boot.enr)))
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let fixed = &others[0];
    let root = boot.listening["head_state_root"].as_str().unwrap();
    let datadir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args([
            "eth",
            "sync",
            "--json",
            "--timeout-s",
            "120",
            "--shards",
            "2",
        ])
        .args(["--pivot-distance", "8", "--pivot-agreement", "3"])
        .args(["--min-peers", "3"])
        .args(["--peer", fixed.listening["enode"].as_str().unwrap()])
        .args(["--bootnodes", &boot.enr])
        .args(["--discovery-addr", "127.0.0.1:0"])
        .args([
            "--genesis-hash",
            boot.listening["genesis_hash"].as_str().unwrap(),
        ])
        .args(["--network-id", "4243", "--expect-state-root", root])
        .arg("--datadir")
        .arg(datadir.path())
        .stderr(Stdio::null())
        .output()
        .expect("run catchup eth sync");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "sync failed: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let r = &v["report"];
    let fixed_addr = fixed.listening["listen"].as_str().unwrap();
    let peers = r["peers"].as_array().unwrap();
    assert_eq!(
        peers.iter().filter(|p| p["peer"] == fixed_addr).count(),
        1,
        "the static peer is dialed once: {r}"
    );
    assert_eq!(peers[0]["peer"], fixed_addr, "static peers come first: {r}");
    assert_eq!(r["peers_connected"], 3, "{r}");
    assert_eq!(r["peers_dialed"], 3, "one static, two discovered: {r}");
}

/// Amplification over real UDP: a FindNode from an endpoint that never answered the
/// serving node's ping gets no neighbors; after a ping and our pong to its ping (the
/// endpoint proof), the same query is answered.
#[test]
fn serve_answers_findnode_only_to_a_proven_endpoint() {
    use catchup_discovery::secp256k1::SecretKey;
    use catchup_discovery::v4::packet::{decode, encode, FindNode, Message, Ping, Pong};
    use catchup_discovery::v4::Endpoint;
    let boot = serve_on("11", "4243", None);
    // Two other nodes announce themselves, so the table has something to give away.
    let _others: Vec<Server> = (0..2)
        .map(|_| serve_on("11", "4243", Some(&boot.enr)))
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let target: std::net::SocketAddr = boot.listening["listen"].as_str().unwrap().parse().unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let me = sock.local_addr().unwrap();
    let key = SecretKey::from_slice(&[0x61; 32]).unwrap();
    let now_s = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let ep = |a: std::net::SocketAddr| Endpoint {
        ip: a.ip(),
        udp_port: a.port(),
        tcp_port: 0,
    };
    let replies = |sock: &std::net::UdpSocket| {
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            got.push(decode(&buf[..n], now_s()).unwrap().message);
        }
        got
    };
    let find = Message::FindNode(FindNode {
        target: [7u8; 64],
        expiration: now_s() + 20,
    });
    sock.send_to(&encode(&find, &key).unwrap().0, target)
        .unwrap();
    let got = replies(&sock);
    assert!(
        !got.iter().any(|m| matches!(m, Message::Neighbors(_))),
        "neighbors sent to an unproven endpoint: {got:?}"
    );
    // Bond: our ping is answered with a pong and a ping back; we answer that ping.
    let ping = Message::Ping(Ping {
        version: 4,
        from: ep(me),
        to: ep(target),
        expiration: now_s() + 20,
        enr_seq: None,
    });
    sock.send_to(&encode(&ping, &key).unwrap().0, target)
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut their_ping = None;
    let until = Instant::now() + Duration::from_secs(5);
    while their_ping.is_none() && Instant::now() < until {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let d = decode(&buf[..n], now_s()).unwrap();
            if let Message::Ping(_) = d.message {
                their_ping = Some(d.hash);
            }
        }
    }
    let ping_hash = their_ping.expect("the serving node pings back");
    let pong = Message::Pong(Pong {
        to: ep(target),
        ping_hash,
        expiration: now_s() + 20,
        enr_seq: None,
    });
    sock.send_to(&encode(&pong, &key).unwrap().0, target)
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let find = Message::FindNode(FindNode {
        target: [7u8; 64],
        expiration: now_s() + 20,
    });
    sock.send_to(&encode(&find, &key).unwrap().0, target)
        .unwrap();
    let got = replies(&sock);
    let nodes: usize = got
        .iter()
        .map(|m| match m {
            Message::Neighbors(n) => n.nodes.len(),
            _ => 0,
        })
        .sum();
    assert!(nodes >= 2, "a proven endpoint gets neighbors: {got:?}");
}

/// A DNS server on loopback answering TXT queries from a zone, until dropped.
struct DnsServer {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl DnsServer {
    fn start(zone: std::collections::HashMap<String, Vec<String>>) -> DnsServer {
        use catchup_discovery::dns_wire::{decode_query, encode_txt_answer};
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut served = 0u64;
            let mut buf = [0u8; 1500];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok((id, name, _)) = decode_query(&buf[..n]) else {
                    continue;
                };
                let records = zone.get(&name).cloned().unwrap_or_default();
                let answer = encode_txt_answer(id, &name, &records).unwrap();
                let _ = sock.send_to(&answer, from);
                served += 1;
            }
            served
        });
        DnsServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An EIP-1459 tree signed with `key` listing `records`, as a zone for `domain`.
fn tree_zone(
    key: &catchup_discovery::secp256k1::SecretKey,
    domain: &str,
    records: &[String],
) -> std::collections::HashMap<String, Vec<String>> {
    use catchup_discovery::dns::{entry_hash, Root};
    let branch = format!(
        "enrtree-branch:{}",
        records
            .iter()
            .map(|r| entry_hash(r))
            .collect::<Vec<_>>()
            .join(",")
    );
    let links = "enrtree-branch:".to_string();
    let root = Root::sign(&entry_hash(&branch), &entry_hash(&links), 1, key);
    let mut zone = std::collections::HashMap::new();
    zone.insert(domain.to_string(), vec![root.to_string()]);
    for t in records.iter().chain([&branch, &links]) {
        zone.insert(
            format!("{}.{domain}", entry_hash(t)).to_ascii_lowercase(),
            vec![t.clone()],
        );
    }
    zone
}

/// `--dns-list` alone: the sync walks a signed EIP-1459 tree served by a DNS server on
/// loopback, dials the listed nodes of its chain (not the other chain's) and syncs.
#[test]
fn sync_finds_its_peers_in_a_dns_tree() {
    use catchup_discovery::secp256k1::{SecretKey, SECP256K1};
    let good: Vec<Server> = (0..3).map(|_| serve_on("8", "4243", None)).collect();
    let other = serve_on("9", "4243", None);
    let key = SecretKey::from_slice(&[0x5a; 32]).unwrap();
    let domain = "nodes.catchup.test";
    let records: Vec<String> = good.iter().chain([&other]).map(|s| s.enr.clone()).collect();
    let dns = DnsServer::start(tree_zone(&key, domain, &records));
    let link = catchup_discovery::dns::TreeLink {
        public_key: key.public_key(SECP256K1),
        domain: domain.into(),
    }
    .to_string();
    let root = good[0].listening["head_state_root"].as_str().unwrap();
    let datadir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args([
            "eth",
            "sync",
            "--json",
            "--timeout-s",
            "120",
            "--shards",
            "2",
        ])
        .args(["--pivot-distance", "8", "--pivot-agreement", "2"])
        .args(["--min-peers", "3"])
        .args(["--dns-list", &link, "--dns-server", &dns.addr.to_string()])
        .args(["--discovery-addr", "127.0.0.1:0"])
        .args([
            "--genesis-hash",
            good[0].listening["genesis_hash"].as_str().unwrap(),
        ])
        .args(["--network-id", "4243", "--expect-state-root", root])
        .arg("--datadir")
        .arg(datadir.path())
        .stderr(Stdio::null())
        .output()
        .expect("run catchup eth sync");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "sync failed: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let r = &v["report"];
    let d = &r["discovery"];
    assert_eq!(d["dns_records"], 4, "{d}");
    assert_eq!(d["eth_compatible"], 3, "{d}");
    assert_eq!(d["eth_incompatible"], 1, "{d}");
    assert!(r["peers_connected"].as_u64().unwrap() >= 2, "{r}");
    let other_addr = other.listening["listen"].as_str().unwrap();
    assert!(
        r["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["peer"] != other_addr),
        "the other chain's node was dialed: {r}"
    );
    // Root, the two branches and the four records.
    assert!(dns.stop() >= 7);
}

#[test]
fn discovery_with_nothing_to_start_from_fails_in_one_line() {
    let unknown = format!("0x{}", "11".repeat(32));
    let cases: [(&[&str], &str); 2] = [(&["--discovery", "v4,v5"], "--bootnodes"), (&[], "--peer")];
    for (flags, names) in cases {
        let datadir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
            .args(["eth", "sync", "--genesis-hash", &unknown])
            .args(["--discovery-addr", "127.0.0.1:0"])
            .args(flags)
            .arg("--datadir")
            .arg(datadir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run catchup eth sync");
        assert!(started.elapsed() < Duration::from_secs(30), "it waited");
        assert_ne!(out.status.code(), Some(0));
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{flags:?}: {err}");
        assert!(
            lines[0].contains(names) && lines[0].contains("--peer"),
            "{flags:?}: {err}"
        );
    }
}

//! End to end in network namespaces joined by a veth pair: `catchup solana serve-repair`
//! peers on one side, `catchup solana repair` on the other, over plain UDP and over AF_XDP
//! (generic XDP on the veth). Both paths must repair the same gap to identical slots, with
//! lossy, slow and lying peers among the honest one.
//!
//! Needs root and iproute2. Under `CI=true` a missing requirement fails the test; elsewhere
//! the test is skipped with a printed reason. Namespaces, servers and the XDP program are
//! removed by drop guards, also when the test fails.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use catchup_shred::ledger::generate_ledger;
use catchup_shred::Shred;

const BIN: &str = env!("CARGO_BIN_EXE_catchup");

fn requirements_met() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    // The binary under test carries the XDP program only when its build found clang and
    // libbpf-dev.
    let xdp = catchup_io::xdp::program_built();
    let ok = root && ip && xdp;
    if !ok {
        let why = format!(
            "needs root ({root}), iproute2 ({ip}) and the XDP program built in ({xdp}{})",
            if xdp {
                ""
            } else {
                ": install clang and libbpf-dev, then rebuild"
            }
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("repair netns test cannot run under CI: {why}");
        }
        skip_note!("skipping repair netns test: {why}");
    }
    ok
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair: `<ns>a` holds `10.201.<n>.1/30`, `<ns>b` holds `.2`.
struct Netns {
    a: String,
    b: String,
    veth_b: String,
    subnet: u8,
}

impl Netns {
    fn new(tag: &str, subnet: u8) -> Netns {
        let pid = std::process::id() % 100_000;
        let n = Netns {
            a: format!("cur{tag}{pid}a"),
            b: format!("cur{tag}{pid}b"),
            veth_b: format!("vr{tag}{pid}b"),
            subnet,
        };
        let veth_a = format!("vr{tag}{pid}a");
        sh(&["ip", "netns", "add", &n.a]);
        sh(&["ip", "netns", "add", &n.b]);
        sh(&[
            "ip", "link", "add", &veth_a, "netns", &n.a, "type", "veth", "peer", "name", &n.veth_b,
            "netns", &n.b,
        ]);
        sh(&[
            "ip",
            "-n",
            &n.a,
            "addr",
            "add",
            &format!("10.201.{subnet}.1/30"),
            "dev",
            &veth_a,
        ]);
        sh(&[
            "ip",
            "-n",
            &n.b,
            "addr",
            "add",
            &format!("10.201.{subnet}.2/30"),
            "dev",
            &n.veth_b,
        ]);
        for (ns, dev) in [(&n.a, &veth_a), (&n.b, &n.veth_b)] {
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        n
    }
    fn server_ip(&self) -> String {
        format!("10.201.{}.1", self.subnet)
    }
    fn client_ip(&self) -> String {
        format!("10.201.{}.2", self.subnet)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // deleting the namespaces removes the veth pair and with it the XDP program
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

struct Server {
    child: Child,
    identity: String,
    leader: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(ns: &Netns, port: u16, profile: Option<&str>) -> Server {
    let listen = format!("{}:{port}", ns.server_ip());
    let mut args = vec![
        "netns",
        "exec",
        &ns.a,
        BIN,
        "solana",
        "serve-repair",
        "--listen",
        &listen,
    ];
    args.extend([
        "--generate-from",
        "9000",
        "--generate-slots",
        "24",
        "--shreds-per-slot",
        "40",
        "--leader-seed",
        "5",
        "--max-seconds",
        "120",
    ]);
    if let Some(p) = profile {
        args.extend(["--profile", p]);
    }
    let mut child = Command::new("ip")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve-repair");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read startup line");
    let v: serde_json::Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(e) => {
            let _ = child.kill();
            panic!("serve-repair startup line {line:?}: {e}");
        }
    };
    Server {
        child,
        identity: v["identity"].as_str().unwrap().into(),
        leader: v["leader"].as_str().unwrap().into(),
    }
}

fn expected() -> BTreeMap<u64, Vec<Vec<u8>>> {
    let key = catchup::solana::repair::cmd::generated_leader(5);
    let mut m: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for b in generate_ledger(&key, 9000, 24, 40, 5) {
        let s = Shred::from_bytes(&b).unwrap();
        if s.is_data() {
            m.entry(s.slot()).or_default().push(b);
        }
    }
    m
}

/// Run `catchup solana repair` in the client namespace; returns its JSON summary and the
/// repaired shreds by slot.
fn repair(
    ns: &Netns,
    peers: &[String],
    leader: &str,
    xdp: bool,
    tag: &str,
) -> (serde_json::Value, BTreeMap<u64, Vec<Vec<u8>>>) {
    let iface = ns.veth_b.clone();
    repair_with(ns, peers, leader, xdp.then_some(iface.as_str()), tag)
}

fn repair_with_shards(
    ns: &Netns,
    peers: &[String],
    leader: &str,
    shards: usize,
) -> (serde_json::Value, BTreeMap<u64, Vec<Vec<u8>>>) {
    run_repair(ns, peers, leader, None, "shards", shards, &[])
}

fn repair_with(
    ns: &Netns,
    peers: &[String],
    leader: &str,
    xdp: Option<&str>,
    tag: &str,
) -> (serde_json::Value, BTreeMap<u64, Vec<Vec<u8>>>) {
    run_repair(ns, peers, leader, xdp, tag, 1, &[])
}

fn run_repair(
    ns: &Netns,
    peers: &[String],
    leader: &str,
    xdp: Option<&str>,
    tag: &str,
    shards: usize,
    extra: &[&str],
) -> (serde_json::Value, BTreeMap<u64, Vec<Vec<u8>>>) {
    let shards_s = shards.to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("{tag}.json"));
    let out_s = out.to_str().unwrap().to_string();
    let client = ns.client_ip();
    let mut args: Vec<&str> = vec![
        "netns",
        "exec",
        &ns.b,
        BIN,
        "solana",
        "repair",
        "--from-slot",
        "9000",
        "--to-slot",
        "9023",
    ];
    args.extend([
        "--leader",
        leader,
        "--bind",
        &client,
        "--out",
        &out_s,
        "--json",
        "--timeout-secs",
        "60",
        "--request-timeout-ms",
        "150",
    ]);
    for p in peers {
        args.extend(["--peer", p]);
    }
    args.extend(["--shards", &shards_s]);
    if let Some(iface) = xdp {
        args.extend(["--xdp", iface, "--xdp-port", "47100"]);
    }
    args.extend(extra);
    let o = Command::new("ip").args(&args).output().expect("run repair");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "repair ({tag}) failed: {stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON summary");
    let raw = catchup_shred::files::decode_shred_list(&std::fs::read(&out).unwrap()).unwrap();
    let mut m: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for b in raw {
        let s = Shred::from_bytes(&b).unwrap();
        m.entry(s.slot()).or_default().push(b);
    }
    (v, m)
}

#[test]
fn udp_and_af_xdp_repair_the_same_gap_to_identical_slots() {
    if !requirements_met() {
        return;
    }
    let ns = Netns::new("u", 211);
    let good = serve(&ns, 8101, None);
    let peers = vec![format!("{}@{}:8101", good.identity, ns.server_ip())];
    let (udp_v, udp) = repair(&ns, &peers, &good.leader, false, "udp");
    let (xdp_v, xdp) = repair(&ns, &peers, &good.leader, true, "xdp");
    assert_eq!(udp_v["shards"][0]["path"], "udp");
    assert_eq!(
        xdp_v["shards"][0]["path"], "xdp",
        "AF_XDP path not used: {}",
        xdp_v["shards"][0]["fallback_reason"]
    );
    assert_eq!(udp_v["complete"], true);
    assert_eq!(xdp_v["complete"], true);
    let want = expected();
    assert_eq!(udp, want, "UDP repair equals the served ledger");
    assert_eq!(xdp, udp, "AF_XDP repair equals the UDP repair");
    // two shards over UDP split the slots and give the same result
    let (two_v, two) = repair_with_shards(&ns, &peers, &good.leader, 2);
    assert_eq!(two_v["shards"].as_array().unwrap().len(), 2);
    assert_eq!(two, want);
    // AF_XDP on an interface that does not exist falls back to UDP and says why
    let (fb_v, fb) = repair_with(&ns, &peers, &good.leader, Some("nosuchif0"), "fallback");
    assert_eq!(fb_v["shards"][0]["path"], "udp");
    let reason = fb_v["shards"][0]["fallback_reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("nosuchif0") && reason.contains("no such interface"),
        "{reason}"
    );
    assert_eq!(fb, want);
}

/// The AF_XDP path keeps what it verified in the data directory like the UDP path: a
/// second run loads every shred (verified again) and requests nothing.
#[test]
fn af_xdp_repair_keeps_its_shreds_and_a_second_run_requests_nothing() {
    if !requirements_met() {
        return;
    }
    let ns = Netns::new("p", 213);
    let good = serve(&ns, 8103, None);
    let peers = vec![format!("{}@{}:8103", good.identity, ns.server_ip())];
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap().to_string();
    let iface = ns.veth_b.clone();
    let extra = ["--datadir", d.as_str()];
    let (v1, first) = run_repair(&ns, &peers, &good.leader, Some(&iface), "p1", 1, &extra);
    assert_eq!(v1["shards"][0]["path"], "xdp", "{v1}");
    assert_eq!(v1["complete"], true, "{v1}");
    assert_eq!(v1["shreds_loaded"], 0, "{v1}");
    let total: usize = expected().values().map(Vec::len).sum();
    assert_eq!(v1["shreds"], total as u64, "{v1}");
    let (v2, second) = run_repair(&ns, &peers, &good.leader, Some(&iface), "p2", 1, &extra);
    assert_eq!(v2["shards"][0]["path"], "xdp", "{v2}");
    assert_eq!(v2["complete"], true, "{v2}");
    assert_eq!(v2["shreds_loaded"], total as u64, "{v2}");
    assert_eq!(v2["shreds"], 0, "{v2}");
    assert_eq!(v2["shards"][0]["progress"]["requests_sent"], 0, "{v2}");
    assert_eq!(first, expected());
    assert_eq!(second, first);
}

#[test]
fn lossy_slow_and_lying_peers_are_tolerated_on_both_paths() {
    if !requirements_met() {
        return;
    }
    let ns = Netns::new("f", 212);
    let good = serve(&ns, 8201, None);
    let lossy = serve(&ns, 8202, Some("lossy"));
    let wrong = serve(&ns, 8203, Some("wrong"));
    let slow = serve(&ns, 8204, Some("slow"));
    let ip = ns.server_ip();
    // keys of two peers are given, two are learnt from their pings
    let peers = vec![
        format!("{}@{ip}:8201", good.identity),
        format!("{ip}:8202"),
        format!("{}@{ip}:8203", wrong.identity),
        format!("{ip}:8204"),
    ];
    let _ = (&lossy, &slow);
    let want = expected();
    let (udp_v, udp) = repair(&ns, &peers, &good.leader, false, "udp");
    let (xdp_v, xdp) = repair(&ns, &peers, &good.leader, true, "xdp");
    assert_eq!(
        xdp_v["shards"][0]["path"], "xdp",
        "AF_XDP path not used: {}",
        xdp_v["shards"][0]["fallback_reason"]
    );
    assert_eq!(udp, want);
    assert_eq!(xdp, want);
    for v in [&udp_v, &xdp_v] {
        let p = &v["shards"][0]["progress"];
        assert!(
            p["invalid"].as_u64().unwrap() > 0,
            "corrupted shreds seen and rejected: {p}"
        );
        let wrong_peer = &p["peers"][2];
        assert!(wrong_peer["invalid"].as_u64().unwrap() > 0, "{wrong_peer}");
        assert_eq!(
            p["peers"][3]["key_known"], true,
            "slow peer key learnt from its ping"
        );
    }
}

/// Four rx/tx queues on the veth: one AF_XDP socket and UMEM per queue, each owned by the
/// shard the tuning plan deals that queue to (pinned to the plan's CPU); traffic spread
/// over the queues reaches every shard on its own queue, beside a `recvmmsg` socket per
/// shard on the same veth.
#[test]
fn four_queue_veth_every_shard_receives_on_its_own_queue() {
    if !requirements_met() {
        return;
    }
    let out = Command::new(BIN)
        .args([
            "bench",
            "repair",
            "--rx-only",
            "--queues",
            "4",
            "--rx-seconds",
            "1",
            "--json",
        ])
        .output()
        .expect("run bench repair");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench repair --rx-only failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json report");
    let pq = &v["per_queue"];
    for path in ["af_xdp", "recvmmsg"] {
        let m = &pq[path];
        let queues = m["per_queue"].as_array().expect("per-queue rows");
        assert_eq!(queues.len(), 4, "{path}: {m}");
        let mut total = 0;
        for (i, q) in queues.iter().enumerate() {
            assert_eq!(q["queue"], i, "{path}: {q}");
            // The plan deals queue i to shard i (one queue per shard).
            assert_eq!(q["shard"], i, "{path}: {q}");
            assert_eq!(
                q["ran_on_cpu"], q["plan_cpu"],
                "{path}: not on its CPU: {q}"
            );
            let n = q["parsed_packets"].as_u64().unwrap();
            assert!(n > 0, "{path}: queue {i} received nothing: {m}");
            total += n;
        }
        assert_eq!(m["received_packets"], total);
        assert!(total <= m["sent_packets"].as_u64().unwrap(), "{m}");
    }
    assert_eq!(pq["af_xdp"]["path"], "af_xdp_native");
    assert!(pq["af_xdp_over_recvmmsg"].as_f64().unwrap() > 0.0);
}

//! Solana catch-up end to end through the real binary, as an operator runs it: a generated
//! snapshot served by two `catchup solana snapshot serve` processes, a generated ledger of
//! the slots after it served by two `catchup solana serve-repair` processes (one lossy),
//! and `catchup solana sync --source … --repair-peer … --tip-slot …`, which must end with
//! the snapshot verified and the gap repaired. Every process is killed when the test ends.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const SNAPSHOT_SLOT: u64 = 200;
const GAP_SLOTS: u64 = 24;

fn catchup() -> Command {
    Command::new(env!("CARGO_BIN_EXE_catchup"))
}

/// Server processes, killed when dropped (also when the test panics).
#[derive(Default)]
struct Servers(Vec<(Child, BufReader<ChildStdout>)>);

impl Drop for Servers {
    fn drop(&mut self) {
        for (c, _) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Servers {
    /// Start `cmd` and return the first line it prints on stdout.
    fn start(&mut self, mut cmd: Command, what: &str) -> String {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let mut out = BufReader::new(child.stdout.take().expect("stdout piped"));
        let mut line = String::new();
        // The server prints its address at once; a server that fails closes stdout (EOF).
        out.read_line(&mut line).unwrap();
        self.0.push((child, out));
        assert!(
            !line.is_empty(),
            "{what} exited before saying where it listens"
        );
        line.trim().to_string()
    }
}

/// Run `cmd` to its end within `limit`, stdout and stderr into files under `dir`; a run
/// past the limit is killed and fails the test.
fn run_bounded(mut cmd: Command, dir: &Path, name: &str, limit: Duration) -> (i32, String, String) {
    let out_path = dir.join(format!("{name}.stdout"));
    let err_path = dir.join(format!("{name}.stderr"));
    let mut child = cmd
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{name} did not finish within {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&out_path).unwrap(),
        std::fs::read_to_string(&err_path).unwrap(),
    )
}

struct Net {
    _servers: Servers,
    sources: Vec<String>,
    /// `PUBKEY@ADDR` of the honest repair server, `ADDR` of the lossy one (its key is
    /// learnt from its ping).
    repair_peers: Vec<String>,
    leader: String,
}

fn start_net(work: &Path) -> Net {
    let snaps = work.join("snapshots");
    let out = catchup()
        .args([
            "solana",
            "snapshot",
            "generate",
            "--accounts",
            "4000",
            "--json",
        ])
        .args(["--slot", &SNAPSHOT_SLOT.to_string(), "--out"])
        .arg(&snaps)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "generate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut servers = Servers::default();
    let mut sources = Vec::new();
    for (i, rate) in ["4", "1"].iter().enumerate() {
        let mut cmd = catchup();
        cmd.args(["solana", "snapshot", "serve"]).arg(&snaps).args([
            "--listen",
            "127.0.0.1:0",
            "--rate-limit",
            rate,
        ]);
        let line = servers.start(cmd, &format!("snapshot source {i}"));
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("snapshot serve said {line:?}"));
        sources.push(format!("http://{addr}/"));
    }
    let mut repair_peers = Vec::new();
    let mut leader = String::new();
    for (i, profile) in [None, Some("lossy")].into_iter().enumerate() {
        let mut cmd = catchup();
        cmd.args(["solana", "serve-repair", "--listen", "127.0.0.1:0"])
            .args(["--generate-from", &(SNAPSHOT_SLOT + 1).to_string()])
            .args(["--generate-slots", &GAP_SLOTS.to_string()])
            .args(["--shreds-per-slot", "32", "--leader-seed", "5"])
            .args(["--identity-seed", &(40 + i).to_string()])
            .args(["--max-seconds", "300"]);
        if let Some(p) = profile {
            cmd.args(["--profile", p]);
        }
        let line = servers.start(cmd, &format!("serve-repair {i}"));
        let info: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("serve-repair said {line:?}: {e}"));
        let addr = info["listen"].as_str().unwrap().to_string();
        repair_peers.push(if i == 0 {
            format!("{}@{addr}", info["identity"].as_str().unwrap())
        } else {
            addr
        });
        leader = info["leader"]
            .as_str()
            .expect("generated ledger's leader")
            .to_string();
    }
    Net {
        _servers: servers,
        sources,
        repair_peers,
        leader,
    }
}

fn sync_cmd(net: &Net, datadir: &Path, tip_slot: u64) -> Command {
    let mut cmd = catchup();
    cmd.args([
        "solana",
        "sync",
        "--json",
        "--shards",
        "1",
        "--chunk-size",
        "128K",
    ])
    .arg("--datadir")
    .arg(datadir);
    for s in &net.sources {
        cmd.args(["--source", s]);
    }
    for p in &net.repair_peers {
        cmd.args(["--repair-peer", p]);
    }
    cmd.args(["--tip-slot", &tip_slot.to_string(), "--leader", &net.leader]);
    cmd
}

/// The final report: the last JSON line on stdout (progress lines come before it).
fn final_report(stdout: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON report in {stdout:?}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn sync_downloads_verifies_and_repairs_the_gap() {
    let work = tempfile::tempdir().unwrap();
    let net = start_net(work.path());
    let tip = SNAPSHOT_SLOT + GAP_SLOTS;
    let mut cmd = sync_cmd(&net, &work.path().join("data"), tip);
    cmd.args(["--repair-batch-slots", "8"]);
    let (code, stdout, stderr) = run_bounded(cmd, work.path(), "sync", Duration::from_secs(120));
    assert_eq!(code, 0, "sync failed:\n{stdout}\n{stderr}");
    // Progress after each batch of 8 slots, newest first: slots remaining 16, 8, 0.
    let remaining: Vec<u64> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["progress"]["repair"]["batch"].as_u64().map(|_| v))
        .map(|v| v["progress"]["repair"]["slots_remaining"].as_u64().unwrap())
        .collect();
    assert_eq!(remaining, vec![16, 8, 0], "{stdout}");
    let r = final_report(&stdout);
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(r["slot"], SNAPSHOT_SLOT);
    assert_eq!(r["verified"]["lt_hash_ok"], true, "{r}");
    assert_eq!(r["verified"]["capitalization_ok"], true, "{r}");
    assert_eq!(r["verified"]["accounts_live"], 4000, "{r}");
    let rep = &r["repair"];
    assert_eq!(rep["complete"], true, "{rep}");
    assert_eq!(rep["from_slot"], SNAPSHOT_SLOT + 1);
    assert_eq!(rep["to_slot"], tip);
    assert_eq!(rep["slots_repaired"], GAP_SLOTS, "{rep}");
    assert_eq!(rep["missing_count"], 0);
    assert!(rep["shreds"].as_u64().unwrap() >= GAP_SLOTS * 32, "{rep}");
    let peers = rep["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    assert!(peers[0]["answered"].as_u64().unwrap() > 0, "{rep}");
    assert_eq!(peers[0]["invalid"], 0, "{rep}");
}

#[test]
fn sync_exits_nonzero_naming_slots_it_could_not_repair() {
    let work = tempfile::tempdir().unwrap();
    let net = start_net(work.path());
    // The servers have no shreds past SNAPSHOT_SLOT + GAP_SLOTS.
    let tip = SNAPSHOT_SLOT + GAP_SLOTS + 3;
    let mut cmd = sync_cmd(&net, &work.path().join("data"), tip);
    cmd.args(["--repair-timeout-secs", "6"]);
    let (code, stdout, stderr) = run_bounded(cmd, work.path(), "sync", Duration::from_secs(120));
    assert_ne!(code, 0, "{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let r = final_report(&stdout);
    assert_eq!(r["complete"], true, "the snapshot itself verified: {r}");
    let rep = &r["repair"];
    assert_eq!(rep["complete"], false, "{rep}");
    let missing: Vec<u64> = rep["missing_slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (SNAPSHOT_SLOT + GAP_SLOTS + 1..=tip).collect();
    assert_eq!(missing, want, "{rep}");
    assert!(stderr.contains("INCOMPLETE"), "{stderr}");
    assert!(stderr.contains(&format!("{}", tip)), "{stderr}");
}

#[test]
fn sync_repair_flags_are_checked_before_downloading() {
    let work = tempfile::tempdir().unwrap();
    let dd = work.path().join("data");
    let cases: &[(&[&str], &str)] = &[
        (&["--repair-peer", "127.0.0.1:9"], "--tip-slot"),
        (
            &[
                "--repair-peer",
                "127.0.0.1:9",
                "--tip-slot",
                "5",
                "--verify",
                "stream",
            ],
            "--leader",
        ),
        (&["--tip-slot", "5"], "--repair-peer"),
        (&["--repair-peer", "nonsense"], "peer address"),
    ];
    for (extra, want) in cases {
        let out = catchup()
            .args([
                "solana",
                "sync",
                "--source",
                "http://127.0.0.1:1/",
                "--datadir",
            ])
            .arg(&dd)
            .args(*extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?}");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
    }
}

/// Root and iproute2 for the AF_XDP run; under `CI=true` their absence fails the test.
fn netns_requirements_met() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    // The binary under test carries the XDP program only when its build found clang and
    // libbpf-dev.
    let xdp = catchup_io::xdp::program_built();
    if root && ip && xdp {
        return true;
    }
    let why = format!(
        "needs root ({root}), iproute2 ({ip}) and the XDP program built in ({xdp}{})",
        if xdp {
            ""
        } else {
            ": install clang and libbpf-dev, then rebuild"
        }
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("AF_XDP catch-up test cannot run under CI: {why}");
    }
    skip_note!("skipping AF_XDP catch-up test: {why}");
    false
}

/// The same catch-up across a veth pair between two network namespaces: sources and repair
/// servers on one side, `sync --repair-xdp` on the other, repairing over AF_XDP (generic
/// mode) on its veth.
#[test]
fn sync_repairs_the_gap_over_af_xdp_across_a_veth_pair() {
    if !netns_requirements_met() {
        return;
    }
    let pair = catchup::solana::repair::netns::VethPair::create("s", 223).expect("veth pair");
    let work = tempfile::tempdir().unwrap();
    let snaps = work.path().join("snapshots");
    let out = catchup()
        .args([
            "solana",
            "snapshot",
            "generate",
            "--accounts",
            "2000",
            "--json",
        ])
        .args(["--slot", &SNAPSHOT_SLOT.to_string(), "--out"])
        .arg(&snaps)
        .output()
        .unwrap();
    assert!(out.status.success());
    let in_a = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &pair.a, env!("CARGO_BIN_EXE_catchup")])
            .args(args);
        c
    };
    let ip_a = pair.ip_a().to_string();
    let mut servers = Servers::default();
    let mut serve = in_a(&["solana", "snapshot", "serve"]);
    serve.arg(&snaps).args(["--listen", &format!("{ip_a}:0")]);
    let line = servers.start(serve, "snapshot source");
    let source = format!("http://{}/", line.trim_start_matches("listening on "));
    let from = (SNAPSHOT_SLOT + 1).to_string();
    let slots = GAP_SLOTS.to_string();
    let line = servers.start(
        in_a(&[
            "solana",
            "serve-repair",
            "--listen",
            &format!("{ip_a}:0"),
            "--generate-from",
            &from,
            "--generate-slots",
            &slots,
            "--shreds-per-slot",
            "32",
            "--leader-seed",
            "5",
            "--max-seconds",
            "300",
        ]),
        "serve-repair",
    );
    let info: serde_json::Value = serde_json::from_str(&line).unwrap();
    let tip = SNAPSHOT_SLOT + GAP_SLOTS;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &pair.b, env!("CARGO_BIN_EXE_catchup")])
        .args([
            "solana", "sync", "--json", "--shards", "1", "--source", &source,
        ])
        .arg("--datadir")
        .arg(work.path().join("data"))
        .args(["--repair-peer", info["listen"].as_str().unwrap()])
        .args(["--tip-slot", &tip.to_string()])
        .args(["--leader", info["leader"].as_str().unwrap()])
        .args(["--repair-xdp", &pair.veth_b, "--repair-xdp-port", "47150"]);
    let (code, stdout, stderr) =
        run_bounded(cmd, work.path(), "sync-xdp", Duration::from_secs(120));
    assert_eq!(code, 0, "sync failed:\n{stdout}\n{stderr}");
    let r = final_report(&stdout);
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(r["verified"]["lt_hash_ok"], true, "{r}");
    let rep = &r["repair"];
    assert_eq!(rep["paths"], serde_json::json!(["xdp"]), "{rep}");
    assert!(rep["fallback_reason"].is_null(), "{rep}");
    assert_eq!(rep["complete"], true, "{rep}");
    assert_eq!(rep["slots_repaired"], GAP_SLOTS, "{rep}");
    drop(servers);
}

//! Gossip end to end on loopback, with real processes: a 5-node cluster converges, bad
//! packets are counted and dropped, and `solana sync` trusts only what known validators
//! advertise (a forging node is ignored, a forged archive under a trusted name is caught
//! by the hash check and its source named). Every process is bounded (`--max-seconds`)
//! and killed when the test ends.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use catchup_gossip::contact_info::{ContactInfo, SOCKET_TAG_GOSSIP};
use catchup_gossip::crds::{CrdsData, CrdsValue};
use catchup_gossip::ed25519_dalek::SigningKey;
use catchup_gossip::protocol::Protocol;
use catchup_gossip::Pubkey;

fn catchup() -> Command {
    Command::new(env!("CARGO_BIN_EXE_catchup"))
}

/// Children killed on drop; each one's stdout lines go to a channel tagged with its index.
struct Procs {
    children: Vec<Child>,
    lines: mpsc::Sender<(usize, String)>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Procs {
    fn new() -> (Procs, mpsc::Receiver<(usize, String)>) {
        let (tx, rx) = mpsc::channel();
        (
            Procs {
                children: Vec::new(),
                lines: tx,
            },
            rx,
        )
    }

    /// Start `cmd`; returns its index and its first stdout line (its address).
    fn start(&mut self, mut cmd: Command, what: &str) -> (usize, String) {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert!(
            !first.is_empty(),
            "{what} exited before printing its address"
        );
        let index = self.children.len();
        self.children.push(child);
        let tx = self.lines.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send((index, line)).is_err() {
                    break;
                }
            }
        });
        (index, first.trim().to_string())
    }
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.json"));
    let out = catchup()
        .args(["solana", "keygen", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        path,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}

fn generate(out: &Path, slot: u64, seed: u64) -> (String, String) {
    std::fs::create_dir_all(out).unwrap();
    let o = catchup()
        .args([
            "solana",
            "snapshot",
            "generate",
            "--accounts",
            "1500",
            "--json",
        ])
        .args([
            "--slot",
            &slot.to_string(),
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    let path = v["path"].as_str().unwrap().to_string();
    let hash = v["lt_hash"].as_str().unwrap().to_string();
    (path, hash)
}

/// `snapshot serve DIR` on a free port; returns its address.
fn serve(procs: &mut Procs, dir: &Path) -> String {
    let mut cmd = catchup();
    cmd.args(["solana", "snapshot", "serve"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"]);
    let (_, line) = procs.start(cmd, "snapshot serve");
    line.strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("snapshot serve said {line:?}"))
        .to_string()
}

/// A gossip node on a free port; returns (index, gossip address).
fn gossip_node(
    procs: &mut Procs,
    key: &Path,
    entry: Option<&str>,
    extra: &[&str],
) -> (usize, String) {
    let mut cmd = catchup();
    cmd.args(["solana", "gossip-node", "--identity"])
        .arg(key)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--json",
            "--progress-interval-s",
            "1",
        ])
        .args(["--max-seconds", "90"])
        .args(extra);
    if let Some(e) = entry {
        cmd.args(["--entrypoint", e]);
    }
    let (i, line) = procs.start(cmd, "gossip-node");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("gossip-node said {line:?}: {e}"));
    (i, v["gossip"].as_str().unwrap().to_string())
}

#[test]
fn five_nodes_converge_and_bad_packets_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    generate(&snaps, 100, 1);
    let (mut procs, rx) = Procs::new();
    let mut gossip = Vec::new();
    for n in 0..5 {
        let (key, _) = keygen(dir.path(), &format!("n{n}"));
        let entry = gossip.first().cloned();
        let rpc = format!("127.0.0.1:{}", 20000 + n);
        let (_, addr) = gossip_node(
            &mut procs,
            &key,
            entry.as_deref(),
            &[
                "--advertise-snapshots",
                snaps.to_str().unwrap(),
                "--rpc",
                &rpc,
                "--shred-version",
                "42",
            ],
        );
        gossip.push(addr);
    }
    // Bad packets at the entrypoint: truncated, oversize, garbage, a bad signature.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut bad = vec![
        vec![4u8, 0, 0],
        vec![0u8; 1300],
        b"not gossip at all".to_vec(),
    ];
    let mut ping = vec![4u8, 0, 0, 0];
    ping.extend_from_slice(&[7u8; 32 + 32 + 64]);
    bad.push(ping);
    let sent_bad = 10 * bad.len() as u64;
    for _ in 0..10 {
        for b in &bad {
            sock.send_to(b, &gossip[0]).unwrap();
        }
    }
    // Well-signed values the node must drop: a wallclock an hour ahead, another cluster's
    // shred version.
    let stranger = SigningKey::from_bytes(&[9u8; 32]);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let stranger_addr: std::net::SocketAddr = sock.local_addr().unwrap();
    let value = |wallclock: u64, shred_version: u16| {
        let mut info = ContactInfo::new(Pubkey::of(&stranger), wallclock, wallclock, shred_version);
        info.set_socket(SOCKET_TAG_GOSSIP, stranger_addr).unwrap();
        CrdsValue::new_signed(CrdsData::ContactInfo(info), &stranger)
    };
    let push = Protocol::PushMessage(
        Pubkey::of(&stranger),
        vec![value(now_ms + 3_600_000, 42), value(now_ms, 7)],
    )
    .encode();
    sock.send_to(&push, &gossip[0]).unwrap();
    let mut latest = vec![serde_json::Value::Null; 5];
    let deadline = Instant::now() + Duration::from_secs(60);
    let converged = |latest: &[serde_json::Value]| {
        latest
            .iter()
            .all(|p| p["peers"] == 4 && p["snapshot_hashes"] == 4)
            && latest[0]["packets_rejected"].as_u64().unwrap_or(0) >= sent_bad
            && latest[0]["values_rejected"].as_u64().unwrap_or(0) >= 2
    };
    while !converged(&latest) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "not converged in 60 s: {latest:#?}");
        if let Ok((i, line)) = rx.recv_timeout(left) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if !v["progress"].is_null() {
                    latest[i] = v["progress"].clone();
                }
            }
        }
    }
    // Every node is still running after the bad packets.
    for c in &mut procs.children {
        assert!(c.try_wait().unwrap().is_none(), "a gossip node exited");
    }
}

fn sync_cmd(datadir: &Path) -> Command {
    let mut cmd = catchup();
    cmd.args([
        "solana",
        "sync",
        "--json",
        "--download-shards",
        "1",
        "--shards",
        "1",
    ])
    .args(["--gossip-listen", "127.0.0.1:0", "--gossip-timeout-s", "30"])
    .arg("--datadir")
    .arg(datadir);
    cmd
}

fn run(mut cmd: Command, limit: Duration) -> (i32, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("command ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two known validators advertise and serve the real archive; a forging node (its own
/// key) advertises and serves a newer forged one and pushes adverts in others' names; a
/// third node serves a forged archive under the trusted name without advertising.
#[test]
fn sync_through_gossip_trusts_known_validators_only() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let (real_path, real_hash) = generate(&real, 100, 1);
    let forged = dir.path().join("forged");
    generate(&forged, 200, 9);
    // The forged accounts under the trusted name.
    let (forged100, forged_hash) = generate(&dir.path().join("tmp"), 100, 9);
    let liar = dir.path().join("liar");
    std::fs::create_dir_all(&liar).unwrap();
    let trusted_name = Path::new(&real_path).file_name().unwrap();
    std::fs::copy(&forged100, liar.join(trusted_name)).unwrap();

    // A stale known validator: it holds the real archive and an older one, and advertises
    // the older (profile stale).
    let stale = dir.path().join("stale");
    generate(&stale, 50, 3);
    std::fs::copy(&real_path, stale.join(trusted_name)).unwrap();

    let (mut procs, _rx) = Procs::new();
    let (ka, pa) = keygen(dir.path(), "a");
    let (kb, pb) = keygen(dir.path(), "b");
    let (ks, ps) = keygen(dir.path(), "s");
    let (kf, pf) = keygen(dir.path(), "f");
    let (km, _) = keygen(dir.path(), "m");
    let rpc_a = serve(&mut procs, &real);
    let rpc_b = serve(&mut procs, &real);
    let rpc_s = serve(&mut procs, &stale);
    let rpc_f = serve(&mut procs, &forged);
    let rpc_m = serve(&mut procs, &liar);
    let real_s = real.to_str().unwrap();
    let (_, entry) = gossip_node(
        &mut procs,
        &ka,
        None,
        &["--advertise-snapshots", real_s, "--rpc", &rpc_a],
    );
    gossip_node(
        &mut procs,
        &kb,
        Some(&entry),
        &["--advertise-snapshots", real_s, "--rpc", &rpc_b],
    );
    gossip_node(
        &mut procs,
        &ks,
        Some(&entry),
        &[
            "--advertise-snapshots",
            stale.to_str().unwrap(),
            "--rpc",
            &rpc_s,
            "--profile",
            "stale",
        ],
    );
    gossip_node(
        &mut procs,
        &kf,
        Some(&entry),
        &[
            "--advertise-snapshots",
            forged.to_str().unwrap(),
            "--rpc",
            &rpc_f,
            "--profile",
            "forging",
        ],
    );
    gossip_node(&mut procs, &km, Some(&entry), &["--rpc", &rpc_m]);

    let data = dir.path().join("data");
    let mut cmd = sync_cmd(&data);
    let known = [pa.clone(), pb.clone(), ps.clone()];
    let sync_args = |cmd: &mut Command| {
        cmd.args(["--entrypoint", &entry, "--min-agree", "2"]);
        for k in &known {
            cmd.args(["--known-validator", k]);
        }
    };
    sync_args(&mut cmd);
    let (code, out, err) = run(cmd, Duration::from_secs(120));
    assert_eq!(code, 0, "{err}\n{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["complete"], true);
    assert_eq!(v["discovery"], "gossip");
    assert_eq!(v["snapshot_hash_ok"], true);
    assert_eq!(v["identity"], "verified");
    assert_eq!(v["slot"], 100, "the forger's newer slot is not taken");
    assert_eq!(v["trusted_snapshot"]["hash"], real_hash.as_str());
    let mut want = vec![pa.clone(), pb.clone()];
    want.sort();
    assert_eq!(
        v["trusted_by"],
        serde_json::json!(want),
        "the stale validator's older slot is not taken"
    );
    assert_eq!(v["verified"]["lt_hash_computed"], real_hash.as_str());
    let ignored = v["gossip"]["choice"]["ignored"].to_string();
    assert!(
        ignored.contains(&pf),
        "the forging node's advert is ignored: {ignored}"
    );
    // Sources: the two known validators' RPCs; the forger does not serve the trusted
    // name, the liar serves another archive under it.
    let used: Vec<&str> = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["url"].as_str().unwrap())
        .collect();
    assert!(
        used.iter()
            .all(|u| u.contains(&rpc_a) || u.contains(&rpc_b) || u.contains(&rpc_s)),
        "{used:?}"
    );
    let rejected = format!("{} {}", v["bad_sources"], v["forged_sources"]);
    assert!(rejected.contains(&rpc_f), "{rejected}");
    assert!(rejected.contains(&rpc_m), "{rejected}");
    assert_ne!(forged_hash, real_hash);

    // Again: the full already in the data directory, still advertised, is reused.
    let mut cmd = sync_cmd(&data);
    sync_args(&mut cmd);
    let (code, out, err) = run(cmd, Duration::from_secs(120));
    assert_eq!(code, 0, "{err}\n{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["snapshot_hash_ok"], true);
    assert_eq!(v["chunks_fetched"], 0, "{v}");
    assert_eq!(v["chunks_resumed"], v["chunks_total"]);
}

/// The only server of the trusted name serves forged accounts: the hash check fails and
/// the error names the source and both hashes.
#[test]
fn a_forged_archive_under_a_trusted_name_is_caught_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let (real_path, real_hash) = generate(&real, 100, 1);
    let (forged100, forged_hash) = generate(&dir.path().join("tmp"), 100, 9);
    let liar = dir.path().join("liar");
    std::fs::create_dir_all(&liar).unwrap();
    std::fs::copy(
        &forged100,
        liar.join(Path::new(&real_path).file_name().unwrap()),
    )
    .unwrap();
    let (mut procs, _rx) = Procs::new();
    let (kk, pk) = keygen(dir.path(), "k");
    let (km, _) = keygen(dir.path(), "m");
    let rpc_m = serve(&mut procs, &liar);
    // The known validator advertises the real hash; its RPC serves nothing.
    let dead_rpc = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let (_, entry) = gossip_node(
        &mut procs,
        &kk,
        None,
        &[
            "--advertise-snapshots",
            real.to_str().unwrap(),
            "--rpc",
            &dead_rpc,
        ],
    );
    gossip_node(&mut procs, &km, Some(&entry), &["--rpc", &rpc_m]);
    let data = dir.path().join("data");
    let mut cmd = sync_cmd(&data);
    cmd.args(["--entrypoint", &entry, "--known-validator", &pk]);
    let (code, out, err) = run(cmd, Duration::from_secs(120));
    assert_ne!(code, 0, "{out}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("snapshot hash mismatch"), "{err}");
    assert!(last.contains(&rpc_m), "the source is named: {last}");
    assert!(
        last.contains(&real_hash) && last.contains(&forged_hash),
        "{last}"
    );
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["complete"], false);
    assert!(v["forged_sources"].to_string().contains(&rpc_m), "{v}");
}

#[test]
fn require_trusted_refuses_an_unverified_snapshot_and_keygen_writes_a_cli_keypair() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(
        {
            let mut c = sync_cmd(&dir.path().join("d"));
            c.args(["--source", "http://127.0.0.1:9/", "--require-trusted"]);
            c
        },
        Duration::from_secs(30),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("--require-trusted") && err.contains("--known-validator"),
        "{err}"
    );
    let (path, pubkey) = keygen(dir.path(), "id");
    let bytes: Vec<u8> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(bytes.len(), 64);
    assert_eq!(bs58_encode(&bytes[32..]), pubkey);
    // An existing file is not overwritten.
    let again = catchup()
        .args(["solana", "keygen", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

fn bs58_encode(bytes: &[u8]) -> String {
    catchup_solana::base58(bytes)
}

/// The repair peers of a sync through gossip are the serve-repair addresses the nodes
/// advertise (the serve-repair server answering with the node's own identity).
#[test]
fn sync_through_gossip_repairs_from_advertised_serve_repair_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let (_, real_hash) = generate(&real, 100, 1);
    let (mut procs, _rx) = Procs::new();
    let (kk, pk) = keygen(dir.path(), "k");
    let rpc = serve(&mut procs, &real);
    let mut cmd = catchup();
    cmd.args(["solana", "serve-repair", "--listen", "127.0.0.1:0"])
        .args(["--generate-from", "101", "--generate-slots", "6"])
        .args([
            "--shreds-per-slot",
            "8",
            "--leader-seed",
            "5",
            "--max-seconds",
            "90",
        ])
        .arg("--identity")
        .arg(&kk);
    let (_, line) = procs.start(cmd, "serve-repair");
    let info: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        info["identity"],
        pk.as_str(),
        "serve-repair runs as the node's identity"
    );
    let repair_addr = info["listen"].as_str().unwrap().to_string();
    let leader = info["leader"].as_str().unwrap().to_string();
    let (_, entry) = gossip_node(
        &mut procs,
        &kk,
        None,
        &[
            "--advertise-snapshots",
            real.to_str().unwrap(),
            "--rpc",
            &rpc,
            "--serve-repair",
            &repair_addr,
        ],
    );
    let sync = || {
        let mut cmd = sync_cmd(&dir.path().join("data"));
        cmd.args(["--entrypoint", &entry, "--known-validator", &pk])
            .args([
                "--tip-slot",
                "106",
                "--leader",
                &leader,
                "--repair-timeout-secs",
                "60",
            ]);
        let (code, out, err) = run(cmd, Duration::from_secs(120));
        assert_eq!(code, 0, "{err}\n{out}");
        serde_json::from_str::<serde_json::Value>(out.lines().last().unwrap()).unwrap()
    };
    let v = sync();
    assert_eq!(v["snapshot_hash_ok"], true);
    assert_eq!(v["trusted_snapshot"]["hash"], real_hash.as_str());
    assert_eq!(v["repair"]["complete"], true, "{}", v["repair"]);
    assert_eq!(v["repair"]["shreds"], 6 * 8, "{}", v["repair"]);
    assert_eq!(v["repair"]["shreds_loaded"], 0, "{}", v["repair"]);
    assert!(
        v["repair"].to_string().contains(&repair_addr),
        "{}",
        v["repair"]
    );
    // Again on the same data directory: the repaired shreds are kept there (one store per
    // repair shard), verified again when loaded, and nothing is requested.
    let v = sync();
    assert_eq!(v["repair"]["complete"], true, "{}", v["repair"]);
    assert_eq!(v["repair"]["slots_loaded"], 6, "{}", v["repair"]);
    assert_eq!(v["repair"]["shreds_loaded"], 6 * 8, "{}", v["repair"]);
    assert_eq!(v["repair"]["shreds"], 0, "{}", v["repair"]);
    assert_eq!(v["repair"]["requests_for_loaded"], 0, "{}", v["repair"]);
}

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("CATCHUP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("solana/snapshots");
    if dir.join(FIXTURE_FULL).exists() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("snapshot fixtures missing at {}", dir.display());
    }
    eprintln!("skipped: snapshot fixtures missing at {}", dir.display());
    None
}

const FIXTURE_FULL: &str = "snapshot-1-5pgMpQj4MZYWauD1VnoNfmGAdUQCe6VVCSCQMNbDoxf7.tar.zst";
const FIXTURE_INC: &str =
    "incremental-snapshot-1-4-43FT6mnmRW9XbxpCzqH3ogYexHXboG7d8vmf3gBLvLrR.tar.zst";

/// A known validator advertises a real Agave full snapshot and an incremental on it:
/// `--incremental` fetches the full, then the incremental, verified on top of it.
#[test]
fn sync_through_gossip_fetches_the_trusted_incremental_on_the_full() {
    let Some(fx) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    std::fs::create_dir_all(&snaps).unwrap();
    for f in [FIXTURE_FULL, FIXTURE_INC] {
        std::fs::copy(fx.join(f), snaps.join(f)).unwrap();
    }
    let (mut procs, _rx) = Procs::new();
    let (kk, pk) = keygen(dir.path(), "k");
    let rpc = serve(&mut procs, &snaps);
    let (_, entry) = gossip_node(
        &mut procs,
        &kk,
        None,
        &[
            "--advertise-snapshots",
            snaps.to_str().unwrap(),
            "--rpc",
            &rpc,
        ],
    );
    let mut cmd = sync_cmd(&dir.path().join("data"));
    cmd.args([
        "--entrypoint",
        &entry,
        "--known-validator",
        &pk,
        "--incremental",
        "--freshness-check-s",
        "0",
    ]);
    let (code, out, err) = run(cmd, Duration::from_secs(120));
    assert_eq!(code, 0, "{err}\n{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["archive"], FIXTURE_INC);
    assert_eq!(v["snapshot_hash_ok"], true);
    assert_eq!(v["identity"], "verified");
    assert_eq!(v["full_snapshot"]["archive"], FIXTURE_FULL);
    assert_eq!(v["full_snapshot"]["name_hash_ok"], true);
    assert_eq!(v["trusted_incremental"]["slot"], 4);
    assert_eq!(
        v["trusted_incremental"]["trusted_by"],
        serde_json::json!([pk])
    );
    assert_eq!(v["verified"]["slot"], 4);
    assert_eq!(v["verified"]["base_slot"], 1);
    assert!(dir.path().join("data/incremental/1-4").is_dir());
    // Gossip was asked again after the full: the same incremental is still the newest on
    // it, and the cluster did not move on.
    let f = &v["freshness"];
    assert_eq!(f["rechecked"], true, "{v}");
    assert_eq!(f["full_slot"], 1);
    assert_eq!(f["cluster_moved_on"], false);
    assert_eq!(f["chosen"]["slot"], 4);
    assert_eq!(f["newer_incremental"], false);
}

/// A gossip node advertises archives that appear in its directory after it started: a
/// sync started before the archive existed finds it.
#[test]
fn a_node_advertises_an_archive_made_after_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let made = dir.path().join("made");
    let (path, hash) = generate(&made, 100, 1);
    let snaps = dir.path().join("snaps");
    std::fs::create_dir_all(&snaps).unwrap();
    let (mut procs, _rx) = Procs::new();
    let (kk, pk) = keygen(dir.path(), "k");
    let rpc = serve(&mut procs, &snaps);
    let (_, entry) = gossip_node(
        &mut procs,
        &kk,
        None,
        &[
            "--advertise-snapshots",
            snaps.to_str().unwrap(),
            "--rpc",
            &rpc,
        ],
    );
    let mut cmd = sync_cmd(&dir.path().join("data"));
    cmd.args(["--entrypoint", &entry, "--known-validator", &pk]);
    let sync = std::thread::spawn(move || run(cmd, Duration::from_secs(120)));
    std::thread::sleep(Duration::from_secs(2));
    let name = Path::new(&path).file_name().unwrap();
    // Written under a temporary name, then renamed: the node never sees half a file.
    std::fs::copy(&path, snaps.join("partial.tmp")).unwrap();
    std::fs::rename(snaps.join("partial.tmp"), snaps.join(name)).unwrap();
    let (code, out, err) = sync.join().unwrap();
    assert_eq!(code, 0, "{err}\n{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["trusted_snapshot"]["hash"], hash.as_str());
    assert_eq!(v["snapshot_hash_ok"], true);
}

/// Two nodes serve the same forged archive under the trusted name (the larger source
/// group, so it is tried first); one known validator serves the real one. The forged
/// group fails the hash check, is dropped and named, and the sync completes from the
/// real source.
#[test]
fn a_larger_forged_group_is_dropped_and_the_real_archive_synced() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let (real_path, real_hash) = generate(&real, 100, 1);
    let (forged100, _) = generate(&dir.path().join("tmp"), 100, 9);
    let liar = dir.path().join("liar");
    std::fs::create_dir_all(&liar).unwrap();
    std::fs::copy(
        &forged100,
        liar.join(Path::new(&real_path).file_name().unwrap()),
    )
    .unwrap();
    let (mut procs, _rx) = Procs::new();
    let (kk, pk) = keygen(dir.path(), "k");
    let rpc_k = serve(&mut procs, &real);
    let (_, entry) = gossip_node(
        &mut procs,
        &kk,
        None,
        &[
            "--advertise-snapshots",
            real.to_str().unwrap(),
            "--rpc",
            &rpc_k,
        ],
    );
    let mut liars = Vec::new();
    for n in 0..2 {
        let (key, _) = keygen(dir.path(), &format!("liar{n}"));
        let rpc = serve(&mut procs, &liar);
        gossip_node(&mut procs, &key, Some(&entry), &["--rpc", &rpc]);
        liars.push(rpc);
    }
    let mut cmd = sync_cmd(&dir.path().join("data"));
    cmd.args(["--entrypoint", &entry, "--known-validator", &pk]);
    let (code, out, err) = run(cmd, Duration::from_secs(120));
    assert_eq!(code, 0, "{err}\n{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["snapshot_hash_ok"], true);
    assert_eq!(v["identity"], "verified");
    assert_eq!(v["verified"]["lt_hash_computed"], real_hash.as_str());
    let forged = v["forged_sources"].to_string();
    for l in &liars {
        assert!(forged.contains(l), "{l} named: {forged}");
    }
    assert!(forged.contains("not the hash its name gives"), "{forged}");
    let used = v["sources"].to_string();
    assert!(
        used.contains(&rpc_k) && !liars.iter().any(|l| used.contains(l)),
        "{used}"
    );
}

/// Without --leader, repaired shreds are checked against each slot's leader in the
/// schedule drawn from the snapshot bank's epoch stakes: a bank staking the ledger's
/// leader repairs, a bank staking another node rejects every shred.
#[test]
fn repaired_shreds_are_checked_against_the_snapshots_leader_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let (mut procs, _rx) = Procs::new();
    let mut cmd = catchup();
    cmd.args(["solana", "serve-repair", "--listen", "127.0.0.1:0"])
        .args(["--generate-from", "101", "--generate-slots", "6"])
        .args([
            "--shreds-per-slot",
            "8",
            "--leader-seed",
            "5",
            "--max-seconds",
            "90",
        ]);
    let (_, line) = procs.start(cmd, "serve-repair");
    let info: serde_json::Value = serde_json::from_str(&line).unwrap();
    let repair_addr = info["listen"].as_str().unwrap().to_string();
    let leader = info["leader"].as_str().unwrap().to_string();
    let (_, other) = keygen(dir.path(), "other");
    for (name, staked, want_code) in [("right", &leader, 0), ("wrong", &other, 2)] {
        let snaps = dir.path().join(name);
        let o = catchup()
            .args([
                "solana",
                "snapshot",
                "generate",
                "--accounts",
                "500",
                "--slot",
                "100",
            ])
            .args(["--leader", staked, "--out"])
            .arg(&snaps)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let rpc = serve(&mut procs, &snaps);
        let mut cmd = sync_cmd(&dir.path().join(format!("data-{name}")));
        cmd.args(["--source", &format!("http://{rpc}/")])
            .args(["--repair-peer", &repair_addr, "--tip-slot", "106"])
            .args(["--repair-timeout-secs", "8"]);
        let (code, out, err) = run(cmd, Duration::from_secs(120));
        assert_eq!(code, want_code, "{name}: {err}\n{out}");
        let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(v["complete"], true, "{name}: the snapshot verified");
        assert_eq!(
            v["repair"]["complete"],
            want_code == 0,
            "{name}: {}",
            v["repair"]
        );
    }
}

/// `snapshot generate --incremental-of FULL --slot SLOT`; returns the archive's path.
fn generate_incremental(full: &str, out: &Path, slot: u64) -> PathBuf {
    let o = catchup()
        .args([
            "solana",
            "snapshot",
            "generate",
            "--json",
            "--incremental-of",
        ])
        .arg(full)
        .args(["--slot", &slot.to_string(), "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    PathBuf::from(v["path"].as_str().unwrap())
}

/// Freshness: two known validators advertise a full F and an incremental I1 on it, served
/// at a limited rate so the full takes seconds. While the full downloads they start
/// advertising a newer incremental I2 on the same F. After the full, the sync asks gossip
/// again and fetches only I2: F is downloaded once, I1 never, and I2 is verified on F.
/// What a freshness run leaves for the assertions.
struct FreshnessRun {
    dir: tempfile::TempDir,
    report: serde_json::Value,
    full_name: String,
    full_size: u64,
    i1_name: String,
    known: Vec<String>,
}

/// Two known validators advertise a full F (slot 100, 6000 accounts) and an incremental I1
/// (slot 110) on it, served at a limited rate so the full takes seconds; `during(snaps,
/// full, made)` runs once the sync has begun downloading F (discovery chose F and I1) and
/// changes what the validators hold. Returns the sync's report.
fn slow_full_sync(during: impl FnOnce(&Path, &str, &Path)) -> FreshnessRun {
    let dir = tempfile::tempdir().unwrap();
    let made = dir.path().join("made");
    let (full, _) = {
        std::fs::create_dir_all(&made).unwrap();
        let o = catchup()
            .args(["solana", "snapshot", "generate", "--json"])
            .args(["--accounts", "6000", "--slot", "100", "--out"])
            .arg(&made)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
        (
            v["path"].as_str().unwrap().to_string(),
            v["lt_hash"].clone(),
        )
    };
    let i1 = generate_incremental(&full, &made, 110);
    let full_name = Path::new(&full).file_name().unwrap().to_owned();
    let i1_name = i1.file_name().unwrap().to_owned();
    let full_size = std::fs::metadata(&full).unwrap().len();
    let snaps = dir.path().join("snaps");
    std::fs::create_dir_all(&snaps).unwrap();
    std::fs::copy(&full, snaps.join(&full_name)).unwrap();
    std::fs::copy(&i1, snaps.join(&i1_name)).unwrap();

    let (mut procs, _rx) = Procs::new();
    // Two rate-limited servers of the same directory: the full takes several seconds.
    let serve_slow = |procs: &mut Procs| {
        let mut cmd = catchup();
        cmd.args(["solana", "snapshot", "serve"]).arg(&snaps).args([
            "--listen",
            "127.0.0.1:0",
            "--rate-limit",
            "0.05",
        ]);
        let (_, line) = procs.start(cmd, "snapshot serve");
        line.strip_prefix("listening on ").unwrap().to_string()
    };
    let rpc1 = serve_slow(&mut procs);
    let rpc2 = serve_slow(&mut procs);
    let (k1, pk1) = keygen(dir.path(), "k1");
    let (k2, pk2) = keygen(dir.path(), "k2");
    let advertise = |rpc: &str| {
        vec![
            "--advertise-snapshots".to_string(),
            snaps.to_str().unwrap().to_string(),
            "--rpc".to_string(),
            rpc.to_string(),
        ]
    };
    let a1 = advertise(&rpc1);
    let a1: Vec<&str> = a1.iter().map(String::as_str).collect();
    let (_, entry) = gossip_node(&mut procs, &k1, None, &a1);
    let a2 = advertise(&rpc2);
    let a2: Vec<&str> = a2.iter().map(String::as_str).collect();
    gossip_node(&mut procs, &k2, Some(&entry), &a2);

    let data = dir.path().join("data");
    let mut cmd = sync_cmd(&data);
    cmd.args([
        "--entrypoint",
        &entry,
        "--known-validator",
        &pk1,
        "--known-validator",
        &pk2,
        "--min-agree",
        "2",
        "--incremental",
        "--freshness-check-s",
        "1",
    ]);
    let sync = std::thread::spawn(move || run(cmd, Duration::from_secs(90)));
    // The full's download has begun (discovery chose F and I1): now the validators make I2.
    let start = Instant::now();
    while !data.join("download").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60) && !sync.is_finished(),
            "the full snapshot's download did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    during(&snaps, &full, &made);
    let (code, out, err) = sync.join().unwrap();
    assert_eq!(code, 0, "{err}\n{out}");
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    drop(procs);
    FreshnessRun {
        dir,
        report,
        full_name: full_name.to_str().unwrap().to_string(),
        full_size,
        i1_name: i1_name.to_str().unwrap().to_string(),
        known: vec![pk1, pk2],
    }
}

/// `path` into `dir` under its own name, written aside and renamed (a node never lists
/// half a file).
fn publish(path: &Path, dir: &Path) {
    let tmp = dir.join("publish.tmp");
    std::fs::copy(path, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(path.file_name().unwrap())).unwrap();
}

/// The full was fetched once, every byte of it once, and verified against its name.
fn assert_full_fetched_once(r: &FreshnessRun) {
    let v = &r.report;
    let fs = &v["full_snapshot"];
    eprintln!("full snapshot: {fs}\nfreshness: {}", v["freshness"]);
    assert_eq!(fs["archive"], r.full_name.as_str(), "{v}");
    assert_eq!(fs["name_hash_ok"], true);
    assert_eq!(fs["bytes_fetched"], r.full_size, "{v}");
    assert_eq!(fs["chunks_resumed"], 0);
    assert_eq!(fs["audit_bytes_refetched"], 0);
    let f = &v["freshness"];
    assert_eq!(f["rechecked"], true, "{v}");
    assert!(f["age_ms"].as_u64().unwrap() >= fs["download_ms"].as_u64().unwrap());
    assert_eq!(f["full_slot"], 100);
    assert_eq!(f["incremental_before"], 110);
    assert_eq!(v["verified"]["base_slot"], 100);
    assert_eq!(v["verified"]["name_hash_ok"], true);
    assert_eq!(v["snapshot_hash_ok"], true);
    assert_eq!(v["identity"], "verified");
    let mut by: Vec<String> = v["trusted_incremental"]["trusted_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    by.sort();
    let mut want = r.known.clone();
    want.sort();
    assert_eq!(by, want);
}

/// Freshness: while the full downloads, the known validators start advertising a newer
/// incremental I2 on the same F. After the full, the sync asks gossip again and fetches
/// only I2: F is downloaded once, I1 never, and I2 is verified on F.
#[test]
fn after_a_slow_full_the_newer_incremental_on_it_is_fetched_not_the_full_again() {
    let i2 = std::cell::RefCell::new(PathBuf::new());
    let r = slow_full_sync(|snaps, full, made| {
        let p = generate_incremental(full, &made.join("i2"), 120);
        publish(&p, snaps);
        *i2.borrow_mut() = p;
    });
    let i2 = i2.into_inner();
    let i2_name = i2.file_name().unwrap().to_str().unwrap();
    let i2_size = std::fs::metadata(&i2).unwrap().len();
    assert_full_fetched_once(&r);
    let v = &r.report;
    let data = r.dir.path().join("data");
    // The freshness check moved to I2 on the same full.
    let f = &v["freshness"];
    assert_eq!(f["newer_incremental"], true, "{v}");
    assert_eq!(f["cluster_moved_on"], true, "{v}");
    assert_eq!(f["newer_full"], false, "{v}");
    assert_eq!(f["chosen"]["slot"], 120);
    assert_eq!(f["chosen"]["base_slot"], 100);
    // Only I2 was fetched after the full, and it verified on top of F.
    assert_eq!(v["archive"], i2_name, "{v}");
    assert_eq!(v["bytes_fetched"], i2_size, "{v}");
    assert_eq!(v["trusted_incremental"]["slot"], 120, "{v}");
    assert_eq!(v["verified"]["slot"], 120);
    assert!(data.join("incremental/100-120").is_dir());
    assert!(!data.join("incremental/100-110").exists());
    assert!(!data.join("download").join(&r.i1_name).exists());
}

/// Freshness when the cluster moved on to a newer full: while F downloads, the known
/// validators make a full F2 (slot 200) and an incremental on it, and advertise those
/// (no newer incremental on F). The sync does not start over with F2: it keeps F,
/// fetches I1 on it, and reports that a newer full is agreed.
#[test]
fn after_a_slow_full_a_newer_full_is_reported_not_fetched() {
    let f2_name = std::cell::RefCell::new(String::new());
    let r = slow_full_sync(|snaps, _full, made| {
        let out = made.join("f2");
        std::fs::create_dir_all(&out).unwrap();
        let o = catchup()
            .args(["solana", "snapshot", "generate", "--json"])
            .args(["--accounts", "500", "--slot", "200", "--seed", "2", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
        let f2 = PathBuf::from(v["path"].as_str().unwrap());
        let i = generate_incremental(f2.to_str().unwrap(), &out, 210);
        publish(&i, snaps);
        publish(&f2, snaps);
        *f2_name.borrow_mut() = f2.file_name().unwrap().to_str().unwrap().to_string();
    });
    assert_full_fetched_once(&r);
    let v = &r.report;
    let f = &v["freshness"];
    assert_eq!(f["newer_full"], true, "{v}");
    assert_eq!(f["newest_agreed_full_slot"], 200, "{v}");
    assert_eq!(f["cluster_moved_on"], true, "{v}");
    assert_eq!(f["newer_incremental"], false, "{v}");
    assert_eq!(f["chosen"]["slot"], 110);
    assert_eq!(v["archive"], r.i1_name.as_str(), "{v}");
    assert_eq!(v["verified"]["slot"], 110);
    let data = r.dir.path().join("data");
    assert!(data.join("incremental/100-110").is_dir());
    assert!(!data.join("snapshot/200").exists());
    assert!(!data.join("download").join(f2_name.into_inner()).exists());
}

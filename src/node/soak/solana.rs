//! The Solana pipelines.
//!
//! Download: `catchup solana snapshot generate` writes an archive whose name, manifest and
//! accounts carry one LtHash; `snapshot serve` mirrors serve it; `catchup solana sync`
//! must end with that LtHash computed and verified, capitalization verified, and the
//! archive on disk byte-identical to the served one. A restart must fetch none of the
//! chunks its journal had marked done when the fault hit.
//!
//! Repair: `catchup solana serve-repair --generate-from` serves a generated ledger,
//! `catchup solana repair --out F` must write exactly that ledger's data shreds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::fault::{Flood, Proxy, ProxyFault, Tmpfs};
use super::plan::{Fault, Pipeline, TrialRng};
use super::proc::{limit_fds, Proc};
use super::store::expect_clear_error;
use super::table::Row;
use super::{run_row, setup_err, skipped_rows, SetupResult, SoakConfig, TrialResult};

const SNAPSHOT_SLOT: u64 = 200;
const ACCOUNTS: u64 = 20_000;
/// Rate of each mirror (MB/s): a download of a couple of seconds.
const MIRROR_RATE_MB_S: &str = "0.5";
const SYNC_LIMIT: Duration = Duration::from_secs(120);

/// A generated archive: its file, name, bytes and LtHash.
struct Archive {
    name: String,
    bytes: Vec<u8>,
    lt_hash: String,
}

fn generate(exe: &Path, out: &Path, zstd_level: i32) -> SetupResult<Archive> {
    let o = Command::new(exe)
        .args(["solana", "snapshot", "generate", "--json"])
        .args(["--accounts", &ACCOUNTS.to_string()])
        .args(["--slot", &SNAPSHOT_SLOT.to_string()])
        .args(["--zstd-level", &zstd_level.to_string()])
        .arg("--out")
        .arg(out)
        .output()
        .map_err(|e| setup_err("snapshot generate", e))?;
    if !o.status.success() {
        return Err(setup_err(
            "snapshot generate",
            String::from_utf8_lossy(&o.stderr),
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).map_err(|e| setup_err("snapshot generate", e))?;
    let path = PathBuf::from(v["path"].as_str().unwrap_or_default());
    let bytes = std::fs::read(&path).map_err(|e| setup_err("snapshot generate", e))?;
    Ok(Archive {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes,
        lt_hash: v["lt_hash"].as_str().unwrap_or_default().to_string(),
    })
}

struct Mirror {
    proc: Proc,
    addr: SocketAddr,
}

fn start_mirror(exe: &Path, dir: &Path) -> SetupResult<Mirror> {
    let mut cmd = Command::new(exe);
    cmd.args(["solana", "snapshot", "serve"]).arg(dir).args([
        "--listen",
        "127.0.0.1:0",
        "--rate-limit",
        MIRROR_RATE_MB_S,
    ]);
    let proc =
        Proc::spawn("snapshot serve", &mut cmd).map_err(|e| setup_err("snapshot serve", e))?;
    let line = proc
        .first_stdout_line(Duration::from_secs(30))
        .ok_or_else(|| setup_err("snapshot serve", proc.stderr_tail(3)))?;
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| setup_err("snapshot serve", format!("said {line:?}")))?;
    Ok(Mirror { proc, addr })
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

/// Done and total chunks in a download journal.
pub fn journal_done(datadir: &Path) -> Option<(u64, u64)> {
    let bytes = std::fs::read(datadir.join("journal/snapshot-download.cur")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(bytes.get(28..)?).ok()?;
    let raw = hex::decode(v.get("done_hex")?.as_str()?).ok()?;
    let chunk = v.get("chunk_size_bytes")?.as_u64()?.max(1);
    let size = v.get("size_bytes")?.as_u64()?;
    let n = size.div_ceil(chunk);
    let done = (0..n)
        .filter(|i| {
            raw.get((*i / 8) as usize)
                .is_some_and(|b| b & (1 << (i % 8)) != 0)
        })
        .count() as u64;
    Some((done, n))
}

fn download_cmd(cfg: &SoakConfig, sources: &[String], datadir: &Path) -> Command {
    let mut cmd = Command::new(&cfg.exe);
    cmd.args(["solana", "sync", "--json", "--shards", "1"])
        .args(["--chunk-size", "64K", "--io-timeout-ms", "2000"])
        .args(["--connect-timeout-ms", "1000", "--backoff-ms", "100"])
        .args(["--max-failures", "8"])
        .arg("--datadir")
        .arg(datadir);
    for s in sources {
        cmd.args(["--source", s]);
    }
    cmd
}

/// Wait until the journal shows `pct` % of the chunks done; false if the run ended first.
fn wait_journal(p: &Proc, datadir: &Path, pct: u64) -> bool {
    let until = Instant::now() + SYNC_LIMIT;
    while Instant::now() < until {
        if let Some((done, total)) = journal_done(datadir) {
            if done * 100 >= pct * total {
                return true;
            }
        }
        if p.exited_now() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Wait for a download to end and check it against the archive; its report.
fn finish_download(
    p: &mut Proc,
    want: &Archive,
    datadir: &Path,
    t: &mut TrialResult,
) -> Option<serde_json::Value> {
    let Some(exit) = p.wait(SYNC_LIMIT) else {
        t.fail(format!("sync did not finish within {SYNC_LIMIT:?}"));
        return None;
    };
    t.rss(exit.max_rss_kb);
    let Some(r) = p.last_json() else {
        t.fail(format!(
            "no report ({}): {}",
            exit.describe(),
            p.stderr_tail(3)
        ));
        return None;
    };
    if !exit.success() || r["complete"] != true {
        t.fail(format!(
            "sync failed ({}): {}",
            exit.describe(),
            p.error_lines().join(" / ")
        ));
    }
    let v = &r["verified"];
    if v["lt_hash_ok"] != true || v["capitalization_ok"] != true {
        t.fail(format!("not verified: {v}"));
    }
    if v["lt_hash_computed"].as_str() != Some(want.lt_hash.as_str()) {
        t.fail(format!(
            "LtHash {} != generated {}",
            v["lt_hash_computed"], want.lt_hash
        ));
    }
    if v["accounts_live"].as_u64() != Some(ACCOUNTS) {
        t.fail(format!("{} live accounts", v["accounts_live"]));
    }
    let complete = exit.success() && r["complete"] == true;
    if complete && v["lt_hash_computed"].as_str() != Some(want.lt_hash.as_str()) {
        t.wrong_result = true;
    }
    match std::fs::read(datadir.join("download").join(&want.name)) {
        Ok(b) if b == want.bytes => {}
        Ok(b) => {
            t.wrong_result |= complete;
            t.fail(format!(
                "downloaded archive differs from the served one ({} vs {} bytes)",
                b.len(),
                want.bytes.len()
            ))
        }
        Err(e) => t.fail(format!("downloaded archive: {e}")),
    }
    if p.panicked() {
        t.fail("sync panicked");
    }
    Some(r)
}

pub fn run_download_rows(
    cfg: &SoakConfig,
    faults: &[Fault],
    dir: &Path,
    on_trial: &mut dyn FnMut(&TrialResult),
) -> Vec<Row> {
    let setup = || -> SetupResult<(Archive, Archive, Vec<Mirror>)> {
        let snaps = dir.join("snapshots");
        let a = generate(&cfg.exe, &snaps, 1)?;
        // The same accounts at another zstd level: same name and LtHash, other bytes.
        let b = generate(&cfg.exe, &dir.join("snapshots-alt"), 5)?;
        if a.name != b.name || a.bytes == b.bytes {
            return Err(setup_err(
                "replacement archive",
                format!("{} vs {}: want one name, other bytes", a.name, b.name),
            ));
        }
        let mirrors = vec![
            start_mirror(&cfg.exe, &snaps)?,
            start_mirror(&cfg.exe, &snaps)?,
        ];
        Ok((a, b, mirrors))
    };
    let (archive, alt, mirrors) = match setup() {
        Ok(x) => x,
        Err(e) => return skipped_rows(Pipeline::SolanaDownload, faults, &e),
    };
    faults
        .iter()
        .map(|&fault| {
            run_row(cfg, Pipeline::SolanaDownload, fault, on_trial, |seed| {
                let tdir = dir.join(format!("{}-{seed}", fault.name()));
                let r = download_trial(cfg, &archive, &alt, &mirrors, fault, seed, &tdir);
                let _ = std::fs::remove_dir_all(&tdir);
                r
            })
        })
        .collect()
}

fn download_trial(
    cfg: &SoakConfig,
    archive: &Archive,
    alt: &Archive,
    mirrors: &[Mirror],
    fault: Fault,
    seed: u64,
    dir: &Path,
) -> TrialResult {
    let mut t = TrialResult::new(Pipeline::SolanaDownload, fault, seed);
    let mut rng = TrialRng::new(seed);
    let _ = std::fs::create_dir_all(dir);
    let mut mount = None;
    if fault.needs_root() {
        let size = if fault == Fault::Enospc {
            // Archive and unpacked accounts need about 8 MB.
            rng.range(1024, 6144) * 1024
        } else {
            64 << 20
        };
        match Tmpfs::mount(&dir.join("mnt"), size) {
            Ok(m) => mount = Some(m),
            Err(e) => {
                t.fail(e.to_string());
                return t.finish();
            }
        }
    }
    let datadir: PathBuf = mount
        .as_ref()
        .map_or_else(|| dir.join("data"), |m| m.path.join("data"));
    let sources: Vec<String> = mirrors.iter().map(|m| url(m.addr)).collect();
    let spawn = |sources: &[String], limit: Option<u64>| {
        let mut cmd = download_cmd(cfg, sources, &datadir);
        if let Some(n) = limit {
            limit_fds(&mut cmd, n);
        }
        Proc::spawn("solana sync", &mut cmd)
    };
    macro_rules! spawn_or_fail {
        ($sources:expr, $limit:expr) => {
            match spawn($sources, $limit) {
                Ok(p) => p,
                Err(e) => {
                    t.fail(format!("spawn solana sync: {e}"));
                    return t.finish();
                }
            }
        };
    }
    let mut want = archive;
    let mut restart = true;
    // For a replaced archive the restart's sources are the trial's own mirror.
    let mut restart_sources = sources.clone();
    let mut _own_mirror = None;
    match fault {
        Fault::Sigkill | Fault::Sigterm | Fault::ReadOnly => {
            let pct = rng.moment_pct(10, 90);
            let mut p = spawn_or_fail!(&sources, None);
            if !wait_journal(&p, &datadir, pct) {
                t.landed = false;
            }
            if fault == Fault::Sigterm {
                p.signal(libc::SIGTERM);
                match p.wait(Duration::from_secs(30)) {
                    Some(e) => t.rss(e.max_rss_kb),
                    None => t.fail("sync did not stop within 30 s of SIGTERM"),
                }
                if p.panicked() {
                    t.fail("panicked on SIGTERM");
                }
            } else {
                t.rss(p.kill().max_rss_kb);
            }
            if fault == Fault::ReadOnly {
                if let Some(m) = &mount {
                    if let Err(e) = m.set_read_only(true) {
                        t.fail(format!("remount read-only: {e}"));
                        return t.finish();
                    }
                    let mut q = spawn_or_fail!(&sources, None);
                    expect_clear_error(&mut q, &mut t, "read-only data directory");
                    if let Err(e) = m.set_read_only(false) {
                        t.fail(format!("remount read-write: {e}"));
                    }
                }
            }
        }
        Fault::Enospc => {
            let mut p = spawn_or_fail!(&sources, None);
            expect_clear_error(&mut p, &mut t, "disk full");
            if let Some(m) = &mount {
                if let Err(e) = m.resize(64 << 20) {
                    t.fail(format!("remount bigger: {e}"));
                }
            }
        }
        Fault::StallMidResponse | Fault::CloseMidFrame => {
            let after_bytes = rng.range(4 << 10, 60 << 10);
            let pf = if fault == Fault::StallMidResponse {
                ProxyFault::Stall { after_bytes }
            } else {
                ProxyFault::Close { after_bytes }
            };
            let mut proxies = Vec::new();
            for (i, m) in mirrors.iter().enumerate() {
                match Proxy::start(m.addr, if i == 0 { pf } else { ProxyFault::None }, 2) {
                    Ok(p) => proxies.push(p),
                    Err(e) => {
                        t.fail(format!("proxy: {e}"));
                        return t.finish();
                    }
                }
            }
            let via: Vec<String> = proxies.iter().map(|p| url(p.addr)).collect();
            let started = Instant::now();
            let mut p = spawn_or_fail!(&via, None);
            finish_download(&mut p, want, &datadir, &mut t);
            t.recover_ms = Some(started.elapsed().as_millis() as u64);
            t.landed = proxies[0]
                .faults_injected
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0;
            restart = false;
        }
        Fault::ArchiveReplaced => {
            // A mirror of its own whose file is replaced part-way.
            let mdir = dir.join("mirror");
            let _ = std::fs::create_dir_all(&mdir);
            if let Err(e) = std::fs::write(mdir.join(&archive.name), &archive.bytes) {
                t.fail(format!("mirror copy: {e}"));
                return t.finish();
            }
            let m = match start_mirror(&cfg.exe, &mdir) {
                Ok(m) => m,
                Err(e) => {
                    t.fail(e.to_string());
                    return t.finish();
                }
            };
            let own = vec![url(m.addr)];
            let pct = rng.moment_pct(10, 90);
            let mut p = spawn_or_fail!(&own, None);
            if !wait_journal(&p, &datadir, pct) {
                t.landed = false;
            }
            let tmp = dir.join("replacement");
            let swapped = std::fs::write(&tmp, &alt.bytes)
                .and_then(|_| std::fs::rename(&tmp, mdir.join(&alt.name)));
            if let Err(e) = swapped {
                t.fail(format!("replacing the archive: {e}"));
            }
            want = alt;
            let started = Instant::now();
            let exit = p.wait(SYNC_LIMIT);
            match exit {
                Some(e) if e.success() => {
                    // Finished: only right if what it kept is the archive served now.
                    finish_download(&mut p, want, &datadir, &mut t);
                    t.recover_ms = Some(started.elapsed().as_millis() as u64);
                    restart = false;
                }
                Some(e) => {
                    t.rss(e.max_rss_kb);
                    let errs = p.error_lines();
                    if p.panicked() || errs.len() > 1 {
                        t.fail(format!("{} error lines: {}", errs.len(), p.stderr_tail(3)));
                    }
                    match errs.first() {
                        Some(l) => t.error_line(l),
                        None => t.fail(format!("no error line: {}", p.stderr_tail(3))),
                    }
                }
                None => t.fail("sync did not end after the archive changed"),
            }
            restart_sources = own;
            _own_mirror = Some(m);
        }
        Fault::InboundFlood => {
            let m = &mirrors[0];
            let (_, fds_before) = m.proc.vm_hwm_and_fds();
            let started = Instant::now();
            let mut flood =
                Flood::open(m.addr, super::eth::FLOOD_CONNECTIONS, b"GET / HTTP/1.1\r\n");
            let (hwm, fds) = m.proc.vm_hwm_and_fds();
            t.peak_fds = Some(fds);
            let mut p = spawn_or_fail!(&sources, None);
            finish_download(&mut p, want, &datadir, &mut t);
            let (hwm2, fds) = m.proc.vm_hwm_and_fds();
            // The row's peak RSS is the flooded mirror's.
            t.peak_rss_kb = hwm.max(hwm2);
            t.peak_fds = Some(t.peak_fds.unwrap_or(0).max(fds));
            let shed = flood.closed_by_server();
            drop(flood);
            t.recover_ms = Some(started.elapsed().as_millis() as u64);
            let until = Instant::now() + Duration::from_secs(15);
            let mut fds_after = m.proc.vm_hwm_and_fds().1;
            while fds_after > fds_before + 16 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(100));
                fds_after = m.proc.vm_hwm_and_fds().1;
            }
            if fds_after > fds_before + 16 {
                t.fail(format!(
                    "mirror holds {fds_after} fds after the flood closed ({fds_before} before)"
                ));
            }
            if fds_after == 0 {
                t.fail("snapshot serve died under the flood");
            }
            t.error_line = Some(format!(
                "{} connections: {shed} shed by the mirror during the sync",
                super::eth::FLOOD_CONNECTIONS
            ));
            restart = false;
        }
        Fault::FdLimit128 => {
            let mut p = spawn_or_fail!(&sources, Some(128));
            match p.wait(SYNC_LIMIT) {
                Some(e) if e.success() => {
                    finish_download(&mut p, want, &datadir, &mut t);
                    restart = false;
                }
                Some(e) => {
                    t.rss(e.max_rss_kb);
                    let errs = p.error_lines();
                    if p.panicked() || errs.len() != 1 {
                        t.fail(format!(
                            "under RLIMIT_NOFILE 128: {} error lines, panicked {}: {}",
                            errs.len(),
                            p.panicked(),
                            p.stderr_tail(3)
                        ));
                    }
                    if let Some(l) = errs.first() {
                        t.error_line(l);
                    }
                }
                None => t.fail("sync under RLIMIT_NOFILE 128 did not end"),
            }
        }
        Fault::Liars => {
            t.fail("liars do not apply to the download");
            return t.finish();
        }
    }
    if restart {
        // What the journal had marked done must not be fetched again.
        let done_before = if fault == Fault::ArchiveReplaced {
            None
        } else {
            journal_done(&datadir).map(|(d, _)| d)
        };
        let started = Instant::now();
        let mut p = spawn_or_fail!(&restart_sources, None);
        let r = finish_download(&mut p, want, &datadir, &mut t);
        t.recover_ms = Some(started.elapsed().as_millis() as u64);
        if let Some(r) = r {
            let resumed = r["chunks_resumed"].as_u64().unwrap_or(0);
            t.refetched = Some(done_before.map_or(0, |d| d.saturating_sub(resumed)));
        }
    }
    drop(mount);
    t.finish()
}

/// The data shreds of the served ledger, in slot and index order.
fn expected_ledger(first_slot: u64, slots: u64, per_slot: usize, leader_seed: u64) -> Vec<Vec<u8>> {
    let key = crate::solana::repair::cmd::generated_leader(leader_seed);
    let mut data: Vec<(u64, u32, Vec<u8>)> =
        catchup_shred::ledger::generate_ledger(&key, first_slot, slots, per_slot, leader_seed)
            .into_iter()
            .filter_map(|b| {
                let s = catchup_shred::Shred::from_bytes(&b).ok()?;
                s.is_data().then(|| (s.slot(), s.index(), b))
            })
            .collect();
    data.sort_by_key(|(s, i, _)| (*s, *i));
    data.into_iter().map(|(_, _, b)| b).collect()
}

const REPAIR_FROM: u64 = 201;
const REPAIR_SLOTS: u64 = 24;
const REPAIR_PER_SLOT: usize = 32;
const LEADER_SEED: u64 = 5;

struct RepairNet {
    _servers: Vec<Proc>,
    peers: Vec<String>,
    leader: String,
    expected: Vec<Vec<u8>>,
    baseline_ms: u64,
}

fn start_repair_net(
    cfg: &SoakConfig,
    profiles: &[Option<&str>],
    dir: &Path,
) -> SetupResult<RepairNet> {
    let mut servers = Vec::new();
    let mut peers = Vec::new();
    let mut leader = String::new();
    for (i, prof) in profiles.iter().enumerate() {
        let mut cmd = Command::new(&cfg.exe);
        cmd.args(["solana", "serve-repair", "--listen", "127.0.0.1:0"])
            .args(["--generate-from", &REPAIR_FROM.to_string()])
            .args(["--generate-slots", &REPAIR_SLOTS.to_string()])
            .args(["--shreds-per-slot", &REPAIR_PER_SLOT.to_string()])
            .args(["--leader-seed", &LEADER_SEED.to_string()])
            .args(["--identity-seed", &(40 + i).to_string()]);
        if let Some(p) = prof {
            cmd.args(["--profile", p]);
        }
        let p = Proc::spawn("serve-repair", &mut cmd).map_err(|e| setup_err("serve-repair", e))?;
        let line = p
            .first_stdout_line(Duration::from_secs(60))
            .ok_or_else(|| setup_err("serve-repair", p.stderr_tail(3)))?;
        let info: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| setup_err("serve-repair", e))?;
        peers.push(format!(
            "{}@{}",
            info["identity"].as_str().unwrap_or_default(),
            info["listen"].as_str().unwrap_or_default()
        ));
        leader = info["leader"].as_str().unwrap_or_default().to_string();
        servers.push(p);
    }
    let mut net = RepairNet {
        _servers: servers,
        peers,
        leader,
        expected: expected_ledger(REPAIR_FROM, REPAIR_SLOTS, REPAIR_PER_SLOT, LEADER_SEED),
        baseline_ms: 0,
    };
    let out = dir.join("baseline.json");
    let started = Instant::now();
    let mut p = Proc::spawn("solana repair", &mut repair_cmd(cfg, &net, &out))
        .map_err(|e| setup_err("baseline repair", e))?;
    let mut t = TrialResult::new(Pipeline::SolanaRepair, Fault::Sigkill, 0);
    finish_repair(&mut p, &net, &out, &mut t);
    if !t.detail.is_empty() {
        return Err(setup_err("baseline repair", t.detail));
    }
    net.baseline_ms = started.elapsed().as_millis() as u64;
    Ok(net)
}

fn repair_cmd(cfg: &SoakConfig, net: &RepairNet, out: &Path) -> Command {
    let mut cmd = Command::new(&cfg.exe);
    cmd.args(["solana", "repair", "--json"])
        .args(["--from-slot", &REPAIR_FROM.to_string()])
        .args(["--to-slot", &(REPAIR_FROM + REPAIR_SLOTS - 1).to_string()])
        .args(["--leader", &net.leader])
        .args(["--timeout-secs", "60", "--request-timeout-ms", "200"])
        .arg("--out")
        .arg(out);
    for p in &net.peers {
        cmd.args(["--peer", p]);
    }
    cmd
}

fn finish_repair(p: &mut Proc, net: &RepairNet, out: &Path, t: &mut TrialResult) {
    let Some(exit) = p.wait(SYNC_LIMIT) else {
        t.fail(format!("repair did not finish within {SYNC_LIMIT:?}"));
        return;
    };
    t.rss(exit.max_rss_kb);
    if !exit.success() {
        t.fail(format!(
            "repair failed ({}): {}",
            exit.describe(),
            p.stderr_tail(3)
        ));
        return;
    }
    let got = match std::fs::read(out)
        .map_err(|e| e.to_string())
        .and_then(|b| catchup_shred::files::decode_shred_list(&b).map_err(|e| e.to_string()))
    {
        Ok(g) => g,
        Err(e) => {
            t.fail(format!("repaired shreds {}: {e}", out.display()));
            return;
        }
    };
    if got != net.expected {
        // The repair said it completed: anything but the served ledger is wrong.
        t.wrong_result = true;
    }
    if got.len() != net.expected.len() {
        t.fail(format!(
            "{} shreds repaired, the ledger has {} data shreds",
            got.len(),
            net.expected.len()
        ));
    }
    let differ = got
        .iter()
        .zip(&net.expected)
        .filter(|(a, b)| a != b)
        .count();
    if differ > 0 {
        t.fail(format!(
            "{differ} repaired shreds differ from the served ledger"
        ));
    }
}

pub fn run_repair_rows(
    cfg: &SoakConfig,
    faults: &[Fault],
    dir: &Path,
    on_trial: &mut dyn FnMut(&TrialResult),
) -> Vec<Row> {
    let (liars, rest): (Vec<Fault>, Vec<Fault>) = faults.iter().partition(|f| **f == Fault::Liars);
    let mut rows = Vec::new();
    for (set, profiles) in [
        (rest, vec![None, None]),
        // One honest server, two that corrupt 30 % of their answers.
        (liars, vec![None, Some("wrong"), Some("wrong")]),
    ] {
        if set.is_empty() {
            continue;
        }
        match start_repair_net(cfg, &profiles, dir) {
            Ok(net) => {
                for &fault in &set {
                    rows.push(run_row(
                        cfg,
                        Pipeline::SolanaRepair,
                        fault,
                        on_trial,
                        |seed| repair_trial(cfg, &net, fault, seed, dir),
                    ));
                }
            }
            Err(e) => rows.extend(skipped_rows(Pipeline::SolanaRepair, &set, &e)),
        }
    }
    rows
}

fn repair_trial(
    cfg: &SoakConfig,
    net: &RepairNet,
    fault: Fault,
    seed: u64,
    dir: &Path,
) -> TrialResult {
    let mut t = TrialResult::new(Pipeline::SolanaRepair, fault, seed);
    let mut rng = TrialRng::new(seed);
    let out = dir.join(format!("repaired-{seed}.json"));
    let _ = std::fs::remove_file(&out);
    let spawn = |limit: Option<u64>| {
        let mut cmd = repair_cmd(cfg, net, &out);
        if let Some(n) = limit {
            limit_fds(&mut cmd, n);
        }
        Proc::spawn("solana repair", &mut cmd)
    };
    let mut restart = true;
    match fault {
        Fault::Sigkill | Fault::Sigterm => {
            // Repair keeps nothing on disk: the moment is a share of the baseline's time.
            let pct = rng.moment_pct(10, 90);
            match spawn(None) {
                Ok(mut p) => {
                    std::thread::sleep(Duration::from_millis(net.baseline_ms * pct / 100));
                    if p.exited_now() {
                        t.landed = false;
                    }
                    p.signal(if fault == Fault::Sigterm {
                        libc::SIGTERM
                    } else {
                        libc::SIGKILL
                    });
                    if let Some(e) = p.wait(Duration::from_secs(30)) {
                        t.rss(e.max_rss_kb);
                    }
                    if p.panicked() {
                        t.fail("repair panicked on the signal");
                    }
                }
                Err(e) => t.fail(format!("spawn: {e}")),
            }
            let _ = std::fs::remove_file(&out);
        }
        Fault::FdLimit128 => match spawn(Some(128)) {
            Ok(mut p) => {
                let started = Instant::now();
                match p.wait(SYNC_LIMIT) {
                    Some(e) if e.success() => {
                        finish_repair(&mut p, net, &out, &mut t);
                        t.recover_ms = Some(started.elapsed().as_millis() as u64);
                        restart = false;
                    }
                    Some(_) => {
                        let errs = p.error_lines();
                        if p.panicked() || errs.len() != 1 {
                            t.fail(format!("under RLIMIT_NOFILE 128: {}", p.stderr_tail(3)));
                        }
                        if let Some(l) = errs.first() {
                            t.error_line(l);
                        }
                    }
                    None => t.fail("repair under RLIMIT_NOFILE 128 did not end"),
                }
            }
            Err(e) => t.fail(format!("spawn: {e}")),
        },
        Fault::Liars => restart = true,
        other => {
            t.fail(format!("{} does not apply to repair", other.name()));
            return t.finish();
        }
    }
    if restart {
        let started = Instant::now();
        match spawn(None) {
            Ok(mut p) => {
                finish_repair(&mut p, net, &out, &mut t);
                t.recover_ms = Some(started.elapsed().as_millis() as u64);
            }
            Err(e) => t.fail(format!("spawn: {e}")),
        }
    }
    let _ = std::fs::remove_file(&out);
    t.finish()
}

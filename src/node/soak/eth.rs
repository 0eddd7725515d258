//! The Ethereum pipelines: `catchup eth serve --generate-accounts` processes serve a
//! generated chain and state, `catchup eth sync --mode fast|snap` syncs it; the result
//! must be the served head state root and head hash, and a restart must receive none of
//! the items it had stored (`progress.refetched_items`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::fault::{Flood, Proxy, ProxyFault, Tmpfs};
use super::plan::{Fault, Pipeline, TrialRng};
use super::proc::{limit_fds, Proc, Stream};
use super::store::expect_clear_error;
use super::table::Row;
use super::{run_row, setup_err, skipped_rows, SetupResult, SoakConfig, TrialResult};

const ACCOUNTS: u64 = 4000;
const BLOCKS: u64 = 200;
const NETWORK_ID: u64 = 777;
/// Bound of one sync run past its own `--timeout-s`.
const SYNC_GRACE: Duration = Duration::from_secs(30);
/// Inbound connections of the flood.
pub const FLOOD_CONNECTIONS: usize = 1000;

/// Bound of one sync run.
fn limit(cfg: &SoakConfig) -> Duration {
    Duration::from_secs(cfg.sync_timeout_s) + SYNC_GRACE
}

/// A serving process and what it announced.
pub struct Server {
    pub proc: Proc,
    pub enode: String,
    pub addr: SocketAddr,
    pub info: serde_json::Value,
}

pub fn start_server(exe: &Path, profile: &str, slow_delay_ms: u64) -> SetupResult<Server> {
    let mut cmd = Command::new(exe);
    cmd.args(["eth", "serve", "--listen", "127.0.0.1:0", "--json"])
        .args(["--generate-accounts", &ACCOUNTS.to_string()])
        .args(["--generate-blocks", &BLOCKS.to_string()])
        .args(["--seed", "11", "--network-id", &NETWORK_ID.to_string()])
        .args(["--profile", profile])
        .args(["--slow-delay-ms", &slow_delay_ms.to_string()]);
    let proc = Proc::spawn("eth serve", &mut cmd).map_err(|e| setup_err("eth serve", e))?;
    let line = proc
        .first_stdout_line(Duration::from_secs(60))
        .ok_or_else(|| setup_err("eth serve", format!("no enode: {}", proc.stderr_tail(3))))?;
    let info: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| setup_err("eth serve", format!("{line:?}: {e}")))?;
    let enode = info["enode"].as_str().unwrap_or_default().to_string();
    let addr = info["listen"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| setup_err("eth serve", format!("no listen address in {line}")))?;
    Ok(Server {
        proc,
        enode,
        addr,
        info,
    })
}

/// The enode with its address replaced (to reach the server through a proxy).
fn enode_via(enode: &str, addr: SocketAddr) -> String {
    match enode.rfind('@') {
        Some(i) => format!("{}@{addr}", &enode[..i]),
        None => enode.to_string(),
    }
}

/// What every trial of a pipeline shares: the servers and a baseline sync.
struct Net {
    servers: Vec<Server>,
    root: String,
    head_hash: String,
    genesis_hash: String,
    /// Requests of the baseline sync (summed over shards): the progress scale.
    baseline_requests: u64,
    /// Bound of one sync run.
    limit: Duration,
}

fn mode(p: Pipeline) -> &'static str {
    if p == Pipeline::EthSnap {
        "snap"
    } else {
        "fast"
    }
}

fn slow_delay_ms(p: Pipeline) -> u64 {
    // A sync of a few seconds, so that a moment inside it is well defined.
    if p == Pipeline::EthSnap {
        60
    } else {
        20
    }
}

/// The servers; with `baseline`, a fresh sync that must verify and gives the progress
/// scale for the moments.
fn start_net(
    cfg: &SoakConfig,
    p: Pipeline,
    profiles: &[&str],
    dir: &Path,
    baseline: bool,
) -> SetupResult<Net> {
    let mut servers = Vec::new();
    for prof in profiles {
        let delay = if *prof == "slow" { slow_delay_ms(p) } else { 0 };
        servers.push(start_server(&cfg.exe, prof, delay)?);
    }
    let info = &servers[0].info;
    let s = |k: &str| info[k].as_str().unwrap_or_default().to_string();
    let mut net = Net {
        root: s("head_state_root"),
        head_hash: s("head_hash"),
        genesis_hash: s("genesis_hash"),
        servers,
        baseline_requests: 1,
        limit: limit(cfg),
    };
    if !baseline {
        return Ok(net);
    }
    // Baseline: a fresh sync must verify, and gives the progress scale.
    let base = dir.join("baseline");
    let peers: Vec<String> = net.servers.iter().map(|s| s.enode.clone()).collect();
    let mut p0 = Proc::spawn("eth sync", &mut sync_cmd(cfg, p, &net, &peers, &base))
        .map_err(|e| setup_err("baseline sync", e))?;
    let mut t = TrialResult::new(p, Fault::Sigkill, 0);
    let r = finish_sync(&mut p0, &net, &mut t);
    let _ = std::fs::remove_dir_all(&base);
    match r {
        Some(report) if t.detail.is_empty() => {
            net.baseline_requests = report["progress"]["requests_sent"]
                .as_u64()
                .unwrap_or(0)
                .max(1);
            Ok(net)
        }
        _ => Err(setup_err("baseline sync", t.detail)),
    }
}

fn sync_cmd(cfg: &SoakConfig, p: Pipeline, net: &Net, peers: &[String], datadir: &Path) -> Command {
    let mut cmd = Command::new(&cfg.exe);
    cmd.args(["--log-format", "json", "eth", "sync", "--mode", mode(p)])
        .args(["--shards", "2", "--json"])
        .args(["--timeout-s", &cfg.sync_timeout_s.to_string()])
        .args(["--node-batch", "32", "--progress-every-ms", "100"])
        .args(["--genesis-hash", &net.genesis_hash])
        .args(["--network-id", &NETWORK_ID.to_string()])
        .args(["--expect-state-root", &net.root])
        .arg("--datadir")
        .arg(datadir)
        .env("RUST_LOG", "info");
    for e in peers {
        cmd.args(["--peer", e]);
    }
    cmd
}

/// Wait for a sync to end and check it against the served chain; its report.
fn finish_sync(p: &mut Proc, net: &Net, t: &mut TrialResult) -> Option<serde_json::Value> {
    let Some(exit) = p.wait(net.limit) else {
        t.fail(format!("sync did not finish within {:?}", net.limit));
        return None;
    };
    t.rss(exit.max_rss_kb);
    let Some(v) = p.last_json() else {
        t.fail(format!(
            "sync printed no report ({}): {}",
            exit.describe(),
            p.stderr_tail(3)
        ));
        return None;
    };
    let r = &v["report"];
    if !exit.success() || v["ok"] != true {
        t.fail(format!(
            "sync failed ({}): {} {}",
            exit.describe(),
            r["failure"],
            p.error_lines().join(" / ")
        ));
    }
    // A sync that did not finish reports no root; one that reports another root or head
    // than the served ones accepted something wrong.
    let wrong = |got: &serde_json::Value, want: &str| got.as_str().is_some_and(|g| g != want);
    if wrong(&r["state_root"], &net.root) || wrong(&r["head_hash"], &net.head_hash) {
        t.wrong_result = true;
    }
    if r["state_root"].as_str() != Some(net.root.as_str()) {
        t.fail(format!(
            "state root {} != served {}",
            r["state_root"], net.root
        ));
    }
    if r["head_hash"].as_str() != Some(net.head_hash.as_str()) {
        t.fail(format!(
            "head {} != served {}",
            r["head_hash"], net.head_hash
        ));
    }
    if p.panicked() {
        t.fail("sync panicked");
    }
    Some(r.clone())
}

/// Requests sent so far by each shard, from the JSON progress lines on stderr.
fn requests_in(line: &str) -> Option<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["target"] != "progress" {
        return None;
    }
    let shard = v["fields"]["shard"].as_u64()?;
    let msg = v["fields"]["message"].as_str()?;
    let rest = &msg[msg.find("requests ")? + "requests ".len()..];
    let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((shard, n.parse().ok()?))
}

/// Watch a sync until its requests reach `pct` % of the baseline; false if it ended first.
fn wait_moment(p: &Proc, net: &Net, pct: u64) -> bool {
    let target = (net.baseline_requests * pct / 100).max(1);
    let mut per_shard = [0u64; 64];
    p.watch(net.limit, |s, l| {
        if s != Stream::Err {
            return false;
        }
        if let Some((shard, n)) = requests_in(l) {
            if let Some(slot) = per_shard.get_mut(shard as usize) {
                *slot = (*slot).max(n);
            }
        }
        per_shard.iter().sum::<u64>() >= target
    })
}

pub fn run_rows(
    cfg: &SoakConfig,
    pipeline: Pipeline,
    faults: &[Fault],
    dir: &Path,
    on_trial: &mut dyn FnMut(&TrialResult),
) -> Vec<Row> {
    let (liars, rest): (Vec<Fault>, Vec<Fault>) = faults.iter().partition(|f| **f == Fault::Liars);
    let mut rows = Vec::new();
    if !rest.is_empty() {
        match start_net(cfg, pipeline, &["slow", "slow", "slow"], dir, true) {
            Ok(net) => {
                for &fault in &rest {
                    rows.push(run_row(cfg, pipeline, fault, on_trial, |seed| {
                        let tdir = dir.join(format!("{}-{seed}", fault.name()));
                        let r = trial(cfg, pipeline, &net, fault, seed, &tdir);
                        let _ = std::fs::remove_dir_all(&tdir);
                        r
                    }));
                }
            }
            Err(e) => rows.extend(skipped_rows(pipeline, &rest, &e)),
        }
    }
    if !liars.is_empty() {
        // One honest peer, two that lie (more than a third).
        match start_net(cfg, pipeline, &["slow", "lying", "lying"], dir, false) {
            Ok(net) => rows.push(run_row(cfg, pipeline, Fault::Liars, on_trial, |seed| {
                let tdir = dir.join(format!("liars-{seed}"));
                let r = trial(cfg, pipeline, &net, Fault::Liars, seed, &tdir);
                let _ = std::fs::remove_dir_all(&tdir);
                r
            })),
            Err(e) => rows.extend(skipped_rows(pipeline, &liars, &e)),
        }
    }
    rows
}

fn trial(
    cfg: &SoakConfig,
    pipeline: Pipeline,
    net: &Net,
    fault: Fault,
    seed: u64,
    dir: &Path,
) -> TrialResult {
    let mut t = TrialResult::new(pipeline, fault, seed);
    let mut rng = TrialRng::new(seed);
    let _ = std::fs::create_dir_all(dir);
    let peers: Vec<String> = net.servers.iter().map(|s| s.enode.clone()).collect();
    let mut mount = None;
    if fault.needs_root() {
        let size = if fault == Fault::Enospc {
            // Less than the synced data (2-3 MB): the disk fills part-way.
            rng.range(256, 1536) * 1024
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
    let spawn = |peers: &[String], limit: Option<u64>| {
        let mut cmd = sync_cmd(cfg, pipeline, net, peers, &datadir);
        if let Some(n) = limit {
            limit_fds(&mut cmd, n);
        }
        Proc::spawn("eth sync", &mut cmd)
    };
    macro_rules! spawn_or_fail {
        ($peers:expr, $limit:expr) => {
            match spawn($peers, $limit) {
                Ok(p) => p,
                Err(e) => {
                    t.fail(format!("spawn eth sync: {e}"));
                    return t.finish();
                }
            }
        };
    }
    // Stored before an interruption (SIGTERM's own report), to compare with the resume.
    let mut stored_before: Option<u64> = None;
    let mut restart = true;
    match fault {
        Fault::Sigkill | Fault::Sigterm => {
            let pct = rng.moment_pct(10, 90);
            let mut p = spawn_or_fail!(&peers, None);
            if !wait_moment(&p, net, pct) {
                t.landed = false;
            }
            if fault == Fault::Sigkill {
                t.rss(p.kill().max_rss_kb);
            } else {
                p.signal(libc::SIGTERM);
                match p.wait(Duration::from_secs(30)) {
                    None => t.fail("sync did not stop within 30 s of SIGTERM"),
                    Some(e) => {
                        t.rss(e.max_rss_kb);
                        if let Some(v) = p.last_json() {
                            let r = &v["report"];
                            if t.landed && r["failure"] != "interrupted" {
                                t.fail(format!("SIGTERM report says failure {}", r["failure"]));
                            }
                            if t.landed && e.success() {
                                t.fail("an interrupted sync exited 0");
                            }
                            stored_before = r["state_nodes_stored"].as_u64();
                        } else {
                            t.fail(format!("no report after SIGTERM: {}", p.stderr_tail(3)));
                        }
                        if p.panicked() {
                            t.fail("panicked on SIGTERM");
                        }
                    }
                }
            }
        }
        Fault::Enospc => {
            let mut p = spawn_or_fail!(&peers, None);
            expect_clear_error(&mut p, &mut t, "disk full");
            if let Some(m) = &mount {
                if let Err(e) = m.resize(64 << 20) {
                    t.fail(format!("remount bigger: {e}"));
                }
            }
        }
        Fault::ReadOnly => {
            let pct = rng.moment_pct(10, 90);
            let mut p = spawn_or_fail!(&peers, None);
            if !wait_moment(&p, net, pct) {
                t.landed = false;
            }
            t.rss(p.kill().max_rss_kb);
            if let Some(m) = &mount {
                if let Err(e) = m.set_read_only(true) {
                    t.fail(format!("remount read-only: {e}"));
                    return t.finish();
                }
                let mut q = spawn_or_fail!(&peers, None);
                expect_clear_error(&mut q, &mut t, "read-only data directory");
                if let Err(e) = m.set_read_only(false) {
                    t.fail(format!("remount read-write: {e}"));
                }
            }
        }
        Fault::StallMidResponse | Fault::CloseMidFrame => {
            let after_bytes = rng.range(2 << 10, 64 << 10);
            let pf = if fault == Fault::StallMidResponse {
                ProxyFault::Stall { after_bytes }
            } else {
                ProxyFault::Close { after_bytes }
            };
            let mut proxies = Vec::new();
            for (i, s) in net.servers.iter().enumerate() {
                let f = if i == 0 { pf } else { ProxyFault::None };
                match Proxy::start(s.addr, f, 1) {
                    Ok(p) => proxies.push(p),
                    Err(e) => {
                        t.fail(format!("proxy: {e}"));
                        return t.finish();
                    }
                }
            }
            let via: Vec<String> = net
                .servers
                .iter()
                .zip(&proxies)
                .map(|(s, p)| enode_via(&s.enode, p.addr))
                .collect();
            let started = Instant::now();
            let mut p = spawn_or_fail!(&via, None);
            let r = finish_sync(&mut p, net, &mut t);
            t.recover_ms = Some(started.elapsed().as_millis() as u64);
            t.landed = proxies[0]
                .faults_injected
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0;
            if let Some(r) = r {
                t.refetched = r["progress"]["refetched_items"].as_u64();
            }
            restart = false;
        }
        Fault::InboundFlood => {
            let server = &net.servers[0];
            let (_, fds_before) = server.proc.vm_hwm_and_fds();
            let started = Instant::now();
            let mut flood = Flood::open(server.addr, FLOOD_CONNECTIONS, b"");
            let (hwm, fds) = server.proc.vm_hwm_and_fds();
            t.peak_fds = Some(fds);
            let mut p = spawn_or_fail!(&peers, None);
            let r = finish_sync(&mut p, net, &mut t);
            let (hwm2, fds) = server.proc.vm_hwm_and_fds();
            // The row's peak RSS is the flooded server's.
            t.peak_rss_kb = hwm.max(hwm2);
            t.peak_fds = Some(t.peak_fds.unwrap_or(0).max(fds));
            let shed = flood.closed_by_server();
            drop(flood);
            t.recover_ms = Some(started.elapsed().as_millis() as u64);
            if let Some(r) = r {
                t.refetched = r["progress"]["refetched_items"].as_u64();
            }
            // The flood's descriptors are given back once it is gone.
            let until = Instant::now() + Duration::from_secs(15);
            let mut fds_after = server.proc.vm_hwm_and_fds().1;
            while fds_after > fds_before + 16 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(100));
                fds_after = server.proc.vm_hwm_and_fds().1;
            }
            if fds_after > fds_before + 16 {
                t.fail(format!(
                    "server holds {fds_after} fds after the flood closed ({fds_before} before)"
                ));
            }
            if fds_after == 0 {
                t.fail("eth serve died under the flood");
            }
            t.error_line = Some(format!(
                "{FLOOD_CONNECTIONS} connections: {shed} shed by the server during the sync"
            ));
            restart = false;
        }
        Fault::FdLimit128 => {
            let mut p = spawn_or_fail!(&peers, Some(128));
            let exit = p.wait(net.limit);
            if exit.is_some_and(|e| e.success()) {
                // A degraded but correct run.
                if let Some(v) = p.last_json() {
                    let r = &v["report"];
                    if r["state_root"].as_str() != Some(net.root.as_str()) {
                        t.fail(format!(
                            "state root {} != served {}",
                            r["state_root"], net.root
                        ));
                    }
                    t.refetched = r["progress"]["refetched_items"].as_u64();
                }
                t.rss(exit.map_or(0, |e| e.max_rss_kb));
                restart = false;
            } else {
                // Otherwise one clear error line, and a run without the limit resumes.
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
        }
        Fault::Liars => {
            let started = Instant::now();
            let mut p = spawn_or_fail!(&peers, None);
            let r = finish_sync(&mut p, net, &mut t);
            t.recover_ms = Some(started.elapsed().as_millis() as u64);
            if let Some(r) = r {
                t.refetched = r["progress"]["refetched_items"].as_u64();
                let lies = r["progress"]["lies_detected"].as_u64().unwrap_or(0);
                t.error_line = Some(format!("{lies} lies detected"));
            }
            restart = false;
        }
        Fault::ArchiveReplaced => {
            t.fail("archive-replaced does not apply to eth");
            return t.finish();
        }
    }
    if restart {
        let started = Instant::now();
        let mut p = spawn_or_fail!(&peers, None);
        let r = finish_sync(&mut p, net, &mut t);
        t.recover_ms = Some(started.elapsed().as_millis() as u64);
        if let Some(r) = r {
            t.refetched = r["progress"]["refetched_items"].as_u64();
            if let Some(before) = stored_before {
                let resumed = r["resumed"]["state_nodes"].as_u64().unwrap_or(0);
                t.lost = Some(before.saturating_sub(resumed));
            }
        }
    }
    drop(mount);
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_requests_are_read_from_json_log_lines() {
        let l = r#"{"timestamp":"x","level":"INFO","fields":{"message":"ethsync snap pivot 72 highest 200: headers 0/200 (0.0%), requests 8, lies 0","shard":1},"target":"progress"}"#;
        assert_eq!(requests_in(l), Some((1, 8)));
        assert_eq!(requests_in("not json"), None);
        let e = "enode://abcd@127.0.0.1:30303";
        assert_eq!(
            enode_via(e, "127.0.0.1:9".parse().unwrap()),
            "enode://abcd@127.0.0.1:9"
        );
    }
}

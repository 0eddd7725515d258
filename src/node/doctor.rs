//! `catchup doctor`: the prerequisite audit. Every check is a real measurement with an id.
//!
//! | id | what | fails the run when |
//! |---|---|---|
//! | CATCH001 | bandwidth to each `--source` (short ranged GET over plain TCP, MB/s) | a source is unreachable or answers an error |
//! | CATCH002 | io_uring (create a ring, run one NOP) | io_uring is unavailable |
//! | CATCH003 | write throughput in `--datadir` with O_DIRECT (MB/s) | the directory is not writable |
//! | CATCH004 | TCP connect latency to each `--peer` | a peer is unreachable |
//! | CATCH005 | locked-memory budget / CAP_IPC_LOCK | RLIMIT_MEMLOCK is below what glommio needs |
//! | CATCH006 | AF_XDP socket support | never (warns: repair falls back to UDP) |
//! | CATCH007 | cores, SMT siblings, NUMA nodes, allowed CPUs | never |

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use catchup_http::{
    parse_response_head, write_request, BodyDecoder, ByteRange, Limits, Method, Request, Url,
};
use catchup_io::probe;

use crate::node::opts::GlobalOpts;

/// Audit this host: network to sources and peers, io_uring, disk, locked memory,
/// AF_XDP, cores.
#[derive(clap::Args, Debug)]
pub struct DoctorCmd {
    /// Data directory to measure write throughput in (CATCH003).
    #[arg(long, value_name = "DIR")]
    pub datadir: Option<PathBuf>,
    /// A snapshot/archive source URL (http://host[:port]/path) to measure bandwidth to
    /// (CATCH001). Repeatable.
    #[arg(long = "source", value_name = "URL")]
    pub sources: Vec<String>,
    /// A peer HOST:PORT to measure TCP connect latency to (CATCH004). Repeatable.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub peers: Vec<String>,
    /// Print `{"checks":[...],"ok":bool}` instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How much to write in the disk check.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub write_mib: u64,
    /// How much to fetch from each source in the bandwidth check.
    #[arg(long, default_value_t = 512, value_name = "KIB")]
    pub fetch_kib: u64,
    /// Network timeout for each connect and read.
    #[arg(long, default_value_t = 5_000, value_name = "MS")]
    pub timeout_ms: u64,
}

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    Warn,
    Fail,
    Skipped,
}

impl CheckStatus {
    fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
            CheckStatus::Skipped => "skipped",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
    /// The measured number (MB/s, ms, bytes, count), if any.
    pub value: Value,
    /// Unit of `value`.
    pub unit: &'static str,
}

fn check(
    id: &'static str,
    name: impl Into<String>,
    status: CheckStatus,
    detail: impl Into<String>,
    value: Value,
    unit: &'static str,
) -> Check {
    Check {
        id,
        name: name.into(),
        status,
        detail: detail.into(),
        value,
        unit,
    }
}

/// Largest response head accepted from a source.
const MAX_SOURCE_HEAD_BYTES: usize = 16 * 1024;

/// Largest number of redirects followed to reach a source's file.
pub const MAX_REDIRECTS: usize = 5;

/// What one measured GET saw.
#[derive(Clone, Debug)]
pub struct SourceSample {
    /// Body bytes received.
    pub bytes: u64,
    /// From sending the request to the last byte.
    pub elapsed: Duration,
    /// From sending the request to the first response byte.
    pub first_byte: Duration,
    pub status: u16,
    /// The URL finally measured (after redirects).
    pub final_url: String,
}

/// Fetch up to `bytes` of `url` with a Range request, following up to [`MAX_REDIRECTS`]
/// redirects (snapshot sources redirect to the current archive).
pub fn measure_source(url: &str, bytes: u64, timeout: Duration) -> Result<SourceSample, String> {
    let mut u = Url::parse(url).map_err(|e| e.to_string())?;
    for _ in 0..=MAX_REDIRECTS {
        match measure_once(&u, bytes, timeout)? {
            Fetched::Redirect(location) => {
                u = u
                    .join(&location)
                    .map_err(|e| format!("redirect from {u}: {e}"))?;
            }
            Fetched::Body(bytes, elapsed, first_byte, status) => {
                return Ok(SourceSample {
                    bytes,
                    elapsed,
                    first_byte,
                    status,
                    final_url: u.to_string(),
                })
            }
        }
    }
    Err(format!("more than {MAX_REDIRECTS} redirects"))
}

enum Fetched {
    Redirect(String),
    Body(u64, Duration, Duration, u16),
}

fn measure_once(u: &Url, bytes: u64, timeout: Duration) -> Result<Fetched, String> {
    let addr = (u.host.as_str(), u.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {}: {e}", u.host))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", u.host))?;
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut req = Vec::new();
    write_request(
        &Request {
            method: Method::Get,
            url: u,
            range: ByteRange::from_start_len(0, bytes.max(1)),
            headers: &[],
            body: &[],
            keep_alive: false,
        },
        &mut req,
    );
    let start = Instant::now();
    s.write_all(&req)
        .map_err(|e| format!("send request: {e}"))?;
    let limits = Limits {
        max_head_bytes: MAX_SOURCE_HEAD_BYTES,
        ..Limits::default()
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut head_buf = Vec::new();
    let mut ttfb = None;
    let (head, body_start) = loop {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("read response: {e}"))?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        ttfb.get_or_insert_with(|| start.elapsed());
        head_buf.extend_from_slice(&buf[..n]);
        if let Some(h) = parse_response_head(&head_buf, &limits).map_err(|e| e.to_string())? {
            break h;
        }
    };
    if let Some(location) = head.redirect_location() {
        return Ok(Fetched::Redirect(location.to_string()));
    }
    if !(200..300).contains(&head.status) {
        return Err(format!("HTTP {} {}", head.status, head.reason));
    }
    let mut dec =
        BodyDecoder::new(head.body_kind(Method::Get), limits).map_err(|e| e.to_string())?;
    let mut pending = head_buf[body_start..].to_vec();
    loop {
        while !pending.is_empty() && !dec.is_done() {
            let d = dec.decode(&pending).map_err(|e| e.to_string())?;
            if d.consumed == 0 {
                break;
            }
            pending.drain(..d.consumed);
        }
        if dec.is_done() || dec.body_bytes() >= bytes {
            break;
        }
        let n = s.read(&mut buf).map_err(|e| format!("read body: {e}"))?;
        if n == 0 {
            if dec.finish_on_close() {
                break;
            }
            return Err(format!(
                "connection closed after {} body bytes",
                dec.body_bytes()
            ));
        }
        pending.extend_from_slice(&buf[..n]);
    }
    Ok(Fetched::Body(
        dec.body_bytes(),
        start.elapsed(),
        ttfb.unwrap_or_default(),
        head.status,
    ))
}

fn source_check(url: &str, bytes: u64, timeout: Duration) -> Check {
    let name = format!("bandwidth to {url}");
    match measure_source(url, bytes, timeout) {
        Ok(m) => {
            let mbps = m.bytes as f64 / 1e6 / m.elapsed.as_secs_f64().max(1e-9);
            let mut detail = format!(
                "{} bytes in {:.1} ms ({mbps:.1} MB/s), first byte after {:.1} ms, HTTP {}",
                m.bytes,
                m.elapsed.as_secs_f64() * 1e3,
                m.first_byte.as_secs_f64() * 1e3,
                m.status
            );
            if m.final_url != url {
                detail.push_str(&format!(", redirected to {}", m.final_url));
            }
            let st = if m.status == 206 {
                CheckStatus::Ok
            } else {
                detail.push_str("; the source ignores Range requests (no parallel ranges)");
                CheckStatus::Warn
            };
            check("CATCH001", name, st, detail, json!(mbps), "MB/s")
        }
        Err(e) => check("CATCH001", name, CheckStatus::Fail, e, Value::Null, "MB/s"),
    }
}

fn io_uring_check() -> Check {
    match probe::io_uring_nop() {
        Ok(d) => check(
            "CATCH002",
            "io_uring",
            CheckStatus::Ok,
            format!(
                "ring created, NOP completed in {:.1} µs",
                d.as_secs_f64() * 1e6
            ),
            json!(d.as_secs_f64() * 1e6),
            "µs",
        ),
        Err(e) => check(
            "CATCH002",
            "io_uring",
            CheckStatus::Fail,
            e.to_string(),
            Value::Null,
            "µs",
        ),
    }
}

fn disk_check(datadir: Option<&PathBuf>, write_mib: u64) -> Check {
    let name = "O_DIRECT write throughput";
    let Some(dir) = datadir else {
        return check(
            "CATCH003",
            name,
            CheckStatus::Skipped,
            "skipped (no --datadir given)",
            Value::Null,
            "MB/s",
        );
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return check(
            "CATCH003",
            name,
            CheckStatus::Fail,
            format!("cannot create {}: {e}", dir.display()),
            Value::Null,
            "MB/s",
        );
    }
    match probe::write_throughput(dir, write_mib.max(1) << 20, 1 << 20) {
        Ok(r) => {
            let mbps = r.mb_per_s();
            let (st, how) = if r.direct {
                (CheckStatus::Ok, "O_DIRECT")
            } else {
                (
                    CheckStatus::Warn,
                    "buffered + fdatasync (the filesystem refused O_DIRECT)",
                )
            };
            check(
                "CATCH003",
                name,
                st,
                format!(
                    "{} MiB to {} in {:.1} ms with {how}: {mbps:.1} MB/s",
                    r.bytes >> 20,
                    dir.display(),
                    r.elapsed.as_secs_f64() * 1e3
                ),
                json!(mbps),
                "MB/s",
            )
        }
        Err(e) => check(
            "CATCH003",
            name,
            CheckStatus::Fail,
            e.to_string(),
            Value::Null,
            "MB/s",
        ),
    }
}

fn peer_check(peer: &str, timeout: Duration) -> Check {
    let name = format!("TCP connect to {peer}");
    let addr = match peer.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) => {
            return check(
                "CATCH004",
                name,
                CheckStatus::Fail,
                "resolves to no address",
                Value::Null,
                "ms",
            )
        }
        Err(e) => {
            return check(
                "CATCH004",
                name,
                CheckStatus::Fail,
                format!("resolve: {e}"),
                Value::Null,
                "ms",
            )
        }
    };
    match probe::tcp_connect_latency(&addr, timeout) {
        Ok(d) => {
            let ms = d.as_secs_f64() * 1e3;
            check(
                "CATCH004",
                name,
                CheckStatus::Ok,
                format!("connected to {addr} in {ms:.2} ms"),
                json!(ms),
                "ms",
            )
        }
        Err(e) => check(
            "CATCH004",
            name,
            CheckStatus::Fail,
            e.to_string(),
            Value::Null,
            "ms",
        ),
    }
}

fn memlock_check() -> Check {
    let name = "locked memory / CAP_IPC_LOCK";
    let budget = match probe::LockedMemoryBudget::current() {
        Ok(b) => b,
        Err(e) => {
            return check(
                "CATCH005",
                name,
                CheckStatus::Fail,
                e.to_string(),
                Value::Null,
                "bytes",
            )
        }
    };
    let shards = catchup_shards::allowed_cores().len().max(1);
    match catchup_shards::io_memory_per_shard(shards, None, budget) {
        Ok(per_shard) => {
            let (st, detail) = match budget.limit_bytes {
                None if budget.cap_ipc_lock => (
                    CheckStatus::Ok,
                    format!("CAP_IPC_LOCK held: no locked-memory limit; {shards} shard(s) get {} KiB io_memory each", per_shard >> 10),
                ),
                None => (
                    CheckStatus::Ok,
                    format!("RLIMIT_MEMLOCK unlimited; {shards} shard(s) get {} KiB io_memory each", per_shard >> 10),
                ),
                Some(limit) => (
                    CheckStatus::Warn,
                    format!(
                        "no CAP_IPC_LOCK; RLIMIT_MEMLOCK {} KiB: {shards} shard(s) get {} KiB io_memory each (grant CAP_IPC_LOCK or raise `ulimit -l` for more)",
                        limit >> 10,
                        per_shard >> 10
                    ),
                ),
            };
            check(
                "CATCH005",
                name,
                st,
                detail,
                json!(budget.limit_bytes),
                "bytes",
            )
        }
        Err(e) => check(
            "CATCH005",
            name,
            CheckStatus::Fail,
            e.to_string(),
            json!(budget.limit_bytes),
            "bytes",
        ),
    }
}

fn af_xdp_check() -> Check {
    if !catchup_io::xdp::program_built() {
        return check(
            "CATCH006",
            "AF_XDP sockets",
            CheckStatus::Warn,
            format!(
                "{}; shred repair will use UDP",
                catchup_io::xdp::PROGRAM_MISSING
            ),
            json!(false),
            "",
        );
    }
    match probe::af_xdp_socket() {
        Ok(()) => check(
            "CATCH006",
            "AF_XDP sockets",
            CheckStatus::Ok,
            "socket(AF_XDP, SOCK_RAW, 0) works",
            json!(true),
            "",
        ),
        Err(e) => check(
            "CATCH006",
            "AF_XDP sockets",
            CheckStatus::Warn,
            format!("{e}; shred repair will use UDP"),
            json!(false),
            "",
        ),
    }
}

fn cores_check() -> Check {
    let name = "cores and SMT siblings";
    let allowed = catchup_shards::allowed_cores();
    match catchup_tuning::read_topology(&catchup_tuning::HostRoot::default()) {
        Ok(t) => {
            let physical = t.physical_cores();
            let smt: Vec<String> = physical
                .iter()
                .filter(|g| g.len() > 1)
                .map(|g| catchup_tuning::topology::format_cpu_list(g))
                .collect();
            let detail = format!(
                "{} CPU(s) online, {} physical core(s), {} thread(s) per core, {} NUMA node(s); this process may use CPUs {}{}",
                t.cpus.len(),
                physical.len(),
                t.threads_per_core(),
                t.numa_nodes.len(),
                catchup_tuning::topology::format_cpu_list(&allowed),
                if smt.is_empty() {
                    String::new()
                } else {
                    format!("; SMT sibling groups: {}", smt.join(" "))
                }
            );
            let st = if allowed.len() < t.cpus.len() {
                CheckStatus::Warn
            } else {
                CheckStatus::Ok
            };
            check("CATCH007", name, st, detail, json!(allowed.len()), "cpus")
        }
        Err(e) => check(
            "CATCH007",
            name,
            CheckStatus::Warn,
            e.to_string(),
            json!(allowed.len()),
            "cpus",
        ),
    }
}

/// Run every check.
pub fn run_checks(cmd: &DoctorCmd) -> Vec<Check> {
    let timeout = Duration::from_millis(cmd.timeout_ms.max(1));
    let mut checks = Vec::new();
    if cmd.sources.is_empty() {
        checks.push(check(
            "CATCH001",
            "bandwidth to sources",
            CheckStatus::Skipped,
            "skipped (no --source given)",
            Value::Null,
            "MB/s",
        ));
    }
    for s in &cmd.sources {
        checks.push(source_check(s, cmd.fetch_kib.max(1) << 10, timeout));
    }
    checks.push(io_uring_check());
    checks.push(disk_check(cmd.datadir.as_ref(), cmd.write_mib));
    if cmd.peers.is_empty() {
        checks.push(check(
            "CATCH004",
            "peer connectivity",
            CheckStatus::Skipped,
            "skipped (no --peer given)",
            Value::Null,
            "ms",
        ));
    }
    for p in &cmd.peers {
        checks.push(peer_check(p, timeout));
    }
    checks.push(memlock_check());
    checks.push(af_xdp_check());
    checks.push(cores_check());
    checks
}

/// Render the checks as an aligned table.
pub fn render_table(checks: &[Check]) -> String {
    let w = checks.iter().map(|c| c.name.len()).max().unwrap_or(4);
    let mut s = format!("{:<8}  {:<7}  {:<w$}  DETAIL\n", "ID", "STATUS", "CHECK");
    for c in checks {
        s.push_str(&format!(
            "{:<8}  {:<7}  {:<w$}  {}\n",
            c.id,
            c.status.as_str(),
            c.name,
            c.detail
        ));
    }
    s
}

pub fn run(cmd: DoctorCmd, _global: &GlobalOpts) -> anyhow::Result<i32> {
    let checks = run_checks(&cmd);
    let ok = !checks.iter().any(|c| c.status == CheckStatus::Fail);
    if cmd.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "checks": checks, "ok": ok }))?
        );
    } else {
        print!("{}", render_table(&checks));
        println!(
            "{}",
            if ok {
                "all required checks passed"
            } else {
                "some required checks FAILED"
            }
        );
    }
    Ok(if ok { 0 } else { 1 })
}

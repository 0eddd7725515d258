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
//! | CATCH008 | memory: `MemAvailable` (and `MemTotal`) of `/proc/meminfo` | less is available than the job needs |
//! | CATCH009 | free disk space on the filesystem of `--datadir` (statvfs) | less is free than the job needs |
//!
//! CATCH001, 003, 004, 008 and 009 are also rated against what the `--job` needs (see
//! [`JOB_NEEDS`]): below the fail level the check fails, below the warn level it warns.
//! `--fix` prints (and with `--apply` loads) the nftables rules that open catchup's ports
//! instead of running the checks (see [`crate::node::doctor_fix`]).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use catchup_http::{
    parse_response_head, write_request, BodyDecoder, ByteRange, Limits, Method, Request, Url,
};
use catchup_io::probe;

use crate::node::opts::GlobalOpts;

/// Audit this host: network to sources and peers, io_uring, disk, locked memory,
/// AF_XDP, cores, memory and free disk space, rated against what a job needs.
#[derive(clap::Args, Debug)]
#[command(after_help = thresholds_help())]
pub struct DoctorCmd {
    /// The job this host is rated for (see the table below). `all` (the default) asks
    /// for the strictest level of every job: a host that passes can run any of them.
    #[arg(long, value_enum, default_value_t = Job::All)]
    pub job: Job,
    /// Data directory to measure write throughput (CATCH003) and free space (CATCH009) in.
    #[arg(long, value_name = "DIR")]
    pub datadir: Option<PathBuf>,
    /// A snapshot/archive source URL (http://host[:port]/path) to measure bandwidth to
    /// (CATCH001). Repeatable.
    #[arg(long = "source", value_name = "URL")]
    pub sources: Vec<String>,
    /// A peer HOST:PORT to measure TCP connect latency to (CATCH004). Repeatable.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub peers: Vec<String>,
    /// Print `{"job":..,"thresholds":{..},"checks":[...],"ok":bool}` instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How much to write in the disk check.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub write_mib: u64,
    /// How much to fetch from each source in the bandwidth check (short fetches from far
    /// sources measure TCP slow start more than the link: raise it for those).
    #[arg(long, default_value_t = 512, value_name = "KIB")]
    pub fetch_kib: u64,
    /// Network timeout for each connect and read.
    #[arg(long, default_value_t = 5_000, value_name = "MS")]
    pub timeout_ms: u64,
    /// CATCH001: fail a source below FAIL MB/s, warn below WARN (default: no warn band),
    /// instead of the job's levels.
    #[arg(long, value_name = "FAIL[,WARN]", value_parser = parse_at_least)]
    pub min_source_mbps: Option<Level>,
    /// CATCH003: fail below FAIL MB/s of O_DIRECT writes, warn below WARN.
    #[arg(long, value_name = "FAIL[,WARN]", value_parser = parse_at_least)]
    pub min_disk_mbps: Option<Level>,
    /// CATCH004: fail a peer whose TCP connect takes more than FAIL ms, warn above WARN.
    #[arg(long, value_name = "FAIL[,WARN]", value_parser = parse_at_most)]
    pub max_peer_ms: Option<Level>,
    /// CATCH008: fail below FAIL GB of available memory, warn below WARN.
    #[arg(long, value_name = "FAIL[,WARN]", value_parser = parse_at_least)]
    pub need_ram_gb: Option<Level>,
    /// CATCH009: fail below FAIL GB free in --datadir, warn below WARN.
    #[arg(long, value_name = "FAIL[,WARN]", value_parser = parse_at_least)]
    pub need_disk_gb: Option<Level>,
    /// Instead of the checks, print the nftables script (`nft -f -`) that opens the ports
    /// below (table inet catchup, chain input), plus the TCP port of the global --admin.
    #[arg(long)]
    pub fix: bool,
    /// With --fix: load the script with `nft -f -` (needs root or CAP_NET_ADMIN).
    #[arg(long, requires = "fix")]
    pub apply: bool,
    /// With --fix: the devp2p port (TCP and UDP discovery).
    #[arg(long, default_value_t = 30303, value_name = "PORT", requires = "fix",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub p2p_port: u16,
    /// With --fix: the Solana gossip port (UDP).
    #[arg(long, default_value_t = 8001, value_name = "PORT", requires = "fix",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub gossip_port: u16,
    /// With --fix: the shred repair port (UDP).
    #[arg(long, default_value_t = 8008, value_name = "PORT", requires = "fix",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub repair_port: u16,
    /// With --fix --apply: the nft binary to run.
    #[arg(long, default_value = "nft", value_name = "PATH", requires = "apply")]
    pub nft: PathBuf,
    /// Read meminfo from this procfs root instead of /proc (for testing).
    #[arg(long, hide = true, default_value = "/proc")]
    pub proc_root: PathBuf,
}

/// The job a host is rated for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// Ethereum snap/fast sync of mainnet (state and history) from devp2p peers.
    EthSync,
    /// Solana catch-up: a mainnet full snapshot from HTTP sources, unpacked and indexed.
    SolanaSync,
    /// Solana shred repair of the gap between a snapshot and the tip.
    Repair,
    /// Every job: the strictest level of each.
    All,
}

impl Job {
    pub fn name(self) -> &'static str {
        match self {
            Job::EthSync => "eth-sync",
            Job::SolanaSync => "solana-sync",
            Job::Repair => "repair",
            Job::All => "all",
        }
    }
}

/// Fail and warn levels of one measured value. For a value that must be high enough
/// (MB/s, GB) the check fails below `fail` and warns below `warn`; for one that must be
/// low enough (ms) it fails above `fail` and warns above `warn`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    pub fail: f64,
    pub warn: f64,
}

const fn lv(fail: f64, warn: f64) -> Level {
    Level { fail, warn }
}

/// What one job needs of the host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Needs {
    /// CATCH001, per source, MB/s (at least).
    pub source_mbps: Level,
    /// CATCH003, O_DIRECT sequential writes of 1 MiB, MB/s (at least).
    pub disk_mbps: Level,
    /// CATCH004, TCP connect (about one round trip), ms (at most).
    pub peer_ms: Level,
    /// CATCH008, MemAvailable, GB (at least).
    pub ram_gb: Level,
    /// CATCH009, free space in the datadir, GB (at least).
    pub free_disk_gb: Level,
}

/// The levels every job is rated against (`--job all` takes the strictest of each).
/// GB and MB are 10^9 and 10^6 bytes.
pub const JOB_NEEDS: [(Job, Needs); 3] = [
    (
        Job::EthSync,
        Needs {
            // era1 history archives (pre-merge ≈ 430 GB): 20 MB/s ≈ 6 h, 50 MB/s ≈ 2.5 h.
            source_mbps: lv(20.0, 50.0),
            // ≈ 1 TB written once; under 200 MB/s sequential is a spinning or throttled disk whose random writes stall healing (a SATA SSD does ≈ 500).
            disk_mbps: lv(200.0, 400.0),
            // snap requests are one round trip each: 500 ms caps a peer at 2 requests/s, 150 ms at ≈ 7.
            peer_ms: lv(500.0, 150.0),
            // the store index keeps recent keys in memory within --memory-budget (a quarter of 512 MiB per shard) and older ones in sorted files on disk, with ≈ 1.4 B per key of filters and fences in memory (io's `index_footprint` example) × ≈ 2 G mainnet records ≈ 3 GB, + per shard the budget and ≈ 150 MB of responses in flight, + the OS; warn leaves page cache for index blocks and trie reads.
            ram_gb: lv(16.0, 32.0),
            // state as trie nodes ≈ 300 GB + headers, bodies and receipts ≈ 650 GB; warn leaves half again for growth.
            free_disk_gb: lv(1000.0, 1500.0),
        },
    ),
    (
        Job::SolanaSync,
        Needs {
            // a ≈ 100 GB mainnet full snapshot: 30 MB/s ≈ 55 min from one source, 60 MB/s ≈ 28 min.
            source_mbps: lv(30.0, 60.0),
            // unpacked account files are ≈ 3× the zstd archive: 60 MB/s downloaded ≈ 180 MB/s written, 120 MB/s from several sources ≈ 360.
            disk_mbps: lv(200.0, 400.0),
            // gossip and repair with the cluster: at 250 ms a repaired shred comes back over half a 400 ms slot late.
            peer_ms: lv(250.0, 100.0),
            // the index keeps 21–43 B per account (16-byte fingerprint slots at most 3/4 full: 26.8 B measured at 10 M accounts) × ≈ 1 G mainnet accounts ≈ 43 GB, + ≈ 16 GB of pipeline and OS; warn leaves page cache for the mapped account files.
            ram_gb: lv(64.0, 128.0),
            // the ≈ 100 GB archive stays until verified + ≈ 450 GB of unpacked account files; warn leaves ledger room for repair.
            free_disk_gb: lv(600.0, 1000.0),
        },
    ),
    (
        Job::Repair,
        Needs {
            // repair downloads no archive; a source given anyway must outrun the cluster's ≈ 5 MB/s of shreds (≈ 1,600 × 1.2 KB per 400 ms slot).
            source_mbps: lv(5.0, 10.0),
            // shreds land at ≈ 5 MB/s: 50 MB/s is 10× headroom for the store's appends and checkpoints.
            disk_mbps: lv(50.0, 100.0),
            // each request waits one round trip: 200 ms is half a slot, 50 ms keeps the repair window turning 8× per slot.
            peer_ms: lv(200.0, 50.0),
            // a 10,000-slot gap ≈ 20 M shreds × ≈ 100 B of index and window state ≈ 2 GB, + the OS.
            ram_gb: lv(4.0, 8.0),
            // a 10,000-slot gap ≈ 2,000 shreds × 1.2 KB × 10,000 ≈ 24 GB; twice that for headroom.
            free_disk_gb: lv(50.0, 100.0),
        },
    ),
];

/// One rated quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    SourceMbps,
    DiskMbps,
    PeerMs,
    RamGb,
    FreeDiskGb,
}

impl Metric {
    pub const ALL: [Metric; 5] = [
        Metric::SourceMbps,
        Metric::DiskMbps,
        Metric::PeerMs,
        Metric::RamGb,
        Metric::FreeDiskGb,
    ];

    /// Whether more is better (MB/s, GB) or less is (ms).
    pub fn at_least(self) -> bool {
        !matches!(self, Metric::PeerMs)
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::SourceMbps | Metric::DiskMbps => "MB/s",
            Metric::PeerMs => "ms",
            Metric::RamGb | Metric::FreeDiskGb => "GB",
        }
    }

    /// The JSON key and the flag that overrides the job's level.
    pub fn key(self) -> &'static str {
        match self {
            Metric::SourceMbps => "source_mbps",
            Metric::DiskMbps => "disk_mbps",
            Metric::PeerMs => "peer_ms",
            Metric::RamGb => "ram_gb",
            Metric::FreeDiskGb => "free_disk_gb",
        }
    }

    pub fn flag(self) -> &'static str {
        match self {
            Metric::SourceMbps => "--min-source-mbps",
            Metric::DiskMbps => "--min-disk-mbps",
            Metric::PeerMs => "--max-peer-ms",
            Metric::RamGb => "--need-ram-gb",
            Metric::FreeDiskGb => "--need-disk-gb",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            Metric::SourceMbps => "CATCH001",
            Metric::DiskMbps => "CATCH003",
            Metric::PeerMs => "CATCH004",
            Metric::RamGb => "CATCH008",
            Metric::FreeDiskGb => "CATCH009",
        }
    }

    fn of(self, n: &Needs) -> Level {
        match self {
            Metric::SourceMbps => n.source_mbps,
            Metric::DiskMbps => n.disk_mbps,
            Metric::PeerMs => n.peer_ms,
            Metric::RamGb => n.ram_gb,
            Metric::FreeDiskGb => n.free_disk_gb,
        }
    }
}

/// The levels of `metric` for `job`; for [`Job::All`] the strictest over every job.
pub fn job_level(job: Job, metric: Metric) -> Level {
    let levels = JOB_NEEDS
        .iter()
        .filter(|(j, _)| job == Job::All || *j == job)
        .map(|(_, n)| metric.of(n));
    let pick = |a: f64, b: f64| {
        if metric.at_least() {
            a.max(b)
        } else {
            a.min(b)
        }
    };
    levels
        .reduce(|a, b| lv(pick(a.fail, b.fail), pick(a.warn, b.warn)))
        .expect("every job is in JOB_NEEDS")
}

/// The levels one check is rated against and where they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Rated {
    pub metric: Metric,
    pub level: Level,
    /// `eth-sync`, `all jobs` or the overriding flag.
    pub by: String,
}

impl Rated {
    pub fn new(cmd: &DoctorCmd, metric: Metric) -> Rated {
        let flag = match metric {
            Metric::SourceMbps => cmd.min_source_mbps,
            Metric::DiskMbps => cmd.min_disk_mbps,
            Metric::PeerMs => cmd.max_peer_ms,
            Metric::RamGb => cmd.need_ram_gb,
            Metric::FreeDiskGb => cmd.need_disk_gb,
        };
        match flag {
            Some(level) => Rated {
                metric,
                level,
                by: metric.flag().to_string(),
            },
            None => Rated {
                metric,
                level: job_level(cmd.job, metric),
                by: match cmd.job {
                    Job::All => "all jobs".to_string(),
                    j => j.name().to_string(),
                },
            },
        }
    }

    /// Ok, warn or fail for a measured `value`.
    pub fn rate(&self, value: f64) -> CheckStatus {
        let (fail, warn) = if self.metric.at_least() {
            (value < self.level.fail, value < self.level.warn)
        } else {
            (value > self.level.fail, value > self.level.warn)
        };
        if fail {
            CheckStatus::Fail
        } else if warn {
            CheckStatus::Warn
        } else {
            CheckStatus::Ok
        }
    }

    /// `eth-sync needs ≥ 200 MB/s, warn below 400`.
    pub fn describe(&self) -> String {
        let verb = if self.by == "all jobs" {
            "need"
        } else {
            "needs"
        };
        let (cmp, warn_word) = if self.metric.at_least() {
            ("≥", "below")
        } else {
            ("≤", "above")
        };
        let mut s = format!(
            "{} {verb} {cmp} {} {}",
            self.by,
            self.level.fail,
            self.metric.unit()
        );
        if self.level.warn != self.level.fail {
            s.push_str(&format!(", warn {warn_word} {}", self.level.warn));
        }
        s
    }

    pub fn to_json(&self) -> Value {
        let (f, w) = if self.metric.at_least() {
            ("fail_below", "warn_below")
        } else {
            ("fail_above", "warn_above")
        };
        json!({
            "metric": self.metric.key(),
            "by": self.by,
            f: self.level.fail,
            w: self.level.warn,
            "unit": self.metric.unit(),
        })
    }
}

fn parse_level(s: &str, at_least: bool) -> Result<Level, String> {
    let num = |t: &str| -> Result<f64, String> {
        let v: f64 = t
            .trim()
            .parse()
            .map_err(|_| format!("{t:?} is not a number"))?;
        if !v.is_finite() || v < 0.0 {
            return Err(format!("{t:?} must be a finite number ≥ 0"));
        }
        Ok(v)
    };
    let (fail, warn) = match s.split_once(',') {
        None => {
            let f = num(s)?;
            (f, f)
        }
        Some((f, w)) => (num(f)?, num(w)?),
    };
    if at_least && warn < fail {
        return Err(format!(
            "the warn level {warn} is below the fail level {fail} (FAIL,WARN with WARN ≥ FAIL)"
        ));
    }
    if !at_least && warn > fail {
        return Err(format!(
            "the warn level {warn} is above the fail level {fail} (FAIL,WARN with WARN ≤ FAIL)"
        ));
    }
    Ok(Level { fail, warn })
}

fn parse_at_least(s: &str) -> Result<Level, String> {
    parse_level(s, true)
}

fn parse_at_most(s: &str) -> Result<Level, String> {
    parse_level(s, false)
}

/// The thresholds table as `--help` shows it.
pub fn thresholds_help() -> String {
    let mut s = String::from(
        "Thresholds per --job (fail level / warn level; `all` takes the strictest; GB = 10^9 bytes):\n\n",
    );
    s.push_str(&format!(
        "  {:<22} {:>13} {:>13} {:>13} {:>13}\n",
        "check", "eth-sync", "solana-sync", "repair", "all"
    ));
    for m in Metric::ALL {
        let what = match m {
            Metric::SourceMbps => "CATCH001 source MB/s ≥",
            Metric::DiskMbps => "CATCH003 disk MB/s ≥",
            Metric::PeerMs => "CATCH004 peer ms ≤",
            Metric::RamGb => "CATCH008 RAM GB ≥",
            Metric::FreeDiskGb => "CATCH009 free GB ≥",
        };
        s.push_str(&format!("  {what:<22}"));
        for job in [Job::EthSync, Job::SolanaSync, Job::Repair, Job::All] {
            let l = job_level(job, m);
            s.push_str(&format!(" {:>13}", format!("{} / {}", l.fail, l.warn)));
        }
        s.push('\n');
    }
    s.push_str(
        "\nOverride one with its flag (--min-source-mbps, --min-disk-mbps, --max-peer-ms, \
         --need-ram-gb, --need-disk-gb FAIL[,WARN]).\nExit status: 0 when no check failed, 1 when one did.",
    );
    s
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
    /// The levels the value was rated against (`null` for checks without levels).
    pub thresholds: Value,
}

impl Check {
    /// Rate `value` with `rated`: the status becomes the worse of the current one and the
    /// rating, and the detail names the levels compared with.
    fn rated(mut self, value: f64, rated: &Rated) -> Check {
        let st = rated.rate(value);
        if severity(st) > severity(self.status) {
            self.status = st;
        }
        self.detail.push_str(&format!(" ({})", rated.describe()));
        self.with_levels(rated)
    }

    fn with_levels(mut self, rated: &Rated) -> Check {
        self.thresholds = rated.to_json();
        self
    }
}

fn severity(s: CheckStatus) -> u8 {
    match s {
        CheckStatus::Skipped => 0,
        CheckStatus::Ok => 1,
        CheckStatus::Warn => 2,
        CheckStatus::Fail => 3,
    }
}

/// A short name of what a check id measures, for the summary line.
pub fn check_label(id: &str) -> &'static str {
    match id {
        "CATCH001" => "source bandwidth",
        "CATCH002" => "io_uring",
        "CATCH003" => "disk write",
        "CATCH004" => "peer latency",
        "CATCH005" => "locked memory",
        "CATCH006" => "AF_XDP",
        "CATCH007" => "cores",
        "CATCH008" => "RAM",
        "CATCH009" => "free disk",
        _ => "check",
    }
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
        thresholds: Value::Null,
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

fn source_check(url: &str, bytes: u64, timeout: Duration, rated: &Rated) -> Check {
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
            check("CATCH001", name, st, detail, json!(mbps), "MB/s").rated(mbps, rated)
        }
        Err(e) => {
            check("CATCH001", name, CheckStatus::Fail, e, Value::Null, "MB/s").with_levels(rated)
        }
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

fn disk_check(datadir: Option<&PathBuf>, write_mib: u64, rated: &Rated) -> Check {
    let name = "O_DIRECT write throughput";
    let Some(dir) = datadir else {
        return check(
            "CATCH003",
            name,
            CheckStatus::Skipped,
            "skipped (no --datadir given)",
            Value::Null,
            "MB/s",
        )
        .with_levels(rated);
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return check(
            "CATCH003",
            name,
            CheckStatus::Fail,
            format!(
                "cannot create {} (give a writable --datadir): {e}",
                dir.display()
            ),
            Value::Null,
            "MB/s",
        )
        .with_levels(rated);
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
            .rated(mbps, rated)
        }
        Err(e) => check(
            "CATCH003",
            name,
            CheckStatus::Fail,
            e.to_string(),
            Value::Null,
            "MB/s",
        )
        .with_levels(rated),
    }
}

fn peer_check(peer: &str, timeout: Duration, rated: &Rated) -> Check {
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
            .with_levels(rated)
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
            .with_levels(rated)
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
            .rated(ms, rated)
        }
        Err(e) => check(
            "CATCH004",
            name,
            CheckStatus::Fail,
            e.to_string(),
            Value::Null,
            "ms",
        )
        .with_levels(rated),
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

/// Bytes to GB (10^9).
fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

fn ram_check(proc_root: &Path, rated: &Rated) -> Check {
    let name = "memory available";
    match probe::read_meminfo(proc_root) {
        Ok(m) => {
            let (avail, total) = (gb(m.available_bytes), gb(m.total_bytes));
            let mut c = check(
                "CATCH008",
                name,
                CheckStatus::Ok,
                format!("{avail:.1} GB available of {total:.1} GB"),
                json!(avail),
                "GB",
            )
            .rated(avail, rated);
            if c.status == CheckStatus::Fail {
                c.detail.push_str(&if total < rated.level.fail {
                    "; the host has too little memory in total".to_string()
                } else {
                    format!(
                        "; other processes hold {:.1} GB: stop them or free their memory",
                        total - avail
                    )
                });
            }
            c
        }
        Err(e) => check(
            "CATCH008",
            name,
            CheckStatus::Warn,
            format!("{e}; memory not rated"),
            Value::Null,
            "GB",
        )
        .with_levels(rated),
    }
}

fn free_disk_check(datadir: Option<&PathBuf>, rated: &Rated) -> Check {
    let name = "free disk space";
    let Some(dir) = datadir else {
        return check(
            "CATCH009",
            name,
            CheckStatus::Skipped,
            "skipped (no --datadir given)",
            Value::Null,
            "GB",
        )
        .with_levels(rated);
    };
    // The datadir may not exist yet: its filesystem is that of its nearest existing
    // ancestor (a relative path's last ancestor is the empty path: the current directory).
    let on: &Path = dir
        .ancestors()
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    match probe::free_disk_bytes(on) {
        Ok(bytes) => {
            let free = gb(bytes);
            check(
                "CATCH009",
                name,
                CheckStatus::Ok,
                format!("{free:.1} GB free on the filesystem of {}", dir.display()),
                json!(free),
                "GB",
            )
            .rated(free, rated)
        }
        Err(e) => check(
            "CATCH009",
            name,
            CheckStatus::Fail,
            e.to_string(),
            Value::Null,
            "GB",
        )
        .with_levels(rated),
    }
}

/// Run every check.
pub fn run_checks(cmd: &DoctorCmd) -> Vec<Check> {
    let timeout = Duration::from_millis(cmd.timeout_ms.max(1));
    let rated = |m| Rated::new(cmd, m);
    let mut checks = Vec::new();
    if cmd.sources.is_empty() {
        checks.push(
            check(
                "CATCH001",
                "bandwidth to sources",
                CheckStatus::Skipped,
                "skipped (no --source given)",
                Value::Null,
                "MB/s",
            )
            .with_levels(&rated(Metric::SourceMbps)),
        );
    }
    for s in &cmd.sources {
        checks.push(source_check(
            s,
            cmd.fetch_kib.max(1) << 10,
            timeout,
            &rated(Metric::SourceMbps),
        ));
    }
    checks.push(io_uring_check());
    checks.push(disk_check(
        cmd.datadir.as_ref(),
        cmd.write_mib,
        &rated(Metric::DiskMbps),
    ));
    if cmd.peers.is_empty() {
        checks.push(
            check(
                "CATCH004",
                "peer connectivity",
                CheckStatus::Skipped,
                "skipped (no --peer given)",
                Value::Null,
                "ms",
            )
            .with_levels(&rated(Metric::PeerMs)),
        );
    }
    for p in &cmd.peers {
        checks.push(peer_check(p, timeout, &rated(Metric::PeerMs)));
    }
    checks.push(memlock_check());
    checks.push(af_xdp_check());
    checks.push(cores_check());
    checks.push(ram_check(&cmd.proc_root, &rated(Metric::RamGb)));
    checks.push(free_disk_check(
        cmd.datadir.as_ref(),
        &rated(Metric::FreeDiskGb),
    ));
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

/// The line under the table: which checks failed (or warned).
pub fn summary_line(checks: &[Check]) -> String {
    let list = |status: CheckStatus| -> (usize, String) {
        let hits: Vec<&Check> = checks.iter().filter(|c| c.status == status).collect();
        let mut ids: Vec<&str> = hits.iter().map(|c| c.id).collect();
        ids.dedup();
        let names: Vec<String> = ids
            .iter()
            .map(|id| format!("{id} {}", check_label(id)))
            .collect();
        (hits.len(), names.join(", "))
    };
    let plural = |n: usize| if n == 1 { "check" } else { "checks" };
    let (failed, failed_names) = list(CheckStatus::Fail);
    if failed > 0 {
        return format!(
            "{failed} {} failed: {failed_names} — see above (rate one job with --job, or \
             set the levels this host must meet with --min-*/--max-*/--need-* flags)",
            plural(failed)
        );
    }
    let (warned, warned_names) = list(CheckStatus::Warn);
    if warned > 0 {
        format!(
            "no check failed; {warned} {} warned: {warned_names}",
            plural(warned)
        )
    } else {
        "all checks passed".to_string()
    }
}

pub fn run(cmd: DoctorCmd, global: &GlobalOpts) -> anyhow::Result<i32> {
    if cmd.fix {
        return crate::node::doctor_fix::run(&cmd, global);
    }
    let checks = run_checks(&cmd);
    let ok = !checks.iter().any(|c| c.status == CheckStatus::Fail);
    if cmd.json {
        let thresholds: serde_json::Map<String, Value> = Metric::ALL
            .iter()
            .map(|&m| (m.key().to_string(), Rated::new(&cmd, m).to_json()))
            .collect();
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| c.status == CheckStatus::Fail)
            .map(|c| c.id)
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "job": cmd.job.name(),
                "thresholds": thresholds,
                "checks": checks,
                "failed": failed,
                "ok": ok,
            }))?
        );
    } else {
        print!("{}", render_table(&checks));
        println!("{}", summary_line(&checks));
    }
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_takes_the_strictest_level_of_every_job() {
        for m in Metric::ALL {
            let all = job_level(Job::All, m);
            for (job, _) in JOB_NEEDS {
                let l = job_level(job, m);
                if m.at_least() {
                    assert!(all.fail >= l.fail && all.warn >= l.warn, "{m:?} {job:?}");
                    assert!(
                        l.warn >= l.fail,
                        "{m:?} {job:?}: warn level is the looser one"
                    );
                } else {
                    assert!(all.fail <= l.fail && all.warn <= l.warn, "{m:?} {job:?}");
                    assert!(
                        l.warn <= l.fail,
                        "{m:?} {job:?}: warn level is the looser one"
                    );
                }
            }
        }
        assert_eq!(job_level(Job::All, Metric::PeerMs), lv(200.0, 50.0));
        assert_eq!(job_level(Job::EthSync, Metric::DiskMbps), lv(200.0, 400.0));
    }

    #[test]
    fn rating_and_description() {
        let r = Rated {
            metric: Metric::DiskMbps,
            level: lv(200.0, 400.0),
            by: "eth-sync".into(),
        };
        assert_eq!(r.rate(412.0), CheckStatus::Ok);
        assert_eq!(r.rate(300.0), CheckStatus::Warn);
        assert_eq!(r.rate(199.9), CheckStatus::Fail);
        assert_eq!(r.describe(), "eth-sync needs ≥ 200 MB/s, warn below 400");
        let p = Rated {
            metric: Metric::PeerMs,
            level: lv(500.0, 150.0),
            by: "all jobs".into(),
        };
        assert_eq!(p.rate(20.0), CheckStatus::Ok);
        assert_eq!(p.rate(200.0), CheckStatus::Warn);
        assert_eq!(p.rate(501.0), CheckStatus::Fail);
        assert_eq!(p.describe(), "all jobs need ≤ 500 ms, warn above 150");
        assert_eq!(p.to_json()["fail_above"], 500.0);
    }

    #[test]
    fn level_flags_parse_and_reject() {
        assert_eq!(parse_at_least("200"), Ok(lv(200.0, 200.0)));
        assert_eq!(parse_at_least("200,400"), Ok(lv(200.0, 400.0)));
        assert!(parse_at_least("400,200").is_err());
        assert_eq!(parse_at_most("500,150"), Ok(lv(500.0, 150.0)));
        assert!(parse_at_most("150,500").is_err());
        assert!(parse_at_least("-1").is_err());
        assert!(parse_at_least("NaN").is_err());
        assert!(parse_at_least("fast").is_err());
    }

    #[test]
    fn summary_names_failed_checks() {
        let c = |id, st| check(id, "x", st, "d", Value::Null, "");
        let checks = vec![
            c("CATCH002", CheckStatus::Ok),
            c("CATCH003", CheckStatus::Fail),
            c("CATCH006", CheckStatus::Warn),
            c("CATCH009", CheckStatus::Fail),
        ];
        assert_eq!(
            summary_line(&checks),
            "2 checks failed: CATCH003 disk write, CATCH009 free disk — see above (rate one \
             job with --job, or set the levels this host must meet with --min-*/--max-*/--need-* \
             flags)"
        );
        assert_eq!(summary_line(&checks[..3][..1]), "all checks passed");
        assert_eq!(
            summary_line(&[c("CATCH006", CheckStatus::Warn)]),
            "no check failed; 1 check warned: CATCH006 AF_XDP"
        );
    }
}

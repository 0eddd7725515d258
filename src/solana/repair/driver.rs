//! Running the repair engine on the network: per shard, one engine over one transport
//! (a glommio UDP socket, or an AF_XDP socket on the NIC queue the shard owns), and the
//! multi-shard entry point [`repair`] that the CLI and the Solana sync call.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use catchup_shred::ed25519_dalek::SigningKey;
use catchup_shred::repair::Pubkey;

use super::engine::{Action, EngineConfig, LeaderSchedule, PeerId, Progress, RepairEngine};

/// A repair peer: its serve-repair address and, if known, its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    pub addr: SocketAddrV4,
    pub key: Option<Pubkey>,
}

impl std::str::FromStr for PeerSpec {
    type Err = String;
    /// `ADDR` or `PUBKEY@ADDR` (pubkey in base58).
    fn from_str(s: &str) -> Result<Self, String> {
        let (key, addr) = match s.split_once('@') {
            Some((k, a)) => (Some(parse_pubkey(k)?), a),
            None => (None, s),
        };
        let addr = addr
            .parse::<SocketAddrV4>()
            .map_err(|e| format!("peer address {addr:?}: {e} (IPv4 ADDR:PORT expected)"))?;
        Ok(PeerSpec { addr, key })
    }
}

pub fn parse_pubkey(s: &str) -> Result<Pubkey, String> {
    let v = catchup_shred::bs58::decode(s)
        .into_vec()
        .map_err(|e| format!("pubkey {s:?}: {e}"))?;
    v.try_into()
        .map_err(|v: Vec<u8>| format!("pubkey {s:?}: {} bytes, 32 expected", v.len()))
}

pub fn pubkey_to_string(k: &Pubkey) -> String {
    catchup_shred::bs58::encode(k).into_string()
}

/// Which network path the shards use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetPath {
    /// Kernel UDP sockets through glommio, bound to `bind` (port 0: any).
    Udp { bind: Ipv4Addr },
    /// AF_XDP on `iface`, shard `i` on rx queue `queues[i]`, repair port `port`; falls back
    /// to UDP (logged) when AF_XDP cannot be set up.
    Xdp {
        iface: String,
        queues: Vec<u32>,
        port: u16,
        bind: Ipv4Addr,
    },
}

#[derive(Clone, Debug)]
pub struct RepairJob {
    pub from_slot: u64,
    pub to_slot: u64,
    pub peers: Vec<PeerSpec>,
    pub leaders: LeaderSchedule,
    pub identity: SigningKey,
    pub shards: usize,
    pub path: NetPath,
    /// Give up after this long.
    pub deadline_ms: u64,
    pub request_timeout_ms: u64,
    pub seed: u64,
    /// CPUs for the shards (None: the CPUs this process may use).
    pub cores: Option<Vec<usize>>,
    /// Keep verified shreds here, one store per shard (`shard-<i>`), and load them at start
    /// so that a restart requests only what is missing (UDP and AF_XDP paths).
    pub store_dir: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ShardOutcome {
    pub shard: usize,
    /// "udp" or "xdp"
    pub path: String,
    /// Why AF_XDP was not used, when it was asked for.
    pub fallback_reason: Option<String>,
    pub elapsed_ms: u64,
    pub shreds_per_s: f64,
    pub progress: Progress,
    /// This shard's store of verified shreds, if any.
    pub store: Option<StoreReport>,
    #[serde(skip)]
    pub slots: BTreeMap<u64, Vec<Vec<u8>>>,
}

/// A shard's store of verified shreds at start and during the run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StoreReport {
    pub dir: String,
    /// Records found damaged (checksum) at open: dropped; their shreds are requested again.
    pub damaged_records: u64,
    /// Shreds persisted during this run.
    pub shreds_written: u64,
    /// A write error stopped persisting (the repair went on).
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairOutcome {
    pub complete: bool,
    pub slots_total: u64,
    pub slots_complete: u64,
    pub shreds: u64,
    /// Slots completed from the shards' stores alone, and stored shreds used.
    pub slots_loaded: u64,
    pub shreds_loaded: u64,
    /// Stored shreds dropped: damaged records plus shreds failing verification.
    pub store_dropped: u64,
    /// Requests for a shred loaded from a store (never expected).
    pub requests_for_loaded: u64,
    pub elapsed_ms: u64,
    pub shreds_per_s: f64,
    /// Complete slots per second of the whole run.
    pub slots_per_s: f64,
    pub shards: Vec<ShardOutcome>,
    #[serde(skip)]
    pub slots: BTreeMap<u64, Vec<Vec<u8>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("repair shard {shard}: UDP socket on {addr}: {source}")]
    Bind {
        shard: usize,
        addr: String,
        source: std::io::Error,
    },
    #[error("repair shard {shard}: UDP: {source}")]
    Udp {
        shard: usize,
        source: std::io::Error,
    },
    #[error("repair: no peers given")]
    NoPeers,
    #[error("repair: slot range {from}..={to} is empty")]
    EmptyRange { from: u64, to: u64 },
    #[error("repair: shard runtime: {0}")]
    Runtime(String),
    #[error("repair shard {shard}: shred store: {source} (check --datadir)")]
    Store {
        shard: usize,
        source: catchup_io::store::StoreError,
    },
}

/// Store kind of a verified data shred; key: slot (u64 BE) ++ index (u32 BE).
pub const KIND_SHRED: u8 = 1;

fn shred_key(slot: u64, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&slot.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

fn parse_shred_key(k: &[u8]) -> Option<(u64, u32)> {
    let k: &[u8; 12] = k.try_into().ok()?;
    Some((
        u64::from_be_bytes(k[..8].try_into().ok()?),
        u32::from_be_bytes(k[8..].try_into().ok()?),
    ))
}

fn store_options() -> catchup_io::store::StoreOptions {
    catchup_io::store::StoreOptions {
        segment_size_bytes: 64 << 20,
        write_buffer_bytes: 256 << 10,
        max_key_bytes: 12,
        max_value_bytes: 4096,
        ..Default::default()
    }
}

/// Open shard `shard`'s store in `dir` and feed its shreds to `engine` (which verifies
/// each). A store damaged in the middle does not open: its intact records are salvaged
/// into a fresh store and the damaged ones counted.
pub async fn open_shard_store(
    dir: &Path,
    shard: usize,
    engine: &mut RepairEngine,
) -> Result<(catchup_io::store::Store, StoreReport), DriverError> {
    use catchup_io::store::{salvage, Store, StoreError};
    let err = |source| DriverError::Store { shard, source };
    let mut report = StoreReport {
        dir: dir.display().to_string(),
        ..Default::default()
    };
    let mut loaded = 0u64;
    let mut malformed = 0u64;
    let mut feed = |engine: &mut RepairEngine, key: &[u8], value: &[u8]| match parse_shred_key(key)
    {
        Some((slot, index)) => {
            if engine.preload(slot, index, value) == super::engine::Preload::Loaded {
                loaded += 1;
            }
        }
        None => malformed += 1,
    };
    // Keys fed before a scan found damage: the salvage does not feed them twice.
    let mut seen: std::collections::HashSet<[u8; 12]> = Default::default();
    // Damage found while scanning an open store, or by the open itself.
    let damage = match Store::open(dir, store_options()).await {
        Ok(store) => {
            let mut damage = None;
            {
                let mut scan = store.scan(KIND_SHRED);
                while let Some(r) = scan.next().await {
                    match r {
                        Ok(rec) => {
                            if let Ok(k) = <[u8; 12]>::try_from(rec.key) {
                                seen.insert(k);
                            }
                            feed(engine, rec.key, rec.value)
                        }
                        Err(e) => {
                            damage = Some(e);
                            break;
                        }
                    }
                }
            }
            match damage {
                None => Ok(store),
                Some(e) => {
                    drop(store);
                    Err(e)
                }
            }
        }
        Err(e @ StoreError::Corrupt { .. }) => Err(e),
        Err(e) => return Err(err(e)),
    };
    let store = match damage {
        Ok(store) => store,
        Err(e) => {
            tracing::warn!(shard, error = %e, "repair store damaged: salvaging its intact records");
            let opts = store_options();
            let salvaged = salvage::salvage(dir, &opts).map_err(err)?;
            report.damaged_records = salvaged.damaged.max(1);
            let store = salvage::rebuild(dir, opts, &salvaged).await.map_err(err)?;
            for ((kind, key), value) in &salvaged.records {
                let fed = <[u8; 12]>::try_from(&key[..]).is_ok_and(|k| seen.contains(&k));
                if *kind == KIND_SHRED && !fed {
                    feed(engine, key, value);
                }
            }
            store
        }
    };
    let p = engine.progress();
    if report.damaged_records > 0 || p.store_rejected > 0 || malformed > 0 {
        tracing::warn!(
            shard,
            damaged_records = report.damaged_records,
            failed_verification = p.store_rejected,
            malformed_keys = malformed,
            "stored shreds dropped: they are requested from peers again"
        );
    }
    report.damaged_records += malformed;
    tracing::info!(shard, shreds_loaded = loaded, dir = %dir.display(), "repair store loaded");
    Ok((store, report))
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn engine_for(
    job: &RepairJob,
    shard: usize,
) -> (RepairEngine, HashMap<SocketAddrV4, PeerId>) {
    let cfg = EngineConfig {
        shard,
        shards: job.shards.max(1),
        request_timeout_ms: job.request_timeout_ms,
        seed: job.seed,
        persist: job.store_dir.is_some(),
        ..EngineConfig::new(job.from_slot, job.to_slot)
    };
    let mut engine = RepairEngine::new(cfg, job.identity.clone(), job.leaders.clone());
    let mut by_addr = HashMap::new();
    let mut addrs = Vec::new();
    for p in &job.peers {
        let id = engine.add_peer(p.key);
        by_addr.insert(p.addr, id);
        addrs.push(p.addr);
    }
    (engine, by_addr)
}

/// A shard's store of verified shreds while it repairs: loaded into the engine at open,
/// written as the engine verifies shreds, made durable at most every 100 ms (group
/// commit). A write error stops persisting and is reported; the repair goes on.
pub(crate) struct ShardStore {
    shard: usize,
    store: Option<catchup_io::store::Store>,
    report: Option<StoreReport>,
    dirty: bool,
    last_flush: Instant,
}

impl ShardStore {
    /// Open `job.store_dir/shard-<shard>` (when the job has a store) and load it.
    pub(crate) async fn open(
        job: &RepairJob,
        shard: usize,
        engine: &mut RepairEngine,
    ) -> Result<ShardStore, DriverError> {
        let (store, report) = match &job.store_dir {
            Some(dir) => {
                let (s, r) =
                    open_shard_store(&dir.join(format!("shard-{shard}")), shard, engine).await?;
                (Some(s), Some(r))
            }
            None => (None, None),
        };
        Ok(ShardStore {
            shard,
            store,
            report,
            dirty: false,
            last_flush: Instant::now(),
        })
    }

    /// Write one verified shred.
    pub(crate) async fn put(&mut self, slot: u64, index: u32, shred: &[u8]) {
        if let (Some(s), Some(r)) = (self.store.as_mut(), self.report.as_mut()) {
            match s.put(KIND_SHRED, &shred_key(slot, index), shred).await {
                Ok(_) => {
                    r.shreds_written += 1;
                    self.dirty = true;
                }
                Err(e) => store_failed(self.shard, &mut self.store, r, e),
            }
        }
    }

    /// Flush when something was written and the group-commit interval has passed.
    pub(crate) async fn maybe_flush(&mut self) {
        const FLUSH_EVERY: Duration = Duration::from_millis(100);
        if !self.dirty || self.last_flush.elapsed() < FLUSH_EVERY {
            return;
        }
        if let (Some(s), Some(r)) = (self.store.as_mut(), self.report.as_mut()) {
            if let Err(e) = s.flush().await {
                store_failed(self.shard, &mut self.store, r, e);
            }
        }
        self.dirty = false;
        self.last_flush = Instant::now();
    }

    /// Close the store (flushing what is left) and return its report.
    pub(crate) async fn close(mut self) -> Option<StoreReport> {
        if let (Some(s), Some(r)) = (self.store.take(), self.report.as_mut()) {
            if let Err(e) = s.close().await {
                r.error.get_or_insert(e.to_string());
            }
        }
        self.report
    }
}

/// One shard over a kernel UDP socket (glommio).
pub async fn run_shard_udp(
    job: &RepairJob,
    shard: usize,
    bind: Ipv4Addr,
) -> Result<ShardOutcome, DriverError> {
    let (mut engine, by_addr) = engine_for(job, shard);
    let mut store = ShardStore::open(job, shard, &mut engine).await?;
    let addrs: Vec<SocketAddrV4> = job.peers.iter().map(|p| p.addr).collect();
    let bind_addr = SocketAddrV4::new(bind, 0);
    let sock = glommio::net::UdpSocket::bind(bind_addr).map_err(|e| DriverError::Bind {
        shard,
        addr: bind_addr.to_string(),
        source: e.into(),
    })?;
    set_socket_buffers(&sock, 8 << 20);
    sock.set_read_timeout(Some(Duration::from_millis(2)))
        .map_err(|e| DriverError::Udp {
            shard,
            source: e.into(),
        })?;
    let start = Instant::now();
    let mut slots = BTreeMap::new();
    let mut buf = vec![0u8; 2048];
    let mut last_tick = 0u64;
    let mut last_log = Instant::now();
    engine.on_tick(unix_ms());
    while !engine.is_done() && (start.elapsed().as_millis() as u64) < job.deadline_ms {
        match sock.recv_from(&mut buf).await {
            Ok((n, SocketAddr::V4(from))) => {
                if let Some(peer) = by_addr.get(&from) {
                    engine.on_packet(unix_ms(), *peer, &buf[..n]);
                }
            }
            Ok(_) => {}
            Err(glommio::GlommioError::TimedOut(_)) => {}
            Err(e) => {
                let e: std::io::Error = e.into();
                if e.kind() != std::io::ErrorKind::TimedOut
                    && e.kind() != std::io::ErrorKind::WouldBlock
                {
                    return Err(DriverError::Udp { shard, source: e });
                }
            }
        }
        log_progress(&engine, shard, "udp", start, &mut last_log);
        let now = unix_ms();
        if now.saturating_sub(last_tick) >= 2 {
            engine.on_tick(now);
            last_tick = now;
        }
        while let Some(a) = engine.next_action() {
            match a {
                Action::Send { peer, packet } => {
                    // a full socket buffer or an unreachable peer is a lost request: it times out
                    let _ = sock.send_to(&packet, addrs[peer.0]).await;
                }
                Action::SlotComplete { slot, shreds } => {
                    slots.insert(slot, shreds);
                }
                Action::Store { slot, index, shred } => store.put(slot, index, &shred).await,
            }
        }
        store.maybe_flush().await;
    }
    // Slots completed by the last tick (or from the store alone, before the loop ran).
    collect_completed(&mut engine, &mut slots);
    let store_report = store.close().await;
    let mut o = finish(shard, "udp", None, start, engine.progress(), slots);
    o.store = store_report;
    Ok(o)
}

/// Take the completed slots the engine still holds; other actions are moot once it stops.
pub(crate) fn collect_completed(
    engine: &mut RepairEngine,
    slots: &mut BTreeMap<u64, Vec<Vec<u8>>>,
) {
    while let Some(a) = engine.next_action() {
        if let Action::SlotComplete { slot, shreds } = a {
            slots.insert(slot, shreds);
        }
    }
}

/// A store write failed: stop persisting (the repair goes on; what is lost is refetched
/// after a restart) and report why.
fn store_failed(
    shard: usize,
    store: &mut Option<catchup_io::store::Store>,
    report: &mut StoreReport,
    e: catchup_io::store::StoreError,
) {
    tracing::warn!(shard, error = %e, "repair store write failed: verified shreds are no longer persisted");
    report.error.get_or_insert(e.to_string());
    *store = None;
}

pub(crate) fn finish(
    shard: usize,
    path: &str,
    fallback_reason: Option<String>,
    start: Instant,
    progress: Progress,
    slots: BTreeMap<u64, Vec<Vec<u8>>>,
) -> ShardOutcome {
    let elapsed_ms = start.elapsed().as_millis() as u64;
    let shreds_per_s = progress.shreds_received as f64 * 1000.0 / elapsed_ms.max(1) as f64;
    ShardOutcome {
        shard,
        path: path.into(),
        fallback_reason,
        elapsed_ms,
        shreds_per_s,
        progress,
        store: None,
        slots,
    }
}

/// Repair `job.from_slot..=job.to_slot` on `job.shards` shards; blocks until done or the
/// deadline. The Solana sync calls this for its repair phase.
pub fn repair(job: &RepairJob) -> Result<RepairOutcome, DriverError> {
    if job.peers.is_empty() {
        return Err(DriverError::NoPeers);
    }
    if job.from_slot > job.to_slot {
        return Err(DriverError::EmptyRange {
            from: job.from_slot,
            to: job.to_slot,
        });
    }
    let start = Instant::now();
    let shards = job.shards.max(1);
    // AF_XDP is set up before the shards start: one program, one socket per shard.
    let mut fallback_reason = None;
    let mut xdp = None;
    if let NetPath::Xdp {
        iface,
        queues,
        port,
        ..
    } = &job.path
    {
        let addrs: Vec<SocketAddrV4> = job.peers.iter().map(|p| p.addr).collect();
        match super::xdp_driver::setup(iface, queues, *port, shards, &addrs) {
            Ok(s) => xdp = Some(s),
            Err(reason) => {
                tracing::warn!(%reason, "AF_XDP unavailable, falling back to UDP");
                fallback_reason = Some(reason);
            }
        }
    }
    let sockets: Arc<Mutex<Vec<Option<catchup_io::xdp::XskSocket>>>> = Arc::new(Mutex::new(
        xdp.as_mut()
            .map(|s| std::mem::take(&mut s.sockets))
            .unwrap_or_default(),
    ));
    let xdp_ctx = xdp
        .as_ref()
        .map(|s| (s.info.clone(), s.peers.clone(), s.first_port));
    let rt = catchup_shards::RuntimeConfig {
        handle_signals: false,
        name: "repair".into(),
        cores: job.cores.clone(),
        ..catchup_shards::RuntimeConfig::new(shards)
    };
    let job2 = job.clone();
    let results = catchup_shards::run(&rt, move |shard: catchup_shards::Shard<()>| {
        let job = job2.clone();
        let sockets = sockets.clone();
        let xdp_ctx = xdp_ctx.clone();
        let fallback_reason = fallback_reason.clone();
        async move {
            let id = shard.id().0;
            let sock = sockets
                .lock()
                .ok()
                .and_then(|mut v| v.get_mut(id).and_then(Option::take));
            let bind = match &job.path {
                NetPath::Udp { bind } | NetPath::Xdp { bind, .. } => *bind,
            };
            match (sock, xdp_ctx) {
                (Some(sock), Some((info, peers, port))) => {
                    super::xdp_driver::run_shard_xdp(
                        &job,
                        id,
                        sock,
                        &info,
                        &peers,
                        port + id as u16,
                    )
                    .await
                }
                _ => {
                    let mut o = run_shard_udp(&job, id, bind).await?;
                    o.fallback_reason = fallback_reason;
                    Ok(o)
                }
            }
        }
    })
    .map_err(|e| DriverError::Runtime(e.to_string()))?;
    drop(xdp); // detaches the XDP program
    let mut out = RepairOutcome::default();
    for r in results {
        let mut s = r?;
        out.slots_total += s.progress.slots_total;
        out.slots_complete += s.progress.slots_complete;
        out.shreds += s.progress.shreds_received;
        out.slots_loaded += s.progress.slots_loaded;
        out.shreds_loaded += s.progress.shreds_loaded;
        out.requests_for_loaded += s.progress.requests_for_loaded;
        out.store_dropped +=
            s.progress.store_rejected + s.store.as_ref().map_or(0, |r| r.damaged_records);
        out.slots.append(&mut s.slots);
        out.shards.push(s);
    }
    out.complete = out.slots_complete == out.slots_total;
    out.elapsed_ms = start.elapsed().as_millis() as u64;
    out.shreds_per_s = out.shreds as f64 * 1000.0 / out.elapsed_ms.max(1) as f64;
    out.slots_per_s = out.slots_complete as f64 * 1000.0 / out.elapsed_ms.max(1) as f64;
    Ok(out)
}

/// Ask for large socket buffers (responses arrive in bursts); as root the rmem/wmem limits
/// are bypassed, else the kernel caps the value. Failure only costs drops, so it is ignored.
pub fn set_socket_buffers(sock: &impl std::os::fd::AsRawFd, bytes: i32) {
    let fd = sock.as_raw_fd();
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // SAFETY: setsockopt with an int value on a socket this process owns.
        unsafe {
            let p = (&bytes as *const i32).cast();
            let len = std::mem::size_of::<i32>() as u32;
            if libc::setsockopt(fd, libc::SOL_SOCKET, force, p, len) != 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, plain, p, len);
            }
        }
    }
}

/// CPUs for client shards when a server runs on the same host: all allowed CPUs but the
/// first (where a single-shard server is pinned), or None with a single CPU.
pub fn client_cores() -> Option<Vec<usize>> {
    let all = catchup_shards::allowed_cores();
    (all.len() > 1).then(|| all[1..].to_vec())
}

/// One progress line every 10 s per shard.
pub(crate) fn log_progress(
    engine: &RepairEngine,
    shard: usize,
    path: &str,
    start: Instant,
    last_log: &mut Instant,
) {
    if last_log.elapsed() < Duration::from_secs(10) {
        return;
    }
    *last_log = Instant::now();
    let p = engine.progress();
    let secs = start.elapsed().as_secs_f64().max(1e-3);
    tracing::info!(
        shard,
        path,
        slots_remaining = p.slots_remaining,
        slots_complete = p.slots_complete,
        shreds = p.shreds_received,
        shreds_per_s = (p.shreds_received as f64 / secs) as u64,
        inflight = p.inflight,
        timeouts = p.timeouts,
        invalid = p.invalid,
        "repair progress"
    );
}

/// The repair phase of a Solana catch-up: repair every slot after `snapshot_slot` up to
/// `tip_slot` from `peers` on `shards` shards, verifying shreds against `leaders`, over
/// `path` (AF_XDP falls back to UDP by itself), giving up after `deadline_ms`.
#[allow(clippy::too_many_arguments)]
pub fn repair_after_snapshot(
    snapshot_slot: u64,
    tip_slot: u64,
    peers: Vec<PeerSpec>,
    leaders: LeaderSchedule,
    shards: usize,
    path: NetPath,
    deadline_ms: u64,
    store_dir: Option<PathBuf>,
) -> Result<RepairOutcome, DriverError> {
    use rand::Rng;
    let job = RepairJob {
        from_slot: snapshot_slot.saturating_add(1),
        to_slot: tip_slot,
        peers,
        leaders,
        identity: SigningKey::from_bytes(&rand::thread_rng().gen()),
        shards,
        path,
        deadline_ms,
        request_timeout_ms: 300,
        seed: rand::thread_rng().gen(),
        cores: None,
        store_dir,
    };
    repair(&job)
}

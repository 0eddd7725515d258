//! The Solana part of `catchup demo`: a generated snapshot served by several local
//! `snapshot serve` sources at different rates, synced from all of them and verified; then
//! the slots after the snapshot are repaired from local `serve-repair` servers (one honest,
//! one lossy, one sending corrupted shreds) and compared with the served ledger.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use catchup_http::Url;
use catchup_shred::ed25519_dalek::SigningKey;
use catchup_shred::ledger::generate_ledger;
use catchup_shred::serve::MemLedger;
use catchup_shred::Shred;

use crate::solana::repair::server::Faults;
use crate::solana::repair::{LeaderSchedule, NetPath, PeerSpec, RepairSummary};

use super::serve::{serve_blocking, ServeConfig};
use super::sink::PipelineSink;
use super::sync::{sync, ProgressFn, SyncConfig, SyncReport};

/// Demo settings.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Scratch directory: `snapshots/` (served) and `datadir/` (synced into).
    pub workdir: PathBuf,
    /// Accounts in the generated snapshot.
    pub accounts: u64,
    /// One local source per entry, with this send rate in bytes/s (`None`: unlimited).
    pub source_rates_bytes_per_s: Vec<Option<u64>>,
    pub chunk_size_bytes: u64,
    /// Index shards of the snapshot pipeline (and repair shards).
    pub shards: usize,
    /// Slots after the snapshot slot served by the repair servers and repaired (0: no
    /// repair phase).
    pub repair_slots: u64,
    /// Data shreds per generated slot.
    pub repair_shreds_per_slot: usize,
    /// One local repair server per entry, with these faults.
    pub repair_servers: Vec<(String, Faults)>,
    /// Give the repair phase up after this long.
    pub repair_deadline_ms: u64,
}

impl DemoConfig {
    pub fn new(workdir: PathBuf) -> DemoConfig {
        DemoConfig {
            workdir,
            accounts: 50_000,
            source_rates_bytes_per_s: vec![Some(8_000_000), Some(4_000_000), Some(1_000_000)],
            chunk_size_bytes: 512 * 1024,
            shards: 2,
            repair_slots: 32,
            repair_shreds_per_slot: 32,
            repair_servers: vec![
                ("honest".into(), Faults::default()),
                (
                    "lossy".into(),
                    Faults {
                        loss_per_mille: 300,
                        ..Default::default()
                    },
                ),
                (
                    "wrong".into(),
                    Faults {
                        wrong_per_mille: 300,
                        ..Default::default()
                    },
                ),
            ],
            repair_deadline_ms: 60_000,
        }
    }
}

/// What the demo did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DemoReport {
    pub archive_bytes: u64,
    pub sources: Vec<String>,
    pub sync: SyncReport,
    /// The repair phase after the snapshot (None when it did not run).
    pub repair: Option<RepairDemoReport>,
}

/// The demo's repair phase.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RepairDemoReport {
    /// `profile@addr` of each repair server.
    pub servers: Vec<String>,
    pub leader: String,
    pub summary: RepairSummary,
    /// Repaired slots whose data shreds are byte-identical to the served ledger's.
    pub slots_identical: u64,
    /// Slots that differ from the served ledger (should never happen: every shred is
    /// checked against the leader signature and its Merkle proof).
    pub slots_differing: Vec<u64>,
    /// Complete and every slot identical.
    pub verified: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo: generate snapshot: {0}")]
    Generate(String),
    #[error("demo: start source: {0}")]
    Serve(String),
    #[error("demo: sync: {0}")]
    Sync(#[from] super::sync::SyncError),
    #[error("demo: repair server: {0}")]
    RepairServe(String),
    #[error("demo: repair: {0}")]
    Repair(#[from] crate::solana::repair::driver::DriverError),
}

struct Source {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Source {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_source(dir: PathBuf, rate: Option<u64>) -> Result<(Source, SocketAddr), DemoError> {
    let mut cfg = ServeConfig::new(dir, SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.rate_limit_bytes_per_s = rate;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("demo-source".into())
        .spawn(move || {
            let tx2 = tx.clone();
            if let Err(e) = serve_blocking(cfg, s2, move |a| {
                let _ = tx2.send(Ok(a));
            }) {
                let _ = tx.send(Err(e.to_string()));
            }
        })
        .map_err(|e| DemoError::Serve(e.to_string()))?;
    let src = Source {
        stop,
        thread: Some(thread),
    };
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(addr)) => Ok((src, addr)),
        Ok(Err(e)) => Err(DemoError::Serve(e)),
        Err(_) => Err(DemoError::Serve("no answer within 10 s".into())),
    }
}

/// Generate a snapshot, serve it from `source_rates_bytes_per_s.len()` local sources, sync
/// it with the full snapshot pipeline, and return the report (`sync.complete` tells
/// whether it verified). Sources stop when this returns.
pub fn run_demo(cfg: &DemoConfig, progress: ProgressFn) -> Result<DemoReport, DemoError> {
    let snaps = cfg.workdir.join("snapshots");
    std::fs::create_dir_all(&snaps)
        .map_err(|e| DemoError::Generate(format!("{}: {e}", snaps.display())))?;
    let gcfg = crate::solana::snapshot::generate::GenerateConfig {
        accounts: cfg.accounts,
        slot: 100,
        ..Default::default()
    };
    let generated = crate::solana::snapshot::generate::generate(&gcfg, &snaps)
        .map_err(|e| DemoError::Generate(e.to_string()))?;
    let mut sources = Vec::new();
    let mut urls = Vec::new();
    for rate in &cfg.source_rates_bytes_per_s {
        let (s, addr) = start_source(snaps.clone(), *rate)?;
        sources.push(s);
        urls.push(
            Url::parse(&format!("http://{addr}/")).map_err(|e| DemoError::Serve(e.to_string()))?,
        );
    }
    let datadir = cfg.workdir.join("datadir");
    let mut scfg = SyncConfig::new(datadir.clone());
    scfg.sources = urls.clone();
    scfg.coordinator.chunk_size_bytes = cfg.chunk_size_bytes;
    scfg.progress_interval_ms = 1000;
    let pcfg = crate::solana::snapshot::PipelineConfig {
        shards: cfg.shards.max(1),
        ..Default::default()
    };
    let report = sync(scfg, PipelineSink::factory(datadir, pcfg), progress)?;
    drop(sources);
    let repair = match report.slot {
        Some(slot) if report.complete && cfg.repair_slots > 0 => Some(repair_phase(cfg, slot)?),
        _ => None,
    };
    Ok(DemoReport {
        archive_bytes: generated.compressed_bytes,
        sources: urls.iter().map(|u| u.to_string()).collect(),
        sync: report,
        repair,
    })
}

/// A `serve-repair` server on its own thread and glommio executor; stops when dropped.
struct RepairServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RepairServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_repair_server(
    ledger: MemLedger,
    identity: SigningKey,
    faults: Faults,
    seed: u64,
) -> Result<(RepairServer, SocketAddrV4), DemoError> {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
    let thread = std::thread::Builder::new()
        .name("demo-repair".into())
        .spawn(move || {
            let ex = match glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .name("demo-repair")
                .make()
            {
                Ok(ex) => ex,
                Err(e) => {
                    let _ = tx.send(Err(format!("executor: {e}")));
                    return;
                }
            };
            catchup_io::exec::run(&ex, async move {
                let sock = match glommio::net::UdpSocket::bind("127.0.0.1:0") {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(format!("bind 127.0.0.1:0: {e}")));
                        return;
                    }
                };
                match sock.local_addr() {
                    Ok(a) => {
                        let _ = tx.send(Ok(a));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("local address: {e}")));
                        return;
                    }
                }
                let stop = || s2.load(Ordering::Relaxed);
                if let Err(e) = crate::solana::repair::server::serve(
                    sock, &ledger, identity, faults, seed, stop,
                )
                .await
                {
                    tracing::warn!("demo repair server: {e}");
                }
            });
        })
        .map_err(|e| DemoError::RepairServe(e.to_string()))?;
    let server = RepairServer {
        stop,
        thread: Some(thread),
    };
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(SocketAddr::V4(a))) => Ok((server, a)),
        Ok(Ok(a)) => Err(DemoError::RepairServe(format!(
            "bound to {a}, IPv4 expected"
        ))),
        Ok(Err(e)) => Err(DemoError::RepairServe(e)),
        Err(_) => Err(DemoError::RepairServe("no answer within 10 s".into())),
    }
}

fn demo_key(seed: u64) -> SigningKey {
    use rand::{Rng, SeedableRng};
    SigningKey::from_bytes(&rand::rngs::StdRng::seed_from_u64(seed).gen())
}

/// Generate a signed ledger for `snapshot_slot + 1..=snapshot_slot + repair_slots`, serve
/// it from the configured repair servers, repair the gap and compare every repaired slot
/// with the served ledger.
fn repair_phase(cfg: &DemoConfig, snapshot_slot: u64) -> Result<RepairDemoReport, DemoError> {
    let leader = demo_key(0x1ead);
    let first = snapshot_slot + 1;
    let tip = snapshot_slot + cfg.repair_slots;
    let raw = generate_ledger(
        &leader,
        first,
        cfg.repair_slots,
        cfg.repair_shreds_per_slot.max(1),
        7,
    );
    let mut ledger = MemLedger::new();
    // The expected data shreds of each slot, in index order.
    let mut expected: std::collections::BTreeMap<u64, Vec<(u32, Vec<u8>)>> = Default::default();
    for b in &raw {
        let s = Shred::from_bytes(b)
            .map_err(|e| DemoError::RepairServe(format!("generated shred does not parse: {e}")))?;
        ledger.insert(&s);
        if s.is_data() {
            expected
                .entry(s.slot())
                .or_default()
                .push((s.index(), b.clone()));
        }
    }
    let mut servers = Vec::new();
    let mut peers = Vec::new();
    let mut names = Vec::new();
    for (i, (profile, faults)) in cfg.repair_servers.iter().enumerate() {
        let identity = demo_key(0x5e7e + i as u64);
        let key = identity.verifying_key().to_bytes();
        let (srv, addr) = start_repair_server(ledger.clone(), identity, *faults, 11 + i as u64)?;
        servers.push(srv);
        peers.push(PeerSpec {
            addr,
            key: Some(key),
        });
        names.push(format!("{profile}@{addr}"));
    }
    let leader_key = leader.verifying_key().to_bytes();
    let outcome = crate::solana::repair::repair_after_snapshot(
        snapshot_slot,
        tip,
        peers.clone(),
        LeaderSchedule::Fixed(leader_key),
        cfg.shards.max(1),
        NetPath::Udp {
            bind: Ipv4Addr::LOCALHOST,
        },
        cfg.repair_deadline_ms,
    );
    drop(servers);
    let outcome = outcome?;
    let summary = crate::solana::repair::summarize(first, tip, &peers, &outcome);
    let mut slots_identical = 0;
    let mut slots_differing = Vec::new();
    for (slot, got) in &outcome.slots {
        let mut want = expected.get(slot).cloned().unwrap_or_default();
        want.sort_by_key(|w| w.0);
        let same = want.len() == got.len() && want.iter().zip(got).all(|(w, g)| w.1 == *g);
        if same {
            slots_identical += 1;
        } else {
            slots_differing.push(*slot);
        }
    }
    let verified =
        summary.complete && slots_differing.is_empty() && slots_identical == cfg.repair_slots;
    Ok(RepairDemoReport {
        servers: names,
        leader: crate::solana::repair::driver::pubkey_to_string(&leader_key),
        summary,
        slots_identical,
        slots_differing,
        verified,
    })
}

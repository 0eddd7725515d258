//! The Solana part of `catchup demo`: a generated snapshot served by several local
//! `snapshot serve` sources at different rates, each the RPC of a known validator that
//! advertises it in gossip; the sources are discovered through gossip (a forging node with
//! its own key and a newer forged archive is ignored), synced from all of them and
//! verified, and a node serving a forged archive under the trusted name is caught by the
//! hash check and named; then the slots after the snapshot are repaired from local
//! `serve-repair` servers (one honest, one lossy, one sending corrupted shreds) and
//! compared with the served ledger.

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
    /// Discover the sources through a local gossip cluster of known validators (with a
    /// forging node and a node serving a forged archive under the trusted name).
    pub gossip: bool,
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
            gossip: true,
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
    /// Discovery and trust through gossip (None without it).
    pub gossip: Option<GossipDemoReport>,
    /// The repair phase after the snapshot (None when it did not run).
    pub repair: Option<RepairDemoReport>,
}

/// The demo's gossip discovery and trust.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GossipDemoReport {
    pub known_validators: Vec<String>,
    /// The known validators that advertise the snapshot synced.
    pub trusted_by: Vec<String>,
    /// Nodes whose snapshot adverts were ignored (not known validators): the forger.
    pub ignored: Vec<String>,
    pub forger: String,
    /// Packets the discovery client rejected (among them the forger's adverts in other
    /// nodes' names).
    pub packets_rejected: u64,
    /// The hash check's verdict on the node serving a forged archive under the trusted
    /// name (None: it was not caught).
    pub forged_caught: Option<String>,
}

/// The gossip part of the demo's snapshot line.
pub fn gossip_summary(g: &GossipDemoReport) -> String {
    format!(
        "; discovered through gossip, trusted by {}/{} known validators; forging node {} ignored; {}",
        g.trusted_by.len(),
        g.known_validators.len(),
        g.forger,
        match &g.forged_caught {
            Some(_) => "forged archive under the trusted name caught by the hash check".to_string(),
            None => "forged archive under the trusted name NOT caught".to_string(),
        }
    )
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
    #[error("demo: gossip: {0}")]
    Gossip(String),
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
    let mut addrs = Vec::new();
    for rate in &cfg.source_rates_bytes_per_s {
        let (s, addr) = start_source(snaps.clone(), *rate)?;
        sources.push(s);
        addrs.push(addr);
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
    let mut gossip = None;
    let mut liar_check = None;
    let mut _cluster = Vec::new();
    if cfg.gossip {
        let (g, cluster, liar) = gossip_discovery(cfg, &generated, &addrs)?;
        scfg.sources = g.0;
        scfg.expected_archive = g.1;
        scfg.rank_by_latency = true;
        gossip = Some(g.2);
        liar_check = Some(liar);
        _cluster = cluster;
    }
    let factory = PipelineSink::factory_named(datadir, pcfg.clone(), scfg.archive_name.clone());
    let report = sync(scfg.clone(), factory, progress)?;
    // The node serving a forged archive under the trusted name, alone: caught and named.
    if let (Some(g), Some((liar_url, liar_dir))) = (gossip.as_mut(), liar_check) {
        let mut lcfg = SyncConfig::new(cfg.workdir.join("forged-check"));
        lcfg.sources = vec![liar_url];
        lcfg.expected_archive = scfg.expected_archive.clone();
        lcfg.coordinator.chunk_size_bytes = cfg.chunk_size_bytes;
        let factory = PipelineSink::factory_named(
            cfg.workdir.join("forged-check"),
            pcfg,
            lcfg.archive_name.clone(),
        );
        g.forged_caught = match sync(lcfg, factory, Box::new(|_| {})) {
            Err(e @ super::sync::SyncError::Forged { .. }) => Some(e.to_string()),
            _ => None,
        };
        let _ = std::fs::remove_dir_all(cfg.workdir.join("forged-check"));
        drop(liar_dir);
    }
    drop(_cluster);
    drop(sources);
    let repair = match report.slot {
        Some(slot) if report.complete && cfg.repair_slots > 0 => Some(repair_phase(cfg, slot)?),
        _ => None,
    };
    Ok(DemoReport {
        archive_bytes: generated.compressed_bytes,
        sources: urls.iter().map(|u| u.to_string()).collect(),
        sync: report,
        gossip,
        repair,
    })
}

/// Sources found through gossip, the archive they must serve, and the trust report.
type Discovery = (
    Vec<Url>,
    Option<super::sync::ExpectedArchive>,
    GossipDemoReport,
);

/// A local gossip cluster: one known validator per source (its RPC), a forging node (own
/// key, a newer forged archive it serves and advertises, adverts pushed in the others'
/// names) and a node serving a forged archive under the trusted name; then discovery with
/// the known validators. Returns the discovery, the running nodes and sources (stopped
/// when dropped), and the forged-under-the-trusted-name source.
#[allow(clippy::type_complexity)]
fn gossip_discovery(
    cfg: &DemoConfig,
    generated: &crate::solana::snapshot::generate::Generated,
    rpcs: &[SocketAddr],
) -> Result<(Discovery, Vec<Box<dyn std::any::Any>>, (Url, Source)), DemoError> {
    use crate::solana::gossip::node::{self, AdvertisedSnapshots, NodeConfig, Profile};
    let gerr = |e: String| DemoError::Gossip(e);
    let hash = catchup_gossip::Hash(
        catchup_solana::base58_32(&generated.lt_hash)
            .ok_or_else(|| gerr("generated hash is not base58".into()))?,
    );
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let gen = |dir: &str, slot: u64, seed: u64| {
        let out = cfg.workdir.join(dir);
        std::fs::create_dir_all(&out).map_err(|e| DemoError::Generate(e.to_string()))?;
        let g = crate::solana::snapshot::generate::generate(
            &crate::solana::snapshot::generate::GenerateConfig {
                accounts: cfg.accounts.min(5_000),
                slot,
                seed,
                ..Default::default()
            },
            &out,
        )
        .map_err(|e| DemoError::Generate(e.to_string()))?;
        Ok::<_, DemoError>((out, g))
    };
    // The forger's newer archive, and forged accounts under the trusted name.
    let (forged_dir, forged) = gen("forged", generated.slot + 100, 7)?;
    let (liar_tmp, liar_gen) = gen("liar-tmp", generated.slot, 8)?;
    let liar_dir = cfg.workdir.join("liar");
    std::fs::create_dir_all(&liar_dir).map_err(|e| DemoError::Generate(e.to_string()))?;
    let trusted_name = generated
        .path
        .file_name()
        .ok_or_else(|| gerr("generated archive has no name".into()))?;
    std::fs::rename(&liar_gen.path, liar_dir.join(trusted_name))
        .map_err(|e| DemoError::Generate(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&liar_tmp);
    let (forger_source, forger_rpc) = start_source(forged_dir, None)?;
    let (liar_source, liar_rpc) = start_source(liar_dir, None)?;
    keep.push(Box::new(forger_source));
    let start = |seed: u64,
                 entry: Option<SocketAddr>,
                 rpc: SocketAddr,
                 snapshots: Option<AdvertisedSnapshots>,
                 profile: Profile| {
        let key = demo_key(1000 + seed);
        let entrypoints: Vec<SocketAddr> = entry.into_iter().collect();
        let (socket, advertise) = node::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &entrypoints,
            "demo gossip",
        )
        .map_err(|e| gerr(e.to_string()))?;
        node::start(NodeConfig {
            key: catchup_gossip::ed25519_dalek::SigningKey::from_bytes(&key.to_bytes()),
            socket,
            advertise,
            entrypoints,
            rpc: Some(rpc),
            serve_repair: None,
            shred_version: 0,
            snapshots,
            snapshots_dir: None,
            profile,
            max_entries: 1024,
            status_section: None,
            pull_interval_ms: 200,
        })
        .map_err(|e| gerr(e.to_string()))
    };
    let honest = AdvertisedSnapshots {
        full: (generated.slot, hash),
        incremental: Vec::new(),
    };
    let mut known = Vec::new();
    let mut entry = None;
    for (i, rpc) in rpcs.iter().enumerate() {
        let h = start(i as u64, entry, *rpc, Some(honest.clone()), Profile::Honest)?;
        entry.get_or_insert(h.advertise);
        known.push(h.pubkey.to_string());
        keep.push(Box::new(h));
    }
    let entry = entry.ok_or_else(|| gerr("no source to gossip about".into()))?;
    let forged_hash = catchup_gossip::Hash(
        catchup_solana::base58_32(&forged.lt_hash)
            .ok_or_else(|| gerr("forged hash is not base58".into()))?,
    );
    let forger = start(
        100,
        Some(entry),
        forger_rpc,
        Some(AdvertisedSnapshots {
            full: (forged.slot, forged_hash),
            incremental: Vec::new(),
        }),
        Profile::Forging,
    )?;
    let forger_key = forger.pubkey.to_string();
    keep.push(Box::new(forger));
    keep.push(Box::new(start(
        101,
        Some(entry),
        liar_rpc,
        None,
        Profile::Honest,
    )?));
    let d = crate::solana::gossip::discover::discover(
        &crate::solana::gossip::discover::GossipDiscovery {
            entrypoints: vec![entry],
            known_validators: known.clone(),
            min_agree: 2.min(known.len()),
            identity: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            timeout: Duration::from_secs(30),
            shred_version: 0,
            incremental: false,
        },
    )
    .map_err(|e| gerr(e.to_string()))?;
    let choice = d
        .choice
        .clone()
        .ok_or_else(|| gerr("the known validators agreed on no snapshot".into()))?;
    let liar_url = Url::parse(&format!(
        "http://{liar_rpc}/{}",
        trusted_name.to_string_lossy()
    ))
    .map_err(|e| gerr(e.to_string()))?;
    let report = GossipDemoReport {
        known_validators: known,
        trusted_by: choice.full.trusted_by.clone(),
        ignored: choice.ignored.clone(),
        forger: forger_key,
        packets_rejected: d.packets_rejected,
        forged_caught: None,
    };
    Ok((
        (d.sources.clone(), d.expected.clone(), report),
        keep,
        (liar_url, liar_source),
    ))
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
        None,
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

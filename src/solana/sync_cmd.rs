//! `catchup solana sync` and `catchup solana snapshot serve`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use catchup_http::Url;

use crate::node::opts::GlobalOpts;
use crate::solana::download::serve::{serve_blocking, ServeConfig};
use crate::solana::download::sink::{ArchiveSink, PipelineSink, SinkFactory, StreamCheckSink};
use crate::solana::download::sync::{sync, Progress, SyncConfig, SyncError, SyncReport};

/// Parse a size with an optional binary suffix: `65536`, `64K`, `64M`, `1G` (also `KiB`, `MiB`, `GiB`).
/// `--chunk-size`: "auto" (0 in the config) or a positive multiple of 4096 bytes.
fn parse_chunk_size(s: &str) -> Result<u64, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(0);
    }
    let n = parse_size_bytes(s)?;
    if n == 0 || n % 4096 != 0 {
        return Err(format!(
            "must be \"auto\" or a positive multiple of 4096 bytes, got {n}"
        ));
    }
    Ok(n)
}

pub fn parse_size_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.trim_end_matches(['b', 'B']).trim_end_matches('i') {
        x if x.ends_with(['k', 'K']) => (&x[..x.len() - 1], 1u64 << 10),
        x if x.ends_with(['m', 'M']) => (&x[..x.len() - 1], 1u64 << 20),
        x if x.ends_with(['g', 'G']) => (&x[..x.len() - 1], 1u64 << 30),
        x => (x, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?} (examples: 65536, 64K, 64M, 1G)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

fn parse_url(s: &str) -> Result<Url, String> {
    Url::parse(s).map_err(|e| e.to_string())
}

/// Download a snapshot archive from several sources in parallel byte ranges, feed it to the
/// verifier while it downloads, and resume after a crash without fetching finished chunks;
/// then, with --repair-peer, repair the shreds of the slots after the snapshot up to
/// --tip-slot (newest first, every shred checked against its slot leader's signature and its
/// Merkle proof). Exit 1 if the snapshot did not verify, 2 if the repair did not complete.
#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    /// A snapshot source: an archive URL (http://host:port/snapshot-SLOT-HASH.tar.zst) or a
    /// base URL (http://host:port/, asked for /snapshot.tar.bz2). Repeat for several sources.
    #[arg(long = "source", value_name = "URL", value_parser = parse_url)]
    pub sources: Vec<Url>,
    /// A Solana JSON-RPC URL: its getClusterNodes answer lists more sources.
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    pub rpc: Option<Url>,
    /// Data directory (locked while running); the archive goes to D/download/.
    #[arg(long, value_name = "D")]
    pub datadir: PathBuf,
    /// Hand-off to the validator: `--ledger DIR` / `--snapshots-dir DIR`.
    #[command(flatten)]
    pub handoff: Box<crate::solana::handoff::HandoffArgs>,
    /// Fetch the incremental snapshot (base URLs are asked for /incremental-snapshot.tar.bz2).
    #[arg(long)]
    pub incremental: bool,
    /// Chunk size (multiple of 4 KiB): the unit of resume and of the endgame. "auto" (the
    /// default) fits it to the archive and the sources (about 64 chunks per source, 1–64
    /// MiB); a measured source fetches many consecutive chunks in one request either way.
    /// A resumed download keeps the size it started with.
    #[arg(long, value_name = "SIZE|auto", default_value = "auto", value_parser = parse_chunk_size)]
    pub chunk_size: u64,
    /// Drop a source slower than this (MB/s, 1 MB = 10^6 bytes) after retries; 0 = never.
    #[arg(long, value_name = "MB/s", default_value_t = 0.0)]
    pub min_source_speed: f64,
    /// Failures in a row after which a source is dropped.
    #[arg(long, default_value_t = 4)]
    pub max_failures: u32,
    /// First retry delay of a failed source; doubles per failure.
    #[arg(long, default_value_t = 500)]
    pub backoff_ms: u64,
    /// Connect timeout per request.
    #[arg(long, default_value_t = 3000)]
    pub connect_timeout_ms: u64,
    /// Read/write timeout per request.
    #[arg(long, default_value_t = 10000)]
    pub io_timeout_ms: u64,
    /// Discovery: how many sources must agree on the chosen slot; with --known-validator,
    /// how many known validators must advertise the chosen snapshot.
    #[arg(long, default_value_t = 1)]
    pub min_agree: usize,
    /// A gossip entrypoint (HOST:PORT) to discover snapshot sources through; repeatable.
    /// Every node's RPC address is a candidate source. Discovery listens 5 s more once the
    /// known validators agree (for more sources), and gives up after --gossip-timeout-s.
    #[arg(long = "entrypoint", value_name = "HOST:PORT",
          value_parser = crate::solana::gossip::cmd::parse_host_port)]
    pub entrypoints: Vec<SocketAddr>,
    /// A validator (base58 pubkey) whose gossiped snapshot hashes are trusted; repeatable.
    /// The snapshot fetched is the newest full one (with --incremental: the newest
    /// incremental on it) that --min-agree of them advertise, and only sources serving
    /// exactly that (slot, hash) are used. Needs --entrypoint.
    #[arg(
        long = "known-validator",
        value_name = "PUBKEY",
        requires = "entrypoints"
    )]
    pub known_validators: Vec<String>,
    /// Without gossip: the trusted snapshot as SLOT:HASH (base58); only sources serving
    /// that archive are used, and its accounts hash must equal HASH.
    #[arg(long, value_name = "SLOT:HASH")]
    pub expected_snapshot_hash: Option<String>,
    /// Refuse to download a snapshot whose identity no known validator and no
    /// --expected-snapshot-hash vouches for.
    #[arg(long)]
    pub require_trusted: bool,
    /// Our gossip identity (a Solana CLI keypair file); default: a fresh key.
    #[arg(long, value_name = "KEYPAIR")]
    pub identity: Option<PathBuf>,
    /// UDP address our gossip client binds (an unspecified IP advertises the local address
    /// towards the first entrypoint).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:0")]
    pub gossip_listen: SocketAddr,
    /// Give gossip discovery up after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub gossip_timeout_s: u64,
    /// The cluster's shred version for gossip (0 accepts any).
    #[arg(long, default_value_t = 0)]
    pub shred_version: u16,
    /// With --incremental through gossip: when the full snapshot is verified at least this
    /// many seconds after the known validators were asked (discovery, download and
    /// verification), gossip is asked again, and the newest incremental on that full the
    /// known validators now agree on is fetched (a newer full is not fetched).
    #[arg(long, default_value_t = 60)]
    pub freshness_check_s: u64,
    /// Discovery: ignore sources further behind the newest slot seen.
    #[arg(long, default_value_t = 100_000)]
    pub max_slots_behind: u64,
    /// Discovery: ignore sources slower to answer a HEAD.
    #[arg(long, default_value_t = 5000)]
    pub max_latency_ms: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10)]
    pub progress_interval_s: u64,
    /// What to verify while downloading: `full` runs the snapshot pipeline (unpack into
    /// the data directory, index, LtHash and capitalization); `stream` only checks zstd
    /// frames and the tar structure.
    #[arg(long, value_enum, default_value_t = VerifyMode::Full)]
    pub verify: VerifyMode,
    /// Download shards: pinned executors that fetch; each owns some sources, shard 0 also
    /// coordinates. 1 runs everything on one executor.
    #[arg(long, default_value_t = 2)]
    pub download_shards: usize,
    /// Index shards of the snapshot pipeline (default: all cores).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Print the final report (and progress lines) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many chunks were fetched (to test resume).
    #[arg(long, hide = true)]
    pub stop_after_chunks: Option<u32>,
    /// After the snapshot verified: a repair peer to fetch the shreds of the slots after
    /// the snapshot from, as ADDR:PORT or PUBKEY@ADDR:PORT; repeatable. Without any, the
    /// repair phase is skipped.
    #[arg(long = "repair-peer", value_name = "PEER")]
    pub repair_peers: Vec<crate::solana::repair::PeerSpec>,
    /// The cluster tip: the last slot the repair phase fetches (needed with --repair-peer).
    #[arg(long, value_name = "SLOT")]
    pub tip_slot: Option<u64>,
    /// Leader identity (base58) whose signature every repaired shred must carry. Without
    /// it each slot's shreds are checked against that slot's leader in the schedule drawn
    /// from the snapshot bank's epoch stakes.
    #[arg(long, value_name = "PUBKEY")]
    pub leader: Option<String>,
    /// Repair over AF_XDP on this interface (generic mode); falls back to UDP with the
    /// reason logged when AF_XDP is not available.
    #[arg(long, value_name = "IFACE")]
    pub repair_xdp: Option<String>,
    /// First UDP port of the AF_XDP repair path (shard i uses port + i).
    #[arg(long, default_value_t = 47_000)]
    pub repair_xdp_port: u16,
    /// Repair shards (slots are split among them).
    #[arg(long, default_value_t = 1)]
    pub repair_shards: usize,
    /// Give the repair phase up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub repair_timeout_secs: u64,
    /// Slots repaired per batch, from the tip down; progress is reported after each batch,
    /// and each batch may use its share of the time left (a batch finishing early leaves
    /// its time to the next ones).
    #[arg(long, default_value_t = 512)]
    pub repair_batch_slots: u64,
}

/// Serve snapshot archives over HTTP like a Solana RPC node: /snapshot.tar.bz2 and
/// /incremental-snapshot.tar.bz2 redirect (303) to the newest archive in DIR; archives are
/// served with HEAD, Range and ETag; POST / answers getClusterNodes.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Directory holding snapshot-*.tar.zst / incremental-snapshot-*.tar.zst archives.
    pub dir: PathBuf,
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8899")]
    pub listen: SocketAddr,
    /// Total send rate limit in MB/s (1 MB = 10^6 bytes); unlimited when absent.
    #[arg(long, value_name = "MB/s")]
    pub rate_limit: Option<f64>,
    /// Ignore Range headers (always send the whole file), like a server without ranges.
    #[arg(long)]
    pub no_range: bool,
    /// RPC address (HOST:PORT) to list in getClusterNodes answers; repeatable.
    #[arg(long = "cluster-node", value_name = "HOST:PORT")]
    pub cluster_nodes: Vec<String>,
}

/// What `sync` verifies while downloading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyMode {
    /// The snapshot pipeline: unpack, index, LtHash and capitalization.
    Full,
    /// zstd frames, tar structure and entry rules only.
    Stream,
}

/// The sink for `mode`; the full pipeline unpacks into `datadir`.
pub fn sink_factory(
    mode: VerifyMode,
    datadir: &std::path::Path,
    shards: Option<usize>,
    cores: Option<Vec<usize>>,
) -> Arc<SinkFactory> {
    match mode {
        VerifyMode::Stream => {
            Arc::new(|| Ok(Box::new(StreamCheckSink::new()?) as Box<dyn ArchiveSink>))
        }
        VerifyMode::Full => {
            let mut cfg = crate::solana::snapshot::PipelineConfig::default();
            if let Some(n) = shards {
                cfg.shards = n.max(1);
            }
            cfg.cores = cores;
            PipelineSink::factory(datadir.to_path_buf(), cfg)
        }
    }
}

fn mb(bytes_per_s: f64) -> f64 {
    bytes_per_s / 1e6
}

fn progress_line(p: &Progress) -> String {
    let healthy = p.sources.iter().filter(|s| s.dropped.is_none()).count();
    format!(
        "{} chunks {}/{} {:.1}/{:.1} MB {:.1} MB/s sources {}/{} healthy fed {:.1} MB eta {}",
        p.archive,
        p.chunks_done,
        p.chunks_total,
        p.bytes_done as f64 / 1e6,
        p.bytes_total as f64 / 1e6,
        mb(p.rate_bytes_per_s),
        healthy,
        p.sources.len(),
        p.fed_bytes as f64 / 1e6,
        p.eta_s
            .map(|s| format!("{s:.0}s"))
            .unwrap_or_else(|| "?".into()),
    )
}

pub fn run_sync(args: SyncArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    if args.sources.is_empty() && args.rpc.is_none() && args.entrypoints.is_empty() {
        anyhow::bail!(
            "give at least one --source URL or an --rpc URL (or an --entrypoint to discover sources through gossip)"
        );
    }
    let mut repair_plan = repair_plan(&args)?;
    let trust = resolve_trust(&args)?;
    // The age of what the known validators vouched for: the freshness check compares it,
    // not the download time alone (ranking sources and finishing verification count too).
    let trusted_at = std::time::Instant::now();
    if let (Some(plan), Some(g)) = (repair_plan.as_mut(), trust.gossip.as_ref()) {
        if plan.peers.is_empty() {
            for (pubkey, addr) in &g.serve_repair {
                if let Ok(p) = format!("{pubkey}@{addr}").parse() {
                    plan.peers.push(p);
                }
            }
            if plan.peers.is_empty() {
                anyhow::bail!(
                    "no node heard through gossip advertises a serve-repair address; give --repair-peer"
                );
            }
            tracing::info!(peers = plan.peers.len(), "repair peers from gossip");
        }
    }
    let mut cfg = SyncConfig::new(args.datadir.clone());
    cfg.sources = args.sources.clone();
    if let Some(e) = &trust.expected {
        let name = e.file_name();
        cfg.sources = cfg
            .sources
            .iter()
            .map(|u| {
                if crate::solana::download::source::parse_archive_name(u.file_name()).is_some() {
                    u.clone()
                } else {
                    u.join(&format!("/{name}")).unwrap_or_else(|_| u.clone())
                }
            })
            .collect();
    }
    cfg.sources.extend(trust.sources.iter().cloned());
    cfg.expected_archive = trust.expected.clone();
    cfg.rank_by_latency = trust.discovery == "gossip";
    cfg.rpc = args.rpc.clone();
    // With a trusted incremental the full snapshot is fetched first, then the incremental.
    cfg.incremental = args.incremental && trust.incremental.is_none();
    cfg.coordinator.chunk_size_bytes = args.chunk_size;
    cfg.coordinator.min_source_speed_bytes_per_s = (args.min_source_speed.max(0.0) * 1e6) as u64;
    cfg.coordinator.max_failures = args.max_failures.max(1);
    cfg.coordinator.backoff_base_ms = args.backoff_ms;
    cfg.coordinator.stall_timeout_ms = args.io_timeout_ms.max(1000);
    cfg.client.connect_timeout_ms = args.connect_timeout_ms;
    cfg.client.io_timeout_ms = args.io_timeout_ms;
    // With known validators --min-agree counts them; the sources then only have to serve
    // the agreed archive.
    cfg.min_agree = if trust.expected.is_some() {
        1
    } else {
        args.min_agree.max(1)
    };
    cfg.max_slots_behind = args.max_slots_behind;
    cfg.max_latency_ms = args.max_latency_ms;
    cfg.stop_after_chunks = args.stop_after_chunks;
    cfg.shards = args.download_shards.clamp(1, 64);
    // One placement for both pools: the download shards and the index shards get cores of
    // their own from the plan (or the CPUs this process may use) while there are enough.
    let cores = crate::node::opts::load_plan(global)?
        .map(|p| p.cores())
        .unwrap_or_else(catchup_shards::allowed_cores);
    let index_shards = args.shards.unwrap_or(cores.len()).max(1);
    let pools = crate::node::opts::place_two_pools(&cores, cfg.shards, index_shards);
    if let Some(note) = &pools.note {
        tracing::info!("{note}");
    }
    cfg.cores = Some(pools.io_cores.clone());
    cfg.helper_cores = Some(cores.clone());
    let json = args.json;
    let bar = if !json && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    // Every second: the bar and the admin endpoint's /status; lines every --progress-interval-s.
    cfg.progress_interval_ms = 1000;
    let every = (args.progress_interval_s.max(1) * 1000 / cfg.progress_interval_ms).max(1);
    let make_progress = || -> crate::solana::download::sync::ProgressFn {
        let bar2 = bar.clone();
        let mut n = 0u64;
        Box::new(move |p: &Progress| {
            n += 1;
            crate::node::admin::set_status(
                "snapshot_download",
                serde_json::to_value(p).unwrap_or_default(),
            );
            if let Some(b) = &bar2 {
                b.set_length(p.bytes_total);
                b.set_position(p.bytes_done);
                b.set_message(format!("chunks {}/{}", p.chunks_done, p.chunks_total));
            }
            if n % every == 0 {
                if json {
                    println!("{}", serde_json::json!({ "progress": p }));
                } else {
                    tracing::info!("{}", progress_line(p));
                }
            }
        })
    };
    // SIGINT/SIGTERM stop the download and print its report; a second one exits at once.
    let interrupt = cfg.interrupt.clone();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, interrupt.clone())
            .map_err(|e| anyhow::anyhow!("installing the signal handlers: {e}"))?;
        signal_hook::flag::register(sig, interrupt.clone())
            .map_err(|e| anyhow::anyhow!("installing the signal handlers: {e}"))?;
    }
    let pipeline_cfg = crate::solana::snapshot::PipelineConfig {
        shards: index_shards,
        cores: Some(pools.compute_cores.clone()),
        ..Default::default()
    };
    let factory = match args.verify {
        VerifyMode::Stream => sink_factory(args.verify, &args.datadir, None, None),
        VerifyMode::Full => PipelineSink::factory_named(
            args.datadir.clone(),
            pipeline_cfg.clone(),
            cfg.archive_name.clone(),
        ),
    };
    let (mut result, mut forged) = sync_dropping_forged(&mut cfg, &factory, &make_progress);
    // Sources the audit caught sending bytes the others disagree with are named too.
    if let Ok(r) = &result {
        forged.extend(r.lying_sources.iter().cloned());
    }
    // A trusted incremental on the full snapshot: downloaded next (its own journal and
    // directory), verified on top of the full archive just verified.
    let mut full_report = None;
    let mut freshness: Option<serde_json::Value> = None;
    let mut freshness_trusted_by: Option<Vec<String>> = None;
    if let (Ok(full), Some(inc)) = (&result, &trust.incremental) {
        if full.complete {
            let mut icfg = cfg.clone();
            icfg.incremental = true;
            icfg.sources = inc.sources.clone();
            icfg.rpc = None;
            icfg.expected_archive = Some(inc.archive.clone());
            let age_ms = trusted_at.elapsed().as_millis() as u64;
            if age_ms.max(full.download_ms) >= args.freshness_check_s.saturating_mul(1000) {
                let full_hash = trust.expected.as_ref().map(|e| e.hash.clone());
                match freshness_check(&args, full_hash.as_deref(), inc) {
                    Ok((fresh, mut note)) => {
                        note["age_ms"] = age_ms.into();
                        if let Some(f) = fresh {
                            icfg.sources = f.sources.clone();
                            icfg.expected_archive = Some(f.archive.clone());
                            freshness_trusted_by = Some(f.trusted_by.clone());
                        }
                        freshness = Some(note);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "freshness check through gossip failed: fetching the incremental chosen before");
                        freshness = Some(serde_json::json!({ "error": e.to_string() }));
                    }
                }
            }
            icfg.archive_name = Arc::new(std::sync::Mutex::new(None));
            icfg.journal_name = crate::solana::download::sync::INCREMENTAL_JOURNAL_NAME.into();
            icfg.download_subdir =
                crate::solana::download::sync::INCREMENTAL_DOWNLOAD_SUBDIR.into();
            let ifactory = match args.verify {
                VerifyMode::Stream => factory.clone(),
                VerifyMode::Full => PipelineSink::factory_incremental(
                    args.datadir.clone(),
                    pipeline_cfg.clone(),
                    args.datadir.join("download").join(&full.archive),
                    icfg.archive_name.clone(),
                ),
            };
            tracing::info!(archive = %inc.archive.file_name(), "full snapshot verified: fetching the trusted incremental on it");
            let (r, f) = sync_dropping_forged(&mut icfg, &ifactory, &make_progress);
            forged.extend(f);
            if let Ok(r) = &r {
                forged.extend(r.lying_sources.iter().cloned());
            }
            full_report = Some(full.clone());
            result = r;
        }
    }
    let mut trust = trust;
    trust.forged = forged;
    if let (Some(inc), Some(by)) = (trust.incremental.as_mut(), freshness_trusted_by) {
        if let Some(e) = &cfg_incremental_archive(&freshness) {
            inc.archive = e.clone();
        }
        inc.trusted_by = by;
    }
    // From here on (the hand-off and the repair phase) a signal exits at once.
    interrupt.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            if json {
                let mut v = trust.report_fields(None);
                v["complete"] = false.into();
                v["error"] = e.to_string().into();
                println!("{v}");
            }
            if !trust.forged.is_empty() && !matches!(e, SyncError::Forged { .. }) {
                anyhow::bail!(
                    "{e}; dropped for forged archives: {}",
                    trust.forged.join("; ")
                );
            }
            return Err(e.into());
        }
    };
    let mut trust_fields = trust.report_fields(report.verified.as_ref());
    if let Some(f) = &freshness {
        trust_fields["freshness"] = f.clone();
    }
    if let Some(full) = &full_report {
        trust_fields["full_snapshot"] = serde_json::json!({
            "archive": full.archive, "slot": full.slot, "size_bytes": full.size_bytes,
            "chunks_fetched": full.chunks_fetched, "chunks_resumed": full.chunks_resumed,
            "bytes_fetched": full.bytes_fetched, "download_ms": full.download_ms,
            "audit_bytes_refetched": full.audit_bytes_refetched,
            "name_hash_ok": full.verified.as_ref().map(|v| v["name_hash_ok"].clone()),
        });
    }
    crate::node::admin::set_status(
        "snapshot_download",
        serde_json::json!({ "finished": &report }),
    );
    // Text: the snapshot's report now, the repair's after it; JSON: one report at the end.
    if !json || !report.complete {
        print_report(&report, None, &trust_fields, json);
    }
    if !report.complete {
        if report.interrupted {
            eprintln!(
                "error: interrupted; {} of {} chunks are kept in {}: run the same command again to resume",
                (report.chunks_resumed + report.chunks_fetched).min(report.chunks_total),
                report.chunks_total,
                args.datadir.display()
            );
        }
        return Ok(1);
    }
    if let Some(full) = &full_report {
        crate::solana::handoff::run_after_sync(
            &args.handoff,
            &args.datadir,
            &full.archive,
            full.verified.as_ref(),
            json,
        )?;
    }
    crate::solana::handoff::run_after_sync_in(
        &args.handoff,
        &args.datadir,
        if full_report.is_some() {
            crate::solana::download::sync::INCREMENTAL_DOWNLOAD_SUBDIR
        } else {
            "download"
        },
        &report.archive,
        report.verified.as_ref(),
        json,
    )?;
    let repair = match (repair_plan, report.slot) {
        (None, _) => {
            if !json {
                println!("repair: skipped (no --repair-peer given)");
            }
            None
        }
        (Some(_), None) => {
            if json {
                print_report(&report, None, &trust_fields, json);
            }
            eprintln!(
                "repair: the archive name {:?} gives no snapshot slot to repair from",
                report.archive
            );
            return Ok(1);
        }
        (Some(mut plan), Some(slot)) => {
            if args.leader.is_none() {
                let dir = report
                    .verified
                    .as_ref()
                    .and_then(|v| v["dir"].as_str())
                    .map(PathBuf::from)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "repair: no unpacked snapshot to take the leader schedule from (--verify stream); give --leader"
                        )
                    })?;
                plan.leaders =
                    schedule_from_snapshot(&dir, slot, slot.saturating_add(1), plan.tip_slot)?;
                tracing::info!(
                    "repair: each slot's shreds are checked against its leader in the snapshot's schedule"
                );
            }
            Some(run_repair_phase(plan, slot, json)?)
        }
    };
    if json {
        print_report(&report, repair.as_ref(), &trust_fields, json);
    } else if let Some(r) = &repair {
        print_repair(r);
    }
    match &repair {
        Some(r) if !r.complete => {
            eprintln!("{}", r.line());
            Ok(2)
        }
        _ => Ok(0),
    }
}

/// Run a sync; a source group whose archive is forged (its accounts hash is not the one in
/// its name, the trusted one) is dropped and the sync starts over from nothing with the
/// others. Returns the outcome and the dropped sources with the reason.
fn sync_dropping_forged(
    cfg: &mut SyncConfig,
    factory: &Arc<crate::solana::download::sink::SinkFactory>,
    make_progress: &dyn Fn() -> crate::solana::download::sync::ProgressFn,
) -> (Result<SyncReport, SyncError>, Vec<String>) {
    let mut forged: Vec<String> = Vec::new();
    loop {
        match sync(cfg.clone(), factory.clone(), make_progress()) {
            Err(SyncError::Forged { what, served_by }) if forged.len() < MAX_FORGED_GROUPS => {
                for u in &served_by {
                    forged.push(format!("{u}: {what}"));
                }
                let name = cfg
                    .archive_name
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_default();
                crate::solana::download::sync::forget_download(cfg, &name);
                cfg.sources.retain(|u| !served_by.contains(u));
                if cfg.sources.is_empty() && cfg.rpc.is_none() {
                    return (Err(SyncError::Forged { what, served_by }), forged);
                }
                tracing::warn!(%what, "forged archive: its sources are dropped, trying the others");
            }
            r => return (r, forged),
        }
    }
}

/// The incremental named in a freshness note (`chosen`), if the check picked one.
fn cfg_incremental_archive(
    note: &Option<serde_json::Value>,
) -> Option<crate::solana::download::sync::ExpectedArchive> {
    let c = &note.as_ref()?["chosen"];
    Some(crate::solana::download::sync::ExpectedArchive {
        base_slot: c["base_slot"].as_u64(),
        slot: c["slot"].as_u64()?,
        hash: c["hash"].as_str()?.to_string(),
    })
}

/// After a long full download: ask gossip again for the newest incremental on that full
/// that the known validators agree on. Returns it when it is newer than `before`, and a
/// note for the report (whether the cluster moved on to a newer full).
fn freshness_check(
    args: &SyncArgs,
    trusted_full_hash: Option<&str>,
    before: &TrustedIncremental,
) -> anyhow::Result<(Option<TrustedIncremental>, serde_json::Value)> {
    let full_slot = before.archive.base_slot.unwrap_or(0);
    let d = crate::solana::gossip::discover::discover(
        &crate::solana::gossip::discover::GossipDiscovery {
            entrypoints: args.entrypoints.clone(),
            known_validators: args.known_validators.clone(),
            min_agree: args.min_agree.max(1),
            identity: args.identity.clone(),
            listen: args.gossip_listen,
            timeout: std::time::Duration::from_secs(args.gossip_timeout_s.max(1)),
            shred_version: args.shred_version,
            incremental: false,
        },
    )?;
    // The hash of the full just verified (the one the known validators vouched for), not
    // whatever any node advertises for that slot.
    let full_hash = trusted_full_hash.map(str::to_string).or_else(|| {
        d.adverts
            .iter()
            .filter(|(k, _)| args.known_validators.contains(k))
            .find(|(_, a)| a.full_slot == full_slot)
            .map(|(_, a)| a.full_hash.clone())
    });
    let newest_full = crate::solana::gossip::trust::newest_agreed_full(
        &d.adverts,
        &args.known_validators,
        args.min_agree,
    );
    let mut fresh = None;
    if let Some(full_hash) = full_hash {
        if let Some(t) = crate::solana::gossip::trust::choose_incremental_on(
            &d.adverts,
            &args.known_validators,
            args.min_agree,
            full_slot,
            &full_hash,
        ) {
            if t.slot > before.archive.slot {
                let archive = crate::solana::download::sync::ExpectedArchive {
                    base_slot: Some(full_slot),
                    slot: t.slot,
                    hash: t.hash.clone(),
                };
                let name = archive.file_name();
                let mut sources: Vec<Url> = d
                    .rpcs
                    .iter()
                    .filter_map(|rpc| Url::parse(&format!("http://{rpc}/{name}")).ok())
                    .collect();
                sources.sort();
                sources.dedup();
                fresh = Some(TrustedIncremental {
                    archive,
                    sources,
                    trusted_by: t.trusted_by.clone(),
                });
            }
        }
    }
    let newer_full = newest_full.is_some_and(|s| s > full_slot);
    let chosen = fresh
        .as_ref()
        .map(|f| &f.archive)
        .unwrap_or(&before.archive);
    let note = serde_json::json!({
        "rechecked": true,
        "full_slot": full_slot,
        "newest_agreed_full_slot": newest_full,
        // Moved on: a newer full is agreed, or a newer incremental on this full.
        "cluster_moved_on": newer_full || fresh.is_some(),
        "newer_full": newer_full,
        "incremental_before": before.archive.slot,
        "chosen": { "base_slot": chosen.base_slot, "slot": chosen.slot, "hash": chosen.hash },
        "newer_incremental": fresh.is_some(),
    });
    Ok((fresh, note))
}

/// A trusted incremental archive and its sources.
struct TrustedIncremental {
    archive: crate::solana::download::sync::ExpectedArchive,
    sources: Vec<Url>,
    trusted_by: Vec<String>,
}

/// Where the snapshot's identity comes from, and the sources discovery found.
struct Trust {
    /// `gossip`, `rpc` or `sources`.
    discovery: &'static str,
    sources: Vec<Url>,
    expected: Option<crate::solana::download::sync::ExpectedArchive>,
    /// `known validators` or `--expected-snapshot-hash`; `None`: unverified.
    trusted_through: Option<&'static str>,
    trusted_by: Vec<String>,
    gossip: Option<crate::solana::gossip::discover::Discovered>,
    /// Sources dropped because their archive's accounts hash is not its name's.
    forged: Vec<String>,
    /// With --incremental and known validators: the incremental fetched after the full.
    incremental: Option<TrustedIncremental>,
}

/// Source groups with forged archives dropped before the sync gives up.
const MAX_FORGED_GROUPS: usize = 8;

impl Trust {
    /// The report's trust fields; `verified` is the verifier's report (None before).
    fn report_fields(&self, verified: Option<&serde_json::Value>) -> serde_json::Value {
        let name_ok = verified.and_then(|v| v["name_hash_ok"].as_bool());
        let identity = match (self.trusted_through, name_ok) {
            (Some(_), Some(true)) => "verified",
            (Some(_), _) => "not verified",
            (None, _) => {
                "unverified: no --known-validator or --expected-snapshot-hash vouches for it"
            }
        };
        serde_json::json!({
            "discovery": self.discovery,
            "snapshot_hash_ok": name_ok,
            "snapshot_hash_kind": verified.and_then(|v| v["name_hash_kind"].as_str()),
            "trusted_snapshot": self.expected.as_ref().map(|e| serde_json::json!({
                "base_slot": e.base_slot, "slot": e.slot, "hash": e.hash,
            })),
            "trusted_through": self.trusted_through,
            "trusted_by": self.trusted_by,
            "identity": identity,
            "trusted_incremental": self.incremental.as_ref().map(|i| serde_json::json!({
                "base_slot": i.archive.base_slot, "slot": i.archive.slot, "hash": i.archive.hash,
                "trusted_by": i.trusted_by,
            })),
            "forged_sources": self.forged,
            "gossip": self.gossip,
        })
    }
}

fn trust_lines(t: &serde_json::Value) -> Vec<String> {
    let mut out = vec![format!(
        "discovery: {}; snapshot identity: {}",
        t["discovery"].as_str().unwrap_or("-"),
        t["identity"].as_str().unwrap_or("-")
    )];
    if let Some(s) = t["trusted_snapshot"].as_object() {
        out.push(format!(
            "  trusted snapshot: slot {} hash {} through {}{}",
            s["slot"],
            s["hash"].as_str().unwrap_or("-"),
            t["trusted_through"].as_str().unwrap_or("-"),
            match t["trusted_by"].as_array() {
                Some(v) if !v.is_empty() => format!(
                    " ({})",
                    v.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => String::new(),
            }
        ));
    }
    match t["snapshot_hash_ok"].as_bool() {
        Some(true) => out.push(format!(
            "  snapshot hash: ok ({})",
            t["snapshot_hash_kind"].as_str().unwrap_or("-")
        )),
        Some(false) => out.push("  snapshot hash: MISMATCH".into()),
        None => out.push("  snapshot hash: not checked".into()),
    }
    for f in t["forged_sources"].as_array().into_iter().flatten() {
        out.push(format!(
            "  forged source dropped: {}",
            f.as_str().unwrap_or("-")
        ));
    }
    if let Some(f) = t["full_snapshot"].as_object() {
        out.push(format!(
            "  full snapshot: {} ({} bytes fetched in {:.1}s)",
            f["archive"].as_str().unwrap_or("-"),
            f["bytes_fetched"],
            f["download_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
        ));
    }
    if let Some(e) = t["freshness"]["error"].as_str() {
        out.push(format!(
            "  freshness check failed ({e}): the incremental chosen before was fetched"
        ));
    } else if t["freshness"]["rechecked"] == true {
        let f = &t["freshness"];
        let on = format!(
            "incremental slot {} on full slot {}",
            f["chosen"]["slot"], f["full_slot"]
        );
        out.push(if f["cluster_moved_on"] == true {
            format!(
                "  freshness: the cluster moved on during the full download ({}{}): fetched {on}, not a newer full",
                if f["newer_incremental"] == true {
                    format!("incremental slot {} -> {}", f["incremental_before"], f["chosen"]["slot"])
                } else {
                    "no newer incremental on this full".to_string()
                },
                if f["newer_full"] == true {
                    format!(", newest agreed full slot {}", f["newest_agreed_full_slot"])
                } else {
                    String::new()
                }
            )
        } else {
            format!("  freshness: rechecked after the full download, the cluster has not moved on: {on}")
        });
    }
    out
}

/// Discovery by gossip and the trusted snapshot, as the flags ask.
fn resolve_trust(args: &SyncArgs) -> anyhow::Result<Trust> {
    let expected_flag = args
        .expected_snapshot_hash
        .as_deref()
        .map(crate::solana::gossip::trust::parse_expected)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--expected-snapshot-hash: {e}"))?;
    let mut t = Trust {
        discovery: if args.rpc.is_some() { "rpc" } else { "sources" },
        sources: Vec::new(),
        expected: None,
        trusted_through: None,
        trusted_by: Vec::new(),
        gossip: None,
        forged: Vec::new(),
        incremental: None,
    };
    if !args.entrypoints.is_empty() {
        let d = crate::solana::gossip::discover::discover(
            &crate::solana::gossip::discover::GossipDiscovery {
                entrypoints: args.entrypoints.clone(),
                known_validators: args.known_validators.clone(),
                min_agree: args.min_agree.max(1),
                identity: args.identity.clone(),
                listen: args.gossip_listen,
                timeout: std::time::Duration::from_secs(args.gossip_timeout_s.max(1)),
                shred_version: args.shred_version,
                incremental: args.incremental,
            },
        )?;
        t.discovery = "gossip";
        t.sources = d.sources.clone();
        if let (Some(e), Some(c)) = (&d.expected, &d.choice) {
            t.expected = Some(e.clone());
            t.trusted_through = Some("known validators");
            t.trusted_by = c.full.trusted_by.clone();
            if let (true, Some(inc), Some(ci)) =
                (args.incremental, &d.expected_incremental, &c.incremental)
            {
                t.incremental = Some(TrustedIncremental {
                    archive: inc.clone(),
                    sources: d.incremental_sources.clone(),
                    trusted_by: ci.trusted_by.clone(),
                });
            }
        }
        tracing::info!(
            peers = d.peers,
            sources = d.sources.len(),
            trusted = ?t.expected,
            "gossip discovery done"
        );
        t.gossip = Some(d);
    }
    if let Some((slot, hash)) = expected_flag {
        if let Some(e) = &t.expected {
            if e.slot != slot || e.hash != hash {
                anyhow::bail!(
                    "--expected-snapshot-hash {slot}:{hash} differs from what the known validators advertise ({}:{}); drop one of them",
                    e.slot,
                    e.hash
                );
            }
        } else {
            let base_slot = if args.incremental {
                anyhow::bail!("--expected-snapshot-hash names a full snapshot; it cannot be used with --incremental without --known-validator");
            } else {
                None
            };
            t.expected = Some(crate::solana::download::sync::ExpectedArchive {
                base_slot,
                slot,
                hash,
            });
            t.trusted_through = Some("--expected-snapshot-hash");
            // Gossip without known validators listed base URLs: ask for the archive itself.
            let name = t
                .expected
                .as_ref()
                .map(|e| e.file_name())
                .unwrap_or_default();
            t.sources = t
                .sources
                .iter()
                .filter_map(|u| u.join(&format!("/{name}")).ok())
                .collect();
        }
    }
    if args.require_trusted && t.trusted_through.is_none() {
        anyhow::bail!(
            "--require-trusted: no known validator or expected hash vouches for the snapshot; give --entrypoint with --known-validator, or --expected-snapshot-hash SLOT:HASH"
        );
    }
    Ok(t)
}

/// Slots repaired against the snapshot's leader schedule at most (the schedule is kept
/// per slot).
const MAX_SCHEDULED_SLOTS: u64 = 1 << 22;

/// The leader of every slot `from..=to` from the stakes in the snapshot's bank (unpacked
/// in `dir`): each epoch's stake-weighted schedule over its nodes' stakes.
fn schedule_from_snapshot(
    dir: &std::path::Path,
    snapshot_slot: u64,
    from: u64,
    to: u64,
) -> anyhow::Result<crate::solana::repair::LeaderSchedule> {
    let path = dir
        .join("snapshots")
        .join(snapshot_slot.to_string())
        .join(snapshot_slot.to_string());
    let bytes = std::fs::read(&path)
        .map_err(|e| anyhow::anyhow!("reading the snapshot's manifest {}: {e}", path.display()))?;
    let m = catchup_solana::decode_manifest(&bytes)
        .map_err(|e| anyhow::anyhow!("the snapshot's manifest {}: {e}", path.display()))?;
    if to >= from && to - from >= MAX_SCHEDULED_SLOTS {
        anyhow::bail!(
            "repair of {} slots exceeds the {MAX_SCHEDULED_SLOTS} the leader schedule is kept for; lower --tip-slot or give --leader",
            to - from + 1
        );
    }
    let mut leaders = std::collections::BTreeMap::new();
    let mut slot = from;
    while slot <= to {
        let (epoch, first, len) = m.epoch_schedule.epoch_of(slot);
        let nodes = m
            .epoch_node_stakes
            .iter()
            .find(|(e, _)| *e == epoch)
            .map(|(_, n)| n)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the snapshot's bank holds no stakes for epoch {epoch} (slot {slot}); give --leader"
                )
            })?;
        let stakes: Vec<(catchup_gossip::Pubkey, u64)> = nodes
            .iter()
            .map(|(k, s)| (catchup_gossip::Pubkey(*k), *s))
            .collect();
        let schedule =
            catchup_gossip::leader_schedule::LeaderSchedule::new(&stakes, epoch, first, len)
                .map_err(|e| anyhow::anyhow!("leader schedule of epoch {epoch}: {e}"))?;
        let end = first.saturating_add(len - 1).min(to);
        for s in slot..=end {
            if let Some(k) = schedule.leader(s) {
                leaders.insert(s, k.0);
            }
        }
        slot = end.saturating_add(1);
        if end == u64::MAX {
            break;
        }
    }
    Ok(crate::solana::repair::LeaderSchedule::PerSlot(leaders))
}

/// The repair phase as the flags ask for it.
struct RepairPlan {
    peers: Vec<crate::solana::repair::PeerSpec>,
    tip_slot: u64,
    leaders: crate::solana::repair::LeaderSchedule,
    path: crate::solana::repair::NetPath,
    shards: usize,
    deadline_ms: u64,
    batch_slots: u64,
    /// Verified shreds are kept here (one store per shard) so that a restart resumes.
    store_dir: std::path::PathBuf,
}

/// With --entrypoint and no --repair-peer, the repair peers are the serve-repair addresses
/// gossip finds (filled in after discovery).
fn repair_plan(args: &SyncArgs) -> anyhow::Result<Option<RepairPlan>> {
    let from_gossip = !args.entrypoints.is_empty() && args.tip_slot.is_some();
    if args.repair_peers.is_empty() && !from_gossip {
        if args.tip_slot.is_some() || args.leader.is_some() || args.repair_xdp.is_some() {
            anyhow::bail!("--tip-slot, --leader and --repair-xdp need at least one --repair-peer (or an --entrypoint whose nodes advertise serve-repair addresses)");
        }
        return Ok(None);
    }
    let Some(tip_slot) = args.tip_slot else {
        anyhow::bail!("--repair-peer needs --tip-slot (the last slot to repair)");
    };
    // Without --leader every slot is checked against its leader in the snapshot's
    // schedule (filled in once the snapshot verified).
    let leaders = match &args.leader {
        Some(leader) => crate::solana::repair::LeaderSchedule::Fixed(
            crate::solana::repair::driver::parse_pubkey(leader)
                .map_err(|e| anyhow::anyhow!("--leader: {e}"))?,
        ),
        None if args.verify == VerifyMode::Stream => anyhow::bail!(
            "--repair-peer with --verify stream needs --leader (the leader schedule comes from the unpacked snapshot, which stream verification does not keep)"
        ),
        None => crate::solana::repair::LeaderSchedule::PerSlot(Default::default()),
    };
    if args.repair_batch_slots == 0 {
        anyhow::bail!("--repair-batch-slots must be at least 1");
    }
    if args.repair_shards == 0 || args.repair_shards > 64 {
        anyhow::bail!("--repair-shards must be 1..=64");
    }
    let bind = std::net::Ipv4Addr::UNSPECIFIED;
    let path = match &args.repair_xdp {
        Some(iface) => crate::solana::repair::NetPath::Xdp {
            iface: iface.clone(),
            queues: Vec::new(),
            port: args.repair_xdp_port,
            bind,
        },
        None => crate::solana::repair::NetPath::Udp { bind },
    };
    Ok(Some(RepairPlan {
        peers: args.repair_peers.clone(),
        tip_slot,
        leaders,
        path,
        shards: args.repair_shards,
        deadline_ms: args.repair_timeout_secs.saturating_mul(1000),
        batch_slots: args.repair_batch_slots,
        store_dir: args.datadir.join("repair"),
    }))
}

/// Repair `snapshot_slot + 1..=tip` (newest first), with its state in the admin `/status`
/// and a line before and after; an empty gap is a complete repair of nothing.
fn run_repair_phase(
    plan: RepairPlan,
    snapshot_slot: u64,
    json: bool,
) -> anyhow::Result<crate::solana::repair::RepairSummary> {
    let from_slot = snapshot_slot.saturating_add(1);
    if plan.tip_slot < from_slot {
        let s = crate::solana::repair::RepairSummary {
            from_slot,
            to_slot: plan.tip_slot,
            complete: true,
            ..Default::default()
        };
        if !json {
            println!(
                "repair: nothing to do, the snapshot slot {snapshot_slot} is at or past --tip-slot {}",
                plan.tip_slot
            );
        }
        return Ok(s);
    }
    let gap = plan.tip_slot - snapshot_slot;
    let status = serde_json::json!({
        "running": true,
        "snapshot_slot": snapshot_slot,
        "tip_slot": plan.tip_slot,
        "slots_remaining": gap,
        "peers": plan.peers.iter().map(|p| p.addr.to_string()).collect::<Vec<_>>(),
    });
    crate::node::admin::set_status("repair", status.clone());
    if json {
        println!(
            "{}",
            serde_json::json!({ "progress": { "repair": status } })
        );
    } else {
        println!(
            "repair: snapshot slot {snapshot_slot}, tip {}: {gap} slots from {} peers, newest first",
            plan.tip_slot,
            plan.peers.len()
        );
    }
    // Batches of slots from the tip down (newest first); after each, the progress goes to
    // /status, the bar and the progress line. Each batch may use its share of the time left.
    let batch_slots = plan.batch_slots.max(1);
    let batches = gap.div_ceil(batch_slots);
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(gap);
        b.set_style(
            indicatif::ProgressStyle::with_template("repair {bar:40} {pos}/{len} slots {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let start = std::time::Instant::now();
    let mut total = crate::solana::repair::RepairOutcome::default();
    let mut paths = Vec::new();
    let mut hi = plan.tip_slot;
    for batch in 0..batches {
        let lo = hi.saturating_sub(batch_slots - 1).max(from_slot);
        let left_ms = plan
            .deadline_ms
            .saturating_sub(start.elapsed().as_millis() as u64);
        if left_ms == 0 {
            break;
        }
        let share_ms = (left_ms / (batches - batch)).max(1);
        let o = crate::solana::repair::repair_after_snapshot(
            lo - 1,
            hi,
            plan.peers.clone(),
            plan.leaders.clone(),
            plan.shards,
            plan.path.clone(),
            share_ms,
            Some(plan.store_dir.clone()),
        )?;
        if paths.is_empty() {
            paths = o.shards.iter().map(|s| s.path.clone()).collect();
        }
        merge_outcome(&mut total, o);
        let elapsed_ms = start.elapsed().as_millis() as u64;
        let repaired = total.slots.len() as u64;
        let shreds_per_s = total.shreds as f64 * 1000.0 / elapsed_ms.max(1) as f64;
        let p = serde_json::json!({
            "running": true,
            "snapshot_slot": snapshot_slot,
            "tip_slot": plan.tip_slot,
            "slots_repaired": repaired,
            "slots_remaining": gap - repaired,
            "shreds": total.shreds,
            "shreds_loaded": total.shreds_loaded,
            "shreds_per_s": shreds_per_s,
            "elapsed_ms": elapsed_ms,
            "batch": batch + 1,
            "batches": batches,
        });
        crate::node::admin::set_status("repair", p.clone());
        if let Some(b) = &bar {
            b.set_position(repaired);
            b.set_message(format!("{shreds_per_s:.0} shreds/s"));
        }
        if json {
            println!("{}", serde_json::json!({ "progress": { "repair": p } }));
        } else if bar.is_none() {
            println!(
                "repair: {repaired}/{gap} slots, {} remaining, {} shreds, {shreds_per_s:.0} shreds/s",
                gap - repaired,
                total.shreds
            );
        }
        if lo == from_slot {
            break;
        }
        hi = lo - 1;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    total.elapsed_ms = start.elapsed().as_millis() as u64;
    total.shreds_per_s = total.shreds as f64 * 1000.0 / total.elapsed_ms.max(1) as f64;
    total.complete = total.slots.len() as u64 == gap;
    let mut summary =
        crate::solana::repair::summarize(from_slot, plan.tip_slot, &plan.peers, &total);
    summary.paths = paths;
    crate::node::admin::set_status(
        "repair",
        serde_json::json!({ "finished": &summary, "slots_remaining": summary.missing_count }),
    );
    Ok(summary)
}

/// Add one batch's outcome to the running total (slots, counters, per-shard peer health).
fn merge_outcome(
    total: &mut crate::solana::repair::RepairOutcome,
    mut o: crate::solana::repair::RepairOutcome,
) {
    total.slots_total += o.slots_total;
    total.slots_complete += o.slots_complete;
    total.shreds += o.shreds;
    total.slots_loaded += o.slots_loaded;
    total.shreds_loaded += o.shreds_loaded;
    total.store_dropped += o.store_dropped;
    total.requests_for_loaded += o.requests_for_loaded;
    total.slots.append(&mut o.slots);
    total.shards.append(&mut o.shards);
}

/// The snapshot's report; in JSON with the repair phase's summary as `repair`.
fn print_report(
    r: &SyncReport,
    repair: Option<&crate::solana::repair::RepairSummary>,
    trust: &serde_json::Value,
    json: bool,
) {
    if json {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        if let (Some(obj), Some(rep)) = (v.as_object_mut(), repair) {
            obj.insert(
                "repair".into(),
                serde_json::to_value(rep).unwrap_or_default(),
            );
        }
        if let (Some(obj), Some(t)) = (v.as_object_mut(), trust.as_object()) {
            for (k, x) in t {
                obj.insert(k.clone(), x.clone());
            }
        }
        println!("{v}");
        return;
    }

    let secs = r.download_ms as f64 / 1000.0;
    println!(
        "{}: {} ({} bytes, {} chunks: {} resumed, {} fetched) in {:.1}s download, {:.1}s total, {:.1} MB/s",
        r.archive,
        if r.complete {
            "verified"
        } else if r.interrupted {
            "NOT complete (interrupted)"
        } else {
            "NOT complete"
        },
        r.size_bytes,
        r.chunks_total,
        r.chunks_resumed,
        r.chunks_fetched,
        secs,
        r.total_ms as f64 / 1000.0,
        if secs > 0.0 { r.bytes_fetched as f64 / 1e6 / secs } else { 0.0 },
    );
    for s in &r.sources {
        println!(
            "  source {} (shard {}) chunks {} bytes {} {:.1} MB/s failures {}{}",
            s.url,
            s.shard,
            s.chunks,
            s.bytes,
            mb(s.speed_bytes_per_s),
            s.failures,
            s.dropped
                .as_ref()
                .map(|d| format!(" DROPPED: {d}"))
                .unwrap_or_default()
        );
    }
    for b in &r.bad_sources {
        println!("  bad source: {b}");
    }
    if let Some(v) = &r.verified {
        for line in verified_lines(v) {
            println!("{line}");
        }
    }
    for line in trust_lines(trust) {
        println!("{line}");
    }
}

/// The verifier's report for people: for the full pipeline, what was checked and its
/// outcome first (LtHash, capitalization, accounts, slot), then where it went and one line
/// per shard; any other report as indented `key: value` lines. `--json` has every field.
fn verified_lines(v: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    let check = v["check"].as_str().unwrap_or("checks");
    let text = |k: &str| match &v[k] {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if v["lt_hash_ok"].is_null() || v["capitalization_ok"].is_null() {
        let mut out = vec![format!("  verified: {check}")];
        let mut rest = v.clone();
        if let Some(o) = rest.as_object_mut() {
            o.remove("check");
        }
        out.extend(readable_lines(&rest, 4));
        return out;
    }
    let outcome = |ok: &str, computed: &str, expected: &str, unit: &str| {
        if v[ok] == Value::Bool(true) {
            format!("ok, {}{unit} (computed = expected)", text(computed))
        } else {
            format!(
                "MISMATCH: computed {}{unit}, expected {}{unit}",
                text(computed),
                text(expected)
            )
        }
    };
    let mut out = vec![
        format!("  verified: {check}"),
        format!(
            "    LtHash:          {}",
            outcome("lt_hash_ok", "lt_hash_computed", "lt_hash_expected", "")
        ),
        format!(
            "    capitalization:  {}",
            outcome(
                "capitalization_ok",
                "capitalization_computed",
                "capitalization_expected",
                " lamports"
            )
        ),
        format!(
            "    accounts:        {} live of {} stored ({} with zero lamports) in {} storage file(s)",
            text("accounts_live"),
            text("accounts_total"),
            text("zero_lamport_accounts"),
            text("storages")
        ),
        format!(
            "    slot:            {} (parent {}{}), bank hash {}",
            text("slot"),
            text("parent_slot"),
            if v["base_slot"].is_null() {
                String::new()
            } else {
                format!(", incremental on base slot {}", text("base_slot"))
            },
            text("bank_hash")
        ),
        format!(
            "    unpacked:        {} bytes from {} compressed ({} zstd frame(s)) into {} in {} ms",
            text("decompressed_bytes"),
            text("compressed_bytes"),
            text("frames"),
            text("dir"),
            text("elapsed_ms")
        ),
    ];
    for sh in v["shards"].as_array().into_iter().flatten() {
        let t = |k: &str| match &sh[k] {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push(format!(
            "    {:<17}{} live accounts of {}, {} bytes scanned, {} file(s) written ({})",
            format!("shard {}:", t("shard")),
            t("accounts_live"),
            t("accounts_total"),
            t("scanned_bytes"),
            t("files_written"),
            t("write_mode")
        ));
    }
    out
}

/// A JSON value as indented `key: value` lines for people (nested objects indented
/// further, lists of plain values on one line).
fn readable_lines(v: &serde_json::Value, indent: usize) -> Vec<String> {
    use serde_json::Value;
    let plain = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let pad = " ".repeat(indent);
    let mut out = Vec::new();
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = k.replace('_', " ");
                match v {
                    Value::Object(_) => {
                        out.push(format!("{pad}{key}:"));
                        out.extend(readable_lines(v, indent + 2));
                    }
                    Value::Array(items) if items.iter().any(|i| i.is_object()) => {
                        out.push(format!("{pad}{key}:"));
                        for item in items {
                            out.extend(readable_lines(item, indent + 2));
                        }
                    }
                    Value::Array(items) => out.push(format!(
                        "{pad}{key}: {}",
                        items.iter().map(plain).collect::<Vec<_>>().join(", ")
                    )),
                    _ => out.push(format!("{pad}{key}: {}", plain(v))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                out.extend(readable_lines(item, indent));
            }
        }
        other => out.push(format!("{pad}{}", plain(other))),
    }
    out
}

fn print_repair(rep: &crate::solana::repair::RepairSummary) {
    println!("{}", rep.line());
    if let Some(reason) = &rep.fallback_reason {
        println!("  AF_XDP unavailable, repaired over UDP: {reason}");
    }
    for p in &rep.peers {
        println!(
            "  repair peer {}: {} answered, {} timeouts, {} invalid, {:.1} ms{}",
            p.peer,
            p.answered,
            p.timeouts,
            p.invalid,
            p.latency_ms,
            if p.dropped {
                ", dropped (its shreds failed verification)"
            } else {
                ""
            }
        );
    }
}

pub fn run_serve(args: ServeArgs, _global: &GlobalOpts) -> anyhow::Result<i32> {
    let mut cfg = ServeConfig::new(args.dir.clone(), args.listen);
    cfg.rate_limit_bytes_per_s = args
        .rate_limit
        .filter(|r| *r > 0.0)
        .map(|r| (r * 1e6) as u64);
    cfg.ranges = !args.no_range;
    cfg.cluster_rpc_addrs = args.cluster_nodes.clone();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    serve_blocking(cfg, stop, |addr| {
        use std::io::Write;
        println!("listening on {addr}");
        let _ = std::io::stdout().flush();
    })?;
    Ok(0)
}

#[cfg(test)]
mod readable_tests {
    use super::readable_lines;

    #[test]
    fn the_full_pipelines_verification_reads_outcome_first() {
        let v = serde_json::json!({
            "accounts_live": 50000, "accounts_total": 50000, "bank_hash": "Hkv",
            "base_slot": null, "capitalization_computed": 24984, "capitalization_expected": 24984,
            "capitalization_ok": true, "check": "snapshot pipeline: LtHash and capitalization",
            "compressed_bytes": 41, "datadir": "sd/snapshot/100", "decompressed_bytes": 134,
            "dir": "sd/snapshot/100", "elapsed_ms": 108, "frames": 1,
            "lt_hash_computed": "BGq", "lt_hash_expected": "BGq", "lt_hash_ok": true,
            "parent_slot": 99, "slot": 100, "storages": 1, "zero_lamport_accounts": 50,
            "shards": [
                {"shard": 0, "accounts_live": 24985, "accounts_total": 24985,
                 "scanned_bytes": 13, "files_written": 1, "write_mode": "io_uring-dma"},
                {"shard": 1, "accounts_live": 25015, "accounts_total": 25015,
                 "scanned_bytes": 0, "files_written": 0, "write_mode": "no files written"}
            ]
        });
        let lines = super::verified_lines(&v);
        assert_eq!(
            lines[..4],
            [
                "  verified: snapshot pipeline: LtHash and capitalization",
                "    LtHash:          ok, BGq (computed = expected)",
                "    capitalization:  ok, 24984 lamports (computed = expected)",
                "    accounts:        50000 live of 50000 stored (50 with zero lamports) in 1 storage file(s)",
            ],
            "{lines:#?}"
        );
        assert!(lines.contains(&"    slot:            100 (parent 99), bank hash Hkv".to_string()));
        assert!(lines.contains(
            &"    shard 1:         25015 live accounts of 25015, 0 bytes scanned, 0 file(s) written (no files written)"
                .to_string()
        ));
        assert!(lines.iter().all(|l| !l.contains('{')), "{lines:?}");
        let mut bad = v.clone();
        bad["lt_hash_ok"] = serde_json::json!(false);
        bad["lt_hash_computed"] = serde_json::json!("XYZ");
        assert_eq!(
            super::verified_lines(&bad)[1],
            "    LtHash:          MISMATCH: computed XYZ, expected BGq"
        );
    }

    #[test]
    fn another_verification_reads_as_key_value_lines_under_its_check() {
        let v = serde_json::json!({
            "check": "zstd frames and tar structure", "tar_entries": 7, "manifest_seen": true
        });
        assert_eq!(
            super::verified_lines(&v),
            [
                "  verified: zstd frames and tar structure",
                "    manifest seen: true",
                "    tar entries: 7"
            ]
        );
    }

    #[test]
    fn a_verification_summary_reads_as_lines() {
        let v = serde_json::json!({
            "lt_hash": "ab12", "accounts": 7, "slot": 5,
            "incremental": {"slot": 9, "ok": true}, "frames": [1, 2]
        });
        let lines = readable_lines(&v, 4);
        assert!(
            lines.contains(&"    lt hash: ab12".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"    accounts: 7".to_string()), "{lines:?}");
        assert!(lines.contains(&"    incremental:".to_string()), "{lines:?}");
        assert!(lines.contains(&"      ok: true".to_string()), "{lines:?}");
        assert!(lines.contains(&"    frames: 1, 2".to_string()), "{lines:?}");
        assert!(lines.iter().all(|l| !l.contains('{')), "{lines:?}");
    }
}

#[cfg(test)]
mod trust_lines_tests {
    use super::trust_lines;

    #[test]
    fn freshness_and_the_full_snapshot_are_one_line_each() {
        let t = serde_json::json!({
            "discovery": "gossip", "identity": "verified",
            "full_snapshot": { "archive": "snapshot-100-X.tar.zst", "bytes_fetched": 5, "download_ms": 2500 },
            "freshness": { "rechecked": true, "full_slot": 100, "incremental_before": 110,
                "cluster_moved_on": true, "newer_incremental": true, "newer_full": false,
                "newest_agreed_full_slot": 100, "chosen": { "slot": 120, "base_slot": 100 } },
        });
        let l = trust_lines(&t);
        assert!(
            l.iter()
                .any(|x| x == "  full snapshot: snapshot-100-X.tar.zst (5 bytes fetched in 2.5s)"),
            "{l:?}"
        );
        assert!(
            l.iter().any(|x| x.contains("the cluster moved on")
                && x.contains("incremental slot 110 -> 120")
                && x.contains("fetched incremental slot 120 on full slot 100")),
            "{l:?}"
        );
        let mut t = t;
        t["freshness"]["cluster_moved_on"] = false.into();
        assert!(trust_lines(&t)
            .iter()
            .any(|x| x.contains("has not moved on")));
        t["freshness"] = serde_json::json!({ "error": "gossip timed out" });
        assert!(trust_lines(&t)
            .iter()
            .any(|x| x.contains("freshness check failed (gossip timed out)")));
    }
}

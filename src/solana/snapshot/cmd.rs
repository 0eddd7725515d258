//! `catchup solana snapshot verify|inspect|generate` and `catchup bench snapshot`: snapshot
//! archives checked, shown and made, without a network.

use std::path::PathBuf;

use clap::Args;

use crate::node::opts::GlobalOpts;

use crate::solana::snapshot::generate::{
    generate, generate_incremental, DataSize, GenerateConfig, IncrementalConfig,
};
use crate::solana::snapshot::name_hash::NameHashCheck;
use crate::solana::snapshot::{
    verify_archive_snapshot_named, Pipeline, PipelineConfig, PipelineError, VerifyReport,
};

#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// Index shards (and decompression workers for multi-frame archives). Default: all cores.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Bound on streaming buffers (zstd window, frames in flight), in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    pub memory_limit_bytes: u64,
    /// Largest zstd window accepted, as log2 (Agave uses 27).
    #[arg(long, default_value_t = catchup_solana::zstd_stream::DEFAULT_WINDOW_LOG_MAX)]
    pub window_log_max: u32,
}

impl PipelineArgs {
    /// The pipeline settings, its index shards placed on the `--plan` cores if one is given.
    pub fn config(&self, global: &GlobalOpts) -> anyhow::Result<PipelineConfig> {
        let mut c = PipelineConfig {
            cores: crate::node::opts::load_plan(global)?.map(|p| p.cores()),
            memory_limit_bytes: self.memory_limit_bytes,
            window_log_max: self.window_log_max,
            ..PipelineConfig::default()
        };
        if let Some(s) = self.shards {
            c.shards = s.max(1);
        }
        Ok(c)
    }
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Full snapshot archive (snapshot-SLOT-HASH.tar.zst).
    pub archive: PathBuf,
    /// Incremental snapshot archive to apply on top of the full one.
    #[arg(long)]
    pub incremental: Option<PathBuf>,
    /// Data directory; the snapshot ends up in DATADIR/snapshot/SLOT.
    #[arg(long, default_value = "./catchup-data")]
    pub datadir: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Snapshot archive.
    pub archive: PathBuf,
    /// Also list every live account (pubkey, lamports, owner, data length).
    #[arg(long)]
    pub accounts: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Number of accounts.
    #[arg(long, required_unless_present = "incremental_of")]
    pub accounts: Option<u64>,
    /// Write an incremental snapshot at --slot on top of this full archive (verified
    /// first) instead of a full one: --changed, --added and --removed accounts.
    #[arg(long, value_name = "FULL_ARCHIVE", conflicts_with_all = ["accounts", "leader", "frames"])]
    pub incremental_of: Option<PathBuf>,
    /// With --incremental-of: existing accounts given new lamports and data.
    #[arg(long, default_value_t = 16, requires = "incremental_of")]
    pub changed: u64,
    /// With --incremental-of: new accounts.
    #[arg(long, default_value_t = 4, requires = "incremental_of")]
    pub added: u64,
    /// With --incremental-of: existing accounts removed (stored with zero lamports).
    #[arg(long, default_value_t = 4, requires = "incremental_of")]
    pub removed: u64,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Give the bank's epoch stakes (this epoch and the two after) to this node (base58):
    /// the leader of every slot there, for repair checked against the snapshot's schedule.
    #[arg(long, value_name = "PUBKEY")]
    pub leader: Option<String>,
    /// Account data size: N, fixed:N or uniform:MIN-MAX (bytes, at most 10 MiB).
    #[arg(long, default_value = "uniform:0-256")]
    pub data_size: DataSize,
    /// Independent zstd frames (with frame markers) for parallel decompression.
    #[arg(long, default_value_t = 1)]
    pub frames: u32,
    /// Snapshot slot.
    #[arg(long, default_value_t = 100)]
    pub slot: u64,
    /// Seed of the generated accounts.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Target size of each account storage file.
    #[arg(long, default_value_t = 64 << 20)]
    pub file_size_bytes: u64,
    /// zstd compression level.
    #[arg(long, default_value_t = 1)]
    pub zstd_level: i32,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn print_report(r: &VerifyReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).expect("report serializes"));
    } else {
        println!(
            "slot {} (parent {}{}), {} storages, {} account entries, {} live ({} zero-lamport)",
            r.slot,
            r.parent_slot,
            r.base_slot
                .map(|b| format!(", incremental on {b}"))
                .unwrap_or_default(),
            r.storages,
            r.accounts_total,
            r.accounts_live,
            r.zero_lamport_accounts
        );
        println!("bank hash       {}", r.bank_hash);
        println!(
            "accounts LtHash {} (expected {})  {}",
            r.lt_hash_computed,
            r.lt_hash_expected.as_deref().unwrap_or("-"),
            if r.lt_hash_ok { "ok" } else { "MISMATCH" }
        );
        println!(
            "capitalization  {} (expected {})  {}",
            r.capitalization_computed,
            r.capitalization_expected,
            if r.capitalization_ok {
                "ok"
            } else {
                "MISMATCH"
            }
        );
        println!(
            "{} compressed bytes, {} decompressed, {} frame(s), {} ms, unpacked in {}",
            r.compressed_bytes, r.decompressed_bytes, r.frames, r.elapsed_ms, r.datadir
        );
    }
}

/// Whether every archive name's hash matched (`None`: no archive had an Agave name).
fn names_ok(checks: &[NameHashCheck]) -> Option<bool> {
    (!checks.is_empty()).then(|| checks.iter().all(|c| c.ok))
}

fn print_verified(r: &VerifyReport, checks: &[NameHashCheck], json: bool) {
    if json {
        let mut v = serde_json::to_value(r).expect("report serializes");
        if let Some(o) = v.as_object_mut() {
            o.insert("name_hash_ok".into(), serde_json::json!(names_ok(checks)));
            o.insert(
                "name_hash_kind".into(),
                serde_json::json!(checks.last().map(|c| c.kind.clone())),
            );
            o.insert("name_hashes".into(), serde_json::json!(checks));
        }
        println!("{v}");
        return;
    }
    print_report(r, false);
    if checks.is_empty() {
        println!("name hash       not checked (no snapshot-SLOT-HASH archive name)");
    }
    for c in checks {
        if c.ok {
            println!(
                "name hash       {} ({}) matches {}",
                c.name_hash, c.kind, c.archive
            );
        } else {
            println!("name hash       MISMATCH: {}", c.mismatch_line());
        }
    }
}

pub fn verify(a: VerifyArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    match verify_archive_snapshot_named(
        &a.archive,
        a.incremental.as_deref(),
        &a.datadir,
        a.pipeline.config(global)?,
    ) {
        Ok((v, checks)) => {
            print_verified(&v.report, &checks, a.json);
            if let Some(bad) = checks.iter().find(|c| !c.ok) {
                eprintln!(
                    "error: snapshot hash mismatch: {} (the archive is not the snapshot its name says)",
                    bad.mismatch_line()
                );
                return Ok(1);
            }
            Ok(0)
        }
        Err(PipelineError::Verification { what, report }) => {
            print_verified(&report, &[], a.json);
            eprintln!("error: {what}");
            Ok(1)
        }
        Err(e) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": e.to_string() })
                );
            }
            eprintln!("error: {}: {e}", a.archive.display());
            Ok(1)
        }
    }
}

pub fn inspect(a: InspectArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = std::env::temp_dir().join(format!("catchup-inspect-{}-{nanos}", std::process::id()));
    let config = a.pipeline.config(global)?;
    let result = (|| -> Result<_, PipelineError> {
        let mut p = Pipeline::new(&tmp, config)?;
        crate::solana::snapshot::feed_file(&mut p, &a.archive)?;
        let v = p.finish()?;
        let accounts = if a.accounts {
            Some(v.accounts()?)
        } else {
            None
        };
        Ok((v.report.clone(), v.manifest.clone(), accounts))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    let (report, m, accounts) = match result {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {}: {e}", a.archive.display());
            return Ok(1);
        }
    };
    let b58 = catchup_solana::base58;
    if a.json {
        let mut v = serde_json::json!({
            "slot": m.slot,
            "parent_slot": m.parent_slot,
            "bank_hash": b58(&m.bank_hash),
            "parent_hash": b58(&m.parent_hash),
            "epoch": m.epoch,
            "block_height": m.block_height,
            "capitalization": m.capitalization,
            "transaction_count": m.transaction_count,
            "signature_count": m.signature_count,
            "accounts_data_len": m.accounts_data_len,
            "lamports_per_signature": m.lamports_per_signature,
            "accounts_lt_hash": m.accounts_lt_hash.as_ref().map(|h| b58(&h.checksum())),
            "block_id": m.block_id.map(|h| b58(&h)),
            "storages": m.storages.iter().map(|s| serde_json::json!({
                "slot": s.slot, "id": s.id, "accounts_current_len": s.accounts_current_len
            })).collect::<Vec<_>>(),
            "verify": report,
        });
        if let Some(acc) = &accounts {
            v["accounts"] = acc
                .iter()
                .map(|x| {
                    serde_json::json!({
                        "pubkey": b58(&x.pubkey), "lamports": x.lamports, "owner": b58(&x.owner),
                        "executable": x.executable, "rent_epoch": x.rent_epoch, "data_len": x.data.len(),
                        "slot": x.location.slot,
                    })
                })
                .collect();
        }
        println!("{v}");
    } else {
        println!(
            "slot            {} (parent {}, epoch {}, block height {})",
            m.slot, m.parent_slot, m.epoch, m.block_height
        );
        println!("bank hash       {}", b58(&m.bank_hash));
        println!("parent hash     {}", b58(&m.parent_hash));
        println!("capitalization  {}", m.capitalization);
        println!(
            "transactions    {} ({} signatures)",
            m.transaction_count, m.signature_count
        );
        if let Some(h) = &m.accounts_lt_hash {
            println!("accounts LtHash {}", b58(&h.checksum()));
        }
        println!("storages        {}", m.storages.len());
        for s in &m.storages {
            println!(
                "  accounts/{}.{}  {} bytes",
                s.slot, s.id, s.accounts_current_len
            );
        }
        println!(
            "verified        LtHash {}, capitalization {}, {} live accounts",
            if report.lt_hash_ok { "ok" } else { "MISMATCH" },
            if report.capitalization_ok {
                "ok"
            } else {
                "MISMATCH"
            },
            report.accounts_live
        );
        if let Some(acc) = &accounts {
            for x in acc {
                println!(
                    "{:<44} {:>20} {:<44} {:>8}",
                    b58(&x.pubkey),
                    x.lamports,
                    b58(&x.owner),
                    x.data.len()
                );
            }
        }
    }
    Ok(0)
}

pub fn gen(a: GenerateArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    if let Some(full) = &a.incremental_of {
        let cfg = IncrementalConfig {
            slot: a.slot,
            changed: a.changed,
            added: a.added,
            removed: a.removed,
            seed: a.seed,
            zstd_level: a.zstd_level,
        };
        let g = generate_incremental(full, &cfg, &a.out, a.pipeline.config(global)?)?;
        if a.json {
            println!("{}", serde_json::to_string(&g)?);
        } else {
            println!(
                "{}: slot {} on full slot {}, {} changed, {} added, {} removed, capitalization {}, {} bytes uncompressed, {} compressed",
                g.path.display(),
                g.slot,
                g.full_slot,
                g.changed,
                g.added,
                g.removed,
                g.capitalization,
                g.uncompressed_bytes,
                g.compressed_bytes
            );
        }
        return Ok(0);
    }
    let cfg = GenerateConfig {
        accounts: a.accounts.unwrap_or_default(),
        data_size: a.data_size,
        frames: a.frames,
        slot: a.slot,
        seed: a.seed,
        file_size_bytes: a.file_size_bytes.max(1),
        zstd_level: a.zstd_level,
        leader: match &a.leader {
            None => None,
            Some(k) => Some(
                catchup_solana::base58_32(k)
                    .ok_or_else(|| anyhow::anyhow!("--leader {k:?} is not a base58 public key"))?,
            ),
        },
        ..GenerateConfig::default()
    };
    let g = generate(&cfg, &a.out)?;
    if a.json {
        println!("{}", serde_json::to_string(&g)?);
    } else {
        println!(
            "{}: slot {}, {} storages, {} account entries ({} live), capitalization {}, {} bytes uncompressed, {} compressed, {} frame(s)",
            g.path.display(),
            g.slot,
            g.storages,
            g.accounts_written,
            g.accounts_live,
            g.capitalization,
            g.uncompressed_bytes,
            g.compressed_bytes,
            g.frames
        );
    }
    Ok(0)
}

/// Snapshot pipeline throughput on a generated archive.
#[derive(Args, Debug, Clone)]
pub struct SnapshotBenchArgs {
    /// Index shards and decompression workers. Default: all cores.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Uncompressed size of the generated archive (1 GiB by default).
    #[arg(long, default_value_t = 1 << 30)]
    pub size_bytes: u64,
    /// zstd frames in the generated archive. Default: one per 64 MiB (at least one per shard).
    #[arg(long)]
    pub frames: Option<u32>,
    /// Working directory for the archive and the unpacked data (removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Skip the `zstd -d | tar -x` baseline.
    #[arg(long)]
    pub no_tar_baseline: bool,
    /// Accounts to generate (overrides --size-bytes; e.g. 10000000 to measure the index
    /// at 10 M accounts).
    #[arg(long)]
    pub accounts: Option<u64>,
    /// Data sizes of the generated accounts: `N`, `fixed:N` or `uniform:A-B` bytes.
    #[arg(long, default_value = "uniform:0-400")]
    pub data_size: crate::solana::snapshot::generate::DataSize,
    /// Storage-file memory maps each index shard keeps open at most (least recently used
    /// dropped, mapped again when read).
    #[arg(long, default_value_t = crate::solana::snapshot::index::DEFAULT_MAX_OPEN_MAPS_PER_SHARD)]
    pub max_open_maps: usize,
    /// Target size of each generated account storage file. Each file is written and
    /// scanned by one shard, so a few large files leave shards idle while the last ones
    /// are read; Agave's slot-sized storage files are mostly far smaller.
    #[arg(long, default_value_t = 64 << 20)]
    pub file_size_bytes: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `catchup bench snapshot`.
pub fn bench_snapshot(a: &SnapshotBenchArgs) -> anyhow::Result<i32> {
    use crate::solana::snapshot::bench::{run_bench, BenchConfig};
    let shards = a
        .shards
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = a
        .dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("catchup-bench-snapshot-{nanos}"));
    let cfg = BenchConfig {
        shards,
        size_bytes: a.size_bytes,
        // Frames small enough to be decompressed in parallel within the memory budget.
        frames: a.frames.unwrap_or_else(|| {
            (shards as u64)
                .max(a.size_bytes.div_ceil(64 << 20))
                .min(4096) as u32
        }),
        dir: dir.clone(),
        skip_tar_baseline: a.no_tar_baseline,
        accounts: a.accounts,
        data_size: a.data_size,
        max_open_maps_per_shard: a.max_open_maps,
        file_size_bytes: a.file_size_bytes.max(1),
    };
    let r = run_bench(&cfg);
    let _ = std::fs::remove_dir_all(&dir);
    let r = r?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let mb = |b: f64| b / 1e6;
        println!(
            "archive: {} accounts, {:.1} MB uncompressed, {:.1} MB compressed, {} frame(s); generated in {} ms",
            r.accounts,
            r.archive_uncompressed_bytes as f64 / 1e6,
            r.archive_compressed_bytes as f64 / 1e6,
            r.frames,
            r.generate_ms
        );
        println!(
            "pipeline ({} shards): {:.1} MB/s uncompressed, {:.1} MB/s archive, {:.0} accounts/s indexed, {} ms ({:.2} cores busy), LtHash {}",
            r.shards,
            mb(r.pipeline_uncompressed_bytes_per_s),
            mb(r.pipeline_archive_bytes_per_s),
            r.accounts_indexed_per_s,
            r.pipeline_ms,
            r.pipeline_cores_busy,
            if r.lt_hash_ok { "ok" } else { "MISMATCH" }
        );
        println!(
            "  CPU: {} ms in all = shards {} + decompression {} + feeding and the rest {}",
            r.pipeline_cpu_ms, r.shards_cpu_ms, r.decompress_cpu_ms, r.other_cpu_ms
        );
        for (i, (s, b)) in r
            .per_shard_accounts_per_s
            .iter()
            .zip(&r.per_shard_account_bytes_per_s)
            .enumerate()
        {
            println!(
                "  shard {i}: {s:.0} accounts/s, {:.1} MB/s of account storage",
                mb(*b)
            );
        }
        println!(
            "index: {} live accounts, {:.1} bytes per account at rest ({} MB; previous layout {:.1}); {} storage files, at most {} maps open per shard (cap {}), {} opened; peak RSS {}",
            r.accounts_live,
            r.index_bytes_per_account,
            r.index_bytes / 1_000_000,
            r.previous_layout_index_bytes_per_account,
            r.storages,
            r.peak_open_maps_per_shard,
            r.max_open_maps_per_shard,
            r.maps_opened,
            r.peak_rss_bytes
                .map_or("unknown".into(), |b| format!("{} MB", b / 1_000_000))
        );
        println!(
            "LtHash, one core: {:.0} accounts/s ({}); blake3 crate XOF: {:.0} accounts/s ({:.2}x)",
            r.lt_hash_one_core_accounts_per_s,
            r.lt_hash_xof_path,
            r.lt_hash_crate_xof_accounts_per_s,
            r.lt_hash_one_core_accounts_per_s / r.lt_hash_crate_xof_accounts_per_s.max(1.0)
        );
        println!(
            "raw zstd -d (1 thread): {:.1} MB/s  → pipeline / raw = {:.2}",
            mb(r.raw_zstd_uncompressed_bytes_per_s),
            r.ratio_to_raw_zstd
        );
        match (r.zstd_tar_uncompressed_bytes_per_s, r.ratio_to_zstd_tar) {
            (Some(t), Some(ratio)) => println!(
                "zstd -d | tar -x: {:.1} MB/s  → pipeline / zstd|tar = {ratio:.2}",
                mb(t)
            ),
            _ => println!("zstd -d | tar -x: not measured"),
        }
    }
    Ok(if r.lt_hash_ok { 0 } else { 1 })
}

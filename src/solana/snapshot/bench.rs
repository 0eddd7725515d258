//! Snapshot pipeline benchmark: archive bytes per second through decompress → unpack →
//! index → LtHash on a generated archive, beside raw zstd decompression of the same file
//! (the per-core ceiling) and beside `zstd -d | tar -x` of the same file, in the same run.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use catchup_solana::zstd_stream::{ZstdError, ZstdStream};
use serde::Serialize;

use super::generate::{generate, DataSize, GenerateConfig};
use super::{verify_archive, PipelineConfig};

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub shards: usize,
    /// Target uncompressed archive size.
    pub size_bytes: u64,
    /// zstd frames in the generated archive (1: a single frame).
    pub frames: u32,
    /// Working directory (archive and unpacked data); removed afterwards.
    pub dir: PathBuf,
    /// Skip the `zstd -d | tar -x` baseline.
    pub skip_tar_baseline: bool,
    /// Accounts to generate; `None`: as many as `size_bytes` holds.
    pub accounts: Option<u64>,
    /// Data sizes of the generated accounts.
    pub data_size: DataSize,
    /// Storage-file memory maps each index shard keeps open at most.
    pub max_open_maps_per_shard: usize,
    /// Target size of each generated account storage file.
    pub file_size_bytes: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            shards: 1,
            size_bytes: 1 << 30,
            frames: 1,
            dir: std::env::temp_dir().join("catchup-bench-snapshot"),
            skip_tar_baseline: false,
            accounts: None,
            data_size: DataSize::Uniform { min: 0, max: 400 },
            max_open_maps_per_shard: super::index::DEFAULT_MAX_OPEN_MAPS_PER_SHARD,
            file_size_bytes: 64 << 20,
        }
    }
}

/// Measured rates.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub shards: usize,
    pub frames: u32,
    pub accounts: u64,
    pub archive_compressed_bytes: u64,
    pub archive_uncompressed_bytes: u64,
    pub generate_ms: u64,
    pub pipeline_ms: u64,
    /// CPU time of the whole process (every thread) during the pipeline.
    pub pipeline_cpu_ms: u64,
    /// `pipeline_cpu_ms / pipeline_ms`: how many cores the pipeline kept busy (on a
    /// machine with as many cores as shards, near that count means the cores, not the
    /// shards, bound the rate).
    pub pipeline_cores_busy: f64,
    /// Of `pipeline_cpu_ms`: the shards' threads, the threads decompressing marked frames,
    /// and the rest (the feeding thread: reading, single-frame decompression, tar; the
    /// kernel's io_uring workers).
    pub shards_cpu_ms: u64,
    pub decompress_cpu_ms: u64,
    pub other_cpu_ms: u64,
    /// Compressed archive bytes per second through the whole pipeline.
    pub pipeline_archive_bytes_per_s: f64,
    /// Uncompressed (tar) bytes per second through the whole pipeline.
    pub pipeline_uncompressed_bytes_per_s: f64,
    pub accounts_indexed_per_s: f64,
    /// Per shard: accounts parsed and hashed per second by that shard (each account is
    /// scanned by the one shard that wrote its file).
    pub per_shard_accounts_per_s: Vec<f64>,
    /// Per shard: stored account bytes parsed and hashed per second by that shard.
    pub per_shard_account_bytes_per_s: Vec<f64>,
    /// Per shard: work done and where the time went (scan, write, idle).
    pub per_shard: Vec<super::ShardReport>,
    /// One core hashing the archive's accounts (blake3 XOF of 2048 bytes each, lanes
    /// added): the per-core ceiling of verification, in accounts per second.
    pub lt_hash_one_core_accounts_per_s: f64,
    /// The same with the blake3 crate's XOF (its one-block-per-call output path on CPUs
    /// without AVX-512), measured in the same run.
    pub lt_hash_crate_xof_accounts_per_s: f64,
    /// Whether the LtHash output runs as 8 AVX2 lanes (`avx2-8-lane`) or through the
    /// blake3 crate (`blake3-crate`).
    pub lt_hash_xof_path: &'static str,
    /// Time the feeding thread (zstd, tar) was blocked on busy shards.
    pub feeder_wait_ms: u64,
    /// Time from the end of input to the verdict.
    pub finish_ms: u64,
    pub raw_zstd_ms: u64,
    pub raw_zstd_uncompressed_bytes_per_s: f64,
    /// Pipeline rate / raw single-thread zstd rate.
    pub ratio_to_raw_zstd: f64,
    pub zstd_tar_ms: Option<u64>,
    pub zstd_tar_uncompressed_bytes_per_s: Option<f64>,
    /// Pipeline rate / `zstd -d | tar -x` rate.
    pub ratio_to_zstd_tar: Option<f64>,
    pub lt_hash_ok: bool,
    /// Live accounts in the index (distinct pubkeys).
    pub accounts_live: u64,
    /// Memory of the index at rest over all shards (fingerprint tables of
    /// `index_slot_bytes` per slot, collision side tables, storage-file tables), from their
    /// capacities.
    pub index_bytes: u64,
    pub index_slot_bytes: usize,
    /// `index_bytes / accounts_live`.
    pub index_bytes_per_account: f64,
    /// The previous layout for the same live accounts, computed the same way: a hash map
    /// of 32-byte pubkeys to 40-byte entries (slot, file id, offset, lamports, data length,
    /// generation), 7/8 full at most, one control byte per bucket; storage-file maps not
    /// counted.
    pub previous_layout_index_bytes_per_account: f64,
    /// Storage files in the archive, memory maps open at the end over all shards, the most
    /// one shard had open at once, and maps opened in all.
    pub storages: u64,
    pub open_maps: u64,
    pub peak_open_maps_per_shard: u64,
    pub maps_opened: u64,
    pub max_open_maps_per_shard: usize,
    /// Peak resident memory of this process (VmHWM from /proc/self/status), including the
    /// generator and the pipeline's streaming buffers.
    pub peak_rss_bytes: Option<u64>,
}

/// Peak resident set size of this process (VmHWM), in bytes; `None` off Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Memory of the previous index layout holding `accounts` pubkeys in one shard's map:
/// hashbrown buckets (a power of two, at most 7/8 full) of 72 bytes plus a control byte.
fn previous_layout_bytes(accounts: u64) -> u64 {
    if accounts == 0 {
        return 0;
    }
    let capacity = |buckets: u64| {
        if buckets < 8 {
            buckets - 1
        } else {
            buckets / 8 * 7
        }
    };
    let mut buckets = 4u64;
    while accounts > capacity(buckets) {
        buckets *= 2;
    }
    buckets * (32 + 40 + 1) + 16
}

fn rate(bytes: u64, ms: u64) -> f64 {
    bytes as f64 / (ms.max(1) as f64 / 1000.0)
}

/// Decompress a file on one thread and drop the output.
pub fn raw_zstd(path: &Path) -> Result<u64, anyhow::Error> {
    let mut f = std::fs::File::open(path)?;
    let mut z = ZstdStream::new(catchup_solana::zstd_stream::DEFAULT_WINDOW_LOG_MAX, 1 << 20)?;
    let mut buf = vec![0u8; 4 << 20];
    let mut out = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        z.push::<ZstdError>(&buf[..n], |c| {
            out += c.len() as u64;
            Ok(())
        })?;
    }
    z.finish()?;
    Ok(out)
}

fn zstd_tar(archive: &Path, into: &Path) -> Option<u64> {
    std::fs::create_dir_all(into).ok()?;
    let t = Instant::now();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("zstd -d -q -c \"$1\" | tar -x -C \"$2\"")
        .arg("sh")
        .arg(archive)
        .arg(into)
        .status()
        .ok()?;
    status.success().then(|| t.elapsed().as_millis() as u64)
}

/// Accounts per second one core hashes into an LtHash (data 0..400 bytes, as generated).
pub fn lt_hash_rate(accounts: u64) -> f64 {
    lt_hash_rate_with(accounts, |lt, lamports, data, key| {
        lt.mix_in_account(lamports, data, false, &[7; 32], key)
    })
}

/// [`lt_hash_rate`] with the blake3 crate's XOF output (one block per compression call
/// on a CPU without AVX-512): the baseline of the 8-lane AVX2 output path.
pub fn lt_hash_rate_crate_xof(accounts: u64) -> f64 {
    use catchup_solana::account_xof::{crate_output, Output};
    lt_hash_rate_with(accounts, |lt, lamports, data, key| {
        crate_output(lamports, data, false, &[7; 32], key, Output::Add(&mut lt.0))
    })
}

fn lt_hash_rate_with(
    accounts: u64,
    mut mix: impl FnMut(&mut catchup_solana::LtHash, u64, &[u8], &[u8; 32]),
) -> f64 {
    let mut lt = catchup_solana::LtHash::identity();
    let data = vec![0x5au8; 400];
    let t = Instant::now();
    for i in 0..accounts {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&i.to_le_bytes());
        let len = (i.wrapping_mul(0x9e37_79b9) % 401) as usize;
        mix(&mut lt, i + 1, &data[..len], &key);
    }
    std::hint::black_box(&lt);
    accounts as f64 / t.elapsed().as_secs_f64().max(1e-9)
}

/// Run the benchmark.
pub fn run_bench(cfg: &BenchConfig) -> Result<BenchReport, anyhow::Error> {
    std::fs::create_dir_all(&cfg.dir)?;
    let archive_dir = cfg.dir.join("archive");
    // Average entry: 136 header + ~200 data + padding.
    let accounts = cfg.accounts.unwrap_or(cfg.size_bytes / 344).max(1);
    let g_start = Instant::now();
    let g = generate(
        &GenerateConfig {
            accounts,
            data_size: cfg.data_size,
            frames: cfg.frames.max(1),
            slot: 1000,
            seed: 42,
            file_size_bytes: cfg.file_size_bytes,
            ..GenerateConfig::default()
        },
        &archive_dir,
    )?;
    let generate_ms = g_start.elapsed().as_millis() as u64;

    let t = Instant::now();
    let raw_out = raw_zstd(&g.path)?;
    let raw_zstd_ms = t.elapsed().as_millis() as u64;

    let zstd_tar_ms = if cfg.skip_tar_baseline {
        None
    } else {
        zstd_tar(&g.path, &cfg.dir.join("tar-x"))
    };
    let _ = std::fs::remove_dir_all(cfg.dir.join("tar-x"));

    let lt_hash_one_core_accounts_per_s = lt_hash_rate(200_000);
    let lt_hash_crate_xof_accounts_per_s = lt_hash_rate_crate_xof(200_000);

    let data = cfg.dir.join("data");
    let pcfg = PipelineConfig {
        shards: cfg.shards.max(1),
        max_open_maps_per_shard: cfg.max_open_maps_per_shard,
        ..PipelineConfig::default()
    };
    let t = Instant::now();
    let cpu = crate::node::cpu::self_cpu_s();
    let r = verify_archive(&g.path, None, &data, pcfg)?;
    let pipeline_ms = t.elapsed().as_millis() as u64;
    let pipeline_cpu_ms = ((crate::node::cpu::self_cpu_s() - cpu) * 1000.0) as u64;
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&archive_dir);

    let shards_cpu_ms: u64 = r.shards.iter().map(|s| s.cpu_ms).sum();
    let pipe_rate = rate(g.uncompressed_bytes, pipeline_ms);
    let raw_rate = rate(raw_out, raw_zstd_ms);
    let index_bytes: u64 = r.shards.iter().map(|s| s.index_bytes).sum();
    let previous: u64 = r
        .shards
        .iter()
        .map(|s| previous_layout_bytes(s.accounts_live))
        .sum();
    let per_account = |b: u64| b as f64 / r.accounts_live.max(1) as f64;
    let tar_rate = zstd_tar_ms.map(|ms| rate(g.uncompressed_bytes, ms));
    Ok(BenchReport {
        shards: r.shards.len(),
        frames: g.frames,
        accounts: r.accounts_total,
        archive_compressed_bytes: g.compressed_bytes,
        archive_uncompressed_bytes: g.uncompressed_bytes,
        generate_ms,
        pipeline_ms,
        pipeline_cpu_ms,
        pipeline_cores_busy: pipeline_cpu_ms as f64 / pipeline_ms.max(1) as f64,
        shards_cpu_ms,
        decompress_cpu_ms: r.decompress_cpu_ms,
        other_cpu_ms: pipeline_cpu_ms.saturating_sub(shards_cpu_ms + r.decompress_cpu_ms),
        pipeline_archive_bytes_per_s: rate(g.compressed_bytes, pipeline_ms),
        pipeline_uncompressed_bytes_per_s: pipe_rate,
        accounts_indexed_per_s: r.accounts_total as f64 / (pipeline_ms.max(1) as f64 / 1000.0),
        per_shard_accounts_per_s: r
            .shards
            .iter()
            .map(|s| s.scanned_accounts as f64 / (pipeline_ms.max(1) as f64 / 1000.0))
            .collect(),
        per_shard_account_bytes_per_s: r
            .shards
            .iter()
            .map(|s| rate(s.scanned_bytes, pipeline_ms))
            .collect(),
        per_shard: r.shards.clone(),
        feeder_wait_ms: r.feeder_wait_ms,
        finish_ms: r.finish_ms,
        lt_hash_one_core_accounts_per_s,
        lt_hash_crate_xof_accounts_per_s,
        lt_hash_xof_path: catchup_solana::account_xof::path_name(),
        raw_zstd_ms,
        raw_zstd_uncompressed_bytes_per_s: raw_rate,
        ratio_to_raw_zstd: pipe_rate / raw_rate.max(1.0),
        zstd_tar_ms,
        zstd_tar_uncompressed_bytes_per_s: tar_rate,
        ratio_to_zstd_tar: tar_rate.map(|t| pipe_rate / t.max(1.0)),
        lt_hash_ok: r.lt_hash_ok,
        accounts_live: r.accounts_live,
        index_bytes,
        index_slot_bytes: super::index::SLOT_BYTES,
        index_bytes_per_account: per_account(index_bytes),
        previous_layout_index_bytes_per_account: per_account(previous),
        storages: r.storages,
        open_maps: r.shards.iter().map(|s| s.open_maps).sum(),
        peak_open_maps_per_shard: r.shards.iter().map(|s| s.peak_open_maps).max().unwrap_or(0),
        maps_opened: r.shards.iter().map(|s| s.maps_opened).sum(),
        max_open_maps_per_shard: cfg.max_open_maps_per_shard,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_bench_verifies_and_splits_its_cpu() {
        let dir = tempfile::tempdir().unwrap();
        let r = run_bench(&BenchConfig {
            shards: 2,
            size_bytes: 6 << 20,
            frames: 3,
            dir: dir.path().join("bench"),
            skip_tar_baseline: true,
            file_size_bytes: 1 << 20,
            ..BenchConfig::default()
        })
        .unwrap();
        assert!(r.lt_hash_ok);
        assert_eq!(r.shards, 2);
        assert!(
            r.lt_hash_one_core_accounts_per_s > 0.0 && r.lt_hash_crate_xof_accounts_per_s > 0.0
        );
        // The split: every shard's thread and the frame workers (3 frames) did work, and
        // the parts fit in the process's CPU (thread and process clocks tick apart by a
        // few ms at most).
        assert!(r
            .per_shard
            .iter()
            .all(|s| s.cpu_ms > 0 || s.scanned_accounts == 0));
        assert!(r.decompress_cpu_ms > 0, "{r:?}");
        assert!(
            r.shards_cpu_ms + r.decompress_cpu_ms <= r.pipeline_cpu_ms + 50,
            "{r:?}"
        );
        assert!(r.pipeline_cores_busy > 0.0);
    }
}

//! The Solana snapshot layer: from the bytes of a snapshot archive to a verified, indexed
//! account set on disk.
//!
//! ```text
//! feed(&[u8]) ─► zstd (one stream, or marked frames on N workers, re-ordered)
//!             ─► tar parser ─► unpack rules + budget
//!             ─► manifest decode; each accounts/<slot>.<id> streams, in 512 KiB pieces,
//!                to ONE shard, which writes it (io_uring DMA) under <datadir>/.staging-*
//!                and scans it from the same pieces: LtHash element mixed into that
//!                shard's sum, compact index entries batched to the owners of the pubkeys
//! finish()    ─► completeness checks ─► barrier ─► owners mix out superseded versions
//!                ─► sums combined and compared with the manifest
//!                ─► staging renamed to <datadir>/snapshot/<slot>
//! ```
//!
//! # Shards
//!
//! The index runs on `PipelineConfig::shards` shards: glommio executors started with
//! `catchup_shards::run` (falling back to pinned plain threads, writing with `write(2)`,
//! where the runtime cannot start). Each account file is written and scanned by one shard
//! (the one with the least queued bytes when the file starts), so every entry is parsed
//! and hashed once; shard `s` owns the index slice of the pubkeys with
//! `owner_of_key(pubkey) == s` (newest slot, then file id, then offset wins). The LtHash
//! of the live set is kept exact without shipping hashes: see [`index`] for the
//! accounting. At `finish` each shard answers a totals message after a marker barrier;
//! the partial LtHashes and lamports are summed and compared with the manifest. An
//! incremental snapshot is fed into the same shards with [`Pipeline::incremental`].
//!
//! # Feeding from a downloader
//!
//! [`Pipeline`] is push-based: create it with [`Pipeline::new`], call [`Pipeline::feed`]
//! with the archive's bytes in order, in slices of any size, as they arrive, then
//! [`Pipeline::finish`]. `feed` blocks while the index shards or decompression workers are
//! busy (bounded channels: back-pressure), so call it from a plain thread that owns the
//! pipeline — **not** from inside a glommio shard, whose executor it would stall. A shard
//! that downloads hands its verified, contiguous chunks to that thread over a bounded
//! channel (e.g. `std::sync::mpsc::sync_channel`); the pipeline is `Send`.
//!
//! Memory is bounded by [`PipelineConfig::memory_limit_bytes`] whatever the archive size:
//! the zstd window (at most `2^window_log_max`), one decompressed chunk, the file pieces
//! queued on the shards (half of what the window and fixed buffers leave, at most
//! [`pipeline::MAX_QUEUED_FILE_BYTES_PER_SHARD`] per shard; see
//! [`pipeline::streaming_overhead_bytes`]), the index batches in flight on the mesh and,
//! for multi-frame archives, the frames in flight. Account files are streamed to disk as
//! their bytes arrive. The index (21–43 bytes per live account, see [`index`]) is not counted, nor one
//! straddling account entry per shard (at most 10 MiB) while it is parsed.
//!
//! # Multi-frame archives
//!
//! An archive may be a sequence of independent zstd frames, each preceded by a skippable
//! frame (magic `0x184D2A5C`, payload `"CUPF"`, version 1, the next frame's compressed and
//! decompressed sizes; see [`catchup_solana::zstd_stream`]). Plain `zstd -d` skips the
//! markers. The pipeline detects the marker at offset 0, collects each frame, decompresses
//! frames on `shards` workers in parallel and hands their output to the tar parser in
//! order. A frame too large for the memory budget is decompressed in line, streaming. A
//! downloader that holds several complete frames at once can feed them back to back: the
//! frame boundaries are found from the markers, not from call boundaries. A single-frame
//! archive decompresses on the feeding thread while the index shards parse and index.
//!
//! # Truncation and bad input
//!
//! `finish` fails with an "incomplete frame" error when the compressed stream stops inside
//! a zstd frame, and with "incomplete archive" when the tar stream has no end marker or a
//! manifest-named account file is absent. Entries outside Agave's set (`version`,
//! `snapshots/status_cache`, `snapshots/<slot>/<slot>`, `accounts/<slot>.<id>`), links,
//! devices, `..` and absolute paths are rejected; sizes and counts are budgeted. Files are
//! written only under a fresh staging directory inside the datadir, removed on any error,
//! and renamed into place only after verification, so a retry starts clean.
//!
//! # One-shot
//!
//! [`verify_archive`] runs the pipeline over a file (and optionally an incremental archive
//! on top) and returns the [`VerifyReport`].

pub mod bench;
pub mod cmd;
pub mod generate;
pub mod index;
pub mod name_hash;
pub mod pipeline;

use std::io::Read;
use std::path::Path;

pub use index::{AccountLocation, AccountRecord};
pub use pipeline::{
    Pipeline, PipelineConfig, PipelineError, Progress, ShardReport, VerifiedSnapshot, VerifyReport,
};

/// How often [`feed_file`] logs a progress line.
pub const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Read size used by [`verify_archive`].
pub const FILE_READ_CHUNK_BYTES: usize = 4 << 20;

/// Feed a whole archive file into a pipeline.
pub fn feed_file(pipeline: &mut Pipeline, path: &Path) -> Result<(), PipelineError> {
    let io = |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut buf = vec![0u8; FILE_READ_CHUNK_BYTES];
    let started = std::time::Instant::now();
    let mut last_log = started;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        let p = pipeline.feed(&buf[..n])?;
        if last_log.elapsed() >= PROGRESS_INTERVAL {
            last_log = std::time::Instant::now();
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            tracing::info!(
                archive = %path.display(),
                compressed_bytes = p.compressed_bytes,
                decompressed_bytes = p.decompressed_bytes,
                entries = p.entries,
                account_files = p.account_files,
                frames = p.frames,
                decompressed_mb_per_s = p.decompressed_bytes as f64 / 1e6 / secs,
                "snapshot unpack progress"
            );
        }
    }
}

fn check_name(path: &Path, base: Option<u64>, slot: u64) -> Result<(), PipelineError> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    if let Some(n) = catchup_solana::unpack::parse_archive_name(name) {
        if n.slot != slot || (base.is_some() && n.base_slot.is_some() && n.base_slot != base) {
            return Err(PipelineError::Inconsistent(format!(
                "archive name {name} does not match its manifest (slot {slot}{})",
                base.map(|b| format!(", base {b}")).unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// Unpack and verify a full snapshot archive and, optionally, an incremental one on top.
/// Returns the verified snapshot (the incremental's when given); its report says what was
/// checked.
pub fn verify_archive_snapshot(
    path: &Path,
    incremental: Option<&Path>,
    datadir: &Path,
    cfg: PipelineConfig,
) -> Result<VerifiedSnapshot, PipelineError> {
    let mut p = Pipeline::new(datadir, cfg.clone())?;
    feed_file(&mut p, path)?;
    let full = p.finish()?;
    check_name(path, None, full.report.slot)?;
    match incremental {
        None => Ok(full),
        Some(inc) => {
            let base_slot = full.report.slot;
            let mut p = Pipeline::incremental(full, cfg)?;
            feed_file(&mut p, inc)?;
            let v = p.finish()?;
            check_name(inc, Some(base_slot), v.report.slot)?;
            Ok(v)
        }
    }
}

/// [`verify_archive_snapshot`], and each archive compared with the hash in its name (the
/// full one before the incremental is applied): one [`name_hash::NameHashCheck`] per
/// archive whose name is an Agave archive name.
pub fn verify_archive_snapshot_named(
    path: &Path,
    incremental: Option<&Path>,
    datadir: &Path,
    cfg: PipelineConfig,
) -> Result<(VerifiedSnapshot, Vec<name_hash::NameHashCheck>), PipelineError> {
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut checks = Vec::new();
    let mut p = Pipeline::new(datadir, cfg.clone())?;
    feed_file(&mut p, path)?;
    let full = p.finish()?;
    check_name(path, None, full.report.slot)?;
    checks.extend(name_hash::check_name_hash(&full, &file_name(path))?);
    let Some(inc) = incremental else {
        return Ok((full, checks));
    };
    let base_slot = full.report.slot;
    let mut p = Pipeline::incremental(full, cfg)?;
    feed_file(&mut p, inc)?;
    let v = p.finish()?;
    check_name(inc, Some(base_slot), v.report.slot)?;
    checks.extend(name_hash::check_name_hash(&v, &file_name(inc))?);
    Ok((v, checks))
}

/// [`verify_archive_snapshot`], keeping only the report.
pub fn verify_archive(
    path: &Path,
    incremental: Option<&Path>,
    datadir: &Path,
    cfg: PipelineConfig,
) -> Result<VerifyReport, PipelineError> {
    verify_archive_snapshot(path, incremental, datadir, cfg).map(|v| v.report)
}

//! The push-based snapshot pipeline: compressed bytes in, a verified and indexed account
//! set on disk out. See the module docs of [`crate::solana::snapshot`] for how to feed it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use catchup_io::files::FileWriteError;
use catchup_solana::manifest::{decode_manifest, Manifest, ManifestError};
use catchup_solana::tar::{EntryHeader, TarError, TarParser, TarSink};
use catchup_solana::unpack::{classify, SnapshotEntry, UnpackBudget, UnpackError, UnpackLimits};
use catchup_solana::zstd_stream::{
    decompress_frame_into, starts_with_marker, FrameMarker, ZstdError, ZstdStream,
    DEFAULT_WINDOW_LOG_MAX, FRAME_MARKER_BYTES,
};
use catchup_solana::{base58, LtHash};
use serde::Serialize;
use thiserror::Error;

use super::index::{
    streaming_bytes, AccountRecord, IndexConfig, ShardGone, ShardSet, ShardTotals,
    MIN_SHARD_INBOX_CAPACITY, WRITE_CHUNK_BYTES,
};

/// Size of the decompressed chunks handed to the tar parser.
pub const DECOMPRESSED_CHUNK_BYTES: usize = 1 << 20;
/// Piece of an account file handed to its writer shard at a time.
pub const FILE_WRITE_BUFFER_BYTES: usize = WRITE_CHUNK_BYTES;
/// Fixed memory besides the zstd window and the frames in flight: the decompressed chunk,
/// the piece being filled, and the minimal shard queues and mesh links (for a few shards;
/// more shards add their own, see [`streaming_overhead_bytes`]).
pub const FIXED_OVERHEAD_BYTES: u64 = 8 << 20;
/// Deepest queue of file pieces per shard (so a shard can take a whole large file while
/// the feeder moves on to the next one).
pub const MAX_QUEUED_FILE_BYTES_PER_SHARD: u64 = 64 << 20;

/// Streaming memory besides the zstd window: the fixed buffers plus the shard queues
/// with `inbox_capacity` pieces each.
pub fn streaming_overhead_bytes(shards: usize, inbox_capacity: usize) -> u64 {
    FIXED_OVERHEAD_BYTES.max(
        DECOMPRESSED_CHUNK_BYTES as u64
            + FILE_WRITE_BUFFER_BYTES as u64
            + streaming_bytes(shards, inbox_capacity),
    )
}

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Index shards (worker threads), and decompression workers for multi-frame archives.
    pub shards: usize,
    /// Bound on the streaming buffers (zstd window, frames in flight, write buffers). The
    /// index itself grows with the number of accounts and is not counted here.
    pub memory_limit_bytes: u64,
    /// Archive content limits (Agave's by default).
    pub limits: UnpackLimits,
    /// Largest zstd window accepted, as a power of two (Agave: 27).
    pub window_log_max: u32,
    /// fsync every written file before it is indexed.
    pub fsync: bool,
    /// Cores of the index shards (shard `i` on `cores[i % len]`), from the command's
    /// placement; `None`: the CPUs this process may use.
    pub cores: Option<Vec<usize>>,
    /// Storage-file memory maps each index shard keeps open at most (least recently used
    /// dropped, mapped again when read).
    pub max_open_maps_per_shard: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            shards: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_limit_bytes: 1 << 30,
            limits: UnpackLimits::default(),
            window_log_max: DEFAULT_WINDOW_LOG_MAX,
            fsync: false,
            cores: None,
            max_open_maps_per_shard: super::index::DEFAULT_MAX_OPEN_MAPS_PER_SHARD,
        }
    }
}

/// Pipeline errors; each names what failed and where.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("snapshot pipeline config: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    File(#[from] FileWriteError),
    #[error(transparent)]
    Zstd(#[from] ZstdError),
    #[error(transparent)]
    Tar(#[from] TarError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("snapshots/{slot}/{slot}: {source}")]
    Manifest { slot: u64, source: ManifestError },
    #[error("incomplete archive: {0}")]
    Missing(String),
    #[error("archive: {0}")]
    Inconsistent(String),
    #[error("account storage: {0}")]
    Storage(String),
    #[error("{what}")]
    Verification {
        what: String,
        report: Box<VerifyReport>,
    },
    #[error(transparent)]
    ShardGone(#[from] ShardGone),
    #[error("snapshot pipeline: an earlier error stopped it; start a new pipeline")]
    Failed,
}

impl PipelineError {
    /// True for errors caused by a truncated stream.
    pub fn is_incomplete(&self) -> bool {
        self.to_string().contains("incomplete")
    }
}

/// Counters after each [`Pipeline::feed`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Progress {
    pub compressed_bytes: u64,
    pub decompressed_bytes: u64,
    pub entries: u64,
    pub account_files: u64,
    pub frames: u64,
}

/// Per-shard part of a report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ShardReport {
    pub shard: usize,
    /// Entries this shard owns (all versions).
    pub accounts_total: u64,
    /// Stored account bytes of the entries this shard owns.
    pub owned_bytes: u64,
    pub accounts_live: u64,
    /// Entries this shard parsed and hashed (each entry is scanned by one shard only).
    pub scanned_accounts: u64,
    /// Stored bytes of those entries.
    pub scanned_bytes: u64,
    /// Account files this shard wrote.
    pub files_written: u64,
    /// Superseded versions whose LtHash elements this shard mixed out.
    pub retracted: u64,
    /// How the shard wrote files: `io_uring-dma`, or `write(2)` and why.
    pub write_mode: String,
    /// Time the shard spent parsing and hashing, waiting for writes, and waiting for work.
    pub scan_ms: u64,
    pub write_ms: u64,
    pub idle_ms: u64,
    /// Time the shard waited to hand index entries to other shards (their links full).
    pub mesh_wait_ms: u64,
    /// CPU time of the shard's thread so far.
    pub cpu_ms: u64,
    /// Time the shard spent re-reading superseded versions to mix them out.
    pub retract_ms: u64,
    /// Of `retract_ms`, the time after the last file arrived (the rest overlapped the
    /// stream).
    pub retract_tail_ms: u64,
    /// Superseded versions mixed out while files were still streaming.
    pub retracted_in_stream: u64,
    /// Memory of the shard's index at rest, from the tables' capacities.
    pub index_bytes: u64,
    /// Storage files the shard's index refers to; memory maps open at the end, at most at
    /// once, and opened in all (a file dropped and mapped again counts twice).
    pub storage_files: u64,
    pub open_maps: u64,
    pub peak_open_maps: u64,
    pub maps_opened: u64,
}

/// The outcome of verification.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifyReport {
    pub slot: u64,
    pub parent_slot: u64,
    pub base_slot: Option<u64>,
    pub storages: u64,
    pub accounts_total: u64,
    pub accounts_live: u64,
    pub zero_lamport_accounts: u64,
    pub lt_hash_ok: bool,
    pub capitalization_ok: bool,
    pub bank_hash: String,
    /// base58 of blake3 over the 2048-byte LtHash, as Agave prints it.
    pub lt_hash_expected: Option<String>,
    pub lt_hash_computed: String,
    pub capitalization_expected: u64,
    pub capitalization_computed: u128,
    pub compressed_bytes: u64,
    pub decompressed_bytes: u64,
    pub frames: u64,
    /// What the index shards ran on: `glommio` executors or plain `threads`.
    pub shard_runtime: String,
    pub shards: Vec<ShardReport>,
    pub datadir: String,
    pub elapsed_ms: u64,
    /// Time the feeding thread was blocked on busy shards (back-pressure).
    pub feeder_wait_ms: u64,
    /// CPU time of the threads decompressing marked frames (0 for a single frame, which
    /// the feeding thread decompresses).
    pub decompress_cpu_ms: u64,
    /// Time from the end of input to the verdict (totals, retraction, comparison).
    pub finish_ms: u64,
}

// ---------------------------------------------------------------------------------------
// Unpacking (the tar sink)

enum Current {
    None,
    Skip,
    File { buf: Vec<u8> },
    Mem { entry: SnapshotEntry, buf: Vec<u8> },
}

struct Unpacker {
    staging: PathBuf,
    limits: UnpackLimits,
    budget: UnpackBudget,
    fsync: bool,
    cur: Current,
    manifest: Option<Manifest>,
    version: Option<String>,
    status_cache: bool,
    storages: HashMap<(u64, u64), u64>,
    received: HashSet<(u64, u64)>,
    /// Files written before the manifest arrived: (slot, id, size, writer shard).
    pending: Vec<(u64, u64, u64, usize)>,
    shards: Option<ShardSet>,
    /// Snapshot generation of this pipeline's files (0: full, then +1 per incremental).
    gen: u32,
    account_files: u64,
}

impl Unpacker {
    /// `accounts_current_len` of a file of `size` bytes, from the manifest.
    fn current_len(&self, slot: u64, id: u64, size: u64) -> Result<u64, PipelineError> {
        let Some(&len) = self.storages.get(&(slot, id)) else {
            return Err(PipelineError::Inconsistent(format!(
                "accounts/{slot}.{id} is not listed in the manifest"
            )));
        };
        if len > size {
            return Err(PipelineError::Storage(format!(
                "accounts/{slot}.{id}: accounts_current_len {len} exceeds the file size {size}"
            )));
        }
        Ok(len)
    }

    fn shards(&mut self) -> Result<&mut ShardSet, PipelineError> {
        let s = self.shards.as_mut().ok_or(PipelineError::Failed)?;
        if let Some(e) = s.error() {
            return Err(PipelineError::Storage(e));
        }
        Ok(s)
    }

    fn write_meta(&self, rel: &str, bytes: &[u8]) -> Result<(), PipelineError> {
        let path = self.staging.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| PipelineError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&path, bytes).map_err(|source| PipelineError::Io { path, source })
    }
}

impl TarSink for Unpacker {
    type Error = PipelineError;

    fn begin_entry(&mut self, header: &EntryHeader) -> Result<(), PipelineError> {
        let entry = classify(header)?;
        self.budget.on_entry(header, entry, &self.limits)?;
        self.cur = match entry {
            SnapshotEntry::Directory => Current::Skip,
            SnapshotEntry::AccountsFile { slot, id } => {
                if !self.received.insert((slot, id)) {
                    return Err(PipelineError::Inconsistent(format!(
                        "accounts/{slot}.{id} appears twice"
                    )));
                }
                let size = header.size_bytes;
                let current_len = if self.manifest.is_some() {
                    Some(self.current_len(slot, id, size)?)
                } else {
                    None
                };
                let gen = self.gen;
                let writer = self
                    .shards()?
                    .begin_file(gen, slot, id, size, current_len)?;
                if current_len.is_none() {
                    self.pending.push((slot, id, size, writer));
                }
                Current::File {
                    buf: Vec::with_capacity(FILE_WRITE_BUFFER_BYTES.min(size as usize)),
                }
            }
            SnapshotEntry::BankSnapshot { .. } if self.manifest.is_some() => {
                return Err(PipelineError::Inconsistent(
                    "more than one bank snapshot manifest".into(),
                ));
            }
            SnapshotEntry::Version if self.version.is_some() => {
                return Err(PipelineError::Inconsistent(
                    "more than one `version` entry".into(),
                ));
            }
            e => Current::Mem {
                entry: e,
                buf: Vec::with_capacity(header.size_bytes.min(1 << 20) as usize),
            },
        };
        Ok(())
    }

    fn entry_data(&mut self, data: &[u8]) -> Result<(), PipelineError> {
        self.budget.on_data(data.len(), &self.limits)?;
        match &mut self.cur {
            Current::File { buf, .. } => {
                let mut data = data;
                while !data.is_empty() {
                    let take = (FILE_WRITE_BUFFER_BYTES - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if buf.len() == FILE_WRITE_BUFFER_BYTES {
                        let full =
                            std::mem::replace(buf, Vec::with_capacity(FILE_WRITE_BUFFER_BYTES));
                        let shards = self.shards.as_mut().ok_or(PipelineError::Failed)?;
                        if let Some(e) = shards.error() {
                            return Err(PipelineError::Storage(e));
                        }
                        shards.file_data(full)?;
                    }
                }
            }
            Current::Mem { buf, .. } => buf.extend_from_slice(data),
            Current::Skip | Current::None => {}
        }
        Ok(())
    }

    fn end_entry(&mut self) -> Result<(), PipelineError> {
        match std::mem::replace(&mut self.cur, Current::None) {
            Current::None | Current::Skip => {}
            Current::File { buf } => {
                let fsync = self.fsync;
                let shards = self.shards()?;
                if !buf.is_empty() {
                    shards.file_data(buf)?;
                }
                shards.end_file(fsync)?;
                self.account_files += 1;
            }
            Current::Mem { entry, buf } => match entry {
                SnapshotEntry::Version => {
                    let v = String::from_utf8_lossy(&buf).trim().to_string();
                    if v.is_empty()
                        || v.len() > 16
                        || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    {
                        return Err(PipelineError::Inconsistent(format!(
                            "unsupported snapshot version `{v}`"
                        )));
                    }
                    self.write_meta("version", &buf)?;
                    self.version = Some(v);
                }
                SnapshotEntry::StatusCache => {
                    self.write_meta("snapshots/status_cache", &buf)?;
                    self.status_cache = true;
                }
                SnapshotEntry::BankSnapshot { slot } => {
                    let m = decode_manifest(&buf)
                        .map_err(|source| PipelineError::Manifest { slot, source })?;
                    if m.slot != slot {
                        return Err(PipelineError::Inconsistent(format!(
                            "manifest snapshots/{slot}/{slot} is for slot {}",
                            m.slot
                        )));
                    }
                    self.write_meta(&format!("snapshots/{slot}/{slot}"), &buf)?;
                    for s in &m.storages {
                        if self
                            .storages
                            .insert((s.slot, s.id), s.accounts_current_len)
                            .is_some()
                        {
                            return Err(PipelineError::Inconsistent(format!(
                                "manifest lists accounts/{}.{} twice",
                                s.slot, s.id
                            )));
                        }
                    }
                    self.manifest = Some(m);
                    let gen = self.gen;
                    for (slot, id, size, writer) in std::mem::take(&mut self.pending) {
                        let len = self.current_len(slot, id, size)?;
                        self.shards()?.scan_file(writer, gen, slot, id, len)?;
                    }
                }
                SnapshotEntry::AccountsFile { .. } | SnapshotEntry::Directory => {}
            },
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Decompression

type FrameResult = (u64, Result<Vec<u8>, ZstdError>);
/// A frame to decompress: its sequence number, marker, compressed bytes, and a buffer of
/// an earlier frame to decompress into.
type Job = (u64, FrameMarker, Vec<u8>, Vec<u8>);
/// Output buffers of emitted frames kept for the next ones (their pages stay mapped).
const FREE_FRAME_BUFFERS: usize = 2;

/// Decompresses whole frames on worker threads and releases their output in order.
struct DecompressPool {
    jobs: Option<SyncSender<Job>>,
    results: Receiver<FrameResult>,
    threads: Vec<JoinHandle<()>>,
    in_flight: usize,
    max_in_flight: usize,
    ready: BTreeMap<u64, Vec<u8>>,
    next_emit: u64,
    free: Vec<Vec<u8>>,
    /// Each worker's thread CPU time, in ns, as of its last frame.
    cpu_ns: Arc<Vec<AtomicU64>>,
}

impl DecompressPool {
    fn start(workers: usize, window_log_max: u32) -> std::io::Result<Self> {
        let workers = workers.max(1);
        let (jtx, jrx) = sync_channel::<Job>(workers);
        let (rtx, rrx) = sync_channel::<FrameResult>(workers * 2 + 2);
        let jrx = Arc::new(Mutex::new(jrx));
        let mut threads = Vec::new();
        let cpu_ns: Arc<Vec<AtomicU64>> =
            Arc::new((0..workers).map(|_| AtomicU64::new(0)).collect());
        for w in 0..workers {
            let jrx = jrx.clone();
            let rtx = rtx.clone();
            let cpu = cpu_ns.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("snap-zstd-{w}"))
                    .spawn(move || loop {
                        let job = { jrx.lock().map(|r| r.recv()) };
                        let Ok(Ok((seq, m, frame, buf))) = job else {
                            return;
                        };
                        let r = decompress_frame_into(seq, &m, &frame, window_log_max, buf);
                        drop(frame);
                        cpu[w].store(crate::node::cpu::thread_cpu_ns(), Ordering::Relaxed);
                        if rtx.send((seq, r)).is_err() {
                            return;
                        }
                    })?,
            );
        }
        Ok(DecompressPool {
            jobs: Some(jtx),
            results: rrx,
            threads,
            in_flight: 0,
            max_in_flight: workers + 1,
            ready: BTreeMap::new(),
            next_emit: 0,
            free: Vec::new(),
            cpu_ns,
        })
    }

    /// CPU time of the workers so far (as of each one's last frame).
    fn cpu_ms(&self) -> u64 {
        self.cpu_ns
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
            / 1_000_000
    }

    fn take_result(&mut self, r: FrameResult) -> Result<(), PipelineError> {
        self.in_flight -= 1;
        let (seq, out) = r;
        self.ready.insert(seq, out?);
        Ok(())
    }

    fn emit_ready(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), PipelineError>,
    ) -> Result<(), PipelineError> {
        while let Some(buf) = self.ready.remove(&self.next_emit) {
            self.next_emit += 1;
            for chunk in buf.chunks(DECOMPRESSED_CHUNK_BYTES) {
                sink(chunk)?;
            }
            if self.free.len() < FREE_FRAME_BUFFERS {
                self.free.push(buf);
            }
        }
        Ok(())
    }

    fn submit(
        &mut self,
        seq: u64,
        m: FrameMarker,
        frame: Vec<u8>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), PipelineError>,
    ) -> Result<(), PipelineError> {
        while self.in_flight >= self.max_in_flight {
            let r = self.results.recv().map_err(|_| ShardGone)?;
            self.take_result(r)?;
            self.emit_ready(sink)?;
        }
        self.jobs
            .as_ref()
            .expect("pool running")
            .send((seq, m, frame, self.free.pop().unwrap_or_default()))
            .map_err(|_| ShardGone)?;
        self.in_flight += 1;
        self.poll(sink)
    }

    fn poll(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), PipelineError>,
    ) -> Result<(), PipelineError> {
        while let Ok(r) = self.results.try_recv() {
            self.take_result(r)?;
        }
        self.emit_ready(sink)
    }

    fn drain(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), PipelineError>,
    ) -> Result<(), PipelineError> {
        while self.in_flight > 0 {
            let r = self.results.recv().map_err(|_| ShardGone)?;
            self.take_result(r)?;
            self.emit_ready(sink)?;
        }
        self.emit_ready(sink)
    }
}

impl Drop for DecompressPool {
    fn drop(&mut self) {
        self.jobs = None;
        while self.results.try_recv().is_ok() {}
        for t in self.threads.drain(..) {
            // Workers blocked on a full result channel are released by dropping receivers
            // at the end of this scope; drain once more before joining each.
            while self.results.try_recv().is_ok() {}
            let _ = t.join();
        }
    }
}

enum MarkedFrame {
    Collect {
        m: FrameMarker,
        buf: Vec<u8>,
    },
    Stream {
        m: FrameMarker,
        remaining: u64,
        z: Box<ZstdStream>,
        produced_before: u64,
    },
}

struct Marked {
    marker: [u8; FRAME_MARKER_BYTES],
    fill: usize,
    cur: Option<MarkedFrame>,
    pool: DecompressPool,
    next_seq: u64,
    frame_budget_bytes: u64,
    consumed: u64,
}

enum Decode {
    Detect(Vec<u8>),
    Single(Box<ZstdStream>),
    Marked(Box<Marked>),
}

// ---------------------------------------------------------------------------------------
// The pipeline

/// Push-based snapshot pipeline. See [`crate::solana::snapshot`].
pub struct Pipeline {
    cfg: PipelineConfig,
    datadir: PathBuf,
    decode: Decode,
    tar: TarParser,
    unpacker: Unpacker,
    base: Option<Box<VerifiedSnapshot>>,
    compressed_bytes: u64,
    decompressed_bytes: u64,
    frames: u64,
    failed: bool,
    committed: bool,
    started: Instant,
    finish_started: Option<Instant>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError + '_ {
    move |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn check_window(cfg: &PipelineConfig) -> Result<(), PipelineError> {
    if cfg.window_log_max < 10 || cfg.window_log_max > 31 {
        return Err(PipelineError::Config(format!(
            "window_log_max {} is outside 10..=31",
            cfg.window_log_max
        )));
    }
    Ok(())
}

impl Pipeline {
    /// A pipeline for a full snapshot unpacked under `datadir`.
    pub fn new(datadir: &Path, cfg: PipelineConfig) -> Result<Self, PipelineError> {
        check_window(&cfg)?;
        // Half of what the window and fixed buffers leave may queue file pieces on the
        // shards (the rest holds compressed frames in flight).
        let spare = cfg
            .memory_limit_bytes
            .saturating_sub((1u64 << cfg.window_log_max) + FIXED_OVERHEAD_BYTES);
        let per_shard = (spare / 2 / cfg.shards.max(1) as u64).min(MAX_QUEUED_FILE_BYTES_PER_SHARD);
        let capacity =
            ((per_shard / FILE_WRITE_BUFFER_BYTES as u64) as usize).max(MIN_SHARD_INBOX_CAPACITY);
        let index = IndexConfig::default().with_max_open_maps(cfg.max_open_maps_per_shard);
        let shards = ShardSet::start_configured(cfg.shards, capacity, cfg.cores.clone(), index)
            .map_err(io_err(datadir))?;
        Self::with_shards(datadir, cfg, shards, None)
    }

    /// A pipeline for an incremental snapshot applied on top of a verified full snapshot:
    /// its accounts join the same index, newest slot winning, and the combined state is
    /// verified against the incremental manifest.
    pub fn incremental(base: VerifiedSnapshot, cfg: PipelineConfig) -> Result<Self, PipelineError> {
        let mut base = base;
        let shards = base.shards.take().ok_or(PipelineError::Failed)?;
        let datadir = base.datadir.clone();
        Self::with_shards(&datadir, cfg, shards, Some(Box::new(base)))
    }

    fn with_shards(
        datadir: &Path,
        cfg: PipelineConfig,
        shards: ShardSet,
        base: Option<Box<VerifiedSnapshot>>,
    ) -> Result<Self, PipelineError> {
        check_window(&cfg)?;
        let overhead = streaming_overhead_bytes(shards.count(), shards.inbox_capacity());
        let need = (1u64 << cfg.window_log_max) + overhead;
        if cfg.memory_limit_bytes < need {
            return Err(PipelineError::Config(format!(
                "memory_limit_bytes {} is below the zstd window (2^{}) plus {overhead} bytes of buffers = {need}",
                cfg.memory_limit_bytes, cfg.window_log_max
            )));
        }
        let gen = base.as_ref().map_or(0, |b| b.gen + 1);
        std::fs::create_dir_all(datadir).map_err(io_err(datadir))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let staging = datadir.join(format!(".staging-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(staging.join("accounts")).map_err(io_err(&staging))?;
        std::fs::create_dir_all(staging.join("snapshots")).map_err(io_err(&staging))?;
        if shards.set_dir(gen, &staging.join("accounts")).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(ShardGone.into());
        }
        let mut limits = cfg.limits;
        limits.max_metadata_entry_bytes = limits
            .max_metadata_entry_bytes
            .min(cfg.memory_limit_bytes / 4);
        Ok(Pipeline {
            unpacker: Unpacker {
                staging,
                limits,
                budget: UnpackBudget::default(),
                fsync: cfg.fsync,
                cur: Current::None,
                manifest: None,
                version: None,
                status_cache: false,
                storages: HashMap::new(),
                received: HashSet::new(),
                pending: Vec::new(),
                shards: Some(shards),
                gen,
                account_files: 0,
            },
            datadir: datadir.to_path_buf(),
            decode: Decode::Detect(Vec::with_capacity(4)),
            tar: TarParser::new(),
            base,
            compressed_bytes: 0,
            decompressed_bytes: 0,
            frames: 0,
            failed: false,
            committed: false,
            started: Instant::now(),
            finish_started: None,
            cfg,
        })
    }

    /// Counters so far.
    pub fn progress(&self) -> Progress {
        Progress {
            compressed_bytes: self.compressed_bytes,
            decompressed_bytes: self.decompressed_bytes,
            entries: self.tar.entries_seen(),
            account_files: self.unpacker.account_files,
            frames: self.frames,
        }
    }

    /// Feed the next slice of the archive (any size, in order). Blocks while the index
    /// shards or decompression workers are busy (back-pressure).
    pub fn feed(&mut self, input: &[u8]) -> Result<Progress, PipelineError> {
        if self.failed {
            return Err(PipelineError::Failed);
        }
        let r = self.feed_inner(input);
        if r.is_err() {
            self.failed = true;
        }
        r.map(|_| self.progress())
    }

    fn new_stream(&self) -> Result<Box<ZstdStream>, PipelineError> {
        Ok(Box::new(ZstdStream::new(
            self.cfg.window_log_max,
            DECOMPRESSED_CHUNK_BYTES,
        )?))
    }

    fn feed_inner(&mut self, mut input: &[u8]) -> Result<(), PipelineError> {
        self.compressed_bytes += input.len() as u64;
        if let Decode::Detect(buf) = &mut self.decode {
            let take = (4 - buf.len()).min(input.len());
            buf.extend_from_slice(&input[..take]);
            input = &input[take..];
            if buf.len() < 4 {
                return Ok(());
            }
            let pre = std::mem::take(buf);
            self.decode = if starts_with_marker(&pre) {
                // Frames decompressing, the one being emitted, and the kept buffers.
                let max_in_flight = self.cfg.shards.max(1) as u64 + 2 + FREE_FRAME_BUFFERS as u64;
                let overhead = self
                    .unpacker
                    .shards
                    .as_ref()
                    .map_or(FIXED_OVERHEAD_BYTES, |s| {
                        streaming_overhead_bytes(s.count(), s.inbox_capacity())
                    });
                let avail = self
                    .cfg
                    .memory_limit_bytes
                    .saturating_sub((1u64 << self.cfg.window_log_max) + overhead);
                Decode::Marked(Box::new(Marked {
                    marker: [0; FRAME_MARKER_BYTES],
                    fill: 0,
                    cur: None,
                    pool: DecompressPool::start(self.cfg.shards, self.cfg.window_log_max)
                        .map_err(io_err(&self.datadir))?,
                    next_seq: 0,
                    frame_budget_bytes: avail / max_in_flight,
                    consumed: 0,
                }))
            } else {
                Decode::Single(self.new_stream()?)
            };
            self.process(&pre)?;
        }
        self.process(input)
    }

    fn process(&mut self, mut input: &[u8]) -> Result<(), PipelineError> {
        let window_log_max = self.cfg.window_log_max;
        let Pipeline {
            decode,
            tar,
            unpacker,
            decompressed_bytes,
            frames,
            ..
        } = self;
        let mut sink = |chunk: &[u8]| -> Result<(), PipelineError> {
            *decompressed_bytes += chunk.len() as u64;
            tar.push(chunk, unpacker)
        };
        match decode {
            Decode::Detect(_) => unreachable!("mode detected before processing"),
            Decode::Single(z) => {
                z.push(input, &mut sink)?;
                *frames = u64::from(z.produced_bytes() > 0);
            }
            Decode::Marked(mk) => {
                while !input.is_empty() {
                    match &mut mk.cur {
                        None => {
                            let take = (FRAME_MARKER_BYTES - mk.fill).min(input.len());
                            mk.marker[mk.fill..mk.fill + take].copy_from_slice(&input[..take]);
                            mk.fill += take;
                            input = &input[take..];
                            mk.consumed += take as u64;
                            if mk.fill == FRAME_MARKER_BYTES {
                                mk.fill = 0;
                                let m = FrameMarker::decode(
                                    &mk.marker,
                                    mk.consumed - FRAME_MARKER_BYTES as u64,
                                )?;
                                if m.compressed_bytes == 0 {
                                    return Err(ZstdError::BadMarker {
                                        offset: mk.consumed - FRAME_MARKER_BYTES as u64,
                                        reason: "empty frame",
                                    }
                                    .into());
                                }
                                let need = m.compressed_bytes.saturating_add(m.decompressed_bytes);
                                mk.cur = Some(if need <= mk.frame_budget_bytes {
                                    MarkedFrame::Collect {
                                        m,
                                        buf: Vec::with_capacity(m.compressed_bytes as usize),
                                    }
                                } else {
                                    // Too large to hold: decompress it here, streaming, after
                                    // the frames before it.
                                    mk.pool.drain(&mut sink)?;
                                    MarkedFrame::Stream {
                                        m,
                                        remaining: m.compressed_bytes,
                                        z: Box::new(ZstdStream::new(
                                            window_log_max,
                                            DECOMPRESSED_CHUNK_BYTES,
                                        )?),
                                        produced_before: 0,
                                    }
                                });
                            }
                        }
                        Some(MarkedFrame::Collect { m, buf }) => {
                            let take = (m.compressed_bytes as usize - buf.len()).min(input.len());
                            buf.extend_from_slice(&input[..take]);
                            input = &input[take..];
                            mk.consumed += take as u64;
                            if buf.len() as u64 == m.compressed_bytes {
                                let Some(MarkedFrame::Collect { m, buf }) = mk.cur.take() else {
                                    unreachable!()
                                };
                                let seq = mk.next_seq;
                                mk.next_seq += 1;
                                *frames += 1;
                                mk.pool.submit(seq, m, buf, &mut sink)?;
                            }
                        }
                        Some(MarkedFrame::Stream {
                            m,
                            remaining,
                            z,
                            produced_before,
                        }) => {
                            let take = (*remaining).min(input.len() as u64) as usize;
                            z.push(&input[..take], &mut sink)?;
                            input = &input[take..];
                            mk.consumed += take as u64;
                            *remaining -= take as u64;
                            if *remaining == 0 {
                                z.finish()?;
                                let got = z.produced_bytes() - *produced_before;
                                if got != m.decompressed_bytes {
                                    return Err(ZstdError::FrameSizeMismatch {
                                        index: mk.next_seq,
                                        got,
                                        expected: m.decompressed_bytes,
                                    }
                                    .into());
                                }
                                mk.cur = None;
                                mk.next_seq += 1;
                                mk.pool.next_emit = mk.next_seq;
                                *frames += 1;
                            }
                        }
                    }
                }
                mk.pool.poll(&mut sink)?;
            }
        }
        Ok(())
    }

    /// End of input: check completeness, verify the accounts LtHash and capitalization
    /// against the manifest, and move the unpacked snapshot into place.
    pub fn finish(mut self) -> Result<VerifiedSnapshot, PipelineError> {
        if self.failed {
            return Err(PipelineError::Failed);
        }
        let r = self.finish_inner();
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn finish_inner(&mut self) -> Result<VerifiedSnapshot, PipelineError> {
        self.finish_started = Some(Instant::now());
        // 1. The compressed stream must end at a frame boundary.
        {
            let Pipeline {
                decode,
                tar,
                unpacker,
                decompressed_bytes,
                ..
            } = self;
            let mut sink = |chunk: &[u8]| -> Result<(), PipelineError> {
                *decompressed_bytes += chunk.len() as u64;
                tar.push(chunk, unpacker)
            };
            match decode {
                Decode::Detect(_) => {
                    return Err(ZstdError::IncompleteFrame {
                        consumed: self.compressed_bytes,
                    }
                    .into());
                }
                Decode::Single(z) => z.finish()?,
                Decode::Marked(mk) => {
                    if mk.cur.is_some() || mk.fill != 0 || mk.next_seq == 0 {
                        return Err(ZstdError::IncompleteFrame {
                            consumed: mk.consumed,
                        }
                        .into());
                    }
                    mk.pool.drain(&mut sink)?;
                }
            }
        }
        // 2. The tar stream must have ended cleanly.
        self.tar.finish()?;
        // 3. Everything the manifest names must be here.
        let u = &mut self.unpacker;
        if u.version.is_none() {
            return Err(PipelineError::Missing("no `version` entry".into()));
        }
        let Some(manifest) = u.manifest.clone() else {
            return Err(PipelineError::Missing(
                "no bank snapshot manifest (snapshots/<slot>/<slot>)".into(),
            ));
        };
        let mut missing: Vec<String> = manifest
            .storages
            .iter()
            .filter(|s| !u.received.contains(&(s.slot, s.id)))
            .map(|s| format!("accounts/{}.{}", s.slot, s.id))
            .collect();
        if !missing.is_empty() {
            missing.truncate(5);
            return Err(PipelineError::Missing(format!(
                "account files named by the manifest are absent: {}",
                missing.join(", ")
            )));
        }
        if let Some(base) = &self.base {
            if manifest.slot <= base.report.slot {
                return Err(PipelineError::Inconsistent(format!(
                    "incremental snapshot slot {} is not after its base slot {}",
                    manifest.slot, base.report.slot
                )));
            }
            if let Some(p) = &manifest.incremental_persistence {
                if p.full_slot != base.report.slot {
                    return Err(PipelineError::Inconsistent(format!(
                        "incremental snapshot is based on slot {}, the full snapshot is slot {}",
                        p.full_slot, base.report.slot
                    )));
                }
            }
        }
        // 4. Combine the shards' partial sums.
        let totals = self
            .unpacker
            .shards
            .as_mut()
            .ok_or(PipelineError::Failed)?
            .totals()?;
        if let Some(e) = totals.iter().find_map(|t| t.error.clone()) {
            return Err(PipelineError::Storage(e));
        }
        let report = self.report(&manifest, &totals);
        let mut problems = Vec::new();
        if !report.lt_hash_ok {
            problems.push(match &report.lt_hash_expected {
                Some(exp) => format!(
                    "accounts LtHash mismatch: expected {exp}, computed {}",
                    report.lt_hash_computed
                ),
                None => "the manifest has no accounts_lt_hash to verify against".to_string(),
            });
        }
        if !report.capitalization_ok {
            problems.push(format!(
                "capitalization mismatch: expected {}, computed {}",
                report.capitalization_expected, report.capitalization_computed
            ));
        }
        if !problems.is_empty() {
            return Err(PipelineError::Verification {
                what: problems.join("; "),
                report: Box::new(report),
            });
        }
        // 5. Move into place: <datadir>/snapshot/<slot> or <datadir>/incremental/<base>-<slot>.
        let dest = match &self.base {
            None => self
                .datadir
                .join("snapshot")
                .join(manifest.slot.to_string()),
            Some(b) => self
                .datadir
                .join("incremental")
                .join(format!("{}-{}", b.report.slot, manifest.slot)),
        };
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(io_err(&dest))?;
        }
        std::fs::rename(&self.unpacker.staging, &dest).map_err(io_err(&dest))?;
        self.committed = true;
        let mut report = report;
        report.datadir = dest.display().to_string();
        let shards = self.unpacker.shards.take();
        // Files the shards have not mapped yet are now found under the new name.
        if let Some(s) = &shards {
            s.set_dir(self.unpacker.gen, &dest.join("accounts"))?;
        }
        Ok(VerifiedSnapshot {
            report,
            manifest,
            dir: dest,
            datadir: self.datadir.clone(),
            shards,
            gen: self.unpacker.gen,
        })
    }

    fn report(&self, manifest: &Manifest, totals: &[ShardTotals]) -> VerifyReport {
        let mut lt = LtHash::identity();
        let mut cap: u128 = 0;
        for t in totals {
            lt.mix_in(&t.lt_hash);
            cap += t.capitalization;
        }
        let storages = manifest.storages.len() as u64;
        VerifyReport {
            slot: manifest.slot,
            parent_slot: manifest.parent_slot,
            base_slot: self.base.as_ref().map(|b| b.report.slot),
            storages,
            accounts_total: totals.iter().map(|t| t.accounts_total).sum(),
            accounts_live: totals.iter().map(|t| t.accounts_live).sum(),
            zero_lamport_accounts: totals.iter().map(|t| t.zero_lamport_live).sum(),
            lt_hash_ok: manifest.accounts_lt_hash.as_deref() == Some(&lt),
            capitalization_ok: cap == manifest.capitalization as u128,
            bank_hash: base58(&manifest.bank_hash),
            lt_hash_expected: manifest
                .accounts_lt_hash
                .as_ref()
                .map(|h| base58(&h.checksum())),
            lt_hash_computed: base58(&lt.checksum()),
            capitalization_expected: manifest.capitalization,
            capitalization_computed: cap,
            compressed_bytes: self.compressed_bytes,
            decompressed_bytes: self.decompressed_bytes,
            frames: self.frames,
            shard_runtime: self
                .unpacker
                .shards
                .as_ref()
                .map(|s| s.runtime())
                .unwrap_or("none")
                .to_string(),
            shards: totals
                .iter()
                .map(|t| ShardReport {
                    shard: t.shard,
                    accounts_total: t.accounts_total,
                    owned_bytes: t.owned_bytes,
                    accounts_live: t.accounts_live,
                    scanned_accounts: t.scanned_accounts,
                    scanned_bytes: t.scanned_bytes,
                    files_written: t.files_written,
                    retracted: t.retracted,
                    write_mode: t.write_mode.clone(),
                    scan_ms: t.scan_ms,
                    write_ms: t.write_ms,
                    idle_ms: t.idle_ms,
                    mesh_wait_ms: t.mesh_wait_ms,
                    cpu_ms: t.cpu_ms,
                    retract_ms: t.retract_ms,
                    retract_tail_ms: t.retract_tail_ms,
                    retracted_in_stream: t.retracted_in_stream,
                    index_bytes: t.index_bytes,
                    storage_files: t.storage_files,
                    open_maps: t.open_maps,
                    peak_open_maps: t.peak_open_maps,
                    maps_opened: t.maps_opened,
                })
                .collect(),
            datadir: self.unpacker.staging.display().to_string(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            decompress_cpu_ms: match &self.decode {
                Decode::Marked(mk) => mk.pool.cpu_ms(),
                _ => 0,
            },
            feeder_wait_ms: self
                .unpacker
                .shards
                .as_ref()
                .map_or(0, |s| s.send_wait_ms()),
            finish_ms: self
                .finish_started
                .map_or(0, |t| t.elapsed().as_millis() as u64),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if !self.committed {
            // Stop the shards first: no file is being written when the staging directory
            // goes.
            drop(self.unpacker.shards.take());
            let _ = std::fs::remove_dir_all(&self.unpacker.staging);
        }
    }
}

/// A verified snapshot: its report and manifest, where it was unpacked, and the live
/// sharded index over its account files.
pub struct VerifiedSnapshot {
    pub report: VerifyReport,
    pub manifest: Manifest,
    /// Directory holding `version`, `snapshots/` and `accounts/`.
    pub dir: PathBuf,
    datadir: PathBuf,
    shards: Option<ShardSet>,
    /// Generation of this snapshot's files in the shard index.
    gen: u32,
}

impl VerifiedSnapshot {
    /// Look an account up (on its owner shard).
    pub fn get(&self, pubkey: &[u8; 32]) -> Result<Option<AccountRecord>, PipelineError> {
        Ok(self
            .shards
            .as_ref()
            .ok_or(PipelineError::Failed)?
            .get(pubkey)?)
    }

    /// Every live account, sorted by pubkey. Holds them all in memory.
    pub fn accounts(&self) -> Result<Vec<AccountRecord>, PipelineError> {
        Ok(self.shards.as_ref().ok_or(PipelineError::Failed)?.all()?)
    }
}

// A downloader moves the pipeline to the thread that feeds it.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Pipeline>();
    assert_send::<VerifiedSnapshot>();
};

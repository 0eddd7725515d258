//! The snapshot download driver: discovery and probing, the chunk coordinator on a glommio
//! executor, ranged fetches written at their offsets with DMA writes into a pre-allocated
//! file, the journal of finished chunks, feeding the contiguous prefix to the archive sink
//! on its own thread, the final length check, and a cross-source audit when verification
//! fails (which names the source that served bad bytes).
//!
//! Files in the data directory `D`:
//! - `D/download/<archive name>`: the archive being downloaded (written at chunk offsets);
//! - `D/journal/snapshot-download.{cur,prev}`: source identity, chunk size and the bitmap
//!   of chunks that are written and synced. A restart with the same identity re-fetches no
//!   finished chunk; another identity (other size / ETag / name) starts over.
//!
//! Stages, one file each: `discover` (RPC discovery and probing of sources), `driver` (the
//! coordinator loop on shard 0), `fetch` (ranged fetches written at their offsets, on any
//! shard), `resume` (the journal of finished chunks), `feed` (the sink thread fed the
//! contiguous prefix), `audit` (cross-source check after a failed verification).

mod audit;
mod discover;
mod driver;
mod feed;
mod fetch;
mod resume;

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use catchup_http::Url;
use serde::Serialize;

use super::client::ClientConfig;
use super::coordinator::{CoordinatorConfig, Event};
use super::sink::{SinkError, SinkFactory};
use super::source::ProbedSource;

pub use audit::fetch_range_digest as range_digest_of;
pub use discover::{discover_rpc, probe_source};

use driver::sync_async;
use feed::unpinned_cpus;
use fetch::fetch_worker;

/// Settings of one sync.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Archive URLs or base URLs of snapshot sources.
    pub sources: Vec<Url>,
    /// JSON-RPC endpoint to ask `getClusterNodes`.
    pub rpc: Option<Url>,
    pub datadir: PathBuf,
    /// Fetch the incremental snapshot instead of the full one (base URLs only).
    pub incremental: bool,
    pub coordinator: CoordinatorConfig,
    pub client: ClientConfig,
    /// Discovery: how many sources must serve the chosen slot.
    pub min_agree: usize,
    pub max_slots_behind: u64,
    pub max_latency_ms: u64,
    /// Stop after this many chunks were fetched in this run (tests of resume); `None`: all.
    pub stop_after_chunks: Option<u32>,
    /// Set (by a signal handler) to stop the download: the sync then returns its report
    /// marked `interrupted`, the journal holding what was fetched.
    pub interrupt: Arc<std::sync::atomic::AtomicBool>,
    pub progress_interval_ms: u64,
    pub max_audit_rounds: u32,
    /// Find a lying source by bisection over range digests where sources answer them
    /// (else, and when false, by fetching chunks again).
    pub audit_bisect: bool,
    /// Shards (pinned executors) that fetch: shard 0 coordinates and fetches for its own
    /// sources; source i is owned by the shard the runtime's range ownership gives it. 1:
    /// one executor on the calling thread.
    pub shards: usize,
    /// Cores of the download shards (shard `i` on `cores[i % len]`), from the command's
    /// placement; `None`: the CPUs this process may use (one shard: unpinned).
    pub cores: Option<Vec<usize>>,
    /// Cores of the helper threads (the sink: decompression, unpacking; its index shards
    /// are placed by the sink itself); `None`: the CPUs this process may use.
    pub helper_cores: Option<Vec<usize>>,
    /// The archive the sources must serve (a trusted snapshot): a source whose archive has
    /// another name is rejected before the choice of the source group.
    pub expected_archive: Option<ExpectedArchive>,
    /// Filled with the chosen archive's file name once the source group is chosen: the
    /// sink compares the verified accounts hash with the hash in that name.
    pub archive_name: Arc<Mutex<Option<String>>>,
    /// Order the chosen sources by their probe latency (fastest first) before the
    /// coordinator measures their bandwidth.
    pub rank_by_latency: bool,
    /// The journal's name in `D/journal` and the archive's directory under `D`: a full
    /// and an incremental download keep their own, so neither undoes the other.
    pub journal_name: String,
    pub download_subdir: String,
}

/// Journal and directory of an incremental download next to a full one.
pub const INCREMENTAL_JOURNAL_NAME: &str = "snapshot-download-incremental";
pub const INCREMENTAL_DOWNLOAD_SUBDIR: &str = "download-incremental";

/// A snapshot archive identified by its slot(s) and hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedArchive {
    /// `Some(base)` for an incremental archive.
    pub base_slot: Option<u64>,
    pub slot: u64,
    /// base58
    pub hash: String,
}

impl ExpectedArchive {
    /// Whether an archive name names this snapshot (any compression).
    pub fn matches(&self, name: &super::source::ArchiveName) -> bool {
        name.slot == self.slot && name.hash == self.hash && name.base_slot == self.base_slot
    }

    /// The archive's file name (zstd compressed, as Agave writes it now).
    pub fn file_name(&self) -> String {
        match self.base_slot {
            None => format!("snapshot-{}-{}.tar.zst", self.slot, self.hash),
            Some(b) => format!(
                "incremental-snapshot-{b}-{}-{}.tar.zst",
                self.slot, self.hash
            ),
        }
    }
}

impl SyncConfig {
    pub fn new(datadir: PathBuf) -> SyncConfig {
        SyncConfig {
            sources: Vec::new(),
            rpc: None,
            datadir,
            incremental: false,
            coordinator: CoordinatorConfig::default(),
            client: ClientConfig::default(),
            min_agree: 1,
            max_slots_behind: 100_000,
            max_latency_ms: 5_000,
            stop_after_chunks: None,
            interrupt: Default::default(),
            progress_interval_ms: 10_000,
            max_audit_rounds: 3,
            audit_bisect: true,
            shards: 1,
            cores: None,
            helper_cores: None,
            expected_archive: None,
            archive_name: Arc::new(Mutex::new(None)),
            rank_by_latency: false,
            journal_name: resume::JOURNAL_NAME.to_string(),
            download_subdir: "download".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("no snapshot source given (use --source URL or --rpc URL)")]
    NoSources,
    #[error("no usable snapshot source: {0}")]
    NoUsableSource(String),
    #[error("discovery via {rpc}: {why}")]
    Discovery { rpc: String, why: String },
    #[error(transparent)]
    DataDir(#[from] catchup_io::datadir::DataDirError),
    #[error(transparent)]
    Journal(#[from] catchup_io::journal::JournalError),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("download stuck: {chunks_left} chunks left and every source dropped ({bad})")]
    Stuck { chunks_left: u32, bad: String },
    #[error("downloaded file is {got} bytes, Content-Length said {expected}")]
    Length { got: u64, expected: u64 },
    #[error("{0}")]
    Verify(SinkError),
    #[error("verification failed and no other source can cross-check it: {0}")]
    Unauditable(SinkError),
    #[error("executor: {0}")]
    Executor(String),
    /// The archive verified internally but its accounts hash is not the one in its name
    /// (and so not the trusted one): every source of it served a forged archive.
    #[error("{what} (served by {})", served_by.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(", "))]
    Forged { what: String, served_by: Vec<Url> },
}

const STAGE_BYTES: usize = 1 << 20;
const ALIGN_BYTES: u64 = 4096;

/// A source's line in the report.
#[derive(Clone, Debug, Serialize)]
pub struct SourceReport {
    pub url: String,
    /// The shard that fetches for it.
    pub shard: usize,
    pub ranges: bool,
    pub chunks: u32,
    pub bytes: u64,
    pub speed_bytes_per_s: f64,
    pub failures: u32,
    /// Why it was dropped or rejected, if it was.
    pub dropped: Option<String>,
}

/// Progress while downloading.
#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    pub archive: String,
    pub chunks_done: u32,
    pub chunks_total: u32,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub rate_bytes_per_s: f64,
    pub eta_s: Option<f64>,
    pub fed_bytes: u64,
    pub sources: Vec<SourceReport>,
}

/// The outcome of a sync.
#[derive(Clone, Debug, Serialize)]
pub struct SyncReport {
    pub archive: String,
    pub slot: Option<u64>,
    pub size_bytes: u64,
    pub chunks_total: u32,
    /// Chunks found finished in the journal at start.
    pub chunks_resumed: u32,
    /// Chunks fetched by this run (including re-fetches after an audit).
    pub chunks_fetched: u32,
    pub bytes_fetched: u64,
    pub download_ms: u64,
    pub total_ms: u64,
    pub complete: bool,
    /// Stopped by SIGINT/SIGTERM before it completed (a restart resumes from the journal).
    pub interrupted: bool,
    pub verified: Option<serde_json::Value>,
    pub audit_rounds: u32,
    /// Chunk ranges fetched again by the audits to find lying sources.
    pub audit_fetches: u32,
    /// Bytes those fetches moved, range digests asked, and the audit rounds that found the
    /// bad chunk by bisection.
    pub audit_bytes_refetched: u64,
    pub audit_digest_queries: u32,
    pub audit_bisected_rounds: u32,
    /// Sources whose bytes lost an audit vote: `url: chunk N disagrees with other sources`.
    pub lying_sources: Vec<String>,
    pub sources: Vec<SourceReport>,
    /// Sources dropped or rejected, with the reason (`url: reason`).
    pub bad_sources: Vec<String>,
}

/// Progress callback of [`sync`].
pub type ProgressFn = Box<dyn FnMut(&Progress) + Send>;

/// Run a whole sync. With `cfg.shards == 1` one glommio executor on the calling thread;
/// otherwise `cfg.shards` pinned shards of the shard runtime: shard 0 runs the coordinator,
/// the journal and the sink feeding, and every shard fetches for the sources it owns,
/// taking chunks by message as its sources finish them. The sink runs on its own thread.
pub fn sync(
    cfg: SyncConfig,
    sink_factory: Arc<SinkFactory>,
    progress: ProgressFn,
) -> Result<SyncReport, SyncError> {
    let _ = unpinned_cpus();
    if cfg.shards <= 1 {
        let placement = match cfg.cores.as_deref() {
            Some([core, ..]) => glommio::Placement::Fixed(*core),
            _ => glommio::Placement::Unbound,
        };
        let ex = glommio::LocalExecutorBuilder::new(placement)
            .name("sync")
            .make()
            .map_err(|e| SyncError::Executor(e.to_string()))?;
        return catchup_io::exec::run(&ex, sync_async(cfg, sink_factory, progress, None));
    }
    let rcfg = catchup_shards::RuntimeConfig {
        channel_capacity: 256,
        name: "sync".into(),
        handle_signals: false,
        cores: cfg.cores.clone(),
        ..catchup_shards::RuntimeConfig::new(cfg.shards)
    };
    let progress = Arc::new(Mutex::new(Some(progress)));
    let results = catchup_shards::run(&rcfg, move |shard: catchup_shards::Shard<ShardMsg>| {
        let (cfg, sink_factory, progress) = (cfg.clone(), sink_factory.clone(), progress.clone());
        async move {
            let shard = Rc::new(shard);
            crate::node::stages::enter_shard(shard.id().0, shard.core());
            if shard.id().0 != 0 {
                let span = crate::node::obs::shard_span(shard.id().0);
                tracing::Instrument::instrument(fetch_worker(shard), span).await;
                return None;
            }
            let p = progress.lock().unwrap_or_else(|e| e.into_inner()).take();
            let p: ProgressFn = p.unwrap_or_else(|| Box::new(|_| {}));
            let span = crate::node::obs::shard_span(0);
            let r = tracing::Instrument::instrument(
                sync_async(cfg, sink_factory, p, Some(shard.clone())),
                span,
            )
            .await;
            for peer in shard.peers() {
                let _ = shard.send(peer, ShardMsg::Stop).await;
            }
            shard.close_outgoing();
            Some(r)
        }
    })
    .map_err(|e| SyncError::Executor(e.to_string()))?;
    results
        .into_iter()
        .flatten()
        .next()
        .unwrap_or_else(|| Err(SyncError::Executor("shard 0 returned nothing".into())))
}

/// Forget a download (its journal and its file) so that nothing of it is resumed: after a
/// forged archive, the next source group starts from nothing.
pub fn forget_download(cfg: &SyncConfig, archive_name: &str) {
    for suffix in ["cur", "prev", "tmp"] {
        let _ = std::fs::remove_file(
            cfg.datadir
                .join("journal")
                .join(format!("{}.{suffix}", cfg.journal_name)),
        );
    }
    if !archive_name.is_empty() && !archive_name.contains('/') {
        let _ = std::fs::remove_file(cfg.datadir.join(&cfg.download_subdir).join(archive_name));
    }
}

/// Messages between the coordinating shard 0 and the fetching shards.
pub enum ShardMsg {
    /// The download is set up: open the file, know the sources.
    Start {
        path: PathBuf,
        members: Vec<ProbedSource>,
        total_bytes: u64,
        chunk_size_bytes: u64,
        client: ClientConfig,
    },
    Fetch {
        source: u32,
        generation: u64,
        first: u32,
        last: u32,
        offset: u64,
        len: u64,
        whole: bool,
    },
    /// Stop the fetch of `source`; `generation` is its new generation.
    Cancel {
        source: u32,
        generation: u64,
    },
    /// An event of a fetch (to shard 0).
    Event {
        source: u32,
        generation: u64,
        event: Event,
    },
    Stop,
}

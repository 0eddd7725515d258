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

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use catchup_http::{BodyDecoder, ByteRange, Method, Request, Url};
use glommio::io::{DmaFile, OpenOptions};
use serde::{Deserialize, Serialize};

use super::client::{check_range_reply, fetch_small, head_follow, ClientConfig, ClientError, Conn};
use super::coordinator::{Action, Coordinator, CoordinatorConfig, Event, FailReason, SourceId};
use super::sink::{ArchiveSink, SinkError, SinkFactory};
use super::source::{
    choose_group, parse_archive_name, ProbedSource, SourceGroup, SourceIdentity,
    FULL_REDIRECT_PATH, INCREMENTAL_REDIRECT_PATH,
};

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
    /// Shards (pinned executors) that fetch: shard 0 coordinates and fetches for its own
    /// sources; source i is owned by shard `i % shards`. 1: one executor on the calling
    /// thread.
    pub shards: usize,
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
            shards: 1,
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
}

/// What the journal keeps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct JournalState {
    archive_name: String,
    size_bytes: u64,
    etag: Option<String>,
    last_modified: Option<String>,
    chunk_size_bytes: u64,
    /// Hex of the bitmap, bit i = chunk i done (LSB first within each byte).
    done_hex: String,
}

const JOURNAL_NAME: &str = "snapshot-download";
const STAGE_BYTES: usize = 1 << 20;
const ALIGN_BYTES: u64 = 4096;
const SINK_QUEUE_PIECES: usize = 16;

fn bitmap_to_hex(done: &[bool]) -> String {
    let mut bytes = vec![0u8; done.len().div_ceil(8)];
    for (i, d) in done.iter().enumerate() {
        if *d {
            bytes[i / 8] |= 1 << (i % 8);
        }
    }
    hex::encode(bytes)
}

fn hex_to_bitmap(h: &str, n: usize) -> Option<Vec<bool>> {
    let bytes = hex::decode(h).ok()?;
    if bytes.len() != n.div_ceil(8) {
        return None;
    }
    Some((0..n).map(|i| bytes[i / 8] & (1 << (i % 8)) != 0).collect())
}

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
    pub sources: Vec<SourceReport>,
    /// Sources dropped or rejected, with the reason (`url: reason`).
    pub bad_sources: Vec<String>,
}

/// The CPUs the process may use, as seen before any shard pinned its thread.
fn unpinned_cpus() -> Vec<usize> {
    static CPUS: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    CPUS.get_or_init(catchup_shards::allowed_cores).clone()
}

/// Let the current thread run on `cpus` (threads started from a pinned shard inherit its
/// single CPU otherwise). Best effort: an error leaves the affinity as it was.
fn set_affinity(cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET is only called with indices below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if c < libc::CPU_SETSIZE as usize {
                libc::CPU_SET(c, &mut set);
            }
        }
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
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
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name("sync")
            .make()
            .map_err(|e| SyncError::Executor(e.to_string()))?;
        return catchup_io::exec::run(&ex, sync_async(cfg, sink_factory, progress, None));
    }
    let rcfg = catchup_shards::RuntimeConfig {
        channel_capacity: 256,
        name: "sync".into(),
        handle_signals: false,
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

/// A fetching shard: runs the fetches shard 0 sends for the sources this shard owns and
/// forwards their events back.
async fn fetch_worker(shard: Rc<catchup_shards::Shard<ShardMsg>>) {
    let mut ctx: Option<Rc<Ctx>> = None;
    let (tx, rx) = glommio::channels::local_channel::new_bounded::<Msg>(1024);
    let tx = Rc::new(tx);
    let fwd_shard = shard.clone();
    let forwarder = glommio::spawn_local(async move {
        while let Some(m) = rx.recv().await {
            let msg = ShardMsg::Event {
                source: m.source,
                generation: m.generation,
                event: m.event,
            };
            if fwd_shard
                .send(catchup_shards::ShardId(0), msg)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    // Bounded by shard 0: it sends Stop (or closes its channel) when the sync ends.
    loop {
        let (from, msg) = match shard.recv_timeout(Duration::from_millis(200)).await {
            catchup_shards::Recv::Msg(f, m) => (f, m),
            catchup_shards::Recv::TimedOut => continue,
            catchup_shards::Recv::Closed => break,
        };
        let _ = from;
        match msg {
            ShardMsg::Start {
                path,
                members,
                total_bytes,
                chunk_size_bytes,
                client,
            } => {
                match OpenOptions::new()
                    .read(true)
                    .write(true)
                    .dma_open(&path)
                    .await
                {
                    Ok(file) => {
                        let rfile = match std::fs::File::open(&path) {
                            Ok(f) => f,
                            Err(e) => {
                                tracing::warn!(error = %e, path = %path.display(), "fetch shard cannot open the archive");
                                continue;
                            }
                        };
                        ctx = Some(Rc::new(Ctx {
                            file: Rc::new(file),
                            rfile: Rc::new(rfile),
                            generation: members.iter().map(|_| Cell::new(0)).collect(),
                            conns: members.iter().map(|_| RefCell::new(None)).collect(),
                            members,
                            total_bytes,
                            chunk_size_bytes,
                            client,
                            tx: tx.clone(),
                            bytes_fetched: Cell::new(0),
                        }))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, path = %path.display(), "fetch shard cannot open the archive")
                    }
                }
            }
            ShardMsg::Fetch {
                source,
                generation,
                first,
                last,
                offset,
                len,
                whole,
            } => match &ctx {
                Some(c) if (source as usize) < c.members.len() => {
                    c.generation[source as usize].set(generation);
                    glommio::spawn_local(fetch_task(
                        c.clone(),
                        source,
                        generation,
                        first,
                        last,
                        offset,
                        len,
                        whole,
                    ))
                    .detach();
                }
                _ => {
                    let event = Event::FetchFailed {
                        source: SourceId(source),
                        reason: FailReason::Transport(format!(
                            "shard {} has no open archive",
                            shard.id()
                        )),
                    };
                    let _ = tx
                        .send(Msg {
                            source,
                            generation,
                            event,
                        })
                        .await;
                }
            },
            ShardMsg::Cancel { source, generation } => {
                if let Some(c) = &ctx {
                    if let Some(g) = c.generation.get(source as usize) {
                        g.set(generation);
                        c.conns[source as usize].borrow_mut().take();
                    }
                }
            }
            ShardMsg::Event { .. } => {}
            ShardMsg::Stop => break,
        }
    }
    // Stop every fetch of this shard.
    if let Some(c) = &ctx {
        for g in &c.generation {
            g.set(g.get() + 1);
        }
    }
    drop(ctx);
    drop(tx);
    forwarder.cancel().await;
}

/// Resolve `--rpc` to base URLs via `getClusterNodes`.
pub async fn discover_rpc(rpc: &Url, client: &ClientConfig) -> Result<Vec<Url>, SyncError> {
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"getClusterNodes"}"#;
    let err = |why: String| SyncError::Discovery {
        rpc: rpc.to_string(),
        why,
    };
    let (head, reply) = fetch_small(
        rpc,
        Method::Post,
        &[("Content-Type", "application/json")],
        body,
        16 << 20,
        client,
    )
    .await
    .map_err(|e| err(e.to_string()))?;
    if head.status != 200 {
        return Err(err(format!("HTTP status {}", head.status)));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&reply).map_err(|e| err(format!("bad JSON: {e}")))?;
    let nodes = v
        .get("result")
        .and_then(|r| r.as_array())
        .ok_or_else(|| err("no result array".into()))?;
    let mut out = Vec::new();
    for n in nodes.iter().take(10_000) {
        if let Some(addr) = n.get("rpc").and_then(|r| r.as_str()) {
            if let Ok(u) = Url::parse(&format!("http://{addr}/")) {
                out.push(u);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// HEAD a source (following redirects) and check Range support with a one-byte GET.
pub async fn probe_source(
    given: &Url,
    incremental: bool,
    client: &ClientConfig,
) -> Result<ProbedSource, String> {
    let target = if parse_archive_name(given.file_name()).is_some() {
        given.clone()
    } else {
        given
            .join(if incremental {
                INCREMENTAL_REDIRECT_PATH
            } else {
                FULL_REDIRECT_PATH
            })
            .map_err(|e| e.to_string())?
    };
    let (archive, head, latency_ms) = head_follow(&target, client)
        .await
        .map_err(|e| e.to_string())?;
    if head.status != 200 {
        return Err(format!("HEAD {archive}: HTTP status {}", head.status));
    }
    let size = head
        .content_length
        .ok_or_else(|| format!("HEAD {archive}: no Content-Length"))?;
    let name = archive.file_name().to_string();
    // Range support: a 206 to a one-byte range.
    let mut conn = Conn::connect(&archive, client)
        .await
        .map_err(|e| e.to_string())?;
    let r = conn
        .send(&Request {
            method: Method::Get,
            url: &archive,
            range: ByteRange::from_start_len(0, 1),
            headers: &[],
            body: b"",
            keep_alive: false,
        })
        .await
        .map_err(|e| e.to_string())?;
    let ranges = r.status == 206
        && check_range_reply(&archive, &r, ByteRange::from_start_len(0, 1), size).is_ok();
    drop(conn);
    Ok(ProbedSource {
        given: given.clone(),
        identity: SourceIdentity {
            archive_name: name.clone(),
            size_bytes: size,
            etag: head.header("etag").map(str::to_string),
            last_modified: head.header("last-modified").map(str::to_string),
        },
        name: parse_archive_name(&name),
        archive,
        ranges,
        latency_ms,
    })
}

/// Messages from fetch tasks to the driver loop, tagged with the fetch generation.
struct Msg {
    source: u32,
    generation: u64,
    event: Event,
}

struct Ctx {
    file: Rc<DmaFile>,
    rfile: Rc<std::fs::File>,
    members: Vec<ProbedSource>,
    total_bytes: u64,
    chunk_size_bytes: u64,
    client: ClientConfig,
    generation: Vec<Cell<u64>>,
    conns: Vec<RefCell<Option<Conn>>>,
    tx: Rc<glommio::channels::local_channel::LocalSender<Msg>>,
    bytes_fetched: Cell<u64>,
}

#[allow(clippy::too_many_arguments)]
async fn fetch_task(
    ctx: Rc<Ctx>,
    source: u32,
    generation: u64,
    first: u32,
    last: u32,
    offset: u64,
    len: u64,
    whole: bool,
) {
    let r = fetch_inner(&ctx, source, generation, first, last, offset, len, whole).await;
    if let Err(e) = r {
        // A cancelled fetch reports nothing.
        if ctx.generation[source as usize].get() == generation {
            let _ = ctx
                .tx
                .send(Msg {
                    source,
                    generation,
                    event: Event::FetchFailed {
                        source: SourceId(source),
                        reason: FailReason::Transport(e.to_string()),
                    },
                })
                .await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn fetch_inner(
    ctx: &Ctx,
    source: u32,
    generation: u64,
    first: u32,
    last: u32,
    offset: u64,
    len: u64,
    whole: bool,
) -> Result<(), ClientError> {
    let m = &ctx.members[source as usize];
    let url = &m.archive;
    let existing = ctx.conns[source as usize].borrow_mut().take();
    let mut conn = match existing {
        Some(c) if c.reusable() => c,
        _ => Conn::connect(url, &ctx.client).await?,
    };
    let range = if whole {
        None
    } else {
        ByteRange::from_start_len(offset, len)
    };
    let head = conn
        .send(&Request {
            method: Method::Get,
            url,
            range,
            headers: &[],
            body: b"",
            keep_alive: true,
        })
        .await?;
    check_range_reply(url, &head, range, ctx.total_bytes)?;
    let mut dec =
        BodyDecoder::new(head.body_kind(Method::Get), ctx.client.limits).map_err(|e| {
            ClientError::Http {
                addr: url.authority(),
                source: e,
            }
        })?;
    let start = if whole { 0 } else { offset };
    let end = start + if whole { ctx.total_bytes } else { len };
    let mut pos = start;
    let mut chunk = if whole { 0 } else { first };
    let chunk_end = |c: u32| ((c as u64 + 1) * ctx.chunk_size_bytes).min(ctx.total_bytes);
    let mut stage = ctx.file.alloc_dma_buffer(STAGE_BYTES);
    let mut stage_len = 0usize;
    let mut stage_pos = pos;
    let cancelled = || ctx.generation[source as usize].get() != generation;
    // Bounded: every round reads at least one byte or ends the fetch.
    while pos < end {
        if cancelled() {
            return Ok(());
        }
        let want = (STAGE_BYTES - stage_len).min((chunk_end(chunk) - pos) as usize);
        let n = conn
            .read_body_into(
                &mut dec,
                &mut stage.as_bytes_mut()[stage_len..stage_len + want],
            )
            .await?;
        if n == 0 {
            return Err(ClientError::Unexpected {
                url: url.to_string(),
                why: format!("body ended at byte {pos}, expected {end}"),
            });
        }
        stage_len += n;
        pos += n as u64;
        if stage_len == STAGE_BYTES || pos == chunk_end(chunk) {
            if cancelled() {
                return Ok(());
            }
            let aligned = (stage_len as u64).div_ceil(ALIGN_BYTES) * ALIGN_BYTES;
            stage.as_bytes_mut()[stage_len..aligned as usize].fill(0);
            stage.trim_to_size(aligned as usize);
            let full = std::mem::replace(&mut stage, ctx.file.alloc_dma_buffer(STAGE_BYTES));
            ctx.file
                .write_at(full, stage_pos)
                .await
                .map_err(|e| ClientError::Io {
                    what: "write archive for",
                    addr: url.authority(),
                    source: e.into(),
                })?;
            let bytes = stage_len as u64;
            stage_len = 0;
            stage_pos = pos;
            crate::node::stages::record_snapshot_download(bytes, pos == chunk_end(chunk));
            let _ = ctx
                .tx
                .send(Msg {
                    source,
                    generation,
                    event: Event::Progress {
                        source: SourceId(source),
                        bytes,
                    },
                })
                .await;
            if pos == chunk_end(chunk) {
                let _ = ctx
                    .tx
                    .send(Msg {
                        source,
                        generation,
                        event: Event::ChunkDone {
                            source: SourceId(source),
                            chunk,
                        },
                    })
                    .await;
                chunk += 1;
            }
        }
    }
    let _ = last;
    if conn.reusable() && dec.is_done() {
        *ctx.conns[source as usize].borrow_mut() = Some(conn);
    }
    Ok(())
}

/// Hand the archive bytes `[sink.fed_bytes, prefix)` to the sink. With `wait` every byte
/// is queued before returning; otherwise at most what the queue takes now (bounded).
async fn feed_sink(
    sink: &mut SinkThread,
    rfile: &std::fs::File,
    path: &std::path::Path,
    prefix: u64,
    wait: bool,
) -> Result<(), SyncError> {
    let read_err = |e| SyncError::File {
        what: "read back",
        path: path.to_path_buf(),
        source: e,
    };
    if wait {
        sink.flush_pending_wait().await;
    } else if !sink.flush_pending() {
        return Ok(());
    }
    while sink.fed_bytes < prefix && !sink.failed() {
        let n = (prefix - sink.fed_bytes).min(STAGE_BYTES as u64) as usize;
        let data = read_exact_at(rfile, sink.fed_bytes, n)
            .await
            .map_err(read_err)?;
        if !sink.try_push(data) {
            if !wait {
                return Ok(());
            }
            sink.flush_pending_wait().await;
        }
    }
    Ok(())
}

/// Read `len` bytes at `pos`. A plain positioned read: io_uring DMA reads of this file
/// fail with EOPNOTSUPP on some kernels; reads are 1 MiB pieces, short and rare.
async fn read_exact_at(
    file: &std::fs::File,
    pos: u64,
    len: usize,
) -> Result<Vec<u8>, std::io::Error> {
    use std::os::unix::fs::FileExt;
    let mut out = vec![0u8; len];
    file.read_exact_at(&mut out, pos)?;
    Ok(out)
}

/// Fetch one range into memory (for the audit).
async fn fetch_range_vec(
    url: &Url,
    range: ByteRange,
    total: u64,
    client: &ClientConfig,
) -> Result<Vec<u8>, ClientError> {
    let mut conn = Conn::connect(url, client).await?;
    let head = conn
        .send(&Request {
            method: Method::Get,
            url,
            range: Some(range),
            headers: &[],
            body: b"",
            keep_alive: false,
        })
        .await?;
    check_range_reply(url, &head, Some(range), total)?;
    let mut out = Vec::with_capacity(range.len() as usize);
    let max = range.len();
    let u = url.to_string();
    conn.read_body(head.body_kind(Method::Get), |d| {
        if out.len() as u64 + d.len() as u64 > max {
            return Err(ClientError::Unexpected {
                url: u.clone(),
                why: "body longer than the range".into(),
            });
        }
        out.extend_from_slice(d);
        Ok(())
    })
    .await?;
    if out.len() as u64 != max {
        return Err(ClientError::Unexpected {
            url: u,
            why: format!("short range body: {} of {max} bytes", out.len()),
        });
    }
    Ok(out)
}

/// The sink on its own thread, fed through a bounded queue.
struct SinkThread {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    failed: Arc<AtomicBool>,
    error: Arc<Mutex<Option<SinkError>>>,
    handle: Option<std::thread::JoinHandle<Result<serde_json::Value, SinkError>>>,
    /// Bytes handed over (queued, or kept in `pending`).
    fed_bytes: u64,
    pending: Option<Vec<u8>>,
}

impl SinkThread {
    fn start(factory: &SinkFactory) -> Result<SinkThread, SinkError> {
        // Create the sink on a thread with the CPUs the process had before the shards were
        // pinned (a thread started from a pinned shard inherits its single CPU): the snapshot
        // pipeline spreads its index shards over them.
        let cpus = unpinned_cpus();
        let made = std::thread::scope(|sc| {
            sc.spawn(|| {
                set_affinity(&cpus);
                factory()
            })
            .join()
        });
        let mut sink: Box<dyn ArchiveSink> = made.map_err(|_| SinkError {
            offset_bytes: 0,
            message: "creating the sink panicked".into(),
        })??;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(SINK_QUEUE_PIECES);
        let failed = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let (f2, e2) = (failed.clone(), error.clone());
        let handle = std::thread::Builder::new()
            .name("snapshot-sink".into())
            .spawn(move || {
                set_affinity(&cpus);
                for piece in rx {
                    if f2.load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Err(e) = sink.feed(&piece) {
                        *e2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                        f2.store(true, Ordering::Relaxed);
                    }
                }
                if let Some(e) = e2.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                    return Err(e);
                }
                sink.finish()
            })
            .map_err(|e| SinkError {
                offset_bytes: 0,
                message: format!("cannot start the sink thread: {e}"),
            })?;
        Ok(SinkThread {
            tx: Some(tx),
            failed,
            error,
            handle: Some(handle),
            fed_bytes: 0,
            pending: None,
        })
    }

    /// A sink that is not running (between a failed verification and the next start).
    fn idle() -> SinkThread {
        SinkThread {
            tx: None,
            failed: Arc::new(AtomicBool::new(false)),
            error: Arc::new(Mutex::new(None)),
            handle: None,
            fed_bytes: 0,
            pending: None,
        }
    }

    /// Hand a piece to the sink without waiting; a piece the full queue cannot take is
    /// kept and sent first next time. Returns false when the queue is full.
    fn try_push(&mut self, piece: Vec<u8>) -> bool {
        self.fed_bytes += piece.len() as u64;
        self.pending = Some(piece);
        self.flush_pending()
    }

    /// Send the kept piece if the queue has room; true when nothing is kept any more.
    fn flush_pending(&mut self) -> bool {
        let (Some(tx), Some(piece)) = (&self.tx, self.pending.take()) else {
            return true;
        };
        match tx.try_send(piece) {
            Ok(()) => true,
            Err(std::sync::mpsc::TrySendError::Full(p)) => {
                self.pending = Some(p);
                false
            }
            // A stopped sink thread: the failure is reported by `finish`.
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => true,
        }
    }

    /// Wait (yielding to the executor) until the kept piece is in the queue.
    async fn flush_pending_wait(&mut self) {
        // Bounded by the sink's progress; a failed sink drains its queue at once.
        while !self.flush_pending() {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    fn finish(mut self) -> Result<serde_json::Value, SinkError> {
        drop(self.tx.take());
        let Some(h) = self.handle.take() else {
            return Err(SinkError {
                offset_bytes: 0,
                message: "the sink is not running".into(),
            });
        };
        match h.join() {
            Ok(r) => r,
            Err(_) => Err(SinkError {
                offset_bytes: u64::MAX,
                message: "the sink thread panicked".into(),
            }),
        }
    }

    fn error(&self) -> Option<SinkError> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn source_reports(
    coord: &Coordinator,
    members: &[ProbedSource],
    owner: &[usize],
) -> Vec<SourceReport> {
    members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let st = coord.source_stats(SourceId(i as u32)).expect("registered");
            SourceReport {
                url: m.archive.to_string(),
                shard: owner.get(i).copied().unwrap_or(0),
                ranges: st.ranges,
                chunks: st.chunks_done,
                bytes: st.bytes_total,
                speed_bytes_per_s: st.speed_bytes_per_s,
                failures: st.failures_total,
                dropped: st.dropped.clone(),
            }
        })
        .collect()
}

async fn sync_async(
    cfg: SyncConfig,
    sink_factory: Arc<SinkFactory>,
    mut progress: ProgressFn,
    shard: Option<Rc<catchup_shards::Shard<ShardMsg>>>,
) -> Result<SyncReport, SyncError> {
    let t_start = Instant::now();
    let datadir = catchup_io::datadir::DataDir::open(&cfg.datadir)?;
    // 1. Discovery and probing.
    let mut given = cfg.sources.clone();
    if let Some(rpc) = &cfg.rpc {
        given.extend(discover_rpc(rpc, &cfg.client).await?);
    }
    given.sort();
    given.dedup();
    if given.is_empty() {
        return Err(SyncError::NoSources);
    }
    let mut probes = Vec::new();
    let mut bad_sources: Vec<String> = Vec::new();
    {
        let tasks: Vec<_> = given
            .iter()
            .cloned()
            .map(|u| {
                let (client, inc) = (cfg.client.clone(), cfg.incremental);
                glommio::spawn_local(
                    async move { (u.clone(), probe_source(&u, inc, &client).await) },
                )
            })
            .collect();
        for t in tasks {
            match t.await {
                (_, Ok(p)) => probes.push(p),
                (u, Err(e)) => bad_sources.push(format!("{u}: probe failed: {e}")),
            }
        }
    }
    let all_probes = probes.clone();
    let group: SourceGroup = choose_group(
        probes,
        cfg.min_agree,
        cfg.max_slots_behind,
        cfg.max_latency_ms,
    )
    .ok_or_else(|| {
        SyncError::NoUsableSource(if bad_sources.is_empty() {
            "no source agrees".into()
        } else {
            bad_sources.join("; ")
        })
    })?;
    for p in &all_probes {
        if !group.members.iter().any(|m| m.given == p.given) {
            bad_sources.push(format!(
                "{}: serves another archive ({}, {} bytes, etag {:?}) than the chosen {} ({} bytes)",
                p.archive, p.identity.archive_name, p.identity.size_bytes, p.identity.etag, group.identity.archive_name, group.identity.size_bytes
            ));
        }
    }
    let identity = group.identity.clone();
    let total = identity.size_bytes;
    let chunk_size = cfg.coordinator.chunk_size_bytes;
    tracing::info!(archive = %identity.archive_name, size_bytes = total, sources = group.members.len(), "snapshot source group chosen");

    // 2. Journal and file.
    let mut journal = catchup_io::journal::Journal::open(datadir.journal_dir()?, JOURNAL_NAME)?;
    let n_chunks = super::coordinator::chunk_count(total, chunk_size) as usize;
    let dl_dir = datadir.subdir("download")?;
    let path = dl_dir.join(&identity.archive_name);
    let mut done = vec![false; n_chunks];
    if let Some(bytes) = journal.load()? {
        if let Ok(st) = serde_json::from_slice::<JournalState>(&bytes) {
            let same = st.archive_name == identity.archive_name
                && st.size_bytes == total
                && st.chunk_size_bytes == chunk_size
                && (st.etag.is_none() || identity.etag.is_none() || st.etag == identity.etag)
                && (st.last_modified.is_none()
                    || identity.last_modified.is_none()
                    || st.last_modified == identity.last_modified);
            if same && path.exists() {
                if let Some(d) = hex_to_bitmap(&st.done_hex, n_chunks) {
                    done = d;
                }
            } else {
                tracing::warn!(old = %st.archive_name, new = %identity.archive_name, "source changed since the last run: starting the download over");
                if st.archive_name != identity.archive_name {
                    let _ = std::fs::remove_file(dl_dir.join(&st.archive_name));
                }
            }
        }
    }
    let resumed = done.iter().filter(|d| **d).count() as u32;
    let file_err = |what: &'static str| {
        let path = path.clone();
        move |e: glommio::GlommioError<()>| SyncError::File {
            what,
            path,
            source: e.into(),
        }
    };
    let file = if resumed > 0 {
        OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(&path)
            .await
            .map_err(file_err("open"))?
    } else {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&path)
            .await
            .map_err(file_err("create"))?;
        let aligned = total.div_ceil(ALIGN_BYTES) * ALIGN_BYTES;
        if aligned > 0 {
            f.pre_allocate(aligned, false)
                .await
                .map_err(file_err("pre-allocate"))?;
        }
        f
    };
    let file = Rc::new(file);
    // Reads (feeding the sink, the audit) go through a plain read-only handle.
    let rfile = Rc::new(std::fs::File::open(&path).map_err(|e| SyncError::File {
        what: "open for reading",
        path: path.clone(),
        source: e,
    })?);
    let save_journal =
        |journal: &mut catchup_io::journal::Journal, done: &[bool]| -> Result<(), SyncError> {
            let st = JournalState {
                archive_name: identity.archive_name.clone(),
                size_bytes: total,
                etag: identity.etag.clone(),
                last_modified: identity.last_modified.clone(),
                chunk_size_bytes: chunk_size,
                done_hex: bitmap_to_hex(done),
            };
            journal.save(&serde_json::to_vec(&st).expect("journal state serializes"))?;
            Ok(())
        };
    save_journal(&mut journal, &done)?;

    // 3. Coordinator and fetch tasks.
    let mut coord = Coordinator::new(cfg.coordinator.clone(), total, &done);
    let members = group.members.clone();
    let (tx, rx) = glommio::channels::local_channel::new_bounded::<Msg>(1024);
    let tx = Rc::new(tx);
    let ctx = Rc::new(Ctx {
        file: file.clone(),
        rfile: rfile.clone(),
        members: members.clone(),
        total_bytes: total,
        chunk_size_bytes: chunk_size,
        client: cfg.client.clone(),
        generation: members.iter().map(|_| Cell::new(0)).collect(),
        conns: members.iter().map(|_| RefCell::new(None)).collect(),
        tx: tx.clone(),
        bytes_fetched: Cell::new(0),
    });
    // Which shard fetches for each source; the others learn the set-up and forward events.
    let shard_count = shard.as_ref().map(|s| s.count()).unwrap_or(1);
    // Round-robin over the (sorted) sources: with a handful of sources a hash would often
    // put them all on one shard.
    let owner: Vec<usize> = (0..members.len())
        .map(|i| catchup_shards::ownership::owner_of_range(i as u64, 1, shard_count).0)
        .collect();
    if let Some(sh) = &shard {
        for peer in sh.peers() {
            let start = ShardMsg::Start {
                path: path.clone(),
                members: members.clone(),
                total_bytes: total,
                chunk_size_bytes: chunk_size,
                client: cfg.client.clone(),
            };
            let _ = sh.send(peer, start).await;
        }
        let (sh2, tx2) = (sh.clone(), tx.clone());
        glommio::spawn_local(async move {
            while let Some((_, m)) = sh2.recv().await {
                if let ShardMsg::Event {
                    source,
                    generation,
                    event,
                } = m
                {
                    if tx2
                        .send(Msg {
                            source,
                            generation,
                            event,
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        })
        .detach();
    }
    let mut pending_actions = Vec::new();
    for m in &members {
        let id = coord.add_source();
        pending_actions.push((id, m.ranges));
    }
    let t_download = Instant::now();
    let mut actions: Vec<Action> = Vec::new();
    for (id, ranges) in pending_actions {
        actions.extend(coord.handle(0, Event::SourceReady { source: id, ranges }));
    }
    let mut sink = SinkThread::start(&*sink_factory).map_err(SyncError::Verify)?;
    let mut chunks_fetched = 0u32;
    let mut audit_rounds = 0u32;
    let mut last_progress = Instant::now();
    let mut finished = false;
    let mut interrupted = false;
    let mut verified = None;
    let mut download_ms = 0;
    // Driver loop; bounded by the coordinator reaching Finished or Stuck (every source is
    // dropped after a bounded number of failures) and by the audit round limit.
    loop {
        for a in std::mem::take(&mut actions) {
            match a {
                Action::Fetch {
                    source,
                    first,
                    last,
                    offset,
                    len,
                    whole_file,
                } => {
                    let g = &ctx.generation[source.0 as usize];
                    g.set(g.get() + 1);
                    let gen = g.get();
                    match (&shard, owner[source.0 as usize]) {
                        (Some(sh), o) if o != 0 => {
                            let msg = ShardMsg::Fetch {
                                source: source.0,
                                generation: gen,
                                first,
                                last,
                                offset,
                                len,
                                whole: whole_file,
                            };
                            let _ = sh.send(catchup_shards::ShardId(o), msg).await;
                        }
                        _ => {
                            glommio::spawn_local(fetch_task(
                                ctx.clone(),
                                source.0,
                                gen,
                                first,
                                last,
                                offset,
                                len,
                                whole_file,
                            ))
                            .detach();
                        }
                    }
                }
                Action::Cancel { source } | Action::DropSource { source, .. } => {
                    let g = &ctx.generation[source.0 as usize];
                    g.set(g.get() + 1);
                    ctx.conns[source.0 as usize].borrow_mut().take();
                    if let (Some(sh), o) = (&shard, owner[source.0 as usize]) {
                        if o != 0 {
                            let msg = ShardMsg::Cancel {
                                source: source.0,
                                generation: g.get(),
                            };
                            let _ = sh.send(catchup_shards::ShardId(o), msg).await;
                        }
                    }
                }
                Action::ChunkComplete { .. } => {
                    chunks_fetched += 1;
                    file.fdatasync().await.map_err(file_err("sync"))?;
                    save_journal(&mut journal, coord.done_bitmap())?;
                }
                Action::Finished => finished = true,
                Action::Stuck { chunks_left } => {
                    let reports = source_reports(&coord, &members, &owner);
                    let bad = reports
                        .iter()
                        .filter_map(|r| r.dropped.as_ref().map(|d| format!("{}: {d}", r.url)))
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(SyncError::Stuck { chunks_left, bad });
                }
            }
        }
        // Feed the sink with the grown contiguous prefix, without waiting for it: events
        // keep flowing while it decompresses (the rest goes on the next round).
        feed_sink(
            &mut sink,
            &rfile,
            &path,
            coord.contiguous_prefix_bytes(),
            finished,
        )
        .await?;
        if last_progress.elapsed() >= Duration::from_millis(cfg.progress_interval_ms) {
            last_progress = Instant::now();
            let el = t_download.elapsed().as_secs_f64().max(1e-3);
            let rate = ctx.bytes_fetched.get() as f64 / el;
            let left = total - coord.bytes_done();
            progress(&Progress {
                archive: identity.archive_name.clone(),
                chunks_done: coord.chunks_done(),
                chunks_total: coord.chunk_count(),
                bytes_done: coord.bytes_done(),
                bytes_total: total,
                rate_bytes_per_s: rate,
                eta_s: if rate > 0.0 {
                    Some(left as f64 / rate)
                } else {
                    None
                },
                fed_bytes: sink.fed_bytes,
                sources: source_reports(&coord, &members, &owner),
            });
        }
        if cfg.stop_after_chunks.is_some_and(|n| chunks_fetched >= n) && !finished {
            break;
        }
        if !finished && cfg.interrupt.load(std::sync::atomic::Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        if finished {
            download_ms = t_download.elapsed().as_millis() as u64;
            // 4. Final length, then verification of everything fed.
            file.truncate(total).await.map_err(file_err("truncate"))?;
            file.fdatasync().await.map_err(file_err("sync"))?;
            let got = file.file_size().await.map_err(file_err("stat"))?;
            if got != total {
                return Err(SyncError::Length {
                    got,
                    expected: total,
                });
            }
            let old = std::mem::replace(&mut sink, SinkThread::idle());
            let failure = if old.failed() {
                let e = old.error();
                let _ = old.finish();
                e
            } else {
                match old.finish() {
                    Ok(v) => {
                        verified = Some(v);
                        None
                    }
                    Err(e) => Some(e),
                }
            };
            let Some(err) = failure else { break };
            // 5. Audit: cross-check chunks up to the failure point with other sources.
            audit_rounds += 1;
            if audit_rounds > cfg.max_audit_rounds {
                return Err(SyncError::Verify(err));
            }
            tracing::warn!(error = %err, round = audit_rounds, "verification failed: cross-checking chunks with other sources");
            let bad = audit(&ctx, &coord, &err).await;
            if bad.is_empty() {
                return Err(SyncError::Unauditable(err));
            }
            let now_ms = t_download.elapsed().as_millis() as u64;
            for (src, chunk) in bad {
                actions.extend(coord.handle(now_ms, Event::ChunkBad { source: src, chunk }));
            }
            sink = SinkThread::start(&*sink_factory).map_err(SyncError::Verify)?;
            finished = false;
            continue;
        }
        // Wait for the next event (or a tick).
        let next =
            glommio::timer::timeout(Duration::from_millis(100), async { Ok(rx.recv().await) })
                .await;
        let now_ms = t_download.elapsed().as_millis() as u64;
        match next {
            Ok(Some(msg)) => {
                if ctx
                    .generation
                    .get(msg.source as usize)
                    .is_some_and(|g| g.get() == msg.generation)
                {
                    if let Event::Progress { bytes, .. } = msg.event {
                        ctx.bytes_fetched.set(ctx.bytes_fetched.get() + bytes);
                    }
                    actions.extend(coord.handle(now_ms, msg.event));
                }
            }
            _ => actions.extend(coord.handle(now_ms, Event::Tick)),
        }
        let _ = now_ms;
    }
    // Stop every fetch still running.
    for g in &ctx.generation {
        g.set(g.get() + 1);
    }
    let complete = verified.is_some();
    let sources = source_reports(&coord, &members, &owner);
    for r in &sources {
        if let Some(d) = &r.dropped {
            bad_sources.push(format!("{}: {d}", r.url));
        }
    }
    if !complete {
        drop(sink.finish());
    }
    Ok(SyncReport {
        archive: identity.archive_name.clone(),
        slot: group.name.as_ref().map(|n| n.slot),
        size_bytes: total,
        chunks_total: coord.chunk_count(),
        chunks_resumed: resumed,
        chunks_fetched,
        bytes_fetched: ctx.bytes_fetched.get(),
        download_ms: if complete {
            download_ms
        } else {
            t_download.elapsed().as_millis() as u64
        },
        total_ms: t_start.elapsed().as_millis() as u64,
        complete,
        interrupted,
        verified,
        audit_rounds,
        sources,
        bad_sources,
    })
}

/// Cross-check finished chunks at or before the failure point against every other live
/// ranged source: the bytes most sources agree on win; sources whose bytes lose are liars
/// and every chunk they served is re-fetched. With only the server and one other source in
/// disagreement, the server of the local copy (which failed verification) is blamed.
/// Returns (liar, chunk) pairs; a chunk of unknown origin (finished before a restart)
/// that loses is returned with `SourceId(u32::MAX)`.
async fn audit(ctx: &Ctx, coord: &Coordinator, err: &SinkError) -> Vec<(SourceId, u32)> {
    let n = coord.chunk_count();
    let fail_chunk = if err.offset_bytes >= ctx.total_bytes {
        n - 1
    } else {
        (err.offset_bytes / ctx.chunk_size_bytes) as u32
    };
    let live: Vec<u32> = (0..ctx.members.len() as u32)
        .filter(|&i| {
            let st = coord.source_stats(SourceId(i)).expect("registered");
            st.dropped.is_none() && st.ranges
        })
        .collect();
    let mut liars: Vec<u32> = Vec::new();
    let mut unknown_bad: Vec<u32> = Vec::new();
    // Newest first: the corruption lies at or before the point where it was noticed.
    for chunk in (0..=fail_chunk).rev() {
        let served = coord.served_by(chunk).map(|s| s.0);
        if served.is_some_and(|s| liars.contains(&s)) {
            continue;
        }
        let (off, len) = coord.chunk_span(chunk);
        let Some(range) = ByteRange::from_start_len(off, len) else {
            continue;
        };
        let Ok(local) = read_exact_at(&ctx.rfile, off, len as usize).await else {
            continue;
        };
        // Versions: (bytes, sources that sent them); the local copy counts for its server.
        let mut versions: Vec<(Vec<u8>, Vec<Option<u32>>)> = vec![(local.to_vec(), vec![served])];
        for &o in live
            .iter()
            .filter(|&&o| Some(o) != served && !liars.contains(&o))
        {
            match fetch_range_vec(
                &ctx.members[o as usize].archive,
                range,
                ctx.total_bytes,
                &ctx.client,
            )
            .await
            {
                Ok(v) => match versions.iter_mut().find(|(b, _)| *b == v) {
                    Some((_, who)) => who.push(Some(o)),
                    None => versions.push((v, vec![Some(o)])),
                },
                Err(e) => {
                    tracing::warn!(source = %ctx.members[o as usize].archive, error = %e, "audit fetch failed")
                }
            }
        }
        if versions.len() == 1 {
            continue;
        }
        let votes = |i: usize| versions[i].1.len();
        let best = (0..versions.len())
            .max_by_key(|&i| (votes(i), i == 0))
            .unwrap_or(0);
        let tie = (0..versions.len())
            .filter(|&i| votes(i) == votes(best))
            .count()
            > 1;
        // A tie means no majority: blame the local copy's server (it failed verification).
        let winner = if tie {
            (1..versions.len())
                .find(|&i| votes(i) == votes(best))
                .unwrap_or(best)
        } else {
            best
        };
        for (i, (_, who)) in versions.iter().enumerate() {
            if i == winner {
                continue;
            }
            for w in who {
                match w {
                    Some(s) if !liars.contains(s) => {
                        tracing::warn!(chunk, source = %ctx.members[*s as usize].archive, "source sent bytes other sources disagree with");
                        liars.push(*s);
                    }
                    Some(_) => {}
                    None => unknown_bad.push(chunk),
                }
            }
        }
    }
    let mut bad: Vec<(SourceId, u32)> = Vec::new();
    for &s in &liars {
        for c in 0..n {
            if coord.served_by(c).map(|x| x.0) == Some(s) {
                bad.push((SourceId(s), c));
            }
        }
        if !bad.iter().any(|(x, _)| x.0 == s) {
            // A liar that served nothing kept: still drop it.
            bad.push((SourceId(s), u32::MAX));
        }
    }
    for c in unknown_bad {
        bad.push((SourceId(u32::MAX), c));
    }
    bad.sort();
    bad.dedup();
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bitmap_hex_roundtrip_and_rejects_wrong_length() {
        let b = vec![true, false, true, true, false, false, false, false, true];
        let h = bitmap_to_hex(&b);
        assert_eq!(hex_to_bitmap(&h, b.len()), Some(b.clone()));
        assert_eq!(hex_to_bitmap(&h, 20), None);
        assert_eq!(hex_to_bitmap("zz", 1), None);
    }

    proptest! {
        #[test]
        fn journal_state_from_random_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512), n in 0usize..5000) {
            let _ = serde_json::from_slice::<JournalState>(&data);
            if let Ok(t) = std::str::from_utf8(&data) {
                let _ = hex_to_bitmap(t, n);
            }
        }

        #[test]
        fn bitmap_roundtrip(b in proptest::collection::vec(any::<bool>(), 0..3000)) {
            prop_assert_eq!(hex_to_bitmap(&bitmap_to_hex(&b), b.len()), Some(b));
        }
    }
}

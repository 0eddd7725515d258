//! Fetching: ranged GETs of chunk runs, staged in DMA buffers and written at their file
//! offsets, reporting progress and finished chunks; run on shard 0 or on the shard that
//! owns the source.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use catchup_http::{BodyDecoder, ByteRange, Method, Request};
use glommio::io::{DmaFile, OpenOptions};

use crate::solana::download::client::{check_range_reply, ClientConfig, ClientError, Conn};
use crate::solana::download::coordinator::{Event, FailReason, SourceId};
use crate::solana::download::source::ProbedSource;

use super::{ShardMsg, ALIGN_BYTES, STAGE_BYTES};

/// A fetching shard: runs the fetches shard 0 sends for the sources this shard owns and
/// forwards their events back.
pub(super) async fn fetch_worker(shard: Rc<catchup_shards::Shard<ShardMsg>>) {
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
        let Some((from, msg)) = shard.recv().await else {
            break;
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
                        let rfile = match super::feed::open_for_reads(&path).await {
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

/// How often a fetch waiting on our own disk says so (well under any stall timeout).
const LOCAL_WAIT_EVERY: Duration = Duration::from_millis(250);

/// Write `buf` at `pos` of the archive. While the write waits on our own disk (a busy
/// or congested device), the driver is told every [`LOCAL_WAIT_EVERY`] so that the
/// source's stall clock does not run: the source is not the one that is slow.
async fn write_telling_waits(
    ctx: &Ctx,
    source: u32,
    generation: u64,
    buf: glommio::io::DmaBuffer,
    pos: u64,
) -> glommio::Result<usize, ()> {
    let write = ctx.file.write_at(buf, pos);
    let tell = async {
        loop {
            glommio::timer::sleep(LOCAL_WAIT_EVERY).await;
            let _ = ctx
                .tx
                .send(Msg {
                    source,
                    generation,
                    event: Event::LocalWait {
                        source: SourceId(source),
                    },
                })
                .await;
        }
    };
    futures_lite::future::or(write, tell).await
}

/// Messages from fetch tasks to the driver loop, tagged with the fetch generation.
pub(super) struct Msg {
    pub(super) source: u32,
    pub(super) generation: u64,
    pub(super) event: Event,
}

pub(super) struct Ctx {
    pub(super) file: Rc<DmaFile>,
    pub(super) rfile: Rc<glommio::io::BufferedFile>,
    pub(super) members: Vec<ProbedSource>,
    pub(super) total_bytes: u64,
    pub(super) chunk_size_bytes: u64,
    pub(super) client: ClientConfig,
    pub(super) generation: Vec<Cell<u64>>,
    pub(super) conns: Vec<RefCell<Option<Conn>>>,
    pub(super) tx: Rc<glommio::channels::local_channel::LocalSender<Msg>>,
    pub(super) bytes_fetched: Cell<u64>,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn fetch_task(
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
            write_telling_waits(ctx, source, generation, full, stage_pos)
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

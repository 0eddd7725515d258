//! The driver on shard 0: discovery and the choice of the source group, the journal and
//! the archive file, then the coordinator loop that dispatches fetches, feeds the sink,
//! checks the final length and runs audit rounds, ending in the [`SyncReport`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::io::OpenOptions;

use crate::solana::download::coordinator::{Action, Coordinator, Event, SourceId};
use crate::solana::download::sink::SinkFactory;
use crate::solana::download::source::{choose_group, ProbedSource, SourceGroup};

use super::audit::audit;
use super::discover::{discover_rpc, probe_source};
use super::feed::{feed_sink, open_for_reads, SinkThread};
use super::fetch::{fetch_task, Ctx, Msg};
use super::resume::{bitmap_to_hex, hex_to_bitmap, JournalState};
use super::{
    Progress, ProgressFn, ShardMsg, SourceReport, SyncConfig, SyncError, SyncReport, ALIGN_BYTES,
};
use crate::solana::download::sink::{SinkError, HASH_MISMATCH};

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

pub(super) async fn sync_async(
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
    if let Some(want) = &cfg.expected_archive {
        probes.retain(|p| {
            let ok = p.name.as_ref().is_some_and(|n| want.matches(n));
            if !ok {
                bad_sources.push(format!(
                    "{}: serves {}, not the trusted {}",
                    p.archive,
                    p.identity.archive_name,
                    want.file_name()
                ));
            }
            ok
        });
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
    let mut group = group;
    if cfg.rank_by_latency {
        group.members.sort_by_key(|m| m.latency_ms);
    }
    *cfg.archive_name.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(group.identity.archive_name.clone());
    let identity = group.identity.clone();
    let total = identity.size_bytes;
    // 2. Journal and file.
    let mut journal =
        catchup_io::journal::Journal::open(datadir.journal_dir()?, &cfg.journal_name)?;
    let saved: Option<JournalState> = journal
        .load()?
        .and_then(|bytes| serde_json::from_slice::<JournalState>(&bytes).ok());
    // Chunk size 0 means automatic: the size a download of this archive already started
    // with (so its finished chunks stay valid), else one fitted to the archive and sources.
    let chunk_size = match cfg.coordinator.chunk_size_bytes {
        0 => saved
            .as_ref()
            .filter(|st| {
                st.archive_name == identity.archive_name
                    && st.size_bytes == total
                    && st.chunk_size_bytes > 0
            })
            .map(|st| st.chunk_size_bytes)
            .unwrap_or_else(|| {
                super::super::coordinator::auto_chunk_size(total, group.members.len())
            }),
        n => n,
    };
    tracing::info!(archive = %identity.archive_name, size_bytes = total, sources = group.members.len(), chunk_size_bytes = chunk_size, "snapshot source group chosen");
    let n_chunks = super::super::coordinator::chunk_count(total, chunk_size) as usize;
    let dl_dir = datadir.subdir(&cfg.download_subdir)?;
    let path = dl_dir.join(&identity.archive_name);
    let mut done = vec![false; n_chunks];
    if let Some(st) = saved {
        {
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
    let rfile = Rc::new(open_for_reads(&path).await.map_err(|e| SyncError::File {
        what: "open for reading",
        path: path.clone(),
        source: e,
    })?);
    // The journal's bytes for a done-bitmap (saved off the executor: write, fsync, rename).
    let journal_bytes = |done: &[bool]| -> Vec<u8> {
        let st = JournalState {
            archive_name: identity.archive_name.clone(),
            size_bytes: total,
            etag: identity.etag.clone(),
            last_modified: identity.last_modified.clone(),
            chunk_size_bytes: chunk_size,
            done_hex: bitmap_to_hex(done),
        };
        serde_json::to_vec(&st).expect("journal state serializes")
    };
    journal.save_off_executor(journal_bytes(&done)).await?;

    // 3. Coordinator and fetch tasks.
    let mut ccfg = cfg.coordinator.clone();
    ccfg.chunk_size_bytes = chunk_size;
    let mut coord = Coordinator::new(ccfg, total, &done);
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
    let mut sink = SinkThread::start(sink_factory.clone(), cfg.helper_cores.clone())
        .await
        .map_err(SyncError::Verify)?;
    let mut chunks_fetched = 0u32;
    let mut audit_rounds = 0u32;
    let mut audit_fetches = 0u32;
    let mut audit_cost = crate::solana::download::locate::AuditCost::default();
    let mut audit_bisected_rounds = 0u32;
    let mut last_progress = Instant::now();
    let mut finished = false;
    let mut interrupted = false;
    let mut verified = None;
    let mut download_ms = 0;
    // Driver loop; bounded by the coordinator reaching Finished or Stuck (every source is
    // dropped after a bounded number of failures) and by the audit round limit.
    loop {
        for a in std::mem::take(&mut actions) {
            if !matches!(a, Action::ChunkComplete { .. }) {
                tracing::debug!(ms = t_download.elapsed().as_millis() as u64, action = ?a, "download action");
            }
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
                    journal
                        .save_off_executor(journal_bytes(coord.done_bitmap()))
                        .await?;
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
                let _ = old.finish().await;
                e
            } else {
                match old.finish().await {
                    Ok(v) => {
                        verified = Some(v);
                        None
                    }
                    Err(e) => Some(e),
                }
            };
            let Some(err) = failure else { break };
            let forged = |err: SinkError| {
                if err.message.contains(HASH_MISMATCH) {
                    SyncError::Forged {
                        what: err.message,
                        served_by: members.iter().map(|m| m.given.clone()).collect(),
                    }
                } else {
                    SyncError::Unauditable(err)
                }
            };
            // 5. Audit: cross-check chunks up to the failure point with other sources.
            audit_rounds += 1;
            if audit_rounds > cfg.max_audit_rounds {
                if err.message.contains(HASH_MISMATCH) {
                    return Err(forged(err));
                }
                return Err(SyncError::Verify(err));
            }
            tracing::warn!(error = %err, round = audit_rounds, "verification failed: cross-checking chunks with other sources");
            let (bad, cost) = audit(&ctx, &coord, &err, cfg.audit_bisect).await;
            audit_fetches += cost.chunk_fetches;
            audit_cost.bytes_refetched += cost.bytes_refetched;
            audit_cost.digest_queries += cost.digest_queries;
            audit_bisected_rounds += u32::from(cost.bisected);
            if bad.is_empty() {
                return Err(forged(err));
            }
            let now_ms = t_download.elapsed().as_millis() as u64;
            for (src, chunk) in bad {
                actions.extend(coord.handle(now_ms, Event::ChunkBad { source: src, chunk }));
            }
            sink = SinkThread::start(sink_factory.clone(), cfg.helper_cores.clone())
                .await
                .map_err(SyncError::Verify)?;
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
        drop(sink.finish().await);
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
        audit_fetches,
        audit_bytes_refetched: audit_cost.bytes_refetched,
        audit_digest_queries: audit_cost.digest_queries,
        audit_bisected_rounds,
        lying_sources: sources
            .iter()
            .filter_map(|r| {
                r.dropped
                    .as_deref()
                    .filter(|d| d.starts_with("served bad bytes"))
                    .map(|d| format!("{}: {d}", r.url))
            })
            .collect(),
        sources,
        bad_sources,
    })
}

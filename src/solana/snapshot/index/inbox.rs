//! A shard's command loop: writes and scans the files handed to it, ships index batches,
//! answers totals after the marker barrier, and serves lookups.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use catchup_solana::appendvec::{AppendVecScanner, ScanError};

use super::hash::{resolve_pending_dma, retract_losers_dma};
use super::load::{open_sink, OpenFile};
use super::mesh::send_batches;
use super::shard::State;
use super::{AccountRecord, Cmd, IndexEntry, Peer, INDEX_BATCH_ENTRIES};

/// Serve the feeding thread's commands until the inbox closes.
pub(super) async fn inbox_task(
    state: Rc<RefCell<State>>,
    inbox: flume::Receiver<Cmd>,
    to_peers: Vec<Option<flume::Sender<Peer>>>,
    epochs: flume::Receiver<u64>,
    queued: Arc<AtomicU64>,
    dma: bool,
    gate: Option<Rc<glommio::sync::Semaphore>>,
) {
    let shards = state.borrow().shards;
    let mut out: Vec<Vec<IndexEntry>> = (0..shards).map(|_| Vec::new()).collect();
    let mut cur: Option<OpenFile> = None;
    let mut mode = String::new();
    loop {
        let waited = std::time::Instant::now();
        let Ok(cmd) = inbox.recv_async().await else {
            break;
        };
        state.borrow_mut().idle_ns += waited.elapsed().as_nanos() as u64;
        match cmd {
            Cmd::SetDir { gen, dir } => {
                state.borrow_mut().dirs.insert(gen, dir);
            }
            Cmd::Begin {
                gen,
                slot,
                id,
                declared_bytes,
                current_len,
            } => {
                let path = state.borrow().path(gen, slot, id);
                let Some(path) = path else {
                    state.borrow_mut().fail(format!(
                        "accounts/{slot}.{id}: no directory for snapshot {gen}"
                    ));
                    continue;
                };
                let sink = open_sink(&path, declared_bytes, dma, &mut mode).await;
                let mut st = state.borrow_mut();
                st.write_mode.clone_from(&mode);
                let mut f = OpenFile {
                    gen,
                    slot,
                    id,
                    path,
                    declared_bytes,
                    received_bytes: 0,
                    sink: None,
                    scanner: None,
                    failed: false,
                };
                match sink {
                    Ok(s) => f.sink = Some(s),
                    Err(e) => {
                        st.fail(e);
                        f.failed = true;
                    }
                }
                if let Some(len) = current_len {
                    match AppendVecScanner::new(len) {
                        Ok(s) => f.scanner = Some(s),
                        Err(e) => {
                            st.fail(format!("accounts/{slot}.{id}: {e}"));
                            f.failed = true;
                        }
                    }
                }
                cur = Some(f);
            }
            Cmd::Data(bytes) => {
                let n = bytes.len() as u64;
                if let Some(f) = cur.as_mut().filter(|f| !f.failed) {
                    f.received_bytes += n;
                    if f.received_bytes > f.declared_bytes {
                        f.failed = true;
                        state.borrow_mut().fail(format!(
                            "write {}: {} bytes exceed the declared size of {}",
                            f.path.display(),
                            f.received_bytes,
                            f.declared_bytes
                        ));
                    } else {
                        // Scan while the bytes are in cache, then write them.
                        if let Some(sc) = f.scanner.as_mut() {
                            let t = std::time::Instant::now();
                            let mut st = state.borrow_mut();
                            let (gen, slot, id) = (f.gen, f.slot, f.id);
                            let r = sc.push::<()>(&bytes, |a| {
                                st.scanned(&a, gen, slot, id, &mut out);
                                Ok(())
                            });
                            if let Err(ScanError::Entry(e)) = r {
                                st.fail(format!("accounts/{slot}.{id}: {e}"));
                                f.failed = true;
                            }
                            st.scan_ns += t.elapsed().as_nanos() as u64;
                        }
                        if let Some(sink) = f.sink.as_mut() {
                            let t = std::time::Instant::now();
                            let r = sink.write(&bytes).await;
                            let mut st = state.borrow_mut();
                            st.write_ns += t.elapsed().as_nanos() as u64;
                            if let Err(e) = r {
                                st.fail(e);
                                f.failed = true;
                            }
                        }
                    }
                }
                queued.fetch_sub(n, Ordering::AcqRel);
                let t = std::time::Instant::now();
                let sent = send_batches(&to_peers, &mut out, INDEX_BATCH_ENTRIES).await;
                {
                    let mut st = state.borrow_mut();
                    st.mesh_wait_ns += t.elapsed().as_nanos() as u64;
                    if sent.is_err() {
                        st.fail("index shard link closed".into());
                    }
                }
                // Let the executor submit the DMA writes queued meanwhile (a no-op
                // outside glommio).
                glommio::yield_if_needed().await;
            }
            Cmd::End { fsync } => {
                let Some(mut f) = cur.take() else { continue };
                if f.failed {
                    continue;
                }
                if f.received_bytes != f.declared_bytes {
                    state.borrow_mut().fail(format!(
                        "write {}: {} bytes written, declared size is {}",
                        f.path.display(),
                        f.received_bytes,
                        f.declared_bytes
                    ));
                    continue;
                }
                if let Some(sink) = f.sink.take() {
                    if let Err(e) = sink.finish(fsync).await {
                        state.borrow_mut().fail(e);
                        continue;
                    }
                }
                {
                    let mut st = state.borrow_mut();
                    st.files_written += 1;
                    if let Some(sc) = &f.scanner {
                        if let Err(e) = sc.finish() {
                            st.fail(format!("accounts/{}.{}: {e}", f.slot, f.id));
                        }
                    }
                }
                if gate.is_some() {
                    // The file can be read back: the owners' background work waiting
                    // on it goes on. Its entries go first, so that an owner that has
                    // none of them when it is told has none to come.
                    if send_batches(&to_peers, &mut out, 1).await.is_err() {
                        state.borrow_mut().fail("index shard link closed".into());
                    }
                    state.borrow_mut().file_complete(f.gen, f.slot, f.id);
                    for tx in to_peers.iter().flatten() {
                        let done = Peer::FileDone {
                            gen: f.gen,
                            slot: f.slot,
                            id: f.id,
                        };
                        if tx.send_async(done).await.is_err() {
                            state.borrow_mut().fail("index shard link closed".into());
                        }
                    }
                }
            }
            Cmd::Scan {
                gen,
                slot,
                id,
                current_len,
            } => {
                state
                    .borrow_mut()
                    .scan_mapped(gen, slot, id, current_len, &mut out);
                if send_batches(&to_peers, &mut out, INDEX_BATCH_ENTRIES)
                    .await
                    .is_err()
                {
                    state.borrow_mut().fail("index shard link closed".into());
                }
            }
            Cmd::Totals { epoch, reply } => {
                // Everything queued before this request is done; flush, mark, wait for
                // every peer's marker, then answer.
                if send_batches(&to_peers, &mut out, 1).await.is_err() {
                    state.borrow_mut().fail("index shard link closed".into());
                }
                for tx in to_peers.iter().flatten() {
                    let _ = tx.send_async(Peer::Marker(epoch)).await;
                }
                if shards > 1 {
                    loop {
                        match epochs.recv_async().await {
                            Ok(e) if e >= epoch => break,
                            Ok(_) => {}
                            Err(_) => {
                                state.borrow_mut().fail("index shard link closed".into());
                                break;
                            }
                        }
                    }
                }
                if dma {
                    // No background batch runs beside this: what it took from the
                    // lists would be missing from these totals.
                    let _batch = match &gate {
                        Some(g) => g.acquire_permit(1).await.ok(),
                        None => None,
                    };
                    let t = std::time::Instant::now();
                    state.borrow_mut().drain_waiting();
                    resolve_pending_dma(&state).await;
                    retract_losers_dma(&state).await;
                    state.borrow_mut().retract_tail_ns += t.elapsed().as_nanos() as u64;
                }
                let t = state.borrow_mut().totals();
                let _ = reply.send(t);
            }
            Cmd::Get(key, reply) => {
                let r = state.borrow_mut().record(&key);
                let _ = reply.send(r);
            }
            Cmd::All(reply) => {
                let mut v: Vec<AccountRecord> = state.borrow_mut().all_records();
                v.sort_by_key(|a| a.pubkey);
                let _ = reply.send(v);
            }
        }
    }
    // Closing our links lets the peers' mesh tasks end; the background task ends too.
    drop(to_peers);
    let mut st = state.borrow_mut();
    st.closing = true;
    if let Some(w) = st.wake.take() {
        let _ = w.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{file, stream};
    use super::super::ShardSet;

    #[test]
    fn bad_entry_and_size_mismatch_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = ShardSet::start(2).unwrap();
        set.set_dir(0, dir.path()).unwrap();
        let mut bad = file(&[([1; 32], 5, b"x")]);
        bad[96] = 7; // executable byte
        stream(&mut set, (1, 0), &bad, 50, false);
        let t = set.totals().unwrap();
        let e = t.iter().find_map(|t| t.error.clone()).unwrap();
        assert!(
            e.contains("accounts/1.0") && e.contains("executable"),
            "{e}"
        );
        assert!(set.error().is_some());

        let mut set = ShardSet::start(2).unwrap();
        set.set_dir(0, dir.path()).unwrap();
        set.begin_file(0, 2, 0, 10, None).unwrap();
        set.file_data(vec![0; 4]).unwrap();
        set.end_file(false).unwrap();
        let t = set.totals().unwrap();
        let e = t.iter().find_map(|t| t.error.clone()).unwrap();
        assert!(e.contains("declared size is 10"), "{e}");
    }
}

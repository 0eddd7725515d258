//! Feeding the archive sink: the sink (decompress, unpack, index) runs on its own thread
//! behind a bounded queue, fed the contiguous prefix of the archive read back from disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::solana::download::sink::{ArchiveSink, SinkError, SinkFactory};

use super::{SyncError, STAGE_BYTES};

const SINK_QUEUE_PIECES: usize = 16;

/// The CPUs the process may use, as seen before any shard pinned its thread.
pub(super) fn unpinned_cpus() -> Vec<usize> {
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

/// Hand the archive bytes `[sink.fed_bytes, prefix)` to the sink. With `wait` every byte
/// is queued before returning; otherwise at most what the queue takes now (bounded).
pub(super) async fn feed_sink(
    sink: &mut SinkThread,
    rfile: &glommio::io::BufferedFile,
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

/// Read `len` bytes at `pos` through io_uring (buffered reads: DMA reads of this file fail
/// with EOPNOTSUPP on some kernels), so the executor never waits in a read syscall.
pub(super) async fn read_exact_at(
    file: &glommio::io::BufferedFile,
    pos: u64,
    len: usize,
) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let got = file
            .read_at(pos + out.len() as u64, len - out.len())
            .await
            .map_err(std::io::Error::from)?;
        if got.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("short read at {} of {len} bytes", pos + out.len() as u64),
            ));
        }
        out.extend_from_slice(&got);
    }
    Ok(out)
}

/// Open the archive for reads (feeding the sink, the audit).
pub(super) async fn open_for_reads(
    path: &std::path::Path,
) -> Result<glommio::io::BufferedFile, std::io::Error> {
    glommio::io::BufferedFile::open(path)
        .await
        .map_err(std::io::Error::from)
}

/// The sink on its own thread, fed through a bounded queue. The shard awaits the queue
/// and the thread's start and end; it never blocks on them.
pub(super) struct SinkThread {
    pub(super) tx: Option<flume::Sender<Vec<u8>>>,
    pub(super) failed: Arc<AtomicBool>,
    pub(super) error: Arc<Mutex<Option<SinkError>>>,
    /// The thread's result, sent when it ends.
    done: Option<flume::Receiver<Result<serde_json::Value, SinkError>>>,
    /// Bytes handed over (queued, or kept in `pending`).
    pub(super) fed_bytes: u64,
    pub(super) pending: Option<Vec<u8>>,
}

impl SinkThread {
    /// Make and run the sink on a thread allowed on `helper_cores` (the command's cores;
    /// `None`: the CPUs the process had before the shards were pinned, since a thread
    /// started from a pinned shard inherits its single CPU). Its decompression workers
    /// inherit that placement.
    pub(super) async fn start(
        factory: Arc<SinkFactory>,
        helper_cores: Option<Vec<usize>>,
    ) -> Result<SinkThread, SinkError> {
        let cpus = helper_cores.unwrap_or_else(unpinned_cpus);
        let (tx, rx) = flume::bounded::<Vec<u8>>(SINK_QUEUE_PIECES);
        let (ready_tx, ready_rx) = flume::bounded::<Result<(), SinkError>>(1);
        let (done_tx, done_rx) = flume::bounded(1);
        let failed = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let (f2, e2) = (failed.clone(), error.clone());
        std::thread::Builder::new()
            .name("snapshot-sink".into())
            .spawn(move || {
                set_affinity(&cpus);
                let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| factory()))
                    .unwrap_or_else(|_| {
                        Err(SinkError {
                            offset_bytes: 0,
                            message: "creating the sink panicked".into(),
                        })
                    });
                let mut sink: Box<dyn ArchiveSink> = match made {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let run = std::panic::AssertUnwindSafe(move || {
                    for piece in rx.iter() {
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
                });
                let r = std::panic::catch_unwind(run).unwrap_or_else(|_| {
                    Err(SinkError {
                        offset_bytes: u64::MAX,
                        message: "the sink thread panicked".into(),
                    })
                });
                let _ = done_tx.send(r);
            })
            .map_err(|e| SinkError {
                offset_bytes: 0,
                message: format!("cannot start the sink thread: {e}"),
            })?;
        match ready_rx.recv_async().await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(SinkError {
                    offset_bytes: 0,
                    message: "the sink thread ended before the sink was made".into(),
                })
            }
        }
        Ok(SinkThread {
            tx: Some(tx),
            failed,
            error,
            done: Some(done_rx),
            fed_bytes: 0,
            pending: None,
        })
    }

    /// A sink that is not running (between a failed verification and the next start).
    pub(super) fn idle() -> SinkThread {
        SinkThread {
            tx: None,
            failed: Arc::new(AtomicBool::new(false)),
            error: Arc::new(Mutex::new(None)),
            done: None,
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
            Err(flume::TrySendError::Full(p)) => {
                self.pending = Some(p);
                false
            }
            // A stopped sink thread: the failure is reported by `finish`.
            Err(flume::TrySendError::Disconnected(_)) => true,
        }
    }

    /// Wait (yielding to the executor) until the kept piece is in the queue.
    async fn flush_pending_wait(&mut self) {
        let (Some(tx), Some(piece)) = (&self.tx, self.pending.take()) else {
            return;
        };
        // Bounded by the sink's progress; a stopped sink thread fails the send at once
        // (its failure is reported by `finish`).
        let _ = tx.send_async(piece).await;
    }

    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Close the queue and await the sink's result.
    pub(super) async fn finish(mut self) -> Result<serde_json::Value, SinkError> {
        drop(self.tx.take());
        let Some(done) = self.done.take() else {
            return Err(SinkError {
                offset_bytes: 0,
                message: "the sink is not running".into(),
            });
        };
        done.recv_async().await.unwrap_or_else(|_| {
            Err(SinkError {
                offset_bytes: u64::MAX,
                message: "the sink thread ended without a result".into(),
            })
        })
    }

    pub(super) fn error(&self) -> Option<SinkError> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

//! The handle the pipeline holds: starts the shards (glommio runtime or pinned threads),
//! hands each file to the least-loaded shard, and asks for totals and lookups.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use catchup_shards::ownership::owner_of_key;

use super::mesh::make_parts;
use super::shard::{shard_main, ShardStart, SharedError};
use super::{
    AccountRecord, Cmd, IndexConfig, ShardGone, ShardTotals, INDEX_RUNTIME_ENV,
    MIN_SHARD_INBOX_CAPACITY,
};

/// Handles to the running shards: one glommio executor per shard from
/// `catchup_shards::run` (pinned by the runtime; files written with DMA), or, where the
/// runtime cannot start (no io_uring, locked-memory limit), one plain thread per shard
/// pinned to core `allowed_cores[i % cores]` (files written with `write(2)`).
pub struct ShardSet {
    inboxes: Vec<flume::Sender<Cmd>>,
    queued: Vec<Arc<AtomicU64>>,
    threads: Vec<JoinHandle<()>>,
    runtime: &'static str,
    shared_error: Arc<SharedError>,
    epoch: u64,
    next_rr: usize,
    /// Writer shard of the file being streamed.
    writer: Option<usize>,
    inbox_capacity: usize,
    send_wait_ns: AtomicU64,
}

/// Pin the calling thread to one core (best effort: a failure leaves it unpinned).
pub(crate) fn pin_to_core(core: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in bounds for
    // core < CPU_SETSIZE, checked here; sched_setaffinity(0, ..) affects this thread only.
    unsafe {
        if core >= libc::CPU_SETSIZE as usize {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

impl ShardSet {
    /// Start `shards` workers (at least one): on the `catchup_shards` glommio runtime (one
    /// pinned executor per shard) when it can start here, else on plain pinned threads.
    pub fn start(shards: usize) -> std::io::Result<Self> {
        Self::start_with_queue(shards, MIN_SHARD_INBOX_CAPACITY)
    }

    /// [`ShardSet::start`] with `inbox_capacity` file pieces of [`WRITE_CHUNK_BYTES`]
    /// queued per shard at most (see [`streaming_bytes`]).
    ///
    /// [`WRITE_CHUNK_BYTES`]: super::WRITE_CHUNK_BYTES
    /// [`streaming_bytes`]: super::streaming_bytes
    pub fn start_with_queue(shards: usize, inbox_capacity: usize) -> std::io::Result<Self> {
        Self::start_placed(shards, inbox_capacity, None)
    }

    /// [`ShardSet::start_with_queue`] with shard `i` pinned to `cores[i % cores.len()]`
    /// (the cores the command's placement gives the index shards); `None`: the CPUs this
    /// process may use.
    pub fn start_placed(
        shards: usize,
        inbox_capacity: usize,
        cores: Option<Vec<usize>>,
    ) -> std::io::Result<Self> {
        Self::start_configured(shards, inbox_capacity, cores, IndexConfig::default())
    }

    /// [`ShardSet::start_placed`] with index settings (open memory maps per shard).
    pub fn start_configured(
        shards: usize,
        inbox_capacity: usize,
        cores: Option<Vec<usize>>,
        config: IndexConfig,
    ) -> std::io::Result<Self> {
        let shards = shards.max(1);
        let cores = cores
            .filter(|c| !c.is_empty())
            .unwrap_or_else(catchup_shards::allowed_cores);
        let cap = inbox_capacity.max(MIN_SHARD_INBOX_CAPACITY);
        // The glommio shard runtime (io_uring DMA writes and reads) unless told otherwise;
        // plain pinned threads where it cannot start (no io_uring, locked-memory limit).
        let use_runtime = std::env::var(INDEX_RUNTIME_ENV).as_deref() != Ok("threads");
        let started = if use_runtime {
            Self::start_on_runtime(shards, cap, cores.clone(), &config)
        } else {
            Err(format!("{INDEX_RUNTIME_ENV}=threads"))
        };
        match started {
            Ok(set) => Ok(set),
            Err(reason) => {
                tracing::debug!(%reason, "snapshot index: shard runtime unavailable, using plain threads");
                Self::start_on_threads_with(shards, cap, &cores, &config)
            }
        }
    }

    fn assemble(
        inboxes: Vec<flume::Sender<Cmd>>,
        queued: Vec<Arc<AtomicU64>>,
        threads: Vec<JoinHandle<()>>,
        runtime: &'static str,
        shared_error: Arc<SharedError>,
        inbox_capacity: usize,
    ) -> Self {
        ShardSet {
            inbox_capacity,
            send_wait_ns: AtomicU64::new(0),
            inboxes,
            queued,
            threads,
            runtime,
            shared_error,
            epoch: 0,
            next_rr: 0,
            writer: None,
        }
    }

    fn start_on_runtime(
        shards: usize,
        inbox_capacity: usize,
        cores: Vec<usize>,
        config: &IndexConfig,
    ) -> Result<Self, String> {
        let (inboxes, queued, starts, shared_error) = make_parts(shards, inbox_capacity, config);
        let starts: Vec<Option<ShardStart>> = starts.into_iter().map(Some).collect();
        let starts = Arc::new(Mutex::new(starts));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(shards + 1);
        let failed_tx = ready_tx.clone();
        let cfg = catchup_shards::RuntimeConfig {
            handle_signals: false,
            name: "snap-index".into(),
            channel_capacity: 1,
            cores: Some(cores),
            ..catchup_shards::RuntimeConfig::new(shards)
        };
        let thread = std::thread::Builder::new()
            .name("snap-index-runtime".into())
            .spawn(move || {
                let r = catchup_shards::run(&cfg, move |shard: catchup_shards::Shard<()>| {
                    let starts = starts.clone();
                    let ready = ready_tx.clone();
                    async move {
                        let id = shard.id().0;
                        let start = starts
                            .lock()
                            .ok()
                            .and_then(|mut v| v.get_mut(id).and_then(Option::take));
                        let Some(start) = start else {
                            let _ = ready.send(Err(format!("shard {id}: no inbox")));
                            return;
                        };
                        let _ = ready.send(Ok(()));
                        drop(ready);
                        shard_main(start, true).await;
                    }
                });
                if let Err(e) = r {
                    let _ = failed_tx.send(Err(e.to_string()));
                }
            })
            .map_err(|e| e.to_string())?;
        let mut started = 0;
        while started < shards {
            match ready_rx.recv() {
                Ok(Ok(())) => started += 1,
                Ok(Err(e)) => {
                    drop(inboxes);
                    let _ = thread.join();
                    return Err(e);
                }
                Err(_) => {
                    drop(inboxes);
                    let _ = thread.join();
                    return Err("shard runtime stopped before starting".into());
                }
            }
        }
        Ok(Self::assemble(
            inboxes,
            queued,
            vec![thread],
            "glommio",
            shared_error,
            inbox_capacity,
        ))
    }

    #[cfg(test)]
    pub(super) fn start_on_threads(
        shards: usize,
        inbox_capacity: usize,
        cores: &[usize],
    ) -> std::io::Result<Self> {
        Self::start_on_threads_with(shards, inbox_capacity, cores, &IndexConfig::default())
    }

    pub(super) fn start_on_threads_with(
        shards: usize,
        inbox_capacity: usize,
        cores: &[usize],
        config: &IndexConfig,
    ) -> std::io::Result<Self> {
        let (inboxes, queued, starts, shared_error) = make_parts(shards, inbox_capacity, config);
        let mut threads = Vec::with_capacity(shards);
        for start in starts {
            let core = cores.get(start.shard % cores.len().max(1)).copied();
            let t = std::thread::Builder::new()
                .name(format!("snap-index-{}", start.shard))
                .spawn(move || {
                    if let Some(core) = core {
                        pin_to_core(core);
                    }
                    futures_lite::future::block_on(shard_main(start, false))
                })?;
            threads.push(t);
        }
        Ok(Self::assemble(
            inboxes,
            queued,
            threads,
            "threads",
            shared_error,
            inbox_capacity,
        ))
    }

    /// Which runtime the shards run on: `glommio` or `threads`.
    pub fn runtime(&self) -> &'static str {
        self.runtime
    }

    pub fn count(&self) -> usize {
        self.inboxes.len()
    }

    /// File pieces each shard may have queued.
    pub fn inbox_capacity(&self) -> usize {
        self.inbox_capacity
    }

    /// The first storage error any shard saw (write, scan), if any.
    pub fn error(&self) -> Option<String> {
        self.shared_error.get()
    }

    fn send(&self, shard: usize, cmd: Cmd) -> Result<(), ShardGone> {
        let cmd = match self.inboxes[shard].try_send(cmd) {
            Ok(()) => return Ok(()),
            Err(flume::TrySendError::Disconnected(_)) => return Err(ShardGone),
            Err(flume::TrySendError::Full(cmd)) => cmd,
        };
        // Back-pressure: the shard is busy.
        let t = std::time::Instant::now();
        let r = self.inboxes[shard].send(cmd).map_err(|_| ShardGone);
        self.send_wait_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r
    }

    /// Time the feeding thread spent blocked on full shard inboxes.
    pub fn send_wait_ms(&self) -> u64 {
        self.send_wait_ns.load(Ordering::Relaxed) / 1_000_000
    }

    /// Tell every shard where the account files of snapshot generation `gen` live.
    pub fn set_dir(&self, gen: u32, accounts_dir: &Path) -> Result<(), ShardGone> {
        for s in 0..self.count() {
            self.send(
                s,
                Cmd::SetDir {
                    gen,
                    dir: accounts_dir.to_path_buf(),
                },
            )?;
        }
        Ok(())
    }

    /// The shard with the fewest queued bytes (round-robin among equals).
    fn least_loaded(&mut self) -> usize {
        let n = self.count();
        let start = self.next_rr % n;
        self.next_rr = self.next_rr.wrapping_add(1);
        (0..n)
            .map(|i| (start + i) % n)
            .min_by_key(|&s| self.queued[s].load(Ordering::Acquire))
            .unwrap_or(0)
    }

    /// Start streaming `accounts/<slot>.<id>` (of `declared_bytes`) to a writer shard,
    /// whose index is returned; with `current_len` it is indexed as its bytes arrive.
    pub fn begin_file(
        &mut self,
        gen: u32,
        slot: u64,
        id: u64,
        declared_bytes: u64,
        current_len: Option<u64>,
    ) -> Result<usize, ShardGone> {
        let w = self.least_loaded();
        self.writer = Some(w);
        self.send(
            w,
            Cmd::Begin {
                gen,
                slot,
                id,
                declared_bytes,
                current_len,
            },
        )?;
        Ok(w)
    }

    /// The next piece of the current file (blocks while the writer shard is busy).
    pub fn file_data(&self, bytes: Vec<u8>) -> Result<(), ShardGone> {
        let w = self.writer.ok_or(ShardGone)?;
        self.queued[w].fetch_add(bytes.len() as u64, Ordering::AcqRel);
        self.send(w, Cmd::Data(bytes))
    }

    /// The current file is complete.
    pub fn end_file(&mut self, fsync: bool) -> Result<(), ShardGone> {
        let w = self.writer.take().ok_or(ShardGone)?;
        self.send(w, Cmd::End { fsync })
    }

    /// Index a file written earlier (its `accounts_current_len` became known later) on
    /// `shard`, the shard that wrote it (so the scan follows the write).
    pub fn scan_file(
        &mut self,
        shard: usize,
        gen: u32,
        slot: u64,
        id: u64,
        current_len: u64,
    ) -> Result<(), ShardGone> {
        self.send(
            shard.min(self.count() - 1),
            Cmd::Scan {
                gen,
                slot,
                id,
                current_len,
            },
        )
    }

    /// Per-shard totals once every file handed over so far is written and indexed.
    pub fn totals(&mut self) -> Result<Vec<ShardTotals>, ShardGone> {
        self.epoch += 1;
        let mut replies = Vec::new();
        for s in 0..self.count() {
            let (rtx, rrx) = flume::bounded(1);
            self.send(
                s,
                Cmd::Totals {
                    epoch: self.epoch,
                    reply: rtx,
                },
            )?;
            replies.push(rrx);
        }
        replies
            .into_iter()
            .map(|r| r.recv().map_err(|_| ShardGone))
            .collect()
    }

    /// Look an account up on its owner shard.
    pub fn get(&self, pubkey: &[u8; 32]) -> Result<Option<AccountRecord>, ShardGone> {
        let owner = owner_of_key(pubkey, self.count()).0;
        let (rtx, rrx) = flume::bounded(1);
        self.send(owner, Cmd::Get(*pubkey, rtx))?;
        rrx.recv().map_err(|_| ShardGone)
    }

    /// Every live account, sorted by pubkey (holds them all in memory: for inspection of
    /// small snapshots).
    pub fn all(&self) -> Result<Vec<AccountRecord>, ShardGone> {
        let mut out = Vec::new();
        for s in 0..self.count() {
            let (rtx, rrx) = flume::bounded(1);
            self.send(s, Cmd::All(rtx))?;
            out.extend(rrx.recv().map_err(|_| ShardGone)?);
        }
        out.sort_by_key(|a| a.pubkey);
        Ok(out)
    }
}

impl Drop for ShardSet {
    fn drop(&mut self) {
        self.inboxes.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{file, stream};
    use super::ShardSet;
    use catchup_solana::LtHash;

    #[test]
    fn each_file_is_scanned_by_one_shard_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = ShardSet::start(3).unwrap();
        set.set_dir(0, dir.path()).unwrap();
        let mut expected = LtHash::identity();
        let mut n = 0u64;
        for f in 0..12u64 {
            let entries: Vec<([u8; 32], u64, Vec<u8>)> = (0..50u64)
                .map(|i| {
                    let mut k = [0u8; 32];
                    k[..8].copy_from_slice(
                        &(f * 1000 + i)
                            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                            .to_be_bytes(),
                    );
                    (k, i + 1, vec![i as u8; (i * 7 % 300) as usize])
                })
                .collect();
            for (k, l, d) in &entries {
                expected.mix_in(&LtHash::of_account(*l, d, false, &[9; 32], k));
                n += 1;
            }
            let refs: Vec<([u8; 32], u64, &[u8])> = entries
                .iter()
                .map(|(k, l, d)| (*k, *l, d.as_slice()))
                .collect();
            stream(&mut set, (10 + f, f), &file(&refs), 4096, false);
        }
        let totals = set.totals().unwrap();
        assert_eq!(totals.iter().map(|t| t.scanned_accounts).sum::<u64>(), n);
        assert_eq!(totals.iter().map(|t| t.accounts_total).sum::<u64>(), n);
        assert_eq!(totals.iter().map(|t| t.files_written).sum::<u64>(), 12);
        let mut lt = LtHash::identity();
        for t in &totals {
            lt.mix_in(&t.lt_hash);
        }
        assert_eq!(lt, expected);
    }
}

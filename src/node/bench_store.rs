//! `catchup bench store` measures the per-shard store's put throughput (records are made
//! durable with a `flush` every `--batch` records) on every shard at once, and in the same
//! run a baseline: the same record bytes written sequentially with plain `std::fs`
//! (O_DIRECT where the filesystem allows) and `fdatasync` at the same group-commit points.
//! The two alternate on each shard in `--rounds` rounds so that both see the same
//! background load; `--json` adds where the time went (waiting for writes and syncs).

//!
//! Also the store crash writer the crash tests and the soak drive (`catchup bench
//! store-crash-writer`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use catchup_io::datadir::DataDir;
use catchup_io::store::record::encode_record;
use catchup_io::store::{SharedStore, Store, StoreOptions};
use catchup_shards::{RuntimeConfig, Shard};

use crate::node::opts::GlobalOpts;

#[derive(Args, Debug, Clone)]
pub struct StoreBenchArgs {
    /// Number of shards, each with its own store (1..=1024). Default: the `--plan` file's
    /// shard count, else one per usable core.
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Records written by each shard (the default, 200k records of 1 KiB, takes about a
    /// second per side: shorter runs are mostly noise).
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    pub records: u64,
    /// Value size of each record in bytes (keys are 32 bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    pub value_size: usize,
    /// Records per group commit (one `flush` + `fdatasync` per batch).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub batch: u64,
    /// The store and the baseline alternate in this many rounds of `--records / N`
    /// records each (so both see the same background load); 1 runs each once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub rounds: u64,
    /// Data directory to write into (locked while running; benchmark files are removed
    /// afterwards). Default: a fresh directory under the system temp dir, which may be a
    /// tmpfs without O_DIRECT: pass the validator's data directory to measure its disk.
    #[arg(long, value_name = "DIR")]
    pub datadir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CrashWriterArgs {
    /// Store directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Seed of batch sizes and values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stop after this many records in total.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Largest batch (records per flush).
    #[arg(long, default_value_t = 64)]
    pub batch_max: u64,
    /// Segment size of the store.
    #[arg(long, default_value_t = 256 * 1024)]
    pub segment_size_bytes: u64,
    /// Pause between batches, in microseconds (keeps crash tests small).
    #[arg(long, default_value_t = 0)]
    pub batch_pause_us: u64,
    /// Instead of batches and flushes, run this many concurrent tasks on one shared store,
    /// each appending with `put_durable` and printing `ack SEQ SEQ` when its put resolved
    /// (sequence numbers are taken in call order; records may land out of order).
    #[arg(long, value_name = "N")]
    pub durable_tasks: Option<u32>,
    /// Write 32-byte hash keys of a fingerprinted, content-addressed kind with a tiny
    /// index memtable, so that index runs are written and merged all along (see
    /// [`crash_store_options_fingerprinted`]).
    #[arg(long, conflicts_with = "durable_tasks")]
    pub fingerprinted: bool,
}

/// The record kind the store benchmark and the crash writer write.
pub const BENCH_KIND: u8 = 1;
/// Largest value the crash writer writes.
pub const CRASH_VALUE_MAX_BYTES: usize = 6000;

/// A small deterministic generator (xorshift64*), enough for benchmark and test payloads.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The value the crash writer stores under sequence number `seq` with seed `seed`:
/// 0..=CRASH_VALUE_MAX_BYTES pseudo-random bytes. Tests recompute it to check reads.
pub fn crash_value(seed: u64, seq: u64) -> Vec<u8> {
    let mut g = XorShift::new(seed.wrapping_mul(0x100_0000_01B3) ^ seq);
    let len = (g.next_u64() % (CRASH_VALUE_MAX_BYTES as u64 + 1)) as usize;
    let mut v = vec![0u8; len];
    g.fill(&mut v);
    v
}

/// The fingerprinted kind the crash writer writes with `--fingerprinted`.
pub const CRASH_FP_KIND: u8 = 2;

/// The 32-byte hash key of sequence number `seq` (uniformly spread bytes).
pub fn crash_fp_key(seq: u64) -> [u8; 32] {
    let mut g = XorShift::new(seq.wrapping_mul(0xA24B_AED4_963E_E407) ^ 0x5EED);
    let mut k = [0u8; 32];
    g.fill(&mut k);
    k
}

/// Store options of the crash writer with `--fingerprinted`: the index checkpoint is used
/// and the fingerprint memtable holds only a few dozen keys.
pub fn crash_store_options_fingerprinted(segment_size_bytes: u64) -> StoreOptions {
    StoreOptions {
        use_checkpoint: true,
        max_index_memory_bytes: 4096,
        ..crash_store_options(segment_size_bytes)
            .content_addressed(CRASH_FP_KIND)
            .fingerprinted(CRASH_FP_KIND)
    }
}

/// Store options of the crash writer (tests open the store with the same options).
pub fn crash_store_options(segment_size_bytes: u64) -> StoreOptions {
    StoreOptions {
        segment_size_bytes,
        write_buffer_bytes: 16 * 1024,
        max_key_bytes: 64,
        max_value_bytes: CRASH_VALUE_MAX_BYTES,
        content_addressed_kinds: vec![],
        // Every start re-scans and verifies all segments.
        use_checkpoint: false,
        ..StoreOptions::default()
    }
}

pub fn crash_writer(args: CrashWriterArgs) -> anyhow::Result<i32> {
    use std::io::Write;
    anyhow::ensure!(args.batch_max >= 1, "--batch-max must be at least 1");
    if let Some(tasks) = args.durable_tasks {
        anyhow::ensure!(
            (1..=1024).contains(&tasks),
            "--durable-tasks must be 1..=1024, got {tasks}"
        );
        return crash_writer_durable(args, tasks);
    }
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .map_err(|e| anyhow::anyhow!("cannot start an executor: {e}"))?;
    catchup_io::exec::run(&ex, async move {
        let (opts, kind) = if args.fingerprinted {
            (
                crash_store_options_fingerprinted(args.segment_size_bytes),
                CRASH_FP_KIND,
            )
        } else {
            (crash_store_options(args.segment_size_bytes), BENCH_KIND)
        };
        let mut store = Store::open(&args.dir, opts).await?;
        // Records are appended in sequence order and a crash only loses a suffix, so the
        // keys present are exactly 0..count: continue at count (records past the last
        // acknowledgement may have survived whole).
        let mut next: u64 = store.len_of_kind(kind) as u64;
        let mut rng = XorShift::new(args.seed ^ next);
        let stdout = std::io::stdout();
        while next < args.records {
            let n = 1 + rng.next_u64() % args.batch_max;
            let first = next;
            for _ in 0..n {
                if next >= args.records {
                    break;
                }
                let key = if args.fingerprinted {
                    crash_fp_key(next).to_vec()
                } else {
                    next.to_be_bytes().to_vec()
                };
                store.put(kind, &key, &crash_value(args.seed, next)).await?;
                next += 1;
            }
            store.flush().await?;
            let mut out = stdout.lock();
            writeln!(out, "ack {first} {}", next - 1)?;
            out.flush()?;
            drop(out);
            if args.batch_pause_us > 0 {
                glommio::timer::sleep(std::time::Duration::from_micros(args.batch_pause_us)).await;
            }
        }
        store.close().await?;
        writeln!(stdout.lock(), "done")?;
        anyhow::Ok(0)
    })
}

/// Crash writer with concurrent `put_durable` tasks on one `SharedStore`.
fn crash_writer_durable(args: CrashWriterArgs, tasks: u32) -> anyhow::Result<i32> {
    use std::cell::Cell;
    use std::io::Write;
    use std::rc::Rc;
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .map_err(|e| anyhow::anyhow!("cannot start an executor: {e}"))?;
    catchup_io::exec::run(&ex, async move {
        let opts = crash_store_options(args.segment_size_bytes);
        let store = Store::open(&args.dir, opts).await?;
        // Records may have landed out of order before a crash: continue after the
        // highest sequence number present (lost, unacknowledged ones are not rewritten).
        let next_seq = store
            .keys_of_kind(BENCH_KIND)
            .iter()
            .filter_map(|k| <[u8; 8]>::try_from(k.as_slice()).ok())
            .map(u64::from_be_bytes)
            .max()
            .map_or(0, |m| m + 1);
        let shared = SharedStore::new(store);
        let next = Rc::new(Cell::new(next_seq));
        let mut handles = Vec::with_capacity(tasks as usize);
        for _ in 0..tasks {
            let (shared, next) = (shared.clone(), next.clone());
            handles.push(glommio::spawn_local(async move {
                // Bounded by --records.
                loop {
                    let seq = next.get();
                    if seq >= args.records {
                        return anyhow::Ok(());
                    }
                    next.set(seq + 1);
                    shared
                        .put_durable(BENCH_KIND, &seq.to_be_bytes(), &crash_value(args.seed, seq))
                        .await?;
                    let stdout = std::io::stdout();
                    let mut out = stdout.lock();
                    writeln!(out, "ack {seq} {seq}")?;
                    out.flush()?;
                    drop(out);
                    if args.batch_pause_us > 0 {
                        glommio::timer::sleep(std::time::Duration::from_micros(
                            args.batch_pause_us,
                        ))
                        .await;
                    }
                }
            }));
        }
        for h in handles {
            h.await?;
        }
        shared.close().await?;
        writeln!(std::io::stdout().lock(), "done")?;
        anyhow::Ok(0)
    })
}

/// Per-shard result of one phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseResult {
    pub shard: usize,
    pub records: u64,
    pub bytes: u64,
    pub secs: f64,
    pub syncs: u64,
    pub direct_io: bool,
    /// Store phase only: time waiting for segment writes / `fdatasync`, in microseconds,
    /// and bytes written to disk (record bytes plus padding and rewritten tail blocks).
    pub write_wait_us: u64,
    pub sync_wait_us: u64,
    pub written_bytes: u64,
}

impl PhaseResult {
    fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.secs.max(1e-9)
    }
    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs.max(1e-9)
    }
}

#[derive(Debug, Clone, Copy)]
struct Workload {
    records: u64,
    value_size: usize,
    batch: u64,
    rounds: u64,
}

/// Key and value of record `i` of shard `shard` (value bytes vary per record).
fn bench_record(shard: usize, i: u64, base_value: &[u8], key: &mut [u8; 32], value: &mut Vec<u8>) {
    key[..8].copy_from_slice(&i.to_be_bytes());
    key[8..16].copy_from_slice(&(shard as u64).to_be_bytes());
    value.clear();
    value.extend_from_slice(base_value);
    let n = value.len().min(8);
    value[..n].copy_from_slice(&i.to_le_bytes()[..n]);
}

/// The store side of the benchmark: one store, records appended in rounds.
struct StoreSide {
    store: Store,
    base: Vec<u8>,
    secs: f64,
}

impl StoreSide {
    async fn open(shard: usize, dir: &Path, w: Workload) -> anyhow::Result<StoreSide> {
        let store = Store::open(dir, StoreOptions::default()).await?;
        let mut base = vec![0u8; w.value_size];
        XorShift::new(shard as u64).fill(&mut base);
        Ok(StoreSide {
            store,
            base,
            secs: 0.0,
        })
    }

    /// Records `range` (commit points at multiples of the batch; a final flush when
    /// `last`).
    async fn run(
        &mut self,
        shard: usize,
        range: std::ops::Range<u64>,
        w: Workload,
        last: bool,
    ) -> anyhow::Result<()> {
        let (mut key, mut value) = ([0u8; 32], Vec::with_capacity(w.value_size));
        let start = Instant::now();
        for i in range {
            bench_record(shard, i, &self.base, &mut key, &mut value);
            self.store.put(BENCH_KIND, &key, &value).await?;
            if (i + 1) % w.batch == 0 {
                self.store.flush().await?;
            }
        }
        if last {
            self.store.flush().await?;
        }
        self.secs += start.elapsed().as_secs_f64();
        Ok(())
    }

    async fn finish(self, shard: usize, w: Workload) -> anyhow::Result<PhaseResult> {
        let stats = self.store.stats();
        self.store.close().await?;
        Ok(PhaseResult {
            shard,
            records: w.records,
            bytes: stats.appended_bytes,
            secs: self.secs,
            syncs: stats.syncs,
            direct_io: stats.direct_io,
            write_wait_us: stats.write_wait_us,
            sync_wait_us: stats.sync_wait_us,
            written_bytes: stats.written_bytes,
        })
    }
}

/// A heap buffer aligned for O_DIRECT.
struct AlignedBuf {
    ptr: *mut u8,
    cap: usize,
}

impl AlignedBuf {
    const ALIGN: usize = 4096;
    fn new(cap: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(cap, Self::ALIGN).expect("layout");
        // SAFETY: cap > 0 (checked by callers); zeroed allocation of a valid layout.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation of {cap} bytes failed");
        AlignedBuf { ptr, cap }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is a live allocation of cap bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.cap) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.cap, Self::ALIGN).expect("layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) }
    }
}

/// Baseline: the same record bytes, written with plain `std::fs` + `fdatasync` at the same
/// group-commit points, in 4 KiB-aligned writes (O_DIRECT when the filesystem allows;
/// the partial last block is rewritten at each commit, as the store does).
struct Baseline {
    file: std::fs::File,
    direct_io: bool,
    base: Vec<u8>,
    staging: Vec<u8>,
    io_buf: AlignedBuf,
    file_pos: u64,
    bytes: u64,
    syncs: u64,
    write_wait_us: u64,
    sync_wait_us: u64,
    written_bytes: u64,
    secs: f64,
}

impl Baseline {
    const BUF_BYTES: usize = 1 << 20;

    fn open(shard: usize, dir: &Path, w: Workload) -> anyhow::Result<Baseline> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("baseline.dat");
        let open = |direct: bool| {
            let mut oo = std::fs::OpenOptions::new();
            oo.write(true).create(true).truncate(true);
            if direct {
                oo.custom_flags(libc::O_DIRECT);
            }
            oo.open(&path)
        };
        let (file, direct_io) = match open(true) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (
                open(false).with_context(|| format!("creating {}", path.display()))?,
                false,
            ),
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        };
        let mut base = vec![0u8; w.value_size];
        XorShift::new(shard as u64).fill(&mut base);
        Ok(Baseline {
            file,
            direct_io,
            base,
            staging: Vec::with_capacity(Self::BUF_BYTES * 2),
            io_buf: AlignedBuf::new(
                Self::BUF_BYTES * 2 + w.value_size.next_multiple_of(4096) + 4096,
            ),
            file_pos: 0,
            bytes: 0,
            syncs: 0,
            write_wait_us: 0,
            sync_wait_us: 0,
            written_bytes: 0,
            secs: 0.0,
        })
    }

    fn write_out(&mut self, partial: bool) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let len = self.staging.len();
        let full = len / 4096 * 4096;
        let n = if partial {
            len.next_multiple_of(4096)
        } else {
            full
        };
        if n == 0 {
            return Ok(());
        }
        let buf = self.io_buf.as_mut();
        buf[..len].copy_from_slice(&self.staging);
        if n > len {
            buf[len..n].fill(0);
        }
        let t0 = Instant::now();
        self.file.write_all_at(&buf[..n], self.file_pos)?;
        self.write_wait_us += t0.elapsed().as_micros() as u64;
        self.written_bytes += n as u64;
        self.staging.drain(..full);
        self.file_pos += full as u64;
        Ok(())
    }

    fn commit(&mut self) -> std::io::Result<()> {
        self.write_out(true)?;
        let t0 = Instant::now();
        self.file.sync_data()?;
        self.sync_wait_us += t0.elapsed().as_micros() as u64;
        self.syncs += 1;
        Ok(())
    }

    fn run(
        &mut self,
        shard: usize,
        range: std::ops::Range<u64>,
        w: Workload,
        last: bool,
    ) -> std::io::Result<()> {
        let (mut key, mut value) = ([0u8; 32], Vec::with_capacity(w.value_size));
        let start = Instant::now();
        for i in range {
            bench_record(shard, i, &self.base, &mut key, &mut value);
            self.bytes += encode_record(BENCH_KIND, &key, &value, &mut self.staging) as u64;
            if self.staging.len() >= Self::BUF_BYTES {
                self.write_out(false)?;
            }
            if (i + 1) % w.batch == 0 {
                self.commit()?;
            }
        }
        if last && !self.staging.is_empty() {
            self.commit()?;
        }
        self.secs += start.elapsed().as_secs_f64();
        Ok(())
    }

    fn finish(self, shard: usize, w: Workload) -> PhaseResult {
        PhaseResult {
            shard,
            records: w.records,
            bytes: self.bytes,
            secs: self.secs,
            syncs: self.syncs,
            direct_io: self.direct_io,
            write_wait_us: self.write_wait_us,
            sync_wait_us: self.sync_wait_us,
            written_bytes: self.written_bytes,
        }
    }
}

/// One shard's benchmark: the store and the baseline write the same records, alternating
/// in `w.rounds` rounds (which goes first alternates too), so that both see the same
/// background load on a shared machine. Every shard starts each phase together (`phase`
/// barrier): all shards run the store, then all run the baseline, so that the whole-node
/// totals compare the two under the same contention. Without it the shards drift apart
/// and one shard's store phase overlaps another's baseline phase.
async fn shard_bench(
    shard: usize,
    dir: PathBuf,
    w: Workload,
    phase: Arc<std::sync::Barrier>,
) -> anyhow::Result<(PhaseResult, PhaseResult)> {
    let rounds = w.rounds.clamp(1, w.records);
    // A shard that fails keeps meeting the others at the barrier (doing nothing), so that
    // they finish and the failure is reported instead of a hang.
    let mut sides = match StoreSide::open(shard, &dir.join("store"), w).await {
        Ok(st) => Baseline::open(shard, &dir, w).map(|bl| (st, bl)),
        Err(e) => Err(e),
    };
    let mut failed: Option<anyhow::Error> = None;
    for r in 0..rounds {
        let range = (w.records * r / rounds)..(w.records * (r + 1) / rounds);
        let last = r + 1 == rounds;
        // Which side goes first alternates.
        for store_turn in [r % 2 == 0, r % 2 != 0] {
            // Blocking the executor at the barrier is fine here: between phases this
            // shard has no I/O in flight (every phase ends with its flush awaited).
            phase.wait();
            let (st, bl) = match (&mut sides, &failed) {
                (Ok(s), None) => (&mut s.0, &mut s.1),
                _ => continue,
            };
            let done = if store_turn {
                st.run(shard, range.clone(), w, last).await
            } else {
                bl.run(shard, range.clone(), w, last)
                    .map_err(anyhow::Error::from)
            };
            if let Err(e) = done {
                failed = Some(e);
            }
        }
    }
    let (st, bl) = sides?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok((st.finish(shard, w).await?, bl.finish(shard, w)))
}

/// Whole-node numbers: every shard's records over the slowest shard's time.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Totals {
    pub records: u64,
    pub bytes: u64,
    pub secs: f64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
}

fn totals(rs: &[PhaseResult]) -> Totals {
    let records = rs.iter().map(|r| r.records).sum();
    let bytes = rs.iter().map(|r| r.bytes).sum();
    let secs = rs.iter().map(|r| r.secs).fold(0.0, f64::max);
    Totals {
        records,
        bytes,
        secs,
        records_per_sec: records as f64 / secs.max(1e-9),
        mb_per_sec: bytes as f64 / 1e6 / secs.max(1e-9),
    }
}

pub fn bench_store(args: StoreBenchArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    if let Some(n) = args.shards {
        anyhow::ensure!(
            (1..=catchup_shards::runtime::MAX_SHARDS).contains(&n),
            "--shards must be 1..={}, got {n}",
            catchup_shards::runtime::MAX_SHARDS
        );
    }
    // Shard count and cores: --shards, else the --plan file, else one per usable CPU.
    let cfg = RuntimeConfig {
        handle_signals: false,
        ..crate::node::opts::runtime_config(global, args.shards, None)?
    };
    let shards = cfg.shards;
    anyhow::ensure!(args.records >= 1, "--records must be at least 1");
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let max_value = StoreOptions::default().max_value_bytes;
    anyhow::ensure!(
        args.value_size <= max_value,
        "--value-size must be at most {max_value} bytes, got {}",
        args.value_size
    );
    let w = Workload {
        records: args.records,
        value_size: args.value_size,
        batch: args.batch,
        rounds: args.rounds,
    };
    let (root, _tmp_guard) = match &args.datadir {
        Some(d) => (d.clone(), None),
        None => {
            let t =
                std::env::temp_dir().join(format!("catchup-bench-store-{}", std::process::id()));
            (t.clone(), Some(RemoveOnDrop(t)))
        }
    };
    let dd = DataDir::open(&root)?;
    let record_bytes = catchup_io::store::record::encoded_len(32, args.value_size) as u64;
    // Both phases' files exist until the end; keep 4 MiB slack per shard and phase for
    // block padding and segment tails.
    let need = 2 * shards as u64 * (args.records * record_bytes + (4 << 20));
    dd.require_free_space(need)?;
    let bench_root = dd.subdir("bench-store")?;
    let dirs: Vec<PathBuf> = (0..shards)
        .map(|i| dd.subdir(&format!("bench-store/shard-{i}")))
        .collect::<Result<_, _>>()?;
    let _cleanup = RemoveOnDrop(bench_root.clone());

    let shard_dirs = dirs.clone();
    let phase = Arc::new(std::sync::Barrier::new(shards));
    let results = catchup_shards::run(&cfg, move |shard: Shard<()>| {
        let dir = shard_dirs[shard.id().0].clone();
        let phase = phase.clone();
        async move {
            use tracing::Instrument;
            let span = tracing::info_span!("shard", shard = shard.id().0);
            let r = shard_bench(shard.id().0, dir, w, phase)
                .instrument(span)
                .await;
            r.map_err(|e| format!("shard {}: {e:#}", shard.id()))
        }
    })?
    .into_iter()
    .collect::<Result<Vec<_>, String>>()
    .map_err(anyhow::Error::msg)?;
    let (store_results, baseline_results): (Vec<_>, Vec<_>) = results.into_iter().unzip();

    let st = totals(&store_results);
    let bt = totals(&baseline_results);
    let ratio = st.mb_per_sec / bt.mb_per_sec.max(1e-9);
    if args.json {
        let per_shard: Vec<_> = store_results
            .iter()
            .zip(&baseline_results)
            .map(|(s, b)| {
                serde_json::json!({
                    "shard": s.shard,
                    "records": s.records,
                    "bytes": s.bytes,
                    "secs": s.secs,
                    "records_per_sec": s.records_per_sec(),
                    "mb_per_sec": s.mb_per_sec(),
                    "syncs": s.syncs,
                    "direct_io": s.direct_io,
                    "write_wait_us": s.write_wait_us,
                    "sync_wait_us": s.sync_wait_us,
                    "written_bytes": s.written_bytes,
                    "baseline_mb_per_sec": b.mb_per_sec(),
                    "baseline_write_wait_us": b.write_wait_us,
                    "baseline_sync_wait_us": b.sync_wait_us,
                    "baseline_direct_io": b.direct_io,
                    "ratio": s.mb_per_sec() / b.mb_per_sec().max(1e-9),
                })
            })
            .collect();
        let out = serde_json::json!({
            "datadir": root,
            "shards": shards,
            "records_per_shard": args.records,
            "value_size_bytes": args.value_size,
            "batch_records": args.batch,
            "rounds": args.rounds,
            "per_shard": per_shard,
            "total": st,
            "baseline_total": bt,
            "ratio": ratio,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "store bench: {shards} shard(s), {} records/shard of {} B values, flush every {} records, {} rounds, in {}",
            args.records,
            args.value_size,
            args.batch,
            args.rounds,
            root.display()
        );
        println!(
            "{:>5} {:>12} {:>10} {:>10} {:>12} {:>8} {:>7}",
            "shard", "records/s", "MB/s", "base MB/s", "ratio", "syncs", "O_DIRECT"
        );
        for (s, b) in store_results.iter().zip(&baseline_results) {
            println!(
                "{:>5} {:>12.0} {:>10.1} {:>10.1} {:>12.2} {:>8} {:>7}",
                s.shard,
                s.records_per_sec(),
                s.mb_per_sec(),
                b.mb_per_sec(),
                s.mb_per_sec() / b.mb_per_sec().max(1e-9),
                s.syncs,
                if s.direct_io { "yes" } else { "no" }
            );
        }
        println!(
            "{:>5} {:>12.0} {:>10.1} {:>10.1} {:>12.2}",
            "total", st.records_per_sec, st.mb_per_sec, bt.mb_per_sec, ratio
        );
    }
    Ok(0)
}

/// Removes a directory tree when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_handles_batches_larger_than_its_buffer() {
        // On the target directory's filesystem (a disk), not a tmpfs /tmp.
        let target_tmp = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp");
        std::fs::create_dir_all(&target_tmp).unwrap();
        let tmp = tempfile::tempdir_in(&target_tmp).unwrap();
        let w = Workload {
            records: 3000,
            value_size: 1000,
            batch: 2000,
            rounds: 2,
        };
        let mut b = Baseline::open(0, tmp.path(), w).unwrap();
        b.run(0, 0..1500, w, false).unwrap();
        b.run(0, 1500..3000, w, true).unwrap();
        let r = b.finish(0, w);
        assert_eq!(r.records, 3000);
        assert_eq!(
            r.bytes,
            3000 * catchup_io::store::record::encoded_len(32, 1000) as u64
        );
        assert_eq!(r.syncs, 2);
        // Everything written, the last block zero padded.
        let len = std::fs::metadata(tmp.path().join("baseline.dat"))
            .unwrap()
            .len();
        assert_eq!(len, r.bytes.next_multiple_of(4096));
    }

    #[test]
    fn crash_values_are_deterministic_and_bounded() {
        for seq in 0..200 {
            let v = crash_value(9, seq);
            assert!(v.len() <= CRASH_VALUE_MAX_BYTES);
            assert_eq!(v, crash_value(9, seq));
        }
        assert_ne!(crash_value(9, 1), crash_value(10, 1));
    }
}

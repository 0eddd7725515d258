//! The sharded account index, built in one pass.
//!
//! # Who does what
//!
//! - **Writer/scanner**: each account file is handed, as its bytes arrive, to one shard —
//!   the one with the fewest bytes queued when the file starts (round-robin among equals),
//!   so large and small files spread evenly. That shard writes the file (glommio DMA
//!   writes through io_uring; plain `write(2)` only where O_DIRECT is refused, the reason
//!   logged) and scans its entries from the same in-memory pieces with
//!   [`AppendVecScanner`]: every entry is parsed and hashed exactly once, by one shard.
//! - **Owner**: shard `owner_of_key(pubkey)` keeps the index slice for its pubkeys. The
//!   scanning shard sends it compact [`IndexEntry`] values (pubkey, slot, file, offset,
//!   lamports, data length) in batches over a full mesh of bounded channels (a full link
//!   is back-pressure: the sender's task waits while its own receiving task keeps
//!   draining, so the mesh cannot deadlock). Newest (slot, file id, offset) wins.
//!
//! # LtHash of the live set, with each account hashed once
//!
//! The scanning shard mixes every entry's LtHash element into its own running sum while
//! the bytes are hot in cache (zero-lamport entries add nothing) and ships no hash. The
//! owner decides winners from the compact entries alone and records each *loser* (an
//! older version, or a newer file's entry that lost the tie-break) whose lamports are
//! non-zero. When totals are asked for, each owner re-reads its losers from the mapped
//! files and mixes their elements out. So `Σ shards = Σ scanned − Σ losers = Σ live`,
//! exactly the live-set semantics, and the blake3 XOF runs once per entry plus once per
//! overwritten entry. The alternatives cost more: shipping the 2048-byte element with
//! every entry multiplies the mesh traffic by ~15, keeping it at the owner costs 2 KiB per
//! live account, and hashing only the winners at the end re-reads every account after
//! the stream instead of while it is in cache. Lamports, zero-lamport counts and data
//! bytes need no file access: the entries carry them.
//!
//! A file that arrives before the manifest (so its `accounts_current_len` is unknown
//! while it streams) is written first and scanned from its memory map once the manifest
//! is known.
//!
//! # Barrier
//!
//! Totals use a marker protocol: every shard finishes the work queued before the request,
//! flushes its batches, sends a marker to every peer, and answers once it has the markers
//! of all peers (per-link order guarantees every batch before a marker has arrived). A
//! shard's file writes are finished before its marker goes out, so owners may map any
//! file when they retract losers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use catchup_io::files::{DmaCreate, DmaStreamWriter, StreamedFile};
use catchup_io::mmap::MappedFile;
use catchup_shards::ownership::owner_of_key;
use catchup_solana::appendvec::{
    account_at, iter_accounts, AppendVecScanner, ScanError, StoredAccount,
};
use catchup_solana::LtHash;

/// Smallest capacity of a shard's inbox from the feeding thread (messages; data messages
/// are at most [`WRITE_CHUNK_BYTES`] each). [`ShardSet::start_with_queue`] sets a deeper
/// one, so a shard can work through a large file while the feeder moves on to the next.
pub const MIN_SHARD_INBOX_CAPACITY: usize = 2;
/// Capacity of each shard-to-shard link (batches).
pub const MESH_LINK_CAPACITY: usize = 4;
/// Index entries per batch sent to an owner.
pub const INDEX_BATCH_ENTRIES: usize = 1024;
/// Size of the pieces of a file handed to its writer shard, and of one DMA write.
pub const WRITE_CHUNK_BYTES: usize = 512 << 10;
/// DMA writes a shard keeps outstanding while it scans the next pieces.
pub const DMA_WRITES_IN_FLIGHT: usize = 4;
/// Bytes hinted for reading per superseded entry before its hash is recomputed.
pub const RETRACT_PREFETCH_BYTES: usize = 4096;
/// How often a busy shard lets its executor submit and reap I/O.
pub const SHARD_IO_LATENCY: std::time::Duration = std::time::Duration::from_millis(1);

/// Streaming memory of a shard set with `shards` shards and `inbox_capacity` messages per
/// inbox, at most: queued and in-process file pieces, one DMA buffer per shard, and full
/// mesh links plus the batches being filled.
pub fn streaming_bytes(shards: usize, inbox_capacity: usize) -> u64 {
    let n = shards.max(1) as u64;
    let batch = (INDEX_BATCH_ENTRIES * std::mem::size_of::<IndexEntry>()) as u64;
    n * (inbox_capacity as u64 + 2) * WRITE_CHUNK_BYTES as u64
        + n * n.saturating_sub(1) * (MESH_LINK_CAPACITY as u64 + 1) * batch
}

/// Where the newest version of an account lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountLocation {
    pub slot: u64,
    pub file_id: u64,
    pub offset: u64,
}

/// An account read back from its storage file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub pubkey: [u8; 32],
    pub lamports: u64,
    pub owner: [u8; 32],
    pub executable: bool,
    pub rent_epoch: u64,
    pub data: Vec<u8>,
    pub location: AccountLocation,
}

/// One shard's contribution to verification.
#[derive(Debug, Clone)]
pub struct ShardTotals {
    pub shard: usize,
    /// This shard's part of the live set's LtHash (scanned elements minus retracted
    /// losers; only the sum over all shards is meaningful).
    pub lt_hash: LtHash,
    pub capitalization: u128,
    /// Entries owned by this shard (all versions).
    pub accounts_total: u64,
    /// Stored bytes (headers, data, padding) of the entries this shard owns.
    pub owned_bytes: u64,
    pub accounts_live: u64,
    pub zero_lamport_live: u64,
    pub data_bytes_live: u64,
    /// Entries this shard parsed and hashed (from the files it wrote).
    pub scanned_accounts: u64,
    /// Stored bytes of those entries.
    pub scanned_bytes: u64,
    /// Account files this shard wrote.
    pub files_written: u64,
    /// Superseded versions whose LtHash elements were mixed out.
    pub retracted: u64,
    /// How this shard wrote files: `io_uring-dma`, or `write(2)` and why.
    pub write_mode: String,
    /// Time spent parsing and hashing entries.
    pub scan_ms: u64,
    /// Time spent waiting for file writes.
    pub write_ms: u64,
    /// Time spent waiting for work from the feeding thread.
    pub idle_ms: u64,
    /// Time spent re-reading and mixing out superseded versions.
    pub retract_ms: u64,
    /// First storage-file error this shard saw, if any.
    pub error: Option<String>,
}

/// A compact index entry, sent from the scanning shard to the owner of its pubkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub pubkey: [u8; 32],
    pub slot: u64,
    pub id: u64,
    pub offset: u64,
    pub lamports: u64,
    pub data_len: u32,
    /// Which snapshot (0: full, 1: incremental on top, ...) the file belongs to.
    pub gen: u32,
}

impl IndexEntry {
    fn order(&self) -> (u64, u64, u64) {
        (self.slot, self.id, self.offset)
    }
    fn stored_bytes(&self) -> u64 {
        (catchup_solana::appendvec::ENTRY_HEADER_BYTES as u64 + self.data_len as u64 + 7) & !7
    }
}

/// Messages from the feeding thread to a shard.
enum Cmd {
    /// The accounts directory of snapshot generation `gen` (broadcast; sent again after
    /// the directory is renamed into place).
    SetDir {
        gen: u32,
        dir: PathBuf,
    },
    /// Start writing (and, when `current_len` is known, scanning) a file.
    Begin {
        gen: u32,
        slot: u64,
        id: u64,
        declared_bytes: u64,
        current_len: Option<u64>,
    },
    Data(Vec<u8>),
    End {
        fsync: bool,
    },
    /// Scan a file written earlier, from its memory map.
    Scan {
        gen: u32,
        slot: u64,
        id: u64,
        current_len: u64,
    },
    Totals {
        epoch: u64,
        reply: flume::Sender<ShardTotals>,
    },
    Get([u8; 32], flume::Sender<Option<AccountRecord>>),
    All(flume::Sender<Vec<AccountRecord>>),
}

enum Peer {
    Batch(Vec<IndexEntry>),
    Marker(u64),
}

#[derive(Clone, Copy)]
struct Entry {
    slot: u64,
    id: u64,
    offset: u64,
    lamports: u64,
    data_len: u32,
    gen: u32,
}

#[derive(Clone, Copy)]
struct Loser {
    gen: u32,
    slot: u64,
    id: u64,
    offset: u64,
}

/// Errors seen by any shard, visible to the feeding thread at once.
#[derive(Default)]
struct SharedError {
    set: AtomicBool,
    first: Mutex<Option<String>>,
}

impl SharedError {
    fn record(&self, e: String) {
        if let Ok(mut f) = self.first.lock() {
            if f.is_none() {
                *f = Some(e);
            }
        }
        self.set.store(true, Ordering::Release);
    }
    fn get(&self) -> Option<String> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.first.lock().ok().and_then(|f| f.clone())
    }
}

/// One shard's state, shared by its two tasks (inbox and mesh) on the same thread.
struct State {
    shard: usize,
    shards: usize,
    dirs: HashMap<u32, PathBuf>,
    maps: HashMap<(u32, u64, u64), Rc<MappedFile>>,
    /// Files holding entries this shard indexed since the last totals (mapped then, so
    /// lookups keep working whatever happens to the directory later).
    referenced: std::collections::HashSet<(u32, u64, u64)>,
    last_referenced: Option<(u32, u64, u64)>,
    index: HashMap<[u8; 32], Entry, ahash::RandomState>,
    lt_hash: LtHash,
    lamports_live: u128,
    zero_lamport_live: u64,
    data_bytes_live: u64,
    losers: Vec<Loser>,
    accounts_total: u64,
    owned_bytes: u64,
    scanned_accounts: u64,
    scanned_bytes: u64,
    files_written: u64,
    retracted: u64,
    write_mode: String,
    scan_ns: u64,
    write_ns: u64,
    idle_ns: u64,
    retract_ns: u64,
    markers: HashMap<u64, usize>,
    error: Option<String>,
    shared_error: Arc<SharedError>,
}

impl State {
    fn fail(&mut self, e: String) {
        self.shared_error.record(e.clone());
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn path(&self, gen: u32, slot: u64, id: u64) -> Option<PathBuf> {
        self.dirs.get(&gen).map(|d| d.join(format!("{slot}.{id}")))
    }

    fn map(&mut self, gen: u32, slot: u64, id: u64) -> Result<Rc<MappedFile>, String> {
        if let Some(m) = self.maps.get(&(gen, slot, id)) {
            return Ok(m.clone());
        }
        let path = self
            .path(gen, slot, id)
            .ok_or_else(|| format!("accounts/{slot}.{id}: no directory for snapshot {gen}"))?;
        let m = Rc::new(MappedFile::open(&path).map_err(|e| e.to_string())?);
        self.maps.insert((gen, slot, id), m.clone());
        Ok(m)
    }

    /// Hash one scanned entry into this shard's sum and route its index entry.
    fn scanned(
        &mut self,
        a: &StoredAccount<'_>,
        gen: u32,
        slot: u64,
        id: u64,
        out: &mut [Vec<IndexEntry>],
    ) {
        self.lt_hash
            .mix_in_account(a.lamports, a.data, a.executable, a.owner, a.pubkey);
        self.scanned_accounts += 1;
        self.scanned_bytes += a.stored_size_bytes() as u64;
        let e = IndexEntry {
            pubkey: *a.pubkey,
            slot,
            id,
            offset: a.offset,
            lamports: a.lamports,
            // Bounded by MAX_ACCOUNT_DATA_BYTES (10 MiB) in the parser.
            data_len: a.data.len() as u32,
            gen,
        };
        let owner = owner_of_key(a.pubkey, self.shards).0;
        if owner == self.shard {
            self.apply(&e);
        } else {
            out[owner].push(e);
        }
    }

    /// Index one entry at its owner: newest (slot, file id, offset) wins.
    fn apply(&mut self, e: &IndexEntry) {
        let file = (e.gen, e.slot, e.id);
        if self.last_referenced != Some(file) {
            self.referenced.insert(file);
            self.last_referenced = Some(file);
        }
        self.accounts_total += 1;
        self.owned_bytes += e.stored_bytes();
        let new = Entry {
            slot: e.slot,
            id: e.id,
            offset: e.offset,
            lamports: e.lamports,
            data_len: e.data_len,
            gen: e.gen,
        };
        let loser = match self.index.get_mut(&e.pubkey) {
            None => {
                self.index.insert(e.pubkey, new);
                self.live_add(&new);
                return;
            }
            Some(old) if (old.slot, old.id, old.offset) >= e.order() => new,
            Some(old) => std::mem::replace(old, new),
        };
        if loser.offset != new.offset || loser.slot != new.slot || loser.id != new.id {
            // The old winner leaves the live set.
            self.live_remove(&loser);
            self.live_add(&new);
        }
        if loser.lamports != 0 {
            self.losers.push(Loser {
                gen: loser.gen,
                slot: loser.slot,
                id: loser.id,
                offset: loser.offset,
            });
        }
    }

    fn live_add(&mut self, e: &Entry) {
        if e.lamports == 0 {
            self.zero_lamport_live += 1;
        } else {
            self.lamports_live += e.lamports as u128;
            self.data_bytes_live += e.data_len as u64;
        }
    }

    fn live_remove(&mut self, e: &Entry) {
        if e.lamports == 0 {
            self.zero_lamport_live -= 1;
        } else {
            self.lamports_live -= e.lamports as u128;
            self.data_bytes_live -= e.data_len as u64;
        }
    }

    /// Mix out the elements of every loser recorded so far (their files are complete).
    fn retract_losers(&mut self) {
        let t = std::time::Instant::now();
        self.retract_losers_inner();
        self.retract_ns += t.elapsed().as_nanos() as u64;
    }

    fn retract_losers_inner(&mut self) {
        let mut losers = std::mem::take(&mut self.losers);
        // The files were written with O_DIRECT, so these reads go to the device: visit
        // them in file order and hint every range first, so the reads overlap instead of
        // faulting one page at a time.
        losers.sort_unstable_by_key(|l| (l.gen, l.slot, l.id, l.offset));
        for l in &losers {
            match self.map(l.gen, l.slot, l.id) {
                Ok(m) => m.prefetch(l.offset as usize, RETRACT_PREFETCH_BYTES),
                Err(e) => return self.fail(e),
            }
        }
        for l in losers {
            let map = match self.map(l.gen, l.slot, l.id) {
                Ok(m) => m,
                Err(e) => return self.fail(e),
            };
            match account_at(map.bytes(), map.len() as u64, l.offset) {
                Ok(a) => {
                    self.lt_hash.mix_out_account(
                        a.lamports,
                        a.data,
                        a.executable,
                        a.owner,
                        a.pubkey,
                    );
                    self.retracted += 1;
                }
                Err(e) => return self.fail(format!("accounts/{}.{}: {e}", l.slot, l.id)),
            }
        }
    }

    fn totals(&mut self) -> ShardTotals {
        self.retract_losers();
        self.last_referenced = None;
        for (gen, slot, id) in std::mem::take(&mut self.referenced) {
            if let Err(e) = self.map(gen, slot, id) {
                self.fail(e);
            }
        }
        ShardTotals {
            shard: self.shard,
            lt_hash: self.lt_hash.clone(),
            capitalization: self.lamports_live,
            accounts_total: self.accounts_total,
            owned_bytes: self.owned_bytes,
            accounts_live: self.index.len() as u64,
            zero_lamport_live: self.zero_lamport_live,
            data_bytes_live: self.data_bytes_live,
            scanned_accounts: self.scanned_accounts,
            scanned_bytes: self.scanned_bytes,
            files_written: self.files_written,
            retracted: self.retracted,
            write_mode: self.write_mode.clone(),
            scan_ms: self.scan_ns / 1_000_000,
            write_ms: self.write_ns / 1_000_000,
            idle_ms: self.idle_ns / 1_000_000,
            retract_ms: self.retract_ns / 1_000_000,
            error: self.error.clone(),
        }
    }

    fn record(&mut self, key: &[u8; 32]) -> Option<AccountRecord> {
        let e = *self.index.get(key)?;
        let map = self.map(e.gen, e.slot, e.id).ok()?;
        let a = account_at(map.bytes(), map.len() as u64, e.offset).ok()?;
        Some(AccountRecord {
            pubkey: *key,
            lamports: a.lamports,
            owner: *a.owner,
            executable: a.executable,
            rent_epoch: a.rent_epoch,
            data: a.data.to_vec(),
            location: AccountLocation {
                slot: e.slot,
                file_id: e.id,
                offset: e.offset,
            },
        })
    }

    /// Scan a complete file from its memory map.
    fn scan_mapped(
        &mut self,
        gen: u32,
        slot: u64,
        id: u64,
        current_len: u64,
        out: &mut [Vec<IndexEntry>],
    ) {
        let map = match self.map(gen, slot, id) {
            Ok(m) => m,
            Err(e) => return self.fail(e),
        };
        map.advise_sequential();
        let iter = match iter_accounts(map.bytes(), current_len) {
            Ok(it) => it,
            Err(e) => return self.fail(format!("accounts/{slot}.{id}: {e}")),
        };
        for item in iter {
            match item {
                Ok(a) => self.scanned(&a, gen, slot, id, out),
                Err(e) => return self.fail(format!("accounts/{slot}.{id}: {e}")),
            }
        }
    }
}

/// Reads of superseded entries a shard keeps in flight when it retracts them with DMA.
pub const RETRACT_READS_IN_FLIGHT: usize = 64;
/// Bytes read per superseded entry (header and most data; a longer entry is read again
/// at its exact size).
pub const RETRACT_READ_BYTES: usize = 1024;

type RetractRead = (Loser, std::io::Result<Vec<u8>>);

/// Environment variable selecting the index shards' runtime: `threads` for pinned plain
/// threads (write(2), mmap reads); unset or anything else for the glommio shard runtime
/// (io_uring DMA writes and reads), which falls back to threads where it cannot start.
pub const INDEX_RUNTIME_ENV: &str = "CATCHUP_SNAPSHOT_INDEX_RUNTIME";

/// Mix out the recorded losers with io_uring reads, many in flight (the files were
/// written with O_DIRECT, so the page cache does not hold them and one synchronous page
/// fault at a time would serialise on the device). Files are opened one at a time,
/// losers read in file order.
async fn retract_losers_dma(state: &Rc<RefCell<State>>) {
    let t = std::time::Instant::now();
    let (mut losers, dirs) = {
        let mut st = state.borrow_mut();
        (std::mem::take(&mut st.losers), st.dirs.clone())
    };
    losers.sort_unstable_by_key(|l| (l.gen, l.slot, l.id, l.offset));
    let mut i = 0;
    while i < losers.len() {
        let first = losers[i];
        let end = i + losers[i..]
            .iter()
            .take_while(|l| (l.gen, l.slot, l.id) == (first.gen, first.slot, first.id))
            .count();
        let group = &losers[i..end];
        i = end;
        let Some(dir) = dirs.get(&first.gen) else {
            state.borrow_mut().fail(format!(
                "accounts/{}.{}: no directory for snapshot {}",
                first.slot, first.id, first.gen
            ));
            return;
        };
        let path = dir.join(format!("{}.{}", first.slot, first.id));
        let file = match glommio::io::BufferedFile::open(&path).await {
            Ok(f) => {
                // Scattered reads: no readahead (it would pull in the whole file).
                use std::os::fd::AsRawFd;
                // SAFETY: the descriptor is open for the lifetime of `f`; fadvise only
                // sets a hint on it.
                unsafe {
                    libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM);
                }
                Rc::new(f)
            }
            Err(e) => {
                state
                    .borrow_mut()
                    .fail(format!("read {}: {e}", path.display()));
                return;
            }
        };
        let mut in_flight: std::collections::VecDeque<glommio::Task<RetractRead>> =
            Default::default();
        let mut next = 0;
        while next < group.len() || !in_flight.is_empty() {
            while next < group.len() && in_flight.len() < RETRACT_READS_IN_FLIGHT {
                let l = group[next];
                next += 1;
                let f = file.clone();
                in_flight.push_back(glommio::spawn_local(async move {
                    let r = f
                        .read_at(l.offset, RETRACT_READ_BYTES)
                        .await
                        .map(|b| b.to_vec())
                        .map_err(std::io::Error::from);
                    (l, r)
                }));
            }
            let Some(task) = in_flight.pop_front() else {
                break;
            };
            let (l, r) = task.await;
            let mut bytes = match r {
                Ok(b) => b,
                Err(e) => {
                    state
                        .borrow_mut()
                        .fail(format!("read {}: {e}", path.display()));
                    return;
                }
            };
            // A longer entry: read it whole.
            let hdr = catchup_solana::appendvec::ENTRY_HEADER_BYTES;
            if bytes.len() >= hdr {
                let data_len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
                let need =
                    hdr as u64 + data_len.min(catchup_solana::appendvec::MAX_ACCOUNT_DATA_BYTES);
                if need > bytes.len() as u64 {
                    match file.read_at(l.offset, need as usize).await {
                        Ok(b) => bytes = b.to_vec(),
                        Err(e) => {
                            state
                                .borrow_mut()
                                .fail(format!("read {}: {e}", path.display()));
                            return;
                        }
                    }
                }
            }
            let mut st = state.borrow_mut();
            match account_at(&bytes, bytes.len() as u64, 0) {
                Ok(a) => {
                    st.lt_hash
                        .mix_out_account(a.lamports, a.data, a.executable, a.owner, a.pubkey);
                    st.retracted += 1;
                }
                Err(e) => {
                    st.fail(format!(
                        "accounts/{}.{}: {}",
                        l.slot,
                        l.id,
                        e.to_string()
                            .replace("offset 0", &format!("offset {}", l.offset))
                    ));
                    return;
                }
            }
        }
        drop(in_flight);
        if let Ok(f) = Rc::try_unwrap(file) {
            let _ = f.close().await;
        }
    }
    state.borrow_mut().retract_ns += t.elapsed().as_nanos() as u64;
}

// ---------------------------------------------------------------------------------------
// Writing files

/// Where a shard writes: glommio DMA (io_uring, O_DIRECT) inside an executor, plain
/// `write(2)` on the thread fallback or where O_DIRECT is refused.
enum Sink {
    Dma(DmaStreamWriter),
    Plain(StreamedFile),
}

struct OpenFile {
    gen: u32,
    slot: u64,
    id: u64,
    path: PathBuf,
    declared_bytes: u64,
    received_bytes: u64,
    sink: Option<Sink>,
    scanner: Option<AppendVecScanner>,
    failed: bool,
}

async fn open_sink(
    path: &Path,
    declared_bytes: u64,
    dma: bool,
    mode: &mut String,
) -> Result<Sink, String> {
    if dma {
        match DmaStreamWriter::create(
            path,
            declared_bytes,
            WRITE_CHUNK_BYTES,
            DMA_WRITES_IN_FLIGHT,
        )
        .await
        {
            Ok(DmaCreate::Dma(w)) => {
                if mode.is_empty() {
                    *mode = "io_uring-dma".into();
                }
                return Ok(Sink::Dma(w));
            }
            Ok(DmaCreate::Refused(e)) => {
                if !mode.starts_with("write(2)") {
                    tracing::warn!(path = %path.display(), reason = %e,
                        "O_DIRECT refused for account files; writing them with write(2)");
                    *mode = format!("write(2): O_DIRECT refused: {e}");
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    } else if mode.is_empty() {
        *mode = "write(2): no io_uring executor".into();
    }
    StreamedFile::create(path, declared_bytes, WRITE_CHUNK_BYTES)
        .map(Sink::Plain)
        .map_err(|e| e.to_string())
}

impl Sink {
    async fn write(&mut self, data: &[u8]) -> Result<(), String> {
        match self {
            Sink::Plain(f) => f.write(data),
            Sink::Dma(w) => w.write(data).await,
        }
        .map_err(|e| e.to_string())
    }

    async fn finish(self, fsync: bool) -> Result<(), String> {
        match self {
            Sink::Plain(f) => f.finish(fsync).map(drop),
            Sink::Dma(w) => w.finish(fsync).await.map(drop),
        }
        .map_err(|e| e.to_string())
    }
}

// ---------------------------------------------------------------------------------------
// The shard's tasks

struct Links {
    to_peers: Vec<Option<flume::Sender<Peer>>>,
    from_peers: flume::Receiver<Peer>,
}

async fn send_batches(
    to_peers: &[Option<flume::Sender<Peer>>],
    out: &mut [Vec<IndexEntry>],
    min_entries: usize,
) -> Result<(), ()> {
    for (owner, batch) in out.iter_mut().enumerate() {
        if batch.len() >= min_entries.max(1) {
            let b = std::mem::replace(batch, Vec::with_capacity(INDEX_BATCH_ENTRIES));
            let Some(tx) = &to_peers[owner] else {
                continue;
            };
            tx.send_async(Peer::Batch(b)).await.map_err(|_| ())?;
        }
    }
    Ok(())
}

/// Serve the feeding thread's commands until the inbox closes.
async fn inbox_task(
    state: Rc<RefCell<State>>,
    inbox: flume::Receiver<Cmd>,
    to_peers: Vec<Option<flume::Sender<Peer>>>,
    epochs: flume::Receiver<u64>,
    queued: Arc<AtomicU64>,
    dma: bool,
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
                if send_batches(&to_peers, &mut out, INDEX_BATCH_ENTRIES)
                    .await
                    .is_err()
                {
                    state.borrow_mut().fail("index shard link closed".into());
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
                let mut st = state.borrow_mut();
                st.files_written += 1;
                if let Some(sc) = &f.scanner {
                    if let Err(e) = sc.finish() {
                        st.fail(format!("accounts/{}.{}: {e}", f.slot, f.id));
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
                    retract_losers_dma(&state).await;
                }
                let t = state.borrow_mut().totals();
                let _ = reply.send(t);
            }
            Cmd::Get(key, reply) => {
                let r = state.borrow_mut().record(&key);
                let _ = reply.send(r);
            }
            Cmd::All(reply) => {
                let mut st = state.borrow_mut();
                let keys: Vec<[u8; 32]> = st.index.keys().copied().collect();
                let mut v: Vec<AccountRecord> = keys.iter().filter_map(|k| st.record(k)).collect();
                v.sort_by_key(|a| a.pubkey);
                let _ = reply.send(v);
            }
        }
    }
    // Closing our links lets the peers' mesh tasks end.
    drop(to_peers);
}

/// Apply the index entries peers send, until every peer has closed its link.
async fn mesh_task(
    state: Rc<RefCell<State>>,
    from_peers: flume::Receiver<Peer>,
    epochs: flume::Sender<u64>,
) {
    while let Ok(msg) = from_peers.recv_async().await {
        match msg {
            Peer::Batch(b) => {
                let mut st = state.borrow_mut();
                for e in &b {
                    st.apply(e);
                }
            }
            Peer::Marker(epoch) => {
                let mut st = state.borrow_mut();
                let peers = st.shards - 1;
                let n = st.markers.entry(epoch).or_insert(0);
                *n += 1;
                if *n == peers {
                    st.markers.remove(&epoch);
                    let _ = epochs.send(epoch);
                }
            }
        }
    }
}

struct ShardStart {
    shard: usize,
    shards: usize,
    inbox: flume::Receiver<Cmd>,
    links: Links,
    queued: Arc<AtomicU64>,
    shared_error: Arc<SharedError>,
}

async fn shard_main(s: ShardStart, dma: bool) {
    let state = Rc::new(RefCell::new(State {
        shard: s.shard,
        shards: s.shards,
        dirs: HashMap::new(),
        maps: HashMap::new(),
        referenced: Default::default(),
        last_referenced: None,
        index: HashMap::with_hasher(ahash::RandomState::new()),
        lt_hash: LtHash::identity(),
        lamports_live: 0,
        zero_lamport_live: 0,
        data_bytes_live: 0,
        losers: Vec::new(),
        accounts_total: 0,
        owned_bytes: 0,
        scanned_accounts: 0,
        scanned_bytes: 0,
        files_written: 0,
        retracted: 0,
        write_mode: "no files written".into(),
        scan_ns: 0,
        write_ns: 0,
        idle_ns: 0,
        retract_ns: 0,
        markers: HashMap::new(),
        error: None,
        shared_error: s.shared_error,
    }));
    let (etx, erx) = flume::unbounded();
    let inbox = inbox_task(state.clone(), s.inbox, s.links.to_peers, erx, s.queued, dma);
    let mesh = mesh_task(state, s.links.from_peers, etx);
    if dma {
        // The inbox task scans for long stretches; in a latency-sensitive queue the
        // executor preempts it every SHARD_IO_LATENCY at its yield points to submit the
        // DMA writes it queued, so writes overlap the scanning.
        let tq = glommio::executor().create_task_queue(
            glommio::Shares::default(),
            glommio::Latency::Matters(SHARD_IO_LATENCY),
            "snap-scan",
        );
        match glommio::spawn_local_into(inbox, tq) {
            Ok(task) => {
                futures_lite::future::zip(task, mesh).await;
            }
            Err(e) => {
                // Cannot happen for a queue just created on this executor; report it.
                tracing::error!(error = %e, "snapshot shard: cannot spawn the scan task");
            }
        }
    } else {
        futures_lite::future::zip(inbox, mesh).await;
    }
}

// ---------------------------------------------------------------------------------------
// The handle used by the pipeline

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
fn pin_to_core(core: usize) {
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

type Parts = (
    Vec<flume::Sender<Cmd>>,
    Vec<Arc<AtomicU64>>,
    Vec<ShardStart>,
    Arc<SharedError>,
);

fn make_parts(shards: usize, inbox_capacity: usize) -> Parts {
    let shared_error = Arc::new(SharedError::default());
    let mut mesh_tx: Vec<Vec<Option<flume::Sender<Peer>>>> =
        (0..shards).map(|_| vec![None; shards]).collect();
    let mut mesh_rx = Vec::with_capacity(shards);
    for to in 0..shards {
        let (tx, rx) = flume::bounded(MESH_LINK_CAPACITY);
        for (from, row) in mesh_tx.iter_mut().enumerate() {
            if from != to {
                row[to] = Some(tx.clone());
            }
        }
        mesh_rx.push(rx);
    }
    let mut inboxes = Vec::with_capacity(shards);
    let mut queued = Vec::with_capacity(shards);
    let mut starts = Vec::with_capacity(shards);
    for (shard, (to_peers, from_peers)) in mesh_tx.into_iter().zip(mesh_rx).enumerate() {
        let (tx, rx) = flume::bounded(inbox_capacity.max(MIN_SHARD_INBOX_CAPACITY));
        let q = Arc::new(AtomicU64::new(0));
        inboxes.push(tx);
        queued.push(q.clone());
        starts.push(ShardStart {
            shard,
            shards,
            inbox: rx,
            links: Links {
                to_peers,
                from_peers,
            },
            queued: q,
            shared_error: shared_error.clone(),
        });
    }
    (inboxes, queued, starts, shared_error)
}

impl ShardSet {
    /// Start `shards` workers (at least one): on the `catchup_shards` glommio runtime (one
    /// pinned executor per shard) when it can start here, else on plain pinned threads.
    pub fn start(shards: usize) -> std::io::Result<Self> {
        Self::start_with_queue(shards, MIN_SHARD_INBOX_CAPACITY)
    }

    /// [`ShardSet::start`] with `inbox_capacity` file pieces of [`WRITE_CHUNK_BYTES`]
    /// queued per shard at most (see [`streaming_bytes`]).
    pub fn start_with_queue(shards: usize, inbox_capacity: usize) -> std::io::Result<Self> {
        let shards = shards.max(1);
        let cap = inbox_capacity.max(MIN_SHARD_INBOX_CAPACITY);
        // The glommio shard runtime (io_uring DMA writes and reads) unless told otherwise;
        // plain pinned threads where it cannot start (no io_uring, locked-memory limit).
        let use_runtime = std::env::var(INDEX_RUNTIME_ENV).as_deref() != Ok("threads");
        let started = if use_runtime {
            Self::start_on_runtime(shards, cap)
        } else {
            Err(format!("{INDEX_RUNTIME_ENV}=threads"))
        };
        match started {
            Ok(set) => Ok(set),
            Err(reason) => {
                tracing::debug!(%reason, "snapshot index: shard runtime unavailable, using plain threads");
                Self::start_on_threads(shards, cap)
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

    fn start_on_runtime(shards: usize, inbox_capacity: usize) -> Result<Self, String> {
        let (inboxes, queued, starts, shared_error) = make_parts(shards, inbox_capacity);
        let starts: Vec<Option<ShardStart>> = starts.into_iter().map(Some).collect();
        let starts = Arc::new(Mutex::new(starts));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(shards + 1);
        let failed_tx = ready_tx.clone();
        let cfg = catchup_shards::RuntimeConfig {
            handle_signals: false,
            name: "snap-index".into(),
            channel_capacity: 1,
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

    fn start_on_threads(shards: usize, inbox_capacity: usize) -> std::io::Result<Self> {
        let (inboxes, queued, starts, shared_error) = make_parts(shards, inbox_capacity);
        let cores = catchup_shards::allowed_cores();
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

/// A shard worker stopped unexpectedly.
#[derive(Debug, thiserror::Error)]
#[error("snapshot index shard stopped unexpectedly")]
pub struct ShardGone;

#[cfg(test)]
mod tests {
    use super::*;
    use catchup_solana::appendvec::append_account;

    fn file(entries: &[([u8; 32], u64, &[u8])]) -> Vec<u8> {
        let mut f = Vec::new();
        for (k, l, d) in entries {
            append_account(&mut f, k, *l, 0, &[9; 32], false, d);
        }
        f
    }

    /// Stream `bytes` as accounts/<slot>.<id> in pieces of `piece` bytes; with
    /// `late_scan` the file is written first and scanned from its map afterwards.
    fn stream(
        set: &mut ShardSet,
        (slot, id): (u64, u64),
        bytes: &[u8],
        piece: usize,
        late_scan: bool,
    ) {
        let len = bytes.len() as u64;
        let w = set
            .begin_file(0, slot, id, len, (!late_scan).then_some(len))
            .unwrap();
        for c in bytes.chunks(piece) {
            set.file_data(c.to_vec()).unwrap();
        }
        set.end_file(false).unwrap();
        if late_scan {
            set.scan_file(w, 0, slot, id, len).unwrap();
        }
    }

    #[test]
    fn newest_wins_and_sums_follow_the_live_set() {
        let (k1, k2, k3) = ([1u8; 32], [0x80u8; 32], [0x40u8; 32]);
        let a = file(&[
            // Longer than one retraction read: re-read whole when it is mixed out.
            (k1, 10, &[5u8; 3000]),
            (k2, 20, b"old"),
            (k1, 11, b"v2"),
            (k3, 0, b""),
        ]);
        let b = file(&[(k2, 21, b"new")]);
        let c = file(&[(k1, 9, b"v0")]);
        // Both runtimes: glommio (DMA writes, io_uring retraction reads) when it starts
        // here, and the plain-thread fallback (write(2), mmap reads).
        for (shards, threads) in [(1, false), (2, false), (3, false), (1, true), (3, true)] {
            for (piece, late) in [(7, false), (1 << 20, false), (100, true)] {
                let dir = tempfile::tempdir().unwrap();
                let mut set = if threads {
                    ShardSet::start_on_threads(shards, 2).unwrap()
                } else {
                    ShardSet::start(shards).unwrap()
                };
                if !threads && std::env::var("CI").as_deref() == Ok("true") {
                    assert_eq!(set.runtime(), "glommio", "CI runs the io_uring path");
                }
                set.set_dir(0, dir.path()).unwrap();
                stream(&mut set, (5, 0), &a, piece, late);
                stream(&mut set, (6, 1), &b, piece, late);
                stream(&mut set, (4, 2), &c, piece, late);
                let totals = set.totals().unwrap();
                let g1 = set.get(&k1).unwrap().unwrap();
                assert_eq!(
                    (g1.lamports, g1.data.as_slice(), g1.location.slot),
                    (11, &b"v2"[..], 5)
                );
                let g2 = set.get(&k2).unwrap().unwrap();
                assert_eq!((g2.lamports, g2.location.slot), (21, 6));
                assert!(set.get(&[7; 32]).unwrap().is_none());
                let mut lt = LtHash::identity();
                let mut cap = 0;
                for t in &totals {
                    assert!(t.error.is_none(), "{:?}", t.error);
                    lt.mix_in(&t.lt_hash);
                    cap += t.capitalization;
                }
                let mut want = LtHash::of_account(11, b"v2", false, &[9; 32], &k1);
                want.mix_in(&LtHash::of_account(21, b"new", false, &[9; 32], &k2));
                assert_eq!(
                    lt, want,
                    "{shards} shards, piece {piece}, threads {threads}"
                );
                assert_eq!(cap, 32);
                assert_eq!(totals.iter().map(|t| t.accounts_total).sum::<u64>(), 6);
                assert_eq!(totals.iter().map(|t| t.scanned_accounts).sum::<u64>(), 6);
                assert_eq!(totals.iter().map(|t| t.accounts_live).sum::<u64>(), 3);
                assert_eq!(totals.iter().map(|t| t.zero_lamport_live).sum::<u64>(), 1);
                // v1, old and v0 lost; each was hashed once and mixed out once.
                assert_eq!(totals.iter().map(|t| t.retracted).sum::<u64>(), 3);
                assert_eq!(totals.iter().map(|t| t.files_written).sum::<u64>(), 3);
                assert_eq!(set.all().unwrap().len(), 3);
                // A second totals request retracts nothing twice.
                let again = set.totals().unwrap();
                let mut lt2 = LtHash::identity();
                for t in &again {
                    lt2.mix_in(&t.lt_hash);
                }
                assert_eq!(lt2, want);
                for (name, bytes) in [("5.0", &a), ("6.1", &b), ("4.2", &c)] {
                    assert_eq!(&std::fs::read(dir.path().join(name)).unwrap(), bytes);
                }
            }
        }
    }

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

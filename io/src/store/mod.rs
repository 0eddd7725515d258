//! The per-shard store: append-only segment files written through io_uring DMA.
//!
//! One `Store` per shard, used on that shard's glommio executor (it is not `Send`).
//!
//! # Durability contract
//!
//! `put` appends a record to an in-memory write buffer and returns; once
//! `StoreOptions::write_buffer_bytes` are pending, their whole blocks are written behind
//! (handed to io_uring while puts go on, at most 4 such writes in flight). **A record is
//! durable once a later [`Store::flush`] has returned `Ok`**. `flush` waits for the writes
//! in flight, writes the partially filled last block (zero padded, rewritten later) and
//! issues one `fdatasync` for everything put since the previous flush: callers batch many
//! puts and flush once per batch (group commit). Records put after the last successful
//! flush may or may not survive a crash, but never half: a torn tail is cut off at the
//! next open. After any write or sync error the store refuses further writes
//! ([`StoreError::Poisoned`]), so nothing is acknowledged on top of a failed write.
//!
//! When several tasks of a shard write, share the store as a [`SharedStore`]: its
//! `put_durable` resolves only after the `fdatasync` covering the record, and concurrent
//! writers share one `fdatasync` per commit (one commit in flight; the next batch
//! collects meanwhile).
//!
//! # Files
//!
//! `dir/seg-00000001.dat`, `seg-00000002.dat`, ...: records (see [`record`]) packed back to
//! back; a new segment starts when the current one would exceed
//! `StoreOptions::segment_size_bytes`. `dir/LOCK` is flocked while the store is open
//! ([`StoreError::InUse`]). At open the segments are scanned (after the checkpoint, if one
//! is used, see below) and the in-memory index (kind, key) → location is rebuilt. In the
//! last segment, bytes after the last valid record are a torn tail and are truncated,
//! unless a valid record follows them, in which case they are corruption:
//! [`StoreError::Corrupt`] names the segment and offset and the store does not open. One
//! exception: writes behind land in any order, so a process killed with several in
//! flight can leave a later block written and an earlier one not. A whole aligned block of
//! zeros right after the damaged record, within the bytes writes in flight could have
//! covered at the end of the last segment, is such a lost write; nothing after it was
//! acknowledged, and the tail is cut there. In an earlier segment only zero padding may
//! follow the last record. Every read re-checks the
//! record checksums, so a damaged record is reported, never served.
//!
//! A clean [`Store::close`] writes an index checkpoint (`index.cur`, atomic); the next
//! open loads it and scans only the bytes written after it (see `StoreOptions::use_checkpoint`).
//! After a crash the newest checkpoint is older than the crash, so at least the tail
//! written since is scanned and cut as above.
//!
//! # The fingerprint index
//!
//! Keys of fingerprinted kinds (`StoreOptions::fingerprinted_kinds`) are kept in a
//! memtable of recent fingerprints bounded by `StoreOptions::max_index_memory_bytes`.
//! Numbered kinds (`StoreOptions::numbered_kinds`, block numbers) are kept there too,
//! an 8-byte key as its own fingerprint (the key, then eight zero bytes).
//! When it is full, the records are made durable, the memtable is written as a sorted run
//! file (see [`runs`]: fsynced and renamed before use) and a checkpoint naming the runs
//! and the segment offset they cover is saved. Runs of similar size are merged on a
//! thread of their own while the next memtable fills (one merge at a time, installed by
//! the next write-out; the inputs deleted only once the merged run and the checkpoint
//! naming it are durable). In memory each run keeps its fence keys and a Bloom filter (about 1.4 bytes
//! per key). A lookup asks the memtable, then the runs newest first (filter, fences, one
//! 4 KiB `pread`). The next open loads the runs' fences and filters and scans only the
//! segment bytes after the checkpoint's mark. A run that fails its checks at open makes
//! the open ignore the checkpoint and rebuild the index from the segments; a run block
//! that fails its checksum when read is a [`StoreError::IndexRun`] (the store refuses
//! writes and removes its checkpoint, so that the next open rebuilds the index).
//!
//! # Bulk reads
//!
//! Segments are scanned in large sequential blocks ([`SCAN_CHUNK_BYTES`], with
//! [`SCAN_READS_IN_FLIGHT`] reads queued ahead), both at open and by
//! [`Store::scan_all`] / [`Store::scan`], which stream every live record (the one the index
//! points at) with its checksums verified, without a read per record. Use them to load a
//! whole store; [`Store::get`] and [`Store::iter_kind`] read one record per I/O.
//!
//! Kinds listed in `StoreOptions::content_addressed_kinds` are write-once: a put of a key
//! already present is a no-op. For other kinds the latest put of a key wins.

mod checkpoint;
pub mod file;
pub mod record;
mod runs;
pub mod salvage;
mod scan;
mod shared;

pub use scan::{ScanRecord, ScanStats, StoreScan, SCAN_CHUNK_BYTES, SCAN_READS_IN_FLIGHT};
pub use shared::SharedStore;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;

use file::{SegFile, IO_ALIGN_BYTES};
use record::{RecordDefect, RecordLimits, RECORD_HEADER_BYTES};

/// Background writes of whole blocks that may be in flight at once (see `write_out`).
const MAX_WRITES_IN_FLIGHT: usize = 4;

type WriteFuture = Pin<Box<dyn Future<Output = std::io::Result<()>>>>;

/// A background write of whole blocks starting at `start` in the active segment.
struct InFlightWrite {
    start: u64,
    fut: WriteFuture,
}

/// Upper bound on the number of segments a store may have (bounds the open-time scan).
pub const MAX_SEGMENTS: u32 = 1 << 20;

/// Store configuration.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A new segment is started when a record would make the current one larger than this.
    pub segment_size_bytes: u64,
    /// Once this many bytes are pending, their whole blocks are written behind (handed
    /// to the kernel while puts continue; a few such writes may be in flight) without
    /// waiting for a flush. A multiple of 4096.
    pub write_buffer_bytes: usize,
    /// Largest key accepted (at most 65535).
    pub max_key_bytes: usize,
    /// Largest value accepted.
    pub max_value_bytes: usize,
    /// Kinds whose records are content-addressed (key = hash of value): written once.
    pub content_addressed_kinds: Vec<u8>,
    /// Load the index checkpoint written by the last clean `close` and scan only what
    /// follows it. Records covered by the checkpoint are then verified when read, not at
    /// open; `false` scans (and verifies) every segment at open.
    pub use_checkpoint: bool,
    /// Largest index checkpoint written at close, in bytes. The checkpoint is built in
    /// memory (about key length + 19 bytes per key, twice while it is saved), so a store
    /// with a memory budget keeps this well below it; a larger index is not
    /// checkpointed and the next open scans the segments instead.
    pub max_checkpoint_bytes: u64,
    /// Kinds whose 32-byte keys are uniformly distributed hashes (keccak): the index
    /// keeps only their first [`FINGERPRINT_BYTES`] bytes (a collision of two such keys
    /// takes about 2^64 keys), which more than halves its memory per key. Reads check the
    /// full key in the record. Beyond the memtable (`max_index_memory_bytes`) their
    /// fingerprints live in sorted run files (see the module docs).
    pub fingerprinted_kinds: Vec<u8>,
    /// Kinds keyed by 8-byte big-endian numbers (block numbers): kept in the fingerprint
    /// index as well, each key as the number itself (exact, in key order), so that
    /// beyond the memtable they cost about 1.4 bytes of memory a key, as fingerprinted
    /// keys do, instead of 12 or more. Every numbered kind is also listed in
    /// `fingerprinted_kinds`; its keys of other lengths are kept whole.
    pub numbered_kinds: Vec<u8>,
    /// Memory the fingerprint memtable may use before it is written out as a sorted run
    /// file (see the module docs). Beyond it each fingerprinted key costs about 1.4 bytes
    /// of memory (run fences and filter).
    pub max_index_memory_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_size_bytes: 256 << 20,
            write_buffer_bytes: 1 << 20,
            max_key_bytes: 1024,
            max_value_bytes: 16 << 20,
            content_addressed_kinds: Vec::new(),
            use_checkpoint: true,
            max_checkpoint_bytes: checkpoint::MAX_CHECKPOINT_BYTES,
            fingerprinted_kinds: Vec::new(),
            numbered_kinds: Vec::new(),
            max_index_memory_bytes: 256 << 20,
        }
    }
}

impl StoreOptions {
    /// Mark `kind` as content-addressed (write-once).
    pub fn content_addressed(mut self, kind: u8) -> Self {
        if !self.content_addressed_kinds.contains(&kind) {
            self.content_addressed_kinds.push(kind);
        }
        self
    }

    /// Keep `kind`'s 32-byte keys by fingerprint (see `fingerprinted_kinds`).
    pub fn fingerprinted(mut self, kind: u8) -> Self {
        if !self.fingerprinted_kinds.contains(&kind) {
            self.fingerprinted_kinds.push(kind);
        }
        self
    }

    /// Keep `kind`'s 8-byte keys in the fingerprint index by number (see
    /// `numbered_kinds`).
    pub fn numbered(mut self, kind: u8) -> Self {
        if !self.numbered_kinds.contains(&kind) {
            self.numbered_kinds.push(kind);
        }
        self.fingerprinted(kind)
    }

    /// How each kind's keys are indexed.
    fn fp_kinds(&self) -> FpKinds {
        let mut k = FpKinds::default();
        for f in &self.fingerprinted_kinds {
            k.fingerprinted[*f as usize] = true;
        }
        for n in &self.numbered_kinds {
            k.numbered[*n as usize] = true;
        }
        k
    }

    fn validate(&self) -> Result<(), StoreError> {
        let bad = |what: String| Err(StoreError::BadOptions { what });
        if self.write_buffer_bytes == 0 || self.write_buffer_bytes as u64 % IO_ALIGN_BYTES != 0 {
            return bad(format!(
                "write_buffer_bytes {} must be a non-zero multiple of {IO_ALIGN_BYTES}",
                self.write_buffer_bytes
            ));
        }
        if self.max_key_bytes > u16::MAX as usize {
            return bad(format!(
                "max_key_bytes {} exceeds 65535",
                self.max_key_bytes
            ));
        }
        if self.max_value_bytes > u32::MAX as usize / 2 {
            return bad(format!(
                "max_value_bytes {} too large",
                self.max_value_bytes
            ));
        }
        if let Some(k) = self
            .numbered_kinds
            .iter()
            .find(|k| !self.fingerprinted_kinds.contains(k))
        {
            return bad(format!(
                "numbered kind {k} is not fingerprinted (use StoreOptions::numbered)"
            ));
        }
        if !self.fingerprinted_kinds.is_empty() && self.segment_size_bytes > runs::MAX_OFFSET {
            return bad(format!(
                "segment_size_bytes {} exceeds {} (fingerprint index offsets)",
                self.segment_size_bytes,
                runs::MAX_OFFSET
            ));
        }
        let max_record = record::encoded_len(self.max_key_bytes, self.max_value_bytes) as u64;
        if self.segment_size_bytes < max_record {
            return bad(format!(
                "segment_size_bytes {} is smaller than the largest record ({max_record} bytes)",
                self.segment_size_bytes
            ));
        }
        Ok(())
    }
}

/// Errors of the store; each names the file (and offset) or limit involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt store segment {segment} at offset {offset}: {reason}")]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    #[error("key of {len_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    KeyTooLarge { len_bytes: usize, max_bytes: usize },
    #[error("value of {len_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    ValueTooLarge { len_bytes: usize, max_bytes: usize },
    #[error("store in {dir} refuses writes after an earlier write error: {first_error}")]
    Poisoned { dir: PathBuf, first_error: String },
    #[error("invalid store options: {what}")]
    BadOptions { what: String },
    #[error("store in {dir} is already open (by this or another process)")]
    InUse { dir: PathBuf },
    #[error("store in {dir} has more than {max} segments")]
    TooManySegments { dir: PathBuf, max: u32 },
    #[error("store in {dir} was closed through another handle")]
    Closed { dir: PathBuf },
    #[error("store index run {path} is unusable ({reason}); the store refuses writes and its next open rebuilds the index from the segments")]
    IndexRun { path: PathBuf, reason: String },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Bytes of a fingerprinted key kept in the index (see
/// [`StoreOptions::fingerprinted_kinds`]).
pub const FINGERPRINT_BYTES: usize = 16;

/// Maps a fingerprinted kind's index is split into.
const FP_PARTS: usize = 256;

/// One part of a fingerprinted kind's memtable.
type FpMap = HashMap<u128, Loc, ahash::RandomState>;

/// Which kinds the fingerprint index keeps, and which of those by number.
#[derive(Debug, Clone)]
pub(crate) struct FpKinds {
    pub fingerprinted: [bool; 256],
    pub numbered: [bool; 256],
}

impl Default for FpKinds {
    fn default() -> Self {
        FpKinds {
            fingerprinted: [false; 256],
            numbered: [false; 256],
        }
    }
}

/// One kind's index: key → location. For a fingerprinted kind, 32-byte keys are kept as
/// their first [`FINGERPRINT_BYTES`] bytes (no allocation per key); the full key is in
/// the record and is checked whenever a record is read.
#[derive(Debug, Clone, Default)]
struct KindMap {
    full: HashMap<Box<[u8]>, Loc, ahash::RandomState>,
    /// Keys of 8 bytes (block numbers: headers, bodies, receipts) kept inline as
    /// big-endian integers: 24 bytes a bucket instead of 32 and an 8-byte allocation.
    short: HashMap<u64, Loc, ahash::RandomState>,
    /// 8-byte keys below `dense.len()`, by value (12 bytes a key, see [`DenseLoc`]; a
    /// hole is all zero).
    /// It grows to cover a new key while at least a quarter of it would be used, so
    /// block numbers, which come close together, end up here whatever their order.
    dense: Vec<DenseLoc>,
    /// Keys in `dense`.
    dense_len: usize,
    /// Fingerprinted entries in [`FP_PARTS`] maps by the fingerprint's first byte (empty
    /// unless the kind is fingerprinted): each map grows on its own, so growing the
    /// index never holds two copies of all of it.
    fp: Vec<FpMap>,
    /// Entries in `fp` (the memtable).
    fp_len: usize,
    /// Distinct keys kept by fingerprint, in the memtable and the runs.
    fp_total: u64,
    fingerprinted: bool,
    /// 8-byte keys are kept in the fingerprint index by number (see
    /// `StoreOptions::numbered_kinds`).
    numbered: bool,
}

impl KindMap {
    /// The fingerprint of `key` when it is kept by fingerprint: its first
    /// [`FINGERPRINT_BYTES`] bytes, big-endian (so that fingerprints sort as keys do); for
    /// a numbered kind, an 8-byte key followed by zeros (the key itself, exactly).
    fn fp_of(&self, key: &[u8]) -> Option<u128> {
        if self.numbered {
            let n: [u8; 8] = key.try_into().ok()?;
            return Some((u64::from_be_bytes(n) as u128) << 64);
        }
        if self.fingerprinted && key.len() == 32 {
            key[..FINGERPRINT_BYTES]
                .try_into()
                .ok()
                .map(u128::from_be_bytes)
        } else {
            None
        }
    }

    /// The memtable part of fingerprint `f`: parts cover consecutive ranges of
    /// fingerprints, so that writing them in order writes a sorted run. A hash's first
    /// byte; a number's 65,536 numbers a part (the last part holds all above).
    fn fp_part(&self, f: u128) -> usize {
        if self.numbered {
            ((f >> 80) as usize).min(FP_PARTS - 1)
        } else {
            (f >> 120) as usize % FP_PARTS
        }
    }

    /// The key whose fingerprint is `f`, when the fingerprint is the whole key (a
    /// numbered kind's).
    fn key_of_fp(&self, f: u128) -> Option<[u8; 8]> {
        (self.numbered && f as u64 == 0).then(|| ((f >> 64) as u64).to_be_bytes())
    }

    fn contains_key(&self, key: &[u8]) -> bool {
        match (self.fp_of(key), short_key(key)) {
            (Some(f), _) => self.fp[self.fp_part(f)].contains_key(&f),
            (None, Some(k)) => self.short_get(k).is_some(),
            (None, None) => self.full.contains_key(key),
        }
    }

    fn get(&self, key: &[u8]) -> Option<Loc> {
        match (self.fp_of(key), short_key(key)) {
            (Some(f), _) => self.fp[self.fp_part(f)].get(&f).copied(),
            (None, Some(k)) => self.short_get(k),
            (None, None) => self.full.get(key).copied(),
        }
    }

    fn insert(&mut self, key: &[u8], loc: Loc) -> Option<Loc> {
        match (self.fp_of(key), short_key(key)) {
            (Some(f), _) => {
                let part = self.fp_part(f);
                let old = self.fp[part].insert(f, loc);
                self.fp_len += old.is_none() as usize;
                old
            }
            (None, Some(k)) => self.short_insert(k, loc),
            (None, None) => self.full.insert(key.into(), loc),
        }
    }

    fn short_get(&self, k: u64) -> Option<Loc> {
        match self.dense.get(k as usize) {
            Some(d) => d.unpack().or_else(|| self.short.get(&k).copied()),
            None => self.short.get(&k).copied(),
        }
    }

    fn short_insert(&mut self, k: u64, loc: Loc) -> Option<Loc> {
        debug_assert!(loc.len != 0, "a record is never empty");
        let i = k as usize;
        if i >= self.dense.len() {
            // Grow over `k` when a quarter of the new length would hold keys.
            if (k >> 40) != 0 {
                return self.short.insert(k, loc);
            }
            let keys = self.dense_len + self.short.len() + 1;
            let want = (i + 1).next_power_of_two().max(1024);
            if keys.saturating_mul(4) < want {
                return self.short.insert(k, loc);
            }
            self.dense.resize(want, DenseLoc::HOLE);
            let moved: Vec<(u64, DenseLoc)> = self
                .short
                .iter()
                .filter(|(&m, _)| (m as usize) < want)
                .filter_map(|(&m, &l)| Some((m, DenseLoc::pack(l)?)))
                .collect();
            for (m, d) in moved {
                self.short.remove(&m);
                self.dense[m as usize] = d;
                self.dense_len += 1;
            }
            self.short.shrink_to_fit();
        }
        let Some(d) = DenseLoc::pack(loc) else {
            // Past what 12 bytes hold: kept in the map (a hole stays here for `k`).
            let old = self.short_get(k);
            if let Some(was) = self.dense.get_mut(i).filter(|d| !d.is_hole()) {
                *was = DenseLoc::HOLE;
                self.dense_len -= 1;
            }
            self.short.insert(k, loc);
            return old;
        };
        if self.dense[i].is_hole() {
            if let Some(old) = self.short.remove(&k) {
                self.dense[i] = d;
                self.dense_len += 1;
                return Some(old);
            }
        }
        let old = std::mem::replace(&mut self.dense[i], d).unpack();
        if old.is_none() {
            self.dense_len += 1;
        }
        old
    }

    fn dense_entries(&self) -> impl Iterator<Item = (u64, Loc)> + '_ {
        self.dense
            .iter()
            .enumerate()
            .filter_map(|(k, d)| Some((k as u64, d.unpack()?)))
    }

    fn len(&self) -> usize {
        self.full.len() + self.short.len() + self.dense_len + self.fp_total as usize
    }

    /// Locations of every key.
    fn values(&self) -> impl Iterator<Item = Loc> + '_ {
        self.full
            .values()
            .chain(self.short.values())
            .copied()
            .chain(self.dense_entries().map(|(_, l)| l))
            .chain(self.fp.iter().flat_map(|m| m.values()).copied())
    }

    /// Entries kept with their full key (those of 8 bytes included).
    fn full_entries(&self) -> impl Iterator<Item = (EntryKey<'_>, Loc)> {
        self.full
            .iter()
            .map(|(k, l)| (EntryKey::Boxed(k), *l))
            .chain(
                self.short
                    .iter()
                    .map(|(k, l)| (*k, *l))
                    .chain(self.dense_entries())
                    .map(|(k, l)| (EntryKey::Short(k.to_be_bytes()), l)),
            )
    }

    /// Entries kept by fingerprint.
    fn fp_entries(&self) -> impl Iterator<Item = ([u8; FINGERPRINT_BYTES], &Loc)> {
        self.fp
            .iter()
            .flat_map(|m| m.iter())
            .map(|(f, l)| (f.to_be_bytes(), l))
    }

    fn has_fingerprints(&self) -> bool {
        self.fp_total > 0
    }
}

type Index = Vec<KindMap>;

/// An 8-byte key as the integer it is kept as in [`KindMap::short`].
fn short_key(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

/// A key of [`KindMap::full_entries`]: borrowed, or rebuilt from its integer.
#[derive(Debug, Clone, Copy)]
enum EntryKey<'a> {
    Boxed(&'a [u8]),
    Short([u8; 8]),
}

impl std::ops::Deref for EntryKey<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            EntryKey::Boxed(k) => k,
            EntryKey::Short(k) => k,
        }
    }
}

/// A record's key and value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// An empty index whose fingerprinted kinds keep 32-byte keys by fingerprint (and
/// numbered kinds 8-byte keys by number).
fn new_index_with(kinds: &FpKinds) -> Index {
    (0..256)
        .map(|k| KindMap {
            fingerprinted: kinds.fingerprinted[k],
            numbered: kinds.numbered[k],
            fp: if kinds.fingerprinted[k] {
                (0..FP_PARTS).map(|_| HashMap::default()).collect()
            } else {
                Vec::new()
            },
            ..KindMap::default()
        })
        .collect()
}

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Loc {
    seg: u32,
    off: u64,
    len: u32,
}

/// A [`Loc`] in 12 bytes for [`KindMap::dense`]: segment (24 bits) and offset (40 bits)
/// over the first two words, length in the third. All zero is a hole (no record has
/// length 0). A location past these widths stays in [`KindMap::short`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DenseLoc([u32; 3]);

impl DenseLoc {
    const HOLE: DenseLoc = DenseLoc([0; 3]);

    fn pack(l: Loc) -> Option<DenseLoc> {
        if l.len == 0 || l.seg >= 1 << 24 || l.off >= 1 << 40 {
            return None;
        }
        Some(DenseLoc([
            l.seg | ((l.off >> 32) as u32) << 24,
            l.off as u32,
            l.len,
        ]))
    }

    fn unpack(self) -> Option<Loc> {
        let [a, b, len] = self.0;
        (len != 0).then_some(Loc {
            seg: a & 0x00ff_ffff,
            off: ((a >> 24) as u64) << 32 | b as u64,
            len,
        })
    }

    fn is_hole(self) -> bool {
        self.0[2] == 0
    }
}

/// Counters of one store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Distinct (kind, key) pairs in the index.
    pub keys: u64,
    /// Record bytes appended since open.
    pub appended_bytes: u64,
    /// Records appended since open.
    pub appended_records: u64,
    /// Number of `fdatasync` calls since open.
    pub syncs: u64,
    /// Segment files.
    pub segments: u32,
    /// Bytes of torn tail cut off at open.
    pub truncated_tail_bytes: u64,
    /// Whether the active segment is written with O_DIRECT.
    pub direct_io: bool,
    /// Whether open loaded the index checkpoint (and scanned only what followed it).
    pub opened_from_checkpoint: bool,
    /// Segment bytes scanned at open.
    pub scanned_bytes: u64,
    /// Sorted run files of the fingerprint index.
    pub index_runs: u32,
    /// Entries in those runs (a key overwritten since it was written out may be counted
    /// in several).
    pub index_run_entries: u64,
    /// Bytes of those run files.
    pub index_run_file_bytes: u64,
    /// Memory kept for the runs (fences and filters), in bytes.
    pub index_run_memory_bytes: u64,
    /// Fingerprints in the memtable.
    pub index_memtable_keys: u64,
    /// Memtables written out as runs since open.
    pub index_flushes: u64,
    /// Run merges since open.
    pub index_merges: u64,
    /// Write calls issued to segment files since open.
    pub writes: u64,
    /// Bytes written to segment files since open: record bytes, block padding, and the
    /// partial last block written again by the next write.
    pub written_bytes: u64,
    /// Time spent waiting for segment writes to complete, in microseconds.
    pub write_wait_us: u64,
    /// Time spent waiting for `fdatasync`, in microseconds (the store's own syncs; a
    /// [`SharedStore`]'s group commits are counted in its own stats).
    pub sync_wait_us: u64,
}

struct Segment {
    path: PathBuf,
    /// Shared with a group commit's `fdatasync` in flight (see [`SharedStore`]).
    file: Rc<SegFile>,
}

/// A per-shard append-only store. See the module docs for the durability contract.
pub struct Store {
    dir: PathBuf,
    opts: StoreOptions,
    limits: RecordLimits,
    content_addressed: [bool; 256],
    /// One map per kind (256 entries; empty maps do not allocate). For fingerprinted
    /// kinds it is the memtable in front of `runs`.
    index: Index,
    /// Sorted runs of the fingerprint index, oldest first.
    runs: Vec<runs::Run>,
    /// Id of the next run file (never reused).
    next_run_id: u64,
    /// (segment, offset) up to which the runs hold every fingerprinted key.
    covered: (u32, u64),
    /// Logical end (end of the last record) of each sealed segment.
    seg_ends: BTreeMap<u32, u64>,
    /// The merge of two runs in the background, if any.
    merge: MergeSlot,
    sealed: BTreeMap<u32, Segment>,
    active_id: u32,
    active: Segment,
    /// Logical length of the active segment, pending bytes included.
    active_len: u64,
    /// Bytes of the active segment from `pending_pos` on that are not yet fully on disk
    /// (the partially filled last block is kept here and rewritten).
    pending: Vec<u8>,
    pending_pos: u64,
    /// Records (counted as `stats.appended_records`) written out for a sync: everything up
    /// to here is durable or covered by a commit whose `fdatasync` is in flight.
    synced_seq: u64,
    /// Background writes of whole blocks, oldest first (see `write_out`).
    in_flight: RefCell<VecDeque<InFlightWrite>>,
    /// First error of a background write found by a reader (`&self`): poisons the store.
    write_error: RefCell<Option<String>>,
    /// Time spent waiting for writes, in microseconds (updated by `&self` readers too).
    write_wait_us: Cell<u64>,
    poisoned: Option<String>,
    stats: StoreStats,
    /// Buffered read-only descriptors of segments for [`Store::get_blocking`].
    blocking_readers: RefCell<HashMap<u32, std::fs::File>>,
    /// Exclusive flock on `dir/LOCK`, released when the store is dropped or closed.
    _lock: std::fs::File,
}

fn seg_name(id: u32) -> String {
    format!("seg-{id:08}.dat")
}

fn parse_seg_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".dat")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn align_down(v: u64) -> u64 {
    v / IO_ALIGN_BYTES * IO_ALIGN_BYTES
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(IO_ALIGN_BYTES) * IO_ALIGN_BYTES
}

/// A read window over a segment used by the open-time scan: sequential block reads
/// queued ahead (see [`scan::SeqReader`]).
struct Scanner {
    rd: scan::SeqReader,
    file_len: u64,
}

impl Scanner {
    /// Bytes `[start, start + len)` clipped to the end of file.
    async fn bytes(&mut self, start: u64, len: usize) -> Result<&[u8], StoreError> {
        self.rd.bytes(start, len).await
    }

    /// Offset of the first valid record starting at or after `from`, if any.
    async fn find_valid_after(
        &mut self,
        from: u64,
        limits: &RecordLimits,
    ) -> Result<Option<u64>, StoreError> {
        let mut p = from;
        // Bounded: advances by at least one byte per candidate, stops at end of file.
        while p + RECORD_HEADER_BYTES as u64 <= self.file_len {
            let chunk_len = (self.file_len - p).min(SCAN_CHUNK_BYTES as u64) as usize;
            let chunk = self.bytes(p, chunk_len).await?.to_vec();
            for i in 0..chunk.len() {
                if chunk[i] != record::RECORD_MAGIC[0]
                    || chunk.get(i + 1) != Some(&record::RECORD_MAGIC[1])
                {
                    continue;
                }
                let q = p + i as u64;
                let hdr = self.bytes(q, RECORD_HEADER_BYTES).await?;
                let Ok(h) = record::parse_header(hdr, limits) else {
                    continue;
                };
                if q + h.record_len() as u64 > self.file_len {
                    continue;
                }
                let body = self
                    .bytes(q + RECORD_HEADER_BYTES as u64, h.key_len + h.value_len)
                    .await?;
                if record::check_body(&h, body).is_ok() {
                    return Ok(Some(q));
                }
            }
            p += chunk_len as u64;
        }
        Ok(None)
    }

    /// Whether the bytes `from..to` (within the file) are all zero.
    async fn all_zero_in(&mut self, from: u64, to: u64) -> Result<bool, StoreError> {
        let mut p = from;
        while p < to.min(self.file_len) {
            let n = (to.min(self.file_len) - p).min(SCAN_CHUNK_BYTES as u64) as usize;
            if self.bytes(p, n).await?.iter().any(|b| *b != 0) {
                return Ok(false);
            }
            p += n as u64;
        }
        Ok(true)
    }

    async fn all_zero_from(&mut self, from: u64) -> Result<bool, StoreError> {
        let mut p = from;
        while p < self.file_len {
            let n = (self.file_len - p).min(SCAN_CHUNK_BYTES as u64) as usize;
            if self.bytes(p, n).await?.iter().any(|b| *b != 0) {
                return Ok(false);
            }
            p += n as u64;
        }
        Ok(true)
    }
}

impl Store {
    /// Open the store in `dir` (created if missing), scan its segments and rebuild the
    /// index. Must run on a glommio executor.
    pub async fn open(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<Store, StoreError> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let lock = lock_store_dir(&dir)?;
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            if let Some(id) = entry.file_name().to_str().and_then(parse_seg_name) {
                ids.push(id);
                if ids.len() as u32 > MAX_SEGMENTS {
                    return Err(StoreError::TooManySegments {
                        dir,
                        max: MAX_SEGMENTS,
                    });
                }
            }
        }
        ids.sort_unstable();
        let mut file_lens = BTreeMap::new();
        for id in &ids {
            let path = dir.join(seg_name(*id));
            let len = std::fs::metadata(&path)
                .map_err(io_err("stat", &path))?
                .len();
            file_lens.insert(*id, len);
        }
        let mut content_addressed = [false; 256];
        for k in &opts.content_addressed_kinds {
            content_addressed[*k as usize] = true;
        }
        let limits = RecordLimits {
            max_key_bytes: opts.max_key_bytes,
            max_value_bytes: opts.max_value_bytes,
        };
        let fingerprinted = opts.fp_kinds();
        // Run files on disk: their ids are never reused.
        let mut next_run_id = 1u64;
        let mut run_files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let base = name.strip_suffix(".tmp").unwrap_or(&name);
            if let Some(id) = runs::parse_run_name(base) {
                next_run_id = next_run_id.max(id.saturating_add(1));
                run_files.push((id, name));
            }
        }
        let ck = if opts.use_checkpoint {
            load_checkpoint(&dir, &file_lens, &opts, &fingerprinted)
        } else {
            None
        };
        // Runs no checkpoint in use names (a crash before the checkpoint naming them, or
        // the inputs of a finished merge) are removed.
        let mut removed = false;
        for (id, name) in &run_files {
            let used = ck
                .as_ref()
                .is_some_and(|(_, rs)| !name.ends_with(".tmp") && rs.iter().any(|r| r.id == *id));
            if !used {
                let path = dir.join(name);
                std::fs::remove_file(&path).map_err(io_err("removing", &path))?;
                removed = true;
            }
        }
        if ck.is_none() && !opts.fingerprinted_kinds.is_empty() {
            // A checkpoint not used now is never used later: the runs it names are gone
            // and their ids may be given to new runs.
            for suffix in ["cur", "prev"] {
                let path = dir.join(format!("{}.{suffix}", checkpoint::JOURNAL_NAME));
                match std::fs::remove_file(&path) {
                    Ok(()) => removed = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("removing", &path)(e)),
                }
            }
        }
        if removed {
            crate::datadir::fsync_dir(&dir).map_err(io_err("syncing directory", &dir))?;
        }
        let mut stats = StoreStats {
            opened_from_checkpoint: ck.is_some(),
            ..StoreStats::default()
        };
        let (mut index, ck_sealed, ck_sealed_ends, ck_active, ck_full, mut runs) = match ck {
            Some((ck, runs)) => {
                let mut index = ck.index;
                for (k, n) in ck.fp_counts {
                    index[k as usize].fp_total = n;
                }
                (
                    index,
                    ck.sealed,
                    ck.sealed_ends,
                    Some((ck.active_id, ck.active_len)),
                    ck.full,
                    runs,
                )
            }
            None => (
                new_index_with(&fingerprinted),
                BTreeMap::new(),
                BTreeMap::new(),
                None,
                true,
                Vec::new(),
            ),
        };
        // Without the whole keys the segments before the mark are scanned for them
        // (fingerprinted keys there are in the runs already).
        let skip_fp_before = if ck_full { None } else { ck_active };
        let mut covered = ck_active.unwrap_or((0, 0));
        let mut seg_ends = BTreeMap::new();
        let mut sealed = BTreeMap::new();
        let mut active: Option<(u32, Segment, u64)> = None;
        for (i, id) in ids.iter().copied().enumerate() {
            let is_last = i + 1 == ids.len();
            let path = dir.join(seg_name(id));
            let file = Rc::new(
                SegFile::open(&path, false)
                    .await
                    .map_err(io_err("opening", &path))?,
            );
            if ck_full && ck_sealed.contains_key(&id) {
                // Covered by the checkpoint (never the last segment: the checkpoint's
                // active segment comes after it).
                seg_ends.insert(id, ck_sealed_ends.get(&id).copied().unwrap_or(0));
                sealed.insert(id, Segment { path, file });
                continue;
            }
            let start = match ck_active {
                Some((aid, alen)) if ck_full && aid == id => alen,
                _ => 0,
            };
            let end = scan_segment(
                ScanTarget {
                    id,
                    path: &path,
                    file: &file,
                    start,
                    is_last,
                    skip_fp_before,
                    window: unacknowledged_window(&opts, &limits),
                },
                &limits,
                &content_addressed,
                &mut index,
                &runs,
                &mut stats,
            )
            .await?;
            let seg = Segment { path, file };
            if is_last {
                active = Some((id, seg, end));
            } else {
                seg_ends.insert(id, end);
                let over = memtable_keys(&index, &opts.fingerprinted_kinds) * MEMTABLE_ENTRY_BYTES
                    > opts.max_index_memory_bytes;
                // Write the memtable out between segments so that rebuilding a large index
                // stays within the budget (plus one segment's keys).
                if over {
                    seg.file
                        .fdatasync()
                        .await
                        .map_err(io_err("syncing", &seg.path))?;
                    sealed.insert(id, seg);
                    let mut info = Vec::with_capacity(sealed.len());
                    for (sid, sg) in &sealed {
                        if *sid < id {
                            let len = std::fs::metadata(&sg.path)
                                .map_err(io_err("stat", &sg.path))?
                                .len();
                            info.push((*sid, len, seg_ends.get(sid).copied().unwrap_or(0)));
                        }
                    }
                    covered = (id, end);
                    write_out_index(
                        &dir,
                        &opts,
                        &mut index,
                        &mut runs,
                        &mut next_run_id,
                        &mut stats,
                        covered,
                        &info,
                    )
                    .await?;
                } else {
                    sealed.insert(id, seg);
                }
            }
        }
        let (active_id, active, active_len) = match active {
            Some(a) => a,
            None => {
                let path = dir.join(seg_name(1));
                let file = SegFile::open(&path, true)
                    .await
                    .map_err(io_err("creating", &path))?;
                crate::datadir::fsync_dir(&dir).map_err(io_err("syncing directory", &dir))?;
                (
                    1,
                    Segment {
                        path,
                        file: Rc::new(file),
                    },
                    0,
                )
            }
        };
        let pending_pos = align_down(active_len);
        let pending = active
            .file
            .read_at(pending_pos, (active_len - pending_pos) as usize)
            .await
            .map_err(io_err("reading", &active.path))?;
        if pending.len() as u64 != active_len - pending_pos {
            return Err(StoreError::Corrupt {
                segment: active.path.clone(),
                offset: pending_pos,
                reason: "segment shorter than its scanned length",
            });
        }
        stats.segments = sealed.len() as u32 + 1;
        stats.direct_io = active.file.is_direct(&active.path);
        stats.keys = index.iter().map(|m| m.len() as u64).sum();
        if !stats.direct_io {
            tracing::debug!(dir = %dir.display(), "store writes are buffered (no O_DIRECT)");
        }
        let mut store = Store {
            dir,
            opts,
            limits,
            content_addressed,
            index,
            runs,
            next_run_id,
            covered,
            seg_ends,
            merge: MergeSlot::default(),
            sealed,
            active_id,
            active,
            active_len,
            pending,
            pending_pos,
            synced_seq: 0,
            in_flight: RefCell::new(VecDeque::new()),
            write_error: RefCell::new(None),
            write_wait_us: Cell::new(0),
            poisoned: None,
            stats,
            blocking_readers: RefCell::new(HashMap::new()),
            _lock: lock,
        };
        if store.memtable_over_budget() {
            store.flush_index(true).await?;
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters since open.
    pub fn stats(&self) -> StoreStats {
        let mut s = self.stats.clone();
        s.write_wait_us = self.write_wait_us.get();
        s.keys = self.index.iter().map(|m| m.len() as u64).sum();
        s.index_runs = self.runs.len() as u32;
        s.index_run_entries = self.runs.iter().map(|r| r.entries).sum();
        s.index_run_file_bytes = self.runs.iter().map(|r| r.file_bytes()).sum();
        s.index_run_memory_bytes = self.runs.iter().map(|r| r.memory_bytes()).sum();
        s.index_memtable_keys = memtable_keys(&self.index, &self.opts.fingerprinted_kinds);
        s
    }

    fn memtable_over_budget(&self) -> bool {
        memtable_keys(&self.index, &self.opts.fingerprinted_kinds) * MEMTABLE_ENTRY_BYTES
            > self.opts.max_index_memory_bytes
    }

    /// The location of (kind, key): the memtable or full-key map, then the runs newest
    /// first. A run block that fails its checks is a [`StoreError::IndexRun`] and makes
    /// the store refuse writes and drop its checkpoint (the next open rebuilds the index).
    fn lookup(&self, kind: u8, key: &[u8]) -> Result<Option<Loc>, StoreError> {
        let m = &self.index[kind as usize];
        if let Some(l) = m.get(key) {
            return Ok(Some(l));
        }
        let Some(f) = m.fp_of(key) else {
            return Ok(None);
        };
        runs_get(&self.runs, kind, f).map_err(|e| self.index_failed(e))
    }

    fn index_failed(&self, e: StoreError) -> StoreError {
        tracing::error!(dir = %self.dir.display(), error = %e, "fingerprint index run unusable; dropping the checkpoint");
        {
            let mut first = self.write_error.borrow_mut();
            if first.is_none() {
                *first = Some(e.to_string());
            }
        }
        for suffix in ["cur", "prev"] {
            let _ = std::fs::remove_file(
                self.dir
                    .join(format!("{}.{suffix}", checkpoint::JOURNAL_NAME)),
            );
        }
        let _ = crate::datadir::fsync_dir(&self.dir);
        e
    }

    /// Sealed segments as (id, file length, logical end).
    fn sealed_info(&self) -> Result<Vec<(u32, u64, u64)>, StoreError> {
        let mut out = Vec::with_capacity(self.sealed.len());
        for (id, seg) in &self.sealed {
            let len = std::fs::metadata(&seg.path)
                .map_err(io_err("stat", &seg.path))?
                .len();
            out.push((*id, len, self.seg_ends.get(id).copied().unwrap_or(0)));
        }
        Ok(out)
    }

    /// Make every record durable, write the memtable out as a run and save the
    /// checkpoint naming the runs.
    ///
    /// Merges run on their own thread, one at a time, while the next memtable fills: the
    /// merge started by one write-out is installed by the next (which waits for it if it
    /// has not finished), so that the runs a store holds after a given sequence of puts
    /// do not depend on timing. `start_merge` is false at close.
    async fn flush_index(&mut self, start_merge: bool) -> Result<(), StoreError> {
        if self.synced_seq != self.stats.appended_records {
            self.flush().await?;
        } else {
            // Records found by the open's scan may be only in the page cache: the runs
            // must not name them before they are durable. (No write: a padded last
            // block would be left behind.)
            let r = self
                .active
                .file
                .fdatasync()
                .await
                .map_err(io_err("syncing", &self.active.path));
            self.poison(r)?;
            self.stats.syncs += 1;
        }
        let info = self.sealed_info()?;
        let mark = (self.active_id, self.active_len);
        let id = self.next_run_id;
        self.next_run_id += 1;
        let fp_kinds = self.opts.fingerprinted_kinds.clone();
        let run = write_memtable(&self.dir, &mut self.index, &fp_kinds, id).await;
        let run = self.poison(run)?;
        self.runs.push(run);
        self.stats.index_flushes += 1;
        let dead = self.install_merge().await?;
        if start_merge {
            let job = start_merge_job(&self.dir, &self.runs, &mut self.next_run_id);
            self.merge.0 = self.poison(job)?;
        }
        let r = save_checkpoint_parts(&self.dir, &self.opts, mark, &info, &self.index, &self.runs)
            .await;
        self.poison(r)?;
        self.covered = mark;
        let r = remove_runs(&self.dir, &dead);
        self.poison(r)
    }

    /// Wait for the merge in the background, if any, and put its output in place of its
    /// inputs; returns the inputs' files (to delete once a checkpoint names the output).
    async fn install_merge(&mut self) -> Result<Vec<PathBuf>, StoreError> {
        let Some(job) = self.merge.0.take() else {
            return Ok(Vec::new());
        };
        let inputs = job.inputs;
        let out = finish_merge(job).await;
        let out = self.poison(out)?;
        let pos = self
            .runs
            .iter()
            .position(|r| r.id == inputs.0)
            .expect("merge inputs stay in place");
        assert_eq!(
            self.runs[pos + 1].id,
            inputs.1,
            "merge inputs are consecutive"
        );
        let dead = self
            .runs
            .splice(pos..pos + 2, std::iter::once(out))
            .map(|r| r.path)
            .collect();
        self.stats.index_merges += 1;
        Ok(dead)
    }

    /// At close with an empty memtable: install a merge still running and save the
    /// checkpoint.
    async fn close_checkpoint(&mut self) -> Result<(), StoreError> {
        let dead = self.install_merge().await?;
        let info = self.sealed_info()?;
        save_checkpoint_parts(
            &self.dir,
            &self.opts,
            (self.active_id, self.active_len),
            &info,
            &self.index,
            &self.runs,
        )
        .await?;
        remove_runs(&self.dir, &dead)
    }

    fn check_poisoned(&self) -> Result<(), StoreError> {
        if self.poisoned.is_none() {
            if let Some(e) = self.write_error.borrow().as_ref() {
                return Err(StoreError::Poisoned {
                    dir: self.dir.clone(),
                    first_error: e.clone(),
                });
            }
        }
        match &self.poisoned {
            Some(first_error) => Err(StoreError::Poisoned {
                dir: self.dir.clone(),
                first_error: first_error.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &r {
            if self.poisoned.is_none() {
                self.poisoned = Some(e.to_string());
            }
        }
        r
    }

    /// Append a record. Returns `false` (and writes nothing) when `kind` is
    /// content-addressed and `key` is already present. Durable only after a later
    /// [`Store::flush`] returns `Ok` (see the module docs).
    pub async fn put(&mut self, kind: u8, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        self.check_poisoned()?;
        if key.len() > self.limits.max_key_bytes {
            return Err(StoreError::KeyTooLarge {
                len_bytes: key.len(),
                max_bytes: self.limits.max_key_bytes,
            });
        }
        if value.len() > self.limits.max_value_bytes {
            return Err(StoreError::ValueTooLarge {
                len_bytes: value.len(),
                max_bytes: self.limits.max_value_bytes,
            });
        }
        let probe =
            probe_index(&self.index, &self.runs, kind, key).map_err(|e| self.index_failed(e));
        let probe = self.poison(probe)?;
        if self.content_addressed[kind as usize] && probe.present() {
            return Ok(false);
        }
        let rec_len = record::encoded_len(key.len(), value.len()) as u64;
        if self.active_len > 0 && self.active_len + rec_len > self.opts.segment_size_bytes {
            let r = self.roll().await;
            self.poison(r)?;
        }
        let off = self.active_len;
        record::encode_record(kind, key, value, &mut self.pending);
        self.active_len += rec_len;
        self.stats.appended_bytes += rec_len;
        self.stats.appended_records += 1;
        apply_probe(
            &mut self.index[kind as usize],
            key,
            Loc {
                seg: self.active_id,
                off,
                len: rec_len as u32,
            },
            probe,
        );
        if self.pending.len() >= self.opts.write_buffer_bytes {
            let r = self.write_out(false).await;
            self.poison(r)?;
        }
        if self.memtable_over_budget() {
            self.flush_index(true).await?;
        }
        Ok(true)
    }

    /// Durability barrier: every record put before this call is on stable storage when it
    /// returns `Ok` (one `fdatasync` for the whole batch).
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        let Some(c) = self.commit_write().await? else {
            return Ok(());
        };
        let t0 = std::time::Instant::now();
        let r = c.file.fdatasync().await.map_err(io_err("syncing", &c.path));
        self.stats.sync_wait_us += t0.elapsed().as_micros() as u64;
        self.poison(r)?;
        self.stats.syncs += 1;
        Ok(())
    }

    /// First half of a group commit: write out every pending byte (the last block padded)
    /// and hand back what must be `fdatasync`ed to make all records appended so far
    /// durable; `None` when nothing is unsynced. Until that sync succeeds the caller must
    /// not acknowledge the records, and on its failure it must [`Store::poison_with`].
    async fn commit_write(&mut self) -> Result<Option<PendingSync>, StoreError> {
        self.check_poisoned()?;
        let target = self.stats.appended_records;
        if self.synced_seq == target {
            return Ok(None);
        }
        let r = self.write_out(true).await;
        self.poison(r)?;
        self.synced_seq = target;
        Ok(Some(PendingSync {
            file: self.active.file.clone(),
            path: self.active.path.clone(),
            seq: target,
        }))
    }

    /// What to sync to make every record written out so far durable.
    fn sync_target(&self) -> PendingSync {
        PendingSync {
            file: self.active.file.clone(),
            path: self.active.path.clone(),
            seq: self.synced_seq,
        }
    }

    /// Refuse further writes (a commit's sync failed outside the store).
    fn poison_with(&mut self, first_error: String) {
        if self.poisoned.is_none() {
            self.poisoned = Some(first_error);
        }
    }

    async fn sync_active(&mut self) -> Result<(), StoreError> {
        self.write_out(true).await?;
        let t0 = std::time::Instant::now();
        let r = self
            .active
            .file
            .fdatasync()
            .await
            .map_err(io_err("syncing", &self.active.path));
        self.stats.sync_wait_us += t0.elapsed().as_micros() as u64;
        r?;
        self.stats.syncs += 1;
        self.synced_seq = self.stats.appended_records;
        Ok(())
    }

    /// Write the pending bytes: whole blocks only, or (`partial`) the last block padded.
    ///
    /// Whole blocks are written behind: the write is handed to the kernel and the caller
    /// goes on filling the buffer (at most [`MAX_WRITES_IN_FLIGHT`] at once). A `partial`
    /// write (a commit) then waits for every write in flight, so that the `fdatasync`
    /// that follows covers them all. Writes in flight never overlap: background writes
    /// cover disjoint whole blocks after the last commit's, whose tail block is rewritten
    /// only after that commit's writes completed.
    async fn write_out(&mut self, partial: bool) -> Result<(), StoreError> {
        let len = self.pending.len() as u64;
        let full = align_down(len);
        let n = if partial { align_up(len) } else { full };
        if n > 0 {
            if n > len {
                self.pending.resize(n as usize, 0);
            }
            let buf = self.active.file.prepare_write(&self.pending[..n as usize]);
            self.pending.truncate(len as usize);
            self.pending.drain(..full as usize);
            let pos = self.pending_pos;
            self.pending_pos += full;
            self.stats.writes += 1;
            self.stats.written_bytes += n;
            let file = self.active.file.clone();
            let mut fut: WriteFuture = Box::pin(async move { file.write_prepared(buf, pos).await });
            // Poll once: this queues the request in the reactor right away.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            match fut.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(r) => r.map_err(io_err("writing", &self.active.path))?,
                std::task::Poll::Pending => self
                    .in_flight
                    .get_mut()
                    .push_back(InFlightWrite { start: pos, fut }),
            }
        }
        if partial {
            return self.drain_writes().await;
        }
        while self.in_flight.get_mut().len() > MAX_WRITES_IN_FLIGHT {
            self.drain_one().await?;
        }
        if n > 0 {
            // Let the executor hand the write to the kernel while records keep coming.
            glommio::executor().yield_task_queue_now().await;
        }
        Ok(())
    }

    /// Wait for the oldest write in flight, if any. The write stays queued until it has
    /// completed, so dropping this future never loses track of it (a later commit still
    /// waits for it before its `fdatasync`).
    async fn drain_one(&self) -> Result<(), StoreError> {
        let t0 = std::time::Instant::now();
        let r = std::future::poll_fn(|cx| {
            let mut q = self.in_flight.borrow_mut();
            let Some(w) = q.front_mut() else {
                return std::task::Poll::Ready(Ok(()));
            };
            match w.fut.as_mut().poll(cx) {
                std::task::Poll::Ready(r) => {
                    q.pop_front();
                    std::task::Poll::Ready(r)
                }
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        })
        .await;
        self.write_wait_us
            .set(self.write_wait_us.get() + t0.elapsed().as_micros() as u64);
        if let Err(e) = r {
            let e = io_err("writing", &self.active.path)(e);
            let mut first = self.write_error.borrow_mut();
            if first.is_none() {
                *first = Some(e.to_string());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Wait for every write in flight. Bounded by [`MAX_WRITES_IN_FLIGHT`] + 1.
    async fn drain_writes(&self) -> Result<(), StoreError> {
        let mut first_err = Ok(());
        while !self.in_flight.borrow().is_empty() {
            let r = self.drain_one().await;
            if first_err.is_ok() {
                first_err = r;
            }
        }
        first_err
    }

    /// Seal the active segment (written and synced) and start the next one.
    async fn roll(&mut self) -> Result<(), StoreError> {
        self.sync_active().await?;
        let next = self.active_id + 1;
        if next > MAX_SEGMENTS {
            return Err(StoreError::TooManySegments {
                dir: self.dir.clone(),
                max: MAX_SEGMENTS,
            });
        }
        let path = self.dir.join(seg_name(next));
        let file = SegFile::open(&path, true)
            .await
            .map_err(io_err("creating", &path))?;
        crate::datadir::fsync_dir(&self.dir).map_err(io_err("syncing directory", &self.dir))?;
        let old = std::mem::replace(
            &mut self.active,
            Segment {
                path,
                file: Rc::new(file),
            },
        );
        self.sealed.insert(self.active_id, old);
        self.seg_ends.insert(self.active_id, self.active_len);
        self.active_id = next;
        self.active_len = 0;
        self.pending.clear();
        self.pending_pos = 0;
        self.stats.segments += 1;
        Ok(())
    }

    /// Whether a record for (kind, key) exists: an index lookup (for a fingerprinted key
    /// not in the memtable, the runs: mostly answered by their filters, else one 4 KiB
    /// `pread` per run that may hold it). A run that cannot be read makes the store
    /// refuse writes (the next write or flush reports it) and answers `false`; use
    /// [`Store::try_contains`] to see the error.
    pub fn contains(&self, kind: u8, key: &[u8]) -> bool {
        self.lookup(kind, key).is_ok_and(|l| l.is_some())
    }

    /// [`Store::contains`] with the error of an unreadable index run.
    pub fn try_contains(&self, kind: u8, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.lookup(kind, key)?.is_some())
    }

    /// Number of keys of `kind`.
    pub fn len_of_kind(&self, kind: u8) -> usize {
        self.index[kind as usize].len()
    }

    /// The keys of `kind` (index only, no I/O), in no particular order.
    ///
    /// The keys of a fingerprinted kind are not in the index: use [`Store::entries_in`].
    pub fn keys_of_kind(&self, kind: u8) -> Vec<Vec<u8>> {
        debug_assert!(!self.index[kind as usize].has_fingerprints());
        self.index[kind as usize]
            .full_entries()
            .map(|(k, _)| k.to_vec())
            .collect()
    }

    /// The greatest key of `kind` (byte order; nothing copied but the answer): e.g. the
    /// highest block number stored, without a list of all of them. For a numbered kind
    /// each run is asked too (one block read a run; an unreadable run is an error).
    ///
    /// The keys of a (not numbered) fingerprinted kind are not in the index: use
    /// [`Store::entries_in`].
    pub fn max_key_of_kind(&self, kind: u8) -> Result<Option<Vec<u8>>, StoreError> {
        let m = &self.index[kind as usize];
        debug_assert!(m.numbered || !m.has_fingerprints());
        let mut best = m
            .full_entries()
            .map(|(k, _)| k)
            .max_by(|a, b| a[..].cmp(&b[..]))
            .map(|k| k.to_vec());
        if m.numbered {
            // Parts cover increasing ranges: the last one that holds a key holds the
            // greatest.
            let mut top = m.fp.iter().rev().find_map(|p| p.keys().max().copied());
            for r in &self.runs {
                let last = r
                    .last_in(kind)
                    .map_err(|e| self.index_failed(run_error(&r.path, e)))?;
                top = top.max(last);
            }
            if let Some(k) = top.and_then(|f| m.key_of_fp(f)) {
                best = best.max(Some(k.to_vec()));
            }
        }
        Ok(best)
    }

    /// The keys of `kind` with `lo <= key <= hi` (byte order), sorted; index only, no I/O.
    /// One pass over the kind's index.
    /// The keys of a fingerprinted kind are not in the index: use [`Store::entries_in`].
    pub fn keys_in(&self, kind: u8, lo: &[u8], hi: &[u8]) -> Vec<Vec<u8>> {
        debug_assert!(!self.index[kind as usize].has_fingerprints());
        let mut out: Vec<Vec<u8>> = self.index[kind as usize]
            .full_entries()
            .map(|(k, _)| k)
            .filter(|k| &k[..] >= lo && &k[..] <= hi)
            .map(|k| k.to_vec())
            .collect();
        out.sort_unstable();
        out
    }

    /// The fingerprints of `kind` in [flo, fhi] and their locations, from the memtable
    /// and the runs: the memtable's entry wins over the runs', a newer run's over an
    /// older one's.
    fn fp_locs_in(
        &self,
        kind: u8,
        flo: u128,
        fhi: u128,
    ) -> Result<BTreeMap<u128, Loc>, StoreError> {
        let m = &self.index[kind as usize];
        let mut fps: BTreeMap<u128, Loc> = BTreeMap::new();
        if !m.fingerprinted || flo > fhi {
            return Ok(fps);
        }
        // Only the memtable's parts whose ranges the interval meets.
        for part in m.fp.get(m.fp_part(flo)..=m.fp_part(fhi)).unwrap_or(&[]) {
            for (&f, l) in part {
                if f >= flo && f <= fhi {
                    fps.insert(f, *l);
                }
            }
        }
        for r in self.runs.iter().rev() {
            r.for_each_in(kind, flo, fhi, |e| {
                fps.entry(e.fp).or_insert(e.loc);
            })
            .map_err(|e| self.index_failed(run_error(&r.path, e)))?;
        }
        Ok(fps)
    }

    /// The keys of numbered `kind` (see `StoreOptions::numbered_kinds`) in [lo, hi], as
    /// numbers, sorted: from the index (the runs' blocks over the range are read), no
    /// record read.
    pub fn numbers_in(&self, kind: u8, lo: u64, hi: u64) -> Result<Vec<u64>, StoreError> {
        let m = &self.index[kind as usize];
        debug_assert!(m.numbered, "kind {kind} is not numbered");
        let fp = |n: u64| (n as u128) << 64;
        Ok(self
            .fp_locs_in(kind, fp(lo), fp(hi))?
            .into_keys()
            .filter_map(|f| m.key_of_fp(f).map(u64::from_be_bytes))
            .collect())
    }

    /// The records of `kind` with `lo <= key <= hi`, sorted by key, read synchronously
    /// (see [`Store::get_blocking`]). For a fingerprinted kind only the records whose
    /// fingerprint falls in the range are read.
    pub fn entries_in(&self, kind: u8, lo: &[u8], hi: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let m = &self.index[kind as usize];
        let in_range = |k: &[u8]| k >= lo && k <= hi;
        let mut locs: Vec<Loc> = m
            .full_entries()
            .filter(|(k, _)| in_range(k))
            .map(|(_, l)| l)
            .collect();
        if m.fingerprinted {
            // Fingerprints in [lo, hi] by their first 16 bytes (a superset: the full keys
            // are checked below).
            let bound = |k: &[u8], fill: u8| {
                let mut b = [fill; FINGERPRINT_BYTES];
                let n = k.len().min(FINGERPRINT_BYTES);
                b[..n].copy_from_slice(&k[..n]);
                u128::from_be_bytes(b)
            };
            locs.extend(
                self.fp_locs_in(kind, bound(lo, 0), bound(hi, 0xff))?
                    .into_values(),
            );
        }
        let mut out = Vec::with_capacity(locs.len());
        let mut take = |path: &Path, loc: Loc, bytes: &[u8]| -> Result<(), StoreError> {
            let h = record::parse_record(bytes, &self.limits).map_err(|d| StoreError::Corrupt {
                segment: path.to_path_buf(),
                offset: loc.off,
                reason: d.reason(),
            })?;
            let key_end = RECORD_HEADER_BYTES + h.key_len;
            let key = &bytes[RECORD_HEADER_BYTES..key_end];
            if h.kind != kind {
                return Err(StoreError::Corrupt {
                    segment: path.to_path_buf(),
                    offset: loc.off,
                    reason: "record is not the one the index names",
                });
            }
            if in_range(key) {
                out.push((key.to_vec(), bytes[key_end..h.record_len()].to_vec()));
            }
            Ok(())
        };
        // In file order: records of a sealed segment that lie close together (written
        // by one range response, say) are read with one `pread` of their span.
        locs.sort_unstable_by_key(|l| (l.seg, l.off));
        let mut i = 0;
        while i < locs.len() {
            let first = locs[i];
            let mut end = first.off + first.len as u64;
            let mut j = i + 1;
            if first.seg != self.active_id {
                while let Some(l) = locs.get(j) {
                    let l_end = l.off + l.len as u64;
                    if l.seg != first.seg
                        || l.off < end
                        || l.off - end > SPAN_READ_GAP_BYTES
                        || l_end - first.off > SPAN_READ_MAX_BYTES
                    {
                        break;
                    }
                    end = l_end;
                    j += 1;
                }
            }
            if j == i + 1 {
                let (path, bytes) = self.read_blocking(first)?;
                take(&path, first, &bytes)?;
            } else {
                let (path, span) = self.read_sealed_span_blocking(first.seg, first.off, end)?;
                for l in &locs[i..j] {
                    let a = (l.off - first.off) as usize;
                    take(&path, *l, &span[a..a + l.len as usize])?;
                }
            }
            i = j;
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Bytes `off..end` of sealed segment `seg`, with one `pread` on its buffered
    /// descriptor (the records in it are checked by the caller).
    fn read_sealed_span_blocking(
        &self,
        seg: u32,
        off: u64,
        end: u64,
    ) -> Result<(PathBuf, Vec<u8>), StoreError> {
        let path = self
            .sealed
            .get(&seg)
            .expect("index points at a known segment")
            .path
            .clone();
        let mut out = vec![0u8; (end - off) as usize];
        self.read_exact_blocking(seg, &path, &mut out, off)?;
        Ok((path, out))
    }

    /// `pread` of `buf.len()` bytes at `off` of segment `seg` (at `path`), on the
    /// buffered descriptor kept for blocking reads (opened on first use).
    fn read_exact_blocking(
        &self,
        seg: u32,
        path: &Path,
        buf: &mut [u8],
        off: u64,
    ) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let mut files = self.blocking_readers.borrow_mut();
        let f = match files.entry(seg) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(std::fs::File::open(path).map_err(io_err("opening", path))?)
            }
        };
        f.read_exact_at(buf, off).map_err(io_err("reading", path))
    }

    /// The value stored for (kind, key), read with io_uring and checksum-verified.
    pub async fn get(&self, kind: u8, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(loc) = self.lookup(kind, key)? else {
            return Ok(None);
        };
        let (k, _, v) = self.read_record(loc).await?;
        debug_assert_eq!(k, key);
        Ok(Some(v))
    }

    /// [`Store::get`] for a synchronous caller: the record is read with `pread` on a
    /// buffered descriptor of its segment (opened on first use and kept), its checksums
    /// are verified and its key must be `key`. A record still being written behind
    /// (handed to io_uring and not completed) cannot be read this way: callers read
    /// only records covered by a completed [`Store::flush`], or keep their own copy of
    /// what they put since (after a flush, only the partially filled last block is
    /// still in memory and is served from there).
    pub fn get_blocking(&self, kind: u8, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(loc) = self.lookup(kind, key)? else {
            return Ok(None);
        };
        let (path, bytes) = self.read_blocking(loc)?;
        let h = record::parse_record(&bytes, &self.limits).map_err(|d| StoreError::Corrupt {
            segment: path.clone(),
            offset: loc.off,
            reason: d.reason(),
        })?;
        let key_end = RECORD_HEADER_BYTES + h.key_len;
        if h.kind != kind || &bytes[RECORD_HEADER_BYTES..key_end] != key {
            return Err(StoreError::Corrupt {
                segment: path,
                offset: loc.off,
                reason: "record is not the one the index names",
            });
        }
        Ok(Some(bytes[key_end..h.record_len()].to_vec()))
    }

    /// The bytes of the record at `loc`, read synchronously (see [`Store::get_blocking`]).
    fn read_blocking(&self, loc: Loc) -> Result<(PathBuf, Vec<u8>), StoreError> {
        let len = loc.len as u64;
        let end = loc.off + len;
        let path = if loc.seg == self.active_id {
            self.active.path.clone()
        } else {
            self.sealed
                .get(&loc.seg)
                .expect("index points at a known segment")
                .path
                .clone()
        };
        let mut out = vec![0u8; len as usize];
        let on_file = if loc.seg == self.active_id {
            if loc.off >= self.pending_pos {
                let a = (loc.off - self.pending_pos) as usize;
                out.copy_from_slice(&self.pending[a..a + len as usize]);
                return Ok((path, out));
            }
            if self
                .in_flight
                .borrow()
                .front()
                .is_some_and(|w| end > w.start)
            {
                return Err(StoreError::Io {
                    op: "reading (write still in flight)",
                    path,
                    source: std::io::Error::from(std::io::ErrorKind::WouldBlock),
                });
            }
            end.min(self.pending_pos) - loc.off
        } else {
            len
        };
        self.read_exact_blocking(loc.seg, &path, &mut out[..on_file as usize], loc.off)?;
        if on_file < len {
            let rest = (len - on_file) as usize;
            out[on_file as usize..].copy_from_slice(&self.pending[..rest]);
        }
        Ok((path, out))
    }

    /// Read and verify the record at `loc`; returns (kind, key, value).
    async fn read_record(&self, loc: Loc) -> Result<(Vec<u8>, u8, Vec<u8>), StoreError> {
        let len = loc.len as u64;
        let (path, bytes) = if loc.seg == self.active_id {
            let path = &self.active.path;
            let end = loc.off + len;
            let bytes = if loc.off >= self.pending_pos {
                let a = (loc.off - self.pending_pos) as usize;
                self.pending[a..a + len as usize].to_vec()
            } else {
                // Bytes still being written behind are not on the file yet.
                let oldest = self.in_flight.borrow().front().map(|w| w.start);
                if oldest.is_some_and(|start| end > start) {
                    self.drain_writes().await?;
                }
                let on_file = end.min(self.pending_pos) - loc.off;
                let mut b = self
                    .active
                    .file
                    .read_at(loc.off, on_file as usize)
                    .await
                    .map_err(io_err("reading", path))?;
                if end > self.pending_pos {
                    b.extend_from_slice(&self.pending[..(end - self.pending_pos) as usize]);
                }
                b
            };
            (path, bytes)
        } else {
            let seg = self
                .sealed
                .get(&loc.seg)
                .expect("index points at a known segment");
            let bytes = seg
                .file
                .read_at(loc.off, len as usize)
                .await
                .map_err(io_err("reading", &seg.path))?;
            (&seg.path, bytes)
        };
        let h = record::parse_record(&bytes, &self.limits).map_err(|d| StoreError::Corrupt {
            segment: path.clone(),
            offset: loc.off,
            reason: d.reason(),
        })?;
        let key_end = RECORD_HEADER_BYTES + h.key_len;
        Ok((
            bytes[RECORD_HEADER_BYTES..key_end].to_vec(),
            h.kind,
            bytes[key_end..h.record_len()].to_vec(),
        ))
    }

    /// Iterate over all (key, value) pairs of `kind`, in write order, one read per
    /// record. To read many records prefer [`Store::scan`].
    ///
    /// For a fingerprinted kind this reads every run (a run that cannot be read is an
    /// error).
    pub fn iter_kind(&self, kind: u8) -> Result<KindIter<'_>, StoreError> {
        let m = &self.index[kind as usize];
        let mut locs: Vec<Loc> = m.full_entries().map(|(_, l)| l).collect();
        if m.fingerprinted {
            let mut fps: BTreeMap<u128, Loc> = m
                .fp_entries()
                .map(|(f, l)| (u128::from_be_bytes(f), *l))
                .collect();
            for r in self.runs.iter().rev() {
                r.for_each_in(kind, 0, u128::MAX, |e| {
                    fps.entry(e.fp).or_insert(e.loc);
                })
                .map_err(|e| self.index_failed(run_error(&r.path, e)))?;
            }
            locs.extend(fps.into_values());
        }
        locs.sort_unstable();
        Ok(KindIter {
            store: self,
            locs,
            next: 0,
        })
    }

    /// Flush, write the index checkpoint (if enabled; failure to write it is only logged),
    /// then close every segment file. Prefer this to dropping the store: a dropped store
    /// loses records not yet flushed, and glommio only queues the closing of its
    /// descriptors for the executor's next I/O cycle.
    pub async fn close(mut self) -> Result<(), StoreError> {
        let flushed = self.flush().await;
        if flushed.is_ok() && self.opts.use_checkpoint {
            // Only an optimisation for the next open: the records are durable already.
            let saved = if memtable_keys(&self.index, &self.opts.fingerprinted_kinds) > 0 {
                self.flush_index(false).await
            } else {
                self.close_checkpoint().await
            };
            if let Err(e) = saved {
                let _ = std::fs::remove_file(
                    self.dir.join(format!("{}.tmp", checkpoint::JOURNAL_NAME)),
                );
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the index checkpoint; the next open scans");
            }
        }
        let mut closed = Ok(());
        let segs = std::mem::take(&mut self.sealed)
            .into_values()
            .chain(std::iter::once(self.active));
        for seg in segs {
            // A file still shared with a sync in flight is closed when that sync drops it.
            let Ok(file) = Rc::try_unwrap(seg.file) else {
                continue;
            };
            let r = file.close().await.map_err(io_err("closing", &seg.path));
            if closed.is_ok() {
                closed = r;
            }
        }
        flushed.and(closed)
    }
}

/// Memory one memtable entry takes on average, in bytes: a (u128, Loc) slot of 32 bytes
/// and a control byte at the maps' load factor, between two growths (69 bytes per key
/// measured by the `index_footprint` example with every fingerprint in memory).
const MEMTABLE_ENTRY_BYTES: u64 = 70;
/// A range scan reads the records of a sealed segment with one `pread` per span where
/// the gap between two of them is at most this many bytes…
const SPAN_READ_GAP_BYTES: u64 = 4096;
/// …and the span at most this long.
const SPAN_READ_MAX_BYTES: u64 = 1 << 20;
/// More runs than this are merged whatever their sizes.
const MAX_RUNS: usize = 16;

/// Fingerprints in the memtables of the fingerprinted kinds.
fn memtable_keys(index: &Index, fp_kinds: &[u8]) -> u64 {
    fp_kinds
        .iter()
        .map(|k| index[*k as usize].fp_len as u64)
        .sum()
}

fn run_error(path: &Path, e: runs::RunError) -> StoreError {
    StoreError::IndexRun {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The newest run's location of (kind, fp).
fn runs_get(runs: &[runs::Run], kind: u8, fp: u128) -> Result<Option<Loc>, StoreError> {
    for r in runs.iter().rev() {
        if let Some(l) = r.get(kind, fp).map_err(|e| run_error(&r.path, e))? {
            return Ok(Some(l));
        }
    }
    Ok(None)
}

/// Where a key is before it is put: in the in-memory maps, in the runs.
#[derive(Clone, Copy)]
struct Probe {
    fingerprinted: bool,
    in_memory: bool,
    in_runs: bool,
}

impl Probe {
    fn present(&self) -> bool {
        self.in_memory || self.in_runs
    }
}

fn probe_index(
    index: &Index,
    runs: &[runs::Run],
    kind: u8,
    key: &[u8],
) -> Result<Probe, StoreError> {
    let m = &index[kind as usize];
    let fp = m.fp_of(key);
    let in_memory = m.contains_key(key);
    let in_runs = match fp {
        Some(f) if !in_memory => runs_get(runs, kind, f)?.is_some(),
        _ => false,
    };
    Ok(Probe {
        fingerprinted: fp.is_some(),
        in_memory,
        in_runs,
    })
}

/// Add (key → loc) found by `probe`; counts a fingerprinted key new to the store.
fn apply_probe(m: &mut KindMap, key: &[u8], loc: Loc, probe: Probe) {
    m.insert(key, loc);
    if probe.fingerprinted && !probe.present() {
        m.fp_total += 1;
    }
}

/// Write the memtables of the fingerprinted kinds as run `id` (on the blocking pool) and
/// empty them.
async fn write_memtable(
    dir: &Path,
    index: &mut Index,
    fp_kinds: &[u8],
    id: u64,
) -> Result<runs::Run, StoreError> {
    let total = memtable_keys(index, fp_kinds);
    let mut kinds = fp_kinds.to_vec();
    kinds.sort_unstable();
    kinds.dedup();
    // The maps go to the writing thread and come back: a part's map covers one value of
    // the fingerprint's first byte, so sorting the parts one at a time, in order, writes
    // the whole run sorted while holding one part's entries besides the memtable (not a
    // second copy of all of it).
    let mut parts: Vec<(u8, Vec<FpMap>)> = kinds
        .iter()
        .map(|k| (*k, std::mem::take(&mut index[*k as usize].fp)))
        .collect();
    let d = dir.to_path_buf();
    let (mut parts, run) = glommio::executor()
        .spawn_blocking(move || {
            let run = write_parts(&d, id, total, &parts);
            if run.is_ok() {
                // Written: the maps come back empty and unallocated (freed here, off the
                // executor). Kept, each kind's maps would hold the most they ever held,
                // and the kinds' sum could pass the memtable's budget. (Shrinking each
                // map to what it held in this memtable kept 534 MiB of peak RSS at 5 M
                // accounts against 442–452 MiB freed, at no measurable speed.)
                for (_, maps) in parts.iter_mut() {
                    maps.iter_mut().for_each(|m| *m = FpMap::default());
                }
            }
            (parts, run)
        })
        .await;
    let written = run.is_ok();
    for (k, maps) in parts.iter_mut() {
        let m = &mut index[*k as usize];
        m.fp = std::mem::take(maps);
        if written {
            m.fp_len = 0;
        }
    }
    run.map_err(|e| run_error(&dir.join(runs::run_name(id)), e))
}

/// Write the memtable's maps (`(kind, parts)` by ascending kind, each kind's parts in
/// fingerprint order) as run `id` of `total` entries, sorting one part at a time.
fn write_parts(
    dir: &Path,
    id: u64,
    total: u64,
    parts: &[(u8, Vec<FpMap>)],
) -> Result<runs::Run, runs::RunError> {
    let mut w = runs::RunWriter::create(dir, id, total)?;
    let mut sorted = Vec::new();
    for (kind, maps) in parts {
        for part in maps {
            sorted.clear();
            sorted.extend(part.iter().map(|(f, l)| runs::Entry {
                kind: *kind,
                fp: *f,
                loc: *l,
            }));
            sorted.sort_unstable_by_key(|e| e.fp);
            for e in &sorted {
                if let Err(err) = w.push(*e) {
                    w.abandon();
                    return Err(err);
                }
            }
        }
    }
    w.finish(dir)
}

/// Merge the two newest runs while the older is no larger than the newer (or there are
/// more than [`MAX_RUNS`]): run sizes then grow like a binary counter, so a store of N
/// keys written out in memtables of M keys has at most about log2(N/M) runs and each
/// entry is rewritten about log2(N/M) times. Returns the files of the merged inputs, to
/// delete once a checkpoint names the output.
async fn merge_if_needed(
    dir: &Path,
    runs: &mut Vec<runs::Run>,
    next_run_id: &mut u64,
    stats: &mut StoreStats,
) -> Result<Vec<PathBuf>, StoreError> {
    let mut dead = Vec::new();
    // Bounded: each merge removes one run.
    while runs.len() >= 2 {
        let n = runs.len();
        let similar = runs[n - 2].entries <= runs[n - 1].entries;
        if !similar && n <= MAX_RUNS {
            break;
        }
        let inputs = vec![runs[n - 2].as_ref(), runs[n - 1].as_ref()];
        let id = *next_run_id;
        *next_run_id += 1;
        let d = dir.to_path_buf();
        let out = glommio::executor()
            .spawn_blocking(move || {
                let no_cancel = std::sync::atomic::AtomicBool::new(false);
                runs::merge_runs(&d, id, &inputs, &no_cancel)
            })
            .await
            .map_err(|e| run_error(&dir.join(runs::run_name(id)), e))?;
        dead.extend(runs.split_off(n - 2).into_iter().map(|r| r.path));
        runs.push(out);
        stats.index_merges += 1;
    }
    Ok(dead)
}

/// Write the memtable out as a run, merge, save the checkpoint with mark `mark` (every
/// record before it durable) and delete merged inputs.
#[allow(clippy::too_many_arguments)]
async fn write_out_index(
    dir: &Path,
    opts: &StoreOptions,
    index: &mut Index,
    runs: &mut Vec<runs::Run>,
    next_run_id: &mut u64,
    stats: &mut StoreStats,
    mark: (u32, u64),
    sealed: &[(u32, u64, u64)],
) -> Result<(), StoreError> {
    let id = *next_run_id;
    *next_run_id += 1;
    let run = write_memtable(dir, index, &opts.fingerprinted_kinds, id).await?;
    runs.push(run);
    stats.index_flushes += 1;
    let dead = merge_if_needed(dir, runs, next_run_id, stats).await?;
    save_checkpoint_parts(dir, opts, mark, sealed, index, runs).await?;
    remove_runs(dir, &dead)
}

/// Delete run files no checkpoint names any more.
fn remove_runs(dir: &Path, dead: &[PathBuf]) -> Result<(), StoreError> {
    for p in dead {
        std::fs::remove_file(p).map_err(io_err("removing", p))?;
    }
    if !dead.is_empty() {
        crate::datadir::fsync_dir(dir).map_err(io_err("syncing directory", dir))?;
    }
    Ok(())
}

/// A merge of two runs on its own thread (see [`Store::flush_index`]).
struct MergeJob {
    handle: std::thread::JoinHandle<Result<runs::Run, runs::RunError>>,
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Ids of the two inputs, consecutive in `Store::runs`.
    inputs: (u64, u64),
    /// The output's file.
    out_path: PathBuf,
}

/// The merge in the background, if any. A store dropped without `close` stops it (its
/// partial output is removed; a finished output no checkpoint names is removed by the
/// next open).
#[derive(Default)]
struct MergeSlot(Option<MergeJob>);

impl Drop for MergeSlot {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            job.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            // Bounded: the merge checks the flag once per block it writes.
            let _ = job.handle.join();
        }
    }
}

/// Start merging the newest two adjacent runs of which the older is no larger than the
/// newer (else, with more than [`MAX_RUNS`], the two newest): run sizes then grow like a
/// binary counter, so a store of N keys written out in memtables of M keys has about
/// log2(N/M) runs and each entry is rewritten about log2(N/M) times.
fn start_merge_job(
    dir: &Path,
    runs: &[runs::Run],
    next_run_id: &mut u64,
) -> Result<Option<MergeJob>, StoreError> {
    let n = runs.len();
    if n < 2 {
        return Ok(None);
    }
    let pair = (0..n - 1)
        .rev()
        .find(|&i| runs[i].entries <= runs[i + 1].entries);
    let i = match pair {
        Some(i) => i,
        None if n > MAX_RUNS => n - 2,
        None => return Ok(None),
    };
    let inputs = vec![runs[i].as_ref(), runs[i + 1].as_ref()];
    let id = *next_run_id;
    *next_run_id += 1;
    let out_path = dir.join(runs::run_name(id));
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (d, c) = (dir.to_path_buf(), cancel.clone());
    let handle = std::thread::Builder::new()
        .name("store-merge".into())
        .spawn(move || runs::merge_runs(&d, id, &inputs, &c))
        .map_err(io_err("starting a merge thread for", &out_path))?;
    Ok(Some(MergeJob {
        handle,
        cancel,
        inputs: (runs[i].id, runs[i + 1].id),
        out_path,
    }))
}

/// Wait (off the executor) for a merge to finish.
async fn finish_merge(job: MergeJob) -> Result<runs::Run, StoreError> {
    let MergeJob {
        handle, out_path, ..
    } = job;
    match glommio::executor()
        .spawn_blocking(move || handle.join())
        .await
    {
        Ok(Ok(run)) => Ok(run),
        Ok(Err(e)) => Err(run_error(&out_path, e)),
        Err(_) => Err(StoreError::IndexRun {
            path: out_path,
            reason: "the merge thread panicked".into(),
        }),
    }
}

/// Save the index checkpoint with mark `mark`: every record before it is durable, and
/// the runs hold every fingerprinted key before it (the memtable is empty).
async fn save_checkpoint_parts(
    dir: &Path,
    opts: &StoreOptions,
    mark: (u32, u64),
    sealed: &[(u32, u64, u64)],
    index: &Index,
    runs: &[runs::Run],
) -> Result<(), StoreError> {
    debug_assert_eq!(memtable_keys(index, &opts.fingerprinted_kinds), 0);
    let fp_counts: Vec<(u8, u64)> = opts
        .fingerprinted_kinds
        .iter()
        .map(|k| (*k, index[*k as usize].fp_total))
        .collect();
    let run_list: Vec<(u64, u64)> = runs.iter().map(|r| (r.id, r.entries)).collect();
    let meta = checkpoint::Meta {
        active_id: mark.0,
        active_len: mark.1,
        sealed,
        fp_counts: &fp_counts,
        kinds: &opts.fp_kinds(),
        runs: &run_list,
    };
    let max = opts
        .max_checkpoint_bytes
        .min(checkpoint::MAX_CHECKPOINT_BYTES);
    let estimate = checkpoint::encoded_len(&meta, index, true);
    let full = estimate <= max;
    if !full {
        tracing::info!(
            dir = %dir.display(),
            checkpoint_bytes = estimate,
            max_checkpoint_bytes = max,
            "whole-key index too large to checkpoint within the limit; the next open scans the segments for it"
        );
        if runs.is_empty() {
            return Ok(());
        }
    }
    let bytes = checkpoint::encode(&meta, index, full);
    let ckpt_err = |e: crate::journal::JournalError| StoreError::Io {
        op: "writing index checkpoint",
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    let mut j = crate::journal::Journal::open(dir, checkpoint::JOURNAL_NAME)
        .map_err(ckpt_err)?
        .with_max_payload_bytes(checkpoint::MAX_CHECKPOINT_BYTES);
    j.save_off_executor(bytes).await.map_err(ckpt_err)
}

/// The index checkpoint of `dir` and its runs, if it exists, decodes, matches the
/// segments on disk and every run it names opens and checks.
fn load_checkpoint(
    dir: &Path,
    file_lens: &BTreeMap<u32, u64>,
    opts: &StoreOptions,
    fingerprinted: &FpKinds,
) -> Option<(checkpoint::Checkpoint, Vec<runs::Run>)> {
    let j = match crate::journal::Journal::open(dir, checkpoint::JOURNAL_NAME) {
        Ok(j) => j.with_max_payload_bytes(checkpoint::MAX_CHECKPOINT_BYTES),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot open index checkpoint; scanning");
            return None;
        }
    };
    let bytes = match j.load() {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "unreadable index checkpoint; scanning");
            return None;
        }
    };
    let Some(ck) = checkpoint::decode(&bytes, opts.max_key_bytes, fingerprinted) else {
        tracing::warn!(dir = %dir.display(), "malformed index checkpoint (or other fingerprinted kinds); scanning");
        return None;
    };
    if let Err(why) = checkpoint::matches_disk(&ck, file_lens) {
        tracing::info!(dir = %dir.display(), why, "index checkpoint does not match the segments; scanning");
        return None;
    }
    let mut rs = Vec::with_capacity(ck.runs.len());
    for (id, entries) in &ck.runs {
        let path = dir.join(runs::run_name(*id));
        match runs::Run::open(&path, *id, *entries) {
            Ok(r) => rs.push(r),
            Err(e) => {
                tracing::warn!(run = %path.display(), error = %e, "index run unusable; rebuilding the index from the segments");
                return None;
            }
        }
    }
    Some((ck, rs))
}

/// What a group commit must `fdatasync` after [`Store::commit_write`].
struct PendingSync {
    file: Rc<SegFile>,
    path: PathBuf,
    /// Records appended (since open) that the sync makes durable.
    seq: u64,
}

/// Iterator over one kind's records; see [`Store::iter_kind`].
pub struct KindIter<'a> {
    store: &'a Store,
    locs: Vec<Loc>,
    next: usize,
}

impl KindIter<'_> {
    /// The next (key, value), or `None` at the end.
    #[allow(clippy::should_implement_trait)]
    pub async fn next(&mut self) -> Option<Result<(Vec<u8>, Vec<u8>), StoreError>> {
        let loc = *self.locs.get(self.next)?;
        self.next += 1;
        Some(self.store.read_record(loc).await.map(|(k, _, v)| (k, v)))
    }

    /// Records left.
    pub fn remaining(&self) -> usize {
        self.locs.len() - self.next
    }
}

/// Take the exclusive lock of a store directory: two `Store`s on one directory would
/// interleave appends. The lock file records the holder's pid, and a lock still held
/// for a moment by a process that has exited is waited for (see
/// [`crate::datadir::lock_file`]).
fn lock_store_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    use crate::datadir::{lock_file, LockStep, Locked};
    let path = dir.join("LOCK");
    match lock_file(&path) {
        Ok(Locked::Yes(f)) => Ok(f),
        Ok(Locked::HeldBy(_)) => Err(StoreError::InUse {
            dir: dir.to_path_buf(),
        }),
        Err((LockStep::Open, e)) => Err(io_err("creating", &path)(e)),
        Err((LockStep::Flock, e)) => Err(io_err("locking", &path)(e)),
        Err((LockStep::WritePid, e)) => Err(io_err("writing", &path)(e)),
    }
}

/// Scan one segment, add its records to the index and return its logical end. A torn tail
/// of the last segment is truncated; see the module docs for the corruption rule.
/// One segment to scan at open.
struct ScanTarget<'a> {
    id: u32,
    path: &'a Path,
    file: &'a Rc<SegFile>,
    /// Offset to start at.
    start: u64,
    is_last: bool,
    /// Fingerprinted keys of records before this (segment, offset) are in the runs and
    /// are not indexed again.
    skip_fp_before: Option<(u32, u64)>,
    /// How far before the end of the last segment writes may have been in flight at a
    /// crash (see [`unacknowledged_window`]).
    window: u64,
}

/// The bytes at the end of the active segment that writes in flight may have covered
/// when the process died: [`MAX_WRITES_IN_FLIGHT`] writes behind, each at most the write
/// buffer plus one record, and the partially filled block a commit rewrites. Nothing in it
/// after the first unwritten block was acknowledged, because a commit waits for every
/// write in flight before its `fdatasync`.
fn unacknowledged_window(opts: &StoreOptions, limits: &RecordLimits) -> u64 {
    let record = (RECORD_HEADER_BYTES + limits.max_key_bytes + limits.max_value_bytes) as u64;
    (MAX_WRITES_IN_FLIGHT as u64 + 2) * (opts.write_buffer_bytes as u64 + record)
}

async fn scan_segment(
    t: ScanTarget<'_>,
    limits: &RecordLimits,
    content_addressed: &[bool; 256],
    index: &mut Index,
    runs: &[runs::Run],
    stats: &mut StoreStats,
) -> Result<u64, StoreError> {
    let ScanTarget {
        id,
        path,
        file,
        start,
        is_last,
        skip_fp_before,
        window,
    } = t;
    let file_len = file.file_size().await.map_err(io_err("stat", path))?;
    if start > file_len {
        return Err(StoreError::Corrupt {
            segment: path.to_path_buf(),
            offset: file_len,
            reason: "segment shorter than its checkpointed length",
        });
    }
    stats.scanned_bytes += file_len - start;
    let mut sc = Scanner {
        rd: scan::SeqReader::new(file.clone(), path, start, file_len),
        file_len,
    };
    let mut off = start;
    // Bounded: each iteration consumes one record (>= header bytes) or returns.
    let (defect, resume) = loop {
        if off == file_len {
            return Ok(off);
        }
        let hdr = sc.bytes(off, RECORD_HEADER_BYTES).await?;
        let h = match record::parse_header(hdr, limits) {
            Ok(h) => h,
            Err(d) => break (d, off + 1),
        };
        let rl = h.record_len() as u64;
        if off + rl > file_len {
            break (RecordDefect::ShortBody, file_len);
        }
        let body = sc
            .bytes(off + RECORD_HEADER_BYTES as u64, h.key_len + h.value_len)
            .await?;
        if let Err(d) = record::check_body(&h, body) {
            break (d, off + rl);
        }
        let key = &body[..h.key_len];
        let loc = Loc {
            seg: id,
            off,
            len: rl as u32,
        };
        let covered = skip_fp_before.is_some_and(|mark| (id, off) < mark);
        if !(covered && index[h.kind as usize].fp_of(key).is_some()) {
            let probe = probe_index(index, runs, h.kind, key)?;
            if !(content_addressed[h.kind as usize] && probe.present()) {
                apply_probe(&mut index[h.kind as usize], key, loc, probe);
            }
        }
        off += rl;
    };
    if let Some(p) = sc.find_valid_after(resume, limits).await? {
        // Writes behind land in any order: a process killed with several in flight can
        // leave a later block written and an earlier one not (zeros). Valid records after
        // such a block were never acknowledged (a commit waits for every write in flight),
        // so that is a torn tail too. A whole aligned block of zeros within the window
        // at the end of the active segment tells it from damage to acknowledged data.
        let hole = align_up(off);
        if is_last
            && hole + IO_ALIGN_BYTES <= p
            && file_len - hole <= window
            && sc.all_zero_in(hole, hole + IO_ALIGN_BYTES).await?
        {
            tracing::warn!(
                segment = %path.display(),
                offset = off,
                unwritten_block = hole,
                next_valid = p,
                cut_bytes = file_len - off,
                "cutting torn tail: a block written behind was lost while later ones landed"
            );
            stats.truncated_tail_bytes += file_len - off;
            file.truncate(off)
                .await
                .map_err(io_err("truncating", path))?;
            file.fdatasync().await.map_err(io_err("syncing", path))?;
            return Ok(off);
        }
        tracing::error!(segment = %path.display(), offset = off, next_valid = p, "corrupt record before valid data");
        return Err(StoreError::Corrupt {
            segment: path.to_path_buf(),
            offset: off,
            reason: defect.reason(),
        });
    }
    let zero_tail = sc.all_zero_from(off).await?;
    if is_last {
        if !zero_tail {
            tracing::warn!(
                segment = %path.display(),
                offset = off,
                cut_bytes = file_len - off,
                reason = defect.reason(),
                "cutting torn tail"
            );
            stats.truncated_tail_bytes += file_len - off;
        }
        if file_len > off {
            file.truncate(off)
                .await
                .map_err(io_err("truncating", path))?;
            file.fdatasync().await.map_err(io_err("syncing", path))?;
        }
        return Ok(off);
    }
    if zero_tail {
        return Ok(off);
    }
    Err(StoreError::Corrupt {
        segment: path.to_path_buf(),
        offset: off,
        reason: defect.reason(),
    })
}

#[cfg(test)]
mod tests;

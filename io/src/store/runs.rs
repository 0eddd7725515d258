//! Sorted run files of the fingerprint index.
//!
//! The index of fingerprinted kinds (see `StoreOptions::fingerprinted_kinds`) keeps recent
//! fingerprints in memory (the memtable) and the rest in sorted, immutable run files next
//! to the segments. Only each run's fence keys (the first key of every block) and its
//! blocked Bloom filter stay in memory: about 1.4 bytes per key. A lookup asks the
//! memtable, then every run newest first: the filter, a binary search of the fences and
//! one `pread` of a 4 KiB block.
//!
//! File `run-<id, 16 hex digits>.idx` (integers little-endian):
//!
//! ```text
//! block 0 (4096 bytes): header
//!   0..8 magic "CURUNIX1", 8..12 version (1), 12..16 zero, 16..24 run id,
//!   24..32 entries, 32..40 data blocks B, 40..48 filter blocks F,
//!   48..52 crc32c of the fences, 52..56 crc32c of the filter,
//!   56..60 crc32c of bytes 0..56, rest zero
//! blocks 1..=B (4096 bytes each): up to 127 entries of 32 bytes, sorted by (kind, fp);
//!   4088..4092 entry count, 4092..4096 crc32c of (run id, block number, bytes 0..4092)
//! fences: B × 17 bytes (kind, fingerprint big-endian): the first key of each block
//! filter: F × 64 bytes (a blocked Bloom filter, 10 bits per key, 7 probes in one block)
//! ```
//!
//! Entry: kind (1), fingerprint big-endian (16; a numbered kind's 8-byte key, then zeros),
//! segment id (4), offset (6), record length (4), zero (1). A run is written to
//! `<name>.tmp`, fsynced and renamed; the store's checkpoint names the runs it relies on,
//! so a run is used only once it is durable. At load, the header, the fences and the
//! filter are checked; every data block is checked when it is read.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::Loc;

pub(crate) const BLOCK_BYTES: usize = 4096;
const ENTRY_BYTES: usize = 32;
pub(crate) const ENTRIES_PER_BLOCK: usize = 127;
const MAGIC: &[u8; 8] = b"CURUNIX1";
const VERSION: u32 = 1;
const FENCE_BYTES: usize = 17;
const FILTER_BLOCK_BYTES: usize = 64;
const FILTER_BITS_PER_KEY: u64 = 10;
const FILTER_PROBES: u32 = 7;
/// Largest segment offset an entry can hold (48 bits).
pub(crate) const MAX_OFFSET: u64 = (1 << 48) - 1;

/// One index entry: (kind, fingerprint) → location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub kind: u8,
    pub fp: u128,
    pub loc: Loc,
}

impl Entry {
    fn key(&self) -> (u8, u128) {
        (self.kind, self.fp)
    }

    fn encode(&self, out: &mut [u8]) {
        debug_assert!(self.loc.off <= MAX_OFFSET);
        out[0] = self.kind;
        out[1..17].copy_from_slice(&self.fp.to_be_bytes());
        out[17..21].copy_from_slice(&self.loc.seg.to_le_bytes());
        out[21..27].copy_from_slice(&self.loc.off.to_le_bytes()[..6]);
        out[27..31].copy_from_slice(&self.loc.len.to_le_bytes());
        out[31] = 0;
    }

    fn decode(b: &[u8]) -> Entry {
        let mut off = [0u8; 8];
        off[..6].copy_from_slice(&b[21..27]);
        Entry {
            kind: b[0],
            fp: u128::from_be_bytes(b[1..17].try_into().expect("16 bytes")),
            loc: Loc {
                seg: u32::from_le_bytes(b[17..21].try_into().expect("4 bytes")),
                off: u64::from_le_bytes(off),
                len: u32::from_le_bytes(b[27..31].try_into().expect("4 bytes")),
            },
        }
    }
}

/// Why a run file is rejected or a block of it cannot be used.
#[derive(Debug)]
pub(crate) enum RunError {
    Io(std::io::Error),
    Corrupt(&'static str),
    /// A merge was stopped before it finished (its output removed).
    Cancelled,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Io(e) => write!(f, "{e}"),
            RunError::Corrupt(why) => write!(f, "{why}"),
            RunError::Cancelled => write!(f, "merge cancelled"),
        }
    }
}

impl From<std::io::Error> for RunError {
    fn from(e: std::io::Error) -> Self {
        RunError::Io(e)
    }
}

pub(crate) fn run_name(id: u64) -> String {
    format!("run-{id:016x}.idx")
}

pub(crate) fn parse_run_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("run-")?.strip_suffix(".idx")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn block_crc(id: u64, block: u64, bytes: &[u8]) -> u32 {
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&id.to_le_bytes());
    seed[8..].copy_from_slice(&block.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&seed), bytes)
}

/// The two filter hashes of a key (the fingerprint is already a uniform hash; the kind is
/// mixed in).
fn filter_hashes(kind: u8, fp: u128) -> (u64, u64) {
    let mix = (kind as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut a = (fp as u64) ^ mix;
    a ^= a >> 31;
    a = a.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    a ^= a >> 29;
    let b = ((fp >> 64) as u64) ^ mix.rotate_left(17);
    (a, b)
}

/// A blocked Bloom filter: each key sets [`FILTER_PROBES`] bits inside one 64-byte block.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    words: Vec<u64>,
}

impl Filter {
    fn with_keys(keys: u64) -> Filter {
        let blocks = (keys * FILTER_BITS_PER_KEY).div_ceil(512).max(1);
        Filter {
            words: vec![0; blocks as usize * 8],
        }
    }

    fn blocks(&self) -> u64 {
        self.words.len() as u64 / 8
    }

    fn probe(&self, kind: u8, fp: u128) -> (usize, u64) {
        let (a, b) = filter_hashes(kind, fp);
        let block = ((a as u128 * self.blocks() as u128) >> 64) as usize;
        (block * 8, b)
    }

    fn insert(&mut self, kind: u8, fp: u128) {
        let (base, b) = self.probe(kind, fp);
        for i in 0..FILTER_PROBES {
            let bit = (b >> (i * 9)) & 511;
            self.words[base + (bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    pub(crate) fn may_contain(&self, kind: u8, fp: u128) -> bool {
        let (base, b) = self.probe(kind, fp);
        (0..FILTER_PROBES).all(|i| {
            let bit = (b >> (i * 9)) & 511;
            self.words[base + (bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }

    fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn from_bytes(b: &[u8]) -> Filter {
        Filter {
            words: b
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        }
    }
}

/// One run: its file and what of it is kept in memory.
#[derive(Debug)]
pub(crate) struct Run {
    pub id: u64,
    pub path: PathBuf,
    file: File,
    pub entries: u64,
    fence_kinds: Vec<u8>,
    fence_fps: Vec<u128>,
    filter: Filter,
}

impl Run {
    /// Data blocks.
    pub fn blocks(&self) -> u64 {
        self.fence_fps.len() as u64
    }

    /// Bytes of memory kept for this run (fences and filter).
    pub fn memory_bytes(&self) -> u64 {
        (self.fence_kinds.capacity() + self.fence_fps.capacity() * 16 + self.filter.words.len() * 8)
            as u64
    }

    /// Size of the file in bytes.
    pub fn file_bytes(&self) -> u64 {
        file_len(self.blocks(), self.filter.blocks())
    }

    /// Open and check a run: header, fences and filter (data blocks are checked when read).
    pub fn open(path: &Path, id: u64, entries: u64) -> Result<Run, RunError> {
        let file = File::open(path)?;
        let mut h = [0u8; 64];
        file.read_exact_at(&mut h, 0)?;
        if &h[..8] != MAGIC {
            return Err(RunError::Corrupt("bad magic"));
        }
        if crc32c::crc32c(&h[..56]) != u32::from_le_bytes(h[56..60].try_into().expect("4")) {
            return Err(RunError::Corrupt("header checksum mismatch"));
        }
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
        if u32_at(8) != VERSION {
            return Err(RunError::Corrupt("unknown run version"));
        }
        if u64_at(16) != id {
            return Err(RunError::Corrupt("run id differs from its name"));
        }
        if u64_at(24) != entries {
            return Err(RunError::Corrupt("entry count differs from the checkpoint"));
        }
        let blocks = u64_at(32);
        let filter_blocks = u64_at(40);
        // A merge sizes its filter for the sum of its inputs (before overwritten keys
        // are dropped): at least what the entries need, and never absurdly more.
        if blocks != entries.div_ceil(ENTRIES_PER_BLOCK as u64)
            || filter_blocks < Filter::with_keys(entries).blocks()
            || filter_blocks > len_limit_filter_blocks(entries)
        {
            return Err(RunError::Corrupt(
                "block counts do not match the entry count",
            ));
        }
        let len = file.metadata()?.len();
        if len != file_len(blocks, filter_blocks) {
            return Err(RunError::Corrupt("file size does not match its header"));
        }
        let fences_at = (1 + blocks) * BLOCK_BYTES as u64;
        let mut fences = vec![0u8; blocks as usize * FENCE_BYTES];
        file.read_exact_at(&mut fences, fences_at)?;
        if crc32c::crc32c(&fences) != u32_at(48) {
            return Err(RunError::Corrupt("fence checksum mismatch"));
        }
        let mut filter = vec![0u8; filter_blocks as usize * FILTER_BLOCK_BYTES];
        file.read_exact_at(&mut filter, fences_at + fences.len() as u64)?;
        if crc32c::crc32c(&filter) != u32_at(52) {
            return Err(RunError::Corrupt("filter checksum mismatch"));
        }
        let mut fence_kinds = Vec::with_capacity(blocks as usize);
        let mut fence_fps = Vec::with_capacity(blocks as usize);
        for f in fences.chunks_exact(FENCE_BYTES) {
            let k = (
                f[0],
                u128::from_be_bytes(f[1..].try_into().expect("16 bytes")),
            );
            if let (Some(pk), Some(pf)) = (fence_kinds.last(), fence_fps.last()) {
                if (*pk, *pf) >= k {
                    return Err(RunError::Corrupt("fences out of order"));
                }
            }
            fence_kinds.push(k.0);
            fence_fps.push(k.1);
        }
        Ok(Run {
            id,
            path: path.to_path_buf(),
            file,
            entries,
            fence_kinds,
            fence_fps,
            filter: Filter::from_bytes(&filter),
        })
    }

    /// Index of the block that may hold `key` (the last fence at or below it).
    fn block_for(&self, key: (u8, u128)) -> Option<usize> {
        let n = self.fence_fps.len();
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if (self.fence_kinds[mid], self.fence_fps[mid]) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    /// Read and check data block `b` (0-based); returns its entries.
    pub fn read_block(&self, b: usize, out: &mut Vec<Entry>) -> Result<(), RunError> {
        let mut buf = vec![0u8; BLOCK_BYTES];
        self.file
            .read_exact_at(&mut buf, (1 + b as u64) * BLOCK_BYTES as u64)?;
        decode_block(self.id, b as u64, &buf, out)?;
        let first = out.first().ok_or(RunError::Corrupt("empty block"))?;
        if first.key() != (self.fence_kinds[b], self.fence_fps[b]) {
            return Err(RunError::Corrupt("block does not start at its fence"));
        }
        Ok(())
    }

    /// The location of (kind, fp) if this run holds it.
    pub fn get(&self, kind: u8, fp: u128) -> Result<Option<Loc>, RunError> {
        if !self.filter.may_contain(kind, fp) {
            return Ok(None);
        }
        let Some(b) = self.block_for((kind, fp)) else {
            return Ok(None);
        };
        let mut buf = [0u8; BLOCK_BYTES];
        self.file
            .read_exact_at(&mut buf, (1 + b as u64) * BLOCK_BYTES as u64)?;
        let n = check_block(self.id, b as u64, &buf)?;
        let mut want = [0u8; 17];
        want[0] = kind;
        want[1..].copy_from_slice(&fp.to_be_bytes());
        let key_at = |i: usize| &buf[i * ENTRY_BYTES..i * ENTRY_BYTES + 17];
        let mut fence = [0u8; 17];
        fence[0] = self.fence_kinds[b];
        fence[1..].copy_from_slice(&self.fence_fps[b].to_be_bytes());
        if key_at(0) != fence {
            return Err(RunError::Corrupt("block does not start at its fence"));
        }
        // Binary search over the raw entries (sorted by their first 17 bytes).
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match key_at(mid).cmp(&want[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    return Ok(Some(
                        Entry::decode(&buf[mid * ENTRY_BYTES..][..ENTRY_BYTES]).loc,
                    ))
                }
            }
        }
        Ok(None)
    }

    /// The greatest fingerprint of `kind` in this run (one block read).
    pub fn last_in(&self, kind: u8) -> Result<Option<u128>, RunError> {
        let Some(b) = self.block_for((kind, u128::MAX)) else {
            return Ok(None);
        };
        let mut es = Vec::with_capacity(ENTRIES_PER_BLOCK);
        self.read_block(b, &mut es)?;
        // Sorted: a key of `kind` in an earlier block would put this block's first key,
        // which is at most (kind, MAX), above it, so of `kind` too.
        Ok(es.iter().rev().find(|e| e.kind == kind).map(|e| e.fp))
    }

    /// Call `f` for every entry of `kind` with `lo <= fp <= hi`, in order.
    pub fn for_each_in(
        &self,
        kind: u8,
        lo: u128,
        hi: u128,
        mut f: impl FnMut(Entry),
    ) -> Result<(), RunError> {
        let mut b = self.block_for((kind, lo)).unwrap_or(0);
        let mut es = Vec::with_capacity(ENTRIES_PER_BLOCK);
        // Bounded by the number of blocks.
        while (b as u64) < self.blocks() {
            if (self.fence_kinds[b], self.fence_fps[b]) > (kind, hi) {
                break;
            }
            es.clear();
            self.read_block(b, &mut es)?;
            for e in &es {
                if e.kind == kind && e.fp >= lo && e.fp <= hi {
                    f(*e);
                }
            }
            b += 1;
        }
        Ok(())
    }
}

/// Most filter blocks a run of `entries` may carry (a merge whose inputs overlapped).
fn len_limit_filter_blocks(entries: u64) -> u64 {
    Filter::with_keys(entries.saturating_mul(64).max(1)).blocks()
}

fn file_len(blocks: u64, filter_blocks: u64) -> u64 {
    (1 + blocks) * BLOCK_BYTES as u64
        + blocks * FENCE_BYTES as u64
        + filter_blocks * FILTER_BLOCK_BYTES as u64
}

/// Check block `b`'s checksum and entry count; returns the count.
fn check_block(id: u64, b: u64, buf: &[u8]) -> Result<usize, RunError> {
    let crc = u32::from_le_bytes(buf[4092..4096].try_into().expect("4 bytes"));
    if block_crc(id, b, &buf[..4092]) != crc {
        return Err(RunError::Corrupt("block checksum mismatch"));
    }
    let n = u32::from_le_bytes(buf[4088..4092].try_into().expect("4 bytes")) as usize;
    if n == 0 || n > ENTRIES_PER_BLOCK {
        return Err(RunError::Corrupt("bad block entry count"));
    }
    Ok(n)
}

fn decode_block(id: u64, b: u64, buf: &[u8], out: &mut Vec<Entry>) -> Result<(), RunError> {
    let n = check_block(id, b, buf)?;
    let start = out.len();
    for c in buf[..n * ENTRY_BYTES].chunks_exact(ENTRY_BYTES) {
        let e = Entry::decode(c);
        if out.len() > start && out[out.len() - 1].key() >= e.key() {
            return Err(RunError::Corrupt("block entries out of order"));
        }
        out.push(e);
    }
    Ok(())
}

/// Writes a run from entries given in strictly increasing (kind, fp) order.
pub(crate) struct RunWriter {
    id: u64,
    tmp: PathBuf,
    path: PathBuf,
    out: std::io::BufWriter<File>,
    block: Vec<u8>,
    in_block: usize,
    blocks: u64,
    entries: u64,
    fences: Vec<u8>,
    filter: Filter,
    last: Option<(u8, u128)>,
}

impl RunWriter {
    /// Start run `id` in `dir`; `max_entries` sizes the filter (at least the entries that
    /// will be pushed).
    pub fn create(dir: &Path, id: u64, max_entries: u64) -> Result<RunWriter, RunError> {
        let path = dir.join(run_name(id));
        let tmp = dir.join(format!("{}.tmp", run_name(id)));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
        out.write_all(&[0u8; BLOCK_BYTES])?;
        Ok(RunWriter {
            id,
            tmp,
            path,
            out,
            block: vec![0u8; BLOCK_BYTES],
            in_block: 0,
            blocks: 0,
            entries: 0,
            fences: Vec::new(),
            filter: Filter::with_keys(max_entries),
            last: None,
        })
    }

    pub fn push(&mut self, e: Entry) -> Result<(), RunError> {
        assert!(
            self.last < Some(e.key()),
            "run entries must be strictly increasing"
        );
        self.last = Some(e.key());
        if self.in_block == 0 {
            self.fences.push(e.kind);
            self.fences.extend_from_slice(&e.fp.to_be_bytes());
        }
        e.encode(&mut self.block[self.in_block * ENTRY_BYTES..][..ENTRY_BYTES]);
        self.in_block += 1;
        self.entries += 1;
        self.filter.insert(e.kind, e.fp);
        if self.in_block == ENTRIES_PER_BLOCK {
            self.end_block()?;
        }
        Ok(())
    }

    fn end_block(&mut self) -> Result<(), RunError> {
        self.block[self.in_block * ENTRY_BYTES..4088].fill(0);
        self.block[4088..4092].copy_from_slice(&(self.in_block as u32).to_le_bytes());
        let crc = block_crc(self.id, self.blocks, &self.block[..4092]);
        self.block[4092..].copy_from_slice(&crc.to_le_bytes());
        self.out.write_all(&self.block)?;
        self.blocks += 1;
        self.in_block = 0;
        Ok(())
    }

    /// Write fences, filter and header, fsync, rename into place and fsync the directory.
    pub fn finish(mut self, dir: &Path) -> Result<Run, RunError> {
        if self.in_block > 0 {
            self.end_block()?;
        }
        let filter = &self.filter;
        let filter_bytes = filter.to_bytes();
        self.out.write_all(&self.fences)?;
        self.out.write_all(&filter_bytes)?;
        self.out.flush()?;
        let mut h = [0u8; 64];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[16..24].copy_from_slice(&self.id.to_le_bytes());
        h[24..32].copy_from_slice(&self.entries.to_le_bytes());
        h[32..40].copy_from_slice(&self.blocks.to_le_bytes());
        h[40..48].copy_from_slice(&filter.blocks().to_le_bytes());
        h[48..52].copy_from_slice(&crc32c::crc32c(&self.fences).to_le_bytes());
        h[52..56].copy_from_slice(&crc32c::crc32c(&filter_bytes).to_le_bytes());
        let hc = crc32c::crc32c(&h[..56]);
        h[56..60].copy_from_slice(&hc.to_le_bytes());
        let f = self.out.into_inner().map_err(|e| e.into_error())?;
        f.write_all_at(&h, 0)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path)?;
        crate::datadir::fsync_dir(dir)?;
        Run::open(&self.path, self.id, self.entries)
    }

    /// Remove the temporary file of an abandoned write.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Write run `id` in `dir` from `entries` (sorted, distinct keys).
#[cfg(test)]
pub(crate) fn write_run(dir: &Path, id: u64, entries: &[Entry]) -> Result<Run, RunError> {
    let mut w = RunWriter::create(dir, id, entries.len() as u64)?;
    for e in entries {
        if let Err(err) = w.push(*e) {
            w.abandon();
            return Err(err);
        }
    }
    w.finish(dir)
}

/// Sequential reader of a run's entries (used by merges; every block checked).
struct RunCursor {
    id: u64,
    file: File,
    blocks: u64,
    next_block: u64,
    buf: Vec<Entry>,
    pos: usize,
}

impl RunCursor {
    fn new(run: &RunRef) -> Result<RunCursor, RunError> {
        Ok(RunCursor {
            id: run.id,
            file: File::open(&run.path)?,
            blocks: run.blocks,
            next_block: 0,
            buf: Vec::with_capacity(ENTRIES_PER_BLOCK),
            pos: 0,
        })
    }

    fn peek(&mut self) -> Result<Option<Entry>, RunError> {
        if self.pos == self.buf.len() {
            if self.next_block == self.blocks {
                return Ok(None);
            }
            let mut raw = vec![0u8; BLOCK_BYTES];
            self.file
                .read_exact_at(&mut raw, (1 + self.next_block) * BLOCK_BYTES as u64)?;
            self.buf.clear();
            decode_block(self.id, self.next_block, &raw, &mut self.buf)?;
            self.next_block += 1;
            self.pos = 0;
        }
        Ok(Some(self.buf[self.pos]))
    }
}

/// What a merge needs of an input run (owned, so the merge can run on another thread).
#[derive(Debug, Clone)]
pub(crate) struct RunRef {
    pub id: u64,
    pub path: PathBuf,
    pub blocks: u64,
    pub entries: u64,
}

impl Run {
    pub fn as_ref(&self) -> RunRef {
        RunRef {
            id: self.id,
            path: self.path.clone(),
            blocks: self.blocks(),
            entries: self.entries,
        }
    }
}

/// Merge `inputs` (oldest first) into run `id`: for a key in several inputs the newest
/// input's entry wins. The output is durable when this returns; the inputs are untouched.
/// `cancel` is checked once per output block.
pub(crate) fn merge_runs(
    dir: &Path,
    id: u64,
    inputs: &[RunRef],
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Run, RunError> {
    let max: u64 = inputs.iter().map(|r| r.entries).sum();
    let mut cursors = inputs
        .iter()
        .map(RunCursor::new)
        .collect::<Result<Vec<_>, _>>()?;
    let mut w = RunWriter::create(dir, id, max)?;
    let r = (|| {
        // Bounded: every iteration consumes at least one entry of one input.
        loop {
            let mut best: Option<(usize, Entry)> = None;
            for (i, c) in cursors.iter_mut().enumerate() {
                if let Some(e) = c.peek()? {
                    // Later inputs are newer: on equal keys the later one replaces.
                    if best.is_none_or(|(_, b)| e.key() <= b.key()) {
                        best = Some((i, e));
                    }
                }
            }
            let Some((_, e)) = best else {
                return Ok(());
            };
            for c in cursors.iter_mut() {
                if c.peek()?.is_some_and(|x| x.key() == e.key()) {
                    c.pos += 1;
                }
            }
            w.push(e)?;
            if w.in_block == 0 && cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(RunError::Cancelled);
            }
        }
    })();
    match r {
        Ok(()) => w.finish(dir),
        Err(e) => {
            w.abandon();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(kind: u8, fp: u128, off: u64) -> Entry {
        Entry {
            kind,
            fp,
            loc: Loc {
                seg: 1,
                off,
                len: 40,
            },
        }
    }

    fn spread(i: u64) -> u128 {
        let mut x = (i as u128 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        x ^= x >> 67;
        x
    }

    #[test]
    fn write_open_get_range_and_merge() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut a: Vec<Entry> = (0..1000).map(|i| e(1, spread(i), i)).collect();
        a.sort_by_key(|x| x.key());
        let ra = write_run(dir, 1, &a).unwrap();
        assert_eq!(ra.blocks(), 1000u64.div_ceil(127));
        let ra = Run::open(&ra.path, 1, 1000).unwrap();
        for x in &a {
            assert_eq!(ra.get(1, x.fp).unwrap(), Some(x.loc));
            assert_eq!(ra.get(2, x.fp).unwrap(), None);
        }
        let mut misses_read = 0;
        for i in 1000..3000 {
            if ra.filter.may_contain(1, spread(i)) {
                misses_read += 1;
            }
            assert_eq!(ra.get(1, spread(i)).unwrap(), None);
        }
        assert!(
            misses_read < 100,
            "filter passes {misses_read} of 2000 misses"
        );
        let (lo, hi) = (a[100].fp, a[400].fp);
        let mut got = Vec::new();
        ra.for_each_in(1, lo, hi, |x| got.push(x)).unwrap();
        assert_eq!(got, a[100..=400].to_vec());
        // Newer run overwrites some keys and adds others.
        let mut b: Vec<Entry> = (500..1500).map(|i| e(1, spread(i), 10_000 + i)).collect();
        b.sort_by_key(|x| x.key());
        let rb = write_run(dir, 2, &b).unwrap();
        let no = std::sync::atomic::AtomicBool::new(false);
        let m = merge_runs(dir, 3, &[ra.as_ref(), rb.as_ref()], &no).unwrap();
        assert_eq!(m.entries, 1500);
        for i in 0..1500 {
            let want = if i >= 500 { 10_000 + i } else { i };
            assert_eq!(m.get(1, spread(i)).unwrap().unwrap().off, want);
        }
        // A cancelled merge leaves no file behind.
        let yes = std::sync::atomic::AtomicBool::new(true);
        assert!(matches!(
            merge_runs(dir, 4, &[ra.as_ref(), rb.as_ref()], &yes),
            Err(RunError::Cancelled)
        ));
        assert!(!dir.join(run_name(4)).exists());
        assert!(!dir.join(format!("{}.tmp", run_name(4))).exists());
    }

    #[test]
    fn corruption_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut a: Vec<Entry> = (0..500).map(|i| e(3, spread(i), i)).collect();
        a.sort_by_key(|x| x.key());
        let r = write_run(dir, 7, &a).unwrap();
        let path = r.path.clone();
        drop(r);
        let good = std::fs::read(&path).unwrap();
        // Wrong id or count, truncation, a flipped byte in header/fences/filter.
        assert!(Run::open(&path, 8, 500).is_err());
        assert!(Run::open(&path, 7, 499).is_err());
        for cut in [0, 10, 4096, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(Run::open(&path, 7, 500).is_err(), "cut at {cut}");
        }
        let fences_at = (1 + 4) * BLOCK_BYTES;
        for at in [20, fences_at + 3, good.len() - 5] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            assert!(Run::open(&path, 7, 500).is_err(), "flip at {at}");
        }
        // A flipped byte in a data block: found when that block is read.
        let mut bad = good.clone();
        bad[BLOCK_BYTES + 2 * BLOCK_BYTES + 100] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let r = Run::open(&path, 7, 500).unwrap();
        let errs = a.iter().filter(|x| r.get(3, x.fp).is_err()).count();
        assert_eq!(errs, 127);
    }
}

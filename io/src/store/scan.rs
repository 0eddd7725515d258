//! Sequential reads of segment files in large blocks, and the streaming record scan built
//! on them.
//!
//! [`SeqReader`] reads a segment front to back in [`SCAN_CHUNK_BYTES`] blocks with up to
//! [`SCAN_READS_IN_FLIGHT`] reads queued ahead, so one open or reload costs one read per
//! block, not one per record. The open-time scan (index rebuild, torn-tail cut) and
//! [`StoreScan`] (every live record, verified, without a read per record) use it.

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;

use super::file::{SegFile, IO_ALIGN_BYTES};
use super::record::{self, RecordDefect, RECORD_HEADER_BYTES};
use super::{io_err, Loc, Store, StoreError};

/// Bytes read per block while scanning segments (open and [`Store::scan_all`]).
pub const SCAN_CHUNK_BYTES: usize = 2 << 20;
/// Block reads queued ahead of the one being parsed.
pub const SCAN_READS_IN_FLIGHT: usize = 4;

type ReadFuture = Pin<Box<dyn Future<Output = std::io::Result<glommio::io::ReadResult>>>>;

/// A window over one segment, refilled by sequential block reads queued ahead.
pub(crate) struct SeqReader {
    file: Rc<SegFile>,
    path: std::path::PathBuf,
    /// Bytes of the file considered (reads stop here).
    file_len: u64,
    /// Window: bytes `[buf_pos, buf_pos + buf.len())` of the file.
    buf: Vec<u8>,
    buf_pos: u64,
    /// Offset of the next block read to queue.
    next_read: u64,
    /// Block reads in flight, oldest first, with their start offsets and lengths.
    in_flight: VecDeque<(u64, usize, ReadFuture)>,
    /// Block reads issued.
    pub(crate) reads: u64,
}

impl SeqReader {
    pub(crate) fn new(file: Rc<SegFile>, path: &Path, start: u64, file_len: u64) -> SeqReader {
        let pos = (start / IO_ALIGN_BYTES * IO_ALIGN_BYTES).min(file_len);
        SeqReader {
            file,
            path: path.to_path_buf(),
            file_len,
            buf: Vec::new(),
            buf_pos: pos,
            next_read: pos,
            in_flight: VecDeque::new(),
            reads: 0,
        }
    }

    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Bytes `[start, start + len)` already in the window (after [`SeqReader::bytes`]
    /// returned them).
    pub(crate) fn window(&self, start: u64, len: usize) -> &[u8] {
        let a = (start - self.buf_pos) as usize;
        &self.buf[a..a + len]
    }

    /// Restart the sequential reads at `start` (a jump backwards or far ahead).
    fn reset(&mut self, start: u64) {
        let pos = (start / IO_ALIGN_BYTES * IO_ALIGN_BYTES).min(self.file_len);
        // Dropping a queued read future cancels it; the buffers are glommio's.
        self.in_flight.clear();
        self.buf.clear();
        self.buf_pos = pos;
        self.next_read = pos;
    }

    /// Queue block reads until [`SCAN_READS_IN_FLIGHT`] are in flight or the end is reached.
    fn queue_reads(&mut self) {
        while self.in_flight.len() < SCAN_READS_IN_FLIGHT && self.next_read < self.file_len {
            let pos = self.next_read;
            let len = (self.file_len - pos).min(SCAN_CHUNK_BYTES as u64) as usize;
            let file = self.file.clone();
            let mut fut: ReadFuture = Box::pin(async move { file.read_block(pos, len).await });
            // Poll once so that the read is queued in the reactor right away.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if let std::task::Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                fut = Box::pin(std::future::ready(r));
            }
            self.in_flight.push_back((pos, len, fut));
            self.next_read += len as u64;
            self.reads += 1;
        }
    }

    /// Bytes `[start, start + len)` clipped to the end of the file.
    pub(crate) async fn bytes(&mut self, start: u64, len: usize) -> Result<&[u8], StoreError> {
        let start = start.min(self.file_len);
        let end = (start + len as u64).min(self.file_len);
        let buf_end = self.buf_pos + self.buf.len() as u64;
        if start < self.buf_pos || start > buf_end {
            self.reset(start);
        }
        // Bounded: each step appends one block (or fails); the file length is finite.
        while self.buf_pos + (self.buf.len() as u64) < end {
            if self.next_read != self.buf_pos + self.buf.len() as u64 && self.in_flight.is_empty() {
                self.reset(start);
            }
            // Drop what lies before `start` before appending (the window only grows by
            // what the current record needs).
            let keep_from = ((start.max(self.buf_pos) - self.buf_pos) as usize)
                / IO_ALIGN_BYTES as usize
                * IO_ALIGN_BYTES as usize;
            if keep_from > 0 {
                self.buf.drain(..keep_from);
                self.buf_pos += keep_from as u64;
            }
            self.queue_reads();
            let Some((pos, want, fut)) = self.in_flight.pop_front() else {
                return Err(self.shrank(start));
            };
            debug_assert_eq!(pos, self.buf_pos + self.buf.len() as u64);
            let block = fut.await.map_err(io_err("reading", &self.path))?;
            if block.len() < want {
                return Err(self.shrank(pos));
            }
            if self.buf.is_empty() {
                self.buf.reserve(SCAN_CHUNK_BYTES);
            }
            self.buf.extend_from_slice(&block[..want]);
            // Keep the queue full while the caller parses this block.
            self.queue_reads();
        }
        let a = (start - self.buf_pos) as usize;
        let b = (end - self.buf_pos) as usize;
        Ok(&self.buf[a..b])
    }

    fn shrank(&self, at: u64) -> StoreError {
        StoreError::Io {
            op: "reading",
            path: self.path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("segment shrank while scanning at offset {at}"),
            ),
        }
    }
}

/// One live record yielded by [`StoreScan::next`]; borrows the scan's read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanRecord<'a> {
    pub kind: u8,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// Counters of one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Live records yielded.
    pub records: u64,
    /// Records read but not yielded: superseded by a later put, or of another kind.
    pub skipped_records: u64,
    /// Segment bytes read (and checked).
    pub scanned_bytes: u64,
    /// Block reads issued.
    pub reads: u64,
}

/// Where the scan is.
enum Pos {
    /// Next segment to open: index into `segs`.
    NextSegment(usize),
    /// Inside segment `segs[i]` at `off`.
    InSegment {
        i: usize,
        reader: SeqReader,
        off: u64,
    },
    /// The active segment's bytes still in the write buffer, from `off`.
    InPending {
        off: u64,
    },
    Done,
}

/// A streaming scan over the store's segments in write order, yielding every live record
/// (the one the index points at for its kind and key) with its checksums verified. See
/// [`Store::scan_all`] and [`Store::scan`].
pub struct StoreScan<'a> {
    store: &'a Store,
    /// Only this kind, or every kind.
    kind: Option<u8>,
    /// Segments to scan, in order: (id, end of the last indexed record).
    segs: Vec<(u32, u64)>,
    pos: Pos,
    stats: ScanStats,
    /// The record that starts on the active segment's file and ends in the write buffer.
    scratch: Vec<u8>,
    /// A read or check failed: the scan yields nothing more.
    failed: bool,
}

impl Store {
    /// Scan every live record of every kind in write order, reading the segments in large
    /// sequential blocks (a few reads in flight) rather than one read per record. Every
    /// record's checksums are verified; a damaged record is a [`StoreError::Corrupt`]
    /// naming the segment and offset, after which the scan ends.
    pub fn scan_all(&self) -> StoreScan<'_> {
        self.scan_inner(None)
    }

    /// Like [`Store::scan_all`], yielding only the records of `kind` (the other records are
    /// still read and checked).
    pub fn scan(&self, kind: u8) -> StoreScan<'_> {
        self.scan_inner(Some(kind))
    }

    fn scan_inner(&self, kind: Option<u8>) -> StoreScan<'_> {
        // End of the last indexed record of each segment: a zero header before it is
        // corruption, not padding.
        let mut last_end: std::collections::HashMap<u32, u64> = Default::default();
        for m in &self.index {
            for loc in m.values() {
                let e = loc.off + loc.len as u64;
                let v = last_end.entry(loc.seg).or_insert(0);
                if e > *v {
                    *v = e;
                }
            }
        }
        // Segments (and the part of the active one) covered by the fingerprint runs end
        // at least where the index recorded.
        for (id, end) in self
            .seg_ends
            .iter()
            .chain(std::iter::once((&self.covered.0, &self.covered.1)))
        {
            let v = last_end.entry(*id).or_insert(0);
            if *end > *v {
                *v = *end;
            }
        }
        let segs: Vec<(u32, u64)> = self
            .sealed
            .keys()
            .chain(std::iter::once(&self.active_id))
            .map(|id| (*id, last_end.get(id).copied().unwrap_or(0)))
            .collect();
        StoreScan {
            store: self,
            kind,
            segs,
            pos: Pos::NextSegment(0),
            stats: ScanStats::default(),
            scratch: Vec::new(),
            failed: false,
        }
    }

    /// Path of segment `id` (sealed or active).
    fn seg_path(&self, id: u32) -> &Path {
        if id == self.active_id {
            &self.active.path
        } else {
            self.sealed
                .get(&id)
                .map(|s| s.path.as_path())
                .unwrap_or(&self.dir)
        }
    }
}

fn corrupt_at(store: &Store, seg: u32, off: u64, defect: RecordDefect) -> StoreError {
    StoreError::Corrupt {
        segment: store.seg_path(seg).to_path_buf(),
        offset: off,
        reason: defect.reason(),
    }
}

/// What the scan found at one offset.
enum Step {
    /// A checked record of `len` bytes; `live` when it is yielded.
    Record {
        len: u64,
        live: bool,
        h: record::RecordHeader,
    },
    /// The segment's records end here.
    SegmentEnd,
    /// The record starts on the file and continues in the write buffer (active segment).
    Straddles,
}

impl StoreScan<'_> {
    /// Counters so far.
    pub fn stats(&self) -> ScanStats {
        let mut s = self.stats.clone();
        if let Pos::InSegment { reader, .. } = &self.pos {
            s.reads += reader.reads;
        }
        s
    }

    fn is_live(&self, kind: u8, key: &[u8], loc: Loc) -> Result<bool, StoreError> {
        Ok(self.kind.is_none_or(|k| k == kind) && self.store.lookup(kind, key)? == Some(loc))
    }

    /// The next live record, `None` at the end (or after an error).
    #[allow(clippy::should_implement_trait)]
    pub async fn next(&mut self) -> Option<Result<ScanRecord<'_>, StoreError>> {
        if self.failed {
            return None;
        }
        // Cleared by `next_inner` on every successful return, so an error ends the scan.
        self.failed = true;
        match self.next_inner().await {
            Ok(r) => r.map(Ok),
            Err(e) => Some(Err(e)),
        }
    }

    async fn next_inner(&mut self) -> Result<Option<ScanRecord<'_>>, StoreError> {
        let store = self.store;
        // Bounded: every iteration consumes one record or moves to the next segment.
        loop {
            match &mut self.pos {
                Pos::Done => {
                    self.failed = false;
                    return Ok(None);
                }
                Pos::NextSegment(i) => {
                    let i = *i;
                    let Some(&(id, _)) = self.segs.get(i) else {
                        self.pos = Pos::Done;
                        self.failed = false;
                        return Ok(None);
                    };
                    let (file, path, file_len) = if id == store.active_id {
                        // Bytes written behind must be on the file before it is read.
                        store.drain_writes().await?;
                        let end = store.active_len.min(store.pending_pos);
                        (store.active.file.clone(), &store.active.path, end)
                    } else {
                        let seg = store.sealed.get(&id).expect("scan lists known segments");
                        let len = seg
                            .file
                            .file_size()
                            .await
                            .map_err(io_err("stat", &seg.path))?;
                        (seg.file.clone(), &seg.path, len)
                    };
                    let reader = SeqReader::new(file, path, 0, file_len);
                    self.pos = Pos::InSegment { i, reader, off: 0 };
                }
                Pos::InSegment { i, reader, off } => {
                    let (i, o) = (*i, *off);
                    let (id, last_end) = self.segs[i];
                    let file_len = reader.file_len();
                    let is_active = id == store.active_id;
                    let step = if o >= file_len {
                        Step::SegmentEnd
                    } else if is_active && o + RECORD_HEADER_BYTES as u64 > file_len {
                        Step::Straddles
                    } else {
                        let hdr = reader.bytes(o, RECORD_HEADER_BYTES).await?;
                        match record::parse_header(hdr, &store.limits) {
                            Err(RecordDefect::ZeroHeader) if !is_active && o >= last_end => {
                                // Block padding after the last record of a sealed segment.
                                Step::SegmentEnd
                            }
                            Err(d) => return Err(corrupt_at(store, id, o, d)),
                            Ok(h) if is_active && o + h.record_len() as u64 > file_len => {
                                Step::Straddles
                            }
                            Ok(h) => {
                                let rl = h.record_len() as u64;
                                if o + rl > file_len {
                                    return Err(corrupt_at(store, id, o, RecordDefect::ShortBody));
                                }
                                let rec = reader.bytes(o, rl as usize).await?;
                                let body = &rec[RECORD_HEADER_BYTES..];
                                record::check_body(&h, body)
                                    .map_err(|d| corrupt_at(store, id, o, d))?;
                                let loc = Loc {
                                    seg: id,
                                    off: o,
                                    len: rl as u32,
                                };
                                let live = self.kind.is_none_or(|k| k == h.kind)
                                    && store.lookup(h.kind, &body[..h.key_len])? == Some(loc);
                                Step::Record { len: rl, live, h }
                            }
                        }
                    };
                    match step {
                        Step::SegmentEnd => {
                            self.stats.reads += reader.reads;
                            self.pos = if is_active {
                                Pos::InPending { off: o }
                            } else {
                                Pos::NextSegment(i + 1)
                            };
                        }
                        Step::Straddles => {
                            // Rare (once per scan at most): file bytes ++ write buffer.
                            let on_file = reader.bytes(o, (file_len - o) as usize).await?;
                            self.scratch.clear();
                            self.scratch.extend_from_slice(on_file);
                            self.stats.reads += reader.reads;
                            self.scratch.extend_from_slice(&store.pending);
                            let h = record::parse_record(&self.scratch, &store.limits)
                                .map_err(|d| corrupt_at(store, id, o, d))?;
                            let rl = h.record_len();
                            self.stats.scanned_bytes += rl as u64;
                            self.pos = Pos::InPending { off: o + rl as u64 };
                            let loc = Loc {
                                seg: id,
                                off: o,
                                len: rl as u32,
                            };
                            let key = &self.scratch[RECORD_HEADER_BYTES..][..h.key_len];
                            let live = self.is_live(h.kind, key, loc)?;
                            if live {
                                self.stats.records += 1;
                                self.failed = false;
                                let body = &self.scratch[RECORD_HEADER_BYTES..rl];
                                return Ok(Some(ScanRecord {
                                    kind: h.kind,
                                    key: &body[..h.key_len],
                                    value: &body[h.key_len..],
                                }));
                            }
                            self.stats.skipped_records += 1;
                        }
                        Step::Record { len, live, h } => {
                            *off = o + len;
                            self.stats.scanned_bytes += len;
                            if !live {
                                self.stats.skipped_records += 1;
                                continue;
                            }
                            self.stats.records += 1;
                            self.failed = false;
                            let Pos::InSegment { reader, .. } = &self.pos else {
                                unreachable!("the position was just updated in place")
                            };
                            let body = &reader.window(o, len as usize)[RECORD_HEADER_BYTES..];
                            return Ok(Some(ScanRecord {
                                kind: h.kind,
                                key: &body[..h.key_len],
                                value: &body[h.key_len..],
                            }));
                        }
                    }
                }
                Pos::InPending { off } => {
                    let o = *off;
                    if o >= store.active_len {
                        self.pos = Pos::Done;
                        self.failed = false;
                        return Ok(None);
                    }
                    let id = store.active_id;
                    let Some(a) = o.checked_sub(store.pending_pos) else {
                        return Err(corrupt_at(store, id, o, RecordDefect::ShortBody));
                    };
                    let bytes: &[u8] = &store.pending[a as usize..];
                    let h = record::parse_record(bytes, &store.limits)
                        .map_err(|d| corrupt_at(store, id, o, d))?;
                    let rl = h.record_len();
                    *off = o + rl as u64;
                    self.stats.scanned_bytes += rl as u64;
                    let body = &bytes[RECORD_HEADER_BYTES..rl];
                    let loc = Loc {
                        seg: id,
                        off: o,
                        len: rl as u32,
                    };
                    if self.is_live(h.kind, &body[..h.key_len], loc)? {
                        self.stats.records += 1;
                        self.failed = false;
                        return Ok(Some(ScanRecord {
                            kind: h.kind,
                            key: &body[..h.key_len],
                            value: &body[h.key_len..],
                        }));
                    }
                    self.stats.skipped_records += 1;
                }
            }
        }
    }
}

//! Push-based tar parser (ustar / GNU / pax) with bounded memory.
//!
//! Bytes are pushed in arbitrary slices; the parser calls a [`TarSink`] for every entry
//! header, for every piece of entry data as it arrives (zero-copy: sub-slices of the
//! caller's input), and at the end of each entry. Nothing but one 512-byte header block and
//! the (bounded) GNU long name / pax extended header is ever buffered.

use thiserror::Error;

/// Size of a tar block.
pub const BLOCK_SIZE_BYTES: usize = 512;
/// Longest entry path accepted (GNU long name or pax `path`).
pub const MAX_PATH_LEN_BYTES: usize = 4096;
/// Largest pax extended header accepted.
pub const MAX_PAX_HEADER_BYTES: u64 = 64 * 1024;

/// Kind of a tar entry, from its typeflag byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Regular file (`0` or NUL).
    File,
    /// Directory (`5`).
    Directory,
    /// Hard link (`1`).
    HardLink,
    /// Symbolic link (`2`).
    Symlink,
    /// Character or block device (`3`, `4`).
    Device,
    /// FIFO (`6`).
    Fifo,
    /// Any other typeflag (contiguous file `7`, GNU sparse `S`, ...).
    Other(u8),
}

impl EntryKind {
    fn from_flag(flag: u8) -> Self {
        match flag {
            b'0' | 0 => EntryKind::File,
            b'5' => EntryKind::Directory,
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' | b'4' => EntryKind::Device,
            b'6' => EntryKind::Fifo,
            other => EntryKind::Other(other),
        }
    }
}

/// One entry header, with GNU long names and pax `path`/`size` already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// Path as written in the archive (raw bytes, not normalised).
    pub path: Vec<u8>,
    /// Declared size of the entry's data.
    pub size_bytes: u64,
    /// Entry kind.
    pub kind: EntryKind,
    /// Offset of the header block in the uncompressed tar stream.
    pub header_offset_bytes: u64,
}

/// Tar stream errors. Offsets are in the uncompressed tar stream.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TarError {
    #[error(
        "tar header at offset {offset}: checksum mismatch (stored {stored}, computed {computed})"
    )]
    BadChecksum {
        offset: u64,
        stored: u64,
        computed: u64,
    },
    #[error("tar header at offset {offset}: malformed numeric field `{field}`")]
    BadNumber { offset: u64, field: &'static str },
    #[error("tar header at offset {offset}: path longer than {max} bytes")]
    PathTooLong { offset: u64, max: usize },
    #[error("tar header at offset {offset}: pax header of {size} bytes exceeds {max}")]
    PaxTooLarge { offset: u64, size: u64, max: u64 },
    #[error("tar header at offset {offset}: malformed pax record")]
    BadPax { offset: u64 },
    #[error("tar stream: data after the end-of-archive marker at offset {offset}")]
    DataAfterEnd { offset: u64 },
    #[error("incomplete archive: tar stream ended {context} at offset {offset}")]
    Incomplete { offset: u64, context: &'static str },
}

/// Receiver of parsed tar events. Errors abort parsing and are returned by [`TarParser::push`].
pub trait TarSink {
    type Error: From<TarError>;
    /// A new entry begins (never called for GNU long-name or pax meta entries).
    fn begin_entry(&mut self, header: &EntryHeader) -> Result<(), Self::Error>;
    /// A piece of the current entry's data, in order.
    fn entry_data(&mut self, data: &[u8]) -> Result<(), Self::Error>;
    /// The current entry's data is complete.
    fn end_entry(&mut self) -> Result<(), Self::Error>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    None,
    GnuLongName,
    Pax,
    PaxGlobal,
}

#[derive(Debug)]
enum State {
    /// Collecting a header block (`block_fill` bytes buffered).
    Header,
    /// Streaming `remaining` bytes of entry data, then `padding` bytes of padding.
    Data {
        remaining: u64,
        padding: u64,
        meta: Meta,
    },
    /// Saw one zero block; expecting another.
    FirstZero,
    /// End-of-archive marker seen; only zero bytes may follow.
    End,
}

/// Push-based tar parser.
#[derive(Debug)]
pub struct TarParser {
    state: State,
    block: [u8; BLOCK_SIZE_BYTES],
    block_fill: usize,
    offset_bytes: u64,
    meta_buf: Vec<u8>,
    pending_long_name: Option<Vec<u8>>,
    pending_pax_path: Option<Vec<u8>>,
    pending_pax_size: Option<u64>,
    entries_seen: u64,
}

impl Default for TarParser {
    fn default() -> Self {
        Self::new()
    }
}

impl TarParser {
    pub fn new() -> Self {
        TarParser {
            state: State::Header,
            block: [0u8; BLOCK_SIZE_BYTES],
            block_fill: 0,
            offset_bytes: 0,
            meta_buf: Vec::new(),
            pending_long_name: None,
            pending_pax_path: None,
            pending_pax_size: None,
            entries_seen: 0,
        }
    }

    /// Bytes of tar stream consumed so far.
    pub fn offset_bytes(&self) -> u64 {
        self.offset_bytes
    }

    /// Entries reported to the sink so far.
    pub fn entries_seen(&self) -> u64 {
        self.entries_seen
    }

    /// True once the end-of-archive marker (two zero blocks) has been read.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::End)
    }

    /// Check that the stream ended cleanly (end-of-archive marker seen).
    pub fn finish(&self) -> Result<(), TarError> {
        let context = match &self.state {
            State::End => return Ok(()),
            State::Header if self.block_fill == 0 => "before the end-of-archive marker",
            State::Header => "inside an entry header",
            State::Data { .. } => "inside an entry's data",
            State::FirstZero => "inside the end-of-archive marker",
        };
        Err(TarError::Incomplete {
            offset: self.offset_bytes,
            context,
        })
    }

    /// Push the next slice of the tar stream.
    pub fn push<S: TarSink>(&mut self, mut input: &[u8], sink: &mut S) -> Result<(), S::Error> {
        while !input.is_empty() {
            match &mut self.state {
                State::Header | State::FirstZero => {
                    let take = (BLOCK_SIZE_BYTES - self.block_fill).min(input.len());
                    self.block[self.block_fill..self.block_fill + take]
                        .copy_from_slice(&input[..take]);
                    self.block_fill += take;
                    input = &input[take..];
                    if self.block_fill == BLOCK_SIZE_BYTES {
                        self.block_fill = 0;
                        let header_offset = self.offset_bytes;
                        self.offset_bytes += BLOCK_SIZE_BYTES as u64;
                        self.on_block(header_offset, sink)?;
                    }
                }
                State::Data {
                    remaining,
                    padding,
                    meta,
                } => {
                    let meta = *meta;
                    if *remaining > 0 {
                        let take = (*remaining).min(input.len() as u64) as usize;
                        *remaining -= take as u64;
                        let chunk = &input[..take];
                        input = &input[take..];
                        self.offset_bytes += take as u64;
                        match meta {
                            Meta::None => sink.entry_data(chunk)?,
                            Meta::GnuLongName | Meta::Pax => self.meta_buf.extend_from_slice(chunk),
                            Meta::PaxGlobal => {}
                        }
                    } else if *padding > 0 {
                        let take = (*padding).min(input.len() as u64) as usize;
                        *padding -= take as u64;
                        input = &input[take..];
                        self.offset_bytes += take as u64;
                    }
                    if let State::Data {
                        remaining: 0,
                        padding: 0,
                        meta,
                    } = self.state
                    {
                        self.state = State::Header;
                        self.on_entry_done(meta, sink)?;
                    }
                }
                State::End => {
                    if let Some(pos) = input.iter().position(|&b| b != 0) {
                        return Err(TarError::DataAfterEnd {
                            offset: self.offset_bytes + pos as u64,
                        }
                        .into());
                    }
                    self.offset_bytes += input.len() as u64;
                    input = &[];
                }
            }
        }
        Ok(())
    }

    fn on_entry_done<S: TarSink>(&mut self, meta: Meta, sink: &mut S) -> Result<(), S::Error> {
        match meta {
            Meta::None => sink.end_entry(),
            Meta::GnuLongName => {
                let mut name = std::mem::take(&mut self.meta_buf);
                if let Some(nul) = name.iter().position(|&b| b == 0) {
                    name.truncate(nul);
                }
                self.pending_long_name = Some(name);
                Ok(())
            }
            Meta::Pax => {
                let buf = std::mem::take(&mut self.meta_buf);
                self.parse_pax(&buf)?;
                Ok(())
            }
            Meta::PaxGlobal => Ok(()),
        }
    }

    fn parse_pax(&mut self, buf: &[u8]) -> Result<(), TarError> {
        let offset = self.offset_bytes;
        let mut rest = buf;
        // Records: "<len> <key>=<value>\n", len counting the whole record.
        let mut records_left = 10_000usize;
        while !rest.is_empty() {
            records_left = records_left
                .checked_sub(1)
                .ok_or(TarError::BadPax { offset })?;
            let sp = rest
                .iter()
                .position(|&b| b == b' ')
                .ok_or(TarError::BadPax { offset })?;
            let len: usize = std::str::from_utf8(&rest[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(TarError::BadPax { offset })?;
            if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
                return Err(TarError::BadPax { offset });
            }
            let record = &rest[sp + 1..len - 1];
            let eq = record
                .iter()
                .position(|&b| b == b'=')
                .ok_or(TarError::BadPax { offset })?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            match key {
                b"path" => {
                    if value.len() > MAX_PATH_LEN_BYTES {
                        return Err(TarError::PathTooLong {
                            offset,
                            max: MAX_PATH_LEN_BYTES,
                        });
                    }
                    self.pending_pax_path = Some(value.to_vec());
                }
                b"size" => {
                    let size = std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or(TarError::BadPax { offset })?;
                    self.pending_pax_size = Some(size);
                }
                _ => {}
            }
            rest = &rest[len..];
        }
        Ok(())
    }

    fn on_block<S: TarSink>(&mut self, offset: u64, sink: &mut S) -> Result<(), S::Error> {
        let block = self.block;
        if block.iter().all(|&b| b == 0) {
            self.state = match self.state {
                State::FirstZero => State::End,
                _ => State::FirstZero,
            };
            return Ok(());
        }
        if matches!(self.state, State::FirstZero) {
            // A lone zero block followed by a header: tolerated (some writers pad so).
            self.state = State::Header;
        }
        let stored = parse_octal(&block[148..156]).ok_or(TarError::BadNumber {
            offset,
            field: "chksum",
        })?;
        let computed: u64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    b' ' as u64
                } else {
                    b as u64
                }
            })
            .sum();
        if stored != computed {
            return Err(TarError::BadChecksum {
                offset,
                stored,
                computed,
            }
            .into());
        }
        let mut size = parse_size(&block[124..136]).ok_or(TarError::BadNumber {
            offset,
            field: "size",
        })?;
        let flag = block[156];
        let meta = match flag {
            b'L' => Meta::GnuLongName,
            b'x' => Meta::Pax,
            b'g' => Meta::PaxGlobal,
            _ => Meta::None,
        };
        match meta {
            Meta::GnuLongName if size > MAX_PATH_LEN_BYTES as u64 => {
                return Err(TarError::PathTooLong {
                    offset,
                    max: MAX_PATH_LEN_BYTES,
                }
                .into());
            }
            Meta::Pax | Meta::PaxGlobal if size > MAX_PAX_HEADER_BYTES => {
                return Err(TarError::PaxTooLarge {
                    offset,
                    size,
                    max: MAX_PAX_HEADER_BYTES,
                }
                .into());
            }
            _ => {}
        }
        if meta == Meta::None {
            let path = if let Some(p) = self.pending_pax_path.take() {
                p
            } else if let Some(p) = self.pending_long_name.take() {
                p
            } else {
                let name = cstr(&block[0..100]);
                let is_ustar = &block[257..262] == b"ustar";
                let prefix = if is_ustar && &block[257..263] == b"ustar\0" {
                    cstr(&block[345..500])
                } else {
                    &[][..]
                };
                let mut p = Vec::with_capacity(prefix.len() + 1 + name.len());
                if !prefix.is_empty() {
                    p.extend_from_slice(prefix);
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                p
            };
            self.pending_long_name = None;
            if let Some(s) = self.pending_pax_size.take() {
                size = s;
            }
            let kind = EntryKind::from_flag(flag);
            // Links, directories and devices carry no data even if a size is written.
            if matches!(
                kind,
                EntryKind::Directory
                    | EntryKind::HardLink
                    | EntryKind::Symlink
                    | EntryKind::Device
                    | EntryKind::Fifo
            ) {
                size = 0;
            }
            let header = EntryHeader {
                path,
                size_bytes: size,
                kind,
                header_offset_bytes: offset,
            };
            self.entries_seen += 1;
            sink.begin_entry(&header)?;
        } else {
            self.meta_buf.clear();
        }
        let padding =
            (BLOCK_SIZE_BYTES as u64 - size % BLOCK_SIZE_BYTES as u64) % BLOCK_SIZE_BYTES as u64;
        if size == 0 {
            self.state = State::Header;
            self.on_entry_done(meta, sink)?;
        } else {
            self.state = State::Data {
                remaining: size,
                padding,
                meta,
            };
        }
        Ok(())
    }
}

fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let s = cstr(field);
    let s: &[u8] = {
        let start = s.iter().position(|&b| b != b' ')?;
        let end = s.iter().rposition(|&b| b != b' ')? + 1;
        &s[start..end]
    };
    if s.is_empty() || s.len() > 22 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        // GNU base-256: big-endian, high bit of the first byte set.
        if field[0] != 0x80 || field[1..4].iter().any(|&b| b != 0) {
            return None;
        }
        let mut v: u64 = 0;
        for &b in &field[4..] {
            v = (v << 8) | b as u64;
        }
        Some(v)
    } else {
        parse_octal(field)
    }
}

/// Writes tar headers (ustar, GNU long names for long paths). Used by the snapshot generator
/// and tests; the caller writes the data and [`padding_len`] zero bytes after it.
pub fn write_header(out: &mut Vec<u8>, path: &str, size_bytes: u64, kind: EntryKind) {
    if path.len() > 100 {
        let mut name = path.as_bytes().to_vec();
        name.push(0);
        push_block(out, "././@LongLink", name.len() as u64, b'L');
        out.extend_from_slice(&name);
        out.resize(out.len() + padding_len(name.len() as u64) as usize, 0);
    }
    let flag = match kind {
        EntryKind::File => b'0',
        EntryKind::Directory => b'5',
        EntryKind::HardLink => b'1',
        EntryKind::Symlink => b'2',
        EntryKind::Device => b'3',
        EntryKind::Fifo => b'6',
        EntryKind::Other(f) => f,
    };
    let short = if path.len() > 100 { &path[..100] } else { path };
    push_block(out, short, size_bytes, flag);
}

/// Zero bytes that follow `size_bytes` of entry data to reach a block boundary.
pub fn padding_len(size_bytes: u64) -> u64 {
    (BLOCK_SIZE_BYTES as u64 - size_bytes % BLOCK_SIZE_BYTES as u64) % BLOCK_SIZE_BYTES as u64
}

/// The end-of-archive marker: two zero blocks.
pub const END_OF_ARCHIVE: [u8; 2 * BLOCK_SIZE_BYTES] = [0u8; 2 * BLOCK_SIZE_BYTES];

fn push_block(out: &mut Vec<u8>, name: &str, size: u64, flag: u8) {
    let mut b = [0u8; BLOCK_SIZE_BYTES];
    let n = name.as_bytes();
    b[..n.len().min(100)].copy_from_slice(&n[..n.len().min(100)]);
    let mode: &[u8] = if flag == b'5' {
        b"0000755\0"
    } else {
        b"0000644\0"
    };
    b[100..108].copy_from_slice(mode);
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    if size < 8u64.pow(11) {
        let s = format!("{size:011o}\0");
        b[124..136].copy_from_slice(s.as_bytes());
    } else {
        b[124] = 0x80;
        b[128..136].copy_from_slice(&size.to_be_bytes());
    }
    b[136..148].copy_from_slice(b"00000000000\0");
    b[156] = flag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].copy_from_slice(b"        ");
    let sum: u64 = b.iter().map(|&x| x as u64).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
    out.extend_from_slice(&b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        entries: Vec<(EntryHeader, Vec<u8>)>,
        ended: usize,
    }
    impl TarSink for Collect {
        type Error = TarError;
        fn begin_entry(&mut self, h: &EntryHeader) -> Result<(), TarError> {
            self.entries.push((h.clone(), Vec::new()));
            Ok(())
        }
        fn entry_data(&mut self, d: &[u8]) -> Result<(), TarError> {
            self.entries.last_mut().unwrap().1.extend_from_slice(d);
            Ok(())
        }
        fn end_entry(&mut self) -> Result<(), TarError> {
            self.ended += 1;
            Ok(())
        }
    }

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (p, d) in files {
            write_header(&mut out, p, d.len() as u64, EntryKind::File);
            out.extend_from_slice(d);
            out.resize(out.len() + padding_len(d.len() as u64) as usize, 0);
        }
        out.extend_from_slice(&END_OF_ARCHIVE);
        out
    }

    #[test]
    fn round_trip_any_split() {
        let long = format!("accounts/{}", "x".repeat(150));
        let data = vec![7u8; 1000];
        let a = archive(&[("version", b"1.2.0"), (&long, &data), ("empty", b"")]);
        for step in [1usize, 7, 511, 512, 513, 4096] {
            let mut p = TarParser::new();
            let mut c = Collect::default();
            for chunk in a.chunks(step) {
                p.push(chunk, &mut c).unwrap();
            }
            p.finish().unwrap();
            assert_eq!(c.entries.len(), 3);
            assert_eq!(c.ended, 3);
            assert_eq!(c.entries[0].0.path, b"version");
            assert_eq!(c.entries[0].1, b"1.2.0");
            assert_eq!(c.entries[1].0.path, long.as_bytes());
            assert_eq!(c.entries[1].1, data);
            assert_eq!(c.entries[2].1, b"");
        }
    }

    #[test]
    fn truncation_is_incomplete() {
        let a = archive(&[("version", b"1.2.0")]);
        for cut in [0usize, 100, 512, 600, 1024, 1500] {
            let mut p = TarParser::new();
            let mut c = Collect::default();
            p.push(&a[..cut], &mut c).unwrap();
            let e = p.finish().unwrap_err();
            assert!(matches!(e, TarError::Incomplete { .. }), "{e}");
            assert!(e.to_string().contains("incomplete archive"));
        }
    }

    #[test]
    fn bad_checksum_rejected() {
        let mut a = archive(&[("version", b"1.2.0")]);
        a[0] ^= 1;
        let mut p = TarParser::new();
        let e = p.push(&a, &mut Collect::default()).unwrap_err();
        assert!(matches!(e, TarError::BadChecksum { offset: 0, .. }));
    }

    #[test]
    fn pax_path_applies() {
        let mut out = Vec::new();
        let rec = b"31 path=snapshots/status_cache\n";
        push_block(&mut out, "PaxHeader", rec.len() as u64, b'x');
        out.extend_from_slice(rec);
        out.resize(out.len() + padding_len(rec.len() as u64) as usize, 0);
        write_header(&mut out, "short", 2, EntryKind::File);
        out.extend_from_slice(b"hi");
        out.resize(out.len() + padding_len(2) as usize, 0);
        out.extend_from_slice(&END_OF_ARCHIVE);
        let mut p = TarParser::new();
        let mut c = Collect::default();
        p.push(&out, &mut c).unwrap();
        p.finish().unwrap();
        assert_eq!(c.entries[0].0.path, b"snapshots/status_cache");
    }

    #[test]
    fn base256_size() {
        let mut out = Vec::new();
        write_header(&mut out, "big", 1 << 40, EntryKind::File);
        let mut p = TarParser::new();
        let mut c = Collect::default();
        p.push(&out, &mut c).unwrap();
        assert_eq!(c.entries[0].0.size_bytes, 1 << 40);
    }
}

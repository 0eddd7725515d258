//! era1 archives: e2store records holding snappy-framed headers, bodies and receipts,
//! the total difficulty of each block, an accumulator root and a block index.
//!
//! Layout: `Version | (Header | Body | Receipts | TotalDifficulty)* | Accumulator | BlockIndex`.
//! Each record is `type: u16 LE | length: u32 LE | reserved: u16 (0) | data`.

use std::io::Read;

use alloy_primitives::{B256, U256};

use crate::rlp::RlpError;
use crate::types::{decode_receipts, BlockBody, Header, Receipt};

pub const TYPE_VERSION: u16 = 0x3265;
pub const TYPE_COMPRESSED_HEADER: u16 = 0x03;
pub const TYPE_COMPRESSED_BODY: u16 = 0x04;
pub const TYPE_COMPRESSED_RECEIPTS: u16 = 0x05;
pub const TYPE_TOTAL_DIFFICULTY: u16 = 0x06;
pub const TYPE_ACCUMULATOR: u16 = 0x07;
pub const TYPE_BLOCK_INDEX: u16 = 0x3266;

/// Blocks in one era1 file at most.
pub const MAX_BLOCKS_PER_FILE: u64 = 8192;
/// Largest decompressed header / body / receipts record accepted.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;
/// Largest compressed record accepted.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;
const RECORD_HEADER_BYTES: usize = 8;

/// What went wrong, with the record (index in the file) and its byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {record} at offset {offset}: {kind}")]
pub struct Era1Error {
    pub record: usize,
    pub offset: usize,
    pub kind: Era1ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Era1ErrorKind {
    #[error("truncated: record header needs {needed} bytes, {available} left")]
    TruncatedHeader { needed: usize, available: usize },
    #[error("truncated: record announces {len} bytes, {available} left")]
    TruncatedData { len: usize, available: usize },
    #[error("record of {len} bytes above the limit of {limit}")]
    RecordTooLarge { len: usize, limit: usize },
    #[error("reserved bytes are {0:#06x}, expected 0")]
    Reserved(u16),
    #[error("expected record type {expected:#06x}, found {found:#06x}")]
    UnexpectedType { expected: u16, found: u16 },
    #[error("file does not start with a version record")]
    NoVersion,
    #[error("bad snappy frame: {0}")]
    Snappy(String),
    #[error("decompressed data exceeds {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("bad RLP in {what}: {source}")]
    Rlp {
        what: &'static str,
        source: RlpError,
    },
    #[error("total difficulty record has {0} bytes, expected 32")]
    TotalDifficultyLength(usize),
    #[error("bad block index: {0}")]
    BlockIndex(&'static str),
    #[error(
        "block index points at offset {target} which is not the header record of block {number}"
    )]
    IndexMismatch { number: u64, target: i64 },
    #[error("header number {found}, expected {expected}")]
    HeaderNumber { expected: u64, found: u64 },
}

/// One e2store record.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub index: usize,
    pub offset: usize,
    pub type_: u16,
    pub data: &'a [u8],
}

/// Iterate over the records of an e2store buffer.
pub struct Records<'a> {
    buf: &'a [u8],
    pos: usize,
    index: usize,
    failed: bool,
}

impl<'a> Records<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Records {
            buf,
            pos: 0,
            index: 0,
            failed: false,
        }
    }
}

/// Read the record at `offset`.
pub fn read_record(buf: &[u8], offset: usize, index: usize) -> Result<Record<'_>, Era1Error> {
    let err = |kind| Era1Error {
        record: index,
        offset,
        kind,
    };
    let rest = buf.get(offset..).unwrap_or(&[]);
    if rest.len() < RECORD_HEADER_BYTES {
        return Err(err(Era1ErrorKind::TruncatedHeader {
            needed: RECORD_HEADER_BYTES,
            available: rest.len(),
        }));
    }
    let type_ = u16::from_le_bytes([rest[0], rest[1]]);
    let len = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
    let reserved = u16::from_le_bytes([rest[6], rest[7]]);
    if reserved != 0 {
        return Err(err(Era1ErrorKind::Reserved(reserved)));
    }
    if len > MAX_RECORD_BYTES {
        return Err(err(Era1ErrorKind::RecordTooLarge {
            len,
            limit: MAX_RECORD_BYTES,
        }));
    }
    let available = rest.len() - RECORD_HEADER_BYTES;
    if available < len {
        return Err(err(Era1ErrorKind::TruncatedData { len, available }));
    }
    Ok(Record {
        index,
        offset,
        type_,
        data: &rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len],
    })
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, Era1Error>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        match read_record(self.buf, self.pos, self.index) {
            Ok(r) => {
                self.pos += RECORD_HEADER_BYTES + r.data.len();
                self.index += 1;
                Some(Ok(r))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Decompress a snappy framed stream, refusing more than `limit` bytes of output.
pub fn snappy_frame_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, Era1ErrorKind> {
    let mut out = Vec::new();
    let mut dec = snap::read::FrameDecoder::new(data).take(limit as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| Era1ErrorKind::Snappy(e.to_string()))?;
    if out.len() > limit {
        return Err(Era1ErrorKind::DecompressedTooLarge { limit });
    }
    Ok(out)
}

/// Compress as a snappy framed stream (for writing era1 files and tests).
pub fn snappy_frame_compress(data: &[u8]) -> Vec<u8> {
    let mut enc = snap::write::FrameEncoder::new(Vec::new());
    std::io::Write::write_all(&mut enc, data).expect("writing to a Vec cannot fail");
    enc.into_inner().expect("flushing to a Vec cannot fail")
}

/// One block of an era1 file.
#[derive(Debug, Clone)]
pub struct Era1Block {
    pub header: Header,
    /// keccak of the decompressed header RLP.
    pub hash: B256,
    pub body: BlockBody,
    pub receipts: Vec<Receipt>,
    pub total_difficulty: U256,
}

/// The block index record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockIndex {
    pub start_block: u64,
    /// Absolute offsets of each block's header record.
    pub header_offsets: Vec<usize>,
}

/// A parsed era1 file (records are decoded lazily by [`Era1::blocks`]).
pub struct Era1<'a> {
    buf: &'a [u8],
    pub index: BlockIndex,
    pub accumulator: Option<B256>,
}

impl<'a> Era1<'a> {
    /// Check the version record and read the block index (the last record).
    pub fn open(buf: &'a [u8]) -> Result<Era1<'a>, Era1Error> {
        let first = read_record(buf, 0, 0)?;
        if first.type_ != TYPE_VERSION {
            return Err(Era1Error {
                record: 0,
                offset: 0,
                kind: Era1ErrorKind::NoVersion,
            });
        }
        // The index is the last record: its size is known from its trailing count.
        if buf.len() < RECORD_HEADER_BYTES + 16 {
            return Err(Era1Error {
                record: 1,
                offset: buf.len(),
                kind: Era1ErrorKind::TruncatedHeader {
                    needed: RECORD_HEADER_BYTES + 16,
                    available: buf.len(),
                },
            });
        }
        let count = u64::from_le_bytes(buf[buf.len() - 8..].try_into().expect("8 bytes"));
        let idx_err = |offset, what| Era1Error {
            record: usize::MAX,
            offset,
            kind: Era1ErrorKind::BlockIndex(what),
        };
        if count == 0 || count > MAX_BLOCKS_PER_FILE {
            return Err(idx_err(buf.len() - 8, "block count is 0 or above 8192"));
        }
        let data_len = 16 + 8 * count as usize;
        let idx_offset = buf
            .len()
            .checked_sub(RECORD_HEADER_BYTES + data_len)
            .ok_or_else(|| idx_err(0, "file shorter than its block index"))?;
        let rec = read_record(buf, idx_offset, usize::MAX)?;
        if rec.type_ != TYPE_BLOCK_INDEX {
            return Err(Era1Error {
                record: usize::MAX,
                offset: idx_offset,
                kind: Era1ErrorKind::UnexpectedType {
                    expected: TYPE_BLOCK_INDEX,
                    found: rec.type_,
                },
            });
        }
        if rec.data.len() != data_len {
            return Err(idx_err(
                idx_offset,
                "index record length disagrees with its count",
            ));
        }
        let start_block = u64::from_le_bytes(rec.data[..8].try_into().expect("8 bytes"));
        let mut header_offsets = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let rel =
                i64::from_le_bytes(rec.data[8 + 8 * i..16 + 8 * i].try_into().expect("8 bytes"));
            let abs = (idx_offset as i64)
                .checked_add(rel)
                .filter(|a| *a >= 0 && (*a as usize) < idx_offset);
            let Some(abs) = abs else {
                return Err(Era1Error {
                    record: usize::MAX,
                    offset: idx_offset,
                    kind: Era1ErrorKind::IndexMismatch {
                        number: start_block.saturating_add(i as u64),
                        target: rel,
                    },
                });
            };
            header_offsets.push(abs as usize);
        }
        // The accumulator record sits right before the index.
        let mut accumulator = None;
        if idx_offset >= RECORD_HEADER_BYTES + 32 {
            if let Ok(r) = read_record(buf, idx_offset - RECORD_HEADER_BYTES - 32, usize::MAX) {
                if r.type_ == TYPE_ACCUMULATOR && r.data.len() == 32 {
                    accumulator = Some(B256::from_slice(r.data));
                }
            }
        }
        Ok(Era1 {
            buf,
            index: BlockIndex {
                start_block,
                header_offsets,
            },
            accumulator,
        })
    }

    pub fn block_count(&self) -> usize {
        self.index.header_offsets.len()
    }

    /// Decode the block tuples in order. Each yields a block or an error naming the
    /// record and offset; iteration stops after the first error.
    pub fn blocks(&self) -> Era1Blocks<'_, 'a> {
        Era1Blocks {
            era: self,
            next: 0,
            pos: RECORD_HEADER_BYTES,
            record: 1,
            failed: false,
        }
    }
}

pub struct Era1Blocks<'e, 'a> {
    era: &'e Era1<'a>,
    next: usize,
    pos: usize,
    record: usize,
    failed: bool,
}

impl Era1Blocks<'_, '_> {
    fn take(&mut self, expected: u16) -> Result<Record<'_>, Era1Error> {
        let r = read_record(self.era.buf, self.pos, self.record)?;
        if r.type_ != expected {
            return Err(Era1Error {
                record: self.record,
                offset: self.pos,
                kind: Era1ErrorKind::UnexpectedType {
                    expected,
                    found: r.type_,
                },
            });
        }
        self.pos += RECORD_HEADER_BYTES + r.data.len();
        self.record += 1;
        Ok(r)
    }

    fn decode_next(&mut self) -> Result<Era1Block, Era1Error> {
        let number = self.era.index.start_block + self.next as u64;
        let expected_offset = self.era.index.header_offsets[self.next];
        if expected_offset != self.pos {
            return Err(Era1Error {
                record: self.record,
                offset: self.pos,
                kind: Era1ErrorKind::IndexMismatch {
                    number,
                    target: expected_offset as i64,
                },
            });
        }
        let decompress = |r: &Record<'_>| {
            snappy_frame_decompress(r.data, MAX_DECOMPRESSED_BYTES).map_err(|kind| Era1Error {
                record: r.index,
                offset: r.offset,
                kind,
            })
        };
        let rlp_err = |r: &Record<'_>, what, source| Era1Error {
            record: r.index,
            offset: r.offset,
            kind: Era1ErrorKind::Rlp { what, source },
        };
        let h = self.take(TYPE_COMPRESSED_HEADER)?;
        let header_rlp = decompress(&h)?;
        let header = Header::decode(&header_rlp).map_err(|e| rlp_err(&h, "header", e))?;
        if header.number != number {
            return Err(Era1Error {
                record: h.index,
                offset: h.offset,
                kind: Era1ErrorKind::HeaderNumber {
                    expected: number,
                    found: header.number,
                },
            });
        }
        let hash = alloy_primitives::keccak256(&header_rlp);
        let b = self.take(TYPE_COMPRESSED_BODY)?;
        let body = BlockBody::decode(&decompress(&b)?).map_err(|e| rlp_err(&b, "body", e))?;
        let r = self.take(TYPE_COMPRESSED_RECEIPTS)?;
        let receipts = decode_receipts(&decompress(&r)?).map_err(|e| rlp_err(&r, "receipts", e))?;
        let td = self.take(TYPE_TOTAL_DIFFICULTY)?;
        if td.data.len() != 32 {
            return Err(Era1Error {
                record: td.index,
                offset: td.offset,
                kind: Era1ErrorKind::TotalDifficultyLength(td.data.len()),
            });
        }
        let total_difficulty = U256::from_le_slice(td.data);
        Ok(Era1Block {
            header,
            hash,
            body,
            receipts,
            total_difficulty,
        })
    }
}

impl Iterator for Era1Blocks<'_, '_> {
    type Item = Result<Era1Block, Era1Error>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next >= self.era.index.header_offsets.len() {
            return None;
        }
        let r = self.decode_next();
        match r {
            Ok(b) => {
                self.next += 1;
                Some(Ok(b))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Write an e2store record (for building test files and exports).
pub fn write_record(type_: u16, data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&type_.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(data);
}

/// The era1 accumulator root: the SSZ `hash_tree_root` of
/// `List[HeaderRecord(block_hash: Bytes32, total_difficulty: Uint256), 8192]`.
/// Returns `None` for more than 8192 records.
pub fn accumulator_root(records: &[(B256, U256)]) -> Option<B256> {
    use sha2::{Digest, Sha256};
    const DEPTH: usize = 13; // 2^13 = 8192
    if records.len() > 1 << DEPTH {
        return None;
    }
    let sha = |a: &[u8], b: &[u8]| -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(a);
        h.update(b);
        h.finalize().into()
    };
    let mut layer: Vec<[u8; 32]> = records
        .iter()
        .map(|(hash, td)| sha(hash.as_slice(), &td.to_le_bytes::<32>()))
        .collect();
    let mut zero = [0u8; 32];
    for _ in 0..DEPTH {
        if layer.len() % 2 == 1 {
            layer.push(zero);
        }
        layer = layer.chunks(2).map(|c| sha(&c[0], &c[1])).collect();
        zero = sha(&zero, &zero);
    }
    let root = layer.first().copied().unwrap_or(zero);
    let mut len = [0u8; 32];
    len[..8].copy_from_slice(&(records.len() as u64).to_le_bytes());
    Some(B256::from(sha(&root, &len)))
}

/// Write an era1 file from consecutive blocks (header, body, receipts, total difficulty):
/// version, block tuples, accumulator, block index. At most 8192 blocks.
pub fn write_era1(blocks: &[(Header, BlockBody, Vec<Receipt>, U256)]) -> Option<Vec<u8>> {
    if blocks.is_empty() || blocks.len() as u64 > MAX_BLOCKS_PER_FILE {
        return None;
    }
    let mut out = Vec::new();
    write_record(TYPE_VERSION, &[], &mut out);
    let mut offsets = Vec::with_capacity(blocks.len());
    let mut records = Vec::with_capacity(blocks.len());
    for (h, body, receipts, td) in blocks {
        offsets.push(out.len());
        let header_rlp = h.encode();
        records.push((alloy_primitives::keccak256(&header_rlp), *td));
        write_record(
            TYPE_COMPRESSED_HEADER,
            &snappy_frame_compress(&header_rlp),
            &mut out,
        );
        write_record(
            TYPE_COMPRESSED_BODY,
            &snappy_frame_compress(&body.encode()),
            &mut out,
        );
        write_record(
            TYPE_COMPRESSED_RECEIPTS,
            &snappy_frame_compress(&crate::types::encode_receipts(receipts)),
            &mut out,
        );
        write_record(TYPE_TOTAL_DIFFICULTY, &td.to_le_bytes::<32>(), &mut out);
    }
    write_record(
        TYPE_ACCUMULATOR,
        accumulator_root(&records)?.as_slice(),
        &mut out,
    );
    let idx_offset = out.len() as i64;
    let mut idx = Vec::with_capacity(16 + 8 * offsets.len());
    idx.extend_from_slice(&blocks[0].0.number.to_le_bytes());
    for o in &offsets {
        idx.extend_from_slice(&(*o as i64 - idx_offset).to_le_bytes());
    }
    idx.extend_from_slice(&(offsets.len() as u64).to_le_bytes());
    write_record(TYPE_BLOCK_INDEX, &idx, &mut out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snappy_limits_and_bad_frames() {
        let big = vec![0u8; 1 << 20];
        let c = snappy_frame_compress(&big);
        assert!(c.len() < 1 << 16, "zeros compress well");
        assert_eq!(snappy_frame_decompress(&c, 1 << 20).unwrap(), big);
        assert_eq!(
            snappy_frame_decompress(&c, 1000),
            Err(Era1ErrorKind::DecompressedTooLarge { limit: 1000 })
        );
        let mut bad = c.clone();
        bad[0] ^= 0xff; // stream identifier chunk
        assert!(matches!(
            snappy_frame_decompress(&bad, 1 << 20),
            Err(Era1ErrorKind::Snappy(_))
        ));
        assert!(matches!(
            snappy_frame_decompress(&c[..c.len() - 3], 1 << 20),
            Err(Era1ErrorKind::Snappy(_))
        ));
    }

    #[test]
    fn record_errors_name_record_and_offset() {
        let mut buf = Vec::new();
        write_record(TYPE_VERSION, &[], &mut buf);
        write_record(TYPE_COMPRESSED_HEADER, &[1, 2, 3], &mut buf);
        let recs: Vec<_> = Records::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            (recs[1].index, recs[1].offset, recs[1].data),
            (1, 8, &[1u8, 2, 3][..])
        );
        // Truncated data.
        let e = Records::new(&buf[..buf.len() - 1])
            .last()
            .unwrap()
            .unwrap_err();
        assert_eq!((e.record, e.offset), (1, 8));
        assert_eq!(
            e.kind,
            Era1ErrorKind::TruncatedData {
                len: 3,
                available: 2
            }
        );
        // Non-zero reserved bytes.
        let mut r = buf.clone();
        r[8 + 6] = 1;
        let e = Records::new(&r).last().unwrap().unwrap_err();
        assert_eq!(e.kind, Era1ErrorKind::Reserved(1));
        // Truncated header.
        let e = Records::new(&buf[..12]).last().unwrap().unwrap_err();
        assert_eq!(
            e.kind,
            Era1ErrorKind::TruncatedHeader {
                needed: 8,
                available: 4
            }
        );
        assert_eq!(
            e.to_string(),
            "record 1 at offset 8: truncated: record header needs 8 bytes, 4 left"
        );
    }
}

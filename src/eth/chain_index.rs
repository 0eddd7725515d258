//! The by-hash index of a data directory's chain, kept beside its stores in
//! `chain-index.bin` so that `eth serve --datadir` starts without reading every header
//! again (21 M on mainnet) and holds none of it in its heap: the file is mapped.
//!
//! Layout (little-endian): a 128-byte head (magic, entry count, the head's number and
//! hash, the genesis hash, the summed difficulty, the head's time, a CRC32C of the head's
//! first 112 bytes and every entry), then the entries, `(first 8 bytes of the block's hash
//! as a big-endian u64, number)`, 16 bytes each, sorted.
//!
//! The file is only a shortcut: it is used when its checksum holds and the stores'
//! header at its head number has its head hash (the headers are hash-linked, so the
//! blocks below are the same too); else the headers are scanned again and the file is
//! written anew. A lookup reads the candidates' headers and compares their whole hash,
//! so even an index that passed these checks wrongly could not serve another block.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use alloy_primitives::B256;

pub const FILE: &str = "chain-index.bin";
const MAGIC: &[u8; 8] = b"CUCHIDX1";
const HEAD: usize = 128;
const ENTRY: usize = 16;

/// What an index was built from: blocks 1..=`head_number` of the chain from `genesis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub head_number: u64,
    pub head_hash: B256,
    pub genesis: B256,
    /// The difficulty of blocks 1..=head summed.
    pub difficulty: u128,
    pub head_time: u64,
}

/// `(hash prefix, number)` entries, sorted: built in memory by a scan, or mapped from
/// the file.
#[derive(Debug)]
pub enum HashIndex {
    Owned(Vec<(u64, u64)>),
    Mapped(memmap2::Mmap),
}

impl HashIndex {
    pub fn len(&self) -> usize {
        match self {
            HashIndex::Owned(v) => v.len(),
            HashIndex::Mapped(m) => (m.len() - HEAD) / ENTRY,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the entries, in the heap or mapped.
    pub fn bytes(&self) -> usize {
        match self {
            HashIndex::Owned(v) => v.capacity() * ENTRY,
            HashIndex::Mapped(m) => m.len() - HEAD,
        }
    }

    /// Whether the entries are mapped from the file (not in the heap).
    pub fn mapped(&self) -> bool {
        matches!(self, HashIndex::Mapped(_))
    }

    fn at(&self, i: usize) -> (u64, u64) {
        match self {
            HashIndex::Owned(v) => v[i],
            HashIndex::Mapped(m) => {
                let e = &m[HEAD + i * ENTRY..HEAD + (i + 1) * ENTRY];
                (
                    u64::from_le_bytes(e[..8].try_into().expect("8 bytes")),
                    u64::from_le_bytes(e[8..].try_into().expect("8 bytes")),
                )
            }
        }
    }

    /// The numbers of the blocks whose hash prefix is `prefix` (usually one).
    pub fn numbers_of(&self, prefix: u64) -> Vec<u64> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.at(mid).0 < prefix {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo..self.len())
            .map(|i| self.at(i))
            .take_while(|e| e.0 == prefix)
            .map(|e| e.1)
            .collect()
    }

    /// Every entry, in a vector (to add blocks to).
    pub fn into_vec(self) -> Vec<(u64, u64)> {
        match self {
            HashIndex::Owned(v) => v,
            m => (0..m.len()).map(|i| m.at(i)).collect(),
        }
    }
}

pub fn path(datadir: &Path) -> PathBuf {
    datadir.join(FILE)
}

fn head_bytes(fp: &Fingerprint, count: u64) -> [u8; HEAD] {
    let mut h = [0u8; HEAD];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&count.to_le_bytes());
    h[16..24].copy_from_slice(&fp.head_number.to_le_bytes());
    h[24..56].copy_from_slice(fp.head_hash.as_slice());
    h[56..88].copy_from_slice(fp.genesis.as_slice());
    h[88..104].copy_from_slice(&fp.difficulty.to_le_bytes());
    h[104..112].copy_from_slice(&fp.head_time.to_le_bytes());
    h
}

/// Write the index of blocks 1..=`fp.head_number` (`entries` sorted, one per block)
/// into `datadir`, through a temporary file renamed over the old one, and map it. The
/// entries are streamed (no second copy of them in memory); the head, with the checksum,
/// is written last.
pub fn write(
    datadir: &Path,
    fp: &Fingerprint,
    entries: &[(u64, u64)],
) -> std::io::Result<HashIndex> {
    use std::os::unix::fs::FileExt;
    let tmp = datadir.join(format!("{FILE}.tmp"));
    let mut head = head_bytes(fp, entries.len() as u64);
    let mut crc = crc32c::crc32c(&head[..112]);
    // Read too: the file is mapped once written.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &f);
    w.write_all(&[0u8; HEAD])?;
    let mut chunk = Vec::with_capacity(64 << 10);
    for part in entries.chunks(4096) {
        chunk.clear();
        for (p, n) in part {
            chunk.extend_from_slice(&p.to_le_bytes());
            chunk.extend_from_slice(&n.to_le_bytes());
        }
        crc = crc32c::crc32c_append(crc, &chunk);
        w.write_all(&chunk)?;
    }
    w.flush()?;
    drop(w);
    head[112..116].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&head, 0)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path(datadir))?;
    std::fs::File::open(datadir)?.sync_all()?;
    map(&f)
}

/// Map an index file whose head and checksum were checked (or just written).
fn map(f: &std::fs::File) -> std::io::Result<HashIndex> {
    // SAFETY: the file is ours, under the data directory's lock; it is only ever
    // replaced by a rename, never written in place, so the mapping does not change.
    let m = unsafe { memmap2::Mmap::map(f) }?;
    if m.len() < HEAD {
        return Err(std::io::Error::other("shorter than its head"));
    }
    Ok(HashIndex::Mapped(m))
}

/// The index in `datadir`: `Ok(None)` when there is none, `Err(why)` when it cannot be
/// used (damaged, cut short, another format). The checksum is checked by reading the
/// file, then it is mapped.
pub fn load(datadir: &Path) -> Result<Option<(Fingerprint, HashIndex)>, String> {
    let p = path(datadir);
    let mut f = match std::fs::File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    let bad = |why: &str| format!("{}: {why}", p.display());
    let mut head = [0u8; HEAD];
    f.read_exact(&mut head)
        .map_err(|_| bad("shorter than its head"))?;
    if &head[..8] != MAGIC {
        return Err(bad("not a chain index of this version"));
    }
    let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
    let count = u64_at(8);
    let fp = Fingerprint {
        head_number: u64_at(16),
        head_hash: B256::from_slice(&head[24..56]),
        genesis: B256::from_slice(&head[56..88]),
        difficulty: u128::from_le_bytes(head[88..104].try_into().expect("16 bytes")),
        head_time: u64_at(104),
    };
    let want_len = count
        .checked_mul(ENTRY as u64)
        .and_then(|b| b.checked_add(HEAD as u64));
    let len = f.metadata().map_err(|e| bad(&e.to_string()))?.len();
    if count != fp.head_number || want_len != Some(len) {
        return Err(bad("its length does not match its head"));
    }
    let mut crc = crc32c::crc32c(&head[..112]);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| bad(&e.to_string()))?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
    if crc != u32::from_le_bytes(head[112..116].try_into().expect("4 bytes")) {
        return Err(bad("checksum mismatch"));
    }
    let idx = map(&f).map_err(|e| bad(&e.to_string()))?;
    if (idx.len() * ENTRY + HEAD) as u64 != len {
        return Err(bad("changed while it was read"));
    }
    Ok(Some((fp, idx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u64) -> Fingerprint {
        Fingerprint {
            head_number: n,
            head_hash: B256::repeat_byte(3),
            genesis: B256::repeat_byte(4),
            difficulty: 1 << 70,
            head_time: 99,
        }
    }

    #[test]
    fn an_index_round_trips_and_a_damaged_one_is_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path()).unwrap().is_none());
        let mut entries: Vec<(u64, u64)> = (1..=1000u64)
            .map(|n| (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 8, n))
            .collect();
        // Two blocks sharing a prefix.
        entries[7].0 = entries[8].0;
        entries.sort_unstable();
        let written = write(d.path(), &fp(1000), &entries).unwrap();
        assert_eq!(written.into_vec(), entries);
        let (got, idx) = load(d.path()).unwrap().unwrap();
        assert_eq!(got, fp(1000));
        assert!(idx.mapped());
        assert_eq!((idx.len(), idx.bytes()), (1000, 16_000));
        let owned = HashIndex::Owned(entries.clone());
        for (p, n) in entries.iter().step_by(37) {
            assert!(idx.numbers_of(*p).contains(n));
            assert_eq!(idx.numbers_of(*p), owned.numbers_of(*p));
        }
        let shared = 9u64.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 8;
        assert_eq!(idx.numbers_of(shared).len(), 2);
        assert!(idx.numbers_of(u64::MAX).is_empty());
        assert_eq!(idx.into_vec(), entries);

        // One flipped bit in an entry, a cut, another head: each is refused.
        let p = path(d.path());
        let good = std::fs::read(&p).unwrap();
        let mut bad = good.clone();
        bad[HEAD + 5 * ENTRY + 3] ^= 1;
        std::fs::write(&p, &bad).unwrap();
        assert!(load(d.path()).unwrap_err().contains("checksum"));
        std::fs::write(&p, &good[..good.len() - 16]).unwrap();
        assert!(load(d.path()).unwrap_err().contains("length"));
        let mut bad = good.clone();
        bad[0] = b'X';
        std::fs::write(&p, &bad).unwrap();
        assert!(load(d.path()).unwrap_err().contains("version"));
        std::fs::write(&p, &good).unwrap();
        assert!(load(d.path()).unwrap().is_some());
    }
}

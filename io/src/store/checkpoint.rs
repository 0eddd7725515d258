//! Index checkpoint: written at a clean `Store::close` and whenever the fingerprint
//! memtable is written out as a run, it lets the next open skip scanning everything up to
//! its mark (the then-active segment and its logical length).
//!
//! Stored as a journal (`dir/index.cur`, see `crate::journal`: atomic replace, checksum,
//! fallback copy). Payload (little-endian):
//!
//! ```text
//! u32 version (3)
//! u32 active segment id, u64 active logical length          (the mark)
//! u32 n, then n × (u32 sealed segment id, u64 file length, u64 logical end)
//! u8 full (1: the entries below are every key kept whole; 0: they were too many to
//!    write, and the open scans the segments before the mark for them)
//! u64 m, then m × (u8 kind, u16 key length, key, u32 segment id, u64 offset, u32 length)
//! u32 f, then f × (u8 fingerprinted kind, u8 numbered (1: its keys are block numbers kept
//!    as the number itself, see `StoreOptions::numbered`), u64 keys of that kind kept by
//!    fingerprint)
//! u32 r, then r × (u64 run id, u64 entries), oldest run first
//! ```
//!
//! The runs hold every fingerprinted key of the records before the mark. At open the
//! checkpoint is used only if it matches the directory: every segment it names exists,
//! sealed ones with the recorded file length, the active one at least as long as the
//! recorded length, no unknown segment has an id at or below its active id, its
//! fingerprinted kinds are the store's, numbered where the store's are (a run's entries
//! of a kind mean a hash or a number by that), and every run it names opens and checks.
//! A checkpoint of version 2 did not say which kinds were numbered: it is not used, and
//! the first open scans once.
//! Otherwise the store is scanned in full. Records inside the checkpointed region are not
//! re-verified at open; every read still checks their checksums.

use std::collections::BTreeMap;

use super::{Index, Loc};

const VERSION: u32 = 3;
/// Journal name of the checkpoint inside the store directory.
pub(crate) const JOURNAL_NAME: &str = "index";
/// Largest checkpoint accepted.
pub(crate) const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;

#[derive(Debug)]
pub(crate) struct Checkpoint {
    pub active_id: u32,
    pub active_len: u64,
    /// Sealed segment id → file length in bytes.
    pub sealed: BTreeMap<u32, u64>,
    /// Sealed segment id → end of its last record.
    pub sealed_ends: BTreeMap<u32, u64>,
    /// Whether `index` holds every key kept whole.
    pub full: bool,
    pub index: Index,
    /// Fingerprinted kind → keys kept by fingerprint (the kinds and their numbering
    /// checked against the store's).
    pub fp_counts: Vec<(u8, u64)>,
    /// (run id, entries), oldest first.
    pub runs: Vec<(u64, u64)>,
}

/// What [`encode`] writes besides the whole keys.
pub(crate) struct Meta<'a> {
    pub active_id: u32,
    pub active_len: u64,
    /// (id, file length, logical end) of each sealed segment.
    pub sealed: &'a [(u32, u64, u64)],
    pub fp_counts: &'a [(u8, u64)],
    /// Which of them are numbered.
    pub kinds: &'a super::FpKinds,
    pub runs: &'a [(u64, u64)],
}

fn full_entries(index: &Index) -> u64 {
    index.iter().map(|m| m.full_entries().count() as u64).sum()
}

/// Bytes [`encode`] produces for this index with `full` entries (one pass over its keys,
/// no allocation).
pub(crate) fn encoded_len(meta: &Meta<'_>, index: &Index, full: bool) -> u64 {
    let mut n = 4 + 4 + 8 + 4 + meta.sealed.len() as u64 * 20 + 1 + 8;
    n += 4 + meta.fp_counts.len() as u64 * 10 + 4 + meta.runs.len() as u64 * 16;
    if full {
        for m in index.iter() {
            n += m
                .full_entries()
                .map(|(k, _)| k.len() as u64 + (1 + 2 + 4 + 8 + 4))
                .sum::<u64>();
        }
    }
    n
}

pub(crate) fn encode(meta: &Meta<'_>, index: &Index, full: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(meta, index, full) as usize);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&meta.active_id.to_le_bytes());
    out.extend_from_slice(&meta.active_len.to_le_bytes());
    out.extend_from_slice(&(meta.sealed.len() as u32).to_le_bytes());
    for (id, len, end) in meta.sealed {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
    }
    out.push(full as u8);
    let entries = if full { full_entries(index) } else { 0 };
    out.extend_from_slice(&entries.to_le_bytes());
    if full {
        for (kind, m) in index.iter().enumerate() {
            for (key, loc) in m.full_entries() {
                out.push(kind as u8);
                out.extend_from_slice(&(key.len() as u16).to_le_bytes());
                out.extend_from_slice(&key);
                out.extend_from_slice(&loc.seg.to_le_bytes());
                out.extend_from_slice(&loc.off.to_le_bytes());
                out.extend_from_slice(&loc.len.to_le_bytes());
            }
        }
    }
    out.extend_from_slice(&(meta.fp_counts.len() as u32).to_le_bytes());
    for (k, n) in meta.fp_counts {
        out.push(*k);
        out.push(meta.kinds.numbered[*k as usize] as u8);
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&(meta.runs.len() as u32).to_le_bytes());
    for (id, n) in meta.runs {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Decode a checkpoint; `None` if malformed (never panics, every count is bounded by the
/// bytes present). `max_key_bytes` rejects keys the store would not accept; the index is
/// built for the fingerprinted (and numbered) `kinds`.
pub(crate) fn decode(
    buf: &[u8],
    max_key_bytes: usize,
    kinds: &super::FpKinds,
) -> Option<Checkpoint> {
    let mut r = Reader { buf, pos: 0 };
    if r.u32()? != VERSION {
        return None;
    }
    let active_id = r.u32()?;
    let active_len = r.u64()?;
    let n = r.u32()? as usize;
    if n > buf.len() / 20 {
        return None;
    }
    let mut sealed = BTreeMap::new();
    let mut sealed_ends = BTreeMap::new();
    for _ in 0..n {
        let id = r.u32()?;
        let len = r.u64()?;
        let end = r.u64()?;
        if id >= active_id || end > len || sealed.insert(id, len).is_some() {
            return None;
        }
        sealed_ends.insert(id, end);
    }
    let full = match r.u8()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let m = r.u64()?;
    if !full && m != 0 {
        return None;
    }
    // Smallest entry: kind + key length + empty key + seg + off + len = 19 bytes.
    if m > (buf.len() / 19) as u64 {
        return None;
    }
    let mut index: Index = super::new_index_with(kinds);
    for _ in 0..m {
        let kind = r.u8()?;
        let klen = r.u16()? as usize;
        if klen > max_key_bytes {
            return None;
        }
        let key = r.take(klen)?;
        let loc = Loc {
            seg: r.u32()?,
            off: r.u64()?,
            len: r.u32()?,
        };
        let seg_len = if loc.seg == active_id {
            active_len
        } else {
            *sealed.get(&loc.seg)?
        };
        if loc.off.checked_add(loc.len as u64)? > seg_len {
            return None;
        }
        let km = &index[kind as usize];
        if km.fp_of(key).is_some() || km.contains_key(key) {
            // Fingerprinted keys live in the runs, never here.
            return None;
        }
        index[kind as usize].insert(key, loc);
    }
    let f = r.u32()? as usize;
    if f > 256 {
        return None;
    }
    let mut fp_counts = Vec::with_capacity(f);
    for _ in 0..f {
        let k = r.u8()?;
        let numbered = match r.u8()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let n = r.u64()?;
        if !kinds.fingerprinted[k as usize]
            || kinds.numbered[k as usize] != numbered
            || fp_counts.iter().any(|(x, _)| *x == k)
        {
            return None;
        }
        fp_counts.push((k, n));
    }
    if fp_counts.len() != kinds.fingerprinted.iter().filter(|b| **b).count() {
        return None;
    }
    let nr = r.u32()? as usize;
    if nr > buf.len() / 16 {
        return None;
    }
    let mut runs = Vec::with_capacity(nr);
    for _ in 0..nr {
        let id = r.u64()?;
        let n = r.u64()?;
        // Listed oldest first; a merged run keeps its inputs' place, so ids need not
        // increase along the list.
        if runs.iter().any(|(p, _)| *p == id) || n == 0 {
            return None;
        }
        runs.push((id, n));
    }
    if r.pos != buf.len() {
        return None;
    }
    Some(Checkpoint {
        active_id,
        active_len,
        sealed,
        sealed_ends,
        full,
        index,
        fp_counts,
        runs,
    })
}

/// Whether `ck` describes the segments found on disk (`files`: id → file length).
pub(crate) fn matches_disk(
    ck: &Checkpoint,
    files: &BTreeMap<u32, u64>,
) -> Result<(), &'static str> {
    for (id, len) in &ck.sealed {
        match files.get(id) {
            Some(l) if l == len => {}
            Some(_) => return Err("a sealed segment changed size"),
            None => return Err("a sealed segment is missing"),
        }
    }
    match files.get(&ck.active_id) {
        Some(l) if *l >= ck.active_len => {}
        Some(_) => return Err("the active segment is shorter than checkpointed"),
        None => return Err("the active segment is missing"),
    }
    if files
        .keys()
        .any(|id| *id < ck.active_id && !ck.sealed.contains_key(id))
    {
        return Err("a segment unknown to the checkpoint precedes its active segment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::FpKinds;
    use super::*;
    use proptest::prelude::*;

    fn sample() -> (Vec<(u32, u64, u64)>, Index, FpKinds) {
        let mut fp = FpKinds::default();
        fp.fingerprinted[9] = true;
        let mut index: Index = super::super::new_index_with(&fp);
        index[3].insert(
            b"abc",
            Loc {
                seg: 1,
                off: 0,
                len: 40,
            },
        );
        index[200].insert(
            &[7u8; 32],
            Loc {
                seg: 2,
                off: 100,
                len: 60,
            },
        );
        (vec![(1, 4096, 4000)], index, fp)
    }

    fn encode_sample(full: bool) -> (Vec<u8>, FpKinds) {
        let (sealed, index, fp) = sample();
        let meta = Meta {
            active_id: 2,
            active_len: 160,
            sealed: &sealed,
            fp_counts: &[(9, 12345)],
            kinds: &fp,
            runs: &[(4, 100), (9, 7)],
        };
        let bytes = encode(&meta, &index, full);
        assert_eq!(bytes.len() as u64, encoded_len(&meta, &index, full));
        (bytes, fp)
    }

    #[test]
    fn roundtrip_and_disk_match() {
        let (bytes, fp) = encode_sample(true);
        let ck = decode(&bytes, 64, &fp).unwrap();
        assert_eq!(ck.active_id, 2);
        assert_eq!(ck.active_len, 160);
        assert!(ck.full);
        assert_eq!(ck.sealed_ends[&1], 4000);
        assert_eq!(ck.index[3].get(&b"abc"[..]).unwrap().len, 40);
        assert_eq!(ck.index[200].len(), 1);
        assert_eq!(ck.fp_counts, vec![(9, 12345)]);
        assert_eq!(ck.runs, vec![(4, 100), (9, 7)]);
        let files: BTreeMap<u32, u64> = [(1, 4096), (2, 4096), (3, 10)].into();
        assert!(matches_disk(&ck, &files).is_ok());
        let files: BTreeMap<u32, u64> = [(1, 4000), (2, 4096)].into();
        assert!(matches_disk(&ck, &files).is_err());
        let files: BTreeMap<u32, u64> = [(1, 4096), (2, 100)].into();
        assert!(matches_disk(&ck, &files).is_err());
        let files: BTreeMap<u32, u64> = [(0, 5), (1, 4096), (2, 4096)].into();
        assert!(matches_disk(&ck, &files).is_err());
        // Keys over the limit, trailing bytes and other fingerprinted kinds are rejected.
        assert!(decode(&bytes, 8, &fp).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, 64, &fp).is_none());
        let mut other = fp.clone();
        other.fingerprinted[10] = true;
        assert!(decode(&bytes, 64, &other).is_none());
        assert!(decode(&bytes, 64, &FpKinds::default()).is_none());
        // A kind numbered in the store and not in the checkpoint (or the other way round):
        // its run entries would be read as the wrong key.
        let mut numbered = fp.clone();
        numbered.numbered[9] = true;
        assert!(decode(&bytes, 64, &numbered).is_none());
        let (sealed, index, _) = sample();
        let meta = Meta {
            active_id: 2,
            active_len: 160,
            sealed: &sealed,
            fp_counts: &[(9, 12345)],
            kinds: &numbered,
            runs: &[(4, 100)],
        };
        let as_numbered = encode(&meta, &index, true);
        assert!(decode(&as_numbered, 64, &numbered).is_some());
        assert!(decode(&as_numbered, 64, &fp).is_none());
        // Version 2 did not record the numbering: not used.
        let mut v2 = as_numbered.clone();
        v2[..4].copy_from_slice(&2u32.to_le_bytes());
        assert!(decode(&v2, 64, &numbered).is_none());
        // Without the whole keys.
        let (bytes, fp) = encode_sample(false);
        let ck = decode(&bytes, 64, &fp).unwrap();
        assert!(!ck.full);
        assert_eq!(ck.index[3].len(), 0);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut fp = FpKinds::default();
            fp.fingerprinted[1] = true;
            let _ = decode(&bytes, 64, &fp);
        }

        #[test]
        fn truncations_are_rejected(cut in 0usize..1000) {
            let (bytes, fp) = encode_sample(true);
            let cut = cut % bytes.len();
            prop_assert!(decode(&bytes[..cut], 64, &fp).is_none());
        }
    }
}

//! Index checkpoint: written at a clean `Store::close`, it lets the next open skip scanning
//! everything up to the checkpointed end of the then-active segment.
//!
//! Stored as a journal (`dir/index.cur`, see `crate::journal`: atomic replace, checksum,
//! fallback copy). Payload (little-endian):
//!
//! ```text
//! u32 version (1)
//! u32 active segment id, u64 active logical length
//! u32 n, then n × (u32 sealed segment id, u64 file length)
//! u64 m, then m × (u8 kind, u16 key length, key, u32 segment id, u64 offset, u32 length)
//! ```
//!
//! At open the checkpoint is used only if it matches the directory: every segment it
//! names exists, sealed ones with the recorded file length, the active one at least as long
//! as the recorded length, and no unknown segment has an id at or below its active id.
//! Otherwise the store is scanned in full. Records inside the checkpointed region are not
//! re-verified at open; every read still checks their checksums.

use std::collections::BTreeMap;

use super::{new_index, Index, Loc};

const VERSION: u32 = 1;
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
    pub index: Index,
}

/// Bytes [`encode`] produces for this index (one pass over its keys, no allocation).
pub(crate) fn encoded_len(sealed: usize, index: &Index) -> u64 {
    let mut n = 4 + 4 + 8 + 4 + sealed as u64 * 12 + 8;
    for m in index.iter() {
        n += m.len() as u64 * (1 + 2 + 4 + 8 + 4);
        n += m.full_entries().map(|(k, _)| k.len() as u64).sum::<u64>();
    }
    n
}

pub(crate) fn encode(
    active_id: u32,
    active_len: u64,
    sealed: &[(u32, u64)],
    index: &Index,
) -> Vec<u8> {
    let entries: u64 = index.iter().map(|m| m.len() as u64).sum();
    let mut out = Vec::with_capacity(32 + sealed.len() * 12 + entries as usize * 56);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&active_id.to_le_bytes());
    out.extend_from_slice(&active_len.to_le_bytes());
    out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    for (id, len) in sealed {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(&entries.to_le_bytes());
    for (kind, m) in index.iter().enumerate() {
        for (key, loc) in m.full_entries() {
            out.push(kind as u8);
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&loc.seg.to_le_bytes());
            out.extend_from_slice(&loc.off.to_le_bytes());
            out.extend_from_slice(&loc.len.to_le_bytes());
        }
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
/// bytes present). `max_key_bytes` rejects keys the store would not accept.
pub(crate) fn decode(buf: &[u8], max_key_bytes: usize) -> Option<Checkpoint> {
    let mut r = Reader { buf, pos: 0 };
    if r.u32()? != VERSION {
        return None;
    }
    let active_id = r.u32()?;
    let active_len = r.u64()?;
    let n = r.u32()? as usize;
    if n > buf.len() / 12 {
        return None;
    }
    let mut sealed = BTreeMap::new();
    for _ in 0..n {
        let id = r.u32()?;
        let len = r.u64()?;
        if id >= active_id || sealed.insert(id, len).is_some() {
            return None;
        }
    }
    let m = r.u64()?;
    // Smallest entry: kind + key length + empty key + seg + off + len = 19 bytes.
    if m > (buf.len() / 19) as u64 {
        return None;
    }
    let mut index: Index = new_index();
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
        if index[kind as usize].insert(key, loc).is_some() {
            return None;
        }
    }
    if r.pos != buf.len() {
        return None;
    }
    Some(Checkpoint {
        active_id,
        active_len,
        sealed,
        index,
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
    use super::*;
    use proptest::prelude::*;

    fn sample() -> (Vec<(u32, u64)>, Index) {
        let mut index: Index = new_index();
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
        (vec![(1, 4096)], index)
    }

    #[test]
    fn roundtrip_and_disk_match() {
        let (sealed, index) = sample();
        let bytes = encode(2, 160, &sealed, &index);
        let ck = decode(&bytes, 64).unwrap();
        assert_eq!(ck.active_id, 2);
        assert_eq!(ck.active_len, 160);
        assert_eq!(ck.index[3].get(&b"abc"[..]).unwrap().len, 40);
        assert_eq!(ck.index[200].len(), 1);
        let files: BTreeMap<u32, u64> = [(1, 4096), (2, 4096), (3, 10)].into();
        assert!(matches_disk(&ck, &files).is_ok());
        let files: BTreeMap<u32, u64> = [(1, 4000), (2, 4096)].into();
        assert!(matches_disk(&ck, &files).is_err());
        let files: BTreeMap<u32, u64> = [(1, 4096), (2, 100)].into();
        assert!(matches_disk(&ck, &files).is_err());
        let files: BTreeMap<u32, u64> = [(0, 5), (1, 4096), (2, 4096)].into();
        assert!(matches_disk(&ck, &files).is_err());
        // Keys over the limit and trailing bytes are rejected.
        assert!(decode(&bytes, 8).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, 64).is_none());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes, 64);
        }

        #[test]
        fn truncations_are_rejected(cut in 0usize..1000) {
            let (sealed, index) = sample();
            let bytes = encode(2, 160, &sealed, &index);
            let cut = cut % bytes.len();
            prop_assert!(decode(&bytes[..cut], 64).is_none());
        }
    }
}

//! Recovery of the intact records of a store that does not open (or whose scan failed)
//! because a record is damaged in the middle of a segment.
//!
//! [`salvage`] reads the segment files with plain reads (it runs once, before the store is
//! reopened), keeps every record whose header and body checksums match, and counts the
//! damaged ones. A damaged body whose header is intact is skipped by its length; after a
//! damaged header the bytes are searched for the next intact record. For each (kind, key)
//! the latest intact record wins, as in the store. [`rebuild`] then moves the damaged
//! store aside, writes the salvaged records into a fresh store in its place and removes
//! the damaged files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::record::{parse_header, parse_record, RecordDefect, RecordLimits, RECORD_HEADER_BYTES};
use super::{io_err, parse_seg_name, Store, StoreError, StoreOptions};

/// What [`salvage`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Salvaged {
    /// Intact records, the latest per (kind, key).
    pub records: BTreeMap<(u8, Vec<u8>), Vec<u8>>,
    /// Damaged records (or damaged regions between intact records) dropped.
    pub damaged: u64,
    /// Segment files read.
    pub segments: u32,
}

/// Read every segment of the store in `dir` and keep its intact records. The store must not
/// be open. Bounded by the segments' size (each byte is examined a bounded number of times
/// per candidate record start).
pub fn salvage(dir: &Path, opts: &StoreOptions) -> Result<Salvaged, StoreError> {
    let limits = RecordLimits {
        max_key_bytes: opts.max_key_bytes,
        max_value_bytes: opts.max_value_bytes,
    };
    let mut segs: Vec<(u32, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err("read_dir", dir))? {
        let e = e.map_err(io_err("read_dir", dir))?;
        if let Some(id) = e.file_name().to_str().and_then(parse_seg_name) {
            segs.push((id, e.path()));
        }
    }
    segs.sort();
    let mut out = Salvaged::default();
    for (_, path) in segs {
        let bytes = std::fs::read(&path).map_err(io_err("read", &path))?;
        out.segments += 1;
        salvage_segment(&bytes, &limits, &mut out);
    }
    Ok(out)
}

fn salvage_segment(bytes: &[u8], limits: &RecordLimits, out: &mut Salvaged) {
    let mut off = 0usize;
    while off < bytes.len() {
        match parse_record(&bytes[off..], limits) {
            Ok(h) => {
                let key = &bytes[off + RECORD_HEADER_BYTES..off + RECORD_HEADER_BYTES + h.key_len];
                let value = &bytes[off + RECORD_HEADER_BYTES + h.key_len..off + h.record_len()];
                out.records.insert((h.kind, key.to_vec()), value.to_vec());
                off += h.record_len();
            }
            Err(defect) => {
                // A damaged body's header is checked by its own checksum: its end is where
                // the next record starts. Otherwise search for the next intact record.
                let by_len = (defect == RecordDefect::BodyChecksum)
                    .then(|| parse_header(&bytes[off..], limits).ok())
                    .flatten()
                    .map(|h| off + h.record_len())
                    .filter(|&n| n < bytes.len() && parse_record(&bytes[n..], limits).is_ok());
                match by_len.or_else(|| next_record(bytes, off + 1, limits)) {
                    // Damage between intact records (zeros included).
                    Some(next) => {
                        out.damaged += 1;
                        off = next;
                    }
                    // Padding, or a torn write at the end: nothing was acknowledged there.
                    None => return,
                }
            }
        }
    }
}

/// The offset of the next intact record at or after `from`.
fn next_record(bytes: &[u8], from: usize, limits: &RecordLimits) -> Option<usize> {
    let magic = super::record::RECORD_MAGIC;
    let mut i = from;
    while i + RECORD_HEADER_BYTES <= bytes.len() {
        if bytes[i] == magic[0]
            && bytes[i + 1] == magic[1]
            && parse_record(&bytes[i..], limits).is_ok()
        {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Replace the damaged store in `dir` by a fresh one holding `salvaged`'s records: the old
/// files are moved to `dir.damaged`, the new store is written and flushed, then the old
/// files are removed. Returns the reopened store.
pub async fn rebuild(
    dir: &Path,
    opts: StoreOptions,
    salvaged: &Salvaged,
) -> Result<Store, StoreError> {
    let aside = dir.with_extension("damaged");
    if aside.exists() {
        std::fs::remove_dir_all(&aside).map_err(io_err("remove_dir_all", &aside))?;
    }
    std::fs::rename(dir, &aside).map_err(io_err("rename", dir))?;
    let mut store = Store::open(dir, opts).await?;
    for ((kind, key), value) in &salvaged.records {
        store.put(*kind, key, value).await?;
    }
    store.flush().await?;
    std::fs::remove_dir_all(&aside).map_err(io_err("remove_dir_all", &aside))?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::super::record::encode_record;
    use super::*;

    fn limits() -> RecordLimits {
        RecordLimits {
            max_key_bytes: 64,
            max_value_bytes: 4096,
        }
    }

    #[test]
    fn intact_records_survive_a_damaged_body_and_a_damaged_header() {
        let mut seg = Vec::new();
        let mut offs = Vec::new();
        for i in 0..6u32 {
            offs.push(seg.len());
            encode_record(
                1,
                &i.to_be_bytes(),
                &vec![i as u8; 100 + i as usize],
                &mut seg,
            );
        }
        // a later put of key 0 wins
        encode_record(1, &0u32.to_be_bytes(), b"new", &mut seg);
        seg.resize(seg.len() + 4096, 0);
        seg[offs[1] + RECORD_HEADER_BYTES + 10] ^= 0x40; // body of record 1
        seg[offs[3] + 5] ^= 0x01; // header of record 3
        let mut out = Salvaged::default();
        salvage_segment(&seg, &limits(), &mut out);
        assert_eq!(out.damaged, 2);
        let keys: Vec<u32> = out
            .records
            .keys()
            .map(|(_, k)| u32::from_be_bytes(k[..].try_into().unwrap()))
            .collect();
        assert_eq!(keys, vec![0, 2, 4, 5]);
        assert_eq!(out.records[&(1, 0u32.to_be_bytes().to_vec())], b"new");
        assert_eq!(
            out.records[&(1, 5u32.to_be_bytes().to_vec())],
            vec![5u8; 105]
        );
    }

    #[test]
    fn zeros_and_a_torn_tail_end_the_segment_without_damage() {
        let mut seg = Vec::new();
        encode_record(2, b"k", b"v", &mut seg);
        let mut torn = Vec::new();
        encode_record(2, b"t", &[7u8; 300], &mut torn);
        seg.extend_from_slice(&torn[..100]);
        seg.resize(8192, 0);
        let mut out = Salvaged::default();
        salvage_segment(&seg, &limits(), &mut out);
        assert_eq!(out.damaged, 0);
        assert_eq!(out.records.len(), 1);
        // Random bytes never panic.
        let junk: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut out = Salvaged::default();
        salvage_segment(&junk, &limits(), &mut out);
        assert!(out.records.is_empty());
    }

    #[test]
    fn a_store_that_does_not_open_is_rebuilt_from_its_intact_records() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let opts = StoreOptions {
            use_checkpoint: false,
            ..StoreOptions::default()
        };
        let d = dir.clone();
        let o = opts.clone();
        crate::exec::run_unbound(async move {
            let mut s = Store::open(&d, o.clone()).await.unwrap();
            for i in 0..50u32 {
                s.put(1, &i.to_be_bytes(), &[i as u8; 200]).await.unwrap();
            }
            s.flush().await.unwrap();
            drop(s); // as after a crash: no checkpoint
            let seg = d.join(super::super::seg_name(1));
            let mut bytes = std::fs::read(&seg).unwrap();
            let rec = super::super::record::encoded_len(4, 200);
            bytes[rec * 10 + RECORD_HEADER_BYTES + 50] ^= 0xff;
            std::fs::write(&seg, &bytes).unwrap();
            assert!(matches!(
                Store::open(&d, o.clone()).await,
                Err(StoreError::Corrupt { .. })
            ));
            let salvaged = salvage(&d, &o).unwrap();
            assert_eq!(salvaged.damaged, 1);
            assert_eq!(salvaged.records.len(), 49);
            let s = rebuild(&d, o.clone(), &salvaged).await.unwrap();
            assert_eq!(s.len_of_kind(1), 49);
            assert!(!s.contains(1, &10u32.to_be_bytes()));
            assert_eq!(
                s.get(1, &11u32.to_be_bytes()).await.unwrap(),
                Some(vec![11u8; 200])
            );
            s.close().await.unwrap();
            assert!(!d.with_extension("damaged").exists());
        });
    }
}

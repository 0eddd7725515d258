use super::*;
use proptest::prelude::*;

use crate::exec::run_unbound as run;

fn small_opts() -> StoreOptions {
    StoreOptions {
        segment_size_bytes: 64 * 1024,
        write_buffer_bytes: 8192,
        max_key_bytes: 64,
        max_value_bytes: 16 * 1024,
        content_addressed_kinds: vec![],
        use_checkpoint: false,
        max_checkpoint_bytes: 1 << 30,
        fingerprinted_kinds: vec![],
        numbered_kinds: vec![],
        max_index_memory_bytes: 256 << 20,
    }
}

fn value_for(i: u32, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j * 7) as u8).collect()
}

fn seg_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(seg_name(id))
}

#[test]
fn put_get_iter_across_reopen_and_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let mut s = Store::open(&dir, small_opts()).await.unwrap();
        for i in 0..300u32 {
            let v = value_for(i, 100 + (i as usize % 700));
            assert!(s.put((i % 3) as u8, &i.to_be_bytes(), &v).await.unwrap());
            // Read-your-writes before any flush.
            assert_eq!(
                s.get((i % 3) as u8, &i.to_be_bytes()).await.unwrap(),
                Some(v)
            );
        }
        s.flush().await.unwrap();
        assert!(s.stats().segments > 1, "small segment size must roll");
        assert!(s.contains(1, &1u32.to_be_bytes()));
        assert!(!s.contains(0, &1u32.to_be_bytes()));
        assert_eq!(s.get(2, b"missing").await.unwrap(), None);
        s.close().await.unwrap();

        let s = Store::open(&dir, small_opts()).await.unwrap();
        assert_eq!(s.stats().keys, 300);
        assert_eq!(s.stats().truncated_tail_bytes, 0);
        for i in 0..300u32 {
            let v = value_for(i, 100 + (i as usize % 700));
            assert_eq!(
                s.get((i % 3) as u8, &i.to_be_bytes()).await.unwrap(),
                Some(v)
            );
        }
        let mut it = s.iter_kind(1).unwrap();
        assert_eq!(it.remaining(), 100);
        let mut prev: Option<u32> = None;
        while let Some(r) = it.next().await {
            let (k, v) = r.unwrap();
            let i = u32::from_be_bytes(k.try_into().unwrap());
            assert_eq!(i % 3, 1);
            assert_eq!(v, value_for(i, 100 + (i as usize % 700)));
            assert!(prev.is_none_or(|p| p < i), "write order");
            prev = Some(i);
        }
    });
}

#[test]
fn records_spanning_buffer_and_file_are_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let mut s = Store::open(&dir, small_opts()).await.unwrap();
        // 3000-byte records against an 8 KiB buffer: many straddle the written boundary.
        for i in 0..20u32 {
            s.put(9, &i.to_le_bytes(), &value_for(i, 3000))
                .await
                .unwrap();
            if i % 7 == 0 {
                s.flush().await.unwrap();
            }
            for j in 0..=i {
                assert_eq!(
                    s.get(9, &j.to_le_bytes()).await.unwrap(),
                    Some(value_for(j, 3000)),
                    "record {j} after put {i}"
                );
            }
        }
    });
}

#[test]
fn content_addressed_kinds_are_write_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let opts = small_opts().content_addressed(5);
        let mut s = Store::open(&dir, opts.clone()).await.unwrap();
        assert!(s.put(5, b"h", b"first").await.unwrap());
        let appended = s.stats().appended_bytes;
        assert!(!s.put(5, b"h", b"second").await.unwrap());
        assert_eq!(s.stats().appended_bytes, appended, "no-op writes nothing");
        assert_eq!(s.get(5, b"h").await.unwrap().unwrap(), b"first");
        // A non-content-addressed kind: latest wins.
        s.put(6, b"h", b"one").await.unwrap();
        s.put(6, b"h", b"two").await.unwrap();
        assert_eq!(s.get(6, b"h").await.unwrap().unwrap(), b"two");
        s.close().await.unwrap();
        let mut s = Store::open(&dir, opts).await.unwrap();
        assert_eq!(s.get(5, b"h").await.unwrap().unwrap(), b"first");
        assert_eq!(s.get(6, b"h").await.unwrap().unwrap(), b"two");
        assert!(!s.put(5, b"h", b"third").await.unwrap());
    });
}

#[test]
fn torn_tail_is_cut_and_store_keeps_working() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let mut s = Store::open(&dir, small_opts()).await.unwrap();
        for i in 0..10u32 {
            s.put(1, &i.to_le_bytes(), &value_for(i, 500))
                .await
                .unwrap();
        }
        s.close().await.unwrap();
        let seg = seg_path(&dir, 1);
        let good_len = std::fs::metadata(&seg).unwrap().len();
        // Append half of a valid record: a torn write.
        let mut rec = Vec::new();
        record::encode_record(1, b"torn", &value_for(99, 900), &mut rec);
        let mut bytes = std::fs::read(&seg).unwrap();
        let logical = {
            // The file may carry zero padding after the last record.
            let s2 = Store::open(&dir, small_opts()).await.unwrap();
            let l = s2.active_len;
            drop(s2);
            l
        };
        bytes.truncate(logical as usize);
        bytes.extend_from_slice(&rec[..rec.len() / 2]);
        std::fs::write(&seg, &bytes).unwrap();
        assert!(bytes.len() as u64 > logical && good_len >= logical);

        let mut s = Store::open(&dir, small_opts()).await.unwrap();
        assert_eq!(s.stats().truncated_tail_bytes, (rec.len() / 2) as u64);
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            logical,
            "tail truncated"
        );
        assert!(!s.contains(1, b"torn"));
        for i in 0..10u32 {
            assert_eq!(
                s.get(1, &i.to_le_bytes()).await.unwrap(),
                Some(value_for(i, 500))
            );
        }
        s.put(1, b"after", b"ok").await.unwrap();
        s.close().await.unwrap();
        let s = Store::open(&dir, small_opts()).await.unwrap();
        assert_eq!(s.get(1, b"after").await.unwrap().unwrap(), b"ok");
        assert_eq!(s.stats().keys, 11);
    });
}

/// Offsets of the records in a segment file, by decoding it.
/// Put records 0..`n` (kind 1, `value_for(i, 300)`) into a new store in `dir`, close it,
/// and return its first segment's path, bytes and record offsets.
async fn one_segment_of(dir: &Path, opts: StoreOptions, n: u32) -> (PathBuf, Vec<u8>, Vec<usize>) {
    let mut s = Store::open(dir, opts).await.unwrap();
    for i in 0..n {
        s.put(1, &i.to_le_bytes(), &value_for(i, 300))
            .await
            .unwrap();
    }
    s.close().await.unwrap();
    let seg = seg_path(dir, 1);
    let bytes = std::fs::read(&seg).unwrap();
    let offs = record_offsets(&bytes);
    (seg, bytes, offs)
}

fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let lim = RecordLimits {
        max_key_bytes: 64,
        max_value_bytes: 16 * 1024,
    };
    let mut offs = Vec::new();
    let mut off = 0;
    while let Ok(h) = record::parse_record(&bytes[off..], &lim) {
        offs.push(off);
        off += h.record_len();
    }
    offs
}

#[test]
fn corrupt_record_in_the_middle_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let (seg, mut bytes, offs) = one_segment_of(&dir, small_opts(), 10).await;
        assert_eq!(offs.len(), 10);
        // Flip one value byte of record 4: the body checksum fails, valid records follow.
        bytes[offs[4] + RECORD_HEADER_BYTES + 4 + 10] ^= 0x01;
        std::fs::write(&seg, &bytes).unwrap();
        match Store::open(&dir, small_opts()).await {
            Err(StoreError::Corrupt {
                segment,
                offset,
                reason,
            }) => {
                assert_eq!(segment, seg);
                assert_eq!(offset, offs[4] as u64);
                assert_eq!(reason, RecordDefect::BodyChecksum.reason());
            }
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(_) => panic!("expected Corrupt, store opened"),
        }
        // Nothing was truncated: the acknowledged records after the damage are still there.
        assert_eq!(std::fs::read(&seg).unwrap().len(), bytes.len());

        // A damaged header (lengths unknown) is also corruption when valid records follow.
        bytes[offs[4] + RECORD_HEADER_BYTES + 4 + 10] ^= 0x01;
        bytes[offs[2] + 5] ^= 0x80;
        std::fs::write(&seg, &bytes).unwrap();
        match Store::open(&dir, small_opts()).await {
            Err(StoreError::Corrupt { offset, reason, .. }) => {
                assert_eq!(offset, offs[2] as u64);
                assert_eq!(reason, RecordDefect::HeaderChecksum.reason());
            }
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(_) => panic!("expected Corrupt, store opened"),
        }
    });
}

#[test]
fn a_write_lost_before_later_ones_is_a_torn_tail_only_near_the_end() {
    let opts = StoreOptions {
        segment_size_bytes: 1 << 20,
        write_buffer_bytes: 4096,
        max_value_bytes: 1024,
        ..small_opts()
    };
    let limits = RecordLimits {
        max_key_bytes: opts.max_key_bytes,
        max_value_bytes: opts.max_value_bytes,
    };
    let window = unacknowledged_window(&opts, &limits);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let (seg, bytes, offs) = one_segment_of(&dir, opts.clone(), 2000).await;
        assert_eq!(offs.len(), 2000);
        assert!(
            bytes.len() as u64 > 4 * window,
            "the segment reaches past the window"
        );
        // The record a block of zeros at `hole` tears: the last one starting at or before.
        let torn = |hole: usize| offs.iter().rposition(|&o| o <= hole).unwrap();
        let zeroed = |hole: usize| {
            let mut b = bytes.clone();
            b[hole..hole + 4096].fill(0);
            b
        };

        // Zeros far from the end, valid records after: acknowledged data was lost.
        let far = 8192;
        std::fs::write(&seg, zeroed(far)).unwrap();
        match Store::open(&dir, opts.clone()).await {
            Err(StoreError::Corrupt { offset, .. }) => {
                assert_eq!(offset, offs[torn(far)] as u64)
            }
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(_) => panic!("expected Corrupt, store opened"),
        }

        // A bit flip near the end is still corruption: only whole unwritten blocks are
        // taken for a lost write.
        let near = align_down(bytes.len() as u64 - window / 2) as usize;
        let mut flipped = bytes.clone();
        flipped[near + 100] ^= 0x01;
        std::fs::write(&seg, &flipped).unwrap();
        assert!(matches!(
            Store::open(&dir, opts.clone()).await,
            Err(StoreError::Corrupt { .. })
        ));

        // One block written behind lost near the end while later blocks landed (a kill
        // with writes in flight): cut there, and the records before it are kept.
        std::fs::write(&seg, zeroed(near)).unwrap();
        let cut = torn(near);
        let s = Store::open(&dir, opts.clone()).await.unwrap();
        assert_eq!(
            s.stats().truncated_tail_bytes,
            bytes.len() as u64 - offs[cut] as u64
        );
        for i in [0, cut as u32 - 1] {
            assert_eq!(
                s.get(1, &i.to_le_bytes()).await.unwrap(),
                Some(value_for(i, 300))
            );
        }
        for i in [cut as u32, 1999] {
            assert_eq!(s.get(1, &i.to_le_bytes()).await.unwrap(), None);
        }
        s.close().await.unwrap();
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), offs[cut] as u64);
    });
}

#[test]
fn corruption_in_a_sealed_segment_and_on_read_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let mut s = Store::open(&dir, small_opts()).await.unwrap();
        for i in 0..200u32 {
            s.put(1, &i.to_le_bytes(), &value_for(i, 1000))
                .await
                .unwrap();
        }
        s.flush().await.unwrap();
        assert!(s.stats().segments >= 2);
        // Damage record 0 (in sealed segment 1) while the store is open: reads verify.
        let seg1 = seg_path(&dir, 1);
        let mut bytes = std::fs::read(&seg1).unwrap();
        let offs = record_offsets(&bytes);
        let last = offs[offs.len() - 1];
        bytes[RECORD_HEADER_BYTES + 4 + 1] ^= 0xff;
        std::fs::write(&seg1, &bytes).unwrap();
        match s.get(1, &0u32.to_le_bytes()).await {
            Err(StoreError::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!(segment, seg1);
                assert_eq!(offset, 0);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        s.close().await.unwrap();
        // The last record of a sealed segment is never a "torn tail": it is corruption.
        bytes[RECORD_HEADER_BYTES + 4 + 1] ^= 0xff;
        bytes[last + RECORD_HEADER_BYTES + 8] ^= 0x01;
        std::fs::write(&seg1, &bytes).unwrap();
        match Store::open(&dir, small_opts()).await {
            Err(StoreError::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!(segment, seg1);
                assert_eq!(offset, last as u64);
            }
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(_) => panic!("expected Corrupt, store opened"),
        }
    });
}

#[test]
fn a_store_directory_opens_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let s = Store::open(&dir, small_opts()).await.unwrap();
        assert!(matches!(
            Store::open(&dir, small_opts()).await,
            Err(StoreError::InUse { .. })
        ));
        s.close().await.unwrap();
        let s = Store::open(&dir, small_opts()).await.unwrap();
        drop(s);
        Store::open(&dir, small_opts()).await.unwrap();
    });
}

#[test]
fn limits_and_options_are_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let mut s = Store::open(&dir, small_opts()).await.unwrap();
        assert!(matches!(
            s.put(1, &[0u8; 65], b"v").await,
            Err(StoreError::KeyTooLarge { .. })
        ));
        assert!(matches!(
            s.put(1, b"k", &vec![0u8; 16 * 1024 + 1]).await,
            Err(StoreError::ValueTooLarge { .. })
        ));
        let bad = StoreOptions {
            write_buffer_bytes: 1000,
            ..small_opts()
        };
        assert!(matches!(
            Store::open(tmp.path().join("x"), bad).await,
            Err(StoreError::BadOptions { .. })
        ));
        let bad = StoreOptions {
            segment_size_bytes: 100,
            ..small_opts()
        };
        assert!(matches!(
            Store::open(tmp.path().join("y"), bad).await,
            Err(StoreError::BadOptions { .. })
        ));
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Random bytes as a segment (or appended to a valid one) never panic the scanner;
    /// the valid prefix is either kept whole or the open fails with a typed error.
    #[test]
    fn open_never_panics_on_random_segment_bytes(
        garbage in proptest::collection::vec(any::<u8>(), 0..3000),
        prefix_records in 0u32..5,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut bytes = Vec::new();
        for i in 0..prefix_records {
            record::encode_record(1, &i.to_le_bytes(), &value_for(i, 50), &mut bytes);
        }
        bytes.extend_from_slice(&garbage);
        std::fs::write(seg_path(&dir, 1), &bytes).unwrap();
        let res = run(async move {
            match Store::open(&dir, small_opts()).await {
                Ok(s) => {
                    for i in 0..prefix_records {
                        assert_eq!(s.get(1, &i.to_le_bytes()).await.unwrap(), Some(value_for(i, 50)));
                    }
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        });
        if let Err(e) = res {
            prop_assert!(e.contains("corrupt store segment"), "{}", e);
        }
    }
}

#[test]
fn tmpfs_store_works_without_o_direct() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() || !file::tests_support::is_tmpfs(shm) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: /dev/shm (tmpfs) is needed for this test"
        );
        {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "skipping: /dev/shm is not a tmpfs here"
            );
        }
        return;
    }
    let tmp = tempfile::tempdir_in(shm).unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let mut s = Store::open(&dir, small_opts()).await.unwrap();
        assert!(
            !s.stats().direct_io,
            "tmpfs has no O_DIRECT path in glommio"
        );
        for i in 0..50u32 {
            s.put(2, &i.to_le_bytes(), &value_for(i, 2000))
                .await
                .unwrap();
        }
        s.close().await.unwrap();
        let s = Store::open(&dir, small_opts()).await.unwrap();
        for i in 0..50u32 {
            assert_eq!(
                s.get(2, &i.to_le_bytes()).await.unwrap(),
                Some(value_for(i, 2000))
            );
        }
        s.close().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    /// A write torn at any byte: records flushed before the torn batch all survive, the
    /// torn batch survives as a whole-record prefix ending at or before the cut, and the
    /// file is cut back to that record boundary.
    #[test]
    fn torn_at_any_byte_keeps_a_whole_record_prefix(
        first in 1u32..20,
        second in 1u32..20,
        cut_permille in 0u64..1000,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let seg = seg_path(&dir, 1);
        let opts = StoreOptions { segment_size_bytes: 1 << 20, ..small_opts() };
        let len_a = run({
            let dir = dir.clone();
            let opts = opts.clone();
            async move {
                let mut s = Store::open(&dir, opts).await.unwrap();
                for i in 0..first {
                    s.put(1, &i.to_le_bytes(), &value_for(i, 37 * i as usize % 900)).await.unwrap();
                }
                s.flush().await.unwrap();
                let a = s.active_len;
                for i in first..first + second {
                    s.put(1, &i.to_le_bytes(), &value_for(i, 37 * i as usize % 900)).await.unwrap();
                }
                s.close().await.unwrap();
                a
            }
        });
        let full = std::fs::read(&seg).unwrap();
        let offs = record_offsets(&full);
        let end_b = {
            let last = *offs.last().unwrap();
            let lim = RecordLimits { max_key_bytes: 64, max_value_bytes: 16 * 1024 };
            last + record::parse_record(&full[last..], &lim).unwrap().record_len()
        } as u64;
        let cut = len_a + (end_b - len_a) * cut_permille / 1000;
        std::fs::write(&seg, &full[..cut as usize]).unwrap();
        let (kept, truncated) = run({
            let dir = dir.clone();
            async move {
                let s = Store::open(&dir, opts).await.unwrap();
                for i in 0..first {
                    assert_eq!(
                        s.get(1, &i.to_le_bytes()).await.unwrap(),
                        Some(value_for(i, 37 * i as usize % 900))
                    );
                }
                let mut kept = 0;
                for i in first..first + second {
                    if let Some(v) = s.get(1, &i.to_le_bytes()).await.unwrap() {
                        assert_eq!(kept, i - first, "kept records form a prefix");
                        assert_eq!(v, value_for(i, 37 * i as usize % 900));
                        kept += 1;
                    }
                }
                let t = s.stats().truncated_tail_bytes;
                s.close().await.unwrap();
                (kept, t)
            }
        });
        let boundary = offs
            .iter()
            .map(|o| *o as u64)
            .chain(std::iter::once(end_b))
            .filter(|o| *o <= cut)
            .max()
            .unwrap();
        prop_assert_eq!(std::fs::metadata(&seg).unwrap().len(), boundary);
        prop_assert_eq!(truncated, cut - boundary);
        let whole_after_a = offs.iter().filter(|o| **o as u64 >= len_a).count() as u32;
        let expect_kept = offs
            .iter()
            .map(|o| *o as u64)
            .chain(std::iter::once(end_b))
            .filter(|o| *o > len_a && *o <= cut)
            .count() as u32;
        prop_assert!(whole_after_a == second);
        prop_assert_eq!(kept, expect_kept);
    }
}

fn ckpt_opts() -> StoreOptions {
    StoreOptions {
        use_checkpoint: true,
        ..small_opts()
    }
}

#[test]
fn fingerprinted_keys_are_found_read_and_ranged_like_full_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let opts = StoreOptions {
            use_checkpoint: true,
            ..small_opts().content_addressed(2).fingerprinted(2)
        };
        let key = |i: u32| -> [u8; 32] {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            k[28..].copy_from_slice(&(i * 7).to_be_bytes());
            k
        };
        let mut s = Store::open(&dir, opts.clone()).await.unwrap();
        for i in 0..200u32 {
            assert!(s.put(2, &key(i), &value_for(i, 50)).await.unwrap());
        }
        // Content-addressed: a second put of a key is a no-op.
        assert!(!s.put(2, &key(5), b"other").await.unwrap());
        // A short key of a fingerprinted kind is kept whole.
        s.put(2, b"short", b"v").await.unwrap();
        s.flush().await.unwrap();
        for reopen in [false, true] {
            if reopen {
                s.close().await.unwrap();
                s = Store::open(&dir, opts.clone()).await.unwrap();
                // The close wrote the fingerprints as a run and a checkpoint: nothing
                // is scanned.
                let st = s.stats();
                assert!(st.opened_from_checkpoint);
                assert!(
                    st.scanned_bytes < 4096,
                    "only the zero padding after the mark: {st:?}"
                );
                assert_eq!((st.index_runs, st.index_memtable_keys), (1, 0));
            }
            assert_eq!(s.len_of_kind(2), 201);
            assert!(s.contains(2, &key(17)) && !s.contains(2, &key(900)));
            assert_eq!(
                s.get_blocking(2, &key(17)).unwrap(),
                Some(value_for(17, 50))
            );
            assert_eq!(s.get(2, &key(18)).await.unwrap(), Some(value_for(18, 50)));
            assert_eq!(s.get_blocking(2, b"short").unwrap(), Some(b"v".to_vec()));
            // A key sharing the fingerprint of a stored one is not that record.
            let mut twin = key(17);
            twin[31] ^= 1;
            assert!(s.get_blocking(2, &twin).is_err());
            let got = s.entries_in(2, &key(10), &key(19)).unwrap();
            let want: Vec<(Vec<u8>, Vec<u8>)> = (10..=19)
                .map(|i| (key(i).to_vec(), value_for(i, 50)))
                .collect();
            assert_eq!(got, want);
            // Bounds inside one fingerprint: the full keys decide.
            let mut hi = key(12);
            hi[31] = hi[31].wrapping_sub(1);
            let got = s.entries_in(2, &key(12), &hi).unwrap();
            assert!(got.is_empty(), "{got:?}");
        }
        s.close().await.unwrap();
    });
}

#[test]
fn an_index_over_the_checkpoint_limit_is_not_checkpointed_and_reopens_by_scanning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        // 300 keys of 4 bytes: 23 bytes each in a checkpoint, over a 4 KiB limit.
        let opts = StoreOptions {
            max_checkpoint_bytes: 4096,
            ..ckpt_opts()
        };
        let mut s = Store::open(&dir, opts.clone()).await.unwrap();
        for i in 0..300u32 {
            s.put(1, &i.to_be_bytes(), &value_for(i, 100))
                .await
                .unwrap();
        }
        s.close().await.unwrap();
        let s = Store::open(&dir, opts).await.unwrap();
        let st = s.stats();
        assert!(!st.opened_from_checkpoint);
        assert!(st.scanned_bytes > 300 * 100);
        assert_eq!(st.keys, 300);
        assert_eq!(
            s.get(1, &7u32.to_be_bytes()).await.unwrap(),
            Some(value_for(7, 100))
        );
        assert_eq!(
            s.get_blocking(1, &9u32.to_be_bytes()).unwrap(),
            Some(value_for(9, 100))
        );
        s.close().await.unwrap();
        // Under the limit it is checkpointed again.
        let s = Store::open(&dir, ckpt_opts()).await.unwrap();
        s.close().await.unwrap();
        let s = Store::open(&dir, ckpt_opts()).await.unwrap();
        assert!(s.stats().opened_from_checkpoint);
        s.close().await.unwrap();
    });
}

#[test]
fn checkpoint_skips_the_scan_and_keeps_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let mut s = Store::open(&dir, ckpt_opts()).await.unwrap();
        assert!(!s.stats().opened_from_checkpoint);
        for i in 0..300u32 {
            s.put((i % 2) as u8, &i.to_be_bytes(), &value_for(i, 400))
                .await
                .unwrap();
        }
        // Overwrite one key: the checkpoint must keep the newest location.
        s.put(0, &0u32.to_be_bytes(), b"newest").await.unwrap();
        let scanned_full = s.stats().appended_bytes;
        s.close().await.unwrap();

        let mut s = Store::open(&dir, ckpt_opts()).await.unwrap();
        let st = s.stats();
        assert!(st.opened_from_checkpoint);
        assert!(
            st.scanned_bytes < 4096,
            "scanned {} of {scanned_full}",
            st.scanned_bytes
        );
        assert_eq!(st.keys, 300);
        assert_eq!(
            s.get(0, &0u32.to_be_bytes()).await.unwrap().unwrap(),
            b"newest"
        );
        for i in 1..300u32 {
            assert_eq!(
                s.get((i % 2) as u8, &i.to_be_bytes()).await.unwrap(),
                Some(value_for(i, 400))
            );
        }
        // Append after the checkpoint and "crash" (flush, no close): the next open uses
        // the old checkpoint and scans only the new bytes.
        for i in 300..400u32 {
            s.put((i % 2) as u8, &i.to_be_bytes(), &value_for(i, 400))
                .await
                .unwrap();
        }
        s.flush().await.unwrap();
        drop(s);
        let s = Store::open(&dir, ckpt_opts()).await.unwrap();
        let st = s.stats();
        assert!(st.opened_from_checkpoint);
        assert!(st.scanned_bytes > 0 && st.scanned_bytes < scanned_full);
        assert_eq!(st.keys, 400);
        for i in 1..400u32 {
            assert_eq!(
                s.get((i % 2) as u8, &i.to_be_bytes()).await.unwrap(),
                Some(value_for(i, 400)),
                "record {i}"
            );
        }
        s.close().await.unwrap();
    });
}

#[test]
fn corruption_under_a_checkpoint_is_reported_on_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let (seg, mut bytes, offs) = one_segment_of(&dir, ckpt_opts(), 10).await;
        bytes[offs[3] + RECORD_HEADER_BYTES + 20] ^= 0x04;
        std::fs::write(&seg, &bytes).unwrap();
        let s = Store::open(&dir, ckpt_opts()).await.unwrap();
        assert!(s.stats().opened_from_checkpoint);
        match s.get(1, &3u32.to_le_bytes()).await {
            Err(StoreError::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!(segment, seg);
                assert_eq!(offset, offs[3] as u64);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert_eq!(
            s.get(1, &4u32.to_le_bytes()).await.unwrap(),
            Some(value_for(4, 300))
        );
        drop(s);
        // Without the checkpoint the same damage stops the open.
        assert!(matches!(
            Store::open(&dir, small_opts()).await,
            Err(StoreError::Corrupt { .. })
        ));
    });
}

#[test]
fn a_checkpoint_that_does_not_match_the_segments_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let (seg, bytes, offs) = one_segment_of(&dir, ckpt_opts(), 10).await;
        // Cut the active segment below its checkpointed length (as if restored from an
        // older copy): the checkpoint no longer matches and the store is scanned.
        std::fs::write(&seg, &bytes[..offs[6]]).unwrap();
        let s = Store::open(&dir, ckpt_opts()).await.unwrap();
        let st = s.stats();
        assert!(!st.opened_from_checkpoint);
        assert_eq!(st.keys, 6);
        assert_eq!(s.get(1, &6u32.to_le_bytes()).await.unwrap(), None);
        // A garbled checkpoint file is also ignored.
        s.close().await.unwrap();
        std::fs::write(dir.join("index.cur"), b"garbage").unwrap();
        let _ = std::fs::remove_file(dir.join("index.prev"));
        let s = Store::open(&dir, ckpt_opts()).await.unwrap();
        assert!(!s.stats().opened_from_checkpoint);
        assert_eq!(s.stats().keys, 6);
    });
}

#[test]
fn concurrent_put_durable_shares_fdatasyncs() {
    const TASKS: u32 = 24;
    const PUTS_PER_TASK: u32 = 40;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let shared = SharedStore::open(&dir, small_opts()).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let s = shared.clone();
            tasks.push(glommio::spawn_local(async move {
                for j in 0..PUTS_PER_TASK {
                    let i = t * 1000 + j;
                    let v = value_for(i, 50 + (i as usize % 900));
                    assert!(s.put_durable(1, &i.to_be_bytes(), &v).await.unwrap());
                    // Resolved: durable, and readable through any handle.
                    assert_eq!(s.get(1, &i.to_be_bytes()).await.unwrap(), Some(v));
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let st = shared.stats().await.unwrap();
        let puts = (TASKS * PUTS_PER_TASK) as u64;
        assert_eq!(st.durable_puts, puts);
        assert_eq!(st.store.appended_records, puts);
        eprintln!(
            "{puts} concurrent durable puts, {} group commits",
            st.group_commits
        );
        assert!(st.group_commits >= 1);
        assert!(
            st.group_commits * 4 <= puts,
            "{} group commits for {puts} concurrent durable puts",
            st.group_commits
        );
        assert!(st.store.syncs >= st.group_commits);
        shared.close().await.unwrap();

        let s = Store::open(&dir, small_opts()).await.unwrap();
        assert_eq!(s.len_of_kind(1), (TASKS * PUTS_PER_TASK) as usize);
        for t in 0..TASKS {
            for j in 0..PUTS_PER_TASK {
                let i = t * 1000 + j;
                let v = value_for(i, 50 + (i as usize % 900));
                assert_eq!(s.get(1, &i.to_be_bytes()).await.unwrap(), Some(v));
            }
        }
        s.close().await.unwrap();
    });
}

#[test]
fn shared_store_flush_content_addressed_and_close() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let shared = SharedStore::open(&dir, small_opts().content_addressed(7))
            .await
            .unwrap();
        let other = shared.clone();
        assert!(shared.put(2, b"a", b"buffered").await.unwrap());
        assert!(other.put_durable(7, b"h", b"first").await.unwrap());
        // Write-once: the second put is a no-op that still resolves durable.
        assert!(!shared.put_durable(7, b"h", b"second").await.unwrap());
        assert_eq!(
            other.get(7, b"h").await.unwrap().as_deref(),
            Some(&b"first"[..])
        );
        other.flush().await.unwrap();
        // Nothing new: no further sync.
        let before = shared.stats().await.unwrap();
        shared.flush().await.unwrap();
        assert_eq!(
            shared.stats().await.unwrap().store.syncs,
            before.store.syncs
        );
        assert!(other.contains(2, b"a").await.unwrap());
        assert_eq!(other.len_of_kind(7).await.unwrap(), 1);
        assert!(shared.put(2, b"b", b"closed by close").await.unwrap());
        shared.close().await.unwrap();
        assert!(matches!(
            other.put_durable(2, b"c", b"x").await,
            Err(StoreError::Closed { .. })
        ));
        assert!(matches!(
            other.get(2, b"a").await,
            Err(StoreError::Closed { .. })
        ));

        let s = Store::open(&dir, small_opts()).await.unwrap();
        assert_eq!(
            s.get(2, b"a").await.unwrap().as_deref(),
            Some(&b"buffered"[..])
        );
        assert_eq!(
            s.get(2, b"b").await.unwrap().as_deref(),
            Some(&b"closed by close"[..])
        );
        assert_eq!(
            s.get(7, b"h").await.unwrap().as_deref(),
            Some(&b"first"[..])
        );
        s.close().await.unwrap();
    });
}

#[test]
fn writes_behind_are_read_back_and_made_durable_by_flush() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let opts = StoreOptions {
            segment_size_bytes: 1 << 20,
            ..small_opts()
        };
        let mut s = Store::open(&dir, opts.clone()).await.unwrap();
        let mut max_in_flight = 0;
        for i in 0..200u32 {
            s.put(1, &i.to_be_bytes(), &value_for(i, 3000))
                .await
                .unwrap();
            max_in_flight = max_in_flight.max(s.in_flight.borrow().len());
            assert!(s.in_flight.borrow().len() <= MAX_WRITES_IN_FLIGHT);
        }
        assert!(max_in_flight >= 1, "no write was in flight");
        assert!(s.stats().writes > 10);
        // Reads of records still being written wait for those writes.
        for i in (0..200u32).rev() {
            assert_eq!(
                s.get(1, &i.to_be_bytes()).await.unwrap(),
                Some(value_for(i, 3000))
            );
        }
        for i in 200..260u32 {
            s.put(1, &i.to_be_bytes(), &value_for(i, 3000))
                .await
                .unwrap();
        }
        s.flush().await.unwrap();
        assert!(s.in_flight.borrow().is_empty());
        let st = s.stats();
        // Everything written once, plus padding and rewritten tail blocks (few commits).
        assert!(st.written_bytes >= st.appended_bytes);
        assert!(st.written_bytes <= st.appended_bytes + 4 * IO_ALIGN_BYTES * st.syncs.max(1));
        drop(s);
        let s = Store::open(&dir, opts).await.unwrap();
        assert_eq!(s.stats().truncated_tail_bytes, 0);
        assert_eq!(s.len_of_kind(1), 260);
        for i in 0..260u32 {
            assert_eq!(
                s.get(1, &i.to_be_bytes()).await.unwrap(),
                Some(value_for(i, 3000))
            );
        }
        s.close().await.unwrap();
    });
}

#[test]
fn a_read_dropped_while_waiting_for_writes_leaves_the_store_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let opts = StoreOptions {
            segment_size_bytes: 1 << 20,
            ..small_opts()
        };
        let mut s = Store::open(&dir, opts.clone()).await.unwrap();
        for i in 0..40u32 {
            s.put(1, &i.to_be_bytes(), &value_for(i, 3000))
                .await
                .unwrap();
        }
        assert!(!s.in_flight.borrow().is_empty());
        {
            // A read of an early record waits for the writes in flight; poll it once and
            // drop it mid-wait.
            let key = 0u32.to_be_bytes();
            let mut read = Box::pin(s.get(1, &key));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let _ = read.as_mut().poll(&mut cx);
        }
        s.flush().await.unwrap();
        assert!(s.in_flight.borrow().is_empty());
        drop(s);
        let s = Store::open(&dir, opts).await.unwrap();
        assert_eq!(s.len_of_kind(1), 40);
        for i in 0..40u32 {
            assert_eq!(
                s.get(1, &i.to_be_bytes()).await.unwrap(),
                Some(value_for(i, 3000))
            );
        }
        s.close().await.unwrap();
    });
}

/// Every live record by `scan_all`, as a map (kind, key) → value; panics on a duplicate.
async fn scan_to_map(s: &Store) -> Result<BTreeMap<(u8, Vec<u8>), Vec<u8>>, StoreError> {
    let mut out = BTreeMap::new();
    let mut sc = s.scan_all();
    while let Some(r) = sc.next().await {
        let r = r?;
        let prev = out.insert((r.kind, r.key.to_vec()), r.value.to_vec());
        assert!(
            prev.is_none(),
            "record yielded twice: kind {} key {:?}",
            r.kind,
            r.key
        );
    }
    let st = sc.stats();
    assert_eq!(st.records as usize, out.len());
    Ok(out)
}

/// The model after the same puts: the latest value wins, except for content-addressed kinds.
fn model_put(
    m: &mut BTreeMap<(u8, Vec<u8>), Vec<u8>>,
    ca: &[u8],
    kind: u8,
    key: &[u8],
    value: &[u8],
) {
    let k = (kind, key.to_vec());
    if ca.contains(&kind) && m.contains_key(&k) {
        return;
    }
    m.insert(k, value.to_vec());
}

#[test]
fn scan_yields_every_live_record_once_in_every_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let opts = StoreOptions {
            use_checkpoint: true,
            ..small_opts().content_addressed(3)
        };
        let mut model = BTreeMap::new();
        let mut s = Store::open(&dir, opts.clone()).await.unwrap();
        // Empty store.
        assert!(scan_to_map(&s).await.unwrap().is_empty());
        for i in 0..600u32 {
            let kind = (i % 4) as u8;
            // Keys repeat: later puts supersede earlier ones (kind 3 is write-once).
            let key = (i % 250).to_be_bytes();
            let v = value_for(i, 100 + (i as usize * 37) % 500);
            s.put(kind, &key, &v).await.unwrap();
            model_put(&mut model, &[3], kind, &key, &v);
            if i % 97 == 0 {
                // Records on the file, in writes behind and in the buffer.
                assert_eq!(scan_to_map(&s).await.unwrap(), model, "after put {i}");
            }
        }
        assert!(s.stats().segments > 2, "small segments must roll");
        assert_eq!(scan_to_map(&s).await.unwrap(), model, "before flush");
        s.flush().await.unwrap();
        // After a flush the last block is on the file and in the buffer: one record may
        // start on the file and end in the buffer.
        assert_eq!(scan_to_map(&s).await.unwrap(), model, "after flush");
        for kind in 0..5u8 {
            let mut sc = s.scan(kind);
            let mut n = 0;
            while let Some(r) = sc.next().await {
                let r = r.unwrap();
                assert_eq!(r.kind, kind);
                assert_eq!(model.get(&(kind, r.key.to_vec())).unwrap(), r.value);
                n += 1;
            }
            assert_eq!(n, s.len_of_kind(kind), "kind {kind}");
            assert!(sc.stats().reads > 0 || n == 0);
        }
        s.close().await.unwrap();
        // From the checkpoint, then with a full scan at open.
        let s = Store::open(&dir, opts.clone()).await.unwrap();
        assert!(s.stats().opened_from_checkpoint);
        assert_eq!(scan_to_map(&s).await.unwrap(), model, "from checkpoint");
        drop(s);
        let s = Store::open(
            &dir,
            StoreOptions {
                use_checkpoint: false,
                ..opts.clone()
            },
        )
        .await
        .unwrap();
        assert_eq!(scan_to_map(&s).await.unwrap(), model, "full scan");
        s.close().await.unwrap();
    });
}

#[test]
fn scan_matches_get_for_many_records_across_reopen() {
    // A test-sized reload: 20k records of 100..600 bytes over 1 MiB segments.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let opts = StoreOptions {
            segment_size_bytes: 1 << 20,
            max_value_bytes: 4096,
            use_checkpoint: true,
            ..StoreOptions::default()
        };
        let n = 20_000u32;
        let mut s = Store::open(&dir, opts.clone()).await.unwrap();
        for i in 0..n {
            let v = value_for(i, 100 + (i as usize * 7919) % 501);
            s.put(1 + (i % 3) as u8, &i.to_be_bytes(), &v)
                .await
                .unwrap();
            if i % 1000 == 999 {
                s.flush().await.unwrap();
            }
        }
        s.close().await.unwrap();
        for use_checkpoint in [true, false] {
            let s = Store::open(
                &dir,
                StoreOptions {
                    use_checkpoint,
                    ..opts.clone()
                },
            )
            .await
            .unwrap();
            assert_eq!(s.stats().opened_from_checkpoint, use_checkpoint);
            let mut seen = vec![false; n as usize];
            let mut sc = s.scan_all();
            while let Some(r) = sc.next().await {
                let r = r.unwrap();
                let i = u32::from_be_bytes(r.key.try_into().unwrap());
                assert_eq!(r.kind, 1 + (i % 3) as u8);
                assert_eq!(r.value, value_for(i, 100 + (i as usize * 7919) % 501));
                assert!(!std::mem::replace(&mut seen[i as usize], true));
            }
            assert!(seen.iter().all(|s| *s));
            let st = sc.stats();
            assert_eq!(st.records, n as u64);
            assert_eq!(st.skipped_records, 0);
            // Large sequential reads, not one per record.
            assert!(st.reads < 64, "{} reads", st.reads);
            for i in (0..n).step_by(1237) {
                assert_eq!(
                    s.get(1 + (i % 3) as u8, &i.to_be_bytes()).await.unwrap(),
                    Some(value_for(i, 100 + (i as usize * 7919) % 501))
                );
            }
            s.close().await.unwrap();
        }
    });
}

#[test]
fn scan_reports_corruption_under_a_checkpoint_with_segment_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let mut s = Store::open(&dir, ckpt_opts()).await.unwrap();
        for i in 0..200u32 {
            s.put(1, &i.to_le_bytes(), &value_for(i, 1000))
                .await
                .unwrap();
        }
        s.close().await.unwrap();
        let seg1 = seg_path(&dir, 1);
        let clean = std::fs::read(&seg1).unwrap();
        let offs = record_offsets(&clean);
        assert!(offs.len() > 10);

        // A flipped value byte: body checksum, at that record's offset.
        let mut bytes = clean.clone();
        bytes[offs[7] + RECORD_HEADER_BYTES + 4 + 100] ^= 0x10;
        std::fs::write(&seg1, &bytes).unwrap();
        let s = Store::open(&dir, ckpt_opts()).await.unwrap();
        assert!(s.stats().opened_from_checkpoint);
        let mut sc = s.scan_all();
        let mut yielded = 0;
        let err = loop {
            match sc.next().await {
                Some(Ok(_)) => yielded += 1,
                Some(Err(e)) => break e,
                None => panic!("scan ended without reporting the damage"),
            }
        };
        assert_eq!(yielded, 7);
        match err {
            StoreError::Corrupt {
                segment,
                offset,
                reason,
            } => {
                assert_eq!(segment, seg1);
                assert_eq!(offset, offs[7] as u64);
                assert_eq!(reason, RecordDefect::BodyChecksum.reason());
            }
            e => panic!("expected Corrupt, got {e}"),
        }
        // The scan ends after an error.
        assert!(sc.next().await.is_none());
        drop(s);

        // Zeroed records in the middle are not taken for padding.
        let mut bytes = clean.clone();
        for b in &mut bytes[offs[3]..offs[5]] {
            *b = 0;
        }
        std::fs::write(&seg1, &bytes).unwrap();
        let s = Store::open(&dir, ckpt_opts()).await.unwrap();
        assert!(s.stats().opened_from_checkpoint);
        match scan_to_map(&s).await {
            Err(StoreError::Corrupt {
                segment,
                offset,
                reason,
            }) => {
                assert_eq!(segment, seg1);
                assert_eq!(offset, offs[3] as u64);
                assert_eq!(reason, RecordDefect::ZeroHeader.reason());
            }
            other => panic!("expected Corrupt, got {:?}", other.map(|m| m.len())),
        }
        drop(s);
        std::fs::write(&seg1, &clean).unwrap();
        let s = Store::open(&dir, ckpt_opts()).await.unwrap();
        assert_eq!(scan_to_map(&s).await.unwrap().len(), 200);
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Random puts, flushes, crashes and clean reopens: the scan always equals the model.
    #[test]
    fn scan_equals_the_model_after_random_operations(
        ops in proptest::collection::vec((0u8..3, 0u16..40, 0usize..900, 0u8..20), 1..150),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let ok = run(async move {
            let opts = StoreOptions {
                use_checkpoint: true,
                ..small_opts().content_addressed(2)
            };
            let mut model = BTreeMap::new();
            let mut durable = BTreeMap::new();
            let mut s = Store::open(&dir, opts.clone()).await.unwrap();
            for (i, (kind, key, vlen, action)) in ops.into_iter().enumerate() {
                let v = value_for(i as u32, vlen);
                s.put(kind, &key.to_be_bytes(), &v).await.unwrap();
                model_put(&mut model, &[2], kind, &key.to_be_bytes(), &v);
                match action {
                    0 => {
                        s.close().await.unwrap();
                        durable = model.clone();
                        s = Store::open(&dir, opts.clone()).await.unwrap();
                    }
                    1 => {
                        // Crash after a flush: everything flushed survives.
                        s.flush().await.unwrap();
                        durable = model.clone();
                        drop(s);
                        s = Store::open(&dir, opts.clone()).await.unwrap();
                        model = durable.clone();
                    }
                    2..=4 => {
                        s.flush().await.unwrap();
                        durable = model.clone();
                    }
                    _ => {}
                }
                if scan_to_map(&s).await.unwrap() != model {
                    return false;
                }
            }
            let _ = durable;
            s.close().await.unwrap();
            true
        });
        prop_assert!(ok);
    }
}

// ---- fingerprint index: memtable, runs, merges, checkpoint mark ----

/// Kinds of the fingerprint index tests: content-addressed, and overwritable.
const FP_CA: u8 = 1;
const FP_RW: u8 = 6;
/// Keyed by 8-byte numbers, kept in the fingerprint index by number.
const FP_NUM: u8 = 7;

/// A block-number-like key of the numbered kind: spread over many memtable parts, a
/// few far above them all.
fn nkey(i: u8) -> [u8; 8] {
    let n = if i % 16 == 5 {
        (i as u64) << 40
    } else {
        i as u64 * 40_000
    };
    n.to_be_bytes()
}

/// A keccak-like key: uniformly spread bytes.
fn hkey(i: u32) -> [u8; 32] {
    let mut k = [0u8; 32];
    let mut x = (i as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for c in k.chunks_mut(8) {
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        c.copy_from_slice(&x.to_le_bytes());
    }
    k
}

/// Options with a memtable of about `keys` fingerprints.
fn fp_opts(keys: u64) -> StoreOptions {
    StoreOptions {
        use_checkpoint: true,
        max_index_memory_bytes: keys * MEMTABLE_ENTRY_BYTES,
        ..small_opts()
            .content_addressed(FP_CA)
            .fingerprinted(FP_CA)
            .fingerprinted(FP_RW)
            .numbered(FP_NUM)
    }
}

/// Check every key of `model` (and absent ones) against the store.
async fn check_against(s: &Store, model: &BTreeMap<(u8, Vec<u8>), Vec<u8>>, absent_from: u32) {
    for ((kind, key), v) in model {
        assert!(s.contains(*kind, key), "kind {kind} key {key:?} missing");
        assert_eq!(s.get_blocking(*kind, key).unwrap().as_ref(), Some(v));
        assert_eq!(s.get(*kind, key).await.unwrap().as_ref(), Some(v));
    }
    for kind in [FP_CA, FP_RW] {
        let n = model.keys().filter(|(k, _)| *k == kind).count();
        assert_eq!(s.len_of_kind(kind), n, "len of kind {kind}");
        for i in absent_from..absent_from + 300 {
            assert!(!s.contains(kind, &hkey(i)));
            assert_eq!(s.get_blocking(kind, &hkey(i)).unwrap(), None);
        }
    }
}

#[test]
fn fingerprint_runs_flush_merge_and_answer_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let opts = fp_opts(150);
        let mut model = BTreeMap::new();
        let mut s = Store::open(&dir, opts.clone()).await.unwrap();
        for i in 0..4000u32 {
            let (kind, v) = (FP_CA, value_for(i, 20));
            s.put(kind, &hkey(i), &v).await.unwrap();
            model_put(&mut model, &[FP_CA], kind, &hkey(i), &v);
            // Overwrites of earlier keys land in newer runs than the first value.
            let j = i % 700;
            let v = value_for(i + 1_000_000, 12);
            s.put(FP_RW, &hkey(j), &v).await.unwrap();
            model_put(&mut model, &[FP_CA], FP_RW, &hkey(j), &v);
        }
        // Content-addressed keys already written out to a run are still write-once.
        assert!(!s.put(FP_CA, &hkey(3), b"again").await.unwrap());
        s.flush().await.unwrap();
        let st = s.stats();
        assert!(st.index_flushes >= 40, "{st:?}");
        assert!(st.index_merges >= 10, "{st:?}");
        assert!(st.index_runs as usize <= MAX_RUNS, "{st:?}");
        assert!(st.index_memtable_keys <= 151, "{st:?}");
        check_against(&s, &model, 10_000).await;
        // A range over fingerprints merges memtable and runs, the newest entry winning.
        let mut keys: Vec<[u8; 32]> = (0..700).map(hkey).collect();
        keys.sort();
        let (lo, hi) = (keys[100], keys[300]);
        let got = s.entries_in(FP_RW, &lo, &hi).unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = model
            .range((FP_RW, lo.to_vec())..=(FP_RW, hi.to_vec()))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(got.len(), 201);
        assert_eq!(got, want);
        let mut it = s.iter_kind(FP_RW).unwrap();
        assert_eq!(it.remaining(), 700);
        while let Some(r) = it.next().await {
            let (k, v) = r.unwrap();
            assert_eq!(model.get(&(FP_RW, k)), Some(&v));
        }
        assert_eq!(scan_to_map(&s).await.unwrap(), model);
        s.close().await.unwrap();
        for _ in 0..2 {
            let s = Store::open(&dir, opts.clone()).await.unwrap();
            let st = s.stats();
            assert!(st.opened_from_checkpoint, "{st:?}");
            assert!(st.scanned_bytes < 4096, "{st:?}");
            check_against(&s, &model, 10_000).await;
            assert_eq!(scan_to_map(&s).await.unwrap(), model);
            s.close().await.unwrap();
        }
        // Without the checkpoint the runs are rebuilt from a full scan.
        let s = Store::open(
            &dir,
            StoreOptions {
                use_checkpoint: false,
                ..opts.clone()
            },
        )
        .await
        .unwrap();
        let st = s.stats();
        assert!(!st.opened_from_checkpoint && st.index_flushes > 0, "{st:?}");
        check_against(&s, &model, 10_000).await;
        s.close().await.unwrap();
    });
}

#[test]
fn open_after_a_run_flush_scans_only_the_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let opts = fp_opts(2000);
        let mut s = Store::open(&dir, opts.clone()).await.unwrap();
        // Whole keys too: they come back from the checkpoint written with each run.
        s.put(3, b"header-1", b"h").await.unwrap();
        let mut i = 0u32;
        while s.stats().index_flushes == 0 {
            s.put(FP_CA, &hkey(i), &value_for(i, 100)).await.unwrap();
            i += 1;
        }
        let flushed = i;
        let covered = s.stats().appended_bytes;
        // A tail after the flush, made durable, then a crash (no close).
        for j in flushed..flushed + 50 {
            s.put(FP_CA, &hkey(j), &value_for(j, 100)).await.unwrap();
        }
        s.put(FP_RW, &hkey(0), b"tail").await.unwrap();
        s.flush().await.unwrap();
        let total = s.stats().appended_bytes;
        drop(s);
        let s = Store::open(&dir, opts.clone()).await.unwrap();
        let st = s.stats();
        assert!(st.opened_from_checkpoint, "{st:?}");
        let tail = total - covered;
        assert!(
            st.scanned_bytes >= tail && st.scanned_bytes < tail + 4096,
            "scanned {} bytes for a tail of {tail} (store {total}): {st:?}",
            st.scanned_bytes
        );
        assert!(st.scanned_bytes * 10 < total);
        assert_eq!(st.index_memtable_keys, 51);
        for j in 0..flushed + 50 {
            assert_eq!(
                s.get_blocking(FP_CA, &hkey(j)).unwrap(),
                Some(value_for(j, 100))
            );
        }
        assert_eq!(
            s.get_blocking(FP_RW, &hkey(0)).unwrap(),
            Some(b"tail".to_vec())
        );
        assert_eq!(s.get_blocking(3, b"header-1").unwrap(), Some(b"h".to_vec()));
        assert_eq!(s.len_of_kind(FP_CA), (flushed + 50) as usize);
        assert_eq!(s.len_of_kind(FP_RW), 1);
        assert_eq!(s.len_of_kind(3), 1);
        s.close().await.unwrap();
    });
}

/// Write `n` content-addressed keys with a memtable of `mem` keys, close, and return the
/// run files.
async fn store_with_runs(dir: &Path, n: u32, mem: u64) -> Vec<PathBuf> {
    let mut s = Store::open(dir, fp_opts(mem)).await.unwrap();
    for i in 0..n {
        s.put(FP_CA, &hkey(i), &value_for(i, 30)).await.unwrap();
    }
    s.close().await.unwrap();
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect();
    out.sort();
    out
}

#[test]
fn a_damaged_run_is_detected_and_the_index_rebuilt_from_the_segments() {
    for damage in ["truncate", "fences", "filter", "header", "missing"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        run(async move {
            let runs = store_with_runs(&dir, 3000, 1000).await;
            assert!(!runs.is_empty());
            let p = &runs[0];
            let mut b = std::fs::read(p).unwrap();
            match damage {
                "truncate" => b.truncate(b.len() - 7),
                "fences" => {
                    let blocks = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
                    b[(1 + blocks) * runs::BLOCK_BYTES + 5] ^= 0x40;
                }
                "filter" => {
                    let n = b.len();
                    b[n - 1] ^= 0x40;
                }
                "header" => b[20] ^= 1,
                _ => b.clear(),
            }
            if damage == "missing" {
                std::fs::remove_file(p).unwrap();
            } else {
                std::fs::write(p, &b).unwrap();
            }
            let s = Store::open(&dir, fp_opts(1000)).await.unwrap();
            let st = s.stats();
            assert!(!st.opened_from_checkpoint, "{damage}: {st:?}");
            assert!(st.scanned_bytes > 3000 * 30, "{damage}: {st:?}");
            assert_eq!(s.len_of_kind(FP_CA), 3000);
            for i in 0..3000 {
                assert_eq!(
                    s.get_blocking(FP_CA, &hkey(i)).unwrap(),
                    Some(value_for(i, 30)),
                    "{damage}"
                );
            }
            assert!(!s.contains(FP_CA, &hkey(5000)));
            s.close().await.unwrap();
        });
    }
}

#[test]
fn a_damaged_run_block_is_an_error_never_a_wrong_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let runs = store_with_runs(&dir, 3000, 100_000).await;
        assert_eq!(runs.len(), 1, "one run written at close");
        // Flip a byte inside data block 2 (data blocks start after the header block).
        let mut b = std::fs::read(&runs[0]).unwrap();
        b[3 * runs::BLOCK_BYTES + 40] ^= 0x08;
        std::fs::write(&runs[0], &b).unwrap();
        let mut s = Store::open(&dir, fp_opts(100_000)).await.unwrap();
        assert!(s.stats().opened_from_checkpoint);
        let mut errors = 0;
        for i in 0..3000 {
            match s.get_blocking(FP_CA, &hkey(i)) {
                Ok(v) => assert_eq!(v, Some(value_for(i, 30))),
                Err(StoreError::IndexRun { path, .. }) => {
                    assert_eq!(path, runs[0]);
                    errors += 1;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(errors, runs::ENTRIES_PER_BLOCK);
        // The store refuses writes and dropped its checkpoint.
        assert!(matches!(
            s.put(FP_CA, &hkey(9999), b"x").await,
            Err(StoreError::Poisoned { .. })
        ));
        assert!(s.close().await.is_err());
        let s = Store::open(&dir, fp_opts(100_000)).await.unwrap();
        let st = s.stats();
        assert!(!st.opened_from_checkpoint, "{st:?}");
        assert!(st.scanned_bytes > 3000 * 30);
        for i in 0..3000 {
            assert_eq!(
                s.get_blocking(FP_CA, &hkey(i)).unwrap(),
                Some(value_for(i, 30))
            );
        }
        s.close().await.unwrap();
    });
}

/// Copy the files of `from` (a merge in the background may rename or remove its
/// temporary file meanwhile: such a file is left out or copied partially, as a crash
/// would leave it).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() == "LOCK" {
            continue;
        }
        match std::fs::copy(e.path(), to.join(e.file_name())) {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                assert!(e.file_name().to_string_lossy().ends_with(".tmp"), "{err}");
                let _ = std::fs::remove_file(to.join(e.file_name()));
            }
            Err(err) => panic!("copying {}: {err}", e.path().display()),
        }
    }
}

/// States a crash can leave between the steps of writing out the index: the run written
/// but not named by a checkpoint, a merge's inputs not yet deleted, a temporary run file,
/// a torn current checkpoint. Each opens to the durable records.
#[test]
fn every_crash_state_of_an_index_write_out_opens_to_the_durable_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("live");
    run(async move {
        let opts = fp_opts(100);
        let mut s = Store::open(&dir, opts.clone()).await.unwrap();
        let mut snaps: Vec<(PathBuf, u32)> = Vec::new();
        let mut flushes = 0;
        for i in 0..1500u32 {
            s.put(FP_CA, &hkey(i), &value_for(i, 25)).await.unwrap();
            if s.stats().index_flushes != flushes {
                // Quiescent after a write-out: every record so far is durable.
                flushes = s.stats().index_flushes;
                let snap = tmp.path().join(format!("snap-{flushes}"));
                copy_dir(&dir, &snap);
                snaps.push((snap, i + 1));
            }
        }
        drop(s);
        assert!(snaps.len() >= 10);
        let names = |d: &Path| -> Vec<String> {
            std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        for w in snaps.windows(2) {
            let ((a, n_a), (b, _)) = (&w[0], &w[1]);
            // Checkpoint of `a` with the run files of both `a` and `b` (written, not yet
            // named; or named by `b` and inputs not yet deleted), a temporary run file,
            // and `b`'s segments (records after `a`'s mark are found by the tail scan).
            let c = tmp.path().join("crash");
            let _ = std::fs::remove_dir_all(&c);
            copy_dir(b, &c);
            for n in names(a) {
                if n.starts_with("index.") || n.starts_with("run-") {
                    std::fs::copy(a.join(&n), c.join(&n)).unwrap();
                }
            }
            std::fs::write(c.join(format!("{}.tmp", runs::run_name(999_999))), b"torn").unwrap();
            let s = Store::open(&c, opts.clone()).await.unwrap();
            assert!(s.stats().opened_from_checkpoint);
            for i in 0..*n_a {
                assert_eq!(
                    s.get_blocking(FP_CA, &hkey(i)).unwrap(),
                    Some(value_for(i, 25))
                );
            }
            let count = s.len_of_kind(FP_CA);
            s.close().await.unwrap();
            assert!(count >= *n_a as usize);
            // Only the runs the checkpoint names (and no temporary file) are left.
            let left: Vec<String> = names(&c)
                .into_iter()
                .filter(|n| n.starts_with("run-"))
                .collect();
            assert!(left.iter().all(|n| n.ends_with(".idx")), "{left:?}");
            // A torn current checkpoint falls back to the previous one (whose runs may
            // be gone: then the index is rebuilt).
            let cur = c.join("index.cur");
            let mut bytes = std::fs::read(&cur).unwrap();
            let n = bytes.len();
            bytes[n - 3] ^= 0xff;
            std::fs::write(&cur, &bytes).unwrap();
            let s = Store::open(&c, opts.clone()).await.unwrap();
            assert_eq!(s.len_of_kind(FP_CA), count);
            for i in (0..*n_a).step_by(7) {
                assert!(s.contains(FP_CA, &hkey(i)));
            }
            s.close().await.unwrap();
        }
    });
}

#[derive(Debug, Clone)]
enum FpOp {
    Put { kind: u8, key: u8, value: u8 },
    Flush,
    Reopen,
    Crash,
}

fn fp_op() -> impl Strategy<Value = FpOp> {
    prop_oneof![
        12 => (prop_oneof![Just(FP_CA), Just(FP_RW), Just(FP_NUM)], 0u8..48, any::<u8>())
            .prop_map(|(kind, key, value)| FpOp::Put { kind, key, value }),
        2 => Just(FpOp::Flush),
        1 => Just(FpOp::Reopen),
        1 => Just(FpOp::Crash),
    ]
}

/// The numbered kind's greatest key and a range of it, against the model.
fn check_numbered(s: &Store, model: &BTreeMap<(u8, Vec<u8>), Vec<u8>>) {
    let of_kind = || model.range((FP_NUM, Vec::new())..(FP_NUM + 1, Vec::new()));
    assert_eq!(
        s.max_key_of_kind(FP_NUM).unwrap(),
        of_kind().map(|((_, k), _)| k.clone()).next_back()
    );
    let (lo, hi) = (nkey(3), nkey(30));
    let want: Vec<(Vec<u8>, Vec<u8>)> = of_kind()
        .filter(|((_, k), _)| k[..] >= lo[..] && k[..] <= hi[..])
        .map(|((_, k), v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(s.entries_in(FP_NUM, &lo, &hi).unwrap(), want);
    let numbers: Vec<u64> = want
        .iter()
        .map(|(k, _)| u64::from_be_bytes(k[..].try_into().unwrap()))
        .collect();
    assert_eq!(
        s.numbers_in(FP_NUM, u64::from_be_bytes(lo), u64::from_be_bytes(hi))
            .unwrap(),
        numbers
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random puts (write-once and overwritable fingerprinted kinds, a numbered kind), flushes, clean
    /// reopens and crashes (dropped without close: what the last flush covered survives)
    /// against a map, with a memtable of 6 keys so that runs and merges happen all along.
    #[test]
    fn fingerprint_index_equals_a_map_model(ops in proptest::collection::vec(fp_op(), 1..160)) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        run(async move {
            let opts = fp_opts(6);
            let mut s = Store::open(&dir, opts.clone()).await.unwrap();
            // Durable model (after the last flush) and current model.
            let mut durable: BTreeMap<(u8, Vec<u8>), Vec<u8>> = BTreeMap::new();
            let mut model = durable.clone();
            for op in ops {
                match op {
                    FpOp::Put { kind, key, value } => {
                        let k = if kind == FP_NUM {
                            nkey(key).to_vec()
                        } else {
                            hkey(key as u32).to_vec()
                        };
                        let v = vec![value; 1 + key as usize % 5];
                        s.put(kind, &k, &v).await.unwrap();
                        model_put(&mut model, &[FP_CA], kind, &k, &v);
                    }
                    FpOp::Flush => {
                        s.flush().await.unwrap();
                        durable = model.clone();
                    }
                    FpOp::Reopen => {
                        s.close().await.unwrap();
                        durable = model.clone();
                        s = Store::open(&dir, opts.clone()).await.unwrap();
                    }
                    FpOp::Crash => {
                        drop(s);
                        s = Store::open(&dir, opts.clone()).await.unwrap();
                        // Unflushed puts may or may not have survived; a write-out of the
                        // memtable flushed them: the store holds at least `durable`.
                        let got = scan_to_map(&s).await.unwrap();
                        for (k, v) in &durable {
                            let g = got.get(k);
                            assert!(g.is_some(), "durable key lost: {k:?}");
                            if k.0 == FP_CA {
                                assert_eq!(g, Some(v));
                            }
                        }
                        model = got;
                        durable = model.clone();
                    }
                }
                for kind in [FP_CA, FP_RW, FP_NUM] {
                    let n = model.keys().filter(|(k, _)| *k == kind).count();
                    assert_eq!(s.len_of_kind(kind), n);
                }
                check_numbered(&s, &model);
            }
            check_against(&s, &model, 100).await;
            s.close().await.unwrap();
            let s = Store::open(&dir, opts).await.unwrap();
            check_against(&s, &model, 100).await;
            check_numbered(&s, &model);
            assert_eq!(scan_to_map(&s).await.unwrap(), model);
            s.close().await.unwrap();
        });
    }
}

#[test]
fn a_store_whose_numbered_kinds_were_kept_whole_is_rescanned_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        // Written while the 8-byte keys of FP_NUM were kept whole (a store from before
        // the kind was numbered), closed with a checkpoint.
        let old = StoreOptions {
            use_checkpoint: true,
            ..small_opts().fingerprinted(FP_CA)
        };
        let mut s = Store::open(&dir, old).await.unwrap();
        for i in 0..500u64 {
            s.put(FP_NUM, &i.to_be_bytes(), &value_for(i as u32, 30))
                .await
                .unwrap();
        }
        s.close().await.unwrap();
        // Opened numbered, with a memtable of 50 keys: the checkpoint (other kinds in
        // the fingerprint index) is not used; the scan puts the keys into runs.
        let s = Store::open(&dir, fp_opts(50)).await.unwrap();
        let st = s.stats();
        assert!(!st.opened_from_checkpoint, "{st:?}");
        assert!(st.index_runs > 0 && st.index_memtable_keys <= 50, "{st:?}");
        assert_eq!(s.len_of_kind(FP_NUM), 500);
        for i in 0..500u64 {
            assert_eq!(
                s.get_blocking(FP_NUM, &i.to_be_bytes()).unwrap(),
                Some(value_for(i as u32, 30))
            );
        }
        assert!(!s.contains(FP_NUM, &500u64.to_be_bytes()));
        assert_eq!(
            s.max_key_of_kind(FP_NUM).unwrap(),
            Some(499u64.to_be_bytes().to_vec())
        );
        s.close().await.unwrap();
        let s = Store::open(&dir, fp_opts(50)).await.unwrap();
        assert!(s.stats().opened_from_checkpoint);
        assert_eq!(
            s.max_key_of_kind(FP_NUM).unwrap(),
            Some(499u64.to_be_bytes().to_vec())
        );
        s.close().await.unwrap();
    });
}

#[test]
fn whole_keys_over_the_checkpoint_limit_are_rescanned_but_fingerprints_come_from_the_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let opts = StoreOptions {
            max_checkpoint_bytes: 1024,
            ..fp_opts(400)
        };
        let mut s = Store::open(&dir, opts.clone()).await.unwrap();
        for i in 0..1000u32 {
            s.put(FP_CA, &hkey(i), &value_for(i, 40)).await.unwrap();
            s.put(3, &i.to_be_bytes(), &value_for(i, 10)).await.unwrap();
        }
        s.close().await.unwrap();
        let s = Store::open(&dir, opts.clone()).await.unwrap();
        let st = s.stats();
        assert!(st.opened_from_checkpoint, "{st:?}");
        // Every segment is scanned for the whole keys; the fingerprinted records before
        // the mark are in the runs and not indexed again.
        assert!(st.scanned_bytes > 1000 * 50, "{st:?}");
        assert_eq!(st.index_memtable_keys, 0, "{st:?}");
        assert_eq!(s.len_of_kind(FP_CA), 1000);
        assert_eq!(s.len_of_kind(3), 1000);
        for i in 0..1000u32 {
            assert_eq!(
                s.get_blocking(FP_CA, &hkey(i)).unwrap(),
                Some(value_for(i, 40))
            );
            assert_eq!(
                s.get_blocking(3, &i.to_be_bytes()).unwrap(),
                Some(value_for(i, 10))
            );
        }
        s.close().await.unwrap();
    });
}

#[test]
fn shared_store_put_durable_across_index_write_outs() {
    const TASKS: u32 = 8;
    const PUTS_PER_TASK: u32 = 60;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let shared = SharedStore::open(&dir, fp_opts(40)).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let s = shared.clone();
            tasks.push(glommio::spawn_local(async move {
                for j in 0..PUTS_PER_TASK {
                    let i = t * 1000 + j;
                    assert!(s
                        .put_durable(FP_CA, &hkey(i), &value_for(i, 30))
                        .await
                        .unwrap());
                    assert!(s.contains(FP_CA, &hkey(i)).await.unwrap());
                    assert_eq!(
                        s.get(FP_CA, &hkey(i)).await.unwrap(),
                        Some(value_for(i, 30))
                    );
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let st = shared.stats().await.unwrap();
        assert!(st.store.index_flushes >= 5, "{:?}", st.store);
        assert_eq!(
            shared.len_of_kind(FP_CA).await.unwrap(),
            (TASKS * PUTS_PER_TASK) as usize
        );
        shared.close().await.unwrap();
        let s = Store::open(&dir, fp_opts(40)).await.unwrap();
        assert!(s.stats().opened_from_checkpoint);
        assert_eq!(s.len_of_kind(FP_CA), (TASKS * PUTS_PER_TASK) as usize);
        for t in 0..TASKS {
            for j in 0..PUTS_PER_TASK {
                let i = t * 1000 + j;
                assert_eq!(
                    s.get_blocking(FP_CA, &hkey(i)).unwrap(),
                    Some(value_for(i, 30))
                );
            }
        }
        s.close().await.unwrap();
    });
}

/// Buckets the fingerprint memtables of every kind hold allocated.
fn memtable_capacity(s: &Store) -> usize {
    s.index
        .iter()
        .flat_map(|m| m.fp.iter())
        .map(|part| part.capacity())
        .sum()
}

#[test]
fn a_write_out_gives_the_memtable_memory_back_whichever_kind_filled_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let limit = 20_000u64;
        let mut s = Store::open(&dir, fp_opts(limit)).await.unwrap();
        // One kind fills the memtable, then another: the first kind's maps must not keep
        // the room they grew to, or the kinds' sum passes the memtable's budget.
        for kind in [FP_CA, FP_RW] {
            for i in 0..25_000u32 {
                s.put(kind, &hkey(i), &value_for(i, 8)).await.unwrap();
            }
        }
        let st = s.stats();
        assert!(st.index_flushes >= 2, "{st:?}");
        let cap = memtable_capacity(&s);
        assert!(
            cap as u64 <= 2 * limit,
            "{cap} buckets allocated for a memtable of {limit} keys ({} now)",
            st.index_memtable_keys
        );
        s.close().await.unwrap();
    });
}

#[test]
fn a_range_scan_reads_nearby_records_together_and_still_checks_each() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let mut s = Store::open(&dir, small_opts()).await.unwrap();
        // Kind 2 interleaved with kind 3 records of other sizes (gaps in the file), over
        // many 64 KiB segments; big values of kind 3 make gaps over the span's limit too.
        let mut want = Vec::new();
        for i in 0..3000u32 {
            let k = i.to_be_bytes();
            let v = value_for(i, 20 + (i as usize % 90));
            s.put(2, &k, &v).await.unwrap();
            want.push((k.to_vec(), v));
            let other = if i % 97 == 0 { 9000 } else { 30 };
            s.put(3, &k, &value_for(i, other)).await.unwrap();
        }
        s.flush().await.unwrap();
        assert!(s.stats().segments > 5, "{:?}", s.stats());
        let got = s.entries_in(2, &[0u8; 4], &[0xff; 4]).unwrap();
        assert_eq!(got, want);
        let got = s
            .entries_in(2, &100u32.to_be_bytes(), &2100u32.to_be_bytes())
            .unwrap();
        assert_eq!(got, want[100..=2100].to_vec());
        // One flipped byte in the value of the first record (kind 2, key 0) of the
        // first, sealed segment, after the open checked it: the span read still checks
        // every record it returns.
        let first = seg_path(&dir, 1);
        let mut bytes = std::fs::read(&first).unwrap();
        assert_eq!(
            bytes[2], 2,
            "the segment starts with the first record of kind 2"
        );
        bytes[RECORD_HEADER_BYTES + 4 + 3] ^= 0x40;
        std::fs::write(&first, &bytes).unwrap();
        match s.entries_in(2, &[0u8; 4], &[0xff; 4]) {
            Err(StoreError::Corrupt { segment, .. }) => assert_eq!(segment, first),
            other => panic!(
                "a damaged record was not caught: {:?}",
                other.map(|v| v.len())
            ),
        }
        s.close().await.unwrap();
    });
}

/// Keys of 8 bytes (block numbers) are kept as integers beside the other keys of their
/// kind: found, overwritten, listed and ranged in byte order, through a checkpoint and
/// through a scan.
#[test]
fn eight_byte_keys_live_beside_other_lengths_in_one_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let mut s = Store::open(&dir, ckpt_opts()).await.unwrap();
        let mut want: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for i in 0..200u64 {
            let k = i.to_be_bytes().to_vec();
            let v = value_for(i as u32, 50);
            s.put(3, &k, &v).await.unwrap();
            want.insert(k, v);
            // Keys of 7 and 9 bytes around it, in the same kind.
            for len in [7usize, 9] {
                let k: Vec<u8> = i.to_be_bytes().iter().copied().cycle().take(len).collect();
                let v = value_for(i as u32 + 1000 * len as u32, 30);
                s.put(3, &k, &v).await.unwrap();
                want.insert(k, v);
            }
        }
        s.put(3, &7u64.to_be_bytes(), b"newer").await.unwrap();
        want.insert(7u64.to_be_bytes().to_vec(), b"newer".to_vec());
        s.flush().await.unwrap();
        let check = |s: &Store| {
            let keys: Vec<Vec<u8>> = want.keys().cloned().collect();
            let mut listed = s.keys_of_kind(3);
            listed.sort_unstable();
            assert_eq!(listed, keys);
            let (lo, hi) = (10u64.to_be_bytes(), 20u64.to_be_bytes());
            let ranged: Vec<Vec<u8>> = keys
                .iter()
                .filter(|k| k[..] >= lo[..] && k[..] <= hi[..])
                .cloned()
                .collect();
            assert_eq!(s.keys_in(3, &lo, &hi), ranged);
            let entries = s.entries_in(3, &lo, &hi).unwrap();
            assert_eq!(
                entries,
                ranged
                    .iter()
                    .map(|k| (k.clone(), want[k].clone()))
                    .collect::<Vec<_>>()
            );
            assert_eq!(s.stats().keys, want.len() as u64);
            assert!(s.contains(3, &199u64.to_be_bytes()));
            assert!(!s.contains(3, &200u64.to_be_bytes()));
            assert!(!s.contains(2, &1u64.to_be_bytes()));
            assert_eq!(s.max_key_of_kind(3).unwrap(), want.keys().last().cloned());
            assert_eq!(s.max_key_of_kind(2).unwrap(), None);
        };
        check(&s);
        for (k, v) in &want {
            assert_eq!(s.get(3, k).await.unwrap().as_ref(), Some(v));
        }
        s.close().await.unwrap();
        // Through the checkpoint, then through a scan of the segments.
        for opts in [ckpt_opts(), small_opts()] {
            let s = Store::open(&dir, opts).await.unwrap();
            check(&s);
            for (k, v) in &want {
                assert_eq!(s.get(3, k).await.unwrap().as_ref(), Some(v));
            }
            s.close().await.unwrap();
        }
        let mut s = Store::open(&dir, ckpt_opts()).await.unwrap();
        // 8-byte keys only: the greatest comes from the vector, then from the map.
        for i in (0..100u64).rev() {
            s.put(4, &i.to_be_bytes(), b"n").await.unwrap();
        }
        assert_eq!(
            s.max_key_of_kind(4).unwrap(),
            Some(99u64.to_be_bytes().to_vec())
        );
        s.put(4, &(1u64 << 50).to_be_bytes(), b"far").await.unwrap();
        assert_eq!(
            s.max_key_of_kind(4).unwrap(),
            Some((1u64 << 50).to_be_bytes().to_vec())
        );
        s.close().await.unwrap();
    });
}

fn loc_of(i: u64) -> Loc {
    Loc {
        seg: (i % 7) as u32,
        off: i.wrapping_mul(3),
        len: 1 + (i % 1000) as u32,
    }
}

/// Locations that fit the vector's 12 bytes, and ones just past or at its widths.
fn loc_any(x: u64) -> Loc {
    let len = 1 + (x % 1000) as u32;
    match (x >> 10) % 4 {
        0 => Loc {
            seg: (x % 9) as u32,
            off: (x >> 12) % (1 << 40),
            len,
        },
        1 => Loc {
            seg: 3,
            off: (1 << 40) + (x >> 30),
            len,
        },
        2 => Loc {
            seg: (1 << 24) + (x % 5) as u32,
            off: x % 1000,
            len,
        },
        _ => Loc {
            seg: (1 << 24) - 1,
            off: (1 << 40) - 1 - (x % 3),
            len: u32::MAX - (x % 2) as u32,
        },
    }
}

#[test]
fn dense_locations_pack_and_unpack_or_are_refused() {
    for x in 0..10_000u64 {
        let l = loc_any(x.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        match DenseLoc::pack(l) {
            Some(d) => {
                assert!(!d.is_hole());
                assert_eq!(d.unpack(), Some(l));
            }
            None => assert!(l.seg >= 1 << 24 || l.off >= 1 << 40),
        }
    }
    assert_eq!(DenseLoc::HOLE.unpack(), None);
}

/// A kind's index against a map: every key found with its newest location, listed once.
fn check_kind_map(m: &KindMap, model: &BTreeMap<u64, Loc>) {
    assert_eq!(m.len(), model.len());
    for (k, l) in model {
        assert_eq!(m.get(&k.to_be_bytes()), Some(*l), "key {k}");
        assert!(m.contains_key(&k.to_be_bytes()));
    }
    let mut listed: Vec<(u64, Loc)> = m
        .full_entries()
        .map(|(k, l)| (u64::from_be_bytes(k[..].try_into().unwrap()), l))
        .collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        model.iter().map(|(k, l)| (*k, *l)).collect::<Vec<_>>()
    );
    assert_eq!(m.values().count(), model.len());
}

#[test]
fn block_numbers_in_any_order_end_up_in_the_dense_index() {
    let mut m = KindMap::default();
    let mut model = BTreeMap::new();
    // Batches from the top down, as a header sync may store them, and a few keys far
    // away that must not make the vector huge.
    for far in [1u64 << 39, 1 << 41, u64::MAX] {
        assert_eq!(m.insert(&far.to_be_bytes(), loc_of(far)), None);
        model.insert(far, loc_of(far));
    }
    for batch in (0..200u64).rev() {
        for k in batch * 500..(batch + 1) * 500 {
            assert_eq!(m.insert(&k.to_be_bytes(), loc_of(k)), None);
            model.insert(k, loc_of(k));
        }
    }
    check_kind_map(&m, &model);
    assert!(m.dense.len() <= 1 << 17, "{}", m.dense.len());
    assert_eq!(m.dense_len, 100_000);
    assert_eq!(m.short.len(), 3);
    // Overwrites return the old location.
    assert_eq!(m.insert(&5u64.to_be_bytes(), loc_of(9)), Some(loc_of(5)));
    model.insert(5, loc_of(9));
    check_kind_map(&m, &model);
    assert!(!m.contains_key(&100_000u64.to_be_bytes()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn the_index_of_eight_byte_keys_is_a_map(
        ops in prop::collection::vec((0u8..3, 0u64..5000, any::<u64>()), 1..3000)
    ) {
        let mut m = KindMap::default();
        let mut model = BTreeMap::new();
        for (shape, k, far) in ops {
            // Mostly near keys, some far ones.
            let k = if shape == 0 { far } else { k };
            let l = loc_any(k ^ far);
            prop_assert_eq!(m.insert(&k.to_be_bytes(), l), model.insert(k, l));
        }
        check_kind_map(&m, &model);
    }
}

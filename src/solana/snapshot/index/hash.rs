//! Keeping the live set's LtHash exact: at totals time each owner mixes out the
//! superseded versions it recorded, read back from the mapped files or with io_uring reads.

use std::cell::RefCell;
use std::rc::Rc;

use catchup_solana::appendvec::account_at;

use super::shard::{Loser, State};
use super::RETRACT_PREFETCH_BYTES;

impl State {
    /// Mix out the elements of every loser recorded so far (their files are complete).
    pub(super) fn retract_losers(&mut self) {
        let t = std::time::Instant::now();
        self.retract_losers_inner();
        self.retract_ns += t.elapsed().as_nanos() as u64;
    }

    fn retract_losers_inner(&mut self) {
        let mut losers = std::mem::take(&mut self.losers);
        // The files were written with O_DIRECT, so these reads go to the device: visit
        // them in file order and hint every range first, so the reads overlap instead of
        // faulting one page at a time.
        losers.sort_unstable_by_key(|l| (l.gen, l.slot, l.id, l.offset));
        for l in &losers {
            match self.map(l.gen, l.slot, l.id) {
                Ok(m) => m.prefetch(l.offset as usize, RETRACT_PREFETCH_BYTES),
                Err(e) => return self.fail(e),
            }
        }
        for l in losers {
            let map = match self.map(l.gen, l.slot, l.id) {
                Ok(m) => m,
                Err(e) => return self.fail(e),
            };
            match account_at(map.bytes(), map.len() as u64, l.offset) {
                Ok(a) => {
                    self.lt_hash.mix_out_account(
                        a.lamports,
                        a.data,
                        a.executable,
                        a.owner,
                        a.pubkey,
                    );
                    self.retracted += 1;
                }
                Err(e) => return self.fail(format!("accounts/{}.{}: {e}", l.slot, l.id)),
            }
        }
    }
}

/// Reads of superseded entries a shard keeps in flight when it retracts them with DMA.
pub const RETRACT_READS_IN_FLIGHT: usize = 64;
/// Bytes read per superseded entry (header and most data; a longer entry is read again
/// at its exact size).
pub const RETRACT_READ_BYTES: usize = 1024;

type RetractRead = (Loser, std::io::Result<Vec<u8>>);

/// Mix out the recorded losers with io_uring reads, many in flight (the files were
/// written with O_DIRECT, so the page cache does not hold them and one synchronous page
/// fault at a time would serialise on the device). Files are opened one at a time,
/// losers read in file order.
pub(super) async fn retract_losers_dma(state: &Rc<RefCell<State>>) {
    let t = std::time::Instant::now();
    let (mut losers, dirs) = {
        let mut st = state.borrow_mut();
        (std::mem::take(&mut st.losers), st.dirs.clone())
    };
    losers.sort_unstable_by_key(|l| (l.gen, l.slot, l.id, l.offset));
    let mut i = 0;
    while i < losers.len() {
        let first = losers[i];
        let end = i + losers[i..]
            .iter()
            .take_while(|l| (l.gen, l.slot, l.id) == (first.gen, first.slot, first.id))
            .count();
        let group = &losers[i..end];
        i = end;
        let Some(dir) = dirs.get(&first.gen) else {
            state.borrow_mut().fail(format!(
                "accounts/{}.{}: no directory for snapshot {}",
                first.slot, first.id, first.gen
            ));
            return;
        };
        let path = dir.join(format!("{}.{}", first.slot, first.id));
        let file = match glommio::io::BufferedFile::open(&path).await {
            Ok(f) => {
                // Scattered reads: no readahead (it would pull in the whole file).
                use std::os::fd::AsRawFd;
                // SAFETY: the descriptor is open for the lifetime of `f`; fadvise only
                // sets a hint on it.
                unsafe {
                    libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM);
                }
                Rc::new(f)
            }
            Err(e) => {
                state
                    .borrow_mut()
                    .fail(format!("read {}: {e}", path.display()));
                return;
            }
        };
        let mut in_flight: std::collections::VecDeque<glommio::Task<RetractRead>> =
            Default::default();
        let mut next = 0;
        while next < group.len() || !in_flight.is_empty() {
            while next < group.len() && in_flight.len() < RETRACT_READS_IN_FLIGHT {
                let l = group[next];
                next += 1;
                let f = file.clone();
                in_flight.push_back(glommio::spawn_local(async move {
                    let r = f
                        .read_at(l.offset, RETRACT_READ_BYTES)
                        .await
                        .map(|b| b.to_vec())
                        .map_err(std::io::Error::from);
                    (l, r)
                }));
            }
            let Some(task) = in_flight.pop_front() else {
                break;
            };
            let (l, r) = task.await;
            let mut bytes = match r {
                Ok(b) => b,
                Err(e) => {
                    state
                        .borrow_mut()
                        .fail(format!("read {}: {e}", path.display()));
                    return;
                }
            };
            // A longer entry: read it whole.
            let hdr = catchup_solana::appendvec::ENTRY_HEADER_BYTES;
            if bytes.len() >= hdr {
                let data_len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
                let need =
                    hdr as u64 + data_len.min(catchup_solana::appendvec::MAX_ACCOUNT_DATA_BYTES);
                if need > bytes.len() as u64 {
                    match file.read_at(l.offset, need as usize).await {
                        Ok(b) => bytes = b.to_vec(),
                        Err(e) => {
                            state
                                .borrow_mut()
                                .fail(format!("read {}: {e}", path.display()));
                            return;
                        }
                    }
                }
            }
            let mut st = state.borrow_mut();
            match account_at(&bytes, bytes.len() as u64, 0) {
                Ok(a) => {
                    st.lt_hash
                        .mix_out_account(a.lamports, a.data, a.executable, a.owner, a.pubkey);
                    st.retracted += 1;
                }
                Err(e) => {
                    st.fail(format!(
                        "accounts/{}.{}: {}",
                        l.slot,
                        l.id,
                        e.to_string()
                            .replace("offset 0", &format!("offset {}", l.offset))
                    ));
                    return;
                }
            }
        }
        drop(in_flight);
        if let Ok(f) = Rc::try_unwrap(file) {
            let _ = f.close().await;
        }
    }
    state.borrow_mut().retract_ns += t.elapsed().as_nanos() as u64;
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{file, stream};
    use super::super::ShardSet;
    use catchup_solana::LtHash;

    #[test]
    fn newest_wins_and_sums_follow_the_live_set() {
        let (k1, k2, k3) = ([1u8; 32], [0x80u8; 32], [0x40u8; 32]);
        let a = file(&[
            // Longer than one retraction read: re-read whole when it is mixed out.
            (k1, 10, &[5u8; 3000]),
            (k2, 20, b"old"),
            (k1, 11, b"v2"),
            (k3, 0, b""),
        ]);
        let b = file(&[(k2, 21, b"new")]);
        let c = file(&[(k1, 9, b"v0")]);
        // Both runtimes: glommio (DMA writes, io_uring retraction reads) when it starts
        // here, and the plain-thread fallback (write(2), mmap reads).
        for (shards, threads) in [(1, false), (2, false), (3, false), (1, true), (3, true)] {
            for (piece, late) in [(7, false), (1 << 20, false), (100, true)] {
                let dir = tempfile::tempdir().unwrap();
                let mut set = if threads {
                    ShardSet::start_on_threads(shards, 2, &catchup_shards::allowed_cores()).unwrap()
                } else {
                    ShardSet::start(shards).unwrap()
                };
                if !threads && std::env::var("CI").as_deref() == Ok("true") {
                    assert_eq!(set.runtime(), "glommio", "CI runs the io_uring path");
                }
                set.set_dir(0, dir.path()).unwrap();
                stream(&mut set, (5, 0), &a, piece, late);
                stream(&mut set, (6, 1), &b, piece, late);
                stream(&mut set, (4, 2), &c, piece, late);
                let totals = set.totals().unwrap();
                let g1 = set.get(&k1).unwrap().unwrap();
                assert_eq!(
                    (g1.lamports, g1.data.as_slice(), g1.location.slot),
                    (11, &b"v2"[..], 5)
                );
                let g2 = set.get(&k2).unwrap().unwrap();
                assert_eq!((g2.lamports, g2.location.slot), (21, 6));
                assert!(set.get(&[7; 32]).unwrap().is_none());
                let mut lt = LtHash::identity();
                let mut cap = 0;
                for t in &totals {
                    assert!(t.error.is_none(), "{:?}", t.error);
                    lt.mix_in(&t.lt_hash);
                    cap += t.capitalization;
                }
                let mut want = LtHash::of_account(11, b"v2", false, &[9; 32], &k1);
                want.mix_in(&LtHash::of_account(21, b"new", false, &[9; 32], &k2));
                assert_eq!(
                    lt, want,
                    "{shards} shards, piece {piece}, threads {threads}"
                );
                assert_eq!(cap, 32);
                assert_eq!(totals.iter().map(|t| t.accounts_total).sum::<u64>(), 6);
                assert_eq!(totals.iter().map(|t| t.scanned_accounts).sum::<u64>(), 6);
                assert_eq!(totals.iter().map(|t| t.accounts_live).sum::<u64>(), 3);
                assert_eq!(totals.iter().map(|t| t.zero_lamport_live).sum::<u64>(), 1);
                // v1, old and v0 lost; each was hashed once and mixed out once.
                assert_eq!(totals.iter().map(|t| t.retracted).sum::<u64>(), 3);
                assert_eq!(totals.iter().map(|t| t.files_written).sum::<u64>(), 3);
                assert_eq!(set.all().unwrap().len(), 3);
                // A second totals request retracts nothing twice.
                let again = set.totals().unwrap();
                let mut lt2 = LtHash::identity();
                for t in &again {
                    lt2.mix_in(&t.lt_hash);
                }
                assert_eq!(lt2, want);
                for (name, bytes) in [("5.0", &a), ("6.1", &b), ("4.2", &c)] {
                    assert_eq!(&std::fs::read(dir.path().join(name)).unwrap(), bytes);
                }
            }
        }
    }
}

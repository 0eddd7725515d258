//! Keeping the live set exact: each owner tells apart the entries whose fingerprint was
//! already taken (another version of the same pubkey, or a different pubkey), then mixes
//! out the superseded versions it recorded and takes their lamports out of the sums.
//! Both read the storage files back.
//!
//! - On the glommio runtime a background task does this while files stream, with
//!   io_uring reads (many in flight), for every piece of work whose file the writer has
//!   finished ([`State::file_complete`]); what is left runs at totals. So the reads
//!   overlap the download instead of following its last byte.
//! - On plain threads everything runs at totals, from memory maps.

use std::cell::RefCell;
use std::rc::Rc;

use catchup_solana::appendvec::{account_at, StoredAccount};

use super::shard::State;
use super::table::Loc;
use super::RETRACT_PREFETCH_BYTES;

/// What to do with each account read back.
type OnAccount<'a> = dyn FnMut(&mut State, usize, &StoredAccount<'_>) + 'a;

/// The pending entries and, for each, the table location whose pubkey must be read.
fn pending_reads(st: &mut State) -> (Vec<super::table::Pending>, Vec<(Loc, usize)>) {
    let pending = std::mem::take(&mut st.pending);
    let mut reads = Vec::with_capacity(pending.len());
    for (i, p) in pending.iter().enumerate() {
        // The fingerprint was in the table when the entry was set aside; slots stay.
        if let Some(slot) = st.table.find(st.fingerprint.of(&p.key)) {
            let at = st.table.loc(slot);
            if st.readable(at.file) {
                reads.push((at, i));
            } else {
                // The table's version moved to a file still streaming since the entry
                // was set aside: wait for that file.
                st.set_aside(*p, at.file);
            }
        }
    }
    reads.sort_unstable();
    (pending, reads)
}

/// For each pending entry, the location its read is planned at.
fn read_locations(reads: &[(Loc, usize)], pending: usize) -> Vec<Loc> {
    let mut at = vec![Loc::default(); pending];
    for &(l, i) in reads {
        at[i] = l;
    }
    at
}

impl State {
    /// Mix out the elements of every loser recorded so far (their files are complete).
    pub(super) fn retract_losers(&mut self) {
        let t = std::time::Instant::now();
        let losers = std::mem::take(&mut self.losers);
        let mut reads: Vec<(Loc, usize)> = losers.iter().map(|l| l.loc).zip(0..).collect();
        reads.sort_unstable();
        if let Err(e) = self.read_mapped(&reads, &mut |st, i, a| st.retract(losers[i].subtract, a))
        {
            self.fail(e);
        }
        self.retract_ns += t.elapsed().as_nanos() as u64;
    }

    /// Decide the entries set aside for a taken fingerprint (their files are complete).
    pub(super) fn resolve_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let t = std::time::Instant::now();
        let (pending, reads) = pending_reads(self);
        let at = read_locations(&reads, pending.len());
        if let Err(e) = self.read_mapped(&reads, &mut |st, i, a| {
            st.resolve_one(&pending[i], at[i], a)
        }) {
            self.fail(e);
        }
        self.retract_ns += t.elapsed().as_nanos() as u64;
    }

    /// Take one superseded version out of the live set.
    pub(super) fn retract(&mut self, subtract: bool, a: &StoredAccount<'_>) {
        if subtract {
            self.sub_sums(a.lamports, a.data.len() as u64);
        }
        if a.lamports != 0 {
            self.lt_hash
                .mix_out_account(a.lamports, a.data, a.executable, a.owner, a.pubkey);
            self.retracted += 1;
            if !self.draining && self.wake.is_some() {
                self.retracted_in_stream += 1;
            }
        }
    }

    /// Read the accounts at `reads` (sorted by location; the `usize` is passed to `f`) from
    /// memory maps, one file at a time, every range of a file hinted before it is read.
    fn read_mapped(&mut self, reads: &[(Loc, usize)], f: &mut OnAccount<'_>) -> Result<(), String> {
        // The files were written with O_DIRECT, so these reads go to the device: hint every
        // range of a file first, so the reads overlap instead of faulting one page at a time.
        for group in reads.chunk_by(|a, b| a.0.file == b.0.file) {
            let file = group[0].0.file;
            let map = self.map(file)?;
            for (l, _) in group {
                map.prefetch(l.offset() as usize, RETRACT_PREFETCH_BYTES);
            }
            for &(l, i) in group {
                match account_at(map.bytes(), map.len() as u64, l.offset()) {
                    Ok(a) => f(self, i, &a),
                    Err(e) => return Err(format!("{}: {e}", self.file_name(file))),
                }
            }
        }
        Ok(())
    }
}

/// How long the background task lets work gather after a wake-up before it reads, so
/// that its reads go out in batches sorted by file and offset.
pub const BACKGROUND_GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// While files stream: resolve the pending entries and retract the losers whose files are
/// complete, in batches. `gate` is held for each batch, and by totals, so that totals
/// never runs beside a batch whose work has left the shard's lists.
pub(super) async fn background_task(
    state: Rc<RefCell<State>>,
    wake: flume::Receiver<()>,
    gate: Rc<glommio::sync::Semaphore>,
) {
    while wake.recv_async().await.is_ok() {
        if state.borrow().closing {
            break;
        }
        glommio::timer::sleep(BACKGROUND_GATHER).await;
        loop {
            let Ok(_batch) = gate.acquire_permit(1).await else {
                return;
            };
            let (pending, losers, closing) = {
                let st = state.borrow();
                (!st.pending.is_empty(), !st.losers.is_empty(), st.closing)
            };
            if closing || !(pending || losers) {
                break;
            }
            if pending {
                resolve_pending_dma(&state).await;
            }
            if !state.borrow().losers.is_empty() {
                retract_losers_dma(&state).await;
            }
        }
    }
}

/// Reads of superseded entries a shard keeps in flight when it retracts them with DMA.
pub const RETRACT_READS_IN_FLIGHT: usize = 64;
/// Bytes read per superseded entry (header and most data; a longer entry is read again
/// at its exact size).
pub const RETRACT_READ_BYTES: usize = 1024;

type Read = (Loc, usize, std::io::Result<Vec<u8>>);

/// [`State::resolve_pending`] with io_uring reads.
pub(super) async fn resolve_pending_dma(state: &Rc<RefCell<State>>) {
    if state.borrow().pending.is_empty() {
        return;
    }
    let t = std::time::Instant::now();
    let (pending, reads) = pending_reads(&mut state.borrow_mut());
    let at = read_locations(&reads, pending.len());
    read_dma(state, &reads, &mut |st, i, a| {
        st.resolve_one(&pending[i], at[i], a)
    })
    .await;
    state.borrow_mut().retract_ns += t.elapsed().as_nanos() as u64;
}

/// Mix out the recorded losers with io_uring reads, many in flight (the files were
/// written with O_DIRECT, so the page cache does not hold them and one synchronous page
/// fault at a time would serialise on the device).
pub(super) async fn retract_losers_dma(state: &Rc<RefCell<State>>) {
    let t = std::time::Instant::now();
    let losers = std::mem::take(&mut state.borrow_mut().losers);
    let mut reads: Vec<(Loc, usize)> = losers.iter().map(|l| l.loc).zip(0..).collect();
    reads.sort_unstable();
    read_dma(state, &reads, &mut |st, i, a| {
        st.retract(losers[i].subtract, a)
    })
    .await;
    state.borrow_mut().retract_ns += t.elapsed().as_nanos() as u64;
}

/// Read the accounts at `reads` (sorted by location) with io_uring, files opened one at a
/// time, [`RETRACT_READS_IN_FLIGHT`] reads in flight. False (the error recorded) when a
/// read fails.
async fn read_dma(
    state: &Rc<RefCell<State>>,
    reads: &[(Loc, usize)],
    f: &mut OnAccount<'_>,
) -> bool {
    for group in reads.chunk_by(|a, b| a.0.file == b.0.file) {
        let file_ix = group[0].0.file;
        let (path, name) = {
            let st = state.borrow();
            let fr = st.files[file_ix as usize];
            (st.path(fr.gen, fr.slot, fr.id), st.file_name(file_ix))
        };
        let Some(path) = path else {
            state
                .borrow_mut()
                .fail(format!("{name}: no directory for its snapshot"));
            return false;
        };
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
                return false;
            }
        };
        let mut in_flight: std::collections::VecDeque<glommio::Task<Read>> = Default::default();
        let mut next = 0;
        while next < group.len() || !in_flight.is_empty() {
            while next < group.len() && in_flight.len() < RETRACT_READS_IN_FLIGHT {
                let (l, i) = group[next];
                next += 1;
                let fh = file.clone();
                in_flight.push_back(glommio::spawn_local(async move {
                    let r = fh
                        .read_at(l.offset(), RETRACT_READ_BYTES)
                        .await
                        .map(|b| b.to_vec())
                        .map_err(std::io::Error::from);
                    (l, i, r)
                }));
            }
            let Some(task) = in_flight.pop_front() else {
                break;
            };
            let (l, i, r) = task.await;
            let mut bytes = match r {
                Ok(b) => b,
                Err(e) => {
                    state
                        .borrow_mut()
                        .fail(format!("read {}: {e}", path.display()));
                    return false;
                }
            };
            // A longer entry: read it whole.
            let hdr = catchup_solana::appendvec::ENTRY_HEADER_BYTES;
            if bytes.len() >= hdr {
                let data_len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
                let need =
                    hdr as u64 + data_len.min(catchup_solana::appendvec::MAX_ACCOUNT_DATA_BYTES);
                if need > bytes.len() as u64 {
                    match file.read_at(l.offset(), need as usize).await {
                        Ok(b) => bytes = b.to_vec(),
                        Err(e) => {
                            state
                                .borrow_mut()
                                .fail(format!("read {}: {e}", path.display()));
                            return false;
                        }
                    }
                }
            }
            let mut st = state.borrow_mut();
            match account_at(&bytes, bytes.len() as u64, 0) {
                Ok(a) => f(&mut st, i, &a),
                Err(e) => {
                    st.fail(format!(
                        "{name}: {}",
                        e.to_string()
                            .replace("offset 0", &format!("offset {}", l.offset()))
                    ));
                    return false;
                }
            }
        }
        drop(in_flight);
        if let Ok(f) = Rc::try_unwrap(file) {
            let _ = f.close().await;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::shard::State;
    use super::super::test_support::{file, stream};
    use super::super::{IndexConfig, ShardSet};
    use catchup_solana::appendvec::iter_accounts;
    use catchup_solana::LtHash;

    /// Scan a whole file into a one-shard state, as its pieces would be.
    fn scan(st: &mut State, slot: u64, bytes: &[u8]) {
        let mut out = vec![Vec::new()];
        for a in iter_accounts(bytes, bytes.len() as u64).unwrap() {
            st.scanned(&a.unwrap(), 0, slot, 0, &mut out);
        }
        assert!(out[0].is_empty(), "one shard owns every entry");
    }

    #[test]
    fn read_back_waits_for_its_file_and_runs_while_files_stream() {
        let dir = tempfile::tempdir().unwrap();
        let k = [3u8; 32];
        let (a, b, c) = (
            file(&[(k, 10, b"old")]),
            file(&[(k, 11, b"new")]),
            file(&[(k, 9, b"older")]),
        );
        for (name, bytes) in [("5.0", &a), ("6.0", &b), ("4.0", &c)] {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let mut st = State::new(0, 1, &IndexConfig::default(), Default::default());
        st.dirs.insert(0, dir.path().into());
        let (wake, woken) = flume::bounded(1);
        st.wake = Some(wake);

        // v10 in 5.0, then v11 in 6.0: telling them apart reads 5.0, still streaming.
        scan(&mut st, 5, &a);
        scan(&mut st, 6, &b);
        assert!(st.pending.is_empty() && woken.try_recv().is_err());
        st.file_complete(0, 6, 0);
        assert!(st.pending.is_empty(), "waits for 5.0, not 6.0");
        st.file_complete(0, 5, 0);
        assert_eq!(st.pending.len(), 1);
        assert!(woken.try_recv().is_ok(), "the background task is woken");
        st.resolve_pending();
        assert_eq!((st.retracted, st.retracted_in_stream), (1, 1));

        // v9 in 4.0 arrives late: it is read from 6.0 (complete, so ready at once), loses,
        // and its own element waits for 4.0.
        scan(&mut st, 4, &c);
        assert_eq!(st.pending.len(), 1);
        st.resolve_pending();
        assert!(st.losers.is_empty(), "4.0 is still streaming");
        st.file_complete(0, 4, 0);
        assert_eq!(st.losers.len(), 1);
        st.retract_losers();
        assert_eq!((st.retracted, st.retracted_in_stream), (2, 2));

        let t = st.totals();
        assert!(t.error.is_none(), "{:?}", t.error);
        assert_eq!(
            t.lt_hash,
            LtHash::of_account(11, b"new", false, &[9; 32], &k)
        );
        assert_eq!((t.capitalization, t.accounts_live, t.retracted), (11, 1, 2));
        // After totals this generation's files are read at the next totals only.
        assert!((0..3).all(|f| !st.readable(f)));
    }

    #[test]
    fn what_still_waits_at_totals_is_read_then() {
        let dir = tempfile::tempdir().unwrap();
        let k = [4u8; 32];
        let (a, b) = (file(&[(k, 10, b"old")]), file(&[(k, 11, b"new")]));
        std::fs::write(dir.path().join("5.0"), &a).unwrap();
        std::fs::write(dir.path().join("6.0"), &b).unwrap();
        let mut st = State::new(0, 1, &IndexConfig::default(), Default::default());
        st.dirs.insert(0, dir.path().into());
        st.wake = Some(flume::bounded(1).0);
        scan(&mut st, 6, &b);
        scan(&mut st, 5, &a);
        assert_eq!(st.waiting.len(), 1);
        let t = st.totals();
        assert!(t.error.is_none(), "{:?}", t.error);
        assert_eq!(
            t.lt_hash,
            LtHash::of_account(11, b"new", false, &[9; 32], &k)
        );
        assert_eq!((t.retracted, t.retracted_in_stream), (1, 0));
        assert!(st.waiting.is_empty());
    }

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

//! One shard's slice of the index: the entries it owns (newest version wins), the
//! live-set sums, the superseded versions it must retract, and the shard's start.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use catchup_io::mmap::MappedFile;
use catchup_solana::appendvec::{account_at, StoredAccount};
use catchup_solana::LtHash;

use super::hash::background_task;
use super::inbox::inbox_task;
use super::maps::MapCache;
use super::mesh::{mesh_task, Links};
use super::table::{hash_map_bytes, Fingerprinter, KeyTable, Loc, Pending, SideTable};
use super::{
    AccountLocation, AccountRecord, Cmd, IndexConfig, IndexEntry, ShardTotals, SHARD_IO_LATENCY,
};

/// A storage file some entry of this shard refers to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FileRef {
    pub(super) gen: u32,
    pub(super) slot: u64,
    pub(super) id: u64,
}

/// A superseded version whose LtHash element must be mixed out; with `subtract` its
/// lamports, zero-lamport count and data bytes also leave the live sums (they are read
/// from the file with the element).
#[derive(Clone, Copy)]
pub(super) struct Loser {
    pub(super) loc: Loc,
    pub(super) subtract: bool,
}

/// Work that must read a storage file not yet complete: done when the file is.
#[derive(Default)]
pub(super) struct Waiting {
    pub(super) pending: Vec<Pending>,
    pub(super) losers: Vec<Loser>,
}

/// Where a version in the index is held: a slot of the fingerprint table, or the side
/// table of pubkeys whose fingerprint another pubkey holds.
enum At {
    Main(usize),
    Side([u8; 32]),
}

/// Errors seen by any shard, visible to the feeding thread at once.
#[derive(Default)]
pub(super) struct SharedError {
    set: AtomicBool,
    first: Mutex<Option<String>>,
}

impl SharedError {
    fn record(&self, e: String) {
        if let Ok(mut f) = self.first.lock() {
            if f.is_none() {
                *f = Some(e);
            }
        }
        self.set.store(true, Ordering::Release);
    }
    pub(super) fn get(&self) -> Option<String> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.first.lock().ok().and_then(|f| f.clone())
    }
}

/// One shard's state, shared by its two tasks (inbox and mesh) on the same thread.
pub(super) struct State {
    pub(super) shard: usize,
    pub(super) shards: usize,
    pub(super) dirs: HashMap<u32, PathBuf>,
    /// Storage files by index ([`Loc::file`]).
    pub(super) files: Vec<FileRef>,
    /// File → index, for the files of the snapshot being loaded (dropped at totals: a
    /// generation's files all stream before its totals).
    pub(super) file_ids: HashMap<FileRef, u32, ahash::RandomState>,
    pub(super) last_file: Option<(FileRef, u32)>,
    /// Files interned since the last totals start here.
    pub(super) new_files_from: usize,
    /// By file index: written in full during this generation's stream, so it can be read
    /// back while other files stream (cleared at totals: a file of an earlier generation
    /// may be renamed, and its later losers wait for the next totals).
    pub(super) complete: Vec<bool>,
    /// Pending entries and losers by the file they must read, until it is complete.
    pub(super) waiting: HashMap<u32, Waiting, ahash::RandomState>,
    /// Wakes the background task that resolves and retracts while files stream; `None`
    /// where everything waits for totals (the plain-thread runtime).
    pub(super) wake: Option<flume::Sender<()>>,
    /// Every file counts as complete (at totals, when nothing streams).
    pub(super) draining: bool,
    /// The inbox closed: the background task ends.
    pub(super) closing: bool,
    pub(super) maps: MapCache,
    /// Fingerprint → newest version of each pubkey this shard owns.
    pub(super) table: KeyTable,
    /// Exact entries for pubkeys whose fingerprint another pubkey holds in `table`.
    pub(super) side: SideTable,
    pub(super) fingerprint: Fingerprinter,
    /// Entries whose fingerprint was in the table, ready to be told apart: the file
    /// holding the table's version is complete (resolved in the background while files
    /// stream, or at totals).
    pub(super) pending: Vec<Pending>,
    pub(super) lt_hash: LtHash,
    pub(super) lamports_live: u128,
    pub(super) zero_lamport_live: u64,
    pub(super) data_bytes_live: u64,
    pub(super) losers: Vec<Loser>,
    pub(super) accounts_total: u64,
    pub(super) owned_bytes: u64,
    pub(super) scanned_accounts: u64,
    pub(super) scanned_bytes: u64,
    pub(super) files_written: u64,
    pub(super) retracted: u64,
    pub(super) write_mode: String,
    pub(super) scan_ns: u64,
    pub(super) write_ns: u64,
    pub(super) idle_ns: u64,
    pub(super) mesh_wait_ns: u64,
    pub(super) retract_ns: u64,
    /// Of `retract_ns`, the part spent at totals (after the last file arrived).
    pub(super) retract_tail_ns: u64,
    /// Superseded versions mixed out while files were still streaming.
    pub(super) retracted_in_stream: u64,
    pub(super) markers: HashMap<u64, usize>,
    pub(super) error: Option<String>,
    pub(super) shared_error: Arc<SharedError>,
}

impl State {
    pub(super) fn new(
        shard: usize,
        shards: usize,
        config: &IndexConfig,
        shared_error: Arc<SharedError>,
    ) -> Self {
        State {
            shard,
            shards,
            dirs: HashMap::new(),
            files: Vec::new(),
            file_ids: HashMap::with_hasher(ahash::RandomState::new()),
            last_file: None,
            new_files_from: 0,
            complete: Vec::new(),
            waiting: HashMap::with_hasher(ahash::RandomState::new()),
            wake: None,
            draining: false,
            closing: false,
            maps: MapCache::new(config.max_open_maps),
            table: KeyTable::default(),
            side: HashMap::with_hasher(ahash::RandomState::new()),
            fingerprint: Fingerprinter::new(config.weak_fingerprint()),
            pending: Vec::new(),
            lt_hash: LtHash::identity(),
            lamports_live: 0,
            zero_lamport_live: 0,
            data_bytes_live: 0,
            losers: Vec::new(),
            accounts_total: 0,
            owned_bytes: 0,
            scanned_accounts: 0,
            scanned_bytes: 0,
            files_written: 0,
            retracted: 0,
            write_mode: "no files written".into(),
            scan_ns: 0,
            write_ns: 0,
            idle_ns: 0,
            mesh_wait_ns: 0,
            retract_ns: 0,
            retract_tail_ns: 0,
            retracted_in_stream: 0,
            markers: HashMap::new(),
            error: None,
            shared_error,
        }
    }

    pub(super) fn fail(&mut self, e: String) {
        self.shared_error.record(e.clone());
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    pub(super) fn path(&self, gen: u32, slot: u64, id: u64) -> Option<PathBuf> {
        self.dirs.get(&gen).map(|d| d.join(format!("{slot}.{id}")))
    }

    /// `accounts/<slot>.<id>` of a file index, for messages.
    pub(super) fn file_name(&self, file: u32) -> String {
        match self.files.get(file as usize) {
            Some(f) => format!("accounts/{}.{}", f.slot, f.id),
            None => format!("storage file #{file}"),
        }
    }

    /// The index of a storage file in this shard's table, added when new.
    pub(super) fn intern(&mut self, gen: u32, slot: u64, id: u64) -> Result<u32, String> {
        let f = FileRef { gen, slot, id };
        if let Some((last, i)) = self.last_file {
            if last == f {
                return Ok(i);
            }
        }
        let i = match self.file_ids.get(&f) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.files.len()).map_err(|_| {
                    format!("accounts/{slot}.{id}: more than 2^32 storage files in one index shard")
                })?;
                self.files.push(f);
                self.complete.push(false);
                self.file_ids.insert(f, i);
                i
            }
        };
        self.last_file = Some((f, i));
        Ok(i)
    }

    /// The memory map of a storage file (mapped again if it was evicted).
    pub(super) fn map(&mut self, file: u32) -> Result<Rc<MappedFile>, String> {
        if let Some(m) = self.maps.get(file) {
            return Ok(m);
        }
        let f = *self
            .files
            .get(file as usize)
            .ok_or_else(|| format!("storage file #{file} unknown to shard {}", self.shard))?;
        let path = self.path(f.gen, f.slot, f.id).ok_or_else(|| {
            format!(
                "accounts/{}.{}: no directory for snapshot {}",
                f.slot, f.id, f.gen
            )
        })?;
        let m = Rc::new(MappedFile::open(&path).map_err(|e| e.to_string())?);
        self.maps.insert(file, m.clone());
        Ok(m)
    }

    /// (slot, file id, offset): the newest wins.
    fn order(&self, l: Loc) -> (u64, u64, u32) {
        let f = &self.files[l.file as usize];
        (f.slot, f.id, l.off8)
    }

    /// Index one entry at its owner: newest (slot, file id, offset) wins.
    pub(super) fn apply(&mut self, e: &IndexEntry) {
        let file = match self.intern(e.gen, e.slot, e.id) {
            Ok(f) => f,
            Err(x) => return self.fail(x),
        };
        if e.offset % 8 != 0 || e.offset / 8 > u32::MAX as u64 {
            return self.fail(format!(
                "accounts/{}.{}: entry at offset {} is not 8-aligned or beyond the index's 32 GiB per file",
                e.slot, e.id, e.offset
            ));
        }
        let loc = Loc {
            file,
            off8: (e.offset / 8) as u32,
        };
        self.accounts_total += 1;
        self.owned_bytes += e.stored_bytes();
        // Every version joins the sums as it arrives; superseded ones leave again.
        self.add_sums(e.lamports, e.data_len as u64);
        if !self.side.is_empty() && self.side.contains_key(&e.pubkey) {
            return self.update(At::Side(e.pubkey), loc, e.lamports, e.data_len as u64);
        }
        let fp = self.fingerprint.of(&e.pubkey);
        match self.table.find(fp) {
            None => self.table.insert_new(fp, loc),
            // Another version of this pubkey, or another pubkey with the same fingerprint:
            // told apart once the files are complete.
            Some(slot) => {
                let read_at = self.table.loc(slot);
                self.set_aside(
                    Pending {
                        key: e.pubkey,
                        loc,
                        lamports: e.lamports,
                        data_len: e.data_len,
                    },
                    read_at.file,
                )
            }
        }
    }

    /// Whether the storage file `file` can be read back now.
    pub(super) fn readable(&self, file: u32) -> bool {
        self.wake.is_none()
            || self.draining
            || self.complete.get(file as usize).copied().unwrap_or(false)
    }

    fn poke(&self) {
        if let Some(w) = &self.wake {
            // A full channel already holds a wake-up.
            let _ = w.try_send(());
        }
    }

    /// Keep a pending entry whose table version is in `file` until it can be read.
    pub(super) fn set_aside(&mut self, p: Pending, file: u32) {
        if self.wake.is_none() || self.readable(file) {
            self.pending.push(p);
            if self.pending.len() == 1 {
                self.poke();
            }
        } else {
            self.waiting.entry(file).or_default().pending.push(p);
        }
    }

    /// Keep a superseded version until its file can be read.
    fn lose(&mut self, l: Loser) {
        if self.wake.is_none() || self.readable(l.loc.file) {
            self.losers.push(l);
            if self.losers.len() == 1 {
                self.poke();
            }
        } else {
            self.waiting.entry(l.loc.file).or_default().losers.push(l);
        }
    }

    /// `file` is written in full: what waited for it is ready.
    /// The writer sends this after every entry of the file it scanned, so a file this
    /// shard never interned holds none of its entries, and nothing waits on it.
    pub(super) fn file_complete(&mut self, gen: u32, slot: u64, id: u64) {
        let Some(&file) = self.file_ids.get(&FileRef { gen, slot, id }) else {
            return;
        };
        self.complete[file as usize] = true;
        if let Some(w) = self.waiting.remove(&file) {
            let was_empty = self.pending.is_empty() && self.losers.is_empty();
            self.pending.extend(w.pending);
            self.losers.extend(w.losers);
            if was_empty {
                self.poke();
            }
        }
    }

    /// Nothing streams (totals): every file is readable and nothing waits.
    pub(super) fn drain_waiting(&mut self) {
        self.draining = true;
        for (_, w) in std::mem::take(&mut self.waiting) {
            self.pending.extend(w.pending);
            self.losers.extend(w.losers);
        }
    }

    /// A new version `new` (with its lamports and data length) of the pubkey held `at`.
    fn update(&mut self, at: At, new: Loc, lamports: u64, data_len: u64) {
        let old = match &at {
            At::Main(i) => self.table.loc(*i),
            At::Side(k) => self.side[k],
        };
        if self.order(old) >= self.order(new) {
            // The arriving version loses (or is the same entry again): its sums leave at
            // once, its element when the losers are read.
            self.sub_sums(lamports, data_len);
            if lamports != 0 {
                self.lose(Loser {
                    loc: new,
                    subtract: false,
                });
            }
        } else {
            match at {
                At::Main(i) => *self.table.loc_mut(i) = new,
                At::Side(k) => {
                    self.side.insert(k, new);
                }
            }
            self.lose(Loser {
                loc: old,
                subtract: true,
            });
        }
    }

    /// Decide one pending entry, given the account `held` read at `read_at`, the location
    /// the table slot of its fingerprint had when the reads were planned.
    pub(super) fn resolve_one(&mut self, p: &Pending, read_at: Loc, held: &StoredAccount<'_>) {
        if !self.side.is_empty() && self.side.contains_key(&p.key) {
            self.update(At::Side(p.key), p.loc, p.lamports, p.data_len as u64);
        } else if *held.pubkey == p.key {
            let fp = self.fingerprint.of(&p.key);
            let Some(i) = self.table.find(fp) else {
                // Slots are never removed.
                self.fail(format!(
                    "index shard {}: fingerprint slot vanished",
                    self.shard
                ));
                return;
            };
            let cur = self.table.loc(i);
            if cur == read_at && self.order(cur) < self.order(p.loc) {
                // The version just read is superseded: retract it from these bytes now
                // rather than reading it again with the other losers.
                *self.table.loc_mut(i) = p.loc;
                self.retract(true, held);
            } else {
                self.update(At::Main(i), p.loc, p.lamports, p.data_len as u64);
            }
        } else {
            // A different pubkey with the same fingerprint: a new live account.
            self.side.insert(p.key, p.loc);
        }
    }

    pub(super) fn add_sums(&mut self, lamports: u64, data_len: u64) {
        if lamports == 0 {
            self.zero_lamport_live += 1;
        } else {
            self.lamports_live += lamports as u128;
            self.data_bytes_live += data_len;
        }
    }

    pub(super) fn sub_sums(&mut self, lamports: u64, data_len: u64) {
        if lamports == 0 {
            self.zero_lamport_live -= 1;
        } else {
            self.lamports_live -= lamports as u128;
            self.data_bytes_live -= data_len;
        }
    }

    /// Memory of the index at rest: fingerprint table, side table, file tables.
    pub(super) fn index_bytes(&self) -> u64 {
        self.table.bytes()
            + hash_map_bytes(self.side.capacity(), std::mem::size_of::<([u8; 32], Loc)>())
            + (self.files.capacity() * std::mem::size_of::<FileRef>()) as u64
            + hash_map_bytes(
                self.file_ids.capacity(),
                std::mem::size_of::<(FileRef, u32)>(),
            )
            + (self.pending.capacity() * std::mem::size_of::<Pending>()) as u64
            + (self.losers.capacity() * std::mem::size_of::<Loser>()) as u64
    }

    pub(super) fn totals(&mut self) -> ShardTotals {
        let t = std::time::Instant::now();
        self.drain_waiting();
        self.resolve_pending();
        self.retract_losers();
        self.retract_tail_ns += t.elapsed().as_nanos() as u64;
        // Files of this generation are renamed with its directory after the totals: the
        // background reads none of them again.
        self.draining = false;
        self.complete.iter_mut().for_each(|c| *c = false);
        // Map the files indexed since the last totals, up to the cap, so lookups keep
        // working whatever happens to the directory later; beyond the cap a cold file is
        // opened again by name from the snapshot's directory.
        let first = self
            .new_files_from
            .max(self.files.len().saturating_sub(self.maps.cap()));
        for f in first..self.files.len() {
            if let Err(e) = self.map(f as u32) {
                self.fail(e);
            }
        }
        self.new_files_from = self.files.len();
        // This generation's files have all streamed: only the file table stays.
        self.file_ids = HashMap::with_hasher(ahash::RandomState::new());
        self.last_file = None;
        ShardTotals {
            shard: self.shard,
            lt_hash: self.lt_hash.clone(),
            capitalization: self.lamports_live,
            accounts_total: self.accounts_total,
            owned_bytes: self.owned_bytes,
            accounts_live: (self.table.len() + self.side.len()) as u64,
            zero_lamport_live: self.zero_lamport_live,
            data_bytes_live: self.data_bytes_live,
            scanned_accounts: self.scanned_accounts,
            scanned_bytes: self.scanned_bytes,
            files_written: self.files_written,
            retracted: self.retracted,
            write_mode: self.write_mode.clone(),
            scan_ms: self.scan_ns / 1_000_000,
            write_ms: self.write_ns / 1_000_000,
            idle_ms: self.idle_ns / 1_000_000,
            mesh_wait_ms: self.mesh_wait_ns / 1_000_000,
            cpu_ms: crate::node::cpu::thread_cpu_ns() / 1_000_000,
            retract_ms: self.retract_ns / 1_000_000,
            retract_tail_ms: self.retract_tail_ns / 1_000_000,
            retracted_in_stream: self.retracted_in_stream,
            index_bytes: self.index_bytes(),
            index_collisions: self.side.len() as u64,
            storage_files: self.files.len() as u64,
            open_maps: self.maps.open() as u64,
            peak_open_maps: self.maps.peak as u64,
            maps_opened: self.maps.opened,
            error: self.error.clone(),
        }
    }

    /// The newest version of `key`, read from its storage file.
    pub(super) fn record(&mut self, key: &[u8; 32]) -> Option<AccountRecord> {
        let loc = match self.side.get(key) {
            Some(l) => *l,
            None => self.table.loc(self.table.find(self.fingerprint.of(key))?),
        };
        // The fingerprint slot may hold another pubkey: `read_record` confirms it.
        self.read_record(loc).filter(|r| r.pubkey == *key)
    }

    /// Every live account this shard owns, read from the files.
    pub(super) fn all_records(&mut self) -> Vec<AccountRecord> {
        let mut locs: Vec<Loc> = self
            .table
            .locs()
            .chain(self.side.values().copied())
            .collect();
        locs.sort_unstable();
        locs.into_iter()
            .filter_map(|l| self.read_record(l))
            .collect()
    }

    fn read_record(&mut self, loc: Loc) -> Option<AccountRecord> {
        let map = match self.map(loc.file) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "snapshot index: cannot read an account");
                self.fail(e);
                return None;
            }
        };
        let a = match account_at(map.bytes(), map.len() as u64, loc.offset()) {
            Ok(a) => a,
            Err(e) => {
                let e = format!("{}: {e}", self.file_name(loc.file));
                self.fail(e);
                return None;
            }
        };
        let f = self.files[loc.file as usize];
        Some(AccountRecord {
            pubkey: *a.pubkey,
            lamports: a.lamports,
            owner: *a.owner,
            executable: a.executable,
            rent_epoch: a.rent_epoch,
            data: a.data.to_vec(),
            location: AccountLocation {
                slot: f.slot,
                file_id: f.id,
                offset: loc.offset(),
            },
        })
    }
}

/// CPU shares of the background read-back against the scan's default 1,000.
const BACKGROUND_SHARES: usize = 250;

pub(super) struct ShardStart {
    pub(super) shard: usize,
    pub(super) shards: usize,
    pub(super) inbox: flume::Receiver<Cmd>,
    pub(super) links: Links,
    pub(super) queued: Arc<AtomicU64>,
    pub(super) shared_error: Arc<SharedError>,
    pub(super) config: IndexConfig,
}

pub(super) async fn shard_main(s: ShardStart, dma: bool) {
    let state = Rc::new(RefCell::new(State::new(
        s.shard,
        s.shards,
        &s.config,
        s.shared_error,
    )));
    let (etx, erx) = flume::unbounded();
    // On the glommio runtime a background task reads back superseded versions while
    // files stream (see `hash`).
    let background = dma.then(|| {
        let (wtx, wrx) = flume::bounded(1);
        state.borrow_mut().wake = Some(wtx);
        (wrx, Rc::new(glommio::sync::Semaphore::new(1)))
    });
    let gate = background.as_ref().map(|(_, g)| g.clone());
    let inbox = inbox_task(
        state.clone(),
        s.inbox,
        s.links.to_peers,
        erx,
        s.queued,
        dma,
        gate,
    );
    let mesh = mesh_task(state.clone(), s.links.from_peers, etx);
    if let Some((wrx, gate)) = background {
        let ex = glommio::executor();
        // The inbox task scans for long stretches; in a latency-sensitive queue the
        // executor preempts it every SHARD_IO_LATENCY at its yield points to submit the
        // DMA writes it queued, so writes overlap the scanning.
        let scan = ex.create_task_queue(
            glommio::Shares::default(),
            glommio::Latency::Matters(SHARD_IO_LATENCY),
            "snap-scan",
        );
        // The read-back gets a smaller share of the CPU than the scan when both have
        // work; it mostly waits for its reads.
        let reads = ex.create_task_queue(
            glommio::Shares::Static(BACKGROUND_SHARES),
            glommio::Latency::NotImportant,
            "snap-readback",
        );
        let bg = background_task(state, wrx, gate);
        match (
            glommio::spawn_local_into(inbox, scan),
            glommio::spawn_local_into(bg, reads),
        ) {
            (Ok(inbox), Ok(bg)) => {
                futures_lite::future::zip(futures_lite::future::zip(inbox, mesh), bg).await;
            }
            _ => {
                // Cannot happen for queues just created on this executor; report it.
                tracing::error!("snapshot shard: cannot spawn its tasks");
            }
        }
    } else {
        futures_lite::future::zip(inbox, mesh).await;
    }
}

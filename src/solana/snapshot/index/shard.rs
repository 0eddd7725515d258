//! One shard's slice of the index: the entries it owns (newest version wins), the
//! live-set sums, the superseded versions it must retract, and the shard's start.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use catchup_io::mmap::MappedFile;
use catchup_solana::appendvec::account_at;
use catchup_solana::LtHash;

use super::inbox::inbox_task;
use super::mesh::{mesh_task, Links};
use super::{AccountLocation, AccountRecord, Cmd, IndexEntry, ShardTotals, SHARD_IO_LATENCY};

#[derive(Clone, Copy)]
pub(super) struct Entry {
    slot: u64,
    id: u64,
    offset: u64,
    lamports: u64,
    data_len: u32,
    gen: u32,
}

#[derive(Clone, Copy)]
pub(super) struct Loser {
    pub(super) gen: u32,
    pub(super) slot: u64,
    pub(super) id: u64,
    pub(super) offset: u64,
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
    pub(super) maps: HashMap<(u32, u64, u64), Rc<MappedFile>>,
    /// Files holding entries this shard indexed since the last totals (mapped then, so
    /// lookups keep working whatever happens to the directory later).
    pub(super) referenced: std::collections::HashSet<(u32, u64, u64)>,
    pub(super) last_referenced: Option<(u32, u64, u64)>,
    pub(super) index: HashMap<[u8; 32], Entry, ahash::RandomState>,
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
    pub(super) retract_ns: u64,
    pub(super) markers: HashMap<u64, usize>,
    pub(super) error: Option<String>,
    pub(super) shared_error: Arc<SharedError>,
}

impl State {
    pub(super) fn fail(&mut self, e: String) {
        self.shared_error.record(e.clone());
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    pub(super) fn path(&self, gen: u32, slot: u64, id: u64) -> Option<PathBuf> {
        self.dirs.get(&gen).map(|d| d.join(format!("{slot}.{id}")))
    }

    pub(super) fn map(&mut self, gen: u32, slot: u64, id: u64) -> Result<Rc<MappedFile>, String> {
        if let Some(m) = self.maps.get(&(gen, slot, id)) {
            return Ok(m.clone());
        }
        let path = self
            .path(gen, slot, id)
            .ok_or_else(|| format!("accounts/{slot}.{id}: no directory for snapshot {gen}"))?;
        let m = Rc::new(MappedFile::open(&path).map_err(|e| e.to_string())?);
        self.maps.insert((gen, slot, id), m.clone());
        Ok(m)
    }

    /// Index one entry at its owner: newest (slot, file id, offset) wins.
    pub(super) fn apply(&mut self, e: &IndexEntry) {
        let file = (e.gen, e.slot, e.id);
        if self.last_referenced != Some(file) {
            self.referenced.insert(file);
            self.last_referenced = Some(file);
        }
        self.accounts_total += 1;
        self.owned_bytes += e.stored_bytes();
        let new = Entry {
            slot: e.slot,
            id: e.id,
            offset: e.offset,
            lamports: e.lamports,
            data_len: e.data_len,
            gen: e.gen,
        };
        let loser = match self.index.get_mut(&e.pubkey) {
            None => {
                self.index.insert(e.pubkey, new);
                self.live_add(&new);
                return;
            }
            Some(old) if (old.slot, old.id, old.offset) >= e.order() => new,
            Some(old) => std::mem::replace(old, new),
        };
        if loser.offset != new.offset || loser.slot != new.slot || loser.id != new.id {
            // The old winner leaves the live set.
            self.live_remove(&loser);
            self.live_add(&new);
        }
        if loser.lamports != 0 {
            self.losers.push(Loser {
                gen: loser.gen,
                slot: loser.slot,
                id: loser.id,
                offset: loser.offset,
            });
        }
    }

    fn live_add(&mut self, e: &Entry) {
        if e.lamports == 0 {
            self.zero_lamport_live += 1;
        } else {
            self.lamports_live += e.lamports as u128;
            self.data_bytes_live += e.data_len as u64;
        }
    }

    fn live_remove(&mut self, e: &Entry) {
        if e.lamports == 0 {
            self.zero_lamport_live -= 1;
        } else {
            self.lamports_live -= e.lamports as u128;
            self.data_bytes_live -= e.data_len as u64;
        }
    }

    pub(super) fn totals(&mut self) -> ShardTotals {
        self.retract_losers();
        self.last_referenced = None;
        for (gen, slot, id) in std::mem::take(&mut self.referenced) {
            if let Err(e) = self.map(gen, slot, id) {
                self.fail(e);
            }
        }
        ShardTotals {
            shard: self.shard,
            lt_hash: self.lt_hash.clone(),
            capitalization: self.lamports_live,
            accounts_total: self.accounts_total,
            owned_bytes: self.owned_bytes,
            accounts_live: self.index.len() as u64,
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
            retract_ms: self.retract_ns / 1_000_000,
            error: self.error.clone(),
        }
    }

    pub(super) fn record(&mut self, key: &[u8; 32]) -> Option<AccountRecord> {
        let e = *self.index.get(key)?;
        let map = self.map(e.gen, e.slot, e.id).ok()?;
        let a = account_at(map.bytes(), map.len() as u64, e.offset).ok()?;
        Some(AccountRecord {
            pubkey: *key,
            lamports: a.lamports,
            owner: *a.owner,
            executable: a.executable,
            rent_epoch: a.rent_epoch,
            data: a.data.to_vec(),
            location: AccountLocation {
                slot: e.slot,
                file_id: e.id,
                offset: e.offset,
            },
        })
    }
}

pub(super) struct ShardStart {
    pub(super) shard: usize,
    pub(super) shards: usize,
    pub(super) inbox: flume::Receiver<Cmd>,
    pub(super) links: Links,
    pub(super) queued: Arc<AtomicU64>,
    pub(super) shared_error: Arc<SharedError>,
}

pub(super) async fn shard_main(s: ShardStart, dma: bool) {
    let state = Rc::new(RefCell::new(State {
        shard: s.shard,
        shards: s.shards,
        dirs: HashMap::new(),
        maps: HashMap::new(),
        referenced: Default::default(),
        last_referenced: None,
        index: HashMap::with_hasher(ahash::RandomState::new()),
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
        retract_ns: 0,
        markers: HashMap::new(),
        error: None,
        shared_error: s.shared_error,
    }));
    let (etx, erx) = flume::unbounded();
    let inbox = inbox_task(state.clone(), s.inbox, s.links.to_peers, erx, s.queued, dma);
    let mesh = mesh_task(state, s.links.from_peers, etx);
    if dma {
        // The inbox task scans for long stretches; in a latency-sensitive queue the
        // executor preempts it every SHARD_IO_LATENCY at its yield points to submit the
        // DMA writes it queued, so writes overlap the scanning.
        let tq = glommio::executor().create_task_queue(
            glommio::Shares::default(),
            glommio::Latency::Matters(SHARD_IO_LATENCY),
            "snap-scan",
        );
        match glommio::spawn_local_into(inbox, tq) {
            Ok(task) => {
                futures_lite::future::zip(task, mesh).await;
            }
            Err(e) => {
                // Cannot happen for a queue just created on this executor; report it.
                tracing::error!(error = %e, "snapshot shard: cannot spawn the scan task");
            }
        }
    } else {
        futures_lite::future::zip(inbox, mesh).await;
    }
}

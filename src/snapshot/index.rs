//! The sharded account index: one worker per shard owns the pubkeys whose
//! `catchup_shards::ownership::owner_of_key` is that shard. Workers share nothing mutable;
//! they receive messages over bounded channels and answer over reply channels.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use catchup_io::mmap::MappedFile;
use catchup_shards::ownership::owner_of_key;
use catchup_solana::appendvec::{account_at, iter_accounts, StoredAccount};
use catchup_solana::LtHash;

/// Capacity of each shard's inbox (messages, not bytes).
pub const SHARD_INBOX_CAPACITY: usize = 64;

/// Where the newest version of an account lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountLocation {
    pub slot: u64,
    pub file_id: u64,
    pub offset: u64,
}

/// An account read back from its storage file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub pubkey: [u8; 32],
    pub lamports: u64,
    pub owner: [u8; 32],
    pub executable: bool,
    pub rent_epoch: u64,
    pub data: Vec<u8>,
    pub location: AccountLocation,
}

/// One shard's contribution to verification.
#[derive(Debug, Clone)]
pub struct ShardTotals {
    pub shard: usize,
    pub lt_hash: LtHash,
    pub capitalization: u128,
    pub accounts_total: u64,
    /// Stored bytes (headers, data, padding) of the entries this shard owns.
    pub owned_bytes: u64,
    pub accounts_live: u64,
    pub zero_lamport_live: u64,
    pub data_bytes_live: u64,
    /// First storage-file error this shard saw, if any.
    pub error: Option<String>,
}

/// A storage file ready to be indexed.
#[derive(Debug, Clone)]
pub struct FileJob {
    pub slot: u64,
    pub id: u64,
    pub path: Arc<PathBuf>,
    pub accounts_current_len: u64,
}

pub(crate) enum ShardMsg {
    File(FileJob),
    Totals(SyncSender<ShardTotals>),
    Get([u8; 32], SyncSender<Option<AccountRecord>>),
    All(SyncSender<Vec<AccountRecord>>),
}

struct FileSlot {
    slot: u64,
    id: u64,
    len: u64,
    map: Arc<MappedFile>,
}

#[derive(Clone, Copy)]
struct Loc {
    file: u32,
    offset: u64,
}

/// One shard's state: its files (each shard maps every file itself) and its slice of the
/// index.
/// Running sums over the live entries of one shard.
#[derive(Default)]
struct LiveSums {
    lt_hash: LtHash,
    lamports: u128,
    zero_lamport: u64,
    data_bytes: u64,
}

impl LiveSums {
    fn add(&mut self, a: &StoredAccount<'_>) {
        if a.lamports == 0 {
            self.zero_lamport += 1;
            return;
        }
        self.lt_hash.mix_in(&a.lt_hash());
        self.lamports += a.lamports as u128;
        self.data_bytes += a.data.len() as u64;
    }
    fn remove(&mut self, a: &StoredAccount<'_>) {
        if a.lamports == 0 {
            self.zero_lamport -= 1;
            return;
        }
        self.lt_hash.mix_out(&a.lt_hash());
        self.lamports -= a.lamports as u128;
        self.data_bytes -= a.data.len() as u64;
    }
}

struct ShardIndex {
    live: LiveSums,
    shard: usize,
    shards: usize,
    files: Vec<FileSlot>,
    index: HashMap<[u8; 32], Loc, ahash::RandomState>,
    accounts_total: u64,
    owned_bytes: u64,
    error: Option<String>,
}

impl ShardIndex {
    fn order(&self, l: Loc) -> (u64, u64, u64) {
        let f = &self.files[l.file as usize];
        (f.slot, f.id, l.offset)
    }

    fn add_file(&mut self, job: FileJob) {
        if self.error.is_some() {
            return;
        }
        let map = match MappedFile::open(&job.path) {
            Ok(m) => m,
            Err(e) => {
                self.error = Some(e.to_string());
                return;
            }
        };
        map.advise_sequential();
        let map = Arc::new(map);
        let file_idx = self.files.len() as u32;
        self.files.push(FileSlot {
            slot: job.slot,
            id: job.id,
            len: job.accounts_current_len,
            map: map.clone(),
        });
        let iter = match iter_accounts(map.bytes(), job.accounts_current_len) {
            Ok(it) => it,
            Err(e) => {
                self.error = Some(format!("accounts/{}.{}: {e}", job.slot, job.id));
                return;
            }
        };
        // Index the owned entries; the LtHash and lamports of the live set are kept up to
        // date as entries win (mix in) or are superseded (mix out).
        for item in iter {
            let a = match item {
                Ok(a) => a,
                Err(e) => {
                    self.error = Some(format!("accounts/{}.{}: {e}", job.slot, job.id));
                    return;
                }
            };
            if owner_of_key(a.pubkey, self.shards).0 != self.shard {
                continue;
            }
            self.accounts_total += 1;
            self.owned_bytes += a.stored_size_bytes() as u64;
            let new = Loc {
                file: file_idx,
                offset: a.offset,
            };
            let new_order = (job.slot, job.id, a.offset);
            let old = self.index.get(a.pubkey).copied();
            if let Some(old) = old {
                if self.order(old) >= new_order {
                    continue;
                }
                let f = &self.files[old.file as usize];
                match account_at(f.map.bytes(), f.len, old.offset) {
                    Ok(o) => self.live.remove(&o),
                    Err(e) => {
                        self.error = Some(format!("accounts/{}.{}: {e}", f.slot, f.id));
                        return;
                    }
                }
            }
            self.live.add(&a);
            self.index.insert(*a.pubkey, new);
        }
    }

    fn record(&self, key: &[u8; 32], l: Loc) -> Option<AccountRecord> {
        let f = &self.files[l.file as usize];
        let a = account_at(f.map.bytes(), f.len, l.offset).ok()?;
        Some(AccountRecord {
            pubkey: *key,
            lamports: a.lamports,
            owner: *a.owner,
            executable: a.executable,
            rent_epoch: a.rent_epoch,
            data: a.data.to_vec(),
            location: AccountLocation {
                slot: f.slot,
                file_id: f.id,
                offset: l.offset,
            },
        })
    }

    fn totals(&self) -> ShardTotals {
        ShardTotals {
            shard: self.shard,
            lt_hash: self.live.lt_hash.clone(),
            capitalization: self.live.lamports,
            accounts_total: self.accounts_total,
            owned_bytes: self.owned_bytes,
            accounts_live: self.index.len() as u64,
            zero_lamport_live: self.live.zero_lamport,
            data_bytes_live: self.live.data_bytes,
            error: self.error.clone(),
        }
    }

    fn run(mut self, inbox: Receiver<ShardMsg>) {
        while let Ok(msg) = inbox.recv() {
            match msg {
                ShardMsg::File(job) => self.add_file(job),
                ShardMsg::Totals(reply) => {
                    let _ = reply.send(self.totals());
                }
                ShardMsg::Get(key, reply) => {
                    let r = self.index.get(&key).and_then(|&l| self.record(&key, l));
                    let _ = reply.send(r);
                }
                ShardMsg::All(reply) => {
                    let mut v: Vec<AccountRecord> = self
                        .index
                        .iter()
                        .filter_map(|(k, &l)| self.record(k, l))
                        .collect();
                    v.sort_by_key(|a| a.pubkey);
                    let _ = reply.send(v);
                }
            }
        }
    }
}

/// Pin the calling thread to one core (best effort: a failure leaves it unpinned).
fn pin_to_core(core: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in bounds for
    // core < CPU_SETSIZE, checked here; sched_setaffinity(0, ..) affects this thread only.
    unsafe {
        if core >= libc::CPU_SETSIZE as usize {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Handles to the running shard workers: one glommio executor per shard from
/// `catchup_shards::run` (pinned by the runtime), or, where the runtime cannot start (no
/// io_uring, locked-memory limit), one plain thread per shard pinned to core
/// `allowed_cores[i % cores]`.
pub struct ShardSet {
    inboxes: Vec<SyncSender<ShardMsg>>,
    threads: Vec<JoinHandle<()>>,
    runtime: &'static str,
}

impl ShardSet {
    /// Start `shards` workers (at least one).
    /// Start `shards` workers (at least one): on the `catchup_shards` glommio runtime (one
    /// pinned executor per shard) when it can start here, else on plain pinned threads.
    pub fn start(shards: usize) -> std::io::Result<Self> {
        let shards = shards.max(1);
        match Self::start_on_runtime(shards) {
            Ok(set) => Ok(set),
            Err(reason) => {
                tracing::debug!(%reason, "snapshot index: shard runtime unavailable, using plain threads");
                Self::start_on_threads(shards)
            }
        }
    }

    fn new_index(shard: usize, shards: usize) -> ShardIndex {
        ShardIndex {
            live: LiveSums::default(),
            shard,
            shards,
            files: Vec::new(),
            index: HashMap::with_hasher(ahash::RandomState::new()),
            accounts_total: 0,
            owned_bytes: 0,
            error: None,
        }
    }

    /// Each shard's future takes its inbox and serves it until the inbox closes. The
    /// shard does nothing else, so its loop blocks on the inbox between messages.
    fn start_on_runtime(shards: usize) -> Result<Self, String> {
        let mut inboxes = Vec::with_capacity(shards);
        let mut receivers = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = sync_channel::<ShardMsg>(SHARD_INBOX_CAPACITY);
            inboxes.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(std::sync::Mutex::new(receivers));
        let (ready_tx, ready_rx) = sync_channel::<Result<(), String>>(shards + 1);
        let failed_tx = ready_tx.clone();
        let cfg = catchup_shards::RuntimeConfig {
            handle_signals: false,
            name: "snap-index".into(),
            channel_capacity: 1,
            ..catchup_shards::RuntimeConfig::new(shards)
        };
        let thread = std::thread::Builder::new()
            .name("snap-index-runtime".into())
            .spawn(move || {
                let r = catchup_shards::run(&cfg, move |shard: catchup_shards::Shard<()>| {
                    let receivers = receivers.clone();
                    let ready = ready_tx.clone();
                    async move {
                        let id = shard.id().0;
                        let rx = receivers
                            .lock()
                            .ok()
                            .and_then(|mut v| v.get_mut(id).and_then(Option::take));
                        let Some(rx) = rx else {
                            let _ = ready.send(Err(format!("shard {id}: no inbox")));
                            return;
                        };
                        let _ = ready.send(Ok(()));
                        drop(ready);
                        Self::new_index(id, shard.count()).run(rx);
                    }
                });
                if let Err(e) = r {
                    let _ = failed_tx.send(Err(e.to_string()));
                }
            })
            .map_err(|e| e.to_string())?;
        let mut started = 0;
        while started < shards {
            match ready_rx.recv() {
                Ok(Ok(())) => started += 1,
                Ok(Err(e)) => {
                    drop(inboxes);
                    let _ = thread.join();
                    return Err(e);
                }
                Err(_) => {
                    drop(inboxes);
                    let _ = thread.join();
                    return Err("shard runtime stopped before starting".into());
                }
            }
        }
        Ok(ShardSet {
            inboxes,
            threads: vec![thread],
            runtime: "glommio",
        })
    }

    fn start_on_threads(shards: usize) -> std::io::Result<Self> {
        let mut inboxes = Vec::with_capacity(shards);
        let mut threads = Vec::with_capacity(shards);
        let cores = catchup_shards::allowed_cores();
        for shard in 0..shards {
            let (tx, rx) = sync_channel(SHARD_INBOX_CAPACITY);
            let idx = Self::new_index(shard, shards);
            let core = cores.get(shard % cores.len().max(1)).copied();
            let t = std::thread::Builder::new()
                .name(format!("snap-index-{shard}"))
                .spawn(move || {
                    if let Some(core) = core {
                        pin_to_core(core);
                    }
                    idx.run(rx)
                })?;
            inboxes.push(tx);
            threads.push(t);
        }
        Ok(ShardSet {
            inboxes,
            threads,
            runtime: "threads",
        })
    }

    /// Which runtime the shards run on: `glommio` or `threads`.
    pub fn runtime(&self) -> &'static str {
        self.runtime
    }

    pub fn count(&self) -> usize {
        self.inboxes.len()
    }

    /// Every shard maps the file and indexes the accounts it owns (blocks while inboxes
    /// are full: back-pressure).
    pub fn add_file(&self, job: FileJob) -> Result<(), ShardGone> {
        for tx in &self.inboxes {
            tx.send(ShardMsg::File(job.clone()))
                .map_err(|_| ShardGone)?;
        }
        Ok(())
    }

    /// Per-shard totals, computed in parallel.
    pub fn totals(&self) -> Result<Vec<ShardTotals>, ShardGone> {
        let mut replies = Vec::new();
        for tx in &self.inboxes {
            let (rtx, rrx) = sync_channel(1);
            tx.send(ShardMsg::Totals(rtx)).map_err(|_| ShardGone)?;
            replies.push(rrx);
        }
        replies
            .into_iter()
            .map(|r| r.recv().map_err(|_| ShardGone))
            .collect()
    }

    /// Look an account up on its owner shard.
    pub fn get(&self, pubkey: &[u8; 32]) -> Result<Option<AccountRecord>, ShardGone> {
        let owner = owner_of_key(pubkey, self.count()).0;
        let (rtx, rrx) = sync_channel(1);
        self.inboxes[owner]
            .send(ShardMsg::Get(*pubkey, rtx))
            .map_err(|_| ShardGone)?;
        rrx.recv().map_err(|_| ShardGone)
    }

    /// Every live account, sorted by pubkey (holds them all in memory: for inspection of
    /// small snapshots).
    pub fn all(&self) -> Result<Vec<AccountRecord>, ShardGone> {
        let mut out = Vec::new();
        for tx in &self.inboxes {
            let (rtx, rrx) = sync_channel(1);
            tx.send(ShardMsg::All(rtx)).map_err(|_| ShardGone)?;
            out.extend(rrx.recv().map_err(|_| ShardGone)?);
        }
        out.sort_by_key(|a| a.pubkey);
        Ok(out)
    }
}

impl Drop for ShardSet {
    fn drop(&mut self) {
        self.inboxes.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A shard worker stopped unexpectedly.
#[derive(Debug, thiserror::Error)]
#[error("snapshot index shard stopped unexpectedly")]
pub struct ShardGone;

#[cfg(test)]
mod tests {
    use super::*;
    use catchup_solana::appendvec::append_account;

    fn file(
        dir: &std::path::Path,
        name: &str,
        entries: &[([u8; 32], u64, &[u8])],
    ) -> (Arc<PathBuf>, u64) {
        let mut f = Vec::new();
        for (k, l, d) in entries {
            append_account(&mut f, k, *l, 0, &[9; 32], false, d);
        }
        let p = dir.join(name);
        std::fs::write(&p, &f).unwrap();
        (Arc::new(p), f.len() as u64)
    }

    #[test]
    fn newest_wins_and_sums_follow_the_live_set() {
        let dir = std::env::temp_dir().join(format!("catchup-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (k1, k2, k3) = ([1u8; 32], [0x80u8; 32], [0x40u8; 32]);
        let a = file(
            &dir,
            "5.0",
            &[
                (k1, 10, b"v1"),
                (k2, 20, b"old"),
                (k1, 11, b"v2"),
                (k3, 0, b""),
            ],
        );
        let b = file(&dir, "6.1", &[(k2, 21, b"new")]);
        let c = file(&dir, "4.2", &[(k1, 9, b"v0")]);
        for shards in [1, 2, 3] {
            let set = ShardSet::start(shards).unwrap();
            for (slot, id, (path, len)) in [(5, 0, &a), (6, 1, &b), (4, 2, &c)] {
                set.add_file(FileJob {
                    slot,
                    id,
                    path: path.clone(),
                    accounts_current_len: *len,
                })
                .unwrap();
            }
            let g1 = set.get(&k1).unwrap().unwrap();
            assert_eq!(
                (g1.lamports, g1.data.as_slice(), g1.location.slot),
                (11, &b"v2"[..], 5)
            );
            let g2 = set.get(&k2).unwrap().unwrap();
            assert_eq!((g2.lamports, g2.location.slot), (21, 6));
            assert!(set.get(&[7; 32]).unwrap().is_none());
            let totals = set.totals().unwrap();
            let mut lt = LtHash::identity();
            let mut cap = 0;
            for t in &totals {
                assert!(t.error.is_none());
                lt.mix_in(&t.lt_hash);
                cap += t.capitalization;
            }
            let mut want = LtHash::of_account(11, b"v2", false, &[9; 32], &k1);
            want.mix_in(&LtHash::of_account(21, b"new", false, &[9; 32], &k2));
            assert_eq!(lt, want, "{shards} shards");
            assert_eq!(cap, 32);
            assert_eq!(totals.iter().map(|t| t.accounts_total).sum::<u64>(), 6);
            assert_eq!(totals.iter().map(|t| t.accounts_live).sum::<u64>(), 3);
            assert_eq!(totals.iter().map(|t| t.zero_lamport_live).sum::<u64>(), 1);
            assert_eq!(set.all().unwrap().len(), 3);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

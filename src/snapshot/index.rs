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
use catchup_solana::appendvec::{account_at, iter_accounts};
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
    map: MappedFile,
}

#[derive(Clone, Copy)]
struct Loc {
    file: u32,
    offset: u64,
}

/// One shard's state: its files (each shard maps every file itself) and its slice of the
/// index.
struct ShardIndex {
    shard: usize,
    shards: usize,
    files: Vec<FileSlot>,
    index: HashMap<[u8; 32], Loc, ahash::RandomState>,
    accounts_total: u64,
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
        let file_idx = self.files.len() as u32;
        let iter = match iter_accounts(map.bytes(), job.accounts_current_len) {
            Ok(it) => it,
            Err(e) => {
                self.error = Some(format!("accounts/{}.{}: {e}", job.slot, job.id));
                return;
            }
        };
        let mut owned: Vec<([u8; 32], u64)> = Vec::new();
        for item in iter {
            match item {
                Ok(a) => {
                    if owner_of_key(a.pubkey, self.shards).0 == self.shard {
                        owned.push((*a.pubkey, a.offset));
                    }
                }
                Err(e) => {
                    self.error = Some(format!("accounts/{}.{}: {e}", job.slot, job.id));
                    return;
                }
            }
        }
        self.files.push(FileSlot {
            slot: job.slot,
            id: job.id,
            len: job.accounts_current_len,
            map,
        });
        for (key, offset) in owned {
            self.accounts_total += 1;
            let new = Loc {
                file: file_idx,
                offset,
            };
            let new_order = self.order(new);
            match self.index.get(&key) {
                Some(&old) if self.order(old) >= new_order => {}
                _ => {
                    self.index.insert(key, new);
                }
            }
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
        let mut lt = LtHash::identity();
        let mut cap: u128 = 0;
        let mut zero = 0;
        let mut data_bytes = 0u64;
        let mut error = self.error.clone();
        for (key, &l) in &self.index {
            let f = &self.files[l.file as usize];
            match account_at(f.map.bytes(), f.len, l.offset) {
                Ok(a) => {
                    debug_assert_eq!(a.pubkey, key);
                    if a.lamports == 0 {
                        zero += 1;
                        continue;
                    }
                    cap += a.lamports as u128;
                    data_bytes += a.data.len() as u64;
                    lt.mix_in(&a.lt_hash());
                }
                Err(e) => {
                    error.get_or_insert_with(|| format!("accounts/{}.{}: {e}", f.slot, f.id));
                }
            }
        }
        ShardTotals {
            shard: self.shard,
            lt_hash: lt,
            capitalization: cap,
            accounts_total: self.accounts_total,
            accounts_live: self.index.len() as u64,
            zero_lamport_live: zero,
            data_bytes_live: data_bytes,
            error,
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
                    v.sort_by(|a, b| a.pubkey.cmp(&b.pubkey));
                    let _ = reply.send(v);
                }
            }
        }
    }
}

/// Handles to the running shard workers.
pub struct ShardSet {
    inboxes: Vec<SyncSender<ShardMsg>>,
    threads: Vec<JoinHandle<()>>,
}

impl ShardSet {
    /// Start `shards` workers (at least one).
    pub fn start(shards: usize) -> std::io::Result<Self> {
        let shards = shards.max(1);
        let mut inboxes = Vec::with_capacity(shards);
        let mut threads = Vec::with_capacity(shards);
        for shard in 0..shards {
            let (tx, rx) = sync_channel(SHARD_INBOX_CAPACITY);
            let idx = ShardIndex {
                shard,
                shards,
                files: Vec::new(),
                index: HashMap::with_hasher(ahash::RandomState::new()),
                accounts_total: 0,
                error: None,
            };
            let t = std::thread::Builder::new()
                .name(format!("snap-index-{shard}"))
                .spawn(move || idx.run(rx))?;
            inboxes.push(tx);
            threads.push(t);
        }
        Ok(ShardSet { inboxes, threads })
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
        out.sort_by(|a, b| a.pubkey.cmp(&b.pubkey));
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

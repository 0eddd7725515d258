//! The sync's store on disk: the per-shard `catchup_io` store (append-only segments,
//! checksummed records, write-once content-addressed kinds) and the atomic journal.
//!
//! The engine is synchronous, the disk store is asynchronous: [`DiskStore`] keeps no
//! stored value in memory. It answers "is it stored?" from the store's index, reads values
//! on demand with a synchronous `pread` of the segment (checksums verified), serves what
//! was put since the last commit from its commit queue, and keeps decoded headers in a
//! cache bounded by the memory budget ([`StoreBudget`]). The driver calls
//! [`DiskStore::commit`] after each batch of events, which writes the queued records,
//! flushes them (group commit), and only then saves the journal, so the journal never
//! names data that is not durable.

use std::path::Path;

use alloy_primitives::B256;
use catchup_io::journal::Journal;
use catchup_io::store::{Store, StoreOptions};

use super::store::{MemStore, SlotRun, StorageProgress, SyncStore};
use super::types::{Body, Header, Receipts};

const KIND_NODE: u8 = 1;
const KIND_CODE: u8 = 2;
const KIND_HEADER: u8 = 3;
const KIND_BODY: u8 = 4;
const KIND_RECEIPTS: u8 = 5;
const KIND_ACCOUNT: u8 = 6;
const KIND_STORAGE_DONE: u8 = 7;
/// A verified run of slots of an incomplete storage trie: key account ++ origin, value
/// `(slot hash, length u32 LE, value)*`.
const KIND_STORAGE_SLOTS: u8 = 8;
/// The progress of an incomplete storage trie: key account, value storage root ++
/// `(origin, limit)*`.
const KIND_STORAGE_PROGRESS: u8 = 9;
/// A subtrie of the account trie a verified range built: key its first leaf, value the
/// record `KnownSubtries` writes (depth, leaves' count, last key and digest, reference).
const KIND_KNOWN_SUBTRIE: u8 = 10;
const KINDS: [u8; 10] = [
    KIND_NODE,
    KIND_CODE,
    KIND_HEADER,
    KIND_BODY,
    KIND_RECEIPTS,
    KIND_ACCOUNT,
    KIND_STORAGE_DONE,
    KIND_STORAGE_SLOTS,
    KIND_STORAGE_PROGRESS,
    KIND_KNOWN_SUBTRIE,
];
/// Per-kind counters are indexed by the kind byte.
const KIND_SLOTS: usize = KIND_KNOWN_SUBTRIE as usize + 1;

/// Errors of the on-disk sync store, naming the directory and the item.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("sync store in {dir}: {source}")]
    Store {
        dir: String,
        source: catchup_io::store::StoreError,
    },
    #[error("sync journal in {dir}: {source}")]
    Journal {
        dir: String,
        source: catchup_io::journal::JournalError,
    },
    #[error("sync store in {dir}: stored {what} does not decode")]
    Corrupt { dir: String, what: &'static str },
    #[error("{0}")]
    Read(String),
}

/// Records of capacity the commit queue keeps between commits (about 1 MiB of entries).
const KEEP_PENDING_RECORDS: usize = 16 * 1024;

/// Default memory budget of one shard's sync, in bytes (see [`StoreBudget`]).
pub const DEFAULT_MEMORY_BUDGET_BYTES: u64 = 512 << 20;

/// The memory a shard's sync store may use: the decoded-header cache takes
/// [`StoreBudget::HEADER_CACHE_SHARE`] of it, the memtable of the fingerprint index
/// [`StoreBudget::INDEX_MEMTABLE_SHARE`]; beyond the memtable the index of keccak-keyed
/// records costs about 1.4 bytes per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreBudget {
    pub memory_budget_bytes: u64,
}

impl Default for StoreBudget {
    fn default() -> Self {
        StoreBudget {
            memory_budget_bytes: DEFAULT_MEMORY_BUDGET_BYTES,
        }
    }
}

impl StoreBudget {
    /// Share of the budget (1/N) for decoded headers.
    pub const HEADER_CACHE_SHARE: u64 = 16;
    /// Share of the budget (1/N) for the memtable of the store's fingerprint index.
    pub const INDEX_MEMTABLE_SHARE: u64 = 4;
    /// Smallest memtable, whatever the budget (about a thousand keys).
    const MIN_INDEX_MEMTABLE_BYTES: u64 = 64 << 10;

    /// Bytes the memtable of the store's fingerprint index may take.
    pub fn index_memtable_bytes(&self) -> u64 {
        (self.memory_budget_bytes / Self::INDEX_MEMTABLE_SHARE).max(Self::MIN_INDEX_MEMTABLE_BYTES)
    }
    /// Share of the budget (1/N) for the engine's backlog of open storage tries and
    /// queued codes.
    pub const STORAGE_BACKLOG_SHARE: u64 = 16;
    /// Bytes an open storage trie takes in the engine (its entry, its first task, their
    /// map slots and queue places), rounded up.
    const STORAGE_BACKLOG_ENTRY_BYTES: u64 = 512;

    /// Accounts whose storage tries may be open at once in one shard's engine.
    pub fn storage_backlog_accounts(&self) -> usize {
        (self.memory_budget_bytes / Self::STORAGE_BACKLOG_SHARE / Self::STORAGE_BACKLOG_ENTRY_BYTES)
            .max(1024) as usize
    }

    /// Share of the budget (1/N) for the responses in flight.
    pub const RESPONSES_SHARE: u64 = 16;
    /// Bytes one response may take in flight: the soft limit peers answer within (as
    /// geth's `softResponseLimit`; snap responses are asked for at most that).
    const RESPONSE_BYTES: u64 = 2 << 20;

    /// Requests one shard's engine may have in flight, so that their responses fit the
    /// budget's share (16 at the default budget; never below 2).
    pub fn max_requests_in_flight(&self) -> usize {
        (self.memory_budget_bytes / Self::RESPONSES_SHARE / Self::RESPONSE_BYTES).max(2) as usize
    }

    /// Bytes a cached header takes (raw RLP of a mainnet header plus the decoded fields
    /// and the map entry), rounded up.
    const HEADER_CACHE_ENTRY_BYTES: u64 = 1024;

    /// Share of the budget (1/N) for header batches verified and held until the
    /// coordinator joins them.
    pub const HELD_HEADERS_SHARE: u64 = 16;
    /// Bytes a held header takes (decoded, with its hash and RLP), rounded up.
    const HELD_HEADER_BYTES: u64 = 1024;

    /// Header batches of `batch` headers one shard may hold for the join (170 of 192 at
    /// the default budget; never below 2).
    pub fn held_header_batches(&self, batch: u64) -> usize {
        (self.memory_budget_bytes
            / Self::HELD_HEADERS_SHARE
            / (batch.max(1) * Self::HELD_HEADER_BYTES))
            .max(2) as usize
    }

    /// Decoded headers kept in the cache (two generations of half this each).
    pub fn header_cache_entries(&self) -> usize {
        (self.memory_budget_bytes / Self::HEADER_CACHE_SHARE / Self::HEADER_CACHE_ENTRY_BYTES)
            .max(64) as usize
    }
}

/// Counts of what a shard's store holds (index only, no I/O).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub nodes: u64,
    pub codes: u64,
    pub headers: u64,
    pub bodies: u64,
    pub receipts: u64,
    pub accounts: u64,
    pub storage_done: u64,
}

/// A bounded cache of decoded headers: two generations; a lookup that hits the old one
/// moves the header to the new one, and when the new one is full the old one is dropped.
struct HeaderCache {
    young: std::collections::HashMap<u64, Header>,
    old: std::collections::HashMap<u64, Header>,
    half: usize,
}

impl HeaderCache {
    fn new(entries: usize) -> HeaderCache {
        HeaderCache {
            young: Default::default(),
            old: Default::default(),
            half: (entries / 2).max(1),
        }
    }

    fn get(&mut self, n: u64) -> Option<Header> {
        if let Some(h) = self.young.get(&n) {
            return Some(h.clone());
        }
        let h = self.old.remove(&n)?;
        self.insert(h.clone());
        Some(h)
    }

    fn insert(&mut self, h: Header) {
        if self.young.len() >= self.half {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(h.number, h);
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// Key of a pending record: its kind and its key (block numbers big-endian in the last
/// eight bytes).
type PendingKey = (u8, B256);

fn num_key(n: u64) -> B256 {
    let mut b = [0u8; 32];
    b[24..].copy_from_slice(&n.to_be_bytes());
    B256::from(b)
}

/// A shard's sync store on disk. Values live in the store's segment files only: "is it
/// stored?" is answered from the store's index (recent keys in memory, the rest through
/// the index runs' filters and at most one 4 KiB `pread` per run), values are read on demand with
/// a synchronous `pread` (checksums verified), and what was put since the last commit is
/// served from the commit queue. Decoded headers are cached within the memory budget.
pub struct DiskStore {
    disk: Store,
    journal: Journal,
    /// Records put since the last commit, in order.
    pending: Vec<(u8, Vec<u8>, Vec<u8>)>,
    /// Position in `pending` of the latest record of each (kind, key).
    pending_at: std::collections::HashMap<PendingKey, usize>,
    /// Keys in `pending` that the store does not hold yet, per kind.
    pending_new: [u64; KIND_SLOTS],
    /// Records in `pending`, per kind.
    pending_of_kind: [u64; KIND_SLOTS],
    journal_now: Option<Vec<u8>>,
    journal_pending: bool,
    headers: std::cell::RefCell<HeaderCache>,
    /// Highest stored header number.
    max_header: Option<u64>,
    dir: String,
    /// A stored record failed to read or decode: the first such error (the engine's
    /// reads cannot fail, so it is reported by the next [`DiskStore::commit`]).
    read_error: std::cell::RefCell<Option<String>>,
    /// Records found at open (what a restart did not have to fetch).
    pub loaded_records: u64,
}

impl DiskStore {
    /// Open (or create) the store and journal in `dir` with the default budget.
    pub async fn open(dir: &Path) -> Result<DiskStore, PersistError> {
        Self::open_with(dir, StoreBudget::default()).await
    }

    /// Nodes and codes are content-addressed (written once); every kind keyed by a
    /// keccak hash is indexed by fingerprint, and headers, bodies and receipts by number
    /// in the same index (about 1.4 bytes of memory a key beyond its memtable: 21 M
    /// blocks' three kinds take about 90 MB instead of 0.76 GB at 12 bytes a key).
    fn store_options() -> StoreOptions {
        StoreOptions::default()
            .content_addressed(KIND_NODE)
            .content_addressed(KIND_CODE)
            .fingerprinted(KIND_NODE)
            .fingerprinted(KIND_CODE)
            .fingerprinted(KIND_ACCOUNT)
            .fingerprinted(KIND_STORAGE_DONE)
            .fingerprinted(KIND_STORAGE_PROGRESS)
            .numbered(KIND_HEADER)
            .numbered(KIND_BODY)
            .numbered(KIND_RECEIPTS)
    }

    /// Store options within `budget`: the index checkpoint (built in memory) may take an
    /// eighth of it, the memtable of the fingerprint index
    /// [`StoreBudget::INDEX_MEMTABLE_SHARE`] (beyond it the store keeps about 1.4 bytes
    /// per key in memory and the rest in sorted run files).
    fn store_options_within(budget: StoreBudget) -> StoreOptions {
        StoreOptions {
            max_checkpoint_bytes: budget.memory_budget_bytes / 8,
            max_index_memory_bytes: budget.index_memtable_bytes(),
            ..Self::store_options()
        }
    }

    /// Open (or create) the store and journal in `dir`. The store's open loads its index
    /// checkpoint (the fingerprint runs' fences and filters and the whole-key index) and
    /// scans only what was written after it, verifying those records' checksums (a
    /// damaged record gives one error naming the segment and offset); records under the
    /// checkpoint are verified when read. Nothing of the records is kept in memory.
    pub async fn open_with(dir: &Path, budget: StoreBudget) -> Result<DiskStore, PersistError> {
        let (d, disk, journal) = Self::open_parts(dir, Self::store_options_within(budget)).await?;
        // Counts and header keys come from the store's index, without reading records.
        // A record that does not decode is reported when it is read.
        let loaded: u64 = KINDS.iter().map(|k| disk.len_of_kind(*k) as u64).sum();
        // Header keys are 8 bytes big-endian, so the greatest key is the highest number.
        let max_header = disk
            .max_key_of_kind(KIND_HEADER)
            .map_err(|source| PersistError::Store {
                dir: d.clone(),
                source,
            })?
            .map(|k| <[u8; 8]>::try_from(&k[..]).map(u64::from_be_bytes))
            .transpose()
            .map_err(|_| PersistError::Corrupt {
                dir: d.clone(),
                what: "header key",
            })?;
        let journal_now = journal.load().map_err(|source| PersistError::Journal {
            dir: d.clone(),
            source,
        })?;
        Ok(DiskStore {
            disk,
            journal,
            pending: Vec::new(),
            pending_at: Default::default(),
            pending_new: [0; KIND_SLOTS],
            pending_of_kind: [0; KIND_SLOTS],
            journal_now,
            journal_pending: false,
            headers: std::cell::RefCell::new(HeaderCache::new(budget.header_cache_entries())),
            max_header,
            dir: d,
            read_error: Default::default(),
            loaded_records: loaded,
        })
    }

    /// The store and journal of `dir`, each error naming the directory.
    async fn open_parts(
        dir: &Path,
        opts: StoreOptions,
    ) -> Result<(String, Store, Journal), PersistError> {
        let d = dir.display().to_string();
        let disk = Store::open(dir.join("store"), opts)
            .await
            .map_err(|source| PersistError::Store {
                dir: d.clone(),
                source,
            })?;
        let journal = Journal::open(dir, "ethsync").map_err(|source| PersistError::Journal {
            dir: d.clone(),
            source,
        })?;
        Ok((d, disk, journal))
    }

    /// Read everything stored in `dir` into memory (for tools over a finished data
    /// directory and tests; a sync never does this).
    pub async fn load_all(dir: &Path) -> Result<MemStore, PersistError> {
        let (d, disk, journal) = Self::open_parts(dir, Self::store_options()).await?;
        let mut mem = MemStore::default();
        {
            let mut scan = disk.scan_all();
            while let Some(rec) = scan.next().await {
                let rec = rec.map_err(|source| PersistError::Store {
                    dir: d.clone(),
                    source,
                })?;
                if !KINDS.contains(&rec.kind) {
                    continue;
                }
                let corrupt = |what| PersistError::Corrupt {
                    dir: d.clone(),
                    what,
                };
                load_one(&mut mem, rec.kind, rec.key, rec.value.to_vec(), corrupt)?;
            }
        }
        mem.journal = journal.load().map_err(|source| PersistError::Journal {
            dir: d.clone(),
            source,
        })?;
        disk.close()
            .await
            .map_err(|source| PersistError::Store { dir: d, source })?;
        Ok(mem)
    }

    /// A committed record read from disk with its checksum verified (tools over a
    /// finished data directory: the pending queue is not consulted, errors are returned).
    fn read_committed(&self, kind: u8, key: &[u8]) -> Result<Option<Vec<u8>>, PersistError> {
        self.disk
            .get_blocking(kind, key)
            .map_err(|source| PersistError::Store {
                dir: self.dir.clone(),
                source,
            })
    }

    /// The committed trie node `hash`, read from disk (None: not stored here).
    pub fn read_node(&self, hash: &B256) -> Result<Option<Vec<u8>>, PersistError> {
        self.read_committed(KIND_NODE, hash.as_slice())
    }

    /// The committed contract code `hash`, read from disk (None: not stored here).
    pub fn read_code(&self, hash: &B256) -> Result<Option<Vec<u8>>, PersistError> {
        self.read_committed(KIND_CODE, hash.as_slice())
    }

    /// Whether header `number` is committed (the index answers; nothing is read).
    pub fn has_committed_header(&self, number: u64) -> bool {
        self.disk.contains(KIND_HEADER, &number.to_be_bytes())
    }

    /// Whether the body of block `number` is committed (the index answers; nothing is
    /// read).
    pub fn has_committed_body(&self, number: u64) -> bool {
        self.disk.contains(KIND_BODY, &number.to_be_bytes())
    }

    /// The committed header `number`, read from disk and decoded.
    pub fn read_header(&self, number: u64) -> Result<Option<Header>, PersistError> {
        match self.read_committed(KIND_HEADER, &number.to_be_bytes())? {
            Some(raw) => Header::decode(&raw)
                .map(Some)
                .map_err(|_| PersistError::Corrupt {
                    dir: self.dir.clone(),
                    what: "header",
                }),
            None => Ok(None),
        }
    }

    /// The committed headers numbered `lo..=hi`, sorted: the index's runs over the range
    /// and the records are read in file order (far fewer reads than one header at a
    /// time). A header stored under another number is an error.
    pub fn read_headers_in(&self, lo: u64, hi: u64) -> Result<Vec<Header>, PersistError> {
        let corrupt = || PersistError::Corrupt {
            dir: self.dir.clone(),
            what: "header",
        };
        self.disk
            .entries_in(KIND_HEADER, &lo.to_be_bytes(), &hi.to_be_bytes())
            .map_err(|source| PersistError::Store {
                dir: self.dir.clone(),
                source,
            })?
            .into_iter()
            .map(|(key, raw)| {
                let h = Header::decode_owned(raw).map_err(|_| corrupt())?;
                (key[..] == h.number.to_be_bytes())
                    .then_some(h)
                    .ok_or_else(corrupt)
            })
            .collect()
    }

    /// The numbers in `lo..=hi` whose bodies are committed, sorted (the index answers;
    /// no body is read).
    pub fn committed_body_numbers_in(&self, lo: u64, hi: u64) -> Result<Vec<u64>, PersistError> {
        self.disk
            .numbers_in(KIND_BODY, lo, hi)
            .map_err(|source| PersistError::Store {
                dir: self.dir.clone(),
                source,
            })
    }

    /// The committed body of block `number`, read from disk.
    pub fn read_body(&self, number: u64) -> Result<Option<Body>, PersistError> {
        Ok(self
            .read_committed(KIND_BODY, &number.to_be_bytes())?
            .map(|raw| Body { raw }))
    }

    /// The committed receipts of block `number`, read from disk.
    pub fn read_receipts(&self, number: u64) -> Result<Option<Receipts>, PersistError> {
        Ok(self
            .read_committed(KIND_RECEIPTS, &number.to_be_bytes())?
            .map(|raw| Receipts { raw }))
    }

    fn queue(&mut self, kind: u8, pk: B256, key: Vec<u8>, value: Vec<u8>, on_disk: bool) {
        let at = self.pending.len();
        if self.pending_at.insert((kind, pk), at).is_none() && !on_disk {
            self.pending_new[kind as usize] += 1;
        }
        self.pending_of_kind[kind as usize] += 1;
        self.pending.push((kind, key, value));
    }

    fn pending_value(&self, kind: u8, pk: &B256) -> Option<&[u8]> {
        let at = *self.pending_at.get(&(kind, *pk))?;
        Some(&self.pending[at].2)
    }

    fn has(&self, kind: u8, pk: &B256, key: &[u8]) -> bool {
        self.pending_at.contains_key(&(kind, *pk)) || self.disk.contains(kind, key)
    }

    /// The value of (kind, key): pending, else read from disk. A read error is kept for
    /// the next commit and the item treated as absent.
    fn value(&self, kind: u8, pk: &B256, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.pending_value(kind, pk) {
            return Some(v.to_vec());
        }
        match self.disk.get_blocking(kind, key) {
            Ok(v) => v,
            Err(e) => {
                self.read_error
                    .borrow_mut()
                    .get_or_insert_with(|| format!("sync store in {}: {e}", self.dir));
                None
            }
        }
    }

    fn count(&self, kind: u8) -> u64 {
        self.disk.len_of_kind(kind) as u64 + self.pending_new[kind as usize]
    }

    /// What the store holds (index only, no I/O).
    pub fn counts(&self) -> StoreCounts {
        StoreCounts {
            nodes: self.count(KIND_NODE),
            codes: self.count(KIND_CODE),
            headers: self.count(KIND_HEADER),
            bodies: self.count(KIND_BODY),
            receipts: self.count(KIND_RECEIPTS),
            accounts: self.count(KIND_ACCOUNT),
            storage_done: self.count(KIND_STORAGE_DONE),
        }
    }

    /// The highest stored header (number, hash).
    pub fn head(&self) -> Option<(u64, B256)> {
        let n = self.max_header?;
        self.header(n).map(|h| (n, h.hash))
    }

    /// Decoded headers held in the cache.
    pub fn cached_headers(&self) -> usize {
        self.headers.borrow().len()
    }

    /// Write and flush what the engine stored since the last commit, then save the journal.
    pub async fn commit(&mut self) -> Result<(), PersistError> {
        if let Some(e) = self.read_error.borrow().as_ref() {
            return Err(PersistError::Read(e.clone()));
        }
        if self.pending.is_empty() && !self.journal_pending {
            return Ok(());
        }
        let d = self.dir.clone();
        for (kind, k, v) in &self.pending {
            self.disk
                .put(*kind, k, v)
                .await
                .map_err(|source| PersistError::Store {
                    dir: d.clone(),
                    source,
                })?;
        }
        self.disk
            .flush()
            .await
            .map_err(|source| PersistError::Store {
                dir: d.clone(),
                source,
            })?;
        // Durable and in the store's index: read from disk from now on.
        self.pending.clear();
        self.pending_at.clear();
        self.pending_new = [0; KIND_SLOTS];
        self.pending_of_kind = [0; KIND_SLOTS];
        // A large batch (a rebuilt trie block, a large storage trie) leaves no large
        // buffers behind: the queue's memory follows the batch, not the largest one seen.
        if self.pending.capacity() > KEEP_PENDING_RECORDS {
            self.pending.shrink_to(KEEP_PENDING_RECORDS);
        }
        if self.pending_at.capacity() > KEEP_PENDING_RECORDS {
            self.pending_at.shrink_to(KEEP_PENDING_RECORDS);
        }
        if self.journal_pending {
            let j = self.journal_now.clone().unwrap_or_default();
            self.journal
                .save_off_executor(j)
                .await
                .map_err(|source| PersistError::Journal {
                    dir: d.clone(),
                    source,
                })?;
            self.journal_pending = false;
        }
        Ok(())
    }

    /// Commit and close the store cleanly (writes its index checkpoint).
    pub async fn close(mut self) -> Result<(), PersistError> {
        self.commit().await?;
        let d = self.dir.clone();
        self.disk
            .close()
            .await
            .map_err(|source| PersistError::Store { dir: d, source })
    }
}

fn encode_slots(slots: &[(B256, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(slots.iter().map(|s| 36 + s.1.len()).sum());
    for (h, v) in slots {
        out.extend_from_slice(h.as_slice());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

fn decode_slots(mut b: &[u8]) -> Option<Vec<(B256, Vec<u8>)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 36 {
            return None;
        }
        let h = B256::from_slice(&b[..32]);
        let len = u32::from_le_bytes(b[32..36].try_into().ok()?) as usize;
        let v = b.get(36..36 + len)?;
        out.push((h, v.to_vec()));
        b = &b[36 + len..];
    }
    Some(out)
}

fn encode_progress(root: B256, left: &[(B256, B256)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + left.len() * 64);
    out.extend_from_slice(root.as_slice());
    for (o, l) in left {
        out.extend_from_slice(o.as_slice());
        out.extend_from_slice(l.as_slice());
    }
    out
}

fn decode_progress(b: &[u8]) -> Option<(B256, Vec<(B256, B256)>)> {
    if b.len() < 32 || (b.len() - 32) % 64 != 0 {
        return None;
    }
    let root = B256::from_slice(&b[..32]);
    let left = b[32..]
        .chunks_exact(64)
        .map(|c| (B256::from_slice(&c[..32]), B256::from_slice(&c[32..])))
        .collect();
    Some((root, left))
}

/// Put one stored record into an in-memory store.
fn load_one(
    mem: &mut MemStore,
    kind: u8,
    k: &[u8],
    v: Vec<u8>,
    corrupt: impl Fn(&'static str) -> PersistError,
) -> Result<(), PersistError> {
    let key32 = || (k.len() == 32).then(|| B256::from_slice(k));
    let num = || <[u8; 8]>::try_from(k).ok().map(u64::from_be_bytes);
    match kind {
        KIND_NODE => {
            mem.nodes.insert(key32().ok_or(corrupt("node key"))?, v);
        }
        KIND_CODE => {
            mem.codes.insert(key32().ok_or(corrupt("code key"))?, v);
        }
        KIND_HEADER => {
            let h = Header::decode(&v).map_err(|_| corrupt("header"))?;
            mem.headers.insert(num().ok_or(corrupt("header key"))?, h);
        }
        KIND_BODY => {
            mem.bodies
                .insert(num().ok_or(corrupt("body key"))?, Body { raw: v });
        }
        KIND_RECEIPTS => {
            mem.receipts
                .insert(num().ok_or(corrupt("receipts key"))?, Receipts { raw: v });
        }
        KIND_ACCOUNT => {
            mem.accounts
                .insert(key32().ok_or(corrupt("account key"))?, v);
        }
        KIND_STORAGE_SLOTS => {
            if k.len() != 64 {
                return Err(corrupt("storage slots key"));
            }
            let slots = decode_slots(&v).ok_or(corrupt("storage slots"))?;
            mem.storage_slots.insert(
                (B256::from_slice(&k[..32]), B256::from_slice(&k[32..])),
                slots,
            );
        }
        KIND_STORAGE_PROGRESS => {
            let p = decode_progress(&v).ok_or(corrupt("storage progress"))?;
            mem.storage_progress
                .insert(key32().ok_or(corrupt("storage progress key"))?, p);
        }
        KIND_KNOWN_SUBTRIE => {
            mem.known_subtries
                .insert(key32().ok_or(corrupt("known subtrie key"))?, v);
        }
        _ => {
            mem.storage_done
                .insert(key32().ok_or(corrupt("storage key"))?);
        }
    }
    Ok(())
}

impl SyncStore for DiskStore {
    fn has_node(&self, hash: &B256) -> bool {
        self.has(KIND_NODE, hash, hash.as_slice())
    }
    fn get_node(&self, hash: &B256) -> Option<Vec<u8>> {
        self.value(KIND_NODE, hash, hash.as_slice())
    }
    fn put_node(&mut self, hash: B256, rlp: &[u8]) {
        self.put_new_node(hash, rlp);
    }
    fn put_new_node(&mut self, hash: B256, rlp: &[u8]) -> bool {
        // Content-addressed: written once.
        if self.has_node(&hash) {
            return false;
        }
        self.queue(KIND_NODE, hash, hash.to_vec(), rlp.to_vec(), false);
        true
    }
    fn put_new_node_owned(&mut self, hash: B256, rlp: Vec<u8>) -> bool {
        if self.has_node(&hash) {
            return false;
        }
        self.queue(KIND_NODE, hash, hash.to_vec(), rlp, false);
        true
    }
    fn has_code(&self, hash: &B256) -> bool {
        self.has(KIND_CODE, hash, hash.as_slice())
    }
    fn put_code(&mut self, hash: B256, code: &[u8]) {
        if self.has_code(&hash) {
            return;
        }
        self.queue(KIND_CODE, hash, hash.to_vec(), code.to_vec(), false);
    }
    fn put_header(&mut self, header: &Header) {
        self.put_header_owned(header.clone())
    }
    fn put_header_owned(&mut self, header: Header) {
        let n = header.number;
        let key = n.to_be_bytes();
        let on_disk = self.disk.contains(KIND_HEADER, &key);
        self.queue(
            KIND_HEADER,
            num_key(n),
            key.to_vec(),
            header.raw.clone(),
            on_disk,
        );
        self.max_header = self.max_header.max(Some(n));
        let mut cache = self.headers.borrow_mut();
        cache.young.remove(&n);
        cache.old.remove(&n);
        cache.insert(header);
    }
    fn header(&self, number: u64) -> Option<Header> {
        if let Some(h) = self.headers.borrow_mut().get(number) {
            return Some(h);
        }
        let raw = self.value(KIND_HEADER, &num_key(number), &number.to_be_bytes())?;
        match Header::decode(&raw) {
            Ok(h) => {
                self.headers.borrow_mut().insert(h.clone());
                Some(h)
            }
            Err(_) => {
                self.read_error.borrow_mut().get_or_insert_with(|| {
                    format!(
                        "sync store in {}: stored header {number} does not decode",
                        self.dir
                    )
                });
                None
            }
        }
    }
    fn put_body(&mut self, number: u64, body: &Body) {
        let key = number.to_be_bytes();
        let on_disk = self.disk.contains(KIND_BODY, &key);
        self.queue(
            KIND_BODY,
            num_key(number),
            key.to_vec(),
            body.raw.clone(),
            on_disk,
        );
    }
    fn has_body(&self, number: u64) -> bool {
        self.has(KIND_BODY, &num_key(number), &number.to_be_bytes())
    }
    fn put_receipts(&mut self, number: u64, receipts: &Receipts) {
        let key = number.to_be_bytes();
        let on_disk = self.disk.contains(KIND_RECEIPTS, &key);
        self.queue(
            KIND_RECEIPTS,
            num_key(number),
            key.to_vec(),
            receipts.raw.clone(),
            on_disk,
        );
    }
    fn has_receipts(&self, number: u64) -> bool {
        self.has(KIND_RECEIPTS, &num_key(number), &number.to_be_bytes())
    }
    fn put_account(&mut self, hash: B256, rlp: &[u8]) {
        let on_disk = self.disk.contains(KIND_ACCOUNT, hash.as_slice());
        self.queue(KIND_ACCOUNT, hash, hash.to_vec(), rlp.to_vec(), on_disk);
    }
    fn has_account(&self, hash: &B256) -> bool {
        self.has(KIND_ACCOUNT, hash, hash.as_slice())
    }
    fn put_new_account(&mut self, hash: B256, rlp: &[u8]) -> bool {
        self.put_new_account_owned(hash, rlp.to_vec())
    }
    fn put_new_account_owned(&mut self, hash: B256, rlp: Vec<u8>) -> bool {
        // One lookup: a stored leaf is not written again.
        if self.has_account(&hash) {
            return false;
        }
        self.queue(KIND_ACCOUNT, hash, hash.to_vec(), rlp, false);
        true
    }
    fn accounts_in(&self, lo: &B256, hi: &B256) -> Vec<(B256, Vec<u8>)> {
        // The store's index is not ordered: one pass over its account fingerprints, the
        // records in range read, then the pending ones (newer) over them.
        let stored = match self
            .disk
            .entries_in(KIND_ACCOUNT, lo.as_slice(), hi.as_slice())
        {
            Ok(v) => v,
            Err(e) => {
                self.read_error
                    .borrow_mut()
                    .get_or_insert_with(|| format!("sync store in {}: {e}", self.dir));
                Vec::new()
            }
        };
        let mut out: std::collections::BTreeMap<B256, Vec<u8>> = stored
            .into_iter()
            .map(|(k, v)| (B256::from_slice(&k), v))
            .collect();
        // The commit queue is scanned only when it holds accounts (the snap rebuild reads
        // thousands of blocks while its queue holds only the nodes it built).
        if self.pending_of_kind[KIND_ACCOUNT as usize] > 0 {
            for ((kind, k), at) in &self.pending_at {
                if *kind == KIND_ACCOUNT && k >= lo && k <= hi {
                    out.insert(*k, self.pending[*at].2.clone());
                }
            }
        }
        out.into_iter().collect()
    }
    fn put_storage_done(&mut self, account: B256) {
        if self.storage_done(&account) {
            return;
        }
        self.queue(KIND_STORAGE_DONE, account, account.to_vec(), vec![1], false);
    }
    fn storage_done(&self, account: &B256) -> bool {
        self.has(KIND_STORAGE_DONE, account, account.as_slice())
    }
    fn put_storage_slots(&mut self, account: B256, origin: B256, slots: &[(B256, Vec<u8>)]) {
        let mut key = account.to_vec();
        key.extend_from_slice(origin.as_slice());
        // Pending-read key: the run is read back only at a restart, from the store.
        let pk = alloy_primitives::keccak256(&key);
        let on_disk = self.disk.contains(KIND_STORAGE_SLOTS, &key);
        self.queue(KIND_STORAGE_SLOTS, pk, key, encode_slots(slots), on_disk);
    }
    fn put_storage_progress(&mut self, account: B256, root: B256, left: &[(B256, B256)]) {
        let on_disk = self
            .disk
            .contains(KIND_STORAGE_PROGRESS, account.as_slice());
        self.queue(
            KIND_STORAGE_PROGRESS,
            account,
            account.to_vec(),
            encode_progress(root, left),
            on_disk,
        );
    }
    fn storage_progress(&self, account: &B256) -> Option<StorageProgress> {
        let raw = self.value(KIND_STORAGE_PROGRESS, account, account.as_slice())?;
        let (root, left) = decode_progress(&raw)?;
        let mut lo = account.to_vec();
        lo.extend_from_slice(&[0u8; 32]);
        let mut hi = account.to_vec();
        hi.extend_from_slice(&[0xffu8; 32]);
        let mut keys = self.disk.keys_in(KIND_STORAGE_SLOTS, &lo, &hi);
        keys.extend(
            self.pending
                .iter()
                .filter(|(kind, k, _)| *kind == KIND_STORAGE_SLOTS && k[..32] == account[..])
                .map(|(_, k, _)| k.clone()),
        );
        keys.sort_unstable();
        keys.dedup();
        let mut slots = Vec::new();
        let mut runs = Vec::with_capacity(keys.len());
        for k in keys {
            let pk = alloy_primitives::keccak256(&k);
            let v = self.value(KIND_STORAGE_SLOTS, &pk, &k)?;
            slots.extend(decode_slots(&v)?);
            runs.push(B256::from_slice(&k[32..]));
        }
        slots.sort_by_key(|a| a.0);
        slots.dedup_by(|a, b| a.0 == b.0);
        Some(StorageProgress {
            root,
            left,
            slots,
            runs,
        })
    }
    fn storage_run(&self, account: &B256, origin: &B256) -> Option<SlotRun> {
        let mut key = account.to_vec();
        key.extend_from_slice(origin.as_slice());
        let pk = alloy_primitives::keccak256(&key);
        decode_slots(&self.value(KIND_STORAGE_SLOTS, &pk, &key)?)
    }
    fn put_known_subtrie(&mut self, first: B256, record: &[u8]) {
        self.queue(
            KIND_KNOWN_SUBTRIE,
            first,
            first.to_vec(),
            record.to_vec(),
            false,
        );
    }
    fn known_subtries(&self, max: usize) -> Vec<(B256, Vec<u8>)> {
        let (lo, hi) = (B256::ZERO, B256::repeat_byte(0xff));
        let mut out: std::collections::BTreeMap<B256, Vec<u8>> =
            match self
                .disk
                .entries_in(KIND_KNOWN_SUBTRIE, lo.as_slice(), hi.as_slice())
            {
                Ok(v) => v
                    .into_iter()
                    .map(|(k, v)| (B256::from_slice(&k), v))
                    .collect(),
                // Only a help for the rebuild: without them it hashes the leaves again.
                Err(e) => {
                    tracing::warn!("sync store in {}: known subtries not read: {e}", self.dir);
                    Default::default()
                }
            };
        if self.pending_of_kind[KIND_KNOWN_SUBTRIE as usize] > 0 {
            for ((kind, k), at) in &self.pending_at {
                if *kind == KIND_KNOWN_SUBTRIE {
                    out.insert(*k, self.pending[*at].2.clone());
                }
            }
        }
        out.into_iter().take(max).collect()
    }
    fn write_journal(&mut self, bytes: &[u8]) {
        self.journal_now = Some(bytes.to_vec());
        self.journal_pending = true;
    }
    fn read_journal(&self) -> Option<Vec<u8>> {
        self.journal_now.clone()
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;

    use catchup_io::exec::run_unbound as run;

    #[test]
    fn held_header_batches_fit_their_share_and_leave_room_for_the_window() {
        let held = |mib: u64| {
            StoreBudget {
                memory_budget_bytes: mib << 20,
            }
            .held_header_batches(192)
        };
        let cfg = crate::eth::sync::config::SyncConfig::default();
        assert_eq!(held(512), cfg.held_header_batches);
        assert_eq!(held(512), 170);
        assert_eq!(held(1), 2, "never below 2");
        for mib in [16u64, 64, 512, 2048] {
            let b = StoreBudget {
                memory_budget_bytes: mib << 20,
            };
            let bytes = held(mib) as u64 * 192 * 1024;
            assert!(
                held(mib) == 2 || bytes <= b.memory_budget_bytes / 16,
                "{mib} MiB"
            );
            // A full window of answers can always be held: the cap never throttles the
            // fetch in the usual order, only behind a late batch.
            assert!(held(mib) >= b.max_requests_in_flight(), "{mib} MiB");
        }
    }

    #[test]
    fn the_request_window_fits_the_budgets_share_for_responses() {
        let window = |mib: u64| {
            StoreBudget {
                memory_budget_bytes: mib << 20,
            }
            .max_requests_in_flight()
        };
        // The engine's default window at the default budget.
        assert_eq!(
            window(512),
            crate::eth::sync::config::SyncConfig::default().max_concurrent_requests
        );
        assert_eq!(window(64), 2);
        assert_eq!(window(16), 2, "never below 2");
        assert_eq!(window(2048), 64);
        for mib in [16u64, 64, 512, 2048] {
            let n = window(mib) as u64;
            assert!(
                n == 2 || n * (2 << 20) <= (mib << 20) / 16,
                "{mib} MiB: {n}"
            );
        }
    }

    fn h(i: u64, salt: u8) -> B256 {
        let mut b = [salt; 32];
        b[..8].copy_from_slice(&i.to_be_bytes());
        B256::from(b)
    }

    fn blob(i: u64, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i as usize * 13 + j) as u8).collect()
    }

    /// Headers of a small chain (real RLP: the store decodes them).
    fn headers(n: u64) -> Vec<Header> {
        crate::eth::sync::chain::generate_chain(n, B256::repeat_byte(7), 3).headers
    }

    /// The same puts into `s` and into a `MemStore`, committed every 250 steps.
    async fn fill_into(s: &mut DiskStore, want: &mut MemStore, hs: &[Header]) {
        for i in 0..3000u64 {
            let node = blob(i, 100 + (i as usize % 500));
            s.put_node(h(i, 1), &node);
            want.put_node(h(i, 1), &node);
            let acc = blob(i, 70 + (i as usize % 40));
            s.put_account(h(i % 700, 2), &acc);
            want.put_account(h(i % 700, 2), &acc);
            if i % 5 == 0 {
                s.put_code(h(i, 3), &blob(i, 600));
                want.put_code(h(i, 3), &blob(i, 600));
                s.put_storage_done(h(i, 4));
                want.put_storage_done(h(i, 4));
                s.put_body(i, &Body { raw: blob(i, 300) });
                want.put_body(i, &Body { raw: blob(i, 300) });
                s.put_receipts(i, &Receipts { raw: blob(i, 200) });
                want.put_receipts(i, &Receipts { raw: blob(i, 200) });
            }
            if let Some(hd) = hs.get(i as usize) {
                s.put_header(hd);
                want.put_header(hd);
            }
            if i % 100 == 7 {
                // Runs of one storage trie and its progress, rewritten as it goes.
                let run: Vec<(B256, Vec<u8>)> = (0..5)
                    .map(|j| (h(i * 10 + j, 6), blob(i + j, 33)))
                    .collect();
                s.put_storage_slots(h(1, 5), h(i, 6), &run);
                want.put_storage_slots(h(1, 5), h(i, 6), &run);
                let left = [(h(i, 7), h(i + 1, 7))];
                s.put_storage_progress(h(1, 5), h(i, 8), &left);
                want.put_storage_progress(h(1, 5), h(i, 8), &left);
            }
            if i % 250 == 249 {
                s.write_journal(&i.to_le_bytes());
                want.write_journal(&i.to_le_bytes());
                s.commit().await.unwrap();
            }
        }
    }

    /// Fill a store over several commits (accounts overwritten later) and close it.
    async fn fill(dir: &Path) -> MemStore {
        let mut s = DiskStore::open(dir).await.unwrap();
        let mut want = MemStore::default();
        fill_into(&mut s, &mut want, &headers(40)).await;
        s.close().await.unwrap();
        want
    }

    /// Every read of `s` equals the same read of `want`.
    fn same_reads(s: &DiskStore, want: &MemStore) {
        for (k, v) in &want.nodes {
            assert!(s.has_node(k));
            assert_eq!(s.get_node(k).as_deref(), Some(v));
        }
        for k in want.codes.keys() {
            assert!(s.has_code(k));
        }
        assert!(!s.has_node(&h(99_999, 1)));
        assert!(s.get_node(&h(99_999, 1)).is_none());
        assert!(!s.has_code(&h(1, 3)));
        for (n, hd) in &want.headers {
            assert_eq!(s.header(*n).map(|x| x.raw), Some(hd.raw.clone()));
        }
        assert!(s.header(10_000).is_none());
        for n in 0..3001u64 {
            assert_eq!(s.has_body(n), want.has_body(n), "body {n}");
            assert_eq!(s.has_receipts(n), want.has_receipts(n), "receipts {n}");
        }
        for k in want.storage_done.iter() {
            assert!(s.storage_done(k));
        }
        assert!(!s.storage_done(&h(1, 4)));
        let all = (B256::ZERO, B256::repeat_byte(0xff));
        assert_eq!(
            s.accounts_in(&all.0, &all.1),
            want.accounts_in(&all.0, &all.1)
        );
        let (lo, hi) = (h(100, 2), h(199, 2));
        assert_eq!(s.accounts_in(&lo, &hi), want.accounts_in(&lo, &hi));
        assert_eq!(s.accounts_in(&lo, &hi).len(), 100);
        assert!(s.has_account(&h(5, 2)) && !s.has_account(&h(700, 2)));
        assert_eq!(s.read_journal(), want.journal);
        let p = s.storage_progress(&h(1, 5)).expect("storage progress");
        assert_eq!(Some(p.clone()), want.storage_progress(&h(1, 5)));
        assert_eq!(p.slots.len(), 30 * 5);
        assert!(s.storage_progress(&h(2, 5)).is_none());
        let c = s.counts();
        assert_eq!(c.nodes, want.nodes.len() as u64);
        assert_eq!(c.codes, want.codes.len() as u64);
        assert_eq!(c.accounts, want.accounts.len() as u64);
        assert_eq!(c.headers, want.headers.len() as u64);
        assert_eq!(c.bodies, want.bodies.len() as u64);
        assert_eq!(c.receipts, want.receipts.len() as u64);
        assert_eq!(c.storage_done, want.storage_done.len() as u64);
        assert_eq!(
            s.head().map(|x| x.1),
            want.headers.last_key_value().map(|(_, h)| h.hash)
        );
    }

    #[test]
    fn reads_pending_committed_and_reopened_equal_a_memory_store() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        run(async move {
            // A tiny budget: the header cache holds 64 headers of the 40 + 20 stored
            // below, so some header reads go to disk.
            let tiny = StoreBudget {
                memory_budget_bytes: 1,
            };
            let mut s = DiskStore::open_with(&dir, tiny).await.unwrap();
            let mut want = MemStore::default();
            let hs = headers(60);
            fill_into(&mut s, &mut want, &hs[..40]).await;
            // Some puts after the last commit: served from the commit queue.
            for hd in &hs[40..] {
                s.put_header(hd);
                want.put_header(hd);
            }
            s.put_node(h(50_000, 1), b"pending node");
            want.put_node(h(50_000, 1), b"pending node");
            s.put_account(h(5, 2), b"new value");
            want.put_account(h(5, 2), b"new value");
            same_reads(&s, &want);
            s.commit().await.unwrap();
            same_reads(&s, &want);
            assert!(s.cached_headers() <= 64);
            // The smallest index memtable: the keccak-keyed records went to index runs.
            let st = s.disk.stats();
            assert!(st.index_flushes >= 3 && st.index_runs >= 1, "{st:?}");
            s.close().await.unwrap();
            let s = DiskStore::open_with(&dir, tiny).await.unwrap();
            assert!(s.disk.stats().opened_from_checkpoint);
            same_reads(&s, &want);
            let c = s.counts();
            assert_eq!(
                (c.nodes, c.codes, c.accounts, c.storage_done),
                (
                    want.nodes.len() as u64,
                    want.codes.len() as u64,
                    want.accounts.len() as u64,
                    want.storage_done.len() as u64
                )
            );
            s.close().await.unwrap();
        });
    }

    #[test]
    fn known_subtries_are_read_back_pending_and_after_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        run(async move {
            let mut s = DiskStore::open(&dir).await.unwrap();
            s.put_known_subtrie(h(2, 9), b"second");
            s.put_known_subtrie(h(1, 9), b"first");
            let want = vec![(h(1, 9), b"first".to_vec()), (h(2, 9), b"second".to_vec())];
            let mut sorted = want.clone();
            sorted.sort();
            assert_eq!(s.known_subtries(10), sorted, "pending");
            s.commit().await.unwrap();
            s.put_known_subtrie(h(3, 9), b"third");
            assert_eq!(s.known_subtries(10).len(), 3, "committed and pending");
            assert_eq!(s.known_subtries(2).len(), 2, "at most max");
            s.close().await.unwrap();
            let s = DiskStore::open(&dir).await.unwrap();
            let back = s.known_subtries(10);
            assert_eq!(back.len(), 3);
            assert_eq!(&back[..2], &sorted[..]);
            s.close().await.unwrap();
        });
    }

    #[test]
    fn reopen_loads_exactly_what_was_stored() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        run(async move {
            let want = fill(&dir).await;
            let s = DiskStore::open(&dir).await.unwrap();
            let expect = (want.nodes.len()
                + want.codes.len()
                + want.accounts.len()
                + want.storage_done.len()
                + want.headers.len()
                + want.bodies.len()
                + want.receipts.len()
                + want.storage_slots.len()
                + want.storage_progress.len()) as u64;
            assert_eq!(s.loaded_records, expect);
            same_reads(&s, &want);
            s.close().await.unwrap();
            let got = DiskStore::load_all(&dir).await.unwrap();
            assert_eq!(got.nodes, want.nodes);
            assert_eq!(got.codes, want.codes);
            assert_eq!(got.accounts, want.accounts);
            assert_eq!(got.storage_done, want.storage_done);
            let raw = |m: &std::collections::BTreeMap<u64, Body>| {
                m.iter()
                    .map(|(k, v)| (*k, v.raw.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(raw(&got.bodies), raw(&want.bodies));
            let rraw = |m: &std::collections::BTreeMap<u64, Receipts>| {
                m.iter()
                    .map(|(k, v)| (*k, v.raw.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(rraw(&got.receipts), rraw(&want.receipts));
            assert_eq!(got.journal, Some(2999u64.to_le_bytes().to_vec()));
            // Overwritten accounts count once: the latest value is loaded.
            assert_eq!(got.accounts.len(), 700);
        });
    }

    #[test]
    fn chain_keys_past_the_memtable_live_in_runs_and_the_head_is_found_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        run(async move {
            // A memtable of 64 KiB (about 900 keys): most of the 3,000 headers, their
            // bodies and receipts are kept in the index's runs.
            let budget = StoreBudget {
                memory_budget_bytes: 256 << 10,
            };
            // `fill_into` stores the first 3,000 of these.
            let hs = headers(3000);
            let top = hs.get(2999).map(|h| (h.number, h.hash));
            let mut s = DiskStore::open_with(&dir, budget).await.unwrap();
            let mut want = MemStore::default();
            fill_into(&mut s, &mut want, &hs).await;
            let st = s.disk.stats();
            assert!(st.index_runs > 0, "{st:?}");
            assert!(st.index_memtable_keys < 1000, "{st:?}");
            // Chain keys are among those the runs and the memtable hold.
            let by_fp = want.nodes.len()
                + want.codes.len()
                + want.accounts.len()
                + want.storage_done.len()
                + want.headers.len()
                + want.bodies.len()
                + want.receipts.len();
            assert!(
                st.index_run_entries + st.index_memtable_keys >= by_fp as u64,
                "{st:?}"
            );
            assert_eq!(s.head(), top);
            s.close().await.unwrap();
            for _ in 0..2 {
                let s = DiskStore::open_with(&dir, budget).await.unwrap();
                assert_eq!(s.head(), top);
                assert_eq!(s.counts().headers, 3000);
                same_reads(&s, &want);
                s.close().await.unwrap();
            }
        });
    }

    #[test]
    fn a_damaged_record_stops_the_load_with_segment_and_offset() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        run(async move {
            fill(&dir).await;
            // Under the index checkpoint of the clean close the store's open does not read
            // the records: loading them all (a verifying scan) finds the damage.
            let seg = dir.join("store").join("seg-00000001.dat");
            let mut bytes = std::fs::read(&seg).unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 0x40;
            std::fs::write(&seg, &bytes).unwrap();
            match DiskStore::load_all(&dir).await.map(|_| ()) {
                Err(e @ PersistError::Store { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains("corrupt store segment"), "{msg}");
                    assert!(msg.contains("seg-00000001.dat at offset"), "{msg}");
                }
                Err(e) => panic!("expected a store error, got {e}"),
                Ok(_) => panic!("a damaged store loaded"),
            }
        });
    }
}

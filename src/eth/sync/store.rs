//! What the engines persist: the per-shard store interface (verified items only) and an
//! in-memory implementation that survives simulated kills.

use std::collections::{BTreeMap, HashMap, HashSet};

use alloy_primitives::map::B256Map;
use alloy_primitives::B256;

use super::types::{Body, Header, Receipts};

/// A run of verified storage slots: (slot hash, value).
pub type SlotRun = Vec<(B256, Vec<u8>)>;

/// The stored progress of an incomplete storage trie (see
/// [`SyncStore::storage_progress`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageProgress {
    pub root: B256,
    pub left: Vec<(B256, B256)>,
    pub slots: Vec<(B256, Vec<u8>)>,
    /// The origins of the stored runs those slots came from (sorted).
    pub runs: Vec<B256>,
}

/// A shard's store. Only verified items are ever written. Content-addressed items are
/// written once.
pub trait SyncStore {
    fn has_node(&self, hash: &B256) -> bool;
    fn get_node(&self, hash: &B256) -> Option<Vec<u8>>;
    fn put_node(&mut self, hash: B256, rlp: &[u8]);
    /// Store a node unless it is stored already; whether it was new.
    fn put_new_node(&mut self, hash: B256, rlp: &[u8]) -> bool {
        if self.has_node(&hash) {
            return false;
        }
        self.put_node(hash, rlp);
        true
    }
    /// [`SyncStore::put_new_node`], for a node the caller no longer needs.
    fn put_new_node_owned(&mut self, hash: B256, rlp: Vec<u8>) -> bool {
        self.put_new_node(hash, &rlp)
    }
    fn has_code(&self, hash: &B256) -> bool;
    fn put_code(&mut self, hash: B256, code: &[u8]);
    fn put_header(&mut self, header: &Header);
    /// [`SyncStore::put_header`] of a header the caller gives up (its bytes are moved, not
    /// copied, where the store can).
    fn put_header_owned(&mut self, header: Header) {
        self.put_header(&header)
    }
    fn header(&self, number: u64) -> Option<Header>;
    fn put_body(&mut self, number: u64, body: &Body);
    fn has_body(&self, number: u64) -> bool;
    fn put_receipts(&mut self, number: u64, receipts: &Receipts);
    fn has_receipts(&self, number: u64) -> bool;
    /// A verified account leaf (snap).
    fn put_account(&mut self, hash: B256, rlp: &[u8]);
    /// Whether the account leaf `hash` is stored.
    fn has_account(&self, hash: &B256) -> bool {
        !self.accounts_in(hash, hash).is_empty()
    }
    /// Store an account leaf unless it is stored already; whether it was new.
    fn put_new_account(&mut self, hash: B256, rlp: &[u8]) -> bool {
        if self.has_account(&hash) {
            return false;
        }
        self.put_account(hash, rlp);
        true
    }
    /// [`SyncStore::put_new_account`], for a leaf the caller no longer needs.
    fn put_new_account_owned(&mut self, hash: B256, rlp: Vec<u8>) -> bool {
        self.put_new_account(hash, &rlp)
    }
    /// Stored account leaves with `lo <= hash <= hi`, sorted.
    fn accounts_in(&self, lo: &B256, hi: &B256) -> Vec<(B256, Vec<u8>)>;
    /// Marks an account's storage trie as fully stored (snap).
    fn put_storage_done(&mut self, account: B256);
    fn storage_done(&self, account: &B256) -> bool;
    /// A verified run of a storage trie's slots (snap), the part of a range response
    /// from `origin` on, kept while the account's trie is incomplete so that a restart
    /// does not fetch it again.
    fn put_storage_slots(&mut self, account: B256, origin: B256, slots: &[(B256, Vec<u8>)]);
    /// What is left of an incomplete storage trie (snap): its storage root and the
    /// sub-ranges still to fetch, `(origin, limit)`. Replaces the previous progress.
    fn put_storage_progress(&mut self, account: B256, root: B256, left: &[(B256, B256)]);
    /// The progress of an incomplete storage trie: its root, the sub-ranges left, and
    /// every slot stored by `put_storage_slots` for it (sorted).
    fn storage_progress(&self, account: &B256) -> Option<StorageProgress>;
    /// The run stored by `put_storage_slots` for `account` at `origin`, if it can be read.
    fn storage_run(&self, account: &B256, origin: &B256) -> Option<SlotRun>;
    /// A subtrie of the account trie a verified range built whole (snap), by its first
    /// leaf: kept so that the rebuild after a restart references it instead of hashing
    /// its leaves again. The record is checked against the stored leaves before use.
    fn put_known_subtrie(&mut self, first: B256, record: &[u8]);
    /// Every record kept by [`SyncStore::put_known_subtrie`], at most `max`.
    fn known_subtries(&self, max: usize) -> Vec<(B256, Vec<u8>)>;
    /// Replace the journal atomically.
    fn write_journal(&mut self, bytes: &[u8]);
    fn read_journal(&self) -> Option<Vec<u8>>;
}

/// Trie nodes by hash, split into [`NodeMap::PARTS`] tables by the hash's first byte.
///
/// One table of millions of nodes doubles by moving every entry to random places of a
/// new table far larger than the cache, each move a cache miss, into pages touched for
/// the first time. Each part here stays small enough that its growth runs in cache, and
/// the memory freed by a part's growth is reused by the next part's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMap {
    parts: Box<[B256Map<Vec<u8>>]>,
}

impl Default for NodeMap {
    fn default() -> Self {
        NodeMap {
            parts: (0..Self::PARTS).map(|_| B256Map::default()).collect(),
        }
    }
}

impl NodeMap {
    pub const PARTS: usize = 256;

    #[inline]
    fn part(&self, hash: &B256) -> &B256Map<Vec<u8>> {
        &self.parts[hash[0] as usize]
    }

    #[inline]
    fn part_mut(&mut self, hash: &B256) -> &mut B256Map<Vec<u8>> {
        &mut self.parts[hash[0] as usize]
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.is_empty())
    }

    pub fn contains_key(&self, hash: &B256) -> bool {
        self.part(hash).contains_key(hash)
    }

    pub fn get(&self, hash: &B256) -> Option<&Vec<u8>> {
        self.part(hash).get(hash)
    }

    /// Insert or replace; the replaced value.
    pub fn insert(&mut self, hash: B256, rlp: Vec<u8>) -> Option<Vec<u8>> {
        self.part_mut(&hash).insert(hash, rlp)
    }

    /// Insert `rlp()` unless `hash` is present (one probe); whether it was inserted.
    #[inline]
    pub fn insert_new(&mut self, hash: B256, rlp: impl FnOnce() -> Vec<u8>) -> bool {
        match self.part_mut(&hash).entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(rlp());
                true
            }
        }
    }

    pub fn remove(&mut self, hash: &B256) -> Option<Vec<u8>> {
        self.part_mut(hash).remove(hash)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&B256, &Vec<u8>)> {
        self.parts.iter().flat_map(|p| p.iter())
    }

    pub fn keys(&self) -> impl Iterator<Item = &B256> {
        self.iter().map(|(k, _)| k)
    }
}

impl Extend<(B256, Vec<u8>)> for NodeMap {
    fn extend<I: IntoIterator<Item = (B256, Vec<u8>)>>(&mut self, iter: I) {
        for (h, rlp) in iter {
            self.insert(h, rlp);
        }
    }
}

impl IntoIterator for NodeMap {
    type Item = (B256, Vec<u8>);
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<B256Map<Vec<u8>>>>;
    fn into_iter(self) -> Self::IntoIter {
        self.parts.into_vec().into_iter().flatten()
    }
}

impl<'a> IntoIterator for &'a NodeMap {
    type Item = (&'a B256, &'a Vec<u8>);
    type IntoIter = Box<dyn Iterator<Item = (&'a B256, &'a Vec<u8>)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// An in-memory store with write counters.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    /// Keyed by keccak hashes: hashed by their own bytes, not by SipHash.
    pub nodes: NodeMap,
    pub codes: B256Map<Vec<u8>>,
    pub headers: BTreeMap<u64, Header>,
    pub bodies: BTreeMap<u64, Body>,
    pub receipts: BTreeMap<u64, Receipts>,
    pub accounts: BTreeMap<B256, Vec<u8>>,
    pub storage_done: HashSet<B256>,
    /// Verified slot runs of incomplete storage tries, by (account, origin).
    pub storage_slots: BTreeMap<(B256, B256), SlotRun>,
    /// Incomplete storage tries: (storage root, sub-ranges left).
    pub storage_progress: HashMap<B256, (B256, Vec<(B256, B256)>)>,
    /// Subtries verified ranges built, by first leaf (see [`SyncStore::put_known_subtrie`]).
    pub known_subtries: BTreeMap<B256, Vec<u8>>,
    pub journal: Option<Vec<u8>>,
    /// Writes of an item that was already present (should stay 0 for content-addressed data).
    pub duplicate_writes: u64,
}

impl SyncStore for MemStore {
    fn has_node(&self, hash: &B256) -> bool {
        self.nodes.contains_key(hash)
    }
    fn get_node(&self, hash: &B256) -> Option<Vec<u8>> {
        self.nodes.get(hash).cloned()
    }
    fn put_node(&mut self, hash: B256, rlp: &[u8]) {
        if self.nodes.insert(hash, rlp.to_vec()).is_some() {
            self.duplicate_writes += 1;
        }
    }
    fn put_new_node(&mut self, hash: B256, rlp: &[u8]) -> bool {
        self.nodes.insert_new(hash, || rlp.to_vec())
    }
    fn put_new_node_owned(&mut self, hash: B256, rlp: Vec<u8>) -> bool {
        self.nodes.insert_new(hash, || rlp)
    }
    fn has_code(&self, hash: &B256) -> bool {
        self.codes.contains_key(hash)
    }
    fn put_code(&mut self, hash: B256, code: &[u8]) {
        if self.codes.insert(hash, code.to_vec()).is_some() {
            self.duplicate_writes += 1;
        }
    }
    fn put_header(&mut self, header: &Header) {
        self.put_header_owned(header.clone())
    }
    fn put_header_owned(&mut self, header: Header) {
        if self.headers.insert(header.number, header).is_some() {
            self.duplicate_writes += 1;
        }
    }
    fn header(&self, number: u64) -> Option<Header> {
        self.headers.get(&number).cloned()
    }
    fn put_body(&mut self, number: u64, body: &Body) {
        if self.bodies.insert(number, body.clone()).is_some() {
            self.duplicate_writes += 1;
        }
    }
    fn has_body(&self, number: u64) -> bool {
        self.bodies.contains_key(&number)
    }
    fn has_receipts(&self, number: u64) -> bool {
        self.receipts.contains_key(&number)
    }
    fn put_receipts(&mut self, number: u64, receipts: &Receipts) {
        if self.receipts.insert(number, receipts.clone()).is_some() {
            self.duplicate_writes += 1;
        }
    }
    fn put_account(&mut self, hash: B256, rlp: &[u8]) {
        if self.accounts.insert(hash, rlp.to_vec()).is_some() {
            self.duplicate_writes += 1;
        }
    }
    fn has_account(&self, hash: &B256) -> bool {
        self.accounts.contains_key(hash)
    }
    fn put_new_account(&mut self, hash: B256, rlp: &[u8]) -> bool {
        self.put_new_account_owned(hash, rlp.to_vec())
    }
    fn put_new_account_owned(&mut self, hash: B256, rlp: Vec<u8>) -> bool {
        match self.accounts.entry(hash) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(rlp);
                true
            }
        }
    }
    fn accounts_in(&self, lo: &B256, hi: &B256) -> Vec<(B256, Vec<u8>)> {
        self.accounts
            .range(*lo..=*hi)
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }
    fn put_storage_done(&mut self, account: B256) {
        self.storage_done.insert(account);
    }
    fn storage_done(&self, account: &B256) -> bool {
        self.storage_done.contains(account)
    }
    fn put_storage_slots(&mut self, account: B256, origin: B256, slots: &[(B256, Vec<u8>)]) {
        self.storage_slots.insert((account, origin), slots.to_vec());
    }
    fn put_storage_progress(&mut self, account: B256, root: B256, left: &[(B256, B256)]) {
        self.storage_progress.insert(account, (root, left.to_vec()));
    }
    fn storage_progress(&self, account: &B256) -> Option<StorageProgress> {
        let (root, left) = self.storage_progress.get(account)?;
        let stored = || {
            self.storage_slots
                .range((*account, B256::ZERO)..=(*account, B256::repeat_byte(0xff)))
        };
        let mut slots: Vec<(B256, Vec<u8>)> =
            stored().flat_map(|(_, v)| v.iter().cloned()).collect();
        slots.sort_by_key(|a| a.0);
        slots.dedup_by(|a, b| a.0 == b.0);
        Some(StorageProgress {
            root: *root,
            left: left.clone(),
            slots,
            runs: stored().map(|((_, o), _)| *o).collect(),
        })
    }
    fn storage_run(&self, account: &B256, origin: &B256) -> Option<SlotRun> {
        self.storage_slots.get(&(*account, *origin)).cloned()
    }
    fn put_known_subtrie(&mut self, first: B256, record: &[u8]) {
        self.known_subtries.insert(first, record.to_vec());
    }
    fn known_subtries(&self, max: usize) -> Vec<(B256, Vec<u8>)> {
        self.known_subtries
            .iter()
            .take(max)
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }
    fn write_journal(&mut self, bytes: &[u8]) {
        self.journal = Some(bytes.to_vec());
    }
    fn read_journal(&self) -> Option<Vec<u8>> {
        self.journal.clone()
    }
}

/// A store whose writes become durable at `commit` (group commit after each batch of
/// events; the journal is saved after the data it names).
pub trait Commit {
    fn commit(&mut self) -> impl std::future::Future<Output = Result<(), String>>;
}

impl Commit for MemStore {
    async fn commit(&mut self) -> Result<(), String> {
        Ok(())
    }
}

impl Commit for super::persist::DiskStore {
    async fn commit(&mut self) -> Result<(), String> {
        super::persist::DiskStore::commit(self)
            .await
            .map_err(|e| e.to_string())
    }
}

//! What the engines persist: the per-shard store interface (verified items only) and an
//! in-memory implementation that survives simulated kills.

use std::collections::{BTreeMap, HashMap, HashSet};

use alloy_primitives::map::B256Map;
use alloy_primitives::B256;
use hashbrown::HashTable;

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

/// Trie nodes by hash: the entries in an append-only list of fixed-size chunks, and per
/// part (by the hash's first byte) a table of 16-byte slots: eight more bytes of the hash
/// and the entry's index.
///
/// Tables of whole entries (a 32-byte key and a `Vec`, 56 bytes) spent as much time
/// growing as inserting, moving every entry into pages touched for the first time. The
/// slots here are under a third of that size and carry their own hash, so a table's
/// growth reads neither the keys nor the list; the list grows by a chunk at a time and
/// never moves an entry. Each part stays small enough that its growth runs in cache. A
/// lookup compares the stored key only when the eight bytes match, so a miss rarely
/// reads the list.
///
/// A removed node leaves its key in the list and its bytes freed; only tests remove.
#[derive(Clone, Default)]
pub struct NodeMap {
    parts: Vec<HashTable<NodeSlot>>,
    entries: Entries,
    len: usize,
}

/// Entries in chunks of [`Entries::CHUNK`], by index.
#[derive(Clone, Default)]
struct Entries(Vec<Vec<(B256, Vec<u8>)>>);

impl Entries {
    const SHIFT: u32 = 14;
    const CHUNK: usize = 1 << Self::SHIFT;

    /// Append; the index.
    fn push(&mut self, e: (B256, Vec<u8>)) -> u64 {
        if self.0.last().is_none_or(|c| c.len() == Self::CHUNK) {
            self.0.push(Vec::with_capacity(Self::CHUNK));
        }
        let chunk = self.0.len() - 1;
        let at = (chunk as u64) << Self::SHIFT | self.0[chunk].len() as u64;
        self.0[chunk].push(e);
        at
    }
}

impl std::ops::Index<u64> for Entries {
    type Output = (B256, Vec<u8>);
    #[inline]
    fn index(&self, at: u64) -> &Self::Output {
        &self.0[(at >> Self::SHIFT) as usize][at as usize & (Self::CHUNK - 1)]
    }
}

impl std::ops::IndexMut<u64> for Entries {
    #[inline]
    fn index_mut(&mut self, at: u64) -> &mut Self::Output {
        &mut self.0[(at >> Self::SHIFT) as usize][at as usize & (Self::CHUNK - 1)]
    }
}

/// A node's place: eight bytes of its hash (the table's hash) and its entry's index.
#[derive(Clone, Copy)]
struct NodeSlot {
    tag: u64,
    at: u64,
}

#[inline]
fn node_tag(hash: &B256) -> u64 {
    u64::from_le_bytes(hash[8..16].try_into().expect("8 bytes"))
}

impl std::fmt::Debug for NodeMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeMap({} nodes)", self.len)
    }
}

impl PartialEq for NodeMap {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(h, r)| other.get(h) == Some(r))
    }
}

impl Eq for NodeMap {}

impl NodeMap {
    pub const PARTS: usize = 256;

    /// The slot of `hash` in its part, if present.
    #[inline]
    fn find(&self, hash: &B256) -> Option<&NodeSlot> {
        let tag = node_tag(hash);
        let entries = &self.entries;
        self.parts
            .get(hash[0] as usize)?
            .find(tag, |s| s.tag == tag && entries[s.at].0 == *hash)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains_key(&self, hash: &B256) -> bool {
        self.find(hash).is_some()
    }

    pub fn get(&self, hash: &B256) -> Option<&[u8]> {
        self.find(hash).map(|s| self.entries[s.at].1.as_slice())
    }

    /// Insert or replace; the replaced value.
    pub fn insert(&mut self, hash: B256, rlp: Vec<u8>) -> Option<Vec<u8>> {
        match self.find(&hash) {
            Some(s) => {
                let at = s.at;
                Some(std::mem::replace(&mut self.entries[at].1, rlp))
            }
            None => {
                self.insert_new(hash, || rlp);
                None
            }
        }
    }

    /// Insert `rlp()` unless `hash` is present (one probe); whether it was inserted.
    #[inline]
    pub fn insert_new(&mut self, hash: B256, rlp: impl FnOnce() -> Vec<u8>) -> bool {
        if self.parts.is_empty() {
            self.parts = (0..Self::PARTS).map(|_| HashTable::new()).collect();
        }
        let tag = node_tag(&hash);
        let NodeMap { parts, entries, .. } = self;
        let part = &mut parts[hash[0] as usize];
        let same = |s: &NodeSlot| s.tag == tag && entries[s.at].0 == hash;
        if part.find(tag, same).is_some() {
            return false;
        }
        let at = entries.push((hash, rlp()));
        part.insert_unique(tag, NodeSlot { tag, at }, |s| s.tag);
        self.len += 1;
        true
    }

    pub fn remove(&mut self, hash: &B256) -> Option<Vec<u8>> {
        let tag = node_tag(hash);
        let NodeMap { parts, entries, .. } = self;
        let same = |s: &NodeSlot| s.tag == tag && entries[s.at].0 == *hash;
        let entry = parts
            .get_mut(hash[0] as usize)?
            .find_entry(tag, same)
            .ok()?;
        let (slot, _) = entry.remove();
        self.len -= 1;
        Some(std::mem::take(&mut self.entries[slot.at].1))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&B256, &[u8])> {
        self.parts.iter().flat_map(|p| p.iter()).map(|s| {
            let (k, v) = &self.entries[s.at];
            (k, v.as_slice())
        })
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

impl<'a> IntoIterator for &'a NodeMap {
    type Item = (&'a B256, &'a [u8]);
    type IntoIter = Box<dyn Iterator<Item = (&'a B256, &'a [u8])> + 'a>;
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
        self.nodes.get(hash).map(<[u8]>::to_vec)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A key from a few bits: keys share their part and their eight table bytes often, so
    /// lookups must tell them apart by the whole key.
    fn key(part: u8, tag: u8, rest: u8) -> B256 {
        let mut k = B256::ZERO;
        k[0] = part;
        k[8] = tag;
        k[31] = rest;
        k
    }

    #[derive(Debug, Clone)]
    enum Op {
        InsertNew(u8, u8, u8, usize),
        Insert(u8, u8, u8, usize),
        Remove(u8, u8, u8),
        Clone,
    }

    fn op() -> impl Strategy<Value = Op> {
        let k = (0u8..3, 0u8..3, 0u8..4);
        let len = 0usize..600;
        prop_oneof![
            6 => (k.clone(), len.clone()).prop_map(|((p, t, r), l)| Op::InsertNew(p, t, r, l)),
            2 => (k.clone(), len).prop_map(|((p, t, r), l)| Op::Insert(p, t, r, l)),
            2 => k.prop_map(|(p, t, r)| Op::Remove(p, t, r)),
            1 => Just(Op::Clone),
        ]
    }

    /// Entries past the first chunks of the list read back, each under its own key.
    #[test]
    fn the_node_map_holds_entries_across_chunks() {
        let n = 3 * Entries::CHUNK + 5;
        let key = |i: usize| alloy_primitives::keccak256((i as u64).to_le_bytes());
        let mut m = NodeMap::default();
        for i in 0..n {
            assert!(m.insert_new(key(i), || i.to_le_bytes().to_vec()));
        }
        assert!(!m.insert_new(key(7), Vec::new));
        assert_eq!(m.len(), n);
        for i in (0..n).step_by(97).chain([n - 1]) {
            assert_eq!(m.get(&key(i)), Some(&i.to_le_bytes()[..]));
        }
        assert_eq!(m.iter().count(), n);
        assert_eq!(m.remove(&key(n - 1)), Some((n - 1).to_le_bytes().to_vec()));
        assert!(!m.contains_key(&key(n - 1)));
        assert_eq!(m.len(), n - 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The node map reads as a map of whole keys whatever it was asked.
        #[test]
        fn the_node_map_reads_as_a_map(ops in proptest::collection::vec(op(), 1..80)) {
            let mut got = NodeMap::default();
            let mut want: HashMap<B256, Vec<u8>> = HashMap::new();
            for (i, op) in ops.into_iter().enumerate() {
                let bytes = |l: usize| vec![i as u8; l];
                match op {
                    Op::InsertNew(p, t, r, l) => {
                        let k = key(p, t, r);
                        let fresh = !want.contains_key(&k);
                        prop_assert_eq!(got.insert_new(k, || bytes(l)), fresh);
                        want.entry(k).or_insert_with(|| bytes(l));
                    }
                    Op::Insert(p, t, r, l) => {
                        let k = key(p, t, r);
                        prop_assert_eq!(got.insert(k, bytes(l)), want.insert(k, bytes(l)));
                    }
                    Op::Remove(p, t, r) => {
                        let k = key(p, t, r);
                        prop_assert_eq!(got.remove(&k), want.remove(&k));
                    }
                    Op::Clone => {
                        let copy = got.clone();
                        prop_assert!(copy == got);
                        got = copy;
                    }
                }
                prop_assert_eq!(got.len(), want.len());
            }
            for p in 0..3 {
                for t in 0..3 {
                    for r in 0..4 {
                        let k = key(p, t, r);
                        prop_assert_eq!(got.get(&k), want.get(&k).map(Vec::as_slice));
                        prop_assert_eq!(got.contains_key(&k), want.contains_key(&k));
                    }
                }
            }
            let mut listed: Vec<(B256, Vec<u8>)> = got.iter().map(|(k, v)| (*k, v.to_vec())).collect();
            listed.sort();
            let mut expected: Vec<(B256, Vec<u8>)> = want.into_iter().collect();
            expected.sort();
            prop_assert_eq!(listed, expected);
        }
    }
}

//! Snap ranges: each shard fetches the account ranges under its leading nibbles, then the
//! storage ranges and codes of those accounts (`AccountRange`, `StorageRanges`, `ByteCodes`),
//! every range checked by its Merkle proof against the pivot's state root.

use alloy_primitives::{keccak256, B256};

use super::heal::{KnownSubtries, SubtrieLeaves};
use super::{hexs, unhex32, Action, Engine, NodeTask, Pending, StatePhase};
use crate::eth::sync::config::SyncMode;
use crate::eth::sync::store::SyncStore;
use crate::eth::sync::trie;
use crate::eth::sync::types::{AccountView, Request};
use catchup_eth::AccountRoots;

/// One account range of this shard's nibbles: fetched from `origin` on, up to `limit`.
#[derive(Debug, Clone)]
pub(super) struct AccountRangeTask {
    /// Where the range starts (its origin before any account of it was stored).
    start: B256,
    origin: B256,
    limit: B256,
    done: bool,
    pub(super) busy: bool,
}

/// Follow-ups of a stored account (bits of `Engine::followups`): its storage trie, its
/// code.
const FOLLOW_STORAGE: u8 = 1;
const FOLLOW_CODE: u8 = 2;
/// Accounts followed up between two journal writes of the ranges' marks while no account
/// response writes them (a write serializes every range's origin and mark).
const FOLLOWED_SAVE_EVERY: u32 = 1024;

/// The storage range `origin..=limit` of one account (the whole trie, or a sub-range of a
/// large one).
#[derive(Debug, Clone)]
pub(super) struct StorageTask {
    account: B256,
    origin: B256,
    limit: B256,
    busy: bool,
}

/// The open storage tasks by id (a finished task is removed, so the set shrinks as the
/// storage tries complete).
#[derive(Debug, Default)]
pub(super) struct StorageTasks {
    open: alloy_primitives::map::HashMap<usize, StorageTask>,
    next_id: usize,
}

impl StorageTasks {
    fn push(&mut self, t: StorageTask) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        self.open.insert(id, t);
        id
    }
    fn get(&self, id: usize) -> Option<&StorageTask> {
        self.open.get(&id)
    }
    fn get_mut(&mut self, id: usize) -> Option<&mut StorageTask> {
        self.open.get_mut(&id)
    }
    fn finish(&mut self, id: usize) {
        self.open.remove(&id);
    }
    pub(super) fn clear(&mut self) {
        self.open.clear();
    }
    fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

impl std::ops::Index<usize> for StorageTasks {
    type Output = StorageTask;
    fn index(&self, id: usize) -> &StorageTask {
        &self.open[&id]
    }
}

impl std::ops::IndexMut<usize> for StorageTasks {
    fn index_mut(&mut self, id: usize) -> &mut StorageTask {
        self.open.get_mut(&id).expect("an open storage task")
    }
}

/// A storage trie verified whole, ahead of its turn (see [`Engine::verify_whole_tries`]).
type Verified = Result<catchup_eth::RangeInterior, ()>;

/// One account's storage trie while its ranges come in. Its verified slots are kept in
/// the store (as the runs a restart resumes from), not here, and read back once, when
/// the last range is in, to build the trie's edges.
#[derive(Debug, Clone, Default)]
pub(super) struct StorageAcc {
    root: B256,
    open_tasks: u32,
    /// Where the verified runs of its slots that the store holds start (runs from an
    /// earlier pass over a trie with another root are not among them).
    runs: Vec<B256>,
    /// Its storage tasks (indices into `storage_tasks`): most tries are fetched by one
    /// task, held here without an allocation.
    tasks: smallvec::SmallVec<[usize; 2]>,
    /// Subtries its verified ranges built (and stored) already.
    known: KnownSubtries,
}

impl Engine {
    pub(super) fn start_ranges(&mut self, store: &mut dyn SyncStore) {
        self.phase = StatePhase::Ranges;
        let per = self.cfg.snap_ranges_per_nibble.clamp(1, 16) as u128;
        let mut ranges = Vec::new();
        if let Some((lo, hi)) = owned_units(self.shard, self.shards) {
            // `per` ranges for each sixteenth of the key space this shard owns.
            let span = (hi - lo) as u128 + 1;
            let count = per * span.div_ceil(1u128 << 60);
            for j in 0..count {
                let a = lo as u128 + span * j / count;
                let b = lo as u128 + span * (j + 1) / count - 1;
                ranges.push(AccountRangeTask {
                    start: unit_key(a as u64, false),
                    origin: unit_key(a as u64, false),
                    limit: unit_key(b as u64, true),
                    done: false,
                    busy: false,
                });
            }
        }
        // Where each range's stored accounts must be read again from to follow them up:
        // its start, or the journal's follow-up mark (none: nothing below the journaled
        // origin is open, so only what a crash left stored after it).
        let mut follow_from: Vec<Option<B256>> = ranges.iter().map(|r| Some(r.start)).collect();
        if self.journal.ranges.len() == ranges.len() {
            let marks =
                (self.journal.followed.len() == ranges.len()).then_some(&self.journal.followed);
            for (i, (r, (o, d))) in ranges
                .iter_mut()
                .zip(self.journal.ranges.iter())
                .enumerate()
            {
                r.origin = unhex32(o);
                r.done = *d;
                if let Some(m) = marks {
                    follow_from[i] = match &m[i] {
                        Some(k) => Some(unhex32(k).clamp(r.start, r.limit)),
                        None if r.done => None,
                        None => Some(r.origin),
                    };
                }
            }
        }
        // A range's stored accounts are a verified, gap-free run from its start (one
        // request per range at a time, stored whole): if a crash came after the accounts
        // were durable but before the journal was, continue after the last stored one.
        // The last one is looked for piece by piece from the range's end, so that no more
        // than a piece of the stored accounts is read at once.
        for r in ranges.iter_mut().filter(|r| !r.done) {
            for (lo, hi) in split_range(r.origin, r.limit, RESUME_PIECES)
                .into_iter()
                .rev()
            {
                if let Some((last, _)) = store.accounts_in(&lo, &hi).last() {
                    if *last == r.limit {
                        r.done = true;
                    } else {
                        r.origin = inc(*last);
                    }
                    break;
                }
            }
        }
        // The storage tries and codes of the accounts stored before a restart are
        // followed up piece by piece as the backlog allows ([`Engine::follow_stored`]).
        self.stored_to_follow.clear();
        let mut any_stored = false;
        for (r, from) in ranges.iter().zip(follow_from) {
            if r.done || r.origin != r.start {
                any_stored = true;
                let end = if r.done { r.limit } else { dec(r.origin) };
                if let Some(from) = from.filter(|f| *f <= end) {
                    self.stored_to_follow
                        .extend(split_range(from, end, RESUME_PIECES));
                }
            }
        }
        debug_assert!(
            self.stored_to_follow
                .iter()
                .zip(self.stored_to_follow.iter().skip(1))
                .all(|(a, b)| a.0 < b.0),
            "pieces to follow are in key order (see `open_from`)"
        );
        self.ranges = ranges;
        self.save_ranges(store);
        self.ranges_clean = !any_stored && !self.storage_left_to_heal;
        // The subtries the ranges stored before a restart built, for the rebuild.
        if any_stored && !self.journal.rebuilt {
            self.known_subtries.load(store);
        }
    }

    /// Whether more storage tries and codes may be opened: account ranges (and the
    /// accounts stored before a restart) wait while the backlog is full.
    fn backlog_open(&self) -> bool {
        let cap = self.cfg.storage_backlog_accounts.max(1);
        self.storage_accs.len() < cap && self.code_queue.len() < cap
    }

    /// Whether one more account range may be asked for: the backlog has room for what
    /// the ranges in flight and this one may open, each counted as the most one account
    /// response has opened so far (before any response, one range at a time). One range
    /// is always allowed while none is in flight and the backlog is not full, so the
    /// backlog stays within the cap plus one response's worth.
    fn account_range_allowed(&self) -> bool {
        if !self.stored_to_follow.is_empty() || !self.backlog_open() {
            return false;
        }
        let busy = self.ranges.iter().filter(|r| r.busy).count();
        if busy == 0 {
            return true;
        }
        let Some(per) = self.backlog_per_range else {
            return false;
        };
        let open = self.storage_accs.len().max(self.code_queue.len());
        open + (busy + 1) * per <= self.cfg.storage_backlog_accounts.max(1)
    }

    /// Follow up (storage tries, codes) the accounts stored before a restart, a piece of
    /// the key space at a time while the backlog has room.
    pub(super) fn follow_stored(&mut self, store: &dyn SyncStore) {
        while self.backlog_open() {
            let Some((lo, hi)) = self.stored_to_follow.pop_front() else {
                break;
            };
            for (h, raw) in store.accounts_in(&lo, &hi) {
                self.progress.accounts_reread += 1;
                if let Ok(acc) = AccountView::decode_roots(&raw) {
                    self.account_followups(h, &acc, store);
                }
            }
        }
    }

    /// A new pivot root while ranges are fetched: the storage tries still open were
    /// verified against their old storage roots, which may have changed (or the account
    /// may be gone). Their verified slots are kept as the trie nodes they build (a subtrie
    /// whose slots did not change is identical in the new trie), and the rest is left to
    /// the heal, which walks from the new root and fetches only the nodes still missing.
    pub(super) fn storage_to_heal(&mut self, store: &mut dyn SyncStore) {
        self.storage_left_to_heal = true;
        self.ranges_clean = false;
        for (h, mut acc) in std::mem::take(&mut self.storage_accs) {
            if !acc.runs.is_empty() {
                let leaves = stored_slots(store, &h, &acc.runs, Vec::new());
                build_root_known(&leaves, &mut acc.known, store);
            }
            // No range work for it any more: the heal completes it.
            store.put_storage_done(h);
            self.followed_up(h, FOLLOW_STORAGE);
        }
        self.storage_tasks.clear();
        self.storage_ready.clear();
        self.stored_to_follow.clear();
    }

    fn save_ranges(&mut self, store: &mut dyn SyncStore) {
        self.journal.ranges = self
            .ranges
            .iter()
            .map(|r| (hexs(r.origin.as_slice()), r.done))
            .collect();
        self.journal.followed = (0..self.ranges.len())
            .map(|i| self.open_from(i).map(|k| hexs(k.as_slice())))
            .collect();
        self.followed_since_save = 0;
        self.write_journal(store);
    }

    /// Journal the ranges again once [`FOLLOWED_SAVE_EVERY`] accounts were followed up
    /// since they last were: while the backlog is full no account response comes to
    /// move the follow-up marks on, but the storage tries and codes completing do.
    fn save_marks_if_moved(&mut self, store: &mut dyn SyncStore) {
        if self.followed_since_save >= FOLLOWED_SAVE_EVERY && !self.ranges.is_empty() {
            self.save_ranges(store);
        }
    }

    /// The first stored account of range `i` whose follow-ups may be open: one with its
    /// storage trie or code open, or one of a piece stored before a restart and not
    /// read again yet. None when there is none below the range's origin.
    fn open_from(&self, i: usize) -> Option<B256> {
        let r = &self.ranges[i];
        let open = self
            .followups
            .range(r.start..=r.limit)
            .next()
            .map(|(k, _)| *k);
        // The pieces are queued in key order (range by range, each from its start) and
        // taken from the front: the range's first piece left is found by a search.
        let at = self
            .stored_to_follow
            .partition_point(|(lo, _)| *lo < r.start);
        let unread = self
            .stored_to_follow
            .get(at)
            .map(|(lo, _)| *lo)
            .filter(|lo| *lo <= r.limit);
        open.into_iter().chain(unread).min()
    }

    /// `account`'s follow-up `what` ([`FOLLOW_STORAGE`], [`FOLLOW_CODE`]) is complete.
    fn followed_up(&mut self, account: B256, what: u8) {
        if let Some(open) = self.followups.get_mut(&account) {
            *open &= !what;
            if *open == 0 {
                self.followups.remove(&account);
                self.followed_since_save += 1;
            }
        }
    }

    fn account_followups(&mut self, h: B256, acc: &AccountRoots, store: &dyn SyncStore) {
        if acc.has_storage() && !store.storage_done(&h) && !self.storage_accs.contains_key(&h) {
            // Verified slots of this trie kept before a restart, and the sub-ranges left.
            let kept = store
                .storage_progress(&h)
                .filter(|p| p.root == acc.storage_root && !p.left.is_empty());
            let (left, runs) = match kept {
                Some(p) => {
                    self.progress.slots_resumed += p.slots.len() as u64;
                    (p.left, p.runs)
                }
                None => (vec![(B256::ZERO, B256::repeat_byte(0xff))], Vec::new()),
            };
            let mut ids = smallvec::SmallVec::with_capacity(left.len());
            for (origin, limit) in left {
                let id = self.storage_tasks.push(StorageTask {
                    account: h,
                    origin,
                    limit,
                    busy: false,
                });
                self.storage_ready.push_back(id);
                ids.push(id);
            }
            self.storage_accs.insert(
                h,
                StorageAcc {
                    root: acc.storage_root,
                    open_tasks: ids.len() as u32,
                    runs,
                    tasks: ids,
                    known: KnownSubtries::default(),
                },
            );
            *self.followups.entry(h).or_default() |= FOLLOW_STORAGE;
            let open = self.storage_accs.len() as u64;
            if open > self.progress.storage_backlog_peak {
                self.progress.storage_backlog_peak = open;
            }
        }
        if acc.has_code() && !store.has_code(&acc.code_hash) {
            let open = self.followups.entry(h).or_default();
            if *open & FOLLOW_CODE == 0 {
                *open |= FOLLOW_CODE;
                self.code_waiters.entry(acc.code_hash).or_default().push(h);
            }
            if self.codes_wanted.insert(acc.code_hash) {
                self.code_queue.push_back(acc.code_hash);
            }
        }
    }

    pub(super) fn ranges_done(&self) -> bool {
        self.mode == SyncMode::Snap
            && self.phase == StatePhase::Ranges
            && self.ranges.iter().all(|r| r.done)
            && self.stored_to_follow.is_empty()
            && self.storage_tasks.is_empty()
            && self.code_queue.is_empty()
            && self.state_inflight == 0
    }

    /// Account ranges, codes and storage ranges to fetch. Codes go before storage ranges:
    /// they are few requests, and an account waiting for its code keeps its range's
    /// follow-up mark (what a restart reads again) from moving on.
    pub(super) fn pump_ranges(&mut self, now: u64, root: B256, out: &mut Vec<Action>) {
        while self.free_slots() > 0 {
            // The pivot's state: a peer whose head reached the pivot is preferred.
            let at = self.pivot.as_ref().map_or(0, |p| p.number);
            let Some(peer) = self.peers.pick_for(now, &self.policy, &[], true, at) else {
                break;
            };
            let more_accounts = self.account_range_allowed();
            if let Some(i) = self
                .ranges
                .iter()
                .position(|r| more_accounts && !r.done && !r.busy)
            {
                self.ranges[i].busy = true;
                let r = &self.ranges[i];
                let req = Request::AccountRange {
                    root,
                    origin: r.origin,
                    limit: r.limit,
                    bytes: self.cfg.snap_response_bytes,
                };
                self.send(peer, req, Pending::Account(self.snap_epoch, i), out);
            } else if !self.code_queue.is_empty() {
                let n = self.code_queue.len().min(self.cfg.code_batch.max(1));
                let hashes: Vec<B256> = self.code_queue.drain(..n).collect();
                self.send(
                    peer,
                    Request::ByteCodes {
                        hashes: hashes.clone(),
                        bytes: self.cfg.snap_response_bytes,
                    },
                    Pending::Codes(hashes),
                    out,
                );
            } else if let Some(batch) = self.next_storage_batch() {
                let first = &self.storage_tasks[batch[0]];
                let req = Request::StorageRanges {
                    root,
                    accounts: batch
                        .iter()
                        .map(|&i| self.storage_tasks[i].account)
                        .collect(),
                    origin: first.origin,
                    limit: first.limit,
                    bytes: self.cfg.snap_response_bytes,
                };
                self.send(peer, req, Pending::Storage(self.snap_epoch, batch), out);
            } else {
                break;
            }
        }
    }

    pub(super) fn on_accounts(
        &mut self,
        i: usize,
        accounts: Vec<(B256, Vec<u8>)>,
        proof: Vec<Vec<u8>>,
        store: &mut dyn SyncStore,
    ) -> Result<bool, ()> {
        let Some(r) = self.ranges.get(i).cloned() else {
            return Ok(true);
        };
        if self.phase != StatePhase::Ranges || r.done {
            return Ok(true);
        }
        self.ranges[i].busy = false;
        if accounts.is_empty() && proof.is_empty() {
            return Ok(false);
        }
        let root = self.pivot.as_ref().map(|p| p.state_root).ok_or(())?;
        let keys: Vec<[u8; 32]> = accounts.iter().map(|a| a.0 .0).collect();
        let vals: Vec<&[u8]> = accounts.iter().map(|a| a.1.as_slice()).collect();
        let (more, mut interior) = verify_range_interior(root, &r.origin, &keys, &vals, &proof)?;
        let mut decoded = Vec::with_capacity(accounts.len());
        for (h, raw) in &accounts {
            decoded.push(AccountView::decode_roots(raw).map_err(|_| ())?);
            let _ = h;
        }
        let k = catchup_shards::ownership::trie_prefix_nibbles(self.shards);
        // What the rebuild needs of the subtries' leaves, read before the leaves move
        // into the store.
        split_interior_above(&mut interior, &accounts, k);
        let leaves = interior_leaves(&self.known_subtries, k, &interior, &accounts);
        let last_any = accounts.last().map(|a| a.0);
        let mut last = None;
        // Accounts `..fresh` were stored by this response (none of them was stored before).
        let mut fresh = 0;
        let mut all_fresh = true;
        let open_before = (self.storage_accs.len(), self.code_queue.len());
        for ((h, raw), acc) in accounts.into_iter().zip(decoded.iter()) {
            if h > r.limit {
                break;
            }
            if store.put_new_account_owned(h, raw) {
                self.progress.accounts_downloaded += 1;
                if all_fresh {
                    fresh += 1;
                }
            } else {
                self.progress.refetched_items += 1;
                all_fresh = false;
            }
            self.account_followups(h, acc, store);
            last = Some(h);
        }
        let opened = (self.storage_accs.len() - open_before.0)
            .max(self.code_queue.len().saturating_sub(open_before.1));
        self.backlog_per_range = Some(self.backlog_per_range.unwrap_or(0).max(opened));
        keep_interior_leaves(&mut self.known_subtries, interior, leaves, fresh, store);
        let done = !more || last_any.is_some_and(|l| l >= r.limit);
        if done {
            self.ranges[i].done = true;
        } else {
            match last.or(last_any) {
                Some(l) => self.ranges[i].origin = inc(l),
                None => return Ok(false),
            }
        }
        self.save_ranges(store);
        Ok(true)
    }

    pub(super) fn storage_unbusy(&mut self, i: usize) {
        if let Some(t) = self.storage_tasks.get_mut(i) {
            if t.busy {
                t.busy = false;
                self.storage_ready.push_back(i);
            }
        }
    }

    /// Ready storage tasks for one request: several whole storage tries (from their
    /// start), or one sub-range.
    fn next_storage_batch(&mut self) -> Option<Vec<usize>> {
        let mut batch = Vec::new();
        while let Some(i) = self.storage_ready.pop_front() {
            let Some(t) = self.storage_tasks.get(i) else {
                continue;
            };
            if t.busy {
                continue;
            }
            let whole = t.origin == B256::ZERO && t.limit == B256::repeat_byte(0xff);
            if !batch.is_empty() && !whole {
                self.storage_ready.push_front(i);
                break;
            }
            self.storage_tasks[i].busy = true;
            batch.push(i);
            if !whole || batch.len() >= self.cfg.storage_batch.max(1) {
                break;
            }
        }
        (!batch.is_empty()).then_some(batch)
    }

    pub(super) fn on_storage(
        &mut self,
        idxs: Vec<usize>,
        slots: Vec<Vec<(B256, Vec<u8>)>>,
        proof: Vec<Vec<u8>>,
        store: &mut dyn SyncStore,
    ) -> Result<bool, ()> {
        if self.phase != StatePhase::Ranges {
            return Ok(true);
        }
        if slots.len() > idxs.len() {
            for &i in &idxs {
                self.storage_unbusy(i);
            }
            return Err(());
        }
        let n = slots.len();
        let mut verified = self.verify_whole_tries(&idxs, &slots, proof.is_empty());
        let mut result = Ok(n > 0);
        for (k, mine) in slots.into_iter().enumerate() {
            let p: &[Vec<u8>] = if k + 1 == n { &proof } else { &[] };
            match self.storage_result(idxs[k], mine, p, verified[k].take(), store) {
                Ok(true) => {}
                Ok(false) => result = Ok(false),
                Err(()) => {
                    result = Err(());
                    for &i in &idxs[k..] {
                        self.storage_unbusy(i);
                    }
                    return result;
                }
            }
        }
        for &i in &idxs[n..] {
            self.storage_unbusy(i);
        }
        self.save_marks_if_moved(store);
        result
    }

    /// The storage tries of an answer that came without a proof (every account's but the
    /// last, and the last's too when the proof is empty) are whole tries: verified
    /// together, so that their nodes are hashed four at a time across tries. By index in
    /// the answer; `None` where there is nothing to verify that way.
    fn verify_whole_tries(
        &self,
        idxs: &[usize],
        slots: &[Vec<(B256, Vec<u8>)>],
        no_proof: bool,
    ) -> Vec<Option<Verified>> {
        let proofless = if no_proof {
            slots.len()
        } else {
            slots.len().saturating_sub(1)
        };
        // (index in the answer, storage root, its slots' place in `keys` and `values`)
        let mut which = Vec::new();
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut values: Vec<&[u8]> = Vec::new();
        for (k, mine) in slots.iter().enumerate().take(proofless) {
            let Some(t) = self.storage_tasks.get(idxs[k]) else {
                continue;
            };
            let Some(acc) = self.storage_accs.get(&t.account) else {
                continue;
            };
            if mine.is_empty() {
                continue;
            }
            which.push((k, acc.root, keys.len()..keys.len() + mine.len()));
            keys.extend(mine.iter().map(|a| a.0.as_slice()));
            values.extend(mine.iter().map(|a| a.1.as_slice()));
        }
        let tries: Vec<catchup_eth::WholeTrie<'_>> = which
            .iter()
            .map(|(_, root, at)| catchup_eth::WholeTrie {
                root: *root,
                keys: &keys[at.clone()],
                values: &values[at.clone()],
            })
            .collect();
        let mut out: Vec<Option<Verified>> = (0..slots.len()).map(|_| None).collect();
        for ((k, _, _), r) in which
            .iter()
            .zip(catchup_eth::verify_whole_tries_interior(&tries))
        {
            out[*k] = Some(r.map_err(|_| ()));
        }
        out
    }

    /// One account's slots of an answer, `verified` already when they came without a
    /// proof (see [`Engine::verify_whole_tries`]).
    fn storage_result(
        &mut self,
        i: usize,
        mine: Vec<(B256, Vec<u8>)>,
        proof: &[Vec<u8>],
        verified: Option<Verified>,
        store: &mut dyn SyncStore,
    ) -> Result<bool, ()> {
        let Some(t) = self.storage_tasks.get(i).cloned() else {
            return Ok(true);
        };
        let Some(acc) = self.storage_accs.get(&t.account) else {
            self.storage_tasks.finish(i);
            return Ok(true);
        };
        let sroot = acc.root;
        let (count, last_any) = (mine.len(), mine.last().map(|a| a.0));
        if count == 0 && proof.is_empty() {
            self.storage_unbusy(i);
            return Ok(false);
        }
        let verify = || {
            let keys: Vec<[u8; 32]> = mine.iter().map(|a| a.0 .0).collect();
            let vals: Vec<&[u8]> = mine.iter().map(|a| a.1.as_slice()).collect();
            verify_range_interior(sroot, &t.origin, &keys, &vals, proof)
        };
        let verified = match verified {
            // A whole trie: nothing more to its right.
            Some(r) => r.map(|interior| (false, interior)),
            None => verify(),
        };
        debug_assert!(
            !proof.is_empty() || verified == verify(),
            "whole tries verified together read as each alone"
        );
        let (more, mut interior) = match verified {
            Ok(m) => m,
            Err(()) => {
                self.storage_unbusy(i);
                return Err(());
            }
        };
        self.storage_tasks[i].busy = false;
        let acc = self
            .storage_accs
            .get_mut(&t.account)
            .expect("checked above");
        // The whole trie in this one response (its root inside the range): its nodes
        // were built by the verifier, nothing is left to collect or build.
        let whole = t.origin == B256::ZERO
            && acc.open_tasks == 1
            && acc.runs.is_empty()
            && last_any.is_some_and(|k| k <= t.limit)
            && interior.subtries.first().is_some_and(|s| {
                s.path.is_empty() && s.node == trie::NodeRef::Hash(sroot) && s.leaves == (0..count)
            });
        if whole {
            for (h, rlp) in std::mem::take(&mut interior.nodes) {
                store.put_new_node_owned(h, rlp);
            }
            self.progress.slots_downloaded += count as u64;
            self.storage_tasks.finish(i);
            self.storage_accs.remove(&t.account);
            store.put_storage_done(t.account);
            self.followed_up(t.account, FOLLOW_STORAGE);
            return Ok(true);
        }
        let mut last = None;
        let mut run = Vec::new();
        for (h, v) in mine {
            if h > t.limit {
                break;
            }
            self.progress.slots_downloaded += 1;
            run.push((h, v));
            last = Some(h);
        }
        // The storage trie's nodes inside this range are final: stored now, and its
        // subtries remembered for the build of the whole trie.
        keep_interior(&mut acc.known, 0, interior, &run, store);
        let done = !more || last_any.is_some_and(|l| l >= t.limit);
        if done {
            self.storage_tasks.finish(i);
            acc.open_tasks -= 1;
        } else {
            let Some(l) = last else {
                self.storage_ready.push_back(i);
                return Ok(false);
            };
            let next = inc(l);
            let split = self.cfg.storage_split.max(1);
            if t.origin == B256::ZERO && split > 1 {
                // A large storage trie: split what is left into sub-ranges fetched in parallel.
                let bounds = split_range(next, t.limit, split);
                self.storage_tasks.finish(i);
                acc.open_tasks -= 1;
                for (o, l) in bounds {
                    acc.open_tasks += 1;
                    let id = self.storage_tasks.push(StorageTask {
                        account: t.account,
                        origin: o,
                        limit: l,
                        busy: false,
                    });
                    acc.tasks.push(id);
                    self.storage_ready.push_back(id);
                }
            } else {
                self.storage_tasks[i].origin = next;
                self.storage_ready.push_back(i);
            }
        }
        let acc = self.storage_accs.get_mut(&t.account).expect("present");
        if acc.open_tasks > 0 && !run.is_empty() {
            // An incomplete trie: keep this verified run and what is left, so that a
            // restart fetches only the rest.
            // A finished task has left the open set.
            let left: Vec<(B256, B256)> = acc
                .tasks
                .iter()
                .filter_map(|&k| self.storage_tasks.get(k))
                .map(|x| (x.origin, x.limit))
                .collect();
            store.put_storage_slots(t.account, t.origin, &run);
            store.put_storage_progress(t.account, acc.root, &left);
            acc.runs.push(t.origin);
        }
        if acc.open_tasks == 0 {
            let mut acc = self.storage_accs.remove(&t.account).expect("present");
            let leaves = if !acc.runs.is_empty() {
                stored_slots(store, &t.account, &acc.runs, run)
            } else {
                run
            };
            let root = build_root_known(&leaves, &mut acc.known, store);
            if root != acc.root {
                // Cannot happen with verified ranges; refetch the whole trie if it does.
                self.storage_accs.insert(
                    t.account,
                    StorageAcc {
                        root: acc.root,
                        open_tasks: 1,
                        runs: Vec::new(),
                        tasks: Default::default(),
                        known: KnownSubtries::default(),
                    },
                );
                let id = self.storage_tasks.push(StorageTask {
                    account: t.account,
                    origin: B256::ZERO,
                    limit: B256::repeat_byte(0xff),
                    busy: false,
                });
                if let Some(a) = self.storage_accs.get_mut(&t.account) {
                    a.tasks.push(id);
                }
                self.storage_ready.push_back(id);
            } else {
                store.put_storage_done(t.account);
                self.followed_up(t.account, FOLLOW_STORAGE);
            }
        }
        Ok(true)
    }

    pub(super) fn on_codes(
        &mut self,
        hashes: Vec<B256>,
        codes: Vec<Vec<u8>>,
        store: &mut dyn SyncStore,
    ) -> Result<bool, Vec<B256>> {
        if codes.len() > hashes.len() {
            return Err(hashes);
        }
        let mut delivered = vec![false; hashes.len()];
        let mut got = Vec::with_capacity(codes.len());
        let mut code_hashes = Vec::new();
        catchup_eth::keccak4::keccak256_each(&codes, &mut code_hashes);
        for h in code_hashes {
            let Some(j) = hashes
                .iter()
                .enumerate()
                .position(|(j, x)| !delivered[j] && *x == h)
            else {
                return Err(hashes);
            };
            delivered[j] = true;
            got.push(h);
        }
        for (c, h) in codes.iter().zip(got) {
            if self.phase == StatePhase::Walk {
                self.pending.remove(&(h, true));
            }
            for a in self.code_waiters.remove(&h).unwrap_or_default() {
                self.followed_up(a, FOLLOW_CODE);
            }
            if !store.has_code(&h) {
                store.put_code(h, c);
                self.progress.codes_downloaded += 1;
                if self.phase == StatePhase::Walk {
                    self.round_fetched += 1;
                    self.progress.healed_nodes += 1;
                }
            } else {
                self.progress.refetched_items += 1;
            }
        }
        for (j, h) in hashes.into_iter().enumerate() {
            if !delivered[j] {
                if self.phase == StatePhase::Walk {
                    self.node_queue.push_back(NodeTask {
                        hash: h,
                        path: super::TaskPath::EMPTY,
                        account: None,
                        code: true,
                    });
                } else if self.phase == StatePhase::Ranges {
                    self.code_queue.push_back(h);
                }
            }
        }
        self.save_marks_if_moved(store);
        Ok(!codes.is_empty())
    }
}

/// Store the nodes of a verified range that lie inside it (final nodes of the trie), and
/// remember its maximal subtries in `known`, for those whose leaves are all among
/// `stored` (the leaves the response stored, from its first) and that sit at or below
/// `k` nibbles (the account trie's prefixes, one shard's; 0 for a storage trie). The
/// rest is left to the build of the whole trie.
pub(super) fn keep_interior(
    known: &mut KnownSubtries,
    k: usize,
    interior: catchup_eth::RangeInterior,
    stored: &[(B256, Vec<u8>)],
    store: &mut dyn SyncStore,
) {
    let mut interior = interior;
    split_interior_above(&mut interior, stored, k);
    let leaves = interior_leaves(known, k, &interior, stored);
    keep_interior_leaves(known, interior, leaves, stored.len(), store);
}

/// Split `interior`'s subtries whose top sits above key-space depth `k` (the account
/// trie's ownership prefixes) into the subtries at depth `k` or below that they hold,
/// so that their nodes are still kept and remembered; the nodes above `k` are left out
/// (the rebuild builds the top from its blocks). `range` holds the leaves, sorted. A
/// subtrie whose nodes are not laid out as the verifier lays them out (each hashed node's
/// descendants before it, in key order) is left out whole, and the rebuild builds it.
pub(super) fn split_interior_above(
    interior: &mut catchup_eth::RangeInterior,
    range: &[(B256, Vec<u8>)],
    k: usize,
) {
    if interior.subtries.iter().all(|s| s.path.len() > k) {
        return;
    }
    let mut out = Vec::with_capacity(interior.subtries.len());
    for s in std::mem::take(&mut interior.subtries) {
        if s.path.len() > k {
            out.push(s);
        } else if s.path.len() == k {
            out.push(below_extension_at_k(s, &interior.nodes));
        } else if let Some(pieces) = split_subtrie(&s, &interior.nodes, range, k) {
            out.extend(pieces);
        }
    }
    interior.subtries = out;
}

/// A subtrie at the prefix depth whose top is an extension: the block's own node there,
/// which the rebuild makes from the branch below it, so the subtrie kept is that branch
/// (the extension's node is the last of the run, its child's just before it).
fn below_extension_at_k(
    s: catchup_eth::InteriorSubtrie,
    nodes: &[(B256, Vec<u8>)],
) -> catchup_eth::InteriorSubtrie {
    let (trie::NodeRef::Hash(top), Some(end)) = (&s.node, s.nodes.end.checked_sub(1)) else {
        return s;
    };
    let child_at = end.checked_sub(1).filter(|&c| c >= s.nodes.start);
    match (nodes.get(end), child_at.and_then(|c| nodes.get(c))) {
        (Some((h, rlp)), Some((c, _))) if h == top => match trie::Node::decode(rlp) {
            Ok(trie::Node::Extension {
                path,
                child: trie::NodeRef::Hash(ch),
            }) if ch == *c => {
                let mut p = s.path.clone();
                p.extend_from_slice(&path.0);
                catchup_eth::InteriorSubtrie {
                    path: p,
                    node: trie::NodeRef::Hash(ch),
                    leaves: s.leaves,
                    nodes: s.nodes.start..end,
                }
            }
            _ => s,
        },
        _ => s,
    }
}

/// The pieces of `s` at depth `k` (see [`split_interior_above`]), or `None` when its
/// nodes are not laid out as expected.
fn split_subtrie(
    s: &catchup_eth::InteriorSubtrie,
    nodes: &[(B256, Vec<u8>)],
    range: &[(B256, Vec<u8>)],
    k: usize,
) -> Option<Vec<catchup_eth::InteriorSubtrie>> {
    let run = nodes.get(s.nodes.clone())?;
    let at: alloy_primitives::map::B256Map<usize> =
        run.iter().enumerate().map(|(i, (h, _))| (*h, i)).collect();
    /// Walk the nodes above `k` from `node` at `path`: each hashed node at depth `k` or
    /// below is a piece, its nodes the run from `cursor` to it.
    fn visit(
        node: &trie::NodeRef,
        path: trie::Nibbles,
        k: usize,
        run: &[(B256, Vec<u8>)],
        at: &alloy_primitives::map::B256Map<usize>,
        cursor: &mut usize,
        pieces: &mut Vec<(Vec<u8>, trie::NodeRef, std::ops::Range<usize>)>,
    ) -> Option<()> {
        // An embedded node holds no hashed node: nothing of it is stored.
        let trie::NodeRef::Hash(h) = node else {
            return Some(());
        };
        let j = *at.get(h)?;
        if path.0.len() >= k {
            (j >= *cursor).then_some(())?;
            // An extension at the prefix depth is the block's own node, which the
            // rebuild makes from the branch below it: the piece is that branch.
            if path.0.len() == k {
                if let Ok(trie::Node::Extension {
                    path: p,
                    child: child @ trie::NodeRef::Hash(c),
                }) = trie::Node::decode(&run[j].1)
                {
                    let cj = *at.get(&c)?;
                    (cj >= *cursor && cj + 1 == j).then_some(())?;
                    pieces.push((path.join(&p.0).0, child, *cursor..cj + 1));
                    *cursor = j + 1;
                    return Some(());
                }
            }
            pieces.push((path.0, node.clone(), *cursor..j + 1));
            *cursor = j + 1;
            return Some(());
        }
        for c in catchup_eth::child_refs(&run[j].1, &path).ok()? {
            visit(&c.child, c.path, k, run, at, cursor, pieces)?;
        }
        // A node above `k` follows its descendants' runs.
        (j == *cursor).then_some(())?;
        *cursor += 1;
        Some(())
    }
    let mut pieces = Vec::new();
    let mut cursor = 0;
    visit(
        &s.node,
        trie::Nibbles(s.path.clone()),
        k,
        run,
        &at,
        &mut cursor,
        &mut pieces,
    )?;
    (cursor == run.len()).then_some(())?;
    let leaves = range.get(s.leaves.clone())?;
    // Where a key sits against a path: its nibbles over the path's length.
    let cmp = |key: &B256, path: &[u8]| {
        (0..path.len())
            .map(|i| trie::nibble(key.as_slice(), i))
            .cmp(path.iter().copied())
    };
    pieces
        .into_iter()
        .map(|(path, node, r)| {
            let lo = leaves.partition_point(|(key, _)| cmp(key, &path).is_lt());
            let hi = leaves.partition_point(|(key, _)| cmp(key, &path).is_le());
            (hi > lo).then(|| catchup_eth::InteriorSubtrie {
                path,
                node,
                leaves: s.leaves.start + lo..s.leaves.start + hi,
                nodes: s.nodes.start + r.start..s.nodes.start + r.end,
            })
        })
        .collect()
}

/// For each of `interior`'s subtries (`range` holds their leaves, sorted): `None` when it
/// is not kept (its path above key-space depth `k`), else what [`KnownSubtries`]
/// remembers of its leaves (`None` for a single leaf below the root: its node is kept,
/// the subtrie not remembered).
pub(super) fn interior_leaves(
    known: &KnownSubtries,
    k: usize,
    interior: &catchup_eth::RangeInterior,
    range: &[(B256, Vec<u8>)],
) -> Vec<Option<Option<SubtrieLeaves>>> {
    interior
        .subtries
        .iter()
        .map(|s| {
            if s.path.len() < k || s.leaves.end > range.len() {
                return None;
            }
            Some(if s.leaves.len() > 1 || s.path.is_empty() {
                known.leaves_of(&range[s.leaves.clone()])
            } else {
                None
            })
        })
        .collect()
}

/// Store the nodes of `interior`'s kept subtries whose leaves are all among the first
/// `stored` of the range (the ones this response stored), and remember those subtries
/// (`leaves` from [`interior_leaves`]).
pub(super) fn keep_interior_leaves(
    known: &mut KnownSubtries,
    mut interior: catchup_eth::RangeInterior,
    leaves: Vec<Option<Option<SubtrieLeaves>>>,
    stored: usize,
    store: &mut dyn SyncStore,
) {
    for (s, l) in interior.subtries.into_iter().zip(leaves) {
        let Some(l) = l else { continue };
        if s.leaves.end > stored {
            continue;
        }
        for (h, rlp) in &mut interior.nodes[s.nodes] {
            store.put_new_node_owned(*h, std::mem::take(rlp));
        }
        if let Some(l) = l {
            known.remember_leaves(s.path.len(), s.node, l, store);
        }
    }
}

/// The slots of `account`'s storage trie: the stored runs starting at `runs`, with
/// `last` (sorted, the run not stored) merged in. A run the store cannot read is missing
/// here, and the trie built from these slots then fails its root check and is fetched
/// again.
fn stored_slots(
    store: &dyn SyncStore,
    account: &B256,
    runs: &[B256],
    last: Vec<(B256, Vec<u8>)>,
) -> Vec<(B256, Vec<u8>)> {
    let mut slots = Vec::new();
    for origin in runs {
        slots.extend(store.storage_run(account, origin).unwrap_or_default());
    }
    if slots.is_empty() {
        return last;
    }
    slots.extend(last);
    // Both sorted: a stable sort of the concatenation merges them; of equal keys (one
    // slot verified twice, against the same root) the first is kept.
    slots.sort_by_key(|a| a.0);
    slots.dedup_by(|a, b| a.0 == b.0);
    slots
}

/// The root of the trie of sorted `leaves`, its nodes put in `store`, using the subtries
/// that `known` holds where they match the leaves (the whole trie, when one verified
/// range held all of it).
fn build_root_known(
    leaves: &[(B256, Vec<u8>)],
    known: &mut KnownSubtries,
    store: &mut dyn SyncStore,
) -> B256 {
    if leaves.is_empty() {
        return catchup_eth::EMPTY_ROOT;
    }
    if let Some(trie::NodeRef::Hash(h)) = known.take(0, leaves) {
        if store.has_node(&h) {
            return h;
        }
    }
    let mut put = |h: B256, r: &[u8]| {
        store.put_new_node(h, r);
    };
    let rlp = trie::build_node_known(leaves, 0, &mut put, &mut |d, sub| known.take(d, sub));
    let h = keccak256(&rlp);
    put(h, &rlp);
    h
}

/// Check a snap range against `root` with the data layer's range-proof verifier; returns
/// whether the trie holds keys above the last one, and the trie's nodes inside the range.
fn verify_range_interior(
    root: B256,
    origin: &B256,
    keys: &[[u8; 32]],
    vals: &[&[u8]],
    proof: &[Vec<u8>],
) -> Result<(bool, catchup_eth::RangeInterior), ()> {
    let proof: Vec<catchup_eth::Bytes> = proof
        .iter()
        .map(|p| catchup_eth::Bytes::copy_from_slice(p))
        .collect();
    catchup_eth::verify_range_proof_interior(root, origin.as_slice(), keys, vals, &proof)
        .map_err(|_| ())
}

/// The smallest and largest 32-byte key under a leading nibble.
pub fn nibble_range(n: u8) -> (B256, B256) {
    let mut lo = [0u8; 32];
    lo[0] = n << 4;
    let mut hi = [0xffu8; 32];
    hi[0] = (n << 4) | 0x0f;
    (B256::from(lo), B256::from(hi))
}

/// The keys `shard` owns as a range of their leading 64 bits (the trie ownership map's
/// prefixes, widened).
pub(super) fn owned_units(shard: usize, shards: usize) -> Option<(u64, u64)> {
    let (lo, hi) = catchup_shards::ownership::trie_prefixes_of(shard, shards)?;
    let shift = 64 - 4 * catchup_shards::ownership::trie_prefix_nibbles(shards) as u32;
    let hi = (((hi as u128 + 1) << shift) - 1) as u64;
    Some((lo << shift, hi))
}

/// The smallest (or, `top`, the largest) key whose leading 64 bits are `unit`.
pub(super) fn unit_key(unit: u64, top: bool) -> B256 {
    let mut k = if top { [0xffu8; 32] } else { [0u8; 32] };
    k[..8].copy_from_slice(&unit.to_be_bytes());
    B256::from(k)
}

/// Pieces a range's stored accounts are read in at a restart.
const RESUME_PIECES: u64 = 256;

fn dec(h: B256) -> B256 {
    let mut b = h.0;
    for i in (0..32).rev() {
        if b[i] == 0 {
            b[i] = 0xff;
        } else {
            b[i] -= 1;
            break;
        }
    }
    B256::from(b)
}

fn inc(h: B256) -> B256 {
    let mut b = h.0;
    for i in (0..32).rev() {
        if b[i] == 0xff {
            b[i] = 0;
        } else {
            b[i] += 1;
            break;
        }
    }
    B256::from(b)
}

/// Split `[lo, hi]` into `k` contiguous sub-ranges by the top 64 bits.
fn split_range(lo: B256, hi: B256, k: u64) -> Vec<(B256, B256)> {
    let a = u64::from_be_bytes(lo.0[..8].try_into().expect("8 bytes"));
    let b = u64::from_be_bytes(hi.0[..8].try_into().expect("8 bytes"));
    if b <= a || b - a < k {
        return vec![(lo, hi)];
    }
    let step = (b - a) / k;
    let mut out = Vec::new();
    let mut start = lo;
    for j in 1..k {
        let cut = a + step * j;
        let mut end = [0xffu8; 32];
        end[..8].copy_from_slice(&cut.to_be_bytes());
        let end = B256::from(end);
        out.push((start, end));
        start = inc(end);
    }
    out.push((start, hi));
    out
}

/// Test support: verified ranges of `leaves` cut at `cuts` (the first from the zero key,
/// each other from its first key), kept as a shard keeps them with `k`-nibble blocks. A
/// single range comes with its proof when `prove_whole` (as an account range does), else
/// without one (a storage trie that one response holds whole).
#[cfg(test)]
pub(super) fn keep_verified_ranges(
    leaves: &[(B256, Vec<u8>)],
    cuts: &[usize],
    k: usize,
    prove_whole: bool,
    known: &mut KnownSubtries,
    store: &mut dyn SyncStore,
) {
    let t = catchup_eth::TrieBuilder::new(leaves.iter().map(|(k, v)| (k.0, v)));
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(leaves.len());
    for w in bounds.windows(2) {
        let run = &leaves[w[0]..w[1]];
        let origin = if w[0] == 0 { B256::ZERO } else { run[0].0 };
        let keys: Vec<[u8; 32]> = run.iter().map(|l| l.0 .0).collect();
        let vals: Vec<&[u8]> = run.iter().map(|l| l.1.as_slice()).collect();
        let proof: Vec<Vec<u8>> = if cuts.is_empty() && !prove_whole {
            Vec::new()
        } else {
            t.prove_range(origin.as_slice(), &keys[keys.len() - 1])
                .into_iter()
                .map(|b| b.to_vec())
                .collect()
        };
        let (_, interior) = verify_range_interior(t.root(), &origin, &keys, &vals, &proof)
            .expect("a range of the trie");
        keep_interior(known, k, interior, run, store);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::sync::store::MemStore;

    /// A storage trie fetched as verified ranges cut at `cuts`, kept as `storage_result`
    /// keeps them, then built whole from `stored` (the slots as stored): the root.
    fn storage_build(
        slots: &[(B256, Vec<u8>)],
        cuts: &[usize],
        stored: &[(B256, Vec<u8>)],
    ) -> (B256, MemStore, usize) {
        let mut known = KnownSubtries::default();
        let mut store = MemStore::default();
        keep_verified_ranges(slots, cuts, 0, false, &mut known, &mut store);
        let root = build_root_known(stored, &mut known, &mut store);
        let left = known.len();
        (root, store, left)
    }

    #[test]
    fn storage_tries_built_from_verified_ranges_hash_each_node_once() {
        let slots: Vec<(B256, Vec<u8>)> = {
            let mut v: Vec<(B256, Vec<u8>)> = (0u64..1500)
                .map(|i| {
                    (
                        keccak256(i.to_be_bytes()),
                        vec![0x80 + (i % 40) as u8; 1 + (i % 33) as usize],
                    )
                })
                .collect();
            v.sort();
            v
        };
        let want = trie::build_root(&slots, &mut |_, _| {});
        for cuts in [vec![], vec![1], vec![300, 301, 900], vec![1499]] {
            let (root, store, left) = storage_build(&slots, &cuts, &slots);
            assert_eq!(root, want, "cuts {cuts:?}");
            assert_eq!(left, 0, "cuts {cuts:?}: subtries not used");
            assert_eq!(store.duplicate_writes, 0);
            assert!(store.nodes.contains_key(&want));
        }
        // Slots stored otherwise than the ranges held (a value changed, one gone): the
        // remembered subtries do not match them and the build still gives their root.
        let mut changed = slots.clone();
        changed[700].1.push(1);
        changed.remove(1200);
        let (root, _, _) = storage_build(&slots, &[300, 900], &changed);
        assert_eq!(root, trie::build_root(&changed, &mut |_, _| {}));
        assert_ne!(root, want);
    }

    #[test]
    fn a_storage_trie_is_built_from_its_own_runs_only() {
        let account = B256::repeat_byte(7);
        let slot = |i: u8, v: u8| (B256::repeat_byte(i), vec![v]);
        let mut store = MemStore::default();
        // A run left by a pass over the trie under another storage root (a restart
        // after the pivot moved), at an origin this pass does not use.
        store.put_storage_slots(
            account,
            B256::repeat_byte(0x10),
            &[slot(0x11, 9), slot(0x12, 9)],
        );
        // This pass's runs.
        store.put_storage_slots(account, B256::ZERO, &[slot(0x01, 1), slot(0x05, 1)]);
        store.put_storage_slots(account, B256::repeat_byte(0x20), &[slot(0x21, 1)]);
        let runs = [B256::ZERO, B256::repeat_byte(0x20)];
        let got = stored_slots(&store, &account, &runs, vec![slot(0x30, 1), slot(0x31, 1)]);
        assert_eq!(
            got,
            vec![
                slot(0x01, 1),
                slot(0x05, 1),
                slot(0x21, 1),
                slot(0x30, 1),
                slot(0x31, 1)
            ]
        );
        // Without stored runs, the last run is the trie.
        assert_eq!(
            stored_slots(&store, &account, &[], vec![slot(0x30, 1)]),
            vec![slot(0x30, 1)]
        );
    }

    #[test]
    fn split_covers_range() {
        let lo = B256::repeat_byte(0x10);
        let hi = B256::repeat_byte(0xff);
        let parts = split_range(lo, hi, 4);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0].0, lo);
        assert_eq!(parts[3].1, hi);
        for w in parts.windows(2) {
            assert_eq!(inc(w[0].1), w[1].0);
        }
    }
}

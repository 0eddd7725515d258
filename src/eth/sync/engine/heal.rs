//! The end of each state phase and the heal rounds: snap's rebuild of the trie top from
//! the stored ranges (`Rebuild`, `SubtrieBuilt`, `BuildWhole`, `WholeBuilt`), and probe waves
//! (`Probe`, `ProbeReply`) that end a walk round and start another until one fetches nothing.
//!
//! The rebuild hashes only what the range verifier did not: a subtrie that lay whole inside
//! one verified account range was built (and stored) there, and is referenced by the hash
//! remembered in [`KnownSubtries`] when the stored leaves under it are the ones it was
//! built from; anything else (after a restart, a subtrie across two ranges) is built here.

use alloy_primitives::{keccak256, B256};
use catchup_shards::ownership;

use super::snap::unit_key;
use super::{Action, Engine, ShardId, ShardMsg, StatePhase};
use crate::eth::sync::config::SyncMode;
use crate::eth::sync::store::SyncStore;
use crate::eth::sync::trie::{self, build_node, build_node_known, Node, NodeRef};
use crate::eth::sync::types::AccountView;

impl Engine {
    /// Coordinator: walk termination, by probe waves.
    pub(super) fn tick_probe_wave(&mut self, out: &mut Vec<Action>) {
        let walking = self.phase == StatePhase::Walk;
        let c = self.coord.as_mut().expect("coordinator");
        if walking && c.wave_replies.is_empty() && !c.state_complete {
            c.wave += 1;
            let w = c.wave;
            for s in 0..self.shards {
                out.push(Action::ToShard {
                    shard: s,
                    msg: ShardMsg::Probe { wave: w },
                });
            }
        }
    }

    /// Answer a probe wave with this shard's walk counters.
    pub(super) fn on_probe(&mut self, wave: u64, out: &mut Vec<Action>) {
        let idle = self.walk_idle();
        out.push(Action::ToShard {
            shard: 0,
            msg: ShardMsg::ProbeReply {
                wave,
                shard: self.shard,
                round: self.round,
                idle,
                sent: self.tasks_sent,
                recv: self.tasks_recv,
                fetched: self.round_fetched,
                lossy: self.round_lossy,
            },
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_probe_reply(
        &mut self,
        wave: u64,
        shard: ShardId,
        round: u32,
        idle: bool,
        (sent, recv, fetched, lossy): (u64, u64, u64, bool),
        store: &mut dyn SyncStore,
        out: &mut Vec<Action>,
    ) {
        let shards = self.shards;
        let my_round = self.round;
        let Some(c) = self.coord.as_mut() else { return };
        if wave != c.wave {
            return;
        }
        c.wave_replies
            .insert(shard, (round, idle, sent, recv, fetched, lossy));
        if c.wave_replies.len() < shards {
            return;
        }
        let replies = std::mem::take(&mut c.wave_replies);
        let counts: Vec<(u64, u64)> = replies.values().map(|r| (r.2, r.3)).collect();
        let all_idle = replies.values().all(|r| r.1 && r.0 == my_round);
        let balanced =
            counts.iter().map(|x| x.0).sum::<u64>() == counts.iter().map(|x| x.1).sum::<u64>();
        let stable = c.last_wave.as_ref() == Some(&counts);
        c.last_wave = Some(counts);
        if !(all_idle && balanced && stable) {
            return;
        }
        let fetched_total: u64 = replies.values().map(|r| r.4).sum();
        let lossy = replies.values().any(|r| r.5);
        c.last_wave = None;
        // The round walked the whole trie from the root: every node it met was either
        // stored (and expanded) or fetched, verified, stored and expanded. Unless it dropped
        // something on the way (then another round walks again), the state is complete,
        // whether or not it had to fetch anything.
        if fetched_total == 0 || !lossy {
            c.state_complete = true;
            self.journal.state_complete = true;
            self.phase = StatePhase::Complete;
            self.write_journal(store);
            for s in 1..shards {
                out.push(Action::ToShard {
                    shard: s,
                    msg: ShardMsg::StateComplete,
                });
            }
            self.check_coordinator(store, out);
        } else {
            let r = my_round + 1;
            for s in 0..shards {
                out.push(Action::ToShard {
                    shard: s,
                    msg: ShardMsg::StartWalk { round: r },
                });
            }
        }
    }

    /// Snap: build the account trie below the trie prefixes this shard owns from its
    /// stored leaves, and tell shard 0 the top of each (shard 0 builds the rest). The
    /// prefix blocks (1/4,096 of the key space each) are read and built one at a time,
    /// up to [`REBUILD_STEP_ACCOUNTS`] accounts per step ([`Engine::rebuild_step`]), and
    /// the nodes a step puts are committed before the next step: the memory the rebuild
    /// takes is that of one block's leaves and one step's nodes, not of the shard's share
    /// of the account trie.
    pub(super) fn rebuild(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Action>) {
        if self.mode != SyncMode::Snap {
            return;
        }
        self.phase = StatePhase::Rebuild;
        self.rebuilding =
            ownership::trie_prefixes_of(self.shard, self.shards).map(|(lo, hi)| Rebuilding {
                next: lo,
                hi,
                blocks: Vec::new(),
            });
        if self.rebuilding.is_none() {
            out.push(Action::ToShard {
                shard: 0,
                msg: ShardMsg::SubtriesBuilt {
                    shard: self.shard,
                    blocks: Vec::new(),
                },
            });
            return;
        }
        self.rebuild_step(store, out);
    }

    /// Build the next prefix blocks that hold accounts; when none is left, send the blocks
    /// to shard 0, else ask this shard to go on (after the driver commits what was put).
    pub(super) fn rebuild_step(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Action>) {
        let Some(mut r) = self.rebuilding.take() else {
            return;
        };
        let k = ownership::trie_prefix_nibbles(self.shards);
        let shift = 64 - 4 * k as u32;
        // Blocks are read and built one at a time; a step goes on to the next block until
        // it has built this many accounts, so that small blocks share one commit.
        let mut built = 0;
        let first_new = r.blocks.len();
        // Per new block: whether all its accounts are complete.
        let mut new_complete = Vec::new();
        while r.next <= r.hi && built < REBUILD_STEP_ACCOUNTS {
            let p = r.next;
            r.next += 1;
            let first = unit_key(p << shift, false);
            let last = unit_key((((p as u128 + 1) << shift) - 1) as u64, true);
            let leaves = store.accounts_in(&first, &last);
            if leaves.is_empty() {
                continue;
            }
            let block = build_block(&leaves, k, &mut self.known_subtries, store);
            self.progress.rebuild_subtries_reused +=
                std::mem::take(&mut self.known_subtries.reused);
            // With clean ranges every stored account went through the follow-ups, so an
            // account of this block with its storage trie or code still open is one in
            // `followups`: a search of the ordered map, not a decode and lookups per account.
            let complete = self.ranges_clean && self.followups.range(first..=last).next().is_none();
            debug_assert!(
                !complete || accounts_complete(&leaves, store),
                "an account left out of the follow-ups is incomplete"
            );
            new_complete.push(complete);
            built += leaves.len();
            r.blocks.push(block);
        }
        // The step's blocks' nodes at depth k, hashed four at a time.
        hash_at_k(&mut r.blocks[first_new..]);
        for (block, _) in r.blocks[first_new..]
            .iter()
            .zip(new_complete)
            .filter(|(_, complete)| *complete)
        {
            self.complete.extend(block.at_k_hash);
            if let BlockShape::Branch {
                node: NodeRef::Hash(h),
                ..
            } = &block.shape
            {
                self.complete.insert(*h);
            }
        }
        if r.next > r.hi {
            store_block_nodes(&mut r.blocks, k, store);
            // What the rebuild did not use is of no use any more.
            self.known_subtries.clear();
            out.push(Action::ToShard {
                shard: 0,
                msg: ShardMsg::SubtriesBuilt {
                    shard: self.shard,
                    blocks: r.blocks,
                },
            });
        } else {
            self.rebuilding = Some(r);
            out.push(Action::ToShard {
                shard: self.shard,
                msg: ShardMsg::RebuildNext,
            });
        }
    }

    /// Coordinator: every shard built its blocks; build the top of the trie above them
    /// (the paths shorter than the ownership prefix, all shard 0's) and check the root.
    pub(super) fn finish_rebuild(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Action>) {
        let shards = self.shards;
        let Some(c) = self.coord.as_mut() else { return };
        if c.subtries.len() < shards {
            return;
        }
        // Shards own ascending prefix ranges, and list their blocks in order.
        let blocks: Vec<BlockTop> = std::mem::take(&mut c.subtries)
            .into_values()
            .flatten()
            .collect();
        let want = self
            .pivot
            .as_ref()
            .map(|p| p.state_root)
            .unwrap_or_default();
        if !blocks.is_empty() {
            let k = ownership::trie_prefix_nibbles(shards);
            let mut put = |h: B256, r: &[u8]| {
                store.put_new_node(h, r);
            };
            let (root, _) = build_top(&blocks, 0, k, &mut put);
            let h = keccak256(&root);
            if h == want {
                put(h, &root);
            }
        }
        self.after_rebuild(store, out);
    }

    pub(super) fn after_rebuild(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Action>) {
        self.journal.rebuilt = true;
        self.rebuilt = true;
        let r = self.journal.walk_round;
        self.write_journal(store);
        for s in 0..self.shards {
            out.push(Action::ToShard {
                shard: s,
                msg: ShardMsg::StartWalk { round: r },
            });
        }
    }
}

/// [`block_top`] for stored `leaves`, its nodes put in `store`, using the subtries a
/// verified range built already where they match the leaves.
fn build_block(
    leaves: &[(B256, Vec<u8>)],
    k: usize,
    known: &mut KnownSubtries,
    store: &mut dyn SyncStore,
) -> BlockTop {
    // The block's top branch, when a verified range built this very block.
    let top = (leaves.len() > 1)
        .then(|| known.take(block_cp(leaves, k), leaves))
        .flatten()
        .and_then(|node| match &node {
            NodeRef::Hash(h) => store.get_node(h).map(|rlp| (rlp, node)),
            NodeRef::Embedded(b) => Some((b.to_vec(), node)),
        });
    let mut put = |h: B256, r: &[u8]| {
        store.put_new_node(h, r);
    };
    block_top(leaves, k, top, &mut put, &mut |d, sub| known.take(d, sub))
}

/// Where the keys of sorted `leaves` (at least two, all under one `k`-nibble prefix) part.
fn block_cp(leaves: &[(B256, Vec<u8>)], k: usize) -> usize {
    let (a, b) = (leaves[0].0, leaves[leaves.len() - 1].0);
    let mut cp = k;
    while trie::nibble(a.as_slice(), cp) == trie::nibble(b.as_slice(), cp) {
        cp += 1;
    }
    cp
}

/// The block of sorted `leaves` (at least one, all under one `k`-nibble prefix): its
/// subtrie's nodes go to `put` (the top one too, when referenced by hash). Subtries
/// `known` gives (see [`build_node_known`]) and `top`, the RLP and reference of the
/// block's top branch when it was built already, are not built again.
fn block_top(
    leaves: &[(B256, Vec<u8>)],
    k: usize,
    top: Option<(Vec<u8>, NodeRef)>,
    put: &mut dyn FnMut(B256, &[u8]),
    known: &mut trie::KnownSubtree<'_, B256, Vec<u8>>,
) -> BlockTop {
    let prefix: Vec<u8> = (0..k)
        .map(|i| trie::nibble(leaves[0].0.as_slice(), i))
        .collect();
    let mut branch_rlp = None;
    let shape = if leaves.len() == 1 {
        BlockShape::Leaf {
            key: leaves[0].0,
            value: leaves[0].1.clone(),
        }
    } else {
        // Where the keys part: a branch, whatever lies above it.
        let a = leaves[0].0;
        let cp = block_cp(leaves, k);
        let (rlp, node) = match top {
            Some(built) => built,
            None => {
                let rlp = build_node_known(leaves, cp, put, known);
                let node = NodeRef::for_node(&rlp);
                if let NodeRef::Hash(h) = node {
                    put(h, &rlp);
                }
                (rlp, node)
            }
        };
        branch_rlp = Some(rlp);
        BlockShape::Branch {
            path: (0..cp).map(|i| trie::nibble(a.as_slice(), i)).collect(),
            node,
        }
    };
    // The block's node at depth k, which is the trie's wherever the blocks
    // beside it hold accounts (always, at any real size; else shard 0 builds
    // the node higher up from `shape` and this one is a spare).
    let at_k = match &shape {
        BlockShape::Leaf { .. } => build_node(leaves, k, put),
        BlockShape::Branch { path, node } if path.len() > k => Node::Extension {
            path: trie::Nibbles(path[k..].to_vec()),
            child: node.clone(),
        }
        .encode(),
        BlockShape::Branch { .. } => branch_rlp.take().expect("built above"),
    };
    BlockTop {
        prefix,
        at_k,
        at_k_hash: None,
        shape,
        at_k_stored: false,
    }
}

/// Store the node at depth `k` of each of a shard's `blocks` (sorted by prefix) that is
/// certainly the trie's: a branch at `k`, or a block with another block under the same
/// parent at `k - 1` (which is then a branch). Elsewhere the trie may hold the block's
/// accounts higher up, and `at_k` would be a node of no trie: shard 0 stores it when the
/// top it builds uses it.
fn store_block_nodes(blocks: &mut [BlockTop], k: usize, store: &mut dyn SyncStore) {
    hash_at_k(blocks);
    for i in 0..blocks.len() {
        let parent = &blocks[i].prefix[..k.saturating_sub(1)];
        let sibling = |j: Option<usize>| {
            j.and_then(|j| blocks.get(j))
                .is_some_and(|b| b.prefix[..k.saturating_sub(1)] == *parent)
        };
        let b = &blocks[i];
        let real = matches!(&b.shape, BlockShape::Branch { path, .. } if path.len() == k)
            || sibling(i.checked_sub(1))
            || sibling(Some(i + 1));
        if real {
            if let Some(h) = b.at_k_hash {
                store.put_new_node(h, &b.at_k);
            }
            blocks[i].at_k_stored = true;
        }
    }
}

/// Fill in the hash of each block's node at depth k that is referenced by hash and not
/// hashed yet, four at a time.
fn hash_at_k(blocks: &mut [BlockTop]) {
    let todo: Vec<usize> = (0..blocks.len())
        .filter(|&i| blocks[i].at_k_hash.is_none() && blocks[i].at_k.len() >= 32)
        .collect();
    let items: Vec<&[u8]> = todo.iter().map(|&i| blocks[i].at_k.as_slice()).collect();
    let mut hashes = Vec::with_capacity(items.len());
    catchup_eth::keccak4::keccak256_each(&items, &mut hashes);
    for (i, h) in todo.into_iter().zip(hashes) {
        blocks[i].at_k_hash = Some(h);
    }
}

/// Every account of `leaves` has its storage trie built and its code stored.
fn accounts_complete(leaves: &[(B256, Vec<u8>)], store: &dyn SyncStore) -> bool {
    leaves.iter().all(|(h, raw)| {
        AccountView::decode_roots(raw).is_ok_and(|a| {
            (!a.has_storage() || store.storage_done(h))
                && (!a.has_code() || store.has_code(&a.code_hash))
        })
    })
}

/// Accounts the snap rebuild builds per step before the driver commits what it put.
const REBUILD_STEP_ACCOUNTS: usize = 65_536;

/// Most subtries remembered for the rebuild (about 150 bytes each); beyond, the rebuild
/// builds the rest itself.
const MAX_KNOWN_SUBTRIES: usize = 1 << 18;

/// Subtries of the account trie that a verified range built whole (their nodes stored),
/// by their first leaf: the rebuild references one instead of building it again when the
/// stored leaves under it are exactly the ones it was built from. Only the maximal
/// subtries of each range are kept, each until the rebuild uses it (or ends). Each is
/// also written to the store (after its nodes), so that the rebuild after a restart finds
/// them too; the digest's keys are fixed for that.
#[derive(Clone)]
pub(super) struct KnownSubtries {
    by_first: alloy_primitives::map::HashMap<B256, KnownSubtrie>,
    hasher: alloy_primitives::map::foldhash::fast::FixedState,
    /// Subtries the rebuild referenced (taken and matching their leaves).
    pub(super) reused: u64,
    /// Written to the store as remembered (the account trie's, for a restart's rebuild).
    kept: bool,
}

impl Default for KnownSubtries {
    fn default() -> Self {
        KnownSubtries {
            by_first: Default::default(),
            hasher: alloy_primitives::map::foldhash::fast::FixedState::with_seed(
                0x6b6e_6f77_6e5f_7375,
            ),
            reused: 0,
            kept: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KnownSubtrie {
    /// Where its top node sits (the length of its path).
    depth: usize,
    node: NodeRef,
    count: usize,
    last: B256,
    /// A digest of its leaves (keys and values), to check them against the stored ones.
    digest: u64,
}

impl KnownSubtrie {
    /// The stored record: depth u8, count u64 LE, last key, digest u64 LE, then 32 bytes
    /// of hash or an embedded node (shorter).
    fn record(&self) -> Vec<u8> {
        let mut r = Vec::with_capacity(49 + 32);
        r.push(self.depth as u8);
        r.extend_from_slice(&(self.count as u64).to_le_bytes());
        r.extend_from_slice(self.last.as_slice());
        r.extend_from_slice(&self.digest.to_le_bytes());
        match &self.node {
            NodeRef::Hash(h) => r.extend_from_slice(h.as_slice()),
            NodeRef::Embedded(b) => r.extend_from_slice(b),
        }
        r
    }

    fn from_record(r: &[u8]) -> Option<KnownSubtrie> {
        if r.len() < 50 || r[0] as usize > 64 {
            return None;
        }
        let node = &r[49..];
        Some(KnownSubtrie {
            depth: r[0] as usize,
            count: u64::from_le_bytes(r[1..9].try_into().ok()?) as usize,
            last: B256::from_slice(&r[9..41]),
            digest: u64::from_le_bytes(r[41..49].try_into().ok()?),
            node: match node.len() {
                32 => NodeRef::Hash(B256::from_slice(node)),
                n if n < 32 => NodeRef::Embedded(catchup_eth::Bytes::copy_from_slice(node)),
                _ => return None,
            },
        })
    }
}

/// The leaves of a subtrie as [`KnownSubtries`] checks them: first and last key, count,
/// and a digest of keys and values.
#[derive(Debug, Clone, Copy)]
pub(super) struct SubtrieLeaves {
    first: B256,
    last: B256,
    count: usize,
    digest: u64,
}

impl std::fmt::Debug for KnownSubtries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownSubtries")
            .field("count", &self.by_first.len())
            .finish()
    }
}

impl KnownSubtries {
    /// The account trie's: each subtrie remembered is also written to the store.
    pub(super) fn kept() -> Self {
        KnownSubtries {
            kept: true,
            ..Default::default()
        }
    }

    /// What is remembered of the subtrie built from `leaves` (sorted, not empty, the
    /// ones stored), read before the leaves are handed on to the store.
    pub(super) fn leaves_of(&self, leaves: &[(B256, Vec<u8>)]) -> Option<SubtrieLeaves> {
        let (first, last) = (leaves.first()?, leaves.last()?);
        Some(SubtrieLeaves {
            first: first.0,
            last: last.0,
            count: leaves.len(),
            digest: std::hash::BuildHasher::hash_one(&self.hasher, leaves),
        })
    }

    /// Remember the subtrie at `depth` over leaves read by [`KnownSubtries::leaves_of`]
    /// (its nodes stored already), and keep it in `store`.
    pub(super) fn remember_leaves(
        &mut self,
        depth: usize,
        node: NodeRef,
        l: SubtrieLeaves,
        store: &mut dyn SyncStore,
    ) {
        if self.by_first.len() >= MAX_KNOWN_SUBTRIES {
            return;
        }
        let k = KnownSubtrie {
            depth,
            node,
            count: l.count,
            last: l.last,
            digest: l.digest,
        };
        if self.kept {
            store.put_known_subtrie(l.first, &k.record());
        }
        self.by_first.insert(l.first, k);
    }

    /// Add the subtries `store` kept (a restart), within the cap; a record that does not
    /// parse is left out (the rebuild then hashes those leaves).
    pub(super) fn load(&mut self, store: &dyn SyncStore) {
        let room = MAX_KNOWN_SUBTRIES.saturating_sub(self.by_first.len());
        for (first, r) in store.known_subtries(room) {
            if let Some(k) = KnownSubtrie::from_record(&r) {
                self.by_first.entry(first).or_insert(k);
            }
        }
    }

    /// The reference of the subtrie at `depth` over `leaves` (the stored ones under its
    /// path, sorted), if one was remembered and was built from exactly these leaves; it
    /// is forgotten then (a rebuild takes each subtrie once), as is one that no longer
    /// matches its leaves.
    pub(super) fn take(&mut self, depth: usize, leaves: &[(B256, Vec<u8>)]) -> Option<NodeRef> {
        let first = leaves.first()?;
        let k = self.by_first.get(&first.0)?;
        if k.depth != depth {
            return None;
        }
        let k = self.by_first.remove(&first.0)?;
        let last = leaves.last()?;
        let matches = k.count == leaves.len()
            && k.last == last.0
            && k.digest == std::hash::BuildHasher::hash_one(&self.hasher, leaves);
        self.reused += u64::from(matches);
        matches.then_some(k.node)
    }

    /// How many subtries are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_first.len()
    }

    pub(super) fn clear(&mut self) {
        self.by_first = Default::default();
    }
}

/// A rebuild under way: the next trie prefix to build and the blocks built so far.
#[derive(Debug, Clone)]
pub(super) struct Rebuilding {
    next: u64,
    hi: u64,
    blocks: Vec<BlockTop>,
}

/// What a shard built of one trie-prefix block of the account trie (the accounts whose
/// keys start with `prefix`), for shard 0 to build the trie above the blocks.
#[derive(Debug, Clone)]
pub struct BlockTop {
    /// The block's prefix: the ownership map's number of nibbles.
    pub prefix: Vec<u8>,
    /// The block's subtrie as the node at the prefix's depth (stored by its builder).
    pub at_k: Vec<u8>,
    /// Its hash, when it is referenced by hash (32 bytes or more) and was hashed already
    /// (see [`hash_at_k`]).
    pub at_k_hash: Option<B256>,
    /// The block's subtrie as seen from higher up.
    pub shape: BlockShape,
    /// Whether its builder stored `at_k` (see [`store_block_nodes`]); if not, shard 0
    /// stores it when the top uses it.
    pub at_k_stored: bool,
}

/// A block's subtrie, as the trie above it sees it.
#[derive(Debug, Clone)]
pub enum BlockShape {
    /// One account.
    Leaf { key: B256, value: Vec<u8> },
    /// Several: the branch where their keys part, at `path` (at least as long as the
    /// prefix), stored by the block's builder.
    Branch { path: Vec<u8>, node: NodeRef },
}

impl BlockTop {
    fn nibble(&self, i: usize) -> u8 {
        match &self.shape {
            BlockShape::Leaf { key, .. } => trie::nibble(key.as_slice(), i),
            BlockShape::Branch { path, .. } => path[i],
        }
    }
}

/// The node at `depth` above sorted `blocks` of distinct `k`-nibble prefixes (all sharing
/// their first `depth` nibbles): its RLP, and whether it was made here (then the caller
/// stores it when it is referenced by hash). Nodes made here below it go to `emit`.
fn build_top(
    blocks: &[BlockTop],
    depth: usize,
    k: usize,
    emit: &mut dyn FnMut(B256, &[u8]),
) -> (Vec<u8>, bool) {
    debug_assert!(!blocks.is_empty() && depth <= k);
    fn reference(
        (rlp, made): (Vec<u8>, bool),
        hash: Option<B256>,
        emit: &mut dyn FnMut(B256, &[u8]),
    ) -> NodeRef {
        if rlp.len() < 32 {
            NodeRef::Embedded(catchup_eth::Bytes::from(rlp))
        } else {
            let h = hash.unwrap_or_else(|| keccak256(&rlp));
            if made {
                emit(h, &rlp);
            }
            NodeRef::Hash(h)
        }
    }
    if let [b] = blocks {
        if depth == k {
            return (b.at_k.clone(), !b.at_k_stored);
        }
        let node = match &b.shape {
            BlockShape::Leaf { key, value } => Node::Leaf {
                path: trie::Nibbles(
                    (depth..64)
                        .map(|i| trie::nibble(key.as_slice(), i))
                        .collect(),
                ),
                value: catchup_eth::Bytes::copy_from_slice(value),
            },
            BlockShape::Branch { path, node } => Node::Extension {
                path: trie::Nibbles(path[depth..].to_vec()),
                child: node.clone(),
            },
        };
        return (node.encode(), true);
    }
    // Distinct prefixes part within their first k nibbles.
    let (first, last) = (&blocks[0], &blocks[blocks.len() - 1]);
    let mut cp = depth;
    while cp < k && first.nibble(cp) == last.nibble(cp) {
        cp += 1;
    }
    assert!(cp < k, "blocks with one prefix");
    if cp > depth {
        let child = reference(build_top(blocks, cp, k, emit), None, emit);
        let node = Node::Extension {
            path: trie::Nibbles((depth..cp).map(|i| first.nibble(i)).collect()),
            child,
        };
        return (node.encode(), true);
    }
    let mut children: Box<[Option<NodeRef>; 16]> = Box::default();
    let mut start = 0;
    while start < blocks.len() {
        let n = blocks[start].nibble(depth);
        let mut end = start + 1;
        while end < blocks.len() && blocks[end].nibble(depth) == n {
            end += 1;
        }
        let (rlp, made) = build_top(&blocks[start..end], depth + 1, k, emit);
        // A single block at depth k is its own node there, hashed already.
        let known = match &blocks[start..end] {
            [b] if depth + 1 == k => b.at_k_hash,
            _ => None,
        };
        children[n as usize] = Some(reference((rlp, made), known, emit));
        start = end;
    }
    (
        Node::Branch {
            children,
            value: None,
        }
        .encode(),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_subtrie_record_reads_back_as_written() {
        for node in [
            NodeRef::Hash(B256::repeat_byte(0x5a)),
            NodeRef::Embedded(catchup_eth::Bytes::from_static(&[0xc2, 0x20, 0x01])),
        ] {
            let k = KnownSubtrie {
                depth: 5,
                node,
                count: 1234,
                last: B256::repeat_byte(0x77),
                digest: 0x0102_0304_0506_0708,
            };
            let r = k.record();
            assert_eq!(KnownSubtrie::from_record(&r), Some(k));
            assert_eq!(KnownSubtrie::from_record(&r[..49]), None, "no reference");
        }
        let mut long = KnownSubtrie {
            depth: 1,
            node: NodeRef::Hash(B256::ZERO),
            count: 1,
            last: B256::ZERO,
            digest: 0,
        }
        .record();
        long.push(0);
        assert_eq!(KnownSubtrie::from_record(&long), None, "33 bytes");
    }

    #[test]
    fn the_leaves_digest_is_the_same_in_every_process() {
        // Kept across restarts: the digest's keys must not be drawn at random.
        let leaves = vec![(B256::repeat_byte(1), vec![1, 2, 3])];
        let a = KnownSubtries::default().leaves_of(&leaves).unwrap();
        let b = KnownSubtries::kept().leaves_of(&leaves).unwrap();
        assert_eq!(a.digest, b.digest);
    }
    use crate::eth::sync::engine::snap::keep_verified_ranges;
    use crate::eth::sync::store::MemStore;
    use std::collections::HashMap;

    fn account_leaves(n: usize, seed: u64) -> Vec<(B256, Vec<u8>)> {
        let mut leaves: Vec<(B256, Vec<u8>)> = (0..n)
            .map(|i| {
                let key = keccak256((seed * 1_000_000 + i as u64).to_be_bytes());
                (key, vec![0x80 + (i % 50) as u8; 40 + i % 30])
            })
            .collect();
        leaves.sort();
        leaves
    }

    /// The rebuild of every block of `leaves` and the top above them: the root.
    fn rebuild_all(
        leaves: &[(B256, Vec<u8>)],
        k: usize,
        known: &mut KnownSubtries,
        store: &mut MemStore,
    ) -> B256 {
        let mut blocks = Vec::new();
        let mut start = 0;
        while start < leaves.len() {
            let same = |i: usize| {
                (0..k).all(|j| {
                    trie::nibble(leaves[i].0.as_slice(), j)
                        == trie::nibble(leaves[start].0.as_slice(), j)
                })
            };
            let mut end = start + 1;
            while end < leaves.len() && same(end) {
                end += 1;
            }
            blocks.push(build_block(&leaves[start..end], k, known, store));
            start = end;
        }
        store_block_nodes(&mut blocks, k, store);
        let mut put = |h: B256, r: &[u8]| {
            store.put_new_node(h, r);
        };
        let (root, _) = build_top(&blocks, 0, k, &mut put);
        let h = keccak256(&root);
        put(h, &root);
        h
    }

    #[test]
    fn subtries_of_verified_ranges_are_used_once_and_give_the_same_trie() {
        for (n, k, cuts) in [
            (3000usize, 1usize, vec![400usize, 1100, 1101, 2500]),
            (3000, 2, vec![7, 300, 2999]),
            (200, 1, vec![]),
            (5, 1, vec![2]),
            // Ranges whose subtries sit above the prefix depth: split at it.
            (3000, 2, vec![]),
            (20_000, 3, vec![1, 5000, 5001, 19_000]),
            (20_000, 3, vec![]),
            (60_000, 3, vec![30_000]),
            // Few accounts over many blocks: most sit above the prefix depth, and a
            // block's node at it belongs to no trie (never stored).
            (5, 3, vec![2]),
            (200, 3, vec![]),
            (200, 3, vec![50, 51]),
        ] {
            check_ranges_then_rebuild(n, k, &cuts, n as u64 + k as u64);
        }
    }

    /// Keep verified ranges of `n` generated leaves cut at `cuts`, rebuild with `k`-nibble
    /// blocks: the root is the trie's, every remembered subtrie is used, and the store
    /// holds exactly the trie's nodes, each written once.
    fn check_ranges_then_rebuild(n: usize, k: usize, cuts: &[usize], seed: u64) {
        let leaves = account_leaves(n, seed);
        let mut want_nodes = HashMap::new();
        let want = trie::build_root(&leaves, &mut |h, r| {
            want_nodes.insert(h, r.to_vec());
        });
        let mut known = KnownSubtries::default();
        let mut store = MemStore::default();
        // Account ranges, each with its proof.
        keep_verified_ranges(&leaves, cuts, k, true, &mut known, &mut store);
        let remembered = known.by_first.len();
        // (A range of the whole trie is the root's subtrie, above the blocks: the
        // rebuild builds it.)
        assert!(
            remembered > 0 || cuts.is_empty() || n < 10,
            "{n} {k}: nothing remembered"
        );
        let kept = store.nodes.len();
        assert!(kept > 0 || cuts.is_empty() || n < 10);
        let root = rebuild_all(&leaves, k, &mut known, &mut store);
        assert_eq!(root, want, "{n} leaves, {k} nibbles");
        // Each subtrie was used by the rebuild, and no node was written twice.
        assert_eq!(known.by_first.len(), 0, "{n} {k}: unused subtries");
        assert_eq!(store.duplicate_writes, 0);
        // The store holds exactly the trie's nodes.
        assert_eq!(store.nodes.len(), want_nodes.len());
        for (h, r) in &store.nodes {
            assert_eq!(
                want_nodes.get(h).map(Vec::as_slice),
                Some(r),
                "{n} {k}: {h} not of the trie"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn any_cuts_at_any_prefix_depth_rebuild_exactly_the_trie(
            n in 1usize..4000,
            k in 1usize..=3,
            cuts in proptest::collection::btree_set(1usize..4000, 0..6),
            seed in 0u64..1000,
        ) {
            let cuts: Vec<usize> = cuts.into_iter().filter(|&c| c < n).collect();
            check_ranges_then_rebuild(n, k, &cuts, seed);
        }
    }

    #[test]
    fn a_remembered_subtrie_that_does_not_match_the_stored_leaves_is_not_used() {
        let k = 1;
        let leaves = account_leaves(2000, 99);
        let cuts = [300usize, 1200];
        // The stored leaves, changed after the ranges were kept: a value, a leaf gone, a
        // leaf added, each inside a remembered subtrie.
        type Change = dyn Fn(&mut Vec<(B256, Vec<u8>)>, usize);
        let changes: [&Change; 3] = [
            &|l, i| l[i + 1].1.push(7),
            &|l, i| {
                l.remove(i + 1);
            },
            &|l, i| {
                let mut key = l[i].0;
                key.0[31] ^= 1;
                if l.binary_search_by(|x| x.0.cmp(&key)).is_err() {
                    l.push((key, vec![0x81; 50]));
                    l.sort();
                }
            },
        ];
        for change in changes {
            let mut known = KnownSubtries::default();
            let mut store = MemStore::default();
            // Account ranges, each with its proof.
            keep_verified_ranges(&leaves, &cuts, k, true, &mut known, &mut store);
            // One remembered subtrie of 3 leaves or more, and where its leaves start.
            let (first, _) = known
                .by_first
                .iter()
                .find(|(_, s)| s.count >= 3)
                .expect("a subtrie of 3 leaves");
            let i = leaves.iter().position(|l| l.0 == *first).expect("a leaf");
            let mut stored = leaves.clone();
            change(&mut stored, i);
            assert_ne!(stored, leaves);
            let want = trie::build_root(&stored, &mut |_, _| {});
            let root = rebuild_all(&stored, k, &mut known, &mut store);
            assert_eq!(root, want);
            assert_ne!(root, trie::build_root(&leaves, &mut |_, _| {}));
        }
    }

    #[test]
    fn blocks_and_the_top_above_them_make_the_whole_trie() {
        let mut seed = 1u64;
        for n in [1usize, 2, 3, 5, 17, 40, 300, 2000] {
            for k in 1..=3 {
                seed += 1;
                let leaves = account_leaves(n, seed);
                let mut want_nodes = HashMap::new();
                let want = trie::build_root(&leaves, &mut |h, r| {
                    want_nodes.insert(h, r.to_vec());
                });
                let mut got_nodes = HashMap::new();
                let mut put = |h: B256, r: &[u8]| {
                    assert_eq!(keccak256(r), h);
                    got_nodes.insert(h, r.to_vec());
                };
                let mut blocks = Vec::new();
                let mut start = 0;
                while start < leaves.len() {
                    let p = |i: usize| &leaves[i].0[..2];
                    let same = |i: usize| {
                        (0..k).all(|j| trie::nibble(p(i), j) == trie::nibble(p(start), j))
                    };
                    let mut end = start + 1;
                    while end < leaves.len() && same(end) {
                        end += 1;
                    }
                    blocks.push(block_top(
                        &leaves[start..end],
                        k,
                        None,
                        &mut put,
                        &mut |_, _| None,
                    ));
                    start = end;
                }
                let (root, _) = build_top(&blocks, 0, k, &mut put);
                let h = keccak256(&root);
                put(h, &root);
                assert_eq!(h, want, "{n} leaves, {k} nibbles");
                // Every node of the trie was made by a block or the top.
                for h in want_nodes.keys() {
                    assert!(
                        got_nodes.contains_key(h),
                        "{n} leaves, {k} nibbles: {h} missing"
                    );
                }
            }
        }
    }
}

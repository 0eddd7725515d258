//! A live chain for `eth serve --grow-every-ms`: a generated block is appended at a fixed
//! rate (transfers, new accounts, storage writes and deletions, contract creations, with
//! their transactions and receipts), and only the last `--state-history` blocks' states
//! are kept, as geth keeps them. State requests for an older root are answered empty.
//!
//! The states share one node store: a node is kept while a kept state's trie reaches it.
//! Each stored node counts the stored nodes (and kept roots) that reference it; an account
//! leaf also references its storage trie's root. Dropping a state's root releases what only
//! it reached, so memory is one state plus what the last blocks changed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use alloy_primitives::{keccak256, B256};
use catchup_eth::{ordered_root, rlp, EMPTY_CODE_HASH, EMPTY_ROOT};

use super::convert;
use super::eth_peer::Responder;
use super::wire::{empty_response, Wire};
use crate::eth::serve::{
    account_range, node_at_path, storage_ranges, ServingPeer, StateView, MAX_NODE_DATA_SERVE,
    MAX_SNAP_ITEMS_SERVE, SOFT_RESPONSE_BYTES,
};
use crate::eth::sync::chain::{ChainData, SimRng, StateData};
use crate::eth::sync::trie::{build_root, Node, NodeRef, NodeSource};
use crate::eth::sync::types::{AccountView, Body, Header, Receipts, Request, Response};

#[derive(Debug, Clone)]
struct StoredNode {
    raw: Vec<u8>,
    /// Stored nodes and kept roots referencing this node.
    refs: u32,
    /// A node of the account trie (its leaves reference storage roots).
    account_trie: bool,
}

/// Trie nodes of every kept state, reference counted.
#[derive(Debug, Default)]
pub struct NodeStore {
    nodes: HashMap<B256, StoredNode>,
    /// Nodes added since the last sweep.
    fresh: Vec<B256>,
}

impl NodeSource for NodeStore {
    fn node(&self, hash: &B256) -> Option<std::borrow::Cow<'_, [u8]>> {
        self.nodes
            .get(hash)
            .map(|n| std::borrow::Cow::Borrowed(n.raw.as_slice()))
    }
}

/// Hash references of a node: its hashed children, and for an account leaf its storage root.
fn references(raw: &[u8], account_trie: bool) -> Vec<B256> {
    let mut out = Vec::new();
    match Node::decode(raw) {
        Ok(Node::Branch { children, .. }) => {
            for c in children.iter().flatten() {
                if let NodeRef::Hash(h) = c {
                    out.push(*h);
                }
            }
        }
        Ok(Node::Extension {
            child: NodeRef::Hash(h),
            ..
        }) => out.push(h),
        Ok(Node::Leaf { value, .. }) if account_trie => {
            if let Ok(a) = AccountView::decode(&value) {
                if a.storage_root != EMPTY_ROOT {
                    out.push(a.storage_root);
                }
            }
        }
        _ => {}
    }
    out
}

impl NodeStore {
    /// Number of nodes held.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Add a node the trie builder emitted (children are emitted before their parents); a
    /// node already held is left as it is.
    fn add(&mut self, hash: B256, raw: &[u8], account_trie: bool) {
        if self.nodes.contains_key(&hash) {
            return;
        }
        for c in references(raw, account_trie) {
            if let Some(n) = self.nodes.get_mut(&c) {
                n.refs += 1;
            } else {
                debug_assert!(false, "child {c} emitted after its parent");
            }
        }
        self.nodes.insert(
            hash,
            StoredNode {
                raw: raw.to_vec(),
                refs: 0,
                account_trie,
            },
        );
        self.fresh.push(hash);
    }

    fn retain(&mut self, root: B256) {
        if let Some(n) = self.nodes.get_mut(&root) {
            n.refs += 1;
        }
    }

    /// Drop one reference to `root`, and every node no longer referenced.
    fn release(&mut self, root: B256) {
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            let Some(n) = self.nodes.get_mut(&h) else {
                continue;
            };
            n.refs = n.refs.saturating_sub(1);
            if n.refs == 0 {
                let n = self.nodes.remove(&h).expect("node just seen");
                stack.extend(references(&n.raw, n.account_trie));
            }
        }
    }

    /// Forget the nodes added since the last sweep that nothing references (built, but
    /// not part of any kept state), and what only they referenced.
    fn sweep(&mut self, keep: &[B256]) {
        for h in std::mem::take(&mut self.fresh) {
            if keep.contains(&h) || self.nodes.get(&h).is_none_or(|n| n.refs > 0) {
                continue;
            }
            // Removing it is releasing the one reference it never had.
            if let Some(n) = self.nodes.get_mut(&h) {
                n.refs = 1;
            }
            self.release(h);
        }
    }
}

/// One state of the live chain, read from the shared node store.
pub struct TrieState<'a> {
    pub root: B256,
    pub store: &'a NodeStore,
}

impl StateView for TrieState<'_> {
    fn state_root(&self) -> B256 {
        self.root
    }
    fn node(&self, hash: &B256) -> Option<std::borrow::Cow<'_, [u8]>> {
        self.store.node(hash)
    }
    fn leaves_from(
        &self,
        trie_root: B256,
        _account: Option<&B256>,
        origin: &B256,
        f: &mut dyn FnMut(&B256, &[u8]) -> bool,
    ) {
        crate::eth::serve::leaves_from_source(self.store, trie_root, origin, f);
    }
}

/// An account of the head state.
#[derive(Debug, Clone)]
struct LiveAccount {
    nonce: u64,
    balance: u128,
    storage: BTreeMap<B256, Vec<u8>>,
    storage_root: B256,
    code_hash: B256,
    /// The account's trie value as last encoded (empty: not yet).
    leaf: Vec<u8>,
}

impl LiveAccount {
    fn encode_leaf(&self) -> Vec<u8> {
        let b = self.balance.to_be_bytes();
        let skip = b.iter().take_while(|x| **x == 0).count();
        AccountView {
            nonce: self.nonce,
            balance: b[skip..].to_vec(),
            storage_root: self.storage_root,
            code_hash: self.code_hash,
        }
        .encode()
    }
}

/// What one appended block changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BlockChanges {
    pub transfers: u32,
    pub new_accounts: u32,
    pub storage_writes: u32,
    pub storage_deletions: u32,
    pub contracts_created: u32,
}

/// A chain that grows, with the states of its last blocks: what the serving shards read.
pub struct LiveChain {
    pub chain: Arc<ChainData>,
    store: NodeStore,
    codes: HashMap<B256, Vec<u8>>,
    /// Kept states: (block number, state root), oldest first.
    kept: VecDeque<(u64, B256)>,
    history: usize,
    /// Accounts of the head state.
    accounts_n: usize,
}

/// The head state's accounts and the generator of the next block: owned by the thread
/// that grows the chain, which builds a block's tries reading the shared store (serving
/// goes on meanwhile) and holds the write lock only to add what is new.
pub struct BlockProducer {
    accounts: BTreeMap<B256, LiveAccount>,
    /// Keys of `accounts`, to pick from.
    keys: Vec<B256>,
    rng: SimRng,
    created: u64,
    seed: u64,
}

/// A block built against the store, not yet part of the chain.
pub struct PreparedBlock {
    root: B256,
    txs: Vec<PseudoTx>,
    /// Trie nodes the store lacks, children before parents: (hash, RLP, account trie).
    nodes: Vec<(B256, Vec<u8>, bool)>,
    codes: Vec<(B256, Vec<u8>)>,
    accounts: usize,
    changes: BlockChanges,
}

/// (sender nonce, recipient, value, data) of a generated transaction.
type PseudoTx = (u64, [u8; 20], u128, Vec<u8>);

impl LiveChain {
    /// Start from a generated chain whose every block carries `state`'s root, keeping the
    /// states of the last `history` blocks (at least 1); and the producer of its next blocks.
    pub fn new(
        chain: ChainData,
        state: &StateData,
        history: usize,
        seed: u64,
    ) -> (LiveChain, BlockProducer) {
        let mut accounts = BTreeMap::new();
        for (h, raw) in &state.accounts {
            let a = AccountView::decode(raw).expect("generated account decodes");
            let mut b = [0u8; 16];
            let n = a.balance.len().min(16);
            b[16 - n..].copy_from_slice(&a.balance[a.balance.len() - n..]);
            let storage: BTreeMap<B256, Vec<u8>> = state
                .storage
                .get(h)
                .map(|v| v.iter().cloned().collect())
                .unwrap_or_default();
            accounts.insert(
                *h,
                LiveAccount {
                    nonce: a.nonce,
                    balance: u128::from_be_bytes(b),
                    storage,
                    storage_root: a.storage_root,
                    code_hash: a.code_hash,
                    leaf: Vec::new(),
                },
            );
        }
        let mut producer = BlockProducer {
            keys: accounts.keys().copied().collect(),
            accounts,
            rng: SimRng::new(seed ^ 0x11fe_c4a1),
            created: 0,
            seed,
        };
        let mut live = LiveChain {
            chain: Arc::new(chain),
            store: NodeStore::default(),
            codes: state.codes.clone(),
            kept: VecDeque::new(),
            history: history.max(1),
            accounts_n: producer.accounts.len(),
        };
        let all: Vec<B256> = producer.keys.clone();
        let mut nodes = Vec::new();
        let root = producer.rebuild(&all, &all, &live.store, &mut nodes);
        for (h, raw, account_trie) in nodes {
            live.store.add(h, &raw, account_trie);
        }
        assert_eq!(
            root, state.root,
            "the live state starts at the generated root"
        );
        let head = live.chain.head().number;
        let first = head.saturating_sub(live.history as u64 - 1);
        for n in first..=head {
            let r = live.chain.header(n).map(|h| h.state_root).unwrap_or(root);
            live.store.retain(r);
            live.kept.push_back((n, r));
        }
        (live, producer)
    }

    /// The head block.
    pub fn head(&self) -> &Header {
        self.chain.head()
    }

    /// Kept states, oldest first: (block number, state root).
    pub fn kept(&self) -> impl Iterator<Item = &(u64, B256)> {
        self.kept.iter()
    }

    /// The node store of the kept states (read by [`BlockProducer::prepare`]).
    pub fn store(&self) -> &NodeStore {
        &self.store
    }

    /// Trie nodes held for all kept states.
    pub fn nodes_held(&self) -> usize {
        self.store.len()
    }

    /// Accounts of the head state.
    pub fn accounts(&self) -> usize {
        self.accounts_n
    }

    fn is_kept(&self, root: &B256) -> bool {
        self.kept.iter().any(|(_, r)| r == root)
    }

    /// Build the next block with `producer` and append it (both steps at once; the
    /// block producer thread holds the write lock only for [`LiveChain::append`]).
    pub fn grow(&mut self, producer: &mut BlockProducer) -> BlockChanges {
        let b = producer.prepare(&self.store);
        self.append(b)
    }

    /// Append a prepared block: its new nodes and codes stored, the block on the chain, its
    /// state kept and the oldest one beyond the history dropped.
    pub fn append(&mut self, b: PreparedBlock) -> BlockChanges {
        for (h, raw, account_trie) in &b.nodes {
            self.store.add(*h, raw, *account_trie);
        }
        self.codes.extend(b.codes);
        self.accounts_n = b.accounts;
        self.append_block(b.root, &b.txs);
        let number = self.head().number;
        self.store.retain(b.root);
        self.kept.push_back((number, b.root));
        while self.kept.len() > self.history {
            if let Some((_, old)) = self.kept.pop_front() {
                self.store.release(old);
            }
        }
        let keep: Vec<B256> = self.kept.iter().map(|(_, r)| *r).collect();
        self.store.sweep(&keep);
        b.changes
    }
}

impl BlockProducer {
    /// Rebuild the storage tries of `touched`, the trie values of `changed` (and of
    /// `touched`), then the account trie; returns the root.
    /// New nodes (those `store` lacks) go to `out`, children before parents.
    fn rebuild(
        &mut self,
        touched: &[B256],
        changed: &[B256],
        store: &NodeStore,
        out: &mut Vec<(B256, Vec<u8>, bool)>,
    ) -> B256 {
        let mut seen = std::collections::HashSet::new();
        let mut emit = |h: B256, r: &[u8], account_trie: bool| {
            if store.node(&h).is_none() && seen.insert(h) {
                out.push((h, r.to_vec(), account_trie));
            }
        };
        for h in touched {
            let Some(a) = self.accounts.get_mut(h) else {
                continue;
            };
            let slots: Vec<(&B256, &Vec<u8>)> = a.storage.iter().collect();
            a.storage_root = if slots.is_empty() {
                EMPTY_ROOT
            } else {
                build_root(
                    &slots
                        .iter()
                        .map(|(k, v)| (k.as_slice(), v.as_slice()))
                        .collect::<Vec<_>>(),
                    &mut |h, r| emit(h, r, false),
                )
            };
        }
        for h in touched.iter().chain(changed) {
            if let Some(a) = self.accounts.get_mut(h) {
                a.leaf = a.encode_leaf();
            }
        }
        let leaves: Vec<(&[u8], &[u8])> = self
            .accounts
            .iter()
            .map(|(h, a)| (h.as_slice(), a.leaf.as_slice()))
            .collect();
        debug_assert!(leaves.iter().all(|(_, l)| !l.is_empty()));
        build_root(&leaves, &mut |h, r| emit(h, r, true))
    }

    fn pick(&mut self) -> B256 {
        self.keys[self.rng.below(self.keys.len() as u64) as usize]
    }

    fn new_key(&mut self) -> B256 {
        self.created += 1;
        keccak256(
            [
                &self.seed.to_le_bytes()[..],
                b"live",
                &self.created.to_le_bytes()[..],
            ]
            .concat(),
        )
    }

    fn slot_value(&mut self) -> Vec<u8> {
        let len = 1 + self.rng.below(32) as usize;
        let mut v = self.rng.bytes(len);
        if v[0] == 0 {
            v[0] = 0x42;
        }
        rlp::bytes_item(&v)
    }

    /// The next generated block: its changes applied to the head state (transfers, a new
    /// account, storage writes and a deletion, a contract creation every other block), its
    /// tries built against `store`.
    pub fn prepare(&mut self, store: &NodeStore) -> PreparedBlock {
        let mut new_codes = Vec::new();
        let mut ch = BlockChanges::default();
        let mut touched_storage: Vec<B256> = Vec::new();
        let mut changed: Vec<B256> = Vec::new();
        // (sender, recipient key bytes, value, data) of each pseudo transaction.
        let mut txs: Vec<PseudoTx> = Vec::new();
        // Transfers: one to three.
        for _ in 0..1 + self.rng.below(3) {
            let (from, to) = (self.pick(), self.pick());
            let value = 1 + self.rng.below(1000) as u128;
            let a = self.accounts.get_mut(&from).expect("picked account");
            if a.balance < value {
                continue;
            }
            a.balance -= value;
            a.nonce += 1;
            let nonce = a.nonce;
            self.accounts.get_mut(&to).expect("picked account").balance += value;
            changed.extend([from, to]);
            txs.push((
                nonce,
                to[12..].try_into().expect("20 bytes"),
                value,
                Vec::new(),
            ));
            ch.transfers += 1;
        }
        // A new account.
        let k = self.new_key();
        let value = 1 + self.rng.below(1 << 40) as u128;
        self.accounts.insert(
            k,
            LiveAccount {
                nonce: 0,
                balance: value,
                storage: BTreeMap::new(),
                storage_root: EMPTY_ROOT,
                code_hash: EMPTY_CODE_HASH,
                leaf: Vec::new(),
            },
        );
        self.keys.push(k);
        changed.push(k);
        txs.push((0, k[12..].try_into().expect("20 bytes"), value, Vec::new()));
        ch.new_accounts += 1;
        // Storage writes (new slots and changed ones) and a deletion.
        for _ in 0..2 {
            let acc = self.pick();
            let slot = if self.rng.chance(50) {
                self.accounts[&acc].storage.keys().next().copied()
            } else {
                None
            };
            let slot = slot.unwrap_or_else(|| {
                keccak256([&acc[..], &self.rng.next_u64().to_le_bytes()[..]].concat())
            });
            let v = self.slot_value();
            self.accounts
                .get_mut(&acc)
                .expect("picked account")
                .storage
                .insert(slot, v.clone());
            touched_storage.push(acc);
            txs.push((0, acc[12..].try_into().expect("20 bytes"), 0, v));
            ch.storage_writes += 1;
        }
        for _ in 0..8 {
            let acc = self.pick();
            let a = self.accounts.get_mut(&acc).expect("picked account");
            if let Some(slot) = a.storage.keys().last().copied() {
                a.storage.remove(&slot);
                touched_storage.push(acc);
                txs.push((0, acc[12..].try_into().expect("20 bytes"), 0, slot.to_vec()));
                ch.storage_deletions += 1;
                break;
            }
        }
        // A contract creation every other block: code and a few slots.
        if self.rng.chance(50) {
            let k = self.new_key();
            let len = 40 + self.rng.below(400) as usize;
            let code = self.rng.bytes(len);
            let code_hash = keccak256(&code);
            new_codes.push((code_hash, code.clone()));
            let mut storage = BTreeMap::new();
            for j in 0..1 + self.rng.below(3) {
                let v = self.slot_value();
                storage.insert(keccak256([&k[..], &j.to_le_bytes()[..]].concat()), v);
            }
            self.accounts.insert(
                k,
                LiveAccount {
                    nonce: 1,
                    balance: 0,
                    storage,
                    storage_root: EMPTY_ROOT,
                    code_hash,
                    leaf: Vec::new(),
                },
            );
            self.keys.push(k);
            touched_storage.push(k);
            txs.push((0, [0u8; 20], 0, code));
            ch.contracts_created += 1;
        }
        touched_storage.sort();
        touched_storage.dedup();
        let mut nodes = Vec::new();
        let root = self.rebuild(&touched_storage, &changed, store, &mut nodes);
        PreparedBlock {
            root,
            txs,
            nodes,
            codes: new_codes,
            accounts: self.accounts.len(),
            changes: ch,
        }
    }
}

impl LiveChain {
    fn append_block(&mut self, state_root: B256, txs: &[PseudoTx]) {
        let parent = self.head().clone();
        let number = parent.number + 1;
        let empty_list = rlp::wrap_list(&[]);
        let (mut tx_enc, mut tx_items, mut rc_enc, mut rc_items) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut gas = 0u64;
        for (i, (nonce, to, value, data)) in txs.iter().enumerate() {
            let mut p = Vec::new();
            rlp::encode_u64(*nonce, &mut p);
            rlp::encode_bytes(to, &mut p);
            let vb = value.to_be_bytes();
            let skip = vb.iter().take_while(|x| **x == 0).count();
            rlp::encode_bytes(&vb[skip..], &mut p);
            rlp::encode_bytes(data, &mut p);
            let payload = rlp::wrap_list(&p);
            gas += 21_000 + 16 * data.len() as u64;
            let mut r = Vec::new();
            rlp::encode_u64(1, &mut r);
            rlp::encode_u64(gas, &mut r);
            rlp::encode_bytes(&[0u8; 256], &mut r);
            r.extend_from_slice(&empty_list);
            let receipt = rlp::wrap_list(&r);
            if i % 2 == 0 {
                tx_items.extend_from_slice(&payload);
                tx_enc.push(payload);
                rc_items.extend_from_slice(&receipt);
                rc_enc.push(receipt);
            } else {
                let typed = [&[2u8][..], &payload].concat();
                rlp::encode_bytes(&typed, &mut tx_items);
                tx_enc.push(typed);
                let typed_r = [&[2u8][..], &receipt].concat();
                rlp::encode_bytes(&typed_r, &mut rc_items);
                rc_enc.push(typed_r);
            }
        }
        let raw = catchup_eth::Header {
            parent_hash: parent.hash,
            ommers_hash: catchup_eth::EMPTY_OMMERS_HASH,
            state_root,
            transactions_root: ordered_root(&tx_enc),
            receipts_root: ordered_root(&rc_enc),
            number,
            gas_limit: 30_000_000,
            gas_used: gas,
            timestamp: 1_700_000_000 + number * 12,
            base_fee_per_gas: Some(7),
            withdrawals_root: Some(ordered_root::<Vec<u8>>(&[])),
            ..Default::default()
        }
        .encode();
        let header = Header::decode(&raw).expect("generated header decodes");
        let body = Body {
            raw: rlp::wrap_list(
                &[rlp::wrap_list(&tx_items), empty_list.clone(), empty_list].concat(),
            ),
        };
        let chain = Arc::make_mut(&mut self.chain);
        chain.by_hash.insert(header.hash, number);
        chain.headers.push(header);
        chain.bodies.push(body);
        chain.receipts.push(Some(Receipts {
            raw: rlp::wrap_list(&rc_items),
        }));
    }

    /// Answer one request: blocks from the chain, state only for kept roots (an older root
    /// gets the empty answer geth gives).
    pub fn handle(&self, req: &Request) -> Response {
        match req {
            Request::Status
            | Request::BlockHeaders { .. }
            | Request::BlockBodies(_)
            | Request::Receipts(_) => ServingPeer::new(self.chain.clone(), None).handle(req),
            Request::NodeData(hashes) => {
                let mut out = Vec::new();
                let mut size = 0usize;
                for h in hashes.iter().take(MAX_NODE_DATA_SERVE) {
                    if size >= SOFT_RESPONSE_BYTES {
                        break;
                    }
                    if let Some(n) = self.store.node(h).or_else(|| {
                        self.codes
                            .get(h)
                            .map(|c| std::borrow::Cow::Borrowed(&c[..]))
                    }) {
                        size += n.len();
                        out.push(n.to_vec());
                    }
                }
                Response::NodeData(out)
            }
            Request::AccountRange {
                root,
                origin,
                limit,
                bytes,
            } => {
                if !self.is_kept(root) {
                    return Response::AccountRange {
                        accounts: Vec::new(),
                        proof: Vec::new(),
                    };
                }
                let st = TrieState {
                    root: *root,
                    store: &self.store,
                };
                let (accounts, proof) = account_range(&st, origin, limit, *bytes);
                Response::AccountRange { accounts, proof }
            }
            Request::StorageRanges {
                root,
                accounts,
                origin,
                limit,
                bytes,
            } => {
                if !self.is_kept(root) {
                    return Response::StorageRanges {
                        slots: Vec::new(),
                        proof: Vec::new(),
                    };
                }
                let st = TrieState {
                    root: *root,
                    store: &self.store,
                };
                storage_ranges(&st, accounts, origin, limit, *bytes)
            }
            Request::ByteCodes { hashes, bytes } => {
                let mut out = Vec::new();
                let cap = (*bytes as usize).min(SOFT_RESPONSE_BYTES);
                let mut size = 0usize;
                for h in hashes.iter().take(MAX_SNAP_ITEMS_SERVE) {
                    if size >= cap {
                        break;
                    }
                    if let Some(c) = self.codes.get(h) {
                        size += c.len();
                        out.push(c.clone());
                    }
                }
                Response::ByteCodes(out)
            }
            Request::TrieNodes { root, paths, bytes } => {
                let mut out = Vec::new();
                if !self.is_kept(root) {
                    return Response::TrieNodes(out);
                }
                let st = TrieState {
                    root: *root,
                    store: &self.store,
                };
                let cap = (*bytes as usize).min(SOFT_RESPONSE_BYTES);
                let mut size = 0usize;
                for p in paths.iter().take(MAX_SNAP_ITEMS_SERVE) {
                    if size >= cap {
                        break;
                    }
                    match node_at_path(&st, p) {
                        Some(n) => {
                            size += n.len();
                            out.push(n);
                        }
                        None => break,
                    }
                }
                Response::TrieNodes(out)
            }
        }
    }
}

/// A [`Responder`] over a [`LiveChain`] shared by every shard.
pub struct LiveResponder {
    pub live: Arc<RwLock<LiveChain>>,
    /// Blocks between BlockRangeUpdates (geth: 32).
    pub range_step: u64,
}

impl Responder for LiveResponder {
    fn respond(&self, req: &Wire) -> (Option<Wire>, u64) {
        let Some((rid, request)) = convert::wire_to_request(req) else {
            return (empty_response(req), 0);
        };
        let resp = match self.live.read() {
            Ok(l) => l.handle(&request),
            Err(_) => return (empty_response(req), 0),
        };
        (
            convert::response_to_wire(&resp, rid).or_else(|| empty_response(req)),
            0,
        )
    }

    fn block_range(&self) -> Option<(u64, u64, [u8; 32])> {
        let l = self.live.read().ok()?;
        let h = l.head();
        Some((l.chain.base, h.number, h.hash.0))
    }

    fn block_range_step(&self) -> u64 {
        self.range_step
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::sync::chain::generate_chain;
    use crate::eth::sync::types::TriePath;

    fn live(history: usize) -> (LiveChain, BlockProducer, StateData) {
        let st = StateData::generate(300, 50, 3);
        let chain = generate_chain(4, st.root, 3);
        let (l, p) = LiveChain::new(chain, &st, history, 3);
        (l, p, st)
    }

    fn full_range(l: &LiveChain, root: B256) -> Vec<(B256, Vec<u8>)> {
        let Response::AccountRange { accounts, proof } = l.handle(&Request::AccountRange {
            root,
            origin: B256::ZERO,
            limit: B256::repeat_byte(0xff),
            bytes: 10 << 20,
        }) else {
            panic!()
        };
        if !accounts.is_empty() {
            let keys: Vec<[u8; 32]> = accounts.iter().map(|a| a.0 .0).collect();
            let vals: Vec<Vec<u8>> = accounts.iter().map(|a| a.1.clone()).collect();
            let proof: Vec<catchup_eth::Bytes> = proof
                .iter()
                .map(|p| catchup_eth::Bytes::copy_from_slice(p))
                .collect();
            let more = catchup_eth::verify_range_proof(root, &[0u8; 32], &keys, &vals, &proof)
                .expect("range proves against its root");
            assert!(!more);
        }
        accounts
    }

    #[test]
    fn serves_the_generated_state_as_the_static_peer_does() {
        let (l, _, st) = live(8);
        assert_eq!(full_range(&l, st.root), st.accounts);
        // Trie nodes by path and storage ranges agree with the static serving code.
        let stat = ServingPeer::new(
            Arc::new(generate_chain(4, st.root, 3)),
            Some(Arc::new(st.clone())),
        );
        let acc = *st.storage.keys().next().unwrap();
        for req in [
            Request::StorageRanges {
                root: st.root,
                accounts: st.storage.keys().copied().collect(),
                origin: B256::ZERO,
                limit: B256::repeat_byte(0xff),
                bytes: 2000,
            },
            Request::TrieNodes {
                root: st.root,
                paths: vec![
                    TriePath {
                        account: None,
                        path: vec![],
                    },
                    TriePath {
                        account: None,
                        path: vec![3],
                    },
                    TriePath {
                        account: Some(acc),
                        path: vec![],
                    },
                ],
                bytes: 1 << 20,
            },
        ] {
            assert_eq!(l.handle(&req), stat.handle(&req));
        }
    }

    #[test]
    fn ranges_from_any_origin_match_the_static_peer() {
        let (l, _, st) = live(2);
        let stat = ServingPeer::new(
            Arc::new(generate_chain(4, st.root, 3)),
            Some(Arc::new(st.clone())),
        );
        let mut rng = SimRng::new(11);
        let big = *st.storage.iter().max_by_key(|(_, v)| v.len()).unwrap().0;
        for i in 0..200 {
            let origin = B256::from_slice(&rng.bytes(32));
            let limit = if i % 3 == 0 {
                B256::repeat_byte(0xff)
            } else {
                B256::from_slice(&rng.bytes(32)).max(origin)
            };
            let bytes = 1 + rng.below(6000);
            for req in [
                Request::AccountRange {
                    root: st.root,
                    origin,
                    limit,
                    bytes,
                },
                Request::StorageRanges {
                    root: st.root,
                    accounts: vec![big],
                    origin,
                    limit,
                    bytes,
                },
            ] {
                assert_eq!(l.handle(&req), stat.handle(&req), "{req:?}");
            }
        }
    }

    #[test]
    fn grows_with_verified_roots_and_forgets_old_states() {
        let (mut l, mut p, st) = live(3);
        let mut roots = vec![st.root];
        for _ in 0..12 {
            let ch = l.grow(&mut p);
            assert!(ch.new_accounts == 1 && ch.storage_writes == 2);
            roots.push(l.head().state_root);
        }
        // The header chain links, and the roots in the headers are the states' roots.
        let c = &l.chain;
        for n in 1..=c.head().number {
            assert_eq!(
                c.header(n).unwrap().parent_hash,
                c.header(n - 1).unwrap().hash
            );
            let body = catchup_eth::body_roots_encoded(&c.bodies[n as usize].raw).unwrap();
            assert_eq!(
                body.transactions_root,
                c.header(n).unwrap().transactions_root
            );
            let rr =
                catchup_eth::receipts_root_encoded(&c.receipts[n as usize].as_ref().unwrap().raw)
                    .unwrap();
            assert_eq!(rr, c.header(n).unwrap().receipts_root);
        }
        let head_root = l.head().state_root;
        // The cached trie values are the accounts' own: a build from scratch agrees.
        let scratch: Vec<(B256, Vec<u8>)> = p
            .accounts
            .iter()
            .map(|(h, a)| (*h, a.encode_leaf()))
            .collect();
        assert_eq!(build_root(&scratch, &mut |_, _| {}), head_root);
        let accounts = full_range(&l, head_root);
        assert_eq!(accounts.len(), l.accounts());
        // Only the last 3 states answer; the first one (and every other) is empty.
        assert_eq!(l.kept().count(), 3);
        assert!(full_range(&l, st.root).is_empty());
        assert!(full_range(&l, roots[roots.len() - 4]).is_empty());
        assert!(!full_range(&l, roots[roots.len() - 3]).is_empty());
        let Response::NodeData(n) = l.handle(&Request::NodeData(vec![st.root])) else {
            panic!()
        };
        assert!(n.is_empty(), "an old root's node is gone");
        // Memory: about one state plus the changes of the kept blocks, not 3 states.
        let fresh = {
            // Nodes one full head state has (account trie and storage tries).
            let mut seen = std::collections::HashSet::new();
            let mut stack = vec![head_root];
            while let Some(h) = stack.pop() {
                if let Some(n) = l.store.nodes.get(&h) {
                    if seen.insert(h) {
                        stack.extend(references(&n.raw, n.account_trie));
                    }
                }
            }
            seen.len()
        };
        assert!(
            l.nodes_held() < fresh * 2,
            "{} nodes held, {} in one state",
            l.nodes_held(),
            fresh
        );
    }
}

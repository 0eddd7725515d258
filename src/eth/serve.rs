//! The serving side: answers eth and snap requests from a chain and a state, within the
//! protocol limits, and the fault profiles the simulator applies to it.

use std::borrow::Cow;
use std::sync::Arc;

use alloy_primitives::B256;

use crate::eth::stored::{StoredChain, StoredState};
use crate::eth::sync::chain::{ChainData, SimRng, StateData};
use crate::eth::sync::trie::{self, Node, NodeRef, NodeSource};
use crate::eth::sync::types::{AccountView, HashOrNumber, Request, Response, TriePath};
use catchup_eth::rlp;

/// Soft limit of one response's size (as geth's `softResponseLimit`).
pub const SOFT_RESPONSE_BYTES: usize = 2 * 1024 * 1024;
/// Most headers served per request.
pub const MAX_HEADERS_SERVE: usize = 1024;
/// Most bodies or receipt lists served per request.
pub const MAX_BODIES_SERVE: usize = 1024;
/// Most trie nodes or codes served per GetNodeData request.
pub const MAX_NODE_DATA_SERVE: usize = 384;
/// Most codes or trie nodes served per snap request.
pub const MAX_SNAP_ITEMS_SERVE: usize = 1024;

/// A peer that serves a chain and (unless it lost it) a state.
#[derive(Debug, Clone)]
pub struct ServingPeer {
    pub chain: Arc<ChainData>,
    pub state: Option<Arc<StateData>>,
    /// Other states also served (for example the state at an older or newer block).
    pub extra_states: Vec<Arc<StateData>>,
    /// Highest block this peer announces (at most its chain's head).
    pub best: u64,
    /// A state read from a data directory's stores on demand (`eth serve --datadir`).
    pub stored: Option<Arc<StoredState>>,
    /// A chain read from a data directory's stores on demand; served instead of `chain`.
    pub stored_chain: Option<Arc<StoredChain>>,
}

impl ServingPeer {
    pub fn new(chain: Arc<ChainData>, state: Option<Arc<StateData>>) -> Self {
        let best = chain.head().number;
        ServingPeer {
            chain,
            state,
            extra_states: Vec::new(),
            best,
            stored: None,
            stored_chain: None,
        }
    }

    /// A peer serving a data directory: its chain and (when the sync completed it) its
    /// state, both read on demand.
    pub fn from_stored(chain: Arc<StoredChain>, state: Option<Arc<StoredState>>) -> Self {
        ServingPeer {
            chain: Arc::new(ChainData::default()),
            state: None,
            extra_states: Vec::new(),
            best: chain.head.number,
            stored: state,
            stored_chain: Some(chain),
        }
    }

    fn states(&self) -> impl Iterator<Item = &Arc<StateData>> {
        self.state.iter().chain(self.extra_states.iter())
    }

    fn state_at(&self, root: &B256) -> Option<&dyn StateView> {
        match self.states().find(|s| s.root == *root) {
            Some(s) => Some(s.as_ref()),
            None => self
                .stored
                .as_deref()
                .filter(|s| s.root == *root)
                .map(|s| s as &dyn StateView),
        }
    }

    /// A node or code by hash from the states held, else from the stored one.
    fn node_or_code(&self, h: &B256) -> Option<Vec<u8>> {
        if let Some(n) = self
            .states()
            .find_map(|st| st.nodes.get(h).or_else(|| st.codes.get(h)))
        {
            return Some(n.clone());
        }
        let st = self.stored.as_deref()?;
        st.node(h).map(|n| n.into_owned()).or_else(|| st.code(h))
    }

    fn code(&self, h: &B256) -> Option<Vec<u8>> {
        if let Some(c) = self.states().find_map(|st| st.codes.get(h)) {
            return Some(c.clone());
        }
        self.stored.as_deref()?.code(h)
    }

    /// The headers of blocks `numbers` while they are served, within the soft limit.
    fn headers_at(&self, numbers: Vec<u64>) -> Vec<Vec<u8>> {
        if let Some(c) = &self.stored_chain {
            return c.headers(numbers, SOFT_RESPONSE_BYTES);
        }
        let mut out = Vec::new();
        let mut size = 0usize;
        for n in numbers {
            let Some(h) = self.chain.header(n) else { break };
            if size >= SOFT_RESPONSE_BYTES {
                break;
            }
            size += h.raw.len();
            out.push(h.raw.clone());
        }
        out
    }

    fn number_of(&self, hash: &B256) -> Option<u64> {
        match &self.stored_chain {
            Some(c) => c.number_of(hash),
            None => self.chain.by_hash.get(hash).copied(),
        }
    }

    /// Answer one request.
    pub fn handle(&self, req: &Request) -> Response {
        match req {
            Request::Status => {
                let (h, genesis) = match &self.stored_chain {
                    Some(c) => (Cow::Borrowed(&c.head), c.genesis),
                    None => (
                        Cow::Borrowed(
                            self.chain
                                .header(self.best)
                                .unwrap_or_else(|| self.chain.head()),
                        ),
                        self.chain.anchor_hash(),
                    ),
                };
                Response::Status {
                    best_number: h.number,
                    best_hash: h.hash,
                    genesis,
                }
            }
            Request::BlockHeaders {
                origin,
                amount,
                skip,
                reverse,
            } => {
                let start = match origin {
                    HashOrNumber::Number(n) => Some(*n),
                    HashOrNumber::Hash(h) => self.number_of(h),
                };
                let mut numbers = Vec::new();
                if let Some(mut n) = start {
                    let amount = (*amount as usize).min(MAX_HEADERS_SERVE);
                    while numbers.len() < amount && n <= self.best {
                        numbers.push(n);
                        let step = skip.saturating_add(1);
                        n = if *reverse {
                            match n.checked_sub(step) {
                                Some(x) => x,
                                None => break,
                            }
                        } else {
                            n.saturating_add(step)
                        };
                    }
                }
                Response::BlockHeaders(self.headers_at(numbers))
            }
            Request::BlockBodies(hashes) if self.stored_chain.is_some() => {
                let c = self.stored_chain.as_ref().expect("matched");
                let hashes = &hashes[..hashes.len().min(MAX_BODIES_SERVE)];
                Response::BlockBodies(c.bodies(hashes, SOFT_RESPONSE_BYTES))
            }
            Request::Receipts(hashes) if self.stored_chain.is_some() => {
                let c = self.stored_chain.as_ref().expect("matched");
                let hashes = &hashes[..hashes.len().min(MAX_BODIES_SERVE)];
                Response::Receipts(c.receipts(hashes, SOFT_RESPONSE_BYTES))
            }
            Request::BlockBodies(hashes) => {
                let mut out = Vec::new();
                let mut size = 0usize;
                for h in hashes.iter().take(MAX_BODIES_SERVE) {
                    if size >= SOFT_RESPONSE_BYTES {
                        break;
                    }
                    let Some(i) = self.chain.index_of(h) else {
                        break;
                    };
                    size += self.chain.bodies[i].raw.len();
                    out.push(self.chain.bodies[i].clone());
                }
                Response::BlockBodies(out)
            }
            Request::Receipts(hashes) => {
                let mut out = Vec::new();
                let mut size = 0usize;
                for h in hashes.iter().take(MAX_BODIES_SERVE) {
                    if size >= SOFT_RESPONSE_BYTES {
                        break;
                    }
                    let Some(Some(r)) = self.chain.index_of(h).map(|i| &self.chain.receipts[i])
                    else {
                        break;
                    };
                    size += r.raw.len();
                    out.push(r.clone());
                }
                Response::Receipts(out)
            }
            Request::NodeData(hashes) => {
                let mut out = Vec::new();
                let mut size = 0usize;
                for h in hashes.iter().take(MAX_NODE_DATA_SERVE) {
                    if size >= SOFT_RESPONSE_BYTES {
                        break;
                    }
                    if let Some(n) = self.node_or_code(h) {
                        size += n.len();
                        out.push(n);
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
                let (accounts, proof) = match self.state_at(root) {
                    Some(st) => account_range(st, origin, limit, *bytes),
                    None => (Vec::new(), Vec::new()),
                };
                Response::AccountRange { accounts, proof }
            }
            Request::StorageRanges {
                root,
                accounts,
                origin,
                limit,
                bytes,
            } => match self.state_at(root) {
                Some(st) => storage_ranges(st, accounts, origin, limit, *bytes),
                None => Response::StorageRanges {
                    slots: Vec::new(),
                    proof: Vec::new(),
                },
            },
            Request::ByteCodes { hashes, bytes } => {
                let mut out = Vec::new();
                let cap = (*bytes as usize).min(SOFT_RESPONSE_BYTES);
                let mut size = 0usize;
                for h in hashes.iter().take(MAX_SNAP_ITEMS_SERVE) {
                    if size >= cap {
                        break;
                    }
                    if let Some(c) = self.code(h) {
                        size += c.len();
                        out.push(c);
                    }
                }
                Response::ByteCodes(out)
            }
            Request::TrieNodes { root, paths, bytes } => {
                let mut out = Vec::new();
                let Some(st) = self.state_at(root) else {
                    return Response::TrieNodes(out);
                };
                let cap = (*bytes as usize).min(SOFT_RESPONSE_BYTES);
                let mut size = 0usize;
                for p in paths.iter().take(MAX_SNAP_ITEMS_SERVE) {
                    if size >= cap {
                        break;
                    }
                    match node_at_path(st, p) {
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

/// Accounts (hash, slim RLP) of a range and the proof nodes of its edges.
type RangeWithProof = (Vec<(B256, Vec<u8>)>, Vec<Vec<u8>>);

/// What serving snap ranges, trie nodes by path and proofs needs of one state.
pub trait StateView {
    /// The state (account trie) root.
    fn state_root(&self) -> B256;
    /// A trie node of the state (account or storage trie) by hash.
    fn node(&self, hash: &B256) -> Option<Cow<'_, [u8]>>;
    /// Leaves of the account trie (`account` `None`) or of `account`'s storage trie (whose
    /// root is `trie_root`), from key `origin` on in key order, while `f` returns true.
    fn leaves_from(
        &self,
        trie_root: B256,
        account: Option<&B256>,
        origin: &B256,
        f: &mut dyn FnMut(&B256, &[u8]) -> bool,
    );
}

/// Append to `out` the hash-referenced nodes of `st` on the path from `root` towards
/// `key`, root first (a Merkle proof of presence or absence). Stops where the path leaves
/// the trie or a node is unknown or does not decode.
pub fn prove<V: StateView + ?Sized>(st: &V, root: B256, key: &[u8], out: &mut Vec<Vec<u8>>) {
    catchup_eth::trie::prove(&ViewNodes(st), root, key, out)
}

/// A [`StateView`]'s nodes as a [`NodeSource`].
pub struct ViewNodes<'a, V: ?Sized>(pub &'a V);

impl<V: StateView + ?Sized> NodeSource for ViewNodes<'_, V> {
    fn node(&self, hash: &B256) -> Option<Cow<'_, [u8]>> {
        self.0.node(hash)
    }
}

/// Visit the leaves of the trie `trie_root` in `src` whose keys are at least `origin`, in
/// order, until `f` asks to stop: [`StateView::leaves_from`] for a trie read node by node.
pub fn leaves_from_source<S: NodeSource + ?Sized>(
    src: &S,
    trie_root: B256,
    origin: &B256,
    f: &mut dyn FnMut(&B256, &[u8]) -> bool,
) {
    let Some(raw) = src.node(&trie_root) else {
        return;
    };
    let origin: Vec<u8> = origin.iter().flat_map(|b| [b >> 4, b & 0x0f]).collect();
    walk_leaves(src, &raw, &mut Vec::with_capacity(64), &origin, f);
}

/// Visit the leaves of `st` under the node `raw` (at nibble path `prefix`) whose keys are
/// at least `origin` (64 nibbles), in order, reading hash-referenced children from `st`;
/// false when `f` asked to stop. Recursion is bounded by the 64 nibbles of a key.
pub fn walk_leaves<S: NodeSource + ?Sized>(
    st: &S,
    raw: &[u8],
    prefix: &mut Vec<u8>,
    origin: &[u8],
    f: &mut dyn FnMut(&B256, &[u8]) -> bool,
) -> bool {
    // A subtree whose path sorts before the origin's holds only smaller keys.
    let below = |p: &[u8]| p < &origin[..p.len().min(origin.len())];
    let Ok(node) = Node::decode(raw) else {
        return true;
    };
    let mut visit = |c: &NodeRef, prefix: &mut Vec<u8>| -> bool {
        if below(prefix) || prefix.len() > 64 {
            return true;
        }
        match c {
            NodeRef::Embedded(b) => walk_leaves(st, b, prefix, origin, f),
            NodeRef::Hash(h) => match st.node(h) {
                Some(r) => walk_leaves(st, &r, prefix, origin, f),
                None => true,
            },
        }
    };
    match node {
        Node::Leaf { path, value } => {
            let n = prefix.len();
            prefix.extend_from_slice(path.as_slice());
            let go = if prefix.len() == 64 && prefix.as_slice() >= origin {
                let key: Vec<u8> = prefix.chunks(2).map(|c| (c[0] << 4) | c[1]).collect();
                f(&B256::from_slice(&key), &value)
            } else {
                true
            };
            prefix.truncate(n);
            go
        }
        Node::Extension { path, child } => {
            let n = prefix.len();
            prefix.extend_from_slice(path.as_slice());
            let go = visit(&child, prefix);
            prefix.truncate(n);
            go
        }
        Node::Branch { children, .. } => {
            for (i, c) in children.iter().enumerate() {
                let Some(c) = c else { continue };
                prefix.push(i as u8);
                let go = visit(c, prefix);
                prefix.pop();
                if !go {
                    return false;
                }
            }
            true
        }
    }
}

impl StateView for StateData {
    fn state_root(&self) -> B256 {
        self.root
    }
    fn node(&self, hash: &B256) -> Option<Cow<'_, [u8]>> {
        self.nodes.get(hash).map(|v| Cow::Borrowed(v.as_slice()))
    }
    fn leaves_from(
        &self,
        _trie_root: B256,
        account: Option<&B256>,
        origin: &B256,
        f: &mut dyn FnMut(&B256, &[u8]) -> bool,
    ) {
        let all: &[(B256, Vec<u8>)] = match account {
            None => &self.accounts,
            Some(a) => self.storage.get(a).map(|v| v.as_slice()).unwrap_or(&[]),
        };
        let start = all.partition_point(|(h, _)| h < origin);
        for (h, v) in &all[start..] {
            if !f(h, v) {
                break;
            }
        }
    }
}

/// An account range of `st` with the proof of its edges (as geth's snap handler).
pub fn account_range<V: StateView + ?Sized>(
    st: &V,
    origin: &B256,
    limit: &B256,
    bytes: u64,
) -> RangeWithProof {
    let cap = (bytes as usize).clamp(1, SOFT_RESPONSE_BYTES);
    let root = st.state_root();
    let mut out = Vec::new();
    let mut size = 0usize;
    st.leaves_from(root, None, origin, &mut |h, a| {
        if size >= cap {
            return false;
        }
        size += a.len() + 32;
        out.push((*h, a.to_vec()));
        // The first account past the limit is included: it proves there is nothing
        // between the last one inside the limit and the limit.
        h <= limit
    });
    let mut proof = Vec::new();
    prove(st, root, origin.as_slice(), &mut proof);
    if let Some((last, _)) = out.last() {
        prove(st, root, last.as_slice(), &mut proof);
    }
    dedup(&mut proof);
    (out, proof)
}

fn dedup(proof: &mut Vec<Vec<u8>>) {
    let mut seen = std::collections::HashSet::new();
    proof.retain(|p| seen.insert(p.clone()));
}

/// The storage root of `account` in `st`, if the account exists.
pub fn storage_root_of<V: StateView + ?Sized>(st: &V, account: &B256) -> Option<B256> {
    let mut found = None;
    st.leaves_from(st.state_root(), None, account, &mut |h, a| {
        if h == account {
            found = AccountView::decode(a).ok().map(|a| a.storage_root);
        }
        false
    });
    found
}

/// Storage ranges of `accounts` in `st`, the last one cut and proved (as geth's handler).
pub fn storage_ranges<V: StateView + ?Sized>(
    st: &V,
    accounts: &[B256],
    origin: &B256,
    limit: &B256,
    bytes: u64,
) -> Response {
    let cap = (bytes as usize).clamp(1, SOFT_RESPONSE_BYTES);
    let mut slots_out = Vec::new();
    let mut proof = Vec::new();
    let mut size = 0usize;
    let n = accounts.len().min(MAX_SNAP_ITEMS_SERVE);
    for (i, acc) in accounts[..n].iter().enumerate() {
        if size >= cap {
            break;
        }
        let Some(sroot) = storage_root_of(st, acc) else {
            break;
        };
        let from = if i == 0 { *origin } else { B256::ZERO };
        let to = if i + 1 == n {
            *limit
        } else {
            B256::repeat_byte(0xff)
        };
        let mut mine = Vec::new();
        let mut truncated = false;
        st.leaves_from(sroot, Some(acc), &from, &mut |h, v| {
            if size >= cap {
                truncated = true;
                return false;
            }
            size += v.len() + 32;
            mine.push((*h, v.to_vec()));
            if *h > to {
                truncated = true;
                return false;
            }
            true
        });
        if truncated || from != B256::ZERO {
            prove(st, sroot, from.as_slice(), &mut proof);
            if let Some((last, _)) = mine.last() {
                prove(st, sroot, last.as_slice(), &mut proof);
            }
            dedup(&mut proof);
            slots_out.push(mine);
            break;
        }
        slots_out.push(mine);
    }
    Response::StorageRanges {
        slots: slots_out,
        proof,
    }
}

/// The hash-referenced node at a trie path, if there is one.
pub fn node_at_path<V: StateView + ?Sized>(st: &V, p: &TriePath) -> Option<Vec<u8>> {
    let root = match p.account {
        None => st.state_root(),
        Some(a) => storage_root_of(st, &a)?,
    };
    let mut raw = st.node(&root)?.into_owned();
    let mut hashed = true;
    let mut depth = 0usize;
    let path = &p.path;
    if path.len() > 64 {
        return None;
    }
    while depth < path.len() {
        let next = match trie::decode_node(&raw).ok()? {
            Node::Leaf { .. } => return None,
            Node::Branch { children, .. } => {
                let c = children[path[depth] as usize & 0x0f].clone();
                depth += 1;
                c
            }
            Node::Extension { path: ext, child } => {
                if depth + ext.len() > path.len() || path[depth..depth + ext.len()] != ext.0[..] {
                    return None;
                }
                depth += ext.len();
                Some(child)
            }
        };
        match next {
            None => return None,
            Some(NodeRef::Embedded(r)) => {
                raw = r.to_vec();
                hashed = false;
            }
            Some(NodeRef::Hash(h)) => {
                raw = st.node(&h)?.into_owned();
                hashed = true;
            }
        }
    }
    hashed.then_some(raw)
}

/// How a simulated peer misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    Honest,
    /// Ten times the base latency.
    Slow,
    /// Drops a fifth of its responses.
    Lossy,
    /// Corrupts responses: wrong nodes, bad proofs, non-joining headers, wrong bodies.
    Lying,
    /// Leaves after a number of requests.
    Disconnecting,
    /// Lost the pivot state: answers state requests empty.
    Stale,
    /// Answers with random bytes in the right response shape.
    Garbage,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Honest => "honest",
            Fault::Slow => "slow",
            Fault::Lossy => "lossy",
            Fault::Lying => "lying",
            Fault::Disconnecting => "disconnecting",
            Fault::Stale => "stale",
            Fault::Garbage => "garbage",
        }
    }
}

/// Replace headers by a forged, internally consistent segment that starts from the same
/// parent but hashes differently (so it does not join the real chain).
fn forge_headers(raws: &[Vec<u8>], rng: &mut SimRng) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(raws.len());
    let tag = rng.bytes(8);
    let mut prev_hash: Option<B256> = None;
    for raw in raws {
        let Ok(it) = rlp::parse_exact(raw) else {
            return raws.to_vec();
        };
        let Ok(f) = it.items(32) else {
            return raws.to_vec();
        };
        let mut p = Vec::with_capacity(raw.len() + 16);
        for (i, x) in f.iter().enumerate() {
            match (i, prev_hash) {
                (0, Some(ph)) => rlp::encode_bytes(ph.as_slice(), &mut p),
                (12, _) => rlp::encode_bytes(&tag, &mut p),
                _ => p.extend_from_slice(x.raw),
            }
        }
        let forged = rlp::wrap_list(&p);
        prev_hash = Some(alloy_primitives::keccak256(&forged));
        out.push(forged);
    }
    out
}

/// Replace a response's payload by random bytes of similar sizes (same response kind).
pub fn garbage(resp: Response, rng: &mut SimRng) -> Response {
    let mut junk = |n: usize| -> Vec<u8> {
        let len = rng.below(n as u64 + 8) as usize;
        rng.bytes(len)
    };
    match resp {
        Response::Status { .. } => resp,
        Response::BlockHeaders(h) => {
            Response::BlockHeaders(h.iter().map(|x| junk(x.len())).collect())
        }
        Response::BlockBodies(b) => Response::BlockBodies(
            b.iter()
                .map(|x| crate::eth::sync::types::Body {
                    raw: junk(x.raw.len()),
                })
                .collect(),
        ),
        Response::Receipts(r) => Response::Receipts(
            r.iter()
                .map(|x| crate::eth::sync::types::Receipts {
                    raw: junk(x.raw.len()),
                })
                .collect(),
        ),
        Response::NodeData(n) => Response::NodeData(n.iter().map(|x| junk(x.len())).collect()),
        Response::ByteCodes(n) => Response::ByteCodes(n.iter().map(|x| junk(x.len())).collect()),
        Response::TrieNodes(n) => Response::TrieNodes(n.iter().map(|x| junk(x.len())).collect()),
        Response::AccountRange { accounts, proof } => Response::AccountRange {
            accounts: accounts.iter().map(|(h, a)| (*h, junk(a.len()))).collect(),
            proof: proof.iter().map(|p| junk(p.len())).collect(),
        },
        Response::StorageRanges { slots, proof } => Response::StorageRanges {
            slots: slots
                .iter()
                .map(|s| s.iter().map(|(h, v)| (*h, junk(v.len()))).collect())
                .collect(),
            proof: proof.iter().map(|p| junk(p.len())).collect(),
        },
    }
}

/// Apply a lying peer's corruption to an honest response (some of the time).
pub fn corrupt(resp: Response, rng: &mut SimRng) -> Response {
    if !rng.chance(60) {
        return resp;
    }
    match resp {
        Response::Status {
            best_number,
            best_hash,
            genesis,
        } => Response::Status {
            best_number: best_number + 1000 + rng.below(1000),
            best_hash,
            genesis,
        },
        Response::BlockHeaders(h) if !h.is_empty() => {
            Response::BlockHeaders(forge_headers(&h, rng))
        }
        Response::BlockBodies(mut b) if b.len() > 1 => {
            b.swap(0, 1);
            Response::BlockBodies(b)
        }
        Response::Receipts(mut r) if !r.is_empty() => {
            r[0].raw = rlp::wrap_list(&[]);
            if r.len() > 1 {
                r.swap(0, 1);
            }
            Response::Receipts(r)
        }
        Response::NodeData(mut n) if !n.is_empty() => {
            let i = rng.below(n.len() as u64) as usize;
            let j = rng.below(n[i].len() as u64) as usize;
            n[i][j] ^= 0x01;
            Response::NodeData(n)
        }
        Response::AccountRange {
            mut accounts,
            proof,
        } if accounts.len() > 2 => {
            accounts.remove(accounts.len() / 2);
            Response::AccountRange { accounts, proof }
        }
        Response::AccountRange {
            mut accounts,
            proof,
        } if !accounts.is_empty() => {
            accounts[0].1 = AccountView {
                nonce: 99,
                balance: vec![1],
                storage_root: catchup_eth::EMPTY_ROOT,
                code_hash: catchup_eth::EMPTY_CODE_HASH,
            }
            .encode();
            Response::AccountRange { accounts, proof }
        }
        Response::StorageRanges { mut slots, proof } if slots.iter().any(|s| !s.is_empty()) => {
            let i = slots.iter().position(|s| !s.is_empty()).unwrap_or(0);
            slots[i][0].1 = rlp::bytes_item(b"forged");
            Response::StorageRanges { slots, proof }
        }
        Response::ByteCodes(mut c) if !c.is_empty() => {
            c[0].push(0);
            Response::ByteCodes(c)
        }
        Response::TrieNodes(mut n) if !n.is_empty() => {
            let last = n[0].len() - 1;
            n[0][last] ^= 0x01;
            Response::TrieNodes(n)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::sync::chain::{generate_chain, StateData};
    use crate::eth::sync::types::Header;

    #[test]
    fn serves_within_limits_and_proves_ranges() {
        let st = Arc::new(StateData::generate(400, 300, 5));
        let chain = Arc::new(generate_chain(50, st.root, 5));
        let p = ServingPeer::new(chain.clone(), Some(st.clone()));
        let Response::BlockHeaders(h) = p.handle(&Request::BlockHeaders {
            origin: HashOrNumber::Number(10),
            amount: 5000,
            skip: 0,
            reverse: false,
        }) else {
            panic!()
        };
        assert_eq!(h.len(), 41);
        let Response::AccountRange { accounts, proof } = p.handle(&Request::AccountRange {
            root: st.root,
            origin: B256::ZERO,
            limit: B256::repeat_byte(0xff),
            bytes: 4000,
        }) else {
            panic!()
        };
        assert!(!accounts.is_empty() && accounts.len() < 400);
        let keys: Vec<[u8; 32]> = accounts.iter().map(|a| a.0 .0).collect();
        let vals: Vec<Vec<u8>> = accounts.iter().map(|a| a.1.clone()).collect();
        let proof: Vec<catchup_eth::Bytes> = proof
            .iter()
            .map(|p| catchup_eth::Bytes::copy_from_slice(p))
            .collect();
        let more =
            catchup_eth::verify_range_proof(st.root, &[0u8; 32], &keys, &vals, &proof).unwrap();
        assert!(more);
        // A forged header segment is internally linked but does not join.
        let mut rng = SimRng::new(1);
        let forged = forge_headers(&h, &mut rng);
        let f: Vec<Header> = forged.iter().map(|r| Header::decode(r).unwrap()).collect();
        assert_eq!(f[1].parent_hash, f[0].hash);
        assert_ne!(f.last().unwrap().hash, chain.header(50).unwrap().hash);
        // Trie nodes by path: the root.
        let root = node_at_path(
            st.as_ref(),
            &TriePath {
                account: None,
                path: vec![],
            },
        )
        .unwrap();
        assert_eq!(alloy_primitives::keccak256(&root), st.root);
    }
}

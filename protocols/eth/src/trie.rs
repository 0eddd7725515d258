//! Merkle-Patricia trie nodes, child references, roots, a node-producing builder and
//! Merkle proofs.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use alloy_primitives::{keccak256, Bytes, B256};

use crate::rlp::{encode_bytes, list_header, parse_exact, Item, RlpError};
use crate::types::EMPTY_ROOT;

/// Longest path (in nibbles) accepted when decoding a node.
pub const MAX_PATH_NIBBLES: usize = 256;

/// A path in the trie, one nibble (0..=15) per byte.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nibbles(pub Vec<u8>);

impl Nibbles {
    pub fn new() -> Self {
        Nibbles(Vec::new())
    }
    /// Two nibbles per byte, high nibble first.
    pub fn unpack(bytes: &[u8]) -> Self {
        let mut v = Vec::with_capacity(bytes.len() * 2);
        for b in bytes {
            v.push(b >> 4);
            v.push(b & 0x0f);
        }
        Nibbles(v)
    }
    /// Pack into bytes; `None` when the length is odd.
    pub fn pack(&self) -> Option<Vec<u8>> {
        if self.0.len() % 2 != 0 {
            return None;
        }
        Some(self.0.chunks(2).map(|c| (c[0] << 4) | c[1]).collect())
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
    pub fn push(&mut self, n: u8) {
        debug_assert!(n < 16);
        self.0.push(n);
    }
    pub fn join(&self, other: &[u8]) -> Nibbles {
        let mut v = self.0.clone();
        v.extend_from_slice(other);
        Nibbles(v)
    }
}

/// Nibble `i` (high nibble first) of a byte key, without unpacking the key.
#[inline]
pub fn nibble(key: &[u8], i: usize) -> u8 {
    let b = key[i / 2];
    if i % 2 == 0 {
        b >> 4
    } else {
        b & 0x0f
    }
}

/// Hex-prefix encoding of a path (`leaf` sets the terminator flag).
pub fn hex_prefix_encode(path: &[u8], leaf: bool) -> Vec<u8> {
    let flag = if leaf { 2u8 } else { 0 };
    let mut out = Vec::with_capacity(path.len() / 2 + 1);
    if path.len() % 2 == 1 {
        out.push(((flag | 1) << 4) | path[0]);
        for c in path[1..].chunks(2) {
            out.push((c[0] << 4) | c[1]);
        }
    } else {
        out.push(flag << 4);
        for c in path.chunks(2) {
            out.push((c[0] << 4) | c[1]);
        }
    }
    out
}

/// Check a hex-prefix path without decoding it: (its length in nibbles, is_leaf).
pub fn hex_prefix_check(buf: &[u8], offset: usize) -> Result<(usize, bool), RlpError> {
    let first = *buf.first().ok_or(RlpError::Invalid {
        offset,
        what: "empty hex-prefix path",
    })?;
    let flag = first >> 4;
    if flag > 3 {
        return Err(RlpError::Invalid {
            offset,
            what: "hex-prefix flag above 3",
        });
    }
    let odd = flag & 1 != 0;
    if !odd && first & 0x0f != 0 {
        return Err(RlpError::Invalid {
            offset,
            what: "hex-prefix padding nibble is not zero",
        });
    }
    let len = (buf.len() - 1) * 2 + usize::from(odd);
    if len > MAX_PATH_NIBBLES {
        return Err(RlpError::TooLong {
            offset,
            len,
            limit: MAX_PATH_NIBBLES,
        });
    }
    Ok((len, flag & 2 != 0))
}

/// Decode a hex-prefix path: (nibbles, is_leaf).
pub fn hex_prefix_decode(buf: &[u8], offset: usize) -> Result<(Nibbles, bool), RlpError> {
    let (len, leaf) = hex_prefix_check(buf, offset)?;
    let mut v = Vec::with_capacity(len);
    if len % 2 == 1 {
        v.push(buf[0] & 0x0f);
    }
    for b in &buf[1..] {
        v.push(b >> 4);
        v.push(b & 0x0f);
    }
    Ok((Nibbles(v), leaf))
}

/// A reference from a node to a child: by hash, or the child's own RLP when it is
/// shorter than 32 bytes (embedded).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeRef {
    Hash(B256),
    Embedded(Bytes),
}

impl NodeRef {
    fn from_item(item: &Item<'_>) -> Result<Option<NodeRef>, RlpError> {
        if item.is_list {
            if item.raw.len() >= 32 {
                return Err(RlpError::Invalid {
                    offset: item.offset,
                    what: "embedded child node of 32 bytes or more",
                });
            }
            return Ok(Some(NodeRef::Embedded(Bytes::copy_from_slice(item.raw))));
        }
        match item.payload.len() {
            0 => Ok(None),
            32 => Ok(Some(NodeRef::Hash(B256::from_slice(item.payload)))),
            _ => Err(RlpError::Invalid {
                offset: item.offset,
                what: "child reference is neither empty, a 32-byte hash nor a list",
            }),
        }
    }

    /// The reference for a node with encoding `rlp`.
    pub fn for_node(rlp: &[u8]) -> NodeRef {
        if rlp.len() < 32 {
            NodeRef::Embedded(Bytes::copy_from_slice(rlp))
        } else {
            NodeRef::Hash(keccak256(rlp))
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            NodeRef::Hash(h) => encode_bytes(h.as_slice(), out),
            NodeRef::Embedded(b) => out.extend_from_slice(b),
        }
    }

    fn len(&self) -> usize {
        match self {
            NodeRef::Hash(_) => 33,
            NodeRef::Embedded(b) => b.len(),
        }
    }
}

/// A decoded trie node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// 16 children and an optional value (a value only occurs in tries whose keys are
    /// prefixes of each other; never in the state or storage tries).
    Branch {
        children: Box<[Option<NodeRef>; 16]>,
        value: Option<Bytes>,
    },
    Extension {
        path: Nibbles,
        child: NodeRef,
    },
    Leaf {
        path: Nibbles,
        value: Bytes,
    },
}

impl Node {
    /// Decode one canonical node spanning all of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Node, RlpError> {
        Self::from_item(&parse_exact(buf)?)
    }

    pub fn from_item(item: &Item<'_>) -> Result<Node, RlpError> {
        let mut r = item.list()?;
        let count = r.remaining_count()?;
        match count {
            17 => {
                let mut children: Box<[Option<NodeRef>; 16]> = Box::default();
                for c in children.iter_mut() {
                    *c = NodeRef::from_item(&r.next()?)?;
                }
                let v = r.next()?;
                let vb = v.bytes()?;
                let value = if vb.is_empty() {
                    None
                } else {
                    Some(Bytes::copy_from_slice(vb))
                };
                Ok(Node::Branch { children, value })
            }
            2 => {
                let p = r.next()?;
                let (path, leaf) = hex_prefix_decode(p.bytes()?, p.offset)?;
                let second = r.next()?;
                if leaf {
                    Ok(Node::Leaf {
                        path,
                        value: Bytes::copy_from_slice(second.bytes()?),
                    })
                } else {
                    if path.is_empty() {
                        return Err(RlpError::Invalid {
                            offset: p.offset,
                            what: "extension node with an empty path",
                        });
                    }
                    let child = NodeRef::from_item(&second)?.ok_or(RlpError::Invalid {
                        offset: second.offset,
                        what: "extension node without a child",
                    })?;
                    Ok(Node::Extension { path, child })
                }
            }
            _ => Err(RlpError::WrongItemCount {
                offset: item.offset,
                count,
                expected: "2 or 17",
            }),
        }
    }

    /// Canonical encoding (allocated once, at its final size).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Node::Branch { children, value } => {
                let mut payload = 0;
                for c in children.iter() {
                    payload += c.as_ref().map_or(1, |c| c.len());
                }
                let v: &[u8] = value.as_ref().map_or(&[], |b| b.as_ref());
                payload += alloy_rlp::Encodable::length(&v);
                let mut out = Vec::with_capacity(payload + 9);
                list_header(payload, &mut out);
                for c in children.iter() {
                    match c {
                        Some(c) => c.encode(&mut out),
                        None => out.push(0x80),
                    }
                }
                encode_bytes(v, &mut out);
                out
            }
            Node::Extension { path, child } => {
                let hp = hex_prefix_encode(&path.0, false);
                let payload = alloy_rlp::Encodable::length(&hp.as_slice()) + child.len();
                let mut out = Vec::with_capacity(payload + 9);
                list_header(payload, &mut out);
                encode_bytes(&hp, &mut out);
                child.encode(&mut out);
                out
            }
            Node::Leaf { path, value } => {
                let hp = hex_prefix_encode(&path.0, true);
                let payload = alloy_rlp::Encodable::length(&hp.as_slice())
                    + alloy_rlp::Encodable::length(&value.as_ref());
                let mut out = Vec::with_capacity(payload + 9);
                list_header(payload, &mut out);
                encode_bytes(&hp, &mut out);
                encode_bytes(value, &mut out);
                out
            }
        }
    }
}

/// A child of a node, with the full path (from the root) where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRef {
    pub child: NodeRef,
    pub path: Nibbles,
}

impl ChildRef {
    /// The hash to request, when the child is not embedded.
    pub fn hash(&self) -> Option<B256> {
        match self.child {
            NodeRef::Hash(h) => Some(h),
            NodeRef::Embedded(_) => None,
        }
    }
}

/// The direct children of the node `node_rlp` sitting at `path`.
pub fn child_refs(node_rlp: &[u8], path: &Nibbles) -> Result<Vec<ChildRef>, RlpError> {
    let mut out = Vec::new();
    match Node::decode(node_rlp)? {
        Node::Branch { children, .. } => {
            for (i, c) in children.iter().enumerate() {
                if let Some(c) = c {
                    out.push(ChildRef {
                        child: c.clone(),
                        path: path.join(&[i as u8]),
                    });
                }
            }
        }
        Node::Extension { path: p, child } => out.push(ChildRef {
            child,
            path: path.join(&p.0),
        }),
        Node::Leaf { .. } => {}
    }
    Ok(out)
}

/// What a walk of one node (and its embedded descendants) finds: the hashed children to
/// fetch and the leaves (full path → value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeContents {
    pub hashed_children: Vec<(B256, Nibbles)>,
    pub leaves: Vec<(Nibbles, Bytes)>,
}

/// Walk the node `node_rlp` at `path` and its embedded descendants: every hashed child
/// (with its path) and every value (with its full path). In the state trie a leaf's full
/// path is the 64-nibble keccak of the address and its value an [`crate::Account`].
pub fn node_contents(node_rlp: &[u8], path: &Nibbles) -> Result<NodeContents, RlpError> {
    let mut out = NodeContents::default();
    walk_node(node_rlp, path, &mut out, 0)?;
    Ok(out)
}

fn walk_node(
    node_rlp: &[u8],
    path: &Nibbles,
    out: &mut NodeContents,
    depth: usize,
) -> Result<(), RlpError> {
    if depth > 64 {
        return Err(RlpError::TooDeep {
            offset: 0,
            limit: 64,
        });
    }
    let visit = |c: &NodeRef, p: Nibbles, out: &mut NodeContents| -> Result<(), RlpError> {
        match c {
            NodeRef::Hash(h) => out.hashed_children.push((*h, p)),
            NodeRef::Embedded(b) => walk_node(b, &p, out, depth + 1)?,
        }
        Ok(())
    };
    match Node::decode(node_rlp)? {
        Node::Branch { children, value } => {
            if let Some(v) = value {
                out.leaves.push((path.clone(), v));
            }
            for (i, c) in children.iter().enumerate() {
                if let Some(c) = c {
                    visit(c, path.join(&[i as u8]), out)?;
                }
            }
        }
        Node::Extension { path: p, child } => visit(&child, path.join(&p.0), out)?,
        Node::Leaf { path: p, value } => out.leaves.push((path.join(&p.0), value)),
    }
    Ok(())
}

/// Leaf values (full path → value) of a node and its embedded descendants.
pub fn leaf_values(node_rlp: &[u8], path: &Nibbles) -> Result<Vec<(Nibbles, Bytes)>, RlpError> {
    Ok(node_contents(node_rlp, path)?.leaves)
}

/// The accounts stored in a state-trie node (and its embedded descendants): hashed address
/// (the full 64-nibble path) and the decoded account. A leaf whose path is not 64 nibbles
/// or whose value is not an account is an error.
pub fn account_leaves(
    node_rlp: &[u8],
    path: &Nibbles,
) -> Result<Vec<(B256, crate::types::Account)>, RlpError> {
    let mut out = Vec::new();
    for (p, v) in leaf_values(node_rlp, path)? {
        let key = p
            .pack()
            .filter(|k| k.len() == 32)
            .ok_or(RlpError::Invalid {
                offset: 0,
                what: "state-trie leaf path is not 64 nibbles",
            })?;
        out.push((B256::from_slice(&key), crate::types::Account::decode(&v)?));
    }
    Ok(out)
}

/// Verify a node against the hash it was requested by; returns its decoded form.
pub fn verify_node(expected: B256, node_rlp: &[u8]) -> Result<Node, NodeError> {
    let got = keccak256(node_rlp);
    if got != expected {
        return Err(NodeError::HashMismatch { expected, got });
    }
    Node::decode(node_rlp).map_err(|source| NodeError::Decode {
        hash: expected,
        source,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("trie node hash mismatch: requested {expected}, got {got}")]
    HashMismatch { expected: B256, got: B256 },
    #[error("trie node {hash}: {source}")]
    Decode { hash: B256, source: RlpError },
}

/// Root of the trie mapping `rlp(index)` to each item (transactions, receipts,
/// withdrawals), from the items' encodings.
pub fn ordered_root<T: AsRef<[u8]>>(encoded_items: &[T]) -> B256 {
    alloy_trie::root::ordered_trie_root_with_encoder(encoded_items, |item, buf| {
        buf.extend_from_slice(item.as_ref())
    })
}

/// Root of a trie from key/value pairs (keys used as given; sorted and de-duplicated
/// here, the last value of a duplicated key wins, empty values are deletions).
pub fn trie_root<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: impl IntoIterator<Item = (K, V)>) -> B256 {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        if v.as_ref().is_empty() {
            map.remove(k.as_ref());
        } else {
            map.insert(k.as_ref().to_vec(), v.as_ref().to_vec());
        }
    }
    // The hash builder needs prefix-free keys; tries whose keys are prefixes of each
    // other (values in branch nodes) are built node by node instead.
    let keys: Vec<&Vec<u8>> = map.keys().collect();
    if keys.windows(2).any(|w| w[1].starts_with(w[0])) {
        return TrieBuilder::new(map).root();
    }
    let mut hb = alloy_trie::HashBuilder::default();
    for (k, v) in &map {
        hb.add_leaf(alloy_trie::Nibbles::unpack(k), v);
    }
    hb.root()
}

/// Root of a secure trie (keys hashed with keccak first).
pub fn secure_trie_root<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> B256 {
    let hashed: Vec<(B256, V)> = pairs
        .into_iter()
        .map(|(k, v)| (keccak256(k.as_ref()), v))
        .collect();
    trie_root(hashed)
}

/// A fully materialised trie: every node (hash → RLP) plus proofs. Built from a complete
/// key/value set; meant for serving GetNodeData / snap requests and for tests.
#[derive(Debug, Clone)]
pub struct TrieBuilder {
    root: B256,
    nodes: BTreeMap<B256, Bytes>,
    leaves: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl TrieBuilder {
    /// Build from pairs (keys used as given). Empty values are skipped; for a duplicated
    /// key the last value wins.
    pub fn new<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> TrieBuilder {
        let mut leaves = BTreeMap::new();
        for (k, v) in pairs {
            if v.as_ref().is_empty() {
                leaves.remove(k.as_ref());
            } else {
                leaves.insert(k.as_ref().to_vec(), v.as_ref().to_vec());
            }
        }
        let mut nodes = BTreeMap::new();
        if leaves.is_empty() {
            return TrieBuilder {
                root: EMPTY_ROOT,
                nodes,
                leaves,
            };
        }
        let items: Vec<(&[u8], &[u8])> = leaves
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        let root_rlp = build_node(&items, 0, &mut |h, r| {
            nodes.insert(h, Bytes::copy_from_slice(r));
        });
        let root = keccak256(&root_rlp);
        nodes.insert(root, Bytes::copy_from_slice(&root_rlp));
        TrieBuilder {
            root,
            nodes,
            leaves,
        }
    }

    /// Build a secure trie (keys hashed with keccak).
    pub fn new_secure<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> TrieBuilder {
        Self::new(pairs.into_iter().map(|(k, v)| (keccak256(k.as_ref()), v)))
    }

    pub fn root(&self) -> B256 {
        self.root
    }

    /// Every node stored by hash (embedded nodes are part of their parent). The empty
    /// trie has no nodes.
    pub fn nodes(&self) -> &BTreeMap<B256, Bytes> {
        &self.nodes
    }

    pub fn into_nodes(self) -> BTreeMap<B256, Bytes> {
        self.nodes
    }

    /// The (key, value) pairs, sorted by key.
    pub fn leaves(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.leaves
    }

    /// Merkle proof for `key` (present or absent): the hashed nodes on the path from the
    /// root, root first (the root is included even when shorter than 32 bytes).
    pub fn prove(&self, key: &[u8]) -> Vec<Bytes> {
        if self.leaves.is_empty() {
            return Vec::new();
        }
        let mut proof = Vec::new();
        prove(&self.nodes, self.root, key, &mut proof);
        proof.into_iter().map(Bytes::from).collect()
    }

    /// A snap/1-style range: the elements with key >= `origin`, in order, stopping after
    /// the first key >= `limit` or after `max_items`; with the proof of `origin` and of the
    /// last returned key (only the proof of `origin` when nothing is returned). A range
    /// that starts at the first key and covers the whole trie carries no proof.
    pub fn range_with_proof(&self, origin: &[u8], limit: &[u8], max_items: usize) -> RangeResponse {
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for (k, v) in self.leaves.range(origin.to_vec()..) {
            if keys.len() >= max_items.max(1) {
                break;
            }
            keys.push(Bytes::copy_from_slice(k));
            values.push(Bytes::copy_from_slice(v));
            if k.as_slice() >= limit {
                break;
            }
        }
        let whole = keys.len() == self.leaves.len() && origin.iter().all(|b| *b == 0);
        let proof = match keys.last() {
            _ if whole => Vec::new(),
            None => self.prove(origin),
            Some(last) => self.prove_range(origin, last),
        };
        RangeResponse {
            keys,
            values,
            proof,
        }
    }

    /// The union of the proofs of `first` and `last` (each node once), as snap serves it.
    pub fn prove_range(&self, first: &[u8], last: &[u8]) -> Vec<Bytes> {
        let mut out = self.prove(first);
        for n in self.prove(last) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }
}

/// Elements of a range and the edge proofs (see [`TrieBuilder::range_with_proof`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResponse {
    pub keys: Vec<Bytes>,
    pub values: Vec<Bytes>,
    pub proof: Vec<Bytes>,
}

/// Build a trie over sorted, unique byte keys (a key may be a prefix of a later one; its
/// value then sits in a branch). Every node referenced by hash (≥ 32 bytes), and the root
/// whatever its size, is passed to `emit(hash, rlp)`. Returns the root hash.
///
/// Nodes go to the caller as they are made rather than into a map, so a caller can stream
/// a large trie into its own store, and [`build_node`] builds one subtree alone (the snap
/// sync rebuilds the state trie one leading nibble per shard). [`TrieBuilder`] is built on
/// these.
pub fn build_root<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    entries: &[(K, V)],
    emit: &mut dyn FnMut(B256, &[u8]),
) -> B256 {
    if entries.is_empty() {
        return EMPTY_ROOT;
    }
    let rlp = build_node(entries, 0, emit);
    let h = keccak256(&rlp);
    emit(h, &rlp);
    h
}

/// Build the subtree of sorted, unique `entries` (all sharing their first `depth` nibbles)
/// and return the RLP of its top node. Hash-referenced nodes below it are emitted; the top
/// one is not (its parent, or [`build_root`], decides how it is referenced).
pub fn build_node<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    entries: &[(K, V)],
    depth: usize,
    emit: &mut dyn FnMut(B256, &[u8]),
) -> Vec<u8> {
    build_node_known(entries, depth, emit, &mut |_, _| None)
}

/// The reference to a child node: embedded when shorter than 32 bytes, else by hash (and
/// the node is emitted).
fn emit_ref(rlp: Vec<u8>, emit: &mut dyn FnMut(B256, &[u8])) -> NodeRef {
    if rlp.len() < 32 {
        NodeRef::Embedded(Bytes::from(rlp))
    } else {
        let h = keccak256(&rlp);
        emit(h, &rlp);
        NodeRef::Hash(h)
    }
}

/// What [`build_node_known`] asks about each subtree: its top node's depth and entries.
pub type KnownSubtree<'a, K, V> = dyn FnMut(usize, &[(K, V)]) -> Option<NodeRef> + 'a;

/// [`build_node`], except that each subtree below the top is first offered to
/// `known(depth, entries)` (the subtree of `entries`, whose top node sits at `depth`):
/// where it returns a reference, that subtree was built before (its nodes are stored
/// already) and is neither built nor emitted again. `known` must only return the
/// reference of a subtree built from exactly these entries.
pub fn build_node_known<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    entries: &[(K, V)],
    depth: usize,
    emit: &mut dyn FnMut(B256, &[u8]),
    known: &mut KnownSubtree<'_, K, V>,
) -> Vec<u8> {
    build_node_in(entries, depth, emit, known, BATCH_ENTRIES)
}

/// Subtrees of at most this many entries are encoded whole first and hashed after, a
/// height at a time ([`build_batched`]); their nodes are held until then (a few MB).
const BATCH_ENTRIES: usize = 16_384;

/// [`build_node_known`], subtrees of at most `batch` entries built by [`build_batched`].
fn build_node_in<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    entries: &[(K, V)],
    depth: usize,
    emit: &mut dyn FnMut(B256, &[u8]),
    known: &mut KnownSubtree<'_, K, V>,
    batch: usize,
) -> Vec<u8> {
    debug_assert!(!entries.is_empty());
    // A leaf (one entry) is always within a batch of at least one.
    if entries.len() <= batch.max(1) {
        return build_batched(entries, depth, emit, known);
    }
    let first = entries[0].0.as_ref();
    let last = entries[entries.len() - 1].0.as_ref();
    let max = first.len().min(last.len()) * 2;
    let mut cp = depth;
    while cp < max && nibble(first, cp) == nibble(last, cp) {
        cp += 1;
    }
    let mut child_ref =
        |sub: &[(K, V)], d: usize, emit: &mut dyn FnMut(B256, &[u8])| match known(d, sub) {
            Some(r) => r,
            None => emit_ref(build_node_in(sub, d, emit, known, batch), emit),
        };
    if cp > depth {
        let child = child_ref(entries, cp, emit);
        let path: Vec<u8> = (depth..cp).map(|i| nibble(first, i)).collect();
        return Node::Extension {
            path: Nibbles(path),
            child,
        }
        .encode();
    }
    let mut children: Box<[Option<NodeRef>; 16]> = Box::default();
    let mut value = None;
    let mut start = 0;
    if first.len() * 2 == depth {
        // The first key ends here: its value sits in this branch.
        value = Some(Bytes::copy_from_slice(entries[0].1.as_ref()));
        start = 1;
    }
    while start < entries.len() {
        let n = nibble(entries[start].0.as_ref(), depth);
        let end = run_end(start, entries.len(), |i| {
            nibble(entries[i].0.as_ref(), depth)
        });
        children[n as usize] = Some(child_ref(&entries[start..end], depth + 1, emit));
        start = end;
    }
    Node::Branch { children, value }.encode()
}

/// The end of the run of sorted keys from `start` (of `len`) whose nibble `nibble_at(i)`
/// is the one at `start`: the keys under one child of a branch.
pub(crate) fn run_end(start: usize, len: usize, nibble_at: impl Fn(usize) -> u8) -> usize {
    let n = nibble_at(start);
    let mut end = start + 1;
    while end < len && nibble_at(end) == n {
        end += 1;
    }
    end
}

/// A node built before its hash is taken ([`build_batched`], and the range verifier's
/// subtrees inside the range): its RLP with the places of its children's hashes left
/// zero (`holes`, a range of the subtree's list of them: the offset of the 32 bytes and
/// the child's index among the pending nodes), and its height above the lowest node
/// referenced by hash under it.
pub(crate) struct Pending {
    pub(crate) rlp: Vec<u8>,
    pub(crate) holes: std::ops::Range<u32>,
    pub(crate) height: u32,
}

/// Hash the `pending` nodes of a subtree a height at a time, four at a time where the
/// CPU can ([`crate::keccak4`]), filling each node's holes from its children's hashes
/// first, then `top`'s. Returns the hashes (by index) and the indices of each height,
/// lowest first: children come before their parents in that order.
pub(crate) fn hash_by_height(
    pending: &mut [Pending],
    holes: &[(u32, u32)],
    top: &mut Pending,
) -> (Vec<B256>, Vec<Vec<usize>>) {
    let mut levels: Vec<Vec<usize>> = Vec::new();
    for (i, p) in pending.iter().enumerate() {
        let h = p.height as usize;
        if levels.len() <= h {
            levels.resize_with(h + 1, Vec::new);
        }
        levels[h].push(i);
    }
    let mut hashes = vec![B256::ZERO; pending.len()];
    let mut got = Vec::new();
    let fill = |p: &mut Pending, hashes: &[B256]| {
        for &(at, child) in &holes[p.holes.start as usize..p.holes.end as usize] {
            let at = at as usize;
            p.rlp[at..at + 32].copy_from_slice(hashes[child as usize].as_slice());
        }
    };
    for level in &levels {
        for &i in level {
            fill(&mut pending[i], &hashes);
        }
        let rlps: Vec<&[u8]> = level.iter().map(|&i| pending[i].rlp.as_slice()).collect();
        crate::keccak4::keccak256_each(&rlps, &mut got);
        for (&i, h) in level.iter().zip(&got) {
            hashes[i] = *h;
        }
    }
    fill(top, &hashes);
    (hashes, levels)
}

/// A child as its parent references it: a reference known already (embedded, or a hash
/// taken before), or the hash of a pending node (its index and height).
pub(crate) enum PendingChild {
    Ready(NodeRef),
    Hashed(usize, u32),
}

impl PendingChild {
    /// How a parent references `node`: embedded when shorter than a hash (it then holds
    /// no hash itself), else by its hash, `node` put in `pending`.
    pub(crate) fn of(node: Pending, pending: &mut Vec<Pending>) -> Self {
        if node.rlp.len() < 32 {
            PendingChild::Ready(NodeRef::Embedded(Bytes::from(node.rlp)))
        } else {
            let height = node.height;
            pending.push(node);
            PendingChild::Hashed(pending.len() - 1, height)
        }
    }

    fn len(&self) -> usize {
        match self {
            PendingChild::Ready(r) => r.len(),
            PendingChild::Hashed(..) => 33,
        }
    }

    /// Write the reference into `out`: a pending hash as 32 zero bytes and a hole, and
    /// the parent's height raised above the child's.
    fn put(&self, out: &mut Vec<u8>, holes: &mut Vec<(u32, u32)>, height: &mut u32) {
        match self {
            PendingChild::Ready(r) => r.encode(out),
            PendingChild::Hashed(i, h) => {
                out.push(0xa0);
                holes.push((out.len() as u32, *i as u32));
                out.extend_from_slice(&[0u8; 32]);
                *height = (*height).max(h + 1);
            }
        }
    }
}

/// An extension node over `child`, its path in hex-prefix form `hp`. Its holes follow
/// every hole of the nodes below it in `holes`.
pub(crate) fn pending_extension(
    hp: &[u8],
    child: &PendingChild,
    holes: &mut Vec<(u32, u32)>,
) -> Pending {
    let payload = alloy_rlp::Encodable::length(&hp) + child.len();
    let mut rlp = Vec::with_capacity(payload + 9);
    list_header(payload, &mut rlp);
    encode_bytes(hp, &mut rlp);
    let mut height = 0;
    let from = holes.len() as u32;
    child.put(&mut rlp, holes, &mut height);
    Pending {
        rlp,
        holes: from..holes.len() as u32,
        height,
    }
}

/// A branch node over `children`, with `value` (empty for none). Its holes follow every
/// hole of the nodes below it in `holes`.
pub(crate) fn pending_branch(
    children: &[Option<PendingChild>; 16],
    value: &[u8],
    holes: &mut Vec<(u32, u32)>,
) -> Pending {
    let payload = children
        .iter()
        .map(|c| c.as_ref().map_or(1, PendingChild::len))
        .sum::<usize>()
        + alloy_rlp::Encodable::length(&value);
    let mut rlp = Vec::with_capacity(payload + 9);
    list_header(payload, &mut rlp);
    let mut height = 0;
    let from = holes.len() as u32;
    for c in children {
        match c {
            Some(c) => c.put(&mut rlp, holes, &mut height),
            None => rlp.push(0x80),
        }
    }
    encode_bytes(value, &mut rlp);
    Pending {
        rlp,
        holes: from..holes.len() as u32,
        height,
    }
}

/// [`build_node_known`] of a subtree whose nodes may all be held at once: a node's RLP
/// depends on its children's hashes only through their 32 bytes, so the subtree is
/// encoded first and hashed after, a height at a time. The nodes of one height do not
/// depend on each other and are hashed together, four at a time where the CPU can
/// ([`crate::keccak4`]); then they are emitted, children before their parents.
fn build_batched<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    entries: &[(K, V)],
    depth: usize,
    emit: &mut dyn FnMut(B256, &[u8]),
    known: &mut KnownSubtree<'_, K, V>,
) -> Vec<u8> {
    let mut pending = Vec::with_capacity(entries.len() + entries.len() / 2);
    let mut holes = Vec::with_capacity(entries.len() + entries.len() / 2);
    let mut top = pending_node(entries, depth, known, &mut pending, &mut holes);
    let (hashes, levels) = hash_by_height(&mut pending, &holes, &mut top);
    for &i in levels.iter().flatten() {
        emit(hashes[i], &pending[i].rlp);
    }
    top.rlp
}

/// The node of `entries` at `depth` for [`build_batched`], the nodes below it that are
/// referenced by hash put in `pending`.
fn pending_node<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    entries: &[(K, V)],
    depth: usize,
    known: &mut KnownSubtree<'_, K, V>,
    pending: &mut Vec<Pending>,
    holes: &mut Vec<(u32, u32)>,
) -> Pending {
    let first = entries[0].0.as_ref();
    if entries.len() == 1 {
        let path: Vec<u8> = (depth..first.len() * 2).map(|i| nibble(first, i)).collect();
        let rlp = Node::Leaf {
            path: Nibbles(path),
            value: Bytes::copy_from_slice(entries[0].1.as_ref()),
        }
        .encode();
        return Pending {
            rlp,
            holes: 0..0,
            height: 0,
        };
    }
    let mut child =
        |sub: &[(K, V)], d: usize, pending: &mut Vec<Pending>, holes: &mut Vec<(u32, u32)>| {
            match known(d, sub) {
                Some(r) => PendingChild::Ready(r),
                None => PendingChild::of(pending_node(sub, d, known, pending, holes), pending),
            }
        };
    let last = entries[entries.len() - 1].0.as_ref();
    let max = first.len().min(last.len()) * 2;
    let mut cp = depth;
    while cp < max && nibble(first, cp) == nibble(last, cp) {
        cp += 1;
    }
    if cp > depth {
        let c = child(entries, cp, pending, holes);
        let path: Vec<u8> = (depth..cp).map(|i| nibble(first, i)).collect();
        return pending_extension(&hex_prefix_encode(&path, false), &c, holes);
    }
    let mut children: [Option<PendingChild>; 16] = Default::default();
    let mut value: &[u8] = &[];
    let mut start = 0;
    if first.len() * 2 == depth {
        // The first key ends here: its value sits in this branch.
        value = entries[0].1.as_ref();
        start = 1;
    }
    while start < entries.len() {
        let n = nibble(entries[start].0.as_ref(), depth);
        let end = run_end(start, entries.len(), |i| {
            nibble(entries[i].0.as_ref(), depth)
        });
        children[n as usize] = Some(child(&entries[start..end], depth + 1, pending, holes));
        start = end;
    }
    pending_branch(&children, value, holes)
}

/// A source of trie nodes by hash (to make proofs from).
pub trait NodeSource {
    /// The node's RLP: borrowed from memory, or owned when read from disk.
    fn node(&self, hash: &B256) -> Option<Cow<'_, [u8]>>;
}

impl NodeSource for HashMap<B256, Vec<u8>> {
    fn node(&self, hash: &B256) -> Option<Cow<'_, [u8]>> {
        self.get(hash).map(|v| Cow::Borrowed(v.as_slice()))
    }
}

impl NodeSource for BTreeMap<B256, Bytes> {
    fn node(&self, hash: &B256) -> Option<Cow<'_, [u8]>> {
        self.get(hash).map(|v| Cow::Borrowed(v.as_ref()))
    }
}

/// Append to `out` the hash-referenced nodes on the path from `root` towards `key`, root
/// first (a Merkle proof of presence or absence, as [`crate::verify_proof`] and
/// [`crate::verify_range_proof`] take it). Stops where the path leaves the trie or a node
/// is unknown or does not decode; nothing is added when the root is unknown.
pub fn prove(src: &dyn NodeSource, root: B256, key: &[u8], out: &mut Vec<Vec<u8>>) {
    let Some(mut raw) = src.node(&root).map(Cow::into_owned) else {
        return;
    };
    out.push(raw.clone());
    let mut depth = 0usize;
    let total = key.len() * 2;
    // Each step consumes at least one nibble of the key.
    for _ in 0..=total {
        let Ok(node) = Node::decode(&raw) else { return };
        let next = match node {
            Node::Leaf { .. } => return,
            Node::Branch { children, .. } => {
                if depth >= total {
                    return;
                }
                let c = children[nibble(key, depth) as usize].clone();
                depth += 1;
                c
            }
            Node::Extension { path, child } => {
                if depth + path.len() > total
                    || (0..path.len()).any(|i| path.0[i] != nibble(key, depth + i))
                {
                    return;
                }
                depth += path.len();
                Some(child)
            }
        };
        raw = match next {
            None => return,
            Some(NodeRef::Embedded(r)) => r.to_vec(),
            Some(NodeRef::Hash(h)) => match src.node(&h) {
                Some(r) => {
                    let r = r.into_owned();
                    out.push(r.clone());
                    r
                }
                None => return,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_prefix_round_trip() {
        for leaf in [false, true] {
            for len in 0..6u8 {
                let p: Vec<u8> = (0..len).map(|i| (i * 7) % 16).collect();
                let enc = hex_prefix_encode(&p, leaf);
                let (dec, l) = hex_prefix_decode(&enc, 0).unwrap();
                assert_eq!(dec.0, p);
                assert_eq!(l, leaf);
            }
        }
    }

    #[test]
    fn empty_constants_are_the_hashes_of_empty_things() {
        assert_eq!(keccak256([0x80]), EMPTY_ROOT);
        assert_eq!(keccak256([]), crate::types::EMPTY_CODE_HASH);
        assert_eq!(
            TrieBuilder::new(Vec::<(Vec<u8>, Vec<u8>)>::new()).root(),
            EMPTY_ROOT
        );
    }

    #[test]
    fn nibble_matches_unpack() {
        let key = [0x12u8, 0xab, 0x0f, 0xf0];
        let unpacked = Nibbles::unpack(&key);
        for i in 0..key.len() * 2 {
            assert_eq!(nibble(&key, i), unpacked.0[i], "nibble {i}");
        }
        assert_eq!(unpacked.0, vec![1, 2, 0xa, 0xb, 0, 0xf, 0xf, 0]);
    }

    #[test]
    fn node_round_trips_and_refs() {
        let leaf = Node::Leaf {
            path: Nibbles(vec![1, 2, 3]),
            value: Bytes::from_static(b"v"),
        };
        let enc = leaf.encode();
        assert!(enc.len() < 32);
        assert_eq!(Node::decode(&enc).unwrap(), leaf);
        assert_eq!(
            NodeRef::for_node(&enc),
            NodeRef::Embedded(Bytes::from(enc.clone()))
        );
        let mut children: Box<[Option<NodeRef>; 16]> = Box::default();
        children[3] = Some(NodeRef::for_node(&enc));
        children[9] = Some(NodeRef::Hash(keccak256(b"x")));
        let branch = Node::Branch {
            children,
            value: None,
        };
        let enc = branch.encode();
        assert_eq!(Node::decode(&enc).unwrap(), branch);
        assert_eq!(NodeRef::for_node(&enc), NodeRef::Hash(keccak256(&enc)));
    }

    type Made = (Vec<([u8; 32], Vec<u8>)>, HashMap<B256, Vec<u8>>, B256);

    fn made(n: usize, seed: u8) -> Made {
        let mut e: Vec<([u8; 32], Vec<u8>)> = (0..n)
            .map(|i| {
                let v = vec![(i as u8).wrapping_add(1); 1 + i % 40];
                (keccak256([seed, (i >> 8) as u8, i as u8]).0, v)
            })
            .collect();
        e.sort();
        let mut nodes = HashMap::new();
        let root = build_root(&e, &mut |h, r| {
            nodes.insert(h, r.to_vec());
        });
        (e, nodes, root)
    }

    #[test]
    fn build_root_matches_trie_root_and_emits_every_hashed_node() {
        assert_eq!(build_root::<&[u8], &[u8]>(&[], &mut |_, _| {}), EMPTY_ROOT);
        for n in [1usize, 2, 17, 300] {
            let (e, nodes, root) = made(n, n as u8);
            assert_eq!(root, trie_root(e.iter().map(|(k, v)| (k, v))), "{n} leaves");
            assert!(nodes.contains_key(&root));
            let tb = TrieBuilder::new(e.iter().map(|(k, v)| (k, v)));
            let tb_nodes: HashMap<B256, Vec<u8>> =
                tb.nodes().iter().map(|(h, r)| (*h, r.to_vec())).collect();
            assert_eq!(tb_nodes, nodes, "{n} leaves");
            for (h, raw) in &nodes {
                assert_eq!(keccak256(raw), *h);
                assert_eq!(&Node::decode(raw).unwrap().encode(), raw);
            }
        }
    }

    /// Subtrees built whole before hashing (any size of batch, the largest subtrees
    /// built as before) give the same nodes, emitted children first, and the same root.
    #[test]
    fn batched_subtrees_build_the_same_trie() {
        for n in [1usize, 2, 17, 300, 2000] {
            let (e, nodes, root) = made(n, 5);
            for batch in [1usize, 2, 8, 64, usize::MAX] {
                let mut got = HashMap::new();
                let top = build_node_in(
                    &e,
                    0,
                    &mut |h, r| {
                        assert_eq!(keccak256(r), h);
                        // Children first: every hash a node references was emitted.
                        if let Ok(Node::Branch { children, .. }) = Node::decode(r) {
                            for c in children.iter().flatten() {
                                if let NodeRef::Hash(c) = c {
                                    assert!(got.contains_key(c), "{n} leaves, batch {batch}");
                                }
                            }
                        }
                        got.insert(h, r.to_vec());
                    },
                    &mut |_, _| None,
                    batch,
                );
                let h = keccak256(&top);
                got.insert(h, top);
                assert_eq!(h, root, "{n} leaves, batch {batch}");
                assert_eq!(got, nodes, "{n} leaves, batch {batch}");
            }
        }
    }

    #[test]
    fn subtrees_build_alone_and_compose_to_the_root() {
        let (e, _, root) = made(400, 9);
        let mut children: Box<[Option<NodeRef>; 16]> = Box::default();
        let mut emitted = 0;
        for n in 0..16u8 {
            let part: Vec<_> = e.iter().filter(|(k, _)| k[0] >> 4 == n).cloned().collect();
            if part.is_empty() {
                continue;
            }
            let top = build_node(&part, 1, &mut |h, r| {
                assert_eq!(keccak256(r), h);
                emitted += 1;
            });
            children[n as usize] = Some(NodeRef::for_node(&top));
        }
        assert!(emitted > 0);
        let top = Node::Branch {
            children,
            value: None,
        };
        assert_eq!(keccak256(top.encode()), root);
    }

    #[test]
    fn keys_that_are_prefixes_put_values_in_branches() {
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b"do", b"verb"),
            (b"dog", b"puppy"),
            (b"doge", b"coin"),
            (b"horse", b"stallion"),
        ];
        // The well-known root of this trie (Ethereum trie tests, "dogs").
        let want = B256::from(alloy_primitives::hex!(
            "5991bb8c6514148a29db676a14ac506cd2cd5775ace63c30a4fe457715e9ac84"
        ));
        assert_eq!(build_root(&pairs, &mut |_, _| {}), want);
        assert_eq!(trie_root(pairs.clone()), want);
        assert_eq!(TrieBuilder::new(pairs).root(), want);
    }

    #[test]
    fn proofs_verify_for_present_and_absent_keys() {
        let (e, nodes, root) = made(200, 3);
        for (k, v) in e.iter().step_by(37) {
            let mut p = Vec::new();
            prove(&nodes, root, k, &mut p);
            let p: Vec<Bytes> = p.into_iter().map(Bytes::from).collect();
            let got = crate::verify_proof(root, k, &p).unwrap();
            assert_eq!(got.as_deref().map(|b| b.as_ref()), Some(v.as_slice()));
        }
        let absent = [0x55u8; 32];
        let mut p = Vec::new();
        prove(&nodes, root, &absent, &mut p);
        let p: Vec<Bytes> = p.into_iter().map(Bytes::from).collect();
        assert_eq!(crate::verify_proof(root, &absent, &p).unwrap(), None);
        // Unknown root: nothing.
        let mut p = Vec::new();
        prove(&nodes, keccak256(b"unknown"), &absent, &mut p);
        assert!(p.is_empty());
        // A range proof made of two edge proofs passes the range check.
        let (a, b) = (20, 60);
        let mut p = Vec::new();
        prove(&nodes, root, &e[a].0, &mut p);
        prove(&nodes, root, &e[b - 1].0, &mut p);
        let p: Vec<Bytes> = p.into_iter().map(Bytes::from).collect();
        let keys: Vec<[u8; 32]> = e[a..b].iter().map(|x| x.0).collect();
        let vals: Vec<Vec<u8>> = e[a..b].iter().map(|x| x.1.clone()).collect();
        assert!(crate::verify_range_proof(root, &e[a].0, &keys, &vals, &p).unwrap());
    }

    #[test]
    fn builder_matches_hash_builder() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0u32..300)
            .map(|i| {
                (
                    keccak256(i.to_be_bytes()).to_vec(),
                    vec![1u8; (i % 40 + 1) as usize],
                )
            })
            .collect();
        let t = TrieBuilder::new(pairs.clone());
        assert_eq!(t.root(), trie_root(pairs));
        for (h, n) in t.nodes() {
            assert_eq!(keccak256(n), *h);
            Node::decode(n).unwrap();
        }
    }
}

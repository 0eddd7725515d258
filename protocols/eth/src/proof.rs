//! Merkle proof and snap/1 range-proof verification.
//!
//! [`verify_range_proof`] follows the semantics of go-ethereum's `VerifyRangeProof`:
//! the proof nodes of the two edge keys are resolved into a partial trie, everything
//! between the edges is dropped and rebuilt from the given keys, and the rebuilt root
//! must equal the expected root. A missing, extra or altered element changes the root.

use std::collections::HashMap;

use alloy_primitives::{keccak256, Bytes, B256};

use crate::rlp::RlpError;
use crate::trie::{
    pending_branch, pending_extension, Nibbles, Node, NodeRef, Pending, PendingChild,
};
use crate::types::EMPTY_ROOT;

/// Most proof nodes accepted in one proof.
pub const MAX_PROOF_NODES: usize = 4096;
/// Longest key accepted (snap keys are 32-byte hashes).
pub const MAX_KEY_BYTES: usize = 256;
/// Most keys accepted in one range.
pub const MAX_RANGE_KEYS: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    #[error("range proof: {keys} keys but {values} values")]
    LengthMismatch { keys: usize, values: usize },
    #[error("range proof: key {index} is not above the previous key")]
    KeysNotIncreasing { index: usize },
    #[error("range proof: value {index} is empty (deletions are not allowed)")]
    EmptyValue { index: usize },
    #[error("range proof: key {index} has {len} bytes, the range uses {expected}")]
    KeyLength {
        index: usize,
        len: usize,
        expected: usize,
    },
    #[error("range proof: the first key lies above the first returned key")]
    FirstKeyAboveRange,
    #[error("range proof: too many items ({count}, limit {limit})")]
    TooMany { count: usize, limit: usize },
    #[error("proof node {hash} is missing")]
    MissingNode { hash: B256 },
    #[error("proof node {hash} does not decode: {source}")]
    BadNode { hash: B256, source: RlpError },
    #[error("proof does not contain the key it proves")]
    KeyNotInTrie,
    #[error("proof is for a different value of the key")]
    ValueMismatch,
    #[error("range proof: an element at the first key is missing from an empty range")]
    MissingElement,
    #[error("range proof: the range is empty but the trie has more elements")]
    MoreElements,
    #[error("range proof: the edges cut through an unresolved part of the trie")]
    UnresolvedEdge,
    #[error("range proof: rebuilt root {got} does not match {expected}")]
    RootMismatch { expected: B256, got: B256 },
}

/// Partial trie used to rebuild a range.
#[derive(Debug, Clone)]
enum M {
    Empty,
    /// A subtree known only by its hash.
    Hash(B256),
    Leaf(Vec<u8>, Bytes),
    Ext(Vec<u8>, Box<M>),
    Branch(Box<[M; 16]>, Option<Bytes>),
    /// A subtree built whole from range keys (see [`fill`]), as its parent references it.
    Built(NodeRef),
}

fn empty_children() -> Box<[M; 16]> {
    Box::new(std::array::from_fn(|_| M::Empty))
}

fn from_ref(r: &Option<NodeRef>, depth: usize) -> Result<M, ProofError> {
    match r {
        None => Ok(M::Empty),
        Some(NodeRef::Hash(h)) => Ok(M::Hash(*h)),
        Some(NodeRef::Embedded(b)) => {
            if depth > 64 {
                return Err(ProofError::BadNode {
                    hash: keccak256(b),
                    source: RlpError::TooDeep {
                        offset: 0,
                        limit: 64,
                    },
                });
            }
            let n = Node::decode(b).map_err(|source| ProofError::BadNode {
                hash: keccak256(b),
                source,
            })?;
            from_node(n, depth + 1)
        }
    }
}

fn from_node(n: Node, depth: usize) -> Result<M, ProofError> {
    Ok(match n {
        Node::Leaf { path, value } => M::Leaf(path.0, value),
        Node::Extension { path, child } => M::Ext(path.0, Box::new(from_ref(&Some(child), depth)?)),
        Node::Branch { children, value } => {
            let mut c = empty_children();
            for (i, r) in children.iter().enumerate() {
                c[i] = from_ref(r, depth)?;
            }
            M::Branch(c, value)
        }
    })
}

struct ProofDb<'a> {
    nodes: HashMap<B256, &'a [u8]>,
}

impl<'a> ProofDb<'a> {
    fn new(proof: &'a [Bytes]) -> Result<Self, ProofError> {
        if proof.len() > MAX_PROOF_NODES {
            return Err(ProofError::TooMany {
                count: proof.len(),
                limit: MAX_PROOF_NODES,
            });
        }
        Ok(ProofDb {
            nodes: proof.iter().map(|n| (keccak256(n), n.as_ref())).collect(),
        })
    }
    fn resolve(&self, hash: B256) -> Result<M, ProofError> {
        let raw = self
            .nodes
            .get(&hash)
            .ok_or(ProofError::MissingNode { hash })?;
        let n = Node::decode(raw).map_err(|source| ProofError::BadNode { hash, source })?;
        from_node(n, 0)
    }
}

/// Resolve the path of `key` inside `node` (replacing hash nodes by their proof nodes).
/// Returns the value at `key` if the path reaches it.
fn resolve_path(node: &mut M, key: &[u8], db: &ProofDb<'_>) -> Result<Option<Bytes>, ProofError> {
    let mut node = node;
    let mut key = key;
    // Each step consumes a node; a path has at most key.len() + 1 nodes plus resolutions.
    for _ in 0..2 * (key.len() + 2) {
        if let M::Hash(h) = node {
            *node = db.resolve(*h)?;
            continue;
        }
        match node {
            M::Empty | M::Built(_) => return Ok(None),
            M::Leaf(p, v) => {
                return Ok(if p[..] == key[..] {
                    Some(v.clone())
                } else {
                    None
                })
            }
            M::Ext(p, child) => {
                if key.len() >= p.len() && key[..p.len()] == p[..] {
                    key = &key[p.len()..];
                    node = child;
                } else {
                    return Ok(None);
                }
            }
            M::Branch(children, value) => {
                let Some((&n, rest)) = key.split_first() else {
                    return Ok(value.clone());
                };
                key = rest;
                node = &mut children[n as usize];
            }
            M::Hash(_) => unreachable!("resolved above"),
        }
    }
    Err(ProofError::KeyNotInTrie)
}

/// The first and the last nibble path of the longest keys.
static FIRST_PATH: [u8; 2 * MAX_KEY_BYTES] = [0; 2 * MAX_KEY_BYTES];
static LAST_PATH: [u8; 2 * MAX_KEY_BYTES] = [15; 2 * MAX_KEY_BYTES];

/// Relation of the whole subtree under `prefix` to the closed range [left, right]
/// (all paths of equal length `n`).
#[derive(PartialEq, Eq, Debug)]
enum Span {
    Inside,
    Outside,
    Straddles,
}

fn span_of(prefix: &[u8], left: &[u8], right: &[u8]) -> Span {
    let l = left.len().min(prefix.len());
    let lo_cmp = prefix.cmp(&left[..l]);
    let hi_cmp = prefix.cmp(&right[..l]);
    // Smallest path under prefix: prefix ‖ 0…; largest: prefix ‖ f….
    let lo_above_left = match lo_cmp {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        // Nibbles: all zero when their OR is (a branch-free loop the compiler vectorises).
        std::cmp::Ordering::Equal => left[l..].iter().fold(0, |a, &x| a | x) == 0,
    };
    let hi_below_right = match hi_cmp {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        // Nibbles (at most 15): all 15 when their AND is.
        std::cmp::Ordering::Equal => right[l..].iter().fold(15, |a, &x| a & x) == 15,
    };
    if lo_above_left && hi_below_right {
        return Span::Inside;
    }
    let entirely_below = lo_cmp == std::cmp::Ordering::Less;
    let entirely_above = hi_cmp == std::cmp::Ordering::Greater;
    if entirely_below || entirely_above {
        return Span::Outside;
    }
    Span::Straddles
}

/// Drop every element of `node` (at `prefix`) that lies inside [left, right].
fn prune(node: &mut M, prefix: &mut Vec<u8>, left: &[u8], right: &[u8]) -> Result<(), ProofError> {
    match span_of(prefix, left, right) {
        Span::Inside => {
            *node = M::Empty;
            return Ok(());
        }
        Span::Outside => return Ok(()),
        Span::Straddles => {}
    }
    match node {
        M::Empty => {}
        M::Hash(_) | M::Built(_) => return Err(ProofError::UnresolvedEdge),
        M::Leaf(p, _) => {
            let mut full = prefix.clone();
            full.extend_from_slice(p);
            if full[..] >= left[..] && full[..] <= right[..] {
                *node = M::Empty;
            }
        }
        M::Ext(p, child) => {
            let n = prefix.len();
            prefix.extend_from_slice(p);
            let r = prune(child, prefix, left, right);
            prefix.truncate(n);
            r?;
            if matches!(**child, M::Empty) {
                *node = M::Empty;
            }
        }
        M::Branch(children, value) => {
            if value.is_some() && prefix[..] >= left[..] && prefix[..] <= right[..] {
                *value = None;
            }
            for (i, c) in children.iter_mut().enumerate() {
                prefix.push(i as u8);
                let r = prune(c, prefix, left, right);
                prefix.pop();
                r?;
            }
            if value.is_none() && children.iter().all(|c| matches!(c, M::Empty)) {
                *node = M::Empty;
            }
        }
    }
    Ok(())
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Standard trie insertion; reaching an unresolved hash node is an error.
fn insert(node: &mut M, key: &[u8], value: Bytes) -> Result<(), ProofError> {
    match node {
        M::Empty => {
            *node = M::Leaf(key.to_vec(), value);
            Ok(())
        }
        M::Hash(_) | M::Built(_) => Err(ProofError::UnresolvedEdge),
        M::Leaf(p, v) => {
            if p[..] == key[..] {
                *v = value;
                return Ok(());
            }
            let c = common_prefix(p, key);
            let mut branch = M::Branch(empty_children(), None);
            let old = M::Leaf(p[c..].to_vec(), v.clone());
            put_in_branch(&mut branch, old)?;
            insert_into_branch(&mut branch, &key[c..], value)?;
            *node = if c > 0 {
                M::Ext(key[..c].to_vec(), Box::new(branch))
            } else {
                branch
            };
            Ok(())
        }
        M::Ext(p, child) => {
            let c = common_prefix(p, key);
            if c == p.len() {
                return insert(child, &key[c..], value);
            }
            let mut branch = M::Branch(empty_children(), None);
            // The remainder of the extension below the split point.
            let idx = p[c] as usize;
            let rest = p[c + 1..].to_vec();
            let sub = std::mem::replace(&mut **child, M::Empty);
            let moved = if rest.is_empty() {
                sub
            } else {
                M::Ext(rest, Box::new(sub))
            };
            if let M::Branch(children, _) = &mut branch {
                children[idx] = moved;
            }
            insert_into_branch(&mut branch, &key[c..], value)?;
            *node = if c > 0 {
                M::Ext(key[..c].to_vec(), Box::new(branch))
            } else {
                branch
            };
            Ok(())
        }
        M::Branch(children, v) => match key.split_first() {
            None => {
                *v = Some(value);
                Ok(())
            }
            Some((&n, rest)) => insert(&mut children[n as usize], rest, value),
        },
    }
}

fn put_in_branch(branch: &mut M, leaf: M) -> Result<(), ProofError> {
    if let (M::Branch(children, v), M::Leaf(p, val)) = (branch, leaf) {
        match p.split_first() {
            None => *v = Some(val),
            Some((&n, rest)) => children[n as usize] = M::Leaf(rest.to_vec(), val),
        }
    }
    Ok(())
}

fn insert_into_branch(branch: &mut M, key: &[u8], value: Bytes) -> Result<(), ProofError> {
    insert(branch, key, value)
}

/// Encode a node of the partial trie (children referenced by hash or embedded).
fn encode(node: &M) -> Vec<u8> {
    let to_ref = |m: &M| -> Option<NodeRef> {
        match m {
            M::Empty => None,
            M::Hash(h) => Some(NodeRef::Hash(*h)),
            M::Built(r) => Some(r.clone()),
            other => Some(NodeRef::for_node(&encode(other))),
        }
    };
    match node {
        M::Empty => vec![0x80],
        M::Built(NodeRef::Embedded(b)) => b.to_vec(),
        M::Built(NodeRef::Hash(h)) | M::Hash(h) => {
            let mut out = Vec::with_capacity(33);
            crate::rlp::encode_bytes(h.as_slice(), &mut out);
            out
        }
        M::Leaf(p, v) => Node::Leaf {
            path: Nibbles(p.clone()),
            value: v.clone(),
        }
        .encode(),
        M::Ext(p, c) => match to_ref(c) {
            Some(child) => Node::Extension {
                path: Nibbles(p.clone()),
                child,
            }
            .encode(),
            None => vec![0x80],
        },
        M::Branch(children, value) => {
            let mut refs: Box<[Option<NodeRef>; 16]> = Box::default();
            for (i, c) in children.iter().enumerate() {
                refs[i] = to_ref(c);
            }
            Node::Branch {
                children: refs,
                value: value.clone(),
            }
            .encode()
        }
    }
}

/// The nodes of a verified range whose whole key interval lies inside it (see
/// [`verify_range_proof_interior`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeInterior {
    /// Every node referenced by hash inside the range, `(hash, rlp)`, each subtrie's
    /// children before their parent (the root too, by its hash, when the whole trie is
    /// inside).
    pub nodes: Vec<(B256, Vec<u8>)>,
    /// The maximal subtries inside the range, in key order.
    pub subtries: Vec<InteriorSubtrie>,
}

/// A subtrie all of whose keys lie inside a verified range, and whose parent's do not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InteriorSubtrie {
    /// Where its top node sits: the nibbles from the root to it.
    pub path: Vec<u8>,
    /// Its top node as its parent references it (the root's hash for the whole trie).
    pub node: NodeRef,
    /// Its leaves: `keys[leaves]` of the range (never empty).
    pub leaves: std::ops::Range<usize>,
    /// Its hash-referenced nodes: `nodes[nodes]` of the [`RangeInterior`] (the subtries'
    /// runs do not overlap and cover all of them).
    pub nodes: std::ops::Range<usize>,
}

/// The closed interval of paths a range covers, and what is collected inside it.
struct Interior<'a> {
    left: &'a [u8],
    right: &'a [u8],
    out: &'a mut RangeInterior,
}

/// Encode `node` (sitting at `prefix`, `inside` when that position lies inside the range)
/// like [`encode`], and collect the nodes inside the range. Returns the RLP and whether
/// the subtree is fully resolved (holds no node known only by hash).
fn encode_interior(
    node: &M,
    prefix: &mut Vec<u8>,
    inside: bool,
    c: &mut Interior<'_>,
) -> (Vec<u8>, bool) {
    let mark = c.out.subtries.len();
    let mut resolved = true;
    let mut child_ref = |m: &M, prefix: &mut Vec<u8>, c: &mut Interior<'_>| -> Option<NodeRef> {
        match m {
            M::Empty => None,
            M::Hash(h) => {
                resolved = false;
                Some(NodeRef::Hash(*h))
            }
            // Built by `fill`, which collected what lies inside it.
            M::Built(r) => Some(r.clone()),
            other => {
                let child_inside = inside || span_of(prefix, c.left, c.right) == Span::Inside;
                let node_mark = c.out.nodes.len();
                let (rlp, res) = encode_interior(other, prefix, child_inside, c);
                resolved &= res;
                let keep = child_inside && res;
                let r = if rlp.len() < 32 {
                    NodeRef::Embedded(Bytes::from(rlp))
                } else {
                    let h = keccak256(&rlp);
                    if keep {
                        c.out.nodes.push((h, rlp));
                    }
                    NodeRef::Hash(h)
                };
                if keep {
                    // A maximal subtrie unless this node is kept whole too (below).
                    c.out.subtries.push(InteriorSubtrie {
                        path: prefix.clone(),
                        node: r.clone(),
                        leaves: 0..0,
                        nodes: node_mark..c.out.nodes.len(),
                    });
                }
                Some(r)
            }
        }
    };
    let rlp = match node {
        M::Empty => vec![0x80],
        M::Built(NodeRef::Embedded(b)) => b.to_vec(),
        M::Built(NodeRef::Hash(h)) | M::Hash(h) => {
            resolved = matches!(node, M::Built(_));
            let mut out = Vec::with_capacity(33);
            crate::rlp::encode_bytes(h.as_slice(), &mut out);
            out
        }
        M::Leaf(p, v) => Node::Leaf {
            path: Nibbles(p.clone()),
            value: v.clone(),
        }
        .encode(),
        M::Ext(p, child) => {
            let n = prefix.len();
            prefix.extend_from_slice(p);
            let r = child_ref(child, prefix, c);
            prefix.truncate(n);
            match r {
                Some(child) => Node::Extension {
                    path: Nibbles(p.clone()),
                    child,
                }
                .encode(),
                None => vec![0x80],
            }
        }
        M::Branch(children, value) => {
            let mut refs: Box<[Option<NodeRef>; 16]> = Box::default();
            for (i, ch) in children.iter().enumerate() {
                prefix.push(i as u8);
                refs[i] = child_ref(ch, prefix, c);
                prefix.pop();
            }
            Node::Branch {
                children: refs,
                value: value.clone(),
            }
            .encode()
        }
    };
    if inside && resolved {
        // This node (or one above it) is the maximal subtrie, not its children.
        c.out.subtries.truncate(mark);
    }
    (rlp, resolved)
}

/// Insert the sorted `keys` (all under `node`, which sits at `prefix`; all of one
/// length, longer than the prefix) with their `values` into `node`, as [`insert`] one by
/// one would, and collect what lies inside the range. Where the keys go into an empty
/// place, their whole subtree is built at once (hashed once, its nodes inside the range
/// collected) and kept as [`M::Built`]; a node on the edges that must be split takes
/// them one by one.
fn fill(
    node: &mut M,
    prefix: &mut Vec<u8>,
    keys: &[&[u8]],
    values: &[&[u8]],
    c: &mut Interior<'_>,
) -> Result<(), ProofError> {
    let Some(first) = keys.first() else {
        return Ok(());
    };
    let depth = prefix.len();
    let key_nibbles = first.len() * 2;
    let nib = crate::trie::nibble;
    match node {
        M::Empty if depth == 0 => {
            // The whole trie: its root is referenced by hash whatever its size.
            let inside = span_of(prefix, c.left, c.right) == Span::Inside;
            let mark = c.out.nodes.len();
            let rlp = build_interior(keys, values, prefix, inside, c);
            let h = keccak256(&rlp);
            if inside {
                c.out.nodes.push((h, rlp));
                c.out.subtries.push(InteriorSubtrie {
                    path: Vec::new(),
                    node: NodeRef::Hash(h),
                    leaves: 0..0,
                    nodes: mark..c.out.nodes.len(),
                });
            }
            *node = M::Built(NodeRef::Hash(h));
        }
        M::Empty if depth < key_nibbles => {
            // Its parent is on an edge (a place inside the range was pruned whole).
            *node = M::Built(build_child(keys, values, prefix, false, c));
        }
        M::Branch(children, _) if depth < key_nibbles => {
            let mut start = 0;
            while start < keys.len() {
                let n = nib(keys[start], depth);
                let mut end = start + 1;
                while end < keys.len() && nib(keys[end], depth) == n {
                    end += 1;
                }
                prefix.push(n);
                let r = fill(
                    &mut children[n as usize],
                    prefix,
                    &keys[start..end],
                    &values[start..end],
                    c,
                );
                prefix.pop();
                r?;
                start = end;
            }
        }
        M::Ext(p, child)
            if depth + p.len() < key_nibbles
                && [keys[0], keys[keys.len() - 1]]
                    .iter()
                    .all(|k| p.iter().enumerate().all(|(i, &x)| nib(k, depth + i) == x)) =>
        {
            // Sorted keys of one length: when the first and the last go on through the
            // extension, all do.
            prefix.extend_from_slice(p);
            let r = fill(child, prefix, keys, values, c);
            prefix.truncate(depth);
            r?;
        }
        M::Hash(_) => return Err(ProofError::UnresolvedEdge),
        _ => {
            for (k, v) in keys.iter().zip(values) {
                let full = Nibbles::unpack(k).0;
                insert(
                    node,
                    &full[depth.min(full.len())..],
                    Bytes::copy_from_slice(v),
                )?;
            }
        }
    }
    Ok(())
}

/// The reference to the subtree of `keys` whose top sits at `prefix` (`parent_inside`
/// when its parent's place lies inside the range), collecting what lies inside.
fn build_child(
    keys: &[&[u8]],
    values: &[&[u8]],
    prefix: &mut Vec<u8>,
    parent_inside: bool,
    c: &mut Interior<'_>,
) -> NodeRef {
    let inside = parent_inside || span_of(prefix, c.left, c.right) == Span::Inside;
    let mark = c.out.nodes.len();
    let rlp = build_interior(keys, values, prefix, inside, c);
    let r = if rlp.len() < 32 {
        NodeRef::Embedded(Bytes::from(rlp))
    } else {
        let h = keccak256(&rlp);
        if inside {
            c.out.nodes.push((h, rlp));
        }
        NodeRef::Hash(h)
    };
    if inside && !parent_inside {
        c.out.subtries.push(InteriorSubtrie {
            path: prefix.clone(),
            node: r.clone(),
            leaves: 0..0,
            nodes: mark..c.out.nodes.len(),
        });
    }
    r
}

/// The RLP of the top node of the subtree of `keys` (sorted, distinct, all of one
/// length, longer than `prefix`, the nibbles they share), whose top sits at `prefix`.
fn build_interior(
    keys: &[&[u8]],
    values: &[&[u8]],
    prefix: &mut Vec<u8>,
    inside: bool,
    c: &mut Interior<'_>,
) -> Vec<u8> {
    if inside {
        return build_inside(keys, values, prefix.len(), c.out);
    }
    let nib = crate::trie::nibble;
    let depth = prefix.len();
    let first = keys[0];
    let end = first.len() * 2;
    let mut buf = HpBuf::default();
    let hp = buf.for_key(first);
    if keys.len() == 1 {
        return leaf_rlp(first, depth, values[0], hp);
    }
    let last = keys[keys.len() - 1];
    let mut cp = depth;
    while cp < end && nib(first, cp) == nib(last, cp) {
        cp += 1;
    }
    if cp > depth {
        for i in depth..cp {
            prefix.push(nib(first, i));
        }
        let child = build_child(keys, values, prefix, inside, c);
        prefix.truncate(depth);
        let hp = hex_prefix(first, depth, cp, false, hp);
        return pending_extension(hp, &PendingChild::Ready(child), &mut Vec::new()).rlp;
    }
    let mut refs: [Option<PendingChild>; 16] = Default::default();
    let mut start = 0;
    while start < keys.len() {
        let n = nib(keys[start], depth);
        let stop = crate::trie::run_end(start, keys.len(), |i| nib(keys[i], depth));
        prefix.push(n);
        refs[n as usize] = Some(PendingChild::Ready(build_child(
            &keys[start..stop],
            &values[start..stop],
            prefix,
            inside,
            c,
        )));
        prefix.pop();
        start = stop;
    }
    // Every child is built already: no holes.
    pending_branch(&refs, &[], &mut Vec::new()).rlp
}

/// [`build_interior`] for a subtree inside the range, whose every node is collected.
/// A node's RLP does not depend on its children's hashes but through their 32 bytes, so
/// the subtree is encoded first and hashed after, a height at a time: the nodes of one
/// height do not depend on each other and are hashed together, four at a time where the
/// CPU can ([`crate::keccak4`]). A range's leaves and their branches are the bulk of the
/// hashing of a snap sync.
fn build_inside(
    keys: &[&[u8]],
    values: &[&[u8]],
    depth: usize,
    out: &mut RangeInterior,
) -> Vec<u8> {
    // About one node referenced by hash per leaf, and a branch for a few leaves.
    let mut pending = Vec::with_capacity(keys.len() + keys.len() / 2);
    let mut holes = Vec::with_capacity(keys.len() + keys.len() / 2);
    let mut top = build_pending(keys, values, depth, &mut pending, &mut holes);
    let (hashes, _) = crate::trie::hash_by_height(&mut pending, &holes, &mut top);
    out.nodes.reserve(pending.len());
    for (p, h) in pending.into_iter().zip(hashes) {
        out.nodes.push((h, p.rlp));
    }
    top.rlp
}

/// The subtree of `keys` (as [`build_interior`]) with its hashes left to take: its top
/// node, the nodes referenced by hash below it put in `pending`.
fn build_pending(
    keys: &[&[u8]],
    values: &[&[u8]],
    depth: usize,
    pending: &mut Vec<Pending>,
    holes: &mut Vec<(u32, u32)>,
) -> Pending {
    let nib = crate::trie::nibble;
    let first = keys[0];
    let end = first.len() * 2;
    let mut buf = HpBuf::default();
    let hp = buf.for_key(first);
    if keys.len() == 1 {
        return Pending {
            rlp: leaf_rlp(first, depth, values[0], hp),
            holes: 0..0,
            height: 0,
        };
    }
    let last = keys[keys.len() - 1];
    let mut cp = depth;
    while cp < end && nib(first, cp) == nib(last, cp) {
        cp += 1;
    }
    if cp > depth {
        let below = build_pending(keys, values, cp, pending, holes);
        let child = PendingChild::of(below, pending);
        let hp = hex_prefix(first, depth, cp, false, hp);
        return pending_extension(hp, &child, holes);
    }
    let mut children: [Option<PendingChild>; 16] = Default::default();
    let mut start = 0;
    while start < keys.len() {
        let n = nib(keys[start], depth);
        let stop = crate::trie::run_end(start, keys.len(), |i| nib(keys[i], depth));
        let below = build_pending(
            &keys[start..stop],
            &values[start..stop],
            depth + 1,
            pending,
            holes,
        );
        children[n as usize] = Some(PendingChild::of(below, pending));
        start = stop;
    }
    pending_branch(&children, &[], holes)
}

/// A buffer for the hex-prefix form of a key's nibbles ([`hex_prefix`]): on the stack for
/// keys of up to 32 bytes (state and storage tries), so that building a node does not
/// clear a buffer for the longest key.
struct HpBuf {
    small: [u8; 33],
    long: Vec<u8>,
}

impl Default for HpBuf {
    fn default() -> Self {
        HpBuf {
            small: [0; 33],
            long: Vec::new(),
        }
    }
}

impl HpBuf {
    fn for_key(&mut self, key: &[u8]) -> &mut [u8] {
        if key.len() < self.small.len() {
            &mut self.small
        } else {
            self.long.resize(1 + key.len(), 0);
            &mut self.long
        }
    }
}

/// The hex-prefix form of nibbles `from..to` of `key`, written into `buf`.
fn hex_prefix<'b>(key: &[u8], from: usize, to: usize, leaf: bool, buf: &'b mut [u8]) -> &'b [u8] {
    let nib = crate::trie::nibble;
    let flag = if leaf { 0x20 } else { 0x00 };
    let mut i = from;
    buf[0] = if (to - from) % 2 == 1 {
        i += 1;
        flag | 0x10 | nib(key, from)
    } else {
        flag
    };
    let mut w = 1;
    while i < to {
        buf[w] = (nib(key, i) << 4) | nib(key, i + 1);
        w += 1;
        i += 2;
    }
    &buf[..w]
}

fn str_len(b: &[u8]) -> usize {
    alloy_rlp::Encodable::length(&b)
}

/// The leaf node of `key` below nibble `depth`, holding `value` (`hp`: a buffer from
/// [`HpBuf::for_key`]).
fn leaf_rlp(key: &[u8], depth: usize, value: &[u8], hp: &mut [u8]) -> Vec<u8> {
    let hp = hex_prefix(key, depth, key.len() * 2, true, hp);
    list2(
        hp,
        |out| crate::rlp::encode_bytes(value, out),
        str_len(value),
    )
}

/// A list of two items: the string `a`, then what `b` writes (`b_len` bytes).
fn list2(a: &[u8], b: impl FnOnce(&mut Vec<u8>), b_len: usize) -> Vec<u8> {
    let payload = str_len(a) + b_len;
    let mut out = Vec::with_capacity(payload + 9);
    crate::rlp::list_header(payload, &mut out);
    crate::rlp::encode_bytes(a, &mut out);
    b(&mut out);
    out
}

/// [`root_hash`], collecting the nodes inside the closed path interval [left, right].
fn root_hash_interior(node: &M, left: &[u8], right: &[u8], out: &mut RangeInterior) -> B256 {
    let inside = span_of(&[], left, right) == Span::Inside;
    let mut c = Interior { left, right, out };
    match node {
        M::Empty => EMPTY_ROOT,
        // A root built by `fill` was collected there.
        M::Hash(h) | M::Built(NodeRef::Hash(h)) => *h,
        other => {
            let (rlp, resolved) = encode_interior(other, &mut Vec::new(), inside, &mut c);
            let h = keccak256(&rlp);
            if inside && resolved {
                c.out.subtries.clear();
                c.out.nodes.push((h, rlp));
                c.out.subtries.push(InteriorSubtrie {
                    path: Vec::new(),
                    node: NodeRef::Hash(h),
                    leaves: 0..0,
                    nodes: 0..c.out.nodes.len(),
                });
            }
            h
        }
    }
}

/// Order of `key`'s first `path.len()` nibbles against `path`.
fn nibble_prefix_cmp(key: &[u8], path: &[u8]) -> std::cmp::Ordering {
    for (i, &n) in path.iter().enumerate() {
        let k = crate::trie::nibble(key, i);
        match k.cmp(&n) {
            std::cmp::Ordering::Equal => {}
            o => return o,
        }
    }
    std::cmp::Ordering::Equal
}

/// Put the subtries in key order and fill in their leaves: the keys under each path.
fn subtrie_leaves(out: &mut RangeInterior, keys: &[impl AsRef<[u8]>]) {
    // Disjoint paths: their order is their keys'.
    out.subtries.sort_by(|a, b| a.path.cmp(&b.path));
    for s in &mut out.subtries {
        let lo = keys.partition_point(|k| nibble_prefix_cmp(k.as_ref(), &s.path).is_lt());
        let hi = keys.partition_point(|k| nibble_prefix_cmp(k.as_ref(), &s.path).is_le());
        s.leaves = lo..hi;
    }
    // Each subtrie inside a verified range holds some of its keys.
    debug_assert!(out.subtries.iter().all(|s| !s.leaves.is_empty()));
}

fn root_hash(node: &M) -> B256 {
    match node {
        M::Empty => EMPTY_ROOT,
        M::Hash(h) | M::Built(NodeRef::Hash(h)) => *h,
        other => keccak256(encode(other)),
    }
}

/// Does the trie hold any element above `key`?
fn has_right_element(node: &M, key: &[u8]) -> bool {
    let mut node = node;
    let mut key = key;
    loop {
        match node {
            M::Empty => return false,
            M::Hash(_) => return false,
            // Built from the range's keys, none above the last one.
            M::Built(_) => return false,
            M::Leaf(p, _) => return p[..] > key[..],
            M::Ext(p, c) => {
                if key.len() >= p.len() && key[..p.len()] == p[..] {
                    key = &key[p.len()..];
                    node = c;
                } else {
                    return p[..] > key[..p.len().min(key.len())];
                }
            }
            M::Branch(children, _) => {
                let Some((&n, rest)) = key.split_first() else {
                    return children.iter().any(|c| !matches!(c, M::Empty));
                };
                if children[n as usize + 1..]
                    .iter()
                    .any(|c| !matches!(c, M::Empty))
                {
                    return true;
                }
                key = rest;
                node = &children[n as usize];
            }
        }
    }
}

/// Verify a single-key Merkle proof; returns the value (`None` proves absence).
pub fn verify_proof(root: B256, key: &[u8], proof: &[Bytes]) -> Result<Option<Bytes>, ProofError> {
    if root == EMPTY_ROOT && proof.is_empty() {
        return Ok(None);
    }
    let db = ProofDb::new(proof)?;
    let mut tree = M::Hash(root);
    resolve_path(&mut tree, &Nibbles::unpack(key).0, &db)
}

/// Verify a snap/1 range: `keys` (strictly increasing, all of one length, at most
/// [`MAX_KEY_BYTES`]; with a proof, the length of `first_key`)
/// with `values` are every element of the trie `root` from `first_key` up to the last key,
/// and `proof` holds the edge proofs. Returns whether elements exist above the last key.
///
/// - no proof: the keys must be the whole trie;
/// - no keys: the proof of `first_key` must show that nothing lies at or above it;
/// - otherwise the proofs of `first_key` and of the last key bound the range, and the
///   range rebuilt from `keys` must give `root`.
pub fn verify_range_proof(
    root: B256,
    first_key: &[u8],
    keys: &[impl AsRef<[u8]>],
    values: &[impl AsRef<[u8]>],
    proof: &[Bytes],
) -> Result<bool, ProofError> {
    verify_range(root, first_key, keys, values, proof, None)
}

/// [`verify_range_proof`], also returning the nodes of the trie whose whole key interval
/// lies inside the verified range: the keys from `first_key` to the last key, or to the
/// end of the key space when nothing lies above the last key (the whole key space for a
/// range without proof). Those are final nodes of the trie `root`, hashed once here; the
/// nodes on the edges (which also hold keys outside the range) are not returned.
pub fn verify_range_proof_interior(
    root: B256,
    first_key: &[u8],
    keys: &[impl AsRef<[u8]>],
    values: &[impl AsRef<[u8]>],
    proof: &[Bytes],
) -> Result<(bool, RangeInterior), ProofError> {
    let mut out = RangeInterior::default();
    // Room for the leaves and half as many nodes above them (random keys need fewer),
    // rather than growing by doubling in every response.
    out.nodes.reserve(keys.len() + keys.len() / 2 + 2);
    let more = verify_range(root, first_key, keys, values, proof, Some(&mut out))?;
    subtrie_leaves(&mut out, keys);
    Ok((more, out))
}

/// The checks of a range's keys and values before any proof is looked at: as many values
/// as keys, not too many, keys of one length (at most [`MAX_KEY_BYTES`]) strictly
/// increasing, no empty value. Returns the key length.
fn check_range_input(
    first_key: &[u8],
    keys: &[impl AsRef<[u8]>],
    values: &[impl AsRef<[u8]>],
) -> Result<usize, ProofError> {
    if keys.len() != values.len() {
        return Err(ProofError::LengthMismatch {
            keys: keys.len(),
            values: values.len(),
        });
    }
    if keys.len() > MAX_RANGE_KEYS {
        return Err(ProofError::TooMany {
            count: keys.len(),
            limit: MAX_RANGE_KEYS,
        });
    }
    let key_len = keys.first().map_or(first_key.len(), |k| k.as_ref().len());
    if key_len > MAX_KEY_BYTES || first_key.len() > MAX_KEY_BYTES {
        return Err(ProofError::KeyLength {
            index: 0,
            len: key_len.max(first_key.len()),
            expected: MAX_KEY_BYTES,
        });
    }
    for i in 0..keys.len() {
        if keys[i].as_ref().len() != key_len {
            return Err(ProofError::KeyLength {
                index: i,
                len: keys[i].as_ref().len(),
                expected: key_len,
            });
        }
        if values[i].as_ref().is_empty() {
            return Err(ProofError::EmptyValue { index: i });
        }
        if i > 0 && keys[i - 1].as_ref() >= keys[i].as_ref() {
            return Err(ProofError::KeysNotIncreasing { index: i });
        }
    }
    Ok(key_len)
}

/// One trie given whole: all its leaves, no proof (see [`verify_whole_tries_interior`]).
pub struct WholeTrie<'a> {
    pub root: B256,
    pub keys: &'a [&'a [u8]],
    pub values: &'a [&'a [u8]],
}

/// [`verify_range_proof_interior`] of several tries each given whole (an empty proof,
/// from the first key), their nodes hashed together a height at a time: many small tries
/// (the storage of one response's accounts) fill the four lanes of [`crate::keccak4`]
/// where one at a time their few nodes would not. Each result equals that call's.
pub fn verify_whole_tries_interior(
    tries: &[WholeTrie<'_>],
) -> Vec<Result<RangeInterior, ProofError>> {
    let mut pending = Vec::new();
    let mut holes = Vec::new();
    // Per trie: its pending nodes (root last), or why it failed.
    let mut spans: Vec<Result<std::ops::Range<usize>, ProofError>> =
        Vec::with_capacity(tries.len());
    for t in tries {
        let span = match check_range_input(&[], t.keys, t.values) {
            Err(e) => Err(e),
            // An empty trie: its root is the empty root, and it has no nodes.
            Ok(_) if t.keys.is_empty() => Ok(0..0),
            Ok(_) => {
                let start = pending.len();
                let top = build_pending(t.keys, t.values, 0, &mut pending, &mut holes);
                // The root is referenced by its hash whatever its length.
                pending.push(top);
                Ok(start..pending.len())
            }
        };
        spans.push(span);
    }
    let mut none = Pending {
        rlp: Vec::new(),
        holes: 0..0,
        height: 0,
    };
    let (hashes, _) = crate::trie::hash_by_height(&mut pending, &holes, &mut none);
    let mut rlps = pending.into_iter().map(|p| p.rlp);
    let mut taken = 0;
    tries
        .iter()
        .zip(spans)
        .map(|(t, span)| {
            let span = span?;
            let nodes: Vec<(B256, Vec<u8>)> = span
                .map(|i| {
                    debug_assert_eq!(i, taken);
                    taken += 1;
                    (hashes[i], rlps.next().expect("one per pending node"))
                })
                .collect();
            let got = nodes.last().map_or(EMPTY_ROOT, |n| n.0);
            if got != t.root {
                return Err(ProofError::RootMismatch {
                    expected: t.root,
                    got,
                });
            }
            let mut out = RangeInterior::default();
            if !nodes.is_empty() {
                out.subtries.push(InteriorSubtrie {
                    path: Vec::new(),
                    node: NodeRef::Hash(got),
                    leaves: 0..t.keys.len(),
                    nodes: 0..nodes.len(),
                });
                out.nodes = nodes;
            }
            Ok(out)
        })
        .collect()
}

fn verify_range(
    root: B256,
    first_key: &[u8],
    keys: &[impl AsRef<[u8]>],
    values: &[impl AsRef<[u8]>],
    proof: &[Bytes],
    interior: Option<&mut RangeInterior>,
) -> Result<bool, ProofError> {
    let key_len = check_range_input(first_key, keys, values)?;
    if proof.is_empty() {
        let mut tree = M::Empty;
        let got = match interior {
            Some(out) => {
                let n = key_len * 2;
                let (left, right) = (&FIRST_PATH[..n], &LAST_PATH[..n]);
                let mut c = Interior { left, right, out };
                let (k, v) = as_slices(keys, values);
                fill(&mut tree, &mut Vec::new(), &k, &v, &mut c)?;
                root_hash_interior(&tree, left, right, c.out)
            }
            None => {
                for (k, v) in keys.iter().zip(values) {
                    insert(
                        &mut tree,
                        &Nibbles::unpack(k.as_ref()).0,
                        Bytes::copy_from_slice(v.as_ref()),
                    )?;
                }
                root_hash(&tree)
            }
        };
        if got != root {
            return Err(ProofError::RootMismatch {
                expected: root,
                got,
            });
        }
        return Ok(false);
    }
    for (i, k) in keys.iter().enumerate() {
        if k.as_ref().len() != first_key.len() {
            return Err(ProofError::KeyLength {
                index: i,
                len: k.as_ref().len(),
                expected: first_key.len(),
            });
        }
    }
    let db = ProofDb::new(proof)?;
    let first = Nibbles::unpack(first_key).0;
    let mut tree = M::Hash(root);
    if keys.is_empty() {
        if resolve_path(&mut tree, &first, &db)?.is_some() {
            return Err(ProofError::MissingElement);
        }
        if has_right_element(&tree, &first) {
            return Err(ProofError::MoreElements);
        }
        return Ok(false);
    }
    if first_key > keys[0].as_ref() {
        return Err(ProofError::FirstKeyAboveRange);
    }
    let last = Nibbles::unpack(keys[keys.len() - 1].as_ref()).0;
    if keys.len() == 1 && first_key == keys[0].as_ref() {
        let v = resolve_path(&mut tree, &first, &db)?.ok_or(ProofError::KeyNotInTrie)?;
        if v.as_ref() != values[0].as_ref() {
            return Err(ProofError::ValueMismatch);
        }
        let more = has_right_element(&tree, &first);
        if let Some(out) = interior {
            // The proof resolved the key's path: the nodes inside the range are on it.
            let right = if more {
                &first[..]
            } else {
                &LAST_PATH[..first.len()]
            };
            root_hash_interior(&tree, &first, right, out);
        }
        return Ok(more);
    }
    resolve_path(&mut tree, &first, &db)?;
    resolve_path(&mut tree, &last, &db)?;
    prune(&mut tree, &mut Vec::new(), &first, &last)?;
    let (got, more) = match interior {
        Some(out) => {
            // The range's keys are all at or below the last one: whether the trie holds
            // more above it shows before they go in (and is checked again after).
            let more = has_right_element(&tree, &last);
            let right = if more {
                &last[..]
            } else {
                &LAST_PATH[..last.len()]
            };
            let mut c = Interior {
                left: &first,
                right,
                out,
            };
            let (k, v) = as_slices(keys, values);
            fill(&mut tree, &mut Vec::new(), &k, &v, &mut c)?;
            let got = root_hash_interior(&tree, &first, right, c.out);
            let after = has_right_element(&tree, &last);
            if after != more {
                // Collected for the wrong range: report nothing rather than that.
                *c.out = RangeInterior::default();
            }
            (got, after)
        }
        None => {
            for (k, v) in keys.iter().zip(values) {
                insert(
                    &mut tree,
                    &Nibbles::unpack(k.as_ref()).0,
                    Bytes::copy_from_slice(v.as_ref()),
                )?;
            }
            (root_hash(&tree), has_right_element(&tree, &last))
        }
    };
    if got != root {
        return Err(ProofError::RootMismatch {
            expected: root,
            got,
        });
    }
    Ok(more)
}

/// The keys and values as slices.
fn as_slices<'k>(
    keys: &'k [impl AsRef<[u8]>],
    values: &'k [impl AsRef<[u8]>],
) -> (Vec<&'k [u8]>, Vec<&'k [u8]>) {
    (
        keys.iter().map(|k| k.as_ref()).collect(),
        values.iter().map(|v| v.as_ref()).collect(),
    )
}

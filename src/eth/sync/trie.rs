//! Merkle-Patricia trie pieces the sync engines need: node decoding with child references,
//! building a trie (all nodes) from sorted leaves, Merkle proofs and range-proof checking.

use std::collections::HashMap;

use alloy_primitives::{keccak256, B256};
use thiserror::Error;

use catchup_eth::rlp::{self, RlpError};

/// keccak(rlp("")): the root of an empty trie.
pub const EMPTY_ROOT: B256 = B256::new(hex_lit(
    b"56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
));
/// keccak(""): the code hash of an account without code.
pub const EMPTY_CODE: B256 = B256::new(hex_lit(
    b"c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470",
));

const fn hex_lit(s: &[u8; 64]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nib(s[2 * i]) << 4) | nib(s[2 * i + 1]);
        i += 1;
    }
    out
}
const fn nib(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("bad hex literal"),
    }
}

/// Largest trie node accepted from a peer.
pub const MAX_NODE_BYTES: usize = 64 * 1024;

/// Errors from decoding or checking trie data.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TrieError {
    #[error("trie node: {0}")]
    Rlp(#[from] RlpError),
    #[error("trie node: {0} bytes exceeds the {MAX_NODE_BYTES} byte limit")]
    TooLarge(usize),
    #[error("range proof: keys are not strictly increasing at index {0}")]
    KeysNotSorted(usize),
    #[error("range proof: key {0} is below the requested origin")]
    KeyBelowOrigin(usize),
    #[error("range proof: keys and values differ in count ({0} vs {1})")]
    CountMismatch(usize, usize),
    #[error("range proof: proof node {0} is missing")]
    MissingProofNode(B256),
    #[error("range proof: {0} leaves are not placed in the proven trie")]
    UnplacedLeaves(usize),
    #[error("range proof: rebuilt root {got} differs from expected {want}")]
    RootMismatch { got: B256, want: B256 },
    #[error("range proof: a returned value is empty")]
    EmptyValue,
}

/// A reference from a node to a child.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ChildRef {
    #[default]
    Empty,
    Hash(B256),
    /// A node shorter than 32 bytes embedded in its parent (its full RLP).
    Inline(Vec<u8>),
}

impl ChildRef {
    fn from_eth(r: &Option<catchup_eth::trie::NodeRef>) -> Self {
        match r {
            None => ChildRef::Empty,
            Some(catchup_eth::trie::NodeRef::Hash(h)) => ChildRef::Hash(*h),
            Some(catchup_eth::trie::NodeRef::Embedded(raw)) => ChildRef::Inline(raw.to_vec()),
        }
    }

    /// The node's reference of an encoded node: the hash when it has ≥ 32 bytes.
    pub fn of_node(rlp: &[u8]) -> Self {
        if rlp.len() < 32 {
            ChildRef::Inline(rlp.to_vec())
        } else {
            ChildRef::Hash(keccak256(rlp))
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            ChildRef::Empty => out.push(0x80),
            ChildRef::Hash(h) => rlp::encode_bytes(h.as_slice(), out),
            ChildRef::Inline(raw) => out.extend_from_slice(raw),
        }
    }
}

/// A decoded trie node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Branch {
        children: Box<[ChildRef; 16]>,
        value: Option<Vec<u8>>,
    },
    Extension {
        path: Vec<u8>,
        child: ChildRef,
    },
    Leaf {
        path: Vec<u8>,
        value: Vec<u8>,
    },
}

fn put_hex_prefix(out: &mut Vec<u8>, nibbles: &[u8], leaf: bool) {
    rlp::encode_bytes(&catchup_eth::trie::hex_prefix_encode(nibbles, leaf), out);
}

impl Node {
    /// Decode a node from its RLP encoding (decoded by `catchup_eth::trie::Node`).
    pub fn decode(buf: &[u8]) -> Result<Node, TrieError> {
        if buf.len() > MAX_NODE_BYTES {
            return Err(TrieError::TooLarge(buf.len()));
        }
        Ok(match catchup_eth::trie::Node::decode(buf)? {
            catchup_eth::trie::Node::Branch { children, value } => {
                let mut refs: [ChildRef; 16] = Default::default();
                for (r, c) in refs.iter_mut().zip(children.iter()) {
                    *r = ChildRef::from_eth(c);
                }
                Node::Branch {
                    children: Box::new(refs),
                    value: value.map(|v| v.to_vec()),
                }
            }
            catchup_eth::trie::Node::Extension { path, child } => Node::Extension {
                path: path.0,
                child: ChildRef::from_eth(&Some(child)),
            },
            catchup_eth::trie::Node::Leaf { path, value } => Node::Leaf {
                path: path.0,
                value: value.to_vec(),
            },
        })
    }

    /// Encode the node as RLP.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(600);
        match self {
            Node::Branch { children, value } => {
                for c in children.iter() {
                    c.encode_into(&mut p);
                }
                rlp::encode_bytes(value.as_deref().unwrap_or(&[]), &mut p);
            }
            Node::Extension { path, child } => {
                put_hex_prefix(&mut p, path, false);
                child.encode_into(&mut p);
            }
            Node::Leaf { path, value } => {
                put_hex_prefix(&mut p, path, true);
                rlp::encode_bytes(value, &mut p);
            }
        }
        rlp::wrap_list(&p)
    }
}

/// Nibble `i` of a byte key.
#[inline]
pub fn nibble(key: &[u8], i: usize) -> u8 {
    let b = key[i / 2];
    if i % 2 == 0 {
        b >> 4
    } else {
        b & 0x0f
    }
}

/// All nibbles of a key.
pub fn to_nibbles(key: &[u8]) -> Vec<u8> {
    (0..key.len() * 2).map(|i| nibble(key, i)).collect()
}

/// Build a trie over sorted, unique, prefix-free byte keys. Every node that is referenced by
/// hash (≥ 32 bytes, and the root) is passed to `emit(hash, rlp)`. Returns the root hash.
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

/// Kept here: `catchup_eth`'s builder makes whole tries only, the snap rebuild needs subtrees.
/// Build the subtree of `entries` (all sharing their first `depth` nibbles) and return the
/// RLP of its top node. Hash-referenced nodes below are emitted; the top one is not.
pub fn build_node<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    entries: &[(K, V)],
    depth: usize,
    emit: &mut dyn FnMut(B256, &[u8]),
) -> Vec<u8> {
    debug_assert!(!entries.is_empty());
    let first = entries[0].0.as_ref();
    if entries.len() == 1 {
        let path: Vec<u8> = (depth..first.len() * 2).map(|i| nibble(first, i)).collect();
        return Node::Leaf {
            path,
            value: entries[0].1.as_ref().to_vec(),
        }
        .encode();
    }
    let last = entries[entries.len() - 1].0.as_ref();
    let max = first.len().min(last.len()) * 2;
    let mut cp = depth;
    while cp < max && nibble(first, cp) == nibble(last, cp) {
        cp += 1;
    }
    if cp > depth {
        let child = build_node(entries, cp, emit);
        let path: Vec<u8> = (depth..cp).map(|i| nibble(first, i)).collect();
        let child = to_ref(child, emit);
        return Node::Extension { path, child }.encode();
    }
    let mut children: [ChildRef; 16] = Default::default();
    let mut start = 0;
    while start < entries.len() {
        let n = nibble(entries[start].0.as_ref(), depth);
        let mut end = start + 1;
        while end < entries.len() && nibble(entries[end].0.as_ref(), depth) == n {
            end += 1;
        }
        let child = build_node(&entries[start..end], depth + 1, emit);
        children[n as usize] = to_ref(child, emit);
        start = end;
    }
    Node::Branch {
        children: Box::new(children),
        value: None,
    }
    .encode()
}

fn to_ref(rlp: Vec<u8>, emit: &mut dyn FnMut(B256, &[u8])) -> ChildRef {
    if rlp.len() < 32 {
        ChildRef::Inline(rlp)
    } else {
        let h = keccak256(&rlp);
        emit(h, &rlp);
        ChildRef::Hash(h)
    }
}

/// A source of trie nodes by hash (used to make proofs).
pub trait NodeSource {
    fn node(&self, hash: &B256) -> Option<&[u8]>;
}

impl NodeSource for HashMap<B256, Vec<u8>> {
    fn node(&self, hash: &B256) -> Option<&[u8]> {
        self.get(hash).map(|v| v.as_slice())
    }
}

/// The hash-referenced nodes on the path from `root` towards `key` (a Merkle proof of
/// presence or absence). Stops where the path leaves the trie or a node is unknown.
pub fn prove(src: &dyn NodeSource, root: B256, key: &[u8], out: &mut Vec<Vec<u8>>) {
    let Some(mut raw) = src.node(&root).map(|r| r.to_vec()) else {
        return;
    };
    out.push(raw.clone());
    let mut depth = 0usize;
    let total = key.len() * 2;
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
                    || (0..path.len()).any(|i| path[i] != nibble(key, depth + i))
                {
                    return;
                }
                depth += path.len();
                child
            }
        };
        raw = match next {
            ChildRef::Empty => return,
            ChildRef::Inline(r) => r,
            ChildRef::Hash(h) => match src.node(&h) {
                Some(r) => {
                    out.push(r.to_vec());
                    r.to_vec()
                }
                None => return,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Made = (Vec<([u8; 32], Vec<u8>)>, HashMap<B256, Vec<u8>>, B256);

    fn make(n: usize, seed: u8) -> Made {
        let mut e: Vec<([u8; 32], Vec<u8>)> = (0..n)
            .map(|i| {
                (
                    keccak256([seed, (i >> 8) as u8, i as u8]).0,
                    rlp::bytes_item(&[(i as u8).wrapping_add(1); 3]),
                )
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
    fn empty_and_known_roots() {
        assert_eq!(build_root::<&[u8], &[u8]>(&[], &mut |_, _| {}), EMPTY_ROOT);
        assert_eq!(keccak256([0x80]), EMPTY_ROOT);
        assert_eq!(keccak256([]), EMPTY_CODE);
    }

    #[test]
    fn nodes_decode_and_reencode() {
        let (_, nodes, root) = make(300, 1);
        assert!(nodes.contains_key(&root));
        for (h, raw) in &nodes {
            assert_eq!(keccak256(raw), *h);
            let n = Node::decode(raw).unwrap();
            assert_eq!(&n.encode(), raw);
        }
    }

    fn verify(
        root: B256,
        origin: &[u8; 32],
        keys: &[[u8; 32]],
        vals: &[Vec<u8>],
        proof: &[Vec<u8>],
    ) -> Result<bool, String> {
        let proof: Vec<catchup_eth::Bytes> = proof
            .iter()
            .map(|p| catchup_eth::Bytes::copy_from_slice(p))
            .collect();
        catchup_eth::verify_range_proof(root, origin, keys, vals, &proof).map_err(|e| e.to_string())
    }

    #[test]
    fn proofs_made_here_pass_the_data_layer_range_check() {
        let (e, nodes, root) = make(200, 2);
        for (a, b) in [
            (0usize, 200usize),
            (0, 50),
            (17, 90),
            (150, 200),
            (199, 200),
            (5, 6),
        ] {
            let origin = e[a].0;
            let keys: Vec<[u8; 32]> = e[a..b].iter().map(|x| x.0).collect();
            let vals: Vec<Vec<u8>> = e[a..b].iter().map(|x| x.1.clone()).collect();
            let mut proof = Vec::new();
            prove(&nodes, root, &origin, &mut proof);
            prove(&nodes, root, keys.last().unwrap(), &mut proof);
            assert_eq!(
                verify(root, &origin, &keys, &vals, &proof).unwrap(),
                b < 200,
                "range {a}..{b}"
            );
            if keys.len() > 2 {
                let mut k2 = keys.clone();
                let mut v2 = vals.clone();
                k2.remove(1);
                v2.remove(1);
                assert!(verify(root, &origin, &k2, &v2, &proof).is_err());
            }
            let mut v3 = vals.clone();
            v3[0] = rlp::bytes_item(b"liar");
            assert!(verify(root, &origin, &keys, &v3, &proof).is_err());
        }
    }

    #[test]
    fn ordered_roots_match_the_data_layer() {
        let vals: Vec<Vec<u8>> = (0..300u32)
            .map(|i| rlp::bytes_item(&i.to_be_bytes()))
            .collect();
        let mut entries: Vec<(Vec<u8>, &[u8])> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| (rlp::u64_item(i as u64), v.as_slice()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            build_root(&entries, &mut |_, _| {}),
            catchup_eth::ordered_root(&vals)
        );
    }

    proptest! {
        #[test]
        fn node_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Node::decode(&data);
        }

    }
}

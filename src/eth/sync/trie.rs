//! Merkle-Patricia trie pieces the sync engines need: node decoding with child references,
//! building a trie (all nodes) from sorted leaves, Merkle proofs and range-proof checking.

use std::collections::HashMap;

use alloy_primitives::{keccak256, Bytes, B256};
use thiserror::Error;

use catchup_eth::rlp::RlpError;
pub use catchup_eth::trie::{nibble, Nibbles, Node, NodeRef};
use catchup_eth::EMPTY_ROOT;

/// Largest trie node accepted from a peer.
pub const MAX_NODE_BYTES: usize = 64 * 1024;

/// Errors from decoding or checking trie data.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TrieError {
    #[error("trie node: {0}")]
    Rlp(#[from] RlpError),
    #[error("trie node: {0} bytes exceeds the {MAX_NODE_BYTES} byte limit")]
    TooLarge(usize),
}

/// Decode a node (with [`catchup_eth::trie::Node::decode`]) that is at most
/// [`MAX_NODE_BYTES`] long.
pub fn decode_node(buf: &[u8]) -> Result<Node, TrieError> {
    if buf.len() > MAX_NODE_BYTES {
        return Err(TrieError::TooLarge(buf.len()));
    }
    Ok(Node::decode(buf)?)
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
            path: Nibbles(path),
            value: Bytes::copy_from_slice(entries[0].1.as_ref()),
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
        return Node::Extension {
            path: Nibbles(path),
            child,
        }
        .encode();
    }
    let mut children: Box<[Option<NodeRef>; 16]> = Box::default();
    let mut start = 0;
    while start < entries.len() {
        let n = nibble(entries[start].0.as_ref(), depth);
        let mut end = start + 1;
        while end < entries.len() && nibble(entries[end].0.as_ref(), depth) == n {
            end += 1;
        }
        let child = build_node(&entries[start..end], depth + 1, emit);
        children[n as usize] = Some(to_ref(child, emit));
        start = end;
    }
    Node::Branch {
        children,
        value: None,
    }
    .encode()
}

fn to_ref(rlp: Vec<u8>, emit: &mut dyn FnMut(B256, &[u8])) -> NodeRef {
    if rlp.len() < 32 {
        NodeRef::Embedded(Bytes::from(rlp))
    } else {
        let h = keccak256(&rlp);
        emit(h, &rlp);
        NodeRef::Hash(h)
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
        let Ok(node) = decode_node(&raw) else { return };
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
    use catchup_eth::rlp;
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
    }

    #[test]
    fn nodes_decode_and_reencode() {
        let (_, nodes, root) = make(300, 1);
        assert!(nodes.contains_key(&root));
        for (h, raw) in &nodes {
            assert_eq!(keccak256(raw), *h);
            let n = decode_node(raw).unwrap();
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
            let _ = decode_node(&data);
        }

    }
}

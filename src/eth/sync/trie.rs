//! Merkle-Patricia trie pieces the sync engines use. Nodes, references, the streaming
//! builder ([`build_root`], [`build_node`]) and proofs ([`prove`]) are `catchup_eth`'s; the
//! sync adds its limit on the size of a node a peer may send ([`decode_node`]).

use thiserror::Error;

use catchup_eth::rlp::RlpError;
pub use catchup_eth::trie::{
    build_node, build_node_known, build_root, nibble, prove, KnownSubtree, Nibbles, Node, NodeRef,
    NodeSource,
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{keccak256, B256};
    use catchup_eth::rlp;
    use catchup_eth::EMPTY_ROOT;
    use proptest::prelude::*;
    use std::collections::HashMap;

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

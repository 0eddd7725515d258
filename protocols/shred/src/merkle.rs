//! The Merkle tree over the shreds of one FEC set: leaves are
//! `sha256("\x00SOLANA_MERKLE_SHREDS_LEAF" ‖ payload[64..proof_offset])`, inner nodes
//! `sha256("\x01SOLANA_MERKLE_SHREDS_NODE" ‖ left[..20] ‖ right[..20])`; an odd node at the
//! end of a level is paired with itself. Proof entries are the first 20 bytes of siblings;
//! the root is the full 32-byte hash and is what the leader signs.

use sha2::{Digest, Sha256};

use crate::layout::SIZE_OF_MERKLE_PROOF_ENTRY;
use crate::ShredError;

pub type Hash = [u8; 32];
pub type ProofEntry = [u8; SIZE_OF_MERKLE_PROOF_ENTRY];

const PREFIX_LEAF: &[u8] = b"\x00SOLANA_MERKLE_SHREDS_LEAF";
const PREFIX_NODE: &[u8] = b"\x01SOLANA_MERKLE_SHREDS_NODE";

pub fn leaf(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(PREFIX_LEAF);
    h.update(data);
    h.finalize().into()
}

pub fn join(node: &[u8], other: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(PREFIX_NODE);
    h.update(&node[..SIZE_OF_MERKLE_PROOF_ENTRY]);
    h.update(&other[..SIZE_OF_MERKLE_PROOF_ENTRY]);
    h.finalize().into()
}

/// Fold a proof (concatenated 20-byte entries) from the leaf at `index` up to the root.
pub fn root_from_proof(index: usize, leaf: Hash, proof: &[u8]) -> Result<Hash, ShredError> {
    let mut index = index;
    let mut node = leaf;
    for other in proof.chunks_exact(SIZE_OF_MERKLE_PROOF_ENTRY) {
        node = if index % 2 == 0 {
            join(&node, other)
        } else {
            join(other, &node)
        };
        index >>= 1;
    }
    if index != 0 {
        return Err(ShredError::MerkleProof {
            reason: "leaf index beyond the proof depth",
        });
    }
    Ok(node)
}

/// Number of proof entries for a tree of `num_leaves` leaves.
pub fn proof_size(num_leaves: usize) -> u8 {
    let mut size = 0u8;
    let mut n = num_leaves.max(1);
    while n > 1 {
        n = n.div_ceil(2);
        size += 1;
    }
    size
}

/// All levels of the tree, leaves first, the root last.
pub fn make_tree(leaves: &[Hash]) -> Vec<Hash> {
    let mut nodes = leaves.to_vec();
    let mut size = nodes.len();
    let mut offset = 0;
    while size > 1 {
        for index in (offset..offset + size).step_by(2) {
            let other = (index + 1).min(offset + size - 1);
            let parent = join(&nodes[index], &nodes[other]);
            nodes.push(parent);
        }
        offset += size;
        size = nodes.len() - offset;
    }
    nodes
}

/// The proof of leaf `index` in a tree of `num_leaves` leaves built by [`make_tree`].
pub fn make_proof(index: usize, num_leaves: usize, tree: &[Hash]) -> Option<Vec<ProofEntry>> {
    if index >= num_leaves {
        return None;
    }
    let (mut index, mut size, mut offset) = (index, num_leaves, 0usize);
    let mut proof = Vec::new();
    while size > 1 {
        let node = tree.get(offset + (index ^ 1).min(size - 1))?;
        let mut entry = [0u8; SIZE_OF_MERKLE_PROOF_ENTRY];
        entry.copy_from_slice(&node[..SIZE_OF_MERKLE_PROOF_ENTRY]);
        proof.push(entry);
        offset += size;
        size = size.div_ceil(2);
        index >>= 1;
    }
    (offset + 1 == tree.len()).then_some(proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proof_of_every_tree_size_folds_to_the_root() {
        for n in 1..=70usize {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf(&(i as u64).to_le_bytes())).collect();
            let tree = make_tree(&leaves);
            let root = *tree.last().unwrap();
            for (i, l) in leaves.iter().enumerate() {
                let proof = make_proof(i, n, &tree).unwrap();
                assert_eq!(proof.len(), proof_size(n) as usize);
                let flat: Vec<u8> = proof.concat();
                assert_eq!(root_from_proof(i, *l, &flat).unwrap(), root, "n={n} i={i}");
                // a wrong index does not give the root
                if n > 1 {
                    let other = (i + 1) % n;
                    assert_ne!(root_from_proof(other, *l, &flat).ok(), Some(root));
                }
            }
        }
    }
}

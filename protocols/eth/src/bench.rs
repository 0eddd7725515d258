//! Deterministic workloads for the verification benchmarks (`benches/eth.rs` and
//! `catchup bench eth`): real-sized trie nodes, a header chain, receipt lists. Each
//! workload also offers the keccak-only pass over the same bytes, so the verification
//! overhead above raw hashing can be reported as a ratio.

use alloy_primitives::{keccak256, Address, Bloom, Bytes, B256, B64, U256};

use crate::trie::{verify_node, TrieBuilder};
use crate::types::{encode_receipts, Account, Header, Log, Receipt, ReceiptOutcome, TxType};
use crate::verify::{receipts_root, verify_parent_hash};

/// Small deterministic generator (splitmix64).
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for c in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        out
    }
}

/// The hashed nodes of a state trie of `accounts` accounts: branch nodes (up to 532
/// bytes) and account leaves (~100 bytes), each with its hash.
pub fn state_trie_nodes(accounts: usize, seed: u64) -> Vec<(B256, Bytes)> {
    let mut rng = SplitMix::new(seed);
    let leaves: Vec<(B256, Vec<u8>)> = (0..accounts)
        .map(|_| {
            let a = Account {
                nonce: rng.next_u64() % 1000,
                balance: U256::from(rng.next_u64()) * U256::from(1_000_000_007u64),
                storage_root: if rng.next_u64() % 4 == 0 {
                    B256::from(rng.bytes::<32>())
                } else {
                    crate::EMPTY_ROOT
                },
                code_hash: if rng.next_u64() % 4 == 0 {
                    B256::from(rng.bytes::<32>())
                } else {
                    crate::EMPTY_CODE_HASH
                },
            };
            (B256::from(rng.bytes::<32>()), a.encode())
        })
        .collect();
    TrieBuilder::new(leaves.iter().map(|(k, v)| (k.0, v)))
        .into_nodes()
        .into_iter()
        .collect()
}

/// Decode and keccak-check every node; returns the number verified.
pub fn verify_nodes(nodes: &[(B256, Bytes)]) -> usize {
    nodes
        .iter()
        .filter(|(h, n)| verify_node(*h, n).is_ok())
        .count()
}

/// keccak only, over the same bytes; returns a value that depends on every hash.
pub fn keccak_all<T: AsRef<[u8]>>(items: &[T]) -> u64 {
    items.iter().fold(0u64, |acc, n| {
        acc ^ u64::from_le_bytes(keccak256(n.as_ref())[..8].try_into().unwrap())
    })
}

/// A chain of `count` post-Cancun headers (encoded), linked by parent hash.
pub fn header_chain(count: usize, seed: u64) -> Vec<Bytes> {
    let mut rng = SplitMix::new(seed);
    let mut parent = B256::ZERO;
    let mut out = Vec::with_capacity(count);
    for n in 0..count as u64 {
        let h = Header {
            parent_hash: parent,
            ommers_hash: crate::EMPTY_OMMERS_HASH,
            beneficiary: Address::from(rng.bytes::<20>()),
            state_root: B256::from(rng.bytes::<32>()),
            transactions_root: B256::from(rng.bytes::<32>()),
            receipts_root: B256::from(rng.bytes::<32>()),
            logs_bloom: Bloom::from(rng.bytes::<256>()),
            difficulty: U256::ZERO,
            number: 20_000_000 + n,
            gas_limit: 30_000_000,
            gas_used: rng.next_u64() % 30_000_000,
            timestamp: 1_700_000_000 + 12 * n,
            extra_data: Bytes::from(rng.bytes::<16>().to_vec()),
            mix_hash: B256::from(rng.bytes::<32>()),
            nonce: B64::ZERO,
            base_fee_per_gas: Some(rng.next_u64() % 100_000_000_000),
            withdrawals_root: Some(B256::from(rng.bytes::<32>())),
            blob_gas_used: Some(131072),
            excess_blob_gas: Some(0),
            parent_beacon_block_root: Some(B256::from(rng.bytes::<32>())),
            requests_hash: None,
            later_fields: Vec::new(),
        };
        let enc = h.encode();
        parent = keccak256(&enc);
        out.push(Bytes::from(enc));
    }
    out
}

/// Decode each header, hash it and check its link to the previous one; returns the number
/// validated.
pub fn validate_header_chain(encoded: &[Bytes]) -> usize {
    let mut prev: Option<(B256, u64)> = None;
    let mut ok = 0;
    for e in encoded {
        let Ok(h) = Header::decode(e) else { break };
        let hash = keccak256(e);
        if let Some((ph, pn)) = prev {
            if verify_parent_hash(ph, pn, &h).is_err() {
                break;
            }
        }
        prev = Some((hash, h.number));
        ok += 1;
    }
    ok
}

/// `blocks` receipt lists (eth/68 wire form) of `per_block` receipts each, with their roots.
pub fn receipt_lists(blocks: usize, per_block: usize, seed: u64) -> Vec<(B256, Bytes)> {
    let mut rng = SplitMix::new(seed);
    (0..blocks)
        .map(|_| {
            let mut gas = 0u64;
            let rs: Vec<Receipt> = (0..per_block)
                .map(|_| {
                    gas += 21_000 + rng.next_u64() % 200_000;
                    let logs: Vec<Log> = (0..rng.next_u64() % 3)
                        .map(|_| Log {
                            address: Address::from(rng.bytes::<20>()),
                            topics: (0..1 + rng.next_u64() % 3)
                                .map(|_| B256::from(rng.bytes::<32>()))
                                .collect(),
                            data: Bytes::from(rng.bytes::<64>().to_vec()),
                        })
                        .collect();
                    Receipt {
                        tx_type: Some(TxType::Eip1559),
                        outcome: ReceiptOutcome::Status(true),
                        cumulative_gas_used: gas,
                        logs_bloom: crate::logs_bloom(&logs),
                        logs,
                    }
                })
                .collect();
            (receipts_root(&rs), Bytes::from(encode_receipts(&rs)))
        })
        .collect()
}

/// Decode each receipt list and check its root (as a sync engine does with a receipts
/// response); returns the number of roots verified.
pub fn verify_receipt_lists(lists: &[(B256, Bytes)]) -> usize {
    lists
        .iter()
        .filter(|(root, enc)| {
            let h = Header {
                receipts_root: *root,
                ..Default::default()
            };
            crate::verify::verify_receipts_encoded(&h, enc).is_ok()
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_verify() {
        let nodes = state_trie_nodes(2000, 1);
        assert_eq!(verify_nodes(&nodes), nodes.len());
        let sizes: Vec<usize> = nodes.iter().map(|n| n.1.len()).collect();
        assert!(sizes.iter().any(|s| *s >= 500) && sizes.iter().any(|s| *s <= 120));
        let headers = header_chain(100, 2);
        assert_eq!(validate_header_chain(&headers), 100);
        let rl = receipt_lists(10, 20, 3);
        assert_eq!(verify_receipt_lists(&rl), 10);
        let mut bad = rl.clone();
        bad[3].0 = B256::ZERO;
        assert_eq!(verify_receipt_lists(&bad), 9);
    }
}

//! Sans-IO Ethereum data layer: RLP, Merkle-Patricia tries, blocks, receipts, era1, snap
//! range proofs. Bytes in, typed values or typed errors out.

pub mod bench;
pub mod blocktest;
pub mod era1;
pub mod proof;
pub mod rlp;
pub mod state;
pub mod trie;
pub mod types;
pub mod verify;

pub use alloy_primitives::{keccak256, Address, Bloom, Bytes, B256, B64, U256};

pub use proof::{verify_proof, verify_range_proof, ProofError};
pub use rlp::RlpError;
pub use trie::{
    child_refs, hex_prefix_decode, hex_prefix_encode, leaf_values, node_contents, ordered_root, secure_trie_root,
    trie_root, verify_node, ChildRef, Nibbles, Node, NodeContents, NodeError, NodeRef, RangeResponse, TrieBuilder,
};
pub use types::{
    decode_block_sequence, decode_receipts, decode_receipts_eth69, encode_receipts, encode_receipts_eth69, logs_bloom,
    Account, Block, BlockBody, Header, Log, Receipt, ReceiptOutcome, TxEnvelope, TxType, Withdrawal, EMPTY_CODE_HASH,
    EMPTY_OMMERS_HASH, EMPTY_ROOT,
};
pub use verify::{
    ommers_hash, receipts_root, transactions_root, verify_block, verify_body, verify_header_chain, verify_header_hash,
    verify_ommers_hash, verify_parent_hash, verify_parent_link, verify_receipts, verify_transactions_root,
    verify_withdrawals, withdrawals_root, Field, VerifyError,
};

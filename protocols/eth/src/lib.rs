//! Sans-IO Ethereum data layer: RLP, Merkle-Patricia tries, blocks, receipts, era1, snap
//! range proofs. Bytes in, typed values or typed errors out; no sockets, files or runtime.
//!
//! - [`rlp`]: strict canonical RLP reading ([`rlp::Reader`], [`rlp::Item`]) with offsets in
//!   every [`RlpError`]; encoding through `alloy_rlp`.
//! - [`types`]: [`Header`] (every fork through Prague), [`TxEnvelope`] (typed, opaque, exact
//!   bytes), [`Withdrawal`], [`BlockBody`], [`Block`], [`Receipt`] (consensus, block-list and
//!   eth/69 forms), [`Account`] (full and snap slim forms) and
//!   [`AccountView`] (lenient, re-encodes a peer's bytes exactly).
//! - [`verify`]: header hash, parent link, header chain, transactions root, ommers hash,
//!   withdrawals root, receipts root; errors name the block number and [`Field`].
//! - [`trie`]: [`Node`] decode/encode, [`child_refs`] / [`node_contents`] for walking a trie
//!   being downloaded, [`verify_node`], roots ([`trie_root`], [`ordered_root`]) and
//!   [`TrieBuilder`] (every node by hash, proofs, snap ranges for serving).
//! - [`proof`]: [`verify_proof`] and [`verify_range_proof`] (go-ethereum semantics).
//! - [`era1`]: e2store records, snappy framing with size limits, blocks, accumulator, index.
//! - [`state`]: geth dumps, genesis allocations, genesis headers from `genesis.json`.
//! - [`blocktest`]: BlockchainTests checks without execution.
//! - [`keccak4`]: keccak256 of four independent inputs at once (AVX2).
//! - [`mod@bench`]: deterministic workloads for the benchmarks.

pub mod bench;
pub mod blocktest;
pub mod era1;
pub mod keccak4;
pub mod proof;
pub mod rlp;
pub mod state;
pub mod trie;
pub mod types;
pub mod verify;

pub use alloy_primitives::{keccak256, Address, Bloom, Bytes, B256, B64, U256};

pub use proof::{
    verify_proof, verify_range_proof, verify_range_proof_interior, verify_whole_tries_interior,
    InteriorSubtrie, ProofError, RangeInterior, WholeTrie,
};
pub use rlp::RlpError;
pub use trie::{
    account_leaves, child_refs, hex_prefix_decode, hex_prefix_encode, leaf_values, nibble,
    node_contents, ordered_root, secure_trie_root, trie_root, verify_node, ChildRef, Nibbles, Node,
    NodeContents, NodeError, NodeRef, RangeResponse, TrieBuilder,
};
pub use types::{
    decode_block_sequence, decode_header_list, decode_receipts, decode_receipts_eth69,
    encode_receipts, encode_receipts_eth69, logs_bloom, Account, AccountRoots, AccountView, Block,
    BlockBody, Header, HeaderRef, Log, Receipt, ReceiptOutcome, TxEnvelope, TxType, Withdrawal,
    EMPTY_CODE_HASH, EMPTY_OMMERS_HASH, EMPTY_ROOT,
};
pub use verify::{
    body_roots_encoded, expected_base_fee, ommers_hash, receipts_root, receipts_root_encoded,
    transactions_root, verify_block, verify_body, verify_body_encoded, verify_hashed_header_chain,
    verify_header_chain, verify_header_hash, verify_header_rules, verify_ommers_hash,
    verify_parent_hash, verify_parent_link, verify_receipts, verify_receipts_encoded,
    verify_transactions_root, verify_withdrawals, withdrawals_root, BlockDataError, BodyRoots,
    Field, VerifyError,
};

//! Validation of headers, bodies and receipts against header commitments. Every failure
//! names the block number and the field.

use alloy_primitives::{keccak256, B256};

use crate::trie::ordered_root;
use crate::types::{Block, BlockBody, Header, Receipt};

/// Which commitment or rule failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    HeaderHash,
    ParentHash,
    Number,
    TransactionsRoot,
    OmmersHash,
    WithdrawalsRoot,
    ReceiptsRoot,
    GasUsed,
    GasLimit,
    Timestamp,
    BaseFee,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::HeaderHash => "hash",
            Field::ParentHash => "parentHash",
            Field::Number => "number",
            Field::TransactionsRoot => "transactionsRoot",
            Field::OmmersHash => "ommersHash",
            Field::WithdrawalsRoot => "withdrawalsRoot",
            Field::ReceiptsRoot => "receiptsRoot",
            Field::GasUsed => "gasUsed",
            Field::GasLimit => "gasLimit",
            Field::Timestamp => "timestamp",
            Field::BaseFee => "baseFeePerGas",
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("block {number}: {field} mismatch: header has {expected}, computed {got}")]
    Mismatch {
        number: u64,
        field: Field,
        expected: B256,
        got: B256,
    },
    #[error("block {number}: number does not follow parent {parent_number}")]
    NumberGap { number: u64, parent_number: u64 },
    #[error(
        "block {number}: withdrawals present in the body but the header has no withdrawalsRoot"
    )]
    UnexpectedWithdrawals { number: u64 },
    #[error("block {number}: header has a withdrawalsRoot but the body has no withdrawals")]
    MissingWithdrawals { number: u64 },
    #[error("block {number}: {field} is {got}, the rule allows {allowed}")]
    Rule {
        number: u64,
        field: Field,
        got: u128,
        allowed: String,
    },
}

impl VerifyError {
    pub fn number(&self) -> u64 {
        match *self {
            VerifyError::Mismatch { number, .. }
            | VerifyError::NumberGap { number, .. }
            | VerifyError::UnexpectedWithdrawals { number }
            | VerifyError::MissingWithdrawals { number }
            | VerifyError::Rule { number, .. } => number,
        }
    }
    pub fn field(&self) -> Field {
        match *self {
            VerifyError::Mismatch { field, .. } | VerifyError::Rule { field, .. } => field,
            VerifyError::NumberGap { .. } => Field::Number,
            VerifyError::UnexpectedWithdrawals { .. } | VerifyError::MissingWithdrawals { .. } => {
                Field::WithdrawalsRoot
            }
        }
    }
}

/// The header hashes to `expected` (the hash it was requested or announced by).
pub fn verify_header_hash(header: &Header, expected: B256) -> Result<(), VerifyError> {
    let got = header.hash();
    if got != expected {
        return Err(VerifyError::Mismatch {
            number: header.number,
            field: Field::HeaderHash,
            expected,
            got,
        });
    }
    Ok(())
}

/// `child` follows `parent`: numbers are consecutive and `child.parent_hash == hash(parent)`.
pub fn verify_parent_link(parent: &Header, child: &Header) -> Result<(), VerifyError> {
    verify_parent_hash(parent.hash(), parent.number, child)
}

/// Like [`verify_parent_link`] with the parent's hash already known.
pub fn verify_parent_hash(
    parent_hash: B256,
    parent_number: u64,
    child: &Header,
) -> Result<(), VerifyError> {
    if parent_number.checked_add(1) != Some(child.number) {
        return Err(VerifyError::NumberGap {
            number: child.number,
            parent_number,
        });
    }
    if child.parent_hash != parent_hash {
        return Err(VerifyError::Mismatch {
            number: child.number,
            field: Field::ParentHash,
            expected: child.parent_hash,
            got: parent_hash,
        });
    }
    Ok(())
}

/// A batch of headers in ascending order forms one hash chain. Returns the hash of the
/// last header (or `None` for an empty batch).
pub fn verify_header_chain(headers: &[Header]) -> Result<Option<B256>, VerifyError> {
    let mut prev: Option<(B256, u64)> = None;
    for h in headers {
        if let Some((hash, number)) = prev {
            verify_parent_hash(hash, number, h)?;
        }
        prev = Some((h.hash(), h.number));
    }
    Ok(prev.map(|p| p.0))
}

/// Like [`verify_header_chain`] for headers whose hashes are already known (e.g. from
/// [`crate::types::decode_header_list`]); returns the last hash.
pub fn verify_hashed_header_chain(headers: &[(Header, B256)]) -> Result<Option<B256>, VerifyError> {
    for w in headers.windows(2) {
        verify_parent_hash(w[0].1, w[0].0.number, &w[1].0)?;
    }
    Ok(headers.last().map(|h| h.1))
}

/// Transactions root of a body.
pub fn transactions_root(body: &BlockBody) -> B256 {
    let items: Vec<&[u8]> = body
        .transactions
        .iter()
        .map(|t| t.encoded.as_ref())
        .collect();
    ordered_root(&items)
}

/// keccak of the RLP list of ommer headers.
pub fn ommers_hash(ommers: &[Header]) -> B256 {
    let mut payload = Vec::new();
    for o in ommers {
        o.encode_to(&mut payload);
    }
    let mut out = Vec::with_capacity(payload.len() + 9);
    crate::rlp::list_header(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    keccak256(out)
}

/// Withdrawals root.
pub fn withdrawals_root(withdrawals: &[crate::types::Withdrawal]) -> B256 {
    let items: Vec<Vec<u8>> = withdrawals.iter().map(|w| w.encode_vec()).collect();
    ordered_root(&items)
}

/// Receipts root (over the consensus encodings).
pub fn receipts_root(receipts: &[Receipt]) -> B256 {
    let items: Vec<Vec<u8>> = receipts.iter().map(|r| r.encode_consensus()).collect();
    ordered_root(&items)
}

fn check(number: u64, field: Field, expected: B256, got: B256) -> Result<(), VerifyError> {
    if expected != got {
        return Err(VerifyError::Mismatch {
            number,
            field,
            expected,
            got,
        });
    }
    Ok(())
}

/// Transactions root only.
pub fn verify_transactions_root(header: &Header, body: &BlockBody) -> Result<(), VerifyError> {
    check(
        header.number,
        Field::TransactionsRoot,
        header.transactions_root,
        transactions_root(body),
    )
}

/// Ommers hash only.
pub fn verify_ommers_hash(header: &Header, body: &BlockBody) -> Result<(), VerifyError> {
    check(
        header.number,
        Field::OmmersHash,
        header.ommers_hash,
        ommers_hash(&body.ommers),
    )
}

/// Withdrawals root only (presence must agree with the header).
pub fn verify_withdrawals(header: &Header, body: &BlockBody) -> Result<(), VerifyError> {
    match (header.withdrawals_root, &body.withdrawals) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(VerifyError::UnexpectedWithdrawals {
            number: header.number,
        }),
        (Some(_), None) => Err(VerifyError::MissingWithdrawals {
            number: header.number,
        }),
        (Some(root), Some(ws)) => check(
            header.number,
            Field::WithdrawalsRoot,
            root,
            withdrawals_root(ws),
        ),
    }
}

/// The body matches the header: transactions root, ommers hash, withdrawals root.
pub fn verify_body(header: &Header, body: &BlockBody) -> Result<(), VerifyError> {
    verify_transactions_root(header, body)?;
    verify_ommers_hash(header, body)?;
    verify_withdrawals(header, body)
}

/// A block's header commitments over its own body.
pub fn verify_block(block: &Block) -> Result<(), VerifyError> {
    verify_body(&block.header, &block.body)
}

/// The receipts match the header's receipts root.
pub fn verify_receipts(header: &Header, receipts: &[Receipt]) -> Result<(), VerifyError> {
    check(
        header.number,
        Field::ReceiptsRoot,
        header.receipts_root,
        receipts_root(receipts),
    )
}

/// The ordered-trie root of a list of typed-or-legacy elements as sent on the wire
/// (transactions, receipts): each legacy element's list bytes, each typed element's string
/// payload (its envelope). Only the list structure is checked; a matching root
/// authenticates the bytes, whatever types they hold.
fn typed_list_root(
    item: &crate::rlp::Item<'_>,
    limit: usize,
) -> Result<B256, crate::rlp::RlpError> {
    let mut l = item.list()?;
    let mut values: Vec<&[u8]> = Vec::new();
    while let Some(it) = l.next_opt()? {
        if values.len() >= limit {
            return Err(crate::rlp::RlpError::TooLong {
                offset: item.offset,
                len: values.len() + 1,
                limit,
            });
        }
        values.push(if it.is_list { it.raw } else { it.payload });
    }
    Ok(ordered_root(&values))
}

/// Receipts root straight from a block's receipt list as sent on the wire (eth/66–68,
/// era1), without decoding the receipts (see `typed_list_root`).
pub fn receipts_root_encoded(list_rlp: &[u8]) -> Result<B256, crate::rlp::RlpError> {
    typed_list_root(
        &crate::rlp::parse_exact(list_rlp)?,
        crate::types::MAX_TXS_PER_BLOCK,
    )
}

/// What a body as sent on the wire (`[transactions, ommers, withdrawals?]`) commits to,
/// computed without decoding its transactions: a header's roots can be checked against it
/// whatever transaction types the body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRoots {
    pub transactions_root: B256,
    pub ommers_hash: B256,
    /// `None` when the body has no withdrawals list (before Shanghai).
    pub withdrawals_root: Option<B256>,
}

/// The roots of a body as sent on the wire (see [`BodyRoots`]).
pub fn body_roots_encoded(body_rlp: &[u8]) -> Result<BodyRoots, crate::rlp::RlpError> {
    let item = crate::rlp::parse_exact(body_rlp)?;
    let f = item.items(3)?;
    if f.len() < 2 {
        return Err(crate::rlp::RlpError::WrongItemCount {
            offset: item.offset,
            count: f.len(),
            expected: "2 or 3",
        });
    }
    if !f[1].is_list {
        return Err(crate::rlp::RlpError::ExpectedList {
            offset: f[1].offset,
        });
    }
    let withdrawals_root = match f.get(2) {
        None => None,
        Some(w) => {
            let ws = w.items(crate::types::MAX_WITHDRAWALS_PER_BLOCK)?;
            let raws: Vec<&[u8]> = ws.iter().map(|x| x.raw).collect();
            Some(ordered_root(&raws))
        }
    };
    Ok(BodyRoots {
        transactions_root: typed_list_root(&f[0], crate::types::MAX_TXS_PER_BLOCK)?,
        ommers_hash: keccak256(f[1].raw),
        withdrawals_root,
    })
}

/// A body or receipt list from the wire that does not decode, or does not match its header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockDataError {
    #[error("block {number}: {what} does not decode: {source}")]
    Decode {
        number: u64,
        what: &'static str,
        source: crate::rlp::RlpError,
    },
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

impl BlockDataError {
    pub fn number(&self) -> u64 {
        match self {
            BlockDataError::Decode { number, .. } => *number,
            BlockDataError::Verify(e) => e.number(),
        }
    }
}

/// Decode a receipt list as received (eth/66–68 form) and check it against the header's
/// receipts root, hashing the received bytes directly (strict decoding guarantees they
/// are the canonical encoding).
pub fn verify_receipts_encoded(
    header: &Header,
    list_rlp: &[u8],
) -> Result<Vec<Receipt>, BlockDataError> {
    let dec = |source| BlockDataError::Decode {
        number: header.number,
        what: "receipts",
        source,
    };
    let receipts = crate::types::decode_receipts(list_rlp).map_err(dec)?;
    let got = receipts_root_encoded(list_rlp).map_err(dec)?;
    check(
        header.number,
        Field::ReceiptsRoot,
        header.receipts_root,
        got,
    )?;
    Ok(receipts)
}

/// Decode a body as received and check it against the header (transactions root, ommers
/// hash, withdrawals root).
pub fn verify_body_encoded(header: &Header, body_rlp: &[u8]) -> Result<BlockBody, BlockDataError> {
    let body = BlockBody::decode(body_rlp).map_err(|source| BlockDataError::Decode {
        number: header.number,
        what: "body",
        source,
    })?;
    verify_body(header, &body)?;
    Ok(body)
}

/// EIP-1559: the base fee of the first London block.
pub const INITIAL_BASE_FEE: u64 = 1_000_000_000;
/// EIP-1559 elasticity multiplier and base fee change denominator.
pub const ELASTICITY_MULTIPLIER: u64 = 2;
pub const BASE_FEE_CHANGE_DENOMINATOR: u128 = 8;
/// Gas limit bounds (yellow paper / EIP-1559).
pub const GAS_LIMIT_BOUND_DIVISOR: u64 = 1024;
pub const MIN_GAS_LIMIT: u64 = 5000;

/// The base fee a child of `parent` must carry (`parent` must be a London header, i.e.
/// have a base fee; at the fork block itself the base fee is [`INITIAL_BASE_FEE`]).
pub fn expected_base_fee(parent: &Header) -> Option<u64> {
    let parent_fee = parent.base_fee_per_gas? as u128;
    let target = (parent.gas_limit / ELASTICITY_MULTIPLIER) as u128;
    let used = parent.gas_used as u128;
    if target == 0 {
        return Some(parent_fee as u64);
    }
    let fee = match used.cmp(&target) {
        std::cmp::Ordering::Equal => parent_fee,
        std::cmp::Ordering::Greater => {
            let delta =
                (parent_fee * (used - target) / target / BASE_FEE_CHANGE_DENOMINATOR).max(1);
            parent_fee + delta
        }
        std::cmp::Ordering::Less => {
            let delta = parent_fee * (target - used) / target / BASE_FEE_CHANGE_DENOMINATOR;
            parent_fee.saturating_sub(delta)
        }
    };
    u64::try_from(fee).ok()
}

fn rule(number: u64, field: Field, got: u128, allowed: String) -> VerifyError {
    VerifyError::Rule {
        number,
        field,
        got,
        allowed,
    }
}

/// Header rules checkable without state: gas used within the limit, the gas limit moved
/// by less than 1/1024 of the parent's (and at least 5000), timestamps increasing, and the
/// EIP-1559 base fee. Call after [`verify_parent_link`].
pub fn verify_header_rules(parent: &Header, child: &Header) -> Result<(), VerifyError> {
    let n = child.number;
    if child.gas_used > child.gas_limit {
        return Err(rule(
            n,
            Field::GasUsed,
            child.gas_used as u128,
            format!("at most gasLimit {}", child.gas_limit),
        ));
    }
    if child.timestamp <= parent.timestamp {
        return Err(rule(
            n,
            Field::Timestamp,
            child.timestamp as u128,
            format!("above the parent's {}", parent.timestamp),
        ));
    }
    // At the London fork block the gas target doubles: the parent's limit counts twice.
    let parent_limit = match (parent.base_fee_per_gas, child.base_fee_per_gas) {
        (None, Some(_)) => parent.gas_limit.saturating_mul(ELASTICITY_MULTIPLIER),
        _ => parent.gas_limit,
    };
    let bound = parent_limit / GAS_LIMIT_BOUND_DIVISOR;
    if child.gas_limit.abs_diff(parent_limit) >= bound || child.gas_limit < MIN_GAS_LIMIT {
        return Err(rule(
            n,
            Field::GasLimit,
            child.gas_limit as u128,
            format!(
                "within {parent_limit} ± {} and at least {MIN_GAS_LIMIT}",
                bound.saturating_sub(1)
            ),
        ));
    }
    match (parent.base_fee_per_gas, child.base_fee_per_gas) {
        (_, None) => {
            if parent.base_fee_per_gas.is_some() {
                return Err(rule(
                    n,
                    Field::BaseFee,
                    0,
                    "a base fee (the parent has one)".into(),
                ));
            }
        }
        (None, Some(fee)) => {
            if fee != INITIAL_BASE_FEE {
                return Err(rule(
                    n,
                    Field::BaseFee,
                    fee as u128,
                    format!("{INITIAL_BASE_FEE} at the London block"),
                ));
            }
        }
        (Some(_), Some(fee)) => {
            let expected = expected_base_fee(parent);
            if expected != Some(fee) {
                return Err(rule(
                    n,
                    Field::BaseFee,
                    fee as u128,
                    format!("{expected:?}"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod encoded_roots_tests {
    use super::*;
    use crate::types::{TxEnvelope, Withdrawal};

    #[test]
    fn body_roots_from_the_wire_bytes_equal_the_decoded_bodys() {
        // A typed (EIP-1559) transaction, an ommer and withdrawals.
        let tx = TxEnvelope::decode(&[
            0x02, 0xcc, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0xc0, 0x80, 0x80, 0x80,
        ])
        .unwrap();
        let body = BlockBody {
            transactions: vec![tx],
            ommers: vec![Header {
                number: 3,
                ..Default::default()
            }],
            withdrawals: Some(vec![Withdrawal::default(), Withdrawal::default()]),
        };
        let r = body_roots_encoded(&body.encode()).unwrap();
        assert_eq!(r.transactions_root, transactions_root(&body));
        assert_eq!(r.ommers_hash, ommers_hash(&body.ommers));
        assert_eq!(
            r.withdrawals_root,
            Some(withdrawals_root(body.withdrawals.as_deref().unwrap()))
        );
        // Before Shanghai: no withdrawals list.
        let old = BlockBody {
            withdrawals: None,
            ..body
        };
        assert_eq!(
            body_roots_encoded(&old.encode()).unwrap().withdrawals_root,
            None
        );
        // Not a body: one field, or ommers that are not a list.
        assert!(body_roots_encoded(&[0xc1, 0xc0]).is_err());
        assert!(body_roots_encoded(&[0xc2, 0xc0, 0x80]).is_err());
    }
}

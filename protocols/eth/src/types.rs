//! Blocks, transactions (typed but opaque), withdrawals, receipts and accounts.

use alloy_primitives::{keccak256, Address, Bloom, Bytes, B256, B64, U256};
use alloy_rlp::Encodable;

use crate::rlp::{self, encode_bytes, list_header, parse_exact, Item, Reader, RlpError};

/// keccak256(rlp("")) — the root of an empty trie.
pub const EMPTY_ROOT: B256 = alloy_trie::EMPTY_ROOT_HASH;
/// keccak256("") — the code hash of an account without code.
pub const EMPTY_CODE_HASH: B256 = alloy_primitives::KECCAK256_EMPTY;
/// keccak256(rlp([])) — the ommers hash of a block without ommers.
pub const EMPTY_OMMERS_HASH: B256 =
    alloy_primitives::b256!("1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347");

/// Limits on lists inside one block (far above anything a real block carries).
pub const MAX_TXS_PER_BLOCK: usize = 1 << 20;
pub const MAX_OMMERS_PER_BLOCK: usize = 16;
pub const MAX_WITHDRAWALS_PER_BLOCK: usize = 1 << 16;
pub const MAX_LOGS_PER_RECEIPT: usize = 1 << 16;
pub const MAX_TOPICS_PER_LOG: usize = 4;
pub const MAX_EXTRA_DATA_BYTES: usize = 1024;

/// A block header of any fork. Later-fork fields are `Some` exactly when they are present
/// in the encoding (they are appended in order); fields of forks after Prague, which this
/// crate does not name yet, are kept verbatim in `later_fields`, so such a header still
/// decodes, re-encodes to the same bytes and hashes to its block hash.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    pub parent_hash: B256,
    pub ommers_hash: B256,
    pub beneficiary: Address,
    pub state_root: B256,
    pub transactions_root: B256,
    pub receipts_root: B256,
    pub logs_bloom: Bloom,
    pub difficulty: U256,
    pub number: u64,
    pub gas_limit: u64,
    pub gas_used: u64,
    pub timestamp: u64,
    pub extra_data: Bytes,
    pub mix_hash: B256,
    pub nonce: B64,
    /// London.
    pub base_fee_per_gas: Option<u64>,
    /// Shanghai.
    pub withdrawals_root: Option<B256>,
    /// Cancun.
    pub blob_gas_used: Option<u64>,
    /// Cancun.
    pub excess_blob_gas: Option<u64>,
    /// Cancun.
    pub parent_beacon_block_root: Option<B256>,
    /// Prague.
    pub requests_hash: Option<B256>,
    /// Fields after `requests_hash` (forks after Prague), each one RLP item as received.
    pub later_fields: Vec<Bytes>,
}

/// A header's fields read in place from its bytes, checked as [`Header::from_item`]
/// checks them, without copying the bloom, the extra data or later fields (a sync that
/// keeps the received bytes needs only the hashes and the number).
#[derive(Debug, Clone)]
pub struct HeaderRef<'a> {
    pub parent_hash: B256,
    pub ommers_hash: B256,
    pub beneficiary: Address,
    pub state_root: B256,
    pub transactions_root: B256,
    pub receipts_root: B256,
    pub logs_bloom: &'a [u8; 256],
    pub difficulty: U256,
    pub number: u64,
    pub gas_limit: u64,
    pub gas_used: u64,
    pub timestamp: u64,
    pub extra_data: &'a [u8],
    pub mix_hash: B256,
    pub nonce: B64,
    pub base_fee_per_gas: Option<u64>,
    pub withdrawals_root: Option<B256>,
    pub blob_gas_used: Option<u64>,
    pub excess_blob_gas: Option<u64>,
    pub parent_beacon_block_root: Option<B256>,
    pub requests_hash: Option<B256>,
    /// The items after `requests_hash`, each checked to be one RLP item.
    later_fields: Reader<'a>,
}

impl<'a> HeaderRef<'a> {
    /// Read one canonical header spanning all of `buf`.
    pub fn decode(buf: &'a [u8]) -> Result<Self, RlpError> {
        Self::from_item(&parse_exact(buf)?)
    }

    /// Read a header from an already-parsed item.
    pub fn from_item(item: &Item<'a>) -> Result<Self, RlpError> {
        let mut r = item.list()?;
        let mut h = HeaderRef {
            parent_hash: r.b256()?,
            ommers_hash: r.b256()?,
            beneficiary: r.address()?,
            state_root: r.b256()?,
            transactions_root: r.b256()?,
            receipts_root: r.b256()?,
            logs_bloom: r.next()?.fixed_ref()?,
            difficulty: r.u256()?,
            number: r.u64()?,
            gas_limit: r.u64()?,
            gas_used: r.u64()?,
            timestamp: r.u64()?,
            extra_data: {
                let it = r.next()?;
                let b = it.bytes()?;
                if b.len() > MAX_EXTRA_DATA_BYTES {
                    return Err(RlpError::TooLong {
                        offset: it.offset,
                        len: b.len(),
                        limit: MAX_EXTRA_DATA_BYTES,
                    });
                }
                b
            },
            mix_hash: r.b256()?,
            nonce: B64::from(r.next()?.fixed::<8>()?),
            base_fee_per_gas: None,
            withdrawals_root: None,
            blob_gas_used: None,
            excess_blob_gas: None,
            parent_beacon_block_root: None,
            requests_hash: None,
            later_fields: Reader::sequence(&[]),
        };
        if let Some(it) = r.next_opt()? {
            h.base_fee_per_gas = Some(it.u64()?);
        }
        if let Some(it) = r.next_opt()? {
            h.withdrawals_root = Some(it.b256()?);
        }
        if let Some(it) = r.next_opt()? {
            h.blob_gas_used = Some(it.u64()?);
        }
        if let Some(it) = r.next_opt()? {
            h.excess_blob_gas = Some(it.u64()?);
        }
        if let Some(it) = r.next_opt()? {
            h.parent_beacon_block_root = Some(it.b256()?);
        }
        if let Some(it) = r.next_opt()? {
            h.requests_hash = Some(it.b256()?);
        }
        h.later_fields = r.clone();
        while r.next_opt()?.is_some() {}
        r.finish()?;
        Ok(h)
    }

    /// The owned [`Header`].
    pub fn to_header(&self) -> Result<Header, RlpError> {
        let mut later = self.later_fields.clone();
        let mut later_fields = Vec::new();
        while let Some(it) = later.next_opt()? {
            later_fields.push(Bytes::copy_from_slice(it.raw));
        }
        Ok(Header {
            parent_hash: self.parent_hash,
            ommers_hash: self.ommers_hash,
            beneficiary: self.beneficiary,
            state_root: self.state_root,
            transactions_root: self.transactions_root,
            receipts_root: self.receipts_root,
            logs_bloom: Bloom::from(*self.logs_bloom),
            difficulty: self.difficulty,
            number: self.number,
            gas_limit: self.gas_limit,
            gas_used: self.gas_used,
            timestamp: self.timestamp,
            extra_data: Bytes::copy_from_slice(self.extra_data),
            mix_hash: self.mix_hash,
            nonce: self.nonce,
            base_fee_per_gas: self.base_fee_per_gas,
            withdrawals_root: self.withdrawals_root,
            blob_gas_used: self.blob_gas_used,
            excess_blob_gas: self.excess_blob_gas,
            parent_beacon_block_root: self.parent_beacon_block_root,
            requests_hash: self.requests_hash,
            later_fields,
        })
    }
}

impl Header {
    /// Decode one canonical header spanning all of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Header, RlpError> {
        Self::from_item(&parse_exact(buf)?)
    }

    /// Decode one header and hash its received bytes (equal to [`Header::hash`], since
    /// only the canonical encoding decodes) without re-encoding.
    pub fn decode_with_hash(buf: &[u8]) -> Result<(Header, B256), RlpError> {
        let h = Self::decode(buf)?;
        Ok((h, keccak256(buf)))
    }

    /// Decode a header from an already-parsed item.
    pub fn from_item(item: &Item<'_>) -> Result<Header, RlpError> {
        HeaderRef::from_item(item)?.to_header()
    }

    /// A later-fork field present while an earlier one is missing cannot be encoded
    /// (the encoding is positional).
    pub fn optional_fields_are_contiguous(&self) -> bool {
        let present = [
            self.base_fee_per_gas.is_some(),
            self.withdrawals_root.is_some(),
            self.blob_gas_used.is_some(),
            self.excess_blob_gas.is_some(),
            self.parent_beacon_block_root.is_some(),
            self.requests_hash.is_some(),
        ];
        present.windows(2).all(|w| w[0] || !w[1])
    }

    fn payload_length(&self) -> usize {
        let mut n = self.parent_hash.length()
            + self.ommers_hash.length()
            + self.beneficiary.length()
            + self.state_root.length()
            + self.transactions_root.length()
            + self.receipts_root.length()
            + self.logs_bloom.length()
            + self.difficulty.length()
            + self.number.length()
            + self.gas_limit.length()
            + self.gas_used.length()
            + self.timestamp.length()
            + self.extra_data.length()
            + self.mix_hash.length()
            + self.nonce.length();
        n += self.base_fee_per_gas.map_or(0, |v| v.length());
        n += self.withdrawals_root.map_or(0, |v| v.length());
        n += self.blob_gas_used.map_or(0, |v| v.length());
        n += self.excess_blob_gas.map_or(0, |v| v.length());
        n += self.parent_beacon_block_root.map_or(0, |v| v.length());
        n += self.requests_hash.map_or(0, |v| v.length());
        if self.requests_hash.is_some() {
            n += self.later_fields.iter().map(|f| f.len()).sum::<usize>();
        }
        n
    }

    /// Canonical RLP encoding appended to `out`. Optional fields are written in order
    /// while present; a gap (see [`Header::optional_fields_are_contiguous`]) stops there.
    pub fn encode_to(&self, out: &mut Vec<u8>) {
        list_header(self.payload_length_contiguous(), out);
        self.parent_hash.encode(out);
        self.ommers_hash.encode(out);
        self.beneficiary.encode(out);
        self.state_root.encode(out);
        self.transactions_root.encode(out);
        self.receipts_root.encode(out);
        self.logs_bloom.encode(out);
        self.difficulty.encode(out);
        self.number.encode(out);
        self.gas_limit.encode(out);
        self.gas_used.encode(out);
        self.timestamp.encode(out);
        self.extra_data.encode(out);
        self.mix_hash.encode(out);
        self.nonce.encode(out);
        let Some(v) = self.base_fee_per_gas else {
            return;
        };
        v.encode(out);
        let Some(v) = self.withdrawals_root else {
            return;
        };
        v.encode(out);
        let Some(v) = self.blob_gas_used else { return };
        v.encode(out);
        let Some(v) = self.excess_blob_gas else {
            return;
        };
        v.encode(out);
        let Some(v) = self.parent_beacon_block_root else {
            return;
        };
        v.encode(out);
        let Some(v) = self.requests_hash else { return };
        v.encode(out);
        for f in &self.later_fields {
            out.extend_from_slice(f);
        }
    }

    fn payload_length_contiguous(&self) -> usize {
        if self.optional_fields_are_contiguous() {
            return self.payload_length();
        }
        let mut c = self.clone();
        let mut stop = false;
        macro_rules! cut {
            ($f:ident) => {
                if stop || c.$f.is_none() {
                    stop = true;
                    c.$f = None;
                }
            };
        }
        cut!(base_fee_per_gas);
        cut!(withdrawals_root);
        cut!(blob_gas_used);
        cut!(excess_blob_gas);
        cut!(parent_beacon_block_root);
        cut!(requests_hash);
        let _ = stop;
        c.payload_length()
    }

    /// Canonical RLP encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(600);
        self.encode_to(&mut out);
        out
    }

    /// keccak256 of the RLP encoding: the block hash.
    pub fn hash(&self) -> B256 {
        keccak256(self.encode())
    }

    pub fn number(&self) -> u64 {
        self.number
    }
    pub fn parent_hash(&self) -> B256 {
        self.parent_hash
    }
    pub fn state_root(&self) -> B256 {
        self.state_root
    }
    pub fn transactions_root(&self) -> B256 {
        self.transactions_root
    }
    pub fn receipts_root(&self) -> B256 {
        self.receipts_root
    }
    pub fn ommers_hash(&self) -> B256 {
        self.ommers_hash
    }
    pub fn withdrawals_root(&self) -> Option<B256> {
        self.withdrawals_root
    }
}

impl alloy_rlp::Encodable for Header {
    fn encode(&self, out: &mut dyn alloy_rlp::BufMut) {
        let mut v = Vec::new();
        self.encode_to(&mut v);
        out.put_slice(&v);
    }
    fn length(&self) -> usize {
        let p = self.payload_length_contiguous();
        p + alloy_rlp::length_of_length(p)
    }
}

impl alloy_rlp::Decodable for Header {
    fn decode(buf: &mut &[u8]) -> alloy_rlp::Result<Self> {
        let item = rlp::parse_item(buf, 0).map_err(to_alloy)?;
        let h = Header::from_item(&item).map_err(to_alloy)?;
        *buf = &buf[item.raw.len()..];
        Ok(h)
    }
}

/// Map a strict-reader error onto alloy-rlp's error type (for `Decodable` impls).
pub fn to_alloy(e: RlpError) -> alloy_rlp::Error {
    match e {
        RlpError::Truncated { .. } | RlpError::Empty { .. } | RlpError::MissingItem { .. } => {
            alloy_rlp::Error::InputTooShort
        }
        RlpError::NonCanonicalSize { .. } => alloy_rlp::Error::NonCanonicalSize,
        RlpError::LeadingZeroLength { .. } | RlpError::LeadingZeroInteger { .. } => {
            alloy_rlp::Error::LeadingZero
        }
        RlpError::NonCanonicalSingleByte { .. } => alloy_rlp::Error::NonCanonicalSingleByte,
        RlpError::IntegerOverflow { .. } | RlpError::TooLong { .. } => alloy_rlp::Error::Overflow,
        RlpError::ExpectedList { .. } => alloy_rlp::Error::UnexpectedString,
        RlpError::ExpectedString { .. } => alloy_rlp::Error::UnexpectedList,
        RlpError::TrailingBytes { .. } => alloy_rlp::Error::Custom("trailing bytes"),
        RlpError::WrongLength { .. } => alloy_rlp::Error::UnexpectedLength,
        RlpError::WrongItemCount { .. } => alloy_rlp::Error::Custom("wrong item count"),
        RlpError::TooDeep { .. } => alloy_rlp::Error::Custom("nesting too deep"),
        RlpError::Invalid { what, .. } => alloy_rlp::Error::Custom(what),
        RlpError::TooManyItems { .. } => alloy_rlp::Error::Custom("too many list items"),
    }
}

/// Transaction type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxType {
    Legacy,
    /// EIP-2930 access list.
    Eip2930,
    /// EIP-1559 dynamic fee.
    Eip1559,
    /// EIP-4844 blob (canonical form, without sidecar).
    Eip4844,
    /// EIP-7702 set code.
    Eip7702,
}

impl TxType {
    pub fn from_byte(b: u8) -> Option<TxType> {
        match b {
            1 => Some(TxType::Eip2930),
            2 => Some(TxType::Eip1559),
            3 => Some(TxType::Eip4844),
            4 => Some(TxType::Eip7702),
            _ => None,
        }
    }
    pub fn as_byte(self) -> u8 {
        match self {
            TxType::Legacy => 0,
            TxType::Eip2930 => 1,
            TxType::Eip1559 => 2,
            TxType::Eip4844 => 3,
            TxType::Eip7702 => 4,
        }
    }
    /// Number of fields of the signed transaction's RLP list.
    pub fn field_count(self) -> usize {
        match self {
            TxType::Legacy => 9,
            TxType::Eip2930 => 11,
            TxType::Eip1559 => 12,
            TxType::Eip4844 => 14,
            TxType::Eip7702 => 13,
        }
    }
}

/// A signed transaction kept as its exact canonical bytes: for a legacy transaction its
/// RLP list, for a typed one `type ‖ rlp(fields)`. The envelope checks the type, that the
/// payload is one canonical list with the right number of fields, and nothing else
/// (no signature recovery, no execution).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxEnvelope {
    pub tx_type: TxType,
    /// The consensus encoding: the trie value in the transactions root, and the bytes
    /// whose keccak is the transaction hash.
    pub encoded: Bytes,
}

impl TxEnvelope {
    /// Decode from the consensus encoding (legacy list, or `type ‖ list`).
    pub fn decode(buf: &[u8]) -> Result<TxEnvelope, RlpError> {
        Self::decode_at(buf, 0)
    }

    fn decode_at(buf: &[u8], offset: usize) -> Result<TxEnvelope, RlpError> {
        let first = *buf.first().ok_or(RlpError::Empty { offset })?;
        let (tx_type, body, body_off) = if first >= 0xc0 {
            (TxType::Legacy, buf, offset)
        } else {
            let t = TxType::from_byte(first).ok_or(RlpError::Invalid {
                offset,
                what: "unknown transaction type",
            })?;
            (t, &buf[1..], offset + 1)
        };
        let item = rlp::parse_item(body, body_off)?;
        if item.raw.len() != body.len() {
            return Err(RlpError::TrailingBytes {
                offset: body_off + item.raw.len(),
                count: body.len() - item.raw.len(),
            });
        }
        let r = item.list()?;
        let count = r.remaining_count()?;
        if count != tx_type.field_count() {
            return Err(RlpError::WrongItemCount {
                offset: body_off,
                count,
                expected: "the field count of its type",
            });
        }
        rlp::validate_canonical(item.raw).map_err(|e| shift(e, body_off))?;
        Ok(TxEnvelope {
            tx_type,
            encoded: Bytes::copy_from_slice(buf),
        })
    }

    /// Decode one transaction as it appears inside a block body list: a legacy list, or
    /// an RLP string holding `type ‖ list`.
    pub fn from_item(item: &Item<'_>) -> Result<TxEnvelope, RlpError> {
        if item.is_list {
            Self::decode_at(item.raw, item.offset)
        } else {
            let tx = Self::decode_at(item.payload, item.payload_offset)?;
            if tx.tx_type == TxType::Legacy {
                return Err(RlpError::Invalid {
                    offset: item.offset,
                    what: "legacy transaction wrapped as a string",
                });
            }
            Ok(tx)
        }
    }

    /// Append the form used inside block bodies (typed ones wrapped as a string).
    pub fn encode_in_block(&self, out: &mut Vec<u8>) {
        if self.tx_type == TxType::Legacy {
            out.extend_from_slice(&self.encoded);
        } else {
            encode_bytes(&self.encoded, out);
        }
    }

    fn length_in_block(&self) -> usize {
        if self.tx_type == TxType::Legacy {
            self.encoded.len()
        } else {
            self.encoded.len() + alloy_rlp::length_of_length(self.encoded.len())
        }
    }

    /// The transaction hash.
    pub fn hash(&self) -> B256 {
        keccak256(&self.encoded)
    }
}

fn shift(e: RlpError, by: usize) -> RlpError {
    // validate_canonical reports offsets relative to its own buffer.
    match e {
        RlpError::Truncated {
            offset,
            needed,
            available,
        } => RlpError::Truncated {
            offset: offset + by,
            needed,
            available,
        },
        RlpError::NonCanonicalSize { offset } => RlpError::NonCanonicalSize {
            offset: offset + by,
        },
        RlpError::LeadingZeroLength { offset } => RlpError::LeadingZeroLength {
            offset: offset + by,
        },
        RlpError::NonCanonicalSingleByte { offset } => RlpError::NonCanonicalSingleByte {
            offset: offset + by,
        },
        RlpError::TrailingBytes { offset, count } => RlpError::TrailingBytes {
            offset: offset + by,
            count,
        },
        RlpError::TooLong { offset, len, limit } => RlpError::TooLong {
            offset: offset + by,
            len,
            limit,
        },
        RlpError::TooDeep { offset, limit } => RlpError::TooDeep {
            offset: offset + by,
            limit,
        },
        other => other,
    }
}

/// An EIP-4895 withdrawal (amount in gwei).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, alloy_rlp::RlpEncodable)]
pub struct Withdrawal {
    pub index: u64,
    pub validator_index: u64,
    pub address: Address,
    pub amount_gwei: u64,
}

impl Withdrawal {
    pub fn from_item(item: &Item<'_>) -> Result<Withdrawal, RlpError> {
        let mut r = item.list()?;
        let w = Withdrawal {
            index: r.u64()?,
            validator_index: r.u64()?,
            address: r.address()?,
            amount_gwei: r.u64()?,
        };
        r.finish()?;
        Ok(w)
    }
    pub fn decode(buf: &[u8]) -> Result<Withdrawal, RlpError> {
        Self::from_item(&parse_exact(buf)?)
    }
    pub fn encode_vec(&self) -> Vec<u8> {
        alloy_rlp::encode(self)
    }
}

/// A block body: transactions, ommer headers, and (from Shanghai) withdrawals.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockBody {
    pub transactions: Vec<TxEnvelope>,
    pub ommers: Vec<Header>,
    pub withdrawals: Option<Vec<Withdrawal>>,
}

fn read_txs(r: &mut Reader<'_>) -> Result<Vec<TxEnvelope>, RlpError> {
    let item = r.next()?;
    let mut l = item.list()?;
    let mut out = Vec::new();
    while let Some(it) = l.next_opt()? {
        if out.len() >= MAX_TXS_PER_BLOCK {
            return Err(RlpError::TooLong {
                offset: item.offset,
                len: out.len() + 1,
                limit: MAX_TXS_PER_BLOCK,
            });
        }
        out.push(TxEnvelope::from_item(&it)?);
    }
    Ok(out)
}

fn read_ommers(r: &mut Reader<'_>) -> Result<Vec<Header>, RlpError> {
    let item = r.next()?;
    let mut l = item.list()?;
    let mut out = Vec::new();
    while let Some(it) = l.next_opt()? {
        if out.len() >= MAX_OMMERS_PER_BLOCK {
            return Err(RlpError::TooLong {
                offset: item.offset,
                len: out.len() + 1,
                limit: MAX_OMMERS_PER_BLOCK,
            });
        }
        out.push(Header::from_item(&it)?);
    }
    Ok(out)
}

fn read_withdrawals(r: &mut Reader<'_>) -> Result<Option<Vec<Withdrawal>>, RlpError> {
    let Some(item) = r.next_opt()? else {
        return Ok(None);
    };
    let mut l = item.list()?;
    let mut out = Vec::new();
    while let Some(it) = l.next_opt()? {
        if out.len() >= MAX_WITHDRAWALS_PER_BLOCK {
            return Err(RlpError::TooLong {
                offset: item.offset,
                len: out.len() + 1,
                limit: MAX_WITHDRAWALS_PER_BLOCK,
            });
        }
        out.push(Withdrawal::from_item(&it)?);
    }
    Ok(Some(out))
}

impl BlockBody {
    /// Decode `[transactions, ommers, withdrawals?]`.
    pub fn decode(buf: &[u8]) -> Result<BlockBody, RlpError> {
        Self::from_item(&parse_exact(buf)?)
    }

    pub fn from_item(item: &Item<'_>) -> Result<BlockBody, RlpError> {
        let mut r = item.list()?;
        let body = Self::read_fields(&mut r)?;
        r.finish()?;
        Ok(body)
    }

    fn read_fields(r: &mut Reader<'_>) -> Result<BlockBody, RlpError> {
        Ok(BlockBody {
            transactions: read_txs(r)?,
            ommers: read_ommers(r)?,
            withdrawals: read_withdrawals(r)?,
        })
    }

    fn fields_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let txs_len: usize = self.transactions.iter().map(|t| t.length_in_block()).sum();
        list_header(txs_len, &mut out);
        for t in &self.transactions {
            t.encode_in_block(&mut out);
        }
        let mut ommers = Vec::new();
        for o in &self.ommers {
            o.encode_to(&mut ommers);
        }
        list_header(ommers.len(), &mut out);
        out.extend_from_slice(&ommers);
        if let Some(ws) = &self.withdrawals {
            let mut w = Vec::new();
            for x in ws {
                x.encode(&mut w);
            }
            list_header(w.len(), &mut out);
            out.extend_from_slice(&w);
        }
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let payload = self.fields_payload();
        let mut out = Vec::with_capacity(payload.len() + 9);
        list_header(payload.len(), &mut out);
        out.extend_from_slice(&payload);
        out
    }
}

/// A full block: header and body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Block {
    pub header: Header,
    pub body: BlockBody,
}

impl Block {
    /// Decode `[header, transactions, ommers, withdrawals?]`.
    pub fn decode(buf: &[u8]) -> Result<Block, RlpError> {
        Self::from_item(&parse_exact(buf)?)
    }

    pub fn from_item(item: &Item<'_>) -> Result<Block, RlpError> {
        let mut r = item.list()?;
        let header = Header::from_item(&r.next()?)?;
        let body = BlockBody::read_fields(&mut r)?;
        r.finish()?;
        Ok(Block { header, body })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut payload = self.header.encode();
        payload.extend_from_slice(&self.body.fields_payload());
        let mut out = Vec::with_capacity(payload.len() + 9);
        list_header(payload.len(), &mut out);
        out.extend_from_slice(&payload);
        out
    }

    pub fn hash(&self) -> B256 {
        self.header.hash()
    }
}

/// Decode an RLP list of headers (a `BlockHeaders` response body), each with the hash of
/// its received bytes. At most `max_headers`.
pub fn decode_header_list(
    list_rlp: &[u8],
    max_headers: usize,
) -> Result<Vec<(Header, B256)>, RlpError> {
    let item = parse_exact(list_rlp)?;
    let mut l = item.list()?;
    let mut out = Vec::new();
    while let Some(it) = l.next_opt()? {
        if out.len() >= max_headers {
            return Err(RlpError::TooLong {
                offset: it.offset,
                len: out.len() + 1,
                limit: max_headers,
            });
        }
        out.push((Header::from_item(&it)?, keccak256(it.raw)));
    }
    Ok(out)
}

/// Decode blocks written back to back (the `chain.rlp` format). At most `max_blocks`.
pub fn decode_block_sequence(buf: &[u8], max_blocks: usize) -> Result<Vec<Block>, RlpError> {
    let mut r = Reader::sequence(buf);
    let mut out = Vec::new();
    while let Some(item) = r.next_opt()? {
        if out.len() >= max_blocks {
            return Err(RlpError::TooLong {
                offset: item.offset,
                len: out.len() + 1,
                limit: max_blocks,
            });
        }
        out.push(Block::from_item(&item)?);
    }
    Ok(out)
}

/// A log entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, alloy_rlp::RlpEncodable)]
pub struct Log {
    pub address: Address,
    pub topics: Vec<B256>,
    pub data: Bytes,
}

impl Log {
    pub fn from_item(item: &Item<'_>) -> Result<Log, RlpError> {
        let mut r = item.list()?;
        let address = r.address()?;
        let titem = r.next()?;
        let mut tl = titem.list()?;
        let mut topics = Vec::new();
        while let Some(t) = tl.next_opt()? {
            if topics.len() >= MAX_TOPICS_PER_LOG {
                return Err(RlpError::TooLong {
                    offset: titem.offset,
                    len: topics.len() + 1,
                    limit: MAX_TOPICS_PER_LOG,
                });
            }
            topics.push(t.b256()?);
        }
        let data = Bytes::copy_from_slice(r.bytes()?);
        r.finish()?;
        Ok(Log {
            address,
            topics,
            data,
        })
    }
}

/// The first field of a receipt: the post-transaction state root (before Byzantium) or a
/// success flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    PostState(B256),
    Status(bool),
}

impl Default for ReceiptOutcome {
    fn default() -> Self {
        ReceiptOutcome::Status(true)
    }
}

/// A transaction receipt (legacy or typed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Receipt {
    pub tx_type: Option<TxType>,
    pub outcome: ReceiptOutcome,
    pub cumulative_gas_used: u64,
    pub logs_bloom: Bloom,
    pub logs: Vec<Log>,
}

fn read_outcome(item: &Item<'_>) -> Result<ReceiptOutcome, RlpError> {
    let b = item.bytes()?;
    match b {
        [] => Ok(ReceiptOutcome::Status(false)),
        [1] => Ok(ReceiptOutcome::Status(true)),
        _ if b.len() == 32 => Ok(ReceiptOutcome::PostState(B256::from_slice(b))),
        _ => Err(RlpError::Invalid {
            offset: item.offset,
            what: "receipt status is neither 0, 1 nor a 32-byte state root",
        }),
    }
}

fn read_logs(item: &Item<'_>) -> Result<Vec<Log>, RlpError> {
    let mut l = item.list()?;
    let mut logs = Vec::new();
    while let Some(it) = l.next_opt()? {
        if logs.len() >= MAX_LOGS_PER_RECEIPT {
            return Err(RlpError::TooLong {
                offset: item.offset,
                len: logs.len() + 1,
                limit: MAX_LOGS_PER_RECEIPT,
            });
        }
        logs.push(Log::from_item(&it)?);
    }
    Ok(logs)
}

/// The bloom filter of a set of logs (each address and topic sets 3 bits).
pub fn logs_bloom<'a>(logs: impl IntoIterator<Item = &'a Log>) -> Bloom {
    let mut bloom = Bloom::ZERO;
    for log in logs {
        bloom.accrue(alloy_primitives::BloomInput::Raw(log.address.as_slice()));
        for t in &log.topics {
            bloom.accrue(alloy_primitives::BloomInput::Raw(t.as_slice()));
        }
    }
    bloom
}

impl Receipt {
    fn outcome_encode(&self, out: &mut Vec<u8>) {
        match self.outcome {
            ReceiptOutcome::PostState(h) => h.encode(out),
            ReceiptOutcome::Status(s) => s.encode(out),
        }
    }

    fn logs_encoded(&self) -> Vec<u8> {
        let mut l = Vec::new();
        for log in &self.logs {
            log.encode(&mut l);
        }
        let mut out = Vec::with_capacity(l.len() + 9);
        list_header(l.len(), &mut out);
        out.extend_from_slice(&l);
        out
    }

    /// The consensus encoding: `rlp([status, cumulativeGas, bloom, logs])`, prefixed by
    /// the type byte for typed receipts. This is the trie value in the receipts root.
    pub fn encode_consensus(&self) -> Vec<u8> {
        let mut payload = Vec::new();
        self.outcome_encode(&mut payload);
        self.cumulative_gas_used.encode(&mut payload);
        self.logs_bloom.encode(&mut payload);
        payload.extend_from_slice(&self.logs_encoded());
        let mut out = Vec::with_capacity(payload.len() + 10);
        if let Some(t) = self.tx_type.filter(|t| *t != TxType::Legacy) {
            out.push(t.as_byte());
        }
        list_header(payload.len(), &mut out);
        out.extend_from_slice(&payload);
        out
    }

    /// Decode the consensus encoding (see [`Receipt::encode_consensus`]).
    pub fn decode_consensus(buf: &[u8]) -> Result<Receipt, RlpError> {
        Self::decode_consensus_at(buf, 0)
    }

    fn decode_consensus_at(buf: &[u8], offset: usize) -> Result<Receipt, RlpError> {
        let first = *buf.first().ok_or(RlpError::Empty { offset })?;
        let (tx_type, body, body_off) = if first >= 0xc0 {
            (None, buf, offset)
        } else {
            let t = TxType::from_byte(first).ok_or(RlpError::Invalid {
                offset,
                what: "unknown receipt type",
            })?;
            (Some(t), &buf[1..], offset + 1)
        };
        let item = rlp::parse_item(body, body_off)?;
        if item.raw.len() != body.len() {
            return Err(RlpError::TrailingBytes {
                offset: body_off + item.raw.len(),
                count: body.len() - item.raw.len(),
            });
        }
        let mut r = item.list()?;
        let outcome = read_outcome(&r.next()?)?;
        let cumulative_gas_used = r.u64()?;
        let logs_bloom = r.next()?.bloom()?;
        let logs = read_logs(&r.next()?)?;
        r.finish()?;
        Ok(Receipt {
            tx_type,
            outcome,
            cumulative_gas_used,
            logs_bloom,
            logs,
        })
    }

    /// Decode a receipt as it appears in a block's receipt list (eth/66–68, era1): a
    /// legacy list, or a string holding the typed consensus encoding.
    pub fn from_item(item: &Item<'_>) -> Result<Receipt, RlpError> {
        if item.is_list {
            Self::decode_consensus_at(item.raw, item.offset)
        } else {
            let r = Self::decode_consensus_at(item.payload, item.payload_offset)?;
            if r.tx_type.is_none() {
                return Err(RlpError::Invalid {
                    offset: item.offset,
                    what: "legacy receipt wrapped as a string",
                });
            }
            Ok(r)
        }
    }

    /// Append the block-list form (typed receipts wrapped as a string).
    pub fn encode_in_list(&self, out: &mut Vec<u8>) {
        let c = self.encode_consensus();
        if self.tx_type.filter(|t| *t != TxType::Legacy).is_some() {
            encode_bytes(&c, out);
        } else {
            out.extend_from_slice(&c);
        }
    }

    /// The eth/69 form: `[txType, status, cumulativeGas, logs]`, no bloom, never wrapped.
    pub fn encode_eth69(&self, out: &mut Vec<u8>) {
        let mut payload = Vec::new();
        self.tx_type.map_or(0, |t| t.as_byte()).encode(&mut payload);
        self.outcome_encode(&mut payload);
        self.cumulative_gas_used.encode(&mut payload);
        payload.extend_from_slice(&self.logs_encoded());
        list_header(payload.len(), out);
        out.extend_from_slice(&payload);
    }

    /// Decode the eth/69 form; the bloom is recomputed from the logs.
    pub fn from_item_eth69(item: &Item<'_>) -> Result<Receipt, RlpError> {
        let mut r = item.list()?;
        let t_item = r.next()?;
        let t = t_item.u64()?;
        let tx_type = match t {
            0 => None,
            _ => Some(u8::try_from(t).ok().and_then(TxType::from_byte).ok_or(
                RlpError::Invalid {
                    offset: t_item.offset,
                    what: "unknown receipt type",
                },
            )?),
        };
        let outcome = read_outcome(&r.next()?)?;
        let cumulative_gas_used = r.u64()?;
        let logs = read_logs(&r.next()?)?;
        r.finish()?;
        let logs_bloom = logs_bloom(&logs);
        Ok(Receipt {
            tx_type,
            outcome,
            cumulative_gas_used,
            logs_bloom,
            logs,
        })
    }
}

/// Decode a receipt list whose items `item` decodes, at most [`MAX_TXS_PER_BLOCK`] of them.
fn decode_receipt_list(
    buf: &[u8],
    item: impl Fn(&Item<'_>) -> Result<Receipt, RlpError>,
) -> Result<Vec<Receipt>, RlpError> {
    let list = parse_exact(buf)?;
    let mut l = list.list()?;
    let mut out = Vec::new();
    while let Some(it) = l.next_opt()? {
        if out.len() >= MAX_TXS_PER_BLOCK {
            return Err(RlpError::TooLong {
                offset: list.offset,
                len: out.len() + 1,
                limit: MAX_TXS_PER_BLOCK,
            });
        }
        out.push(item(&it)?);
    }
    Ok(out)
}

/// Encode a receipt list, each receipt written by `item`.
fn encode_receipt_list(receipts: &[Receipt], item: impl Fn(&Receipt, &mut Vec<u8>)) -> Vec<u8> {
    let mut payload = Vec::new();
    for r in receipts {
        item(r, &mut payload);
    }
    let mut out = Vec::with_capacity(payload.len() + 9);
    list_header(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// Decode a block's receipt list (eth/68 / era1 form).
pub fn decode_receipts(buf: &[u8]) -> Result<Vec<Receipt>, RlpError> {
    decode_receipt_list(buf, Receipt::from_item)
}

/// Encode a block's receipt list (eth/68 / era1 form).
pub fn encode_receipts(receipts: &[Receipt]) -> Vec<u8> {
    encode_receipt_list(receipts, Receipt::encode_in_list)
}

/// Decode a block's receipt list in the eth/69 form.
pub fn decode_receipts_eth69(buf: &[u8]) -> Result<Vec<Receipt>, RlpError> {
    decode_receipt_list(buf, Receipt::from_item_eth69)
}

/// Encode a block's receipt list in the eth/69 form.
pub fn encode_receipts_eth69(receipts: &[Receipt]) -> Vec<u8> {
    encode_receipt_list(receipts, Receipt::encode_eth69)
}

/// A state-trie account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub nonce: u64,
    pub balance: U256,
    pub storage_root: B256,
    pub code_hash: B256,
}

impl Default for Account {
    fn default() -> Self {
        Account {
            nonce: 0,
            balance: U256::ZERO,
            storage_root: EMPTY_ROOT,
            code_hash: EMPTY_CODE_HASH,
        }
    }
}

impl Account {
    /// The full form stored in the state trie: `rlp([nonce, balance, storageRoot, codeHash])`.
    pub fn encode(&self) -> Vec<u8> {
        let payload = self.nonce.length() + self.balance.length() + 33 + 33;
        let mut out = Vec::with_capacity(payload + 3);
        list_header(payload, &mut out);
        self.nonce.encode(&mut out);
        self.balance.encode(&mut out);
        self.storage_root.encode(&mut out);
        self.code_hash.encode(&mut out);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Account, RlpError> {
        let mut r = parse_exact(buf)?.list()?;
        let a = Account {
            nonce: r.u64()?,
            balance: r.u256()?,
            storage_root: r.b256()?,
            code_hash: r.b256()?,
        };
        r.finish()?;
        Ok(a)
    }

    /// The snap/1 "slim" form: an empty storage root and the empty code hash are written
    /// as empty strings.
    pub fn encode_slim(&self) -> Vec<u8> {
        let mut payload = Vec::new();
        self.nonce.encode(&mut payload);
        self.balance.encode(&mut payload);
        if self.storage_root == EMPTY_ROOT {
            payload.push(0x80);
        } else {
            self.storage_root.encode(&mut payload);
        }
        if self.code_hash == EMPTY_CODE_HASH {
            payload.push(0x80);
        } else {
            self.code_hash.encode(&mut payload);
        }
        let mut out = Vec::with_capacity(payload.len() + 3);
        list_header(payload.len(), &mut out);
        out.extend_from_slice(&payload);
        out
    }

    pub fn decode_slim(buf: &[u8]) -> Result<Account, RlpError> {
        let mut r = parse_exact(buf)?.list()?;
        let nonce = r.u64()?;
        let balance = r.u256()?;
        let root_item = r.next()?;
        let storage_root = match root_item.bytes()? {
            [] => EMPTY_ROOT,
            _ => root_item.b256()?,
        };
        let code_item = r.next()?;
        let code_hash = match code_item.bytes()? {
            [] => EMPTY_CODE_HASH,
            _ => code_item.b256()?,
        };
        r.finish()?;
        Ok(Account {
            nonce,
            balance,
            storage_root,
            code_hash,
        })
    }

    /// Convert a slim encoding to the full one (what the state trie stores).
    pub fn slim_to_full(buf: &[u8]) -> Result<Vec<u8>, RlpError> {
        Ok(Self::decode_slim(buf)?.encode())
    }
}

/// A state account read leniently, as peers send it in snap account ranges and fast-sync
/// trie leaves: the balance is kept as the bytes sent (at most 32, leading zeros not
/// rejected) so that [`AccountView::encode`] gives back exactly the bytes that were
/// received. Range proofs and trie roots are checked over those bytes, so a peer's
/// accounts must be re-encoded byte for byte; [`Account`] (strict, `U256` balance) would
/// normalise a non-canonical balance and change the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub nonce: u64,
    /// Balance as big-endian bytes, as sent.
    pub balance: Vec<u8>,
    pub storage_root: B256,
    pub code_hash: B256,
}

/// What the state walk needs of an account: its storage root and code hash
/// ([`AccountView::decode_roots`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountRoots {
    pub storage_root: B256,
    pub code_hash: B256,
}

impl AccountRoots {
    pub fn has_storage(&self) -> bool {
        self.storage_root != EMPTY_ROOT
    }

    pub fn has_code(&self) -> bool {
        self.code_hash != EMPTY_CODE_HASH
    }
}

impl AccountView {
    /// Decode the full form `rlp([nonce, balance, storageRoot, codeHash])`; the balance
    /// may be any string of at most 32 bytes.
    pub fn decode(raw: &[u8]) -> Result<AccountView, RlpError> {
        let (nonce, balance, storage_root, code_hash) = Self::fields(raw)?;
        Ok(AccountView {
            nonce,
            balance: balance.to_vec(),
            storage_root,
            code_hash,
        })
    }

    /// The storage root and code hash of the full form, every field checked as
    /// [`AccountView::decode`] checks it (nothing is copied).
    pub fn decode_roots(raw: &[u8]) -> Result<AccountRoots, RlpError> {
        let (_, _, storage_root, code_hash) = Self::fields(raw)?;
        Ok(AccountRoots {
            storage_root,
            code_hash,
        })
    }

    fn fields(raw: &[u8]) -> Result<(u64, &[u8], B256, B256), RlpError> {
        let it = parse_exact(raw)?;
        // The four fields, read in place (as `Item::items(4)` would, without a list).
        let mut r = it.list()?;
        let mut f = [None; 4];
        let mut count = 0;
        while let Some(item) = r.next_opt()? {
            if count >= 4 {
                return Err(RlpError::TooManyItems {
                    offset: it.offset,
                    limit: 4,
                });
            }
            f[count] = Some(item);
            count += 1;
        }
        let [Some(f0), Some(f1), Some(f2), Some(f3)] = f else {
            return Err(RlpError::WrongItemCount {
                offset: it.offset,
                count,
                expected: "4",
            });
        };
        let balance = f1.bytes()?;
        if balance.len() > 32 {
            return Err(RlpError::IntegerOverflow {
                offset: f1.offset,
                len: balance.len(),
                max_bytes: 32,
            });
        }
        Ok((f0.u64()?, balance, f2.b256()?, f3.b256()?))
    }

    /// The full form, with the balance bytes as stored.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(110);
        rlp::encode_u64(self.nonce, &mut p);
        encode_bytes(&self.balance, &mut p);
        encode_bytes(self.storage_root.as_slice(), &mut p);
        encode_bytes(self.code_hash.as_slice(), &mut p);
        rlp::wrap_list(&p)
    }

    /// The snap/1 slim form (see [`Account::encode_slim`]), with the balance bytes as stored.
    pub fn encode_slim(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(110);
        rlp::encode_u64(self.nonce, &mut p);
        encode_bytes(&self.balance, &mut p);
        if self.storage_root == EMPTY_ROOT {
            p.push(0x80);
        } else {
            encode_bytes(self.storage_root.as_slice(), &mut p);
        }
        if self.code_hash == EMPTY_CODE_HASH {
            p.push(0x80);
        } else {
            encode_bytes(self.code_hash.as_slice(), &mut p);
        }
        rlp::wrap_list(&p)
    }

    pub fn has_storage(&self) -> bool {
        self.storage_root != EMPTY_ROOT
    }

    pub fn has_code(&self) -> bool {
        self.code_hash != EMPTY_CODE_HASH
    }
}

/// `alloy_rlp` impls (strict decoding through [`crate::rlp`]) so these types can sit inside
/// messages encoded with `alloy_rlp` (e.g. `Vec<BlockBody>`).
macro_rules! alloy_codec {
    ($t:ty, $from_item:path, $encode:expr) => {
        impl alloy_rlp::Decodable for $t {
            fn decode(buf: &mut &[u8]) -> alloy_rlp::Result<Self> {
                let item = rlp::parse_item(buf, 0).map_err(to_alloy)?;
                let v = $from_item(&item).map_err(to_alloy)?;
                *buf = &buf[item.raw.len()..];
                Ok(v)
            }
        }
        impl alloy_rlp::Encodable for $t {
            fn encode(&self, out: &mut dyn alloy_rlp::BufMut) {
                let f: fn(&$t) -> Vec<u8> = $encode;
                out.put_slice(&f(self));
            }
            fn length(&self) -> usize {
                let f: fn(&$t) -> Vec<u8> = $encode;
                f(self).len()
            }
        }
    };
}

alloy_codec!(BlockBody, BlockBody::from_item, |b| b.encode());
alloy_codec!(Block, Block::from_item, |b| b.encode());
alloy_codec!(TxEnvelope, TxEnvelope::from_item, |t| {
    let mut v = Vec::new();
    t.encode_in_block(&mut v);
    v
});
alloy_codec!(Receipt, Receipt::from_item, |r| {
    let mut v = Vec::new();
    r.encode_in_list(&mut v);
    v
});

impl alloy_rlp::Decodable for Withdrawal {
    fn decode(buf: &mut &[u8]) -> alloy_rlp::Result<Self> {
        let item = rlp::parse_item(buf, 0).map_err(to_alloy)?;
        let v = Withdrawal::from_item(&item).map_err(to_alloy)?;
        *buf = &buf[item.raw.len()..];
        Ok(v)
    }
}

#[cfg(test)]
mod alloy_codec_tests {
    use super::*;

    #[test]
    fn a_header_with_fields_of_a_later_fork_decodes_and_keeps_its_bytes() {
        let prague = Header {
            number: 7,
            base_fee_per_gas: Some(7),
            withdrawals_root: Some(B256::repeat_byte(1)),
            blob_gas_used: Some(0),
            excess_blob_gas: Some(0),
            parent_beacon_block_root: Some(B256::repeat_byte(2)),
            requests_hash: Some(B256::repeat_byte(3)),
            ..Default::default()
        };
        // The same header with one more field (as a fork after Prague appends it).
        let mut later = prague.clone();
        let mut field = Vec::new();
        B256::repeat_byte(4).encode(&mut field);
        later.later_fields.push(Bytes::from(field));
        let enc = later.encode();
        assert_eq!(enc.len(), prague.encode().len() + 33);
        let (dec, hash) = Header::decode_with_hash(&enc).unwrap();
        assert_eq!(dec, later);
        assert_eq!(dec.encode(), enc);
        assert_eq!(hash, keccak256(&enc));
        assert_eq!(dec.hash(), hash);
        // Without Prague's field a later one cannot follow: the header ends there.
        let mut gap = later.clone();
        gap.requests_hash = None;
        assert_eq!(Header::decode(&gap.encode()).unwrap().later_fields.len(), 0);
    }

    #[test]
    fn vec_of_bodies_through_alloy_rlp() {
        let tx = TxEnvelope::decode(&[
            0x02, 0xcc, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0xc0, 0x80, 0x80, 0x80,
        ])
        .unwrap();
        let body = BlockBody {
            transactions: vec![tx.clone()],
            ommers: vec![],
            withdrawals: Some(vec![]),
        };
        let bodies = vec![body.clone(), BlockBody::default()];
        let enc = alloy_rlp::encode(&bodies);
        let dec: Vec<BlockBody> = alloy_rlp::Decodable::decode(&mut enc.as_slice()).unwrap();
        assert_eq!(dec, bodies);
        let r = Receipt {
            tx_type: Some(TxType::Eip1559),
            ..Default::default()
        };
        let enc = alloy_rlp::encode(vec![r.clone()]);
        assert_eq!(enc, encode_receipts(std::slice::from_ref(&r)));
        let dec: Vec<Receipt> = alloy_rlp::Decodable::decode(&mut enc.as_slice()).unwrap();
        assert_eq!(dec, vec![r]);
        // Non-canonical input is rejected through the alloy interface too.
        let mut bad: &[u8] = &[0xc2, 0x81, 0x05];
        assert!(<Vec<Withdrawal> as alloy_rlp::Decodable>::decode(&mut bad).is_err());
    }
}

#[cfg(test)]
mod account_view_tests {
    use super::*;

    fn raw(nonce: &[u8], balance: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        encode_bytes(nonce, &mut p);
        encode_bytes(balance, &mut p);
        encode_bytes(EMPTY_ROOT.as_slice(), &mut p);
        encode_bytes(keccak256(b"code").as_slice(), &mut p);
        rlp::wrap_list(&p)
    }

    #[test]
    fn canonical_accounts_agree_with_the_strict_account() {
        let strict = Account {
            nonce: 7,
            balance: U256::from(0x0100u64),
            storage_root: keccak256(b"s"),
            code_hash: EMPTY_CODE_HASH,
        };
        let v = AccountView::decode(&strict.encode()).unwrap();
        assert_eq!(v.nonce, 7);
        assert_eq!(v.balance, vec![1, 0]);
        let r = AccountView::decode_roots(&v.encode()).unwrap();
        assert_eq!((r.storage_root, r.code_hash), (v.storage_root, v.code_hash));
        assert!(v.has_storage());
        assert!(!v.has_code());
        assert_eq!(v.encode(), strict.encode());
        assert_eq!(v.encode_slim(), strict.encode_slim());
        let empty = AccountView::decode(&Account::default().encode()).unwrap();
        assert_eq!(empty.encode_slim(), Account::default().encode_slim());
        assert!(!empty.has_storage());
    }

    #[test]
    fn a_non_canonical_balance_is_kept_byte_exactly() {
        let r = raw(&[3], &[0, 0, 5]);
        assert!(Account::decode(&r).is_err());
        let v = AccountView::decode(&r).unwrap();
        assert_eq!(v.balance, vec![0, 0, 5]);
        assert_eq!(v.encode(), r);
        assert!(v.has_code());
    }

    #[test]
    fn bad_accounts_are_rejected() {
        assert!(matches!(
            AccountView::decode(&raw(&[1], &[1u8; 33])),
            Err(RlpError::IntegerOverflow { len: 33, .. })
        ));
        let mut p = Vec::new();
        encode_bytes(&[1], &mut p);
        encode_bytes(&[1], &mut p);
        encode_bytes(EMPTY_ROOT.as_slice(), &mut p);
        assert!(matches!(
            AccountView::decode(&rlp::wrap_list(&p)),
            Err(RlpError::WrongItemCount { count: 3, .. })
        ));
        // A nonce above u64, a short hash, trailing bytes.
        assert!(AccountView::decode(&raw(&[1u8; 9], &[1])).is_err());
        let mut r = raw(&[1], &[1]);
        r.push(0);
        assert!(AccountView::decode(&r).is_err());
        assert!(AccountView::decode(&[]).is_err());
    }
}

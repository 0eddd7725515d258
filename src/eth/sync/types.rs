//! Values exchanged with peers (eth/66+ and snap/1 requests and responses as typed values)
//! and the chain items the engines verify: headers, bodies, receipts, accounts.

use alloy_primitives::{keccak256, B256};
use thiserror::Error;

use catchup_eth::rlp::RlpError;

/// A peer, as the transport names it.
pub type PeerId = u32;
/// A request id, unique per engine instance.
pub type ReqId = u64;

/// Largest header accepted from a peer.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Largest body or receipt list accepted from a peer.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Errors from decoding or checking chain items.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ItemError {
    #[error("header: {0}")]
    HeaderRlp(RlpError),
    #[error("header: {0} bytes exceeds the limit")]
    HeaderTooLarge(usize),
    #[error("body of block {number}: {what}")]
    Body { number: u64, what: String },
    #[error("receipts of block {number}: {what}")]
    Receipts { number: u64, what: String },
}

/// A block header: its bytes as received, their hash and the fields the sync needs. The
/// bytes are decoded by [`catchup_eth::Header`] (canonical encodings of known forks only),
/// so the sync accepts exactly the headers the rest of the node does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub raw: Vec<u8>,
    pub hash: B256,
    pub parent_hash: B256,
    pub ommers_hash: B256,
    pub state_root: B256,
    pub transactions_root: B256,
    pub receipts_root: B256,
    pub number: u64,
    pub withdrawals_root: Option<B256>,
}

impl Header {
    /// Decode (through [`catchup_eth::HeaderRef::decode`]) and hash a header of at
    /// most [`MAX_HEADER_BYTES`].
    pub fn decode(raw: &[u8]) -> Result<Header, ItemError> {
        Self::decode_owned(raw.to_vec())
    }

    /// [`Header::decode`] keeping `raw` (no copy).
    pub fn decode_owned(raw: Vec<u8>) -> Result<Header, ItemError> {
        if raw.len() > MAX_HEADER_BYTES {
            return Err(ItemError::HeaderTooLarge(raw.len()));
        }
        // Only the canonical encoding decodes: the received bytes hash as the header.
        let hash = keccak256(&raw);
        Self::decode_hashed(raw, hash)
    }

    /// [`Header::decode_owned`] of each of `raws`, in order; the first error ends it.
    /// The headers are hashed together, four at a time where the CPU can
    /// ([`catchup_eth::keccak4`]).
    pub fn decode_all(raws: Vec<Vec<u8>>) -> Result<Vec<Header>, ItemError> {
        if let Some(r) = raws.iter().find(|r| r.len() > MAX_HEADER_BYTES) {
            return Err(ItemError::HeaderTooLarge(r.len()));
        }
        let mut hashes = Vec::new();
        catchup_eth::keccak4::keccak256_each(&raws, &mut hashes);
        raws.into_iter()
            .zip(hashes)
            .map(|(raw, hash)| Self::decode_hashed(raw, hash))
            .collect()
    }

    /// Decode `raw`, whose keccak256 is `hash`.
    fn decode_hashed(raw: Vec<u8>, hash: B256) -> Result<Header, ItemError> {
        let h = catchup_eth::HeaderRef::decode(&raw).map_err(ItemError::HeaderRlp)?;
        Ok(Header {
            hash,
            parent_hash: h.parent_hash,
            ommers_hash: h.ommers_hash,
            state_root: h.state_root,
            transactions_root: h.transactions_root,
            receipts_root: h.receipts_root,
            number: h.number,
            withdrawals_root: h.withdrawals_root,
            raw,
        })
    }
}

/// A block body as sent on the wire: `[transactions, ommers, withdrawals?]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub raw: Vec<u8>,
}

impl Body {
    /// Check the body against its header: transactions root, ommers hash, withdrawals root.
    pub fn verify(&self, header: &Header) -> Result<(), ItemError> {
        let err = |what: String| ItemError::Body {
            number: header.number,
            what,
        };
        if self.raw.len() > MAX_BODY_BYTES {
            return Err(err(format!("{} bytes exceeds the limit", self.raw.len())));
        }
        let roots = catchup_eth::body_roots_encoded(&self.raw).map_err(|e| err(e.to_string()))?;
        if roots.transactions_root != header.transactions_root {
            return Err(err("transactions root mismatch".into()));
        }
        if roots.ommers_hash != header.ommers_hash {
            return Err(err("ommers hash mismatch".into()));
        }
        match (header.withdrawals_root, roots.withdrawals_root) {
            (None, None) => {}
            (Some(want), Some(got)) if want == got => {}
            (Some(_), Some(_)) => return Err(err("withdrawals root mismatch".into())),
            _ => return Err(err("withdrawals presence differs from the header".into())),
        }
        Ok(())
    }
}

/// One block's receipts as sent on the wire (an RLP list of receipts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipts {
    pub raw: Vec<u8>,
}

impl Receipts {
    /// Check the receipts against the header's receipts root.
    pub fn verify(&self, header: &Header) -> Result<(), ItemError> {
        let err = |what: String| ItemError::Receipts {
            number: header.number,
            what,
        };
        if self.raw.len() > MAX_BODY_BYTES {
            return Err(err(format!("{} bytes exceeds the limit", self.raw.len())));
        }
        let root = catchup_eth::receipts_root_encoded(&self.raw).map_err(|e| err(e.to_string()))?;
        if root != header.receipts_root {
            return Err(err("receipts root mismatch".into()));
        }
        Ok(())
    }
}

/// A state account as peers send it (lenient balance, re-encoded byte-exactly).
pub use catchup_eth::AccountView;

/// Where a header request starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashOrNumber {
    Hash(B256),
    Number(u64),
}

/// A path in the state for GetTrieNodes: an account-trie path, or a storage-trie path
/// inside the account with the given hash. Paths are nibbles.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TriePath {
    pub account: Option<B256>,
    pub path: Vec<u8>,
}

/// A request to a peer (eth/66+ or snap/1), as a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The peer's best block (what the eth Status handshake tells).
    Status,
    BlockHeaders {
        origin: HashOrNumber,
        amount: u64,
        skip: u64,
        reverse: bool,
    },
    BlockBodies(Vec<B256>),
    Receipts(Vec<B256>),
    NodeData(Vec<B256>),
    AccountRange {
        root: B256,
        origin: B256,
        limit: B256,
        bytes: u64,
    },
    StorageRanges {
        root: B256,
        accounts: Vec<B256>,
        origin: B256,
        limit: B256,
        bytes: u64,
    },
    ByteCodes {
        hashes: Vec<B256>,
        bytes: u64,
    },
    TrieNodes {
        root: B256,
        paths: Vec<TriePath>,
        bytes: u64,
    },
}

impl Request {
    /// Short name for logs and per-kind counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::BlockHeaders { .. } => "headers",
            Request::BlockBodies(_) => "bodies",
            Request::Receipts(_) => "receipts",
            Request::NodeData(_) => "node_data",
            Request::AccountRange { .. } => "account_range",
            Request::StorageRanges { .. } => "storage_ranges",
            Request::ByteCodes { .. } => "byte_codes",
            Request::TrieNodes { .. } => "trie_nodes",
        }
    }
}

/// A peer's answer, as a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Status {
        best_number: u64,
        best_hash: B256,
        genesis: B256,
    },
    BlockHeaders(Vec<Vec<u8>>),
    BlockBodies(Vec<Body>),
    Receipts(Vec<Receipts>),
    NodeData(Vec<Vec<u8>>),
    /// Accounts as (hash, full account RLP), plus boundary proof nodes.
    AccountRange {
        accounts: Vec<(B256, Vec<u8>)>,
        proof: Vec<Vec<u8>>,
    },
    /// Per requested account its slots as (hash, RLP value), plus the proof of the last.
    StorageRanges {
        slots: Vec<Vec<(B256, Vec<u8>)>>,
        proof: Vec<Vec<u8>>,
    },
    ByteCodes(Vec<Vec<u8>>),
    TrieNodes(Vec<Vec<u8>>),
}

impl Response {
    /// Approximate size on the wire, for throughput accounting.
    pub fn size_bytes(&self) -> usize {
        match self {
            Response::Status { .. } => 80,
            Response::BlockHeaders(v)
            | Response::NodeData(v)
            | Response::ByteCodes(v)
            | Response::TrieNodes(v) => v.iter().map(|x| x.len() + 3).sum(),
            Response::BlockBodies(v) => v.iter().map(|x| x.raw.len()).sum(),
            Response::Receipts(v) => v.iter().map(|x| x.raw.len()).sum(),
            Response::AccountRange { accounts, proof } => {
                accounts.iter().map(|a| a.1.len() + 35).sum::<usize>()
                    + proof.iter().map(|p| p.len()).sum::<usize>()
            }
            Response::StorageRanges { slots, proof } => {
                slots
                    .iter()
                    .flatten()
                    .map(|a| a.1.len() + 35)
                    .sum::<usize>()
                    + proof.iter().map(|p| p.len()).sum::<usize>()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::keccak256;
    use catchup_eth::rlp;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = Header::decode(&data);
            let _ = AccountView::decode(&data);
            let h = Header {
                raw: vec![], hash: B256::ZERO, parent_hash: B256::ZERO, ommers_hash: B256::ZERO,
                state_root: B256::ZERO, transactions_root: B256::ZERO, receipts_root: B256::ZERO,
                number: 1, withdrawals_root: None,
            };
            let _ = Body { raw: data.clone() }.verify(&h);
            let _ = Receipts { raw: data }.verify(&h);
        }
    }

    /// A batch decoded together (hashed four at a time) is the headers decoded one by
    /// one; a header over the limit or one that does not decode fails the batch.
    #[test]
    fn a_batch_decodes_as_its_headers_one_by_one() {
        let chain = crate::eth::sync::chain::generate_chain(23, B256::ZERO, 4);
        let raws: Vec<Vec<u8>> = chain.headers.iter().map(|h| h.raw.clone()).collect();
        let all = Header::decode_all(raws.clone()).unwrap();
        let one: Vec<Header> = raws.iter().map(|r| Header::decode(r).unwrap()).collect();
        assert_eq!(all, one);
        for (h, raw) in all.iter().zip(&raws) {
            assert_eq!(h.hash, keccak256(raw));
        }
        let mut bad = raws.clone();
        bad[5].push(0);
        assert!(Header::decode_all(bad).is_err());
        let mut big = raws;
        big[9] = vec![0u8; MAX_HEADER_BYTES + 1];
        assert!(matches!(
            Header::decode_all(big),
            Err(ItemError::HeaderTooLarge(_))
        ));
    }

    #[test]
    fn account_round_trip() {
        let a = AccountView {
            nonce: 7,
            balance: vec![1, 0],
            storage_root: catchup_eth::EMPTY_ROOT,
            code_hash: catchup_eth::EMPTY_CODE_HASH,
        };
        assert_eq!(AccountView::decode(&a.encode()).unwrap(), a);
        // A peer's non-canonical balance survives the round trip byte for byte.
        let b = AccountView {
            balance: vec![0, 1],
            ..a
        };
        assert_eq!(
            AccountView::decode(&b.encode()).unwrap().encode(),
            b.encode()
        );
    }

    #[test]
    fn header_view_matches_the_full_header() {
        let full = catchup_eth::Header {
            number: 9,
            parent_hash: keccak256(b"p"),
            state_root: keccak256(b"s"),
            base_fee_per_gas: Some(7),
            withdrawals_root: Some(keccak256(b"w")),
            ..Default::default()
        };
        let raw = full.encode();
        let h = Header::decode(&raw).unwrap();
        assert_eq!(h.raw, raw);
        assert_eq!(h.hash, full.hash());
        assert_eq!(
            (h.number, h.parent_hash, h.state_root, h.withdrawals_root),
            (9, full.parent_hash, full.state_root, full.withdrawals_root)
        );
        assert_eq!(h.ommers_hash, full.ommers_hash);
        let pre_shanghai = catchup_eth::Header {
            withdrawals_root: None,
            ..full
        };
        assert_eq!(
            Header::decode(&pre_shanghai.encode())
                .unwrap()
                .withdrawals_root,
            None
        );
        // A truncated field list and an oversized header are refused.
        let it = rlp::parse_exact(&raw).unwrap();
        let f = it.items(32).unwrap();
        let short: Vec<u8> = f[..14].iter().flat_map(|x| x.raw.to_vec()).collect();
        assert!(matches!(
            Header::decode(&rlp::wrap_list(&short)),
            Err(ItemError::HeaderRlp(_))
        ));
        assert_eq!(
            Header::decode(&vec![0u8; MAX_HEADER_BYTES + 1]),
            Err(ItemError::HeaderTooLarge(MAX_HEADER_BYTES + 1))
        );
    }
}

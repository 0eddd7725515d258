//! eth/66–70 messages. Block data (headers, bodies, receipts, trie nodes) is carried as raw
//! RLP item encodings: the chain data layer decodes and verifies them.

use crate::error::{Devp2pError, Result};
use crate::forkid::ForkId;
use crate::rlp;

/// Most items accepted in one request or response list.
pub const MAX_ITEMS: usize = 4096;

pub const STATUS: u64 = 0x00;
pub const NEW_BLOCK_HASHES: u64 = 0x01;
pub const TRANSACTIONS: u64 = 0x02;
pub const GET_BLOCK_HEADERS: u64 = 0x03;
pub const BLOCK_HEADERS: u64 = 0x04;
pub const GET_BLOCK_BODIES: u64 = 0x05;
pub const BLOCK_BODIES: u64 = 0x06;
pub const NEW_BLOCK: u64 = 0x07;
pub const NEW_POOLED_TRANSACTION_HASHES: u64 = 0x08;
pub const GET_POOLED_TRANSACTIONS: u64 = 0x09;
pub const POOLED_TRANSACTIONS: u64 = 0x0a;
pub const GET_NODE_DATA: u64 = 0x0d;
pub const NODE_DATA: u64 = 0x0e;
pub const GET_RECEIPTS: u64 = 0x0f;
pub const RECEIPTS: u64 = 0x10;
pub const BLOCK_RANGE_UPDATE: u64 = 0x11;

/// Status, in the eth/66–68 shape (with total difficulty and head hash) or the eth/69 shape
/// (with the served block range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub version: u64,
    pub network_id: u64,
    /// Total difficulty, big-endian without leading zeros (eth/66–68 only).
    pub total_difficulty: Vec<u8>,
    /// Hash of the latest block.
    pub head_hash: [u8; 32],
    pub genesis_hash: [u8; 32],
    pub fork_id: ForkId,
    /// eth/69: earliest block served.
    pub earliest_block: u64,
    /// eth/69: latest block number.
    pub latest_block: u64,
}

impl Status {
    pub fn encode(&self) -> Vec<u8> {
        if self.version >= 69 {
            rlp::encode_list(&[
                rlp::enc_uint(self.version),
                rlp::enc_uint(self.network_id),
                rlp::enc_bytes(&self.genesis_hash),
                self.fork_id.encode(),
                rlp::enc_uint(self.earliest_block),
                rlp::enc_uint(self.latest_block),
                rlp::enc_bytes(&self.head_hash),
            ])
        } else {
            rlp::encode_list(&[
                rlp::enc_uint(self.version),
                rlp::enc_uint(self.network_id),
                rlp::enc_big_uint(&self.total_difficulty),
                rlp::enc_bytes(&self.head_hash),
                rlp::enc_bytes(&self.genesis_hash),
                self.fork_id.encode(),
            ])
        }
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let (items, _) = rlp::list("status", payload, 16)?;
        let version = rlp::uint("status version", items.first().copied().unwrap_or(&[0xc0]))?;
        if version >= 69 {
            if items.len() < 7 {
                return Err(Devp2pError::rlp(
                    "status (eth/69)",
                    format!("{} items, expected 7", items.len()),
                ));
            }
            Ok(Status {
                version,
                network_id: rlp::uint("status network id", items[1])?,
                total_difficulty: Vec::new(),
                genesis_hash: rlp::fixed::<32>("status genesis", items[2])?,
                fork_id: ForkId::decode(items[3])?,
                earliest_block: rlp::uint("status earliest block", items[4])?,
                latest_block: rlp::uint("status latest block", items[5])?,
                head_hash: rlp::fixed::<32>("status latest hash", items[6])?,
            })
        } else {
            if items.len() < 6 {
                return Err(Devp2pError::rlp(
                    "status",
                    format!("{} items, expected 6", items.len()),
                ));
            }
            Ok(Status {
                version,
                network_id: rlp::uint("status network id", items[1])?,
                total_difficulty: rlp::big_uint("status total difficulty", items[2])?,
                head_hash: rlp::fixed::<32>("status head", items[3])?,
                genesis_hash: rlp::fixed::<32>("status genesis", items[4])?,
                fork_id: ForkId::decode(items[5])?,
                earliest_block: 0,
                latest_block: 0,
            })
        }
    }
}

/// Block by hash or by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashOrNumber {
    Hash([u8; 32]),
    Number(u64),
}

/// A message of the eth protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EthMessage {
    Status(Status),
    GetBlockHeaders {
        request_id: u64,
        origin: HashOrNumber,
        amount: u64,
        skip: u64,
        reverse: bool,
    },
    /// Raw header encodings.
    BlockHeaders {
        request_id: u64,
        headers: Vec<Vec<u8>>,
    },
    GetBlockBodies {
        request_id: u64,
        hashes: Vec<[u8; 32]>,
    },
    /// Raw body encodings `[txs, ommers(, withdrawals)]`.
    BlockBodies {
        request_id: u64,
        bodies: Vec<Vec<u8>>,
    },
    GetReceipts {
        request_id: u64,
        hashes: Vec<[u8; 32]>,
    },
    /// Raw per-block receipt lists (eth/69: without blooms).
    Receipts {
        request_id: u64,
        receipts: Vec<Vec<u8>>,
    },
    /// eth/66 only.
    GetNodeData {
        request_id: u64,
        hashes: Vec<[u8; 32]>,
    },
    /// Node payloads (the node RLP, hashed by the receiver).
    NodeData {
        request_id: u64,
        nodes: Vec<Vec<u8>>,
    },
    /// eth/70 (EIP-7975): receipts of `hashes`, the first block's from receipt
    /// `first_block_receipt_index` on.
    GetReceipts70 {
        request_id: u64,
        first_block_receipt_index: u64,
        hashes: Vec<[u8; 32]>,
    },
    /// eth/70 (EIP-7975): receipt lists (without blooms); when `last_block_incomplete`, the
    /// last list holds only a prefix of its block's receipts.
    Receipts70 {
        request_id: u64,
        last_block_incomplete: bool,
        receipts: Vec<Vec<u8>>,
    },
    /// eth/69 (EIP-7642): the range of blocks the sender serves, sent as its head moves.
    BlockRangeUpdate {
        earliest: u64,
        latest: u64,
        latest_hash: [u8; 32],
    },
    /// Announcements and transaction gossip: accepted, not decoded, ignored by a syncing node.
    Ignored {
        id: u64,
    },
}

fn hashes(what: &'static str, item: &[u8]) -> Result<Vec<[u8; 32]>> {
    let (items, _) = rlp::list(what, item, MAX_ITEMS)?;
    items
        .into_iter()
        .map(|h| rlp::fixed::<32>(what, h))
        .collect()
}

fn raw_items(what: &'static str, item: &[u8]) -> Result<Vec<Vec<u8>>> {
    let (items, _) = rlp::list(what, item, MAX_ITEMS)?;
    Ok(items.into_iter().map(|i| i.to_vec()).collect())
}

fn string_items(what: &'static str, item: &[u8]) -> Result<Vec<Vec<u8>>> {
    let (items, _) = rlp::list(what, item, MAX_ITEMS)?;
    items
        .into_iter()
        .map(|i| rlp::bytes(what, i).map(|b| b.to_vec()))
        .collect()
}

fn req<'a>(what: &'static str, payload: &'a [u8]) -> Result<(u64, &'a [u8])> {
    let items = rlp::list_exact(what, payload, 2)?;
    if items.len() != 2 {
        return Err(Devp2pError::rlp(what, "expected [request-id, body]"));
    }
    Ok((rlp::uint(what, items[0])?, items[1]))
}

fn enc_hashes(h: &[[u8; 32]]) -> Vec<u8> {
    let items: Vec<Vec<u8>> = h.iter().map(|x| rlp::enc_bytes(x)).collect();
    rlp::encode_list(&items)
}

impl EthMessage {
    /// Message id relative to the eth capability offset.
    pub fn id(&self) -> u64 {
        match self {
            EthMessage::Status(_) => STATUS,
            EthMessage::GetBlockHeaders { .. } => GET_BLOCK_HEADERS,
            EthMessage::BlockHeaders { .. } => BLOCK_HEADERS,
            EthMessage::GetBlockBodies { .. } => GET_BLOCK_BODIES,
            EthMessage::BlockBodies { .. } => BLOCK_BODIES,
            EthMessage::GetReceipts { .. } | EthMessage::GetReceipts70 { .. } => GET_RECEIPTS,
            EthMessage::Receipts { .. } | EthMessage::Receipts70 { .. } => RECEIPTS,
            EthMessage::BlockRangeUpdate { .. } => BLOCK_RANGE_UPDATE,
            EthMessage::GetNodeData { .. } => GET_NODE_DATA,
            EthMessage::NodeData { .. } => NODE_DATA,
            EthMessage::Ignored { id } => *id,
        }
    }

    /// Encode the payload (the id goes in the frame).
    pub fn encode(&self) -> Vec<u8> {
        let wrap = |id: u64, body: Vec<u8>| rlp::encode_list(&[rlp::enc_uint(id), body]);
        match self {
            EthMessage::Status(s) => s.encode(),
            EthMessage::GetBlockHeaders {
                request_id,
                origin,
                amount,
                skip,
                reverse,
            } => {
                let o = match origin {
                    HashOrNumber::Hash(h) => rlp::enc_bytes(h),
                    HashOrNumber::Number(n) => rlp::enc_uint(*n),
                };
                wrap(
                    *request_id,
                    rlp::encode_list(&[
                        o,
                        rlp::enc_uint(*amount),
                        rlp::enc_uint(*skip),
                        rlp::enc_uint(u64::from(*reverse)),
                    ]),
                )
            }
            EthMessage::BlockHeaders {
                request_id,
                headers,
            } => wrap(*request_id, rlp::encode_list(headers)),
            EthMessage::GetBlockBodies { request_id, hashes }
            | EthMessage::GetReceipts { request_id, hashes }
            | EthMessage::GetNodeData { request_id, hashes } => {
                wrap(*request_id, enc_hashes(hashes))
            }
            EthMessage::BlockBodies { request_id, bodies } => {
                wrap(*request_id, rlp::encode_list(bodies))
            }
            EthMessage::Receipts {
                request_id,
                receipts,
            } => wrap(*request_id, rlp::encode_list(receipts)),
            EthMessage::NodeData { request_id, nodes } => {
                let items: Vec<Vec<u8>> = nodes.iter().map(|n| rlp::enc_bytes(n)).collect();
                wrap(*request_id, rlp::encode_list(&items))
            }
            EthMessage::GetReceipts70 {
                request_id,
                first_block_receipt_index,
                hashes,
            } => rlp::encode_list(&[
                rlp::enc_uint(*request_id),
                rlp::enc_uint(*first_block_receipt_index),
                enc_hashes(hashes),
            ]),
            EthMessage::Receipts70 {
                request_id,
                last_block_incomplete,
                receipts,
            } => rlp::encode_list(&[
                rlp::enc_uint(*request_id),
                rlp::enc_uint(u64::from(*last_block_incomplete)),
                rlp::encode_list(receipts),
            ]),
            EthMessage::BlockRangeUpdate {
                earliest,
                latest,
                latest_hash,
            } => rlp::encode_list(&[
                rlp::enc_uint(*earliest),
                rlp::enc_uint(*latest),
                rlp::enc_bytes(latest_hash),
            ]),
            EthMessage::Ignored { .. } => rlp::encode_list::<Vec<u8>>(&[]),
        }
    }

    /// Decode a message with relative id `id` of eth version `version`.
    pub fn decode(version: u64, id: u64, payload: &[u8]) -> Result<Self> {
        Ok(match id {
            STATUS => EthMessage::Status(Status::decode(payload)?),
            GET_BLOCK_HEADERS => {
                let (request_id, body) = req("GetBlockHeaders", payload)?;
                let f = rlp::list_exact("GetBlockHeaders query", body, 4)?;
                if f.len() != 4 {
                    return Err(Devp2pError::rlp(
                        "GetBlockHeaders query",
                        "expected [origin, amount, skip, reverse]",
                    ));
                }
                let o = rlp::bytes("GetBlockHeaders origin", f[0])?;
                let origin = if o.len() == 32 {
                    HashOrNumber::Hash(rlp::fixed::<32>("origin", f[0])?)
                } else {
                    HashOrNumber::Number(rlp::uint("GetBlockHeaders origin", f[0])?)
                };
                EthMessage::GetBlockHeaders {
                    request_id,
                    origin,
                    amount: rlp::uint("GetBlockHeaders amount", f[1])?,
                    skip: rlp::uint("GetBlockHeaders skip", f[2])?,
                    reverse: rlp::uint("GetBlockHeaders reverse", f[3])? != 0,
                }
            }
            BLOCK_HEADERS => {
                let (request_id, body) = req("BlockHeaders", payload)?;
                EthMessage::BlockHeaders {
                    request_id,
                    headers: raw_items("BlockHeaders", body)?,
                }
            }
            GET_BLOCK_BODIES => {
                let (request_id, body) = req("GetBlockBodies", payload)?;
                EthMessage::GetBlockBodies {
                    request_id,
                    hashes: hashes("GetBlockBodies", body)?,
                }
            }
            BLOCK_BODIES => {
                let (request_id, body) = req("BlockBodies", payload)?;
                EthMessage::BlockBodies {
                    request_id,
                    bodies: raw_items("BlockBodies", body)?,
                }
            }
            GET_RECEIPTS if version >= 70 => {
                let f = rlp::list_exact("GetReceipts (eth/70)", payload, 3)?;
                if f.len() != 3 {
                    return Err(Devp2pError::rlp(
                        "GetReceipts (eth/70)",
                        "expected [request-id, firstBlockReceiptIndex, hashes]",
                    ));
                }
                EthMessage::GetReceipts70 {
                    request_id: rlp::uint("GetReceipts request id", f[0])?,
                    first_block_receipt_index: rlp::uint(
                        "GetReceipts firstBlockReceiptIndex",
                        f[1],
                    )?,
                    hashes: hashes("GetReceipts", f[2])?,
                }
            }
            RECEIPTS if version >= 70 => {
                let f = rlp::list_exact("Receipts (eth/70)", payload, 3)?;
                if f.len() != 3 {
                    return Err(Devp2pError::rlp(
                        "Receipts (eth/70)",
                        "expected [request-id, lastBlockIncomplete, lists]",
                    ));
                }
                let flag = rlp::uint("Receipts lastBlockIncomplete", f[1])?;
                if flag > 1 {
                    return Err(Devp2pError::rlp(
                        "Receipts lastBlockIncomplete",
                        format!("{flag} is neither 0 nor 1"),
                    ));
                }
                EthMessage::Receipts70 {
                    request_id: rlp::uint("Receipts request id", f[0])?,
                    last_block_incomplete: flag == 1,
                    receipts: raw_items("Receipts", f[2])?,
                }
            }
            GET_RECEIPTS => {
                let (request_id, body) = req("GetReceipts", payload)?;
                EthMessage::GetReceipts {
                    request_id,
                    hashes: hashes("GetReceipts", body)?,
                }
            }
            RECEIPTS => {
                let (request_id, body) = req("Receipts", payload)?;
                EthMessage::Receipts {
                    request_id,
                    receipts: raw_items("Receipts", body)?,
                }
            }
            GET_NODE_DATA if version == 66 => {
                let (request_id, body) = req("GetNodeData", payload)?;
                EthMessage::GetNodeData {
                    request_id,
                    hashes: hashes("GetNodeData", body)?,
                }
            }
            NODE_DATA if version == 66 => {
                let (request_id, body) = req("NodeData", payload)?;
                EthMessage::NodeData {
                    request_id,
                    nodes: string_items("NodeData", body)?,
                }
            }
            NEW_BLOCK_HASHES
            | TRANSACTIONS
            | NEW_BLOCK
            | NEW_POOLED_TRANSACTION_HASHES
            | GET_POOLED_TRANSACTIONS
            | POOLED_TRANSACTIONS => EthMessage::Ignored { id },
            BLOCK_RANGE_UPDATE if version >= 69 => {
                let f = rlp::list_exact("BlockRangeUpdate", payload, 3)?;
                if f.len() != 3 {
                    return Err(Devp2pError::rlp(
                        "BlockRangeUpdate",
                        "expected [earliest, latest, latest-hash]",
                    ));
                }
                EthMessage::BlockRangeUpdate {
                    earliest: rlp::uint("BlockRangeUpdate earliest", f[0])?,
                    latest: rlp::uint("BlockRangeUpdate latest", f[1])?,
                    latest_hash: rlp::fixed::<32>("BlockRangeUpdate latest hash", f[2])?,
                }
            }
            other => return Err(Devp2pError::UnknownMessageId { id: other }),
        })
    }
}

/// Serve an eth/70 Receipts answer (EIP-7975) from whole per-block receipt lists (eth/69
/// form, one RLP list per block): the first block's receipts before
/// `first_block_receipt_index` are left out, and lists are added until their receipts reach
/// `limit_bytes`. A block whose receipts would pass the limit is cut after the last receipt
/// that fits and the answer says `last_block_incomplete`; at least one receipt is always
/// sent so a client makes progress. Returns the lists and the flag.
pub fn split_receipts_eth70(
    lists: &[Vec<u8>],
    first_block_receipt_index: u64,
    limit_bytes: usize,
) -> Result<(Vec<Vec<u8>>, bool)> {
    let mut out = Vec::with_capacity(lists.len());
    let mut size = 0usize;
    let mut sent = 0usize;
    for (b, raw) in lists.iter().enumerate() {
        let (items, _) = rlp::list("receipt list", raw, usize::MAX)?;
        let skip = if b == 0 {
            usize::try_from(first_block_receipt_index).unwrap_or(usize::MAX)
        } else {
            0
        };
        let rest = items.get(skip..).unwrap_or(&[]);
        let whole: usize = rest.iter().map(|r| r.len()).sum();
        if size + whole <= limit_bytes || (sent == 0 && rest.is_empty()) {
            size += whole;
            sent += rest.len();
            out.push(if skip == 0 {
                raw.clone()
            } else {
                rlp::encode_list(rest)
            });
            continue;
        }
        // This block does not fit whole: cut it, or stop before it at a block boundary.
        let mut taken = 0usize;
        for r in rest {
            if size + r.len() > limit_bytes && sent > 0 {
                break;
            }
            size += r.len();
            sent += 1;
            taken += 1;
        }
        if taken > 0 {
            out.push(rlp::encode_list(&rest[..taken]));
            return Ok((out, taken < rest.len()));
        }
        return Ok((out, false));
    }
    Ok((out, false))
}

/// One receipt list from a block's partial lists (eth/70 continuations), in order.
pub fn join_receipt_lists(parts: &[Vec<u8>]) -> Result<Vec<u8>> {
    let mut all: Vec<&[u8]> = Vec::new();
    for p in parts {
        let (items, _) = rlp::list("receipt list", p, usize::MAX)?;
        all.extend(items);
    }
    Ok(rlp::encode_list(&all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_both_shapes_roundtrip() {
        let mut s = Status {
            version: 68,
            network_id: 1,
            total_difficulty: vec![0x02, 0x00, 0x00],
            head_hash: [1; 32],
            genesis_hash: [2; 32],
            fork_id: ForkId {
                hash: [0x37, 0x7a, 0xaa, 0x78],
                next: 0,
            },
            earliest_block: 0,
            latest_block: 0,
        };
        assert_eq!(Status::decode(&s.encode()).unwrap(), s);
        s.version = 69;
        s.total_difficulty = Vec::new();
        s.earliest_block = 0;
        s.latest_block = 600;
        assert_eq!(Status::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn requests_roundtrip() {
        let msgs = vec![
            EthMessage::GetBlockHeaders {
                request_id: 7,
                origin: HashOrNumber::Number(0),
                amount: 192,
                skip: 0,
                reverse: false,
            },
            EthMessage::GetBlockHeaders {
                request_id: 8,
                origin: HashOrNumber::Hash([9; 32]),
                amount: 1,
                skip: 3,
                reverse: true,
            },
            EthMessage::BlockHeaders {
                request_id: 7,
                headers: vec![rlp::encode_list(&[rlp::enc_uint(1)])],
            },
            EthMessage::GetBlockBodies {
                request_id: 1,
                hashes: vec![[3; 32], [4; 32]],
            },
            EthMessage::BlockBodies {
                request_id: 1,
                bodies: vec![rlp::encode_list(&[
                    rlp::encode_list::<Vec<u8>>(&[]),
                    rlp::encode_list::<Vec<u8>>(&[]),
                ])],
            },
            EthMessage::GetReceipts {
                request_id: 2,
                hashes: vec![[5; 32]],
            },
            EthMessage::Receipts {
                request_id: 2,
                receipts: vec![rlp::encode_list::<Vec<u8>>(&[])],
            },
            EthMessage::GetNodeData {
                request_id: 3,
                hashes: vec![[6; 32]],
            },
            EthMessage::NodeData {
                request_id: 3,
                nodes: vec![vec![0xc0]],
            },
        ];
        for m in msgs {
            assert_eq!(EthMessage::decode(66, m.id(), &m.encode()).unwrap(), m);
        }
        for m in [
            EthMessage::GetReceipts70 {
                request_id: 4,
                first_block_receipt_index: 3,
                hashes: vec![[5; 32], [6; 32]],
            },
            EthMessage::Receipts70 {
                request_id: 4,
                last_block_incomplete: true,
                receipts: vec![rlp::encode_list(&[rlp::enc_uint(1)])],
            },
            EthMessage::BlockRangeUpdate {
                earliest: 0,
                latest: 77,
                latest_hash: [7; 32],
            },
        ] {
            assert_eq!(EthMessage::decode(70, m.id(), &m.encode()).unwrap(), m);
        }
        // eth/69 keeps the old receipts shapes; a bad flag is refused.
        let r69 = EthMessage::Receipts {
            request_id: 2,
            receipts: vec![rlp::encode_list::<Vec<u8>>(&[])],
        };
        assert_eq!(
            EthMessage::decode(69, RECEIPTS, &r69.encode()).unwrap(),
            r69
        );
        let bad = rlp::encode_list(&[
            rlp::enc_uint(1),
            rlp::enc_uint(2),
            rlp::encode_list::<Vec<u8>>(&[]),
        ]);
        assert!(EthMessage::decode(70, RECEIPTS, &bad).is_err());
        assert!(EthMessage::decode(70, GET_RECEIPTS, &r69.encode()).is_err());
        assert!(matches!(
            EthMessage::decode(68, GET_NODE_DATA, &[0xc0]),
            Err(Devp2pError::UnknownMessageId { .. })
        ));
        assert_eq!(
            EthMessage::decode(68, NEW_BLOCK_HASHES, &[0xc0]).unwrap(),
            EthMessage::Ignored {
                id: NEW_BLOCK_HASHES
            }
        );
    }

    fn receipt(i: u8, len: usize) -> Vec<u8> {
        rlp::enc_bytes(&vec![i; len])
    }

    #[test]
    fn eth70_partial_receipts_split_and_join() {
        // Three blocks of 3, 0 and 4 receipts of 11 bytes each (10 + header).
        let blocks: Vec<Vec<Vec<u8>>> = vec![
            (0..3).map(|i| receipt(i, 10)).collect(),
            vec![],
            (0..4).map(|i| receipt(10 + i, 10)).collect(),
        ];
        let lists: Vec<Vec<u8>> = blocks.iter().map(|b| rlp::encode_list(b)).collect();
        // Everything fits.
        let (out, inc) = split_receipts_eth70(&lists, 0, 1000).unwrap();
        assert_eq!((out.clone(), inc), (lists.clone(), false));
        // 5 receipts fit: block 0 whole, block 1 (empty), block 2 cut after 2.
        let (out, inc) = split_receipts_eth70(&lists, 0, 55).unwrap();
        assert!(inc);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2], rlp::encode_list(&blocks[2][..2]));
        // The client continues block 2 from receipt 2 and joins the parts.
        let (more, inc2) = split_receipts_eth70(&lists[2..], 2, 55).unwrap();
        assert!(!inc2);
        assert_eq!(more, vec![rlp::encode_list(&blocks[2][2..])]);
        assert_eq!(
            join_receipt_lists(&[out[2].clone(), more[0].clone()]).unwrap(),
            lists[2]
        );
        // A limit below one receipt still sends one.
        let (out, inc) = split_receipts_eth70(&lists, 0, 1).unwrap();
        assert_eq!((out, inc), (vec![rlp::encode_list(&blocks[0][..1])], true));
        // Cut exactly at a block boundary: no flag, the next block is left for later.
        let (out, inc) = split_receipts_eth70(&lists, 0, 33).unwrap();
        assert!(!inc);
        assert_eq!(out, lists[..2].to_vec());
        // An index past the block's receipts leaves its list empty.
        let (out, _) = split_receipts_eth70(&lists[..1], 9, 1000).unwrap();
        assert_eq!(out, vec![rlp::encode_list::<Vec<u8>>(&[])]);
    }
}

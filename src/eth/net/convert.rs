//! Mapping between the sync engines' request/response values (`crate::eth::sync::types`) and
//! eth/snap wire messages.

use alloy_primitives::B256;
use catchup_devp2p::eth::{self, EthMessage};
use catchup_devp2p::snap::SnapMessage;
use catchup_devp2p::{rlp, Devp2pError};

use super::wire::Wire;
use crate::eth::sync::types::{
    AccountView, Body, HashOrNumber, Receipts, Request, Response, TriePath,
};
use catchup_eth::{EMPTY_CODE_HASH, EMPTY_ROOT};

fn b(h: &B256) -> [u8; 32] {
    h.0
}

/// Hex-prefix (compact) encoding of a nibble path, as snap's GetTrieNodes carries it.
pub fn compact_encode(nibbles: &[u8]) -> Vec<u8> {
    catchup_eth::hex_prefix_encode(nibbles, false)
}

/// Decode a compact path (leaf flag ignored) into nibbles.
pub fn compact_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let first = *bytes.first()?;
    let mut out = Vec::with_capacity(bytes.len() * 2);
    if first & 0x10 != 0 {
        out.push(first & 0x0f);
    }
    for x in &bytes[1..] {
        out.push(x >> 4);
        out.push(x & 0x0f);
    }
    Some(out)
}

/// Slim account encoding of snap (empty storage root and code hash as empty strings).
pub fn full_to_slim(full: &[u8]) -> Option<Vec<u8>> {
    AccountView::decode(full).ok().map(|a| a.encode_slim())
}

/// Full (consensus) account encoding from snap's slim form.
pub fn slim_to_full(slim: &[u8]) -> Result<Vec<u8>, Devp2pError> {
    let f = rlp::list_exact("slim account", slim, 4)?;
    if f.len() != 4 {
        return Err(Devp2pError::rlp(
            "slim account",
            format!("{} fields, expected 4", f.len()),
        ));
    }
    let nonce = rlp::uint("account nonce", f[0])?;
    let balance = rlp::big_uint("account balance", f[1])?;
    let root = rlp::bytes("account root", f[2])?;
    let code = rlp::bytes("account code hash", f[3])?;
    let root = if root.is_empty() {
        EMPTY_ROOT
    } else {
        B256::from(rlp::fixed::<32>("account root", f[2])?)
    };
    let code = if code.is_empty() {
        EMPTY_CODE_HASH
    } else {
        B256::from(rlp::fixed::<32>("account code hash", f[3])?)
    };
    Ok(AccountView {
        nonce,
        balance,
        storage_root: root,
        code_hash: code,
    }
    .encode())
}

/// The wire request for an engine request (`None` for `Status`, which the handshake answers).
pub fn request_to_wire(req: &Request, request_id: u64) -> Option<Wire> {
    Some(match req {
        Request::Status => return None,
        Request::BlockHeaders {
            origin,
            amount,
            skip,
            reverse,
        } => Wire::Eth(EthMessage::GetBlockHeaders {
            request_id,
            origin: match origin {
                HashOrNumber::Hash(h) => eth::HashOrNumber::Hash(b(h)),
                HashOrNumber::Number(n) => eth::HashOrNumber::Number(*n),
            },
            amount: *amount,
            skip: *skip,
            reverse: *reverse,
        }),
        Request::BlockBodies(h) => Wire::Eth(EthMessage::GetBlockBodies {
            request_id,
            hashes: h.iter().map(b).collect(),
        }),
        Request::Receipts(h) => Wire::Eth(EthMessage::GetReceipts {
            request_id,
            hashes: h.iter().map(b).collect(),
        }),
        Request::NodeData(h) => Wire::Eth(EthMessage::GetNodeData {
            request_id,
            hashes: h.iter().map(b).collect(),
        }),
        Request::AccountRange {
            root,
            origin,
            limit,
            bytes,
        } => Wire::Snap(SnapMessage::GetAccountRange {
            request_id,
            root: b(root),
            origin: b(origin),
            limit: b(limit),
            response_bytes: *bytes,
        }),
        Request::StorageRanges {
            root,
            accounts,
            origin,
            limit,
            bytes,
        } => Wire::Snap(SnapMessage::GetStorageRanges {
            request_id,
            root: b(root),
            accounts: accounts.iter().map(b).collect(),
            origin: origin.to_vec(),
            limit: limit.to_vec(),
            response_bytes: *bytes,
        }),
        Request::ByteCodes { hashes, bytes } => Wire::Snap(SnapMessage::GetByteCodes {
            request_id,
            hashes: hashes.iter().map(b).collect(),
            response_bytes: *bytes,
        }),
        Request::TrieNodes { root, paths, bytes } => Wire::Snap(SnapMessage::GetTrieNodes {
            request_id,
            root: b(root),
            paths: paths
                .iter()
                .map(|p| match p.account {
                    None => vec![compact_encode(&p.path)],
                    Some(acc) => vec![acc.to_vec(), compact_encode(&p.path)],
                })
                .collect(),
            response_bytes: *bytes,
        }),
    })
}

/// The engine request for an incoming wire request, with its request id.
pub fn wire_to_request(w: &Wire) -> Option<(u64, Request)> {
    Some(match w {
        Wire::Eth(EthMessage::GetBlockHeaders {
            request_id,
            origin,
            amount,
            skip,
            reverse,
        }) => (
            *request_id,
            Request::BlockHeaders {
                origin: match origin {
                    eth::HashOrNumber::Hash(h) => HashOrNumber::Hash(B256::from(*h)),
                    eth::HashOrNumber::Number(n) => HashOrNumber::Number(*n),
                },
                amount: *amount,
                skip: *skip,
                reverse: *reverse,
            },
        ),
        Wire::Eth(EthMessage::GetBlockBodies { request_id, hashes }) => (
            *request_id,
            Request::BlockBodies(hashes.iter().map(|h| B256::from(*h)).collect()),
        ),
        Wire::Eth(EthMessage::GetReceipts { request_id, hashes }) => (
            *request_id,
            Request::Receipts(hashes.iter().map(|h| B256::from(*h)).collect()),
        ),
        Wire::Eth(EthMessage::GetNodeData { request_id, hashes }) => (
            *request_id,
            Request::NodeData(hashes.iter().map(|h| B256::from(*h)).collect()),
        ),
        Wire::Snap(SnapMessage::GetAccountRange {
            request_id,
            root,
            origin,
            limit,
            response_bytes,
        }) => (
            *request_id,
            Request::AccountRange {
                root: B256::from(*root),
                origin: B256::from(*origin),
                limit: B256::from(*limit),
                bytes: *response_bytes,
            },
        ),
        Wire::Snap(SnapMessage::GetStorageRanges {
            request_id,
            root,
            accounts,
            origin,
            limit,
            response_bytes,
        }) => {
            // Short origins/limits are left-aligned: origin padded with 0x00, limit with 0xff.
            let pad = |v: &[u8], fill: u8| {
                let mut o = [fill; 32];
                let n = v.len().min(32);
                o[..n].copy_from_slice(&v[..n]);
                B256::from(o)
            };
            (
                *request_id,
                Request::StorageRanges {
                    root: B256::from(*root),
                    accounts: accounts.iter().map(|h| B256::from(*h)).collect(),
                    origin: pad(origin, 0x00),
                    limit: pad(limit, 0xff),
                    bytes: *response_bytes,
                },
            )
        }
        Wire::Snap(SnapMessage::GetByteCodes {
            request_id,
            hashes,
            response_bytes,
        }) => (
            *request_id,
            Request::ByteCodes {
                hashes: hashes.iter().map(|h| B256::from(*h)).collect(),
                bytes: *response_bytes,
            },
        ),
        Wire::Snap(SnapMessage::GetTrieNodes {
            request_id,
            root,
            paths,
            response_bytes,
        }) => {
            let mut out = Vec::new();
            for set in paths.iter().take(1024) {
                match set.len() {
                    0 => {}
                    1 => out.push(TriePath {
                        account: None,
                        path: compact_decode(&set[0])?,
                    }),
                    _ => {
                        let acc: [u8; 32] = set[0].as_slice().try_into().ok()?;
                        for p in &set[1..] {
                            out.push(TriePath {
                                account: Some(B256::from(acc)),
                                path: compact_decode(p)?,
                            });
                        }
                    }
                }
            }
            (
                *request_id,
                Request::TrieNodes {
                    root: B256::from(*root),
                    paths: out,
                    bytes: *response_bytes,
                },
            )
        }
        _ => return None,
    })
}

/// The wire response for an engine response.
pub fn response_to_wire(resp: &Response, request_id: u64) -> Option<Wire> {
    Some(match resp {
        Response::Status { .. } => return None,
        Response::BlockHeaders(h) => Wire::Eth(EthMessage::BlockHeaders {
            request_id,
            headers: h.clone(),
        }),
        Response::BlockBodies(v) => Wire::Eth(EthMessage::BlockBodies {
            request_id,
            bodies: v.iter().map(|x| x.raw.clone()).collect(),
        }),
        Response::Receipts(v) => Wire::Eth(EthMessage::Receipts {
            request_id,
            receipts: v.iter().map(|x| x.raw.clone()).collect(),
        }),
        Response::NodeData(v) => Wire::Eth(EthMessage::NodeData {
            request_id,
            nodes: v.clone(),
        }),
        Response::AccountRange { accounts, proof } => Wire::Snap(SnapMessage::AccountRange {
            request_id,
            accounts: accounts
                .iter()
                .filter_map(|(h, full)| Some((h.0, full_to_slim(full)?)))
                .collect(),
            proof: proof.clone(),
        }),
        Response::StorageRanges { slots, proof } => Wire::Snap(SnapMessage::StorageRanges {
            request_id,
            slots: slots
                .iter()
                .map(|acc| acc.iter().map(|(h, v)| (h.0, v.clone())).collect())
                .collect(),
            proof: proof.clone(),
        }),
        Response::ByteCodes(v) => Wire::Snap(SnapMessage::ByteCodes {
            request_id,
            codes: v.clone(),
        }),
        Response::TrieNodes(v) => Wire::Snap(SnapMessage::TrieNodes {
            request_id,
            nodes: v.clone(),
        }),
    })
}

/// The engine response for a wire response, with its request id (`None` for requests and
/// announcements).
pub fn wire_to_response(w: &Wire) -> Result<Option<(u64, Response)>, Devp2pError> {
    Ok(Some(match w {
        Wire::Eth(EthMessage::BlockHeaders {
            request_id,
            headers,
        }) => (*request_id, Response::BlockHeaders(headers.clone())),
        Wire::Eth(EthMessage::BlockBodies { request_id, bodies }) => (
            *request_id,
            Response::BlockBodies(bodies.iter().map(|r| Body { raw: r.clone() }).collect()),
        ),
        Wire::Eth(EthMessage::Receipts {
            request_id,
            receipts,
        }) => (
            *request_id,
            Response::Receipts(
                receipts
                    .iter()
                    .map(|r| Receipts { raw: r.clone() })
                    .collect(),
            ),
        ),
        Wire::Eth(EthMessage::NodeData { request_id, nodes }) => {
            (*request_id, Response::NodeData(nodes.clone()))
        }
        Wire::Snap(SnapMessage::AccountRange {
            request_id,
            accounts,
            proof,
        }) => {
            let mut acc = Vec::with_capacity(accounts.len());
            for (h, slim) in accounts {
                acc.push((B256::from(*h), slim_to_full(slim)?));
            }
            (
                *request_id,
                Response::AccountRange {
                    accounts: acc,
                    proof: proof.clone(),
                },
            )
        }
        Wire::Snap(SnapMessage::StorageRanges {
            request_id,
            slots,
            proof,
        }) => (
            *request_id,
            Response::StorageRanges {
                slots: slots
                    .iter()
                    .map(|a| a.iter().map(|(h, v)| (B256::from(*h), v.clone())).collect())
                    .collect(),
                proof: proof.clone(),
            },
        ),
        Wire::Snap(SnapMessage::ByteCodes { request_id, codes }) => {
            (*request_id, Response::ByteCodes(codes.clone()))
        }
        Wire::Snap(SnapMessage::TrieNodes { request_id, nodes }) => {
            (*request_id, Response::TrieNodes(nodes.clone()))
        }
        _ => return Ok(None),
    }))
}

/// An empty answer of the right kind (for requests this node cannot serve).
pub fn empty_response(req: &Request) -> Response {
    match req {
        Request::Status => Response::BlockHeaders(Vec::new()),
        Request::BlockHeaders { .. } => Response::BlockHeaders(Vec::new()),
        Request::BlockBodies(_) => Response::BlockBodies(Vec::new()),
        Request::Receipts(_) => Response::Receipts(Vec::new()),
        Request::NodeData(_) => Response::NodeData(Vec::new()),
        Request::AccountRange { .. } => Response::AccountRange {
            accounts: Vec::new(),
            proof: Vec::new(),
        },
        Request::StorageRanges { .. } => Response::StorageRanges {
            slots: Vec::new(),
            proof: Vec::new(),
        },
        Request::ByteCodes { .. } => Response::ByteCodes(Vec::new()),
        Request::TrieNodes { .. } => Response::TrieNodes(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_paths_roundtrip() {
        for p in [
            vec![],
            vec![1],
            vec![1, 2],
            vec![0xf, 0, 3],
            vec![1, 2, 3, 4],
        ] {
            assert_eq!(compact_decode(&compact_encode(&p)).unwrap(), p);
        }
    }

    #[test]
    fn slim_full_accounts() {
        let a = AccountView {
            nonce: 1,
            balance: vec![5],
            storage_root: EMPTY_ROOT,
            code_hash: EMPTY_CODE_HASH,
        };
        let slim = full_to_slim(&a.encode()).unwrap();
        assert!(slim.len() < a.encode().len());
        assert_eq!(slim_to_full(&slim).unwrap(), a.encode());
    }

    #[test]
    fn requests_map_both_ways() {
        let reqs = vec![
            Request::BlockHeaders {
                origin: HashOrNumber::Number(5),
                amount: 10,
                skip: 0,
                reverse: false,
            },
            Request::BlockBodies(vec![B256::repeat_byte(1)]),
            Request::Receipts(vec![B256::repeat_byte(2)]),
            Request::NodeData(vec![B256::repeat_byte(3)]),
            Request::AccountRange {
                root: B256::repeat_byte(4),
                origin: B256::ZERO,
                limit: B256::repeat_byte(0xff),
                bytes: 1000,
            },
            Request::ByteCodes {
                hashes: vec![B256::repeat_byte(5)],
                bytes: 1000,
            },
            Request::TrieNodes {
                root: B256::repeat_byte(6),
                paths: vec![
                    TriePath {
                        account: None,
                        path: vec![1, 2, 3],
                    },
                    TriePath {
                        account: Some(B256::repeat_byte(7)),
                        path: vec![],
                    },
                ],
                bytes: 1000,
            },
        ];
        for (i, r) in reqs.into_iter().enumerate() {
            let w = request_to_wire(&r, i as u64).unwrap();
            assert_eq!(wire_to_request(&w).unwrap(), (i as u64, r));
        }
    }
}

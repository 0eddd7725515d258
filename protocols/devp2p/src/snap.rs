//! snap/1 messages. Accounts, slots, codes, proofs and trie nodes are carried raw; the state
//! layer verifies them against the requested root.

use crate::error::{Devp2pError, Result};
use crate::rlp;

/// Most items accepted in one snap list.
pub const MAX_ITEMS: usize = 65_536;
/// Largest response size a request may ask for; requests above are clamped by servers.
pub const MAX_RESPONSE_BYTES: u64 = 2 * 1024 * 1024;
/// Soft response size servers aim for (the spec's 512 KiB recommendation is the client's usual ask).
pub const SOFT_RESPONSE_BYTES: u64 = 512 * 1024;

pub const GET_ACCOUNT_RANGE: u64 = 0x00;
pub const ACCOUNT_RANGE: u64 = 0x01;
pub const GET_STORAGE_RANGES: u64 = 0x02;
pub const STORAGE_RANGES: u64 = 0x03;
pub const GET_BYTE_CODES: u64 = 0x04;
pub const BYTE_CODES: u64 = 0x05;
pub const GET_TRIE_NODES: u64 = 0x06;
pub const TRIE_NODES: u64 = 0x07;

/// A message of snap/1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapMessage {
    GetAccountRange {
        request_id: u64,
        root: [u8; 32],
        origin: [u8; 32],
        limit: [u8; 32],
        response_bytes: u64,
    },
    /// Accounts as (hash, slim account RLP item); proof nodes as node RLP.
    AccountRange {
        request_id: u64,
        accounts: Vec<([u8; 32], Vec<u8>)>,
        proof: Vec<Vec<u8>>,
    },
    GetStorageRanges {
        request_id: u64,
        root: [u8; 32],
        accounts: Vec<[u8; 32]>,
        origin: Vec<u8>,
        limit: Vec<u8>,
        response_bytes: u64,
    },
    /// Per account, (slot hash, slot value string payload).
    StorageRanges {
        request_id: u64,
        slots: Vec<Vec<([u8; 32], Vec<u8>)>>,
        proof: Vec<Vec<u8>>,
    },
    GetByteCodes {
        request_id: u64,
        hashes: Vec<[u8; 32]>,
        response_bytes: u64,
    },
    ByteCodes {
        request_id: u64,
        codes: Vec<Vec<u8>>,
    },
    /// Paths: per account a list of compact-encoded paths (first the account path, then storage paths).
    GetTrieNodes {
        request_id: u64,
        root: [u8; 32],
        paths: Vec<Vec<Vec<u8>>>,
        response_bytes: u64,
    },
    TrieNodes {
        request_id: u64,
        nodes: Vec<Vec<u8>>,
    },
}

fn strings(what: &'static str, item: &[u8]) -> Result<Vec<Vec<u8>>> {
    let (items, _) = rlp::list(what, item, MAX_ITEMS)?;
    items
        .into_iter()
        .map(|i| rlp::bytes(what, i).map(|b| b.to_vec()))
        .collect()
}

fn enc_strings(v: &[Vec<u8>]) -> Vec<u8> {
    let items: Vec<Vec<u8>> = v.iter().map(|x| rlp::enc_bytes(x)).collect();
    rlp::encode_list(&items)
}

fn fields<'a>(what: &'static str, payload: &'a [u8], n: usize) -> Result<Vec<&'a [u8]>> {
    let items = rlp::list_exact(what, payload, 16)?;
    if items.len() < n {
        return Err(Devp2pError::rlp(
            what,
            format!("{} fields, expected {n}", items.len()),
        ));
    }
    Ok(items)
}

fn pair(what: &'static str, item: &[u8]) -> Result<([u8; 32], Vec<u8>)> {
    let f = rlp::list_exact(what, item, 2)?;
    if f.len() != 2 {
        return Err(Devp2pError::rlp(what, "expected [hash, value]"));
    }
    Ok((rlp::fixed::<32>(what, f[0])?, f[1].to_vec()))
}

impl SnapMessage {
    pub fn id(&self) -> u64 {
        match self {
            SnapMessage::GetAccountRange { .. } => GET_ACCOUNT_RANGE,
            SnapMessage::AccountRange { .. } => ACCOUNT_RANGE,
            SnapMessage::GetStorageRanges { .. } => GET_STORAGE_RANGES,
            SnapMessage::StorageRanges { .. } => STORAGE_RANGES,
            SnapMessage::GetByteCodes { .. } => GET_BYTE_CODES,
            SnapMessage::ByteCodes { .. } => BYTE_CODES,
            SnapMessage::GetTrieNodes { .. } => GET_TRIE_NODES,
            SnapMessage::TrieNodes { .. } => TRIE_NODES,
        }
    }

    /// The response byte limit of a request, clamped to [`MAX_RESPONSE_BYTES`].
    pub fn response_limit_bytes(&self) -> Option<u64> {
        match self {
            SnapMessage::GetAccountRange { response_bytes, .. }
            | SnapMessage::GetStorageRanges { response_bytes, .. }
            | SnapMessage::GetByteCodes { response_bytes, .. }
            | SnapMessage::GetTrieNodes { response_bytes, .. } => {
                Some((*response_bytes).min(MAX_RESPONSE_BYTES))
            }
            _ => None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        use rlp::{enc_bytes as b, enc_uint as u, encode_list as l};
        match self {
            SnapMessage::GetAccountRange {
                request_id,
                root,
                origin,
                limit,
                response_bytes,
            } => l(&[
                u(*request_id),
                b(root),
                b(origin),
                b(limit),
                u(*response_bytes),
            ]),
            SnapMessage::AccountRange {
                request_id,
                accounts,
                proof,
            } => {
                let a: Vec<Vec<u8>> = accounts
                    .iter()
                    .map(|(h, acc)| l(&[b(h), acc.clone()]))
                    .collect();
                l(&[u(*request_id), l(&a), enc_strings(proof)])
            }
            SnapMessage::GetStorageRanges {
                request_id,
                root,
                accounts,
                origin,
                limit,
                response_bytes,
            } => {
                let a: Vec<Vec<u8>> = accounts.iter().map(|h| b(h)).collect();
                l(&[
                    u(*request_id),
                    b(root),
                    l(&a),
                    b(origin),
                    b(limit),
                    u(*response_bytes),
                ])
            }
            SnapMessage::StorageRanges {
                request_id,
                slots,
                proof,
            } => {
                let s: Vec<Vec<u8>> = slots
                    .iter()
                    .map(|acc| {
                        let inner: Vec<Vec<u8>> =
                            acc.iter().map(|(h, v)| l(&[b(h), b(v)])).collect();
                        l(&inner)
                    })
                    .collect();
                l(&[u(*request_id), l(&s), enc_strings(proof)])
            }
            SnapMessage::GetByteCodes {
                request_id,
                hashes,
                response_bytes,
            } => {
                let h: Vec<Vec<u8>> = hashes.iter().map(|x| b(x)).collect();
                l(&[u(*request_id), l(&h), u(*response_bytes)])
            }
            SnapMessage::ByteCodes { request_id, codes } => {
                l(&[u(*request_id), enc_strings(codes)])
            }
            SnapMessage::GetTrieNodes {
                request_id,
                root,
                paths,
                response_bytes,
            } => {
                let p: Vec<Vec<u8>> = paths.iter().map(|set| enc_strings(set)).collect();
                l(&[u(*request_id), b(root), l(&p), u(*response_bytes)])
            }
            SnapMessage::TrieNodes { request_id, nodes } => {
                l(&[u(*request_id), enc_strings(nodes)])
            }
        }
    }

    pub fn decode(id: u64, payload: &[u8]) -> Result<Self> {
        Ok(match id {
            GET_ACCOUNT_RANGE => {
                let f = fields("GetAccountRange", payload, 5)?;
                SnapMessage::GetAccountRange {
                    request_id: rlp::uint("GetAccountRange id", f[0])?,
                    root: rlp::fixed::<32>("GetAccountRange root", f[1])?,
                    origin: rlp::fixed::<32>("GetAccountRange origin", f[2])?,
                    limit: rlp::fixed::<32>("GetAccountRange limit", f[3])?,
                    response_bytes: rlp::uint("GetAccountRange bytes", f[4])?,
                }
            }
            ACCOUNT_RANGE => {
                let f = fields("AccountRange", payload, 3)?;
                let (acc, _) = rlp::list("AccountRange accounts", f[1], MAX_ITEMS)?;
                SnapMessage::AccountRange {
                    request_id: rlp::uint("AccountRange id", f[0])?,
                    accounts: acc
                        .into_iter()
                        .map(|a| pair("AccountRange account", a))
                        .collect::<Result<_>>()?,
                    proof: strings("AccountRange proof", f[2])?,
                }
            }
            GET_STORAGE_RANGES => {
                let f = fields("GetStorageRanges", payload, 6)?;
                let (acc, _) = rlp::list("GetStorageRanges accounts", f[2], MAX_ITEMS)?;
                SnapMessage::GetStorageRanges {
                    request_id: rlp::uint("GetStorageRanges id", f[0])?,
                    root: rlp::fixed::<32>("GetStorageRanges root", f[1])?,
                    accounts: acc
                        .into_iter()
                        .map(|a| rlp::fixed::<32>("GetStorageRanges account", a))
                        .collect::<Result<_>>()?,
                    origin: rlp::bytes("GetStorageRanges origin", f[3])?.to_vec(),
                    limit: rlp::bytes("GetStorageRanges limit", f[4])?.to_vec(),
                    response_bytes: rlp::uint("GetStorageRanges bytes", f[5])?,
                }
            }
            STORAGE_RANGES => {
                let f = fields("StorageRanges", payload, 3)?;
                let (accs, _) = rlp::list("StorageRanges slots", f[1], MAX_ITEMS)?;
                let mut slots = Vec::with_capacity(accs.len());
                for a in accs {
                    let (s, _) = rlp::list("StorageRanges account slots", a, MAX_ITEMS)?;
                    let mut v = Vec::with_capacity(s.len());
                    for item in s {
                        let (h, val) = pair("StorageRanges slot", item)?;
                        v.push((h, rlp::bytes("StorageRanges slot value", &val)?.to_vec()));
                    }
                    slots.push(v);
                }
                SnapMessage::StorageRanges {
                    request_id: rlp::uint("StorageRanges id", f[0])?,
                    slots,
                    proof: strings("StorageRanges proof", f[2])?,
                }
            }
            GET_BYTE_CODES => {
                let f = fields("GetByteCodes", payload, 3)?;
                let (h, _) = rlp::list("GetByteCodes hashes", f[1], MAX_ITEMS)?;
                SnapMessage::GetByteCodes {
                    request_id: rlp::uint("GetByteCodes id", f[0])?,
                    hashes: h
                        .into_iter()
                        .map(|x| rlp::fixed::<32>("GetByteCodes hash", x))
                        .collect::<Result<_>>()?,
                    response_bytes: rlp::uint("GetByteCodes bytes", f[2])?,
                }
            }
            BYTE_CODES => {
                let f = fields("ByteCodes", payload, 2)?;
                SnapMessage::ByteCodes {
                    request_id: rlp::uint("ByteCodes id", f[0])?,
                    codes: strings("ByteCodes codes", f[1])?,
                }
            }
            GET_TRIE_NODES => {
                let f = fields("GetTrieNodes", payload, 4)?;
                let (sets, _) = rlp::list("GetTrieNodes paths", f[2], MAX_ITEMS)?;
                SnapMessage::GetTrieNodes {
                    request_id: rlp::uint("GetTrieNodes id", f[0])?,
                    root: rlp::fixed::<32>("GetTrieNodes root", f[1])?,
                    paths: sets
                        .into_iter()
                        .map(|s| strings("GetTrieNodes path set", s))
                        .collect::<Result<_>>()?,
                    response_bytes: rlp::uint("GetTrieNodes bytes", f[3])?,
                }
            }
            TRIE_NODES => {
                let f = fields("TrieNodes", payload, 2)?;
                SnapMessage::TrieNodes {
                    request_id: rlp::uint("TrieNodes id", f[0])?,
                    nodes: strings("TrieNodes nodes", f[1])?,
                }
            }
            other => return Err(Devp2pError::UnknownMessageId { id: other }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all() {
        let acc = rlp::encode_list(&[
            rlp::enc_uint(1),
            rlp::enc_uint(5),
            rlp::enc_bytes(&[]),
            rlp::enc_bytes(&[]),
        ]);
        let msgs = vec![
            SnapMessage::GetAccountRange {
                request_id: 1,
                root: [1; 32],
                origin: [0; 32],
                limit: [0xff; 32],
                response_bytes: 512 * 1024,
            },
            SnapMessage::AccountRange {
                request_id: 1,
                accounts: vec![([2; 32], acc)],
                proof: vec![vec![0xc1, 0x80]],
            },
            SnapMessage::GetStorageRanges {
                request_id: 2,
                root: [1; 32],
                accounts: vec![[3; 32]],
                origin: vec![],
                limit: vec![],
                response_bytes: 100,
            },
            SnapMessage::StorageRanges {
                request_id: 2,
                slots: vec![vec![([4; 32], vec![0x2a])]],
                proof: vec![],
            },
            SnapMessage::GetByteCodes {
                request_id: 3,
                hashes: vec![[5; 32]],
                response_bytes: 100,
            },
            SnapMessage::ByteCodes {
                request_id: 3,
                codes: vec![vec![0x60, 0x00]],
            },
            SnapMessage::GetTrieNodes {
                request_id: 4,
                root: [1; 32],
                paths: vec![vec![vec![0x00]], vec![vec![0x1f], vec![0x20]]],
                response_bytes: 100,
            },
            SnapMessage::TrieNodes {
                request_id: 4,
                nodes: vec![vec![0xc0]],
            },
        ];
        for m in msgs {
            assert_eq!(SnapMessage::decode(m.id(), &m.encode()).unwrap(), m);
        }
        let big = SnapMessage::GetByteCodes {
            request_id: 1,
            hashes: vec![],
            response_bytes: u64::MAX,
        };
        assert_eq!(big.response_limit_bytes(), Some(MAX_RESPONSE_BYTES));
    }
}

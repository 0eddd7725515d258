//! discv5.1 messages: `message-type || rlp(message-data)`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use catchup_eth::rlp::{self as strict, Item};

use crate::enr::Enr;
use crate::error::{DiscError, Result};

pub const PING: u8 = 0x01;
pub const PONG: u8 = 0x02;
pub const FIND_NODE: u8 = 0x03;
pub const NODES: u8 = 0x04;
pub const TALK_REQ: u8 = 0x05;
pub const TALK_RESP: u8 = 0x06;

/// Distances accepted in one FINDNODE.
pub const MAX_DISTANCES: usize = 32;
/// Records accepted in one NODES message.
pub const MAX_NODES_PER_MESSAGE: usize = 16;
/// Largest TALKREQ protocol name, request or response accepted.
pub const MAX_TALK_BYTES: usize = 1200;

/// A request id: at most 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RequestId {
    len: u8,
    bytes: [u8; 8],
}

impl RequestId {
    pub fn new(b: &[u8]) -> Option<Self> {
        if b.len() > 8 {
            return None;
        }
        let mut bytes = [0u8; 8];
        bytes[..b.len()].copy_from_slice(b);
        Some(RequestId {
            len: b.len() as u8,
            bytes,
        })
    }

    pub fn from_u64(v: u64) -> Self {
        RequestId {
            len: 8,
            bytes: v.to_be_bytes(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ping {
        req_id: RequestId,
        enr_seq: u64,
    },
    Pong {
        req_id: RequestId,
        enr_seq: u64,
        ip: IpAddr,
        port: u16,
    },
    FindNode {
        req_id: RequestId,
        distances: Vec<u16>,
    },
    Nodes {
        req_id: RequestId,
        total: u64,
        enrs: Vec<Enr>,
    },
    TalkReq {
        req_id: RequestId,
        protocol: Vec<u8>,
        request: Vec<u8>,
    },
    TalkResp {
        req_id: RequestId,
        response: Vec<u8>,
    },
}

fn rlp_err(what: &'static str) -> impl Fn(strict::RlpError) -> DiscError {
    move |e| DiscError::rlp(what, e)
}

fn talk_bytes(item: Item<'_>, what: &'static str) -> Result<Vec<u8>> {
    let b = item.bytes().map_err(rlp_err(what))?;
    if b.len() > MAX_TALK_BYTES {
        return Err(DiscError::TooLarge {
            what,
            len_bytes: b.len(),
            limit_bytes: MAX_TALK_BYTES,
        });
    }
    Ok(b.to_vec())
}

fn too_many(what: &'static str, limit: usize) -> impl Fn(strict::RlpError) -> DiscError {
    move |e| match e {
        strict::RlpError::TooManyItems { .. } => DiscError::TooManyItems {
            what,
            count: limit + 1,
            limit,
        },
        other => DiscError::rlp(what, other),
    }
}

impl Message {
    pub fn req_id(&self) -> RequestId {
        match self {
            Message::Ping { req_id, .. }
            | Message::Pong { req_id, .. }
            | Message::FindNode { req_id, .. }
            | Message::Nodes { req_id, .. }
            | Message::TalkReq { req_id, .. }
            | Message::TalkResp { req_id, .. } => *req_id,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Message::Ping { .. } | Message::FindNode { .. } | Message::TalkReq { .. }
        )
    }

    pub fn kind(&self) -> u8 {
        match self {
            Message::Ping { .. } => PING,
            Message::Pong { .. } => PONG,
            Message::FindNode { .. } => FIND_NODE,
            Message::Nodes { .. } => NODES,
            Message::TalkReq { .. } => TALK_REQ,
            Message::TalkResp { .. } => TALK_RESP,
        }
    }

    /// `message-type || rlp(message-data)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(64);
        strict::encode_bytes(self.req_id().as_bytes(), &mut p);
        match self {
            Message::Ping { enr_seq, .. } => strict::encode_u64(*enr_seq, &mut p),
            Message::Pong {
                enr_seq, ip, port, ..
            } => {
                strict::encode_u64(*enr_seq, &mut p);
                match ip {
                    IpAddr::V4(a) => strict::encode_bytes(&a.octets(), &mut p),
                    IpAddr::V6(a) => strict::encode_bytes(&a.octets(), &mut p),
                }
                strict::encode_u64(u64::from(*port), &mut p);
            }
            Message::FindNode { distances, .. } => {
                let mut d = Vec::with_capacity(distances.len() * 3);
                for x in distances {
                    strict::encode_u64(u64::from(*x), &mut d);
                }
                strict::list_header(d.len(), &mut p);
                p.extend_from_slice(&d);
            }
            Message::Nodes { total, enrs, .. } => {
                strict::encode_u64(*total, &mut p);
                let len: usize = enrs.iter().map(|e| e.encoded().len()).sum();
                strict::list_header(len, &mut p);
                for e in enrs {
                    p.extend_from_slice(e.encoded());
                }
            }
            Message::TalkReq {
                protocol, request, ..
            } => {
                strict::encode_bytes(protocol, &mut p);
                strict::encode_bytes(request, &mut p);
            }
            Message::TalkResp { response, .. } => strict::encode_bytes(response, &mut p),
        }
        let mut out = Vec::with_capacity(p.len() + 4);
        out.push(self.kind());
        strict::list_header(p.len(), &mut out);
        out.extend_from_slice(&p);
        out
    }

    /// Decode a plaintext message. Extra list elements are ignored.
    pub fn decode(pt: &[u8]) -> Result<Message> {
        let (&kind, data) = pt.split_first().ok_or(DiscError::TooShort {
            what: "discv5 message",
            len_bytes: 0,
            min_bytes: 1,
        })?;
        if !(PING..=TALK_RESP).contains(&kind) {
            return Err(DiscError::UnknownType {
                what: "discv5 message",
                kind,
            });
        }
        let top = strict::parse_exact(data).map_err(rlp_err("discv5 message"))?;
        let mut r = top.list().map_err(rlp_err("discv5 message"))?;
        let e = rlp_err("discv5 message");
        let rid = r
            .next()
            .and_then(|i| i.bytes())
            .map_err(rlp_err("request id"))?;
        let req_id =
            RequestId::new(rid).ok_or(DiscError::malformed("request id", "longer than 8 bytes"))?;
        Ok(match kind {
            PING => Message::Ping {
                req_id,
                enr_seq: r.u64().map_err(rlp_err("ping enr-seq"))?,
            },
            PONG => {
                let enr_seq = r.u64().map_err(rlp_err("pong enr-seq"))?;
                let ipb = r.bytes().map_err(rlp_err("pong ip"))?;
                let ip = match ipb.len() {
                    4 => IpAddr::V4(Ipv4Addr::new(ipb[0], ipb[1], ipb[2], ipb[3])),
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(ipb);
                        IpAddr::V6(Ipv6Addr::from(a))
                    }
                    _ => return Err(DiscError::malformed("pong ip", "neither 4 nor 16 bytes")),
                };
                let port = u16::try_from(r.u64().map_err(rlp_err("pong port"))?)
                    .map_err(|_| DiscError::malformed("pong port", "above 65535"))?;
                Message::Pong {
                    req_id,
                    enr_seq,
                    ip,
                    port,
                }
            }
            FIND_NODE => {
                let items = r
                    .next()
                    .map_err(&e)?
                    .items(MAX_DISTANCES)
                    .map_err(too_many("findnode distances", MAX_DISTANCES))?;
                let mut distances = Vec::with_capacity(items.len());
                for it in items {
                    let d = it.u64().map_err(rlp_err("findnode distance"))?;
                    if d > 256 {
                        return Err(DiscError::malformed("findnode distance", "above 256"));
                    }
                    distances.push(d as u16);
                }
                Message::FindNode { req_id, distances }
            }
            NODES => {
                let total = r.u64().map_err(rlp_err("nodes total"))?;
                let items = r
                    .next()
                    .map_err(&e)?
                    .items(MAX_NODES_PER_MESSAGE)
                    .map_err(too_many("nodes", MAX_NODES_PER_MESSAGE))?;
                let mut enrs = Vec::with_capacity(items.len());
                for it in items {
                    enrs.push(Enr::decode(it.raw)?);
                }
                Message::Nodes {
                    req_id,
                    total,
                    enrs,
                }
            }
            TALK_REQ => Message::TalkReq {
                req_id,
                protocol: talk_bytes(r.next().map_err(&e)?, "talkreq protocol")?,
                request: talk_bytes(r.next().map_err(&e)?, "talkreq request")?,
            },
            _ => Message::TalkResp {
                req_id,
                response: talk_bytes(r.next().map_err(&e)?, "talkresp response")?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secp256k1::SecretKey;

    #[test]
    fn round_trip() {
        let key = SecretKey::from_slice(&[3u8; 32]).unwrap();
        let enr = crate::enr::EnrBuilder::new(1)
            .endpoint("127.0.0.1:9000".parse().unwrap(), 0)
            .build(&key)
            .unwrap();
        let rid = RequestId::new(&[0, 0, 0, 1]).unwrap();
        for m in [
            Message::Ping {
                req_id: rid,
                enr_seq: 2,
            },
            Message::Pong {
                req_id: RequestId::from_u64(7),
                enr_seq: 0,
                ip: "::1".parse().unwrap(),
                port: 30303,
            },
            Message::FindNode {
                req_id: rid,
                distances: vec![256, 255, 0],
            },
            Message::Nodes {
                req_id: rid,
                total: 1,
                enrs: vec![enr.clone(), enr],
            },
            Message::TalkReq {
                req_id: RequestId::default(),
                protocol: b"portal".to_vec(),
                request: vec![1, 2, 3],
            },
            Message::TalkResp {
                req_id: rid,
                response: vec![],
            },
        ] {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
        // The PING of the wire vectors: 01 || [0x00000001, 2].
        assert_eq!(
            hex::encode(
                Message::Ping {
                    req_id: rid,
                    enr_seq: 2
                }
                .encode()
            ),
            "01c6840000000102"
        );
        assert!(matches!(
            Message::decode(&[0x07, 0xc0]),
            Err(DiscError::UnknownType { kind: 7, .. })
        ));
        assert!(Message::decode(&[]).is_err());
        assert!(Message::decode(&[0x01, 0xc9, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9]).is_err());
        let mut far = vec![0x03u8];
        far.extend_from_slice(&strict::wrap_list(&[0x80, 0xc3, 0x82, 0x01, 0x01]));
        assert!(Message::decode(&far).is_err(), "distance 257");
    }
}

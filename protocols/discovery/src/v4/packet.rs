//! Discovery v4 packets: `hash || signature || packet-type || packet-data`.
//!
//! `hash = keccak256(signature || packet-type || packet-data)`, `signature` is a 65-byte
//! recoverable signature over `keccak256(packet-type || packet-data)`; the sender's node id
//! is recovered from it. Decoding follows EIP-8: the Ping version is not checked, extra
//! list elements and data after the first RLP item are ignored.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use alloy_primitives::keccak256;
use catchup_eth::rlp::{self as strict, Item, Reader};
use secp256k1::SecretKey;

use crate::crypto::{self, NodeId};
use crate::enr::Enr;
use crate::error::{DiscError, Result};

/// Largest packet accepted or produced.
pub const MAX_PACKET_BYTES: usize = 1280;
/// `hash || signature || type`.
pub const HEADER_BYTES: usize = 32 + 65 + 1;
/// Nodes per Neighbors packet this implementation sends (fits IPv6 entries under 1280 bytes).
pub const MAX_NEIGHBORS_PER_PACKET: usize = 12;
/// Nodes per Neighbors packet accepted.
pub const MAX_NEIGHBORS_DECODE: usize = 16;

pub const PING: u8 = 0x01;
pub const PONG: u8 = 0x02;
pub const FIND_NODE: u8 = 0x03;
pub const NEIGHBORS: u8 = 0x04;
pub const ENR_REQUEST: u8 = 0x05;
pub const ENR_RESPONSE: u8 = 0x06;

/// `[ip, udp-port, tcp-port]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub udp_port: u16,
    pub tcp_port: u16,
}

/// One entry of a Neighbors packet: endpoint and 64-byte public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRecord {
    pub endpoint: Endpoint,
    pub id: [u8; 64],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    pub version: u64,
    pub from: Endpoint,
    pub to: Endpoint,
    pub expiration: u64,
    pub enr_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    pub to: Endpoint,
    pub ping_hash: [u8; 32],
    pub expiration: u64,
    pub enr_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindNode {
    pub target: [u8; 64],
    pub expiration: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbors {
    pub nodes: Vec<NodeRecord>,
    pub expiration: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrRequest {
    pub expiration: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrResponse {
    pub request_hash: [u8; 32],
    pub enr: Enr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ping(Ping),
    Pong(Pong),
    FindNode(FindNode),
    Neighbors(Neighbors),
    EnrRequest(EnrRequest),
    EnrResponse(EnrResponse),
}

impl Message {
    pub fn kind(&self) -> u8 {
        match self {
            Message::Ping(_) => PING,
            Message::Pong(_) => PONG,
            Message::FindNode(_) => FIND_NODE,
            Message::Neighbors(_) => NEIGHBORS,
            Message::EnrRequest(_) => ENR_REQUEST,
            Message::EnrResponse(_) => ENR_RESPONSE,
        }
    }

    /// The expiration time stamp (UNIX seconds), for the packets that carry one.
    pub fn expiration(&self) -> Option<u64> {
        match self {
            Message::Ping(p) => Some(p.expiration),
            Message::Pong(p) => Some(p.expiration),
            Message::FindNode(p) => Some(p.expiration),
            Message::Neighbors(p) => Some(p.expiration),
            Message::EnrRequest(p) => Some(p.expiration),
            Message::EnrResponse(_) => None,
        }
    }
}

/// A verified incoming packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub message: Message,
    /// The signer's public key, `x || y`.
    pub sender: [u8; 64],
    pub sender_id: NodeId,
    /// The packet hash (echoed in Pong and ENRResponse).
    pub hash: [u8; 32],
}

fn rlp_err(what: &'static str) -> impl Fn(strict::RlpError) -> DiscError {
    move |e| DiscError::rlp(what, e)
}

fn port(item: Item<'_>, what: &'static str) -> Result<u16> {
    let v = item.u64().map_err(rlp_err(what))?;
    u16::try_from(v).map_err(|_| DiscError::malformed(what, "port above 65535"))
}

fn ip(item: Item<'_>, what: &'static str) -> Result<IpAddr> {
    let b = item.bytes().map_err(rlp_err(what))?;
    match b.len() {
        0 => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        4 => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            Ok(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => Err(DiscError::malformed(what, "ip is neither 4 nor 16 bytes")),
    }
}

fn endpoint(item: Item<'_>) -> Result<Endpoint> {
    let mut r = item.list().map_err(rlp_err("endpoint"))?;
    Ok(Endpoint {
        ip: ip(r.next().map_err(rlp_err("endpoint"))?, "endpoint ip")?,
        udp_port: port(r.next().map_err(rlp_err("endpoint"))?, "endpoint udp")?,
        tcp_port: port(r.next().map_err(rlp_err("endpoint"))?, "endpoint tcp")?,
    })
}

/// An optional trailing integer (EIP-868 enr-seq); anything else there is an EIP-8 extra
/// element and is ignored.
fn optional_seq(r: &mut Reader<'_>) -> Result<Option<u64>> {
    Ok(r.next_opt()
        .map_err(rlp_err("packet data"))?
        .and_then(|i| i.u64().ok()))
}

fn decode_message(kind: u8, data: &[u8]) -> Result<Message> {
    let top = strict::parse_item(data, 0).map_err(rlp_err("packet data"))?;
    let mut r = top.list().map_err(rlp_err("packet data"))?;
    let e = rlp_err("packet data");
    Ok(match kind {
        PING => {
            let version = r
                .next()
                .map_err(&e)?
                .u64()
                .map_err(rlp_err("ping version"))?;
            Message::Ping(Ping {
                version,
                from: endpoint(r.next().map_err(&e)?)?,
                to: endpoint(r.next().map_err(&e)?)?,
                expiration: r.u64().map_err(rlp_err("ping expiration"))?,
                enr_seq: optional_seq(&mut r)?,
            })
        }
        PONG => Message::Pong(Pong {
            to: endpoint(r.next().map_err(&e)?)?,
            ping_hash: r
                .next()
                .and_then(|i| i.fixed::<32>())
                .map_err(rlp_err("pong hash"))?,
            expiration: r.u64().map_err(rlp_err("pong expiration"))?,
            enr_seq: optional_seq(&mut r)?,
        }),
        FIND_NODE => Message::FindNode(FindNode {
            target: r
                .next()
                .and_then(|i| i.fixed::<64>())
                .map_err(rlp_err("findnode target"))?,
            expiration: r.u64().map_err(rlp_err("findnode expiration"))?,
        }),
        NEIGHBORS => {
            let list = r.next().map_err(&e)?;
            let items = list.items(MAX_NEIGHBORS_DECODE).map_err(|err| match err {
                strict::RlpError::TooManyItems { .. } => DiscError::TooManyItems {
                    what: "neighbors",
                    count: MAX_NEIGHBORS_DECODE + 1,
                    limit: MAX_NEIGHBORS_DECODE,
                },
                other => DiscError::rlp("neighbors", other),
            })?;
            let mut nodes = Vec::with_capacity(items.len());
            for it in items {
                let mut n = it.list().map_err(rlp_err("neighbors node"))?;
                let ne = rlp_err("neighbors node");
                let ip = ip(n.next().map_err(&ne)?, "neighbors ip")?;
                let udp_port = port(n.next().map_err(&ne)?, "neighbors udp")?;
                let tcp_port = port(n.next().map_err(&ne)?, "neighbors tcp")?;
                let id = n.next().and_then(|i| i.fixed::<64>()).map_err(&ne)?;
                nodes.push(NodeRecord {
                    endpoint: Endpoint {
                        ip,
                        udp_port,
                        tcp_port,
                    },
                    id,
                });
            }
            Message::Neighbors(Neighbors {
                nodes,
                expiration: r.u64().map_err(rlp_err("neighbors expiration"))?,
            })
        }
        ENR_REQUEST => Message::EnrRequest(EnrRequest {
            expiration: r.u64().map_err(rlp_err("enrrequest expiration"))?,
        }),
        ENR_RESPONSE => Message::EnrResponse(EnrResponse {
            request_hash: r
                .next()
                .and_then(|i| i.fixed::<32>())
                .map_err(rlp_err("enrresponse hash"))?,
            enr: Enr::decode(r.next().map_err(rlp_err("enrresponse record"))?.raw)?,
        }),
        other => {
            return Err(DiscError::UnknownType {
                what: "discv4 packet",
                kind: other,
            })
        }
    })
}

/// Decode and verify a packet. Packets whose expiration lies before `now_secs` are refused.
pub fn decode(packet: &[u8], now_secs: u64) -> Result<Decoded> {
    if packet.len() > MAX_PACKET_BYTES {
        return Err(DiscError::TooLarge {
            what: "discv4 packet",
            len_bytes: packet.len(),
            limit_bytes: MAX_PACKET_BYTES,
        });
    }
    if packet.len() < HEADER_BYTES + 1 {
        return Err(DiscError::TooShort {
            what: "discv4 packet",
            len_bytes: packet.len(),
            min_bytes: HEADER_BYTES + 1,
        });
    }
    let hash: [u8; 32] = keccak256(&packet[32..]).0;
    if hash[..] != packet[..32] {
        return Err(DiscError::BadHash {
            what: "discv4 packet",
        });
    }
    let signed = keccak256(&packet[97..]).0;
    let pk = crypto::recover(&packet[32..97], &signed).ok_or(DiscError::BadSignature {
        what: "discv4 packet",
    })?;
    let kind = packet[97];
    let message = decode_message(kind, &packet[98..])?;
    if let Some(expiration_secs) = message.expiration() {
        if expiration_secs < now_secs {
            return Err(DiscError::Expired {
                what: "discv4 packet",
                expiration_secs,
                now_secs,
            });
        }
    }
    let sender = crypto::pub64(&pk);
    Ok(Decoded {
        message,
        sender,
        sender_id: NodeId::from_pub64(&sender),
        hash,
    })
}

fn enc_endpoint(e: &Endpoint, out: &mut Vec<u8>) {
    let mut p = Vec::with_capacity(24);
    match e.ip {
        IpAddr::V4(a) => strict::encode_bytes(&a.octets(), &mut p),
        IpAddr::V6(a) => strict::encode_bytes(&a.octets(), &mut p),
    }
    strict::encode_u64(u64::from(e.udp_port), &mut p);
    strict::encode_u64(u64::from(e.tcp_port), &mut p);
    strict::list_header(p.len(), out);
    out.extend_from_slice(&p);
}

fn encode_data(msg: &Message) -> Vec<u8> {
    let mut p = Vec::with_capacity(256);
    match msg {
        Message::Ping(m) => {
            strict::encode_u64(m.version, &mut p);
            enc_endpoint(&m.from, &mut p);
            enc_endpoint(&m.to, &mut p);
            strict::encode_u64(m.expiration, &mut p);
            if let Some(s) = m.enr_seq {
                strict::encode_u64(s, &mut p);
            }
        }
        Message::Pong(m) => {
            enc_endpoint(&m.to, &mut p);
            strict::encode_bytes(&m.ping_hash, &mut p);
            strict::encode_u64(m.expiration, &mut p);
            if let Some(s) = m.enr_seq {
                strict::encode_u64(s, &mut p);
            }
        }
        Message::FindNode(m) => {
            strict::encode_bytes(&m.target, &mut p);
            strict::encode_u64(m.expiration, &mut p);
        }
        Message::Neighbors(m) => {
            let mut nodes = Vec::with_capacity(m.nodes.len() * 92);
            for n in &m.nodes {
                let mut e = Vec::with_capacity(90);
                match n.endpoint.ip {
                    IpAddr::V4(a) => strict::encode_bytes(&a.octets(), &mut e),
                    IpAddr::V6(a) => strict::encode_bytes(&a.octets(), &mut e),
                }
                strict::encode_u64(u64::from(n.endpoint.udp_port), &mut e);
                strict::encode_u64(u64::from(n.endpoint.tcp_port), &mut e);
                strict::encode_bytes(&n.id, &mut e);
                strict::list_header(e.len(), &mut nodes);
                nodes.extend_from_slice(&e);
            }
            strict::list_header(nodes.len(), &mut p);
            p.extend_from_slice(&nodes);
            strict::encode_u64(m.expiration, &mut p);
        }
        Message::EnrRequest(m) => strict::encode_u64(m.expiration, &mut p),
        Message::EnrResponse(m) => {
            strict::encode_bytes(&m.request_hash, &mut p);
            p.extend_from_slice(m.enr.encoded());
        }
    }
    strict::wrap_list(&p)
}

/// Sign and encode; returns the packet and its hash. An error if it exceeds 1280 bytes.
pub fn encode(msg: &Message, key: &SecretKey) -> Result<(Vec<u8>, [u8; 32])> {
    let data = encode_data(msg);
    let len = HEADER_BYTES + data.len();
    if len > MAX_PACKET_BYTES {
        return Err(DiscError::TooLarge {
            what: "discv4 packet",
            len_bytes: len,
            limit_bytes: MAX_PACKET_BYTES,
        });
    }
    let mut signed = Vec::with_capacity(1 + data.len());
    signed.push(msg.kind());
    signed.extend_from_slice(&data);
    let sig = crypto::sign_recoverable(key, &keccak256(&signed).0);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[0u8; 32]);
    out.extend_from_slice(&sig);
    out.extend_from_slice(&signed);
    let hash = keccak256(&out[32..]).0;
    out[..32].copy_from_slice(&hash);
    Ok((out, hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secp256k1::SECP256K1;

    // EIP-8 "RLPx Discovery Protocol" test vectors (forward-compatible packets), signed by
    // this key.
    const KEY: &str = "b71c71a67e1177ad4e901695e1b4b9ee17ae16c6668d313eac2f96dbcda3f291";
    const PING_V4: &str = "e9614ccfd9fc3e74360018522d30e1419a143407ffcce748de3e22116b7e8dc92ff74788c0b6663aaa3d67d641936511c8f8d6ad8698b820a7cf9e1be7155e9a241f556658c55428ec0563514365799a4be2be5a685a80971ddcfa80cb422cdd0101ec04cb847f000001820cfa8215a8d790000000000000000000000000000000018208ae820d058443b9a3550102";
    const PING_V555: &str = "577be4349c4dd26768081f58de4c6f375a7a22f3f7adda654d1428637412c3d7fe917cadc56d4e5e7ffae1dbe3efffb9849feb71b262de37977e7c7a44e677295680e9e38ab26bee2fcbae207fba3ff3d74069a50b902a82c9903ed37cc993c50001f83e82022bd79020010db83c4d001500000000abcdef12820cfa8215a8d79020010db885a308d313198a2e037073488208ae82823a8443b9a355c5010203040531b9019afde696e582a78fa8d95ea13ce3297d4afb8ba6433e4154caa5ac6431af1b80ba76023fa4090c408f6b4bc3701562c031041d4702971d102c9ab7fa5eed4cd6bab8f7af956f7d565ee1917084a95398b6a21eac920fe3dd1345ec0a7ef39367ee69ddf092cbfe5b93e5e568ebc491983c09c76d922dc3";
    const PONG: &str = "09b2428d83348d27cdf7064ad9024f526cebc19e4958f0fdad87c15eb598dd61d08423e0bf66b2069869e1724125f820d851c136684082774f870e614d95a2855d000f05d1648b2d5945470bc187c2d2216fbe870f43ed0909009882e176a46b0102f846d79020010db885a308d313198a2e037073488208ae82823aa0fbc914b16819237dcd8801d7e53f69e9719adecb3cc0e790c57e91ca4461c9548443b9a355c6010203c2040506a0c969a58f6f9095004c0177a6b47f451530cab38966a25cca5cb58f055542124e";
    const FINDNODE: &str = "c7c44041b9f7c7e41934417ebac9a8e1a4c6298f74553f2fcfdcae6ed6fe53163eb3d2b52e39fe91831b8a927bf4fc222c3902202027e5e9eb812195f95d20061ef5cd31d502e47ecb61183f74a504fe04c51e73df81f25c4d506b26db4517490103f84eb840ca634cae0d49acb401d8a4c6b6fe8c55b70d115bf400769cc1400f3258cd31387574077f301b421bc84df7266c44e9e6d569fc56be00812904767bf5ccd1fc7f8443b9a35582999983999999280dc62cc8255c73471e0a61da0c89acdc0e035e260add7fc0c04ad9ebf3919644c91cb247affc82b69bd2ca235c71eab8e49737c937a2c396";
    const NEIGHBOURS: &str = "c679fc8fe0b8b12f06577f2e802d34f6fa257e6137a995f6f4cbfc9ee50ed3710faf6e66f932c4c8d81d64343f429651328758b47d3dbc02c4042f0fff6946a50f4a49037a72bb550f3a7872363a83e1b9ee6469856c24eb4ef80b7535bcf99c0004f9015bf90150f84d846321163782115c82115db8403155e1427f85f10a5c9a7755877748041af1bcd8d474ec065eb33df57a97babf54bfd2103575fa829115d224c523596b401065a97f74010610fce76382c0bf32f84984010203040101b840312c55512422cf9b8a4097e9a6ad79402e87a15ae909a4bfefa22398f03d20951933beea1e4dfa6f968212385e829f04c2d314fc2d4e255e0d3bc08792b069dbf8599020010db83c4d001500000000abcdef12820d05820d05b84038643200b172dcfef857492156971f0e6aa2c538d8b74010f8e140811d53b98c765dd2d96126051913f44582e8c199ad7c6d6819e9a56483f637feaac9448aacf8599020010db885a308d313198a2e037073488203e78203e8b8408dcab8618c3253b558d459da53bd8fa68935a719aff8b811197101a4b2b47dd2d47295286fc00cc081bb542d760717d1bdd6bec2c37cd72eca367d6dd3b9df738443b9a355010203b525a138aa34383fec3d2719a0";
    /// The vectors' expiration (2006-01-02T22:04:05Z).
    const VECTOR_EXPIRATION: u64 = 1_136_239_445;

    fn key() -> SecretKey {
        SecretKey::from_slice(&hex::decode(KEY).unwrap()).unwrap()
    }

    fn decode_vector(hex_packet: &str) -> Decoded {
        let d = decode(&hex::decode(hex_packet).unwrap(), VECTOR_EXPIRATION).unwrap();
        assert_eq!(d.sender, crypto::pub64(&key().public_key(SECP256K1)));
        d
    }

    fn ep(ip: &str, udp: u16, tcp: u16) -> Endpoint {
        Endpoint {
            ip: ip.parse().unwrap(),
            udp_port: udp,
            tcp_port: tcp,
        }
    }

    #[test]
    fn eip8_ping_vectors() {
        let d = decode_vector(PING_V4);
        assert_eq!(
            d.message,
            Message::Ping(Ping {
                version: 4,
                from: ep("127.0.0.1", 3322, 5544),
                to: ep("::1", 2222, 3333),
                expiration: VECTOR_EXPIRATION,
                enr_seq: Some(1),
            })
        );
        let d = decode_vector(PING_V555);
        assert_eq!(
            d.message,
            Message::Ping(Ping {
                version: 555,
                from: ep("2001:db8:3c4d:15::abcd:ef12", 3322, 5544),
                to: ep("2001:db8:85a3:8d3:1319:8a2e:370:7348", 2222, 33338),
                expiration: VECTOR_EXPIRATION,
                enr_seq: None,
            })
        );
    }

    #[test]
    fn eip8_pong_findnode_neighbours_vectors() {
        let d = decode_vector(PONG);
        let Message::Pong(p) = d.message else {
            panic!("not a pong")
        };
        assert_eq!(
            p.to,
            ep("2001:db8:85a3:8d3:1319:8a2e:370:7348", 2222, 33338)
        );
        assert_eq!(
            hex::encode(p.ping_hash),
            "fbc914b16819237dcd8801d7e53f69e9719adecb3cc0e790c57e91ca4461c954"
        );
        assert_eq!(p.expiration, VECTOR_EXPIRATION);
        assert_eq!(p.enr_seq, None, "the fourth element is an extra list");

        let d = decode_vector(FINDNODE);
        let Message::FindNode(f) = d.message else {
            panic!("not a findnode")
        };
        assert_eq!(hex::encode(&f.target[..4]), "ca634cae");
        assert_eq!(f.expiration, VECTOR_EXPIRATION);

        let d = decode_vector(NEIGHBOURS);
        let Message::Neighbors(n) = d.message else {
            panic!("not neighbours")
        };
        assert_eq!(n.expiration, VECTOR_EXPIRATION);
        let eps: Vec<Endpoint> = n.nodes.iter().map(|x| x.endpoint).collect();
        assert_eq!(
            eps,
            [
                ep("99.33.22.55", 4444, 4445),
                ep("1.2.3.4", 1, 1),
                ep("2001:db8:3c4d:15::abcd:ef12", 3333, 3333),
                ep("2001:db8:85a3:8d3:1319:8a2e:370:7348", 999, 1000),
            ]
        );
        assert_eq!(hex::encode(&n.nodes[0].id[..4]), "3155e142");
        assert_eq!(hex::encode(&n.nodes[3].id[..4]), "8dcab861");
    }

    #[test]
    fn vectors_are_expired_today_and_tampering_is_caught() {
        let now = VECTOR_EXPIRATION + 1;
        for v in [PING_V4, PING_V555, PONG, FINDNODE, NEIGHBOURS] {
            let raw = hex::decode(v).unwrap();
            assert!(matches!(decode(&raw, now), Err(DiscError::Expired { .. })));
            let mut bad = raw.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(matches!(decode(&bad, 0), Err(DiscError::BadHash { .. })));
            // Re-hash a tampered body: the hash passes, the recovered key differs.
            let mut bad = raw.clone();
            bad[100] ^= 1;
            let h = keccak256(&bad[32..]).0;
            bad[..32].copy_from_slice(&h);
            match decode(&bad, 0) {
                Ok(d) => assert_ne!(d.sender, crypto::pub64(&key().public_key(SECP256K1))),
                Err(e) => assert!(matches!(
                    e,
                    DiscError::BadSignature { .. }
                        | DiscError::Rlp { .. }
                        | DiscError::Malformed { .. }
                )),
            }
        }
    }

    #[test]
    fn round_trip_and_limits() {
        let k = key();
        let enr = crate::enr::EnrBuilder::new(3)
            .endpoint("127.0.0.1:30303".parse().unwrap(), 30303)
            .build(&k)
            .unwrap();
        let nodes: Vec<NodeRecord> = (0..MAX_NEIGHBORS_PER_PACKET)
            .map(|i| NodeRecord {
                endpoint: ep("2001:db8:85a3:8d3:1319:8a2e:370:7348", 65535, i as u16),
                id: [0xffu8; 64],
            })
            .collect();
        let msgs = [
            Message::Ping(Ping {
                version: 4,
                from: ep("127.0.0.1", 1, 2),
                to: ep("10.0.0.1", 3, 0),
                expiration: 100,
                enr_seq: Some(9),
            }),
            Message::Pong(Pong {
                to: ep("127.0.0.1", 1, 0),
                ping_hash: [5u8; 32],
                expiration: 100,
                enr_seq: None,
            }),
            Message::FindNode(FindNode {
                target: [7u8; 64],
                expiration: 100,
            }),
            Message::Neighbors(Neighbors {
                nodes: nodes.clone(),
                expiration: u64::MAX,
            }),
            Message::EnrRequest(EnrRequest { expiration: 100 }),
            Message::EnrResponse(EnrResponse {
                request_hash: [1u8; 32],
                enr,
            }),
        ];
        for m in msgs {
            let (raw, hash) = encode(&m, &k).unwrap();
            assert!(raw.len() <= MAX_PACKET_BYTES);
            let d = decode(&raw, 100).unwrap();
            assert_eq!(d.message, m);
            assert_eq!(d.hash, hash);
            assert_eq!(
                d.sender_id,
                NodeId::from_public_key(&k.public_key(SECP256K1))
            );
        }
        let mut too_many = nodes.clone();
        too_many.extend_from_slice(&nodes[..2]);
        assert!(matches!(
            encode(
                &Message::Neighbors(Neighbors {
                    nodes: too_many,
                    expiration: 1
                }),
                &k
            ),
            Err(DiscError::TooLarge { .. })
        ));
        assert!(matches!(
            decode(&vec![0u8; 1281], 0),
            Err(DiscError::TooLarge { .. })
        ));
        assert!(matches!(
            decode(&[0u8; 98], 0),
            Err(DiscError::TooShort { .. })
        ));
        // Unknown packet type, properly hashed and signed.
        let mut signed = vec![0x09u8];
        signed.extend_from_slice(&strict::wrap_list(&[]));
        let sig = crypto::sign_recoverable(&k, &keccak256(&signed).0);
        let mut p = vec![0u8; 32];
        p.extend_from_slice(&sig);
        p.extend_from_slice(&signed);
        let h = keccak256(&p[32..]).0;
        p[..32].copy_from_slice(&h);
        assert_eq!(
            decode(&p, 0),
            Err(DiscError::UnknownType {
                what: "discv4 packet",
                kind: 9
            })
        );
    }
}

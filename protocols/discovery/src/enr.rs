//! Ethereum Node Records (EIP-778) with the "v4" identity scheme.
//!
//! A record is the RLP list `[signature, seq, k1, v1, k2, v2, ...]` of at most 300 bytes,
//! keys sorted and unique. The "v4" signature is a 64-byte `r || s` over
//! `keccak256(rlp([seq, k1, v1, ...]))` by the key in the `secp256k1` entry; the node id is
//! keccak256 of the uncompressed public key. Values are kept as raw RLP, so records with
//! entries this crate does not interpret round-trip unchanged.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use alloy_primitives::keccak256;
use catchup_devp2p::forkid::ForkId;
use catchup_eth::rlp as strict;
use secp256k1::{PublicKey, SecretKey, SECP256K1};

use crate::crypto::{self, NodeId};
use crate::error::{DiscError, Result};

/// Largest encoded record accepted or produced.
pub const MAX_ENR_BYTES: usize = 300;

/// A decoded record whose signature has been checked.
#[derive(Clone, PartialEq, Eq)]
pub struct Enr {
    raw: Vec<u8>,
    seq: u64,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    public_key: PublicKey,
    node_id: NodeId,
}

impl std::fmt::Debug for Enr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Enr(id {:?}, seq {}", self.node_id, self.seq)?;
        if let Some(addr) = self.udp_socket() {
            write!(f, ", udp {addr}")?;
        }
        f.write_str(")")
    }
}

fn rlp_err(what: &'static str) -> impl Fn(strict::RlpError) -> DiscError {
    move |e| DiscError::rlp(what, e)
}

impl Enr {
    /// Decode and verify a record from its RLP encoding.
    pub fn decode(raw: &[u8]) -> Result<Enr> {
        if raw.len() > MAX_ENR_BYTES {
            return Err(DiscError::TooLarge {
                what: "enr",
                len_bytes: raw.len(),
                limit_bytes: MAX_ENR_BYTES,
            });
        }
        let top = strict::parse_exact(raw).map_err(rlp_err("enr"))?;
        let items = top.items(MAX_ENR_BYTES).map_err(rlp_err("enr"))?;
        if items.len() < 2 {
            return Err(DiscError::malformed("enr", "fewer than [signature, seq]"));
        }
        if items.len() % 2 != 0 {
            return Err(DiscError::malformed("enr", "a key without a value"));
        }
        let signature = items[0].bytes().map_err(rlp_err("enr signature"))?;
        let seq = items[1].u64().map_err(rlp_err("enr seq"))?;
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity((items.len() - 2) / 2);
        for kv in items[2..].chunks_exact(2) {
            let key = kv[0].bytes().map_err(rlp_err("enr key"))?;
            if let Some((prev, _)) = pairs.last() {
                if prev.as_slice() >= key {
                    return Err(DiscError::malformed("enr", "keys not sorted and unique"));
                }
            }
            pairs.push((key.to_vec(), kv[1].raw.to_vec()));
        }
        let find = |k: &[u8]| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        let id = find(b"id").ok_or(DiscError::malformed("enr", "no \"id\" entry"))?;
        let id = strict::parse_exact(id)
            .and_then(|i| i.bytes())
            .map_err(rlp_err("enr id"))?;
        if id != b"v4" {
            return Err(DiscError::UnsupportedScheme(
                String::from_utf8_lossy(id).into_owned(),
            ));
        }
        let pk = find(b"secp256k1").ok_or(DiscError::malformed("enr", "no \"secp256k1\" entry"))?;
        let pk = strict::parse_exact(pk)
            .and_then(|i| i.fixed::<33>())
            .map_err(rlp_err("enr secp256k1"))?;
        let public_key = PublicKey::from_slice(&pk)
            .map_err(|_| DiscError::malformed("enr", "secp256k1 entry is not a curve point"))?;
        if signature.len() != 64 {
            return Err(DiscError::malformed("enr", "v4 signature is not 64 bytes"));
        }
        let content_len = raw.len() - (items[1].offset);
        let content_payload = &raw[items[1].offset..items[1].offset + content_len];
        let content = strict::wrap_list(content_payload);
        if !crypto::verify64(&public_key, signature, &keccak256(&content).0) {
            return Err(DiscError::BadSignature { what: "enr" });
        }
        Ok(Enr {
            raw: raw.to_vec(),
            seq,
            pairs,
            node_id: NodeId::from_public_key(&public_key),
            public_key,
        })
    }

    /// Decode and verify the text form `enr:<url-safe base64>`.
    pub fn from_text(text: &str) -> Result<Enr> {
        let b64 = text
            .trim()
            .strip_prefix("enr:")
            .ok_or(DiscError::malformed("enr text", "missing enr: prefix"))?;
        let raw = crypto::b64_decode(b64, MAX_ENR_BYTES).ok_or(DiscError::malformed(
            "enr text",
            "not url-safe base64 of at most 300 bytes",
        ))?;
        Enr::decode(&raw)
    }

    pub fn to_text(&self) -> String {
        format!("enr:{}", crypto::b64_encode(&self.raw))
    }

    /// The RLP encoding.
    pub fn encoded(&self) -> &[u8] {
        &self.raw
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The raw RLP value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// All entries as (key, raw RLP value), sorted by key.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    fn get_bytes<const N: usize>(&self, key: &[u8]) -> Option<[u8; N]> {
        strict::parse_exact(self.get(key)?).ok()?.fixed::<N>().ok()
    }

    fn get_port(&self, key: &[u8]) -> Option<u16> {
        let v = strict::parse_exact(self.get(key)?).ok()?.u64().ok()?;
        u16::try_from(v).ok().filter(|p| *p != 0)
    }

    pub fn ip4(&self) -> Option<Ipv4Addr> {
        self.get_bytes::<4>(b"ip").map(Ipv4Addr::from)
    }

    pub fn ip6(&self) -> Option<Ipv6Addr> {
        self.get_bytes::<16>(b"ip6").map(Ipv6Addr::from)
    }

    pub fn udp4(&self) -> Option<u16> {
        self.get_port(b"udp")
    }

    pub fn tcp4(&self) -> Option<u16> {
        self.get_port(b"tcp")
    }

    /// IPv6 UDP port (`udp6`, else `udp`).
    pub fn udp6(&self) -> Option<u16> {
        self.get_port(b"udp6").or_else(|| self.udp4())
    }

    /// IPv6 TCP port (`tcp6`, else `tcp`).
    pub fn tcp6(&self) -> Option<u16> {
        self.get_port(b"tcp6").or_else(|| self.tcp4())
    }

    /// The discovery endpoint: IPv4 if present, else IPv6.
    pub fn udp_socket(&self) -> Option<SocketAddr> {
        if let (Some(ip), Some(port)) = (self.ip4(), self.udp4()) {
            return Some(SocketAddr::V4(SocketAddrV4::new(ip, port)));
        }
        if let (Some(ip), Some(port)) = (self.ip6(), self.udp6()) {
            return Some(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)));
        }
        None
    }

    /// The RLPx endpoint: IPv4 if present, else IPv6.
    pub fn tcp_socket(&self) -> Option<SocketAddr> {
        if let (Some(ip), Some(port)) = (self.ip4(), self.tcp4()) {
            return Some(SocketAddr::V4(SocketAddrV4::new(ip, port)));
        }
        if let (Some(ip), Some(port)) = (self.ip6(), self.tcp6()) {
            return Some(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)));
        }
        None
    }

    /// The `eth` entry's fork id: `None` when the record has no `eth` entry, an error when
    /// the entry is not `[[hash, next], ...]`. Extra list elements are ignored.
    pub fn eth_fork_id(&self) -> Option<Result<ForkId>> {
        let raw = self.get(b"eth")?;
        Some(decode_eth_entry(raw))
    }

    /// A builder holding this record's entries (without `id` and `secp256k1`) and seq + 1.
    pub fn to_builder(&self) -> EnrBuilder {
        let mut b = EnrBuilder::new(self.seq.saturating_add(1));
        for (k, v) in &self.pairs {
            if k != b"id" && k != b"secp256k1" {
                b.pairs.insert(k.clone(), v.clone());
            }
        }
        b
    }
}

fn decode_eth_entry(raw: &[u8]) -> Result<ForkId> {
    let item = strict::parse_exact(raw).map_err(rlp_err("enr eth entry"))?;
    let mut list = item.list().map_err(rlp_err("enr eth entry"))?;
    let first = list.next().map_err(rlp_err("enr eth entry"))?;
    ForkId::decode(first.raw).map_err(|_| DiscError::malformed("enr eth entry", "bad fork id"))
}

/// Builds and signs a record. `id` and `secp256k1` are set from the signing key.
#[derive(Debug, Clone, Default)]
pub struct EnrBuilder {
    seq: u64,
    pairs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl EnrBuilder {
    pub fn new(seq: u64) -> Self {
        EnrBuilder {
            seq,
            pairs: BTreeMap::new(),
        }
    }

    pub fn seq(mut self, seq: u64) -> Self {
        self.seq = seq;
        self
    }

    /// Set `key` to an already RLP-encoded value.
    pub fn raw(mut self, key: &[u8], rlp_value: Vec<u8>) -> Self {
        self.pairs.insert(key.to_vec(), rlp_value);
        self
    }

    pub fn ip4(self, ip: Ipv4Addr) -> Self {
        self.raw(b"ip", strict::bytes_item(&ip.octets()))
    }

    pub fn ip6(self, ip: Ipv6Addr) -> Self {
        self.raw(b"ip6", strict::bytes_item(&ip.octets()))
    }

    pub fn udp4(self, port: u16) -> Self {
        self.raw(b"udp", strict::u64_item(u64::from(port)))
    }

    pub fn tcp4(self, port: u16) -> Self {
        self.raw(b"tcp", strict::u64_item(u64::from(port)))
    }

    pub fn udp6(self, port: u16) -> Self {
        self.raw(b"udp6", strict::u64_item(u64::from(port)))
    }

    pub fn tcp6(self, port: u16) -> Self {
        self.raw(b"tcp6", strict::u64_item(u64::from(port)))
    }

    /// Set IP and UDP/TCP ports from a socket address (v4 or v6 keys accordingly).
    pub fn endpoint(self, udp: SocketAddr, tcp_port: u16) -> Self {
        match udp {
            SocketAddr::V4(a) => self.ip4(*a.ip()).udp4(a.port()).tcp4(tcp_port),
            SocketAddr::V6(a) => self.ip6(*a.ip()).udp6(a.port()).tcp6(tcp_port),
        }
    }

    /// The `eth` entry `[[hash, next]]`.
    pub fn eth(self, fork_id: ForkId) -> Self {
        let inner = fork_id.encode();
        self.raw(b"eth", strict::wrap_list(&inner))
    }

    /// Sign with `key`; an error if the record would exceed 300 bytes.
    pub fn build(mut self, key: &SecretKey) -> Result<Enr> {
        let pk = key.public_key(SECP256K1);
        self.pairs.insert(b"id".to_vec(), strict::bytes_item(b"v4"));
        self.pairs
            .insert(b"secp256k1".to_vec(), strict::bytes_item(&pk.serialize()));
        let mut content = strict::u64_item(self.seq);
        for (k, v) in &self.pairs {
            strict::encode_bytes(k, &mut content);
            content.extend_from_slice(v);
        }
        let sig = crypto::sign64(key, &keccak256(strict::wrap_list(&content)).0);
        let mut payload = strict::bytes_item(&sig);
        payload.extend_from_slice(&content);
        let raw = strict::wrap_list(&payload);
        if raw.len() > MAX_ENR_BYTES {
            return Err(DiscError::TooLarge {
                what: "enr",
                len_bytes: raw.len(),
                limit_bytes: MAX_ENR_BYTES,
            });
        }
        Enr::decode(&raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Example record from the devp2p ENR specification (enr.md, "Test Vectors").
    const EXAMPLE_TEXT: &str = "enr:-IS4QHCYrYZbAKWCBRlAy5zzaDZXJBGkcnh4MHcBFZntXNFrdvJjX04jRzjzCBOonrkTfj499SZuOh8R33Ls8RRcy5wBgmlkgnY0gmlwhH8AAAGJc2VjcDI1NmsxoQPKY0yuDUmstAHYpMa2_oxVtw0RW_QAdpzBQA8yWM0xOIN1ZHCCdl8";
    const EXAMPLE_KEY: &str = "b71c71a67e1177ad4e901695e1b4b9ee17ae16c6668d313eac2f96dbcda3f291";
    const EXAMPLE_ID: &str = "a448f24c6d18e575453db13171562b71999873db5b286df957af199ec94617f7";

    fn example_key() -> SecretKey {
        SecretKey::from_slice(&hex::decode(EXAMPLE_KEY).unwrap()).unwrap()
    }

    #[test]
    fn eip778_example_decodes() {
        let enr = Enr::from_text(EXAMPLE_TEXT).unwrap();
        assert_eq!(enr.node_id().to_string(), EXAMPLE_ID);
        assert_eq!(enr.seq(), 1);
        assert_eq!(enr.ip4(), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(enr.udp4(), Some(30303));
        assert_eq!(enr.tcp4(), None);
        assert_eq!(enr.udp_socket(), Some("127.0.0.1:30303".parse().unwrap()));
        assert_eq!(
            hex::encode(enr.public_key().serialize()),
            "03ca634cae0d49acb401d8a4c6b6fe8c55b70d115bf400769cc1400f3258cd3138"
        );
        assert_eq!(enr.public_key(), &example_key().public_key(SECP256K1));
        assert_eq!(enr.to_text(), EXAMPLE_TEXT);
        let keys: Vec<&[u8]> = enr.pairs().map(|(k, _)| k).collect();
        assert_eq!(keys, [&b"id"[..], b"ip", b"secp256k1", b"udp"]);
    }

    #[test]
    fn eip778_example_signs_identically() {
        let enr = EnrBuilder::new(1)
            .ip4(Ipv4Addr::new(127, 0, 0, 1))
            .udp4(30303)
            .build(&example_key())
            .unwrap();
        assert_eq!(enr.to_text(), EXAMPLE_TEXT);
    }

    #[test]
    fn eth_entry_and_endpoints_round_trip() {
        let fid = ForkId {
            hash: [0xfc, 0x64, 0xec, 0x04],
            next: 1_150_000,
        };
        let enr = EnrBuilder::new(7)
            .endpoint("10.0.0.1:30303".parse().unwrap(), 30304)
            .ip6("::1".parse().unwrap())
            .eth(fid)
            .build(&example_key())
            .unwrap();
        let back = Enr::from_text(&enr.to_text()).unwrap();
        assert_eq!(back, enr);
        assert_eq!(back.eth_fork_id(), Some(Ok(fid)));
        assert_eq!(back.tcp_socket(), Some("10.0.0.1:30304".parse().unwrap()));
        assert_eq!(back.ip6(), Some("::1".parse().unwrap()));
        assert_eq!(back.udp6(), Some(30303));
        let next = back.to_builder().build(&example_key()).unwrap();
        assert_eq!(next.seq(), 8);
        assert_eq!(next.eth_fork_id(), Some(Ok(fid)));
        // Extra elements in the eth entry are ignored.
        let mut extra = fid.encode();
        extra.extend_from_slice(&strict::u64_item(5));
        let enr = EnrBuilder::new(1)
            .raw(b"eth", strict::wrap_list(&extra))
            .build(&example_key())
            .unwrap();
        assert_eq!(enr.eth_fork_id(), Some(Ok(fid)));
    }

    #[test]
    fn rejects_bad_records() {
        let enr = Enr::from_text(EXAMPLE_TEXT).unwrap();
        // Flip a byte of the signature.
        let mut raw = enr.encoded().to_vec();
        raw[5] ^= 1;
        assert_eq!(
            Enr::decode(&raw),
            Err(DiscError::BadSignature { what: "enr" })
        );
        // Change the udp port without re-signing.
        let mut raw = enr.encoded().to_vec();
        let n = raw.len();
        raw[n - 1] ^= 1;
        assert_eq!(
            Enr::decode(&raw),
            Err(DiscError::BadSignature { what: "enr" })
        );
        // Too large.
        let big = EnrBuilder::new(1)
            .raw(b"zz", strict::bytes_item(&[1u8; 200]))
            .build(&example_key());
        assert!(matches!(big, Err(DiscError::TooLarge { .. })));
        assert!(matches!(
            Enr::decode(&vec![0u8; 301]),
            Err(DiscError::TooLarge { .. })
        ));
        // Unsorted keys: swap the "ip" and "udp" pairs by building raw content by hand.
        let key = example_key();
        let mut content = strict::u64_item(1);
        for (k, v) in [
            (&b"id"[..], strict::bytes_item(b"v4")),
            (b"udp", strict::u64_item(30303)),
            (b"ip", strict::bytes_item(&[127, 0, 0, 1])),
            (
                b"secp256k1",
                strict::bytes_item(&key.public_key(SECP256K1).serialize()),
            ),
        ] {
            strict::encode_bytes(k, &mut content);
            content.extend_from_slice(&v);
        }
        let sig = crypto::sign64(&key, &keccak256(strict::wrap_list(&content)).0);
        let mut payload = strict::bytes_item(&sig);
        payload.extend_from_slice(&content);
        assert_eq!(
            Enr::decode(&strict::wrap_list(&payload)),
            Err(DiscError::malformed("enr", "keys not sorted and unique"))
        );
        // Unknown identity scheme.
        let mut content = strict::u64_item(1);
        strict::encode_bytes(b"id", &mut content);
        strict::encode_bytes(b"v5", &mut content);
        let mut payload = strict::bytes_item(&[0u8; 64]);
        payload.extend_from_slice(&content);
        assert!(matches!(
            Enr::decode(&strict::wrap_list(&payload)),
            Err(DiscError::UnsupportedScheme(_))
        ));
        assert!(Enr::from_text("enr:").is_err());
        assert!(Enr::from_text("enr:****").is_err());
        assert!(Enr::from_text(&EXAMPLE_TEXT[4..]).is_err());
    }
}

//! Contact infos: the current form (addresses plus sockets as key / address index / port
//! offset from the previous socket) and the legacy fixed-socket form.

use crate::wire::{put_short_len, put_u16, put_u32, put_u64, put_varint, Reader};
use crate::{GossipError, Pubkey};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const SOCKET_TAG_GOSSIP: u8 = 0;
/// Serve-repair over QUIC (this tag was the repair socket in older releases).
pub const SOCKET_TAG_SERVE_REPAIR_QUIC: u8 = 1;
pub const SOCKET_TAG_RPC: u8 = 2;
pub const SOCKET_TAG_RPC_PUBSUB: u8 = 3;
pub const SOCKET_TAG_SERVE_REPAIR: u8 = 4;
pub const SOCKET_TAG_TPU: u8 = 5;
pub const SOCKET_TAG_TPU_FORWARDS: u8 = 6;
pub const SOCKET_TAG_TPU_FORWARDS_QUIC: u8 = 7;
pub const SOCKET_TAG_TPU_QUIC: u8 = 8;
pub const SOCKET_TAG_TPU_VOTE: u8 = 9;
pub const SOCKET_TAG_TVU: u8 = 10;
pub const SOCKET_TAG_TVU_QUIC: u8 = 11;
pub const SOCKET_TAG_TPU_VOTE_QUIC: u8 = 12;
pub const SOCKET_TAG_ALPENGLOW: u8 = 13;

/// Bounds on what one contact info may list (a packet holds far fewer anyway).
pub const MAX_CONTACT_ADDRS: usize = 256;
pub const MAX_CONTACT_SOCKETS: usize = 256;
pub const MAX_CONTACT_EXTENSIONS: usize = 64;

/// Why a contact info's address and socket lists are inconsistent.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum ContactInfoError {
    #[error("duplicate IP address {0}")]
    DuplicateIpAddr(IpAddr),
    #[error("duplicate socket key {0}")]
    DuplicateSocket(u8),
    #[error("socket references address index {index} of {num_addrs}")]
    InvalidIpAddrIndex { index: u8, num_addrs: usize },
    #[error("IP address {0} is referenced by no socket")]
    UnusedIpAddr(IpAddr),
    #[error("IPv6 address {0} (only IPv4 is accepted)")]
    Ipv6IpAddr(IpAddr),
    #[error("unspecified IP address {0}")]
    UnspecifiedIpAddr(IpAddr),
    #[error("multicast IP address {0}")]
    MulticastIpAddr(IpAddr),
    #[error("port {0} is invalid")]
    InvalidPort(u16),
    #[error("port offsets overflow")]
    PortOffsetsOverflow,
    #[error("more than 255 IP addresses")]
    IpAddrsSaturated,
}

/// A socket a node may advertise: IPv4, a specified non-multicast address, non-zero port.
pub fn sanitize_socket(socket: &SocketAddr) -> Result<(), ContactInfoError> {
    if socket.port() == 0 {
        return Err(ContactInfoError::InvalidPort(0));
    }
    let ip = socket.ip();
    if ip.is_ipv6() {
        return Err(ContactInfoError::Ipv6IpAddr(ip));
    }
    if ip.is_unspecified() {
        return Err(ContactInfoError::UnspecifiedIpAddr(ip));
    }
    if ip.is_multicast() {
        return Err(ContactInfoError::MulticastIpAddr(ip));
    }
    Ok(())
}

/// Client version as carried in a contact info. `minor` and `patch` are the raw wire
/// values (newer releases pack a pre-release tag into their top bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientVersion {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
    pub commit: u32,
    pub feature_set: u32,
    pub client: u16,
}

impl ClientVersion {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.major));
        put_varint(out, u64::from(self.minor));
        put_varint(out, u64::from(self.patch));
        put_u32(out, self.commit);
        put_u32(out, self.feature_set);
        put_varint(out, u64::from(self.client));
    }

    fn decode(r: &mut Reader) -> Result<Self, GossipError> {
        Ok(ClientVersion {
            major: r.varint_u16("version major")?,
            minor: r.varint_u16("version minor")?,
            patch: r.varint_u16("version patch")?,
            commit: r.u32("version commit")?,
            feature_set: r.u32("version feature set")?,
            client: r.varint_u16("version client")?,
        })
    }
}

/// One advertised socket: `key` (a `SOCKET_TAG_*`), an index into the address list and
/// the port as an offset from the previous entry's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketEntry {
    pub key: u8,
    pub index: u8,
    pub offset: u16,
}

/// A type-length-value extension record, kept as bytes (unknown types are carried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlvRecord {
    pub typ: u8,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactInfo {
    pub pubkey: Pubkey,
    pub wallclock: u64,
    /// Microseconds since the epoch when the node instance started.
    pub outset: u64,
    pub shred_version: u16,
    pub version: ClientVersion,
    addrs: Vec<IpAddr>,
    sockets: Vec<SocketEntry>,
    pub extensions: Vec<TlvRecord>,
}

pub(crate) fn encode_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            put_u32(out, 0);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            put_u32(out, 1);
            out.extend_from_slice(&v6.octets());
        }
    }
}

pub(crate) fn decode_ip(r: &mut Reader) -> Result<IpAddr, GossipError> {
    match r.u32("IP address tag")? {
        0 => Ok(IpAddr::V4(Ipv4Addr::from(r.array::<4>("IPv4 address")?))),
        1 => Ok(IpAddr::V6(Ipv6Addr::from(r.array::<16>("IPv6 address")?))),
        tag => Err(GossipError::UnknownTag {
            what: "IP address",
            tag,
        }),
    }
}

/// serde's `SocketAddr` in bincode: variant tag, address octets, port.
pub(crate) fn encode_socket(out: &mut Vec<u8>, socket: &SocketAddr) {
    encode_ip(out, &socket.ip());
    put_u16(out, socket.port());
}

pub(crate) fn decode_socket(r: &mut Reader) -> Result<SocketAddr, GossipError> {
    let ip = decode_ip(r)?;
    let port = r.u16("socket port")?;
    Ok(SocketAddr::new(ip, port))
}

impl ContactInfo {
    pub fn new(pubkey: Pubkey, wallclock: u64, outset: u64, shred_version: u16) -> Self {
        ContactInfo {
            pubkey,
            wallclock,
            outset,
            shred_version,
            version: ClientVersion::default(),
            addrs: Vec::new(),
            sockets: Vec::new(),
            extensions: Vec::new(),
        }
    }

    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    pub fn sockets(&self) -> &[SocketEntry] {
        &self.sockets
    }

    /// The sanitized socket advertised under `key`, if any.
    pub fn socket(&self, key: u8) -> Option<SocketAddr> {
        let mut port = 0u16;
        for entry in &self.sockets {
            port = port.checked_add(entry.offset)?;
            if entry.key == key {
                let ip = *self.addrs.get(usize::from(entry.index))?;
                let socket = SocketAddr::new(ip, port);
                return sanitize_socket(&socket).ok().map(|()| socket);
            }
        }
        None
    }

    pub fn gossip(&self) -> Option<SocketAddr> {
        self.socket(SOCKET_TAG_GOSSIP)
    }

    pub fn rpc(&self) -> Option<SocketAddr> {
        self.socket(SOCKET_TAG_RPC)
    }

    /// The UDP serve-repair socket (where repair requests go).
    pub fn serve_repair(&self) -> Option<SocketAddr> {
        self.socket(SOCKET_TAG_SERVE_REPAIR)
    }

    pub fn tvu(&self) -> Option<SocketAddr> {
        self.socket(SOCKET_TAG_TVU)
    }

    /// Advertises `socket` under `key`, replacing any previous one; keeps the entries
    /// ordered by port with offsets from the previous entry and the address list
    /// deduplicated and fully referenced.
    pub fn set_socket(&mut self, key: u8, socket: SocketAddr) -> Result<(), ContactInfoError> {
        sanitize_socket(&socket)?;
        self.remove_socket(key);
        let mut offset = socket.port();
        let mut insert_at = None;
        for (position, entry) in self.sockets.iter().enumerate() {
            match offset.checked_sub(entry.offset) {
                Some(rest) => offset = rest,
                None => {
                    insert_at = Some(position);
                    break;
                }
            }
        }
        let index = self.push_addr(socket.ip())?;
        let entry = SocketEntry { key, index, offset };
        match insert_at {
            None => self.sockets.push(entry),
            Some(position) => {
                self.sockets[position].offset -= offset;
                self.sockets.insert(position, entry);
            }
        }
        Ok(())
    }

    pub fn remove_socket(&mut self, key: u8) {
        let Some(position) = self.sockets.iter().position(|entry| entry.key == key) else {
            return;
        };
        let removed = self.sockets.remove(position);
        if let Some(next) = self.sockets.get_mut(position) {
            next.offset += removed.offset;
        }
        if !self
            .sockets
            .iter()
            .any(|entry| entry.index == removed.index)
        {
            self.addrs.remove(usize::from(removed.index));
            for entry in &mut self.sockets {
                if entry.index > removed.index {
                    entry.index -= 1;
                }
            }
        }
    }

    fn push_addr(&mut self, ip: IpAddr) -> Result<u8, ContactInfoError> {
        if let Some(position) = self.addrs.iter().position(|known| *known == ip) {
            return u8::try_from(position).map_err(|_| ContactInfoError::IpAddrsSaturated);
        }
        let index =
            u8::try_from(self.addrs.len()).map_err(|_| ContactInfoError::IpAddrsSaturated)?;
        self.addrs.push(ip);
        Ok(index)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.pubkey.0);
        put_varint(out, self.wallclock);
        put_u64(out, self.outset);
        put_u16(out, self.shred_version);
        self.version.encode(out);
        put_short_len(out, self.addrs.len());
        for ip in &self.addrs {
            encode_ip(out, ip);
        }
        put_short_len(out, self.sockets.len());
        for entry in &self.sockets {
            out.push(entry.key);
            out.push(entry.index);
            put_varint(out, u64::from(entry.offset));
        }
        put_short_len(out, self.extensions.len());
        for record in &self.extensions {
            out.push(record.typ);
            put_short_len(out, record.bytes.len());
            out.extend_from_slice(&record.bytes);
        }
    }

    pub fn decode(r: &mut Reader) -> Result<Self, GossipError> {
        let pubkey = r.pubkey("contact info pubkey")?;
        let wallclock = r.varint_u64("contact info wallclock")?;
        let outset = r.u64("contact info outset")?;
        let shred_version = r.u16("contact info shred version")?;
        let version = ClientVersion::decode(r)?;
        let num_addrs = r.len_short("contact info addrs", 8, MAX_CONTACT_ADDRS)?;
        let mut addrs = Vec::with_capacity(num_addrs);
        for _ in 0..num_addrs {
            addrs.push(decode_ip(r)?);
        }
        let num_sockets = r.len_short("contact info sockets", 3, MAX_CONTACT_SOCKETS)?;
        let mut sockets = Vec::with_capacity(num_sockets);
        for _ in 0..num_sockets {
            let key = r.u8("socket key")?;
            let index = r.u8("socket address index")?;
            let offset = r.varint_u16("socket port offset")?;
            sockets.push(SocketEntry { key, index, offset });
        }
        let num_extensions = r.len_short("contact info extensions", 2, MAX_CONTACT_EXTENSIONS)?;
        let mut extensions = Vec::with_capacity(num_extensions);
        for _ in 0..num_extensions {
            let typ = r.u8("extension type")?;
            let len = r.len_short("extension bytes", 1, usize::from(u16::MAX))?;
            let bytes = r.take(len, "extension bytes")?.to_vec();
            extensions.push(TlvRecord { typ, bytes });
        }
        sanitize_entries(&addrs, &sockets)?;
        Ok(ContactInfo {
            pubkey,
            wallclock,
            outset,
            shred_version,
            version,
            addrs,
            sockets,
            extensions,
        })
    }
}

/// The cross-checks a decoded contact info must pass: IPv4 only, unique addresses,
/// unique socket keys, every index valid, every address used, port sums within u16.
pub fn sanitize_entries(addrs: &[IpAddr], sockets: &[SocketEntry]) -> Result<(), ContactInfoError> {
    for (position, ip) in addrs.iter().enumerate() {
        if ip.is_ipv6() {
            return Err(ContactInfoError::Ipv6IpAddr(*ip));
        }
        if addrs[..position].contains(ip) {
            return Err(ContactInfoError::DuplicateIpAddr(*ip));
        }
    }
    let mut seen_keys = [0u64; 4];
    for entry in sockets {
        let word = &mut seen_keys[usize::from(entry.key / 64)];
        let bit = 1u64 << (entry.key % 64);
        if *word & bit != 0 {
            return Err(ContactInfoError::DuplicateSocket(entry.key));
        }
        *word |= bit;
    }
    let mut used = vec![false; addrs.len()];
    for entry in sockets {
        match used.get_mut(usize::from(entry.index)) {
            Some(slot) => *slot = true,
            None => {
                return Err(ContactInfoError::InvalidIpAddrIndex {
                    index: entry.index,
                    num_addrs: addrs.len(),
                })
            }
        }
    }
    if let Some(position) = used.iter().position(|hit| !hit) {
        return Err(ContactInfoError::UnusedIpAddr(addrs[position]));
    }
    let mut port = 0u16;
    for entry in sockets {
        port = port
            .checked_add(entry.offset)
            .ok_or(ContactInfoError::PortOffsetsOverflow)?;
    }
    Ok(())
}

/// The legacy contact info: eleven fixed sockets. Still decoded (older nodes and test
/// vectors carry it); current nodes no longer accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyContactInfo {
    pub id: Pubkey,
    pub gossip: SocketAddr,
    pub tvu: SocketAddr,
    pub tvu_quic: SocketAddr,
    pub repair: SocketAddr,
    pub tpu: SocketAddr,
    pub tpu_forwards: SocketAddr,
    pub tpu_vote: SocketAddr,
    pub rpc: SocketAddr,
    pub rpc_pubsub: SocketAddr,
    pub serve_repair: SocketAddr,
    pub wallclock: u64,
    pub shred_version: u16,
}

impl LegacyContactInfo {
    /// All sockets unspecified (`0.0.0.0:0`).
    pub fn new(id: Pubkey, wallclock: u64, shred_version: u16) -> Self {
        let none = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        LegacyContactInfo {
            id,
            gossip: none,
            tvu: none,
            tvu_quic: none,
            repair: none,
            tpu: none,
            tpu_forwards: none,
            tpu_vote: none,
            rpc: none,
            rpc_pubsub: none,
            serve_repair: none,
            wallclock,
            shred_version,
        }
    }

    fn sockets(&self) -> [&SocketAddr; 10] {
        [
            &self.gossip,
            &self.tvu,
            &self.tvu_quic,
            &self.repair,
            &self.tpu,
            &self.tpu_forwards,
            &self.tpu_vote,
            &self.rpc,
            &self.rpc_pubsub,
            &self.serve_repair,
        ]
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        for socket in self.sockets() {
            encode_socket(out, socket);
        }
        put_u64(out, self.wallclock);
        put_u16(out, self.shred_version);
    }

    pub fn decode(r: &mut Reader) -> Result<Self, GossipError> {
        let id = r.pubkey("legacy contact info id")?;
        let mut sockets = [SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0); 10];
        for socket in &mut sockets {
            *socket = decode_socket(r)?;
        }
        let wallclock = r.u64("legacy contact info wallclock")?;
        let shred_version = r.u16("legacy contact info shred version")?;
        let [gossip, tvu, tvu_quic, repair, tpu, tpu_forwards, tpu_vote, rpc, rpc_pubsub, serve_repair] =
            sockets;
        Ok(LegacyContactInfo {
            id,
            gossip,
            tvu,
            tvu_quic,
            repair,
            tpu,
            tpu_forwards,
            tpu_vote,
            rpc,
            rpc_pubsub,
            serve_repair,
            wallclock,
            shred_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    #[test]
    fn socket_and_ip_layouts_match_serde_bincode() {
        let sockets = [
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 1234),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6)),
                8001,
            ),
        ];
        for socket in sockets {
            let mut ours = Vec::new();
            encode_socket(&mut ours, &socket);
            assert_eq!(ours, bincode::serialize(&socket).unwrap());
            let mut r = Reader::new(&ours);
            assert_eq!(decode_socket(&mut r).unwrap(), socket);
            r.finish().unwrap();
            let mut ip = Vec::new();
            encode_ip(&mut ip, &socket.ip());
            assert_eq!(ip, bincode::serialize(&socket.ip()).unwrap());
        }
        assert_eq!(
            bincode::serialize(&sockets[0]).unwrap(),
            [0, 0, 0, 0, 127, 0, 0, 1, 210, 4]
        );
    }

    #[test]
    fn random_socket_edits_keep_the_invariants() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let addrs = [
            IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 1, 2)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 1, 3)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 1, 4)),
        ];
        let mut node = ContactInfo::new(Pubkey([7; 32]), rng.gen(), rng.gen(), rng.gen());
        let mut expected: HashMap<u8, SocketAddr> = HashMap::new();
        for i in 0..1024u16 {
            let key = rng.gen_range(0u8..16);
            if rng.gen_range(0..4) == 0 {
                node.remove_socket(key);
                expected.remove(&key);
            } else {
                let socket = SocketAddr::new(addrs[usize::from(i) % addrs.len()], 10_000 + i);
                node.set_socket(key, socket).unwrap();
                expected.insert(key, socket);
            }
            sanitize_entries(&node.addrs, &node.sockets).unwrap();
            for key in 0u8..16 {
                assert_eq!(node.socket(key), expected.get(&key).copied(), "key {key}");
            }
            let mut used: Vec<IpAddr> = expected.values().map(SocketAddr::ip).collect();
            used.sort();
            used.dedup();
            let mut held = node.addrs.clone();
            held.sort();
            assert_eq!(held, used);
            let mut bytes = Vec::new();
            node.encode(&mut bytes);
            let mut r = Reader::new(&bytes);
            assert_eq!(ContactInfo::decode(&mut r).unwrap(), node);
            r.finish().unwrap();
        }
    }

    #[test]
    fn unusable_sockets_are_refused() {
        let mut node = ContactInfo::new(Pubkey([7; 32]), 0, 0, 0);
        let v4 = |a, b, c, d, port| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port);
        assert_eq!(
            node.set_socket(0, v4(10, 0, 0, 1, 0)),
            Err(ContactInfoError::InvalidPort(0))
        );
        assert!(node.set_socket(0, v4(0, 0, 0, 0, 8000)).is_err());
        assert!(node.set_socket(0, v4(224, 0, 0, 1, 8000)).is_err());
        assert!(node
            .set_socket(0, SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 8000))
            .is_err());
        assert!(node.sockets().is_empty() && node.addrs().is_empty());
    }

    #[test]
    fn extensions_are_carried() {
        let mut node = ContactInfo::new(Pubkey([7; 32]), 5, 6, 7);
        node.set_socket(0, "10.0.0.1:8000".parse().unwrap())
            .unwrap();
        node.extensions.push(TlvRecord {
            typ: 9,
            bytes: vec![1, 2, 3],
        });
        let mut bytes = Vec::new();
        node.encode(&mut bytes);
        assert_eq!(&bytes[bytes.len() - 6..], [1, 9, 3, 1, 2, 3]);
        let decoded = ContactInfo::decode(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(decoded, node);
    }
}

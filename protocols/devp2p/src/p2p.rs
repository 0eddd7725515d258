//! The devp2p base protocol ("p2p" v5): Hello, Disconnect, Ping, Pong, capability
//! negotiation with message-id offsets, and snappy compression of every message after Hello.

use crate::error::{Devp2pError, Result};
use crate::frame::Session;
use crate::rlp;

/// Base protocol version we speak (5: snappy after Hello).
pub const P2P_VERSION: u64 = 5;
/// Message ids 0x00..0x10 belong to the base protocol.
pub const BASE_PROTOCOL_LENGTH: u64 = 16;
/// Largest decompressed message payload accepted (the snappy limit of the spec).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Most capabilities accepted in a Hello.
pub const MAX_CAPABILITIES: usize = 64;

pub const ID_HELLO: u64 = 0x00;
pub const ID_DISCONNECT: u64 = 0x01;
pub const ID_PING: u64 = 0x02;
pub const ID_PONG: u64 = 0x03;

/// A capability: protocol name and version (`eth/68`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability {
    pub name: String,
    pub version: u64,
}

impl Capability {
    pub fn new(name: &str, version: u64) -> Self {
        Capability {
            name: name.to_string(),
            version,
        }
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.name, self.version)
    }
}

/// Number of message ids a known capability uses, `None` for unknown ones.
pub fn protocol_length(name: &str, version: u64) -> Option<u64> {
    match (name, version) {
        ("eth", 66..=68) => Some(17),
        ("eth", 69 | 70) => Some(18),
        ("snap", 1) => Some(8),
        _ => None,
    }
}

/// The Hello message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub protocol_version: u64,
    pub client_id: String,
    pub capabilities: Vec<Capability>,
    pub listen_port: u64,
    pub node_id: [u8; 64],
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let caps: Vec<Vec<u8>> = self
            .capabilities
            .iter()
            .map(|c| {
                rlp::encode_list(&[rlp::enc_bytes(c.name.as_bytes()), rlp::enc_uint(c.version)])
            })
            .collect();
        rlp::encode_list(&[
            rlp::enc_uint(self.protocol_version),
            rlp::enc_bytes(self.client_id.as_bytes()),
            rlp::encode_list(&caps),
            rlp::enc_uint(self.listen_port),
            rlp::enc_bytes(&self.node_id),
        ])
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        // Extra trailing list elements are allowed (forward compatibility).
        let (items, _) = rlp::list("hello", payload, 32)?;
        if items.len() < 5 {
            return Err(Devp2pError::rlp(
                "hello",
                format!("{} items, expected at least 5", items.len()),
            ));
        }
        let client = rlp::bytes("hello client id", items[1])?;
        if client.len() > 1024 {
            return Err(Devp2pError::MessageTooLarge {
                what: "hello client id",
                len_bytes: client.len(),
                limit_bytes: 1024,
            });
        }
        let (cap_items, _) = rlp::list("hello capabilities", items[2], MAX_CAPABILITIES)?;
        let mut capabilities = Vec::with_capacity(cap_items.len());
        for c in cap_items {
            let (f, _) = rlp::list("hello capability", c, 8)?;
            if f.len() < 2 {
                return Err(Devp2pError::rlp(
                    "hello capability",
                    "expected [name, version]",
                ));
            }
            let name = rlp::bytes("capability name", f[0])?;
            if name.len() > 32 {
                return Err(Devp2pError::MessageTooLarge {
                    what: "capability name",
                    len_bytes: name.len(),
                    limit_bytes: 32,
                });
            }
            capabilities.push(Capability {
                name: String::from_utf8_lossy(name).into_owned(),
                version: rlp::uint("capability version", f[1])?,
            });
        }
        Ok(Hello {
            protocol_version: rlp::uint("hello version", items[0])?,
            client_id: String::from_utf8_lossy(client).into_owned(),
            capabilities,
            listen_port: rlp::uint("hello listen port", items[3])?,
            node_id: rlp::fixed::<64>("hello node id", items[4])?,
        })
    }
}

/// Disconnect reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    Requested,
    TcpError,
    BreachOfProtocol,
    UselessPeer,
    TooManyPeers,
    AlreadyConnected,
    IncompatibleVersion,
    InvalidIdentity,
    ClientQuitting,
    UnexpectedIdentity,
    ConnectedToSelf,
    Timeout,
    SubprotocolError,
    Other(u8),
}

impl DisconnectReason {
    pub fn code(self) -> u8 {
        use DisconnectReason::*;
        match self {
            Requested => 0x00,
            TcpError => 0x01,
            BreachOfProtocol => 0x02,
            UselessPeer => 0x03,
            TooManyPeers => 0x04,
            AlreadyConnected => 0x05,
            IncompatibleVersion => 0x06,
            InvalidIdentity => 0x07,
            ClientQuitting => 0x08,
            UnexpectedIdentity => 0x09,
            ConnectedToSelf => 0x0a,
            Timeout => 0x0b,
            SubprotocolError => 0x10,
            Other(c) => c,
        }
    }

    pub fn from_code(c: u8) -> Self {
        use DisconnectReason::*;
        match c {
            0x00 => Requested,
            0x01 => TcpError,
            0x02 => BreachOfProtocol,
            0x03 => UselessPeer,
            0x04 => TooManyPeers,
            0x05 => AlreadyConnected,
            0x06 => IncompatibleVersion,
            0x07 => InvalidIdentity,
            0x08 => ClientQuitting,
            0x09 => UnexpectedIdentity,
            0x0a => ConnectedToSelf,
            0x0b => Timeout,
            0x10 => SubprotocolError,
            o => Other(o),
        }
    }

    pub fn encode(self) -> Vec<u8> {
        rlp::encode_list(&[rlp::enc_uint(u64::from(self.code()))])
    }

    /// Decode `[reason]`, also the bare-integer and empty forms some clients send.
    pub fn decode(payload: &[u8]) -> Result<Self> {
        if payload.is_empty() {
            return Ok(DisconnectReason::Requested);
        }
        let item = match rlp::list("disconnect", payload, 4) {
            Ok((items, _)) => match items.first() {
                Some(i) => *i,
                None => return Ok(DisconnectReason::Requested),
            },
            Err(_) => payload,
        };
        let v = rlp::uint("disconnect reason", item)?;
        Ok(DisconnectReason::from_code(u8::try_from(v).unwrap_or(0xff)))
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?} ({:#04x})", self.code())
    }
}

/// A capability both sides support, with its message-id window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCapability {
    pub name: String,
    pub version: u64,
    pub offset: u64,
    pub length: u64,
}

/// Shared capabilities: for each name both sides know, the highest common version; sorted by
/// name; message ids allocated consecutively from 0x10.
pub fn negotiate(ours: &[Capability], theirs: &[Capability]) -> Vec<SharedCapability> {
    let mut best: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for c in ours {
        if protocol_length(&c.name, c.version).is_none() {
            continue;
        }
        if theirs
            .iter()
            .any(|t| t.name == c.name && t.version == c.version)
        {
            let e = best.entry(c.name.as_str()).or_insert(c.version);
            *e = (*e).max(c.version);
        }
    }
    let mut offset = BASE_PROTOCOL_LENGTH;
    let mut out = Vec::new();
    for (name, version) in best {
        let length = protocol_length(name, version).unwrap_or(0);
        out.push(SharedCapability {
            name: name.to_string(),
            version,
            offset,
            length,
        });
        offset += length;
    }
    out
}

/// Where a wire message id goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Base protocol message.
    P2p(u64),
    /// Message `id` relative to the shared capability at index `cap`.
    Cap { cap: usize, id: u64 },
}

/// Route a wire message id through the negotiated capabilities.
pub fn route(shared: &[SharedCapability], wire_id: u64) -> Result<Route> {
    if wire_id < BASE_PROTOCOL_LENGTH {
        return Ok(Route::P2p(wire_id));
    }
    for (i, c) in shared.iter().enumerate() {
        if wire_id >= c.offset && wire_id < c.offset + c.length {
            return Ok(Route::Cap {
                cap: i,
                id: wire_id - c.offset,
            });
        }
    }
    Err(Devp2pError::UnknownMessageId { id: wire_id })
}

/// Message layer over a [`Session`]: message id + payload per frame, snappy after Hello.
#[derive(Debug)]
pub struct MessageConn {
    pub session: Session,
    snappy: bool,
    max_message_bytes: usize,
}

impl MessageConn {
    pub fn new(session: Session, max_message_bytes: usize) -> Self {
        MessageConn {
            session,
            snappy: false,
            max_message_bytes: max_message_bytes.min(MAX_MESSAGE_BYTES),
        }
    }

    /// Turn snappy on (after both Hellos, when both sides speak p2p v5 or later).
    pub fn set_snappy(&mut self, on: bool) {
        self.snappy = on;
    }

    pub fn snappy(&self) -> bool {
        self.snappy
    }

    /// Encode and encrypt one message into `out`.
    pub fn write_message(&mut self, wire_id: u64, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if payload.len() > self.max_message_bytes {
            return Err(Devp2pError::MessageTooLarge {
                what: "outgoing message",
                len_bytes: payload.len(),
                limit_bytes: self.max_message_bytes,
            });
        }
        let mut data = rlp::enc_uint(wire_id);
        if self.snappy && wire_id != ID_HELLO {
            let start = data.len();
            data.resize(start + snap::raw::max_compress_len(payload.len()), 0);
            let n = snap::raw::Encoder::new()
                .compress(payload, &mut data[start..])
                .map_err(|e| Devp2pError::Snappy(e.to_string()))?;
            data.truncate(start + n);
        } else {
            data.extend_from_slice(payload);
        }
        self.session.write_frame(&data, out)
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.session.feed(bytes)
    }

    /// The next message (wire id, decompressed payload), if a whole frame is buffered.
    pub fn next_message(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        let Some(frame) = self.session.next_frame()? else {
            return Ok(None);
        };
        let (id_item, _, _, rest) = rlp::split_item("message id", &frame)?;
        let id = rlp::uint("message id", id_item)?;
        if !self.snappy || id == ID_HELLO {
            return Ok(Some((id, rest.to_vec())));
        }
        Ok(Some((id, decompress(rest, self.max_message_bytes)?)))
    }
}

/// Snappy-decompress with a limit checked before any allocation.
pub fn decompress(data: &[u8], max_bytes: usize) -> Result<Vec<u8>> {
    let len = snap::raw::decompress_len(data).map_err(|e| Devp2pError::Snappy(e.to_string()))?;
    if len > max_bytes {
        return Err(Devp2pError::MessageTooLarge {
            what: "decompressed message",
            len_bytes: len,
            limit_bytes: max_bytes,
        });
    }
    let mut out = vec![0u8; len];
    let n = snap::raw::Decoder::new()
        .decompress(data, &mut out)
        .map_err(|e| Devp2pError::Snappy(e.to_string()))?;
    out.truncate(n);
    Ok(out)
}

/// Snappy-compress a payload (the form every message after Hello takes on the wire).
pub fn compress(data: &[u8]) -> Result<Vec<u8>> {
    snap::raw::Encoder::new()
        .compress_vec(data)
        .map_err(|e| Devp2pError::Snappy(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_offsets() {
        let ours = vec![
            Capability::new("eth", 68),
            Capability::new("eth", 67),
            Capability::new("snap", 1),
            Capability::new("eth", 69),
        ];
        let theirs = vec![
            Capability::new("eth", 66),
            Capability::new("eth", 67),
            Capability::new("eth", 68),
            Capability::new("snap", 1),
            Capability::new("les", 4),
        ];
        let s = negotiate(&ours, &theirs);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].name.as_str(), s[0].version, s[0].offset, s[0].length),
            ("eth", 68, 0x10, 17)
        );
        assert_eq!(
            (s[1].name.as_str(), s[1].version, s[1].offset, s[1].length),
            ("snap", 1, 0x21, 8)
        );
        assert_eq!(route(&s, 0x02).unwrap(), Route::P2p(2));
        assert_eq!(route(&s, 0x13).unwrap(), Route::Cap { cap: 0, id: 3 });
        assert_eq!(route(&s, 0x21).unwrap(), Route::Cap { cap: 1, id: 0 });
        assert_eq!(
            route(&s, 0x29),
            Err(Devp2pError::UnknownMessageId { id: 0x29 })
        );
    }

    #[test]
    fn hello_roundtrip_and_disconnect_forms() {
        let h = Hello {
            protocol_version: 5,
            client_id: "catchup/0.1".into(),
            capabilities: vec![Capability::new("eth", 68), Capability::new("snap", 1)],
            listen_port: 30303,
            node_id: [7u8; 64],
        };
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        assert_eq!(
            DisconnectReason::decode(&DisconnectReason::TooManyPeers.encode()).unwrap(),
            DisconnectReason::TooManyPeers
        );
        assert_eq!(
            DisconnectReason::decode(&[0x04]).unwrap(),
            DisconnectReason::TooManyPeers
        );
        assert_eq!(
            DisconnectReason::decode(&[0xc0]).unwrap(),
            DisconnectReason::Requested
        );
    }

    #[test]
    fn snappy_bomb_rejected_before_allocation() {
        // A varint length prefix claiming 1 GiB followed by garbage.
        let mut bomb = vec![0x80, 0x80, 0x80, 0x80, 0x04];
        bomb.extend_from_slice(&[0u8; 16]);
        assert!(matches!(
            decompress(&bomb, MAX_MESSAGE_BYTES),
            Err(Devp2pError::MessageTooLarge { .. })
        ));
    }
}

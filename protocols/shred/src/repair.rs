//! Repair protocol messages, bincode-1 compatible (u32 LE enum tags, fixed-size integers
//! LE, arrays inline) and hand-written so every decoder has explicit limits.
//!
//! Requests (`RepairProtocol`): tag 7 `Pong`, 8 `WindowIndex`, 9 `HighestWindowIndex`,
//! 10 `Orphan`, 11 `AncestorHashes`; tags 0..=6 are the retired unsigned requests and are
//! rejected. A request carries a header (signature, sender, recipient, timestamp in ms,
//! nonce); the sender signs the serialized request without the 64 signature bytes
//! (`bytes[..4] ‖ bytes[68..]`). The server answers a request with `shred ‖ nonce (u32 LE)`,
//! or first with a `Ping` (response tag 0) that the requester answers with a `Pong`.

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::layout::PACKET_DATA_SIZE;
use crate::shred::verify_signature;

pub type Pubkey = [u8; 32];
/// `(slot, hash)` pairs of an ancestor hashes response.
pub type SlotHashes = Vec<(u64, [u8; 32])>;

/// Requests whose timestamp is further than this from the server's clock are dropped.
pub const SIGNED_REPAIR_TIME_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Shreds answered to an `Orphan` request at most.
pub const MAX_ORPHAN_REPAIR_RESPONSES: usize = 11;
/// (slot, hash) pairs in one ancestor hashes response at most.
pub const MAX_ANCESTOR_RESPONSES: usize = 30;
/// A peer that answered a ping stays trusted this long.
pub const REPAIR_PING_CACHE_TTL_MS: u64 = 1_280_000;
/// At most one ping per peer per this interval.
pub const REPAIR_PING_RATE_LIMIT_MS: u64 = 2_000;
pub const REPAIR_PING_CACHE_CAPACITY: usize = 65_536;
/// Requests a server handles per batch at most.
pub const MAX_REQUESTS_PER_ITERATION: usize = 1024;
const PING_PONG_HASH_PREFIX: &[u8] = b"SOLANA_PING_PONG";

pub const TAG_PONG: u32 = 7;
pub const TAG_WINDOW_INDEX: u32 = 8;
pub const TAG_HIGHEST_WINDOW_INDEX: u32 = 9;
pub const TAG_ORPHAN: u32 = 10;
pub const TAG_ANCESTOR_HASHES: u32 = 11;
pub const SIZE_OF_HEADER: usize = 64 + 32 + 32 + 8 + 4;
/// Serialized `RepairResponse::Ping`.
pub const SIZE_OF_PING_RESPONSE: usize = 4 + 32 + 32 + 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepairError {
    #[error("repair message of {len} bytes: {what} needs {need}")]
    Truncated {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("repair message of {len} bytes exceeds the packet limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("repair message tag {tag} is a retired unsigned request")]
    Retired { tag: u32 },
    #[error("unknown repair message tag {tag}")]
    UnknownTag { tag: u32 },
    #[error("repair request addressed to another node")]
    WrongRecipient,
    #[error("repair request timestamp {timestamp_ms} ms is {skew_ms} ms away from now (window {SIGNED_REPAIR_TIME_WINDOW_MS} ms)")]
    Stale { timestamp_ms: u64, skew_ms: u64 },
    #[error("bad signature on {what}")]
    Signature { what: &'static str },
    #[error("repair request from this node itself")]
    SelfRequest,
    #[error("ancestor hashes response with {count} entries exceeds {MAX_ANCESTOR_RESPONSES}")]
    TooManyAncestors { count: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub signature: [u8; 64],
    pub sender: Pubkey,
    pub recipient: Pubkey,
    pub timestamp_ms: u64,
    pub nonce: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// The data shred `shred_index` of `slot`.
    WindowIndex { slot: u64, shred_index: u64 },
    /// The highest data shred of `slot` if its index is at least `shred_index`.
    HighestWindowIndex { slot: u64, shred_index: u64 },
    /// The highest shreds of `slot` and its ancestors.
    Orphan { slot: u64 },
    /// The hashes of `slot`'s ancestors.
    AncestorHashes { slot: u64 },
}

impl RequestKind {
    pub fn slot(&self) -> u64 {
        match *self {
            RequestKind::WindowIndex { slot, .. }
            | RequestKind::HighestWindowIndex { slot, .. }
            | RequestKind::Orphan { slot }
            | RequestKind::AncestorHashes { slot } => slot,
        }
    }
    fn tag(&self) -> u32 {
        match self {
            RequestKind::WindowIndex { .. } => TAG_WINDOW_INDEX,
            RequestKind::HighestWindowIndex { .. } => TAG_HIGHEST_WINDOW_INDEX,
            RequestKind::Orphan { .. } => TAG_ORPHAN,
            RequestKind::AncestorHashes { .. } => TAG_ANCESTOR_HASHES,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairRequest {
    pub header: RequestHeader,
    pub kind: RequestKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ping {
    pub from: Pubkey,
    pub token: [u8; 32],
    pub signature: [u8; 64],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pong {
    pub from: Pubkey,
    pub hash: [u8; 32],
    pub signature: [u8; 64],
}

/// What arrives on a serve-repair socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepairProtocol {
    Pong(Pong),
    Request(RepairRequest),
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RepairError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(RepairError::Truncated {
                what: self.what,
                len: self.b.len(),
                need: self.pos + n,
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], RepairError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn u32(&mut self) -> Result<u32, RepairError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, RepairError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
}

pub fn pubkey_of(key: &SigningKey) -> Pubkey {
    key.verifying_key().to_bytes()
}

impl RepairRequest {
    /// Serialize (with the signature as it is).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + SIZE_OF_HEADER + 16);
        out.extend_from_slice(&self.kind.tag().to_le_bytes());
        let h = &self.header;
        out.extend_from_slice(&h.signature);
        out.extend_from_slice(&h.sender);
        out.extend_from_slice(&h.recipient);
        out.extend_from_slice(&h.timestamp_ms.to_le_bytes());
        out.extend_from_slice(&h.nonce.to_le_bytes());
        match self.kind {
            RequestKind::WindowIndex { slot, shred_index }
            | RequestKind::HighestWindowIndex { slot, shred_index } => {
                out.extend_from_slice(&slot.to_le_bytes());
                out.extend_from_slice(&shred_index.to_le_bytes());
            }
            RequestKind::Orphan { slot } | RequestKind::AncestorHashes { slot } => {
                out.extend_from_slice(&slot.to_le_bytes());
            }
        }
        out
    }

    /// Build, sign and serialize a request.
    pub fn signed(
        key: &SigningKey,
        recipient: Pubkey,
        timestamp_ms: u64,
        nonce: u32,
        kind: RequestKind,
    ) -> Vec<u8> {
        let mut req = RepairRequest {
            header: RequestHeader {
                signature: [0; 64],
                sender: pubkey_of(key),
                recipient,
                timestamp_ms,
                nonce,
            },
            kind,
        };
        let bytes = req.encode();
        req.header.signature = key.sign(&signable(&bytes)).to_bytes();
        req.encode()
    }

    /// Check recipient, time window and signature. `bytes` is the serialized request.
    pub fn verify(&self, bytes: &[u8], my_id: &Pubkey, now_ms: u64) -> Result<(), RepairError> {
        if &self.header.recipient != my_id {
            return Err(RepairError::WrongRecipient);
        }
        if &self.header.sender == my_id {
            return Err(RepairError::SelfRequest);
        }
        let skew_ms = now_ms.abs_diff(self.header.timestamp_ms);
        if skew_ms > SIGNED_REPAIR_TIME_WINDOW_MS {
            return Err(RepairError::Stale {
                timestamp_ms: self.header.timestamp_ms,
                skew_ms,
            });
        }
        let len = self.encode().len();
        verify_signature(
            &self.header.sender,
            &signable(&bytes[..len]),
            &self.header.signature,
        )
        .map_err(|_| RepairError::Signature {
            what: "repair request",
        })
    }
}

fn signable(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes.len() - 64);
    v.extend_from_slice(&bytes[..4]);
    v.extend_from_slice(&bytes[68..]);
    v
}

/// Decode a message received on a serve-repair socket. Trailing bytes are allowed (as
/// Agave's limited deserialisation does) but the whole packet is at most 1232 bytes.
pub fn decode_repair_protocol(bytes: &[u8]) -> Result<RepairProtocol, RepairError> {
    if bytes.len() > PACKET_DATA_SIZE {
        return Err(RepairError::TooLong {
            len: bytes.len(),
            max: PACKET_DATA_SIZE,
        });
    }
    let mut r = Reader {
        b: bytes,
        pos: 0,
        what: "repair request",
    };
    let tag = r.u32()?;
    match tag {
        0..=6 => Err(RepairError::Retired { tag }),
        TAG_PONG => {
            r.what = "pong";
            Ok(RepairProtocol::Pong(Pong {
                from: r.arr()?,
                hash: r.arr()?,
                signature: r.arr()?,
            }))
        }
        TAG_WINDOW_INDEX..=TAG_ANCESTOR_HASHES => {
            let header = RequestHeader {
                signature: r.arr()?,
                sender: r.arr()?,
                recipient: r.arr()?,
                timestamp_ms: r.u64()?,
                nonce: r.u32()?,
            };
            let slot = r.u64()?;
            let kind = match tag {
                TAG_WINDOW_INDEX => RequestKind::WindowIndex {
                    slot,
                    shred_index: r.u64()?,
                },
                TAG_HIGHEST_WINDOW_INDEX => RequestKind::HighestWindowIndex {
                    slot,
                    shred_index: r.u64()?,
                },
                TAG_ORPHAN => RequestKind::Orphan { slot },
                _ => RequestKind::AncestorHashes { slot },
            };
            Ok(RepairProtocol::Request(RepairRequest { header, kind }))
        }
        _ => Err(RepairError::UnknownTag { tag }),
    }
}

fn ping_pong_hash(token: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(PING_PONG_HASH_PREFIX);
    h.update(token);
    h.finalize().into()
}

impl Ping {
    pub fn new(key: &SigningKey, token: [u8; 32]) -> Ping {
        Ping {
            from: pubkey_of(key),
            token,
            signature: key.sign(&token).to_bytes(),
        }
    }
    pub fn verify(&self) -> Result<(), RepairError> {
        verify_signature(&self.from, &self.token, &self.signature)
            .map_err(|_| RepairError::Signature { what: "ping" })
    }
    /// Serialized as `RepairResponse::Ping` (tag 0).
    pub fn encode_response(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIZE_OF_PING_RESPONSE);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.from);
        out.extend_from_slice(&self.token);
        out.extend_from_slice(&self.signature);
        out
    }
    /// A repair response that is a ping: exactly 132 bytes with tag 0.
    pub fn decode_response(bytes: &[u8]) -> Option<Ping> {
        if bytes.len() != SIZE_OF_PING_RESPONSE || bytes[..4] != [0, 0, 0, 0] {
            return None;
        }
        let mut r = Reader {
            b: bytes,
            pos: 4,
            what: "ping",
        };
        Some(Ping {
            from: r.arr().ok()?,
            token: r.arr().ok()?,
            signature: r.arr().ok()?,
        })
    }
}

impl Pong {
    pub fn new(key: &SigningKey, ping: &Ping) -> Pong {
        let hash = ping_pong_hash(&ping.token);
        Pong {
            from: pubkey_of(key),
            hash,
            signature: key.sign(&hash).to_bytes(),
        }
    }
    /// Check the signature and that it answers `token`.
    pub fn verify(&self, token: &[u8; 32]) -> Result<(), RepairError> {
        if self.hash != ping_pong_hash(token) {
            return Err(RepairError::Signature { what: "pong hash" });
        }
        verify_signature(&self.from, &self.hash, &self.signature)
            .map_err(|_| RepairError::Signature { what: "pong" })
    }
    /// Serialized as `RepairProtocol::Pong` (tag 7).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 128);
        out.extend_from_slice(&TAG_PONG.to_le_bytes());
        out.extend_from_slice(&self.from);
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.signature);
        out
    }
}

/// `shred ‖ nonce` as a server sends it.
pub fn encode_shred_response(shred: &[u8], nonce: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(shred.len() + 4);
    out.extend_from_slice(shred);
    out.extend_from_slice(&nonce.to_le_bytes());
    out
}

/// `AncestorHashesResponse::Hashes(Vec<(Slot, Hash)>) ‖ nonce`.
pub fn encode_ancestor_hashes(hashes: &[(u64, [u8; 32])], nonce: u32) -> Vec<u8> {
    let hashes = &hashes[..hashes.len().min(MAX_ANCESTOR_RESPONSES)];
    let mut out = Vec::with_capacity(4 + 8 + hashes.len() * 40 + 4);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(hashes.len() as u64).to_le_bytes());
    for (slot, hash) in hashes {
        out.extend_from_slice(&slot.to_le_bytes());
        out.extend_from_slice(hash);
    }
    out.extend_from_slice(&nonce.to_le_bytes());
    out
}

pub fn decode_ancestor_hashes(bytes: &[u8]) -> Result<(SlotHashes, u32), RepairError> {
    if bytes.len() > PACKET_DATA_SIZE {
        return Err(RepairError::TooLong {
            len: bytes.len(),
            max: PACKET_DATA_SIZE,
        });
    }
    let mut r = Reader {
        b: bytes,
        pos: 0,
        what: "ancestor hashes response",
    };
    let tag = r.u32()?;
    if tag != 0 {
        return Err(RepairError::UnknownTag { tag });
    }
    let count = r.u64()?;
    if count > MAX_ANCESTOR_RESPONSES as u64 {
        return Err(RepairError::TooManyAncestors { count });
    }
    let mut v = Vec::with_capacity(count as usize);
    for _ in 0..count {
        v.push((r.u64()?, r.arr()?));
    }
    let nonce = r.u32()?;
    Ok((v, nonce))
}

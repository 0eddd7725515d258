//! The gossip message enum and its packet codec.

use crate::bloom::CrdsFilter;
use crate::crds::{CrdsData, CrdsValue};
use crate::ping_pong::{Ping, Pong};
use crate::wire::{put_u32, put_u64, Reader};
use crate::{sanitize_wallclock, GossipError, Pubkey, Signature, PACKET_DATA_SIZE};
use ed25519_dalek::SigningKey;

pub const TAG_PULL_REQUEST: u32 = 0;
pub const TAG_PULL_RESPONSE: u32 = 1;
pub const TAG_PUSH_MESSAGE: u32 = 2;
pub const TAG_PRUNE_MESSAGE: u32 = 3;
pub const TAG_PING_MESSAGE: u32 = 4;
pub const TAG_PONG_MESSAGE: u32 = 5;

/// Room for values in a push message or pull response: the packet less the tag, the
/// pubkey and the vector length.
pub const PUSH_MESSAGE_MAX_PAYLOAD_SIZE: usize = PACKET_DATA_SIZE - 44;
pub const PULL_RESPONSE_MAX_PAYLOAD_SIZE: usize = PUSH_MESSAGE_MAX_PAYLOAD_SIZE;
/// Origins one prune message lists at most (so it fits a packet).
pub const MAX_PRUNE_DATA_NODES: usize = 32;
pub const PRUNE_DATA_PREFIX: &[u8] = b"\xffSOLANA_PRUNE_DATA";
/// Smallest encoded value (signature, tag, the smallest body): bounds value counts.
const MIN_CRDS_VALUE_LEN: usize = 64 + 4 + 32 + 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneData {
    pub pubkey: Pubkey,
    pub prunes: Vec<Pubkey>,
    pub signature: Signature,
    pub destination: Pubkey,
    pub wallclock: u64,
}

impl PruneData {
    /// The bytes signed: the fields but the signature, optionally preceded by the
    /// length-prefixed [`PRUNE_DATA_PREFIX`].
    pub fn signable_bytes(&self, with_prefix: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 32 * self.prunes.len() + 48);
        if with_prefix {
            put_u64(&mut out, PRUNE_DATA_PREFIX.len() as u64);
            out.extend_from_slice(PRUNE_DATA_PREFIX);
        }
        out.extend_from_slice(&self.pubkey.0);
        put_u64(&mut out, self.prunes.len() as u64);
        for prune in &self.prunes {
            out.extend_from_slice(&prune.0);
        }
        out.extend_from_slice(&self.destination.0);
        put_u64(&mut out, self.wallclock);
        out
    }

    /// Signs the unprefixed form (what the cluster sends today).
    pub fn new_signed(
        key: &SigningKey,
        prunes: Vec<Pubkey>,
        destination: Pubkey,
        wallclock: u64,
    ) -> PruneData {
        let mut data = PruneData {
            pubkey: Pubkey::of(key),
            prunes,
            signature: Signature::default(),
            destination,
            wallclock,
        };
        data.signature = Signature::sign(key, &data.signable_bytes(false));
        data
    }

    /// Accepts a signature over either form.
    pub fn verify(&self) -> Result<(), GossipError> {
        if self
            .signature
            .verify(&self.pubkey, &self.signable_bytes(false))
            || self
                .signature
                .verify(&self.pubkey, &self.signable_bytes(true))
        {
            Ok(())
        } else {
            Err(GossipError::BadSignature { what: "prune data" })
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.pubkey.0);
        put_u64(out, self.prunes.len() as u64);
        for prune in &self.prunes {
            out.extend_from_slice(&prune.0);
        }
        out.extend_from_slice(&self.signature.0);
        out.extend_from_slice(&self.destination.0);
        put_u64(out, self.wallclock);
    }

    fn decode(r: &mut Reader) -> Result<PruneData, GossipError> {
        let pubkey = r.pubkey("prune pubkey")?;
        let count = r.len_u64("prune list", 32, PACKET_DATA_SIZE / 32)?;
        let mut prunes = Vec::with_capacity(count);
        for _ in 0..count {
            prunes.push(r.pubkey("prune list")?);
        }
        Ok(PruneData {
            pubkey,
            prunes,
            signature: r.signature("prune signature")?,
            destination: r.pubkey("prune destination")?,
            wallclock: r.u64("prune wallclock")?,
        })
    }
}

/// One message per packet, built and dropped right away: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    PullRequest(CrdsFilter, CrdsValue),
    PullResponse(Pubkey, Vec<CrdsValue>),
    PushMessage(Pubkey, Vec<CrdsValue>),
    PruneMessage(Pubkey, PruneData),
    PingMessage(Ping),
    PongMessage(Pong),
}

fn encode_values(out: &mut Vec<u8>, values: &[CrdsValue]) {
    put_u64(out, values.len() as u64);
    for value in values {
        out.extend_from_slice(value.encoded());
    }
}

fn decode_values(r: &mut Reader) -> Result<Vec<CrdsValue>, GossipError> {
    let count = r.len_u64(
        "crds values",
        MIN_CRDS_VALUE_LEN,
        PACKET_DATA_SIZE / MIN_CRDS_VALUE_LEN,
    )?;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        values.push(CrdsValue::decode(r)?);
    }
    Ok(values)
}

impl Protocol {
    pub fn tag(&self) -> u32 {
        match self {
            Protocol::PullRequest(..) => TAG_PULL_REQUEST,
            Protocol::PullResponse(..) => TAG_PULL_RESPONSE,
            Protocol::PushMessage(..) => TAG_PUSH_MESSAGE,
            Protocol::PruneMessage(..) => TAG_PRUNE_MESSAGE,
            Protocol::PingMessage(_) => TAG_PING_MESSAGE,
            Protocol::PongMessage(_) => TAG_PONG_MESSAGE,
        }
    }

    /// The bincode encoding (which may exceed a packet; see [`Protocol::encode_packet`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PACKET_DATA_SIZE);
        put_u32(&mut out, self.tag());
        match self {
            Protocol::PullRequest(filter, caller) => {
                filter.encode(&mut out);
                out.extend_from_slice(caller.encoded());
            }
            Protocol::PullResponse(from, values) | Protocol::PushMessage(from, values) => {
                out.extend_from_slice(&from.0);
                encode_values(&mut out, values);
            }
            Protocol::PruneMessage(from, data) => {
                out.extend_from_slice(&from.0);
                data.encode(&mut out);
            }
            Protocol::PingMessage(ping) => ping.encode(&mut out),
            Protocol::PongMessage(pong) => pong.encode(&mut out),
        }
        out
    }

    /// The encoding, or [`GossipError::Oversize`] when it does not fit one packet.
    pub fn encode_packet(&self) -> Result<Vec<u8>, GossipError> {
        let bytes = self.encode();
        if bytes.len() > PACKET_DATA_SIZE {
            return Err(GossipError::Oversize {
                size_bytes: bytes.len(),
            });
        }
        Ok(bytes)
    }

    /// The cluster's structural rules: pull requests carry the caller's contact info and
    /// a filter with enough mask bits; every value obeys its kind's bounds; a prune
    /// message's sender is its data's signer.
    pub fn sanitize(&self) -> Result<(), GossipError> {
        match self {
            Protocol::PullRequest(filter, caller) => {
                filter.sanitize()?;
                match caller.data() {
                    CrdsData::ContactInfo(_) => caller.data().sanitize(),
                    _ => Err(GossipError::Invalid {
                        what: "pull request",
                        reason: "caller value is not a contact info",
                    }),
                }
            }
            Protocol::PullResponse(_, values) | Protocol::PushMessage(_, values) => {
                values.iter().try_for_each(|value| value.data().sanitize())
            }
            Protocol::PruneMessage(from, data) => {
                if *from != data.pubkey {
                    return Err(GossipError::Invalid {
                        what: "prune message",
                        reason: "sender differs from the prune data's pubkey",
                    });
                }
                sanitize_wallclock(data.wallclock)
            }
            Protocol::PingMessage(_) | Protocol::PongMessage(_) => Ok(()),
        }
    }

    /// Every signature in the message verifies.
    pub fn verify(&self) -> Result<(), GossipError> {
        match self {
            Protocol::PullRequest(_, caller) => caller.verify(),
            Protocol::PullResponse(_, values) | Protocol::PushMessage(_, values) => {
                values.iter().try_for_each(CrdsValue::verify)
            }
            Protocol::PruneMessage(_, data) => data.verify(),
            Protocol::PingMessage(ping) => ping.verify(),
            Protocol::PongMessage(pong) => pong.verify(),
        }
    }
}

/// Decodes one packet: at most [`PACKET_DATA_SIZE`] bytes, no trailing bytes. Structure
/// only; call [`Protocol::sanitize`] and [`Protocol::verify`] (or use [`decode_verified`]).
pub fn decode(bytes: &[u8]) -> Result<Protocol, GossipError> {
    if bytes.len() > PACKET_DATA_SIZE {
        return Err(GossipError::Oversize {
            size_bytes: bytes.len(),
        });
    }
    let mut r = Reader::new(bytes);
    let message = match r.u32("message tag")? {
        TAG_PULL_REQUEST => {
            let filter = CrdsFilter::decode(&mut r)?;
            let caller = CrdsValue::decode(&mut r)?;
            Protocol::PullRequest(filter, caller)
        }
        TAG_PULL_RESPONSE => {
            let from = r.pubkey("pull response from")?;
            Protocol::PullResponse(from, decode_values(&mut r)?)
        }
        TAG_PUSH_MESSAGE => {
            let from = r.pubkey("push message from")?;
            Protocol::PushMessage(from, decode_values(&mut r)?)
        }
        TAG_PRUNE_MESSAGE => {
            let from = r.pubkey("prune message from")?;
            Protocol::PruneMessage(from, PruneData::decode(&mut r)?)
        }
        TAG_PING_MESSAGE => Protocol::PingMessage(Ping::decode(&mut r)?),
        TAG_PONG_MESSAGE => Protocol::PongMessage(Pong::decode(&mut r)?),
        tag => {
            return Err(GossipError::UnknownTag {
                what: "gossip message",
                tag,
            })
        }
    };
    r.finish()?;
    Ok(message)
}

/// [`decode`], then [`Protocol::sanitize`], then [`Protocol::verify`].
pub fn decode_verified(bytes: &[u8]) -> Result<Protocol, GossipError> {
    let message = decode(bytes)?;
    message.sanitize()?;
    message.verify()?;
    Ok(message)
}

/// Cuts `values` into runs whose encodings add up to at most `max_chunk_bytes`, in
/// order. A value larger than `max_chunk_bytes` on its own is dropped.
pub fn split_values(max_chunk_bytes: usize, values: Vec<CrdsValue>) -> Vec<Vec<CrdsValue>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0usize;
    for value in values {
        let len = value.encoded_len();
        if chunk_bytes + len <= max_chunk_bytes {
            chunk_bytes += len;
            chunk.push(value);
        } else if len <= max_chunk_bytes {
            chunks.push(std::mem::take(&mut chunk));
            chunk_bytes = len;
            chunk.push(value);
        }
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// Push messages from `from` carrying `values`, each fitting one packet.
pub fn push_messages(from: Pubkey, values: Vec<CrdsValue>) -> Vec<Protocol> {
    split_values(PUSH_MESSAGE_MAX_PAYLOAD_SIZE, values)
        .into_iter()
        .map(|chunk| Protocol::PushMessage(from, chunk))
        .collect()
}

/// Pull responses from `from` carrying `values`, each fitting one packet.
pub fn pull_responses(from: Pubkey, values: Vec<CrdsValue>) -> Vec<Protocol> {
    split_values(PULL_RESPONSE_MAX_PAYLOAD_SIZE, values)
        .into_iter()
        .map(|chunk| Protocol::PullResponse(from, chunk))
        .collect()
}

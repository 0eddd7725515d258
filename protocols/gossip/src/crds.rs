//! CRDS values: data signed by its origin, identified by (kind, index, origin).
//!
//! The discovery kinds are decoded into types. Every other kind the cluster defines is
//! walked field by field (so its length is exact and bounded), and carried as opaque bytes
//! with its origin and wallclock: re-encoding is byte-identical, so its signature and hash
//! stay verifiable. An unknown kind tag is a typed error.

use crate::contact_info::{ContactInfo, LegacyContactInfo};
use crate::wire::{put_u16, put_u32, put_u64, Reader};
use crate::{sanitize_wallclock, GossipError, Hash, Pubkey, Signature, MAX_SLOT, PACKET_DATA_SIZE};
use ed25519_dalek::SigningKey;

pub const TAG_LEGACY_CONTACT_INFO: u32 = 0;
pub const TAG_VOTE: u32 = 1;
pub const TAG_LOWEST_SLOT: u32 = 2;
pub const TAG_LEGACY_SNAPSHOT_HASHES: u32 = 3;
pub const TAG_ACCOUNTS_HASHES: u32 = 4;
pub const TAG_EPOCH_SLOTS: u32 = 5;
pub const TAG_LEGACY_VERSION: u32 = 6;
pub const TAG_VERSION: u32 = 7;
pub const TAG_NODE_INSTANCE: u32 = 8;
pub const TAG_DUPLICATE_SHRED: u32 = 9;
pub const TAG_SNAPSHOT_HASHES: u32 = 10;
pub const TAG_CONTACT_INFO: u32 = 11;
pub const TAG_RESTART_LAST_VOTED_FORK_SLOTS: u32 = 12;
pub const TAG_RESTART_HEAVIEST_FORK: u32 = 13;

/// Vote indices at or above this are rejected.
pub const MAX_VOTES_INDEX: u8 = 32;
/// Epoch-slots indices at or above this are rejected.
pub const MAX_EPOCH_SLOTS_INDEX: u8 = 255;
/// Duplicate-shred indices at or above this are rejected.
pub const MAX_DUPLICATE_SHREDS: u16 = 512;
/// Incremental snapshot hashes a node publishes at most (so the value fits a packet).
pub const MAX_INCREMENTAL_SNAPSHOT_HASHES: usize = 25;

/// Element bound for any list inside a value: nothing larger fits a packet.
const MAX_LIST: usize = PACKET_DATA_SIZE;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHashes {
    pub from: Pubkey,
    pub full: (u64, Hash),
    pub incremental: Vec<(u64, Hash)>,
    pub wallclock: u64,
}

/// The deprecated version record (kind 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub from: Pubkey,
    pub wallclock: u64,
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
    pub commit: Option<u32>,
    pub feature_set: u32,
}

/// The deprecated node-instance record (kind 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInstance {
    pub from: Pubkey,
    pub wallclock: u64,
    pub timestamp: u64,
    pub token: u64,
}

/// A value of a kind this crate does not interpret, kept as its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueData {
    pub tag: u32,
    /// The per-origin index of indexed kinds (votes, epoch slots, ...), else 0.
    pub index: u16,
    pub from: Pubkey,
    pub wallclock: u64,
    /// The encoding after the kind tag.
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrdsData {
    LegacyContactInfo(Box<LegacyContactInfo>),
    Version(Version),
    NodeInstance(NodeInstance),
    SnapshotHashes(SnapshotHashes),
    ContactInfo(ContactInfo),
    Opaque(OpaqueData),
}

/// What identifies a value in a table: newer wallclocks replace older ones per label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CrdsLabel {
    pub tag: u32,
    pub index: u16,
    pub origin: Pubkey,
}

fn encode_slot_hashes(out: &mut Vec<u8>, list: &[(u64, Hash)]) {
    put_u64(out, list.len() as u64);
    for (slot, hash) in list {
        put_u64(out, *slot);
        out.extend_from_slice(&hash.0);
    }
}

fn decode_slot_hashes(r: &mut Reader, what: &'static str) -> Result<Vec<(u64, Hash)>, GossipError> {
    let count = r.len_u64(what, 40, MAX_LIST)?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push((r.u64(what)?, r.hash(what)?));
    }
    Ok(out)
}

impl CrdsData {
    pub fn tag(&self) -> u32 {
        match self {
            CrdsData::LegacyContactInfo(_) => TAG_LEGACY_CONTACT_INFO,
            CrdsData::Version(_) => TAG_VERSION,
            CrdsData::NodeInstance(_) => TAG_NODE_INSTANCE,
            CrdsData::SnapshotHashes(_) => TAG_SNAPSHOT_HASHES,
            CrdsData::ContactInfo(_) => TAG_CONTACT_INFO,
            CrdsData::Opaque(other) => other.tag,
        }
    }

    pub fn origin(&self) -> Pubkey {
        match self {
            CrdsData::LegacyContactInfo(info) => info.id,
            CrdsData::Version(version) => version.from,
            CrdsData::NodeInstance(instance) => instance.from,
            CrdsData::SnapshotHashes(hashes) => hashes.from,
            CrdsData::ContactInfo(info) => info.pubkey,
            CrdsData::Opaque(other) => other.from,
        }
    }

    pub fn wallclock(&self) -> u64 {
        match self {
            CrdsData::LegacyContactInfo(info) => info.wallclock,
            CrdsData::Version(version) => version.wallclock,
            CrdsData::NodeInstance(instance) => instance.wallclock,
            CrdsData::SnapshotHashes(hashes) => hashes.wallclock,
            CrdsData::ContactInfo(info) => info.wallclock,
            CrdsData::Opaque(other) => other.wallclock,
        }
    }

    pub fn label(&self) -> CrdsLabel {
        let index = match self {
            CrdsData::Opaque(other) => other.index,
            _ => 0,
        };
        CrdsLabel {
            tag: self.tag(),
            index,
            origin: self.origin(),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.tag());
        match self {
            CrdsData::LegacyContactInfo(info) => info.encode(out),
            CrdsData::Version(version) => {
                out.extend_from_slice(&version.from.0);
                put_u64(out, version.wallclock);
                put_u16(out, version.major);
                put_u16(out, version.minor);
                put_u16(out, version.patch);
                match version.commit {
                    None => out.push(0),
                    Some(commit) => {
                        out.push(1);
                        put_u32(out, commit);
                    }
                }
                put_u32(out, version.feature_set);
            }
            CrdsData::NodeInstance(instance) => {
                out.extend_from_slice(&instance.from.0);
                put_u64(out, instance.wallclock);
                put_u64(out, instance.timestamp);
                put_u64(out, instance.token);
            }
            CrdsData::SnapshotHashes(hashes) => {
                out.extend_from_slice(&hashes.from.0);
                put_u64(out, hashes.full.0);
                out.extend_from_slice(&hashes.full.1 .0);
                encode_slot_hashes(out, &hashes.incremental);
                put_u64(out, hashes.wallclock);
            }
            CrdsData::ContactInfo(info) => info.encode(out),
            CrdsData::Opaque(other) => out.extend_from_slice(&other.body),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode(&mut out);
        out
    }

    pub fn decode(r: &mut Reader) -> Result<Self, GossipError> {
        let tag = r.u32("crds data tag")?;
        let body_start = r.position();
        let data = match tag {
            TAG_LEGACY_CONTACT_INFO => {
                CrdsData::LegacyContactInfo(Box::new(LegacyContactInfo::decode(r)?))
            }
            TAG_VERSION => {
                let from = r.pubkey("version from")?;
                let wallclock = r.u64("version wallclock")?;
                let major = r.u16("version major")?;
                let minor = r.u16("version minor")?;
                let patch = r.u16("version patch")?;
                let commit = if r.option_tag("version commit")? {
                    Some(r.u32("version commit")?)
                } else {
                    None
                };
                let feature_set = r.u32("version feature set")?;
                CrdsData::Version(Version {
                    from,
                    wallclock,
                    major,
                    minor,
                    patch,
                    commit,
                    feature_set,
                })
            }
            TAG_NODE_INSTANCE => CrdsData::NodeInstance(NodeInstance {
                from: r.pubkey("node instance from")?,
                wallclock: r.u64("node instance wallclock")?,
                timestamp: r.u64("node instance timestamp")?,
                token: r.u64("node instance token")?,
            }),
            TAG_SNAPSHOT_HASHES => {
                let from = r.pubkey("snapshot hashes from")?;
                let full = (r.u64("snapshot full slot")?, r.hash("snapshot full hash")?);
                let incremental = decode_slot_hashes(r, "snapshot incremental hashes")?;
                let wallclock = r.u64("snapshot hashes wallclock")?;
                CrdsData::SnapshotHashes(SnapshotHashes {
                    from,
                    full,
                    incremental,
                    wallclock,
                })
            }
            TAG_CONTACT_INFO => CrdsData::ContactInfo(ContactInfo::decode(r)?),
            _ => {
                let (index, from, wallclock) = skip_opaque(r, tag)?;
                CrdsData::Opaque(OpaqueData {
                    tag,
                    index,
                    from,
                    wallclock,
                    body: r.since(body_start).to_vec(),
                })
            }
        };
        Ok(data)
    }

    /// The per-kind bounds the cluster enforces on received values.
    pub fn sanitize(&self) -> Result<(), GossipError> {
        sanitize_wallclock(self.wallclock())?;
        match self {
            CrdsData::SnapshotHashes(hashes) => {
                if hashes.full.0 >= MAX_SLOT {
                    return Err(GossipError::Invalid {
                        what: "snapshot hashes",
                        reason: "full slot out of bounds",
                    });
                }
                for (slot, _) in &hashes.incremental {
                    if *slot >= MAX_SLOT {
                        return Err(GossipError::Invalid {
                            what: "snapshot hashes",
                            reason: "incremental slot out of bounds",
                        });
                    }
                    if hashes.full.0 >= *slot {
                        return Err(GossipError::Invalid {
                            what: "snapshot hashes",
                            reason: "incremental slot not above the full slot",
                        });
                    }
                }
                Ok(())
            }
            CrdsData::Opaque(other) => {
                let bad_index = match other.tag {
                    TAG_VOTE => other.index >= u16::from(MAX_VOTES_INDEX),
                    TAG_LOWEST_SLOT => other.index != 0,
                    TAG_EPOCH_SLOTS => other.index >= u16::from(MAX_EPOCH_SLOTS_INDEX),
                    TAG_DUPLICATE_SHRED => other.index >= MAX_DUPLICATE_SHREDS,
                    _ => false,
                };
                if bad_index {
                    return Err(GossipError::Invalid {
                        what: "crds value",
                        reason: "index out of bounds",
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Walks the body of a kind this crate does not interpret; returns (index, origin,
/// wallclock).
fn skip_opaque(r: &mut Reader, tag: u32) -> Result<(u16, Pubkey, u64), GossipError> {
    match tag {
        TAG_VOTE => {
            let index = r.u8("vote index")?;
            let from = r.pubkey("vote from")?;
            skip_transaction(r)?;
            let wallclock = r.u64("vote wallclock")?;
            Ok((u16::from(index), from, wallclock))
        }
        TAG_LOWEST_SLOT => {
            let index = r.u8("lowest slot index")?;
            let from = r.pubkey("lowest slot from")?;
            r.u64("lowest slot root")?;
            r.u64("lowest slot lowest")?;
            let num_slots = r.len_u64("lowest slot slots", 8, MAX_LIST)?;
            r.take(num_slots * 8, "lowest slot slots")?;
            if r.u64("lowest slot stash")? != 0 {
                return Err(GossipError::Invalid {
                    what: "lowest slot",
                    reason: "deprecated stash is not empty",
                });
            }
            let wallclock = r.u64("lowest slot wallclock")?;
            Ok((u16::from(index), from, wallclock))
        }
        TAG_LEGACY_SNAPSHOT_HASHES | TAG_ACCOUNTS_HASHES => {
            let from = r.pubkey("hashes from")?;
            decode_slot_hashes(r, "hashes list")?;
            let wallclock = r.u64("hashes wallclock")?;
            Ok((0, from, wallclock))
        }
        TAG_EPOCH_SLOTS => {
            let index = r.u8("epoch slots index")?;
            let from = r.pubkey("epoch slots from")?;
            let count = r.len_u64("epoch slots list", 4 + 16 + 1, MAX_LIST)?;
            for _ in 0..count {
                match r.u32("compressed slots tag")? {
                    0 => {
                        r.u64("flate2 first slot")?;
                        r.u64("flate2 num")?;
                        r.skip_bytes_u64("flate2 compressed", MAX_LIST)?;
                    }
                    1 => {
                        r.u64("uncompressed first slot")?;
                        r.u64("uncompressed num")?;
                        skip_bitvec_u8(r)?;
                    }
                    tag => {
                        return Err(GossipError::UnknownTag {
                            what: "compressed slots",
                            tag,
                        })
                    }
                }
            }
            let wallclock = r.u64("epoch slots wallclock")?;
            Ok((u16::from(index), from, wallclock))
        }
        TAG_LEGACY_VERSION => {
            let from = r.pubkey("legacy version from")?;
            let wallclock = r.u64("legacy version wallclock")?;
            r.take(6, "legacy version numbers")?;
            if r.option_tag("legacy version commit")? {
                r.u32("legacy version commit")?;
            }
            Ok((0, from, wallclock))
        }
        TAG_DUPLICATE_SHRED => {
            let index = r.u16("duplicate shred index")?;
            let from = r.pubkey("duplicate shred from")?;
            let wallclock = r.u64("duplicate shred wallclock")?;
            r.u64("duplicate shred slot")?;
            r.u32("duplicate shred shred index")?;
            r.take(3, "duplicate shred type and chunk numbers")?;
            r.skip_bytes_u64("duplicate shred chunk", MAX_LIST)?;
            Ok((index, from, wallclock))
        }
        TAG_RESTART_LAST_VOTED_FORK_SLOTS => {
            let from = r.pubkey("restart slots from")?;
            let wallclock = r.u64("restart slots wallclock")?;
            match r.u32("restart slots offsets tag")? {
                0 => {
                    let count = r.len_u64("run-length offsets", 2, MAX_LIST)?;
                    r.take(count * 2, "run-length offsets")?;
                }
                1 => skip_bitvec_u8(r)?,
                tag => {
                    return Err(GossipError::UnknownTag {
                        what: "restart slots offsets",
                        tag,
                    })
                }
            }
            r.u64("restart last voted slot")?;
            r.hash("restart last voted hash")?;
            r.u16("restart shred version")?;
            Ok((0, from, wallclock))
        }
        TAG_RESTART_HEAVIEST_FORK => {
            let from = r.pubkey("heaviest fork from")?;
            let wallclock = r.u64("heaviest fork wallclock")?;
            r.u64("heaviest fork last slot")?;
            r.hash("heaviest fork last slot hash")?;
            r.u64("heaviest fork observed stake")?;
            r.u16("heaviest fork shred version")?;
            Ok((0, from, wallclock))
        }
        tag => Err(GossipError::UnknownTag {
            what: "crds data",
            tag,
        }),
    }
}

/// `BitVec<u8>` in bincode: optional block list (u64 length, bytes), then the bit length.
fn skip_bitvec_u8(r: &mut Reader) -> Result<(), GossipError> {
    if r.option_tag("bit vector blocks")? {
        r.skip_bytes_u64("bit vector blocks", MAX_LIST)?;
    }
    r.u64("bit vector length")?;
    Ok(())
}

/// A legacy transaction: signatures, message header, account keys, blockhash,
/// compiled instructions (all lengths in `short_vec` form).
fn skip_transaction(r: &mut Reader) -> Result<(), GossipError> {
    let num_signatures = r.len_short("transaction signatures", 64, MAX_LIST)?;
    r.take(num_signatures * 64, "transaction signatures")?;
    r.take(3, "message header")?;
    let num_keys = r.len_short("message account keys", 32, MAX_LIST)?;
    r.take(num_keys * 32, "message account keys")?;
    r.hash("message recent blockhash")?;
    let num_instructions = r.len_short("message instructions", 3, MAX_LIST)?;
    for _ in 0..num_instructions {
        r.u8("instruction program index")?;
        r.skip_bytes_short("instruction accounts")?;
        r.skip_bytes_short("instruction data")?;
    }
    Ok(())
}

/// A value signed by its origin over the encoding of its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdsValue {
    signature: Signature,
    data: CrdsData,
    /// signature followed by the data encoding.
    bytes: Vec<u8>,
    hash: Hash,
}

impl CrdsValue {
    pub fn new_signed(data: CrdsData, key: &SigningKey) -> Self {
        let data_bytes = data.to_bytes();
        let signature = Signature::sign(key, &data_bytes);
        Self::assemble(signature, data, &data_bytes)
    }

    /// A value with a given (possibly wrong) signature, as a peer could send it.
    pub fn new_unverified(signature: Signature, data: CrdsData) -> Self {
        let data_bytes = data.to_bytes();
        Self::assemble(signature, data, &data_bytes)
    }

    fn assemble(signature: Signature, data: CrdsData, data_bytes: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(64 + data_bytes.len());
        bytes.extend_from_slice(&signature.0);
        bytes.extend_from_slice(data_bytes);
        let hash = Hash::of(&[&bytes]);
        CrdsValue {
            signature,
            data,
            bytes,
            hash,
        }
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    pub fn data(&self) -> &CrdsData {
        &self.data
    }

    /// sha256 of the value's encoding; what pull-request bloom filters hold.
    pub fn hash(&self) -> &Hash {
        &self.hash
    }

    pub fn label(&self) -> CrdsLabel {
        self.data.label()
    }

    pub fn origin(&self) -> Pubkey {
        self.data.origin()
    }

    pub fn wallclock(&self) -> u64 {
        self.data.wallclock()
    }

    pub fn encoded(&self) -> &[u8] {
        &self.bytes
    }

    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// The origin's signature over the data encoding.
    pub fn verify(&self) -> Result<(), GossipError> {
        if self
            .signature
            .verify(&self.data.origin(), &self.bytes[64..])
        {
            Ok(())
        } else {
            Err(GossipError::BadSignature { what: "crds value" })
        }
    }

    pub fn decode(r: &mut Reader) -> Result<Self, GossipError> {
        let start = r.position();
        let signature = r.signature("crds value signature")?;
        let data = CrdsData::decode(r)?;
        let wire = r.since(start);
        let data_bytes = data.to_bytes();
        if data_bytes[..] != wire[64..] {
            return Err(GossipError::NonCanonical { what: "crds value" });
        }
        Ok(Self::assemble(signature, data, &data_bytes))
    }

    /// Decodes exactly one value from `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, GossipError> {
        let mut r = Reader::new(bytes);
        let value = Self::decode(&mut r)?;
        r.finish()?;
        Ok(value)
    }
}

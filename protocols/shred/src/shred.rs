//! A parsed merkle shred: the payload bytes plus its decoded headers.

use ed25519_dalek::{Signature, VerifyingKey};

use crate::layout::*;
use crate::merkle::{self, Hash};
use crate::ShredError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommonHeader {
    pub signature: [u8; 64],
    pub variant: Variant,
    pub slot: u64,
    pub index: u32,
    pub version: u16,
    pub fec_set_index: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    pub parent_offset: u16,
    pub flags: u8,
    /// Size of headers plus data (the data runs from byte 88 to `size`).
    pub size: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodingHeader {
    pub num_data_shreds: u16,
    pub num_coding_shreds: u16,
    pub position: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Data(DataHeader),
    Code(CodingHeader),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shred {
    payload: Vec<u8>,
    common: CommonHeader,
    kind: Kind,
}

impl Shred {
    /// Parse a current (chained merkle) shred. Longer inputs are truncated to the payload
    /// size of the variant (packets may be padded); shorter ones are rejected.
    pub fn from_bytes(bytes: &[u8]) -> Result<Shred, ShredError> {
        Self::from_bytes_with(bytes, Accept::CURRENT)
    }

    pub fn from_bytes_with(bytes: &[u8], accept: Accept) -> Result<Shred, ShredError> {
        let variant = peek_variant(bytes, accept)?;
        let size = variant.payload_size();
        if bytes.len() < size {
            return Err(ShredError::TooShort {
                len: bytes.len(),
                need: size,
            });
        }
        let payload = bytes[..size].to_vec();
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&payload[..64]);
        let common = CommonHeader {
            signature,
            variant,
            slot: u64_at(&payload, OFFSET_SLOT),
            index: u32_at(&payload, OFFSET_INDEX),
            version: u16_at(&payload, OFFSET_VERSION),
            fec_set_index: u32_at(&payload, OFFSET_FEC_SET_INDEX),
        };
        let kind = match variant.shred_type {
            ShredType::Data => Kind::Data(DataHeader {
                parent_offset: u16_at(&payload, 83),
                flags: payload[85],
                size: u16_at(&payload, 86),
            }),
            ShredType::Code => Kind::Code(CodingHeader {
                num_data_shreds: u16_at(&payload, 83),
                num_coding_shreds: u16_at(&payload, 85),
                position: u16_at(&payload, 87),
            }),
        };
        let shred = Shred {
            payload,
            common,
            kind,
        };
        shred.sanitize()?;
        Ok(shred)
    }

    fn sanitize(&self) -> Result<(), ShredError> {
        let c = &self.common;
        let bad = |reason: &'static str| {
            Err(ShredError::Header {
                slot: c.slot,
                index: c.index,
                reason,
            })
        };
        match self.kind {
            Kind::Data(d) => {
                if c.index >= MAX_DATA_SHREDS_PER_SLOT {
                    return bad("data shred index beyond the slot limit");
                }
                if c.fec_set_index > c.index {
                    return bad("fec_set_index above the shred index");
                }
                let cap = c.variant.capacity()?;
                let size = usize::from(d.size);
                if size < SIZE_OF_DATA_SHRED_HEADERS || size > SIZE_OF_DATA_SHRED_HEADERS + cap {
                    return bad("data size outside the data buffer");
                }
                if d.flags & FLAG_LAST_IN_SLOT == 0b1000_0000 {
                    return bad("last-in-slot flag without data-complete flag");
                }
                let po = u64::from(d.parent_offset);
                if c.slot == 0 && po != 0 || c.slot > 0 && (po == 0 || po > c.slot) {
                    return bad("parent offset out of range");
                }
            }
            Kind::Code(h) => {
                let (nd, nc) = (
                    usize::from(h.num_data_shreds),
                    usize::from(h.num_coding_shreds),
                );
                if nd == 0 || nc == 0 || nd + nc > MAX_SHARDS_PER_FEC_SET {
                    return bad("erasure batch size out of range");
                }
                if h.position >= h.num_coding_shreds {
                    return bad("coding position beyond the coding shred count");
                }
                if u32::from(h.position) > c.index {
                    return bad("coding position above the shred index");
                }
                if u64::from(c.fec_set_index) + nd as u64 > u64::from(MAX_DATA_SHREDS_PER_SLOT) {
                    return bad("FEC set beyond the slot limit");
                }
                if merkle::proof_size(nd + nc) != c.variant.proof_size {
                    return bad("proof size does not match the erasure batch size");
                }
            }
        }
        Ok(())
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }
    pub fn common(&self) -> &CommonHeader {
        &self.common
    }
    pub fn kind(&self) -> &Kind {
        &self.kind
    }
    pub fn slot(&self) -> u64 {
        self.common.slot
    }
    pub fn index(&self) -> u32 {
        self.common.index
    }
    pub fn fec_set_index(&self) -> u32 {
        self.common.fec_set_index
    }
    pub fn variant(&self) -> Variant {
        self.common.variant
    }
    pub fn signature(&self) -> &[u8; 64] {
        &self.common.signature
    }
    pub fn is_data(&self) -> bool {
        matches!(self.kind, Kind::Data(_))
    }
    pub fn data_header(&self) -> Option<&DataHeader> {
        match &self.kind {
            Kind::Data(d) => Some(d),
            Kind::Code(_) => None,
        }
    }
    pub fn coding_header(&self) -> Option<&CodingHeader> {
        match &self.kind {
            Kind::Code(c) => Some(c),
            Kind::Data(_) => None,
        }
    }
    /// Data shred that ends a slot.
    pub fn last_in_slot(&self) -> bool {
        self.data_header()
            .is_some_and(|d| d.flags & FLAG_LAST_IN_SLOT == FLAG_LAST_IN_SLOT)
    }
    /// Data shred that ends a batch of entries.
    pub fn data_complete(&self) -> bool {
        self.data_header()
            .is_some_and(|d| d.flags & FLAG_DATA_COMPLETE != 0)
    }
    pub fn parent_slot(&self) -> Option<u64> {
        self.data_header()
            .map(|d| self.common.slot - u64::from(d.parent_offset))
    }
    /// The entry bytes of a data shred.
    pub fn data(&self) -> Option<&[u8]> {
        self.data_header()
            .map(|d| &self.payload[SIZE_OF_DATA_SHRED_HEADERS..usize::from(d.size)])
    }

    /// Index of this shred among the leaves of its FEC set's Merkle tree.
    pub fn erasure_shard_index(&self) -> Result<usize, ShredError> {
        let c = &self.common;
        match self.kind {
            Kind::Data(_) => Ok((c.index - c.fec_set_index) as usize),
            Kind::Code(h) => Ok(usize::from(h.num_data_shreds) + usize::from(h.position)),
        }
    }

    pub fn erasure_shard(&self) -> Result<&[u8], ShredError> {
        Ok(&self.payload[self.common.variant.erasure_shard_range()?])
    }

    pub fn chained_merkle_root(&self) -> Option<Hash> {
        let v = self.common.variant;
        if !v.chained {
            return None;
        }
        let off = v.chained_root_offset().ok()?;
        self.payload
            .get(off..off + 32)
            .map(|b| b.try_into().expect("32 bytes"))
    }

    pub fn retransmitter_signature(&self) -> Option<[u8; 64]> {
        let v = self.common.variant;
        if !v.resigned {
            return None;
        }
        let off = v.retransmitter_signature_offset().ok()?;
        self.payload
            .get(off..off + 64)
            .map(|b| b.try_into().expect("64 bytes"))
    }

    pub fn merkle_proof(&self) -> Result<&[u8], ShredError> {
        let v = self.common.variant;
        let off = v.proof_offset()?;
        Ok(&self.payload[off..off + usize::from(v.proof_size) * SIZE_OF_MERKLE_PROOF_ENTRY])
    }

    pub fn merkle_leaf(&self) -> Result<Hash, ShredError> {
        let off = self.common.variant.proof_offset()?;
        Ok(merkle::leaf(&self.payload[SIZE_OF_SIGNATURE..off]))
    }

    /// The Merkle root this shred's proof leads to (what the leader signs).
    pub fn merkle_root(&self) -> Result<Hash, ShredError> {
        merkle::root_from_proof(
            self.erasure_shard_index()?,
            self.merkle_leaf()?,
            self.merkle_proof()?,
        )
    }

    /// Check the proof and the leader's ed25519 signature over the Merkle root.
    /// Returns the verified root.
    pub fn verify(&self, leader: &[u8; 32]) -> Result<Hash, ShredError> {
        let root = self.merkle_root()?;
        verify_signature(leader, &root, &self.common.signature).map_err(|_| {
            ShredError::Signature {
                slot: self.common.slot,
                index: self.common.index,
            }
        })?;
        Ok(root)
    }
}

/// Strict ed25519 verification of `signature` by `pubkey` over `message`.
pub fn verify_signature(
    pubkey: &[u8; 32],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), ed25519_dalek::SignatureError> {
    let key = VerifyingKey::from_bytes(pubkey)?;
    let sig = Signature::from_bytes(signature);
    key.verify_strict(message, &sig)
}

/// The shred and the trailing nonce of a repair response packet.
pub fn split_repair_response(packet: &[u8]) -> Result<(&[u8], u32), ShredError> {
    if packet.len() > PACKET_DATA_SIZE {
        return Err(ShredError::TooLong {
            len: packet.len(),
            max: PACKET_DATA_SIZE,
        });
    }
    let variant = peek_variant(packet, Accept::CURRENT)?;
    let need = variant.payload_size() + SIZE_OF_NONCE;
    if packet.len() < need {
        return Err(ShredError::TooShort {
            len: packet.len(),
            need,
        });
    }
    let nonce = u32_at(packet, packet.len() - SIZE_OF_NONCE);
    Ok((&packet[..variant.payload_size()], nonce))
}

//! Byte layout of merkle shreds: sizes, offsets and the variant byte.
//!
//! ```text
//! data:  signature(64) | common(19) | data header(5) | data ... | [chained root(32)] | proof(20*n) | [retransmitter sig(64)]
//! code:  signature(64) | common(19) | coding header(6) | erasure shard | [chained root(32)] | proof(20*n) | [retransmitter sig(64)]
//! ```
//! The erasure-coded shard of a data shred is `payload[64..88 + capacity]`; of a coding
//! shred `payload[89..89 + capacity]`; both have the same length. The Merkle leaf of any
//! shred hashes `payload[64..proof_offset]` (so it covers the chained root).

use crate::ShredError;

pub const SIZE_OF_SIGNATURE: usize = 64;
pub const SIZE_OF_PUBKEY: usize = 32;
pub const SIZE_OF_COMMON_SHRED_HEADER: usize = 83;
pub const SIZE_OF_DATA_SHRED_HEADERS: usize = 88;
pub const SIZE_OF_CODING_SHRED_HEADERS: usize = 89;
/// A UDP packet of the Solana network (IPv6 minimum MTU minus IP and UDP headers).
pub const PACKET_DATA_SIZE: usize = 1232;
/// Repair responses carry a trailing u32 LE nonce.
pub const SIZE_OF_NONCE: usize = 4;
pub const CODE_PAYLOAD_BYTES: usize = PACKET_DATA_SIZE - SIZE_OF_NONCE; // 1228
pub const DATA_PAYLOAD_BYTES: usize =
    CODE_PAYLOAD_BYTES - SIZE_OF_CODING_SHRED_HEADERS + SIZE_OF_SIGNATURE; // 1203
pub const SIZE_OF_MERKLE_ROOT: usize = 32;
pub const SIZE_OF_MERKLE_PROOF_ENTRY: usize = 20;
/// Highest data shred index a slot may hold (exclusive).
pub const MAX_DATA_SHREDS_PER_SLOT: u32 = 32_768;
/// Reed-Solomon over GF(2^8) allows at most 256 shards per erasure batch.
pub const MAX_SHARDS_PER_FEC_SET: usize = 256;
/// Data shreds per FEC set as the leader makes them.
pub const DATA_SHREDS_PER_FEC_SET: usize = 32;

pub const OFFSET_VARIANT: usize = 64;
pub const OFFSET_SLOT: usize = 65;
pub const OFFSET_INDEX: usize = 73;
pub const OFFSET_VERSION: usize = 77;
pub const OFFSET_FEC_SET_INDEX: usize = 79;

/// Data shred flags (data header byte 2).
pub const FLAG_DATA_COMPLETE: u8 = 0b0100_0000;
pub const FLAG_LAST_IN_SLOT: u8 = 0b1100_0000;
pub const FLAG_TICK_MASK: u8 = 0b0011_1111;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShredType {
    Data,
    Code,
}

/// The decoded variant byte of a merkle shred.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    pub shred_type: ShredType,
    /// Number of 20-byte Merkle proof entries (tree depth).
    pub proof_size: u8,
    /// Carries the Merkle root of the previous FEC set.
    pub chained: bool,
    /// Carries a retransmitter signature at the end.
    pub resigned: bool,
}

/// Which shred generations a parser accepts. The network only carries chained merkle
/// shreds now; unchained ones are accepted only when explicitly asked for (old test data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accept {
    pub unchained: bool,
}

impl Accept {
    pub const CURRENT: Accept = Accept { unchained: false };
    pub const INCLUDING_UNCHAINED: Accept = Accept { unchained: true };
}

impl Variant {
    pub fn decode(byte: u8, accept: Accept) -> Result<Variant, ShredError> {
        if byte == 0x5a || byte == 0xa5 {
            return Err(ShredError::Legacy { variant: byte });
        }
        let proof_size = byte & 0x0f;
        let (shred_type, chained, resigned) = match byte & 0xf0 {
            0x40 => (ShredType::Code, false, false),
            0x60 => (ShredType::Code, true, false),
            0x70 => (ShredType::Code, true, true),
            0x80 => (ShredType::Data, false, false),
            0x90 => (ShredType::Data, true, false),
            0xb0 => (ShredType::Data, true, true),
            _ => return Err(ShredError::UnknownVariant { variant: byte }),
        };
        if !chained && !accept.unchained {
            return Err(ShredError::Unchained { variant: byte });
        }
        let v = Variant {
            shred_type,
            proof_size,
            chained,
            resigned,
        };
        // capacity must be positive
        v.capacity()?;
        Ok(v)
    }

    pub fn encode(&self) -> u8 {
        let high = match (self.shred_type, self.chained, self.resigned) {
            (ShredType::Code, false, _) => 0x40,
            (ShredType::Code, true, false) => 0x60,
            (ShredType::Code, true, true) => 0x70,
            (ShredType::Data, false, _) => 0x80,
            (ShredType::Data, true, false) => 0x90,
            (ShredType::Data, true, true) => 0xb0,
        };
        high | (self.proof_size & 0x0f)
    }

    pub fn payload_size(&self) -> usize {
        match self.shred_type {
            ShredType::Data => DATA_PAYLOAD_BYTES,
            ShredType::Code => CODE_PAYLOAD_BYTES,
        }
    }

    pub fn headers_size(&self) -> usize {
        match self.shred_type {
            ShredType::Data => SIZE_OF_DATA_SHRED_HEADERS,
            ShredType::Code => SIZE_OF_CODING_SHRED_HEADERS,
        }
    }

    /// Size of the data buffer (data shred) or erasure shard (coding shred).
    pub fn capacity(&self) -> Result<usize, ShredError> {
        let overhead = self.headers_size()
            + if self.chained { SIZE_OF_MERKLE_ROOT } else { 0 }
            + usize::from(self.proof_size) * SIZE_OF_MERKLE_PROOF_ENTRY
            + if self.resigned { SIZE_OF_SIGNATURE } else { 0 };
        self.payload_size()
            .checked_sub(overhead)
            .ok_or(ShredError::ProofSize {
                proof_size: self.proof_size,
            })
    }

    /// Length of the erasure-coded shard (same for data and coding shreds of a variant).
    pub fn erasure_shard_len(&self) -> Result<usize, ShredError> {
        let code = Variant {
            shred_type: ShredType::Code,
            ..*self
        };
        code.capacity()
    }

    pub fn chained_root_offset(&self) -> Result<usize, ShredError> {
        Ok(self.headers_size() + self.capacity()?)
    }

    pub fn proof_offset(&self) -> Result<usize, ShredError> {
        Ok(self.chained_root_offset()? + if self.chained { SIZE_OF_MERKLE_ROOT } else { 0 })
    }

    pub fn retransmitter_signature_offset(&self) -> Result<usize, ShredError> {
        Ok(self.proof_offset()? + usize::from(self.proof_size) * SIZE_OF_MERKLE_PROOF_ENTRY)
    }

    /// Range of the payload that is erasure coded.
    pub fn erasure_shard_range(&self) -> Result<std::ops::Range<usize>, ShredError> {
        let start = match self.shred_type {
            ShredType::Data => SIZE_OF_SIGNATURE,
            ShredType::Code => SIZE_OF_CODING_SHRED_HEADERS,
        };
        Ok(start..self.headers_size() + self.capacity()?)
    }
}

/// Read the variant of a raw shred without parsing the rest.
pub fn peek_variant(bytes: &[u8], accept: Accept) -> Result<Variant, ShredError> {
    let b = *bytes.get(OFFSET_VARIANT).ok_or(ShredError::TooShort {
        len: bytes.len(),
        need: OFFSET_VARIANT + 1,
    })?;
    Variant::decode(b, accept)
}

pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

//! Sans-IO Solana shreds (merkle data and coding), Reed-Solomon recovery, repair protocol
//! messages and a sans-IO repair server.
//!
//! * [`Shred`]: parse a chained merkle shred (legacy and unchained ones are rejected unless
//!   [`Accept::INCLUDING_UNCHAINED`] is asked for), read its headers, verify its Merkle
//!   proof and the leader's signature over the root.
//! * [`fec::recover_data`]: rebuild missing data shreds of a FEC set byte for byte.
//! * [`SlotAssembler`]: collect a slot, tell when it is complete.
//! * [`repair`]: repair requests, ping/pong, responses; [`serve::ServeRepair`] answers them.
//! * [`ledger`]: a generator of signed shreds for tests and local servers.

pub mod fec;
pub mod files;
pub mod layout;
pub mod ledger;
pub mod merkle;
pub mod repair;
pub mod serve;
pub mod shred;
pub mod slot;

pub use bs58;
pub use ed25519_dalek;
pub use layout::{Accept, ShredType, Variant};
pub use shred::{split_repair_response, Shred};
pub use slot::{Insert, SlotAssembler};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShredError {
    #[error("shred of {len} bytes is too short: {need} bytes needed")]
    TooShort { len: usize, need: usize },
    #[error("packet of {len} bytes is longer than {max}")]
    TooLong { len: usize, max: usize },
    #[error("legacy shred (variant byte {variant:#04x}): only merkle shreds are accepted")]
    Legacy { variant: u8 },
    #[error("unchained merkle shred (variant byte {variant:#04x}): only chained merkle shreds are accepted")]
    Unchained { variant: u8 },
    #[error("unknown shred variant byte {variant:#04x}")]
    UnknownVariant { variant: u8 },
    #[error("merkle proof of {proof_size} entries does not fit the payload")]
    ProofSize { proof_size: u8 },
    #[error("shred slot {slot} index {index}: {reason}")]
    Header {
        slot: u64,
        index: u32,
        reason: &'static str,
    },
    #[error("merkle proof: {reason}")]
    MerkleProof { reason: &'static str },
    #[error("shred slot {slot} index {index}: leader signature does not verify")]
    Signature { slot: u64, index: u32 },
    #[error("FEC recovery: {reason}")]
    Fec { reason: &'static str },
}

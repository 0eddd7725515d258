//! Sans-IO Solana gossip, byte-identical to the cluster's bincode wire format.
//!
//! * [`protocol::Protocol`]: the six gossip messages, [`protocol::decode`] / [`protocol::Protocol::encode`].
//! * [`crds::CrdsValue`]: signed gossip values; [`crds::CrdsData`] decodes the discovery kinds
//!   (contact info, snapshot hashes, version, node instance) and carries every other kind as
//!   opaque, length-checked bytes so signatures and hashes stay exact.
//! * [`contact_info::ContactInfo`]: the current contact-info form (port offsets, varints).
//! * [`bloom`]: the pull-request bloom filter and the filter set built over a table.
//! * [`ping_pong`]: ping tokens and pong answers.
//! * [`client::GossipClient`]: a gossip client state machine over a bounded CRDS table.
//! * [`leader_schedule`]: the stake-weighted leader schedule of an epoch.
//!
//! Nothing here touches sockets, files or clocks: time comes in as `now_ms` arguments.

pub mod bloom;
pub mod client;
pub mod contact_info;
pub mod crds;
pub mod leader_schedule;
pub mod ping_pong;
pub mod protocol;
pub mod wire;

pub use ed25519_dalek;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::fmt;

/// Largest UDP payload a gossip packet may carry.
pub const PACKET_DATA_SIZE: usize = 1232;
/// Wallclocks (ms) at or above this are out of bounds.
pub const MAX_WALLCLOCK: u64 = 1_000_000_000_000_000;
/// Slots at or above this are out of bounds.
pub const MAX_SLOT: u64 = 1_000_000_000_000_000;

/// An ed25519 public key, 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Pubkey(pub [u8; 32]);

impl Pubkey {
    pub fn from_base58(text: &str) -> Option<Pubkey> {
        let bytes = bs58::decode(text).into_vec().ok()?;
        Some(Pubkey(bytes.try_into().ok()?))
    }

    pub fn of(key: &SigningKey) -> Pubkey {
        Pubkey(key.verifying_key().to_bytes())
    }
}

impl fmt::Display for Pubkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for Pubkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A sha256 digest, 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub fn of(parts: &[&[u8]]) -> Hash {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        Hash(hasher.finalize().into())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An ed25519 signature, 64 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Default for Signature {
    fn default() -> Self {
        Signature([0u8; 64])
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl Signature {
    pub fn sign(key: &SigningKey, message: &[u8]) -> Signature {
        Signature(key.sign(message).to_bytes())
    }

    /// Strict ed25519 verification (small-order keys and non-canonical points rejected),
    /// as the cluster verifies.
    pub fn verify(&self, pubkey: &Pubkey, message: &[u8]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&pubkey.0) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(&self.0);
        key.verify_strict(message, &signature).is_ok()
    }
}

/// Why a gossip packet or value was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum GossipError {
    #[error("gossip packet of {size_bytes} bytes exceeds {PACKET_DATA_SIZE}")]
    Oversize { size_bytes: usize },
    #[error("{what} truncated at byte {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("{count} trailing bytes after the message")]
    TrailingBytes { count: usize },
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u32 },
    #[error("{what}: {count} items exceed the bound of {max}")]
    TooMany {
        what: &'static str,
        count: u64,
        max: u64,
    },
    #[error("{what}: non-canonical encoding")]
    NonCanonical { what: &'static str },
    #[error("{what}: invalid value ({reason})")]
    Invalid {
        what: &'static str,
        reason: &'static str,
    },
    #[error("bad signature on {what}")]
    BadSignature { what: &'static str },
    #[error("wallclock {wallclock_ms} ms is out of bounds")]
    WallclockOutOfBounds { wallclock_ms: u64 },
    #[error("wallclock {wallclock_ms} ms is {ahead_ms} ms ahead of now (limit {limit_ms} ms)")]
    WallclockInFuture {
        wallclock_ms: u64,
        ahead_ms: u64,
        limit_ms: u64,
    },
    #[error("shred version {got} differs from ours ({want})")]
    WrongShredVersion { got: u16, want: u16 },
    #[error("contact info: {0}")]
    ContactInfo(#[from] contact_info::ContactInfoError),
}

/// Rejects wallclocks at or above [`MAX_WALLCLOCK`] (the sanitize rule every value obeys).
pub fn sanitize_wallclock(wallclock_ms: u64) -> Result<(), GossipError> {
    if wallclock_ms >= MAX_WALLCLOCK {
        return Err(GossipError::WallclockOutOfBounds { wallclock_ms });
    }
    Ok(())
}

/// Rejects a wallclock more than `limit_ms` ahead of `now_ms` (a value from the future
/// would win every newest-wallclock contest).
pub fn check_wallclock_not_future(
    wallclock_ms: u64,
    now_ms: u64,
    limit_ms: u64,
) -> Result<(), GossipError> {
    sanitize_wallclock(wallclock_ms)?;
    let ahead_ms = wallclock_ms.saturating_sub(now_ms);
    if ahead_ms > limit_ms {
        return Err(GossipError::WallclockInFuture {
            wallclock_ms,
            ahead_ms,
            limit_ms,
        });
    }
    Ok(())
}

/// Rejects a node whose shred version differs from ours. A shred version of 0 on our
/// side means "not known yet" and accepts any.
pub fn check_shred_version(got: u16, want: u16) -> Result<(), GossipError> {
    if want != 0 && got != want {
        return Err(GossipError::WrongShredVersion { got, want });
    }
    Ok(())
}

//! Typed errors of the discovery codecs and the reasons packets are dropped.

use catchup_eth::rlp::RlpError;
use thiserror::Error;

/// Why an input (packet, record, DNS entry) was refused. Every variant names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DiscError {
    #[error("{what}: {len_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge {
        what: &'static str,
        len_bytes: usize,
        limit_bytes: usize,
    },
    #[error("{what}: {len_bytes} bytes is shorter than the {min_bytes}-byte minimum")]
    TooShort {
        what: &'static str,
        len_bytes: usize,
        min_bytes: usize,
    },
    #[error("rlp: decoding {what}: {source}")]
    Rlp {
        what: &'static str,
        source: RlpError,
    },
    #[error("{what}: {detail}")]
    Malformed {
        what: &'static str,
        detail: &'static str,
    },
    #[error("{what}: {count} items, more than the limit of {limit}")]
    TooManyItems {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("{what}: hash does not match the content")]
    BadHash { what: &'static str },
    #[error("{what}: bad signature")]
    BadSignature { what: &'static str },
    #[error("{what}: expired at {expiration_secs}, now {now_secs}")]
    Expired {
        what: &'static str,
        expiration_secs: u64,
        now_secs: u64,
    },
    #[error("{what}: unknown type {kind:#x}")]
    UnknownType { what: &'static str, kind: u8 },
    #[error("{what}: message authentication failed")]
    Decrypt { what: &'static str },
    #[error("enr: identity scheme {0:?} is not supported")]
    UnsupportedScheme(String),
}

impl DiscError {
    pub(crate) fn rlp(what: &'static str, source: RlpError) -> Self {
        DiscError::Rlp { what, source }
    }

    pub(crate) fn malformed(what: &'static str, detail: &'static str) -> Self {
        DiscError::Malformed { what, detail }
    }

    /// The counter this error is accounted under when a packet is dropped.
    pub fn reason(&self) -> DropReason {
        match self {
            DiscError::TooLarge { .. } | DiscError::TooManyItems { .. } => DropReason::Oversized,
            DiscError::TooShort { .. }
            | DiscError::Rlp { .. }
            | DiscError::Malformed { .. }
            | DiscError::UnsupportedScheme(_) => DropReason::Malformed,
            DiscError::BadHash { .. } | DiscError::BadSignature { .. } => DropReason::BadSignature,
            DiscError::Decrypt { .. } => DropReason::Decrypt,
            DiscError::Expired { .. } => DropReason::Expired,
            DiscError::UnknownType { .. } => DropReason::UnknownType,
        }
    }
}

pub type Result<T, E = DiscError> = std::result::Result<T, E>;

/// Why a service dropped an incoming packet; counted per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Over a size or count limit.
    Oversized,
    /// Not decodable: bad RLP, wrong lengths, bad header.
    Malformed,
    /// Hash or signature check failed.
    BadSignature,
    /// The expiration time stamp lies in the past.
    Expired,
    /// A packet or message type this implementation does not know.
    UnknownType,
    /// AES-GCM authentication failed (discv5).
    Decrypt,
    /// A response nobody asked for (unknown ping hash, request id or nonce).
    Unsolicited,
    /// A query from an endpoint that has not proven it owns its address.
    Unverified,
    /// A node record that does not belong to the sender or to the requested distance.
    BadRecord,
    /// The outgoing queue was full.
    QueueFull,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::Oversized,
        DropReason::Malformed,
        DropReason::BadSignature,
        DropReason::Expired,
        DropReason::UnknownType,
        DropReason::Decrypt,
        DropReason::Unsolicited,
        DropReason::Unverified,
        DropReason::BadRecord,
        DropReason::QueueFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Oversized => "oversized",
            DropReason::Malformed => "malformed",
            DropReason::BadSignature => "bad_signature",
            DropReason::Expired => "expired",
            DropReason::UnknownType => "unknown_type",
            DropReason::Decrypt => "decrypt",
            DropReason::Unsolicited => "unsolicited",
            DropReason::Unverified => "unverified",
            DropReason::BadRecord => "bad_record",
            DropReason::QueueFull => "queue_full",
        }
    }
}

/// Dropped-packet counters, one per [`DropReason`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; 10],
}

impl DropCounters {
    pub fn add(&mut self, reason: DropReason) {
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.counts[i])
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

//! Typed errors of the devp2p codecs. Every error names what was wrong and where.

use thiserror::Error;

/// An error while running the RLPx handshake or decoding a frame or message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Devp2pError {
    #[error("ecies: message of {len_bytes} bytes is shorter than the {min_bytes}-byte minimum")]
    EciesTooShort { len_bytes: usize, min_bytes: usize },
    #[error("ecies: ephemeral public key is invalid")]
    EciesBadPublicKey,
    #[error("ecies: HMAC check failed")]
    EciesBadMac,
    #[error("handshake: {what} of {len_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    HandshakeTooLarge {
        what: &'static str,
        len_bytes: usize,
        limit_bytes: usize,
    },
    #[error("handshake: malformed {what}: {detail}")]
    HandshakeMalformed { what: &'static str, detail: String },
    #[error("handshake: bad signature in auth message")]
    HandshakeBadSignature,
    #[error("handshake: called in the wrong state ({state})")]
    HandshakeWrongState { state: &'static str },
    #[error("frame: header MAC mismatch")]
    FrameBadHeaderMac,
    #[error("frame: body MAC mismatch")]
    FrameBadBodyMac,
    #[error("frame: size {size_bytes} exceeds the limit of {limit_bytes} bytes")]
    FrameTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error("frame: empty frame body")]
    FrameEmpty,
    #[error("message: {what} of {len_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    MessageTooLarge {
        what: &'static str,
        len_bytes: usize,
        limit_bytes: usize,
    },
    #[error("snappy: {0}")]
    Snappy(String),
    #[error("rlp: decoding {what}: {detail}")]
    Rlp { what: &'static str, detail: String },
    #[error("message: unknown message id {id:#x}")]
    UnknownMessageId { id: u64 },
    #[error("message: {what} has {count} items, more than the limit of {limit}")]
    TooManyItems {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("enode: {0}")]
    Enode(String),
    #[error("fork id: {0}")]
    ForkId(String),
}

impl Devp2pError {
    /// An RLP decoding error about `what`.
    pub fn rlp(what: &'static str, e: impl std::fmt::Display) -> Self {
        Devp2pError::Rlp {
            what,
            detail: e.to_string(),
        }
    }
}

pub type Result<T, E = Devp2pError> = std::result::Result<T, E>;

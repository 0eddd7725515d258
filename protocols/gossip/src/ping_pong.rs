//! Ping and pong: a node proves it owns its key and address by signing the hash of a
//! token it was sent.

use crate::wire::Reader;
use crate::{GossipError, Hash, Pubkey, Signature};
use ed25519_dalek::SigningKey;

pub const PING_TOKEN_SIZE: usize = 32;
pub const PING_PONG_HASH_PREFIX: &[u8] = b"SOLANA_PING_PONG";
/// Encoded size of a ping or a pong (without the message tag).
pub const PING_PONG_LEN: usize = 32 + 32 + 64;

/// sha256("SOLANA_PING_PONG" || token): what a pong signs.
pub fn pong_hash(token: &[u8; PING_TOKEN_SIZE]) -> Hash {
    Hash::of(&[PING_PONG_HASH_PREFIX, token])
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    pub from: Pubkey,
    pub token: [u8; PING_TOKEN_SIZE],
    pub signature: Signature,
}

impl Ping {
    pub fn new(key: &SigningKey, token: [u8; PING_TOKEN_SIZE]) -> Ping {
        Ping {
            from: Pubkey::of(key),
            token,
            signature: Signature::sign(key, &token),
        }
    }

    /// The signature is `from`'s over the token.
    pub fn verify(&self) -> Result<(), GossipError> {
        if self.signature.verify(&self.from, &self.token) {
            Ok(())
        } else {
            Err(GossipError::BadSignature { what: "ping" })
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.from.0);
        out.extend_from_slice(&self.token);
        out.extend_from_slice(&self.signature.0);
    }

    pub fn decode(r: &mut Reader) -> Result<Ping, GossipError> {
        Ok(Ping {
            from: r.pubkey("ping from")?,
            token: r.array("ping token")?,
            signature: r.signature("ping signature")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    pub from: Pubkey,
    pub hash: Hash,
    pub signature: Signature,
}

impl Pong {
    /// The answer to `ping`, signed by `key`.
    pub fn new(key: &SigningKey, ping: &Ping) -> Pong {
        let hash = pong_hash(&ping.token);
        Pong {
            from: Pubkey::of(key),
            hash,
            signature: Signature::sign(key, &hash.0),
        }
    }

    /// The signature is `from`'s over the hash.
    pub fn verify(&self) -> Result<(), GossipError> {
        if self.signature.verify(&self.from, &self.hash.0) {
            Ok(())
        } else {
            Err(GossipError::BadSignature { what: "pong" })
        }
    }

    /// Signed by `from` and answering `token`.
    pub fn verify_answers(&self, token: &[u8; PING_TOKEN_SIZE]) -> Result<(), GossipError> {
        self.verify()?;
        if self.hash != pong_hash(token) {
            return Err(GossipError::Invalid {
                what: "pong",
                reason: "hash does not answer our token",
            });
        }
        Ok(())
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.from.0);
        out.extend_from_slice(&self.hash.0);
        out.extend_from_slice(&self.signature.0);
    }

    pub fn decode(r: &mut Reader) -> Result<Pong, GossipError> {
        Ok(Pong {
            from: r.pubkey("pong from")?,
            hash: r.hash("pong hash")?,
            signature: r.signature("pong signature")?,
        })
    }
}

//! The primitives the discovery protocols share: node ids, keccak, secp256k1 signing and
//! recovery, base32/base64 text forms.

use alloy_primitives::keccak256;
use base64::Engine as _;
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature};
use secp256k1::{Message, PublicKey, SecretKey, SECP256K1};

/// A 256-bit node id: keccak256 of the uncompressed public key without its 0x04 prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    pub fn from_public_key(pk: &PublicKey) -> Self {
        NodeId(keccak256(&pk.serialize_uncompressed()[1..]).0)
    }

    /// Node id of a 64-byte `x || y` public key (discv4 wire form).
    pub fn from_pub64(pub64: &[u8; 64]) -> Self {
        NodeId(keccak256(pub64).0)
    }

    /// `self XOR other`, the Kademlia distance as a big-endian number.
    pub fn distance(&self, other: &NodeId) -> [u8; 32] {
        let mut d = [0u8; 32];
        for (i, out) in d.iter_mut().enumerate() {
            *out = self.0[i] ^ other.0[i];
        }
        d
    }

    /// Logarithmic distance: 0 for equal ids, else 256 minus the leading zero bits of the XOR.
    pub fn log_distance(&self, other: &NodeId) -> u32 {
        let mut lz = 0u32;
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            let x = a ^ b;
            if x == 0 {
                lz += 8;
            } else {
                lz += x.leading_zeros();
                return 256 - lz;
            }
        }
        0
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeId({})", hex::encode(&self.0[..8]))
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The 64-byte `x || y` form of a public key.
pub fn pub64(pk: &PublicKey) -> [u8; 64] {
    let mut out = [0u8; 64];
    out.copy_from_slice(&pk.serialize_uncompressed()[1..]);
    out
}

/// A public key from its 64-byte `x || y` form; `None` if not on the curve.
pub fn pub_from64(b: &[u8; 64]) -> Option<PublicKey> {
    let mut full = [0u8; 65];
    full[0] = 4;
    full[1..].copy_from_slice(b);
    PublicKey::from_slice(&full).ok()
}

/// 65-byte `r || s || v` recoverable signature of a 32-byte digest.
pub fn sign_recoverable(key: &SecretKey, digest: &[u8; 32]) -> [u8; 65] {
    let msg = Message::from_digest(*digest);
    let (recid, sig) = SECP256K1
        .sign_ecdsa_recoverable(&msg, key)
        .serialize_compact();
    let mut out = [0u8; 65];
    out[..64].copy_from_slice(&sig);
    out[64] = i32::from(recid) as u8;
    out
}

/// The key that made a 65-byte `r || s || v` signature over `digest`.
pub fn recover(sig: &[u8], digest: &[u8; 32]) -> Option<PublicKey> {
    if sig.len() != 65 {
        return None;
    }
    let recid = RecoveryId::try_from(i32::from(sig[64])).ok()?;
    let rs = RecoverableSignature::from_compact(&sig[..64], recid).ok()?;
    SECP256K1
        .recover_ecdsa(&Message::from_digest(*digest), &rs)
        .ok()
}

/// 64-byte `r || s` signature of a 32-byte digest.
pub fn sign64(key: &SecretKey, digest: &[u8; 32]) -> [u8; 64] {
    SECP256K1
        .sign_ecdsa(&Message::from_digest(*digest), key)
        .serialize_compact()
}

/// Check a 64-byte `r || s` signature over `digest` made by `pk`.
pub fn verify64(pk: &PublicKey, sig: &[u8], digest: &[u8; 32]) -> bool {
    let Ok(sig) = Signature::from_compact(sig) else {
        return false;
    };
    SECP256K1
        .verify_ecdsa(&Message::from_digest(*digest), &sig, pk)
        .is_ok()
}

/// URL-safe base64 without padding.
pub fn b64_encode(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// URL-safe base64 without padding; at most `max_bytes` decoded bytes.
pub fn b64_decode(text: &str, max_bytes: usize) -> Option<Vec<u8>> {
    if text.len() > max_bytes.saturating_mul(4) / 3 + 4 {
        return None;
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

const B32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding.
pub fn b32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 8 / 5 + 1);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for b in data {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(B32_ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(B32_ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// RFC 4648 base32 without padding (upper case); `None` on any other character, a
/// length no encoding has, or non-zero bits after the last byte.
pub fn b32_decode(text: &str) -> Option<Vec<u8>> {
    if matches!(text.len() % 8, 1 | 3 | 6) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = ((acc << 5) | u32::from(v)) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 && acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(b32_encode(plain.as_bytes()), enc);
            assert_eq!(b32_decode(enc).unwrap(), plain.as_bytes());
        }
        assert!(b32_decode("MZ").is_none(), "non-zero trailing bits");
        assert!(b32_decode("mzxq").is_none());
        assert!(b32_decode("M").is_none());
    }

    #[test]
    fn log_distance() {
        let a = NodeId([0u8; 32]);
        let mut b = a;
        assert_eq!(a.log_distance(&b), 0);
        b.0[31] = 1;
        assert_eq!(a.log_distance(&b), 1);
        b.0[0] = 0x80;
        assert_eq!(a.log_distance(&b), 256);
        let mut c = a;
        c.0[30] = 0x03;
        assert_eq!(a.log_distance(&c), 10);
    }

    #[test]
    fn sign_and_recover() {
        let key = SecretKey::from_slice(&[7u8; 32]).unwrap();
        let pk = key.public_key(SECP256K1);
        let d = [9u8; 32];
        let sig = sign_recoverable(&key, &d);
        assert_eq!(recover(&sig, &d), Some(pk));
        assert!(recover(&sig[..64], &d).is_none());
        let s64 = sign64(&key, &d);
        assert!(verify64(&pk, &s64, &d));
        assert!(!verify64(&pk, &s64, &[8u8; 32]));
        assert_eq!(pub_from64(&pub64(&pk)), Some(pk));
    }
}

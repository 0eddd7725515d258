//! discv5.1 "v4" identity-scheme cryptography: ECDH, HKDF session keys, the ID nonce
//! signature and AES-128-GCM message encryption.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Nonce};
use hkdf::Hkdf;
use secp256k1::{PublicKey, Scalar, SecretKey, SECP256K1};
use sha2::{Digest, Sha256};

use crate::crypto::{self as base, NodeId};
use crate::error::{DiscError, Result};

pub const KEY_BYTES: usize = 16;
pub const NONCE_BYTES: usize = 12;
pub const TAG_BYTES: usize = 16;

const KDF_INFO: &[u8] = b"discovery v5 key agreement";
const ID_SIGNATURE_TEXT: &[u8] = b"discovery v5 identity proof";

/// `pubkey * privkey` as a 33-byte compressed point.
pub fn ecdh(public: &PublicKey, secret: &SecretKey) -> Option<[u8; 33]> {
    let point = public.mul_tweak(SECP256K1, &Scalar::from(*secret)).ok()?;
    Some(point.serialize())
}

/// Session keys from the ECDH secret: `(initiator-key, recipient-key)`.
pub fn derive_keys(
    secret: &[u8; 33],
    challenge_data: &[u8],
    initiator_id: &NodeId,
    recipient_id: &NodeId,
) -> ([u8; KEY_BYTES], [u8; KEY_BYTES]) {
    let hk = Hkdf::<Sha256>::new(Some(challenge_data), secret);
    let mut info = Vec::with_capacity(KDF_INFO.len() + 64);
    info.extend_from_slice(KDF_INFO);
    info.extend_from_slice(&initiator_id.0);
    info.extend_from_slice(&recipient_id.0);
    let mut okm = [0u8; 2 * KEY_BYTES];
    // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
    if hk.expand(&info, &mut okm).is_err() {
        okm = [0u8; 2 * KEY_BYTES];
    }
    let mut a = [0u8; KEY_BYTES];
    let mut b = [0u8; KEY_BYTES];
    a.copy_from_slice(&okm[..KEY_BYTES]);
    b.copy_from_slice(&okm[KEY_BYTES..]);
    (a, b)
}

fn id_signature_digest(challenge_data: &[u8], eph_pubkey: &[u8], dest_id: &NodeId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ID_SIGNATURE_TEXT);
    h.update(challenge_data);
    h.update(eph_pubkey);
    h.update(dest_id.0);
    h.finalize().into()
}

/// The handshake's ID nonce signature.
pub fn id_sign(
    key: &SecretKey,
    challenge_data: &[u8],
    eph_pubkey: &[u8],
    dest_id: &NodeId,
) -> [u8; 64] {
    base::sign64(
        key,
        &id_signature_digest(challenge_data, eph_pubkey, dest_id),
    )
}

pub fn id_verify(
    public: &PublicKey,
    signature: &[u8],
    challenge_data: &[u8],
    eph_pubkey: &[u8],
    dest_id: &NodeId,
) -> bool {
    base::verify64(
        public,
        signature,
        &id_signature_digest(challenge_data, eph_pubkey, dest_id),
    )
}

/// AES-128-GCM; the 16-byte tag is appended.
pub fn encrypt(key: &[u8; KEY_BYTES], nonce: &[u8; NONCE_BYTES], pt: &[u8], ad: &[u8]) -> Vec<u8> {
    let cipher = Aes128Gcm::new(key.into());
    // Encryption only fails for inputs beyond GCM's 64 GiB limit; packets are 1280 bytes.
    cipher
        .encrypt(Nonce::from_slice(nonce), Payload { msg: pt, aad: ad })
        .unwrap_or_default()
}

pub fn decrypt(
    key: &[u8; KEY_BYTES],
    nonce: &[u8; NONCE_BYTES],
    ct: &[u8],
    ad: &[u8],
) -> Result<Vec<u8>> {
    if ct.len() < TAG_BYTES {
        return Err(DiscError::TooShort {
            what: "discv5 message",
            len_bytes: ct.len(),
            min_bytes: TAG_BYTES,
        });
    }
    let cipher = Aes128Gcm::new(key.into());
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: ad })
        .map_err(|_| DiscError::Decrypt {
            what: "discv5 message",
        })
}

/// Keys of one session, named by handshake role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKeys {
    pub initiator_key: [u8; KEY_BYTES],
    pub recipient_key: [u8; KEY_BYTES],
}

/// The initiator's side of the handshake (step 3): the ID signature, the ephemeral public
/// key and the session keys. `None` if `remote_pk` times `eph_key` is not a valid point.
pub fn initiate_handshake(
    local_key: &SecretKey,
    local_id: &NodeId,
    remote_id: &NodeId,
    remote_pk: &PublicKey,
    challenge_data: &[u8],
    eph_key: &SecretKey,
) -> Option<([u8; 64], [u8; 33], SessionKeys)> {
    let eph_pub = eph_key.public_key(SECP256K1).serialize();
    let secret = ecdh(remote_pk, eph_key)?;
    let (initiator_key, recipient_key) = derive_keys(&secret, challenge_data, local_id, remote_id);
    let sig = id_sign(local_key, challenge_data, &eph_pub, remote_id);
    Some((
        sig,
        eph_pub,
        SessionKeys {
            initiator_key,
            recipient_key,
        },
    ))
}

/// The recipient's side of the handshake (step 4): check the initiator's ID signature with
/// its public key and derive the session keys.
pub fn accept_handshake(
    local_key: &SecretKey,
    local_id: &NodeId,
    remote_id: &NodeId,
    remote_pk: &PublicKey,
    challenge_data: &[u8],
    id_signature: &[u8],
    eph_pubkey: &[u8],
) -> Result<SessionKeys> {
    if !id_verify(
        remote_pk,
        id_signature,
        challenge_data,
        eph_pubkey,
        local_id,
    ) {
        return Err(DiscError::BadSignature {
            what: "discv5 id signature",
        });
    }
    let eph = PublicKey::from_slice(eph_pubkey).map_err(|_| {
        DiscError::malformed("discv5 handshake", "ephemeral key is not a curve point")
    })?;
    let secret = ecdh(&eph, local_key).ok_or(DiscError::malformed(
        "discv5 handshake",
        "ephemeral key is not usable",
    ))?;
    let (initiator_key, recipient_key) = derive_keys(&secret, challenge_data, remote_id, local_id);
    Ok(SessionKeys {
        initiator_key,
        recipient_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }
    fn sk(s: &str) -> SecretKey {
        SecretKey::from_slice(&h(s)).unwrap()
    }
    fn id(s: &str) -> NodeId {
        NodeId(h(s).try_into().unwrap())
    }

    const CHALLENGE: &str = "000000000000000000000000000000006469736376350001010102030405060708090a0b0c00180102030405060708090a0b0c0d0e0f100000000000000000";
    const ID_A: &str = "aaaa8419e9f49d0083561b48287df592939a8d19947d8c0ef88f2a4856a69fbb";
    const ID_B: &str = "bbbb9d047f0488c0b5a93c1c3f2d8bafc7c8ff337024a55434a0d0555de64db9";

    // discv5-wire-test-vectors.md, "Cryptographic Primitives".
    #[test]
    fn ecdh_vector() {
        let pk = PublicKey::from_slice(&h(
            "039961e4c2356d61bedb83052c115d311acb3a96f5777296dcf297351130266231",
        ))
        .unwrap();
        let secret = ecdh(
            &pk,
            &sk("fb757dc581730490a1d7a00deea65e9b1936924caaea8f44d476014856b68736"),
        )
        .unwrap();
        assert_eq!(
            hex::encode(secret),
            "033b11a2a1f214567e1537ce5e509ffd9b21373247f2a3ff6841f4976f53165e7e"
        );
    }

    #[test]
    fn key_derivation_vector() {
        let dest = PublicKey::from_slice(&h(
            "0317931e6e0840220642f230037d285d122bc59063221ef3226b1f403ddc69ca91",
        ))
        .unwrap();
        let secret = ecdh(
            &dest,
            &sk("fb757dc581730490a1d7a00deea65e9b1936924caaea8f44d476014856b68736"),
        )
        .unwrap();
        let (ik, rk) = derive_keys(&secret, &h(CHALLENGE), &id(ID_A), &id(ID_B));
        assert_eq!(hex::encode(ik), "dccc82d81bd610f4f76d3ebe97a40571");
        assert_eq!(hex::encode(rk), "ac74bb8773749920b0d3a8881c173ec5");
    }

    #[test]
    fn id_nonce_signature_vector() {
        let key = sk("fb757dc581730490a1d7a00deea65e9b1936924caaea8f44d476014856b68736");
        let eph = h("039961e4c2356d61bedb83052c115d311acb3a96f5777296dcf297351130266231");
        let sig = id_sign(&key, &h(CHALLENGE), &eph, &id(ID_B));
        let want = "94852a1e2318c4e5e9d422c98eaf19d1d90d876b29cd06ca7cb7546d0fff7b484fe86c09a064fe72bdbef73ba8e9c34df0cd2b53e9d65528c2c7f336d5dfc6e6";
        assert_eq!(hex::encode(sig), want);
        let pk = key.public_key(SECP256K1);
        assert!(id_verify(&pk, &h(want), &h(CHALLENGE), &eph, &id(ID_B)));
        assert!(!id_verify(&pk, &h(want), &h(CHALLENGE), &eph, &id(ID_A)));
    }

    #[test]
    fn encryption_vector() {
        let key: [u8; 16] = h("9f2d77db7004bf8a1a85107ac686990b").try_into().unwrap();
        let nonce: [u8; 12] = h("27b5af763c446acd2749fe8e").try_into().unwrap();
        let ad = h("93a7400fa0d6a694ebc24d5cf570f65d04215b6ac00757875e3f3a5f42107903");
        let ct = encrypt(&key, &nonce, &h("01c20101"), &ad);
        assert_eq!(hex::encode(&ct), "a5d12a2d94b8ccb3ba55558229867dc13bfa3648");
        assert_eq!(decrypt(&key, &nonce, &ct, &ad).unwrap(), h("01c20101"));
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(matches!(
            decrypt(&key, &nonce, &bad, &ad),
            Err(DiscError::Decrypt { .. })
        ));
        assert!(decrypt(&key, &nonce, &ct[..3], &ad).is_err());
    }
}

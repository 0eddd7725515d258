//! ECIES as used by RLPx: secp256k1 ECDH, NIST SP 800-56 concatenation KDF over SHA-256,
//! AES-128-CTR and HMAC-SHA256 keyed with the SHA-256 of the second half of the derived key.
//!
//! Wire form: `0x04 ‖ R (64) ‖ iv (16) ‖ ciphertext ‖ tag (32)`. The tag covers
//! `iv ‖ ciphertext ‖ shared_mac_data`; EIP-8 uses the 2-byte size prefix as shared data.

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secp256k1::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};

use crate::error::{Devp2pError, Result};

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;
type HmacSha256 = Hmac<Sha256>;

/// Bytes ECIES adds around the plaintext: 65 (R) + 16 (iv) + 32 (tag).
pub const ECIES_OVERHEAD_BYTES: usize = 65 + 16 + 32;

/// x coordinate of `scalar · point`.
pub fn ecdh_x(point: &PublicKey, scalar: &SecretKey) -> [u8; 32] {
    let xy = secp256k1::ecdh::shared_secret_point(point, scalar);
    let mut x = [0u8; 32];
    x.copy_from_slice(&xy[..32]);
    x
}

/// Concatenation KDF (one SHA-256 block, counter 1, no other info) → 32 bytes.
fn kdf(z: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(1u32.to_be_bytes());
    h.update(z);
    h.finalize().into()
}

fn keys(z: &[u8; 32]) -> ([u8; 16], [u8; 32]) {
    let k = kdf(z);
    let mut ke = [0u8; 16];
    ke.copy_from_slice(&k[..16]);
    let km: [u8; 32] = Sha256::digest(&k[16..]).into();
    (ke, km)
}

fn tag(km: &[u8; 32], iv_and_ct: &[u8], shared_mac_data: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(km).expect("hmac takes any key length");
    mac.update(iv_and_ct);
    mac.update(shared_mac_data);
    mac.finalize().into_bytes().into()
}

/// Encrypt `plain` to `remote` with a fresh ephemeral key from `rng`.
pub fn encrypt<R: RngCore + ?Sized>(
    rng: &mut R,
    remote: &PublicKey,
    plain: &[u8],
    shared_mac_data: &[u8],
) -> Vec<u8> {
    let eph = SecretKey::new(&mut RngAdapter(rng));
    let mut iv = [0u8; 16];
    rng.fill_bytes(&mut iv);
    encrypt_with(&eph, &iv, remote, plain, shared_mac_data)
}

/// Deterministic ECIES encryption (ephemeral key and iv given), for tests and vectors.
pub fn encrypt_with(
    eph: &SecretKey,
    iv: &[u8; 16],
    remote: &PublicKey,
    plain: &[u8],
    shared_mac_data: &[u8],
) -> Vec<u8> {
    let z = ecdh_x(remote, eph);
    let (ke, km) = keys(&z);
    let eph_pub = PublicKey::from_secret_key_global(eph);
    let mut out = Vec::with_capacity(plain.len() + ECIES_OVERHEAD_BYTES);
    out.extend_from_slice(&eph_pub.serialize_uncompressed());
    out.extend_from_slice(iv);
    let ct_start = out.len();
    out.extend_from_slice(plain);
    let mut cipher = Aes128Ctr::new(&ke.into(), iv.into());
    cipher.apply_keystream(&mut out[ct_start..]);
    let t = tag(&km, &out[65..], shared_mac_data);
    out.extend_from_slice(&t);
    out
}

/// Decrypt an ECIES message addressed to `key`.
pub fn decrypt(key: &SecretKey, msg: &[u8], shared_mac_data: &[u8]) -> Result<Vec<u8>> {
    if msg.len() < ECIES_OVERHEAD_BYTES {
        return Err(Devp2pError::EciesTooShort {
            len_bytes: msg.len(),
            min_bytes: ECIES_OVERHEAD_BYTES,
        });
    }
    if msg[0] != 0x04 {
        return Err(Devp2pError::EciesBadPublicKey);
    }
    let r = PublicKey::from_slice(&msg[..65]).map_err(|_| Devp2pError::EciesBadPublicKey)?;
    let z = ecdh_x(&r, key);
    let (ke, km) = keys(&z);
    let body = &msg[65..msg.len() - 32];
    // Constant-time comparison through the hmac crate.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(&km).expect("hmac takes any key length");
    mac.update(body);
    mac.update(shared_mac_data);
    if mac.verify_slice(&msg[msg.len() - 32..]).is_err() {
        return Err(Devp2pError::EciesBadMac);
    }
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&body[..16]);
    let mut plain = body[16..].to_vec();
    let mut cipher = Aes128Ctr::new(&ke.into(), (&iv).into());
    cipher.apply_keystream(&mut plain);
    Ok(plain)
}

/// Lets a `?Sized` RNG be used where secp256k1 wants a sized one.
pub(crate) struct RngAdapter<'a, R: RngCore + ?Sized>(pub &'a mut R);

impl<R: RngCore + ?Sized> RngCore for RngAdapter<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> std::result::Result<(), rand::Error> {
        self.0.try_fill_bytes(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_tamper() {
        let mut rng = rand::thread_rng();
        let sk = SecretKey::new(&mut rng);
        let pk = PublicKey::from_secret_key_global(&sk);
        let ct = encrypt(&mut rng, &pk, b"hello rlpx", b"ad");
        assert_eq!(ct.len(), 10 + ECIES_OVERHEAD_BYTES);
        assert_eq!(decrypt(&sk, &ct, b"ad").unwrap(), b"hello rlpx");
        assert_eq!(decrypt(&sk, &ct, b"xx"), Err(Devp2pError::EciesBadMac));
        let mut bad = ct.clone();
        bad[70] ^= 1;
        assert_eq!(decrypt(&sk, &bad, b"ad"), Err(Devp2pError::EciesBadMac));
        assert!(matches!(
            decrypt(&sk, &ct[..50], b"ad"),
            Err(Devp2pError::EciesTooShort { .. })
        ));
    }
}

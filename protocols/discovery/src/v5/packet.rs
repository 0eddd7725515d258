//! discv5.1 packets: `masking-iv || masked-header || message`.
//!
//! The header (`static-header || authdata`) is masked with AES-128-CTR keyed by the first
//! 16 bytes of the destination node id and the packet's masking IV. The message is
//! AES-128-GCM encrypted with `masking-iv || header` as additional data.

use aes::cipher::{KeyIvInit, StreamCipher};

use crate::crypto::NodeId;
use crate::enr::Enr;
use crate::error::{DiscError, Result};
use crate::v5::crypto as v5crypto;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

pub const PROTOCOL_ID: &[u8; 6] = b"discv5";
pub const VERSION: [u8; 2] = [0x00, 0x01];
pub const FLAG_MESSAGE: u8 = 0;
pub const FLAG_WHOAREYOU: u8 = 1;
pub const FLAG_HANDSHAKE: u8 = 2;
pub const MASKING_IV_BYTES: usize = 16;
pub const STATIC_HEADER_BYTES: usize = 23;
pub const MIN_PACKET_BYTES: usize = 63;
pub const MAX_PACKET_BYTES: usize = 1280;
/// Signature and ephemeral key sizes of the "v4" identity scheme.
pub const ID_SIGNATURE_BYTES: usize = 64;
pub const EPH_PUBKEY_BYTES: usize = 33;

/// The flag-specific part of the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthData {
    Message {
        src_id: NodeId,
    },
    WhoAreYou {
        id_nonce: [u8; 16],
        enr_seq: u64,
    },
    Handshake {
        src_id: NodeId,
        id_signature: [u8; ID_SIGNATURE_BYTES],
        eph_pubkey: [u8; EPH_PUBKEY_BYTES],
        record: Option<Box<Enr>>,
    },
}

impl AuthData {
    pub fn flag(&self) -> u8 {
        match self {
            AuthData::Message { .. } => FLAG_MESSAGE,
            AuthData::WhoAreYou { .. } => FLAG_WHOAREYOU,
            AuthData::Handshake { .. } => FLAG_HANDSHAKE,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            AuthData::Message { src_id } => src_id.0.to_vec(),
            AuthData::WhoAreYou { id_nonce, enr_seq } => {
                let mut v = id_nonce.to_vec();
                v.extend_from_slice(&enr_seq.to_be_bytes());
                v
            }
            AuthData::Handshake {
                src_id,
                id_signature,
                eph_pubkey,
                record,
            } => {
                let mut v = src_id.0.to_vec();
                v.push(ID_SIGNATURE_BYTES as u8);
                v.push(EPH_PUBKEY_BYTES as u8);
                v.extend_from_slice(id_signature);
                v.extend_from_slice(eph_pubkey);
                if let Some(r) = record {
                    v.extend_from_slice(r.encoded());
                }
                v
            }
        }
    }

    /// The sender's node id (not carried by WHOAREYOU).
    pub fn src_id(&self) -> Option<NodeId> {
        match self {
            AuthData::Message { src_id } | AuthData::Handshake { src_id, .. } => Some(*src_id),
            AuthData::WhoAreYou { .. } => None,
        }
    }
}

/// A decoded (unmasked) packet; the message is still encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub masking_iv: [u8; MASKING_IV_BYTES],
    pub nonce: [u8; 12],
    pub auth: AuthData,
    /// `masking-iv || static-header || authdata`: the message's additional data, and for
    /// WHOAREYOU the `challenge-data` of the handshake.
    pub header_data: Vec<u8>,
    /// The encrypted message (empty for WHOAREYOU).
    pub message: Vec<u8>,
}

impl Packet {
    /// Decrypt the message with `key`.
    pub fn decrypt(&self, key: &[u8; 16]) -> Result<Vec<u8>> {
        v5crypto::decrypt(key, &self.nonce, &self.message, &self.header_data)
    }
}

/// Build a packet for `dest_id`. With `Some((key, plaintext))` the message is encrypted;
/// WHOAREYOU takes `None`. Returns the packet and its `header_data`.
pub fn encode(
    dest_id: &NodeId,
    masking_iv: &[u8; MASKING_IV_BYTES],
    nonce: &[u8; 12],
    auth: &AuthData,
    message: Option<(&[u8; 16], &[u8])>,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let authdata = auth.encode();
    let mut header_data =
        Vec::with_capacity(MASKING_IV_BYTES + STATIC_HEADER_BYTES + authdata.len());
    header_data.extend_from_slice(masking_iv);
    header_data.extend_from_slice(PROTOCOL_ID);
    header_data.extend_from_slice(&VERSION);
    header_data.push(auth.flag());
    header_data.extend_from_slice(nonce);
    let authdata_len = u16::try_from(authdata.len()).map_err(|_| DiscError::TooLarge {
        what: "discv5 authdata",
        len_bytes: authdata.len(),
        limit_bytes: usize::from(u16::MAX),
    })?;
    header_data.extend_from_slice(&authdata_len.to_be_bytes());
    header_data.extend_from_slice(&authdata);
    let ct = match message {
        Some((key, pt)) => v5crypto::encrypt(key, nonce, pt, &header_data),
        None => Vec::new(),
    };
    let len = header_data.len() + ct.len();
    if len > MAX_PACKET_BYTES {
        return Err(DiscError::TooLarge {
            what: "discv5 packet",
            len_bytes: len,
            limit_bytes: MAX_PACKET_BYTES,
        });
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&header_data);
    let mut key = [0u8; 16];
    key.copy_from_slice(&dest_id.0[..16]);
    let mut cipher = Aes128Ctr::new(&key.into(), masking_iv.into());
    cipher.apply_keystream(&mut out[MASKING_IV_BYTES..]);
    out.extend_from_slice(&ct);
    Ok((out, header_data))
}

/// Unmask and parse a packet addressed to `local_id`.
pub fn decode(local_id: &NodeId, packet: &[u8]) -> Result<Packet> {
    if packet.len() > MAX_PACKET_BYTES {
        return Err(DiscError::TooLarge {
            what: "discv5 packet",
            len_bytes: packet.len(),
            limit_bytes: MAX_PACKET_BYTES,
        });
    }
    if packet.len() < MIN_PACKET_BYTES {
        return Err(DiscError::TooShort {
            what: "discv5 packet",
            len_bytes: packet.len(),
            min_bytes: MIN_PACKET_BYTES,
        });
    }
    let mut masking_iv = [0u8; MASKING_IV_BYTES];
    masking_iv.copy_from_slice(&packet[..MASKING_IV_BYTES]);
    let mut key = [0u8; 16];
    key.copy_from_slice(&local_id.0[..16]);
    let mut cipher = Aes128Ctr::new(&key.into(), (&masking_iv).into());
    let header_start = MASKING_IV_BYTES;
    let auth_start = header_start + STATIC_HEADER_BYTES;
    let mut header_data = packet[..auth_start].to_vec();
    cipher.apply_keystream(&mut header_data[header_start..]);
    let sh = &header_data[header_start..];
    if &sh[..6] != PROTOCOL_ID || sh[6..8] != VERSION {
        return Err(DiscError::malformed(
            "discv5 packet",
            "protocol id or version mismatch",
        ));
    }
    let flag = sh[8];
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&sh[9..21]);
    let authdata_len = usize::from(u16::from_be_bytes([sh[21], sh[22]]));
    if auth_start + authdata_len > packet.len() {
        return Err(DiscError::malformed(
            "discv5 packet",
            "authdata-size beyond the packet",
        ));
    }
    let auth_end = auth_start + authdata_len;
    header_data.extend_from_slice(&packet[auth_start..auth_end]);
    cipher.apply_keystream(&mut header_data[auth_start..]);
    let authdata = &header_data[auth_start..];
    let message = &packet[auth_end..];
    let auth = match flag {
        FLAG_MESSAGE => {
            if authdata.len() != 32 {
                return Err(DiscError::malformed(
                    "discv5 message packet",
                    "authdata is not 32 bytes",
                ));
            }
            AuthData::Message {
                src_id: NodeId(authdata.try_into().unwrap_or([0u8; 32])),
            }
        }
        FLAG_WHOAREYOU => {
            if authdata.len() != 24 {
                return Err(DiscError::malformed(
                    "discv5 whoareyou",
                    "authdata is not 24 bytes",
                ));
            }
            if !message.is_empty() {
                return Err(DiscError::malformed(
                    "discv5 whoareyou",
                    "carries a message",
                ));
            }
            let mut id_nonce = [0u8; 16];
            id_nonce.copy_from_slice(&authdata[..16]);
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&authdata[16..24]);
            AuthData::WhoAreYou {
                id_nonce,
                enr_seq: u64::from_be_bytes(seq),
            }
        }
        FLAG_HANDSHAKE => {
            if authdata.len() < 34 {
                return Err(DiscError::malformed(
                    "discv5 handshake",
                    "authdata shorter than its head",
                ));
            }
            let sig_size = usize::from(authdata[32]);
            let key_size = usize::from(authdata[33]);
            if sig_size != ID_SIGNATURE_BYTES || key_size != EPH_PUBKEY_BYTES {
                return Err(DiscError::malformed(
                    "discv5 handshake",
                    "signature or key size is not the v4 scheme's",
                ));
            }
            let rest = &authdata[34..];
            if rest.len() < sig_size + key_size {
                return Err(DiscError::malformed(
                    "discv5 handshake",
                    "authdata truncated",
                ));
            }
            let mut src = [0u8; 32];
            src.copy_from_slice(&authdata[..32]);
            let mut id_signature = [0u8; ID_SIGNATURE_BYTES];
            id_signature.copy_from_slice(&rest[..sig_size]);
            let mut eph_pubkey = [0u8; EPH_PUBKEY_BYTES];
            eph_pubkey.copy_from_slice(&rest[sig_size..sig_size + key_size]);
            let rec = &rest[sig_size + key_size..];
            let record = if rec.is_empty() {
                None
            } else {
                Some(Box::new(Enr::decode(rec)?))
            };
            AuthData::Handshake {
                src_id: NodeId(src),
                id_signature,
                eph_pubkey,
                record,
            }
        }
        other => {
            return Err(DiscError::UnknownType {
                what: "discv5 packet flag",
                kind: other,
            })
        }
    };
    if flag != FLAG_WHOAREYOU && message.len() < v5crypto::TAG_BYTES {
        return Err(DiscError::TooShort {
            what: "discv5 message",
            len_bytes: message.len(),
            min_bytes: v5crypto::TAG_BYTES,
        });
    }
    Ok(Packet {
        masking_iv,
        nonce,
        auth,
        header_data,
        message: message.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v5::message::{Message, RequestId};
    use secp256k1::{SecretKey, SECP256K1};

    // discv5-wire-test-vectors.md, "Packet Encodings".
    const KEY_A: &str = "eef77acb6c6a6eebc5b363a475ac583ec7eccdb42b6481424c60f59aa326547f";
    const KEY_B: &str = "66fb62bfbd66b9177a138c1e5cddbe4f7c30c343e94e68df8769459cb1cde628";
    const PING_PACKET: &str = "00000000000000000000000000000000088b3d4342774649325f313964a39e55ea96c005ad52be8c7560413a7008f16c9e6d2f43bbea8814a546b7409ce783d34c4f53245d08dab84102ed931f66d1492acb308fa1c6715b9d139b81acbdcc";
    const WHOAREYOU_PACKET: &str = "00000000000000000000000000000000088b3d434277464933a1ccc59f5967ad1d6035f15e528627dde75cd68292f9e6c27d6b66c8100a873fcbaed4e16b8d";
    const WHOAREYOU_CHALLENGE_SEQ0: &str = "000000000000000000000000000000006469736376350001010102030405060708090a0b0c00180102030405060708090a0b0c0d0e0f100000000000000000";
    const WHOAREYOU_CHALLENGE_SEQ1: &str = "000000000000000000000000000000006469736376350001010102030405060708090a0b0c00180102030405060708090a0b0c0d0e0f100000000000000001";
    const EPH_KEY: &str = "0288ef00023598499cb6c940146d050d2b1fb914198c327f76aad590bead68b6";
    const EPH_PUB: &str = "039a003ba6517b473fa0cd74aefe99dadfdb34627f90fec6362df85803908f53a5";
    const HANDSHAKE_PACKET: &str = "00000000000000000000000000000000088b3d4342774649305f313964a39e55ea96c005ad521d8c7560413a7008f16c9e6d2f43bbea8814a546b7409ce783d34c4f53245d08da4bb252012b2cba3f4f374a90a75cff91f142fa9be3e0a5f3ef268ccb9065aeecfd67a999e7fdc137e062b2ec4a0eb92947f0d9a74bfbf44dfba776b21301f8b65efd5796706adff216ab862a9186875f9494150c4ae06fa4d1f0396c93f215fa4ef524f1eadf5f0f4126b79336671cbcf7a885b1f8bd2a5d839cf8";
    const HANDSHAKE_ENR_PACKET: &str = "00000000000000000000000000000000088b3d4342774649305f313964a39e55ea96c005ad539c8c7560413a7008f16c9e6d2f43bbea8814a546b7409ce783d34c4f53245d08da4bb23698868350aaad22e3ab8dd034f548a1c43cd246be98562fafa0a1fa86d8e7a3b95ae78cc2b988ded6a5b59eb83ad58097252188b902b21481e30e5e285f19735796706adff216ab862a9186875f9494150c4ae06fa4d1f0396c93f215fa4ef524e0ed04c3c21e39b1868e1ca8105e585ec17315e755e6cfc4dd6cb7fd8e1a1f55e49b4b5eb024221482105346f3c82b15fdaae36a3bb12a494683b4a3c7f2ae41306252fed84785e2bbff3b022812d0882f06978df84a80d443972213342d04b9048fc3b1d5fcb1df0f822152eced6da4d3f6df27e70e4539717307a0208cd208d65093ccab5aa596a34d7511401987662d8cf62b139471";

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }
    fn sk(s: &str) -> SecretKey {
        SecretKey::from_slice(&h(s)).unwrap()
    }
    fn id_of(s: &str) -> NodeId {
        NodeId::from_public_key(&sk(s).public_key(SECP256K1))
    }
    fn ping(enr_seq: u64) -> Vec<u8> {
        Message::Ping {
            req_id: RequestId::new(&[0, 0, 0, 1]).unwrap(),
            enr_seq,
        }
        .encode()
    }

    #[test]
    fn node_ids_of_vector_keys() {
        assert_eq!(
            id_of(KEY_A).to_string(),
            "aaaa8419e9f49d0083561b48287df592939a8d19947d8c0ef88f2a4856a69fbb"
        );
        assert_eq!(
            id_of(KEY_B).to_string(),
            "bbbb9d047f0488c0b5a93c1c3f2d8bafc7c8ff337024a55434a0d0555de64db9"
        );
    }

    #[test]
    fn ping_message_packet_vector() {
        let (a, b) = (id_of(KEY_A), id_of(KEY_B));
        let (raw, _) = encode(
            &b,
            &[0u8; 16],
            &[0xff; 12],
            &AuthData::Message { src_id: a },
            Some((&[0u8; 16], &ping(2))),
        )
        .unwrap();
        assert_eq!(hex::encode(&raw), PING_PACKET);
        let p = decode(&b, &h(PING_PACKET)).unwrap();
        assert_eq!(p.auth, AuthData::Message { src_id: a });
        assert_eq!(p.nonce, [0xff; 12]);
        assert_eq!(p.decrypt(&[0u8; 16]).unwrap(), ping(2));
        assert!(matches!(
            p.decrypt(&[1u8; 16]),
            Err(DiscError::Decrypt { .. })
        ));
        // Addressed to someone else: the header does not unmask.
        assert!(decode(&a, &h(PING_PACKET)).is_err());
    }

    #[test]
    fn whoareyou_packet_vector() {
        let (a, b) = (id_of(KEY_A), id_of(KEY_B));
        let mut id_nonce = [0u8; 16];
        id_nonce.copy_from_slice(&h("0102030405060708090a0b0c0d0e0f10"));
        let nonce: [u8; 12] = h("0102030405060708090a0b0c").try_into().unwrap();
        let auth = AuthData::WhoAreYou {
            id_nonce,
            enr_seq: 0,
        };
        let (raw, challenge) = encode(&b, &[0u8; 16], &nonce, &auth, None).unwrap();
        assert_eq!(hex::encode(&raw), WHOAREYOU_PACKET);
        assert_eq!(hex::encode(&challenge), WHOAREYOU_CHALLENGE_SEQ0);
        let p = decode(&b, &raw).unwrap();
        assert_eq!(p.auth, auth);
        assert_eq!(p.nonce, nonce);
        assert_eq!(hex::encode(&p.header_data), WHOAREYOU_CHALLENGE_SEQ0);
        assert!(decode(&a, &raw).is_err());
    }

    fn check_handshake(packet_hex: &str, challenge_hex: &str, read_key: &str, with_record: bool) {
        let (key_a, key_b) = (sk(KEY_A), sk(KEY_B));
        let (a, b) = (id_of(KEY_A), id_of(KEY_B));
        let challenge = h(challenge_hex);
        // Recipient (B) side.
        let p = decode(&b, &h(packet_hex)).unwrap();
        let AuthData::Handshake {
            src_id,
            id_signature,
            eph_pubkey,
            record,
        } = p.auth.clone()
        else {
            panic!("not a handshake")
        };
        assert_eq!(src_id, a);
        assert_eq!(hex::encode(eph_pubkey), EPH_PUB);
        assert_eq!(record.is_some(), with_record);
        let pk_a = key_a.public_key(SECP256K1);
        if let Some(r) = &record {
            assert_eq!(r.node_id(), a);
            assert_eq!(r.public_key(), &pk_a);
        }
        let keys = v5crypto::accept_handshake(
            &key_b,
            &b,
            &a,
            &pk_a,
            &challenge,
            &id_signature,
            &eph_pubkey,
        )
        .unwrap();
        assert_eq!(hex::encode(keys.initiator_key), read_key);
        assert_eq!(p.decrypt(&keys.initiator_key).unwrap(), ping(1));
        // The signature does not verify against another challenge.
        let mut other = challenge.clone();
        other[20] ^= 1;
        assert!(v5crypto::accept_handshake(
            &key_b,
            &b,
            &a,
            &pk_a,
            &other,
            &id_signature,
            &eph_pubkey
        )
        .is_err());
        // Initiator (A) side reproduces the packet byte for byte.
        let (sig, eph_pub, keys_a) = v5crypto::initiate_handshake(
            &key_a,
            &a,
            &b,
            &key_b.public_key(SECP256K1),
            &challenge,
            &sk(EPH_KEY),
        )
        .unwrap();
        assert_eq!(keys_a, keys);
        assert_eq!(sig, id_signature);
        let auth = AuthData::Handshake {
            src_id: a,
            id_signature: sig,
            eph_pubkey: eph_pub,
            record,
        };
        let (raw, _) = encode(
            &b,
            &[0u8; 16],
            &[0xff; 12],
            &auth,
            Some((&keys_a.initiator_key, &ping(1))),
        )
        .unwrap();
        assert_eq!(hex::encode(raw), packet_hex);
    }

    #[test]
    fn handshake_packet_vector() {
        check_handshake(
            HANDSHAKE_PACKET,
            WHOAREYOU_CHALLENGE_SEQ1,
            "4f9fac6de7567d1e3b1241dffe90f662",
            false,
        );
    }

    #[test]
    fn handshake_packet_with_record_vector() {
        check_handshake(
            HANDSHAKE_ENR_PACKET,
            WHOAREYOU_CHALLENGE_SEQ0,
            "53b1c075f41876423154e157470c2f48",
            true,
        );
    }

    #[test]
    fn rejects_bad_packets() {
        let b = id_of(KEY_B);
        assert!(matches!(
            decode(&b, &[0u8; 62]),
            Err(DiscError::TooShort { .. })
        ));
        assert!(matches!(
            decode(&b, &[0u8; 1281]),
            Err(DiscError::TooLarge { .. })
        ));
        // authdata-size pointing past the end.
        let mut raw = h(WHOAREYOU_PACKET);
        raw[16 + 21] ^= 0x01;
        assert!(decode(&b, &raw).is_err());
        // WHOAREYOU with a trailing message.
        let mut raw = h(WHOAREYOU_PACKET);
        raw.push(0);
        assert!(decode(&b, &raw).is_err());
        // Unknown flag.
        let mut raw = h(PING_PACKET);
        raw[16 + 8] ^= 0x07;
        assert!(matches!(
            decode(&b, &raw),
            Err(DiscError::UnknownType { .. })
        ));
    }
}

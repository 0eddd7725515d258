//! The RLPx handshake as a sans-IO state machine: auth / ack, both in the pre-EIP-8
//! ("plain") and EIP-8 encodings, and the derivation of the session secrets.
//!
//! Drive it with [`Handshake::take_output`] (bytes to send) and [`Handshake::feed`] (bytes
//! received). When it returns [`Established`] the connection continues with
//! [`crate::frame::Session::new`] on the secrets, feeding it the leftover bytes first.

use alloy_primitives::{keccak256, Keccak256};
use rand::{Rng, RngCore};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, PublicKey, SecretKey, SECP256K1};

use crate::ecies::{self, ecdh_x, RngAdapter, ECIES_OVERHEAD_BYTES};
use crate::error::{Devp2pError, Result};
use crate::rlp;

/// Size of a plain (pre-EIP-8) auth body: sig 65 ‖ keccak(eph) 32 ‖ pubkey 64 ‖ nonce 32 ‖ 0.
pub const PLAIN_AUTH_BYTES: usize = 194;
/// Size of a plain ack body: eph pubkey 64 ‖ nonce 32 ‖ 0.
pub const PLAIN_ACK_BYTES: usize = 97;
/// Largest EIP-8 handshake message accepted (size prefix value).
pub const MAX_EIP8_MESSAGE_BYTES: usize = 2048;
/// Most bytes buffered while waiting for one handshake message (the message plus whatever
/// framed data follows it in the same reads).
pub const MAX_HANDSHAKE_INPUT_BYTES: usize = MAX_EIP8_MESSAGE_BYTES + 2 + 256 * 1024;
/// RLPx handshake version sent in auth and ack.
pub const HANDSHAKE_VERSION: u64 = 4;

/// Secrets of an established RLPx session.
#[derive(Clone)]
pub struct Secrets {
    pub aes_secret: [u8; 32],
    pub mac_secret: [u8; 32],
    pub egress_mac: Keccak256,
    pub ingress_mac: Keccak256,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

/// The result of a finished handshake.
#[derive(Debug)]
pub struct Established {
    /// The remote node's static public key (its node id).
    pub remote_id: PublicKey,
    pub secrets: Secrets,
    /// Bytes received after the last handshake message: the start of the framed stream.
    pub leftover: Vec<u8>,
    /// Handshake version the remote announced.
    pub remote_version: u64,
}

/// Wire format for the messages this side sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// Pre-EIP-8 fixed-size messages.
    Plain,
    /// EIP-8 RLP messages with a size prefix and random padding.
    Eip8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InitiatorWaitAck,
    ResponderWaitAuth,
    Done,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::InitiatorWaitAck => "initiator waiting for ack",
            State::ResponderWaitAuth => "responder waiting for auth",
            State::Done => "done",
        }
    }
}

/// Auth message content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthBody {
    pub signature: [u8; 65],
    pub initiator_id: [u8; 64],
    pub nonce: [u8; 32],
    pub version: u64,
}

/// Ack message content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckBody {
    pub ephemeral_id: [u8; 64],
    pub nonce: [u8; 32],
    pub version: u64,
}

/// The handshake state machine.
pub struct Handshake {
    state: State,
    static_key: SecretKey,
    eph_key: SecretKey,
    nonce: [u8; 32],
    format: WireFormat,
    remote_id: Option<PublicKey>,
    /// Wire bytes of the auth (sent or received), including an EIP-8 size prefix.
    auth_wire: Vec<u8>,
    input: Vec<u8>,
    output: Vec<u8>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handshake {{ state: {} }}", self.state.name())
    }
}

fn pub64(pk: &PublicKey) -> [u8; 64] {
    let mut out = [0u8; 64];
    out.copy_from_slice(&pk.serialize_uncompressed()[1..]);
    out
}

/// Parse a 64-byte node id into a public key.
pub fn id_to_pubkey(id: &[u8; 64]) -> Result<PublicKey> {
    let mut b = [0u8; 65];
    b[0] = 4;
    b[1..].copy_from_slice(id);
    PublicKey::from_slice(&b).map_err(|_| Devp2pError::HandshakeMalformed {
        what: "public key",
        detail: "not a curve point".into(),
    })
}

/// The 64-byte node id of a public key.
pub fn pubkey_to_id(pk: &PublicKey) -> [u8; 64] {
    pub64(pk)
}

fn xor32(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut o = [0u8; 32];
    for i in 0..32 {
        o[i] = a[i] ^ b[i];
    }
    o
}

impl Handshake {
    /// Start a handshake as the dialing side; the auth message is queued in the output.
    pub fn initiator<R: RngCore>(
        rng: &mut R,
        static_key: SecretKey,
        remote_id: PublicKey,
        format: WireFormat,
    ) -> Self {
        let eph = SecretKey::new(&mut RngAdapter(rng));
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        Self::initiator_with(rng, static_key, remote_id, eph, nonce, format)
    }

    /// Like [`Handshake::initiator`] with a given ephemeral key and nonce (test vectors).
    pub fn initiator_with<R: RngCore>(
        rng: &mut R,
        static_key: SecretKey,
        remote_id: PublicKey,
        eph_key: SecretKey,
        nonce: [u8; 32],
        format: WireFormat,
    ) -> Self {
        let mut hs = Handshake {
            state: State::InitiatorWaitAck,
            static_key,
            eph_key,
            nonce,
            format,
            remote_id: Some(remote_id),
            auth_wire: Vec::new(),
            input: Vec::new(),
            output: Vec::new(),
        };
        let static_shared = ecdh_x(&remote_id, &hs.static_key);
        let msg = Message::from_digest(xor32(&static_shared, &nonce));
        let (recid, sig) = SECP256K1
            .sign_ecdsa_recoverable(&msg, &hs.eph_key)
            .serialize_compact();
        let mut signature = [0u8; 65];
        signature[..64].copy_from_slice(&sig);
        signature[64] = i32::from(recid) as u8;
        let my_id = pub64(&PublicKey::from_secret_key_global(&hs.static_key));
        let wire = match format {
            WireFormat::Plain => {
                let mut body = Vec::with_capacity(PLAIN_AUTH_BYTES);
                body.extend_from_slice(&signature);
                body.extend_from_slice(
                    keccak256(pub64(&PublicKey::from_secret_key_global(&hs.eph_key))).as_slice(),
                );
                body.extend_from_slice(&my_id);
                body.extend_from_slice(&nonce);
                body.push(0);
                ecies::encrypt(rng, &remote_id, &body, &[])
            }
            WireFormat::Eip8 => {
                let body = rlp::encode_list(&[
                    rlp::enc_bytes(&signature),
                    rlp::enc_bytes(&my_id),
                    rlp::enc_bytes(&nonce),
                    rlp::enc_uint(HANDSHAKE_VERSION),
                ]);
                eip8_seal(rng, &remote_id, body)
            }
        };
        hs.output.extend_from_slice(&wire);
        hs.auth_wire = wire;
        hs
    }

    /// Start a handshake as the listening side.
    pub fn responder<R: RngCore>(rng: &mut R, static_key: SecretKey) -> Self {
        let eph = SecretKey::new(&mut RngAdapter(rng));
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        Self::responder_with(static_key, eph, nonce)
    }

    /// Like [`Handshake::responder`] with a given ephemeral key and nonce (test vectors).
    pub fn responder_with(static_key: SecretKey, eph_key: SecretKey, nonce: [u8; 32]) -> Self {
        Handshake {
            state: State::ResponderWaitAuth,
            static_key,
            eph_key,
            nonce,
            format: WireFormat::Eip8,
            remote_id: None,
            auth_wire: Vec::new(),
            input: Vec::new(),
            output: Vec::new(),
        }
    }

    /// Bytes to send to the peer now (empties the output queue).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Whether the handshake is finished.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feed received bytes. Returns `Ok(None)` while more bytes are needed, `Ok(Some(_))` once
    /// the session is established (send [`Handshake::take_output`] first: the responder's ack
    /// is queued there). Errors are final.
    pub fn feed<R: RngCore>(&mut self, rng: &mut R, bytes: &[u8]) -> Result<Option<Established>> {
        if self.state == State::Done {
            return Err(Devp2pError::HandshakeWrongState {
                state: self.state.name(),
            });
        }
        if self.input.len() + bytes.len() > MAX_HANDSHAKE_INPUT_BYTES {
            return Err(Devp2pError::HandshakeTooLarge {
                what: "buffered handshake input",
                len_bytes: self.input.len() + bytes.len(),
                limit_bytes: MAX_HANDSHAKE_INPUT_BYTES,
            });
        }
        self.input.extend_from_slice(bytes);
        let plain_len = match self.state {
            State::ResponderWaitAuth => PLAIN_AUTH_BYTES + ECIES_OVERHEAD_BYTES,
            _ => PLAIN_ACK_BYTES + ECIES_OVERHEAD_BYTES,
        };
        let Some((wire_len, plain, format)) =
            read_sealed(&self.static_key, &self.input, plain_len)?
        else {
            return Ok(None);
        };
        let wire: Vec<u8> = self.input[..wire_len].to_vec();
        let leftover = self.input[wire_len..].to_vec();
        self.input.clear();
        match self.state {
            State::ResponderWaitAuth => {
                let auth = match format {
                    WireFormat::Plain => decode_plain_auth(&plain)?,
                    WireFormat::Eip8 => decode_eip8_auth(&plain)?,
                };
                let remote_id = id_to_pubkey(&auth.initiator_id)?;
                let static_shared = ecdh_x(&remote_id, &self.static_key);
                let msg = Message::from_digest(xor32(&static_shared, &auth.nonce));
                let recid = RecoveryId::try_from(i32::from(auth.signature[64]))
                    .map_err(|_| Devp2pError::HandshakeBadSignature)?;
                let sig = RecoverableSignature::from_compact(&auth.signature[..64], recid)
                    .map_err(|_| Devp2pError::HandshakeBadSignature)?;
                let remote_eph = SECP256K1
                    .recover_ecdsa(&msg, &sig)
                    .map_err(|_| Devp2pError::HandshakeBadSignature)?;
                // Ack in the format the initiator used.
                let my_eph = pub64(&PublicKey::from_secret_key_global(&self.eph_key));
                let ack_wire = match format {
                    WireFormat::Plain => {
                        let mut body = Vec::with_capacity(PLAIN_ACK_BYTES);
                        body.extend_from_slice(&my_eph);
                        body.extend_from_slice(&self.nonce);
                        body.push(0);
                        ecies::encrypt(rng, &remote_id, &body, &[])
                    }
                    WireFormat::Eip8 => {
                        let body = rlp::encode_list(&[
                            rlp::enc_bytes(&my_eph),
                            rlp::enc_bytes(&self.nonce),
                            rlp::enc_uint(HANDSHAKE_VERSION),
                        ]);
                        eip8_seal(rng, &remote_id, body)
                    }
                };
                self.format = format;
                self.output.extend_from_slice(&ack_wire);
                let secrets = derive_secrets(
                    &self.eph_key,
                    &remote_eph,
                    &self.nonce,
                    &auth.nonce,
                    false,
                    &wire,
                    &ack_wire,
                );
                self.state = State::Done;
                self.remote_id = Some(remote_id);
                Ok(Some(Established {
                    remote_id,
                    secrets,
                    leftover,
                    remote_version: auth.version,
                }))
            }
            State::InitiatorWaitAck => {
                let ack = match format {
                    WireFormat::Plain => decode_plain_ack(&plain)?,
                    WireFormat::Eip8 => decode_eip8_ack(&plain)?,
                };
                let remote_eph = id_to_pubkey(&ack.ephemeral_id)?;
                let secrets = derive_secrets(
                    &self.eph_key,
                    &remote_eph,
                    &ack.nonce,
                    &self.nonce,
                    true,
                    &self.auth_wire,
                    &wire,
                );
                self.state = State::Done;
                let remote_id = self.remote_id.ok_or(Devp2pError::HandshakeWrongState {
                    state: "initiator without remote id",
                })?;
                Ok(Some(Established {
                    remote_id,
                    secrets,
                    leftover,
                    remote_version: ack.version,
                }))
            }
            State::Done => Err(Devp2pError::HandshakeWrongState { state: "done" }),
        }
    }
}

/// EIP-8: RLP body, 100–300 random padding bytes, 2-byte size prefix as ECIES MAC data.
fn eip8_seal<R: RngCore>(rng: &mut R, remote: &PublicKey, mut body: Vec<u8>) -> Vec<u8> {
    let pad = rng.gen_range(100..=300);
    let start = body.len();
    body.resize(start + pad, 0);
    rng.fill_bytes(&mut body[start..]);
    let size = (body.len() + ECIES_OVERHEAD_BYTES) as u16;
    let prefix = size.to_be_bytes();
    let sealed = ecies::encrypt(rng, remote, &body, &prefix);
    let mut wire = Vec::with_capacity(2 + sealed.len());
    wire.extend_from_slice(&prefix);
    wire.extend_from_slice(&sealed);
    wire
}

/// Try to read one sealed handshake message from the front of `input`.
/// Returns (wire length, plaintext, format) or `None` if more bytes are needed.
pub fn read_sealed(
    key: &SecretKey,
    input: &[u8],
    plain_len: usize,
) -> Result<Option<(usize, Vec<u8>, WireFormat)>> {
    let Some(&first) = input.first() else {
        return Ok(None);
    };
    if first == 0x04 {
        // A plain message starts with the uncompressed ephemeral key (0x04). An EIP-8 size
        // prefix of 0x04xx would exceed MAX_EIP8_MESSAGE_BYTES anyway.
        if input.len() < plain_len {
            return Ok(None);
        }
        let plain = ecies::decrypt(key, &input[..plain_len], &[])?;
        return Ok(Some((plain_len, plain, WireFormat::Plain)));
    }
    if input.len() < 2 {
        return Ok(None);
    }
    let size = usize::from(u16::from_be_bytes([input[0], input[1]]));
    if size > MAX_EIP8_MESSAGE_BYTES {
        return Err(Devp2pError::HandshakeTooLarge {
            what: "EIP-8 handshake message",
            len_bytes: size,
            limit_bytes: MAX_EIP8_MESSAGE_BYTES,
        });
    }
    if input.len() < 2 + size {
        return Ok(None);
    }
    let plain = ecies::decrypt(key, &input[2..2 + size], &input[..2])?;
    Ok(Some((2 + size, plain, WireFormat::Eip8)))
}

fn malformed(what: &'static str, detail: impl Into<String>) -> Devp2pError {
    Devp2pError::HandshakeMalformed {
        what,
        detail: detail.into(),
    }
}

/// Decode a plain (pre-EIP-8) auth body.
pub fn decode_plain_auth(p: &[u8]) -> Result<AuthBody> {
    if p.len() != PLAIN_AUTH_BYTES {
        return Err(malformed(
            "auth",
            format!(
                "plain auth of {} bytes, expected {PLAIN_AUTH_BYTES}",
                p.len()
            ),
        ));
    }
    let mut a = AuthBody {
        signature: [0; 65],
        initiator_id: [0; 64],
        nonce: [0; 32],
        version: HANDSHAKE_VERSION,
    };
    a.signature.copy_from_slice(&p[..65]);
    a.initiator_id.copy_from_slice(&p[97..161]);
    a.nonce.copy_from_slice(&p[161..193]);
    Ok(a)
}

/// Decode an EIP-8 auth body (extra list elements and padding are ignored).
pub fn decode_eip8_auth(p: &[u8]) -> Result<AuthBody> {
    let (items, _padding) = rlp::list("auth", p, 64)?;
    if items.len() < 4 {
        return Err(malformed(
            "auth",
            format!("{} list items, expected at least 4", items.len()),
        ));
    }
    Ok(AuthBody {
        signature: rlp::fixed::<65>("auth signature", items[0])?,
        initiator_id: rlp::fixed::<64>("auth initiator id", items[1])?,
        nonce: rlp::fixed::<32>("auth nonce", items[2])?,
        version: rlp::uint("auth version", items[3])?,
    })
}

/// Decode a plain ack body.
pub fn decode_plain_ack(p: &[u8]) -> Result<AckBody> {
    if p.len() != PLAIN_ACK_BYTES {
        return Err(malformed(
            "ack",
            format!("plain ack of {} bytes, expected {PLAIN_ACK_BYTES}", p.len()),
        ));
    }
    let mut a = AckBody {
        ephemeral_id: [0; 64],
        nonce: [0; 32],
        version: HANDSHAKE_VERSION,
    };
    a.ephemeral_id.copy_from_slice(&p[..64]);
    a.nonce.copy_from_slice(&p[64..96]);
    Ok(a)
}

/// Decode an EIP-8 ack body.
pub fn decode_eip8_ack(p: &[u8]) -> Result<AckBody> {
    let (items, _padding) = rlp::list("ack", p, 64)?;
    if items.len() < 3 {
        return Err(malformed(
            "ack",
            format!("{} list items, expected at least 3", items.len()),
        ));
    }
    Ok(AckBody {
        ephemeral_id: rlp::fixed::<64>("ack ephemeral id", items[0])?,
        nonce: rlp::fixed::<32>("ack nonce", items[1])?,
        version: rlp::uint("ack version", items[2])?,
    })
}

/// Derive the session secrets.
pub fn derive_secrets(
    my_eph: &SecretKey,
    remote_eph: &PublicKey,
    resp_nonce: &[u8; 32],
    init_nonce: &[u8; 32],
    initiator: bool,
    auth_wire: &[u8],
    ack_wire: &[u8],
) -> Secrets {
    let ecdhe = ecdh_x(remote_eph, my_eph);
    let mut nonces = [0u8; 64];
    nonces[..32].copy_from_slice(resp_nonce);
    nonces[32..].copy_from_slice(init_nonce);
    let h_nonces = keccak256(nonces);
    let shared = keccak256([ecdhe.as_slice(), h_nonces.as_slice()].concat());
    let aes_secret = keccak256([ecdhe.as_slice(), shared.as_slice()].concat()).0;
    let mac_secret = keccak256([ecdhe.as_slice(), aes_secret.as_slice()].concat()).0;
    let mut mac_resp = Keccak256::new();
    mac_resp.update(xor32(&mac_secret, resp_nonce));
    mac_resp.update(auth_wire);
    let mut mac_init = Keccak256::new();
    mac_init.update(xor32(&mac_secret, init_nonce));
    mac_init.update(ack_wire);
    let (egress_mac, ingress_mac) = if initiator {
        (mac_resp, mac_init)
    } else {
        (mac_init, mac_resp)
    };
    Secrets {
        aes_secret,
        mac_secret,
        egress_mac,
        ingress_mac,
    }
}

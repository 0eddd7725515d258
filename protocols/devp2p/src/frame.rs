//! RLPx framing of an established session: AES-256-CTR over header and body (one key
//! stream per direction, IV zero), keccak-256 MACs updated with AES-256 (ECB) of the MAC
//! digest, 16-byte header (3-byte size, `[0, 0]` header data, zero padding), body padded to 16.
//!
//! [`Session`] is sans-IO: [`Session::write_frame`] appends ciphertext to a buffer;
//! [`Session::feed`] takes received bytes and [`Session::next_frame`] yields decrypted frames.

use aes::cipher::{BlockEncrypt, KeyInit, KeyIvInit, StreamCipher};
use alloy_primitives::Keccak256;

use crate::error::{Devp2pError, Result};
use crate::handshake::Secrets;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// The largest frame size the 3-byte header can express.
pub const MAX_FRAME_BYTES_PROTOCOL: usize = (1 << 24) - 1;
/// Header data of every frame: RLP `[capability-id 0, context-id 0]`.
const HEADER_DATA: [u8; 3] = [0xc2, 0x80, 0x80];

fn digest16(mac: &Keccak256) -> [u8; 16] {
    let d = mac.clone().finalize();
    let mut o = [0u8; 16];
    o.copy_from_slice(&d[..16]);
    o
}

struct MacState {
    mac: Keccak256,
    cipher: aes::Aes256,
}

impl MacState {
    /// mac.update(aes(mac.digest[:16]) ^ seed); return mac.digest[:16]
    fn update_with_seed(&mut self, seed: &[u8; 16]) -> [u8; 16] {
        let mut block = aes::Block::from(digest16(&self.mac));
        self.cipher.encrypt_block(&mut block);
        for (b, s) in block.iter_mut().zip(seed) {
            *b ^= s;
        }
        self.mac.update(block);
        digest16(&self.mac)
    }

    fn header_mac(&mut self, header_ct: &[u8; 16]) -> [u8; 16] {
        self.update_with_seed(header_ct)
    }

    fn body_mac(&mut self, body_ct: &[u8]) -> [u8; 16] {
        self.mac.update(body_ct);
        let seed = digest16(&self.mac);
        self.update_with_seed(&seed)
    }
}

/// Encrypts outgoing and decrypts incoming frames of one connection.
pub struct Session {
    egress_aes: Aes256Ctr,
    ingress_aes: Aes256Ctr,
    egress: MacState,
    ingress: MacState,
    max_frame_bytes: usize,
    input: Vec<u8>,
    input_start: usize,
    /// Size of the frame whose header was already decrypted and checked.
    pending_frame_bytes: Option<usize>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Session {{ buffered: {} }}",
            self.input.len() - self.input_start
        )
    }
}

/// Padded length of a frame body.
pub fn padded(len: usize) -> usize {
    len.div_ceil(16) * 16
}

impl Session {
    /// A session from handshake secrets, accepting frames up to `max_frame_bytes`.
    pub fn new(secrets: Secrets, max_frame_bytes: usize) -> Self {
        let iv = [0u8; 16];
        let mac_cipher = aes::Aes256::new(&secrets.mac_secret.into());
        Session {
            egress_aes: Aes256Ctr::new(&secrets.aes_secret.into(), &iv.into()),
            ingress_aes: Aes256Ctr::new(&secrets.aes_secret.into(), &iv.into()),
            egress: MacState {
                mac: secrets.egress_mac,
                cipher: mac_cipher.clone(),
            },
            ingress: MacState {
                mac: secrets.ingress_mac,
                cipher: mac_cipher,
            },
            max_frame_bytes: max_frame_bytes.min(MAX_FRAME_BYTES_PROTOCOL),
            input: Vec::new(),
            input_start: 0,
            pending_frame_bytes: None,
        }
    }

    /// Encrypt one frame carrying `data` (message id RLP ‖ payload) and append it to `out`.
    pub fn write_frame(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if data.len() > self.max_frame_bytes {
            return Err(Devp2pError::FrameTooLarge {
                size_bytes: data.len(),
                limit_bytes: self.max_frame_bytes,
            });
        }
        let mut header = [0u8; 16];
        header[..3].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        header[3..6].copy_from_slice(&HEADER_DATA);
        self.egress_aes.apply_keystream(&mut header);
        let hmac = self.egress.header_mac(&header);
        out.reserve(32 + padded(data.len()) + 16);
        out.extend_from_slice(&header);
        out.extend_from_slice(&hmac);
        let start = out.len();
        out.extend_from_slice(data);
        out.resize(start + padded(data.len()), 0);
        self.egress_aes.apply_keystream(&mut out[start..]);
        let fmac = self.egress.body_mac(&out[start..]);
        out.extend_from_slice(&fmac);
        Ok(())
    }

    /// Append received bytes to the input buffer.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.input_start > 0 && self.input_start == self.input.len() {
            self.input.clear();
            self.input_start = 0;
        } else if self.input_start > 64 * 1024 {
            self.input.drain(..self.input_start);
            self.input_start = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet consumed as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.input.len() - self.input_start
    }

    /// Bytes still needed to complete the frame being read (at least 1 when waiting).
    pub fn wanted_bytes(&self) -> usize {
        let have = self.buffered_bytes();
        let need = match self.pending_frame_bytes {
            None => 32,
            Some(n) => padded(n) + 16,
        };
        need.saturating_sub(have).max(1)
    }

    /// Decrypt the next complete frame from the buffered input, if any. After an error the
    /// session is unusable (the MAC and cipher streams are out of step): drop the connection.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>> {
        let size = match self.pending_frame_bytes {
            Some(n) => n,
            None => {
                if self.buffered_bytes() < 32 {
                    return Ok(None);
                }
                let mut header = [0u8; 16];
                header.copy_from_slice(&self.input[self.input_start..self.input_start + 16]);
                let want = self.ingress.header_mac(&header);
                if want[..] != self.input[self.input_start + 16..self.input_start + 32] {
                    return Err(Devp2pError::FrameBadHeaderMac);
                }
                self.ingress_aes.apply_keystream(&mut header);
                let size = (usize::from(header[0]) << 16)
                    | (usize::from(header[1]) << 8)
                    | usize::from(header[2]);
                if size > self.max_frame_bytes {
                    return Err(Devp2pError::FrameTooLarge {
                        size_bytes: size,
                        limit_bytes: self.max_frame_bytes,
                    });
                }
                if size == 0 {
                    return Err(Devp2pError::FrameEmpty);
                }
                self.input_start += 32;
                self.pending_frame_bytes = Some(size);
                size
            }
        };
        let body_len = padded(size);
        if self.buffered_bytes() < body_len + 16 {
            return Ok(None);
        }
        let s = self.input_start;
        let want = self.ingress.body_mac(&self.input[s..s + body_len]);
        if want[..] != self.input[s + body_len..s + body_len + 16] {
            return Err(Devp2pError::FrameBadBodyMac);
        }
        let mut body = self.input[s..s + body_len].to_vec();
        self.ingress_aes.apply_keystream(&mut body);
        body.truncate(size);
        self.input_start += body_len + 16;
        self.pending_frame_bytes = None;
        Ok(Some(body))
    }
}

/// The frame path's primitives without the framing: AES-256-CTR and keccak-256 over the
/// same bytes. A baseline for throughput measurements.
pub struct RawCtrKeccak {
    aes: Aes256Ctr,
    mac: Keccak256,
}

impl RawCtrKeccak {
    pub fn new(key: [u8; 32]) -> Self {
        RawCtrKeccak {
            aes: Aes256Ctr::new(&key.into(), &[0u8; 16].into()),
            mac: Keccak256::new(),
        }
    }

    /// Encrypt (or decrypt) `buf` in place and absorb the ciphertext into the MAC.
    pub fn seal(&mut self, buf: &mut [u8]) {
        self.aes.apply_keystream(buf);
        self.mac.update(&*buf);
    }

    /// Absorb `buf` into the MAC, then decrypt it in place.
    pub fn open(&mut self, buf: &mut [u8]) {
        self.mac.update(&*buf);
        self.aes.apply_keystream(buf);
    }

    pub fn digest(&self) -> [u8; 32] {
        self.mac.clone().finalize().0
    }
}

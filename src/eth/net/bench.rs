//! RLPx throughput: messages pushed through the whole frame path (snappy, AES-256-CTR,
//! keccak MACs on the sender; MAC checks, decryption and decompression on the receiver)
//! beside the raw AES-CTR + keccak of the same bytes, measured in the same run.

use std::time::Instant;

use catchup_devp2p::frame::{RawCtrKeccak, Session};
use catchup_devp2p::handshake::{Handshake, WireFormat};
use catchup_devp2p::p2p::MessageConn;
use catchup_devp2p::secp256k1::{PublicKey, SecretKey};
use rand::RngCore;
use serde::Serialize;

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct RlpxBench {
    pub message_bytes: usize,
    pub messages: u64,
    /// Payload content: "random" (incompressible) or "rlp-like" (compressible).
    pub payload: &'static str,
    pub rlpx_frames_per_s: f64,
    pub rlpx_mb_per_s: f64,
    pub raw_aes_keccak_mb_per_s: f64,
    /// rlpx / raw: the share of the raw crypto speed the whole frame path reaches.
    pub ratio: f64,
}

/// A connected pair of message layers (handshake done in memory).
pub fn session_pair() -> (MessageConn, MessageConn) {
    let mut rng = rand::thread_rng();
    let (ka, kb) = (SecretKey::new(&mut rng), SecretKey::new(&mut rng));
    let mut init = Handshake::initiator(
        &mut rng,
        ka,
        PublicKey::from_secret_key_global(&kb),
        WireFormat::Eip8,
    );
    let mut resp = Handshake::responder(&mut rng, kb);
    let est_b = resp
        .feed(&mut rng, &init.take_output())
        .expect("in-memory auth")
        .expect("complete");
    let est_a = init
        .feed(&mut rng, &resp.take_output())
        .expect("in-memory ack")
        .expect("complete");
    let mut a = MessageConn::new(Session::new(est_a.secrets, 1 << 24), 16 << 20);
    let mut b = MessageConn::new(Session::new(est_b.secrets, 1 << 24), 16 << 20);
    a.set_snappy(true);
    b.set_snappy(true);
    (a, b)
}

/// A payload of `len` bytes: random, or a repetitive RLP-like pattern (headers, hashes
/// with many zero bytes) that snappy compresses.
pub fn payload(len: usize, compressible: bool) -> Vec<u8> {
    let mut p = vec![0u8; len];
    if compressible {
        let mut rng = rand::thread_rng();
        for chunk in p.chunks_mut(64) {
            let n = chunk.len().min(20);
            rng.fill_bytes(&mut chunk[..n]);
        }
    } else {
        rand::thread_rng().fill_bytes(&mut p);
    }
    p
}

/// Push `messages` messages of `message_bytes` through the RLPx path, then the same bytes
/// through raw AES-256-CTR + keccak on both sides.
pub fn measure(message_bytes: usize, messages: u64, compressible: bool) -> RlpxBench {
    let (mut a, mut b) = session_pair();
    let data = payload(message_bytes, compressible);
    let mut wire = Vec::with_capacity(message_bytes + 128);
    let start = Instant::now();
    for _ in 0..messages {
        wire.clear();
        a.write_message(0x10, &data, &mut wire)
            .expect("message within limits");
        b.feed(&wire);
        let (_, got) = b.next_message().expect("valid frame").expect("whole frame");
        debug_assert_eq!(got.len(), data.len());
    }
    let rlpx_s = start.elapsed().as_secs_f64().max(1e-9);

    let mut sender = RawCtrKeccak::new([7u8; 32]);
    let mut receiver = RawCtrKeccak::new([7u8; 32]);
    let mut buf = data.clone();
    let start = Instant::now();
    for _ in 0..messages {
        sender.seal(&mut buf);
        receiver.open(&mut buf);
    }
    std::hint::black_box((sender.digest(), receiver.digest(), &buf));
    let raw_s = start.elapsed().as_secs_f64().max(1e-9);
    let total_mb = (message_bytes as f64 * messages as f64) / 1e6;
    let rlpx_mb = total_mb / rlpx_s;
    let raw_mb = total_mb / raw_s;
    RlpxBench {
        message_bytes,
        messages,
        payload: if compressible { "rlp-like" } else { "random" },
        rlpx_frames_per_s: messages as f64 / rlpx_s,
        rlpx_mb_per_s: rlpx_mb,
        raw_aes_keccak_mb_per_s: raw_mb,
        ratio: rlpx_mb / raw_mb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_runs_and_reports_consistent_numbers() {
        let r = measure(1024, 50, true);
        assert_eq!(r.messages, 50);
        assert!(r.rlpx_mb_per_s > 0.0 && r.raw_aes_keccak_mb_per_s > 0.0);
        assert!((r.ratio - r.rlpx_mb_per_s / r.raw_aes_keccak_mb_per_s).abs() < 1e-9);
    }
}

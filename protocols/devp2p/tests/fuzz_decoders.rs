//! Fuzz-style property tests: random and mutated bytes thrown at every decoder of peer input.
//! Each must return a value or a typed error, never panic.

use catchup_devp2p::eth::EthMessage;
use catchup_devp2p::frame::Session;
use catchup_devp2p::handshake::{Handshake, WireFormat};
use catchup_devp2p::p2p::{decompress, DisconnectReason, Hello, MessageConn};
use catchup_devp2p::snap::SnapMessage;
use catchup_devp2p::{ecies, enode::Enode, forkid::ForkId};
use proptest::prelude::*;
use secp256k1::{PublicKey, SecretKey};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn message_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), id in 0u64..20, version in 66u64..=69) {
        let _ = Hello::decode(&bytes);
        let _ = DisconnectReason::decode(&bytes);
        let _ = EthMessage::decode(version, id, &bytes);
        let _ = SnapMessage::decode(id % 9, &bytes);
        let _ = ForkId::decode(&bytes);
        let _ = decompress(&bytes, 1 << 20);
        let _ = Enode::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn handshake_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..1200), first in prop_oneof![Just(0x04u8), Just(0x01u8), any::<u8>()]) {
        let mut rng = rand::thread_rng();
        let key = SecretKey::new(&mut rng);
        let mut hs = Handshake::responder(&mut rng, key);
        let mut input = bytes.clone();
        if let Some(b) = input.first_mut() { *b = first; }
        let _ = hs.feed(&mut rng, &input);
        let _ = ecies::decrypt(&key, &input, &[]);
    }

    #[test]
    fn mutated_frames_are_rejected_not_panicking(flip_at in 0usize..200, flip in 1u8..=255, payload in proptest::collection::vec(any::<u8>(), 1..150)) {
        let mut rng = rand::thread_rng();
        let (ka, kb) = (SecretKey::new(&mut rng), SecretKey::new(&mut rng));
        let mut init = Handshake::initiator(&mut rng, ka, PublicKey::from_secret_key_global(&kb), WireFormat::Eip8);
        let mut resp = Handshake::responder(&mut rng, kb);
        let est_b = resp.feed(&mut rng, &init.take_output()).unwrap().unwrap();
        let est_a = init.feed(&mut rng, &resp.take_output()).unwrap().unwrap();
        let mut a = MessageConn::new(Session::new(est_a.secrets, 1 << 24), 1 << 24);
        let mut b = MessageConn::new(Session::new(est_b.secrets, 1 << 24), 1 << 24);
        a.set_snappy(true);
        b.set_snappy(true);
        let mut w = Vec::new();
        a.write_message(0x10, &payload, &mut w).unwrap();
        let i = flip_at % w.len();
        w[i] ^= flip;
        b.feed(&w);
        // Every byte is covered by a MAC: a flipped byte is always detected.
        prop_assert!(b.next_message().is_err());
    }
}

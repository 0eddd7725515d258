//! Random and mutated input to every decoder: typed errors only, never a panic.

use catchup_discovery::dns::{self, TreeLink};
use catchup_discovery::secp256k1::SecretKey;
use catchup_discovery::v4::packet::{self as v4packet, FindNode, Message as V4Message};
use catchup_discovery::v5::{message::Message as V5Message, packet as v5packet};
use catchup_discovery::{crypto, Enr, EnrBuilder, NodeId};
use proptest::prelude::*;

const ENR_TEXT: &str = "enr:-IS4QHCYrYZbAKWCBRlAy5zzaDZXJBGkcnh4MHcBFZntXNFrdvJjX04jRzjzCBOonrkTfj499SZuOh8R33Ls8RRcy5wBgmlkgnY0gmlwhH8AAAGJc2VjcDI1NmsxoQPKY0yuDUmstAHYpMa2_oxVtw0RW_QAdpzBQA8yWM0xOIN1ZHCCdl8";

fn valid_v4_packet() -> Vec<u8> {
    let key = SecretKey::from_slice(&[0x11; 32]).unwrap();
    v4packet::encode(
        &V4Message::FindNode(FindNode {
            target: [3u8; 64],
            expiration: u64::MAX,
        }),
        &key,
    )
    .unwrap()
    .0
}

fn valid_enr() -> Vec<u8> {
    Enr::from_text(ENR_TEXT).unwrap().encoded().to_vec()
}

fn any_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(data in any_bytes(1400)) {
        let _ = Enr::decode(&data);
        let _ = v4packet::decode(&data, 0);
        let id = NodeId([0xbb; 32]);
        if let Ok(p) = v5packet::decode(&id, &data) {
            let _ = p.decrypt(&[0u8; 16]);
        }
        let _ = V5Message::decode(&data);
        let text = String::from_utf8_lossy(&data);
        let _ = Enr::from_text(&text);
        let _ = dns::parse_entry(&text);
        let _ = TreeLink::parse(&text);
        let _ = crypto::b32_decode(&text);
        let _ = crypto::b64_decode(&text, 300);
    }

    #[test]
    fn prefixed_text_never_panics(tail in "[A-Za-z0-9_=, .@:/-]{0,400}") {
        for prefix in ["enr:", "enrtree://", "enrtree-branch:", "enrtree-root:v1 ", "enrtree-root:v1 e="] {
            let t = format!("{prefix}{tail}");
            let _ = dns::parse_entry(&t);
            let _ = TreeLink::parse(&t);
            let _ = Enr::from_text(&t);
        }
    }

    #[test]
    fn mutated_valid_inputs_never_panic(
        pos in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<usize>(),
    ) {
        for valid in [valid_v4_packet(), valid_enr()] {
            let mut m = valid.clone();
            let i = pos % m.len();
            m[i] = byte;
            let _ = v4packet::decode(&m, 0);
            let _ = Enr::decode(&m);
            let short = &valid[..cut % valid.len()];
            let _ = v4packet::decode(short, 0);
            let _ = Enr::decode(short);
        }
        // A message plaintext with one byte changed.
        let key = SecretKey::from_slice(&[0x22; 32]).unwrap();
        let enr = EnrBuilder::new(1).build(&key).unwrap();
        let msg = V5Message::Nodes { req_id: Default::default(), total: 1, enrs: vec![enr] }.encode();
        let mut m = msg.clone();
        let i = pos % m.len();
        m[i] = byte;
        let _ = V5Message::decode(&m);
        let _ = V5Message::decode(&msg[..cut % msg.len()]);
    }
}

fn v4_service() -> catchup_discovery::v4::Service {
    let key = SecretKey::from_slice(&[0x31; 32]).unwrap();
    let mut s = catchup_discovery::v4::Service::new(catchup_discovery::v4::Config {
        key,
        endpoint: "127.0.0.1:30303".parse().unwrap(),
        tcp_port: 30303,
        bootnodes: vec![],
        fork_id: None,
        fork_filter: None,
        rng_seed: 1,
    })
    .unwrap();
    s.start(1_700_000_000_000);
    s
}

fn v5_service() -> catchup_discovery::v5::Service {
    let key = SecretKey::from_slice(&[0x32; 32]).unwrap();
    let mut s = catchup_discovery::v5::Service::new(catchup_discovery::v5::Config {
        key,
        endpoint: "127.0.0.1:9000".parse().unwrap(),
        tcp_port: 30303,
        bootnodes: vec![],
        fork_id: None,
        fork_filter: None,
        rng_seed: 1,
    })
    .unwrap();
    s.start(1_700_000_000_000);
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Services take any datagram: random bytes, and for discv5 well-masked headers with
    /// random content for every flag.
    #[test]
    fn services_never_panic(
        data in any_bytes(1400),
        src in any::<[u8; 32]>(),
        nonce in any::<[u8; 12]>(),
        key in any::<[u8; 16]>(),
        sig in any::<[u8; 64]>(),
        kind in 0u8..3,
    ) {
        let now = 1_700_000_000_000u64;
        let from: std::net::SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let mut v4 = v4_service();
        v4.handle_packet(from, &data, now);
        let mut signed = vec![1u8 + kind % 6];
        signed.extend_from_slice(&data[..data.len().min(1000)]);
        let k = SecretKey::from_slice(&[0x77; 32]).unwrap();
        let s65 = crypto::sign_recoverable(&k, &alloy_primitives::keccak256(&signed).0);
        let mut p = vec![0u8; 32];
        p.extend_from_slice(&s65);
        p.extend_from_slice(&signed);
        let h = alloy_primitives::keccak256(&p[32..]).0;
        p[..32].copy_from_slice(&h);
        v4.handle_packet(from, &p, now);
        v4.handle_timeout(now + 5_000);

        let mut v5 = v5_service();
        let local = v5.local_id();
        v5.handle_packet(from, &data, now);
        let auth = match kind {
            0 => v5packet::AuthData::Message { src_id: NodeId(src) },
            1 => v5packet::AuthData::WhoAreYou { id_nonce: key, enr_seq: u64::from(sig[0]) },
            _ => v5packet::AuthData::Handshake {
                src_id: NodeId(src),
                id_signature: sig,
                eph_pubkey: {
                    let mut e = [0u8; 33];
                    e[0] = 2 + (sig[1] & 1);
                    e[1..].copy_from_slice(&src);
                    e
                },
                record: None,
            },
        };
        let pt = &data[..data.len().min(900)];
        let msg = if kind == 1 { None } else { Some((&key, pt)) };
        if let Ok((raw, _)) = v5packet::encode(&local, &[0u8; 16], &nonce, &auth, msg) {
            v5.handle_packet(from, &raw, now);
        }
        v5.handle_timeout(now + 5_000);
        while v5.poll_transmit().is_some() {}
        while v4.poll_transmit().is_some() {}
    }
}

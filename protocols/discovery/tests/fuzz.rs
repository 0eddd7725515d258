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

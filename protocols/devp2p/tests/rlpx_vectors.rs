//! RLPx handshake test vectors of EIP-8 (also used by go-ethereum's p2p/rlpx tests), and
//! full in-memory handshakes + framed messages between two sides.

use catchup_devp2p::ecies::ECIES_OVERHEAD_BYTES;
use catchup_devp2p::eth::{EthMessage, HashOrNumber};
use catchup_devp2p::frame::Session;
use catchup_devp2p::handshake::{
    decode_eip8_ack, decode_eip8_auth, id_to_pubkey, pubkey_to_id, read_sealed, Handshake,
    WireFormat, PLAIN_ACK_BYTES, PLAIN_AUTH_BYTES,
};
use catchup_devp2p::p2p::{Capability, Hello, MessageConn, ID_HELLO, MAX_MESSAGE_BYTES};
use catchup_devp2p::Devp2pError;
use secp256k1::{PublicKey, SecretKey};

fn unhex(s: &str) -> Vec<u8> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(clean).unwrap()
}
fn key(s: &str) -> SecretKey {
    SecretKey::from_slice(&unhex(s)).unwrap()
}
fn arr32(s: &str) -> [u8; 32] {
    unhex(s).try_into().unwrap()
}

const KEY_A: &str = "49a7b37aa6f6645917e7b807e9d1c00d4fa71f18343b0d4122a4d2df64dd6fee";
const KEY_B: &str = "b71c71a67e1177ad4e901695e1b4b9ee17ae16c6668d313eac2f96dbcda3f291";
const EPH_A: &str = "869d6ecf5211f1cc60418a13b9d870b22959d0c16f02bec714c960dd2298a32d";
const EPH_B: &str = "e238eb8e04fee6511ab04c6dd3c89ce097b11f25d584863ac2b6d5b35b1847e4";
const NONCE_A: &str = "7e968bba13b6c50e2c4cd7f241cc0d64d1ac25c7f5952df231ac6a2bda8ee5d6";
const NONCE_B: &str = "559aead08264d5795d3909718cdd05abd49572e84fe55590eef31a88a08fdffd";
const AUTH_SIGNATURE: &str = "299ca6acfd35e3d72d8ba3d1e2b60b5561d5af5218eb5bc182045769eb4226910a301acae3b369fffc4a4899d6b02531e89fd4fe36a2cf0d93607ba470b50f7800";

const AUTH2: &str = "
01b304ab7578555167be8154d5cc456f567d5ba302662433674222360f08d5f1534499d3678b513b
0fca474f3a514b18e75683032eb63fccb16c156dc6eb2c0b1593f0d84ac74f6e475f1b8d56116b84
9634a8c458705bf83a626ea0384d4d7341aae591fae42ce6bd5c850bfe0b999a694a49bbbaf3ef6c
da61110601d3b4c02ab6c30437257a6e0117792631a4b47c1d52fc0f8f89caadeb7d02770bf999cc
147d2df3b62e1ffb2c9d8c125a3984865356266bca11ce7d3a688663a51d82defaa8aad69da39ab6
d5470e81ec5f2a7a47fb865ff7cca21516f9299a07b1bc63ba56c7a1a892112841ca44b6e0034dee
70c9adabc15d76a54f443593fafdc3b27af8059703f88928e199cb122362a4b35f62386da7caad09
c001edaeb5f8a06d2b26fb6cb93c52a9fca51853b68193916982358fe1e5369e249875bb8d0d0ec3
6f917bc5e1eafd5896d46bd61ff23f1a863a8a8dcd54c7b109b771c8e61ec9c8908c733c0263440e
2aa067241aaa433f0bb053c7b31a838504b148f570c0ad62837129e547678c5190341e4f1693956c
3bf7678318e2d5b5340c9e488eefea198576344afbdf66db5f51204a6961a63ce072c8926c";

const AUTH3: &str = "
01b8044c6c312173685d1edd268aa95e1d495474c6959bcdd10067ba4c9013df9e40ff45f5bfd6f7
2471f93a91b493f8e00abc4b80f682973de715d77ba3a005a242eb859f9a211d93a347fa64b597bf
280a6b88e26299cf263b01b8dfdb712278464fd1c25840b995e84d367d743f66c0e54a586725b7bb
f12acca27170ae3283c1073adda4b6d79f27656993aefccf16e0d0409fe07db2dc398a1b7e8ee93b
cd181485fd332f381d6a050fba4c7641a5112ac1b0b61168d20f01b479e19adf7fdbfa0905f63352
bfc7e23cf3357657455119d879c78d3cf8c8c06375f3f7d4861aa02a122467e069acaf513025ff19
6641f6d2810ce493f51bee9c966b15c5043505350392b57645385a18c78f14669cc4d960446c1757
1b7c5d725021babbcd786957f3d17089c084907bda22c2b2675b4378b114c601d858802a55345a15
116bc61da4193996187ed70d16730e9ae6b3bb8787ebcaea1871d850997ddc08b4f4ea668fbf3740
7ac044b55be0908ecb94d4ed172ece66fd31bfdadf2b97a8bc690163ee11f5b575a4b44e36e2bfb2
f0fce91676fd64c7773bac6a003f481fddd0bae0a1f31aa27504e2a533af4cef3b623f4791b2cca6
d490";

const ACK2: &str = "
01ea0451958701280a56482929d3b0757da8f7fbe5286784beead59d95089c217c9b917788989470
b0e330cc6e4fb383c0340ed85fab836ec9fb8a49672712aeabbdfd1e837c1ff4cace34311cd7f4de
05d59279e3524ab26ef753a0095637ac88f2b499b9914b5f64e143eae548a1066e14cd2f4bd7f814
c4652f11b254f8a2d0191e2f5546fae6055694aed14d906df79ad3b407d94692694e259191cde171
ad542fc588fa2b7333313d82a9f887332f1dfc36cea03f831cb9a23fea05b33deb999e85489e645f
6aab1872475d488d7bd6c7c120caf28dbfc5d6833888155ed69d34dbdc39c1f299be1057810f34fb
e754d021bfca14dc989753d61c413d261934e1a9c67ee060a25eefb54e81a4d14baff922180c395d
3f998d70f46f6b58306f969627ae364497e73fc27f6d17ae45a413d322cb8814276be6ddd13b885b
201b943213656cde498fa0e9ddc8e0b8f8a53824fbd82254f3e2c17e8eaea009c38b4aa0a3f306e8
797db43c25d68e86f262e564086f59a2fc60511c42abfb3057c247a8a8fe4fb3ccbadde17514b7ac
8000cdb6a912778426260c47f38919a91f25f4b5ffb455d6aaaf150f7e5529c100ce62d6d92826a7
1778d809bdf60232ae21ce8a437eca8223f45ac37f6487452ce626f549b3b5fdee26afd2072e4bc7
5833c2464c805246155289f4";

const ACK3: &str = "
01f004076e58aae772bb101ab1a8e64e01ee96e64857ce82b1113817c6cdd52c09d26f7b90981cd7
ae835aeac72e1573b8a0225dd56d157a010846d888dac7464baf53f2ad4e3d584531fa203658fab0
3a06c9fd5e35737e417bc28c1cbf5e5dfc666de7090f69c3b29754725f84f75382891c561040ea1d
dc0d8f381ed1b9d0d4ad2a0ec021421d847820d6fa0ba66eaf58175f1b235e851c7e2124069fbc20
2888ddb3ac4d56bcbd1b9b7eab59e78f2e2d400905050f4a92dec1c4bdf797b3fc9b2f8e84a482f3
d800386186712dae00d5c386ec9387a5e9c9a1aca5a573ca91082c7d68421f388e79127a5177d4f8
590237364fd348c9611fa39f78dcdceee3f390f07991b7b47e1daa3ebcb6ccc9607811cb17ce51f1
c8c2c5098dbdd28fca547b3f58c01a424ac05f869f49c6a34672ea2cbbc558428aa1fe48bbfd6115
8b1b735a65d99f21e70dbc020bfdface9f724a0d1fb5895db971cc81aa7608baa0920abb0a565c9c
436e2fd13323428296c86385f2384e408a31e104670df0791d93e743a3a5194ee6b076fb6323ca59
3011b7348c16cf58f66b9633906ba54a2ee803187344b394f75dd2e663a57b956cb830dd7a908d4f
39a2336a61ef9fda549180d4ccde21514d117b6c6fd07a9102b5efe710a32af4eeacae2cb3b1dec0
35b9593b48b9d3ca4c13d245d5f04169b0b1";

const WANT_AES: &str = "80e8632c05fed6fc2a13b0f8d31a3cf645366239170ea067065aba8e28bac487";
const WANT_MAC: &str = "2ea74ec5dae199227dff1af715362700e989d889d7a493cb0639691efb8e5f98";
const WANT_FOO_INGRESS: &str = "0c7ec6340062cc46f5e9f1e3cf86f8c8c403c5a0964f5df0ebd34a75ddc86db5";

fn pubkey(k: &SecretKey) -> PublicKey {
    PublicKey::from_secret_key_global(k)
}

#[test]
fn eip8_auth_vectors_decode() {
    let kb = key(KEY_B);
    for (input, want_version) in [(AUTH2, 4u64), (AUTH3, 56)] {
        let wire = unhex(input);
        let (len, plain, format) = read_sealed(&kb, &wire, PLAIN_AUTH_BYTES + ECIES_OVERHEAD_BYTES)
            .unwrap()
            .unwrap();
        assert_eq!(len, wire.len());
        assert_eq!(format, WireFormat::Eip8);
        let auth = decode_eip8_auth(&plain).unwrap();
        assert_eq!(auth.version, want_version);
        assert_eq!(auth.nonce, arr32(NONCE_A));
        assert_eq!(auth.initiator_id, pubkey_to_id(&pubkey(&key(KEY_A))));
        assert_eq!(auth.signature.to_vec(), unhex(AUTH_SIGNATURE));
        // A truncated message asks for more bytes; a wrong key fails the MAC.
        assert!(read_sealed(&kb, &wire[..wire.len() - 1], 307)
            .unwrap()
            .is_none());
        assert_eq!(
            read_sealed(&key(KEY_A), &wire, 307),
            Err(Devp2pError::EciesBadMac)
        );
    }
}

#[test]
fn eip8_ack_vectors_decode() {
    let ka = key(KEY_A);
    for (input, want_version) in [(ACK2, 4u64), (ACK3, 57)] {
        let wire = unhex(input);
        let (_, plain, _) = read_sealed(&ka, &wire, PLAIN_ACK_BYTES + ECIES_OVERHEAD_BYTES)
            .unwrap()
            .unwrap();
        let ack = decode_eip8_ack(&plain).unwrap();
        assert_eq!(ack.version, want_version);
        assert_eq!(ack.nonce, arr32(NONCE_B));
        assert_eq!(ack.ephemeral_id, pubkey_to_id(&pubkey(&key(EPH_B))));
    }
}

#[test]
fn eip8_responder_secrets_and_ingress_mac_of_foo() {
    let mut rng = rand::thread_rng();
    let mut hs = Handshake::responder_with(key(KEY_B), key(EPH_B), arr32(NONCE_B));
    let est = hs
        .feed(&mut rng, &unhex(AUTH2))
        .unwrap()
        .expect("auth complete");
    assert!(!hs.take_output().is_empty(), "ack queued");
    assert_eq!(est.remote_id, pubkey(&key(KEY_A)));
    assert_eq!(est.remote_version, 4);
    assert_eq!(est.secrets.aes_secret, arr32(WANT_AES));
    assert_eq!(est.secrets.mac_secret, arr32(WANT_MAC));
    let mut ingress = est.secrets.ingress_mac.clone();
    ingress.update(b"foo");
    assert_eq!(ingress.finalize().0, arr32(WANT_FOO_INGRESS));
}

#[test]
fn eip8_initiator_secrets_from_ack() {
    let mut rng = rand::thread_rng();
    let mut hs = Handshake::initiator_with(
        &mut rng,
        key(KEY_A),
        pubkey(&key(KEY_B)),
        key(EPH_A),
        arr32(NONCE_A),
        WireFormat::Eip8,
    );
    let auth = hs.take_output();
    // Our own auth, read by B with the vector's ephemeral key and nonce, yields the vector's
    // secrets: its signature recovers ephemeral key A (ECDSA nonces differ, so the bytes do not).
    let mut b_side = Handshake::responder_with(key(KEY_B), key(EPH_B), arr32(NONCE_B));
    let est_b = b_side.feed(&mut rng, &auth).unwrap().unwrap();
    assert_eq!(est_b.secrets.aes_secret, arr32(WANT_AES));
    // Feed the ack byte by byte: nothing until the last byte.
    let ack = unhex(ACK2);
    for b in &ack[..ack.len() - 1] {
        assert!(hs.feed(&mut rng, &[*b]).unwrap().is_none());
    }
    let est = hs.feed(&mut rng, &ack[ack.len() - 1..]).unwrap().unwrap();
    assert_eq!(est.secrets.aes_secret, arr32(WANT_AES));
    assert_eq!(est.secrets.mac_secret, arr32(WANT_MAC));
    assert!(est.leftover.is_empty());
    assert!(matches!(
        hs.feed(&mut rng, &[0]),
        Err(Devp2pError::HandshakeWrongState { .. })
    ));
}

/// Run a whole handshake in memory; returns (initiator session, responder session).
fn pair(format: WireFormat) -> (MessageConn, MessageConn) {
    let mut rng = rand::thread_rng();
    let (ka, kb) = (SecretKey::new(&mut rng), SecretKey::new(&mut rng));
    let mut init = Handshake::initiator(&mut rng, ka, pubkey(&kb), format);
    let mut resp = Handshake::responder(&mut rng, kb);
    let auth = init.take_output();
    if format == WireFormat::Plain {
        assert_eq!(auth.len(), PLAIN_AUTH_BYTES + ECIES_OVERHEAD_BYTES);
    }
    let est_b = resp.feed(&mut rng, &auth).unwrap().unwrap();
    assert_eq!(est_b.remote_id, pubkey(&ka));
    let ack = resp.take_output();
    if format == WireFormat::Plain {
        assert_eq!(ack.len(), PLAIN_ACK_BYTES + ECIES_OVERHEAD_BYTES);
    }
    let est_a = init.feed(&mut rng, &ack).unwrap().unwrap();
    assert_eq!(est_a.remote_id, pubkey(&kb));
    let a = MessageConn::new(Session::new(est_a.secrets, 1 << 24), MAX_MESSAGE_BYTES);
    let b = MessageConn::new(Session::new(est_b.secrets, 1 << 24), MAX_MESSAGE_BYTES);
    (a, b)
}

fn hello(id: [u8; 64]) -> Hello {
    Hello {
        protocol_version: 5,
        client_id: "catchup-test".into(),
        capabilities: vec![Capability::new("eth", 68)],
        listen_port: 0,
        node_id: id,
    }
}

#[test]
fn full_handshake_and_messages_both_formats() {
    for format in [WireFormat::Eip8, WireFormat::Plain] {
        let (mut a, mut b) = pair(format);
        let mut wire = Vec::new();
        a.write_message(ID_HELLO, &hello([1; 64]).encode(), &mut wire)
            .unwrap();
        b.feed(&wire);
        let (id, payload) = b.next_message().unwrap().unwrap();
        assert_eq!(
            (id, Hello::decode(&payload).unwrap()),
            (ID_HELLO, hello([1; 64]))
        );
        a.set_snappy(true);
        b.set_snappy(true);
        // Many messages in both directions, some large, delivered in odd-sized pieces.
        for i in 0..50u64 {
            let req = EthMessage::GetBlockHeaders {
                request_id: i,
                origin: HashOrNumber::Number(i),
                amount: 192,
                skip: 0,
                reverse: false,
            };
            let mut w = Vec::new();
            a.write_message(0x13, &req.encode(), &mut w).unwrap();
            let big = vec![i as u8; (i as usize) * 1000];
            a.write_message(0x14, &big, &mut w).unwrap();
            for chunk in w.chunks(7 + i as usize) {
                b.feed(chunk);
            }
            let (id, p) = b.next_message().unwrap().unwrap();
            assert_eq!(id, 0x13);
            assert_eq!(EthMessage::decode(68, 3, &p).unwrap(), req);
            assert_eq!(b.next_message().unwrap().unwrap(), (0x14, big));
            assert!(b.next_message().unwrap().is_none());
            let mut back = Vec::new();
            b.write_message(0x02, &[0xc0], &mut back).unwrap();
            a.feed(&back);
            assert_eq!(a.next_message().unwrap().unwrap(), (0x02, vec![0xc0]));
        }
    }
}

#[test]
fn tampered_frames_fail_mac_checks() {
    let (mut a, mut b) = pair(WireFormat::Eip8);
    let mut w = Vec::new();
    a.write_message(0x10, b"payload", &mut w).unwrap();
    let mut bad_header = w.clone();
    bad_header[3] ^= 0x40;
    let (_, mut b2) = (0, {
        let (_, b2) = pair(WireFormat::Eip8);
        b2
    });
    b2.feed(&w);
    assert_eq!(
        b2.next_message(),
        Err(Devp2pError::FrameBadHeaderMac),
        "frame from another session"
    );
    let mut bad_body = w.clone();
    bad_body[40] ^= 1;
    b.feed(&bad_body);
    assert_eq!(b.next_message(), Err(Devp2pError::FrameBadBodyMac));
    let _ = bad_header;
}

#[test]
fn oversized_frame_header_rejected() {
    let mut rng = rand::thread_rng();
    let (ka, kb) = (SecretKey::new(&mut rng), SecretKey::new(&mut rng));
    let mut init = Handshake::initiator(&mut rng, ka, pubkey(&kb), WireFormat::Eip8);
    let mut resp = Handshake::responder(&mut rng, kb);
    let est_b = resp.feed(&mut rng, &init.take_output()).unwrap().unwrap();
    let est_a = init.feed(&mut rng, &resp.take_output()).unwrap().unwrap();
    let mut sender = Session::new(est_a.secrets, 1 << 24);
    let mut receiver = Session::new(est_b.secrets, 1024);
    let mut w = Vec::new();
    sender.write_frame(&vec![0x80; 4096], &mut w).unwrap();
    receiver.feed(&w[..32]);
    assert_eq!(
        receiver.next_frame(),
        Err(Devp2pError::FrameTooLarge {
            size_bytes: 4096,
            limit_bytes: 1024
        })
    );
    let _ = id_to_pubkey(&[0u8; 64]).unwrap_err();
}

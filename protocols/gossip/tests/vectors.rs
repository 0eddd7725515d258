//! Conformance against byte vectors and expected values from the reference
//! implementation's test data (see `common/vectors.rs` for sources).

mod common;

use catchup_gossip::bloom::{self, Bloom, CrdsFilter};
use catchup_gossip::contact_info::{self, ClientVersion, ContactInfo, LegacyContactInfo};
use catchup_gossip::crds::{self, CrdsData, CrdsValue};
use catchup_gossip::ed25519_dalek::SigningKey;
use catchup_gossip::ping_pong::{pong_hash, Ping, Pong};
use catchup_gossip::protocol::{self, Protocol, PruneData};
use catchup_gossip::wire::Reader;
use catchup_gossip::{Hash, Pubkey, Signature};
use common::vectors::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

fn key_from_keypair_bytes(bytes: &[u8; 64]) -> SigningKey {
    let key = SigningKey::from_bytes(bytes[..32].try_into().unwrap());
    assert_eq!(
        key.verifying_key().to_bytes(),
        bytes[32..],
        "keypair bytes are seed || pubkey"
    );
    key
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

#[test]
fn pubkey_of_seed_ones() {
    let key = SigningKey::from_bytes(&[1u8; 32]);
    assert_eq!(Pubkey::of(&key).0, PUBKEY_SEED_ONES);
}

#[test]
fn legacy_contact_info_layout() {
    let key = SigningKey::from_bytes(&[1u8; 32]);
    let mut info = LegacyContactInfo::new(Pubkey::of(&key), 0, 0);
    info.gossip = localhost(1234);
    let mut bytes = Vec::new();
    info.encode(&mut bytes);
    assert_eq!(bytes, LEGACY_CONTACT_INFO);
    let data = CrdsData::LegacyContactInfo(Box::new(info.clone()));
    assert_eq!(data.to_bytes(), LEGACY_CONTACT_INFO_DATA);
    let decoded = CrdsData::decode(&mut Reader::new(&LEGACY_CONTACT_INFO_DATA)).unwrap();
    assert_eq!(decoded, data);
}

#[test]
fn push_message_matches_reference_bytes() {
    // Signing is deterministic (ed25519), so the whole packet is reproducible.
    let key = SigningKey::from_bytes(&[1u8; 32]);
    let id = Pubkey::of(&key);
    let mut info = LegacyContactInfo::new(id, 0, 0);
    info.gossip = localhost(1234);
    let value = CrdsValue::new_signed(CrdsData::LegacyContactInfo(Box::new(info)), &key);
    let message = Protocol::PushMessage(id, vec![value]);
    assert_eq!(message.encode(), PUSH_MESSAGE);
    let decoded = protocol::decode(&PUSH_MESSAGE).unwrap();
    assert_eq!(decoded, message);
    decoded.verify().unwrap();
}

#[test]
fn pull_request_matches_reference_bytes() {
    let key = key_from_keypair_bytes(&PULL_REQUEST_SECRET);
    let mut info = LegacyContactInfo::new(Pubkey::of(&key), 0, 0);
    info.gossip = localhost(1234);
    let value = CrdsValue::new_signed(CrdsData::LegacyContactInfo(Box::new(info)), &key);
    let message = Protocol::PullRequest(CrdsFilter::default(), value);
    assert_eq!(message.encode(), PULL_REQUEST);
    let decoded = protocol::decode(&PULL_REQUEST).unwrap();
    assert_eq!(decoded, message);
    decoded.verify().unwrap();
    // Structurally valid, but today's rules reject it: mask bits below 6 and a legacy
    // contact info as caller.
    assert!(decoded.sanitize().is_err());
}

#[test]
fn mainnet_pull_response_decodes_verifies_and_round_trips() {
    let message = protocol::decode_verified(&MAINNET_PULL_RESPONSE).unwrap();
    assert_eq!(message.encode(), MAINNET_PULL_RESPONSE);
    let Protocol::PullResponse(from, values) = &message else {
        panic!("expected a pull response, got {message:?}");
    };
    assert_eq!(values.len(), 1);
    let CrdsData::ContactInfo(info) = values[0].data() else {
        panic!("expected a contact info");
    };
    assert_eq!(info.pubkey, values[0].origin());
    assert_ne!(*from, Pubkey::default());
    // The embedded contact info is the one recorded on its own.
    let mut bytes = Vec::new();
    info.encode(&mut bytes);
    assert_eq!(bytes, MAINNET_CONTACT_INFO);
    assert!(info.gossip().is_some());
    // A flipped byte in the signed data breaks the signature.
    let mut corrupt = MAINNET_PULL_RESPONSE;
    let last = corrupt.len() - 5;
    corrupt[last] ^= 1;
    assert!(protocol::decode_verified(&corrupt).is_err());
}

#[test]
fn mainnet_contact_info_round_trips() {
    let mut r = Reader::new(&MAINNET_CONTACT_INFO);
    let info = ContactInfo::decode(&mut r).unwrap();
    r.finish().unwrap();
    let mut bytes = Vec::new();
    info.encode(&mut bytes);
    assert_eq!(bytes, MAINNET_CONTACT_INFO);
    assert_eq!(info.sockets().len(), 12);
    assert_eq!(info.addrs(), [IpAddr::V4(Ipv4Addr::new(34, 221, 220, 125))]);
    assert_eq!(info.addrs().len(), 1);
}

#[test]
fn contact_info_matches_reference_bytes() {
    let pubkey = Pubkey::from_base58("4NftWecdfGcYZMJahnAAX5Cw1PLGLZhYFB19wL6AkXqW").unwrap();
    let mut r = Reader::new(&CONTACT_INFO);
    let decoded = ContactInfo::decode(&mut r).unwrap();
    r.finish().unwrap();
    assert_eq!(decoded.pubkey, pubkey);
    assert_eq!(decoded.wallclock, 1_721_060_646_885);
    assert_eq!(decoded.outset, 1_721_060_141_617_172);
    assert_eq!(decoded.shred_version, 0);
    assert_eq!(
        decoded.version,
        ClientVersion {
            major: 2,
            minor: 1,
            patch: 0,
            commit: 0,
            feature_set: 12_366_211,
            client: 3,
        }
    );
    // The sockets the reference printed, by key.
    let expected = [
        (contact_info::SOCKET_TAG_GOSSIP, 20680),
        (contact_info::SOCKET_TAG_SERVE_REPAIR_QUIC, 8006),
        (contact_info::SOCKET_TAG_RPC, 8899),
        (contact_info::SOCKET_TAG_RPC_PUBSUB, 8900),
        (contact_info::SOCKET_TAG_SERVE_REPAIR, 8008),
        (contact_info::SOCKET_TAG_TPU, 8003),
        (contact_info::SOCKET_TAG_TPU_FORWARDS, 8004),
        (contact_info::SOCKET_TAG_TPU_FORWARDS_QUIC, 8010),
        (contact_info::SOCKET_TAG_TPU_QUIC, 8009),
        (contact_info::SOCKET_TAG_TPU_VOTE, 8005),
        (contact_info::SOCKET_TAG_TVU, 8001),
        (contact_info::SOCKET_TAG_TVU_QUIC, 8002),
    ];
    for (key, port) in expected {
        assert_eq!(
            decoded.socket(key),
            Some(localhost(port)),
            "socket key {key}"
        );
    }
    assert_eq!(decoded.rpc(), Some(localhost(8899)));
    assert_eq!(decoded.serve_repair(), Some(localhost(8008)));

    // Built socket by socket, in a scrambled order, it encodes to the same bytes.
    let mut built = ContactInfo::new(pubkey, 1_721_060_646_885, 1_721_060_141_617_172, 0);
    built.version = decoded.version;
    for index in [5usize, 0, 11, 3, 7, 1, 9, 2, 10, 4, 8, 6] {
        let (key, port) = expected[index];
        built.set_socket(key, localhost(port)).unwrap();
    }
    let mut bytes = Vec::new();
    built.encode(&mut bytes);
    assert_eq!(bytes, CONTACT_INFO);
    // Removing and re-adding a socket keeps the encoding.
    built.remove_socket(contact_info::SOCKET_TAG_RPC);
    assert_eq!(built.rpc(), None);
    built
        .set_socket(contact_info::SOCKET_TAG_RPC, localhost(8899))
        .unwrap();
    let mut again = Vec::new();
    built.encode(&mut again);
    assert_eq!(again, CONTACT_INFO);
}

#[test]
fn opaque_kinds_keep_their_exact_bytes() {
    let from = Pubkey::from_base58("6ZsiX6YcwEa93yWtVwGRiK8Ceoxq2VieVh2pvEiUtpCW").unwrap();
    for (tag, body, wallclock) in [
        (
            crds::TAG_RESTART_HEAVIEST_FORK,
            &RESTART_HEAVIEST_FORK[..],
            19u64,
        ),
        (
            crds::TAG_RESTART_LAST_VOTED_FORK_SLOTS,
            &RESTART_LAST_VOTED[..],
            0,
        ),
    ] {
        let mut bytes = tag.to_le_bytes().to_vec();
        bytes.extend_from_slice(body);
        let mut r = Reader::new(&bytes);
        let data = CrdsData::decode(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(data.origin(), from);
        assert_eq!(data.wallclock(), wallclock);
        assert_eq!(data.to_bytes(), bytes);
        // Cut anywhere, it is a typed error.
        for cut in 0..bytes.len() {
            assert!(CrdsData::decode(&mut Reader::new(&bytes[..cut])).is_err());
        }
    }
}

#[test]
fn bloom_matches_reference_bytes() {
    let mut one = Bloom::new(128, vec![1]);
    one.add(&[1]);
    let mut bytes = Vec::new();
    one.encode(&mut bytes);
    assert_eq!(bytes, BLOOM_ONE_KEY);

    let mut three = Bloom::new(128, vec![1, 2, 3]);
    three.add(&[1, 2]);
    three.add(&[3, 4]);
    let mut bytes = Vec::new();
    three.encode(&mut bytes);
    assert_eq!(bytes, BLOOM_THREE_KEYS);
    assert!(three.contains(&[1, 2]));
    assert!(three.contains(&[3, 4]));
    assert_eq!(three.num_bits_set(), 6);

    let decoded = Bloom::decode(&mut Reader::new(&BLOOM_THREE_KEYS)).unwrap();
    assert_eq!(decoded, three);
}

#[test]
fn bitvec_matches_reference_bytes() {
    // A bloom with no keys whose bit vector is the reference one.
    let mut bytes = 0u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&BITVEC_128);
    bytes.extend_from_slice(&126u64.to_le_bytes());
    let bloom = Bloom::decode(&mut Reader::new(&bytes)).unwrap();
    assert_eq!(bloom.num_bits_len(), 128);
    for bit in 0..128 {
        assert_eq!(bloom.bit(bit), Some(bit != 20 && bit != 30), "bit {bit}");
    }
    let mut again = Vec::new();
    bloom.encode(&mut again);
    assert_eq!(again, bytes);
}

#[test]
fn default_filter_matches_reference_bytes() {
    let mut bytes = Vec::new();
    CrdsFilter::default().encode(&mut bytes);
    assert_eq!(bytes, FILTER_DEFAULT);
}

#[test]
fn bloom_sizing_rules_match_reference_values() {
    assert_eq!(Bloom::num_bits(100.2, 1e-5), 2402.0);
    assert_eq!(Bloom::num_keys(100.2, 10.0), 7);
    assert_eq!(bloom::max_items(100.5, 0.1, 10.0), 16.0);
    assert_eq!(bloom::mask_bits(800.0, 100.0), 3);
    assert_eq!(bloom::compute_mask(2, 3), 6_917_529_027_641_081_855);
    let mut first = [0u8; 32];
    first[0] = 1;
    assert_eq!(bloom::hash_as_u64(&Hash(first)), 1);
    let counting: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
    assert_eq!(bloom::hash_as_u64(&Hash(counting)), 0x0807_0605_0403_0201);
    assert_eq!(bloom::min_pull_request_mask_bits(), 6);
    let filter = CrdsFilter::default();
    assert_eq!(filter.mask, bloom::compute_mask(0, filter.mask_bits));
}

#[test]
fn filter_sets_match_reference_sizes() {
    use rand::SeedableRng;
    let mut rng = rand_chacha_rng(7);
    // (num_items, max_bytes) -> buckets 8192 and 16384, capped at 1024 filters.
    for (num_items, max_bytes, mask_bits) in
        [(59_672_788usize, 8196usize, 13u32), (55_345_017, 4098, 14)]
    {
        let filters = bloom::build_filters(&mut rng, std::iter::empty(), num_items, max_bytes);
        assert_eq!(filters.len(), 1024);
        let ones = !0u64 >> mask_bits;
        for filter in &filters {
            assert_eq!(filter.mask_bits, mask_bits);
            assert_eq!(filter.mask & ones, ones);
        }
        let mut masks: Vec<u64> = filters.iter().map(|filter| filter.mask).collect();
        masks.dedup();
        assert_eq!(masks.len(), 1024, "one filter per bucket");
    }
    // Small tables: one bucket in eight gets a filter.
    for num_items in [2_000usize, 10_000, 100_000] {
        let filters = bloom::build_filters(&mut rng, std::iter::empty(), num_items, 128);
        let buckets = 1usize << filters[0].mask_bits;
        assert_eq!(filters.len(), buckets.div_ceil(8));
    }
    // Hashes land in exactly the filter whose mask they match, and it contains them.
    let hashes: Vec<Hash> = (0u32..1024)
        .map(|i| Hash::of(&[&i.to_le_bytes()]))
        .collect();
    let filters = bloom::build_filters(&mut rng, hashes.clone(), 59_672_788, 8196);
    let mut hits = 0;
    for hash in &hashes {
        let matching: Vec<&CrdsFilter> = filters
            .iter()
            .filter(|filter| filter.test_mask(hash))
            .collect();
        assert!(matching.len() <= 1);
        if let Some(filter) = matching.first() {
            hits += 1;
            assert!(filter.contains(hash));
            assert!(filter.filter.contains(&hash.0));
        }
    }
    assert!(hits > 96, "hits {hits}");
    let _ = rand_chacha::ChaCha20Rng::seed_from_u64(0);
}

fn rand_chacha_rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    use rand::SeedableRng;
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}

#[test]
fn ping_signature_matches_reference() {
    let key = key_from_keypair_bytes(&PING_SECRET);
    let ping = Ping::new(&key, [0u8; 32]);
    assert_eq!(ping.signature.0, PING_SIGNATURE);
    ping.verify().unwrap();
    let pong = Pong::new(&key, &ping);
    pong.verify_answers(&ping.token).unwrap();
    // The pong signs sha256("SOLANA_PING_PONG" || token).
    let mut preimage = b"SOLANA_PING_PONG".to_vec();
    preimage.extend_from_slice(&[0u8; 32]);
    assert_eq!(pong.hash, Hash::of(&[&preimage]));
    assert_eq!(pong.hash, pong_hash(&[0u8; 32]));
    assert!(pong.verify_answers(&[1u8; 32]).is_err());
    // Wire form: tag 4 / 5, then from, token or hash, signature.
    let bytes = Protocol::PingMessage(ping.clone()).encode();
    assert_eq!(bytes.len(), 4 + 128);
    assert_eq!(bytes[..4], 4u32.to_le_bytes());
    assert_eq!(bytes[4..36], ping.from.0);
    assert_eq!(bytes[36..68], [0u8; 32]);
    assert_eq!(bytes[68..], PING_SIGNATURE);
    let pong_bytes = Protocol::PongMessage(pong.clone()).encode();
    assert_eq!(pong_bytes[..4], 5u32.to_le_bytes());
    assert_eq!(pong_bytes[36..68], pong.hash.0);
    assert_eq!(
        protocol::decode_verified(&pong_bytes).unwrap(),
        Protocol::PongMessage(pong)
    );
}

#[test]
fn prune_signatures_match_reference() {
    // Unprefixed: no prunes, destination = self, wallclock 0.
    let key = key_from_keypair_bytes(&PRUNE_SECRET);
    let me = Pubkey::of(&key);
    let data = PruneData::new_signed(&key, vec![], me, 0);
    assert_eq!(data.signature.0, PRUNE_SIGNATURE);
    data.verify().unwrap();

    // Prefixed, with the reference's expected signature.
    let key = key_from_keypair_bytes(&PRUNE_PREFIX_SECRET);
    assert_eq!(
        Pubkey::of(&key),
        Pubkey::from_base58("5zYQ7PqYa81fw3rXAYUtmUcoL9TFwG67wcE9LW8hwtfE").unwrap()
    );
    let expected = bs58::decode(
        "XjXQxG6vhrfPPQtddCgkfmKsH69YoUvG6GTrQfvmB73GUTjXCL5VDBE3Na94e4uT2MWPTBP3cinVdpHdBb9zAxY",
    )
    .into_vec()
    .unwrap();
    let mut data = PruneData {
        pubkey: Pubkey::of(&key),
        prunes: [
            "1111111QLbz7JHiBTspS962RLKV8GndWFwiEaqKM",
            "1111111ogCyDbaRMvkdsHB3qfdyFYaG1WtRUAfdh",
            "11111112D1oxKts8YPdTJRG5FzxTNpMtWmq8hkVx3",
        ]
        .iter()
        .map(|text| Pubkey::from_base58(text).unwrap())
        .collect(),
        signature: Signature(expected.clone().try_into().unwrap()),
        destination: Pubkey::from_base58("11111112cMQwSC9qirWGjZM6gLGwW69X22mqwLLGP").unwrap(),
        wallclock: 1_736_887_210_868,
    };
    data.verify().unwrap();
    let signed = Signature::sign(&key, &data.signable_bytes(true));
    assert_eq!(signed.0.to_vec(), expected);
    data.wallclock += 1;
    assert!(data.verify().is_err());
}

#[test]
fn prune_signable_layout() {
    // Layout documented by the reference's signable-bytes test, built here by hand.
    let data = PruneData {
        pubkey: Pubkey([1u8; 32]),
        prunes: vec![Pubkey([2u8; 32]), Pubkey([3u8; 32])],
        signature: Signature([4u8; 64]),
        destination: Pubkey([5u8; 32]),
        wallclock: 0x0102_0304_0506_0708,
    };
    let mut expected = vec![1u8; 32];
    expected.extend_from_slice(&2u64.to_le_bytes());
    expected.extend_from_slice(&[2u8; 32]);
    expected.extend_from_slice(&[3u8; 32]);
    expected.extend_from_slice(&[5u8; 32]);
    expected.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(data.signable_bytes(false), expected);
    let prefix = b"\xffSOLANA_PRUNE_DATA";
    let mut with_prefix = (prefix.len() as u64).to_le_bytes().to_vec();
    with_prefix.extend_from_slice(prefix);
    with_prefix.extend_from_slice(&expected);
    assert_eq!(data.signable_bytes(true), with_prefix);
}

#[test]
fn message_header_sizes() {
    // An empty push message or pull response is 44 bytes: what the payload bound leaves.
    let empty = Protocol::PushMessage(Pubkey::default(), vec![]).encode();
    assert_eq!(empty.len(), 44);
    assert_eq!(protocol::PUSH_MESSAGE_MAX_PAYLOAD_SIZE, 1232 - 44);
    let empty = Protocol::PullResponse(Pubkey::default(), vec![]).encode();
    assert_eq!(empty.len(), 44);
}

//! CRDS values: sign/verify, hashes, and the kinds carried as exact bytes. The bodies of
//! the uninterpreted kinds are built here by hand from their documented field layouts.

use catchup_gossip::contact_info::{ContactInfo, SOCKET_TAG_GOSSIP};
use catchup_gossip::crds::{self, CrdsData, CrdsValue, NodeInstance, SnapshotHashes, Version};
use catchup_gossip::ed25519_dalek::SigningKey;
use catchup_gossip::protocol::{self, Protocol, PruneData, MAX_PRUNE_DATA_NODES};
use catchup_gossip::wire::Reader;
use catchup_gossip::{Hash, Pubkey, PACKET_DATA_SIZE};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn u64le(value: u64) -> [u8; 8] {
    value.to_le_bytes()
}

/// tag, then body; decoded as a CRDS data value.
fn opaque(tag: u32, body: &[u8]) -> CrdsData {
    let mut bytes = tag.to_le_bytes().to_vec();
    bytes.extend_from_slice(body);
    let mut r = Reader::new(&bytes);
    let data = CrdsData::decode(&mut r).unwrap_or_else(|e| panic!("tag {tag}: {e}"));
    r.finish().unwrap();
    assert_eq!(data.to_bytes(), bytes, "tag {tag} re-encodes");
    for cut in 0..bytes.len() {
        assert!(CrdsData::decode(&mut Reader::new(&bytes[..cut])).is_err());
    }
    data
}

fn vote_body(index: u8, from: &Pubkey, wallclock: u64) -> Vec<u8> {
    let mut body = vec![index];
    body.extend_from_slice(&from.0);
    // Legacy transaction: short_vec of signatures, header, short_vec of keys,
    // blockhash, short_vec of instructions (program index, short_vec accounts, short_vec data).
    body.push(1);
    body.extend_from_slice(&[0x11; 64]);
    body.extend_from_slice(&[1, 0, 1]);
    body.push(2);
    body.extend_from_slice(&from.0);
    body.extend_from_slice(&[0x22; 32]);
    body.extend_from_slice(&[0x33; 32]);
    body.push(1);
    body.push(1);
    body.extend_from_slice(&[2, 0, 0]);
    body.push(5);
    body.extend_from_slice(&[9, 8, 7, 6, 5]);
    body.extend_from_slice(&u64le(wallclock));
    body
}

#[test]
fn uninterpreted_kinds_round_trip_and_sign() {
    let signer = key(21);
    let from = Pubkey::of(&signer);
    let mut lowest = vec![0u8];
    lowest.extend_from_slice(&from.0);
    lowest.extend_from_slice(&u64le(0)); // root
    lowest.extend_from_slice(&u64le(42)); // lowest
    lowest.extend_from_slice(&u64le(0)); // slots
    lowest.extend_from_slice(&u64le(0)); // stash
    lowest.extend_from_slice(&u64le(1_001));

    let mut epoch_slots = vec![2u8];
    epoch_slots.extend_from_slice(&from.0);
    epoch_slots.extend_from_slice(&u64le(2));
    epoch_slots.extend_from_slice(&0u32.to_le_bytes()); // Flate2
    epoch_slots.extend_from_slice(&u64le(100));
    epoch_slots.extend_from_slice(&u64le(16));
    epoch_slots.extend_from_slice(&u64le(3));
    epoch_slots.extend_from_slice(&[1, 2, 3]);
    epoch_slots.extend_from_slice(&1u32.to_le_bytes()); // Uncompressed
    epoch_slots.extend_from_slice(&u64le(200));
    epoch_slots.extend_from_slice(&u64le(16));
    epoch_slots.push(1);
    epoch_slots.extend_from_slice(&u64le(2));
    epoch_slots.extend_from_slice(&[0xff, 0x0f]);
    epoch_slots.extend_from_slice(&u64le(16));
    epoch_slots.extend_from_slice(&u64le(1_002));

    let mut duplicate = 5u16.to_le_bytes().to_vec();
    duplicate.extend_from_slice(&from.0);
    duplicate.extend_from_slice(&u64le(1_003));
    duplicate.extend_from_slice(&u64le(77)); // slot
    duplicate.extend_from_slice(&9u32.to_le_bytes()); // shred index
    duplicate.extend_from_slice(&[0xa5, 3, 1]); // type, chunks, chunk index
    duplicate.extend_from_slice(&u64le(4));
    duplicate.extend_from_slice(&[4, 3, 2, 1]);

    let mut accounts = from.0.to_vec();
    accounts.extend_from_slice(&u64le(1));
    accounts.extend_from_slice(&u64le(500));
    accounts.extend_from_slice(&[0x44; 32]);
    accounts.extend_from_slice(&u64le(1_004));

    let mut legacy_version = from.0.to_vec();
    legacy_version.extend_from_slice(&u64le(1_005));
    legacy_version.extend_from_slice(&[1, 0, 14, 0, 17, 0]);
    legacy_version.push(1);
    legacy_version.extend_from_slice(&0xdead_beefu32.to_le_bytes());

    let cases = [
        (crds::TAG_VOTE, vote_body(3, &from, 1_000), 3u16, 1_000u64),
        (crds::TAG_LOWEST_SLOT, lowest, 0, 1_001),
        (crds::TAG_EPOCH_SLOTS, epoch_slots, 2, 1_002),
        (crds::TAG_DUPLICATE_SHRED, duplicate, 5, 1_003),
        (crds::TAG_ACCOUNTS_HASHES, accounts.clone(), 0, 1_004),
        (crds::TAG_LEGACY_SNAPSHOT_HASHES, accounts, 0, 1_004),
        (crds::TAG_LEGACY_VERSION, legacy_version, 0, 1_005),
    ];
    let mut values = Vec::new();
    for (tag, body, index, wallclock) in cases {
        let data = opaque(tag, &body);
        assert_eq!(data.origin(), from, "tag {tag}");
        assert_eq!(data.wallclock(), wallclock, "tag {tag}");
        assert_eq!(data.label().index, index, "tag {tag}");
        data.sanitize().unwrap();
        values.push(CrdsValue::new_signed(data, &signer));
    }
    // Carried through a push message, every signature still verifies.
    for message in protocol::push_messages(from, values.clone()) {
        let bytes = message.encode_packet().unwrap();
        let decoded = protocol::decode_verified(&bytes).unwrap();
        assert_eq!(decoded.encode(), bytes);
    }
    // Index bounds: a vote index of 32 and a lowest-slot index of 1 fail sanitize.
    assert!(opaque(crds::TAG_VOTE, &vote_body(32, &from, 1))
        .sanitize()
        .is_err());
    let mut bad_lowest = vec![1u8];
    bad_lowest.extend_from_slice(&from.0);
    bad_lowest.extend_from_slice(&[0u8; 40]);
    assert!(opaque(crds::TAG_LOWEST_SLOT, &bad_lowest)
        .sanitize()
        .is_err());
}

#[test]
fn signed_values_verify_and_hash_their_encoding() {
    let signer = key(22);
    let from = Pubkey::of(&signer);
    let mut info = ContactInfo::new(from, 1_700_000_000_000, 1_700_000_000_000_000, 5);
    info.set_socket(SOCKET_TAG_GOSSIP, "10.1.2.3:8001".parse().unwrap())
        .unwrap();
    let datas = [
        CrdsData::ContactInfo(info),
        CrdsData::SnapshotHashes(SnapshotHashes {
            from,
            full: (1_000, Hash([1; 32])),
            incremental: vec![(1_100, Hash([2; 32])), (1_200, Hash([3; 32]))],
            wallclock: 1_700_000_000_000,
        }),
        CrdsData::Version(Version {
            from,
            wallclock: 1_700_000_000_000,
            major: 1,
            minor: 18,
            patch: 3,
            commit: Some(0x0102_0304),
            feature_set: 42,
        }),
        CrdsData::NodeInstance(NodeInstance {
            from,
            wallclock: 1_700_000_000_000,
            timestamp: 1_699_999_999_000,
            token: 77,
        }),
    ];
    for data in datas {
        let value = CrdsValue::new_signed(data.clone(), &signer);
        value.verify().unwrap();
        assert_eq!(value.encoded()[..64], value.signature().0);
        assert_eq!(value.encoded()[64..], data.to_bytes());
        assert_eq!(*value.hash(), Hash::of(&[value.encoded()]));
        let decoded = CrdsValue::from_bytes(value.encoded()).unwrap();
        assert_eq!(decoded, value);
        // Any flipped bit of the signed part breaks the signature or the decoding.
        for at in [0usize, 63, 64, 70, value.encoded_len() - 1] {
            let mut bytes = value.encoded().to_vec();
            bytes[at] ^= 0x01;
            if let Ok(tampered) = CrdsValue::from_bytes(&bytes) {
                assert!(tampered.verify().is_err(), "flip at {at} still verifies");
            }
        }
        // Signed by anyone else, it does not verify.
        let forged = CrdsValue::new_signed(data, &key(23));
        assert!(forged.verify().is_err());
    }
}

#[test]
fn packet_bounds_of_the_reference() {
    // 25 incremental snapshot hashes fit one push message and one pull response.
    let signer = key(24);
    let from = Pubkey::of(&signer);
    let hashes = CrdsValue::new_signed(
        CrdsData::SnapshotHashes(SnapshotHashes {
            from,
            full: (0, Hash::default()),
            incremental: vec![(0, Hash::default()); crds::MAX_INCREMENTAL_SNAPSHOT_HASHES],
            wallclock: 1,
        }),
        &signer,
    );
    assert!(Protocol::PushMessage(from, vec![hashes.clone()])
        .encode_packet()
        .is_ok());
    assert!(Protocol::PullResponse(from, vec![hashes])
        .encode_packet()
        .is_ok());
    // 32 pruned origins fit a prune message, 33 do not.
    let prune = |count: usize| {
        let prunes = (0..count).map(|i| Pubkey([i as u8; 32])).collect();
        Protocol::PruneMessage(
            from,
            PruneData::new_signed(&signer, prunes, Pubkey([9; 32]), 1),
        )
    };
    assert!(prune(MAX_PRUNE_DATA_NODES).encode_packet().is_ok());
    assert!(prune(MAX_PRUNE_DATA_NODES + 1).encode().len() > PACKET_DATA_SIZE);
    // A prune message's sender must be its signer.
    let Protocol::PruneMessage(_, data) = prune(1) else {
        unreachable!()
    };
    assert!(Protocol::PruneMessage(Pubkey([1; 32]), data.clone())
        .sanitize()
        .is_err());
    Protocol::PruneMessage(from, data).sanitize().unwrap();
}

#[test]
fn split_keeps_order_and_drops_only_oversize_values() {
    let signer = key(25);
    let from = Pubkey::of(&signer);
    let values: Vec<CrdsValue> = (0..40u64)
        .map(|i| {
            CrdsValue::new_signed(
                CrdsData::NodeInstance(NodeInstance {
                    from,
                    wallclock: i,
                    timestamp: i,
                    token: i,
                }),
                &signer,
            )
        })
        .collect();
    let chunks = protocol::split_values(protocol::PUSH_MESSAGE_MAX_PAYLOAD_SIZE, values.clone());
    let flat: Vec<CrdsValue> = chunks.iter().flatten().cloned().collect();
    assert_eq!(flat, values);
    for chunk in &chunks {
        let size: usize = chunk.iter().map(CrdsValue::encoded_len).sum();
        assert!(size <= protocol::PUSH_MESSAGE_MAX_PAYLOAD_SIZE);
        let packet = Protocol::PushMessage(from, chunk.clone()).encode();
        assert_eq!(packet.len(), 44 + size);
    }
    // A value larger than a payload is dropped.
    let huge = CrdsValue::new_signed(
        CrdsData::SnapshotHashes(SnapshotHashes {
            from,
            full: (0, Hash::default()),
            incremental: vec![(1, Hash::default()); 40],
            wallclock: 0,
        }),
        &signer,
    );
    assert!(protocol::split_values(protocol::PUSH_MESSAGE_MAX_PAYLOAD_SIZE, vec![huge]).is_empty());
}

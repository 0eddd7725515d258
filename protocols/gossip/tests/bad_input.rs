//! Hostile and broken input: every rejection is a typed error, never a panic, and
//! whatever is accepted re-encodes to the very same bytes.

mod common;

use catchup_gossip::bloom::{Bloom, CrdsFilter, MAX_BLOOM_BITS};
use catchup_gossip::contact_info::{ContactInfo, ContactInfoError, SOCKET_TAG_GOSSIP};
use catchup_gossip::crds::{CrdsData, CrdsValue, SnapshotHashes};
use catchup_gossip::ed25519_dalek::SigningKey;
use catchup_gossip::protocol::{self, Protocol};
use catchup_gossip::wire::Reader;
use catchup_gossip::{
    check_shred_version, check_wallclock_not_future, GossipError, Hash, Pubkey, MAX_WALLCLOCK,
    PACKET_DATA_SIZE,
};
use common::vectors::*;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn contact(key: &SigningKey, wallclock: u64, shred_version: u16) -> ContactInfo {
    let mut info = ContactInfo::new(Pubkey::of(key), wallclock, 1, shred_version);
    info.set_socket(
        SOCKET_TAG_GOSSIP,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 8001),
    )
    .unwrap();
    info
}

/// Valid packets of every message kind, to truncate and mutate.
fn corpus() -> Vec<Vec<u8>> {
    let signer = key(3);
    let me = Pubkey::of(&signer);
    let info = CrdsValue::new_signed(CrdsData::ContactInfo(contact(&signer, 5, 7)), &signer);
    let hashes = CrdsValue::new_signed(
        CrdsData::SnapshotHashes(SnapshotHashes {
            from: me,
            full: (100, Hash([9; 32])),
            incremental: vec![(150, Hash([8; 32])), (175, Hash([7; 32]))],
            wallclock: 5,
        }),
        &signer,
    );
    let mut filter = CrdsFilter {
        filter: Bloom::new(512, vec![11, 22, 33]),
        mask: !0,
        mask_bits: 6,
    };
    filter.add(info.hash());
    // A vote: index, origin, a legacy transaction, wallclock (carried as exact bytes).
    let mut vote = 1u32.to_le_bytes().to_vec();
    vote.push(3);
    vote.extend_from_slice(&me.0);
    vote.push(1);
    vote.extend_from_slice(&[0x11; 64]);
    vote.extend_from_slice(&[1, 0, 1, 2]);
    vote.extend_from_slice(&me.0);
    vote.extend_from_slice(&[0x22; 64]);
    vote.extend_from_slice(&[1, 1, 2, 0, 0, 3, 9, 8, 7]);
    vote.extend_from_slice(&5u64.to_le_bytes());
    let vote = CrdsData::decode(&mut Reader::new(&vote)).unwrap();
    let vote = CrdsValue::new_signed(vote, &signer);
    let ping = catchup_gossip::ping_pong::Ping::new(&signer, [5; 32]);
    let pong = catchup_gossip::ping_pong::Pong::new(&signer, &ping);
    vec![
        MAINNET_PULL_RESPONSE.to_vec(),
        PUSH_MESSAGE.to_vec(),
        PULL_REQUEST.to_vec(),
        Protocol::PullRequest(filter, info.clone()).encode(),
        Protocol::PushMessage(me, vec![info.clone(), hashes.clone()]).encode(),
        Protocol::PullResponse(me, vec![vote, hashes.clone()]).encode(),
        Protocol::PruneMessage(
            me,
            protocol::PruneData::new_signed(&signer, vec![Pubkey([1; 32])], Pubkey([2; 32]), 9),
        )
        .encode(),
        Protocol::PingMessage(ping).encode(),
        Protocol::PongMessage(pong).encode(),
    ]
}

#[test]
fn every_truncation_is_a_typed_error() {
    for packet in corpus() {
        assert!(protocol::decode(&packet).is_ok());
        for cut in 0..packet.len() {
            assert!(
                protocol::decode(&packet[..cut]).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
    }
}

#[test]
fn trailing_and_oversize_packets_are_rejected() {
    let mut packet = PUSH_MESSAGE.to_vec();
    packet.push(0);
    assert_eq!(
        protocol::decode(&packet),
        Err(GossipError::TrailingBytes { count: 1 })
    );
    let big = vec![0u8; PACKET_DATA_SIZE + 1];
    assert_eq!(
        protocol::decode(&big),
        Err(GossipError::Oversize {
            size_bytes: PACKET_DATA_SIZE + 1
        })
    );
    // Building one too big is refused as well.
    let signer = key(4);
    let values: Vec<CrdsValue> = (0..12)
        .map(|i| CrdsValue::new_signed(CrdsData::ContactInfo(contact(&signer, i, 0)), &signer))
        .collect();
    let message = Protocol::PushMessage(Pubkey::of(&signer), values.clone());
    assert!(matches!(
        message.encode_packet(),
        Err(GossipError::Oversize { .. })
    ));
    // Split, every piece fits and nothing is lost.
    let pieces = protocol::push_messages(Pubkey::of(&signer), values.clone());
    assert!(pieces.len() > 1);
    let mut carried = Vec::new();
    for piece in &pieces {
        let bytes = piece.encode_packet().unwrap();
        let Protocol::PushMessage(_, part) = protocol::decode_verified(&bytes).unwrap() else {
            panic!("not a push message");
        };
        carried.extend(part);
    }
    assert_eq!(carried, values);
}

#[test]
fn unknown_tags_are_typed_errors() {
    let mut packet = PUSH_MESSAGE.to_vec();
    packet[..4].copy_from_slice(&6u32.to_le_bytes());
    assert_eq!(
        protocol::decode(&packet),
        Err(GossipError::UnknownTag {
            what: "gossip message",
            tag: 6
        })
    );
    // The CRDS kind tag sits after tag, pubkey, count and signature.
    let mut packet = PUSH_MESSAGE.to_vec();
    packet[4 + 32 + 8 + 64..4 + 32 + 8 + 64 + 4].copy_from_slice(&14u32.to_le_bytes());
    assert_eq!(
        protocol::decode(&packet),
        Err(GossipError::UnknownTag {
            what: "crds data",
            tag: 14
        })
    );
}

#[test]
fn bad_signatures_are_rejected() {
    let mut packet = PUSH_MESSAGE.to_vec();
    packet[4 + 32 + 8] ^= 0x40;
    let message = protocol::decode(&packet).unwrap();
    assert_eq!(
        message.verify(),
        Err(GossipError::BadSignature { what: "crds value" })
    );
    assert!(protocol::decode_verified(&packet).is_err());
    // A value signed by someone other than its origin.
    let origin = key(5);
    let forger = key(6);
    let data = CrdsData::ContactInfo(contact(&origin, 1, 0));
    let forged = CrdsValue::new_signed(data, &forger);
    assert!(forged.verify().is_err());
}

#[test]
fn huge_length_prefixes_are_bounded() {
    // A push message claiming u64::MAX values.
    let mut packet = 2u32.to_le_bytes().to_vec();
    packet.extend_from_slice(&[7; 32]);
    packet.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        protocol::decode(&packet),
        Err(GossipError::TooMany { .. })
    ));
    // A bloom with a billion keys.
    let mut packet = 0u32.to_le_bytes().to_vec();
    packet.extend_from_slice(&1_000_000_000u64.to_le_bytes());
    assert!(matches!(
        protocol::decode(&packet),
        Err(GossipError::TooMany {
            what: "bloom keys",
            ..
        })
    ));
    // A bloom whose bit length is absurd, and one whose length disagrees with its blocks.
    for (blocks, num_bits) in [(2u64, u64::MAX), (2, MAX_BLOOM_BITS + 1), (2, 64), (2, 200)] {
        let mut bytes = 0u64.to_le_bytes().to_vec();
        bytes.push(1);
        bytes.extend_from_slice(&blocks.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 16]);
        bytes.extend_from_slice(&num_bits.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        assert!(
            Bloom::decode(&mut Reader::new(&bytes)).is_err(),
            "{blocks} blocks of {num_bits} bits accepted"
        );
    }
    // An empty block list spelled as Some(empty) is not the canonical None.
    let mut bytes = 0u64.to_le_bytes().to_vec();
    bytes.push(1);
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    assert!(Bloom::decode(&mut Reader::new(&bytes)).is_err());
    // A bloom without bits answers "present" for everything (nothing gets sent).
    let empty = Bloom::new(0, vec![1, 2]);
    assert!(empty.contains(b"anything"));
}

#[test]
fn pull_requests_need_enough_mask_bits_and_a_contact_info() {
    let signer = key(8);
    let info = CrdsValue::new_signed(CrdsData::ContactInfo(contact(&signer, 5, 0)), &signer);
    let coarse = CrdsFilter {
        filter: Bloom::new(64, vec![1]),
        mask: !0,
        mask_bits: 5,
    };
    let message = Protocol::PullRequest(coarse.clone(), info.clone());
    assert!(message.sanitize().is_err());
    let fine = CrdsFilter {
        mask_bits: 6,
        ..coarse
    };
    Protocol::PullRequest(fine.clone(), info)
        .sanitize()
        .unwrap();
    let hashes = CrdsValue::new_signed(
        CrdsData::SnapshotHashes(SnapshotHashes {
            from: Pubkey::of(&signer),
            full: (1, Hash::default()),
            incremental: vec![],
            wallclock: 5,
        }),
        &signer,
    );
    assert!(Protocol::PullRequest(fine, hashes).sanitize().is_err());
}

#[test]
fn wallclock_and_shred_version_rules() {
    assert!(check_wallclock_not_future(1_000, 1_000, 0).is_ok());
    assert!(check_wallclock_not_future(1_500, 1_000, 500).is_ok());
    assert_eq!(
        check_wallclock_not_future(1_501, 1_000, 500),
        Err(GossipError::WallclockInFuture {
            wallclock_ms: 1_501,
            ahead_ms: 501,
            limit_ms: 500
        })
    );
    assert!(matches!(
        check_wallclock_not_future(MAX_WALLCLOCK, MAX_WALLCLOCK, 0),
        Err(GossipError::WallclockOutOfBounds { .. })
    ));
    assert!(check_shred_version(7, 7).is_ok());
    assert!(check_shred_version(7, 0).is_ok());
    assert_eq!(
        check_shred_version(8, 7),
        Err(GossipError::WrongShredVersion { got: 8, want: 7 })
    );
    // Values with out-of-bounds wallclocks or slots fail sanitize.
    let signer = key(9);
    let info = contact(&signer, MAX_WALLCLOCK, 0);
    assert!(CrdsData::ContactInfo(info).sanitize().is_err());
    let backwards = CrdsData::SnapshotHashes(SnapshotHashes {
        from: Pubkey::of(&signer),
        full: (100, Hash::default()),
        incremental: vec![(100, Hash::default())],
        wallclock: 1,
    });
    assert!(backwards.sanitize().is_err());
}

fn contact_bytes(addrs: &[IpAddr], sockets: &[(u8, u8, u16)]) -> Vec<u8> {
    let mut out = vec![4u8; 32];
    out.push(1); // wallclock varint
    out.extend_from_slice(&0u64.to_le_bytes()); // outset
    out.extend_from_slice(&0u16.to_le_bytes()); // shred version
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version
    out.push(addrs.len() as u8);
    for addr in addrs {
        match addr {
            IpAddr::V4(v4) => {
                out.extend_from_slice(&0u32.to_le_bytes());
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.extend_from_slice(&1u32.to_le_bytes());
                out.extend_from_slice(&v6.octets());
            }
        }
    }
    out.push(sockets.len() as u8);
    for (key, index, offset) in sockets {
        out.push(*key);
        out.push(*index);
        let mut value = *offset;
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    out.push(0); // extensions
    out
}

#[test]
fn inconsistent_contact_infos_are_rejected() {
    let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let decode = |bytes: Vec<u8>| ContactInfo::decode(&mut Reader::new(&bytes));
    assert!(decode(contact_bytes(&[a, b], &[(0, 0, 8000), (1, 1, 1)])).is_ok());
    let cases = [
        (
            contact_bytes(&[a, a], &[(0, 0, 8000), (1, 1, 1)]),
            ContactInfoError::DuplicateIpAddr(a),
        ),
        (
            contact_bytes(&[a], &[(0, 0, 8000), (0, 0, 1)]),
            ContactInfoError::DuplicateSocket(0),
        ),
        (
            contact_bytes(&[a], &[(0, 1, 8000)]),
            ContactInfoError::InvalidIpAddrIndex {
                index: 1,
                num_addrs: 1,
            },
        ),
        (
            contact_bytes(&[a, b], &[(0, 0, 8000)]),
            ContactInfoError::UnusedIpAddr(b),
        ),
        (
            contact_bytes(&[v6], &[(0, 0, 8000)]),
            ContactInfoError::Ipv6IpAddr(v6),
        ),
        (
            contact_bytes(&[a], &[(0, 0, 60000), (1, 0, 60000)]),
            ContactInfoError::PortOffsetsOverflow,
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(decode(bytes), Err(GossipError::ContactInfo(expected)));
    }
    // A varint spelled with a redundant trailing zero byte is not canonical.
    let mut bytes = contact_bytes(&[a], &[(0, 0, 8000)]);
    bytes[32] = 0x81;
    bytes.insert(33, 0x00);
    assert!(matches!(
        decode(bytes),
        Err(GossipError::NonCanonical { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
        if let Ok(message) = protocol::decode(&bytes) {
            prop_assert_eq!(message.encode(), bytes.clone());
            let _ = message.sanitize();
            let _ = message.verify();
        }
    }

    #[test]
    fn mutated_packets_never_panic(
        which in 0usize..9,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
        insert in proptest::option::of((any::<usize>(), any::<u8>())),
    ) {
        let corpus = corpus();
        let mut bytes = corpus[which % corpus.len()].clone();
        for (at, mask) in flips {
            let at = at % bytes.len();
            bytes[at] ^= mask;
        }
        if let Some((at, byte)) = insert {
            let at = at % (bytes.len() + 1);
            bytes.insert(at, byte);
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % (bytes.len() + 1));
        }
        if let Ok(message) = protocol::decode(&bytes) {
            // Whatever is accepted is canonical: it re-encodes to the same bytes.
            prop_assert_eq!(message.encode(), bytes.clone());
            let _ = message.sanitize();
            let _ = message.verify();
        }
    }
}

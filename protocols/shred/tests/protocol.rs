//! Generated ledgers, repair messages, the sans-IO server, and random-bytes decoding.

use catchup_shred::ledger::generate_ledger;
use catchup_shred::repair::*;
use catchup_shred::serve::{MemLedger, ServeRepair};
use catchup_shred::{fec, split_repair_response, Accept, Shred, ShredError, SlotAssembler};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

fn key(b: u8) -> SigningKey {
    SigningKey::from_bytes(&[b; 32])
}

#[test]
fn generated_ledger_verifies_completes_and_recovers() {
    let leader = key(1);
    let pk = leader.verifying_key().to_bytes();
    let raw = generate_ledger(&leader, 100, 3, 40, 9);
    // 40 data shreds = sets of 32 and 8, each with as many coding shreds
    assert_eq!(raw.len(), 3 * 80);
    let mut slots: Vec<SlotAssembler> = (100..103).map(SlotAssembler::new).collect();
    for b in &raw {
        let s = Shred::from_bytes(b).unwrap();
        s.verify(&pk).unwrap();
        assert!(s.verify(&key(2).verifying_key().to_bytes()).is_err());
        slots[(s.slot() - 100) as usize].insert(s).unwrap();
    }
    for a in &slots {
        assert!(a.is_complete());
        assert_eq!(a.last_index(), Some(39));
    }
    // recovery through the assembler: drop data shreds 0..20 of slot 101
    let mut a = SlotAssembler::new(101);
    for b in &raw {
        let s = Shred::from_bytes(b).unwrap();
        if s.slot() == 101 && !(s.is_data() && s.index() < 20) {
            a.insert(s).unwrap();
        }
    }
    assert!(!a.is_complete());
    assert_eq!(a.recover(), 20);
    assert!(a.is_complete());
    // signature flip is caught
    let mut bad = raw[3].clone();
    bad[10] ^= 1;
    assert!(matches!(
        Shred::from_bytes(&bad).unwrap().verify(&pk),
        Err(ShredError::Signature { .. })
    ));
    // FEC recovery of generated set matches
    let set: Vec<Shred> = raw[..64]
        .iter()
        .map(|b| Shred::from_bytes(b).unwrap())
        .filter(|s| !s.is_data() || s.index() % 2 == 1)
        .collect();
    let rec = fec::recover_data(&set, Accept::CURRENT).unwrap();
    assert_eq!(rec.len(), 16);
    for r in rec {
        assert_eq!(r.payload(), &raw[r.index() as usize][..]);
    }
}

#[derive(serde::Serialize)]
enum Mirror {
    _L0,
    _L1,
    _L2,
    _L3,
    _L4,
    _L5,
    _L6,
    _Pong,
    WindowIndex {
        header: MirrorHeader,
        slot: u64,
        shred_index: u64,
    },
}
#[derive(serde::Serialize)]
struct MirrorHeader {
    signature: ([u8; 32], [u8; 32]),
    sender: [u8; 32],
    recipient: [u8; 32],
    timestamp: u64,
    nonce: u32,
}

#[test]
fn request_is_bincode_compatible_signed_and_checked() {
    let me = key(3);
    let server = key(4);
    let sid = pubkey_of(&server);
    let bytes = RepairRequest::signed(
        &me,
        sid,
        1_000_000,
        77,
        RequestKind::WindowIndex {
            slot: 5,
            shred_index: 9,
        },
    );
    assert_eq!(bytes.len(), 160);
    let RepairProtocol::Request(req) = decode_repair_protocol(&bytes).unwrap() else {
        panic!("request")
    };
    let sig = req.header.signature;
    let mirror = Mirror::WindowIndex {
        header: MirrorHeader {
            signature: (sig[..32].try_into().unwrap(), sig[32..].try_into().unwrap()),
            sender: pubkey_of(&me),
            recipient: sid,
            timestamp: 1_000_000,
            nonce: 77,
        },
        slot: 5,
        shred_index: 9,
    };
    assert_eq!(bincode::serialize(&mirror).unwrap(), bytes);
    req.verify(&bytes, &sid, 1_000_000 + 5_000).unwrap();
    assert_eq!(
        req.verify(&bytes, &pubkey_of(&me), 1_000_000),
        Err(RepairError::WrongRecipient)
    );
    assert!(matches!(
        req.verify(&bytes, &sid, 1_000_000 + SIGNED_REPAIR_TIME_WINDOW_MS + 1),
        Err(RepairError::Stale { .. })
    ));
    let mut tampered = bytes.clone();
    tampered[150] ^= 1;
    let RepairProtocol::Request(t) = decode_repair_protocol(&tampered).unwrap() else {
        panic!()
    };
    assert_eq!(
        t.verify(&tampered, &sid, 1_000_000),
        Err(RepairError::Signature {
            what: "repair request"
        })
    );
    let mut retired = bytes.clone();
    retired[0] = 3;
    assert_eq!(
        decode_repair_protocol(&retired),
        Err(RepairError::Retired { tag: 3 })
    );
    for kind in [
        RequestKind::HighestWindowIndex {
            slot: 1,
            shred_index: 2,
        },
        RequestKind::Orphan { slot: 3 },
        RequestKind::AncestorHashes { slot: 4 },
    ] {
        let b = RepairRequest::signed(&me, sid, 1, 2, kind);
        let RepairProtocol::Request(r) = decode_repair_protocol(&b).unwrap() else {
            panic!()
        };
        assert_eq!(r.kind, kind);
        r.verify(&b, &sid, 1).unwrap();
    }
}

#[test]
fn server_pings_then_serves_after_pong() {
    let leader = key(1);
    let raw = generate_ledger(&leader, 10, 3, 5, 1);
    let mut ledger = MemLedger::new();
    for b in &raw {
        ledger.insert(&Shred::from_bytes(b).unwrap());
    }
    let server_key = key(5);
    let sid = pubkey_of(&server_key);
    let mut server: ServeRepair<u32> = ServeRepair::new(server_key, 1);
    let me = key(6);
    let peer_addr = 42u32;
    let now = 50_000u64;
    // unknown key: zero recipient gets a ping carrying the server key
    let req0 = RepairRequest::signed(
        &me,
        [0; 32],
        now,
        1,
        RequestKind::WindowIndex {
            slot: 11,
            shred_index: 2,
        },
    );
    let out = server.handle(&ledger, now, peer_addr, &req0);
    assert_eq!(out.len(), 1);
    let ping = Ping::decode_response(&out[0]).unwrap();
    ping.verify().unwrap();
    assert_eq!(ping.from, sid);
    // proper request before pong: only ping (rate limited: none within 2 s)
    let req = RepairRequest::signed(
        &me,
        sid,
        now,
        2,
        RequestKind::WindowIndex {
            slot: 11,
            shred_index: 2,
        },
    );
    assert!(server.handle(&ledger, now + 1, peer_addr, &req).is_empty());
    let pong = Pong::new(&me, &ping);
    assert!(server
        .handle(&ledger, now + 2, peer_addr, &pong.encode())
        .is_empty());
    let out = server.handle(&ledger, now + 3, peer_addr, &req);
    assert_eq!(out.len(), 1);
    let (shred, nonce) = split_repair_response(&out[0]).unwrap();
    assert_eq!(nonce, 2);
    let s = Shred::from_bytes(shred).unwrap();
    assert_eq!((s.slot(), s.index()), (11, 2));
    // highest window index gives the last shred
    let req = RepairRequest::signed(
        &me,
        sid,
        now,
        3,
        RequestKind::HighestWindowIndex {
            slot: 12,
            shred_index: 0,
        },
    );
    let out = server.handle(&ledger, now + 4, peer_addr, &req);
    let s = Shred::from_bytes(split_repair_response(&out[0]).unwrap().0).unwrap();
    assert!(s.last_in_slot());
    // orphan walks parents: 12, 11, 10
    let req = RepairRequest::signed(&me, sid, now, 4, RequestKind::Orphan { slot: 12 });
    assert_eq!(server.handle(&ledger, now + 5, peer_addr, &req).len(), 3);
    let req = RepairRequest::signed(&me, sid, now, 5, RequestKind::AncestorHashes { slot: 12 });
    let out = server.handle(&ledger, now + 6, peer_addr, &req);
    let (hashes, nonce) = decode_ancestor_hashes(&out[0]).unwrap();
    assert_eq!((hashes.len(), nonce), (3, 5));
    // same pubkey from another address must pong again
    assert!(server.handle(&ledger, now + 7, 43, &req).len() == 1);
    assert!(Ping::decode_response(&server.handle(&ledger, now + 9000, 43, &req)[0]).is_some());
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
        let _ = Shred::from_bytes(&bytes);
        let _ = Shred::from_bytes_with(&bytes, Accept::INCLUDING_UNCHAINED).map(|s| { let _ = s.merkle_root(); let _ = s.data(); });
        let _ = split_repair_response(&bytes);
        let _ = decode_repair_protocol(&bytes);
        let _ = decode_ancestor_hashes(&bytes);
        let _ = Ping::decode_response(&bytes);
        let _ = catchup_shred::files::decode_shred_list(&bytes);
        let mut gz = vec![0x1f, 0x8b, 8, 0x1f];
        gz.extend_from_slice(&bytes);
        let _ = catchup_shred::files::decode_shred_list(&gz);
    }

    #[test]
    fn mutated_shreds_never_panic(pos in 0usize..1203, val in any::<u8>(), variant in any::<u8>()) {
        let raw = generate_ledger(&key(1), 7, 1, 3, 2);
        let mut b = raw[0].clone();
        b[pos] = val;
        b[64] = if variant % 2 == 0 { b[64] } else { variant };
        if let Ok(s) = Shred::from_bytes_with(&b, Accept::INCLUDING_UNCHAINED) {
            let _ = s.verify(&[1; 32]);
            let _ = s.erasure_shard();
            let mut a = SlotAssembler::new(s.slot());
            let _ = a.insert(s);
            let _ = a.recover();
        }
    }
}

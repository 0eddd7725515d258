//! discv5 services finding each other over a seeded in-memory network (handshakes,
//! sessions, lookups), and refusing bad packets by reason.

mod common;

use std::net::SocketAddr;

use catchup_devp2p::forkid::{ForkId, ForkSchedule};
use catchup_discovery::secp256k1::{SecretKey, SECP256K1};
use catchup_discovery::v5::crypto as v5crypto;
use catchup_discovery::v5::message::{Message, RequestId};
use catchup_discovery::v5::packet::{self, AuthData};
use catchup_discovery::v5::{Config, Event, Service};
use catchup_discovery::{DropReason, EnrBuilder, NodeId};
use common::{all_found_with_records, Sim, START_MS};

type Node = common::Node<Service>;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn schedule() -> ForkSchedule {
    ForkSchedule {
        genesis_hash: [0xd4; 32],
        genesis_timestamp: 0,
        block_forks: vec![1_150_000, 1_920_000],
        time_forks: vec![],
    }
}

fn random_key(rng: &mut StdRng) -> SecretKey {
    loop {
        let mut b = [0u8; 32];
        rng.fill(&mut b);
        if let Ok(k) = SecretKey::from_slice(&b) {
            return k;
        }
    }
}

fn network(n: usize, seed: u64, odd_fork: Option<usize>) -> Vec<Node> {
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: Vec<SecretKey> = (0..n).map(|_| random_key(&mut rng)).collect();
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)))
        .collect();
    let ours = schedule().fork_id(2_000_000, 0);
    let mut services: Vec<Service> = (0..n)
        .map(|i| {
            let fork_id = if odd_fork == Some(i) {
                ForkId {
                    hash: [1, 2, 3, 4],
                    next: 0,
                }
            } else {
                ours
            };
            let sched = schedule();
            Service::new(Config {
                key: keys[i],
                endpoint: addrs[i],
                tcp_port: 40000 + i as u16,
                bootnodes: vec![],
                fork_id: Some(fork_id),
                fork_filter: Some(Box::new(move |f: &ForkId| {
                    sched.validate(2_000_000, 0, f).is_ok()
                })),
                rng_seed: seed ^ (i as u64) << 8,
            })
            .unwrap()
        })
        .collect();
    let boot = services[0].local_enr().clone();
    for (i, s) in services.iter_mut().enumerate() {
        if i > 0 {
            *s = Service::new(Config {
                key: keys[i],
                endpoint: addrs[i],
                tcp_port: 40000 + i as u16,
                bootnodes: vec![boot.clone()],
                fork_id: Some(if odd_fork == Some(i) {
                    ForkId {
                        hash: [1, 2, 3, 4],
                        next: 0,
                    }
                } else {
                    ours
                }),
                fork_filter: Some({
                    let sched = schedule();
                    Box::new(move |f: &ForkId| sched.validate(2_000_000, 0, f).is_ok())
                }),
                rng_seed: seed ^ (i as u64) << 8,
            })
            .unwrap();
        }
    }
    services
        .into_iter()
        .enumerate()
        .map(|(i, mut svc)| {
            svc.start(START_MS + i as u64 * 5);
            Node {
                addr: addrs[i],
                svc,
            }
        })
        .collect()
}

fn report(sim: &Sim<Node>) {
    for a in &sim.nodes {
        let have: String = sim
            .nodes
            .iter()
            .map(|b| {
                if a.svc.node(&b.svc.local_id()).is_some() {
                    'F'
                } else {
                    '.'
                }
            })
            .collect();
        eprintln!(
            "{} table {} sessions {} found {have} drops {:?}",
            a.addr,
            a.svc.table_len(),
            a.svc.sessions(),
            a.svc.drops()
        );
    }
}

#[test]
fn two_to_eight_nodes_find_each_other() {
    for n in 2..=8usize {
        for seed in 1u64..=6 {
            let odd = (n > 2).then_some(n - 1);
            let nodes = network(n, seed * 1000 + n as u64, odd);
            let mut sim = Sim::new(nodes, seed);
            let ok = sim.run_until(START_MS + 120_000, all_found_with_records);
            if !ok {
                report(&sim);
            }
            assert!(
                ok,
                "n={n} seed={seed}: not everyone found everyone within 120 s"
            );
            for (ai, a) in sim.nodes.iter().enumerate() {
                for (bi, b) in sim.nodes.iter().enumerate() {
                    if ai == bi {
                        continue;
                    }
                    let f = a.svc.node(&b.svc.local_id()).unwrap();
                    assert_eq!(f.addr, b.addr);
                    assert_eq!(&f.enr, b.svc.local_enr());
                    assert_eq!(f.eth_compatible, Some(odd != Some(bi)), "n={n}");
                }
                assert_eq!(
                    a.svc.drops().total(),
                    0,
                    "n={n} seed={seed} {:?}",
                    a.svc.drops()
                );
            }
        }
    }
}

#[test]
fn lossy_network_still_converges() {
    for seed in 60u64..80 {
        let nodes = network(8, seed, None);
        let mut sim = Sim::new(nodes, seed);
        sim.loss_percent = 10;
        let ok = sim.run_until(START_MS + 300_000, all_found_with_records);
        if !ok {
            report(&sim);
        }
        assert!(ok, "seed {seed}");
        assert!(sim.lost > 0);
    }
}

#[test]
fn crashed_node_is_evicted_from_every_table() {
    let nodes = network(6, 4242, None);
    let mut sim = Sim::new(nodes, 4242);
    assert!(sim.run_until(START_MS + 120_000, all_found_with_records));
    let dead = sim.nodes[3].svc.local_id();
    assert!(sim.nodes.iter().any(|n| n.svc.in_table(&dead)));
    sim.down = vec![false, false, false, true, false, false];
    let end = sim.now_ms + 600_000;
    let evicted = sim.run_until(end, |nodes| nodes.iter().all(|n| !n.svc.in_table(&dead)));
    assert!(
        evicted,
        "liveness checks remove a node that stopped answering"
    );
    // The others still know each other.
    for (i, a) in sim.nodes.iter().enumerate() {
        if i == 3 {
            continue;
        }
        assert!(a.svc.table_len() >= 1);
    }
}

#[test]
fn talk_request_gets_an_empty_answer() {
    let nodes = network(2, 9, None);
    let mut sim = Sim::new(nodes, 9);
    assert!(sim.run_until(START_MS + 60_000, all_found_with_records));
    let b = sim.nodes[1].svc.local_id();
    let now = sim.now_ms;
    assert!(sim.nodes[0].svc.talk(b, b"demo", b"hello", now));
    let end = now + 5_000;
    sim.run_until(end, |_| false);
    let mut saw = false;
    while let Some(e) = sim.nodes[1].svc.poll_event() {
        if let Event::TalkRequest { protocol, .. } = e {
            saw = protocol == b"demo";
        }
    }
    assert!(saw);
    assert_eq!(sim.nodes[0].svc.drops().get(DropReason::Unsolicited), 0);
}

#[test]
fn bad_packets_are_counted_by_reason() {
    let mut nodes = network(1, 5, None);
    let node = &mut nodes[0];
    while node.svc.poll_transmit().is_some() {}
    let now = START_MS + 1000;
    let local = node.svc.local_id();
    let peer_key = SecretKey::from_slice(&[0x44; 32]).unwrap();
    let peer: SocketAddr = "127.0.0.1:9999".parse().unwrap();
    let peer_enr = EnrBuilder::new(1)
        .endpoint(peer, 0)
        .build(&peer_key)
        .unwrap();
    let peer_id = peer_enr.node_id();
    let svc = &mut node.svc;
    // Too short, too long, addressed to another node.
    svc.handle_packet(peer, &[0u8; 40], now);
    svc.handle_packet(peer, &[0u8; 1300], now);
    let ping = Message::Ping {
        req_id: RequestId::from_u64(1),
        enr_seq: 1,
    }
    .encode();
    let other = NodeId([0x99; 32]);
    let (raw, _) = packet::encode(
        &other,
        &[1u8; 16],
        &[2u8; 12],
        &AuthData::Message { src_id: peer_id },
        Some((&[0u8; 16], &ping)),
    )
    .unwrap();
    svc.handle_packet(peer, &raw, now);
    // An unsolicited WHOAREYOU.
    let (raw, _) = packet::encode(
        &local,
        &[1u8; 16],
        &[3u8; 12],
        &AuthData::WhoAreYou {
            id_nonce: [4u8; 16],
            enr_seq: 0,
        },
        None,
    )
    .unwrap();
    svc.handle_packet(peer, &raw, now);
    // A handshake nobody challenged.
    let (raw, _) = packet::encode(
        &local,
        &[1u8; 16],
        &[5u8; 12],
        &AuthData::Handshake {
            src_id: peer_id,
            id_signature: [0u8; 64],
            eph_pubkey: peer_key.public_key(SECP256K1).serialize(),
            record: Some(Box::new(peer_enr.clone())),
        },
        Some((&[0u8; 16], &ping)),
    )
    .unwrap();
    svc.handle_packet(peer, &raw, now);
    assert!(svc.poll_transmit().is_none());
    let d = svc.drops().clone();
    assert_eq!(d.get(DropReason::Malformed), 2, "short, wrong destination");
    assert_eq!(d.get(DropReason::Oversized), 1);
    assert_eq!(d.get(DropReason::Unsolicited), 2);

    // An ordinary packet without a session (a FINDNODE, say) draws only a WHOAREYOU:
    // nothing about the table goes to an endpoint that has not completed a handshake.
    let find = Message::FindNode {
        req_id: RequestId::from_u64(2),
        distances: vec![0, 256],
    }
    .encode();
    let (raw, _) = packet::encode(
        &local,
        &[1u8; 16],
        &[6u8; 12],
        &AuthData::Message { src_id: peer_id },
        Some((&[7u8; 16], &find)),
    )
    .unwrap();
    svc.handle_packet(peer, &raw, now);
    let w = svc.poll_transmit().expect("whoareyou");
    assert!(svc.poll_transmit().is_none());
    let wp = packet::decode(&peer_id, &w.packet).unwrap();
    assert!(matches!(wp.auth, AuthData::WhoAreYou { enr_seq: 0, .. }));
    assert_eq!(wp.nonce, [6u8; 12]);
    assert!(w.packet.len() <= raw.len());

    // A handshake answering it with a bad ID signature is refused.
    let eph = SecretKey::from_slice(&[0x55; 32]).unwrap();
    let (_, eph_pub, keys) = v5crypto::initiate_handshake(
        &peer_key,
        &peer_id,
        &local,
        svc.local_enr().public_key(),
        &wp.header_data,
        &eph,
    )
    .unwrap();
    let mk = |sig: [u8; 64]| {
        packet::encode(
            &local,
            &[1u8; 16],
            &[8u8; 12],
            &AuthData::Handshake {
                src_id: peer_id,
                id_signature: sig,
                eph_pubkey: eph_pub,
                record: Some(Box::new(peer_enr.clone())),
            },
            Some((&keys.initiator_key, &find)),
        )
        .unwrap()
        .0
    };
    svc.handle_packet(peer, &mk([1u8; 64]), now);
    assert_eq!(svc.drops().get(DropReason::BadSignature), 1);
    assert!(svc.poll_transmit().is_none());
    // The right signature completes the session and the FINDNODE is answered.
    let sig = v5crypto::id_sign(&peer_key, &wp.header_data, &eph_pub, &local);
    svc.handle_packet(peer, &mk(sig), now);
    let reply = svc.poll_transmit().expect("nodes");
    let rp = packet::decode(&peer_id, &reply.packet).unwrap();
    let pt = rp.decrypt(&keys.recipient_key).unwrap();
    match Message::decode(&pt).unwrap() {
        Message::Nodes { enrs, total, .. } => {
            assert_eq!(total, 1);
            assert_eq!(enrs, vec![svc.local_enr().clone()]);
        }
        other => panic!("expected NODES, got {other:?}"),
    }
    // A message in that session under a wrong key is not answered with data.
    let (raw, _) = packet::encode(
        &local,
        &[1u8; 16],
        &[9u8; 12],
        &AuthData::Message { src_id: peer_id },
        Some((&[0xaa; 16], &find)),
    )
    .unwrap();
    svc.handle_packet(peer, &raw, now + 2000);
    let w = svc.poll_transmit().expect("a new challenge");
    assert!(matches!(
        packet::decode(&peer_id, &w.packet).unwrap().auth,
        AuthData::WhoAreYou { .. }
    ));
}

/// A hand-driven peer answers our service's FINDNODE with one record at a requested
/// distance and one (its own, distance 0) that was not asked for: the first is taken,
/// the second is refused as a bad record.
#[test]
fn nodes_outside_the_requested_distances_are_refused() {
    let now = START_MS;
    let p_key = SecretKey::from_slice(&[0x61; 32]).unwrap();
    let p_addr: SocketAddr = "127.0.0.1:9100".parse().unwrap();
    let p_enr = EnrBuilder::new(1)
        .endpoint(p_addr, 0)
        .build(&p_key)
        .unwrap();
    let p_id = p_enr.node_id();
    let s_addr: SocketAddr = "127.0.0.1:9101".parse().unwrap();
    let mut svc = Service::new(Config {
        key: SecretKey::from_slice(&[0x62; 32]).unwrap(),
        endpoint: s_addr,
        tcp_port: 0,
        bootnodes: vec![p_enr.clone()],
        fork_id: None,
        fork_filter: None,
        rng_seed: 11,
    })
    .unwrap();
    let s_id = svc.local_id();
    let s_pk = *svc.local_enr().public_key();
    svc.start(now);
    // Challenge every packet the service sent us.
    let mut challenges = Vec::new();
    let first: Vec<_> = std::iter::from_fn(|| svc.poll_transmit()).collect();
    for t in first {
        assert_eq!(t.dest, p_addr);
        let p = packet::decode(&p_id, &t.packet).unwrap();
        let auth = AuthData::WhoAreYou {
            id_nonce: [challenges.len() as u8; 16],
            enr_seq: 0,
        };
        let (raw, challenge) = packet::encode(&s_id, &[9u8; 16], &p.nonce, &auth, None).unwrap();
        challenges.push(challenge);
        svc.handle_packet(p_addr, &raw, now + 10);
    }
    assert!(challenges.len() >= 2, "ping and findnode");
    // Accept the handshakes and answer the FINDNODE.
    let mut answered = false;
    let mut rng = StdRng::seed_from_u64(5);
    while let Some(t) = svc.poll_transmit() {
        let p = packet::decode(&p_id, &t.packet).unwrap();
        let AuthData::Handshake {
            id_signature,
            eph_pubkey,
            record,
            ..
        } = &p.auth
        else {
            panic!("expected a handshake, got {:?}", p.auth)
        };
        assert!(record.is_some(), "enr-seq 0 asks for the record");
        let keys = challenges
            .iter()
            .find_map(|c| {
                v5crypto::accept_handshake(&p_key, &p_id, &s_id, &s_pk, c, id_signature, eph_pubkey)
                    .ok()
                    .filter(|k| p.decrypt(&k.initiator_key).is_ok())
            })
            .expect("a handshake for one of our challenges");
        let msg = Message::decode(&p.decrypt(&keys.initiator_key).unwrap()).unwrap();
        let Message::FindNode { req_id, distances } = msg else {
            continue;
        };
        assert!(!distances.contains(&0));
        // A record at one of the requested distances from us.
        let good = loop {
            let k = random_key(&mut rng);
            let e = EnrBuilder::new(1)
                .endpoint("127.0.0.1:9200".parse().unwrap(), 0)
                .build(&k)
                .unwrap();
            if distances.contains(&(p_id.log_distance(&e.node_id()) as u16)) {
                break e;
            }
        };
        let nodes = Message::Nodes {
            req_id,
            total: 1,
            enrs: vec![good.clone(), p_enr.clone()],
        }
        .encode();
        let (raw, _) = packet::encode(
            &s_id,
            &[3u8; 16],
            &[4u8; 12],
            &AuthData::Message { src_id: p_id },
            Some((&keys.recipient_key, &nodes)),
        )
        .unwrap();
        svc.handle_packet(p_addr, &raw, now + 20);
        answered = true;
        assert_eq!(svc.drops().get(DropReason::BadRecord), 1);
        assert!(svc.node(&p_id).is_some(), "the answering peer is live");
        // The good record is followed up: the lookup contacts it.
        let dests: Vec<SocketAddr> = std::iter::from_fn(|| svc.poll_transmit())
            .map(|t| t.dest)
            .collect();
        assert!(
            dests.contains(&"127.0.0.1:9200".parse().unwrap()),
            "{dests:?}"
        );
        break;
    }
    assert!(answered, "the service sent a FINDNODE");
}

//! discv4 services finding each other over a seeded in-memory network, and refusing bad
//! packets by reason.

mod common;

use std::net::SocketAddr;

use catchup_devp2p::forkid::{ForkId, ForkSchedule};
use catchup_discovery::crypto::{self, pub64};
use catchup_discovery::secp256k1::{SecretKey, SECP256K1};
use catchup_discovery::v4::packet::{self, Endpoint, FindNode, Message, Ping, Pong};
use catchup_discovery::v4::{Bootnode, Config, Service};
use catchup_discovery::{DropReason, NodeId};
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

/// `n` services; node 0 is everyone's bootnode; `odd_fork` announces another chain.
fn network(n: usize, seed: u64, odd_fork: Option<usize>) -> (Vec<Node>, Vec<SecretKey>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: Vec<SecretKey> = (0..n).map(|_| random_key(&mut rng)).collect();
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 30300 + i as u16)))
        .collect();
    let boot = Bootnode {
        pubkey: pub64(&keys[0].public_key(SECP256K1)),
        udp: addrs[0],
    };
    let ours = schedule().fork_id(2_000_000, 0);
    let nodes = (0..n)
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
            let mut svc = Service::new(Config {
                key: keys[i],
                endpoint: addrs[i],
                tcp_port: 40000 + i as u16,
                bootnodes: if i == 0 { vec![] } else { vec![boot] },
                fork_id: Some(fork_id),
                fork_filter: Some(Box::new(move |f: &ForkId| {
                    sched.validate(2_000_000, 0, f).is_ok()
                })),
                rng_seed: seed ^ i as u64,
            })
            .unwrap();
            svc.start(START_MS + i as u64 * 7);
            Node {
                addr: addrs[i],
                svc,
            }
        })
        .collect();
    (nodes, keys)
}

#[test]
fn two_to_eight_nodes_find_each_other() {
    for n in 2..=8usize {
        for seed in 1u64..=6 {
            let odd = (n > 2).then_some(n - 1);
            let (nodes, _) = network(n, seed * 100 + n as u64, odd);
            let mut sim = Sim::new(nodes, seed);
            let ok = sim.run_until(START_MS + 120_000, all_found_with_records);
            assert!(
                ok,
                "n={n} seed={seed}: not everyone found everyone within 120 s"
            );
            for a in &sim.nodes {
                for b in &sim.nodes {
                    if a.svc.local_id() == b.svc.local_id() {
                        continue;
                    }
                    let f = a.svc.node(&b.svc.local_id()).unwrap();
                    assert_eq!(f.udp, b.addr);
                    assert_eq!(f.enr.as_ref().unwrap(), b.svc.local_enr());
                    assert_eq!(f.tcp_port, b.addr.port() + 9700);
                    let a_odd = odd == sim.nodes.iter().position(|x| x.addr == a.addr);
                    let b_odd = odd == sim.nodes.iter().position(|x| x.addr == b.addr);
                    // Each node judges by its own filter, which accepts the common chain.
                    let _ = a_odd;
                    assert_eq!(f.eth_compatible, Some(!b_odd), "n={n}");
                }
                assert_eq!(a.svc.drops().total(), 0, "n={n} seed={seed}");
            }
        }
    }
}

#[test]
fn lossy_network_still_converges() {
    for seed in 60u64..80 {
        let (nodes, _) = network(8, seed, None);
        let mut sim = Sim::new(nodes, seed);
        sim.loss_percent = 10;
        let ok = sim.run_until(START_MS + 300_000, all_found_with_records);
        if !ok {
            for a in &sim.nodes {
                let have: Vec<String> = sim
                    .nodes
                    .iter()
                    .map(|b| match a.svc.node(&b.svc.local_id()) {
                        Some(f) if f.enr.is_some() => "E".into(),
                        Some(_) => "n".into(),
                        None => ".".into(),
                    })
                    .collect();
                eprintln!(
                    "{} table {} found {:?} drops {:?} nodes {:?}",
                    a.addr,
                    a.svc.table_len(),
                    have,
                    a.svc.drops(),
                    a.svc.nodes().map(|n| n.udp.port()).collect::<Vec<_>>()
                );
            }
        }
        assert!(ok, "seed {seed}");
        assert!(sim.lost > 0);
    }
}

#[test]
fn crashed_node_is_evicted_from_every_table() {
    let (nodes, _) = network(6, 4242, None);
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

fn signed(msg: &Message, key: &SecretKey) -> Vec<u8> {
    packet::encode(msg, key).unwrap().0
}

#[test]
fn bad_packets_are_counted_by_reason_and_unverified_queries_get_nothing() {
    let (mut nodes, _) = network(1, 5, None);
    let node = &mut nodes[0];
    while node.svc.poll_transmit().is_some() {}
    let now = START_MS + 1000;
    let peer_key = SecretKey::from_slice(&[0x33; 32]).unwrap();
    let peer: SocketAddr = "127.0.0.1:31000".parse().unwrap();
    let ep = |a: SocketAddr| Endpoint {
        ip: a.ip(),
        udp_port: a.port(),
        tcp_port: 0,
    };
    let find = Message::FindNode(FindNode {
        target: [7u8; 64],
        expiration: now / 1000 + 20,
    });
    let svc = &mut node.svc;
    // Malformed and oversized.
    svc.handle_packet(peer, &[1, 2, 3], now);
    svc.handle_packet(peer, &vec![0u8; 1281], now);
    svc.handle_packet(peer, &[0u8; 200], now);
    // Badly signed: valid packet, one signature byte changed, hash recomputed.
    let mut bad = signed(&find, &peer_key);
    bad[96] = 7; // recovery id out of range
    let h = alloy_primitives::keccak256(&bad[32..]).0;
    bad[..32].copy_from_slice(&h);
    svc.handle_packet(peer, &bad, now);
    // Expired.
    let old = Message::FindNode(FindNode {
        target: [7u8; 64],
        expiration: now / 1000 - 1,
    });
    svc.handle_packet(peer, &signed(&old, &peer_key), now);
    // Unsolicited pong.
    let pong = Message::Pong(Pong {
        to: ep(node.addr),
        ping_hash: [9u8; 32],
        expiration: now / 1000 + 20,
        enr_seq: None,
    });
    node.svc.handle_packet(peer, &signed(&pong, &peer_key), now);
    // FindNode from an endpoint that never answered our ping: no neighbors.
    node.svc.handle_packet(peer, &signed(&find, &peer_key), now);
    assert!(node.svc.poll_transmit().is_none(), "nothing is sent back");
    let d = node.svc.drops();
    assert_eq!(d.get(DropReason::Malformed), 1);
    assert_eq!(d.get(DropReason::Oversized), 1);
    assert_eq!(
        d.get(DropReason::BadSignature),
        2,
        "bad hash, bad signature"
    );
    assert_eq!(d.get(DropReason::Expired), 1);
    assert_eq!(d.get(DropReason::Unsolicited), 1);
    assert_eq!(d.get(DropReason::Unverified), 1);

    // After a ping from the peer we pong and ping back; once it answers our ping the same
    // FindNode is answered.
    let ping = Message::Ping(Ping {
        version: 4,
        from: ep(peer),
        to: ep(node.addr),
        expiration: now / 1000 + 20,
        enr_seq: None,
    });
    node.svc.handle_packet(peer, &signed(&ping, &peer_key), now);
    let out: Vec<_> = std::iter::from_fn(|| node.svc.poll_transmit()).collect();
    assert_eq!(out.len(), 2, "pong and our own ping");
    let our_ping = packet::decode(&out[1].packet, now / 1000).unwrap();
    assert!(matches!(our_ping.message, Message::Ping(_)));
    assert_eq!(
        our_ping.sender_id,
        NodeId::from_public_key(&crypto::pub_from64(&pub64(&nodes_key(&node.svc))).unwrap())
    );
    let pong = Message::Pong(Pong {
        to: ep(node.addr),
        ping_hash: our_ping.hash,
        expiration: now / 1000 + 20,
        enr_seq: Some(1),
    });
    node.svc
        .handle_packet(peer, &signed(&pong, &peer_key), now + 5);
    while node.svc.poll_transmit().is_some() {}
    node.svc
        .handle_packet(peer, &signed(&find, &peer_key), now + 10);
    let reply = node.svc.poll_transmit().expect("neighbors");
    let d = packet::decode(&reply.packet, now / 1000).unwrap();
    assert!(matches!(d.message, Message::Neighbors(_)));
    assert_eq!(node.svc.drops().get(DropReason::Unverified), 1);
    while node.svc.poll_transmit().is_some() {}

    // Amplification: the bonded node's own signed query arriving from another IP (a
    // spoofed source; the neighbors would go to a victim) gets nothing, because the proof
    // belongs to the address that answered our ping.
    let victim: SocketAddr = "10.9.9.9:31000".parse().unwrap();
    node.svc
        .handle_packet(victim, &signed(&find, &peer_key), now + 20);
    assert!(
        node.svc.poll_transmit().is_none(),
        "no neighbors towards an unproven address"
    );
    assert_eq!(node.svc.drops().get(DropReason::Unverified), 2);

    // The proof lasts 12 hours: a day later the same query is unverified again.
    let later = now + catchup_discovery::table::BOND_EXPIRATION_MS + 60_000;
    let find_later = Message::FindNode(FindNode {
        target: [7u8; 64],
        expiration: later / 1000 + 20,
    });
    node.svc
        .handle_packet(peer, &signed(&find_later, &peer_key), later);
    assert!(node.svc.poll_transmit().is_none());
    assert_eq!(node.svc.drops().get(DropReason::Unverified), 3);
}

fn nodes_key(svc: &Service) -> catchup_discovery::secp256k1::PublicKey {
    *svc.local_enr().public_key()
}

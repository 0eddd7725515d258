//! Gossip clients exchanging packets in memory under a seeded simulator (virtual time,
//! shuffled delivery, loss) until their tables converge.

use catchup_gossip::client::{ClientConfig, GossipClient, Outgoing, Upsert};
use catchup_gossip::contact_info::{ContactInfo, SOCKET_TAG_GOSSIP};
use catchup_gossip::crds::{CrdsData, CrdsValue, SnapshotHashes};
use catchup_gossip::ed25519_dalek::SigningKey;
use catchup_gossip::protocol::{self, Protocol};
use catchup_gossip::{GossipError, Hash, Pubkey};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const STEP_MS: u64 = 100;
const MAX_STEPS: usize = 1_500;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

struct Sim {
    nodes: Vec<(SocketAddr, GossipClient)>,
    in_flight: Vec<(SocketAddr, Outgoing)>,
    rng: ChaCha20Rng,
    now_ms: u64,
    loss_percent: u32,
    delivered: u64,
    rejected: u64,
    /// When set, a lying node floods every client with garbage and forgeries each step.
    liar: Option<SigningKey>,
}

const LIAR_ADDR_PORT: u16 = 9999;

impl Sim {
    fn lies(&mut self, liar: &SigningKey, victim: &Pubkey) -> Vec<Vec<u8>> {
        let now = self.now_ms;
        let me = Pubkey::of(liar);
        let mut garbage = vec![0u8; self.rng.gen_range(0..1300)];
        self.rng.fill(&mut garbage[..]);
        // The victim's contact info pointing its RPC elsewhere, signed by the liar.
        let mut forged = ContactInfo::new(*victim, now + 1_000, u64::MAX, 42);
        forged.set_socket(SOCKET_TAG_GOSSIP, addr(6666)).unwrap();
        forged
            .set_socket(catchup_gossip::contact_info::SOCKET_TAG_RPC, addr(6667))
            .unwrap();
        let forged = CrdsValue::new_signed(CrdsData::ContactInfo(forged), liar);
        let future = signed_contact(liar, now + 3_600_000, 42, LIAR_ADDR_PORT);
        let foreign = signed_contact(liar, now, 7, LIAR_ADDR_PORT);
        let ping = catchup_gossip::ping_pong::Ping::new(liar, [1; 32]);
        let stray_pong = catchup_gossip::ping_pong::Pong::new(liar, &ping);
        vec![
            garbage,
            Protocol::PushMessage(me, vec![forged.clone()]).encode(),
            Protocol::PullResponse(me, vec![future, foreign]).encode(),
            Protocol::PongMessage(stray_pong).encode(),
        ]
    }
}

impl Sim {
    fn step(&mut self) {
        self.now_ms += STEP_MS;
        if let Some(liar) = self.liar.clone() {
            let victim = self.nodes[1].1.pubkey();
            let targets: Vec<SocketAddr> = self.nodes.iter().map(|(at, _)| *at).collect();
            for to in targets {
                for bytes in self.lies(&liar, &victim) {
                    self.in_flight
                        .push((addr(LIAR_ADDR_PORT), Outgoing { to, bytes }));
                }
            }
        }
        for (from, node) in &mut self.nodes {
            for packet in node.tick(self.now_ms) {
                self.in_flight.push((*from, packet));
            }
        }
        // Deliver this step's packets in a shuffled order; answers go out next step.
        let mut batch = std::mem::take(&mut self.in_flight);
        for i in (1..batch.len()).rev() {
            let j = self.rng.gen_range(0..=i);
            batch.swap(i, j);
        }
        for (from, packet) in batch {
            assert!(
                from.port() == LIAR_ADDR_PORT
                    || packet.bytes.len() <= catchup_gossip::PACKET_DATA_SIZE
            );
            if self.rng.gen_range(0..100) < self.loss_percent {
                continue;
            }
            let Some((_, node)) = self.nodes.iter_mut().find(|(at, _)| *at == packet.to) else {
                continue;
            };
            self.delivered += 1;
            match node.handle_packet(from, &packet.bytes, self.now_ms) {
                Ok(answers) => self.in_flight.extend(
                    answers
                        .into_iter()
                        .filter(|answer| answer.to.port() != LIAR_ADDR_PORT)
                        .map(|answer| (packet.to, answer)),
                ),
                Err(_) => self.rejected += 1,
            }
        }
    }

    fn node(&self, index: usize) -> &GossipClient {
        &self.nodes[index].1
    }
}

fn build_sim(seed: u64, loss_percent: u32) -> (Sim, Vec<Pubkey>) {
    let entry = addr(8001);
    let mut nodes = Vec::new();
    let mut pubkeys = Vec::new();
    for index in 0..3u16 {
        let key = SigningKey::from_bytes(&[index as u8 + 10; 32]);
        pubkeys.push(Pubkey::of(&key));
        let gossip = addr(8001 + index * 10);
        let entrypoints = if index == 0 { vec![] } else { vec![entry] };
        let mut config = ClientConfig::new(gossip, entrypoints, 42);
        config.rpc_addr = Some(addr(8899 + index * 10));
        config.serve_repair_addr = Some(addr(8008 + index * 10));
        config.max_entries = 64;
        let client = GossipClient::new(key, config, seed ^ u64::from(index), 0).unwrap();
        nodes.push((gossip, client));
    }
    let sim = Sim {
        nodes,
        in_flight: Vec::new(),
        rng: ChaCha20Rng::seed_from_u64(seed),
        now_ms: 0,
        loss_percent,
        delivered: 0,
        rejected: 0,
        liar: None,
    };
    (sim, pubkeys)
}

fn converged(sim: &Sim, pubkeys: &[Pubkey], snapshot_origin: &Pubkey) -> bool {
    (0..sim.nodes.len()).all(|index| {
        let node = sim.node(index);
        let others: Vec<&Pubkey> = pubkeys
            .iter()
            .filter(|key| **key != node.pubkey())
            .collect();
        let knows_all = others.iter().all(|key| node.contact_info(key).is_some());
        let knows_snapshot =
            node.pubkey() == *snapshot_origin || node.snapshot_hashes(snapshot_origin).is_some();
        knows_all && knows_snapshot
    })
}

fn run_to_convergence(seed: u64, loss_percent: u32) -> (Sim, Vec<Pubkey>, usize) {
    run_with(seed, loss_percent, None)
}

fn run_with(seed: u64, loss_percent: u32, liar: Option<SigningKey>) -> (Sim, Vec<Pubkey>, usize) {
    let (mut sim, pubkeys) = build_sim(seed, loss_percent);
    sim.liar = liar;
    // The second node advertises snapshot hashes.
    let full = (1_000, Hash([1; 32]));
    let incremental = vec![(1_100, Hash([2; 32]))];
    sim.nodes[1].1.publish_snapshot_hashes(full, incremental, 0);
    for step in 0..MAX_STEPS {
        sim.step();
        if converged(&sim, &pubkeys, &pubkeys[1]) {
            return (sim, pubkeys, step);
        }
    }
    panic!(
        "seed {seed}: no convergence in {MAX_STEPS} steps; delivered {}, rejected {}, tables {:?}",
        sim.delivered,
        sim.rejected,
        sim.nodes
            .iter()
            .map(|(_, node)| node.table().len())
            .collect::<Vec<_>>()
    );
}

#[test]
fn three_clients_converge() {
    for seed in [1u64, 2, 3] {
        let (sim, pubkeys, _steps) = run_to_convergence(seed, 0);
        for index in 0..3 {
            let node = sim.node(index);
            let rpc: Vec<(Pubkey, SocketAddr)> = node.rpc_addrs();
            let mut expected: Vec<(Pubkey, SocketAddr)> = (0..3u16)
                .filter(|other| usize::from(*other) != index)
                .map(|other| (pubkeys[usize::from(other)], addr(8899 + other * 10)))
                .collect();
            expected.sort();
            assert_eq!(rpc, expected, "seed {seed} node {index}");
            let repair = node.serve_repair_addrs();
            assert_eq!(repair.len(), 2);
            assert!(repair.iter().all(|(key, socket)| node
                .contact_info(key)
                .unwrap()
                .serve_repair()
                == Some(*socket)));
            let stats = node.stats();
            assert!(
                stats.pongs_verified > 0,
                "seed {seed} node {index}: {stats:?}"
            );
        }
        let hashes = sim.node(2).snapshot_hashes(&pubkeys[1]).unwrap();
        assert_eq!(hashes.full, (1_000, Hash([1; 32])));
        assert_eq!(hashes.incremental, vec![(1_100, Hash([2; 32]))]);
        // Ping/pong: each node verified the others' gossip addresses.
        for (index, (_, node)) in sim.nodes.iter().enumerate() {
            for (other, (gossip, _)) in sim.nodes.iter().enumerate() {
                if other != index {
                    assert!(
                        node.is_verified_peer(&pubkeys[other], gossip, sim.now_ms),
                        "seed {seed}: node {index} did not verify node {other}"
                    );
                }
            }
        }
    }
}

#[test]
fn clients_converge_despite_loss() {
    for seed in [11u64, 12] {
        let (sim, _, _) = run_to_convergence(seed, 20);
        assert!(sim.delivered > 0);
    }
}

#[test]
fn clients_converge_despite_a_liar() {
    let liar = SigningKey::from_bytes(&[200; 32]);
    let (sim, pubkeys, _) = run_with(21, 5, Some(liar.clone()));
    assert!(sim.rejected > 0);
    let honest_rpc = addr(8899 + 10);
    for index in [0usize, 2] {
        let node = sim.node(index);
        let info = node.contact_info(&pubkeys[1]).unwrap();
        assert_eq!(info.rpc(), Some(honest_rpc), "node {index}");
        assert!(node.contact_info(&Pubkey::of(&liar)).is_none());
        assert!(node.stats().values_rejected > 0);
        assert!(node.stats().packets_rejected > 0);
    }
}

#[test]
fn same_seed_same_run() {
    let (_, _, steps_a) = run_to_convergence(5, 10);
    let (_, _, steps_b) = run_to_convergence(5, 10);
    assert_eq!(steps_a, steps_b);
}

fn signed_contact(key: &SigningKey, wallclock: u64, shred_version: u16, port: u16) -> CrdsValue {
    let mut info = ContactInfo::new(Pubkey::of(key), wallclock, 1, shred_version);
    info.set_socket(SOCKET_TAG_GOSSIP, addr(port)).unwrap();
    CrdsValue::new_signed(CrdsData::ContactInfo(info), key)
}

fn client(max_entries: usize) -> GossipClient {
    let mut config = ClientConfig::new(addr(9000), vec![], 42);
    config.max_entries = max_entries;
    GossipClient::new(SigningKey::from_bytes(&[99; 32]), config, 7, 1_000_000).unwrap()
}

#[test]
fn table_rules() {
    let now = 1_000_000;
    let mut node = client(4);
    let peer = SigningKey::from_bytes(&[1; 32]);
    // Newest wallclock wins per label.
    assert_eq!(
        node.insert_value(signed_contact(&peer, now - 10, 42, 1), now),
        Ok(Upsert::Inserted)
    );
    assert_eq!(
        node.insert_value(signed_contact(&peer, now - 20, 42, 2), now),
        Ok(Upsert::Outdated)
    );
    assert_eq!(
        node.insert_value(signed_contact(&peer, now - 5, 42, 3), now),
        Ok(Upsert::Replaced)
    );
    assert_eq!(
        node.contact_info(&Pubkey::of(&peer)).unwrap().gossip(),
        Some(addr(3))
    );
    // Wrong shred version, far-future wallclock, bad signature: typed errors.
    let other = SigningKey::from_bytes(&[2; 32]);
    assert_eq!(
        node.insert_value(signed_contact(&other, now, 7, 4), now),
        Err(GossipError::WrongShredVersion { got: 7, want: 42 })
    );
    assert!(matches!(
        node.insert_value(signed_contact(&other, now + 3_600_000, 42, 4), now),
        Err(GossipError::WallclockInFuture { .. })
    ));
    let forged = CrdsValue::new_signed(
        signed_contact(&other, now, 42, 4).data().clone(),
        &SigningKey::from_bytes(&[3; 32]),
    );
    assert!(matches!(
        node.insert_value(forged, now),
        Err(GossipError::BadSignature { .. })
    ));
    // Snapshot hashes of an origin whose contact info is unknown are not kept.
    let hashes = CrdsValue::new_signed(
        CrdsData::SnapshotHashes(SnapshotHashes {
            from: Pubkey::of(&other),
            full: (5, Hash::default()),
            incremental: vec![],
            wallclock: now,
        }),
        &other,
    );
    assert!(node.insert_value(hashes, now).is_err());
    // Bounded: the oldest value gives way to newer ones, never beyond max_entries.
    for seed in 10..30u8 {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let _ = node.insert_value(
            signed_contact(&key, now - 1000 + u64::from(seed), 42, 5),
            now,
        );
        assert!(node.table().len() <= 4);
    }
    assert_eq!(node.table().len(), 4);
    // An old value does not evict a newer one from a full table.
    let late = SigningKey::from_bytes(&[77; 32]);
    assert_eq!(
        node.insert_value(signed_contact(&late, now - 10_000, 42, 6), now),
        Ok(Upsert::Outdated)
    );
    assert!(node.stats().values_evicted > 0);
}

#[test]
fn pings_are_answered_and_foreign_pongs_ignored() {
    let now = 1_000_000;
    let mut node = client(16);
    let peer = SigningKey::from_bytes(&[5; 32]);
    let ping = catchup_gossip::ping_pong::Ping::new(&peer, [3; 32]);
    let answers = node
        .handle_packet(
            addr(7000),
            &Protocol::PingMessage(ping.clone()).encode(),
            now,
        )
        .unwrap();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].to, addr(7000));
    let Protocol::PongMessage(pong) = protocol::decode_verified(&answers[0].bytes).unwrap() else {
        panic!("expected a pong");
    };
    pong.verify_answers(&ping.token).unwrap();
    assert_eq!(pong.from, node.pubkey());
    // A pong nobody asked for verifies nothing.
    let stray = catchup_gossip::ping_pong::Pong::new(&peer, &ping);
    assert!(node
        .handle_packet(addr(7000), &Protocol::PongMessage(stray).encode(), now)
        .is_err());
    assert!(!node.is_verified_peer(&Pubkey::of(&peer), &addr(7000), now));
    // Garbage is a typed error and counted.
    assert!(node.handle_packet(addr(7000), &[1, 2, 3], now).is_err());
    assert_eq!(node.stats().packets_rejected, 1);
}

#[test]
fn pull_requests_from_unverified_or_foreign_callers_get_no_data() {
    let now = 1_000_000;
    let mut node = client(16);
    let caller = SigningKey::from_bytes(&[6; 32]);
    let filter = catchup_gossip::bloom::build_filters(
        &mut ChaCha20Rng::seed_from_u64(1),
        std::iter::empty(),
        catchup_gossip::bloom::MIN_NUM_BLOOM_ITEMS,
        512,
    )
    .remove(0);
    let request = Protocol::PullRequest(filter.clone(), signed_contact(&caller, now, 42, 7100));
    let answers = node
        .handle_packet(addr(7100), &request.encode(), now)
        .unwrap();
    // Unverified: a ping, no data.
    assert_eq!(answers.len(), 1);
    assert!(matches!(
        protocol::decode(&answers[0].bytes).unwrap(),
        Protocol::PingMessage(_)
    ));
    let Protocol::PingMessage(ping) = protocol::decode(&answers[0].bytes).unwrap() else {
        unreachable!()
    };
    // A pong from another key than the caller's does not verify the caller.
    let impostor = catchup_gossip::ping_pong::Pong::new(&SigningKey::from_bytes(&[66; 32]), &ping);
    assert!(node
        .handle_packet(addr(7100), &Protocol::PongMessage(impostor).encode(), now)
        .is_err());
    assert!(!node.is_verified_peer(&Pubkey::of(&caller), &addr(7100), now));
    let pong = catchup_gossip::ping_pong::Pong::new(&caller, &ping);
    node.handle_packet(addr(7100), &Protocol::PongMessage(pong).encode(), now)
        .unwrap();
    assert!(node.is_verified_peer(&Pubkey::of(&caller), &addr(7100), now));
    // Verified now: a request whose filter covers our contact info's slice of hash
    // space, and does not hold it, is answered with it.
    let own = node.own_contact_info().clone();
    let bucket = catchup_gossip::bloom::hash_as_u64(own.hash()) >> 58;
    let filter = catchup_gossip::bloom::CrdsFilter {
        filter: catchup_gossip::bloom::Bloom::new(4096, vec![1, 2, 3]),
        mask: catchup_gossip::bloom::compute_mask(bucket, 6),
        mask_bits: 6,
    };
    assert!(filter.test_mask(own.hash()) && !filter.contains(own.hash()));
    let request = Protocol::PullRequest(filter.clone(), signed_contact(&caller, now, 42, 7100));
    let answers = node
        .handle_packet(addr(7100), &request.encode(), now)
        .unwrap();
    let mut carried = Vec::new();
    for answer in &answers {
        let Protocol::PullResponse(from, values) =
            protocol::decode_verified(&answer.bytes).unwrap()
        else {
            panic!("expected a pull response");
        };
        assert_eq!(from, node.pubkey());
        carried.extend(values);
    }
    assert!(carried.contains(&own));
    assert!(carried.iter().all(|value| filter.test_mask(value.hash())));
    // Once the caller holds it, it is not sent again.
    let mut holding = filter.clone();
    holding.add(own.hash());
    let request = Protocol::PullRequest(holding, signed_contact(&caller, now, 42, 7100));
    let answers = node
        .handle_packet(addr(7100), &request.encode(), now)
        .unwrap();
    assert!(answers.iter().all(|answer| {
        let Ok(Protocol::PullResponse(_, values)) = protocol::decode(&answer.bytes) else {
            return false;
        };
        !values.contains(&own)
    }));
    // Another shred version: ignored altogether.
    let foreign = SigningKey::from_bytes(&[8; 32]);
    let request = Protocol::PullRequest(filter, signed_contact(&foreign, now, 7, 7200));
    assert!(node
        .handle_packet(addr(7200), &request.encode(), now)
        .unwrap()
        .is_empty());
    assert!(node.contact_info(&Pubkey::of(&foreign)).is_none());
}

#[test]
fn values_before_their_origins_contact_info_in_one_packet_are_kept() {
    let now = 1_000_000;
    let mut node = client(16);
    let peer = SigningKey::from_bytes(&[12; 32]);
    let hashes = CrdsValue::new_signed(
        CrdsData::SnapshotHashes(SnapshotHashes {
            from: Pubkey::of(&peer),
            full: (10, Hash([3; 32])),
            incremental: vec![],
            wallclock: now,
        }),
        &peer,
    );
    let push = Protocol::PushMessage(
        Pubkey::of(&peer),
        vec![hashes, signed_contact(&peer, now, 42, 7300)],
    );
    node.handle_packet(addr(7300), &push.encode(), now).unwrap();
    assert_eq!(
        node.snapshot_hashes(&Pubkey::of(&peer)).unwrap().full,
        (10, Hash([3; 32]))
    );
}

#[test]
fn unusable_configured_sockets_are_refused() {
    let key = SigningKey::from_bytes(&[13; 32]);
    let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8001);
    let config = ClientConfig::new(unspecified, vec![], 1);
    assert!(GossipClient::new(key.clone(), config, 1, 0).is_err());
    let mut config = ClientConfig::new(addr(8001), vec![], 1);
    config.rpc_addr = Some(addr(0));
    assert!(GossipClient::new(key, config, 1, 0).is_err());
}

#[test]
fn old_values_are_purged() {
    let now = 1_000_000;
    let mut node = client(16);
    let peer = SigningKey::from_bytes(&[14; 32]);
    node.insert_value(signed_contact(&peer, now, 42, 7400), now)
        .unwrap();
    let timeout_ms = ClientConfig::new(addr(1), vec![], 0).value_timeout_ms;
    let _ = node.tick(now + timeout_ms);
    assert!(node.contact_info(&Pubkey::of(&peer)).is_some());
    let _ = node.tick(now + timeout_ms + 1);
    assert!(node.contact_info(&Pubkey::of(&peer)).is_none());
    assert_eq!(node.stats().values_purged, 1);
}

#[test]
fn pings_per_round_are_bounded() {
    let now = 1_000_000;
    let mut node = client(256);
    for seed in 0..100u8 {
        let peer = SigningKey::from_bytes(&[seed.wrapping_add(100); 32]);
        node.insert_value(
            signed_contact(&peer, now, 42, 10_000 + u16::from(seed)),
            now,
        )
        .unwrap();
    }
    let out = node.tick(now);
    let pings = out
        .iter()
        .filter(|packet| {
            matches!(
                protocol::decode(&packet.bytes),
                Ok(Protocol::PingMessage(_))
            )
        })
        .count();
    assert_eq!(
        pings,
        ClientConfig::new(addr(1), vec![], 0).max_pings_per_round
    );
    // Pull requests need a target: no entrypoint and no verified peer, none sent.
    assert!(out.iter().all(|packet| !matches!(
        protocol::decode(&packet.bytes),
        Ok(Protocol::PullRequest(..))
    )));
}

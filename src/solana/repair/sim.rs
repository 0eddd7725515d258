//! A deterministic simulator for the repair engine: seeded peers (the real sans-IO repair
//! server over a shared ledger) with latency, jitter, loss, lies and silence, on a virtual
//! clock. Same seed, same run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use catchup_shred::ed25519_dalek::SigningKey;
use catchup_shred::repair::Pubkey;
use catchup_shred::serve::{MemLedger, ServeRepair};
use catchup_shred::Shred;
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::engine::{Action, EngineConfig, LeaderSchedule, PeerId, Progress, RepairEngine};

#[derive(Clone, Copy, Debug, Default)]
pub struct SimPeer {
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Packets lost each way, per thousand.
    pub loss_per_mille: u32,
    /// Responses replaced by a wrong shred (corrupted, other index, other nonce), per thousand.
    pub lie_per_mille: u32,
    /// Never answers.
    pub silent: bool,
    /// The engine is told this peer's key up front (else it learns it from a ping).
    pub key_known: bool,
}

pub struct SimReport {
    pub completed: BTreeMap<u64, Vec<Vec<u8>>>,
    pub virtual_ms: u64,
    pub progress: Progress,
    pub done: bool,
    /// The shreds the engine asked to persist (with `EngineConfig::persist`), in order.
    pub stored: Vec<StoredShred>,
}

/// A shred as a store keeps it: (slot, index, bytes).
pub type StoredShred = (u64, u32, Vec<u8>);

const T0_MS: u64 = 1_700_000_000_000;
const TICK_MS: u64 = 5;

enum Ev {
    ToPeer(usize, Vec<u8>),
    ToEngine(usize, Vec<u8>),
}

/// Run one engine against `peers` serving `shreds` until it is done or `max_virtual_ms`.
pub fn run(
    shreds: &[Vec<u8>],
    leader: Pubkey,
    cfg: EngineConfig,
    peers: &[SimPeer],
    seed: u64,
    max_virtual_ms: u64,
) -> SimReport {
    run_resumed(shreds, leader, cfg, peers, seed, max_virtual_ms, &[])
}

/// Like [`run`], the engine first loading `stored` (an earlier run's [`SimReport::stored`],
/// possibly damaged) as a restarted driver loads its store.
pub fn run_resumed(
    shreds: &[Vec<u8>],
    leader: Pubkey,
    cfg: EngineConfig,
    peers: &[SimPeer],
    seed: u64,
    max_virtual_ms: u64,
    stored: &[StoredShred],
) -> SimReport {
    let mut ledger = MemLedger::new();
    for b in shreds {
        if let Ok(s) = Shred::from_bytes(b) {
            ledger.insert(&s);
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut engine = RepairEngine::new(
        cfg,
        SigningKey::from_bytes(&rng.gen()),
        LeaderSchedule::Fixed(leader),
    );
    for (slot, index, bytes) in stored {
        engine.preload(*slot, *index, bytes);
    }
    let mut kept = Vec::new();
    let mut servers: Vec<ServeRepair<u8>> = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        let server = ServeRepair::new(
            SigningKey::from_bytes(&rng.gen()),
            seed.wrapping_add(i as u64),
        );
        engine.add_peer(p.key_known.then(|| server.id()));
        servers.push(server);
    }
    let mut queue: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut events: Vec<Option<Ev>> = Vec::new();
    let mut seq = 0u64;
    let mut completed = BTreeMap::new();
    let mut now = T0_MS;
    let end = T0_MS + max_virtual_ms;
    let mut next_tick = now;
    let mut push = |queue: &mut BinaryHeap<Reverse<(u64, u64, usize)>>,
                    events: &mut Vec<Option<Ev>>,
                    at: u64,
                    ev: Ev| {
        events.push(Some(ev));
        seq += 1;
        queue.push(Reverse((at, seq, events.len() - 1)));
    };
    while now < end && !engine.is_done() {
        let next_ev = queue.peek().map(|r| r.0 .0).unwrap_or(u64::MAX);
        if next_tick <= next_ev {
            now = next_tick;
            engine.on_tick(now);
            next_tick += TICK_MS;
        } else {
            let Reverse((at, _, idx)) = queue.pop().expect("peeked");
            now = at;
            match events[idx].take().expect("each event once") {
                Ev::ToEngine(peer, bytes) => engine.on_packet(now, PeerId(peer), &bytes),
                Ev::ToPeer(peer, bytes) => {
                    let p = peers[peer];
                    if p.silent {
                        continue;
                    }
                    for mut resp in servers[peer].handle(&ledger, now, 0, &bytes) {
                        if rng.gen_range(0..1000) < p.loss_per_mille {
                            continue;
                        }
                        if rng.gen_range(0..1000) < p.lie_per_mille {
                            lie(&mut rng, &mut resp, &ledger);
                        }
                        let delay = p.latency_ms + rng.gen_range(0..=p.jitter_ms);
                        push(
                            &mut queue,
                            &mut events,
                            now + delay,
                            Ev::ToEngine(peer, resp),
                        );
                    }
                }
            }
        }
        while let Some(a) = engine.next_action() {
            match a {
                Action::Send { peer, packet } => {
                    let p = peers[peer.0];
                    if rng.gen_range(0..1000) < p.loss_per_mille {
                        continue;
                    }
                    let delay = p.latency_ms + rng.gen_range(0..=p.jitter_ms);
                    push(
                        &mut queue,
                        &mut events,
                        now + delay,
                        Ev::ToPeer(peer.0, packet),
                    );
                }
                Action::SlotComplete { slot, shreds } => {
                    completed.insert(slot, shreds);
                }
                Action::Store { slot, index, shred } => kept.push((slot, index, shred)),
            }
        }
    }
    SimReport {
        completed,
        virtual_ms: now - T0_MS,
        progress: engine.progress(),
        done: engine.is_done(),
        stored: kept,
    }
}

fn lie(rng: &mut StdRng, resp: &mut Vec<u8>, ledger: &MemLedger) {
    let n = resp.len();
    if n < 200 {
        return;
    }
    match rng.gen_range(0..4) {
        0 => {
            let pos = rng.gen_range(64..n - 4);
            resp[pos] ^= 0x55; // corrupted shred: proof or signature fails
        }
        1 => {
            let pos = n - 1;
            resp[pos] ^= 0x01; // wrong nonce: unsolicited
        }
        2 => {
            // a genuine shred of another index, with the request's nonce
            let nonce: [u8; 4] = resp[n - 4..].try_into().expect("4 bytes");
            let slot = ledger.slots().next().unwrap_or(0);
            if let Some(other) = ledger.get(slot, 0) {
                resp.clear();
                resp.extend_from_slice(other);
                resp.extend_from_slice(&nonce);
            }
        }
        _ => {
            resp.truncate(n / 2); // truncated packet
        }
    }
}

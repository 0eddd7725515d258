//! A seeded, deterministic simulator: shards as separate engine instances exchanging
//! messages through queues, peers as serving peers with latency, loss, lies, disconnects
//! and stale state, all in virtual time on one thread. Kills drop every engine's memory
//! and restart it from its store and journal.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use alloy_primitives::{keccak256, B256};
use serde::Serialize;

use super::chain::{generate_chain, generate_chain_with_roots, ChainData, SimRng, StateData};
use super::config::{SyncConfig, SyncMode};
use super::engine::{progress_line, Action, Engine, Event, Progress, ShardId, Status};
use super::sim_live::LiveStates;
use super::store::{MemStore, SyncStore};
use super::trie::{decode_node, Node, NodeRef};
use super::types::{AccountView, PeerId};
use crate::eth::serve::{corrupt, garbage, Fault, ServingPeer};
use crate::node::cpu::thread_cpu_ns;
use catchup_eth::{EMPTY_CODE_HASH, EMPTY_ROOT};

/// A mix of peer behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Every peer honest.
    Honest,
    /// Honest, slow, lossy, disconnecting, stale and lying peers.
    Mixed,
    /// A third of the peers lying, the rest honest or flaky.
    Byzantine,
    Slow,
    Lossy,
    /// Half the peers answer random bytes in the right response shapes.
    Garbage,
    /// Two of every three peers lie, and collude: they tell the same lie for the same
    /// request (more than a third, so they can win a pivot vote).
    Colluding,
    /// Every peer lost the state (answers state requests empty): the sync must say so.
    Stale,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub peers: usize,
    pub profile: Profile,
    pub seed: u64,
    pub accounts: u64,
    pub blocks: u64,
    /// Slots of the one large storage trie of the generated state.
    pub big_storage_slots: u64,
    pub shards: usize,
    /// Kill every engine when progress first reaches each of these percentages.
    pub kill_at_pct: Vec<u32>,
    /// Switch mode when progress first reaches this percentage.
    pub switch_at: Option<(u32, SyncMode)>,
    /// Give up after this much virtual time.
    pub max_virtual_ms: u64,
    /// Base one-way latency range of peers.
    pub latency_ms: (u64, u64),
    /// Print the progress line (stderr) and publish `get_status`/`get_progress` in the
    /// admin endpoint's `/status` (section `ethsync`) this often, in wall-clock ms.
    pub progress_every_ms: Option<u64>,
    /// The chain grows while syncing: peers first announce this head, then one more
    /// block every `ms_per_block` of virtual time (up to the generated chain's head).
    pub initial_best: Option<u64>,
    pub ms_per_block: u64,
    /// Generated chains only: blocks after this one carry a changed state (a re-selected
    /// pivot past it has a new root; fast sync heals into it, snap restarts its ranges).
    pub state_change_at: Option<u64>,
    /// A moving chain: the peers start at `blocks` and add a block every `grow_every_ms`
    /// of virtual time (at most `grow_blocks` of them), each changing the state, and
    /// announce each new head. 0: no growth this way.
    pub grow_every_ms: u64,
    pub grow_blocks: u64,
    /// With a moving chain: the peers keep the states of their last this many blocks
    /// only and answer older roots empty (geth keeps 128).
    pub state_history: u64,
    /// With a moving chain: a consensus client's forkchoice updates, as `Event::Target`
    /// to shard 0: the head at the start, then every this many new blocks the new head.
    /// 0: none.
    pub forkchoice_every_blocks: u64,
    pub sync: SyncConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            peers: 9,
            profile: Profile::Mixed,
            seed: 1,
            accounts: 2_000,
            blocks: 600,
            big_storage_slots: 600,
            shards: 2,
            kill_at_pct: Vec::new(),
            switch_at: None,
            max_virtual_ms: 6 * 3_600_000,
            latency_ms: (10, 80),
            progress_every_ms: None,
            initial_best: None,
            ms_per_block: 0,
            state_change_at: None,
            grow_every_ms: 0,
            grow_blocks: 0,
            state_history: 128,
            forkchoice_every_blocks: 0,
            sync: SyncConfig::default(),
        }
    }
}

/// One peer's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct PeerReport {
    pub peer: PeerId,
    pub fault: &'static str,
    pub requests: u64,
    pub dropped_by_us: bool,
}

/// The outcome of a simulated sync.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub finished: bool,
    pub failure: Option<String>,
    pub mode: String,
    pub state_root: Option<String>,
    pub expected_state_root: String,
    pub head_hash: Option<String>,
    pub expected_head_hash: String,
    pub pivot_block: Option<u64>,
    /// The final pivot's hash, and the first pivot the sync chose.
    pub pivot_hash: Option<String>,
    pub first_pivot_block: Option<u64>,
    /// Every pivot shard 0 used, in order (a re-pivot adds one).
    pub pivots: Vec<u64>,
    /// The blocks given as sync targets (forkchoice updates), in order.
    pub targets_given: Vec<u64>,
    /// The peers' head when the sync ended.
    pub peers_head: u64,
    /// State nodes and codes fetched by heal walks (after snap ranges or a new pivot).
    pub healed_nodes: u64,
    pub headers_verified: u64,
    pub bodies_verified: u64,
    pub receipts_verified: u64,
    pub state_nodes_verified: u64,
    pub codes_verified: u64,
    pub state_complete: bool,
    pub chain_complete: bool,
    /// Finished, complete, and equal to what the peers serve.
    pub correct: bool,
    pub restarts: u32,
    /// Most requests ever in flight from one shard.
    pub max_inflight_per_shard: usize,
    /// Most header batches one shard ever held in memory waiting for the join.
    pub max_held_batches: usize,
    /// Pivots selected after the first (the head moved too far, or was stale at resume).
    pub repivots: u64,
    pub duplicate_writes: u64,
    pub virtual_ms: u64,
    pub events: u64,
    pub trace_hash: String,
    pub lies_detected: u64,
    pub timeouts: u64,
    pub peers: Vec<PeerReport>,
    pub progress: Progress,
    pub status: Status,
    pub requests_by_kind: BTreeMap<String, u64>,
    /// Wall-clock time spent inside each shard's engine (not the simulated peers), in µs.
    /// Measured, so not part of the deterministic report.
    #[serde(skip)]
    pub engine_busy_us: Vec<u64>,
    /// The same in ns, summed per event without rounding each event down to whole µs.
    #[serde(skip)]
    /// CPU time this thread spent inside each shard's engine (so that other work on
    /// the machine does not count).
    pub engine_busy_ns: Vec<u64>,
}

struct SimPeer {
    fault: Fault,
    serving: ServingPeer,
    latency_ms: u64,
    rng: SimRng,
    alive: bool,
    requests: u64,
    leave_after: u64,
}

enum SimEv {
    Engine(ShardId, Event),
    Tick(ShardId),
    /// The moving chain adds a block.
    Grow,
}

fn assign_faults(profile: Profile, n: usize, rng: &mut SimRng) -> Vec<Fault> {
    let mut f: Vec<Fault> = (0..n)
        .map(|i| match profile {
            Profile::Honest => Fault::Honest,
            Profile::Slow => {
                if i % 2 == 0 {
                    Fault::Slow
                } else {
                    Fault::Honest
                }
            }
            Profile::Garbage => {
                if i % 2 == 0 {
                    Fault::Garbage
                } else {
                    Fault::Honest
                }
            }
            Profile::Lossy => {
                if i % 2 == 0 {
                    Fault::Lossy
                } else {
                    Fault::Honest
                }
            }
            Profile::Byzantine => {
                if i < n / 3 {
                    Fault::Lying
                } else {
                    [
                        Fault::Honest,
                        Fault::Honest,
                        Fault::Slow,
                        Fault::Lossy,
                        Fault::Disconnecting,
                        Fault::Stale,
                    ][i % 6]
                }
            }
            Profile::Stale => Fault::Stale,
            Profile::Colluding => {
                if i % 3 == 2 {
                    Fault::Honest
                } else {
                    Fault::Lying
                }
            }
            Profile::Mixed => [
                Fault::Honest,
                Fault::Slow,
                Fault::Lossy,
                Fault::Honest,
                Fault::Lying,
                Fault::Disconnecting,
                Fault::Stale,
                Fault::Honest,
            ][i % 8],
        })
        .collect();
    // Shuffle deterministically so the liars are not always the lowest ids.
    for i in (1..f.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        f.swap(i, j);
    }
    f
}

/// Simulator events by (virtual time, sequence number).
type EventQueue = BTreeMap<(u64, u64), SimEv>;

/// Generate a chain and state from the seed and run the simulation over them.
pub fn run(cfg: &SimConfig) -> SimReport {
    let state = Arc::new(StateData::generate(
        cfg.accounts,
        cfg.big_storage_slots,
        cfg.seed,
    ));
    if cfg.grow_every_ms > 0 && cfg.grow_blocks > 0 {
        let roots = super::sim_live::evolved_roots(&state, cfg.seed, cfg.grow_blocks);
        let base_until = cfg.blocks;
        let base_root = state.root;
        let chain = Arc::new(generate_chain_with_roots(
            cfg.blocks + cfg.grow_blocks,
            &|n| {
                if n <= base_until {
                    base_root
                } else {
                    roots[(n - base_until - 1) as usize]
                }
            },
            cfg.seed,
        ));
        let mut sync = cfg.sync.clone();
        sync.trusted_anchor = Some(chain.anchor_hash());
        sync.anchor_number = chain.base;
        let live = LiveStates::new(state.clone(), base_until, cfg.state_history, cfg.seed);
        return run_inner(
            &SimConfig {
                sync,
                ..cfg.clone()
            },
            chain,
            vec![state],
            Some(live),
        );
    }
    if let Some(x) = cfg.state_change_at {
        // Two states: blocks up to `x` carry the first, later blocks the changed one.
        let later = Arc::new(StateData::generate_variant(
            cfg.accounts,
            cfg.big_storage_slots,
            cfg.seed,
            1,
        ));
        let (a, b) = (state.root, later.root);
        let chain = Arc::new(generate_chain_with_roots(
            cfg.blocks,
            &|n| if n <= x { a } else { b },
            cfg.seed,
        ));
        let mut sync = cfg.sync.clone();
        sync.trusted_anchor = Some(chain.anchor_hash());
        sync.anchor_number = chain.base;
        return run_over_states(
            &SimConfig {
                sync,
                ..cfg.clone()
            },
            chain,
            vec![state, later],
        );
    }
    let chain = Arc::new(generate_chain(cfg.blocks, state.root, cfg.seed));
    let mut sync = cfg.sync.clone();
    sync.trusted_anchor = Some(chain.anchor_hash());
    sync.anchor_number = chain.base;
    run_over(
        &SimConfig {
            sync,
            ..cfg.clone()
        },
        chain,
        state,
    )
}

/// Run the simulation over a given chain and state (served by every non-stale peer).
pub fn run_over(cfg: &SimConfig, chain: Arc<ChainData>, state: Arc<StateData>) -> SimReport {
    run_over_states(cfg, chain, vec![state])
}

/// Run the simulation over a chain whose blocks carry the roots of `states` (all served by
/// every non-stale peer; the first is the one the work estimate uses).
pub fn run_over_states(
    cfg: &SimConfig,
    chain: Arc<ChainData>,
    states: Vec<Arc<StateData>>,
) -> SimReport {
    run_inner(cfg, chain, states, None)
}

/// Point a peer at the moving chain's head and the states it still keeps.
fn serve_live(p: &mut SimPeer, live: &LiveStates) {
    p.serving.best = live.head();
    if p.fault == Fault::Stale {
        return;
    }
    let mut served = live.served_at(live.head()).into_iter();
    p.serving.state = served.next();
    p.serving.extra_states = served.collect();
}

fn run_inner(
    cfg: &SimConfig,
    chain: Arc<ChainData>,
    states: Vec<Arc<StateData>>,
    mut live: Option<LiveStates>,
) -> SimReport {
    let state = states[0].clone();
    let mut rng = SimRng::new(cfg.seed);
    let faults = assign_faults(cfg.profile, cfg.peers, &mut rng);
    let mut peers: Vec<SimPeer> = faults
        .iter()
        .enumerate()
        .map(|(i, &fault)| {
            let (st, extra) = if fault == Fault::Stale {
                (None, Vec::new())
            } else {
                (Some(state.clone()), states[1..].to_vec())
            };
            let lat =
                cfg.latency_ms.0 + rng.below(cfg.latency_ms.1.saturating_sub(cfg.latency_ms.0) + 1);
            SimPeer {
                fault,
                serving: ServingPeer {
                    extra_states: extra,
                    ..ServingPeer::new(chain.clone(), st)
                },
                latency_ms: if fault == Fault::Slow { lat * 10 } else { lat },
                rng: SimRng::new(cfg.seed.wrapping_mul(1000).wrapping_add(i as u64)),
                alive: true,
                requests: 0,
                leave_after: 20 + rng.below(200),
            }
        })
        .collect();
    if let Some(l) = &live {
        for p in peers.iter_mut() {
            serve_live(p, l);
        }
    }
    let shards = cfg.shards.max(1);
    let mut stores: Vec<MemStore> = (0..shards).map(|_| MemStore::default()).collect();
    let mut engines: Vec<Engine> = (0..shards)
        .map(|s| Engine::new(cfg.sync.clone(), s, shards, &stores[s]))
        .collect();
    let mut queue: BTreeMap<(u64, u64), SimEv> = BTreeMap::new();
    let mut seq = 0u64;
    let mut push = |q: &mut BTreeMap<(u64, u64), SimEv>, t: u64, ev: SimEv| {
        seq += 1;
        q.insert((t, seq), ev);
    };
    let start_engines =
        |q: &mut EventQueue,
         now: u64,
         peers: &[SimPeer],
         push: &mut dyn FnMut(&mut EventQueue, u64, SimEv)| {
            for s in 0..shards {
                for (i, p) in peers.iter().enumerate() {
                    if p.alive {
                        push(q, now, SimEv::Engine(s, Event::PeerJoined(i as PeerId)));
                    }
                }
                push(q, now + 1, SimEv::Tick(s));
            }
        };
    start_engines(&mut queue, 0, &peers, &mut push);
    let mut targets_given: Vec<u64> = Vec::new();
    if let Some(l) = &live {
        push(&mut queue, cfg.grow_every_ms, SimEv::Grow);
        if cfg.forkchoice_every_blocks > 0 {
            let h = chain.header(l.head()).expect("the live head is generated");
            targets_given.push(h.number);
            push(&mut queue, 1, SimEv::Engine(0, Event::Target(h.hash)));
        }
    }
    let mut first_pivot: Option<u64> = None;
    let mut pivots: Vec<u64> = Vec::new();

    let total_work = (cfg.blocks
        + state.nodes.len() as u64
        + if cfg.sync.mode == SyncMode::Snap {
            state.accounts.len() as u64
        } else {
            0
        })
    .max(1);
    let mut kills: Vec<u32> = cfg.kill_at_pct.clone();
    kills.sort_unstable();
    kills.reverse();
    let mut switch = cfg.switch_at;
    let mut trace: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |x: u64| {
        trace ^= x;
        trace = trace.wrapping_mul(0x0100_0000_01b3);
    };
    let mut finished = false;
    let mut failure = None;
    let mut now = 0u64;
    let mut events = 0u64;
    let mut restarts = 0u32;
    let mut busy_ns = vec![0u64; shards];
    let mut max_inflight = 0usize;
    let mut max_held = 0usize;
    let mut last_progress = std::time::Instant::now();
    // Counters of engines that were killed (their memory is gone, their work is not).
    let mut carried = Progress::default();
    let mut carried_repivots = 0u64;
    let mut dropped: BTreeSet<PeerId> = BTreeSet::new();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut acts = Vec::new();
    let max_events = 50_000_000u64;
    let work_done = |stores: &[MemStore]| -> u64 {
        stores
            .iter()
            .map(|s| {
                // Slots kept of incomplete storage tries count too: a kill can land
                // inside a large storage trie.
                let kept: u64 = s.storage_slots.values().map(|v| v.len() as u64).sum();
                s.headers.len() as u64 + s.nodes.len() as u64 + s.accounts.len() as u64 + kept
            })
            .sum()
    };
    let mut last_work_check = 0u64;
    while let Some(((t, _), ev)) = queue.pop_first() {
        now = t;
        events += 1;
        if now > cfg.max_virtual_ms || events > max_events {
            failure = Some(format!(
                "gave up after {now} ms of virtual time and {events} events"
            ));
            break;
        }
        if let SimEv::Grow = ev {
            mix(6);
            let l = live.as_mut().expect("growth only with a moving chain");
            if l.head() < chain.head().number {
                l.grow();
                for (i, p) in peers.iter_mut().enumerate() {
                    serve_live(p, l);
                    if p.alive {
                        let number = l.head();
                        for s in 0..shards {
                            push(
                                &mut queue,
                                now + p.latency_ms,
                                SimEv::Engine(
                                    s,
                                    Event::PeerHead {
                                        peer: i as PeerId,
                                        number,
                                    },
                                ),
                            );
                        }
                    }
                }
                let k = cfg.forkchoice_every_blocks;
                if k > 0 && l.head() % k == 0 {
                    let h = chain.header(l.head()).expect("the live head is generated");
                    targets_given.push(h.number);
                    push(&mut queue, now + 1, SimEv::Engine(0, Event::Target(h.hash)));
                }
                push(&mut queue, now + cfg.grow_every_ms, SimEv::Grow);
            }
            continue;
        }
        let shard = match &ev {
            SimEv::Engine(s, _) | SimEv::Tick(s) => *s,
            SimEv::Grow => unreachable!("handled above"),
        };
        let event = match ev {
            SimEv::Tick(s) => {
                push(&mut queue, now + 100, SimEv::Tick(s));
                Event::Tick
            }
            SimEv::Engine(_, e) => e,
            SimEv::Grow => unreachable!("handled above"),
        };
        mix(now);
        mix(shard as u64);
        match &event {
            Event::Response { peer, id, .. } => {
                mix(1);
                mix(*peer as u64);
                mix(*id);
            }
            Event::Timeout { peer, id } => {
                mix(2);
                mix(*peer as u64);
                mix(*id);
            }
            Event::Shard(_) => mix(3),
            Event::Tick => mix(4),
            Event::PeerJoined(p) | Event::PeerLeft(p) | Event::PeerLied(p) => mix(5 + *p as u64),
            Event::PeerHead { peer, number } => {
                mix(7);
                mix(*peer as u64);
                mix(*number);
            }
            Event::Target(h) => mix(u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))),
        }
        acts.clear();
        let t0 = thread_cpu_ns();
        engines[shard].handle(now, event, &mut stores[shard], &mut acts);
        busy_ns[shard] += thread_cpu_ns().saturating_sub(t0);
        max_inflight = max_inflight.max(engines[shard].inflight_len());
        max_held = max_held.max(engines[shard].held_batches());
        if first_pivot.is_none() && shard == 0 {
            first_pivot = engines[0].pivot().map(|p| p.number);
        }
        if shard == 0 {
            if let Some(n) = engines[0].pivot().map(|p| p.number) {
                if pivots.last() != Some(&n) {
                    pivots.push(n);
                }
            }
        }
        for a in acts.drain(..) {
            match a {
                Action::Send {
                    peer,
                    id,
                    req,
                    timeout_ms,
                } => {
                    *by_kind.entry(req.kind().to_string()).or_default() += 1;
                    push(
                        &mut queue,
                        now + timeout_ms,
                        SimEv::Engine(shard, Event::Timeout { peer, id }),
                    );
                    let Some(p) = peers.get_mut(peer as usize) else {
                        continue;
                    };
                    if !p.alive {
                        continue;
                    }
                    p.requests += 1;
                    if let (Some(b0), None) = (cfg.initial_best, &live) {
                        let grown = now.checked_div(cfg.ms_per_block).unwrap_or(0);
                        p.serving.best = (b0 + grown).min(chain.head().number);
                    }
                    let mut resp = p.serving.handle(&req);
                    if cfg.profile == Profile::Colluding {
                        // The same lie for the same request in the same second, from
                        // every liar.
                        let fp = keccak256(format!("{req:?} {}", now / 1000).as_bytes());
                        let fp = u64::from_le_bytes(fp.0[..8].try_into().expect("8 bytes"));
                        p.rng = SimRng::new(cfg.seed ^ fp);
                    }
                    match p.fault {
                        Fault::Lying => resp = corrupt(resp, &mut p.rng),
                        Fault::Garbage => resp = garbage(resp, &mut p.rng),
                        Fault::Lossy if p.rng.chance(20) => continue,
                        Fault::Disconnecting if p.requests >= p.leave_after => {
                            p.alive = false;
                            for s in 0..shards {
                                push(&mut queue, now + 1, SimEv::Engine(s, Event::PeerLeft(peer)));
                            }
                            continue;
                        }
                        _ => {}
                    }
                    let lat = p.latency_ms * 2 + resp.size_bytes() as u64 / 20_000 + p.rng.below(5);
                    push(
                        &mut queue,
                        now + lat,
                        SimEv::Engine(shard, Event::Response { peer, id, resp }),
                    );
                }
                Action::ToShard { shard: to, msg } => {
                    push(&mut queue, now + 1, SimEv::Engine(to, Event::Shard(msg)))
                }
                Action::DropPeer(p) => {
                    dropped.insert(p);
                }
                Action::Finished => finished = true,
                Action::Failed(m) => failure = Some(m),
            }
        }
        if finished || failure.is_some() {
            break;
        }
        if let Some(every) = cfg.progress_every_ms {
            if last_progress.elapsed().as_millis() as u64 >= every {
                last_progress = std::time::Instant::now();
                publish(&engines, &carried, true);
            }
        }
        // Kills and mode switches at progress points (checked every 64 events).
        if events - last_work_check >= 64 && (!kills.is_empty() || switch.is_some()) {
            last_work_check = events;
            let pct = work_done(&stores) * 100 / total_work;
            if let Some((at, mode)) = switch {
                if pct >= at as u64 {
                    switch = None;
                    let mut out = Vec::new();
                    engines[0].switch_mode(mode, &mut out);
                    for a in out {
                        if let Action::ToShard { shard: to, msg } = a {
                            push(&mut queue, now + 1, SimEv::Engine(to, Event::Shard(msg)));
                        }
                    }
                }
            }
            if kills.last().is_some_and(|&k| pct >= k as u64) {
                kills.pop();
                restarts += 1;
                for e in &engines {
                    carried.add(&e.get_progress());
                }
                carried_repivots += engines[0].repivots();
                queue.clear();
                engines = (0..shards)
                    .map(|s| Engine::new(cfg.sync.clone(), s, shards, &stores[s]))
                    .collect();
                start_engines(&mut queue, now + 1, &peers, &mut push);
                if live.is_some() {
                    push(&mut queue, now + cfg.grow_every_ms, SimEv::Grow);
                }
            }
        }
    }

    if cfg.progress_every_ms.is_some() {
        publish(&engines, &carried, false);
    }
    // Independent final check over the stores.

    let status = engines[0].status();
    let mut progress = carried;
    progress.state_nodes_queued = 0;
    for e in &engines {
        progress.add(&e.get_progress());
    }
    // The chain may have grown while syncing: the target is the head the sync agreed on
    // (it must be the peers' chain, and at least as high as what they first announced).
    let target = status.highest_block.unwrap_or(chain.head().number);
    let expected_head = chain.header(target).map(|h| h.hash).unwrap_or_default();
    let (headers_ok, headers_verified, head_hash) = check_headers(&stores, &chain, target);
    let (bodies_ok, bodies_verified, receipts_verified) = check_bodies(
        &stores,
        &chain,
        &cfg.sync,
        status.pivot_block.unwrap_or(0),
        target,
    );
    // The state to have is the one at the pivot the sync ended with.
    let want_root = status
        .pivot_block
        .and_then(|p| chain.header(p))
        .map(|h| h.state_root)
        .unwrap_or(state.root);
    let (state_ok, nodes, codes) = check_state(&stores, want_root);
    let state_root = status.state_root.clone();
    let correct = finished
        && failure.is_none()
        && headers_ok
        && bodies_ok
        && state_ok
        && head_hash == Some(expected_head)
        && state_root.as_deref() == Some(&format!("{want_root}"));
    SimReport {
        finished,
        failure,
        mode: engines[0].mode().name().to_string(),
        state_root,
        expected_state_root: format!("{want_root}"),
        head_hash: head_hash.map(|h| format!("{h}")),
        expected_head_hash: format!("{expected_head}"),
        pivot_block: status.pivot_block,
        pivot_hash: status.pivot_hash.clone(),
        first_pivot_block: first_pivot,
        pivots,
        targets_given,
        peers_head: live
            .as_ref()
            .map(|l| l.head())
            .unwrap_or(chain.head().number),
        healed_nodes: progress.healed_nodes,
        headers_verified,
        bodies_verified,
        receipts_verified,
        state_nodes_verified: nodes,
        codes_verified: codes,
        state_complete: state_ok,
        chain_complete: headers_ok && bodies_ok,
        correct,
        restarts,
        repivots: engines[0].repivots() + carried_repivots,
        max_inflight_per_shard: max_inflight,
        max_held_batches: max_held,
        duplicate_writes: stores.iter().map(|s| s.duplicate_writes).sum(),
        virtual_ms: now,
        events,
        trace_hash: format!("{trace:016x}"),
        lies_detected: progress.lies_detected,
        timeouts: progress.timeouts,
        peers: peers
            .iter()
            .enumerate()
            .map(|(i, p)| PeerReport {
                peer: i as PeerId,
                fault: p.fault.name(),
                requests: p.requests,
                dropped_by_us: dropped.contains(&(i as PeerId)),
            })
            .collect(),
        progress,
        status,
        requests_by_kind: by_kind,
        engine_busy_us: busy_ns.iter().map(|ns| ns / 1000).collect(),
        engine_busy_ns: busy_ns,
    }
}

/// `get_status` of the whole sync (shard 0's) and `get_progress` summed over shards.
pub fn status_and_progress(engines: &[Engine], carried: &Progress) -> (Status, Progress) {
    let mut p = carried.clone();
    p.state_nodes_queued = 0;
    for e in engines {
        p.add(&e.get_progress());
    }
    (engines[0].status(), p)
}

fn publish(engines: &[Engine], carried: &Progress, line: bool) {
    let (status, progress) = status_and_progress(engines, carried);
    if line {
        eprintln!("{}", progress_line(&status, &progress));
    }
    crate::node::admin::set_status(
        "ethsync",
        serde_json::json!({ "status": status, "progress": progress }),
    );
}

fn find_header(stores: &[MemStore], n: u64) -> Option<&super::types::Header> {
    stores.iter().find_map(|s| s.headers.get(&n))
}

/// Every header from the anchor to the head is stored and linked; returns the head hash.
pub fn check_headers(
    stores: &[MemStore],
    chain: &ChainData,
    head: u64,
) -> (bool, u64, Option<B256>) {
    let mut prev = chain.anchor_hash();
    let mut count = 0;
    let mut last = None;
    for n in chain.base.max(1)..=head {
        let Some(h) = find_header(stores, n) else {
            return (false, count, last);
        };
        if h.parent_hash != prev || keccak256(&h.raw) != h.hash {
            return (false, count, last);
        }
        prev = h.hash;
        last = Some(h.hash);
        count += 1;
    }
    (true, count, last)
}

pub fn check_bodies(
    stores: &[MemStore],
    chain: &ChainData,
    cfg: &SyncConfig,
    pivot: u64,
    head: u64,
) -> (bool, u64, u64) {
    let mut bodies = 0;
    let mut receipts = 0;
    let mut ok = true;
    for n in chain.base.max(1)..=head {
        let Some(h) = find_header(stores, n) else {
            return (false, bodies, receipts);
        };
        if n <= pivot && !cfg.bodies_before_pivot {
            continue;
        }
        let body = stores.iter().find_map(|s| s.bodies.get(&n));
        match body {
            Some(b) => {
                ok &= b.verify(h).is_ok();
                bodies += 1;
            }
            None => {
                // Only bodies that are empty by their header may be absent.
                let i = (n - chain.base) as usize;
                ok &= chain.bodies[i].verify(h).is_ok()
                    && h.transactions_root == EMPTY_ROOT
                    && h.withdrawals_root.is_none_or(|w| w == EMPTY_ROOT);
            }
        }
        if cfg.fetch_receipts && h.receipts_root != EMPTY_ROOT {
            match stores.iter().find_map(|s| s.receipts.get(&n)) {
                Some(r) => {
                    ok &= r.verify(h).is_ok();
                    receipts += 1;
                }
                None => ok = false,
            }
        }
    }
    (ok, bodies, receipts)
}

/// Walk the state from `root` over all shards' stores: every node present with the right
/// hash, every storage trie and code reached from accounts present.
pub fn check_state(stores: &[MemStore], root: B256) -> (bool, u64, u64) {
    let get = |h: &B256| stores.iter().find_map(|s| s.nodes.get(h));
    let mut stack: Vec<(Option<NodeRef>, bool)> = vec![(Some(NodeRef::Hash(root)), true)];
    let mut seen = std::collections::HashSet::new();
    let mut nodes = 0u64;
    let mut codes = BTreeSet::new();
    let mut ok = true;
    while let Some((r, is_account)) = stack.pop() {
        let raw = match r {
            None => continue,
            Some(NodeRef::Embedded(raw)) => raw.to_vec(),
            Some(NodeRef::Hash(h)) => {
                if h == EMPTY_ROOT {
                    continue;
                }
                if !seen.insert(h) {
                    continue;
                }
                match get(&h) {
                    Some(raw) if keccak256(raw) == h => {
                        nodes += 1;
                        raw.to_vec()
                    }
                    _ => {
                        ok = false;
                        continue;
                    }
                }
            }
        };
        match decode_node(&raw) {
            Ok(Node::Branch { children, .. }) => {
                for c in children.iter() {
                    stack.push((c.clone(), is_account));
                }
            }
            Ok(Node::Extension { child, .. }) => stack.push((Some(child), is_account)),
            Ok(Node::Leaf { value, .. }) => {
                if is_account {
                    match AccountView::decode(&value) {
                        Ok(a) => {
                            if a.storage_root != EMPTY_ROOT {
                                stack.push((Some(NodeRef::Hash(a.storage_root)), false));
                            }
                            if a.code_hash != EMPTY_CODE_HASH {
                                let have = stores.iter().any(|s| {
                                    s.codes
                                        .get(&a.code_hash)
                                        .is_some_and(|c| keccak256(c) == a.code_hash)
                                });
                                ok &= have;
                                codes.insert(a.code_hash);
                            }
                        }
                        Err(_) => ok = false,
                    }
                }
            }
            Err(_) => ok = false,
        }
    }
    (ok, nodes, codes.len() as u64)
}

/// The store of every shard has what it reports; used by tests.
pub fn store_counts(stores: &[MemStore]) -> (usize, usize) {
    (
        stores.iter().map(|s| s.nodes.len()).sum(),
        stores.iter().map(|s| s.headers.len()).sum(),
    )
}

#[allow(dead_code)]
fn _assert_store_object_safe(s: &dyn SyncStore) -> bool {
    s.has_node(&B256::ZERO)
}

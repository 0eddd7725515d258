//! Sync throughput per shard during a loopback sync of a generated chain and state (the
//! serving peers run in-process; only the CPU time spent inside the engines is counted),
//! beside the keccak-only ceiling of the same bytes measured in the same run: one item at
//! a time (the `alloy-primitives` keccak), and four at a time (`catchup_eth::keccak4`,
//! which the engine uses for header batches and node answers).
//!
//! `cargo bench --bench ethsync` (set `ETHSYNC_BENCH_ACCOUNTS` / `ETHSYNC_BENCH_BLOCKS`
//! to change the sizes; `ETHSYNC_BENCH_MODE=fast|snap` runs one state mode,
//! `ETHSYNC_BENCH_ROUNDS` the rounds of each, 3 by default; `ETHSYNC_BENCH_MODE=headers`
//! runs the header sync alone).

use alloy_primitives::keccak256;
use catchup::eth::sync::config::SyncMode;
use catchup::eth::sync::sim::{run, Profile, SimConfig, SimReport};
use catchup::node::cpu::thread_cpu_ns;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Hashes per second of this thread's CPU time (like the engine's time, so that other
/// work on the machine counts in neither).
fn keccak_rate(items: &[Vec<u8>]) -> f64 {
    rate(items, |all| all.iter().fold(0, |a, i| a ^ keccak256(i)[0]))
}

/// [`keccak_rate`] with four items hashed at a time where the CPU can (the engine's
/// path for header batches and node answers, `catchup_eth::keccak4`), in batches of 384.
fn keccak4_rate(items: &[Vec<u8>]) -> f64 {
    let mut out = Vec::new();
    rate(items, |all| {
        all.chunks(384).fold(0, |a, batch| {
            catchup_eth::keccak4::keccak256_each(batch, &mut out);
            a ^ out[0][0]
        })
    })
}

/// Items per second of thread CPU time of three `pass`es over `items`.
fn rate(items: &[Vec<u8>], mut pass: impl FnMut(&[Vec<u8>]) -> u8) -> f64 {
    let t = thread_cpu_ns();
    let mut acc = 0u8;
    for _ in 0..3 {
        acc ^= pass(items);
    }
    std::hint::black_box(acc);
    (items.len() * 3) as f64 / ((thread_cpu_ns() - t) as f64 / 1e9)
}

/// Sync `cfg` on one shard and print `label`'s rate of `items_of(report)` per second of
/// engine time, against keccak over `items` measured right before and right after.
fn measure(
    label: &str,
    what: &str,
    cfg: &SimConfig,
    items: &[Vec<u8>],
    items_of: impl Fn(&SimReport) -> u64,
) {
    let before = keccak_rate(items);
    // The sync starts on a heap given back to the system, as in a fresh process: memory
    // freed by the generation or an earlier round would spare it the page faults of first
    // use, which a real sync pays as its state grows.
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
    let r = run(cfg);
    let after = keccak_rate(items);
    let four = keccak4_rate(items);
    assert!(r.correct, "{label}: sync failed: {:?}", r.failure);
    let busy_s = r.engine_busy_ns[0] as f64 / 1e9;
    let ceiling = (before + after) / 2.0;
    let n = items_of(&r);
    let rate = n as f64 / busy_s;
    println!(
        "{label}: {n} {what} verified+stored in {busy_s:.2} s engine time = {rate:.0} {what}/s/shard (keccak-only ceiling {ceiling:.0} {what}/s, {before:.0} before and {after:.0} after; ratio {:.2}; keccak {} ceiling {four:.0} {what}/s, ratio {:.2})",
        rate / ceiling,
        catchup_eth::keccak4::path_name(),
        rate / four
    );
}

fn main() {
    let accounts = env_u64("ETHSYNC_BENCH_ACCOUNTS", 200_000);
    let blocks = env_u64("ETHSYNC_BENCH_BLOCKS", 200_000);
    let rounds = env_u64("ETHSYNC_BENCH_ROUNDS", 3).max(1);
    let only = std::env::var("ETHSYNC_BENCH_MODE").ok();
    let state = catchup::eth::sync::chain::StateData::generate(accounts, 10_000, 7);
    let nodes: Vec<Vec<u8>> = state.nodes.values().cloned().collect();
    drop(state);
    let chain = catchup::eth::sync::chain::generate_chain(blocks, alloy_primitives::B256::ZERO, 8);
    let raws: Vec<Vec<u8>> = chain.headers.iter().map(|h| h.raw.clone()).collect();
    drop(chain);
    // Rounds alternate the modes; keccak is measured right before and right after each
    // sync and the ratio taken to their mean, so that a host whose speed drifts (a shared
    // VM) moves both sides of the ratio alike.
    for round in 1..=rounds {
        for mode in [SyncMode::Fast, SyncMode::Snap] {
            if only.as_deref().is_some_and(|m| m != mode.name()) {
                continue;
            }
            // State: a large state, a short chain, one shard.
            let mut cfg = SimConfig {
                peers: 8,
                profile: Profile::Honest,
                seed: 7,
                accounts,
                blocks: 200,
                big_storage_slots: 10_000,
                shards: 1,
                ..SimConfig::default()
            };
            cfg.sync.mode = mode;
            let label = format!("ethsync/{}/state (round {round})", mode.name());
            measure(&label, "nodes", &cfg, &nodes, |r| r.state_nodes_verified);
        }
        // Headers: a long chain, a tiny state, bodies and receipts after the pivot only.
        if only.as_deref().is_some_and(|m| m != "headers") {
            continue;
        }
        let mut cfg = SimConfig {
            peers: 8,
            profile: Profile::Honest,
            seed: 8,
            accounts: 1,
            blocks,
            big_storage_slots: 0,
            shards: 1,
            ..SimConfig::default()
        };
        cfg.sync.bodies_before_pivot = false;
        let label = format!("ethsync/headers (round {round})");
        measure(&label, "headers", &cfg, &raws, |r| r.headers_verified);
    }
}

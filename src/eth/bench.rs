//! `catchup bench eth`: Ethereum verification per shard (trie nodes, headers, receipts
//! roots) beside keccak over the same bytes.

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::node::opts::GlobalOpts;

/// `catchup bench eth` options.
#[derive(Args, Debug, Clone)]
pub struct EthBenchArgs {
    /// Number of shards, each running the whole workload on its own core (1..=1024).
    /// Default: one per usable core.
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Accounts in the state trie whose nodes are verified (sets how many nodes there are).
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub accounts: usize,
    /// Time spent on each measurement (split over 3 alternating rounds), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub duration_ms: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One measured rate beside the keccak-only rate of the same bytes.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RatePair {
    pub items_per_s: f64,
    pub keccak_only_items_per_s: f64,
    /// keccak-only rate / verification rate: the cost of verification over raw hashing.
    pub overhead_ratio: f64,
    pub bytes_per_item: f64,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct EthShardBench {
    pub shard: usize,
    pub trie_nodes: RatePair,
    pub headers: RatePair,
    pub receipts_roots: RatePair,
}

/// Alternating measurement rounds per workload (best rate kept).
const ROUNDS: u64 = 3;

/// Run `pass` until at least `min_ms` passed; returns items per second.
fn measure(min_ms: u64, mut pass: impl FnMut() -> usize) -> f64 {
    let start = std::time::Instant::now();
    let mut items = 0usize;
    // Bounded: at most 1e6 passes.
    for _ in 0..1_000_000 {
        items += pass();
        if start.elapsed().as_millis() as u64 >= min_ms {
            break;
        }
    }
    items as f64 / start.elapsed().as_secs_f64().max(1e-9)
}

fn pair(verify: f64, keccak: f64, bytes_per_item: f64) -> RatePair {
    RatePair {
        items_per_s: verify,
        keccak_only_items_per_s: keccak,
        overhead_ratio: if verify > 0.0 { keccak / verify } else { 0.0 },
        bytes_per_item,
    }
}

/// The per-shard workload of `catchup bench eth`.
pub fn eth_bench_shard(shard: usize, accounts: usize, duration_ms: u64) -> EthShardBench {
    use catchup_eth::bench as wl;
    let seed = 0x5eed_0000 + shard as u64;
    let nodes = wl::state_trie_nodes(accounts.max(16), seed);
    let node_bytes: Vec<&[u8]> = nodes.iter().map(|n| n.1.as_ref()).collect();
    let headers = wl::header_chain(2048, seed);
    let receipts = wl::receipt_lists(64, 100, seed);
    let receipt_bytes: Vec<&[u8]> = receipts.iter().map(|r| r.1.as_ref()).collect();
    let avg = |v: &[&[u8]]| v.iter().map(|x| x.len()).sum::<usize>() as f64 / v.len().max(1) as f64;
    let header_refs: Vec<&[u8]> = headers.iter().map(|h| h.as_ref()).collect();

    // Verification and keccak-only passes alternate over a few rounds and the best rate
    // of each is kept, so both see the same machine conditions.
    let mut sink = 0u64;
    let round_ms = (duration_ms / ROUNDS).max(1);
    let (mut nv, mut nk, mut hv, mut hk, mut rv, mut rk) = (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    for _ in 0..ROUNDS {
        nv = nv.max(measure(round_ms, || wl::verify_nodes(&nodes)));
        nk = nk.max(measure(round_ms, || {
            sink ^= wl::keccak_all(&node_bytes);
            node_bytes.len()
        }));
        hv = hv.max(measure(round_ms, || wl::validate_header_chain(&headers)));
        hk = hk.max(measure(round_ms, || {
            sink ^= wl::keccak_all(&header_refs);
            header_refs.len()
        }));
        rv = rv.max(measure(round_ms, || wl::verify_receipt_lists(&receipts)));
        rk = rk.max(measure(round_ms, || {
            sink ^= wl::keccak_all(&receipt_bytes);
            receipt_bytes.len()
        }));
    }
    std::hint::black_box(sink);
    EthShardBench {
        shard,
        trie_nodes: pair(nv, nk, avg(&node_bytes)),
        headers: pair(hv, hk, avg(&header_refs)),
        receipts_roots: pair(rv, rk, avg(&receipt_bytes)),
    }
}

/// `catchup bench eth`: every shard runs the workload at once on its pinned core.
pub fn bench_eth(args: &EthBenchArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    if let Some(n) = args.shards {
        anyhow::ensure!(
            (1..=catchup_shards::runtime::MAX_SHARDS).contains(&n),
            "--shards must be 1..={}, got {n}",
            catchup_shards::runtime::MAX_SHARDS
        );
    }
    anyhow::ensure!(args.accounts >= 1, "--accounts must be at least 1");
    anyhow::ensure!(
        (1..=600_000).contains(&args.duration_ms),
        "--duration-ms must be 1..=600000"
    );
    // Shards and cores from --shards, else the --plan file, else one per usable core.
    let cfg = catchup_shards::RuntimeConfig {
        handle_signals: false,
        ..crate::node::opts::runtime_config(global, args.shards, None)?
    };
    let shards = cfg.shards;
    let (accounts, duration_ms) = (args.accounts, args.duration_ms);
    let results = catchup_shards::run(&cfg, move |shard: catchup_shards::Shard<()>| async move {
        eth_bench_shard(shard.id().0, accounts, duration_ms)
    })
    .context("cannot start the shards")?;
    let total = |f: fn(&EthShardBench) -> RatePair| {
        let v: f64 = results.iter().map(|r| f(r).items_per_s).sum();
        let k: f64 = results.iter().map(|r| f(r).keccak_only_items_per_s).sum();
        let b =
            results.iter().map(|r| f(r).bytes_per_item).sum::<f64>() / results.len().max(1) as f64;
        pair(v, k, b)
    };
    let totals = json!({
        "trie_nodes": total(|r| r.trie_nodes),
        "headers": total(|r| r.headers),
        "receipts_roots": total(|r| r.receipts_roots),
    });
    if args.json {
        println!(
            "{}",
            json!({"shards": shards, "accounts": accounts, "per_shard": results, "total": totals})
        );
        return Ok(0);
    }
    println!(
        "{:<7} {:<16} {:>14} {:>16} {:>7} {:>10}",
        "shard", "workload", "verified/s", "keccak-only/s", "ratio", "bytes/item"
    );
    let row = |s: &str, name: &str, p: RatePair| {
        println!(
            "{:<7} {:<16} {:>14.0} {:>16.0} {:>7.2} {:>10.0}",
            s, name, p.items_per_s, p.keccak_only_items_per_s, p.overhead_ratio, p.bytes_per_item
        );
    };
    for r in &results {
        let s = r.shard.to_string();
        row(&s, "trie nodes", r.trie_nodes);
        row(&s, "headers", r.headers);
        row(&s, "receipts roots", r.receipts_roots);
    }
    row("total", "trie nodes", total(|r| r.trie_nodes));
    row("total", "headers", total(|r| r.headers));
    row("total", "receipts roots", total(|r| r.receipts_roots));
    Ok(0)
}

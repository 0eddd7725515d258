//! `catchup eth sim`: run the fast/snap sync engines against simulated peers.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::ethsync::chain::{chain_from_rlp_file, StateData};
use crate::ethsync::config::{SyncConfig, SyncMode};
use crate::ethsync::sim::{self, Profile, SimConfig, SimReport};

use super::GlobalOpts;

/// Run the sync engines (one per shard) under the seeded deterministic simulator: peers
/// with latency, loss, lies, disconnects and stale state, in virtual time. Prints the
/// final state root against the expected one, what was verified, requests per peer and
/// the faults seen. Exits 1 unless the result is complete and correct.
#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// Number of simulated peers.
    #[arg(long, default_value_t = 9)]
    pub peers: usize,
    /// Peer behaviour mix.
    #[arg(long, value_enum, default_value_t = Profile::Mixed)]
    pub profile: Profile,
    /// Seed of the generated chain, state, peers and faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Accounts of the generated state.
    #[arg(long, default_value_t = 2_000)]
    pub accounts: u64,
    /// Blocks of the generated chain after genesis.
    #[arg(long, default_value_t = 600)]
    pub blocks: u64,
    /// Slots of the one large storage trie of the generated state.
    #[arg(long, default_value_t = 600)]
    pub big_storage_slots: u64,
    /// Engine instances (shards), exchanging messages through queues.
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Kill all engines (dropping their memory) when progress reaches PCT, then restart
    /// them from journal + store. Repeatable.
    #[arg(long = "kill-at", value_name = "PCT")]
    pub kill_at: Vec<u32>,
    /// Switch to the other mode when progress reaches PCT, keeping verified data.
    #[arg(long, value_name = "PCT")]
    pub switch_at: Option<u32>,
    /// Serve the devnet fixture (a directory with chain.rlp and headstate.json) instead of
    /// a generated chain; the state served is the head's, so the pivot is the head.
    #[arg(long, value_name = "DIR")]
    pub devnet: Option<PathBuf>,
    /// TOML file with an `[ethsync]` table of the settings below (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,

    /// Sync mode.
    #[arg(long, value_enum)]
    pub mode: Option<SyncMode>,
    /// Pivot = median best block of peers minus this (default 128; geth's head-64: 64).
    #[arg(long)]
    pub pivot_distance: Option<u64>,
    /// Re-select the pivot when the head is more than pivot distance plus this past it
    /// (default 64).
    #[arg(long)]
    pub repivot_slack: Option<u64>,
    /// How often the peers' head is checked after the pivot was chosen, 0 = never
    /// (default 30000).
    #[arg(long)]
    pub status_check_ms: Option<u64>,
    /// Peers that must agree on the pivot header (default 3).
    #[arg(long)]
    pub pivot_agreement: Option<usize>,
    /// Headers per request (default 192).
    #[arg(long)]
    pub header_batch: Option<u64>,
    /// Bodies or receipt lists per request (default 32).
    #[arg(long)]
    pub body_batch: Option<usize>,
    /// Trie nodes per GetNodeData/GetTrieNodes request (default 384).
    #[arg(long)]
    pub node_batch: Option<usize>,
    /// Codes per GetByteCodes request (default 64).
    #[arg(long)]
    pub code_batch: Option<usize>,
    /// Requests in flight per shard (default 16).
    #[arg(long)]
    pub max_concurrent_requests: Option<usize>,
    /// Requests in flight per peer per shard (default 4).
    #[arg(long)]
    pub max_inflight_per_peer: Option<u32>,
    /// Initial request timeout before a peer's latency is known (default 2000).
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Lower bound of the adaptive timeout (default 250).
    #[arg(long)]
    pub min_timeout_ms: Option<u64>,
    /// Upper bound of the adaptive timeout (default 10000).
    #[arg(long)]
    pub max_timeout_ms: Option<u64>,
    /// First backoff after a failure, doubled on each further one (default 250).
    #[arg(long)]
    pub backoff_base_ms: Option<u64>,
    /// Largest backoff (default 8000).
    #[arg(long)]
    pub backoff_max_ms: Option<u64>,
    /// Fetch bodies/receipts of blocks up to the pivot too (default true).
    #[arg(long)]
    pub bodies_before_pivot: Option<bool>,
    /// Fetch receipts (default true; off for the devnet, whose receipts need execution).
    #[arg(long)]
    pub fetch_receipts: Option<bool>,
    /// Byte limit asked for in snap requests (default 524288).
    #[arg(long)]
    pub snap_response_bytes: Option<u64>,
    /// Account ranges per leading nibble (default 2).
    #[arg(long)]
    pub snap_ranges_per_nibble: Option<u64>,
    /// Sub-ranges a large storage trie is split into (default 4).
    #[arg(long)]
    pub storage_split: Option<u64>,
    /// Whole storage tries per GetStorageRanges request (default 64).
    #[arg(long)]
    pub storage_batch: Option<usize>,
}

/// Settings from the config file's `[ethsync]` table, then the flags.
pub fn sync_config(a: &SimArgs) -> anyhow::Result<SyncConfig> {
    let mut c = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read config {}", p.display()))?;
            let v: toml::Value =
                toml::from_str(&text).with_context(|| format!("config {} is not valid TOML", p.display()))?;
            match v.get("ethsync") {
                Some(t) => t
                    .clone()
                    .try_into()
                    .with_context(|| format!("config {}: bad [ethsync] table", p.display()))?,
                None => SyncConfig::default(),
            }
        }
        None => SyncConfig::default(),
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f { c.$f = v; } )* };
    }
    set!(
        mode,
        pivot_distance,
        repivot_slack,
        status_check_ms,
        pivot_agreement,
        header_batch,
        body_batch,
        node_batch,
        code_batch,
        max_concurrent_requests,
        max_inflight_per_peer,
        request_timeout_ms,
        min_timeout_ms,
        max_timeout_ms,
        backoff_base_ms,
        backoff_max_ms,
        bodies_before_pivot,
        fetch_receipts,
        snap_response_bytes,
        snap_ranges_per_nibble,
        storage_split,
        storage_batch
    );
    anyhow::ensure!(
        c.header_batch >= 1 && c.header_batch <= 1024,
        "--header-batch must be in 1..=1024"
    );
    anyhow::ensure!(
        c.body_batch >= 1 && c.body_batch <= 1024,
        "--body-batch must be in 1..=1024"
    );
    anyhow::ensure!(
        c.node_batch >= 1 && c.node_batch <= 384,
        "--node-batch must be in 1..=384"
    );
    anyhow::ensure!(
        c.max_concurrent_requests >= 1,
        "--max-concurrent-requests must be at least 1"
    );
    anyhow::ensure!(c.pivot_agreement >= 1, "--pivot-agreement must be at least 1");
    anyhow::ensure!(
        c.min_timeout_ms <= c.max_timeout_ms,
        "--min-timeout-ms must not exceed --max-timeout-ms"
    );
    Ok(c)
}

/// Run the simulation the arguments describe.
pub fn simulate(a: &SimArgs) -> anyhow::Result<SimReport> {
    anyhow::ensure!(a.peers >= 1 && a.peers <= 1000, "--peers must be in 1..=1000");
    anyhow::ensure!(a.shards >= 1 && a.shards <= 16, "--shards must be in 1..=16");
    anyhow::ensure!(
        a.kill_at.iter().all(|&k| k <= 100),
        "--kill-at takes a percentage (0..=100)"
    );
    let mut sync = sync_config(a)?;
    let switch_at = a.switch_at.map(|p| {
        (
            p,
            if sync.mode == SyncMode::Fast {
                SyncMode::Snap
            } else {
                SyncMode::Fast
            },
        )
    });
    let base = SimConfig {
        peers: a.peers,
        profile: a.profile,
        seed: a.seed,
        accounts: a.accounts,
        blocks: a.blocks,
        big_storage_slots: a.big_storage_slots,
        shards: a.shards,
        kill_at_pct: a.kill_at.clone(),
        switch_at,
        sync: sync.clone(),
        progress_every_ms: Some(10_000),
        ..SimConfig::default()
    };
    match &a.devnet {
        None => Ok(sim::run(&base)),
        Some(dir) => {
            let chain = chain_from_rlp_file(&dir.join("chain.rlp"))?;
            let state = StateData::from_geth_dump(&dir.join("headstate.json"))?;
            anyhow::ensure!(
                chain.head().state_root == state.root,
                "{}: head block's state root {} is not the dump's {}",
                dir.display(),
                chain.head().state_root,
                state.root
            );
            if a.pivot_distance.is_none() {
                sync.pivot_distance = 0;
            }
            if a.fetch_receipts.is_none() {
                sync.fetch_receipts = false;
            }
            sync.anchor_number = chain.base - 1;
            sync.trusted_anchor = Some(chain.anchor_hash());
            let cfg = SimConfig {
                blocks: chain.head().number,
                sync,
                ..base
            };
            Ok(sim::run_over(&cfg, Arc::new(chain), Arc::new(state)))
        }
    }
}

pub fn run_sim(a: &SimArgs, _global: &GlobalOpts) -> anyhow::Result<i32> {
    let r = simulate(a)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_report(&r);
    }
    Ok(if r.correct { 0 } else { 1 })
}

fn print_report(r: &SimReport) {
    println!("mode:              {}", r.mode);
    println!("state root:        {}", r.state_root.as_deref().unwrap_or("-"));
    println!("expected root:     {}", r.expected_state_root);
    println!("head hash:         {}", r.head_hash.as_deref().unwrap_or("-"));
    println!("expected head:     {}", r.expected_head_hash);
    println!(
        "pivot block:       {}",
        r.pivot_block.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
    );
    println!("headers verified:  {}", r.headers_verified);
    println!("bodies verified:   {}", r.bodies_verified);
    println!("receipts verified: {}", r.receipts_verified);
    println!(
        "state nodes:       {} (codes {})",
        r.state_nodes_verified, r.codes_verified
    );
    println!("healed nodes:      {}", r.progress.healed_nodes);
    println!("restarts:          {}", r.restarts);
    println!("faults seen:       {} lies, {} timeouts", r.lies_detected, r.timeouts);
    println!(
        "virtual time:      {} ms ({} events, trace {})",
        r.virtual_ms, r.events, r.trace_hash
    );
    for p in &r.peers {
        println!(
            "  peer {:>3} {:<13} requests {:>7}{}",
            p.peer,
            p.fault,
            p.requests,
            if p.dropped_by_us { "  dropped" } else { "" }
        );
    }
    for (k, v) in &r.requests_by_kind {
        println!("  {k:<15} {v}");
    }
    if let Some(f) = &r.failure {
        println!("failure:           {f}");
    }
    println!("complete:          {}", r.state_complete && r.chain_complete);
    println!("correct:           {}", r.correct);
}

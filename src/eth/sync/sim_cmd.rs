//! `catchup eth sim`: run the fast/snap sync engines against simulated peers.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::eth::net::conn::LocalNode;
use crate::eth::net::sync_net::NetSyncConfig;
use crate::eth::net::sync_sharded::{run_sync_sharded_full, SyncExtras};
use crate::eth::serve::ServingPeer;
use crate::eth::sync::chain::{chain_from_rlp_file, generate_chain, ChainData, StateData};
use crate::eth::sync::config::{SyncConfig, SyncMode};
use crate::eth::sync::sim::{self, Profile, SimConfig, SimReport};

use crate::node::opts::GlobalOpts;

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
    /// A moving chain: the peers add a block every MS of virtual time, each changing the
    /// state, and announce their new heads (0: the chain stands still).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub grow_every_ms: u64,
    /// With --grow-every-ms: at most this many blocks are added.
    #[arg(long, default_value_t = 1_000, value_name = "BLOCKS")]
    pub grow_blocks: u64,
    /// With --grow-every-ms: the peers keep the states of their last N blocks only and
    /// answer older roots empty (geth keeps 128).
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub state_history: u64,
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
    /// Run on the shard runtime (pinned executors, channel mesh, wall-clock time) against
    /// in-process honest serving peers over the loopback transport, instead of the
    /// simulator (fault profiles, kills and switches are simulator-only).
    #[arg(long)]
    pub runtime: bool,
    /// With --runtime: keep each shard's store and journal in DIR/shard-N, so a run that
    /// was killed continues from what it stored.
    #[arg(long, value_name = "DIR", requires = "runtime")]
    pub datadir: Option<PathBuf>,
    /// With --runtime: give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub max_seconds: u64,
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
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config {}", p.display()))?;
            let v: toml::Value = toml::from_str(&text)
                .with_context(|| format!("config {} is not valid TOML", p.display()))?;
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
    anyhow::ensure!(
        c.pivot_agreement >= 1,
        "--pivot-agreement must be at least 1"
    );
    anyhow::ensure!(
        c.min_timeout_ms <= c.max_timeout_ms,
        "--min-timeout-ms must not exceed --max-timeout-ms"
    );
    Ok(c)
}

/// Run the simulation the arguments describe.
pub fn simulate(a: &SimArgs) -> anyhow::Result<SimReport> {
    anyhow::ensure!(
        a.peers >= 1 && a.peers <= 1000,
        "--peers must be in 1..=1000"
    );
    anyhow::ensure!(
        a.shards >= 1 && a.shards <= 16,
        "--shards must be in 1..=16"
    );
    anyhow::ensure!(
        a.kill_at.iter().all(|&k| k <= 100),
        "--kill-at takes a percentage (0..=100)"
    );
    let sync = sync_config(a)?;
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
        grow_every_ms: a.grow_every_ms,
        grow_blocks: if a.grow_every_ms > 0 {
            a.grow_blocks
        } else {
            0
        },
        state_history: a.state_history,
        sync: sync.clone(),
        progress_every_ms: Some(10_000),
        ..SimConfig::default()
    };
    match &a.devnet {
        None => Ok(sim::run(&base)),
        Some(_) => {
            let (chain, state, sync) = sources(a, sync)?;
            let cfg = SimConfig {
                blocks: chain.head().number,
                sync,
                ..base
            };
            Ok(sim::run_over(&cfg, chain, state))
        }
    }
}

/// What a run on the shard runtime did.
#[derive(Debug, serde::Serialize)]
pub struct RuntimeReport {
    pub correct: bool,
    pub finished: bool,
    pub failures: Vec<String>,
    pub mode: String,
    pub shards: usize,
    pub state_root: Option<String>,
    pub expected_state_root: String,
    pub head_hash: Option<String>,
    pub headers_verified: u64,
    pub bodies_verified: u64,
    pub receipts_verified: u64,
    pub state_nodes_verified: u64,
    pub codes_verified: u64,
    /// Records a restart found in the data directory.
    pub loaded_records: u64,
    pub elapsed_ms: u64,
    pub progress: crate::eth::sync::engine::Progress,
    pub status: crate::eth::sync::engine::Status,
}

/// The chain, state and settings the arguments describe (generated, or the devnet).
fn sources(
    a: &SimArgs,
    mut sync: SyncConfig,
) -> anyhow::Result<(Arc<ChainData>, Arc<StateData>, SyncConfig)> {
    match &a.devnet {
        None => {
            let state = StateData::generate(a.accounts, a.big_storage_slots, a.seed);
            let chain = generate_chain(a.blocks, state.root, a.seed);
            sync.trusted_anchor = Some(chain.anchor_hash());
            Ok((Arc::new(chain), Arc::new(state), sync))
        }
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
            Ok((Arc::new(chain), Arc::new(state), sync))
        }
    }
}

/// Sync on the shard runtime from in-process serving peers.
pub fn run_on_runtime(a: &SimArgs, global: &GlobalOpts) -> anyhow::Result<RuntimeReport> {
    anyhow::ensure!(
        a.shards >= 1 && a.shards <= 16,
        "--shards must be in 1..=16"
    );
    anyhow::ensure!(
        a.peers >= 1 && a.peers <= 1000,
        "--peers must be in 1..=1000"
    );
    let (chain, state, sync) = sources(a, sync_config(a)?)?;
    let rt = catchup_shards::RuntimeConfig {
        handle_signals: true,
        ..crate::node::opts::runtime_config(global, Some(a.shards), None)?
    };
    let shards = rt.shards;
    let (peers, datadir, max_ms) = (
        a.peers,
        a.datadir.clone(),
        a.max_seconds.saturating_mul(1000),
    );
    if let Some(d) = &datadir {
        std::fs::create_dir_all(d)
            .with_context(|| format!("cannot create data directory {}", d.display()))?;
    }
    let shard_dirs = datadir.map(|d| {
        (0..shards)
            .map(|i| d.join(format!("shard-{i}")))
            .collect::<Vec<_>>()
    });
    let cfg = NetSyncConfig {
        sync: sync.clone(),
        shards,
        peers: Vec::new(),
        net: Default::default(),
        status: Default::default(),
        max_runtime_ms: max_ms,
        peer_queue_len: 1024,
    };
    let extras = SyncExtras {
        shard_dirs,
        in_process: Some(
            (0..peers)
                .map(|_| ServingPeer::new(chain.clone(), Some(state.clone())))
                .collect(),
        ),
        keep_stores: true,
        ..SyncExtras::default()
    };
    let started = std::time::Instant::now();
    let node = LocalNode::new(catchup_devp2p::secp256k1::SecretKey::new(
        &mut rand::thread_rng(),
    ));
    let (report, stores) =
        run_sync_sharded_full(cfg, node, rt, Arc::new(AtomicBool::new(false)), extras)?;
    let failures: Vec<String> = report.failure.iter().cloned().collect();
    let loaded = report.resumed.records;
    let (status, progress) = (report.status.clone(), report.progress.clone());
    let target = status.highest_block.unwrap_or(chain.head().number);
    let (headers_ok, headers, head) = sim::check_headers(&stores, &chain, target);
    let (bodies_ok, bodies, receipts) = sim::check_bodies(
        &stores,
        &chain,
        &sync,
        status.pivot_block.unwrap_or(0),
        target,
    );
    let (state_ok, nodes, codes) = sim::check_state(&stores, state.root);
    let finished = report.finished;
    let correct = finished
        && failures.is_empty()
        && headers_ok
        && bodies_ok
        && state_ok
        && head == chain.header(target).map(|h| h.hash)
        && status.state_root.as_deref() == Some(&format!("{}", state.root));
    Ok(RuntimeReport {
        correct,
        finished,
        failures,
        mode: sync.mode.name().to_string(),
        shards,
        state_root: status.state_root.clone(),
        expected_state_root: format!("{}", state.root),
        head_hash: head.map(|h| format!("{h}")),
        headers_verified: headers,
        bodies_verified: bodies,
        receipts_verified: receipts,
        state_nodes_verified: nodes,
        codes_verified: codes,
        loaded_records: loaded,
        elapsed_ms: started.elapsed().as_millis() as u64,
        progress,
        status,
    })
}

pub fn run_sim(a: &SimArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    if a.runtime {
        let r = run_on_runtime(a, global)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            println!(
                "mode:              {} on {} shards (runtime, loopback peers)",
                r.mode, r.shards
            );
            println!(
                "state root:        {}",
                r.state_root.as_deref().unwrap_or("-")
            );
            println!("expected root:     {}", r.expected_state_root);
            println!(
                "head hash:         {}",
                r.head_hash.as_deref().unwrap_or("-")
            );
            println!("headers verified:  {}", r.headers_verified);
            println!("bodies verified:   {}", r.bodies_verified);
            println!("receipts verified: {}", r.receipts_verified);
            println!(
                "state nodes:       {} (codes {})",
                r.state_nodes_verified, r.codes_verified
            );
            println!("loaded from disk:  {} records", r.loaded_records);
            println!("elapsed:           {} ms", r.elapsed_ms);
            for f in &r.failures {
                println!("failure:           {f}");
            }
            println!("correct:           {}", r.correct);
        }
        return Ok(if r.correct { 0 } else { 1 });
    }
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
    println!(
        "state root:        {}",
        r.state_root.as_deref().unwrap_or("-")
    );
    println!("expected root:     {}", r.expected_state_root);
    println!(
        "head hash:         {}",
        r.head_hash.as_deref().unwrap_or("-")
    );
    println!("expected head:     {}", r.expected_head_hash);
    println!(
        "pivot block:       {}",
        r.pivot_block
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into())
    );
    println!(
        "pivot hash:        {} (first pivot {}, {} re-pivot(s), peers' head {})",
        r.pivot_hash.as_deref().unwrap_or("-"),
        r.first_pivot_block
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into()),
        r.repivots,
        r.peers_head
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
    println!(
        "faults seen:       {} lies, {} timeouts",
        r.lies_detected, r.timeouts
    );
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
    println!(
        "complete:          {}",
        r.state_complete && r.chain_complete
    );
    println!("correct:           {}", r.correct);
}

//! `catchup bench eth-scale`: an Ethereum state of a chosen size synced end to end.
//!
//! It generates a state (`--accounts`, with `--storage-slots` spread over the contract
//! accounts) and a short chain over it, serves both from `--peers` RLPx peers on loopback
//! (all on one executor thread of this process), syncs them with the sharded sync driver
//! into a scratch data directory (snap and/or fast), then recomputes the state root from
//! the stored trie (the walk of `eth state-root --datadir`) and requires it to equal the
//! generated root. It reports state nodes per second per shard beside keccak over the
//! same node bytes measured in the same run, the peak RSS before and during each sync, the
//! bytes on disk and the time of the root walk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::{keccak256, B256};
use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::eth::net::chain::Profile;
use crate::eth::net::chainspec::{genesis_status, ChainSpec};
use crate::eth::net::devnet::spawn_serving_peers;
use crate::eth::net::eth_peer::StatusInfo;
use crate::eth::net::sync_net::NetSyncConfig;
use crate::eth::net::sync_sharded::{run_sync_sharded_with, SyncExtras};
use crate::eth::net::{LocalNode, NetConfig};
use crate::eth::sync::chain::{generate_chain, ChainData, GeneratedAccount, SimRng, StateData};
use crate::eth::sync::config::{SyncConfig, SyncMode};
use crate::node::opts::GlobalOpts;
use catchup_devp2p::enode::Enode;
use catchup_devp2p::secp256k1::SecretKey;

/// Network id of the benchmark's generated chain (no forks scheduled).
const SCALE_NETWORK_ID: u64 = 0x5ca1_e000;
/// One account in this many is a contract (code, and a share of the storage slots).
const CONTRACT_EVERY: u64 = 16;

/// `catchup bench eth-scale` options.
#[derive(Args, Debug, Clone)]
pub struct EthScaleArgs {
    /// Accounts in the generated state (1..=50000000).
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub accounts: u64,
    /// Storage slots, spread unevenly over the contract accounts (one account in 16).
    #[arg(long, value_name = "M", default_value_t = 50_000)]
    pub storage_slots: u64,
    /// Shards of the sync (one pinned core each, 1..=64).
    #[arg(long, value_name = "S", default_value_t = 2)]
    pub shards: usize,
    /// Sync modes to run, in order (`snap`, `fast`, or `snap,fast`), each into its own
    /// fresh data directory.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "snap")]
    pub mode: Vec<SyncMode>,
    /// Serving RLPx peers on loopback (1..=32), all honest.
    #[arg(long, value_name = "P", default_value_t = 4)]
    pub peers: usize,
    /// Memory budget of each shard (e.g. 512MiB; default that of `eth sync`): it bounds
    /// the store's in-memory index of recent keys, its decoded-header cache and its index
    /// checkpoint, the snap engine's backlog of open storage tries and the request window
    /// (responses in flight); older keys are indexed on disk and the stored state is read
    /// back on demand. The records put since the last commit are not counted.
    #[arg(long, value_name = "BYTES", value_parser = crate::node::opts::parse_size_bytes)]
    pub memory_budget: Option<u64>,
    /// Blocks of the generated chain (the state sync dominates; headers, bodies and
    /// receipts are fetched too).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub blocks: u64,
    /// Seed of the generated state and chain.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Scratch directory (one `sync-<mode>` data directory per mode, kept). Default: a new
    /// directory under the system temp dir, removed at the end.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Give up a sync after this many seconds.
    #[arg(long, value_name = "S", default_value_t = 3600)]
    pub timeout_s: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A generated state: `accounts` accounts, one in [`CONTRACT_EVERY`] a contract (64 shared
/// codes) holding a share of `slots` storage slots (contract `c` weighs `1 + (c % 8)²`, so
/// storage tries range from small to about fifty times larger).
pub fn generate_scale_state(accounts: u64, slots: u64, seed: u64) -> StateData {
    let mut rng = SimRng::new(seed.wrapping_mul(0x9e37_79b9).wrapping_add(13));
    let codes: Vec<Vec<u8>> = (0..64)
        .map(|_| {
            let len = 40 + rng.below(400) as usize;
            rng.bytes(len)
        })
        .collect();
    let is_contract = |i: u64| i % CONTRACT_EVERY == 1;
    let contracts = contract_count(accounts);
    let weight = |c: u64| 1 + (c % 8) * (c % 8);
    let total_weight: u64 = (0..contracts).map(weight).sum();
    // Slots of contract `c`: its weighted share, the remainder to the first contracts.
    let mut shares: Vec<u64> = (0..contracts)
        .map(|c| slots * weight(c) / total_weight.max(1))
        .collect();
    let mut rest = slots - shares.iter().sum::<u64>();
    for s in shares.iter_mut() {
        if rest == 0 {
            break;
        }
        *s += 1;
        rest -= 1;
    }
    let mut out: Vec<GeneratedAccount> = Vec::with_capacity(accounts as usize);
    let mut contract = 0usize;
    for i in 0..accounts {
        let hash = keccak256([&seed.to_le_bytes()[..], &i.to_le_bytes()[..]].concat());
        let blen = 1 + rng.below(12) as usize;
        let mut balance = rng.bytes(blen);
        if balance[0] == 0 {
            balance[0] = 1;
        }
        let (storage, code) = if is_contract(i) {
            let n = shares[contract];
            contract += 1;
            let storage: Vec<(B256, Vec<u8>)> = (0..n)
                .map(|j| {
                    let k = keccak256([&hash[..], &j.to_le_bytes()[..]].concat());
                    let vlen = 1 + rng.below(32) as usize;
                    let mut v = rng.bytes(vlen);
                    if v[0] == 0 {
                        v[0] = 0x42;
                    }
                    (k, catchup_eth::rlp::bytes_item(&v))
                })
                .collect();
            (storage, Some(codes[rng.below(64) as usize].clone()))
        } else {
            (Vec::new(), None)
        };
        out.push((hash, i % 5, balance, storage, code));
    }
    StateData::build(out)
}

/// Contract accounts among the first `accounts` (indices 1, 17, 33, …).
fn contract_count(accounts: u64) -> u64 {
    if accounts < 2 {
        0
    } else {
        (accounts - 2) / CONTRACT_EVERY + 1
    }
}

/// `VmHWM` and `VmRSS` of this process in bytes (None where /proc is unreadable).
fn rss_bytes() -> (Option<u64>, Option<u64>) {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Reset `VmHWM` to the current RSS (Linux: `5` into /proc/self/clear_refs). False when
/// the kernel refused, in which case later peaks include the earlier phases.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Bytes of the files under `dir`: (apparent size, allocated on disk).
fn bytes_on_disk(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut apparent, mut allocated) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    // Bounded: a data directory holds a few files per shard.
    let mut visited = 0usize;
    while let Some(d) = stack.pop() {
        visited += 1;
        if visited > 100_000 {
            break;
        }
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                apparent += m.len();
                allocated += m.blocks() * 512;
            }
        }
    }
    (apparent, allocated)
}

/// Keccak-only rate over `nodes` on this thread: best of 3 passes of at least 200 ms each,
/// in items per second and bytes per second.
fn keccak_rate(nodes: &[&[u8]]) -> (f64, f64) {
    let bytes: usize = nodes.iter().map(|n| n.len()).sum();
    let best = best_rate(nodes, |all| all.iter().fold(0, |a, n| a ^ keccak256(n)[0]));
    let per_item = bytes as f64 / nodes.len().max(1) as f64;
    (best, best * per_item)
}

/// [`keccak_rate`] in items per second with the nodes hashed four at a time where the
/// CPU can (the path the engine takes for node answers, `catchup_eth::keccak4`), in
/// answers of 384 nodes.
fn keccak4_rate(nodes: &[&[u8]]) -> f64 {
    let mut out = Vec::new();
    best_rate(nodes, |all| {
        all.chunks(384).fold(0, |a, answer| {
            catchup_eth::keccak4::keccak256_each(answer, &mut out);
            a ^ out[0][0]
        })
    })
}

/// Items per second of `pass` over `nodes`: best of 3 runs of at least 200 ms each (at
/// most 1000 passes a run).
fn best_rate(nodes: &[&[u8]], mut pass: impl FnMut(&[&[u8]]) -> u8) -> f64 {
    let mut best = 0f64;
    let mut acc = 0u8;
    for _ in 0..3 {
        let t = Instant::now();
        let mut items = 0usize;
        for _ in 0..1000 {
            acc ^= pass(nodes);
            items += nodes.len();
            if t.elapsed() >= Duration::from_millis(200) {
                break;
            }
        }
        best = best.max(items as f64 / t.elapsed().as_secs_f64().max(1e-9));
    }
    std::hint::black_box(acc);
    best
}

/// Serving peers on their own executor thread, stopped (and joined) on drop.
struct ScalePeers {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ScalePeers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_peers(
    chain: &Arc<ChainData>,
    state: &Arc<StateData>,
    status: StatusInfo,
    peers: usize,
) -> anyhow::Result<(ScalePeers, Vec<Enode>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let (chain, state, stop2) = (chain.clone(), state.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("scale-eth-peers".into())
        .spawn(move || {
            let ex = match glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .name("scale-eth-peers")
                .make()
            {
                Ok(ex) => ex,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::anyhow!("starting the peers' executor: {e}")));
                    return;
                }
            };
            catchup_io::exec::run(&ex, async move {
                let profiles = vec![Profile::Honest; peers];
                let flag = stop2.clone();
                let started =
                    spawn_serving_peers(&chain, Some(&state), &status, &profiles, 0, move || {
                        flag.load(Ordering::Relaxed)
                    });
                let ok = started.is_ok();
                let _ = tx.send(started);
                while ok && !stop2.load(Ordering::Relaxed) {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
            });
        })
        .context("spawning the serving peers' thread")?;
    let handle = ScalePeers {
        stop,
        thread: Some(thread),
    };
    let enodes = rx
        .recv_timeout(Duration::from_secs(60))
        .context("the serving peers did not start within 60 s")??;
    Ok((handle, enodes))
}

/// What one mode's sync measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScaleModeReport {
    pub mode: String,
    pub datadir: PathBuf,
    pub sync_ms: u64,
    pub state_nodes_stored: u64,
    pub codes_stored: u64,
    pub headers_stored: u64,
    /// State nodes stored / shards / wall-clock seconds of the whole sync (headers,
    /// bodies and the serving peers on the same machine included).
    pub nodes_per_s_per_shard: f64,
    /// `nodes_per_s_per_shard` / keccak-only nodes/s of one thread over the same nodes
    /// (the faster of the rates measured before and after the syncs).
    pub ratio_to_keccak: f64,
    /// Peak RSS during this sync (VmHWM reset just before it when `peak_reset`).
    pub peak_rss_bytes: Option<u64>,
    pub peak_reset: bool,
    /// Peak RSS during the sync above the RSS just before it: the sync's own share.
    pub sync_rss_share_bytes: Option<u64>,
    pub disk_apparent_bytes: u64,
    pub disk_allocated_bytes: u64,
    pub state_root_ms: u64,
    pub state_root_peak_rss_bytes: Option<u64>,
    pub stored_root: String,
    pub root_matches: bool,
    pub accounts_walked: u64,
    pub storage_slots_walked: u64,
    /// Most storage tries open at once in one shard's engine (snap).
    pub storage_backlog_peak: u64,
}

/// What every mode's sync shares: the served chain and state and the keccak baseline.
struct Served<'a> {
    chain: &'a ChainData,
    state: &'a StateData,
    enodes: &'a [Enode],
}

fn sync_one(
    a: &EthScaleArgs,
    global: &GlobalOpts,
    mode: SyncMode,
    served: &Served<'_>,
    dir: &Path,
) -> anyhow::Result<ScaleModeReport> {
    let (chain, state, enodes) = (served.chain, served.state, served.enodes);
    let spec = ChainSpec::without_forks(SCALE_NETWORK_ID);
    let genesis = chain.headers[0].hash.0;
    let datadir = dir.join(format!("sync-{}", mode.name()));
    if datadir.exists() {
        std::fs::remove_dir_all(&datadir)
            .with_context(|| format!("clearing {} (--workdir)", datadir.display()))?;
    }
    let dd = catchup_io::datadir::DataDir::open(&datadir)
        .with_context(|| format!("{} (--workdir)", datadir.display()))?;
    let rc = crate::node::opts::runtime_config(global, Some(a.shards), None)?;
    let shards = rc.shards.max(1);
    let mut shard_dirs = Vec::with_capacity(shards);
    for i in 0..shards {
        dd.shard_store_dir(i)?;
        shard_dirs.push(dd.subdir(&format!("shard-{i}"))?);
    }
    let cfg = NetSyncConfig {
        sync: SyncConfig {
            mode,
            pivot_distance: 0,
            trusted_anchor: Some(chain.anchor_hash()),
            anchor_number: 0,
            ..SyncConfig::default()
        },
        shards,
        peers: enodes.to_vec(),
        net: NetConfig::default(),
        status: genesis_status(&spec, genesis),
        max_runtime_ms: a.timeout_s.saturating_mul(1000),
        peer_queue_len: 256,
    };
    let extras = SyncExtras {
        shard_dirs: Some(shard_dirs),
        progress_every_ms: 10_000,
        memory_budget_bytes: a
            .memory_budget
            .unwrap_or(crate::eth::sync::persist::DEFAULT_MEMORY_BUDGET_BYTES),
        ..SyncExtras::default()
    };
    let peak_reset = reset_peak_rss();
    let (_, rss_before) = rss_bytes();
    let node = LocalNode::new(SecretKey::new(&mut rand::thread_rng()));
    let t = Instant::now();
    let report = run_sync_sharded_with(cfg, node, rc, Arc::new(AtomicBool::new(false)), extras)?;
    let sync_ms = t.elapsed().as_millis() as u64;
    let (peak, _) = rss_bytes();
    std::fs::write(
        datadir.join("sync-report.json"),
        serde_json::to_vec_pretty(&report)?,
    )
    .with_context(|| format!("writing {}/sync-report.json", datadir.display()))?;
    drop(dd);
    let want = format!("{}", state.root);
    anyhow::ensure!(
        report.finished && report.failure.is_none() && report.status.state_complete,
        "{} sync did not finish: {} (raise --timeout-s if it ran out of time)",
        mode.name(),
        report.failure.as_deref().unwrap_or("state incomplete")
    );
    anyhow::ensure!(
        report.state_root.as_deref() == Some(want.as_str()),
        "{} sync reported state root {:?}, the generated root is {want}",
        mode.name(),
        report.state_root
    );
    let (apparent, allocated) = bytes_on_disk(&datadir);
    let root_reset = reset_peak_rss();
    let t = Instant::now();
    let walked = crate::eth::export::state_root_of_datadir(&datadir)
        .map_err(|e| anyhow::anyhow!("{} sync: state-root --datadir: {e}", mode.name()))?;
    let state_root_ms = t.elapsed().as_millis() as u64;
    let (root_peak, _) = rss_bytes();
    let root_matches = walked.computed == state.root;
    if !root_matches {
        anyhow::bail!(
            "{} sync: the root recomputed from the stored trie in {} is {:#x}, the generated root is {:#x}: the stored state is wrong",
            mode.name(),
            datadir.display(),
            walked.computed,
            state.root
        );
    }
    let secs = (sync_ms as f64 / 1000.0).max(1e-3);
    let per_shard = report.state_nodes_stored as f64 / shards as f64 / secs;
    Ok(ScaleModeReport {
        mode: mode.name().into(),
        datadir,
        sync_ms,
        state_nodes_stored: report.state_nodes_stored,
        codes_stored: report.codes_stored,
        headers_stored: report.headers_stored,
        nodes_per_s_per_shard: per_shard,
        // Set once the keccak rate after the syncs is known.
        ratio_to_keccak: 0.0,
        peak_rss_bytes: peak,
        peak_reset,
        sync_rss_share_bytes: match (peak, rss_before) {
            (Some(p), Some(b)) if peak_reset => Some(p.saturating_sub(b)),
            _ => None,
        },
        disk_apparent_bytes: apparent,
        disk_allocated_bytes: allocated,
        state_root_ms,
        state_root_peak_rss_bytes: root_peak.filter(|_| root_reset),
        stored_root: format!("{:#x}", walked.computed),
        root_matches,
        storage_backlog_peak: report.progress.storage_backlog_peak,
        accounts_walked: walked.accounts,
        storage_slots_walked: walked.storage_slots,
    })
}

fn mib(b: Option<u64>) -> String {
    b.map(|b| format!("{:.0} MiB", b as f64 / (1 << 20) as f64))
        .unwrap_or_else(|| "-".into())
}

/// `catchup bench eth-scale`.
pub fn bench_eth_scale(a: &EthScaleArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    anyhow::ensure!(
        (1..=50_000_000).contains(&a.accounts),
        "--accounts must be 1..=50000000"
    );
    anyhow::ensure!(
        a.storage_slots <= 2_000_000_000,
        "--storage-slots must be at most 2000000000"
    );
    anyhow::ensure!(
        a.storage_slots == 0 || a.accounts >= 2,
        "--storage-slots needs at least 2 --accounts (slots live in contract accounts, one in {CONTRACT_EVERY})"
    );
    anyhow::ensure!((1..=64).contains(&a.shards), "--shards must be 1..=64");
    anyhow::ensure!((1..=32).contains(&a.peers), "--peers must be 1..=32");
    anyhow::ensure!(
        (1..=100_000).contains(&a.blocks),
        "--blocks must be 1..=100000"
    );
    anyhow::ensure!(!a.mode.is_empty(), "--mode needs snap, fast or snap,fast");
    let (dir, remove_dir) = match &a.workdir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("--workdir {}", d.display()))?;
            (d.clone(), false)
        }
        None => {
            let d = std::env::temp_dir().join(format!(
                "catchup-eth-scale-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ));
            std::fs::create_dir_all(&d)
                .with_context(|| format!("creating {} (give --workdir)", d.display()))?;
            (d, true)
        }
    };
    let result = run_modes(a, global, &dir);
    if remove_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let out = result?;
    if a.json {
        println!("{out}");
    } else {
        print_text(&out);
    }
    Ok(0)
}

fn run_modes(
    a: &EthScaleArgs,
    global: &GlobalOpts,
    dir: &Path,
) -> anyhow::Result<serde_json::Value> {
    let t = Instant::now();
    let state = Arc::new(generate_scale_state(a.accounts, a.storage_slots, a.seed));
    let generate_ms = t.elapsed().as_millis() as u64;
    let chain = Arc::new(generate_chain(a.blocks, state.root, a.seed));
    let node_bytes: Vec<&[u8]> = state.nodes.values().map(|n| n.as_slice()).collect();
    let state_bytes: u64 = node_bytes.iter().map(|n| n.len() as u64).sum();
    let contracts = contract_count(a.accounts);
    let spec = ChainSpec::without_forks(SCALE_NETWORK_ID);
    let genesis = chain.headers[0].hash.0;
    let head = chain.head().clone();
    let status = StatusInfo {
        network_id: spec.chain_id,
        total_difficulty: Vec::new(),
        head_hash: head.hash.0,
        head_number: head.number,
        genesis_hash: genesis,
        fork_id: spec.fork_id(genesis, head.number, 0),
        forks: Some(spec.fork_check(genesis, 0)),
    };
    let (peers, enodes) = start_peers(&chain, &state, status, a.peers)?;
    // Generator and serving peers: their peak before any sync ran.
    let (serving_hwm, serving_rss) = rss_bytes();
    // Keccak-only over the same nodes before the syncs and again after them (the load of
    // a shared machine changes); ratios are taken against the faster of the two.
    let (keccak_before, _) = keccak_rate(&node_bytes);
    drop(node_bytes);
    let served = Served {
        chain: &chain,
        state: &state,
        enodes: &enodes,
    };
    let mut modes = Vec::new();
    for mode in &a.mode {
        modes.push(sync_one(a, global, *mode, &served, dir)?);
    }
    drop(peers);
    let node_bytes: Vec<&[u8]> = state.nodes.values().map(|n| n.as_slice()).collect();
    let (keccak_after, _) = keccak_rate(&node_bytes);
    let keccak4 = keccak4_rate(&node_bytes);
    drop(node_bytes);
    let keccak_nodes_per_s = keccak_before.max(keccak_after);
    let keccak_bytes_per_s =
        keccak_nodes_per_s * state_bytes as f64 / state.nodes.len().max(1) as f64;
    for m in &mut modes {
        m.ratio_to_keccak = if keccak_nodes_per_s > 0.0 {
            m.nodes_per_s_per_shard / keccak_nodes_per_s
        } else {
            0.0
        };
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string));
    Ok(json!({
        "accounts": a.accounts,
        "storage_slots": a.storage_slots,
        "contracts": contracts,
        "shards": a.shards,
        "peers": a.peers,
        "blocks": a.blocks,
        "seed": a.seed,
        "state_root": format!("{:#x}", state.root),
        "state_nodes": state.nodes.len(),
        "state_node_bytes": state_bytes,
        "generate_ms": generate_ms,
        "keccak_nodes_per_s": keccak_nodes_per_s,
        "keccak_nodes_per_s_before_sync": keccak_before,
        "keccak_nodes_per_s_after_sync": keccak_after,
        "keccak_bytes_per_s": keccak_bytes_per_s,
        "keccak4_path": catchup_eth::keccak4::path_name(),
        "keccak4_nodes_per_s": keccak4,
        "memory_budget_bytes": a.memory_budget,
        "memory_budget_bytes_per_shard": a.memory_budget.unwrap_or(crate::eth::sync::persist::DEFAULT_MEMORY_BUDGET_BYTES),
        "storage_backlog_accounts": crate::eth::sync::persist::StoreBudget {
            memory_budget_bytes: a.memory_budget.unwrap_or(crate::eth::sync::persist::DEFAULT_MEMORY_BUDGET_BYTES),
        }
        .storage_backlog_accounts(),
        "memory_budget_note": "bounds each shard store's in-memory index of recent keys (older keys are indexed on disk), decoded-header cache and index checkpoint, the snap engine's backlog of open storage tries (account ranges wait while it is full) and the request window (a sixteenth for responses in flight, at 2 MiB a response); the stored state is on disk and read on demand; the records put since the last commit are not counted against it",
        "rss_generator_and_peers_bytes": serving_rss,
        "peak_rss_generator_and_peers_bytes": serving_hwm,
        "rss_note": "the serving peers and the generated state live in this process: every peak includes them; sync_rss_share_bytes is the sync's peak above the RSS just before it",
        "machine": {"cores": cores, "load_1m": load},
        "modes": modes,
    }))
}

fn print_text(out: &serde_json::Value) {
    println!(
        "state: {} accounts, {} storage slots, {} trie nodes ({} bytes), root {}; {} peers, {} shards",
        out["accounts"],
        out["storage_slots"],
        out["state_nodes"],
        out["state_node_bytes"],
        out["state_root"].as_str().unwrap_or("-"),
        out["peers"],
        out["shards"]
    );
    println!(
        "keccak-only over the same nodes (one thread): {:.0} nodes/s before the syncs, {:.0} after; {:.0} nodes/s four at a time ({})",
        out["keccak_nodes_per_s_before_sync"]
            .as_f64()
            .unwrap_or(0.0),
        out["keccak_nodes_per_s_after_sync"].as_f64().unwrap_or(0.0),
        out["keccak4_nodes_per_s"].as_f64().unwrap_or(0.0),
        out["keccak4_path"].as_str().unwrap_or("-")
    );
    println!(
        "RSS of the generated state and serving peers before syncing: {} (peak {})",
        mib(out["rss_generator_and_peers_bytes"].as_u64()),
        mib(out["peak_rss_generator_and_peers_bytes"].as_u64())
    );
    if let Some(b) = out["memory_budget_bytes"].as_u64() {
        println!("memory budget {b} bytes per shard: the stores' caches and the engine's storage backlog (not the commit queue or responses in flight)");
    }
    println!(
        "{:<5} {:>9} {:>12} {:>7} {:>10} {:>10} {:>10} {:>12} {:>6}",
        "mode",
        "sync s",
        "nodes/s/sh",
        "ratio",
        "peak RSS",
        "sync RSS",
        "disk",
        "root walk s",
        "root"
    );
    for m in out["modes"].as_array().into_iter().flatten() {
        println!(
            "{:<5} {:>9.1} {:>12.0} {:>7.3} {:>10} {:>10} {:>10} {:>12.1} {:>6}",
            m["mode"].as_str().unwrap_or("-"),
            m["sync_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            m["nodes_per_s_per_shard"].as_f64().unwrap_or(0.0),
            m["ratio_to_keccak"].as_f64().unwrap_or(0.0),
            mib(m["peak_rss_bytes"].as_u64()),
            mib(m["sync_rss_share_bytes"].as_u64()),
            mib(m["disk_allocated_bytes"].as_u64()),
            m["state_root_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            if m["root_matches"].as_bool() == Some(true) {
                "match"
            } else {
                "DIFF"
            }
        );
    }
}

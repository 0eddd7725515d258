//! `catchup demo`: a local devnet on loopback, synced and verified, with nothing but this
//! binary. The Ethereum part generates a chain and a state, serves them from four RLPx
//! peers (two honest, one lying, one slow) and syncs them (fast, then snap) on the pinned
//! shard runtime; the Solana part generates a
//! snapshot, serves it from three HTTP sources at different rates and catches up from all
//! of them through the streaming verify pipeline, then repairs the slots after the
//! snapshot from local serve-repair servers (honest, lossy, corrupting). Exit 0 only when every part verified.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use serde_json::json;

use crate::eth::net::chain::Profile;
use crate::eth::net::chainspec::{genesis_status, ChainSpec};
use crate::eth::net::devnet::spawn_serving_peers;
use crate::eth::net::eth_peer::StatusInfo;
use crate::eth::net::sync_net::{NetSyncConfig, NetSyncReport};
use crate::eth::net::sync_sharded::{run_sync_sharded_full, SyncExtras};
use crate::eth::net::{LocalNode, NetConfig};
use crate::eth::sync::chain::{generate_chain, ChainData, StateData};
use crate::eth::sync::config::{SyncConfig, SyncMode};
use crate::solana::download::demo::{run_demo as run_solana_demo, DemoConfig};
use catchup_devp2p::enode::Enode;
use catchup_devp2p::secp256k1::SecretKey;

use crate::node::opts::GlobalOpts;

/// Run a local devnet on loopback and sync it: Ethereum (generated chain + state served by
/// four RLPx peers, one lying and one slow; fast and snap sync) and Solana (a generated
/// snapshot served by three HTTP sources at different rates; multi-source catch-up with
/// LtHash and capitalization checks; then the slots after the snapshot repaired from three
/// serve-repair servers, one lossy and one sending corrupted shreds, and compared with the
/// served ledger). Prints a verified summary; exits 1 if anything did not verify.
#[derive(Args, Debug, Clone)]
pub struct DemoCmd {
    /// Scratch directory for the devnet (served files and synced data). Default: a new
    /// directory under the system temp dir, removed at the end.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Accounts in the generated Ethereum state.
    #[arg(long, default_value_t = 20_000)]
    pub eth_accounts: u64,
    /// Blocks in the generated Ethereum chain.
    #[arg(long, default_value_t = 512)]
    pub eth_blocks: u64,
    /// Accounts in the generated Solana snapshot.
    #[arg(long, default_value_t = 50_000)]
    pub solana_accounts: u64,
    /// Slots after the Solana snapshot repaired from local serve-repair servers (one
    /// honest, one lossy, one sending corrupted shreds); 0 skips the repair phase.
    #[arg(long, default_value_t = 32)]
    pub solana_repair_slots: u64,
    /// Key-space shards of the sync engines and the snapshot index.
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Seed of the generated chain and state.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run only one family.
    #[arg(long, value_enum)]
    pub only: Option<Family>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Address of the `eth serve` in the printed next steps (the commands to sync the
    /// devnet yourself); a free port on the same address when another process holds it.
    #[arg(long, default_value = "127.0.0.1:30303", value_name = "ADDR")]
    pub next_listen: std::net::SocketAddr,
    /// Address of the `solana snapshot serve` in the printed next steps; a free port on the
    /// same address when another process holds it.
    #[arg(long, default_value = "127.0.0.1:8909", value_name = "ADDR")]
    pub next_http_listen: std::net::SocketAddr,
    /// Directory of the printed next steps' node key and data (kept after the demo).
    /// Default: `catchup-devnet` under the system temp dir.
    #[arg(long, value_name = "DIR")]
    pub next_dir: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Eth,
    Solana,
}

/// Network id of the generated devnet (no forks scheduled, so the fork id depends on the
/// genesis hash alone).
const DEVNET_NETWORK_ID: u64 = 0x0ca7_c40b;

/// Storage slots of the generated state's one large storage trie.
const ETH_BIG_STORAGE_SLOTS: u64 = 2_000;

#[derive(Debug, Serialize)]
struct EthPart {
    mode: String,
    ok: bool,
    expected_state_root: String,
    expected_head_hash: String,
    /// The stored trie walked from the expected root: every node present with its keccak,
    /// every storage trie and code reached (not just the pivot header's root compared).
    stored_trie_complete: bool,
    stored_trie_nodes_checked: u64,
    report: NetSyncReport,
}

/// Serving peers on their own executor thread, stopped (and joined) on drop.
struct DevnetPeers {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DevnetPeers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_devnet_peers(
    chain: &Arc<ChainData>,
    state: &Arc<StateData>,
    status: StatusInfo,
) -> anyhow::Result<(DevnetPeers, Vec<Enode>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let (chain, state, stop2) = (chain.clone(), state.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("demo-eth-peers".into())
        .spawn(move || {
            let ex = match glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .name("demo-eth-peers")
                .make()
            {
                Ok(ex) => ex,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::anyhow!("starting the peers' executor: {e}")));
                    return;
                }
            };
            catchup_io::exec::run(&ex, async move {
                let profiles = [
                    Profile::Honest,
                    Profile::Lying,
                    Profile::Honest,
                    Profile::Slow,
                ];
                let flag = stop2.clone();
                let started =
                    spawn_serving_peers(&chain, Some(&state), &status, &profiles, 40, move || {
                        flag.load(Ordering::Relaxed)
                    });
                let ok = started.is_ok();
                let _ = tx.send(started);
                while ok && !stop2.load(Ordering::Relaxed) {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
            });
        })
        .context("spawning the peers' thread")?;
    let peers = DevnetPeers {
        stop,
        thread: Some(thread),
    };
    let enodes = rx
        .recv_timeout(Duration::from_secs(30))
        .context("the devnet peers did not start within 30 s")??;
    Ok((peers, enodes))
}

fn eth_sync_once(
    chain: &Arc<ChainData>,
    state: &Arc<StateData>,
    mode: SyncMode,
    global: &GlobalOpts,
    shards: usize,
) -> anyhow::Result<EthPart> {
    let spec = ChainSpec::without_forks(DEVNET_NETWORK_ID);
    let genesis = chain.headers[0].hash.0;
    let head = chain.head().clone();
    let server_status = StatusInfo {
        network_id: spec.chain_id,
        total_difficulty: Vec::new(),
        head_hash: head.hash.0,
        head_number: head.number,
        genesis_hash: genesis,
        fork_id: spec.fork_id(genesis, head.number, 0),
        forks: Some(spec.fork_check(genesis, 0)),
    };
    let (peers, enodes) = start_devnet_peers(chain, state, server_status)?;
    let cfg = NetSyncConfig {
        sync: SyncConfig {
            mode,
            pivot_distance: 0,
            trusted_anchor: Some(chain.anchor_hash()),
            anchor_number: 0,
            ..SyncConfig::default()
        },
        shards,
        peers: enodes,
        net: NetConfig::default(),
        status: genesis_status(&spec, genesis),
        max_runtime_ms: 300_000,
        peer_queue_len: 64,
    };
    let rc = crate::node::opts::runtime_config(global, Some(shards), None)?;
    let node = LocalNode::new(SecretKey::new(&mut rand::thread_rng()));
    let extras = SyncExtras {
        keep_stores: true,
        ..SyncExtras::default()
    };
    let (report, stores) =
        run_sync_sharded_full(cfg, node, rc, Arc::new(AtomicBool::new(false)), extras)?;
    drop(peers);
    let (stored_trie_complete, stored_trie_nodes_checked, _) =
        crate::eth::sync::sim::check_state(&stores, state.root);
    drop(stores);
    let expected_root = format!("{}", state.root);
    let expected_head = format!("{}", head.hash);
    let ok = report.finished
        && report.failure.is_none()
        && report.status.state_complete
        && report.state_root.as_deref() == Some(expected_root.as_str())
        && report.head_hash.as_deref() == Some(expected_head.as_str())
        && stored_trie_complete;
    Ok(EthPart {
        mode: format!("{mode:?}").to_lowercase(),
        ok,
        expected_state_root: expected_root,
        expected_head_hash: expected_head,
        stored_trie_complete,
        stored_trie_nodes_checked,
        report,
    })
}

/// Roles of the devnet's Ethereum peers, in the order they are dialed.
const ETH_ROLES: [&str; 4] = ["honest", "lying", "honest", "slow"];

fn print_eth(part: &EthPart) {
    let r = &part.report;
    let peers: Vec<String> = r
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let role = ETH_ROLES.get(i).copied().unwrap_or("peer");
            if p.dropped_by_us {
                format!("{role} dropped (lied)")
            } else {
                format!("{role} {} answered", p.answered)
            }
        })
        .collect();
    println!(
        "eth {:<4} {}  head {} {}, state root {} ({}), {} headers, {} bodies, {} receipts, {} state nodes, {} codes in {} ms; peers: {}{}",
        part.mode,
        if part.ok { "VERIFIED" } else { "FAILED" },
        r.head_number.map(|n| n.to_string()).unwrap_or("-".into()),
        r.head_hash.as_deref().unwrap_or("-"),
        r.state_root.as_deref().unwrap_or("-"),
        match (
            r.state_root.as_deref() == Some(part.expected_state_root.as_str()),
            part.stored_trie_complete,
        ) {
            (true, true) => format!(
                "as served; stored trie walked: {} nodes, each keccak checked",
                part.stored_trie_nodes_checked
            ),
            (true, false) => "as served, but the stored trie is incomplete".to_string(),
            _ => format!("expected {}", part.expected_state_root),
        },
        r.headers_stored,
        r.bodies_stored,
        r.receipts_stored,
        r.state_nodes_stored,
        r.codes_stored,
        r.elapsed_ms,
        peers.join(", "),
        r.failure
            .as_ref()
            .map(|f| format!("; failure: {f}"))
            .unwrap_or_default()
    );
}

/// Where the printed next steps keep their data.
fn next_dir(cmd: &DemoCmd) -> PathBuf {
    cmd.next_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("catchup-devnet"))
}

/// The commands that serve the demo's Ethereum devnet and sync it, with a node key made
/// now in `dir/serve` so that the printed enode is the one the server will have. The sync
/// checks the state root the demo verified (`--expect-state-root`) and writes to a data
/// directory of this chain only (a devnet of other sizes has another genesis, which the
/// data directory of an earlier run would refuse).
fn next_steps(
    cmd: &DemoCmd,
    chain: &ChainData,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<String>> {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "catchup".into());
    let listen = free_or_other(cmd.next_listen);
    let serve_dir = dir.join("serve");
    let key = crate::eth::net::node_key::load_or_create(&serve_dir)?;
    let enode = LocalNode::new(key).enode(listen);
    let genesis = hex::encode(chain.headers[0].hash.0);
    // One data directory per chain: a demo run with other sizes or seed makes
    // another chain, which the first one's data directory would refuse.
    let sync_dir = dir.join(format!("sync-{}", &genesis[..12]));
    Ok(vec![
        format!(
            "{} eth serve --generate-accounts {} --generate-big-storage-slots {} --generate-blocks {} --seed {} --network-id {} --listen {listen} --datadir {}",
            shell_word(&exe),
            cmd.eth_accounts,
            ETH_BIG_STORAGE_SLOTS,
            cmd.eth_blocks,
            cmd.seed,
            DEVNET_NETWORK_ID,
            shell_word(&serve_dir.display().to_string())
        ),
        format!(
            "{} eth sync --peer {enode} --genesis-hash 0x{genesis} --network-id {} --mode snap --pivot-distance 0 --expect-state-root {} --datadir {}",
            shell_word(&exe),
            DEVNET_NETWORK_ID,
            chain.head().state_root,
            shell_word(&sync_dir.display().to_string())
        ),
    ])
}

/// The commands that make the demo's Solana snapshot again (the same generator settings
/// give the same archive), serve it and sync it, in a directory of this archive only.
fn solana_next_steps(
    cmd: &DemoCmd,
    archive: &str,
    slot: u64,
    dir: &std::path::Path,
) -> Vec<String> {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "catchup".into());
    // snapshot-SLOT-HASH.tar.zst: the hash names the archive.
    let hash: String = archive
        .trim_start_matches("snapshot-")
        .split('-')
        .nth(1)
        .unwrap_or("")
        .chars()
        .take(8)
        .collect();
    let base = dir.join(format!("solana-{slot}-{hash}"));
    let snaps = shell_word(&base.join("snapshots").display().to_string());
    let listen = free_or_other(cmd.next_http_listen);
    let exe = shell_word(&exe);
    vec![
        format!(
            "{exe} solana snapshot generate --accounts {} --slot {slot} --out {snaps}",
            cmd.solana_accounts
        ),
        format!("{exe} solana snapshot serve --listen {listen} {snaps}"),
        format!(
            "{exe} solana sync --source http://{listen} --datadir {}",
            shell_word(&base.join("sync").display().to_string())
        ),
    ]
}

/// `addr` when no process holds it now; otherwise a free port on the same address (so that
/// the printed serve command does not meet a port in use).
fn free_or_other(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => addr,
        Err(_) => std::net::TcpListener::bind((addr.ip(), 0))
            .and_then(|l| l.local_addr())
            .unwrap_or(addr),
    }
}

/// `word` as one shell word: as is when it holds only plain characters, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:@=,+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

pub fn run(cmd: DemoCmd, global: &GlobalOpts) -> anyhow::Result<i32> {
    if cmd.shards == 0 {
        anyhow::bail!("--shards must be at least 1");
    }
    let (workdir, _cleanup) = match &cmd.workdir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("catchup-demo-")
                .tempdir()
                .context("creating a scratch directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let started = std::time::Instant::now();
    let mut all_ok = true;
    let mut out = serde_json::Map::new();
    let mut next: Vec<String> = Vec::new();
    let mut next_solana: Vec<String> = Vec::new();

    if cmd.only != Some(Family::Solana) {
        if !cmd.json {
            eprintln!(
                "eth: generating {} accounts and {} blocks, serving them from 4 RLPx peers on loopback (honest, lying, honest, slow)",
                cmd.eth_accounts, cmd.eth_blocks
            );
        }
        let state = Arc::new(StateData::generate(
            cmd.eth_accounts,
            ETH_BIG_STORAGE_SLOTS,
            cmd.seed,
        ));
        let chain = Arc::new(generate_chain(cmd.eth_blocks, state.root, cmd.seed));
        let mut parts = Vec::new();
        for mode in [SyncMode::Fast, SyncMode::Snap] {
            let part = eth_sync_once(&chain, &state, mode, global, cmd.shards)?;
            all_ok &= part.ok;
            if !cmd.json {
                print_eth(&part);
            }
            parts.push(part);
        }
        out.insert("eth".into(), serde_json::to_value(&parts)?);
        let dir = next_dir(&cmd);
        match next_steps(&cmd, &chain, &dir) {
            Ok(n) => next = n,
            Err(e) => tracing::warn!("cannot prepare the next steps in {}: {e:#}", dir.display()),
        }
    }

    if cmd.only != Some(Family::Eth) {
        let mut dcfg = DemoConfig::new(workdir.join("solana"));
        dcfg.accounts = cmd.solana_accounts;
        dcfg.shards = cmd.shards;
        if cmd.solana_repair_slots > 10_000 {
            anyhow::bail!("--solana-repair-slots must be at most 10000");
        }
        dcfg.repair_slots = cmd.solana_repair_slots;
        if !cmd.json {
            eprintln!(
                "solana: generating a snapshot of {} accounts, serving it from {} HTTP sources at different rates; then repairing {} slots after it from {} repair servers ({})",
                dcfg.accounts,
                dcfg.source_rates_bytes_per_s.len(),
                dcfg.repair_slots,
                dcfg.repair_servers.len(),
                dcfg.repair_servers.iter().map(|s| s.0.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        let json_mode = cmd.json;
        let report = run_solana_demo(
            &dcfg,
            Box::new(move |p| {
                if !json_mode {
                    eprintln!(
                        "solana: {}/{} chunks, {:.1} MB/s, {} bytes fed to the verifier",
                        p.chunks_done,
                        p.chunks_total,
                        p.rate_bytes_per_s / 1e6,
                        p.fed_bytes
                    );
                }
            }),
        )?;
        let repair_ok = report
            .repair
            .as_ref()
            .map_or(dcfg.repair_slots == 0, |r| r.verified);
        let trust_ok = report
            .gossip
            .as_ref()
            .is_none_or(|g| g.forged_caught.is_some());
        let ok = report.sync.complete && repair_ok && trust_ok;
        all_ok &= ok;
        if let (true, Some(slot)) = (report.sync.complete, report.sync.slot) {
            next_solana = solana_next_steps(&cmd, &report.sync.archive, slot, &next_dir(&cmd));
        }
        if !cmd.json {
            let s = &report.sync;
            let verified = s.verified.as_ref().map(|v| {
                format!(
                    "{} accounts live of {} stored, LtHash {}, capitalization {}, {} shards; ",
                    v["accounts_live"],
                    v["accounts_total"],
                    if v["lt_hash_ok"] == true {
                        "ok"
                    } else {
                        "MISMATCH"
                    },
                    if v["capitalization_ok"] == true {
                        "ok"
                    } else {
                        "MISMATCH"
                    },
                    v["shards"].as_array().map_or(0, Vec::len)
                )
            });
            println!(
                "solana   {}  slot {} archive {} ({} bytes, {} chunks from {} sources) in {} ms (download {} ms); {}{}{}",
                if report.sync.complete { "VERIFIED" } else { "FAILED" },
                s.slot.map(|n| n.to_string()).unwrap_or("-".into()),
                s.archive,
                s.size_bytes,
                s.chunks_total,
                report.sources.len(),
                s.total_ms,
                s.download_ms,
                verified.unwrap_or_default(),
                if s.bad_sources.is_empty() {
                    "no bad source".to_string()
                } else {
                    format!("bad sources: {}", s.bad_sources.join("; "))
                },
                report
                    .gossip
                    .as_ref()
                    .map(crate::solana::download::demo::gossip_summary)
                    .unwrap_or_default()
            );
            match &report.repair {
                Some(r) => {
                    let servers: Vec<String> = r
                        .servers
                        .iter()
                        .zip(&r.summary.peers)
                        .map(|(name, p)| {
                            if p.dropped {
                                format!("{name} dropped ({} invalid shreds)", p.invalid)
                            } else {
                                format!("{name} {} answered", p.answered)
                            }
                        })
                        .collect();
                    println!(
                        "solana   {}  {}; {}/{} slots byte-identical to the served ledger; servers: {}",
                        if r.verified { "REPAIRED" } else { "FAILED" },
                        {
                            let line = r.summary.line();
                            match line.strip_prefix("repair of ") {
                                Some(rest) => rest.to_string(),
                                None => line,
                            }
                        },
                        r.slots_identical,
                        dcfg.repair_slots,
                        servers.join(", ")
                    );
                }
                None if dcfg.repair_slots == 0 => {}
                None => println!(
                    "solana   FAILED  repair phase did not run (the snapshot did not verify)"
                ),
            }
        }
        out.insert("solana".into(), serde_json::to_value(&report)?);
    }

    let secs = started.elapsed().as_secs_f64();
    if cmd.json {
        out.insert("ok".into(), json!(all_ok));
        out.insert(
            "elapsed_ms".into(),
            json!(started.elapsed().as_millis() as u64),
        );
        out.insert("next".into(), json!(next));
        out.insert("next_solana".into(), json!(next_solana));
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "demo: {} in {secs:.1} s",
            if all_ok {
                "every part synced and verified"
            } else {
                "NOT VERIFIED"
            }
        );
        if !next.is_empty() {
            println!("next: serve this Ethereum devnet and snap-sync it yourself (two terminals):");
            for c in &next {
                println!("  {c}");
            }
        }
        if !next_solana.is_empty() {
            println!(
                "next: make this Solana snapshot again, serve it and sync it yourself (the serve keeps running: sync from another terminal):"
            );
            for c in &next_solana {
                println!("  {c}");
            }
        }
    }
    Ok(if all_ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(
            shell_word("/tmp/catchup-devnet/serve"),
            "/tmp/catchup-devnet/serve"
        );
        assert_eq!(shell_word("/tmp/my dir"), "'/tmp/my dir'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn a_port_in_use_is_replaced_by_a_free_one() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let other = free_or_other(addr);
        assert_ne!(other, addr);
        assert_eq!(other.ip(), addr.ip());
        drop(held);
        assert_eq!(free_or_other(addr), addr);
    }
}

//! The sync engines over the wire: four `serve` peers on loopback RLPx (two honest, one
//! lying, one slow) serve the devnet fixture (chain.rlp + headstate.json); fast sync and
//! snap sync must each end at state root 8fcfb02c…728b and head 0x44e3809c…4d2a.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::path::PathBuf;
use std::sync::Arc;

use catchup::eth::net::chain::{Profile, RawChain};
use catchup::eth::net::chainspec::{chain_status, genesis_status, ChainSpec};
use catchup::eth::net::devnet::spawn_serving_peers;
use catchup::eth::net::sync_net::NetSyncConfig;
use catchup::eth::net::{LocalNode, NetConfig};
use catchup::eth::sync::chain::{chain_from_rlp_file, StateData};
use catchup::eth::sync::config::{SyncConfig, SyncMode};
use catchup_devp2p::enode::Enode;
use catchup_devp2p::secp256k1::SecretKey;

const STATE_ROOT: &str = "0x8fcfb02cfca007773bd55bc1c3e50a3c8612a59c87ce057e5957e8bf17c1728b";

fn devnet() -> Option<PathBuf> {
    let dir = std::env::var_os("CATCHUP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("ethereum/devnet");
    if dir.join("headstate.json").exists() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("devnet fixture missing at {} (CI=true)", dir.display());
    }
    skip_note!("skipping: devnet fixture missing at {}", dir.display());
    None
}

/// One shard (the shape a new user meets first) dialing all four peers.
fn sync_over_wire(mode: SyncMode, shards: usize) {
    let Some(dir) = devnet() else { return };
    let chain = chain_from_rlp_file(&dir.join("chain.rlp")).unwrap();
    let raw = RawChain::from_rlp_file(&dir.join("chain.rlp")).unwrap();
    let spec = ChainSpec::from_genesis_json(&dir.join("genesis.json")).unwrap();
    let expected_head = format!("{}", chain.head().hash);
    let (enodes, stop, thread) = servers_on_a_thread(&dir);
    let sync = SyncConfig {
        mode,
        pivot_distance: 0,
        fetch_receipts: false,
        anchor_number: chain.base - 1,
        trusted_anchor: Some(chain.anchor_hash()),
        ..SyncConfig::default()
    };
    let cfg = NetSyncConfig {
        sync,
        shards,
        peers: enodes,
        net: NetConfig::default(),
        status: genesis_status(&spec, raw.parent_of_first),
        max_runtime_ms: 120_000,
        peer_queue_len: 64,
    };
    let extras = catchup::eth::net::sync_sharded::SyncExtras {
        keep_stores: true,
        ..Default::default()
    };
    let (report, stores) = catchup::eth::net::sync_sharded::run_sync_sharded_full(
        cfg,
        LocalNode::new(SecretKey::new(&mut rand::thread_rng())),
        catchup_shards::RuntimeConfig::new(shards),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
        extras,
    )
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    thread.join().unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert!(report.finished, "sync did not finish: {:?}", report.failure);
    assert_eq!(report.state_root.as_deref(), Some(STATE_ROOT));
    assert_eq!(report.head_hash.as_deref(), Some(expected_head.as_str()));
    assert!(expected_head.starts_with("0x44e3809c"));
    assert_eq!(report.head_number, Some(600));
    assert!(
        report
            .peers
            .iter()
            .all(|p| p.requests > 0 || p.dropped_by_us),
        "every peer was used"
    );
    // The stored trie, walked from the served root: every node there with its keccak,
    // every storage trie and code reached (not only the pivot header's root compared).
    let (complete, nodes, _) =
        catchup::eth::sync::sim::check_state(&stores, STATE_ROOT.parse().unwrap());
    assert!(complete, "the stored trie is incomplete");
    assert_eq!(nodes, report.state_nodes_stored);
}

#[test]
fn devnet_fast_sync_on_one_shard_over_rlpx_from_four_peers_one_lying_one_slow() {
    sync_over_wire(SyncMode::Fast, 1);
}

#[test]
fn devnet_snap_sync_on_one_shard_over_rlpx_from_four_peers_one_lying_one_slow() {
    sync_over_wire(SyncMode::Snap, 1);
}

/// Start four serving peers (honest, lying, honest, slow) on a thread of their own; returns
/// their enodes and the flag that stops them.
fn servers_on_a_thread(
    dir: &std::path::Path,
) -> (
    Vec<Enode>,
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let dir = dir.to_path_buf();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        catchup_io::exec::run_unbound(async move {
            let chain = Arc::new(chain_from_rlp_file(&dir.join("chain.rlp")).unwrap());
            let state = Arc::new(StateData::from_geth_dump(&dir.join("headstate.json")).unwrap());
            let raw = RawChain::from_rlp_file(&dir.join("chain.rlp")).unwrap();
            let spec = ChainSpec::from_genesis_json(&dir.join("genesis.json")).unwrap();
            let status = chain_status(&spec, raw.parent_of_first, &raw);
            let profiles = [
                Profile::Honest,
                Profile::Lying,
                Profile::Honest,
                Profile::Slow,
            ];
            let stop = stop2.clone();
            let enodes =
                spawn_serving_peers(&chain, Some(&state), &status, &profiles, 40, move || {
                    stop.load(std::sync::atomic::Ordering::Relaxed)
                })
                .unwrap();
            tx.send(enodes).unwrap();
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(300)).await;
        });
    });
    (rx.recv().unwrap(), stop, t)
}

/// The engines on two pinned shards of the runtime, each dialing the peers it owns and
/// reaching the others' through the channel mesh.
#[test]
fn devnet_snap_and_fast_sync_on_two_shards_each_dialing_its_own_peers() {
    let Some(dir) = devnet() else { return };
    let raw = RawChain::from_rlp_file(&dir.join("chain.rlp")).unwrap();
    let spec = ChainSpec::from_genesis_json(&dir.join("genesis.json")).unwrap();
    let (enodes, stop, thread) = servers_on_a_thread(&dir);
    for mode in [SyncMode::Snap, SyncMode::Fast] {
        let sync = SyncConfig {
            mode,
            pivot_distance: 0,
            fetch_receipts: false,
            anchor_number: raw.base - 1,
            trusted_anchor: Some(catchup_eth::B256::from(raw.parent_of_first)),
            ..SyncConfig::default()
        };
        let cfg = NetSyncConfig {
            sync,
            shards: 2,
            peers: enodes.clone(),
            net: NetConfig::default(),
            status: genesis_status(&spec, raw.parent_of_first),
            max_runtime_ms: 60_000,
            peer_queue_len: 64,
        };
        let node = LocalNode::new(SecretKey::new(&mut rand::thread_rng()));
        let report = catchup::eth::net::sync_sharded::run_sync_sharded(
            cfg,
            node,
            catchup_shards::RuntimeConfig::new(2),
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
        )
        .unwrap();
        eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
        assert!(report.finished, "{mode:?}: {:?}", report.failure);
        assert_eq!(report.state_root.as_deref(), Some(STATE_ROOT));
        assert_eq!(report.head_number, Some(600));
        assert!(report
            .head_hash
            .as_deref()
            .unwrap()
            .starts_with("0x44e3809c"));
        assert_eq!(report.peers.len(), 4);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    thread.join().unwrap();
}

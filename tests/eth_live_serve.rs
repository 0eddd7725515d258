//! `catchup eth serve` as today's peers are: a live chain whose head moves and whose old
//! states are forgotten (`--grow-every-ms`, `--state-history`), the geth 1.17 protocol
//! set (`--protocols eth/69,eth/70,snap/1`), BlockRangeUpdate as the head moves, and eth/70
//! receipt lists split across responses (EIP-7975). Real processes on loopback, and an
//! in-process client over RLPx.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use catchup::eth::net::chain::Profile;
use catchup::eth::net::chainspec::{genesis_status, ChainSpec};
use catchup::eth::net::engine_serve::EngineResponder;
use catchup::eth::net::eth_peer::EmptyResponder;
use catchup::eth::net::server::{accept_loop, resolve_listen, ServeConfig};
use catchup::eth::net::{EthPeer, LocalNode, NetConfig, PeerConn, Wire};
use catchup::eth::serve::ServingPeer;
use catchup::eth::sync::chain::{generate_chain, StateData};
use catchup_devp2p::enode::Enode;
use catchup_devp2p::eth::EthMessage;
use catchup_devp2p::secp256k1::SecretKey;
use catchup_devp2p::snap::SnapMessage;

const BIN: &str = env!("CARGO_BIN_EXE_catchup");

/// An `eth serve` child, killed on drop, with its stdout lines.
struct Serve {
    child: Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
    info: serde_json::Value,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str]) -> Serve {
    let mut child = Command::new(BIN)
        .args(["eth", "serve", "--listen", "127.0.0.1:0", "--json"])
        .args(["--network-id", "779"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn eth serve");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in out.lines() {
            let Ok(l) = l else { return };
            let v: serde_json::Value = serde_json::from_str(&l).expect("a JSON line");
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    let info = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("eth serve prints its enode");
    assert_eq!(info["event"], "listening", "{info}");
    assert!(info["enode"].as_str().unwrap().starts_with("enode://"));
    // The enode is printed once a shard listens: it can be dialed at once.
    let addr: std::net::SocketAddr = info["listen"].as_str().unwrap().parse().unwrap();
    std::net::TcpStream::connect(addr).expect("eth serve listens when it prints its enode");
    Serve { child, lines, info }
}

fn hex32(v: &serde_json::Value) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(v.as_str().unwrap().trim_start_matches("0x"), &mut out).unwrap();
    out
}

/// Ask for the first accounts of the state at `root`: how many came back.
async fn accounts_at(peer: &mut EthPeer, root: [u8; 32]) -> usize {
    let resp = peer
        .request(
            |request_id| {
                Wire::Snap(SnapMessage::GetAccountRange {
                    request_id,
                    root,
                    origin: [0; 32],
                    limit: [0xff; 32],
                    response_bytes: 4096,
                })
            },
            10_000,
            &EmptyResponder,
        )
        .await
        .expect("an answer");
    match resp {
        Wire::Snap(SnapMessage::AccountRange { accounts, .. }) => accounts.len(),
        other => panic!("unexpected answer {other:?}"),
    }
}

#[test]
fn a_live_chain_moves_announces_its_head_and_forgets_old_states() {
    let s = serve(&[
        "--generate-accounts",
        "400",
        "--generate-blocks",
        "20",
        "--grow-every-ms",
        "200",
        "--state-history",
        "8",
        "--protocols",
        "eth/69,eth/70,snap/1",
    ]);
    assert_eq!(
        s.info["protocols"],
        serde_json::json!(["eth/69", "eth/70", "snap/1"])
    );
    let first_root = hex32(&s.info["head_state_root"]);
    let genesis = hex32(&s.info["genesis_hash"]);
    // JSON lines name each new head, one after another, with a new state root each time.
    let mut heads = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while heads.len() < 12 {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = s.lines.recv_timeout(left).expect("a new head within 60 s");
        assert_eq!(v["event"], "head", "{v}");
        assert_eq!(v["network_id"], 779);
        assert_eq!(v["genesis_hash"], s.info["genesis_hash"]);
        heads.push(v);
    }
    for w in heads.windows(2) {
        assert_eq!(
            w[1]["head_number"].as_u64().unwrap(),
            w[0]["head_number"].as_u64().unwrap() + 1
        );
        assert_ne!(w[1]["state_root"], w[0]["state_root"]);
    }
    let last = heads.last().unwrap();
    assert_eq!(last["states_kept"], 8, "{last}");
    assert!(last["head_number"].as_u64().unwrap() >= 32);
    let enode = Enode::parse(s.info["enode"].as_str().unwrap()).unwrap();
    let status = genesis_status(&ChainSpec::without_forks(779), genesis);
    let lines = &s.lines;
    let mut newest = last.clone();
    let (old, new, range_before, range_after, version) = catchup_io::exec::run_unbound(async {
        let local = LocalNode::new(SecretKey::new(&mut rand::thread_rng()));
        let conn = PeerConn::dial(enode.addr, enode.id, &local, &NetConfig::default())
            .await
            .unwrap();
        let mut peer = EthPeer::handshake(conn, &status).await.unwrap();
        let range_before = peer.block_range().expect("an eth/69+ Status has a range");
        // The first state fell out of the 8 kept: answered empty, as geth does.
        let old = accounts_at(&mut peer, first_root).await;
        // The head moves every 200 ms: BlockRangeUpdates arrive while we wait.
        peer.idle(1_500, &EmptyResponder).await.unwrap();
        let range_after = peer.block_range().unwrap();
        // The newest head named on stdout answers.
        if let Some(v) = lines.try_iter().last() {
            newest = v;
        }
        let new = accounts_at(&mut peer, hex32(&newest["state_root"])).await;
        (old, new, range_before, range_after, peer.eth.version)
    });
    assert_eq!(version, 70, "eth/70 is the highest version both offer");
    assert_eq!(old, 0, "a root older than the state history answers empty");
    assert!(new > 0, "the newest root answers");
    assert_eq!(range_before.0, 0);
    assert!(
        range_after.1 >= range_before.1 + 3,
        "BlockRangeUpdate moved the peer's range: {range_before:?} -> {range_after:?}"
    );
}

/// An in-process server over a generated chain, answering eth/70 receipts at most
/// `limit` bytes at a time; returns its enode. Stops when `stop` is set.
fn receipts_server(
    chain: Arc<catchup::eth::sync::chain::ChainData>,
    status: catchup::eth::net::StatusInfo,
    limit: usize,
    stop: Rc<std::cell::Cell<bool>>,
) -> Enode {
    let claim = resolve_listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let listen = claim.addr;
    let server = Rc::new(LocalNode::new(SecretKey::new(&mut rand::thread_rng())));
    let id = server.id();
    let cfg = Rc::new(ServeConfig {
        listen,
        shards: 1,
        max_peers_per_shard: 4,
        net: NetConfig::default(),
        status,
        receipts_limit_bytes: Some(limit),
    });
    let responder = Rc::new(EngineResponder::new(
        ServingPeer::new(chain, None),
        Profile::Honest,
        1,
    ));
    glommio::spawn_local(async move {
        let _claim = claim;
        accept_loop(0, listen, server, cfg, responder, move || stop.get())
            .await
            .unwrap()
    })
    .detach();
    Enode { id, addr: listen }
}

#[test]
fn eth70_receipts_of_one_block_continue_across_responses() {
    let st = StateData::generate(50, 0, 9);
    let chain = Arc::new(generate_chain(64, st.root, 9));
    let genesis = chain.headers[0].hash.0;
    let status = genesis_status(&ChainSpec::without_forks(5), genesis);
    let hashes: Vec<[u8; 32]> = chain.headers[1..].iter().map(|h| h.hash.0).collect();
    let busy = chain.receipts[1..]
        .iter()
        .filter(|r| {
            catchup_eth::decode_receipts(&r.as_ref().unwrap().raw)
                .unwrap()
                .len()
                > 1
        })
        .count();
    assert!(busy > 5, "blocks with several receipts to split");
    let total: usize = chain.receipts[1..]
        .iter()
        .map(|r| {
            catchup_eth::decode_receipts(&r.as_ref().unwrap().raw)
                .unwrap()
                .len()
        })
        .sum();
    for (versions, limit) in [(vec![70u64], 40usize), (vec![70], 1), (vec![69], 40)] {
        let served = chain.clone();
        let status = status.clone();
        let hashes = hashes.clone();
        let want = versions.clone();
        let (lists, sent, version) = catchup_io::exec::run_unbound(async move {
            let stop = Rc::new(std::cell::Cell::new(false));
            let enode = receipts_server(served, status.clone(), limit, stop.clone());
            let mut local = LocalNode::new(SecretKey::new(&mut rand::thread_rng()));
            local
                .capabilities
                .retain(|c| c.name != "eth" || want.contains(&c.version));
            let conn = PeerConn::dial(enode.addr, enode.id, &local, &NetConfig::default())
                .await
                .unwrap();
            let mut peer = EthPeer::handshake(conn, &status).await.unwrap();
            let mut lists: Vec<Vec<u8>> = Vec::new();
            // Ask until every block's receipts came (an answer may stop at a block).
            while lists.len() < hashes.len() {
                let rest = hashes[lists.len()..].to_vec();
                let resp = peer
                    .request(
                        |request_id| {
                            Wire::Eth(EthMessage::GetReceipts {
                                request_id,
                                hashes: rest,
                            })
                        },
                        10_000,
                        &EmptyResponder,
                    )
                    .await
                    .unwrap();
                let Wire::Eth(EthMessage::Receipts { receipts, .. }) = resp else {
                    panic!("unexpected answer {resp:?}")
                };
                assert!(!receipts.is_empty(), "an answer makes progress");
                lists.extend(receipts);
            }
            stop.set(true);
            (lists, peer.stats.requests_sent, peer.eth.version)
        });
        assert_eq!(version, versions[0]);
        // Every block's list, whole: its root is the header's receipts root.
        for (i, l) in lists.iter().enumerate() {
            let h = &chain.headers[i + 1];
            assert_eq!(
                catchup_eth::receipts_root_encoded(l).unwrap(),
                h.receipts_root,
                "block {}",
                h.number
            );
        }
        if version == 70 && limit == 1 {
            // One receipt per answer: every receipt after a block's first was asked for
            // again from where the previous answer stopped.
            assert!(
                sent as usize >= total,
                "{sent} requests for {total} receipts"
            );
        } else if version == 70 {
            assert!(sent > 2, "{sent} requests: nothing was continued");
        } else {
            assert!(sent <= 2, "eth/69 sends whole lists ({sent} requests)");
        }
    }
}

#[test]
fn a_geth_shaped_peer_is_snap_synced_with_its_receipts() {
    // eth/69, eth/70 and snap/1 only, as geth 1.17 offers; a static chain; receipts cut
    // at 120 bytes so that blocks continue across eth/70 answers.
    let s = serve(&[
        "--generate-accounts",
        "600",
        "--generate-blocks",
        "40",
        "--protocols",
        "eth/69,eth/70,snap/1",
        "--receipts-response-bytes",
        "120",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["eth", "sync", "--mode", "snap", "--json", "--shards", "1"])
        .args(["--pivot-distance", "0", "--receipts", "true"])
        .args(["--timeout-s", "120", "--network-id", "779"])
        .arg("--genesis-hash")
        .arg(s.info["genesis_hash"].as_str().unwrap())
        .arg("--peer")
        .arg(s.info["enode"].as_str().unwrap())
        .arg("--datadir")
        .arg(dir.path())
        .output()
        .expect("run eth sync");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let r = &v["report"];
    assert_eq!(v["ok"], true, "{r}");
    assert_eq!(r["state_root"], s.info["head_state_root"], "{r}");
    assert_eq!(r["head_number"], 40, "{r}");
    assert!(r["receipts_stored"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["peers"][0]["eth_version"], 70, "{r}");
    // The peer's served range, from its eth/69+ Status, is kept for the sync.
    assert_eq!(
        r["peers"][0]["block_range"],
        serde_json::json!([0, 40]),
        "{r}"
    );
}

#[test]
fn protocols_flag_refuses_what_is_not_spoken() {
    let out = Command::new(BIN)
        .args(["eth", "serve", "--listen", "127.0.0.1:0"])
        .args(["--generate-accounts", "10", "--protocols", "eth/72,snap/1"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--protocols") && stderr.contains("eth/72"),
        "{stderr}"
    );
}

#[test]
fn a_live_chain_is_snap_synced_at_a_pivot_within_its_state_history() {
    // 128 states kept at 300 ms a block: a pivot at the head stays served for ~38 s.
    let s = serve(&[
        "--generate-accounts",
        "2000",
        "--generate-blocks",
        "30",
        "--grow-every-ms",
        "300",
        "--state-history",
        "128",
    ]);
    // Start once the chain has grown a few blocks past the generated ones.
    let mut seen: Vec<serde_json::Value> = Vec::new();
    while seen.len() < 3 {
        seen.push(
            s.lines
                .recv_timeout(Duration::from_secs(60))
                .expect("a new head within 60 s"),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["eth", "sync", "--mode", "snap", "--json", "--shards", "2"])
        .args(["--pivot-distance", "0", "--timeout-s", "120"])
        .args(["--network-id", "779", "--genesis-hash"])
        .arg(s.info["genesis_hash"].as_str().unwrap())
        .arg("--peer")
        .arg(s.info["enode"].as_str().unwrap())
        .arg("--datadir")
        .arg(dir.path())
        .output()
        .expect("run eth sync");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let r = &v["report"];
    assert_eq!(v["ok"], true, "{r}");
    // The synced state is the one the server named for that block.
    let n = r["head_number"].as_u64().unwrap();
    assert!(n > 30, "the pivot is a block the chain grew: {r}");
    seen.extend(s.lines.try_iter());
    let named = seen
        .iter()
        .find(|l| l["head_number"].as_u64() == Some(n))
        .expect("a head line for the pivot block");
    assert_eq!(r["state_root"], named["state_root"], "{r}");
    assert_eq!(r["head_hash"], named["head_hash"], "{r}");
}

#[test]
fn node_data_trie_nodes_and_storage_of_a_forgotten_root_answer_empty() {
    // Default protocols (eth/66 too): GetNodeData by hash, and snap by root.
    let s = serve(&[
        "--generate-accounts",
        "300",
        "--generate-blocks",
        "5",
        "--grow-every-ms",
        "250",
        "--state-history",
        "6",
    ]);
    let first_root = hex32(&s.info["head_state_root"]);
    let genesis = hex32(&s.info["genesis_hash"]);
    // Eight new heads: the first state is no longer among the last six.
    for _ in 0..8 {
        s.lines
            .recv_timeout(Duration::from_secs(60))
            .expect("a new head within 60 s");
    }
    let enode = Enode::parse(s.info["enode"].as_str().unwrap()).unwrap();
    let status = genesis_status(&ChainSpec::without_forks(779), genesis);
    let lines = &s.lines;
    let got = catchup_io::exec::run_unbound(async {
        let mut local = LocalNode::new(SecretKey::new(&mut rand::thread_rng()));
        local
            .capabilities
            .retain(|c| c.name != "eth" || c.version == 66);
        let conn = PeerConn::dial(enode.addr, enode.id, &local, &NetConfig::default())
            .await
            .unwrap();
        let mut peer = EthPeer::handshake(conn, &status).await.unwrap();
        assert_eq!(peer.eth.version, 66);
        // The next head named: kept for the next 1.5 s.
        let next = lines.recv_timeout(Duration::from_secs(60)).expect("a head");
        let newest = hex32(&next["state_root"]);
        let mut got = Vec::new();
        for root in [first_root, newest] {
            let nodes = match peer
                .request(
                    |request_id| {
                        Wire::Eth(EthMessage::GetNodeData {
                            request_id,
                            hashes: vec![root],
                        })
                    },
                    10_000,
                    &EmptyResponder,
                )
                .await
                .unwrap()
            {
                Wire::Eth(EthMessage::NodeData { nodes, .. }) => nodes.len(),
                other => panic!("{other:?}"),
            };
            let trie_nodes = match peer
                .request(
                    |request_id| {
                        Wire::Snap(SnapMessage::GetTrieNodes {
                            request_id,
                            root,
                            paths: vec![vec![catchup::eth::net::convert::compact_encode(&[])]],
                            response_bytes: 100_000,
                        })
                    },
                    10_000,
                    &EmptyResponder,
                )
                .await
                .unwrap()
            {
                Wire::Snap(SnapMessage::TrieNodes { nodes, .. }) => nodes.len(),
                other => panic!("{other:?}"),
            };
            got.push((nodes, trie_nodes, accounts_at(&mut peer, root).await));
        }
        got
    });
    assert_eq!(got[0], (0, 0, 0), "the forgotten root: all empty");
    assert!(got[1].0 == 1 && got[1].1 == 1 && got[1].2 > 0, "{got:?}");
}

#[test]
fn block_range_updates_every_32_blocks_as_geth_sends_them() {
    let s = serve(&[
        "--generate-accounts",
        "100",
        "--generate-blocks",
        "5",
        "--grow-every-ms",
        "20",
        "--block-range-every",
        "32",
    ]);
    let genesis = hex32(&s.info["genesis_hash"]);
    let enode = Enode::parse(s.info["enode"].as_str().unwrap()).unwrap();
    let status = genesis_status(&ChainSpec::without_forks(779), genesis);
    let (before, after) = catchup_io::exec::run_unbound(async {
        let local = LocalNode::new(SecretKey::new(&mut rand::thread_rng()));
        let conn = PeerConn::dial(enode.addr, enode.id, &local, &NetConfig::default())
            .await
            .unwrap();
        let mut peer = EthPeer::handshake(conn, &status).await.unwrap();
        let before = peer.block_range().unwrap();
        // Wait for a first update, at most 20 s.
        for _ in 0..20 {
            peer.idle(1_000, &EmptyResponder).await.unwrap();
            if peer.block_range().unwrap() != before {
                break;
            }
        }
        (before, peer.block_range().unwrap())
    });
    assert!(after.1 > before.1, "no BlockRangeUpdate: {before:?}");
    // The first update came once the head had moved 32 blocks (checked every 100 ms).
    assert!(after.1 - before.1 >= 32, "{before:?} -> {after:?}");
}

#[test]
fn fast_mode_against_peers_without_eth66_says_so_in_one_line() {
    let s = serve(&[
        "--generate-accounts",
        "100",
        "--generate-blocks",
        "5",
        "--protocols",
        "eth/69,eth/70,snap/1",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["eth", "sync", "--mode", "fast", "--shards", "1"])
        .args(["--timeout-s", "120", "--network-id", "779"])
        .arg("--genesis-hash")
        .arg(s.info["genesis_hash"].as_str().unwrap())
        .arg("--peer")
        .arg(s.info["enode"].as_str().unwrap())
        .arg("--datadir")
        .arg(dir.path())
        .output()
        .expect("run eth sync");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "not the timeout"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("no eth/66") && errors[0].contains("--mode snap"),
        "{}",
        errors[0]
    );
}

//! Receipts over the wire: a serving node over the sepolia era1 fixture (blocks
//! 172032–180223, 93 transactions with receipts) answers headers, bodies and receipts; the
//! client verifies every header link, body root and receipts root, over eth/68 (receipts
//! with blooms), eth/69 (receipts without blooms, rebuilt on receipt) and eth/70 (a block's
//! receipts continued across answers).

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use catchup::eth::net::chain::{load_era1, Profile};
use catchup::eth::net::download::{fetch_bodies, fetch_headers, fetch_receipts, Downloaded};
use catchup::eth::net::engine_serve::EngineResponder;
use catchup::eth::net::eth_peer::EmptyResponder;
use catchup::eth::net::server::{accept_loop, resolve_listen, ServeConfig};
use catchup::eth::net::{EthPeer, LocalNode, NetConfig, PeerConn, StatusInfo};
use catchup::eth::serve::ServingPeer;
use catchup_devp2p::forkid::ForkId;
use catchup_devp2p::secp256k1::SecretKey;
use catchup_eth::B256;

const SEPOLIA_GENESIS: &str = "25a5cc106eea7138acab33231d7160d69cb777ee0c2c553fcddf5138993e6dd9";

fn era1_file() -> Option<PathBuf> {
    let f = std::env::var_os("CATCHUP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("ethereum/chain/sepolia-00021-b8814b14.era1");
    if f.exists() {
        return Some(f);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("era1 fixture missing at {} (CI=true)", f.display());
    }
    skip_note!("skipping: era1 fixture missing at {}", f.display());
    None
}

fn download_receipts(eth_versions: &[u64]) {
    download_receipts_with(eth_versions, None)
}

fn download_receipts_with(eth_versions: &[u64], receipts_limit_bytes: Option<usize>) {
    let Some(file) = era1_file() else { return };
    let (raw, data, td) = load_era1(&[file]).unwrap();
    assert_eq!((raw.base, raw.head_number()), (172_032, 180_223));
    let mut genesis = [0u8; 32];
    hex::decode_to_slice(SEPOLIA_GENESIS, &mut genesis).unwrap();
    let server_status = StatusInfo {
        network_id: 11_155_111,
        total_difficulty: td
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect(),
        head_hash: raw.head_hash(),
        head_number: raw.head_number(),
        genesis_hash: genesis,
        fork_id: ForkId::default(),
        // The era1 files carry no fork schedule: only rule 1 of EIP-2124 applies.
        forks: None,
    };
    let client_status = StatusInfo {
        head_hash: genesis,
        head_number: 0,
        ..server_status.clone()
    };
    let anchor = B256::from(raw.parent_of_first);
    let (from, to) = (raw.base, raw.head_number());
    let data = Arc::new(data);
    let versions = eth_versions.to_vec();
    let (receipts, headers, bodies, version) = catchup_io::exec::run_unbound(async move {
        let claim = resolve_listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let listen = claim.addr;
        let server = Rc::new(LocalNode::new(SecretKey::new(&mut rand::thread_rng())));
        let id = server.id();
        let cfg = Rc::new(ServeConfig {
            listen,
            shards: 1,
            max_peers_per_shard: 4,
            net: NetConfig::default(),
            status: server_status,
            receipts_limit_bytes,
        });
        let responder = Rc::new(EngineResponder::new(
            ServingPeer::new(data, None),
            Profile::Honest,
            1,
        ));
        let stop = Rc::new(std::cell::Cell::new(false));
        let stop2 = stop.clone();
        glommio::spawn_local(async move {
            accept_loop(0, listen, server, cfg, responder, move || stop2.get())
                .await
                .unwrap()
        })
        .detach();

        let mut local = LocalNode::new(SecretKey::new(&mut rand::thread_rng()));
        local
            .capabilities
            .retain(|c| c.name != "eth" || versions.contains(&c.version));
        let conn = PeerConn::dial(listen, id, &local, &NetConfig::default())
            .await
            .unwrap();
        let mut peer = EthPeer::handshake(conn, &client_status).await.unwrap();
        let mut out = Downloaded::default();
        fetch_headers(
            &mut peer,
            anchor,
            from,
            to,
            192,
            10_000,
            &EmptyResponder,
            &mut out,
        )
        .await
        .unwrap();
        fetch_bodies(&mut peer, 128, 10_000, &EmptyResponder, &mut out)
            .await
            .unwrap();
        let receipts = fetch_receipts(&mut peer, 256, 10_000, &EmptyResponder, &out)
            .await
            .unwrap();
        stop.set(true);
        (
            receipts,
            out.headers.len(),
            out.bodies.len(),
            peer.eth.version,
        )
    });
    assert_eq!(version, *eth_versions.iter().max().unwrap());
    assert_eq!(headers, 8192);
    assert_eq!(bodies, 8192);
    assert_eq!(
        receipts, 93,
        "every receipt of the 93 transactions, checked against receipts roots"
    );
}

#[test]
fn era1_headers_bodies_receipts_over_eth68() {
    download_receipts(&[66, 67, 68]);
}

#[test]
fn era1_headers_bodies_receipts_over_eth69() {
    download_receipts(&[69]);
}

#[test]
fn era1_receipts_over_eth70_cut_at_200_bytes_and_continued() {
    // Real receipts with logs, answered 200 bytes at a time: a block's list is continued
    // across answers (EIP-7975) and still matches its receipts root.
    download_receipts_with(&[70], Some(200));
}

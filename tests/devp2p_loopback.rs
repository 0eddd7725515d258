//! catchup ↔ catchup over loopback TCP on glommio: RLPx + eth handshakes, the devnet chain
//! downloaded and verified, fork id equal to the one a real client announces, peer limits,
//! lying peers caught, stalled handshakes and garbage frames dropped without harming the
//! listener.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use catchup::eth::net::chain::{ChainResponder, Profile, RawChain};
use catchup::eth::net::chainspec::{chain_status, genesis_status, ChainSpec};
use catchup::eth::net::download::{fetch_bodies, fetch_headers, DownloadError, Downloaded};
use catchup::eth::net::eth_peer::EmptyResponder;
use catchup::eth::net::server::{accept_loop, resolve_listen, ServeConfig, ServeStats};
use catchup::eth::net::{EthPeer, LocalNode, NetConfig, NetError, PeerConn, StatusInfo};
use catchup_devp2p::handshake::{Handshake, WireFormat};
use catchup_devp2p::p2p::DisconnectReason;
use catchup_devp2p::secp256k1::{PublicKey, SecretKey};
use catchup_eth::B256;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rand::{Rng, RngCore};

const DEVNET_HEAD: &str = "44e3809c";

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("CATCHUP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    let devnet = dir.join("ethereum/devnet");
    if devnet.join("chain.rlp").exists() {
        return Some(devnet);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("devnet fixture missing at {} (CI=true)", devnet.display());
    }
    skip_note!("skipping: devnet fixture missing at {}", devnet.display());
    None
}

use catchup_io::exec::run_unbound as run;

struct Devnet {
    chain: Arc<RawChain>,
    server_status: StatusInfo,
    client_status: StatusInfo,
}

fn devnet(dir: &std::path::Path) -> Devnet {
    let chain = Arc::new(RawChain::from_rlp_file(&dir.join("chain.rlp")).unwrap());
    let spec = ChainSpec::from_genesis_json(&dir.join("genesis.json")).unwrap();
    let genesis = chain.parent_of_first;
    Devnet {
        server_status: chain_status(&spec, genesis, &chain),
        client_status: genesis_status(&spec, genesis),
        chain,
    }
}

type Stop = Rc<std::cell::Cell<bool>>;

fn start_server(
    d: &Devnet,
    profile: Profile,
    max_peers: usize,
    handshake_timeout_ms: u64,
) -> (SocketAddr, [u8; 64], Stop) {
    let (addr, id, stop, _) = start_server_with(d, profile, max_peers, handshake_timeout_ms, 5_000);
    (addr, id, stop)
}

fn start_server_with(
    d: &Devnet,
    profile: Profile,
    max_peers: usize,
    handshake_timeout_ms: u64,
    idle_timeout_ms: u64,
) -> (
    SocketAddr,
    [u8; 64],
    Stop,
    glommio::task::JoinHandle<ServeStats>,
) {
    let listen = resolve_listen("127.0.0.1:0".parse().unwrap()).unwrap().addr;
    let local = Rc::new(LocalNode::new(SecretKey::new(&mut rand::thread_rng())));
    let id = local.id();
    let net = NetConfig {
        handshake_timeout_ms,
        idle_timeout_ms,
        ..NetConfig::default()
    };
    let cfg = Rc::new(ServeConfig {
        listen,
        shards: 1,
        max_peers_per_shard: max_peers,
        net,
        status: d.server_status.clone(),
        receipts_limit_bytes: None,
    });
    let mut responder = ChainResponder::new(d.chain.clone(), profile);
    responder.slow_delay_ms = 50;
    let stop = Rc::new(std::cell::Cell::new(false));
    let stop2 = stop.clone();
    let handle = glommio::spawn_local(async move {
        accept_loop(0, listen, local, cfg, Rc::new(responder), move || {
            stop2.get()
        })
        .await
        .unwrap()
    })
    .detach();
    (listen, id, stop, handle)
}

async fn connect(addr: SocketAddr, id: [u8; 64], status: &StatusInfo) -> Result<EthPeer, NetError> {
    let local = LocalNode::new(SecretKey::new(&mut rand::thread_rng()));
    let conn = PeerConn::dial(
        addr,
        id,
        &local,
        &NetConfig {
            handshake_timeout_ms: 5_000,
            ..NetConfig::default()
        },
    )
    .await?;
    EthPeer::handshake(conn, status).await
}

#[test]
fn fork_id_of_devnet_matches_real_client() {
    let Some(dir) = fixtures() else { return };
    let d = devnet(&dir);
    // @ethereumjs/client 0.10.5 announces fork id 0x377aaa78 (next 0) for this chain at its head.
    assert_eq!(hex::encode(d.server_status.fork_id.hash), "377aaa78");
    assert_eq!(d.server_status.fork_id.next, 0);
    assert_eq!(d.server_status.network_id, 3503995874084926);
    assert_eq!(d.server_status.head_number, 600);
}

#[test]
fn loopback_handshake_and_verified_chain_download() {
    let Some(dir) = fixtures() else { return };
    let d = devnet(&dir);
    run(async move {
        let (addr, id, stop) = start_server(&d, Profile::Honest, 4, 5_000);
        let mut peer = connect(addr, id, &d.client_status).await.unwrap();
        assert_eq!(
            peer.eth.version, 70,
            "highest shared eth version between two catchup nodes"
        );
        assert!(peer.snap.is_some());
        assert_eq!(peer.status.head_hash, d.chain.head_hash());
        peer.conn.ping().await.unwrap();
        let mut out = Downloaded::default();
        fetch_headers(
            &mut peer,
            B256::from(d.chain.parent_of_first),
            1,
            600,
            192,
            5_000,
            &EmptyResponder,
            &mut out,
        )
        .await
        .unwrap();
        fetch_bodies(&mut peer, 32, 5_000, &EmptyResponder, &mut out)
            .await
            .unwrap();
        assert_eq!(out.headers.len(), 600);
        assert_eq!(out.bodies.len(), 600);
        let head = out.headers.last().unwrap();
        assert_eq!(head.number(), 600);
        assert!(hex::encode(head.hash()).starts_with(DEVNET_HEAD));
        let txs: usize = out.bodies.iter().map(|b| b.transactions.len()).sum();
        assert!(txs > 0, "devnet blocks carry transactions");
        peer.conn
            .disconnect(DisconnectReason::Requested)
            .await
            .unwrap();
        stop.set(true);
    });
}

#[test]
fn lying_peer_is_caught_and_slow_peer_still_serves() {
    let Some(dir) = fixtures() else { return };
    let d = devnet(&dir);
    run(async move {
        let (addr, id, stop) = start_server(&d, Profile::Lying, 4, 5_000);
        let mut peer = connect(addr, id, &d.client_status).await.unwrap();
        let mut out = Downloaded::default();
        // The first answer is honest, the second corrupted.
        fetch_headers(
            &mut peer,
            B256::from(d.chain.parent_of_first),
            1,
            10,
            10,
            5_000,
            &EmptyResponder,
            &mut out,
        )
        .await
        .unwrap();
        let err = fetch_headers(
            &mut peer,
            B256::from(d.chain.parent_of_first),
            11,
            20,
            10,
            5_000,
            &EmptyResponder,
            &mut out,
        )
        .await
        .unwrap_err();
        // Block 11's own bytes changed, so block 12 no longer links to it.
        assert!(
            matches!(err, DownloadError::Invalid { number: 12, .. }),
            "{err}"
        );
        stop.set(true);

        let (addr, id, stop) = start_server(&d, Profile::Slow, 4, 5_000);
        let mut peer = connect(addr, id, &d.client_status).await.unwrap();
        let mut out = Downloaded::default();
        fetch_headers(
            &mut peer,
            B256::from(d.chain.parent_of_first),
            1,
            50,
            25,
            5_000,
            &EmptyResponder,
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(out.headers.len(), 50);
        // An answer slower than the request deadline times out without breaking the stream.
        let e = fetch_headers(
            &mut peer,
            B256::ZERO,
            51,
            51,
            1,
            10,
            &EmptyResponder,
            &mut out,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, DownloadError::Net(NetError::Timeout { .. })),
            "{e}"
        );
        stop.set(true);
    });
}

#[test]
fn peer_limit_and_wrong_chain_rejected() {
    let Some(dir) = fixtures() else { return };
    let d = devnet(&dir);
    run(async move {
        let (addr, id, stop) = start_server(&d, Profile::Honest, 1, 5_000);
        let _first = connect(addr, id, &d.client_status).await.unwrap();
        match connect(addr, id, &d.client_status).await {
            Err(NetError::Disconnected {
                reason: DisconnectReason::TooManyPeers,
                ..
            }) => {}
            other => panic!("expected TooManyPeers, got {other:?}"),
        }
        stop.set(true);
        let (addr, id, stop) = start_server(&d, Profile::Honest, 4, 5_000);
        let mut wrong = d.client_status.clone();
        wrong.genesis_hash = [9; 32];
        match connect(addr, id, &wrong).await {
            Err(NetError::Useless { .. }) | Err(NetError::Disconnected { .. }) => {}
            other => panic!("expected a rejection, got {other:?}"),
        }
        // Dialing with the wrong node id fails the handshake (the listener cannot decrypt).
        let bad = connect(addr, [7; 64], &d.client_status).await;
        assert!(bad.is_err());
        stop.set(true);
    });
}

/// Throws stalled handshakes, garbage handshakes and random or mutated frames after a valid
/// handshake at one listener; then a well-behaved peer must still sync from it.
#[test]
fn listener_survives_garbage_and_stalls() {
    let Some(dir) = fixtures() else { return };
    let d = devnet(&dir);
    run(async move {
        let (addr, id, stop, handle) = start_server_with(&d, Profile::Honest, 64, 300, 5_000);
        let server_pub = {
            let mut b = [4u8; 65];
            b[1..].copy_from_slice(&id);
            PublicKey::from_slice(&b).unwrap()
        };
        let mut rng = rand::thread_rng();
        // 1. A peer that connects and says nothing: dropped at the handshake deadline.
        let mut stalled = glommio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let n = glommio::timer::timeout(Duration::from_millis(3_000), async {
            Ok(stalled.read(&mut buf).await)
        })
        .await;
        assert!(
            matches!(n, Ok(Ok(0)) | Ok(Err(_))),
            "stalled peer must be closed by the listener: {n:?}"
        );
        // 1b. A peer that sends half of a valid auth message and stalls.
        {
            let mut half = glommio::net::TcpStream::connect(addr).await.unwrap();
            let stall_key = SecretKey::new(&mut rng);
            let mut hs = Handshake::initiator(&mut rng, stall_key, server_pub, WireFormat::Eip8);
            let auth = hs.take_output();
            half.write_all(&auth[..auth.len() / 2]).await.unwrap();
            let n = glommio::timer::timeout(Duration::from_millis(3_000), async {
                Ok(half.read(&mut buf).await)
            })
            .await;
            assert!(
                matches!(n, Ok(Ok(0)) | Ok(Err(_))),
                "half-handshake peer must be closed: {n:?}"
            );
        }
        // 2. Random garbage instead of an auth message.
        for _ in 0..20 {
            let mut s = glommio::net::TcpStream::connect(addr).await.unwrap();
            let len = rng.gen_range(1..1500);
            let mut junk = vec![0u8; len];
            rng.fill_bytes(&mut junk);
            let _ = s.write_all(&junk).await;
            let _ = glommio::timer::timeout(Duration::from_millis(2_000), async {
                Ok(s.read(&mut buf).await)
            })
            .await;
        }
        // 3. A valid RLPx handshake, then random or mutated frames.
        for round in 0..30 {
            let key = SecretKey::new(&mut rng);
            let mut s = glommio::net::TcpStream::connect(addr).await.unwrap();
            let mut hs = Handshake::initiator(&mut rng, key, server_pub, WireFormat::Eip8);
            s.write_all(&hs.take_output()).await.unwrap();
            let mut rb = vec![0u8; 4096];
            let est = loop {
                let n = s.read(&mut rb).await.unwrap();
                assert!(n > 0, "listener closed during a valid handshake");
                if let Some(e) = hs.feed(&mut rng, &rb[..n]).unwrap() {
                    break e;
                }
            };
            let mut sess = catchup_devp2p::frame::Session::new(est.secrets, 1 << 24);
            let mut frame = Vec::new();
            let payload_len = rng.gen_range(1..2000);
            let mut payload = vec![0u8; payload_len];
            rng.fill_bytes(&mut payload);
            sess.write_frame(&payload, &mut frame).unwrap();
            match round % 3 {
                0 => rng.fill_bytes(&mut frame),
                1 => {
                    let i = rng.gen_range(0..frame.len());
                    frame[i] ^= 0x5a;
                }
                _ => {} // a well-MACed frame with random content: not a Hello
            }
            let _ = s.write_all(&frame).await;
            let _ = glommio::timer::timeout(Duration::from_millis(2_000), async {
                loop {
                    match s.read(&mut rb).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                Ok(())
            })
            .await;
        }
        // The listener still serves a good peer.
        let mut peer = connect(addr, id, &d.client_status).await.unwrap();
        let mut out = Downloaded::default();
        fetch_headers(
            &mut peer,
            B256::from(d.chain.parent_of_first),
            1,
            100,
            100,
            5_000,
            &EmptyResponder,
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(out.headers.len(), 100);
        peer.conn
            .disconnect(DisconnectReason::Requested)
            .await
            .unwrap();
        glommio::timer::sleep(Duration::from_millis(300)).await;
        stop.set(true);
        // No connection task is left behind: every accepted peer ended one way or another.
        let stats = handle.await.expect("accept loop result");
        assert_eq!(stats.accepted, 1 + 1 + 20 + 30 + 1, "{stats:?}");
        assert_eq!(
            stats.accepted,
            stats.sessions_ended + stats.handshake_failures,
            "{stats:?}"
        );
        assert_eq!(
            stats.sessions_ended, 1,
            "only the well-behaved peer got to serve: {stats:?}"
        );
    });
}

/// A connected peer that goes silent is dropped at the idle deadline.
#[test]
fn idle_peer_is_dropped() {
    let Some(dir) = fixtures() else { return };
    let d = devnet(&dir);
    run(async move {
        let (addr, id, stop, _) = start_server_with(&d, Profile::Honest, 4, 2_000, 300);
        let mut peer = connect(addr, id, &d.client_status).await.unwrap();
        let started = std::time::Instant::now();
        // Our side only listens: the server must end the session at its idle deadline.
        let r = peer.conn.recv_until(started + Duration::from_secs(5)).await;
        assert!(
            matches!(
                r,
                Err(NetError::Disconnected {
                    reason: DisconnectReason::Timeout,
                    ..
                })
            ),
            "{r:?}"
        );
        stop.set(true);
    });
}

/// A client that completes the RLPx and Hello handshakes by hand, then sends `frame_data`
/// (message id RLP ‖ payload, not compressed) as one frame; returns what the listener did.
async fn send_after_hello(
    addr: SocketAddr,
    id: [u8; 64],
    frame_data: Vec<u8>,
) -> Result<DisconnectReason, String> {
    use catchup_devp2p::p2p::{Capability, Hello, MessageConn, ID_DISCONNECT, ID_HELLO};
    let mut rng = rand::thread_rng();
    let server_pub = {
        let mut b = [4u8; 65];
        b[1..].copy_from_slice(&id);
        PublicKey::from_slice(&b).unwrap()
    };
    let key = SecretKey::new(&mut rng);
    let mut s = glommio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut hs = Handshake::initiator(&mut rng, key, server_pub, WireFormat::Eip8);
    s.write_all(&hs.take_output())
        .await
        .map_err(|e| e.to_string())?;
    let mut rb = vec![0u8; 64 * 1024];
    let est = loop {
        let n = s.read(&mut rb).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during handshake".into());
        }
        if let Some(e) = hs.feed(&mut rng, &rb[..n]).map_err(|e| e.to_string())? {
            break e;
        }
    };
    let mut conn = MessageConn::new(
        catchup_devp2p::frame::Session::new(est.secrets, 1 << 24),
        16 << 20,
    );
    conn.feed(&est.leftover);
    let hello = Hello {
        protocol_version: 5,
        client_id: "bad-input-test".into(),
        capabilities: vec![Capability::new("eth", 68)],
        listen_port: 0,
        node_id: catchup_devp2p::handshake::pubkey_to_id(&PublicKey::from_secret_key_global(&key)),
    };
    let mut w = Vec::new();
    conn.write_message(ID_HELLO, &hello.encode(), &mut w)
        .unwrap();
    conn.session.write_frame(&frame_data, &mut w).unwrap();
    s.write_all(&w).await.map_err(|e| e.to_string())?;
    // Read the listener's Hello, then (with snappy on) its Disconnect.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        while let Some((mid, payload)) = conn.next_message().map_err(|e| e.to_string())? {
            if mid == ID_HELLO {
                conn.set_snappy(true);
            } else if mid == ID_DISCONNECT {
                return DisconnectReason::decode(&payload).map_err(|e| e.to_string());
            }
        }
        if std::time::Instant::now() > deadline {
            return Err("no disconnect within 5 s".into());
        }
        let n = s.read(&mut rb).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed without Disconnect".into());
        }
        conn.feed(&rb[..n]);
    }
}

/// Snappy bombs, unknown message ids and undecodable eth messages after a valid handshake
/// are answered with Disconnect(BreachOfProtocol); the listener keeps serving.
#[test]
fn listener_disconnects_bad_messages_with_a_reason() {
    let Some(dir) = fixtures() else { return };
    let d = devnet(&dir);
    run(async move {
        let (addr, id, stop) = start_server(&d, Profile::Honest, 16, 2_000);
        // 1. A snappy bomb: a length prefix claiming 4 GiB, as the eth Status payload.
        let mut bomb = vec![0x10u8];
        bomb.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        bomb.extend_from_slice(&[0u8; 32]);
        // 2. An unknown message id (0x7f: past every shared capability).
        let mut unknown = vec![0x7fu8];
        unknown.extend_from_slice(&catchup_devp2p::p2p::compress(&[0xc0]).unwrap());
        // 3. A well-compressed but undecodable Status.
        let mut garbage = vec![0x10u8];
        garbage
            .extend_from_slice(&catchup_devp2p::p2p::compress(&[0xc3, 0x01, 0x02, 0x03]).unwrap());
        for (what, frame) in [
            ("snappy bomb", bomb),
            ("unknown id", unknown),
            ("bad status", garbage),
        ] {
            let r = send_after_hello(addr, id, frame).await;
            assert!(
                matches!(
                    r,
                    Ok(DisconnectReason::BreachOfProtocol) | Ok(DisconnectReason::SubprotocolError)
                ),
                "{what}: {r:?}"
            );
        }
        let mut peer = connect(addr, id, &d.client_status).await.unwrap();
        let mut out = Downloaded::default();
        fetch_headers(
            &mut peer,
            B256::from(d.chain.parent_of_first),
            1,
            10,
            10,
            5_000,
            &EmptyResponder,
            &mut out,
        )
        .await
        .unwrap();
        stop.set(true);
    });
}

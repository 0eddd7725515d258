//! The serving node: every shard accepts on the same address (SO_REUSEPORT), runs the RLPx
//! and eth handshakes with deadlines, enforces a per-shard peer limit, and answers requests
//! from a [`Responder`] until the peer leaves or goes idle.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use catchup_devp2p::p2p::DisconnectReason;
use catchup_shards::runtime::{run_with_flag, RuntimeConfig, Shard};
use glommio::net::TcpListener;

use super::conn::{LocalNode, NetConfig, NetError, PeerConn};
use super::eth_peer::{EthPeer, Responder, StatusInfo};

/// How a serving node runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub shards: usize,
    pub max_peers_per_shard: usize,
    pub net: NetConfig,
    pub status: StatusInfo,
    /// Receipts bytes per eth/70 Receipts answer (default
    /// [`super::eth_peer::RECEIPTS_RESPONSE_BYTES`]).
    pub receipts_limit_bytes: Option<usize>,
}

/// Per-shard counters of a serving node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ServeStats {
    pub accepted: u64,
    pub rejected_full: u64,
    pub handshake_failures: u64,
    pub sessions_ended: u64,
    pub requests_served: u64,
}

/// Choose the concrete listen address (port 0 picks one free port for all shards), after
/// checking that no other process holds it: the shards bind with SO_REUSEPORT, which would
/// otherwise let a second server share the port silently.
/// Keep the returned claim alive while serving.
pub fn resolve_listen(addr: SocketAddr) -> anyhow::Result<crate::node::listen::PortClaim> {
    Ok(crate::node::listen::claim_tcp(addr, "--listen")?)
}

/// Accept peers on one shard until shutdown. `make_responder` builds this shard's responder.
pub async fn accept_loop<R: Responder + 'static>(
    shard_label: usize,
    listen: SocketAddr,
    local: Rc<LocalNode>,
    cfg: Rc<ServeConfig>,
    responder: Rc<R>,
    shutting_down: impl Fn() -> bool,
) -> anyhow::Result<ServeStats> {
    accept_loop_notify(
        shard_label,
        listen,
        local,
        cfg,
        responder,
        shutting_down,
        || {},
    )
    .await
}

/// [`accept_loop`], calling `listening` once the shard listens.
pub async fn accept_loop_notify<R: Responder + 'static>(
    shard_label: usize,
    listen: SocketAddr,
    local: Rc<LocalNode>,
    cfg: Rc<ServeConfig>,
    responder: Rc<R>,
    shutting_down: impl Fn() -> bool,
    listening: impl FnOnce(),
) -> anyhow::Result<ServeStats> {
    let sid = catchup_shards::ShardId(shard_label);
    let m_accepted = catchup_shards::metrics::counter(
        "p2p_peers_accepted_total",
        "RLPx peers accepted by this serving shard",
    );
    let m_dropped = catchup_shards::metrics::counter(
        "p2p_peers_dropped_total",
        "RLPx peers dropped at the handshake or for bad messages",
    );
    let m_served =
        catchup_shards::metrics::counter("p2p_requests_served_total", "eth/snap requests answered");
    let m_active = catchup_shards::metrics::gauge(
        "p2p_peers_active",
        "RLPx peers connected to this serving shard",
    );
    let listener = TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("shard {shard_label}: binding {listen}: {e}"))?;
    listening();
    let active = Rc::new(Cell::new(0usize));
    let stats = Rc::new(Cell::new(ServeStats::default()));
    let bump = |stats: &Rc<Cell<ServeStats>>, f: &dyn Fn(&mut ServeStats)| {
        let mut s = stats.get();
        f(&mut s);
        stats.set(s);
    };
    // A progress line at most every 10 s, and only when something changed: an idle server
    // stays quiet.
    let mut next_report = std::time::Instant::now() + Duration::from_secs(10);
    let mut last_reported = (0usize, ServeStats::default());
    while !shutting_down() {
        let now_stats = (active.get(), stats.get());
        if std::time::Instant::now() >= next_report && now_stats != last_reported {
            next_report = std::time::Instant::now() + Duration::from_secs(10);
            last_reported = now_stats;
            let s = now_stats.1;
            tracing::info!(
                shard = shard_label,
                active = active.get(),
                accepted = s.accepted,
                refused_full = s.rejected_full,
                dropped_at_handshake = s.handshake_failures,
                sessions_ended = s.sessions_ended,
                requests_served = s.requests_served,
                "serve progress"
            );
        }
        let accepted = glommio::timer::timeout(Duration::from_millis(250), async {
            Ok(listener.accept().await)
        })
        .await;
        let stream = match accepted {
            Err(_) => continue,
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(shard = shard_label, error = %e, "accept failed");
                continue;
            }
        };
        if active.get() >= cfg.max_peers_per_shard {
            bump(&stats, &|s| s.rejected_full += 1);
            let (local, cfg, stats) = (local.clone(), cfg.clone(), stats.clone());
            glommio::spawn_local(async move {
                // Finish the RLPx handshake so the peer learns why, then say TooManyPeers.
                if let Ok(mut c) = PeerConn::accept(stream, &local, &cfg.net).await {
                    let _ = c.disconnect(DisconnectReason::TooManyPeers).await;
                }
                let _ = stats;
            })
            .detach();
            continue;
        }
        active.set(active.get() + 1);
        bump(&stats, &|s| s.accepted += 1);
        m_accepted.inc(sid);
        m_active.add(sid, 1);
        let (m_dropped, m_served, m_active) =
            (m_dropped.clone(), m_served.clone(), m_active.clone());
        let (local, cfg, responder, active, stats) = (
            local.clone(),
            cfg.clone(),
            responder.clone(),
            active.clone(),
            stats.clone(),
        );
        glommio::spawn_local(async move {
            let r: Result<u64, NetError> = async {
                let conn = PeerConn::accept(stream, &local, &cfg.net).await?;
                let client = conn.remote_hello.client_id.clone();
                // A live chain's Status names its head of now.
                let mut status = cfg.status.clone();
                if let Some((_, latest, hash)) = responder.block_range() {
                    status.head_number = latest;
                    status.head_hash = hash;
                }
                let mut peer = EthPeer::handshake(conn, &status).await?;
                if let Some(limit) = cfg.receipts_limit_bytes {
                    peer.receipts_limit_bytes = limit;
                }
                tracing::info!(shard = shard_label, peer = %peer.conn.peer, %client, eth = peer.eth.version, "peer connected");
                let end = peer.serve(responder.as_ref()).await;
                let served = peer.stats.requests_served;
                tracing::info!(shard = shard_label, peer = %peer.conn.peer, served, reason = %end.as_ref().err().map(|e| e.to_string()).unwrap_or_default(), "peer session ended");
                Ok(served)
            }
            .await;
            m_active.add(sid, -1);
            match r {
                Ok(served) => {
                    m_served.add(sid, served);
                    let mut s = stats.get();
                    s.sessions_ended += 1;
                    s.requests_served += served;
                    stats.set(s);
                }
                Err(e) => {
                    m_dropped.inc(sid);
                    tracing::info!(shard = shard_label, error = %e, "peer dropped");
                    let mut s = stats.get();
                    s.handshake_failures += 1;
                    stats.set(s);
                }
            }
            active.set(active.get() - 1);
        })
        .detach();
    }
    Ok(stats.get())
}

/// Run a serving node on the shards of `rc` (its shard count wins over `cfg.shards`; pass
/// `RuntimeConfig::new(cfg.shards)` for unpinned defaults) until SIGINT/SIGTERM or `shutdown`.
pub fn serve<R, F>(
    cfg: ServeConfig,
    local: LocalNode,
    make_responder: F,
    rc: RuntimeConfig,
    shutdown: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Vec<ServeStats>>
where
    R: Responder + 'static,
    F: Fn(usize) -> R + Send + Sync + Clone + 'static,
{
    serve_notify(cfg, local, make_responder, rc, shutdown, |_| {})
}

/// [`serve`], calling `listening(shard)` as each shard starts listening.
pub fn serve_notify<R, F, L>(
    cfg: ServeConfig,
    local: LocalNode,
    make_responder: F,
    rc: RuntimeConfig,
    shutdown: Arc<std::sync::atomic::AtomicBool>,
    listening: L,
) -> anyhow::Result<Vec<ServeStats>>
where
    R: Responder + 'static,
    F: Fn(usize) -> R + Send + Sync + Clone + 'static,
    L: Fn(usize) + Send + Sync + Clone + 'static,
{
    let mut rc = rc;
    rc.name = "serve".into();
    let cfg = Arc::new(cfg);
    let local = Arc::new(local);
    let results = run_with_flag::<(), _, _, _>(&rc, shutdown, move |shard: Shard<()>| {
        let (cfg, local, make_responder, listening) = (
            cfg.clone(),
            local.clone(),
            make_responder.clone(),
            listening.clone(),
        );
        async move {
            let id = shard.id().0;
            let responder = Rc::new(make_responder(id));
            let sh = shard.clone();
            accept_loop_notify(
                id,
                cfg.listen,
                Rc::new((*local).clone()),
                Rc::new((*cfg).clone()),
                responder,
                move || sh.shutting_down(),
                move || listening(id),
            )
            .await
            .map_err(|e| e.to_string())
        }
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    results
        .into_iter()
        .map(|r| r.map_err(|e| anyhow::anyhow!(e)))
        .collect()
}

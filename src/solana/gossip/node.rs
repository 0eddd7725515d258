//! The gossip driver: one UDP socket and the sans-IO [`GossipClient`] on a thread of its
//! own. It waits for whichever comes first, a packet or the next tick, feeds the client and
//! sends what the client answers. What it learned is copied into a [`GossipView`] (for the
//! sync's choice of snapshot and sources, and for `/status`) a few times a second.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use catchup_gossip::client::{ClientConfig, ClientStats, GossipClient};
use catchup_gossip::crds::{CrdsData, CrdsValue, SnapshotHashes};
use catchup_gossip::ed25519_dalek::SigningKey;
use catchup_gossip::protocol::Protocol;
use catchup_gossip::{Hash, Pubkey, PACKET_DATA_SIZE};
use serde::Serialize;

/// How a node behaves (test and demo clusters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Advertises the newest full snapshot in its directory and the incrementals on it.
    Honest,
    /// Honest about itself, and also pushes snapshot hashes in other nodes' names (signed
    /// with its own key) pointing at its own archive: receivers must drop them.
    Forging,
    /// Advertises the oldest full snapshot in its directory, without incrementals.
    Stale,
}

/// Settings of one gossip node.
pub struct NodeConfig {
    pub key: SigningKey,
    /// The bound socket (see [`bind`]).
    pub socket: UdpSocket,
    /// The gossip address advertised in our contact info.
    pub advertise: SocketAddr,
    pub entrypoints: Vec<SocketAddr>,
    pub rpc: Option<SocketAddr>,
    pub serve_repair: Option<SocketAddr>,
    pub shred_version: u16,
    /// (full, incrementals) to advertise.
    pub snapshots: Option<AdvertisedSnapshots>,
    /// Looked at again every few seconds: new archives there are advertised.
    pub snapshots_dir: Option<std::path::PathBuf>,
    pub profile: Profile,
    /// CRDS table bound (values).
    pub max_entries: usize,
    /// Publish the view under this `/status` section, if any.
    pub status_section: Option<String>,
    /// Pull rounds this far apart. Each round's filters cover a random part of the value
    /// hashes (as the cluster samples them), so a node that must learn the whole table
    /// quickly pulls more often.
    pub pull_interval_ms: u64,
}

/// The snapshot hashes a node advertises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertisedSnapshots {
    pub full: (u64, Hash),
    pub incremental: Vec<(u64, Hash)>,
}

/// A node known through its contact info.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PeerInfo {
    pub pubkey: String,
    pub gossip: Option<SocketAddr>,
    pub rpc: Option<SocketAddr>,
    pub serve_repair: Option<SocketAddr>,
    pub shred_version: u16,
    pub wallclock_ms: u64,
}

/// What a node advertises about its snapshots, as received.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SnapshotAdvert {
    pub full_slot: u64,
    pub full_hash: String,
    /// (slot, hash) of incrementals on the full snapshot.
    pub incremental: Vec<(u64, String)>,
    pub wallclock_ms: u64,
}

/// What the node knows, copied out of the client.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GossipView {
    pub pubkey: String,
    pub gossip_addr: Option<SocketAddr>,
    pub entrypoints: Vec<SocketAddr>,
    pub peers: Vec<PeerInfo>,
    /// Snapshot hashes by origin (base58 pubkey).
    pub snapshot_hashes: BTreeMap<String, SnapshotAdvert>,
    pub table_values: usize,
    pub packets_received: u64,
    pub packets_sent: u64,
    /// Packets the client rejected (undecodable, oversize, bad signatures, ...).
    pub packets_rejected: u64,
    pub values_inserted: u64,
    pub values_rejected: u64,
    pub pings_answered: u64,
    pub pongs_verified: u64,
    pub pull_requests_answered: u64,
    pub uptime_ms: u64,
}

impl GossipView {
    pub fn peer(&self, pubkey: &str) -> Option<&PeerInfo> {
        self.peers.iter().find(|p| p.pubkey == pubkey)
    }
}

/// A running gossip node; dropping it stops the thread.
pub struct GossipHandle {
    view: Arc<Mutex<GossipView>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub pubkey: Pubkey,
    pub local_addr: SocketAddr,
    pub advertise: SocketAddr,
}

impl GossipHandle {
    pub fn view(&self) -> GossipView {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Whether the thread still runs.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for GossipHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Unix time in ms: gossip wallclocks are.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Bind the gossip socket on `listen` (no address sharing); `flag` names the option for
/// the error line. Returns the socket and the address to advertise: `listen`'s, or for an
/// unspecified IP the local address that routes to the first entrypoint (loopback
/// without one).
pub fn bind(
    listen: SocketAddr,
    entrypoints: &[SocketAddr],
    flag: &'static str,
) -> anyhow::Result<(UdpSocket, SocketAddr)> {
    let socket = crate::node::listen::claim_udp(listen, flag)?;
    let local = socket.local_addr()?;
    let ip = if local.ip().is_unspecified() {
        let probe = UdpSocket::bind("0.0.0.0:0")?;
        match entrypoints.first() {
            Some(e) if probe.connect(e).is_ok() => probe.local_addr()?.ip(),
            _ => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        }
    } else {
        local.ip()
    };
    Ok((socket, SocketAddr::new(ip, local.port())))
}

/// Snapshot archives in `dir` by name: the newest full (`stale`: the oldest) and the
/// incrementals on it, oldest first. `None` when the directory holds no full archive.
pub fn snapshots_in_dir(
    dir: &std::path::Path,
    profile: Profile,
) -> anyhow::Result<Option<AdvertisedSnapshots>> {
    let mut fulls: Vec<(u64, Hash)> = Vec::new();
    let mut incs: Vec<(u64, u64, Hash)> = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("--advertise-snapshots {}: {e}", dir.display()))?;
    for entry in entries.take(100_000) {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(n) = crate::solana::download::source::parse_archive_name(name) else {
            continue;
        };
        let Some(hash) = catchup_solana::base58_32(&n.hash) else {
            continue;
        };
        match n.base_slot {
            None => fulls.push((n.slot, Hash(hash))),
            Some(base) => incs.push((base, n.slot, Hash(hash))),
        }
    }
    fulls.sort();
    let full = match profile {
        Profile::Stale => fulls.first().copied(),
        _ => fulls.last().copied(),
    };
    let Some(full) = full else { return Ok(None) };
    let mut incremental: Vec<(u64, Hash)> = if profile == Profile::Stale {
        Vec::new()
    } else {
        incs.iter()
            .filter(|(base, _, _)| *base == full.0)
            .map(|(_, slot, hash)| (*slot, *hash))
            .collect()
    };
    incremental.sort();
    Ok(Some(AdvertisedSnapshots { full, incremental }))
}

fn copy_view(
    client: &GossipClient,
    view: &mut GossipView,
    received: u64,
    sent: u64,
    started: Instant,
) {
    let stats: ClientStats = client.stats();
    let mut peers: Vec<PeerInfo> = client
        .contact_infos()
        .map(|c| PeerInfo {
            pubkey: c.pubkey.to_string(),
            gossip: c.gossip(),
            rpc: c.rpc(),
            serve_repair: c.serve_repair(),
            shred_version: c.shred_version,
            wallclock_ms: c.wallclock,
        })
        .collect();
    peers.sort_by(|a, b| a.pubkey.cmp(&b.pubkey));
    let mut hashes = BTreeMap::new();
    for value in client.table().values() {
        if let CrdsData::SnapshotHashes(h) = value.data() {
            hashes.insert(
                h.from.to_string(),
                SnapshotAdvert {
                    full_slot: h.full.0,
                    full_hash: h.full.1.to_string(),
                    incremental: h
                        .incremental
                        .iter()
                        .map(|(s, x)| (*s, x.to_string()))
                        .collect(),
                    wallclock_ms: h.wallclock,
                },
            );
        }
    }
    view.peers = peers;
    view.snapshot_hashes = hashes;
    view.table_values = client.table().len();
    view.packets_received = received;
    view.packets_sent = sent;
    view.packets_rejected = stats.packets_rejected;
    view.values_inserted = stats.values_inserted;
    view.values_rejected = stats.values_rejected;
    view.pings_answered = stats.pings_answered;
    view.pongs_verified = stats.pongs_verified;
    view.pull_requests_answered = stats.pull_requests_answered;
    view.uptime_ms = started.elapsed().as_millis() as u64;
}

/// Forged values of the `forging` profile: our snapshot hashes in other nodes' names,
/// signed with our key.
fn forgeries(
    client: &GossipClient,
    key: &SigningKey,
    ours: &AdvertisedSnapshots,
    now_ms: u64,
) -> Vec<(SocketAddr, Vec<u8>)> {
    let me = client.pubkey();
    let victims: Vec<(Pubkey, Option<SocketAddr>)> = client
        .contact_infos()
        .filter(|c| c.pubkey != me)
        .map(|c| (c.pubkey, c.gossip()))
        .collect();
    let mut out = Vec::new();
    for (victim, _) in &victims {
        let forged = CrdsValue::new_signed(
            CrdsData::SnapshotHashes(SnapshotHashes {
                from: *victim,
                full: ours.full,
                incremental: ours.incremental.clone(),
                wallclock: now_ms,
            }),
            key,
        );
        let bytes = Protocol::PushMessage(me, vec![forged]).encode();
        if bytes.len() > PACKET_DATA_SIZE {
            continue;
        }
        for (_, addr) in &victims {
            if let Some(addr) = addr {
                out.push((*addr, bytes.clone()));
            }
        }
    }
    out
}

/// Start the node on a thread of its own.
pub fn start(cfg: NodeConfig) -> anyhow::Result<GossipHandle> {
    let now = now_ms();
    let mut client_cfg =
        ClientConfig::new(cfg.advertise, cfg.entrypoints.clone(), cfg.shred_version);
    client_cfg.rpc_addr = cfg.rpc;
    client_cfg.serve_repair_addr = cfg.serve_repair;
    client_cfg.max_entries = cfg.max_entries.max(16);
    // A small cluster converges in seconds with these; the cluster's own intervals are
    // slower but the rules (ping before pull answers, newest value wins) are the same.
    client_cfg.pull_interval_ms = cfg.pull_interval_ms.max(50);
    client_cfg.push_interval_ms = 1_000;
    let pubkey = Pubkey::of(&cfg.key);
    let seed = u64::from_le_bytes(pubkey.0[..8].try_into().expect("8 bytes")) ^ now;
    let mut client = GossipClient::new(cfg.key.clone(), client_cfg, seed, now)
        .map_err(|e| anyhow::anyhow!("the advertised addresses cannot be gossiped: {e}"))?;
    if let Some(s) = &cfg.snapshots {
        client.publish_snapshot_hashes(s.full, s.incremental.clone(), now);
    }
    let local_addr = cfg.socket.local_addr()?;
    cfg.socket
        .set_read_timeout(Some(Duration::from_millis(50)))?;
    let view = Arc::new(Mutex::new(GossipView {
        pubkey: pubkey.to_string(),
        gossip_addr: Some(cfg.advertise),
        entrypoints: cfg.entrypoints.clone(),
        ..GossipView::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let (view2, stop2) = (view.clone(), stop.clone());
    let advertise = cfg.advertise;
    let thread = std::thread::Builder::new()
        .name("gossip".into())
        .spawn(move || run(cfg, client, view2, stop2))?;
    Ok(GossipHandle {
        view,
        stop,
        thread: Some(thread),
        pubkey,
        local_addr,
        advertise,
    })
}

/// Ticks of the client at most this far apart.
const TICK_MS: u64 = 100;
/// The view is copied out this often.
const VIEW_EVERY_MS: u64 = 250;
/// The snapshot directory is listed again this often.
const SCAN_EVERY_MS: u64 = 2_000;
/// Packets handled between two ticks at most (a flood cannot starve the ticks).
const MAX_PACKETS_PER_TICK: usize = 4096;

fn run(
    cfg: NodeConfig,
    mut client: GossipClient,
    view: Arc<Mutex<GossipView>>,
    stop: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let sock = cfg.socket;
    let mut buf = vec![0u8; PACKET_DATA_SIZE + 1];
    let (mut received, mut sent) = (0u64, 0u64);
    let mut next_view = Instant::now();
    let mut next_forgery_ms = 0u64;
    let mut advertised = cfg.snapshots.clone();
    let mut next_scan = Instant::now() + Duration::from_millis(SCAN_EVERY_MS);
    let send = |to: SocketAddr, bytes: &[u8], sent: &mut u64| {
        if sock.send_to(bytes, to).is_ok() {
            *sent += 1;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let now = now_ms();
        for out in client.tick(now) {
            send(out.to, &out.bytes, &mut sent);
        }
        if let (Some(dir), true) = (&cfg.snapshots_dir, Instant::now() >= next_scan) {
            next_scan = Instant::now() + Duration::from_millis(SCAN_EVERY_MS);
            if let Ok(Some(found)) = snapshots_in_dir(dir, cfg.profile) {
                if advertised.as_ref() != Some(&found) {
                    client.publish_snapshot_hashes(found.full, found.incremental.clone(), now);
                    advertised = Some(found);
                }
            }
        }
        if cfg.profile == Profile::Forging && now >= next_forgery_ms {
            next_forgery_ms = now + 1_000;
            if let Some(ours) = &advertised {
                for (to, bytes) in forgeries(&client, &cfg.key, ours, now) {
                    send(to, &bytes, &mut sent);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_millis(TICK_MS);
        for _ in 0..MAX_PACKETS_PER_TICK {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stop.load(Ordering::Relaxed) {
                break;
            }
            let _ = sock.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    received += 1;
                    // Rejected packets change nothing but the client's counters.
                    if let Ok(out) = client.handle_packet(from, &buf[..n], now_ms()) {
                        for o in out {
                            send(o.to, &o.bytes, &mut sent);
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(_) => {}
            }
        }
        if Instant::now() >= next_view {
            next_view = Instant::now() + Duration::from_millis(VIEW_EVERY_MS);
            let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
            copy_view(&client, &mut v, received, sent, started);
            if let Some(section) = &cfg.status_section {
                crate::node::admin::set_status(
                    section,
                    serde_json::to_value(&*v).unwrap_or_default(),
                );
            }
        }
    }
    let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
    copy_view(&client, &mut v, received, sent, started);
}

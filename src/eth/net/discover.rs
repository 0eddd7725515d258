//! Ethereum node discovery on one shard: a glommio UDP socket driving the sans-IO discv4
//! and discv5.1 services of `catchup-discovery` (both on the same port: a datagram whose
//! leading keccak matches the rest is discv4, anything else goes to discv5), with their
//! timers. Nodes that proved their endpoint and whose record's `eth` fork id passes our
//! fork filter become dial candidates (node id + RLPx endpoint).
//!
//! The task runs until `stop()` says so; it never blocks the shard: it awaits whichever
//! comes first of a datagram, the services' next deadline and a 250 ms check of `stop`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use catchup_devp2p::enode::Enode;
use catchup_devp2p::forkid::ForkId;
use catchup_discovery::v4::service::Bootnode;
use catchup_discovery::{v4, v5, Enr, EnrBuilder, NodeId};
use serde::Serialize;

use super::eth_peer::{check_fork_id, StatusInfo};

/// A bootnode as given on the command line: an enode URL (discv4 only) or a node record
/// (discv5, and discv4 at the record's UDP endpoint).
#[derive(Debug, Clone)]
pub enum BootnodeSpec {
    Enode(Enode),
    Enr(Box<Enr>),
}

/// Parse one `--bootnodes` entry.
pub fn parse_bootnode(s: &str) -> anyhow::Result<BootnodeSpec> {
    let s = s.trim();
    if s.starts_with("enr:") {
        let enr = Enr::from_text(s).map_err(|e| anyhow::anyhow!("--bootnodes {s}: {e}"))?;
        if enr.udp_socket().is_none() {
            bail!("--bootnodes {s}: the record has no IP and UDP port");
        }
        Ok(BootnodeSpec::Enr(Box::new(enr)))
    } else if s.starts_with("enode://") {
        let e = Enode::parse(s).map_err(|e| anyhow::anyhow!("--bootnodes: {e}"))?;
        Ok(BootnodeSpec::Enode(e))
    } else {
        bail!("--bootnodes {s}: expected enode://ID@IP:PORT or enr:-…")
    }
}

/// Parse a comma-separated `--bootnodes` value.
pub fn parse_bootnodes(list: &[String]) -> anyhow::Result<Vec<BootnodeSpec>> {
    list.iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
        .map(parse_bootnode)
        .collect()
}

/// Which discovery mechanisms run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Protocols {
    pub v4: bool,
    pub v5: bool,
    pub dns: bool,
}

impl Protocols {
    pub fn any(&self) -> bool {
        self.v4 || self.v5 || self.dns
    }
    pub fn udp(&self) -> bool {
        self.v4 || self.v5
    }
}

/// Parse `--discovery v4,v5,dns` (or `none`).
pub fn parse_protocols(s: &str) -> anyhow::Result<Protocols> {
    let mut p = Protocols::default();
    for part in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        match part {
            "v4" => p.v4 = true,
            "v5" => p.v5 = true,
            "dns" => p.dns = true,
            "none" => {}
            other => {
                bail!("--discovery {s}: unknown mechanism {other:?} (expected v4, v5, dns or none)")
            }
        }
    }
    Ok(p)
}

/// The advertised IP from `--nat none|extip:IP` and `--ext-ip IP` (the latter wins).
pub fn advertised_ip(nat: Option<&str>, ext_ip: Option<IpAddr>) -> anyhow::Result<Option<IpAddr>> {
    if let Some(ip) = ext_ip {
        return Ok(Some(ip));
    }
    match nat.map(str::trim) {
        None | Some("none") | Some("") => Ok(None),
        Some(v) => match v.strip_prefix("extip:") {
            Some(ip) => {
                Ok(Some(ip.parse().with_context(|| {
                    format!("--nat {v}: {ip:?} is not an IP address")
                })?))
            }
            None => bail!("--nat {v}: expected none or extip:IP (or give --ext-ip IP)"),
        },
    }
}

/// The IP to advertise for a socket bound to `bound`: `--nat`/`--ext-ip` when given, the
/// bound IP when it is specific, else the local address of the default route (found by
/// connecting a UDP socket, which sends nothing), else the unspecified address.
pub fn advertise_ip(
    nat: Option<&str>,
    ext_ip: Option<IpAddr>,
    bound: IpAddr,
) -> anyhow::Result<IpAddr> {
    if let Some(ip) = advertised_ip(nat, ext_ip)? {
        return Ok(ip);
    }
    if !bound.is_unspecified() {
        return Ok(bound);
    }
    let probe = |bind: &str, to: &str| -> Option<IpAddr> {
        let s = std::net::UdpSocket::bind(bind).ok()?;
        s.connect(to).ok()?;
        Some(s.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
    };
    let found = if bound.is_ipv4() {
        probe("0.0.0.0:0", "192.0.2.1:30303")
    } else {
        probe("[::]:0", "[2001:db8::1]:30303")
    };
    Ok(found.unwrap_or(bound))
}

/// Bootnodes geth ships for the public networks (go-ethereum `params/bootnodes.go`), by
/// the network name of the genesis hash.
pub fn builtin_bootnodes(network: &str) -> &'static [&'static str] {
    match network {
        "mainnet" => &[
            "enode://d860a01f9722d78051619d1e2351aba3f43f943f6f00718d1b9baa4101932a1f5011f16bb2b1bb35db20d6fe28fa0bf09636d26a87d31de9ec6203eeedb1f666@18.138.108.67:30303",
            "enode://22a8232c3abc76a16ae9d6c3b164f98775fe226f0917b0ca871128a74a8e9630b458460865bab457221f1d448dd9791d24c4e5d88786180ac185df813a68d4de@3.209.45.79:30303",
            "enode://2b252ab6a1d0f971d9722cb839a42cb81db019ba44c08754628ab4a823487071b5695317c8ccd085219c3a03af063495b2f1da8d18218da2d6a82981b45e6ffc@65.108.70.101:30303",
            "enode://4aeb4ab6c14b23e2c4cfdce879c04b0748a20d8e9b59e25ded2a08143e265c6c25936e74cbc8e641e3312ca288673d91f2f93f8e277de3cfa444ecdaaf982052@157.90.35.166:30303",
        ],
        "sepolia" => &[
            "enode://4e5e92199ee224a01932a377160aa432f31d0b351f84ab413a8e0a42f4f36476f8fb1cbe914af0d9aef0d51665c214cf653c651c4bbd9d5550a934f241f1682b@138.197.51.181:30303",
            "enode://143e11fb766781d22d92a2e33f8f104cddae4411a122295ed1fdb6638de96a6ce65f5b7c964ba3763bba27961738fef7d3ecc739268f3e5e771fb4c87b6234ba@146.190.1.103:30303",
            "enode://8b61dc2d06c3f96fddcbebb0efb29d60d3598650275dc469c22229d3e5620369b0d3dedafd929835fe7f489618f19f456fe7c0df572bf2d914a9f4e006f783a9@170.64.250.88:30303",
            "enode://10d62eff032205fcef19497f35ca8477bea0eadfff6d769a147e895d8b2b8f8ae6341630c645c30f5df6e67547c03494ced3d9c5764e8622a26587b083b028e8@139.59.49.206:30303",
            "enode://9e9492e2e8836114cc75f5b929784f4f46c324ad01daf87d956f98b3b6c5fcba95524d6e5cf9861dc96a2c8a171ea7105bb554a197455058de185fa870970c7c@138.68.123.152:30303",
        ],
        "holesky" => &[
            "enode://ac906289e4b7f12df423d654c5a962b6ebe5b3a74cc9e06292a85221f9a64a6f1cfdd6b714ed6dacef51578f92b34c60ee91e9ede9c7f8fadc4d347326d95e2b@146.190.13.128:30303",
            "enode://a3435a0155a3e837c02f5e7f5662a2f1fbc25b48e4dc232016e1c51b544cb5b4510ef633ea3278c0e970fa8ad8141e2d4d0f9f95456c537ff05fdf9b31c15072@178.128.136.233:30303",
        ],
        _ => &[],
    }
}

/// How the discovery task runs.
#[derive(Debug, Clone)]
pub struct DiscConfig {
    pub key: catchup_devp2p::secp256k1::SecretKey,
    /// Our discovery endpoint as others reach it (IP and UDP port).
    pub advertise: SocketAddr,
    /// Our RLPx port (0: we do not accept connections).
    pub tcp_port: u16,
    pub protocols: Protocols,
    pub bootnodes: Vec<BootnodeSpec>,
    /// Our fork id, announced in our record's `eth` entry, and what found nodes' fork ids
    /// are checked against.
    pub status: StatusInfo,
    /// Look up random targets this often (at most two discv4 lookups at once) while fewer
    /// than `want_candidates` compatible nodes were found.
    pub lookup_every_ms: u64,
    pub want_candidates: usize,
    /// EIP-1459 trees to walk (with `protocols.dns`), and the DNS server to ask.
    pub dns_lists: Vec<String>,
    pub dns_server: Option<SocketAddr>,
}

/// Our node record as the services build it: `seq` 1, our endpoint and the `eth` entry.
pub fn local_enr(cfg: &DiscConfig) -> anyhow::Result<Enr> {
    EnrBuilder::new(1)
        .endpoint(cfg.advertise, cfg.tcp_port)
        .eth(cfg.status.fork_id)
        .build(&cfg.key)
        .map_err(|e| anyhow::anyhow!("building the node record: {e}"))
}

/// What discovery found so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiscStats {
    /// Distinct nodes that proved their endpoint (either protocol).
    pub nodes_found: u64,
    /// Of those, with an `eth` entry our fork filter accepts, and an RLPx endpoint.
    pub eth_compatible: u64,
    /// With an `eth` entry our fork filter refuses.
    pub eth_incompatible: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    /// Incoming packets dropped by the services (malformed, unsolicited, unverified, …).
    pub packets_dropped: u64,
    /// Entries of the discv4 / discv5 Kademlia tables.
    pub v4_table: u64,
    pub v5_table: u64,
    /// Distinct node records read from DNS trees (signature and hashes checked) that no
    /// other mechanism had found first.
    pub dns_records: u64,
    /// DNS queries sent, and those that failed (timeout, no such name, bad entry).
    pub dns_queries: u64,
    pub dns_failures: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether `data` is a discv4 packet: its first 32 bytes are the keccak of the rest.
pub fn is_v4_packet(data: &[u8]) -> bool {
    data.len() >= v4::packet::HEADER_BYTES
        && alloy_primitives::keccak256(&data[32..]).0 == data[..32]
}

struct Services {
    v4: Option<v4::service::Service>,
    v5: Option<v5::service::Service>,
}

impl Services {
    fn new(cfg: &DiscConfig) -> anyhow::Result<Services> {
        let status = cfg.status.clone();
        let filter = move || -> catchup_discovery::ForkFilter {
            let status = status.clone();
            Box::new(move |fid: &ForkId| check_fork_id(&status, status.forks.as_ref(), fid).is_ok())
        };
        let v4 = if cfg.protocols.v4 {
            let bootnodes = cfg
                .bootnodes
                .iter()
                .filter_map(|b| match b {
                    BootnodeSpec::Enode(e) => Some(Bootnode::from(*e)),
                    BootnodeSpec::Enr(r) => Some(Bootnode {
                        pubkey: catchup_discovery::crypto::pub64(r.public_key()),
                        udp: r.udp_socket()?,
                    }),
                })
                .collect();
            Some(
                v4::service::Service::new(v4::service::Config {
                    key: cfg.key,
                    endpoint: cfg.advertise,
                    tcp_port: cfg.tcp_port,
                    bootnodes,
                    fork_id: Some(cfg.status.fork_id),
                    fork_filter: Some(filter()),
                    rng_seed: rand::random(),
                })
                .map_err(|e| anyhow::anyhow!("discv4: {e}"))?,
            )
        } else {
            None
        };
        let v5 = if cfg.protocols.v5 {
            let bootnodes = cfg
                .bootnodes
                .iter()
                .filter_map(|b| match b {
                    BootnodeSpec::Enr(r) => Some((**r).clone()),
                    BootnodeSpec::Enode(_) => None,
                })
                .collect();
            Some(
                v5::service::Service::new(v5::service::Config {
                    key: cfg.key,
                    endpoint: cfg.advertise,
                    tcp_port: cfg.tcp_port,
                    bootnodes,
                    fork_id: Some(cfg.status.fork_id),
                    fork_filter: Some(filter()),
                    rng_seed: rand::random(),
                })
                .map_err(|e| anyhow::anyhow!("discv5: {e}"))?,
            )
        } else {
            None
        };
        Ok(Services { v4, v5 })
    }

    fn next_timeout(&self) -> Option<u64> {
        let a = self.v4.as_ref().and_then(|s| s.poll_timeout());
        let b = self.v5.as_ref().and_then(|s| s.poll_timeout());
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What a found node looks like to the pool: its id, RLPx endpoint and whether its
/// `eth` entry passed the filter (`None`: no record or no `eth` entry yet).
fn judge(id: &NodeId, s: &Services) -> Option<(Option<bool>, Option<Enode>)> {
    if let Some(n) = s.v4.as_ref().and_then(|v| v.node(id)) {
        let tcp = n
            .enr
            .as_ref()
            .and_then(|r| r.tcp_socket())
            .or_else(|| (n.tcp_port != 0).then(|| SocketAddr::new(n.udp.ip(), n.tcp_port)));
        return Some((
            n.eth_compatible,
            tcp.map(|addr| Enode { id: n.pubkey, addr }),
        ));
    }
    if let Some(n) = s.v5.as_ref().and_then(|v| v.node(id)) {
        let tcp = n.enr.tcp_socket();
        return Some((
            n.eth_compatible,
            tcp.map(|addr| Enode {
                id: catchup_discovery::crypto::pub64(n.enr.public_key()),
                addr,
            }),
        ));
    }
    None
}

/// Run discovery on this shard over `socket` until `stop()`: each compatible node with an
/// RLPx endpoint is handed to `on_candidate` once; `stats` is kept current.
pub async fn run(
    cfg: DiscConfig,
    socket: glommio::net::UdpSocket,
    stats: Rc<RefCell<DiscStats>>,
    on_candidate: impl FnMut(Enode),
    stop: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let shared = Rc::new(RefCell::new(Found {
        ids: HashSet::new(),
        handed: HashSet::new(),
        on_candidate,
    }));
    let dns = async {
        if cfg.protocols.dns {
            walk_dns(&cfg, &stats, &shared, &stop).await;
        }
        Ok::<(), anyhow::Error>(())
    };
    let udp = udp_loop(&cfg, socket, &stats, &shared, &stop);
    let (a, b) = futures_lite::future::zip(udp, dns).await;
    a.and(b)
}

/// Nodes found by any mechanism, and those handed to the pool.
struct Found<F> {
    ids: HashSet<NodeId>,
    handed: HashSet<NodeId>,
    on_candidate: F,
}

async fn udp_loop<F: FnMut(Enode)>(
    cfg: &DiscConfig,
    socket: glommio::net::UdpSocket,
    stats: &Rc<RefCell<DiscStats>>,
    shared: &Rc<RefCell<Found<F>>>,
    stop: &impl Fn() -> bool,
) -> anyhow::Result<()> {
    let mut s = Services::new(cfg)?;
    let t0 = now_ms();
    if let Some(v) = s.v4.as_mut() {
        v.start(t0);
    }
    if let Some(v) = s.v5.as_mut() {
        v.start(t0);
    }
    let mut judged: HashSet<NodeId> = HashSet::new();
    let mut next_lookup_ms = t0 + cfg.lookup_every_ms;
    let mut buf = vec![0u8; 1500];
    let mut changed: Vec<NodeId> = Vec::new();
    while !stop() {
        // Send what the services queued.
        loop {
            let t = match s.v4.as_mut().and_then(|v| v.poll_transmit()) {
                Some(t) => Some(t),
                None => s.v5.as_mut().and_then(|v| v.poll_transmit()),
            };
            let Some(t) = t else { break };
            match socket.send_to(&t.packet, t.dest).await {
                Ok(_) => stats.borrow_mut().packets_out += 1,
                Err(e) => tracing::debug!(dest = %t.dest, error = %e, "discovery send failed"),
            }
        }
        // Found nodes: new ones, and records that arrived.
        changed.clear();
        if let Some(v) = s.v4.as_mut() {
            while let Some(ev) = v.poll_event() {
                match ev {
                    v4::service::Event::NodeFound(id) | v4::service::Event::EnrUpdated(id) => {
                        changed.push(id)
                    }
                    v4::service::Event::LookupDone { .. } => {}
                }
            }
        }
        if let Some(v) = s.v5.as_mut() {
            while let Some(ev) = v.poll_event() {
                match ev {
                    v5::service::Event::NodeFound(id) | v5::service::Event::EnrUpdated(id) => {
                        changed.push(id)
                    }
                    _ => {}
                }
            }
        }
        for id in changed.drain(..) {
            let mut f = shared.borrow_mut();
            f.ids.insert(id);
            let Some((compatible, enode)) = judge(&id, &s) else {
                continue;
            };
            match compatible {
                Some(true) => {
                    if let Some(e) = enode {
                        if f.handed.insert(id) {
                            judged.insert(id);
                            stats.borrow_mut().eth_compatible += 1;
                            tracing::debug!(node = %e.addr, "discovered a compatible node");
                            (f.on_candidate)(e);
                        }
                    }
                }
                Some(false) if judged.insert(id) => {
                    stats.borrow_mut().eth_incompatible += 1;
                }
                _ => {}
            }
        }
        {
            let mut st = stats.borrow_mut();
            st.nodes_found = shared.borrow().ids.len() as u64;
            st.packets_dropped = s.v4.as_ref().map_or(0, |v| v.drops().total())
                + s.v5.as_ref().map_or(0, |v| v.drops().total());
            st.v4_table = s.v4.as_ref().map_or(0, |v| v.table_len() as u64);
            st.v5_table = s.v5.as_ref().map_or(0, |v| v.table_len() as u64);
        }
        // Wait for a datagram, the services' next deadline, or the stop check.
        let now = now_ms();
        if now >= next_lookup_ms {
            next_lookup_ms = now + cfg.lookup_every_ms;
            if shared.borrow().handed.len() < cfg.want_candidates {
                if let Some(v) = s.v4.as_mut().filter(|v| v.lookups_running() < 2) {
                    v.lookup_random(now);
                }
                if let Some(v) = s.v5.as_mut() {
                    v.lookup_random(now);
                }
            }
        }
        let due = s.next_timeout().unwrap_or(u64::MAX).min(next_lookup_ms);
        let wait_ms = due.saturating_sub(now).clamp(1, 250);
        let got =
            futures_lite::future::or(async { Some(socket.recv_from(&mut buf).await) }, async {
                glommio::timer::sleep(Duration::from_millis(wait_ms)).await;
                None
            })
            .await;
        let now = now_ms();
        match got {
            Some(Ok((n, from))) => {
                stats.borrow_mut().packets_in += 1;
                let data = &buf[..n];
                if is_v4_packet(data) {
                    if let Some(v) = s.v4.as_mut() {
                        v.handle_packet(from, data, now);
                    }
                } else if let Some(v) = s.v5.as_mut() {
                    v.handle_packet(from, data, now);
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, "discovery receive failed"),
            None => {}
        }
        if s.next_timeout().is_some_and(|t| t <= now) {
            if let Some(v) = s.v4.as_mut() {
                v.handle_timeout(now);
            }
            if let Some(v) = s.v5.as_mut() {
                v.handle_timeout(now);
            }
        }
    }
    Ok(())
}

/// Trees (the given one and the ones it links to) walked per list.
const MAX_DNS_TREES: usize = 8;
/// Entries resolved per tree.
const MAX_DNS_ENTRIES: usize = 4_096;
const DNS_TIMEOUT_MS: u64 = 2_000;
const DNS_ATTEMPTS: u32 = 2;
/// The trees are walked again this long after the last walk.
const DNS_REWALK_MS: u64 = 30 * 60 * 1000;

/// The first `nameserver` of `/etc/resolv.conf`, port 53.
pub fn system_dns_server() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("nameserver"))
            .then(|| w.next()?.parse::<IpAddr>().ok())
            .flatten()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// Ask `server` for the TXT records of `name` (`None`: no answer, no such name or a bad
/// answer, each counted as a failure).
async fn txt_query(
    sock: &glommio::net::UdpSocket,
    server: SocketAddr,
    name: &str,
    stats: &RefCell<DiscStats>,
) -> Option<Vec<String>> {
    use catchup_discovery::dns_wire::{decode_txt_answer, encode_txt_query, TxtAnswer};
    let mut buf = vec![0u8; catchup_discovery::dns_wire::MAX_MESSAGE_BYTES];
    for _ in 0..DNS_ATTEMPTS {
        let id: u16 = rand::random();
        let q = encode_txt_query(id, name).ok()?;
        stats.borrow_mut().dns_queries += 1;
        if sock.send_to(&q, server).await.is_err() {
            continue;
        }
        let until = std::time::Instant::now() + Duration::from_millis(DNS_TIMEOUT_MS);
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let got = glommio::timer::timeout(left, async {
                sock.recv_from(&mut buf)
                    .await
                    .map_err(|e| glommio::GlommioError::IoError(e.into()))
            })
            .await;
            let Ok((n, from)) = got else { break };
            if from != server {
                continue;
            }
            match decode_txt_answer(&buf[..n], id, name) {
                Ok(TxtAnswer::Records(r)) => return Some(r),
                Ok(other) => {
                    tracing::debug!(name, answer = ?other, "dns: no records");
                    stats.borrow_mut().dns_failures += 1;
                    return None;
                }
                // Another query's late answer, or garbage: keep waiting for ours.
                Err(_) => continue,
            }
        }
    }
    stats.borrow_mut().dns_failures += 1;
    None
}

/// Walk the EIP-1459 trees of `cfg.dns_lists`, one query at a time, and again every 30
/// minutes: every record with a compatible `eth` entry and an RLPx endpoint goes to the
/// pool (once).
async fn walk_dns<F: FnMut(Enode)>(
    cfg: &DiscConfig,
    stats: &Rc<RefCell<DiscStats>>,
    shared: &Rc<RefCell<Found<F>>>,
    stop: &impl Fn() -> bool,
) {
    use catchup_discovery::dns::{TreeLink, TreeWalker, WalkEvent};
    let Some(server) = cfg.dns_server else {
        tracing::warn!("dns: no DNS server (give --dns-server)");
        return;
    };
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = match glommio::net::UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "dns: cannot bind a UDP socket");
            return;
        }
    };
    let mut lists: Vec<TreeLink> = Vec::new();
    for l in &cfg.dns_lists {
        match TreeLink::parse(l) {
            Ok(t) => lists.push(t),
            Err(e) => tracing::warn!(list = %l, error = %e, "dns: bad tree link"),
        }
    }
    loop {
        let mut trees: std::collections::VecDeque<TreeLink> = lists.iter().cloned().collect();
        let mut walked = 0usize;
        while let Some(tree) = trees.pop_front() {
            if walked >= MAX_DNS_TREES * cfg.dns_lists.len().max(1) || stop() {
                break;
            }
            walked += 1;
            let domain = tree.domain.clone();
            let mut w = TreeWalker::new(tree, MAX_DNS_ENTRIES).with_seed(rand::random());
            let mut records = 0u64;
            loop {
                if stop() {
                    return;
                }
                match w.poll() {
                    WalkEvent::Query(name) => match txt_query(&sock, server, &name, stats).await {
                        Some(txts) => {
                            if let Err(e) = w.on_answer(&name, &txts) {
                                stats.borrow_mut().dns_failures += 1;
                                tracing::debug!(%name, error = %e, "dns: entry refused");
                            }
                        }
                        None => w.on_failure(&name),
                    },
                    WalkEvent::Enr(enr) => {
                        records += 1;
                        let id = enr.node_id();
                        let compatible = match enr.eth_fork_id() {
                            Some(Ok(fid)) => {
                                check_fork_id(&cfg.status, cfg.status.forks.as_ref(), &fid).is_ok()
                            }
                            _ => false,
                        };
                        let mut f = shared.borrow_mut();
                        // Counted once per node, however often the lists are walked.
                        let new = f.ids.insert(id);
                        if new {
                            stats.borrow_mut().dns_records += 1;
                        }
                        stats.borrow_mut().nodes_found = f.ids.len() as u64;
                        match (compatible, enr.tcp_socket()) {
                            (true, Some(addr)) if f.handed.insert(id) => {
                                stats.borrow_mut().eth_compatible += 1;
                                (f.on_candidate)(Enode {
                                    id: catchup_discovery::crypto::pub64(enr.public_key()),
                                    addr,
                                });
                            }
                            (false, _) if new && enr.eth_fork_id().is_some() => {
                                stats.borrow_mut().eth_incompatible += 1;
                            }
                            _ => {}
                        }
                    }
                    WalkEvent::Link(l) => {
                        if trees.len() < MAX_DNS_TREES {
                            trees.push_back(l);
                        }
                    }
                    // One query at a time: nothing is in flight when the walker waits.
                    WalkEvent::Wait | WalkEvent::Done => break,
                }
            }
            tracing::info!(%domain, records, entries = w.entries_resolved(), truncated = w.truncated(), "dns: tree walked");
        }
        // Walk again later: the lists follow the network as nodes come and go.
        let until = std::time::Instant::now() + Duration::from_millis(DNS_REWALK_MS);
        while std::time::Instant::now() < until {
            if stop() {
                return;
            }
            glommio::timer::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The public EIP-1459 list of all nodes of a network (go-ethereum's `KnownDNSNetwork`).
pub fn builtin_dns_list(network: &str) -> String {
    format!("enrtree://AKA3AM6LPBYEUDMVNU3BSVQJ5AD45Y7YPOHJLEF6W26QOE4VTUDPE@all.{network}.ethdisco.net")
}

/// What `eth sync` discovers with, from its flags.
#[derive(Debug, Clone)]
pub struct SyncPlan {
    pub protocols: Protocols,
    pub bootnodes: Vec<BootnodeSpec>,
    pub dns_lists: Vec<String>,
}

/// `None`: no discovery (only `--peer`). Fails in one line when discovery has nothing to
/// start from or the sync has no way to find a peer.
pub fn resolve_sync(
    a: &super::cmd::SyncDiscoveryArgs,
    static_peers: usize,
    genesis: &[u8; 32],
) -> anyhow::Result<Option<SyncPlan>> {
    let given = parse_bootnodes(&a.bootnodes)?;
    let mut dns_lists: Vec<String> = a
        .dns_list
        .iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for l in &dns_lists {
        catchup_discovery::dns::TreeLink::parse(l)
            .map_err(|e| anyhow::anyhow!("--dns-list {l}: {e}"))?;
    }
    let network = crate::eth::export::network_of_genesis((*genesis).into());
    let use_builtin = given.is_empty() && dns_lists.is_empty() && static_peers == 0;
    let bootnodes: Vec<BootnodeSpec> = match network {
        Some(n) if use_builtin => {
            dns_lists.push(builtin_dns_list(n));
            builtin_bootnodes(n)
                .iter()
                .map(|b| parse_bootnode(b))
                .collect::<anyhow::Result<_>>()?
        }
        _ => given,
    };
    let protocols = match &a.discovery {
        Some(s) => parse_protocols(s)?,
        None => Protocols {
            v4: !bootnodes.is_empty(),
            v5: !bootnodes.is_empty(),
            dns: !dns_lists.is_empty(),
        },
    };
    if protocols.dns && dns_lists.is_empty() {
        bail!("--discovery dns needs --dns-list enrtree://KEY@DOMAIN");
    }
    if protocols.udp() && bootnodes.is_empty() && !protocols.dns {
        bail!(
            "--discovery needs somewhere to start: the genesis 0x{} is not a network with built-in bootnodes (mainnet, sepolia, holesky){}; give --bootnodes ENODE|ENR or --peer ENODE",
            hex::encode(genesis),
            if static_peers > 0 { " and --peer disables them" } else { "" }
        );
    }
    if !protocols.any() {
        if static_peers == 0 {
            bail!("no peers to sync from: give --peer ENODE, or --bootnodes ENODE|ENR (or --dns-list enrtree://…) to find peers by discovery");
        }
        return Ok(None);
    }
    anyhow::ensure!(
        (1..=4096).contains(&a.max_peers),
        "--max-peers must be in 1..=4096"
    );
    Ok(Some(SyncPlan {
        protocols,
        bootnodes,
        dns_lists: if protocols.dns { dns_lists } else { Vec::new() },
    }))
}

/// Bind the discovery socket of `eth sync` and put the pieces together.
pub fn sync_setup(
    a: &super::cmd::SyncDiscoveryArgs,
    plan: SyncPlan,
    key: catchup_devp2p::secp256k1::SecretKey,
    status: StatusInfo,
) -> anyhow::Result<super::sync_sharded::DiscoverySetup> {
    let SyncPlan {
        protocols,
        bootnodes,
        dns_lists,
    } = plan;
    let dns_server = match (protocols.dns, a.dns_server) {
        (true, Some(s)) => Some(s),
        (true, None) => Some(system_dns_server().context(
            "--discovery dns: no nameserver in /etc/resolv.conf; give --dns-server IP:53",
        )?),
        (false, _) => None,
    };
    let sock = crate::node::listen::claim_udp(a.discovery_addr, "--discovery-addr")?;
    let bound = sock.local_addr()?;
    let ip = advertise_ip(a.nat.as_deref(), a.ext_ip, bound.ip())?;
    let cfg = DiscConfig {
        key,
        advertise: SocketAddr::new(ip, bound.port()),
        tcp_port: 0,
        protocols,
        bootnodes,
        status,
        lookup_every_ms: 1_000,
        want_candidates: a.max_peers.saturating_mul(2),
        dns_lists,
        dns_server,
    };
    tracing::info!(udp = %bound, advertised = %cfg.advertise, v4 = protocols.v4, v5 = protocols.v5, dns = protocols.dns, bootnodes = cfg.bootnodes.len(), max_peers = a.max_peers, "discovery");
    Ok(super::sync_sharded::DiscoverySetup {
        cfg,
        socket: std::sync::Arc::new(std::sync::Mutex::new(Some(sock))),
        max_peers: a.max_peers,
    })
}

/// Discovery of `eth serve`: the config and the UDP socket bound at the listen address.
pub struct ServeDiscovery {
    pub cfg: DiscConfig,
    pub socket: std::net::UdpSocket,
    pub enr: Enr,
}

/// `None` without `--discovery` (or with `none`).
pub fn serve_setup(
    a: &super::cmd::ServeDiscoveryArgs,
    listen: SocketAddr,
    key: catchup_devp2p::secp256k1::SecretKey,
    status: StatusInfo,
) -> anyhow::Result<Option<ServeDiscovery>> {
    let protocols = match &a.discovery {
        Some(s) => parse_protocols(s)?,
        None => return Ok(None),
    };
    if protocols.dns {
        bail!("--discovery dns: a serving node answers v4 and v5 only");
    }
    if !protocols.udp() {
        return Ok(None);
    }
    let bootnodes = parse_bootnodes(&a.bootnodes)?;
    let socket = crate::node::listen::claim_udp(listen, "--listen (UDP, for --discovery)")?;
    let ip = advertise_ip(a.nat.as_deref(), a.ext_ip, listen.ip())?;
    if ip.is_unspecified() {
        tracing::warn!(%listen, "discovery advertises an unspecified IP: other nodes learn our address from our packets only; give --ext-ip IP");
    }
    let cfg = DiscConfig {
        key,
        advertise: SocketAddr::new(ip, listen.port()),
        tcp_port: listen.port(),
        protocols,
        bootnodes,
        status,
        lookup_every_ms: 30_000,
        want_candidates: 0,
        dns_lists: Vec::new(),
        dns_server: None,
    };
    let enr = local_enr(&cfg)?;
    Ok(Some(ServeDiscovery { cfg, socket, enr }))
}

/// [`super::server::serve`] with discovery answered on shard 0 beside the RLPx listener.
pub fn serve_with_discovery<R, F, L>(
    cfg: super::server::ServeConfig,
    local: super::conn::LocalNode,
    make_responder: F,
    rc: catchup_shards::RuntimeConfig,
    shutdown: std::sync::Arc<std::sync::atomic::AtomicBool>,
    disc: ServeDiscovery,
    listening: L,
) -> anyhow::Result<Vec<super::server::ServeStats>>
where
    R: super::eth_peer::Responder + 'static,
    F: Fn(usize) -> R + Send + Sync + Clone + 'static,
    L: Fn(usize) + Send + Sync + Clone + 'static,
{
    use std::sync::{Arc, Mutex};
    let mut rc = rc;
    rc.name = "serve".into();
    let cfg = Arc::new(cfg);
    let local = Arc::new(local);
    let dcfg = disc.cfg;
    let held = Arc::new(Mutex::new(Some(disc.socket)));
    let results = catchup_shards::runtime::run_with_flag::<(), _, _, _>(
        &rc,
        shutdown,
        move |shard: catchup_shards::Shard<()>| {
            let (cfg, local, make_responder, listening) = (
                cfg.clone(),
                local.clone(),
                make_responder.clone(),
                listening.clone(),
            );
            let (dcfg, held) = (dcfg.clone(), held.clone());
            async move {
                let id = shard.id().0;
                if id == 0 {
                    let taken = held.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(sock) = taken {
                        let sock = glommio::net::UdpSocket::from(socket2::Socket::from(sock));
                        let sh = shard.clone();
                        glommio::spawn_local(async move {
                            let stats = Rc::new(RefCell::new(DiscStats::default()));
                            let r =
                                run(dcfg, sock, stats, |_| {}, move || sh.shutting_down()).await;
                            if let Err(e) = r {
                                tracing::warn!(error = %e, "discovery stopped");
                            }
                        })
                        .detach();
                    }
                }
                let responder = Rc::new(make_responder(id));
                let sh = shard.clone();
                super::server::accept_loop_notify(
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
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    results
        .into_iter()
        .map(|r| r.map_err(|e| anyhow::anyhow!(e)))
        .collect()
}

/// [`super::server::serve_notify`], answering discovery on the listen port when `disc` is
/// given.
pub fn serve_maybe_discovery<R, F, L>(
    cfg: super::server::ServeConfig,
    local: super::conn::LocalNode,
    make_responder: F,
    rc: catchup_shards::RuntimeConfig,
    shutdown: std::sync::Arc<std::sync::atomic::AtomicBool>,
    disc: Option<ServeDiscovery>,
    listening: L,
) -> anyhow::Result<Vec<super::server::ServeStats>>
where
    R: super::eth_peer::Responder + 'static,
    F: Fn(usize) -> R + Send + Sync + Clone + 'static,
    L: Fn(usize) + Send + Sync + Clone + 'static,
{
    match disc {
        Some(d) => serve_with_discovery(cfg, local, make_responder, rc, shutdown, d, listening),
        None => super::server::serve_notify(cfg, local, make_responder, rc, shutdown, listening),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_and_nat_flags_parse() {
        let p = parse_protocols("v4,v5").unwrap();
        assert!(p.v4 && p.v5 && !p.dns);
        assert!(!parse_protocols("none").unwrap().any());
        assert!(parse_protocols("v6").is_err());
        assert_eq!(advertised_ip(Some("none"), None).unwrap(), None);
        assert_eq!(
            advertised_ip(Some("extip:1.2.3.4"), None).unwrap(),
            Some("1.2.3.4".parse().unwrap())
        );
        assert!(advertised_ip(Some("upnp"), None).is_err());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(advertise_ip(None, None, lo).unwrap(), lo);
        assert_eq!(
            advertise_ip(Some("extip:1.2.3.4"), None, lo).unwrap(),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        let any = advertise_ip(None, None, "0.0.0.0".parse().unwrap()).unwrap();
        assert!(any.is_ipv4());
    }

    fn args(
        bootnodes: &[&str],
        discovery: Option<&str>,
    ) -> crate::eth::net::cmd::SyncDiscoveryArgs {
        crate::eth::net::cmd::SyncDiscoveryArgs {
            bootnodes: bootnodes.iter().map(|s| s.to_string()).collect(),
            discovery: discovery.map(str::to_string),
            dns_list: Vec::new(),
            dns_server: None,
            max_peers: 25,
            min_peers: None,
            min_peers_wait_s: 10,
            discovery_addr: "127.0.0.1:0".parse().unwrap(),
            nat: None,
            ext_ip: None,
        }
    }

    #[test]
    fn sync_discovery_defaults_follow_the_flags_and_the_genesis() {
        let mainnet: [u8; 32] =
            hex::decode("d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3")
                .unwrap()
                .try_into()
                .unwrap();
        let unknown = [0x11u8; 32];
        // Mainnet with nothing given: the built-in bootnodes and DNS list.
        let p = resolve_sync(&args(&[], None), 0, &mainnet)
            .unwrap()
            .unwrap();
        assert!(p.protocols.v4 && p.protocols.v5 && p.protocols.dns);
        assert_eq!(p.bootnodes.len(), builtin_bootnodes("mainnet").len());
        assert_eq!(p.dns_lists, vec![builtin_dns_list("mainnet")]);
        // A --peer alone: no discovery.
        assert!(resolve_sync(&args(&[], None), 1, &mainnet)
            .unwrap()
            .is_none());
        // Given bootnodes replace the built-in ones.
        let b = builtin_bootnodes("sepolia")[0];
        let p = resolve_sync(&args(&[b], None), 0, &unknown)
            .unwrap()
            .unwrap();
        assert_eq!(p.bootnodes.len(), 1);
        assert!(p.dns_lists.is_empty() && !p.protocols.dns);
        // Nothing to start from.
        let e = resolve_sync(&args(&[], Some("v4,v5")), 0, &unknown).unwrap_err();
        assert!(
            e.to_string().contains("--bootnodes") && e.to_string().contains("--peer"),
            "{e}"
        );
        let e = resolve_sync(&args(&[], None), 0, &unknown).unwrap_err();
        assert!(e.to_string().contains("--peer"), "{e}");
        let e = resolve_sync(&args(&[], Some("dns")), 0, &unknown).unwrap_err();
        assert!(e.to_string().contains("--dns-list"), "{e}");
    }

    #[test]
    fn v4_packets_are_told_from_v5_ones() {
        let key = catchup_devp2p::secp256k1::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let ping = v4::Message::Ping(v4::packet::Ping {
            version: 4,
            from: v4::Endpoint {
                ip: "127.0.0.1".parse().unwrap(),
                udp_port: 1,
                tcp_port: 1,
            },
            to: v4::Endpoint {
                ip: "127.0.0.1".parse().unwrap(),
                udp_port: 2,
                tcp_port: 0,
            },
            expiration: 1 << 40,
            enr_seq: None,
        });
        let (packet, _) = v4::encode(&ping, &key).unwrap();
        assert!(is_v4_packet(&packet));
        let mut other = packet.clone();
        other[40] ^= 1;
        assert!(!is_v4_packet(&other));
        assert!(!is_v4_packet(&[0u8; 63]));
    }

    #[test]
    fn builtin_bootnodes_parse() {
        for net in ["mainnet", "sepolia", "holesky"] {
            let list = builtin_bootnodes(net);
            assert!(!list.is_empty(), "{net}");
            for b in list {
                assert!(
                    matches!(parse_bootnode(b), Ok(BootnodeSpec::Enode(_))),
                    "{b}"
                );
            }
        }
        assert!(builtin_bootnodes("devnet").is_empty());
        assert!(parse_bootnode("http://x").is_err());
    }
}

//! The AF_XDP fast path of the repair driver: the XDP program on the interface steers the
//! repair ports' UDP packets to one AF_XDP socket per rx queue; each shard owns one queue
//! and its socket, receives and parses raw frames, and transmits frames it builds itself
//! (Ethernet/IPv4/UDP with checksums) through the same socket.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use catchup_io::xdp::{
    build_udp_frame, iface_info, parse_udp_frame, resolve_neighbor, Endpoint, IfaceInfo,
    XdpProgram, XskConfig, XskSocket,
};

use super::driver::{
    collect_completed, engine_for, finish, log_progress, unix_ms, DriverError, RepairJob,
    ShardOutcome, ShardStore,
};
use super::engine::{Action, PeerId};

/// Everything set up before the shards start: the attached program (detached on drop),
/// one socket per shard, and the peers' link-layer addresses.
pub struct XdpSetup {
    pub program: XdpProgram,
    pub info: IfaceInfo,
    pub sockets: Vec<Option<XskSocket>>,
    pub peers: Vec<Endpoint>,
    pub first_port: u16,
}

/// Attach the program to `iface` (generic mode), open one AF_XDP socket per shard on
/// `queues[shard]`, and resolve every peer's MAC. Any failure is the reason to fall back.
pub fn setup(
    iface: &str,
    queues: &[u32],
    first_port: u16,
    shards: usize,
    peers: &[SocketAddrV4],
) -> Result<XdpSetup, String> {
    let info = iface_info(iface).map_err(|e| e.to_string())?;
    let mut peer_eps = Vec::new();
    for p in peers {
        let mac = resolve_neighbor(&info, *p.ip(), 2000).map_err(|e| e.to_string())?;
        peer_eps.push(Endpoint {
            mac,
            ip: *p.ip(),
            port: p.port(),
        });
    }
    let mut program =
        XdpProgram::attach(iface, first_port, shards as u16, true).map_err(|e| e.to_string())?;
    let mut sockets = Vec::new();
    for shard in 0..shards {
        let queue = queues.get(shard).copied().unwrap_or(shard as u32);
        if queue >= info.rx_queues {
            return Err(format!(
                "interface {iface} has {} rx queues; shard {shard} wants queue {queue}",
                info.rx_queues
            ));
        }
        let sock =
            XskSocket::new(info.index, queue, XskConfig::default()).map_err(|e| e.to_string())?;
        program.register(queue, &sock).map_err(|e| e.to_string())?;
        sockets.push(Some(sock));
    }
    Ok(XdpSetup {
        program,
        info,
        sockets,
        peers: peer_eps,
        first_port,
    })
}

/// Run one shard's engine over its AF_XDP socket. The socket is polled (at most 1 ms at a
/// time) on the shard's executor, between the awaited writes of its shred store.
pub async fn run_shard_xdp(
    job: &RepairJob,
    shard: usize,
    mut sock: XskSocket,
    info: &IfaceInfo,
    peers: &[Endpoint],
    port: u16,
) -> Result<ShardOutcome, DriverError> {
    let (mut engine, peer_ids) = engine_for(job, shard);
    let mut by_addr: HashMap<(Ipv4Addr, u16), PeerId> = HashMap::new();
    for (p, spec) in peers.iter().zip(&job.peers) {
        if let Some(id) = peer_ids.get(&spec.addr) {
            by_addr.insert((p.ip, p.port), *id);
        }
    }
    let mut store = ShardStore::open(job, shard, &mut engine).await?;
    let me = Endpoint {
        mac: info.mac,
        ip: info.ipv4,
        port,
    };
    let start = Instant::now();
    let mut slots = BTreeMap::new();
    let mut last_tick = 0u64;
    let mut last_log = Instant::now();
    let mut ip_id = 0u16;
    let mut dropped_tx = 0u64;
    engine.on_tick(unix_ms());
    while !engine.is_done() && (start.elapsed().as_millis() as u64) < job.deadline_ms {
        if sock.wait_rx(1).unwrap_or(false) {
            let now = unix_ms();
            sock.recv(256, |frame| {
                if let Some(v) = parse_udp_frame(frame) {
                    if v.dst_ip == me.ip && v.dst_port == port {
                        if let Some(peer) = by_addr.get(&(v.src_ip, v.src_port)) {
                            engine.on_packet(now, *peer, v.payload);
                        }
                    }
                }
            });
        }
        log_progress(&engine, shard, "xdp", start, &mut last_log);
        let now = unix_ms();
        if now.saturating_sub(last_tick) >= 2 {
            engine.on_tick(now);
            last_tick = now;
        }
        while let Some(a) = engine.next_action() {
            match a {
                Action::Send { peer, packet } => {
                    let dst = peers[peer.0];
                    ip_id = ip_id.wrapping_add(1);
                    let mut sent =
                        sock.send_with(|buf| build_udp_frame(buf, &me, &dst, ip_id, &packet));
                    if !sent {
                        let _ = sock.flush();
                        sent =
                            sock.send_with(|buf| build_udp_frame(buf, &me, &dst, ip_id, &packet));
                    }
                    if !sent {
                        dropped_tx += 1; // times out and is retried like a lost packet
                    }
                }
                Action::SlotComplete { slot, shreds } => {
                    slots.insert(slot, shreds);
                }
                Action::Store { slot, index, shred } => store.put(slot, index, &shred).await,
            }
        }
        let _ = sock.flush();
        store.maybe_flush().await;
    }
    collect_completed(&mut engine, &mut slots);
    let store_report = store.close().await;
    if dropped_tx > 0 {
        tracing::debug!(shard, dropped_tx, "AF_XDP tx ring full at times");
    }
    let mut o = finish(shard, "xdp", None, start, engine.progress(), slots);
    o.store = store_report;
    Ok(o)
}

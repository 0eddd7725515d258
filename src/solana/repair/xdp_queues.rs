//! AF_XDP per NIC queue: one socket and UMEM per rx queue, each owned by the shard the
//! tuning plan deals that queue to, on a thread pinned to that shard's CPU. Measured on a
//! veth pair with several rx/tx queues: a sender in the other namespace spreads UDP flows
//! (many source ports, one destination port per queue) over the queues; every shard
//! counts what arrives on its own socket. The baseline in the same run is the kernel path:
//! one UDP socket per shard, read with `recvmmsg`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use catchup_io::xdp::{iface_info, parse_udp_frame, XdpProgram, XskConfig, XskSocket};

use super::netns::{enter, VethPair};

/// First destination port of the measurement; queue `q`'s shard listens on `FIRST_PORT + q`
/// in the kernel baseline (the AF_XDP run takes every port of the range on every queue).
pub const FIRST_PORT: u16 = 47_400;
/// Payload size of each packet: a shred's (1,203 bytes) plus a repair nonce.
const PAYLOAD: usize = 1207;
/// Source ports per sender thread (flows to spread over the queues).
const FLOWS_PER_SENDER: usize = 32;

/// What one shard's socket received.
#[derive(serde::Serialize, Debug, Clone)]
pub struct QueueResult {
    pub queue: u32,
    pub shard: usize,
    /// The CPU the plan gives the shard, and the CPU its thread ran on at the end.
    pub plan_cpu: usize,
    pub ran_on_cpu: Option<usize>,
    pub received_packets: u64,
    /// Packets whose destination was in the measured port range and parsed as IPv4/UDP.
    pub parsed_packets: u64,
    pub received_pps: f64,
    /// Frames the kernel dropped for want of room in this socket's rings.
    pub rx_dropped: u64,
}

/// One receive path's figures (AF_XDP per queue, or the recvmmsg baseline).
#[derive(serde::Serialize, Debug, Clone)]
pub struct MultiRx {
    pub path: &'static str,
    pub queues: usize,
    pub seconds: f64,
    pub sent_packets: u64,
    pub sent_pps: f64,
    pub received_packets: u64,
    pub received_pps: f64,
    pub per_queue: Vec<QueueResult>,
}

/// The plan for `queues` shards on this host, each owning one queue of a NIC with
/// `queues` rx/tx queues (the veth's).
pub fn plan_for(queues: usize) -> anyhow::Result<catchup_tuning::plan::Plan> {
    let topo = catchup_tuning::topology::read_topology(&Default::default())?;
    let nic = catchup_tuning::topology::Nic {
        name: "veth".into(),
        rx_queues: (0..queues).collect(),
        tx_queues: (0..queues).collect(),
        numa_node: None,
        irqs: Vec::new(),
    };
    Ok(catchup_tuning::plan::make_plan(
        &topo,
        Some(queues),
        Some(&nic),
    )?)
}

fn pin(cpu: usize) {
    crate::solana::snapshot::index::set::pin_to_core(cpu);
}

fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu has no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    usize::try_from(c).ok()
}

/// Blast UDP from namespace `ns` at `to_ip`, ports `FIRST_PORT..FIRST_PORT + ports`, from
/// `senders` threads with many source ports each, for `seconds`. Returns (packets, secs).
fn blast(
    ns: &str,
    from: Ipv4Addr,
    to_ip: Ipv4Addr,
    ports: usize,
    senders: usize,
    seconds: f64,
) -> anyhow::Result<(u64, f64)> {
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut threads = Vec::new();
    for t in 0..senders {
        let (ns, sent) = (ns.to_string(), sent.clone());
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            enter(&ns)?;
            let socks: Vec<std::net::UdpSocket> = (0..FLOWS_PER_SENDER)
                .map(|_| std::net::UdpSocket::bind((from, 0)))
                .collect::<Result<_, _>>()?;
            let payload = vec![0x5au8 ^ t as u8; PAYLOAD];
            let t0 = Instant::now();
            let mut n = 0u64;
            let mut i = 0usize;
            while t0.elapsed().as_secs_f64() < seconds {
                for _ in 0..64 {
                    let s = &socks[i % socks.len()];
                    let port = FIRST_PORT + (i / socks.len() % ports) as u16;
                    i = i.wrapping_add(1);
                    if s.send_to(&payload, (to_ip, port)).is_ok() {
                        n += 1;
                    }
                }
            }
            sent.fetch_add(n, Ordering::Relaxed);
            Ok(())
        }));
    }
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
    }
    Ok((sent.load(Ordering::Relaxed), start.elapsed().as_secs_f64()))
}

/// AF_XDP on every queue of `pair.veth_b`: the program attached in generic mode, one
/// socket per queue, each on the thread of the shard that owns the queue in the plan.
///
/// `skb_mode` attaches in generic mode. On a veth, generic XDP sees a packet sent on tx
/// queue `q > 0` as received on rx queue `q - 1` (the skb's recorded queue is one-based)
/// and tx queues 0 and 1 both land on rx queue 0, so the last queue gets nothing; the
/// driver's (native) mode keeps each tx queue's packets on the rx queue of the same index.
pub fn af_xdp_per_queue(
    pair: &VethPair,
    queues: usize,
    seconds: f64,
    skb_mode: bool,
) -> anyhow::Result<MultiRx> {
    let plan = plan_for(queues)?;
    let iface = pair.veth_b.clone();
    let ns_b = pair.b.clone();
    // The program and the interface facts, from a thread inside namespace b; the
    // program stays attached until `prog` drops at the end of this function.
    let (prog, info) = std::thread::spawn({
        let (iface, ns_b) = (iface.clone(), ns_b.clone());
        move || -> anyhow::Result<_> {
            enter(&ns_b)?;
            let info = iface_info(&iface)?;
            if (info.rx_queues as usize) < queues {
                bail!(
                    "interface {iface} has {} rx queues, {queues} wanted",
                    info.rx_queues
                );
            }
            let prog = XdpProgram::attach(&iface, FIRST_PORT, queues as u16, skb_mode)?;
            Ok((prog, info))
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("setup panicked"))??;
    let prog = Arc::new(std::sync::Mutex::new(prog));
    let stop = Arc::new(AtomicBool::new(false));
    // Every shard registers its socket before the sender starts.
    let ready = Arc::new(Barrier::new(queues + 1));
    let mut shards = Vec::new();
    for shard in 0..queues {
        let owned: Vec<u32> = plan.queues_of(shard).iter().map(|&q| q as u32).collect();
        let plan_cpu = plan.shards[shard].cpu;
        let (ns_b, info, prog, stop, ready) = (
            ns_b.clone(),
            info.clone(),
            prog.clone(),
            stop.clone(),
            ready.clone(),
        );
        shards.push(std::thread::spawn(
            move || -> anyhow::Result<Vec<QueueResult>> {
                let setup = (|| -> anyhow::Result<Vec<XskSocket>> {
                    enter(&ns_b)?;
                    pin(plan_cpu);
                    // Deep rings (2,048 frames to receive into, 4 MiB of UMEM) absorb a
                    // shard's scheduling gaps; without CAP_IPC_LOCK every UMEM counts
                    // against RLIMIT_MEMLOCK, so a refused one is retried small.
                    let deep = XskConfig {
                        frame_count: 4096,
                        frame_size_bytes: 2048,
                        ring_size: 2048,
                    };
                    let small = XskConfig {
                        frame_count: 256,
                        ..XskConfig::default()
                    };
                    let mut socks = Vec::new();
                    for &q in &owned {
                        let sock = XskSocket::new(info.index, q, deep)
                            .or_else(|_| XskSocket::new(info.index, q, small))
                            .with_context(|| format!("AF_XDP socket on queue {q}"))?;
                        prog.lock()
                            .map_err(|_| anyhow::anyhow!("program lock"))?
                            .register(q, &sock)?;
                        socks.push(sock);
                    }
                    Ok(socks)
                })();
                ready.wait();
                let mut socks = setup?;
                let mut counts = vec![(0u64, 0u64, None::<Instant>, Instant::now()); socks.len()];
                while !stop.load(Ordering::Acquire) {
                    for (sock, c) in socks.iter_mut().zip(counts.iter_mut()) {
                        if sock.wait_rx(2).unwrap_or(false) {
                            let got = sock.recv(256, |f| {
                                c.0 += 1;
                                if parse_udp_frame(f).is_some_and(|v| {
                                    v.dst_port >= FIRST_PORT
                                        && usize::from(v.dst_port - FIRST_PORT) < queues
                                }) {
                                    c.1 += 1;
                                }
                            });
                            if got > 0 {
                                c.2.get_or_insert_with(Instant::now);
                                c.3 = Instant::now();
                            }
                        }
                    }
                }
                let ran_on_cpu = current_cpu();
                Ok(socks
                    .iter()
                    .zip(counts)
                    .map(|(sock, (rx, parsed, first, last))| {
                        let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
                        QueueResult {
                            queue: sock.queue(),
                            shard,
                            plan_cpu,
                            ran_on_cpu,
                            received_packets: rx,
                            parsed_packets: parsed,
                            received_pps: if secs > 0.0 { rx as f64 / secs } else { 0.0 },
                            rx_dropped: sock.stats().map_or(0, |s| s.rx_dropped),
                        }
                    })
                    .collect())
            },
        ));
    }
    ready.wait();
    let sent = blast(
        &pair.a,
        pair.ip_a(),
        pair.ip_b(),
        queues,
        2.min(queues),
        seconds,
    );
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Release);
    let mut per_queue = Vec::new();
    for s in shards {
        per_queue.extend(s.join().map_err(|_| anyhow::anyhow!("shard panicked"))??);
    }
    drop(prog);
    let (sent_packets, send_secs) = sent?;
    let path = if skb_mode {
        "af_xdp_generic"
    } else {
        "af_xdp_native"
    };
    Ok(summarise(path, queues, per_queue, sent_packets, send_secs))
}

fn summarise(
    path: &'static str,
    queues: usize,
    mut per_queue: Vec<QueueResult>,
    sent_packets: u64,
    send_secs: f64,
) -> MultiRx {
    per_queue.sort_by_key(|q| q.queue);
    let received_packets: u64 = per_queue.iter().map(|q| q.parsed_packets).sum();
    MultiRx {
        path,
        queues,
        seconds: send_secs,
        sent_packets,
        sent_pps: sent_packets as f64 / send_secs.max(1e-9),
        received_packets,
        received_pps: received_packets as f64 / send_secs.max(1e-9),
        per_queue,
    }
}

/// The kernel baseline on the same veth and traffic: shard `s` (pinned as in the plan)
/// owns a UDP socket on `FIRST_PORT + s` and reads it with `recvmmsg`, 64 at a time.
pub fn recvmmsg_per_shard(pair: &VethPair, queues: usize, seconds: f64) -> anyhow::Result<MultiRx> {
    let plan = plan_for(queues)?;
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(queues + 1));
    let mut shards = Vec::new();
    for shard in 0..queues {
        let plan_cpu = plan.shards[shard].cpu;
        let (ns_b, ip, stop, ready) = (pair.b.clone(), pair.ip_b(), stop.clone(), ready.clone());
        shards.push(std::thread::spawn(
            move || -> anyhow::Result<QueueResult> {
                let setup = (|| -> anyhow::Result<std::net::UdpSocket> {
                    enter(&ns_b)?;
                    pin(plan_cpu);
                    let s = std::net::UdpSocket::bind(SocketAddr::from((
                        ip,
                        FIRST_PORT + shard as u16,
                    )))?;
                    super::driver::set_socket_buffers(&s, 8 << 20);
                    s.set_read_timeout(Some(Duration::from_millis(5)))?;
                    Ok(s)
                })();
                ready.wait();
                let sock = setup?;
                let (mut n, mut first, mut last) = (0u64, None::<Instant>, Instant::now());
                let mut bufs = vec![[0u8; 1536]; 64];
                while !stop.load(Ordering::Acquire) {
                    let got = recvmmsg(&sock, &mut bufs);
                    if got > 0 {
                        n += got as u64;
                        first.get_or_insert_with(Instant::now);
                        last = Instant::now();
                    }
                }
                let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
                Ok(QueueResult {
                    queue: shard as u32,
                    shard,
                    plan_cpu,
                    ran_on_cpu: current_cpu(),
                    received_packets: n,
                    parsed_packets: n,
                    received_pps: if secs > 0.0 { n as f64 / secs } else { 0.0 },
                    rx_dropped: 0,
                })
            },
        ));
    }
    ready.wait();
    let sent = blast(
        &pair.a,
        pair.ip_a(),
        pair.ip_b(),
        queues,
        2.min(queues),
        seconds,
    );
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Release);
    let mut per_queue = Vec::new();
    for s in shards {
        per_queue.push(s.join().map_err(|_| anyhow::anyhow!("shard panicked"))??);
    }
    let (sent_packets, send_secs) = sent?;
    Ok(summarise(
        "recvmmsg",
        queues,
        per_queue,
        sent_packets,
        send_secs,
    ))
}

/// One `recvmmsg` call on a blocking socket with a read timeout: the datagrams read.
fn recvmmsg(sock: &std::net::UdpSocket, bufs: &mut [[u8; 1536]]) -> usize {
    use std::os::fd::AsRawFd;
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdr is a valid "no name, no control" header.
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: msgs and the buffers they point at live across the call.
    let n = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as u32,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    usize::try_from(n).unwrap_or(0)
}

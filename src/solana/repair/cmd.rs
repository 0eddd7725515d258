//! `catchup solana repair` and `catchup solana serve-repair`.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use catchup_shred::ed25519_dalek::SigningKey;
use catchup_shred::files::{decode_shred_list, encode_json};
use catchup_shred::ledger::generate_ledger;
use catchup_shred::serve::MemLedger;
use catchup_shred::Shred;
use rand::{Rng, SeedableRng};

use crate::node::opts::GlobalOpts;
use crate::solana::repair::driver::{parse_pubkey, pubkey_to_string};
use crate::solana::repair::server::{serve, Faults};
use crate::solana::repair::{repair, LeaderSchedule, NetPath, PeerSpec, RepairJob, RepairOutcome};

/// Repair the shreds of a slot range from repair peers (newest slots first), verifying
/// every shred (Merkle proof and leader signature).
#[derive(clap::Args, Debug)]
pub struct RepairArgs {
    /// First slot to repair (the slot after the snapshot).
    #[arg(long)]
    pub from_slot: u64,
    /// Last slot to repair (the tip), inclusive.
    #[arg(long)]
    pub to_slot: u64,
    /// Repair peer as ADDR:PORT or PUBKEY@ADDR:PORT (base58 identity; without it the key
    /// is learnt from the peer's ping, which catchup's serve-repair sends).
    #[arg(long = "peer", required = true)]
    pub peers: Vec<PeerSpec>,
    /// Leader identity (base58) whose signature every shred must carry.
    #[arg(long)]
    pub leader: String,
    /// Use AF_XDP on this interface (generic XDP mode); falls back to UDP with the reason
    /// logged when AF_XDP is not available.
    #[arg(long)]
    pub xdp: Option<String>,
    /// First UDP port of the AF_XDP path (shard i uses port + i).
    #[arg(long, default_value_t = 47_000)]
    pub xdp_port: u16,
    /// NIC rx queue of each shard on the AF_XDP path (default: shard i on queue i).
    #[arg(long = "xdp-queue")]
    pub xdp_queues: Vec<u32>,
    /// Local IPv4 address of the UDP path.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: Ipv4Addr,
    /// Number of shards (slots are split among them).
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// A request unanswered after this long is retried.
    #[arg(long, default_value_t = 300)]
    pub request_timeout_ms: u64,
    /// Write the repaired data shreds here (JSON array of byte arrays, slot and index order).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep verified shreds in DIR/repair (one store per shard) and load them at start:
    /// an interrupted repair resumes and requests only what is missing (UDP path).
    #[arg(long, value_name = "DIR")]
    pub datadir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Answer repair requests from shreds (a fixture-format file or a generated ledger).
#[derive(clap::Args, Debug)]
pub struct ServeRepairArgs {
    /// UDP address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Shred files: JSON array of shred byte arrays (gzip allowed) or length-prefixed binary.
    #[arg(long = "shreds")]
    pub shreds: Vec<PathBuf>,
    /// Generate a signed ledger instead, starting at this slot.
    #[arg(long)]
    pub generate_from: Option<u64>,
    /// Number of slots to generate.
    #[arg(long, default_value_t = 16)]
    pub generate_slots: u64,
    /// Data shreds per generated slot.
    #[arg(long, default_value_t = 64)]
    pub shreds_per_slot: usize,
    /// Seed of the generated ledger's leader key (same seed, same ledger).
    #[arg(long, default_value_t = 1)]
    pub leader_seed: u64,
    /// Seed of this server's identity key (random if absent).
    #[arg(long)]
    pub identity_seed: Option<u64>,
    /// This server's identity as a Solana CLI keypair file (the node's gossip identity).
    #[arg(long, value_name = "KEYPAIR", conflicts_with = "identity_seed")]
    pub identity: Option<std::path::PathBuf>,
    /// Fault profile: slow (delayed responses), lossy (30% dropped), wrong (30% corrupted).
    #[arg(long, value_enum)]
    pub profile: Option<Profile>,
    /// Stop after this many seconds (0: run until SIGINT/SIGTERM).
    #[arg(long, default_value_t = 0)]
    pub max_seconds: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Slow,
    Lossy,
    Wrong,
}

fn key_from_seed(seed: u64) -> SigningKey {
    SigningKey::from_bytes(&rand::rngs::StdRng::seed_from_u64(seed).gen())
}

/// The leader key of a ledger generated with `--leader-seed seed`.
pub fn generated_leader(seed: u64) -> SigningKey {
    key_from_seed(seed ^ 0x001e_ade2)
}

pub fn run_repair(a: RepairArgs, _global: &GlobalOpts) -> anyhow::Result<i32> {
    if a.from_slot > a.to_slot {
        bail!(
            "--from-slot {} is after --to-slot {}",
            a.from_slot,
            a.to_slot
        );
    }
    if a.shards == 0 || a.shards > 64 {
        bail!("--shards must be 1..=64");
    }
    let leader = parse_pubkey(&a.leader).map_err(|e| anyhow::anyhow!("--leader: {e}"))?;
    let path = match &a.xdp {
        Some(iface) => NetPath::Xdp {
            iface: iface.clone(),
            queues: a.xdp_queues.clone(),
            port: a.xdp_port,
            bind: a.bind,
        },
        None => NetPath::Udp { bind: a.bind },
    };
    let job = RepairJob {
        from_slot: a.from_slot,
        to_slot: a.to_slot,
        peers: a.peers.clone(),
        leaders: LeaderSchedule::Fixed(leader),
        identity: SigningKey::from_bytes(&rand::thread_rng().gen()),
        shards: a.shards,
        path,
        deadline_ms: a.timeout_secs.saturating_mul(1000),
        request_timeout_ms: a.request_timeout_ms,
        seed: rand::thread_rng().gen(),
        cores: None,
        store_dir: a.datadir.as_ref().map(|d| d.join("repair")),
    };
    let outcome = repair(&job)?;
    if let Some(out) = &a.out {
        let all: Vec<Vec<u8>> = outcome.slots.values().flatten().cloned().collect();
        std::fs::write(out, encode_json(&all))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        println!(
            "repaired {}/{} slots, {} shreds in {} ms ({:.0} shreds/s){}",
            outcome.slots_complete,
            outcome.slots_total,
            outcome.shreds,
            outcome.elapsed_ms,
            outcome.shreds_per_s,
            if outcome.complete {
                ""
            } else {
                " - INCOMPLETE"
            }
        );
        if a.datadir.is_some() {
            println!(
                "  from the data directory: {} slots complete, {} shreds loaded, {} stored shreds dropped (damaged or failing verification, requested again)",
                outcome.slots_loaded, outcome.shreds_loaded, outcome.store_dropped
            );
        }
        for s in &outcome.shards {
            println!(
                "  shard {} via {}{}: {} shreds, {:.0} shreds/s, {} timeouts, {} invalid, {} unsolicited",
                s.shard,
                s.path,
                s.fallback_reason.as_deref().map(|r| format!(" (AF_XDP unavailable: {r})")).unwrap_or_default(),
                s.progress.shreds_received,
                s.shreds_per_s,
                s.progress.timeouts,
                s.progress.invalid,
                s.progress.unsolicited
            );
        }
    }
    Ok(if outcome.complete { 0 } else { 2 })
}

pub fn run_serve(a: ServeRepairArgs, _global: &GlobalOpts) -> anyhow::Result<i32> {
    let mut ledger = MemLedger::new();
    let mut leader = None;
    let (mut parsed, mut rejected) = (0usize, 0usize);
    let mut add = |raw: &[Vec<u8>], ledger: &mut MemLedger| {
        for b in raw {
            match Shred::from_bytes(b) {
                Ok(s) => {
                    ledger.insert(&s);
                    parsed += 1;
                }
                Err(_) => rejected += 1,
            }
        }
    };
    for f in &a.shreds {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let raw = decode_shred_list(&bytes).with_context(|| format!("decoding {}", f.display()))?;
        add(&raw, &mut ledger);
    }
    if let Some(first) = a.generate_from {
        if first == 0
            || a.generate_slots == 0
            || a.generate_slots > 100_000
            || a.shreds_per_slot == 0
            || a.shreds_per_slot > 32_768
        {
            bail!("--generate-from must be > 0, --generate-slots 1..=100000, --shreds-per-slot 1..=32768");
        }
        let key = generated_leader(a.leader_seed);
        leader = Some(pubkey_to_string(&key.verifying_key().to_bytes()));
        let raw = generate_ledger(
            &key,
            first,
            a.generate_slots,
            a.shreds_per_slot,
            a.leader_seed,
        );
        add(&raw, &mut ledger);
    }
    if ledger.is_empty() {
        bail!("no shreds to serve: give --shreds FILE or --generate-from SLOT ({rejected} shreds rejected)");
    }
    let identity = match (&a.identity, a.identity_seed) {
        (Some(path), _) => {
            SigningKey::from_bytes(&crate::solana::gossip::keypair::read_keypair(path)?.to_bytes())
        }
        (None, Some(s)) => key_from_seed(s),
        (None, None) => SigningKey::from_bytes(&rand::thread_rng().gen()),
    };
    let faults = match a.profile {
        None => Faults::default(),
        Some(Profile::Slow) => Faults {
            delay_ms: 40,
            ..Default::default()
        },
        Some(Profile::Lossy) => Faults {
            loss_per_mille: 300,
            ..Default::default()
        },
        Some(Profile::Wrong) => Faults {
            wrong_per_mille: 300,
            ..Default::default()
        },
    };
    // Held from before the address is printed, and served on by the one shard: no other
    // process can share it (nor take it in between).
    let std_sock = crate::node::listen::claim_udp(a.listen, "--listen")?;
    let local = std_sock.local_addr()?;
    let slots: Vec<u64> = ledger.slots().collect();
    let info = serde_json::json!({
        "listen": local.to_string(),
        "identity": pubkey_to_string(&identity.verifying_key().to_bytes()),
        "leader": leader,
        "first_slot": slots.first(),
        "last_slot": slots.last(),
        "shreds": parsed,
        "rejected": rejected,
        "profile": a.profile.map(|p| format!("{p:?}").to_lowercase()),
    });
    println!("{info}");
    std::io::stdout().flush()?;
    let rt = catchup_shards::RuntimeConfig {
        name: "serve-repair".into(),
        ..catchup_shards::RuntimeConfig::new(1)
    };
    let max = (a.max_seconds > 0).then(|| Duration::from_secs(a.max_seconds));
    let start = Instant::now();
    let listen = local;
    let held = std::sync::Arc::new(std::sync::Mutex::new(Some(std_sock)));
    let results = catchup_shards::run(&rt, move |shard: catchup_shards::Shard<()>| {
        let ledger = ledger.clone();
        let identity = identity.clone();
        let held = held.clone();
        async move {
            let std_sock = held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .ok_or_else(|| anyhow::anyhow!("the socket on {listen} was already taken"))?;
            let sock = glommio::net::UdpSocket::from(socket2::Socket::from(std_sock));
            let stop = || shard.shutting_down() || max.is_some_and(|m| start.elapsed() >= m);
            let stats = serve(sock, &ledger, identity, faults, 7, stop).await?;
            Ok::<_, anyhow::Error>(stats)
        }
    })?;
    for r in results {
        let s = r?;
        eprintln!(
            "serve-repair: {} requests: {} shreds served, {} not found, {} invalid; {} pings sent, {} answered, {} peers awaiting a pong",
            s.requests, s.served, s.not_found, s.invalid, s.pings_sent, s.pongs_ok, s.awaiting_pong
        );
    }
    Ok(0)
}

/// Repair throughput per shard over AF_XDP and over UDP on the same veth pair in one run,
/// plus the packets/s of the AF_XDP receive path alone. Needs root (network namespaces).
#[derive(clap::Args, Debug)]
pub struct BenchRepairArgs {
    /// Slots in the served ledger (all repaired in each run).
    #[arg(long, default_value_t = 64)]
    pub slots: u64,
    /// Data shreds per slot.
    #[arg(long, default_value_t = 64)]
    pub shreds_per_slot: usize,
    /// Repair servers (one process each, the same ledger under their own identities), so
    /// that the client, not one server's check of each request's signature, is the bound.
    #[arg(long, default_value_t = 3)]
    pub servers: usize,
    /// Shards of the UDP run (the veth has one queue, so the AF_XDP run has one shard).
    #[arg(long, default_value_t = 1)]
    pub udp_shards: usize,
    /// Seconds of each receive-only measurement.
    #[arg(long, default_value_t = 2)]
    pub rx_seconds: u64,
    /// Rx/tx queues of the second veth pair, for the per-queue receive measurement: one
    /// AF_XDP socket and UMEM per queue, each owned by the shard the tuning plan deals the
    /// queue to, beside a `recvmmsg` UDP socket per shard on the same veth and traffic.
    #[arg(long, default_value_t = 4)]
    pub queues: u32,
    /// Only the receive measurements (no repair runs).
    #[arg(long)]
    pub rx_only: bool,
    /// XDP mode of the per-queue measurement: `native` (the veth driver's own XDP, one
    /// rx queue per tx queue) or `generic` (skb mode; on a veth it leaves the last queue
    /// empty).
    #[arg(long, default_value = "native", value_parser = ["native", "generic"])]
    pub xdp_mode: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize, Debug, Default)]
struct RxResult {
    seconds: f64,
    sent_packets: u64,
    received_packets: u64,
    received_pps: f64,
    sent_pps: f64,
}

fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        crate::solana::repair::netns::enter(&ns)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
}

fn rx_only(
    pair: &crate::solana::repair::netns::VethPair,
    seconds: u64,
) -> anyhow::Result<RxResult> {
    use catchup_io::xdp::{iface_info, parse_udp_frame, XdpProgram, XskConfig, XskSocket};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let port = 47_300u16;
    let ready = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (r2, s2) = (ready.clone(), stop.clone());
    let iface = pair.veth_b.clone();
    let rx = std::thread::spawn({
        let ns = pair.b.clone();
        move || -> anyhow::Result<(u64, f64)> {
            crate::solana::repair::netns::enter(&ns)?;
            let info = iface_info(&iface)?;
            let mut prog = XdpProgram::attach(&iface, port, 1, true)?;
            let mut sock = XskSocket::new(info.index, 0, XskConfig::default())?;
            prog.register(0, &sock)?;
            r2.store(true, Ordering::Release);
            let mut n = 0u64;
            let mut first: Option<Instant> = None;
            let mut last = Instant::now();
            while !s2.load(Ordering::Acquire) {
                if sock.wait_rx(5)? {
                    let got = sock.recv(256, |f| {
                        if parse_udp_frame(f).is_some_and(|v| v.dst_port == port) {
                            n += 1;
                        }
                    });
                    if got > 0 {
                        first.get_or_insert_with(Instant::now);
                        last = Instant::now();
                    }
                }
            }
            let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
            Ok((n, secs))
        }
    });
    let start = Instant::now();
    while !ready.load(Ordering::Acquire) {
        if start.elapsed() > Duration::from_secs(10) || rx.is_finished() {
            stop.store(true, Ordering::Release);
            return match rx.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(anyhow::anyhow!("AF_XDP receiver did not start")),
            };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let to = SocketAddr::from((pair.ip_b(), port));
    let from = pair.ip_a();
    let s3 = sent.clone();
    let blast = in_netns(&pair.a, move || {
        let s = std::net::UdpSocket::bind((from, 0))?;
        crate::solana::repair::driver::set_socket_buffers(&s, 8 << 20);
        let payload = vec![0x5au8; 1207];
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < Duration::from_secs(seconds) {
            for _ in 0..64 {
                if s.send_to(&payload, to).is_ok() {
                    n += 1;
                }
            }
        }
        s3.store(n, Ordering::Release);
        Ok(t.elapsed().as_secs_f64())
    });
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Release);
    let send_secs = blast?;
    let (received, rx_secs) = rx
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    let sent = sent.load(Ordering::Acquire);
    Ok(RxResult {
        seconds: rx_secs,
        sent_packets: sent,
        received_packets: received,
        received_pps: received as f64 / rx_secs.max(1e-9),
        sent_pps: sent as f64 / send_secs.max(1e-9),
    })
}

pub fn run_bench(a: BenchRepairArgs, _global: &GlobalOpts) -> anyhow::Result<i32> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("catchup bench repair needs root: it creates network namespaces and a veth pair");
    }
    if a.slots == 0
        || a.slots > 10_000
        || a.shreds_per_slot == 0
        || a.shreds_per_slot > 32_768
        || a.udp_shards == 0
        || !(1..=16).contains(&a.servers)
    {
        bail!(
            "--slots 1..=10000, --shreds-per-slot 1..=32768, --udp-shards >= 1, --servers 1..=16"
        );
    }
    if !(1..=16).contains(&a.queues) {
        bail!("--queues 1..=16");
    }
    let per_queue = per_queue_rx(
        a.queues as usize,
        a.rx_seconds.clamp(1, 60) as f64,
        a.xdp_mode == "generic",
    );
    if a.rx_only {
        let report = serde_json::json!({ "per_queue": per_queue_value(&per_queue)? });
        if a.json {
            println!("{report}");
        } else {
            print_per_queue(&per_queue);
        }
        return Ok(if per_queue.is_ok() { 0 } else { 1 });
    }
    let pair = crate::solana::repair::netns::VethPair::create("b", 250)?;
    let exe = std::env::current_exe()?;
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // Every server generates the same ledger (same leader seed) under its own identity.
    let mut servers = Vec::new();
    let mut peers = Vec::new();
    let mut leader = None;
    for i in 0..a.servers {
        let port = 8301 + i as u16;
        let listen = format!("{}:{port}", pair.ip_a());
        let mut server = std::process::Command::new("ip")
            .args(["netns", "exec", &pair.a])
            .arg(&exe)
            .args([
                "solana",
                "serve-repair",
                "--listen",
                &listen,
                "--generate-from",
                "1000",
            ])
            .args([
                "--generate-slots",
                &a.slots.to_string(),
                "--shreds-per-slot",
                &a.shreds_per_slot.to_string(),
                "--max-seconds",
                "600",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting serve-repair")?;
        let mut line = String::new();
        let stdout = server.stdout.take().context("server stdout")?;
        servers.push(Kill(server));
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        let info: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("serve-repair said {line:?}"))?;
        let identity = parse_pubkey(info["identity"].as_str().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!(e))?;
        leader = Some(
            parse_pubkey(info["leader"].as_str().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!(e))?,
        );
        peers.push(PeerSpec {
            addr: std::net::SocketAddrV4::new(pair.ip_a(), port),
            key: Some(identity),
        });
    }
    let leader = leader.context("no repair server")?;
    let cores = crate::solana::repair::driver::client_cores();
    let job = |path: NetPath, shards: usize| RepairJob {
        from_slot: 1000,
        to_slot: 1000 + a.slots - 1,
        peers: peers.clone(),
        leaders: LeaderSchedule::Fixed(leader),
        identity: SigningKey::from_bytes(&rand::thread_rng().gen()),
        shards,
        path,
        deadline_ms: 120_000,
        request_timeout_ms: 200,
        seed: 1,
        cores: cores.clone(),
        store_dir: None,
    };
    let xdp_job = job(
        NetPath::Xdp {
            iface: pair.veth_b.clone(),
            queues: vec![0],
            port: 47_200,
            bind: pair.ip_b(),
        },
        1,
    );
    let udp_job = job(NetPath::Udp { bind: pair.ip_b() }, a.udp_shards);
    let server_pids: Vec<u32> = servers.iter().map(|s| s.0.id()).collect();
    let (xdp, xdp_cpu) = cpu_split(&server_pids, || {
        in_netns(&pair.b, move || Ok(repair(&xdp_job)?))
    })?;
    let (udp, udp_cpu) = cpu_split(&server_pids, || {
        in_netns(&pair.b, move || Ok(repair(&udp_job)?))
    })?;
    drop(servers);
    let rx = rx_only(&pair, a.rx_seconds.clamp(1, 60));
    let rx_json = match &rx {
        Ok(r) => serde_json::to_value(r)?,
        Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
    };
    let per_queue_json = per_queue_value(&per_queue)?;
    let xdp_cpu = xdp_cpu.finish(&xdp, 1);
    let udp_cpu = udp_cpu.finish(&udp, a.udp_shards);
    let report = serde_json::json!({
        "af_xdp": xdp,
        "af_xdp_cpu": xdp_cpu,
        "udp": udp,
        "udp_cpu": udp_cpu,
        "af_xdp_rx_only": rx_json,
        "per_queue": per_queue_json,
    });
    if a.json {
        println!("{report}");
    } else {
        for (name, o, c) in [("AF_XDP", &xdp, &xdp_cpu), ("UDP", &udp, &udp_cpu)] {
            println!(
                "{name}: {}/{} slots, {} shreds in {} ms, {:.0} shreds/s, {:.1} slots/s",
                o.slots_complete,
                o.slots_total,
                o.shreds,
                o.elapsed_ms,
                o.shreds_per_s,
                o.slots_per_s
            );
            println!(
                "  CPU: client {:.1} µs/shred, servers {:.1} µs/request; client-bound {:.1} slots/s on its {} shard(s)",
                c.client_us_per_shred,
                c.servers_us_per_request,
                c.client_bound_slots_per_s,
                c.shards
            );
            for s in &o.shards {
                println!(
                    "  shard {} via {}{}: {:.0} shreds/s ({} shreds in {} ms)",
                    s.shard,
                    s.path,
                    s.fallback_reason
                        .as_deref()
                        .map(|r| format!(" (fallback: {r})"))
                        .unwrap_or_default(),
                    s.shreds_per_s,
                    s.progress.shreds_received,
                    s.elapsed_ms
                );
            }
        }
        match &rx {
            Ok(r) => println!(
                "AF_XDP rx path alone: {:.0} packets/s received ({} of {} sent, sender {:.0} packets/s)",
                r.received_pps, r.received_packets, r.sent_packets, r.sent_pps
            ),
            Err(e) => println!("AF_XDP rx path alone: failed: {e:#}"),
        }
        print_per_queue(&per_queue);
    }
    Ok(
        if xdp.complete && udp.complete && rx.is_ok() && per_queue.is_ok() {
            0
        } else {
            1
        },
    )
}

/// CPU seconds (user + system) of a process from `/proc/PID/stat`.
fn proc_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces: fields are counted after its closing ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

/// Where a repair run's CPU went: the client (this process: shards, signing, shred
/// verification, stores) and the repair servers (checking each request's signature,
/// answering). On a machine whose cores also run the servers, `client_bound_slots_per_s`
/// is what the client's own CPU allows: the slots it completed per CPU second of its
/// work, times its shards (one core each).
#[derive(serde::Serialize, Debug, Default)]
struct CpuSplit {
    client_cpu_s: f64,
    servers_cpu_s: f64,
    shards: usize,
    requests: u64,
    client_us_per_shred: f64,
    servers_us_per_request: f64,
    client_bound_slots_per_s: f64,
}

struct CpuStart {
    client: f64,
    servers: f64,
}

impl CpuStart {
    fn finish(&self, o: &RepairOutcome, shards: usize) -> CpuSplit {
        let requests: u64 = o.shards.iter().map(|s| s.progress.requests_sent).sum();
        let per = |cpu: f64, n: u64| if n == 0 { 0.0 } else { cpu * 1e6 / n as f64 };
        CpuSplit {
            client_cpu_s: self.client,
            servers_cpu_s: self.servers,
            shards,
            requests,
            client_us_per_shred: per(self.client, o.shreds),
            servers_us_per_request: per(self.servers, requests),
            client_bound_slots_per_s: if self.client > 0.0 {
                o.slots_complete as f64 / self.client * shards as f64
            } else {
                0.0
            },
        }
    }
}

/// Run `f` and measure this process's and the servers' CPU seconds across it.
fn cpu_split<T>(
    servers: &[u32],
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, CpuStart)> {
    let servers_cpu = || servers.iter().map(|p| proc_cpu_s(*p)).sum::<f64>();
    let (c0, s0) = (crate::node::cpu::self_cpu_s(), servers_cpu());
    let out = f()?;
    Ok((
        out,
        CpuStart {
            client: crate::node::cpu::self_cpu_s() - c0,
            servers: servers_cpu() - s0,
        },
    ))
}

/// Both receive paths on one veth pair with `queues` queues, AF_XDP first.
#[derive(serde::Serialize, Debug)]
pub struct PerQueueRx {
    pub af_xdp: super::xdp_queues::MultiRx,
    pub recvmmsg: super::xdp_queues::MultiRx,
    /// AF_XDP packets/s over the recvmmsg baseline's, same veth, traffic and shards.
    pub af_xdp_over_recvmmsg: f64,
}

fn per_queue_rx(queues: usize, seconds: f64, skb_mode: bool) -> anyhow::Result<PerQueueRx> {
    let pair = crate::solana::repair::netns::VethPair::create_with_queues("q", 251, queues as u32)?;
    let af_xdp = super::xdp_queues::af_xdp_per_queue(&pair, queues, seconds, skb_mode)?;
    let recvmmsg = super::xdp_queues::recvmmsg_per_shard(&pair, queues, seconds)?;
    let ratio = af_xdp.received_pps / recvmmsg.received_pps.max(1e-9);
    Ok(PerQueueRx {
        af_xdp,
        recvmmsg,
        af_xdp_over_recvmmsg: ratio,
    })
}

fn print_per_queue(r: &anyhow::Result<PerQueueRx>) {
    match r {
        Ok(r) => {
            for m in [&r.af_xdp, &r.recvmmsg] {
                println!(
                    "{} on {} queues: {:.0} packets/s received ({} of {} sent)",
                    m.path, m.queues, m.received_pps, m.received_packets, m.sent_packets
                );
                for q in &m.per_queue {
                    println!(
                        "  queue {} (shard {}, cpu {}): {} packets, {:.0} packets/s",
                        q.queue, q.shard, q.plan_cpu, q.parsed_packets, q.received_pps
                    );
                }
            }
            println!("AF_XDP / recvmmsg: {:.2}", r.af_xdp_over_recvmmsg);
        }
        Err(e) => println!("per-queue receive: failed: {e:#}"),
    }
}

fn per_queue_value(r: &anyhow::Result<PerQueueRx>) -> anyhow::Result<serde_json::Value> {
    Ok(match r {
        Ok(r) => serde_json::to_value(r)?,
        Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Busy work for this thread until the process has used `s` more CPU seconds.
    fn burn(s: f64) {
        let t0 = crate::node::cpu::self_cpu_s();
        let mut x = 1u64;
        while crate::node::cpu::self_cpu_s() - t0 < s {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
        }
    }

    #[test]
    fn cpu_split_counts_this_process_and_reads_a_process_stat() {
        let me = std::process::id();
        let (_, c) = cpu_split(&[me], || {
            burn(0.2);
            Ok(())
        })
        .unwrap();
        // This process is both the client and the "server" here: both saw the work.
        assert!(c.client >= 0.2, "{}", c.client);
        assert!(c.servers >= 0.1, "{}", c.servers);
        let o = RepairOutcome {
            slots_complete: 4,
            shreds: 400,
            ..Default::default()
        };
        let split = c.finish(&o, 2);
        assert_eq!(split.requests, 0);
        assert_eq!(split.servers_us_per_request, 0.0);
        assert!((split.client_us_per_shred - c.client * 1e6 / 400.0).abs() < 1e-6);
        assert!((split.client_bound_slots_per_s - 4.0 / c.client * 2.0).abs() < 1e-9);
        // A process that is gone counts nothing.
        assert_eq!(proc_cpu_s(u32::MAX), 0.0);
    }
}

//! `catchup solana keygen` and `catchup solana gossip-node`.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::keypair::{read_keypair, write_new_keypair};
use super::node::{bind, snapshots_in_dir, start, NodeConfig, Profile};

/// Resolve `HOST:PORT` to one IPv4 socket address (gossip is IPv4).
pub fn parse_host_port(text: &str) -> Result<SocketAddr, String> {
    let addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not HOST:PORT ({e})"))?;
    let mut first = None;
    for a in addrs {
        if a.is_ipv4() {
            return Ok(a);
        }
        first.get_or_insert(a);
    }
    first.ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// Write a new Solana CLI keypair (a JSON array of 64 numbers) and print its public key.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// The keypair file to create (it must not exist; written readable by its owner only).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run_keygen(a: KeygenArgs) -> anyhow::Result<i32> {
    let (_, pubkey) = write_new_keypair(&a.out)?;
    println!("{pubkey}");
    Ok(0)
}

/// Run a Solana gossip node over UDP: join through --entrypoint, answer pings and pull
/// requests, pull with bloom filters, keep a bounded CRDS table (values from the future or
/// of another shred version are dropped), and advertise a contact info (gossip, RPC,
/// serve-repair addresses) and the snapshot hashes of the archives in a directory. Runs
/// until SIGINT/SIGTERM (or --max-seconds); progress on /status (with --admin) and a line
/// every --progress-interval-s.
#[derive(clap::Args, Debug)]
pub struct GossipNodeArgs {
    /// The node's identity: a Solana CLI keypair file (see `catchup solana keygen`).
    #[arg(long, value_name = "KEYPAIR")]
    pub identity: PathBuf,
    /// UDP address to gossip on (port 0 picks a free port; the bound address is printed).
    /// With an unspecified IP the advertised one is the local address towards the first
    /// entrypoint.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// A gossip node to join through (HOST:PORT); repeatable. Without any, this node is an
    /// entrypoint that others join.
    #[arg(long = "entrypoint", value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub entrypoints: Vec<SocketAddr>,
    /// Advertise the snapshot archives in DIR (snapshot-SLOT-HASH.tar.zst and
    /// incremental-snapshot-BASE-SLOT-HASH.tar.zst): the newest full and the incrementals
    /// on it. Serve DIR at --rpc (e.g. `catchup solana snapshot serve DIR`).
    #[arg(long, value_name = "DIR", requires = "rpc")]
    pub advertise_snapshots: Option<PathBuf>,
    /// The RPC address (HOST:PORT) to advertise, where the snapshots are served.
    #[arg(long, value_name = "ADDR", value_parser = parse_host_port)]
    pub rpc: Option<SocketAddr>,
    /// The serve-repair address (HOST:PORT) to advertise.
    #[arg(long, value_name = "ADDR", value_parser = parse_host_port)]
    pub serve_repair: Option<SocketAddr>,
    /// Behaviour: honest; forging (also pushes snapshot hashes in other nodes' names,
    /// signed with its own key); stale (advertises its oldest full snapshot, no
    /// incrementals).
    #[arg(long, value_enum, default_value_t = Profile::Honest)]
    pub profile: Profile,
    /// The cluster's shred version; 0 accepts nodes of any.
    #[arg(long, default_value_t = 0)]
    pub shred_version: u16,
    /// CRDS table bound (values kept at most).
    #[arg(long, default_value_t = 8192)]
    pub max_entries: usize,
    /// Stop after this many seconds (0: run until a signal).
    #[arg(long, default_value_t = 0)]
    pub max_seconds: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10)]
    pub progress_interval_s: u64,
    /// Print the start line, progress and the final view as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run_gossip_node(a: GossipNodeArgs) -> anyhow::Result<i32> {
    let key = read_keypair(&a.identity)?;
    let snapshots = match &a.advertise_snapshots {
        None => None,
        Some(dir) => {
            let s = snapshots_in_dir(dir, a.profile)?;
            if s.is_none() {
                eprintln!(
                    "warning: --advertise-snapshots {}: no snapshot-SLOT-HASH.tar.zst archive there; advertising none",
                    dir.display()
                );
            }
            s
        }
    };
    let (socket, advertise) = bind(a.listen, &a.entrypoints, "--listen")?;
    let handle = start(NodeConfig {
        key,
        socket,
        advertise,
        entrypoints: a.entrypoints.clone(),
        rpc: a.rpc,
        serve_repair: a.serve_repair,
        shred_version: a.shred_version,
        snapshots: snapshots.clone(),
        snapshots_dir: a.advertise_snapshots.clone(),
        profile: a.profile,
        max_entries: a.max_entries,
        status_section: Some("gossip".into()),
        pull_interval_ms: 500,
    })?;
    let start_line = serde_json::json!({
        "pubkey": handle.pubkey.to_string(),
        "gossip": handle.advertise.to_string(),
        "listen": handle.local_addr.to_string(),
        "profile": a.profile,
        "full_snapshot": snapshots.as_ref().map(|s| format!("{}:{}", s.full.0, s.full.1)),
        "incremental_snapshots": snapshots.as_ref().map(|s| s.incremental.len()).unwrap_or(0),
    });
    if a.json {
        println!("{start_line}");
    } else {
        println!(
            "gossip node {} listening on {} (advertised {}), profile {:?}",
            handle.pubkey, handle.local_addr, handle.advertise, a.profile
        );
    }
    std::io::stdout().flush()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let started = Instant::now();
    let every = Duration::from_secs(a.progress_interval_s.max(1));
    let mut next_line = started + every;
    while !stop.load(Ordering::Relaxed) && handle.is_running() {
        if a.max_seconds > 0 && started.elapsed() >= Duration::from_secs(a.max_seconds) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() >= next_line {
            next_line += every;
            let v = handle.view();
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({ "progress": {
                        "peers": v.peers.len(), "snapshot_hashes": v.snapshot_hashes.len(),
                        "table_values": v.table_values, "packets_received": v.packets_received,
                        "packets_rejected": v.packets_rejected, "pongs_verified": v.pongs_verified,
                        "values_rejected": v.values_rejected,
                    }})
                );
            } else {
                println!(
                    "gossip: {} peers, {} snapshot adverts, {} values, {} packets in ({} rejected), {} out",
                    v.peers.len(),
                    v.snapshot_hashes.len(),
                    v.table_values,
                    v.packets_received,
                    v.packets_rejected,
                    v.packets_sent
                );
            }
            let _ = std::io::stdout().flush();
        }
    }
    let running = handle.is_running();
    let view = handle.view();
    handle.stop();
    if a.json {
        println!("{}", serde_json::json!({ "final": view }));
    } else {
        println!(
            "gossip node stopped: {} peers, {} snapshot adverts, {} packets rejected",
            view.peers.len(),
            view.snapshot_hashes.len(),
            view.packets_rejected
        );
    }
    if !running && !stop.load(Ordering::Relaxed) && a.max_seconds == 0 {
        anyhow::bail!("the gossip thread stopped unexpectedly");
    }
    Ok(0)
}

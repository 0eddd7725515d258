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

use super::GlobalOpts;
use crate::repair::driver::{parse_pubkey, pubkey_to_string};
use crate::repair::server::{serve, Faults};
use crate::repair::{repair, LeaderSchedule, NetPath, PeerSpec, RepairJob};

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
    key_from_seed(seed ^ 0x1ead_e2)
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
    let identity = match a.identity_seed {
        Some(s) => key_from_seed(s),
        None => SigningKey::from_bytes(&rand::thread_rng().gen()),
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
    let std_sock =
        std::net::UdpSocket::bind(a.listen).with_context(|| format!("binding {}", a.listen))?;
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
    drop(std_sock);
    let rt = catchup_shards::RuntimeConfig {
        name: "serve-repair".into(),
        ..catchup_shards::RuntimeConfig::new(1)
    };
    let max = (a.max_seconds > 0).then(|| Duration::from_secs(a.max_seconds));
    let start = Instant::now();
    let listen = local;
    let results = catchup_shards::run(&rt, move |shard: catchup_shards::Shard<()>| {
        let ledger = ledger.clone();
        let identity = identity.clone();
        async move {
            let sock = glommio::net::UdpSocket::bind(listen)
                .map_err(|e| anyhow::anyhow!("binding {listen}: {e}"))?;
            let stop = || shard.shutting_down() || max.is_some_and(|m| start.elapsed() >= m);
            let stats = serve(sock, &ledger, identity, faults, 7, stop).await?;
            Ok::<_, anyhow::Error>(stats)
        }
    })?;
    for r in results {
        let stats = r?;
        eprintln!("serve-repair: {stats:?}");
    }
    Ok(0)
}

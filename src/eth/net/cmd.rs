//! `catchup eth serve` and `catchup eth sync`: the node on the devp2p wire.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;

use crate::eth::net::chain::{Profile, RawChain};
use crate::eth::net::chainspec::{chain_status, genesis_status, ChainSpec};
use crate::eth::net::engine_serve::EngineResponder;
use crate::eth::net::live::{BlockProducer, LiveChain, LiveResponder};
use crate::eth::net::node_key;
use crate::eth::net::server::{resolve_listen, ServeConfig};
use crate::eth::net::sync_net::{NetSyncConfig, NetSyncReport};
use crate::eth::net::sync_sharded::{run_sync_sharded_with, SyncExtras};
use crate::eth::net::{LocalNode, NetConfig};
use crate::eth::serve::ServingPeer;
use crate::eth::sync::chain::{chain_from_rlp_file, StateData};
use crate::eth::sync::config::{SyncConfig, SyncMode};
use catchup_devp2p::enode::Enode;
use catchup_devp2p::secp256k1::SecretKey;

use crate::node::opts::GlobalOpts;

/// Serve a chain (and its state) to other nodes over RLPx: eth/66–70 (headers, bodies,
/// receipts when known, node data) and snap/1, on every shard of the listen address.
/// Prints this node's enode URL on stdout, then runs until SIGINT/SIGTERM.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Blocks after genesis, RLP back to back (the devnet's chain.rlp).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present_any = ["era1", "generate_accounts", "datadir"],
        conflicts_with_all = ["era1", "generate_accounts"]
    )]
    pub chain: Option<PathBuf>,
    /// Serve a generated state of this many accounts (with storage tries and code) and a
    /// generated chain over it (`--generate-blocks`, `--seed`), on a chain without forks
    /// whose chain id is `--network-id`. `--json` prints its genesis hash for `eth sync
    /// --genesis-hash`.
    #[arg(long, value_name = "N", conflicts_with_all = ["era1", "state", "genesis"])]
    pub generate_accounts: Option<u64>,
    /// Blocks after genesis of the generated chain.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub generate_blocks: u64,
    /// Storage slots of the one large storage trie of the generated state.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub generate_big_storage_slots: u64,
    /// Seed of the generated chain and state.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// era1 archives to serve (consecutive), with their receipts.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub era1: Vec<PathBuf>,
    /// geth genesis file: chain id, fork schedule (fork id), genesis block. Required with
    /// --chain; with --era1 it may be replaced by --network-id and --genesis-hash.
    #[arg(long, value_name = "FILE")]
    pub genesis: Option<PathBuf>,
    /// Network id announced in Status (with --era1 or --datadir and no --genesis), and the
    /// chain id of a generated chain (--generate-accounts).
    #[arg(long, default_value_t = 1)]
    pub network_id: u64,
    /// Genesis hash of a chain without forks, announced in Status: with --era1 and no
    /// --genesis (when the archives do not start at block 0), or with --datadir and no
    /// --genesis (a chain synced from `eth serve --generate-accounts`).
    #[arg(long, value_name = "HASH")]
    pub genesis_hash: Option<String>,
    /// geth state dump of the head state; without it state requests get empty answers.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Address to listen on (every shard binds it with SO_REUSEPORT; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:30303", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Data directory holding the node key (`nodekey`, created when missing). Without it
    /// a fresh key is used for this run only. Without --chain or --era1, what an
    /// `eth sync` stored there is served (needs --genesis, or --genesis-hash and
    /// --network-id for a chain without forks): headers, bodies, receipts and
    /// state read from the stores on demand. The first start reads every header once to
    /// build a by-hash index of 16 bytes a block and keeps it in DIR/chain-index.bin;
    /// later starts map that file (checked against the stored head) instead.
    #[arg(long, value_name = "DIR")]
    pub datadir: Option<PathBuf>,
    /// Shards (executors) accepting peers.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Peers served at once per shard; more are told TooManyPeers.
    #[arg(long, default_value_t = 50)]
    pub max_peers: usize,
    /// Fault profile, for tests and local devnets.
    #[arg(long, value_enum, default_value_t = Profile::Honest)]
    pub profile: Profile,
    /// Delay of every answer under `--profile slow`.
    #[arg(long, default_value_t = 300)]
    pub slow_delay_ms: u64,
    /// Deadline of the RLPx + Hello handshake.
    #[arg(long, default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,
    /// A peer that sends nothing for this long is dropped.
    #[arg(long, default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Print JSON lines instead of text (with --grow-every-ms, one line per new head).
    #[arg(long)]
    pub json: bool,
    /// Make the generated chain (--generate-accounts) live: append a generated block every
    /// MS milliseconds (transfers, new accounts, storage writes and deletions, contract
    /// creations, with transactions and receipts). eth/69+ peers are sent BlockRangeUpdate
    /// as the head moves.
    #[arg(long, value_name = "MS", requires = "generate_accounts")]
    pub grow_every_ms: Option<u64>,
    /// States kept for a live chain: those of the last N blocks, as geth keeps 128. State
    /// requests (snap ranges, trie nodes, node data) for an older root get empty answers.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub state_history: usize,
    /// Protocols offered, comma separated (e.g. `eth/69,eth/70,snap/1` as geth 1.17);
    /// default eth/66–70 and snap/1.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub protocols: Vec<String>,
    /// A live chain sends eth/69+ peers a BlockRangeUpdate each time its head moved this
    /// many blocks (geth sends one every 32).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub block_range_every: u64,
    /// Receipts bytes per eth/70 Receipts answer; a block's receipts past it continue in
    /// the next answer (EIP-7975).
    #[arg(long, value_name = "BYTES")]
    pub receipts_response_bytes: Option<usize>,
    #[command(flatten)]
    pub disc: ServeDiscoveryArgs,
}

/// Node discovery of a serving node: answered on the UDP port of `--listen`.
#[derive(Args, Debug, Clone)]
pub struct ServeDiscoveryArgs {
    /// Answer node discovery on UDP at the --listen address: v4, v5 or v4,v5 (default:
    /// none). The node's record (ENR, with its `eth` fork id) is printed after its enode.
    #[arg(long, value_name = "LIST")]
    pub discovery: Option<String>,
    /// Nodes to announce ourselves to (enode://… or enr:-…, comma-separated or repeated).
    #[arg(long, value_name = "ENODE|ENR")]
    pub bootnodes: Vec<String>,
    /// How the advertised address is found: none (the --listen IP) or extip:IP.
    #[arg(long, value_name = "none|extip:IP")]
    pub nat: Option<String>,
    /// The IP other nodes reach us at, advertised in discovery (same as --nat extip:IP).
    #[arg(long, value_name = "IP")]
    pub ext_ip: Option<std::net::IpAddr>,
}

/// Finding peers on the network for `eth sync`.
#[derive(Args, Debug, Clone)]
pub struct SyncDiscoveryArgs {
    /// Bootstrap nodes for discovery (enode://… for discv4, enr:-… for discv5 and discv4;
    /// comma-separated or repeated). Without it and without --peer, the built-in bootnodes
    /// of mainnet, sepolia and holesky are used when the genesis is one of them.
    #[arg(long, value_name = "ENODE|ENR")]
    pub bootnodes: Vec<String>,
    /// Discovery mechanisms: v4, v5, dns, comma-separated, or none (default: v4,v5 when
    /// there are bootnodes, dns when there is a --dns-list, none when only --peer is given).
    #[arg(long, value_name = "LIST")]
    pub discovery: Option<String>,
    /// EIP-1459 node lists to walk (enrtree://KEY@DOMAIN, comma-separated or repeated);
    /// mainnet, sepolia and holesky have built-in ones used like the built-in bootnodes.
    #[arg(long, value_name = "ENRTREE")]
    pub dns_list: Vec<String>,
    /// DNS server asked for the lists' TXT records (default: the first nameserver of
    /// /etc/resolv.conf).
    #[arg(long, value_name = "IP:PORT")]
    pub dns_server: Option<SocketAddr>,
    /// Discovered peers kept connected, over all shards (each shard dials its share);
    /// --peer entries come on top and are always kept.
    #[arg(long, default_value_t = 25, value_name = "N")]
    pub max_peers: usize,
    /// Connected peers (given and discovered) the pivot vote waits for, so that the pivot
    /// is agreed among many peers rather than the first few found (as geth waits for 5).
    /// Default: 5 with discovery, 0 (no wait) with only --peer.
    #[arg(long, value_name = "N")]
    pub min_peers: Option<usize>,
    /// The longest wait for --min-peers, from the start; then the vote goes ahead with the
    /// peers connected by then.
    #[arg(long, default_value_t = 10, value_name = "S")]
    pub min_peers_wait_s: u64,
    /// UDP address discovery binds (port 0 picks one).
    #[arg(long, default_value = "0.0.0.0:30303", value_name = "ADDR")]
    pub discovery_addr: SocketAddr,
    /// How the advertised address is found: none (the --discovery-addr IP) or extip:IP.
    #[arg(long, value_name = "none|extip:IP")]
    pub nat: Option<String>,
    /// The IP other nodes reach us at, advertised in discovery (same as --nat extip:IP).
    #[arg(long, value_name = "IP")]
    pub ext_ip: Option<std::net::IpAddr>,
}

/// The capabilities of `--protocols` (`name/version`, known versions only).
pub fn parse_protocols(list: &[String]) -> anyhow::Result<Vec<catchup_devp2p::p2p::Capability>> {
    let mut out = Vec::new();
    for p in list.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let (name, version) = p
            .split_once('/')
            .and_then(|(n, v)| Some((n, v.parse::<u64>().ok()?)))
            .with_context(|| format!("--protocols: `{p}` is not NAME/VERSION (e.g. eth/69)"))?;
        if catchup_devp2p::p2p::protocol_length(name, version).is_none() {
            bail!("--protocols: {p} is not spoken here (eth/66 to eth/70, snap/1)");
        }
        out.push(catchup_devp2p::p2p::Capability::new(name, version));
    }
    if !out.iter().any(|c| c.name == "eth") {
        bail!("--protocols must name an eth version (e.g. eth/69,eth/70,snap/1)");
    }
    Ok(out)
}

/// Sync a chain and its state from peers over RLPx with the fast or snap engines, storing
/// verified data in --datadir and resuming from it when started again; prints the final
/// state root and head, what was resumed from disk and what was fetched, and requests per
/// peer. A progress line per shard on stderr (every --progress-every-ms), a bar on a
/// terminal. Exits 1 unless the sync finished (and matched `--expect-state-root` when given).
#[derive(Args, Debug, Clone)]
pub struct SyncArgs {
    /// A static peer (repeatable); always dialed and kept. Without it, peers are found by
    /// discovery (--bootnodes).
    #[arg(long = "peer", value_name = "ENODE")]
    pub peers: Vec<String>,
    #[command(flatten)]
    pub disc: SyncDiscoveryArgs,
    /// geth genesis file of the chain to sync.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "genesis_hash",
        conflicts_with = "genesis_hash"
    )]
    pub genesis: Option<PathBuf>,
    /// Genesis hash of a chain without forks (e.g. one served by `eth serve
    /// --generate-accounts`), instead of --genesis.
    #[arg(long, value_name = "HASH")]
    pub genesis_hash: Option<String>,
    /// Network id (chain id) of the chain given by --genesis-hash.
    #[arg(long, default_value_t = 1, requires = "genesis_hash")]
    pub network_id: u64,
    /// Data directory: node key, one verified store per shard (`shard-<N>/`), the final
    /// report (`sync-report.json`). Locked while the sync runs; a sync started again over
    /// it (after a crash, SIGKILL or an interrupt) resumes from what is stored there and
    /// fetches none of it again.
    #[arg(long, value_name = "DIR")]
    pub datadir: PathBuf,
    #[arg(long, value_enum, default_value_t = SyncMode::Fast)]
    pub mode: SyncMode,
    /// Shards: one pinned executor each, running one engine (a slice of the key space) and
    /// dialing the peers it owns.
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Pivot = median of the peers' best blocks minus this (0 when peers only hold the head state).
    #[arg(long, default_value_t = 128)]
    pub pivot_distance: u64,
    /// Peers that must agree on the pivot header (default: a majority of the given peers,
    /// at most 3: 1 of 1, 2 of 2, 2 of 3, 3 of 4 or more; so one unreachable or lying peer
    /// of three does not stall the sync).
    #[arg(long)]
    pub pivot_agreement: Option<usize>,
    /// How often the pivot is checked against the peers' head, in seconds (a pivot too
    /// far behind is moved forward; a pivot whose state the peers no longer serve moves
    /// at once).
    #[arg(long, default_value_t = 30, value_name = "S")]
    pub status_check_s: u64,
    /// How long nothing may progress before the sync stops with one line naming what is
    /// missing: no peer serves the pivot's state (even after the pivot moved forward), no
    /// peer serves receipts, or no pivot is agreed. The progress line says meanwhile what
    /// the sync waits for.
    #[arg(long, default_value_t = 120, value_name = "S")]
    pub stall_timeout_s: u64,
    /// Fetch receipts too.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub receipts: bool,
    /// Headers, bodies and receipts only, no state (for peers that serve history
    /// without state, such as `eth serve --era1`).
    #[arg(long)]
    pub history_only: bool,
    /// Give up after this long.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// Trie nodes asked for per GetNodeData / GetTrieNodes request.
    #[arg(long, default_value_t = 384)]
    pub node_batch: usize,
    /// Interval of each shard's progress line on stderr and of its `/status` section on
    /// the admin endpoint (`--admin`).
    #[arg(long, default_value_t = 10_000)]
    pub progress_every_ms: u64,
    /// Fail unless the synced state root equals this (0x-prefixed hex).
    #[arg(long, value_name = "HASH")]
    pub expect_state_root: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// The block whose state and chain are wanted (0x-prefixed hash), trusted instead of
    /// the peers' vote: its header is fetched from the peers by hash and checked, it
    /// becomes the pivot, and the header chain is verified back from it. Without this or
    /// --authrpc the pivot is what several peers agree on, and the head is reported as not
    /// trusted.
    #[arg(long, value_name = "HASH", conflicts_with = "authrpc")]
    pub sync_target: Option<String>,
    /// Serve the Engine API (JSON-RPC over HTTP, JWT-authenticated) at this address, e.g.
    /// 127.0.0.1:8551, for a consensus client: its newest forkchoice head becomes the sync
    /// target. It is answered SYNCING while the sync runs.
    #[arg(long, value_name = "ADDR")]
    pub authrpc: Option<SocketAddr>,
    /// File with the hex-encoded 32-byte secret shared with the consensus client (as geth's
    /// and the consensus clients' --jwt-secret). Without it, DATADIR/jwt.hex is used, and
    /// created with a new random secret when missing.
    #[arg(long, value_name = "FILE", requires = "authrpc")]
    pub jwt_secret: Option<PathBuf>,
    /// Which block of the consensus client's forkchoice is synced: its head, or its
    /// finalized block.
    #[arg(long, value_enum, default_value_t = TargetFrom::Head, requires = "authrpc")]
    pub sync_target_from: TargetFrom,
    /// How long the sync waits for its target (the consensus client's first forkchoice, or
    /// a peer holding the target's header) before it stops and says so.
    #[arg(long, default_value_t = 120, value_name = "S")]
    pub target_timeout_s: u64,
    /// Memory budget of each shard (e.g. 512MiB, 2GiB): bounds the store's index of
    /// recent keys (a quarter; older keys are in sorted index files on disk, with about
    /// 1.4 bytes per key of filters and fences in memory), its decoded-header cache, its
    /// index checkpoint, the snap engine's backlog of open storage tries (a sixteenth;
    /// account ranges wait while it is full) and the responses in flight (a sixteenth: the
    /// request window is cut to it at 2 MiB a response, 16 requests at 512MiB). Stored
    /// state lives on disk and is read back on demand; not counted against the budget: the
    /// records put since the last commit.
    /// Reported with the peak RSS in the sync report.
    #[arg(long, value_name = "BYTES", default_value = "512MiB", value_parser = crate::node::opts::parse_size_bytes)]
    pub memory_budget: u64,
}

/// Which block of the forkchoice becomes the sync target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetFrom {
    Head,
    Finalized,
}

/// Parse a 0x-prefixed 32-byte hash given to `flag`.
fn parse_hash(flag: &str, h: &str) -> anyhow::Result<catchup_eth::B256> {
    let mut b = [0u8; 32];
    hex::decode_to_slice(h.strip_prefix("0x").unwrap_or(h), &mut b)
        .map_err(|e| anyhow::anyhow!("{flag} {h}: not a 32-byte hex block hash ({e})"))?;
    Ok(catchup_eth::B256::from(b))
}

fn genesis_hash(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (header, _) = catchup_eth::state::genesis_from_json(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(header.hash().0)
}

fn node_key(datadir: Option<&Path>) -> anyhow::Result<SecretKey> {
    match datadir {
        Some(d) => node_key::load_or_create(d),
        None => Ok(SecretKey::new(&mut rand::thread_rng())),
    }
}

/// What `eth serve` announces about the chain it serves.
struct Shown {
    base: u64,
    head_number: u64,
    head_hash: [u8; 32],
    genesis: [u8; 32],
}

impl Shown {
    fn of(raw: &RawChain, genesis: [u8; 32]) -> Shown {
        Shown {
            base: raw.base,
            head_number: raw.head_number(),
            head_hash: raw.head_hash(),
            genesis,
        }
    }
}

/// The chain `eth serve` serves: held in memory, or a data directory's (with its state
/// when the sync completed it), read from its stores on demand.
#[derive(Clone)]
enum ServedChain {
    Held(Arc<crate::eth::sync::chain::ChainData>),
    Stored(
        Arc<crate::eth::stored::StoredChain>,
        Option<Arc<crate::eth::stored::StoredState>>,
    ),
}

impl ServedChain {
    fn head_state_root(&self) -> catchup_eth::B256 {
        match self {
            ServedChain::Held(c) => c.head().state_root,
            ServedChain::Stored(c, _) => c.head.state_root,
        }
    }
}

type Served = (
    Shown,
    ServedChain,
    Option<Arc<StateData>>,
    crate::eth::net::eth_peer::StatusInfo,
);

/// One JSON line naming a live chain's head.
fn head_line(l: &LiveChain, genesis: [u8; 32], network_id: u64) -> serde_json::Value {
    let h = l.head();
    let kept: Vec<&(u64, catchup_eth::B256)> = l.kept().collect();
    json!({"event": "head", "head_number": h.number, "head_hash": format!("{}", h.hash),
           "state_root": format!("{}", h.state_root), "genesis_hash": format!("0x{}", hex::encode(genesis)),
           "network_id": network_id, "accounts": l.accounts(), "nodes_held": l.nodes_held(),
           "oldest_state_block": kept.first().map(|k| k.0), "states_kept": kept.len()})
}

/// A generated chain (genesis included, every block over the generated state) on a chain
/// without forks whose chain id is `--network-id`.
fn generated_chain(a: &ServeArgs, accounts: u64) -> anyhow::Result<Served> {
    anyhow::ensure!(
        (1..=50_000_000).contains(&accounts),
        "--generate-accounts must be in 1..=50000000"
    );
    anyhow::ensure!(
        (1..=1_000_000).contains(&a.generate_blocks),
        "--generate-blocks must be in 1..=1000000"
    );
    let state = StateData::generate(accounts, a.generate_big_storage_slots, a.seed);
    let chain = crate::eth::sync::chain::generate_chain(a.generate_blocks, state.root, a.seed);
    let spec = ChainSpec::without_forks(a.network_id);
    let genesis = chain.headers[0].hash.0;
    let head = chain.head().clone();
    let status = crate::eth::net::eth_peer::StatusInfo {
        network_id: spec.chain_id,
        total_difficulty: Vec::new(),
        head_hash: head.hash.0,
        head_number: head.number,
        genesis_hash: genesis,
        fork_id: spec.fork_id(genesis, head.number, 0),
        forks: Some(spec.fork_check(genesis, 0)),
    };
    let shown = Shown {
        base: chain.base,
        head_number: head.number,
        head_hash: head.hash.0,
        genesis,
    };
    Ok((
        shown,
        ServedChain::Held(Arc::new(chain)),
        Some(Arc::new(state)),
        status,
    ))
}

pub fn run_serve(a: &ServeArgs, _global: &GlobalOpts) -> anyhow::Result<i32> {
    anyhow::ensure!(
        (1..=1_000_000).contains(&a.state_history),
        "--state-history must be in 1..=1000000"
    );
    if let Some(ms) = a.grow_every_ms {
        anyhow::ensure!(ms >= 1, "--grow-every-ms must be at least 1");
        anyhow::ensure!(
            a.profile == Profile::Honest,
            "--profile goes with a static chain; drop it or --grow-every-ms"
        );
    }
    let capabilities = if a.protocols.is_empty() {
        None
    } else {
        Some(parse_protocols(&a.protocols)?)
    };
    let (shown, chain, state, status) = if let Some(accounts) = a.generate_accounts {
        generated_chain(a, accounts)?
    } else if let (None, true, Some(dd)) = (&a.chain, a.era1.is_empty(), &a.datadir) {
        // What an `eth sync --datadir` verified.
        let (spec, genesis) = match (&a.genesis, &a.genesis_hash) {
            (Some(g), _) => (ChainSpec::from_genesis_json(g)?, genesis_hash(g)?),
            (None, Some(h)) => (ChainSpec::without_forks(a.network_id), parse_hash("--genesis-hash", h)?.0),
            (None, None) => bail!(
                "--datadir needs --genesis (or --genesis-hash and --network-id for a chain without forks)"
            ),
        };
        if a.grow_every_ms.is_some() {
            bail!("--grow-every-ms grows a generated or --chain chain; a --datadir is served as stored: drop one of them");
        }
        let sv = crate::eth::export::load_for_serving(dd, genesis.into())?;
        let head = &sv.chain.head;
        let status = crate::eth::net::chainspec::status_at(
            &spec,
            genesis,
            (head.number, head.hash.0, sv.chain.head_time),
            sv.chain.difficulty,
        );
        let shown = Shown {
            base: 1,
            head_number: head.number,
            head_hash: head.hash.0,
            genesis,
        };
        (
            shown,
            ServedChain::Stored(Arc::new(sv.chain), sv.state.map(Arc::new)),
            None,
            status,
        )
    } else if let Some(chain_path) = &a.chain {
        let genesis_path = a.genesis.as_ref().context("--chain needs --genesis")?;
        let spec = ChainSpec::from_genesis_json(genesis_path)?;
        let genesis = genesis_hash(genesis_path)?;
        let raw = RawChain::from_rlp_file(chain_path)?;
        if raw.base == 1 && raw.parent_of_first != genesis {
            bail!(
                "{}: block 1's parent {} is not the genesis {} of {}",
                chain_path.display(),
                hex::encode(raw.parent_of_first),
                hex::encode(genesis),
                genesis_path.display()
            );
        }
        let chain = Arc::new(chain_from_rlp_file(chain_path)?);
        let state = match &a.state {
            Some(p) => {
                let st = StateData::from_geth_dump(p)?;
                if st.root != chain.head().state_root {
                    bail!(
                        "{}: state root {} is not the head block's {}",
                        p.display(),
                        st.root,
                        chain.head().state_root
                    );
                }
                Some(Arc::new(st))
            }
            None => None,
        };
        let status = chain_status(&spec, genesis, &raw);
        (
            Shown::of(&raw, genesis),
            ServedChain::Held(chain),
            state,
            status,
        )
    } else {
        let (raw, data, td) = crate::eth::net::chain::load_era1(&a.era1)?;
        let (spec, genesis) = match (&a.genesis, &a.genesis_hash) {
            (Some(g), _) => (ChainSpec::from_genesis_json(g)?, genesis_hash(g)?),
            (None, Some(h)) => (
                ChainSpec::without_forks(a.network_id),
                parse_hash("--genesis-hash", h)?.0,
            ),
            (None, None) if raw.base == 0 => {
                (ChainSpec::without_forks(a.network_id), raw.hashes[0])
            }
            (None, None) => bail!(
                "the era1 archives start at block {}: give --genesis or --genesis-hash",
                raw.base
            ),
        };
        if a.state.is_some() {
            bail!("--state goes with --chain (the state dump of that chain's head)");
        }
        let mut status = chain_status(&spec, genesis, &raw);
        status.total_difficulty = td
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        (
            Shown::of(&raw, genesis),
            ServedChain::Held(Arc::new(data)),
            None,
            status,
        )
    };
    let key = node_key(a.datadir.as_deref())?;
    let local = match capabilities {
        Some(c) => LocalNode::with_capabilities(key, c),
        None => LocalNode::new(key),
    };
    let (live, producer) = match (a.grow_every_ms, &state, &chain) {
        (Some(_), Some(st), ServedChain::Held(chain)) => {
            let (l, p) = LiveChain::new((**chain).clone(), st, a.state_history, a.seed);
            (Some(Arc::new(RwLock::new(l))), Some(p))
        }
        _ => (None, None),
    };
    // Held until this function returns: no other process can take the port meanwhile.
    let claim = resolve_listen(a.listen)?;
    let listen = claim.addr;
    let enode = local.enode(listen);
    let disc = crate::eth::net::discover::serve_setup(&a.disc, listen, key, status.clone())?;
    // Printed once a shard listens: a script that reads the enode can dial at once.
    let mut stdout_line = String::new();
    let mut stderr_lines = Vec::new();
    if a.json {
        stdout_line = json!({"event": "listening", "enode": enode, "listen": listen.to_string(), "head_number": shown.head_number,
                   "head_hash": format!("0x{}", hex::encode(shown.head_hash)), "genesis_hash": format!("0x{}", hex::encode(shown.genesis)), "head_state_root": format!("{}", chain.head_state_root()), "network_id": status.network_id, "fork_id": format!("0x{}", hex::encode(status.fork_id.hash)),
                   "state": state.is_some() || matches!(chain, ServedChain::Stored(_, Some(_))), "profile": format!("{:?}", a.profile).to_lowercase(), "shards": a.shards,
                   "protocols": local.capabilities.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                   "grow_every_ms": a.grow_every_ms, "state_history": a.state_history,
                   "chain_index": match &chain { ServedChain::Stored(c, _) => Some(format!("{:?}", c.index).to_lowercase()), _ => None }})
        .to_string();
    } else {
        stdout_line.push_str(&enode);
        stderr_lines.push(format!(
            "serving blocks {}..={} (head 0x{}), state {}, fork id {}, profile {}, {} shard(s)",
            shown.base,
            shown.head_number,
            hex::encode(shown.head_hash),
            if state.is_some() || matches!(chain, ServedChain::Stored(_, Some(_))) {
                "yes"
            } else {
                "no"
            },
            status.fork_id,
            format!("{:?}", a.profile).to_lowercase(),
            a.shards
        ));
        if a.genesis.is_none() {
            // A chain without forks: its genesis hash and network id are all a sync needs.
            stderr_lines.push(format!(
                "sync from it: catchup eth sync --peer {enode} --genesis-hash 0x{} --network-id {} --datadir DIR",
                hex::encode(shown.genesis),
                status.network_id
            ));
        }
    }
    if let Some(d) = &disc {
        // The node record, for `--bootnodes` of other nodes (discv5 needs it).
        // Printed on the line after the enode, when a shard listens.
        let enr = d.enr.to_text();
        stdout_line.push('\n');
        if a.json {
            stdout_line.push_str(
                &json!({"event": "discovery", "enr": enr, "udp": listen.to_string(), "v4": d.cfg.protocols.v4, "v5": d.cfg.protocols.v5})
                    .to_string(),
            );
        } else {
            stdout_line.push_str(&enr);
        }
    }
    use std::io::Write;
    let net = NetConfig {
        handshake_timeout_ms: a.handshake_timeout_ms,
        idle_timeout_ms: a.idle_timeout_ms,
        listen_port: listen.port(),
        ..NetConfig::default()
    };
    let network_id = status.network_id;
    let cfg = ServeConfig {
        listen,
        shards: a.shards,
        max_peers_per_shard: a.max_peers,
        net,
        status,
        receipts_limit_bytes: a.receipts_response_bytes,
    };
    let (profile, slow) = (a.profile, a.slow_delay_ms);
    let rc = crate::node::opts::runtime_config(_global, Some(a.shards.max(1)), None)?;
    let stop = Arc::new(AtomicBool::new(false));
    // The first shard listening announces the node, then the chain starts to grow.
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<usize>();
    let grow = match (&live, producer, a.grow_every_ms) {
        (Some(l), Some(p), Some(ms)) => Some((l.clone(), p, ms)),
        _ => None,
    };
    let (json_out, genesis, stop2) = (a.json, shown.genesis, stop.clone());
    let announcer = std::thread::Builder::new()
        .name("serve-ready".into())
        .spawn(move || -> Option<std::thread::JoinHandle<()>> {
            bound_rx.recv().ok()?;
            let _ = writeln!(std::io::stdout(), "{stdout_line}");
            let _ = std::io::stdout().flush();
            for l in stderr_lines {
                eprintln!("{l}");
            }
            let (l, p, ms) = grow?;
            match spawn_grower(l, p, ms, json_out, genesis, network_id, stop2) {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::error!("{e:#}");
                    None
                }
            }
        })
        .context("starting the announcing thread")?;
    let listening = move |_shard: usize| {
        let _ = bound_tx.send(0);
    };
    let stats = match &live {
        Some(l) => {
            // The live chain holds its own copy of both.
            drop((chain, state));
            let l = l.clone();
            let step = a.block_range_every.max(1);
            crate::eth::net::discover::serve_maybe_discovery(
                cfg,
                local,
                move |_| LiveResponder {
                    live: l.clone(),
                    range_step: step,
                },
                rc,
                stop.clone(),
                disc,
                listening,
            )
        }
        None => crate::eth::net::discover::serve_maybe_discovery(
            cfg,
            local,
            move |shard| {
                let peer = match &chain {
                    ServedChain::Held(c) => ServingPeer::new(c.clone(), state.clone()),
                    ServedChain::Stored(c, st) => ServingPeer::from_stored(c.clone(), st.clone()),
                };
                let mut r = EngineResponder::new(peer, profile, 1 + shard as u64);
                r.slow_delay_ms = slow;
                r
            },
            rc,
            stop.clone(),
            disc,
            listening,
        ),
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Ok(Some(g)) = announcer.join() {
        let _ = g.join();
    }
    let stats = stats?;
    drop(claim);
    if a.json {
        // stdout may be closed by now (a parent that only read the enode): not an error.
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            json!({"event": "stopped", "shards": stats})
        );
    } else {
        for (i, s) in stats.iter().enumerate() {
            eprintln!(
                "shard {i}: {} peers accepted, {} refused (full), {} dropped at handshake, {} requests served",
                s.accepted, s.rejected_full, s.handshake_failures, s.requests_served
            );
        }
    }
    Ok(0)
}

/// Append a block to `live` every `every_ms` until `stop`, naming each new head (a JSON
/// line on stdout with `json`, a log line otherwise).
fn spawn_grower(
    live: Arc<RwLock<LiveChain>>,
    mut producer: BlockProducer,
    every_ms: u64,
    json_out: bool,
    genesis: [u8; 32],
    network_id: u64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    std::thread::Builder::new()
        .name("serve-grow".into())
        .spawn(move || {
            let every = std::time::Duration::from_millis(every_ms);
            let mut next = std::time::Instant::now() + every;
            while !stop.load(Ordering::Relaxed) {
                let now = std::time::Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(std::time::Duration::from_millis(50)));
                    continue;
                }
                // A block that took longer than the interval delays the next; no bursts.
                next = (next + every).max(now);
                // The block's tries are built under the read lock (serving goes on); the
                // write lock is held only to add it.
                let block = {
                    let Ok(l) = live.read() else { return };
                    producer.prepare(l.store())
                };
                let (line, changes) = {
                    let Ok(mut l) = live.write() else { return };
                    let changes = l.append(block);
                    (head_line(&l, genesis, network_id), changes)
                };
                if json_out {
                    let mut line = line;
                    line["changes"] = json!(changes);
                    // A reader that went away is not a reason to stop the chain.
                    let _ = writeln!(std::io::stdout(), "{line}");
                    let _ = std::io::stdout().flush();
                } else {
                    tracing::info!(head = %line["head_number"], hash = %line["head_hash"], state_root = %line["state_root"], oldest_state = %line["oldest_state_block"], "new head");
                }
            }
        })
        .context("starting the block producer thread")
}

pub fn run_sync_cmd(a: &SyncArgs, _global: &GlobalOpts) -> anyhow::Result<i32> {
    let peers: Vec<Enode> = a
        .peers
        .iter()
        .map(|p| Enode::parse(p).map_err(|e| anyhow::anyhow!("--peer: {e}")))
        .collect::<anyhow::Result<_>>()?;
    let (spec, genesis) = match (&a.genesis, &a.genesis_hash) {
        (Some(path), _) => (ChainSpec::from_genesis_json(path)?, genesis_hash(path)?),
        (None, Some(h)) => {
            let mut g = [0u8; 32];
            hex::decode_to_slice(h.trim_start_matches("0x"), &mut g)
                .map_err(|e| anyhow::anyhow!("--genesis-hash {h}: {e}"))?;
            (ChainSpec::without_forks(a.network_id), g)
        }
        (None, None) => bail!("give --genesis FILE or --genesis-hash HASH"),
    };
    anyhow::ensure!(
        (1..=4096).contains(&a.node_batch),
        "--node-batch must be in 1..=4096"
    );
    let discovery = crate::eth::net::discover::resolve_sync(&a.disc, peers.len(), &genesis)?;
    // Discovered peers count like given ones for the pivot agreement.
    let peers_known = peers.len() + discovery.as_ref().map_or(0, |_| a.disc.max_peers);
    // Held (locked) until the sync ends: a second sync over the same directory is refused.
    let dd = catchup_io::datadir::DataDir::open(&a.datadir)?;
    let rc = crate::node::opts::runtime_config(_global, Some(a.shards.max(1)), None)?;
    let shards = rc.shards.max(1);
    check_sync_meta(dd.path(), shards, &genesis)?;
    let mut shard_dirs = Vec::with_capacity(shards);
    for i in 0..shards {
        dd.shard_store_dir(i)?;
        shard_dirs.push(dd.subdir(&format!("shard-{i}"))?);
    }
    let key = node_key::load_or_create(&a.datadir)?;
    let sync_target = a
        .sync_target
        .as_deref()
        .map(|h| parse_hash("--sync-target", h))
        .transpose()?;
    // Held until the sync ends: the Engine API's port.
    let mut _authrpc_claim = None;
    let authrpc = match a.authrpc {
        Some(addr) => {
            let claim = crate::node::listen::claim_tcp(addr, "--authrpc")?;
            let (secret, created) =
                crate::eth::engine_api::server::secret_for(a.jwt_secret.as_deref(), dd.path())?;
            if let Some(p) = created {
                eprintln!(
                    "no --jwt-secret given: wrote a new secret to {}; give the consensus client the same file (its --jwt-secret)",
                    p.display()
                );
            }
            let api = crate::eth::engine_api::AuthRpc {
                addr: claim.addr,
                secret,
                from_finalized: a.sync_target_from == TargetFrom::Finalized,
                chain_id: spec.chain_id,
            };
            _authrpc_claim = Some(claim);
            Some(api)
        }
        None => None,
    };
    let target_source = match (sync_target, &authrpc) {
        (Some(_), _) => crate::eth::sync::config::TargetSource::SyncTarget,
        (None, Some(_)) => crate::eth::sync::config::TargetSource::EngineApi,
        (None, None) => crate::eth::sync::config::TargetSource::PeerVote,
    };
    match (sync_target, &authrpc) {
        (Some(t), _) => tracing::info!(target = %t, "sync target given by --sync-target (trusted); its header is fetched by hash"),
        (None, Some(api)) => tracing::info!(addr = %api.addr, "sync target from the consensus client's forkchoice over the Engine API (trusted); waiting for its first forkchoiceUpdated"),
        (None, None) => tracing::warn!("no --sync-target or --authrpc: the pivot is what the peers agree on; the head is NOT trusted (peers can agree on a false chain)"),
    }
    let sync = SyncConfig {
        target_source,
        sync_target,
        target_timeout_ms: a.target_timeout_s.max(1).saturating_mul(1000),
        mode: a.mode,
        pivot_distance: a.pivot_distance,
        pivot_agreement: a
            .pivot_agreement
            .unwrap_or_else(|| default_pivot_agreement(peers_known)),
        peers_given: peers_known,
        min_peers: a
            .disc
            .min_peers
            .unwrap_or(if discovery.is_some() { 5 } else { 0 }),
        min_peers_wait_ms: a.disc.min_peers_wait_s.saturating_mul(1000),
        fetch_receipts: a.receipts,
        status_check_ms: a.status_check_s.saturating_mul(1000),
        stall_timeout_ms: a.stall_timeout_s.max(1).saturating_mul(1000),
        history_only: a.history_only,
        anchor_number: 0,
        trusted_anchor: Some(catchup_eth::B256::from(genesis)),
        node_batch: a.node_batch,
        ..SyncConfig::default()
    };
    let cfg = NetSyncConfig {
        sync,
        shards: a.shards.max(1),
        peers,
        net: NetConfig::default(),
        status: genesis_status(&spec, genesis),
        max_runtime_ms: a.timeout_s.saturating_mul(1000),
        peer_queue_len: 256,
    };
    let bar = crate::node::obs::progress_bar(
        None,
        crate::node::obs::ProgressUnit::Items("items"),
        a.json,
    );
    let discovery = match discovery {
        Some(plan) => Some(crate::eth::net::discover::sync_setup(
            &a.disc,
            plan,
            key,
            cfg.status.clone(),
        )?),
        None => None,
    };
    const MIN_MEMORY_BUDGET_BYTES: u64 = 16 << 20;
    if a.memory_budget < MIN_MEMORY_BUDGET_BYTES {
        anyhow::bail!(
            "--memory-budget {} bytes is below the minimum of 16MiB per shard",
            a.memory_budget
        );
    }
    let extras = SyncExtras {
        shard_dirs: Some(shard_dirs),
        progress_every_ms: a.progress_every_ms,
        bar: Some(bar.clone()),
        discovery,
        authrpc,
        memory_budget_bytes: a.memory_budget,
        ..SyncExtras::default()
    };
    let report: NetSyncReport = run_sync_sharded_with(
        cfg,
        LocalNode::new(key),
        rc,
        Arc::new(AtomicBool::new(false)),
        extras,
    )?;
    bar.finish_and_clear();
    let root_ok = match &a.expect_state_root {
        Some(want) => report
            .state_root
            .as_deref()
            .map(|r| r.eq_ignore_ascii_case(want))
            .unwrap_or(false),
        None => true,
    };
    let ok = report.finished && report.failure.is_none() && root_ok;
    let report_path = a.datadir.join("sync-report.json");
    // A report file that cannot be written (a full disk) must not hide the sync's outcome.
    let write_err = std::fs::write(&report_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))
        .err();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "ok": ok,
                "pivot_block": report.status.pivot_block,
                "state_root": report.state_root,
                "head_hash": report.status.head_hash.as_ref().or(report.head_hash.as_ref()),
                "target": report.status.target,
                "head_trusted": report.status.head_trusted,
                "report": report
            }))?
        );
    } else {
        println!("mode:        {}", report.mode);
        println!(
            "target:      {} (head {})",
            report.status.target,
            if report.status.target != "peer-vote" {
                "trusted"
            } else {
                "not trusted: agreed by peers"
            }
        );
        println!(
            "finished:    {}{}",
            report.finished,
            report
                .failure
                .as_ref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default()
        );
        println!(
            "state root:  {} ({})",
            report.state_root.as_deref().unwrap_or("-"),
            if report.status.state_complete {
                "complete, every node verified"
            } else {
                "incomplete"
            }
        );
        if let Some(w) = &a.expect_state_root {
            println!(
                "expected:    {w} ({})",
                if root_ok { "match" } else { "MISMATCH" }
            );
        }
        println!(
            "head:        {} {}",
            report
                .head_number
                .map(|n| n.to_string())
                .unwrap_or("-".into()),
            report.head_hash.as_deref().unwrap_or("-")
        );
        println!(
            "memory:      peak RSS {} MiB, budget {} MiB per shard",
            report
                .peak_rss_bytes
                .map(|b| (b >> 20).to_string())
                .unwrap_or("-".into()),
            a.memory_budget >> 20
        );
        let (r, f) = (&report.resumed, &report.fetched);
        println!(
            "resumed:     {} records from {}: {} headers, {} bodies, {} receipts, {} state nodes, {} codes, {} accounts",
            r.records,
            a.datadir.display(),
            r.headers,
            r.bodies,
            r.receipts,
            r.state_nodes,
            r.codes,
            r.accounts
        );
        println!(
            "fetched:     {} headers, {} bodies, {} receipts, {} state nodes, {} codes, {} accounts ({} items received again)",
            f.headers,
            f.bodies,
            f.receipts,
            f.state_nodes,
            f.codes,
            f.accounts,
            report.progress.refetched_items
        );
        println!(
            "verified:    {} headers, {} bodies, {} receipts, {} state nodes, {} codes in {} ms",
            report.headers_stored,
            report.bodies_stored,
            report.receipts_stored,
            report.state_nodes_stored,
            report.codes_stored,
            report.elapsed_ms
        );
        if report.discovery.is_some() {
            println!(
                "peers:       {} discovered, {} dialed, {} connected, dropped: {}",
                report.peers_discovered,
                report.peers_dialed,
                report.peers_connected,
                if report.peers_dropped.is_empty() {
                    "none".to_string()
                } else {
                    report
                        .peers_dropped
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
        }
        for p in &report.peers {
            println!(
                "peer {} {}: {} requests, {} answered, {} timeouts{}{}",
                p.peer,
                if p.eth_version == 0 {
                    "(never connected)".to_string()
                } else {
                    format!("{:?} eth/{}", p.client, p.eth_version)
                },
                p.requests,
                p.answered,
                p.timeouts,
                if p.dropped_by_us { ", dropped" } else { "" },
                p.error
                    .as_ref()
                    .map(|e| format!(", {e}"))
                    .unwrap_or_default()
            );
        }
    }
    if let Some(e) = write_err {
        if ok {
            return Err(e);
        }
        tracing::warn!("{e:#}");
    }
    if !ok {
        match &report.failure {
            Some(f) => eprintln!("error: sync did not finish: {f}"),
            None if !report.finished => eprintln!("error: sync did not finish"),
            None => eprintln!(
                "error: state root {} is not the expected {}",
                report.state_root.as_deref().unwrap_or("-"),
                a.expect_state_root.as_deref().unwrap_or("-")
            ),
        }
    }
    Ok(if ok { 0 } else { 1 })
}

/// File in the data directory naming what its shard stores belong to.
const SYNC_META_FILE: &str = "eth-sync.json";

/// The shard stores split the key space by shard count and the trie map, and belong to one
/// chain: refuse a data directory written with another shard count, trie map or genesis,
/// record them otherwise.
fn check_sync_meta(dir: &Path, shards: usize, genesis: &[u8; 32]) -> anyhow::Result<()> {
    let path = dir.join(SYNC_META_FILE);
    let genesis_hex = format!("0x{}", hex::encode(genesis));
    let map_nibbles = catchup_shards::ownership::trie_prefix_nibbles(shards);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: not a sync description: {e}", path.display()))?;
            let (was_shards, was_genesis) = (v["shards"].as_u64(), v["genesis"].as_str());
            if was_shards != Some(shards as u64) {
                bail!(
                    "data directory {} holds a sync on {} shards; run with --shards {} (or another --datadir)",
                    dir.display(),
                    was_shards.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                    was_shards.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
                );
            }
            // The stores' slices of the trie key space and the snap rebuild's blocks follow
            // the trie map; an earlier build's map (1 nibble, before it was recorded)
            // splits them otherwise.
            let was_map = v["trie_prefix_nibbles"].as_u64().unwrap_or(1);
            if was_map != map_nibbles as u64 {
                bail!(
                    "data directory {} was written with the trie key space split at {was_map} nibble(s), this build splits it at {map_nibbles} for {shards} shards; sync into a new --datadir",
                    dir.display()
                );
            }
            if was_genesis != Some(genesis_hex.as_str()) {
                bail!(
                    "data directory {} holds a sync of another chain (genesis {}, not {genesis_hex})",
                    dir.display(),
                    was_genesis.unwrap_or("?")
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join(format!("{SYNC_META_FILE}.tmp"));
            let body = serde_json::to_vec_pretty(&json!({
                "shards": shards,
                "genesis": genesis_hex,
                "trie_prefix_nibbles": map_nibbles,
            }))?;
            std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// RLPx throughput per shard: frames/s and MB/s through the whole frame path (snappy,
/// AES-256-CTR, keccak MACs, both directions) beside raw AES-CTR + keccak of the same
/// bytes in the same run, and their ratio.
#[derive(Args, Debug, Clone)]
pub struct RlpxBenchArgs {
    /// Shards measuring at once (each pinned to its core).
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Message sizes to measure (repeatable).
    #[arg(long = "message-bytes", default_values_t = vec![256usize, 4096, 65536])]
    pub message_bytes: Vec<usize>,
    /// Bytes pushed per size and payload kind on each shard.
    #[arg(long, default_value_t = 64 << 20)]
    pub total_bytes: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run_bench_rlpx(a: &RlpxBenchArgs, _global: &GlobalOpts) -> anyhow::Result<i32> {
    if a.message_bytes.iter().any(|s| *s == 0 || *s > 8 << 20) {
        bail!("--message-bytes must be between 1 and 8388608");
    }
    let sizes = a.message_bytes.clone();
    let total = a.total_bytes.max(1);
    let rc = catchup_shards::RuntimeConfig {
        name: "bench-rlpx".into(),
        ..catchup_shards::RuntimeConfig::new(a.shards)
    };
    let per_shard =
        catchup_shards::runtime::run::<(), _, _, _>(&rc, move |shard: catchup_shards::Shard<()>| {
            let sizes = sizes.clone();
            async move {
                let mut out = Vec::new();
                for &size in &sizes {
                    for compressible in [true, false] {
                        let messages = (total / size as u64).max(1);
                        out.push(crate::eth::net::bench::measure(
                            size,
                            messages,
                            compressible,
                        ));
                    }
                }
                (shard.id().0, out)
            }
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"shards": per_shard.iter().map(|(s, r)| json!({"shard": s, "results": r})).collect::<Vec<_>>()})
            )?
        );
    } else {
        println!(
            "{:>5} {:>9} {:>8} {:>12} {:>11} {:>14} {:>6}",
            "shard", "msg_bytes", "payload", "frames/s", "rlpx MB/s", "aes+keccak MB/s", "ratio"
        );
        for (s, rs) in &per_shard {
            for r in rs {
                println!(
                    "{:>5} {:>9} {:>8} {:>12.0} {:>11.1} {:>14.1} {:>6.2}",
                    s,
                    r.message_bytes,
                    r.payload,
                    r.rlpx_frames_per_s,
                    r.rlpx_mb_per_s,
                    r.raw_aes_keccak_mb_per_s,
                    r.ratio
                );
            }
        }
    }
    Ok(0)
}

/// A majority of `peers`, at most 3 (and at least 1).
pub fn default_pivot_agreement(peers: usize) -> usize {
    (peers / 2 + 1).clamp(1, 3)
}

#[cfg(test)]
mod agreement_tests {
    use super::default_pivot_agreement;

    #[test]
    fn default_pivot_agreement_is_a_majority_capped_at_three() {
        let got: Vec<usize> = (0..=7).map(default_pivot_agreement).collect();
        assert_eq!(got, vec![1, 1, 2, 2, 3, 3, 3, 3]);
    }
}

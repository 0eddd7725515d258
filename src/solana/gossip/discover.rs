//! Discovery and trust for `catchup solana sync`: join gossip through the entrypoints,
//! wait for the known validators' snapshot adverts, choose the trusted snapshot, and list
//! the RPC addresses of every node as candidate sources of exactly that archive.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use catchup_gossip::ed25519_dalek::SigningKey;
use catchup_http::Url;
use serde::Serialize;

use super::node::{bind, start, NodeConfig, Profile};
use super::trust::{choose, TrustChoice};
use crate::solana::download::sync::ExpectedArchive;

/// What to discover with.
pub struct GossipDiscovery {
    pub entrypoints: Vec<SocketAddr>,
    pub known_validators: Vec<String>,
    pub min_agree: usize,
    pub identity: Option<PathBuf>,
    pub listen: SocketAddr,
    pub timeout: Duration,
    pub shred_version: u16,
    /// Also fetch the chosen incremental (after the full snapshot).
    pub incremental: bool,
}

/// What discovery found.
#[derive(Debug, Clone, Serialize)]
pub struct Discovered {
    /// Source URLs from the nodes' RPC addresses.
    #[serde(skip)]
    pub sources: Vec<Url>,
    /// The full archive to fetch, when known validators agreed on one.
    #[serde(skip)]
    pub expected: Option<ExpectedArchive>,
    /// The incremental on it they agree on, if any.
    #[serde(skip)]
    pub expected_incremental: Option<ExpectedArchive>,
    /// With `incremental`: source URLs of the incremental archive.
    #[serde(skip)]
    pub incremental_sources: Vec<Url>,
    /// Every snapshot advert heard, by origin.
    #[serde(skip)]
    pub adverts: std::collections::BTreeMap<String, super::node::SnapshotAdvert>,
    /// RPC addresses of every node heard.
    #[serde(skip)]
    pub rpcs: Vec<SocketAddr>,
    pub choice: Option<TrustChoice>,
    pub our_pubkey: String,
    pub gossip_addr: SocketAddr,
    pub peers: usize,
    pub peers_with_rpc: usize,
    /// (node, serve-repair address) of the nodes advertising one (repair peers).
    pub serve_repair: Vec<(String, SocketAddr)>,
    pub packets_received: u64,
    pub packets_rejected: u64,
    pub values_rejected: u64,
    pub elapsed_ms: u64,
}

/// After the known validators agreed (or a first RPC node was heard), listen this much
/// longer for more adverts and contact infos (sources).
const GRACE: Duration = Duration::from_secs(5);

pub fn discover(d: &GossipDiscovery) -> anyhow::Result<Discovered> {
    let key = match &d.identity {
        Some(p) => super::keypair::read_keypair(p)?,
        None => SigningKey::generate(&mut rand::rngs::OsRng),
    };
    for k in &d.known_validators {
        if catchup_gossip::Pubkey::from_base58(k).is_none() {
            anyhow::bail!("--known-validator {k:?} is not a base58 public key");
        }
    }
    let (socket, advertise) = bind(d.listen, &d.entrypoints, "--gossip-listen")?;
    let handle = start(NodeConfig {
        key,
        socket,
        advertise,
        entrypoints: d.entrypoints.clone(),
        rpc: None,
        serve_repair: None,
        shred_version: d.shred_version,
        snapshots: None,
        snapshots_dir: None,
        profile: Profile::Honest,
        max_entries: 8192,
        status_section: Some("gossip".into()),
        pull_interval_ms: 100,
    })?;
    let started = Instant::now();
    let deadline = started + d.timeout;
    let mut agreed_at: Option<Instant> = None;
    tracing::info!(entrypoints = ?d.entrypoints, known_validators = d.known_validators.len(), "joining gossip");
    let (view, choice) = loop {
        std::thread::sleep(Duration::from_millis(200));
        let v = handle.view();
        let now = Instant::now();
        let with_rpc = v.peers.iter().filter(|p| p.rpc.is_some()).count();
        if d.known_validators.is_empty() {
            if with_rpc > 0 {
                let at = *agreed_at.get_or_insert(now);
                if now >= at + GRACE {
                    break (v, None);
                }
            }
            if now >= deadline {
                anyhow::bail!(
                    "no node with an RPC address heard through gossip in {} s ({} peers, {} packets in); check --entrypoint",
                    d.timeout.as_secs(),
                    v.peers.len(),
                    v.packets_received
                );
            }
            continue;
        }
        match choose(&v.snapshot_hashes, &d.known_validators, d.min_agree) {
            Ok(c) => {
                // Keep listening a little: more known validators' adverts (a newer agreed
                // slot) and more nodes' contact infos (sources) arrive.
                let at = *agreed_at.get_or_insert(now);
                if now >= at + GRACE || now >= deadline {
                    break (v, Some(c));
                }
            }
            Err(e) => {
                if now >= deadline {
                    anyhow::bail!(
                        "after {} s of gossip through {:?} ({} peers): {e}",
                        d.timeout.as_secs(),
                        d.entrypoints,
                        v.peers.len()
                    );
                }
            }
        }
    };
    handle.stop();
    let expected = choice.as_ref().map(|c| ExpectedArchive {
        base_slot: None,
        slot: c.full.slot,
        hash: c.full.hash.clone(),
    });
    let expected_incremental = choice.as_ref().and_then(|c| {
        c.incremental.as_ref().map(|i| ExpectedArchive {
            base_slot: Some(c.full.slot),
            slot: i.slot,
            hash: i.hash.clone(),
        })
    });
    if d.incremental && choice.is_some() && expected_incremental.is_none() {
        anyhow::bail!(
            "--incremental: the known validators advertise no incremental snapshot on full slot {} that {} of them agree on",
            choice.as_ref().map(|c| c.full.slot).unwrap_or(0),
            d.min_agree
        );
    }
    let urls = |name: &str| -> Vec<Url> {
        let mut out: Vec<Url> = view
            .peers
            .iter()
            .filter_map(|p| p.rpc)
            .filter_map(|rpc| Url::parse(&format!("http://{rpc}/{name}")).ok())
            .collect();
        out.sort();
        out.dedup();
        out
    };
    let sources = urls(&expected.as_ref().map(|e| e.file_name()).unwrap_or_default());
    let incremental_sources = match (&expected_incremental, d.incremental) {
        (Some(e), true) => urls(&e.file_name()),
        _ => Vec::new(),
    };
    let mut serve_repair: Vec<(String, SocketAddr)> = view
        .peers
        .iter()
        .filter_map(|p| p.serve_repair.map(|a| (p.pubkey.clone(), a)))
        .collect();
    serve_repair.sort();
    serve_repair.dedup();
    Ok(Discovered {
        peers_with_rpc: sources.len(),
        sources,
        expected,
        expected_incremental,
        incremental_sources,
        adverts: view.snapshot_hashes.clone(),
        rpcs: view.peers.iter().filter_map(|p| p.rpc).collect(),
        choice,
        our_pubkey: view.pubkey.clone(),
        gossip_addr: advertise,
        peers: view.peers.len(),
        serve_repair,
        packets_received: view.packets_received,
        packets_rejected: view.packets_rejected,
        values_rejected: view.values_rejected,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

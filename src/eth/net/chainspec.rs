//! What the eth Status handshake needs from a chain: network id, genesis hash, total
//! difficulty and the EIP-2124 fork schedule, read from a geth-style `genesis.json`.

use std::path::Path;

use anyhow::Context;
use catchup_devp2p::forkid::{ForkId, ForkSchedule};

/// Chain parameters from `genesis.json`.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    pub chain_id: u64,
    pub genesis_difficulty: u128,
    pub genesis_timestamp: u64,
    pub block_forks: Vec<u64>,
    pub time_forks: Vec<u64>,
}

fn num(v: &serde_json::Value) -> Option<u128> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().map(u128::from),
        serde_json::Value::String(s) => {
            let s = s.trim();
            if let Some(h) = s.strip_prefix("0x") {
                u128::from_str_radix(h, 16).ok()
            } else {
                s.parse().ok()
            }
        }
        _ => None,
    }
}

impl ChainSpec {
    /// Parse a geth genesis file: `config.chainId`, every `config.*Block` and `config.*Time`
    /// fork, `difficulty` and `timestamp`.
    pub fn from_genesis_json(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let config = v
            .get("config")
            .and_then(|c| c.as_object())
            .with_context(|| format!("{}: no \"config\" object", path.display()))?;
        let chain_id = config
            .get("chainId")
            .and_then(num)
            .and_then(|n| u64::try_from(n).ok())
            .with_context(|| format!("{}: config.chainId missing or not a u64", path.display()))?;
        let mut block_forks = Vec::new();
        let mut time_forks = Vec::new();
        for (k, val) in config {
            let Some(n) = num(val).and_then(|n| u64::try_from(n).ok()) else {
                continue;
            };
            if k.ends_with("Block") && k != "terminalTotalDifficultyBlock" {
                block_forks.push(n);
            } else if k.ends_with("Time") {
                time_forks.push(n);
            }
        }
        Ok(ChainSpec {
            chain_id,
            genesis_difficulty: v.get("difficulty").and_then(num).unwrap_or(0),
            genesis_timestamp: v
                .get("timestamp")
                .and_then(num)
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            block_forks,
            time_forks,
        })
    }

    /// A chain with no forks after genesis (only the genesis hash enters the fork id).
    pub fn without_forks(chain_id: u64) -> Self {
        ChainSpec {
            chain_id,
            genesis_difficulty: 0,
            genesis_timestamp: 0,
            block_forks: Vec::new(),
            time_forks: Vec::new(),
        }
    }

    /// The fork id at a head block.
    pub fn fork_id(&self, genesis_hash: [u8; 32], head_number: u64, head_time: u64) -> ForkId {
        ForkSchedule {
            genesis_hash,
            genesis_timestamp: self.genesis_timestamp,
            block_forks: self.block_forks.clone(),
            time_forks: self.time_forks.clone(),
        }
        .fork_id(head_number, head_time)
    }

    /// What a handshake needs to check peers' fork ids by all EIP-2124 rules.
    pub fn fork_check(&self, genesis_hash: [u8; 32], head_time: u64) -> super::eth_peer::ForkCheck {
        super::eth_peer::ForkCheck {
            schedule: ForkSchedule {
                genesis_hash,
                genesis_timestamp: self.genesis_timestamp,
                block_forks: self.block_forks.clone(),
                time_forks: self.time_forks.clone(),
            },
            head_time,
        }
    }
}

/// Number, timestamp and difficulty fields of a raw header (fields 8, 11 and 7).
pub fn header_number_time_difficulty(raw: &[u8]) -> Option<(u64, u64, u128)> {
    let items = catchup_devp2p::rlp::list_exact("header", raw, 32).ok()?;
    if items.len() < 15 {
        return None;
    }
    let number = catchup_devp2p::rlp::uint("number", items[8]).ok()?;
    let time = catchup_devp2p::rlp::uint("timestamp", items[11]).ok()?;
    let d = catchup_devp2p::rlp::big_uint("difficulty", items[7]).ok()?;
    if d.len() > 16 {
        return None;
    }
    let diff = d.iter().fold(0u128, |a, b| (a << 8) | u128::from(*b));
    Some((number, time, diff))
}

/// Status of a node whose head is the genesis block (a node about to sync).
pub fn genesis_status(spec: &ChainSpec, genesis_hash: [u8; 32]) -> super::eth_peer::StatusInfo {
    super::eth_peer::StatusInfo {
        network_id: spec.chain_id,
        total_difficulty: trim(&spec.genesis_difficulty.to_be_bytes()),
        head_hash: genesis_hash,
        head_number: 0,
        genesis_hash,
        fork_id: spec.fork_id(genesis_hash, 0, spec.genesis_timestamp),
        forks: Some(spec.fork_check(genesis_hash, spec.genesis_timestamp)),
    }
}

/// Status of a node serving `chain` (blocks after genesis, genesis hash `genesis_hash`).
pub fn chain_status(
    spec: &ChainSpec,
    genesis_hash: [u8; 32],
    chain: &super::chain::RawChain,
) -> super::eth_peer::StatusInfo {
    let mut difficulty = 0u128;
    let mut head_time = spec.genesis_timestamp;
    for h in &chain.headers {
        if let Some((_, t, d)) = header_number_time_difficulty(h) {
            difficulty = difficulty.saturating_add(d);
            head_time = t;
        }
    }
    status_at(
        spec,
        genesis_hash,
        (chain.head_number(), chain.head_hash(), head_time),
        difficulty,
    )
}

/// Status of a node whose head is `(number, hash, timestamp)`, `difficulty` the blocks
/// after genesis summed.
pub fn status_at(
    spec: &ChainSpec,
    genesis_hash: [u8; 32],
    (head_number, head_hash, head_time): (u64, [u8; 32], u64),
    difficulty: u128,
) -> super::eth_peer::StatusInfo {
    let td = spec.genesis_difficulty.saturating_add(difficulty);
    super::eth_peer::StatusInfo {
        network_id: spec.chain_id,
        total_difficulty: trim(&td.to_be_bytes()),
        head_hash,
        head_number,
        genesis_hash,
        fork_id: spec.fork_id(genesis_hash, head_number, head_time),
        forks: Some(spec.fork_check(genesis_hash, head_time)),
    }
}

fn trim(be: &[u8]) -> Vec<u8> {
    let start = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    be[start..].to_vec()
}

//! Sync configuration: every constant is a flag of `catchup eth sim` and a key of the
//! `[ethsync]` table of the config file (TOML), with these defaults.

use alloy_primitives::B256;
use serde::{Deserialize, Serialize};

/// Fast sync (state by node hash) or snap sync (state by ranges with proofs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    Fast,
    Snap,
}

impl SyncMode {
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Fast => "fast",
            SyncMode::Snap => "snap",
        }
    }
}

/// Where the sync target (the block whose state and chain are wanted) comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetSource {
    /// The agreement of several peers on their head (not trusted: peers can agree on a lie).
    #[default]
    PeerVote,
    /// A block hash given by the operator (`--sync-target`).
    SyncTarget,
    /// The newest forkchoice of a consensus client over the Engine API (`--authrpc`).
    EngineApi,
}

impl TargetSource {
    /// The name in the log and the report: `peer-vote`, `sync-target`, `engine-api`.
    pub fn name(self) -> &'static str {
        match self {
            TargetSource::PeerVote => "peer-vote",
            TargetSource::SyncTarget => "sync-target",
            TargetSource::EngineApi => "engine-api",
        }
    }

    /// A target given by the operator or the consensus client is trusted; the peers' vote is not.
    pub fn trusted(self) -> bool {
        self != TargetSource::PeerVote
    }
}

/// Engine settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    pub mode: SyncMode,
    /// Pivot = median of the peers' best blocks minus this (geth uses 64; the seed 128).
    pub pivot_distance: u64,
    /// Re-select the pivot when the peers' head is more than `pivot_distance` plus this
    /// past it (checked every `status_check_ms`, and on resume).
    pub repivot_slack: u64,
    /// How often the peers' head is looked at again after the pivot was chosen (0: never).
    pub status_check_ms: u64,
    /// Peers that must return the same pivot (and head) header.
    pub pivot_agreement: usize,
    /// Peers the sync was given (0: unknown). A peer caught lying no longer counts: when
    /// fewer than `pivot_agreement` of the given peers remain uncaught, that many suffice.
    pub peers_given: usize,
    /// Connected peers the peers' vote waits for before it picks the pivot (0: none), so
    /// that a sync finding its peers by discovery votes among many rather than the first
    /// few (as geth waits for 5 sync peers). The vote starts anyway once
    /// `min_peers_wait_ms` have passed since the start.
    pub min_peers: usize,
    pub min_peers_wait_ms: u64,
    pub header_batch: u64,
    pub body_batch: usize,
    /// Trie nodes per GetNodeData / GetTrieNodes request.
    pub node_batch: usize,
    pub code_batch: usize,
    /// Requests in flight per shard.
    pub max_concurrent_requests: usize,
    pub max_inflight_per_peer: u32,
    pub request_timeout_ms: u64,
    pub min_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Fetch bodies (and receipts) of blocks up to the pivot too, not only after it.
    pub bodies_before_pivot: bool,
    pub fetch_receipts: bool,
    /// Byte limit asked for in snap requests.
    pub snap_response_bytes: u64,
    /// Account ranges per leading nibble of the key space.
    pub snap_ranges_per_nibble: u64,
    /// Sub-ranges a large storage trie is split into.
    pub storage_split: u64,
    /// Whole storage tries asked for in one GetStorageRanges request.
    pub storage_batch: usize,
    /// Accounts whose storage tries are queued or being fetched (and codes queued) at
    /// once: account ranges, and the accounts stored before a restart, wait while more are
    /// open, so that the engine's queues are bounded by this, not by the state (about 400
    /// bytes each; `eth sync` derives it from `--memory-budget`).
    pub storage_backlog_accounts: usize,
    /// Header batches a shard holds (verified, until the coordinator joins them) or has
    /// asked for. At the cap a shard starts only a batch above all of those (the join's
    /// next batch always is), and asks a second peer for its top batch when the answer is
    /// late; so a late batch near the head cannot make the shards hold the chain below
    /// it (`eth sync` derives it from `--memory-budget`).
    pub held_header_batches: usize,
    /// Number of the trusted anchor block (genesis: 0); headers are fetched after it.
    pub anchor_number: u64,
    /// Hash of the anchor block, when known: the header chain must reach it.
    #[serde(skip)]
    pub trusted_anchor: Option<B256>,
    /// Headers, bodies and receipts only: no state is fetched (for peers that serve
    /// history without state).
    pub history_only: bool,
    /// Where the pivot comes from: the peers' vote, or a trusted target (then the pivot is
    /// the target block itself, fetched by hash, and `pivot_distance` does not apply).
    #[serde(skip)]
    pub target_source: TargetSource,
    /// The trusted target known at start (`--sync-target`); the Engine API sets it later
    /// through `Engine::set_target`.
    #[serde(skip)]
    pub sync_target: Option<B256>,
    /// How long a trusted target may stay unknown (no target yet, or no peer has its
    /// header) before the sync stops and says so.
    pub target_timeout_ms: u64,
    /// How long nothing may progress (no peer serves the pivot state even after the pivot
    /// moved, no peer serves receipts, no pivot agreed) before the sync stops with one
    /// line naming what is missing (`--stall-timeout-s`).
    pub stall_timeout_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            mode: SyncMode::Fast,
            pivot_distance: 128,
            pivot_agreement: 3,
            peers_given: 0,
            min_peers: 0,
            min_peers_wait_ms: 10_000,
            repivot_slack: 64,
            status_check_ms: 30_000,
            header_batch: 192,
            body_batch: 32,
            node_batch: 384,
            code_batch: 64,
            max_concurrent_requests: 16,
            max_inflight_per_peer: 4,
            request_timeout_ms: 2_000,
            min_timeout_ms: 250,
            max_timeout_ms: 10_000,
            backoff_base_ms: 250,
            backoff_max_ms: 8_000,
            bodies_before_pivot: true,
            fetch_receipts: true,
            snap_response_bytes: 512 * 1024,
            snap_ranges_per_nibble: 2,
            storage_split: 4,
            storage_batch: 64,
            storage_backlog_accounts: crate::eth::sync::persist::StoreBudget::default()
                .storage_backlog_accounts(),
            held_header_batches: crate::eth::sync::persist::StoreBudget::default()
                .held_header_batches(192),
            anchor_number: 0,
            trusted_anchor: None,
            history_only: false,
            target_source: TargetSource::PeerVote,
            sync_target: None,
            target_timeout_ms: 120_000,
            stall_timeout_ms: 120_000,
        }
    }
}

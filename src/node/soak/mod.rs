//! Faults and soak: every pipeline driven through the `catchup` binary as a black box,
//! trial after trial, each with a fault picked from a seed and injected at a moment picked
//! from the same seed, then checked against the source of truth:
//!
//! | pipeline | source of truth |
//! | --- | --- |
//! | `eth-fast`, `eth-snap` | the served head state root and head hash |
//! | `solana-download` | the generated archive's LtHash (name, manifest, computed) and its bytes |
//! | `solana-repair` | the served ledger's data shreds, byte for byte |
//! | `store` | every record the writer acknowledged, byte for byte |
//!
//! A crash (SIGKILL, SIGTERM, a full or read-only disk) is followed by a restart over the
//! same data directory; the restart's report says how many verified items it received
//! again (`refetched`, must be 0) and the check says how much acknowledged data is gone
//! (`lost`, must be 0). One row per pipeline × fault ([`table`]); a failing trial carries
//! its seed, and `catchup soak --pipeline P --fault F --trials 1 --seed S` replays it.

pub mod eth;
pub mod fault;
pub mod plan;
pub mod proc;
pub mod solana;
pub mod store;
pub mod table;

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

pub use plan::{Fault, Pipeline};
pub use table::{Row, SoakReport};

/// What to run.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// The `catchup` binary every child process runs.
    pub exe: PathBuf,
    pub pipelines: Vec<Pipeline>,
    /// Only these faults (all that apply when empty).
    pub faults: Vec<Fault>,
    /// Trials per pipeline × fault.
    pub trials: u32,
    /// Base seed: trial `k` of a row uses [`plan::trial_seed`]`(seed, k)`.
    pub seed: u64,
    /// No trial starts after this instant (rows then report fewer trials).
    pub deadline: Option<Instant>,
    /// Scratch directory (servers' data, data directories, tmpfs mount points).
    pub work_dir: PathBuf,
    /// `--timeout-s` of each `eth sync` (a sync here takes seconds; one that cannot
    /// finish ends after this).
    pub sync_timeout_s: u64,
}

/// The outcome of one trial.
#[derive(Clone, Debug, Serialize)]
pub struct TrialResult {
    pub pipeline: Pipeline,
    pub fault: Fault,
    pub seed: u64,
    pub passed: bool,
    /// The fault hit the process while it was working (false: it had finished first).
    pub landed: bool,
    /// Verified items received again after the restart (`None`: the pipeline keeps no
    /// verified state across runs).
    pub refetched: Option<u64>,
    /// Acknowledged items missing or changed after the fault.
    pub lost: Option<u64>,
    /// From the restart (or the end of the fault) until the result verified.
    pub recover_ms: Option<u64>,
    /// Peak resident set of the pipeline's own process (servers for flood trials).
    pub peak_rss_kb: u64,
    /// Peak open file descriptors of the flooded server.
    pub peak_fds: Option<u64>,
    /// The one error line the fault was expected to produce.
    pub error_line: Option<String>,
    /// What failed (empty when passed).
    pub detail: String,
    /// The run ended with a result other than the source of truth (a wrong root, head,
    /// archive, shred or record accepted): a safety failure, not only a liveness one.
    pub wrong_result: bool,
}

impl TrialResult {
    pub fn new(pipeline: Pipeline, fault: Fault, seed: u64) -> Self {
        TrialResult {
            pipeline,
            fault,
            seed,
            passed: false,
            landed: true,
            refetched: None,
            lost: None,
            recover_ms: None,
            peak_rss_kb: 0,
            peak_fds: None,
            error_line: None,
            detail: String::new(),
            wrong_result: false,
        }
    }

    /// Record a failed check (the first reason is kept in front).
    pub fn fail(&mut self, why: impl Into<String>) {
        let why = why.into();
        if self.detail.is_empty() {
            self.detail = why;
        } else if self.detail.len() < 2000 {
            self.detail.push_str("; ");
            self.detail.push_str(&why);
        }
    }

    /// Record the error line a fault produced; it must say each cause once.
    pub fn error_line(&mut self, line: &str) {
        let parts: Vec<&str> = line.split(": ").collect();
        if parts.windows(2).any(|w| w[0] == w[1]) {
            self.fail(format!("error line repeats a cause: {line}"));
        }
        if self.error_line.is_none() {
            self.error_line = Some(line.to_string());
        }
    }

    pub fn rss(&mut self, kb: u64) {
        self.peak_rss_kb = self.peak_rss_kb.max(kb);
    }

    /// Passed unless a check failed, and unless something was refetched or lost.
    pub fn finish(mut self) -> Self {
        if self.refetched.is_some_and(|n| n > 0) {
            self.fail(format!(
                "{} verified items refetched after restart",
                self.refetched.unwrap_or(0)
            ));
        }
        if self.lost.is_some_and(|n| n > 0) {
            self.fail(format!(
                "{} acknowledged items lost",
                self.lost.unwrap_or(0)
            ));
        }
        self.passed = self.detail.is_empty();
        self
    }
}

/// Why a whole row could not run (missing root, a setup that failed).
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error("{0}")]
    Skip(String),
    #[error("setting up {what}: {why}")]
    Setup { what: String, why: String },
}

pub type SetupResult<T> = Result<T, SoakError>;

pub(crate) fn setup_err(what: &str, why: impl std::fmt::Display) -> SoakError {
    SoakError::Setup {
        what: what.to_string(),
        why: why.to_string(),
    }
}

/// Run every pipeline × fault row of `cfg`; `on_trial` sees each trial as it ends.
pub fn run(cfg: &SoakConfig, on_trial: &mut dyn FnMut(&TrialResult)) -> SoakReport {
    let started = Instant::now();
    let mut rows = Vec::new();
    for &pipeline in &cfg.pipelines {
        let faults: Vec<Fault> = pipeline
            .faults()
            .iter()
            .copied()
            .filter(|f| cfg.faults.is_empty() || cfg.faults.contains(f))
            .collect();
        let (faults, need_root): (Vec<Fault>, Vec<Fault>) = faults
            .into_iter()
            .partition(|f| !f.needs_root() || proc::is_root());
        rows.extend(skipped_rows(
            pipeline,
            &need_root,
            &SoakError::Skip("needs root to mount a tmpfs data directory".into()),
        ));
        if faults.is_empty() {
            continue;
        }
        let dir = cfg.work_dir.join(pipeline.name());
        let _ = std::fs::create_dir_all(&dir);
        let rows_of = match pipeline {
            Pipeline::EthFast | Pipeline::EthSnap => {
                eth::run_rows(cfg, pipeline, &faults, &dir, on_trial)
            }
            Pipeline::SolanaDownload => solana::run_download_rows(cfg, &faults, &dir, on_trial),
            Pipeline::SolanaRepair => solana::run_repair_rows(cfg, &faults, &dir, on_trial),
            Pipeline::Store => store::run_rows(cfg, &faults, &dir, on_trial),
            Pipeline::All => Vec::new(),
        };
        rows.extend(rows_of);
        let _ = std::fs::remove_dir_all(&dir);
    }
    SoakReport::new(
        cfg.seed,
        cfg.trials,
        rows,
        started.elapsed().as_millis() as u64,
    )
}

/// Run `trials` trials of one row (unless the deadline passed), each with its own seed.
pub(crate) fn run_row(
    cfg: &SoakConfig,
    pipeline: Pipeline,
    fault: Fault,
    on_trial: &mut dyn FnMut(&TrialResult),
    mut trial: impl FnMut(u64) -> TrialResult,
) -> Row {
    let mut row = Row::new(pipeline, fault);
    for k in 0..cfg.trials {
        if cfg.deadline.is_some_and(|d| Instant::now() >= d) {
            row.note = Some("stopped by --minutes".into());
            break;
        }
        let seed = plan::trial_seed(cfg.seed, k);
        let r = trial(seed);
        on_trial(&r);
        row.add(&r);
    }
    row
}

/// Rows for `faults` that could not run at all (setup failed or prerequisite missing).
pub(crate) fn skipped_rows(pipeline: Pipeline, faults: &[Fault], e: &SoakError) -> Vec<Row> {
    faults
        .iter()
        .map(|&f| {
            let mut r = Row::new(pipeline, f);
            match e {
                SoakError::Skip(why) => r.skipped = Some(why.clone()),
                SoakError::Setup { .. } => r.setup_error = Some(e.to_string()),
            }
            r
        })
        .collect()
}

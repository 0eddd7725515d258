//! `catchup soak`: arguments → [`crate::node::soak::SoakConfig`] → run → print.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use crate::node::opts::GlobalOpts;
use crate::node::soak::{self, Fault, Pipeline, SoakConfig};

/// Try to break every pipeline: per trial a fault (SIGKILL, SIGTERM, a full or read-only
/// data directory, stalled or cut connections, a replaced archive, a connection flood, a
/// low fd limit, lying peers) at a moment drawn from the seed, a restart where it was a
/// crash, and a check against the source of truth. Prints one row per pipeline × fault;
/// a failing trial prints the seed that replays it. Exit 1 if any trial failed.
#[derive(Args, Debug)]
pub struct SoakCmd {
    #[arg(long, value_enum, default_value_t = Pipeline::All)]
    pub pipeline: Pipeline,
    /// Only this fault (repeatable; default: every fault that applies).
    #[arg(long = "fault", value_enum)]
    pub faults: Vec<Fault>,
    /// Trials per pipeline × fault.
    #[arg(long, default_value_t = 3)]
    pub trials: u32,
    /// Base seed (default: random, printed). Trial 0 of every row uses it as is.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Start no trial after this many minutes.
    #[arg(long)]
    pub minutes: Option<u64>,
    /// Scratch directory (default: a new one under the temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// `--timeout-s` of each `eth sync` trial run.
    #[arg(long, default_value_t = 45)]
    pub sync_timeout_s: u64,
    /// Print the table as Markdown.
    #[arg(long)]
    pub markdown: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: SoakCmd, _global: &GlobalOpts) -> anyhow::Result<i32> {
    anyhow::ensure!(
        (1..=10_000).contains(&a.trials),
        "--trials must be 1..=10000"
    );
    let seed = a.seed.unwrap_or_else(rand::random);
    let tmp = match &a.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    let cfg = SoakConfig {
        exe: std::env::current_exe()?,
        pipelines: a.pipeline.expand(),
        faults: a.faults.clone(),
        trials: a.trials,
        seed,
        deadline: a
            .minutes
            .map(|m| Instant::now() + Duration::from_secs(m.saturating_mul(60))),
        work_dir: tmp.path().to_path_buf(),
        sync_timeout_s: a.sync_timeout_s.max(5),
    };
    let json = a.json;
    if !json {
        eprintln!("soak: seed {seed}");
    }
    let report = soak::run(&cfg, &mut |t| {
        if !t.passed {
            eprintln!(
                "soak: FAILED {} {} seed {}: {}",
                t.pipeline.name(),
                t.fault.name(),
                t.seed,
                t.detail
            );
        } else if !json {
            eprintln!(
                "soak: ok {} {} seed {}",
                t.pipeline.name(),
                t.fault.name(),
                t.seed
            );
        }
    });
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else if a.markdown {
        print!("{}", report.markdown());
    } else {
        print!("{}", report.text());
    }
    Ok(if report.ok { 0 } else { 1 })
}

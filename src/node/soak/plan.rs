//! Trial planning: pipelines, the faults that apply to each, and every random choice of a
//! trial drawn from its seed (so a seed replays the same trial).

use serde::Serialize;

/// A pipeline the suite drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Pipeline {
    EthFast,
    EthSnap,
    SolanaDownload,
    SolanaRepair,
    Store,
    /// Every pipeline above.
    All,
}

impl Pipeline {
    pub const EACH: [Pipeline; 5] = [
        Pipeline::EthFast,
        Pipeline::EthSnap,
        Pipeline::SolanaDownload,
        Pipeline::SolanaRepair,
        Pipeline::Store,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Pipeline::EthFast => "eth-fast",
            Pipeline::EthSnap => "eth-snap",
            Pipeline::SolanaDownload => "solana-download",
            Pipeline::SolanaRepair => "solana-repair",
            Pipeline::Store => "store",
            Pipeline::All => "all",
        }
    }

    /// `All` expanded.
    pub fn expand(self) -> Vec<Pipeline> {
        match self {
            Pipeline::All => Pipeline::EACH.to_vec(),
            p => vec![p],
        }
    }

    /// The faults that apply, in the order they are run.
    pub fn faults(self) -> &'static [Fault] {
        use Fault::*;
        match self {
            Pipeline::EthFast | Pipeline::EthSnap => &[
                Sigkill,
                Sigterm,
                Enospc,
                ReadOnly,
                StallMidResponse,
                CloseMidFrame,
                InboundFlood,
                FdLimit128,
                Liars,
            ],
            Pipeline::SolanaDownload => &[
                Sigkill,
                Sigterm,
                Enospc,
                ReadOnly,
                StallMidResponse,
                CloseMidFrame,
                ArchiveReplaced,
                InboundFlood,
                FdLimit128,
            ],
            Pipeline::SolanaRepair => &[Sigkill, Sigterm, FdLimit128, Liars],
            Pipeline::Store => &[Sigkill, Sigterm, Enospc, ReadOnly, FdLimit128],
            Pipeline::All => &[],
        }
    }
}

/// A fault the suite injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL at a moment of the run, then a restart.
    Sigkill,
    /// SIGTERM at a moment of the run, then a restart.
    Sigterm,
    /// The data directory (a small tmpfs) fills up; then it is remounted bigger and the
    /// run is started again.
    Enospc,
    /// The data directory is remounted read-only (after a kill: Linux refuses a read-only
    /// remount while files are open for writing); the run is started on it, then on it
    /// remounted read-write.
    ReadOnly,
    /// A peer or mirror stops sending part-way through a response and keeps the
    /// connection open (half-open).
    StallMidResponse,
    /// A peer or mirror closes the connection part-way through a frame or a body.
    CloseMidFrame,
    /// The mirror's archive is replaced part-way through the download (same name, other
    /// bytes, size and ETag).
    ArchiveReplaced,
    /// 1,000 inbound connections at once to the server (memory and fds measured), with
    /// a sync running beside them.
    InboundFlood,
    /// The run with `RLIMIT_NOFILE` 128.
    FdLimit128,
    /// Two of three peers lie (more than a third).
    Liars,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Sigkill => "sigkill",
            Fault::Sigterm => "sigterm",
            Fault::Enospc => "enospc",
            Fault::ReadOnly => "read-only",
            Fault::StallMidResponse => "stall-mid-response",
            Fault::CloseMidFrame => "close-mid-frame",
            Fault::ArchiveReplaced => "archive-replaced",
            Fault::InboundFlood => "inbound-flood",
            Fault::FdLimit128 => "fd-limit-128",
            Fault::Liars => "liars",
        }
    }

    /// Faults that need root (mounts).
    pub fn needs_root(self) -> bool {
        matches!(self, Fault::Enospc | Fault::ReadOnly)
    }
}

/// The seed of trial `k` of a row: the base seed itself for the first trial (so
/// `--trials 1 --seed S` replays a failing trial with seed S), mixed for the others.
pub fn trial_seed(base: u64, k: u32) -> u64 {
    if k == 0 {
        base
    } else {
        splitmix64(base ^ splitmix64(k as u64))
    }
}

pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random choices of one trial.
#[derive(Clone, Debug)]
pub struct TrialRng(u64);

impl TrialRng {
    pub fn new(seed: u64) -> Self {
        TrialRng(splitmix64(seed ^ 0x5eed_50a1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// The moment of a fault as a fraction of the run's progress, in `lo..hi` percent.
    pub fn moment_pct(&mut self, lo: u64, hi: u64) -> u64 {
        self.range(lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_seeds_replay_and_differ() {
        assert_eq!(trial_seed(42, 0), 42);
        assert_eq!(trial_seed(42, 3), trial_seed(42, 3));
        assert_ne!(trial_seed(42, 1), trial_seed(42, 2));
        let mut a = TrialRng::new(7);
        let mut b = TrialRng::new(7);
        let xs: Vec<u64> = (0..8).map(|_| a.range(10, 90)).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.range(10, 90)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (10..90).contains(x)));
        assert_eq!(TrialRng::new(1).range(5, 5), 5);
    }

    #[test]
    fn every_pipeline_has_kill_faults_and_all_expands() {
        for p in Pipeline::EACH {
            assert!(p.faults().contains(&Fault::Sigkill), "{p:?}");
            assert!(p.faults().contains(&Fault::Sigterm), "{p:?}");
        }
        assert_eq!(Pipeline::All.expand().len(), 5);
        assert!(Pipeline::All.faults().is_empty());
    }
}

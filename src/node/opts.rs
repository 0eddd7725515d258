//! Options every command accepts, and how a command turns `--plan FILE`, `--shards` and
//! `--cores` into the shard runtime's configuration (one placement for every command).

use catchup_shards::RuntimeConfig;
use catchup_tuning::Plan;

use crate::node::obs::LogFormat;

/// Options every command accepts.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalOpts {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Serve Prometheus `/metrics` and JSON `/status` on this address while the command
    /// runs (for `catchup status`: the endpoint to read).
    #[arg(long, global = true, value_name = "ADDR")]
    pub admin: Option<std::net::SocketAddr>,
    /// Tuning plan (TOML from `catchup tune --out`): shards are pinned to its cores.
    #[arg(long, global = true, value_name = "FILE")]
    pub plan: Option<std::path::PathBuf>,
}

/// Parse a `--cores` value: a kernel-style CPU list (`0,1`, `2-5,8`).
pub fn parse_cores(s: &str) -> anyhow::Result<Vec<usize>> {
    let v = catchup_tuning::topology::parse_cpu_list(s)
        .map_err(|e| anyhow::anyhow!("--cores {s:?}: {e}"))?;
    if v.is_empty() {
        anyhow::bail!("--cores {s:?}: no CPUs listed");
    }
    Ok(v)
}

/// Parse a size in bytes: a plain number, or a number with a unit, binary (`KiB`, `MiB`,
/// `GiB`, `TiB`, or `K`, `M`, `G`, `T`) or decimal (`kB`, `MB`, `GB`, `TB`); `512MiB`,
/// `1.5GiB`, `268435456`. For clap's `value_parser`.
pub fn parse_size_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use bytes, KiB, MiB, GiB, TiB, kB, MB, GB or TB)"
            ))
        }
    };
    let bad = || format!("{s:?}: not a size (e.g. 512MiB, 2GiB, 268435456)");
    let bytes = if num.contains('.') {
        let v: f64 = num.parse().map_err(|_| bad())?;
        let b = v * mult as f64;
        if !b.is_finite() || b < 0.0 || b >= u64::MAX as f64 {
            return Err(bad());
        }
        b as u64
    } else {
        let v: u64 = num.parse().map_err(|_| bad())?;
        v.checked_mul(mult).ok_or_else(bad)?
    };
    Ok(bytes)
}

/// Peak resident set size of this process (`VmHWM`), in bytes; `None` where
/// `/proc/self/status` is unreadable.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The plan given with the global `--plan FILE`, if any.
pub fn load_plan(global: &GlobalOpts) -> anyhow::Result<Option<Plan>> {
    match &global.plan {
        None => Ok(None),
        Some(p) => Ok(Some(crate::node::view::publish_plan(Plan::load(p)?))),
    }
}

/// The shard runtime configuration for a command: `cores` (from `--cores`) wins, then the
/// `--plan` file's cores, then the CPUs this process may use. `shards` defaults to the
/// plan's shard count, else one per usable CPU.
pub fn runtime_config(
    global: &GlobalOpts,
    shards: Option<usize>,
    cores: Option<Vec<usize>>,
) -> anyhow::Result<RuntimeConfig> {
    let plan = load_plan(global)?;
    let plan_cores = plan.as_ref().map(Plan::cores);
    let n = shards
        .or(plan_cores.as_ref().map(Vec::len))
        .or(cores.as_ref().map(Vec::len))
        .unwrap_or_else(|| catchup_shards::allowed_cores().len().max(1));
    if n == 0 {
        anyhow::bail!("--shards 0: at least one shard is needed");
    }
    let cores = cores.or(plan_cores);
    let allowed = catchup_shards::allowed_cores();
    // Reject bad cores here with one clear line rather than at executor start.
    catchup_shards::placement(n, cores.as_deref(), &allowed)?;
    Ok(RuntimeConfig {
        cores,
        ..RuntimeConfig::new(n)
    })
}

/// Where a command with two pools of shards (I/O shards that download, compute shards that
/// index) places them: the command's cores (`--plan`, else the CPUs this process may use),
/// one executor per core while there are enough: the I/O shards on the last cores, the
/// compute shards on the others. With too few cores the two pools share cores, and the
/// returned note says so (and what helps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwoPools {
    pub io_cores: Vec<usize>,
    pub compute_cores: Vec<usize>,
    pub note: Option<String>,
}

pub fn place_two_pools(cores: &[usize], io_shards: usize, compute_shards: usize) -> TwoPools {
    let (io, compute) = (io_shards.max(1), compute_shards.max(1));
    let cores: Vec<usize> = if cores.is_empty() {
        vec![0]
    } else {
        cores.to_vec()
    };
    let n = cores.len();
    let pick = |from: usize, count: usize| -> Vec<usize> {
        (0..count).map(|i| cores[(from + i) % n]).collect()
    };
    if n >= io + compute {
        return TwoPools {
            io_cores: pick(n - io, io),
            compute_cores: pick(0, compute),
            note: None,
        };
    }
    let io_cores = pick(n.saturating_sub(io.min(n)), io);
    let compute_cores = pick(0, compute);
    TwoPools {
        io_cores,
        compute_cores,
        note: Some(format!(
            "{io} download and {compute} index shard(s) on {n} core(s): shards share cores \
             (give more cores with --plan, or fewer shards with --download-shards/--shards)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_pools_get_their_own_cores_when_there_are_enough() {
        let p = place_two_pools(&[2, 3, 4, 5, 6], 2, 3);
        assert_eq!(p.io_cores, vec![5, 6]);
        assert_eq!(p.compute_cores, vec![2, 3, 4]);
        assert!(p.note.is_none());
    }

    #[test]
    fn too_few_cores_share_and_say_so() {
        let p = place_two_pools(&[0, 1], 1, 2);
        assert_eq!(p.io_cores, vec![1]);
        assert_eq!(p.compute_cores, vec![0, 1]);
        assert!(p.note.as_deref().unwrap().contains("share cores"));
        let one = place_two_pools(&[7], 2, 2);
        assert_eq!(one.io_cores, vec![7, 7]);
        assert_eq!(one.compute_cores, vec![7, 7]);
    }
}

#[cfg(test)]
mod size_tests {
    use super::parse_size_bytes;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_size_bytes("268435456"), Ok(268_435_456));
        assert_eq!(parse_size_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_size_bytes("2gib"), Ok(2 << 30));
        assert_eq!(parse_size_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size_bytes("3 GB"), Ok(3_000_000_000));
        assert_eq!(parse_size_bytes("64KiB"), Ok(64 << 10));
        assert!(parse_size_bytes("12 parsecs").is_err());
        assert!(parse_size_bytes("MiB").is_err());
        assert!(parse_size_bytes("").is_err());
        assert!(parse_size_bytes("99999999999TiB").is_err());
    }
}

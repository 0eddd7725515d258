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

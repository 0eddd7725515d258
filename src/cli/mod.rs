//! The `catchup` command line. Each family of commands lives in its own module; this file
//! only joins them.

use clap::{Parser, Subcommand};

use crate::node::obs::{init_logging, LogFormat};

pub mod bench;
pub mod demo;
pub mod doctor;
pub mod eth;
pub mod eth_net;
pub mod eth_sync;
pub mod repair;
pub mod snapshot_net;
pub mod solana;
pub mod status;
pub mod tune;

/// catchup brings a validator from zero to the chain tip as fast as its hardware allows:
/// Ethereum fast/snap sync and Solana snapshot catch-up on a thread-per-core runtime.
#[derive(Parser, Debug)]
#[command(name = "catchup", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a local devnet on loopback (Ethereum and Solana), sync it and verify it.
    Demo(demo::DemoCmd),
    /// Per-shard throughput benchmarks (store, ...).
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Ethereum: verify chain data, compute state roots, sync, serve.
    #[command(subcommand)]
    Eth(eth::EthCmd),
    /// Solana: snapshots, catch-up, shred repair.
    #[command(subcommand)]
    Solana(solana::SolanaCmd),
    /// Print the status and metrics of a running node (`--admin ADDR`).
    Status(status::StatusCmd),
    /// Audit this host: source bandwidth, io_uring, disk, peers, locked memory, AF_XDP, cores.
    Doctor(doctor::DoctorCmd),
    /// Plan shards, cores, NIC queues and IRQ cores for this host.
    Tune(tune::TuneCmd),
}

/// Parse the command line, run the command, and return the process exit code.
/// Errors are printed as one line (with their causes) on stderr.
pub fn main() -> i32 {
    let cli = Cli::parse();
    // The demo prints its own summary; its component logs stay at warnings unless
    // RUST_LOG asks for more.
    let default_level = if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    init_logging(cli.global.log_format, default_level);
    let _admin = match crate::node::admin::start_for_command(
        cli.global.admin,
        matches!(cli.command, Command::Status(_)),
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    };
    if let Err(e) = tune::load_plan(&cli.global) {
        eprintln!("error: {e:#}");
        return 2;
    }
    let result = match cli.command {
        Command::Bench(cmd) => bench::run(cmd, &cli.global),
        Command::Demo(cmd) => demo::run(cmd, &cli.global),
        Command::Eth(cmd) => eth::run(cmd, &cli.global),
        Command::Solana(cmd) => solana::run(cmd, &cli.global),
        Command::Status(cmd) => status::run(cmd, &cli.global),
        Command::Doctor(cmd) => doctor::run(cmd, &cli.global),
        Command::Tune(cmd) => tune::run(cmd, &cli.global),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

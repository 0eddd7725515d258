//! The `catchup` command line. Each family of commands lives in its own module; this file
//! only joins them.

use clap::{Parser, Subcommand};

use crate::obs::{init_logging, LogFormat};

pub mod bench;
pub mod eth;
pub mod eth_sync;
pub mod repair;
pub mod snapshot_net;
pub mod solana;

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
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Per-shard throughput benchmarks (store, ...).
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Ethereum: verify chain data, compute state roots, sync, serve.
    #[command(subcommand)]
    Eth(eth::EthCmd),
    /// Solana: snapshots, catch-up, shred repair.
    #[command(subcommand)]
    Solana(solana::SolanaCmd),
}

/// Parse the command line, run the command, and return the process exit code.
/// Errors are printed as one line (with their causes) on stderr.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(cli.global.log_format);
    let result = match cli.command {
        Command::Bench(cmd) => bench::run(cmd, &cli.global),
        Command::Eth(cmd) => eth::run(cmd, &cli.global),
        Command::Solana(cmd) => solana::run(cmd, &cli.global),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

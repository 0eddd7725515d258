//! The `catchup` command line. Each family of commands lives in its own module; this file
//! only joins them.

use clap::{Parser, Subcommand};

use crate::node::obs::init_logging;

pub mod bench;
pub mod eth;
pub mod soak;
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

pub use crate::node::opts::GlobalOpts;

// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a local devnet on loopback (Ethereum and Solana), sync it and verify it.
    Demo(crate::node::demo::DemoCmd),
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
    /// Audit this host for a job (source bandwidth, io_uring, disk, peers, locked memory,
    /// AF_XDP, cores, memory, free disk); exit 1 when a check fails. `--fix` prints the
    /// nftables rules that open catchup's ports.
    Doctor(crate::node::doctor::DoctorCmd),
    /// Plan shards, cores, NIC queues and IRQ cores for this host.
    Tune(tune::TuneCmd),
    /// Faults and soak: inject faults into every pipeline and check what survived.
    Soak(soak::SoakCmd),
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
    // `status` reads the endpoint and `doctor --fix` only names its port: neither serves it.
    let admin_is_not_served = match &cli.command {
        Command::Status(_) => true,
        Command::Doctor(d) => d.fix,
        _ => false,
    };
    let _admin = match crate::node::admin::start_for_command(cli.global.admin, admin_is_not_served)
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    };
    if let Err(e) = crate::node::opts::load_plan(&cli.global) {
        eprintln!("error: {}", one_line(&e));
        return 2;
    }
    let result = match cli.command {
        Command::Bench(cmd) => bench::run(cmd, &cli.global),
        Command::Demo(cmd) => crate::node::demo::run(cmd, &cli.global),
        Command::Eth(cmd) => eth::run(cmd, &cli.global),
        Command::Solana(cmd) => solana::run(cmd, &cli.global),
        Command::Status(cmd) => status::run(cmd, &cli.global),
        Command::Doctor(cmd) => crate::node::doctor::run(cmd, &cli.global),
        Command::Tune(cmd) => tune::run(cmd, &cli.global),
        Command::Soak(cmd) => soak::run(cmd, &cli.global),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            1
        }
    }
}

/// An error and its causes on one line, `: `-separated; a cause whose text its parent's
/// message already ends with (an error type that prints its source) is not repeated.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !line.ends_with(&c) {
            line.push_str(": ");
            line.push_str(&c);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_line_does_not_repeat_a_cause_its_parent_printed() {
        #[derive(Debug, thiserror::Error)]
        #[error("journal I/O on x.tmp: {source}")]
        struct J {
            #[source]
            source: std::io::Error,
        }
        let io = std::io::Error::from_raw_os_error(28);
        let e = anyhow::Error::new(J { source: io });
        let line = super::one_line(&e);
        assert_eq!(line.matches("No space left on device").count(), 1, "{line}");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::one_line(&e), "outer: inner");
    }
}

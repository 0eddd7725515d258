//! `catchup solana …` commands.

use clap::Subcommand;

use super::GlobalOpts;

#[derive(Subcommand, Debug)]
pub enum SolanaCmd {
    /// Catch up from snapshot sources: download in parallel ranges, verify while downloading.
    Sync(super::snapshot_net::SyncArgs),
}

pub fn run(cmd: SolanaCmd, _global: &GlobalOpts) -> anyhow::Result<i32> {
    match cmd {
        SolanaCmd::Sync(args) => super::snapshot_net::run_sync(args, _global),
    }
}

//! `catchup solana …` commands.

use clap::Subcommand;

use super::GlobalOpts;

#[derive(Subcommand, Debug)]
pub enum SolanaCmd {
    /// Catch up from snapshot sources: download in parallel ranges, verify while downloading.
    Sync(super::snapshot_net::SyncArgs),
    /// Repair the shreds of a slot range from repair peers, over UDP or AF_XDP.
    Repair(super::repair::RepairArgs),
    /// Answer shred repair requests from shred files or a generated ledger.
    ServeRepair(super::repair::ServeRepairArgs),
}

pub fn run(cmd: SolanaCmd, _global: &GlobalOpts) -> anyhow::Result<i32> {
    match cmd {
        SolanaCmd::Sync(args) => super::snapshot_net::run_sync(args, _global),
        SolanaCmd::Repair(a) => super::repair::run_repair(a, _global),
        SolanaCmd::ServeRepair(a) => super::repair::run_serve(a, _global),
    }
}

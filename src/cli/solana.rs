//! `catchup solana …` commands.

use clap::Subcommand;

use crate::node::opts::GlobalOpts;

#[derive(Subcommand, Debug)]
pub enum SolanaCmd {
    /// Snapshot archives: verify, inspect, generate, serve over HTTP.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Catch up from snapshot sources: download in parallel ranges, verify while downloading.
    Sync(Box<crate::solana::sync_cmd::SyncArgs>),
    /// Repair the shreds of a slot range from repair peers, over UDP or AF_XDP.
    Repair(crate::solana::repair::cmd::RepairArgs),
    /// Answer shred repair requests from shred files or a generated ledger.
    ServeRepair(crate::solana::repair::cmd::ServeRepairArgs),
    /// Write a new Solana CLI keypair file and print its public key.
    Keygen(crate::solana::gossip::cmd::KeygenArgs),
    /// Run a gossip node over UDP (join, answer, pull, advertise contact info and snapshots).
    GossipNode(crate::solana::gossip::cmd::GossipNodeArgs),
}

pub fn run(cmd: SolanaCmd, global: &GlobalOpts) -> anyhow::Result<i32> {
    match cmd {
        SolanaCmd::Snapshot(SnapshotCmd::Verify(a)) => {
            crate::solana::snapshot::cmd::verify(a, global)
        }
        SolanaCmd::Snapshot(SnapshotCmd::Inspect(a)) => {
            crate::solana::snapshot::cmd::inspect(a, global)
        }
        SolanaCmd::Snapshot(SnapshotCmd::Generate(a)) => {
            crate::solana::snapshot::cmd::gen(a, global)
        }
        SolanaCmd::Snapshot(SnapshotCmd::Serve(a)) => crate::solana::sync_cmd::run_serve(a, global),
        SolanaCmd::Sync(args) => crate::solana::sync_cmd::run_sync(*args, global),
        SolanaCmd::Repair(a) => crate::solana::repair::cmd::run_repair(a, global),
        SolanaCmd::ServeRepair(a) => crate::solana::repair::cmd::run_serve(a, global),
        SolanaCmd::Keygen(a) => crate::solana::gossip::cmd::run_keygen(a),
        SolanaCmd::GossipNode(a) => crate::solana::gossip::cmd::run_gossip_node(a),
    }
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Unpack a snapshot archive (and optionally an incremental on top) into a data
    /// directory, index its accounts on all shards, and verify the accounts LtHash and the
    /// capitalization against the manifest. Exit 1 on any failure.
    Verify(crate::solana::snapshot::cmd::VerifyArgs),
    /// Print a snapshot's manifest fields and, with --accounts, every live account. The
    /// archive is unpacked into a temporary directory and verified on the way.
    Inspect(crate::solana::snapshot::cmd::InspectArgs),
    /// Write a valid snapshot archive of generated accounts (Agave naming and layout,
    /// correct LtHash and capitalization), streaming to disk.
    Generate(crate::solana::snapshot::cmd::GenerateArgs),
    /// Serve snapshot archives over HTTP like an RPC node (303 redirects, Range, HEAD).
    Serve(crate::solana::sync_cmd::ServeArgs),
}

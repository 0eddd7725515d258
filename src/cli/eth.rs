//! `catchup eth …` commands.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::node::opts::GlobalOpts;

#[derive(Subcommand, Debug)]
pub enum EthCmd {
    /// Check every block of era1 archives: header hash chain and header rules (gas, time,
    /// base fee), transactions root, ommers hash, withdrawals root, receipts root, total
    /// difficulty and the accumulator. Exits 1 naming the failing block and field.
    VerifyEra1(crate::eth::verify::VerifyEra1Args),
    /// Compute a state root from a genesis allocation or a geth state dump, with the
    /// number of accounts, storage slots and contracts.
    StateRoot(crate::eth::verify::StateRootArgs),
    /// Decode and check the blocks of BlockchainTests JSON files without execution;
    /// for blocks marked invalid, report which check caught them.
    VerifyBlocktest(crate::eth::verify::VerifyBlocktestArgs),
    /// Run the fast/snap sync engines against simulated peers (seeded, deterministic).
    Sim(crate::eth::sync::sim_cmd::SimArgs),
    /// Serve a chain and its state to other nodes over RLPx (eth/66-70, snap/1); with
    /// --grow-every-ms a live chain that keeps only its last --state-history states.
    Serve(crate::eth::net::cmd::ServeArgs),
    /// Sync a chain and its state from peers over RLPx with the fast or snap engines.
    Sync(crate::eth::net::cmd::SyncArgs),
    /// Write the state an `eth sync --datadir D` verified, at its pivot, as JSON lines
    /// (geth's iterative dump shape, with the pivot header on the first line).
    ExportState(ExportStateArgs),
    /// Write the headers, bodies, receipts and total difficulties an `eth sync --datadir
    /// D` verified as e2store history files (era1: complete pre-merge eras; ere: every
    /// era, pre- and post-merge).
    ExportHistory(ExportHistoryArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ExportHistoryArgs {
    /// Data directory of a finished `eth sync` (with receipts).
    #[arg(long, value_name = "D")]
    pub datadir: PathBuf,
    /// The chain's geth genesis file (block 0 and the starting total difficulty).
    #[arg(long, value_name = "FILE")]
    pub genesis: PathBuf,
    #[arg(long, value_enum, default_value_t = crate::eth::export::HistoryFormat::Era1)]
    pub format: crate::eth::export::HistoryFormat,
    /// Network name in the file names (default: from the genesis hash).
    #[arg(long)]
    pub network: Option<String>,
    /// Directory for the files.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct ExportStateArgs {
    /// Data directory of a finished `eth sync`.
    #[arg(long, value_name = "D")]
    pub datadir: PathBuf,
    /// The JSON-lines file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run(cmd: EthCmd, _global: &GlobalOpts) -> anyhow::Result<i32> {
    match cmd {
        EthCmd::VerifyEra1(a) => crate::eth::verify::verify_era1(&a),
        EthCmd::StateRoot(a) => crate::eth::verify::state_root(&a),
        EthCmd::VerifyBlocktest(a) => crate::eth::verify::verify_blocktest(&a),
        EthCmd::Sim(a) => crate::eth::sync::sim_cmd::run_sim(&a, _global),
        EthCmd::Serve(a) => crate::eth::net::cmd::run_serve(&a, _global),
        EthCmd::Sync(a) => crate::eth::net::cmd::run_sync_cmd(&a, _global),
        EthCmd::ExportHistory(a) => {
            let files = crate::eth::export::export_history(
                &a.datadir,
                &a.genesis,
                a.network.as_deref(),
                a.format,
                &a.out,
            )?;
            println!("{}", serde_json::to_string(&files)?);
            Ok(0)
        }
        EthCmd::ExportState(a) => {
            let r = crate::eth::export::export_state(&a.datadir, &a.out)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(0)
        }
    }
}

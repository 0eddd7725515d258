//! `catchup solana …` commands.

use clap::Subcommand;

use super::GlobalOpts;

#[derive(Subcommand, Debug)]
pub enum SolanaCmd {}

pub fn run(cmd: SolanaCmd, _global: &GlobalOpts) -> anyhow::Result<i32> {
    match cmd {}
}

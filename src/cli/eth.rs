//! `catchup eth …` commands.

use clap::Subcommand;

use super::GlobalOpts;

#[derive(Subcommand, Debug)]
pub enum EthCmd {}

pub fn run(cmd: EthCmd, _global: &GlobalOpts) -> anyhow::Result<i32> {
    match cmd {}
}

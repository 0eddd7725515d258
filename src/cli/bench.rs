//! `catchup bench …`: per-shard throughput benchmarks. Each lives with the code it
//! measures; this file only names them.

use clap::Subcommand;

use crate::node::opts::GlobalOpts;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Per-shard store put throughput (records/s, MB/s) and the whole-node total, beside a
    /// plain sequential-write baseline measured in the same run.
    Store(crate::node::bench_store::StoreBenchArgs),
    /// Test helper: append records in batches, printing `ack FIRST LAST` after each batch
    /// is durable, until killed or done.
    #[command(hide = true)]
    StoreCrashWriter(crate::node::bench_store::CrashWriterArgs),
    /// Ethereum verification per shard: trie nodes, headers and receipts roots verified per
    /// second, each beside the keccak-only rate of the same bytes and their ratio.
    Eth(crate::eth::bench::EthBenchArgs),
    /// Ethereum sync at scale: a generated state (--accounts, --storage-slots) served by
    /// RLPx peers on loopback and synced (snap and/or fast) into a scratch data directory;
    /// state nodes/s per shard beside keccak over the same nodes, peak RSS, bytes on disk
    /// and the time of the stored-root walk, whose root must equal the generated one.
    EthScale(crate::eth::bench_scale::EthScaleArgs),
    /// Solana snapshot pipeline: archive bytes/s through decompress, unpack, index and
    /// LtHash, beside raw zstd and `zstd -d | tar -x` of the same archive.
    Snapshot(crate::solana::snapshot::cmd::SnapshotBenchArgs),
    /// Shred repair: shreds/s per shard over AF_XDP and over UDP on one veth pair in the
    /// same run, and packets/s of the AF_XDP receive path alone (needs root).
    Repair(crate::solana::repair::cmd::BenchRepairArgs),
    /// RLPx frames/s and MB/s per shard (snappy + AES-CTR + keccak MACs) beside raw AES-CTR +
    /// keccak of the same bytes, with the ratio.
    Rlpx(crate::eth::net::cmd::RlpxBenchArgs),
}

pub fn run(cmd: BenchCmd, _global: &GlobalOpts) -> anyhow::Result<i32> {
    match cmd {
        BenchCmd::Store(args) => crate::node::bench_store::bench_store(args, _global),
        BenchCmd::StoreCrashWriter(args) => crate::node::bench_store::crash_writer(args),
        BenchCmd::Eth(args) => crate::eth::bench::bench_eth(&args, _global),
        BenchCmd::EthScale(args) => crate::eth::bench_scale::bench_eth_scale(&args, _global),
        BenchCmd::Snapshot(args) => crate::solana::snapshot::cmd::bench_snapshot(&args),
        BenchCmd::Repair(args) => crate::solana::repair::cmd::run_bench(args, _global),
        BenchCmd::Rlpx(args) => crate::eth::net::cmd::run_bench_rlpx(&args, _global),
    }
}

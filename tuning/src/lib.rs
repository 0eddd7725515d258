//! Host topology, NIC queues and IRQs to a shard/core/queue plan.
//!
//! * [`topology::read_topology`] and [`topology::read_nic`] read a host (from a
//!   [`topology::HostRoot`], so tests can point them at a fake tree: see [`fake`]).
//! * [`plan::make_plan`] turns that into a [`plan::Plan`] (Seastar perftune's `mq` / `sq` /
//!   `sq_split` IRQ models), which serialises to TOML (`catchup tune --out`) and is read
//!   back by `--plan FILE` ([`plan::Plan::load`]); [`plan::Plan::cores`] is what the shard
//!   runtime pins to.
//! * Example plans live in `tuning/profiles/`.

use std::path::PathBuf;

pub mod apply;
pub mod fake;
pub mod plan;
pub mod topology;

pub use plan::{make_plan, IrqMode, Plan};
pub use topology::{read_nic, read_topology, HostRoot, Nic, Topology};

/// What went wrong reading the host or a plan.
#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Parse { path: PathBuf, problem: String },
    #[error("network interface {name:?} not found ({path} does not exist)")]
    NoSuchInterface { name: String, path: PathBuf },
    #[error("{name:?} is not a valid network interface name")]
    BadInterface { name: String },
    #[error("no CPUs found")]
    NoCpus,
    #[error(
        "shard count {shards} is out of range: must be 1..={}",
        plan::MAX_PLAN_SHARDS
    )]
    BadShardCount { shards: usize },
    #[error("plan {origin}: {problem}")]
    BadPlan { origin: String, problem: String },
}

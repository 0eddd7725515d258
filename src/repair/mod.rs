//! Shred repair: the sans-IO engine, its deterministic simulator, and the network drivers
//! (UDP on glommio, AF_XDP).

pub mod driver;
pub mod engine;
pub mod netns;
pub mod server;
pub mod sim;
pub mod xdp_driver;

pub use driver::{
    repair, repair_after_snapshot, NetPath, PeerSpec, RepairJob, RepairOutcome, ShardOutcome,
};
pub use engine::{Action, EngineConfig, LeaderSchedule, PeerId, Progress, RepairEngine};

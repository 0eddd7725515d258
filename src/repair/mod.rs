//! Shred repair: the sans-IO engine, its deterministic simulator, and the network drivers
//! (UDP on glommio, AF_XDP).

pub mod engine;
pub mod sim;

pub use engine::{Action, EngineConfig, LeaderSchedule, PeerId, Progress, RepairEngine};

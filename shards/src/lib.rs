//! Thread-per-core shard runtime: pinned glommio executors, a channel mesh, ownership maps.
//!
//! # Starting shards
//!
//! ```
//! use catchup_shards::{run, RuntimeConfig, Shard, ShardId};
//!
//! let cfg = RuntimeConfig { channel_capacity: 4, ..RuntimeConfig::new(2) };
//! // Every shard sends its id to every peer, then counts what it received.
//! let received: Vec<usize> = run(&cfg, |shard: Shard<u64>| async move {
//!     for peer in shard.peers() {
//!         shard.send(peer, shard.id().0 as u64).await.unwrap();
//!     }
//!     shard.close_outgoing();
//!     let mut n = 0;
//!     while let Some((_from, _msg)) = shard.recv().await {
//!         n += 1;
//!     }
//!     n
//! })
//! .unwrap();
//! assert_eq!(received, vec![1, 1]);
//! ```
//!
//! * [`run`] starts `cfg.shards` glommio executors, shard `i` pinned with
//!   `Placement::Fixed(cores[i % cores.len()])`, where `cores` is `cfg.cores` (from
//!   `--cores` or a tuning plan) or else [`allowed_cores`] (`core_affinity`). More shards
//!   than cores is allowed: shards then share cores.
//! * Shards share nothing mutable. Each ordered pair of shards has its own bounded glommio
//!   `shared_channel` of `cfg.channel_capacity` messages; [`Shard::send`] waits while it is
//!   full (back-pressure), [`Shard::try_send`] returns [`SendError::Full`]. Messages from
//!   one sender arrive in the order sent. A shard does not message itself.
//! * [`Shard::recv`] yields `(from, msg)` from any peer, and `None` once every peer has
//!   called [`Shard::close_outgoing`] (done automatically when its function returns).
//! * Shard loops are event driven: they await whichever comes first of a mesh message
//!   ([`Shard::recv`]), a local event ([`notify::Notify`]) and their next deadline, then
//!   drain what else is waiting without blocking ([`Shard::try_recv`]). An idle shard
//!   sleeps until its next deadline.
//! * SIGINT/SIGTERM set a flag read by [`Shard::shutting_down`]; shard loops check it when
//!   they wake (at their next deadline at the latest), stop taking work, flush, and return,
//!   and the process then exits 0. A second signal exits at once with code 130.
//! * io_memory per executor is sized by [`io_memory_per_shard`] so that N shards start
//!   with or without `CAP_IPC_LOCK` under `RLIMIT_MEMLOCK`.
//!
//! # Ownership
//! [`ownership`] maps trie paths, 32-byte keys, byte/block ranges and peers to shards.

pub mod metrics;
pub mod notify;
pub mod ownership;
pub mod runtime;

pub use runtime::{
    allowed_cores, io_memory_per_shard, placement, run, run_with_flag, Recv, RuntimeConfig,
    RuntimeError, SendError, Shard,
};

/// Index of a shard, `0..shards`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

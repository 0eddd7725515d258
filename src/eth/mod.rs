//! Ethereum: the sync engines and their drivers, the devp2p wire, and serving.
//!
//! - [`sync`]: sans-IO fast and snap sync engines (one per shard), peers' bookkeeping, the
//!   per-shard store and journal, the seeded simulator, the per-shard driver.
//! - [`net`]: RLPx connections on glommio, eth/snap requests with ids and deadlines, the
//!   wire drivers behind `catchup eth sync`, the serving node behind `catchup eth serve`.
//! - [`engine_api`]: the authenticated Engine API (`--authrpc`) through which a consensus
//!   client gives the sync its target.
//! - [`serve`]: answers eth and snap requests from a chain and a state (used on the wire
//!   and in the simulator).

pub mod bench;
pub mod bench_scale;
pub mod chain_index;
pub mod engine_api;
pub mod export;
pub mod net;
pub mod serve;
pub mod stored;
pub mod sync;
pub mod verify;
pub mod walk;

//! Solana snapshot catch-up download: discovery, source grouping, the chunk coordinator,
//! the journal of finished chunks, the HTTP client and server drivers on glommio.
//!
//! ```text
//! --source URL… / --rpc URL ─► probe (HEAD, 303 → archive name, 1-byte ranged GET)
//!   ─► group by (name, size, ETag/Last-Modified), newest slot several sources agree on
//!   ─► coordinator (shard 0) hands out chunks; each shard fetches for the sources it owns
//!   ─► DMA writes at chunk offsets into D/download/<name>; bitmap journaled after fdatasync
//!   ─► contiguous prefix fed to the sink thread (snapshot pipeline: unpack, index, LtHash)
//!   ─► length check; on a verification failure, chunks are cross-checked across sources,
//!      the liar is dropped and its chunks fetched again
//! ```
//!
//! Entry points:
//! - [`sync::sync`]`(SyncConfig, Arc<SinkFactory>, ProgressFn) -> Result<SyncReport, SyncError>`
//! - [`sink::PipelineSink::factory`]`(datadir, PipelineConfig)`, [`sink::StreamCheckSink`]
//! - [`serve::serve_blocking`]`(ServeConfig, stop, on_ready)`
//! - [`demo::run_demo`]`(&DemoConfig, ProgressFn) -> Result<DemoReport, DemoError>`
//! - [`coordinator::Coordinator`]: the sans-IO chunk state machine (`handle(now_ms, Event) -> Vec<Action>`).

pub mod client;
pub mod coordinator;
pub mod demo;
pub mod locate;
pub mod serve;
pub mod sink;
pub mod source;
pub mod sync;

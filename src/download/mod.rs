//! Solana snapshot catch-up download: discovery, source grouping, the chunk coordinator,
//! the journal of finished chunks, the HTTP client and server drivers on glommio.

pub mod client;
pub mod coordinator;
pub mod demo;
pub mod serve;
pub mod sink;
pub mod source;
pub mod sync;

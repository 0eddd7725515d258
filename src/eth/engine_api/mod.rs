//! The authenticated Engine API (`catchup eth sync --authrpc ADDR --jwt-secret FILE`), as
//! the ethereum/execution-apis specification defines it: JSON-RPC over HTTP POST, each
//! request carrying a JWT (HS256, `iat` within ±60 s) signed with the shared secret.
//!
//! While the node syncs it answers `engine_exchangeCapabilities`, and
//! `engine_forkchoiceUpdatedV1–V3` / `engine_newPayloadV1–V4` with SYNCING. The newest
//! forkchoice head (or finalized block, `--sync-target-from finalized`) becomes the sync
//! target: the engine fetches that header by hash and syncs its state and chain.
//!
//! - [`jwt`]: the token check and the secret file.
//! - [`rpc`]: the methods (sans-IO).
//! - [`payload`]: a payload's header rebuilt for the `blockHash` check.
//! - [`server`]: the HTTP/1.1 server on the sync's shard 0.

pub mod jwt;
pub mod payload;
pub mod rpc;
pub mod server;

use std::net::SocketAddr;

pub use jwt::JwtSecret;

/// What shard 0 needs to serve the Engine API.
#[derive(Debug, Clone)]
pub struct AuthRpc {
    /// The address to bind (already claimed by the command, port resolved).
    pub addr: SocketAddr,
    pub secret: JwtSecret,
    /// Sync to the forkchoice's finalized block instead of its head.
    pub from_finalized: bool,
    /// The chain id `eth_chainId` answers.
    pub chain_id: u64,
}

//! What a sync over RLPx is given and what it reports ([`NetSyncConfig`],
//! [`NetSyncReport`]), and `perform`: an engine request turned into eth/snap messages on
//! the wire and the answer back into a response. The driver that runs the engines is
//! [`super::sync_sharded`].

use alloy_primitives::B256;
use catchup_devp2p::enode::Enode;
use catchup_devp2p::eth::{EthMessage, HashOrNumber};
use serde::Serialize;

use crate::eth::sync::config::SyncConfig;
use crate::eth::sync::engine::{Progress, Status};
use crate::eth::sync::types::{Header, Request, Response};

use super::conn::{NetConfig, NetError};
use super::convert;
use super::eth_peer::{EmptyResponder, EthPeer, StatusInfo};
use super::wire::Wire;

/// How to run a sync over the network.
#[derive(Debug, Clone)]
pub struct NetSyncConfig {
    pub sync: SyncConfig,
    /// Engine instances (key-space shards).
    pub shards: usize,
    pub peers: Vec<Enode>,
    pub net: NetConfig,
    /// What we announce in Status (a node at genesis).
    pub status: StatusInfo,
    /// Give up after this long.
    pub max_runtime_ms: u64,
    /// Requests queued per peer before new ones are refused (answered with a timeout).
    pub peer_queue_len: usize,
}

/// Per-peer outcome.
#[derive(Debug, Clone, Serialize)]
pub struct NetPeerReport {
    pub peer: String,
    pub client: String,
    pub eth_version: u64,
    pub requests: u64,
    pub answered: u64,
    pub timeouts: u64,
    pub dropped_by_us: bool,
    pub error: Option<String>,
    /// Times the peer was lost and dialed again.
    pub reconnects: u64,
    /// Blocks the peer serves, `(earliest, latest)`: its eth/69+ Status, then its latest
    /// BlockRangeUpdate (`None` before eth/69).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_range: Option<(u64, u64)>,
}

/// Outcome of a sync over the network.
#[derive(Debug, Clone, Serialize)]
pub struct NetSyncReport {
    pub finished: bool,
    pub failure: Option<String>,
    pub mode: String,
    pub state_root: Option<String>,
    pub head_number: Option<u64>,
    pub head_hash: Option<String>,
    /// The final pivot, and how often it moved (the head moved on, or its state went out
    /// of the peers' history).
    pub pivot_block: Option<u64>,
    pub repivots: u64,
    pub headers_stored: u64,
    pub bodies_stored: u64,
    pub receipts_stored: u64,
    pub state_nodes_stored: u64,
    pub codes_stored: u64,
    /// Items found in the data directory at start (nothing with an in-memory store).
    pub resumed: StoredCounts,
    /// Items stored by this run (stored at the end minus `resumed`).
    pub fetched: StoredCounts,
    pub elapsed_ms: u64,
    pub status: Status,
    pub progress: Progress,
    pub peers: Vec<NetPeerReport>,
    /// Distinct nodes discovery found (endpoint proven); 0 without discovery.
    pub peers_discovered: u64,
    /// Peers (static and discovered) that completed the eth handshake at least once.
    pub peers_connected: u64,
    /// Peers dialed: the static ones and the discovered candidates.
    pub peers_dialed: u64,
    /// Discovered peers that left the pool, by reason (unreachable, fork_id, network,
    /// version, too_many_peers, low_score, dropped_by_sync, …).
    pub peers_dropped: std::collections::BTreeMap<String, u64>,
    /// What discovery found, when it ran.
    pub discovery: Option<super::discover::DiscStats>,
    /// Memory budget of each shard's store (`--memory-budget`), when the stores are on
    /// disk.
    pub memory_budget_bytes_per_shard: Option<u64>,
    /// Peak resident set size of the process (`VmHWM`) at the end of the sync.
    pub peak_rss_bytes: Option<u64>,
}

/// Counts of stored items, by kind (`records`: every record the on-disk store loaded,
/// journal excluded; 0 for counts of a run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoredCounts {
    pub records: u64,
    pub headers: u64,
    pub bodies: u64,
    pub receipts: u64,
    pub state_nodes: u64,
    pub codes: u64,
    pub accounts: u64,
}

impl StoredCounts {
    pub fn sum<'a>(it: impl Iterator<Item = &'a StoredCounts>) -> StoredCounts {
        it.fold(StoredCounts::default(), |a, b| StoredCounts {
            records: a.records + b.records,
            headers: a.headers + b.headers,
            bodies: a.bodies + b.bodies,
            receipts: a.receipts + b.receipts,
            state_nodes: a.state_nodes + b.state_nodes,
            codes: a.codes + b.codes,
            accounts: a.accounts + b.accounts,
        })
    }

    /// `self - o` per kind (saturating).
    pub fn minus(&self, o: &StoredCounts) -> StoredCounts {
        StoredCounts {
            records: self.records.saturating_sub(o.records),
            headers: self.headers.saturating_sub(o.headers),
            bodies: self.bodies.saturating_sub(o.bodies),
            receipts: self.receipts.saturating_sub(o.receipts),
            state_nodes: self.state_nodes.saturating_sub(o.state_nodes),
            codes: self.codes.saturating_sub(o.codes),
            accounts: self.accounts.saturating_sub(o.accounts),
        }
    }
}

/// Turn an engine request into a wire request and its answer back into a response.
pub(crate) async fn perform(
    peer: &mut EthPeer,
    req: &Request,
    timeout_ms: u64,
) -> Result<Response, NetError> {
    if let Request::Status = req {
        let mut best_hash = B256::from(peer.status.head_hash);
        let genesis = B256::from(peer.status.genesis_hash);
        let best_number = if let Some(r) = peer.block_range_full() {
            // eth/69+: the head of its Status, moved by its BlockRangeUpdates since.
            best_hash = B256::from(r.latest_hash);
            r.latest
        } else if peer.eth.version >= 69 {
            peer.status.latest_block
        } else {
            // eth/66–68 Status has no number: ask for the head header by hash.
            let w = peer
                .request(
                    |request_id| {
                        Wire::Eth(EthMessage::GetBlockHeaders {
                            request_id,
                            origin: HashOrNumber::Hash(best_hash.0),
                            amount: 1,
                            skip: 0,
                            reverse: false,
                        })
                    },
                    timeout_ms,
                    &EmptyResponder,
                )
                .await?;
            match w {
                Wire::Eth(EthMessage::BlockHeaders { headers, .. }) => {
                    match headers
                        .first()
                        .and_then(|h| Header::decode(h).ok())
                        .filter(|h| h.hash == best_hash)
                    {
                        Some(h) => h.number,
                        None => {
                            return Err(NetError::Useless {
                                peer: peer.conn.peer,
                                detail: "cannot prove its head header".into(),
                            })
                        }
                    }
                }
                _ => {
                    return Err(NetError::Useless {
                        peer: peer.conn.peer,
                        detail: "bad head header answer".into(),
                    })
                }
            }
        };
        return Ok(Response::Status {
            best_number,
            best_hash,
            genesis,
        });
    }
    let (rid, sent) = send(peer, req).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
    let w = peer.wait_response(rid, deadline, &EmptyResponder).await?;
    finish(peer, &sent, w, deadline).await
}

/// Send `req` (not `Request::Status`, which [`perform`] answers) without waiting for its
/// answer: its request id and the message sent, for [`finish`].
pub(crate) async fn send(peer: &mut EthPeer, req: &Request) -> Result<(u64, Wire), NetError> {
    let snap = matches!(
        req,
        Request::AccountRange { .. }
            | Request::StorageRanges { .. }
            | Request::ByteCodes { .. }
            | Request::TrieNodes { .. }
    );
    if snap && peer.snap.is_none() {
        return Err(NetError::Useless {
            peer: peer.conn.peer,
            detail: "snap not shared".into(),
        });
    }
    peer.send_request(|rid| {
        convert::request_to_wire(req, rid).expect("non-status requests have a wire form")
    })
    .await
}

/// The answer `w` to the request `sent`, completed (eth/70 receipts continued by the
/// `deadline`) and turned into an engine response.
pub(crate) async fn finish(
    peer: &mut EthPeer,
    sent: &Wire,
    w: Wire,
    deadline: std::time::Instant,
) -> Result<Response, NetError> {
    let w = peer.complete(sent, w, deadline, &EmptyResponder).await?;
    match convert::wire_to_response(&w) {
        Ok(Some((_, resp))) => Ok(resp),
        Ok(None) => Err(NetError::Useless {
            peer: peer.conn.peer,
            detail: "answer is not a response".into(),
        }),
        Err(source) => Err(NetError::Protocol {
            peer: peer.conn.peer,
            source,
        }),
    }
}

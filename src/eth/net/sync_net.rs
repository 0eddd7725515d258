//! The sync engines (`crate::eth::sync::engine`) driven over RLPx peers: engine actions become
//! eth/snap requests on the wire, answers and deadlines become engine events. One task per
//! peer carries its requests in order; the engines (one per shard of the key space) run in
//! this executor and exchange their shard messages through a local queue.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use catchup_devp2p::enode::Enode;
use catchup_devp2p::eth::{EthMessage, HashOrNumber};
use glommio::channels::local_channel;
use serde::Serialize;

use crate::eth::sync::config::SyncConfig;
use crate::eth::sync::engine::{Action, Engine, Event, Progress, Status};
use crate::eth::sync::store::MemStore;
use crate::eth::sync::types::{Header, PeerId, ReqId, Request, Response};

use super::conn::{LocalNode, NetConfig, NetError, PeerConn};
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

/// Interval of the progress line.
const PROGRESS_EVERY_MS: u64 = 10_000;

struct Job {
    shard: usize,
    id: ReqId,
    req: Request,
    timeout_ms: u64,
}

#[derive(Default)]
struct PeerCounters {
    requests: u64,
    answered: u64,
    timeouts: u64,
    error: Option<String>,
    client: String,
    eth_version: u64,
}

type Events = Rc<RefCell<VecDeque<(usize, Event)>>>;

/// Turn an engine request into a wire request and its answer back into a response.
pub(crate) async fn perform(
    peer: &mut EthPeer,
    req: &Request,
    timeout_ms: u64,
) -> Result<Response, NetError> {
    if let Request::Status = req {
        let best_hash = B256::from(peer.status.head_hash);
        let genesis = B256::from(peer.status.genesis_hash);
        let best_number = if peer.eth.version >= 69 {
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
    let w = peer
        .request(
            |rid| convert::request_to_wire(req, rid).expect("non-status requests have a wire form"),
            timeout_ms,
            &EmptyResponder,
        )
        .await?;
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

async fn peer_task(
    index: usize,
    enode: Enode,
    local: Rc<LocalNode>,
    cfg: Rc<NetSyncConfig>,
    jobs: local_channel::LocalReceiver<Job>,
    events: Events,
    counters: Rc<RefCell<PeerCounters>>,
) {
    let pid = index as PeerId;
    let shards = cfg.shards;
    let connected = async {
        let conn = PeerConn::dial(enode.addr, enode.id, &local, &cfg.net).await?;
        EthPeer::handshake(conn, &cfg.status).await
    }
    .await;
    let mut peer = match connected {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(peer = %enode.addr, error = %e, "peer unreachable");
            counters.borrow_mut().error = Some(e.to_string());
            return;
        }
    };
    {
        let mut c = counters.borrow_mut();
        c.client = peer.conn.remote_hello.client_id.clone();
        c.eth_version = peer.eth.version;
    }
    tracing::info!(peer = %enode.addr, client = %peer.conn.remote_hello.client_id, eth = peer.eth.version, "peer connected");
    for s in 0..shards {
        events.borrow_mut().push_back((s, Event::PeerJoined(pid)));
    }
    while let Some(job) = jobs.recv().await {
        counters.borrow_mut().requests += 1;
        match perform(&mut peer, &job.req, job.timeout_ms).await {
            Ok(resp) => {
                counters.borrow_mut().answered += 1;
                events.borrow_mut().push_back((
                    job.shard,
                    Event::Response {
                        peer: pid,
                        id: job.id,
                        resp,
                    },
                ));
            }
            Err(NetError::Timeout { .. }) => {
                // The engine's own deadline reports it; the connection stays usable.
                counters.borrow_mut().timeouts += 1;
            }
            Err(e) => {
                tracing::info!(peer = %enode.addr, error = %e, "peer lost");
                counters.borrow_mut().error = Some(e.to_string());
                for s in 0..shards {
                    events.borrow_mut().push_back((s, Event::PeerLeft(pid)));
                }
                return;
            }
        }
    }
    let _ = peer
        .conn
        .disconnect(catchup_devp2p::p2p::DisconnectReason::ClientQuitting)
        .await;
}

/// Run the engines against `cfg.peers` until they finish, fail, or time out.
pub async fn run_sync(
    cfg: NetSyncConfig,
    local: LocalNode,
    stores: &mut [MemStore],
) -> NetSyncReport {
    let started = Instant::now();
    let shards = cfg.shards.max(1);
    assert_eq!(stores.len(), shards, "one store per shard");
    let cfg = Rc::new(NetSyncConfig { shards, ..cfg });
    let mut local = local;
    if cfg.sync.mode == crate::eth::sync::config::SyncMode::Fast {
        // Fast sync fetches state by node hash (GetNodeData), which only eth/66 carries.
        local
            .capabilities
            .retain(|c| c.name != "eth" || c.version == 66);
    }
    let local = Rc::new(local);
    let events: Events = Rc::new(RefCell::new(VecDeque::new()));
    let mut senders = Vec::new();
    let mut counters = Vec::new();
    let mut tasks = Vec::new();
    for (i, enode) in cfg.peers.iter().enumerate() {
        let (tx, rx) = local_channel::new_bounded(cfg.peer_queue_len.max(1));
        let c = Rc::new(RefCell::new(PeerCounters::default()));
        tasks.push(glommio::spawn_local(peer_task(
            i,
            *enode,
            local.clone(),
            cfg.clone(),
            rx,
            events.clone(),
            c.clone(),
        )));
        senders.push(Some(tx));
        counters.push(c);
    }
    let mut engines: Vec<Engine> = (0..shards)
        .map(|s| Engine::new(cfg.sync.clone(), s, shards, &stores[s]))
        .collect();
    // Engine-side deadlines: (due ms, seq) → (shard, peer, id).
    let mut deadlines: BTreeMap<(u64, u64), (usize, PeerId, ReqId)> = BTreeMap::new();
    let mut seq = 0u64;
    let mut next_tick_ms = 0u64;
    let mut next_progress_ms = PROGRESS_EVERY_MS;
    let mut finished = false;
    let mut failure = None;
    let mut dropped = vec![false; cfg.peers.len()];
    let mut acts = Vec::new();
    loop {
        let now_ms = started.elapsed().as_millis() as u64;
        if now_ms > cfg.max_runtime_ms {
            failure = Some(format!("gave up after {} ms", cfg.max_runtime_ms));
            break;
        }
        let mut batch: Vec<(usize, Event)> = events.borrow_mut().drain(..).collect();
        while let Some((&(due, s), _)) = deadlines.first_key_value() {
            if due > now_ms {
                break;
            }
            let (_, (shard, peer, id)) = deadlines.pop_first().expect("present");
            let _ = s;
            batch.push((shard, Event::Timeout { peer, id }));
        }
        if now_ms >= next_progress_ms {
            next_progress_ms = now_ms + PROGRESS_EVERY_MS;
            let mut p = Progress::default();
            for e in &engines {
                p.add(&e.get_progress());
            }
            tracing::info!(
                elapsed_ms = now_ms,
                headers = p.headers_downloaded,
                headers_total = p.headers_total,
                bodies = p.bodies_downloaded,
                receipts = p.receipts_downloaded,
                state_nodes = p.state_nodes_downloaded,
                state_queued = p.state_nodes_queued,
                accounts = p.accounts_downloaded,
                healed = p.healed_nodes,
                lies = p.lies_detected,
                timeouts = p.timeouts,
                in_flight = deadlines.len(),
                "sync progress"
            );
        }
        if now_ms >= next_tick_ms {
            next_tick_ms = now_ms + 100;
            for s in 0..shards {
                batch.push((s, Event::Tick));
            }
        }
        if batch.is_empty() {
            glommio::timer::sleep(Duration::from_millis(2)).await;
            continue;
        }
        for (shard, ev) in batch {
            acts.clear();
            engines[shard].handle(now_ms, ev, &mut stores[shard], &mut acts);
            for a in acts.drain(..) {
                match a {
                    Action::Send {
                        peer,
                        id,
                        req,
                        timeout_ms,
                    } => {
                        seq += 1;
                        deadlines.insert((now_ms + timeout_ms, seq), (shard, peer, id));
                        if let Some(Some(tx)) = senders.get(peer as usize) {
                            // A full or closed queue: the deadline above reports it.
                            let _ = tx.try_send(Job {
                                shard,
                                id,
                                req,
                                timeout_ms,
                            });
                        }
                    }
                    Action::ToShard { shard: to, msg } => {
                        events.borrow_mut().push_back((to, Event::Shard(msg)))
                    }
                    Action::DropPeer(p) => {
                        // Closing its queue ends the peer's task, which disconnects it.
                        if let Some(d) = dropped.get_mut(p as usize) {
                            *d = true;
                            senders[p as usize] = None;
                        }
                    }
                    Action::Finished => finished = true,
                    Action::Failed(m) => failure = Some(m),
                }
            }
        }
        if finished || failure.is_some() {
            break;
        }
    }
    drop(senders);
    for t in tasks {
        let _ = glommio::timer::timeout(Duration::from_millis(2_000), async {
            t.await;
            Ok(())
        })
        .await;
    }
    let status = engines[0].status();
    let mut progress = Progress::default();
    for e in &engines {
        progress.add(&e.get_progress());
    }
    let head = stores
        .iter()
        .filter_map(|s| s.headers.last_key_value())
        .max_by_key(|(n, _)| **n)
        .map(|(n, h)| (*n, h.hash));
    NetSyncReport {
        finished,
        failure,
        mode: engines[0].mode().name().to_string(),
        state_root: status.state_root.clone(),
        head_number: head.map(|h| h.0),
        head_hash: head.map(|h| format!("{}", h.1)),
        headers_stored: stores.iter().map(|s| s.headers.len() as u64).sum(),
        bodies_stored: stores.iter().map(|s| s.bodies.len() as u64).sum(),
        receipts_stored: stores.iter().map(|s| s.receipts.len() as u64).sum(),
        state_nodes_stored: stores.iter().map(|s| s.nodes.len() as u64).sum(),
        codes_stored: stores.iter().map(|s| s.codes.len() as u64).sum(),
        resumed: StoredCounts::default(),
        fetched: StoredCounts {
            records: 0,
            headers: stores.iter().map(|s| s.headers.len() as u64).sum(),
            bodies: stores.iter().map(|s| s.bodies.len() as u64).sum(),
            receipts: stores.iter().map(|s| s.receipts.len() as u64).sum(),
            state_nodes: stores.iter().map(|s| s.nodes.len() as u64).sum(),
            codes: stores.iter().map(|s| s.codes.len() as u64).sum(),
            accounts: stores.iter().map(|s| s.accounts.len() as u64).sum(),
        },
        elapsed_ms: started.elapsed().as_millis() as u64,
        status,
        progress,
        peers: cfg
            .peers
            .iter()
            .zip(counters.iter())
            .enumerate()
            .map(|(i, (e, c))| {
                let c = c.borrow();
                NetPeerReport {
                    reconnects: 0,
                    peer: e.addr.to_string(),
                    client: c.client.clone(),
                    eth_version: c.eth_version,
                    requests: c.requests,
                    answered: c.answered,
                    timeouts: c.timeouts,
                    dropped_by_us: dropped[i],
                    error: c.error.clone(),
                }
            })
            .collect(),
    }
}

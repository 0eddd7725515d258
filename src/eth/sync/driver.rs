//! The per-shard driver on the real runtime: runs one [`Engine`] per shard on
//! `catchup_shards`, carries its requests over a [`Transport`], its shard messages over the
//! runtime's channel mesh, and ticks it on wall-clock time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use catchup_shards::runtime::Recv;
use catchup_shards::Shard;

use super::chain::{ChainData, StateData};
use super::config::SyncConfig;
use super::engine::{Action, Engine, Event, Progress, ShardMsg, Status};
use super::store::SyncStore;
use super::types::{PeerId, ReqId, Request};
use crate::eth::serve::ServingPeer;

/// How requests reach peers. The devp2p layer implements this over RLPx (eth/68, snap/1);
/// [`LoopbackTransport`] answers from in-process serving peers.
pub trait Transport {
    /// Start a request. Its answer, or its timeout after `timeout_ms`, comes back from
    /// [`Transport::poll`] as [`Event::Response`] or [`Event::Timeout`].
    fn send(&mut self, peer: PeerId, id: ReqId, req: Request, timeout_ms: u64, now_ms: u64);
    /// Disconnect a peer that lied.
    fn drop_peer(&mut self, peer: PeerId);
    /// Move ready events (answers, timeouts, peers joining or leaving) into `out`.
    fn poll(&mut self, now_ms: u64, out: &mut Vec<Event>);
}

/// In-process serving peers that answer at once.
pub struct LoopbackTransport {
    peers: Vec<Option<ServingPeer>>,
    ready: VecDeque<Event>,
    /// Requests answered, per peer.
    pub requests: Vec<u64>,
}

impl LoopbackTransport {
    pub fn new(peers: Vec<ServingPeer>) -> Self {
        let n = peers.len();
        let ready = (0..n as PeerId).map(Event::PeerJoined).collect();
        LoopbackTransport {
            peers: peers.into_iter().map(Some).collect(),
            ready,
            requests: vec![0; n],
        }
    }

    /// `n` honest peers over one chain and state.
    pub fn honest(n: usize, chain: Arc<ChainData>, state: Arc<StateData>) -> Self {
        Self::new(
            (0..n)
                .map(|_| ServingPeer::new(chain.clone(), Some(state.clone())))
                .collect(),
        )
    }
}

impl Transport for LoopbackTransport {
    fn send(&mut self, peer: PeerId, id: ReqId, req: Request, _timeout_ms: u64, _now_ms: u64) {
        match self.peers.get(peer as usize).and_then(|p| p.as_ref()) {
            Some(p) => {
                self.requests[peer as usize] += 1;
                let resp = p.handle(&req);
                self.ready.push_back(Event::Response { peer, id, resp });
            }
            None => self.ready.push_back(Event::Timeout { peer, id }),
        }
    }

    fn drop_peer(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(peer as usize) {
            if p.take().is_some() {
                self.ready.push_back(Event::PeerLeft(peer));
            }
        }
    }

    fn poll(&mut self, _now_ms: u64, out: &mut Vec<Event>) {
        out.extend(self.ready.drain(..));
    }
}

/// A store whose writes become durable at `commit` (group commit after each batch of
/// events; the journal is saved after the data it names).
pub trait Commit {
    fn commit(&mut self) -> impl std::future::Future<Output = Result<(), String>>;
}

impl Commit for super::store::MemStore {
    async fn commit(&mut self) -> Result<(), String> {
        Ok(())
    }
}

impl Commit for super::persist::DiskStore {
    async fn commit(&mut self) -> Result<(), String> {
        super::persist::DiskStore::commit(self)
            .await
            .map_err(|e| e.to_string())
    }
}

/// How a shard's run ended.
#[derive(Debug, Clone)]
pub struct ShardOutcome {
    pub shard: usize,
    pub finished: bool,
    pub failure: Option<String>,
    pub status: Status,
    pub progress: Progress,
    pub elapsed_ms: u64,
}

/// How often each shard logs its progress line and refreshes its `/status` section.
pub const PROGRESS_EVERY_MS: u64 = 10_000;

/// Log this shard's progress line and publish its status and progress in the admin
/// endpoint's `/status` (section `ethsync_shard_<id>`; shard 0's status is the sync's).
fn publish(shard: usize, engine: &Engine) {
    let (status, progress) = (engine.status(), engine.get_progress());
    tracing::info!(
        shard,
        "{}",
        super::engine::progress_line(&status, &progress)
    );
    crate::node::admin::set_status(
        &format!("ethsync_shard_{shard}"),
        serde_json::json!({ "status": status, "progress": progress }),
    );
}

/// Run this shard's engine until the sync finishes (shard 0 then asks every shard to shut
/// down), the runtime shuts down, or `max_ms` passes.
pub async fn drive_shard<T: Transport, S: SyncStore + Commit>(
    shard: &Shard<ShardMsg>,
    cfg: SyncConfig,
    store: &mut S,
    transport: &mut T,
    max_ms: u64,
) -> ShardOutcome {
    let id = shard.id().0;
    let n = shard.count();
    let mut engine = Engine::new(cfg, id, n, store);
    let start = Instant::now();
    let mut events: Vec<Event> = Vec::with_capacity(256);
    let mut local: VecDeque<ShardMsg> = VecDeque::new();
    let mut outbox: VecDeque<(usize, ShardMsg)> = VecDeque::new();
    let mut acts: Vec<Action> = Vec::with_capacity(256);
    let mut next_tick_ms = 0u64;
    let mut next_progress_ms = PROGRESS_EVERY_MS;
    let mut finished = false;
    let mut failure = None;
    loop {
        let now = start.elapsed().as_millis() as u64;
        if now > max_ms {
            failure = Some(format!("shard {id}: gave up after {max_ms} ms"));
            shard.request_shutdown();
            break;
        }
        if shard.shutting_down() {
            break;
        }
        if now >= next_progress_ms {
            next_progress_ms = now + PROGRESS_EVERY_MS;
            publish(id, &engine);
        }
        transport.poll(now, &mut events);
        if now >= next_tick_ms {
            next_tick_ms = now + 100;
            events.push(Event::Tick);
        }
        while let Some(m) = local.pop_front() {
            events.push(Event::Shard(m));
        }
        let busy = !events.is_empty();
        for ev in events.drain(..) {
            engine.handle(now, ev, store, &mut acts);
        }
        for a in acts.drain(..) {
            match a {
                Action::Send {
                    peer,
                    id,
                    req,
                    timeout_ms,
                } => transport.send(peer, id, req, timeout_ms, now),
                Action::ToShard { shard: to, msg } if to == id => local.push_back(msg),
                Action::ToShard { shard: to, msg } => outbox.push_back((to, msg)),
                Action::DropPeer(p) => transport.drop_peer(p),
                Action::Finished => {
                    finished = true;
                    shard.request_shutdown();
                }
                Action::Failed(m) => {
                    failure = Some(m);
                    shard.request_shutdown();
                }
            }
        }
        if let Err(e) = store.commit().await {
            failure = Some(format!("shard {id}: {e}"));
            shard.request_shutdown();
            break;
        }
        // Shard messages: a full channel is back-pressure; keep the message and retry
        // after taking our own messages in (so two full shards cannot wait on each other).
        while let Some((to, msg)) = outbox.pop_front() {
            match shard.try_send(catchup_shards::ShardId(to), msg) {
                Ok(()) => {}
                Err(catchup_shards::runtime::SendError::Full { msg, .. }) => {
                    outbox.push_front((to, msg));
                    break;
                }
                Err(_) => break,
            }
        }
        let wait = if busy || !local.is_empty() {
            Duration::from_micros(1)
        } else {
            Duration::from_millis(2)
        };
        let mut received = 0;
        match shard.recv_timeout(wait).await {
            Recv::Msg(_, m) => {
                local.push_back(m);
                received += 1;
            }
            Recv::Closed => break,
            Recv::TimedOut => {}
        }
        // Drain what else is already there, bounded.
        while received < 1024 {
            match shard.recv_timeout(Duration::from_micros(1)).await {
                Recv::Msg(_, m) => {
                    local.push_back(m);
                    received += 1;
                }
                _ => break,
            }
        }
    }
    publish(id, &engine);
    ShardOutcome {
        shard: id,
        finished: finished || engine.status().state_complete,
        failure,
        status: engine.status(),
        progress: engine.get_progress(),
        elapsed_ms: start.elapsed().as_millis() as u64,
    }
}

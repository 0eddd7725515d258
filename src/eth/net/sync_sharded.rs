//! The one Ethereum sync driver: shard `s` runs engine `s`, dials and owns the peers that
//! the runtime's ownership function gives it (a connection lives on the shard that opened
//! it), and reaches the other shards' peers and engines through the channel mesh. A request
//! for a peer owned elsewhere travels to the owner, which sends the answer back. Peers are
//! RLPx connections (`eth sync`, the demo) or in-process serving peers (`eth sim
//! --runtime`, the benches): the same loop drives both.
//!
//! Each shard loop is event driven: it sleeps until a mesh message, an event from one of
//! its own tasks, or its next deadline (a request's timeout, the engine's 100 ms tick, the
//! progress line), handles what arrived as one batch, and commits.
//!
//! With [`SyncExtras::shard_dirs`] each shard keeps its verified data in a
//! [`DiskStore`] (per-shard io store + journal), committed after every batch of engine
//! events; a restart over the same directories resumes from what is there.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use catchup_shards::runtime::{run_with_flag, Recv, RuntimeConfig, Shard};
use catchup_shards::ShardId;
use glommio::channels::local_channel;

use std::path::PathBuf;

use alloy_primitives::B256;

use crate::eth::serve::ServingPeer;
use crate::eth::sync::engine::{progress_line, Action, Engine, Event, Progress, Status};
use crate::eth::sync::persist::{DiskStore, StoreBudget, DEFAULT_MEMORY_BUDGET_BYTES};
use crate::eth::sync::store::{Commit, MemStore, SyncStore};
use crate::eth::sync::types::{PeerId, ReqId, Request};

use catchup_devp2p::enode::Enode;

use super::conn::{LocalNode, NetError, PeerConn};
use super::discover::DiscStats;
use super::eth_peer::EthPeer;
use super::peer_pool::{discovered_owner, drop_reason, Pool, PoolCounts};
use super::sync_net::{
    finish, perform, send, NetPeerReport, NetSyncConfig, NetSyncReport, StoredCounts,
};

/// How often each shard logs its progress line and refreshes its `/status` section, unless
/// [`SyncExtras::progress_every_ms`] says otherwise.
pub const PROGRESS_EVERY_MS: u64 = 10_000;

/// Persistence and observability of a sharded sync.
#[derive(Debug, Clone)]
pub struct SyncExtras {
    /// One directory per shard (index = shard id) for its [`DiskStore`]; `None` keeps
    /// everything in memory.
    pub shard_dirs: Option<Vec<PathBuf>>,
    /// Interval of each shard's progress line (stderr, target `progress`) and of its
    /// `/status` section `eth_sync_shard_<id>`.
    pub progress_every_ms: u64,
    /// A bar counting verified items (hidden unless stderr is a terminal).
    pub bar: Option<indicatif::ProgressBar>,
    /// Answer from these in-process serving peers instead of dialing the config's peers
    /// (the simulator's and the benches' transport: same driver, no sockets).
    pub in_process: Option<Vec<ServingPeer>>,
    /// Hand every shard's store back at the end (see [`run_sync_sharded_full`]).
    pub keep_stores: bool,
    /// Memory budget of each shard's store (caches and buffers besides the index of
    /// what is stored), in bytes.
    pub memory_budget_bytes: u64,
    /// Find peers on the network: discovery runs on shard 0, each shard dials the
    /// candidates it owns up to its share of the peer limit.
    pub discovery: Option<DiscoverySetup>,
    /// Serve the Engine API on shard 0: each forkchoice update sets the sync target.
    pub authrpc: Option<crate::eth::engine_api::AuthRpc>,
}

/// Discovery of a sharded sync: the service settings, the UDP socket bound before start
/// (handed to shard 0) and the peer limit over all shards (static peers not counted).
#[derive(Debug, Clone)]
pub struct DiscoverySetup {
    pub cfg: super::discover::DiscConfig,
    pub socket: Arc<std::sync::Mutex<Option<std::net::UdpSocket>>>,
    pub max_peers: usize,
}

impl Default for SyncExtras {
    fn default() -> Self {
        SyncExtras {
            shard_dirs: None,
            progress_every_ms: PROGRESS_EVERY_MS,
            bar: None,
            in_process: None,
            keep_stores: false,
            memory_budget_bytes: DEFAULT_MEMORY_BUDGET_BYTES,
            discovery: None,
            authrpc: None,
        }
    }
}

/// A shard's store: what the engine writes into, made durable at `commit`.
trait ShardStore: SyncStore + Commit {
    /// What it holds (no I/O).
    fn counts(&self) -> StoredCounts;
    /// The highest stored header (number, hash).
    fn head(&self) -> Option<(u64, B256)>;
}

impl ShardStore for MemStore {
    fn counts(&self) -> StoredCounts {
        StoredCounts {
            records: 0,
            headers: self.headers.len() as u64,
            bodies: self.bodies.len() as u64,
            receipts: self.receipts.len() as u64,
            state_nodes: self.nodes.len() as u64,
            codes: self.codes.len() as u64,
            accounts: self.accounts.len() as u64,
        }
    }
    fn head(&self) -> Option<(u64, B256)> {
        self.headers.last_key_value().map(|(n, h)| (*n, h.hash))
    }
}

impl ShardStore for DiskStore {
    fn counts(&self) -> StoredCounts {
        let c = DiskStore::counts(self);
        StoredCounts {
            records: 0,
            headers: c.headers,
            bodies: c.bodies,
            receipts: c.receipts,
            state_nodes: c.nodes,
            codes: c.codes,
            accounts: c.accounts,
        }
    }
    fn head(&self) -> Option<(u64, B256)> {
        DiskStore::head(self)
    }
}

/// Items of `p` that the bar counts.
fn bar_items(p: &Progress) -> u64 {
    p.headers_downloaded
        + p.bodies_downloaded
        + p.receipts_downloaded
        + p.state_nodes_downloaded
        + p.codes_downloaded
        + p.accounts_downloaded
}

/// What shards send each other.
#[derive(Debug)]
pub enum MeshMsg {
    /// An event for the receiving shard's engine.
    Event(Event),
    /// Perform this request on a peer the receiving shard owns; answer shard `from`.
    Request {
        from: usize,
        peer: PeerId,
        id: ReqId,
        req: Request,
        timeout_ms: u64,
    },
    /// The sync ended (sent by shard 0).
    Stop,
    /// To shard 0: a peer given up on without ever answering (its address, last error).
    Unreachable(String, String),
    /// To shard 0: a shard's latest progress, for the summed progress line.
    Progress(usize, Progress),
    /// To the owner shard: a discovered node to dial.
    Candidate(Enode),
    /// To shard 0: a shard's peer pool counts.
    Pool(usize, PoolCounts),
}

/// What shard 0 gathers from every shard through the mesh (its own part included).
#[derive(Default)]
struct ZeroBoard {
    /// Peers given up on without ever answering: when every given peer is here, the sync
    /// stops and says why.
    unreachable: Vec<(String, String)>,
    /// Each shard's latest progress.
    progress: BTreeMap<usize, Progress>,
    /// Each shard's latest peer pool counts.
    pools: BTreeMap<usize, PoolCounts>,
}

/// Send `msg` to shard 0, or apply it to shard 0's board when this is shard 0.
async fn tell_zero(shard: &Shard<MeshMsg>, board: &RefCell<ZeroBoard>, msg: MeshMsg) {
    if shard.id().0 == 0 {
        board.borrow_mut().note(msg);
    } else if shard.send(ShardId(0), msg).await.is_err() {
        tracing::debug!("shard 0 channel closed; note dropped at shutdown");
    }
}

impl ZeroBoard {
    fn note(&mut self, msg: MeshMsg) {
        match msg {
            MeshMsg::Unreachable(peer, error) => self.unreachable.push((peer, error)),
            MeshMsg::Progress(shard, p) => {
                self.progress.insert(shard, p);
            }
            MeshMsg::Pool(shard, p) => {
                self.pools.insert(shard, p);
            }
            _ => {}
        }
    }

    /// The progress summed over the shards, once every one of `shards` has posted (so it
    /// never shows some shards' counts as the whole).
    fn total(&self, shards: usize) -> Option<Progress> {
        (self.progress.len() >= shards).then(|| {
            let mut total = Progress::default();
            for p in self.progress.values() {
                total.add(p);
            }
            total
        })
    }
}

struct Job {
    from: usize,
    id: ReqId,
    req: Request,
    timeout_ms: u64,
}

/// What one shard reports at the end.
struct ShardResult {
    shard: usize,
    finished: bool,
    failure: Option<String>,
    status: Status,
    mode: String,
    progress: Progress,
    head: Option<(u64, String)>,
    counts: [u64; 5],
    resumed: StoredCounts,
    stored: StoredCounts,
    peers: Vec<(usize, NetPeerReport)>,
    /// Peers this shard's engine dropped (a liar may be caught by a shard other than the
    /// one that owns its connection, e.g. by the pivot coordinator on shard 0).
    dropped: Vec<PeerId>,
    /// The shard's store at the end, when [`SyncExtras::keep_stores`] asked for it.
    view: Option<MemStore>,
    /// What the shard's pool of discovered peers did.
    pool: PoolCounts,
    /// Shard 0 with discovery: what discovery found.
    disc: Option<DiscStats>,
}

/// Events for this shard's engine from its own tasks (peer tasks, its own engine's shard
/// messages); pushing one wakes the shard loop.
#[derive(Default)]
struct LocalQueue {
    events: RefCell<VecDeque<Event>>,
    wake: catchup_shards::notify::Notify,
    /// What discovered peers' tasks report to the shard's pool.
    pool: RefCell<Vec<PoolNote>>,
    /// Shard 0: nodes discovery found, to hand to their owner shards.
    found: RefCell<Vec<Enode>>,
}

/// A discovered peer's task to its shard's pool.
#[derive(Debug, Clone, Copy)]
enum PoolNote {
    Connected(PeerId),
    Lost(PeerId),
    Ended(PeerId, &'static str),
}

impl LocalQueue {
    fn push(&self, ev: Event) {
        self.events.borrow_mut().push_back(ev);
        self.wake.notify();
    }

    fn note(&self, n: PoolNote) {
        self.pool.borrow_mut().push(n);
        self.wake.notify();
    }
}

type Local = Rc<LocalQueue>;

/// How many peers the sync has: the in-process ones, else the configured ones.
fn peer_count(cfg: &NetSyncConfig, extras: &SyncExtras) -> usize {
    match &extras.in_process {
        Some(p) => p.len(),
        None => cfg.peers.len(),
    }
}

/// The shard that owns peer `index` (its connection lives there), by the runtime's peer
/// ownership function over its node id (an in-process peer: over its index).
fn peer_owner(cfg: &NetSyncConfig, index: usize, shards: usize) -> usize {
    if let Some(owner) = discovered_owner(index as PeerId, shards) {
        return owner;
    }
    let id = match cfg.peers.get(index) {
        Some(e) => e.id.to_vec(),
        None => (index as u64).to_le_bytes().to_vec(),
    };
    catchup_shards::ownership::owner_of_peer(&id, shards).0
}

/// An in-process serving peer: it joins at once and answers each request from its chain
/// and state, until the shard drops its job channel.
async fn in_process_peer(
    shard: Shard<MeshMsg>,
    local: Local,
    index: usize,
    peer: ServingPeer,
    jobs: local_channel::LocalReceiver<Job>,
    report: Rc<RefCell<NetPeerReport>>,
) {
    let pid = index as PeerId;
    report.borrow_mut().client = "in-process".into();
    for s in 0..shard.count() {
        deliver(&shard, &local, s, Event::PeerJoined(pid)).await;
    }
    while let Some(job) = jobs.recv().await {
        let resp = peer.handle(&job.req);
        {
            let mut r = report.borrow_mut();
            r.requests += 1;
            r.answered += 1;
        }
        let ev = Event::Response {
            peer: pid,
            id: job.id,
            resp,
        };
        deliver(&shard, &local, job.from, ev).await;
    }
}

/// Deliver `ev` to shard `to`'s engine (locally or through the mesh, waiting on a full channel).
async fn deliver(shard: &Shard<MeshMsg>, local: &Local, to: usize, ev: Event) {
    if to == shard.id().0 {
        local.push(ev);
    } else if shard.send(ShardId(to), MeshMsg::Event(ev)).await.is_err() {
        tracing::debug!(to, "shard channel closed; event dropped at shutdown");
    }
}

#[allow(clippy::too_many_arguments)]
async fn owned_peer(
    shard: Shard<MeshMsg>,
    local: Local,
    pid: PeerId,
    enode: Enode,
    discovered: bool,
    cfg: Rc<NetSyncConfig>,
    node: Rc<LocalNode>,
    jobs: local_channel::LocalReceiver<Job>,
    report: Rc<RefCell<NetPeerReport>>,
    board: Rc<RefCell<ZeroBoard>>,
) {
    let shards = cfg.shards;
    // A peer is dialed until it answers, and dialed again when it is lost (a restarted or
    // overloaded peer comes back): waits double from 250 ms to 8 s. A peer never reached
    // gives up after `NEVER_REACHED_ATTEMPTS`; the engine is told only of live peers. The
    // loop ends when the shard drops its job channel (the sync ended or dropped the peer).
    // A discovered peer is one of many: it is given up on sooner, and a peer we cannot use
    // (another network, fork or version) at once; its pool slot goes to the next candidate.
    let never_reached_attempts: u32 = if discovered { 3 } else { 6 };
    let mut backoff = Duration::from_millis(250);
    let mut attempts = 0u32;
    let mut ever_connected = false;
    loop {
        attempts += 1;
        let connected = async {
            let conn = PeerConn::dial(enode.addr, enode.id, &node, &cfg.net).await?;
            EthPeer::handshake(conn, &cfg.status).await
        }
        .await;
        let mut peer = match connected {
            Ok(p) => p,
            Err(e) => {
                report.borrow_mut().error = Some(e.to_string());
                if discovered
                    && (!e.is_transient()
                        || (!ever_connected && attempts >= never_reached_attempts))
                {
                    tracing::info!(shard = shard.id().0, peer = %enode.addr, error = %e, attempts, reason = drop_reason(&e), "discovered peer dropped");
                    local.note(PoolNote::Ended(pid, drop_reason(&e)));
                    return;
                }
                if !ever_connected && (attempts >= never_reached_attempts || !e.is_transient()) {
                    tracing::warn!(shard = shard.id().0, peer = %enode.addr, error = %e, attempts, "peer unreachable; giving up on it");
                    let note = MeshMsg::Unreachable(enode.addr.to_string(), e.to_string());
                    tell_zero(&shard, &board, note).await;
                    return;
                }
                tracing::warn!(shard = shard.id().0, peer = %enode.addr, error = %e, attempt = attempts, retry_ms = backoff.as_millis() as u64, "peer handshake failed; retrying");
                if !wait_or_closed(&jobs, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(8));
                continue;
            }
        };
        ever_connected = true;
        attempts = 0;
        backoff = Duration::from_millis(250);
        {
            let mut r = report.borrow_mut();
            r.client = peer.conn.remote_hello.client_id.clone();
            r.eth_version = peer.eth.version;
            r.error = None;
            r.block_range = peer.block_range();
        }
        tracing::info!(shard = shard.id().0, peer = %enode.addr, client = %peer.conn.remote_hello.client_id, discovered, "peer connected");
        if discovered {
            local.note(PoolNote::Connected(pid));
        }
        for s in 0..shards {
            deliver(&shard, &local, s, Event::PeerJoined(pid)).await;
        }
        // The head of its eth/69 Status, then of each BlockRangeUpdate, goes to every
        // shard's engine (re-pivots and peer choice use the peers' heads).
        let mut told_head = None;
        tell_head(&shard, &local, pid, &peer, &mut told_head).await;
        // Requests are pipelined on the connection, up to the per-peer limit, and their
        // answers matched by request id.
        let limit = cfg.sync.max_inflight_per_peer.max(1) as usize;
        let mut flight: Vec<(u64, Job, super::wire::Wire, Instant)> = Vec::with_capacity(limit);
        let mut lost = false;
        let mut closed = false;
        'conn: while !closed {
            while flight.len() < limit {
                let job = if flight.is_empty() {
                    next_job(&jobs, &mut peer, &shard, &local, pid, &mut told_head).await
                } else {
                    match futures_lite::future::poll_once(jobs.recv()).await {
                        Some(j) => j,
                        None => break,
                    }
                };
                let Some(job) = job else {
                    closed = true;
                    break;
                };
                report.borrow_mut().requests += 1;
                let answer = if matches!(job.req, Request::Status) {
                    Some(perform(&mut peer, &job.req, job.timeout_ms).await)
                } else {
                    let deadline = Instant::now() + Duration::from_millis(job.timeout_ms);
                    match send(&mut peer, &job.req).await {
                        Ok((rid, sent)) => {
                            flight.push((rid, job, sent, deadline));
                            continue;
                        }
                        Err(e) => Some(Err(e)),
                    }
                };
                if let Some(answer) = answer {
                    let at = (job.from, job.id);
                    match on_answer(&shard, &local, pid, &enode, discovered, &report, at, answer)
                        .await
                    {
                        Flow::Go => {}
                        Flow::Dropped => return,
                        Flow::Lost => {
                            lost = true;
                            break 'conn;
                        }
                    }
                }
            }
            let Some(earliest) = flight.iter().map(|f| f.3).min() else {
                continue;
            };
            let answer = match peer
                .next_response(earliest, &super::eth_peer::EmptyResponder)
                .await
            {
                Ok((rid, w)) => match flight.iter().position(|f| f.0 == rid) {
                    Some(i) => {
                        let (_, job, sent, deadline) = flight.swap_remove(i);
                        Some((
                            (job.from, job.id),
                            finish(&mut peer, &sent, w, deadline).await,
                        ))
                    }
                    None => None,
                },
                Err(NetError::Timeout { .. }) => {
                    // Every request past its deadline is given up on (the engine's own
                    // deadline reports it lost); a later answer is ignored.
                    let now = Instant::now();
                    flight.retain(|f| {
                        let keep = f.3 > now;
                        if !keep {
                            peer.forget(f.0);
                            report.borrow_mut().timeouts += 1;
                        }
                        keep
                    });
                    None
                }
                Err(e) => Some(((0, 0), Err(e))),
            };
            report.borrow_mut().block_range = peer.block_range();
            tell_head(&shard, &local, pid, &peer, &mut told_head).await;
            if let Some((at, answer)) = answer {
                match on_answer(&shard, &local, pid, &enode, discovered, &report, at, answer).await
                {
                    Flow::Go => {}
                    Flow::Dropped => return,
                    Flow::Lost => {
                        lost = true;
                        break 'conn;
                    }
                }
            }
        }
        if !lost {
            let _ = peer
                .conn
                .disconnect(catchup_devp2p::p2p::DisconnectReason::ClientQuitting)
                .await;
            if discovered {
                local.note(PoolNote::Ended(pid, "dropped_by_sync"));
            }
            return;
        }
        if !wait_or_closed(&jobs, backoff).await {
            return;
        }
    }
}

/// What a peer task does after an answer.
enum Flow {
    /// Carry on with the connection.
    Go,
    /// The peer answered with something wrong: dropped for good.
    Dropped,
    /// The connection failed: dial again.
    Lost,
}

/// Deliver `answer` (to the request `at` = (shard, id)) to the asking shard, or handle its
/// error: a timeout is counted; a wrong answer drops the peer (every shard is told it
/// lied and left); a failed connection is lost (every shard is told it left).
#[allow(clippy::too_many_arguments)]
async fn on_answer(
    shard: &Shard<MeshMsg>,
    local: &Local,
    pid: PeerId,
    enode: &Enode,
    discovered: bool,
    report: &RefCell<NetPeerReport>,
    at: (usize, ReqId),
    answer: Result<crate::eth::sync::types::Response, NetError>,
) -> Flow {
    let shards = shard.count();
    match answer {
        Ok(resp) => {
            report.borrow_mut().answered += 1;
            let ev = Event::Response {
                peer: pid,
                id: at.1,
                resp,
            };
            deliver(shard, local, at.0, ev).await;
            Flow::Go
        }
        Err(NetError::Timeout { .. }) => {
            report.borrow_mut().timeouts += 1;
            Flow::Go
        }
        Err(e) if !e.is_transient() => {
            // It answered with something wrong (a head it cannot prove, a broken
            // message): a peer to drop, not to dial again.
            tracing::info!(peer = %enode.addr, error = %e, "peer dropped");
            {
                let mut r = report.borrow_mut();
                r.error = Some(e.to_string());
                r.dropped_by_us = true;
            }
            for s in 0..shards {
                deliver(shard, local, s, Event::PeerLied(pid)).await;
                deliver(shard, local, s, Event::PeerLeft(pid)).await;
            }
            if discovered {
                local.note(PoolNote::Ended(pid, drop_reason(&e)));
            }
            Flow::Dropped
        }
        Err(e) => {
            tracing::info!(peer = %enode.addr, error = %e, "peer lost; dialing it again");
            {
                let mut r = report.borrow_mut();
                r.error = Some(e.to_string());
                r.reconnects += 1;
            }
            for s in 0..shards {
                deliver(shard, local, s, Event::PeerLeft(pid)).await;
            }
            if discovered {
                local.note(PoolNote::Lost(pid));
            }
            Flow::Lost
        }
    }
}

/// When `peer`'s announced head (eth/69 Status, BlockRangeUpdate) moved past `told`, tell
/// every shard's engine (`Event::PeerHead`).
async fn tell_head(
    shard: &Shard<MeshMsg>,
    local: &Local,
    pid: PeerId,
    peer: &EthPeer,
    told: &mut Option<u64>,
) {
    let Some((_, latest)) = peer.block_range() else {
        return;
    };
    if told.is_some_and(|t| t >= latest) {
        return;
    }
    *told = Some(latest);
    for s in 0..shard.count() {
        let ev = Event::PeerHead {
            peer: pid,
            number: latest,
        };
        deliver(shard, local, s, ev).await;
    }
}

/// The next job for `peer`. While none comes, the connection is read now and then so the
/// peer's Pings are answered and its BlockRangeUpdates kept (a new head is told to the
/// engines); once that read fails the next request finds out.
async fn next_job(
    jobs: &local_channel::LocalReceiver<Job>,
    peer: &mut EthPeer,
    shard: &Shard<MeshMsg>,
    local: &Local,
    pid: PeerId,
    told_head: &mut Option<u64>,
) -> Option<Job> {
    const QUIET_MS: u64 = 5_000;
    const READ_MS: u64 = 20;
    let mut readable = true;
    loop {
        if !readable {
            return jobs.recv().await;
        }
        let quiet = Duration::from_millis(QUIET_MS);
        match glommio::timer::timeout(quiet, async { Ok(jobs.recv().await) }).await {
            Ok(job) => return job,
            Err(_) => {
                let idle = super::eth_peer::EmptyResponder;
                readable = peer.idle(READ_MS, &idle).await.is_ok();
                tell_head(shard, local, pid, peer, told_head).await;
            }
        }
    }
}

/// Every given peer was given up on without answering: one line saying so, and what helps.
fn all_unreachable(u: &[(String, String)], given: usize) -> Option<String> {
    if given == 0 || u.len() < given {
        return None;
    }
    let each: Vec<String> = u.iter().map(|(p, e)| format!("{p}: {e}")).collect();
    Some(format!(
        "none of the {given} peer(s) could be reached ({}); check each --peer enode://ID@HOST:PORT, and that the peers serve this chain (--network-id, --genesis-hash)",
        each.join("; ")
    ))
}

/// Wait `d`, dropping jobs that arrive meanwhile (their deadlines report them lost); false
/// when the job channel closed (the sync no longer wants this peer).
async fn wait_or_closed(jobs: &local_channel::LocalReceiver<Job>, d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        let got = futures_lite::future::or(async { Some(jobs.recv().await) }, async {
            glommio::timer::sleep(left).await;
            None
        })
        .await;
        if let Some(None) = got {
            return false;
        }
    }
}

async fn shard_main(
    shard: Shard<MeshMsg>,
    cfg: Arc<NetSyncConfig>,
    node: Arc<LocalNode>,
    extras: Arc<SyncExtras>,
) -> ShardResult {
    let me = shard.id().0;
    let dir = extras.shard_dirs.as_ref().map(|d| d.get(me).cloned());
    match dir {
        None => {
            let mut store = MemStore::default();
            let keep = extras.keep_stores;
            let mut r = shard_run(
                shard,
                cfg,
                node,
                extras,
                &mut store,
                StoredCounts::default(),
            )
            .await;
            if keep {
                r.view = Some(store);
            }
            r
        }
        Some(dir) => {
            let open_started = Instant::now();
            let budget = StoreBudget {
                memory_budget_bytes: extras.memory_budget_bytes,
            };
            let opened = match &dir {
                Some(d) => DiskStore::open_with(d, budget)
                    .await
                    .map_err(|e| e.to_string()),
                None => Err(format!("no store directory for shard {me}")),
            };
            match opened {
                Ok(mut store) => {
                    let mut resumed = ShardStore::counts(&store);
                    resumed.records = store.loaded_records;
                    if resumed.records > 0 {
                        tracing::info!(
                            shard = me,
                            records = resumed.records,
                            headers = resumed.headers,
                            state_nodes = resumed.state_nodes,
                            accounts = resumed.accounts,
                            open_ms = open_started.elapsed().as_millis() as u64,
                            "resuming from the data directory"
                        );
                    }
                    let keep = extras.keep_stores;
                    let mut r = shard_run(shard, cfg, node, extras, &mut store, resumed).await;
                    match store.close().await {
                        Ok(()) if keep => match DiskStore::load_all(
                            dir.as_deref().expect("opened from a directory"),
                        )
                        .await
                        {
                            Ok(view) => r.view = Some(view),
                            Err(e) => {
                                r.failure
                                    .get_or_insert(format!("shard {me}: reading the store: {e}"));
                            }
                        },
                        Ok(()) => {}
                        Err(e) => {
                            r.failure
                                .get_or_insert(format!("shard {me}: closing the store: {e}"));
                        }
                    }
                    r
                }
                Err(e) => {
                    // Every shard must stop: the sync cannot run without this shard's slice.
                    shard.request_shutdown();
                    ShardResult {
                        shard: me,
                        finished: false,
                        failure: Some(format!("shard {me}: {e}")),
                        status: Status::default(),
                        mode: cfg.sync.mode.name().to_string(),
                        progress: Progress::default(),
                        head: None,
                        counts: [0; 5],
                        resumed: StoredCounts::default(),
                        stored: StoredCounts::default(),
                        peers: Vec::new(),
                        dropped: Vec::new(),
                        view: None,
                        pool: PoolCounts::default(),
                        disc: None,
                    }
                }
            }
        }
    }
}

async fn shard_run<S: ShardStore>(
    shard: Shard<MeshMsg>,
    cfg: Arc<NetSyncConfig>,
    node: Arc<LocalNode>,
    extras: Arc<SyncExtras>,
    store: &mut S,
    resumed: StoredCounts,
) -> ShardResult {
    let me = shard.id().0;
    let shards = cfg.shards;
    let started = Instant::now();
    let cfg = Rc::new((*cfg).clone());
    let node = Rc::new((*node).clone());
    let local: Local = Rc::default();
    // Filled on shard 0 only (by its own peer tasks and by the other shards' messages).
    let board: Rc<RefCell<ZeroBoard>> = Default::default();
    let mut engine = Engine::new(cfg.sync.clone(), me, shards, &*store);
    let progress_every_ms = extras.progress_every_ms.max(100);
    let mut next_progress_ms = progress_every_ms;
    let mut next_bar_ms = 0u64;
    let mut bar_done = 0u64;
    // Peers this shard owns.
    let mut senders: BTreeMap<usize, local_channel::LocalSender<Job>> = BTreeMap::new();
    let mut reports: Vec<(usize, Rc<RefCell<NetPeerReport>>)> = Vec::new();
    for index in (0..peer_count(&cfg, &extras)).filter(|&p| peer_owner(&cfg, p, shards) == me) {
        let (tx, rx) = local_channel::new_bounded(cfg.peer_queue_len.max(1));
        let report = Rc::new(RefCell::new(NetPeerReport {
            reconnects: 0,
            peer: cfg
                .peers
                .get(index)
                .map(|e| e.addr.to_string())
                .unwrap_or_else(|| format!("in-process peer {index}")),
            client: String::new(),
            eth_version: 0,
            requests: 0,
            answered: 0,
            timeouts: 0,
            dropped_by_us: false,
            error: None,
            block_range: None,
        }));
        match &extras.in_process {
            Some(p) => glommio::spawn_local(in_process_peer(
                shard.clone(),
                local.clone(),
                index,
                p[index].clone(),
                rx,
                report.clone(),
            ))
            .detach(),
            None => glommio::spawn_local(owned_peer(
                shard.clone(),
                local.clone(),
                index as PeerId,
                cfg.peers[index],
                false,
                cfg.clone(),
                node.clone(),
                rx,
                report.clone(),
                board.clone(),
            ))
            .detach(),
        };
        senders.insert(index, tx);
        reports.push((index, report));
    }
    // Discovered peers: discovery on shard 0, a pool on every shard.
    let disc_setup = match extras.in_process {
        None => extras.discovery.clone(),
        Some(_) => None,
    };
    let static_ids: Vec<[u8; 64]> = cfg.peers.iter().map(|e| e.id).collect();
    let mut pool = disc_setup
        .as_ref()
        .map(|d| Pool::new(me, shards, d.max_peers, &static_ids));
    let disc_stats: Rc<RefCell<DiscStats>> = Default::default();
    let disc_stop = Rc::new(std::cell::Cell::new(false));
    if let (0, Some(d)) = (me, &disc_setup) {
        let taken = d.socket.lock().unwrap_or_else(|p| p.into_inner()).take();
        match taken {
            Some(sock) => {
                let sock = glommio::net::UdpSocket::from(socket2::Socket::from(sock));
                let (found, stats, stop) = (local.clone(), disc_stats.clone(), disc_stop.clone());
                let dcfg = d.cfg.clone();
                glommio::spawn_local(async move {
                    let to = found.clone();
                    let on_candidate = move |e: Enode| {
                        to.found.borrow_mut().push(e);
                        to.wake.notify();
                    };
                    let r =
                        super::discover::run(dcfg, sock, stats, on_candidate, move || stop.get())
                            .await;
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "discovery stopped");
                    }
                })
                .detach();
            }
            None => tracing::warn!("discovery: the UDP socket was already taken"),
        }
    }
    // The Engine API (shard 0): every forkchoice update becomes an `Event::Target`. Held
    // until the sync ends (dropping the task stops it).
    let _engine_api = match (&extras.authrpc, me) {
        (Some(api), 0) => {
            let q = local.clone();
            let on_target: Rc<dyn Fn(alloy_primitives::B256)> =
                Rc::new(move |h| q.push(Event::Target(h)));
            Some(glommio::spawn_local(crate::eth::engine_api::server::serve(
                api.clone(),
                on_target,
            )))
        }
        _ => None,
    };
    let mut deadlines: BTreeMap<(u64, u64), (PeerId, ReqId)> = BTreeMap::new();
    let mut seq = 0u64;
    let mut next_tick_ms = 0u64;
    let (mut finished, mut failure, mut stopped) = (false, None, false);
    let (mut mesh_open, mut pending_mesh) = (shards > 1, None);
    let mut dropped: Vec<PeerId> = Vec::new();
    let mut acts = Vec::new();
    while !stopped {
        let now_ms = started.elapsed().as_millis() as u64;
        if now_ms > cfg.max_runtime_ms {
            failure = Some(format!("gave up after {} ms", cfg.max_runtime_ms));
            break;
        }
        if shard.shutting_down() {
            failure = Some("interrupted".into());
            break;
        }
        if me == 0 && disc_setup.is_none() {
            if let Some(why) =
                all_unreachable(&board.borrow().unreachable, peer_count(&cfg, &extras))
            {
                failure = Some(why);
                break;
            }
        }
        let mut batch: Vec<Event> = local.events.borrow_mut().drain(..).collect();
        if batch.is_empty() {
            // Nothing to do: sleep until a mesh message, a local event or the next
            // deadline (request timeouts, the engine's tick, the progress line, the bar),
            // whichever comes first.
            let mut due = next_tick_ms.min(next_progress_ms);
            if let Some((&(d, _), _)) = deadlines.first_key_value() {
                due = due.min(d);
            }
            if extras.bar.is_some() {
                due = due.min(next_bar_ms);
            }
            let sleep = Duration::from_millis(due.saturating_sub(now_ms).max(1));
            let mesh = async {
                if mesh_open {
                    Some(match shard.recv().await {
                        Some((from, m)) => Recv::Msg(from, m),
                        None => Recv::Closed,
                    })
                } else {
                    std::future::pending().await
                }
            };
            let other = async {
                futures_lite::future::or(local.wake.notified(), glommio::timer::sleep(sleep)).await;
                None
            };
            if let Some(m) = futures_lite::future::or(mesh, other).await {
                pending_mesh = Some(m);
            }
            batch.extend(local.events.borrow_mut().drain(..));
        }
        // What else the mesh already holds, without waiting (bounded per turn).
        let mut taken = 0;
        while let Some(m) = pending_mesh.take().or_else(|| shard.try_recv()) {
            match m {
                Recv::Msg(_, MeshMsg::Event(ev)) => batch.push(ev),
                Recv::Msg(
                    _,
                    MeshMsg::Request {
                        from,
                        peer,
                        id,
                        req,
                        timeout_ms,
                    },
                ) => {
                    if let Some(tx) = senders.get(&(peer as usize)) {
                        let _ = tx.try_send(Job {
                            from,
                            id,
                            req,
                            timeout_ms,
                        });
                    }
                }
                Recv::Msg(_, MeshMsg::Stop) => {
                    stopped = true;
                    break;
                }
                Recv::Msg(
                    _,
                    note @ (MeshMsg::Unreachable(..) | MeshMsg::Progress(..) | MeshMsg::Pool(..)),
                ) => board.borrow_mut().note(note),
                Recv::Msg(_, MeshMsg::Candidate(e)) => {
                    if let Some(p) = pool.as_mut() {
                        p.offer(e);
                    }
                }
                Recv::Closed => {
                    // No other shard (one shard), or all of them are gone.
                    mesh_open = false;
                    break;
                }
                Recv::TimedOut => break,
            }
            taken += 1;
            if taken >= 4096 {
                break;
            }
        }
        if let Some(pool) = pool.as_mut() {
            // Found nodes go to their owner shard; this shard's peers report; free slots
            // are refilled from the candidates.
            let found: Vec<Enode> = local.found.borrow_mut().drain(..).collect();
            for e in found {
                let owner = catchup_shards::ownership::owner_of_peer(&e.id, shards).0;
                if owner == me {
                    pool.offer(e);
                } else {
                    let _ = shard.try_send(ShardId(owner), MeshMsg::Candidate(e));
                }
            }
            let notes: Vec<PoolNote> = local.pool.borrow_mut().drain(..).collect();
            for n in notes {
                match n {
                    PoolNote::Connected(p) => pool.connected(p),
                    PoolNote::Lost(p) => pool.lost(p),
                    PoolNote::Ended(p, why) => {
                        if pool.ended(p, why, now_ms) {
                            senders.remove(&(p as usize));
                        }
                    }
                }
            }
            while let Some((pid, enode)) = pool.next_dial(now_ms) {
                let (tx, rx) = local_channel::new_bounded(cfg.peer_queue_len.max(1));
                let report = Rc::new(RefCell::new(new_peer_report(enode.addr.to_string())));
                glommio::spawn_local(owned_peer(
                    shard.clone(),
                    local.clone(),
                    pid,
                    enode,
                    true,
                    cfg.clone(),
                    node.clone(),
                    rx,
                    report.clone(),
                    board.clone(),
                ))
                .detach();
                senders.insert(pid as usize, tx);
                reports.push((pid as usize, report));
            }
        }
        let now_ms = started.elapsed().as_millis() as u64;
        while let Some((&(due, _), _)) = deadlines.first_key_value() {
            if due > now_ms {
                break;
            }
            let (_, (peer, id)) = deadlines.pop_first().expect("present");
            batch.push(Event::Timeout { peer, id });
        }
        if now_ms >= next_tick_ms {
            next_tick_ms = now_ms + 100;
            batch.push(Event::Tick);
        }
        if now_ms >= next_progress_ms {
            next_progress_ms = now_ms + progress_every_ms;
            publish(&shard, &engine, &resumed, &board, shards).await;
            if let Some(p) = pool.as_mut() {
                if let Some(worst) = worst_peer(p, &reports) {
                    // A full pool with candidates waiting: the peer that mostly times out
                    // makes room.
                    tracing::info!(
                        shard = me,
                        peer = worst,
                        "dropping the lowest-scored peer for a new candidate"
                    );
                    senders.remove(&(worst as usize));
                    p.ended(worst, "low_score", now_ms);
                    for s in 0..shards {
                        deliver(&shard, &local, s, Event::PeerLeft(worst)).await;
                    }
                }
                publish_peers(&shard, p.counts(), &disc_stats, &board, shards).await;
                if me == 0 && now_ms >= 30_000 && disc_stats.borrow().nodes_found == 0 {
                    tracing::warn!(
                        "discovery has found no node after {} s: check --bootnodes (or --dns-list) and that UDP to them is not blocked (--discovery-addr, --ext-ip)",
                        now_ms / 1000
                    );
                }
            }
        }
        if let (Some(bar), true) = (&extras.bar, now_ms >= next_bar_ms) {
            next_bar_ms = now_ms + 250;
            let done = bar_items(&engine.get_progress());
            bar.inc(done.saturating_sub(bar_done));
            bar_done = done;
            if me == 0 {
                let st = engine.status();
                bar.set_message(format!(
                    "eth {} sync, pivot {}",
                    st.mode,
                    st.pivot_block
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "-".into())
                ));
            }
        }
        crate::node::stages::record_eth_events(me, &batch);
        for ev in batch {
            acts.clear();
            engine.handle(now_ms, ev, store, &mut acts);
            for a in acts.drain(..) {
                match a {
                    Action::Send {
                        peer,
                        id,
                        req,
                        timeout_ms,
                    } => {
                        seq += 1;
                        deadlines.insert((now_ms + timeout_ms, seq), (peer, id));
                        let owner = peer_owner(&cfg, peer as usize, shards);
                        if owner == me {
                            if let Some(tx) = senders.get(&(peer as usize)) {
                                let _ = tx.try_send(Job {
                                    from: me,
                                    id,
                                    req,
                                    timeout_ms,
                                });
                            }
                        } else {
                            // A full channel: the deadline above reports the request as lost.
                            let _ = shard.try_send(
                                ShardId(owner),
                                MeshMsg::Request {
                                    from: me,
                                    peer,
                                    id,
                                    req,
                                    timeout_ms,
                                },
                            );
                        }
                    }
                    Action::ToShard { shard: to, msg } => {
                        deliver(&shard, &local, to, Event::Shard(msg)).await
                    }
                    Action::DropPeer(p) => {
                        dropped.push(p);
                        senders.remove(&(p as usize));
                    }
                    Action::Finished => finished = true,
                    Action::Failed(m) => failure = Some(m),
                }
            }
        }
        // Group commit: what this batch stored becomes durable, then the journal naming it.
        if let Err(e) = store.commit().await {
            failure = Some(format!("shard {me}: {e}"));
            break;
        }
        crate::node::stages::record_eth_progress(me, shard.core(), &engine);
        if finished || failure.is_some() {
            break;
        }
    }
    disc_stop.set(true);
    publish(&shard, &engine, &resumed, &board, shards).await;
    if let Some(p) = &pool {
        publish_peers(&shard, p.counts(), &disc_stats, &board, shards).await;
    }
    if failure.is_some() && me != 0 {
        // Shard 0 would wait for this shard's slice forever.
        shard.request_shutdown();
    }
    if me == 0 {
        for s in shard.peers() {
            let _ = shard.send(s, MeshMsg::Stop).await;
        }
    }
    drop(senders);
    glommio::timer::sleep(Duration::from_millis(50)).await;
    let stored = store.counts();
    let head = store.head().map(|(n, h)| (n, format!("{h}")));
    ShardResult {
        shard: me,
        finished,
        failure,
        status: engine.status(),
        mode: engine.mode().name().to_string(),
        progress: engine.get_progress(),
        head,
        counts: [
            stored.headers,
            stored.bodies,
            stored.receipts,
            stored.state_nodes,
            stored.codes,
        ],
        stored,
        resumed,
        peers: reports
            .into_iter()
            .map(|(i, r)| {
                let mut r = r.borrow().clone();
                r.dropped_by_us |= dropped.contains(&(i as PeerId));
                (i, r)
            })
            .collect(),
        dropped,
        view: None,
        pool: pool.map(|p| p.counts().clone()).unwrap_or_default(),
        disc: (me == 0 && disc_setup.is_some()).then(|| disc_stats.borrow().clone()),
    }
}

fn new_peer_report(peer: String) -> NetPeerReport {
    NetPeerReport {
        reconnects: 0,
        peer,
        client: String::new(),
        eth_version: 0,
        requests: 0,
        answered: 0,
        timeouts: 0,
        dropped_by_us: false,
        error: None,
        block_range: None,
    }
}

/// With candidates waiting and no free slot: the connected discovered peer with the
/// lowest score (answers minus four per timeout) among those that time out more often
/// than they answer.
fn worst_peer(pool: &Pool, reports: &[(usize, Rc<RefCell<NetPeerReport>>)]) -> Option<PeerId> {
    if pool.queued() == 0 {
        return None;
    }
    pool.connected_peers()
        .filter_map(|p| {
            let (_, r) = reports.iter().find(|(i, _)| *i == p as usize)?;
            let r = r.borrow();
            (r.timeouts > r.answered).then_some((p, r.answered as i64 - 4 * r.timeouts as i64))
        })
        .min_by_key(|(_, score)| *score)
        .map(|(p, _)| p)
}

/// Send this shard's pool counts to shard 0; shard 0 logs the peer line (summed over the
/// shards) and refreshes the `/status` section `eth_peers`.
async fn publish_peers(
    shard: &Shard<MeshMsg>,
    counts: &PoolCounts,
    disc: &RefCell<DiscStats>,
    board: &RefCell<ZeroBoard>,
    shards: usize,
) {
    let me = shard.id().0;
    let sid = ShardId(me);
    use catchup_shards::metrics::gauge;
    gauge(
        "eth_peers_candidates",
        "discovered nodes handed to this shard's peer pool",
    )
    .set(sid, counts.candidates as i64);
    gauge(
        "eth_peers_dialed",
        "dials of discovered peers started by this shard",
    )
    .set(sid, counts.dialed as i64);
    gauge(
        "eth_peers_connected",
        "discovered peers connected to this shard now",
    )
    .set(sid, counts.connected_now as i64);
    gauge(
        "eth_peers_dropped",
        "discovered peers this shard's pool let go (any reason)",
    )
    .set(sid, counts.dropped.values().sum::<u64>() as i64);
    if me == 0 {
        gauge(
            "eth_discovery_nodes_found",
            "distinct nodes found by discovery (endpoint proven or from a DNS list)",
        )
        .set(sid, disc.borrow().nodes_found as i64);
    }
    tell_zero(shard, board, MeshMsg::Pool(me, counts.clone())).await;
    if me != 0 {
        return;
    }
    let mut total = PoolCounts::default();
    for c in board.borrow().pools.values() {
        total.add(c);
    }
    let d = disc.borrow().clone();
    let dropped: Vec<String> = total
        .dropped
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    tracing::info!(
        target: "progress",
        shards,
        "peers: discovered {} ({} compatible, {} other chains), dialed {}, connected {} now / {} ever, dropped {}{}",
        d.nodes_found,
        d.eth_compatible,
        d.eth_incompatible,
        total.dialed,
        total.connected_now,
        total.connected_ever,
        total.dropped.values().sum::<u64>(),
        if dropped.is_empty() { String::new() } else { format!(" ({})", dropped.join(", ")) }
    );
    crate::node::admin::set_status(
        "eth_peers",
        serde_json::json!({ "discovery": d, "pool": total }),
    );
}

/// Log this shard's progress line and refresh its `/status` section; with several shards,
/// each shard sends its progress to shard 0, which logs the line summed over all shards (as
/// of each one's last message).
async fn publish(
    shard: &Shard<MeshMsg>,
    engine: &Engine,
    resumed: &StoredCounts,
    board: &RefCell<ZeroBoard>,
    shards: usize,
) {
    let me = shard.id().0;
    let (status, progress) = (engine.status(), engine.get_progress());
    tracing::info!(target: "progress", shard = me, "{}", progress_line(&status, &progress));
    if shards > 1 {
        tell_zero(shard, board, MeshMsg::Progress(me, progress.clone())).await;
        let total = if me == 0 {
            board.borrow().total(shards)
        } else {
            None
        };
        if let Some(total) = total {
            tracing::info!(
                target: "progress",
                shards,
                "total: {}",
                progress_line(&status, &total)
            );
        }
    }
    crate::node::admin::set_status(
        &format!("eth_sync_shard_{me}"),
        serde_json::json!({ "status": status, "progress": progress, "resumed": resumed }),
    );
}

/// Run the sync with one engine per shard of `rc` (pinned executors; its shard count wins
/// over `cfg.shards`), each dialing the peers it owns. Blocks until the sync ends.
pub fn run_sync_sharded(
    cfg: NetSyncConfig,
    node: LocalNode,
    rc: RuntimeConfig,
    shutdown: Arc<AtomicBool>,
) -> anyhow::Result<NetSyncReport> {
    run_sync_sharded_with(cfg, node, rc, shutdown, SyncExtras::default())
}

/// [`run_sync_sharded`] with a store on disk per shard (resuming from what it holds) and
/// the progress settings of `extras`. `extras.shard_dirs`, when given, must name one
/// directory per shard of `rc`.
pub fn run_sync_sharded_with(
    cfg: NetSyncConfig,
    node: LocalNode,
    rc: RuntimeConfig,
    shutdown: Arc<AtomicBool>,
    extras: SyncExtras,
) -> anyhow::Result<NetSyncReport> {
    run_sync_sharded_full(cfg, node, rc, shutdown, extras).map(|(r, _)| r)
}

/// [`run_sync_sharded_with`], also handing back each shard's store (in shard order; empty
/// unless `extras.keep_stores`), for checks of what was stored.
pub fn run_sync_sharded_full(
    cfg: NetSyncConfig,
    node: LocalNode,
    rc: RuntimeConfig,
    shutdown: Arc<AtomicBool>,
    extras: SyncExtras,
) -> anyhow::Result<(NetSyncReport, Vec<MemStore>)> {
    if let Some(d) = &extras.shard_dirs {
        anyhow::ensure!(
            d.len() == rc.shards.max(1),
            "{} store directories for {} shards",
            d.len(),
            rc.shards.max(1)
        );
    }
    let budget_per_shard = extras
        .shard_dirs
        .is_some()
        .then_some(extras.memory_budget_bytes);
    let extras = Arc::new(extras);
    let started = Instant::now();
    let shards = rc.shards.max(1);
    let mut rc = rc;
    rc.name = "eth-sync".into();
    rc.channel_capacity = 1 << 16;
    let mut cfg = NetSyncConfig { shards, ..cfg };
    let mut node = node;
    if cfg.sync.mode == crate::eth::sync::config::SyncMode::Fast {
        // Fast sync fetches state by node hash (GetNodeData), which only eth/66 carries.
        node.capabilities
            .retain(|c| c.name != "eth" || c.version == 66);
    }
    if let Some(b) = budget_per_shard {
        // The engine's backlog of open storage tries and its responses in flight take
        // their shares of the budget.
        let budget = StoreBudget {
            memory_budget_bytes: b,
        };
        cfg.sync.storage_backlog_accounts = budget.storage_backlog_accounts();
        cfg.sync.held_header_batches = budget.held_header_batches(cfg.sync.header_batch);
        cfg.sync.max_concurrent_requests = cfg
            .sync
            .max_concurrent_requests
            .min(budget.max_requests_in_flight());
    }
    cfg.shards = shards;
    let (cfg, node) = (Arc::new(cfg), Arc::new(node));
    let peers_n = peer_count(&cfg, &extras);
    let mut results =
        run_with_flag::<MeshMsg, _, _, _>(&rc, shutdown, move |shard: Shard<MeshMsg>| {
            let (cfg, node, extras) = (cfg.clone(), node.clone(), extras.clone());
            async move { shard_main(shard, cfg, node, extras).await }
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    results.sort_by_key(|r| r.shard);
    let stores: Vec<MemStore> = results.iter_mut().filter_map(|r| r.view.take()).collect();
    let zero = results
        .iter()
        .find(|r| r.shard == 0)
        .ok_or_else(|| anyhow::anyhow!("no result from shard 0"))?;
    let mut progress = Progress::default();
    for r in &results {
        progress.add(&r.progress);
    }
    let head = results
        .iter()
        .filter_map(|r| r.head.clone())
        .max_by_key(|h| h.0);
    let sum = |i: usize| results.iter().map(|r| r.counts[i]).sum::<u64>();
    // Static peers by index, then discovered peers by id.
    let mut peers: BTreeMap<usize, NetPeerReport> = BTreeMap::new();
    for r in &results {
        for (i, p) in &r.peers {
            if *i < peers_n || discovered_owner(*i as PeerId, shards).is_some() {
                peers.insert(*i, p.clone());
            }
        }
    }
    for r in &results {
        for d in &r.dropped {
            if let Some(p) = peers.get_mut(&(*d as usize)) {
                p.dropped_by_us = true;
            }
        }
    }
    let mut pool = PoolCounts::default();
    for r in &results {
        pool.add(&r.pool);
    }
    let disc = results.iter().find_map(|r| r.disc.clone());
    let report = NetSyncReport {
        finished: zero.finished,
        // A shard that fails stops the others, which then report "interrupted": name the
        // cause (shard 0's first, then any other shard's).
        failure: std::iter::once(zero)
            .chain(results.iter())
            .filter_map(|r| r.failure.clone())
            .min_by_key(|f| f == "interrupted"),
        mode: zero.mode.clone(),
        state_root: zero.status.state_root.clone(),
        head_number: head.as_ref().map(|h| h.0),
        head_hash: head.map(|h| h.1),
        pivot_block: zero.status.pivot_block,
        repivots: zero.status.repivots,
        headers_stored: sum(0),
        bodies_stored: sum(1),
        receipts_stored: sum(2),
        state_nodes_stored: sum(3),
        codes_stored: sum(4),
        resumed: StoredCounts::sum(results.iter().map(|r| &r.resumed)),
        fetched: StoredCounts::sum(results.iter().map(|r| &r.stored))
            .minus(&StoredCounts::sum(results.iter().map(|r| &r.resumed))),
        elapsed_ms: started.elapsed().as_millis() as u64,
        status: zero.status.clone(),
        progress,
        peers_discovered: disc.as_ref().map_or(0, |d| d.nodes_found),
        peers_connected: peers.values().filter(|p| p.eth_version != 0).count() as u64,
        peers_dialed: peers_n as u64 + pool.dialed,
        peers_dropped: pool.dropped.clone(),
        discovery: disc,
        peers: peers.into_values().collect(),
        memory_budget_bytes_per_shard: budget_per_shard,
        peak_rss_bytes: crate::node::opts::peak_rss_bytes(),
    };
    Ok((report, stores))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(downloaded: u64) -> Progress {
        Progress {
            headers_downloaded: downloaded,
            headers_total: 600,
            headers_share: 300,
            ..Progress::default()
        }
    }

    #[test]
    fn the_peer_that_mostly_times_out_makes_room_for_a_waiting_candidate() {
        use catchup_devp2p::enode::Enode;
        let node = |i: u8| Enode {
            id: [i; 64],
            addr: format!("127.0.0.1:{}", 30000 + i as u16).parse().unwrap(),
        };
        let mut pool = Pool::new(0, 1, 3, &[]);
        let mut reports = Vec::new();
        for i in 0..3 {
            pool.offer(node(i));
            let (pid, _) = pool.next_dial(0).unwrap();
            pool.connected(pid);
            reports.push((
                pid as usize,
                Rc::new(RefCell::new(new_peer_report(i.to_string()))),
            ));
        }
        let score = |k: usize, answered: u64, timeouts: u64| {
            let mut r = reports[k].1.borrow_mut();
            r.answered = answered;
            r.timeouts = timeouts;
        };
        score(0, 50, 2);
        score(1, 3, 9);
        score(2, 1, 4);
        assert_eq!(worst_peer(&pool, &reports), None, "no candidate waiting");
        pool.offer(node(9));
        assert_eq!(worst_peer(&pool, &reports), Some(reports[1].0 as PeerId));
        score(1, 30, 9);
        score(2, 10, 4);
        assert_eq!(
            worst_peer(&pool, &reports),
            None,
            "every peer answers more than it times out"
        );
    }

    #[test]
    fn the_total_line_waits_for_every_shard() {
        let mut board = ZeroBoard::default();
        // Shard 0 first, before shard 1 posted: its counts are not the whole sync's.
        board.note(MeshMsg::Progress(0, headers(100)));
        assert!(board.total(2).is_none());
        board.note(MeshMsg::Progress(1, headers(50)));
        assert_eq!(board.total(2).expect("all posted").headers_downloaded, 150);
        // A newer line replaces the shard's older one.
        board.note(MeshMsg::Progress(0, headers(300)));
        board.note(MeshMsg::Progress(1, headers(300)));
        let t = board.total(2).expect("all posted");
        assert!(progress_line(&Status::default(), &t).contains("headers 600/600 (100.0%)"));
    }
}

//! The sync engine of one shard: a state machine that takes events (peer joined/left, a
//! response, a timeout, a message from another shard, a tick) and returns actions (send a
//! request, message a shard, drop a peer, finished). Storage goes through [`SyncStore`].
//!
//! Shard 0 coordinates: it selects the pivot, joins header ranges by hash links, collects
//! per-shard reports, builds the top of the snap trie, and detects the end of each
//! state-walk round with probe waves (two identical consecutive waves of counters).
//!
//! This file holds the engine's state, its entry points and the dispatch of events,
//! responses, timeouts and request slots; each phase is an `impl Engine` block of its own:
//! `pivot` (pivot selection), `headers` (header batches and their join), `blocks` (bodies
//! and receipts), `fast` (the node-by-node state walk), `snap` (account and storage
//! ranges), `heal` (the snap trie-top rebuild and the probe waves ending walk rounds),
//! `coord` (shard messages and shard 0's coordination) and `progress` (counters, status).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use alloy_primitives::map::B256Map;
use alloy_primitives::B256;
use serde::{Deserialize, Serialize};

use super::config::{SyncConfig, SyncMode};
use super::peers::{PeerPolicy, PeerSet};
use super::store::SyncStore;
pub use super::trie::TaskPath;
use super::types::{Header, PeerId, ReqId, Request, Response};

mod blocks;
mod coord;
mod fast;
mod headers;
mod heal;
mod pivot;
mod progress;
mod snap;
mod target;

use coord::Coordinator;
pub use coord::ShardMsg;
pub use progress::{progress_line, Progress, Status};
pub use snap::nibble_range;
use snap::{AccountRangeTask, StorageAcc, StorageTasks};

/// A shard index.
pub type ShardId = usize;

/// State items of a walk round queued or in flight, by hash: trie nodes and codes apart.
/// Keys are keccak hashes, so the sets hash them by their own bytes
/// (`alloy_primitives::map::B256Set`), not by SipHash.
#[derive(Debug, Default)]
pub(crate) struct PendingItems {
    nodes: alloy_primitives::map::B256Set,
    codes: alloy_primitives::map::B256Set,
}

impl PendingItems {
    fn set_mut(&mut self, code: bool) -> &mut alloy_primitives::map::B256Set {
        if code {
            &mut self.codes
        } else {
            &mut self.nodes
        }
    }
    /// Whether it was not there.
    pub(crate) fn insert(&mut self, (hash, code): (B256, bool)) -> bool {
        self.set_mut(code).insert(hash)
    }
    pub(crate) fn remove(&mut self, (hash, code): &(B256, bool)) -> bool {
        self.set_mut(*code).remove(hash)
    }
    pub(crate) fn clear(&mut self) {
        self.nodes.clear();
        self.codes.clear();
    }
}

/// The shard that owns a trie path: the runtime's trie map, which cuts the key space at
/// its first 1–3 nibbles (as finely as the shard count needs for balance), so every
/// subtree under such a prefix (and the storage tries and codes of its accounts) lives on
/// one shard. The shorter paths (the top of the trie) are shard 0's.
pub fn owner_of_path(nibbles: &[u8], shards: usize) -> ShardId {
    catchup_shards::ownership::owner_of_trie_path(nibbles, shards).0
}

/// The shard that owns header batch `batch` (batches are dealt round-robin).
pub fn owner_of_batch(batch: u64, shards: usize) -> ShardId {
    catchup_shards::ownership::owner_of_range(batch, 1, shards).0
}

/// Input to an engine.
#[derive(Debug, Clone)]
pub enum Event {
    PeerJoined(PeerId),
    PeerLeft(PeerId),
    Response {
        peer: PeerId,
        id: ReqId,
        resp: Response,
    },
    Timeout {
        peer: PeerId,
        id: ReqId,
    },
    Shard(ShardMsg),
    Tick,
    /// A new trusted sync target (a block hash), e.g. the Engine API's forkchoice head:
    /// see [`Engine::set_target`].
    Target(B256),
    /// The driver caught a peer lying (a head it cannot prove, a broken message) and
    /// dropped it: it no longer counts towards the pivot agreement.
    PeerLied(PeerId),
    /// A peer announced a new head (eth/69 BlockRangeUpdate, NewBlockHashes).
    PeerHead {
        peer: PeerId,
        number: u64,
    },
}

/// Output of an engine.
#[derive(Debug, Clone)]
pub enum Action {
    Send {
        peer: PeerId,
        id: ReqId,
        req: Request,
        timeout_ms: u64,
    },
    ToShard {
        shard: ShardId,
        msg: ShardMsg,
    },
    DropPeer(PeerId),
    /// The whole sync is complete (emitted by shard 0 once).
    Finished,
    /// The sync cannot continue (emitted by shard 0).
    Failed(String),
}

/// A state item to visit: a trie node (account trie, or the storage trie of `account`) or
/// a contract code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTask {
    pub hash: B256,
    pub path: TaskPath,
    pub account: Option<B256>,
    pub code: bool,
}

/// The journal: what a restart needs besides the store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Journal {
    mode: Option<SyncMode>,
    pivot: Option<String>,
    head: Option<String>,
    /// Coordinator: joined header batches (batch, first parent, last hash), hex. Read
    /// from journals of earlier versions only; no longer written (see `joined_batches`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    joined: Vec<(u64, String, String)>,
    /// Coordinator: how many header batches were joined when the journal was written
    /// (informational; a restart joins the stored batches again from the store).
    #[serde(default)]
    joined_batches: u64,
    /// Snap: per owned account range, (origin hex, done).
    ranges: Vec<(String, bool)>,
    /// Snap: per owned account range, the first stored account whose storage trie or
    /// code may not be complete (hex), or none below the range's origin (none at all
    /// when it is done). A restart reads the stored accounts again from there only.
    /// Journals of earlier versions have none: every stored account is read again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    followed: Vec<Option<String>>,
    rebuilt: bool,
    walk_round: u32,
    state_complete: bool,
    chain_complete: bool,
}

#[derive(Debug, Clone)]
enum Pending {
    Status,
    Anchors,
    Headers(u64),
    Bodies(Vec<u64>),
    Receipts(Vec<u64>),
    Nodes(Vec<NodeTask>),
    /// (snap epoch, range index)
    Account(u64, usize),
    /// (snap epoch, storage task indices)
    Storage(u64, Vec<usize>),
    Codes(Vec<B256>),
    /// The header of the trusted sync target with this hash.
    Target(B256),
}

impl Pending {
    /// A request for state (trie nodes, codes, account or storage ranges).
    fn is_state(&self) -> bool {
        matches!(
            self,
            Pending::Nodes(_) | Pending::Codes(_) | Pending::Account(..) | Pending::Storage(..)
        )
    }
}

#[derive(Debug, Clone)]
struct Inflight {
    peer: PeerId,
    sent_ms: u64,
    what: Pending,
    /// The pivot epoch the request was made in (answers from an older one say nothing
    /// about the current pivot's state).
    epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum StatePhase {
    Idle,
    Ranges,
    Rebuild,
    Walk,
    Complete,
}

/// The engine of one shard.
pub struct Engine {
    pub shard: ShardId,
    pub shards: usize,
    cfg: SyncConfig,
    policy: PeerPolicy,
    pub peers: PeerSet,
    mode: SyncMode,
    next_id: ReqId,
    inflight: BTreeMap<ReqId, Inflight>,
    now_ms: u64,
    started_ms: Option<u64>,
    pub progress: Progress,

    pivot: Option<Header>,
    head: Option<Header>,

    // headers and bodies
    batches: headers::Batches,
    batch_tried: BTreeMap<u64, Vec<PeerId>>,
    /// Batches whose first headers were stored before a restart: fetched from this number
    /// on, the fetched part checked against the stored prefix's last hash.
    batch_from: BTreeMap<u64, u64>,
    /// Peers caught lying (dropped).
    liars: std::collections::BTreeSet<PeerId>,
    body_queue: VecDeque<Vec<u64>>,
    receipt_queue: VecDeque<Vec<u64>>,
    bodies_inflight: usize,
    reported: Option<(bool, bool)>,

    // state walk
    phase: StatePhase,
    /// Since when every live peer has refused this shard's state requests (answered them
    /// empty), and since when every one has refused its receipts requests.
    unserved_since_ms: (Option<u64>, Option<u64>),
    /// The number of the first pivot this run used (a re-pivot moves past it).
    first_pivot: Option<u64>,
    /// Bumped whenever the pivot changes.
    pivot_epoch: u64,
    /// Since when this shard has wanted state and received none.
    state_wait_since_ms: Option<u64>,
    /// Empty answers to state requests for the current pivot's root, and from which peers.
    root_empty_answers: u64,
    root_empty_peers: std::collections::BTreeSet<PeerId>,
    /// A state answer for the current pivot's root was useful (told to shard 0 once).
    root_served: bool,
    /// Since when shard 0 has had no pivot.
    no_pivot_since_ms: Option<u64>,
    /// What the sync waits for, when nothing can progress (shown in the progress line).
    waiting: Option<String>,
    round: u32,
    /// State items of this walk round queued or in flight (trie nodes, and codes).
    pending: PendingItems,
    /// Something of this walk round was dropped unvisited: the round cannot end the walk
    /// unless it fetched nothing.
    round_lossy: bool,
    /// State requests in flight (nodes, codes, account and storage ranges).
    state_inflight: usize,
    /// Subtries of the account trie this shard built from ranges it fetched whole in this
    /// run, with every account's storage trie built and code stored: complete by
    /// construction, so the heal walk does not walk them again.
    complete: alloy_primitives::map::B256Set,
    /// This run fetched all of this shard's snap ranges from an empty start, and no
    /// storage trie was left to the heal (what `complete` needs).
    ranges_clean: bool,
    storage_left_to_heal: bool,
    /// The snap rebuild of this shard's account-trie blocks, while under way.
    rebuilding: Option<heal::Rebuilding>,
    /// Subtries of the account trie already built (and stored) when their range was
    /// verified, for the rebuild to reference instead of building them again.
    known_subtries: heal::KnownSubtries,
    /// Items to fetch, taken newest first (the walk is depth-first).
    node_queue: VecDeque<NodeTask>,
    outbox: BTreeMap<ShardId, Vec<NodeTask>>,
    tasks_sent: u64,
    tasks_recv: u64,
    round_fetched: u64,

    // snap
    ranges: Vec<AccountRangeTask>,
    storage_tasks: StorageTasks,
    storage_ready: VecDeque<usize>,
    /// Bumped whenever the snap tasks are reset (new root, mode switch).
    snap_epoch: u64,
    storage_accs: B256Map<StorageAcc>,
    /// Pieces of the key space whose accounts were stored before a restart and are not
    /// followed up yet (their storage tries and codes): see `follow_stored`. In key
    /// order: queued range by range, each from its start, and taken from the front.
    stored_to_follow: VecDeque<(B256, B256)>,
    /// The most storage tries (or codes) one account response has opened (None before
    /// the first response): how much room an account range in flight may need.
    backlog_per_range: Option<usize>,
    code_queue: VecDeque<B256>,
    codes_wanted: HashSet<B256>,
    /// Stored accounts whose storage trie or code is still open, with which of the two
    /// (bits `FOLLOW_STORAGE`, `FOLLOW_CODE`): the lowest in a range is where a restart
    /// must read the stored accounts again from (see `Journal::followed`).
    followups: BTreeMap<B256, u8>,
    /// Accounts waiting for a code, by code hash.
    code_waiters: HashMap<B256, Vec<B256>>,
    /// Accounts followed up since the ranges were last journaled.
    followed_since_save: u32,
    rebuilt: bool,

    // coordinator
    coord: Option<Coordinator>,
    journal: Journal,
}

fn hexs(b: &[u8]) -> String {
    hex::encode(b)
}
fn unhex32(s: &str) -> B256 {
    hex::decode(s)
        .ok()
        .filter(|v| v.len() == 32)
        .map(|v| B256::from_slice(&v))
        .unwrap_or_default()
}

impl Engine {
    /// A fresh engine, or one resumed from the store's journal.
    pub fn new(cfg: SyncConfig, shard: ShardId, shards: usize, store: &dyn SyncStore) -> Engine {
        assert!(shards >= 1 && shard < shards, "shard {shard} of {shards}");
        let policy = PeerPolicy {
            min_timeout_ms: cfg.min_timeout_ms,
            max_timeout_ms: cfg.max_timeout_ms,
            initial_timeout_ms: cfg.request_timeout_ms,
            backoff_base_ms: cfg.backoff_base_ms,
            backoff_max_ms: cfg.backoff_max_ms,
            max_inflight_per_peer: cfg.max_inflight_per_peer,
        };
        let journal: Journal = store
            .read_journal()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut e = Engine {
            shard,
            shards,
            mode: journal.mode.unwrap_or(cfg.mode),
            cfg,
            policy,
            peers: PeerSet::default(),
            next_id: 1,
            inflight: BTreeMap::new(),
            now_ms: 0,
            started_ms: None,
            progress: Progress::default(),
            pivot: None,
            head: None,
            batches: Default::default(),
            batch_tried: BTreeMap::new(),
            batch_from: BTreeMap::new(),
            liars: Default::default(),
            body_queue: VecDeque::new(),
            receipt_queue: VecDeque::new(),
            bodies_inflight: 0,
            reported: None,
            phase: StatePhase::Idle,
            unserved_since_ms: (None, None),
            first_pivot: None,
            pivot_epoch: 0,
            state_wait_since_ms: None,
            root_empty_answers: 0,
            root_empty_peers: Default::default(),
            root_served: false,
            no_pivot_since_ms: None,
            waiting: None,
            round: 0,
            pending: Default::default(),
            round_lossy: false,
            state_inflight: 0,
            complete: Default::default(),
            ranges_clean: false,
            storage_left_to_heal: false,
            rebuilding: None,
            known_subtries: heal::KnownSubtries::kept(),
            node_queue: VecDeque::new(),
            outbox: BTreeMap::new(),
            tasks_sent: 0,
            tasks_recv: 0,
            round_fetched: 0,
            ranges: Vec::new(),
            storage_tasks: StorageTasks::default(),
            storage_ready: VecDeque::new(),
            snap_epoch: 0,
            storage_accs: B256Map::default(),
            stored_to_follow: VecDeque::new(),
            backlog_per_range: None,
            code_queue: VecDeque::new(),
            codes_wanted: HashSet::new(),
            followups: BTreeMap::new(),
            code_waiters: HashMap::new(),
            followed_since_save: 0,
            rebuilt: journal.rebuilt,
            coord: if shard == 0 {
                Some(Coordinator::default())
            } else {
                None
            },
            journal,
        };
        if let Some(c) = e.coord.as_mut() {
            for (b, fp, lh) in &e.journal.joined {
                c.joined.insert(*b, (unhex32(fp), unhex32(lh)));
            }
            c.state_complete = e.journal.state_complete;
            c.target.wanted = e.cfg.sync_target;
        }
        e
    }

    pub fn mode(&self) -> SyncMode {
        self.mode
    }

    /// Header batches held in memory, waiting for the coordinator's join.
    pub fn held_batches(&self) -> usize {
        self.batches.held()
    }

    /// Requests in flight from this shard.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Pivots selected after the first one by this engine instance.
    pub fn repivots(&self) -> u64 {
        self.coord.as_ref().map(|c| c.repivots).unwrap_or(0)
    }

    pub fn pivot(&self) -> Option<&Header> {
        self.pivot.as_ref()
    }

    /// Ask for a mode change (on shard 0; it tells the others), keeping verified data.
    pub fn switch_mode(&mut self, mode: SyncMode, out: &mut Vec<Action>) {
        for s in 0..self.shards {
            out.push(Action::ToShard {
                shard: s,
                msg: ShardMsg::SwitchMode(mode),
            });
        }
    }

    fn write_journal(&mut self, store: &mut dyn SyncStore) {
        self.journal.mode = Some(self.mode);
        if let Ok(b) = serde_json::to_vec(&self.journal) {
            store.write_journal(&b);
        }
    }

    /// Handle one event at virtual or real time `now_ms`.
    pub fn handle(
        &mut self,
        now_ms: u64,
        ev: Event,
        store: &mut dyn SyncStore,
        out: &mut Vec<Action>,
    ) {
        self.now_ms = now_ms;
        if self.started_ms.is_none() {
            self.started_ms = Some(now_ms);
        }
        match ev {
            Event::PeerJoined(p) => self.peers.join(p, &self.policy),
            Event::PeerLeft(p) => self.peers.leave(p),
            Event::PeerLied(p) => {
                if !self.liars.contains(&p) {
                    self.lie(p, out);
                }
            }
            Event::PeerHead { peer, number } => {
                if let Some(p) = self.peers.peers.get_mut(&peer) {
                    if p.best.is_none_or(|b| b < number) {
                        p.best = Some(number);
                        self.progress.peer_heads += 1;
                    }
                }
            }
            Event::Tick => self.on_tick(store, out),
            Event::Timeout { peer, id } => {
                if let Some(inf) = self.inflight.remove(&id) {
                    self.settle(&inf.what);
                    self.progress.timeouts += 1;
                    self.peers.failure(peer, now_ms, &self.policy, true);
                    if !self.stale_walk(&inf) {
                        self.requeue(inf.what, store, out);
                    }
                }
            }
            Event::Response { peer, id, resp } => {
                if self.inflight.get(&id).is_some_and(|i| i.peer == peer) {
                    let inf = self.inflight.remove(&id).expect("checked");
                    self.settle(&inf.what);
                    {
                        self.on_response(peer, inf, resp, store, out);
                    }
                }
            }
            Event::Shard(msg) => self.on_shard_msg(msg, store, out),
            Event::Target(hash) => self.set_target(hash),
        }
        self.flush_outbox(out);
        self.pump(store, out);
        self.report(out);
    }

    fn send(&mut self, peer: PeerId, req: Request, what: Pending, out: &mut Vec<Action>) {
        let id = (self.next_id << 8) | self.shard as u64;
        self.next_id += 1;
        let timeout_ms = self.peers.timeout_ms(peer, &self.policy);
        self.peers.sent(peer);
        self.progress.requests_sent += 1;
        if what.is_state() {
            self.state_inflight += 1;
        }
        self.inflight.insert(
            id,
            Inflight {
                peer,
                sent_ms: self.now_ms,
                what,
                epoch: self.pivot_epoch,
            },
        );
        out.push(Action::Send {
            peer,
            id,
            req,
            timeout_ms,
        });
    }

    /// A state-walk request made under an older pivot.
    fn stale_walk(&self, inf: &Inflight) -> bool {
        inf.epoch != self.pivot_epoch && matches!(inf.what, Pending::Nodes(_))
    }

    /// Bookkeeping when a request leaves the in-flight set.
    fn settle(&mut self, what: &Pending) {
        if matches!(what, Pending::Bodies(_) | Pending::Receipts(_)) {
            self.bodies_inflight -= 1;
        }
        if what.is_state() {
            self.state_inflight -= 1;
        }
    }

    #[track_caller]
    fn lie(&mut self, peer: PeerId, out: &mut Vec<Action>) {
        tracing::info!(shard = self.shard, peer, at = %std::panic::Location::caller(), "peer caught lying; dropped");
        self.progress.lies_detected += 1;
        self.peers.lied(peer);
        // What it said before it was caught does not count either.
        if let Some(c) = self.coord.as_mut() {
            c.status_replies.remove(&peer);
            for v in c.anchor_votes.values_mut() {
                v.retain(|x| x.0 != peer);
            }
            c.anchor_votes.retain(|_, v| !v.is_empty());
        }
        if self.liars.insert(peer) {
            let eff = self.agreement();
            if eff < self.cfg.pivot_agreement {
                tracing::warn!(
                    shard = self.shard,
                    liars = self.liars.len(),
                    given = self.cfg.peers_given,
                    agreement = eff,
                    "peers caught lying no longer count: the pivot needs {eff} agreeing peer(s)"
                );
            }
        }
        out.push(Action::DropPeer(peer));
    }

    /// Free request slots for data requests. The coordinator keeps `pivot_agreement` of
    /// its slots for status and pivot-header requests, so checking the head never waits
    /// behind the download (and the per-shard cap still holds).
    fn free_slots(&self) -> usize {
        let max = self.cfg.max_concurrent_requests;
        let reserve = if self.shard == 0 {
            self.agreement().min(max.saturating_sub(1))
        } else {
            0
        };
        (max - reserve).saturating_sub(self.inflight.len())
    }

    // ---------------- dispatch ----------------

    fn pump(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Action>) {
        if self.pivot.is_none() {
            return;
        }
        let now = self.now_ms;
        if !self.pump_headers(now, out) {
            return;
        }
        self.pump_blocks(now, store, out);
        // State.
        let root = self
            .pivot
            .as_ref()
            .map(|p| p.state_root)
            .unwrap_or_default();
        match self.phase {
            StatePhase::Walk => self.pump_walk(now, root, out),
            StatePhase::Ranges => {
                self.follow_stored(store);
                self.pump_ranges(now, root, out)
            }
            _ => {}
        }
    }

    fn requeue(&mut self, what: Pending, _store: &mut dyn SyncStore, _out: &mut Vec<Action>) {
        match what {
            Pending::Status => {
                let c = self
                    .coord
                    .as_mut()
                    .expect("only the coordinator asks for status");
                if c.status_pending > 0 {
                    // Counted as an answer without a best block.
                    let id = PeerId::MAX;
                    let _ = id;
                }
                self.on_status(PeerId::MAX, None, _out);
            }
            Pending::Anchors => self.on_anchors(PeerId::MAX, None, _out),
            Pending::Target(t) => self.target_lost(t),
            Pending::Headers(b) => self.batch_unanswered(b),
            Pending::Bodies(nums) => {
                self.body_queue.push_back(nums);
            }
            Pending::Receipts(nums) => {
                self.receipt_queue.push_back(nums);
            }
            Pending::Nodes(tasks) => {
                if self.phase == StatePhase::Walk {
                    for t in tasks {
                        self.node_queue.push_back(t);
                    }
                }
            }
            Pending::Account(epoch, i) => {
                if epoch == self.snap_epoch {
                    if let Some(r) = self.ranges.get_mut(i) {
                        r.busy = false;
                    }
                }
            }
            Pending::Storage(epoch, idxs) => {
                if epoch == self.snap_epoch {
                    for i in idxs {
                        self.storage_unbusy(i);
                    }
                }
            }
            Pending::Codes(hashes) => {
                if self.phase == StatePhase::Walk {
                    for h in hashes {
                        self.node_queue.push_back(NodeTask {
                            hash: h,
                            path: TaskPath::EMPTY,
                            account: None,
                            code: true,
                        });
                    }
                } else if self.phase == StatePhase::Ranges {
                    for h in hashes {
                        self.code_queue.push_back(h);
                    }
                }
            }
        }
    }

    // ---------------- responses ----------------

    fn on_response(
        &mut self,
        peer: PeerId,
        inf: Inflight,
        resp: Response,
        store: &mut dyn SyncStore,
        out: &mut Vec<Action>,
    ) {
        if self.liars.contains(&peer) {
            // Sent before it was caught: nothing it says counts any more (a vote counted
            // now could decide the pivot alone once the liars no longer count).
            let stale = self.stale_walk(&inf);
            match inf.what {
                Pending::Status => self.on_status(peer, None, out),
                Pending::Anchors => self.on_anchors(peer, None, out),
                _ if stale => {}
                what => self.requeue(what, store, out),
            }
            return;
        }
        let rtt = self.now_ms.saturating_sub(inf.sent_ms).max(1);
        let size = resp.size_bytes();
        // Ok(true): useful; Ok(false): empty/useless (not a lie); Err: lie.
        let stale = self.stale_walk(&inf);
        // What the verdict below needs to know of the request, before it is taken apart.
        let state_answer = inf.epoch == self.pivot_epoch
            && matches!(
                inf.what,
                Pending::Nodes(_) | Pending::Account(..) | Pending::Storage(..)
            );
        let state_req = inf.what.is_state();
        let same_epoch = inf.epoch == self.pivot_epoch;
        let receipts_req = matches!(inf.what, Pending::Receipts(_));
        // Kept for a requeue when the answer is a lie (the rest is moved into the handler).
        let keep = match &inf.what {
            Pending::Nodes(_) | Pending::Codes(_) => None,
            w => Some(w.clone()),
        };
        let verdict: Result<bool, Option<Pending>> = match (inf.what, resp) {
            // Trie nodes asked for under an older pivot: their paths name another trie
            // (the walk from the new root asks for what it needs itself).
            (Pending::Nodes(_), _) if stale => Ok(true),
            (
                Pending::Status,
                Response::Status {
                    best_number,
                    genesis,
                    ..
                },
            ) => {
                let ok = self
                    .cfg
                    .trusted_anchor
                    .is_none_or(|a| a == genesis || self.cfg.anchor_number > 0);
                self.on_status(peer, ok.then_some(best_number), out);
                Ok(true)
            }
            (Pending::Anchors, Response::BlockHeaders(h)) => {
                self.on_anchors(peer, Some(h), out);
                Ok(true)
            }
            (Pending::Target(t), Response::BlockHeaders(raws)) => {
                self.on_target_header(peer, t, raws, out).map_err(|()| None)
            }
            (Pending::Headers(b), Response::BlockHeaders(raws)) => self
                .on_headers(peer, b, raws, store, out)
                .map_err(|()| None),
            (Pending::Bodies(nums), Response::BlockBodies(bodies)) => {
                self.on_bodies(nums, bodies, store).map_err(|()| None)
            }
            (Pending::Receipts(nums), Response::Receipts(rs)) => {
                self.on_receipts(nums, rs, store).map_err(|()| None)
            }
            (Pending::Nodes(tasks), Response::NodeData(nodes)) => {
                self.checked_nodes(tasks, nodes, false, store)
            }
            (Pending::Nodes(tasks), Response::TrieNodes(nodes)) => {
                self.checked_nodes(tasks, nodes, true, store)
            }
            (Pending::Codes(hashes), Response::ByteCodes(codes)) => {
                self.checked_codes(hashes, codes, store)
            }
            // Answers to requests made before the pivot or mode changed are not checked
            // against the new root (they would fail without the peer lying).
            (Pending::Account(e, _), Response::AccountRange { .. })
            | (Pending::Storage(e, _), Response::StorageRanges { .. })
                if e != self.snap_epoch =>
            {
                Ok(true)
            }
            (Pending::Account(_, i), Response::AccountRange { accounts, proof }) => self
                .on_accounts(i, accounts, proof, store)
                .map_err(|()| None),
            (Pending::Storage(_, idxs), Response::StorageRanges { slots, proof }) => self
                .on_storage(idxs, slots, proof, store)
                .map_err(|()| None),
            (what, _) => {
                // The wrong kind of answer: a lie; the request is asked again.
                self.lie(peer, out);
                self.requeue(what, store, out);
                return;
            }
        };
        match verdict {
            Ok(true) => {
                self.peers.success(peer, rtt, size);
                if state_answer {
                    self.state_served(peer, out);
                }
            }
            Ok(false) => {
                // A late empty answer about an earlier pivot's root says nothing of the
                // current one.
                if state_req && same_epoch {
                    if let Some(p) = self.peers.peers.get_mut(&peer) {
                        p.no_state = p.empty >= 2;
                    }
                }
                if state_answer {
                    self.state_unserved(peer, out);
                }
                if let (true, Some(p)) = (receipts_req, self.peers.peers.get_mut(&peer)) {
                    p.empty_receipts += 1;
                    p.no_receipts = p.empty_receipts >= 3;
                }
                self.peers.failure(peer, self.now_ms, &self.policy, false);
            }
            Err(requeue) => {
                self.lie(peer, out);
                if let Some(what) = requeue.or(keep) {
                    self.requeue(what, store, out);
                }
            }
        }
    }

    /// [`Engine::on_nodes`], giving the tasks back on a lie (they are not cloned to keep
    /// them for that case).
    fn checked_nodes(
        &mut self,
        tasks: Vec<NodeTask>,
        nodes: Vec<Vec<u8>>,
        positional: bool,
        store: &mut dyn SyncStore,
    ) -> Result<bool, Option<Pending>> {
        self.on_nodes(tasks, nodes, positional, store)
            .map_err(|tasks| Some(Pending::Nodes(tasks)))
    }

    fn checked_codes(
        &mut self,
        hashes: Vec<B256>,
        codes: Vec<Vec<u8>>,
        store: &mut dyn SyncStore,
    ) -> Result<bool, Option<Pending>> {
        self.on_codes(hashes, codes, store)
            .map_err(|hashes| Some(Pending::Codes(hashes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_total_and_balanced() {
        for shards in 1..=64 {
            let k = catchup_shards::ownership::trie_prefix_nibbles(shards);
            let mut counts = vec![0usize; shards];
            for p in 0u32..(1 << (4 * k)) {
                let path: Vec<u8> = (0..k).rev().map(|i| ((p >> (4 * i)) & 0xf) as u8).collect();
                counts[owner_of_path(&path, shards)] += 1;
            }
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(
                *min >= 1 && *max as f64 <= *min as f64 * 1.1,
                "{shards}: {counts:?}"
            );
            assert_eq!(owner_of_path(&[], shards), 0);
        }
    }

    #[test]
    fn owned_account_ranges_partition_the_key_space() {
        for shards in 1..=64 {
            let mut next = alloy_primitives::U256::ZERO;
            for s in 0..shards {
                let (lo, hi) = snap::owned_units(s, shards).expect("every shard owns keys");
                let (lo, hi) = (snap::unit_key(lo, false), snap::unit_key(hi, true));
                assert_eq!(
                    alloy_primitives::U256::from_be_bytes(lo.0),
                    next,
                    "{shards}/{s}"
                );
                let mut key = lo.0;
                key[31] = 7;
                assert_eq!(
                    catchup_shards::ownership::owner_of_trie_key(&key, shards).0,
                    s
                );
                next = alloy_primitives::U256::from_be_bytes(hi.0)
                    .wrapping_add(alloy_primitives::U256::from(1));
            }
            assert_eq!(
                next,
                alloy_primitives::U256::ZERO,
                "{shards}: wraps past the top"
            );
        }
    }
}

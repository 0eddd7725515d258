//! The state walk, node by node: fast sync's download of the state trie, and the heal
//! rounds after snap ranges. Each item goes to the shard owning its path (`Tasks`); it is
//! expanded when stored, fetched (`NodeData`, `TrieNodes`, `ByteCodes`) and checked when not.

use alloy_primitives::B256;

use super::{
    owner_of_path, Action, Engine, NodeTask, Pending, ShardId, ShardMsg, StatePhase, TaskPath,
};
use crate::eth::sync::config::SyncMode;
use crate::eth::sync::store::SyncStore;
use crate::eth::sync::trie::{ChildView, NodeView};
use crate::eth::sync::types::{AccountView, Request, TriePath};

/// Nodes one stored node may expand into, itself and its embedded children: a node is at
/// most 16 children, each embedded one shorter than 32 bytes.
const EXPAND_BUDGET: u32 = 64;

impl Engine {
    pub(super) fn start_walk(
        &mut self,
        round: u32,
        store: &mut dyn SyncStore,
        out: &mut Vec<Action>,
    ) {
        if self.journal.state_complete {
            return;
        }
        self.phase = StatePhase::Walk;
        self.round = round;
        self.pending.clear();
        self.node_queue.clear();
        self.tasks_sent = 0;
        self.tasks_recv = 0;
        self.round_fetched = 0;
        self.round_lossy = false;
        self.journal.walk_round = round;
        self.write_journal(store);
        if let Some(c) = self.coord.as_mut() {
            c.wave_replies.clear();
            c.last_wave = None;
        }
        if self.shard == 0 {
            if let Some(p) = &self.pivot {
                let t = NodeTask {
                    hash: p.state_root,
                    path: TaskPath::EMPTY,
                    account: None,
                    code: false,
                };
                self.visit(t, store);
            }
        }
        let _ = out;
    }

    pub(super) fn walk_idle(&self) -> bool {
        self.phase != StatePhase::Walk
            || (self.node_queue.is_empty() && self.outbox.is_empty() && self.state_inflight == 0)
    }

    fn task_owner(&self, t: &NodeTask) -> ShardId {
        match t.account {
            Some(a) => catchup_shards::ownership::owner_of_trie_key(&a.0, self.shards).0,
            None => owner_of_path(t.path.as_slice(), self.shards),
        }
    }

    fn route(&mut self, t: NodeTask, store: &mut dyn SyncStore) {
        let o = self.task_owner(&t);
        if o == self.shard {
            self.visit(t, store);
        } else {
            self.outbox.entry(o).or_default().push(t);
        }
    }

    pub(super) fn flush_outbox(&mut self, out: &mut Vec<Action>) {
        let round = self.round;
        for (s, tasks) in std::mem::take(&mut self.outbox) {
            self.tasks_sent += 1;
            out.push(Action::ToShard {
                shard: s,
                msg: ShardMsg::Tasks { round, tasks },
            });
        }
    }

    /// Visit a state item: expand it when stored, queue it for download when not (once:
    /// what is queued or in flight is in `pending`, which the depth-first order keeps
    /// small; a stored subtree referenced twice is expanded twice, from the store).
    fn visit(&mut self, t: NodeTask, store: &mut dyn SyncStore) {
        if t.code && t.hash == catchup_eth::EMPTY_CODE_HASH
            || !t.code && t.hash == catchup_eth::EMPTY_ROOT
        {
            return;
        }
        // Queued or in flight already? (One probe: most items visited are new.)
        let key = (t.hash, t.code);
        if !self.pending.insert(key) {
            return;
        }
        self.progress.state_nodes_visited += 1;
        if !t.code && self.complete.contains(&t.hash) && store.has_node(&t.hash) {
            // Built here from whole verified ranges with all its storage and codes.
            self.pending.remove(&key);
            return;
        }
        if t.code {
            if store.has_code(&t.hash) {
                self.pending.remove(&key);
            } else {
                self.node_queue.push_back(t);
            }
            return;
        }
        match store.get_node(&t.hash) {
            Some(raw) => {
                self.pending.remove(&key);
                match NodeView::parse(&raw) {
                    Ok(node) => {
                        let mut path = t.path;
                        self.expand(&node, &mut path, t.account, store, &mut { EXPAND_BUDGET })
                    }
                    // Stored nodes were checked when stored: the round cannot vouch for
                    // what is below this one.
                    Err(_) => self.round_lossy = true,
                }
            }
            None => self.node_queue.push_back(t),
        }
    }

    /// Route the children of `node` (at `path`; in the storage trie of `account`, or the
    /// account trie), and the storage tries and codes its account leaves name. The node
    /// is read in place; `path` is a scratch buffer, returned as it came.
    fn expand(
        &mut self,
        node: &NodeView<'_>,
        path: &mut TaskPath,
        account: Option<B256>,
        store: &mut dyn SyncStore,
        budget: &mut u32,
    ) {
        // Embedded children are expanded in place; a node holds at most a few of them.
        if *budget == 0 {
            self.round_lossy = true;
            return;
        }
        *budget -= 1;
        let at = path.len();
        match node {
            NodeView::Branch(children) => {
                for (i, c) in children.iter().enumerate() {
                    let Some(c) = c else { continue };
                    if path.push(i as u8) {
                        self.child(c, path, account, store, budget);
                        path.truncate(at);
                    } else {
                        // Deeper than a key: not a node of a state or storage trie.
                        self.round_lossy = true;
                    }
                }
            }
            NodeView::Extension { path: ext, child } => {
                if path.extend(ext) {
                    self.child(child, path, account, store, budget);
                    path.truncate(at);
                } else {
                    self.round_lossy = true;
                }
            }
            NodeView::Leaf { path: rest, value } => {
                if account.is_some() || path.len() + rest.len() != 64 || !path.extend(rest) {
                    return;
                }
                let mut key = [0u8; 32];
                for (i, n) in path.as_slice().iter().enumerate() {
                    key[i / 2] |= (n & 0x0f) << (4 * (1 - i % 2));
                }
                path.truncate(at);
                let Ok(acc) = AccountView::decode_roots(value) else {
                    return;
                };
                let a = B256::from(key);
                if acc.has_storage() {
                    self.route(
                        NodeTask {
                            hash: acc.storage_root,
                            path: TaskPath::EMPTY,
                            account: Some(a),
                            code: false,
                        },
                        store,
                    );
                }
                if acc.has_code() {
                    self.route(
                        NodeTask {
                            hash: acc.code_hash,
                            path: TaskPath::EMPTY,
                            account: Some(a),
                            code: true,
                        },
                        store,
                    );
                }
            }
        }
    }

    fn child(
        &mut self,
        c: &ChildView<'_>,
        path: &mut TaskPath,
        account: Option<B256>,
        store: &mut dyn SyncStore,
        budget: &mut u32,
    ) {
        match c {
            ChildView::Hash(h) => self.route(
                NodeTask {
                    hash: B256::from(**h),
                    path: *path,
                    account,
                    code: false,
                },
                store,
            ),
            ChildView::Embedded(raw) => match NodeView::parse(raw) {
                Ok(n) => self.expand(&n, path, account, store, budget),
                Err(_) => self.round_lossy = true,
            },
        }
    }

    /// State items another shard routed here (counted only in the current walk round).
    pub(super) fn on_tasks(&mut self, round: u32, tasks: Vec<NodeTask>, store: &mut dyn SyncStore) {
        if round == self.round && self.phase == StatePhase::Walk {
            self.tasks_recv += 1;
            for t in tasks {
                self.visit(t, store);
            }
        }
    }

    /// State nodes and codes to fetch in a walk round.
    pub(super) fn pump_walk(&mut self, now: u64, root: B256, out: &mut Vec<Action>) {
        while self.free_slots() > 0 && !self.node_queue.is_empty() {
            // The pivot's state: a peer whose head reached the pivot is preferred.
            let at = self.pivot.as_ref().map_or(0, |p| p.number);
            let Some(peer) = self.peers.pick_for(now, &self.policy, &[], true, at) else {
                break;
            };
            let snap = self.mode == SyncMode::Snap;
            let mut tasks = Vec::new();
            let mut codes = Vec::new();
            while tasks.len() + codes.len() < self.cfg.node_batch {
                // Newest first: the walk goes depth-first, so what waits stays small.
                let Some(t) = self.node_queue.pop_back() else {
                    break;
                };
                if snap && t.code {
                    codes.push(t.hash);
                } else {
                    tasks.push(t);
                }
            }
            if !codes.is_empty() {
                self.send(
                    peer,
                    Request::ByteCodes {
                        hashes: codes.clone(),
                        bytes: self.cfg.snap_response_bytes,
                    },
                    Pending::Codes(codes),
                    out,
                );
            }
            if !tasks.is_empty() {
                let req = if snap {
                    let paths = tasks
                        .iter()
                        .map(|t| TriePath {
                            account: t.account,
                            path: t.path.as_slice().to_vec(),
                        })
                        .collect();
                    Request::TrieNodes {
                        root,
                        paths,
                        bytes: self.cfg.snap_response_bytes,
                    }
                } else {
                    Request::NodeData(tasks.iter().map(|t| t.hash).collect())
                };
                self.send(peer, req, Pending::Nodes(tasks), out);
            }
        }
    }

    pub(super) fn on_nodes(
        &mut self,
        tasks: Vec<NodeTask>,
        nodes: Vec<Vec<u8>>,
        positional: bool,
        store: &mut dyn SyncStore,
    ) -> Result<bool, Vec<NodeTask>> {
        if self.phase != StatePhase::Walk {
            return Ok(true);
        }
        if nodes.len() > tasks.len() {
            return Err(tasks);
        }
        let mut delivered = vec![false; tasks.len()];
        let mut matched = Vec::with_capacity(nodes.len());
        let mut views = Vec::with_capacity(nodes.len());
        // Every node is checked (hash, then form) before any is stored. The hashes are
        // taken first, all together: four nodes at a time where the CPU can
        // ([`catchup_eth::keccak4`]), and keccak's code stays hot across the answer.
        let mut hashes = Vec::new();
        catchup_eth::keccak4::keccak256_each(&nodes, &mut hashes);
        for (i, (n, &h)) in nodes.iter().zip(hashes.iter()).enumerate() {
            let idx = if positional || tasks[i].hash == h && !delivered[i] {
                // Answers come in the order asked (snap: always; eth: usually).
                (tasks[i].hash == h).then_some(i)
            } else {
                tasks
                    .iter()
                    .enumerate()
                    .position(|(j, t)| !delivered[j] && t.hash == h)
            };
            let Some(j) = idx else { return Err(tasks) };
            if tasks[j].code {
                views.push(None);
            } else {
                match NodeView::parse(n) {
                    Ok(v) => views.push(Some(v)),
                    Err(_) => return Err(tasks),
                }
            }
            delivered[j] = true;
            matched.push(j);
        }
        let any = !matched.is_empty();
        // The answered nodes are expanded while they are still pending: a child that came
        // in the same answer is not asked for again (nor expanded twice), it is stored
        // below. Then everything answered leaves the pending set and is stored, the
        // answer's own buffers moved into the store (the views borrowed them until now).
        for (&j, view) in matched.iter().zip(views.iter()) {
            if let Some(node) = view {
                let t = &tasks[j];
                let mut path = t.path;
                self.expand(node, &mut path, t.account, store, &mut { EXPAND_BUDGET });
            }
        }
        drop(views);
        for (&j, raw) in matched.iter().zip(nodes) {
            let t = &tasks[j];
            self.pending.remove(&(t.hash, t.code));
            self.round_fetched += 1;
            if self.round > 0 || self.mode == SyncMode::Snap {
                self.progress.healed_nodes += 1;
            }
            let new = if t.code {
                let new = !store.has_code(&t.hash);
                if new {
                    store.put_code(t.hash, &raw);
                    self.progress.codes_downloaded += 1;
                }
                new
            } else {
                let new = store.put_new_node_owned(t.hash, raw);
                if new {
                    self.progress.state_nodes_downloaded += 1;
                }
                new
            };
            if !new {
                self.progress.refetched_items += 1;
            }
        }
        for (j, t) in tasks.into_iter().enumerate() {
            if !delivered[j] {
                self.node_queue.push_back(t);
            }
        }
        Ok(any)
    }
}

//! The state walk, node by node: fast sync's download of the state trie, and the heal
//! rounds after snap ranges. Each item goes to the shard owning its path (`Tasks`); it is
//! expanded when stored, fetched (`NodeData`, `TrieNodes`, `ByteCodes`) and checked when not.

use alloy_primitives::{keccak256, B256};

use super::{owner_of_path, Action, Engine, NodeTask, Pending, ShardId, ShardMsg, StatePhase};
use crate::eth::sync::config::SyncMode;
use crate::eth::sync::store::SyncStore;
use crate::eth::sync::trie::{self, Node, NodeRef};
use crate::eth::sync::types::{AccountView, Request, TriePath};

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
                    path: vec![],
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
            None => owner_of_path(&t.path, self.shards),
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
        if self.pending.contains(&(t.hash, t.code)) {
            return;
        }
        self.progress.state_nodes_visited += 1;
        if !t.code && self.complete.contains(&t.hash) && store.has_node(&t.hash) {
            // Built here from whole verified ranges with all its storage and codes.
            return;
        }
        if t.code {
            if !store.has_code(&t.hash) {
                self.pending.insert((t.hash, true));
                self.node_queue.push_back(t);
            }
            return;
        }
        match store.get_node(&t.hash) {
            Some(raw) => match trie::decode_node(&raw) {
                Ok(node) => self.expand(node, &t.path, t.account, store),
                // Stored nodes were checked when stored: the round cannot vouch for
                // what is below this one.
                Err(_) => self.round_lossy = true,
            },
            None => {
                self.pending.insert((t.hash, false));
                self.node_queue.push_back(t);
            }
        }
    }

    /// Route the children of `node` (at `path`; in the storage trie of `account`, or the
    /// account trie), and the storage tries and codes its account leaves name.
    fn expand(
        &mut self,
        node: Node,
        path: &[u8],
        account: Option<B256>,
        store: &mut dyn SyncStore,
    ) {
        let mut stack: Vec<(Node, Vec<u8>)> = Vec::new();
        let mut node = Some((node, path.to_vec()));
        let mut guard = 0;
        while let Some((node_now, path)) = node.take().or_else(|| stack.pop()) {
            guard += 1;
            if guard > 64 {
                self.round_lossy = true;
                break;
            }
            let mut child =
                |c: NodeRef, p: Vec<u8>, stack: &mut Vec<(Node, Vec<u8>)>, me: &mut Engine| match c
                {
                    NodeRef::Hash(h) => me.route(
                        NodeTask {
                            hash: h,
                            path: p,
                            account,
                            code: false,
                        },
                        store,
                    ),
                    NodeRef::Embedded(r) => match trie::decode_node(&r) {
                        Ok(n) => stack.push((n, p)),
                        Err(_) => me.round_lossy = true,
                    },
                };
            match node_now {
                Node::Branch { children, .. } => {
                    for (i, c) in children.into_iter().enumerate() {
                        let Some(c) = c else { continue };
                        let mut p = Vec::with_capacity(path.len() + 1);
                        p.extend_from_slice(&path);
                        p.push(i as u8);
                        child(c, p, &mut stack, self);
                    }
                }
                Node::Extension {
                    path: ext,
                    child: c,
                } => {
                    let mut p = Vec::with_capacity(path.len() + ext.0.len());
                    p.extend_from_slice(&path);
                    p.extend_from_slice(&ext.0);
                    child(c, p, &mut stack, self);
                }
                Node::Leaf { path: rest, value } => {
                    if account.is_some() {
                        continue;
                    }
                    if path.len() + rest.0.len() != 64 {
                        continue;
                    }
                    let mut key = [0u8; 32];
                    for (i, n) in path.iter().chain(rest.0.iter()).enumerate() {
                        key[i / 2] |= (n & 0x0f) << (4 * (1 - i % 2));
                    }
                    let Ok(acc) = AccountView::decode(&value) else {
                        continue;
                    };
                    let a = B256::from(key);
                    if acc.has_storage() {
                        self.route(
                            NodeTask {
                                hash: acc.storage_root,
                                path: vec![],
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
                                path: vec![],
                                account: Some(a),
                                code: true,
                            },
                            store,
                        );
                    }
                }
            }
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
                            path: t.path.clone(),
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
        let mut decoded = Vec::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            let h = keccak256(n);
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
                decoded.push(None);
            } else {
                match trie::decode_node(n) {
                    Ok(node) => decoded.push(Some(node)),
                    Err(_) => return Err(tasks),
                }
            }
            delivered[j] = true;
            matched.push(j);
        }
        let any = !matched.is_empty();
        for ((&j, raw), node) in matched.iter().zip(nodes.iter()).zip(decoded) {
            let t = &tasks[j];
            self.round_fetched += 1;
            self.pending.remove(&(t.hash, t.code));
            if self.round > 0 || self.mode == SyncMode::Snap {
                self.progress.healed_nodes += 1;
            }
            if t.code {
                if !store.has_code(&t.hash) {
                    store.put_code(t.hash, raw);
                    self.progress.codes_downloaded += 1;
                } else {
                    self.progress.refetched_items += 1;
                }
            } else {
                if !store.has_node(&t.hash) {
                    store.put_node(t.hash, raw);
                    self.progress.state_nodes_downloaded += 1;
                } else {
                    self.progress.refetched_items += 1;
                }
                if let Some(node) = node {
                    let (path, account) = (t.path.clone(), t.account);
                    self.expand(node, &path, account, store);
                }
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

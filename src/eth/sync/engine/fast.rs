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
        self.seen.clear();
        self.node_queue.clear();
        self.tasks_sent = 0;
        self.tasks_recv = 0;
        self.round_fetched = 0;
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
            || (self.node_queue.is_empty()
                && self.outbox.is_empty()
                && !self
                    .inflight
                    .values()
                    .any(|i| matches!(i.what, Pending::Nodes(_) | Pending::Codes(_))))
    }

    fn task_owner(&self, t: &NodeTask) -> ShardId {
        match t.account {
            Some(a) => owner_of_path(&[a[0] >> 4], self.shards),
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

    /// Visit a state item: expand it when stored, queue it for download when not.
    fn visit(&mut self, t: NodeTask, store: &mut dyn SyncStore) {
        if t.code && t.hash == catchup_eth::EMPTY_CODE_HASH
            || !t.code && t.hash == catchup_eth::EMPTY_ROOT
        {
            return;
        }
        if !self.seen.insert((t.hash, t.code)) {
            return;
        }
        self.progress.state_nodes_visited += 1;
        if t.code {
            if !store.has_code(&t.hash) {
                self.node_queue.push_back(t);
            }
            return;
        }
        match store.get_node(&t.hash) {
            Some(raw) => self.expand(&raw, &t, store),
            None => self.node_queue.push_back(t),
        }
    }

    fn expand(&mut self, raw: &[u8], t: &NodeTask, store: &mut dyn SyncStore) {
        let Ok(node) = trie::decode_node(raw) else {
            return;
        };
        let mut stack: Vec<(Node, Vec<u8>)> = vec![(node, t.path.clone())];
        let mut guard = 0;
        while let Some((node, path)) = stack.pop() {
            guard += 1;
            if guard > 64 {
                break;
            }
            let mut child = |c: Option<NodeRef>,
                             p: Vec<u8>,
                             stack: &mut Vec<(Node, Vec<u8>)>,
                             me: &mut Engine| match c {
                None => {}
                Some(NodeRef::Hash(h)) => me.route(
                    NodeTask {
                        hash: h,
                        path: p,
                        account: t.account,
                        code: false,
                    },
                    store,
                ),
                Some(NodeRef::Embedded(r)) => {
                    if let Ok(n) = trie::decode_node(&r) {
                        stack.push((n, p));
                    }
                }
            };
            match node {
                Node::Branch { children, .. } => {
                    for (i, c) in children.iter().enumerate() {
                        let mut p = path.clone();
                        p.push(i as u8);
                        child(c.clone(), p, &mut stack, self);
                    }
                }
                Node::Extension {
                    path: ext,
                    child: c,
                } => {
                    let mut p = path.clone();
                    p.extend_from_slice(&ext.0);
                    child(Some(c), p, &mut stack, self);
                }
                Node::Leaf { path: rest, value } => {
                    if t.account.is_some() {
                        continue;
                    }
                    let full: Vec<u8> = path.iter().chain(rest.0.iter()).copied().collect();
                    if full.len() != 64 {
                        continue;
                    }
                    let mut key = [0u8; 32];
                    for i in 0..32 {
                        key[i] = (full[2 * i] << 4) | full[2 * i + 1];
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
                let Some(t) = self.node_queue.pop_front() else {
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
    ) -> Result<bool, ()> {
        if self.phase != StatePhase::Walk {
            return Ok(true);
        }
        if nodes.len() > tasks.len() {
            return Err(());
        }
        let mut delivered = vec![false; tasks.len()];
        let mut matched = Vec::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            let h = keccak256(n);
            let idx = if positional {
                (tasks[i].hash == h).then_some(i)
            } else {
                tasks
                    .iter()
                    .enumerate()
                    .position(|(j, t)| !delivered[j] && t.hash == h)
            };
            let Some(j) = idx else { return Err(()) };
            if !tasks[j].code && trie::decode_node(n).is_err() {
                return Err(());
            }
            delivered[j] = true;
            matched.push(j);
        }
        for (k, &j) in matched.iter().enumerate() {
            let t = &tasks[j];
            let raw = &nodes[k];
            self.round_fetched += 1;
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
                let t = t.clone();
                self.expand(raw, &t, store);
            }
        }
        for (j, t) in tasks.into_iter().enumerate() {
            if !delivered[j] {
                self.node_queue.push_back(t);
            }
        }
        Ok(!matched.is_empty())
    }
}

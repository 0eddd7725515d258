//! The end of each state phase and the heal rounds: snap's rebuild of the trie top from
//! the stored ranges (`Rebuild`, `SubtrieBuilt`, `BuildWhole`, `WholeBuilt`), and probe waves
//! (`Probe`, `ProbeReply`) that end a walk round and start another until one fetches nothing.

use alloy_primitives::keccak256;

use super::snap::nibble_range;
use super::{owner_of_path, Action, Engine, ShardId, ShardMsg, StatePhase};
use crate::eth::sync::config::SyncMode;
use crate::eth::sync::store::SyncStore;
use crate::eth::sync::trie::{self, build_node, Node, NodeRef};

impl Engine {
    /// Coordinator: walk termination, by probe waves.
    pub(super) fn tick_probe_wave(&mut self, out: &mut Vec<Action>) {
        let walking = self.phase == StatePhase::Walk;
        let c = self.coord.as_mut().expect("coordinator");
        if walking && c.wave_replies.is_empty() && !c.state_complete {
            c.wave += 1;
            let w = c.wave;
            for s in 0..self.shards {
                out.push(Action::ToShard {
                    shard: s,
                    msg: ShardMsg::Probe { wave: w },
                });
            }
        }
    }

    /// Answer a probe wave with this shard's walk counters.
    pub(super) fn on_probe(&mut self, wave: u64, out: &mut Vec<Action>) {
        let idle = self.walk_idle();
        out.push(Action::ToShard {
            shard: 0,
            msg: ShardMsg::ProbeReply {
                wave,
                shard: self.shard,
                round: self.round,
                idle,
                sent: self.tasks_sent,
                recv: self.tasks_recv,
                fetched: self.round_fetched,
            },
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_probe_reply(
        &mut self,
        wave: u64,
        shard: ShardId,
        round: u32,
        idle: bool,
        sent: u64,
        recv: u64,
        fetched: u64,
        store: &mut dyn SyncStore,
        out: &mut Vec<Action>,
    ) {
        let shards = self.shards;
        let my_round = self.round;
        let Some(c) = self.coord.as_mut() else { return };
        if wave != c.wave {
            return;
        }
        c.wave_replies
            .insert(shard, (round, idle, sent, recv, fetched));
        if c.wave_replies.len() < shards {
            return;
        }
        let replies = std::mem::take(&mut c.wave_replies);
        let counts: Vec<(u64, u64)> = replies.values().map(|r| (r.2, r.3)).collect();
        let all_idle = replies.values().all(|r| r.1 && r.0 == my_round);
        let balanced =
            counts.iter().map(|x| x.0).sum::<u64>() == counts.iter().map(|x| x.1).sum::<u64>();
        let stable = c.last_wave.as_ref() == Some(&counts);
        c.last_wave = Some(counts);
        if !(all_idle && balanced && stable) {
            return;
        }
        let fetched_total: u64 = replies.values().map(|r| r.4).sum();
        c.last_wave = None;
        if fetched_total == 0 {
            c.state_complete = true;
            self.journal.state_complete = true;
            self.phase = StatePhase::Complete;
            self.write_journal(store);
            for s in 1..shards {
                out.push(Action::ToShard {
                    shard: s,
                    msg: ShardMsg::StateComplete,
                });
            }
            self.check_coordinator(store, out);
        } else {
            let r = my_round + 1;
            for s in 0..shards {
                out.push(Action::ToShard {
                    shard: s,
                    msg: ShardMsg::StartWalk { round: r },
                });
            }
        }
    }

    pub(super) fn rebuild(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Action>) {
        if self.mode != SyncMode::Snap {
            return;
        }
        self.phase = StatePhase::Rebuild;
        for n in self.owned_nibbles() {
            let (lo, hi) = nibble_range(n);
            let leaves = store.accounts_in(&lo, &hi);
            let top = if leaves.is_empty() {
                None
            } else {
                let rlp = build_node(&leaves, 1, &mut |h, r| {
                    if !store.has_node(&h) {
                        store.put_node(h, r)
                    }
                });
                if rlp.len() >= 32 {
                    let h = keccak256(&rlp);
                    if !store.has_node(&h) {
                        store.put_node(h, &rlp);
                    }
                }
                Some(rlp)
            };
            out.push(Action::ToShard {
                shard: 0,
                msg: ShardMsg::SubtrieBuilt { nibble: n, top },
            });
        }
    }

    pub(super) fn finish_rebuild(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Action>) {
        let shards = self.shards;
        let Some(c) = self.coord.as_mut() else { return };
        if c.subtries.len() < 16 {
            return;
        }
        let subtries = std::mem::take(&mut c.subtries);
        let nonempty: Vec<u8> = subtries
            .iter()
            .filter(|(_, t)| t.is_some())
            .map(|(n, _)| *n)
            .collect();
        let want = self
            .pivot
            .as_ref()
            .map(|p| p.state_root)
            .unwrap_or_default();
        match nonempty.len() {
            0 => self.after_rebuild(store, out),
            1 => out.push(Action::ToShard {
                shard: owner_of_path(&[nonempty[0]], shards),
                msg: ShardMsg::BuildWhole {
                    nibble: nonempty[0],
                },
            }),
            _ => {
                let mut children: Box<[Option<NodeRef>; 16]> = Box::default();
                for (n, t) in &subtries {
                    if let Some(rlp) = t {
                        children[*n as usize] = Some(NodeRef::for_node(rlp));
                    }
                }
                let root = Node::Branch {
                    children,
                    value: None,
                }
                .encode();
                let h = keccak256(&root);
                if h == want && !store.has_node(&h) {
                    store.put_node(h, &root);
                }
                self.after_rebuild(store, out);
            }
        }
    }

    /// Only one leading nibble holds accounts: build the whole trie here and check its root.
    pub(super) fn build_whole(
        &mut self,
        nibble: u8,
        store: &mut dyn SyncStore,
        out: &mut Vec<Action>,
    ) {
        let (lo, hi) = nibble_range(nibble);
        let leaves = store.accounts_in(&lo, &hi);
        let root = trie::build_root(&leaves, &mut |h, r| {
            if !store.has_node(&h) {
                store.put_node(h, r)
            }
        });
        let ok = Some(root) == self.pivot.as_ref().map(|p| p.state_root);
        out.push(Action::ToShard {
            shard: 0,
            msg: ShardMsg::WholeBuilt { ok },
        });
    }

    pub(super) fn after_rebuild(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Action>) {
        self.journal.rebuilt = true;
        self.rebuilt = true;
        let r = self.journal.walk_round;
        self.write_journal(store);
        for s in 0..self.shards {
            out.push(Action::ToShard {
                shard: s,
                msg: ShardMsg::StartWalk { round: r },
            });
        }
    }
}

//! Messages between shards (`ShardMsg`) and shard 0's coordination: the coordinator tick,
//! dispatch of each message to its phase, the shards' `Report`s, the end of the sync, and
//! `SwitchMode`.

use std::collections::BTreeMap;

use alloy_primitives::B256;

use super::{Action, Engine, NodeTask, ShardId, StatePhase};
use crate::eth::sync::config::SyncMode;
use crate::eth::sync::store::SyncStore;
use crate::eth::sync::types::PeerId;

/// Messages between shards.
#[derive(Debug, Clone)]
pub enum ShardMsg {
    Pivot {
        pivot: Vec<u8>,
        head: Vec<u8>,
    },
    HeaderRange {
        batch: u64,
        first_parent: B256,
        last_hash: B256,
        peer: Option<PeerId>,
    },
    HeadersJoined {
        batch: u64,
    },
    HeadersRejected {
        batch: u64,
        peer: Option<PeerId>,
        /// The batch is false (its peer lied), not merely at odds with a doubtful head.
        lied: bool,
    },
    Tasks {
        round: u32,
        tasks: Vec<NodeTask>,
    },
    StartWalk {
        round: u32,
    },
    Probe {
        wave: u64,
    },
    ProbeReply {
        wave: u64,
        shard: ShardId,
        round: u32,
        idle: bool,
        sent: u64,
        recv: u64,
        fetched: u64,
        /// Something of the round was dropped unvisited on that shard.
        lossy: bool,
    },
    Report {
        shard: ShardId,
        bodies_done: bool,
        ranges_done: bool,
    },
    Rebuild,
    /// To the shard itself: build its next trie-prefix block.
    RebuildNext,
    /// To shard 0: the tops of the account-trie blocks `shard` built.
    SubtriesBuilt {
        shard: ShardId,
        blocks: Vec<super::heal::BlockTop>,
    },
    SwitchMode(SyncMode),
    StateComplete,
    /// To shard 0: `peer` serves the state of `root` again (`served`), or answered its
    /// requests for it empty twice in a row (the state fell out of the peer's history).
    StateAnswer {
        root: B256,
        peer: PeerId,
        served: bool,
    },
}

/// A peer's answer to an anchor check: the peer and the two raw headers it sent.
type AnchorVote = (PeerId, Vec<u8>, Vec<u8>);

#[derive(Debug, Default)]
pub(super) struct Coordinator {
    pub(super) status_asked: bool,
    pub(super) status_replies: BTreeMap<PeerId, u64>,
    pub(super) status_pending: usize,
    pub(super) anchors_asked: bool,
    pub(super) anchor_target: (u64, u64),
    pub(super) anchor_votes: BTreeMap<(B256, B256), Vec<AnchorVote>>,
    pub(super) anchor_pending: usize,
    pub(super) retry_at_ms: u64,
    pub(super) joined: BTreeMap<u64, (B256, B256)>,
    pub(super) pending_ranges: BTreeMap<u64, (B256, B256, Option<PeerId>, ShardId)>,
    pub(super) reports: BTreeMap<ShardId, (bool, bool)>,
    rebuild_started: bool,
    pub(super) subtries: BTreeMap<ShardId, Vec<super::heal::BlockTop>>,
    pub(super) wave: u64,
    pub(super) wave_replies: BTreeMap<ShardId, (u32, bool, u64, u64, u64, bool)>,
    pub(super) last_wave: Option<Vec<(u64, u64)>>,
    pub(super) state_complete: bool,
    pub(super) chain_complete: bool,
    pub(super) finished: bool,
    pub(super) failed: bool,
    /// A pivot from the journal, kept if the peers' head has not moved too far past it.
    pub(super) resume_pivot: Option<(Vec<u8>, Vec<u8>)>,
    pub(super) next_status_check_ms: u64,
    pub(super) status_rotation: u64,
    pub(super) repivots: u64,
    /// The trusted sync target (`--sync-target`, Engine API).
    pub(super) target: super::target::TargetState,
    /// Peers that no longer serve the current pivot's state (as shards reported them).
    pub(super) unserved: std::collections::BTreeSet<PeerId>,
    /// Some peer served the current pivot's state.
    pub(super) root_served: bool,
    /// The pivot's state is gone from enough peers: move the pivot at the next status round.
    pub(super) force_repivot: bool,
    /// The pivot distance in use (`pivot_distance` until a pivot's state went out of the
    /// peers' history; then less).
    pub(super) distance_eff: Option<u64>,
    /// The head of the last status round.
    pub(super) last_head: u64,
    /// Re-pivots because the pivot's state was no longer served.
    pub(super) state_repivots: u64,
    /// Every (pivot, head) the last vote saw, most votes first, with its voters and raw
    /// headers: the next one is tried when the chosen one turns out false.
    pub(super) candidates: Vec<Candidate>,
    /// The peers that voted for the pivot in use, and pivots already found false.
    pub(super) voters: Vec<PeerId>,
    pub(super) tried: std::collections::BTreeSet<(B256, B256)>,
    /// Peers that voted for a pivot found false: their votes no longer count.
    pub(super) suspects: std::collections::BTreeSet<PeerId>,
    /// Vote again (a pivot was found false and no other candidate is left).
    pub(super) revote: bool,
    /// Since when no header batch was verified and kept (joined, or waiting for the
    /// batches above it); reset when the pivot changes.
    pub(super) last_join_ms: Option<u64>,
}

/// A (pivot, head) some peers answered in a pivot vote.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub(super) key: (B256, B256),
    pub(super) voters: Vec<PeerId>,
    pub(super) pivot: Vec<u8>,
    pub(super) head: Vec<u8>,
}

impl Engine {
    pub(super) fn on_tick(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Action>) {
        self.check_served(out);
        if self.coord.is_none() {
            return;
        }
        if self.targeted() {
            self.tick_target(out);
        } else {
            self.check_voters(out);
            self.tick_pivot(out);
        }
        self.tick_probe_wave(out);
        let _ = store;
    }

    pub(super) fn on_shard_msg(
        &mut self,
        msg: ShardMsg,
        store: &mut dyn SyncStore,
        out: &mut Vec<Action>,
    ) {
        match msg {
            ShardMsg::Pivot { pivot, head } => self.on_pivot(&pivot, &head, store, out),
            ShardMsg::HeaderRange {
                batch,
                first_parent,
                last_hash,
                peer,
            } => self.on_header_range(batch, first_parent, last_hash, peer, store, out),
            ShardMsg::HeadersJoined { batch } => self.on_headers_joined(batch, store),
            ShardMsg::HeadersRejected { batch, peer, lied } => {
                self.on_headers_rejected(batch, peer, lied, out)
            }
            ShardMsg::Tasks { round, tasks } => self.on_tasks(round, tasks, store),
            ShardMsg::StartWalk { round } => self.start_walk(round, store, out),
            ShardMsg::Probe { wave } => self.on_probe(wave, out),
            ShardMsg::ProbeReply {
                wave,
                shard,
                round,
                idle,
                sent,
                recv,
                fetched,
                lossy,
            } => self.on_probe_reply(
                wave,
                shard,
                round,
                idle,
                (sent, recv, fetched, lossy),
                store,
                out,
            ),
            ShardMsg::Report {
                shard,
                bodies_done,
                ranges_done,
            } => self.on_report(shard, bodies_done, ranges_done, store, out),
            ShardMsg::Rebuild => self.rebuild(store, out),
            ShardMsg::RebuildNext => self.rebuild_step(store, out),
            ShardMsg::SubtriesBuilt { shard, blocks } => {
                if let Some(c) = self.coord.as_mut() {
                    c.subtries.insert(shard, blocks);
                }
                self.finish_rebuild(store, out);
            }
            ShardMsg::SwitchMode(mode) => self.on_switch(mode, store, out),
            ShardMsg::StateAnswer { root, peer, served } => {
                self.on_state_answer(root, peer, served)
            }
            ShardMsg::StateComplete => {
                self.phase = StatePhase::Complete;
                self.node_queue.clear();
            }
        }
    }

    /// Coordinator: a shard reports whether its bodies and its snap ranges are done.
    fn on_report(
        &mut self,
        shard: ShardId,
        bodies_done: bool,
        ranges_done: bool,
        store: &mut dyn SyncStore,
        out: &mut Vec<Action>,
    ) {
        if let Some(c) = self.coord.as_mut() {
            c.reports.insert(shard, (bodies_done, ranges_done));
        }
        self.check_coordinator(store, out);
    }

    pub(super) fn report(&mut self, out: &mut Vec<Action>) {
        if self.head.is_none() {
            return;
        }
        let now = (self.bodies_done(), self.ranges_done());
        if self.reported != Some(now) {
            self.reported = Some(now);
            out.push(Action::ToShard {
                shard: 0,
                msg: ShardMsg::Report {
                    shard: self.shard,
                    bodies_done: now.0,
                    ranges_done: now.1,
                },
            });
        }
    }

    pub(super) fn check_coordinator(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Action>) {
        let n = self.batch_count();
        let shards = self.shards;
        let mode = self.mode;
        let phase = self.phase.clone();
        let Some(c) = self.coord.as_mut() else { return };
        if self.head.is_none() || c.failed {
            return;
        }
        let all =
            |f: fn(&(bool, bool)) -> bool| (0..shards).all(|s| c.reports.get(&s).is_some_and(f));
        if !c.chain_complete && c.joined.len() as u64 == n && all(|r| r.0) {
            c.chain_complete = true;
        }
        if mode == SyncMode::Snap
            && phase == StatePhase::Ranges
            && !c.rebuild_started
            && all(|r| r.1)
        {
            c.rebuild_started = true;
            c.subtries.clear();
            for s in 0..shards {
                out.push(Action::ToShard {
                    shard: s,
                    msg: ShardMsg::Rebuild,
                });
            }
        }
        if c.chain_complete && c.state_complete && !c.finished {
            c.finished = true;
            self.journal.chain_complete = true;
            self.write_journal(store);
            out.push(Action::Finished);
        }
    }

    fn on_switch(&mut self, mode: SyncMode, store: &mut dyn SyncStore, out: &mut Vec<Action>) {
        if mode == self.mode || self.journal.state_complete {
            return;
        }
        self.mode = mode;
        self.node_queue.clear();
        self.ranges.clear();
        self.storage_tasks.clear();
        self.storage_ready.clear();
        self.snap_epoch += 1;
        self.storage_accs.clear();
        self.stored_to_follow.clear();
        self.code_queue.clear();
        self.codes_wanted.clear();
        self.followups.clear();
        self.code_waiters.clear();
        self.journal.rebuilt = false;
        self.journal.ranges.clear();
        self.journal.followed.clear();
        if let Some(c) = self.coord.as_mut() {
            c.rebuild_started = false;
            c.wave_replies.clear();
            c.last_wave = None;
        }
        self.write_journal(store);
        if self.pivot.is_none() {
            return;
        }
        match mode {
            SyncMode::Snap => {
                self.phase = StatePhase::Idle;
                self.start_ranges(store);
            }
            SyncMode::Fast => {
                self.phase = StatePhase::Idle;
                if self.shard == 0 {
                    let r = self.round + 1;
                    for s in 0..self.shards {
                        out.push(Action::ToShard {
                            shard: s,
                            msg: ShardMsg::StartWalk { round: r },
                        });
                    }
                }
            }
        }
    }
}

//! Pivot selection (on shard 0): status rounds to the peers, the pivot and head headers
//! agreed by several of them, re-selection when the head moves on; and every shard's
//! switch to a new pivot (`ShardMsg::Pivot`). Handles `Status` and anchor header answers.

use alloy_primitives::B256;

use super::headers::BatchState;
use super::{hexs, owner_of_batch, Action, Engine, Pending, ShardMsg, StatePhase};
use crate::eth::sync::config::SyncMode;
use crate::eth::sync::store::SyncStore;
use crate::eth::sync::types::{HashOrNumber, Header, PeerId, Request};

impl Engine {
    /// Peers that must agree on the pivot: `pivot_agreement`, but no more than the given
    /// peers this shard has not caught lying (a caught liar cannot hold the sync back; it
    /// cannot vote either, as it is dropped).
    pub(super) fn agreement(&self) -> usize {
        let a = self.cfg.pivot_agreement.max(1);
        if self.cfg.peers_given == 0 || self.liars.is_empty() {
            return a;
        }
        a.min(self.cfg.peers_given.saturating_sub(self.liars.len()).max(1))
    }

    /// Every shard: when every live peer has answered this shard's state requests (or its
    /// receipts requests) empty, nothing can be sent any more and the sync would wait
    /// forever. Give the coordinator time to move the pivot (a newer state may be served),
    /// then stop with one line that says why and what helps.
    pub(super) fn check_served(&mut self, out: &mut Vec<Action>) {
        let now = self.now_ms;
        let give_up_ms = self.cfg.status_check_ms + 10_000;
        let live: Vec<&crate::eth::sync::peers::PeerStats> =
            self.peers.peers.values().filter(|p| !p.dropped).collect();
        let wants_state = matches!(self.phase, StatePhase::Ranges | StatePhase::Walk);
        let no_state = wants_state && !live.is_empty() && live.iter().all(|p| p.no_state);
        let no_receipts = !self.receipt_queue.is_empty()
            && !live.is_empty()
            && live.iter().all(|p| p.no_receipts);
        fn since(slot: &mut Option<u64>, now_true: bool, now: u64) -> Option<u64> {
            if now_true {
                Some(*slot.get_or_insert(now))
            } else {
                *slot = None;
                None
            }
        }
        let state_since = since(&mut self.unserved_since_ms.0, no_state, now);
        let receipts_since = since(&mut self.unserved_since_ms.1, no_receipts, now);
        if state_since.is_some_and(|t| now.saturating_sub(t) >= give_up_ms) {
            let (n, root) = self
                .pivot
                .as_ref()
                .map(|p| (p.number, format!("{}", p.state_root)))
                .unwrap_or_default();
            out.push(Action::Failed(format!(
                "no peer serves the state at pivot block {n} (root {root}): each of the {} live peer(s) answered state requests empty, as a peer does for a state it no longer keeps (geth keeps its latest 128); sync a newer pivot with --pivot-distance 0, or add peers that hold this state",
                live.len()
            )));
            self.unserved_since_ms.0 = None;
        } else if receipts_since.is_some_and(|t| now.saturating_sub(t) >= give_up_ms) {
            out.push(Action::Failed(format!(
                "no peer serves receipts: each of the {} live peer(s) answered receipts requests empty; sync without receipts with --receipts false, or add peers that serve them",
                live.len()
            )));
            self.unserved_since_ms.1 = None;
        }
    }

    /// Coordinator: ask the peers for their status while there is no pivot, and again
    /// now and then to re-select it.
    pub(super) fn tick_pivot(&mut self, out: &mut Vec<Action>) {
        if self.pivot.is_none() {
            self.try_resume_pivot();
        }
        let now = self.now_ms;
        let agreement = self.agreement();
        let check_ms = self.cfg.status_check_ms;
        let done = self
            .coord
            .as_ref()
            .is_some_and(|c| c.finished || c.state_complete);
        let c = self.coord.as_mut().expect("coordinator");
        // With a pivot: look at the peers' head again now and then, to re-select the pivot
        // when it falls too far behind.
        // (Only once the previous round has ended, so status requests never pile up.)
        let recheck = self.pivot.is_some()
            && !done
            && check_ms > 0
            && now >= c.next_status_check_ms
            && c.status_pending == 0
            && !c.anchors_asked;
        if recheck {
            c.next_status_check_ms = now + check_ms;
            c.anchors_asked = false;
        }
        let need_pivot = self.pivot.is_none() || recheck;
        let free = self
            .cfg
            .max_concurrent_requests
            .saturating_sub(self.inflight.len());
        if need_pivot
            && (!c.status_asked || recheck)
            && now >= c.retry_at_ms
            && self.peers.live() >= agreement
            && free >= agreement
        {
            c.status_asked = true;
            c.status_replies.clear();
            // At most as many as the free request slots (the per-shard cap holds), taking
            // turns among the peers from round to round.
            c.status_rotation += 1;
            let live: Vec<PeerId> = self
                .peers
                .peers
                .iter()
                .filter(|(_, p)| !p.dropped)
                .map(|(id, _)| *id)
                .collect();
            let start = c.status_rotation as usize % live.len().max(1);
            let ids: Vec<PeerId> = live
                .iter()
                .cycle()
                .skip(start)
                .take(live.len().min(free))
                .copied()
                .collect();
            c.status_pending = ids.len();
            for id in ids {
                self.send(id, Request::Status, Pending::Status, out);
            }
        }
    }

    /// After a restart: remember the journaled pivot; the first status round decides
    /// whether it is still valid.
    fn try_resume_pivot(&mut self) {
        let (Some(p), Some(h)) = (self.journal.pivot.clone(), self.journal.head.clone()) else {
            return;
        };
        let (Ok(p), Ok(h)) = (hex::decode(p), hex::decode(h)) else {
            return;
        };
        if let Some(c) = self.coord.as_mut() {
            if c.resume_pivot.is_none() {
                c.resume_pivot = Some((p, h));
            }
        }
    }

    /// The peers' head is `head`: is the pivot (current or from the journal) still good?
    fn pivot_still_valid(&self, pivot_number: u64, head: u64) -> bool {
        head.saturating_sub(pivot_number) <= self.cfg.pivot_distance + self.cfg.repivot_slack
    }

    fn broadcast_pivot(&mut self, p: Vec<u8>, h: Vec<u8>, out: &mut Vec<Action>) {
        for s in 0..self.shards {
            out.push(Action::ToShard {
                shard: s,
                msg: ShardMsg::Pivot {
                    pivot: p.clone(),
                    head: h.clone(),
                },
            });
        }
    }

    pub(super) fn on_status(&mut self, peer: PeerId, best: Option<u64>, out: &mut Vec<Action>) {
        let now = self.now_ms;
        let agreement = self.agreement();
        let distance = self.cfg.pivot_distance;
        let anchor = self.cfg.anchor_number;
        let Some(c) = self.coord.as_mut() else { return };
        c.status_pending = c.status_pending.saturating_sub(1);
        if let Some(b) = best {
            c.status_replies.insert(peer, b);
        }
        if c.status_pending > 0 || c.anchors_asked {
            return;
        }
        if c.status_replies.len() < agreement {
            c.status_asked = false;
            c.retry_at_ms = now + 500;
            return;
        }
        let mut bests: Vec<u64> = c.status_replies.values().copied().collect();
        bests.sort_unstable();
        // The median, but no higher than what `agreement` peers reached (so that many can
        // answer for the pivot and head headers).
        let head =
            bests[(bests.len() - 1) / 2].min(bests[bests.len() - agreement.min(bests.len())]);
        // Keep the current (or journaled) pivot while it is close enough to the head.
        let current = self.pivot.as_ref().map(|p| p.number);
        let resumed = c.resume_pivot.take();
        if let Some(n) = current {
            if self.pivot_still_valid(n, head) {
                return;
            }
        } else if let Some((p, h)) = resumed {
            if let Ok(ph) = Header::decode(&p) {
                if self.pivot_still_valid(ph.number, head) {
                    self.broadcast_pivot(p, h, out);
                    return;
                }
            }
        }
        let c = self.coord.as_mut().expect("coordinator");
        if head <= anchor {
            c.status_asked = false;
            c.retry_at_ms = now + 1000;
            return;
        }
        let pivot = head.saturating_sub(distance).max(anchor + 1);
        c.anchor_target = (pivot, head);
        c.anchors_asked = true;
        c.anchor_votes.clear();
        let free = self
            .cfg
            .max_concurrent_requests
            .saturating_sub(self.inflight.len());
        let c = self.coord.as_mut().expect("coordinator");
        let ids: Vec<PeerId> = c
            .status_replies
            .iter()
            .filter(|(_, &b)| b >= head)
            .map(|(id, _)| *id)
            .take(free)
            .collect();
        c.anchor_pending = ids.len();
        let req = if head == pivot {
            Request::BlockHeaders {
                origin: HashOrNumber::Number(pivot),
                amount: 1,
                skip: 0,
                reverse: false,
            }
        } else {
            Request::BlockHeaders {
                origin: HashOrNumber::Number(pivot),
                amount: 2,
                skip: head - pivot - 1,
                reverse: false,
            }
        };
        for id in ids {
            self.send(id, req.clone(), Pending::Anchors, out);
        }
    }

    pub(super) fn on_anchors(
        &mut self,
        peer: PeerId,
        raws: Option<Vec<Vec<u8>>>,
        out: &mut Vec<Action>,
    ) {
        let agreement = self.agreement();
        let now = self.now_ms;
        let Some(c) = self.coord.as_mut() else { return };
        if !c.anchors_asked {
            // A late answer to a round that is already decided: not needed, but it must
            // still agree with the decision, so a peer answering junk or another chain is
            // found out even when honest peers were faster.
            let (pn, hn) = c.anchor_target;
            let decided = match (&self.pivot, &self.head) {
                (Some(p), Some(h)) if p.number == pn && h.number == hn => Some((p.hash, h.hash)),
                _ => None,
            };
            if let (Some(decided), Some(raws)) = (decided, raws) {
                if !raws.is_empty() && anchor_hashes(&raws, pn, hn) != Some(decided) {
                    self.lie(peer, out);
                }
            }
            return;
        }
        c.anchor_pending = c.anchor_pending.saturating_sub(1);
        let (pn, hn) = c.anchor_target;
        let mut liar = false;
        if let Some(raws) = raws {
            if let Some(key) = anchor_hashes(&raws, pn, hn) {
                let (first, last) = (raws[0].clone(), raws[raws.len() - 1].clone());
                c.anchor_votes
                    .entry(key)
                    .or_default()
                    .push((peer, first, last));
            } else if !raws.is_empty() {
                liar = true;
            }
        }
        if liar {
            self.lie(peer, out);
        }
        let c = self.coord.as_mut().expect("coordinator");
        let winner = c
            .anchor_votes
            .iter()
            .find(|(_, v)| v.len() >= agreement)
            .map(|(k, v)| (*k, v[0].1.clone(), v[0].2.clone()));
        if let Some((key, p, h)) = winner {
            let losers: Vec<PeerId> = c
                .anchor_votes
                .iter()
                .filter(|(k, _)| **k != key)
                .flat_map(|(_, v)| v.iter().map(|x| x.0))
                .collect();
            c.anchor_votes.clear();
            c.anchor_pending = 0;
            c.anchors_asked = false;
            for l in losers {
                self.lie(l, out);
            }
            let same = self.pivot.as_ref().is_some_and(|x| x.hash == key.0)
                && self.head.as_ref().is_some_and(|x| x.hash == key.1);
            if same {
                return;
            }
            let c = self.coord.as_mut().expect("coordinator");
            if self.pivot.is_some() || !c.joined.is_empty() {
                // A new pivot: the join bookkeeping of the old target does not carry over
                // (stored headers do, and are announced again by their owners).
                c.repivots += 1;
                c.joined.clear();
                c.pending_ranges.clear();
                c.chain_complete = false;
                c.reports.clear();
                self.journal.joined.clear();
            }
            self.broadcast_pivot(p, h, out);
        } else if c.anchor_pending == 0 {
            c.anchors_asked = false;
            c.status_asked = false;
            c.retry_at_ms = now + 500;
        }
    }

    pub(super) fn on_pivot(
        &mut self,
        pivot: &[u8],
        head: &[u8],
        store: &mut dyn SyncStore,
        out: &mut Vec<Action>,
    ) {
        let (Ok(p), Ok(h)) = (Header::decode(pivot), Header::decode(head)) else {
            return;
        };
        if self.pivot.as_ref().is_some_and(|x| x.hash == p.hash) {
            return;
        }
        let old_root = self.pivot.as_ref().map(|x| x.state_root);
        let new_root = p.state_root;
        self.journal.pivot = Some(hexs(pivot));
        self.journal.head = Some(hexs(head));
        self.pivot = Some(p);
        // A new state root: peers that lacked the old one may hold this one.
        for peer in self.peers.peers.values_mut() {
            peer.no_state = false;
            peer.empty = 0;
        }
        self.unserved_since_ms.0 = None;
        self.head = Some(h);
        self.reported = None;
        if old_root.is_some() {
            // A re-selected pivot: body tasks are queued again from the stored headers.
            self.body_queue.clear();
            self.receipt_queue.clear();
            self.batch_tried.clear();
        }
        let n = self.batch_count();
        // A lower head than before (a trusted target below it): batches past it are gone.
        self.batches.retain(|&b, _| b < n);
        self.progress.headers_total = self
            .head
            .as_ref()
            .map(|h| h.number - self.cfg.anchor_number)
            .unwrap_or(0);
        self.progress.headers_share = (0..n)
            .filter(|&b| owner_of_batch(b, self.shards) == self.shard)
            .map(|b| {
                let (lo, hi) = self.batch_range(b);
                hi - lo + 1
            })
            .sum();
        for b in 0..n {
            if owner_of_batch(b, self.shards) != self.shard {
                continue;
            }
            let (lo, hi) = self.batch_range(b);
            match (store.header(lo), store.header(hi)) {
                (Some(f), Some(l)) => {
                    // Stored before a restart: announce it again for the join bookkeeping.
                    self.batches.insert(b, BatchState::Stored);
                    out.push(Action::ToShard {
                        shard: 0,
                        msg: ShardMsg::HeaderRange {
                            batch: b,
                            first_parent: f.parent_hash,
                            last_hash: l.hash,
                            peer: None,
                        },
                    });
                    self.queue_bodies(b, store);
                }
                _ => {
                    // A prefix stored before a restart (the disk filled or the process
                    // died part-way through the batch's commit): fetch only the rest.
                    let mut next = lo;
                    let mut parent: Option<B256> = None;
                    while next <= hi {
                        match store.header(next) {
                            Some(h) if parent.is_none_or(|p| p == h.parent_hash) => {
                                parent = Some(h.hash);
                                next += 1;
                            }
                            _ => break,
                        }
                    }
                    if next > lo {
                        self.batch_from.insert(b, next);
                    } else {
                        self.batch_from.remove(&b);
                    }
                    self.batches.insert(b, BatchState::Todo);
                }
            }
        }
        self.write_journal(store);
        // State.
        match old_root {
            Some(old) if old == new_root => return,
            Some(_) => {
                // New state root: verified nodes stay (content-addressed).
                self.journal.state_complete = false;
                self.journal.walk_round = self.round + 1;
                self.node_queue.clear();
                if let Some(c) = self.coord.as_mut() {
                    c.state_complete = false;
                    c.wave_replies.clear();
                    c.last_wave = None;
                }
                if self.mode == SyncMode::Snap
                    && !self.journal.rebuilt
                    && self.phase == StatePhase::Ranges
                {
                    // Snap before its rebuild: finished ranges keep their (older) leaves,
                    // the others continue against the new root; storage tries of accounts
                    // seen so far are left to the heal, which fixes whatever changed.
                    self.snap_epoch += 1;
                    for r in &mut self.ranges {
                        r.busy = false;
                    }
                    self.storage_tasks.clear();
                    self.storage_ready.clear();
                    self.storage_accs.clear();
                    self.write_journal(store);
                    return;
                }
                // Fast, or snap after its rebuild: a new walk (heal) from the new root.
                self.phase = StatePhase::Idle;
                self.write_journal(store);
            }
            None => {}
        }
        if self.cfg.history_only && !self.journal.state_complete {
            // History only: the state at the pivot is not fetched.
            self.journal.state_complete = true;
            if let Some(c) = self.coord.as_mut() {
                c.state_complete = true;
            }
            self.write_journal(store);
        }
        if self.journal.state_complete {
            self.phase = StatePhase::Complete;
        } else if self.shard == 0 {
            match self.mode {
                SyncMode::Fast => {
                    let r = self.journal.walk_round;
                    for s in 0..self.shards {
                        out.push(Action::ToShard {
                            shard: s,
                            msg: ShardMsg::StartWalk { round: r },
                        });
                    }
                }
                SyncMode::Snap => {}
            }
        }
        if self.mode == SyncMode::Snap && !self.journal.state_complete {
            if self.journal.rebuilt {
                // Shard 0 restarts the heal walk.
                if self.shard == 0 {
                    let r = self.journal.walk_round;
                    for s in 0..self.shards {
                        out.push(Action::ToShard {
                            shard: s,
                            msg: ShardMsg::StartWalk { round: r },
                        });
                    }
                }
            } else {
                self.start_ranges(store);
            }
        }
    }
}

/// The (pivot, head) hashes of an answer to an anchor request for blocks `pn` and `hn`:
/// `None` unless it holds exactly those headers (one when `pn == hn`), all decodable.
fn anchor_hashes(raws: &[Vec<u8>], pn: u64, hn: u64) -> Option<(B256, B256)> {
    let (first, last) = match raws {
        [one] if pn == hn => {
            let h = Header::decode(one).ok()?;
            ((h.number, h.hash), (h.number, h.hash))
        }
        [a, b] if pn != hn => {
            let (a, b) = (Header::decode(a).ok()?, Header::decode(b).ok()?);
            ((a.number, a.hash), (b.number, b.hash))
        }
        _ => return None,
    };
    (first.0 == pn && last.0 == hn).then_some((first.1, last.1))
}

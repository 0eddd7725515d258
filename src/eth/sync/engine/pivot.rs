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
        let suspects = self
            .coord
            .as_ref()
            .map(|c| {
                c.suspects
                    .iter()
                    .filter(|p| !self.liars.contains(p))
                    .count()
            })
            .unwrap_or(0);
        if self.cfg.peers_given == 0 || self.liars.len() + suspects == 0 {
            return a;
        }
        a.min(
            self.cfg
                .peers_given
                .saturating_sub(self.liars.len() + suspects)
                .max(1),
        )
    }

    /// Coordinator: the pivot in use was found false (the chain from its head does not
    /// reach the trusted anchor, or another candidate's head came with a consistent header
    /// batch while every voter was caught lying). Its voters become suspects whose votes no
    /// longer count; the sync continues with `alt`, else the next candidate of the vote
    /// that none of them backed, else a new vote among the others; it fails only when no
    /// peer is left to vote.
    pub(super) fn pivot_failed(&mut self, why: &str, alt: Option<usize>, out: &mut Vec<Action>) {
        let live: Vec<PeerId> = self
            .peers
            .peers
            .iter()
            .filter(|(_, p)| !p.dropped)
            .map(|(id, _)| *id)
            .collect();
        let Some(c) = self.coord.as_mut() else { return };
        let voters = std::mem::take(&mut c.voters);
        c.suspects.extend(voters.iter().copied());
        let suspects = c.suspects.clone();
        let pick = alt.or_else(|| {
            c.candidates.iter().position(|k| {
                !c.tried.contains(&k.key) && k.voters.iter().all(|v| !suspects.contains(v))
            })
        });
        tracing::warn!(
            ?voters,
            why,
            "the agreed pivot is doubtful; its voters' votes no longer count"
        );
        if let Some(i) = pick {
            // Another pivot: the join bookkeeping of the old one does not carry over (a
            // new vote that picks the same pivot again keeps it).
            c.joined.clear();
            c.pending_ranges.clear();
            c.chain_complete = false;
            c.reports.clear();
            self.journal.joined.clear();
            self.journal.joined_batches = 0;
            let c = self.coord.as_mut().expect("coordinator");
            let k = c.candidates[i].clone();
            c.tried.insert(k.key);
            c.voters = k.voters.clone();
            c.repivots += 1;
            self.broadcast_pivot(k.pivot, k.head, out);
            return;
        }
        let c = self.coord.as_mut().expect("coordinator");
        if live.iter().all(|p| suspects.contains(p)) {
            c.failed = true;
            out.push(Action::Failed(format!(
                "no pivot candidate remains: {why}, and every live peer voted for a pivot found false ({} suspect peer(s)); add honest peers with --peer, or give the target with --sync-target",
                suspects.len()
            )));
            return;
        }
        c.revote = true;
        c.status_asked = false;
        c.anchors_asked = false;
        c.retry_at_ms = self.now_ms;
    }

    /// Coordinator: every peer that voted for the pivot in use was since caught lying
    /// while its chain is not joined yet: the pivot is as doubtful as they are.
    pub(super) fn check_voters(&mut self, out: &mut Vec<Action>) {
        let Some(c) = self.coord.as_ref() else { return };
        if self.pivot.is_none()
            || c.chain_complete
            || c.voters.is_empty()
            || !c.voters.iter().all(|v| self.liars.contains(v))
        {
            return;
        }
        self.pivot_failed("every peer that voted for it was caught lying", None, out);
    }

    /// A state request for the current pivot's root was answered usefully by `peer`.
    pub(super) fn state_served(&mut self, peer: PeerId, out: &mut Vec<Action>) {
        self.state_wait_since_ms = None;
        let Some(root) = self.pivot.as_ref().map(|p| p.state_root) else {
            return;
        };
        let mut tell = !self.root_served;
        self.root_served = true;
        if let Some(p) = self.peers.peers.get_mut(&peer) {
            p.state_empty = 0;
            if p.state_unserved_told {
                p.state_unserved_told = false;
                tell = true;
            }
        }
        if tell {
            out.push(Action::ToShard {
                shard: 0,
                msg: ShardMsg::StateAnswer {
                    root,
                    peer,
                    served: true,
                },
            });
        }
    }

    /// A state request for the current pivot's root was answered empty by `peer`. Two in a
    /// row from a peer whose head is at or past the pivot (one behind it may simply not
    /// have the block yet) tell the coordinator the state is gone from that peer.
    pub(super) fn state_unserved(&mut self, peer: PeerId, out: &mut Vec<Action>) {
        let Some((number, root)) = self.pivot.as_ref().map(|p| (p.number, p.state_root)) else {
            return;
        };
        self.root_empty_answers += 1;
        self.root_empty_peers.insert(peer);
        let Some(p) = self.peers.peers.get_mut(&peer) else {
            return;
        };
        if p.best.is_some_and(|b| b < number) {
            return;
        }
        p.state_empty += 1;
        if p.state_empty >= 2 && !p.state_unserved_told {
            p.state_unserved_told = true;
            out.push(Action::ToShard {
                shard: 0,
                msg: ShardMsg::StateAnswer {
                    root,
                    peer,
                    served: false,
                },
            });
        }
    }

    /// Peers the coordinator counts on: the live ones, or the given ones not caught lying
    /// (a shard may hold only some of them).
    fn peers_counted(&self) -> usize {
        self.peers
            .live()
            .max(self.cfg.peers_given.saturating_sub(self.liars.len()))
    }

    /// The pivot distance in use.
    pub(super) fn distance(&self) -> u64 {
        self.coord
            .as_ref()
            .and_then(|c| c.distance_eff)
            .unwrap_or(self.cfg.pivot_distance)
    }

    /// Coordinator: a shard reports whether `peer` serves the state of `root`. When more
    /// than half of the peers (and at least two, when there are two) no longer serve the
    /// current pivot's state, it fell out of their history: the pivot moves forward at the
    /// next status round. One peer answering empty (lying, or lagging) moves nothing.
    pub(super) fn on_state_answer(&mut self, root: B256, peer: PeerId, served: bool) {
        let Some((number, pivot_root)) = self.pivot.as_ref().map(|p| (p.number, p.state_root))
        else {
            return;
        };
        if root != pivot_root {
            return;
        }
        let total = self.peers_counted();
        let announced = self.peers.peers.values().filter_map(|p| p.best).max();
        let distance = self.distance();
        let now = self.now_ms;
        let Some(c) = self.coord.as_mut() else { return };
        if served {
            c.root_served = true;
            c.unserved.remove(&peer);
            return;
        }
        c.unserved.insert(peer);
        let needed = if total <= 1 {
            1
        } else {
            (total / 2 + 1).max(2)
        };
        if c.unserved.len() < needed || c.force_repivot || c.state_complete || c.finished {
            return;
        }
        let head = c.last_head.max(announced.unwrap_or(0));
        // A state that was served and is gone now: the peers keep about `head - number`
        // blocks of states; the next pivot stays well inside that. A state never served
        // at all: only the head's state is surely held.
        let eff = if c.root_served {
            distance.min(head.saturating_sub(number) / 2)
        } else {
            0
        };
        c.distance_eff = Some(eff);
        c.force_repivot = true;
        c.retry_at_ms = now;
        tracing::info!(
            pivot = number,
            %root,
            peers = c.unserved.len(),
            of = total,
            head,
            distance = eff,
            "the pivot's state is no longer served; moving the pivot forward"
        );
    }

    /// Every shard: what the sync waits for when nothing progresses, in the progress line;
    /// after `stall_timeout_ms` of it, one line that says what is missing and which flag
    /// helps (`Action::Failed`). The pivot moves first when its state is gone (the
    /// coordinator does that); this fires only when that did not help either.
    pub(super) fn check_served(&mut self, out: &mut Vec<Action>) {
        let now = self.now_ms;
        let stall_ms = self.cfg.stall_timeout_ms.max(1);
        let live: Vec<&crate::eth::sync::peers::PeerStats> =
            self.peers.peers.values().filter(|p| !p.dropped).collect();
        let n_live = live.len();
        let no_receipts = !self.receipt_queue.is_empty()
            && !live.is_empty()
            && live.iter().all(|p| p.no_receipts);
        let wants_state = match self.phase {
            StatePhase::Ranges => !self.ranges_done(),
            StatePhase::Walk => !self.walk_idle(),
            _ => false,
        };
        let state_stuck = wants_state && !live.is_empty() && live.iter().all(|p| p.no_state);
        if !wants_state {
            self.state_wait_since_ms = None;
        } else if self.state_wait_since_ms.is_none() {
            self.state_wait_since_ms = Some(now);
        }
        fn since(slot: &mut Option<u64>, now_true: bool, now: u64) -> Option<u64> {
            if now_true {
                Some(*slot.get_or_insert(now))
            } else {
                *slot = None;
                None
            }
        }
        let receipts_since = since(&mut self.unserved_since_ms.1, no_receipts, now);
        let pivot_wait = self.shard == 0 && self.pivot.is_none();
        let no_pivot_since = since(&mut self.no_pivot_since_ms, pivot_wait, now);
        let (n, root) = self
            .pivot
            .as_ref()
            .map(|p| (p.number, format!("{}", p.state_root)))
            .unwrap_or_default();
        let repivots = self.coord.as_ref().map(|c| c.state_repivots).unwrap_or(0);
        let state_line = format!(
            "state of root {root} (pivot block {n}): {} empty answers from {} peer(s)",
            self.root_empty_answers,
            self.root_empty_peers.len()
        );
        self.waiting = None;
        // The state stalls when no state answer was useful for the whole timeout and
        // every live peer now answers it empty (a slow but serving peer is not a stall).
        let state_stalled = self
            .state_wait_since_ms
            .is_some_and(|t| now.saturating_sub(t) >= stall_ms);
        if state_stuck || (state_stalled && self.root_empty_answers > 0) {
            self.waiting = Some(state_line.clone());
        }
        if state_stalled && state_stuck {
            out.push(Action::Failed(format!(
                "no peer serves the {state_line} for {} s, after {repivots} pivot move(s): each of the {n_live} live peer(s) answered state requests empty, as a peer does for a state it no longer keeps (geth keeps its latest 128); add peers that hold recent state, sync the head's state with --pivot-distance 0, or wait longer with --stall-timeout-s",
                stall_ms / 1000
            )));
            self.state_wait_since_ms = None;
            return;
        }
        if no_receipts {
            self.waiting = Some(format!(
                "receipts: each of the {n_live} live peer(s) answered receipts requests empty"
            ));
        }
        if receipts_since.is_some_and(|t| now.saturating_sub(t) >= stall_ms) {
            out.push(Action::Failed(format!(
                "no peer serves receipts: each of the {n_live} live peer(s) answered receipts requests empty for {} s; sync without receipts with --receipts false, add peers that serve them, or wait longer with --stall-timeout-s",
                stall_ms / 1000
            )));
            self.unserved_since_ms.1 = None;
            return;
        }
        // Headers: no batch joined the chain from the agreed head for the whole timeout.
        let batches = self.batch_count() as usize;
        let joined_stall = match self.coord.as_mut() {
            Some(c) if self.pivot.is_some() && !c.finished && c.joined.len() < batches => {
                let since = *c.last_join_ms.get_or_insert(now);
                Some((now.saturating_sub(since), c.joined.len()))
            }
            Some(c) => {
                c.last_join_ms = None;
                None
            }
            None => None,
        };
        if let Some((for_ms, joined)) = joined_stall {
            let head = self
                .head
                .as_ref()
                .map(|h| format!("{} ({})", h.number, h.hash))
                .unwrap_or_default();
            let line = format!(
                "headers: {joined} of {batches} batches joined the chain down from head {head}; no batch verified for {} s",
                for_ms / 1000
            );
            if for_ms >= stall_ms {
                out.push(Action::Failed(format!(
                    "the header chain does not join: {line}, with {n_live} live peer(s); add peers that serve this chain (--peer), or wait longer with --stall-timeout-s"
                )));
                if let Some(c) = self.coord.as_mut() {
                    c.last_join_ms = None;
                }
                return;
            }
            if for_ms >= stall_ms / 4 && self.waiting.is_none() {
                self.waiting = Some(line);
            }
        }
        if pivot_wait {
            let (answered, covering) = self
                .coord
                .as_ref()
                .map(|c| {
                    (
                        c.status_replies.len(),
                        c.anchor_votes.values().map(|v| v.len()).max().unwrap_or(0),
                    )
                })
                .unwrap_or_default();
            let line = format!(
                "a pivot: {n_live} live peer(s), {answered} answered status, at most {covering} agreed on a pivot header, {} must agree",
                self.agreement()
            );
            if no_pivot_since.is_some_and(|t| now.saturating_sub(t) >= stall_ms) {
                out.push(Action::Failed(format!(
                    "no pivot after {} s: {line}; add peers that serve this chain (--peer), lower --pivot-agreement, or wait longer with --stall-timeout-s",
                    stall_ms / 1000
                )));
                self.no_pivot_since_ms = None;
                return;
            }
            self.waiting = Some(line);
        }
    }

    /// Before the first pivot, while fewer than `min_peers` peers are connected and
    /// `min_peers_wait_ms` has not passed: (connected, wanted, ms left).
    pub(super) fn peers_awaited(&self) -> Option<(usize, usize, u64)> {
        let want = self.cfg.min_peers;
        let live = self.peers.live();
        let since = self.now_ms - self.started_ms.unwrap_or(self.now_ms);
        let left = self.cfg.min_peers_wait_ms.saturating_sub(since);
        (want > 0 && live < want && left > 0 && self.pivot.is_none()).then_some((live, want, left))
    }

    /// Coordinator: ask the peers for their status while there is no pivot, and again
    /// now and then to re-select it.
    pub(super) fn tick_pivot(&mut self, out: &mut Vec<Action>) {
        if self.pivot.is_none() {
            self.try_resume_pivot();
        }
        if self.peers_awaited().is_some() {
            return;
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
        let due = check_ms > 0 && now >= c.next_status_check_ms;
        let forced = (c.force_repivot || c.revote) && now >= c.retry_at_ms;
        let recheck = self.pivot.is_some()
            && !c.finished
            && ((due && !done) || forced)
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
        let distance = self.distance();
        let anchor = self.cfg.anchor_number;
        if let (Some(b), Some(p)) = (best, self.peers.peers.get_mut(&peer)) {
            p.best = Some(p.best.map_or(b, |x| x.max(b)));
        }
        let Some(c) = self.coord.as_mut() else { return };
        c.status_pending = c.status_pending.saturating_sub(1);
        if let Some(b) = best.filter(|_| !c.suspects.contains(&peer)) {
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
        c.last_head = c.last_head.max(head);
        let current = self.pivot.as_ref().map(|p| p.number);
        let resumed = c.resume_pivot.take();
        let forced = c.force_repivot;
        let revote = c.revote;
        let mut pivot = head.saturating_sub(distance).max(anchor + 1);
        if let Some(n) = current {
            if !forced && !revote && self.pivot_still_valid(n, head) {
                return;
            }
            if forced && !revote && pivot <= n {
                if head > n {
                    // Move at least past the old pivot.
                    pivot = head;
                } else {
                    // The head has not moved past the pivot yet: ask again soon.
                    let c = self.coord.as_mut().expect("coordinator");
                    c.status_asked = false;
                    c.retry_at_ms = now + 1000;
                    return;
                }
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
                match anchor_hashes(&raws, pn, hn) {
                    Some(key) if key != decided => {
                        // Another chain's headers: a lie, or the truth if the decided
                        // pivot is the lie. Kept as a candidate the join can turn to.
                        let c = self.coord.as_mut().expect("coordinator");
                        if !c.suspects.contains(&peer) {
                            add_candidate(&mut c.candidates, key, peer, &raws);
                        }
                    }
                    None if !raws.is_empty() => self.lie(peer, out),
                    _ => {}
                }
            }
            return;
        }
        c.anchor_pending = c.anchor_pending.saturating_sub(1);
        let (pn, hn) = c.anchor_target;
        let mut liar = false;
        let suspect = c.suspects.contains(&peer);
        if let Some(raws) = raws.filter(|_| !suspect) {
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
            // Every answer is kept as a candidate, most votes first; the losers are not
            // taken for liars (more than a third of colluding liars outvote the truth;
            // the header chain decides later, from the trusted anchor up).
            let mut cands: Vec<super::coord::Candidate> = c
                .anchor_votes
                .iter()
                .map(|(k, v)| super::coord::Candidate {
                    key: *k,
                    voters: v.iter().map(|x| x.0).collect(),
                    pivot: v[0].1.clone(),
                    head: v[0].2.clone(),
                })
                .collect();
            cands.sort_by_key(|k| std::cmp::Reverse(k.voters.len()));
            c.voters = cands
                .iter()
                .find(|k| k.key == key)
                .map(|k| k.voters.clone())
                .unwrap_or_default();
            c.candidates = cands;
            c.tried.insert(key);
            c.revote = false;
            c.anchor_votes.clear();
            c.anchor_pending = 0;
            c.anchors_asked = false;
            let same = self.pivot.as_ref().is_some_and(|x| x.hash == key.0)
                && self.head.as_ref().is_some_and(|x| x.hash == key.1);
            if same {
                return;
            }
            let c = self.coord.as_mut().expect("coordinator");
            if c.force_repivot {
                c.state_repivots += 1;
            }
            c.force_repivot = false;
            c.unserved.clear();
            c.root_served = false;
            if self.pivot.is_some() || !c.joined.is_empty() || self.journal.joined_batches > 0 {
                // A new pivot: the join bookkeeping of the old target does not carry over
                // (stored headers do, and are announced again by their owners).
                c.repivots += 1;
                c.joined.clear();
                c.pending_ranges.clear();
                c.chain_complete = false;
                c.reports.clear();
                self.journal.joined.clear();
                self.journal.joined_batches = 0;
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
        self.first_pivot.get_or_insert(p.number);
        self.pivot = Some(p);
        // A new state root: peers that lacked the old one may hold this one.
        for peer in self.peers.peers.values_mut() {
            peer.no_state = false;
            peer.empty = 0;
        }
        self.unserved_since_ms.0 = None;
        if let Some(c) = self.coord.as_mut() {
            c.last_join_ms = None;
        }
        if old_root != Some(new_root) {
            // Requests for the old root say nothing about the new one.
            for peer in self.peers.peers.values_mut() {
                peer.state_empty = 0;
                peer.state_unserved_told = false;
            }
            self.pivot_epoch += 1;
            self.root_served = false;
            self.root_empty_answers = 0;
            self.root_empty_peers.clear();
        }
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
        self.batches.truncate(n);
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
                    self.storage_to_heal(store);
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

/// Count `peer`'s late vote for `key` (its raw pivot and head headers in `raws`).
fn add_candidate(
    cands: &mut Vec<super::coord::Candidate>,
    key: (B256, B256),
    peer: PeerId,
    raws: &[Vec<u8>],
) {
    match cands.iter_mut().find(|k| k.key == key) {
        Some(k) => {
            if !k.voters.contains(&peer) {
                k.voters.push(peer);
            }
        }
        None => cands.push(super::coord::Candidate {
            key,
            voters: vec![peer],
            pivot: raws[0].clone(),
            head: raws[raws.len() - 1].clone(),
        }),
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

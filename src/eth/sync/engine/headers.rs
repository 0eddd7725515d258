//! Header batches: each shard fetches the batches it owns and checks their parent-hash
//! links; shard 0 joins the ranges from the agreed head down (`HeaderRange`) and answers
//! `HeadersJoined` or `HeadersRejected`, on which the owner stores the batch or refetches it.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::B256;

use super::{owner_of_batch, Action, Engine, Pending, ShardMsg};
use crate::eth::sync::store::SyncStore;
use crate::eth::sync::types::{HashOrNumber, Header, PeerId, Request};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum BatchState {
    Todo,
    Fetching,
    /// Verified inside, waiting for the coordinator's join.
    Held(Vec<Header>, Option<PeerId>),
    Stored,
}

/// This shard's header batches by state, with the batches to fetch and the count of
/// batches not yet stored kept beside them (so neither the request loop nor the
/// per-event report scans every batch).
#[derive(Debug, Default)]
pub(super) struct Batches {
    states: BTreeMap<u64, BatchState>,
    todo: BTreeSet<u64>,
    unstored: usize,
    /// Batches held in memory, verified inside, waiting for the join.
    held: BTreeSet<u64>,
    /// Batches asked for (each will be held when it comes).
    fetching: BTreeSet<u64>,
}

impl Batches {
    pub(super) fn get(&self, b: &u64) -> Option<&BatchState> {
        self.states.get(b)
    }

    fn count(&mut self, b: u64, s: &BatchState, add: bool) {
        if *s == BatchState::Todo {
            if add {
                self.todo.insert(b);
            } else {
                self.todo.remove(&b);
            }
        }
        if *s != BatchState::Stored {
            if add {
                self.unstored += 1;
            } else {
                self.unstored -= 1;
            }
        }
        let set = match s {
            BatchState::Held(..) => &mut self.held,
            BatchState::Fetching => &mut self.fetching,
            _ => return,
        };
        if add {
            set.insert(b);
        } else {
            set.remove(&b);
        }
    }

    pub(super) fn insert(&mut self, b: u64, s: BatchState) -> Option<BatchState> {
        if let Some(o) = self.states.remove(&b) {
            self.count(b, &o, false);
            self.count(b, &s, true);
            self.states.insert(b, s);
            return Some(o);
        }
        self.count(b, &s, true);
        self.states.insert(b, s);
        None
    }

    /// Forget the batches from `n` on (a lower head).
    pub(super) fn truncate(&mut self, n: u64) {
        for (b, s) in self.states.split_off(&n) {
            self.count(b, &s, false);
        }
    }

    /// The highest batch to fetch. The coordinator joins the batches from the head down,
    /// so fetching them in that order lets each be joined and stored soon after it
    /// arrives; from the bottom up, every batch would be held in memory until the top
    /// one came (the whole chain, on a long one).
    ///
    /// With `cap` batches held or asked for, only a batch above all of them is started.
    /// The join's next batch is always one: every batch above it is joined, so whatever
    /// its owner holds or asks for is below it. So the cap cannot stall the join, and it
    /// bounds what a shard holds while a batch near the head is late (a slow or lost
    /// answer): without it, the shards would go on fetching and holding everything below
    /// that batch.
    fn first_todo(&self, cap: usize) -> Option<u64> {
        let b = self.todo.last().copied()?;
        let top = self.held.last().max(self.fetching.last());
        (self.held.len() + self.fetching.len() < cap || top.is_none_or(|&t| b > t)).then_some(b)
    }

    /// The batch asked for above every batch held and asked for, when the cap holds
    /// the next one back: if the join waits on one of this shard's batches, it is this.
    fn capped_top(&self, cap: usize) -> Option<u64> {
        if self.todo.is_empty() || self.first_todo(cap).is_some() {
            return None;
        }
        let t = *self.fetching.last()?;
        self.held.last().is_none_or(|&h| t > h).then_some(t)
    }

    /// Batches held in memory until the coordinator joins them.
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// Every batch known is stored.
    pub(super) fn all_stored(&self) -> bool {
        self.unstored == 0
    }
}

impl Engine {
    pub(super) fn batch_count(&self) -> u64 {
        match &self.head {
            Some(h) => (h.number - self.cfg.anchor_number).div_ceil(self.cfg.header_batch),
            None => 0,
        }
    }

    pub(super) fn batch_range(&self, b: u64) -> (u64, u64) {
        let lo = self.cfg.anchor_number + 1 + b * self.cfg.header_batch;
        let hi = (lo + self.cfg.header_batch - 1)
            .min(self.head.as_ref().map(|h| h.number).unwrap_or(lo));
        (lo, hi)
    }

    /// Header batches to fetch. False when the request slots ran out (then nothing else
    /// is sent this turn).
    pub(super) fn pump_headers(&mut self, now: u64, out: &mut Vec<Action>) -> bool {
        while let Some(b) = self.batches.first_todo(self.cfg.held_header_batches) {
            if self.free_slots() == 0 {
                return false;
            }
            let tried = self.batch_tried.get(&b).cloned().unwrap_or_default();
            let (_, top) = self.batch_range(b);
            let peer = self
                .peers
                .pick_for(now, &self.policy, &tried, false, top)
                .or_else(|| {
                    self.batch_tried.remove(&b);
                    None
                });
            let Some(peer) = peer else { break };
            self.batches.insert(b, BatchState::Fetching);
            self.ask_batch(peer, b, out);
        }
        self.hedge_capped_top(now, out);
        true
    }

    /// A request for batch `b` brought no headers to hold: the batch is fetched again,
    /// unless a second peer was asked for it too and may still answer
    /// ([`Engine::hedge_capped_top`]).
    pub(super) fn batch_unanswered(&mut self, b: u64) {
        let asked_again = self
            .inflight
            .values()
            .any(|i| matches!(i.what, Pending::Headers(x) if x == b));
        if self.batches.get(&b) == Some(&BatchState::Fetching) && !asked_again {
            self.batches.insert(b, BatchState::Todo);
        }
    }

    /// Ask `peer` for batch `b`'s headers (those not stored before a restart).
    fn ask_batch(&mut self, peer: PeerId, b: u64, out: &mut Vec<Action>) {
        let (lo, hi) = self.batch_range(b);
        let lo = self.batch_from.get(&b).copied().unwrap_or(lo);
        self.send(
            peer,
            Request::BlockHeaders {
                origin: HashOrNumber::Number(lo),
                amount: hi - lo + 1,
                skip: 0,
                reverse: false,
            },
            Pending::Headers(b),
            out,
        );
    }

    /// While the cap holds the fetch back, the join may be waiting on this shard's top
    /// batch; when its answer is late (a lost request waits for its timeout), the batch
    /// is asked of a second peer too. The first answer is taken, the other ignored.
    fn hedge_capped_top(&mut self, now: u64, out: &mut Vec<Action>) {
        let Some(t) = self.batches.capped_top(self.cfg.held_header_batches) else {
            return;
        };
        if self.free_slots() == 0 {
            return;
        }
        let mut asked = self
            .inflight
            .values()
            .filter(|i| matches!(i.what, Pending::Headers(b) if b == t));
        let (Some(first), None) = (asked.next(), asked.next()) else {
            return;
        };
        if now.saturating_sub(first.sent_ms) < self.cfg.min_timeout_ms {
            return;
        }
        let (_, top) = self.batch_range(t);
        let Some(peer) = self
            .peers
            .pick_for(now, &self.policy, &[first.peer], false, top)
        else {
            return;
        };
        self.progress.header_hedges += 1;
        self.ask_batch(peer, t, out);
    }

    pub(super) fn on_headers(
        &mut self,
        peer: PeerId,
        b: u64,
        raws: Vec<Vec<u8>>,
        store: &dyn SyncStore,
        out: &mut Vec<Action>,
    ) -> Result<bool, ()> {
        if self.batches.get(&b) != Some(&BatchState::Fetching) {
            return Ok(true);
        }
        let (first, hi) = self.batch_range(b);
        // The stored prefix (after a restart): its first parent and its last hash, which
        // the fetched rest must continue.
        let mut prefix: Option<(B256, B256)> = None;
        let mut lo = first;
        if let Some(&from) = self.batch_from.get(&b) {
            match (store.header(first), store.header(from - 1)) {
                (Some(f), Some(l)) => {
                    prefix = Some((f.parent_hash, l.hash));
                    lo = from;
                }
                _ => {
                    // The prefix is gone (cannot happen with an append-only store): fetch all.
                    self.batch_from.remove(&b);
                    self.batches.insert(b, BatchState::Todo);
                    return Ok(true);
                }
            }
        }
        if raws.len() as u64 != hi - lo + 1 {
            self.batch_tried.entry(b).or_default().push(peer);
            self.batch_unanswered(b);
            return Ok(false);
        }
        let hs = Header::decode_all(raws).map_err(|_| ())?;
        for (i, h) in hs.iter().enumerate() {
            if h.number != lo + i as u64 || (i > 0 && h.parent_hash != hs[i - 1].hash) {
                return Err(());
            }
        }
        let mut first_parent = hs[0].parent_hash;
        if let Some((fp, last)) = prefix {
            if first_parent != last {
                return Err(());
            }
            first_parent = fp;
        }
        let last_hash = hs[hs.len() - 1].hash;
        self.batches.insert(b, BatchState::Held(hs, Some(peer)));
        out.push(Action::ToShard {
            shard: 0,
            msg: ShardMsg::HeaderRange {
                batch: b,
                first_parent,
                last_hash,
                peer: Some(peer),
            },
        });
        Ok(true)
    }

    pub(super) fn on_header_range(
        &mut self,
        batch: u64,
        first_parent: B256,
        last_hash: B256,
        peer: Option<PeerId>,
        store: &mut dyn SyncStore,
        out: &mut Vec<Action>,
    ) {
        let n = self.batch_count();
        let head_hash = match &self.head {
            Some(h) => h.hash,
            None => return,
        };
        let shards = self.shards;
        let anchor = self.cfg.trusted_anchor;
        let Some(c) = self.coord.as_mut() else { return };
        let owner = owner_of_batch(batch, shards);
        if let Some(&(fp, lh)) = c.joined.get(&batch) {
            let msg = if fp == first_parent && lh == last_hash {
                ShardMsg::HeadersJoined { batch }
            } else {
                ShardMsg::HeadersRejected {
                    batch,
                    peer,
                    lied: true,
                }
            };
            out.push(Action::ToShard { shard: owner, msg });
            return;
        }
        c.pending_ranges
            .insert(batch, (first_parent, last_hash, peer, owner));
        let mut changed = false;
        loop {
            // The highest batch not yet joined, and the hash its last header must have.
            // The joined batches are a run down from the top: the one below it, found
            // without a scan (the scan is for a run with gaps, which the join never makes).
            let run = match (c.joined.first_key_value(), c.joined.last_key_value()) {
                (Some((&lo, _)), Some((&hi, _))) => {
                    (hi + 1 == n && (hi - lo + 1) as usize == c.joined.len()).then_some(lo)
                }
                _ => Some(n),
            };
            let next = match run {
                Some(lo) => lo.checked_sub(1),
                None => (0..n).rev().find(|b| !c.joined.contains_key(b)),
            };
            let Some(next) = next else { break };
            let expected = if next + 1 == n {
                head_hash
            } else {
                c.joined[&(next + 1)].0
            };
            let Some((fp, lh, p, o)) = c.pending_ranges.remove(&next) else {
                break;
            };
            if lh == expected {
                if next == 0 {
                    if let Some(a) = anchor.filter(|a| *a != fp) {
                        // The agreed head is not on the anchor's chain: its voters lied.
                        let why = format!(
                            "the header chain from the agreed head reaches parent {fp} at the bottom, not the trusted anchor {a}"
                        );
                        self.pivot_failed(&why, None, out);
                        return;
                    }
                }
                c.joined.insert(next, (fp, lh));
                changed = true;
                out.push(Action::ToShard {
                    shard: o,
                    msg: ShardMsg::HeadersJoined { batch: next },
                });
            } else {
                // The top batch of a peer that did not vote for the pivot in use, ending
                // at the head another candidate of the vote named, linked all through:
                // that peer is consistent where the pivot's voters may not be. Turn to it
                // once every voter was caught lying (else the batch is a lie).
                let alt = (next + 1 == n)
                    .then(|| {
                        c.candidates.iter().position(|k| {
                            k.key.1 == lh
                                && !c.tried.contains(&k.key)
                                && p.is_some_and(|p| k.voters.contains(&p))
                        })
                    })
                    .flatten();
                let voters_lied =
                    !c.voters.is_empty() && c.voters.iter().all(|v| self.liars.contains(v));
                if let (Some(i), true) = (alt, voters_lied) {
                    self.pivot_failed("a peer's header chain ends at another head", Some(i), out);
                    return;
                }
                // A top batch from a peer that did not vote for the pivot is not taken
                // for a lie (the voters may be the liars): it is asked of another peer,
                // and a voter's top batch shows which side lies.
                out.push(Action::ToShard {
                    shard: o,
                    msg: ShardMsg::HeadersRejected {
                        batch: next,
                        peer: p,
                        lied: !(next + 1 == n && p.is_some_and(|p| !c.voters.contains(&p))),
                    },
                });
                break;
            }
        }
        if c.pending_ranges.contains_key(&batch) || c.joined.contains_key(&batch) {
            // A verified batch waiting for the ones above it, or joined: headers progress.
            c.last_join_ms = None;
        }
        if changed {
            // The joined batches are not journaled (the journal stays the same size
            // whatever the chain's length): after a restart every stored batch is
            // announced again from the store and joined down from the head as before,
            // and a batch joined but not yet stored is fetched again and must link to
            // the same chain.
            self.journal.joined.clear();
            self.journal.joined_batches = self.coord.as_ref().map_or(0, |c| c.joined.len() as u64);
            self.write_journal(store);
            self.check_coordinator(store, out);
        }
    }

    /// The coordinator joined `batch`: store its held headers and queue its bodies.
    pub(super) fn on_headers_joined(&mut self, batch: u64, store: &mut dyn SyncStore) {
        if matches!(self.batches.get(&batch), Some(BatchState::Held(..))) {
            let Some(BatchState::Held(hs, _)) = self.batches.insert(batch, BatchState::Stored)
            else {
                unreachable!("checked above")
            };
            for h in hs {
                if store.header(h.number).is_none_or(|x| x.hash != h.hash) {
                    store.put_header_owned(h);
                    self.progress.headers_downloaded += 1;
                } else {
                    self.progress.refetched_items += 1;
                }
            }
            self.queue_bodies(batch, store);
        }
    }

    /// The coordinator rejected `batch`: its peer lied; it is fetched again from another.
    pub(super) fn on_headers_rejected(
        &mut self,
        batch: u64,
        peer: Option<PeerId>,
        lied: bool,
        out: &mut Vec<Action>,
    ) {
        if let Some(p) = peer {
            if lied {
                self.lie(p, out);
            }
            self.batch_tried.entry(batch).or_default().push(p);
        }
        if matches!(self.batches.get(&batch), Some(BatchState::Held(..))) {
            self.batches.insert(batch, BatchState::Todo);
        }
    }
}

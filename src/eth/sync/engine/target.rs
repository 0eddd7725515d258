//! A trusted sync target (on shard 0): the block named by `--sync-target` or by a
//! consensus client's forkchoice over the Engine API becomes the pivot and the head. Its
//! header is fetched by hash, one peer at a time, and must hash to the target; the header
//! phase then verifies the chain back from it by parent hashes, as it does from an agreed
//! head. Without a trusted target the peers' vote (`pivot`) chooses, and the head is
//! reported as not trusted.
//!
//! [`Engine::set_target`] is the one entry point for a new target (the Engine API calls it
//! through `Event::Target` on every forkchoice update). A newer target mid-sync moves the
//! pivot with the same `ShardMsg::Pivot` switch a re-selected pivot uses, so every verified
//! header, node and range is kept. A newer target less than `repivot_slack` blocks ahead is
//! held back, and adopted as soon as the peers stop serving the pivot's state.
//!
//! With a trusted target the peers' status rounds (`tick_pivot`) do not run: the pivot
//! moves only to a target (the newest one given), never to a head the peers vote for.

use std::collections::BTreeSet;

use alloy_primitives::B256;

use super::{Action, Engine, Pending, ShardMsg};
use crate::eth::sync::config::TargetSource;
use crate::eth::sync::types::{HashOrNumber, Header, PeerId, Request};

/// Shard 0's view of the trusted target.
#[derive(Debug, Default)]
pub(super) struct TargetState {
    /// The newest target given (by flag or consensus client).
    pub(super) wanted: Option<B256>,
    /// Since when the sync has waited for a target, or for the wanted target's header.
    pub(super) since_ms: Option<u64>,
    /// A header request for `wanted` is in flight.
    pub(super) asked: bool,
    /// Peers that answered the request for `wanted` without its header.
    pub(super) lacking: BTreeSet<PeerId>,
    pub(super) retry_at_ms: u64,
    /// Targets given so far.
    pub(super) given: u64,
    /// The newest target whose header was fetched but not made the pivot (it is within the
    /// re-pivot slack): adopted as soon as the peers stop serving the pivot's state.
    pub(super) kept_out: Option<Header>,
}

impl Engine {
    /// Whether the pivot comes from a trusted target rather than the peers' vote.
    pub(super) fn targeted(&self) -> bool {
        self.cfg.target_source.trusted()
    }

    /// Set the sync target: the block whose state and chain are wanted (shard 0 only; a
    /// no-op elsewhere, for the same hash, or once the sync has ended). Its header is
    /// fetched by hash and becomes pivot and head; with a pivot already chosen, the pivot
    /// moves there (keeping every verified item) unless the new target is less than
    /// `repivot_slack` blocks ahead of it; such a target is still adopted as soon as the
    /// peers stop serving the pivot's state.
    pub fn set_target(&mut self, hash: B256) {
        let now = self.now_ms;
        let Some(c) = self.coord.as_mut() else {
            return;
        };
        if c.target.wanted == Some(hash) || c.finished || c.failed {
            return;
        }
        tracing::info!(shard = self.shard, target = %hash, source = self.cfg.target_source.name(), "sync target set");
        let t = &mut c.target;
        t.wanted = Some(hash);
        t.given += 1;
        t.since_ms = Some(now);
        t.asked = false;
        t.lacking.clear();
        t.retry_at_ms = 0;
    }

    /// What the sync waits for before it has a pivot, for the progress line.
    pub(super) fn waiting_for(&self) -> Option<String> {
        let c = self.coord.as_ref()?;
        if !self.targeted() {
            return self.peers_awaited().map(|(live, want, left_ms)| {
                format!(
                    "{want} connected peers before the pivot vote ({live} so far; --min-peers), at most {} s more",
                    left_ms.div_ceil(1000)
                )
            });
        }
        match c.target.wanted {
            None => Some(
                "the consensus client's first forkchoiceUpdated over the Engine API (--authrpc)"
                    .into(),
            ),
            Some(h) if self.pivot.is_none() => Some(format!(
                "the header of sync target {h} from a peer ({} of {} live peer(s) lack it)",
                c.target.lacking.len(),
                self.peers.live()
            )),
            _ => None,
        }
    }

    /// Coordinator tick with a trusted target: fetch the wanted target's header, and stop
    /// with one line when no target or no header arrives within `target_timeout_ms`.
    pub(super) fn tick_target(&mut self, out: &mut Vec<Action>) {
        let now = self.now_ms;
        let timeout_ms = self.cfg.target_timeout_ms;
        let source = self.cfg.target_source;
        let live = self.peers.live();
        let pivot_hash = self.pivot.as_ref().map(|p| p.hash);
        // The pivot's state is gone from the peers' history: enough peers told the shards
        // they no longer serve it (see `on_state_answer`), or every live peer answered
        // this shard's state requests empty.
        let wants_state = matches!(
            self.phase,
            super::StatePhase::Ranges | super::StatePhase::Walk
        );
        let all_lack = wants_state
            && self.peers.live() > 0
            && self
                .peers
                .peers
                .values()
                .filter(|p| !p.dropped)
                .all(|p| p.no_state);
        let state_refused = all_lack || self.coord.as_ref().is_some_and(|c| c.force_repivot);
        let journaled = if pivot_hash.is_none() {
            self.journal
                .pivot
                .as_deref()
                .and_then(|p| hex::decode(p).ok())
                .and_then(|raw| Header::decode(&raw).ok())
        } else {
            None
        };
        let Some(c) = self.coord.as_mut() else {
            return;
        };
        if c.finished || c.failed {
            return;
        }
        let Some(wanted) = c.target.wanted else {
            // No target yet (the Engine API's first forkchoiceUpdated has not come).
            let since = *c.target.since_ms.get_or_insert(now);
            if now.saturating_sub(since) >= timeout_ms {
                c.failed = true;
                out.push(Action::Failed(format!(
                    "no sync target: no consensus client sent engine_forkchoiceUpdated to the Engine API within {} s; start one with this --authrpc address and --jwt-secret, or give --sync-target HASH",
                    timeout_ms / 1000
                )));
            }
            return;
        };
        if pivot_hash == Some(wanted) {
            c.target.since_ms = None;
            return;
        }
        if c.target.kept_out.as_ref().is_some_and(|h| h.hash == wanted) {
            c.target.since_ms = None;
            if state_refused {
                // The peers no longer serve the pivot's state: move to the newest target.
                let h = c.target.kept_out.take().expect("checked");
                tracing::info!(target = %h.hash, number = h.number, "the pivot's state is no longer served; moving the pivot to the newest sync target");
                self.broadcast_target(h.raw, false, out);
            }
            return;
        }
        // After a restart: the journaled pivot is the target itself; no need to ask.
        if pivot_hash.is_none() {
            if let Some(h) = journaled.filter(|h| h.hash == wanted) {
                c.target.since_ms = None;
                let raw = h.raw.clone();
                self.broadcast_target(raw, true, out);
                return;
            }
        }
        let since = *c.target.since_ms.get_or_insert(now);
        if now.saturating_sub(since) >= timeout_ms && pivot_hash.is_none() {
            c.failed = true;
            out.push(Action::Failed(format!(
                "no peer has the header of sync target {wanted} ({}): {} peer(s) asked within {} s; give a --peer that holds this block, or check the hash",
                source.name(),
                c.target.lacking.len().max(live),
                timeout_ms / 1000
            )));
            return;
        }
        if c.target.asked || now < c.target.retry_at_ms {
            return;
        }
        let lacking: Vec<PeerId> = c.target.lacking.iter().copied().collect();
        let Some(peer) = self.peers.pick(now, &self.policy, &lacking, false) else {
            // Every live peer lacks it (or is busy): ask them all again a little later (the
            // block may not have reached them yet).
            let c = self.coord.as_mut().expect("coordinator");
            if live > 0 && lacking.len() >= live {
                c.target.lacking.clear();
            }
            c.target.retry_at_ms = now + 1_000;
            return;
        };
        self.coord.as_mut().expect("coordinator").target.asked = true;
        self.send(
            peer,
            Request::BlockHeaders {
                origin: HashOrNumber::Hash(wanted),
                amount: 1,
                skip: 0,
                reverse: false,
            },
            Pending::Target(wanted),
            out,
        );
    }

    /// A request for the header of target `t` was lost (timeout): ask again.
    pub(super) fn target_lost(&mut self, t: B256) {
        if let Some(c) = self.coord.as_mut() {
            if c.target.wanted == Some(t) {
                c.target.asked = false;
            }
        }
    }

    /// A peer's answer to the header request for target `t`: empty is "does not have it";
    /// a header that does not hash to `t`, or more than one, is a lie.
    pub(super) fn on_target_header(
        &mut self,
        peer: PeerId,
        t: B256,
        raws: Vec<Vec<u8>>,
        out: &mut Vec<Action>,
    ) -> Result<bool, ()> {
        self.target_lost(t);
        if raws.is_empty() {
            if let Some(c) = self.coord.as_mut() {
                if c.target.wanted == Some(t) {
                    c.target.lacking.insert(peer);
                }
            }
            return Ok(false);
        }
        let [raw] = raws.as_slice() else {
            return Err(());
        };
        let h = Header::decode(raw).map_err(|_| ())?;
        if h.hash != t {
            return Err(());
        }
        let anchor = self.cfg.anchor_number;
        let slack = self.cfg.repivot_slack;
        let pivot = self.pivot.as_ref().map(|p| p.number);
        let Some(c) = self.coord.as_mut() else {
            return Ok(true);
        };
        if c.target.wanted != Some(t) || c.finished || c.failed {
            return Ok(true);
        }
        if h.number <= anchor {
            c.failed = true;
            out.push(Action::Failed(format!(
                "sync target {t} is block {}, not after the trusted anchor block {anchor}: nothing to sync",
                h.number
            )));
            return Ok(true);
        }
        if let Some(p) = pivot {
            if h.number > p && h.number - p <= slack {
                // A newer head close to the pivot: the pivot's state is still recent enough;
                // moving for every new head would restart the state fetch every slot.
                tracing::info!(target = %t, number = h.number, pivot = p, "new sync target within the re-pivot slack of the pivot; pivot kept");
                c.target.kept_out = Some(h);
                return Ok(true);
            }
        }
        tracing::info!(target = %t, number = h.number, peer, "sync target header fetched and checked; it is the pivot");
        self.broadcast_target(raw.clone(), false, out);
        Ok(true)
    }

    /// Make header `raw` pivot and head on every shard. With a pivot already chosen, the
    /// join bookkeeping of the old head does not carry over (stored headers do, and are
    /// announced again by their owners), as for a re-selected pivot; `resumed` (the
    /// journaled pivot is the target) keeps it.
    fn broadcast_target(&mut self, raw: Vec<u8>, resumed: bool, out: &mut Vec<Action>) {
        let had_pivot = self.pivot.is_some();
        if let Some(c) = self.coord.as_mut() {
            c.target.since_ms = None;
            c.target.kept_out = None;
            // A new root: what the peers said of the old one does not carry over.
            if c.force_repivot {
                c.state_repivots += 1;
            }
            c.force_repivot = false;
            c.unserved.clear();
            c.root_served = false;
            if !resumed && (had_pivot || !c.joined.is_empty() || self.journal.joined_batches > 0) {
                c.repivots += 1;
                c.joined.clear();
                c.pending_ranges.clear();
                c.chain_complete = false;
                c.reports.clear();
                self.journal.joined.clear();
                self.journal.joined_batches = 0;
            }
        }
        for s in 0..self.shards {
            out.push(Action::ToShard {
                shard: s,
                msg: ShardMsg::Pivot {
                    pivot: raw.clone(),
                    head: raw.clone(),
                },
            });
        }
    }

    /// Where this sync's target came from, and whether its head is trusted.
    pub(super) fn target_report(&self) -> (TargetSource, bool) {
        let s = self.cfg.target_source;
        (s, s.trusted() && self.pivot.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Event;
    use super::*;
    use crate::eth::sync::chain::generate_chain;
    use crate::eth::sync::config::SyncConfig;
    use crate::eth::sync::store::MemStore;
    use crate::eth::sync::types::Response;

    fn engine(source: TargetSource, target: Option<B256>) -> (Engine, MemStore) {
        let store = MemStore::default();
        let cfg = SyncConfig {
            target_source: source,
            sync_target: target,
            target_timeout_ms: 5_000,
            ..SyncConfig::default()
        };
        (Engine::new(cfg, 0, 1, &store), store)
    }

    /// The target header requests among `acts`: (peer, id, hash).
    fn asks(acts: &[Action]) -> Vec<(PeerId, u64, B256)> {
        acts.iter()
            .filter_map(|a| match a {
                Action::Send {
                    peer,
                    id,
                    req:
                        Request::BlockHeaders {
                            origin: HashOrNumber::Hash(h),
                            amount: 1,
                            ..
                        },
                    ..
                } => Some((*peer, *id, *h)),
                _ => None,
            })
            .collect()
    }

    fn pivots(acts: &[Action]) -> Vec<Header> {
        acts.iter()
            .filter_map(|a| match a {
                Action::ToShard {
                    msg: ShardMsg::Pivot { pivot, head },
                    ..
                } => {
                    assert_eq!(pivot, head, "a trusted target is pivot and head");
                    Header::decode(pivot).ok()
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn engine_api_target_is_fetched_by_hash_checked_and_moved() {
        let chain = generate_chain(300, B256::from([9; 32]), 1);
        let (mut e, mut st) = engine(TargetSource::EngineApi, None);
        let mut out = Vec::new();
        e.handle(0, Event::PeerJoined(1), &mut st, &mut out);
        e.handle(0, Event::PeerJoined(2), &mut st, &mut out);
        e.handle(100, Event::Tick, &mut st, &mut out);
        assert!(asks(&out).is_empty(), "no target yet: nothing asked");
        assert!(e.status().waiting_for.unwrap().contains("consensus client"));
        assert!(!e.status().head_trusted);
        // The consensus client's head.
        let t = chain.headers[100].clone();
        out.clear();
        e.handle(200, Event::Target(t.hash), &mut st, &mut out);
        e.handle(300, Event::Tick, &mut st, &mut out);
        let a = asks(&out);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].2, t.hash);
        // A header that is not the target: a lie; the peer is dropped, another is asked.
        let (liar, id, _) = a[0];
        out.clear();
        let resp = Response::BlockHeaders(vec![chain.headers[99].raw.clone()]);
        e.handle(
            310,
            Event::Response {
                peer: liar,
                id,
                resp,
            },
            &mut st,
            &mut out,
        );
        assert!(out
            .iter()
            .any(|x| matches!(x, Action::DropPeer(p) if *p == liar)));
        out.clear();
        e.handle(400, Event::Tick, &mut st, &mut out);
        let a = asks(&out);
        assert_eq!(a.len(), 1);
        assert_ne!(a[0].0, liar);
        // The right header: it becomes pivot and head.
        out.clear();
        let resp = Response::BlockHeaders(vec![t.raw.clone()]);
        e.handle(
            410,
            Event::Response {
                peer: a[0].0,
                id: a[0].1,
                resp,
            },
            &mut st,
            &mut out,
        );
        let p = pivots(&out);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].hash, t.hash);
        for m in p.iter().map(|h| ShardMsg::Pivot {
            pivot: h.raw.clone(),
            head: h.raw.clone(),
        }) {
            out.clear();
            e.handle(420, Event::Shard(m), &mut st, &mut out);
        }
        let s = e.status();
        assert_eq!((s.pivot_block, s.head_trusted), (Some(100), true));
        assert_eq!(s.target, "engine-api");
        // A newer head within the re-pivot slack: fetched, the pivot kept.
        let near = chain.headers[120].clone();
        e.set_target(near.hash);
        out.clear();
        e.handle(500, Event::Tick, &mut st, &mut out);
        let a = asks(&out);
        assert_eq!(a.len(), 1, "{out:?}");
        out.clear();
        let resp = Response::BlockHeaders(vec![near.raw.clone()]);
        e.handle(
            510,
            Event::Response {
                peer: a[0].0,
                id: a[0].1,
                resp,
            },
            &mut st,
            &mut out,
        );
        assert!(pivots(&out).is_empty());
        out.clear();
        e.handle(520, Event::Tick, &mut st, &mut out);
        assert!(pivots(&out).is_empty() && asks(&out).is_empty());
        // Until the peers stop serving the pivot's state: then the pivot moves to it.
        e.phase = super::super::StatePhase::Walk;
        for p in e.peers.peers.values_mut() {
            p.no_state = true;
        }
        out.clear();
        e.handle(530, Event::Tick, &mut st, &mut out);
        assert_eq!(pivots(&out).first().map(|h| h.number), Some(120));
        assert_eq!(e.repivots(), 1);
        for p in e.peers.peers.values_mut() {
            p.no_state = false;
        }
        // Far ahead: the pivot moves there (a re-pivot; verified data stays in the store).
        let far = chain.headers[250].clone();
        e.handle(600, Event::Target(far.hash), &mut st, &mut out);
        out.clear();
        e.handle(700, Event::Tick, &mut st, &mut out);
        let a = asks(&out);
        assert_eq!(a.len(), 1, "{out:?}");
        out.clear();
        let resp = Response::BlockHeaders(vec![far.raw.clone()]);
        e.handle(
            710,
            Event::Response {
                peer: a[0].0,
                id: a[0].1,
                resp,
            },
            &mut st,
            &mut out,
        );
        assert_eq!(pivots(&out).first().map(|h| h.number), Some(250));
        assert_eq!(e.repivots(), 2);
    }

    #[test]
    fn a_target_no_peer_has_stops_after_the_timeout_naming_it() {
        let unknown = B256::from([0xab; 32]);
        let (mut e, mut st) = engine(TargetSource::SyncTarget, Some(unknown));
        let mut out = Vec::new();
        e.handle(0, Event::PeerJoined(1), &mut st, &mut out);
        let mut failed = None;
        let mut t = 0;
        while t < 20_000 && failed.is_none() {
            t += 100;
            out.clear();
            e.handle(t, Event::Tick, &mut st, &mut out);
            for (peer, id, _) in asks(&out) {
                let resp = Response::BlockHeaders(vec![]);
                e.handle(t, Event::Response { peer, id, resp }, &mut st, &mut out);
            }
            failed = out.iter().find_map(|a| match a {
                Action::Failed(m) => Some(m.clone()),
                _ => None,
            });
            if failed.is_none() && t < 5_000 {
                assert!(e
                    .status()
                    .waiting_for
                    .unwrap()
                    .contains(&format!("{unknown}")));
            }
        }
        let m = failed.expect("stopped");
        assert!((5_000..6_000).contains(&t), "stopped at {t} ms");
        assert!(
            m.contains(&format!("{unknown}")) && m.contains("--peer"),
            "{m}"
        );
    }

    #[test]
    fn without_a_target_the_peers_vote_and_the_head_is_not_trusted() {
        let (mut e, mut st) = engine(TargetSource::PeerVote, None);
        let mut out = Vec::new();
        e.set_target(B256::from([1; 32]));
        for p in 1..=3 {
            e.handle(0, Event::PeerJoined(p), &mut st, &mut out);
        }
        e.handle(100, Event::Tick, &mut st, &mut out);
        assert!(asks(&out).is_empty());
        assert!(out.iter().any(|a| matches!(
            a,
            Action::Send {
                req: Request::Status,
                ..
            }
        )));
        let s = e.status();
        assert_eq!((s.target.as_str(), s.head_trusted), ("peer-vote", false));
        assert_eq!(s.waiting_for, None);
    }

    fn status_asks(acts: &[Action]) -> usize {
        acts.iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Send {
                        req: Request::Status,
                        ..
                    }
                )
            })
            .count()
    }

    #[test]
    fn the_peers_vote_waits_for_min_peers_or_the_end_of_the_wait() {
        let store = MemStore::default();
        let cfg = SyncConfig {
            pivot_agreement: 1,
            min_peers: 3,
            min_peers_wait_ms: 5_000,
            ..SyncConfig::default()
        };
        // Three peers join one after the other: no vote before the third.
        let mut e = Engine::new(cfg.clone(), 0, 1, &store);
        let mut st = MemStore::default();
        let mut out = Vec::new();
        e.handle(0, Event::Tick, &mut st, &mut out);
        for (p, at) in [(1, 100), (2, 1_000)] {
            e.handle(at, Event::PeerJoined(p), &mut st, &mut out);
            e.handle(at + 100, Event::Tick, &mut st, &mut out);
        }
        assert_eq!(status_asks(&out), 0);
        let w = e.status().waiting_for.expect("says what it waits for");
        assert!(
            w.contains("3 connected peers") && w.contains("2 so far"),
            "{w}"
        );
        assert!(
            w.contains("--min-peers") && w.contains("at most 4 s"),
            "{w}"
        );
        e.handle(2_000, Event::PeerJoined(3), &mut st, &mut out);
        e.handle(2_100, Event::Tick, &mut st, &mut out);
        assert_eq!(status_asks(&out), 3);
        assert_eq!(e.status().waiting_for, None);

        // One peer only: the vote starts when the wait ends, with it.
        let mut e = Engine::new(cfg, 0, 1, &store);
        let mut out = Vec::new();
        e.handle(0, Event::PeerJoined(1), &mut st, &mut out);
        e.handle(4_900, Event::Tick, &mut st, &mut out);
        assert_eq!(status_asks(&out), 0);
        e.handle(5_000, Event::Tick, &mut st, &mut out);
        assert_eq!(status_asks(&out), 1);
    }
}

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
//! header, node and range is kept.

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
    /// The last target whose header was fetched but kept out (within the re-pivot slack).
    pub(super) kept_out: Option<B256>,
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
    /// `repivot_slack` blocks ahead of it.
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
            return None;
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
        let journaled = self
            .journal
            .pivot
            .as_deref()
            .and_then(|p| hex::decode(p).ok())
            .and_then(|raw| Header::decode(&raw).ok());
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
        if pivot_hash == Some(wanted) || c.target.kept_out == Some(wanted) {
            c.target.since_ms = None;
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
                c.target.kept_out = Some(t);
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
            if !resumed && (had_pivot || !c.joined.is_empty()) {
                c.repivots += 1;
                c.joined.clear();
                c.pending_ranges.clear();
                c.chain_complete = false;
                c.reports.clear();
                self.journal.joined.clear();
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

//! Bodies and receipts: queued for the stored headers of a joined batch, fetched in
//! batches (`BlockBodies`, `Receipts`) and checked against their header's roots.

use alloy_primitives::{keccak256, B256};

use super::{Action, Engine, Pending};
use crate::eth::sync::store::SyncStore;
use crate::eth::sync::types::{Body, Receipts, Request};

impl Engine {
    pub(super) fn queue_bodies(&mut self, batch: u64, store: &dyn SyncStore) {
        let (lo, hi) = self.batch_range(batch);
        let pivot = self.pivot.as_ref().map(|p| p.number).unwrap_or(0);
        let mut bodies = Vec::new();
        let mut receipts = Vec::new();
        for n in lo..=hi {
            if n <= pivot && !self.cfg.bodies_before_pivot {
                continue;
            }
            let Some(h) = store.header(n) else { continue };
            let empty_body = h.transactions_root == catchup_eth::EMPTY_ROOT
                && h.ommers_hash == empty_list_hash()
                && h.withdrawals_root
                    .is_none_or(|w| w == catchup_eth::EMPTY_ROOT);
            if !empty_body && !self.stored_body(n, store) {
                bodies.push(n);
            }
            if self.cfg.fetch_receipts
                && h.receipts_root != catchup_eth::EMPTY_ROOT
                && !self.stored_receipts(n, store)
            {
                receipts.push(n);
            }
        }
        for c in bodies.chunks(self.cfg.body_batch.max(1)) {
            self.body_queue.push_back(c.to_vec());
        }
        for c in receipts.chunks(self.cfg.body_batch.max(1)) {
            self.receipt_queue.push_back(c.to_vec());
        }
    }

    fn stored_body(&self, n: u64, store: &dyn SyncStore) -> bool {
        store.has_body(n)
    }

    fn stored_receipts(&self, n: u64, store: &dyn SyncStore) -> bool {
        store.has_receipts(n)
    }

    /// Bodies and header batches of this shard are all stored.
    pub(super) fn bodies_done(&self) -> bool {
        self.head.is_some()
            && self.batches.all_stored()
            && self.body_queue.is_empty()
            && self.receipt_queue.is_empty()
            && self.bodies_inflight == 0
    }

    /// Bodies and receipts to fetch.
    pub(super) fn pump_blocks(
        &mut self,
        now: u64,
        store: &mut dyn SyncStore,
        out: &mut Vec<Action>,
    ) {
        while self.free_slots() > 0
            && !(self.body_queue.is_empty() && self.receipt_queue.is_empty())
        {
            // The highest block of the next batch: a peer whose head reaches it is preferred.
            let top = self
                .body_queue
                .front()
                .or(self.receipt_queue.front())
                .and_then(|nums| nums.iter().max().copied())
                .unwrap_or(0);
            let Some(peer) = self.peers.pick_for(now, &self.policy, &[], false, top) else {
                break;
            };
            let (req, what) = if let Some(nums) = self.body_queue.pop_front() {
                let hashes = nums
                    .iter()
                    .filter_map(|n| store.header(*n).map(|h| h.hash))
                    .collect();
                (Request::BlockBodies(hashes), Pending::Bodies(nums))
            } else {
                let nums = self.receipt_queue.pop_front().expect("checked non-empty");
                let hashes = nums
                    .iter()
                    .filter_map(|n| store.header(*n).map(|h| h.hash))
                    .collect();
                (Request::Receipts(hashes), Pending::Receipts(nums))
            };
            self.bodies_inflight += 1;
            self.send(peer, req, what, out);
        }
    }

    pub(super) fn on_bodies(
        &mut self,
        nums: Vec<u64>,
        bodies: Vec<Body>,
        store: &mut dyn SyncStore,
    ) -> Result<bool, ()> {
        if bodies.len() > nums.len() {
            return Err(());
        }
        for (n, body) in nums.iter().zip(bodies.iter()) {
            let h = store.header(*n).ok_or(())?;
            body.verify(&h).map_err(|_| ())?;
        }
        for (n, body) in nums.iter().zip(bodies.iter()) {
            if !store.has_body(*n) {
                store.put_body(*n, body);
                self.progress.bodies_downloaded += 1;
            } else {
                self.progress.refetched_items += 1;
            }
        }
        let got = bodies.len();
        if got < nums.len() {
            self.body_queue.push_back(nums[got..].to_vec());
        }
        Ok(got > 0)
    }

    pub(super) fn on_receipts(
        &mut self,
        nums: Vec<u64>,
        rs: Vec<Receipts>,
        store: &mut dyn SyncStore,
    ) -> Result<bool, ()> {
        if rs.len() > nums.len() {
            return Err(());
        }
        for (n, r) in nums.iter().zip(rs.iter()) {
            let h = store.header(*n).ok_or(())?;
            r.verify(&h).map_err(|_| ())?;
        }
        for (n, r) in nums.iter().zip(rs.iter()) {
            if !store.has_receipts(*n) {
                store.put_receipts(*n, r);
                self.progress.receipts_downloaded += 1;
            } else {
                self.progress.refetched_items += 1;
            }
        }
        let got = rs.len();
        if got < nums.len() {
            self.receipt_queue.push_back(nums[got..].to_vec());
        }
        Ok(got > 0)
    }
}

fn empty_list_hash() -> B256 {
    keccak256([0xc0u8])
}

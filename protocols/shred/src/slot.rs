//! Collect a slot's data shreds; a slot is complete when every data shred from 0 to the
//! one flagged last-in-slot is present. Coding shreds are kept per FEC set so missing data
//! shreds can be recovered.

use std::collections::BTreeMap;

use crate::fec;
use crate::layout::{Accept, MAX_DATA_SHREDS_PER_SLOT};
use crate::shred::Shred;
use crate::ShredError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// New data shred stored.
    Stored,
    /// New coding shred kept for recovery.
    StoredCoding,
    /// Already present (same slot, index and type).
    Duplicate,
}

#[derive(Debug, Default)]
pub struct SlotAssembler {
    slot: u64,
    data: BTreeMap<u32, Shred>,
    coding: BTreeMap<(u32, u32), Shred>,
    last_index: Option<u32>,
    accept: Accept,
}

impl SlotAssembler {
    pub fn new(slot: u64) -> Self {
        Self {
            slot,
            accept: Accept::CURRENT,
            ..Default::default()
        }
    }
    pub fn with_accept(slot: u64, accept: Accept) -> Self {
        Self {
            slot,
            accept,
            ..Default::default()
        }
    }
    pub fn slot(&self) -> u64 {
        self.slot
    }

    /// Insert an already verified shred of this slot.
    pub fn insert(&mut self, shred: Shred) -> Result<Insert, ShredError> {
        if shred.slot() != self.slot {
            return Err(ShredError::Header {
                slot: shred.slot(),
                index: shred.index(),
                reason: "shred of another slot",
            });
        }
        if shred.is_data() {
            if self.data.contains_key(&shred.index()) {
                return Ok(Insert::Duplicate);
            }
            if shred.last_in_slot() {
                match self.last_index {
                    Some(l) if l != shred.index() => {
                        return Err(ShredError::Header {
                            slot: self.slot,
                            index: shred.index(),
                            reason: "two different last-in-slot shreds",
                        })
                    }
                    _ => self.last_index = Some(shred.index()),
                }
            }
            if let Some(l) = self.last_index {
                if shred.index() > l {
                    return Err(ShredError::Header {
                        slot: self.slot,
                        index: shred.index(),
                        reason: "data shred beyond the last-in-slot index",
                    });
                }
            }
            self.data.insert(shred.index(), shred);
            Ok(Insert::Stored)
        } else {
            let key = (shred.fec_set_index(), shred.index());
            if self.coding.contains_key(&key) {
                return Ok(Insert::Duplicate);
            }
            self.coding.insert(key, shred);
            Ok(Insert::StoredCoding)
        }
    }

    pub fn has_data(&self, index: u32) -> bool {
        self.data.contains_key(&index)
    }
    pub fn last_index(&self) -> Option<u32> {
        self.last_index
    }
    pub fn num_data(&self) -> usize {
        self.data.len()
    }
    /// Highest data shred index present.
    pub fn highest_index(&self) -> Option<u32> {
        self.data.keys().next_back().copied()
    }
    pub fn is_complete(&self) -> bool {
        self.last_index
            .is_some_and(|l| self.data.len() as u64 == u64::from(l) + 1)
    }
    /// Data shred indices still missing (below the last index, or the highest seen + 1 when
    /// the last index is not known yet), at most `max`.
    pub fn missing(&self, max: usize) -> Vec<u32> {
        let end = match self.last_index {
            Some(l) => l + 1,
            None => self.highest_index().map_or(0, |h| h + 1),
        }
        .min(MAX_DATA_SHREDS_PER_SLOT);
        (0..end)
            .filter(|i| !self.data.contains_key(i))
            .take(max)
            .collect()
    }

    /// Try Reed-Solomon recovery on every FEC set that has coding shreds and misses data
    /// shreds. Returns how many data shreds were recovered.
    pub fn recover(&mut self) -> usize {
        let sets: Vec<u32> = self
            .coding
            .keys()
            .map(|k| k.0)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut recovered = 0;
        for fec in sets {
            let mut set: Vec<Shred> = self
                .coding
                .range((fec, 0)..=(fec, u32::MAX))
                .map(|(_, s)| s.clone())
                .collect();
            let Some(nd) = set
                .first()
                .and_then(|s| s.coding_header())
                .map(|h| u32::from(h.num_data_shreds))
            else {
                continue;
            };
            let have: Vec<Shred> = (fec..fec.saturating_add(nd))
                .filter_map(|i| self.data.get(&i).cloned())
                .collect();
            if have.len() as u32 == nd {
                continue;
            }
            set.extend(have);
            if let Ok(shreds) = fec::recover_data(&set, self.accept) {
                for s in shreds {
                    if self.insert(s).is_ok() {
                        recovered += 1;
                    }
                }
            }
        }
        recovered
    }

    /// Data shred payloads in index order.
    pub fn data_payloads(&self) -> impl Iterator<Item = &[u8]> {
        self.data.values().map(|s| s.payload())
    }
    pub fn get(&self, index: u32) -> Option<&Shred> {
        self.data.get(&index)
    }
}

//! The compact table an owner keeps per live account: a 64-bit fingerprint of the pubkey
//! and where the newest version is stored, 16 bytes a slot.
//!
//! # Layout
//!
//! - The storage file is a `u32` index into the shard's table of files (interned as their
//!   entries arrive) instead of the 20 bytes of (snapshot generation, slot, file id).
//! - The offset is stored divided by 8 (AppendVec entries are 8-aligned), as a `u32`:
//!   files up to 32 GiB, twice the parser's limit ([`MAX_APPEND_VEC_BYTES`]).
//! - Lamports, data length and the pubkey itself are not kept: the live sums are added as
//!   entries arrive and subtracted for each superseded version when it is read back for its
//!   LtHash retraction, and a pubkey is confirmed from its storage file.
//! - The table is open addressing with linear probing, a power-of-two number of slots,
//!   filled to at most 3/4 (so 21 to 43 bytes per account, whatever the growth phase).
//!
//! # Fingerprints and collisions
//!
//! The fingerprint is a keyed hash (a random key per process), so an archive cannot be
//! built to collide, but two pubkeys of a large shard may still share one by chance
//! (about 3 % for 10^9 pubkeys in one shard). Correctness does not depend on their
//! absence: while files stream, an entry whose fingerprint is already in the table is
//! kept aside ([`Pending`]) because the file of the entry in the table may not be written
//! yet. After the totals barrier every file is complete: the pubkey of the entry in the
//! table is read from its file, and the pending entry is either another version of the
//! same account (newest wins) or a different pubkey, which goes to an exact side table
//! keyed by the full pubkey. Lookups check the side table first, then the fingerprint
//! slot, whose pubkey they confirm from the file.
//!
//! [`MAX_APPEND_VEC_BYTES`]: catchup_solana::appendvec::MAX_APPEND_VEC_BYTES

use std::collections::HashMap;

use catchup_solana::appendvec::MAX_APPEND_VEC_BYTES;

// Offsets divided by 8 fit in a u32 for every file the parser accepts.
const _: () = assert!(MAX_APPEND_VEC_BYTES / 8 <= u32::MAX as u64);

/// Where a version is stored: the shard's file index and the offset divided by 8.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Loc {
    pub(super) file: u32,
    pub(super) off8: u32,
}

impl Loc {
    pub(super) fn offset(self) -> u64 {
        self.off8 as u64 * 8
    }
}

/// One slot: fingerprint (0: empty) and location.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    fp: u64,
    loc: Loc,
}

/// Bytes of one slot of [`KeyTable`].
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();
const _: () = assert!(SLOT_BYTES == 16);

/// Slots a table starts with once the first entry arrives.
const MIN_SLOTS: usize = 1024;

/// Fingerprint → location, open addressing (see the module docs).
#[derive(Default)]
pub(super) struct KeyTable {
    slots: Vec<Slot>,
    len: usize,
}

impl KeyTable {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Memory held by the slots.
    pub(super) fn bytes(&self) -> u64 {
        (self.slots.capacity() * SLOT_BYTES) as u64
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot holding `fp`, if any.
    pub(super) fn find(&self, fp: u64) -> Option<usize> {
        debug_assert_ne!(fp, 0);
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = fp as usize & mask;
        // Bounded: the table is never full (at most 3/4), so an empty slot ends the walk.
        loop {
            let s = &self.slots[i];
            if s.fp == fp {
                return Some(i);
            }
            if s.fp == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Insert `fp`, which must be absent.
    pub(super) fn insert_new(&mut self, fp: u64, loc: Loc) {
        debug_assert_ne!(fp, 0);
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        self.place(Slot { fp, loc });
        self.len += 1;
    }

    fn place(&mut self, slot: Slot) {
        let mask = self.mask();
        let mut i = slot.fp as usize & mask;
        while self.slots[i].fp != 0 {
            debug_assert_ne!(self.slots[i].fp, slot.fp);
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
    }

    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); n]);
        for s in old {
            if s.fp != 0 {
                self.place(s);
            }
        }
    }

    pub(super) fn loc(&self, slot: usize) -> Loc {
        self.slots[slot].loc
    }

    pub(super) fn loc_mut(&mut self, slot: usize) -> &mut Loc {
        &mut self.slots[slot].loc
    }

    pub(super) fn locs(&self) -> impl Iterator<Item = Loc> + '_ {
        self.slots.iter().filter(|s| s.fp != 0).map(|s| s.loc)
    }
}

/// Computes pubkey fingerprints (never 0).
pub(super) struct Fingerprinter {
    state: ahash::RandomState,
    /// Test only: a fingerprint with a handful of values, so most pubkeys collide.
    #[cfg(test)]
    weak: bool,
}

impl Fingerprinter {
    pub(super) fn new(_weak: bool) -> Self {
        Fingerprinter {
            state: ahash::RandomState::new(),
            #[cfg(test)]
            weak: _weak,
        }
    }

    pub(super) fn of(&self, key: &[u8; 32]) -> u64 {
        #[cfg(test)]
        if self.weak {
            return 1 + (key[31] % 3) as u64;
        }
        self.state.hash_one(key).max(1)
    }
}

/// An entry whose fingerprint was already in the table while files were streaming.
#[derive(Clone, Copy)]
pub(super) struct Pending {
    pub(super) key: [u8; 32],
    pub(super) loc: Loc,
    pub(super) lamports: u64,
    pub(super) data_len: u32,
}

/// Memory of a `HashMap` (hashbrown) holding `capacity` entries of `entry_bytes`: its
/// buckets (a power of two, at most 7/8 full) with one control byte each.
pub(super) fn hash_map_bytes(capacity: usize, entry_bytes: usize) -> u64 {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    (buckets * (entry_bytes + 1) + 16) as u64
}

/// Exact side table for pubkeys whose fingerprint another pubkey holds.
pub(super) type SideTable = HashMap<[u8; 32], Loc, ahash::RandomState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_finds_what_it_holds_and_stays_at_most_three_quarters_full() {
        let mut t = KeyTable::default();
        assert_eq!(t.find(5), None);
        for fp in 1..=10_000u64 {
            let fp = fp.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            assert_eq!(t.find(fp), None);
            t.insert_new(
                fp,
                Loc {
                    file: fp as u32,
                    off8: 7,
                },
            );
        }
        assert_eq!(t.len(), 10_000);
        assert!(t.len() * 4 <= t.slots.len() * 3);
        for fp in 1..=10_000u64 {
            let fp = fp.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let s = t.find(fp).unwrap();
            assert_eq!(t.loc(s).file, fp as u32);
        }
        assert_eq!(t.locs().count(), 10_000);
        assert_eq!(t.bytes(), (t.slots.len() * 16) as u64);
        let per = t.bytes() as f64 / t.len() as f64;
        assert!((21.0..=43.0).contains(&per), "{per}");
    }
}

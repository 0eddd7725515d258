//! The stake-weighted leader schedule of an epoch.
//!
//! Stakes are sorted by stake (descending), ties by key (descending), exact duplicates
//! dropped. A ChaCha20 stream seeded with the epoch (little-endian in the first 8 bytes
//! of a 32-byte seed) drives a stake-weighted index; every drawn leader holds
//! `repeat` consecutive slots. The draw is `rand` 0.8's `WeightedIndex<u64>` over that
//! stream, which is what the cluster's schedule is defined by.

use crate::Pubkey;
use rand::distributions::{Distribution, WeightedIndex};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Slots each drawn leader holds in a row.
pub const NUM_CONSECUTIVE_LEADER_SLOTS: u64 = 4;
/// Slots a schedule may span at most (mainnet epochs have 432 000).
pub const MAX_SCHEDULE_SLOTS: u64 = 1 << 21;

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum LeaderScheduleError {
    #[error("no staked node: a schedule needs a positive total stake")]
    NoStake,
    #[error("total stake overflows u64")]
    StakeOverflow,
    #[error("repeat must be positive")]
    ZeroRepeat,
    #[error("schedule of {slots} slots exceeds {MAX_SCHEDULE_SLOTS}")]
    TooManySlots { slots: u64 },
}

/// Sorted by stake then key, both descending, with exact duplicates removed.
pub fn sort_stakes(stakes: &mut Vec<(Pubkey, u64)>) {
    stakes.sort_unstable_by(|(left_key, left_stake), (right_key, right_stake)| {
        right_stake
            .cmp(left_stake)
            .then_with(|| right_key.cmp(left_key))
    });
    stakes.dedup();
}

/// The leader of each of `len` slots of `epoch`.
pub fn stake_weighted_slot_leaders(
    stakes: &[(Pubkey, u64)],
    epoch: u64,
    len: u64,
    repeat: u64,
) -> Result<Vec<Pubkey>, LeaderScheduleError> {
    if repeat == 0 {
        return Err(LeaderScheduleError::ZeroRepeat);
    }
    if len > MAX_SCHEDULE_SLOTS {
        return Err(LeaderScheduleError::TooManySlots { slots: len });
    }
    let mut stakes = stakes.to_vec();
    sort_stakes(&mut stakes);
    let mut total = 0u64;
    for (_, stake) in &stakes {
        total = total
            .checked_add(*stake)
            .ok_or(LeaderScheduleError::StakeOverflow)?;
    }
    if total == 0 {
        return Err(LeaderScheduleError::NoStake);
    }
    let (keys, weights): (Vec<Pubkey>, Vec<u64>) = stakes.into_iter().unzip();
    let index = WeightedIndex::new(weights).map_err(|_| LeaderScheduleError::NoStake)?;
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&epoch.to_le_bytes());
    let mut rng = ChaCha20Rng::from_seed(seed);
    let mut leaders = Vec::with_capacity(len as usize);
    let mut current = Pubkey::default();
    for slot in 0..len {
        if slot % repeat == 0 {
            current = keys[index.sample(&mut rng)];
        }
        leaders.push(current);
    }
    Ok(leaders)
}

/// One epoch's schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderSchedule {
    first_slot: u64,
    slot_leaders: Vec<Pubkey>,
}

impl LeaderSchedule {
    /// The schedule of `epoch`, whose first slot is `first_slot` and which spans
    /// `slots_in_epoch` slots, from the epoch's stakes (keyed by the node or vote key the
    /// caller wants leaders named by).
    pub fn new(
        stakes: &[(Pubkey, u64)],
        epoch: u64,
        first_slot: u64,
        slots_in_epoch: u64,
    ) -> Result<Self, LeaderScheduleError> {
        let slot_leaders = stake_weighted_slot_leaders(
            stakes,
            epoch,
            slots_in_epoch,
            NUM_CONSECUTIVE_LEADER_SLOTS,
        )?;
        Ok(LeaderSchedule {
            first_slot,
            slot_leaders,
        })
    }

    pub fn slot_leaders(&self) -> &[Pubkey] {
        &self.slot_leaders
    }

    /// The leader of `slot`, if the slot is in this epoch.
    pub fn leader(&self, slot: u64) -> Option<Pubkey> {
        let offset = slot.checked_sub(self.first_slot)?;
        self.slot_leaders
            .get(usize::try_from(offset).ok()?)
            .copied()
    }
}

//! Leader schedules against the reference's expected orders and hashes
//! (agave ledger/src/leader_schedule.rs and identity_keyed.rs tests, Sig
//! core/leader_schedule.zig).

mod common;

use catchup_gossip::leader_schedule::{
    sort_stakes, stake_weighted_slot_leaders, LeaderSchedule, LeaderScheduleError,
    NUM_CONSECUTIVE_LEADER_SLOTS,
};
use catchup_gossip::{Hash, Pubkey};
use rand::{RngCore, SeedableRng};

fn pubkey_from_u16(n: u16) -> Pubkey {
    let mut bytes = [0u8; 32];
    bytes[..2].copy_from_slice(&n.to_le_bytes());
    Pubkey(bytes)
}

/// (epoch, stakes, len, repeat, expected indices into the stake list)
type OrderCase = (u64, &'static [u64], u64, u64, &'static [usize]);

#[test]
fn exact_orders() {
    let cases: &[OrderCase] = &[
        (
            1,
            &[10, 20, 30],
            12,
            1,
            &[1, 1, 2, 1, 1, 0, 0, 1, 2, 1, 0, 1],
        ),
        (
            1,
            &[10, 20, 30],
            12,
            2,
            &[1, 1, 1, 1, 2, 2, 1, 1, 1, 1, 0, 0],
        ),
        (
            1,
            &[30, 10, 20],
            12,
            1,
            &[2, 2, 0, 2, 2, 1, 1, 2, 0, 2, 1, 2],
        ),
        (
            1,
            &[30, 10, 20],
            12,
            2,
            &[2, 2, 2, 2, 0, 0, 2, 2, 2, 2, 1, 1],
        ),
        (
            1,
            &[10, 20, 25, 30],
            12,
            1,
            &[2, 2, 3, 1, 2, 0, 1, 1, 3, 2, 1, 2],
        ),
        (
            1,
            &[10, 20, 25, 30, 35, 40, 100],
            15,
            1,
            &[4, 5, 6, 3, 4, 1, 2, 3, 6, 4, 2, 4, 5, 6, 6],
        ),
        (
            1,
            &[10, 20, 25, 30, 35, 40, 100, 1000],
            15,
            1,
            &[7, 7, 7, 7, 7, 4, 6, 7, 7, 7, 6, 7, 7, 7, 7],
        ),
        (
            1,
            &[10, 20, 25, 30, 35, 40, 100, 1000, 10_000],
            20,
            1,
            &[8, 8, 8, 8, 8, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 7],
        ),
        (
            1,
            &[10, 20, 25, 30, 35, 40, 100, 1000, 10_000],
            25,
            1,
            &[
                8, 8, 8, 8, 8, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 7, 8, 8, 8, 8, 8,
            ],
        ),
        (
            457468,
            &[10, 20, 30],
            12,
            1,
            &[2, 2, 0, 1, 0, 2, 1, 2, 1, 2, 2, 2],
        ),
        (
            457468,
            &[10, 20, 30],
            12,
            2,
            &[2, 2, 2, 2, 0, 0, 1, 1, 0, 0, 2, 2],
        ),
        (
            457469,
            &[10, 20, 30],
            12,
            1,
            &[1, 2, 2, 2, 2, 2, 2, 1, 0, 2, 2, 0],
        ),
        (
            457470,
            &[10, 20, 30],
            12,
            1,
            &[2, 1, 1, 1, 1, 1, 1, 1, 1, 2, 0, 2],
        ),
        (
            3466545,
            &[10, 20, 30],
            12,
            1,
            &[2, 2, 0, 0, 2, 1, 1, 1, 0, 0, 2, 2],
        ),
        (
            3466545,
            &[10, 20, 30],
            13,
            1,
            &[2, 2, 0, 0, 2, 1, 1, 1, 0, 0, 2, 2, 1],
        ),
        (
            3466545,
            &[10, 20, 30],
            14,
            1,
            &[2, 2, 0, 0, 2, 1, 1, 1, 0, 0, 2, 2, 1, 2],
        ),
        (
            3466545,
            &[10, 20, 30],
            14,
            2,
            &[2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 1, 1, 1, 1],
        ),
    ];
    for (epoch, stakes, len, repeat, expected) in cases {
        let keys: Vec<Pubkey> = (0..stakes.len() as u16).map(pubkey_from_u16).collect();
        let keyed: Vec<(Pubkey, u64)> = keys.iter().copied().zip(stakes.iter().copied()).collect();
        let leaders = stake_weighted_slot_leaders(&keyed, *epoch, *len, *repeat).unwrap();
        let order: Vec<usize> = leaders
            .iter()
            .map(|leader| keys.iter().position(|key| key == leader).unwrap())
            .collect();
        assert_eq!(
            &order, expected,
            "epoch {epoch} stakes {stakes:?} len {len} repeat {repeat}"
        );
    }
}

#[test]
fn long_schedules_hash_to_reference() {
    let cases = [
        (
            42u64,
            1_000u64,
            0u32,
            "4XU6LEarBUmBkAvXRsjeyLu3N8CcgrvbRFrNiJi2jECk",
        ),
        (
            42,
            10_000,
            0,
            "G2MGFXgdLATXWr1336i8PTcaUMc4GbJRMJdbxiarCttr",
        ),
        (
            42,
            10_000,
            1,
            "9xLLKyyqF5YrdwPSDbqh5oVamSF7cqPqQLxEyHTexEiP",
        ),
        (
            42,
            10_000,
            2,
            "AJ6NQi2p5SnRz9mqESqkW2PwVoT2vYy1fmKdaHxNFUAf",
        ),
        (
            42,
            10_000,
            3,
            "2oLjZggMwDTQhzdB4KN5VQisyeRw6MZbBBdjosNZK5xR",
        ),
        (
            346436,
            1_000,
            0,
            "59SnXMS4NzTSib8TNykiJgFQBeAVxUqsAvQm7JtkodPQ",
        ),
        (
            346436,
            1_000,
            1,
            "BEB2nC9MBALPbgwGKGfHu6V88QG7doScx65cAd6VjnRk",
        ),
        (
            346436,
            1_000,
            2,
            "3aLE5S6xLEU9yg5EZQH27qrC86aC2dG8KLh4NbcapXpy",
        ),
        (
            346436,
            1_000,
            3,
            "H2bw3Y2AjxJyK7smy1ZBB4LJ7MY3i9bPQM3YdAChAww2",
        ),
        (
            454357,
            10_000,
            0,
            "4BLanrC5t7vzNXx62javKtjCmCkd8yZfZpVrjT4eUpNQ",
        ),
        (
            454357,
            10_000,
            1,
            "FyvbdxpVchendERMnzH2KDceqydpXtJarrfFXoLQEXgQ",
        ),
        (
            454357,
            10_000,
            2,
            "7KwK44Y7V3GzJLN8aGZtM8EEfAYmRvaiDyKYV6jg4MQn",
        ),
        (
            454357,
            10_000,
            3,
            "E9XL5BLhCJ4Emyfs8jTUsQetfA8QZj78LcnN63dPp7jJ",
        ),
    ];
    let stakes_for = |pow: u32| -> Vec<(Pubkey, u64)> {
        (0..=u16::MAX)
            .map(|seed| (pubkey_from_u16(seed), (seed as u64).pow(pow)))
            .collect()
    };
    for (epoch, len, pow, expected) in cases {
        let leaders = stake_weighted_slot_leaders(&stakes_for(pow), epoch, len, 1).unwrap();
        let parts: Vec<&[u8]> = leaders.iter().map(|leader| &leader.0[..]).collect();
        let hash = Hash::of(&parts);
        assert_eq!(
            hash.to_string(),
            expected,
            "epoch {epoch} len {len} pow {pow}"
        );
    }
}

#[test]
fn repeats_hold_consecutive_slots() {
    let alice = pubkey_from_u16(7);
    let bob = pubkey_from_u16(9);
    let stakes = [(alice, 2), (bob, 1)];
    let single = stake_weighted_slot_leaders(&stakes, 0, 8, 1).unwrap();
    assert_eq!(
        single,
        [alice, alice, alice, bob, alice, alice, alice, alice]
    );
    let doubled = stake_weighted_slot_leaders(&stakes, 0, 8, 2).unwrap();
    assert_eq!(
        doubled,
        [alice, alice, alice, alice, alice, alice, bob, bob]
    );
}

#[test]
fn epoch_schedule_matches_sig_vector() {
    // 100 nodes whose keys and stakes come from ChaCha20 seeded with zeros.
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([0u8; 32]);
    let mut stakes = Vec::new();
    for _ in 0..100 {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let stake = rng.next_u64() / 1000;
        stakes.push((Pubkey(key), stake));
    }
    let schedule = LeaderSchedule::new(&stakes, 123, 1000, 321).unwrap();
    let expected: Vec<Pubkey> = common::vectors::LEADERS_321
        .iter()
        .map(|text| Pubkey::from_base58(text).unwrap())
        .collect();
    assert_eq!(schedule.slot_leaders(), expected);
    assert_eq!(schedule.leader(1000), Some(expected[0]));
    assert_eq!(schedule.leader(1320), Some(expected[320]));
    assert_eq!(schedule.leader(1321), None);
    assert_eq!(schedule.leader(999), None);
    assert_eq!(NUM_CONSECUTIVE_LEADER_SLOTS, 4);
}

#[test]
fn sorting_and_dedup() {
    let low = pubkey_from_u16(1);
    let high = pubkey_from_u16(2);
    let mut stakes = vec![(low, 1), (high, 2), (low, 1)];
    sort_stakes(&mut stakes);
    assert_eq!(stakes, [(high, 2), (low, 1)]);
    // Equal stakes: the larger key first.
    let mut stakes = vec![(pubkey_from_u16(0), 1), (pubkey_from_u16(0x100), 1)];
    sort_stakes(&mut stakes);
    assert_eq!(stakes[0].0, pubkey_from_u16(0x100));
}

#[test]
fn bad_stakes_are_typed_errors() {
    let a = pubkey_from_u16(1);
    let b = pubkey_from_u16(2);
    assert_eq!(
        stake_weighted_slot_leaders(&[], 0, 4, 1),
        Err(LeaderScheduleError::NoStake)
    );
    assert_eq!(
        stake_weighted_slot_leaders(&[(a, 0), (b, 0)], 0, 5, 1),
        Err(LeaderScheduleError::NoStake)
    );
    assert_eq!(
        stake_weighted_slot_leaders(&[(a, u64::MAX), (b, 1)], 0, 5, 1),
        Err(LeaderScheduleError::StakeOverflow)
    );
    assert_eq!(
        stake_weighted_slot_leaders(&[(a, 1)], 0, 5, 0),
        Err(LeaderScheduleError::ZeroRepeat)
    );
    assert!(matches!(
        stake_weighted_slot_leaders(&[(a, 1)], 0, u64::MAX, 1),
        Err(LeaderScheduleError::TooManySlots { .. })
    ));
}

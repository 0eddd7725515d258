//! The merkle accounts hash that snapshot archives were named by before SIMD-0220.
//!
//! Before the accounts lattice hash replaced it, a snapshot's name carried the *snapshot
//! hash*: the merkle accounts hash of the bank (or, for an incremental snapshot, of the
//! accounts stored after its base slot), mixed with the epoch accounts hash when the bank
//! held one:
//!
//! - an account's hash is blake3 over `lamports (u64 LE) ‖ rent_epoch (u64 LE) ‖ data ‖
//!   executable (1 byte) ‖ owner ‖ pubkey`;
//! - a full snapshot hashes its live accounts with lamports > 0; an incremental one hashes
//!   every account stored after its base slot, a zero-lamport account counting as 32 zero
//!   bytes;
//! - the hashes, sorted by pubkey, are folded 16 at a time with sha256 (each group's hashes
//!   concatenated) until one remains; at least one fold is made, and no account gives
//!   sha256 of nothing;
//! - with an epoch accounts hash `e`, the snapshot hash is sha256(accounts hash ‖ e).

use sha2::{Digest, Sha256};

/// Hashes folded into one at each level of the tree.
pub const MERKLE_FANOUT: usize = 16;

/// What an incremental snapshot counts for an account with zero lamports.
pub const ZERO_LAMPORT_ACCOUNT_HASH: [u8; 32] = [0u8; 32];

/// The pre-SIMD-0220 hash of one account (a zero-lamport account hashes to zeros).
pub fn account_hash(
    lamports: u64,
    rent_epoch: u64,
    data: &[u8],
    executable: bool,
    owner: &[u8; 32],
    pubkey: &[u8; 32],
) -> [u8; 32] {
    if lamports == 0 {
        return ZERO_LAMPORT_ACCOUNT_HASH;
    }
    let mut h = blake3::Hasher::new();
    h.update(&lamports.to_le_bytes());
    h.update(&rent_epoch.to_le_bytes());
    h.update(data);
    h.update(&[u8::from(executable)]);
    h.update(owner);
    h.update(pubkey);
    *h.finalize().as_bytes()
}

/// The merkle root of `hashes` (already in pubkey order), fanout [`MERKLE_FANOUT`].
pub fn merkle_root(hashes: &[[u8; 32]]) -> [u8; 32] {
    if hashes.is_empty() {
        return Sha256::digest([]).into();
    }
    let mut level: Vec<[u8; 32]> = fold(hashes);
    while level.len() > 1 {
        level = fold(&level);
    }
    level[0]
}

fn fold(hashes: &[[u8; 32]]) -> Vec<[u8; 32]> {
    hashes
        .chunks(MERKLE_FANOUT)
        .map(|group| {
            let mut h = Sha256::new();
            for x in group {
                h.update(x);
            }
            h.finalize().into()
        })
        .collect()
}

/// The snapshot hash from an accounts hash and the bank's epoch accounts hash, if any.
pub fn snapshot_hash(accounts_hash: &[u8; 32], epoch_accounts_hash: Option<&[u8; 32]>) -> [u8; 32] {
    match epoch_accounts_hash {
        None => *accounts_hash,
        Some(e) => {
            let mut h = Sha256::new();
            h.update(accounts_hash);
            h.update(e);
            h.finalize().into()
        }
    }
}

/// One account as the merkle hash sees it.
pub struct HashedAccount {
    pub pubkey: [u8; 32],
    pub hash: [u8; 32],
    pub lamports: u64,
}

/// The full accounts hash: live accounts with lamports, sorted by pubkey.
pub fn full_accounts_hash(mut accounts: Vec<HashedAccount>) -> [u8; 32] {
    accounts.retain(|a| a.lamports > 0);
    accounts.sort_unstable_by_key(|a| a.pubkey);
    let hashes: Vec<[u8; 32]> = accounts.iter().map(|a| a.hash).collect();
    merkle_root(&hashes)
}

/// The incremental accounts hash: every account stored after the base slot (newest
/// version), zero-lamport ones as [`ZERO_LAMPORT_ACCOUNT_HASH`], sorted by pubkey.
pub fn incremental_accounts_hash(mut accounts: Vec<HashedAccount>) -> [u8; 32] {
    accounts.sort_unstable_by_key(|a| a.pubkey);
    let hashes: Vec<[u8; 32]> = accounts
        .iter()
        .map(|a| {
            if a.lamports == 0 {
                ZERO_LAMPORT_ACCOUNT_HASH
            } else {
                a.hash
            }
        })
        .collect();
    merkle_root(&hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(parts: &[&[u8]]) -> [u8; 32] {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().into()
    }

    #[test]
    fn one_hash_is_folded_once() {
        let a = [7u8; 32];
        assert_eq!(merkle_root(&[a]), sha(&[&a]));
    }

    #[test]
    fn seventeen_hashes_make_two_levels() {
        let hs: Vec<[u8; 32]> = (0..17u8).map(|i| [i; 32]).collect();
        let flat: Vec<u8> = hs[..16].concat();
        let left = sha(&[&flat]);
        let right = sha(&[&hs[16]]);
        assert_eq!(merkle_root(&hs), sha(&[&left, &right]));
    }

    #[test]
    fn empty_set_and_zero_lamports() {
        assert_eq!(merkle_root(&[]), sha(&[]));
        assert_eq!(account_hash(0, 5, b"x", true, &[1; 32], &[2; 32]), [0; 32]);
        let full = full_accounts_hash(vec![HashedAccount {
            pubkey: [1; 32],
            hash: [0; 32],
            lamports: 0,
        }]);
        assert_eq!(full, sha(&[]));
        let inc = incremental_accounts_hash(vec![HashedAccount {
            pubkey: [1; 32],
            hash: [9; 32],
            lamports: 0,
        }]);
        assert_eq!(inc, sha(&[&[0u8; 32]]));
    }

    #[test]
    fn epoch_accounts_hash_is_mixed_in() {
        let a = [3u8; 32];
        assert_eq!(snapshot_hash(&a, None), a);
        assert_eq!(snapshot_hash(&a, Some(&[4; 32])), sha(&[&a, &[4u8; 32]]));
    }
}

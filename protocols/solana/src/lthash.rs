//! Accounts lattice hash (LtHash): 1024 wrapping u16 lanes; an account's element is the
//! blake3 XOF (2048 bytes) of `lamports (u64 LE) ‖ data ‖ executable (1 byte) ‖ owner ‖ pubkey`.
//! Zero-lamport accounts contribute the identity (nothing).

use crate::account_xof::{account_output, account_xof, Output};

/// Number of u16 lanes.
pub const LT_HASH_LANES: usize = 1024;
/// Serialized size in bytes.
pub const LT_HASH_BYTES: usize = LT_HASH_LANES * 2;

/// A lattice hash: element-wise wrapping sum of account hashes.
#[derive(Clone, PartialEq, Eq)]
pub struct LtHash(pub [u16; LT_HASH_LANES]);

impl std::fmt::Debug for LtHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LtHash({}…)", hex::encode(&self.to_bytes()[..16]))
    }
}

impl Default for LtHash {
    fn default() -> Self {
        Self::identity()
    }
}

impl LtHash {
    /// The identity element (all lanes zero).
    pub fn identity() -> Self {
        LtHash([0u16; LT_HASH_LANES])
    }

    /// The LtHash element of one account.
    pub fn of_account(
        lamports: u64,
        data: &[u8],
        executable: bool,
        owner: &[u8; 32],
        pubkey: &[u8; 32],
    ) -> Self {
        if lamports == 0 {
            return Self::identity();
        }
        let mut bytes = [0u8; LT_HASH_BYTES];
        account_xof(lamports, data, executable, owner, pubkey, &mut bytes);
        Self::from_bytes(&bytes)
    }

    /// Add one account's element in place (no intermediate [`LtHash`]): the hot path of
    /// verification. Zero-lamport accounts add nothing.
    pub fn mix_in_account(
        &mut self,
        lamports: u64,
        data: &[u8],
        executable: bool,
        owner: &[u8; 32],
        pubkey: &[u8; 32],
    ) {
        if lamports != 0 {
            let out = Output::Add(&mut self.0);
            account_output(lamports, data, executable, owner, pubkey, out);
        }
    }

    /// Remove one account's element in place (the inverse of [`LtHash::mix_in_account`]).
    pub fn mix_out_account(
        &mut self,
        lamports: u64,
        data: &[u8],
        executable: bool,
        owner: &[u8; 32],
        pubkey: &[u8; 32],
    ) {
        if lamports != 0 {
            let out = Output::Sub(&mut self.0);
            account_output(lamports, data, executable, owner, pubkey, out);
        }
    }

    /// Decode from 2048 little-endian bytes.
    pub fn from_bytes(bytes: &[u8; LT_HASH_BYTES]) -> Self {
        let mut lanes = [0u16; LT_HASH_LANES];
        for (lane, c) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = u16::from_le_bytes([c[0], c[1]]);
        }
        LtHash(lanes)
    }

    /// Encode as 2048 little-endian bytes.
    pub fn to_bytes(&self) -> [u8; LT_HASH_BYTES] {
        let mut out = [0u8; LT_HASH_BYTES];
        for (c, lane) in out.chunks_exact_mut(2).zip(self.0.iter()) {
            c.copy_from_slice(&lane.to_le_bytes());
        }
        out
    }

    /// Add another hash in (lane-wise wrapping add).
    pub fn mix_in(&mut self, other: &LtHash) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.wrapping_add(*b);
        }
    }

    /// Remove another hash (lane-wise wrapping sub).
    pub fn mix_out(&mut self, other: &LtHash) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.wrapping_sub(*b);
        }
    }

    /// 32-byte blake3 checksum of the serialized hash (how Agave prints an LtHash).
    pub fn checksum(&self) -> [u8; 32] {
        *blake3::hash(&self.to_bytes()).as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_lamports_is_identity() {
        assert_eq!(
            LtHash::of_account(0, b"x", false, &[1; 32], &[2; 32]),
            LtHash::identity()
        );
    }

    #[test]
    fn in_place_account_mixing_equals_elements() {
        let mut s = LtHash::identity();
        s.mix_in_account(5, b"abc", true, &[1; 32], &[2; 32]);
        s.mix_in_account(0, b"zero", false, &[1; 32], &[3; 32]);
        s.mix_in_account(9, &[7; 300], false, &[4; 32], &[5; 32]);
        let mut want = LtHash::of_account(5, b"abc", true, &[1; 32], &[2; 32]);
        want.mix_in(&LtHash::of_account(9, &[7; 300], false, &[4; 32], &[5; 32]));
        assert_eq!(s, want);
        s.mix_out_account(9, &[7; 300], false, &[4; 32], &[5; 32]);
        assert_eq!(s, LtHash::of_account(5, b"abc", true, &[1; 32], &[2; 32]));
    }

    #[test]
    fn mix_in_out_inverse() {
        let a = LtHash::of_account(5, b"abc", true, &[1; 32], &[2; 32]);
        let b = LtHash::of_account(7, b"", false, &[3; 32], &[4; 32]);
        let mut s = LtHash::identity();
        s.mix_in(&a);
        s.mix_in(&b);
        s.mix_out(&a);
        assert_eq!(s, b);
        assert_eq!(LtHash::from_bytes(&b.to_bytes()), b);
    }
}

//! Ownership maps: which shard owns a trie path, a 32-byte key, a byte/block range or a peer.
//!
//! Every function here is pure, total (any input, any `shards >= 1`, gives a shard in
//! `0..shards`; `shards == 0` is treated as 1) and balanced:
//!
//! * keys and trie paths are split into `shards` contiguous ranges of the 64-bit prefix
//!   space (`owner = prefix * shards >> 64`), so each shard owns a contiguous slice of
//!   key-space and a whole subtrie once the path is long enough; the prefix ranges differ in
//!   size by at most one;
//! * [`owner_of_key`] and [`owner_of_path`] agree: the owner of a key is the owner of the
//!   trie path made of the key's nibbles, so a leaf lives on the shard of its key;
//! * the sync engines' trie map ([`owner_of_trie_path`], [`owner_of_trie_key`]) cuts the
//!   key space at the first 3 nibbles or more ([`trie_prefix_nibbles`]): 4,096 subtries,
//!   each small enough for the snap rebuild to build in one step, and as finely as the
//!   shard count needs for every shard's share to be within 1.1 of every other's (1..=64
//!   shards), so each shard owns whole subtries below that depth and the top above it (at
//!   most 1 + 16 + 256 nodes) is shard 0's;
//! * ranges are dealt round-robin by chunk number, so consecutive chunks go to different
//!   shards and any `k * shards` consecutive chunks are spread exactly evenly;
//! * peers are hashed with a fixed (not per-process random) hash, so the map is the same
//!   in every run and on every shard.

use crate::ShardId;

fn nonzero(shards: usize) -> u128 {
    shards.max(1) as u128
}

/// Map a 64-bit prefix onto `0..shards` by contiguous ranges.
#[inline]
fn scale(prefix: u64, shards: usize) -> ShardId {
    ShardId(((prefix as u128 * nonzero(shards)) >> 64) as usize)
}

/// Owner of a trie path given as nibbles (each byte one nibble; only its low 4 bits count).
/// The first 16 nibbles form a 64-bit prefix (missing nibbles count as zero), so the empty
/// path (the root) belongs to shard 0.
pub fn owner_of_path(nibbles: &[u8], shards: usize) -> ShardId {
    let mut prefix: u64 = 0;
    for i in 0..16 {
        let n = nibbles.get(i).map_or(0, |b| (b & 0x0f) as u64);
        prefix = (prefix << 4) | n;
    }
    scale(prefix, shards)
}

/// Owner of a 32-byte key (account hash, pubkey, code hash) by its leading 64 bits.
pub fn owner_of_key(key: &[u8; 32], shards: usize) -> ShardId {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key[..8]);
    scale(u64::from_be_bytes(first), shards)
}

/// Fewest leading nibbles in the trie map: the snap rebuild builds one subtrie below this
/// depth per step, so its memory is that of 1/4,096 of the accounts, whatever the number
/// of shards.
pub const MIN_TRIE_PREFIX_NIBBLES: usize = 3;

/// How many leading nibbles of a trie path decide its owner among `shards` shards (see
/// [`owner_of_trie_path`]): [`MIN_TRIE_PREFIX_NIBBLES`], or more where that does not give
/// every shard at least 16 prefixes (over 256 shards), so that the shares differ by at
/// most one prefix in 16.
pub fn trie_prefix_nibbles(shards: usize) -> usize {
    let s = shards.max(1) as u64;
    let mut k = MIN_TRIE_PREFIX_NIBBLES as u32;
    loop {
        let units = 16u64.pow(k);
        if units % s == 0 || units / s >= 16 || k >= 15 {
            return k as usize;
        }
        k += 1;
    }
}

/// Owner of a node of a Merkle-Patricia trie at `path` (nibbles, one per byte): the owner
/// of its first [`trie_prefix_nibbles`] nibbles, so the subtree under such a prefix
/// lives on one shard. The paths shorter than that (the top of the trie: the root, and at
/// most 16 + 256 nodes below it) are shard 0's.
pub fn owner_of_trie_path(path: &[u8], shards: usize) -> ShardId {
    let k = trie_prefix_nibbles(shards);
    if path.len() < k {
        return ShardId(0);
    }
    owner_of_path(&path[..k], shards)
}

/// Owner of the trie leaf of a 32-byte key (and of what hangs off it: an account's storage
/// trie and code): [`owner_of_trie_path`] of the key's nibbles.
pub fn owner_of_trie_key(key: &[u8; 32], shards: usize) -> ShardId {
    owner_of_trie_prefix(trie_prefix_of_key(key, shards), shards)
}

/// The first [`trie_prefix_nibbles`] nibbles of a key as a number.
pub fn trie_prefix_of_key(key: &[u8; 32], shards: usize) -> u64 {
    let k = trie_prefix_nibbles(shards);
    let mut top = [0u8; 8];
    top.copy_from_slice(&key[..8]);
    u64::from_be_bytes(top) >> (64 - 4 * k)
}

/// Owner of the trie prefix `prefix` (a number of [`trie_prefix_nibbles`] nibbles).
pub fn owner_of_trie_prefix(prefix: u64, shards: usize) -> ShardId {
    let k = trie_prefix_nibbles(shards);
    scale(prefix << (64 - 4 * k), shards)
}

/// The trie prefixes (numbers of [`trie_prefix_nibbles`] nibbles) `shard` owns: one
/// contiguous range, `None` when it owns none (never for up to 16^k shards).
pub fn trie_prefixes_of(shard: usize, shards: usize) -> Option<(u64, u64)> {
    let k = trie_prefix_nibbles(shards);
    let units = 1u64 << (4 * k);
    let s = shards.max(1) as u128;
    // The smallest prefix p with owner(p) >= j is ceil(j * units / s).
    let first = |j: u128| (j * units as u128).div_ceil(s) as u64;
    let (lo, hi) = (first(shard as u128), first(shard as u128 + 1));
    (shard < shards.max(1) && hi > lo).then(|| (lo, hi - 1))
}

/// Owner of the chunk holding `index` (a byte offset or block number) when the space is cut
/// into chunks of `chunk_len` (0 is treated as 1): chunk `c` belongs to shard `c % shards`.
pub fn owner_of_range(index: u64, chunk_len: u64, shards: usize) -> ShardId {
    let chunk = index / chunk_len.max(1);
    ShardId((chunk % shards.max(1) as u64) as usize)
}

/// Owner of a peer, by a fixed 64-bit hash of its id (node id, pubkey, or address bytes).
pub fn owner_of_peer(peer_id: &[u8], shards: usize) -> ShardId {
    scale(stable_hash64(peer_id), shards)
}

/// FNV-1a over the bytes followed by the splitmix64 finaliser: stable across runs and
/// platforms, well spread in the high bits.
pub fn stable_hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= bytes.len() as u64;
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The nibbles of a byte string, high nibble first.
pub fn to_nibbles(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().flat_map(|b| [b >> 4, b & 0x0f]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn root_path_is_shard_zero_and_edges() {
        assert_eq!(owner_of_path(&[], 7), ShardId(0));
        assert_eq!(owner_of_path(&[0xf; 16], 7), ShardId(6));
        assert_eq!(owner_of_key(&[0xff; 32], 64), ShardId(63));
        assert_eq!(owner_of_key(&[0; 32], 64), ShardId(0));
        assert_eq!(owner_of_range(5, 0, 0), ShardId(0));
        assert_eq!(owner_of_peer(b"x", 0), ShardId(0));
        // 2 shards split the key space at the top bit.
        let mut k = [0u8; 32];
        k[0] = 0x80;
        assert_eq!(owner_of_key(&k, 2), ShardId(1));
        k[0] = 0x7f;
        assert_eq!(owner_of_key(&k, 2), ShardId(0));
    }

    #[test]
    fn prefix_ranges_are_balanced_for_every_shard_count() {
        // Count, per shard, how many of the 65536 two-byte prefixes it owns: the counts
        // differ by at most one.
        for shards in 1..=64usize {
            let mut counts = vec![0u32; shards];
            for p in 0..=u16::MAX {
                let mut key = [0u8; 32];
                key[..2].copy_from_slice(&p.to_be_bytes());
                counts[owner_of_key(&key, shards).0] += 1;
            }
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(max - min <= 1, "shards={shards} counts={counts:?}");
        }
    }

    #[test]
    fn ranges_are_round_robin_and_exactly_even() {
        for shards in 1..=64usize {
            let mut counts = vec![0u32; shards];
            for chunk in 0..(shards as u64 * 10) {
                counts[owner_of_range(chunk * 4096 + 17, 4096, shards).0] += 1;
            }
            assert!(counts.iter().all(|&c| c == 10), "shards={shards}");
        }
    }

    #[test]
    fn peers_are_spread() {
        // 64k synthetic peer ids over 1..=64 shards: every shard within 25% of the mean.
        for shards in 1..=64usize {
            let mut counts = vec![0u32; shards];
            let n = 65_536u32;
            for i in 0..n {
                counts[owner_of_peer(&i.to_le_bytes(), shards).0] += 1;
            }
            let mean = n as f64 / shards as f64;
            for &c in &counts {
                assert!(
                    (c as f64 - mean).abs() <= mean * 0.25,
                    "shards={shards} {counts:?}"
                );
            }
        }
    }

    #[test]
    fn trie_prefixes_are_balanced_and_partition_the_key_space_for_1_to_64_shards() {
        for shards in 1..=64usize {
            let k = trie_prefix_nibbles(shards);
            assert!((1..=3).contains(&k), "shards={shards} k={k}");
            let units = 1u64 << (4 * k);
            let mut counts = vec![0u64; shards];
            for p in 0..units {
                counts[owner_of_trie_prefix(p, shards).0] += 1;
            }
            let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
            assert!(min >= 1, "shards={shards}: a shard owns nothing");
            assert!(
                max as f64 / min as f64 <= 1.1,
                "shards={shards} k={k} counts={counts:?}"
            );
            // The ranges each shard is told it owns are exactly the prefixes it owns, in
            // order and without gaps.
            let mut next = 0u64;
            for (s, &c) in counts.iter().enumerate() {
                let (lo, hi) = trie_prefixes_of(s, shards).expect("every shard owns prefixes");
                assert_eq!((lo, hi - lo + 1), (next, c), "shards={shards} shard={s}");
                next = hi + 1;
            }
            assert_eq!(next, units);
            assert_eq!(trie_prefixes_of(shards, shards), None);
        }
        // Up to 256 shards the map has 4,096 prefixes; where 16 is a multiple of the
        // shard count, every shard owns whole first nibbles.
        for shards in 1..=256 {
            assert_eq!(trie_prefix_nibbles(shards), MIN_TRIE_PREFIX_NIBBLES);
        }
        for shards in [1, 2, 4, 8, 16] {
            let per = 16 / shards as u64;
            for s in 0..shards {
                assert_eq!(
                    trie_prefixes_of(s, shards),
                    Some((s as u64 * per * 256, (s as u64 + 1) * per * 256 - 1))
                );
            }
        }
    }

    proptest! {
        #[test]
        fn every_trie_key_has_exactly_one_owner(
            shards in 1usize..=64,
            key in proptest::array::uniform32(any::<u8>()),
            depth in 0usize..=64,
        ) {
            let owner = owner_of_trie_key(&key, shards);
            let p = trie_prefix_of_key(&key, shards);
            let holders: Vec<usize> = (0..shards)
                .filter(|&s| trie_prefixes_of(s, shards).is_some_and(|(lo, hi)| lo <= p && p <= hi))
                .collect();
            prop_assert_eq!(holders, vec![owner.0]);
            // Every node on the key's path at or below the prefix depth is the key's owner's;
            // above it, shard 0's.
            let nibbles = to_nibbles(&key);
            let k = trie_prefix_nibbles(shards);
            let path_owner = owner_of_trie_path(&nibbles[..depth], shards);
            if depth >= k {
                prop_assert_eq!(path_owner, owner);
            } else {
                prop_assert_eq!(path_owner, ShardId(0));
            }
        }
    }

    proptest! {
        #[test]
        fn every_map_is_total(
            shards in 1usize..=64,
            key in proptest::array::uniform32(any::<u8>()),
            path in proptest::collection::vec(any::<u8>(), 0..70),
            index in any::<u64>(),
            chunk_len in any::<u64>(),
            peer in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            prop_assert!(owner_of_key(&key, shards).0 < shards);
            prop_assert!(owner_of_path(&path, shards).0 < shards);
            prop_assert!(owner_of_range(index, chunk_len, shards).0 < shards);
            prop_assert!(owner_of_peer(&peer, shards).0 < shards);
        }

        #[test]
        fn key_and_its_path_agree(
            shards in 1usize..=64,
            key in proptest::array::uniform32(any::<u8>()),
            extra in 0usize..48,
        ) {
            let nibbles = to_nibbles(&key);
            prop_assert_eq!(owner_of_key(&key, shards), owner_of_path(&nibbles, shards));
            // Any path below a 16-nibble prefix stays with that prefix's owner.
            let deeper = &nibbles[..16 + extra.min(48)];
            prop_assert_eq!(owner_of_path(&nibbles[..16], shards), owner_of_path(deeper, shards));
        }

        #[test]
        fn key_owner_is_monotone_in_key(
            shards in 1usize..=64,
            a in proptest::array::uniform32(any::<u8>()),
            b in proptest::array::uniform32(any::<u8>()),
        ) {
            // Contiguous slices: a <= b implies owner(a) <= owner(b).
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(owner_of_key(&lo, shards) <= owner_of_key(&hi, shards));
        }

        #[test]
        fn same_chunk_same_owner(
            shards in 1usize..=64,
            chunk in 0u64..1_000_000,
            chunk_len in 1u64..1_000_000,
            off_a in any::<u64>(),
            off_b in any::<u64>(),
        ) {
            let a = chunk * chunk_len + off_a % chunk_len;
            let b = chunk * chunk_len + off_b % chunk_len;
            prop_assert_eq!(owner_of_range(a, chunk_len, shards), owner_of_range(b, chunk_len, shards));
        }
    }
}

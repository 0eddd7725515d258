//! Keccak-256 of several inputs at once: four independent inputs in the four 64-bit
//! lanes of AVX2 registers, one Keccak-f[1600] permutation for all four (FIPS 202 with the
//! original Keccak padding, as Ethereum uses). Verifying a batch of headers or trie nodes
//! hashes items that do not depend on each other, and one core then hashes about twice as
//! fast as one input at a time. Without AVX2 each input is hashed alone.

use alloy_primitives::{keccak256, B256};

/// The keccak256 of each of `items`, in order, into `out` (cleared first).
///
/// Four inputs share a permutation for as many blocks as the longest of them has, so
/// the inputs are grouped by their count of 136-byte blocks first (a trie node answer
/// mixes 4-block branches with 1-block leaves).
pub fn keccak256_each<T: AsRef<[u8]>>(items: &[T], out: &mut Vec<B256>) {
    out.clear();
    #[cfg(target_arch = "x86_64")]
    if avx2() && items.len() >= 2 {
        let blocks = |i: u32| items[i as usize].as_ref().len() / 136;
        let mut order: Vec<u32> = (0..items.len() as u32).collect();
        if order.windows(2).any(|w| blocks(w[0]) != blocks(w[1])) {
            order.sort_by_key(|&i| blocks(i));
        }
        out.resize(items.len(), B256::ZERO);
        let mut fours = order.chunks_exact(4);
        for c in &mut fours {
            let m = [0, 1, 2, 3].map(|k| items[c[k] as usize].as_ref());
            // SAFETY: the CPU has AVX2 (checked above).
            let h = unsafe { x4::keccak256_x4(m) };
            for (&i, h) in c.iter().zip(h) {
                out[i as usize] = B256::from(h);
            }
        }
        // Two or three left share one call too (an empty input in the spare lanes costs
        // no more permutations than the longest input); one alone is hashed alone.
        match fours.remainder() {
            [] => {}
            [i] => out[*i as usize] = keccak256(items[*i as usize].as_ref()),
            rest => {
                let at = |k: usize| rest.get(k).map_or(&[][..], |&i| items[i as usize].as_ref());
                // SAFETY: the CPU has AVX2 (checked above).
                let h = unsafe { x4::keccak256_x4([at(0), at(1), at(2), at(3)]) };
                for (&i, h) in rest.iter().zip(h) {
                    out[i as usize] = B256::from(h);
                }
            }
        }
        return;
    }
    out.extend(items.iter().map(keccak256));
}

/// How [`keccak256_each`] runs on this CPU: `avx2-4-lane` or `one-at-a-time`.
pub fn path_name() -> &'static str {
    if avx2() {
        "avx2-4-lane"
    } else {
        "one-at-a-time"
    }
}

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod x4 {
    use std::arch::x86_64::*;

    /// Bytes absorbed per permutation (1600 bits less twice the 256-bit output).
    const RATE: usize = 136;

    /// Round constants of Keccak-f[1600] (ι).
    const RC: [u64; 24] = [
        0x0000000000000001,
        0x0000000000008082,
        0x800000000000808A,
        0x8000000080008000,
        0x000000000000808B,
        0x0000000080000001,
        0x8000000080008081,
        0x8000000000008009,
        0x000000000000008A,
        0x0000000000000088,
        0x0000000080008009,
        0x000000008000000A,
        0x000000008000808B,
        0x800000000000008B,
        0x8000000000008089,
        0x8000000000008003,
        0x8000000000008002,
        0x8000000000000080,
        0x000000000000800A,
        0x800000008000000A,
        0x8000000080008081,
        0x8000000000008080,
        0x0000000080000001,
        0x8000000080008008,
    ];

    macro_rules! xor {
        ($a:expr, $b:expr) => {
            _mm256_xor_si256($a, $b)
        };
    }

    /// `!a & b`, lane by lane.
    macro_rules! andnot {
        ($a:expr, $b:expr) => {
            _mm256_andnot_si256($a, $b)
        };
    }

    macro_rules! rol {
        ($v:expr, $n:literal) => {{
            let v = $v;
            _mm256_or_si256(
                _mm256_slli_epi64::<$n>(v),
                _mm256_srli_epi64::<{ 64 - $n }>(v),
            )
        }};
    }

    /// Keccak-f[1600] on four states at once: lane `j` of `a[x + 5y]` is state `j`'s
    /// word at (x, y).
    #[target_feature(enable = "avx2")]
    fn permute(a: &mut [__m256i; 25]) {
        for rc in RC {
            // θ
            let c0 = xor!(xor!(xor!(a[0], a[5]), xor!(a[10], a[15])), a[20]);
            let c1 = xor!(xor!(xor!(a[1], a[6]), xor!(a[11], a[16])), a[21]);
            let c2 = xor!(xor!(xor!(a[2], a[7]), xor!(a[12], a[17])), a[22]);
            let c3 = xor!(xor!(xor!(a[3], a[8]), xor!(a[13], a[18])), a[23]);
            let c4 = xor!(xor!(xor!(a[4], a[9]), xor!(a[14], a[19])), a[24]);
            let d0 = xor!(c4, rol!(c1, 1));
            let d1 = xor!(c0, rol!(c2, 1));
            let d2 = xor!(c1, rol!(c3, 1));
            let d3 = xor!(c2, rol!(c4, 1));
            let d4 = xor!(c3, rol!(c0, 1));
            // ρ and π, with θ's column sums applied on the way
            let b0 = xor!(a[0], d0);
            let b10 = rol!(xor!(a[1], d1), 1);
            let b20 = rol!(xor!(a[2], d2), 62);
            let b5 = rol!(xor!(a[3], d3), 28);
            let b15 = rol!(xor!(a[4], d4), 27);
            let b16 = rol!(xor!(a[5], d0), 36);
            let b1 = rol!(xor!(a[6], d1), 44);
            let b11 = rol!(xor!(a[7], d2), 6);
            let b21 = rol!(xor!(a[8], d3), 55);
            let b6 = rol!(xor!(a[9], d4), 20);
            let b7 = rol!(xor!(a[10], d0), 3);
            let b17 = rol!(xor!(a[11], d1), 10);
            let b2 = rol!(xor!(a[12], d2), 43);
            let b12 = rol!(xor!(a[13], d3), 25);
            let b22 = rol!(xor!(a[14], d4), 39);
            let b23 = rol!(xor!(a[15], d0), 41);
            let b8 = rol!(xor!(a[16], d1), 45);
            let b18 = rol!(xor!(a[17], d2), 15);
            let b3 = rol!(xor!(a[18], d3), 21);
            let b13 = rol!(xor!(a[19], d4), 8);
            let b14 = rol!(xor!(a[20], d0), 18);
            let b24 = rol!(xor!(a[21], d1), 2);
            let b9 = rol!(xor!(a[22], d2), 61);
            let b19 = rol!(xor!(a[23], d3), 56);
            let b4 = rol!(xor!(a[24], d4), 14);
            // χ
            a[0] = xor!(b0, andnot!(b1, b2));
            a[1] = xor!(b1, andnot!(b2, b3));
            a[2] = xor!(b2, andnot!(b3, b4));
            a[3] = xor!(b3, andnot!(b4, b0));
            a[4] = xor!(b4, andnot!(b0, b1));
            a[5] = xor!(b5, andnot!(b6, b7));
            a[6] = xor!(b6, andnot!(b7, b8));
            a[7] = xor!(b7, andnot!(b8, b9));
            a[8] = xor!(b8, andnot!(b9, b5));
            a[9] = xor!(b9, andnot!(b5, b6));
            a[10] = xor!(b10, andnot!(b11, b12));
            a[11] = xor!(b11, andnot!(b12, b13));
            a[12] = xor!(b12, andnot!(b13, b14));
            a[13] = xor!(b13, andnot!(b14, b10));
            a[14] = xor!(b14, andnot!(b10, b11));
            a[15] = xor!(b15, andnot!(b16, b17));
            a[16] = xor!(b16, andnot!(b17, b18));
            a[17] = xor!(b17, andnot!(b18, b19));
            a[18] = xor!(b18, andnot!(b19, b15));
            a[19] = xor!(b19, andnot!(b15, b16));
            a[20] = xor!(b20, andnot!(b21, b22));
            a[21] = xor!(b21, andnot!(b22, b23));
            a[22] = xor!(b22, andnot!(b23, b24));
            a[23] = xor!(b23, andnot!(b24, b20));
            a[24] = xor!(b24, andnot!(b20, b21));
            // ι
            a[0] = xor!(a[0], _mm256_set1_epi64x(rc as i64));
        }
    }

    /// The keccak256 of four inputs of any lengths. An input with fewer blocks than
    /// the longest one takes its output after its own last block; the lane's further
    /// permutations are not used.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn keccak256_x4(m: [&[u8]; 4]) -> [[u8; 32]; 4] {
        let blocks = m.map(|x| x.len() / RATE + 1);
        let most = blocks.iter().copied().max().unwrap_or(1);
        // Each input's last block, padded: 0x01 after the message, 0x80 in the last byte.
        let mut last = [[0u8; RATE]; 4];
        for j in 0..4 {
            let rest = &m[j][(blocks[j] - 1) * RATE..];
            last[j][..rest.len()].copy_from_slice(rest);
            last[j][rest.len()] ^= 0x01;
            last[j][RATE - 1] ^= 0x80;
        }
        let mut a = [_mm256_setzero_si256(); 25];
        let mut out = [[0u8; 32]; 4];
        for b in 0..most {
            let block = |j: usize| -> &[u8] {
                if b + 1 < blocks[j] {
                    &m[j][b * RATE..(b + 1) * RATE]
                } else if b + 1 == blocks[j] {
                    &last[j]
                } else {
                    &[]
                }
            };
            let bl = [block(0), block(1), block(2), block(3)];
            let word = |j: usize, w: usize| -> i64 {
                bl[j].get(8 * w..8 * w + 8).map_or(0, |s| {
                    u64::from_le_bytes(s.try_into().expect("8 bytes")) as i64
                })
            };
            for (w, lane) in a.iter_mut().enumerate().take(RATE / 8) {
                let v = _mm256_set_epi64x(word(3, w), word(2, w), word(1, w), word(0, w));
                *lane = xor!(*lane, v);
            }
            permute(&mut a);
            for j in 0..4 {
                if b + 1 == blocks[j] {
                    for (w, lane) in a.iter().take(4).enumerate() {
                        let mut words = [0u64; 4];
                        // SAFETY: `words` is 32 bytes; an unaligned store.
                        unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), *lane) };
                        out[j][8 * w..8 * w + 8].copy_from_slice(&words[j].to_le_bytes());
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_digests() {
        // keccak256("") and keccak256("abc"), from the Keccak team's test vectors.
        let items: Vec<&[u8]> = vec![b"", b"abc", b"", b"abc", b"abc"];
        let mut out = Vec::new();
        keccak256_each(&items, &mut out);
        let empty = "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470";
        let abc = "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45";
        for (h, want) in out.iter().zip([empty, abc, empty, abc, abc]) {
            assert_eq!(hex::encode(h), want);
        }
    }

    proptest! {
        /// Any lengths, across block boundaries (136 bytes) and unequal in one call.
        #[test]
        fn each_digest_is_keccak256_of_its_item(
            items in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..700), 0..11)
        ) {
            let mut out = Vec::new();
            keccak256_each(&items, &mut out);
            prop_assert_eq!(out.len(), items.len());
            for (i, h) in items.iter().zip(&out) {
                prop_assert_eq!(*h, keccak256(i));
            }
        }

        #[test]
        fn lengths_at_the_padding_edges(base in 0usize..6, extra in 0usize..3, fill in any::<u8>()) {
            // 135, 136 and 137 bytes past each block: the pad shares the last byte, or
            // takes a block of its own.
            let lens: Vec<usize> = (0..4).map(|j| base * 136 + 135 + (j + extra) % 3).collect();
            let items: Vec<Vec<u8>> = lens.iter().map(|n| vec![fill; *n]).collect();
            let mut out = Vec::new();
            keccak256_each(&items, &mut out);
            for (i, h) in items.iter().zip(&out) {
                prop_assert_eq!(*h, keccak256(i));
            }
        }
    }
}

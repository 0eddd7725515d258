//! The 2048-byte blake3 XOF of an account, eight output blocks at a time.
//!
//! An LtHash element is 32 blake3 output blocks of one root node: the same chaining value,
//! message block and flags, with the output counter 0..32. The blake3 crate computes them
//! eight at a time only with AVX-512; elsewhere it compresses one block per call (SSE4.1 on
//! an AVX2 machine). The 32 compressions are independent, so here they run as 8 lanes of
//! AVX2 vectors, one lane per output block, with the message words broadcast.
//!
//! The root node of an input of one chunk (at most 1,024 bytes: every account whose data
//! is at most 951 bytes) is found by compressing the blocks before the last one. For a
//! longer input the root is the parent of two subtrees, whose chaining values the crate
//! computes (its hazmat API, with its many-chunk SIMD path). CPUs without AVX2 use the
//! crate for everything. Tests compare the output with the crate's for every length
//! around the block and chunk boundaries, and for inputs of up to 40 chunks.

// Only the x86-64 path builds the root node itself.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

/// Bytes of one account's XOF output (the LtHash element).
pub const XOF_BYTES: usize = 2048;

const BLOCK_LEN: usize = 64;
const CHUNK_LEN: usize = 1024;
/// Bytes of an account's hash input besides its data: lamports, executable, owner, pubkey.
const FIXED_INPUT: usize = 8 + 1 + 32 + 32;
/// Largest account data hashed on the AVX2 path (the input still fits one chunk).
pub const MAX_DATA_ONE_CHUNK: usize = CHUNK_LEN - FIXED_INPUT;

const IV: [u32; 8] = [
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
];
const CHUNK_START: u32 = 1;
const CHUNK_END: u32 = 2;
const PARENT: u32 = 4;
const ROOT: u32 = 8;
const PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];

/// Which message word each of the 7 rounds reads at each position.
const SCHEDULE: [[usize; 16]; 7] = {
    let mut s = [[0usize; 16]; 7];
    let mut i = 0;
    while i < 16 {
        s[0][i] = i;
        i += 1;
    }
    let mut r = 1;
    while r < 7 {
        let mut i = 0;
        while i < 16 {
            s[r][i] = s[r - 1][PERMUTATION[i]];
            i += 1;
        }
        r += 1;
    }
    s
};

/// Where the 2048 output bytes go: written out, or added to (subtracted from) the 1024
/// little-endian u16 lanes of an LtHash in place.
pub enum Output<'a> {
    Bytes(&'a mut [u8; XOF_BYTES]),
    Add(&'a mut [u16; XOF_BYTES / 2]),
    Sub(&'a mut [u16; XOF_BYTES / 2]),
}

/// The blake3 XOF of `lamports (u64 LE) ‖ data ‖ executable ‖ owner ‖ pubkey`.
pub fn account_xof(
    lamports: u64,
    data: &[u8],
    executable: bool,
    owner: &[u8; 32],
    pubkey: &[u8; 32],
    out: &mut [u8; XOF_BYTES],
) {
    account_output(
        lamports,
        data,
        executable,
        owner,
        pubkey,
        Output::Bytes(out),
    );
}

/// The account's XOF, written or mixed into LtHash lanes as `out` says (mixed without
/// an intermediate copy on the AVX2 path).
pub fn account_output(
    lamports: u64,
    data: &[u8],
    executable: bool,
    owner: &[u8; 32],
    pubkey: &[u8; 32],
    out: Output<'_>,
) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        return avx2_output(lamports, data, executable, owner, pubkey, out);
    }
    crate_output(lamports, data, executable, owner, pubkey, out);
}

/// [`account_output`] on a CPU with AVX2 (checked by the caller).
#[cfg(target_arch = "x86_64")]
fn avx2_output(
    lamports: u64,
    data: &[u8],
    executable: bool,
    owner: &[u8; 32],
    pubkey: &[u8; 32],
    out: Output<'_>,
) {
    if data.len() <= MAX_DATA_ONE_CHUNK {
        let mut input = [0u8; CHUNK_LEN];
        let n = FIXED_INPUT + data.len();
        input[..8].copy_from_slice(&lamports.to_le_bytes());
        input[8..8 + data.len()].copy_from_slice(data);
        input[8 + data.len()] = executable as u8;
        input[9 + data.len()..41 + data.len()].copy_from_slice(owner);
        input[41 + data.len()..n].copy_from_slice(pubkey);
        // SAFETY: the caller checked that the CPU has AVX2.
        unsafe {
            let (cv, block, block_len, flags) = root_node(&input[..n]);
            avx2::xof(&cv, &block, block_len, flags, out)
        };
    } else {
        // More than one chunk: the root is the parent of two subtrees, hashed by the
        // crate (its many-chunk SIMD path); only the root's output is computed here.
        let lamports = lamports.to_le_bytes();
        let pieces: [&[u8]; 5] = [&lamports, data, &[executable as u8], owner, pubkey];
        let len = (FIXED_INPUT + data.len()) as u64;
        let left = blake3::hazmat::left_subtree_len(len);
        let mut block = [0u8; BLOCK_LEN];
        block[..32].copy_from_slice(&subtree_cv(&pieces, 0, left));
        block[32..].copy_from_slice(&subtree_cv(&pieces, left, len));
        // SAFETY: the caller checked that the CPU has AVX2.
        unsafe { avx2::xof(&IV, &words(&block), BLOCK_LEN as u32, PARENT | ROOT, out) };
    }
}

/// [`account_output`] through the blake3 crate alone (any length, any CPU): the path of
/// CPUs without AVX2, and the baseline it is measured against.
pub fn crate_output(
    lamports: u64,
    data: &[u8],
    executable: bool,
    owner: &[u8; 32],
    pubkey: &[u8; 32],
    out: Output<'_>,
) {
    let add = matches!(out, Output::Add(_));
    match out {
        Output::Bytes(out) => crate_xof(lamports, data, executable, owner, pubkey, out),
        Output::Add(lanes) | Output::Sub(lanes) => {
            let mut bytes = [0u8; XOF_BYTES];
            crate_xof(lamports, data, executable, owner, pubkey, &mut bytes);
            for (a, c) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
                let v = u16::from_le_bytes([c[0], c[1]]);
                *a = if add {
                    a.wrapping_add(v)
                } else {
                    a.wrapping_sub(v)
                };
            }
        }
    }
}

/// The chaining value of bytes `from..to` of the concatenated `pieces`, a subtree that is
/// not the root.
fn subtree_cv(pieces: &[&[u8]], from: u64, to: u64) -> [u8; 32] {
    use blake3::hazmat::HasherExt;
    let mut h = blake3::Hasher::new();
    h.set_input_offset(from);
    let mut at = 0u64;
    for p in pieces {
        let (start, end) = (at, at + p.len() as u64);
        at = end;
        let (lo, hi) = (start.max(from), end.min(to));
        if lo < hi {
            h.update(&p[(lo - start) as usize..(hi - start) as usize]);
        }
    }
    h.finalize_non_root()
}

/// The same output from the blake3 crate (any length, any CPU).
pub fn crate_xof(
    lamports: u64,
    data: &[u8],
    executable: bool,
    owner: &[u8; 32],
    pubkey: &[u8; 32],
    out: &mut [u8; XOF_BYTES],
) {
    let mut h = blake3::Hasher::new();
    h.update(&lamports.to_le_bytes());
    h.update(data);
    h.update(&[executable as u8]);
    h.update(owner);
    h.update(pubkey);
    h.finalize_xof().fill(out);
}

/// How [`account_output`] runs on this CPU: `avx2-8-lane` or `blake3-crate`.
pub fn path_name() -> &'static str {
    if avx2() {
        "avx2-8-lane"
    } else {
        "blake3-crate"
    }
}

/// Whether the AVX2 path is taken on this CPU.
pub fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The root node of a one-chunk input: the chaining value after every block but the
/// last, the last block (zero-padded) as words, its length and its flags.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn root_node(input: &[u8]) -> ([u32; 8], [u32; 16], u32, u32) {
    debug_assert!(input.len() <= CHUNK_LEN);
    let mut cv = IV;
    let mut flags = CHUNK_START;
    let mut rest = input;
    while rest.len() > BLOCK_LEN {
        let block = words(&rest[..BLOCK_LEN]);
        cv = avx2::compress_cv(&cv, &block, BLOCK_LEN as u32, flags);
        flags = 0;
        rest = &rest[BLOCK_LEN..];
    }
    (cv, words(rest), rest.len() as u32, flags | CHUNK_END | ROOT)
}

/// A block's 16 little-endian words, zero-padded.
fn words(block: &[u8]) -> [u32; 16] {
    let mut padded = [0u8; BLOCK_LEN];
    padded[..block.len()].copy_from_slice(block);
    let mut w = [0u32; 16];
    for (w, c) in w.iter_mut().zip(padded.chunks_exact(4)) {
        *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    w
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Output, BLOCK_LEN, IV, SCHEDULE, XOF_BYTES};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn add(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }

    #[inline(always)]
    unsafe fn xor(a: __m256i, b: __m256i) -> __m256i {
        _mm256_xor_si256(a, b)
    }

    #[inline(always)]
    unsafe fn rot16(x: __m256i) -> __m256i {
        _mm256_shuffle_epi8(
            x,
            _mm256_set_epi8(
                13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2, 13, 12, 15, 14, 9, 8, 11, 10,
                5, 4, 7, 6, 1, 0, 3, 2,
            ),
        )
    }

    #[inline(always)]
    unsafe fn rot8(x: __m256i) -> __m256i {
        _mm256_shuffle_epi8(
            x,
            _mm256_set_epi8(
                12, 15, 14, 13, 8, 11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1, 12, 15, 14, 13, 8, 11, 10, 9,
                4, 7, 6, 5, 0, 3, 2, 1,
            ),
        )
    }

    #[inline(always)]
    unsafe fn rot12(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32(x, 12), _mm256_slli_epi32(x, 20))
    }

    #[inline(always)]
    unsafe fn rot7(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32(x, 7), _mm256_slli_epi32(x, 25))
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn g(
        v: &mut [__m256i; 16],
        a: usize,
        b: usize,
        c: usize,
        d: usize,
        x: __m256i,
        y: __m256i,
    ) {
        v[a] = add(add(v[a], v[b]), x);
        v[d] = rot16(xor(v[d], v[a]));
        v[c] = add(v[c], v[d]);
        v[b] = rot12(xor(v[b], v[c]));
        v[a] = add(add(v[a], v[b]), y);
        v[d] = rot8(xor(v[d], v[a]));
        v[c] = add(v[c], v[d]);
        v[b] = rot7(xor(v[b], v[c]));
    }

    #[inline(always)]
    unsafe fn rot16x4(x: __m128i) -> __m128i {
        _mm_shuffle_epi8(
            x,
            _mm_set_epi8(13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2),
        )
    }

    #[inline(always)]
    unsafe fn rot8x4(x: __m128i) -> __m128i {
        _mm_shuffle_epi8(
            x,
            _mm_set_epi8(12, 15, 14, 13, 8, 11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1),
        )
    }

    /// The four column (or, after diagonalising, diagonal) G functions at once.
    #[inline(always)]
    unsafe fn g4(
        a: &mut __m128i,
        b: &mut __m128i,
        c: &mut __m128i,
        d: &mut __m128i,
        x: __m128i,
        y: __m128i,
    ) {
        *a = _mm_add_epi32(_mm_add_epi32(*a, *b), x);
        *d = rot16x4(_mm_xor_si128(*d, *a));
        *c = _mm_add_epi32(*c, *d);
        let t = _mm_xor_si128(*b, *c);
        *b = _mm_or_si128(_mm_srli_epi32(t, 12), _mm_slli_epi32(t, 20));
        *a = _mm_add_epi32(_mm_add_epi32(*a, *b), y);
        *d = rot8x4(_mm_xor_si128(*d, *a));
        *c = _mm_add_epi32(*c, *d);
        let t = _mm_xor_si128(*b, *c);
        *b = _mm_or_si128(_mm_srli_epi32(t, 7), _mm_slli_epi32(t, 25));
    }

    #[inline(always)]
    unsafe fn words4(m: &[u32; 16], i: [usize; 4]) -> __m128i {
        _mm_setr_epi32(
            m[i[0]] as i32,
            m[i[1]] as i32,
            m[i[2]] as i32,
            m[i[3]] as i32,
        )
    }

    /// One compression of a chunk block (counter 0), rows of the state in four vectors:
    /// the new chaining value.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn compress_cv(
        cv: &[u32; 8],
        m: &[u32; 16],
        block_len: u32,
        flags: u32,
    ) -> [u32; 8] {
        let mut a = _mm_loadu_si128(cv.as_ptr().cast());
        let mut b = _mm_loadu_si128(cv.as_ptr().add(4).cast());
        let mut c = _mm_loadu_si128(IV.as_ptr().cast());
        let mut d = _mm_setr_epi32(0, 0, block_len as i32, flags as i32);
        for r in SCHEDULE.iter() {
            let (x, y) = (
                words4(m, [r[0], r[2], r[4], r[6]]),
                words4(m, [r[1], r[3], r[5], r[7]]),
            );
            g4(&mut a, &mut b, &mut c, &mut d, x, y);
            // Diagonals into columns: row 1 left by one lane, row 2 by two, row 3 by three.
            b = _mm_shuffle_epi32(b, 0b00_11_10_01);
            c = _mm_shuffle_epi32(c, 0b01_00_11_10);
            d = _mm_shuffle_epi32(d, 0b10_01_00_11);
            let (x, y) = (
                words4(m, [r[8], r[10], r[12], r[14]]),
                words4(m, [r[9], r[11], r[13], r[15]]),
            );
            g4(&mut a, &mut b, &mut c, &mut d, x, y);
            b = _mm_shuffle_epi32(b, 0b10_01_00_11);
            c = _mm_shuffle_epi32(c, 0b01_00_11_10);
            d = _mm_shuffle_epi32(d, 0b00_11_10_01);
        }
        let mut out = [0u32; 8];
        _mm_storeu_si128(out.as_mut_ptr().cast(), _mm_xor_si128(a, c));
        _mm_storeu_si128(out.as_mut_ptr().add(4).cast(), _mm_xor_si128(b, d));
        out
    }

    /// The root node's 32 output blocks, eight lanes at a time.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn xof(
        cv: &[u32; 8],
        block: &[u32; 16],
        block_len: u32,
        flags: u32,
        mut out: Output<'_>,
    ) {
        let m: [__m256i; 16] = std::array::from_fn(|i| _mm256_set1_epi32(block[i] as i32));
        let cvv: [__m256i; 8] = std::array::from_fn(|i| _mm256_set1_epi32(cv[i] as i32));
        for batch in 0..XOF_BYTES / (8 * BLOCK_LEN) {
            // Output counters batch*8 .. batch*8+8 (all below 2^32: the high word is 0).
            let base = (batch * 8) as i32;
            let mut v = [
                cvv[0],
                cvv[1],
                cvv[2],
                cvv[3],
                cvv[4],
                cvv[5],
                cvv[6],
                cvv[7],
                _mm256_set1_epi32(IV[0] as i32),
                _mm256_set1_epi32(IV[1] as i32),
                _mm256_set1_epi32(IV[2] as i32),
                _mm256_set1_epi32(IV[3] as i32),
                _mm256_add_epi32(
                    _mm256_set1_epi32(base),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                ),
                _mm256_setzero_si256(),
                _mm256_set1_epi32(block_len as i32),
                _mm256_set1_epi32(flags as i32),
            ];
            for r in SCHEDULE.iter() {
                g(&mut v, 0, 4, 8, 12, m[r[0]], m[r[1]]);
                g(&mut v, 1, 5, 9, 13, m[r[2]], m[r[3]]);
                g(&mut v, 2, 6, 10, 14, m[r[4]], m[r[5]]);
                g(&mut v, 3, 7, 11, 15, m[r[6]], m[r[7]]);
                g(&mut v, 0, 5, 10, 15, m[r[8]], m[r[9]]);
                g(&mut v, 1, 6, 11, 12, m[r[10]], m[r[11]]);
                g(&mut v, 2, 7, 8, 13, m[r[12]], m[r[13]]);
                g(&mut v, 3, 4, 9, 14, m[r[14]], m[r[15]]);
            }
            // Output words: v[i] ^ v[i+8], then v[i+8] ^ cv[i]; lane j is block j. Each
            // block is then 2 vectors: its words 0..8, and 8..16.
            let lo: [__m256i; 8] = std::array::from_fn(|i| xor(v[i], v[i + 8]));
            let hi: [__m256i; 8] = std::array::from_fn(|i| xor(v[i + 8], cvv[i]));
            let (lo, hi) = (transpose(lo), transpose(hi));
            for j in 0..8 {
                let at = (batch * 8 + j) * BLOCK_LEN;
                for (half, w) in [(0, lo[j]), (32, hi[j])] {
                    match &mut out {
                        Output::Bytes(b) => {
                            _mm256_storeu_si256(b.as_mut_ptr().add(at + half).cast(), w)
                        }
                        Output::Add(l) => {
                            let p = l.as_mut_ptr().add((at + half) / 2).cast::<__m256i>();
                            _mm256_storeu_si256(p, _mm256_add_epi16(_mm256_loadu_si256(p), w));
                        }
                        Output::Sub(l) => {
                            let p = l.as_mut_ptr().add((at + half) / 2).cast::<__m256i>();
                            _mm256_storeu_si256(p, _mm256_sub_epi16(_mm256_loadu_si256(p), w));
                        }
                    }
                }
            }
        }
    }

    /// Rows of 8 words (row i: word i of lanes 0..8) into columns (lane j: its words 0..8).
    #[inline(always)]
    unsafe fn transpose(r: [__m256i; 8]) -> [__m256i; 8] {
        let t = [
            _mm256_unpacklo_epi32(r[0], r[1]),
            _mm256_unpackhi_epi32(r[0], r[1]),
            _mm256_unpacklo_epi32(r[2], r[3]),
            _mm256_unpackhi_epi32(r[2], r[3]),
            _mm256_unpacklo_epi32(r[4], r[5]),
            _mm256_unpackhi_epi32(r[4], r[5]),
            _mm256_unpacklo_epi32(r[6], r[7]),
            _mm256_unpackhi_epi32(r[6], r[7]),
        ];
        // u[k] and u[k+4] (k < 4): words of lanes k and k+4, rows 0..4 and rows 4..8.
        let u = [
            _mm256_unpacklo_epi64(t[0], t[2]),
            _mm256_unpackhi_epi64(t[0], t[2]),
            _mm256_unpacklo_epi64(t[1], t[3]),
            _mm256_unpackhi_epi64(t[1], t[3]),
            _mm256_unpacklo_epi64(t[4], t[6]),
            _mm256_unpackhi_epi64(t[4], t[6]),
            _mm256_unpacklo_epi64(t[5], t[7]),
            _mm256_unpackhi_epi64(t[5], t[7]),
        ];
        [
            _mm256_permute2x128_si256(u[0], u[4], 0x20),
            _mm256_permute2x128_si256(u[1], u[5], 0x20),
            _mm256_permute2x128_si256(u[2], u[6], 0x20),
            _mm256_permute2x128_si256(u[3], u[7], 0x20),
            _mm256_permute2x128_si256(u[0], u[4], 0x31),
            _mm256_permute2x128_si256(u[1], u[5], 0x31),
            _mm256_permute2x128_si256(u[2], u[6], 0x31),
            _mm256_permute2x128_si256(u[3], u[7], 0x31),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn both(lamports: u64, data: &[u8], exec: bool, owner: [u8; 32], key: [u8; 32]) {
        let mut ours = [0u8; XOF_BYTES];
        let mut theirs = [0u8; XOF_BYTES];
        account_xof(lamports, data, exec, &owner, &key, &mut ours);
        crate_xof(lamports, data, exec, &owner, &key, &mut theirs);
        assert!(ours == theirs, "data length {}", data.len());
        // Mixed into lanes in place: the crate's bytes added lane by lane, then taken out.
        let start: [u16; XOF_BYTES / 2] =
            std::array::from_fn(|i| (i as u16).wrapping_mul(40_503) ^ data.len() as u16);
        let mut lanes = start;
        account_output(lamports, data, exec, &owner, &key, Output::Add(&mut lanes));
        for (i, c) in theirs.chunks_exact(2).enumerate() {
            let want = start[i].wrapping_add(u16::from_le_bytes([c[0], c[1]]));
            assert_eq!(lanes[i], want, "lane {i}, data length {}", data.len());
        }
        account_output(lamports, data, exec, &owner, &key, Output::Sub(&mut lanes));
        assert!(lanes == start, "data length {}", data.len());
    }

    #[test]
    fn every_length_around_the_block_and_chunk_boundaries_matches_the_crate() {
        if !avx2() {
            println!("no AVX2 on this CPU: only the crate's path runs here");
        }
        let data: Vec<u8> = (0..41_000u32).map(|i| (i * 31 + 7) as u8).collect();
        // Every data length up to past the two-chunk size (the input is 73 bytes more),
        // then around the larger subtree splits.
        let around = |n: usize| n.saturating_sub(FIXED_INPUT + 2)..n + 2 - FIXED_INPUT;
        let lens = (0..=2 * CHUNK_LEN + 70).chain(
            [3, 4, 5, 8, 9, 16, 17, 33, 40]
                .into_iter()
                .flat_map(|c| around(c * CHUNK_LEN)),
        );
        for len in lens {
            both(
                len as u64 + 1,
                &data[..len],
                len % 2 == 0,
                [len as u8; 32],
                [0xa5; 32],
            );
        }
    }

    #[test]
    fn the_schedule_is_the_permutation_applied_round_by_round() {
        // blake3's published schedule, rounds 2 and 7.
        assert_eq!(
            SCHEDULE[1],
            [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]
        );
        assert_eq!(
            SCHEDULE[6],
            [11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13]
        );
    }

    proptest! {
        #[test]
        fn random_accounts_match_the_crate(
            lamports in any::<u64>(),
            data in proptest::collection::vec(any::<u8>(), 0..5000),
            exec in any::<bool>(),
            owner in any::<[u8; 32]>(),
            key in any::<[u8; 32]>(),
        ) {
            both(lamports, &data, exec, owner, key);
        }
    }
}

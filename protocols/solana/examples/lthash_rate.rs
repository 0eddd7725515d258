//! LtHash elements per second on one core, through this crate's AVX2 path and through
//! the blake3 crate's XOF, alternating (run two at once to see what a second busy core
//! costs): `cargo run --release -p catchup-solana --example lthash_rate [ACCOUNTS [MAX_DATA]]`
//! (data lengths uniform in 0..=MAX_DATA, 400 by default).

use catchup_solana::account_xof::{account_xof, crate_xof, XOF_BYTES};
use std::time::Instant;

/// An account's XOF into the buffer given.
type Xof = fn(u64, &[u8], bool, &[u8; 32], &[u8; 32], &mut [u8; XOF_BYTES]);

fn rate(accounts: u64, max_data: u64, f: Xof) -> f64 {
    let data = vec![0x5au8; max_data as usize];
    let mut out = [0u8; XOF_BYTES];
    let mut acc = 0u8;
    let t = Instant::now();
    for i in 0..accounts {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&i.to_le_bytes());
        let len = (i.wrapping_mul(0x9e37_79b9) % (max_data + 1)) as usize;
        f(i + 1, &data[..len], false, &[7; 32], &key, &mut out);
        acc ^= out[i as usize % XOF_BYTES];
    }
    std::hint::black_box(acc);
    accounts as f64 / t.elapsed().as_secs_f64()
}

thread_local! {
    static MIXED: std::cell::RefCell<catchup_solana::LtHash> =
        std::cell::RefCell::new(catchup_solana::LtHash::identity());
}

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000u64);
    let max_data = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(400u64);
    for _ in 0..3 {
        let ours = rate(n, max_data, account_xof);
        let theirs = rate(n, max_data, crate_xof);
        let mut lt = catchup_solana::LtHash::identity();
        let mixed = rate(n, max_data, |l, d, e, o, k, _| {
            MIXED.with(|m| m.borrow_mut().mix_in_account(l, d, e, o, k))
        });
        MIXED.with(|m| lt.mix_in(&m.borrow()));
        std::hint::black_box(&lt);
        println!(
            "avx2 8-lane: {ours:.0}/s  mixed into an LtHash: {mixed:.0}/s  blake3 crate: {theirs:.0}/s  ratio {:.2} (AVX2 {})",
            ours / theirs,
            catchup_solana::account_xof::avx2()
        );
    }
}

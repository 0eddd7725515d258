//! Memory and lookup speed of the store's index for 32-byte hash keys (the eth sync's trie
//! nodes): full keys (one allocation per key) against fingerprinted keys
//! (`StoreOptions::fingerprinted`, 16 bytes kept inline), measured in the same process.
//!
//! ```text
//! cargo run --release -p catchup-io --example index_footprint -- [keys]
//! ```
//!
//! Default 1000000 keys with 8-byte values. For each variant it reopens a freshly written
//! store (so only the index is in memory) and reports the resident memory the open added
//! per key, and hit and miss lookups per second through `Store::contains`. The last line
//! is one JSON object with every measurement.

use std::time::Instant;

use catchup_io::store::{Store, StoreOptions};

const KIND: u8 = 1;

fn key(i: u64) -> [u8; 32] {
    // keccak-like: uniformly spread bytes.
    let mut k = [0u8; 32];
    let mut x = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for c in k.chunks_mut(8) {
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        c.copy_from_slice(&x.to_le_bytes());
    }
    k
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn trim() {
    // Give freed memory back so that the next RSS reading sees only what is live.
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    unsafe {
        malloc_trim(0);
    }
}

struct Measured {
    bytes_per_key: f64,
    hits_per_s: f64,
    misses_per_s: f64,
}

async fn measure(dir: &std::path::Path, keys: u64, opts: StoreOptions) -> Measured {
    let _ = std::fs::remove_dir_all(dir);
    let mut s = Store::open(dir, opts.clone()).await.expect("open");
    for i in 0..keys {
        s.put(KIND, &key(i), &i.to_le_bytes()).await.expect("put");
    }
    s.close().await.expect("close");
    trim();
    let before = rss_bytes();
    let opts = StoreOptions {
        use_checkpoint: false,
        ..opts
    };
    let s = Store::open(dir, opts).await.expect("reopen");
    trim();
    let after = rss_bytes();
    assert_eq!(s.len_of_kind(KIND) as u64, keys);
    let t = Instant::now();
    let mut found = 0u64;
    for i in 0..keys {
        found += s.contains(KIND, &key(i)) as u64;
    }
    let hits_per_s = keys as f64 / t.elapsed().as_secs_f64();
    assert_eq!(found, keys);
    let t = Instant::now();
    for i in keys..2 * keys {
        found += s.contains(KIND, &key(i)) as u64;
    }
    let misses_per_s = keys as f64 / t.elapsed().as_secs_f64();
    assert_eq!(found, keys);
    s.close().await.expect("close");
    Measured {
        bytes_per_key: after.saturating_sub(before) as f64 / keys as f64,
        hits_per_s,
        misses_per_s,
    }
}

fn main() {
    let keys: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("keys: a number"))
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("catchup-index-footprint-{}", std::process::id()));
    let (full, fp) = catchup_io::exec::run_unbound(async {
        let base = StoreOptions::default().content_addressed(KIND);
        let full = measure(&dir.join("full"), keys, base.clone()).await;
        let fp = measure(&dir.join("fp"), keys, base.fingerprinted(KIND)).await;
        (full, fp)
    });
    let _ = std::fs::remove_dir_all(&dir);
    for (name, m) in [("full keys", &full), ("fingerprinted", &fp)] {
        println!(
            "{name:>14}: {:6.1} bytes/key  {:6.2} M hits/s  {:6.2} M misses/s",
            m.bytes_per_key,
            m.hits_per_s / 1e6,
            m.misses_per_s / 1e6
        );
    }
    println!(
        "{{\"keys\":{keys},\"full_bytes_per_key\":{:.1},\"fp_bytes_per_key\":{:.1},\"full_hits_per_s\":{:.0},\"fp_hits_per_s\":{:.0},\"full_misses_per_s\":{:.0},\"fp_misses_per_s\":{:.0}}}",
        full.bytes_per_key,
        fp.bytes_per_key,
        full.hits_per_s,
        fp.hits_per_s,
        full.misses_per_s,
        fp.misses_per_s
    );
}

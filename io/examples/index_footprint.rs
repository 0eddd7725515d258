//! Memory and lookup speed of the store's index for 32-byte hash keys (the eth sync's trie
//! nodes), measured in the same process: full keys (one allocation per key), fingerprinted
//! keys all in memory (`StoreOptions::fingerprinted` with an unbounded memtable), and
//! fingerprinted keys in sorted run files behind an 8 MiB memtable (only the runs' fence
//! keys and Bloom filters in memory).
//!
//! ```text
//! cargo run --release -p catchup-io --example index_footprint -- [keys]
//! ```
//!
//! Default 1000000 keys with 8-byte values. For each variant it reopens a freshly written
//! store (so only the index is in memory) and reports the resident memory the open added
//! per key, hit and miss lookups per second through `Store::contains`, the open's time and
//! the segment bytes it scanned. The last line is one JSON object with every measurement.

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
    /// Memory the store accounts for its runs (fences and filters), per key.
    run_bytes_per_key: f64,
    hits_per_s: f64,
    misses_per_s: f64,
    open_ms: f64,
    scanned_bytes: u64,
    runs: u32,
}

/// Write `keys` keys with `write`, close (or, `crash`, flush and drop without closing),
/// reopen with `read` and measure.
async fn measure(
    dir: &std::path::Path,
    keys: u64,
    write: StoreOptions,
    read: StoreOptions,
    crash: bool,
) -> Measured {
    let _ = std::fs::remove_dir_all(dir);
    let mut s = Store::open(dir, write).await.expect("open");
    for i in 0..keys {
        s.put(KIND, &key(i), &i.to_le_bytes()).await.expect("put");
    }
    if crash {
        s.flush().await.expect("flush");
        drop(s);
        // Let the executor close the dropped descriptors.
        glommio::executor().yield_task_queue_now().await;
    } else {
        s.close().await.expect("close");
    }
    trim();
    let before = rss_bytes();
    let t = Instant::now();
    let s = Store::open(dir, read).await.expect("reopen");
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    trim();
    let after = rss_bytes();
    assert_eq!(s.len_of_kind(KIND) as u64, keys);
    let st = s.stats();
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
        run_bytes_per_key: st.index_run_memory_bytes as f64 / keys as f64,
        hits_per_s,
        misses_per_s,
        open_ms,
        scanned_bytes: st.scanned_bytes,
        runs: st.index_runs,
    }
}

fn main() {
    let keys: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("keys: a number"))
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("catchup-index-footprint-{}", std::process::id()));
    let results = catchup_io::exec::run_unbound(async {
        let base = StoreOptions::default().content_addressed(KIND);
        let scan = |o: StoreOptions| StoreOptions {
            use_checkpoint: false,
            ..o
        };
        // Whole keys in memory (reopened by scanning).
        let full = measure(
            &dir.join("full"),
            keys,
            base.clone(),
            scan(base.clone()),
            false,
        )
        .await;
        // Fingerprints all in memory (an unbounded memtable, reopened by scanning).
        let in_memory = StoreOptions {
            max_index_memory_bytes: u64::MAX,
            ..base.clone().fingerprinted(KIND)
        };
        let fp_mem = measure(
            &dir.join("fp-mem"),
            keys,
            in_memory.clone(),
            scan(in_memory),
            false,
        )
        .await;
        // Fingerprints in sorted runs behind an 8 MiB memtable (reopened from the
        // checkpoint: only the runs' fences and filters are loaded).
        let runs = StoreOptions {
            max_index_memory_bytes: 8 << 20,
            ..base.clone().fingerprinted(KIND)
        };
        let fp_runs = measure(
            &dir.join("fp-runs"),
            keys,
            runs.clone(),
            runs.clone(),
            false,
        )
        .await;
        // The same after a crash: the open scans the records written since the last
        // write-out of the memtable (and keeps them in the memtable).
        let fp_crash = measure(&dir.join("fp-crash"), keys, runs.clone(), runs, true).await;
        [
            ("full keys", full),
            ("fp in memory", fp_mem),
            ("fp runs", fp_runs),
            ("fp runs crash", fp_crash),
        ]
    });
    let _ = std::fs::remove_dir_all(&dir);
    let mut json = format!("{{\"keys\":{keys}");
    for (name, m) in &results {
        println!(
            "{name:>13}: {:6.1} bytes/key RSS ({:4.2} run fences+filter)  {:6.2} M hits/s  {:6.2} M misses/s  open {:8.1} ms, {:>11} bytes scanned, {} runs",
            m.bytes_per_key,
            m.run_bytes_per_key,
            m.hits_per_s / 1e6,
            m.misses_per_s / 1e6,
            m.open_ms,
            m.scanned_bytes,
            m.runs
        );
        let tag = name.replace(' ', "_");
        json += &format!(
            ",\"{tag}\":{{\"bytes_per_key\":{:.2},\"run_bytes_per_key\":{:.3},\"hits_per_s\":{:.0},\"misses_per_s\":{:.0},\"open_ms\":{:.1},\"scanned_bytes\":{},\"runs\":{}}}",
            m.bytes_per_key,
            m.run_bytes_per_key,
            m.hits_per_s,
            m.misses_per_s,
            m.open_ms,
            m.scanned_bytes,
            m.runs
        );
    }
    println!("{json}}}");
}

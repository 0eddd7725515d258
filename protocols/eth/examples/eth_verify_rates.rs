//! Single-core verification rates of the eth workloads beside keccak-only rates of the
//! same bytes: `cargo run -p catchup-eth --release --example eth_verify_rates [MS]`.
//! (`catchup bench eth --shards N` runs the same workloads on every shard.)

use std::time::Instant;

use catchup_eth::bench as wl;

fn rate(ms: u64, pass: &mut dyn FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut n = 0usize;
    for _ in 0..1_000_000 {
        n += pass();
        if start.elapsed().as_millis() as u64 >= ms {
            break;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Alternate the two passes over 3 rounds; keep the best rate of each.
fn best_pair(
    ms: u64,
    verify: &mut dyn FnMut() -> usize,
    keccak: &mut dyn FnMut() -> usize,
) -> (f64, f64) {
    let (mut v, mut k) = (0f64, 0f64);
    for _ in 0..3 {
        v = v.max(rate(ms / 3, verify));
        k = k.max(rate(ms / 3, keccak));
    }
    (v, k)
}

fn main() {
    let ms: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1500);
    let nodes = wl::state_trie_nodes(20_000, 1);
    let node_bytes: Vec<&[u8]> = nodes.iter().map(|n| n.1.as_ref()).collect();
    let headers = wl::header_chain(2048, 2);
    let header_bytes: Vec<&[u8]> = headers.iter().map(|h| h.as_ref()).collect();
    let receipts = wl::receipt_lists(64, 100, 3);
    let receipt_bytes: Vec<&[u8]> = receipts.iter().map(|r| r.1.as_ref()).collect();
    let mut sink = 0u64;
    let mut rows = Vec::new();
    let (v, k) = best_pair(ms, &mut || wl::verify_nodes(&nodes), &mut || {
        sink ^= wl::keccak_all(&node_bytes);
        node_bytes.len()
    });
    rows.push(("trie nodes", v, k, &node_bytes));
    let (v, k) = best_pair(ms, &mut || wl::validate_header_chain(&headers), &mut || {
        sink ^= wl::keccak_all(&header_bytes);
        header_bytes.len()
    });
    rows.push(("headers", v, k, &header_bytes));
    let (v, k) = best_pair(ms, &mut || wl::verify_receipt_lists(&receipts), &mut || {
        sink ^= wl::keccak_all(&receipt_bytes);
        receipt_bytes.len()
    });
    rows.push(("receipts roots", v, k, &receipt_bytes));
    std::hint::black_box(sink);
    println!(
        "{:<16} {:>14} {:>16} {:>7} {:>10}",
        "workload", "verified/s", "keccak-only/s", "ratio", "bytes/item"
    );
    for (name, v, k, items) in rows {
        let avg = items.iter().map(|x| x.len()).sum::<usize>() as f64 / items.len() as f64;
        println!("{name:<16} {v:>14.0} {k:>16.0} {:>7.2} {avg:>10.0}", k / v);
    }
}

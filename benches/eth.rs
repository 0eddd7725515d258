//! Ethereum verification throughput on one core: trie nodes (decode + keccak of
//! real-sized nodes), header chain validation, receipts roots; each beside the keccak-only
//! pass over the same bytes (compare the two lines of each group for the overhead ratio).
//! `catchup bench eth --shards N` runs the same workloads on every shard at once.

use catchup_eth::bench as wl;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn trie_nodes(c: &mut Criterion) {
    let nodes = wl::state_trie_nodes(20_000, 1);
    let bytes: Vec<&[u8]> = nodes.iter().map(|n| n.1.as_ref()).collect();
    let mut g = c.benchmark_group("eth/trie_nodes");
    g.throughput(Throughput::Elements(nodes.len() as u64));
    g.bench_function("verify", |b| b.iter(|| wl::verify_nodes(&nodes)));
    g.bench_function("keccak_only", |b| b.iter(|| wl::keccak_all(&bytes)));
    g.finish();
}

fn headers(c: &mut Criterion) {
    let headers = wl::header_chain(2048, 2);
    let bytes: Vec<&[u8]> = headers.iter().map(|h| h.as_ref()).collect();
    let mut g = c.benchmark_group("eth/headers");
    g.throughput(Throughput::Elements(headers.len() as u64));
    g.bench_function("validate_chain", |b| {
        b.iter(|| wl::validate_header_chain(&headers))
    });
    g.bench_function("keccak_only", |b| b.iter(|| wl::keccak_all(&bytes)));
    g.finish();
}

fn receipts(c: &mut Criterion) {
    let lists = wl::receipt_lists(64, 100, 3);
    let bytes: Vec<&[u8]> = lists.iter().map(|r| r.1.as_ref()).collect();
    let mut g = c.benchmark_group("eth/receipts_roots");
    g.throughput(Throughput::Elements(lists.len() as u64));
    g.bench_function("decode_and_root", |b| {
        b.iter(|| wl::verify_receipt_lists(&lists))
    });
    g.bench_function("keccak_only", |b| b.iter(|| wl::keccak_all(&bytes)));
    g.finish();
}

criterion_group!(benches, trie_nodes, headers, receipts);
criterion_main!(benches);

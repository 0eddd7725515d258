//! RLPx frame path throughput (snappy + AES-256-CTR + keccak MACs, sender and receiver)
//! beside raw AES-CTR + keccak of the same bytes, in one criterion group so the two are
//! measured in the same run. `catchup bench rlpx` prints the same per shard with ratios.

use catchup::eth::net::bench::{payload, session_pair};
use catchup_devp2p::frame::RawCtrKeccak;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn rlpx(c: &mut Criterion) {
    let mut g = c.benchmark_group("rlpx");
    for size in [256usize, 4096, 65536] {
        for compressible in [true, false] {
            let label = format!(
                "{size}B-{}",
                if compressible { "rlp-like" } else { "random" }
            );
            let data = payload(size, compressible);
            g.throughput(Throughput::Bytes(size as u64));
            let (mut a, mut b) = session_pair();
            let mut wire = Vec::with_capacity(size + 128);
            g.bench_with_input(
                BenchmarkId::new("frame_path", &label),
                &data,
                |bench, data| {
                    bench.iter(|| {
                        wire.clear();
                        a.write_message(0x10, data, &mut wire).unwrap();
                        b.feed(&wire);
                        b.next_message().unwrap().unwrap()
                    })
                },
            );
            let mut sender = RawCtrKeccak::new([7; 32]);
            let mut receiver = RawCtrKeccak::new([7; 32]);
            let mut buf = data.clone();
            g.bench_with_input(
                BenchmarkId::new("raw_aes_ctr_keccak", &label),
                &size,
                |bench, _| {
                    bench.iter(|| {
                        sender.seal(&mut buf);
                        receiver.open(&mut buf);
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, rlpx);
criterion_main!(benches);

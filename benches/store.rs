//! Single-shard store throughput: batches of puts made durable by one `flush` each, and
//! concurrent tasks each awaiting `SharedStore::put_durable` (group commit).
//! `cargo bench --bench store`. Set CATCHUP_BENCH_DIR to measure a particular disk
//! (default: the target directory's temp dir).

use std::time::{Duration, Instant};

use catchup_io::store::{SharedStore, Store, StoreOptions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const BATCH_RECORDS: u64 = 256;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("CATCHUP_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).expect("CATCHUP_BENCH_DIR is writable"),
        None => tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir"),
    }
}

fn store_put_flush(c: &mut Criterion) {
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("executor");
    let mut group = c.benchmark_group("store_put_flush");
    group.measurement_time(Duration::from_secs(5));
    for value_size in [128usize, 1024, 16 * 1024] {
        let record_bytes = catchup_io::store::record::encoded_len(32, value_size) as u64;
        group.throughput(Throughput::Bytes(record_bytes * BATCH_RECORDS));
        group.bench_with_input(
            BenchmarkId::new("batch256", value_size),
            &value_size,
            |b, &value_size| {
                b.iter_custom(|iters| {
                    let tmp = bench_dir();
                    catchup_io::exec::run(&ex, async {
                        let mut store = Store::open(tmp.path(), StoreOptions::default())
                            .await
                            .expect("open store");
                        let value = vec![0x5Au8; value_size];
                        let mut key = [0u8; 32];
                        let mut n = 0u64;
                        let start = Instant::now();
                        for _ in 0..iters {
                            for _ in 0..BATCH_RECORDS {
                                key[..8].copy_from_slice(&n.to_be_bytes());
                                n += 1;
                                store.put(1, &key, &value).await.expect("put");
                            }
                            store.flush().await.expect("flush");
                        }
                        start.elapsed()
                    })
                })
            },
        );
    }
    group.finish();
}

/// Tasks writing concurrently through one `SharedStore`, each put awaited until durable.
fn shared_put_durable(c: &mut Criterion) {
    const TASKS: u64 = 64;
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("executor");
    let mut group = c.benchmark_group("shared_put_durable");
    group.measurement_time(Duration::from_secs(5));
    let value_size = 1024usize;
    let record_bytes = catchup_io::store::record::encoded_len(32, value_size) as u64;
    group.throughput(Throughput::Bytes(record_bytes * TASKS));
    group.bench_function(BenchmarkId::new("tasks64", value_size), |b| {
        b.iter_custom(|iters| {
            let tmp = bench_dir();
            catchup_io::exec::run(&ex, async {
                let shared = SharedStore::open(tmp.path(), StoreOptions::default())
                    .await
                    .expect("open store");
                let start = Instant::now();
                let mut tasks = Vec::new();
                for t in 0..TASKS {
                    let s = shared.clone();
                    tasks.push(glommio::spawn_local(async move {
                        let value = vec![0x5Au8; value_size];
                        let mut key = [0u8; 32];
                        key[8..16].copy_from_slice(&t.to_be_bytes());
                        for i in 0..iters {
                            key[..8].copy_from_slice(&i.to_be_bytes());
                            s.put_durable(1, &key, &value).await.expect("put_durable");
                        }
                    }));
                }
                for t in tasks {
                    t.await;
                }
                let elapsed = start.elapsed();
                shared.close().await.expect("close");
                elapsed
            })
        })
    });
    group.finish();
}

criterion_group!(benches, store_put_flush, shared_put_durable);
criterion_main!(benches);

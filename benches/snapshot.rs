//! Snapshot pipeline throughput on a small generated archive: the whole pipeline
//! (decompress → unpack → index → LtHash) beside raw zstd decompression of the same file.
//! `catchup bench snapshot --size-bytes 1073741824` runs the large version, with the
//! `zstd -d | tar -x` baseline.

use catchup::solana::snapshot::bench::raw_zstd;
use catchup::solana::snapshot::generate::{generate, DataSize, GenerateConfig};
use catchup::solana::snapshot::{verify_archive, PipelineConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn pipeline(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    for frames in [1u32, 4] {
        let gen = generate(
            &GenerateConfig {
                accounts: 20_000,
                data_size: DataSize::Uniform { min: 0, max: 400 },
                frames,
                file_size_bytes: 1 << 20,
                ..GenerateConfig::default()
            },
            &dir.path().join(format!("a{frames}")),
        )
        .unwrap();
        g.throughput(Throughput::Bytes(gen.uncompressed_bytes));
        g.bench_function(format!("pipeline_2_shards_{frames}_frames"), |b| {
            b.iter(|| {
                let data = dir.path().join("data");
                let r = verify_archive(
                    &gen.path,
                    None,
                    &data,
                    PipelineConfig {
                        shards: 2,
                        ..PipelineConfig::default()
                    },
                )
                .unwrap();
                assert!(r.lt_hash_ok);
                std::fs::remove_dir_all(&data).unwrap();
            })
        });
        g.bench_function(format!("raw_zstd_{frames}_frames"), |b| {
            b.iter(|| raw_zstd(&gen.path).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);

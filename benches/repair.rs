//! Repair hot paths without the network: shred parse + proof + signature, FEC recovery of
//! a 32+32 set, and the repair engine against simulated peers (shreds/s of one shard).

use catchup::solana::repair::sim::{run, SimPeer};
use catchup::solana::repair::EngineConfig;
use catchup_shred::ed25519_dalek::SigningKey;
use catchup_shred::ledger::generate_ledger;
use catchup_shred::{fec, Accept, Shred};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn shreds(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[3; 32]);
    let pk = key.verifying_key().to_bytes();
    let raw = generate_ledger(&key, 10, 1, 32, 1);
    let mut g = c.benchmark_group("shred");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse+merkle_root", |b| {
        b.iter(|| Shred::from_bytes(&raw[5]).unwrap().merkle_root().unwrap())
    });
    g.bench_function("parse+verify_signature", |b| {
        b.iter(|| Shred::from_bytes(&raw[5]).unwrap().verify(&pk).unwrap())
    });
    let set: Vec<Shred> = raw
        .iter()
        .map(|b| Shred::from_bytes(b).unwrap())
        .filter(|s| !s.is_data() || s.index() % 2 == 0)
        .collect();
    g.throughput(Throughput::Elements(16));
    g.bench_function("fec_recover_16_of_32", |b| {
        b.iter(|| fec::recover_data(&set, Accept::CURRENT).unwrap())
    });
    g.finish();
}

fn engine(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[4; 32]);
    let raw = generate_ledger(&key, 100, 8, 64, 2);
    let pk = key.verifying_key().to_bytes();
    let peers = [SimPeer {
        latency_ms: 1,
        key_known: true,
        ..Default::default()
    }; 3];
    let mut g = c.benchmark_group("repair_engine");
    g.sample_size(10);
    g.throughput(Throughput::Elements(8 * 64));
    g.bench_function("simulated_8_slots_x_64_shreds", |b| {
        b.iter(|| {
            let r = run(&raw, pk, EngineConfig::new(100, 107), &peers, 1, 60_000);
            assert!(r.done);
        })
    });
    g.finish();
}

criterion_group!(benches, shreds, engine);
criterion_main!(benches);

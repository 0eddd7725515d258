//! Open + full reload of a per-shard store: records of 100..600 bytes written once, then
//! reloaded in alternating rounds by one read per record (256 in flight, the former
//! loader) and by the streaming `scan_all` (large sequential reads).
//!
//! ```text
//! cargo run --release -p catchup-io --example store_reload -- [records] [dir] [rounds]
//! ```
//!
//! Defaults: 100000 records, a fresh directory under the system temp dir, 2 rounds. The
//! last line is one JSON object with every measurement.

use std::time::Instant;

use catchup_io::store::{Store, StoreOptions};

const KIND: u8 = 1;
const READS_IN_FLIGHT: usize = 256;

fn value_len(i: u64) -> usize {
    100 + (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % 501
}

fn key(i: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k[8..16].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    k
}

/// Run `futs` concurrently on this task; their outputs in order.
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[derive(Default)]
struct Run {
    open_ms: f64,
    reload_ms: f64,
    records: u64,
    bytes: u64,
    reads: u64,
}

impl Run {
    fn records_per_s(&self) -> f64 {
        self.records as f64 / ((self.open_ms + self.reload_ms) / 1000.0)
    }
    fn json(&self) -> String {
        format!(
            "{{\"open_ms\":{:.1},\"reload_ms\":{:.1},\"records\":{},\"value_bytes\":{},\"block_reads\":{},\"records_per_s\":{:.0}}}",
            self.open_ms,
            self.reload_ms,
            self.records,
            self.bytes,
            self.reads,
            self.records_per_s()
        )
    }
}

async fn per_record(dir: &std::path::Path, opts: StoreOptions) -> Run {
    let t0 = Instant::now();
    let s = Store::open(dir, opts).await.expect("open");
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let keys = s.keys_of_kind(KIND);
    let mut r = Run {
        open_ms,
        ..Run::default()
    };
    for chunk in keys.chunks(READS_IN_FLIGHT) {
        let vals = join_all(chunk.iter().map(|k| s.get(KIND, k)).collect()).await;
        for v in vals {
            let v = v.expect("read").expect("indexed");
            r.records += 1;
            r.bytes += v.len() as u64;
            r.reads += 1;
        }
    }
    r.reload_ms = t1.elapsed().as_secs_f64() * 1e3;
    s.close().await.expect("close");
    r
}

async fn streaming(dir: &std::path::Path, opts: StoreOptions) -> Run {
    let t0 = Instant::now();
    let s = Store::open(dir, opts).await.expect("open");
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let mut r = Run {
        open_ms,
        ..Run::default()
    };
    let mut sc = s.scan_all();
    while let Some(rec) = sc.next().await {
        let rec = rec.expect("scan");
        // Copy out as a loader would.
        let v = rec.value.to_vec();
        r.records += 1;
        r.bytes += v.len() as u64;
    }
    r.reads = sc.stats().reads;
    drop(sc);
    r.reload_ms = t1.elapsed().as_secs_f64() * 1e3;
    s.close().await.expect("close");
    r
}

fn main() {
    let mut args = std::env::args().skip(1);
    let records: u64 = args
        .next()
        .map(|a| a.parse().expect("records: a number"))
        .unwrap_or(100_000);
    let (dir, _tmp) = match args.next() {
        Some(d) => (std::path::PathBuf::from(d), None),
        None => {
            let t = tempfile_dir();
            (t.clone(), Some(RemoveOnDrop(t)))
        }
    };
    let rounds: u32 = args
        .next()
        .map(|a| a.parse().expect("rounds: a number"))
        .unwrap_or(2);
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("executor");
    catchup_io::exec::run(&ex, async move {
        let opts = StoreOptions::default();
        let t0 = Instant::now();
        let mut s = Store::open(&dir, opts.clone()).await.expect("open");
        let fresh = s.len_of_kind(KIND) == 0;
        if fresh {
            for i in 0..records {
                let v = vec![(i % 251) as u8; value_len(i)];
                s.put(KIND, &key(i), &v).await.expect("put");
                if i % 4096 == 4095 {
                    s.flush().await.expect("flush");
                }
            }
        }
        let bytes = s.stats().appended_bytes;
        s.close().await.expect("close");
        let records = {
            let s = Store::open(&dir, opts.clone()).await.expect("open");
            let n = s.len_of_kind(KIND) as u64;
            s.close().await.expect("close");
            n
        };
        println!(
            "store of {records} records ({} MB) in {} ({})",
            bytes / 1_000_000,
            dir.display(),
            if fresh {
                format!("written in {:.1} s", t0.elapsed().as_secs_f64())
            } else {
                "existing".to_string()
            }
        );
        let full_scan = StoreOptions {
            use_checkpoint: false,
            ..opts.clone()
        };
        let mut json = Vec::new();
        for round in 0..rounds {
            let cases: [(&str, Run); 3] = [
                (
                    "per-record reads, checkpoint open",
                    per_record(&dir, opts.clone()).await,
                ),
                (
                    "streaming scan, checkpoint open",
                    streaming(&dir, opts.clone()).await,
                ),
                (
                    "streaming scan, full-scan open",
                    streaming(&dir, full_scan.clone()).await,
                ),
            ];
            for (name, r) in cases {
                assert_eq!(r.records, records, "{name}: every record reloaded");
                println!(
                    "round {round}: {name:36} open {:8.1} ms  reload {:8.1} ms  {:>9.0} records/s  ({} reads)",
                    r.open_ms,
                    r.reload_ms,
                    r.records_per_s(),
                    r.reads
                );
                json.push(format!(
                    "{{\"round\":{round},\"case\":\"{name}\",\"run\":{}}}",
                    r.json()
                ));
            }
        }
        println!(
            "{{\"records\":{records},\"record_bytes\":{bytes},\"runs\":[{}]}}",
            json.join(",")
        );
    });
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("catchup-store-reload-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

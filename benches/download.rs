//! Snapshot catch-up download benchmark, all in one run on the same mirrors and archive:
//!
//! 1. `catchup sync` download only (null sink) → download wall time and achieved rate vs
//!    the sum of the mirrors' rate limits;
//! 2. `catchup sync` end to end (download + decompress + unpack + index + LtHash) → how
//!    much of the load the pipeline hides behind the download;
//! 3. `aria2c` (segmented, all mirrors, one connection per mirror like catchup) then
//!    `zstd -d | tar -x` → the ratio of wall times.
//!
//! Mirrors are private nginx instances with `limit_rate` (our own `snapshot serve` when
//! nginx is missing). Environment:
//! - `CATCHUP_BENCH_DOWNLOAD_ACCOUNTS` (default 300000; about 25 MB compressed; 4 million
//!   accounts give an archive over 1 GB uncompressed);
//! - `CATCHUP_BENCH_DOWNLOAD_RATES` mirror limits in MB/s, comma-separated (default 40,20,10);
//! - `CATCHUP_BENCH_DOWNLOAD_CHUNK` chunk size (default 8M).
//!
//! Run: `cargo bench --bench download`.

#[path = "../tests/download_support/mod.rs"]
mod download_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use catchup::download::sink::{ArchiveSink, PipelineSink, SinkError, SinkFactory};
use catchup::download::sync::{sync, SyncConfig, SyncReport};
use catchup_http::Url;
use download_support::*;

struct NullSink(u64);
impl ArchiveSink for NullSink {
    fn feed(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.0 += bytes.len() as u64;
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<serde_json::Value, SinkError> {
        Ok(serde_json::json!({ "check": "none (download only)", "bytes": self.0 }))
    }
}

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn run_sync(urls: &[Url], datadir: &Path, chunk: u64, sink: Arc<SinkFactory>) -> (SyncReport, f64) {
    let mut cfg = SyncConfig::new(datadir.to_path_buf());
    cfg.sources = urls.to_vec();
    cfg.coordinator.chunk_size_bytes = chunk;
    cfg.progress_interval_ms = 60_000;
    let t = Instant::now();
    let rep = sync(cfg, sink, Box::new(|_| {})).expect("sync");
    (rep, t.elapsed().as_secs_f64())
}

fn main() {
    // `cargo test --benches` runs bench binaries with --bench absent: only run when asked.
    if !std::env::args().any(|a| a == "--bench") {
        println!("download bench: run with `cargo bench --bench download`");
        return;
    }
    let accounts: u64 = env_or("CATCHUP_BENCH_DOWNLOAD_ACCOUNTS", 300_000);
    let rates: Vec<f64> = std::env::var("CATCHUP_BENCH_DOWNLOAD_RATES")
        .unwrap_or_else(|_| "40,20,10".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let chunk = std::env::var("CATCHUP_BENCH_DOWNLOAD_CHUNK")
        .ok()
        .and_then(|s| catchup::cli::snapshot_net::parse_size_bytes(&s).ok())
        .unwrap_or(8 << 20);
    let work = tempfile::tempdir().expect("tempdir");
    let snaps = work.path().join("snapshots");
    std::fs::create_dir_all(&snaps).unwrap();
    let t = Instant::now();
    let path = gen_snapshot(&snaps, accounts, 7);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "generated {name}: {size} bytes in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let use_nginx = have_binary(&nginx_bin());
    let mut mirrors = Vec::new();
    let mut urls = Vec::new();
    for r in &rates {
        if use_nginx {
            let m = Nginx::start(
                &snaps,
                &name,
                &MirrorOpts {
                    limit_rate: Some(format!("{}k", (r * 1000.0) as u64)),
                    no_ranges: false,
                },
            );
            urls.push(Url::parse(&m.base_url()).unwrap());
            mirrors.push(m);
        }
    }
    if !use_nginx {
        eprintln!(
            "nginx missing: the benchmark needs nginx mirrors ({})",
            nginx_bin()
        );
        return;
    }
    let limit_sum_bytes_per_s: f64 = rates.iter().sum::<f64>() * 1e6;

    // 1. Download only.
    let d1 = work.path().join("dl-only");
    let null: Arc<SinkFactory> = Arc::new(|| Ok(Box::new(NullSink(0)) as Box<dyn ArchiveSink>));
    let (r1, t_dl) = run_sync(&urls, &d1, chunk, null);
    assert!(r1.complete);
    std::fs::remove_dir_all(&d1).ok();

    // 2. End to end.
    let d2 = work.path().join("e2e");
    let pcfg = catchup::snapshot::PipelineConfig::default();
    let (r2, t_e2e) = run_sync(&urls, &d2, chunk, PipelineSink::factory(d2.clone(), pcfg));
    assert!(r2.complete, "end-to-end sync did not verify: {r2:?}");
    std::fs::remove_dir_all(&d2).ok();

    // 3. aria2c + zstd -d | tar -x.
    let (t_aria, t_unpack) = if have_binary("aria2c") && have_binary("zstd") {
        let d3 = work.path().join("aria");
        std::fs::create_dir_all(d3.join("unpacked")).unwrap();
        let t = Instant::now();
        let mut c = Command::new("aria2c");
        c.args([
            "-q",
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
            "--file-allocation=none",
        ])
        .args([
            "-x",
            "1",
            "-s",
            &urls.len().to_string(),
            "-k",
            "1M",
            "--min-split-size=1M",
        ])
        .arg("-d")
        .arg(&d3)
        .args(["-o", &name]);
        for u in &urls {
            c.arg(u.join(&format!("/{name}")).unwrap().to_string());
        }
        let ok = c
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let t_aria = t.elapsed().as_secs_f64();
        assert!(ok, "aria2c failed");
        let t = Instant::now();
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "zstd -q -d -c '{}' | tar -x -C '{}'",
                d3.join(&name).display(),
                d3.join("unpacked").display()
            ))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "zstd | tar failed");
        (Some(t_aria), Some(t.elapsed().as_secs_f64()))
    } else {
        eprintln!("aria2c or zstd missing: no baseline");
        (None, None)
    };

    let rate_dl = size as f64 / t_dl;
    let summary = serde_json::json!({
        "archive_bytes": size,
        "accounts": accounts,
        "mirror_limits_mb_per_s": rates,
        "chunk_size_bytes": chunk,
        "catchup_download_only_s": t_dl,
        "catchup_download_rate_mb_per_s": rate_dl / 1e6,
        "download_rate_vs_limit_sum": rate_dl / limit_sum_bytes_per_s,
        "catchup_end_to_end_s": t_e2e,
        "end_to_end_vs_download_only": t_e2e / t_dl,
        "aria2c_s": t_aria,
        "zstd_tar_s": t_unpack,
        "baseline_total_s": t_aria.zip(t_unpack).map(|(a, b)| a + b),
        "catchup_vs_baseline_wall_ratio": t_aria.zip(t_unpack).map(|(a, b)| t_e2e / (a + b)),
    });
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());
    drop(mirrors);
}

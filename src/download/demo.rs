//! The Solana part of `catchup demo`: a generated snapshot served by several local
//! `snapshot serve` sources at different rates, synced from all of them and verified.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use catchup_http::Url;

use super::serve::{serve_blocking, ServeConfig};
use super::sink::PipelineSink;
use super::sync::{sync, ProgressFn, SyncConfig, SyncReport};

/// Demo settings.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Scratch directory: `snapshots/` (served) and `datadir/` (synced into).
    pub workdir: PathBuf,
    /// Accounts in the generated snapshot.
    pub accounts: u64,
    /// One local source per entry, with this send rate in bytes/s (`None`: unlimited).
    pub source_rates_bytes_per_s: Vec<Option<u64>>,
    pub chunk_size_bytes: u64,
    /// Index shards of the snapshot pipeline.
    pub shards: usize,
}

impl DemoConfig {
    pub fn new(workdir: PathBuf) -> DemoConfig {
        DemoConfig {
            workdir,
            accounts: 50_000,
            source_rates_bytes_per_s: vec![Some(8_000_000), Some(4_000_000), Some(1_000_000)],
            chunk_size_bytes: 512 * 1024,
            shards: 2,
        }
    }
}

/// What the demo did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DemoReport {
    pub archive_bytes: u64,
    pub sources: Vec<String>,
    pub sync: SyncReport,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo: generate snapshot: {0}")]
    Generate(String),
    #[error("demo: start source: {0}")]
    Serve(String),
    #[error("demo: sync: {0}")]
    Sync(#[from] super::sync::SyncError),
}

struct Source {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Source {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_source(dir: PathBuf, rate: Option<u64>) -> Result<(Source, SocketAddr), DemoError> {
    let mut cfg = ServeConfig::new(dir, SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.rate_limit_bytes_per_s = rate;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("demo-source".into())
        .spawn(move || {
            let tx2 = tx.clone();
            if let Err(e) = serve_blocking(cfg, s2, move |a| {
                let _ = tx2.send(Ok(a));
            }) {
                let _ = tx.send(Err(e.to_string()));
            }
        })
        .map_err(|e| DemoError::Serve(e.to_string()))?;
    let src = Source {
        stop,
        thread: Some(thread),
    };
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(addr)) => Ok((src, addr)),
        Ok(Err(e)) => Err(DemoError::Serve(e)),
        Err(_) => Err(DemoError::Serve("no answer within 10 s".into())),
    }
}

/// Generate a snapshot, serve it from `source_rates_bytes_per_s.len()` local sources, sync
/// it with the full snapshot pipeline, and return the report (`sync.complete` tells
/// whether it verified). Sources stop when this returns.
pub fn run_demo(cfg: &DemoConfig, progress: ProgressFn) -> Result<DemoReport, DemoError> {
    let snaps = cfg.workdir.join("snapshots");
    std::fs::create_dir_all(&snaps)
        .map_err(|e| DemoError::Generate(format!("{}: {e}", snaps.display())))?;
    let gcfg = crate::snapshot::generate::GenerateConfig {
        accounts: cfg.accounts,
        slot: 100,
        ..Default::default()
    };
    let generated = crate::snapshot::generate::generate(&gcfg, &snaps)
        .map_err(|e| DemoError::Generate(e.to_string()))?;
    let mut sources = Vec::new();
    let mut urls = Vec::new();
    for rate in &cfg.source_rates_bytes_per_s {
        let (s, addr) = start_source(snaps.clone(), *rate)?;
        sources.push(s);
        urls.push(
            Url::parse(&format!("http://{addr}/")).map_err(|e| DemoError::Serve(e.to_string()))?,
        );
    }
    let datadir = cfg.workdir.join("datadir");
    let mut scfg = SyncConfig::new(datadir.clone());
    scfg.sources = urls.clone();
    scfg.coordinator.chunk_size_bytes = cfg.chunk_size_bytes;
    scfg.progress_interval_ms = 1000;
    let pcfg = crate::snapshot::PipelineConfig {
        shards: cfg.shards.max(1),
        ..Default::default()
    };
    let report = sync(scfg, PipelineSink::factory(datadir, pcfg), progress)?;
    drop(sources);
    Ok(DemoReport {
        archive_bytes: generated.compressed_bytes,
        sources: urls.iter().map(|u| u.to_string()).collect(),
        sync: report,
    })
}

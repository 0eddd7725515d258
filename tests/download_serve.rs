//! End-to-end download tests against our own `snapshot serve` (in-process, loopback):
//! multi-source ranges, single-stream fallback, getClusterNodes discovery, resume, a
//! changed source, and the server's HTTP semantics.

mod download_support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use catchup::solana::download::client::{fetch_small, head_follow, ClientConfig};
use catchup::solana::download::serve::{serve_blocking, ServeConfig};
use catchup::solana::download::sink::{ArchiveSink, SinkFactory, StreamCheckSink};
use catchup::solana::download::sync::{sync, SyncConfig, SyncReport};
use catchup_http::{Method, Url};
use download_support::*;

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(
        dir: &Path,
        rate_bytes_per_s: Option<u64>,
        ranges: bool,
        cluster: Vec<String>,
    ) -> Server {
        let mut cfg = ServeConfig::new(dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
        cfg.rate_limit_bytes_per_s = rate_bytes_per_s;
        cfg.ranges = ranges;
        cfg.cluster_rpc_addrs = cluster;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            serve_blocking(cfg, s2, move |a| tx.send(a).unwrap()).unwrap();
        });
        let addr = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("server ready");
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }
    fn base(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn check_sink() -> Arc<SinkFactory> {
    Arc::new(|| Ok(Box::new(StreamCheckSink::new()?) as Box<dyn ArchiveSink>))
}

const NAME: &str = "snapshot-100-5pgMpQj4MZYWauD1VnoNfmGAdUQCe6VVCSCQMNbDoxf7.tar.zst";

fn setup(seed: u64, payload: usize) -> Option<(tempfile::TempDir, Vec<u8>)> {
    if !require(have_binary("zstd"), "zstd CLI") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = make_archive(seed, payload, 100);
    std::fs::write(dir.path().join(NAME), &archive).unwrap();
    Some((dir, archive))
}

fn config(datadir: &Path, sources: Vec<Url>) -> SyncConfig {
    let mut cfg = SyncConfig::new(datadir.to_path_buf());
    cfg.sources = sources;
    cfg.coordinator.chunk_size_bytes = 256 * 1024;
    cfg.coordinator.backoff_base_ms = 50;
    cfg.client.io_timeout_ms = 5_000;
    cfg.progress_interval_ms = 60_000;
    cfg
}

fn run(cfg: SyncConfig) -> SyncReport {
    sync(cfg, check_sink(), Box::new(|_| {})).expect("sync")
}

fn downloaded(datadir: &Path) -> Vec<u8> {
    std::fs::read(datadir.join("download").join(NAME)).unwrap()
}

#[test]
fn multi_source_ranges_verified() {
    let Some((dir, archive)) = setup(1, 3 << 20) else {
        return;
    };
    let a = Server::start(dir.path(), None, true, vec![]);
    let b = Server::start(dir.path(), Some(4_000_000), true, vec![]);
    let c = Server::start(dir.path(), Some(1_000_000), true, vec![]);
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(data.path(), vec![a.base(), b.base(), c.base()]);
    cfg.shards = 2;
    let rep = run(cfg);
    assert!(rep.complete, "{rep:?}");
    assert_eq!(rep.archive, NAME);
    assert_eq!(rep.slot, Some(100));
    assert_eq!(rep.size_bytes, archive.len() as u64);
    assert_eq!(rep.chunks_fetched, rep.chunks_total);
    assert_eq!(downloaded(data.path()), archive);
    let v = rep.verified.unwrap();
    assert_eq!(v["manifest_seen"], true);
    assert!(v["storages"].as_u64().unwrap() >= 6);
    assert_eq!(rep.sources.len(), 3);
    assert!(rep.sources.iter().all(|s| s.ranges && s.dropped.is_none()));
    assert_eq!(
        rep.sources.iter().map(|s| s.chunks).sum::<u32>(),
        rep.chunks_total
    );
    // Sources 0 and 2 are fetched on shard 0, source 1 on shard 1; all of them got work.
    assert_eq!(
        rep.sources.iter().map(|s| s.shard).collect::<Vec<_>>(),
        vec![0, 1, 0]
    );
    assert!(
        rep.sources.iter().all(|s| s.chunks >= 1),
        "{:?}",
        rep.sources
    );
}

#[test]
fn no_range_source_single_stream_fallback() {
    let Some((dir, archive)) = setup(2, 1 << 20) else {
        return;
    };
    let a = Server::start(dir.path(), None, false, vec![]);
    let data = tempfile::tempdir().unwrap();
    let rep = run(config(data.path(), vec![a.base()]));
    assert!(rep.complete, "{rep:?}");
    assert!(!rep.sources[0].ranges);
    assert_eq!(downloaded(data.path()), archive);
}

#[test]
fn rpc_discovery_via_get_cluster_nodes() {
    let Some((dir, archive)) = setup(3, 1 << 20) else {
        return;
    };
    let b = Server::start(dir.path(), None, true, vec![]);
    let c = Server::start(dir.path(), None, true, vec![]);
    let rpc = Server::start(
        dir.path(),
        None,
        true,
        vec![b.addr.to_string(), c.addr.to_string(), "127.0.0.1:1".into()],
    );
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(data.path(), vec![]);
    cfg.rpc = Some(rpc.base());
    cfg.min_agree = 2;
    let rep = run(cfg);
    assert!(rep.complete, "{rep:?}");
    assert_eq!(rep.sources.len(), 2, "{:?}", rep.sources);
    // The unreachable node is named as a bad source.
    assert!(
        rep.bad_sources.iter().any(|b| b.contains("127.0.0.1:1")),
        "{:?}",
        rep.bad_sources
    );
    assert_eq!(downloaded(data.path()), archive);
}

#[test]
fn resume_fetches_no_finished_chunk_and_changed_source_resets() {
    let Some((dir, archive)) = setup(4, 2 << 20) else {
        return;
    };
    let a = Server::start(dir.path(), None, true, vec![]);
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(data.path(), vec![a.base()]);
    cfg.stop_after_chunks = Some(3);
    let first = run(cfg);
    assert!(!first.complete);
    let done = journal_done(data.path()).expect("journal written");
    let done_count = done.iter().filter(|d| **d).count() as u32;
    assert!(done_count >= 3, "{done:?}");
    let second = run(config(data.path(), vec![a.base()]));
    assert!(second.complete, "{second:?}");
    assert_eq!(second.chunks_resumed, done_count);
    assert_eq!(second.chunks_fetched, second.chunks_total - done_count);
    assert_eq!(downloaded(data.path()), archive);

    // The source now serves another archive under the same name (other size): start over.
    let mut cfg = config(data.path(), vec![a.base()]);
    cfg.stop_after_chunks = Some(2);
    let other = make_archive(5, 1 << 20, 100);
    std::fs::write(dir.path().join(NAME), &other).unwrap();
    let third = run(config(data.path(), vec![a.base()]));
    assert!(third.complete, "{third:?}");
    assert_eq!(third.chunks_resumed, 0);
    assert_eq!(downloaded(data.path()), other);
    drop(cfg);
}

/// The automatic chunk size (0) adopts the size a started download of the same archive
/// used, so its finished chunks count; a fresh one gets the automatic size.
#[test]
fn automatic_chunk_size_resumes_with_the_size_it_started_with() {
    let Some((dir, archive)) = setup(6, 2 << 20) else {
        return;
    };
    let a = Server::start(dir.path(), None, true, vec![]);
    let b = Server::start(dir.path(), None, true, vec![]);
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(data.path(), vec![a.base()]);
    cfg.stop_after_chunks = Some(3);
    let first = run(cfg);
    assert!(!first.complete);
    let done_count = journal_done(data.path())
        .expect("journal written")
        .iter()
        .filter(|d| **d)
        .count() as u32;
    assert!(done_count >= 3);
    // Automatic size, and now two sources: the 256 KiB chunks of the first run are kept.
    let mut cfg = config(data.path(), vec![a.base(), b.base()]);
    cfg.coordinator.chunk_size_bytes = 0;
    let second = run(cfg);
    assert!(second.complete, "{second:?}");
    assert_eq!(
        second.chunks_total as usize,
        archive.len().div_ceil(256 * 1024)
    );
    assert_eq!(second.chunks_resumed, done_count);
    assert_eq!(downloaded(data.path()), archive);
    // A fresh data directory gets the automatic size (1 MiB for a small archive).
    let fresh = tempfile::tempdir().unwrap();
    let mut cfg = config(fresh.path(), vec![a.base(), b.base()]);
    cfg.coordinator.chunk_size_bytes = 0;
    let third = run(cfg);
    assert!(third.complete, "{third:?}");
    assert_eq!(third.chunks_total as usize, archive.len().div_ceil(1 << 20));
    assert_eq!(downloaded(fresh.path()), archive);
}

#[test]
fn server_http_semantics() {
    let Some((dir, archive)) = setup(6, 64 * 1024) else {
        return;
    };
    let a = Server::start(dir.path(), None, true, vec!["10.0.0.1:8899".into()]);
    let client = ClientConfig::default();
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .unwrap();
    catchup_io::exec::run(&ex, async {
        let (url, head, _) = head_follow(&a.base().join("/snapshot.tar.bz2").unwrap(), &client)
            .await
            .unwrap();
        assert_eq!(url.file_name(), NAME);
        assert_eq!(head.status, 200);
        assert_eq!(head.content_length, Some(archive.len() as u64));
        assert!(head.accepts_ranges());
        assert!(head.header("etag").is_some());
        // Incremental: none in the directory.
        let (_, h, _) = head_follow(
            &a.base().join("/incremental-snapshot.tar.bz2").unwrap(),
            &client,
        )
        .await
        .unwrap();
        assert_eq!(h.status, 404);
        // Path traversal is refused.
        let (h, _) = fetch_small(
            &a.base().join("/..%2fetc%2fpasswd").unwrap(),
            Method::Get,
            &[],
            b"",
            1 << 20,
            &client,
        )
        .await
        .unwrap();
        assert_eq!(h.status, 404);
        let rpc = br#"{"jsonrpc":"2.0","id":7,"method":"getClusterNodes"}"#;
        let (h, body) = fetch_small(&a.base(), Method::Post, &[], rpc, 1 << 20, &client)
            .await
            .unwrap();
        assert_eq!(h.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["result"][0]["rpc"], "10.0.0.1:8899");
    });
    // Ranged GET with raw HTTP: 206 + exact bytes; 416 past the end.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(a.addr).unwrap();
    write!(
        s,
        "GET /{NAME} HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let (h, n) = catchup_http::parse_response_head(&resp, &Default::default())
        .unwrap()
        .unwrap();
    assert_eq!(h.status, 206);
    assert_eq!(&resp[n..], &archive[10..20]);
    let mut s = std::net::TcpStream::connect(a.addr).unwrap();
    write!(
        s,
        "GET /{NAME} HTTP/1.1\r\nHost: x\r\nRange: bytes={}-\r\nConnection: close\r\n\r\n",
        archive.len()
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let (h, _) = catchup_http::parse_response_head(&resp, &Default::default())
        .unwrap()
        .unwrap();
    assert_eq!(h.status, 416);
}

#[test]
fn demo_generated_snapshot_from_three_rated_sources_verifies() {
    let work = tempfile::tempdir().unwrap();
    let mut cfg = catchup::solana::download::demo::DemoConfig::new(work.path().to_path_buf());
    cfg.accounts = 20_000;
    cfg.chunk_size_bytes = 256 * 1024;
    let rep = catchup::solana::download::demo::run_demo(&cfg, Box::new(|_| {})).expect("demo");
    assert!(rep.sync.complete, "{rep:?}");
    let v = rep.sync.verified.as_ref().unwrap();
    assert_eq!(v["lt_hash_ok"], true);
    assert_eq!(v["capitalization_ok"], true);
    assert_eq!(v["accounts_total"], 20_000);
    assert_eq!(rep.sync.sources.len(), 3);
    assert_eq!(rep.sync.size_bytes, rep.archive_bytes);
}

/// A copy with one byte changed in every 256 KiB chunk, under the same name, size and
/// mtime (so the same ETag: it joins the honest sources' group).
fn lying_copy(honest: &Path, archive: &[u8]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(NAME);
    let mut bad = archive.to_vec();
    let chunk = 256 * 1024;
    for c in 0..bad.len().div_ceil(chunk) {
        let i = (c * chunk + chunk / 2).min(bad.len() - 1);
        bad[i] ^= 0x20;
    }
    std::fs::write(&p, &bad).unwrap();
    let t = std::fs::metadata(honest.join(NAME))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(t)
        .unwrap();
    d
}

/// Our serve answers a ranged HEAD asking for the content's sha-256 (RFC 9530), and the
/// audit bisects over those digests: the lying source is found for a few chunks and named;
/// the walk (same servers, same run) is the baseline.
#[test]
fn a_lying_source_is_found_by_digest_bisection_and_named() {
    let Some((dir, archive)) = setup(9, 6 << 20) else {
        return;
    };
    let liar_dir = lying_copy(dir.path(), &archive);
    let a = Server::start(dir.path(), Some(30_000_000), true, vec![]);
    let b = Server::start(liar_dir.path(), Some(30_000_000), true, vec![]);
    let c = Server::start(dir.path(), Some(30_000_000), true, vec![]);
    let liar_url = b.base().to_string();

    // The digest a HEAD returns is the range's.
    let client = ClientConfig::default();
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .unwrap();
    let url = a.base().join(&format!("/{NAME}")).unwrap();
    let total = archive.len() as u64;
    let d = ex.run(async move {
        catchup::solana::download::sync::range_digest_of(
            &url,
            catchup_http::ByteRange::from_start_len(1000, 5000).unwrap(),
            total,
            &client,
        )
        .await
        .unwrap()
    });
    use sha2::Digest as _;
    let want: [u8; 32] = sha2::Sha256::digest(&archive[1000..6000]).into();
    assert_eq!(d, Some(want));

    let mut reports = Vec::new();
    for bisect in [true, false] {
        let data = tempfile::tempdir().unwrap();
        let mut cfg = config(data.path(), vec![a.base(), b.base(), c.base()]);
        cfg.audit_bisect = bisect;
        let rep = run(cfg);
        assert!(rep.complete, "{rep:?}");
        assert_eq!(downloaded(data.path()), archive);
        assert!(rep.audit_rounds >= 1, "{rep:?}");
        assert_eq!(rep.lying_sources.len(), 1, "{rep:?}");
        assert!(
            rep.lying_sources[0].starts_with(liar_url.trim_end_matches('/')),
            "{:?} vs {liar_url}",
            rep.lying_sources
        );
        eprintln!(
            "bisect {bisect}: {} chunks, audit refetched {} bytes in {} chunk fetches, {} digest queries",
            rep.chunks_total, rep.audit_bytes_refetched, rep.audit_fetches, rep.audit_digest_queries
        );
        reports.push(rep);
    }
    let (fast, walk) = (&reports[0], &reports[1]);
    assert_eq!(fast.audit_bisected_rounds, fast.audit_rounds);
    assert!(fast.audit_digest_queries >= 1);
    let log2n = 32 - (fast.chunks_total - 1).leading_zeros();
    assert!(fast.audit_digest_queries <= 2 * (1 + log2n), "{fast:?}");
    assert!(fast.audit_bytes_refetched <= 2 * 256 * 1024, "{fast:?}");
    assert_eq!(walk.audit_digest_queries, 0);
    assert_eq!(walk.audit_bisected_rounds, 0);
}

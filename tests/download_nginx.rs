//! Snapshot download against real nginx mirrors on loopback: fast, slow, one serving
//! another archive of the same slot, one killed mid-transfer, one serving a corrupted byte
//! range; SIGKILL of `catchup solana sync` and resume (nginx access logs show no finished
//! chunk fetched again); a mirror without Range support (`max_ranges 0`).
//!
//! Archives are generated snapshots; the sync verifies them with the snapshot pipeline
//! (LtHash, capitalization). Needs /usr/sbin/nginx (or $CATCHUP_NGINX): skipped with a
//! message when missing, failed under CI=true.

mod download_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use catchup::solana::download::sink::{PipelineSink, SinkFactory};
use catchup::solana::download::sync::{sync, SyncConfig};
use catchup_http::Url;
use download_support::*;

const CHUNK: u64 = 128 * 1024;

fn tools() -> bool {
    require(have_binary(&nginx_bin()), "nginx")
}

fn docroot_with(name: &str, bytes: &[u8], mtime_from: Option<&Path>) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    if let Some(src) = mtime_from {
        // Same mtime and size: nginx computes the same ETag, so the copy joins the group.
        let t = std::fs::metadata(src).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    d
}

/// A generated snapshot (valid LtHash and capitalization) in its own docroot.
fn generated(accounts: u64, seed: u64) -> (tempfile::TempDir, String, Vec<u8>) {
    let d = tempfile::tempdir().unwrap();
    let p = gen_snapshot(d.path(), accounts, seed);
    let name = p.file_name().unwrap().to_string_lossy().into_owned();
    let bytes = std::fs::read(&p).unwrap();
    (d, name, bytes)
}

fn pipeline_sink(datadir: &Path) -> Arc<SinkFactory> {
    let cfg = catchup::solana::snapshot::PipelineConfig {
        shards: 2,
        ..Default::default()
    };
    PipelineSink::factory(datadir.to_path_buf(), cfg)
}

fn rate(r: &str) -> MirrorOpts {
    MirrorOpts {
        limit_rate: Some(r.into()),
        no_ranges: false,
    }
}

#[test]
fn nginx_mirrors_with_faults_end_verified_and_bad_sources_named() {
    if !tools() {
        return;
    }
    let (good, name, archive) = generated(40_000, 1);
    let good_file = good.path().join(&name);
    // Another archive of the same slot (other accounts: other hash, name and size).
    let (other, other_name, other_bytes) = generated(30_000, 2);
    assert_ne!(other_bytes.len(), archive.len());
    // A copy with a corrupted byte in every 64 KiB, same name, size and mtime (same ETag).
    let mut bad = archive.clone();
    for i in (1000..bad.len()).step_by(64 * 1024) {
        bad[i] ^= 0x5a;
    }
    let corrupt = docroot_with(&name, &bad, Some(&good_file));

    let fast = Nginx::start(good.path(), &name, &rate("1m"));
    let slow = Nginx::start(good.path(), &name, &rate("150k"));
    let wrong = Nginx::start(other.path(), &other_name, &rate("1m"));
    let liar = Nginx::start(corrupt.path(), &name, &rate("1m"));
    let dying = Arc::new(Mutex::new(Nginx::start(good.path(), &name, &rate("200k"))));

    // Kill the dying mirror once it answered the probes (HEAD + 1-byte GET) and a chunk
    // request is on its way.
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (dying, stop) = (dying.clone(), stop.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(30) {
                let lines = parse_log(&dying.lock().unwrap().access_log());
                if lines
                    .iter()
                    .any(|l| l.status == 206 && l.range == Some((0, 0)))
                {
                    std::thread::sleep(Duration::from_millis(150));
                    dying.lock().unwrap().kill();
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let dying_url = Url::parse(&dying.lock().unwrap().base_url()).unwrap();

    let data = tempfile::tempdir().unwrap();
    let mut cfg = SyncConfig::new(data.path().to_path_buf());
    cfg.sources = vec![
        Url::parse(&fast.base_url()).unwrap(),
        Url::parse(&slow.base_url()).unwrap(),
        Url::parse(&wrong.base_url()).unwrap(),
        Url::parse(&liar.base_url()).unwrap(),
        dying_url.clone(),
    ];
    cfg.coordinator.chunk_size_bytes = CHUNK;
    cfg.coordinator.backoff_base_ms = 50;
    cfg.coordinator.max_failures = 3;
    // Sources spread over three fetching shards (coordination and cancels by message).
    cfg.shards = 3;
    cfg.client.io_timeout_ms = 5_000;
    cfg.progress_interval_ms = 60_000;
    let rep = sync(cfg, pipeline_sink(data.path()), Box::new(|_| {})).expect("sync");
    stop.store(true, Ordering::Relaxed);
    killer.join().unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&rep).unwrap());

    assert!(rep.complete, "{rep:#?}");
    assert_eq!(
        std::fs::read(data.path().join("download").join(&name)).unwrap(),
        archive
    );
    let v = rep.verified.as_ref().unwrap();
    assert_eq!(
        (v["lt_hash_ok"].as_bool(), v["capitalization_ok"].as_bool()),
        (Some(true), Some(true)),
        "{v}"
    );
    assert_eq!(v["accounts_total"], 40_000);
    assert!(
        rep.audit_rounds >= 1,
        "the corrupted mirror must have been caught: {rep:#?}"
    );
    let named = |port: u16, what: &str| {
        rep.bad_sources
            .iter()
            .any(|b| b.contains(&format!(":{port}/")) && b.contains(what))
    };
    assert!(
        named(wrong.port, "another archive"),
        "{:#?}",
        rep.bad_sources
    );
    assert!(named(liar.port, "bad bytes"), "{:#?}", rep.bad_sources);
    // The killed mirror failed at least once (and is dropped if it was asked again).
    let d = rep
        .sources
        .iter()
        .find(|s| s.url.contains(&format!(":{}/", dying_url.port)))
        .expect("dying source in group");
    assert!(d.failures >= 1 || d.dropped.is_some(), "{d:?}");
    // The honest fast and slow mirrors were never blamed.
    for p in [fast.port, slow.port] {
        assert!(
            !rep.bad_sources
                .iter()
                .any(|b| b.contains(&format!(":{p}/"))),
            "{:#?}",
            rep.bad_sources
        );
    }
}

#[test]
fn nginx_sigkill_resume_fetches_no_finished_chunk_again() {
    if !tools() {
        return;
    }
    let (root, name, archive) = generated(30_000, 3);
    let a = Nginx::start(root.path(), &name, &rate("300k"));
    let b = Nginx::start(root.path(), &name, &rate("300k"));
    let data = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_catchup");
    let args = |d: &Path| {
        let mut c = Command::new(bin);
        c.args([
            "solana",
            "sync",
            "--source",
            &a.base_url(),
            "--source",
            &b.base_url(),
            "--chunk-size",
            "128K",
            "--shards",
            "2",
            "--json",
        ])
        .arg("--datadir")
        .arg(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        c
    };
    let mut child = args(data.path()).spawn().unwrap();
    // Wait until a few chunks are journaled, then SIGKILL.
    let t = Instant::now();
    let mut done_at_kill = Vec::new();
    while t.elapsed() < Duration::from_secs(60) {
        if let Some(d) = journal_done(data.path()) {
            if d.iter().filter(|x| **x).count() >= 3 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // nginx logs a request when it ends: let the killed run's cut requests reach the logs
    // before they are counted as the first run's.
    std::thread::sleep(Duration::from_secs(1));
    if let Some(d) = journal_done(data.path()) {
        done_at_kill = d;
    }
    let finished: Vec<usize> = done_at_kill
        .iter()
        .enumerate()
        .filter(|(_, d)| **d)
        .map(|(i, _)| i)
        .collect();
    assert!(finished.len() >= 3, "{done_at_kill:?}");
    assert!(
        finished.len() < done_at_kill.len(),
        "the kill came after the end"
    );
    let log_len = [
        a.access_log().lines().count(),
        b.access_log().lines().count(),
    ];

    let out = args(data.path()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(
        out.stdout
            .split(|&c| c == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(report["complete"], true);
    assert_eq!(report["verified"]["lt_hash_ok"], true);
    assert_eq!(report["verified"]["capitalization_ok"], true);
    assert_eq!(
        report["chunks_resumed"].as_u64().unwrap() as usize,
        finished.len()
    );
    assert_eq!(
        std::fs::read(data.path().join("download").join(&name)).unwrap(),
        archive
    );

    // Ranged requests of the second run, from both mirrors' logs.
    let mut second_run = Vec::new();
    for (m, skip) in [(&a, log_len[0]), (&b, log_len[1])] {
        second_run.extend(parse_log(&m.access_log()).into_iter().skip(skip));
    }
    // A request may span several consecutive chunks: every chunk it touches counts.
    let fetched: Vec<u64> = second_run
        .iter()
        .filter(|l| l.status == 206 && l.bytes > 1)
        .filter_map(|l| l.range)
        .flat_map(|(start, end)| start / CHUNK..=end / CHUNK)
        .collect();
    assert!(!fetched.is_empty());
    for c in &fetched {
        assert!(
            !finished.contains(&(*c as usize)),
            "chunk {c} was finished before the kill and fetched again: {second_run:?}"
        );
    }
}

#[test]
fn nginx_without_ranges_single_stream() {
    if !tools() {
        return;
    }
    let (root, name, archive) = generated(10_000, 4);
    let m = Nginx::start(
        root.path(),
        &name,
        &MirrorOpts {
            limit_rate: None,
            no_ranges: true,
        },
    );
    let data = tempfile::tempdir().unwrap();
    let mut cfg = SyncConfig::new(data.path().to_path_buf());
    cfg.sources = vec![Url::parse(&m.base_url()).unwrap()];
    cfg.coordinator.chunk_size_bytes = CHUNK;
    cfg.progress_interval_ms = 60_000;
    let rep = sync(cfg, pipeline_sink(data.path()), Box::new(|_| {})).expect("sync");
    assert!(rep.complete, "{rep:#?}");
    assert_eq!(rep.verified.as_ref().unwrap()["lt_hash_ok"], true);
    assert!(!rep.sources[0].ranges);
    assert_eq!(
        std::fs::read(data.path().join("download").join(&name)).unwrap(),
        archive
    );
    // One full-body GET without Range (200) did the whole download (the probe asked
    // bytes=0-0 and got 200: no Range support).
    let gets: Vec<LogLine> = parse_log(&m.access_log())
        .into_iter()
        .filter(|l| l.status == 200 && l.range.is_none() && l.bytes as usize == archive.len())
        .collect();
    assert_eq!(gets.len(), 1, "{:?}", m.access_log());
}

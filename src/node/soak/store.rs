//! The store pipeline: `catchup bench store-crash-writer` appends records and prints `ack
//! FIRST LAST` once a batch is flushed; after each fault the suite reopens the store and
//! reads every acknowledged record back, byte for byte.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::fault::Tmpfs;
use super::plan::{Fault, Pipeline, TrialRng};
use super::proc::{limit_fds, Proc, Stream};
use super::table::Row;
use super::{run_row, SoakConfig, TrialResult};
use crate::node::bench_store::{crash_store_options, crash_value, BENCH_KIND};

const SEGMENT_SIZE_BYTES: u64 = 192 * 1024;
/// Bound of every wait for the writer.
const WAIT: Duration = Duration::from_secs(60);

pub fn run_rows(
    cfg: &SoakConfig,
    faults: &[Fault],
    dir: &Path,
    on_trial: &mut dyn FnMut(&TrialResult),
) -> Vec<Row> {
    faults
        .iter()
        .map(|&fault| {
            run_row(cfg, Pipeline::Store, fault, on_trial, |seed| {
                let tdir = dir.join(format!("{}-{seed}", fault.name()));
                let r = trial(cfg, fault, seed, &tdir);
                let _ = std::fs::remove_dir_all(&tdir);
                r
            })
        })
        .collect()
}

fn writer(cfg: &SoakConfig, dir: &Path, seed: u64, fd_limit: Option<u64>) -> std::io::Result<Proc> {
    let mut cmd = Command::new(&cfg.exe);
    cmd.args(["bench", "store-crash-writer", "--dir"])
        .arg(dir)
        .args(["--seed", &seed.to_string()])
        .args(["--records", "2000000", "--batch-max", "32"])
        .args(["--segment-size-bytes", &SEGMENT_SIZE_BYTES.to_string()])
        .args(["--batch-pause-us", "1000"]);
    if let Some(n) = fd_limit {
        limit_fds(&mut cmd, n);
    }
    Proc::spawn("store-crash-writer", &mut cmd)
}

/// Parse `ack FIRST LAST` into `acked`; true for an ack line.
fn take_ack(line: &str, acked: &mut BTreeSet<u64>) -> bool {
    let mut p = line.split_whitespace();
    if p.next() != Some("ack") {
        return false;
    }
    let (Some(a), Some(b)) = (
        p.next().and_then(|x| x.parse::<u64>().ok()),
        p.next().and_then(|x| x.parse::<u64>().ok()),
    ) else {
        return false;
    };
    if a <= b && b - a < 1_000_000 {
        acked.extend(a..=b);
    }
    true
}

/// Wait for `n` more acknowledgements (false if the writer ended first).
fn wait_acks(p: &Proc, n: u64, acked: &mut BTreeSet<u64>) -> bool {
    let mut seen = 0;
    p.watch(WAIT, |s, l| {
        if s == Stream::Out && take_ack(l, acked) {
            seen += 1;
        }
        seen >= n
    })
}

/// Collect the acknowledgements printed before the writer ended.
fn drain_acks(p: &Proc, acked: &mut BTreeSet<u64>) {
    for l in p.stdout_lines() {
        take_ack(&l, acked);
    }
}

/// Reopen the store and count acknowledged records missing or changed; also every
/// visible record must be whole. `Err` when the store does not open.
pub fn verify_store(dir: &Path, seed: u64, acked: &BTreeSet<u64>) -> Result<u64, String> {
    let dir: PathBuf = dir.to_path_buf();
    let acked = acked.clone();
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .map_err(|e| format!("cannot start an executor: {e}"))?;
    catchup_io::exec::run(&ex, async move {
        let store = catchup_io::store::Store::open(&dir, crash_store_options(SEGMENT_SIZE_BYTES))
            .await
            .map_err(|e| format!("store does not reopen: {e}"))?;
        let mut lost = 0u64;
        for seq in &acked {
            match store.get(BENCH_KIND, &seq.to_be_bytes()).await {
                Ok(Some(v)) if v == crash_value(seed, *seq) => {}
                _ => lost += 1,
            }
        }
        for k in store.keys_of_kind(BENCH_KIND) {
            let Ok(b) = <[u8; 8]>::try_from(k.as_slice()) else {
                return Err("a key that the writer never wrote".to_string());
            };
            let seq = u64::from_be_bytes(b);
            match store.get(BENCH_KIND, &k).await {
                Ok(Some(v)) if v == crash_value(seed, seq) => {}
                _ => return Err(format!("record {seq} is visible but not whole")),
            }
        }
        store
            .close()
            .await
            .map_err(|e| format!("close after verify: {e}"))?;
        Ok(lost)
    })
}

/// A run that must end with a clear error: non-zero exit, one `error:` line, no panic.
pub(crate) fn expect_clear_error(p: &mut Proc, t: &mut TrialResult, what: &str) {
    let Some(exit) = p.wait(WAIT) else {
        t.fail(format!("{what}: {} did not stop within {WAIT:?}", p.name));
        return;
    };
    t.rss(exit.max_rss_kb);
    let errs = p.error_lines();
    if exit.success() {
        t.fail(format!("{what}: {} exited 0", p.name));
    }
    if p.panicked() {
        t.fail(format!("{what}: {} panicked: {}", p.name, p.stderr_tail(3)));
    }
    match errs.len() {
        1 => t.error_line(&errs[0]),
        n => t.fail(format!(
            "{what}: {n} error lines ({})",
            if n == 0 {
                p.stderr_tail(3)
            } else {
                errs.join(" / ")
            }
        )),
    }
}

fn trial(cfg: &SoakConfig, fault: Fault, seed: u64, dir: &Path) -> TrialResult {
    let mut t = TrialResult::new(Pipeline::Store, fault, seed);
    let mut rng = TrialRng::new(seed);
    let mut acked = BTreeSet::new();
    let _ = std::fs::create_dir_all(dir);
    let store_dir = dir.join("store");
    let mut mount = None;
    if fault.needs_root() {
        let size = if fault == Fault::Enospc {
            rng.range(256, 1024) * 1024
        } else {
            64 << 20
        };
        match Tmpfs::mount(&dir.join("mnt"), size) {
            Ok(m) => mount = Some(m),
            Err(e) => {
                t.fail(e.to_string());
                return t.finish();
            }
        }
    }
    let store_dir = mount.as_ref().map_or(store_dir, |m| m.path.join("store"));
    let spawn = |limit| writer(cfg, &store_dir, seed, limit);
    let mut p = match spawn(if fault == Fault::FdLimit128 {
        Some(128)
    } else {
        None
    }) {
        Ok(p) => p,
        Err(e) => {
            t.fail(format!("spawn: {e}"));
            return t.finish();
        }
    };
    match fault {
        Fault::Sigkill | Fault::Sigterm | Fault::FdLimit128 => {
            let n = rng.range(1, 60);
            if !wait_acks(&p, n, &mut acked) {
                if fault == Fault::FdLimit128 {
                    // A clear error is acceptable under the limit.
                    expect_clear_error(&mut p, &mut t, "under RLIMIT_NOFILE 128");
                    return t.finish();
                }
                t.fail(format!(
                    "writer ended before {n} acks: {}",
                    p.stderr_tail(3)
                ));
            }
            p.signal(if fault == Fault::Sigterm {
                libc::SIGTERM
            } else {
                libc::SIGKILL
            });
            if let Some(e) = p.wait(WAIT) {
                t.rss(e.max_rss_kb);
            }
            drain_acks(&p, &mut acked);
        }
        Fault::Enospc => {
            // Runs until the tmpfs is full.
            expect_clear_error(&mut p, &mut t, "disk full");
            drain_acks(&p, &mut acked);
            if let Some(m) = &mount {
                if let Err(e) = m.resize(64 << 20) {
                    t.fail(format!("remount bigger: {e}"));
                }
            }
        }
        Fault::ReadOnly => {
            let n = rng.range(1, 40);
            if !wait_acks(&p, n, &mut acked) {
                t.fail(format!(
                    "writer ended before {n} acks: {}",
                    p.stderr_tail(3)
                ));
            }
            p.kill();
            drain_acks(&p, &mut acked);
            let Some(m) = &mount else {
                return t.finish();
            };
            if let Err(e) = m.set_read_only(true) {
                t.fail(format!("remount read-only: {e}"));
                return t.finish();
            }
            match spawn(None) {
                Ok(mut q) => expect_clear_error(&mut q, &mut t, "read-only data directory"),
                Err(e) => t.fail(format!("spawn: {e}")),
            }
            if let Err(e) = m.set_read_only(false) {
                t.fail(format!("remount read-write: {e}"));
            }
        }
        other => {
            t.fail(format!("{} does not apply to the store", other.name()));
            return t.finish();
        }
    }
    drop(p);
    match verify_store(&store_dir, seed, &acked) {
        Ok(lost) => t.lost = Some(lost),
        Err(e) => t.fail(e),
    }
    // The restart continues: it must acknowledge new records, which must read back too.
    let started = Instant::now();
    match spawn(None) {
        Ok(mut q) => {
            if wait_acks(&q, 1, &mut acked) {
                t.recover_ms = Some(started.elapsed().as_millis() as u64);
            } else {
                t.fail(format!(
                    "restart acknowledged nothing: {}",
                    q.stderr_tail(3)
                ));
            }
            wait_acks(&q, 3, &mut acked);
            let e = q.kill();
            t.rss(e.max_rss_kb);
            drain_acks(&q, &mut acked);
        }
        Err(e) => t.fail(format!("spawn restart: {e}")),
    }
    match verify_store(&store_dir, seed, &acked) {
        Ok(lost) => t.lost = Some(t.lost.unwrap_or(0).max(lost)),
        Err(e) => t.fail(e),
    }
    if acked.is_empty() {
        t.fail("no record was ever acknowledged");
    }
    t.finish()
}

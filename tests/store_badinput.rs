//! Bad input for the data directory and the store, through the `catchup` binary: each
//! gives exactly one `error:` line on stderr, a non-zero exit, no panic, and loses nothing
//! that was acknowledged.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use catchup::node::bench_store::{crash_store_options, crash_value, BENCH_KIND};
use catchup_io::datadir::DataDir;
use catchup_io::store::Store;

const SEGMENT_SIZE_BYTES: u64 = 256 * 1024;

fn catchup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run catchup")
}

/// Exit non-zero with exactly one `error:` line naming `needle`, and no panic.
fn assert_one_error_line(out: &Output, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "want one error line, got: {stderr}");
    assert!(
        errors[0].contains(needle),
        "error line {:?} should mention {needle:?}",
        errors[0]
    );
    errors[0].to_string()
}

use catchup_io::exec::run_unbound as run;

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

#[test]
fn zero_shards_is_one_clear_line() {
    let out = catchup(&["bench", "store", "--shards", "0", "--records", "10"]);
    assert_one_error_line(&out, "--shards");
}

#[test]
fn unwritable_datadir_is_one_clear_line() {
    let t = tmp();
    let file = t.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let d = file.join("datadir");
    let out = catchup(&[
        "bench",
        "store",
        "--shards",
        "1",
        "--records",
        "10",
        "--datadir",
        d.to_str().unwrap(),
    ]);
    assert_one_error_line(&out, "cannot create data directory");
}

#[test]
fn datadir_in_use_names_the_holder_pid() {
    let t = tmp();
    let _held = DataDir::open(t.path()).unwrap();
    let out = catchup(&[
        "bench",
        "store",
        "--shards",
        "1",
        "--records",
        "10",
        "--datadir",
        t.path().to_str().unwrap(),
    ]);
    let line = assert_one_error_line(&out, "in use by another process");
    assert!(
        line.contains(&format!("pid {}", std::process::id())),
        "{line}"
    );
}

fn write_records(dir: &Path, records: u64) -> Output {
    Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["bench", "store-crash-writer", "--dir"])
        .arg(dir)
        .args([
            "--seed",
            "7",
            "--records",
            &records.to_string(),
            "--segment-size-bytes",
            &SEGMENT_SIZE_BYTES.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run writer")
}

/// Highest acknowledged sequence number in the writer's stdout.
fn max_acked(out: &Output) -> Option<u64> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("ack "))
        .map(|r| r.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .max()
}

fn check_acked(dir: &Path, max: u64) {
    let dir = dir.to_path_buf();
    run(async move {
        let s = Store::open(&dir, crash_store_options(SEGMENT_SIZE_BYTES))
            .await
            .expect("store opens");
        for seq in 0..=max {
            assert_eq!(
                s.get(BENCH_KIND, &seq.to_be_bytes())
                    .await
                    .unwrap()
                    .as_deref(),
                Some(&crash_value(7, seq)[..]),
                "acknowledged record {seq}"
            );
        }
        s.close().await.expect("close");
    });
}

#[test]
fn corrupt_segment_is_one_clear_line_and_nothing_is_cut() {
    let t = tmp();
    let dir = t.path().join("store");
    let out = write_records(&dir, 40);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(max_acked(&out), Some(39));
    let seg: PathBuf = dir.join("seg-00000001.dat");
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let out = write_records(&dir, 80);
    let line = assert_one_error_line(&out, "corrupt store segment");
    assert!(
        line.contains("seg-00000001.dat") && line.contains("at offset"),
        "{line}"
    );
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "segment left untouched"
    );
    // Undo the damage: every acknowledged record is still there.
    bytes[mid] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    check_acked(&dir, 39);
}

/// Mount a tiny tmpfs at `at`; `None` (after printing why) when that is impossible here.
fn mount_tiny_tmpfs(at: &Path, size: &str) -> Option<TmpfsGuard> {
    std::fs::create_dir_all(at).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(TmpfsGuard(at.to_path_buf())),
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
            assert!(
                !is_ci(),
                "CI=true: cannot mount a tmpfs for the full-disk test: {why}"
            );
            skip_note!("skipping full-disk test: cannot mount a tmpfs ({why}); needs root");
            None
        }
        Err(e) => {
            assert!(!is_ci(), "CI=true: `mount` unavailable: {e}");
            skip_note!("skipping full-disk test: `mount` unavailable: {e}");
            None
        }
    }
}

struct TmpfsGuard(PathBuf);

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_is_one_clear_line_and_acknowledged_records_survive() {
    let t = tmp();
    let mnt = t.path().join("tiny");
    let Some(_guard) = mount_tiny_tmpfs(&mnt, "1m") else {
        return;
    };
    // The benchmark checks free space up front.
    let out = catchup(&[
        "bench",
        "store",
        "--shards",
        "1",
        "--records",
        "100000",
        "--datadir",
        mnt.to_str().unwrap(),
    ]);
    assert_one_error_line(&out, "not enough free space");
    // A writer that runs into ENOSPC stops with one line; what it acknowledged is intact.
    let dir = mnt.join("store");
    let out = write_records(&dir, 1_000_000);
    let line = assert_one_error_line(&out, "store");
    assert!(
        line.contains("No space left") || line.contains("short write"),
        "{line}"
    );
    let max = max_acked(&out).expect("some batches were acknowledged before the disk filled");
    check_acked(&dir, max);
}

#[test]
fn store_refuses_writes_after_a_failed_write_and_keeps_flushed_records() {
    use catchup_io::store::{StoreError, StoreOptions};
    let t = tmp();
    let mnt = t.path().join("tiny");
    let Some(_guard) = mount_tiny_tmpfs(&mnt, "512k") else {
        return;
    };
    let dir = mnt.join("store");
    let opts = StoreOptions {
        write_buffer_bytes: 16 * 1024,
        use_checkpoint: false,
        ..StoreOptions::default()
    };
    let flushed = run({
        let dir = dir.clone();
        let opts = opts.clone();
        async move {
            let mut s = Store::open(&dir, opts).await.unwrap();
            let value = vec![0xABu8; 3000];
            let mut flushed = 0u32;
            let mut i = 0u32;
            // Bounded: a 512 KiB tmpfs fills long before 10 000 records of 3 KB.
            let err = loop {
                assert!(i < 10_000, "the tiny tmpfs never filled");
                if let Err(e) = s.put(1, &i.to_be_bytes(), &value).await {
                    break e;
                }
                i += 1;
                if i % 8 == 0 {
                    match s.flush().await {
                        Ok(()) => flushed = i,
                        Err(e) => break e,
                    }
                }
            };
            assert!(
                matches!(err, StoreError::Io { .. }),
                "first failure is the I/O error: {err}"
            );
            assert!(matches!(
                s.put(1, b"after", b"x").await,
                Err(StoreError::Poisoned { .. })
            ));
            assert!(matches!(s.flush().await, Err(StoreError::Poisoned { .. })));
            let _ = s.close().await;
            flushed
        }
    });
    assert!(
        flushed > 0,
        "some batches were flushed before the disk filled"
    );
    run(async move {
        let s = Store::open(&dir, opts)
            .await
            .expect("reopens on a full disk");
        for i in 0..flushed {
            assert_eq!(
                s.get(1, &i.to_be_bytes()).await.unwrap().as_deref(),
                Some(&[0xABu8; 3000][..]),
                "flushed record {i}"
            );
        }
        s.close().await.unwrap();
    });
}

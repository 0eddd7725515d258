//! `catchup solana sync --ledger DIR` / `--snapshots-dir DIR`: the verified full and
//! incremental archives of the shared fixtures, served by `catchup solana snapshot serve`,
//! end up under their Agave names where agave-validator (`DIR/remote/`) and Firedancer
//! (flat `[paths] snapshots`) look, byte for byte, with nothing else beside them, and the
//! validator flags are printed. An archive whose accounts hash is not the one its name
//! gives is not placed.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const FULL: &str = "snapshot-1-5pgMpQj4MZYWauD1VnoNfmGAdUQCe6VVCSCQMNbDoxf7.tar.zst";
const INCR: &str = "incremental-snapshot-1-4-43FT6mnmRW9XbxpCzqH3ogYexHXboG7d8vmf3gBLvLrR.tar.zst";

fn snapshots() -> Option<PathBuf> {
    let dir = std::env::var_os("CATCHUP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("solana/snapshots");
    if dir.join(FULL).exists() && dir.join(INCR).exists() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("snapshot fixtures missing at {} (CI=true)", dir.display());
    }
    skip_note!("skipping: snapshot fixtures missing at {}", dir.display());
    None
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn serve(dir: &Path) -> (Guard, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["solana", "snapshot", "serve"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn snapshot serve");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let child = Guard(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("snapshot serve said {line:?}"))
        .to_string();
    (child, format!("http://{addr}/"))
}

fn sync(source: &str, extra: &[&str], target: (&str, &Path)) -> (i32, String, String) {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args([
            "solana",
            "sync",
            "--source",
            source,
            "--download-shards",
            "1",
        ])
        .arg("--datadir")
        .arg(data.path())
        .args(extra)
        .arg(target.0)
        .arg(target.1)
        .output()
        .expect("run solana sync");
    // Nothing is left behind in the data directory's download folder once placed.
    let left: Vec<_> = std::fs::read_dir(data.path().join("download"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    if out.status.success() {
        assert!(left.is_empty(), "left in download/: {left:?}");
    }
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn verified_archives_land_where_validators_look() {
    let Some(fixtures) = snapshots() else { return };
    let (_server, url) = serve(&fixtures);
    let work = tempfile::tempdir().unwrap();

    // agave-validator's ledger: downloaded archives in remote/.
    let ledger = work.path().join("ledger");
    let (code, out, err) = sync(&url, &[], ("--ledger", &ledger));
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out2, err) = sync(
        &url,
        &["--incremental", "--verify", "stream"],
        ("--ledger", &ledger),
    );
    assert_eq!(code, 0, "{out2}\n{err}");
    assert_eq!(listing(&ledger), vec!["remote".to_string()]);
    assert_eq!(
        listing(&ledger.join("remote")),
        vec![INCR.to_string(), FULL.to_string()]
    );
    for name in [FULL, INCR] {
        assert_eq!(
            std::fs::read(ledger.join("remote").join(name)).unwrap(),
            std::fs::read(fixtures.join(name)).unwrap(),
            "{name} differs from what the source served"
        );
    }
    let l = ledger.display().to_string();
    assert!(
        out.contains(&format!("placed at {l}/remote/{FULL}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("agave-validator --ledger {l} --no-snapshot-fetch")),
        "{out}"
    );
    assert!(
        out.contains(&format!("[paths] snapshots = \"{l}/remote\"")),
        "{out}"
    );
    assert!(out2.contains("incremental snapshot placed at"), "{out2}");

    // A snapshots directory (Firedancer's [paths] snapshots): flat.
    let snaps = work.path().join("snaps");
    let (code, out, err) = sync(&url, &["--json"], ("--snapshots-dir", &snaps));
    assert_eq!(code, 0, "{out}\n{err}");
    serde_json::from_str::<serde_json::Value>(out.trim()).expect("stdout stays one JSON report");
    assert!(err.contains("--snapshots"), "{err}");
    let (code, _, err) = sync(
        &url,
        &["--incremental", "--verify", "stream"],
        ("--snapshots-dir", &snaps),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(listing(&snaps), vec![INCR.to_string(), FULL.to_string()]);
}

#[test]
fn an_archive_that_does_not_verify_is_not_placed() {
    let Some(fixtures) = snapshots() else { return };
    // A source serving an archive under a name whose hash the contents do not match: the
    // validator would trust the name, so the hand-off refuses it.
    let work = tempfile::tempdir().unwrap();
    let bad_dir = work.path().join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let bad = "snapshot-1-4Mz7DUaUELbQpWtpqFHmfDkuCuGHD2e9cnnAgw3eGWEV.tar.zst";
    std::fs::copy(fixtures.join(FULL), bad_dir.join(bad)).unwrap();
    let (_server, url) = serve(&bad_dir);
    let ledger = work.path().join("ledger");
    let (code, out, err) = sync(&url, &[], ("--ledger", &ledger));
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(
        !ledger.join("remote").join(bad).exists(),
        "an unverified archive was placed"
    );
    assert!(!out.contains("placed at"), "{out}");
    assert!(err.contains("not the hash its name gives"), "{err}");
}

//! `catchup eth export-state`: two `catchup eth serve` peers serve the devnet fixture,
//! `catchup eth sync --datadir D` syncs its state (root 8fcfb02c…728b), the export writes
//! it as JSON lines with the pivot header on the first line, and `eth state-root --dump`
//! on the export gives the pivot's root with as many accounts, storage slots and contracts
//! as the fixture's own dump. The same directory's post-merge history exports as ere and
//! reads back as the same chain. `eth serve --datadir` serves what the sync stored, and
//! catchup fast- and snap-syncs the same root from it. An export of a data directory that
//! never synced fails with one line.

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

const ROOT: &str = "0x8fcfb02cfca007773bd55bc1c3e50a3c8612a59c87ce057e5957e8bf17c1728b";

fn devnet() -> Option<PathBuf> {
    let dir = std::env::var_os("CATCHUP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("ethereum/devnet");
    if dir.join("headstate.json").exists() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("devnet fixture missing at {} (CI=true)", dir.display());
    }
    skip_note!("skipping: devnet fixture missing at {}", dir.display());
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

fn start_server(dir: &Path) -> (Guard, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["eth", "serve", "--listen", "127.0.0.1:0", "--json"])
        .arg("--chain")
        .arg(dir.join("chain.rlp"))
        .arg("--genesis")
        .arg(dir.join("genesis.json"))
        .arg("--state")
        .arg(dir.join("headstate.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn catchup eth serve");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let child = Guard(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("serve printed {line:?}: {e}"));
    (child, v["enode"].as_str().unwrap().to_string())
}

fn catchup(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(args)
        .output()
        .expect("run catchup")
}

fn state_root_json(file: &Path) -> (i32, serde_json::Value) {
    let out = catchup(&[
        "eth",
        "state-root",
        "--json",
        "--dump",
        file.to_str().unwrap(),
    ]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "state-root printed {:?} ({e}); stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn exported_state_gives_the_pivot_root() {
    let Some(dir) = devnet() else { return };
    let servers: Vec<_> = (0..2).map(|_| start_server(&dir)).collect();
    let datadir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_catchup"));
    cmd.args(["eth", "sync", "--shards", "2", "--pivot-distance", "0"])
        .args(["--receipts", "false", "--node-batch", "32"])
        .args(["--timeout-s", "120", "--json", "--expect-state-root", ROOT])
        .arg("--genesis")
        .arg(dir.join("genesis.json"))
        .arg("--datadir")
        .arg(datadir.path());
    for (_, enode) in &servers {
        cmd.args(["--peer", enode]);
    }
    let out = cmd.output().expect("run eth sync");
    assert_eq!(
        out.status.code(),
        Some(0),
        "sync: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pivot = report["report"]["status"]["pivot_block"].as_u64().unwrap();
    let pivot_hash = report["report"]["status"]["pivot_hash"]
        .as_str()
        .unwrap()
        .to_string();
    drop(servers);

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("state.jsonl");
    let out = catchup(&[
        "eth",
        "export-state",
        "--datadir",
        datadir.path().to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "export-state: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["root"], ROOT);

    // The first line: root and pivot header (its keccak is the pivot hash).
    let text = std::fs::read_to_string(&file).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["root"], ROOT);
    assert_eq!(first["pivot"]["number"], pivot);
    let header = hex::decode(
        first["pivot"]["header"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .unwrap();
    assert_eq!(
        format!("{:#x}", alloy_primitives::keccak256(&header)),
        pivot_hash.to_lowercase()
    );
    assert_eq!(
        first["pivot"]["hash"].as_str().unwrap(),
        pivot_hash.to_lowercase()
    );
    let entries: Vec<serde_json::Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(entries
        .iter()
        .all(|e| e["key"].is_string() && e["codeHash"].is_string()));

    // eth state-root --dump on the export: the pivot's root, the fixture's counts.
    let (code, got) = state_root_json(&file);
    assert_eq!(code, 0, "{got}");
    assert_eq!(got["root"], ROOT);
    assert_eq!(got["matches_claimed"], true);
    let (_, want) = state_root_json(&dir.join("headstate.json"));
    assert_eq!(want["root"], ROOT);
    for k in ["accounts", "storage_slots", "contracts"] {
        assert_eq!(got[k], want[k], "{k}: export {got} vs fixture {want}");
    }
    assert_eq!(got["accounts"].as_u64().unwrap() as usize, entries.len());

    // The post-merge history of the same sync as ere (no receipts were fetched): blocks
    // 0..=600 in one file named by the head's hash, reading back the stored chain.
    let ere_dir = work.path().join("ere");
    let out = catchup(&[
        "eth",
        "export-history",
        "--format",
        "ere",
        "--network",
        "devnet",
        "--datadir",
        datadir.path().to_str().unwrap(),
        "--genesis",
        dir.join("genesis.json").to_str().unwrap(),
        "--out",
        ere_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "export-history ere: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = report["report"]["head_hash"]
        .as_str()
        .unwrap()
        .to_lowercase();
    let name = format!("devnet-00000-{}-noproofs-noreceipts.ere", &head[2..10]);
    let bytes = std::fs::read(ere_dir.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (blocks, _) = catchup::eth::export::read_ere(&bytes).unwrap();
    assert_eq!(blocks.len(), 601);
    let mut parent = None;
    for b in &blocks {
        let h = catchup_eth::types::Header::decode(&b.header_rlp).unwrap();
        assert_eq!(h.number, b.number);
        if let Some(p) = parent {
            assert_eq!(h.parent_hash, p, "block {}", b.number);
        }
        parent = Some(alloy_primitives::keccak256(&b.header_rlp));
        assert!(b.slim_receipts_rlp.is_none());
        assert!(b.total_difficulty.is_some());
    }
    assert_eq!(format!("{:#x}", parent.unwrap()), head);

    // Serving from the synced directory: catchup syncs from catchup, fast and snap.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["eth", "serve", "--listen", "127.0.0.1:0", "--json"])
        .arg("--datadir")
        .arg(datadir.path())
        .arg("--genesis")
        .arg(dir.join("genesis.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn eth serve --datadir");
    let mut sout = BufReader::new(serve.stdout.take().unwrap());
    let mut serr = serve.stderr.take().unwrap();
    let serve = Guard(serve);
    let mut line = String::new();
    sout.read_line(&mut line).unwrap();
    if line.is_empty() {
        let mut e = String::new();
        let _ = serr.read_to_string(&mut e);
        panic!("eth serve --datadir printed nothing: {e}");
    }
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = sout.read_to_end(&mut sink);
    });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["state"], true, "{v}");
    assert_eq!(v["head_number"], 600, "{v}");
    // The first start reads the headers and keeps their index for the next.
    assert_eq!(v["chain_index"], "scanned", "{v}");
    assert!(datadir.path().join("chain-index.bin").exists());
    let enode = v["enode"].as_str().unwrap().to_string();
    for mode in ["fast", "snap"] {
        let again = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
            .args([
                "eth",
                "sync",
                "--shards",
                "2",
                "--pivot-distance",
                "0",
                "--mode",
                mode,
            ])
            .args(["--receipts", "false", "--pivot-agreement", "1"])
            .args(["--timeout-s", "120", "--json", "--expect-state-root", ROOT])
            .arg("--genesis")
            .arg(dir.join("genesis.json"))
            .arg("--datadir")
            .arg(again.path())
            .args(["--peer", &enode])
            .output()
            .expect("run eth sync from the served directory");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{mode} sync from the directory: {text}"
        );
        let r: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(r["report"]["state_root"], ROOT);
        assert_eq!(
            r["report"]["head_hash"].as_str().unwrap().to_lowercase(),
            report["report"]["head_hash"]
                .as_str()
                .unwrap()
                .to_lowercase()
        );
    }
    drop(serve);

    // A changed balance changes the root: exit 1 naming the mismatch.
    let bad = work.path().join("bad.jsonl");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut e: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    e["balance"] = serde_json::json!("12345");
    lines[1] = e.to_string();
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let (code, got) = state_root_json(&bad);
    assert_eq!(code, 1, "{got}");
    assert_eq!(got["matches_claimed"], false);
}

#[test]
fn export_of_an_unsynced_directory_fails_with_one_line() {
    let d = tempfile::tempdir().unwrap();
    let out = catchup(&[
        "eth",
        "export-state",
        "--datadir",
        d.path().to_str().unwrap(),
        "--out",
        d.path().join("x.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sync-report.json") || err.contains("no sync report"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!d.path().join("x.jsonl").exists());
}

#[test]
fn serving_a_directory_needs_its_genesis_and_says_how() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    let out = catchup(&["eth", "serve", "--listen", "127.0.0.1:0", "--datadir", dir]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--genesis") && err.contains("--genesis-hash"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // With a genesis hash, an unsynced directory is refused in one line too.
    let hash = format!("0x{}", "11".repeat(32));
    let out = catchup(&[
        "eth",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--datadir",
        dir,
        "--genesis-hash",
        &hash,
        "--network-id",
        "779",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
}

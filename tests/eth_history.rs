//! History hand-off: `catchup eth serve --era1` serves the shared mainnet era1 (blocks
//! 0–8191) over RLPx, `catchup eth sync --history-only --datadir D` fetches its headers,
//! bodies and receipts (no state), and `catchup eth export-history --format era1` writes
//! it back: the file gets the same name (its accumulator root), decodes to the same
//! headers, bodies, receipts and total difficulties, and `eth verify-era1` accepts it.
//! `--format ere` writes the same history as an ere file that reads back the same.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const ERA1: &str = "mainnet-00000-5ec1ffb8.era1";
const GENESIS_HASH: &str = "0xd4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3";

fn chain_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("CATCHUP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("ethereum/chain");
    if dir.join(ERA1).exists() && dir.join("mainnet-genesis-alloc.json").exists() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "mainnet era1 fixture missing at {} (CI=true)",
            dir.display()
        );
    }
    skip_note!(
        "skipping: mainnet era1 fixture missing at {}",
        dir.display()
    );
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

/// The mainnet genesis file: the fixture's allocation with the mainnet genesis header
/// fields (its hash is checked below against the era1's block 0).
fn mainnet_genesis_json(alloc_file: &std::path::Path) -> String {
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(alloc_file).unwrap()).unwrap();
    serde_json::json!({
        "nonce": "0x0000000000000042",
        "timestamp": "0x0",
        "extraData": "0x11bbe8db4e347b4e8c937c1c8370e4b5ed33adb3db69cbdb7a38e1e50b1b82fa",
        "gasLimit": "0x1388",
        "difficulty": "0x400000000",
        "alloc": a["alloc"],
    })
    .to_string()
}

#[test]
fn era1_served_synced_history_only_and_exported_is_the_same_era1() {
    let Some(dir) = chain_dir() else { return };
    let original = dir.join(ERA1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["eth", "serve", "--listen", "127.0.0.1:0", "--json"])
        .args(["--network-id", "1", "--genesis-hash", GENESIS_HASH])
        .arg("--era1")
        .arg(&original)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn eth serve --era1");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let server = Guard(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("serve printed {line:?}: {e}"));
    let enode = v["enode"].as_str().unwrap().to_string();

    let work = tempfile::tempdir().unwrap();
    let datadir = work.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["eth", "sync", "--history-only", "--shards", "2"])
        .args(["--genesis-hash", GENESIS_HASH, "--network-id", "1"])
        .args(["--pivot-distance", "0", "--timeout-s", "120", "--json"])
        .args(["--peer", &enode])
        .arg("--datadir")
        .arg(&datadir)
        .output()
        .expect("run eth sync");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "sync: {text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["report"]["headers_stored"], 8191, "{text}");
    assert_eq!(
        report["report"]["state_nodes_stored"], 0,
        "history only: {text}"
    );
    assert_eq!(report["report"]["status"]["receipts_complete"], true);
    drop(server);

    let genesis = work.path().join("genesis.json");
    std::fs::write(
        &genesis,
        mainnet_genesis_json(&dir.join("mainnet-genesis-alloc.json")),
    )
    .unwrap();
    let export_dir = work.path().join("era1");
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["eth", "export-history", "--format", "era1"])
        .arg("--datadir")
        .arg(&datadir)
        .arg("--genesis")
        .arg(&genesis)
        .arg("--out")
        .arg(&export_dir)
        .output()
        .expect("run eth export-history");
    assert!(
        out.status.success(),
        "export-history: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = std::fs::read_dir(&export_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![ERA1.to_string()],
        "same name: same accumulator root"
    );

    // Same headers, bodies, receipts and total difficulties, block by block.
    let a_bytes = std::fs::read(&original).unwrap();
    let b_bytes = std::fs::read(export_dir.join(ERA1)).unwrap();
    let a = catchup_eth::era1::Era1::open(&a_bytes).unwrap();
    let b = catchup_eth::era1::Era1::open(&b_bytes).unwrap();
    assert_eq!(a.accumulator, b.accumulator);
    assert_eq!(a.block_count(), 8192);
    assert_eq!(b.block_count(), 8192);
    let mut n = 0;
    for (x, y) in a.blocks().zip(b.blocks()) {
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.hash, y.hash, "block {n}");
        assert_eq!(x.header.encode(), y.header.encode(), "header {n}");
        assert_eq!(x.body.encode(), y.body.encode(), "body {n}");
        assert_eq!(
            catchup_eth::types::encode_receipts(&x.receipts),
            catchup_eth::types::encode_receipts(&y.receipts),
            "receipts {n}"
        );
        assert_eq!(x.total_difficulty, y.total_difficulty, "td {n}");
        n += 1;
    }
    assert_eq!(n, 8192);
    eprintln!(
        "export {} bytes, original {} bytes, byte-identical: {}",
        b_bytes.len(),
        a_bytes.len(),
        a_bytes == b_bytes
    );

    // The same history as ere: one file named by its last block's hash, the same
    // headers, bodies, receipts (slim form) and total difficulties, the same accumulator.
    let ere_dir = work.path().join("ere");
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["eth", "export-history", "--format", "ere"])
        .arg("--datadir")
        .arg(&datadir)
        .arg("--genesis")
        .arg(&genesis)
        .arg("--out")
        .arg(&ere_dir)
        .output()
        .expect("run eth export-history --format ere");
    assert!(
        out.status.success(),
        "export-history ere: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last_hash = a.blocks().last().unwrap().unwrap().hash;
    let ere_name = format!(
        "mainnet-00000-{}-noproofs.ere",
        hex::encode(&last_hash.as_slice()[..4])
    );
    let names: Vec<String> = std::fs::read_dir(&ere_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![ere_name.clone()]);
    let ere_bytes = std::fs::read(ere_dir.join(&ere_name)).unwrap();
    let (ere, acc) = catchup::eth::export::read_ere(&ere_bytes).unwrap();
    assert_eq!(acc, a.accumulator);
    assert_eq!(ere.len(), 8192);
    for (x, y) in a.blocks().zip(ere.iter()) {
        let x = x.unwrap();
        assert_eq!(x.header.encode(), y.header_rlp, "header {}", y.number);
        assert_eq!(x.body.encode(), y.body_rlp, "body {}", y.number);
        assert_eq!(
            Some(catchup_eth::types::encode_receipts_eth69(&x.receipts)),
            y.slim_receipts_rlp,
            "receipts {}",
            y.number
        );
        assert_eq!(
            Some(x.total_difficulty),
            y.total_difficulty,
            "td {}",
            y.number
        );
    }

    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["eth", "verify-era1"])
        .arg(export_dir.join(ERA1))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify-era1: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

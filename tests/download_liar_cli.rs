//! `catchup solana sync` from three `catchup solana snapshot serve` processes, one of which
//! serves a copy with damaged bytes under the same name, size and mtime: the archive is
//! verified in the end, the lying source is found by bisection over range digests (our
//! serve answers RFC 9530 digests) and named in the report's `forged_sources`.

mod download_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use download_support::*;

const BIN: &str = env!("CARGO_BIN_EXE_catchup");
const CHUNK: usize = 128 * 1024;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> (Kill, String) {
    let mut child = Command::new(BIN)
        .args(["solana", "snapshot", "serve"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--rate-limit", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("snapshot serve said {line:?}"))
        .to_string();
    (Kill(child), addr)
}

#[test]
fn sync_names_a_lying_serve_found_by_digest_bisection() {
    let honest = tempfile::tempdir().unwrap();
    let archive_path = gen_snapshot(honest.path(), 20_000, 4);
    let name = archive_path.file_name().unwrap().to_owned();
    let archive = std::fs::read(&archive_path).unwrap();
    // The lie: one byte in every chunk, same name, size and mtime (same group).
    let liar = tempfile::tempdir().unwrap();
    let mut bad = archive.clone();
    for c in 0..bad.len().div_ceil(CHUNK) {
        let i = (c * CHUNK + CHUNK / 2).min(bad.len() - 1);
        bad[i] ^= 0x01;
    }
    let lp = liar.path().join(&name);
    std::fs::write(&lp, &bad).unwrap();
    let t = std::fs::metadata(&archive_path)
        .unwrap()
        .modified()
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&lp)
        .unwrap()
        .set_modified(t)
        .unwrap();

    let (_a, a) = serve(honest.path());
    let (_b, b) = serve(liar.path());
    let (_c, c) = serve(honest.path());
    let data = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["solana", "sync", "--chunk-size", "128K", "--json"])
        .args(["--source", &format!("http://{a}/")])
        .args(["--source", &format!("http://{b}/")])
        .args(["--source", &format!("http://{c}/")])
        .arg("--datadir")
        .arg(data.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    eprintln!(
        "audit: {} rounds, {} bisected, {} digest queries, {} chunk fetches, {} bytes refetched of {}",
        v["audit_rounds"],
        v["audit_bisected_rounds"],
        v["audit_digest_queries"],
        v["audit_fetches"],
        v["audit_bytes_refetched"],
        archive.len()
    );
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(
        std::fs::read(data.path().join("download").join(&name)).unwrap(),
        archive
    );
    let forged: Vec<String> = v["forged_sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    assert_eq!(forged.len(), 1, "{v}");
    assert!(forged[0].contains(&b), "{forged:?} should name {b}");
    assert!(v["audit_bisected_rounds"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        v["audit_bytes_refetched"].as_u64().unwrap() <= 2 * CHUNK as u64,
        "{v}"
    );
}

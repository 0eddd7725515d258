//! `catchup solana snapshot verify|inspect|generate` end to end through the binary.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::path::PathBuf;
use std::process::Command;

fn catchup() -> Command {
    Command::new(env!("CARGO_BIN_EXE_catchup"))
}

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("CATCHUP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("solana/snapshots");
    if dir.join("test-snapshot-v4.2.0-beta.1.tar.zst").exists() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("snapshot fixtures missing at {}", dir.display());
    }
    skip_note!("skipped: snapshot fixtures missing at {}", dir.display());
    None
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
}

#[test]
fn verify_fixture_json() {
    let Some(dir) = fixtures() else { return };
    let data = tempfile::tempdir().unwrap();
    let out = catchup()
        .args([
            "solana",
            "snapshot",
            "verify",
            "--json",
            "--shards",
            "2",
            "--datadir",
        ])
        .arg(data.path())
        .arg(dir.join("test-snapshot-v4.2.0-beta.1.tar.zst"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out);
    assert_eq!(v["slot"], 100);
    assert_eq!(v["storages"], 3);
    assert_eq!(v["accounts_total"], 9);
    assert_eq!(v["accounts_live"], 8);
    assert_eq!(v["lt_hash_ok"], true);
    assert_eq!(v["capitalization_ok"], true);
    assert_eq!(
        v["bank_hash"],
        "FF2m56Z7VbuL5fhNTfNzzH41ZP45CYzxZGocL9RqmRck"
    );
}

#[test]
fn verify_full_plus_incremental() {
    let Some(dir) = fixtures() else { return };
    let data = tempfile::tempdir().unwrap();
    let out =
        catchup()
            .args(["solana", "snapshot", "verify", "--json", "--datadir"])
            .arg(data.path())
            .arg(dir.join("snapshot-1-5pgMpQj4MZYWauD1VnoNfmGAdUQCe6VVCSCQMNbDoxf7.tar.zst"))
            .arg("--incremental")
            .arg(dir.join(
                "incremental-snapshot-1-4-43FT6mnmRW9XbxpCzqH3ogYexHXboG7d8vmf3gBLvLrR.tar.zst",
            ))
            .output()
            .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out);
    assert_eq!(v["slot"], 4);
    assert_eq!(v["base_slot"], 1);
    assert_eq!(v["lt_hash_ok"], true);
    assert_eq!(v["name_hash_ok"], true);
    assert_eq!(v["name_hash_kind"], "accounts_lt_hash");
    assert_eq!(v["name_hashes"].as_array().unwrap().len(), 2);
    assert!(data.path().join("snapshot/1").is_dir());
    assert!(data.path().join("incremental/1-4").is_dir());
}

/// An archive copied under another snapshot hash verifies internally but not against its
/// name: exit 1, the error naming both hashes.
#[test]
fn verify_a_renamed_archive_fails_naming_both_hashes() {
    let Some(dir) = fixtures() else { return };
    let data = tempfile::tempdir().unwrap();
    let wrong = data
        .path()
        .join("snapshot-1-4uQeVj5tqViQh7yWWGStvkEG1Zmhx6uasJtWCJziofM.tar.zst");
    std::fs::copy(
        dir.join("snapshot-1-5pgMpQj4MZYWauD1VnoNfmGAdUQCe6VVCSCQMNbDoxf7.tar.zst"),
        &wrong,
    )
    .unwrap();
    let out = catchup()
        .args(["solana", "snapshot", "verify", "--json", "--datadir"])
        .arg(data.path().join("d"))
        .arg(&wrong)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let v = json_of(&out);
    assert_eq!(v["lt_hash_ok"], true);
    assert_eq!(v["name_hash_ok"], false);
    assert!(err.contains("snapshot hash mismatch"), "{err}");
    assert!(
        err.contains("4uQeVj5tqViQh7yWWGStvkEG1Zmhx6uasJtWCJziofM"),
        "{err}"
    );
    assert!(
        err.contains("5pgMpQj4MZYWauD1VnoNfmGAdUQCe6VVCSCQMNbDoxf7"),
        "{err}"
    );
}

#[test]
fn inspect_lists_accounts() {
    let Some(dir) = fixtures() else { return };
    let out = catchup()
        .args(["solana", "snapshot", "inspect", "--accounts", "--json"])
        .arg(dir.join("test-snapshot-v4.2.0-beta.1.tar.zst"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out);
    assert_eq!(v["capitalization"], 92065762);
    assert_eq!(v["storages"].as_array().unwrap().len(), 3);
    let accounts = v["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 8);
    assert!(accounts.iter().any(|a| a["data_len"] == 131097));
}

#[test]
fn generate_then_verify_and_corrupt() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = catchup()
        .args([
            "solana",
            "snapshot",
            "generate",
            "--accounts",
            "3000",
            "--frames",
            "3",
            "--slot",
            "77",
            "--json",
        ])
        .args(["--file-size-bytes", "100000", "--out"])
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = json_of(&out);
    let path = PathBuf::from(g["path"].as_str().unwrap());
    assert_eq!(g["frames"], 3);
    let data = tempfile::tempdir().unwrap();
    let out = catchup()
        .args(["solana", "snapshot", "verify", "--json", "--datadir"])
        .arg(data.path())
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out);
    assert_eq!(v["slot"], 77);
    assert_eq!(v["accounts_live"], g["accounts_live"]);
    assert_eq!(v["frames"], 3);

    // Change one lamport of the last account and recompress: exit 1, lt_hash_ok false.
    let mut tar =
        catchup_solana::zstd::stream::decode_all(std::fs::File::open(&path).unwrap()).unwrap();
    // The first account file's data follows its header; byte 50 of an entry is in its
    // lamports, which the LtHash covers.
    let mut pos = 0;
    let at = loop {
        let hdr = &tar[pos..pos + 512];
        let size_field = std::str::from_utf8(&hdr[124..135])
            .unwrap()
            .trim_matches(char::from(0))
            .to_string();
        let size = usize::from_str_radix(&size_field, 8).unwrap_or(0);
        if hdr.starts_with(b"accounts/") && hdr[156] == b'0' {
            // Entry 0 may be superseded by a newer version in a later file; entry 1 is live.
            let first = pos + 512;
            let data_len =
                u64::from_le_bytes(tar[first + 8..first + 16].try_into().unwrap()) as usize;
            break first + (136 + data_len).div_ceil(8) * 8 + 50;
        }
        pos += 512 + size.div_ceil(512) * 512;
    };
    tar[at] ^= 1;
    let bad = out_dir.path().join("bad").join(path.file_name().unwrap());
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(&bad, catchup_solana::zstd::bulk::compress(&tar, 1).unwrap()).unwrap();
    let out = catchup()
        .args(["solana", "snapshot", "verify", "--json", "--datadir"])
        .arg(tempfile::tempdir().unwrap().path())
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v = json_of(&out);
    assert_eq!(v["lt_hash_ok"], false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("LtHash mismatch"));
}

#[test]
fn missing_archive_is_one_line_and_exit_1() {
    let out = catchup()
        .args([
            "solana",
            "snapshot",
            "verify",
            "/nonexistent/snapshot-1-x.tar.zst",
            "--datadir",
        ])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/snapshot-1-x.tar.zst"));
}

/// Run `catchup ARGS` and return (exit code, stdout JSON or Null, stderr).
fn run_json(args: &[&std::ffi::OsStr]) -> (Option<i32>, serde_json::Value, String) {
    let out = catchup().args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(text.trim()).unwrap_or(serde_json::Value::Null);
    (
        out.status.code(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `generate --incremental-of FULL`: an incremental with changed, added and removed
/// accounts that verifies on top of its full (LtHash, capitalization and the name's hash);
/// a lamport changed in it, or applying it to another full, fails.
#[test]
fn generate_an_incremental_on_a_generated_full_then_verify_and_tamper() {
    let dir = tempfile::tempdir().unwrap();
    let os = |s: &str| std::ffi::OsString::from(s);
    let gen = |extra: &[&str], out: &std::path::Path| {
        let mut a: Vec<std::ffi::OsString> = ["solana", "snapshot", "generate", "--json"]
            .iter()
            .map(|s| os(s))
            .collect();
        a.extend(extra.iter().map(|s| os(s)));
        a.push(os("--out"));
        a.push(out.as_os_str().to_owned());
        let refs: Vec<&std::ffi::OsStr> = a.iter().map(|s| s.as_os_str()).collect();
        let (code, v, err) = run_json(&refs);
        assert_eq!(code, Some(0), "{err}");
        v
    };
    let full = gen(
        &["--accounts", "2000", "--slot", "100"],
        &dir.path().join("a"),
    );
    let full_path = full["path"].as_str().unwrap().to_string();
    let inc = gen(
        &[
            "--incremental-of",
            &full_path,
            "--slot",
            "130",
            "--changed",
            "40",
            "--added",
            "7",
            "--removed",
            "5",
        ],
        &dir.path().join("a"),
    );
    let inc_path = PathBuf::from(inc["path"].as_str().unwrap());
    let inc_name = inc_path.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(
        inc_name,
        format!(
            "incremental-snapshot-100-130-{}.tar.zst",
            inc["lt_hash"].as_str().unwrap()
        )
    );
    assert_ne!(inc["capitalization"], full["capitalization"]);
    let verify = |full: &str, inc: &std::path::Path| {
        let data = tempfile::tempdir().unwrap();
        run_json(&[
            "solana".as_ref(),
            "snapshot".as_ref(),
            "verify".as_ref(),
            "--json".as_ref(),
            "--datadir".as_ref(),
            data.path().as_os_str(),
            full.as_ref(),
            "--incremental".as_ref(),
            inc.as_os_str(),
        ])
    };
    let (code, v, err) = verify(&full_path, &inc_path);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(v["slot"], 130);
    assert_eq!(v["base_slot"], 100);
    assert_eq!(v["lt_hash_ok"], true);
    assert_eq!(v["capitalization_ok"], true);
    assert_eq!(v["capitalization_computed"], inc["capitalization"]);
    assert_eq!(v["name_hash_ok"], true);
    assert_eq!(v["name_hash_kind"], "accounts_lt_hash");
    assert_eq!(v["name_hashes"][1]["archive"], inc_name.as_str());
    assert_eq!(v["name_hashes"][1]["ok"], true);
    // 2000 live in the full (every 1000th with zero lamports: 2), 7 added; the 5 removed
    // stay as zero-lamport entries.
    assert_eq!(v["accounts_live"], 2007);
    assert_eq!(v["zero_lamport_accounts"], 2 + 5);

    // One lamport changed in the incremental's first account: the LtHash no longer holds.
    let mut tar =
        catchup_solana::zstd::stream::decode_all(std::fs::File::open(&inc_path).unwrap()).unwrap();
    let mut pos = 0;
    let at = loop {
        let hdr = &tar[pos..pos + 512];
        let size_field = std::str::from_utf8(&hdr[124..135])
            .unwrap()
            .trim_matches(char::from(0))
            .to_string();
        let size = usize::from_str_radix(&size_field, 8).unwrap_or(0);
        if hdr.starts_with(b"accounts/130.") {
            break pos + 512 + 50;
        }
        pos += 512 + size.div_ceil(512) * 512;
    };
    tar[at] ^= 1;
    let bad = dir.path().join("bad").join(&inc_name);
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(&bad, catchup_solana::zstd::bulk::compress(&tar, 1).unwrap()).unwrap();
    let (code, v, err) = verify(&full_path, &bad);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["lt_hash_ok"], false, "{v}");
    assert!(err.contains("LtHash mismatch"), "{err}");

    // The same incremental on another full of slot 100: refused.
    let other = gen(
        &["--accounts", "2000", "--slot", "100", "--seed", "2"],
        &dir.path().join("b"),
    );
    let (code, _, err) = verify(other["path"].as_str().unwrap(), &inc_path);
    assert_eq!(code, Some(1));
    assert!(err.contains("mismatch"), "{err}");

    // An incremental is not a base for another one.
    let out = catchup()
        .args(["solana", "snapshot", "generate", "--slot", "140", "--out"])
        .arg(dir.path().join("c"))
        .arg("--incremental-of")
        .arg(&inc_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// The tar entries (path, bytes) of a .tar.zst archive.
fn tar_entries(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let tar = catchup_solana::zstd::stream::decode_all(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 512 <= tar.len() && tar[pos] != 0 {
        let hdr = &tar[pos..pos + 512];
        let name_end = hdr[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&hdr[..name_end]).into_owned();
        let size_field = std::str::from_utf8(&hdr[124..135])
            .unwrap()
            .trim_matches(char::from(0))
            .to_string();
        let size = usize::from_str_radix(size_field.trim(), 8).unwrap_or(0);
        out.push((name, tar[pos + 512..pos + 512 + size].to_vec()));
        pos += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// A generated incremental has the layout of the real Agave incremental in the fixtures:
/// the same entries (one storage file at the incremental's slot, its id after the full's),
/// and a manifest with the parent slot before it, an accounts LtHash and no incremental
/// persistence fields (Agave no longer writes them since SIMD-0220).
#[test]
fn a_generated_incremental_has_the_layout_of_agaves() {
    let Some(fx) = fixtures() else { return };
    let real = tar_entries(
        &fx.join("incremental-snapshot-1-4-43FT6mnmRW9XbxpCzqH3ogYexHXboG7d8vmf3gBLvLrR.tar.zst"),
    );
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = catchup()
            .args(["solana", "snapshot", "generate", "--json", "--out"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        PathBuf::from(json_of(&o)["path"].as_str().unwrap())
    };
    let full = run(&[
        "--accounts",
        "500",
        "--slot",
        "1",
        "--file-size-bytes",
        "100000",
    ]);
    let inc = run(&["--incremental-of", full.to_str().unwrap(), "--slot", "4"]);
    let ours = tar_entries(&inc);
    let kinds = |e: &[(String, Vec<u8>)]| -> Vec<String> {
        e.iter()
            .map(|(n, _)| {
                if n.starts_with("accounts/") && !n.ends_with('/') {
                    "accounts/<file>".to_string()
                } else {
                    n.trim_end_matches('/').to_string()
                }
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let mut real_kinds = kinds(&real);
    real_kinds.retain(|k| k != "accounts");
    let mut our_kinds = kinds(&ours);
    our_kinds.retain(|k| k != "accounts");
    assert_eq!(our_kinds, real_kinds);
    let manifest = |e: &[(String, Vec<u8>)]| {
        let (_, m) = e.iter().find(|(n, _)| n == "snapshots/4/4").unwrap();
        catchup_solana::manifest::decode_manifest(m).unwrap()
    };
    let (rm, om) = (manifest(&real), manifest(&ours));
    assert_eq!(om.slot, rm.slot);
    assert_eq!(om.storages.len(), 1);
    assert_eq!(om.storages[0].slot, 4);
    assert_eq!(
        om.storages[0].id, rm.storages[0].id,
        "the full's files are 0.1 and 1.0 in both"
    );
    assert_eq!(om.parent_slot, rm.parent_slot);
    assert!(rm.incremental_persistence.is_none());
    assert!(om.incremental_persistence.is_none());
    assert!(om.accounts_lt_hash.is_some() && rm.accounts_lt_hash.is_some());
}

//! Hostile archives: typed errors, no panic, nothing written outside the data directory,
//! and the data directory left clean for a retry.

use std::path::Path;

use catchup::solana::snapshot::generate::{generate, GenerateConfig};
use catchup::solana::snapshot::{Pipeline, PipelineConfig, PipelineError};
use catchup_solana::tar::{padding_len, write_header, EntryKind, END_OF_ARCHIVE};
use catchup_solana::unpack::{UnpackError, UnpackLimits};
use catchup_solana::zstd;

fn cfg() -> PipelineConfig {
    PipelineConfig {
        shards: 2,
        memory_limit_bytes: 256 << 20,
        ..PipelineConfig::default()
    }
}

fn tar(entries: &[(&str, EntryKind, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (p, k, d) in entries {
        write_header(&mut out, p, d.len() as u64, *k);
        out.extend_from_slice(d);
        out.resize(out.len() + padding_len(d.len() as u64) as usize, 0);
    }
    out.extend_from_slice(&END_OF_ARCHIVE);
    out
}

fn run(
    archive: &[u8],
    limits: Option<UnpackLimits>,
) -> (tempfile::TempDir, Result<(), PipelineError>) {
    let root = tempfile::tempdir().unwrap();
    let datadir = root.path().join("data");
    let mut c = cfg();
    if let Some(l) = limits {
        c.limits = l;
    }
    let r = (|| {
        let mut p = Pipeline::new(&datadir, c)?;
        p.feed(archive)?;
        p.finish().map(|_| ())
    })();
    (root, r)
}

/// Only the (empty) data directory may exist under the test root afterwards.
fn assert_clean(root: &Path) {
    let top: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        top,
        vec!["data".to_string()],
        "nothing outside the data directory"
    );
    let inside: Vec<_> = std::fs::read_dir(root.join("data")).unwrap().collect();
    assert!(inside.is_empty(), "no staging left behind");
}

fn compressed(t: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(t, 1).unwrap()
}

#[test]
fn path_traversal_and_links_are_rejected() {
    for (path, kind) in [
        ("../evil", EntryKind::File),
        ("accounts/../../evil", EntryKind::File),
        ("/tmp/catchup-evil-abs", EntryKind::File),
        ("accounts/1.1", EntryKind::Symlink),
        ("accounts/1.1", EntryKind::HardLink),
        ("accounts/1.1", EntryKind::Device),
        ("evil", EntryKind::File),
    ] {
        let t = tar(&[
            ("version", EntryKind::File, b"1.2.0"),
            (path, kind, b"pwned"),
        ]);
        let (root, r) = run(&compressed(&t), None);
        match r {
            Err(PipelineError::Unpack(UnpackError::Rejected { .. })) => {}
            other => panic!("{path} {kind:?}: expected a rejection, got {other:?}"),
        }
        assert_clean(root.path());
        assert!(!Path::new("/tmp/catchup-evil-abs").exists());
    }
}

#[test]
fn oversized_archives_are_rejected() {
    let t = tar(&[
        ("version", EntryKind::File, b"1.2.0"),
        ("accounts/1.1", EntryKind::File, &[0u8; 5000]),
    ]);
    let small = UnpackLimits {
        max_apparent_size_bytes: 4096,
        ..UnpackLimits::default()
    };
    let (root, r) = run(&compressed(&t), Some(small));
    assert!(
        matches!(
            r,
            Err(PipelineError::Unpack(UnpackError::ApparentSizeLimit { .. }))
        ),
        "{r:?}"
    );
    assert_clean(root.path());
    let few = UnpackLimits {
        max_file_count: 1,
        ..UnpackLimits::default()
    };
    let (root, r) = run(&compressed(&t), Some(few));
    assert!(
        matches!(
            r,
            Err(PipelineError::Unpack(UnpackError::FileCountLimit { .. }))
        ),
        "{r:?}"
    );
    assert_clean(root.path());
    let meta = UnpackLimits {
        max_metadata_entry_bytes: 3,
        ..UnpackLimits::default()
    };
    let (root, r) = run(&compressed(&t), Some(meta));
    assert!(
        matches!(
            r,
            Err(PipelineError::Unpack(UnpackError::MetadataTooLarge { .. }))
        ),
        "{r:?}"
    );
    assert_clean(root.path());
}

#[test]
fn missing_manifest_and_unlisted_files_are_errors() {
    let t = tar(&[
        ("version", EntryKind::File, b"1.2.0"),
        ("accounts/1.1", EntryKind::File, &[0u8; 10]),
    ]);
    let (root, r) = run(&compressed(&t), None);
    let e = r.unwrap_err();
    assert!(e.to_string().contains("no bank snapshot manifest"), "{e}");
    assert_clean(root.path());
    let t = tar(&[
        ("version", EntryKind::File, b"1.2.0"),
        ("snapshots/5/5", EntryKind::File, b"garbage"),
    ]);
    let (root, r) = run(&compressed(&t), None);
    assert!(
        matches!(r, Err(PipelineError::Manifest { slot: 5, .. })),
        "{r:?}"
    );
    assert_clean(root.path());
}

#[test]
fn corrupted_and_garbage_streams_are_errors() {
    let out = tempfile::tempdir().unwrap();
    let g = generate(
        &GenerateConfig {
            accounts: 300,
            ..GenerateConfig::default()
        },
        out.path(),
    )
    .unwrap();
    let good = std::fs::read(&g.path).unwrap();
    for pos in [0usize, 5, good.len() / 2, good.len() - 2] {
        let mut bad = good.clone();
        bad[pos] ^= 0x5a;
        let (root, r) = run(&bad, None);
        assert!(r.is_err(), "flip at {pos} must fail");
        assert_clean(root.path());
    }
    let garbage: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (root, r) = run(&garbage, None);
    assert!(r.is_err());
    assert_clean(root.path());
    // Uncompressed tar data is not accepted either.
    let (root, r) = run(&tar(&[("version", EntryKind::File, b"1.2.0")]), None);
    assert!(matches!(r, Err(PipelineError::Zstd(_))), "{r:?}");
    assert_clean(root.path());
}

#[test]
fn a_failed_pipeline_stays_failed_and_a_retry_succeeds() {
    let out = tempfile::tempdir().unwrap();
    let g = generate(
        &GenerateConfig {
            accounts: 300,
            ..GenerateConfig::default()
        },
        out.path(),
    )
    .unwrap();
    let good = std::fs::read(&g.path).unwrap();
    let root = tempfile::tempdir().unwrap();
    let datadir = root.path().join("data");
    let mut p = Pipeline::new(&datadir, cfg()).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0xff;
    let first = p.feed(&bad);
    let e = match first {
        Err(e) => e,
        Ok(_) => p.finish().map(|_| ()).unwrap_err(),
    };
    let _ = e;
    // Retry in the same data directory.
    let mut p = Pipeline::new(&datadir, cfg()).unwrap();
    p.feed(&good).unwrap();
    let v = p.finish().unwrap();
    assert!(v.report.lt_hash_ok);
    let names: Vec<String> = std::fs::read_dir(&datadir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["snapshot".to_string()]);
    // And again over an existing snapshot: replaced, still one.
    let mut p = Pipeline::new(&datadir, cfg()).unwrap();
    p.feed(&good).unwrap();
    p.finish().unwrap();
    assert_eq!(
        std::fs::read_dir(datadir.join("snapshot")).unwrap().count(),
        1
    );
}

#[test]
fn feed_after_error_reports_failed() {
    let root = tempfile::tempdir().unwrap();
    let mut p = Pipeline::new(&root.path().join("d"), cfg()).unwrap();
    assert!(p.feed(b"this is not zstd at all").is_err());
    assert!(matches!(p.feed(b"more"), Err(PipelineError::Failed)));
}

#[test]
fn config_below_the_window_is_rejected() {
    let root = tempfile::tempdir().unwrap();
    let c = PipelineConfig {
        memory_limit_bytes: 1 << 20,
        ..cfg()
    };
    assert!(matches!(
        Pipeline::new(root.path(), c),
        Err(PipelineError::Config(_))
    ));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn small_tar() -> Vec<u8> {
        tar(&[
            ("version", EntryKind::File, b"1.2.0"),
            ("snapshots/", EntryKind::Directory, b""),
            ("snapshots/status_cache", EntryKind::File, &[0u8; 8]),
            ("accounts/1.1", EntryKind::File, &[3u8; 300]),
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Random bytes fed in random slices: an error, never a panic, nothing left behind.
        #[test]
        fn random_streams(bytes in proptest::collection::vec(any::<u8>(), 0..3000), step in 1usize..700) {
            let root = tempfile::tempdir().unwrap();
            let datadir = root.path().join("data");
            let mut p = Pipeline::new(&datadir, PipelineConfig { shards: 1, ..cfg() }).unwrap();
            let mut failed = false;
            for c in bytes.chunks(step) {
                if p.feed(c).is_err() { failed = true; break; }
            }
            if !failed { prop_assert!(p.finish().is_err()); } else { drop(p); }
            assert_clean(root.path());
        }

        /// A mutated tar inside a valid zstd stream.
        #[test]
        fn mutated_tar(pos in 0usize..3000, val in any::<u8>()) {
            let mut t = small_tar();
            let pos = pos % t.len();
            t[pos] = val;
            let (root, r) = run(&compressed(&t), None);
            // No manifest in this archive: it can never verify.
            prop_assert!(r.is_err());
            assert_clean(root.path());
        }
    }
}

#[test]
fn window_larger_than_the_limit_is_rejected() {
    use std::io::Write;
    let t = tar(&[("version", EntryKind::File, b"1.2.0")]);
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    enc.window_log(28).unwrap();
    enc.write_all(&t).unwrap();
    let big_window = enc.finish().unwrap();
    let root = tempfile::tempdir().unwrap();
    let datadir = root.path().join("data");
    let mut p = Pipeline::new(
        &datadir,
        PipelineConfig {
            window_log_max: 27,
            ..cfg()
        },
    )
    .unwrap();
    let e = p.feed(&big_window).map(|_| ()).unwrap_err();
    assert!(matches!(e, PipelineError::Zstd(_)), "{e}");
    drop(p);
    assert_clean(root.path());
}

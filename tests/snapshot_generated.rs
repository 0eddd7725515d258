//! Generated archives: single and multi-frame archives verify; a flipped byte in an account
//! fails the LtHash; truncation fails with an "incomplete" error.

use std::path::Path;

use catchup::solana::snapshot::generate::{generate, DataSize, GenerateConfig, Generated};
use catchup::solana::snapshot::{
    feed_file, verify_archive, Pipeline, PipelineConfig, PipelineError,
};
use catchup_solana::zstd;

fn cfg() -> PipelineConfig {
    PipelineConfig {
        shards: 3,
        memory_limit_bytes: 256 << 20,
        ..PipelineConfig::default()
    }
}

fn gen(dir: &Path, frames: u32, accounts: u64) -> Generated {
    let c = GenerateConfig {
        accounts,
        data_size: DataSize::Uniform { min: 0, max: 300 },
        frames,
        slot: 50,
        seed: 7,
        file_size_bytes: 32 << 10,
        overwrite_every: 10,
        zero_lamport_every: 100,
        ..GenerateConfig::default()
    };
    generate(&c, dir).unwrap()
}

#[test]
fn single_frame_archive_verifies() {
    let out = tempfile::tempdir().unwrap();
    let g = gen(out.path(), 1, 2000);
    assert!(g.storages > 3, "several storage files: {}", g.storages);
    assert!(g
        .path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("snapshot-50-"));
    let data = tempfile::tempdir().unwrap();
    let r = verify_archive(&g.path, None, data.path(), cfg()).unwrap();
    assert!(r.lt_hash_ok && r.capitalization_ok);
    assert_eq!(r.slot, 50);
    assert_eq!(r.storages, g.storages);
    assert_eq!(r.accounts_total, g.accounts_written);
    assert_eq!(r.accounts_live, g.accounts_live);
    assert!(
        r.accounts_total > r.accounts_live,
        "overwritten versions exist"
    );
    assert_eq!(r.zero_lamport_accounts, 20);
    assert_eq!(r.capitalization_computed, g.capitalization as u128);
    assert_eq!(r.lt_hash_computed, g.lt_hash);
    assert_eq!(r.frames, 1);
    // Plain zstd reads it too.
    let raw = zstd::stream::decode_all(std::fs::File::open(&g.path).unwrap()).unwrap();
    assert_eq!(raw.len() as u64, g.uncompressed_bytes);
}

#[test]
fn multi_frame_archive_verifies_in_parallel() {
    let out = tempfile::tempdir().unwrap();
    let g = gen(out.path(), 6, 3000);
    assert_eq!(g.frames, 6);
    let data = tempfile::tempdir().unwrap();
    for shards in [1, 4] {
        let r = verify_archive(
            &g.path,
            None,
            data.path(),
            PipelineConfig { shards, ..cfg() },
        )
        .unwrap();
        assert!(r.lt_hash_ok && r.capitalization_ok);
        assert_eq!(r.frames, 6);
        assert_eq!(r.accounts_live, g.accounts_live);
    }
    // The marker frames are skippable: plain zstd yields the same tar.
    let raw = zstd::stream::decode_all(std::fs::File::open(&g.path).unwrap()).unwrap();
    assert_eq!(raw.len() as u64, g.uncompressed_bytes);
    // With a memory limit too small to hold frames, they are decompressed in line.
    let tight = PipelineConfig {
        shards: 2,
        memory_limit_bytes: (1 << 27) + (8 << 20) + 1024,
        ..cfg()
    };
    let r = verify_archive(&g.path, None, data.path(), tight).unwrap();
    assert!(r.lt_hash_ok);
    assert_eq!(r.frames, 6);
}

#[test]
fn more_storage_files_than_open_maps_verify_end_to_end() {
    // Dozens of storage files, at most 4 maps per shard: retraction and lookups map cold
    // files again; the verdict and every lookup match an unbounded run.
    let out = tempfile::tempdir().unwrap();
    let g = gen(out.path(), 1, 5000);
    assert!(g.storages >= 32, "storage files: {}", g.storages);
    let unbounded_dir = tempfile::tempdir().unwrap();
    let unbounded = catchup::solana::snapshot::verify_archive_snapshot(
        &g.path,
        None,
        unbounded_dir.path(),
        PipelineConfig { shards: 2, ..cfg() },
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let v = catchup::solana::snapshot::verify_archive_snapshot(
        &g.path,
        None,
        data.path(),
        PipelineConfig {
            shards: 2,
            max_open_maps_per_shard: 4,
            ..cfg()
        },
    )
    .unwrap();
    let r = &v.report;
    assert!(r.lt_hash_ok && r.capitalization_ok);
    assert_eq!(r.accounts_live, g.accounts_live);
    assert_eq!(r.lt_hash_computed, g.lt_hash);
    for s in &r.shards {
        assert!(s.peak_open_maps <= 4 && s.open_maps <= 4, "{s:?}");
        assert!(s.storage_files > 4, "{s:?}");
        assert!(s.index_bytes > 0);
    }
    // Every live account read back through at most 4 maps per shard.
    assert_eq!(v.accounts().unwrap(), unbounded.accounts().unwrap());
}

/// Decompress, change one byte of the tar, recompress.
fn with_tar_byte_changed(
    archive: &Path,
    out: &Path,
    f: impl Fn(&mut Vec<u8>),
) -> std::path::PathBuf {
    let mut tar = zstd::stream::decode_all(std::fs::File::open(archive).unwrap()).unwrap();
    f(&mut tar);
    let path = out.join(archive.file_name().unwrap());
    std::fs::write(&path, zstd::bulk::compress(&tar, 1).unwrap()).unwrap();
    path
}

fn first_account_data_offset(tar: &[u8]) -> usize {
    // The first storage file is accounts/<first slot>.0; its data follows its header.
    let name = b"accounts/";
    let mut pos = 0;
    while pos + 512 <= tar.len() {
        let hdr = &tar[pos..pos + 512];
        let size = usize::from_str_radix(
            std::str::from_utf8(&hdr[124..135])
                .unwrap()
                .trim_matches(char::from(0)),
            8,
        )
        .unwrap_or(0);
        if hdr.starts_with(name) && hdr[156] == b'0' {
            return pos + 512;
        }
        pos += 512 + size.div_ceil(512) * 512;
    }
    panic!("no account file in tar");
}

#[test]
fn one_flipped_account_byte_fails_lt_hash() {
    let out = tempfile::tempdir().unwrap();
    let g = gen(out.path(), 1, 50);
    // Offsets inside the first entry: pubkey, lamports, owner, executable bit, data.
    for (what, rel) in [
        ("pubkey", 20usize),
        ("lamports", 50),
        ("owner", 70),
        ("executable", 96),
        ("data", 140),
    ] {
        let bad_dir = tempfile::tempdir().unwrap();
        let bad = with_tar_byte_changed(&g.path, bad_dir.path(), |t| {
            let at = first_account_data_offset(t) + rel;
            t[at] ^= 1;
        });
        let data = tempfile::tempdir().unwrap();
        match verify_archive(&bad, None, data.path(), cfg()) {
            Err(PipelineError::Verification { what: msg, report }) => {
                assert!(!report.lt_hash_ok, "{what}: {msg}");
                assert!(msg.contains("LtHash mismatch: expected"), "{what}: {msg}");
                assert!(msg.contains(&report.lt_hash_computed));
            }
            Err(PipelineError::Storage(_)) if what == "data" => {}
            other => panic!(
                "{what}: expected an LtHash mismatch, got {:?}",
                other.map(|r| r.lt_hash_ok)
            ),
        }
        // Nothing was moved into place.
        assert!(!data.path().join("snapshot").exists(), "{what}");
    }
}

#[test]
fn truncation_is_incomplete() {
    let out = tempfile::tempdir().unwrap();
    for frames in [1u32, 4] {
        let g = gen(out.path(), frames, 400);
        let bytes = std::fs::read(&g.path).unwrap();
        for cut in [
            10usize,
            31,
            bytes.len() / 3,
            bytes.len() / 2,
            bytes.len() - 1,
        ] {
            let data = tempfile::tempdir().unwrap();
            let mut p = Pipeline::new(data.path(), cfg()).unwrap();
            let r = p
                .feed(&bytes[..cut])
                .map(|_| ())
                .and_then(|_| p.finish().map(|_| ()));
            let e = r.expect_err("truncated archive must fail");
            assert!(e.is_incomplete(), "frames {frames}, cut {cut}: {e}");
            assert!(
                e.to_string().contains("incomplete frame")
                    || e.to_string().contains("incomplete archive"),
                "{e}"
            );
            let left: Vec<_> = std::fs::read_dir(data.path()).unwrap().collect();
            assert!(left.is_empty(), "staging removed after failure");
        }
        // Cut exactly at a frame boundary of a multi-frame archive: the tar is incomplete.
        if frames > 1 {
            let data = tempfile::tempdir().unwrap();
            let mut p = Pipeline::new(data.path(), cfg()).unwrap();
            let first_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
            p.feed(&bytes[..32 + first_len]).unwrap();
            let e = p.finish().map(|_| ()).unwrap_err();
            assert!(e.to_string().contains("incomplete archive"), "{e}");
        }
    }
}

#[test]
fn feeding_in_odd_slices_gives_the_same_result() {
    let out = tempfile::tempdir().unwrap();
    let g = gen(out.path(), 3, 500);
    let bytes = std::fs::read(&g.path).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut p = Pipeline::new(data.path(), cfg()).unwrap();
    let mut step = 1usize;
    let mut pos = 0;
    while pos < bytes.len() {
        let end = (pos + step).min(bytes.len());
        p.feed(&bytes[pos..end]).unwrap();
        pos = end;
        step = step * 3 % 10_007 + 1;
    }
    let v = p.finish().unwrap();
    assert!(v.report.lt_hash_ok);
    // And the same through the file helper.
    let data2 = tempfile::tempdir().unwrap();
    let mut p = Pipeline::new(data2.path(), cfg()).unwrap();
    feed_file(&mut p, &g.path).unwrap();
    assert_eq!(
        p.finish().unwrap().report.lt_hash_computed,
        v.report.lt_hash_computed
    );
}

#[test]
fn fed_from_a_downloader_thread_over_a_bounded_channel() {
    let out = tempfile::tempdir().unwrap();
    let g = gen(out.path(), 4, 800);
    let bytes = std::fs::read(&g.path).unwrap();
    let data = tempfile::tempdir().unwrap();
    let pipeline = Pipeline::new(data.path(), cfg()).unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let feeder = std::thread::spawn(move || {
        let mut p = pipeline;
        while let Ok(chunk) = rx.recv() {
            p.feed(&chunk)?;
        }
        p.finish()
    });
    for chunk in bytes.chunks(65_536) {
        tx.send(chunk.to_vec()).unwrap();
    }
    drop(tx);
    let v = feeder.join().unwrap().unwrap();
    assert!(v.report.lt_hash_ok && v.report.capitalization_ok);
    assert_eq!(v.report.compressed_bytes, bytes.len() as u64);
    let owned: u64 = v.report.shards.iter().map(|s| s.owned_bytes).sum();
    assert!(owned > 0);
}

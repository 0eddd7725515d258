//! Hand-off to the validator client: a verified snapshot archive is placed, under its
//! Agave name, where agave-validator and Firedancer look for local snapshots, and the
//! flags that start the client from it are printed.
//!
//! The rules, as those clients define them:
//! * Names: `snapshot-<slot>-<hash>.tar.zst` (full) and
//!   `incremental-snapshot-<base slot>-<slot>-<hash>.tar.zst` (incremental); files with
//!   other names are ignored by both clients.
//! * agave-validator keeps full archives in `--snapshots DIR` and incremental ones in
//!   `--incremental-snapshot-archive-path DIR`, both defaulting to `--ledger DIR`; archives
//!   it downloaded live in the `remote/` subfolder of those directories, and at start-up it
//!   considers the archives of the directory and of its `remote/` subfolder.
//!   `--no-snapshot-fetch` makes it start from the newest local archives.
//! * Frankendancer (`fdctl`) passes `[snapshots] path` / `incremental_path` (default
//!   `[ledger] path`) to the Agave side as the flags above; `[consensus] snapshot_fetch =
//!   false` is `--no-snapshot-fetch`.
//! * Firedancer reads full and incremental archives from one flat directory,
//!   `[paths] snapshots`; with no snapshot source configured it loads the newest local ones.
//!
//! So `--ledger DIR` places archives in `DIR/remote/` (as a download by agave would), and
//! `--snapshots-dir DIR` places them directly in `DIR` (seen by Firedancer and by
//! agave-validator with `--snapshots DIR`).
//!
//! Nothing partial is ever visible there: the archive is moved in only once verified, by a
//! rename within one file system (a copy to a hidden temporary name in the target
//! directory, synced, then renamed, when the data directory is on another file system).

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::solana::download::source::{parse_archive_name, ArchiveName};

/// The subfolder agave-validator keeps downloaded archives in.
pub const REMOTE_SUBDIR: &str = "remote";

/// The flags of `catchup solana sync` that ask for the hand-off.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HandoffArgs {
    /// Once verified, move the archive into this validator ledger directory where
    /// agave-validator looks for downloaded snapshots (DIR/remote/), and print the flags
    /// that start the validator from it.
    #[arg(long, value_name = "DIR", conflicts_with = "snapshots_dir")]
    pub ledger: Option<PathBuf>,
    /// Once verified, move the archive into this snapshots directory (Firedancer's
    /// `[paths] snapshots`, agave-validator's `--snapshots`), and print the flags.
    #[arg(long, value_name = "DIR")]
    pub snapshots_dir: Option<PathBuf>,
}

/// Where archives go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandoffTarget {
    /// A validator ledger directory: archives go to `<ledger>/remote/`.
    Ledger(PathBuf),
    /// A snapshots directory: archives go directly into it.
    SnapshotsDir(PathBuf),
}

impl HandoffTarget {
    /// The target from `--ledger` / `--snapshots-dir` (at most one is given).
    pub fn from_flags(ledger: Option<&Path>, snapshots_dir: Option<&Path>) -> Option<Self> {
        match (ledger, snapshots_dir) {
            (Some(l), _) => Some(Self::Ledger(l.to_path_buf())),
            (None, Some(s)) => Some(Self::SnapshotsDir(s.to_path_buf())),
            (None, None) => None,
        }
    }

    /// The directory an archive of either kind is placed in.
    pub fn archive_dir(&self) -> PathBuf {
        match self {
            Self::Ledger(l) => l.join(REMOTE_SUBDIR),
            Self::SnapshotsDir(s) => s.clone(),
        }
    }
}

/// An archive placed for the validator.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Placed {
    pub path: PathBuf,
    pub slot: u64,
    /// The full snapshot slot an incremental archive builds on.
    pub base_slot: Option<u64>,
    pub hash: String,
    /// True when the archive was copied (data directory on another file system).
    pub copied: bool,
    /// Lines to start the validator clients from it.
    pub validator_flags: Vec<String>,
}

/// Why an archive was not placed.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("hand-off: {archive} did not verify; nothing was placed in {dir}")]
    NotVerified { archive: String, dir: PathBuf },
    #[error("hand-off: the accounts hash of {archive} is {computed}, not the hash its name gives; nothing was placed")]
    HashMismatch { archive: String, computed: String },
    #[error("hand-off: {name:?} is not a snapshot archive name (snapshot-<slot>-<hash>.tar.zst or incremental-snapshot-<base>-<slot>-<hash>.tar.zst)")]
    BadName { name: String },
    #[error("hand-off: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> HandoffError + 'a {
    move |source| HandoffError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), HandoffError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// Move the archive `archive` into `target` under its own name, if it verified
/// (`verified` holds the verifier's report: when it gives the computed accounts hash,
/// that must be the hash of the archive's name, which the validator trusts).
pub fn place_verified(
    target: &HandoffTarget,
    archive: &Path,
    verified: Option<&serde_json::Value>,
) -> Result<Placed, HandoffError> {
    let dir = target.archive_dir();
    let file_name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let Some(report) = verified else {
        return Err(HandoffError::NotVerified {
            archive: file_name,
            dir,
        });
    };
    let name: ArchiveName = parse_archive_name(&file_name)
        .filter(|n| n.compression == "zst")
        .ok_or_else(|| HandoffError::BadName {
            name: file_name.clone(),
        })?;
    if let Some(computed) = report.get("lt_hash_computed").and_then(|v| v.as_str()) {
        if computed != name.hash {
            return Err(HandoffError::HashMismatch {
                archive: file_name,
                computed: computed.to_string(),
            });
        }
    }
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let dest = dir.join(&file_name);
    let src_dev = std::fs::metadata(archive)
        .map_err(io_err("read", archive))?
        .dev();
    let dst_dev = std::fs::metadata(&dir).map_err(io_err("read", &dir))?.dev();
    let copied = src_dev != dst_dev;
    if copied {
        // Another file system: copy under a name neither client considers, sync, rename.
        let tmp = dir.join(format!(".catchup-partial-{file_name}"));
        let result = (|| {
            std::fs::copy(archive, &tmp).map_err(io_err("copy to", &tmp))?;
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io_err("sync", &tmp))?;
            std::fs::rename(&tmp, &dest).map_err(io_err("rename into", &dest))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        std::fs::remove_file(archive).map_err(io_err("remove", archive))?;
    } else {
        std::fs::rename(archive, &dest).map_err(io_err("rename into", &dest))?;
    }
    sync_dir(&dir)?;
    if let Some(parent) = archive.parent() {
        let _ = sync_dir(parent);
    }
    let validator_flags = validator_flags(target);
    Ok(Placed {
        path: dest,
        slot: name.slot,
        base_slot: name.base_slot,
        hash: name.hash,
        copied,
        validator_flags,
    })
}

/// How to start agave-validator, Frankendancer and Firedancer from what `target` holds.
pub fn validator_flags(target: &HandoffTarget) -> Vec<String> {
    match target {
        HandoffTarget::Ledger(l) => {
            let l = l.display();
            vec![
                format!("agave-validator --ledger {l} --no-snapshot-fetch ..."),
                format!(
                    "fdctl (Frankendancer) config: [ledger] path = \"{l}\"; [consensus] snapshot_fetch = false"
                ),
                format!(
                    "firedancer config: [paths] snapshots = \"{l}/{REMOTE_SUBDIR}\"; [snapshots.sources] servers = []; [snapshots.sources.gossip] allow_any = false"
                ),
            ]
        }
        HandoffTarget::SnapshotsDir(s) => {
            let s = s.display();
            vec![
                format!(
                    "agave-validator --snapshots {s} --incremental-snapshot-archive-path {s} --no-snapshot-fetch ..."
                ),
                format!(
                    "fdctl (Frankendancer) config: [snapshots] path = \"{s}\", incremental_path = \"{s}\"; [consensus] snapshot_fetch = false"
                ),
                format!(
                    "firedancer config: [paths] snapshots = \"{s}\"; [snapshots.sources] servers = []; [snapshots.sources.gossip] allow_any = false"
                ),
            ]
        }
    }
}

/// After a sync: place the archive it downloaded into `datadir/download/` (when it
/// verified: `verified` is the verifier's report) for the target of `--ledger` / `--snapshots-dir`, and print where it went
/// and the validator flags (on stdout, or on stderr when stdout carries JSON).
pub fn run_after_sync(
    flags: &HandoffArgs,
    datadir: &Path,
    archive_name: &str,
    verified: Option<&serde_json::Value>,
    json: bool,
) -> Result<Option<Placed>, HandoffError> {
    run_after_sync_in(flags, datadir, "download", archive_name, verified, json)
}

/// [`run_after_sync`] for an archive downloaded into `D/<subdir>`.
pub fn run_after_sync_in(
    flags: &HandoffArgs,
    datadir: &Path,
    subdir: &str,
    archive_name: &str,
    verified: Option<&serde_json::Value>,
    json: bool,
) -> Result<Option<Placed>, HandoffError> {
    let Some(target) =
        HandoffTarget::from_flags(flags.ledger.as_deref(), flags.snapshots_dir.as_deref())
    else {
        return Ok(None);
    };
    let archive = datadir.join(subdir).join(archive_name);
    let placed = place_verified(&target, &archive, verified)?;
    let mut text = format!(
        "hand-off: {} placed at {}\nstart the validator from it:\n",
        if placed.base_slot.is_some() {
            "incremental snapshot"
        } else {
            "full snapshot"
        },
        placed.path.display()
    );
    for l in &placed.validator_flags {
        text.push_str(&format!("  {l}\n"));
    }
    if json {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    Ok(Some(placed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "snapshot-100-6Pg1vvrgWV5Ua6CWFsaysexxQtFxTEo8614bKV77zwXM.tar.zst";
    const INCR: &str =
        "incremental-snapshot-100-150-43FT6mnmRW9XbxpCzqH3ogYexHXboG7d8vmf3gBLvLrR.tar.zst";

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn ledger_target_uses_remote_and_keeps_the_name() {
        let t = tempfile::tempdir().unwrap();
        let dl = t.path().join("data/download");
        std::fs::create_dir_all(&dl).unwrap();
        std::fs::write(dl.join(FULL), b"full").unwrap();
        std::fs::write(dl.join(INCR), b"incr").unwrap();
        let ledger = t.path().join("ledger");
        let target = HandoffTarget::Ledger(ledger.clone());
        let ok = serde_json::json!({"check": "stream"});
        let p = place_verified(&target, &dl.join(FULL), Some(&ok)).unwrap();
        assert_eq!(p.path, ledger.join("remote").join(FULL));
        assert_eq!((p.slot, p.base_slot, p.copied), (100, None, false));
        let p = place_verified(&target, &dl.join(INCR), Some(&ok)).unwrap();
        assert_eq!((p.slot, p.base_slot), (150, Some(100)));
        assert_eq!(
            listing(&ledger.join("remote")),
            vec![INCR.to_string(), FULL.to_string()]
        );
        assert_eq!(
            std::fs::read(ledger.join("remote").join(FULL)).unwrap(),
            b"full"
        );
        assert!(listing(&dl).is_empty(), "moved, not copied");
        assert!(p.validator_flags[0].contains("--no-snapshot-fetch"));
    }

    #[test]
    fn unverified_or_misnamed_archives_are_never_placed() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join(FULL);
        std::fs::write(&a, b"x").unwrap();
        let dir = t.path().join("snaps");
        let target = HandoffTarget::SnapshotsDir(dir.clone());
        let ok =
            serde_json::json!({"lt_hash_computed": "6Pg1vvrgWV5Ua6CWFsaysexxQtFxTEo8614bKV77zwXM"});
        let other =
            serde_json::json!({"lt_hash_computed": "5pgMpQj4MZYWauD1VnoNfmGAdUQCe6VVCSCQMNbDoxf7"});
        let e = place_verified(&target, &a, None).unwrap_err();
        assert!(matches!(e, HandoffError::NotVerified { .. }), "{e}");
        assert!(!dir.exists() || listing(&dir).is_empty());
        for bad in [
            "snapshot.tar.bz2",
            "snapshot-1-abc.tar.bz2",
            "x-snapshot-1-a.tar.zst",
        ] {
            let b = t.path().join(bad);
            std::fs::write(&b, b"x").unwrap();
            let e = place_verified(&target, &b, Some(&ok)).unwrap_err();
            assert!(matches!(e, HandoffError::BadName { .. }), "{bad}: {e}");
        }
        let e = place_verified(&target, &a, Some(&other)).unwrap_err();
        assert!(matches!(e, HandoffError::HashMismatch { .. }), "{e}");
        assert!(!dir.exists() || listing(&dir).is_empty());
        let p = place_verified(&target, &a, Some(&ok)).unwrap();
        assert_eq!(p.path, dir.join(FULL));
    }
}

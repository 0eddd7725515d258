//! Agave's unpack rules for snapshot archives: which entries may appear, what they are, and
//! the size / count budget. Pure logic: the caller writes the files.

use thiserror::Error;

use crate::tar::{EntryHeader, EntryKind};

/// Limits on an archive's content (Agave: 64 TiB apparent, 4 TiB actual, 5 M files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Sum of declared entry sizes.
    pub max_apparent_size_bytes: u64,
    /// Sum of bytes actually written.
    pub max_actual_size_bytes: u64,
    /// Number of entries.
    pub max_file_count: u64,
    /// Largest single in-memory entry (manifest, status cache, version).
    pub max_metadata_entry_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_apparent_size_bytes: 64 << 40,
            max_actual_size_bytes: 4 << 40,
            max_file_count: 5_000_000,
            max_metadata_entry_bytes: 1 << 30,
        }
    }
}

/// What an accepted entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotEntry {
    /// `version`
    Version,
    /// `snapshots/status_cache`
    StatusCache,
    /// `snapshots/<slot>/<slot>`: the bank snapshot manifest.
    BankSnapshot { slot: u64 },
    /// `accounts/<slot>.<id>`
    AccountsFile { slot: u64, id: u64 },
    /// `accounts`, `snapshots`, `snapshots/<slot>`: directories (nothing to write).
    Directory,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnpackError {
    #[error("archive entry `{path}` at offset {offset}: {reason}")]
    Rejected {
        path: String,
        offset: u64,
        reason: &'static str,
    },
    #[error("archive: apparent size {size} exceeds the limit of {max} bytes")]
    ApparentSizeLimit { size: u64, max: u64 },
    #[error("archive: actual size {size} exceeds the limit of {max} bytes")]
    ActualSizeLimit { size: u64, max: u64 },
    #[error("archive: {count} entries exceed the limit of {max}")]
    FileCountLimit { count: u64, max: u64 },
    #[error(
        "archive entry `{path}`: {size} bytes exceed the limit of {max} for an in-memory entry"
    )]
    MetadataTooLarge { path: String, size: u64, max: u64 },
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Classify an entry by Agave's rules; anything else is rejected with a reason.
pub fn classify(header: &EntryHeader) -> Result<SnapshotEntry, UnpackError> {
    let shown = String::from_utf8_lossy(&header.path[..header.path.len().min(256)]).into_owned();
    let reject = |reason| UnpackError::Rejected {
        path: shown.clone(),
        offset: header.header_offset_bytes,
        reason,
    };
    let path = std::str::from_utf8(&header.path).map_err(|_| reject("path is not UTF-8"))?;
    if path.starts_with('/') {
        return Err(reject("absolute path"));
    }
    if path.as_bytes().contains(&0) || path.contains('\\') {
        return Err(reject("invalid character in path"));
    }
    let mut parts: Vec<&str> = Vec::with_capacity(3);
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(reject("`..` in path")),
            p => {
                if parts.len() == 3 {
                    return Err(reject("path too deep"));
                }
                parts.push(p);
            }
        }
    }
    match header.kind {
        EntryKind::File | EntryKind::Directory => {}
        EntryKind::HardLink | EntryKind::Symlink => return Err(reject("links are not allowed")),
        EntryKind::Device | EntryKind::Fifo => {
            return Err(reject("devices and fifos are not allowed"))
        }
        EntryKind::Other(_) => return Err(reject("unsupported entry type")),
    }
    let is_dir = header.kind == EntryKind::Directory;
    let entry = match parts.as_slice() {
        ["version"] if !is_dir => SnapshotEntry::Version,
        ["accounts"] | ["snapshots"] if is_dir => SnapshotEntry::Directory,
        ["snapshots", "status_cache"] if !is_dir => SnapshotEntry::StatusCache,
        ["snapshots", s] if is_dir && digits(s).is_some() => SnapshotEntry::Directory,
        ["snapshots", a, b] if !is_dir && a == b && digits(a).is_some() => {
            SnapshotEntry::BankSnapshot {
                slot: digits(a).expect("checked"),
            }
        }
        ["accounts", name] if !is_dir => {
            let (s, i) = name
                .split_once('.')
                .ok_or_else(|| reject("account file name is not <slot>.<id>"))?;
            match (digits(s), digits(i)) {
                (Some(slot), Some(id)) => SnapshotEntry::AccountsFile { slot, id },
                _ => return Err(reject("account file name is not <slot>.<id>")),
            }
        }
        _ => return Err(reject("not a snapshot entry")),
    };
    Ok(entry)
}

/// Running totals checked against [`UnpackLimits`].
#[derive(Debug, Clone, Default)]
pub struct UnpackBudget {
    pub apparent_size_bytes: u64,
    pub actual_size_bytes: u64,
    pub file_count: u64,
}

impl UnpackBudget {
    /// Account for a new entry's header.
    pub fn on_entry(
        &mut self,
        header: &EntryHeader,
        entry: SnapshotEntry,
        limits: &UnpackLimits,
    ) -> Result<(), UnpackError> {
        self.file_count += 1;
        if self.file_count > limits.max_file_count {
            return Err(UnpackError::FileCountLimit {
                count: self.file_count,
                max: limits.max_file_count,
            });
        }
        self.apparent_size_bytes = self.apparent_size_bytes.saturating_add(header.size_bytes);
        if self.apparent_size_bytes > limits.max_apparent_size_bytes {
            return Err(UnpackError::ApparentSizeLimit {
                size: self.apparent_size_bytes,
                max: limits.max_apparent_size_bytes,
            });
        }
        if matches!(
            entry,
            SnapshotEntry::Version
                | SnapshotEntry::StatusCache
                | SnapshotEntry::BankSnapshot { .. }
        ) && header.size_bytes > limits.max_metadata_entry_bytes
        {
            return Err(UnpackError::MetadataTooLarge {
                path: String::from_utf8_lossy(&header.path).into_owned(),
                size: header.size_bytes,
                max: limits.max_metadata_entry_bytes,
            });
        }
        Ok(())
    }

    /// Account for bytes written.
    pub fn on_data(&mut self, len: usize, limits: &UnpackLimits) -> Result<(), UnpackError> {
        self.actual_size_bytes = self.actual_size_bytes.saturating_add(len as u64);
        if self.actual_size_bytes > limits.max_actual_size_bytes {
            return Err(UnpackError::ActualSizeLimit {
                size: self.actual_size_bytes,
                max: limits.max_actual_size_bytes,
            });
        }
        Ok(())
    }
}

/// Parse an archive file name: `snapshot-<slot>-<hash>.tar.zst` or
/// `incremental-snapshot-<base>-<slot>-<hash>.tar.zst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveName {
    pub base_slot: Option<u64>,
    pub slot: u64,
    pub hash: String,
}

pub fn parse_archive_name(name: &str) -> Option<ArchiveName> {
    let stem = name.strip_suffix(".tar.zst")?;
    if let Some(rest) = stem.strip_prefix("incremental-snapshot-") {
        let mut it = rest.splitn(3, '-');
        let base = digits(it.next()?)?;
        let slot = digits(it.next()?)?;
        let hash = it.next()?.to_string();
        Some(ArchiveName {
            base_slot: Some(base),
            slot,
            hash,
        })
    } else {
        let rest = stem.strip_prefix("snapshot-")?;
        let (slot, hash) = rest.split_once('-')?;
        Some(ArchiveName {
            base_slot: None,
            slot: digits(slot)?,
            hash: hash.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(path: &str, kind: EntryKind) -> EntryHeader {
        EntryHeader {
            path: path.as_bytes().to_vec(),
            size_bytes: 1,
            kind,
            header_offset_bytes: 0,
        }
    }

    #[test]
    fn accepted_entries() {
        assert_eq!(
            classify(&h("version", EntryKind::File)).unwrap(),
            SnapshotEntry::Version
        );
        assert_eq!(
            classify(&h("snapshots/", EntryKind::Directory)).unwrap(),
            SnapshotEntry::Directory
        );
        assert_eq!(
            classify(&h("snapshots/100/", EntryKind::Directory)).unwrap(),
            SnapshotEntry::Directory
        );
        assert_eq!(
            classify(&h("snapshots/100/100", EntryKind::File)).unwrap(),
            SnapshotEntry::BankSnapshot { slot: 100 }
        );
        assert_eq!(
            classify(&h("accounts/98.1", EntryKind::File)).unwrap(),
            SnapshotEntry::AccountsFile { slot: 98, id: 1 }
        );
        assert_eq!(
            classify(&h("snapshots/status_cache", EntryKind::File)).unwrap(),
            SnapshotEntry::StatusCache
        );
    }

    #[test]
    fn rejected_entries() {
        for (p, k) in [
            ("../version", EntryKind::File),
            ("/version", EntryKind::File),
            ("accounts/../../etc", EntryKind::File),
            ("accounts/1.2", EntryKind::Symlink),
            ("accounts/1.2", EntryKind::HardLink),
            ("accounts/1.2", EntryKind::Device),
            ("accounts/x.2", EntryKind::File),
            ("snapshots/1/2", EntryKind::File),
            ("other", EntryKind::File),
            ("accounts/1.2/x", EntryKind::File),
        ] {
            assert!(
                matches!(classify(&h(p, k)), Err(UnpackError::Rejected { .. })),
                "{p}"
            );
        }
    }

    #[test]
    fn names() {
        let n = parse_archive_name("incremental-snapshot-1-4-43FT6mnm.tar.zst").unwrap();
        assert_eq!(
            (n.base_slot, n.slot, n.hash.as_str()),
            (Some(1), 4, "43FT6mnm")
        );
        let n = parse_archive_name("snapshot-100-abc.tar.zst").unwrap();
        assert_eq!((n.base_slot, n.slot), (None, 100));
        assert!(parse_archive_name("snapshot-x-abc.tar.zst").is_none());
    }

    #[test]
    fn budget_limits() {
        let limits = UnpackLimits {
            max_apparent_size_bytes: 10,
            max_actual_size_bytes: 5,
            max_file_count: 2,
            max_metadata_entry_bytes: 4,
        };
        let mut b = UnpackBudget::default();
        let mut hd = h("accounts/1.1", EntryKind::File);
        hd.size_bytes = 6;
        b.on_entry(&hd, SnapshotEntry::AccountsFile { slot: 1, id: 1 }, &limits)
            .unwrap();
        assert!(b.on_data(6, &limits).is_err());
        assert!(b
            .on_entry(&hd, SnapshotEntry::AccountsFile { slot: 1, id: 1 }, &limits)
            .is_err());
    }
}

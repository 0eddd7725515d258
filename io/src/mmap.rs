//! Read-only memory maps of data files (account storage files and the like).

use std::fs::File;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MmapError {
    #[error("mmap {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A file mapped read-only for its whole length. An empty file maps to an empty slice.
pub struct MappedFile {
    map: Option<memmap2::Mmap>,
    path: PathBuf,
}

impl MappedFile {
    /// Map `path` read-only. The file must not be truncated while mapped.
    pub fn open(path: &Path) -> Result<Self, MmapError> {
        let io = |source| MmapError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the file is opened read-only and files under the data directory are
            // written once, before they are mapped, and never modified afterwards.
            Some(unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(io)?)
        };
        Ok(MappedFile {
            map,
            path: path.to_path_buf(),
        })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ask the kernel to start reading `len` bytes at `offset` in the background (for
    /// scattered reads: hint them all first, then touch them, so the reads overlap). The
    /// range is clipped to the file; the hint is best effort.
    pub fn prefetch(&self, offset: usize, len: usize) {
        if let Some(m) = &self.map {
            const PAGE: usize = 4096;
            let start = (offset / PAGE) * PAGE;
            let end = offset.saturating_add(len).min(m.len());
            if start < end {
                let _ = m.advise_range(memmap2::Advice::WillNeed, start, end - start);
            }
        }
    }

    /// Hint the kernel that the mapping will be read sequentially.
    pub fn advise_sequential(&self) {
        if let Some(m) = &self.map {
            let _ = m.advise(memmap2::Advice::Sequential);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_content_and_empty_files() {
        let dir = std::env::temp_dir().join(format!("catchup-mmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(MappedFile::open(&p).unwrap().bytes(), b"hello");
        let e = dir.join("e");
        std::fs::write(&e, b"").unwrap();
        assert!(MappedFile::open(&e).unwrap().is_empty());
        assert!(MappedFile::open(&dir.join("missing")).is_err());
        // Prefetch hints never fail, whatever the range.
        let m = MappedFile::open(&p).unwrap();
        m.prefetch(0, 5);
        m.prefetch(3, usize::MAX);
        m.prefetch(1 << 40, 10);
        assert_eq!(m.bytes(), b"hello");
        MappedFile::open(&e).unwrap().prefetch(0, 4096);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

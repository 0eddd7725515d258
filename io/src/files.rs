//! Writing data files whose bytes arrive in pieces (account storage files streamed out of
//! an archive): a bounded write buffer, written with plain `write(2)` from any thread, or
//! with glommio DMA ([`write_file_dma`]) from inside a shard.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FileWriteError {
    #[error("write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write {path}: {written} bytes exceed the declared size of {declared}")]
    Overflow {
        path: PathBuf,
        written: u64,
        declared: u64,
    },
    #[error("write {path}: {written} bytes written, declared size is {declared}")]
    Short {
        path: PathBuf,
        written: u64,
        declared: u64,
    },
}

/// Streams one file of a known size to disk with a bounded buffer. The file is created
/// exclusively (an existing file is an error) and fsync'ed by [`StreamedFile::finish`].
pub struct StreamedFile {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    buf_limit_bytes: usize,
    written_bytes: u64,
    declared_bytes: u64,
}

impl StreamedFile {
    pub fn create(
        path: &Path,
        declared_bytes: u64,
        buf_limit_bytes: usize,
    ) -> Result<Self, FileWriteError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| FileWriteError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(StreamedFile {
            file,
            path: path.to_path_buf(),
            buf: Vec::with_capacity(buf_limit_bytes.min(declared_bytes as usize).max(1)),
            buf_limit_bytes: buf_limit_bytes.max(1),
            written_bytes: 0,
            declared_bytes,
        })
    }

    /// Append bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), FileWriteError> {
        let total = self.written_bytes + self.buf.len() as u64 + data.len() as u64;
        if total > self.declared_bytes {
            return Err(FileWriteError::Overflow {
                path: self.path.clone(),
                written: total,
                declared: self.declared_bytes,
            });
        }
        if self.buf.len() + data.len() > self.buf_limit_bytes {
            self.flush()?;
            if data.len() >= self.buf_limit_bytes {
                self.file
                    .write_all(data)
                    .map_err(|source| FileWriteError::Io {
                        path: self.path.clone(),
                        source,
                    })?;
                self.written_bytes += data.len() as u64;
                return Ok(());
            }
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), FileWriteError> {
        if !self.buf.is_empty() {
            self.file
                .write_all(&self.buf)
                .map_err(|source| FileWriteError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            self.written_bytes += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Flush, check the size, and close. `sync` also fsyncs the file.
    pub fn finish(mut self, sync: bool) -> Result<PathBuf, FileWriteError> {
        self.flush()?;
        if self.written_bytes != self.declared_bytes {
            return Err(FileWriteError::Short {
                path: self.path.clone(),
                written: self.written_bytes,
                declared: self.declared_bytes,
            });
        }
        if sync {
            self.file.sync_all().map_err(|source| FileWriteError::Io {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(self.path)
    }
}

/// Write a whole buffer to a new file with glommio DMA (O_DIRECT), from inside a glommio
/// executor. The file ends at exactly `data.len()` bytes.
pub async fn write_file_dma(path: &Path, data: &[u8]) -> Result<(), FileWriteError> {
    const CHUNK_BYTES: usize = 1 << 20;
    let io = |source: std::io::Error| FileWriteError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = glommio::io::OpenOptions::new()
        .write(true)
        .create_new(true)
        .dma_open(path)
        .await
        .map_err(|e| io(e.into()))?;
    let align = file.alignment() as usize;
    let mut pos = 0usize;
    while pos < data.len() {
        let n = (data.len() - pos).min(CHUNK_BYTES);
        let padded = n.div_ceil(align) * align;
        let mut buf = file.alloc_dma_buffer(padded);
        let slice = buf.as_bytes_mut();
        slice[..n].copy_from_slice(&data[pos..pos + n]);
        slice[n..].fill(0);
        file.write_at(buf, pos as u64)
            .await
            .map_err(|e| io(e.into()))?;
        pos += n;
    }
    file.truncate(data.len() as u64)
        .await
        .map_err(|e| io(e.into()))?;
    file.fdatasync().await.map_err(|e| io(e.into()))?;
    file.close().await.map_err(|e| io(e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dma_write_exact_length() {
        let dir = std::env::temp_dir().join(format!("catchup-dma-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d");
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let p2 = p.clone();
        let d2 = data.clone();
        let r = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { write_file_dma(&p2, &d2).await })
            .and_then(|h| {
                h.join()
                    .map_err(|_| std::io::Error::other("executor panicked").into())
            });
        match r {
            Ok(res) => {
                res.unwrap();
                assert_eq!(std::fs::read(&p).unwrap(), data);
            }
            // Without io_uring (restricted sandboxes) the executor cannot start.
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipped: glommio executor: {e}")
            }
            Err(e) => panic!("glommio executor: {e}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn streamed_file_sizes() {
        let dir = std::env::temp_dir().join(format!("catchup-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        let mut f = StreamedFile::create(&p, 10, 4).unwrap();
        f.write(b"abc").unwrap();
        f.write(b"defghi").unwrap();
        f.write(b"j").unwrap();
        assert!(f.write(b"k").is_err());
        f.finish(true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"abcdefghij");
        assert!(
            StreamedFile::create(&p, 1, 1).is_err(),
            "existing file must not be overwritten"
        );
        let short = StreamedFile::create(&dir.join("s"), 5, 4).unwrap();
        assert!(matches!(
            short.finish(false),
            Err(FileWriteError::Short { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

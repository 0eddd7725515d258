//! Writing data files whose bytes arrive in pieces (account storage files streamed out of
//! an archive): [`DmaStreamWriter`] streams through glommio DMA (io_uring, O_DIRECT) from
//! inside a shard, [`StreamedFile`] through a bounded buffer and plain `write(2)` from any
//! thread (the fallback where O_DIRECT is refused), and [`write_file_dma`] writes a whole
//! buffer with DMA.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

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

/// Streams one file of a known size to disk with glommio DMA writes (io_uring, O_DIRECT),
/// from inside a glommio executor: bytes are gathered into aligned buffers of
/// `chunk_bytes`, each written at its aligned offset by a background task, with at most
/// `max_in_flight` writes outstanding (the caller keeps computing while the device
/// works); the padded tail is cut off by [`DmaStreamWriter::finish`].
///
/// Writes are submitted to the kernel when the executor polls its rings: a caller that
/// computes for long stretches should run in a task queue with `Latency::Matters` and
/// call `glommio::yield_if_needed()` between pieces.
pub struct DmaStreamWriter {
    file: Rc<glommio::io::DmaFile>,
    path: PathBuf,
    buf: Option<glommio::io::DmaBuffer>,
    fill: usize,
    pos: u64,
    chunk_bytes: usize,
    received_bytes: u64,
    declared_bytes: u64,
    max_in_flight: usize,
    in_flight: VecDeque<glommio::Task<std::io::Result<()>>>,
}

/// The outcome of [`DmaStreamWriter::create`].
pub enum DmaCreate {
    Dma(DmaStreamWriter),
    /// The file system refused O_DIRECT (the reason inside); nothing was left behind, so
    /// the caller may create the file another way.
    Refused(std::io::Error),
}

/// Most DMA writes one [`DmaStreamWriter`] keeps outstanding.
pub const MAX_DMA_WRITES_IN_FLIGHT: usize = 64;

impl DmaStreamWriter {
    /// Create `path` exclusively for DMA writes. `chunk_bytes` is rounded up to the
    /// device alignment; `max_in_flight` is clamped to `1..=MAX_DMA_WRITES_IN_FLIGHT`.
    pub async fn create(
        path: &Path,
        declared_bytes: u64,
        chunk_bytes: usize,
        max_in_flight: usize,
    ) -> Result<DmaCreate, FileWriteError> {
        let io = |source: std::io::Error| FileWriteError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Readable too: glommio probes the device by reading from the file.
        let r = glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(path)
            .await;
        let file = match r {
            Ok(f) => f,
            Err(e) => {
                let e = std::io::Error::from(e);
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
                ) {
                    // Opened, then O_DIRECT was refused: the file is ours (created
                    // exclusively) and empty.
                    let _ = std::fs::remove_file(path);
                    return Ok(DmaCreate::Refused(e));
                }
                return Err(io(e));
            }
        };
        let align = file.alignment().max(1) as usize;
        let chunk_bytes = chunk_bytes.max(1).div_ceil(align) * align;
        Ok(DmaCreate::Dma(DmaStreamWriter {
            file: Rc::new(file),
            path: path.to_path_buf(),
            buf: None,
            fill: 0,
            pos: 0,
            chunk_bytes,
            received_bytes: 0,
            declared_bytes,
            max_in_flight: max_in_flight.clamp(1, MAX_DMA_WRITES_IN_FLIGHT),
            in_flight: VecDeque::new(),
        }))
    }

    fn io(&self, source: impl Into<std::io::Error>) -> FileWriteError {
        FileWriteError::Io {
            path: self.path.clone(),
            source: source.into(),
        }
    }

    /// Wait for the oldest outstanding write.
    async fn reap_one(&mut self) -> Result<(), FileWriteError> {
        if let Some(t) = self.in_flight.pop_front() {
            t.await.map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    /// Hand `len` bytes of the current buffer (already padded to the alignment) to a
    /// background write at the current position.
    async fn submit(&mut self, len: usize) -> Result<(), FileWriteError> {
        while self.in_flight.len() >= self.max_in_flight {
            self.reap_one().await?;
        }
        let Some(mut b) = self.buf.take() else {
            return Ok(());
        };
        b.trim_to_size(len);
        let file = self.file.clone();
        let pos = self.pos;
        let task = glommio::spawn_local(async move {
            let n = file.write_at(b, pos).await?;
            if n != len {
                return Err(std::io::Error::other(format!(
                    "short DMA write of {n} of {len} bytes at {pos}"
                )));
            }
            Ok(())
        });
        self.in_flight.push_back(task);
        self.pos += len as u64;
        self.fill = 0;
        Ok(())
    }

    /// Append bytes.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), FileWriteError> {
        let total = self.received_bytes + data.len() as u64;
        if total > self.declared_bytes {
            return Err(FileWriteError::Overflow {
                path: self.path.clone(),
                written: total,
                declared: self.declared_bytes,
            });
        }
        self.received_bytes = total;
        while !data.is_empty() {
            let (file, chunk) = (&self.file, self.chunk_bytes);
            let b = self.buf.get_or_insert_with(|| file.alloc_dma_buffer(chunk));
            let take = (self.chunk_bytes - self.fill).min(data.len());
            b.as_bytes_mut()[self.fill..self.fill + take].copy_from_slice(&data[..take]);
            self.fill += take;
            data = &data[take..];
            if self.fill == self.chunk_bytes {
                self.submit(self.chunk_bytes).await?;
            }
        }
        Ok(())
    }

    /// Write the tail, wait for every write, cut the file to its exact size, optionally
    /// fdatasync, and close.
    pub async fn finish(mut self, sync: bool) -> Result<PathBuf, FileWriteError> {
        if self.received_bytes != self.declared_bytes {
            return Err(FileWriteError::Short {
                path: self.path.clone(),
                written: self.received_bytes,
                declared: self.declared_bytes,
            });
        }
        if self.fill > 0 {
            let align = self.file.alignment().max(1) as usize;
            let padded = self.fill.div_ceil(align) * align;
            if let Some(b) = self.buf.as_mut() {
                b.as_bytes_mut()[self.fill..padded].fill(0);
            }
            self.submit(padded).await?;
        }
        while !self.in_flight.is_empty() {
            self.reap_one().await?;
        }
        self.file
            .truncate(self.declared_bytes)
            .await
            .map_err(|e| self.io(e))?;
        if sync {
            self.file.fdatasync().await.map_err(|e| self.io(e))?;
        }
        let path = self.path.clone();
        self.file.close_rc().await.map_err(|e| FileWriteError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        Ok(path)
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
            .spawn(move || async move {
                crate::exec::keep_awake();
                write_file_dma(&p2, &d2).await
            })
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
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr().lock(), "skipped: glommio executor: {e}");
            }
            Err(e) => panic!("glommio executor: {e}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dma_stream_writer_any_pieces_exact_length() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let data: Vec<u8> = (0..300_001u32).map(|i| (i * 7) as u8).collect();
        let d2 = data.clone();
        let r = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                crate::exec::keep_awake();
                let mut modes = Vec::new();
                for (name, piece, chunk) in [
                    ("a", 1000, 4096),
                    ("b", 70_000, 65_536),
                    ("c", 300_001, 1 << 20),
                ] {
                    let p = d.join(name);
                    match DmaStreamWriter::create(&p, d2.len() as u64, chunk, 3)
                        .await
                        .unwrap()
                    {
                        DmaCreate::Dma(mut w) => {
                            for c in d2.chunks(piece) {
                                w.write(c).await.unwrap();
                            }
                            assert!(matches!(
                                w.write(b"x").await,
                                Err(FileWriteError::Overflow { .. })
                            ));
                            w.finish(true).await.unwrap();
                            modes.push(true);
                        }
                        DmaCreate::Refused(e) => {
                            assert!(!p.exists(), "refused DMA must leave nothing behind: {e}");
                            modes.push(false);
                        }
                    }
                }
                // Short files are an error.
                let p = d.join("short");
                if let DmaCreate::Dma(mut w) =
                    DmaStreamWriter::create(&p, 10, 4096, 1).await.unwrap()
                {
                    w.write(b"abc").await.unwrap();
                    assert!(matches!(
                        w.finish(false).await,
                        Err(FileWriteError::Short { .. })
                    ));
                }
                // Existing files are not overwritten.
                assert!(
                    DmaStreamWriter::create(&d.join("a"), 1, 4096, 1)
                        .await
                        .is_err()
                        || !modes[0]
                );
                modes
            })
            .and_then(|h| {
                h.join()
                    .map_err(|_| std::io::Error::other("executor panicked").into())
            });
        match r {
            Ok(modes) => {
                for (name, dma) in ["a", "b", "c"].iter().zip(modes) {
                    if dma {
                        assert_eq!(
                            std::fs::read(dir.path().join(name)).unwrap(),
                            data,
                            "{name}"
                        );
                    }
                }
            }
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr().lock(), "skipped: glommio executor: {e}");
            }
            Err(e) => panic!("glommio executor: {e}"),
        }
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

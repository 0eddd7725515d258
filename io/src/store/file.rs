//! One segment file: glommio DMA (io_uring, O_DIRECT) with a buffered io_uring fallback
//! for filesystems that refuse O_DIRECT.

use std::path::Path;

use glommio::io::{BufferedFile, DmaFile, OpenOptions};
use glommio::GlommioError;

/// Writes and reads are issued in multiples of this many bytes at offsets aligned to it.
/// 4096 covers every logical block size O_DIRECT may ask for on common devices.
pub const IO_ALIGN_BYTES: u64 = 4096;

/// Bytes ready to be written to a [`SegFile`] (see [`SegFile::prepare_write`]).
pub(crate) enum WriteBuf {
    Dma(glommio::io::DmaBuffer),
    Heap(Vec<u8>),
}

pub(crate) enum SegFile {
    Dma(DmaFile),
    Buffered(BufferedFile),
}

fn to_io<T>(e: GlommioError<T>) -> std::io::Error {
    match e {
        GlommioError::IoError(e) => e,
        GlommioError::EnhancedIoError { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    }
}

fn is_einval<T>(e: &GlommioError<T>) -> bool {
    match e {
        GlommioError::IoError(e) | GlommioError::EnhancedIoError { source: e, .. } => {
            e.raw_os_error() == Some(libc::EINVAL)
        }
        _ => false,
    }
}

impl SegFile {
    /// Open (or create) a segment for reading and writing, preferring O_DIRECT.
    pub(crate) async fn open(path: &Path, create: bool) -> std::io::Result<SegFile> {
        probe_device_once(path).await?;
        let mut oo = OpenOptions::new();
        oo.read(true).write(true).create(create);
        match oo.dma_open(path).await {
            Ok(f) => Ok(SegFile::Dma(f)),
            Err(e) if is_einval(&e) => {
                tracing::warn!(
                    path = %path.display(),
                    "filesystem refused O_DIRECT; store segment uses buffered io_uring I/O"
                );
                oo.buffered_open(path)
                    .await
                    .map(SegFile::Buffered)
                    .map_err(to_io)
            }
            Err(e) => Err(to_io(e)),
        }
    }

    /// Whether writes bypass the page cache: a DMA file on a filesystem other than tmpfs
    /// (glommio opens tmpfs files without O_DIRECT, which tmpfs does not support).
    pub(crate) fn is_direct(&self, path: &Path) -> bool {
        matches!(self, SegFile::Dma(_)) && !is_tmpfs(path)
    }

    /// Copy `bytes` (a multiple of [`IO_ALIGN_BYTES`] long) into a buffer this file can
    /// write (DMA memory for an O_DIRECT file).
    pub(crate) fn prepare_write(&self, bytes: &[u8]) -> WriteBuf {
        debug_assert_eq!(bytes.len() as u64 % IO_ALIGN_BYTES, 0);
        match self {
            SegFile::Dma(f) => {
                let mut buf = f.alloc_dma_buffer(bytes.len());
                buf.as_bytes_mut().copy_from_slice(bytes);
                WriteBuf::Dma(buf)
            }
            SegFile::Buffered(_) => WriteBuf::Heap(bytes.to_vec()),
        }
    }

    /// Write a prepared buffer at aligned offset `pos`; a short write is an error.
    pub(crate) async fn write_prepared(&self, buf: WriteBuf, pos: u64) -> std::io::Result<()> {
        debug_assert_eq!(pos % IO_ALIGN_BYTES, 0);
        let (written, len) = match (self, buf) {
            (SegFile::Dma(f), WriteBuf::Dma(b)) => {
                let len = b.len();
                (f.write_at(b, pos).await.map_err(to_io)?, len)
            }
            (SegFile::Buffered(f), WriteBuf::Heap(b)) => {
                let len = b.len();
                (f.write_at(b, pos).await.map_err(to_io)?, len)
            }
            (SegFile::Dma(f), WriteBuf::Heap(b)) => {
                let len = b.len();
                let mut d = f.alloc_dma_buffer(len);
                d.as_bytes_mut().copy_from_slice(&b);
                (f.write_at(d, pos).await.map_err(to_io)?, len)
            }
            (SegFile::Buffered(f), WriteBuf::Dma(b)) => {
                let len = b.len();
                (
                    f.write_at(b.as_bytes().to_vec(), pos)
                        .await
                        .map_err(to_io)?,
                    len,
                )
            }
        };
        if written != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes at offset {pos} (disk full?)"),
            ));
        }
        Ok(())
    }

    /// Read up to `len` bytes at `pos` (fewer at end of file).
    pub(crate) async fn read_at(&self, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let rr = match self {
            SegFile::Dma(f) => f.read_at(pos, len).await.map_err(to_io)?,
            SegFile::Buffered(f) => f.read_at(pos, len).await.map_err(to_io)?,
        };
        Ok(rr.to_vec())
    }

    /// Read up to `len` bytes at `pos` (fewer at end of file) into glommio's own buffer,
    /// without copying it.
    pub(crate) async fn read_block(
        &self,
        pos: u64,
        len: usize,
    ) -> std::io::Result<glommio::io::ReadResult> {
        match self {
            SegFile::Dma(f) => f.read_at(pos, len).await.map_err(to_io),
            SegFile::Buffered(f) => f.read_at(pos, len).await.map_err(to_io),
        }
    }

    pub(crate) async fn fdatasync(&self) -> std::io::Result<()> {
        match self {
            SegFile::Dma(f) => f.fdatasync().await.map_err(to_io),
            SegFile::Buffered(f) => f.fdatasync().await.map_err(to_io),
        }
    }

    pub(crate) async fn truncate(&self, len: u64) -> std::io::Result<()> {
        match self {
            SegFile::Dma(f) => f.truncate(len).await.map_err(to_io),
            SegFile::Buffered(f) => f.truncate(len).await.map_err(to_io),
        }
    }

    /// Close the descriptor now (dropping only queues the close for the next I/O cycle).
    pub(crate) async fn close(self) -> std::io::Result<()> {
        match self {
            SegFile::Dma(f) => f.close().await.map_err(to_io),
            SegFile::Buffered(f) => f.close().await.map_err(to_io),
        }
    }

    pub(crate) async fn file_size(&self) -> std::io::Result<u64> {
        match self {
            SegFile::Dma(f) => f.file_size().await.map_err(to_io),
            SegFile::Buffered(f) => f.file_size().await.map_err(to_io),
        }
    }
}

thread_local! {
    /// Devices whose io_uring poll support glommio has probed on a non-empty file.
    static PROBED_DEVICES: std::cell::RefCell<std::collections::HashSet<u64>> =
        std::cell::RefCell::new(std::collections::HashSet::new());
}

/// glommio decides once per device and thread whether reads may use the polled ring, by
/// reading the first block of the first DMA file opened there. On an empty file that read
/// succeeds trivially and the device is wrongly marked pollable, after which every real
/// read fails with EOPNOTSUPP. So before the first DMA open on a device in this thread,
/// open a one-block file with data, which makes the probe meaningful.
async fn probe_device_once(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dev = std::fs::metadata(dir)?.dev();
    if PROBED_DEVICES.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    static PROBE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = PROBE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".dma-probe-{}-{seq}", std::process::id()));
    if let Err(e) = std::fs::write(&probe, vec![0xA5u8; IO_ALIGN_BYTES as usize]) {
        // E.g. a full disk: opening existing segments must still work. Without the probe
        // glommio probes on the first segment opened, which is right unless it is empty.
        let _ = std::fs::remove_file(&probe);
        tracing::debug!(dir = %dir.display(), error = %e, "cannot write the DMA probe file");
        return Ok(());
    }
    let res = OpenOptions::new().read(true).dma_open(&probe).await;
    let _ = std::fs::remove_file(&probe);
    match res {
        Ok(f) => {
            let _ = f.close().await;
        }
        // O_DIRECT refused: the caller falls back to buffered I/O; nothing was probed.
        Err(e) if is_einval(&e) => {}
        Err(e) => return Err(to_io(e)),
    }
    PROBED_DEVICES.with(|p| p.borrow_mut().insert(dev));
    Ok(())
}

/// Whether `path` lives on a tmpfs (statfs magic).
fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    st.f_type as u64 == libc::TMPFS_MAGIC as u64
}

#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) fn is_tmpfs(path: &std::path::Path) -> bool {
        super::is_tmpfs(path)
    }
}

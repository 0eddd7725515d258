//! Atomic state files ("journals") for sync progress: pivot, finished ranges, frontier,
//! chunk bitmaps. A save is all-or-nothing across crashes.
//!
//! Each save writes `<name>.tmp`, fsyncs it, renames the current copy `<name>.cur` to
//! `<name>.prev`, renames the temp file to `<name>.cur` and fsyncs the directory. Every copy
//! carries a header with a magic, a format version, a sequence number, the payload length
//! and a crc32c; `load` returns the valid copy with the highest sequence number, so a torn
//! or corrupted current copy falls back to the previous good one.
//!
//! File layout (little-endian):
//!
//! ```text
//! 0..4    magic "CUJ1"
//! 4..8    format version (u32) = 1
//! 8..16   sequence number (u64), +1 per save
//! 16..24  payload length in bytes (u64)
//! 24..28  crc32c over bytes 4..24 and the payload
//! 28..    payload
//! ```
//!
//! Plain blocking std I/O: journals are small and saved rarely (seconds apart).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"CUJ1";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 28;
/// Default upper bound on a journal payload accepted by `load`.
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 64 * 1024 * 1024;

/// Errors of the journal. Each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "invalid journal name {name:?}: use [A-Za-z0-9_.-], 1..=64 chars, not starting with '.'"
    )]
    BadName { name: String },
    #[error("journal I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "journal payload of {len_bytes} bytes exceeds the limit of {max_bytes} bytes ({path})"
    )]
    TooLarge {
        path: PathBuf,
        len_bytes: u64,
        max_bytes: u64,
    },
    #[error("journal {path} is corrupt ({reason}) and no previous good copy exists")]
    Corrupt { path: PathBuf, reason: &'static str },
}

/// One named journal in a directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
    cur: PathBuf,
    prev: PathBuf,
    tmp: PathBuf,
    next_seq: u64,
    max_payload_bytes: u64,
}

/// Why a stored copy was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Invalid {
    Short,
    Magic,
    Version,
    Length,
    Checksum,
}

impl Invalid {
    fn reason(self) -> &'static str {
        match self {
            Invalid::Short => "shorter than its header",
            Invalid::Magic => "bad magic",
            Invalid::Version => "unknown format version",
            Invalid::Length => "length field does not match the file size",
            Invalid::Checksum => "checksum mismatch",
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Encode one journal copy (header + payload).
fn encode(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[4..24]), payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decode one journal copy; returns (sequence, payload).
fn decode(bytes: &[u8]) -> Result<(u64, &[u8]), Invalid> {
    if bytes.len() < HEADER_BYTES {
        return Err(Invalid::Short);
    }
    if &bytes[0..4] != MAGIC {
        return Err(Invalid::Magic);
    }
    let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(Invalid::Version);
    }
    let seq = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    if len != (bytes.len() - HEADER_BYTES) as u64 {
        return Err(Invalid::Length);
    }
    let crc = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER_BYTES..];
    if crc32c::crc32c_append(crc32c::crc32c(&bytes[4..24]), payload) != crc {
        return Err(Invalid::Checksum);
    }
    Ok((seq, payload))
}

impl Journal {
    /// Open (creating `dir` if needed) the journal `name` in `dir`. Nothing is read yet.
    pub fn open(dir: impl AsRef<Path>, name: &str) -> Result<Journal, JournalError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !valid {
            return Err(JournalError::BadName {
                name: name.to_string(),
            });
        }
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut j = Journal {
            cur: dir.join(format!("{name}.cur")),
            prev: dir.join(format!("{name}.prev")),
            tmp: dir.join(format!("{name}.tmp")),
            dir,
            next_seq: 1,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        };
        // Learn the sequence number so the next save is newer than anything on disk.
        for p in [&j.cur, &j.prev] {
            if let Some(Ok((seq, _))) = j.read_copy(p)?.as_deref().map(decode) {
                j.next_seq = j.next_seq.max(seq + 1);
            }
        }
        Ok(j)
    }

    /// Change the largest payload `save` writes and `load` accepts.
    pub fn with_max_payload_bytes(mut self, max_payload_bytes: u64) -> Journal {
        self.max_payload_bytes = max_payload_bytes;
        self
    }

    /// Path of the current copy.
    pub fn path(&self) -> &Path {
        &self.cur
    }

    /// Atomically replace the journal content with `payload`. When this returns `Ok`, the
    /// new content is durable; after a crash at any earlier point `load` returns either
    /// this content or the previous one, never a mix.
    pub fn save(&mut self, payload: &[u8]) -> Result<(), JournalError> {
        if payload.len() as u64 > self.max_payload_bytes {
            return Err(JournalError::TooLarge {
                path: self.cur.clone(),
                len_bytes: payload.len() as u64,
                max_bytes: self.max_payload_bytes,
            });
        }
        let bytes = encode(self.next_seq, payload);
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.tmp)
                .map_err(io_err(&self.tmp))?;
            f.write_all(&bytes).map_err(io_err(&self.tmp))?;
            f.sync_all().map_err(io_err(&self.tmp))?;
        }
        // Keep the current copy as the fallback only if it is itself valid: never replace
        // a good previous copy with a corrupt current one.
        let cur_valid = matches!(
            self.read_copy(&self.cur)?.as_deref().map(decode),
            Some(Ok(_))
        );
        if cur_valid {
            std::fs::rename(&self.cur, &self.prev).map_err(io_err(&self.prev))?;
        }
        std::fs::rename(&self.tmp, &self.cur).map_err(io_err(&self.cur))?;
        crate::datadir::fsync_dir(&self.dir).map_err(io_err(&self.dir))?;
        self.next_seq += 1;
        Ok(())
    }

    /// [`Journal::save`] on the glommio executor's blocking-thread pool, so that a shard's
    /// executor never waits in write, fsync or rename. Call it from a glommio executor.
    pub async fn save_off_executor(&mut self, payload: Vec<u8>) -> Result<(), JournalError> {
        let mut j = self.clone();
        let (j, r) = glommio::executor()
            .spawn_blocking(move || {
                let r = j.save(&payload);
                (j, r)
            })
            .await;
        self.next_seq = j.next_seq;
        r
    }

    /// The newest valid content, or `None` when the journal was never saved. A corrupt
    /// current copy falls back to the previous copy (logged); if no copy is valid but one
    /// exists, that is [`JournalError::Corrupt`].
    pub fn load(&self) -> Result<Option<Vec<u8>>, JournalError> {
        let mut best: Option<(u64, Vec<u8>)> = None;
        let mut first_invalid: Option<(PathBuf, Invalid)> = None;
        for p in [&self.cur, &self.prev] {
            let Some(bytes) = self.read_copy(p)? else {
                continue;
            };
            match decode(&bytes) {
                Ok((seq, payload)) => {
                    if best.as_ref().is_none_or(|(s, _)| seq > *s) {
                        best = Some((seq, payload.to_vec()));
                    }
                }
                Err(why) => {
                    tracing::warn!(path = %p.display(), reason = why.reason(), "ignoring invalid journal copy");
                    if first_invalid.is_none() {
                        first_invalid = Some((p.clone(), why));
                    }
                }
            }
        }
        match (best, first_invalid) {
            (Some((_, payload)), _) => Ok(Some(payload)),
            (None, Some((path, why))) => Err(JournalError::Corrupt {
                path,
                reason: why.reason(),
            }),
            (None, None) => Ok(None),
        }
    }

    /// Read a whole copy, bounded by the payload limit; `None` if the file does not exist.
    fn read_copy(&self, p: &Path) -> Result<Option<Vec<u8>>, JournalError> {
        let f = match File::open(p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(p)(e)),
        };
        let len = f.metadata().map_err(io_err(p))?.len();
        let limit = self.max_payload_bytes + HEADER_BYTES as u64;
        if len > limit {
            return Err(JournalError::TooLarge {
                path: p.to_path_buf(),
                len_bytes: len.saturating_sub(HEADER_BYTES as u64),
                max_bytes: self.max_payload_bytes,
            });
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.take(limit).read_to_end(&mut buf).map_err(io_err(p))?;
        Ok(Some(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_then_save_load_roundtrip() {
        let tmp = tempfile::tempdir().unwrap();
        let mut j = Journal::open(tmp.path(), "progress").unwrap();
        assert_eq!(j.load().unwrap(), None);
        j.save(b"one").unwrap();
        assert_eq!(j.load().unwrap().as_deref(), Some(&b"one"[..]));
        j.save(b"two").unwrap();
        assert_eq!(j.load().unwrap().as_deref(), Some(&b"two"[..]));
        // Reopen: sequence continues, content persists.
        let mut j2 = Journal::open(tmp.path(), "progress").unwrap();
        assert_eq!(j2.load().unwrap().as_deref(), Some(&b"two"[..]));
        j2.save(b"three").unwrap();
        assert_eq!(j2.load().unwrap().as_deref(), Some(&b"three"[..]));
        assert!(!tmp.path().join("progress.tmp").exists());
    }

    #[test]
    fn corrupt_current_falls_back_to_previous() {
        let tmp = tempfile::tempdir().unwrap();
        let mut j = Journal::open(tmp.path(), "p").unwrap();
        j.save(b"old state").unwrap();
        j.save(b"new state").unwrap();
        let cur = tmp.path().join("p.cur");
        let mut bytes = std::fs::read(&cur).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&cur, &bytes).unwrap();
        assert_eq!(j.load().unwrap().as_deref(), Some(&b"old state"[..]));
        // A save after the corruption keeps the good previous copy as the fallback.
        j.save(b"newer").unwrap();
        assert_eq!(j.load().unwrap().as_deref(), Some(&b"newer"[..]));
        assert_eq!(
            decode(&std::fs::read(tmp.path().join("p.prev")).unwrap())
                .unwrap()
                .1,
            b"old state"
        );
    }

    #[test]
    fn torn_current_falls_back_and_lone_corrupt_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let mut j = Journal::open(tmp.path(), "p").unwrap();
        j.save(b"aaaa").unwrap();
        j.save(b"bbbbbbbb").unwrap();
        let cur = tmp.path().join("p.cur");
        let bytes = std::fs::read(&cur).unwrap();
        std::fs::write(&cur, &bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(j.load().unwrap().as_deref(), Some(&b"aaaa"[..]));
        std::fs::remove_file(tmp.path().join("p.prev")).unwrap();
        match j.load() {
            Err(JournalError::Corrupt { path, .. }) => assert_eq!(path, cur),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn crash_between_renames_keeps_previous() {
        // Simulate a crash after `cur` was renamed to `prev` but before `tmp` became `cur`.
        let tmp = tempfile::tempdir().unwrap();
        let mut j = Journal::open(tmp.path(), "p").unwrap();
        j.save(b"first").unwrap();
        std::fs::rename(tmp.path().join("p.cur"), tmp.path().join("p.prev")).unwrap();
        std::fs::write(tmp.path().join("p.tmp"), encode(99, b"half")).unwrap();
        let j2 = Journal::open(tmp.path(), "p").unwrap();
        assert_eq!(j2.load().unwrap().as_deref(), Some(&b"first"[..]));
    }

    #[test]
    fn limits_and_names() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            Journal::open(tmp.path(), "../x"),
            Err(JournalError::BadName { .. })
        ));
        assert!(matches!(
            Journal::open(tmp.path(), ""),
            Err(JournalError::BadName { .. })
        ));
        let mut j = Journal::open(tmp.path(), "small")
            .unwrap()
            .with_max_payload_bytes(8);
        assert!(matches!(
            j.save(&[0u8; 9]),
            Err(JournalError::TooLarge { .. })
        ));
        j.save(&[1u8; 8]).unwrap();
        let j = j.with_max_payload_bytes(4);
        assert!(matches!(j.load(), Err(JournalError::TooLarge { .. })));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn encode_decode_roundtrip(seq in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let enc = encode(seq, &payload);
            let (s, p) = decode(&enc).unwrap();
            prop_assert_eq!(s, seq);
            prop_assert_eq!(p, &payload[..]);
        }

        #[test]
        fn any_single_bit_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 1..64), bit in any::<usize>()) {
            let mut enc = encode(7, &payload);
            let bit = bit % (enc.len() * 8);
            enc[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&enc).is_err());
        }
    }
}

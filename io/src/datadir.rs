//! The node's data directory: creation, a writability probe, an exclusive lock file and a
//! free-space helper.
//!
//! Layout under the directory `D`:
//!
//! ```text
//! D/LOCK                 exclusive flock, holds the pid of the owning process
//! D/journal/             atomic state files (see `crate::journal`)
//! D/shard-<N>/store/     the per-shard store of shard N (see `crate::store`)
//! ```
//!
//! The lock is an advisory `flock(LOCK_EX | LOCK_NB)` on `D/LOCK`; it is released by the
//! kernel when the process exits, however it exits, so a crashed node never leaves a stale
//! lock behind. The release can come a moment after the process is gone (its io_uring
//! instances are torn down asynchronously), so while the pid written into the file names
//! no living process, opening waits for the lock (see `lock_file`); otherwise the pid
//! only names the holder in errors.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Errors opening or probing a data directory. Each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data directory {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("data directory {path} is not writable: {source}")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {path} is in use by another process (pid {pid} holds {lock})", lock = LOCK_FILE_NAME)]
    LockedByPid { path: PathBuf, pid: u32 },
    #[error("data directory {path} is in use by another process (lock file {lock} is held)", lock = LOCK_FILE_NAME)]
    Locked { path: PathBuf },
    #[error("cannot lock data directory {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot query free space of {path}: {source}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not enough free space in {path}: {available_bytes} bytes available, {required_bytes} required")]
    NoSpace {
        path: PathBuf,
        available_bytes: u64,
        required_bytes: u64,
    },
}

/// An opened, locked data directory. The lock is held until this value is dropped.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    // Kept open: closing the descriptor releases the flock.
    _lock: File,
}

impl DataDir {
    /// Create `path` if needed, check that it is a writable directory, and take the
    /// exclusive lock on `path/LOCK` (writing this process's pid into it).
    pub fn open(path: impl AsRef<Path>) -> Result<DataDir, DataDirError> {
        let root = path.as_ref().to_path_buf();
        if let Ok(meta) = std::fs::metadata(&root) {
            if !meta.is_dir() {
                return Err(DataDirError::NotADirectory { path: root });
            }
        } else {
            std::fs::create_dir_all(&root).map_err(|source| DataDirError::Create {
                path: root.clone(),
                source,
            })?;
        }
        check_writable(&root)?;
        let lock = lock_exclusive(&root)?;
        Ok(DataDir { root, _lock: lock })
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The directory of shard `shard`'s store (`D/shard-<N>/store`), created if missing.
    pub fn shard_store_dir(&self, shard: usize) -> Result<PathBuf, DataDirError> {
        self.subdir(&format!("shard-{shard}/store"))
    }

    /// The directory holding journals (`D/journal`), created if missing.
    pub fn journal_dir(&self) -> Result<PathBuf, DataDirError> {
        self.subdir("journal")
    }

    /// A sub-directory of the data directory, created if missing.
    pub fn subdir(&self, rel: &str) -> Result<PathBuf, DataDirError> {
        let p = self.root.join(rel);
        std::fs::create_dir_all(&p).map_err(|source| DataDirError::Create {
            path: p.clone(),
            source,
        })?;
        Ok(p)
    }

    /// Free bytes available to this (unprivileged) process in the data directory.
    pub fn available_bytes(&self) -> Result<u64, DataDirError> {
        available_bytes(&self.root)
    }

    /// Fail with [`DataDirError::NoSpace`] unless at least `required_bytes` are free.
    pub fn require_free_space(&self, required_bytes: u64) -> Result<(), DataDirError> {
        let available_bytes = self.available_bytes()?;
        if available_bytes < required_bytes {
            return Err(DataDirError::NoSpace {
                path: self.root.clone(),
                available_bytes,
                required_bytes,
            });
        }
        Ok(())
    }
}

/// Create, write, fsync and remove a probe file: proves the directory accepts writes.
fn check_writable(root: &Path) -> Result<(), DataDirError> {
    let probe = root.join(format!(".write-probe-{}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&probe)?;
        f.write_all(b"probe")?;
        f.sync_all()?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&probe);
    res.map_err(|source| DataDirError::NotWritable {
        path: root.to_path_buf(),
        source,
    })
}

fn lock_exclusive(root: &Path) -> Result<File, DataDirError> {
    match lock_file(&root.join(LOCK_FILE_NAME)) {
        Ok(Locked::Yes(file)) => Ok(file),
        Ok(Locked::HeldBy(Some(pid))) => Err(DataDirError::LockedByPid {
            path: root.to_path_buf(),
            pid,
        }),
        Ok(Locked::HeldBy(None)) => Err(DataDirError::Locked {
            path: root.to_path_buf(),
        }),
        Err((LockStep::Flock, source)) => Err(DataDirError::Lock {
            path: root.to_path_buf(),
            source,
        }),
        Err((_, source)) => Err(DataDirError::NotWritable {
            path: root.to_path_buf(),
            source,
        }),
    }
}

/// How long taking a lock waits while its recorded holder no longer exists. The kernel's
/// teardown of a killed process's io_uring instances runs in kernel workers; on a busy
/// machine it has taken more than 5 s.
pub const EXITED_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The result of [`lock_file`].
pub(crate) enum Locked {
    /// Ours; the lock lasts as long as this descriptor is open.
    Yes(File),
    /// Another open descriptor holds it; the pid recorded in the file, if any.
    HeldBy(Option<u32>),
}

/// The step of [`lock_file`] that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockStep {
    Open,
    Flock,
    WritePid,
}

/// Open (creating) the lock file `path`, take `flock(LOCK_EX | LOCK_NB)` on it and record
/// our pid in it.
///
/// A process that has exited can hold its locks a little longer: the kernel tears down a
/// dead process's io_uring instances, and the files they still reference, after the
/// process is gone (after `wait` has returned). So while the pid recorded in the file
/// names no living process, the lock is tried again every 10 ms for up to
/// [`EXITED_HOLDER_WAIT`]; a living holder is reported at once.
pub(crate) fn lock_file(path: &Path) -> Result<Locked, (LockStep, std::io::Error)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| (LockStep::Open, e))?;
    let until = std::time::Instant::now() + EXITED_HOLDER_WAIT;
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err((LockStep::Flock, err));
        }
        let holder = read_pid(&file);
        let holder_exited = holder.is_some_and(|pid| !pid_alive(pid));
        if !holder_exited || std::time::Instant::now() >= until {
            return Ok(Locked::HeldBy(holder));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Not synced: the pid only matters while this process may still hold the lock, and
    // a pid lost with the page cache (power loss) leaves no lock to wait for.
    let write_pid = |mut f: &File| -> std::io::Result<()> {
        f.set_len(0)?;
        f.seek(SeekFrom::Start(0))?;
        writeln!(f, "{}", std::process::id())
    };
    write_pid(&file).map_err(|e| (LockStep::WritePid, e))?;
    Ok(Locked::Yes(file))
}

/// Whether a process with this pid exists (in our pid namespace) and is not exiting: a
/// killed process is still there while the kernel tears it down, and as a zombie until
/// its parent reaps it (never, when the parent died with it, as `timeout -s KILL` does,
/// and PID 1 does not reap), yet it holds the lock only until its files are released.
fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !pid_exiting(pid)
}

/// `PF_EXITING` in the flags of `/proc/PID/stat`.
const PF_EXITING: u64 = 0x4;

/// Whether `/proc/PID/stat` shows the process exiting: a zombie (`Z`), dead (`X`), or
/// flagged `PF_EXITING`. False when it cannot be read.
fn pid_exiting(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ppid pgrp session tty_nr tpgid flags …"; comm may hold spaces
    // and parentheses, so the fields are read after its last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("");
    let flags = fields
        .nth(5)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    matches!(state, "Z" | "X" | "x") || flags & PF_EXITING != 0
}

/// Read the holder pid from a lock file; `None` when it is empty or not a number.
fn read_pid(mut file: &File) -> Option<u32> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    // A pid is at most a few bytes; bound the read anyway.
    file.take(32).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// Free bytes available to unprivileged users on the filesystem holding `path` (statvfs).
pub fn available_bytes(path: &Path) -> Result<u64, DataDirError> {
    use std::os::unix::ffi::OsStrExt;
    let c =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| DataDirError::Statvfs {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"),
        })?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(DataDirError::Statvfs {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// fsync a directory so that entries created, renamed or removed in it are durable.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_process_not_reaped_yet_is_not_a_living_holder() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(pid_alive(pid), "a sleeping child is alive");
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
        // Not reaped: it stays a zombie, which kill(pid, 0) still finds.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !pid_exiting(pid) {
            assert!(std::time::Instant::now() < until, "never seen exiting");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // SAFETY: signal 0 checks existence only.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, 0) }, 0);
        assert!(!pid_alive(pid), "a zombie holds no lock");
        child.wait().unwrap();
        assert!(!pid_alive(pid));
        assert!(!pid_exiting(std::process::id()) && pid_alive(std::process::id()));
    }

    #[test]
    fn open_creates_and_locks() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/b");
        let dd = DataDir::open(&d).unwrap();
        assert!(d.join(LOCK_FILE_NAME).exists());
        let pid: u32 = std::fs::read_to_string(d.join(LOCK_FILE_NAME))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pid, std::process::id());
        // A second open in the same process uses a new descriptor: flock conflicts.
        match DataDir::open(&d) {
            Err(DataDirError::LockedByPid { pid, .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("expected LockedByPid, got {other:?}"),
        }
        drop(dd);
        let _again = DataDir::open(&d).unwrap();
    }

    /// A lock whose recorded holder has exited is waited for (the kernel may release it
    /// late); a lock whose holder lives is reported at once.
    #[test]
    fn a_lock_left_by_an_exited_holder_is_waited_for() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(LOCK_FILE_NAME);
        // A pid that no longer exists: a child that has been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let holder = File::create(&path).unwrap();
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
        std::fs::write(&path, format!("{dead}\n")).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(holder);
        });
        let t = std::time::Instant::now();
        match lock_file(&path) {
            Ok(Locked::Yes(_)) => {}
            Ok(Locked::HeldBy(p)) => panic!("not waited for: held by {p:?}"),
            Err((step, e)) => panic!("{step:?}: {e}"),
        }
        assert!(t.elapsed() >= std::time::Duration::from_millis(150));
        release.join().unwrap();

        // A living holder (this process) is reported without waiting.
        let held = DataDir::open(tmp.path()).unwrap();
        let t = std::time::Instant::now();
        assert!(matches!(
            DataDir::open(tmp.path()),
            Err(DataDirError::LockedByPid { .. })
        ));
        assert!(t.elapsed() < EXITED_HOLDER_WAIT);
        drop(held);
    }

    #[test]
    fn shard_dirs_are_created() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path()).unwrap();
        let s = dd.shard_store_dir(3).unwrap();
        assert!(s.is_dir());
        assert!(s.ends_with("shard-3/store"));
        assert!(dd.journal_dir().unwrap().is_dir());
    }

    #[test]
    fn not_a_directory_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        let err = DataDir::open(&f).unwrap_err();
        assert!(matches!(err, DataDirError::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn unwritable_directory_is_rejected() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("ro");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).unwrap();
        // root bypasses permission bits; a read-only bind is not available here, so use
        // a path below a regular file instead, which fails for every user.
        let below_file = tmp.path().join("plain");
        std::fs::write(&below_file, b"x").unwrap();
        let err = DataDir::open(below_file.join("sub")).unwrap_err();
        assert!(matches!(err, DataDirError::Create { .. }), "{err}");
        let is_root = unsafe { libc::geteuid() } == 0;
        if !is_root {
            let err = DataDir::open(&d).unwrap_err();
            assert!(matches!(err, DataDirError::NotWritable { .. }), "{err}");
        }
    }

    #[test]
    fn free_space_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path()).unwrap();
        let avail = dd.available_bytes().unwrap();
        assert!(avail > 0);
        assert!(dd.require_free_space(0).is_ok());
        let err = dd.require_free_space(u64::MAX).unwrap_err();
        assert!(matches!(err, DataDirError::NoSpace { .. }), "{err}");
    }
}

//! Host capability probes: locked-memory budget, `CAP_IPC_LOCK`, io_uring, O_DIRECT write
//! throughput, AF_XDP socket support, memory (`/proc/meminfo`) and free disk space.
//!
//! Each probe is a small, bounded, synchronous function that reports what it found as a
//! typed value or a [`ProbeError`] naming what failed and where. Nothing here keeps any
//! resource open after it returns.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Capability number of `CAP_IPC_LOCK` (linux/capability.h).
pub const CAP_IPC_LOCK_BIT: u32 = 14;

/// Capability number of `CAP_NET_ADMIN` (linux/capability.h): what `nft` needs.
pub const CAP_NET_ADMIN_BIT: u32 = 12;

/// Largest `/proc/meminfo` read (the real file is about 1.5 KiB).
const MAX_MEMINFO_BYTES: u64 = 64 * 1024;

/// A probe that could not run or whose operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A file under /proc or /sys had an unexpected shape.
    #[error("{path}: {problem}")]
    Parse { path: String, problem: String },
}

fn sys_err(what: impl Into<String>) -> ProbeError {
    ProbeError::Sys {
        what: what.into(),
        source: io::Error::last_os_error(),
    }
}

/// The soft `RLIMIT_MEMLOCK` of this process in bytes; `None` means unlimited.
pub fn memlock_limit_bytes() -> Result<Option<u64>, ProbeError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 {
        return Err(sys_err("getrlimit(RLIMIT_MEMLOCK)"));
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        Ok(None)
    } else {
        Ok(Some(lim.rlim_cur))
    }
}

/// Parse the `CapEff:` line of a `/proc/<pid>/status` text into its bit mask.
pub fn parse_cap_eff(status_text: &str) -> Option<u64> {
    status_text
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// The effective capability mask of this process (from `/proc/self/status`).
pub fn effective_capabilities() -> Result<u64, ProbeError> {
    let path = "/proc/self/status";
    let text = std::fs::read_to_string(path).map_err(|source| ProbeError::Sys {
        what: format!("read {path}"),
        source,
    })?;
    parse_cap_eff(&text).ok_or_else(|| ProbeError::Parse {
        path: path.into(),
        problem: "no parsable CapEff line".into(),
    })
}

/// Whether this process holds `CAP_IPC_LOCK` in its effective set (locked memory is then
/// not limited by `RLIMIT_MEMLOCK`).
pub fn has_cap_ipc_lock() -> bool {
    effective_capabilities()
        .map(|mask| mask & (1u64 << CAP_IPC_LOCK_BIT) != 0)
        .unwrap_or(false)
}

/// How much memory this process may lock: `None` = no limit (unlimited rlimit or
/// `CAP_IPC_LOCK`), else the rlimit in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockedMemoryBudget {
    pub limit_bytes: Option<u64>,
    pub cap_ipc_lock: bool,
}

impl LockedMemoryBudget {
    /// Read the budget of the current process.
    pub fn current() -> Result<Self, ProbeError> {
        let cap_ipc_lock = has_cap_ipc_lock();
        let limit_bytes = if cap_ipc_lock {
            None
        } else {
            memlock_limit_bytes()?
        };
        Ok(Self {
            limit_bytes,
            cap_ipc_lock,
        })
    }
}

/// Create an io_uring, submit one NOP and reap its completion; returns the round trip.
pub fn io_uring_nop() -> Result<Duration, ProbeError> {
    let start = Instant::now();
    let mut ring = io_uring::IoUring::new(8).map_err(|source| ProbeError::Sys {
        what: "io_uring_setup(8 entries)".into(),
        source,
    })?;
    let nop = io_uring::opcode::Nop::new().build().user_data(0x00ca_7c40);
    // SAFETY: a NOP references no memory.
    unsafe {
        ring.submission()
            .push(&nop)
            .map_err(|_| ProbeError::Parse {
                path: "io_uring submission queue".into(),
                problem: "full on the first entry".into(),
            })?;
    }
    ring.submit_and_wait(1).map_err(|source| ProbeError::Sys {
        what: "io_uring_enter(submit NOP, wait 1)".into(),
        source,
    })?;
    let cqe = ring.completion().next().ok_or_else(|| ProbeError::Parse {
        path: "io_uring completion queue".into(),
        problem: "no completion after waiting for one".into(),
    })?;
    if cqe.user_data() != 0x00ca_7c40 || cqe.result() < 0 {
        return Err(ProbeError::Sys {
            what: format!("io_uring NOP completion (user_data {:#x})", cqe.user_data()),
            source: io::Error::from_raw_os_error(-cqe.result().min(0)),
        });
    }
    Ok(start.elapsed())
}

/// Result of [`write_throughput`].
#[derive(Clone, Debug)]
pub struct WriteThroughput {
    pub bytes: u64,
    pub elapsed: Duration,
    /// True when the file was opened with `O_DIRECT`; false when the filesystem refused
    /// it and the probe fell back to buffered writes + `fdatasync`.
    pub direct: bool,
}

impl WriteThroughput {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Largest total a write probe may write.
pub const MAX_WRITE_PROBE_BYTES: u64 = 1 << 30;

struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> Option<Self> {
        let layout = std::alloc::Layout::from_size_align(len, 4096).ok()?;
        // SAFETY: the layout has a non-zero size (checked by the caller).
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: ptr is valid for len bytes.
        unsafe { std::ptr::write_bytes(ptr, 0xa5, len) };
        Some(Self { ptr, layout })
    }
    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for layout.size() initialised bytes while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in new().
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// Write `total_bytes` (rounded up to `block_bytes`, at most [`MAX_WRITE_PROBE_BYTES`]) in
/// `block_bytes` blocks (a multiple of 4096) to a scratch file in `dir` with `O_DIRECT`,
/// then `fdatasync`, and measure it. When the filesystem refuses `O_DIRECT` (EINVAL), the
/// probe writes buffered and syncs instead, and says so in the result. The scratch file is
/// always removed.
pub fn write_throughput(
    dir: &Path,
    total_bytes: u64,
    block_bytes: usize,
) -> Result<WriteThroughput, ProbeError> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let block = block_bytes.max(4096).div_ceil(4096) * 4096;
    let total = total_bytes.clamp(block as u64, MAX_WRITE_PROBE_BYTES);
    let blocks = total.div_ceil(block as u64);
    let path = dir.join(format!(".catchup-doctor-{}.tmp", std::process::id()));
    let open = |direct: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(&path)
    };
    let (file, direct) = match open(true) {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let f = open(false).map_err(|source| ProbeError::Sys {
                what: format!("create {}", path.display()),
                source,
            })?;
            (f, false)
        }
        Err(source) => {
            return Err(ProbeError::Sys {
                what: format!("create {} with O_DIRECT", path.display()),
                source,
            })
        }
    };
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _remove = Remove(&path);
    let buf = AlignedBuf::new(block).ok_or_else(|| ProbeError::Parse {
        path: path.display().to_string(),
        problem: format!("cannot allocate an aligned {block}-byte buffer"),
    })?;
    let start = Instant::now();
    for i in 0..blocks {
        file.write_all_at(buf.as_slice(), i * block as u64)
            .map_err(|source| ProbeError::Sys {
                what: format!("write {} at offset {}", path.display(), i * block as u64),
                source,
            })?;
    }
    file.sync_data().map_err(|source| ProbeError::Sys {
        what: format!("fdatasync {}", path.display()),
        source,
    })?;
    Ok(WriteThroughput {
        bytes: blocks * block as u64,
        elapsed: start.elapsed(),
        direct,
    })
}

/// Whether `socket(AF_XDP, SOCK_RAW, 0)` succeeds (kernel support and privilege).
pub fn af_xdp_socket() -> Result<(), ProbeError> {
    // SAFETY: plain socket(2); the descriptor is closed right after.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(sys_err("socket(AF_XDP, SOCK_RAW, 0)"));
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    Ok(())
}

/// TCP connect to `addr` and return how long the handshake took.
pub fn tcp_connect_latency(addr: &SocketAddr, timeout: Duration) -> Result<Duration, ProbeError> {
    let start = Instant::now();
    let s = TcpStream::connect_timeout(addr, timeout).map_err(|source| ProbeError::Sys {
        what: format!("TCP connect to {addr}"),
        source,
    })?;
    let took = start.elapsed();
    drop(s);
    Ok(took)
}

/// Whether this process may change the firewall: effective uid 0 or `CAP_NET_ADMIN`.
pub fn can_admin_network() -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    euid == 0
        || effective_capabilities()
            .map(|mask| mask & (1u64 << CAP_NET_ADMIN_BIT) != 0)
            .unwrap_or(false)
}

/// Memory as `/proc/meminfo` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`, bytes.
    pub total_bytes: u64,
    /// `MemAvailable`, bytes: what new processes can use without swapping.
    pub available_bytes: u64,
}

/// Parse the text of `/proc/meminfo` (`MemTotal:  16318412 kB` lines). `path` only names
/// the file in errors.
pub fn parse_meminfo(text: &str, path: &str) -> Result<MemInfo, ProbeError> {
    let field = |name: &str| -> Result<u64, ProbeError> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .ok_or_else(|| ProbeError::Parse {
                path: path.into(),
                problem: format!("no {name} line"),
            })?;
        let mut words = line.split_whitespace();
        let n: u64 =
            words
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| ProbeError::Parse {
                    path: path.into(),
                    problem: format!("{name}: {:?} is not a number of kB", line.trim()),
                })?;
        match words.next() {
            Some("kB") => n.checked_mul(1024).ok_or_else(|| ProbeError::Parse {
                path: path.into(),
                problem: format!("{name}: {n} kB is too large"),
            }),
            other => Err(ProbeError::Parse {
                path: path.into(),
                problem: format!("{name}: unit {other:?}, expected kB"),
            }),
        }
    };
    Ok(MemInfo {
        total_bytes: field("MemTotal")?,
        available_bytes: field("MemAvailable")?,
    })
}

/// Read `meminfo` under `proc_root` (normally `/proc`).
pub fn read_meminfo(proc_root: &Path) -> Result<MemInfo, ProbeError> {
    use std::io::Read as _;
    let path = proc_root.join("meminfo");
    let shown = path.display().to_string();
    let mut text = String::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_MEMINFO_BYTES).read_to_string(&mut text))
        .map_err(|source| ProbeError::Sys {
            what: format!("read {shown}"),
            source,
        })?;
    parse_meminfo(&text, &shown)
}

/// Free space for an unprivileged user (`f_bavail × f_frsize` of statvfs) on the
/// filesystem holding `path`.
pub fn free_disk_bytes(path: &Path) -> Result<u64, ProbeError> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| ProbeError::Parse {
        path: path.display().to_string(),
        problem: "path contains a NUL byte".into(),
    })?;
    // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(sys_err(format!("statvfs {}", path.display())));
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parses_and_rejects() {
        let t = "MemTotal:       16318412 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n";
        let m = parse_meminfo(t, "m").unwrap();
        assert_eq!(m.total_bytes, 16318412 * 1024);
        assert_eq!(m.available_bytes, 8000000 * 1024);
        let e = parse_meminfo("MemTotal: 5 kB\n", "/x/meminfo").unwrap_err();
        assert!(e.to_string().contains("/x/meminfo: no MemAvailable"), "{e}");
        assert!(parse_meminfo("MemTotal: x kB\nMemAvailable: 1 kB", "m").is_err());
        assert!(parse_meminfo("MemTotal: 1 MB\nMemAvailable: 1 kB", "m").is_err());
        assert!(
            parse_meminfo("MemTotal: 18446744073709551615 kB\nMemAvailable: 1 kB", "m").is_err()
        );
    }

    #[test]
    fn free_disk_of_a_real_directory() {
        assert!(free_disk_bytes(Path::new("/")).is_ok());
        assert!(free_disk_bytes(Path::new("/nonexistent/x")).is_err());
    }

    #[test]
    fn cap_eff_parses() {
        let t = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffbfff\n";
        let m = parse_cap_eff(t).unwrap();
        assert_eq!(m & (1 << CAP_IPC_LOCK_BIT), 0);
        let t = "CapEff:\t000001fffeffffff\n";
        assert_ne!(parse_cap_eff(t).unwrap() & (1 << CAP_IPC_LOCK_BIT), 0);
        assert_eq!(parse_cap_eff("nothing"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz"), None);
    }

    #[test]
    fn io_uring_nop_completes() {
        // The kernels this runs on have io_uring; a failure here is a real finding.
        io_uring_nop().unwrap();
    }

    #[test]
    fn write_probe_writes_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("catchup-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = write_throughput(&dir, 1 << 20, 64 << 10).unwrap();
        assert_eq!(r.bytes, 1 << 20);
        assert!(r.mb_per_s() > 0.0);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "scratch file removed"
        );
        std::fs::remove_dir(&dir).unwrap();
        let missing = write_throughput(&dir, 4096, 4096).unwrap_err();
        assert!(missing.to_string().contains("catchup-doctor"), "{missing}");
    }

    #[test]
    fn connect_latency_to_a_local_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        tcp_connect_latency(&addr, Duration::from_secs(2)).unwrap();
        drop(l);
        assert!(tcp_connect_latency(&addr, Duration::from_secs(2)).is_err());
    }

    #[test]
    fn memlock_limit_reads() {
        // Any answer is fine; the call itself must succeed on Linux.
        memlock_limit_bytes().unwrap();
        LockedMemoryBudget::current().unwrap();
    }
}

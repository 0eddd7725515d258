//! Fault injectors: a small tmpfs data directory (fill it up, make it read-only, make it
//! bigger again), a TCP proxy that stalls or cuts a connection part-way through a
//! response, and a flood of inbound connections.

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::SoakError;

/// A tmpfs mounted by the suite; unmounted when dropped.
pub struct Tmpfs {
    pub path: PathBuf,
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn mount_call(path: &Path, flags: libc::c_ulong, data: &str) -> std::io::Result<()> {
    let target = cstr(path);
    let fstype = CString::new("tmpfs").unwrap_or_default();
    let data = CString::new(data).unwrap_or_default();
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let r = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr() as *const libc::c_void,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Tmpfs {
    /// Mount a tmpfs of `size_bytes` at `path` (created). Not root, or a mount refused:
    /// [`SoakError::Skip`] with the reason.
    pub fn mount(path: &Path, size_bytes: u64) -> Result<Tmpfs, SoakError> {
        if !super::proc::is_root() {
            return Err(SoakError::Skip(
                "needs root to mount a tmpfs data directory".into(),
            ));
        }
        std::fs::create_dir_all(path)
            .map_err(|e| SoakError::Skip(format!("creating {}: {e}", path.display())))?;
        mount_call(path, 0, &format!("size={size_bytes},mode=0755")).map_err(|e| {
            SoakError::Skip(format!("cannot mount a tmpfs at {}: {e}", path.display()))
        })?;
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Remount with another size (read-write).
    pub fn resize(&self, size_bytes: u64) -> std::io::Result<()> {
        mount_call(&self.path, libc::MS_REMOUNT, &format!("size={size_bytes}"))
    }

    /// Remount read-only (fails with EBUSY while a file is open for writing) or back
    /// read-write.
    pub fn set_read_only(&self, ro: bool) -> std::io::Result<()> {
        let flags = libc::MS_REMOUNT | if ro { libc::MS_RDONLY } else { 0 };
        // A killed process's io_uring instance is torn down by the kernel after the process
        // is reaped, and holds its files open until then: the remount is busy for a moment.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match mount_call(&self.path, flags, "") {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    /// Remove everything inside (between trials).
    pub fn clear(&self) {
        if let Ok(d) = std::fs::read_dir(&self.path) {
            for e in d.flatten() {
                let p = e.path();
                if p.is_dir() {
                    let _ = std::fs::remove_dir_all(&p);
                } else {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = cstr(&self.path);
        // SAFETY: valid NUL-terminated path.
        unsafe {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// What the proxy does to its faulty connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyFault {
    /// Forward everything.
    None,
    /// After `after_bytes` from the server, forward nothing more in either direction and
    /// keep both sockets open until the client gives up (half-open peer).
    Stall { after_bytes: u64 },
    /// After `after_bytes` from the server, reset both connections.
    Close { after_bytes: u64 },
}

/// A TCP proxy on loopback in front of `upstream`: the fault hits the first
/// `faulty_conns` connections whose server side sends more than its `after_bytes`
/// (shorter exchanges, like a HEAD, pass untouched); after that everything is forwarded.
/// Stops (and closes everything) when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Connections that got the fault (the fault landed).
    pub faults_injected: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Longest a stalled connection is held (bounds every proxy thread).
const STALL_MAX: Duration = Duration::from_secs(120);

fn reset(s: &TcpStream) {
    // SO_LINGER 0: close sends RST.
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a correctly sized option value.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = s.shutdown(Shutdown::Both);
}

impl Proxy {
    pub fn start(
        upstream: SocketAddr,
        fault: ProxyFault,
        faulty_conns: u32,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let injected = Arc::new(AtomicU64::new(0));
        let (stop2, injected2) = (stop.clone(), injected.clone());
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) =
                            TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                        else {
                            continue;
                        };
                        conns.push(pump(
                            client,
                            server,
                            fault,
                            faulty_conns as u64,
                            stop2.clone(),
                            injected2.clone(),
                        ));
                        conns.retain(|h: &std::thread::JoinHandle<()>| !h.is_finished());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for h in conns {
                let _ = h.join();
            }
        });
        Ok(Proxy {
            addr,
            stop,
            faults_injected: injected,
            thread: Some(thread),
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Forward one connection both ways; returns the thread handling it.
fn pump(
    client: TcpStream,
    server: TcpStream,
    fault: ProxyFault,
    max_faults: u64,
    stop: Arc<AtomicBool>,
    injected: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let tick = Some(Duration::from_millis(50));
        let _ = client.set_read_timeout(tick);
        let _ = server.set_read_timeout(tick);
        let (mut c, mut s) = (client, server);
        let mut from_server: u64 = 0;
        let mut buf = vec![0u8; 16 * 1024];
        let limit = match fault {
            ProxyFault::None => u64::MAX,
            ProxyFault::Stall { after_bytes } | ProxyFault::Close { after_bytes } => after_bytes,
        };
        let mut stalled_since: Option<Instant> = None;
        'outer: while !stop.load(Ordering::Relaxed) {
            if let Some(t) = stalled_since {
                // Half-open: read and drop what the client sends until it closes.
                if t.elapsed() > STALL_MAX {
                    break;
                }
                match c.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => break,
                }
                continue;
            }
            // client → server
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if is_timeout(&e) => {}
                Err(_) => break,
            }
            // server → client
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut n = n as u64;
                    // The fault takes one of the `max_faults` slots, or none is left.
                    let cut = from_server.saturating_add(n) > limit
                        && injected
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| {
                                (k < max_faults).then_some(k + 1)
                            })
                            .is_ok();
                    if cut {
                        n = limit.saturating_sub(from_server);
                    }
                    if c.write_all(&buf[..n as usize]).is_err() {
                        break;
                    }
                    from_server += n;
                    if cut {
                        match fault {
                            ProxyFault::Stall { .. } => {
                                stalled_since = Some(Instant::now());
                                continue 'outer;
                            }
                            _ => {
                                reset(&c);
                                reset(&s);
                                return;
                            }
                        }
                    }
                }
                Err(e) if is_timeout(&e) => {}
                Err(_) => break,
            }
        }
        let _ = c.shutdown(Shutdown::Both);
        let _ = s.shutdown(Shutdown::Both);
    })
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// `count` inbound connections to `addr` opened at once and held open, silent (or
/// sending a partial request line every so often: slow-loris). Closed when dropped.
pub struct Flood {
    pub opened: usize,
    pub refused: usize,
    conns: Vec<TcpStream>,
}

impl Flood {
    pub fn open(addr: SocketAddr, count: usize, greeting: &[u8]) -> Flood {
        let mut conns = Vec::with_capacity(count);
        let mut refused = 0;
        for _ in 0..count {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(mut s) => {
                    if !greeting.is_empty() {
                        let _ = s.write_all(greeting);
                    }
                    conns.push(s);
                }
                Err(_) => refused += 1,
            }
        }
        Flood {
            opened: conns.len(),
            refused,
            conns,
        }
    }

    /// Connections the server has closed so far (it shed them).
    pub fn closed_by_server(&mut self) -> usize {
        let mut closed = 0;
        let mut b = [0u8; 256];
        for s in &mut self.conns {
            let _ = s.set_nonblocking(true);
            match s.read(&mut b) {
                Ok(0) => closed += 1,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => closed += 1,
            }
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> (SocketAddr, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            let _ = s.write_all(&[7u8; 10_000]);
        });
        (addr, h)
    }

    #[test]
    fn proxy_cuts_the_response_at_the_chosen_byte() {
        let (up, h) = echo_server();
        let p = Proxy::start(up, ProxyFault::Close { after_bytes: 1234 }, 1).unwrap();
        let mut c = TcpStream::connect(p.addr).unwrap();
        c.write_all(b"ping").unwrap();
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        assert_eq!(got.len(), 1234);
        assert_eq!(p.faults_injected.load(Ordering::Relaxed), 1);
        h.join().unwrap();
    }

    #[test]
    fn proxy_forwards_untouched_connections() {
        let (up, h) = echo_server();
        let p = Proxy::start(up, ProxyFault::None, 0).unwrap();
        let mut c = TcpStream::connect(p.addr).unwrap();
        c.write_all(b"ping").unwrap();
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        assert_eq!(got.len(), 10_000);
        h.join().unwrap();
    }
}

//! An AF_XDP socket with its own UMEM: fill, completion, rx and tx rings mapped from the
//! kernel, bound to one queue of one interface (copy mode, so it works on any driver with
//! generic XDP, veth included).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::XdpError;

const AF_XDP: i32 = 44;
const SOL_XDP: i32 = 283;
const XDP_MMAP_OFFSETS: i32 = 1;
const XDP_RX_RING: i32 = 2;
const XDP_TX_RING: i32 = 3;
const XDP_UMEM_REG: i32 = 4;
const XDP_UMEM_FILL_RING: i32 = 5;
const XDP_UMEM_COMPLETION_RING: i32 = 6;
const XDP_STATISTICS: i32 = 7;
const XDP_PGOFF_RX_RING: i64 = 0;
const XDP_PGOFF_TX_RING: i64 = 0x8000_0000;
const XDP_UMEM_PGOFF_FILL_RING: i64 = 0x1_0000_0000;
const XDP_UMEM_PGOFF_COMPLETION_RING: i64 = 0x1_8000_0000;
const XDP_COPY: u16 = 1 << 1;
const XDP_RING_NEED_WAKEUP: u32 = 1;

#[repr(C)]
#[derive(Default)]
struct UmemReg {
    addr: u64,
    len: u64,
    chunk_size: u32,
    headroom: u32,
    flags: u32,
    tx_metadata_len: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct RingOffset {
    producer: u64,
    consumer: u64,
    desc: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct MmapOffsets {
    rx: RingOffset,
    tx: RingOffset,
    fr: RingOffset,
    cr: RingOffset,
}

#[repr(C)]
struct SockaddrXdp {
    family: u16,
    flags: u16,
    ifindex: u32,
    queue_id: u32,
    shared_umem_fd: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Desc {
    addr: u64,
    len: u32,
    options: u32,
}

/// Kernel counters of the socket (`XDP_STATISTICS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// Sizes of the UMEM and rings. Defaults: 512 frames of 4 KiB (2 MiB of UMEM, within an
/// 8 MiB `RLIMIT_MEMLOCK`), rings of 256 entries.
#[derive(Clone, Copy, Debug)]
pub struct XskConfig {
    pub frame_count: u32,
    pub frame_size_bytes: u32,
    pub ring_size: u32,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frame_count: 512,
            frame_size_bytes: 4096,
            ring_size: 256,
        }
    }
}

struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from a successful mmap and are unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One mapped ring (producer/consumer indices, flags, descriptors).
struct Ring<T> {
    _map: Mapping,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    mask: u32,
    size: u32,
}

impl<T: Copy> Ring<T> {
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping at the kernel-given offset, 4-byte aligned.
        unsafe { &*self.producer }
    }
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }
    fn needs_wakeup(&self) -> bool {
        // SAFETY: as above.
        unsafe { (*self.flags).load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0 }
    }
    fn read(&self, idx: u32) -> T {
        // SAFETY: idx & mask < size entries inside the mapping.
        unsafe { self.descs.add((idx & self.mask) as usize).read_volatile() }
    }
    fn write(&self, idx: u32, v: T) {
        // SAFETY: as above; this side owns the slot between producer and consumer.
        unsafe { self.descs.add((idx & self.mask) as usize).write_volatile(v) }
    }
}

fn ring_map<T>(fd: RawFd, off: &RingOffset, size: u32, pgoff: i64) -> Result<Ring<T>, XdpError> {
    let len = off.desc as usize + size as usize * std::mem::size_of::<T>();
    // SAFETY: mapping a ring of a bound-to-be AF_XDP socket, as the kernel documents.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            pgoff,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(XdpError::Os {
            what: "mmap of an AF_XDP ring",
            source: io::Error::last_os_error(),
        });
    }
    let base = p.cast::<u8>();
    // SAFETY: offsets are within `len` as reported by XDP_MMAP_OFFSETS.
    unsafe {
        Ok(Ring {
            _map: Mapping {
                ptr: NonNull::new(base).expect("mmap returned non-null"),
                len,
            },
            producer: base.add(off.producer as usize).cast(),
            consumer: base.add(off.consumer as usize).cast(),
            flags: base.add(off.flags as usize).cast(),
            descs: base.add(off.desc as usize).cast(),
            mask: size - 1,
            size,
        })
    }
}

fn setsockopt<T>(fd: RawFd, opt: i32, v: &T, what: &'static str) -> Result<(), XdpError> {
    // SAFETY: v points to a properly sized value for this option.
    let r = unsafe {
        libc::setsockopt(
            fd,
            SOL_XDP,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    if r != 0 {
        return Err(XdpError::Os {
            what,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// An AF_XDP socket bound to (`ifindex`, `queue`) with its own UMEM.
pub struct XskSocket {
    fd: RawFd,
    umem: Mapping,
    frame_size: u32,
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<Desc>,
    tx: Ring<Desc>,
    /// Frames free for transmit.
    free_tx: Vec<u64>,
    tx_outstanding: u32,
    queue: u32,
}

impl XskSocket {
    /// Create the socket, register the UMEM, map the rings, give half the frames to the
    /// fill ring, and bind in copy mode.
    pub fn new(ifindex: u32, queue: u32, cfg: XskConfig) -> Result<XskSocket, XdpError> {
        let XskConfig {
            frame_count,
            frame_size_bytes,
            ring_size,
        } = cfg;
        if !ring_size.is_power_of_two()
            || !frame_size_bytes.is_power_of_two()
            || frame_size_bytes < 2048
            || frame_count < 4
        {
            return Err(XdpError::Config(
                "ring and frame sizes must be powers of two, frames >= 2048 bytes, >= 4 frames",
            ));
        }
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(XdpError::Os {
                what: "socket(AF_XDP)",
                source: io::Error::last_os_error(),
            });
        }
        let guard = FdGuard(fd);
        let umem_len = frame_count as usize * frame_size_bytes as usize;
        // SAFETY: anonymous private mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                umem_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(XdpError::Os {
                what: "mmap of the UMEM",
                source: io::Error::last_os_error(),
            });
        }
        let umem = Mapping {
            ptr: NonNull::new(p.cast()).expect("non-null"),
            len: umem_len,
        };
        let reg = UmemReg {
            addr: p as u64,
            len: umem_len as u64,
            chunk_size: frame_size_bytes,
            ..Default::default()
        };
        setsockopt(
            fd,
            XDP_UMEM_REG,
            &reg,
            "XDP_UMEM_REG (UMEM pinning counts against RLIMIT_MEMLOCK without CAP_IPC_LOCK)",
        )?;
        for (opt, what) in [
            (XDP_UMEM_FILL_RING, "XDP_UMEM_FILL_RING"),
            (XDP_UMEM_COMPLETION_RING, "XDP_UMEM_COMPLETION_RING"),
            (XDP_RX_RING, "XDP_RX_RING"),
            (XDP_TX_RING, "XDP_TX_RING"),
        ] {
            setsockopt(fd, opt, &ring_size, what)?;
        }
        let mut off = MmapOffsets::default();
        let mut optlen = std::mem::size_of::<MmapOffsets>() as u32;
        // SAFETY: off is large enough for the current layout of xdp_mmap_offsets.
        if unsafe {
            libc::getsockopt(
                fd,
                SOL_XDP,
                XDP_MMAP_OFFSETS,
                (&mut off as *mut MmapOffsets).cast(),
                &mut optlen,
            )
        } != 0
        {
            return Err(XdpError::Os {
                what: "XDP_MMAP_OFFSETS",
                source: io::Error::last_os_error(),
            });
        }
        let fill = ring_map::<u64>(fd, &off.fr, ring_size, XDP_UMEM_PGOFF_FILL_RING)?;
        let comp = ring_map::<u64>(fd, &off.cr, ring_size, XDP_UMEM_PGOFF_COMPLETION_RING)?;
        let rx = ring_map::<Desc>(fd, &off.rx, ring_size, XDP_PGOFF_RX_RING)?;
        let tx = ring_map::<Desc>(fd, &off.tx, ring_size, XDP_PGOFF_TX_RING)?;
        // first half of the frames: receive (fill ring); second half: transmit
        let rx_frames = frame_count / 2;
        let prod = fill.producer().load(Ordering::Relaxed);
        let n = rx_frames.min(ring_size);
        for i in 0..n {
            fill.write(
                prod.wrapping_add(i),
                u64::from(i) * u64::from(frame_size_bytes),
            );
        }
        fill.producer()
            .store(prod.wrapping_add(n), Ordering::Release);
        let free_tx = (rx_frames..frame_count)
            .map(|i| u64::from(i) * u64::from(frame_size_bytes))
            .collect();
        let sa = SockaddrXdp {
            family: AF_XDP as u16,
            flags: XDP_COPY,
            ifindex,
            queue_id: queue,
            shared_umem_fd: 0,
        };
        // SAFETY: sa is a valid sockaddr_xdp.
        if unsafe {
            libc::bind(
                fd,
                (&sa as *const SockaddrXdp).cast(),
                std::mem::size_of::<SockaddrXdp>() as u32,
            )
        } != 0
        {
            return Err(XdpError::Os {
                what: "bind(AF_XDP) to the interface queue",
                source: io::Error::last_os_error(),
            });
        }
        std::mem::forget(guard);
        Ok(XskSocket {
            fd,
            umem,
            frame_size: frame_size_bytes,
            fill,
            comp,
            rx,
            tx,
            free_tx,
            tx_outstanding: 0,
            queue,
        })
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    fn frame(&self, addr: u64, len: usize) -> &[u8] {
        let off = addr as usize;
        assert!(off + len <= self.umem.len, "descriptor inside the UMEM");
        // SAFETY: bounds checked against the UMEM mapping above.
        unsafe { std::slice::from_raw_parts(self.umem.ptr.as_ptr().add(off), len) }
    }

    fn frame_mut(&mut self, addr: u64, len: usize) -> &mut [u8] {
        let off = addr as usize;
        assert!(off + len <= self.umem.len, "descriptor inside the UMEM");
        // SAFETY: bounds checked; this frame is owned by user space (free list).
        unsafe { std::slice::from_raw_parts_mut(self.umem.ptr.as_ptr().add(off), len) }
    }

    /// Wait up to `timeout_ms` for received frames (0: don't wait).
    pub fn wait_rx(&self, timeout_ms: i32) -> Result<bool, XdpError> {
        if self.rx.producer().load(Ordering::Acquire) != self.rx.consumer().load(Ordering::Relaxed)
        {
            return Ok(true);
        }
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(XdpError::Os {
                what: "poll(AF_XDP)",
                source: e,
            });
        }
        Ok(r > 0)
    }

    /// Hand every received frame (at most `max`) to `f`, then give the frames back to the
    /// fill ring. Returns the number of frames.
    pub fn recv(&mut self, max: u32, mut f: impl FnMut(&[u8])) -> u32 {
        let cons = self.rx.consumer().load(Ordering::Relaxed);
        let prod = self.rx.producer().load(Ordering::Acquire);
        let n = prod.wrapping_sub(cons).min(max);
        if n == 0 {
            return 0;
        }
        let fill_prod = self.fill.producer().load(Ordering::Relaxed);
        for i in 0..n {
            let d = self.rx.read(cons.wrapping_add(i));
            let len = (d.len as usize).min(self.frame_size as usize);
            f(self.frame(d.addr, len));
            // every rx frame came from the fill ring, so the fill ring has room for it
            self.fill.write(
                fill_prod.wrapping_add(i),
                d.addr & !u64::from(self.frame_size - 1),
            );
        }
        self.rx
            .consumer()
            .store(cons.wrapping_add(n), Ordering::Release);
        self.fill
            .producer()
            .store(fill_prod.wrapping_add(n), Ordering::Release);
        if self.fill.needs_wakeup() {
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; zero timeout.
            unsafe { libc::poll(&mut pfd, 1, 0) };
        }
        n
    }

    fn reap_completions(&mut self) {
        let cons = self.comp.consumer().load(Ordering::Relaxed);
        let prod = self.comp.producer().load(Ordering::Acquire);
        let n = prod.wrapping_sub(cons);
        for i in 0..n {
            let addr = self.comp.read(cons.wrapping_add(i));
            self.free_tx.push(addr & !u64::from(self.frame_size - 1));
        }
        if n > 0 {
            self.comp
                .consumer()
                .store(cons.wrapping_add(n), Ordering::Release);
            self.tx_outstanding -= n.min(self.tx_outstanding);
        }
    }

    /// Queue one frame for transmit, written by `write` into a free UMEM frame (it returns
    /// the frame length). Returns false when no frame or tx slot is free (the caller drops
    /// the packet or retries after [`XskSocket::flush`]).
    pub fn send_with(&mut self, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        self.reap_completions();
        let prod = self.tx.producer().load(Ordering::Relaxed);
        let cons = self.tx.consumer().load(Ordering::Acquire);
        if prod.wrapping_sub(cons) >= self.tx.size {
            return false;
        }
        let Some(addr) = self.free_tx.pop() else {
            return false;
        };
        let fs = self.frame_size as usize;
        let Some(len) = write(self.frame_mut(addr, fs)) else {
            self.free_tx.push(addr);
            return false;
        };
        self.tx.write(
            prod,
            Desc {
                addr,
                len: len as u32,
                options: 0,
            },
        );
        self.tx
            .producer()
            .store(prod.wrapping_add(1), Ordering::Release);
        self.tx_outstanding += 1;
        true
    }

    /// Kick the kernel to transmit what was queued (copy mode always needs the kick).
    pub fn flush(&mut self) -> Result<(), XdpError> {
        if self.tx_outstanding == 0 {
            return Ok(());
        }
        // SAFETY: zero-length sendto on an AF_XDP socket starts transmission.
        let r = unsafe {
            libc::sendto(
                self.fd,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS)
                | Some(libc::ENETDOWN) => {}
                _ => {
                    return Err(XdpError::Os {
                        what: "sendto(AF_XDP) kick",
                        source: e,
                    })
                }
            }
        }
        self.reap_completions();
        Ok(())
    }

    pub fn stats(&self) -> Result<XskStats, XdpError> {
        let mut s = XskStats::default();
        let mut len = std::mem::size_of::<XskStats>() as u32;
        // SAFETY: s is large enough; the kernel writes at most len bytes.
        if unsafe {
            libc::getsockopt(
                self.fd,
                SOL_XDP,
                XDP_STATISTICS,
                (&mut s as *mut XskStats).cast(),
                &mut len,
            )
        } != 0
        {
            return Err(XdpError::Os {
                what: "XDP_STATISTICS",
                source: io::Error::last_os_error(),
            });
        }
        Ok(s)
    }
}

// SAFETY: the socket owns its mappings and fd; nothing in it is tied to a thread, so it
// may be created on one thread and used (exclusively) on another.
unsafe impl Send for XskSocket {}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for XskSocket {
    fn drop(&mut self) {
        // SAFETY: fd is owned; rings and UMEM are unmapped by their own Drop after this
        // (field order), which is allowed after close.
        unsafe { libc::close(self.fd) };
    }
}

struct FdGuard(RawFd);
impl Drop for FdGuard {
    fn drop(&mut self) {
        // SAFETY: closes an fd this module opened, on an error path.
        unsafe { libc::close(self.0) };
    }
}

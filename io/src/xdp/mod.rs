//! AF_XDP: the XDP program that steers the repair port's UDP packets into per-queue
//! AF_XDP sockets, the sockets themselves (UMEM + rings), Ethernet/IPv4/UDP framing, and
//! the interface facts the fast path needs (index, MAC, IPv4, neighbours).
//!
//! The program (`io/bpf/repair_xdp.c`) is compiled by `build.rs` with clang and loaded
//! with aya. [`XdpProgram`] detaches it when dropped.

pub mod packet;
pub mod socket;

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use aya::maps::{Array, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;

pub use packet::{build_udp_frame, parse_udp_frame, Endpoint, UdpView};
pub use socket::{XskConfig, XskSocket, XskStats};

/// The compiled XDP object (empty when the crate was built without clang: see `build.rs`).
pub static REPAIR_XDP_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/repair_xdp.o"));

/// Whether this binary carries the XDP program (its build found clang and libbpf-dev).
/// `CATCHUP_NO_XDP=1` makes a binary that has it behave as one built without it (repair
/// over UDP only; and how the tests check what a machine without clang sees).
pub fn program_built() -> bool {
    !REPAIR_XDP_OBJECT.is_empty() && std::env::var_os("CATCHUP_NO_XDP").is_none_or(|v| v != "1")
}

/// What to do when [`program_built`] is false.
pub const PROGRAM_MISSING: &str = "this binary was built without the XDP program (clang or libbpf-dev missing at build time): install them (Debian: apt-get install clang libbpf-dev) and rebuild";

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("AF_XDP: {what}: {source}")]
    Os {
        what: &'static str,
        source: io::Error,
    },
    #[error("AF_XDP configuration: {0}")]
    Config(&'static str),
    #[error("XDP program: {what}: {detail}")]
    Program { what: &'static str, detail: String },
    #[error("interface {iface}: {what}")]
    Iface { iface: String, what: String },
}

/// The repair XDP program attached to one interface. Dropping it detaches it.
pub struct XdpProgram {
    bpf: Ebpf,
    iface: String,
}

impl XdpProgram {
    /// Load the program, set the repair ports `first_port..first_port + port_count`, and
    /// attach it to `iface` (`skb_mode`: generic XDP, which every driver supports; else the
    /// driver's native mode).
    pub fn attach(
        iface: &str,
        first_port: u16,
        port_count: u16,
        skb_mode: bool,
    ) -> Result<XdpProgram, XdpError> {
        let perr = |what: &'static str| {
            move |e: &dyn std::fmt::Display| XdpError::Program {
                what,
                detail: e.to_string(),
            }
        };
        if !program_built() {
            return Err(XdpError::Program {
                what: "load",
                detail: PROGRAM_MISSING.into(),
            });
        }
        let mut bpf = Ebpf::load(REPAIR_XDP_OBJECT).map_err(|e| perr("load")(&e))?;
        {
            let map = bpf.map_mut("repair_port").ok_or(XdpError::Program {
                what: "map repair_port",
                detail: "missing".into(),
            })?;
            let mut ports: Array<_, u32> =
                Array::try_from(map).map_err(|e| perr("map repair_port")(&e))?;
            ports
                .set(0, u32::from(first_port), 0)
                .map_err(|e| perr("set repair port")(&e))?;
            ports
                .set(1, u32::from(port_count), 0)
                .map_err(|e| perr("set repair port count")(&e))?;
        }
        let prog: &mut Xdp = bpf
            .program_mut("repair_xdp")
            .ok_or(XdpError::Program {
                what: "program repair_xdp",
                detail: "missing".into(),
            })?
            .try_into()
            .map_err(|e| perr("program type")(&e))?;
        prog.load().map_err(|e| perr("verifier")(&e))?;
        let mode = if skb_mode {
            XdpMode::Skb
        } else {
            XdpMode::Default
        };
        prog.attach(iface, mode).map_err(|e| perr("attach")(&e))?;
        Ok(XdpProgram {
            bpf,
            iface: iface.to_string(),
        })
    }

    /// Steer packets of rx queue `queue` to `sock`.
    pub fn register(&mut self, queue: u32, sock: &XskSocket) -> Result<(), XdpError> {
        let map = self.bpf.map_mut("xsks").ok_or(XdpError::Program {
            what: "map xsks",
            detail: "missing".into(),
        })?;
        let mut xsks = XskMap::try_from(map).map_err(|e| XdpError::Program {
            what: "map xsks",
            detail: e.to_string(),
        })?;
        xsks.set(queue, sock.as_raw_fd(), 0)
            .map_err(|e| XdpError::Program {
                what: "register socket in xsks",
                detail: e.to_string(),
            })
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }
}

/// What the fast path needs to know about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceInfo {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    pub ipv4: Ipv4Addr,
    /// Prefix length of `ipv4`'s subnet.
    pub prefix_len: u8,
    pub rx_queues: u32,
}

/// Index, MAC (sysfs), first IPv4 address (getifaddrs) and rx queue count of `name`.
pub fn iface_info(name: &str) -> Result<IfaceInfo, XdpError> {
    let ierr = |what: String| XdpError::Iface {
        iface: name.to_string(),
        what,
    };
    let c = CString::new(name).map_err(|_| ierr("name holds a NUL byte".into()))?;
    // SAFETY: valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(ierr("no such interface".into()));
    }
    let mac = iface_mac(name).map_err(|e| ierr(format!("MAC address (SIOCGIFHWADDR): {e}")))?;
    // The channel count from the driver (the calling thread's namespace, like the MAC);
    // sysfs (which shows the namespace that mounted it) when the driver cannot say.
    let rx_queues = iface_rx_channels(name)
        .or_else(|| {
            std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                        .count() as u32
                })
                .ok()
        })
        .unwrap_or(1)
        .max(1);
    let (ipv4, prefix_len) = iface_ipv4(name).ok_or_else(|| ierr("no IPv4 address".into()))?;
    Ok(IfaceInfo {
        name: name.to_string(),
        index,
        mac,
        ipv4,
        prefix_len,
        rx_queues,
    })
}

/// A zeroed `ifreq` carrying the interface name (cut to `IFNAMSIZ - 1` bytes).
fn ifreq_named(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(name.as_bytes().iter().take(libc::IFNAMSIZ - 1))
    {
        *d = *s as libc::c_char;
    }
    req
}

/// Rx queues of `name` by `ETHTOOL_GCHANNELS` (rx plus combined channels), or `None`
/// when the driver does not implement it.
fn iface_rx_channels(name: &str) -> Option<u32> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    #[repr(C)]
    #[derive(Default)]
    struct EthtoolChannels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    // SAFETY: plain socket(2); closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    let mut req = ifreq_named(name);
    req.ifr_ifru.ifru_data = (&mut ch as *mut EthtoolChannels).cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_GCHANNELS fills the struct ifru_data points at,
    // which lives across the call.
    let r = unsafe { libc::ioctl(fd, SIOCETHTOOL, &mut req) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    let n = ch.rx_count + ch.combined_count;
    (r == 0 && n > 0).then_some(n)
}

/// The hardware address of `name`, asked of the kernel through a socket (so it is the
/// interface of the calling thread's network namespace, unlike sysfs).
fn iface_mac(name: &str) -> io::Result<[u8; 6]> {
    // SAFETY: plain socket(2); closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut req = ifreq_named(name);
    // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of a valid ifreq.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    let err = io::Error::last_os_error();
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    if r != 0 {
        return Err(err);
    }
    // SAFETY: the union member written by SIOCGIFHWADDR.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

fn iface_ipv4(name: &str) -> Option<(Ipv4Addr, u8)> {
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list freed below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = ifap;
    let mut guard = 0;
    while !cur.is_null() && guard < 4096 {
        guard += 1;
        // SAFETY: cur is a node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        // SAFETY: ifa_name is a valid C string.
        let n = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if n.to_bytes() == name.as_bytes() && !ifa.ifa_addr.is_null() {
            // SAFETY: non-null sockaddr; family checked before the cast.
            let fam = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if fam == libc::AF_INET {
                // SAFETY: AF_INET addresses are sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                let prefix = if ifa.ifa_netmask.is_null() {
                    32
                } else {
                    // SAFETY: netmask of an AF_INET address is a sockaddr_in.
                    let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
                    u32::from_be(m.sin_addr.s_addr).count_ones() as u8
                };
                found = Some((ip, prefix));
                break;
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: frees the list from getifaddrs.
    unsafe { libc::freeifaddrs(ifap) };
    found
}

/// The MAC of `ip` from the kernel's neighbour table (complete entries of the calling
/// thread's network namespace).
pub fn neighbor_mac(ip: Ipv4Addr, iface: &str) -> Option<[u8; 6]> {
    // the calling thread's namespace, which may differ from the process's
    let t = std::fs::read_to_string("/proc/thread-self/net/arp")
        .or_else(|_| std::fs::read_to_string("/proc/net/arp"))
        .ok()?;
    for line in t.lines().skip(1).take(65_536) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 6 && f[0] == ip.to_string() && f[5] == iface && f[2] == "0x2" {
            let mut mac = [0u8; 6];
            let parts: Vec<&str> = f[3].split(':').collect();
            if parts.len() != 6 {
                return None;
            }
            for (m, p) in mac.iter_mut().zip(parts) {
                *m = u8::from_str_radix(p, 16).ok()?;
            }
            return Some(mac);
        }
    }
    None
}

/// Resolve `ip`'s MAC on `iface`: look it up, else make the kernel resolve it by sending
/// one datagram to its discard port from a kernel socket, and poll the table for up to
/// `timeout_ms`. The peer must be on the interface's subnet.
pub fn resolve_neighbor(
    info: &IfaceInfo,
    ip: Ipv4Addr,
    timeout_ms: u64,
) -> Result<[u8; 6], XdpError> {
    let mask = if info.prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(info.prefix_len.min(32)))
    };
    if u32::from(ip) & mask != u32::from(info.ipv4) & mask {
        return Err(XdpError::Iface {
            iface: info.name.clone(),
            what: format!(
                "peer {ip} is not on {}/{} (routed peers need the UDP path)",
                info.ipv4, info.prefix_len
            ),
        });
    }
    if let Some(m) = neighbor_mac(ip, &info.name) {
        return Ok(m);
    }
    let s = std::net::UdpSocket::bind((info.ipv4, 0)).map_err(|e| XdpError::Os {
        what: "neighbour probe socket",
        source: e,
    })?;
    let start = std::time::Instant::now();
    while (start.elapsed().as_millis() as u64) < timeout_ms {
        let _ = s.send_to(&[0u8], (ip, 9));
        std::thread::sleep(std::time::Duration::from_millis(20));
        if let Some(m) = neighbor_mac(ip, &info.name) {
            return Ok(m);
        }
    }
    Err(XdpError::Iface {
        iface: info.name.clone(),
        what: format!("no neighbour entry for {ip} after {timeout_ms} ms"),
    })
}

//! Claiming a listen port. Serving shards bind with SO_REUSEPORT so the kernel spreads
//! inbound peers over them; the same option would let a second process share the port
//! silently. So first one plain socket (no SO_REUSEPORT) is bound and dropped: that fails
//! when any other process holds the port. Then the port is held, from before the address is
//! printed until the process ends, by a socket that is bound with SO_REUSEPORT but never
//! listens (nor sets SO_REUSEADDR, which would let a plain bind pass while no shard
//! listens yet): it takes no connections, lets this process's shards bind beside it, and makes
//! the plain bind of any later process fail. Only when the port still has connections of
//! an earlier process in TIME_WAIT (a server restarted on its address) does the hold set
//! SO_REUSEADDR too, as the plain bind did: nothing else can bind over those.

use std::net::SocketAddr;

/// The port is held by another process (or cannot be bound at all).
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("{addr} is already in use by another process; pick another {flag}")]
    InUse {
        addr: SocketAddr,
        flag: &'static str,
    },
    #[error("cannot listen on {addr}: {source} (check {flag})")]
    Other {
        addr: SocketAddr,
        flag: &'static str,
        source: std::io::Error,
    },
}

/// A TCP port held for this process's shards. Keep it alive while serving.
#[derive(Debug)]
pub struct PortClaim {
    /// The address to bind: for port 0, the free port the kernel chose.
    pub addr: SocketAddr,
    _hold: socket2::Socket,
}

/// Check that no other process holds `addr` (TCP) and hold it for this process's shards.
/// `flag` names the option that sets the address, for the error line.
pub fn claim_tcp(addr: SocketAddr, flag: &'static str) -> Result<PortClaim, ListenError> {
    let classify = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            ListenError::InUse { addr, flag }
        } else {
            ListenError::Other { addr, flag, source }
        }
    };
    let hold = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(classify)?;
    hold.set_reuse_port(true).map_err(classify)?;
    if addr.port() != 0 {
        // A plain bind first: it fails while another process holds the port, even one
        // that bound it with SO_REUSEPORT under another user. It also fails over the
        // connections a killed server left in TIME_WAIT; those alone do not hold the port.
        match std::net::TcpListener::bind(addr) {
            Ok(l) => drop(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && only_time_wait(addr) => {}
            Err(e) => return Err(classify(e)),
        }
    }
    // For port 0 the kernel picks a free port for the claim itself, so no other socket
    // (say a client's ephemeral port) can take it between a probe and the claim.
    match hold.bind(&addr.into()) {
        Ok(()) => {}
        // Only connections of an earlier process in TIME_WAIT are left on the port (a
        // server restarted on its address), from a listener with SO_REUSEADDR, which only
        // a socket with SO_REUSEADDR binds over. The hold does so then; another process
        // could share the port only until the shards listen.
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && only_time_wait(addr) => {
            hold.set_reuse_address(true).map_err(classify)?;
            hold.bind(&addr.into()).map_err(classify)?;
        }
        Err(e) => return Err(classify(e)),
    }
    let resolved = hold
        .local_addr()
        .map_err(classify)?
        .as_socket()
        .ok_or_else(|| classify(std::io::Error::other("not an inet address")))?;
    Ok(PortClaim {
        addr: resolved,
        _hold: hold,
    })
}

/// Whether every TCP socket on `addr`'s port (in this network namespace) is a connection
/// in TIME_WAIT, and there is at least one: what a killed server leaves behind for a
/// minute, which holds no port for a new listener. (A socket bound but not listening is
/// not in these tables; a serving process listens milliseconds after its claim.)
fn only_time_wait(addr: SocketAddr) -> bool {
    let port = addr.port();
    if port == 0 {
        return false;
    }
    let mut time_wait = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (f.get(1), f.get(3)) else {
                continue;
            };
            let on_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if !on_port {
                continue;
            }
            // State 06 is TIME_WAIT.
            if *state != "06" {
                return false;
            }
            time_wait += 1;
        }
    }
    time_wait > 0
}

/// Bind `addr` (UDP) without SO_REUSEPORT, so that no other process can share it: the
/// socket is handed to the one shard that serves on it. An address another process holds
/// gives the same one line as a TCP port. `flag` names the option that sets the address.
pub fn claim_udp(addr: SocketAddr, flag: &'static str) -> Result<std::net::UdpSocket, ListenError> {
    std::net::UdpSocket::bind(addr).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            ListenError::InUse { addr, flag }
        } else {
            ListenError::Other { addr, flag, source }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_held_by_a_reuse_port_listener_is_refused() {
        // The other holder binds with SO_REUSEPORT, as a serving shard does.
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("executor");
        ex.run(async {
            let held = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = held.local_addr().expect("addr");
            let err = claim_tcp(addr, "--listen").expect_err("port is held");
            assert!(matches!(err, ListenError::InUse { .. }), "{err}");
            assert_eq!(
                err.to_string(),
                format!("{addr} is already in use by another process; pick another --listen")
            );
            drop(held);
            let claim = claim_tcp(addr, "--listen").expect("port is free again");
            assert_eq!(claim.addr, addr);
            // Held: our own reuse-port listener binds beside the claim, another
            // process's plain bind does not.
            let ours = glommio::net::TcpListener::bind(addr).expect("shard binds beside");
            assert!(std::net::TcpListener::bind(addr).is_err());
            drop(ours);
            // Not even with SO_REUSEADDR (which std sets) while no shard listens yet.
            assert!(std::net::TcpListener::bind(addr).is_err());
        });
    }

    #[test]
    fn connections_left_in_time_wait_do_not_hold_the_port() {
        // A server that closed its connections first (then exited) leaves them in
        // TIME_WAIT on its port for a minute: a restart on the same address must work,
        // whether its listener had SO_REUSEADDR (std) or only SO_REUSEPORT (a shard's).
        for reuse_port_only in [false, true] {
            let l = if reuse_port_only {
                let sk = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .expect("socket");
                sk.set_reuse_port(true).expect("reuseport");
                sk.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
                    .expect("bind");
                sk.listen(8).expect("listen");
                std::net::TcpListener::from(sk)
            } else {
                std::net::TcpListener::bind("127.0.0.1:0").expect("bind")
            };
            let addr = l.local_addr().expect("addr");
            let c = std::net::TcpStream::connect(addr).expect("connect");
            let (s, _) = l.accept().expect("accept");
            drop(s);
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(c);
            drop(l);
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(only_time_wait(addr), "{addr}");
            let claim = claim_tcp(addr, "--listen")
                .unwrap_or_else(|e| panic!("TIME_WAIT does not hold the port: {e}"));
            assert_eq!(claim.addr, addr);
            if reuse_port_only {
                // A shard's old connections: the hold needed no SO_REUSEADDR, and another
                // process's plain bind fails as usual.
                assert!(std::net::TcpListener::bind(addr).is_err());
            }
        }
    }

    #[test]
    fn a_udp_port_held_by_a_reuse_port_socket_is_refused() {
        let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .expect("socket");
        held.set_reuse_port(true).expect("reuseport");
        held.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .expect("bind");
        let addr = held.local_addr().unwrap().as_socket().unwrap();
        let err = claim_udp(addr, "--listen").expect_err("port is held");
        assert_eq!(
            err.to_string(),
            format!("{addr} is already in use by another process; pick another --listen")
        );
        drop(held);
        let ours = claim_udp(addr, "--listen").expect("port is free again");
        // Ours has no SO_REUSEPORT: a reuse-port socket cannot join it.
        let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .expect("socket");
        other.set_reuse_port(true).expect("reuseport");
        assert!(other.bind(&addr.into()).is_err());
        drop(ours);
    }

    #[test]
    fn port_zero_picks_a_concrete_port() {
        let a = claim_tcp("127.0.0.1:0".parse().unwrap(), "--listen").unwrap();
        assert_ne!(a.addr.port(), 0);
    }
}

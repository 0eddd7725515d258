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
        // that bound it with SO_REUSEPORT under another user.
        drop(std::net::TcpListener::bind(addr).map_err(classify)?);
    }
    // For port 0 the kernel picks a free port for the claim itself, so no other socket
    // (say a client's ephemeral port) can take it between a probe and the claim.
    match hold.bind(&addr.into()) {
        Ok(()) => {}
        // The plain bind passed, and it sets SO_REUSEADDR (as std does): what is left on
        // the port is connections of an earlier process in TIME_WAIT (a server restarted
        // on its address), which only a socket with SO_REUSEADDR binds over. The hold does
        // so then; another process could share the port only until the shards listen.
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 => {
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
        // TIME_WAIT on its port for a minute: a restart on the same address must work.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let c = std::net::TcpStream::connect(addr).expect("connect");
        let (s, _) = l.accept().expect("accept");
        drop(s);
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(c);
        drop(l);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let claim = claim_tcp(addr, "--listen").expect("TIME_WAIT does not hold the port");
        assert_eq!(claim.addr, addr);
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

//! `enode://<128 hex node id>@<ip>:<port>[?discport=N]` URLs.

use std::net::{IpAddr, SocketAddr};

use crate::error::{Devp2pError, Result};

/// A node's id and TCP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Enode {
    pub id: [u8; 64],
    pub addr: SocketAddr,
}

impl Enode {
    pub fn parse(s: &str) -> Result<Self> {
        let rest = s
            .trim()
            .strip_prefix("enode://")
            .ok_or_else(|| Devp2pError::Enode(format!("{s:?}: missing enode:// prefix")))?;
        let (id_hex, hostport) = rest
            .split_once('@')
            .ok_or_else(|| Devp2pError::Enode(format!("{s:?}: missing '@'")))?;
        if id_hex.len() != 128 {
            return Err(Devp2pError::Enode(format!(
                "{s:?}: node id has {} hex digits, expected 128",
                id_hex.len()
            )));
        }
        let mut id = [0u8; 64];
        hex::decode_to_slice(id_hex, &mut id)
            .map_err(|e| Devp2pError::Enode(format!("{s:?}: node id: {e}")))?;
        let hostport = hostport.split(['?', '/']).next().unwrap_or("");
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| Devp2pError::Enode(format!("{s:?}: missing port")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = host
            .parse()
            .map_err(|_| Devp2pError::Enode(format!("{s:?}: {host:?} is not an IP address")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| Devp2pError::Enode(format!("{s:?}: bad port {port:?}")))?;
        if port == 0 {
            return Err(Devp2pError::Enode(format!("{s:?}: port 0")));
        }
        Ok(Enode {
            id,
            addr: SocketAddr::new(ip, port),
        })
    }
}

impl std::fmt::Display for Enode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "enode://{}@{}", hex::encode(self.id), self.addr)
    }
}

impl std::str::FromStr for Enode {
    type Err = Devp2pError;
    fn from_str(s: &str) -> Result<Self> {
        Enode::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let id = "a".repeat(128);
        let e = Enode::parse(&format!("enode://{id}@127.0.0.1:30303?discport=0")).unwrap();
        assert_eq!(e.addr, "127.0.0.1:30303".parse().unwrap());
        assert_eq!(e.to_string(), format!("enode://{id}@127.0.0.1:30303"));
        assert_eq!(Enode::parse(&e.to_string()).unwrap(), e);
        assert!(Enode::parse("enode://abc@127.0.0.1:1").is_err());
        assert!(Enode::parse(&format!("enode://{id}@host:1")).is_err());
        assert!(Enode::parse(&format!("enode://{id}@127.0.0.1")).is_err());
    }
}

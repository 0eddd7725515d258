//! Network namespaces joined by a veth pair, for the repair benchmark: created with `ip`,
//! removed on drop. A thread can move itself into one with [`enter`]; threads it spawns
//! afterwards (shard executors) inherit it.

use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{cmd}` failed: {stderr}")]
    Cmd { cmd: String, stderr: String },
    #[error("cannot run `ip` (iproute2): {0}")]
    NoIp(std::io::Error),
    #[error("entering network namespace {name}: {source}")]
    Enter {
        name: String,
        source: std::io::Error,
    },
}

fn ip(args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(NetnsError::NoIp)?;
    if !out.status.success() {
        return Err(NetnsError::Cmd {
            cmd: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// `a` holds `veth_a` with `10.201.<subnet>.1/30`, `b` holds `veth_b` with `.2`.
pub struct VethPair {
    pub a: String,
    pub b: String,
    pub veth_a: String,
    pub veth_b: String,
    pub subnet: u8,
}

impl VethPair {
    pub fn create(tag: &str, subnet: u8) -> Result<VethPair, NetnsError> {
        Self::create_with_queues(tag, subnet, 1)
    }

    /// Like [`VethPair::create`], with `queues` rx and tx queues on each end.
    pub fn create_with_queues(tag: &str, subnet: u8, queues: u32) -> Result<VethPair, NetnsError> {
        let q = queues.max(1).to_string();
        let pid = std::process::id() % 100_000;
        let p = VethPair {
            a: format!("cu{tag}{pid}a"),
            b: format!("cu{tag}{pid}b"),
            veth_a: format!("v{tag}{pid}a"),
            veth_b: format!("v{tag}{pid}b"),
            subnet,
        };
        ip(&["netns", "add", &p.a])?;
        // from here on, drop removes whatever was made
        ip(&["netns", "add", &p.b])?;
        ip(&[
            "link",
            "add",
            &p.veth_a,
            "netns",
            &p.a,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &p.veth_b,
            "netns",
            &p.b,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])?;
        ip(&[
            "-n",
            &p.a,
            "addr",
            "add",
            &format!("10.201.{subnet}.1/30"),
            "dev",
            &p.veth_a,
        ])?;
        ip(&[
            "-n",
            &p.b,
            "addr",
            "add",
            &format!("10.201.{subnet}.2/30"),
            "dev",
            &p.veth_b,
        ])?;
        for (ns, dev) in [(&p.a, &p.veth_a), (&p.b, &p.veth_b)] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(p)
    }
    pub fn ip_a(&self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, 201, self.subnet, 1)
    }
    pub fn ip_b(&self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, 201, self.subnet, 2)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

/// Move the calling thread into the named network namespace (`/run/netns/<name>`).
pub fn enter(name: &str) -> Result<(), NetnsError> {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).map_err(|e| NetnsError::Enter {
        name: name.into(),
        source: e,
    })?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a namespace fd; affects only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NetnsError::Enter {
            name: name.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

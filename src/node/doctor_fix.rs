//! `catchup doctor --fix [--apply]`: the nftables rules that open the ports catchup uses.
//!
//! The rules live in a table of their own (`table inet catchup`, base chain `input`) and
//! are loaded atomically with `nft -f -`; loading again replaces the table rather than
//! adding rules twice. An `accept` in one table does not override a `drop` in another
//! table's input chain, so on a host whose firewall drops by policy the same rules belong
//! in that chain too; the script says so in a comment.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;

use catchup_io::probe;

use crate::node::doctor::DoctorCmd;
use crate::node::opts::GlobalOpts;

/// The nftables table the rules go into.
pub const NFT_TABLE: &str = "inet catchup";

/// Transport protocol of one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One port to accept and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRule {
    pub proto: Proto,
    pub port: u16,
    /// What uses it and the flag that sets it.
    pub what: String,
}

/// The ports catchup's configuration uses. `admin` is the TCP port of `--admin`, if given.
pub fn port_rules(p2p: u16, gossip: u16, repair: u16, admin: Option<u16>) -> Vec<PortRule> {
    let mut rules = vec![
        (Proto::Tcp, p2p, "devp2p (--p2p-port)"),
        (Proto::Udp, p2p, "discovery (--p2p-port)"),
        (Proto::Udp, gossip, "gossip (--gossip-port)"),
        (Proto::Udp, repair, "shred repair (--repair-port)"),
    ];
    if let Some(port) = admin {
        rules.push((Proto::Tcp, port, "admin endpoint (--admin)"));
    }
    let mut out: Vec<PortRule> = Vec::new();
    for (proto, port, what) in rules {
        // Two flags with the same port and protocol need one rule.
        if let Some(r) = out.iter_mut().find(|r| r.proto == proto && r.port == port) {
            r.what.push_str(" and ");
            r.what.push_str(what);
        } else {
            out.push(PortRule {
                proto,
                port,
                what: what.to_string(),
            });
        }
    }
    out
}

/// The `nft -f -` script that (re)creates `table inet catchup` with one accept rule per
/// port.
pub fn nft_script(rules: &[PortRule]) -> String {
    let mut s = String::from(
        "#!/usr/sbin/nft -f\n\
         # catchup doctor --fix: accept catchup's ports (load with `nft -f -` as root).\n\
         # An accept here does not override a drop in another table's input chain: if the\n\
         # host's firewall drops by policy, add the same rules to that chain as well.\n",
    );
    // Declaring the table, deleting it and defining it again makes the load replace an
    // earlier one instead of adding the rules twice; nft applies the file atomically.
    s.push_str(&format!(
        "table {NFT_TABLE}\ndelete table {NFT_TABLE}\ntable {NFT_TABLE} {{\n"
    ));
    s.push_str("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n");
    for r in rules {
        s.push_str(&format!(
            "\t\t{} dport {} accept comment \"catchup {}\"\n",
            r.proto.as_str(),
            r.port,
            r.what
        ));
    }
    s.push_str("\t}\n}\n");
    s
}

/// Why the script could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "doctor --fix --apply: changing the firewall needs root or CAP_NET_ADMIN \
         (run it as root, or pipe `catchup doctor --fix` into `sudo nft -f -`)"
    )]
    NotPrivileged,
    #[error(
        "doctor --fix --apply: {nft} not found: install nftables (apt-get install nftables) \
         or give its path with --nft"
    )]
    NftMissing { nft: String },
    #[error("doctor --fix --apply: run {nft}: {source}")]
    Spawn {
        nft: String,
        #[source]
        source: std::io::Error,
    },
    #[error("doctor --fix --apply: `{nft} -f -` failed ({status}): {message}")]
    NftFailed {
        nft: String,
        status: std::process::ExitStatus,
        message: String,
    },
}

/// Load `script` with `nft -f -`.
pub fn apply(script: &str, nft: &Path) -> Result<(), ApplyError> {
    if !probe::can_admin_network() {
        return Err(ApplyError::NotPrivileged);
    }
    let shown = nft.display().to_string();
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ApplyError::NftMissing { nft: shown.clone() },
            _ => ApplyError::Spawn {
                nft: shown.clone(),
                source,
            },
        })?;
    let write = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes());
    // nft reads the whole script before it answers; wait for it even if the write failed,
    // then report what nft said.
    let out = child
        .wait_with_output()
        .map_err(|source| ApplyError::Spawn {
            nft: shown.clone(),
            source,
        })?;
    if !out.status.success() || write.is_err() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string)
            .or_else(|| write.err().map(|e| format!("write the script: {e}")))
            .unwrap_or_else(|| "no message".into());
        return Err(ApplyError::NftFailed {
            nft: shown,
            status: out.status,
            message,
        });
    }
    Ok(())
}

/// `doctor --fix`: print the script; with `--apply`, load it.
pub fn run(cmd: &DoctorCmd, global: &GlobalOpts) -> anyhow::Result<i32> {
    let rules = port_rules(
        cmd.p2p_port,
        cmd.gossip_port,
        cmd.repair_port,
        global.admin.map(|a| a.port()),
    );
    let script = nft_script(&rules);
    if cmd.apply {
        apply(&script, &cmd.nft)?;
    }
    if cmd.json {
        let list: Vec<_> = rules
            .iter()
            .map(|r| json!({"proto": r.proto.as_str(), "port": r.port, "what": r.what}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "table": NFT_TABLE,
                "rules": list,
                "script": script,
                "applied": cmd.apply,
            }))?
        );
    } else {
        print!("{script}");
        if cmd.apply {
            println!(
                "# applied with `{} -f -`: table {NFT_TABLE}, {} rule(s)",
                cmd.nft.display(),
                rules.len()
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cover_every_port_once() {
        let r = port_rules(30303, 8001, 8008, Some(9100));
        assert_eq!(r.len(), 5);
        let s = nft_script(&r);
        for line in [
            "tcp dport 30303 accept",
            "udp dport 30303 accept",
            "udp dport 8001 accept",
            "udp dport 8008 accept",
            "tcp dport 9100 accept",
        ] {
            assert_eq!(s.matches(line).count(), 1, "{line} in\n{s}");
        }
        assert!(s.contains("table inet catchup {"));
        // The same UDP port for gossip and repair is one rule naming both.
        let r = port_rules(30303, 8001, 8001, None);
        assert_eq!(r.len(), 3);
        assert!(r[2].what.contains("gossip") && r[2].what.contains("repair"));
    }
}

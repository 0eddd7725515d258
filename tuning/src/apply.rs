//! Applying a [`Plan`] to the host (`catchup tune --apply`) and checking which parts of it
//! are in place (`catchup tune --check`), in the spirit of `fdctl configure check`.
//!
//! Parts of a plan:
//! * `channels`: the NIC has `target_channels` queues (set with `ethtool -L`, `combined`
//!   first, else separate `rx`/`tx` counts as veth and some drivers want);
//! * `irq_affinity`: each queue IRQ's `/proc/irq/N/smp_affinity_list` is the planned CPUs;
//! * `rps_xps`: RPS (`rx-N/rps_cpus`) and XPS (`tx-N/xps_cpus`) are off on the queues the
//!   shards own;
//! * `irqbalance`: the irqbalance daemon is not running (it would move IRQs back). Checked
//!   only; the operator stops it.
//!
//! Nothing here panics on odd sysfs content: unreadable or malformed files are reported.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::plan::{NicPlan, Plan};
use crate::topology::{format_cpu_list, parse_cpu_list, read_nic, HostRoot};

/// How much of a part is in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartState {
    Ok,
    Partly,
    Not,
    /// The part does not apply here (e.g. a NIC without per-queue IRQs).
    #[serde(rename = "n/a")]
    NotApplicable,
}

impl PartState {
    pub fn as_str(self) -> &'static str {
        match self {
            PartState::Ok => "ok",
            PartState::Partly => "partly",
            PartState::Not => "not",
            PartState::NotApplicable => "n/a",
        }
    }

    fn from_counts(ok: usize, total: usize) -> Self {
        if total == 0 {
            PartState::NotApplicable
        } else if ok == total {
            PartState::Ok
        } else if ok == 0 {
            PartState::Not
        } else {
            PartState::Partly
        }
    }
}

/// The state of one part of the plan on this host.
#[derive(Clone, Debug, Serialize)]
pub struct PartReport {
    pub part: &'static str,
    pub state: PartState,
    pub detail: String,
}

/// What happened to one change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done (or already in place).
    Applied,
    /// Tried and refused; `detail` says why.
    Failed,
    /// Does not apply on this host; `detail` says why.
    Skipped,
}

/// One change `apply` tried.
#[derive(Clone, Debug, Serialize)]
pub struct ActionResult {
    pub part: &'static str,
    pub action: String,
    pub outcome: Outcome,
    /// Why it could not be applied (or what happened).
    pub detail: String,
}

fn outcome(ok: bool) -> Outcome {
    if ok {
        Outcome::Applied
    } else {
        Outcome::Failed
    }
}

fn mask_is_zero(text: &str) -> Option<bool> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let mut all_zero = true;
    for part in t.split(',') {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        all_zero &= part.bytes().all(|b| b == b'0');
    }
    Some(all_zero)
}

fn queue_file(root: &HostRoot, nic: &str, dir: &str, q: usize, file: &str) -> PathBuf {
    root.sys
        .join("class/net")
        .join(nic)
        .join(format!("queues/{dir}-{q}/{file}"))
}

fn irq_file(root: &HostRoot, irq: u32) -> PathBuf {
    root.proc.join(format!("irq/{irq}/smp_affinity_list"))
}

fn current_channels(root: &HostRoot, nic: &NicPlan) -> Result<(usize, usize), String> {
    let n = read_nic(root, &nic.name).map_err(|e| e.to_string())?;
    Ok((n.rx_queues.len(), n.tx_queues.len()))
}

fn irqbalance_running(root: &HostRoot) -> bool {
    let Ok(entries) = std::fs::read_dir(&root.proc) else {
        return false;
    };
    entries.flatten().take(1_000_000).any(|e| {
        e.file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
            && std::fs::read_to_string(e.path().join("comm"))
                .map(|c| c.trim() == "irqbalance")
                .unwrap_or(false)
    })
}

/// Which parts of `plan` are in place on the host at `root`.
pub fn check(plan: &Plan, root: &HostRoot) -> Vec<PartReport> {
    let mut out = Vec::new();
    let Some(nic) = &plan.nic else {
        out.push(PartReport {
            part: "nic",
            state: PartState::NotApplicable,
            detail: "the plan names no NIC (make it with --nic IFACE)".into(),
        });
        return out;
    };
    out.push(match current_channels(root, nic) {
        Ok((rx, tx)) => PartReport {
            part: "channels",
            state: if rx == nic.target_channels && tx == nic.target_channels {
                PartState::Ok
            } else {
                PartState::Not
            },
            detail: format!(
                "{}: {rx} rx / {tx} tx queue(s), plan wants {}",
                nic.name, nic.target_channels
            ),
        },
        Err(e) => PartReport {
            part: "channels",
            state: PartState::Not,
            detail: e,
        },
    });

    let mut ok = 0;
    let mut wrong = Vec::new();
    for irq in &nic.irqs {
        let path = irq_file(root, irq.irq);
        match std::fs::read_to_string(&path).map(|s| parse_cpu_list(&s)) {
            Ok(Ok(cpus)) if cpus == irq.cpus => ok += 1,
            Ok(Ok(cpus)) => wrong.push(format!(
                "irq {} is on {} (plan {})",
                irq.irq,
                format_cpu_list(&cpus),
                format_cpu_list(&irq.cpus)
            )),
            Ok(Err(e)) => wrong.push(format!("{}: {e}", path.display())),
            Err(e) => wrong.push(format!("{}: {e}", path.display())),
        }
    }
    let state = PartState::from_counts(ok, nic.irqs.len());
    out.push(PartReport {
        part: "irq_affinity",
        state,
        detail: if state == PartState::NotApplicable {
            format!("{} has no per-queue IRQs", nic.name)
        } else if wrong.is_empty() {
            format!("{ok} IRQ(s) as planned")
        } else {
            format!("{ok}/{} as planned; {}", nic.irqs.len(), wrong.join("; "))
        },
    });

    let mut ok = 0;
    let mut total = 0;
    let mut wrong = Vec::new();
    for &q in &nic.xdp_queues {
        for (dir, file) in [("rx", "rps_cpus"), ("tx", "xps_cpus")] {
            total += 1;
            let path = queue_file(root, &nic.name, dir, q, file);
            match std::fs::read_to_string(&path) {
                Ok(t) => match mask_is_zero(&t) {
                    Some(true) => ok += 1,
                    Some(false) => wrong.push(format!("{dir}-{q}/{file} = {}", t.trim())),
                    None => wrong.push(format!("{}: not a CPU mask", path.display())),
                },
                Err(e) => wrong.push(format!("{dir}-{q}/{file}: {e}")),
            }
        }
    }
    out.push(PartReport {
        part: "rps_xps",
        state: PartState::from_counts(ok, total),
        detail: if wrong.is_empty() {
            format!("RPS/XPS off on {} queue(s)", nic.xdp_queues.len())
        } else {
            format!("{ok}/{total} off; {}", wrong.join("; "))
        },
    });

    let running = irqbalance_running(root);
    out.push(PartReport {
        part: "irqbalance",
        state: if running {
            PartState::Not
        } else {
            PartState::Ok
        },
        detail: if running {
            "irqbalance is running and will move IRQs: systemctl stop irqbalance".into()
        } else {
            "irqbalance is not running".into()
        },
    });
    out
}

fn write_file(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("write {:?} to {}: {e}", value, path.display()))
}

fn run_ethtool(args: &[String]) -> Result<(), String> {
    let out = Command::new("ethtool")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ethtool: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "ethtool {} failed: {}",
            args.join(" "),
            err.lines().next().unwrap_or("").trim()
        ))
    }
}

/// Apply `plan` to the host at `root`: channel count (with the `ethtool` binary), IRQ
/// affinity, RPS/XPS off. Every step is attempted; each reports whether it was applied and
/// why not. IRQ lines are applied after the channel change (for the IRQs that exist).
pub fn apply(plan: &Plan, root: &HostRoot) -> Vec<ActionResult> {
    let mut out = Vec::new();
    let Some(nic) = &plan.nic else {
        out.push(ActionResult {
            part: "nic",
            action: "nothing to apply".into(),
            outcome: Outcome::Skipped,
            detail: "the plan names no NIC (make it with --nic IFACE)".into(),
        });
        return out;
    };
    let target = nic.target_channels;
    match current_channels(root, nic) {
        Ok((rx, tx)) if rx == target && tx == target => out.push(ActionResult {
            part: "channels",
            action: format!("keep {target} channel(s) on {}", nic.name),
            outcome: Outcome::Applied,
            detail: "already in place".into(),
        }),
        Ok(_) => {
            let combined: Vec<String> = vec![
                "-L".into(),
                nic.name.clone(),
                "combined".into(),
                target.to_string(),
            ];
            let split: Vec<String> = vec![
                "-L".into(),
                nic.name.clone(),
                "rx".into(),
                target.to_string(),
                "tx".into(),
                target.to_string(),
            ];
            let r = run_ethtool(&combined)
                .map(|_| combined.join(" "))
                .or_else(|e1| {
                    run_ethtool(&split)
                        .map(|_| split.join(" "))
                        .map_err(|e2| format!("{e1}; {e2}"))
                });
            out.push(match r {
                Ok(cmd) => ActionResult {
                    part: "channels",
                    action: format!("ethtool {cmd}"),
                    outcome: Outcome::Applied,
                    detail: format!("{} now has {target} channel(s)", nic.name),
                },
                Err(e) => ActionResult {
                    part: "channels",
                    action: format!("set {target} channel(s) on {}", nic.name),
                    outcome: Outcome::Failed,
                    detail: e,
                },
            });
        }
        Err(e) => out.push(ActionResult {
            part: "channels",
            action: format!("set {target} channel(s) on {}", nic.name),
            outcome: Outcome::Failed,
            detail: e,
        }),
    }
    for irq in &nic.irqs {
        let path = irq_file(root, irq.irq);
        let list = format_cpu_list(&irq.cpus);
        let r = write_file(&path, &list);
        out.push(ActionResult {
            part: "irq_affinity",
            action: format!("irq {} ({}) -> cpus {list}", irq.irq, irq.name),
            outcome: outcome(r.is_ok()),
            detail: r.err().unwrap_or_else(|| "written".into()),
        });
    }
    if nic.irqs.is_empty() {
        out.push(ActionResult {
            part: "irq_affinity",
            action: "none".into(),
            outcome: Outcome::Skipped,
            detail: format!(
                "{} has no per-queue IRQs (virtual device): nothing to pin",
                nic.name
            ),
        });
    }
    for &q in &nic.xdp_queues {
        for (dir, file) in [("rx", "rps_cpus"), ("tx", "xps_cpus")] {
            let path = queue_file(root, &nic.name, dir, q, file);
            let r = if path.exists() {
                write_file(&path, "0")
            } else {
                Err(format!(
                    "{} does not exist (the NIC has fewer queues than planned)",
                    path.display()
                ))
            };
            out.push(ActionResult {
                part: "rps_xps",
                action: format!("{dir}-{q}/{file} = 0"),
                outcome: outcome(r.is_ok()),
                detail: r.err().unwrap_or_else(|| "written".into()),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeHost;

    #[test]
    fn masks() {
        assert_eq!(mask_is_zero("0\n"), Some(true));
        assert_eq!(mask_is_zero("00000000,00000000"), Some(true));
        assert_eq!(mask_is_zero("00000000,00000001"), Some(false));
        assert_eq!(mask_is_zero("zz"), None);
        assert_eq!(mask_is_zero(""), None);
    }

    #[test]
    fn apply_then_check_on_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        FakeHost {
            cores_per_node: 2,
            numa_nodes: 1,
            threads_per_core: 1,
            nic: Some(("eth0".into(), 2, 40)),
        }
        .write(dir.path())
        .unwrap();
        let root = HostRoot {
            sys: dir.path().join("sys"),
            proc: dir.path().join("proc"),
        };
        for q in 0..2 {
            std::fs::write(queue_file(&root, "eth0", "rx", q, "rps_cpus"), "3\n").unwrap();
            std::fs::write(queue_file(&root, "eth0", "tx", q, "xps_cpus"), "3\n").unwrap();
        }
        let topo = crate::read_topology(&root).unwrap();
        let nic = crate::read_nic(&root, "eth0").unwrap();
        let plan = crate::make_plan(&topo, None, Some(&nic)).unwrap();
        let before = check(&plan, &root);
        let state = |r: &[PartReport], p: &str| r.iter().find(|x| x.part == p).unwrap().state;
        assert_eq!(state(&before, "channels"), PartState::Ok);
        assert_eq!(state(&before, "irq_affinity"), PartState::Not);
        assert_eq!(state(&before, "rps_xps"), PartState::Not);

        let done = apply(&plan, &root);
        assert!(
            done.iter().all(|a| a.outcome == Outcome::Applied),
            "{done:?}"
        );
        let after = check(&plan, &root);
        assert_eq!(state(&after, "irq_affinity"), PartState::Ok);
        assert_eq!(state(&after, "rps_xps"), PartState::Ok);

        // Undo one IRQ: partly.
        std::fs::write(irq_file(&root, 41), "0-1\n").unwrap();
        assert_eq!(
            state(&check(&plan, &root), "irq_affinity"),
            PartState::Partly
        );
    }
}

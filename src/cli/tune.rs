//! `catchup tune`: read the host's cores, SMT siblings, NUMA nodes and NIC queues/IRQs and
//! print a plan (shard ↔ core ↔ NIC queue, IRQ cores) with the commands that apply it.
//! Read-only unless `--apply`; `--check` says which parts of a plan are in place.

use std::path::PathBuf;

use anyhow::Context;

use catchup_tuning::apply::{ActionResult, Outcome, PartReport, PartState};
use catchup_tuning::topology::format_cpu_list;
use catchup_tuning::{make_plan, read_nic, read_topology, HostRoot, Plan};

use crate::node::opts::GlobalOpts;

/// Plan shards, cores, NIC queues and IRQ cores for this host (read-only).
#[derive(clap::Args, Debug)]
pub struct TuneCmd {
    /// Number of shards (default: one per physical core left after IRQ cores).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Network interface whose queues the shards should own (e.g. `eth0`).
    #[arg(long, value_name = "IFACE")]
    pub nic: Option<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the plan as TOML to FILE (use it with `--plan FILE`).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Apply the plan (the `--plan FILE` one, else the one made now): NIC channel count
    /// (ethtool), IRQ affinity, RPS/XPS off on the shards' queues. Needs root. Reports
    /// what could not be applied and why; exit 1 if anything failed.
    #[arg(long, conflicts_with = "check")]
    pub apply: bool,
    /// Say which parts of the plan are in place (ok / partly / not / n/a); exit 1 unless
    /// all are ok or n/a.
    #[arg(long)]
    pub check: bool,
    /// Read the host from this sysfs root instead of /sys (for testing).
    #[arg(long, hide = true, default_value = "/sys")]
    pub sys_root: PathBuf,
    /// Read the host from this procfs root instead of /proc (for testing).
    #[arg(long, hide = true, default_value = "/proc")]
    pub proc_root: PathBuf,
}

/// Human-readable rendering of a plan.
pub fn render_plan(plan: &Plan) -> String {
    let mut s = String::new();
    let h = &plan.host;
    s.push_str(&format!(
        "host: {} CPU(s), {} physical core(s), {} thread(s)/core, {} NUMA node(s)\n",
        h.cpus, h.physical_cores, h.threads_per_core, h.numa_nodes
    ));
    s.push_str(&format!(
        "mode: {} (IRQ cpus {}, compute cpus {})\n",
        plan.mode.as_str(),
        format_cpu_list(&plan.irq_cpus),
        format_cpu_list(&plan.compute_cpus)
    ));
    s.push_str("\nSHARD  CPU  NUMA  NIC QUEUES\n");
    for sh in &plan.shards {
        let q: Vec<String> = sh.nic_queues.iter().map(|q| q.to_string()).collect();
        s.push_str(&format!(
            "{:<5}  {:<3}  {:<4}  {}\n",
            sh.id,
            sh.cpu,
            sh.numa_node,
            if q.is_empty() {
                "-".into()
            } else {
                q.join(",")
            }
        ));
    }
    if let Some(nic) = &plan.nic {
        s.push_str(&format!(
            "\nNIC {}: {} rx / {} tx queue(s), plan wants {} channel(s)\n",
            nic.name, nic.rx_queues, nic.tx_queues, nic.target_channels
        ));
        if !nic.irqs.is_empty() {
            s.push_str("IRQ    QUEUE  NOW          PLAN   NAME\n");
            for i in &nic.irqs {
                s.push_str(&format!(
                    "{:<5}  {:<5}  {:<11}  {:<5}  {}\n",
                    i.irq,
                    i.queue.map_or("-".into(), |q| q.to_string()),
                    i.current.as_deref().map_or("?".into(), format_cpu_list),
                    format_cpu_list(&i.cpus),
                    i.name
                ));
            }
        }
    }
    s.push_str("\ncommands to apply (as root):\n");
    for c in &plan.commands {
        s.push_str(&format!("  {c}\n"));
    }
    for n in &plan.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}

fn write_atomically(path: &PathBuf, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("tune: cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        format!(
            "tune: cannot rename {} to {}",
            tmp.display(),
            path.display()
        )
    })?;
    Ok(())
}

/// Read the host and make the plan for `cmd`.
pub fn plan_for(cmd: &TuneCmd) -> anyhow::Result<Plan> {
    let root = HostRoot {
        sys: cmd.sys_root.clone(),
        proc: cmd.proc_root.clone(),
    };
    let topo = read_topology(&root)?;
    let nic = match &cmd.nic {
        Some(name) => Some(read_nic(&root, name)?),
        None => None,
    };
    let mut plan = make_plan(&topo, cmd.shards, nic.as_ref())?;
    let run_line = plan_run_line(cmd);
    for c in &mut plan.commands {
        if let Some(rest) = c.strip_prefix(PLAN_RUN_PREFIX) {
            let rest = if cmd.out.is_some() {
                rest.replace("write this plan, then run", "run")
            } else {
                rest.to_string()
            };
            *c = format!("{run_line}{rest}");
        }
    }
    Ok(plan)
}

/// How the plan's last command starts (see `catchup_tuning::plan`): a plan written without
/// this command's options, which would be another plan.
const PLAN_RUN_PREFIX: &str = "catchup tune --out PLAN.toml && catchup --plan PLAN.toml <command>";

/// The command that writes the plan shown (with the options that made it) and runs with it;
/// with `--out`, only the run (the plan is being written there).
fn plan_run_line(cmd: &TuneCmd) -> String {
    match &cmd.out {
        Some(out) => format!("catchup --plan {} <command>", out.display()),
        None => {
            let mut opts = String::new();
            if let Some(n) = cmd.shards {
                opts.push_str(&format!(" --shards {n}"));
            }
            if let Some(nic) = &cmd.nic {
                opts.push_str(&format!(" --nic {nic}"));
            }
            format!("catchup tune{opts} --out PLAN.toml && catchup --plan PLAN.toml <command>")
        }
    }
}

fn render_check(parts: &[PartReport]) -> String {
    let mut s = String::from("PART          STATE   DETAIL\n");
    for p in parts {
        s.push_str(&format!(
            "{:<12}  {:<6}  {}\n",
            p.part,
            p.state.as_str(),
            p.detail
        ));
    }
    s
}

fn render_applied(actions: &[ActionResult]) -> String {
    let mut s = String::from("PART          OUTCOME  ACTION / DETAIL\n");
    for a in actions {
        let o = match a.outcome {
            Outcome::Applied => "applied",
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "skipped",
        };
        s.push_str(&format!(
            "{:<12}  {:<7}  {}: {}\n",
            a.part, o, a.action, a.detail
        ));
    }
    s
}

pub fn run(cmd: TuneCmd, global: &GlobalOpts) -> anyhow::Result<i32> {
    if cmd.shards == Some(0) {
        anyhow::bail!("tune: --shards 0: at least one shard is needed");
    }
    let root = HostRoot {
        sys: cmd.sys_root.clone(),
        proc: cmd.proc_root.clone(),
    };
    if cmd.apply || cmd.check {
        // The plan given with --plan, else one made for this host now.
        let plan = match crate::node::opts::load_plan(global)? {
            Some(p) => p,
            None => plan_for(&cmd)?,
        };
        let applied = if cmd.apply {
            Some(catchup_tuning::apply::apply(&plan, &root))
        } else {
            None
        };
        let parts = catchup_tuning::apply::check(&plan, &root);
        let failed = applied
            .as_ref()
            .is_some_and(|a| a.iter().any(|x| x.outcome == Outcome::Failed));
        let in_place = parts
            .iter()
            .all(|p| matches!(p.state, PartState::Ok | PartState::NotApplicable));
        if let Some(out) = &cmd.out {
            write_atomically(out, &plan.to_toml())?;
        }
        if cmd.json {
            let doc = serde_json::json!({
                "plan": plan,
                "applied": applied,
                "check": parts,
                "ok": if cmd.apply { !failed } else { in_place },
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            if let Some(a) = &applied {
                print!("{}", render_applied(a));
                println!();
            }
            print!("{}", render_check(&parts));
        }
        let ok = if cmd.apply { !failed } else { in_place };
        return Ok(if ok { 0 } else { 1 });
    }
    let plan = plan_for(&cmd)?;
    if let Some(out) = &cmd.out {
        let header =
            "# catchup tuning plan: `catchup --plan THIS_FILE <command>` pins shards as below.\n";
        write_atomically(out, &(header.to_string() + &plan.to_toml()))?;
    }
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", render_plan(&plan));
        if let Some(out) = &cmd.out {
            println!("plan written to {}", out.display());
        }
    }
    Ok(0)
}

#[cfg(test)]
mod plan_line_tests {
    use super::*;

    fn cmd(args: &[&str]) -> TuneCmd {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            t: TuneCmd,
        }
        <P as clap::Parser>::parse_from(std::iter::once("tune").chain(args.iter().copied())).t
    }

    #[test]
    fn the_plan_command_carries_the_options_that_made_the_plan() {
        assert_eq!(
            plan_run_line(&cmd(&["--shards", "3", "--nic", "eth1"])),
            "catchup tune --shards 3 --nic eth1 --out PLAN.toml && catchup --plan PLAN.toml <command>"
        );
        assert_eq!(
            plan_run_line(&cmd(&[])),
            "catchup tune --out PLAN.toml && catchup --plan PLAN.toml <command>"
        );
        assert_eq!(
            plan_run_line(&cmd(&["--out", "/etc/p.toml"])),
            "catchup --plan /etc/p.toml <command>"
        );
    }

    #[test]
    fn the_plan_shown_ends_with_the_command_that_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        catchup_tuning::fake::FakeHost {
            cores_per_node: 4,
            numa_nodes: 1,
            threads_per_core: 1,
            nic: Some(("ens9".into(), 2, 300)),
        }
        .write(dir.path())
        .unwrap();
        let (sys, proc) = (dir.path().join("sys"), dir.path().join("proc"));
        let args = [
            "--nic",
            "ens9",
            "--shards",
            "2",
            "--sys-root",
            sys.to_str().unwrap(),
            "--proc-root",
            proc.to_str().unwrap(),
        ];
        let plan = plan_for(&cmd(&args)).unwrap();
        let last = plan.commands.last().unwrap();
        assert!(
            last.starts_with(
                "catchup tune --shards 2 --nic ens9 --out PLAN.toml && catchup --plan PLAN.toml <command>  # write this plan, then run"
            ),
            "{last}"
        );
    }
}

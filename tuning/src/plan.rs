//! From a [`Topology`] (and optionally a [`Nic`]) to a [`Plan`]: which CPU each shard runs
//! on, which NIC queues it owns, which CPUs take the NIC's IRQs, and the commands that
//! apply it.
//!
//! The IRQ model follows Seastar's perftune:
//! * `mq` (at most [`MQ_MAX_PHYSICAL_CORES`] physical cores): IRQs share the shards'
//!   cores; each queue's IRQ goes to the core of the shard that owns the queue.
//! * `sq` (up to [`SQ_MAX_PHYSICAL_CORES`]): one physical core (with its SMT siblings) is
//!   reserved for all NIC IRQs; shards run on the rest.
//! * `sq_split` (larger hosts): one physical core (with siblings) per NUMA node is
//!   reserved for IRQs; each queue's IRQ goes to an IRQ CPU of the NIC's NUMA node.
//!
//! Shards get one physical core each (first sibling), NUMA node by NUMA node; only when
//! there are more shards than compute cores do they use the second SMT threads, and after
//! that they share CPUs. Queue `q` is owned by shard `q % shards`.

use serde::{Deserialize, Serialize};

use crate::topology::{format_cpu_list, IrqRole, Nic, Topology, MAX_CPUS};
use crate::TuningError;

/// Hosts with at most this many physical cores use `mq`.
pub const MQ_MAX_PHYSICAL_CORES: usize = 4;
/// Hosts with at most this many physical cores (and more than the `mq` bound) use `sq`.
pub const SQ_MAX_PHYSICAL_CORES: usize = 16;
/// Upper bound on shards in a plan.
pub const MAX_PLAN_SHARDS: usize = 1024;

/// How NIC IRQs are placed relative to the shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IrqMode {
    Mq,
    Sq,
    SqSplit,
}

impl IrqMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IrqMode::Mq => "mq",
            IrqMode::Sq => "sq",
            IrqMode::SqSplit => "sq_split",
        }
    }
}

/// Shape of the host the plan was made for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSummary {
    pub cpus: usize,
    pub physical_cores: usize,
    pub threads_per_core: usize,
    pub numa_nodes: usize,
}

/// One shard's placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub id: usize,
    pub cpu: usize,
    pub numa_node: usize,
    /// NIC queues (rx/tx pair index) this shard owns, e.g. for its AF_XDP sockets.
    pub nic_queues: Vec<usize>,
}

/// Where one IRQ should point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqPlan {
    pub irq: u32,
    pub name: String,
    pub queue: Option<usize>,
    pub cpus: Vec<usize>,
    /// Affinity when the plan was made (informational).
    #[serde(default)]
    pub current: Option<Vec<usize>>,
}

/// The NIC part of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicPlan {
    pub name: String,
    pub rx_queues: usize,
    pub tx_queues: usize,
    /// Channel count the plan wants (one queue per shard).
    pub target_channels: usize,
    /// Queues whose RPS/XPS should be off because a shard owns them.
    pub xdp_queues: Vec<usize>,
    pub irqs: Vec<IrqPlan>,
}

/// A tuning plan; `catchup tune --out FILE` writes it as TOML and `--plan FILE` reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub mode: IrqMode,
    pub irq_cpus: Vec<usize>,
    pub compute_cpus: Vec<usize>,
    /// Shell commands an operator runs (as root) to apply the plan.
    pub commands: Vec<String>,
    pub notes: Vec<String>,
    pub host: HostSummary,
    pub shards: Vec<ShardPlan>,
    #[serde(default)]
    pub nic: Option<NicPlan>,
}

pub const PLAN_VERSION: u32 = 1;

impl Plan {
    /// The CPU of each shard, in shard order (what the shard runtime pins to).
    pub fn cores(&self) -> Vec<usize> {
        self.shards.iter().map(|s| s.cpu).collect()
    }

    /// NIC queues owned by `shard`.
    pub fn queues_of(&self, shard: usize) -> &[usize] {
        self.shards
            .get(shard)
            .map(|s| s.nic_queues.as_slice())
            .unwrap_or(&[])
    }

    /// Parse and validate a plan from TOML.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, TuningError> {
        let plan: Plan = toml::from_str(text).map_err(|e| TuningError::BadPlan {
            origin: origin.to_string(),
            // One line: the message and where (toml's Display draws a multi-line excerpt).
            problem: match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("{} (line {line})", e.message().trim())
                }
                None => e.message().trim().to_string(),
            },
        })?;
        plan.validate(origin)?;
        Ok(plan)
    }

    /// Read a plan file.
    pub fn load(path: &std::path::Path) -> Result<Self, TuningError> {
        let meta = std::fs::metadata(path).map_err(|source| TuningError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.len() > 4 << 20 {
            return Err(TuningError::BadPlan {
                origin: path.display().to_string(),
                problem: format!("{} bytes is too large for a plan", meta.len()),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| TuningError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a plan always serialises to TOML")
    }

    /// Check the invariants a plan must hold.
    pub fn validate(&self, origin: &str) -> Result<(), TuningError> {
        let bad = |problem: String| TuningError::BadPlan {
            origin: origin.to_string(),
            problem,
        };
        if self.version != PLAN_VERSION {
            return Err(bad(format!(
                "version {} (this build reads version {PLAN_VERSION})",
                self.version
            )));
        }
        if self.shards.is_empty() || self.shards.len() > MAX_PLAN_SHARDS {
            return Err(bad(format!(
                "{} shards (must be 1..={MAX_PLAN_SHARDS})",
                self.shards.len()
            )));
        }
        for (i, s) in self.shards.iter().enumerate() {
            if s.id != i {
                return Err(bad(format!("shard at position {i} has id {}", s.id)));
            }
            if s.cpu >= MAX_CPUS {
                return Err(bad(format!("shard {i} on cpu {}", s.cpu)));
            }
        }
        if let Some(nic) = &self.nic {
            for s in &self.shards {
                if let Some(q) = s
                    .nic_queues
                    .iter()
                    .find(|q| **q >= nic.target_channels.max(1))
                {
                    return Err(bad(format!(
                        "shard {} owns queue {q} of {} channels",
                        s.id, nic.target_channels
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Make a plan for `shards` shards (default: one per compute physical core) on `topo`,
/// with `nic`'s queues dealt to the shards when given.
pub fn make_plan(
    topo: &Topology,
    shards: Option<usize>,
    nic: Option<&Nic>,
) -> Result<Plan, TuningError> {
    let cores = topo.physical_cores();
    let physical = cores.len();
    if physical == 0 {
        return Err(TuningError::NoCpus);
    }
    let mode = if physical <= MQ_MAX_PHYSICAL_CORES {
        IrqMode::Mq
    } else if physical <= SQ_MAX_PHYSICAL_CORES || topo.numa_nodes.len() <= 1 {
        IrqMode::Sq
    } else {
        IrqMode::SqSplit
    };
    let node_of = |cpu: usize| topo.cpu(cpu).map_or(0, |c| c.numa_node);
    // IRQ cores: whole physical cores (all siblings).
    let mut irq_groups: Vec<Vec<usize>> = Vec::new();
    match mode {
        IrqMode::Mq => {}
        IrqMode::Sq => irq_groups.push(cores[0].clone()),
        IrqMode::SqSplit => {
            for node in topo.numa_nodes.keys() {
                if let Some(g) = cores.iter().find(|g| node_of(g[0]) == *node) {
                    irq_groups.push(g.clone());
                }
            }
        }
    }
    let compute_groups: Vec<Vec<usize>> = cores
        .iter()
        .filter(|g| !irq_groups.contains(g))
        .cloned()
        .collect();
    let mut irq_cpus: Vec<usize> = irq_groups.concat();
    irq_cpus.sort_unstable();
    let mut compute_cpus: Vec<usize> = compute_groups.concat();
    compute_cpus.sort_unstable();
    if mode == IrqMode::Mq {
        irq_cpus = compute_cpus.clone();
    }

    // Shard CPU order: first thread of every compute core (node by node), then second
    // threads, and so on.
    let mut ordered_groups = compute_groups.clone();
    ordered_groups.sort_by_key(|g| (node_of(g[0]), g[0]));
    let max_threads = ordered_groups.iter().map(Vec::len).max().unwrap_or(1);
    let mut order: Vec<usize> = Vec::new();
    for t in 0..max_threads {
        for g in &ordered_groups {
            if let Some(&c) = g.get(t) {
                order.push(c);
            }
        }
    }
    let n = shards.unwrap_or(ordered_groups.len());
    if n == 0 || n > MAX_PLAN_SHARDS {
        return Err(TuningError::BadShardCount { shards: n });
    }
    let mut notes = Vec::new();
    if n > ordered_groups.len() && n <= order.len() {
        notes.push(format!(
            "{n} shards on {} compute cores: some shards use SMT sibling threads",
            ordered_groups.len()
        ));
    } else if n > order.len() {
        notes.push(format!(
            "{n} shards on {} compute CPUs: shards share CPUs",
            order.len()
        ));
    }

    let mut shard_plans: Vec<ShardPlan> = (0..n)
        .map(|i| {
            let cpu = order[i % order.len()];
            ShardPlan {
                id: i,
                cpu,
                numa_node: node_of(cpu),
                nic_queues: Vec::new(),
            }
        })
        .collect();

    let mut commands = Vec::new();
    let nic_plan = nic.map(|nic| {
        let current = nic.rx_queues.len().max(nic.tx_queues.len()).max(1);
        let target = n;
        for q in 0..target {
            shard_plans[q % n].nic_queues.push(q);
        }
        let local_irq_cpus: Vec<usize> = {
            let local: Vec<usize> = irq_cpus
                .iter()
                .copied()
                .filter(|c| nic.numa_node.is_none_or(|node| node_of(*c) == node))
                .collect();
            if local.is_empty() {
                irq_cpus.clone()
            } else {
                local
            }
        };
        let mut irqs = Vec::new();
        for irq in &nic.irqs {
            let (IrqRole::Rx | IrqRole::Tx | IrqRole::RxTx, Some(q)) = (irq.role, irq.queue) else {
                continue;
            };
            let cpus = match mode {
                IrqMode::Mq => vec![shard_plans[q % n].cpu],
                IrqMode::Sq | IrqMode::SqSplit => {
                    vec![local_irq_cpus[q % local_irq_cpus.len()]]
                }
            };
            irqs.push(IrqPlan {
                irq: irq.irq,
                name: irq.name.clone(),
                queue: Some(q),
                cpus,
                current: irq.affinity.clone(),
            });
        }
        NicPlan {
            name: nic.name.clone(),
            rx_queues: nic.rx_queues.len(),
            tx_queues: nic.tx_queues.len(),
            target_channels: target,
            xdp_queues: (0..target).collect(),
            irqs,
        }
        .with_current(current)
    });

    if let Some((nic, current)) = &nic_plan {
        commands.push("systemctl stop irqbalance  # it would move the IRQs back".to_string());
        if *current != nic.target_channels {
            commands.push(format!(
                "ethtool -L {0} combined {1}  # or, for drivers with separate rx/tx channels: ethtool -L {0} rx {1} tx {1}",
                nic.name, nic.target_channels
            ));
            notes.push(format!(
                "{} has {current} queue(s); the plan wants {} (one per shard); the IRQ affinity commands are for the queues that exist now: re-run `catchup tune` after changing channels",
                nic.name, nic.target_channels
            ));
        }
        for irq in &nic.irqs {
            commands.push(format!(
                "echo {} > /proc/irq/{}/smp_affinity_list  # {}",
                format_cpu_list(&irq.cpus),
                irq.irq,
                irq.name
            ));
        }
        for q in &nic.xdp_queues {
            commands.push(format!(
                "echo 0 > /sys/class/net/{}/queues/rx-{q}/rps_cpus",
                nic.name
            ));
            commands.push(format!(
                "echo 0 > /sys/class/net/{}/queues/tx-{q}/xps_cpus",
                nic.name
            ));
        }
        if nic.irqs.is_empty() {
            notes.push(format!(
                "no per-queue IRQs found for {} (virtual or software device): IRQ affinity does not apply",
                nic.name
            ));
        }
    }
    commands.push(format!(
        "catchup tune --out PLAN.toml && catchup --plan PLAN.toml <command>  # write this plan, then run with shards pinned to cpus {}",
        shard_plans
            .iter()
            .map(|s| s.cpu.to_string())
            .collect::<Vec<_>>()
            .join(",")
    ));

    let plan = Plan {
        version: PLAN_VERSION,
        mode,
        irq_cpus,
        compute_cpus,
        commands,
        notes,
        host: HostSummary {
            cpus: topo.cpus.len(),
            physical_cores: physical,
            threads_per_core: topo.threads_per_core(),
            numa_nodes: topo.numa_nodes.len(),
        },
        shards: shard_plans,
        nic: nic_plan.map(|(n, _)| n),
    };
    plan.validate("generated plan")?;
    Ok(plan)
}

impl NicPlan {
    fn with_current(self, current: usize) -> (NicPlan, usize) {
        (self, current)
    }
}

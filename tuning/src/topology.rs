//! Reading the host: CPUs, SMT siblings, NUMA nodes, a NIC's queues and their IRQs.
//!
//! Every reader takes a [`HostRoot`] (the `/sys` and `/proc` directories to read), so tests
//! run on a fake tree in a temporary directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::TuningError;

/// Where to read the host from.
#[derive(Clone, Debug)]
pub struct HostRoot {
    pub sys: PathBuf,
    pub proc: PathBuf,
}

impl Default for HostRoot {
    fn default() -> Self {
        Self {
            sys: "/sys".into(),
            proc: "/proc".into(),
        }
    }
}

/// Largest CPU id / list length accepted from a cpulist (bounds parsing of odd input).
pub const MAX_CPUS: usize = 8192;

/// Parse a kernel cpulist (`0-3,8,10-11`) into sorted, deduplicated ids.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let lo: usize = lo.parse().map_err(|_| format!("bad cpu number {lo:?}"))?;
        let hi: usize = hi.parse().map_err(|_| format!("bad cpu number {hi:?}"))?;
        if lo > hi || hi >= MAX_CPUS {
            return Err(format!("bad cpu range {part:?}"));
        }
        out.extend(lo..=hi);
        if out.len() > MAX_CPUS {
            return Err("cpu list too long".into());
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Format ids as a kernel cpulist (`0-3,8`).
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

fn read_trim(path: &Path) -> Result<String, TuningError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| TuningError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn read_cpus(path: &Path) -> Result<Vec<usize>, TuningError> {
    parse_cpu_list(&read_trim(path)?).map_err(|problem| TuningError::Parse {
        path: path.to_path_buf(),
        problem,
    })
}

/// One logical CPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    pub id: usize,
    /// Physical package (socket).
    pub package: usize,
    /// Core id within the package.
    pub core: usize,
    /// NUMA node (0 when the host has no NUMA information).
    pub numa_node: usize,
    /// All logical CPUs on the same physical core, including this one.
    pub siblings: Vec<usize>,
}

/// The CPUs of the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Online CPUs, sorted by id.
    pub cpus: Vec<Cpu>,
    /// NUMA node -> its online CPUs.
    pub numa_nodes: BTreeMap<usize, Vec<usize>>,
}

impl Topology {
    /// Physical cores as sorted sibling groups (each listed once, by lowest CPU id).
    pub fn physical_cores(&self) -> Vec<Vec<usize>> {
        let online: std::collections::BTreeSet<usize> = self.cpus.iter().map(|c| c.id).collect();
        let mut groups: std::collections::BTreeSet<Vec<usize>> = Default::default();
        for c in &self.cpus {
            let mut g: Vec<usize> = c
                .siblings
                .iter()
                .copied()
                .filter(|s| online.contains(s))
                .collect();
            if g.is_empty() {
                g.push(c.id);
            }
            g.sort_unstable();
            g.dedup();
            groups.insert(g);
        }
        groups.into_iter().collect()
    }

    /// The CPU with this id (`cpus` is sorted by id when read from the host).
    pub fn cpu(&self, id: usize) -> Option<&Cpu> {
        match self.cpus.binary_search_by_key(&id, |c| c.id) {
            Ok(i) => Some(&self.cpus[i]),
            Err(_) => self.cpus.iter().find(|c| c.id == id),
        }
    }

    /// Logical CPUs per physical core (1 without SMT).
    pub fn threads_per_core(&self) -> usize {
        self.physical_cores()
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(1)
    }
}

/// Read online CPUs, their siblings and NUMA nodes.
pub fn read_topology(root: &HostRoot) -> Result<Topology, TuningError> {
    let cpu_dir = root.sys.join("devices/system/cpu");
    let online = read_cpus(&cpu_dir.join("online"))?;
    if online.is_empty() {
        return Err(TuningError::Parse {
            path: cpu_dir.join("online"),
            problem: "no online CPUs".into(),
        });
    }
    let node_dir = root.sys.join("devices/system/node");
    let mut numa_nodes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(&node_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(n) = name
                .strip_prefix("node")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let cpus = read_cpus(&e.path().join("cpulist"))?;
            numa_nodes.insert(n, cpus.into_iter().filter(|c| online.contains(c)).collect());
        }
    }
    if numa_nodes.is_empty() {
        numa_nodes.insert(0, online.clone());
    }
    let mut cpus = Vec::with_capacity(online.len());
    for &id in &online {
        let topo = cpu_dir.join(format!("cpu{id}/topology"));
        let num = |file: &str| -> Result<usize, TuningError> {
            let p = topo.join(file);
            match std::fs::read_to_string(&p) {
                // A missing file (odd kernels, containers) means "one of everything".
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                Err(source) => Err(TuningError::Read { path: p, source }),
                Ok(s) => {
                    let t = s.trim();
                    // physical_package_id may be -1 on some virtual machines.
                    if t == "-1" {
                        return Ok(0);
                    }
                    t.parse().map_err(|_| TuningError::Parse {
                        path: p,
                        problem: format!("not a number: {t:?}"),
                    })
                }
            }
        };
        let siblings_path = topo.join("thread_siblings_list");
        let siblings = if siblings_path.exists() {
            read_cpus(&siblings_path)?
        } else {
            vec![id]
        };
        let numa_node = numa_nodes
            .iter()
            .find(|(_, cs)| cs.contains(&id))
            .map(|(n, _)| *n)
            .unwrap_or(0);
        cpus.push(Cpu {
            id,
            package: num("physical_package_id")?,
            core: num("core_id")?,
            numa_node,
            siblings,
        });
    }
    Ok(Topology { cpus, numa_nodes })
}

/// Which direction an IRQ serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IrqRole {
    Rx,
    Tx,
    RxTx,
    Other,
}

/// One IRQ of a NIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicIrq {
    pub irq: u32,
    /// The name in /proc/interrupts.
    pub name: String,
    /// Queue index parsed from the name, when it has one.
    pub queue: Option<usize>,
    pub role: IrqRole,
    /// Current `smp_affinity_list`, when readable.
    pub affinity: Option<Vec<usize>>,
}

/// A network interface's queues and IRQs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub rx_queues: Vec<usize>,
    pub tx_queues: Vec<usize>,
    pub numa_node: Option<usize>,
    pub irqs: Vec<NicIrq>,
}

fn queue_indices(dir: &Path, prefix: &str) -> Result<Vec<usize>, TuningError> {
    let mut v = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|source| TuningError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|n| n.parse::<usize>().ok())
        {
            v.push(n);
        }
    }
    v.sort_unstable();
    Ok(v)
}

/// Parse /proc/interrupts into (irq number, name = last column).
pub fn parse_interrupts(text: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1).take(100_000) {
        let line = line.trim_start();
        let Some((num, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(irq) = num.trim().parse::<u32>() else {
            continue;
        };
        if let Some(name) = rest.split_whitespace().last() {
            out.push((irq, name.to_string()));
        }
    }
    out
}

/// Classify an IRQ name and find its queue number: `eth0-TxRx-3` → (RxTx, 3),
/// `virtio2-input.0` → (Rx, 0), `mlx5_comp5@pci:0000:3b:00.0` → (RxTx, 5),
/// `virtio2-config` → (Other, none).
pub fn classify_irq_name(name: &str) -> (IrqRole, Option<usize>) {
    let base = name.split('@').next().unwrap_or(name);
    let lower = base.to_ascii_lowercase();
    let digits: String = base
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let queue = if digits.is_empty() || digits.len() > 6 {
        None
    } else {
        digits.parse().ok()
    };
    let has = |s: &str| lower.contains(s);
    let role = if has("txrx") || has("comp") || has("combined") {
        IrqRole::RxTx
    } else if has("rx") || has("input") {
        IrqRole::Rx
    } else if has("tx") || has("output") {
        IrqRole::Tx
    } else {
        IrqRole::Other
    };
    match (role, queue) {
        (IrqRole::Other, _) | (_, None) => (IrqRole::Other, queue),
        (r, q) => (r, q),
    }
}

/// Read a NIC's queues (`/sys/class/net/IFACE/queues`) and its IRQs: the device's
/// `msi_irqs` (or, for virtio, the parent PCI device's, filtered by the `virtioN-` prefix),
/// plus any /proc/interrupts line naming the interface.
pub fn read_nic(root: &HostRoot, iface: &str) -> Result<Nic, TuningError> {
    if iface.is_empty() || iface.contains('/') || iface.contains("..") || iface.len() > 64 {
        return Err(TuningError::BadInterface {
            name: iface.to_string(),
        });
    }
    let net = root.sys.join("class/net").join(iface);
    if !net.exists() {
        return Err(TuningError::NoSuchInterface {
            name: iface.to_string(),
            path: net,
        });
    }
    let queues = net.join("queues");
    let rx_queues = queue_indices(&queues, "rx-")?;
    let tx_queues = queue_indices(&queues, "tx-")?;
    let device = net.join("device");
    let numa_node = std::fs::read_to_string(device.join("numa_node"))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|n| usize::try_from(n).ok());

    // Candidate IRQ numbers from msi_irqs, and a name prefix for virtio devices.
    let mut msi: Vec<u32> = Vec::new();
    let mut virtio_prefix = None;
    let dev_name = std::fs::canonicalize(&device)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()));
    let mut msi_dirs = vec![device.join("msi_irqs")];
    if let Some(d) = dev_name.as_deref().filter(|d| d.starts_with("virtio")) {
        virtio_prefix = Some(format!("{d}-"));
        msi_dirs.push(device.join("../msi_irqs"));
    }
    for dir in msi_dirs {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if let Ok(n) = e.file_name().to_string_lossy().parse::<u32>() {
                    msi.push(n);
                }
            }
        }
    }
    let interrupts_path = root.proc.join("interrupts");
    let interrupts = std::fs::read_to_string(&interrupts_path)
        .map(|t| parse_interrupts(&t))
        .unwrap_or_default();
    let mut irqs = Vec::new();
    for (irq, name) in interrupts {
        let named_after_iface = name.starts_with(&format!("{iface}-"))
            || name == iface
            || name.contains(&format!("@{iface}"));
        let from_msi =
            msi.contains(&irq) && virtio_prefix.as_deref().is_none_or(|p| name.starts_with(p));
        if !(named_after_iface || from_msi) {
            continue;
        }
        let (role, queue) = classify_irq_name(&name);
        let aff_path = root.proc.join(format!("irq/{irq}/smp_affinity_list"));
        let affinity = std::fs::read_to_string(&aff_path)
            .ok()
            .and_then(|s| parse_cpu_list(&s).ok());
        irqs.push(NicIrq {
            irq,
            name,
            queue,
            role,
            affinity,
        });
    }
    Ok(Nic {
        name: iface.to_string(),
        rx_queues,
        tx_queues,
        numa_node,
        irqs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpu_list("").unwrap(), Vec::<usize>::new());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("0-99999999").is_err());
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    }

    #[test]
    fn irq_names() {
        assert_eq!(classify_irq_name("eth0-TxRx-3"), (IrqRole::RxTx, Some(3)));
        assert_eq!(classify_irq_name("virtio2-input.0"), (IrqRole::Rx, Some(0)));
        assert_eq!(
            classify_irq_name("virtio2-output.1"),
            (IrqRole::Tx, Some(1))
        );
        assert_eq!(
            classify_irq_name("mlx5_comp5@pci:0000:3b:00.0"),
            (IrqRole::RxTx, Some(5))
        );
        assert_eq!(classify_irq_name("virtio2-config"), (IrqRole::Other, None));
        assert_eq!(classify_irq_name("ens1f0-rx-2"), (IrqRole::Rx, Some(2)));
    }

    #[test]
    fn interrupts_parse() {
        let t = "           CPU0       CPU1\n 38:  0  5190 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\nNMI:  0 0 Non-maskable interrupts\n";
        assert_eq!(
            parse_interrupts(t),
            vec![(38, "virtio2-input.0".to_string())]
        );
    }

    proptest! {
        #[test]
        fn cpu_list_round_trips(mut v in proptest::collection::vec(0usize..512, 0..64)) {
            v.sort_unstable();
            v.dedup();
            prop_assert_eq!(parse_cpu_list(&format_cpu_list(&v)).unwrap(), v);
        }

        #[test]
        fn cpu_list_never_panics(s in ".{0,64}") {
            let _ = parse_cpu_list(&s);
            let _ = parse_interrupts(&s);
            let _ = classify_irq_name(&s);
        }
    }
}

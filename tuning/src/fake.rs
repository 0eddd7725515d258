//! A fake `/sys` + `/proc` tree for tests: CPUs with SMT siblings, NUMA nodes, and
//! optionally a NIC with per-queue MSI-X IRQs.

use std::path::Path;

/// Shape of a fake host.
#[derive(Clone, Debug)]
pub struct FakeHost {
    /// Physical cores per NUMA node.
    pub cores_per_node: usize,
    pub numa_nodes: usize,
    /// SMT threads per physical core (1 or 2).
    pub threads_per_core: usize,
    /// NIC name, queue count and first IRQ number.
    pub nic: Option<(String, usize, u32)>,
}

impl FakeHost {
    /// Logical CPU ids are numbered Linux-style: first threads of all cores, then second
    /// threads (cpu `c` and `c + cores` are siblings).
    pub fn cpus(&self) -> usize {
        self.cores_per_node * self.numa_nodes * self.threads_per_core
    }

    /// Write the tree under `root` (`root/sys`, `root/proc`).
    pub fn write(&self, root: &Path) -> std::io::Result<()> {
        let sys = root.join("sys");
        let proc_ = root.join("proc");
        let cpu_dir = sys.join("devices/system/cpu");
        std::fs::create_dir_all(&cpu_dir)?;
        let cores = self.cores_per_node * self.numa_nodes;
        let cpus = self.cpus();
        std::fs::write(cpu_dir.join("online"), format!("0-{}\n", cpus - 1))?;
        let mut node_cpus: Vec<Vec<usize>> = vec![Vec::new(); self.numa_nodes];
        for cpu in 0..cpus {
            let core = cpu % cores;
            let node = core / self.cores_per_node;
            node_cpus[node].push(cpu);
            let siblings: Vec<String> = (0..self.threads_per_core)
                .map(|t| (core + t * cores).to_string())
                .collect();
            let t = cpu_dir.join(format!("cpu{cpu}/topology"));
            std::fs::create_dir_all(&t)?;
            std::fs::write(t.join("thread_siblings_list"), siblings.join(",") + "\n")?;
            std::fs::write(
                t.join("core_id"),
                format!("{}\n", core % self.cores_per_node),
            )?;
            std::fs::write(t.join("physical_package_id"), format!("{node}\n"))?;
        }
        for (node, list) in node_cpus.iter().enumerate() {
            let d = sys.join(format!("devices/system/node/node{node}"));
            std::fs::create_dir_all(&d)?;
            let l: Vec<String> = list.iter().map(|c| c.to_string()).collect();
            std::fs::write(d.join("cpulist"), l.join(",") + "\n")?;
        }
        let mut interrupts = String::from("           CPU0\n");
        if let Some((name, queues, first_irq)) = &self.nic {
            let net = sys.join("class/net").join(name);
            let pci = sys.join("devices/pci0000:00/0000:3b:00.0");
            std::fs::create_dir_all(pci.join("msi_irqs"))?;
            std::fs::write(pci.join("numa_node"), "0\n")?;
            std::fs::create_dir_all(&net)?;
            std::os::unix::fs::symlink(&pci, net.join("device"))?;
            for q in 0..*queues {
                std::fs::create_dir_all(net.join(format!("queues/rx-{q}")))?;
                std::fs::create_dir_all(net.join(format!("queues/tx-{q}")))?;
                let irq = first_irq + q as u32;
                std::fs::write(pci.join(format!("msi_irqs/{irq}")), "msix\n")?;
                interrupts.push_str(&format!(
                    " {irq}:   0   IR-PCI-MSI-edge      {name}-TxRx-{q}\n"
                ));
                let d = proc_.join(format!("irq/{irq}"));
                std::fs::create_dir_all(&d)?;
                std::fs::write(d.join("smp_affinity_list"), format!("0-{}\n", cpus - 1))?;
            }
        }
        std::fs::create_dir_all(&proc_)?;
        std::fs::write(proc_.join("interrupts"), interrupts)?;
        Ok(())
    }
}

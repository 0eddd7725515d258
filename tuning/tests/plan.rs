//! Plans for fake hosts (2-core, 16-core with one NIC, 64-CPU two-NUMA), the example
//! profiles, and reading the real host.

use catchup_tuning::fake::FakeHost;
use catchup_tuning::{make_plan, read_nic, read_topology, HostRoot, IrqMode, Plan};

fn host(h: &FakeHost) -> (tempfile::TempDir, HostRoot) {
    let dir = tempfile::tempdir().unwrap();
    h.write(dir.path()).unwrap();
    let root = HostRoot {
        sys: dir.path().join("sys"),
        proc: dir.path().join("proc"),
    };
    (dir, root)
}

fn plan_for(h: &FakeHost, shards: Option<usize>) -> Plan {
    let (_d, root) = host(h);
    let topo = read_topology(&root).unwrap();
    let nic = h
        .nic
        .as_ref()
        .map(|(name, _, _)| read_nic(&root, name).unwrap());
    make_plan(&topo, shards, nic.as_ref()).unwrap()
}

fn two_core() -> FakeHost {
    FakeHost {
        cores_per_node: 2,
        numa_nodes: 1,
        threads_per_core: 1,
        nic: Some(("eth0".into(), 2, 40)),
    }
}

fn sixteen_core() -> FakeHost {
    FakeHost {
        cores_per_node: 16,
        numa_nodes: 1,
        threads_per_core: 2,
        nic: Some(("ens1f0".into(), 16, 100)),
    }
}

fn sixty_four_cpu_two_numa() -> FakeHost {
    FakeHost {
        cores_per_node: 16,
        numa_nodes: 2,
        threads_per_core: 2,
        nic: Some(("ens2f0".into(), 8, 200)),
    }
}

#[test]
fn small_host_shares_irq_cores_mq() {
    let p = plan_for(&two_core(), None);
    assert_eq!(p.mode, IrqMode::Mq);
    assert_eq!(p.cores(), vec![0, 1]);
    assert_eq!(p.irq_cpus, vec![0, 1]);
    let nic = p.nic.as_ref().unwrap();
    assert_eq!(nic.irqs.len(), 2);
    // Queue q's IRQ goes to the core of the shard that owns q.
    for irq in &nic.irqs {
        let q = irq.queue.unwrap();
        assert_eq!(irq.cpus, vec![p.shards[q % 2].cpu]);
    }
    assert!(p
        .commands
        .iter()
        .any(|c| c == "echo 0 > /proc/irq/40/smp_affinity_list  # eth0-TxRx-0"));
    assert!(p
        .commands
        .iter()
        .any(|c| c == "echo 0 > /sys/class/net/eth0/queues/rx-1/rps_cpus"));
    assert!(
        !p.commands.iter().any(|c| c.starts_with("ethtool -L")),
        "2 queues, 2 shards"
    );
}

#[test]
fn sixteen_cores_reserve_one_core_and_sibling_for_irqs() {
    let p = plan_for(&sixteen_core(), None);
    assert_eq!(p.mode, IrqMode::Sq);
    assert_eq!(p.irq_cpus, vec![0, 16]);
    assert_eq!(p.shards.len(), 15, "one shard per remaining physical core");
    assert_eq!(
        p.cores(),
        (1..16).collect::<Vec<_>>(),
        "first SMT threads only"
    );
    assert!(p.cores().iter().all(|c| !p.irq_cpus.contains(c)));
    let nic = p.nic.as_ref().unwrap();
    assert!(nic
        .irqs
        .iter()
        .all(|i| i.cpus.len() == 1 && p.irq_cpus.contains(&i.cpus[0])));
    assert_eq!(nic.target_channels, 15);
    assert!(p
        .commands
        .iter()
        .any(|c| c.starts_with("ethtool -L ens1f0 combined 15")));
    // Every queue has exactly one owner.
    let mut owned: Vec<usize> = p.shards.iter().flat_map(|s| s.nic_queues.clone()).collect();
    owned.sort_unstable();
    assert_eq!(owned, (0..15).collect::<Vec<_>>());
}

#[test]
fn two_numa_nodes_reserve_a_core_per_node() {
    let p = plan_for(&sixty_four_cpu_two_numa(), None);
    assert_eq!(p.host.cpus, 64);
    assert_eq!(p.host.numa_nodes, 2);
    assert_eq!(p.mode, IrqMode::SqSplit);
    assert_eq!(p.irq_cpus, vec![0, 16, 32, 48]);
    assert_eq!(p.shards.len(), 30);
    // Shards fill node 0 first, then node 1.
    assert_eq!(p.shards[0].numa_node, 0);
    assert_eq!(p.shards[29].numa_node, 1);
    // The NIC sits on node 0: its IRQs go to node 0's IRQ CPUs.
    let nic = p.nic.as_ref().unwrap();
    assert!(
        nic.irqs.iter().all(|i| [0, 32].contains(&i.cpus[0])),
        "{:?}",
        nic.irqs
    );
}

#[test]
fn more_shards_than_cores_use_siblings_then_share() {
    let h = FakeHost {
        nic: None,
        ..sixteen_core()
    };
    let p = plan_for(&h, Some(20));
    assert_eq!(
        &p.cores()[..16],
        &(1..16).chain(17..18).collect::<Vec<_>>()[..]
    );
    assert!(p.notes.iter().any(|n| n.contains("SMT")));
    let p = plan_for(&h, Some(40));
    assert!(p.notes.iter().any(|n| n.contains("share")));
    let (_d, root) = host(&h);
    let topo = read_topology(&root).unwrap();
    assert!(make_plan(&topo, Some(0), None).is_err());
}

#[test]
fn plans_round_trip_through_toml_and_bad_plans_are_rejected() {
    for h in [two_core(), sixteen_core(), sixty_four_cpu_two_numa()] {
        let p = plan_for(&h, None);
        let text = p.to_toml();
        assert_eq!(Plan::from_toml(&text, "test").unwrap(), p);
    }
    let good = plan_for(&two_core(), None).to_toml();
    let bad_version = good.replacen("version = 1", "version = 7", 1);
    assert!(Plan::from_toml(&bad_version, "t")
        .unwrap_err()
        .to_string()
        .contains("version 7"));
    assert!(Plan::from_toml("not toml [", "t").is_err());
    assert!(Plan::from_toml("", "t").is_err());
}

fn profiles_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles")
}

/// The example profiles are exactly what the planner makes for the matching fake hosts.
/// Set CATCHUP_WRITE_PROFILES=1 to regenerate them.
#[test]
fn example_profiles_parse_and_match_the_planner() {
    let cases = [
        ("2-core.toml", two_core()),
        ("16-core-1-nic.toml", sixteen_core()),
        ("64-core-2-numa.toml", sixty_four_cpu_two_numa()),
    ];
    for (file, h) in cases {
        let path = profiles_dir().join(file);
        let generated = plan_for(&h, None);
        if std::env::var("CATCHUP_WRITE_PROFILES").is_ok() {
            let header = format!(
                "# Example plan: `catchup tune` on a host with {} CPUs ({} per core, {} NUMA node(s)).\n",
                generated.host.cpus, generated.host.threads_per_core, generated.host.numa_nodes
            );
            std::fs::write(&path, header + &generated.to_toml()).unwrap();
        }
        let loaded = Plan::load(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(loaded, generated, "{file} is out of date");
    }
}

#[test]
fn reads_this_host() {
    let topo = read_topology(&HostRoot::default()).unwrap();
    assert!(!topo.cpus.is_empty());
    let p = make_plan(&topo, None, None).unwrap();
    assert!(!p.shards.is_empty());
    let missing = read_nic(&HostRoot::default(), "no-such-nic0").unwrap_err();
    assert!(missing.to_string().contains("no-such-nic0"));
    assert!(read_nic(&HostRoot::default(), "../etc").is_err());
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Random text never panics the plan reader.
        #[test]
        fn random_text_is_rejected_not_panicking(text in "(?s).{0,300}") {
            let _ = Plan::from_toml(&text, "fuzz");
        }

        /// Junk in the host's files gives errors or odd plans, never a panic.
        #[test]
        fn junk_host_files_never_panic(
            online in "[0-9,\\- x]{0,12}",
            siblings in "[0-9,\\- x]{0,12}",
            core_id in "[-0-9x]{0,4}",
            node_list in "[0-9,\\- ]{0,12}",
            interrupts in "(?s).{0,200}",
            affinity in "[0-9,\\- ]{0,8}",
        ) {
            // One tree for all cases (writing trees is slow on some filesystems); each case
            // overwrites the same files.
            static TREE: std::sync::OnceLock<(tempfile::TempDir, HostRoot)> =
                std::sync::OnceLock::new();
            let (dir, root) = TREE.get_or_init(|| host(&two_core()));
            let sys = dir.path().join("sys");
            let cpu = sys.join("devices/system/cpu");
            std::fs::write(cpu.join("online"), &online).unwrap();
            std::fs::write(cpu.join("cpu0/topology/thread_siblings_list"), &siblings).unwrap();
            std::fs::write(cpu.join("cpu1/topology/core_id"), &core_id).unwrap();
            std::fs::write(sys.join("devices/system/node/node0/cpulist"), &node_list).unwrap();
            std::fs::write(dir.path().join("proc/interrupts"), &interrupts).unwrap();
            std::fs::write(dir.path().join("proc/irq/40/smp_affinity_list"), &affinity).unwrap();
            let nic = read_nic(root, "eth0").ok();
            if let Ok(topo) = read_topology(root) {
                if let Ok(plan) = make_plan(&topo, None, nic.as_ref()) {
                    prop_assert!(Plan::from_toml(&plan.to_toml(), "again").is_ok());
                }
            }
        }

        /// A valid plan with one byte changed either parses to a valid plan or is rejected.
        #[test]
        fn mutated_plans_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
            static GOOD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let good = GOOD.get_or_init(|| plan_for(&two_core(), None).to_toml().into_bytes());
            let mut bad = good.clone();
            let i = pos.index(bad.len());
            bad[i] = byte;
            if let Ok(text) = String::from_utf8(bad) {
                if let Ok(p) = Plan::from_toml(&text, "fuzz") {
                    prop_assert!(p.validate("again").is_ok());
                }
            }
        }
    }
}

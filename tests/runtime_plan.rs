//! The shard runtime takes its cores from `--cores`, then `--plan FILE`, then the CPUs the
//! process may use; bad core lists are one clear error.

use clap::Parser;

use catchup::cli::Cli;
use catchup::node::opts::{parse_cores, runtime_config};
use catchup_shards::{allowed_cores, run, Shard};

fn global(args: &[&str]) -> catchup::cli::GlobalOpts {
    let mut argv = vec!["catchup"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["tune"]);
    Cli::try_parse_from(argv).expect("arguments parse").global
}

#[test]
fn shards_follow_the_plan_cores() {
    let allowed = allowed_cores();
    let dir = tempfile::tempdir().unwrap();
    let plan_path = dir.path().join("plan.toml");
    // A plan for this host with 3 shards (more shards than cores on small hosts).
    let topo = catchup_tuning::read_topology(&catchup_tuning::HostRoot::default()).unwrap();
    let mut plan = catchup_tuning::make_plan(&topo, Some(3), None).unwrap();
    // Keep only cores this process may use (containers may restrict them).
    for s in &mut plan.shards {
        s.cpu = allowed[s.id % allowed.len()];
    }
    std::fs::write(&plan_path, plan.to_toml()).unwrap();

    let g = global(&["--plan", plan_path.to_str().unwrap()]);
    let cfg = runtime_config(&g, None, None).unwrap();
    assert_eq!(cfg.shards, 3);
    assert_eq!(cfg.cores.as_deref(), Some(&plan.cores()[..]));
    let placed: Vec<usize> = run(&cfg, |s: Shard<()>| async move { s.core() }).unwrap();
    assert_eq!(placed, plan.cores());

    // --cores wins over the plan.
    let one = vec![allowed[0]];
    let cfg = runtime_config(&g, Some(2), Some(one.clone())).unwrap();
    assert_eq!(cfg.cores, Some(one));
    assert_eq!(cfg.shards, 2);

    // Without a plan: every allowed CPU, one shard each.
    let cfg = runtime_config(&global(&[]), None, None).unwrap();
    assert_eq!(cfg.shards, allowed.len());
    assert_eq!(cfg.cores, None);
}

#[test]
fn bad_cores_and_zero_shards_are_errors() {
    let g = global(&[]);
    let bad = allowed_cores().iter().max().unwrap() + 4096;
    let e = runtime_config(&g, Some(1), Some(vec![bad])).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("core {bad} may not be used")),
        "{e}"
    );
    assert!(runtime_config(&g, Some(0), None).is_err());
}

#[test]
fn cores_flag_parses() {
    assert_eq!(parse_cores("0,1").unwrap(), vec![0, 1]);
    assert_eq!(parse_cores("2-4,8").unwrap(), vec![2, 3, 4, 8]);
    assert!(parse_cores("").is_err());
    assert!(parse_cores("one").is_err());
}

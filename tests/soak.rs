//! The faults-and-soak suite, short and seeded: every pipeline × fault with a fixed seed
//! and a few trials, through the real `catchup` binary. Every row must pass with nothing
//! refetched after a restart and nothing acknowledged lost. Faults that mount a tmpfs need
//! root: under `CI=true` their absence fails the test, elsewhere it skips with the reason.
//! The pipelines run one after another (each drives several processes on 2 cores).

use std::sync::Mutex;

use catchup::node::soak::{self, Fault, Pipeline, SoakConfig, TrialResult};

/// One pipeline at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Fixed seed: the moments are the same in every run.
const SEED: u64 = 20_261_203;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn run(pipeline: Pipeline, faults: &[Fault], trials: u32, seed: u64) -> soak::SoakReport {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cfg = SoakConfig {
        exe: env!("CARGO_BIN_EXE_catchup").into(),
        pipelines: vec![pipeline],
        faults: faults.to_vec(),
        trials,
        seed,
        deadline: None,
        work_dir: work.path().to_path_buf(),
        sync_timeout_s: 20,
    };
    let report = soak::run(&cfg, &mut |t: &TrialResult| {
        if !t.passed {
            eprintln!(
                "FAILED {} {} seed {}: {}",
                t.pipeline.name(),
                t.fault.name(),
                t.seed,
                t.detail
            );
        }
    });
    eprintln!("{}", report.text());
    report
}

/// Every row ran and passed; a row skipped for want of root fails only under CI.
fn assert_all_passed(report: &soak::SoakReport) {
    for row in &report.rows {
        if let Some(why) = &row.skipped {
            assert!(
                !ci(),
                "{} {}: {why} (CI=true)",
                row.pipeline.name(),
                row.fault.name()
            );
            eprintln!(
                "skipping {} {}: {why}",
                row.pipeline.name(),
                row.fault.name()
            );
            continue;
        }
        assert!(
            row.setup_error.is_none(),
            "{} {}: {:?}",
            row.pipeline.name(),
            row.fault.name(),
            row.setup_error
        );
        assert!(row.trials > 0, "{} {}: no trial ran", row.pipeline.name(), row.fault.name());
        assert!(
            row.ok(),
            "{} {}: {} of {} passed, refetched {:?}, lost {:?}: {:?}",
            row.pipeline.name(),
            row.fault.name(),
            row.passed,
            row.trials,
            row.refetched_after_restart,
            row.acknowledged_lost,
            row.failures
        );
    }
}

#[test]
fn store_survives_every_fault() {
    let r = run(Pipeline::Store, &[], 2, SEED);
    assert_eq!(r.rows.len(), Pipeline::Store.faults().len());
    assert_all_passed(&r);
}

#[test]
fn solana_repair_survives_every_fault() {
    let r = run(Pipeline::SolanaRepair, &[], 2, SEED);
    assert_all_passed(&r);
}

#[test]
fn solana_download_survives_every_fault() {
    let r = run(Pipeline::SolanaDownload, &[], 1, SEED);
    assert_all_passed(&r);
}

#[test]
fn eth_fast_survives_every_fault() {
    let r = run(Pipeline::EthFast, &[], 1, SEED);
    assert_all_passed(&r);
}

#[test]
fn eth_snap_survives_every_fault() {
    let r = run(Pipeline::EthSnap, &[], 1, SEED);
    assert_all_passed(&r);
}

//! Crash safety of the per-shard store: a child process (`catchup bench store-crash-writer`)
//! appends records in batches and prints `ack FIRST LAST` after each batch's `flush`
//! returned. The test kills it with SIGKILL at random points, reopens the store and checks
//! that every acknowledged record reads back byte-identical, that every visible record is
//! whole (its exact value; nothing half-visible), that records form a gap-free prefix, and
//! that the torn tail is gone from the file.
//!
//! A second mode runs the writer with concurrent tasks on a `SharedStore`, each
//! acknowledging a record when its `put_durable` resolved (`ack SEQ SEQ`): every
//! acknowledged record must read back byte-identical, every visible record must be whole,
//! and fewer `fdatasync`s than puts is checked by the library tests.
//!
//! A third mode writes 32-byte hash keys of a fingerprinted kind with a tiny index
//! memtable (`--fingerprinted`), so that the kills also land while index runs, merges and
//! checkpoints are written; the same checks hold, through the runs and the tail scan.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use catchup::node::bench_store::{
    crash_fp_key, crash_store_options, crash_store_options_fingerprinted, crash_value, BENCH_KIND,
    CRASH_FP_KIND,
};
use catchup_io::store::record::{parse_record, RecordLimits};
use catchup_io::store::{Store, StoreOptions};
use rand::Rng;

const TRIALS: usize = 24;
const SEGMENT_SIZE_BYTES: u64 = 192 * 1024;

use catchup_io::exec::run_unbound as run;

/// Result of one verification pass.
struct Verified {
    /// Highest sequence number present.
    max_present: Option<u64>,
    /// Torn-tail bytes cut by this open.
    cut_bytes: u64,
    /// Index runs the open loaded.
    runs: u32,
}

/// The values the writer puts, computed once per sequence number.
struct Expected {
    seed: u64,
    values: Vec<Vec<u8>>,
}

impl Expected {
    fn get(&mut self, seq: u64) -> &[u8] {
        while self.values.len() as u64 <= seq {
            let next = self.values.len() as u64;
            self.values.push(crash_value(self.seed, next));
        }
        &self.values[seq as usize]
    }
}

/// Options, kind and key of sequence number `seq` of the batch writer.
fn batch_mode(fp: bool) -> (StoreOptions, u8, fn(u64) -> Vec<u8>) {
    if fp {
        (
            crash_store_options_fingerprinted(SEGMENT_SIZE_BYTES),
            CRASH_FP_KIND,
            |seq| crash_fp_key(seq).to_vec(),
        )
    } else {
        (crash_store_options(SEGMENT_SIZE_BYTES), BENCH_KIND, |seq| {
            seq.to_be_bytes().to_vec()
        })
    }
}

fn verify(
    dir: &Path,
    expected: &mut Expected,
    max_acked: Option<u64>,
    full: bool,
    fp: bool,
) -> Verified {
    let dir = dir.to_path_buf();
    let (opts, kind, key) = batch_mode(fp);
    run(async move {
        let store = Store::open(&dir, opts)
            .await
            .expect("store reopens after SIGKILL");
        let cut_bytes = store.stats().truncated_tail_bytes;
        let runs = store.stats().index_runs;
        if !full {
            let max_present = (store.len_of_kind(kind) as u64).checked_sub(1);
            store.close().await.expect("close");
            return Verified {
                max_present,
                cut_bytes,
                runs,
            };
        }
        // Every acknowledged record is there, byte-identical.
        let acked_count = max_acked.map_or(0, |m| m + 1);
        for seq in 0..acked_count {
            let v = store
                .get(kind, &key(seq))
                .await
                .unwrap_or_else(|e| panic!("read of acknowledged record {seq}: {e}"));
            assert_eq!(
                v.as_deref(),
                Some(expected.get(seq)),
                "acknowledged record {seq} lost or changed"
            );
        }
        // Records past the last acknowledgement may be visible, but only whole: exactly
        // the value written.
        let mut seq = acked_count;
        while store.try_contains(kind, &key(seq)).expect("index lookup") {
            let v = store
                .get(kind, &key(seq))
                .await
                .unwrap_or_else(|e| panic!("read of record {seq}: {e}"));
            assert_eq!(
                v.as_deref(),
                Some(expected.get(seq)),
                "record {seq} is half-visible"
            );
            seq += 1;
        }
        // Nothing else is visible: the keys are exactly the gap-free prefix 0..seq.
        assert_eq!(store.len_of_kind(kind) as u64, seq, "unexpected records");
        let max_present = seq.checked_sub(1);
        store.close().await.expect("close");
        Verified {
            max_present,
            cut_bytes,
            runs,
        }
    })
}

/// The last segment ends exactly at the end of its last whole record: no torn tail.
fn assert_no_torn_tail(dir: &Path) {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    segs.sort();
    let last = segs.last().expect("at least one segment");
    let bytes = std::fs::read(last).unwrap();
    let opts = crash_store_options(SEGMENT_SIZE_BYTES);
    let lim = RecordLimits {
        max_key_bytes: opts.max_key_bytes,
        max_value_bytes: opts.max_value_bytes,
    };
    let mut off = 0;
    while off < bytes.len() {
        match parse_record(&bytes[off..], &lim) {
            Ok(h) => off += h.record_len(),
            Err(d) => panic!(
                "{} has {} bytes after the last whole record at {off}: {}",
                last.display(),
                bytes.len() - off,
                d.reason()
            ),
        }
    }
}

/// Durable mode: every acknowledged sequence number reads back exactly; every visible
/// record is whole. Returns the number of records present and the torn bytes cut.
fn verify_durable(dir: &Path, expected: &mut Expected, acked: &BTreeSet<u64>) -> (usize, u64) {
    let dir = dir.to_path_buf();
    run(async move {
        let store = Store::open(&dir, crash_store_options(SEGMENT_SIZE_BYTES))
            .await
            .expect("store reopens after SIGKILL");
        let cut_bytes = store.stats().truncated_tail_bytes;
        for seq in acked {
            let v = store
                .get(BENCH_KIND, &seq.to_be_bytes())
                .await
                .unwrap_or_else(|e| panic!("read of acknowledged record {seq}: {e}"));
            assert_eq!(
                v.as_deref(),
                Some(expected.get(*seq)),
                "acknowledged durable record {seq} lost or changed"
            );
        }
        let keys = store.keys_of_kind(BENCH_KIND);
        for k in &keys {
            let seq = u64::from_be_bytes(k.as_slice().try_into().expect("8-byte keys"));
            let v = store
                .get(BENCH_KIND, k)
                .await
                .unwrap_or_else(|e| panic!("read of record {seq}: {e}"));
            assert_eq!(
                v.as_deref(),
                Some(expected.get(seq)),
                "record {seq} is half-visible"
            );
        }
        assert!(keys.len() >= acked.len(), "fewer records than acknowledged");
        store.close().await.expect("close");
        (keys.len(), cut_bytes)
    })
}

/// The batch writer's two modes take turns (the binary runs at most two crash writers at
/// once, as many as the durable mode and one batch mode).
static BATCH_WRITERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn acknowledged_records_survive_sigkill_at_random_points() {
    let _turn = BATCH_WRITERS.lock().unwrap_or_else(|e| e.into_inner());
    sigkill_trials(None);
}

#[test]
fn put_durable_records_survive_sigkill_at_random_points() {
    sigkill_trials(Some(8));
}

#[test]
fn fingerprinted_records_survive_sigkill_while_index_runs_are_written() {
    let _turn = BATCH_WRITERS.lock().unwrap_or_else(|e| e.into_inner());
    sigkill_trials_with(None, true);
}

fn sigkill_trials(durable_tasks: Option<u32>) {
    sigkill_trials_with(durable_tasks, false);
}

/// `durable_tasks`: `None` runs the batch-and-flush writer, `Some(n)` the writer with `n`
/// concurrent `put_durable` tasks; `fp`: the batch writer with fingerprinted keys.
fn sigkill_trials_with(durable_tasks: Option<u32>, fp: bool) {
    let exe = env!("CARGO_BIN_EXE_catchup");
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().join("store");
    let mut rng = rand::thread_rng();
    let seed: u64 = rng.gen();
    eprintln!("store_crash seed {seed}");
    let mut expected = Expected {
        seed,
        values: Vec::new(),
    };
    let mut max_acked: Option<u64> = None;
    let mut acked_set = BTreeSet::new();
    let mut trials_with_cut = 0;
    let mut trials_with_runs = 0;
    let mut kills_before_first_ack = 0;
    for trial in 0..TRIALS {
        let mut cmd = Command::new(exe);
        if let Some(n) = durable_tasks {
            cmd.args([
                "bench",
                "store-crash-writer",
                "--durable-tasks",
                &n.to_string(),
            ]);
        } else {
            cmd.args(["bench", "store-crash-writer"]);
        }
        if fp {
            cmd.arg("--fingerprinted");
        }
        let mut child = cmd
            .arg("--dir")
            .arg(&dir)
            .args([
                "--seed",
                &seed.to_string(),
                "--records",
                "2000000",
                "--batch-max",
                "32",
                "--segment-size-bytes",
                &SEGMENT_SIZE_BYTES.to_string(),
                "--batch-pause-us",
                "1000",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn crash writer");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Most trials wait for the first acknowledgement and then a random 0..25 ms; some
        // kill at a random moment right after start (during open / scan / first batch).
        let mut lines = Vec::new();
        if trial % 4 != 3 {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) => lines.push(l),
                Err(_) => {
                    let _ = child.kill();
                    let out = child.wait_with_output().unwrap();
                    panic!(
                        "trial {trial}: no acknowledgement within 30 s; stderr: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..25_000)));
        } else {
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..10_000)));
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        assert!(
            !lines.iter().any(|l| l == "done"),
            "writer finished before it was killed"
        );
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "trial {trial}: {status:?}"
        );
        let mut acked_this_trial = 0;
        for l in &lines {
            let mut parts = l.split_whitespace();
            assert_eq!(parts.next(), Some("ack"), "unexpected line {l:?}");
            let first: u64 = parts.next().unwrap().parse().unwrap();
            let last: u64 = parts.next().unwrap().parse().unwrap();
            assert!(first <= last);
            // Batches continue from the previous highest record (acknowledged or not).
            max_acked = Some(max_acked.map_or(last, |m| m.max(last)));
            acked_set.extend(first..=last);
            acked_this_trial += 1;
        }
        if acked_this_trial == 0 {
            kills_before_first_ack += 1;
        }
        if durable_tasks.is_some() {
            let (present, cut) = verify_durable(&dir, &mut expected, &acked_set);
            if cut > 0 {
                trials_with_cut += 1;
            }
            assert_no_torn_tail(&dir);
            let (again, cut_again) = verify_durable(&dir, &mut expected, &acked_set);
            assert_eq!(cut_again, 0, "trial {trial}: tail cut twice");
            assert_eq!(again, present);
            continue;
        }
        let v = verify(&dir, &mut expected, max_acked, true, fp);
        if v.cut_bytes > 0 {
            trials_with_cut += 1;
        }
        if v.runs > 0 {
            trials_with_runs += 1;
        }
        assert_no_torn_tail(&dir);
        // A second open finds nothing more to cut.
        let again = verify(&dir, &mut expected, max_acked, false, fp);
        assert_eq!(again.cut_bytes, 0, "trial {trial}: tail cut twice");
        assert_eq!(again.max_present, v.max_present);
    }
    eprintln!(
        "store_crash ({durable_tasks:?} durable tasks, fingerprinted {fp}): {TRIALS} trials, \
         {trials_with_cut} cut a torn tail, \
         {kills_before_first_ack} killed before any acknowledgement, \
         {trials_with_runs} reopened with index runs, \
         {} records acknowledged, highest {max_acked:?}",
        acked_set.len()
    );
    assert!(max_acked.is_some(), "no batch was ever acknowledged");
    if fp {
        assert!(trials_with_runs > 0, "no trial wrote an index run");
    }
}

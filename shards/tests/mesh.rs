//! The shard mesh: delivery, per-sender order, back-pressure, more shards than cores,
//! shutdown, and start-up with and without CAP_IPC_LOCK.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use catchup_shards::{allowed_cores, run, run_with_flag, Recv, RuntimeConfig, SendError, Shard};

fn cfg(shards: usize, capacity: usize) -> RuntimeConfig {
    RuntimeConfig {
        channel_capacity: capacity,
        handle_signals: false,
        ..RuntimeConfig::new(shards)
    }
}

/// Every shard sends `per_peer` sequence-numbered messages to every peer while it receives;
/// returns, per shard, how many messages it got from each peer (order checked inside).
fn all_to_all(cfg: &RuntimeConfig, per_peer: u64) -> Vec<Vec<u64>> {
    run(cfg, move |shard: Shard<(u64, u64)>| async move {
        let sender = shard.clone();
        let sending = glommio::spawn_local(async move {
            for seq in 0..per_peer {
                for peer in sender.peers() {
                    sender
                        .send(peer, (sender.id().0 as u64, seq))
                        .await
                        .expect("peer is receiving");
                }
            }
            sender.close_outgoing();
        });
        let mut next = vec![0u64; shard.count()];
        while let Some((from, (claimed_from, seq))) = shard.recv().await {
            assert_eq!(from.0 as u64, claimed_from, "sender id carried correctly");
            assert_eq!(seq, next[from.0], "in order from shard {from}");
            next[from.0] += 1;
        }
        sending.await;
        next
    })
    .expect("runtime runs")
}

#[test]
fn two_shards_deliver_in_order_under_backpressure() {
    for capacity in [1, 2, 4] {
        let sent = catchup_shards::metrics::counter("catchup_shard_messages_sent_total", "");
        let before = sent.total();
        let got = all_to_all(&cfg(2, capacity), 5_000);
        assert_eq!(got, vec![vec![0, 5_000], vec![5_000, 0]]);
        // Other tests run concurrently in this process, so at least our 10_000.
        assert!(sent.total() - before >= 10_000);
    }
}

#[test]
fn more_shards_than_cores_share_cores() {
    let cores = allowed_cores();
    let two: Vec<usize> = cores.iter().copied().take(2).collect();
    let c = RuntimeConfig {
        cores: Some(two.clone()),
        ..cfg(5, 2)
    };
    let got = all_to_all(&c, 1_000);
    for (i, row) in got.iter().enumerate() {
        for (j, &n) in row.iter().enumerate() {
            assert_eq!(n, if i == j { 0 } else { 1_000 }, "shard {i} from {j}");
        }
    }
    // Shard i ran on cores[i % len].
    let placed: Vec<usize> = run(&c, |s: Shard<()>| async move { s.core() }).unwrap();
    let expect: Vec<usize> = (0..5).map(|i| two[i % two.len()]).collect();
    assert_eq!(placed, expect);
}

#[test]
fn try_send_reports_full_and_nothing_is_lost() {
    let c = cfg(2, 2);
    let out = run(&c, |shard: Shard<u32>| async move {
        if shard.id().0 == 0 {
            let mut sent = 0u32;
            let mut saw_full = false;
            for i in 0..1_000u32 {
                match shard.try_send(catchup_shards::ShardId(1), i) {
                    Ok(()) => sent += 1,
                    Err(SendError::Full { msg, .. }) => {
                        assert_eq!(msg, i, "the message is handed back");
                        saw_full = true;
                        break;
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            assert!(saw_full, "a bounded channel fills up");
            assert!(matches!(
                shard.try_send(catchup_shards::ShardId(0), 0),
                Err(SendError::ToSelf { .. })
            ));
            assert!(matches!(
                shard.try_send(catchup_shards::ShardId(9), 0),
                Err(SendError::NoSuchShard { .. })
            ));
            shard.request_shutdown();
            shard.close_outgoing();
            sent
        } else {
            // Do not receive until shard 0 has filled the channel.
            while !shard.shutting_down() {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            let mut n = 0;
            let mut expect = 0;
            while let Some((_, m)) = shard.recv().await {
                assert_eq!(m, expect);
                expect += 1;
                n += 1;
            }
            n
        }
    })
    .unwrap();
    assert_eq!(out[0], out[1], "everything accepted was delivered");
    assert!(out[0] >= 2 && out[0] < 1_000);
}

#[test]
fn shutdown_flag_stops_shard_loops() {
    let flag = Arc::new(AtomicBool::new(false));
    let setter = {
        let flag = flag.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            flag.store(true, Ordering::Relaxed);
        })
    };
    let out = run_with_flag(&cfg(3, 4), flag, |shard: Shard<u8>| async move {
        let mut ticks = 0u64;
        loop {
            if shard.shutting_down() {
                break;
            }
            match shard.recv_timeout(Duration::from_millis(5)).await {
                Recv::TimedOut => ticks += 1,
                Recv::Msg(..) => panic!("nobody sends"),
                Recv::Closed => {
                    // Peers close only after they saw the flag.
                    assert!(shard.shutting_down(), "peers are alive until shutdown");
                    break;
                }
            }
        }
        ticks
    })
    .unwrap();
    setter.join().unwrap();
    assert_eq!(out.len(), 3);
}

#[test]
fn bad_configs_are_errors() {
    let allowed = allowed_cores();
    let bad_core = allowed.iter().max().unwrap() + 1000;
    let c = RuntimeConfig {
        cores: Some(vec![bad_core]),
        ..cfg(1, 1)
    };
    let err = run(&c, |_s: Shard<()>| async {}).unwrap_err();
    assert!(
        err.to_string().contains(&format!("core {bad_core}")),
        "{err}"
    );
    assert!(run(&cfg(0, 1), |_s: Shard<()>| async {}).is_err());
    assert!(run(&cfg(1, 0), |_s: Shard<()>| async {}).is_err());
}

// ---- child-process tests -------------------------------------------------------------

const CHILD_ENV: &str = "CATCHUP_SHARDS_TEST_CHILD";

fn ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// Child body, run only when re-executed by a parent test: start N shards (N from the
/// env var) that each exchange a message with every peer and then wait for the shutdown
/// flag when asked to.
#[test]
#[ignore = "helper: runs only as a child process of another test"]
fn child_runtime() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    // "N", "N:wait" (stop on the shutdown flag) or "N:stubborn" (never stop by itself).
    let (shards, wait_for_signal, stubborn) = match spec.split_once(':') {
        Some((n, "wait")) => (n.parse::<usize>().unwrap(), true, false),
        Some((n, "stubborn")) => (n.parse::<usize>().unwrap(), true, true),
        _ => (spec.parse::<usize>().unwrap(), false, false),
    };
    let cfg = RuntimeConfig {
        channel_capacity: 2,
        ..RuntimeConfig::new(shards)
    };
    let out = run(&cfg, move |shard: Shard<u32>| async move {
        for p in shard.peers() {
            shard.send(p, 1).await.unwrap();
        }
        let mut got = 0;
        while got < shard.count() - 1 {
            if let Some((_, m)) = shard.recv().await {
                got += m as usize;
            }
        }
        if wait_for_signal {
            if shard.id().0 == 0 {
                println!("ready");
            }
            while stubborn || !shard.shutting_down() {
                let _ = shard.recv_timeout(Duration::from_millis(10)).await;
            }
        }
        // Pinned memory (io_uring registered buffers) while all shards are up.
        let vm_pin_kb = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("VmPin:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        (got, shard.io_memory_bytes(), vm_pin_kb)
    })
    .unwrap_or_else(|e| panic!("shards do not start: {e}"));
    let caps = catchup_io::probe::has_cap_ipc_lock();
    println!(
        "child shards={} cap_ipc_lock={caps} io_memory={} vm_pin_kb={} clean",
        out.len(),
        out[0].1,
        out.iter().map(|o| o.2).max().unwrap_or(0)
    );
}

fn child(shards: &str, under_setpriv: bool) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if under_setpriv {
        let mut c = Command::new("setpriv");
        c.args(["--inh-caps", "-ipc_lock", "--bounding-set", "-ipc_lock"])
            .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args([
        "--ignored",
        "--exact",
        "child_runtime",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, shards);
    cmd
}

/// Longest any child process of these tests may run: a stalled runtime fails the test
/// with what the child printed instead of hanging the suite.
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

/// Kills process `pid` with SIGKILL unless the returned sender is dropped within
/// `CHILD_DEADLINE`.
fn watchdog(pid: u32) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(CHILD_DEADLINE) {
            eprintln!("child {pid} still running after {CHILD_DEADLINE:?}: killing it");
            // SAFETY: plain kill(2) on our own child.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    });
    tx
}

/// `cmd.output()` bounded by `CHILD_DEADLINE`.
fn output_within_deadline(mut cmd: Command) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("child starts");
    let _dog = watchdog(child.id());
    let out = child.wait_with_output().expect("child output");
    {
        use std::os::unix::process::ExitStatusExt;
        assert_ne!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "child stalled and was killed after {CHILD_DEADLINE:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn have_setpriv() -> bool {
    Command::new("setpriv")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn shards_start_with_and_without_cap_ipc_lock() {
    let shards = 8.to_string();
    let with = output_within_deadline(child(&shards, false));
    let text = String::from_utf8_lossy(&with.stdout);
    assert!(
        with.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(text.contains("child shards=8"), "{text}");
    if text.contains("cap_ipc_lock=true") {
        // With CAP_IPC_LOCK every registration succeeds: io_memory is pinned.
        let field = |name: &str| -> u64 {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let io_memory_kb = field("io_memory=") / 1024;
        assert!(field("vm_pin_kb=") >= io_memory_kb * 8, "{text}");
    }

    if !have_setpriv() {
        assert!(!ci(), "setpriv is required under CI=true");
        skip_note!("skipping the no-CAP_IPC_LOCK half: setpriv not installed");
        return;
    }
    let without = output_within_deadline(child(&shards, true));
    let text = String::from_utf8_lossy(&without.stdout);
    let err = String::from_utf8_lossy(&without.stderr);
    if !without.status.success() && err.contains("setpriv") && !text.contains("child shards") {
        // setpriv itself failed (e.g. not allowed to change the bounding set).
        assert!(!ci(), "setpriv failed under CI=true: {err}");
        skip_note!("skipping the no-CAP_IPC_LOCK half: {err}");
        return;
    }
    assert!(without.status.success(), "{text}\n{err}");
    assert!(text.contains("child shards=8 cap_ipc_lock=false"), "{text}");
}

fn start_child_and_wait_ready(
    spec: &str,
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
    std::sync::mpsc::Sender<()>,
) {
    let mut c = child(spec, false);
    let mut proc_ = c.stdout(Stdio::piped()).spawn().unwrap();
    let dog = watchdog(proc_.id());
    let stdout = proc_.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let seen_ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("ready"));
    assert!(seen_ready, "child started its shards");
    (proc_, lines, dog)
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Below glommio's minimum RLIMIT_MEMLOCK (and without CAP_IPC_LOCK) the runtime refuses
/// to start with an error that says what to do.
#[test]
fn too_little_locked_memory_is_a_clear_error() {
    let have_prlimit = Command::new("prlimit")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have_prlimit || !have_setpriv() {
        assert!(!ci(), "prlimit and setpriv are required under CI=true");
        skip_note!("skipping: prlimit or setpriv not installed");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.args([
        "--memlock=262144",
        "setpriv",
        "--inh-caps",
        "-ipc_lock",
        "--bounding-set",
        "-ipc_lock",
    ])
    .arg(exe)
    .args([
        "--ignored",
        "--exact",
        "child_runtime",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "2");
    let out = output_within_deadline(cmd);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("RLIMIT_MEMLOCK is 262144 bytes") && all.contains("CAP_IPC_LOCK"),
        "{all}"
    );
}

#[test]
fn sigint_sets_the_flag_and_the_process_exits_zero() {
    let (mut proc_, lines, _dog) = start_child_and_wait_ready("2:wait");
    signal(&proc_, libc::SIGINT);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = proc_.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(rest.iter().any(|l| l.contains("clean")), "{rest:?}");
}

#[test]
fn a_second_signal_exits_at_once_with_130() {
    use std::os::unix::process::ExitStatusExt;
    let (mut proc_, _lines, _dog) = start_child_and_wait_ready("2:stubborn");
    // The shards ignore the flag; keep signalling until the process exits (signals sent
    // while one is pending merge, so one more is sent after each pause).
    let mut status = None;
    for _ in 0..200 {
        signal(&proc_, libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(25));
        if let Some(s) = proc_.try_wait().unwrap() {
            status = Some(s);
            break;
        }
    }
    let status = match status {
        Some(s) => s,
        None => {
            let _ = proc_.kill();
            panic!("child did not exit after repeated SIGTERM");
        }
    };
    assert_eq!(
        status.code(),
        Some(130),
        "{status:?} signal {:?}",
        status.signal()
    );
}

#[test]
fn sigterm_sets_the_flag_and_the_process_exits_zero() {
    let mut c = child("3:wait", false);
    let mut proc_ = c.stdout(Stdio::piped()).spawn().unwrap();
    let _dog = watchdog(proc_.id());
    let stdout = proc_.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen_ready = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("ready") {
            seen_ready = true;
            break;
        }
    }
    assert!(seen_ready, "child started its shards");
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(proc_.id() as i32, libc::SIGTERM);
    }
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = proc_.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(rest.iter().any(|l| l.contains("clean")), "{rest:?}");
}

//! `catchup doctor`, `catchup tune` and `catchup status` run as the built binary; their
//! JSON parses and says what was measured.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

fn catchup() -> Command {
    Command::new(env!("CARGO_BIN_EXE_catchup"))
}

fn run_json(cmd: &mut Command) -> (i32, Value) {
    let out = cmd.output().expect("catchup runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// A minimal HTTP server on a thread: answers every GET for `/blob` with `206` and the
/// requested range of a 1 MiB body (or `200` and the whole body without Range).
fn serve_blob(connections: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let body: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        for conn in l.incoming().take(connections) {
            let Ok(mut s) = conn else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap_or(0);
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&b[..n]);
            }
            let text = String::from_utf8_lossy(&head).to_string();
            let range = text
                .lines()
                .find_map(|l| l.strip_prefix("Range: bytes="))
                .and_then(|r| r.split_once('-'))
                .map(|(a, z)| {
                    (
                        a.parse::<usize>().unwrap(),
                        z.trim().parse::<usize>().unwrap(),
                    )
                });
            let resp = match range {
                Some((a, z)) => {
                    let z = z.min(body.len() - 1);
                    let mut r = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{z}/{}\r\nConnection: close\r\n\r\n",
                        z - a + 1,
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body[a..=z]);
                    r
                }
                None => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body);
                    r
                }
            };
            let _ = s.write_all(&resp);
        }
    });
    port
}

fn check<'a>(v: &'a Value, id: &str) -> Vec<&'a Value> {
    v["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .filter(|c| c["id"] == id)
        .collect()
}

#[test]
fn doctor_json_measures_source_disk_and_peer() {
    let port = serve_blob(1);
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (code, v) = run_json(catchup().args([
        "doctor",
        "--json",
        "--datadir",
        dir.path().to_str().unwrap(),
        "--source",
        &format!("http://127.0.0.1:{port}/blob"),
        "--peer",
        &peer_addr,
        "--write-mib",
        "4",
        "--fetch-kib",
        "256",
        // Levels this host meets whatever its speed and size: this test is about what is
        // measured; the levels are tested below.
        "--min-source-mbps",
        "0",
        "--min-disk-mbps",
        "0",
        "--max-peer-ms",
        "100000",
        "--need-ram-gb",
        "0",
        "--need-disk-gb",
        "0",
    ]));
    for id in [
        "CATCH001", "CATCH002", "CATCH003", "CATCH004", "CATCH005", "CATCH006", "CATCH007",
        "CATCH008", "CATCH009",
    ] {
        let c = check(&v, id);
        assert_eq!(c.len(), 1, "{id} once: {v:#}");
        let st = c[0]["status"].as_str().unwrap();
        assert!(
            ["ok", "warn", "fail", "skipped"].contains(&st),
            "{id}: {st}"
        );
        assert!(c[0]["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let src = check(&v, "CATCH001")[0];
    assert_eq!(src["status"], "ok", "{src}");
    assert!(src["value"].as_f64().unwrap() > 0.0);
    assert!(
        src["detail"].as_str().unwrap().starts_with("262144 bytes"),
        "{src}"
    );
    let disk = check(&v, "CATCH003")[0];
    assert_ne!(disk["status"], "fail", "{disk}");
    assert!(disk["value"].as_f64().unwrap() > 0.0);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "scratch file removed"
    );
    assert_eq!(check(&v, "CATCH004")[0]["status"], "ok");
    assert_eq!(
        check(&v, "CATCH002")[0]["status"],
        "ok",
        "io_uring works here"
    );
    assert_eq!(v["ok"], true);
    assert_eq!(code, 0);
}

#[test]
fn doctor_without_inputs_skips_and_fails_on_dead_peer() {
    let (code, v) = run_json(catchup().args(["doctor", "--json"]));
    assert_eq!(check(&v, "CATCH001")[0]["status"], "skipped");
    assert_eq!(
        check(&v, "CATCH001")[0]["detail"],
        "skipped (no --source given)"
    );
    assert_eq!(check(&v, "CATCH003")[0]["status"], "skipped");
    assert_eq!(check(&v, "CATCH004")[0]["status"], "skipped");
    assert_eq!(code, if v["ok"] == true { 0 } else { 1 });

    // A port nobody listens on: CATCH004 fails and so does the run.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let (code, v) = run_json(catchup().args(["doctor", "--json", "--peer", &addr]));
    assert_eq!(check(&v, "CATCH004")[0]["status"], "fail");
    assert_eq!(v["ok"], false);
    assert_eq!(code, 1);

    // A redirect is followed to the file.
    let blob = serve_blob(1);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut b = [0u8; 2048];
            let _ = s.read(&mut b);
            let _ = s.write_all(
                format!("HTTP/1.1 303 See Other\r\nLocation: http://127.0.0.1:{blob}/blob\r\nContent-Length: 0\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    let (code, v) = run_json(catchup().args([
        "doctor",
        "--json",
        "--fetch-kib",
        "64",
        // About following the redirect, not about speed.
        "--min-source-mbps",
        "0",
        "--source",
        &format!("http://127.0.0.1:{port}/snapshot.tar.bz2"),
    ]));
    let c = check(&v, "CATCH001")[0];
    assert_eq!(c["status"], "ok", "{c}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("redirected to http://127.0.0.1:{blob}/blob")),
        "{c}"
    );
    assert_eq!(code, if v["ok"] == true { 0 } else { 1 });

    // A source answering 404 fails CATCH001.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut b = [0u8; 2048];
            let _ = s.read(&mut b);
            let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let (code, v) = run_json(catchup().args([
        "doctor",
        "--json",
        "--source",
        &format!("http://127.0.0.1:{port}/missing"),
    ]));
    let c = check(&v, "CATCH001")[0];
    assert_eq!(c["status"], "fail");
    assert!(c["detail"].as_str().unwrap().contains("404"), "{c}");
    assert_eq!(code, 1);
}

/// `doctor --json` with `args`, the checks with `id`, and the exit code.
fn doctor(args: &[&str]) -> (i32, Value) {
    let mut c = catchup();
    c.arg("doctor").arg("--json").args(args);
    run_json(&mut c)
}

fn one<'a>(v: &'a Value, id: &str) -> &'a Value {
    let c = check(v, id);
    assert_eq!(c.len(), 1, "{id} once: {v:#}");
    c[0]
}

/// A proc root holding only a `meminfo` with these totals (in GB of 10^9 bytes).
fn fake_proc(total_gb: u64, available_gb: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let kb = |gb: u64| gb * 1_000_000_000 / 1024;
    std::fs::write(
        dir.path().join("meminfo"),
        format!(
            "MemTotal:       {} kB\nMemFree:         123456 kB\nMemAvailable:   {} kB\nBuffers:          1024 kB\n",
            kb(total_gb),
            kb(available_gb)
        ),
    )
    .unwrap();
    dir
}

#[test]
fn doctor_levels_pass_warn_and_fail_with_the_override_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap().to_string();
    let port = serve_blob(3);
    let source = format!("http://127.0.0.1:{port}/blob");
    let common = [
        "--datadir",
        data,
        "--write-mib",
        "2",
        "--fetch-kib",
        "64",
        "--peer",
        &peer_addr,
        "--source",
        &source,
        "--need-ram-gb",
        "0",
        "--need-disk-gb",
        "0",
    ];
    let run = |levels: &[&str]| {
        let mut args = common.to_vec();
        args.extend_from_slice(levels);
        doctor(&args)
    };

    // Levels nothing can miss: pass (CATCH003 warns only where the filesystem refuses
    // O_DIRECT, and says so).
    let (code, v) = run(&[
        "--min-source-mbps",
        "0",
        "--min-disk-mbps",
        "0",
        "--max-peer-ms",
        "100000",
    ]);
    assert_eq!(one(&v, "CATCH001")["status"], "ok", "{v:#}");
    assert_eq!(one(&v, "CATCH004")["status"], "ok", "{v:#}");
    let disk = one(&v, "CATCH003");
    let direct = disk["detail"].as_str().unwrap().contains("with O_DIRECT");
    assert_eq!(disk["status"], if direct { "ok" } else { "warn" }, "{disk}");
    assert!(
        disk["detail"]
            .as_str()
            .unwrap()
            .ends_with("(--min-disk-mbps needs ≥ 0 MB/s)"),
        "{disk}"
    );
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(code, 0);

    // A fail level nothing reaches and a warn band everything is in.
    let (code, v) = run(&[
        "--min-source-mbps",
        "0,1000000",
        "--min-disk-mbps",
        "0,1000000",
        "--max-peer-ms",
        "100000,0",
    ]);
    for id in ["CATCH001", "CATCH003", "CATCH004"] {
        assert_eq!(one(&v, id)["status"], "warn", "{v:#}");
    }
    assert!(one(&v, "CATCH004")["detail"]
        .as_str()
        .unwrap()
        .ends_with("(--max-peer-ms needs ≤ 100000 ms, warn above 0)"));
    assert_eq!(v["ok"], true);
    assert_eq!(code, 0);

    // Levels nothing reaches: each of the three fails, and so does the run.
    let (code, v) = run(&[
        "--min-source-mbps",
        "1000000",
        "--min-disk-mbps",
        "1000000",
        "--max-peer-ms",
        "0",
    ]);
    for id in ["CATCH001", "CATCH003", "CATCH004"] {
        let c = one(&v, id);
        assert_eq!(c["status"], "fail", "{c}");
        assert!(c["value"].as_f64().unwrap() > 0.0, "{c}");
    }
    assert_eq!(v["ok"], false);
    assert_eq!(
        v["failed"],
        serde_json::json!(["CATCH001", "CATCH003", "CATCH004"])
    );
    assert_eq!(code, 1);

    // Without flags the job's own levels are named.
    let (_, v) = doctor(&["--job", "repair", "--datadir", data, "--write-mib", "2"]);
    let disk = one(&v, "CATCH003");
    assert!(
        disk["detail"]
            .as_str()
            .unwrap()
            .ends_with("(repair needs ≥ 50 MB/s, warn below 100)"),
        "{disk}"
    );
    assert_eq!(disk["thresholds"]["by"], "repair");
}

#[test]
fn doctor_rates_memory_from_meminfo() {
    // 8 GB in total, 6 available.
    let small = fake_proc(8, 6);
    let root = small.path().to_str().unwrap();
    let (code, v) = doctor(&["--proc-root", root, "--job", "eth-sync"]);
    let ram = one(&v, "CATCH008");
    assert_eq!(ram["status"], "fail", "{ram}");
    let detail = ram["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("6.0 GB available of 8.0 GB (eth-sync needs ≥ 16 GB"),
        "{detail}"
    );
    assert!(detail.contains("too little memory in total"), "{detail}");
    assert!((ram["value"].as_f64().unwrap() - 6.0).abs() < 0.01);
    assert_eq!(code, 1);

    // The same host for repair (fail below 4, warn below 8): warn.
    let (_, v) = doctor(&["--proc-root", root, "--job", "repair"]);
    assert_eq!(one(&v, "CATCH008")["status"], "warn");
    // 64 GB with 3 available: enough in total, held by others.
    let busy = fake_proc(64, 3);
    let (_, v) = doctor(&[
        "--proc-root",
        busy.path().to_str().unwrap(),
        "--job",
        "repair",
    ]);
    let ram = one(&v, "CATCH008");
    assert_eq!(ram["status"], "fail");
    assert!(
        ram["detail"]
            .as_str()
            .unwrap()
            .contains("other processes hold 61.0 GB"),
        "{ram}"
    );
    // And --need-ram-gb moves the levels.
    let (_, v) = doctor(&["--proc-root", root, "--need-ram-gb", "5,6"]);
    assert_eq!(one(&v, "CATCH008")["status"], "ok");

    // No meminfo: a warning naming the file, not a pass.
    let empty = tempfile::tempdir().unwrap();
    let (_, v) = doctor(&["--proc-root", empty.path().to_str().unwrap()]);
    let ram = one(&v, "CATCH008");
    assert_eq!(ram["status"], "warn");
    assert!(ram["detail"].as_str().unwrap().contains("meminfo"), "{ram}");
}

#[test]
fn doctor_fails_on_too_little_free_disk() {
    let dir = tempfile::tempdir().unwrap();
    // A datadir that does not exist yet is rated on its parent's filesystem.
    let data = dir.path().join("not-yet");
    let data = data.to_str().unwrap();
    let (code, v) = doctor(&[
        "--datadir",
        data,
        "--need-disk-gb",
        "999999",
        "--write-mib",
        "1",
    ]);
    let free = one(&v, "CATCH009");
    assert_eq!(free["status"], "fail", "{free}");
    assert!(free["value"].as_f64().unwrap() >= 0.0);
    assert_eq!(free["thresholds"]["fail_below"], 999999.0);
    assert_eq!(free["thresholds"]["unit"], "GB");
    assert_eq!(v["ok"], false);
    assert_eq!(code, 1);

    let (_, v) = doctor(&["--datadir", data, "--need-disk-gb", "0", "--write-mib", "1"]);
    assert_eq!(one(&v, "CATCH009")["status"], "ok");
    let (_, v) = doctor(&[]);
    assert_eq!(one(&v, "CATCH009")["status"], "skipped");

    // The table ends with one line naming what failed.
    let out = catchup()
        .args([
            "doctor",
            "--datadir",
            data,
            "--need-disk-gb",
            "999999",
            "--need-ram-gb",
            "0",
            "--min-disk-mbps",
            "0",
            "--write-mib",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap();
    assert!(
        last.contains(" failed: ")
            && last.contains("CATCH009 free disk")
            && last.contains("— see above (rate one job with --job"),
        "{text}"
    );
    assert!(
        !last.contains("CATCH008") && !last.contains("CATCH003"),
        "{text}"
    );
}

#[test]
fn doctor_json_carries_the_levels_used() {
    let (_, v) = doctor(&["--job", "solana-sync", "--max-peer-ms", "300,120"]);
    assert_eq!(v["job"], "solana-sync");
    let t = &v["thresholds"];
    assert_eq!(t["disk_mbps"]["by"], "solana-sync");
    assert_eq!(t["disk_mbps"]["fail_below"], 200.0);
    assert_eq!(t["disk_mbps"]["warn_below"], 400.0);
    assert_eq!(t["source_mbps"]["fail_below"], 30.0);
    assert_eq!(t["ram_gb"]["fail_below"], 64.0);
    assert_eq!(t["free_disk_gb"]["fail_below"], 600.0);
    assert_eq!(t["peer_ms"]["by"], "--max-peer-ms");
    assert_eq!(t["peer_ms"]["fail_above"], 300.0);
    assert_eq!(t["peer_ms"]["warn_above"], 120.0);
    // Every check carries its levels (or null when it has none).
    for c in v["checks"].as_array().unwrap() {
        let rated = ["CATCH001", "CATCH003", "CATCH004", "CATCH008", "CATCH009"]
            .contains(&c["id"].as_str().unwrap());
        assert_eq!(c["thresholds"].is_object(), rated, "{c}");
        for key in ["id", "status", "value", "unit", "detail"] {
            assert!(c.get(key).is_some(), "{key} in {c}");
        }
    }
    // The default job is `all`: the strictest levels.
    let (_, v) = doctor(&[]);
    assert_eq!(v["job"], "all");
    assert_eq!(v["thresholds"]["peer_ms"]["fail_above"], 200.0);
    assert_eq!(v["thresholds"]["ram_gb"]["by"], "all jobs");

    // A bad level is one clap error and exit 2.
    let out = catchup()
        .args(["doctor", "--min-disk-mbps", "400,200"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--min-disk-mbps") && err.contains("warn level"),
        "{err}"
    );
}

#[test]
fn doctor_table_on_plain_output() {
    let out = catchup().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("ID"), "{text}");
    assert!(text.contains("CATCH007"));
}

#[test]
fn tune_json_parses_and_plan_round_trips_through_plan_flag() {
    let (code, v) = run_json(catchup().args(["tune", "--json"]));
    assert_eq!(code, 0);
    let shards = v["shards"].as_array().expect("shards");
    assert!(!shards.is_empty());
    assert!(["mq", "sq", "sq_split"].contains(&v["mode"].as_str().unwrap()));
    assert!(v["commands"].as_array().is_some());

    // With the loopback NIC (it has queues but no IRQs) and an explicit shard count.
    let (code, v) = run_json(catchup().args(["tune", "--json", "--shards", "3", "--nic", "lo"]));
    assert_eq!(code, 0);
    assert_eq!(v["shards"].as_array().unwrap().len(), 3);
    assert_eq!(v["nic"]["name"], "lo");

    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    let out = catchup()
        .args(["tune", "--shards", "2", "--out", plan.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&plan).unwrap();
    assert!(text.contains("[[shards]]"));
    // Any command accepts --plan.
    let (code, _) = run_json(catchup().args(["--plan", plan.to_str().unwrap(), "tune", "--json"]));
    assert_eq!(code, 0);

    // A broken plan is one clear line and exit 2.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "version = 99\n").unwrap();
    let out = catchup()
        .args(["--plan", bad.to_str().unwrap(), "doctor", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: plan ") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn tune_reads_a_fake_host_tree() {
    let dir = tempfile::tempdir().unwrap();
    catchup_tuning::fake::FakeHost {
        cores_per_node: 16,
        numa_nodes: 2,
        threads_per_core: 2,
        nic: Some(("ens9".into(), 4, 300)),
    }
    .write(dir.path())
    .unwrap();
    let (code, v) = run_json(catchup().args([
        "tune",
        "--json",
        "--nic",
        "ens9",
        "--sys-root",
        dir.path().join("sys").to_str().unwrap(),
        "--proc-root",
        dir.path().join("proc").to_str().unwrap(),
    ]));
    assert_eq!(code, 0);
    assert_eq!(v["mode"], "sq_split");
    assert_eq!(v["host"]["cpus"], 64);
    assert_eq!(v["nic"]["irqs"].as_array().unwrap().len(), 4);

    let out = catchup()
        .args([
            "tune",
            "--nic",
            "nope0",
            "--sys-root",
            dir.path().join("sys").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope0"));
    let out = catchup().args(["tune", "--shards", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn status_reads_a_running_admin_endpoint() {
    let server = catchup::node::admin::AdminServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().to_string();
    catchup::node::admin::set_status("sync", serde_json::json!({"phase": "bodies", "peers": 5}));
    catchup_shards::metrics::counter("catchup_status_test_items_total", "Items.")
        .add(catchup_shards::ShardId(0), 9);
    let (code, v) = run_json(catchup().args(["--admin", &addr, "status", "--json"]));
    assert_eq!(code, 0);
    assert_eq!(v["status"]["sync"]["phase"], "bodies");
    assert_eq!(v["metrics"]["catchup_status_test_items_total"], 9.0);
    let out = catchup()
        .args(["--admin", &addr, "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sync.phase") && text.contains("bodies"),
        "{text}"
    );
    drop(server);
    let out = catchup()
        .args(["--admin", &addr, "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

fn ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

fn tool_works(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Removes the network namespace (and the veth pair inside it) when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh_in(ns: &str, script: &str) {
    let st = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", script])
        .status()
        .unwrap();
    assert!(st.success(), "{script}");
}

fn parts(v: &Value) -> std::collections::BTreeMap<String, String> {
    v["check"]
        .as_array()
        .expect("check array")
        .iter()
        .map(|p| {
            (
                p["part"].as_str().unwrap().to_string(),
                p["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `tune --check`, `--apply`, `--check` on a veth pair (4 queues) in a namespace made for
/// the test: the channel count and RPS/XPS are applied; veth has no IRQs (n/a).
#[test]
fn tune_apply_and_check_on_a_veth_pair() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = tool_works("ip", "-V") && tool_works("ethtool", "--version");
    if !root || !tools {
        let why = format!("needs root ({root}) and the ip and ethtool binaries ({tools})");
        assert!(!ci(), "CI=true: {why}");
        skip_note!("skipping: {why}");
        return;
    }
    let ns = format!("catchup-tune-{}", std::process::id());
    let st = Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap();
    assert!(st.success(), "ip netns add {ns}");
    let _guard = Netns(ns.clone());
    sh_in(
        &ns,
        "ip link add vta numrxqueues 4 numtxqueues 4 type veth peer name vtb numrxqueues 4 numtxqueues 4 \
         && ip link set vta up && ip link set vtb up \
         && echo 1 > /sys/class/net/vta/queues/rx-0/rps_cpus \
         && echo 1 > /sys/class/net/vta/queues/tx-1/xps_cpus",
    );
    let bin = env!("CARGO_BIN_EXE_catchup");
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("veth.toml");
    let plan_s = plan.to_str().unwrap();
    let tune = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns, bin]).args(args);
        run_json(&mut c)
    };

    // The plan: 2 shards, so 2 channels, each shard owning one queue.
    let (code, _) = tune(&[
        "tune", "--json", "--nic", "vta", "--shards", "2", "--out", plan_s,
    ]);
    assert_eq!(code, 0);
    let (code, v) = tune(&["--plan", plan_s, "tune", "--check", "--json"]);
    let before = parts(&v);
    assert_eq!(before["channels"], "not", "{v:#}");
    assert_eq!(before["rps_xps"], "partly", "{v:#}");
    assert_eq!(before["irq_affinity"], "n/a");
    assert_eq!(code, 1);

    let (code, v) = tune(&["--plan", plan_s, "tune", "--apply", "--json"]);
    let applied = v["applied"].as_array().unwrap();
    let channel = applied.iter().find(|a| a["part"] == "channels").unwrap();
    assert_eq!(channel["outcome"], "applied", "{channel}");
    assert!(applied
        .iter()
        .filter(|a| a["part"] == "rps_xps")
        .all(|a| a["outcome"] == "applied"));
    assert_eq!(
        applied
            .iter()
            .find(|a| a["part"] == "irq_affinity")
            .unwrap()["outcome"],
        "skipped"
    );
    assert_eq!(code, 0, "{v:#}");

    let (code, v) = tune(&["--plan", plan_s, "tune", "--check", "--json"]);
    let after = parts(&v);
    assert_eq!(after["channels"], "ok", "{v:#}");
    assert_eq!(after["rps_xps"], "ok", "{v:#}");
    let all_ok = after.values().all(|s| s == "ok" || s == "n/a");
    assert_eq!(code, if all_ok { 0 } else { 1 });
    // The kernel agrees: 2 queues each way now.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns, "ls", "/sys/class/net/vta/queues"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.split_whitespace().count(), 4, "{listing}");
}

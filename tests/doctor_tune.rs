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
    ]));
    for id in [
        "CATCH001", "CATCH002", "CATCH003", "CATCH004", "CATCH005", "CATCH006", "CATCH007",
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

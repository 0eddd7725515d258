//! Prometheus for real: a `prometheus` process (Debian's package) scrapes the admin
//! endpoints of a `catchup eth sync` (two slow `eth serve` peers, devnet fixture) and of a
//! `catchup solana sync` (two rate-limited `solana snapshot serve` sources) every second.
//! While each runs, its `/metrics` passes `promtool check metrics`, and a PromQL
//! `rate(...[30s])` by shard over the HTTP API returns a positive rate for both shards.
//! Then every query of the Grafana dashboard in contrib/grafana/ names only metrics those
//! endpoints exported.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

fn tool(path: &'static str) -> Option<&'static str> {
    if Path::new(path).exists() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{path} missing (CI=true): install Debian's prometheus");
    }
    skip_note!("skipping: {path} missing (Debian package prometheus)");
    None
}

fn devnet() -> Option<PathBuf> {
    let dir = std::env::var_os("CATCHUP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("ethereum/devnet");
    if dir.join("headstate.json").exists() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("devnet fixture missing at {} (CI=true)", dir.display());
    }
    skip_note!("skipping: devnet fixture missing at {}", dir.display());
    None
}

/// A child process killed (SIGKILL) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Spawn `cmd` and return it with the first line it prints on stdout (the rest is drained).
fn spawn_with_line(mut cmd: Command, what: &str) -> (Guard, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let child = Guard(child);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(!line.is_empty(), "{what} printed nothing");
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stdout.read_to_end(&mut sink);
    });
    (child, line.trim().to_string())
}

/// GET `path` from `addr`: (status line and headers, body).
fn get(addr: &str, path: &str) -> Option<(String, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n")?;
    // Prometheus answers chunked; our admin endpoint with Content-Length.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((head.to_string(), body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Run `promtool check metrics` on `text`; panics with promtool's words if it complains.
fn promtool_check(promtool: &str, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n--- metrics ---\n{text}"
    );
}

struct Prometheus {
    _child: Guard,
    addr: String,
    _dir: tempfile::TempDir,
}

fn start_prometheus(bin: &str, targets: &[&str]) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let list = targets
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let cfg = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: catchup\n    static_configs:\n      - targets: [{list}]\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), cfg).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("prometheus.log")).unwrap(),
        ))
        .spawn()
        .expect("spawn prometheus");
    let child = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&addr, "/-/ready").is_none_or(|(h, _)| !h.starts_with("HTTP/1.1 200")) {
        assert!(
            Instant::now() < deadline,
            "prometheus not ready in 30 s: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Prometheus {
        _child: child,
        addr,
        _dir: dir,
    }
}

/// Per-shard values of an instant PromQL query.
fn query(prom: &Prometheus, promql: &str) -> Vec<(String, f64)> {
    let path = format!("/api/v1/query?query={}", percent_encode(promql));
    let Some((_, body)) = get(&prom.addr, &path) else {
        return Vec::new();
    };
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("prometheus answered {body:?}: {e}"));
    assert_eq!(v["status"], "success", "{promql}: {v}");
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["metric"]["shard"].as_str().unwrap_or("").to_string(),
                r["value"][1]
                    .as_str()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0.0),
            )
        })
        .collect()
}

/// While `sync` runs: check its `/metrics` with promtool once it shows `metric`, then
/// wait for `promql` to give a positive rate on both shards. Returns the metrics text.
fn check_while_running(
    prom: &Prometheus,
    promtool: &str,
    admin: &str,
    sync: &mut Guard,
    metric: &str,
    promql: &str,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut text = None;
    loop {
        assert!(
            sync.0.try_wait().unwrap().is_none(),
            "the sync ended before Prometheus had its rates ({promql}: {:?})",
            query(prom, promql)
        );
        if text.is_none() {
            if let Some((_, m)) = get(admin, "/metrics") {
                if m.contains(metric) {
                    promtool_check(promtool, &m);
                    text = Some(m);
                }
            }
        }
        let got = query(prom, promql);
        let shards: BTreeSet<&str> = got
            .iter()
            .filter(|(_, v)| *v > 0.0)
            .map(|(s, _)| s.as_str())
            .collect();
        if text.is_some() && shards.contains("0") && shards.contains("1") {
            eprintln!("{promql}: {got:?}");
            // The final text, with every metric the run registered.
            return get(admin, "/metrics").map(|(_, m)| m).or(text).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{promql} gave no positive rate on shards 0 and 1 in 90 s: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn metric_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Metric names (`catchup_…`) a PromQL expression uses.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(off) = expr[i..].find("catchup_") {
        let start = i + off;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        if before_ok {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    if let Some(panels) = v["panels"].as_array() {
        for p in panels {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.clone(), e.to_string()));
                }
            }
            dashboard_queries(p, out);
        }
    }
}

#[test]
fn prometheus_scrapes_eth_and_solana_syncs() {
    let Some(dir) = devnet() else { return };
    let Some(prometheus) = tool(PROMETHEUS) else {
        return;
    };
    let Some(promtool) = tool(PROMTOOL) else {
        return;
    };
    let eth_admin = format!("127.0.0.1:{}", free_port());
    let sol_admin = format!("127.0.0.1:{}", free_port());
    let prom = start_prometheus(prometheus, &[&eth_admin, &sol_admin]);

    // Ethereum.
    let mut servers = Vec::new();
    for _ in 0..2 {
        let mut c = Command::new(env!("CARGO_BIN_EXE_catchup"));
        c.args(["eth", "serve", "--listen", "127.0.0.1:0", "--json"])
            .args(["--profile", "slow", "--slow-delay-ms", "300"])
            .arg("--chain")
            .arg(dir.join("chain.rlp"))
            .arg("--genesis")
            .arg(dir.join("genesis.json"))
            .arg("--state")
            .arg(dir.join("headstate.json"));
        servers.push(spawn_with_line(c, "eth serve"));
    }
    let datadir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_catchup"));
    cmd.args(["eth", "sync", "--shards", "2", "--pivot-distance", "0"])
        .args(["--node-batch", "16", "--timeout-s", "120", "--json"])
        .args(["--admin", &eth_admin])
        .arg("--genesis")
        .arg(dir.join("genesis.json"))
        .arg("--datadir")
        .arg(datadir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (_, line) in &servers {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        cmd.args(["--peer", v["enode"].as_str().unwrap()]);
    }
    let mut sync = Guard(cmd.spawn().expect("spawn eth sync"));
    let eth_metrics = check_while_running(
        &prom,
        promtool,
        &eth_admin,
        &mut sync,
        "catchup_eth_requests_total",
        "sum by (shard) (rate(catchup_eth_requests_total[30s]))",
    );
    drop(sync);
    drop(servers);

    // Solana.
    let work = tempfile::tempdir().unwrap();
    let snaps = work.path().join("snapshots");
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(["solana", "snapshot", "generate", "--accounts", "20000"])
        .args(["--slot", "100", "--json", "--out"])
        .arg(&snaps)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sources = Vec::new();
    for _ in 0..2 {
        let mut c = Command::new(env!("CARGO_BIN_EXE_catchup"));
        c.args(["solana", "snapshot", "serve"]).arg(&snaps).args([
            "--listen",
            "127.0.0.1:0",
            "--rate-limit",
            "0.15",
        ]);
        sources.push(spawn_with_line(c, "snapshot serve"));
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_catchup"));
    cmd.args(["solana", "sync", "--download-shards", "2"])
        .args(["--chunk-size", "64K", "--verify", "stream"])
        .args(["--admin", &sol_admin])
        .arg("--datadir")
        .arg(work.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (_, line) in &sources {
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("snapshot serve said {line:?}"));
        cmd.args(["--source", &format!("http://{addr}/")]);
    }
    let mut sync = Guard(cmd.spawn().expect("spawn solana sync"));
    let sol_metrics = check_while_running(
        &prom,
        promtool,
        &sol_admin,
        &mut sync,
        "catchup_snapshot_download_bytes_total",
        "sum by (shard) (rate(catchup_snapshot_download_bytes_total[30s]))",
    );
    drop(sync);

    // The dashboard names only exported metrics.
    let mut exported = metric_names(&eth_metrics);
    exported.extend(metric_names(&sol_metrics));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana/catchup.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queries = Vec::new();
    dashboard_queries(&dash, &mut queries);
    assert!(
        queries.len() >= 6,
        "{} queries in the dashboard",
        queries.len()
    );
    for (title, expr) in &queries {
        let names = names_in(expr);
        assert!(
            !names.is_empty(),
            "panel {title:?}: {expr} names no catchup metric"
        );
        for n in names {
            assert!(
                exported.contains(&n),
                "panel {title:?}: {n} is not exported (exported: {exported:?})"
            );
        }
        assert!(
            expr.contains("shard") || !expr.contains("rate("),
            "panel {title:?}: rates are per shard: {expr}"
        );
    }
}

#[test]
fn metric_names_in_queries() {
    assert_eq!(
        names_in("sum by (shard) (rate(catchup_eth_headers_total[30s])) / x_catchup_no"),
        vec!["catchup_eth_headers_total".to_string()]
    );
    assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
}

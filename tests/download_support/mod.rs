//! Helpers for the download end-to-end tests: test archives, free ports, nginx instances.
#![allow(dead_code)]

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use catchup_solana::tar::{padding_len, write_header, EntryKind, END_OF_ARCHIVE};
use rand::{Rng, SeedableRng};

/// True when running under CI (`CI=true`): missing tools fail instead of skipping.
pub fn ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Skip (outside CI) or fail (under CI) when `what` is missing.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if ci() {
        panic!("{what} is required under CI=true but missing");
    }
    skip_note!("SKIP: {what} missing");
    false
}

pub fn have_binary(path: &str) -> bool {
    Path::new(path).exists()
        || Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {path}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
}

/// A tar of snapshot-shaped entries with `payload_bytes` of random account data,
/// compressed with the zstd CLI (content checksum on). Returns the archive bytes.
pub fn make_archive(seed: u64, payload_bytes: usize, slot: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut tar = Vec::new();
    let add = |tar: &mut Vec<u8>, path: &str, data: &[u8]| {
        write_header(tar, path, data.len() as u64, EntryKind::File);
        tar.extend_from_slice(data);
        tar.resize(tar.len() + padding_len(data.len() as u64) as usize, 0);
    };
    add(&mut tar, "version", b"1.2.0");
    let manifest: Vec<u8> = (0..4096).map(|_| rng.gen()).collect();
    add(&mut tar, &format!("snapshots/{slot}/{slot}"), &manifest);
    let per_file = 512 * 1024;
    let mut left = payload_bytes;
    let mut id = 0;
    while left > 0 {
        let n = left.min(per_file);
        // Half random, half repetitive: compressible but not trivially.
        let data: Vec<u8> = (0..n)
            .map(|i| {
                if (i / 4096) % 2 == 0 {
                    rng.gen()
                } else {
                    (i % 251) as u8
                }
            })
            .collect();
        add(&mut tar, &format!("accounts/{slot}.{id}"), &data);
        left -= n;
        id += 1;
    }
    tar.extend_from_slice(&END_OF_ARCHIVE);
    let mut child = Command::new("zstd")
        .args(["-q", "-c", "--check", "-3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd CLI");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&tar));
    let out = child.wait_with_output().expect("zstd output");
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Options of one nginx mirror.
#[derive(Clone, Debug, Default)]
pub struct MirrorOpts {
    /// nginx `limit_rate` value (e.g. "500k"); `None`: unlimited.
    pub limit_rate: Option<String>,
    /// `max_ranges 0;`: no Range support.
    pub no_ranges: bool,
}

/// A private nginx serving `docroot` on a loopback port; killed on drop.
pub struct Nginx {
    pub port: u16,
    pub prefix: tempfile::TempDir,
    pub docroot: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    /// Start nginx for the files in `docroot`; `/snapshot.tar.bz2` redirects (303) to
    /// `redirect_to`.
    pub fn start(docroot: &Path, redirect_to: &str, opts: &MirrorOpts) -> Nginx {
        let prefix = tempfile::tempdir().unwrap();
        let port = free_port();
        let p = prefix.path().display().to_string();
        for d in ["tmp", "logs"] {
            std::fs::create_dir_all(prefix.path().join(d)).unwrap();
        }
        let limit = opts
            .limit_rate
            .as_ref()
            .map(|r| format!("limit_rate {r};"))
            .unwrap_or_default();
        let ranges = if opts.no_ranges { "max_ranges 0;" } else { "" };
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    log_format ranges '$status "$http_range" $body_bytes_sent $request_uri';
    access_log {p}/logs/access.log ranges;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    types {{ application/octet-stream zst; }}
    default_type application/octet-stream;
    keepalive_requests 10000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        {limit}
        {ranges}
        location = /snapshot.tar.bz2 {{ return 303 /{redirect_to}; }}
    }}
}}
"#,
            root = docroot.display()
        );
        let conf_path = prefix.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        // Workers run as nobody when started by root: let them read the docroot.
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(docroot)
            .status();
        let _ = Command::new("chmod")
            .args(["a+rx"])
            .arg(prefix.path())
            .status();
        let child = Command::new(nginx_bin())
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(prefix.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nginx");
        let n = Nginx {
            port,
            prefix,
            docroot: docroot.to_path_buf(),
            child: Some(child),
        };
        assert!(
            wait_port(port, Duration::from_secs(10)),
            "nginx did not listen on {port}: {}",
            n.error_log()
        );
        n
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("logs/access.log")).unwrap_or_default()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("logs/error.log")).unwrap_or_default()
    }

    /// Kill the master and its worker at once (SIGKILL), like a crashed mirror.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            // The worker is a child of the master: kill the master's children first.
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &pid.to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn nginx_bin() -> String {
    std::env::var("CATCHUP_NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into())
}

/// Parsed access-log line: status, Range header ("-" if none), body bytes sent, URI.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub status: u16,
    pub range: Option<(u64, u64)>,
    pub bytes: u64,
    pub uri: String,
}

pub fn parse_log(text: &str) -> Vec<LogLine> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(2, ' ');
            let status = parts.next()?.parse().ok()?;
            let rest = parts.next()?;
            let (q, rest) = rest.strip_prefix('"')?.split_once('"')?;
            let range = q.strip_prefix("bytes=").and_then(|r| {
                let (a, b) = r.split_once('-')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            });
            let mut it = rest.trim().splitn(2, ' ');
            let bytes = it.next()?.parse().ok()?;
            let uri = it.next().unwrap_or("").to_string();
            Some(LogLine {
                status,
                range,
                bytes,
                uri,
            })
        })
        .collect()
}

/// Read the download journal's bitmap (payload after the 28-byte header is JSON).
pub fn journal_done(datadir: &Path) -> Option<Vec<bool>> {
    let bytes = std::fs::read(datadir.join("journal/snapshot-download.cur")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(bytes.get(28..)?).ok()?;
    let hex_str = v.get("done_hex")?.as_str()?;
    let raw = hex::decode(hex_str).ok()?;
    let chunk = v.get("chunk_size_bytes")?.as_u64()?;
    let size = v.get("size_bytes")?.as_u64()?;
    let n = size.div_ceil(chunk) as usize;
    Some((0..n).map(|i| raw[i / 8] & (1 << (i % 8)) != 0).collect())
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A valid generated snapshot archive (correct LtHash and capitalization) in `out_dir`;
/// returns its path. The name carries the LtHash, so another seed gives another name.
pub fn gen_snapshot(out_dir: &Path, accounts: u64, seed: u64) -> PathBuf {
    let cfg = catchup::solana::snapshot::generate::GenerateConfig {
        accounts,
        seed,
        slot: 100,
        ..Default::default()
    };
    catchup::solana::snapshot::generate::generate(&cfg, out_dir)
        .expect("generate snapshot")
        .path
}

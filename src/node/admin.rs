//! The admin endpoint: a status page at `/`, Prometheus text at `/metrics`, JSON at
//! `/status`.
//!
//! Any module publishes its state into the status document with [`set_status`] (a value
//! that it updates) or [`register_status_provider`] (a closure called per request). The
//! server ([`AdminServer::start`], or `--admin ADDR` on any command) runs on its own
//! thread with plain `std::net`, answers one short request at a time, and never blocks a
//! shard. [`fetch`] is the matching client used by `catchup status`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Largest request head the server reads.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Largest response body the client accepts.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Per-connection read/write timeout of the server.
pub const SERVER_IO_TIMEOUT_MS: u64 = 2_000;

type Provider = Box<dyn Fn() -> Value + Send + Sync>;

#[derive(Default)]
struct StatusRegistry {
    values: BTreeMap<String, Value>,
    providers: BTreeMap<String, Arc<Provider>>,
}

fn registry() -> &'static Mutex<StatusRegistry> {
    static R: OnceLock<Mutex<StatusRegistry>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(StatusRegistry::default()))
}

fn started_at() -> Instant {
    static T: OnceLock<Instant> = OnceLock::new();
    *T.get_or_init(Instant::now)
}

/// Set (replace) the `section` of the status document.
pub fn set_status(section: &str, value: Value) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.values.insert(section.to_string(), value);
}

/// Remove a section (value or provider).
pub fn clear_status(section: &str) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.values.remove(section);
    r.providers.remove(section);
}

/// Compute the `section` of the status document on every request with `provider`.
/// The provider runs on the admin thread: keep it short (read atomics, copy a snapshot).
pub fn register_status_provider<F>(section: &str, provider: F)
where
    F: Fn() -> Value + Send + Sync + 'static,
{
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.providers
        .insert(section.to_string(), Arc::new(Box::new(provider)));
}

/// The sections modules published (values and providers), with `process`.
pub fn status_sections() -> Value {
    let (mut values, providers) = {
        let r = registry().lock().unwrap_or_else(|p| p.into_inner());
        (r.values.clone(), r.providers.clone())
    };
    // Providers run without the registry lock so they may call set_status.
    for (name, p) in providers {
        values.insert(name, p());
    }
    let mut doc = serde_json::Map::new();
    doc.insert(
        "process".into(),
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_s": started_at().elapsed().as_secs_f64(),
        }),
    );
    for (k, v) in values {
        doc.insert(k, v);
    }
    Value::Object(doc)
}

/// The whole status document: `{"process": {...}, "<section>": ..., ...}` plus the views
/// of [`crate::node::view`]: `throughput` (per shard and stage, over the last minutes),
/// `phases` (progress, rate, ETA), `peers` and `placement`.
pub fn status_json() -> Value {
    use crate::node::view;
    let mut doc = status_sections();
    let peers = view::peers_of(&doc);
    let placement = view::placement_of(&doc);
    if let Value::Object(m) = &mut doc {
        m.insert("throughput".into(), view::throughput_json());
        m.insert("phases".into(), view::phases_json());
        m.insert("peers".into(), peers);
        m.insert("placement".into(), placement);
    }
    doc
}

/// The status page: one HTML document with its script and style inline, carrying the
/// status document of this moment (it then refreshes itself from `/status`).
pub fn status_page() -> String {
    const PAGE: &str = include_str!("status_page.html");
    // Inside a <script> element: no "</" may appear in the JSON text.
    let initial = serde_json::to_string(&status_json())
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c");
    PAGE.replace("/*INITIAL_STATUS*/null", &initial)
}

/// Prometheus text: the per-shard metrics plus process uptime.
pub fn metrics_text() -> String {
    let mut s = catchup_shards::metrics::render_prometheus();
    s.push_str("# HELP catchup_uptime_seconds Seconds since the process started.\n");
    s.push_str("# TYPE catchup_uptime_seconds gauge\n");
    s.push_str(&format!(
        "catchup_uptime_seconds {:.3}\n",
        started_at().elapsed().as_secs_f64()
    ));
    s
}

/// A running admin endpoint; stops when dropped.
pub struct AdminServer {
    addr: SocketAddr,
    _sampler: Option<crate::node::view::Sampler>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Errors of the admin server and client.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin endpoint: {addr} is already in use by another process; pick another --admin")]
    InUse { addr: String },
    #[error("admin endpoint: cannot listen on {addr}: {source} (check --admin)")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("admin endpoint {addr}: {what}: {source}")]
    Io {
        addr: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("admin endpoint {addr}: bad response: {problem}")]
    BadResponse { addr: String, problem: String },
    #[error("admin endpoint {addr}: {path} answered HTTP {code}")]
    Status {
        addr: String,
        path: String,
        code: u16,
    },
}

impl AdminServer {
    /// Listen on `addr` (e.g. `127.0.0.1:9100`, port 0 for any) and serve on a thread.
    pub fn start(addr: SocketAddr) -> Result<Self, AdminError> {
        let _ = started_at();
        let listener = TcpListener::bind(addr).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                AdminError::InUse {
                    addr: addr.to_string(),
                }
            } else {
                AdminError::Bind {
                    addr: addr.to_string(),
                    source,
                }
            }
        })?;
        let local = listener.local_addr().map_err(|source| AdminError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(stream) = conn {
                        if let Err(e) = serve_one(stream) {
                            tracing::debug!(error = %e, "admin request failed");
                        }
                    }
                }
            })
            .map_err(|source| AdminError::Io {
                addr: local.to_string(),
                what: "spawn thread",
                source,
            })?;
        // Without the sampler the page has no history; the endpoint still serves.
        let sampler = match crate::node::view::Sampler::start() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "admin endpoint: no throughput history");
                None
            }
        };
        tracing::info!(addr = %local, "admin endpoint serving / (status page), /metrics and /status");
        Ok(Self {
            addr: local,
            _sampler: sampler,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(mut stream: TcpStream) -> std::io::Result<()> {
    let timeout = Some(Duration::from_millis(SERVER_IO_TIMEOUT_MS));
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() >= MAX_REQUEST_BYTES {
            return respond(&mut stream, 431, "text/plain", b"request head too large\n");
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let (method, path) = request_target(&buf);
    match (method.as_str(), path.as_str()) {
        ("GET", "/metrics") => respond(
            &mut stream,
            200,
            "text/plain; version=0.0.4",
            metrics_text().as_bytes(),
        ),
        ("GET", "/status") => {
            let body = serde_json::to_vec_pretty(&status_json()).unwrap_or_default();
            respond(&mut stream, 200, "application/json", &body)
        }
        ("GET", "/") => respond(
            &mut stream,
            200,
            "text/html; charset=utf-8",
            status_page().as_bytes(),
        ),
        ("GET", _) => respond(
            &mut stream,
            404,
            "text/plain",
            b"try / (status page), /metrics or /status\n",
        ),
        _ => respond(&mut stream, 405, "text/plain", b"only GET\n"),
    }
}

fn respond(stream: &mut TcpStream, code: u16, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// Start the endpoint given by `--admin ADDR` (`admin`), except for commands that read
/// it (`is_client`, e.g. `catchup status`). Keep the returned server alive while the
/// command runs.
pub fn start_for_command(
    admin: Option<SocketAddr>,
    is_client: bool,
) -> Result<Option<AdminServer>, AdminError> {
    match admin {
        Some(addr) if !is_client => AdminServer::start(addr).map(Some),
        _ => Ok(None),
    }
}

/// GET `path` from the admin endpoint at `addr` and return the body.
pub fn fetch(addr: &str, path: &str, timeout: Duration) -> Result<String, AdminError> {
    let io = |what: &'static str| {
        move |source: std::io::Error| AdminError::Io {
            addr: addr.to_string(),
            what,
            source,
        }
    };
    let sock = addr
        .to_socket_addrs()
        .map_err(io("resolve"))?
        .next()
        .ok_or_else(|| AdminError::BadResponse {
            addr: addr.to_string(),
            problem: "address resolves to nothing".into(),
        })?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(io("connect"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(io("set timeout"))?;
    s.set_write_timeout(Some(timeout))
        .map_err(io("set timeout"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(io("send request"))?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE_BYTES as u64 + 64 * 1024)
        .read_to_end(&mut raw)
        .map_err(io("read response"))?;
    parse_response(addr, path, &raw)
}

/// Split a raw HTTP response into its body, checking for status 200 and the size limit.
/// Never panics on any input.
pub fn parse_response(addr: &str, path: &str, raw: &[u8]) -> Result<String, AdminError> {
    let bad = |problem: &str| AdminError::BadResponse {
        addr: addr.to_string(),
        problem: problem.to_string(),
    };
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers not UTF-8"))?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    if code != 200 {
        return Err(AdminError::Status {
            addr: addr.to_string(),
            path: path.to_string(),
            code,
        });
    }
    let body = &raw[split + 4..];
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(bad("body larger than the limit"));
    }
    String::from_utf8(body.to_vec()).map_err(|_| bad("body not UTF-8"))
}

/// The method and path of a request head (`GET /status?x HTTP/1.1` → `("GET",
/// "/status")`); empty strings when absent. Never panics on any input.
pub fn request_target(head: &[u8]) -> (String, String) {
    let head = String::from_utf8_lossy(&head[..head.len().min(MAX_REQUEST_BYTES)]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("").to_string();
    (method, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use catchup_shards::{metrics, ShardId};

    #[test]
    fn serves_metrics_and_status() {
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().to_string();
        metrics::counter("catchup_admin_test_total", "Test counter.").add(ShardId(0), 42);
        set_status("admin_test", json!({"phase": "headers", "done": 7}));
        register_status_provider("admin_test_live", || json!({"peers": 3}));

        let m = fetch(&addr, "/metrics", Duration::from_secs(5)).unwrap();
        assert!(
            m.contains("catchup_admin_test_total{shard=\"0\"} 42"),
            "{m}"
        );
        assert!(m.contains("# TYPE catchup_uptime_seconds gauge"));

        let s: Value =
            serde_json::from_str(&fetch(&addr, "/status", Duration::from_secs(5)).unwrap())
                .unwrap();
        assert_eq!(s["admin_test"]["phase"], "headers");
        assert_eq!(s["admin_test_live"]["peers"], 3);
        assert!(s["process"]["pid"].as_u64().is_some());

        let e = fetch(&addr, "/nope", Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, AdminError::Status { code: 404, .. }), "{e}");
        drop(server);
        assert!(fetch(&addr, "/status", Duration::from_millis(500)).is_err());
    }

    #[test]
    fn page_carries_the_status_without_breaking_out_of_its_script() {
        set_status("page_test", json!({"name": "</script><b>x</b>"}));
        let page = status_page();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(
            !page.contains("</script><b>"),
            "status text escaped the script element"
        );
        assert!(page.contains("page_test"));
        assert!(!page.contains("/*INITIAL_STATUS*/"));
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(raw.contains("Content-Type: text/html; charset=utf-8\r\n"));
        clear_status("page_test");
    }

    #[test]
    fn request_targets() {
        assert_eq!(
            request_target(b"GET /status?x=1 HTTP/1.1\r\n\r\n"),
            ("GET".to_string(), "/status".to_string())
        );
        assert_eq!(request_target(b""), (String::new(), String::new()));
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_response("a", "/status", &raw);
            let _ = request_target(&raw);
        }

        #[test]
        fn well_formed_responses_parse(body in "[a-z{}\":0-9 ]{0,200}", code in 100u16..600) {
            let raw = format!("HTTP/1.1 {code} X\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            match parse_response("a", "/p", raw.as_bytes()) {
                Ok(b) => { proptest::prop_assert_eq!(code, 200); proptest::prop_assert_eq!(b, body); }
                Err(AdminError::Status { code: c, .. }) => proptest::prop_assert_eq!(c, code),
                Err(e) => proptest::prop_assert!(false, "{e}"),
            }
        }
    }
}

//! `snapshot serve`: an HTTP/1.1 server for snapshot archives on glommio, the way a Solana
//! RPC node serves them: `/snapshot.tar.bz2` and `/incremental-snapshot.tar.bz2` answer 303
//! with the newest archive's name; archives are served with HEAD, Range (206/416), ETag and
//! an optional rate limit; `POST /` answers JSON-RPC `getClusterNodes` with a configured list
//! of RPC addresses (so discovery can be tested end to end).

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use catchup_http::{
    parse_range_header, parse_request_head, write_response_head, Limits, Method, RangeRequest,
    RequestHead,
};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::source::{parse_archive_name, FULL_REDIRECT_PATH, INCREMENTAL_REDIRECT_PATH};

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub dir: PathBuf,
    pub listen: SocketAddr,
    /// Total send rate over all connections, bytes per second (`None`: unlimited).
    pub rate_limit_bytes_per_s: Option<u64>,
    /// Honour `Range` (when false, always 200 with the whole file and no `Accept-Ranges`).
    pub ranges: bool,
    /// RPC addresses (`host:port`) reported by `getClusterNodes`.
    pub cluster_rpc_addrs: Vec<String>,
    pub max_connections: usize,
    pub idle_timeout_ms: u64,
}

impl ServeConfig {
    pub fn new(dir: PathBuf, listen: SocketAddr) -> ServeConfig {
        ServeConfig {
            dir,
            listen,
            rate_limit_bytes_per_s: None,
            ranges: true,
            cluster_rpc_addrs: Vec::new(),
            max_connections: 256,
            idle_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("snapshot directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    InUse(String),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("executor: {0}")]
    Executor(String),
}

const SEND_PIECE_BYTES: usize = 256 * 1024;
const MAX_RPC_BODY_BYTES: u64 = 64 * 1024;

/// Shared pacing for the rate limit (one executor: no locking). Each piece gets the next
/// slot of `len / rate` seconds on a virtual clock that never runs behind real time, so an
/// idle server accumulates no credit for a later burst.
struct Pacer {
    rate_bytes_per_s: Option<u64>,
    next_free: Cell<Instant>,
}

impl Pacer {
    async fn pace(&self, bytes: u64) {
        let Some(rate) = self.rate_bytes_per_s.filter(|r| *r > 0) else {
            return;
        };
        let now = Instant::now();
        let start = self.next_free.get().max(now);
        self.next_free
            .set(start + Duration::from_secs_f64(bytes as f64 / rate as f64));
        if start > now {
            glommio::timer::sleep(start - now).await;
        }
    }
}

/// Newest archive in `dir` of the given kind, by slot.
pub fn newest_archive(dir: &Path, incremental: bool) -> Result<Option<String>, ServeError> {
    let rd = std::fs::read_dir(dir).map_err(|e| ServeError::Dir {
        path: dir.into(),
        source: e,
    })?;
    let mut best: Option<(u64, String)> = None;
    for e in rd.flatten().take(100_000) {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let Some(n) = parse_archive_name(&name) else {
            continue;
        };
        if n.base_slot.is_some() != incremental
            || !e.file_type().map(|t| t.is_file()).unwrap_or(false)
        {
            continue;
        }
        if best.as_ref().is_none_or(|(s, _)| n.slot > *s) {
            best = Some((n.slot, name));
        }
    }
    Ok(best.map(|b| b.1))
}

/// Serve until `stop` is set. Calls `on_ready` with the bound address once listening.
pub fn serve_blocking(
    cfg: ServeConfig,
    stop: Arc<AtomicBool>,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    if !cfg.dir.is_dir() {
        let (kind, what) = if cfg.dir.exists() {
            (std::io::ErrorKind::InvalidInput, "is not a directory")
        } else {
            (std::io::ErrorKind::NotFound, "does not exist")
        };
        return Err(ServeError::Dir {
            path: cfg.dir.clone(),
            source: std::io::Error::new(kind, what),
        });
    }
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("serve")
        .make()
        .map_err(|e| ServeError::Executor(e.to_string()))?;
    // The listener below binds with SO_REUSEPORT: refuse a port another process holds.
    let claim = crate::node::listen::claim_tcp(cfg.listen, "--listen").map_err(|e| match e {
        crate::node::listen::ListenError::InUse { .. } => ServeError::InUse(e.to_string()),
        crate::node::listen::ListenError::Other { addr, source, .. } => {
            ServeError::Listen { addr, source }
        }
    })?;
    catchup_io::exec::run(&ex, async move {
        let listener = TcpListener::bind(claim.addr).map_err(|e| ServeError::Listen {
            addr: cfg.listen,
            source: e.into(),
        })?;
        let local = listener.local_addr().map_err(|e| ServeError::Listen {
            addr: cfg.listen,
            source: e.into(),
        })?;
        on_ready(local);
        let cfg = Rc::new(cfg);
        let pacer = Rc::new(Pacer {
            rate_bytes_per_s: cfg.rate_limit_bytes_per_s,
            next_free: Cell::new(Instant::now()),
        });
        let active = Rc::new(Cell::new(0usize));
        while !stop.load(Ordering::Relaxed) {
            let accepted = glommio::timer::timeout(Duration::from_millis(100), async {
                listener
                    .accept()
                    .await
                    .map_err(|e| glommio::GlommioError::IoError(e.into()))
            })
            .await;
            let Ok(stream) = accepted else { continue };
            if active.get() >= cfg.max_connections {
                drop(stream);
                continue;
            }
            active.set(active.get() + 1);
            let (cfg, pacer, active, stop) =
                (cfg.clone(), pacer.clone(), active.clone(), stop.clone());
            glommio::spawn_local(async move {
                if let Err(e) = handle_conn(stream, &cfg, &pacer, &stop).await {
                    tracing::debug!(error = %e, "serve: connection ended");
                }
                active.set(active.get() - 1);
            })
            .detach();
        }
        Ok(())
    })
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad request: {0}")]
    Http(#[from] catchup_http::HttpError),
}

async fn handle_conn(
    mut stream: TcpStream,
    cfg: &ServeConfig,
    pacer: &Pacer,
    stop: &AtomicBool,
) -> Result<(), ConnError> {
    let limits = Limits::default();
    let _ = stream.set_read_timeout(Some(Duration::from_millis(cfg.idle_timeout_ms)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(cfg.idle_timeout_ms)));
    let mut buf = vec![0u8; limits.max_head_bytes + 1024];
    let mut len = 0usize;
    // Bounded by the idle timeout and the stop flag: each round reads or answers a request.
    while !stop.load(Ordering::Relaxed) {
        let parsed = parse_request_head(&buf[..len], &limits);
        let (req, n) = match parsed {
            Ok(Some(x)) => x,
            Ok(None) => {
                if len == buf.len() {
                    return Ok(());
                }
                let r = stream.read(&mut buf[len..]).await?;
                if r == 0 {
                    return Ok(());
                }
                len += r;
                continue;
            }
            Err(e) => {
                let mut out = Vec::new();
                write_response_head(400, "Bad Request", &[], Some(0), false, &mut out);
                let _ = stream.write_all(&out).await;
                return Err(e.into());
            }
        };
        buf.copy_within(n..len, 0);
        len -= n;
        // Request body (JSON-RPC only), bounded.
        let body_len = req.content_length.unwrap_or(0);
        if body_len > MAX_RPC_BODY_BYTES {
            let mut out = Vec::new();
            write_response_head(413, "Payload Too Large", &[], Some(0), false, &mut out);
            stream.write_all(&out).await?;
            return Ok(());
        }
        let body_len = body_len as usize;
        let mut body = Vec::with_capacity(body_len);
        let take = body_len.min(len);
        body.extend_from_slice(&buf[..take]);
        buf.copy_within(take..len, 0);
        len -= take;
        while body.len() < body_len {
            let mut tmp = vec![0u8; body_len - body.len()];
            let r = stream.read(&mut tmp).await?;
            if r == 0 {
                return Ok(());
            }
            body.extend_from_slice(&tmp[..r]);
        }
        let keep = answer(&mut stream, &req, &body, cfg, pacer).await? && req.keep_alive;
        if !keep {
            return Ok(());
        }
    }
    Ok(())
}

fn etag_of(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("\"{mtime:x}-{:x}\"", meta.len())
}

/// Answer one request; returns whether the connection may be kept.
async fn answer(
    stream: &mut TcpStream,
    req: &RequestHead,
    body: &[u8],
    cfg: &ServeConfig,
    pacer: &Pacer,
) -> Result<bool, ConnError> {
    let mut out = Vec::with_capacity(512);
    let path = req.target.split('?').next().unwrap_or("/");
    if req.method == Method::Post {
        let reply = rpc_reply(body, &cfg.cluster_rpc_addrs);
        write_response_head(
            200,
            "OK",
            &[("Content-Type", "application/json".into())],
            Some(reply.len() as u64),
            req.keep_alive,
            &mut out,
        );
        out.extend_from_slice(reply.as_bytes());
        stream.write_all(&out).await?;
        return Ok(true);
    }
    if path == FULL_REDIRECT_PATH || path == INCREMENTAL_REDIRECT_PATH {
        let newest = newest_archive(&cfg.dir, path == INCREMENTAL_REDIRECT_PATH)
            .ok()
            .flatten();
        match newest {
            Some(name) => write_response_head(
                303,
                "See Other",
                &[("Location", format!("/{name}"))],
                Some(0),
                req.keep_alive,
                &mut out,
            ),
            None => write_response_head(404, "Not Found", &[], Some(0), req.keep_alive, &mut out),
        }
        stream.write_all(&out).await?;
        return Ok(true);
    }
    let name = path.trim_start_matches('/');
    let valid = !name.is_empty()
        && !name.contains('/')
        && !name.contains("..")
        && !name.starts_with('.')
        && name.len() <= 255;
    let file_path = cfg.dir.join(name);
    let meta = if valid {
        std::fs::metadata(&file_path).ok().filter(|m| m.is_file())
    } else {
        None
    };
    let Some(meta) = meta else {
        write_response_head(404, "Not Found", &[], Some(0), req.keep_alive, &mut out);
        stream.write_all(&out).await?;
        return Ok(true);
    };
    let size = meta.len();
    let mut headers: Vec<(&str, String)> = vec![
        ("ETag", etag_of(&meta)),
        ("Content-Type", "application/octet-stream".into()),
    ];
    if cfg.ranges {
        headers.push(("Accept-Ranges", "bytes".into()));
    }
    let range = match (cfg.ranges, req.header("range")) {
        (true, Some(v)) => match parse_range_header(v, size) {
            Ok(RangeRequest::Satisfiable(r)) => Some(r),
            Ok(RangeRequest::Unsatisfiable) => {
                headers.push(("Content-Range", format!("bytes */{size}")));
                write_response_head(
                    416,
                    "Range Not Satisfiable",
                    &headers,
                    Some(0),
                    req.keep_alive,
                    &mut out,
                );
                stream.write_all(&out).await?;
                return Ok(true);
            }
            Err(_) => None,
        },
        _ => None,
    };
    let (status, reason, first, count) = match range {
        Some(r) => {
            headers.push((
                "Content-Range",
                format!("bytes {}-{}/{size}", r.first, r.last),
            ));
            (206, "Partial Content", r.first, r.len())
        }
        None => (200, "OK", 0, size),
    };
    // RFC 9530: a HEAD asking for the content's sha-256 gets it (of the range asked): an
    // audit bisects over these instead of fetching the bytes again.
    if req.method == Method::Head
        && req
            .header("want-content-digest")
            .is_some_and(|v| v.to_ascii_lowercase().contains("sha-256"))
    {
        let d = range_digest(&file_path, first, count).await?;
        headers.push((
            "Content-Digest",
            crate::solana::download::locate::content_digest_value(&d),
        ));
    }
    write_response_head(
        status,
        reason,
        &headers,
        Some(count),
        req.keep_alive,
        &mut out,
    );
    stream.write_all(&out).await?;
    if req.method == Method::Head {
        return Ok(true);
    }
    let file = glommio::io::DmaFile::open(&file_path)
        .await
        .map_err(|e| ConnError::Io(e.into()))?;
    let mut pos = first;
    let end = first + count;
    let result = async {
        while pos < end {
            let n = ((end - pos) as usize).min(SEND_PIECE_BYTES);
            let data = file
                .read_at(pos, n)
                .await
                .map_err(|e| ConnError::Io(e.into()))?;
            if data.is_empty() {
                return Err(ConnError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shrank",
                )));
            }
            pacer.pace(data.len() as u64).await;
            stream.write_all(&data).await?;
            pos += data.len() as u64;
        }
        Ok(())
    }
    .await;
    let _ = file.close().await;
    result.map(|_| true)
}

/// sha-256 of `count` bytes of `path` from `first`.
async fn range_digest(path: &Path, first: u64, count: u64) -> Result<[u8; 32], ConnError> {
    use sha2::Digest as _;
    let file = glommio::io::DmaFile::open(path)
        .await
        .map_err(|e| ConnError::Io(e.into()))?;
    let mut h = sha2::Sha256::new();
    let mut pos = first;
    let end = first + count;
    let r = async {
        // Bounded: each read advances toward `end` (a short read ends it).
        while pos < end {
            let n = ((end - pos) as usize).min(1 << 20);
            let data = file
                .read_at(pos, n)
                .await
                .map_err(|e| ConnError::Io(e.into()))?;
            if data.is_empty() {
                return Err(ConnError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shrank",
                )));
            }
            h.update(&data[..]);
            pos += data.len() as u64;
        }
        Ok(())
    }
    .await;
    let _ = file.close().await;
    r.map(|_| h.finalize().into())
}

/// The JSON-RPC reply: `getClusterNodes` lists the configured RPC addresses; anything else
/// is "method not found".
fn rpc_reply(body: &[u8], rpc_addrs: &[String]) -> String {
    let req: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let id = req.get("id").cloned().unwrap_or(serde_json::Value::Null);
    let method = req.get("method").and_then(|m| m.as_str()).unwrap_or("");
    let v = if method == "getClusterNodes" {
        let nodes: Vec<serde_json::Value> = rpc_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                serde_json::json!({
                    "pubkey": format!("node{i}"),
                    "gossip": null,
                    "tpu": null,
                    "rpc": a,
                    "version": "catchup-serve",
                })
            })
            .collect();
        serde_json::json!({"jsonrpc": "2.0", "id": id, "result": nodes})
    } else {
        serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}})
    };
    v.to_string()
}

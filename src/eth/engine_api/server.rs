//! The Engine API's HTTP/1.1 server on a glommio executor (the sync's shard 0): POST
//! JSON-RPC, each request authenticated by its JWT (401 otherwise), keep-alive
//! connections. Request heads are parsed by `catchup-http`; bodies and connections have
//! limits and deadlines.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use alloy_primitives::B256;
use catchup_http::{parse_request_head, write_response_head, Limits, Method};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::jwt::{now_s, JwtSecret};
use super::rpc;
use super::AuthRpc;

/// Largest request body (an execution payload with its transactions).
pub const MAX_BODY_BYTES: usize = 32 << 20;
/// Connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT_MS: u64 = 30_000;

/// Counters of the endpoint (shard-local).
#[derive(Debug, Default, Clone, Copy)]
pub struct ApiStats {
    pub requests: u64,
    pub unauthorized: u64,
    pub forkchoice_updates: u64,
}

/// Serve on the current executor until this future is dropped. `on_target` gets the sync
/// target of every forkchoice update, in the order received.
pub async fn serve(api: AuthRpc, on_target: Rc<dyn Fn(B256)>) {
    let listener = match TcpListener::bind(api.addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %api.addr, error = %e, "Engine API: cannot listen (check --authrpc)");
            return;
        }
    };
    tracing::info!(addr = %api.addr, from = if api.from_finalized { "finalized" } else { "head" }, "Engine API listening (JWT HS256); the consensus client's forkchoice sets the sync target");
    let active = Rc::new(Cell::new(0usize));
    let stats = Rc::new(Cell::new(ApiStats::default()));
    let api = Rc::new(api);
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "Engine API: accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if active.get() >= MAX_CONNECTIONS {
            drop(stream);
            continue;
        }
        active.set(active.get() + 1);
        let (active, stats, api, on_target) = (
            active.clone(),
            stats.clone(),
            api.clone(),
            on_target.clone(),
        );
        glommio::spawn_local(async move {
            if let Err(e) = connection(stream, &api, &*on_target, &stats).await {
                tracing::debug!(error = %e, "Engine API connection ended");
            }
            active.set(active.get() - 1);
        })
        .detach();
    }
}

fn limits() -> Limits {
    Limits {
        max_head_bytes: 16 * 1024,
        max_headers: 64,
        max_body_bytes: MAX_BODY_BYTES as u64,
        ..Limits::default()
    }
}

async fn connection(
    mut stream: TcpStream,
    api: &AuthRpc,
    on_target: &dyn Fn(B256),
    stats: &Cell<ApiStats>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(IDLE_TIMEOUT_MS)))?;
    stream.set_write_timeout(Some(Duration::from_millis(IDLE_TIMEOUT_MS)))?;
    let limits = limits();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // The head.
        let (head, used) = loop {
            match parse_request_head(&buf, &limits) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(e) => {
                    let body = format!("{{\"error\":\"{e}\"}}").replace('\n', " ");
                    return respond(&mut stream, 400, body.as_bytes(), false).await;
                }
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        buf.drain(..used);
        // Refused before its body is read (an unauthenticated client cannot make the
        // server read megabytes), and the connection closed.
        if let Err((code, reply)) = admit(api, &head, stats) {
            return respond(&mut stream, code, &reply, false).await;
        }
        let len = head.content_length.unwrap_or(0);
        if len > MAX_BODY_BYTES as u64 {
            return respond(&mut stream, 413, br#"{"error":"body too large"}"#, false).await;
        }
        let len = len as usize;
        if buf.len() < len
            && head
                .header("expect")
                .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            stream.flush().await?;
        }
        while buf.len() < len {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let keep = head.keep_alive;
        let reply = answer(api, &body, on_target, stats);
        respond(&mut stream, 200, &reply, keep).await?;
        if !keep {
            return Ok(());
        }
    }
}

/// Whether a request may be answered: its token (401 otherwise) and method (405).
fn admit(
    api: &AuthRpc,
    head: &catchup_http::RequestHead,
    stats: &Cell<ApiStats>,
) -> Result<(), (u16, Vec<u8>)> {
    let mut s = stats.get();
    s.requests += 1;
    stats.set(s);
    if let Err(e) = api.secret.authorize(head.header("authorization"), now_s()) {
        s.unauthorized += 1;
        stats.set(s);
        publish(api, s, Some(e.to_string()));
        // A misconfigured client retries every few seconds: say it at 1, 2, 4, 8… refusals.
        if s.unauthorized.is_power_of_two() {
            tracing::warn!(error = %e, refused = s.unauthorized, "Engine API: request refused (HTTP 401); check that the consensus client uses the same --jwt-secret and a correct clock");
        }
        let body = serde_json::json!({ "error": e.to_string() }).to_string();
        return Err((401, body.into_bytes()));
    }
    if head.method != Method::Post {
        return Err((405, br#"{"error":"only POST"}"#.to_vec()));
    }
    Ok(())
}

/// The response body for one admitted request.
fn answer(api: &AuthRpc, body: &[u8], on_target: &dyn Fn(B256), stats: &Cell<ApiStats>) -> Vec<u8> {
    let node = rpc::NodeView {
        chain_id: api.chain_id,
        highest_block: highest_block(),
    };
    let out = rpc::handle(body, &node);
    for fc in &out.forkchoices {
        let mut s = stats.get();
        s.forkchoice_updates += 1;
        stats.set(s);
        match fc.target(api.from_finalized) {
            Some(t) => {
                on_target(t);
                crate::node::admin::set_status(
                    "engine_api_target",
                    serde_json::json!({ "hash": format!("{t}"), "head": format!("{}", fc.head), "finalized": format!("{}", fc.finalized) }),
                );
            }
            None => {
                tracing::info!(head = %fc.head, "Engine API: forkchoice without a finalized block yet; no sync target from it")
            }
        }
    }
    publish(api, stats.get(), None);
    tracing::debug!(methods = ?out.methods, "Engine API request");
    out.body
}

/// The highest block the sync knows of, from shard 0's section of `/status` (refreshed with
/// its progress line).
fn highest_block() -> u64 {
    crate::node::admin::status_sections()["eth_sync_shard_0"]["status"]["highest_block"]
        .as_u64()
        .unwrap_or(0)
}

/// The endpoint's section of the admin endpoint's `/status`.
fn publish(api: &AuthRpc, s: ApiStats, refusal: Option<String>) {
    crate::node::admin::set_status(
        "engine_api",
        serde_json::json!({ "addr": api.addr.to_string(), "requests": s.requests,
            "unauthorized": s.unauthorized, "forkchoice_updates": s.forkchoice_updates,
            "last_refusal": refusal }),
    );
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    body: &[u8],
    keep: bool,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        _ => "Error",
    };
    let mut out = Vec::with_capacity(body.len() + 160);
    write_response_head(
        code,
        reason,
        &[("Content-Type", "application/json".to_string())],
        Some(body.len() as u64),
        keep,
        &mut out,
    );
    out.extend_from_slice(body);
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Read the secret of `--jwt-secret`, or without it the one in `datadir/jwt.hex`
/// (created with a fresh random secret when missing, as the spec asks of a client given no
/// secret). Returns the secret and, when a file was created, its path.
pub fn secret_for(
    jwt_secret: Option<&std::path::Path>,
    datadir: &std::path::Path,
) -> anyhow::Result<(JwtSecret, Option<std::path::PathBuf>)> {
    if let Some(p) = jwt_secret {
        return Ok((
            JwtSecret::load(p).map_err(|e| anyhow::anyhow!("--jwt-secret: {e}"))?,
            None,
        ));
    }
    let path = datadir.join("jwt.hex");
    if path.exists() {
        return Ok((
            JwtSecret::load(&path).map_err(|e| {
                anyhow::anyhow!("{e}; give --jwt-secret FILE, or remove it to have a new one made")
            })?,
            None,
        ));
    }
    let s = JwtSecret::random();
    let tmp = datadir.join("jwt.hex.tmp");
    std::fs::write(&tmp, s.to_hex())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| anyhow::anyhow!("writing {}: {e}; give --jwt-secret FILE", path.display()))?;
    Ok((s, Some(path)))
}

//! Discovery: source URLs from `getClusterNodes`, and the probe of each source (HEAD
//! through redirects, archive identity, Range support).

use catchup_http::{ByteRange, Method, Request, Url};

use crate::solana::download::client::{
    check_range_reply, fetch_small, head_follow, ClientConfig, Conn,
};
use crate::solana::download::source::{
    parse_archive_name, ProbedSource, SourceIdentity, FULL_REDIRECT_PATH, INCREMENTAL_REDIRECT_PATH,
};

use super::SyncError;

/// Resolve `--rpc` to base URLs via `getClusterNodes`.
pub async fn discover_rpc(rpc: &Url, client: &ClientConfig) -> Result<Vec<Url>, SyncError> {
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"getClusterNodes"}"#;
    let err = |why: String| SyncError::Discovery {
        rpc: rpc.to_string(),
        why,
    };
    let (head, reply) = fetch_small(
        rpc,
        Method::Post,
        &[("Content-Type", "application/json")],
        body,
        16 << 20,
        client,
    )
    .await
    .map_err(|e| err(e.to_string()))?;
    if head.status != 200 {
        return Err(err(format!("HTTP status {}", head.status)));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&reply).map_err(|e| err(format!("bad JSON: {e}")))?;
    let nodes = v
        .get("result")
        .and_then(|r| r.as_array())
        .ok_or_else(|| err("no result array".into()))?;
    let mut out = Vec::new();
    for n in nodes.iter().take(10_000) {
        if let Some(addr) = n.get("rpc").and_then(|r| r.as_str()) {
            if let Ok(u) = Url::parse(&format!("http://{addr}/")) {
                out.push(u);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// HEAD a source (following redirects) and check Range support with a one-byte GET.
pub async fn probe_source(
    given: &Url,
    incremental: bool,
    client: &ClientConfig,
) -> Result<ProbedSource, String> {
    let target = if parse_archive_name(given.file_name()).is_some() {
        given.clone()
    } else {
        given
            .join(if incremental {
                INCREMENTAL_REDIRECT_PATH
            } else {
                FULL_REDIRECT_PATH
            })
            .map_err(|e| e.to_string())?
    };
    let (archive, head, latency_ms) = head_follow(&target, client)
        .await
        .map_err(|e| e.to_string())?;
    if head.status != 200 {
        return Err(format!("HEAD {archive}: HTTP status {}", head.status));
    }
    let size = head
        .content_length
        .ok_or_else(|| format!("HEAD {archive}: no Content-Length"))?;
    let name = archive.file_name().to_string();
    // Range support: a 206 to a one-byte range.
    let mut conn = Conn::connect(&archive, client)
        .await
        .map_err(|e| e.to_string())?;
    let r = conn
        .send(&Request {
            method: Method::Get,
            url: &archive,
            range: ByteRange::from_start_len(0, 1),
            headers: &[],
            body: b"",
            keep_alive: false,
        })
        .await
        .map_err(|e| e.to_string())?;
    let ranges = r.status == 206
        && check_range_reply(&archive, &r, ByteRange::from_start_len(0, 1), size).is_ok();
    drop(conn);
    Ok(ProbedSource {
        given: given.clone(),
        identity: SourceIdentity {
            archive_name: name.clone(),
            size_bytes: size,
            etag: head.header("etag").map(str::to_string),
            last_modified: head.header("last-modified").map(str::to_string),
        },
        name: parse_archive_name(&name),
        archive,
        ranges,
        latency_ms,
    })
}

//! The audit after a failed verification over HTTP and the local file: the sans-IO
//! search of [`crate::solana::download::locate`] (bisection by range digest, else the walk
//! back from the failure), and the sources whose bytes lose the vote are blamed.

use catchup_http::{ByteRange, Method, Request, Url};

use crate::solana::download::client::{check_range_reply, ClientConfig, ClientError, Conn};
use crate::solana::download::coordinator::{Coordinator, SourceId};
use crate::solana::download::locate::{
    self, parse_content_digest, AuditCost, AuditInput, AuditIo, Digest,
};
use crate::solana::download::sink::SinkError;

use super::feed::read_exact_at;
use super::fetch::Ctx;

/// Fetch one range into memory (for the audit).
async fn fetch_range_vec(
    url: &Url,
    range: ByteRange,
    total: u64,
    client: &ClientConfig,
) -> Result<Vec<u8>, ClientError> {
    let mut conn = Conn::connect(url, client).await?;
    let head = conn
        .send(&Request {
            method: Method::Get,
            url,
            range: Some(range),
            headers: &[],
            body: b"",
            keep_alive: false,
        })
        .await?;
    check_range_reply(url, &head, Some(range), total)?;
    let mut out = Vec::with_capacity(range.len() as usize);
    let max = range.len();
    let u = url.to_string();
    conn.read_body(head.body_kind(Method::Get), |d| {
        if out.len() as u64 + d.len() as u64 > max {
            return Err(ClientError::Unexpected {
                url: u.clone(),
                why: "body longer than the range".into(),
            });
        }
        out.extend_from_slice(d);
        Ok(())
    })
    .await?;
    if out.len() as u64 != max {
        return Err(ClientError::Unexpected {
            url: u,
            why: format!("short range body: {} of {max} bytes", out.len()),
        });
    }
    Ok(out)
}

/// Ask `url` for the sha-256 of `range` (RFC 9530: a ranged HEAD with
/// `Want-Content-Digest`); `Ok(None)` when the answer carries no `Content-Digest`.
pub async fn fetch_range_digest(
    url: &Url,
    range: ByteRange,
    total: u64,
    client: &ClientConfig,
) -> Result<Option<Digest>, ClientError> {
    let mut conn = Conn::connect(url, client).await?;
    let head = conn
        .send(&Request {
            method: Method::Head,
            url,
            range: Some(range),
            headers: &[("Want-Content-Digest", "sha-256=10")],
            body: b"",
            keep_alive: false,
        })
        .await?;
    check_range_reply(url, &head, Some(range), total)?;
    Ok(head.header("content-digest").and_then(parse_content_digest))
}

/// The audit's I/O over the sync's local file and HTTP sources.
struct HttpAudit<'a> {
    ctx: &'a Ctx,
    coord: &'a Coordinator,
}

impl HttpAudit<'_> {
    fn range(&self, first: u32, last: u32) -> Option<ByteRange> {
        let (off, _) = self.coord.chunk_span(first);
        let (loff, llen) = self.coord.chunk_span(last);
        ByteRange::from_start_len(off, loff + llen - off)
    }
}

impl AuditIo for HttpAudit<'_> {
    async fn local_digest(&self, first: u32, last: u32) -> Option<Digest> {
        use sha2::Digest as _;
        let r = self.range(first, last)?;
        let mut h = sha2::Sha256::new();
        let mut pos = r.first;
        // Bounded: each read advances by up to 1 MiB to the range's end.
        while pos <= r.last {
            let n = (r.last + 1 - pos).min(1 << 20) as usize;
            let buf = read_exact_at(&self.ctx.rfile, pos, n).await.ok()?;
            h.update(&buf);
            pos += n as u64;
        }
        Some(h.finalize().into())
    }

    async fn remote_digest(
        &self,
        source: u32,
        first: u32,
        last: u32,
    ) -> Result<Option<Digest>, String> {
        let r = self.range(first, last).ok_or("empty range")?;
        let m = &self.ctx.members[source as usize];
        fetch_range_digest(&m.archive, r, self.ctx.total_bytes, &self.ctx.client)
            .await
            .map_err(|e| e.to_string())
    }

    async fn fetch_chunk(&self, source: u32, chunk: u32) -> Result<Digest, String> {
        use sha2::Digest as _;
        let r = self.range(chunk, chunk).ok_or("empty range")?;
        let m = &self.ctx.members[source as usize];
        let v = fetch_range_vec(&m.archive, r, self.ctx.total_bytes, &self.ctx.client)
            .await
            .map_err(|e| e.to_string())?;
        Ok(sha2::Sha256::digest(&v).into())
    }

    fn chunk_len(&self, chunk: u32) -> u64 {
        self.coord.chunk_span(chunk).1
    }
}

/// After a failed verification, find the lying sources (see [`crate::solana::download::locate`]):
/// by bisection over range digests where sources answer them, else by the walk back from
/// the failure point. Returns the (liar, chunk) pairs to fetch again (a chunk of unknown
/// origin that loses a vote comes with `SourceId(u32::MAX)`; a liar that served nothing
/// kept with chunk `u32::MAX`) and what finding them cost.
pub(super) async fn audit(
    ctx: &Ctx,
    coord: &Coordinator,
    err: &SinkError,
    bisect: bool,
) -> (Vec<(SourceId, u32)>, AuditCost) {
    let n = coord.chunk_count();
    let placed = err.offset_bytes < ctx.total_bytes;
    let fail_chunk = if placed {
        (err.offset_bytes / ctx.chunk_size_bytes) as u32
    } else {
        n.saturating_sub(1)
    };
    let live: Vec<u32> = (0..ctx.members.len() as u32)
        .filter(|&i| {
            let st = coord.source_stats(SourceId(i)).expect("registered");
            st.dropped.is_none() && st.ranges
        })
        .collect();
    let inp = AuditInput {
        chunks: n,
        fail_chunk,
        placed,
        served_by: (0..n).map(|c| coord.served_by(c).map(|s| s.0)).collect(),
        live,
        bisect,
    };
    let out = locate::audit(&HttpAudit { ctx, coord }, &inp).await;
    for (s, chunk) in &out.liars {
        tracing::warn!(chunk, source = %ctx.members[*s as usize].archive, "lying source found");
    }
    (
        out.bad.into_iter().map(|(s, c)| (SourceId(s), c)).collect(),
        out.cost,
    )
}

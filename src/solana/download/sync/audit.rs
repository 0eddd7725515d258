//! The audit after a failed verification: finished chunks are fetched again from the
//! other sources and compared, and the sources whose bytes lose the vote are blamed.

use catchup_http::{ByteRange, Method, Request, Url};

use crate::solana::download::client::{check_range_reply, ClientConfig, ClientError, Conn};
use crate::solana::download::coordinator::{Coordinator, SourceId};
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

/// Cross-check finished chunks at or before the failure point against the other live
/// ranged sources, one at a time until one agrees with the local copy: the bytes most
/// sources agree on win; sources whose bytes lose are liars
/// and every chunk they served is re-fetched. With only the server and one other source in
/// disagreement, the server of the local copy (which failed verification) is blamed.
/// Returns (liar, chunk) pairs; a chunk of unknown origin (finished before a restart)
/// that loses is returned with `SourceId(u32::MAX)`, and the number of ranges fetched.
///
/// A failure the verifier placed inside the archive (a zstd or tar error at a byte
/// offset) was caused at or shortly before that offset: the walk back from it stops at the
/// first chunk whose sources disagree, so finding a lying source costs the chunks between
/// the damage and the point it was noticed, not the whole archive. If another source also
/// lied, the next verification fails again and the next round finds it. A failure known
/// only at the end (the accounts hash) is not placed: every chunk is cross-checked.
pub(super) async fn audit(
    ctx: &Ctx,
    coord: &Coordinator,
    err: &SinkError,
) -> (Vec<(SourceId, u32)>, u32) {
    let placed = err.offset_bytes < ctx.total_bytes;
    let mut fetches = 0u32;
    let n = coord.chunk_count();
    let fail_chunk = if err.offset_bytes >= ctx.total_bytes {
        n - 1
    } else {
        (err.offset_bytes / ctx.chunk_size_bytes) as u32
    };
    let live: Vec<u32> = (0..ctx.members.len() as u32)
        .filter(|&i| {
            let st = coord.source_stats(SourceId(i)).expect("registered");
            st.dropped.is_none() && st.ranges
        })
        .collect();
    let mut liars: Vec<u32> = Vec::new();
    let mut unknown_bad: Vec<u32> = Vec::new();
    // Newest first: the corruption lies at or before the point where it was noticed.
    for chunk in (0..=fail_chunk).rev() {
        let served = coord.served_by(chunk).map(|s| s.0);
        if served.is_some_and(|s| liars.contains(&s)) {
            continue;
        }
        let (off, len) = coord.chunk_span(chunk);
        let Some(range) = ByteRange::from_start_len(off, len) else {
            continue;
        };
        let Ok(local) = read_exact_at(&ctx.rfile, off, len as usize).await else {
            continue;
        };
        // Versions: (bytes, sources that sent them); the local copy counts for its server.
        let mut versions: Vec<(Vec<u8>, Vec<Option<u32>>)> = vec![(local.to_vec(), vec![served])];
        for &o in live
            .iter()
            .filter(|&&o| Some(o) != served && !liars.contains(&o))
        {
            match fetch_range_vec(
                &ctx.members[o as usize].archive,
                range,
                ctx.total_bytes,
                &ctx.client,
            )
            .await
            {
                Ok(v) => {
                    fetches += 1;
                    match versions.iter_mut().find(|(b, _)| *b == v) {
                        Some((_, who)) => who.push(Some(o)),
                        None => versions.push((v, vec![Some(o)])),
                    }
                }
                Err(e) => {
                    tracing::warn!(source = %ctx.members[o as usize].archive, error = %e, "audit fetch failed")
                }
            }
            // One other source agreeing with the local copy confirms it: the sources not
            // asked did not contribute to it.
            if versions.len() == 1 && versions[0].1.len() >= 2 {
                break;
            }
        }
        if versions.len() == 1 {
            continue;
        }
        let votes = |i: usize| versions[i].1.len();
        let best = (0..versions.len())
            .max_by_key(|&i| (votes(i), i == 0))
            .unwrap_or(0);
        let tie = (0..versions.len())
            .filter(|&i| votes(i) == votes(best))
            .count()
            > 1;
        // A tie means no majority: blame the local copy's server (it failed verification).
        let winner = if tie {
            (1..versions.len())
                .find(|&i| votes(i) == votes(best))
                .unwrap_or(best)
        } else {
            best
        };
        for (i, (_, who)) in versions.iter().enumerate() {
            if i == winner {
                continue;
            }
            for w in who {
                match w {
                    Some(s) if !liars.contains(s) => {
                        tracing::warn!(chunk, source = %ctx.members[*s as usize].archive, "source sent bytes other sources disagree with");
                        liars.push(*s);
                    }
                    Some(_) => {}
                    None => unknown_bad.push(chunk),
                }
            }
        }
        if placed {
            break;
        }
    }
    let mut bad: Vec<(SourceId, u32)> = Vec::new();
    for &s in &liars {
        for c in 0..n {
            if coord.served_by(c).map(|x| x.0) == Some(s) {
                bad.push((SourceId(s), c));
            }
        }
        if !bad.iter().any(|(x, _)| x.0 == s) {
            // A liar that served nothing kept: still drop it.
            bad.push((SourceId(s), u32::MAX));
        }
    }
    for c in unknown_bad {
        bad.push((SourceId(u32::MAX), c));
    }
    bad.sort();
    bad.dedup();
    (bad, fetches)
}

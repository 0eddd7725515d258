//! Finding the source that lied, after the downloaded archive failed verification.
//!
//! The local copy is a mix of chunks from several sources (the coordinator knows which
//! source served each). Two ways to find the chunk that is wrong:
//!
//! - **Bisection by digest** (cheap): the sha-256 of a byte range of the local copy is
//!   compared with the same range's digest as another source serves it (RFC 9530: a ranged
//!   `HEAD` with `Want-Content-Digest: sha-256` answered with `Content-Digest`). Where they
//!   differ the range is halved, keeping the first half that differs, down to one chunk:
//!   `1 + ceil(log2 n)` digest queries of a few hundred bytes each, then that one chunk is
//!   fetched from the other sources and put to the vote. The local side is read from disk,
//!   not the network.
//! - **The walk** (when no source answers digests, e.g. a plain nginx mirror): chunks are
//!   fetched again from the other sources one at a time, back from the point where the
//!   failure was noticed; a failure known only at the end (the accounts hash) walks every
//!   chunk, about the archive's size per round.
//!
//! Either way a chunk is decided by a vote over the versions of its bytes (compared by
//! sha-256 of what was fetched); with no majority the local copy's server, whose bytes
//! failed verification, is blamed. The logic is sans-IO over [`AuditIo`]; the sync
//! implements it over HTTP and the local file, the simulator over modelled sources.

use serde::Serialize;

/// A sha-256 digest.
pub type Digest = [u8; 32];

/// The I/O an audit needs.
#[allow(async_fn_in_trait)]
pub trait AuditIo {
    /// sha-256 of the local copy of chunks `first..=last` (None: unreadable).
    async fn local_digest(&self, first: u32, last: u32) -> Option<Digest>;
    /// sha-256 of chunks `first..=last` as `source` serves them; `Ok(None)` when it does not
    /// answer digests.
    async fn remote_digest(
        &self,
        source: u32,
        first: u32,
        last: u32,
    ) -> Result<Option<Digest>, String>;
    /// Fetch `chunk` from `source` and return the sha-256 of its bytes.
    async fn fetch_chunk(&self, source: u32, chunk: u32) -> Result<Digest, String>;
    /// Length of `chunk` in bytes.
    fn chunk_len(&self, chunk: u32) -> u64;
}

/// What the audit knows of the download.
#[derive(Clone, Debug)]
pub struct AuditInput {
    pub chunks: u32,
    /// The chunk where the failure was noticed (the last one when it was not placed).
    pub fail_chunk: u32,
    /// The verifier placed the failure at a byte offset (zstd or tar error).
    pub placed: bool,
    /// Server of each chunk of the local copy (None: finished before a restart).
    pub served_by: Vec<Option<u32>>,
    /// Sources that may be asked (live, with Range support).
    pub live: Vec<u32>,
    /// Try bisection by digest before the walk.
    pub bisect: bool,
}

/// What finding the liar cost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditCost {
    /// Chunks fetched again (and their bytes).
    pub chunk_fetches: u32,
    pub bytes_refetched: u64,
    /// Range digests asked of sources.
    pub digest_queries: u32,
    /// The bad chunk was found by bisection (not by the walk).
    pub bisected: bool,
    /// Every source's digest equals the local copy's up to the failure: nothing to walk.
    pub all_sources_agree: bool,
}

/// The local copy against one source's range digests.
enum Compared {
    /// The first chunk where they differ.
    Differs(u32),
    /// Equal up to the failure point.
    Agrees,
    /// No digests, or a query failed.
    Unknown,
}

#[derive(Clone, Debug, Default)]
pub struct AuditOutcome {
    /// (liar, chunk) for every chunk a liar served; a liar that served nothing kept is
    /// listed with chunk `u32::MAX`; a losing chunk of unknown origin with source
    /// `u32::MAX`.
    pub bad: Vec<(u32, u32)>,
    /// Sources whose bytes lost a vote, and the chunk where each was caught.
    pub liars: Vec<(u32, u32)>,
    pub cost: AuditCost,
}

/// A bisection over chunks `lo..=hi` known to differ somewhere: the first differing chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bisect {
    lo: u32,
    hi: u32,
}

impl Bisect {
    /// Chunks `lo..=hi`, whose digests differ as a whole.
    pub fn new(lo: u32, hi: u32) -> Bisect {
        assert!(lo <= hi);
        Bisect { lo, hi }
    }
    /// The range to compare next, or None when the chunk is found.
    pub fn query(&self) -> Option<(u32, u32)> {
        (self.lo < self.hi).then(|| (self.lo, self.lo + (self.hi - self.lo) / 2))
    }
    /// The answer to [`Bisect::query`]: did that range's digests differ?
    pub fn answer(&mut self, differ: bool) {
        let (lo, mid) = self.query().expect("a query is open");
        if differ {
            self.hi = mid;
        } else {
            self.lo = mid + 1;
        }
        debug_assert!(lo <= self.lo && self.lo <= self.hi);
    }
    /// The first differing chunk, once found.
    pub fn found(&self) -> Option<u32> {
        (self.lo == self.hi).then_some(self.lo)
    }
}

/// Find the liars. See the module documentation.
pub async fn audit(io: &impl AuditIo, inp: &AuditInput) -> AuditOutcome {
    let mut st = State {
        liars: Vec::new(),
        unknown_bad: Vec::new(),
        cost: AuditCost::default(),
    };
    let mut done = false;
    if inp.bisect && inp.chunks > 0 {
        let mut agree = 0usize;
        for &o in &inp.live {
            let chunk = match bisect_against(io, inp, o, &mut st.cost).await {
                Compared::Differs(chunk) => chunk,
                Compared::Agrees => {
                    agree += 1;
                    continue;
                }
                Compared::Unknown => continue,
            };
            if vote(io, inp, chunk, &mut st, Some(o)).await {
                st.cost.bisected = true;
                done = true;
                break;
            }
            // The digests differed but every source's bytes agree: that source's digests
            // are not to be trusted; try another.
            tracing::warn!(
                source = o,
                chunk,
                "range digests disagreed with the bytes: ignored"
            );
        }
        // Every source serves exactly the local copy up to the failure: no chunk can lose
        // a vote, so the walk would fetch it all for nothing (an archive forged at every
        // source, say).
        if !done && !inp.live.is_empty() && agree == inp.live.len() {
            st.cost.all_sources_agree = true;
            done = true;
        }
    }
    if !done {
        // The walk: back from the failure point.
        for chunk in (0..=inp.fail_chunk.min(inp.chunks.saturating_sub(1))).rev() {
            let served = inp.served_by.get(chunk as usize).copied().flatten();
            if served.is_some_and(|s| st.liars.iter().any(|(l, _)| *l == s)) {
                continue;
            }
            if vote(io, inp, chunk, &mut st, None).await && inp.placed {
                break;
            }
        }
    }
    let mut bad: Vec<(u32, u32)> = Vec::new();
    for &(s, _) in &st.liars {
        let before = bad.len();
        for (c, by) in inp.served_by.iter().enumerate() {
            if *by == Some(s) {
                bad.push((s, c as u32));
            }
        }
        if bad.len() == before {
            bad.push((s, u32::MAX));
        }
    }
    for c in st.unknown_bad {
        bad.push((u32::MAX, c));
    }
    bad.sort_unstable();
    bad.dedup();
    AuditOutcome {
        bad,
        liars: st.liars,
        cost: st.cost,
    }
}

struct State {
    liars: Vec<(u32, u32)>,
    unknown_bad: Vec<u32>,
    cost: AuditCost,
}

/// Bisect the local copy against `source` over `0..=fail_chunk`.
async fn bisect_against(
    io: &impl AuditIo,
    inp: &AuditInput,
    source: u32,
    cost: &mut AuditCost,
) -> Compared {
    let hi = inp.fail_chunk.min(inp.chunks - 1);
    let differ = |first: u32, last: u32, cost: &mut AuditCost| {
        cost.digest_queries += 1;
        async move {
            let remote = match io.remote_digest(source, first, last).await {
                Ok(Some(d)) => d,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(source, error = %e, "range digest failed");
                    return None;
                }
            };
            let local = io.local_digest(first, last).await?;
            Some(local != remote)
        }
    };
    match differ(0, hi, cost).await {
        None => return Compared::Unknown,
        Some(false) => return Compared::Agrees,
        Some(true) => {}
    }
    let mut b = Bisect::new(0, hi);
    // Bounded: each answer halves the range.
    while let Some((first, last)) = b.query() {
        let Some(d) = differ(first, last, cost).await else {
            return Compared::Unknown;
        };
        b.answer(d);
    }
    b.found().map_or(Compared::Unknown, Compared::Differs)
}

/// Put `chunk` to the vote: the local copy (for its server) against the other live
/// sources, fetched one at a time (`first` first: the source whose digest differed) until
/// one agrees with the local copy. Returns true when the versions disagreed (and the
/// losers were blamed).
async fn vote(
    io: &impl AuditIo,
    inp: &AuditInput,
    chunk: u32,
    st: &mut State,
    first: Option<u32>,
) -> bool {
    let served = inp.served_by.get(chunk as usize).copied().flatten();
    let Some(local) = io.local_digest(chunk, chunk).await else {
        return false;
    };
    let is_liar = |st: &State, s: u32| st.liars.iter().any(|(l, _)| *l == s);
    // Versions: (digest, sources that sent it); the local copy counts for its server.
    let mut versions: Vec<(Digest, Vec<Option<u32>>)> = vec![(local, vec![served])];
    let order = first
        .into_iter()
        .chain(inp.live.iter().copied().filter(|&o| Some(o) != first));
    for o in order {
        if Some(o) == served || is_liar(st, o) {
            continue;
        }
        match io.fetch_chunk(o, chunk).await {
            Ok(d) => {
                st.cost.chunk_fetches += 1;
                st.cost.bytes_refetched += io.chunk_len(chunk);
                match versions.iter_mut().find(|(b, _)| *b == d) {
                    Some((_, who)) => who.push(Some(o)),
                    None => versions.push((d, vec![Some(o)])),
                }
            }
            Err(e) => tracing::warn!(source = o, chunk, error = %e, "audit fetch failed"),
        }
        // One other source agreeing with the local copy confirms it: the sources not
        // asked did not contribute to it.
        if versions.len() == 1 && versions[0].1.len() >= 2 {
            break;
        }
    }
    if versions.len() == 1 {
        return false;
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
                Some(s) if !is_liar(st, *s) => {
                    tracing::warn!(
                        chunk,
                        source = s,
                        "source sent bytes other sources disagree with"
                    );
                    st.liars.push((*s, chunk));
                }
                Some(_) => {}
                None => st.unknown_bad.push(chunk),
            }
        }
    }
    true
}

/// The sha-256 in a `Content-Digest` field value (`sha-256=:BASE64:`, other algorithms
/// ignored).
pub fn parse_content_digest(v: &str) -> Option<Digest> {
    use base64::Engine as _;
    v.split(',').find_map(|item| {
        let b64 = item.trim().strip_prefix("sha-256=:")?.strip_suffix(':')?;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()?
            .try_into()
            .ok()
    })
}

/// The `Content-Digest` field value for sha-256 digest `d`.
pub fn content_digest_value(d: &Digest) -> String {
    use base64::Engine as _;
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(d)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisection_finds_the_first_differing_chunk_in_log_steps() {
        for n in [1u32, 2, 3, 7, 128, 1000] {
            for bad in [0, n / 3, n - 1] {
                let mut b = Bisect::new(0, n - 1);
                let mut steps = 0;
                while let Some((lo, hi)) = b.query() {
                    b.answer((lo..=hi).contains(&bad));
                    steps += 1;
                }
                assert_eq!(b.found(), Some(bad), "n {n}");
                assert!(
                    steps <= 32 - (n - 1).leading_zeros(),
                    "n {n}: {steps} steps"
                );
            }
        }
    }

    #[test]
    fn content_digest_round_trips_and_ignores_other_algorithms() {
        let d = [7u8; 32];
        let v = content_digest_value(&d);
        assert_eq!(parse_content_digest(&v), Some(d));
        assert_eq!(
            parse_content_digest(&format!("sha-512=:AAAA:, {v}")),
            Some(d)
        );
        assert_eq!(parse_content_digest("sha-256=:AAAA:"), None);
        assert_eq!(parse_content_digest("sha-256=nonsense"), None);
    }
}

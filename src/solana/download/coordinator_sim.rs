//! Seeded deterministic simulator for the chunk coordinator: sources with a speed, random
//! failures, crashes, lies and no Range support, in virtual time.

use super::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

#[derive(Clone, Debug)]
struct SimSource {
    bytes_per_ms: u64,
    /// Probability that a fetch fails somewhere in the middle.
    fail_prob: f64,
    /// From this time on every fetch fails at once.
    crash_at_ms: Option<u64>,
    /// Serves wrong bytes (found at verification after the download).
    liar: bool,
    ranges: bool,
    /// Time before the first byte of each fetch.
    latency_ms: u64,
}

fn src(bytes_per_ms: u64) -> SimSource {
    SimSource {
        bytes_per_ms,
        fail_prob: 0.0,
        crash_at_ms: None,
        liar: false,
        ranges: true,
        latency_ms: 0,
    }
}

struct Fetch {
    /// No bytes before this time.
    start_ms: u64,
    pos: u64,
    end: u64,
    fail_at: Option<u64>,
}

#[derive(Default, Debug)]
struct Report {
    finished_ms: Option<u64>,
    stuck: bool,
    /// ChunkComplete count per chunk.
    completes: Vec<u32>,
    /// Final server of each chunk.
    served_by: Vec<Option<SourceId>>,
    fetches_per_source: Vec<u32>,
    fetch_start_times: Vec<Vec<u64>>,
    dropped: Vec<Option<String>>,
    bad_reports: u32,
    chunks_by_source: Vec<u32>,
}

fn simulate(
    seed: u64,
    cfg: CoordinatorConfig,
    total: u64,
    done: &[bool],
    sources: &[SimSource],
    limit_ms: u64,
) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = Coordinator::new(cfg.clone(), total, done);
    let ids: Vec<SourceId> = sources.iter().map(|_| c.add_source()).collect();
    let mut rep = Report {
        completes: vec![0; c.chunk_count() as usize],
        fetches_per_source: vec![0; sources.len()],
        fetch_start_times: vec![Vec::new(); sources.len()],
        ..Report::default()
    };
    let mut inflight: HashMap<SourceId, Fetch> = HashMap::new();
    let mut queue: Vec<Event> = ids
        .iter()
        .zip(sources)
        .map(|(&s, x)| Event::SourceReady {
            source: s,
            ranges: x.ranges,
        })
        .collect();
    let mut now = 0u64;
    let step_ms = 10;
    let mut verified_once = false;
    while now <= limit_ms {
        // Deliver queued events, apply actions (bounded: each round handles what is queued).
        for _round in 0..64 {
            if queue.is_empty() {
                break;
            }
            let events = std::mem::take(&mut queue);
            for ev in events {
                for a in c.handle(now, ev) {
                    match a {
                        Action::Fetch {
                            source,
                            offset,
                            len,
                            whole_file,
                            ..
                        } => {
                            let s = &sources[source.0 as usize];
                            assert_eq!(whole_file, !s.ranges);
                            assert!(!inflight.contains_key(&source), "two fetches on one source");
                            rep.fetches_per_source[source.0 as usize] += 1;
                            rep.fetch_start_times[source.0 as usize].push(now);
                            let crashed = s.crash_at_ms.is_some_and(|t| now >= t);
                            let fail_at = if crashed {
                                Some(offset)
                            } else if rng.gen_bool(s.fail_prob) {
                                Some(offset + rng.gen_range(0..len))
                            } else {
                                None
                            };
                            inflight.insert(
                                source,
                                Fetch {
                                    start_ms: now + s.latency_ms,
                                    pos: offset,
                                    end: offset + len,
                                    fail_at,
                                },
                            );
                        }
                        Action::Cancel { source } => {
                            inflight.remove(&source);
                        }
                        Action::DropSource { .. } => {}
                        Action::ChunkComplete { chunk } => rep.completes[chunk as usize] += 1,
                        Action::Finished => {
                            // Verification after the download: chunks from liars are bad.
                            let bad: Vec<(SourceId, u32)> = (0..c.chunk_count())
                                .filter_map(|ch| {
                                    c.served_by(ch)
                                        .filter(|s| sources[s.0 as usize].liar)
                                        .map(|s| (s, ch))
                                })
                                .collect();
                            if bad.is_empty() {
                                rep.finished_ms = Some(now);
                            } else {
                                verified_once = true;
                                rep.bad_reports += bad.len() as u32;
                                for (s, ch) in bad {
                                    queue.push(Event::ChunkBad {
                                        source: s,
                                        chunk: ch,
                                    });
                                }
                            }
                        }
                        Action::Stuck { .. } => rep.stuck = true,
                    }
                }
            }
        }
        if rep.finished_ms.is_some() || rep.stuck {
            break;
        }
        // Advance time: move bytes on every fetch.
        now += step_ms;
        let mut keys: Vec<SourceId> = inflight.keys().copied().collect();
        keys.sort();
        for sid in keys {
            let s = &sources[sid.0 as usize];
            let f = inflight.get_mut(&sid).unwrap();
            let mut budget = if now <= f.start_ms {
                0
            } else {
                s.bytes_per_ms * step_ms
            };
            let mut failed = false;
            while budget > 0 && f.pos < f.end {
                let chunk = (f.pos / cfg.chunk_size_bytes) as u32;
                let chunk_end = ((chunk as u64 + 1) * cfg.chunk_size_bytes).min(total);
                let mut stop = chunk_end.min(f.pos + budget);
                if let Some(fa) = f.fail_at {
                    if fa < stop {
                        stop = fa;
                        failed = true;
                    }
                }
                let n = stop - f.pos;
                if n > 0 {
                    queue.push(Event::Progress {
                        source: sid,
                        bytes: n,
                    });
                }
                budget -= n;
                f.pos = stop;
                if failed {
                    break;
                }
                if f.pos == chunk_end {
                    queue.push(Event::ChunkDone { source: sid, chunk });
                }
            }
            if failed {
                inflight.remove(&sid);
                queue.push(Event::FetchFailed {
                    source: sid,
                    reason: FailReason::Transport("connection reset".into()),
                });
            } else if f.pos >= f.end {
                inflight.remove(&sid);
            }
        }
        if now % 100 == 0 {
            queue.push(Event::Tick);
        }
    }
    let _ = verified_once;
    rep.served_by = (0..c.chunk_count()).map(|ch| c.served_by(ch)).collect();
    rep.dropped = ids
        .iter()
        .map(|&s| c.source_stats(s).unwrap().dropped.clone())
        .collect();
    rep.chunks_by_source = ids
        .iter()
        .map(|&s| c.source_stats(s).unwrap().chunks_done)
        .collect();
    rep
}

fn cfg(chunk: u64) -> CoordinatorConfig {
    CoordinatorConfig {
        chunk_size_bytes: chunk,
        min_source_speed_bytes_per_s: 0,
        slow_grace_ms: 2_000,
        max_failures: 4,
        backoff_base_ms: 200,
        backoff_max_ms: 5_000,
        stall_timeout_ms: 10_000,
        endgame_min_age_ms: 250,
        max_span_chunks: 1024,
    }
}

#[test]
fn every_chunk_done_once_and_faster_sources_take_more() {
    let sources = [src(1000), src(100), src(300)];
    let rep = simulate(1, cfg(100_000), 10_000_000 + 123, &[], &sources, 600_000);
    assert!(rep.finished_ms.is_some(), "{rep:?}");
    assert!(rep.completes.iter().all(|&n| n == 1), "{:?}", rep.completes);
    assert_eq!(rep.completes.len(), 101);
    let by = &rep.chunks_by_source;
    assert!(by[0] > by[2] && by[2] > by[1], "chunks per source {by:?}");
    assert!(rep.dropped.iter().all(Option::is_none));
}

#[test]
fn failed_chunks_are_reassigned_and_crashed_source_dropped() {
    let mut dying = src(1000);
    dying.crash_at_ms = Some(3_000);
    let mut flaky = src(500);
    flaky.fail_prob = 0.3;
    let sources = [dying, flaky, src(200)];
    let rep = simulate(7, cfg(100_000), 8_000_000, &[], &sources, 900_000);
    assert!(rep.finished_ms.is_some(), "{rep:?}");
    assert!(rep.completes.iter().all(|&n| n == 1));
    assert!(
        rep.dropped[0]
            .as_deref()
            .unwrap()
            .contains("failed 4 times"),
        "{:?}",
        rep.dropped
    );
    assert!(rep.served_by.iter().all(|s| s.is_some()));
}

#[test]
fn source_below_min_speed_dropped_after_retries_with_exponential_backoff() {
    let mut c = cfg(1_000_000);
    c.min_source_speed_bytes_per_s = 100_000; // 100 bytes/ms
    let sources = [src(20), src(1000)];
    let rep = simulate(3, c, 30_000_000, &[], &sources, 600_000);
    assert!(rep.finished_ms.is_some(), "{rep:?}");
    assert!(
        rep.dropped[0]
            .as_deref()
            .unwrap()
            .contains("slower than the minimum"),
        "{:?}",
        rep.dropped
    );
    assert!(rep.dropped[1].is_none());
    let starts = &rep.fetch_start_times[0];
    assert_eq!(starts.len(), 4, "{starts:?}");
    // Each retry waits the grace period plus a doubling backoff: the gaps grow.
    let gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] > g[0]), "gaps {gaps:?}");
    assert!(rep.completes.iter().all(|&n| n == 1));
}

#[test]
fn liar_is_dropped_and_its_chunks_fetched_again() {
    let mut liar = src(800);
    liar.liar = true;
    let sources = [liar, src(400)];
    let rep = simulate(11, cfg(100_000), 5_000_000, &[], &sources, 600_000);
    assert!(rep.finished_ms.is_some(), "{rep:?}");
    assert!(rep.bad_reports > 0);
    assert!(rep.dropped[0].as_deref().unwrap().contains("bad bytes"));
    assert!(rep.served_by.iter().all(|s| *s == Some(SourceId(1))));
}

#[test]
fn resume_never_fetches_done_chunks() {
    let total = 1_000_000;
    let done: Vec<bool> = (0..10).map(|i| i % 3 == 0).collect();
    let mut c = Coordinator::new(cfg(100_000), total, &done);
    let a = c.add_source();
    let b = c.add_source();
    let mut fetched = Vec::new();
    let mut acts = c.handle(
        0,
        Event::SourceReady {
            source: a,
            ranges: true,
        },
    );
    acts.extend(c.handle(
        0,
        Event::SourceReady {
            source: b,
            ranges: true,
        },
    ));
    let mut t = 0;
    for _ in 0..100 {
        let mut next = Vec::new();
        for act in acts.drain(..) {
            if let Action::Fetch { source, first, .. } = act {
                fetched.push(first);
                t += 1;
                next.extend(c.handle(
                    t,
                    Event::Progress {
                        source,
                        bytes: 100_000,
                    },
                ));
                next.extend(c.handle(
                    t,
                    Event::ChunkDone {
                        source,
                        chunk: first,
                    },
                ));
            }
        }
        if next.is_empty() {
            break;
        }
        acts = next;
    }
    fetched.sort();
    assert_eq!(fetched, vec![1, 2, 4, 5, 7, 8]);
    assert_eq!(c.chunks_done(), 10);
}

#[test]
fn whole_file_fallback_without_ranges() {
    let mut a = src(500);
    a.ranges = false;
    a.crash_at_ms = None;
    a.fail_prob = 1.0; // the first stream dies in the middle
    let mut b = src(300);
    b.ranges = false;
    let sources = [a, b];
    let rep = simulate(5, cfg(100_000), 2_000_000, &[], &sources, 600_000);
    assert!(rep.finished_ms.is_some(), "{rep:?}");
    assert!(rep.completes.iter().all(|&n| n == 1));
    // Only one stream at a time; the second source finished what the first left.
    assert!(rep.served_by.contains(&Some(SourceId(1))));
}

#[test]
fn all_sources_failing_reports_stuck() {
    let mut a = src(500);
    a.crash_at_ms = Some(0);
    let rep = simulate(9, cfg(100_000), 1_000_000, &[], &[a], 600_000);
    assert!(rep.stuck);
    assert!(rep.finished_ms.is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_mixes_finish_with_every_chunk_once(
        seed in any::<u64>(),
        speeds in proptest::collection::vec(1u64..2000, 1..6),
        flaky in proptest::collection::vec(0.0f64..0.5, 6),
        chunk in 10_000u64..300_000,
        total in 1u64..3_000_000,
    ) {
        // One honest, reliable source guarantees the end; the others are random.
        let mut sources = vec![src(50)];
        for (i, s) in speeds.iter().enumerate() {
            let mut x = src(*s);
            x.fail_prob = flaky[i];
            x.liar = i % 3 == 2;
            x.crash_at_ms = if i % 4 == 1 { Some(1_000 * i as u64) } else { None };
            sources.push(x);
        }
        let rep = simulate(seed, cfg(chunk), total, &[], &sources, 3_000_000);
        prop_assert!(rep.finished_ms.is_some(), "{:?}", rep);
        for (ch, by) in rep.served_by.iter().enumerate() {
            let by = by.expect("served");
            prop_assert!(!sources[by.0 as usize].liar, "chunk {} from a liar", ch);
        }
        // Done once, plus once more per time it was found bad.
        let total_completes: u32 = rep.completes.iter().sum();
        prop_assert_eq!(total_completes, rep.completes.len() as u32 + rep.bad_reports);
    }
}

#[test]
fn equal_sources_with_latency_do_not_take_chunks_from_each_other_forever() {
    // Each fetch waits 300 ms for its first byte: early rate estimates look slow.
    let mut a = src(300);
    a.latency_ms = 300;
    let mut b = src(300);
    b.latency_ms = 300;
    let total = 19 * 131_072;
    let rep = simulate(13, cfg(131_072), total, &[], &[a, b], 120_000);
    assert!(rep.finished_ms.is_some(), "{rep:?}");
    let fetches: u32 = rep.fetches_per_source.iter().sum();
    // At most one takeover per chunk.
    assert!(fetches <= 2 * 19, "{fetches} fetches for 19 chunks");
    assert!(rep.completes.iter().all(|&n| n == 1));
}

/// Default settings (automatic chunk size, spans by measured speed) reach the sources'
/// summed bandwidth: sources of 20, 10 and 5 MB/s with a 5 ms first-byte latency on
/// archives from 100 MB to 100 GB finish within 5 % of total/sum.
#[test]
fn default_settings_reach_the_summed_bandwidth_from_100_mb_to_100_gb() {
    // bytes per ms: 20, 10 and 5 MB/s.
    let speeds = [20_000u64, 10_000, 5_000];
    let sum: u64 = speeds.iter().sum();
    for (i, &total) in [
        100_000_000u64,
        167_000_000,
        500_000_000,
        5_000_000_000,
        100_000_000_000,
    ]
    .iter()
    .enumerate()
    {
        let sources: Vec<SimSource> = speeds
            .iter()
            .map(|&b| SimSource {
                latency_ms: 5,
                ..src(b)
            })
            .collect();
        let chunk = auto_chunk_size(total, sources.len());
        let mut c = cfg(chunk);
        c.stall_timeout_ms = 30_000;
        let ideal_ms = total / sum;
        let rep = simulate(
            11 + i as u64,
            c,
            total,
            &[],
            &sources,
            ideal_ms * 2 + 10_000,
        );
        let took = rep.finished_ms.expect("finishes");
        let fraction = ideal_ms as f64 / took as f64;
        // Baseline in the same run: the former default, 64 MiB chunks, one per request.
        let mut old = cfg(64 << 20);
        old.max_span_chunks = 1;
        let base = simulate(
            11 + i as u64,
            old,
            total,
            &[],
            &sources,
            ideal_ms * 4 + 60_000,
        );
        let base_fraction = ideal_ms as f64 / base.finished_ms.expect("baseline finishes") as f64;
        eprintln!(
            "{total} bytes, chunk {chunk}: {took} ms vs ideal {ideal_ms} ms = {fraction:.3} of the cap \
             ({:?} requests); 64 MiB per request: {base_fraction:.3}",
            rep.fetches_per_source
        );
        assert!(fraction >= 0.95, "{total} bytes: {fraction:.3} of the cap");
        assert!(rep.completes.iter().all(|&n| n == 1));
    }
}

#[test]
fn auto_chunk_size_is_a_power_of_two_within_bounds() {
    for total in [0u64, 1, 4096, 1 << 20, 167_000_000, 1 << 40] {
        for n in 0..8 {
            let c = auto_chunk_size(total, n);
            assert!(
                c.is_power_of_two() && (AUTO_CHUNK_MIN_BYTES..=AUTO_CHUNK_MAX_BYTES).contains(&c)
            );
        }
    }
    assert_eq!(auto_chunk_size(167_000_000, 3), 1 << 20);
    assert_eq!(auto_chunk_size(100_000_000_000, 3), 64 << 20);
}

/// The audit's I/O over modelled sources: chunk `c` as source `s` serves it is
/// `sha256(c, lie)`, `lie` true only for the liar's bad chunk; a range's digest is taken
/// over its chunks' contents (a stand-in for their bytes).
struct SimAudit<'a> {
    coord: &'a Coordinator,
    liar: u32,
    lie_chunk: u32,
}

impl SimAudit<'_> {
    fn content(&self, source: Option<u32>, chunk: u32) -> [u8; 32] {
        use sha2::Digest as _;
        let lie = source == Some(self.liar) && chunk == self.lie_chunk;
        let mut h = sha2::Sha256::new();
        h.update(chunk.to_le_bytes());
        h.update([u8::from(lie)]);
        h.finalize().into()
    }
    fn range(&self, source: Option<u32>, first: u32, last: u32) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for c in first..=last {
            // The local copy holds each chunk as its server sent it.
            let s = source.or_else(|| self.coord.served_by(c).map(|s| s.0));
            h.update(self.content(s, c));
        }
        h.finalize().into()
    }
}

impl crate::solana::download::locate::AuditIo for SimAudit<'_> {
    async fn local_digest(&self, first: u32, last: u32) -> Option<[u8; 32]> {
        Some(self.range(None, first, last))
    }
    async fn remote_digest(
        &self,
        source: u32,
        first: u32,
        last: u32,
    ) -> Result<Option<[u8; 32]>, String> {
        Ok(Some(self.range(Some(source), first, last)))
    }
    async fn fetch_chunk(&self, source: u32, chunk: u32) -> Result<[u8; 32], String> {
        // The digest of one chunk's range, as the local side computes it.
        Ok(self.range(Some(source), chunk, chunk))
    }
    fn chunk_len(&self, chunk: u32) -> u64 {
        self.coord.chunk_span(chunk).1
    }
}

/// A 1 GiB archive from 3 sources, one of which lied in one chunk it served; the failure
/// is known only at the end (the accounts hash). Bisection by range digest finds the liar
/// for O(log n) digest queries and a couple of chunks; the walk (the baseline, same run)
/// fetches most of the archive again.
#[test]
fn bisection_finds_a_liar_for_log_n_queries_and_a_few_chunks_where_the_walk_refetches_all() {
    // 256 MiB, 1 GiB, 4 GiB: the digest queries grow by about one per doubling of chunks.
    let q: Vec<u32> = [28u32, 30, 32]
        .iter()
        .map(|&b| audit_one_liar((1u64 << b) + 12_345))
        .collect();
    assert!(q[0] <= q[1] && q[1] <= q[2], "{q:?}");
    assert!(q[2] <= q[0] + 2 * 4, "queries {q:?} for 16x the chunks");
}

/// Every source serves the local copy's bytes (an archive forged at every source): one
/// digest per source settles it; the walk (baseline, same run) fetches every chunk.
#[test]
fn sources_agreeing_by_digest_spare_the_walk() {
    use crate::solana::download::locate::{audit, AuditInput};
    let total = (1u64 << 28) + 5;
    let chunk = 4 << 20;
    let sources = [src(100_000), src(80_000), src(60_000)];
    let rep = simulate(6, cfg(chunk), total, &[], &sources, 600_000);
    let n = rep.served_by.len() as u32;
    let mut coord = Coordinator::new(cfg(chunk), total, &vec![true; n as usize]);
    for _ in &sources {
        coord.add_source();
    }
    coord.served_by = rep.served_by.clone();
    let io = SimAudit {
        coord: &coord,
        liar: u32::MAX,
        lie_chunk: u32::MAX,
    };
    let input = |bisect| AuditInput {
        chunks: n,
        fail_chunk: n - 1,
        placed: false,
        served_by: rep.served_by.iter().map(|s| s.map(|s| s.0)).collect(),
        live: vec![0, 1, 2],
        bisect,
    };
    let fast = futures_lite::future::block_on(audit(&io, &input(true)));
    let walk = futures_lite::future::block_on(audit(&io, &input(false)));
    assert!(fast.bad.is_empty() && walk.bad.is_empty());
    assert!(fast.cost.all_sources_agree);
    assert_eq!(fast.cost.digest_queries, 3);
    assert_eq!(fast.cost.chunk_fetches, 0);
    assert_eq!(walk.cost.chunk_fetches, n);
    assert!(walk.cost.bytes_refetched >= total);
}

fn audit_one_liar(total: u64) -> u32 {
    use crate::solana::download::locate::{audit, AuditInput};
    let chunk = 4 << 20;
    let sources = [src(100_000), src(80_000), src(60_000)];
    // The coordinator's own assignment: run the simulator and replay its servers.
    let rep = simulate(5, cfg(chunk), total, &[], &sources, 600_000);
    assert!(rep.finished_ms.is_some());
    let n = rep.served_by.len() as u32;
    let liar = 2u32;
    let served: Vec<u32> = (0..n)
        .filter(|&ch| rep.served_by[ch as usize] == Some(SourceId(liar)))
        .collect();
    assert!(served.len() >= 4, "the liar served {} chunks", served.len());
    let lie_chunk = served[served.len() / 2];
    let mut coord = Coordinator::new(cfg(chunk), total, &vec![true; n as usize]);
    for _ in &sources {
        coord.add_source();
    }
    coord.served_by = rep.served_by.clone();
    let io = SimAudit {
        coord: &coord,
        liar,
        lie_chunk,
    };
    let input = |bisect| AuditInput {
        chunks: n,
        fail_chunk: n - 1,
        placed: false,
        served_by: rep.served_by.iter().map(|s| s.map(|s| s.0)).collect(),
        live: vec![0, 1, 2],
        bisect,
    };
    let fast = futures_lite::future::block_on(audit(&io, &input(true)));
    let walk = futures_lite::future::block_on(audit(&io, &input(false)));
    let log2n = 32 - (n - 1).leading_zeros();
    println!(
        "{total} bytes, {n} chunks of {chunk} bytes, 3 sources, liar {liar} at chunk {lie_chunk}: \
         bisection {} bytes refetched ({} chunks) + {} digest queries; walk {} bytes ({} chunks)",
        fast.cost.bytes_refetched,
        fast.cost.chunk_fetches,
        fast.cost.digest_queries,
        walk.cost.bytes_refetched,
        walk.cost.chunk_fetches
    );
    for o in [&fast, &walk] {
        assert_eq!(o.liars, vec![(liar, lie_chunk)]);
        let bad: Vec<u32> = o.bad.iter().map(|(_, c)| *c).collect();
        assert_eq!(bad, served, "every chunk the liar served is fetched again");
    }
    assert!(fast.cost.bisected);
    // O(log n): at most two bisections (one source may hold the same bytes as the copy).
    assert!(
        fast.cost.digest_queries <= 2 * (1 + log2n),
        "{:?}",
        fast.cost
    );
    assert!(fast.cost.chunk_fetches <= 2, "{:?}", fast.cost);
    assert!(fast.cost.bytes_refetched <= 2 * chunk);
    // The baseline walks back from the end over every chunk not known to be the liar's.
    assert!(walk.cost.chunk_fetches >= n / 2, "{:?}", walk.cost);
    assert!(walk.cost.bytes_refetched >= total / 2);
    assert!(walk.cost.bytes_refetched >= 10 * fast.cost.bytes_refetched);
    fast.cost.digest_queries
}

/// Found by `catchup soak --pipeline solana-download --fault stall-mid-response` (seed
/// 1713846624039315080) on a machine whose disk was congested by other writers: both
/// sources were dropped as stalled while our own writes of their bytes waited on the
/// disk. A fetch that reports it is waiting on our disk keeps its source; one that goes
/// quiet without saying so is still failed at the stall timeout.
#[test]
fn seed_1713846624039315080_a_source_is_not_blamed_for_our_own_disk_wait() {
    for tell_waits in [true, false] {
        let mut c = cfg(100_000);
        c.stall_timeout_ms = 2_000;
        let mut coord = Coordinator::new(c, 1_000_000, &[]);
        let a = coord.add_source();
        let acts = coord.handle(
            0,
            Event::SourceReady {
                source: a,
                ranges: true,
            },
        );
        assert!(
            acts.iter()
                .any(|x| matches!(x, Action::Fetch { source, .. } if *source == a)),
            "{acts:?}"
        );
        coord.handle(
            100,
            Event::Progress {
                source: a,
                bytes: 1,
            },
        );
        // Ten seconds in which no byte arrives: the fetch waits on our disk.
        let mut blamed = false;
        for t in (350..=10_100).step_by(250) {
            if tell_waits {
                coord.handle(t, Event::LocalWait { source: a });
            }
            let acts = coord.handle(t + 100, Event::Tick);
            blamed |= acts
                .iter()
                .any(|x| matches!(x, Action::Cancel { source } if *source == a));
        }
        assert_eq!(blamed, !tell_waits, "tell_waits {tell_waits}");
        let st = coord.source_stats(a).unwrap();
        assert_eq!(st.failures_total > 0, !tell_waits, "{st:?}");
    }
}

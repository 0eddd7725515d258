//! The chunk coordinator: which source fetches which byte range of the archive, as a
//! sans-IO state machine.
//!
//! The archive is cut into chunks of `chunk_size_bytes` (the last one shorter). Events come
//! in ([`Event`]: a source is ready, bytes arrived, a chunk finished or failed, a finished
//! chunk was found bad, a tick) with the current time in milliseconds; actions come out
//! ([`Action`]: fetch this span from that source, cancel, drop a source, a chunk is complete,
//! the download is finished or cannot finish). The driver performs the actions on real
//! sockets and files; tests drive it with a seeded simulator in virtual time.
//!
//! Rules:
//! - pending chunks go out lowest index first (the contiguous prefix feeds the decoder);
//! - one fetch at a time per source, so a faster source simply comes back for more;
//! - a fetch spans consecutive pending chunks: one for a source not measured yet, else its
//!   speed's share of what is pending, halved (so spans shrink to one chunk at the end and
//!   no source holds a long tail), at most `max_span_chunks`;
//! - a fetch slower than `min_source_speed_bytes_per_s` (after `slow_grace_ms`) or failing
//!   counts as a failure of its source: the chunk goes back to pending, the source waits
//!   `backoff_base_ms * 2^(failures-1)` (capped) and is dropped after `max_failures`;
//! - a source that served a chunk later found bad is dropped at once;
//! - endgame: with nothing pending, an idle source takes over a chunk from a source that
//!   would need more than twice as long to finish it (the slow fetch is cancelled);
//! - a source without Range support fetches the whole file in one stream (span of all
//!   chunks from 0); it is only used when no ranged source is usable.

use std::collections::BTreeSet;

/// Index of a source in the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub u32);

/// Tunables; see the module docs.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// 0: automatic (the sync driver applies `auto_chunk_size`).
    pub chunk_size_bytes: u64,
    pub min_source_speed_bytes_per_s: u64,
    pub slow_grace_ms: u64,
    pub max_failures: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// A fetch that received nothing for this long fails.
    pub stall_timeout_ms: u64,
    /// Endgame: a running fetch is taken over only after it ran this long (its rate is known).
    pub endgame_min_age_ms: u64,
    /// Most chunks one ranged request may span (1: one request per chunk).
    pub max_span_chunks: u32,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            // Automatic (see `auto_chunk_size`); the driver picks the size before it
            // builds the coordinator, which needs a positive one.
            chunk_size_bytes: 0,
            min_source_speed_bytes_per_s: 0,
            slow_grace_ms: 5_000,
            max_failures: 4,
            backoff_base_ms: 500,
            backoff_max_ms: 30_000,
            stall_timeout_ms: 30_000,
            endgame_min_age_ms: 250,
            max_span_chunks: 1024,
        }
    }
}

/// Why a fetch failed (reported by the driver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// Connection error, bad status, wrong Content-Range, short body...
    Transport(String),
    /// Below the minimum speed (decided by the coordinator itself).
    Slow,
    /// Sent nothing for the stall timeout (decided by the coordinator itself).
    Stalled,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A source of the chosen group can be used; `ranges`: it honours Range.
    SourceReady { source: SourceId, ranges: bool },
    /// `bytes` more bytes of the current fetch of `source` arrived and were written.
    Progress { source: SourceId, bytes: u64 },
    /// `chunk` was received completely from `source` and written.
    ChunkDone { source: SourceId, chunk: u32 },
    /// The current fetch of `source` failed; its unfinished chunks go back to pending.
    FetchFailed {
        source: SourceId,
        reason: FailReason,
    },
    /// A finished chunk was found to hold wrong bytes; `source` served it.
    ChunkBad { source: SourceId, chunk: u32 },
    /// The current fetch of `source` is waiting on our own disk (a write of what it
    /// received has not completed): the source is not at fault, so its stall clock
    /// restarts instead of running.
    LocalWait { source: SourceId },
    /// Time passes.
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Fetch chunks `first..=last` from `source`; `whole_file`: the source has no Range
    /// support and streams from byte 0 (bytes of chunks already done are discarded).
    Fetch {
        source: SourceId,
        first: u32,
        last: u32,
        offset: u64,
        len: u64,
        whole_file: bool,
    },
    /// Abort the current fetch of `source` (its result would be discarded).
    Cancel { source: SourceId },
    /// Stop using `source`.
    DropSource { source: SourceId, reason: String },
    /// `chunk` is finished: persist the bitmap.
    ChunkComplete { chunk: u32 },
    /// Every chunk is done.
    Finished,
    /// No usable source is left and chunks remain.
    Stuck { chunks_left: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SourceState {
    NotReady,
    Idle,
    Busy {
        first: u32,
        last: u32,
        next: u32,
        started_ms: u64,
        last_bytes_ms: u64,
        bytes: u64,
    },
    Backoff {
        until_ms: u64,
    },
    Dropped {
        reason: String,
    },
}

/// What the coordinator knows of a source; read-only view for progress reports.
#[derive(Clone, Debug)]
pub struct SourceStats {
    pub ranges: bool,
    pub bytes_total: u64,
    pub chunks_done: u32,
    pub failures_total: u32,
    pub consecutive_failures: u32,
    /// Smoothed throughput over finished fetches, bytes/s (0 until one finished).
    pub speed_bytes_per_s: f64,
    pub dropped: Option<String>,
    pub busy: bool,
}

struct Source {
    state: SourceState,
    stats: SourceStats,
}

/// The coordinator. See the module docs.
pub struct Coordinator {
    cfg: CoordinatorConfig,
    total_bytes: u64,
    chunks: u32,
    done: Vec<bool>,
    done_count: u32,
    /// Which source is fetching each chunk (ranged fetches only).
    owner: Vec<Option<SourceId>>,
    /// Which source served each finished chunk.
    served_by: Vec<Option<SourceId>>,
    pending: BTreeSet<u32>,
    /// Chunks already taken over once in the endgame.
    taken_over: Vec<bool>,
    sources: Vec<Source>,
    finished_reported: bool,
    stuck_reported: bool,
}

/// Smallest and largest automatic chunk size.
pub const AUTO_CHUNK_MIN_BYTES: u64 = 1 << 20;
pub const AUTO_CHUNK_MAX_BYTES: u64 = 64 << 20;

/// The chunk size used when none is given: about 64 chunks per source (a power of two
/// between 1 and 64 MiB), so the last chunk of the slowest source is a small part of the
/// whole. Chunks are the unit of resume and endgame, not of requests: a measured source
/// fetches a span of many consecutive chunks in one request (see `span_chunks`), so small
/// chunks cost no extra round trips.
pub fn auto_chunk_size(total_bytes: u64, sources: usize) -> u64 {
    let per = total_bytes / (sources.max(1) as u64 * 64);
    let pow = if per <= 1 {
        1
    } else {
        1u64 << (63 - per.leading_zeros())
    };
    pow.clamp(AUTO_CHUNK_MIN_BYTES, AUTO_CHUNK_MAX_BYTES)
}

/// Number of chunks of a file of `total_bytes` cut in `chunk_size_bytes`.
pub fn chunk_count(total_bytes: u64, chunk_size_bytes: u64) -> u64 {
    total_bytes.div_ceil(chunk_size_bytes.max(1))
}

impl Coordinator {
    /// A coordinator for a file of `total_bytes`; `done` is the bitmap from the journal
    /// (empty for a fresh download; otherwise one flag per chunk).
    pub fn new(cfg: CoordinatorConfig, total_bytes: u64, done: &[bool]) -> Coordinator {
        assert!(cfg.chunk_size_bytes > 0, "chunk size must be positive");
        let n = chunk_count(total_bytes, cfg.chunk_size_bytes);
        assert!(n <= u32::MAX as u64, "too many chunks");
        let chunks = n as u32;
        let done: Vec<bool> = if done.len() == chunks as usize {
            done.to_vec()
        } else {
            vec![false; chunks as usize]
        };
        let pending = (0..chunks).filter(|&i| !done[i as usize]).collect();
        let done_count = done.iter().filter(|d| **d).count() as u32;
        Coordinator {
            cfg,
            total_bytes,
            chunks,
            owner: vec![None; chunks as usize],
            served_by: vec![None; chunks as usize],
            done,
            done_count,
            pending,
            taken_over: vec![false; chunks as usize],
            sources: Vec::new(),
            finished_reported: false,
            stuck_reported: false,
        }
    }

    /// Register a source (not yet ready); returns its id.
    pub fn add_source(&mut self) -> SourceId {
        let id = SourceId(self.sources.len() as u32);
        self.sources.push(Source {
            state: SourceState::NotReady,
            stats: SourceStats {
                ranges: false,
                bytes_total: 0,
                chunks_done: 0,
                failures_total: 0,
                consecutive_failures: 0,
                speed_bytes_per_s: 0.0,
                dropped: None,
                busy: false,
            },
        });
        id
    }

    pub fn chunk_count(&self) -> u32 {
        self.chunks
    }
    pub fn chunks_done(&self) -> u32 {
        self.done_count
    }
    pub fn done_bitmap(&self) -> &[bool] {
        &self.done
    }
    pub fn is_done(&self, chunk: u32) -> bool {
        self.done.get(chunk as usize).copied().unwrap_or(false)
    }
    pub fn served_by(&self, chunk: u32) -> Option<SourceId> {
        self.served_by.get(chunk as usize).copied().flatten()
    }
    pub fn source_stats(&self, s: SourceId) -> Option<&SourceStats> {
        self.sources.get(s.0 as usize).map(|x| &x.stats)
    }
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }
    /// Byte offset and length of `chunk`.
    pub fn chunk_span(&self, chunk: u32) -> (u64, u64) {
        let off = chunk as u64 * self.cfg.chunk_size_bytes;
        (
            off,
            self.cfg
                .chunk_size_bytes
                .min(self.total_bytes.saturating_sub(off)),
        )
    }
    /// Bytes of the contiguous prefix of finished chunks.
    pub fn contiguous_prefix_bytes(&self) -> u64 {
        let n = self.done.iter().take_while(|d| **d).count() as u32;
        if n == self.chunks {
            self.total_bytes
        } else {
            n as u64 * self.cfg.chunk_size_bytes
        }
    }
    pub fn bytes_done(&self) -> u64 {
        (0..self.chunks)
            .filter(|&c| self.done[c as usize])
            .map(|c| self.chunk_span(c).1)
            .sum()
    }

    /// Feed one event at time `now_ms`; returns the actions to perform, in order.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::SourceReady { source, ranges } => {
                if let Some(s) = self.sources.get_mut(source.0 as usize) {
                    if s.state == SourceState::NotReady {
                        s.state = SourceState::Idle;
                        s.stats.ranges = ranges;
                    }
                }
            }
            Event::Progress { source, bytes } => {
                if let Some(s) = self.sources.get_mut(source.0 as usize) {
                    if let SourceState::Busy {
                        bytes: b,
                        last_bytes_ms,
                        ..
                    } = &mut s.state
                    {
                        *b += bytes;
                        *last_bytes_ms = now_ms;
                        s.stats.bytes_total += bytes;
                    }
                }
            }
            Event::LocalWait { source } => {
                if let Some(SourceState::Busy { last_bytes_ms, .. }) = self
                    .sources
                    .get_mut(source.0 as usize)
                    .map(|s| &mut s.state)
                {
                    *last_bytes_ms = now_ms;
                }
            }
            Event::ChunkDone { source, chunk } => {
                self.on_chunk_done(now_ms, source, chunk, &mut out)
            }
            Event::FetchFailed { source, reason } => {
                self.fail_source(now_ms, source, reason, &mut out)
            }
            Event::ChunkBad { source, chunk } => {
                if (chunk as usize) < self.done.len() && self.done[chunk as usize] {
                    self.done[chunk as usize] = false;
                    self.done_count -= 1;
                    self.served_by[chunk as usize] = None;
                    self.pending.insert(chunk);
                    self.finished_reported = false;
                }
                let reason = if (chunk as usize) < self.done.len() {
                    format!("served bad bytes (chunk {chunk} disagrees with other sources)")
                } else {
                    "served bad bytes (disagrees with other sources)".to_string()
                };
                self.drop_source(source, reason, &mut out);
            }
            Event::Tick => self.check_slow(now_ms, &mut out),
        }
        self.wake_backoffs(now_ms);
        self.assign(now_ms, &mut out);
        self.endgame(now_ms, &mut out);
        self.check_end(&mut out);
        out
    }

    fn on_chunk_done(&mut self, now_ms: u64, source: SourceId, chunk: u32, out: &mut Vec<Action>) {
        let Some(s) = self.sources.get_mut(source.0 as usize) else {
            return;
        };
        let SourceState::Busy {
            first,
            last,
            next,
            started_ms,
            bytes,
            ..
        } = s.state.clone()
        else {
            return;
        };
        if chunk != next || chunk < first || chunk > last {
            return;
        }
        if !self.done[chunk as usize] {
            self.done[chunk as usize] = true;
            self.done_count += 1;
            self.served_by[chunk as usize] = Some(source);
            self.pending.remove(&chunk);
            s.stats.chunks_done += 1;
            out.push(Action::ChunkComplete { chunk });
        }
        if self.owner[chunk as usize] == Some(source) {
            self.owner[chunk as usize] = None;
        }
        s.stats.consecutive_failures = 0;
        let next_undone = (chunk + 1..=last).find(|&c| !self.done[c as usize]);
        let s = &mut self.sources[source.0 as usize];
        if next_undone.is_none() {
            let secs = (now_ms.saturating_sub(started_ms)).max(1) as f64 / 1000.0;
            let speed = bytes as f64 / secs;
            s.stats.speed_bytes_per_s = if s.stats.speed_bytes_per_s == 0.0 {
                speed
            } else {
                0.5 * s.stats.speed_bytes_per_s + 0.5 * speed
            };
            s.state = SourceState::Idle;
            s.stats.busy = false;
        } else if let SourceState::Busy { next, .. } = &mut s.state {
            *next = next_undone.unwrap_or(last);
        }
    }

    fn release_chunks(&mut self, source: SourceId) {
        let Some(s) = self.sources.get_mut(source.0 as usize) else {
            return;
        };
        if let SourceState::Busy { next, last, .. } = s.state {
            for c in next..=last {
                if !self.done[c as usize] {
                    self.pending.insert(c);
                }
                if self.owner[c as usize] == Some(source) {
                    self.owner[c as usize] = None;
                }
            }
        }
    }

    fn fail_source(
        &mut self,
        now_ms: u64,
        source: SourceId,
        reason: FailReason,
        out: &mut Vec<Action>,
    ) {
        if !matches!(
            self.sources.get(source.0 as usize).map(|s| &s.state),
            Some(SourceState::Busy { .. })
        ) {
            return;
        }
        self.release_chunks(source);
        let s = &mut self.sources[source.0 as usize];
        s.stats.busy = false;
        s.stats.failures_total += 1;
        s.stats.consecutive_failures += 1;
        if s.stats.consecutive_failures >= self.cfg.max_failures {
            let why = match reason {
                FailReason::Transport(t) => {
                    format!("failed {} times, last: {t}", s.stats.consecutive_failures)
                }
                FailReason::Slow => format!(
                    "slower than the minimum speed {} times",
                    s.stats.consecutive_failures
                ),
                FailReason::Stalled => format!(
                    "sent nothing for {} ms {} times in a row (--io-timeout-ms)",
                    self.cfg.stall_timeout_ms, s.stats.consecutive_failures
                ),
            };
            self.drop_source(source, why, out);
            return;
        }
        let shift = (s.stats.consecutive_failures - 1).min(20);
        let wait = self
            .cfg
            .backoff_base_ms
            .saturating_mul(1u64 << shift)
            .min(self.cfg.backoff_max_ms);
        s.state = SourceState::Backoff {
            until_ms: now_ms + wait,
        };
    }

    fn drop_source(&mut self, source: SourceId, reason: String, out: &mut Vec<Action>) {
        if source.0 as usize >= self.sources.len() {
            return;
        }
        if matches!(
            self.sources[source.0 as usize].state,
            SourceState::Dropped { .. }
        ) {
            return;
        }
        if matches!(
            self.sources[source.0 as usize].state,
            SourceState::Busy { .. }
        ) {
            self.release_chunks(source);
            out.push(Action::Cancel { source });
        }
        let s = &mut self.sources[source.0 as usize];
        s.state = SourceState::Dropped {
            reason: reason.clone(),
        };
        s.stats.busy = false;
        s.stats.dropped = Some(reason.clone());
        out.push(Action::DropSource { source, reason });
    }

    fn check_slow(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        for i in 0..self.sources.len() {
            let SourceState::Busy {
                started_ms,
                last_bytes_ms,
                bytes,
                ..
            } = self.sources[i].state
            else {
                continue;
            };
            let age_ms = now_ms.saturating_sub(started_ms);
            let stalled =
                now_ms.saturating_sub(last_bytes_ms.max(started_ms)) >= self.cfg.stall_timeout_ms;
            let slow = self.cfg.min_source_speed_bytes_per_s > 0
                && age_ms >= self.cfg.slow_grace_ms
                && (bytes as f64) / (age_ms as f64 / 1000.0)
                    < self.cfg.min_source_speed_bytes_per_s as f64;
            if stalled || slow {
                out.push(Action::Cancel {
                    source: SourceId(i as u32),
                });
                let reason = if stalled {
                    FailReason::Stalled
                } else {
                    FailReason::Slow
                };
                self.fail_source(now_ms, SourceId(i as u32), reason, out);
            }
        }
    }

    fn wake_backoffs(&mut self, now_ms: u64) {
        for s in &mut self.sources {
            if let SourceState::Backoff { until_ms } = s.state {
                if now_ms >= until_ms {
                    s.state = SourceState::Idle;
                }
            }
        }
    }

    fn usable_ranged(&self) -> bool {
        self.sources.iter().any(|s| {
            s.stats.ranges
                && !matches!(s.state, SourceState::Dropped { .. } | SourceState::NotReady)
        })
    }

    fn idle_by_speed(&self) -> Vec<SourceId> {
        let mut idle: Vec<SourceId> = (0..self.sources.len())
            .filter(|&i| self.sources[i].state == SourceState::Idle)
            .map(|i| SourceId(i as u32))
            .collect();
        // Unmeasured sources first (they get probed), then fastest first.
        idle.sort_by(|a, b| {
            let sa = self.sources[a.0 as usize].stats.speed_bytes_per_s;
            let sb = self.sources[b.0 as usize].stats.speed_bytes_per_s;
            let ka = if sa == 0.0 { f64::INFINITY } else { sa };
            let kb = if sb == 0.0 { f64::INFINITY } else { sb };
            kb.partial_cmp(&ka).unwrap_or(std::cmp::Ordering::Equal)
        });
        idle
    }

    fn any_whole_stream_busy(&self) -> bool {
        self.sources
            .iter()
            .any(|s| !s.stats.ranges && matches!(s.state, SourceState::Busy { .. }))
    }

    fn assign(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let ranged_usable = self.usable_ranged();
        for sid in self.idle_by_speed() {
            let Some(&first_pending) = self.pending.iter().next() else {
                return;
            };
            let ranges = self.sources[sid.0 as usize].stats.ranges;
            if ranges {
                let c = first_pending;
                let want = self.span_chunks(sid);
                let mut last = c;
                while last + 1 - c < want && self.pending.contains(&(last + 1)) {
                    last += 1;
                }
                for k in c..=last {
                    self.pending.remove(&k);
                    self.owner[k as usize] = Some(sid);
                }
                let (offset, _) = self.chunk_span(c);
                let (last_off, last_len) = self.chunk_span(last);
                let len = last_off + last_len - offset;
                self.sources[sid.0 as usize].state = SourceState::Busy {
                    first: c,
                    last,
                    next: c,
                    started_ms: now_ms,
                    last_bytes_ms: now_ms,
                    bytes: 0,
                };
                self.sources[sid.0 as usize].stats.busy = true;
                out.push(Action::Fetch {
                    source: sid,
                    first: c,
                    last,
                    offset,
                    len,
                    whole_file: false,
                });
            } else if !ranged_usable && !self.any_whole_stream_busy() {
                // One stream from byte 0 over every chunk; done chunks are skipped by the driver.
                let last = self.chunks - 1;
                for c in 0..=last {
                    self.pending.remove(&c);
                }
                self.sources[sid.0 as usize].state = SourceState::Busy {
                    first: 0,
                    last,
                    next: self.first_not_done_from(0, last),
                    started_ms: now_ms,
                    last_bytes_ms: now_ms,
                    bytes: 0,
                };
                self.sources[sid.0 as usize].stats.busy = true;
                out.push(Action::Fetch {
                    source: sid,
                    first: 0,
                    last,
                    offset: 0,
                    len: self.total_bytes,
                    whole_file: true,
                });
            }
        }
    }

    /// How many consecutive chunks `sid` fetches in its next request: its share of what is
    /// pending by measured speed, halved, so that its span ends well before the others
    /// finish the rest (spans shrink to one chunk towards the end, where the endgame
    /// works per chunk). An unmeasured source fetches one chunk (its probe).
    fn span_chunks(&self, sid: SourceId) -> u32 {
        let me = self.sources[sid.0 as usize].stats.speed_bytes_per_s;
        if me <= 0.0 {
            return 1;
        }
        let sum: f64 = self
            .sources
            .iter()
            .filter(|s| {
                s.stats.ranges
                    && !matches!(s.state, SourceState::Dropped { .. } | SourceState::NotReady)
            })
            .map(|s| {
                if s.stats.speed_bytes_per_s > 0.0 {
                    s.stats.speed_bytes_per_s
                } else {
                    me
                }
            })
            .sum::<f64>()
            .max(me);
        let share = self.pending.len() as f64 * me / sum / 2.0;
        (share.floor() as u32).clamp(1, self.cfg.max_span_chunks.max(1))
    }

    fn first_not_done_from(&self, from: u32, last: u32) -> u32 {
        (from..=last)
            .find(|&c| !self.done[c as usize])
            .unwrap_or(last)
    }

    fn endgame(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if !self.pending.is_empty() {
            return;
        }
        for sid in self.idle_by_speed() {
            let me = &self.sources[sid.0 as usize].stats;
            if !me.ranges || me.speed_bytes_per_s <= 0.0 {
                continue;
            }
            let my_speed = me.speed_bytes_per_s;
            // The busy ranged fetch with the longest expected remaining time.
            let mut worst: Option<(SourceId, u32, f64)> = None;
            for (i, s) in self.sources.iter().enumerate() {
                let SourceState::Busy {
                    first,
                    last,
                    started_ms,
                    bytes,
                    ..
                } = s.state
                else {
                    continue;
                };
                // Each chunk is taken over at most once (no ping-pong between sources whose
                // early rate estimates look slow), and only from a source measurably slower.
                if first != last || !s.stats.ranges || self.taken_over[first as usize] {
                    continue;
                }
                if s.stats.speed_bytes_per_s > 0.0 && my_speed < 2.0 * s.stats.speed_bytes_per_s {
                    continue;
                }
                let (_, len) = self.chunk_span(first);
                let age_s = (now_ms.saturating_sub(started_ms)).max(1) as f64 / 1000.0;
                let rate = bytes as f64 / age_s;
                let left = len.saturating_sub(bytes) as f64;
                let eta_s = if rate > 0.0 {
                    left / rate
                } else {
                    f64::INFINITY
                };
                if worst.is_none_or(|w| eta_s > w.2) {
                    worst = Some((SourceId(i as u32), first, eta_s));
                }
            }
            let Some((slow, chunk, eta_s)) = worst else {
                return;
            };
            let (_, len) = self.chunk_span(chunk);
            let mine_s = len as f64 / my_speed;
            // Only take over when clearly better, and only after the slow fetch had a chance
            // to show its rate (one grace period).
            let SourceState::Busy { started_ms, .. } = self.sources[slow.0 as usize].state else {
                continue;
            };
            if eta_s > 2.0 * mine_s
                && now_ms.saturating_sub(started_ms) >= self.cfg.endgame_min_age_ms
                && !std::mem::replace(&mut self.taken_over[chunk as usize], true)
            {
                out.push(Action::Cancel { source: slow });
                let s = &mut self.sources[slow.0 as usize];
                s.state = SourceState::Idle;
                s.stats.busy = false;
                self.owner[chunk as usize] = Some(sid);
                let (offset, len) = self.chunk_span(chunk);
                self.sources[sid.0 as usize].state = SourceState::Busy {
                    first: chunk,
                    last: chunk,
                    next: chunk,
                    started_ms: now_ms,
                    last_bytes_ms: now_ms,
                    bytes: 0,
                };
                self.sources[sid.0 as usize].stats.busy = true;
                out.push(Action::Fetch {
                    source: sid,
                    first: chunk,
                    last: chunk,
                    offset,
                    len,
                    whole_file: false,
                });
            }
        }
    }

    fn check_end(&mut self, out: &mut Vec<Action>) {
        if self.done_count == self.chunks {
            if !self.finished_reported {
                self.finished_reported = true;
                out.push(Action::Finished);
            }
            return;
        }
        let alive = self
            .sources
            .iter()
            .any(|s| !matches!(s.state, SourceState::Dropped { .. }));
        let all_known = self
            .sources
            .iter()
            .all(|s| s.state != SourceState::NotReady);
        if !alive && all_known && !self.stuck_reported {
            self.stuck_reported = true;
            out.push(Action::Stuck {
                chunks_left: self.chunks - self.done_count,
            });
        }
    }

    /// Mark a source unusable before it was ever ready (probe failed, other group).
    pub fn reject_source(&mut self, source: SourceId, reason: String) -> Vec<Action> {
        let mut out = Vec::new();
        self.drop_source(source, reason, &mut out);
        self.check_end(&mut out);
        out
    }
}

#[cfg(test)]
#[path = "coordinator_sim.rs"]
mod sim;

//! Per-shard counters and gauges, cheap to update from a shard.
//!
//! Each metric holds one cache-line-padded atomic per shard slot, so shards never write
//! the same cache line; an update is one relaxed atomic add/store. The registry's lock is
//! taken only to register a metric (once, at start-up or first use) and to render.
//!
//! ```
//! use catchup_shards::{metrics, ShardId};
//! let fetched = metrics::counter("catchup_doc_example_bytes_total", "Bytes fetched.");
//! fetched.add(ShardId(0), 4096);
//! assert!(metrics::render_prometheus().contains("catchup_doc_example_bytes_total{shard=\"0\"} 4096"));
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::ShardId;

/// Number of per-shard slots in each metric; shards with a higher id share the last slot.
pub const METRIC_SLOTS: usize = 256;

#[repr(align(64))]
#[derive(Default)]
struct Slot(AtomicU64);

/// Kind of a metric, as Prometheus names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        }
    }
}

struct Cell {
    name: &'static str,
    help: &'static str,
    kind: MetricKind,
    slots: Box<[Slot]>,
}

impl Cell {
    #[inline]
    fn slot(&self, shard: ShardId) -> &AtomicU64 {
        &self.slots[shard.0.min(METRIC_SLOTS - 1)].0
    }
}

/// A monotonically increasing per-shard count.
#[derive(Clone)]
pub struct Counter(Arc<Cell>);

impl Counter {
    #[inline]
    pub fn add(&self, shard: ShardId, v: u64) {
        self.0.slot(shard).fetch_add(v, Ordering::Relaxed);
    }
    #[inline]
    pub fn inc(&self, shard: ShardId) {
        self.add(shard, 1)
    }
    pub fn get(&self, shard: ShardId) -> u64 {
        self.0.slot(shard).load(Ordering::Relaxed)
    }
    /// Sum over all shards.
    pub fn total(&self) -> u64 {
        self.0
            .slots
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// A per-shard value that goes up and down.
#[derive(Clone)]
pub struct Gauge(Arc<Cell>);

impl Gauge {
    #[inline]
    pub fn set(&self, shard: ShardId, v: i64) {
        self.0.slot(shard).store(v as u64, Ordering::Relaxed);
    }
    #[inline]
    pub fn add(&self, shard: ShardId, v: i64) {
        self.0.slot(shard).fetch_add(v as u64, Ordering::Relaxed);
    }
    pub fn get(&self, shard: ShardId) -> i64 {
        self.0.slot(shard).load(Ordering::Relaxed) as i64
    }
    /// Sum over all shards.
    pub fn total(&self) -> i64 {
        self.0
            .slots
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed) as i64)
            .sum()
    }
}

struct Registry {
    cells: Mutex<Vec<Arc<Cell>>>,
    shards: AtomicUsize,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry {
        cells: Mutex::new(Vec::new()),
        shards: AtomicUsize::new(1),
    })
}

/// Set how many shards the renderers list (the runtime calls this when it starts).
pub fn set_shard_count(shards: usize) {
    registry()
        .shards
        .store(shards.clamp(1, METRIC_SLOTS), Ordering::Relaxed);
}

fn get_or_register(name: &'static str, help: &'static str, kind: MetricKind) -> Arc<Cell> {
    let mut cells = registry().cells.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = cells.iter().find(|c| c.name == name) {
        assert_eq!(c.kind, kind, "metric {name} registered as two kinds");
        return c.clone();
    }
    let c = Arc::new(Cell {
        name,
        help,
        kind,
        slots: (0..METRIC_SLOTS).map(|_| Slot::default()).collect(),
    });
    cells.push(c.clone());
    c
}

/// The counter called `name` (registered on first use; later calls return the same one).
pub fn counter(name: &'static str, help: &'static str) -> Counter {
    Counter(get_or_register(name, help, MetricKind::Counter))
}

/// The gauge called `name` (registered on first use).
pub fn gauge(name: &'static str, help: &'static str) -> Gauge {
    Gauge(get_or_register(name, help, MetricKind::Gauge))
}

/// One metric's values at one moment.
#[derive(Clone, Debug)]
pub struct MetricSnapshot {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    /// Value per shard, index = shard id.
    pub per_shard: Vec<i128>,
}

impl MetricSnapshot {
    pub fn total(&self) -> i128 {
        self.per_shard.iter().sum()
    }
}

/// Every registered metric, sorted by name.
pub fn snapshot() -> Vec<MetricSnapshot> {
    let shards = registry().shards.load(Ordering::Relaxed);
    let cells = registry()
        .cells
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut out: Vec<MetricSnapshot> = cells
        .iter()
        .map(|c| MetricSnapshot {
            name: c.name,
            help: c.help,
            kind: c.kind,
            per_shard: c.slots[..shards]
                .iter()
                .map(|s| {
                    let v = s.0.load(Ordering::Relaxed);
                    match c.kind {
                        MetricKind::Counter => v as i128,
                        MetricKind::Gauge => v as i64 as i128,
                    }
                })
                .collect(),
        })
        .collect();
    out.sort_by_key(|m| m.name);
    out
}

/// Prometheus text exposition (version 0.0.4) of every metric, one sample per shard
/// with a `shard` label.
pub fn render_prometheus() -> String {
    let mut s = String::new();
    for m in snapshot() {
        let _ = writeln!(s, "# HELP {} {}", m.name, m.help.replace('\n', " "));
        let _ = writeln!(s, "# TYPE {} {}", m.name, m.kind.as_str());
        for (shard, v) in m.per_shard.iter().enumerate() {
            let _ = writeln!(s, "{}{{shard=\"{shard}\"}} {v}", m.name);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render() {
        set_shard_count(3);
        let c = counter("catchup_test_things_total", "Things.");
        c.add(ShardId(2), 5);
        c.inc(ShardId(0));
        assert_eq!(counter("catchup_test_things_total", "x").total(), 6);
        let g = gauge("catchup_test_queue_depth", "Depth.");
        g.set(ShardId(1), -3);
        g.add(ShardId(1), 10);
        assert_eq!(g.get(ShardId(1)), 7);
        // Out-of-range shard ids land in the last slot instead of panicking.
        c.inc(ShardId(100_000));
        let text = render_prometheus();
        assert!(text.contains("# TYPE catchup_test_things_total counter"));
        assert!(text.contains("catchup_test_things_total{shard=\"2\"} 5"));
        assert!(text.contains("catchup_test_queue_depth{shard=\"1\"} 7"));
    }
}

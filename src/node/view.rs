//! A picture of the node: what the status page (`/` of the admin endpoint) and
//! `catchup status --watch` show, computed from the metrics and the status document.
//!
//! A sampler ([`Sampler`], started with the admin endpoint) keeps a bounded ring of
//! samples (every stage counter per shard, every phase's done count); from it `/status`
//! gains the sections
//! * `throughput`: per shard, per pipeline stage, items/s and bytes/s over the last minutes;
//! * `phases`: per phase, done / total, rate and ETA;
//! * `peers`: every peer or source with its scores, rates, failures and lies;
//! * `placement`: shard ↔ core ↔ NIC queue (the tuning plan, when one was given).
//!
//! [`render_text`] draws the same on a terminal; [`watch`] redraws it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::stages;

/// Interval between samples.
pub const SAMPLE_EVERY_MS: u64 = 2_000;
/// Samples kept: five minutes at [`SAMPLE_EVERY_MS`].
pub const HISTORY_SAMPLES: usize = 150;
/// Window of the rates behind each ETA.
pub const ETA_WINDOW_MS: u64 = 30_000;

/// One phase of a sync at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseSample {
    pub name: String,
    pub unit: &'static str,
    pub done: u64,
    pub total: Option<u64>,
    pub complete: bool,
}

/// Everything the ring keeps of one moment.
#[derive(Clone, Debug)]
struct Sample {
    t_ms: u64,
    /// Per stage (index into [`stages::all_stages`]): (items, bytes) per shard.
    stages: Vec<(Vec<u64>, Vec<u64>)>,
    phases: Vec<PhaseSample>,
}

struct History {
    started: Instant,
    samples: VecDeque<Sample>,
}

fn history() -> &'static Mutex<History> {
    static H: OnceLock<Mutex<History>> = OnceLock::new();
    H.get_or_init(|| {
        Mutex::new(History {
            started: Instant::now(),
            samples: VecDeque::with_capacity(HISTORY_SAMPLES),
        })
    })
}

fn shard_count() -> usize {
    catchup_shards::metrics::snapshot()
        .first()
        .map(|m| m.per_shard.len())
        .unwrap_or(1)
        .max(1)
}

/// The phases of whatever runs, read from the status document's sections.
pub fn phases_of(status: &Value) -> Vec<PhaseSample> {
    let mut out = Vec::new();
    let Some(doc) = status.as_object() else {
        return out;
    };
    // Ethereum: the sum over the shards' engines.
    let mut eth: Option<[u64; 5]> = None;
    let mut complete = [true; 4];
    for (k, v) in doc {
        if !(k.starts_with("eth_sync_shard_") || k.starts_with("ethsync_shard_")) {
            continue;
        }
        let p = &v["progress"];
        let s = &v["status"];
        let g = |f: &str| p[f].as_u64().unwrap_or(0);
        let e = eth.get_or_insert([0; 5]);
        e[0] = e[0].max(g("headers_total"));
        e[1] += g("headers_downloaded");
        e[2] += g("bodies_downloaded");
        e[3] += g("receipts_downloaded");
        e[4] += g("state_nodes_downloaded") + g("healed_nodes");
        for (i, f) in [
            "headers_complete",
            "bodies_complete",
            "receipts_complete",
            "state_complete",
        ]
        .iter()
        .enumerate()
        {
            complete[i] &= s[f].as_bool().unwrap_or(false);
        }
    }
    if let Some(e) = eth {
        let total = (e[0] > 0).then_some(e[0]);
        for (i, name) in ["eth headers", "eth bodies", "eth receipts"]
            .iter()
            .enumerate()
        {
            out.push(PhaseSample {
                name: name.to_string(),
                unit: "blocks",
                done: e[i + 1],
                total,
                complete: complete[i],
            });
        }
        out.push(PhaseSample {
            name: "eth state".into(),
            unit: "nodes",
            done: e[4],
            total: None,
            complete: complete[3],
        });
    }
    if let Some(d) = doc.get("snapshot_download") {
        if let Some(f) = d.get("finished") {
            let size = f["size_bytes"].as_u64().unwrap_or(0);
            out.push(PhaseSample {
                name: "snapshot download".into(),
                unit: "bytes",
                done: if f["complete"].as_bool() == Some(true) {
                    size
                } else {
                    f["bytes_fetched"].as_u64().unwrap_or(0)
                },
                total: Some(size),
                complete: f["complete"].as_bool().unwrap_or(false),
            });
        } else if let Some(done) = d["bytes_done"].as_u64() {
            let total = d["bytes_total"].as_u64().filter(|t| *t > 0);
            out.push(PhaseSample {
                name: "snapshot download".into(),
                unit: "bytes",
                done,
                total,
                complete: total.is_some_and(|t| done >= t),
            });
        }
    }
    if let Some(r) = doc.get("repair") {
        let (from, tip) = (r["snapshot_slot"].as_u64(), r["tip_slot"].as_u64());
        let left = r["slots_remaining"].as_u64();
        if let (Some(from), Some(tip), Some(left)) = (from, tip, left) {
            let gap = tip.saturating_sub(from);
            out.push(PhaseSample {
                name: "shred repair".into(),
                unit: "slots",
                done: gap.saturating_sub(left),
                total: Some(gap),
                complete: left == 0,
            });
        }
    }
    out
}

/// Take one sample now (the sampler calls this every [`SAMPLE_EVERY_MS`]).
pub fn sample_now() {
    let shards = shard_count();
    let per_shard = |c: &catchup_shards::metrics::Counter| -> Vec<u64> {
        (0..shards)
            .map(|s| c.get(catchup_shards::ShardId(s)))
            .collect()
    };
    let st = stages::all_stages()
        .into_iter()
        .map(|(_, s)| {
            (
                per_shard(&s.items),
                s.bytes.as_ref().map(per_shard).unwrap_or_default(),
            )
        })
        .collect();
    let phases = phases_of(&super::admin::status_sections());
    let mut h = history().lock().unwrap_or_else(|p| p.into_inner());
    let t_ms = h.started.elapsed().as_millis() as u64;
    if h.samples.len() == HISTORY_SAMPLES {
        h.samples.pop_front();
    }
    h.samples.push_back(Sample {
        t_ms,
        stages: st,
        phases,
    });
}

fn rate(a: u64, b: u64, dt_ms: u64) -> f64 {
    b.saturating_sub(a) as f64 * 1000.0 / dt_ms.max(1) as f64
}

/// The `throughput` section: per shard, per stage that moved anything, the rate between
/// consecutive samples (items/s, bytes/s) and the totals.
pub fn throughput_json() -> Value {
    let h = history().lock().unwrap_or_else(|p| p.into_inner());
    let samples: Vec<&Sample> = h.samples.iter().collect();
    let all = stages::all_stages();
    let shards = samples
        .last()
        .and_then(|s| s.stages.first())
        .map(|(i, _)| i.len())
        .unwrap_or_else(shard_count);
    let t_s: Vec<f64> = samples
        .iter()
        .skip(1)
        .map(|s| s.t_ms as f64 / 1000.0)
        .collect();
    let mut out = Vec::new();
    for shard in 0..shards {
        let mut st = Vec::new();
        for (i, (family, stage)) in all.iter().enumerate() {
            let items = |s: &Sample| s.stages.get(i).and_then(|v| v.0.get(shard)).copied();
            let bytes = |s: &Sample| s.stages.get(i).and_then(|v| v.1.get(shard)).copied();
            let last_items = samples.last().and_then(|s| items(s)).unwrap_or(0);
            let last_bytes = samples.last().and_then(|s| bytes(s));
            // A stage shows on every shard once any shard moved anything through it.
            let any = samples.last().is_some_and(|s| {
                s.stages
                    .get(i)
                    .is_some_and(|v| v.0.iter().chain(v.1.iter()).any(|x| *x > 0))
            });
            if !any {
                continue;
            }
            let series = |f: &dyn Fn(&Sample) -> Option<u64>| -> Vec<f64> {
                samples
                    .windows(2)
                    .map(|w| {
                        rate(
                            f(w[0]).unwrap_or(0),
                            f(w[1]).unwrap_or(0),
                            w[1].t_ms - w[0].t_ms,
                        )
                    })
                    .collect()
            };
            st.push(json!({
                "family": family,
                "stage": stage.name,
                "items_metric": stage.items_metric,
                "bytes_metric": stage.bytes_metric,
                "items_total": last_items,
                "bytes_total": last_bytes,
                "items_per_s": series(&items),
                "bytes_per_s": stage.bytes.as_ref().map(|_| series(&bytes)),
            }));
        }
        out.push(json!({ "shard": shard, "stages": st }));
    }
    json!({
        "sample_every_ms": SAMPLE_EVERY_MS,
        "t_s": t_s,
        "shards": out,
    })
}

/// The `phases` section: each phase's latest done / total with its rate over the last
/// [`ETA_WINDOW_MS`] and the ETA at that rate.
pub fn phases_json() -> Value {
    let h = history().lock().unwrap_or_else(|p| p.into_inner());
    let Some(last) = h.samples.back() else {
        return json!([]);
    };
    let phases: Vec<Value> = last
        .phases
        .iter()
        .map(|p| {
            // The oldest sample in the window that already shows this phase.
            let before = h
                .samples
                .iter()
                .filter(|s| last.t_ms.saturating_sub(s.t_ms) <= ETA_WINDOW_MS)
                .find_map(|s| {
                    s.phases
                        .iter()
                        .find(|b| b.name == p.name)
                        .map(|b| (s.t_ms, b.done))
                });
            let r = match before {
                Some((t, done)) if t < last.t_ms => rate(done, p.done, last.t_ms - t),
                _ => 0.0,
            };
            let eta_s = match p.total {
                _ if p.complete => Some(0.0),
                Some(t) if r > 0.0 => Some(t.saturating_sub(p.done) as f64 / r),
                _ => None,
            };
            json!({
                "name": p.name,
                "unit": p.unit,
                "done": p.done,
                "total": p.total,
                "complete": p.complete,
                "rate_per_s": r,
                "eta_s": eta_s,
            })
        })
        .collect();
    Value::Array(phases)
}

/// The `peers` section: eth peers of every shard and snapshot sources, one row each.
pub fn peers_of(status: &Value) -> Value {
    let mut rows = Vec::new();
    if let Some(doc) = status.as_object() {
        for (k, v) in doc {
            if !k.starts_with("eth_peers_shard_") {
                continue;
            }
            for p in v.as_array().into_iter().flatten() {
                rows.push(json!({
                    "kind": "eth peer",
                    "id": p["peer"],
                    "shard": p["shard"],
                    "score_rtt_ms": p["rtt_ewma_ms"],
                    "rate_bytes_per_s": p["bytes_per_ms_ewma"].as_f64().map(|b| b * 1000.0),
                    "requests": p["requests"],
                    "successes": p["successes"],
                    "failures": p["failures"],
                    "timeouts": p["timeouts"],
                    "lies": p["lies"],
                    "dropped": p["dropped"],
                }));
            }
        }
        let d = doc.get("snapshot_download");
        let sources = d
            .and_then(|d| {
                d.get("sources")
                    .or_else(|| d.get("finished")?.get("sources"))
            })
            .and_then(Value::as_array);
        for s in sources.into_iter().flatten() {
            rows.push(json!({
                "kind": "snapshot source",
                "id": s["url"],
                "shard": s["shard"],
                "score_rtt_ms": Value::Null,
                "rate_bytes_per_s": s["speed_bytes_per_s"],
                "requests": s["chunks"],
                "successes": s["chunks"],
                "failures": s["failures"],
                "timeouts": Value::Null,
                "lies": Value::Null,
                "dropped": s["dropped"],
            }));
        }
    }
    Value::Array(rows)
}

/// The `placement` section: shard ↔ core (as the shards ran) ↔ NIC queues (from the
/// tuning plan in section `plan`, when a plan was given).
pub fn placement_of(status: &Value) -> Value {
    let ran = stages::placement_json();
    let plan = &status["plan"];
    let mut rows: BTreeMap<usize, Value> = BTreeMap::new();
    if let Some(m) = ran.as_object() {
        for (s, v) in m {
            if let Ok(id) = s.parse::<usize>() {
                rows.insert(
                    id,
                    json!({"shard": id, "core": v["core"], "planned_core": null, "nic_queues": []}),
                );
            }
        }
    }
    for (i, sp) in plan["shards"].as_array().into_iter().flatten().enumerate() {
        let id = sp["id"].as_u64().map(|s| s as usize).unwrap_or(i);
        let row = rows
            .entry(id)
            .or_insert_with(|| json!({"shard": id, "core": null}));
        row["planned_core"] = sp["cpu"].clone();
        row["nic_queues"] = sp["nic_queues"].clone();
    }
    json!({
        "shards": rows.into_values().collect::<Vec<_>>(),
        "nic": plan["nic"]["name"].clone(),
        "irq_cpus": plan["irq_cpus"].clone(),
    })
}

/// Show `plan` in `/status` (section `plan`, read by `placement`) and hand it back.
pub fn publish_plan(plan: catchup_tuning::Plan) -> catchup_tuning::Plan {
    super::admin::set_status("plan", serde_json::to_value(&plan).unwrap_or_default());
    plan
}

/// Samples every [`SAMPLE_EVERY_MS`] on its own thread until dropped.
pub struct Sampler {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start() -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("admin-sampler".into())
            .spawn(move || {
                let (lock, cv) = &*stop2;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    drop(stopped);
                    sample_now();
                    stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let (g, _) = cv
                        .wait_timeout_while(stopped, Duration::from_millis(SAMPLE_EVERY_MS), |s| {
                            !*s
                        })
                        .unwrap_or_else(|p| p.into_inner());
                    stopped = g;
                    if *stopped {
                        return;
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn human_rate(v: f64, bytes: bool) -> String {
    if !bytes {
        return if v >= 1e6 {
            format!("{:.1}M/s", v / 1e6)
        } else if v >= 1e3 {
            format!("{:.1}k/s", v / 1e3)
        } else {
            format!("{v:.1}/s")
        };
    }
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut i) = (v, 0);
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}/s", UNITS[i])
}

/// A one-line bar chart of `series` (its last `width` values), scaled to its maximum.
pub fn sparkline(series: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &series[series.len().saturating_sub(width)..];
    let max = tail.iter().copied().fold(0.0f64, f64::max);
    tail.iter()
        .map(|v| {
            if max <= 0.0 || !v.is_finite() {
                BARS[0]
            } else {
                BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// The status document (as `/status` returns it) drawn for a terminal: phases, a block
/// per shard with a sparkline per stage, peers, placement.
pub fn render_text(status: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let p = &status["process"];
    let _ = writeln!(
        s,
        "catchup {}  pid {}  up {:.0} s",
        p["version"].as_str().unwrap_or("?"),
        p["pid"],
        p["uptime_s"].as_f64().unwrap_or(0.0)
    );
    s.push_str("\nPHASES\n");
    let phases = status["phases"].as_array().cloned().unwrap_or_default();
    if phases.is_empty() {
        s.push_str("  (none running)\n");
    }
    for ph in &phases {
        let bytes = ph["unit"] == "bytes";
        let done = ph["done"].as_u64().unwrap_or(0);
        let total = ph["total"].as_u64();
        let pct = total
            .filter(|t| *t > 0)
            .map(|t| format!("{:5.1}%", done as f64 * 100.0 / t as f64))
            .unwrap_or_else(|| "     ".into());
        let eta = if ph["complete"].as_bool() == Some(true) {
            "done".to_string()
        } else {
            ph["eta_s"]
                .as_f64()
                .map(|e| {
                    format!(
                        "ETA {}",
                        super::obs::human_duration(Duration::from_secs_f64(e.min(1e9)))
                    )
                })
                .unwrap_or_else(|| "ETA ?".into())
        };
        let _ = writeln!(
            s,
            "  {:<18} {} {:>12}{} {} {:>12}  {}",
            ph["name"].as_str().unwrap_or("?"),
            pct,
            done,
            total.map(|t| format!(" / {t}")).unwrap_or_default(),
            ph["unit"].as_str().unwrap_or(""),
            human_rate(ph["rate_per_s"].as_f64().unwrap_or(0.0), bytes),
            eta
        );
    }
    let placement = &status["placement"]["shards"];
    for sh in status["throughput"]["shards"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let id = sh["shard"].as_u64().unwrap_or(0);
        let place = placement
            .as_array()
            .and_then(|a| a.iter().find(|r| r["shard"].as_u64() == Some(id)));
        let core = place
            .map(|r| r["core"].to_string())
            .unwrap_or_else(|| "?".into());
        let _ = writeln!(s, "\nSHARD {id} (core {core})");
        let stages = sh["stages"].as_array().cloned().unwrap_or_default();
        if stages.is_empty() {
            s.push_str("  (idle)\n");
        }
        for st in stages {
            let items = f64s(&st["items_per_s"]);
            let bytes = f64s(&st["bytes_per_s"]);
            let _ = writeln!(
                s,
                "  {:<8} {:<10} {:>10} {} {}",
                st["family"].as_str().unwrap_or(""),
                st["stage"].as_str().unwrap_or(""),
                human_rate(items.last().copied().unwrap_or(0.0), false),
                sparkline(&items, 30),
                if st["bytes_per_s"].is_array() {
                    format!(
                        "{:>12} {}",
                        human_rate(bytes.last().copied().unwrap_or(0.0), true),
                        sparkline(&bytes, 30)
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    s.push_str("\nPEERS AND SOURCES\n");
    let peers = status["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        s.push_str("  (none)\n");
    }
    for p in peers {
        let _ =
            writeln!(
            s,
            "  {:<16} {:<28} shard {:<3} rtt {:>6} ms  {:>12}  req {:>6} fail {:>4} lies {:>4}{}",
            p["kind"].as_str().unwrap_or(""),
            p["id"].to_string().trim_matches('"'),
            p["shard"],
            p["score_rtt_ms"]
                .as_f64()
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "-".into()),
            human_rate(p["rate_bytes_per_s"].as_f64().unwrap_or(0.0), true),
            p["requests"],
            p["failures"],
            p["lies"].as_u64().map(|v| v.to_string()).unwrap_or("-".into()),
            match &p["dropped"] {
                Value::Bool(true) => " dropped".to_string(),
                Value::String(r) => format!(" dropped: {r}"),
                _ => String::new(),
            }
        );
    }
    s.push_str("\nPLACEMENT (shard, core, NIC queues)\n");
    for r in placement.as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "  shard {:<3} core {:<4} planned {:<4} queues {}",
            r["shard"], r["core"], r["planned_core"], r["nic_queues"]
        );
    }
    s
}

/// Redraw [`render_text`] of the node at `addr` every `interval` until a shutdown signal
/// (or, with `max_frames`, that many frames). Each frame clears the terminal first.
pub fn watch(
    addr: &str,
    interval: Duration,
    timeout: Duration,
    max_frames: Option<u64>,
) -> Result<(), super::admin::AdminError> {
    let stop: Arc<AtomicBool> = super::obs::shutdown_flag();
    let mut frames = 0u64;
    loop {
        let text = super::admin::fetch(addr, "/status", timeout)?;
        let status: Value =
            serde_json::from_str(&text).map_err(|e| super::admin::AdminError::BadResponse {
                addr: addr.to_string(),
                problem: format!("/status is not JSON: {e}"),
            })?;
        print!("\x1b[2J\x1b[H{}", render_text(&status));
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        frames += 1;
        if max_frames.is_some_and(|m| frames >= m) || stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let until = Instant::now() + interval;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50).min(interval));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_from_sections() {
        let doc = json!({
            "eth_sync_shard_0": {"progress": {"headers_total": 100, "headers_downloaded": 60,
                "bodies_downloaded": 10, "receipts_downloaded": 5, "state_nodes_downloaded": 7},
                "status": {"headers_complete": false}},
            "eth_sync_shard_1": {"progress": {"headers_total": 100, "headers_downloaded": 40,
                "state_nodes_downloaded": 3, "healed_nodes": 1},
                "status": {"headers_complete": true}},
            "snapshot_download": {"bytes_done": 10, "bytes_total": 40},
            "repair": {"snapshot_slot": 100, "tip_slot": 150, "slots_remaining": 20},
        });
        let p = phases_of(&doc);
        let by = |n: &str| p.iter().find(|x| x.name == n).unwrap().clone();
        assert_eq!(by("eth headers").done, 100);
        assert_eq!(by("eth headers").total, Some(100));
        assert!(!by("eth headers").complete);
        assert_eq!(by("eth state").done, 11);
        assert_eq!(by("snapshot download").total, Some(40));
        assert_eq!(by("shred repair").done, 30);
        assert!(phases_of(&json!("x")).is_empty());
    }

    #[test]
    fn sparkline_scales_to_max() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0], 10), "▁▅█");
        assert_eq!(sparkline(&[5.0; 40], 4).chars().count(), 4);
        assert_eq!(sparkline(&[], 4), "");
    }

    #[test]
    fn text_shows_every_part() {
        let doc = json!({
            "process": {"version": "0.1.0", "pid": 1, "uptime_s": 3.0},
            "phases": [{"name": "eth headers", "unit": "blocks", "done": 5, "total": 10,
                "complete": false, "rate_per_s": 1.0, "eta_s": 5.0}],
            "throughput": {"shards": [{"shard": 0, "stages": [{"family": "eth", "stage": "headers",
                "items_per_s": [1.0, 2.0], "bytes_per_s": [100.0, 300.0]}]}, {"shard": 1, "stages": []}]},
            "peers": [{"kind": "eth peer", "id": 0, "shard": 0, "score_rtt_ms": 3.0,
                "rate_bytes_per_s": 1000.0, "requests": 4, "failures": 1, "lies": 2, "dropped": false}],
            "placement": {"shards": [{"shard": 0, "core": 1, "planned_core": 1, "nic_queues": [0]}]},
        });
        let t = render_text(&doc);
        for want in [
            "eth headers",
            " 50.0%",
            "ETA 5s",
            "SHARD 0 (core 1)",
            "SHARD 1",
            "(idle)",
            "lies    2",
            "queues [0]",
        ] {
            assert!(t.contains(want), "{want:?} missing in\n{t}");
        }
    }
}

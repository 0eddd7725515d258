//! Logging, shard spans, progress lines and progress bars shared by every command.
//!
//! * [`init_logging`] installs the tracing subscriber (`--log-format pretty|json`).
//! * [`shard_span`] is the span every shard enters, so each event carries `shard = id`.
//! * [`ProgressReporter`] logs one progress line every interval (10 s by default): done,
//!   total, rate, ETA and any extra fields (queue sizes), from a sampling closure.
//! * [`progress_bar`] gives an `indicatif` bar on a terminal and a hidden one otherwise.
//! * Per-shard counters and gauges live in [`catchup_shards::metrics`]; the admin endpoint
//!   ([`crate::node::admin`]) serves them.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines on stderr.
    #[default]
    Pretty,
    /// One JSON object per line on stderr.
    Json,
}

/// Install the global tracing subscriber. `RUST_LOG` overrides `default_level`.
pub fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Colour only for a person at a terminal: a log file or a pipe gets plain text
    // (NO_COLOR set turns it off on a terminal too).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The span a shard runs in: every event inside carries `shard = id`.
/// Enter it with `shard_span(id).in_scope(..)` or `.instrument(shard_span(id))`.
pub fn shard_span(id: usize) -> tracing::Span {
    tracing::info_span!("shard", shard = id)
}

/// One progress observation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProgressSample {
    /// Units done so far.
    pub done: u64,
    /// Units in total, when known.
    pub total: Option<u64>,
    /// Extra `name=value` fields for the line (e.g. queue sizes, peers).
    pub extra: Vec<(String, String)>,
}

/// What a progress line counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressUnit {
    Bytes,
    Items(&'static str),
}

fn human_bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// `1h02m03s` style duration.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Format one progress line from the previous and current sample `elapsed` apart:
/// `name: done / total (pct), rate, ETA, extra...`. The rate is over the last interval.
pub fn format_progress(
    name: &str,
    unit: ProgressUnit,
    prev: &ProgressSample,
    cur: &ProgressSample,
    elapsed: Duration,
) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = cur.done.saturating_sub(prev.done) as f64 / secs;
    let amount = |v: u64| match unit {
        ProgressUnit::Bytes => human_bytes(v as f64),
        ProgressUnit::Items(what) => format!("{v} {what}"),
    };
    let rate_s = match unit {
        ProgressUnit::Bytes => format!("{}/s", human_bytes(rate)),
        ProgressUnit::Items(what) => format!("{rate:.1} {what}/s"),
    };
    let mut line = format!("{name}: {}", amount(cur.done));
    if let Some(total) = cur.total {
        let pct = if total == 0 {
            100.0
        } else {
            cur.done as f64 * 100.0 / total as f64
        };
        line.push_str(&format!(" / {} ({pct:.1}%)", amount(total)));
    }
    line.push_str(&format!(", {rate_s}"));
    if let Some(total) = cur.total {
        let left = total.saturating_sub(cur.done);
        if left == 0 {
            line.push_str(", done");
        } else if rate > 0.0 {
            let eta = Duration::from_secs_f64((left as f64 / rate).min(1e9));
            line.push_str(&format!(", ETA {}", human_duration(eta)));
        } else {
            line.push_str(", ETA unknown");
        }
    }
    for (k, v) in &cur.extra {
        line.push_str(&format!(", {k}={v}"));
    }
    line
}

/// Logs a progress line every `interval` from a sampling closure, on its own thread,
/// until dropped (or [`ProgressReporter::stop`]).
pub struct ProgressReporter {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Default interval between progress lines.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

impl ProgressReporter {
    /// Start reporting. `sample` is called once per interval from the reporter thread.
    pub fn start<S>(
        name: &str,
        unit: ProgressUnit,
        interval: Duration,
        sample: S,
    ) -> std::io::Result<Self>
    where
        S: Fn() -> ProgressSample + Send + 'static,
    {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("progress-{name}"))
            .spawn(move || {
                let (lock, cv) = &*stop2;
                let mut prev = sample();
                let mut at = Instant::now();
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    let (g, _) = cv
                        .wait_timeout_while(stopped, interval, |s| !*s)
                        .unwrap_or_else(|p| p.into_inner());
                    stopped = g;
                    if *stopped {
                        return;
                    }
                    let cur = sample();
                    let now = Instant::now();
                    let line = format_progress(&name, unit, &prev, &cur, now - at);
                    tracing::info!(target: "progress", "{line}");
                    prev = cur;
                    at = now;
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop the reporter and wait for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ProgressReporter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether progress bars should be drawn: stderr is a terminal and `json` output is off.
pub fn bars_enabled(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// An `indicatif` progress bar on stderr when it is a terminal, else a hidden bar (all
/// calls on it are no-ops), so callers never branch.
pub fn progress_bar(len: Option<u64>, unit: ProgressUnit, json: bool) -> indicatif::ProgressBar {
    if !bars_enabled(json) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let template = match (unit, len) {
        (ProgressUnit::Bytes, Some(_)) => {
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
        }
        (ProgressUnit::Bytes, None) => "{spinner} {msg} {bytes} {bytes_per_sec}",
        (ProgressUnit::Items(_), Some(_)) => "{msg} [{bar:40}] {pos}/{len} {per_sec} ETA {eta}",
        (ProgressUnit::Items(_), None) => "{spinner} {msg} {pos} {per_sec}",
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A flag set once SIGINT/SIGTERM arrives, for commands that run outside the shard
/// runtime (the runtime has its own, see `catchup_shards::Shard::shutting_down`).
pub fn shutdown_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone());
            let _ = signal_hook::flag::register(sig, flag.clone());
        }
        flag
    })
    .clone()
}

/// True once a shutdown signal arrived (see [`shutdown_flag`]).
pub fn shutting_down() -> bool {
    shutdown_flag().load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_has_counts_rate_and_eta() {
        let prev = ProgressSample {
            done: 0,
            total: Some(100 << 20),
            extra: vec![],
        };
        let cur = ProgressSample {
            done: 10 << 20,
            total: Some(100 << 20),
            extra: vec![("queue".into(), "3".into())],
        };
        let line = format_progress(
            "snapshot",
            ProgressUnit::Bytes,
            &prev,
            &cur,
            Duration::from_secs(10),
        );
        assert_eq!(
            line,
            "snapshot: 10.0 MiB / 100.0 MiB (10.0%), 1.0 MiB/s, ETA 1m30s, queue=3"
        );
        let stalled = format_progress(
            "x",
            ProgressUnit::Items("nodes"),
            &cur,
            &cur,
            Duration::from_secs(10),
        );
        assert!(stalled.ends_with("ETA unknown, queue=3"), "{stalled}");
        let done = ProgressSample {
            done: 5,
            total: Some(5),
            extra: vec![],
        };
        let l = format_progress(
            "x",
            ProgressUnit::Items("slots"),
            &cur,
            &done,
            Duration::ZERO,
        );
        assert!(
            l.contains("5 slots / 5 slots (100.0%)") && l.ends_with("done"),
            "{l}"
        );
    }

    #[test]
    fn reporter_samples_and_stops() {
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c = calls.clone();
        let r = ProgressReporter::start(
            "t",
            ProgressUnit::Items("x"),
            Duration::from_millis(5),
            move || {
                let n = c.fetch_add(1, Ordering::Relaxed);
                ProgressSample {
                    done: n,
                    total: None,
                    extra: vec![],
                }
            },
        )
        .unwrap();
        while calls.load(Ordering::Relaxed) < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        r.stop();
        let after = calls.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            calls.load(Ordering::Relaxed),
            after,
            "no samples after stop"
        );
    }

    #[test]
    fn hidden_bar_when_json() {
        assert!(progress_bar(Some(10), ProgressUnit::Bytes, true).is_hidden());
    }
}

//! The report: one row per pipeline × fault, as JSON, as a text table and as Markdown.

use serde::Serialize;

use super::plan::{Fault, Pipeline};
use super::TrialResult;

/// A failing trial, with the command that replays it.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub seed: u64,
    pub detail: String,
    pub replay: String,
}

/// One pipeline × fault.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub pipeline: Pipeline,
    pub fault: Fault,
    pub trials: u32,
    pub passed: u32,
    /// Trials whose process had finished before the fault could hit it.
    pub missed: u32,
    /// Trials that ended with a wrong result accepted (safety failures).
    pub wrong_results: u32,
    /// Sum over trials (`None`: not applicable to this pipeline).
    pub refetched_after_restart: Option<u64>,
    pub acknowledged_lost: Option<u64>,
    pub recover_ms_median: Option<u64>,
    pub recover_ms_max: Option<u64>,
    pub peak_rss_kb: u64,
    pub peak_fds: Option<u64>,
    /// The error line the fault produced (first one seen), where one was expected.
    pub error_line: Option<String>,
    pub failures: Vec<Failure>,
    /// Why the row did not run (a prerequisite is missing).
    pub skipped: Option<String>,
    /// The row's set-up failed (servers did not start, the baseline did not verify).
    pub setup_error: Option<String>,
    pub note: Option<String>,
    #[serde(skip)]
    recover: Vec<u64>,
}

impl Row {
    pub fn new(pipeline: Pipeline, fault: Fault) -> Row {
        Row {
            pipeline,
            fault,
            trials: 0,
            passed: 0,
            missed: 0,
            wrong_results: 0,
            refetched_after_restart: None,
            acknowledged_lost: None,
            recover_ms_median: None,
            recover_ms_max: None,
            peak_rss_kb: 0,
            peak_fds: None,
            error_line: None,
            failures: Vec::new(),
            skipped: None,
            setup_error: None,
            note: None,
            recover: Vec::new(),
        }
    }

    pub fn add(&mut self, t: &TrialResult) {
        self.trials += 1;
        if t.passed {
            self.passed += 1;
        } else {
            self.failures.push(Failure {
                seed: t.seed,
                detail: t.detail.clone(),
                replay: format!(
                    "catchup soak --pipeline {} --fault {} --trials 1 --seed {}",
                    t.pipeline.name(),
                    t.fault.name(),
                    t.seed
                ),
            });
        }
        if !t.landed {
            self.missed += 1;
        }
        if t.wrong_result {
            self.wrong_results += 1;
        }
        let add = |acc: &mut Option<u64>, v: Option<u64>| {
            if let Some(v) = v {
                *acc = Some(acc.unwrap_or(0) + v);
            }
        };
        add(&mut self.refetched_after_restart, t.refetched);
        add(&mut self.acknowledged_lost, t.lost);
        if let Some(ms) = t.recover_ms {
            self.recover.push(ms);
            self.recover.sort_unstable();
            self.recover_ms_median = Some(self.recover[self.recover.len() / 2]);
            self.recover_ms_max = self.recover.last().copied();
        }
        self.peak_rss_kb = self.peak_rss_kb.max(t.peak_rss_kb);
        if let Some(f) = t.peak_fds {
            self.peak_fds = Some(self.peak_fds.unwrap_or(0).max(f));
        }
        if self.error_line.is_none() {
            self.error_line = t.error_line.clone();
        }
    }

    pub fn ok(&self) -> bool {
        self.skipped.is_none()
            && self.setup_error.is_none()
            && self.passed == self.trials
            && self.refetched_after_restart.unwrap_or(0) == 0
            && self.acknowledged_lost.unwrap_or(0) == 0
    }
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    pub ok: bool,
    pub seed: u64,
    pub trials_per_row: u32,
    pub elapsed_ms: u64,
    pub rows: Vec<Row>,
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

impl SoakReport {
    pub fn new(seed: u64, trials_per_row: u32, rows: Vec<Row>, elapsed_ms: u64) -> SoakReport {
        // Skipped rows do not make the run fail here; callers that require every fault
        // (CI) check `skipped` themselves.
        let ok = rows
            .iter()
            .all(|r| r.setup_error.is_none() && (r.skipped.is_some() || r.ok()));
        SoakReport {
            ok,
            seed,
            trials_per_row,
            elapsed_ms,
            rows,
        }
    }

    fn cells(r: &Row) -> [String; 10] {
        let status = if let Some(s) = &r.skipped {
            format!("skipped: {s}")
        } else if let Some(e) = &r.setup_error {
            format!("SETUP FAILED: {e}")
        } else {
            r.error_line.clone().unwrap_or_else(|| "-".into())
        };
        [
            r.pipeline.name().to_string(),
            r.fault.name().to_string(),
            r.trials.to_string(),
            if r.missed > 0 {
                format!("{} ({} missed)", r.passed, r.missed)
            } else {
                r.passed.to_string()
            },
            opt(r.refetched_after_restart),
            opt(r.acknowledged_lost),
            match (r.recover_ms_median, r.recover_ms_max) {
                (Some(m), Some(x)) => format!("{m} / {x}"),
                _ => "-".into(),
            },
            format!("{:.1}", r.peak_rss_kb as f64 / 1024.0),
            opt(r.peak_fds),
            status,
        ]
    }

    const HEADER: [&'static str; 10] = [
        "pipeline",
        "fault",
        "trials",
        "passed",
        "refetched",
        "lost",
        "recover ms (median / max)",
        "peak RSS MiB",
        "peak fds",
        "error line",
    ];

    /// Markdown table (for the README).
    pub fn markdown(&self) -> String {
        let mut s = format!("| {} |\n", Self::HEADER.join(" | "));
        s.push_str(&format!("|{}\n", " --- |".repeat(Self::HEADER.len())));
        for r in &self.rows {
            let c = Self::cells(r).map(|c| c.replace('|', "\\|"));
            s.push_str(&format!("| {} |\n", c.join(" | ")));
        }
        s
    }

    /// Plain text: the table, then each failure with its replay command.
    pub fn text(&self) -> String {
        let rows: Vec<[String; 10]> = self.rows.iter().map(Self::cells).collect();
        let mut w = Self::HEADER.map(|h| h.len());
        for r in &rows {
            for (i, c) in r.iter().enumerate().take(9) {
                w[i] = w[i].max(c.len());
            }
        }
        let mut s = String::new();
        let line = |cells: Vec<String>| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i < 9 {
                        format!("{c:<0$}", w[i])
                    } else {
                        c.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        s.push_str(&line(Self::HEADER.iter().map(|h| h.to_string()).collect()));
        s.push('\n');
        for r in rows {
            s.push_str(&line(r.to_vec()));
            s.push('\n');
        }
        for r in &self.rows {
            for f in &r.failures {
                s.push_str(&format!(
                    "FAILED {} {} seed {}: {}\n  replay: {}\n",
                    r.pipeline.name(),
                    r.fault.name(),
                    f.seed,
                    f.detail,
                    f.replay
                ));
            }
        }
        s.push_str(&format!(
            "seed {}, {} trial(s) per row, {:.1} s, {}\n",
            self.seed,
            self.trials_per_row,
            self.elapsed_ms as f64 / 1000.0,
            if self.ok { "ALL PASSED" } else { "FAILURES" }
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_and_failures_carry_their_replay_seed() {
        let mut row = Row::new(Pipeline::Store, Fault::Sigkill);
        let mut a = TrialResult::new(Pipeline::Store, Fault::Sigkill, 1);
        a.lost = Some(0);
        a.recover_ms = Some(10);
        a.peak_rss_kb = 2048;
        row.add(&a.finish());
        let mut b = TrialResult::new(Pipeline::Store, Fault::Sigkill, 99);
        b.lost = Some(2);
        b.recover_ms = Some(30);
        row.add(&b.finish());
        assert_eq!(row.trials, 2);
        assert_eq!(row.passed, 1);
        assert_eq!(row.acknowledged_lost, Some(2));
        assert_eq!(row.refetched_after_restart, None);
        assert_eq!(row.recover_ms_max, Some(30));
        assert_eq!(row.failures.len(), 1);
        assert_eq!(row.failures[0].seed, 99);
        assert!(row.failures[0]
            .replay
            .ends_with("--pipeline store --fault sigkill --trials 1 --seed 99"));
        let rep = SoakReport::new(5, 2, vec![row], 1);
        assert!(!rep.ok);
        assert!(rep
            .markdown()
            .contains("| store | sigkill | 2 | 1 | - | 2 |"));
        assert!(rep.text().contains("replay: catchup soak"));
    }
}

//! `catchup status`: read a running node's admin endpoint and print it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::node::opts::GlobalOpts;

/// Print the status and metric totals of a running node (reads `--admin ADDR`).
#[derive(clap::Args, Debug)]
pub struct StatusCmd {
    /// Print the raw JSON (`{"status": <GET /status>, "metrics": {name: total}}`).
    #[arg(long)]
    pub json: bool,
    /// Give up on the endpoint after this long.
    #[arg(long, default_value_t = 5_000, value_name = "MS")]
    pub timeout_ms: u64,
    /// Redraw the node's picture (phases, per-shard throughput, peers, placement) every
    /// MS milliseconds until interrupted.
    #[arg(long, value_name = "MS", num_args = 0..=1, default_missing_value = "2000")]
    pub watch: Option<u64>,
}

/// Sum each metric over its labels from Prometheus text.
pub fn metric_totals(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name_labels.split('{').next().unwrap_or(name_labels);
        if let Ok(v) = value.trim().parse::<f64>() {
            *out.entry(name.to_string()).or_insert(0.0) += v;
        }
    }
    out
}

fn flatten(prefix: &str, v: &Value, rows: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, rows);
            }
        }
        Value::String(s) => rows.push((prefix.to_string(), s.clone())),
        other => rows.push((prefix.to_string(), other.to_string())),
    }
}

/// Render the status document and metric totals as an aligned two-column table.
pub fn render_table(status: &Value, totals: &BTreeMap<String, f64>) -> String {
    let mut rows = Vec::new();
    flatten("", status, &mut rows);
    for (k, v) in totals {
        rows.push((format!("metric {k}"), format!("{v}")));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (k, v) in rows {
        s.push_str(&format!("{k:<width$}  {v}\n"));
    }
    s
}

pub fn run(cmd: StatusCmd, global: &GlobalOpts) -> anyhow::Result<i32> {
    let addr = global
        .admin
        .context("status: give the node's admin endpoint with --admin ADDR")?
        .to_string();
    let timeout = Duration::from_millis(cmd.timeout_ms.max(1));
    if let Some(every_ms) = cmd.watch {
        crate::node::view::watch(
            &addr,
            Duration::from_millis(every_ms.max(100)),
            timeout,
            None,
        )?;
        return Ok(0);
    }
    let status_text = crate::node::admin::fetch(&addr, "/status", timeout)?;
    let status: Value = serde_json::from_str(&status_text)
        .with_context(|| format!("status: {addr}/status is not JSON"))?;
    let metrics_text = crate::node::admin::fetch(&addr, "/metrics", timeout)?;
    let totals = metric_totals(&metrics_text);
    if cmd.json {
        let doc = serde_json::json!({ "admin": addr, "status": status, "metrics": totals });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render_table(&status, &totals));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_over_shards() {
        let t = "# HELP a x\n# TYPE a counter\na{shard=\"0\"} 3\na{shard=\"1\"} 4\nb 1.5\n";
        let m = metric_totals(t);
        assert_eq!(m["a"], 7.0);
        assert_eq!(m["b"], 1.5);
    }

    proptest::proptest! {
        #[test]
        fn totals_never_panic(text in "(?s).{0,400}") {
            let _ = metric_totals(&text);
        }
    }

    #[test]
    fn table_flattens_sections() {
        let v = serde_json::json!({"eth": {"phase": "state", "peers": 4}});
        let t = render_table(&v, &BTreeMap::from([("x_total".to_string(), 2.0)]));
        assert!(t.contains("eth.phase"));
        assert!(t.contains("state"));
        assert!(t.contains("metric x_total"));
    }
}

//! Results: a latency histogram, the per-scenario report (a human table plus one JSON line),
//! and the side-by-side comparison of two servers' JSON lines.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

/// Latencies in microseconds, 1 µs to 10 min, 3 significant digits.
pub(crate) struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, 600_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }
}

impl Latency {
    pub(crate) fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 600_000_000);
        // In bounds by the clamp above.
        let _ = self.hist.record(us);
    }

    pub(crate) fn merge(&mut self, other: &Latency) {
        let _ = self.hist.add(&other.hist);
    }

    /// The `q` quantile (0..=1) in milliseconds, or `None` when empty.
    pub(crate) fn ms(&self, q: f64) -> Option<f64> {
        (!self.hist.is_empty()).then(|| self.hist.value_at_quantile(q) as f64 / 1000.0)
    }

    pub(crate) fn max_ms(&self) -> Option<f64> {
        (!self.hist.is_empty()).then(|| self.hist.max() as f64 / 1000.0)
    }
}

/// Errors of a scenario: how many, and the first few distinct messages.
#[derive(Default)]
pub(crate) struct Errors {
    inner: Mutex<(u64, Vec<String>)>,
}

impl Errors {
    pub(crate) fn add(&self, message: impl Into<String>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0 += 1;
        let message = message.into();
        if inner.1.len() < 5 && !inner.1.contains(&message) {
            inner.1.push(message);
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    pub(crate) fn samples(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }
}

/// What one scenario measured against one server.
pub(crate) struct Report {
    scenario: &'static str,
    label: String,
    params: Map<String, Value>,
    figures: Vec<(String, Option<f64>)>,
    notes: Vec<String>,
    pub(crate) ok: bool,
}

impl Report {
    pub(crate) fn new(scenario: &'static str, label: &str) -> Self {
        Self {
            scenario,
            label: label.to_owned(),
            params: Map::new(),
            figures: Vec::new(),
            notes: Vec::new(),
            ok: true,
        }
    }

    pub(crate) fn param(&mut self, name: &str, value: impl Into<Value>) {
        self.params.insert(name.to_owned(), value.into());
    }

    pub(crate) fn figure(&mut self, name: &str, value: impl Into<Option<f64>>) {
        self.figures.push((name.to_owned(), value.into()));
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Marks the scenario failed, with the reason.
    pub(crate) fn fail(&mut self, reason: impl Into<String>) {
        self.ok = false;
        self.notes.push(format!("FAILED: {}", reason.into()));
    }

    pub(crate) fn errors(&mut self, errors: &Errors) {
        let count = errors.count();
        self.figure("errors", count as f64);
        for sample in errors.samples() {
            self.note(format!("error: {sample}"));
        }
        if count > 0 {
            self.fail(format!("{count} errors"));
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let figures: Map<String, Value> = self
            .figures
            .iter()
            .map(|(k, v)| (k.clone(), v.map(round3).map_or(Value::Null, Value::from)))
            .collect();
        let order: Vec<&str> = self.figures.iter().map(|(k, _)| k.as_str()).collect();
        json!({
            "scenario": self.scenario,
            "label": self.label,
            "ok": self.ok,
            "params": self.params,
            "figures": figures,
            "order": order,
            "notes": self.notes,
        })
    }

    /// Prints the table, then the JSON line; appends the JSON line to `json_out` if given.
    pub(crate) fn print(&self, json_out: Option<&Path>) {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "\n== {} [{}] {} ==",
            self.scenario,
            self.label,
            params.join(" ")
        );
        let width = self.figures.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (name, value) in &self.figures {
            println!("  {name:<width$}  {}", fmt(*value));
        }
        for note in &self.notes {
            println!("  note: {note}");
        }
        println!("  result: {}", if self.ok { "ok" } else { "FAILED" });
        let line = self.to_json().to_string();
        println!("{line}");
        if let Some(path) = json_out {
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                eprintln!("cannot append to {}: {e}", path.display());
            }
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) if v.abs() >= 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// Whether a larger value of this figure is better (throughputs); otherwise smaller is.
fn higher_is_better(figure: &str) -> bool {
    figure.ends_with("_per_s")
        || figure.starts_with("best_")
        || matches!(figure, "negotiated" | "connected" | "cycles")
}

/// Figures that describe the run rather than the server; no verdict is given for them.
fn informational(figure: &str) -> bool {
    figure.starts_with("bench_")
        || matches!(
            figure,
            "viewers" | "connections" | "slots" | "messages_per_step" | "secs" | "steps"
        )
}

fn read_lines(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["scenario"].is_string())
        .collect())
}

/// Prints, per scenario and figure: ours, the peer's, ours/peer and which is better.
pub(crate) fn compare(ours: &Path, peer: &Path) -> Result<(), String> {
    let ours = read_lines(ours)?;
    let peer = read_lines(peer)?;
    let scenarios: Vec<String> = ours
        .iter()
        .filter_map(|v| v["scenario"].as_str().map(str::to_owned))
        .collect::<Vec<_>>();
    let mut seen = BTreeSet::new();
    println!(
        "| scenario | figure | {} | {} | ratio | better |",
        label_of(&ours),
        label_of(&peer)
    );
    println!("|---|---|---:|---:|---:|---|");
    for scenario in scenarios {
        if !seen.insert(scenario.clone()) {
            continue;
        }
        let a = ours
            .iter()
            .rev()
            .find(|v| v["scenario"] == scenario.as_str());
        let b = peer
            .iter()
            .rev()
            .find(|v| v["scenario"] == scenario.as_str());
        let Some(a) = a else { continue };
        let params: Vec<String> = a["params"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        let title = format!("{scenario} ({})", params.join(", "));
        let order: Vec<String> = a["order"]
            .as_array()
            .map(|o| {
                o.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        // A scenario only ours runs (the peer has no relay tree): its figures, no verdict.
        let Some(b) = b else {
            for figure in order {
                let x = a["figures"][&figure].as_f64();
                println!("| {title} | {figure} | {} | - | - | |", fmt(x));
            }
            if a["ok"] != Value::Bool(true) {
                println!("| {title} | result | ours FAILED: {} | | | |", a["notes"]);
            }
            continue;
        };
        for figure in order {
            let x = a["figures"][&figure].as_f64();
            let y = b["figures"][&figure].as_f64();
            let ratio = match (x, y) {
                (Some(x), Some(y)) if y != 0.0 => format!("{:.2}", x / y),
                (Some(x), Some(y)) if x == y => "1.00".into(),
                _ => "-".into(),
            };
            let better = match (x, y) {
                _ if informational(&figure) => "",
                (Some(x), Some(y)) if x == y => "=",
                (Some(x), Some(y)) => {
                    if (x > y) == higher_is_better(&figure) {
                        "ours"
                    } else {
                        "peer"
                    }
                }
                _ => "",
            };
            println!(
                "| {title} | {figure} | {} | {} | {ratio} | {better} |",
                fmt(x),
                fmt(y)
            );
        }
        for (side, v) in [("ours", a), ("peer", b)] {
            if v["ok"] != Value::Bool(true) {
                println!("| {title} | result | {side} FAILED: {} | | | |", v["notes"]);
            }
        }
    }
    Ok(())
}

fn label_of(lines: &[Value]) -> String {
    lines
        .first()
        .and_then(|v| v["label"].as_str())
        .unwrap_or("?")
        .to_owned()
}

/// A scenario with its parameters, e.g. `storm (candidates=4, concurrency=200, viewers=2000)`:
/// the rows of [`ratios`] match runs on this, so one file may hold a scenario at two sizes.
fn title_of(line: &Value) -> String {
    let params: Vec<String> = line["params"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    format!(
        "{} ({})",
        line["scenario"].as_str().unwrap_or("?"),
        params.join(", ")
    )
}

/// Prints, per scenario and figure: the base run's value, each other run's, and each other
/// run's ratio to the base (e.g. 2 nodes on Redis / in memory). A scenario or figure missing
/// from a run shows as `-`.
pub(crate) fn ratios(base: &Path, others: &[std::path::PathBuf]) -> Result<(), String> {
    let mut runs = vec![read_lines(base)?];
    for other in others {
        runs.push(read_lines(other)?);
    }
    let labels: Vec<String> = runs.iter().map(|r| label_of(r)).collect();
    let ratio_heads: Vec<String> = labels[1..]
        .iter()
        .map(|l| format!("{l}/{}", labels[0]))
        .collect();
    println!(
        "| scenario | figure | {} | {} |",
        labels.join(" | "),
        ratio_heads.join(" | ")
    );
    println!(
        "|---|---|{}{}",
        "---:|".repeat(labels.len()),
        "---:|".repeat(ratio_heads.len())
    );
    // Scenarios in order of first appearance, base first; each run's last line of each.
    let mut titles: Vec<String> = Vec::new();
    for line in runs.iter().flatten() {
        let title = title_of(line);
        if !titles.contains(&title) {
            titles.push(title);
        }
    }
    for title in titles {
        let lines: Vec<Option<&Value>> = runs
            .iter()
            .map(|r| r.iter().rev().find(|v| title_of(v) == title))
            .collect();
        // Every run's figures, each one a run alone has placed after its predecessor there
        // (e.g. the cross-node latencies of several nodes next to the overall latencies).
        let mut figures: Vec<String> = Vec::new();
        for line in lines.iter().flatten() {
            let mut at = 0;
            for f in line["order"].as_array().into_iter().flatten() {
                let Some(f) = f.as_str() else { continue };
                match figures.iter().position(|g| g == f) {
                    Some(i) => at = i + 1,
                    None => {
                        figures.insert(at, f.to_owned());
                        at += 1;
                    }
                }
            }
        }
        for figure in figures {
            let values: Vec<Option<f64>> = lines
                .iter()
                .map(|l| l.and_then(|l| l["figures"][&figure].as_f64()))
                .collect();
            let ratios: Vec<String> = values[1..]
                .iter()
                .map(|&v| match (v, values[0]) {
                    (Some(x), Some(y)) if y != 0.0 => format!("{:.2}", x / y),
                    (Some(x), Some(y)) if x == y => "1.00".into(),
                    _ => "-".into(),
                })
                .collect();
            let shown: Vec<String> = values.iter().map(|&v| fmt(v)).collect();
            println!(
                "| {title} | {figure} | {} | {} |",
                shown.join(" | "),
                ratios.join(" | ")
            );
        }
        for (label, line) in labels.iter().zip(&lines) {
            if let Some(line) = line
                && line["ok"] != Value::Bool(true)
            {
                println!("| {title} | result | {label} FAILED: {} |", line["notes"]);
            }
        }
    }
    Ok(())
}

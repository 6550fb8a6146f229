//! The alert rules of `deploy/prometheus/` run against what a real worker exported during a
//! fault: its `/metrics` is scraped while the fault lasts, the samples become the input series
//! of a `promtool test rules` file, and promtool says whether the expected alerts fire.
//!
//! Scrape `k` is laid out at minute `k`. The rules look at windows of minutes and the fault
//! tests last seconds, so the time axis is compressed: what is checked is that the series the
//! worker really exports, with their names, labels and the way they grow during the fault,
//! make the rules fire, not how many wall-clock minutes that takes.
//!
//! promtool compares annotations exactly, templates expanded, and the static tests in
//! `reconcile-alerts.test.yml` already check them; the rules are therefore loaded from a copy
//! without annotations, with every expression, duration and label as in the original.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The job label the rules expect on the apply worker's series.
pub const APPLY_JOB: &str = "reconcile-apply";

/// The alert rules as deployed.
pub fn rules_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/reconcile-alerts.yml")
}

/// The body of `GET /metrics` at `addr`.
pub async fn scrape(addr: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let request = "GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n";
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("asking {addr} for metrics: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| format!("reading metrics from {addr}: {e}"))?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(format!("unexpected answer from {addr}: {response:.200}")),
    }
}

/// Samples of the text exposition format: series as written (name and labels) to value.
/// Comments and values that are not finite numbers are left out.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            value.is_finite().then(|| (series.to_owned(), value))
        })
        .collect()
}

/// The metric name of a series as written.
fn name_of(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

/// Successive scrapes of one worker's metrics.
pub struct Scrapes {
    addr: SocketAddr,
    instance: String,
    samples: Vec<BTreeMap<String, f64>>,
}

impl Scrapes {
    /// Scrapes of the endpoint at `addr`, labelled `instance` as Prometheus would.
    pub fn new(addr: SocketAddr) -> Scrapes {
        Scrapes {
            addr,
            instance: addr.to_string(),
            samples: Vec::new(),
        }
    }

    /// Scrapes once more and returns the index (the minute) of the new sample.
    pub async fn take(&mut self) -> usize {
        let body = scrape(self.addr).await.expect("scraping the worker");
        self.samples.push(parse(&body));
        self.samples.len() - 1
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The value of `series` (as written, such as `m_total{cause="x"}`) in scrape `index`.
    pub fn value(&self, index: usize, series: &str) -> Option<f64> {
        self.samples.get(index)?.get(series).copied()
    }

    /// The sum over every series of metric `name` in scrape `index`.
    pub fn total(&self, index: usize, name: &str) -> f64 {
        self.samples.get(index).map_or(0.0, |sample| {
            sample
                .iter()
                .filter(|(series, _)| name_of(series) == name)
                .fold(0.0, |sum, (_, value)| sum + value)
        })
    }

    /// Every series seen, with `job` and `instance` added, and its values scrape by scrape
    /// in promtool's notation (`_` where a scrape did not have it).
    fn input_series(&self) -> BTreeMap<String, String> {
        let mut names: Vec<&String> = self.samples.iter().flat_map(|s| s.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|series| {
                let values: Vec<String> = self
                    .samples
                    .iter()
                    .map(|sample| sample.get(series).map_or("_".into(), |v| v.to_string()))
                    .collect();
                (self.labelled(series), values.join(" "))
            })
            .collect()
    }

    fn labelled(&self, series: &str) -> String {
        let target = format!("job=\"{APPLY_JOB}\",instance=\"{}\"", self.instance);
        match series.split_once('{') {
            Some((name, "}")) => format!("{name}{{{target}}}"),
            Some((name, rest)) => format!("{name}{{{target},{rest}"),
            None => format!("{series}{{{target}}}"),
        }
    }
}

/// What one alert should be at one minute of the scrapes: the label sets it fires with
/// (besides `alertname`), none for "not firing".
#[derive(Debug, Clone)]
pub struct Expect {
    pub minute: usize,
    pub alert: &'static str,
    pub firing: Vec<BTreeMap<String, String>>,
}

impl Expect {
    /// `alert` is not firing at `minute`.
    pub fn quiet(minute: usize, alert: &'static str) -> Expect {
        Expect {
            minute,
            alert,
            firing: Vec::new(),
        }
    }

    /// `alert` fires at `minute` with exactly these labels.
    pub fn firing(minute: usize, alert: &'static str, labels: &[(&str, &str)]) -> Expect {
        let labels = labels
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        Expect {
            minute,
            alert,
            firing: vec![labels],
        }
    }
}

/// Runs `promtool test rules` over `scrapes` with `expected`, in `dir`. `Err` holds what
/// promtool said when an expectation failed.
///
/// Panics with instructions when promtool is not installed: a missing tool must not pass for
/// alerts that fire.
pub fn promtool_test(dir: &Path, scrapes: &Scrapes, expected: &[Expect]) -> Result<String, String> {
    let rules = fs::read_to_string(rules_path()).expect("reading the alert rules");
    let stripped = without_annotations(&rules);
    assert_eq!(
        stripped.matches("- alert:").count(),
        rules.matches("- alert:").count(),
        "stripping the annotations lost a rule"
    );
    let rules_file = dir.join("rules-without-annotations.yml");
    fs::write(&rules_file, stripped).expect("writing the rules copy");
    promtool(&["check", "rules", path_text(&rules_file)])?;

    let test_file = dir.join("scraped-alerts.test.yml");
    fs::write(&test_file, test_text(&rules_file, scrapes, expected)).expect("writing test");
    promtool(&["test", "rules", path_text(&test_file)])
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn promtool(args: &[&str]) -> Result<String, String> {
    let output = match Command::new("promtool").args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "promtool is not installed, so the alert rules cannot be checked against the \
             worker's series: run `scripts/deps.sh promtool` (`make test-alerts` does) and \
             run the test again"
        ),
        Err(e) => panic!("running promtool: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// A single-quoted YAML scalar.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn test_text(rules: &Path, scrapes: &Scrapes, expected: &[Expect]) -> String {
    let mut out = String::new();
    let rules = quoted(path_text(rules));
    let _ = writeln!(
        out,
        "rule_files:\n  - {rules}\nevaluation_interval: 1m\ntests:"
    );
    let _ = writeln!(out, "  - interval: 1m\n    input_series:");
    for (series, values) in scrapes.input_series() {
        let (series, values) = (quoted(&series), quoted(&values));
        let _ = writeln!(out, "      - series: {series}\n        values: {values}");
    }
    let _ = writeln!(out, "    alert_rule_test:");
    for expect in expected {
        let _ = writeln!(out, "      - eval_time: {}m", expect.minute);
        let _ = writeln!(out, "        alertname: {}", expect.alert);
        if expect.firing.is_empty() {
            let _ = writeln!(out, "        exp_alerts: []");
            continue;
        }
        let _ = writeln!(out, "        exp_alerts:");
        for labels in &expect.firing {
            let _ = writeln!(out, "          - exp_labels:");
            for (name, value) in labels {
                let _ = writeln!(out, "              {name}: {}", quoted(value));
            }
        }
    }
    out
}

/// `rules` with every `annotations:` block removed: the key's line and the lines under it
/// that are indented deeper or blank.
pub fn without_annotations(rules: &str) -> String {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut out = String::new();
    let mut skipping: Option<usize> = None;
    for line in rules.lines() {
        if let Some(depth) = skipping {
            if line.trim().is_empty() || indent(line) > depth {
                continue;
            }
            skipping = None;
        }
        if line.trim() == "annotations:" {
            skipping = Some(indent(line));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines_become_samples() {
        let text = "# HELP m_total help\n# TYPE m_total counter\nm_total{cause=\"x\"} 3\n\
                    up 1\nh_bucket{le=\"+Inf\"} 2\nbad NaN\n";
        let samples = parse(text);
        assert_eq!(samples.get("m_total{cause=\"x\"}"), Some(&3.0));
        assert_eq!(samples.get("up"), Some(&1.0));
        assert_eq!(samples.get("h_bucket{le=\"+Inf\"}"), Some(&2.0));
        assert!(!samples.contains_key("bad"));
    }

    #[test]
    fn series_get_the_target_labels_and_gaps() {
        let mut scrapes = Scrapes::new("127.0.0.1:9".parse().unwrap());
        scrapes.samples.push(parse("a_total{cause=\"x\"} 1\nb 2\n"));
        scrapes.samples.push(parse("a_total{cause=\"x\"} 4\n"));
        let series = scrapes.input_series();
        let a = "a_total{job=\"reconcile-apply\",instance=\"127.0.0.1:9\",cause=\"x\"}";
        assert_eq!(series.get(a).map(String::as_str), Some("1 4"));
        let b = "b{job=\"reconcile-apply\",instance=\"127.0.0.1:9\"}";
        assert_eq!(series.get(b).map(String::as_str), Some("2 _"));
        assert_eq!(scrapes.total(0, "a_total"), 1.0);
    }

    #[test]
    fn annotations_are_cut_and_everything_else_kept() {
        let rules = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 0\n\
                     \x20       annotations:\n          summary: s\n          runbook: >-\n\
                     \x20           one\n\n            two\n      - alert: B\n        expr: y\n\
                     \x20       labels:\n          severity: warning\n";
        let cut = without_annotations(rules);
        assert!(!cut.contains("annotations") && !cut.contains("one") && !cut.contains("two"));
        assert!(cut.contains("      - alert: B\n        expr: y\n        labels:\n"));
        assert!(cut.contains("severity: warning"));
    }
}

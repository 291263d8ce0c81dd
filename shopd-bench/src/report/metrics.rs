//! The server's group-commit series, read from its Prometheus text (`GET /metrics`).
//!
//! The parser is deliberately small: sample lines `name{labels} value [timestamp]`, comments
//! skipped. Histograms and summaries are read through `name_sum` and `name_count` (plus
//! `name{quantile="…"}` for summaries); buckets are ignored.

use std::collections::BTreeMap;

use serde::Serialize;

pub const BATCH_SIZE: &str = "shopd_commit_batch_size";
pub const QUEUE_WAIT: &str = "shopd_commit_queue_wait_seconds";
pub const DURATION: &str = "shopd_commit_duration_seconds";
pub const DURABLE_WAIT: &str = "shopd_commit_durable_wait_seconds";

/// One histogram or summary series, summed over its label sets.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesStats {
    pub count: u64,
    pub sum: f64,
    /// `sum / count`; absent when nothing was observed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// Summary quantiles by their `quantile` label ("0.5", "0.99"...); empty for histograms.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub quantiles: BTreeMap<String, f64>,
}

impl SeriesStats {
    fn with_mean(mut self) -> Self {
        self.mean = (self.count > 0).then(|| self.sum / self.count as f64);
        self
    }

    /// What was observed since `before` (the server's series are cumulative since its start,
    /// and the setup phase writes too). Quantiles cannot be subtracted: they stay as read.
    fn since(self, before: Option<&SeriesStats>) -> Self {
        match before {
            // A counter that went down means the server restarted: keep the new totals.
            Some(b) if b.count <= self.count && b.sum <= self.sum => SeriesStats {
                count: self.count - b.count,
                sum: self.sum - b.sum,
                mean: None,
                quantiles: self.quantiles,
            }
            .with_mean(),
            _ => self,
        }
    }
}

/// The group-commit series present on the server; each absent one stays `None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitMetrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_batch_size: Option<SeriesStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_queue_wait_seconds: Option<SeriesStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_duration_seconds: Option<SeriesStats>,
    /// PostgreSQL: from a batch's commit to its being durable (its callers wait; the next
    /// batch does not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_durable_wait_seconds: Option<SeriesStats>,
}

impl CommitMetrics {
    pub fn parse(text: &str) -> Self {
        CommitMetrics {
            commit_batch_size: series(text, BATCH_SIZE),
            commit_queue_wait_seconds: series(text, QUEUE_WAIT),
            commit_duration_seconds: series(text, DURATION),
            commit_durable_wait_seconds: series(text, DURABLE_WAIT),
        }
    }

    /// This snapshot minus an earlier one, so the report covers the run only.
    pub fn since(self, before: &CommitMetrics) -> Self {
        CommitMetrics {
            commit_batch_size: self
                .commit_batch_size
                .map(|s| s.since(before.commit_batch_size.as_ref())),
            commit_queue_wait_seconds: self
                .commit_queue_wait_seconds
                .map(|s| s.since(before.commit_queue_wait_seconds.as_ref())),
            commit_duration_seconds: self
                .commit_duration_seconds
                .map(|s| s.since(before.commit_duration_seconds.as_ref())),
            commit_durable_wait_seconds: self
                .commit_durable_wait_seconds
                .map(|s| s.since(before.commit_durable_wait_seconds.as_ref())),
        }
    }

    /// Report lines (without the `commit` prefix); none for an absent series.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(s) = &self.commit_batch_size {
            lines.push(match s.mean {
                Some(mean) => format!("{} batches, mean batch size {mean:.2}", s.count),
                None => format!("{} batches", s.count),
            });
        }
        for (name, stats) in [
            ("queue wait", &self.commit_queue_wait_seconds),
            ("duration  ", &self.commit_duration_seconds),
            ("disk wait ", &self.commit_durable_wait_seconds),
        ] {
            if let Some(s) = stats {
                lines.push(format!("{name}  {}", seconds_line(s)));
            }
        }
        lines
    }
}

/// "mean 0.42 ms  p50 0.30 ms  p99 1.90 ms" from a series in seconds.
fn seconds_line(s: &SeriesStats) -> String {
    let mut parts = vec![match s.mean {
        Some(mean) => format!("mean {:.2} ms", mean * 1000.0),
        None => "no samples".to_string(),
    }];
    for (quantile, value) in &s.quantiles {
        let name = match quantile.parse::<f64>() {
            Ok(q) => format!("p{}", format!("{:.1}", q * 100.0).trim_end_matches(".0")),
            Err(_) => format!("q{quantile}"),
        };
        parts.push(format!("{name} {:.2} ms", value * 1000.0));
    }
    parts.join("  ")
}

/// `base`'s `_sum`, `_count` and quantiles, summed over label sets; `None` when absent.
pub fn series(text: &str, base: &str) -> Option<SeriesStats> {
    let mut found = false;
    let mut count = 0.0;
    let mut stats = SeriesStats::default();
    for sample in text.lines().filter_map(parse_sample) {
        let Some(suffix) = sample.name.strip_prefix(base) else {
            continue;
        };
        match suffix {
            "_sum" => stats.sum += sample.value,
            "_count" => count += sample.value,
            "" => {
                let quantile = sample.labels.iter().find(|(k, _)| k == "quantile");
                if let Some((_, q)) = quantile
                    && sample.value.is_finite()
                {
                    // Quantiles of different label sets cannot be merged; the largest is an
                    // upper bound.
                    let entry = stats.quantiles.entry(q.clone()).or_insert(sample.value);
                    *entry = entry.max(sample.value);
                }
            }
            // `_bucket`, or another metric that merely shares the prefix.
            _ => continue,
        }
        found = true;
    }
    stats.count = count.max(0.0).round() as u64;
    found.then(|| stats.with_mean())
}

struct Sample<'a> {
    name: &'a str,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        (labels, rest) = parse_labels(body)?;
    }
    // Rust's float parser takes Prometheus' `NaN`, `+Inf` and `-Inf` too.
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `a="x",b="y\"z"}` → the pairs and what follows the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => {
                    let (_, escaped) = chars.next()?;
                    value.push(if escaped == 'n' { '\n' } else { escaped });
                }
                c => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
# TYPE shopd_commit_batch_size histogram
shopd_commit_batch_size_bucket{le="1"} 2
shopd_commit_batch_size_bucket{le="+Inf"} 10
shopd_commit_batch_size_sum 80
shopd_commit_batch_size_count 10
shopd_commit_batch_size_max 64
# TYPE shopd_commit_queue_wait_seconds summary
shopd_commit_queue_wait_seconds{backend="sqlite",quantile="0.5"} 0.001
shopd_commit_queue_wait_seconds{backend="sqlite",quantile="0.99"} 0.004
shopd_commit_queue_wait_seconds{backend="odd \"}\" name",quantile="0.99"} 0.005
shopd_commit_queue_wait_seconds{backend="sqlite",quantile="0.999"} NaN
shopd_commit_queue_wait_seconds_sum{backend="sqlite"} 0.1
shopd_commit_queue_wait_seconds_count{backend="sqlite"} 40
shopd_commit_queue_wait_seconds_sum{backend="odd \"}\" name"} 0.1
shopd_commit_queue_wait_seconds_count{backend="odd \"}\" name"} 60 1700000000000
http_requests_total{route="/orders"} 5
"#;

    #[test]
    fn histogram_and_summary_series() {
        let m = CommitMetrics::parse(TEXT);
        let batch = m.commit_batch_size.clone().unwrap_or_default();
        assert_eq!((batch.count, batch.sum, batch.mean), (10, 80.0, Some(8.0)));
        assert!(batch.quantiles.is_empty());

        let wait = m.commit_queue_wait_seconds.clone().unwrap_or_default();
        assert_eq!(wait.count, 100);
        assert_eq!(wait.mean, Some(0.2 / 100.0));
        assert_eq!(wait.quantiles.get("0.5"), Some(&0.001));
        assert_eq!(wait.quantiles.get("0.99"), Some(&0.005));
        assert_eq!(wait.quantiles.get("0.999"), None);

        assert_eq!(m.commit_duration_seconds, None);
        assert_eq!(
            m.lines(),
            [
                "10 batches, mean batch size 8.00",
                "queue wait  mean 2.00 ms  p50 1.00 ms  p99 5.00 ms",
            ]
        );
    }

    #[test]
    fn absent_series_print_nothing_and_deltas_cover_the_run() {
        let none = CommitMetrics::parse("# nothing\nhttp_requests_total 3\n");
        assert_eq!(none, CommitMetrics::default());
        assert!(none.lines().is_empty());
        assert_eq!(serde_json::to_string(&none).ok().as_deref(), Some("{}"));

        let before = CommitMetrics::parse(
            "shopd_commit_batch_size_sum 30\nshopd_commit_batch_size_count 6\n",
        );
        let run = CommitMetrics::parse(TEXT).since(&before);
        let batch = run.commit_batch_size.unwrap_or_default();
        assert_eq!((batch.count, batch.sum, batch.mean), (4, 50.0, Some(12.5)));
        // No baseline for this one: the totals stand.
        assert_eq!(run.commit_queue_wait_seconds.map(|s| s.count), Some(100));
    }
}

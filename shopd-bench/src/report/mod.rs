//! Tallies of what happened, the report (throughput, latency percentiles, outcomes, invariant,
//! the server's group-commit series) printed as text and optionally written as JSON.

pub mod metrics;

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::{Args, Scenario};
use crate::scenarios::ops::Outcome;
use metrics::CommitMetrics;

/// Per-client tallies, merged at the end (no shared locks on the hot path).
pub struct Tally {
    /// Microseconds.
    pub latency: Histogram<u64>,
    pub outcomes: BTreeMap<String, u64>,
    pub server_errors: u64,
    pub sold: BTreeMap<i64, i64>,
    pub charged: BTreeMap<usize, i64>,
}

impl Tally {
    pub fn new() -> Self {
        Tally {
            latency: Histogram::new_with_bounds(1, 120_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
            outcomes: BTreeMap::new(),
            server_errors: 0,
            sold: BTreeMap::new(),
            charged: BTreeMap::new(),
        }
    }

    pub fn record(&mut self, latency: Duration, outcome: Outcome) {
        let _ = self.latency.record((latency.as_micros() as u64).max(1));
        *self.outcomes.entry(outcome.label).or_default() += 1;
        self.server_errors += u64::from(outcome.server_error);
        for (product, quantity) in outcome.sold {
            *self.sold.entry(product).or_default() += quantity;
        }
        if let Some((member, amount)) = outcome.charged {
            *self.charged.entry(member).or_default() += amount;
        }
    }

    pub fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(&other.latency);
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        self.server_errors += other.server_errors;
        for (k, v) in other.sold {
            *self.sold.entry(k).or_default() += v;
        }
        for (k, v) in other.charged {
            *self.charged.entry(k).or_default() += v;
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub scenario: Scenario,
    pub mode: String,
    pub concurrency: usize,
    pub requests: u64,
    pub seconds: f64,
    pub throughput_per_sec: f64,
    pub successful: u64,
    pub successful_per_sec: f64,
    pub latency_ms: BTreeMap<&'static str, f64>,
    pub outcomes: BTreeMap<String, u64>,
    pub invariant_ok: bool,
    pub invariant_failures: Vec<String>,
    /// The server's group-commit series during the run, where it exports them.
    #[serde(flatten)]
    pub commit: CommitMetrics,
}

/// p50/p90/p99/max of a microsecond histogram, in milliseconds.
pub fn latency_ms(latency: &Histogram<u64>) -> BTreeMap<&'static str, f64> {
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    BTreeMap::from([
        ("p50", ms(0.50)),
        ("p90", ms(0.90)),
        ("p99", ms(0.99)),
        ("max", latency.max() as f64 / 1000.0),
    ])
}

pub fn report(
    args: &Args,
    tally: &Tally,
    elapsed: Duration,
    failures: Vec<String>,
    commit: CommitMetrics,
) -> Report {
    let requests = tally.latency.len();
    let successful: u64 = tally
        .outcomes
        .iter()
        .filter(|(k, _)| k.starts_with('2'))
        .map(|(_, v)| v)
        .sum();
    let seconds = elapsed.as_secs_f64();
    Report {
        scenario: args.scenario,
        mode: match args.rate {
            Some(rate) => format!("open-loop {rate}/s"),
            None => "closed-loop".to_string(),
        },
        concurrency: args.concurrency,
        requests,
        seconds,
        throughput_per_sec: requests as f64 / seconds,
        successful,
        successful_per_sec: successful as f64 / seconds,
        latency_ms: latency_ms(&tally.latency),
        outcomes: tally.outcomes.clone(),
        invariant_ok: failures.is_empty(),
        invariant_failures: failures,
        commit,
    }
}

pub fn print(r: &Report) {
    println!(
        "scenario   {:?} ({}, {} clients)",
        r.scenario, r.mode, r.concurrency
    );
    println!(
        "requests   {} in {:.2} s = {:.0} req/s ({} successful = {:.0}/s)",
        r.requests, r.seconds, r.throughput_per_sec, r.successful, r.successful_per_sec
    );
    println!(
        "latency    p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        r.latency_ms["p50"], r.latency_ms["p90"], r.latency_ms["p99"], r.latency_ms["max"]
    );
    for (outcome, count) in &r.outcomes {
        println!("outcome    {outcome:<40} {count}");
    }
    for line in r.commit.lines() {
        println!("commit     {line}");
    }
    if r.invariant_ok {
        println!("invariant  OK");
    } else {
        for f in &r.invariant_failures {
            println!("invariant  FAILED: {f}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(label: &str) -> Outcome {
        Outcome {
            label: label.to_string(),
            server_error: label.starts_with('5'),
            sold: vec![(7, 2)],
            charged: None,
        }
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut tally = Tally::new();
        for ms in 1..=1000u64 {
            tally.record(Duration::from_millis(ms), outcome("201"));
        }
        let p = latency_ms(&tally.latency);
        // hdrhistogram keeps 3 significant digits: within 0.1 %.
        for (key, expected) in [
            ("p50", 500.0),
            ("p90", 900.0),
            ("p99", 990.0),
            ("max", 1000.0),
        ] {
            let got = p[key];
            assert!(
                (got - expected).abs() <= expected * 0.001,
                "{key}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn empty_tally_reports_zeros_and_merge_adds_up() {
        assert!(
            latency_ms(&Tally::new().latency)
                .values()
                .all(|v| *v == 0.0)
        );
        let mut a = Tally::new();
        a.record(Duration::from_micros(0), outcome("201"));
        let mut b = Tally::new();
        b.record(Duration::from_millis(3), outcome("201"));
        b.record(Duration::from_millis(4), outcome("503"));
        a.merge(b);
        assert_eq!(a.latency.len(), 3);
        assert_eq!(a.outcomes["201"], 2);
        assert_eq!(a.server_errors, 1);
        assert_eq!(a.sold[&7], 6);
        // A zero latency is recorded as 1 µs, the histogram's lowest value.
        assert_eq!(a.latency.min(), 1);
    }
}

//! Driving a scenario: closed loop (N clients, each waits for its answer) or open loop (a fixed
//! arrival rate, latency measured from each request's scheduled time so a slow server cannot
//! hide queueing).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;

use super::Fixture;
use super::ops::{execute, next_op};
use crate::args::{Args, Scenario};
use crate::client::Client;
use crate::report::Tally;

/// Run the scenario; returns the merged tally and the wall time.
pub async fn run(client: &Client, args: &Args, fixture: Arc<Fixture>) -> (Tally, Duration) {
    let once_per_member = matches!(args.scenario, Scenario::FlashSale | Scenario::CouponRush);
    let limit = match (once_per_member, args.requests) {
        (true, _) => fixture.members.len() as u64,
        (false, Some(n)) => n,
        (false, None) => u64::MAX,
    };
    let deadline = if once_per_member {
        None
    } else {
        Some(Instant::now() + args.duration)
    };
    let started = Instant::now();
    let mut tally = Tally::new();
    match args.rate {
        None => {
            // Closed loop: each client sends its next request when the previous one answered.
            let next = Arc::new(AtomicU64::new(0));
            let mut workers = tokio::task::JoinSet::new();
            let bases: Vec<&String> = std::iter::once(&args.url)
                .chain(args.also_urls.iter())
                .collect();
            for worker in 0..args.concurrency {
                let (mut client, fixture, next, scenario) =
                    (client.clone(), fixture.clone(), next.clone(), args.scenario);
                client.base = bases[worker % bases.len()]
                    .trim_end_matches('/')
                    .to_string();
                workers.spawn(async move {
                    let mut tally = Tally::new();
                    let mut rng = rand::rngs::StdRng::from_os_rng();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= limit || deadline.is_some_and(|d| Instant::now() >= d) {
                            return tally;
                        }
                        let op = next_op(scenario, i, &fixture, &mut rng);
                        let sent = Instant::now();
                        let outcome = execute(&client, &fixture, op).await;
                        tally.record(sent.elapsed(), outcome);
                    }
                });
            }
            while let Some(worker) = workers.join_next().await {
                if let Ok(t) = worker {
                    tally.merge(t);
                }
            }
        }
        Some(rate) => {
            // Open loop: requests are due at fixed instants; latency counts from the due time.
            let permits = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let mut rng = rand::rngs::StdRng::from_os_rng();
            let mut i = 0u64;
            while i < limit {
                let due = started + interval.mul_f64(i as f64);
                if deadline.is_some_and(|d| due >= d) {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let op = next_op(args.scenario, i, &fixture, &mut rng);
                let (client, fixture, permits, tx) =
                    (client.clone(), fixture.clone(), permits.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let outcome = execute(&client, &fixture, op).await;
                    let _ = tx.send((due.elapsed(), outcome));
                });
                i += 1;
            }
            drop(tx);
            while let Some((latency, outcome)) = rx.recv().await {
                tally.record(latency, outcome);
            }
        }
    }
    (tally, started.elapsed())
}

//! `shopd-bench`: the load generator of SPEC §13, an HTTP client of a running shopd.
//!
//! It prepares its own data through the admin API (products, coupons, members, balances), runs
//! one scenario against a running server with N concurrent clients (closed loop: as fast as
//! the server answers; open loop: a fixed arrival rate, latency measured from each request's
//! scheduled time so a slow server cannot hide queueing), prints throughput, latency
//! percentiles, outcome counts and the server's group-commit series, and checks the
//! scenario's invariant on the final state, exiting non-zero when it fails.

mod args;
mod checks;
mod client;
mod report;
mod scenarios;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use args::Args;
use client::Client;
use report::metrics::CommitMetrics;

/// The server's group-commit series now; nothing (and a note) when `/metrics` cannot be read,
/// since the load figures stand without them.
async fn commit_metrics(client: &Client) -> CommitMetrics {
    match client.text("/metrics").await {
        Ok(text) => CommitMetrics::parse(&text),
        Err(err) => {
            eprintln!("metrics: {err:#}");
            CommitMetrics::default()
        }
    }
}

async fn main_async(args: Args) -> anyhow::Result<bool> {
    // Every scenario picks members by index.
    if args.members == 0 {
        anyhow::bail!("--members must be at least 1");
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.saturating_mul(2))
        .build()?;
    let client = Client {
        http,
        base: args.url.trim_end_matches('/').to_string(),
        admin: args.admin_token.clone(),
    };
    let fixture = Arc::new(scenarios::prepare(&client, &args).await?);
    let before = commit_metrics(&client).await;
    eprintln!("running {:?}...", args.scenario);
    let (tally, elapsed) = scenarios::run::run(&client, &args, fixture.clone()).await;
    eprintln!("checking the invariant...");
    let commit = commit_metrics(&client).await.since(&before);
    let failures = checks::check(&client, &args, &fixture, &tally).await?;
    let report = report::report(&args, &tally, elapsed, failures, commit);
    report::print(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(report.invariant_ok)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("shopd-bench: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(err) => {
            eprintln!("shopd-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

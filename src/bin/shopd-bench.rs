//! `shopd-bench`: the load generator of SPEC §13.
//!
//! It prepares its own data through the admin API (products, coupons, members, balances), runs
//! one scenario against a running server with N concurrent clients (closed loop: as fast as
//! the server answers; open loop: a fixed arrival rate, latency measured from each request's
//! scheduled time so a slow server cannot hide queueing), prints throughput, latency
//! percentiles and outcome counts, and checks the scenario's invariant on the final state,
//! exiting non-zero when it fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures::StreamExt;
use hdrhistogram::Histogram;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(name = "shopd-bench", about = "Load generator for shopd (SPEC §13)")]
struct Args {
    /// What to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Base URL of a running shopd.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Admin token of that server (used to prepare data and check invariants).
    #[arg(long, env = "SHOPD_ADMIN_TOKEN")]
    admin_token: String,
    /// Concurrent clients (closed loop) or the most requests in flight (open loop).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Stop after this long (closed/open loop; flash-sale and coupon-rush stop when every
    /// member has tried once).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many requests.
    #[arg(long)]
    requests: Option<u64>,
    /// Open loop: send this many requests per second regardless of answers.
    #[arg(long)]
    rate: Option<f64>,
    /// Members to create (each with ample balance).
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Products to create (uniform-orders, browse, mixed).
    #[arg(long, default_value_t = 1_000)]
    products: usize,
    /// Stock of the flash-sale product.
    #[arg(long, default_value_t = 1_000)]
    stock: i64,
    /// Quantity of the coupon-rush campaign.
    #[arg(long, default_value_t = 100)]
    coupon_quantity: i64,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// Members order 1–3 random products of many with ample stock, paying at once.
    UniformOrders,
    /// Every member races for one product with limited stock, once.
    FlashSale,
    /// Every member races to claim a limited coupon, once.
    CouponRush,
    /// Concurrent charges on a few members.
    ChargeStorm,
    /// Product list, product detail, best-sellers and cart reads.
    Browse,
    /// 80 % browse, 10 % cart, 7 % order and pay, 3 % charge.
    Mixed,
}

#[derive(Clone, Debug)]
struct Member {
    id: i64,
    token: String,
}

/// What the scenario prepared.
struct Fixture {
    members: Vec<Member>,
    products: Vec<i64>,
    /// Flash-sale product, coupon-rush campaign.
    target: Option<i64>,
}

/// One request to make.
#[derive(Debug)]
enum Op {
    Order {
        member: usize,
        items: Vec<(i64, i64)>,
    },
    Charge {
        member: usize,
        amount: i64,
    },
    Issue {
        member: usize,
        coupon: i64,
    },
    ListProducts,
    GetProduct(i64),
    Popular,
    GetCart {
        member: usize,
    },
    PutCart {
        member: usize,
        product: i64,
        quantity: i64,
    },
}

/// What happened to one request.
struct Outcome {
    /// "201", "409 PRODUCT_OUT_OF_STOCK", "error: connection refused"...
    label: String,
    server_error: bool,
    /// Successful orders: units sold per product. Successful charges: (member, amount).
    sold: Vec<(i64, i64)>,
    charged: Option<(usize, i64)>,
}

/// Per-client tallies, merged at the end (no shared locks on the hot path).
struct Tally {
    latency: Histogram<u64>,
    outcomes: BTreeMap<String, u64>,
    server_errors: u64,
    sold: BTreeMap<i64, i64>,
    charged: BTreeMap<usize, i64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latency: Histogram::new_with_bounds(1, 120_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
            outcomes: BTreeMap::new(),
            server_errors: 0,
            sold: BTreeMap::new(),
            charged: BTreeMap::new(),
        }
    }

    fn record(&mut self, latency: Duration, outcome: Outcome) {
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

    fn merge(&mut self, other: Tally) {
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

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    admin: String,
}

impl Client {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), String> {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await.map_err(|e| format!("{e}"))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| format!("{e}"))?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, body) = self
            .call(method, path, &self.admin, body)
            .await
            .map_err(anyhow::Error::msg)?;
        if !status.is_success() {
            anyhow::bail!("{path}: {status} {body}");
        }
        Ok(body)
    }
}

const PARALLEL_SETUP: usize = 32;

async fn create_members(client: &Client, n: usize, balance: i64) -> anyhow::Result<Vec<Member>> {
    let started = Instant::now();
    let members: Vec<anyhow::Result<Member>> = futures::stream::iter(0..n)
        .map(|i| async move {
            let body = client
                .admin(
                    Method::POST,
                    "/users",
                    Some(json!({ "name": format!("bench-{i}") })),
                )
                .await?;
            let id = body["id"]
                .as_i64()
                .ok_or_else(|| anyhow::anyhow!("no id"))?;
            let token = body["token"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no token"))?
                .to_string();
            let mut left = balance;
            while left > 0 {
                let amount = left.min(1_000_000);
                client
                    .admin(
                        Method::POST,
                        &format!("/users/{id}/balance/charge"),
                        Some(json!({ "amount": amount })),
                    )
                    .await?;
                left -= amount;
            }
            Ok(Member { id, token })
        })
        .buffer_unordered(PARALLEL_SETUP)
        .collect()
        .await;
    let members = members.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "setup: {n} members with balance {balance} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(members)
}

async fn create_products(
    client: &Client,
    n: usize,
    price: i64,
    stock: i64,
) -> anyhow::Result<Vec<i64>> {
    let ids: Vec<anyhow::Result<i64>> = futures::stream::iter(0..n)
        .map(|i| async move {
            let body =
                json!({ "name": format!("bench product {i}"), "price": price, "stock": stock });
            let created = client
                .admin(Method::POST, "/admin/products", Some(body))
                .await?;
            created["id"]
                .as_i64()
                .ok_or_else(|| anyhow::anyhow!("no id"))
        })
        .buffer_unordered(PARALLEL_SETUP)
        .collect()
        .await;
    ids.into_iter().collect()
}

async fn prepare(client: &Client, args: &Args) -> anyhow::Result<Fixture> {
    let ample = 5_000_000;
    Ok(match args.scenario {
        Scenario::UniformOrders | Scenario::Mixed | Scenario::Browse => {
            let products = create_products(client, args.products, 1_000, 1_000_000).await?;
            let members = create_members(client, args.members, ample).await?;
            Fixture {
                members,
                products,
                target: None,
            }
        }
        Scenario::FlashSale => {
            let product = create_products(client, 1, 30_000, args.stock).await?;
            let members = create_members(client, args.members, ample).await?;
            Fixture {
                members,
                target: product.first().copied(),
                products: product,
            }
        }
        Scenario::CouponRush => {
            let body = json!({
                "name": "bench rush", "discount": { "type": "FIXED", "value": 1000 },
                "totalQuantity": args.coupon_quantity, "issueEndsAt": "2999-01-01T00:00:00Z", "validDays": 7,
            });
            let coupon = client
                .admin(Method::POST, "/admin/coupons", Some(body))
                .await?["id"]
                .as_i64();
            let members = create_members(client, args.members, 0).await?;
            Fixture {
                members,
                products: Vec::new(),
                target: coupon,
            }
        }
        Scenario::ChargeStorm => {
            let members = create_members(client, args.members.min(10), 0).await?;
            Fixture {
                members,
                products: Vec::new(),
                target: None,
            }
        }
    })
}

/// The `i`-th request of the scenario.
fn next_op(scenario: Scenario, i: u64, f: &Fixture, rng: &mut impl Rng) -> Op {
    let any_member = |rng: &mut dyn rand::RngCore| rng.random_range(0..f.members.len());
    let order = |rng: &mut dyn rand::RngCore| {
        let lines = rng.random_range(1..=3usize);
        let mut items: Vec<(i64, i64)> = f
            .products
            .choose_multiple(rng, lines)
            .map(|p| (*p, 1))
            .collect();
        items.sort_unstable();
        Op::Order {
            member: rng.random_range(0..f.members.len()),
            items,
        }
    };
    let browse = |rng: &mut dyn rand::RngCore| match rng.random_range(0..4) {
        0 => Op::ListProducts,
        1 => Op::GetProduct(*f.products.choose(rng).unwrap_or(&1)),
        2 => Op::Popular,
        _ => Op::GetCart {
            member: rng.random_range(0..f.members.len()),
        },
    };
    match scenario {
        Scenario::UniformOrders => order(rng),
        // Each member tries exactly once, in order.
        Scenario::FlashSale => Op::Order {
            member: i as usize % f.members.len(),
            items: vec![(f.target.unwrap_or(0), 1)],
        },
        Scenario::CouponRush => Op::Issue {
            member: i as usize % f.members.len(),
            coupon: f.target.unwrap_or(0),
        },
        Scenario::ChargeStorm => Op::Charge {
            member: any_member(rng),
            amount: rng.random_range(1..=1_000),
        },
        Scenario::Browse => browse(rng),
        Scenario::Mixed => match rng.random_range(0..100) {
            0..80 => browse(rng),
            80..90 => Op::PutCart {
                member: any_member(rng),
                product: *f.products.choose(rng).unwrap_or(&1),
                quantity: rng.random_range(1..=3),
            },
            90..97 => order(rng),
            _ => Op::Charge {
                member: any_member(rng),
                amount: rng.random_range(1..=1_000),
            },
        },
    }
}

async fn execute(client: &Client, f: &Fixture, op: Op) -> Outcome {
    let token = |m: usize| f.members[m].token.as_str();
    let result = match &op {
        Op::Order { member, items } => {
            let body = json!({ "items": items.iter().map(|(p, q)| json!({ "productId": p, "quantity": q })).collect::<Vec<_>>() });
            client
                .call(Method::POST, "/orders", token(*member), Some(body))
                .await
        }
        Op::Charge { member, amount } => {
            let path = format!("/users/{}/balance/charge", f.members[*member].id);
            client
                .call(
                    Method::POST,
                    &path,
                    token(*member),
                    Some(json!({ "amount": amount })),
                )
                .await
        }
        Op::Issue { member, coupon } => {
            client
                .call(
                    Method::POST,
                    &format!("/coupons/{coupon}/issue"),
                    token(*member),
                    None,
                )
                .await
        }
        Op::ListProducts => {
            client
                .call(Method::GET, "/products?limit=20", &client.admin, None)
                .await
        }
        Op::GetProduct(id) => {
            client
                .call(Method::GET, &format!("/products/{id}"), &client.admin, None)
                .await
        }
        Op::Popular => {
            client
                .call(
                    Method::GET,
                    "/products/popular?days=3&limit=5",
                    &client.admin,
                    None,
                )
                .await
        }
        Op::GetCart { member } => {
            client
                .call(
                    Method::GET,
                    &format!("/users/{}/cart", f.members[*member].id),
                    token(*member),
                    None,
                )
                .await
        }
        Op::PutCart {
            member,
            product,
            quantity,
        } => {
            let path = format!("/users/{}/cart/items/{product}", f.members[*member].id);
            client
                .call(
                    Method::PUT,
                    &path,
                    token(*member),
                    Some(json!({ "quantity": quantity })),
                )
                .await
        }
    };
    match result {
        Err(err) => Outcome {
            label: format!("error: {err}"),
            server_error: true,
            sold: Vec::new(),
            charged: None,
        },
        Ok((status, body)) => {
            let label = match body["code"].as_str() {
                Some(code) if !status.is_success() => format!("{} {code}", status.as_u16()),
                _ => status.as_u16().to_string(),
            };
            let paid = status.is_success() && body["status"] == "PAID";
            Outcome {
                label,
                server_error: status.is_server_error(),
                sold: match (&op, paid) {
                    (Op::Order { items, .. }, true) => items.clone(),
                    _ => Vec::new(),
                },
                charged: match &op {
                    Op::Charge { member, amount } if status.is_success() => {
                        Some((*member, *amount))
                    }
                    _ => None,
                },
            }
        }
    }
}

/// Run the scenario; returns the merged tally and the wall time.
async fn run(client: &Client, args: &Args, fixture: Arc<Fixture>) -> (Tally, Duration) {
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
            for _ in 0..args.concurrency {
                let (client, fixture, next, scenario) =
                    (client.clone(), fixture.clone(), next.clone(), args.scenario);
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

/// Check the scenario's invariant on the server's final state.
async fn check(
    client: &Client,
    args: &Args,
    f: &Fixture,
    tally: &Tally,
) -> anyhow::Result<Vec<String>> {
    let mut failures = Vec::new();
    if tally.server_errors > 0 {
        failures.push(format!(
            "{} server errors or failed requests",
            tally.server_errors
        ));
    }
    match args.scenario {
        Scenario::FlashSale => {
            let product = f.target.unwrap_or(0);
            let stock = client
                .admin(Method::GET, &format!("/products/{product}"), None)
                .await?["stock"]
                .as_i64();
            let sold = tally.sold.get(&product).copied().unwrap_or(0);
            let expected = args.stock.min(f.members.len() as i64);
            if sold != expected {
                failures.push(format!("{sold} orders PAID, expected exactly {expected}"));
            }
            if stock != Some(args.stock - expected) {
                failures.push(format!(
                    "stock is {stock:?}, expected {}",
                    args.stock - expected
                ));
            }
        }
        Scenario::CouponRush => {
            let coupon = client
                .admin(
                    Method::GET,
                    &format!("/coupons/{}", f.target.unwrap_or(0)),
                    None,
                )
                .await?;
            let issued = tally.outcomes.get("201").copied().unwrap_or(0) as i64;
            let expected = args.coupon_quantity.min(f.members.len() as i64);
            if issued != expected {
                failures.push(format!(
                    "{issued} coupons issued, expected exactly {expected}"
                ));
            }
            if coupon["remainingQuantity"].as_i64() != Some(args.coupon_quantity - expected) {
                failures.push(format!(
                    "remainingQuantity is {}",
                    coupon["remainingQuantity"]
                ));
            }
        }
        Scenario::ChargeStorm => {
            for (i, m) in f.members.iter().enumerate() {
                let balance = client
                    .admin(Method::GET, &format!("/users/{}/balance", m.id), None)
                    .await?["balance"]
                    .as_i64();
                let expected = tally.charged.get(&i).copied().unwrap_or(0);
                if balance != Some(expected) {
                    failures.push(format!(
                        "member {}: balance {balance:?} but successful charges sum to {expected}",
                        m.id
                    ));
                }
            }
        }
        Scenario::UniformOrders | Scenario::Mixed => {
            // Sampled: every product this run sold, stock went down by exactly what was sold.
            let sold: Vec<(i64, i64)> =
                tally.sold.iter().map(|(p, q)| (*p, *q)).take(200).collect();
            for (product, quantity) in sold {
                let stock = client
                    .admin(Method::GET, &format!("/products/{product}"), None)
                    .await?["stock"]
                    .as_i64();
                // Mixed also leaves unpaid (402) orders holding stock; only uniform-orders is exact.
                let ok = match args.scenario {
                    Scenario::UniformOrders => stock == Some(1_000_000 - quantity),
                    _ => stock.is_some_and(|s| s <= 1_000_000 - quantity),
                };
                if !ok {
                    failures.push(format!(
                        "product {product}: stock {stock:?} after selling {quantity}"
                    ));
                }
            }
        }
        Scenario::Browse => {}
    }
    Ok(failures)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    scenario: Scenario,
    mode: String,
    concurrency: usize,
    requests: u64,
    seconds: f64,
    throughput_per_sec: f64,
    successful: u64,
    successful_per_sec: f64,
    latency_ms: BTreeMap<&'static str, f64>,
    outcomes: BTreeMap<String, u64>,
    invariant_ok: bool,
    invariant_failures: Vec<String>,
}

fn report(args: &Args, tally: &Tally, elapsed: Duration, failures: Vec<String>) -> Report {
    let requests = tally.latency.len();
    let successful: u64 = tally
        .outcomes
        .iter()
        .filter(|(k, _)| k.starts_with('2'))
        .map(|(_, v)| v)
        .sum();
    let ms = |q: f64| tally.latency.value_at_quantile(q) as f64 / 1000.0;
    let latency_ms = BTreeMap::from([
        ("p50", ms(0.50)),
        ("p90", ms(0.90)),
        ("p99", ms(0.99)),
        ("max", tally.latency.max() as f64 / 1000.0),
    ]);
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
        latency_ms,
        outcomes: tally.outcomes.clone(),
        invariant_ok: failures.is_empty(),
        invariant_failures: failures,
    }
}

fn print(r: &Report) {
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
    if r.invariant_ok {
        println!("invariant  OK");
    } else {
        for f in &r.invariant_failures {
            println!("invariant  FAILED: {f}");
        }
    }
}

async fn main_async(args: Args) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    let client = Client {
        http,
        base: args.url.trim_end_matches('/').to_string(),
        admin: args.admin_token.clone(),
    };
    let fixture = Arc::new(prepare(&client, &args).await?);
    eprintln!("running {:?}...", args.scenario);
    let (tally, elapsed) = run(&client, &args, fixture.clone()).await;
    let failures = check(&client, &args, &fixture, &tally).await?;
    let report = report(&args, &tally, elapsed, failures);
    print(&report);
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

//! Command line (clap).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(name = "shopd-bench", about = "Load generator for shopd (SPEC §13)")]
pub struct Args {
    /// What to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Base URL of a running shopd.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// More instances of the same service (same database), repeatable: the closed-loop clients
    /// are spread over `--url` and these, round robin. Data preparation, metrics and checks use
    /// `--url`.
    #[arg(long = "also-url")]
    pub also_urls: Vec<String>,
    /// Admin token of that server (used to prepare data and check invariants).
    #[arg(long, env = "SHOPD_ADMIN_TOKEN")]
    pub admin_token: String,
    /// Concurrent clients (closed loop) or the most requests in flight (open loop).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Stop after this long (closed/open loop; flash-sale and coupon-rush stop when every
    /// member has tried once).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Open loop: send this many requests per second regardless of answers.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Members to create (each with ample balance).
    #[arg(long, default_value_t = 10_000)]
    pub members: usize,
    /// Products to create (uniform-orders, browse, mixed).
    #[arg(long, default_value_t = 1_000)]
    pub products: usize,
    /// Stock of the flash-sale product.
    #[arg(long, default_value_t = 1_000)]
    pub stock: i64,
    /// Quantity of the coupon-rush campaign.
    #[arg(long, default_value_t = 100)]
    pub coupon_quantity: i64,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
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

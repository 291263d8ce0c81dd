//! The SPEC §13 scenarios: data preparation through the admin API (here), the requests each
//! scenario makes (`ops`) and the closed/open loop that drives them (`run`).

pub mod ops;
pub mod run;

use std::time::Instant;

use futures::StreamExt;
use reqwest::Method;
use serde_json::json;

use crate::args::{Args, Scenario};
use crate::client::Client;

#[derive(Clone, Debug)]
pub struct Member {
    pub id: i64,
    pub token: String,
}

/// What the scenario prepared.
pub struct Fixture {
    pub members: Vec<Member>,
    pub products: Vec<i64>,
    /// Flash-sale product, coupon-rush campaign.
    pub target: Option<i64>,
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

pub async fn prepare(client: &Client, args: &Args) -> anyhow::Result<Fixture> {
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
            // Each member orders once: one charge covers it (and keeps setup short for the
            // tens of thousands of members a hot-row run of a few seconds needs).
            let members = create_members(client, args.members, 1_000_000).await?;
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

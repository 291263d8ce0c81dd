//! The requests a scenario makes: which one comes next, and sending it.

use rand::Rng;
use rand::seq::IndexedRandom;
use reqwest::Method;
use serde_json::json;

use super::Fixture;
use crate::args::Scenario;
use crate::client::Client;

/// One request to make.
#[derive(Debug)]
pub enum Op {
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
pub struct Outcome {
    /// "201", "409 PRODUCT_OUT_OF_STOCK", "error: connection refused"...
    pub label: String,
    pub server_error: bool,
    /// Successful orders: units sold per product. Successful charges: (member, amount).
    pub sold: Vec<(i64, i64)>,
    pub charged: Option<(usize, i64)>,
}

/// The `i`-th request of the scenario.
pub fn next_op(scenario: Scenario, i: u64, f: &Fixture, rng: &mut impl Rng) -> Op {
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

pub async fn execute(client: &Client, f: &Fixture, op: Op) -> Outcome {
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

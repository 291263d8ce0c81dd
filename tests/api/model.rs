//! Model test: random sequences of operations (charge, create/restock/suspend products, create
//! campaigns, claim coupons, put/remove/clear cart lines, order items or from the cart (whole
//! or by `productIds`) with or without a coupon, pay now or later, cancel, expire by the
//! sweeper or at payment time, retries with the same idempotency key, a key reused for another
//! request) run against the real application over HTTP and, side by side, against a plain
//! in-memory model of balances, stock, coupons, carts and orders.
//!
//! Every answer must be the one the model predicts (status, error code, amounts). After every
//! step each member's balance and each product's stock are compared with the model, and after
//! a cart step or a payment that member's cart (lines, current prices, orderability, orderable
//! total); at the end of a case every cart, every order (status, payments, `fromCart`) and
//! every member's coupons too, the database holds
//! exactly the model's orders and no unfinished idempotency key, and the SPEC §9 invariants
//! hold (`invariants.rs`). A failing case is shrunk by proptest to a minimal sequence.
//!
//! Budget: cases of 1 to `SHOPD_MODEL_STEPS` operations (default 400) until
//! `SHOPD_MODEL_OPS` operations (default 5,000; setup steps not counted) have run, per backend:
//! 10,000 in one `cargo test`, about 4 minutes for both on a 2-core machine (each case's fresh
//! database is the fixed cost, hence few long cases). The summary (operations, cases, seconds,
//! outcomes) goes straight to stderr, shown without `--nocapture`. `SHOPD_MODEL_SEED` (a
//! number) replays one run's cases.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reqwest::Method;
use serde_json::{Value, json};
use shopd::{sql_execute, sql_scalar};

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp};
use crate::invariants::assert_invariants;

const MEMBERS: usize = 3;
const MAX_BALANCE: i64 = 200_000;
/// Operations per backend in one run (two backends: 10,000 in all).
const DEFAULT_OPS: usize = 5_000;
/// Most operations in one case.
const DEFAULT_STEPS: usize = 400;

#[test]
fn model_agrees_with_the_app_on_sqlite() {
    run(Backend::Sqlite);
}

#[test]
fn model_agrees_with_the_app_on_postgres() {
    run(Backend::Postgres);
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn run(backend: Backend) {
    let target: usize = env_number("SHOPD_MODEL_OPS", DEFAULT_OPS);
    let steps: usize = env_number("SHOPD_MODEL_STEPS", DEFAULT_STEPS);
    let seed: u64 = env_number("SHOPD_MODEL_SEED", rand::random());
    let config = Config {
        failure_persistence: None,
        // Shrinking reruns whole cases (a fresh database each): bound it.
        max_shrink_time: 300_000,
        ..Config::default()
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let strategy = proptest::collection::vec(op(), 1..=steps.max(1));
    let skipped = std::cell::Cell::new(false);
    let started = std::time::Instant::now();
    // Cases until `target` operations have run (shrinking a failure reruns cases: not counted).
    let (mut cases, mut ran) = (0usize, 0usize);
    while ran < target && !skipped.get() {
        let tree = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("generate a case: {e}"));
        cases += 1;
        ran += tree.current().len();
        let result = runner.run_one(tree, |ops| {
            // A runtime per case: dropping it stops that case's server, jobs and pools.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            if rt.block_on(run_case(backend, &ops)).is_none() {
                skipped.set(true);
            }
            Ok(())
        });
        if let Err(err) = result {
            panic!("model test failed ({backend:?}, SHOPD_MODEL_SEED={seed}): {err}");
        }
    }
    if !skipped.get() {
        // Straight to stderr, past the test harness's capture: the figures show in every run.
        use std::io::Write;
        let mut summary = format!(
            "model test ({backend:?}): {ran} operations in {cases} cases (≤ {steps} each), {:.0} s, seed {seed}\n",
            started.elapsed().as_secs_f64()
        );
        OUTCOMES.with(|o| {
            for (what, n) in o.borrow().iter() {
                summary.push_str(&format!("  {n:>6}  {what}\n"));
            }
        });
        let _ = std::io::stderr().lock().write_all(summary.as_bytes());
    }
}

/// One operation. Entities are chosen by [`Index`] among those that exist when it runs, so a
/// shrunk sequence stays meaningful.
#[derive(Clone, Debug)]
enum Op {
    Charge {
        member: usize,
        amount: i64,
        keyed: bool,
    },
    CreateProduct {
        price: i64,
        stock: i64,
    },
    Restock {
        product: Index,
        delta: i64,
        keyed: bool,
    },
    SetOnSale {
        product: Index,
        on_sale: bool,
    },
    CreateCampaign {
        discount: Discount,
        min_order: i64,
        quantity: i64,
    },
    Issue {
        member: usize,
        campaign: Index,
        keyed: bool,
    },
    Order {
        member: usize,
        items: Vec<(Index, i64)>,
        coupon: Option<CouponChoice>,
        pay: bool,
        keyed: bool,
    },
    Pay {
        order: Index,
        keyed: bool,
    },
    Cancel {
        order: Index,
        keyed: bool,
    },
    /// Let the order's reservation run out, then the sweeper (or a payment attempt) expires it.
    Expire {
        order: Index,
        by_sweeper: bool,
    },
    /// Set a product's quantity in the member's cart (adds the line if needed).
    CartPut {
        member: usize,
        product: Index,
        quantity: i64,
    },
    /// Remove a product from the cart (whether or not it is there).
    CartRemove {
        member: usize,
        product: Index,
    },
    CartClear {
        member: usize,
    },
    /// `POST /orders {fromCart: true}`: the whole cart, or only `productIds` — each mostly one
    /// in the cart (`true`), sometimes any product (`false`, rejected if not in the cart).
    CartOrder {
        member: usize,
        only: Option<Vec<(bool, Index)>>,
        coupon: Option<CouponChoice>,
        pay: bool,
        keyed: bool,
    },
    /// The last request sent with an idempotency key, again: the same answer, no effect.
    Retry,
    /// The last idempotency key with another request: `422 IDEMPOTENCY_KEY_REUSED`, no effect.
    ReuseKey,
}

/// Which coupon an order names: mostly one the member holds, sometimes any campaign's.
#[derive(Clone, Copy, Debug)]
struct CouponChoice {
    held: bool,
    index: Index,
}

#[derive(Clone, Copy, Debug)]
enum Discount {
    Fixed(i64),
    Percent(i64, Option<i64>),
}

impl Discount {
    fn json(self) -> Value {
        match self {
            Discount::Fixed(v) => json!({ "type": "FIXED", "value": v }),
            Discount::Percent(v, None) => json!({ "type": "PERCENT", "value": v }),
            Discount::Percent(v, Some(max)) => {
                json!({ "type": "PERCENT", "value": v, "maxAmount": max })
            }
        }
    }

    fn off(self, subtotal: i64) -> i64 {
        match self {
            Discount::Fixed(v) => v.min(subtotal),
            Discount::Percent(p, max) => {
                let off = subtotal * p / 100;
                max.map_or(off, |m| off.min(m))
            }
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let member = 0..MEMBERS;
    let discount = prop_oneof![
        (100i64..=3_000).prop_map(Discount::Fixed),
        (5i64..=50, proptest::option::of(300i64..=2_000))
            .prop_map(|(p, max)| Discount::Percent(p, max)),
    ];
    prop_oneof![
        3 => (member.clone(), 1i64..=80_000, any::<bool>())
            .prop_map(|(member, amount, keyed)| Op::Charge { member, amount, keyed }),
        1 => (100i64..=5_000, 0i64..=30).prop_map(|(price, stock)| Op::CreateProduct { price, stock }),
        2 => (any::<Index>(), -10i64..=15, any::<bool>()).prop_map(|(product, delta, keyed)| Op::Restock {
            product,
            delta: if delta == 0 { 1 } else { delta },
            keyed,
        }),
        // Mostly back on sale: suspended products pile up over a long case otherwise.
        1 => (any::<Index>(), proptest::bool::weighted(0.7))
            .prop_map(|(product, on_sale)| Op::SetOnSale { product, on_sale }),
        1 => (discount, 0i64..=6_000, 1i64..=3).prop_map(|(discount, min_order, quantity)| Op::CreateCampaign {
            discount,
            min_order,
            quantity,
        }),
        4 => (member.clone(), any::<Index>(), any::<bool>())
            .prop_map(|(member, campaign, keyed)| Op::Issue { member, campaign, keyed }),
        6 => (
            member.clone(),
            proptest::collection::vec((any::<Index>(), 1i64..=3), 1..=3),
            proptest::option::weighted(
                0.5,
                (proptest::bool::weighted(0.8), any::<Index>())
                    .prop_map(|(held, index)| CouponChoice { held, index }),
            ),
            proptest::bool::weighted(0.6),
            any::<bool>(),
        )
            .prop_map(|(member, items, coupon, pay, keyed)| Op::Order { member, items, coupon, pay, keyed }),
        3 => (any::<Index>(), any::<bool>()).prop_map(|(order, keyed)| Op::Pay { order, keyed }),
        2 => (any::<Index>(), any::<bool>()).prop_map(|(order, keyed)| Op::Cancel { order, keyed }),
        2 => (any::<Index>(), any::<bool>()).prop_map(|(order, by_sweeper)| Op::Expire { order, by_sweeper }),
        5 => (member.clone(), any::<Index>(), 1i64..=4)
            .prop_map(|(member, product, quantity)| Op::CartPut { member, product, quantity }),
        1 => (member.clone(), any::<Index>()).prop_map(|(member, product)| Op::CartRemove { member, product }),
        1 => member.clone().prop_map(|member| Op::CartClear { member }),
        3 => (
            member.clone(),
            proptest::option::weighted(
                0.4,
                proptest::collection::vec((proptest::bool::weighted(0.9), any::<Index>()), 1..=3),
            ),
            proptest::option::weighted(
                0.3,
                (proptest::bool::weighted(0.8), any::<Index>())
                    .prop_map(|(held, index)| CouponChoice { held, index }),
            ),
            proptest::bool::weighted(0.6),
            any::<bool>(),
        )
            .prop_map(|(member, only, coupon, pay, keyed)| Op::CartOrder { member, only, coupon, pay, keyed }),
        2 => Just(Op::Retry),
        1 => Just(Op::ReuseKey),
    ]
}

// ---- the model ----

struct Member {
    id: i64,
    token: String,
    balance: i64,
    /// Product index → quantity.
    cart: BTreeMap<usize, i64>,
}

struct Product {
    id: i64,
    price: i64,
    stock: i64,
    on_sale: bool,
}

struct Campaign {
    id: i64,
    discount: Discount,
    min_order: i64,
    total: i64,
    issued: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Pending,
    Paid,
    Cancelled,
    Expired,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Paid => "PAID",
            Status::Cancelled => "CANCELLED",
            Status::Expired => "EXPIRED",
        }
    }
}

struct Order {
    id: i64,
    member: usize,
    /// (product index, quantity), merged and in ascending product id.
    lines: Vec<(usize, i64)>,
    total: i64,
    /// The campaign whose coupon it holds.
    coupon: Option<usize>,
    status: Status,
    failed_payments: usize,
    /// Ordered from the cart: paying it removes its products from the cart.
    from_cart: bool,
}

/// A request as sent, to send again.
#[derive(Clone, Debug)]
struct Call {
    method: Method,
    path: String,
    token: String,
    body: Option<Value>,
    key: Option<String>,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    replayed: bool,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// Assert the status (and for an error, its code), and count the outcome.
    fn expect(&self, status: u16, code: Option<&str>, what: &'static str) {
        count(what);
        assert_eq!(self.status, status, "{what}: {}", self.body);
        if let Some(code) = code {
            assert_eq!(self.code(), code, "{what}: {}", self.body);
        }
    }
}

thread_local! {
    /// How often each outcome was seen (the cases of one backend run on one thread).
    static OUTCOMES: std::cell::RefCell<BTreeMap<&'static str, usize>> = Default::default();
}

fn count(what: &'static str) {
    OUTCOMES.with(|o| *o.borrow_mut().entry(what).or_default() += 1);
}

struct Model {
    members: Vec<Member>,
    products: Vec<Product>,
    campaigns: Vec<Campaign>,
    /// (member, campaign) → the order using the coupon, if any.
    coupons: BTreeMap<(usize, usize), Option<usize>>,
    orders: Vec<Order>,
    last_keyed: Option<(Call, Answer)>,
    keys: u64,
}

impl Model {
    fn key(&mut self, keyed: bool) -> Option<String> {
        keyed.then(|| {
            self.keys += 1;
            format!("model-{}", self.keys)
        })
    }

    fn admin_call(
        &self,
        method: Method,
        path: String,
        body: Option<Value>,
        key: Option<String>,
    ) -> Call {
        Call {
            method,
            path,
            token: ADMIN_TOKEN.to_string(),
            body,
            key,
        }
    }

    fn member_call(
        &self,
        member: usize,
        path: String,
        body: Option<Value>,
        key: Option<String>,
    ) -> Call {
        self.member_request(member, Method::POST, path, body, key)
    }

    fn member_request(
        &self,
        member: usize,
        method: Method,
        path: String,
        body: Option<Value>,
        key: Option<String>,
    ) -> Call {
        Call {
            method,
            path,
            token: self.members[member].token.clone(),
            body,
            key,
        }
    }

    /// A PENDING order becomes PAID: a cart order's products leave the cart.
    fn paid(&mut self, order: usize) {
        let o = &mut self.orders[order];
        assert_eq!(o.status, Status::Pending);
        o.status = Status::Paid;
        if o.from_cart {
            let cart = &mut self.members[o.member].cart;
            for (p, _) in &o.lines {
                cart.remove(p);
            }
        }
    }

    /// Stock and coupon back from a PENDING order that leaves without payment.
    fn release(&mut self, order: usize, to: Status) {
        let o = &mut self.orders[order];
        assert_eq!(o.status, Status::Pending);
        o.status = to;
        for &(p, q) in &o.lines {
            self.products[p].stock += q;
        }
        if let Some(c) = o.coupon {
            self.coupons.insert((o.member, c), None);
        }
    }
}

async fn send(app: &TestApp, call: &Call) -> Answer {
    let mut req = app
        .client
        .request(call.method.clone(), app.url(&call.path))
        .bearer_auth(&call.token);
    if let Some(key) = &call.key {
        req = req.header("idempotency-key", key);
    }
    if let Some(body) = &call.body {
        req = req.json(body);
    }
    let response = req.send().await.expect("request sent");
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    assert!(
        status < 500,
        "{} {}: {status} {body}",
        call.method,
        call.path
    );
    Answer {
        status,
        body,
        replayed,
    }
}

/// Send, and remember the request if it carried a key.
async fn send_and_remember(app: &TestApp, model: &mut Model, call: Call) -> Answer {
    let answer = send(app, &call).await;
    if call.key.is_some() {
        let kept = Answer {
            status: answer.status,
            body: answer.body.clone(),
            replayed: answer.replayed,
        };
        model.last_keyed = Some((call, kept));
    }
    answer
}

/// `None` when PostgreSQL is explicitly skipped.
async fn run_case(backend: Backend, ops: &[Op]) -> Option<()> {
    let app = TestApp::spawn_with(backend, |s| {
        s.max_balance = MAX_BALANCE;
        // The test runs the sweeper itself.
        s.sweep_interval = std::time::Duration::from_secs(3_600);
    })
    .await?;
    let mut model = Model {
        members: Vec::new(),
        products: Vec::new(),
        campaigns: Vec::new(),
        coupons: BTreeMap::new(),
        orders: Vec::new(),
        last_keyed: None,
        keys: 0,
    };
    for i in 0..MEMBERS {
        let (id, token) = app.member(&format!("member-{i}")).await;
        model.members.push(Member {
            id,
            token,
            balance: 0,
            cart: BTreeMap::new(),
        });
    }
    // Some balance, two products and a campaign from the first step on.
    for member in 0..MEMBERS {
        let charge = Op::Charge {
            member,
            amount: 10_000,
            keyed: false,
        };
        step(&app, &mut model, &charge).await;
    }
    for (price, stock) in [(1_000, 40), (2_500, 25)] {
        step(&app, &mut model, &Op::CreateProduct { price, stock }).await;
    }
    let campaign = Op::CreateCampaign {
        discount: Discount::Percent(15, Some(1_500)),
        min_order: 0,
        quantity: 2,
    };
    step(&app, &mut model, &campaign).await;
    for (n, op) in ops.iter().enumerate() {
        // The member whose cart the step may change.
        let cart_of = match op {
            &Op::CartPut { member, .. }
            | &Op::CartRemove { member, .. }
            | &Op::CartClear { member }
            | &Op::CartOrder { member, .. } => Some(member),
            &Op::Pay { order, .. } if !model.orders.is_empty() => {
                Some(model.orders[order.index(model.orders.len())].member)
            }
            _ => None,
        };
        step(&app, &mut model, op).await;
        compare_balances_and_stock(&app, &model, n, op).await;
        if let Some(member) = cart_of {
            compare_cart(&app, &model, member, &format!("after step {n} ({op:?})")).await;
        }
    }
    for member in 0..MEMBERS {
        compare_cart(&app, &model, member, "at the end").await;
    }
    compare_orders_and_coupons(&app, &model).await;
    assert_invariants(&app).await;
    Some(())
}

async fn step(app: &TestApp, model: &mut Model, op: &Op) {
    match op {
        &Op::Charge {
            member,
            amount,
            keyed,
        } => {
            let key = model.key(keyed);
            let path = format!("/users/{}/balance/charge", model.members[member].id);
            let call = model.member_call(member, path, Some(json!({ "amount": amount })), key);
            let answer = send_and_remember(app, model, call).await;
            let m = &mut model.members[member];
            if m.balance + amount > MAX_BALANCE {
                answer.expect(
                    400,
                    Some("BALANCE_LIMIT_EXCEEDED"),
                    "charge over the maximum",
                );
            } else {
                answer.expect(200, None, "charge");
                m.balance += amount;
                assert_eq!(answer.body["balance"], m.balance, "charge: new balance");
            }
        }
        &Op::CreateProduct { price, stock } => {
            let n = model.products.len();
            let body = json!({ "name": format!("product-{n}"), "price": price, "stock": stock });
            let call = model.admin_call(Method::POST, "/admin/products".into(), Some(body), None);
            let answer = send(app, &call).await;
            answer.expect(201, None, "create product");
            assert_eq!(answer.body["stock"], stock);
            model.products.push(Product {
                id: answer.body["id"].as_i64().expect("id"),
                price,
                stock,
                on_sale: true,
            });
        }
        &Op::Restock {
            product,
            delta,
            keyed,
        } => {
            let p = product.index(model.products.len());
            let key = model.key(keyed);
            let path = format!("/admin/products/{}/stock", model.products[p].id);
            let call = model.admin_call(Method::POST, path, Some(json!({ "delta": delta })), key);
            let answer = send_and_remember(app, model, call).await;
            let product = &mut model.products[p];
            if product.stock + delta < 0 {
                answer.expect(409, Some("STOCK_UNDERFLOW"), "stock below zero");
            } else {
                answer.expect(200, None, "restock");
                product.stock += delta;
                assert_eq!(answer.body["stock"], product.stock);
            }
        }
        &Op::SetOnSale { product, on_sale } => {
            let p = product.index(model.products.len());
            let status = if on_sale { "ON_SALE" } else { "SUSPENDED" };
            let path = format!("/admin/products/{}", model.products[p].id);
            let call =
                model.admin_call(Method::PATCH, path, Some(json!({ "status": status })), None);
            send(app, &call).await.expect(200, None, "set status");
            model.products[p].on_sale = on_sale;
        }
        &Op::CreateCampaign {
            discount,
            min_order,
            quantity,
        } => {
            let ends = chrono::Utc::now() + chrono::Duration::days(1);
            let body = json!({
                "name": format!("campaign-{}", model.campaigns.len()),
                "discount": discount.json(),
                "minOrderAmount": min_order,
                "totalQuantity": quantity,
                "issueEndsAt": ends,
                "validDays": 7,
            });
            let call = model.admin_call(Method::POST, "/admin/coupons".into(), Some(body), None);
            let answer = send(app, &call).await;
            answer.expect(201, None, "create campaign");
            model.campaigns.push(Campaign {
                id: answer.body["id"].as_i64().expect("id"),
                discount,
                min_order,
                total: quantity,
                issued: 0,
            });
        }
        &Op::Issue {
            member,
            campaign,
            keyed,
        } => {
            if model.campaigns.is_empty() {
                return;
            }
            let c = campaign.index(model.campaigns.len());
            let key = model.key(keyed);
            let path = format!("/coupons/{}/issue", model.campaigns[c].id);
            let call = model.member_call(member, path, None, key);
            let answer = send_and_remember(app, model, call).await;
            let campaign = &mut model.campaigns[c];
            let held = model.coupons.contains_key(&(member, c));
            if held {
                answer.expect(409, Some("COUPON_ALREADY_ISSUED"), "second claim");
            } else if campaign.issued == campaign.total {
                answer.expect(409, Some("COUPON_SOLD_OUT"), "claim when sold out");
            } else {
                answer.expect(201, None, "claim");
                campaign.issued += 1;
                model.coupons.insert((member, c), None);
            }
        }
        Op::Order {
            member,
            items,
            coupon,
            pay,
            keyed,
        } => {
            let source = Source::Items(items);
            place(app, model, *member, source, *coupon, *pay, *keyed).await
        }
        Op::CartOrder {
            member,
            only,
            coupon,
            pay,
            keyed,
        } => {
            let source = Source::Cart(only.as_deref());
            place(app, model, *member, source, *coupon, *pay, *keyed).await
        }
        &Op::CartPut {
            member,
            product,
            quantity,
        } => {
            let p = product.index(model.products.len());
            let path = format!(
                "/users/{}/cart/items/{}",
                model.members[member].id, model.products[p].id
            );
            let body = json!({ "quantity": quantity });
            let call = model.member_request(member, Method::PUT, path, Some(body), None);
            let answer = send(app, &call).await;
            let what = if model.members[member].cart.contains_key(&p) {
                "cart: change a quantity"
            } else {
                "cart: add a product"
            };
            answer.expect(200, None, what);
            model.members[member].cart.insert(p, quantity);
            assert_cart(model, member, &answer.body, "the PUT answer");
        }
        &Op::CartRemove { member, product } => {
            let p = product.index(model.products.len());
            let path = format!(
                "/users/{}/cart/items/{}",
                model.members[member].id, model.products[p].id
            );
            let call = model.member_request(member, Method::DELETE, path, None, None);
            let answer = send(app, &call).await;
            let what = if model.members[member].cart.remove(&p).is_some() {
                "cart: remove a product"
            } else {
                "cart: remove a product not in it"
            };
            answer.expect(204, None, what);
        }
        &Op::CartClear { member } => {
            let path = format!("/users/{}/cart", model.members[member].id);
            let call = model.member_request(member, Method::DELETE, path, None, None);
            let answer = send(app, &call).await;
            answer.expect(204, None, "cart: clear");
            model.members[member].cart.clear();
        }
        &Op::Pay { order, keyed } => {
            if model.orders.is_empty() {
                return;
            }
            let o = order.index(model.orders.len());
            let key = model.key(keyed);
            let answer = pay(app, model, o, key).await;
            let (member, total, status) = {
                let order = &model.orders[o];
                (order.member, order.total, order.status)
            };
            let balance = model.members[member].balance;
            match status {
                Status::Pending if balance >= total => {
                    answer.expect(200, None, "pay");
                    assert_eq!(answer.body["status"], "PAID");
                    model.members[member].balance -= total;
                    model.paid(o);
                }
                Status::Pending => {
                    answer.expect(402, Some("INSUFFICIENT_BALANCE"), "pay short");
                    model.orders[o].failed_payments += 1;
                }
                other => {
                    answer.expect(409, Some("ORDER_NOT_PAYABLE"), "pay again");
                    assert_eq!(answer.body["details"]["status"], other.as_str());
                }
            }
        }
        &Op::Cancel { order, keyed } => {
            if model.orders.is_empty() {
                return;
            }
            let o = order.index(model.orders.len());
            let key = model.key(keyed);
            let (member, id) = (model.orders[o].member, model.orders[o].id);
            let call = model.member_call(member, format!("/orders/{id}/cancel"), None, key);
            let answer = send_and_remember(app, model, call).await;
            if model.orders[o].status == Status::Pending {
                answer.expect(200, None, "cancel");
                assert_eq!(answer.body["status"], "CANCELLED");
                model.release(o, Status::Cancelled);
            } else {
                answer.expect(409, Some("ORDER_NOT_CANCELLABLE"), "cancel a closed order");
            }
        }
        &Op::Expire { order, by_sweeper } => {
            if model.orders.is_empty() {
                return;
            }
            let o = order.index(model.orders.len());
            if model.orders[o].status != Status::Pending {
                let expired = shopd::workers::expire_overdue_orders(app.state())
                    .await
                    .expect("sweep");
                assert_eq!(expired, 0, "nothing overdue");
                return;
            }
            // The reservation runs out: move its end into the past.
            let mut tx = app.db.begin().await.expect("begin");
            let past = shopd::store::now() - chrono::Duration::seconds(1);
            sql_execute!(
                &mut tx,
                "UPDATE orders SET expires_at = $1 WHERE id = $2",
                past,
                model.orders[o].id
            )
            .expect("backdate");
            tx.commit().await.expect("commit");
            if by_sweeper {
                let expired = shopd::workers::expire_overdue_orders(app.state())
                    .await
                    .expect("sweep");
                assert_eq!(expired, 1, "the sweeper expires the overdue order");
                count("expired by the sweeper");
            } else {
                let answer = pay(app, model, o, None).await;
                answer.expect(409, Some("ORDER_NOT_PAYABLE"), "expired at payment");
                assert_eq!(answer.body["details"]["status"], "EXPIRED");
            }
            model.release(o, Status::Expired);
        }
        Op::Retry => {
            let Some((call, first)) = model.last_keyed.take() else {
                return;
            };
            let again = send(app, &call).await;
            assert_eq!(
                (again.status, &again.body),
                (first.status, &first.body),
                "a retry with the same key answers the first answer: {call:?}"
            );
            assert!(again.replayed, "a retry is a replay: {call:?}");
            count("retry with the same key replayed");
            model.last_keyed = Some((call, first));
        }
        Op::ReuseKey => {
            let Some((call, _)) = &model.last_keyed else {
                return;
            };
            let mut other = call.clone();
            if call.token == ADMIN_TOKEN {
                let delta = match (&call.body, call.path.ends_with("/stock")) {
                    (Some(b), true) if b["delta"] == 1 => 2,
                    _ => 1,
                };
                other.path = format!("/admin/products/{}/stock", model.products[0].id);
                other.body = Some(json!({ "delta": delta }));
            } else {
                let member = model
                    .members
                    .iter()
                    .find(|m| m.token == call.token)
                    .expect("a member's call");
                let amount = match (&call.body, call.path.ends_with("/charge")) {
                    (Some(b), true) if b["amount"] == 1 => 2,
                    _ => 1,
                };
                other.path = format!("/users/{}/balance/charge", member.id);
                other.body = Some(json!({ "amount": amount }));
            }
            other.method = Method::POST;
            let answer = send(app, &other).await;
            answer.expect(
                422,
                Some("IDEMPOTENCY_KEY_REUSED"),
                "a key reused for another request",
            );
        }
    }
}

async fn pay(app: &TestApp, model: &mut Model, o: usize, key: Option<String>) -> Answer {
    let (member, id) = (model.orders[o].member, model.orders[o].id);
    let call = model.member_call(member, format!("/orders/{id}/pay"), None, key);
    send_and_remember(app, model, call).await
}

/// An order's lines (product index, quantity), or the status, code and outcome of its refusal.
type Planned = Result<Vec<(usize, i64)>, (u16, &'static str, &'static str)>;

/// Where an order's lines come from.
enum Source<'a> {
    Items(&'a [(Index, i64)]),
    /// From the cart: all of it, or only the chosen products.
    Cart(Option<&'a [(bool, Index)]>),
}

async fn place(
    app: &TestApp,
    model: &mut Model,
    member: usize,
    source: Source<'_>,
    coupon: Option<CouponChoice>,
    pay: bool,
    keyed: bool,
) {
    // Lines as the server sees them: merged per product, in ascending id (= creation order);
    // or why the request is refused before any line is reserved.
    let from_cart = matches!(source, Source::Cart(_));
    let (mut body, lines): (Value, Planned) = match source {
        Source::Items(items) => {
            let mut merged: BTreeMap<usize, i64> = BTreeMap::new();
            for (product, quantity) in items {
                *merged
                    .entry(product.index(model.products.len()))
                    .or_default() += quantity;
            }
            let body = json!({
                "items": items.iter().map(|(p, q)| json!({
                    "productId": model.products[p.index(model.products.len())].id,
                    "quantity": q,
                })).collect::<Vec<_>>(),
            });
            (body, Ok(merged.into_iter().collect()))
        }
        Source::Cart(only) => {
            let cart = &model.members[member].cart;
            let in_cart: Vec<usize> = cart.keys().copied().collect();
            let chosen: Option<Vec<usize>> = only.map(|only| {
                only.iter()
                    .map(|&(from_cart, index)| {
                        if from_cart && !in_cart.is_empty() {
                            in_cart[index.index(in_cart.len())]
                        } else {
                            index.index(model.products.len())
                        }
                    })
                    .collect()
            });
            let mut body = json!({ "fromCart": true });
            if let Some(chosen) = &chosen {
                body["productIds"] = chosen
                    .iter()
                    .map(|&p| json!(model.products[p].id))
                    .collect();
            }
            let lines = if cart.is_empty() {
                Err((409, "CART_EMPTY", "cart order, cart empty"))
            } else {
                match &chosen {
                    Some(chosen) if chosen.iter().any(|p| !cart.contains_key(p)) => Err((
                        400,
                        "VALIDATION_ERROR",
                        "cart order naming a product not in the cart",
                    )),
                    Some(chosen) => Ok(cart
                        .iter()
                        .filter(|(p, _)| chosen.contains(p))
                        .map(|(&p, &q)| (p, q))
                        .collect()),
                    None => Ok(cart.iter().map(|(&p, &q)| (p, q)).collect()),
                }
            };
            (body, lines)
        }
    };
    let held: Vec<usize> = model
        .coupons
        .keys()
        .filter(|(m, _)| *m == member)
        .map(|(_, c)| *c)
        .collect();
    let campaign = match coupon {
        Some(CouponChoice { held: true, index }) if !held.is_empty() => {
            Some(held[index.index(held.len())])
        }
        Some(CouponChoice { index, .. }) if !model.campaigns.is_empty() => {
            Some(index.index(model.campaigns.len()))
        }
        _ => None,
    };
    body["pay"] = json!(pay);
    if let Some(c) = campaign {
        body["couponId"] = json!(model.campaigns[c].id);
    }
    let key = model.key(keyed);
    let call = model.member_call(member, "/orders".into(), Some(body), key);
    let answer = send_and_remember(app, model, call).await;

    let lines = match lines {
        Ok(lines) => lines,
        Err((status, code, what)) => return answer.expect(status, Some(code), what),
    };
    if lines.iter().any(|&(p, _)| !model.products[p].on_sale) {
        return answer.expect(
            409,
            Some("PRODUCT_NOT_ON_SALE"),
            "order a suspended product",
        );
    }
    if lines.iter().any(|&(p, q)| model.products[p].stock < q) {
        return answer.expect(409, Some("PRODUCT_OUT_OF_STOCK"), "order beyond stock");
    }
    let subtotal: i64 = lines
        .iter()
        .map(|&(p, q)| model.products[p].price * q)
        .sum();
    let mut discount = 0;
    if let Some(c) = campaign {
        match model.coupons.get(&(member, c)) {
            None => return answer.expect(400, Some("COUPON_INVALID"), "a coupon not held"),
            Some(Some(_)) => return answer.expect(400, Some("COUPON_INVALID"), "a used coupon"),
            Some(None) => {}
        }
        let campaign = &model.campaigns[c];
        if subtotal < campaign.min_order {
            return answer.expect(400, Some("COUPON_INVALID"), "below the minimum order");
        }
        discount = campaign.discount.off(subtotal);
    }
    let total = subtotal - discount;
    let paid = pay && model.members[member].balance >= total;
    let id = if pay && !paid {
        answer.expect(402, Some("INSUFFICIENT_BALANCE"), "order, balance short");
        answer.body["details"]["orderId"].as_i64().expect("orderId")
    } else {
        let what = match (paid, discount > 0) {
            (true, true) => "order paid at once, with a discount",
            (true, false) => "order paid at once",
            (false, true) => "order to pay later, with a discount",
            (false, false) => "order to pay later",
        };
        answer.expect(201, None, what);
        if from_cart {
            count("  (of which from the cart)");
        }
        assert_eq!(answer.body["fromCart"], from_cart, "{}", answer.body);
        let expected = if paid { "PAID" } else { "PENDING" };
        assert_eq!(answer.body["status"], expected, "{}", answer.body);
        assert_eq!(
            (
                &answer.body["subtotal"],
                &answer.body["discount"],
                &answer.body["total"]
            ),
            (&json!(subtotal), &json!(discount), &json!(total)),
            "order amounts"
        );
        answer.body["id"].as_i64().expect("id")
    };
    for &(p, q) in &lines {
        model.products[p].stock -= q;
    }
    if paid {
        model.members[member].balance -= total;
    }
    let index = model.orders.len();
    if let Some(c) = campaign {
        model.coupons.insert((member, c), Some(index));
    }
    model.orders.push(Order {
        id,
        member,
        lines,
        total,
        coupon: campaign,
        status: Status::Pending,
        failed_payments: usize::from(pay && !paid),
        from_cart,
    });
    if paid {
        model.paid(index);
    }
}

async fn compare_balances_and_stock(app: &TestApp, model: &Model, n: usize, op: &Op) {
    for m in &model.members {
        assert_eq!(
            app.balance_of(m.id).await,
            m.balance,
            "member {} after step {n} ({op:?})",
            m.id
        );
    }
    for p in &model.products {
        assert_eq!(
            app.stock_of(p.id).await,
            p.stock,
            "product {} after step {n} ({op:?})",
            p.id
        );
    }
}

/// The member's cart as `GET /users/{id}/cart` shows it matches the model: lines in ascending
/// product id with current price and orderability, and the orderable total.
fn assert_cart(model: &Model, member: usize, cart: &Value, when: &str) {
    let m = &model.members[member];
    let items: Vec<(i64, i64, i64, bool)> = cart["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a cart has items: {cart}"))
        .iter()
        .map(|i| {
            (
                i["productId"].as_i64().expect("productId"),
                i["quantity"].as_i64().expect("quantity"),
                i["price"].as_i64().expect("price"),
                i["orderable"].as_bool().expect("orderable"),
            )
        })
        .collect();
    let expected: Vec<(i64, i64, i64, bool)> = m
        .cart
        .iter()
        .map(|(&p, &q)| {
            let p = &model.products[p];
            (p.id, q, p.price, p.on_sale && p.stock >= q)
        })
        .collect();
    assert_eq!(items, expected, "member {} cart {when}: {cart}", m.id);
    let orderable: i64 = expected.iter().filter(|i| i.3).map(|i| i.1 * i.2).sum();
    assert_eq!(
        cart["orderableTotal"], orderable,
        "member {} cart orderable total {when}",
        m.id
    );
}

async fn compare_cart(app: &TestApp, model: &Model, member: usize, when: &str) {
    let m = &model.members[member];
    let (status, cart) = app
        .get(&format!("/users/{}/cart", m.id), Some(&m.token))
        .await;
    assert_eq!(status, 200, "{cart}");
    assert_cart(model, member, &cart, when);
}

async fn compare_orders_and_coupons(app: &TestApp, model: &Model) {
    for o in &model.orders {
        let (status, order) = app
            .get(&format!("/orders/{}", o.id), Some(ADMIN_TOKEN))
            .await;
        assert_eq!(status, 200, "{order}");
        assert_eq!(
            order["status"],
            o.status.as_str(),
            "order {}: {order}",
            o.id
        );
        assert_eq!(order["total"], o.total, "order {}", o.id);
        assert_eq!(order["fromCart"], o.from_cart, "order {}", o.id);
        let payments = order["payments"].as_array().expect("payments");
        let count = |s: &str| payments.iter().filter(|p| p["status"] == s).count();
        assert_eq!(
            (count("SUCCEEDED"), count("FAILED")),
            (usize::from(o.status == Status::Paid), o.failed_payments),
            "order {} payments: {order}",
            o.id
        );
    }
    for (i, m) in model.members.iter().enumerate() {
        let (status, page) = app
            .get(
                &format!("/users/{}/coupons?status=ALL&limit=100", m.id),
                Some(&m.token),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let mut held: Vec<(i64, String)> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| {
                (
                    c["couponId"].as_i64().expect("couponId"),
                    c["status"].as_str().expect("status").to_string(),
                )
            })
            .collect();
        held.sort();
        let mut expected: Vec<(i64, String)> = model
            .coupons
            .iter()
            .filter(|((member, _), _)| *member == i)
            .map(|((_, c), used)| {
                let status = if used.is_some() { "USED" } else { "AVAILABLE" };
                (model.campaigns[*c].id, status.to_string())
            })
            .collect();
        expected.sort();
        assert_eq!(held, expected, "member {} coupons", m.id);
    }
    let mut conn = app.db.read().await.expect("read");
    let orders: i64 = sql_scalar!(&mut conn, "SELECT COUNT(*) FROM orders").expect("orders");
    assert_eq!(
        orders,
        model.orders.len() as i64,
        "every order once, retries included"
    );
    let unfinished: i64 = sql_scalar!(
        &mut conn,
        "SELECT COUNT(*) FROM idempotency_keys WHERE status <> 'DONE'"
    )
    .expect("keys");
    assert_eq!(unfinished, 0, "no idempotency key left unfinished");
}

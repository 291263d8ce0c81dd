//! `shopd seed-demo`: a small demo catalogue, coupon campaigns and members with balance,
//! printing the members' tokens.
//!
//! It fills an empty database only: run twice, it would duplicate the catalogue and create
//! members whose tokens nobody noted, so a database that already holds products, campaigns or
//! members is refused with a clear error and left as it is.

use std::fmt::Write;

use chrono::Duration;

use crate::auth::{generate_token, hash_token};
use crate::db::Db;
use crate::domain::coupon::{CampaignInput, DiscountType, NewCampaign};
use crate::domain::money::ChargeAmount;
use crate::domain::product::NewProduct;
use crate::store::{self, balance, coupons, products, users};

const PRODUCTS: &[(&str, &str, i64, i64)] = &[
    (
        "Americano beans 1kg",
        "Single-origin, medium roast",
        24_000,
        200,
    ),
    ("Ceramic mug", "350 ml, dishwasher safe", 12_000, 500),
    ("Pour-over kettle", "Gooseneck, 1 L", 45_000, 50),
    ("Paper filters (100)", "For 2-4 cup drippers", 4_500, 1_000),
    ("Hand grinder", "Conical burr", 89_000, 20),
    ("Limited tumbler", "Flash-sale edition", 30_000, 10),
];

const MEMBERS: &[(&str, i64)] = &[
    ("Kim Minji", 500_000),
    ("Lee Jun", 100_000),
    ("Park Seo", 30_000),
];

/// A demo campaign, open for 30 days.
struct DemoCampaign {
    name: &'static str,
    kind: DiscountType,
    value: i64,
    max_amount: Option<i64>,
    min_order_amount: i64,
    total_quantity: i64,
}

const CAMPAIGNS: &[DemoCampaign] = &[
    DemoCampaign {
        name: "Welcome 10%",
        kind: DiscountType::Percent,
        value: 10,
        max_amount: Some(5_000),
        min_order_amount: 10_000,
        total_quantity: 1_000,
    },
    DemoCampaign {
        name: "3,000 won off",
        kind: DiscountType::Fixed,
        value: 3_000,
        max_amount: None,
        min_order_amount: 20_000,
        total_quantity: 100,
    },
];

/// Insert the demo data in one transaction and describe it (with tokens) for printing.
pub async fn seed_demo(db: &Db) -> anyhow::Result<String> {
    let mut out = String::new();
    let now = store::now();
    let mut tx = db.begin().await?;
    let existing: i64 = crate::sql_scalar!(
        &mut tx,
        "SELECT CAST((SELECT COUNT(*) FROM products) + (SELECT COUNT(*) FROM coupons)
                    + (SELECT COUNT(*) FROM users) AS BIGINT)"
    )?;
    if existing > 0 {
        anyhow::bail!(
            "seed-demo fills an empty database only, and this one already holds products, \
             coupons or members: nothing was changed (use a fresh --database-url)"
        );
    }
    writeln!(out, "Products:")?;
    for (name, description, price, stock) in PRODUCTS {
        let product = NewProduct::parse(name, Some(description), *price, *stock, None)
            .map_err(anyhow::Error::new)?;
        let row = products::create_product(&mut tx, &product, now)
            .await
            .map_err(anyhow::Error::new)?;
        writeln!(
            out,
            "  #{:<4} {:<24} {:>8} won  stock {}",
            row.id, row.name, row.price, row.stock
        )?;
    }
    writeln!(out, "Coupon campaigns (open for 30 days):")?;
    for c in CAMPAIGNS {
        let input = CampaignInput {
            name: c.name,
            discount_type: c.kind,
            discount_value: c.value,
            max_amount: c.max_amount,
            min_order_amount: Some(c.min_order_amount),
            total_quantity: c.total_quantity,
            issue_starts_at: Some(now),
            issue_ends_at: now + Duration::days(30),
            valid_days: 7,
        };
        let campaign = NewCampaign::parse(input, now).map_err(anyhow::Error::new)?;
        let row = coupons::create_campaign(&mut tx, &campaign, now)
            .await
            .map_err(anyhow::Error::new)?;
        writeln!(
            out,
            "  #{:<4} {:<24} quantity {}",
            row.id, row.name, row.total_quantity
        )?;
    }
    writeln!(out, "Members (tokens are shown only now):")?;
    for (name, initial_balance) in MEMBERS {
        let token = generate_token("shp_");
        let user = users::create_user(
            &mut tx,
            users::CreateUser {
                name,
                token_hash: &hash_token(&token),
                now,
            },
        )
        .await
        .map_err(anyhow::Error::new)?;
        if *initial_balance > 0 {
            let amount = ChargeAmount::parse(*initial_balance, &Default::default())
                .map_err(anyhow::Error::new)?;
            let cmd = balance::Charge {
                user_id: user.id,
                amount,
                max_balance: i64::MAX,
                now,
            };
            balance::charge(&mut tx, cmd)
                .await
                .map_err(anyhow::Error::new)?;
        }
        writeln!(
            out,
            "  #{:<4} {:<10} balance {:>8}  token {token}",
            user.id, user.name, initial_balance
        )?;
    }
    tx.commit().await?;
    Ok(out)
}

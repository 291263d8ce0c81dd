//! `shopd seed-demo`: a small demo catalogue and members with balance, printing their tokens.

use std::fmt::Write;

use crate::auth::{generate_token, hash_token};
use crate::db::Db;
use crate::domain::money::ChargeAmount;
use crate::domain::product::NewProduct;
use crate::store::{self, balance, products, users};

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
    ("Park Seo", 0),
];

/// Insert the demo data in one transaction and describe it (with tokens) for printing.
pub async fn seed_demo(db: &Db) -> anyhow::Result<String> {
    let mut out = String::new();
    let now = store::now();
    let mut tx = db.begin().await?;
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

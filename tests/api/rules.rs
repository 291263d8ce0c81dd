//! Operational rules of SPEC §2, §7 and §12 that had no test.

use reqwest::StatusCode;
use serde_json::json;
use shopd::db::{Locks, Tx};
use shopd::error::AppError;
use shopd::{sql_execute, sql_scalar};

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    several_admin_tokens_are_each_accepted,
    idempotency_keys_are_kept_a_day_then_purged,
    the_periodic_sweep_expires_unpaid_orders_by_itself,
);

/// The background sweeper (not a direct call) expires an unpaid order once its reservation
/// runs out, giving the stock back.
async fn the_periodic_sweep_expires_unpaid_orders_by_itself(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.reservation_ttl = std::time::Duration::from_millis(300);
        s.sweep_interval = std::time::Duration::from_millis(100);
    })
    .await
    else {
        return;
    };
    let product = app.product("Mug", 1_000, 10).await;
    let (_, token) = app.member("Ann").await;
    let (status, order) = app
        .order(&token, &[(product, 3)], json!({ "pay": false }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(app.stock_of(product).await, 7, "reserved");
    let id = order["id"].as_i64().expect("id");
    let app = &app;
    let token = &token;
    assert!(
        crate::helpers::eventually(5, || async move {
            let (_, order) = app.get(&format!("/orders/{id}"), Some(token)).await;
            order["status"] == "EXPIRED"
        })
        .await,
        "the sweeper expired the order on its own"
    );
    assert_eq!(app.stock_of(product).await, 10, "stock given back");
}

async fn several_admin_tokens_are_each_accepted(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.admin_token = vec!["ops-token-one".into(), "ops-token-two".into()];
    })
    .await
    else {
        return;
    };
    for token in ["ops-token-one", "ops-token-two"] {
        let (status, body) = app.get("/admin/products", Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{token}: {body}");
    }
    let (status, body) = app.get("/admin/products", Some("ops-token-three")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

async fn idempotency_keys_are_kept_a_day_then_purged(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (user_id, token) = app.member("Ann").await;
    let path = format!("/users/{user_id}/balance/charge");
    for key in ["old-key", "recent-key"] {
        let (status, body) = app
            .post_idem(&path, Some(&token), json!({ "amount": 100 }), key)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Age the keys: one 26 h old, the other 23 h old.
    let (old, recent) = (
        shopd::store::now() - chrono::Duration::hours(26),
        shopd::store::now() - chrono::Duration::hours(23),
    );
    app.db
        .write(Locks::none(), async move |tx: &mut Tx| {
            sql_execute!(
                tx,
                "UPDATE idempotency_keys SET created_at = $1 WHERE idem_key = $2",
                old,
                "old-key"
            )?;
            sql_execute!(
                tx,
                "UPDATE idempotency_keys SET created_at = $1 WHERE idem_key = $2",
                recent,
                "recent-key"
            )?;
            Ok::<_, AppError>(())
        })
        .await
        .expect("age keys");
    shopd::workers::purge_idempotency_keys(app.state())
        .await
        .expect("purge");
    let mut conn = app.db.read().await.expect("read");
    let left: i64 = sql_scalar!(
        &mut conn,
        "SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = $1",
        "old-key"
    )
    .expect("count");
    assert_eq!(left, 0, "a key older than the retention is purged");
    let kept: i64 = sql_scalar!(
        &mut conn,
        "SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = $1",
        "recent-key"
    )
    .expect("count");
    assert_eq!(kept, 1, "a key younger than a day is kept");
    drop(conn);
    // The kept key still replays; the purged one would run again (a new charge).
    let (status, _) = app
        .post_idem(&path, Some(&token), json!({ "amount": 100 }), "recent-key")
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, balance) = app
        .get(&format!("/users/{user_id}/balance"), Some(&token))
        .await;
    assert_eq!(
        balance["balance"], 200,
        "the recent key replayed, nothing charged twice"
    );
}

/// Every `serve` option can be set from a `SHOPD_*` environment variable (SPEC §12).
#[tokio::test]
async fn every_serve_option_has_an_environment_variable() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shopd"))
        .args(["serve", "--help"])
        .output()
        .await
        .expect("run shopd");
    let help = String::from_utf8_lossy(&output.stdout);
    let mut options = 0;
    let mut block = String::new();
    let check = |block: &str| {
        let flag = block.split_whitespace().next().unwrap_or_default();
        if flag.starts_with("--") && flag != "--help" && flag != "-h," {
            assert!(
                block.contains("[env: SHOPD_"),
                "{flag} has no SHOPD_ variable:\n{block}"
            );
            return 1;
        }
        0
    };
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("--") || trimmed.starts_with("-h") {
            options += check(&block);
            block.clear();
        }
        block.push_str(trimmed);
        block.push(' ');
    }
    options += check(&block);
    assert!(options >= 20, "found only {options} options in:\n{help}");
}

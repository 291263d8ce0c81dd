//! Order races (SPEC §9): many concurrent orders, then the invariants from the database.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, TestApp, code};
use crate::invariants::assert_invariants;
use crate::on_both_backends;

on_both_backends!(
    thousand_members_race_for_a_hundred_units,
    one_member_cannot_overspend_with_concurrent_orders,
    one_coupon_in_ten_concurrent_orders_is_used_once,
    same_idempotency_key_places_one_order,
    opposite_lock_orders_do_not_deadlock,
    paying_and_cancelling_race_cleanly,
);

async fn thousand_members_race_for_a_hundred_units(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let product = app.product("Limited tumbler", 30_000, 100).await;
    let members = app.members_bulk(1_000).await;
    app.fund_bulk(&members, 100_000).await;
    let results = join_all(
        members
            .iter()
            .map(|(_, token)| app.order(token, &[(product, 1)], json!({}))),
    )
    .await;
    let paid = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::CREATED && b["status"] == "PAID")
        .count();
    let out = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && code(b) == "PRODUCT_OUT_OF_STOCK")
        .count();
    assert_eq!(
        (paid, out),
        (100, 900),
        "{:?}",
        results.iter().find(|(s, _)| s.is_server_error())
    );
    assert_eq!(app.stock_of(product).await, 0);
    assert_invariants(&app).await;
}

async fn one_member_cannot_overspend_with_concurrent_orders(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let product = app.product("Mug", 10_000, 100).await;
    let (id, token) = app.member("eager").await;
    app.charge(id, &token, 50_000).await;
    let results = join_all((0..20).map(|_| app.order(&token, &[(product, 1)], json!({})))).await;
    let paid = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let short = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::PAYMENT_REQUIRED && code(b) == "INSUFFICIENT_BALANCE")
        .count();
    assert_eq!((paid, short), (5, 15), "{results:?}");
    assert_eq!(
        app.balance_of(id).await,
        0,
        "paid total = initial balance, never below zero"
    );
    // The 15 unpaid orders hold their stock until they expire or are cancelled.
    assert_eq!(app.stock_of(product).await, 80);
    assert_invariants(&app).await;
}

async fn one_coupon_in_ten_concurrent_orders_is_used_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let product = app.product("Mug", 10_000, 100).await;
    let coupon = app
        .campaign(json!({ "type": "FIXED", "value": 5_000 }), 0, 10)
        .await;
    let (id, token) = app.member("eager").await;
    app.charge(id, &token, 500_000).await;
    app.issue(coupon, &token).await;
    let results = join_all(
        (0..10).map(|_| app.order(&token, &[(product, 1)], json!({ "couponId": coupon }))),
    )
    .await;
    let ok = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let invalid = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::BAD_REQUEST && code(b) == "COUPON_INVALID")
        .count();
    assert_eq!((ok, invalid), (1, 9), "{results:?}");
    assert_eq!(app.stock_of(product).await, 99);
    assert_invariants(&app).await;
}

async fn same_idempotency_key_places_one_order(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let product = app.product("Mug", 10_000, 100).await;
    let (id, token) = app.member("retrier").await;
    app.charge(id, &token, 500_000).await;
    let body = json!({ "items": [{ "productId": product, "quantity": 1 }] });
    let results = join_all(
        (0..20).map(|_| app.post_idem("/orders", Some(&token), body.clone(), "order-once")),
    )
    .await;
    for (status, body) in &results {
        assert!(
            *status == StatusCode::CREATED
                || (*status == StatusCode::CONFLICT && code(body) == "IDEMPOTENCY_IN_PROGRESS"),
            "{status}: {body}"
        );
    }
    let (status, replay) = app
        .post_idem("/orders", Some(&token), body.clone(), "order-once")
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, orders) = app.get(&format!("/users/{id}/orders"), Some(&token)).await;
    assert_eq!(orders["items"].as_array().unwrap().len(), 1, "one order");
    assert_eq!(orders["items"][0]["id"], replay["id"]);
    assert_eq!(app.balance_of(id).await, 490_000);
    assert_invariants(&app).await;
}

async fn opposite_lock_orders_do_not_deadlock(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let a = app.product("A", 1_000, 10_000).await;
    let b = app.product("B", 1_000, 10_000).await;
    let c = app.product("C", 1_000, 10_000).await;
    let members = app.members_bulk(60).await;
    app.fund_bulk(&members, 100_000).await;
    let results = join_all(members.iter().enumerate().map(|(i, (_, token))| {
        let items = match i % 3 {
            0 => vec![(a, 1), (b, 2), (c, 3)],
            1 => vec![(c, 3), (b, 2), (a, 1)],
            _ => vec![(b, 2), (c, 3), (a, 1)],
        };
        app.order(token, &items, json!({}))
    }))
    .await;
    assert!(
        results.iter().all(|(s, _)| *s == StatusCode::CREATED),
        "{:?}",
        results.iter().find(|(s, _)| *s != StatusCode::CREATED)
    );
    assert_eq!(
        (
            app.stock_of(a).await,
            app.stock_of(b).await,
            app.stock_of(c).await
        ),
        (9_940, 9_880, 9_820)
    );
    assert_invariants(&app).await;
}

async fn paying_and_cancelling_race_cleanly(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let product = app.product("Mug", 1_000, 1_000).await;
    let members = app.members_bulk(30).await;
    app.fund_bulk(&members, 100_000).await;
    let mut order_ids = Vec::new();
    for (_, token) in &members {
        let (_, order) = app
            .order(token, &[(product, 2)], json!({ "pay": false }))
            .await;
        order_ids.push(order["id"].as_i64().unwrap());
    }
    // For every order, a pay and a cancel race (twice each): exactly one wins.
    let app = &app;
    let results = join_all(members.iter().zip(&order_ids).flat_map(|((_, token), id)| {
        ["pay", "cancel", "pay", "cancel"].map(|action| {
            let path = format!("/orders/{id}/{action}");
            async move { app.post(&path, Some(token), json!(null)).await }
        })
    }))
    .await;
    assert!(
        results.iter().all(|(s, _)| !s.is_server_error()),
        "{:?}",
        results.iter().find(|(s, _)| s.is_server_error())
    );
    for chunk in results.chunks(4) {
        let winners = chunk.iter().filter(|(s, _)| *s == StatusCode::OK).count();
        assert_eq!(winners, 1, "{chunk:?}");
    }
    assert_invariants(app).await;
}

//! Races: many concurrent requests, then the SPEC §9 invariants on the final state.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, code};
use crate::invariants::assert_invariants;
use crate::on_both_backends;

on_both_backends!(
    hundred_concurrent_charges_all_land,
    charges_through_two_instances_add_up,
    charges_racing_to_the_maximum_never_exceed_it,
    same_idempotency_key_charges_once,
    concurrent_stock_corrections_never_underflow,
);

async fn hundred_concurrent_charges_all_land(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    let results = join_all((0..100).map(|_| app.charge(id, &token, 1_000))).await;
    assert!(
        results.iter().all(|(s, _)| *s == StatusCode::OK),
        "{results:?}"
    );
    let (_, body) = app.get(&format!("/users/{id}/balance"), Some(&token)).await;
    assert_eq!(body["balance"], 100_000);
    let mut conn = app.db.read().await.unwrap();
    let rows: i64 = shopd::sql_scalar!(
        &mut conn,
        "SELECT COUNT(*) FROM balance_ledger WHERE user_id = $1",
        id
    )
    .unwrap();
    assert_eq!(rows, 100);
    assert_invariants(&app).await;
}

async fn charges_racing_to_the_maximum_never_exceed_it(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| s.max_balance = 50_000).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    let results = join_all((0..100).map(|_| app.charge(id, &token, 1_000))).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let limited = results
        .iter()
        .filter(|(_, b)| code(b) == "BALANCE_LIMIT_EXCEEDED")
        .count();
    assert_eq!((ok, limited), (50, 50), "{results:?}");
    let (_, body) = app.get(&format!("/users/{id}/balance"), Some(&token)).await;
    assert_eq!(body["balance"], 50_000);
    assert_invariants(&app).await;
}

async fn same_idempotency_key_charges_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    let path = format!("/users/{id}/balance/charge");
    let results = join_all(
        (0..20).map(|_| app.post_idem(&path, Some(&token), json!({ "amount": 1_000 }), "same-key")),
    )
    .await;
    for (status, body) in &results {
        match *status {
            StatusCode::OK => assert_eq!(body["balance"], 1_000),
            StatusCode::CONFLICT => assert_eq!(code(body), "IDEMPOTENCY_IN_PROGRESS"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(results.iter().any(|(s, _)| *s == StatusCode::OK));
    // Once the first finished, every retry replays it.
    let (status, body) = app
        .post_idem(&path, Some(&token), json!({ "amount": 1_000 }), "same-key")
        .await;
    assert_eq!(
        (status, body["balance"].as_i64()),
        (StatusCode::OK, Some(1_000))
    );
    let (_, body) = app.get(&format!("/users/{id}/balance"), Some(&token)).await;
    assert_eq!(body["balance"], 1_000, "charged exactly once");
    assert_invariants(&app).await;
}

async fn concurrent_stock_corrections_never_underflow(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = app.product("Mug", 1_000, 30).await;
    let path = format!("/admin/products/{id}/stock");
    let results =
        join_all((0..50).map(|_| app.post(&path, Some(ADMIN_TOKEN), json!({ "delta": -1 })))).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let underflow = results
        .iter()
        .filter(|(_, b)| code(b) == "STOCK_UNDERFLOW")
        .count();
    assert_eq!((ok, underflow), (30, 20));
    let (_, body) = app.get(&format!("/products/{id}"), None).await;
    assert_eq!(body["stock"], 0);
    assert_invariants(&app).await;
}

async fn charges_through_two_instances_add_up(backend: Backend) {
    let Some(first) = TestApp::spawn(backend).await else {
        return;
    };
    let second = first.second_instance().await;
    let (id, token) = first.member("kim").await;
    let results = join_all((0..100).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.charge(id, &token, 1_000)
    }))
    .await;
    assert!(
        results.iter().all(|(s, _)| *s == StatusCode::OK),
        "{results:?}"
    );
    let (_, body) = second
        .get(&format!("/users/{id}/balance"), Some(&token))
        .await;
    assert_eq!(body["balance"], 100_000);
    assert_invariants(&first).await;
}

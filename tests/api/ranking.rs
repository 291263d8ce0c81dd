//! Best-sellers from precomputed aggregates (SPEC §11).

use chrono::Duration;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, code};
use crate::on_both_backends;

on_both_backends!(
    best_sellers_rank_paid_sales_by_day,
    ranking_bounds_and_idempotent_job,
);

/// Pay an order and move its payment `days_ago` days into the past.
async fn sell(app: &TestApp, token: &str, items: &[(i64, i64)], days_ago: i64) -> i64 {
    let (status, order) = app.order(token, items, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let id = order["id"].as_i64().unwrap();
    if days_ago > 0 {
        let paid_at = shopd::store::now() - Duration::days(days_ago);
        let mut tx = app.db.begin().await.unwrap();
        shopd::sql_execute!(
            &mut tx,
            "UPDATE orders SET paid_at = $1 WHERE id = $2",
            paid_at,
            id
        )
        .unwrap();
        tx.commit().await.unwrap();
    }
    id
}

fn ranking(body: &Value) -> Vec<(i64, i64, i64)> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["productId"].as_i64().unwrap(),
                i["soldQuantity"].as_i64().unwrap(),
                i["revenue"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn best_sellers_rank_paid_sales_by_day(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("buyer").await;
    for _ in 0..3 {
        app.charge(id, &token, 1_000_000).await;
    }
    let a = app.product("A", 1_000, 1_000).await;
    let b = app.product("B", 2_000, 1_000).await;
    let c = app.product("C", 1_000, 1_000).await;
    let d = app.product("D", 500, 1_000).await;

    sell(&app, &token, &[(a, 5)], 0).await;
    sell(&app, &token, &[(b, 3), (c, 3)], 0).await; // B ties C on quantity, wins on revenue
    sell(&app, &token, &[(c, 1)], 1).await;
    sell(&app, &token, &[(d, 20)], 5).await; // only within 7 days
    sell(&app, &token, &[(a, 1)], 40).await; // outside any window
    // Orders that are not PAID never count.
    app.order(&token, &[(d, 100)], json!({ "pay": false }))
        .await;
    let (_, cancelled) = app.order(&token, &[(b, 50)], json!({ "pay": false })).await;
    app.post(
        &format!("/orders/{}/cancel", cancelled["id"]),
        Some(&token),
        json!(null),
    )
    .await;

    // The sales above were moved into the past after the start-up run: rebuild every day.
    let (status, refreshed) = app
        .post(
            "/admin/ranking/refresh?full=true",
            Some(ADMIN_TOKEN),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, refreshed["ran"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{refreshed}"
    );

    let (status, today) = app.get("/products/popular?days=1&limit=10", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ranking(&today),
        vec![(a, 5, 5_000), (b, 3, 6_000), (c, 3, 3_000)]
    );
    assert_eq!(today["items"][0]["rank"], 1);
    assert_eq!(today["items"][0]["name"], "A");
    assert!(today["asOf"].is_string());

    let (_, three) = app.get("/products/popular", None).await;
    assert_eq!(three["days"], 3);
    assert_eq!(
        ranking(&three),
        vec![(a, 5, 5_000), (c, 4, 4_000), (b, 3, 6_000)]
    );

    let (_, week) = app.get("/products/popular?days=7&limit=2", None).await;
    assert_eq!(ranking(&week), vec![(d, 20, 10_000), (a, 5, 5_000)]);
    let (_, month) = app.get("/products/popular?days=30&limit=100", None).await;
    assert_eq!(
        month["items"].as_array().unwrap().len(),
        4,
        "A's 40-day-old sale is out"
    );

    // Sales keep coming; the snapshot only moves when the job runs.
    sell(&app, &token, &[(c, 10)], 0).await;
    let (_, stale) = app.get("/products/popular?days=1", None).await;
    assert_eq!(stale["items"][0]["productId"], a);
    app.post("/admin/ranking/refresh", Some(ADMIN_TOKEN), json!(null))
        .await;
    let (_, fresh) = app.get("/products/popular?days=1", None).await;
    assert_eq!(ranking(&fresh)[0], (c, 13, 13_000));
}

async fn ranking_bounds_and_idempotent_job(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for query in ["days=0", "days=31", "limit=0", "limit=101", "days=x"] {
        let (status, err) = app.get(&format!("/products/popular?{query}"), None).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
            "{query}"
        );
    }
    let (id, token) = app.member("buyer").await;
    app.charge(id, &token, 1_000_000).await;
    let a = app.product("A", 1_000, 1_000).await;
    sell(&app, &token, &[(a, 2)], 0).await;
    sell(&app, &token, &[(a, 3)], 2).await;
    let mut answers = Vec::new();
    for path in [
        "/admin/ranking/refresh?full=true",
        "/admin/ranking/refresh",
        "/admin/ranking/refresh",
    ] {
        app.post(path, Some(ADMIN_TOKEN), json!(null)).await;
        let (_, body) = app.get("/products/popular?days=30", None).await;
        answers.push(ranking(&body));
    }
    assert_eq!(answers[0], vec![(a, 5, 5_000)]);
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "re-running never double counts: {answers:?}"
    );
    // Two instances refreshing at once: one job at a time, same numbers.
    let second = app.second_instance().await;
    let refreshes = futures::future::join_all((0..6).map(|i| {
        let target = if i % 2 == 0 { &app } else { &second };
        target.post(
            "/admin/ranking/refresh?full=true",
            Some(ADMIN_TOKEN),
            json!(null),
        )
    }))
    .await;
    assert!(
        refreshes.iter().all(|(s, _)| *s == StatusCode::OK),
        "{refreshes:?}"
    );
    let (_, body) = second.get("/products/popular?days=30", None).await;
    assert_eq!(ranking(&body), answers[0]);
    let mut conn = app.db.read().await.unwrap();
    let rows: i64 =
        shopd::sql_scalar!(&mut conn, "SELECT COUNT(*) FROM product_sales_daily").unwrap();
    assert_eq!(rows, 2, "one row per product per day");
    let (status, _) = app
        .post("/admin/ranking/refresh", Some(&token), json!(null))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

//! The console's dashboard figures: `GET /admin/stats/sales` (paid orders and revenue per
//! hour) and `GET /admin/stats/outbox`, on both backends, with the index each reads.

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, code};
use crate::on_both_backends;

on_both_backends!(
    sales_are_bucketed_by_hour_of_payment,
    sales_ranges_are_validated_and_admin_only,
    outbox_counts_pending_and_dead,
    sales_read_the_paid_at_index,
);

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Pay `n` orders of one unit at `price` each; returns their ids.
async fn paid_orders(app: &TestApp, price: i64, n: usize) -> Vec<i64> {
    let (user_id, token) = app.member("buyer").await;
    let (status, _) = app.charge(user_id, &token, 1_000_000).await;
    assert_eq!(status, StatusCode::OK);
    let product = app.product("Kettle", price, 100).await;
    let mut ids = Vec::new();
    for _ in 0..n {
        let (status, order) = app.order(&token, &[(product, 1)], json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        ids.push(order["id"].as_i64().unwrap());
    }
    // One order left unpaid: never counted.
    let (status, order) = app
        .order(&token, &[(product, 1)], json!({ "pay": false }))
        .await;
    assert_eq!(
        (status, order["status"].as_str()),
        (StatusCode::CREATED, Some("PENDING"))
    );
    ids
}

async fn set_paid_at(app: &TestApp, order_id: i64, at: DateTime<Utc>) {
    let mut tx = app.db.begin().await.unwrap();
    let n = shopd::sql_execute!(
        &mut tx,
        "UPDATE orders SET paid_at = $1 WHERE id = $2",
        at,
        order_id
    )
    .unwrap();
    assert_eq!(n, 1);
    tx.commit().await.unwrap();
}

async fn sales_are_bucketed_by_hour_of_payment(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let ids = paid_orders(&app, 1_500, 3).await;
    set_paid_at(&app, ids[0], t("2026-03-01T10:00:00Z")).await;
    set_paid_at(&app, ids[1], t("2026-03-01T10:59:59.999999Z")).await;
    set_paid_at(&app, ids[2], t("2026-03-01T12:05:00Z")).await;

    let (status, body) = app
        .get(
            "/admin/stats/sales?from=2026-03-01T10:30:00Z&to=2026-03-01T13:00:00Z",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["from"], "2026-03-01T10:00:00.000000Z",
        "rounded down to the hour"
    );
    assert_eq!(body["to"], "2026-03-01T13:00:00.000000Z");
    assert_eq!(
        (body["orders"].as_i64(), body["revenue"].as_i64()),
        (Some(3), Some(4_500))
    );
    let hours: Vec<(String, i64, i64)> = body["hours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["hour"].as_str().unwrap().to_string(),
                h["orders"].as_i64().unwrap(),
                h["revenue"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hours,
        vec![
            ("2026-03-01T10:00:00.000000Z".into(), 2, 3_000),
            ("2026-03-01T11:00:00.000000Z".into(), 0, 0),
            ("2026-03-01T12:00:00.000000Z".into(), 1, 1_500),
        ]
    );

    // `to` is exclusive and rounded up: 12:00 ends before the 12:05 payment.
    let (_, body) = app
        .get(
            "/admin/stats/sales?from=2026-03-01T11:00:00Z&to=2026-03-01T12:00:00Z",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(
        (
            body["orders"].as_i64(),
            body["hours"].as_array().map(Vec::len)
        ),
        (Some(0), Some(1))
    );
    let (_, body) = app
        .get(
            "/admin/stats/sales?from=2026-03-01T11:00:00Z&to=2026-03-01T12:00:01Z",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(
        (
            body["orders"].as_i64(),
            body["hours"].as_array().map(Vec::len)
        ),
        (Some(1), Some(2))
    );

    // The default range is the last 24 hours, the current one included.
    let (_, body) = app.get("/admin/stats/sales", Some(ADMIN_TOKEN)).await;
    assert_eq!(body["hours"].as_array().map(Vec::len), Some(24));
    assert_eq!(body["orders"], 0, "the three payments were moved to March");
    let to = t(body["to"].as_str().unwrap());
    assert!(to > Utc::now() && to <= Utc::now() + Duration::hours(1));
}

async fn sales_ranges_are_validated_and_admin_only(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for (query, field) in [("from=yesterday", "from"), ("to=2026-03-01", "to")] {
        let (status, body) = app
            .get(&format!("/admin/stats/sales?{query}"), Some(ADMIN_TOKEN))
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
            "{query}: {body}"
        );
        assert_eq!(body["details"]["field"], field, "{query}: {body}");
    }
    // Every well-formed range has an answer: empty when `to` is not after `from`, the last
    // 31 days of a longer one (its `from` says so).
    let (status, body) = app
        .get(
            "/admin/stats/sales?from=2026-03-01T10:00:00Z&to=2026-03-01T10:00:00Z",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["hours"], json!([]));
    let (status, body) = app
        .get(
            "/admin/stats/sales?from=2026-03-01T00:00:00Z&to=2026-04-01T11:00:00Z",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["from"], "2026-03-01T11:00:00.000000Z");
    assert_eq!(body["hours"].as_array().map(Vec::len), Some(744));
    // Exactly 31 days is allowed.
    let (status, body) = app
        .get(
            "/admin/stats/sales?from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["hours"].as_array().map(Vec::len), Some(744));

    let (_, member) = app.member("nosy").await;
    for path in ["/admin/stats/sales", "/admin/stats/outbox"] {
        let (status, _) = app.get(path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let (status, _) = app.get(path, Some(&member)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
}

async fn outbox_counts_pending_and_dead(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (_, body) = app.get("/admin/stats/outbox", Some(ADMIN_TOKEN)).await;
    assert_eq!(body, json!({ "pending": 0, "dead": 0 }));
    // No data platform configured: ORDER_PAID events stay PENDING.
    let ids = paid_orders(&app, 1_000, 2).await;
    let mut tx = app.db.begin().await.unwrap();
    shopd::sql_execute!(
        &mut tx,
        "UPDATE outbox_events SET status = 'DEAD' WHERE aggregate_id = $1",
        ids[0]
    )
    .unwrap();
    tx.commit().await.unwrap();
    let (status, body) = app.get("/admin/stats/outbox", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "pending": 1, "dead": 1 }));
}

/// The hourly sums are a range scan of `orders_by_paid_at` (and the DEAD count reads its
/// partial index), shown by the planner on each backend.
async fn sales_read_the_paid_at_index(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    paid_orders(&app, 1_000, 2).await;
    let from = t("2026-03-01T00:00:00Z");
    let to = t("2026-03-02T00:00:00Z");
    let mut conn = app.db.read().await.unwrap();
    let (sales, outbox) = match shopd::db::Handle::raw(&mut conn) {
        shopd::db::Raw::Sqlite(c) => {
            let plan = |rows: Vec<(i64, i64, i64, String)>| {
                rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
            };
            let sql = format!(
                "EXPLAIN QUERY PLAN {}",
                shopd::store::stats::SALES_BY_HOUR_SQLITE
            );
            let sales = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(from)
                .bind(to)
                .fetch_all(&mut *c)
                .await
                .unwrap();
            let sql = format!("EXPLAIN QUERY PLAN {}", shopd::store::stats::OUTBOX_COUNTS);
            let outbox = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut *c)
                .await
                .unwrap();
            (plan(sales), plan(outbox))
        }
        shopd::db::Raw::Postgres(c) => {
            // Two rows are too few for the planner to bother with an index: ask it to prefer
            // one, as it would with the real table.
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *c)
                .await
                .unwrap();
            let sql = format!("EXPLAIN {}", shopd::store::stats::SALES_BY_HOUR_POSTGRES);
            let sales: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(from)
                .bind(to)
                .fetch_all(&mut *c)
                .await
                .unwrap();
            let sql = format!("EXPLAIN {}", shopd::store::stats::OUTBOX_COUNTS);
            let outbox: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut *c)
                .await
                .unwrap();
            sqlx::query("RESET enable_seqscan")
                .execute(&mut *c)
                .await
                .unwrap();
            (sales.join("\n"), outbox.join("\n"))
        }
        shopd::db::Raw::Lite(_) => unreachable!("reads use the sqlx pool"),
    };
    assert!(sales.contains("orders_by_paid_at"), "{sales}");
    assert!(
        !sales.contains("SCAN orders\n") && !sales.contains("Seq Scan"),
        "{sales}"
    );
    assert!(outbox.contains("outbox_events_dead"), "{outbox}");
    assert!(outbox.contains("outbox_events_due"), "{outbox}");
}

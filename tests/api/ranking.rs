//! Best-sellers from precomputed aggregates (SPEC §11).

use chrono::Duration;
use reqwest::StatusCode;
use serde_json::{Value, json};

use chrono::{DateTime, Utc};
use shopd::store::ranking::{AggregateOptions, JobRun};

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, code};
use crate::on_both_backends;

on_both_backends!(
    best_sellers_rank_paid_sales_by_day,
    ranking_bounds_and_idempotent_job,
    ties_break_by_product_id,
    as_of_and_windows_follow_the_jobs_clock,
    cold_start_loads_the_snapshot_once,
    refunds_come_off_the_day_the_order_was_paid,
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
        assert_eq!(app.charge(id, &token, 1_000_000).await.0, StatusCode::OK);
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
    // Orders that are not PAID never count (each set up for real, checked).
    let (status, unpaid) = app
        .order(&token, &[(d, 100)], json!({ "pay": false }))
        .await;
    assert_eq!(
        (status, unpaid["status"].as_str()),
        (StatusCode::CREATED, Some("PENDING")),
        "{unpaid}"
    );
    let (status, cancelled) = app.order(&token, &[(b, 50)], json!({ "pay": false })).await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (StatusCode::CREATED, Some("PENDING")),
        "{cancelled}"
    );
    let (status, cancelled) = app
        .post(
            &format!("/orders/{}/cancel", cancelled["id"]),
            Some(&token),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (StatusCode::OK, Some("CANCELLED")),
        "{cancelled}"
    );

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
            (status, code(&err), err["details"]["field"].as_str()),
            (
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                query.split('=').next()
            ),
            "{query} -> {err}"
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

async fn ties_break_by_product_id(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("buyer").await;
    app.charge(id, &token, 1_000_000).await;
    let first = app.product("First", 1_000, 1_000).await;
    let second = app.product("Second", 1_000, 1_000).await;
    let cheap = app.product("Cheap", 500, 1_000).await;
    assert!(first < second);
    // Same quantity and revenue for First and Second, listed in the order the other way round.
    sell(&app, &token, &[(cheap, 2), (second, 2), (first, 2)], 0).await;
    app.post(
        "/admin/ranking/refresh?full=true",
        Some(ADMIN_TOKEN),
        json!(null),
    )
    .await;
    let (_, body) = app.get("/products/popular?days=1&limit=10", None).await;
    assert_eq!(
        ranking(&body),
        vec![(first, 2, 2_000), (second, 2, 2_000), (cheap, 2, 1_000)]
    );
    let ranks: Vec<_> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["rank"].as_i64().unwrap())
        .collect();
    assert_eq!(ranks, vec![1, 2, 3]);
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// Set an order's status to PAID as of `paid_at` (what a payment commits, backdated).
async fn mark_paid(app: &TestApp, order_id: i64, paid_at: DateTime<Utc>) {
    let mut tx = app.db.begin().await.unwrap();
    shopd::sql_execute!(
        &mut tx,
        "UPDATE orders SET status = 'PAID', paid_at = $1 WHERE id = $2",
        paid_at,
        order_id
    )
    .unwrap();
    tx.commit().await.unwrap();
}

/// An unpaid order for `items`, to be marked PAID at a chosen time.
async fn pending(app: &TestApp, token: &str, items: &[(i64, i64)]) -> i64 {
    let (status, order) = app.order(token, items, json!({ "pay": false })).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    order["id"].as_i64().unwrap()
}

/// Run the job as of `now` and read the snapshot it produced (in the job's transaction, so a
/// concurrent run of the server's own job cannot interleave).
async fn run_job(
    app: &TestApp,
    now: DateTime<Utc>,
    full: bool,
) -> (JobRun, shopd::ranking::Snapshot) {
    let mut tx = app.db.begin().await.unwrap();
    let run = shopd::store::ranking::aggregate(
        &mut tx,
        now,
        AggregateOptions {
            full,
            wait_for_lock: true,
        },
    )
    .await
    .unwrap();
    let snapshot = shopd::ranking::Snapshot::load(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    (run, snapshot)
}

fn top(snapshot: &shopd::ranking::Snapshot, days: i64) -> Vec<(i64, i64)> {
    snapshot
        .top(days, 100)
        .iter()
        .map(|r| (r.product_id, r.sold_quantity))
        .collect()
}

/// The job's clock is pinned (no sleeping across midnight): `asOf` is the run's time, windows
/// count whole UTC days back from it, a payment that commits after a run that already saw
/// newer payments is still counted once, and incremental runs agree with a full rebuild.
async fn as_of_and_windows_follow_the_jobs_clock(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("buyer").await;
    app.charge(id, &token, 1_000_000).await;
    let a = app.product("A", 100, 1_000).await;
    let b = app.product("B", 100, 1_000).await;
    let today_a = pending(&app, &token, &[(a, 2)]).await;
    let yesterday_b = pending(&app, &token, &[(b, 1)]).await;
    let recent_b = pending(&app, &token, &[(b, 3)]).await;
    let late_a = pending(&app, &token, &[(a, 5)]).await;
    let after_midnight_a = pending(&app, &token, &[(a, 1)]).await;
    let old_b = pending(&app, &token, &[(b, 50)]).await;
    mark_paid(&app, today_a, at("2030-01-01T10:00:00Z")).await;
    mark_paid(&app, yesterday_b, at("2029-12-31T12:00:00Z")).await;
    mark_paid(&app, recent_b, at("2030-01-01T23:55:00Z")).await;
    mark_paid(&app, old_b, at("2029-11-01T12:00:00Z")).await; // beyond the longest window

    // A full rebuild one minute before midnight.
    let t1 = at("2030-01-01T23:59:00Z");
    let (run, snapshot) = run_job(&app, t1, true).await;
    assert!(matches!(run, JobRun::Ran { full: true, .. }), "{run:?}");
    assert_eq!(snapshot.as_of, t1);
    assert_eq!(top(&snapshot, 1), vec![(b, 3), (a, 2)]);
    assert_eq!(top(&snapshot, 2), vec![(b, 4), (a, 2)]);
    assert_eq!(top(&snapshot, 30), vec![(b, 4), (a, 2)]);

    // After midnight: a payment stamped before the newest one the last run saw, but committed
    // only now (commit order is not paid_at order), and one stamped after midnight.
    mark_paid(&app, late_a, at("2030-01-01T23:54:00Z")).await;
    mark_paid(&app, after_midnight_a, at("2030-01-02T00:00:10Z")).await;
    let t2 = at("2030-01-02T00:00:30Z");
    let (run, snapshot) = run_job(&app, t2, false).await;
    assert_eq!(
        run,
        JobRun::Ran {
            full: false,
            counted: 2
        }
    );
    assert_eq!(snapshot.as_of, t2);
    assert_eq!(
        top(&snapshot, 1),
        vec![(a, 1)],
        "yesterday is out of days=1"
    );
    assert_eq!(top(&snapshot, 2), vec![(a, 8), (b, 3)]);
    assert_eq!(top(&snapshot, 3), vec![(a, 8), (b, 4)]);

    // Running again adds nothing; a full rebuild gives the same numbers.
    let t3 = at("2030-01-02T00:01:00Z");
    let (run, again) = run_job(&app, t3, false).await;
    assert_eq!(
        run,
        JobRun::Ran {
            full: false,
            counted: 0
        }
    );
    assert_eq!(again.as_of, t3);
    assert_eq!(again.by_days, snapshot.by_days);
    let (_, rebuilt) = run_job(&app, t3, true).await;
    assert_eq!(rebuilt.by_days, snapshot.by_days);

    // Days older than the longest window are pruned.
    let mut conn = app.db.read().await.unwrap();
    let oldest: String =
        shopd::sql_scalar!(&mut conn, "SELECT MIN(day) FROM product_sales_daily").unwrap();
    assert_eq!(oldest, "2029-12-31");
}

/// The snapshot is loaded before the server answers, and concurrent first readers of a cold
/// cache share one load.
async fn cold_start_loads_the_snapshot_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    assert!(app.ranking.get().is_some(), "loaded before serving");
    let (status, _) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    let answers =
        futures::future::join_all((0..32).map(|_| app.get("/products/popular", None))).await;
    assert!(answers.iter().all(|(s, _)| *s == StatusCode::OK));
    // The start-up load, and at most the periodic job's first run: never one per request.
    assert!(app.ranking.loads() <= 2, "{} loads", app.ranking.loads());

    let cold = shopd::ranking::RankingCache::default();
    let snapshots = futures::future::join_all((0..32).map(|_| cold.get_or_load(&app.db))).await;
    let first = snapshots[0].as_ref().unwrap().clone();
    for snapshot in &snapshots {
        assert!(std::sync::Arc::ptr_eq(snapshot.as_ref().unwrap(), &first));
    }
    assert_eq!(cold.loads(), 1, "32 concurrent cold readers, one load");
}

/// Refund `quantity` units of `product` in `order_id` (restocked) and stamp the refund at
/// `created_at` (what a refund commits, with the job's pinned clock).
async fn refund_at(
    app: &TestApp,
    order_id: i64,
    product: i64,
    quantity: i64,
    created_at: DateTime<Utc>,
) {
    let (status, refund) = app
        .post(
            &format!("/admin/orders/{order_id}/refunds"),
            Some(ADMIN_TOKEN),
            json!({ "lines": [{ "productId": product, "quantity": quantity }], "reason": "r" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{refund}");
    let mut tx = app.db.begin().await.unwrap();
    shopd::sql_execute!(
        &mut tx,
        "UPDATE refunds SET created_at = $1 WHERE id = $2",
        created_at,
        refund["id"].as_i64().unwrap()
    )
    .unwrap();
    tx.commit().await.unwrap();
}

/// Best-sellers count units net of refunds (SPEC §14): a refund comes off the day its order
/// was paid, even a day the job aggregated long ago; a refund committed after a run that saw
/// newer refunds is still subtracted once; a product whose every unit came back is not ranked;
/// and incremental runs agree with a full rebuild.
async fn refunds_come_off_the_day_the_order_was_paid(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("buyer").await;
    app.charge(id, &token, 1_000_000).await;
    let a = app.product("A", 100, 1_000).await;
    let b = app.product("B", 100, 1_000).await;
    let two_days_ago_a = pending(&app, &token, &[(a, 5)]).await;
    let today_b = pending(&app, &token, &[(b, 3)]).await;
    let long_ago_a = pending(&app, &token, &[(a, 7)]).await;
    mark_paid(&app, two_days_ago_a, at("2029-12-30T12:00:00Z")).await;
    mark_paid(&app, today_b, at("2030-01-01T10:00:00Z")).await;
    mark_paid(&app, long_ago_a, at("2029-11-01T12:00:00Z")).await; // beyond the longest window
    // A CONFIRMED order is a paid order like any other: it counts.
    let mut tx = app.db.begin().await.unwrap();
    shopd::sql_execute!(
        &mut tx,
        "UPDATE orders SET status = 'CONFIRMED', confirmed_at = paid_at WHERE id = $1",
        today_b
    )
    .unwrap();
    tx.commit().await.unwrap();

    let (_, snapshot) = run_job(&app, at("2030-01-01T12:00:00Z"), true).await;
    assert_eq!(top(&snapshot, 3), vec![(a, 5), (b, 3)]);

    // 3 units of an order of a day already aggregated come back.
    refund_at(&app, two_days_ago_a, a, 3, at("2030-01-01T12:30:00Z")).await;
    let (run, snapshot) = run_job(&app, at("2030-01-01T12:31:00Z"), false).await;
    assert_eq!(
        run,
        JobRun::Ran {
            full: false,
            counted: 0
        }
    );
    assert_eq!(top(&snapshot, 3), vec![(b, 3), (a, 2)]);
    assert_eq!(
        top(&snapshot, 1),
        vec![(b, 3)],
        "off its paid day, not today"
    );
    let revenue = snapshot.top(3, 100)[1].revenue;
    assert_eq!(revenue, 200, "revenue net of the refunded units");

    // A refund stamped before the newest one the last run saw, committed only now; and a
    // refund of an order paid before the longest window (its day is gone: nothing to do).
    refund_at(&app, today_b, b, 1, at("2030-01-01T12:29:00Z")).await;
    refund_at(&app, long_ago_a, a, 7, at("2030-01-01T12:31:30Z")).await;
    let (_, snapshot) = run_job(&app, at("2030-01-01T12:32:00Z"), false).await;
    assert_eq!(top(&snapshot, 3), vec![(a, 2), (b, 2)]);
    // Running again subtracts nothing twice; a full rebuild gives the same numbers.
    let t = at("2030-01-01T12:33:00Z");
    let (_, again) = run_job(&app, t, false).await;
    assert_eq!(again.by_days, snapshot.by_days);
    let (_, rebuilt) = run_job(&app, t, true).await;
    assert_eq!(rebuilt.by_days, snapshot.by_days);

    // Every unit of A in the window back: A is no longer a best-seller.
    refund_at(&app, two_days_ago_a, a, 2, at("2030-01-01T12:34:00Z")).await;
    let (_, snapshot) = run_job(&app, at("2030-01-01T12:35:00Z"), false).await;
    assert_eq!(top(&snapshot, 30), vec![(b, 2)]);
    let (_, rebuilt) = run_job(&app, at("2030-01-01T12:35:00Z"), true).await;
    assert_eq!(rebuilt.by_days, snapshot.by_days);
    let mut conn = app.db.read().await.unwrap();
    let oldest: String =
        shopd::sql_scalar!(&mut conn, "SELECT MIN(day) FROM product_sales_daily").unwrap();
    assert!(
        oldest.as_str() >= "2029-12-02",
        "no row for a pruned day: {oldest}"
    );
}

//! Back office (SPEC §15): admin lists and filters, campaign management, token rotation.

use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, code};
use crate::on_both_backends;

on_both_backends!(
    admin_lists_need_an_admin_token,
    admin_orders_filter_and_page_newest_first,
    admin_list_filters_are_validated,
    admin_users_search_by_name_with_balance,
    admin_users_search_through_the_trigram_index,
    admin_users_search_plan_uses_the_trigram_index,
    admin_list_plans_are_read_from_the_statements_shopd_runs,
    admin_products_lists_every_status,
    admin_coupons_list_patch_and_close,
    member_rotates_token_old_one_refused_by_both_instances,
    admin_reissues_a_lost_token,
);

fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items: {page}"))
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect()
}

/// Follow `nextCursor` from `path` (which already has a `?`) with `limit`, collecting ids.
async fn walk(app: &TestApp, path: &str, limit: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = app
            .get(
                &format!("{path}&limit={limit}&cursor={cursor}"),
                Some(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let got = ids(&page);
        assert!(got.len() as i64 <= limit);
        out.extend(got);
        match page["nextCursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return out,
        }
    }
}

async fn admin_lists_need_an_admin_token(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (user_id, token) = app.member("kim").await;
    let coupon = app
        .campaign(json!({ "type": "FIXED", "value": 100 }), 0, 5)
        .await;
    for path in [
        "/admin/orders",
        "/admin/users",
        "/admin/users?q=kim",
        "/admin/products",
        "/admin/coupons",
    ] {
        let (status, body) = app.get(path, None).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            "{path}"
        );
        let (status, body) = app.get(path, Some(&token)).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "FORBIDDEN"),
            "{path}"
        );
    }
    let patch = format!("/admin/coupons/{coupon}");
    let close = format!("/admin/coupons/{coupon}/close");
    let reissue = format!("/admin/users/{user_id}/tokens");
    for token in [None, Some(token.as_str())] {
        let expected = if token.is_some() {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        let (status, _) = app
            .patch(&patch, token, json!({ "totalQuantity": 1 }))
            .await;
        assert_eq!(status, expected, "PATCH {patch}");
        let (status, _) = app.post(&close, token, json!({})).await;
        assert_eq!(status, expected, "POST {close}");
        let (status, _) = app.post(&reissue, token, json!({})).await;
        assert_eq!(status, expected, "POST {reissue}");
    }
    // Nothing changed.
    let (_, campaign) = app.get(&format!("/coupons/{coupon}"), None).await;
    assert_eq!(campaign["totalQuantity"], 5);
    assert!(campaign.get("closedAt").is_none());
    let (status, _) = app.get(&format!("/users/{user_id}"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "the member's token still works");
}

async fn admin_orders_filter_and_page_newest_first(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let product = app.product("Mug", 1_000, 100).await;
    let (kim, kim_token) = app.member("kim").await;
    let (lee, lee_token) = app.member("lee").await;
    app.charge(kim, &kim_token, 100_000).await;
    app.charge(lee, &lee_token, 100_000).await;
    // Oldest to newest: kim PAID, lee PENDING, kim PENDING→CANCELLED, lee PAID, kim PAID.
    let mut placed = Vec::new();
    for (token, pay) in [
        (&kim_token, true),
        (&lee_token, false),
        (&kim_token, false),
        (&lee_token, true),
        (&kim_token, true),
    ] {
        let (status, order) = app
            .order(token, &[(product, 1)], json!({ "pay": pay }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        placed.push(order["id"].as_i64().unwrap());
    }
    let (status, _) = app
        .post(
            &format!("/orders/{}/cancel", placed[2]),
            Some(&kim_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let newest_first: Vec<i64> = placed.iter().rev().copied().collect();

    let (status, page) = app.get("/admin/orders", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), newest_first);
    assert!(page["nextCursor"].is_null());
    let first = &page["items"][0];
    assert_eq!(
        (
            first["userId"].as_i64(),
            first["status"].as_str(),
            first["total"].as_i64()
        ),
        (Some(kim), Some("PAID"), Some(1_000))
    );
    assert!(first["paidAt"].is_string() && first["createdAt"].is_string());

    // Pages of every size give the same sequence.
    for limit in [1, 2, 3] {
        assert_eq!(
            walk(&app, "/admin/orders?", limit).await,
            newest_first,
            "limit {limit}"
        );
    }

    let paid = walk(&app, "/admin/orders?status=PAID", 1).await;
    assert_eq!(paid, vec![placed[4], placed[3], placed[0]]);
    let (_, pending) = app
        .get("/admin/orders?status=PENDING", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(ids(&pending), vec![placed[1]]);
    let (_, cancelled) = app
        .get("/admin/orders?status=CANCELLED", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(ids(&cancelled), vec![placed[2]]);
    let (_, expired) = app
        .get("/admin/orders?status=EXPIRED", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(ids(&expired), Vec::<i64>::new());

    let kims = walk(&app, &format!("/admin/orders?userId={kim}"), 2).await;
    assert_eq!(kims, vec![placed[4], placed[2], placed[0]]);
    let kims_paid = walk(&app, &format!("/admin/orders?userId={kim}&status=PAID"), 1).await;
    assert_eq!(kims_paid, vec![placed[4], placed[0]]);
    let (_, nobody) = app
        .get("/admin/orders?userId=999999", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(ids(&nobody), Vec::<i64>::new());

    // from (inclusive) / to (exclusive) on the creation time.
    let created: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["createdAt"].as_str().unwrap().to_string())
        .collect(); // newest first
    let from = &created[3]; // placed[1]
    let to = &created[0]; // placed[4], excluded
    let window = walk(&app, &format!("/admin/orders?from={from}&to={to}"), 1).await;
    // Orders created in the same microsecond as a bound count on its side of it.
    assert!(
        window.contains(&placed[1]) && !window.contains(&placed[4]),
        "{window:?}"
    );
    assert!(
        !window.contains(&placed[0]) || created[4] == created[3],
        "{window:?}"
    );
    let lee_window = walk(
        &app,
        &format!("/admin/orders?from={from}&to={to}&userId={lee}&status=PENDING"),
        1,
    )
    .await;
    assert_eq!(lee_window, vec![placed[1]]);
    // A cursor from a page without `to`, then a `to` before the cursor's order: `to` wins.
    let (_, two) = app.get("/admin/orders?limit=2", Some(ADMIN_TOKEN)).await;
    let cursor = two["nextCursor"].as_str().expect("cursor").to_string();
    let (status, early) = app
        .get(
            &format!("/admin/orders?to={from}&cursor={cursor}"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{early}");
    let early = ids(&early);
    assert!(
        !early.iter().any(|id| placed[1..].contains(id)),
        "{early:?}"
    );
    assert!(
        early.contains(&placed[0]) || created[4] == created[3],
        "{early:?}"
    );
    let future = (Utc::now() + Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ");
    let (_, none) = app
        .get(&format!("/admin/orders?from={future}"), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(ids(&none), Vec::<i64>::new());
    let (_, all) = app
        .get(&format!("/admin/orders?to={future}"), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(ids(&all), newest_first);
    // A window that ends where (or before) it starts is empty, not an error: schemathesis
    // counts any schema-valid pair of instants as a request to accept.
    let future = future.to_string();
    for (start, end) in [(future.as_str(), future.as_str()), (&future, from.as_str())] {
        let (status, empty) = app
            .get(
                &format!("/admin/orders?from={start}&to={end}"),
                Some(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{empty}");
        assert_eq!(ids(&empty), Vec::<i64>::new());
    }
    // Instants beyond the years the backends store alike bound the window as those years do.
    let (status, wide) = app
        .get(
            "/admin/orders?from=0001-01-01T00:00:00Z&to=9999-12-31T23:59:59.999999Z&limit=100",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{wide}");
    assert_eq!(ids(&wide), newest_first);
    // A well-formed cursor that names no order: an empty last page, not an error.
    let (status, after_nothing) = app
        .get("/admin/orders?cursor=424242", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK, "{after_nothing}");
    assert_eq!(ids(&after_nothing), Vec::<i64>::new());
    assert!(after_nothing["nextCursor"].is_null());
}

async fn admin_list_filters_are_validated(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let cases = [
        ("/admin/orders?status=SHIPPED", "status"),
        ("/admin/orders?userId=abc", "userId"),
        ("/admin/orders?userId=0", "userId"),
        ("/admin/orders?userId=-4", "userId"),
        ("/admin/orders?from=yesterday", "from"),
        ("/admin/orders?to=2026-13-01T00:00:00Z", "to"),
        ("/admin/orders?cursor=abc", "cursor"),
        ("/admin/orders?limit=0", "limit"),
        ("/admin/orders?limit=101", "limit"),
        ("/admin/users?q=a%00b", "q"),
        ("/admin/users?q=a%0Ab", "q"),
        ("/admin/users?cursor=-1", "cursor"),
        ("/admin/users?limit=x", "limit"),
        ("/admin/products?status=SOLD", "status"),
        ("/admin/products?cursor=x", "cursor"),
        ("/admin/coupons?limit=1000", "limit"),
        ("/admin/coupons?cursor=0", "cursor"),
    ];
    for (path, field) in cases {
        let (status, body) = app.get(path, Some(ADMIN_TOKEN)).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
            "{path} -> {body}"
        );
        assert_eq!(body["details"]["field"], field, "{path} -> {body}");
    }
    let long = "k".repeat(101);
    let (status, body) = app
        .get(&format!("/admin/users?q={long}"), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(
        (status, body["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("q"))
    );
}

async fn admin_users_search_by_name_with_balance(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (minji, minji_token) = app.member("Kim Minji").await;
    let (jisoo, _) = app.member("kim jisoo").await;
    let (lee, _) = app.member("Lee 50%_off").await;
    let (hangul, _) = app.member("김민지").await;
    app.charge(minji, &minji_token, 12_345).await;

    let (status, all) = app.get("/admin/users", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(ids(&all), vec![minji, jisoo, lee, hangul]);
    assert_eq!(
        all["items"][0],
        json!({
            "id": minji,
            "name": "Kim Minji",
            "balance": 12_345,
            "createdAt": all["items"][0]["createdAt"],
        })
    );
    assert_eq!(all["items"][1]["balance"], 0);

    for (q, expected) in [
        ("KIM", vec![minji, jisoo]),
        ("kim", vec![minji, jisoo]),
        ("minji", vec![minji]),
        ("%25", vec![lee]), // `%` is literal
        ("_", vec![lee]),   // `_` is literal
        ("0%25_", vec![lee]),
        ("%EB%AF%BC%EC%A7%80", vec![hangul]), // 민지
        ("nobody", vec![]),
        ("", vec![minji, jisoo, lee, hangul]),
        ("%20kim%20", vec![minji, jisoo]), // trimmed
    ] {
        let (status, page) = app
            .get(&format!("/admin/users?q={q}"), Some(ADMIN_TOKEN))
            .await;
        assert_eq!(status, StatusCode::OK, "{q}: {page}");
        assert_eq!(ids(&page), expected, "q={q}");
    }
    assert_eq!(walk(&app, "/admin/users?q=i", 1).await, vec![minji, jisoo]);
    assert_eq!(
        walk(&app, "/admin/users?", 3).await,
        vec![minji, jisoo, lee, hangul]
    );
}

/// Terms of three characters or more are answered by the trigram index (FTS5 on SQLite,
/// pg_trgm on PostgreSQL) with the same meaning as the scan: a case-insensitive (ASCII)
/// substring, `%` and `_` literal, in id order, paged; a new member is found at once.
async fn admin_users_search_through_the_trigram_index(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (minji, _) = app.member("Kim Minji").await;
    let (minho, _) = app.member("Choi_Minho").await;
    let (lee, _) = app.member("Lee 50%_off").await;
    let (park, _) = app.member("Park 500").await;
    let (hangul, _) = app.member("김민지").await;
    let (quote, _) = app.member("Jung \"JJ\" Sun").await;

    for (q, expected) in [
        ("kim%20m", vec![minji]),    // start
        ("MINJ", vec![minji]),       // middle, other case
        ("inji", vec![minji]),       // end
        ("mIn", vec![minji, minho]), // mixed case
        ("minji", vec![minji]),
        ("50%25", vec![lee]), // `%` literal: "Park 500" does not match
        ("50%25_o", vec![lee]),
        ("i_m", vec![minho]),                          // `_` literal
        ("m_m", vec![]),                               // `_` would match the space of "Kim Minji"
        ("%EA%B9%80%EB%AF%BC%EC%A7%80", vec![hangul]), // 김민지
        ("%22jj%22", vec![quote]),                     // a double quote is not FTS5 syntax here
        ("500", vec![park]),
        ("zzz", vec![]),
        ("Kim%20Minji%20and%20more", vec![]),
    ] {
        let (status, page) = app
            .get(&format!("/admin/users?q={q}"), Some(ADMIN_TOKEN))
            .await;
        assert_eq!(status, StatusCode::OK, "{q}: {page}");
        assert_eq!(ids(&page), expected, "q={q}");
    }
    assert_eq!(
        walk(&app, "/admin/users?q=MIN", 1).await,
        vec![minji, minho]
    );
    // Created after the searches above: found at once, by the index and by a short term.
    let (later, _) = app.member("Yoon Minseo").await;
    assert_eq!(walk(&app, "/admin/users?q=minseo", 1).await, vec![later]);
    assert_eq!(
        walk(&app, "/admin/users?q=min", 2).await,
        vec![minji, minho, later]
    );
    assert_eq!(walk(&app, "/admin/users?q=eo", 1).await, vec![later]);
}

/// The plan of a 3+ character search: SQLite reads the FTS5 trigram table; PostgreSQL (20,000
/// members, analyzed, planned with the term as the server does) the `users_name_trgm` GIN
/// index for a rare term, and the primary key for a term one member in five has.
/// `shopd explain-admin-lists` (bench/admin-lists.sh): every list statement is explained with
/// its values bound, on the database as it is.
async fn admin_list_plans_are_read_from_the_statements_shopd_runs(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut conn = app.db.read().await.unwrap();
    let plans = shopd::store::list_plans::explain_lists(&mut conn)
        .await
        .unwrap();
    let plan = |title: &str| -> String {
        plans
            .iter()
            .find(|p| p.title.starts_with(title))
            .map(|p| p.lines.join("\n"))
            .unwrap_or_else(|| panic!("no plan {title}"))
    };
    assert_eq!(
        plans
            .iter()
            .filter(|p| p.title.starts_with("orders"))
            .count(),
        12
    );
    assert!(plans.iter().all(|p| !p.lines.is_empty()));
    if backend == Backend::Sqlite {
        // SQLite plans without statistics: the indexes the statements are written for.
        let all = plan("orders, filter none, first page");
        assert!(all.contains("MERGE (UNION ALL)"), "{all}");
        assert!(all.contains("orders_by_status_created"), "{all}");
        assert!(!all.contains("TEMP B-TREE"), "no sort: {all}");
        let member = plan("orders, filter userId, first page");
        assert!(member.contains("orders_by_user"), "{member}");
        let search = plan("members, q=member 4242");
        assert!(search.contains("VIRTUAL TABLE INDEX"), "{search}");
    } else {
        // EXPLAIN ANALYZE ran each statement.
        assert!(plan("orders, filter none, first page").contains("actual rows"));
    }
}

async fn admin_users_search_plan_uses_the_trigram_index(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rare = shopd::store::admin::like_contains("member 4242");
    let mut conn = app.db.read().await.unwrap();
    match shopd::db::Handle::raw(&mut conn) {
        shopd::db::Raw::Sqlite(c) => {
            let sql = format!(
                "EXPLAIN QUERY PLAN {}",
                shopd::store::admin::MEMBERS_FTS_SQLITE
            );
            let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(0_i64)
                .bind(21_i64)
                .bind(&rare)
                .bind("\"member 4242\"")
                .fetch_all(&mut *c)
                .await
                .unwrap();
            let plan = rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n");
            assert!(plan.contains("SCAN s VIRTUAL TABLE INDEX"), "{plan}");
            assert!(
                plan.contains("SEARCH u USING INTEGER PRIMARY KEY"),
                "{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "no sort: {plan}");
        }
        shopd::db::Raw::Postgres(c) => {
            sqlx::query(
                "INSERT INTO users (name, name_folded, token_hash, balance, balance_updated_at, created_at)
                 SELECT n, lower(n), 'seed-' || i, 0, now(), now()
                 FROM (SELECT i, (CASE i % 5 WHEN 0 THEN 'Kim' ELSE 'Lee' END) || ' member ' || i AS n
                       FROM generate_series(1, 20000) AS i) s",
            )
            .execute(&mut *c)
            .await
            .unwrap();
            sqlx::query("ANALYZE users").execute(&mut *c).await.unwrap();
            let explain = async |c: &mut sqlx::PgConnection, pattern: &str| -> String {
                let sql = format!("EXPLAIN {}", shopd::store::admin::MEMBERS_LIKE);
                let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(0_i64)
                    .bind(21_i64)
                    .bind(pattern)
                    .persistent(false)
                    .fetch_all(c)
                    .await
                    .unwrap();
                rows.join("\n")
            };
            let plan = explain(&mut *c, &rare).await;
            assert!(
                plan.contains("Bitmap Index Scan on users_name_trgm"),
                "{plan}"
            );
            let plan = explain(&mut *c, &shopd::store::admin::like_contains("kim")).await;
            assert!(plan.contains("Index Scan using users_pkey"), "{plan}");
        }
        shopd::db::Raw::Lite(_) => unreachable!("reads use the sqlx pool"),
    }
    drop(conn);
    if backend == Backend::Postgres {
        let (status, page) = app
            .get("/admin/users?q=member%204242", Some(ADMIN_TOKEN))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let names: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["Lee member 4242"], "{page}");
    }
}

async fn admin_products_lists_every_status(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let on_sale = app.product("Mug", 1_000, 1).await;
    let suspended = app.product("Cup", 1_000, 1).await;
    let gone = app.product("Old", 1_000, 0).await;
    for (id, status) in [(suspended, "SUSPENDED"), (gone, "DISCONTINUED")] {
        let (s, _) = app
            .patch(
                &format!("/admin/products/{id}"),
                Some(ADMIN_TOKEN),
                json!({ "status": status }),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (_, public) = app.get("/products", None).await;
    assert_eq!(ids(&public), vec![on_sale]);
    assert_eq!(
        walk(&app, "/admin/products?", 1).await,
        vec![on_sale, suspended, gone]
    );
    for (status, expected) in [
        ("ON_SALE", on_sale),
        ("SUSPENDED", suspended),
        ("DISCONTINUED", gone),
    ] {
        let (s, page) = app
            .get(
                &format!("/admin/products?status={status}"),
                Some(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(ids(&page), vec![expected], "{status}");
        assert_eq!(page["items"][0]["status"], status);
    }
}

async fn admin_coupons_list_patch_and_close(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let first = app
        .campaign(json!({ "type": "FIXED", "value": 100 }), 0, 3)
        .await;
    let second = app
        .campaign(json!({ "type": "PERCENT", "value": 10 }), 0, 10)
        .await;
    let (a_id, a) = app.member("a").await;
    let (_, b) = app.member("b").await;
    let (_, c) = app.member("c").await;
    assert_eq!(app.issue(first, &a).await.0, StatusCode::CREATED);
    assert_eq!(app.issue(first, &b).await.0, StatusCode::CREATED);

    let (status, page) = app.get("/admin/coupons", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), vec![first, second]);
    let item = &page["items"][0];
    assert_eq!(
        (
            item["issuedQuantity"].as_i64(),
            item["totalQuantity"].as_i64(),
            item["remainingQuantity"].as_i64()
        ),
        (Some(2), Some(3), Some(1))
    );
    assert_eq!(walk(&app, "/admin/coupons?", 1).await, vec![first, second]);

    let path = format!("/admin/coupons/{first}");
    // Never below what is issued.
    let (status, err) = app
        .patch(&path, Some(ADMIN_TOKEN), json!({ "totalQuantity": 1 }))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "COUPON_QUANTITY_BELOW_ISSUED"),
        "{err}"
    );
    assert_eq!(err["details"]["issuedQuantity"], 2);
    // Down to exactly what is issued: sold out.
    let (status, patched) = app
        .patch(
            &path,
            Some(ADMIN_TOKEN),
            json!({ "totalQuantity": 2, "name": "  Spring sale " }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        (
            patched["name"].as_str(),
            patched["totalQuantity"].as_i64(),
            patched["remainingQuantity"].as_i64()
        ),
        (Some("Spring sale"), Some(2), Some(0))
    );
    assert_eq!(code(&app.issue(first, &c).await.1), "COUPON_SOLD_OUT");
    // Back up: issuable again.
    let ends = Utc::now() + Duration::days(30);
    let (status, patched) = app
        .patch(
            &path,
            Some(ADMIN_TOKEN),
            json!({ "totalQuantity": 5, "issueEndsAt": ends }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["remainingQuantity"], 3);
    assert_eq!(
        patched["issueEndsAt"].as_str().map(|s| &s[..16]),
        Some(ends.format("%Y-%m-%dT%H:%M").to_string().as_str())
    );

    for (body, field) in [
        (json!({}), "body"),
        (json!({ "totalQuantity": 0 }), "totalQuantity"),
        (json!({ "totalQuantity": 100_000_001 }), "totalQuantity"),
        (json!({ "totalQuantity": "many" }), "totalQuantity"),
        (json!({ "name": "" }), "name"),
        (json!({ "name": "a\u{0}b" }), "name"),
        (
            json!({ "issueEndsAt": Utc::now() - Duration::days(3) }),
            "issueEndsAt",
        ),
        (json!({ "issueEndsAt": "soon" }), "issueEndsAt"),
    ] {
        let (status, err) = app.patch(&path, Some(ADMIN_TOKEN), body.clone()).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
            "{body} -> {err}"
        );
        assert_eq!(err["details"]["field"], field, "{body} -> {err}");
    }
    let (status, err) = app
        .patch(
            "/admin/coupons/999999",
            Some(ADMIN_TOKEN),
            json!({ "totalQuantity": 9 }),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "COUPON_NOT_FOUND")
    );

    // Close: no more issuance, issued coupons stay valid, closing again changes nothing.
    let close = format!("/admin/coupons/{first}/close");
    let (status, closed) = app.post(&close, Some(ADMIN_TOKEN), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    let closed_at = closed["closedAt"].as_str().expect("closedAt").to_string();
    let (status, err) = app.issue(first, &c).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "COUPON_NOT_ISSUABLE"),
        "{err}"
    );
    let (_, again) = app.post(&close, Some(ADMIN_TOKEN), json!({})).await;
    assert_eq!(again["closedAt"], closed_at.as_str());
    let (_, open) = app.get("/coupons", None).await;
    assert_eq!(
        ids(&open),
        vec![second],
        "a closed campaign is not listed as open"
    );
    let (_, held) = app
        .get(&format!("/users/{a_id}/coupons"), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(held["items"][0]["couponId"], first);
    assert_eq!(held["items"][0]["status"], "AVAILABLE");
    let (status, err) = app
        .post("/admin/coupons/999999/close", Some(ADMIN_TOKEN), json!({}))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "COUPON_NOT_FOUND")
    );
    let (_, page) = app.get("/admin/coupons", Some(ADMIN_TOKEN)).await;
    assert_eq!(page["items"][0]["closedAt"], closed_at.as_str());
    assert!(page["items"][1].get("closedAt").is_none());
}

/// The other instance re-reads the token epoch at most every `MemberTokenCache::RECHECK` (1 s): the
/// old token is refused at once where it was rotated and within that bound everywhere.
async fn member_rotates_token_old_one_refused_by_both_instances(backend: Backend) {
    let Some(a) = TestApp::spawn(backend).await else {
        return;
    };
    let b = a.second_instance().await;
    let (id, old) = a.member("kim").await;
    let (other, other_token) = a.member("lee").await;
    let me = format!("/users/{id}");
    // Both instances have the old token in their cache.
    assert_eq!(a.get(&me, Some(&old)).await.0, StatusCode::OK);
    assert_eq!(b.get(&me, Some(&old)).await.0, StatusCode::OK);

    let (status, err) = a
        .post(&format!("/users/{other}/tokens"), Some(&old), json!({}))
        .await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (status, _) = a
        .post(&format!("/users/{id}/tokens"), None, json!({}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, rotated) = a
        .post(&format!("/users/{id}/tokens"), Some(&old), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["userId"], id);
    let new = rotated["token"].as_str().expect("token").to_string();
    assert!(new.starts_with("shp_") && new != old);

    // Instance A: at once.
    let (status, err) = a.get(&me, Some(&old)).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    assert_eq!(a.get(&me, Some(&new)).await.0, StatusCode::OK);
    // Instance B: the new token at once; the old one once B's cache entry is older than 1 s.
    assert_eq!(b.get(&me, Some(&new)).await.0, StatusCode::OK);
    tokio::time::sleep(StdDuration::from_millis(1_100)).await;
    let (status, err) = b.get(&me, Some(&old)).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let (status, _) = b
        .post(&format!("/users/{id}/tokens"), Some(&old), json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old token cannot rotate again"
    );
    assert_eq!(b.get(&me, Some(&new)).await.0, StatusCode::OK);
    // The other member is untouched.
    assert_eq!(
        b.get(&format!("/users/{other}"), Some(&other_token))
            .await
            .0,
        StatusCode::OK
    );
    let (status, err) = a
        .post("/users/999999/tokens", Some(ADMIN_TOKEN), json!({}))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "USER_NOT_FOUND")
    );
}

async fn admin_reissues_a_lost_token(backend: Backend) {
    let Some(a) = TestApp::spawn(backend).await else {
        return;
    };
    let b = a.second_instance().await;
    let (id, old) = a.member("kim").await;
    let me = format!("/users/{id}");
    assert_eq!(b.get(&me, Some(&old)).await.0, StatusCode::OK);
    let (status, issued) = a
        .post(
            &format!("/admin/users/{id}/tokens"),
            Some(ADMIN_TOKEN),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    let new = issued["token"].as_str().expect("token").to_string();
    assert_eq!(a.get(&me, Some(&old)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(a.get(&me, Some(&new)).await.0, StatusCode::OK);
    tokio::time::sleep(StdDuration::from_millis(1_100)).await;
    assert_eq!(b.get(&me, Some(&old)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(b.get(&me, Some(&new)).await.0, StatusCode::OK);
    let (status, err) = a
        .post("/admin/users/999999/tokens", Some(ADMIN_TOKEN), json!({}))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "USER_NOT_FOUND")
    );
    let (status, err) = a
        .post("/admin/users/abc/tokens", Some(ADMIN_TOKEN), json!({}))
        .await;
    assert_eq!(
        (status, err["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("userId"))
    );
}

//! Sign-up, tokens, authorization, and the cross-cutting HTTP behaviour.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, code};
use crate::on_both_backends;

on_both_backends!(
    signup_returns_a_working_token,
    bad_signups_are_rejected_and_change_nothing,
    members_only_see_themselves,
    operations_endpoints_answer,
    metrics_count_this_tests_requests_with_their_labels,
    unknown_routes_and_oversized_bodies_get_json_errors,
);

async fn user_count(app: &TestApp) -> i64 {
    let mut conn = app.db.read().await.unwrap();
    shopd::sql_scalar!(&mut conn, "SELECT COUNT(*) FROM users").unwrap()
}

async fn signup_returns_a_working_token(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (status, body) = app
        .post("/users", None, json!({ "name": "  Kim Minji " }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["name"], "Kim Minji");
    let id = body["id"].as_i64().unwrap();
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("shp_"));

    let (status, me) = app.get(&format!("/users/{id}"), Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["id"], id);
    assert!(me["createdAt"].as_str().unwrap().ends_with('Z'));

    // Only the hash is stored.
    let mut conn = app.db.read().await.unwrap();
    let stored: String =
        shopd::sql_scalar!(&mut conn, "SELECT token_hash FROM users WHERE id = $1", id).unwrap();
    assert_ne!(stored, token);
    assert_eq!(stored, shopd::auth::hash_token(token));
}

async fn bad_signups_are_rejected_and_change_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let cases = [
        (json!({}), "name"),
        (json!({ "name": "" }), "name"),
        (json!({ "name": "   " }), "name"),
        (json!({ "name": 42 }), "name"),
        (json!({ "name": "x".repeat(101) }), "name"),
        (json!([1, 2]), "body"),
    ];
    for (body, field) in cases {
        let (status, err) = app.post("/users", None, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {err}");
        assert_eq!(code(&err), "VALIDATION_ERROR");
        assert_eq!(err["details"]["field"], field, "{body} -> {err}");
    }
    // Malformed JSON.
    let response = app
        .client
        .post(app.url("/users"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let err: serde_json::Value = response.json().await.unwrap();
    assert_eq!(code(&err), "VALIDATION_ERROR");
    assert_eq!(user_count(&app).await, 0);
}

async fn members_only_see_themselves(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (alice, alice_token) = app.member("alice").await;
    let (bob, _) = app.member("bob").await;

    let (status, err) = app.get(&format!("/users/{bob}"), Some(&alice_token)).await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    // Even a user that does not exist: no existence oracle for members.
    let (status, _) = app.get("/users/999999", Some(&alice_token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, err) = app.get(&format!("/users/{alice}"), None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let (status, err) = app
        .get(&format!("/users/{alice}"), Some("shp_not-a-token"))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let response = app
        .client
        .get(app.url(&format!("/users/{alice}")))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let (status, body) = app.get(&format!("/users/{bob}"), Some(ADMIN_TOKEN)).await;
    assert_eq!(
        (status, body["name"].as_str()),
        (StatusCode::OK, Some("bob"))
    );
    let (status, err) = app.get("/users/999999", Some(ADMIN_TOKEN)).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "USER_NOT_FOUND")
    );
    let (status, err) = app.get("/users/abc", Some(ADMIN_TOKEN)).await;
    assert_eq!(
        (status, code(&err), err["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR", Some("userId")),
        "{err}"
    );

    // Admin endpoints refuse member tokens.
    let (status, err) = app
        .post(
            "/admin/products",
            Some(&alice_token),
            json!({ "name": "x", "price": 1, "stock": 1 }),
        )
        .await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
}

/// Held by every test that calls `/healthz`, so the metrics test can count its own calls.
static HEALTHZ: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn operations_endpoints_answer(backend: Backend) {
    let _turn = HEALTHZ.lock().await;
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    assert_eq!(
        app.get("/healthz", None).await,
        (StatusCode::OK, json!({ "status": "ok" }))
    );
    assert_eq!(
        app.get("/readyz", None).await,
        (StatusCode::OK, json!({ "status": "ok" }))
    );
    let (status, doc) = app.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let docs = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.text().await.unwrap().contains("swagger"),
        "docs page served offline"
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
}

async fn unknown_routes_and_oversized_bodies_get_json_errors(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (status, err) = app.get("/no/such/route", None).await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "NOT_FOUND"));

    let huge = json!({ "name": "x".repeat(app.settings.body_limit + 1) });
    let (status, err) = app.post("/users", None, huge).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
    );
    assert_eq!(user_count(&app).await, 0);
}

/// The value of the series `name` whose labels include every `labels` pair (0 when absent).
pub(crate) fn series(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            let labels_text = if rest.is_empty() {
                ""
            } else {
                rest.strip_prefix('{')?.strip_suffix('}')?
            };
            let all = labels.iter().all(|(k, v)| {
                labels_text
                    .split(',')
                    .any(|kv| kv == format!("{k}=\"{v}\""))
            });
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

async fn scrape(app: &TestApp) -> String {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

async fn metrics_count_this_tests_requests_with_their_labels(backend: Backend) {
    // The recorder is process-wide: the tests that call /healthz take turns (HEALTHZ), so its
    // series moves by exactly this test's requests. Order outcomes are shared with other tests
    // running at the same time: they move by at least ours.
    let _turn = HEALTHZ.lock().await;
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    assert_eq!(app.charge(id, &token, 10_000).await.0, StatusCode::OK);
    let product = app.product("Mug", 4_000, 10).await;

    let healthz = [("method", "GET"), ("route", "/healthz"), ("status", "200")];
    let paid = [("outcome", "PAID")];
    let pending = [("outcome", "PENDING")];
    let short = [("outcome", "INSUFFICIENT_BALANCE")];
    let created = [("method", "POST"), ("route", "/orders"), ("status", "201")];
    let before = scrape(&app).await;

    for _ in 0..3 {
        assert_eq!(app.get("/healthz", None).await.0, StatusCode::OK);
    }
    for _ in 0..2 {
        let (status, order) = app.order(&token, &[(product, 1)], json!({})).await;
        assert_eq!(order["status"], "PAID", "{status} {order}");
    }
    let (_, order) = app
        .order(&token, &[(product, 1)], json!({ "pay": false }))
        .await;
    assert_eq!(order["status"], "PENDING", "{order}");
    let (status, err) = app.order(&token, &[(product, 1)], json!({})).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::PAYMENT_REQUIRED, "INSUFFICIENT_BALANCE")
    );

    let after = scrape(&app).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        series(&after, name, labels) - series(&before, name, labels)
    };
    assert_eq!(
        delta("http_requests_total", &healthz),
        3.0,
        "GET /healthz 200, labelled by method, route template and status:\n{after}"
    );
    assert!(
        delta("http_requests_total", &created) >= 3.0,
        "POST /orders 201:\n{after}"
    );
    assert!(
        after.contains("http_request_duration_seconds"),
        "request latency histogram:\n{after}"
    );
    assert!(delta("orders_placed_total", &paid) >= 2.0, "{after}");
    assert!(delta("orders_placed_total", &pending) >= 1.0, "{after}");
    assert!(delta("orders_placed_total", &short) >= 1.0, "{after}");
}

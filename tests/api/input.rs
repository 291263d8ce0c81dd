//! Hostile and malformed input (issue #12): both backends answer it the same way, with a
//! JSON error naming the field or parameter, and nothing changes.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, code};
use crate::on_both_backends;

on_both_backends!(
    control_characters_in_text_are_rejected,
    descriptions_allow_tab_and_line_feed_only,
    outbox_cursor_and_event_id_are_validated,
    wrong_methods_get_405_with_a_json_body_and_allow,
    non_json_bodies_get_415_and_change_nothing,
    path_and_query_errors_name_the_parameter_in_plain_words,
    integral_numbers_are_integers_as_in_json_schema,
    the_served_document_carries_the_configured_charge_limit,
);

async fn count(app: &TestApp, table: &str) -> i64 {
    let mut conn = app.db.read().await.unwrap();
    let counted = match table {
        "users" => shopd::sql_scalar!(&mut conn, "SELECT COUNT(*) FROM users"),
        "products" => shopd::sql_scalar!(&mut conn, "SELECT COUNT(*) FROM products"),
        "coupons" => shopd::sql_scalar!(&mut conn, "SELECT COUNT(*) FROM coupons"),
        other => panic!("no count for {other}"),
    };
    counted.unwrap()
}

fn assert_validation(status: StatusCode, err: &Value, field: &str, what: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what} -> {err}");
    assert_eq!(code(err), "VALIDATION_ERROR", "{what} -> {err}");
    assert_eq!(err["details"]["field"], field, "{what} -> {err}");
}

const BAD_TEXT: [&str; 7] = [
    "Kim\u{0}Minji",
    "\u{0}",
    "Kim\nMinji",
    "Kim\tMinji",
    "Kim\r",
    "Kim\u{1b}[31m",
    "Kim\u{7f}",
];

async fn control_characters_in_text_are_rejected(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let product = app.product("Mug", 12_000, 5).await;
    let ends = chrono::Utc::now() + chrono::Duration::days(1);
    for bad in BAD_TEXT {
        let (status, err) = app.post("/users", None, json!({ "name": bad })).await;
        assert_validation(status, &err, "name", &format!("POST /users {bad:?}"));

        let (status, err) = app
            .post(
                "/admin/products",
                Some(ADMIN_TOKEN),
                json!({ "name": bad, "price": 1, "stock": 1 }),
            )
            .await;
        assert_validation(
            status,
            &err,
            "name",
            &format!("POST /admin/products {bad:?}"),
        );

        let (status, err) = app
            .patch(
                &format!("/admin/products/{product}"),
                Some(ADMIN_TOKEN),
                json!({ "name": bad }),
            )
            .await;
        assert_validation(status, &err, "name", &format!("PATCH name {bad:?}"));

        let (status, err) = app
            .post(
                "/admin/coupons",
                Some(ADMIN_TOKEN),
                json!({
                    "name": bad,
                    "discount": { "type": "FIXED", "value": 1000 },
                    "totalQuantity": 10,
                    "issueEndsAt": ends,
                    "validDays": 7,
                }),
            )
            .await;
        assert_validation(
            status,
            &err,
            "name",
            &format!("POST /admin/coupons {bad:?}"),
        );
    }
    // Nothing changed.
    assert_eq!(count(&app, "users").await, 0);
    assert_eq!(count(&app, "products").await, 1);
    assert_eq!(count(&app, "coupons").await, 0);
    let (_, mug) = app.get(&format!("/products/{product}"), None).await;
    assert_eq!(mug["name"], "Mug");
}

async fn descriptions_allow_tab_and_line_feed_only(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let description = "350 ml\n\tdishwasher safe";
    let (status, created) = app
        .post(
            "/admin/products",
            Some(ADMIN_TOKEN),
            json!({ "name": "Mug", "description": description, "price": 1, "stock": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["description"], description);
    let id = created["id"].as_i64().unwrap();

    for bad in ["a\u{0}b", "a\r\nb", "a\u{1b}b", "a\u{7f}", "a\u{85}b"] {
        let (status, err) = app
            .post(
                "/admin/products",
                Some(ADMIN_TOKEN),
                json!({ "name": "Mug", "description": bad, "price": 1, "stock": 1 }),
            )
            .await;
        assert_validation(status, &err, "description", &format!("POST {bad:?}"));
        let (status, err) = app
            .patch(
                &format!("/admin/products/{id}"),
                Some(ADMIN_TOKEN),
                json!({ "description": bad }),
            )
            .await;
        assert_validation(status, &err, "description", &format!("PATCH {bad:?}"));
    }
    assert_eq!(count(&app, "products").await, 1);
    let (_, mug) = app.get(&format!("/products/{id}"), None).await;
    assert_eq!(mug["description"], description);
}

async fn outbox_cursor_and_event_id_are_validated(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for cursor in ["garbage", "%00", "abc%00def", "1", "-1"] {
        let (status, err) = app
            .get(&format!("/admin/outbox?cursor={cursor}"), Some(ADMIN_TOKEN))
            .await;
        assert_validation(status, &err, "cursor", cursor);
        assert_eq!(err["details"]["reason"], "is not a cursor this API issued");
    }
    // A well-formed cursor (the id of an event) pages normally, even if the event is gone.
    let (status, page) = app
        .get(
            &format!("/admin/outbox?cursor={}", uuid::Uuid::now_v7()),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"], json!([]));
    assert_eq!(page["nextCursor"], Value::Null);

    for id in ["nope", "%00", "123"] {
        let (status, err) = app
            .post(
                &format!("/admin/outbox/{id}/retry"),
                Some(ADMIN_TOKEN),
                json!(null),
            )
            .await;
        assert_validation(status, &err, "eventId", id);
    }
    let (status, err) = app
        .post(
            &format!("/admin/outbox/{}/retry", uuid::Uuid::now_v7()),
            Some(ADMIN_TOKEN),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "OUTBOX_EVENT_NOT_FOUND")
    );
}

async fn wrong_methods_get_405_with_a_json_body_and_allow(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for (method, path, allowed) in [
        (reqwest::Method::DELETE, "/products/1", "GET"),
        (reqwest::Method::GET, "/users", "POST"),
        (reqwest::Method::PUT, "/orders", "POST"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        let allow = response.headers()["allow"].to_str().unwrap().to_string();
        assert!(allow.contains(allowed), "{method} {path}: allow {allow}");
        assert!(response.headers().contains_key("x-request-id"));
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(code(&body), "METHOD_NOT_ALLOWED", "{body}");
        assert_eq!(body["details"]["method"], method.as_str());
        assert!(
            body["details"]["allowed"]
                .as_array()
                .unwrap()
                .contains(&json!(allowed)),
            "{body}"
        );
    }
}

async fn non_json_bodies_get_415_and_change_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = app
            .client
            .post(app.url(&format!("/users/{id}/balance/charge")))
            .bearer_auth(&token)
            .body(r#"{"amount": 1000}"#);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let response = req.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(code(&body), "UNSUPPORTED_MEDIA_TYPE", "{body}");
        assert_eq!(body["details"]["expected"], "application/json");
    }
    // JSON with a charset parameter is JSON.
    let response = app
        .client
        .post(app.url("/users"))
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"name": "Lee"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(app.balance_of(id).await, 0);
    assert_eq!(count(&app, "users").await, 2);
}

async fn path_and_query_errors_name_the_parameter_in_plain_words(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    let path_cases = [
        ("/users/abc".to_string(), "userId"),
        ("/products/1.5".to_string(), "productId"),
        ("/orders/99999999999999999999".to_string(), "orderId"),
        (format!("/users/{id}/cart/items/x"), "productId"),
        ("/users/x/cart/items/1".to_string(), "userId"),
    ];
    for (path, field) in path_cases {
        let (status, err) = app.get(&path, Some(ADMIN_TOKEN)).await;
        let (status, err) = if path.contains("/cart/items/") {
            app.request(
                reqwest::Method::DELETE,
                &path,
                Some(ADMIN_TOKEN),
                None,
                None,
            )
            .await
        } else {
            (status, err)
        };
        assert_validation(status, &err, field, &path);
        assert_eq!(
            err["details"]["reason"], "must be a positive integer",
            "{err}"
        );
    }
    let query_cases = [
        (
            "/products?limit=abc",
            "limit",
            "must be an integer within range",
        ),
        (
            "/products?limit=1e3",
            "limit",
            "must be an integer within range",
        ),
        (
            "/products/popular?days=x",
            "days",
            "must be an integer within range",
        ),
        (
            "/admin/outbox?status=LOST",
            "status",
            "must be one of PENDING, DELIVERED, DEAD",
        ),
        (
            "/admin/ranking/refresh?full=maybe",
            "full",
            "must be true or false",
        ),
    ];
    for (path, field, reason) in query_cases {
        let (status, err) = if path.starts_with("/admin/ranking") {
            app.request(reqwest::Method::POST, path, Some(ADMIN_TOKEN), None, None)
                .await
        } else {
            app.get(path, Some(ADMIN_TOKEN)).await
        };
        assert_validation(status, &err, field, path);
        assert_eq!(err["details"]["reason"], reason, "{path} -> {err}");
    }
    let (status, err) = app
        .get(&format!("/users/{id}/orders?status=NOPE"), Some(&token))
        .await;
    assert_validation(status, &err, "status", "orders?status=NOPE");
    // No Rust type names leak into bodies either.
    let (status, err) = app
        .post(
            &format!("/users/{id}/balance/charge"),
            Some(&token),
            json!({ "amount": "lots" }),
        )
        .await;
    assert_validation(status, &err, "amount", "amount: string");
    let text = err.to_string();
    assert!(!text.contains("i64"), "{text}");
    assert_eq!(
        err["details"]["reason"],
        "must be an integer (got a string)"
    );
}

async fn integral_numbers_are_integers_as_in_json_schema(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    let path = format!("/users/{id}/balance/charge");
    let send = |body: &'static str, key: &'static str| {
        app.client
            .post(app.url(&path))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body)
            .send()
    };
    let response = send(r#"{"amount": 1000.0}"#, "k1").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The same request for idempotency: replayed, not charged twice.
    let response = send(r#"{"amount": 1000}"#, "k1").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.balance_of(id).await, 1000);
    let response = send(r#"{"amount": 1000.5}"#, "k2").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let err: Value = response.json().await.unwrap();
    assert_eq!(err["details"]["field"], "amount");
    assert_eq!(app.balance_of(id).await, 1000);
}

async fn the_served_document_carries_the_configured_charge_limit(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| s.max_charge = 12_345).await else {
        return;
    };
    let (status, doc) = app.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let amount = &doc["components"]["schemas"]["ChargeRequest"]["properties"]["amount"];
    assert_eq!(amount["minimum"], 1, "{amount}");
    assert_eq!(amount["maximum"], 12_345, "{amount}");
}

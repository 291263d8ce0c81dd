//! Answer formats shared by every resource: timestamps and list shapes (issue #12).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    every_timestamp_has_microsecond_precision,
    every_list_answers_items_and_next_cursor,
    the_docs_page_calls_no_online_validator,
);

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn is_micros_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 27
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[26] == b'Z'
        && b[20..26].iter().all(u8::is_ascii_digit)
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// Every string under a key ending in `At` (or `asOf`) anywhere in `value`; returns how many.
fn check_timestamps(value: &Value, context: &str) -> usize {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) if k.ends_with("At") || k == "asOf" => {
                    assert!(is_micros_utc(s), "{context}: {k} = {s}");
                    1
                }
                other => check_timestamps(other, context),
            })
            .sum(),
        Value::Array(items) => items.iter().map(|v| check_timestamps(v, context)).sum(),
        _ => 0,
    }
}

async fn every_timestamp_has_microsecond_precision(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    app.charge(id, &token, 100_000).await;
    let product = app.product("Mug", 12_000, 5).await;
    let coupon = app
        .campaign(json!({ "type": "FIXED", "value": 1000 }), 0, 10)
        .await;
    app.issue(coupon, &token).await;
    app.request(
        reqwest::Method::PUT,
        &format!("/users/{id}/cart/items/{product}"),
        Some(&token),
        Some(&json!({ "quantity": 1 })),
        None,
    )
    .await;
    let (status, order) = app
        .order(&token, &[(product, 1)], json!({ "couponId": coupon }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let order_id = order["id"].as_i64().unwrap();
    // The outbox event is written in the payment's transaction, committed before the answer
    // (no platform: it stays PENDING).
    let (_, page) = app.get("/admin/outbox", Some(ADMIN_TOKEN)).await;
    assert!(
        page["items"].as_array().is_some_and(|i| !i.is_empty()),
        "{page}"
    );
    let paths = [
        format!("/users/{id}"),
        format!("/users/{id}/balance"),
        format!("/users/{id}/balance/transactions"),
        format!("/products/{product}"),
        "/products".to_string(),
        "/coupons".to_string(),
        format!("/coupons/{coupon}"),
        format!("/users/{id}/coupons?status=ALL"),
        format!("/users/{id}/cart"),
        format!("/orders/{order_id}"),
        format!("/users/{id}/orders"),
        "/products/popular".to_string(),
        "/admin/outbox".to_string(),
    ];
    let mut seen = 0;
    for path in paths {
        let (status, body) = app.get(&path, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        seen += check_timestamps(&body, &path);
    }
    // The outbox payload's own timestamps (occurredAt, order.paidAt) are checked above too.
    let (_, outbox) = app.get("/admin/outbox", Some(ADMIN_TOKEN)).await;
    let event = &outbox["items"][0];
    assert!(is_micros_utc(event["nextAttemptAt"].as_str().unwrap()));
    assert!(is_micros_utc(
        event["payload"]["order"]["paidAt"].as_str().unwrap()
    ));
    assert!(seen > 20, "checked {seen} timestamps");
}

async fn every_list_answers_items_and_next_cursor(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    app.campaign(json!({ "type": "FIXED", "value": 1000 }), 0, 10)
        .await;
    for path in [
        "/products".to_string(),
        "/coupons".to_string(),
        format!("/users/{id}/coupons"),
        format!("/users/{id}/coupons?status=ALL"),
        format!("/users/{id}/orders"),
        format!("/users/{id}/balance/transactions"),
        "/admin/outbox".to_string(),
    ] {
        let token = if path.starts_with("/admin") {
            ADMIN_TOKEN
        } else {
            &token
        };
        let (status, body) = app.get(&path, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(body["items"].is_array(), "{path}: {body}");
        let object = body.as_object().unwrap();
        assert!(object.contains_key("nextCursor"), "{path}: {body}");
        assert_eq!(body["nextCursor"], Value::Null, "{path}: {body}");
    }
}

async fn the_docs_page_calls_no_online_validator(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let response = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let script = response.text().await.unwrap();
    assert!(script.contains("/openapi.json"), "{script}");
    assert!(
        script.contains(r#""validatorUrl": "none""#),
        "the validator is not off: {script}"
    );
}

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
);

async fn count(app: &TestApp, table: &str) -> i64 {
    let mut conn = app.db.read().await.unwrap();
    let sql = format!("SELECT COUNT(*) FROM {table}");
    shopd::sql_scalar!(&mut conn, sqlx::AssertSqlSafe(sql)).unwrap()
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

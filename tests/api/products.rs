//! Catalogue reads and admin product management.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, code};
use crate::invariants::assert_invariants;
use crate::on_both_backends;

on_both_backends!(
    catalogue_lists_only_products_on_sale,
    product_validation,
    admin_updates_products,
    stock_changes_never_go_below_zero,
);

async fn catalogue_lists_only_products_on_sale(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mug = app.product("Mug", 12_000, 5).await;
    let kettle = app.product("Kettle", 45_000, 1).await;
    let (status, suspended) = app
        .post(
            "/admin/products",
            Some(ADMIN_TOKEN),
            json!({ "name": "Old", "price": 1, "stock": 1, "status": "SUSPENDED" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let suspended = suspended["id"].as_i64().unwrap();
    let gone = app.product("Gone", 1, 0).await;
    app.patch(
        &format!("/admin/products/{gone}"),
        Some(ADMIN_TOKEN),
        json!({ "status": "DISCONTINUED" }),
    )
    .await;

    let (status, page) = app.get("/products", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![mug, kettle]);
    assert_eq!(page["items"][0]["stock"], 5);

    let (_, first) = app.get("/products?limit=1", None).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let cursor = first["nextCursor"].as_str().unwrap().to_string();
    let (_, second) = app
        .get(&format!("/products?limit=1&cursor={cursor}"), None)
        .await;
    assert_eq!(second["items"][0]["id"], kettle);
    assert!(second["nextCursor"].is_null());

    let (status, body) = app.get(&format!("/products/{suspended}"), None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("SUSPENDED"))
    );
    let (status, err) = app.get(&format!("/products/{gone}"), None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "PRODUCT_NOT_FOUND")
    );
    let (status, _) = app
        .get(&format!("/products/{gone}"), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "admins still see discontinued products"
    );
    let (status, err) = app.get("/products/987654", None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "PRODUCT_NOT_FOUND")
    );
    let (status, err) = app.get("/products/mug", None).await;
    assert_eq!(
        (status, code(&err), err["details"]["field"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            Some("productId")
        ),
        "{err}"
    );

    // A public read needs no token, but a token that is sent must be known (SPEC §2), and the
    // document declares that answer (schemathesis found it undeclared).
    let (status, body) = app
        .get(&format!("/products/{mug}"), Some("shp_not_a_token"))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let (_, doc) = app.get("/openapi.json", None).await;
    assert!(
        doc["paths"]["/products/{productId}"]["get"]["responses"]["401"].is_object(),
        "401 declared"
    );
}

async fn product_validation(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for (body, field) in [
        (json!({ "price": 1, "stock": 1 }), "name"),
        (json!({ "name": "", "price": 1, "stock": 1 }), "name"),
        (json!({ "name": "x", "price": -1, "stock": 1 }), "price"),
        (json!({ "name": "x", "price": "12", "stock": 1 }), "price"),
        (
            json!({ "name": "x", "price": 1_000_000_001i64, "stock": 1 }),
            "price",
        ),
        (json!({ "name": "x", "price": 1, "stock": -1 }), "stock"),
        (
            json!({ "name": "x", "price": 1, "stock": 1, "status": "SOLD" }),
            "status",
        ),
    ] {
        let (status, err) = app
            .post("/admin/products", Some(ADMIN_TOKEN), body.clone())
            .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
            "{body} -> {err}"
        );
        assert_eq!(err["details"]["field"], field, "{body} -> {err}");
    }
    let (_, page) = app.get("/products", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    let (status, _) = app
        .post(
            "/admin/products",
            None,
            json!({ "name": "x", "price": 1, "stock": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn admin_updates_products(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = app.product("Mug", 12_000, 5).await;
    let (status, body) = app
        .patch(
            &format!("/admin/products/{id}"),
            Some(ADMIN_TOKEN),
            json!({ "price": 13_000, "description": "Blue" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["price"].as_i64(),
            body["description"].as_str(),
            body["name"].as_str()
        ),
        (Some(13_000), Some("Blue"), Some("Mug"))
    );
    let (status, body) = app
        .patch(
            &format!("/admin/products/{id}"),
            Some(ADMIN_TOKEN),
            json!({ "status": "SUSPENDED" }),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("SUSPENDED"))
    );

    let (status, err) = app
        .patch(
            &format!("/admin/products/{id}"),
            Some(ADMIN_TOKEN),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
    );
    let (status, err) = app
        .patch(
            &format!("/admin/products/{id}"),
            Some(ADMIN_TOKEN),
            json!({ "status": "GONE" }),
        )
        .await;
    assert_eq!(
        (status, err["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("status"))
    );
    let (status, err) = app
        .patch(
            "/admin/products/999",
            Some(ADMIN_TOKEN),
            json!({ "price": 1 }),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "PRODUCT_NOT_FOUND")
    );
}

async fn stock_changes_never_go_below_zero(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = app.product("Mug", 12_000, 5).await;
    let path = format!("/admin/products/{id}/stock");
    let (status, body) = app
        .post(&path, Some(ADMIN_TOKEN), json!({ "delta": 10 }))
        .await;
    assert_eq!((status, body["stock"].as_i64()), (StatusCode::OK, Some(15)));
    let (status, body) = app
        .post(&path, Some(ADMIN_TOKEN), json!({ "delta": -15 }))
        .await;
    assert_eq!((status, body["stock"].as_i64()), (StatusCode::OK, Some(0)));
    let (status, err) = app
        .post(&path, Some(ADMIN_TOKEN), json!({ "delta": -1 }))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "STOCK_UNDERFLOW")
    );
    let (status, err) = app
        .post(&path, Some(ADMIN_TOKEN), json!({ "delta": 0 }))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
    );
    let (status, err) = app
        .post(
            "/admin/products/999/stock",
            Some(ADMIN_TOKEN),
            json!({ "delta": 1 }),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "PRODUCT_NOT_FOUND")
    );
    // Idempotent restock.
    for _ in 0..3 {
        let (status, body) = app
            .post_idem(&path, Some(ADMIN_TOKEN), json!({ "delta": 7 }), "restock-7")
            .await;
        assert_eq!((status, body["stock"].as_i64()), (StatusCode::OK, Some(7)));
    }
    let (_, body) = app.get(&format!("/products/{id}"), None).await;
    assert_eq!(body["stock"], 7);
    assert_invariants(&app).await;
}

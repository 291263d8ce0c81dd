//! The OpenAPI document is reviewed: any change to the API shows up as a snapshot diff.
//! Structural checks keep it honest: no dangling reference, and the statuses and bounds the
//! server enforces are declared.

use serde_json::Value;

fn doc() -> Value {
    serde_json::to_value(shopd::http::openapi()).expect("serializable")
}

#[test]
fn openapi_document_matches_snapshot() {
    insta::assert_json_snapshot!("openapi", doc());
}

fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_ref_resolves() {
    let doc = doc();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    let dangling: Vec<&str> = refs
        .into_iter()
        .filter(|r| {
            r.strip_prefix('#')
                .and_then(|pointer| doc.pointer(pointer))
                .is_none()
        })
        .collect();
    assert!(dangling.is_empty(), "dangling references: {dangling:?}");
}

/// `(path, method, operation)` for every operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push((path.clone(), method.clone(), op.clone()));
        }
    }
    out
}

fn params<'a>(op: &'a Value, location: &str) -> Vec<&'a Value> {
    op["parameters"]
        .as_array()
        .map(|ps| ps.iter().filter(|p| p["in"] == location).collect())
        .unwrap_or_default()
}

#[test]
fn every_answerable_status_is_declared() {
    let doc = doc();
    for (path, method, op) in operations(&doc) {
        let responses = &op["responses"];
        let has = |status: &str| responses.get(status).is_some();
        let int_path = params(&op, "path")
            .iter()
            .any(|p| p["schema"]["type"] == "integer");
        if int_path || !params(&op, "query").is_empty() || op.get("requestBody").is_some() {
            assert!(has("400"), "{method} {path} must declare 400");
        }
        if op.get("requestBody").is_some() {
            assert!(has("413") && has("415"), "{method} {path}: 413 and 415");
        }
        if op.get("security").is_some() {
            assert!(has("401"), "{method} {path}: 401");
        }
        let idempotent = params(&op, "header")
            .iter()
            .any(|p| p["name"] == "Idempotency-Key");
        if idempotent {
            assert!(has("409") && has("422"), "{method} {path}: 409 and 422");
        }
    }
    let refresh = &doc["paths"]["/admin/ranking/refresh"]["post"]["responses"];
    assert!(refresh.get("400").is_some());
    // Every endpoint accepting Idempotency-Key (SPEC §7) declares it.
    for (path, method) in [
        ("/users/{userId}/balance/charge", "post"),
        ("/admin/products", "post"),
        ("/admin/products/{productId}/stock", "post"),
        ("/admin/coupons", "post"),
        ("/coupons/{couponId}/issue", "post"),
        ("/orders", "post"),
        ("/orders/{orderId}/pay", "post"),
        ("/orders/{orderId}/cancel", "post"),
        ("/admin/orders/{orderId}/refunds", "post"),
    ] {
        let op = &doc["paths"][path][method];
        let key = params(op, "header")
            .into_iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap_or_else(|| panic!("{method} {path}: Idempotency-Key"));
        assert_eq!(key["schema"]["minLength"], 1);
        assert_eq!(key["schema"]["maxLength"], 255);
        assert!(op["responses"].get("422").is_some(), "{method} {path}: 422");
    }
}

#[test]
fn enforced_bounds_are_declared() {
    let doc = doc();
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    for (path, method) in [
        ("/products", "get"),
        ("/users/{userId}/balance/transactions", "get"),
        ("/users/{userId}/orders", "get"),
        ("/admin/outbox", "get"),
        ("/products/popular", "get"),
    ] {
        let limit = params(&doc["paths"][path][method], "query")
            .into_iter()
            .find(|p| p["name"] == "limit")
            .cloned()
            .unwrap_or_else(|| panic!("{path}: limit"));
        assert_eq!(limit["schema"]["minimum"], 1, "{path}");
        assert_eq!(limit["schema"]["maximum"], 100, "{path}");
    }
    for (schema_name, field) in [
        ("CreateUserRequest", "name"),
        ("CreateProductRequest", "name"),
        ("UpdateProductRequest", "name"),
        ("CreateCouponRequest", "name"),
    ] {
        let prop = &schema(schema_name)["properties"][field];
        assert_eq!(prop["minLength"], 1, "{schema_name}.{field}: {prop}");
        assert!(prop["maxLength"].is_u64(), "{schema_name}.{field}");
    }
    assert_eq!(
        schema("ChargeRequest")["properties"]["amount"]["minimum"],
        1
    );
    let delta = &schema("StockRequest")["properties"]["delta"];
    assert_eq!(delta["minimum"], -1_000_000_000);
    assert_eq!(delta["maximum"], 1_000_000_000);
    assert!(delta["description"].as_str().unwrap().contains("non-zero"));
    let quantity = &schema("PutCartItemRequest")["properties"]["quantity"];
    assert_eq!(
        (quantity["minimum"].clone(), quantity["maximum"].clone()),
        (1.into(), 1000.into())
    );
    let description = schema("PlaceOrderRequest")["description"].to_string();
    assert!(description.contains("fromCart") && description.contains("productIds"));
    let reason = &schema("RefundRequest")["properties"]["reason"];
    assert_eq!(
        (reason["minLength"].clone(), reason["maxLength"].clone()),
        (1.into(), 500.into())
    );
    let refund_quantity = &schema("RefundLineRequest")["properties"]["quantity"];
    assert_eq!(
        (
            refund_quantity["minimum"].clone(),
            refund_quantity["maximum"].clone()
        ),
        (1.into(), 1000.into())
    );
    let refunds = &doc["paths"]["/admin/orders/{orderId}/refunds"]["post"]["responses"];
    for status in [
        "201", "400", "401", "403", "404", "409", "413", "415", "422",
    ] {
        assert!(refunds.get(status).is_some(), "refunds: {status}");
    }
    let statuses = schema("OrderStatus").to_string();
    for status in ["CONFIRMED", "PARTIALLY_REFUNDED", "REFUNDED"] {
        assert!(statuses.contains(status), "{statuses}");
    }
    let discount = schema("DiscountBody").to_string();
    assert!(discount.contains("FIXED") && discount.contains("maxAmount"));
}

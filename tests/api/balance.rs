//! Balance, charges, ledger and idempotency keys.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, code};
use crate::invariants::assert_invariants;
use crate::on_both_backends;

on_both_backends!(
    charge_and_read_the_ledger,
    bad_amounts_are_rejected_and_change_nothing,
    balance_never_passes_the_maximum,
    balance_of_others_is_forbidden,
    ledger_pages_newest_first,
    idempotent_charge_replays_the_first_answer,
    idempotency_key_reuse_and_in_progress,
    every_keyed_endpoint_refuses_a_reused_key,
);

async fn charge_and_read_the_ledger(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    let (status, body) = app.get(&format!("/users/{id}/balance"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["userId"].as_i64(), body["balance"].as_i64()),
        (Some(id), Some(0))
    );

    let (status, body) = app.charge(id, &token, 50_000).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["balance"], 50_000);
    let (_, body) = app.charge(id, &token, 2_500).await;
    assert_eq!(body["balance"], 52_500);

    let (status, ledger) = app
        .get(&format!("/users/{id}/balance/transactions"), Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK);
    let items = ledger["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        (
            items[0]["kind"].as_str(),
            items[0]["amount"].as_i64(),
            items[0]["balanceAfter"].as_i64()
        ),
        (Some("CHARGE"), Some(2_500), Some(52_500))
    );
    assert_eq!(
        (
            items[1]["amount"].as_i64(),
            items[1]["balanceAfter"].as_i64()
        ),
        (Some(50_000), Some(50_000))
    );
    assert!(ledger["nextCursor"].is_null());
    assert_invariants(&app).await;
}

async fn bad_amounts_are_rejected_and_change_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    let path = format!("/users/{id}/balance/charge");
    for body in [
        json!({ "amount": 0 }),
        json!({ "amount": -100 }),
        json!({ "amount": "1000" }),
        json!({ "amount": 10.5 }),
        json!({ "amount": 1e30 }),
        json!({ "amount": null }),
        json!({}),
        json!({ "amount": 1_000_001 }),
    ] {
        let (status, err) = app.post(&path, Some(&token), body.clone()).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
            "{body} -> {err}"
        );
        assert_eq!(err["details"]["field"], "amount", "{body} -> {err}");
    }
    // A number beyond i64.
    let response = app
        .client
        .post(app.url(&path))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"amount": 99999999999999999999999}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (_, body) = app.get(&format!("/users/{id}/balance"), Some(&token)).await;
    assert_eq!(body["balance"], 0);
    let (_, ledger) = app
        .get(&format!("/users/{id}/balance/transactions"), Some(&token))
        .await;
    assert_eq!(ledger["items"].as_array().unwrap().len(), 0);
}

async fn balance_never_passes_the_maximum(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    for _ in 0..10 {
        assert_eq!(app.charge(id, &token, 1_000_000).await.0, StatusCode::OK);
    }
    let (status, err) = app.charge(id, &token, 1).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "BALANCE_LIMIT_EXCEEDED")
    );
    assert_eq!(err["details"]["balance"], 10_000_000);
    let (_, body) = app.get(&format!("/users/{id}/balance"), Some(&token)).await;
    assert_eq!(body["balance"], 10_000_000);
    assert_invariants(&app).await;
}

async fn balance_of_others_is_forbidden(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (alice, alice_token) = app.member("alice").await;
    let (bob, bob_token) = app.member("bob").await;
    for (status, err) in [
        app.get(&format!("/users/{bob}/balance"), Some(&alice_token))
            .await,
        app.charge(bob, &alice_token, 1_000).await,
        app.get(
            &format!("/users/{bob}/balance/transactions"),
            Some(&alice_token),
        )
        .await,
    ] {
        assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    }
    let (status, _) = app.get(&format!("/users/{alice}/balance"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Admins may act on anyone; unknown members are 404.
    assert_eq!(app.charge(bob, ADMIN_TOKEN, 700).await.1["balance"], 700);
    let (_, body) = app
        .get(&format!("/users/{bob}/balance"), Some(&bob_token))
        .await;
    assert_eq!(body["balance"], 700);
    for (status, err) in [
        app.get("/users/424242/balance", Some(ADMIN_TOKEN)).await,
        app.charge(424242, ADMIN_TOKEN, 1_000).await,
        app.get("/users/424242/balance/transactions", Some(ADMIN_TOKEN))
            .await,
    ] {
        assert_eq!(
            (status, code(&err)),
            (StatusCode::NOT_FOUND, "USER_NOT_FOUND")
        );
    }
}

async fn ledger_pages_newest_first(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    for amount in 1..=5 {
        app.charge(id, &token, amount).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/users/{id}/balance/transactions?limit=2&cursor={c}"),
            None => format!("/users/{id}/balance/transactions?limit=2"),
        };
        let (status, page) = app.get(&path, Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["amount"].as_i64().unwrap()),
        );
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, vec![5, 4, 3, 2, 1]);
    for bad in ["limit=0", "limit=101", "limit=x", "cursor=abc"] {
        let (status, err) = app
            .get(
                &format!("/users/{id}/balance/transactions?{bad}"),
                Some(&token),
            )
            .await;
        assert_eq!(
            (status, code(&err), err["details"]["field"].as_str()),
            (
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                bad.split('=').next()
            ),
            "{bad} -> {err}"
        );
    }
}

async fn idempotent_charge_replays_the_first_answer(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    let (bob, bob_token) = app.member("bob").await;
    let path = format!("/users/{id}/balance/charge");
    let first = app
        .post_idem(&path, Some(&token), json!({ "amount": 1_000 }), "charge-1")
        .await;
    assert_eq!(first.0, StatusCode::OK);
    let response = app
        .client
        .post(app.url(&path))
        .bearer_auth(&token)
        .header("idempotency-key", "charge-1")
        .json(&json!({ "amount": 1_000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap(), first.1);
    let (_, body) = app.get(&format!("/users/{id}/balance"), Some(&token)).await;
    assert_eq!(body["balance"], 1_000, "charged once");

    // Keys are scoped per caller: bob may use the same key.
    let (status, body) = app
        .post_idem(
            &format!("/users/{bob}/balance/charge"),
            Some(&bob_token),
            json!({ "amount": 1_000 }),
            "charge-1",
        )
        .await;
    assert_eq!(
        (status, body["balance"].as_i64()),
        (StatusCode::OK, Some(1_000))
    );

    // A rejection is the key's answer too, and it changed nothing.
    let over = app
        .post_idem(&path, Some(&token), json!({ "amount": 1_000_000 }), "big")
        .await;
    assert_eq!(over.0, StatusCode::OK);
    for _ in 0..9 {
        app.charge(id, &token, 1_000_000).await;
    }
    let rejected = app
        .post_idem(&path, Some(&token), json!({ "amount": 999_999 }), "late")
        .await;
    assert_eq!(
        (rejected.0, code(&rejected.1)),
        (StatusCode::BAD_REQUEST, "BALANCE_LIMIT_EXCEEDED")
    );
    // Make room under the maximum (pay an order), so the same charge would now succeed if it
    // ran again: the repeat must replay the rejection instead.
    let before = app.balance_of(id).await;
    let product = app.product("Lamp", 10_000, 1).await;
    let (status, order) = app.order(&token, &[(product, 1)], json!({})).await;
    assert_eq!(
        (status, order["status"].as_str()),
        (StatusCode::CREATED, Some("PAID")),
        "{order}"
    );
    let after_payment = app.balance_of(id).await;
    assert_eq!(after_payment, before - 10_000);
    assert!(after_payment + 999_999 <= app.settings.max_balance);
    let ledger_rows = || async {
        let mut conn = app.db.read().await.unwrap();
        let rows: i64 = shopd::sql_scalar!(
            &mut conn,
            "SELECT COUNT(*) FROM balance_ledger WHERE user_id = $1",
            id
        )
        .unwrap();
        rows
    };
    let rows_before = ledger_rows().await;
    let response = app
        .client
        .post(app.url(&path))
        .bearer_auth(&token)
        .header("idempotency-key", "late")
        .json(&json!({ "amount": 999_999 }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true"),
        "the repeat is a replay"
    );
    assert_eq!(response.status(), rejected.0);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        rejected.1
    );
    assert_eq!(app.balance_of(id).await, after_payment, "nothing charged");
    assert_eq!(ledger_rows().await, rows_before, "nothing ran twice");

    // Validation of the header itself.
    let (status, err) = app
        .post_idem(
            &path,
            Some(&token),
            json!({ "amount": 1 }),
            &"k".repeat(256),
        )
        .await;
    assert_eq!(
        (status, err["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Idempotency-Key"))
    );
    assert_invariants(&app).await;
}

async fn idempotency_key_reuse_and_in_progress(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    let path = format!("/users/{id}/balance/charge");
    app.post_idem(&path, Some(&token), json!({ "amount": 1_000 }), "k1")
        .await;
    let (status, err) = app
        .post_idem(&path, Some(&token), json!({ "amount": 2_000 }), "k1")
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
    );

    // A request still running under a key (simulated by its claim row) blocks repeats...
    let scope = format!("user:{id}");
    let body = json!({ "amount": 500 });
    let fingerprint = shopd::extract::fingerprint(&format!("POST {path}"), &body);
    let now = shopd::store::now();
    let mut tx = app.db.begin().await.unwrap();
    shopd::store::idempotency::insert_in_progress(
        &mut tx,
        &scope,
        "running",
        &fingerprint,
        now + chrono::Duration::minutes(1),
        now,
    )
    .await
    .unwrap();
    // ...and a claim whose lease ran out (its holder died) is taken over.
    shopd::store::idempotency::insert_in_progress(
        &mut tx,
        &scope,
        "abandoned",
        &fingerprint,
        now - chrono::Duration::seconds(1),
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (status, err) = app
        .post_idem(&path, Some(&token), body.clone(), "running")
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "IDEMPOTENCY_IN_PROGRESS")
    );
    let (status, ok) = app
        .post_idem(&path, Some(&token), body.clone(), "abandoned")
        .await;
    assert_eq!(
        (status, ok["balance"].as_i64()),
        (StatusCode::OK, Some(1_500))
    );
    assert_invariants(&app).await;
}

async fn rows(app: &TestApp, sql: &'static str) -> i64 {
    let mut conn = app.db.read().await.unwrap();
    let n: i64 = shopd::sql_scalar!(&mut conn, sql).unwrap();
    n
}

/// (who, key, first path and body, then the same key on another path or body)
type KeyReuse<'a> = (Option<&'a str>, &'a str, String, Value, String, Value);

/// Every endpoint that takes `Idempotency-Key` answers `422 IDEMPOTENCY_KEY_REUSED` when the
/// caller reuses a key for a different request (another body or another path), and does nothing.
async fn every_keyed_endpoint_refuses_a_reused_key(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = app.member("kim").await;
    assert_eq!(app.charge(id, &token, 100_000).await.0, StatusCode::OK);
    let product = app.product("Mug", 1_000, 100).await;
    let ends = chrono::Utc::now() + chrono::Duration::days(1);
    let campaign = |name: &str| {
        json!({
            "name": name, "discount": { "type": "FIXED", "value": 100 }, "minOrderAmount": 0,
            "totalQuantity": 10, "issueEndsAt": ends, "validDays": 7,
        })
    };
    let c1 = app
        .campaign(json!({ "type": "FIXED", "value": 100 }), 0, 10)
        .await;
    let c2 = app
        .campaign(json!({ "type": "FIXED", "value": 100 }), 0, 10)
        .await;
    let mut unpaid = Vec::new();
    for _ in 0..4 {
        let (status, order) = app
            .order(&token, &[(product, 1)], json!({ "pay": false }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        unpaid.push(order["id"].as_i64().unwrap());
    }
    let charge = format!("/users/{id}/balance/charge");
    let stock = format!("/admin/products/{product}/stock");
    let item = json!({ "items": [{ "productId": product, "quantity": 1 }] });
    let items2 = json!({ "items": [{ "productId": product, "quantity": 2 }] });
    let member = Some(token.as_str());
    let admin = Some(ADMIN_TOKEN);
    // (who, key, first path and body, then the same key on another path or body)
    let cases: Vec<KeyReuse> = vec![
        (
            member,
            "charge",
            charge.clone(),
            json!({ "amount": 1 }),
            charge.clone(),
            json!({ "amount": 2 }),
        ),
        (
            admin,
            "product",
            "/admin/products".into(),
            json!({ "name": "A", "price": 1, "stock": 1 }),
            "/admin/products".into(),
            json!({ "name": "B", "price": 1, "stock": 1 }),
        ),
        (
            admin,
            "stock",
            stock.clone(),
            json!({ "delta": 1 }),
            stock.clone(),
            json!({ "delta": 2 }),
        ),
        (
            admin,
            "campaign",
            "/admin/coupons".into(),
            campaign("one"),
            "/admin/coupons".into(),
            campaign("two"),
        ),
        (
            member,
            "issue",
            format!("/coupons/{c1}/issue"),
            Value::Null,
            format!("/coupons/{c2}/issue"),
            Value::Null,
        ),
        (
            member,
            "order",
            "/orders".into(),
            item,
            "/orders".into(),
            items2,
        ),
        (
            member,
            "pay",
            format!("/orders/{}/pay", unpaid[0]),
            Value::Null,
            format!("/orders/{}/pay", unpaid[1]),
            Value::Null,
        ),
        (
            member,
            "cancel",
            format!("/orders/{}/cancel", unpaid[2]),
            Value::Null,
            format!("/orders/{}/cancel", unpaid[3]),
            Value::Null,
        ),
    ];
    for (who, key, first_path, first_body, second_path, second_body) in cases {
        let body = |v: &Value| if v.is_null() { None } else { Some(v.clone()) };
        let (status, first) = app
            .request(
                Method::POST,
                &first_path,
                who,
                body(&first_body).as_ref(),
                Some(key),
            )
            .await;
        assert!(
            status.is_success(),
            "{key}: {first_path} -> {status} {first}"
        );
        let before = snapshot(&app).await;
        let (status, err) = app
            .request(
                Method::POST,
                &second_path,
                who,
                body(&second_body).as_ref(),
                Some(key),
            )
            .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"),
            "{key}: {second_path} {second_body} -> {err}"
        );
        assert_eq!(
            snapshot(&app).await,
            before,
            "{key}: the reused key did nothing"
        );
    }
    // The second pay and cancel touched nothing: those orders are still PENDING.
    for order in [unpaid[1], unpaid[3]] {
        let (_, o) = app.get(&format!("/orders/{order}"), member).await;
        assert_eq!(o["status"], "PENDING", "{o}");
    }
    assert_invariants(&app).await;
}

/// What a keyed request could change: balances, products, stock, campaigns, claims, orders.
async fn snapshot(app: &TestApp) -> Vec<i64> {
    vec![
        rows(app, "SELECT COUNT(*) FROM balance_ledger").await,
        rows(app, "SELECT COUNT(*) FROM products").await,
        rows(
            app,
            "SELECT CAST(COALESCE(SUM(stock), 0) AS BIGINT) FROM products",
        )
        .await,
        rows(app, "SELECT COUNT(*) FROM coupons").await,
        rows(app, "SELECT COUNT(*) FROM user_coupons").await,
        rows(app, "SELECT COUNT(*) FROM orders").await,
        rows(app, "SELECT COUNT(*) FROM orders WHERE status = 'PENDING'").await,
        rows(app, "SELECT COUNT(*) FROM payments").await,
    ]
}

//! Refunds (SPEC §14), CONFIRMED (§6) and the order events (§10), on both backends.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shopd::config::RelayMode;
use shopd::db::{Locks, Tx};
use shopd::error::AppError;
use shopd::mock_platform::MockConfig;

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, code, mock_platform};
use crate::invariants::assert_invariants;
use crate::on_both_backends;

on_both_backends!(
    a_full_refund_gives_back_the_total_puts_stock_back_and_writes_the_event,
    partial_refunds_spread_the_discount_and_never_pass_the_total,
    refund_errors_change_nothing,
    only_paid_orders_are_refundable,
    a_refund_is_credited_even_above_the_maximum_balance,
    orders_are_confirmed_when_the_platform_has_them,
    a_refunded_order_is_never_confirmed,
    cancel_and_expiry_write_their_events,
    member_order_lists_show_refunds_and_filter_new_statuses,
    twenty_concurrent_one_unit_refunds_of_ten_units,
    refunds_racing_with_confirmation_stay_consistent,
);

fn refunds_path(order_id: i64) -> String {
    format!("/admin/orders/{order_id}/refunds")
}

/// A member with `balance`; returns (id, token).
async fn buyer(app: &TestApp, balance: i64) -> (i64, String) {
    let (id, token) = app.member("buyer").await;
    let (status, body) = app.charge(id, &token, balance).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (id, token)
}

/// Place and pay an order; returns it.
async fn paid_order(app: &TestApp, token: &str, items: &[(i64, i64)], extra: Value) -> Value {
    let (status, order) = app.order(token, items, extra).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "PAID");
    order
}

async fn order_of(app: &TestApp, order_id: i64) -> Value {
    let (status, order) = app
        .get(&format!("/orders/{order_id}"), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK, "{order}");
    order
}

async fn refund(app: &TestApp, order_id: i64, body: Value) -> (StatusCode, Value) {
    app.post(&refunds_path(order_id), Some(ADMIN_TOKEN), body)
        .await
}

/// Every outbox event of `kind` for `order_id`, oldest first.
async fn events_of(app: &TestApp, kind: &str, order_id: i64) -> Vec<Value> {
    let (status, page) = app.get("/admin/outbox?limit=100", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind && e["orderId"] == order_id)
        .cloned()
        .collect()
}

/// The newest ledger entry of a member.
async fn last_ledger_entry(app: &TestApp, user_id: i64) -> Value {
    let (_, page) = app
        .get(
            &format!("/users/{user_id}/balance/transactions?limit=1"),
            Some(ADMIN_TOKEN),
        )
        .await;
    page["items"][0].clone()
}

async fn a_full_refund_gives_back_the_total_puts_stock_back_and_writes_the_event(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let a = app.product("Tumbler", 10_000, 10).await;
    let b = app.product("Lid", 4_500, 10).await;
    let coupon = app
        .campaign(json!({ "type": "FIXED", "value": 5_000 }), 0, 10)
        .await;
    let (user, token) = buyer(&app, 100_000).await;
    app.issue(coupon, &token).await;
    let order = paid_order(
        &app,
        &token,
        &[(a, 2), (b, 1)],
        json!({ "couponId": coupon }),
    )
    .await;
    let id = order["id"].as_i64().unwrap();
    assert_eq!(
        (&order["subtotal"], &order["discount"], &order["total"]),
        (&json!(24_500), &json!(5_000), &json!(19_500))
    );
    assert_eq!(order["refundedAmount"], 0);
    assert_eq!(order["refunds"], json!([]));
    assert_eq!(app.balance_of(user).await, 80_500);
    assert_eq!((app.stock_of(a).await, app.stock_of(b).await), (8, 9));

    // No lines: everything. With a key, so the replay below answers the same.
    let body = json!({ "reason": "arrived broken" });
    let (status, refunded) = app
        .post_idem(
            &refunds_path(id),
            Some(ADMIN_TOKEN),
            body.clone(),
            "refund-1",
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{refunded}");
    assert_eq!(refunded["orderId"], id);
    assert_eq!(refunded["amount"], 19_500, "exactly the total");
    assert_eq!(refunded["restock"], true, "restock defaults to true");
    assert_eq!(refunded["reason"], "arrived broken");
    assert!(refunded["createdAt"].is_string() && refunded["id"].as_i64().unwrap() > 0);
    // 10,000 units carry 10000/24500 of 5,000 = 2,040 each (rounded down), the 4,500 unit 918,
    // and the 2 won left over go on the last units: the lid (919) and the second tumbler.
    assert_eq!(
        refunded["lines"],
        json!([
            { "productId": a, "quantity": 2, "amount": 7_960 + 7_959 },
            { "productId": b, "quantity": 1, "amount": 3_581 },
        ])
    );

    // Balance, ledger, stock, status, history, refunds, the coupon, the event.
    assert_eq!(app.balance_of(user).await, 100_000);
    let entry = last_ledger_entry(&app, user).await;
    assert_eq!(
        (&entry["kind"], &entry["amount"], &entry["orderId"]),
        (&json!("REFUND"), &json!(19_500), &json!(id))
    );
    assert_eq!((app.stock_of(a).await, app.stock_of(b).await), (10, 10));
    let after = order_of(&app, id).await;
    assert_eq!(after["status"], "REFUNDED");
    assert_eq!(after["refundedAmount"], 19_500);
    assert_eq!(after["refunds"], json!([refunded]));
    assert_eq!(after["items"][0]["refundedQuantity"], 2);
    assert_eq!(after["items"][1]["refundedQuantity"], 1);
    let last = after["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["from"], &last["to"], &last["reason"]),
        (&json!("PAID"), &json!("REFUNDED"), &json!("REFUND"))
    );
    let (_, used) = app
        .get(&format!("/users/{user}/coupons?status=USED"), Some(&token))
        .await;
    assert_eq!(
        used["items"][0]["orderId"], id,
        "a used coupon is not given back: {used}"
    );
    let events = events_of(&app, "ORDER_REFUNDED", id).await;
    assert_eq!(events.len(), 1);
    let payload = &events[0]["payload"];
    assert_eq!(payload["type"], "ORDER_REFUNDED");
    assert_eq!(payload["eventId"], events[0]["eventId"]);
    assert_eq!(payload["order"]["id"], id);
    assert_eq!(payload["order"]["status"], "REFUNDED");
    assert_eq!(payload["order"]["total"], 19_500);
    assert_eq!(payload["order"]["couponId"], coupon);
    assert!(payload["order"]["paidAt"].is_string());
    assert_eq!(payload["order"]["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        payload["refund"],
        json!({
            "id": refunded["id"], "amount": 19_500, "lines": refunded["lines"],
            "restock": true, "reason": "arrived broken", "createdAt": refunded["createdAt"],
        })
    );

    // The same key and body: the first answer, replayed, and nothing done twice.
    let response = app
        .client
        .post(app.url(&refunds_path(id)))
        .bearer_auth(ADMIN_TOKEN)
        .header("idempotency-key", "refund-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response.headers().get("idempotent-replayed").unwrap(),
        "true"
    );
    assert_eq!(response.json::<Value>().await.unwrap(), refunded);
    // The same key with another body is refused.
    let (status, err) = app
        .post_idem(
            &refunds_path(id),
            Some(ADMIN_TOKEN),
            json!({ "reason": "other" }),
            "refund-1",
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
    );
    // A new refund of a REFUNDED order is refused.
    let (status, err) = refund(&app, id, json!({ "reason": "again" })).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "ORDER_NOT_REFUNDABLE")
    );
    assert_eq!(err["details"]["status"], "REFUNDED");
    assert_eq!(app.balance_of(user).await, 100_000);
    assert_eq!(events_of(&app, "ORDER_REFUNDED", id).await.len(), 1);
    assert_invariants(&app).await;
}

async fn partial_refunds_spread_the_discount_and_never_pass_the_total(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let p = app.product("Cup", 1_000, 10).await;
    let q = app.product("Saucer", 500, 10).await;
    let coupon = app
        .campaign(json!({ "type": "FIXED", "value": 1_000 }), 0, 10)
        .await;
    let (user, token) = buyer(&app, 100_000).await;
    app.issue(coupon, &token).await;
    // 3 × 1,000 + 2 × 500 = 4,000, less 1,000: total 3,000. Shares: 250 per cup, 125 per saucer.
    let order = paid_order(
        &app,
        &token,
        &[(p, 3), (q, 2)],
        json!({ "couponId": coupon }),
    )
    .await;
    let id = order["id"].as_i64().unwrap();
    let balance = app.balance_of(user).await;

    // One cup, not put back in stock.
    let (status, first) = refund(
        &app,
        id,
        json!({ "lines": [{ "productId": p, "quantity": 1 }], "restock": false, "reason": "scratched" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["amount"], 750);
    assert_eq!(first["restock"], false);
    assert_eq!(app.stock_of(p).await, 7, "not restocked");
    let after = order_of(&app, id).await;
    assert_eq!(after["status"], "PARTIALLY_REFUNDED");
    assert_eq!(after["refundedAmount"], 750);

    // More units than remain: refused, whole.
    let (status, err) = refund(
        &app,
        id,
        json!({ "lines": [{ "productId": q, "quantity": 1 }, { "productId": p, "quantity": 3 }], "reason": "x" }),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "REFUND_EXCEEDS_ORDER"),
        "{err}"
    );
    assert_eq!(
        err["details"]["lines"],
        json!([{ "productId": p, "requested": 3, "remaining": 2 }])
    );
    assert_eq!(
        app.balance_of(user).await,
        balance + 750,
        "nothing refunded"
    );

    // Repeated products are merged: 1 + 1 cups and a saucer.
    let (status, second) = refund(
        &app,
        id,
        json!({ "lines": [{ "productId": p, "quantity": 1 }, { "productId": q, "quantity": 1 },
                          { "productId": p, "quantity": 1 }], "reason": "scratched too" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(
        second["lines"],
        json!([
            { "productId": p, "quantity": 2, "amount": 1_500 },
            { "productId": q, "quantity": 1, "amount": 375 },
        ])
    );
    assert_eq!(second["amount"], 1_875);
    assert_eq!(app.stock_of(p).await, 9, "restocked by default");
    let (status, err) = refund(
        &app,
        id,
        json!({ "lines": [{ "productId": p, "quantity": 1 }], "reason": "x" }),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "REFUND_EXCEEDS_ORDER")
    );
    assert_eq!(err["details"]["lines"][0]["remaining"], 0);

    // The rest: what is left of the total, exactly.
    let (status, rest) = refund(&app, id, json!({ "reason": "the rest" })).await;
    assert_eq!(status, StatusCode::CREATED, "{rest}");
    assert_eq!(
        rest["lines"],
        json!([{ "productId": q, "quantity": 1, "amount": 375 }])
    );
    let after = order_of(&app, id).await;
    assert_eq!(after["status"], "REFUNDED");
    assert_eq!(after["refundedAmount"], 3_000);
    assert_eq!(after["refunds"].as_array().unwrap().len(), 3);
    assert_eq!(app.balance_of(user).await, balance + 3_000);
    let statuses: Vec<(Value, Value)> = after["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["from"].clone(), h["to"].clone()))
        .collect();
    assert_eq!(
        statuses[statuses.len() - 3..],
        [
            (json!("PAID"), json!("PARTIALLY_REFUNDED")),
            (json!("PARTIALLY_REFUNDED"), json!("PARTIALLY_REFUNDED")),
            (json!("PARTIALLY_REFUNDED"), json!("REFUNDED")),
        ]
    );
    assert_eq!(events_of(&app, "ORDER_REFUNDED", id).await.len(), 3);
    assert_invariants(&app).await;
}

async fn refund_errors_change_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let p = app.product("Cup", 1_000, 10).await;
    let other = app.product("Other", 1_000, 10).await;
    let (user, token) = buyer(&app, 100_000).await;
    let order = paid_order(&app, &token, &[(p, 2)], json!({})).await;
    let id = order["id"].as_i64().unwrap();
    let path = refunds_path(id);
    let ok = json!({ "reason": "r" });

    // Who may refund: admins only.
    let (status, err) = app.post(&path, Some(&token), ok.clone()).await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (status, err) = app.post(&path, None, ok.clone()).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let (status, err) = app.post(&path, Some("not-a-token"), ok.clone()).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );

    // A product not in the order names its field.
    let (status, err) = refund(
        &app,
        id,
        json!({ "lines": [{ "productId": p, "quantity": 1 }, { "productId": other, "quantity": 1 }], "reason": "r" }),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
    );
    assert_eq!(err["details"]["field"], "lines[1].productId", "{err}");

    // Malformed requests.
    for (body, field) in [
        (json!({}), "reason"),
        (json!({ "reason": "" }), "reason"),
        (json!({ "reason": "   " }), "reason"),
        (json!({ "reason": "a\u{0}b" }), "reason"),
        (json!({ "reason": "x".repeat(501) }), "reason"),
        (json!({ "reason": 5 }), "reason"),
        (json!({ "reason": "r", "lines": [] }), "lines"),
        (
            json!({ "reason": "r", "lines": [{ "productId": p, "quantity": 0 }] }),
            "lines[0].quantity",
        ),
        (
            json!({ "reason": "r", "lines": [{ "productId": p, "quantity": 1001 }] }),
            "lines[0].quantity",
        ),
        (
            json!({ "reason": "r", "lines": [{ "productId": 0, "quantity": 1 }] }),
            "lines[0].productId",
        ),
        (
            json!({ "reason": "r", "lines": [{ "quantity": 1 }] }),
            "lines[0].productId",
        ),
        (json!({ "reason": "r", "lines": "all" }), "lines"),
        (json!({ "reason": "r", "restock": "yes" }), "restock"),
    ] {
        let (status, err) = refund(&app, id, body.clone()).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
            "{body}: {err}"
        );
        assert_eq!(err["details"]["field"], field, "{body}: {err}");
    }
    let (status, err) = app
        .post("/admin/orders/abc/refunds", Some(ADMIN_TOKEN), ok.clone())
        .await;
    assert_eq!(
        (status, &err["details"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("orderId"))
    );
    let (status, err) = refund(&app, 999_999, ok.clone()).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND")
    );

    // Nothing changed.
    assert_eq!(app.balance_of(user).await, 98_000);
    assert_eq!(app.stock_of(p).await, 8);
    let after = order_of(&app, id).await;
    assert_eq!(
        (&after["status"], &after["refundedAmount"]),
        (&json!("PAID"), &json!(0))
    );
    assert!(events_of(&app, "ORDER_REFUNDED", id).await.is_empty());
    assert_invariants(&app).await;
}

async fn only_paid_orders_are_refundable(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let p = app.product("Cup", 1_000, 10).await;
    let (user, token) = buyer(&app, 100_000).await;
    let place = async |pay: bool| {
        let (status, order) = app.order(&token, &[(p, 1)], json!({ "pay": pay })).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        order["id"].as_i64().unwrap()
    };
    let pending_id = place(false).await;
    let cancelled_id = place(false).await;
    let (status, _) = app
        .post(
            &format!("/orders/{cancelled_id}/cancel"),
            Some(&token),
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let expired_id = place(false).await;
    let mut tx = app.db.begin().await.unwrap();
    shopd::sql_execute!(
        &mut tx,
        "UPDATE orders SET expires_at = $1 WHERE id = $2",
        shopd::store::now() - chrono::Duration::seconds(1),
        expired_id
    )
    .unwrap();
    tx.commit().await.unwrap();
    let expired = shopd::workers::expire_overdue_orders(app.state())
        .await
        .unwrap();
    assert_eq!(expired, 1);
    let balance = app.balance_of(user).await;
    for (id, status) in [
        (pending_id, "PENDING"),
        (cancelled_id, "CANCELLED"),
        (expired_id, "EXPIRED"),
    ] {
        let (code_status, err) = refund(&app, id, json!({ "reason": "r" })).await;
        assert_eq!(
            (code_status, code(&err)),
            (StatusCode::CONFLICT, "ORDER_NOT_REFUNDABLE"),
            "{status}: {err}"
        );
        assert_eq!(err["details"]["status"], status);
        assert_eq!(err["details"]["orderId"], id);
        // Even by line: the status is checked first.
        let (code_status, err) = refund(
            &app,
            id,
            json!({ "lines": [{ "productId": p, "quantity": 1 }], "reason": "r" }),
        )
        .await;
        assert_eq!(
            (code_status, code(&err)),
            (StatusCode::CONFLICT, "ORDER_NOT_REFUNDABLE")
        );
    }
    assert_eq!(app.balance_of(user).await, balance);
    assert_invariants(&app).await;
}

async fn a_refund_is_credited_even_above_the_maximum_balance(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| s.max_balance = 100_000).await else {
        return;
    };
    let p = app.product("Lamp", 60_000, 10).await;
    let (user, token) = buyer(&app, 100_000).await;
    let order = paid_order(&app, &token, &[(p, 1)], json!({})).await;
    let (status, _) = app.charge(user, &token, 60_000).await;
    assert_eq!(status, StatusCode::OK, "back at the maximum");
    let (status, refunded) = refund(
        &app,
        order["id"].as_i64().unwrap(),
        json!({ "reason": "r" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{refunded}");
    assert_eq!(
        app.balance_of(user).await,
        160_000,
        "credited in full, past the maximum"
    );
    let (status, err) = app.charge(user, &token, 1).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "BALANCE_LIMIT_EXCEEDED")
    );
    assert_invariants(&app).await;
}

/// The test delivers with passes of the relay (no background relay): each pass has recorded
/// its outcomes when it returns.
async fn orders_are_confirmed_when_the_platform_has_them(backend: Backend) {
    let (platform, url) = mock_platform(MockConfig::default()).await;
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.data_platform_url = Some(url);
        s.relay = RelayMode::Off;
    })
    .await
    else {
        return;
    };
    let relay = app.relay();
    let p = app.product("Cup", 1_000, 10).await;
    let (user, token) = buyer(&app, 100_000).await;
    let order = paid_order(&app, &token, &[(p, 2)], json!({})).await;
    let id = order["id"].as_i64().unwrap();
    assert_eq!(
        order_of(&app, id).await["status"],
        "PAID",
        "not confirmed before the platform has it"
    );
    let report = relay.deliver_pending().await.expect("relay pass");
    assert_eq!((report.claimed, report.delivered), (1, 1), "{report:?}");
    let confirmed = order_of(&app, id).await;
    assert_eq!(confirmed["status"], "CONFIRMED", "confirmed once delivered");
    assert!(confirmed["confirmedAt"].is_string(), "{confirmed}");
    assert!(order["confirmedAt"].is_null(), "not before");
    let last = confirmed["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (&last["from"], &last["to"], &last["reason"]),
        (
            &json!("PAID"),
            &json!("CONFIRMED"),
            &json!("PLATFORM_ACKNOWLEDGED")
        )
    );
    let events = events_of(&app, "ORDER_PAID", id).await;
    assert_eq!(events[0]["status"], "DELIVERED");
    assert_eq!(
        events[0]["payload"]["order"]["status"], "PAID",
        "the event is what was paid"
    );

    // Status filters know CONFIRMED.
    let (_, mine) = app
        .get(
            &format!("/users/{user}/orders?status=CONFIRMED"),
            Some(&token),
        )
        .await;
    assert_eq!(mine["items"][0]["id"], id, "{mine}");
    let (_, paid) = app
        .get(&format!("/users/{user}/orders?status=PAID"), Some(&token))
        .await;
    assert_eq!(paid["items"], json!([]));
    let (status, listed) = app
        .get("/admin/orders?status=CONFIRMED", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["items"][0]["id"], id);
    assert_eq!(listed["items"][0]["confirmedAt"], confirmed["confirmedAt"]);

    // A CONFIRMED order is refundable; its ORDER_REFUNDED event reaches the platform too.
    let (status, refunded) = refund(
        &app,
        id,
        json!({ "lines": [{ "productId": p, "quantity": 1 }], "reason": "r" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{refunded}");
    let after = order_of(&app, id).await;
    assert_eq!(after["status"], "PARTIALLY_REFUNDED");
    assert_eq!(after["confirmedAt"], confirmed["confirmedAt"], "kept");
    let (_, listed) = app
        .get("/admin/orders?status=PARTIALLY_REFUNDED", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(listed["items"][0]["refundedAmount"], 1_000);
    let report = relay.deliver_pending().await.expect("relay pass");
    assert_eq!((report.claimed, report.delivered), (1, 1), "{report:?}");
    assert!(
        platform
            .events()
            .iter()
            .any(|e| e["type"] == "ORDER_REFUNDED" && e["refund"]["id"] == refunded["id"]),
        "ORDER_REFUNDED delivered"
    );
    // Delivered refund events confirm nothing: the order stays PARTIALLY_REFUNDED.
    assert_eq!(
        events_of(&app, "ORDER_REFUNDED", id).await[0]["status"],
        "DELIVERED"
    );
    assert_eq!(order_of(&app, id).await["status"], "PARTIALLY_REFUNDED");
    assert_invariants(&app).await;
}

/// Deliver (mark DELIVERED) the order's ORDER_PAID event the way the relay does (declaring the
/// order it confirms).
async fn mark_paid_event_delivered(app: &TestApp, order_id: i64) {
    let event_id = events_of(app, "ORDER_PAID", order_id).await[0]["eventId"]
        .as_str()
        .unwrap()
        .to_string();
    let locks = Locks {
        orders: vec![order_id],
        ..Locks::none()
    };
    app.db
        .write(locks, async move |tx: &mut Tx| {
            shopd::store::outbox::mark_delivered(tx, &event_id, shopd::store::now()).await
        })
        .await
        .unwrap();
}

async fn a_refunded_order_is_never_confirmed(backend: Backend) {
    // No platform configured: events stay PENDING until this test delivers them.
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let p = app.product("Cup", 1_000, 10).await;
    let (_, token) = buyer(&app, 100_000).await;
    let order = paid_order(&app, &token, &[(p, 2)], json!({})).await;
    let id = order["id"].as_i64().unwrap();
    let (status, _) = refund(&app, id, json!({ "reason": "r" })).await;
    assert_eq!(status, StatusCode::CREATED);
    mark_paid_event_delivered(&app, id).await;
    let after = order_of(&app, id).await;
    assert_eq!(after["status"], "REFUNDED", "stays refunded");
    assert!(after["confirmedAt"].is_null());
    assert_eq!(
        events_of(&app, "ORDER_PAID", id).await[0]["status"],
        "DELIVERED"
    );

    // PAID is confirmed by the delivery, once; a second delivery changes nothing.
    let order = paid_order(&app, &token, &[(p, 1)], json!({})).await;
    let id = order["id"].as_i64().unwrap();
    mark_paid_event_delivered(&app, id).await;
    let confirmed = order_of(&app, id).await;
    assert_eq!(confirmed["status"], "CONFIRMED");
    let history = confirmed["history"].as_array().unwrap().len();
    let mut tx = app.db.begin().await.unwrap();
    let again = shopd::store::orders::confirm_order(&mut tx, id, shopd::store::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(!again, "only from PAID");
    let after = order_of(&app, id).await;
    assert_eq!(after["history"].as_array().unwrap().len(), history);
    assert_eq!(after["confirmedAt"], confirmed["confirmedAt"]);
    assert_invariants(&app).await;
}

async fn cancel_and_expiry_write_their_events(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let p = app.product("Cup", 1_000, 10).await;
    let (user, token) = buyer(&app, 100_000).await;
    let place = async || {
        let (status, order) = app.order(&token, &[(p, 2)], json!({ "pay": false })).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        order["id"].as_i64().unwrap()
    };
    let cancelled = place().await;
    let swept = place().await;
    let expired_at_payment = place().await;
    let paid = paid_order(&app, &token, &[(p, 1)], json!({})).await["id"]
        .as_i64()
        .unwrap();
    assert!(
        events_of(&app, "ORDER_CANCELLED", cancelled)
            .await
            .is_empty()
    );

    let (status, _) = app
        .post(
            &format!("/orders/{cancelled}/cancel"),
            Some(&token),
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = events_of(&app, "ORDER_CANCELLED", cancelled).await;
    assert_eq!(events.len(), 1);
    let payload = &events[0]["payload"];
    assert_eq!(payload["type"], "ORDER_CANCELLED");
    assert_eq!(payload["order"]["status"], "CANCELLED");
    assert_eq!(payload["order"]["userId"], user);
    assert!(payload["order"]["paidAt"].is_null());
    assert_eq!(
        payload["order"]["items"],
        json!([{ "productId": p, "name": "Cup", "unitPrice": 1_000, "quantity": 2, "lineTotal": 2_000 }])
    );
    assert!(payload["refund"].is_null());

    // Expired by the sweeper, and at payment time.
    let mut tx = app.db.begin().await.unwrap();
    shopd::sql_execute!(
        &mut tx,
        "UPDATE orders SET expires_at = $1 WHERE id IN ($2, $3)",
        shopd::store::now() - chrono::Duration::seconds(1),
        swept,
        expired_at_payment
    )
    .unwrap();
    tx.commit().await.unwrap();
    let (status, err) = app
        .post(
            &format!("/orders/{expired_at_payment}/pay"),
            Some(&token),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "ORDER_NOT_PAYABLE")
    );
    assert_eq!(
        shopd::workers::expire_overdue_orders(app.state())
            .await
            .unwrap(),
        1
    );
    for id in [swept, expired_at_payment] {
        let events = events_of(&app, "ORDER_EXPIRED", id).await;
        assert_eq!(events.len(), 1, "order {id}");
        assert_eq!(events[0]["payload"]["order"]["status"], "EXPIRED");
        assert_eq!(events[0]["payload"]["type"], "ORDER_EXPIRED");
    }
    // A paid order neither: it was never released.
    assert!(events_of(&app, "ORDER_CANCELLED", paid).await.is_empty());
    assert!(events_of(&app, "ORDER_EXPIRED", paid).await.is_empty());
    assert_eq!(app.stock_of(p).await, 9);
    assert_invariants(&app).await;
}

async fn member_order_lists_show_refunds_and_filter_new_statuses(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let p = app.product("Cup", 1_000, 10).await;
    let (user, token) = buyer(&app, 100_000).await;
    let first = paid_order(&app, &token, &[(p, 2)], json!({})).await["id"]
        .as_i64()
        .unwrap();
    let second = paid_order(&app, &token, &[(p, 1)], json!({})).await["id"]
        .as_i64()
        .unwrap();
    let (_, partial) = refund(
        &app,
        first,
        json!({ "lines": [{ "productId": p, "quantity": 1 }], "reason": "r" }),
    )
    .await;
    let (_, full) = refund(&app, second, json!({ "reason": "r" })).await;
    let (_, all) = app
        .get(&format!("/users/{user}/orders"), Some(&token))
        .await;
    let items = all["items"].as_array().unwrap();
    assert_eq!(items[0]["id"], second);
    assert_eq!(items[0]["refunds"], json!([full]));
    assert_eq!(items[1]["refunds"], json!([partial]));
    // The member reads their own order's refunds too.
    let (status, own) = app.get(&format!("/orders/{first}"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(own["refunds"], json!([partial]));
    for (status, expected) in [("PARTIALLY_REFUNDED", first), ("REFUNDED", second)] {
        let (_, page) = app
            .get(
                &format!("/users/{user}/orders?status={status}"),
                Some(&token),
            )
            .await;
        assert_eq!(
            page["items"].as_array().unwrap().len(),
            1,
            "{status}: {page}"
        );
        assert_eq!(page["items"][0]["id"], expected);
        let (_, page) = app
            .get(&format!("/admin/orders?status={status}"), Some(ADMIN_TOKEN))
            .await;
        assert_eq!(page["items"][0]["id"], expected, "{status}: {page}");
    }
    let (status, err) = app
        .get(
            &format!("/users/{user}/orders?status=SHIPPED"),
            Some(&token),
        )
        .await;
    assert_eq!(
        (status, &err["details"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("status"))
    );
}

/// 20 concurrent one-unit refunds of an order of 10 units: exactly 10 succeed, and balance,
/// stock and the refunds add up exactly.
async fn twenty_concurrent_one_unit_refunds_of_ten_units(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let p = app.product("Cup", 1_000, 10).await;
    let coupon = app
        .campaign(json!({ "type": "FIXED", "value": 1_001 }), 0, 10)
        .await;
    let (user, token) = buyer(&app, 100_000).await;
    app.issue(coupon, &token).await;
    let order = paid_order(&app, &token, &[(p, 10)], json!({ "couponId": coupon })).await;
    let id = order["id"].as_i64().unwrap();
    assert_eq!(order["total"], 8_999);
    assert_eq!(app.stock_of(p).await, 0);
    let balance = app.balance_of(user).await;
    let body = json!({ "lines": [{ "productId": p, "quantity": 1 }], "reason": "one" });
    let results = join_all((0..20).map(|_| refund(&app, id, body.clone()))).await;
    let ok: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, b)| b)
        .collect();
    let refused = results
        .iter()
        .filter(|(s, b)| {
            *s == StatusCode::CONFLICT
                && matches!(code(b), "REFUND_EXCEEDS_ORDER" | "ORDER_NOT_REFUNDABLE")
        })
        .count();
    assert_eq!((ok.len(), refused), (10, 10), "{results:?}");
    let refunded: i64 = ok.iter().map(|b| b["amount"].as_i64().unwrap()).sum();
    assert_eq!(refunded, 8_999, "exactly the total, however the race went");
    assert_eq!(app.balance_of(user).await, balance + 8_999);
    assert_eq!(app.stock_of(p).await, 10);
    let after = order_of(&app, id).await;
    assert_eq!(after["status"], "REFUNDED");
    assert_eq!(after["refunds"].as_array().unwrap().len(), 10);
    assert_invariants(&app).await;
}

/// Refunds race with the relay confirming the same orders: whichever comes first, every order
/// ends REFUNDED, confirmed only if the confirmation came first, with a consistent history.
/// The test runs the relay's pass itself, at the same time as the refunds.
async fn refunds_racing_with_confirmation_stay_consistent(backend: Backend) {
    let (platform, url) = mock_platform(MockConfig {
        delay: Duration::from_millis(5),
        ..MockConfig::default()
    })
    .await;
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.data_platform_url = Some(url);
        s.relay = RelayMode::Off;
    })
    .await
    else {
        return;
    };
    let relay = app.relay();
    let p = app.product("Cup", 1_000, 1_000).await;
    let members = app.members_bulk(30).await;
    app.fund_bulk(&members, 100_000).await;
    let orders: Vec<i64> = join_all(members.iter().map(|(_, token)| async {
        let (status, order) = app.order(token, &[(p, 2)], json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        order["id"].as_i64().unwrap()
    }))
    .await;
    // Refund while the relay is delivering the ORDER_PAID events (and confirming), and
    // deliver some by hand at the same time, as a second relay would.
    let app = &app;
    let refunds = join_all(
        orders
            .iter()
            .map(|&id| async move { refund(app, id, json!({ "reason": "race" })).await }),
    );
    let deliveries = join_all(orders.iter().step_by(2).map(|&id| async move {
        let event_id = events_of(app, "ORDER_PAID", id).await[0]["eventId"]
            .as_str()
            .unwrap()
            .to_string();
        // As the relay's recorder does: the order a delivered ORDER_PAID confirms is declared,
        // so the committer locks it in the global order before the event row (undeclared, a
        // refund holding the order and this command holding the event could deadlock).
        let locks = Locks {
            orders: vec![id],
            ..Locks::none()
        };
        app.db
            .write(locks, async move |tx: &mut Tx| {
                shopd::store::outbox::mark_delivered(tx, &event_id, shopd::store::now()).await
            })
            .await
    }));
    let (refunds, deliveries, racing) =
        futures::join!(refunds, deliveries, relay.deliver_pending());
    for (status, body) in &refunds {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
    }
    for delivered in deliveries {
        delivered.map_err(|e: AppError| e.to_string()).unwrap();
    }
    let racing = racing.expect("relay pass");
    assert_eq!(racing.claimed, racing.delivered, "{racing:?}");
    // The ORDER_REFUNDED events committed after the racing pass claimed are due now: a second
    // pass delivers them.
    let rest = relay.deliver_pending().await.expect("relay pass");
    assert_eq!(rest.claimed, rest.delivered, "{rest:?}");
    // Every event is delivered: by the relay, or (ORDER_PAID events the hand delivery above
    // marked first) by hand, in which case the platform never gets them.
    let (_, pending) = app
        .get("/admin/outbox?status=PENDING", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(
        pending["items"],
        json!([]),
        "every event delivered: {:?}",
        platform.stats()
    );
    let (_, delivered) = app
        .get(
            "/admin/outbox?status=DELIVERED&limit=100",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(
        delivered["items"].as_array().unwrap().len(),
        orders.len() * 2,
        "an ORDER_PAID and an ORDER_REFUNDED event per order"
    );
    let refunds_received = platform
        .events()
        .iter()
        .filter(|e| e["type"] == "ORDER_REFUNDED")
        .count();
    assert_eq!(refunds_received, orders.len());
    for &id in &orders {
        let order = order_of(app, id).await;
        assert_eq!(order["status"], "REFUNDED", "{order}");
        let path: Vec<&str> = order["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["to"].as_str().unwrap())
            .collect();
        if order["confirmedAt"].is_string() {
            assert_eq!(
                path,
                ["PENDING", "PAID", "CONFIRMED", "REFUNDED"],
                "{order}"
            );
        } else {
            assert_eq!(path, ["PENDING", "PAID", "REFUNDED"], "{order}");
        }
    }
    assert_invariants(app).await;
}

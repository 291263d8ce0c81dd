//! Orders and payment: the seed scenarios of SPEC §6.

use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, code};
use crate::invariants::assert_invariants;
use crate::on_both_backends;

on_both_backends!(
    an_order_can_never_be_deleted,
    order_is_paid_at_order_time_price,
    products_not_on_sale_or_short_reserve_nothing,
    coupons_discount_orders,
    unusable_coupons_are_invalid,
    insufficient_balance_then_charge_and_pay_at_the_old_price,
    cart_shows_orderability_and_cart_orders_remove_only_their_lines,
    cancel_restores_stock_and_coupon_once,
    expired_orders_restore_stock_and_coupon,
    paying_after_the_reservation_expired_is_refused_without_the_sweeper,
    members_never_see_each_others_orders,
    order_requests_are_validated,
    orders_are_listed_with_history,
);

async fn member_with_balance(app: &TestApp, name: &str, balance: i64) -> (i64, String) {
    let (id, token) = app.member(name).await;
    if balance > 0 {
        assert_eq!(app.charge(id, &token, balance).await.0, StatusCode::OK);
    }
    (id, token)
}

async fn order_is_paid_at_order_time_price(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mug = app.product("Mug", 10_000, 5).await;
    let (id, token) = member_with_balance(&app, "kim", 50_000).await;
    let (status, order) = app.order(&token, &[(mug, 2)], json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "PAID");
    assert_eq!(
        (
            order["subtotal"].as_i64(),
            order["discount"].as_i64(),
            order["total"].as_i64()
        ),
        (Some(20_000), Some(0), Some(20_000))
    );
    assert_eq!(
        order["items"][0],
        json!({ "productId": mug, "name": "Mug", "unitPrice": 10_000, "quantity": 2, "lineTotal": 20_000,
                "refundedQuantity": 0 })
    );
    assert_eq!(order["payments"].as_array().unwrap().len(), 1);
    assert_eq!(order["payments"][0]["status"], "SUCCEEDED");
    assert!(order["paidAt"].is_string());
    let order_id = order["id"].as_i64().unwrap();
    assert_eq!(app.balance_of(id).await, 30_000);
    assert_eq!(app.stock_of(mug).await, 3);

    let (_, ledger) = app
        .get(&format!("/users/{id}/balance/transactions"), Some(&token))
        .await;
    assert_eq!(ledger["items"][0]["kind"], "PAYMENT");
    assert_eq!(
        (
            ledger["items"][0]["amount"].as_i64(),
            ledger["items"][0]["orderId"].as_i64()
        ),
        (Some(-20_000), Some(order_id))
    );

    // The outbox event of SPEC §10 was written with the payment.
    let mut conn = app.db.read().await.unwrap();
    let (payload, status): (String, String) = shopd::sql_one!((String, String); &mut conn,
        "SELECT payload, status FROM outbox_events WHERE aggregate_id = $1 AND event_type = 'ORDER_PAID'", order_id)
    .unwrap();
    let event: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(status, "PENDING");
    assert_eq!(event["type"], "ORDER_PAID");
    assert!(uuid::Uuid::parse_str(event["eventId"].as_str().unwrap()).is_ok());
    assert_eq!(event["order"]["id"], order_id);
    assert_eq!(event["order"]["userId"], id);
    assert_eq!(event["order"]["total"], 20_000);
    assert_eq!(event["order"]["items"][0]["lineTotal"], 20_000);
    assert!(event["order"]["paidAt"].is_string() && event["occurredAt"].is_string());

    // A later price change does not touch the order.
    let (status, changed) = app
        .patch(
            &format!("/admin/products/{mug}"),
            Some(ADMIN_TOKEN),
            json!({ "price": 99_000, "name": "Gold mug" }),
        )
        .await;
    assert_eq!(
        (status, changed["price"].as_i64(), changed["name"].as_str()),
        (StatusCode::OK, Some(99_000), Some("Gold mug")),
        "the price change took effect: {changed}"
    );
    let (_, again) = app.get(&format!("/orders/{order_id}"), Some(&token)).await;
    assert_eq!(
        (
            again["items"][0]["unitPrice"].as_i64(),
            again["items"][0]["name"].as_str()
        ),
        (Some(10_000), Some("Mug"))
    );

    let (status, err) = app
        .post(
            &format!("/orders/{order_id}/pay"),
            Some(&token),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "ORDER_NOT_PAYABLE")
    );
    assert_invariants(&app).await;
}

async fn products_not_on_sale_or_short_reserve_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (_, token) = member_with_balance(&app, "kim", 100_000).await;
    let plenty = app.product("Plenty", 1_000, 10).await;
    let scarce = app.product("Scarce", 1_000, 2).await;
    let paused = app.product("Paused", 1_000, 10).await;
    let gone = app.product("Gone", 1_000, 10).await;
    for (product, status) in [(paused, "SUSPENDED"), (gone, "DISCONTINUED")] {
        let (code_, body) = app
            .patch(
                &format!("/admin/products/{product}"),
                Some(ADMIN_TOKEN),
                json!({ "status": status }),
            )
            .await;
        assert_eq!(
            (code_, body["status"].as_str()),
            (StatusCode::OK, Some(status))
        );
    }

    let (status, err) = app
        .order(&token, &[(plenty, 1), (paused, 1)], json!({}))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "PRODUCT_NOT_ON_SALE"),
        "{err}"
    );
    assert_eq!(
        err["details"]["products"],
        json!([{ "productId": paused, "status": "SUSPENDED" }])
    );
    // A DISCONTINUED product cannot be ordered either.
    let (status, err) = app
        .order(&token, &[(plenty, 1), (gone, 1)], json!({}))
        .await;
    assert_eq!(
        (status, code(&err), err["details"]["products"].clone()),
        (
            StatusCode::CONFLICT,
            "PRODUCT_NOT_ON_SALE",
            json!([{ "productId": gone, "status": "DISCONTINUED" }])
        ),
        "{err}"
    );

    let (status, err) = app
        .order(&token, &[(plenty, 1), (scarce, 3)], json!({}))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "PRODUCT_OUT_OF_STOCK"),
        "{err}"
    );
    assert_eq!(
        err["details"]["products"],
        json!([{ "productId": scarce, "requested": 3, "available": 2 }])
    );

    let (status, err) = app
        .order(&token, &[(plenty, 1), (987_654, 1)], json!({}))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "PRODUCT_NOT_FOUND"),
        "{err}"
    );

    // All or nothing: nothing was reserved, no order exists, no money moved.
    assert_eq!(
        (
            app.stock_of(plenty).await,
            app.stock_of(scarce).await,
            app.stock_of(paused).await,
            app.stock_of(gone).await
        ),
        (10, 2, 10, 10)
    );
    let (_, orders) = app
        .get("/users/1/orders?status=PENDING", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(orders["items"].as_array().unwrap().len(), 0);
    assert_eq!(app.balance_of(1).await, 100_000);
    assert_invariants(&app).await;
}

async fn coupons_discount_orders(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = member_with_balance(&app, "kim", 200_000).await;
    let product = app.product("Kettle", 45_000, 10).await;
    let fixed = app
        .campaign(json!({ "type": "FIXED", "value": 5_000 }), 40_000, 10)
        .await;
    let percent = app
        .campaign(
            json!({ "type": "PERCENT", "value": 15, "maxAmount": 10_000 }),
            0,
            10,
        )
        .await;
    assert_eq!(app.issue(fixed, &token).await.0, StatusCode::CREATED);
    let (_, issued) = app.issue(percent, &token).await;
    let percent_user_coupon = issued["userCouponId"].as_i64().unwrap();

    let (status, order) = app
        .order(&token, &[(product, 1)], json!({ "couponId": fixed }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(
        (
            order["subtotal"].as_i64(),
            order["discount"].as_i64(),
            order["total"].as_i64()
        ),
        (Some(45_000), Some(5_000), Some(40_000))
    );
    assert_eq!(order["couponId"], fixed);
    // 15 % of 90,000 is 13,500, capped at 10,000; by user-coupon id this time.
    let (status, order) = app
        .order(
            &token,
            &[(product, 2)],
            json!({ "userCouponId": percent_user_coupon }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(
        (order["discount"].as_i64(), order["total"].as_i64()),
        (Some(10_000), Some(80_000))
    );
    // The member paid net of discounts.
    assert_eq!(app.balance_of(id).await, 200_000 - 40_000 - 80_000);
    let (_, used) = app
        .get(&format!("/users/{id}/coupons?status=USED"), Some(&token))
        .await;
    assert_eq!(used["items"].as_array().unwrap().len(), 2);
    assert_eq!(used["items"][0]["orderId"], order["id"]);

    // A FIXED discount larger than the subtotal is capped at it: the order costs nothing.
    let cheap = app.product("Spoon", 2_000, 10).await;
    let big = app
        .campaign(json!({ "type": "FIXED", "value": 5_000 }), 0, 10)
        .await;
    assert_eq!(app.issue(big, &token).await.0, StatusCode::CREATED);
    let balance = app.balance_of(id).await;
    let (status, order) = app
        .order(&token, &[(cheap, 1)], json!({ "couponId": big }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(
        (
            order["status"].as_str(),
            order["subtotal"].as_i64(),
            order["discount"].as_i64(),
            order["total"].as_i64()
        ),
        (Some("PAID"), Some(2_000), Some(2_000), Some(0)),
        "{order}"
    );
    assert_eq!(app.balance_of(id).await, balance, "nothing to pay");
    assert_invariants(&app).await;
}

async fn unusable_coupons_are_invalid(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (_, token) = member_with_balance(&app, "kim", 500_000).await;
    let (_, other_token) = member_with_balance(&app, "lee", 500_000).await;
    let product = app.product("Kettle", 10_000, 100).await;
    let min_order = app
        .campaign(json!({ "type": "FIXED", "value": 1_000 }), 50_000, 10)
        .await;
    let once = app
        .campaign(json!({ "type": "FIXED", "value": 1_000 }), 0, 10)
        .await;
    let expiring = app
        .campaign(json!({ "type": "FIXED", "value": 1_000 }), 0, 10)
        .await;
    let not_held = app
        .campaign(json!({ "type": "FIXED", "value": 1_000 }), 0, 10)
        .await;
    for c in [min_order, once, expiring] {
        assert_eq!(app.issue(c, &token).await.0, StatusCode::CREATED);
    }
    let (_, theirs) = app.issue(once, &other_token).await;
    let (_, expiring_coupon) = app.get("/users/1/coupons", Some(&token)).await;
    let expiring_id = expiring_coupon["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["couponId"] == expiring)
        .unwrap()["userCouponId"]
        .as_i64()
        .unwrap();
    let mut tx = app.db.begin().await.unwrap();
    let past = shopd::store::now() - Duration::seconds(1);
    shopd::sql_execute!(
        &mut tx,
        "UPDATE user_coupons SET expires_at = $1 WHERE id = $2",
        past,
        expiring_id
    )
    .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(
        app.order(&token, &[(product, 1)], json!({ "couponId": once }))
            .await
            .0,
        StatusCode::CREATED
    );
    let cases = [
        (json!({ "couponId": min_order }), "MIN_ORDER_AMOUNT_NOT_MET"),
        (json!({ "couponId": once }), "USED"),
        (json!({ "couponId": expiring }), "EXPIRED"),
        (json!({ "couponId": not_held }), "NOT_FOUND"),
        (
            json!({ "userCouponId": theirs["userCouponId"] }),
            "NOT_FOUND",
        ),
        (json!({ "couponId": 99_999 }), "NOT_FOUND"),
    ];
    let stock_before = app.stock_of(product).await;
    for (extra, reason) in cases {
        let (status, err) = app.order(&token, &[(product, 1)], extra.clone()).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::BAD_REQUEST, "COUPON_INVALID"),
            "{extra} -> {err}"
        );
        assert_eq!(err["details"]["reason"], reason, "{extra}");
    }
    assert_eq!(
        app.stock_of(product).await,
        stock_before,
        "rejected orders reserve nothing"
    );
    assert_invariants(&app).await;
}

async fn insufficient_balance_then_charge_and_pay_at_the_old_price(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = member_with_balance(&app, "kim", 5_000).await;
    let product = app.product("Grinder", 8_000, 3).await;
    let coupon = app
        .campaign(json!({ "type": "FIXED", "value": 1_000 }), 0, 10)
        .await;
    let (status, issued) = app.issue(coupon, &token).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");

    let (status, err) = app
        .order(&token, &[(product, 1)], json!({ "couponId": coupon }))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::PAYMENT_REQUIRED, "INSUFFICIENT_BALANCE"),
        "{err}"
    );
    let order_id = err["details"]["orderId"].as_i64().unwrap();
    assert_eq!(
        (
            err["details"]["total"].as_i64(),
            err["details"]["balance"].as_i64()
        ),
        (Some(7_000), Some(5_000))
    );
    let (_, order) = app.get(&format!("/orders/{order_id}"), Some(&token)).await;
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["payments"][0]["status"], "FAILED");
    assert_eq!(order["payments"][0]["failureCode"], "INSUFFICIENT_BALANCE");
    assert_eq!(app.stock_of(product).await, 2, "stock stays held");
    assert_eq!(app.balance_of(id).await, 5_000, "nothing debited");

    // Meanwhile the price rises and the rest of the stock sells out.
    let (status, risen) = app
        .patch(
            &format!("/admin/products/{product}"),
            Some(ADMIN_TOKEN),
            json!({ "price": 20_000 }),
        )
        .await;
    assert_eq!(
        (status, risen["price"].as_i64()),
        (StatusCode::OK, Some(20_000)),
        "{risen}"
    );
    let (status, sold_out) = app
        .post(
            &format!("/admin/products/{product}/stock"),
            Some(ADMIN_TOKEN),
            json!({ "delta": -2 }),
        )
        .await;
    assert_eq!(
        (status, sold_out["stock"].as_i64()),
        (StatusCode::OK, Some(0)),
        "{sold_out}"
    );
    assert_eq!(app.stock_of(product).await, 0);
    let pay = |key: &'static str| {
        let request = app
            .client
            .post(app.url(&format!("/orders/{order_id}/pay")))
            .bearer_auth(&token)
            .header("idempotency-key", key);
        async move {
            let response = request.send().await.unwrap();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let status = response.status();
            (status, response.json::<Value>().await.unwrap(), replayed)
        }
    };
    let (status, err, replayed) = pay("pay-1").await;
    assert_eq!(
        (status, code(&err), replayed),
        (StatusCode::PAYMENT_REQUIRED, "INSUFFICIENT_BALANCE", false),
        "{err}"
    );

    let (status, charged) = app.charge(id, &token, 10_000).await;
    assert_eq!(
        (status, charged["balance"].as_i64()),
        (StatusCode::OK, Some(15_000)),
        "{charged}"
    );
    // The same key replays its 402 even though the balance now suffices; nothing is paid.
    let (status, again, replayed) = pay("pay-1").await;
    assert_eq!(
        (status, &again, replayed),
        (StatusCode::PAYMENT_REQUIRED, &err, true)
    );
    assert_eq!(app.balance_of(id).await, 15_000, "the replay paid nothing");
    // A new key pays.
    let (status, paid, replayed) = pay("pay-2").await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{paid}");
    assert_eq!(
        (paid["status"].as_str(), paid["total"].as_i64()),
        (Some("PAID"), Some(7_000))
    );
    assert_eq!(paid["items"][0]["unitPrice"], 8_000);
    let statuses: Vec<&str> = paid["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["FAILED", "FAILED", "SUCCEEDED"]);
    assert_eq!(app.balance_of(id).await, 15_000 - 7_000);
    assert_invariants(&app).await;
}

async fn cart_shows_orderability_and_cart_orders_remove_only_their_lines(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = member_with_balance(&app, "kim", 100_000).await;
    let a = app.product("A", 1_000, 10).await;
    let b = app.product("B", 2_000, 1).await;
    let c = app.product("C", 3_000, 10).await;
    let put = |product: i64, quantity: i64| {
        let app = &app;
        let token = token.clone();
        async move {
            app.request(
                Method::PUT,
                &format!("/users/{id}/cart/items/{product}"),
                Some(&token),
                Some(&json!({ "quantity": quantity })),
                None,
            )
            .await
        }
    };
    assert_eq!(put(a, 2).await.0, StatusCode::OK);
    assert_eq!(put(b, 5).await.0, StatusCode::OK);
    let (status, cart) = put(c, 1).await;
    assert_eq!(status, StatusCode::OK);
    let items = cart["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(
        (
            items[0]["orderable"].as_bool(),
            items[0]["lineTotal"].as_i64()
        ),
        (Some(true), Some(2_000))
    );
    assert_eq!(
        (items[1]["orderable"].as_bool(), items[1]["stock"].as_i64()),
        (Some(false), Some(1)),
        "B is short"
    );
    assert_eq!(cart["orderableTotal"], 5_000);
    app.patch(
        &format!("/admin/products/{c}"),
        Some(ADMIN_TOKEN),
        json!({ "status": "SUSPENDED" }),
    )
    .await;
    let (_, cart) = app.get(&format!("/users/{id}/cart"), Some(&token)).await;
    assert_eq!(
        (
            cart["items"][2]["status"].as_str(),
            cart["items"][2]["orderable"].as_bool()
        ),
        (Some("SUSPENDED"), Some(false))
    );
    app.patch(
        &format!("/admin/products/{c}"),
        Some(ADMIN_TOKEN),
        json!({ "status": "ON_SALE" }),
    )
    .await;

    let (status, err) = put(a, 0).await;
    assert_eq!(
        (status, code(&err), err["details"]["field"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            Some("quantity")
        ),
        "{err}"
    );
    let (status, err) = put(999, 1).await;
    assert_eq!(
        (status, code(&err), err["details"]["id"].as_i64()),
        (StatusCode::NOT_FOUND, "PRODUCT_NOT_FOUND", Some(999)),
        "{err}"
    );
    // A DISCONTINUED product cannot go into a cart: it is not found for members.
    let gone = app.product("Gone", 1_000, 10).await;
    let (status, discontinued) = app
        .patch(
            &format!("/admin/products/{gone}"),
            Some(ADMIN_TOKEN),
            json!({ "status": "DISCONTINUED" }),
        )
        .await;
    assert_eq!(
        (status, discontinued["status"].as_str()),
        (StatusCode::OK, Some("DISCONTINUED"))
    );
    let (status, err) = put(gone, 1).await;
    assert_eq!(
        (status, code(&err), err["details"]["id"].as_i64()),
        (StatusCode::NOT_FOUND, "PRODUCT_NOT_FOUND", Some(gone)),
        "{err}"
    );
    // Order A and C from the cart: B stays.
    let (status, order) = app
        .post(
            "/orders",
            Some(&token),
            json!({ "fromCart": true, "productIds": [a, c] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(
        (order["fromCart"].as_bool(), order["total"].as_i64()),
        (Some(true), Some(5_000))
    );
    let (_, cart) = app.get(&format!("/users/{id}/cart"), Some(&token)).await;
    let left: Vec<i64> = cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["productId"].as_i64().unwrap())
        .collect();
    assert_eq!(left, vec![b]);

    // An unpaid cart order keeps its lines in the cart until it is paid.
    put(b, 1).await;
    let (status, pending) = app
        .post(
            "/orders",
            Some(&token),
            json!({ "fromCart": true, "pay": false }),
        )
        .await;
    assert_eq!(
        (status, pending["status"].as_str()),
        (StatusCode::CREATED, Some("PENDING"))
    );
    let (_, cart) = app.get(&format!("/users/{id}/cart"), Some(&token)).await;
    assert_eq!(cart["items"].as_array().unwrap().len(), 1);
    app.post(
        &format!("/orders/{}/pay", pending["id"]),
        Some(&token),
        json!(null),
    )
    .await;
    let (_, cart) = app.get(&format!("/users/{id}/cart"), Some(&token)).await;
    assert_eq!(cart["items"].as_array().unwrap().len(), 0);

    let (status, err) = app
        .post("/orders", Some(&token), json!({ "fromCart": true }))
        .await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "CART_EMPTY"));
    put(a, 1).await;
    assert_eq!(
        app.request(
            Method::DELETE,
            &format!("/users/{id}/cart/items/{a}"),
            Some(&token),
            None,
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    put(a, 1).await;
    assert_eq!(
        app.request(
            Method::DELETE,
            &format!("/users/{id}/cart"),
            Some(&token),
            None,
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    let (_, cart) = app.get(&format!("/users/{id}/cart"), Some(&token)).await;
    assert_eq!(cart["items"].as_array().unwrap().len(), 0);
    assert_invariants(&app).await;
}

async fn cancel_restores_stock_and_coupon_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = member_with_balance(&app, "kim", 100_000).await;
    let product = app.product("Kettle", 10_000, 5).await;
    let coupon = app
        .campaign(json!({ "type": "FIXED", "value": 1_000 }), 0, 10)
        .await;
    assert_eq!(app.issue(coupon, &token).await.0, StatusCode::CREATED);
    let (status, order) = app
        .order(
            &token,
            &[(product, 3)],
            json!({ "couponId": coupon, "pay": false }),
        )
        .await;
    assert_eq!(
        (status, order["status"].as_str()),
        (StatusCode::CREATED, Some("PENDING")),
        "{order}"
    );
    let order_id = order["id"].as_i64().unwrap();
    assert_eq!(app.stock_of(product).await, 2);

    let (status, cancelled) = app
        .post(
            &format!("/orders/{order_id}/cancel"),
            Some(&token),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (StatusCode::OK, Some("CANCELLED")),
        "{cancelled}"
    );
    assert_eq!(app.stock_of(product).await, 5);
    let (_, available) = app.get(&format!("/users/{id}/coupons"), Some(&token)).await;
    assert_eq!(
        available["items"].as_array().unwrap().len(),
        1,
        "coupon given back"
    );

    let (status, err) = app
        .post(
            &format!("/orders/{order_id}/cancel"),
            Some(&token),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "ORDER_NOT_CANCELLABLE")
    );
    let (status, err) = app
        .post(
            &format!("/orders/{order_id}/pay"),
            Some(&token),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "ORDER_NOT_PAYABLE")
    );
    assert_eq!(app.stock_of(product).await, 5, "restored exactly once");
    // The coupon works again.
    let (status, paid) = app
        .order(&token, &[(product, 1)], json!({ "couponId": coupon }))
        .await;
    assert_eq!(
        (status, paid["status"].as_str()),
        (StatusCode::CREATED, Some("PAID")),
        "{paid}"
    );
    // PAID is final: cancelling it is refused, and changes nothing.
    let paid_id = paid["id"].as_i64().unwrap();
    let balance = app.balance_of(id).await;
    let (status, err) = app
        .post(
            &format!("/orders/{paid_id}/cancel"),
            Some(&token),
            json!(null),
        )
        .await;
    assert_eq!(
        (
            status,
            code(&err),
            err["details"]["orderId"].as_i64(),
            err["details"]["status"].as_str()
        ),
        (
            StatusCode::CONFLICT,
            "ORDER_NOT_CANCELLABLE",
            Some(paid_id),
            Some("PAID")
        ),
        "{err}"
    );
    let (_, still) = app.get(&format!("/orders/{paid_id}"), Some(&token)).await;
    assert_eq!(still["status"], "PAID");
    assert_eq!(app.stock_of(product).await, 4);
    assert_eq!(app.balance_of(id).await, balance, "no refund");
    assert_invariants(&app).await;
}

/// Settings for expiry tests: a short reservation, and the background sweeper effectively off
/// (its first tick runs at start-up, before any order), so tests run the sweep themselves.
fn short_reservation_no_sweeper(s: &mut shopd::config::Settings) {
    s.reservation_ttl = std::time::Duration::from_millis(300);
    s.sweep_interval = std::time::Duration::from_secs(3_600);
}

/// An unpaid order of 2 `product` with `coupon`, returned once its reservation has passed.
async fn unpaid_order_until_overdue(app: &TestApp, token: &str, product: i64, coupon: i64) -> i64 {
    let (status, order) = app
        .order(
            token,
            &[(product, 2)],
            json!({ "couponId": coupon, "pay": false }),
        )
        .await;
    assert_eq!(
        (status, order["status"].as_str()),
        (StatusCode::CREATED, Some("PENDING")),
        "{order}"
    );
    // expiresAt = createdAt + TTL.
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(order[field].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let (created, expires) = (at("createdAt"), at("expiresAt"));
    assert_eq!(
        expires - created,
        chrono::Duration::from_std(app.settings.reservation_ttl).unwrap(),
        "{order}"
    );
    // Wait out the reservation against the clock (not against a background timer).
    let left = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + std::time::Duration::from_millis(50)).await;
    order["id"].as_i64().unwrap()
}

async fn expired_orders_restore_stock_and_coupon(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, short_reservation_no_sweeper).await else {
        return;
    };
    let (id, token) = member_with_balance(&app, "kim", 100_000).await;
    let product = app.product("Kettle", 10_000, 5).await;
    let coupon = app
        .campaign(json!({ "type": "FIXED", "value": 1_000 }), 0, 10)
        .await;
    let (status, issued) = app.issue(coupon, &token).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let swept_id = unpaid_order_until_overdue(&app, &token, product, coupon).await;
    let (_, order) = app.get(&format!("/orders/{swept_id}"), Some(&token)).await;
    assert_eq!(order["status"], "PENDING", "overdue, not yet swept");
    assert_eq!(app.stock_of(product).await, 3, "stock still held");

    // The sweeper, run directly: it expires exactly this order, once.
    let expired = shopd::workers::expire_overdue_orders(app.state())
        .await
        .expect("sweep");
    assert_eq!(expired, 1);
    assert_eq!(
        shopd::workers::expire_overdue_orders(app.state())
            .await
            .expect("sweep again"),
        0,
        "an order expires at most once"
    );
    let (_, order) = app.get(&format!("/orders/{swept_id}"), Some(&token)).await;
    assert_eq!(order["status"], "EXPIRED", "{order}");
    assert_eq!(app.stock_of(product).await, 5);
    let (_, available) = app.get(&format!("/users/{id}/coupons"), Some(&token)).await;
    assert_eq!(
        available["items"].as_array().unwrap().len(),
        1,
        "coupon given back"
    );
    let (status, err) = app
        .post(
            &format!("/orders/{swept_id}/pay"),
            Some(&token),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "ORDER_NOT_PAYABLE")
    );
    assert_eq!(err["details"]["status"], "EXPIRED");
    assert_eq!(app.balance_of(id).await, 100_000);
    assert_invariants(&app).await;
}

async fn paying_after_the_reservation_expired_is_refused_without_the_sweeper(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, short_reservation_no_sweeper).await else {
        return;
    };
    let (id, token) = member_with_balance(&app, "kim", 100_000).await;
    let product = app.product("Kettle", 10_000, 5).await;
    let coupon = app
        .campaign(json!({ "type": "FIXED", "value": 1_000 }), 0, 10)
        .await;
    let (status, issued) = app.issue(coupon, &token).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let order_id = unpaid_order_until_overdue(&app, &token, product, coupon).await;
    assert_eq!(
        app.stock_of(product).await,
        3,
        "not swept: stock still held"
    );

    let (status, err) = app
        .post(
            &format!("/orders/{order_id}/pay"),
            Some(&token),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, code(&err), err["details"]["status"].as_str()),
        (StatusCode::CONFLICT, "ORDER_NOT_PAYABLE", Some("EXPIRED")),
        "{err}"
    );
    // The refusal expired the order for real: stock and coupon back, nothing charged.
    let (_, order) = app.get(&format!("/orders/{order_id}"), Some(&token)).await;
    assert_eq!(order["status"], "EXPIRED", "{order}");
    assert_eq!(app.stock_of(product).await, 5);
    let (_, available) = app.get(&format!("/users/{id}/coupons"), Some(&token)).await;
    assert_eq!(
        available["items"].as_array().unwrap().len(),
        1,
        "coupon back"
    );
    assert_eq!(app.balance_of(id).await, 100_000, "nothing debited");
    let mut conn = app.db.read().await.unwrap();
    let payments: i64 = shopd::sql_scalar!(
        &mut conn,
        "SELECT COUNT(*) FROM payments WHERE order_id = $1",
        order_id
    )
    .unwrap();
    assert_eq!(payments, 0, "no payment row");
    drop(conn);
    assert_eq!(
        shopd::workers::expire_overdue_orders(app.state())
            .await
            .expect("sweep"),
        0,
        "already expired: the sweeper has nothing left to do"
    );
    assert_invariants(&app).await;
}

async fn members_never_see_each_others_orders(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (alice, alice_token) = member_with_balance(&app, "alice", 100_000).await;
    let (_, bob_token) = member_with_balance(&app, "bob", 100_000).await;
    let product = app.product("Mug", 1_000, 10).await;
    let (_, order) = app
        .order(&alice_token, &[(product, 1)], json!({ "pay": false }))
        .await;
    let order_id = order["id"].as_i64().unwrap();
    let (status, err) = app
        .get(&format!("/orders/{order_id}"), Some(&bob_token))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND")
    );
    for action in ["pay", "cancel"] {
        let (status, err) = app
            .post(
                &format!("/orders/{order_id}/{action}"),
                Some(&bob_token),
                json!(null),
            )
            .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND"),
            "{action}"
        );
    }
    let (status, _) = app
        .get(&format!("/users/{alice}/orders"), Some(&bob_token))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .get(&format!("/users/{alice}/cart"), Some(&bob_token))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.get(&format!("/orders/{order_id}"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, seen) = app
        .get(&format!("/orders/{order_id}"), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(
        (status, seen["status"].as_str()),
        (StatusCode::OK, Some("PENDING"))
    );
    let (_, still) = app
        .get(&format!("/orders/{order_id}"), Some(&alice_token))
        .await;
    assert_eq!(still["status"], "PENDING", "bob's attempts changed nothing");

    // Bob cannot change Alice's cart either.
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/users/{alice}/cart/items/{product}"),
            Some(json!({ "quantity": 1 })),
        ),
        (
            Method::DELETE,
            format!("/users/{alice}/cart/items/{product}"),
            None,
        ),
        (Method::DELETE, format!("/users/{alice}/cart"), None),
    ] {
        let (status, err) = app
            .request(method.clone(), &path, Some(&bob_token), body.as_ref(), None)
            .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::FORBIDDEN, "FORBIDDEN"),
            "{method} {path}: {err}"
        );
    }

    // An admin may pay a member's order: the member's balance pays it.
    let (status, paid) = app
        .post(
            &format!("/orders/{order_id}/pay"),
            Some(ADMIN_TOKEN),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, paid["status"].as_str(), paid["userId"].as_i64()),
        (StatusCode::OK, Some("PAID"), Some(alice)),
        "{paid}"
    );
    assert_eq!(app.balance_of(alice).await, 100_000 - 1_000);
    // ... and cancel a member's PENDING order.
    let (_, other) = app
        .order(&alice_token, &[(product, 2)], json!({ "pay": false }))
        .await;
    let (status, cancelled) = app
        .post(
            &format!("/orders/{}/cancel", other["id"]),
            Some(ADMIN_TOKEN),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (StatusCode::OK, Some("CANCELLED")),
        "{cancelled}"
    );
    assert_eq!(app.stock_of(product).await, 10 - 1);
    assert_invariants(&app).await;
}

async fn order_requests_are_validated(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (_, token) = member_with_balance(&app, "kim", 100_000).await;
    let product = app.product("Mug", 1_000, 10).await;
    let cases = [
        (json!({}), "items"),
        (json!({ "items": [] }), "items"),
        (
            json!({ "items": [{ "productId": product, "quantity": 0 }] }),
            "items[0].quantity",
        ),
        (
            json!({ "items": [{ "productId": product, "quantity": -2 }] }),
            "items[0].quantity",
        ),
        (
            json!({ "items": [{ "productId": product, "quantity": 1001 }] }),
            "items[0].quantity",
        ),
        (
            json!({ "items": [{ "productId": product }] }),
            "items[0].quantity",
        ),
        (
            json!({ "items": [{ "productId": "one", "quantity": 1 }] }),
            "items[0].productId",
        ),
        (
            json!({ "items": [{ "productId": product, "quantity": 1 }], "fromCart": true }),
            "fromCart",
        ),
        (
            json!({ "items": [{ "productId": product, "quantity": 1 }], "productIds": [product] }),
            "productIds",
        ),
        (
            json!({ "items": [{ "productId": product, "quantity": 1 }], "couponId": 1, "userCouponId": 1 }),
            "userCouponId",
        ),
        (
            json!({ "items": [{ "productId": product, "quantity": 1 }], "pay": "yes" }),
            "pay",
        ),
        (
            json!({ "items": (1..=51).map(|i| json!({ "productId": i, "quantity": 1 })).collect::<Vec<_>>() }),
            "items",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = app.post("/orders", Some(&token), body.clone()).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
            "{body} -> {err}"
        );
        assert_eq!(err["details"]["field"], field, "{body} -> {err}");
    }
    let (status, err) = app.order(ADMIN_TOKEN, &[(product, 1)], json!({})).await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (status, _) = app.order("nope", &[(product, 1)], json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, err) = app.post("/orders/999/pay", Some(&token), json!(null)).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND")
    );
    assert_eq!(app.stock_of(product).await, 10);
    assert_eq!(app.balance_of(1).await, 100_000);
}

async fn orders_are_listed_with_history(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (id, token) = member_with_balance(&app, "kim", 100_000).await;
    let product = app.product("Mug", 1_000, 10).await;
    let (_, first) = app.order(&token, &[(product, 1)], json!({})).await;
    let (_, second) = app
        .order(&token, &[(product, 2)], json!({ "pay": false }))
        .await;
    let (_, third) = app
        .order(&token, &[(product, 3)], json!({ "pay": false }))
        .await;
    app.post(
        &format!("/orders/{}/cancel", third["id"]),
        Some(&token),
        json!(null),
    )
    .await;

    let (status, page) = app
        .get(&format!("/users/{id}/orders?limit=2"), Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["id"])
        .collect();
    assert_eq!(ids, vec![&third["id"], &second["id"]]);
    let history: Vec<&str> = page["items"][0]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(history, vec!["PENDING", "CANCELLED"]);
    assert_eq!(page["items"][1]["items"][0]["quantity"], 2);
    let cursor = page["nextCursor"].as_str().unwrap();
    let (_, rest) = app
        .get(
            &format!("/users/{id}/orders?limit=2&cursor={cursor}"),
            Some(&token),
        )
        .await;
    assert_eq!(rest["items"][0]["id"], first["id"]);
    assert_eq!(rest["items"][0]["payments"][0]["status"], "SUCCEEDED");
    assert!(rest["nextCursor"].is_null());

    let (_, paid) = app
        .get(&format!("/users/{id}/orders?status=PAID"), Some(&token))
        .await;
    assert_eq!(paid["items"].as_array().unwrap().len(), 1);
    let (status, err) = app
        .get(&format!("/users/{id}/orders?status=LOST"), Some(&token))
        .await;
    assert_eq!(
        (status, code(&err), err["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR", Some("status")),
        "{err}"
    );
}

/// Nothing deletes an order, and the database refuses it (PostgreSQL: a trigger, which stands
/// in for the foreign keys of its lines, history and payments dropped by migration 0014;
/// SQLite: those foreign keys).
async fn an_order_can_never_be_deleted(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (user_id, token) = app.member("deleter").await;
    app.charge(user_id, &token, 10_000).await;
    let product = app.product("Kettle", 1_000, 5).await;
    let (status, order) = app.order(&token, &[(product, 2)], json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let order_id = order["id"].as_i64().expect("id");
    let deleted = app
        .db
        .write(
            shopd::db::Locks::none(),
            async move |tx: &mut shopd::db::Tx| -> shopd::error::AppResult<u64> {
                Ok(shopd::sql_execute!(
                    tx,
                    "DELETE FROM orders WHERE id = $1",
                    order_id
                )?)
            },
        )
        .await;
    assert!(
        deleted.is_err(),
        "deleting an order is refused: {deleted:?}"
    );
    let (status, body) = app.get(&format!("/orders/{order_id}"), Some(&token)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("PAID"))
    );
    assert_invariants(&app).await;
}

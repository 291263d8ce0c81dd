//! The operator console (SPEC §16): its assets over HTTP, and end-to-end scenarios in a real
//! headless Chromium (see `browser.rs` for what they need and how they skip).
//!
//! Every scenario saves screenshots under `target/console-screenshots/`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use shopd::mock_platform::MockConfig;

use crate::browser::Browser;
use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, mock_platform};

async fn sqlite_app() -> TestApp {
    TestApp::spawn(Backend::Sqlite).await.expect("sqlite app")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_is_served_from_the_binary_with_a_strict_policy() {
    let app = sqlite_app().await;
    let page = app.client.get(app.url("/console")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    for directive in [
        "script-src 'self'",
        "connect-src 'self'",
        "style-src 'self'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("http"), "no remote origin is allowed: {csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    assert!(html.contains("/console/js/app.js"));
    for remote in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(!html.contains(remote), "no CDN: {remote}");
    }

    let js = app
        .client
        .get(app.url("/console/js/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = js.headers()["etag"].to_str().unwrap().to_string();
    let again = app
        .client
        .get(app.url("/console/js/app.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::NOT_MODIFIED,
        "revalidated by ETag"
    );

    let css = app
        .client
        .get(app.url("/console/console.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");

    let (status, body) = app.get("/console/nope.js", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
    let (status, _) = app.get("/console/../Cargo.toml", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A member with `balance`, one product, and a paid order of `quantity` units at `price`.
async fn paid_order(
    app: &TestApp,
    name: &str,
    balance: i64,
    price: i64,
    quantity: i64,
) -> (i64, i64, i64) {
    let (user_id, token) = app.member(name).await;
    let (status, body) = app.charge(user_id, &token, balance).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let product = app.product(&format!("{name}'s lamp"), price, 50).await;
    let (status, order) = app.order(&token, &[(product, quantity)], json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "PAID");
    (user_id, product, order["id"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sign_in_refuses_a_wrong_token_and_keeps_the_right_one_out_of_the_url() {
    let app = sqlite_app().await;
    let Some(browser) = Browser::open("sign in", &app.address).await else {
        return;
    };
    let (_, member_token) = app.member("Mina").await;
    browser.goto("").await;
    browser.wait_text("main h1", "Sign in").await;
    let nav_hidden = browser
        .script("return document.getElementById('nav').offsetParent === null")
        .await;
    assert_eq!(nav_hidden, json!(true), "no navigation before signing in");
    browser.fill("input[name=token]", "not-a-token").await;
    browser.click("form.signin button[type=submit]").await;
    browser.wait_text("#signin-error", "not accepted").await;
    browser.screenshot("signin-wrong-token").await;

    browser.fill("input[name=token]", &member_token).await;
    browser.click("form.signin button[type=submit]").await;
    browser.wait_text("#signin-error", "member token").await;

    browser.fill("input[name=token]", ADMIN_TOKEN).await;
    browser.click("form.signin button[type=submit]").await;
    browser.wait_text("main h1", "Dashboard").await;
    let url = browser.client.current_url().await.unwrap();
    assert!(
        !url.as_str().contains(ADMIN_TOKEN),
        "the token is never in a URL: {url}"
    );
    let kept = browser
        .script("return sessionStorage.getItem('shopd.adminToken')")
        .await;
    assert_eq!(kept, json!(ADMIN_TOKEN));
    let local = browser.script("return localStorage.length").await;
    assert_eq!(local, json!(0), "nothing in localStorage");

    // Signing out forgets the token.
    browser.click("#sign-out").await;
    browser.wait_text("main h1", "Sign in").await;
    let kept = browser
        .script("return sessionStorage.getItem('shopd.adminToken')")
        .await;
    assert_eq!(kept, json!(null));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_creates_a_product_finds_it_listed_and_restocks_it() {
    let app = sqlite_app().await;
    let Some(browser) = Browser::open("products", &app.address).await else {
        return;
    };
    browser.sign_in(ADMIN_TOKEN).await;
    browser.goto("#/products").await;
    browser.wait_text("main h1", "Products").await;
    browser.fill("input[name=name]", "Walnut desk").await;
    browser.fill("input[name=price]", "250000").await;
    browser.fill("input[name=stock]", "7").await;
    browser.click_button("main", "Add product").await;
    browser.wait_text("#notices", "Walnut desk").await;
    let row = browser
        .wait_text("main table tbody tr", "Walnut desk")
        .await;
    assert!(
        row.contains("₩250,000") && row.contains('7') && row.contains("ON_SALE"),
        "{row}"
    );

    // The API agrees: the product exists with that price and stock.
    let (_, page) = app.get("/admin/products", Some(ADMIN_TOKEN)).await;
    let product = &page["items"][0];
    assert_eq!(
        (
            product["name"].as_str(),
            product["price"].as_i64(),
            product["stock"].as_i64()
        ),
        (Some("Walnut desk"), Some(250_000), Some(7))
    );

    // Restock through the dialog.
    browser
        .click("button[aria-label='Change stock of Walnut desk']")
        .await;
    browser.fill("dialog[open] input[name=delta]", "5").await;
    browser.click_button("dialog", "Apply").await;
    browser.wait_text("#notices", "is now 12").await;
    browser.wait_text("main table tbody tr", "12").await;

    // A price the API refuses (above its maximum) is shown in plain words, and changes nothing.
    browser.click("button[aria-label='Edit Walnut desk']").await;
    browser
        .fill("dialog[open] input[name=price]", "2000000000")
        .await;
    browser.click_button("dialog", "Save").await;
    browser
        .wait_text("dialog[open] .error-text", "VALIDATION_ERROR")
        .await;
    browser.screenshot("products-edit-error").await;
    browser.click_button("dialog", "Cancel").await;
    let id = product["id"].as_i64().unwrap();
    assert_eq!(app.stock_of(id).await, 12);
    let (_, unchanged) = app.get(&format!("/products/{id}"), None).await;
    assert_eq!(unchanged["price"], 250_000);
    browser.screenshot("products").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_dashboard_shows_a_paid_order_and_its_revenue_and_every_page_renders() {
    let app = sqlite_app().await;
    let Some(browser) = Browser::open("dashboard", &app.address).await else {
        return;
    };
    // A member created through the API orders (and pays) 3 units at 12,000.
    let (user_id, _, order_id) = paid_order(&app, "Jun", 100_000, 12_000, 3).await;
    app.campaign(
        json!({ "type": "PERCENT", "value": 10, "maxAmount": 5_000 }),
        0,
        50,
    )
    .await;
    let (status, _) = app
        .post("/admin/ranking/refresh", Some(ADMIN_TOKEN), json!(null))
        .await;
    assert_eq!(status, StatusCode::OK);

    browser.sign_in(ADMIN_TOKEN).await;
    browser.wait_text("#tile-orders", "1").await;
    browser.wait_text("#tile-revenue", "₩36,000").await;
    // The hour with the payment has a bar in each chart.
    let bars = browser
        .client
        .find_all(fantoccini::Locator::Css(".chart rect.bar"))
        .await
        .unwrap();
    assert_eq!(bars.len(), 2, "one bar per chart: the current hour");
    browser
        .wait_text("#popular-title + form + div", "Jun's lamp")
        .await;
    browser.screenshot("dashboard").await;

    // A busier day for the picture in the README: more members pay, over the past hours.
    let now = chrono::Utc::now();
    for (i, (hours_ago, units)) in [
        (1, 2),
        (2, 1),
        (3, 4),
        (5, 2),
        (6, 3),
        (9, 1),
        (12, 2),
        (20, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let (_, _, id) = paid_order(
            &app,
            &format!("Member {i}"),
            100_000,
            9_000 + 1_000 * i as i64,
            units,
        )
        .await;
        let mut tx = app.db.begin().await.unwrap();
        shopd::sql_execute!(
            &mut tx,
            "UPDATE orders SET paid_at = $1 WHERE id = $2",
            now - chrono::Duration::hours(hours_ago),
            id
        )
        .unwrap();
        tx.commit().await.unwrap();
    }
    app.post(
        "/admin/ranking/refresh?full=true",
        Some(ADMIN_TOKEN),
        json!(null),
    )
    .await;
    browser.goto("#/orders").await;
    browser.goto("#/dashboard").await;
    browser.wait_text("#tile-orders", "9").await;
    browser.screenshot("dashboard-busy").await;

    // The sign-in page shows no navigation before signing in.
    let nav_hidden = browser
        .script("return document.getElementById('nav').offsetParent === null")
        .await;
    assert_eq!(nav_hidden, json!(false), "signed in: the navigation shows");

    browser.goto("#/orders").await;
    browser
        .wait_text("main table tbody", &format!("#{order_id}"))
        .await;
    browser.screenshot("orders").await;
    browser.goto(&format!("#/orders/{order_id}")).await;
    browser
        .wait_text("main h1", &format!("Order #{order_id}"))
        .await;
    browser.wait_text("main", "Jun's lamp").await;
    browser.wait_text("main", "SUCCEEDED").await;
    browser.screenshot("order-detail").await;

    browser.goto("#/coupons").await;
    browser.wait_text("main table tbody", "0 / 50").await;
    browser.screenshot("coupons").await;

    browser.goto("#/members").await;
    browser.fill("input[name=q]", "ju").await;
    browser.click_button("main", "Search").await;
    browser.wait_text("main table tbody", "₩64,000").await;
    browser.screenshot("members").await;
    browser.goto(&format!("#/members/{user_id}")).await;
    browser.wait_text("#member-balance", "₩64,000").await;
    browser.wait_text("main", "PAYMENT").await;
    browser.screenshot("member-detail").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_reissues_a_member_token() {
    let app = sqlite_app().await;
    let Some(browser) = Browser::open("token reissue", &app.address).await else {
        return;
    };
    let (user_id, old_token) = app.member("Sora").await;
    browser.sign_in(ADMIN_TOKEN).await;
    browser.goto(&format!("#/members/{user_id}")).await;
    browser.click("#reissue-token").await;
    browser.click_button("dialog", "Issue new token").await;
    let new_token = browser.wait_text("#new-token", "").await;
    assert!(!new_token.is_empty());
    let (status, _) = app
        .get(&format!("/users/{user_id}"), Some(&old_token))
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old token stops at once"
    );
    let (status, _) = app
        .get(&format!("/users/{user_id}"), Some(new_token.trim()))
        .await;
    assert_eq!(status, StatusCode::OK, "the token shown works");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_refunds_an_order_and_the_balance_comes_back() {
    let app = sqlite_app().await;
    let Some(browser) = Browser::open("refund", &app.address).await else {
        return;
    };
    let (user_id, product, order_id) = paid_order(&app, "Hana", 50_000, 8_000, 2).await;
    assert_eq!(app.balance_of(user_id).await, 34_000);
    let stock_before = app.stock_of(product).await;

    browser.sign_in(ADMIN_TOKEN).await;
    browser.goto(&format!("#/orders/{order_id}")).await;
    browser.wait_text("main h1", "PAID").await;
    browser.click("#refund-open").await;
    browser
        .fill("dialog[open] textarea[name=reason]", "Arrived broken")
        .await;
    browser.screenshot("refund-dialog").await;
    browser.click_button("dialog", "Refund").await;
    browser.wait_text("#notices", "Refunded ₩16,000").await;
    browser.wait_text("main h1", "REFUNDED").await;
    browser
        .wait_text("#o-refunds + table, #o-refunds ~ table", "Arrived broken")
        .await;
    browser.screenshot("order-refunded").await;

    browser.goto(&format!("#/members/{user_id}")).await;
    browser.wait_text("#member-balance", "₩50,000").await;
    browser.wait_text("main", "REFUND").await;
    browser.screenshot("member-after-refund").await;
    assert_eq!(app.balance_of(user_id).await, 50_000, "the balance is back");
    assert_eq!(
        app.stock_of(product).await,
        stock_before + 2,
        "restocked by default"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_replays_a_dead_event_once_the_platform_recovers() {
    let (platform, url) = mock_platform(MockConfig {
        fail_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    // The test delivers with passes of the relay (no background relay), each recorded when it
    // returns; a pass 100 ms ahead of the clock finds the failed event due again.
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.data_platform_url = Some(url);
        s.relay = shopd::config::RelayMode::Off;
        s.outbox_backoff_base = Duration::from_millis(20);
        s.outbox_backoff_max = Duration::from_millis(100);
        s.outbox_max_attempts = 2;
    })
    .await
    .expect("sqlite app");
    let Some(browser) = Browser::open("outbox replay", &app.address).await else {
        return;
    };
    let relay = app.relay();
    let (_, _, order_id) = paid_order(&app, "Yuna", 10_000, 5_000, 1).await;
    let ahead = || shopd::store::now() + chrono::Duration::milliseconds(100);
    let report = relay.deliver_due(ahead()).await.expect("relay pass");
    assert_eq!((report.claimed, report.failed), (1, 1), "{report:?}");
    let report = relay.deliver_due(ahead()).await.expect("relay pass");
    assert_eq!((report.claimed, report.dead), (1, 1), "{report:?}");
    let (_, dead) = app
        .get("/admin/outbox?status=DEAD", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(
        dead["items"].as_array().map_or(0, Vec::len),
        1,
        "the event went DEAD: {dead}"
    );

    browser.sign_in(ADMIN_TOKEN).await;
    browser.wait_text("#tile-dead", "1").await;
    browser
        .wait_text("#outbox-title ~ div table", &format!("#{order_id}"))
        .await;
    browser
        .wait_text("#outbox-title ~ div table", "HTTP 503")
        .await;
    browser.screenshot("dashboard-dead-event").await;

    // The platform recovers; the operator replays the event from the dashboard.
    platform.set_fail_rate(0.0);
    browser
        .click(&format!(
            "button[aria-label='Replay event for order {order_id}']"
        ))
        .await;
    browser.wait_text("#notices", "replayed").await;
    browser.wait_text("#tile-dead", "0").await;
    let report = relay.deliver_pending().await.expect("relay pass");
    assert_eq!((report.claimed, report.delivered), (1, 1), "{report:?}");
    assert_eq!(
        platform.stats().unique_events,
        1,
        "delivered after the replay: {:?}",
        platform.stats()
    );
    let (_, delivered) = app
        .get("/admin/outbox?status=DELIVERED", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(delivered["items"][0]["orderId"], order_id);
    browser
        .wait_text("#outbox-title ~ div", "No dead events")
        .await;
    browser.screenshot("dashboard-after-replay").await;
    browser.close().await;
}

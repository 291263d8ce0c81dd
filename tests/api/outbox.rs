//! Delivery of order events to the data platform (SPEC §10).
//!
//! Most tests drive the relay themselves: the app runs with `--relay off` (no background
//! relay) and the test runs passes of its relay (`TestApp::relay`, `Relay::deliver_due`). A
//! pass claims what is due, sends it and records the outcomes before it returns, so the test
//! asserts final counts at once, with no polling; a pass at a later instant steps over a
//! backoff or a lease instead of sleeping it out.
//!
//! Four tests run the background relay end to end on purpose and wait (bounded) for it, each
//! saying why: the hand-off at commit, two live instances, a crash and restart, and a platform
//! outage.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shopd::mock_platform::{MockConfig, MockPlatform};
use tokio_util::sync::CancellationToken;

use shopd::config::{RelayMode, Settings};
use shopd::db::{Db, DbOptions, Locks, Tx};
use shopd::relay::DeliveryReport;
use shopd::sql_scalar;
use shopd::store::{now, outbox};

use crate::crash::{drop_scratch_database, scratch_database, start_with};
use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, code, eventually, mock_platform};
use crate::invariants::assert_invariants;
use crate::on_both_backends;

on_both_backends!(
    // The test drives the relay.
    paid_orders_are_delivered_signed,
    a_flaky_platform_loses_nothing,
    a_dead_platform_leads_to_dead_events_that_can_be_replayed,
    any_2xx_is_delivered_and_requests_name_the_event,
    a_failed_delivery_waits_out_its_backoff,
    deliveries_in_flight_never_exceed_the_bound,
    a_lease_keeps_an_event_from_other_relays_until_it_runs_out,
    two_relays_racing_deliver_every_event_once,
    // The background relay, end to end.
    events_committed_before_a_crash_are_delivered_after_restart,
    two_instances_deliver_every_event,
    a_platform_down_a_few_seconds_then_up_loses_nothing,
    committed_events_are_handed_over_without_a_claim,
);

/// A pass of `relay` at `now`, which must succeed.
async fn pass_at(
    relay: &shopd::relay::Relay,
    now: chrono::DateTime<chrono::Utc>,
) -> DeliveryReport {
    relay.deliver_due(now).await.expect("a relay pass")
}

/// A pass of `relay` now.
async fn pass(relay: &shopd::relay::Relay) -> DeliveryReport {
    pass_at(relay, shopd::store::now()).await
}

/// What a pass reports when every one of `n` claimed events was delivered.
fn delivered(n: usize) -> DeliveryReport {
    DeliveryReport {
        claimed: n,
        delivered: n,
        ..DeliveryReport::default()
    }
}

/// SPEC §10 / issue #14, at full length: the platform down 30 s. Run with
/// `cargo test --test api platform_down_30s -- --ignored` (about 40 s per backend).
mod platform_down_30s {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "30 s outage; the 3 s variant runs always"]
    async fn sqlite() {
        platform_down_then_up(Backend::Sqlite, Duration::from_secs(30)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "30 s outage; the 3 s variant runs always"]
    async fn postgres() {
        platform_down_then_up(Backend::Postgres, Duration::from_secs(30)).await
    }
}

/// A slow platform sees at most `--relay-concurrency` requests at once, however many events
/// are due, and the relay reuses its connections (at most one per slot).
async fn deliveries_in_flight_never_exceed_the_bound(backend: Backend) {
    let (platform, url) = mock_platform(MockConfig {
        delay: Duration::from_millis(100),
        ..MockConfig::default()
    })
    .await;
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.data_platform_url = Some(url);
        s.relay = RelayMode::Off;
        s.relay_concurrency = 4;
    })
    .await
    else {
        return;
    };
    let product = app.product("Mug", 1_000, 100).await;
    pay_orders(&app, product, 40).await;
    assert_eq!(pass(&app.relay()).await, delivered(40));
    let stats = platform.stats();
    assert_eq!(stats.unique_events, 40, "{stats:?}");
    assert_eq!(
        stats.max_in_flight, 4,
        "40 due events, 4 slots: never more, and the slots were used: {stats:?}"
    );
    assert_eq!(stats.requests, 40, "one request per event: {stats:?}");
    assert!(
        stats.connections <= 4,
        "connections kept alive and reused: {stats:?}"
    );
    assert_eq!(event_ids_by_status(&app, "DELIVERED").await.len(), 40);
}

async fn a_platform_down_a_few_seconds_then_up_loses_nothing(backend: Backend) {
    platform_down_then_up(backend, Duration::from_secs(3)).await
}

/// The platform is up, then down (connections refused) for `down` while orders keep being
/// paid, then up again on the same address: every event arrives, none is DEAD, each order's
/// event under one id (redeliveries, if any, carry that same id).
///
/// Live on purpose: the background relay recovers by itself, on its own clock (it sleeps until
/// the next retry is due, is woken by recorded failures and new commits). It is the only test
/// of those timers, so it waits for them (bounded: 10 s, then 20 s, for a few hundred ms of
/// work).
async fn platform_down_then_up(backend: Backend, down: Duration) {
    let platform = MockPlatform::new(MockConfig {
        secret: Some(SECRET.into()),
        ..MockConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let up = CancellationToken::new();
    let serving = tokio::spawn(platform.clone().serve(listener, up.clone()));
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.data_platform_url = Some(format!("http://{addr}/events"));
        s.data_platform_secret = Some(SECRET.into());
        s.outbox_backoff_base = Duration::from_millis(50);
        s.outbox_backoff_max = Duration::from_secs(1);
        s.outbox_max_attempts = 10_000;
        s.outbox_sweep_interval = Duration::from_millis(200);
        s.relay_concurrency = 4;
    })
    .await
    else {
        return;
    };
    let product = app.product("Mug", 1_000, 1_000).await;
    let members = app.members_bulk(60).await;
    app.fund_bulk(&members, 100_000).await;
    let pay = async |members: &[(i64, String)]| -> Vec<i64> {
        let results = join_all(
            members
                .iter()
                .map(|(_, token)| app.order(token, &[(product, 1)], json!({}))),
        )
        .await;
        results
            .iter()
            .map(|(status, body)| {
                assert_eq!(*status, StatusCode::CREATED, "{body}");
                body["id"].as_i64().expect("order id")
            })
            .collect()
    };

    // Up: the first 20 arrive (and are recorded so).
    let mut orders = pay(&members[..20]).await;
    assert!(
        eventually(10, || async {
            event_ids_by_status(&app, "DELIVERED").await.len() == 20
        })
        .await,
        "{:?}",
        platform.stats()
    );
    assert_eq!(platform.stats().unique_events, 20);

    // Down: orders keep coming for the whole outage; their deliveries fail and back off.
    up.cancel();
    serving
        .await
        .expect("mock task")
        .expect("mock stopped cleanly");
    let went_down = std::time::Instant::now();
    for chunk in members[20..40].chunks(5) {
        orders.extend(pay(chunk).await);
        tokio::time::sleep(down / 5).await;
    }
    if let Some(rest) = down.checked_sub(went_down.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    assert_eq!(platform.stats().unique_events, 20, "nothing got through");
    let (_, page) = app
        .get("/admin/outbox?status=PENDING&limit=100", Some(ADMIN_TOKEN))
        .await;
    let waiting = page["items"].as_array().expect("items");
    assert_eq!(waiting.len(), 20, "{page}");
    assert!(
        waiting.iter().all(|e| e["attempts"].as_i64() >= Some(1)),
        "every waiting event was tried while the platform was down: {page}"
    );

    // Up again, same address; and more orders.
    let listener = shopd::mock_platform::bind(addr).expect("rebind the platform's address");
    tokio::spawn(platform.clone().serve(listener, CancellationToken::new()));
    orders.extend(pay(&members[40..]).await);
    // Recorded DELIVERED comes after the platform's answer: once all 60 are, no relay sends
    // any of them again, and the counts below are final.
    assert!(
        eventually(20, || async {
            event_ids_by_status(&app, "DELIVERED").await.len() == 60
        })
        .await,
        "{:?}",
        platform.stats()
    );
    assert_eq!(platform.stats().unique_events, 60);
    assert!(event_ids_by_status(&app, "DEAD").await.is_empty());
    assert!(event_ids_by_status(&app, "PENDING").await.is_empty());

    // Zero lost, and each order's event under exactly one id: the outbox's.
    let received = platform.events();
    let mut received_orders: Vec<i64> = received
        .iter()
        .map(|e| e["order"]["id"].as_i64().expect("order id"))
        .collect();
    received_orders.sort_unstable();
    orders.sort_unstable();
    assert_eq!(received_orders, orders, "every paid order's event, once");
    let mut received_ids: Vec<String> = received
        .iter()
        .map(|e| e["eventId"].as_str().expect("eventId").to_string())
        .collect();
    received_ids.sort();
    let mut delivered = event_ids_by_status(&app, "DELIVERED").await;
    delivered.sort();
    assert_eq!(received_ids, delivered);
    let stats = platform.stats();
    assert_eq!(
        stats.requests,
        stats.unique_events + stats.duplicates,
        "every request was a new event or a redelivery of an accepted id: {stats:?}"
    );
    assert_eq!((stats.bad_signatures, stats.malformed), (0, 0), "{stats:?}");
    assert_eq!(
        stats.by_type,
        BTreeMap::from([("ORDER_PAID".to_string(), 60)])
    );
    assert_invariants(&app).await;
}

/// `shopd mock-platform` counts distinct events by `shopd-event-type`, whatever the type
/// (the payload's `type` when the header is missing); redeliveries are not counted again.
#[tokio::test]
async fn the_mock_platform_counts_events_by_type() {
    let (platform, url) = mock_platform(MockConfig::default()).await;
    let client = reqwest::Client::new();
    let send = async |id: &str, header: Option<&str>, body_type: &str| {
        let mut request = client
            .post(&url)
            .header("shopd-event-id", id)
            .json(&json!({ "eventId": id, "type": body_type, "occurredAt": "2026-01-01T00:00:00.000000Z" }));
        if let Some(t) = header {
            request = request.header("shopd-event-type", t);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), StatusCode::OK);
    };
    send("a", Some("ORDER_PAID"), "ORDER_PAID").await;
    send("b", Some("ORDER_CANCELLED"), "ORDER_CANCELLED").await;
    send("c", Some("ORDER_CANCELLED"), "ORDER_CANCELLED").await;
    send("c", Some("ORDER_CANCELLED"), "ORDER_CANCELLED").await;
    send("d", Some("ORDER_SOMETHING_NEW"), "ORDER_SOMETHING_NEW").await;
    send("e", None, "ORDER_REFUNDED").await;
    let stats: Value = client
        .get(url.replace("/events", "/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(
        stats["byType"],
        json!({ "ORDER_CANCELLED": 2, "ORDER_PAID": 1, "ORDER_REFUNDED": 1, "ORDER_SOMETHING_NEW": 1 }),
        "{stats}"
    );
    assert_eq!(
        (stats["uniqueEvents"].as_u64(), stats["duplicates"].as_u64()),
        (Some(5), Some(1))
    );
    assert_eq!(stats["maxInFlight"].as_u64(), Some(1), "{stats}");
    assert_eq!(stats["inFlight"].as_u64(), Some(0), "{stats}");
    assert_eq!(stats["latencyMs"]["count"].as_u64(), Some(5), "{stats}");
    assert_eq!(platform.stats().by_type.len(), 4);
}

/// After a failed attempt the event is not retried before its backoff (base 2 s doubling,
/// jitter keeps at least half), and `nextAttemptAt` says when it will be. Passes at pinned
/// instants step over the backoff instead of sleeping: one just before `nextAttemptAt` takes
/// nothing, one just after retries it.
async fn a_failed_delivery_waits_out_its_backoff(backend: Backend) {
    let (platform, url) = mock_platform(MockConfig {
        fail_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.data_platform_url = Some(url);
        s.relay = RelayMode::Off;
        s.outbox_backoff_base = Duration::from_secs(2);
        s.outbox_backoff_max = Duration::from_secs(10);
    })
    .await
    else {
        return;
    };
    let product = app.product("Mug", 1_000, 100).await;
    pay_orders(&app, product, 1).await;
    let relay = app.relay();
    let pending = || async {
        let (_, page) = app
            .get("/admin/outbox?status=PENDING", Some(ADMIN_TOKEN))
            .await;
        let event = page["items"][0].clone();
        let next: chrono::DateTime<chrono::Utc> = event["nextAttemptAt"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("nextAttemptAt");
        (event, next)
    };
    let ms = chrono::Duration::milliseconds;
    let failed = DeliveryReport {
        claimed: 1,
        failed: 1,
        ..DeliveryReport::default()
    };

    // First failure: the retry is 1-2 s after it (half the base at least, the base at most).
    let before = now();
    assert_eq!(pass(&relay).await, failed);
    let after = now();
    let (event, next) = pending().await;
    assert_eq!(event["attempts"], 1, "{event}");
    assert!(
        next >= before + ms(1_000) && next <= after + ms(2_000),
        "the retry is scheduled between half the base and the base away: {event}"
    );

    // Not retried inside the backoff, even a millisecond before it ends.
    assert_eq!(pass(&relay).await, DeliveryReport::default());
    assert_eq!(
        pass_at(&relay, next - ms(1)).await,
        DeliveryReport::default()
    );
    assert_eq!(
        platform.stats().failed_on_purpose,
        1,
        "no retry inside the backoff"
    );

    // Retried once it is due; the next delay doubles (2-4 s from the second failure).
    let before = now();
    assert_eq!(pass_at(&relay, next + ms(1)).await, failed);
    let after = now();
    assert_eq!(platform.stats().failed_on_purpose, 2);
    let (event, second) = pending().await;
    assert_eq!(event["attempts"], 2, "{event}");
    assert!(
        second >= before + ms(2_000) && second <= after + ms(4_000),
        "the second retry waits twice as long: {event}"
    );
    assert_eq!(
        pass_at(&relay, second - ms(1)).await,
        DeliveryReport::default()
    );
    assert_eq!(platform.stats().failed_on_purpose, 2);
}

const SECRET: &str = "whsec_test";

/// Members with balance who each pay one order of `product`.
async fn pay_orders(app: &TestApp, product: i64, n: usize) -> Vec<i64> {
    let members = app.members_bulk(n).await;
    app.fund_bulk(&members, 100_000).await;
    let results = join_all(
        members
            .iter()
            .map(|(_, token)| app.order(token, &[(product, 1)], json!({}))),
    )
    .await;
    results
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::CREATED, "{body}");
            body["id"].as_i64().unwrap()
        })
        .collect()
}

async fn event_ids_by_status(app: &TestApp, status: &str) -> Vec<String> {
    let (code_, page) = app
        .get(
            &format!("/admin/outbox?status={status}&limit=100"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(code_, StatusCode::OK, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventId"].as_str().unwrap().to_string())
        .collect()
}

async fn paid_orders_are_delivered_signed(backend: Backend) {
    let (platform, url) = mock_platform(MockConfig {
        secret: Some(SECRET.into()),
        ..MockConfig::default()
    })
    .await;
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.data_platform_url = Some(url);
        s.data_platform_secret = Some(SECRET.into());
        s.relay = RelayMode::Off;
    })
    .await
    else {
        return;
    };
    let product = app.product("Mug", 1_000, 100).await;
    let orders = pay_orders(&app, product, 10).await;
    let relay = app.relay();
    assert_eq!(pass(&relay).await, delivered(10));
    let stats = platform.stats();
    assert_eq!(stats.unique_events, 10, "{stats:?}");
    assert_eq!((stats.bad_signatures, stats.malformed), (0, 0));

    // Each event is the order's ORDER_PAID payload, and the outbox knows it was delivered.
    let mut received: Vec<i64> = platform
        .events()
        .iter()
        .map(|e| e["order"]["id"].as_i64().unwrap())
        .collect();
    received.sort_unstable();
    let mut expected = orders.clone();
    expected.sort_unstable();
    assert_eq!(received, expected);
    let event: &Value = &platform.events()[0];
    assert_eq!(event["type"], "ORDER_PAID");
    assert_eq!(event["order"]["status"], "PAID");
    let ids: Vec<String> = platform
        .events()
        .iter()
        .map(|e| e["eventId"].as_str().unwrap().to_string())
        .collect();
    let delivered_ids = event_ids_by_status(&app, "DELIVERED").await;
    assert_eq!(delivered_ids.len(), 10);
    assert!(ids.iter().all(|id| delivered_ids.contains(id)));
    // Delivered events are never sent again, however late the next pass.
    let tomorrow = now() + chrono::Duration::days(1);
    assert_eq!(pass_at(&relay, tomorrow).await, DeliveryReport::default());
    assert_eq!(platform.stats().requests, 10);
    assert_invariants(&app).await;
}

async fn a_flaky_platform_loses_nothing(backend: Backend) {
    let (platform, url) = mock_platform(MockConfig {
        secret: Some(SECRET.into()),
        fail_rate: 0.5,
        ..MockConfig::default()
    })
    .await;
    let backoff_max = Duration::from_millis(100);
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.data_platform_url = Some(url);
        s.data_platform_secret = Some(SECRET.into());
        s.relay = RelayMode::Off;
        s.outbox_backoff_base = Duration::from_millis(10);
        s.outbox_backoff_max = backoff_max;
        s.outbox_max_attempts = 60;
    })
    .await
    else {
        return;
    };
    let product = app.product("Mug", 1_000, 100).await;
    pay_orders(&app, product, 20).await;
    // Passes one longest backoff ahead of the clock: every event that failed is due again, so
    // each pass attempts each undelivered event once, until none is left.
    let relay = app.relay();
    let ahead = chrono::Duration::from_std(backoff_max).unwrap();
    let mut total = DeliveryReport::default();
    let mut passes = 0;
    loop {
        let report = pass_at(&relay, now() + ahead).await;
        if report.claimed == 0 {
            break;
        }
        passes += 1;
        assert!(
            passes <= 60,
            "at most one pass per allowed attempt: {total:?}"
        );
        assert_eq!(report.unsent, 0, "{report:?}");
        total.claimed += report.claimed;
        total.delivered += report.delivered;
        total.failed += report.failed;
        total.dead += report.dead;
    }
    assert_eq!((total.delivered, total.dead), (20, 0), "{total:?}");
    let stats = platform.stats();
    assert_eq!(stats.unique_events, 20, "{stats:?}");
    assert!(
        stats.failed_on_purpose > 0,
        "the platform did fail sometimes"
    );
    assert_eq!(
        stats.failed_on_purpose as usize, total.failed,
        "every failure was recorded and retried: {stats:?}"
    );
    assert_eq!(
        (stats.duplicates, stats.requests),
        (0, stats.unique_events + stats.failed_on_purpose),
        "no event sent again once delivered: {stats:?}"
    );
    assert_eq!(event_ids_by_status(&app, "DELIVERED").await.len(), 20);
    assert!(event_ids_by_status(&app, "DEAD").await.is_empty());
    assert!(event_ids_by_status(&app, "PENDING").await.is_empty());
}

async fn a_dead_platform_leads_to_dead_events_that_can_be_replayed(backend: Backend) {
    let (platform, url) = mock_platform(MockConfig {
        fail_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.data_platform_url = Some(url);
        s.relay = RelayMode::Off;
        s.outbox_backoff_base = Duration::from_millis(20);
        s.outbox_backoff_max = Duration::from_millis(200);
        s.outbox_max_attempts = 4;
    })
    .await
    else {
        return;
    };
    let product = app.product("Mug", 1_000, 100).await;
    pay_orders(&app, product, 3).await;
    // Each pass one longest backoff ahead of the clock: every failed event is due again.
    let relay = app.relay();
    let ahead = || now() + chrono::Duration::milliseconds(200);
    for attempt in 1..=4 {
        let expected = DeliveryReport {
            claimed: 3,
            failed: if attempt < 4 { 3 } else { 0 },
            dead: if attempt < 4 { 0 } else { 3 },
            ..DeliveryReport::default()
        };
        assert_eq!(
            pass_at(&relay, ahead()).await,
            expected,
            "attempt {attempt}"
        );
    }
    // DEAD events are never claimed again, however late.
    let tomorrow = now() + chrono::Duration::days(1);
    assert_eq!(pass_at(&relay, tomorrow).await, DeliveryReport::default());
    assert_eq!(event_ids_by_status(&app, "DEAD").await.len(), 3);
    let (_, dead) = app
        .get("/admin/outbox?status=DEAD", Some(ADMIN_TOKEN))
        .await;
    for event in dead["items"].as_array().unwrap() {
        assert_eq!(event["attempts"], 4, "{event}");
        assert_eq!(event["lastError"], "HTTP 503 Service Unavailable");
    }
    assert_eq!(
        platform.stats().failed_on_purpose,
        12,
        "exactly max attempts per event, no more"
    );

    // The platform recovers; an operator replays the dead letters.
    platform.set_fail_rate(0.0);
    for id in event_ids_by_status(&app, "DEAD").await {
        let (status, event) = app
            .post(
                &format!("/admin/outbox/{id}/retry"),
                Some(ADMIN_TOKEN),
                json!(null),
            )
            .await;
        assert_eq!(
            (status, event["status"].as_str(), event["attempts"].as_i64()),
            (StatusCode::OK, Some("PENDING"), Some(0))
        );
    }
    // Replayed events are due at once.
    assert_eq!(pass(&relay).await, delivered(3));
    assert_eq!(platform.stats().unique_events, 3, "{:?}", platform.stats());
    let delivered = event_ids_by_status(&app, "DELIVERED").await;
    assert_eq!(delivered.len(), 3);
    let (status, err) = app
        .post(
            &format!("/admin/outbox/{}/retry", delivered[0]),
            Some(ADMIN_TOKEN),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "OUTBOX_EVENT_DELIVERED")
    );
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
    let (status, err) = app
        .get("/admin/outbox?status=LOST", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(
        (status, code(&err), err["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR", Some("status")),
        "{err}"
    );
    let (_, member) = app.post("/users", None, json!({ "name": "m" })).await;
    let (status, _) = app.get("/admin/outbox", member["token"].as_str()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Live on purpose: a real `shopd serve` is SIGKILLed with deliveries in flight, and the
/// restarted one's background relay must find them by itself, when their leases run out (the
/// sweep, SPEC §10). So it waits twice: for the first life to have the deliveries in flight,
/// and for the second to have delivered them (bounded: 10 s and 15 s, for a 3 s lease).
/// `a_lease_keeps_an_event_from_other_relays_until_it_runs_out` checks the lease itself
/// without waiting.
async fn events_committed_before_a_crash_are_delivered_after_restart(backend: Backend) {
    // First life: a child `shopd serve` whose platform hangs, so the paid orders' events are
    // committed and claimed (leased, in flight) when the process is SIGKILLed.
    let (hanging, hanging_url) = mock_platform(MockConfig {
        delay: Duration::from_secs(60),
        ..MockConfig::default()
    })
    .await;
    let scratch = tempfile::tempdir().expect("temp dir");
    let Some((url, pg)) = scratch_database(backend, scratch.path()).await else {
        return;
    };
    let mut server = start_with(
        &url,
        &[
            "--data-platform-url",
            &hanging_url,
            // The claim's lease is 3 x the timeout: the restart re-claims within seconds.
            "--data-platform-timeout",
            "1s",
            "--outbox-backoff-base",
            "100ms",
        ],
    )
    .await;
    let db = Db::connect(&url, &DbOptions::default()).await.expect("db");
    let mut settings = Settings::for_database(url.clone());
    settings.admin_token = vec![ADMIN_TOKEN.to_string()];
    let app = TestApp::external(server.address.clone(), db.clone(), settings.clone());
    let product = app.product("Mug", 1_000, 100).await;
    let orders = pay_orders(&app, product, 5).await;
    assert!(
        eventually(10, || async { hanging.stats().requests >= 5 }).await,
        "the first life attempted every delivery: {:?}",
        hanging.stats()
    );
    server.child.start_kill().expect("SIGKILL");
    let _ = server.child.wait().await;
    assert_eq!(hanging.stats().unique_events, 0, "nothing was delivered");
    let mut conn = db.read().await.expect("read");
    let pending: i64 = sql_scalar!(
        &mut conn,
        "SELECT COUNT(*) FROM outbox_events WHERE status = 'PENDING'"
    )
    .expect("pending");
    assert_eq!(pending, 5, "the events outlived the crash, undelivered");
    drop(conn);

    // Second life on the same database, with a working platform: it delivers them all, once.
    let (platform, platform_url) = mock_platform(MockConfig::default()).await;
    let server = start_with(
        &url,
        &[
            "--data-platform-url",
            &platform_url,
            "--outbox-sweep-interval",
            "200ms",
        ],
    )
    .await;
    let restarted = TestApp::external(server.address.clone(), db.clone(), settings);
    assert!(
        eventually(15, || async {
            event_ids_by_status(&restarted, "DELIVERED").await.len() == 5
        })
        .await,
        "{:?}",
        platform.stats()
    );
    assert_eq!(platform.stats().unique_events, 5);
    let mut received: Vec<i64> = platform
        .events()
        .iter()
        .map(|e| e["order"]["id"].as_i64().unwrap())
        .collect();
    received.sort_unstable();
    let mut expected = orders;
    expected.sort_unstable();
    assert_eq!(received, expected);
    assert_eq!(platform.stats().duplicates, 0, "{:?}", platform.stats());
    assert_invariants(&restarted).await;
    drop(server);
    db.close().await;
    drop_scratch_database(pg).await;
}

/// The normal path has no claim: an event committed by this process is handed to its relay
/// in memory and sent at once. (A child process, so that its metrics are its own.)
///
/// Live on purpose: the hand-off is the background relay's; a test-driven pass only claims. It
/// waits for the five deliveries (bounded: 10 s; they take milliseconds).
async fn committed_events_are_handed_over_without_a_claim(backend: Backend) {
    let (platform, platform_url) = mock_platform(MockConfig::default()).await;
    let scratch = tempfile::tempdir().expect("temp dir");
    let Some((url, pg)) = scratch_database(backend, scratch.path()).await else {
        return;
    };
    let server = start_with(
        &url,
        &[
            "--data-platform-url",
            &platform_url,
            // A lease of three minutes, and no sweep for an hour: a claim could not take these
            // events before the lease ran out, so a prompt delivery is the hand-off's.
            "--data-platform-timeout",
            "60s",
            "--outbox-sweep-interval",
            "1h",
        ],
    )
    .await;
    let db = Db::connect(&url, &DbOptions::default()).await.expect("db");
    let mut settings = Settings::for_database(url.clone());
    settings.admin_token = vec![ADMIN_TOKEN.to_string()];
    let app = TestApp::external(server.address.clone(), db.clone(), settings);
    let product = app.product("Mug", 1_000, 100).await;
    let orders = pay_orders(&app, product, 5).await;
    // Recorded DELIVERED comes after the platform's answer and the metrics' counts.
    assert!(
        eventually(10, || async {
            event_ids_by_status(&app, "DELIVERED").await.len() == 5
        })
        .await,
        "{:?}",
        platform.stats()
    );
    assert_eq!(platform.stats().unique_events, 5);
    let mut received: Vec<i64> = platform
        .events()
        .iter()
        .map(|e| e["order"]["id"].as_i64().unwrap())
        .collect();
    received.sort_unstable();
    let mut expected = orders;
    expected.sort_unstable();
    assert_eq!(received, expected);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let taken = |source| {
        crate::members::series(&metrics, "outbox_events_taken_total", &[("source", source)])
    };
    assert_eq!(taken("handoff"), 5.0, "{metrics}");
    assert_eq!(taken("claim"), 0.0, "no event was claimed: {metrics}");
    assert_eq!(platform.stats().duplicates, 0, "{:?}", platform.stats());
    assert_invariants(&app).await;
    drop(server);
    db.close().await;
    drop_scratch_database(pg).await;
}

/// Live on purpose: two instances' background relays at once, each handed its own instance's
/// events at commit and claiming whatever else is due, must never both send one event.
/// `two_relays_racing_deliver_every_event_once` races claims without waiting; this one waits
/// for the live relays (bounded: 15 s, for a second of deliveries).
async fn two_instances_deliver_every_event(backend: Backend) {
    // A slow platform (but well within the delivery timeout, so no lease expires): deliveries of
    // both instances overlap, and an event claimed by both would reach it twice.
    let (platform, url) = mock_platform(MockConfig {
        delay: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .await;
    let Some(first) = TestApp::spawn_with(backend, |s| {
        s.data_platform_url = Some(url);
        s.outbox_sweep_interval = Duration::from_millis(20);
    })
    .await
    else {
        return;
    };
    // On PostgreSQL the second instance has its own pool and committer, so the two relays race
    // for claims. On SQLite the harness shares one `Db` handle (one committer), so claims are
    // serialised by it: there this checks two relays over one database, not a race of pools.
    let second = first.second_instance().await;
    let product = first.product("Mug", 1_000, 1_000).await;
    let members = first.members_bulk(40).await;
    first.fund_bulk(&members, 100_000).await;
    let results = join_all(members.iter().enumerate().map(|(i, (_, token))| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.order(token, &[(product, 1)], json!({}))
    }))
    .await;
    assert!(results.iter().all(|(s, _)| *s == StatusCode::CREATED));
    // Once all are recorded DELIVERED no relay can claim any again: the counts are final.
    assert!(
        eventually(15, || async {
            event_ids_by_status(&first, "DELIVERED").await.len() == 40
        })
        .await,
        "{:?}",
        platform.stats()
    );
    let stats = platform.stats();
    assert_eq!(stats.unique_events, 40, "{stats:?}");
    assert_eq!(stats.duplicates, 0, "no event sent twice: {stats:?}");
    assert_eq!(
        stats.requests, stats.unique_events,
        "one request per event: {stats:?}"
    );
    assert_invariants(&first).await;
}

async fn any_2xx_is_delivered_and_requests_name_the_event(backend: Backend) {
    // A receiver that answers 202 Accepted and records the headers of each request.
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;
    let seen: Seen = Default::default();
    async fn receive(
        axum::extract::State(seen): axum::extract::State<Seen>,
        headers: axum::http::HeaderMap,
        body: String,
    ) -> axum::http::StatusCode {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("<missing>")
                .to_string()
        };
        seen.lock()
            .unwrap()
            .push((header("shopd-event-id"), header("shopd-event-type"), body));
        axum::http::StatusCode::ACCEPTED
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/events", axum::routing::post(receive))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.data_platform_url = Some(url);
        s.relay = RelayMode::Off;
    })
    .await
    else {
        return;
    };
    let product = app.product("Mug", 1_000, 100).await;
    pay_orders(&app, product, 3).await;
    let relay = app.relay();
    assert_eq!(pass(&relay).await, delivered(3), "202 counts as delivered");
    // A 202 taken for a failure would be due again within the backoff maximum (5 min).
    let tomorrow = now() + chrono::Duration::days(1);
    assert_eq!(pass_at(&relay, tomorrow).await, DeliveryReport::default());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        3,
        "one request per event, no retry of a 202: {seen:?}"
    );
    let mut delivered_ids = event_ids_by_status(&app, "DELIVERED").await;
    delivered_ids.sort();
    let mut ids: Vec<String> = seen.iter().map(|(id, _, _)| id.clone()).collect();
    ids.sort();
    assert_eq!(ids, delivered_ids, "shopd-event-id names the event");
    for (id, event_type, body) in &seen {
        assert_eq!(event_type, "ORDER_PAID", "shopd-event-type");
        let payload: Value = serde_json::from_str(body).unwrap();
        assert_eq!(payload["eventId"].as_str(), Some(id.as_str()));
        assert_eq!(payload["type"], "ORDER_PAID");
        // SPEC §10 payload fields, present even without a coupon.
        assert_eq!(payload["order"]["discount"], 0, "{payload}");
        assert_eq!(payload["order"]["subtotal"], 1_000, "{payload}");
        assert_eq!(payload["order"]["total"], 1_000, "{payload}");
    }
}

/// An event another relay claimed (and never answered for: it died, say) is leased to it: no
/// other relay takes it while the lease runs, not even a millisecond before it ends, and the
/// first pass after it ended delivers it, once. Passes at pinned instants instead of waiting.
async fn a_lease_keeps_an_event_from_other_relays_until_it_runs_out(backend: Backend) {
    let (platform, url) = mock_platform(MockConfig::default()).await;
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.data_platform_url = Some(url);
        s.relay = RelayMode::Off;
    })
    .await
    else {
        return;
    };
    let product = app.product("Mug", 1_000, 100).await;
    pay_orders(&app, product, 3).await;
    // The other relay's claim, exactly as the relay makes it, with a 30 s lease.
    let lease_until = now() + chrono::Duration::seconds(30);
    let taken = app
        .db
        .write(Locks::none(), async move |tx: &mut Tx| {
            outbox::claim_due(tx, now(), lease_until, 100).await
        })
        .await
        .expect("claim");
    assert_eq!(taken.len(), 3);

    let relay = app.relay();
    assert_eq!(pass(&relay).await, DeliveryReport::default(), "leased");
    let just_before = lease_until - chrono::Duration::milliseconds(1);
    assert_eq!(
        pass_at(&relay, just_before).await,
        DeliveryReport::default(),
        "leased until the lease runs out"
    );
    assert_eq!(platform.stats().requests, 0);
    assert_eq!(event_ids_by_status(&app, "PENDING").await.len(), 3);

    assert_eq!(
        pass_at(&relay, lease_until).await,
        delivered(3),
        "re-claimed"
    );
    let stats = platform.stats();
    assert_eq!((stats.unique_events, stats.requests), (3, 3), "{stats:?}");
    assert_eq!(event_ids_by_status(&app, "DELIVERED").await.len(), 3);
    assert_invariants(&app).await;
}

/// Two instances' relays run passes at the same moment over one database, round after round
/// while orders come in on both: each event is claimed by one of them, sent once and recorded
/// once. (On SQLite the harness's instances share one committer, which serialises the claims.)
async fn two_relays_racing_deliver_every_event_once(backend: Backend) {
    // Slow enough that one relay's deliveries are in flight while the other claims.
    let (platform, url) = mock_platform(MockConfig {
        delay: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await;
    let Some(first) = TestApp::spawn_with(backend, |s| {
        s.data_platform_url = Some(url);
        s.relay = RelayMode::Off;
        s.relay_concurrency = 4;
    })
    .await
    else {
        return;
    };
    let second = first.second_instance().await;
    let relays = [first.relay(), second.relay()];
    let product = first.product("Mug", 1_000, 1_000).await;
    let members = first.members_bulk(40).await;
    first.fund_bulk(&members, 100_000).await;
    let mut total = DeliveryReport::default();
    for round in members.chunks(10) {
        let results = join_all(round.iter().enumerate().map(|(i, (_, token))| {
            let app = if i % 2 == 0 { &first } else { &second };
            app.order(token, &[(product, 1)], json!({}))
        }))
        .await;
        assert!(results.iter().all(|(s, _)| *s == StatusCode::CREATED));
        let (a, b) = futures::join!(pass(&relays[0]), pass(&relays[1]));
        assert_eq!(
            a.claimed + b.claimed,
            10,
            "each event claimed once: {a:?} {b:?}"
        );
        for report in [a, b] {
            total.claimed += report.claimed;
            total.delivered += report.delivered;
        }
    }
    assert_eq!(total, delivered(40));
    let stats = platform.stats();
    assert_eq!(stats.unique_events, 40, "{stats:?}");
    assert_eq!(stats.duplicates, 0, "no event sent twice: {stats:?}");
    assert_eq!(
        stats.requests, stats.unique_events,
        "one request per event: {stats:?}"
    );
    assert_eq!(event_ids_by_status(&first, "DELIVERED").await.len(), 40);
    assert_invariants(&first).await;
}

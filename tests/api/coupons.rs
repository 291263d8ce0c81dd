//! Coupon campaigns, first-come-first-served issuance, a member's coupons.

use chrono::{Duration, Utc};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, code};
use crate::invariants::assert_invariants;
use crate::on_both_backends;

on_both_backends!(
    invalid_campaigns_are_rejected,
    open_campaigns_are_listed_with_remaining_quantity,
    issue_and_list_member_coupons,
    issue_window_edges_and_rejections,
    expired_coupons_are_listed_as_expired,
    thousand_members_race_for_a_hundred_coupons,
    one_member_racing_gets_exactly_one,
    two_instances_never_over_issue,
);

fn campaign_body(overrides: Value) -> Value {
    let mut body = json!({
        "name": "Welcome",
        "discount": { "type": "PERCENT", "value": 10, "maxAmount": 5000 },
        "minOrderAmount": 10000,
        "totalQuantity": 100,
        "issueStartsAt": Utc::now() - Duration::minutes(1),
        "issueEndsAt": Utc::now() + Duration::days(1),
        "validDays": 7,
    });
    for (k, v) in overrides.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn invalid_campaigns_are_rejected(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let cases = [
        (json!({ "totalQuantity": 0 }), "totalQuantity"),
        (json!({ "totalQuantity": -5 }), "totalQuantity"),
        (json!({ "minOrderAmount": -1 }), "minOrderAmount"),
        (json!({ "validDays": 0 }), "validDays"),
        (
            json!({ "discount": { "type": "PERCENT", "value": 101 } }),
            "discount.value",
        ),
        (
            json!({ "discount": { "type": "PERCENT", "value": 10, "maxAmount": -1 } }),
            "discount.maxAmount",
        ),
        (
            json!({ "discount": { "type": "FIXED", "value": -100 } }),
            "discount.value",
        ),
        (
            json!({ "discount": { "type": "BOGO", "value": 1 } }),
            "discount.type",
        ),
        (
            json!({ "issueEndsAt": Utc::now() - Duration::days(2) }),
            "issueEndsAt",
        ),
        (json!({ "issueEndsAt": "tomorrow" }), "issueEndsAt"),
        (json!({ "name": "" }), "name"),
    ];
    for (overrides, field) in cases {
        let body = campaign_body(overrides.clone());
        let (status, err) = app.post("/admin/coupons", Some(ADMIN_TOKEN), body).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
            "{overrides} -> {err}"
        );
        assert_eq!(err["details"]["field"], field, "{overrides} -> {err}");
    }
    let (_, member) = app.post("/users", None, json!({ "name": "m" })).await;
    let (status, _) = app
        .post(
            "/admin/coupons",
            member["token"].as_str(),
            campaign_body(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, list) = app.get("/coupons", None).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
}

async fn open_campaigns_are_listed_with_remaining_quantity(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (status, open) = app
        .post(
            "/admin/coupons",
            Some(ADMIN_TOKEN),
            campaign_body(json!({ "totalQuantity": 2 })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{open}");
    assert_eq!(
        open["discount"],
        json!({ "type": "PERCENT", "value": 10, "maxAmount": 5000 })
    );
    let open_id = open["id"].as_i64().unwrap();
    let future = json!({ "issueStartsAt": Utc::now() + Duration::hours(1), "issueEndsAt": Utc::now() + Duration::hours(2) });
    let (status, _) = app
        .post("/admin/coupons", Some(ADMIN_TOKEN), campaign_body(future))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (_, token) = app.member("kim").await;
    assert_eq!(app.issue(open_id, &token).await.0, StatusCode::CREATED);
    let (status, list) = app.get("/coupons", None).await;
    assert_eq!(status, StatusCode::OK);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "only the open campaign: {list}");
    assert_eq!(
        (
            items[0]["id"].as_i64(),
            items[0]["remainingQuantity"].as_i64()
        ),
        (Some(open_id), Some(1))
    );
    let (status, one) = app.get(&format!("/coupons/{open_id}"), None).await;
    assert_eq!(
        (status, one["totalQuantity"].as_i64()),
        (StatusCode::OK, Some(2))
    );
    let (status, err) = app.get("/coupons/999", None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "COUPON_NOT_FOUND")
    );
}

async fn issue_and_list_member_coupons(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let coupon = app
        .campaign(json!({ "type": "FIXED", "value": 3000 }), 0, 10)
        .await;
    let (id, token) = app.member("kim").await;
    let (other, other_token) = app.member("lee").await;
    let (status, issued) = app.issue(coupon, &token).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    assert_eq!(
        (issued["couponId"].as_i64(), issued["status"].as_str()),
        (Some(coupon), Some("AVAILABLE"))
    );
    assert!(issued["userCouponId"].as_i64().is_some());
    assert!(issued.get("usedAt").is_none() && issued.get("orderId").is_none());
    // expiresAt = issuedAt + validDays (the campaign's 7).
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(issued[field].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{field}: {e} in {issued}"))
    };
    assert_eq!(
        at("expiresAt") - at("issuedAt"),
        chrono::Duration::days(7),
        "{issued}"
    );

    let (status, err) = app.issue(coupon, &token).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "COUPON_ALREADY_ISSUED")
    );

    let (status, mine) = app.get(&format!("/users/{id}/coupons"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        mine["items"][0]["discount"],
        json!({ "type": "FIXED", "value": 3000 })
    );
    for status in ["USED", "EXPIRED"] {
        let (_, list) = app
            .get(
                &format!("/users/{id}/coupons?status={status}"),
                Some(&token),
            )
            .await;
        assert_eq!(list["items"].as_array().unwrap().len(), 0, "{status}");
    }
    let (_, all) = app
        .get(&format!("/users/{id}/coupons?status=ALL"), Some(&token))
        .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    let (status, err) = app
        .get(&format!("/users/{id}/coupons?status=LOST"), Some(&token))
        .await;
    assert_eq!(
        (status, code(&err), err["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR", Some("status")),
        "{err}"
    );
    let (status, _) = app
        .get(&format!("/users/{other}/coupons"), Some(&token))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, theirs) = app
        .get(&format!("/users/{other}/coupons"), Some(&other_token))
        .await;
    assert_eq!(theirs["items"].as_array().unwrap().len(), 0);

    // Idempotent claim: a retry with the same key replays the 201.
    let second = app
        .campaign(json!({ "type": "FIXED", "value": 1000 }), 0, 10)
        .await;
    let path = format!("/coupons/{second}/issue");
    let first = app
        .request(
            reqwest::Method::POST,
            &path,
            Some(&other_token),
            None,
            Some("claim-1"),
        )
        .await;
    let again = app
        .request(
            reqwest::Method::POST,
            &path,
            Some(&other_token),
            None,
            Some("claim-1"),
        )
        .await;
    assert_eq!(first.0, StatusCode::CREATED);
    assert_eq!(first, again);
    assert_invariants(&app).await;
}

async fn issue_window_edges_and_rejections(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (_, token) = app.member("kim").await;
    let not_yet = json!({ "issueStartsAt": Utc::now() + Duration::hours(1), "issueEndsAt": Utc::now() + Duration::hours(2) });
    let (_, not_yet) = app
        .post("/admin/coupons", Some(ADMIN_TOKEN), campaign_body(not_yet))
        .await;
    let ended = json!({ "issueStartsAt": Utc::now() - Duration::hours(2), "issueEndsAt": Utc::now() - Duration::seconds(1) });
    let (status, ended) = app
        .post("/admin/coupons", Some(ADMIN_TOKEN), campaign_body(ended))
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a campaign may be recorded after its window"
    );
    for campaign in [&not_yet, &ended] {
        let (status, err) = app.issue(campaign["id"].as_i64().unwrap(), &token).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::CONFLICT, "COUPON_NOT_ISSUABLE"),
            "{campaign}"
        );
    }
    let (status, err) = app.issue(424242, &token).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "COUPON_NOT_FOUND")
    );
    let single = app
        .campaign(json!({ "type": "FIXED", "value": 1000 }), 0, 1)
        .await;
    assert_eq!(app.issue(single, &token).await.0, StatusCode::CREATED);
    let (_, late) = app.member("late").await;
    let (status, err) = app.issue(single, &late).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "COUPON_SOLD_OUT")
    );
    let (status, err) = app.issue(single, ADMIN_TOKEN).await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (status, _) = app
        .request(
            reqwest::Method::POST,
            &format!("/coupons/{single}/issue"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_invariants(&app).await;
}

async fn expired_coupons_are_listed_as_expired(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let coupon = app
        .campaign(json!({ "type": "FIXED", "value": 1000 }), 0, 10)
        .await;
    let (id, token) = app.member("kim").await;
    let (_, issued) = app.issue(coupon, &token).await;
    let user_coupon = issued["userCouponId"].as_i64().unwrap();
    // Time travel: the coupon's validity ended a second ago.
    let mut tx = app.db.begin().await.unwrap();
    let past = shopd::store::now() - Duration::seconds(1);
    shopd::sql_execute!(
        &mut tx,
        "UPDATE user_coupons SET expires_at = $1 WHERE id = $2",
        past,
        user_coupon
    )
    .unwrap();
    tx.commit().await.unwrap();

    let (_, available) = app.get(&format!("/users/{id}/coupons"), Some(&token)).await;
    assert_eq!(available["items"].as_array().unwrap().len(), 0);
    let (_, expired) = app
        .get(&format!("/users/{id}/coupons?status=EXPIRED"), Some(&token))
        .await;
    assert_eq!(expired["items"][0]["status"], "EXPIRED");
    assert_eq!(expired["items"][0]["userCouponId"], user_coupon);
}

async fn thousand_members_race_for_a_hundred_coupons(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let coupon = app
        .campaign(json!({ "type": "FIXED", "value": 1000 }), 0, 100)
        .await;
    let members = app.members_bulk(1_000).await;
    let results = join_all(members.iter().map(|(_, token)| app.issue(coupon, token))).await;
    let issued = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let sold_out = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && code(b) == "COUPON_SOLD_OUT")
        .count();
    assert_eq!(
        (issued, sold_out),
        (100, 900),
        "{:?}",
        results.iter().find(|(s, _)| s.is_server_error())
    );
    let (_, campaign) = app.get(&format!("/coupons/{coupon}"), None).await;
    assert_eq!(campaign["remainingQuantity"], 0);
    assert_invariants(&app).await;
}

async fn one_member_racing_gets_exactly_one(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let coupon = app
        .campaign(json!({ "type": "FIXED", "value": 1000 }), 0, 100)
        .await;
    let (id, token) = app.member("eager").await;
    let results = join_all((0..50).map(|_| app.issue(coupon, &token))).await;
    let issued = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let already = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && code(b) == "COUPON_ALREADY_ISSUED")
        .count();
    assert_eq!((issued, already), (1, 49), "{results:?}");
    let (_, mine) = app
        .get(&format!("/users/{id}/coupons?status=ALL"), Some(&token))
        .await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    let (_, campaign) = app.get(&format!("/coupons/{coupon}"), None).await;
    assert_eq!(
        campaign["remainingQuantity"], 99,
        "rolled-back claims gave their increment back"
    );
    assert_invariants(&app).await;
}

async fn two_instances_never_over_issue(backend: Backend) {
    let Some(first) = TestApp::spawn(backend).await else {
        return;
    };
    let second = first.second_instance().await;
    let coupon = first
        .campaign(json!({ "type": "FIXED", "value": 1000 }), 0, 100)
        .await;
    let members = first.members_bulk(400).await;
    // Every member fires twice, once at each instance.
    let results = join_all(
        members
            .iter()
            .flat_map(|(_, token)| [first.issue(coupon, token), second.issue(coupon, token)]),
    )
    .await;
    assert!(results.iter().all(|(s, _)| !s.is_server_error()), "no 500s");
    let issued = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(issued, 100);
    for (_, body) in results.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert!(
            ["COUPON_SOLD_OUT", "COUPON_ALREADY_ISSUED"].contains(&code(body)),
            "{body}"
        );
    }
    assert_invariants(&first).await;
}

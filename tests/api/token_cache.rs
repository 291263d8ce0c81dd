//! Member tokens are cached per instance, but a rotation or revocation in the database
//! (which bumps `token_epoch`) stops the old token on every instance within a second.

use std::time::Duration;

use reqwest::StatusCode;
use shopd::db::{Locks, Tx};
use shopd::error::AppError;
use shopd::sql_execute;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(a_revoked_token_stops_on_every_instance_within_a_second);

async fn a_revoked_token_stops_on_every_instance_within_a_second(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let other = app.second_instance().await;
    let (user_id, token) = app.member("Ann").await;
    let balance = format!("/users/{user_id}/balance");
    // Both instances have seen (and cached) the token.
    for instance in [&app, &other] {
        let (status, _) = instance.get(&balance, Some(&token)).await;
        assert_eq!(status, StatusCode::OK);
    }
    // Revoke it in the database, as a rotation does, and bump the epoch in the same transaction.
    app.db
        .write(Locks::user(user_id), async move |tx: &mut Tx| {
            sql_execute!(
                tx,
                "UPDATE users SET token_hash = $1 WHERE id = $2",
                "revoked",
                user_id
            )?;
            shopd::store::users::bump_token_epoch(tx).await?;
            Ok::<_, AppError>(())
        })
        .await
        .expect("revoke");
    tokio::time::sleep(shopd::state::MemberTokenCache::RECHECK + Duration::from_millis(100)).await;
    for instance in [&app, &other] {
        let (status, body) = instance.get(&balance, Some(&token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    // A new member's token works at once (only found tokens are cached).
    let (new_id, new_token) = other.member("Bob").await;
    let (status, _) = app
        .get(&format!("/users/{new_id}/balance"), Some(&new_token))
        .await;
    assert_eq!(status, StatusCode::OK);
}

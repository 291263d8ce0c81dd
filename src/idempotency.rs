//! Idempotency keys (SPEC §7), reusable by every endpoint that moves money, stock or coupons.
//!
//! Protocol, per `(caller, key)`:
//! 1. A short transaction claims the key (`IN_PROGRESS`, with a lease). If it already exists:
//!    a different request fingerprint → `422 IDEMPOTENCY_KEY_REUSED`; finished → the stored
//!    response is replayed; still running → `409 IDEMPOTENCY_IN_PROGRESS`; lease expired (the
//!    holder crashed) → taken over.
//! 2. The operation runs in its own transaction, and the final response is written to the key
//!    **in that same transaction**, so the effect and its recorded answer commit together.
//! 3. A rejection (4xx) rolls the operation back and is stored as the key's answer; an
//!    unexpected failure (5xx) releases the key so a retry runs again.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::app::AppState;
use crate::auth::Principal;
use crate::db::Tx;
use crate::error::{AppError, AppResult};
use crate::store::{self, idempotency as keys};

/// Header set on replayed responses.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A response that can be stored and replayed: status plus JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    pub fn json<T: Serialize>(status: StatusCode, body: &T) -> AppResult<Self> {
        let body = serde_json::to_value(body).map_err(anyhow::Error::from)?;
        Ok(Reply { status, body })
    }

    /// An error answer whose transaction still commits (e.g. a recorded FAILED payment).
    pub fn error(err: &AppError) -> AppResult<Self> {
        Reply::json(err.status(), &err.body())
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// The operation: runs inside a transaction that commits if it returns `Ok`.
pub type Operation<'a> = Box<
    dyn for<'t> FnOnce(&'t mut Tx) -> Pin<Box<dyn Future<Output = AppResult<Reply>> + Send + 't>>
        + Send
        + 'a,
>;

/// Run `op` at most once per `(caller, key)`; without a key it simply runs in a transaction.
pub async fn run(
    state: &AppState,
    caller: Principal,
    key: Option<String>,
    fingerprint: &str,
    op: Operation<'_>,
) -> AppResult<Response> {
    let Some(key) = key else {
        let mut tx = state.db.begin().await?;
        let reply = op(&mut tx).await?;
        tx.commit().await?;
        return Ok(reply.into_response());
    };
    let scope = caller.scope();
    let lease = lease_for(state.settings.request_timeout);

    if let Some(answer) = claim(state, &scope, &key, fingerprint, lease).await? {
        return Ok(answer);
    }

    let mut tx = state.db.begin().await?;
    match op(&mut tx).await {
        Ok(reply) => {
            keys::complete(
                &mut tx,
                &scope,
                &key,
                reply.status.as_u16(),
                &reply.body.to_string(),
            )
            .await?;
            tx.commit().await?;
            Ok(reply.into_response())
        }
        Err(err) => {
            drop(tx); // roll the operation back first
            let mut tx = state.db.begin().await?;
            if err.status().is_server_error() {
                keys::release(&mut tx, &scope, &key).await?;
            } else {
                let body = serde_json::to_string(&err.body()).map_err(anyhow::Error::from)?;
                keys::complete(&mut tx, &scope, &key, err.status().as_u16(), &body).await?;
            }
            tx.commit().await?;
            Err(err)
        }
    }
}

/// How long a claim is held before another request may assume its holder died.
fn lease_for(request_timeout: Duration) -> chrono::Duration {
    chrono::Duration::from_std(request_timeout + Duration::from_secs(30))
        .unwrap_or(chrono::Duration::minutes(5))
}

/// Claim the key. `Ok(None)`: go ahead. `Ok(Some(response))`: answer with this instead.
async fn claim(
    state: &AppState,
    scope: &str,
    key: &str,
    fingerprint: &str,
    lease: chrono::Duration,
) -> AppResult<Option<Response>> {
    let now = store::now();
    let mut tx = state.db.begin().await?;
    if keys::insert_in_progress(&mut tx, scope, key, fingerprint, now + lease, now).await? {
        tx.commit().await?;
        return Ok(None);
    }
    let existing = keys::find(&mut tx, scope, key)
        .await?
        .ok_or_else(|| anyhow::anyhow!("idempotency key vanished while claiming"))?;
    if existing.request_hash != fingerprint {
        return Err(AppError::IdempotencyKeyReused);
    }
    if existing.status == "DONE" {
        return Ok(Some(replay(&existing)?));
    }
    if existing.locked_until > now {
        return Err(AppError::IdempotencyInProgress);
    }
    let won = keys::take_over(&mut tx, scope, key, existing.locked_until, now + lease).await?;
    tx.commit().await?;
    if won {
        Ok(None)
    } else {
        Err(AppError::IdempotencyInProgress)
    }
}

fn replay(row: &keys::KeyRow) -> AppResult<Response> {
    let status = row
        .response_status
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| anyhow::anyhow!("stored idempotent response has no valid status"))?;
    let body: Value = serde_json::from_str(row.response_body.as_deref().unwrap_or("null"))
        .map_err(anyhow::Error::from)?;
    let mut response = Reply { status, body }.into_response();
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    Ok(response)
}

//! Idempotency keys (SPEC §7), reusable by every endpoint that moves money, stock or coupons.
//!
//! The key is recorded in the same transaction as its effect — one command on the committer
//! (group commit), so a process that dies mid-request leaves neither the effect nor the key,
//! and the client's retry runs at once. Per `(caller, key)`, inside that command:
//! 1. Insert the key (`IN_PROGRESS`, visible only to this transaction). If it already exists:
//!    a different request fingerprint → `422 IDEMPOTENCY_KEY_REUSED`; finished → the stored
//!    response is replayed. (On PostgreSQL a second instance inserting the same key waits for
//!    the first transaction and then replays its answer.)
//! 2. The operation runs in a nested savepoint, and its final response is written to the key.
//! 3. A rejection (4xx) rolls the operation back and is stored as the key's answer; an
//!    unexpected failure (5xx) rolls back the key too, so a retry runs again.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::Principal;
use crate::db::{Locks, Tx};
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::store::{self, idempotency as keys};

/// Header set on replayed responses.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A response that can be stored and replayed: status plus JSON body.
///
/// The body is serialised only where it is needed: for a keyed request inside the command (the
/// key stores it), otherwise when the response is written, on an HTTP worker — not on the
/// committer's thread, which every write waits for.
pub struct Reply {
    pub status: StatusCode,
    body: ReplyBody,
}

enum ReplyBody {
    /// Serialised already (a stored answer replayed, or a keyed answer just stored).
    Json(String),
    Lazy(Box<dyn LazyJson>),
}

/// A value serialised later, on whichever thread needs its JSON.
trait LazyJson: Send {
    fn to_json(&self) -> serde_json::Result<String>;
}

impl<T: Serialize + Send> LazyJson for T {
    fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Reply {
    pub fn json<T: Serialize + Send + 'static>(status: StatusCode, body: T) -> AppResult<Self> {
        Ok(Reply {
            status,
            body: ReplyBody::Lazy(Box::new(body)),
        })
    }

    /// An error answer whose transaction still commits (e.g. a recorded FAILED payment).
    pub fn error(err: &AppError) -> AppResult<Self> {
        Reply::json(err.status(), err.body())
    }

    /// The body's JSON text, serialised now (and kept) if it was not yet.
    fn body_json(&mut self) -> AppResult<&str> {
        if let ReplyBody::Lazy(value) = &self.body {
            self.body = ReplyBody::Json(value.to_json().map_err(anyhow::Error::from)?);
        }
        match &self.body {
            ReplyBody::Json(json) => Ok(json),
            // Serialised just above.
            ReplyBody::Lazy(_) => Err(anyhow::anyhow!("reply body not serialised").into()),
        }
    }

    fn into_json(self) -> AppResult<String> {
        match self.body {
            ReplyBody::Json(json) => Ok(json),
            ReplyBody::Lazy(value) => Ok(value.to_json().map_err(anyhow::Error::from)?),
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = self.status;
        match self.into_json() {
            Ok(json) => (
                status,
                [(
                    axum::http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                json,
            )
                .into_response(),
            Err(err) => err.into_response(),
        }
    }
}

/// What a keyed command answers: a fresh reply, a replayed one, or a rejection that was
/// recorded as the key's answer (its transaction commits, the caller gets the error).
enum Answer {
    Fresh(Reply),
    Replayed(Reply),
    Rejected(AppError),
}

/// Run `op` at most once per `(caller, key)`, as one command on the committer; without a key
/// it simply runs as a command. `locks`: the rows `op` locks (see [`Locks`]).
pub async fn run<F>(
    state: &AppState,
    caller: Principal,
    key: Option<String>,
    fingerprint: &str,
    locks: Locks,
    op: F,
) -> AppResult<Response>
where
    F: AsyncFnOnce(&mut Tx) -> AppResult<Reply> + Send + 'static,
{
    let Some(key) = key else {
        return Ok(state.db.write(locks, op).await?.into_response());
    };
    let scope = caller.scope();
    let fingerprint = fingerprint.to_string();
    let lease = lease_for(state.settings.request_timeout);
    let answer = state
        .db
        .write(locks, async move |tx: &mut Tx| -> AppResult<Answer> {
            if let Some(answer) = claim(tx, &scope, &key, &fingerprint, lease).await? {
                return Ok(answer);
            }
            tx.nested_savepoint().await?;
            match op(tx).await {
                Ok(mut reply) => {
                    tx.release_nested().await?;
                    let status = reply.status.as_u16();
                    keys::complete(tx, &scope, &key, status, reply.body_json()?).await?;
                    Ok(Answer::Fresh(reply))
                }
                // Unexpected: roll back the key with the effect, so a retry runs again.
                Err(err) if err.status().is_server_error() => Err(err),
                Err(err) => {
                    tx.undo_nested().await?;
                    let body = serde_json::to_string(&err.body()).map_err(anyhow::Error::from)?;
                    keys::complete(tx, &scope, &key, err.status().as_u16(), &body).await?;
                    Ok(Answer::Rejected(err))
                }
            }
        })
        .await?;
    match answer {
        Answer::Fresh(reply) => Ok(reply.into_response()),
        Answer::Replayed(reply) => {
            let mut response = reply.into_response();
            response
                .headers_mut()
                .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
            Ok(response)
        }
        Answer::Rejected(err) => Err(err),
    }
}

/// How long an `IN_PROGRESS` key written by an older version (which claimed keys in a
/// transaction of their own) is honoured before it is taken over.
fn lease_for(request_timeout: Duration) -> chrono::Duration {
    chrono::Duration::from_std(request_timeout + Duration::from_secs(30))
        .unwrap_or(chrono::Duration::minutes(5))
}

/// Claim the key inside the command's transaction. `Ok(None)`: go ahead.
async fn claim(
    tx: &mut Tx,
    scope: &str,
    key: &str,
    fingerprint: &str,
    lease: chrono::Duration,
) -> AppResult<Option<Answer>> {
    let now = store::now();
    if keys::insert_in_progress(tx, scope, key, fingerprint, now + lease, now).await? {
        return Ok(None);
    }
    let existing = keys::find(tx, scope, key)
        .await?
        .ok_or_else(|| anyhow::anyhow!("idempotency key vanished while claiming"))?;
    if existing.request_hash != fingerprint {
        return Err(AppError::IdempotencyKeyReused);
    }
    if existing.status == "DONE" {
        return Ok(Some(Answer::Replayed(stored_reply(&existing)?)));
    }
    if existing.locked_until > now {
        return Err(AppError::IdempotencyInProgress);
    }
    if keys::take_over(tx, scope, key, existing.locked_until, now + lease).await? {
        Ok(None)
    } else {
        Err(AppError::IdempotencyInProgress)
    }
}

fn stored_reply(row: &keys::KeyRow) -> AppResult<Reply> {
    let status = row
        .response_status
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| anyhow::anyhow!("stored idempotent response has no valid status"))?;
    // Stored as serialised JSON by this module (checked: a stored body that is not JSON is
    // a server error, not replayed as such).
    let body = row
        .response_body
        .clone()
        .unwrap_or_else(|| "null".to_string());
    serde_json::from_str::<serde::de::IgnoredAny>(&body).map_err(anyhow::Error::from)?;
    Ok(Reply {
        status,
        body: ReplyBody::Json(body),
    })
}

//! Storage of idempotency keys (SPEC §7). The protocol lives in `crate::idempotency`.

use chrono::{DateTime, Utc};

use crate::db::Tx;
use crate::error::AppResult;
use crate::{sql_execute, sql_optional};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub request_hash: String,
    pub status: String,
    pub response_status: Option<i64>,
    pub response_body: Option<String>,
    pub locked_until: DateTime<Utc>,
}
crate::lite_row!(KeyRow {
    request_hash,
    status,
    response_status,
    response_body,
    locked_until
});

/// Try to take `key` for a new request. True if this call created it.
pub async fn insert_in_progress(
    tx: &mut Tx,
    scope: &str,
    key: &str,
    request_hash: &str,
    locked_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> AppResult<bool> {
    let inserted = sql_execute!(tx,
        "INSERT INTO idempotency_keys (scope, idem_key, request_hash, status, locked_until, created_at)
         VALUES ($1, $2, $3, 'IN_PROGRESS', $4, $5)
         ON CONFLICT (scope, idem_key) DO NOTHING",
        scope, key, request_hash, locked_until, now)?;
    Ok(inserted == 1)
}

pub async fn find(tx: &mut Tx, scope: &str, key: &str) -> AppResult<Option<KeyRow>> {
    Ok(sql_optional!(KeyRow; tx,
        "SELECT request_hash, status, response_status, response_body, locked_until
         FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
        scope, key)?)
}

/// Take over a key whose holder died (lease expired). True if this call won it.
pub async fn take_over(
    tx: &mut Tx,
    scope: &str,
    key: &str,
    seen_locked_until: DateTime<Utc>,
    locked_until: DateTime<Utc>,
) -> AppResult<bool> {
    let n = sql_execute!(
        tx,
        "UPDATE idempotency_keys SET locked_until = $1
         WHERE scope = $2 AND idem_key = $3 AND status = 'IN_PROGRESS' AND locked_until = $4",
        locked_until,
        scope,
        key,
        seen_locked_until
    )?;
    Ok(n == 1)
}

/// Store the final response; runs in the same transaction as the request's effects.
pub async fn complete(
    tx: &mut Tx,
    scope: &str,
    key: &str,
    status: u16,
    body: &str,
) -> AppResult<()> {
    sql_execute!(
        tx,
        "UPDATE idempotency_keys SET status = 'DONE', response_status = $1, response_body = $2
         WHERE scope = $3 AND idem_key = $4",
        i64::from(status),
        body,
        scope,
        key
    )?;
    Ok(())
}

/// Delete keys older than `cutoff` that are not in flight. Returns how many went.
pub async fn purge_older_than(
    tx: &mut Tx,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> AppResult<u64> {
    Ok(sql_execute!(
        tx,
        "DELETE FROM idempotency_keys WHERE created_at < $1 AND (status = 'DONE' OR locked_until < $2)",
        cutoff,
        now
    )?)
}

//! The transactional outbox: events are written in the transaction that causes them and
//! delivered after commit by the relay (SPEC §10).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::db::{Handle, Tx};
use crate::error::AppResult;
use crate::sql_execute;
use crate::store::orders::{LineRow, OrderRow};

pub const ORDER_PAID: &str = "ORDER_PAID";

/// The `ORDER_PAID` payload of SPEC §10.
pub fn order_paid_payload(
    event_id: Uuid,
    order: &OrderRow,
    lines: &[LineRow],
    paid_at: DateTime<Utc>,
) -> Value {
    let items: Vec<Value> = lines
        .iter()
        .map(|l| {
            json!({
                "productId": l.product_id,
                "name": l.name,
                "unitPrice": l.unit_price,
                "quantity": l.quantity,
                "lineTotal": l.line_total,
            })
        })
        .collect();
    let mut order_json = json!({
        "id": order.id,
        "userId": order.user_id,
        "status": "PAID",
        "items": items,
        "subtotal": order.subtotal,
        "discount": order.discount,
        "total": order.total,
        "paidAt": crate::domain::time::format_time(paid_at),
    });
    if let Some(id) = order.user_coupon_id {
        order_json["userCouponId"] = json!(id);
    }
    if let Some(id) = order.coupon_id {
        order_json["couponId"] = json!(id);
    }
    json!({
        "eventId": event_id.to_string(),
        "type": ORDER_PAID,
        "occurredAt": crate::domain::time::format_time(paid_at),
        "order": order_json,
    })
}

/// Write the order's `ORDER_PAID` event (one per order: unique on type and order id).
pub async fn enqueue_order_paid(
    tx: &mut Tx,
    order: &OrderRow,
    lines: &[LineRow],
    paid_at: DateTime<Utc>,
) -> AppResult<Uuid> {
    let event_id = Uuid::now_v7();
    let payload = order_paid_payload(event_id, order, lines, paid_at);
    sql_execute!(tx,
        "INSERT INTO outbox_events (id, event_type, aggregate_id, payload, status, attempts, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, 'PENDING', 0, $5, $5)",
        event_id.to_string(), ORDER_PAID, order.id, payload.to_string(), paid_at)?;
    Ok(event_id)
}

// ---- delivery ----

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedEvent {
    pub id: String,
    pub event_type: String,
    pub payload: String,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
}
crate::lite_row!(ClaimedEvent {
    id,
    event_type,
    payload,
    attempts,
    created_at
});

/// Claim up to `limit` due PENDING events for delivery until `lease_until`. A claim is a lease:
/// no other relay (in this or another instance) takes the event until it runs out, and a
/// crashed instance's claims simply expire and are taken by another. On PostgreSQL, `SKIP
/// LOCKED` lets concurrent relays claim disjoint batches without waiting on each other.
pub async fn claim_due(
    tx: &mut Tx,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> AppResult<Vec<ClaimedEvent>> {
    let sql = tx.dialect().pick(
        "UPDATE outbox_events SET locked_until = $1
         WHERE id IN (SELECT id FROM outbox_events
                      WHERE status = 'PENDING' AND next_attempt_at <= $2
                        AND (locked_until IS NULL OR locked_until <= $2)
                      ORDER BY next_attempt_at LIMIT $3)
         RETURNING id, event_type, payload, attempts, created_at",
        "UPDATE outbox_events SET locked_until = $1
         WHERE id IN (SELECT id FROM outbox_events
                      WHERE status = 'PENDING' AND next_attempt_at <= $2
                        AND (locked_until IS NULL OR locked_until <= $2)
                      ORDER BY next_attempt_at LIMIT $3
                      FOR UPDATE SKIP LOCKED)
         RETURNING id, event_type, payload, attempts, created_at",
    );
    Ok(crate::sql_all!(ClaimedEvent; tx, sql, lease_until, now, limit)?)
}

/// Record a successful delivery.
pub async fn mark_delivered(tx: &mut Tx, id: &str, now: DateTime<Utc>) -> AppResult<()> {
    sql_execute!(
        tx,
        "UPDATE outbox_events SET status = 'DELIVERED', attempts = attempts + 1, delivered_at = $1,
                locked_until = NULL, last_error = NULL
         WHERE id = $2 AND status = 'PENDING'",
        now,
        id
    )?;
    Ok(())
}

/// Record a failed attempt: retry at `next_attempt_at`, or `DEAD` when `dead`.
pub async fn mark_failed(
    tx: &mut Tx,
    id: &str,
    error: &str,
    next_attempt_at: DateTime<Utc>,
    dead: bool,
) -> AppResult<()> {
    let status = if dead { "DEAD" } else { "PENDING" };
    sql_execute!(
        tx,
        "UPDATE outbox_events SET status = $1, attempts = attempts + 1, last_error = $2,
                next_attempt_at = $3, locked_until = NULL
         WHERE id = $4 AND status = 'PENDING'",
        status,
        error,
        next_attempt_at,
        id
    )?;
    Ok(())
}

/// When the next PENDING event can be claimed: its attempt is due and no relay holds a lease
/// on it (to sleep exactly until then; events in flight do not wake anyone).
pub async fn next_due(h: &mut impl crate::db::Handle) -> AppResult<Option<DateTime<Utc>>> {
    Ok(crate::sql_scalar!(
        h,
        "SELECT MIN(CASE WHEN locked_until > next_attempt_at THEN locked_until
                         ELSE next_attempt_at END)
         FROM outbox_events WHERE status = 'PENDING'"
    )?)
}

/// Give up this relay's lease on an event it claimed but never sent (at shutdown), so that the
/// next relay takes it at once instead of when the lease runs out.
pub async fn release(tx: &mut Tx, id: &str) -> AppResult<()> {
    sql_execute!(
        tx,
        "UPDATE outbox_events SET locked_until = NULL WHERE id = $1 AND status = 'PENDING'",
        id
    )?;
    Ok(())
}

/// `(pending, dead)` counts.
pub async fn counts(h: &mut impl crate::db::Handle) -> AppResult<(i64, i64)> {
    Ok(crate::sql_one!((i64, i64); h,
        "SELECT CAST(COALESCE(SUM(CASE WHEN status = 'PENDING' THEN 1 ELSE 0 END), 0) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN status = 'DEAD' THEN 1 ELSE 0 END), 0) AS BIGINT)
         FROM outbox_events")?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: String,
    pub event_type: String,
    pub aggregate_id: i64,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}
crate::lite_row!(EventRow {
    id,
    event_type,
    aggregate_id,
    payload,
    status,
    attempts,
    next_attempt_at,
    last_error,
    created_at,
    delivered_at
});

/// Events in creation order (ids are UUIDv7, so their text order is their time order).
pub async fn list(
    h: &mut impl crate::db::Handle,
    status: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> AppResult<Vec<EventRow>> {
    Ok(crate::sql_all!(EventRow; h,
        "SELECT id, event_type, aggregate_id, payload, status, attempts, next_attempt_at, last_error, created_at, delivered_at
         FROM outbox_events WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR id > $2)
         ORDER BY id LIMIT $3",
        status, after, limit)?)
}

pub async fn find(h: &mut impl crate::db::Handle, id: &str) -> AppResult<Option<EventRow>> {
    Ok(crate::sql_optional!(EventRow; h,
        "SELECT id, event_type, aggregate_id, payload, status, attempts, next_attempt_at, last_error, created_at, delivered_at
         FROM outbox_events WHERE id = $1", id)?)
}

/// Put a DEAD (or waiting PENDING) event back in line for immediate delivery with a fresh
/// attempt budget. Returns the event's status before, or `None` if there is no such event.
pub async fn requeue(tx: &mut Tx, id: &str, now: DateTime<Utc>) -> AppResult<Option<String>> {
    let before: Option<String> =
        crate::sql_scalar_optional!(tx, "SELECT status FROM outbox_events WHERE id = $1", id)?;
    if matches!(before.as_deref(), Some("DEAD") | Some("PENDING")) {
        sql_execute!(
            tx,
            // The lease is left alone: a PENDING event in flight stays with its relay (DEAD
            // events hold no lease), so an event is never in flight twice.
            "UPDATE outbox_events SET status = 'PENDING', attempts = 0, next_attempt_at = $1
             WHERE id = $2 AND status IN ('DEAD', 'PENDING')",
            now,
            id
        )?;
    }
    Ok(before)
}

//! The transactional outbox: events are written in the transaction that causes them and
//! delivered after commit by the relay (SPEC §10): `ORDER_PAID`, `ORDER_CANCELLED`,
//! `ORDER_EXPIRED` and `ORDER_REFUNDED`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::db::work::Table;
use crate::db::{Arg, Handle, Tx, committer};
use crate::error::AppResult;
use crate::sql_execute;
use crate::store::orders::{LineRow, OrderRow};

pub const ORDER_PAID: &str = "ORDER_PAID";
pub const ORDER_CANCELLED: &str = "ORDER_CANCELLED";
pub const ORDER_EXPIRED: &str = "ORDER_EXPIRED";
pub const ORDER_REFUNDED: &str = "ORDER_REFUNDED";

/// The `order` object of every event's payload (SPEC §10), with the order's status as of the
/// event. `paidAt` is null for an order that was never paid (cancelled, expired).
///
/// Payloads are serialised straight from these types (no `Value` tree: this runs on the
/// committer's thread for every paid order). Fields are declared in alphabetical order, so
/// the text is the same canonical JSON (sorted keys, compact) a `serde_json::Value` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    coupon_id: Option<i64>,
    discount: i64,
    id: i64,
    items: Vec<ItemJson<'a>>,
    paid_at: Option<String>,
    status: &'a str,
    subtotal: i64,
    total: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_coupon_id: Option<i64>,
    user_id: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemJson<'a> {
    line_total: i64,
    name: &'a str,
    product_id: i64,
    quantity: i64,
    unit_price: i64,
}

/// An event: envelope and order (and, for `ORDER_REFUNDED`, the refund).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventJson<'a> {
    event_id: String,
    occurred_at: String,
    order: OrderJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund: Option<Value>,
    #[serde(rename = "type")]
    event_type: &'a str,
}

/// `paid_at`: the order's, or (for `ORDER_PAID`) the payment being recorded.
fn order_json<'a>(
    order: &'a OrderRow,
    lines: &'a [LineRow],
    status: &'a str,
    paid_at: Option<DateTime<Utc>>,
) -> OrderJson<'a> {
    OrderJson {
        coupon_id: order.coupon_id,
        discount: order.discount,
        id: order.id,
        items: lines
            .iter()
            .map(|l| ItemJson {
                line_total: l.line_total,
                name: &l.name,
                product_id: l.product_id,
                quantity: l.quantity,
                unit_price: l.unit_price,
            })
            .collect(),
        paid_at: paid_at.map(crate::domain::time::format_time),
        status,
        subtotal: order.subtotal,
        total: order.total,
        user_coupon_id: order.user_coupon_id,
        user_id: order.user_id,
    }
}

fn event_text(
    event_id: Uuid,
    event_type: &str,
    occurred_at: DateTime<Utc>,
    order: OrderJson<'_>,
    refund: Option<Value>,
) -> AppResult<String> {
    let event = EventJson {
        event_id: event_id.to_string(),
        occurred_at: crate::domain::time::format_time(occurred_at),
        order,
        refund,
        event_type,
    };
    Ok(serde_json::to_string(&event).map_err(anyhow::Error::from)?)
}

/// The `ORDER_PAID` payload of SPEC §10.
pub fn order_paid_payload(
    event_id: Uuid,
    order: &OrderRow,
    lines: &[LineRow],
    paid_at: DateTime<Utc>,
) -> AppResult<String> {
    let order_json = order_json(order, lines, "PAID", Some(paid_at));
    event_text(event_id, ORDER_PAID, paid_at, order_json, None)
}

/// Write one event in the caller's transaction. In a committer with a relay listening, the
/// event is written already leased to that relay and handed to it once the batch commits, so
/// it is sent at once without being claimed (see [`committer::Written`]); if this process dies
/// first, the lease runs out and any relay claims it.
async fn enqueue(
    tx: &mut Tx,
    event_id: Uuid,
    event_type: &str,
    order_id: i64,
    payload: String,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let lease_until = committer::handoff_lease(now);
    let id = event_id.to_string();
    crate::db::work::insert(
        tx,
        Table::Outbox,
        vec![vec![
            Arg::Text(id.clone()),
            Arg::Text(event_type.to_string()),
            Arg::I64(order_id),
            Arg::Text(payload.clone()),
            Arg::Text("PENDING".to_string()),
            Arg::I64(0),
            Arg::Time(now),
            Arg::Time(now),
            Arg::OptTime(lease_until),
        ]],
    )
    .await?;
    committer::wrote_event(lease_until.map(|lease_until| committer::Written {
        id,
        event_type: event_type.to_string(),
        aggregate_id: order_id,
        payload,
        created_at: now,
        lease_until,
    }));
    Ok(())
}

/// Write the order's `ORDER_PAID` event (one per order: unique on type and order id).
pub async fn enqueue_order_paid(
    tx: &mut Tx,
    order: &OrderRow,
    lines: &[LineRow],
    paid_at: DateTime<Utc>,
) -> AppResult<Uuid> {
    let event_id = Uuid::now_v7();
    let payload = order_paid_payload(event_id, order, lines, paid_at)?;
    enqueue(tx, event_id, ORDER_PAID, order.id, payload, paid_at).await?;
    Ok(event_id)
}

/// Write `ORDER_CANCELLED` or `ORDER_EXPIRED` for an order that held stock and was released
/// now (`order` as it is after the change; one event per order).
pub async fn enqueue_order_released(
    tx: &mut Tx,
    event_type: &'static str,
    order: &OrderRow,
    lines: &[LineRow],
    now: DateTime<Utc>,
) -> AppResult<Uuid> {
    let event_id = Uuid::now_v7();
    let payload = event_text(
        event_id,
        event_type,
        now,
        order_json(order, lines, &order.status, order.paid_at),
        None,
    )?;
    enqueue(tx, event_id, event_type, order.id, payload, now).await?;
    Ok(event_id)
}

/// Write `ORDER_REFUNDED`: the order as it is after the refund, and the refund beside it (one
/// event per refund).
pub async fn enqueue_order_refunded(
    tx: &mut Tx,
    order: &OrderRow,
    lines: &[LineRow],
    refund: Value,
    now: DateTime<Utc>,
) -> AppResult<Uuid> {
    let event_id = Uuid::now_v7();
    let payload = event_text(
        event_id,
        ORDER_REFUNDED,
        now,
        order_json(order, lines, &order.status, order.paid_at),
        Some(refund),
    )?;
    enqueue(tx, event_id, ORDER_REFUNDED, order.id, payload, now).await?;
    Ok(event_id)
}

// ---- delivery ----

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedEvent {
    pub id: String,
    pub event_type: String,
    /// The order the event is about (an `ORDER_PAID` delivery confirms it).
    pub aggregate_id: i64,
    pub payload: String,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
}
crate::lite_row!(ClaimedEvent {
    id,
    event_type,
    aggregate_id,
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
         RETURNING id, event_type, aggregate_id, payload, attempts, created_at",
        "UPDATE outbox_events SET locked_until = $1
         WHERE id IN (SELECT id FROM outbox_events
                      WHERE status = 'PENDING' AND next_attempt_at <= $2
                        AND (locked_until IS NULL OR locked_until <= $2)
                      ORDER BY next_attempt_at LIMIT $3
                      FOR UPDATE SKIP LOCKED)
         RETURNING id, event_type, aggregate_id, payload, attempts, created_at",
    );
    Ok(crate::sql_all!(ClaimedEvent; tx, sql, lease_until, now, limit)?)
}

/// Record a successful delivery. When it is an order's `ORDER_PAID` event, the platform now
/// has the order: a PAID order becomes CONFIRMED in this same transaction (SPEC §6); an order
/// already refunded meanwhile stays as it is (the change is conditional on PAID).
pub async fn mark_delivered(tx: &mut Tx, id: &str, now: DateTime<Utc>) -> AppResult<()> {
    let delivered: Option<(String, i64)> = crate::sql_optional!((String, i64); tx,
        "UPDATE outbox_events SET status = 'DELIVERED', attempts = attempts + 1, delivered_at = $1,
                locked_until = NULL, last_error = NULL
         WHERE id = $2 AND status = 'PENDING'
         RETURNING event_type, aggregate_id",
        now,
        id
    )?;
    if let Some((event_type, order_id)) = delivered
        && event_type == ORDER_PAID
    {
        crate::store::orders::confirm_order(tx, order_id, now).await?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn order(coupon: bool) -> (OrderRow, Vec<LineRow>) {
        let at = DateTime::parse_from_rfc3339("2026-11-22T09:30:00.123Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let order = OrderRow {
            id: 7,
            user_id: 3,
            status: "PENDING".into(),
            from_cart: false,
            subtotal: 3_000,
            discount: if coupon { 500 } else { 0 },
            total: if coupon { 2_500 } else { 3_000 },
            user_coupon_id: coupon.then_some(11),
            coupon_id: coupon.then_some(2),
            expires_at: at,
            created_at: at,
            updated_at: at,
            paid_at: None,
            confirmed_at: None,
            refunded_amount: 0,
        };
        let lines = vec![LineRow {
            order_id: 7,
            product_id: 5,
            name: "Tea \"green\"".into(),
            unit_price: 1_000,
            quantity: 3,
            line_total: 3_000,
            refunded_quantity: 0,
        }];
        (order, lines)
    }

    /// The payload text is canonical JSON (sorted keys, compact: what a `Value` prints), with
    /// every field of SPEC §10, coupons only when the order has one.
    #[test]
    fn event_payloads_are_canonical_json_with_every_field() {
        for coupon in [false, true] {
            let (order, lines) = order(coupon);
            let at = order.created_at;
            let paid = order_paid_payload(Uuid::nil(), &order, &lines, at).expect("payload");
            let value: Value = serde_json::from_str(&paid).expect("json");
            assert_eq!(paid, value.to_string(), "canonical text");
            assert_eq!(value["type"], "ORDER_PAID");
            assert_eq!(value["eventId"], Uuid::nil().to_string());
            assert_eq!(value["occurredAt"], "2026-11-22T09:30:00.123000Z");
            let o = &value["order"];
            assert_eq!(o["status"], "PAID");
            assert_eq!(o["paidAt"], "2026-11-22T09:30:00.123000Z");
            assert_eq!((o["id"].as_i64(), o["userId"].as_i64()), (Some(7), Some(3)));
            assert_eq!(
                o["total"].as_i64(),
                Some(if coupon { 2_500 } else { 3_000 })
            );
            assert_eq!(o.get("couponId").is_some(), coupon);
            assert_eq!(o.get("userCouponId").is_some(), coupon);
            assert_eq!(o["items"][0]["name"], "Tea \"green\"");
            assert_eq!(o["items"][0]["lineTotal"].as_i64(), Some(3_000));

            let refund = serde_json::json!({ "id": 1, "amount": 1_000 });
            let text = event_text(
                Uuid::nil(),
                ORDER_REFUNDED,
                at,
                order_json(&order, &lines, &order.status, order.paid_at),
                Some(refund.clone()),
            )
            .expect("payload");
            let value: Value = serde_json::from_str(&text).expect("json");
            assert_eq!(text, value.to_string(), "canonical text");
            assert_eq!(value["refund"], refund);
            assert_eq!(value["order"]["paidAt"], Value::Null, "never paid: null");
        }
    }
}

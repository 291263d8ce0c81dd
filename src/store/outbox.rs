//! The transactional outbox: events are written in the transaction that causes them and
//! delivered after commit by the relay (SPEC §10).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::db::Tx;
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
        "paidAt": crate::api::format_time(paid_at),
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
        "occurredAt": crate::api::format_time(paid_at),
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

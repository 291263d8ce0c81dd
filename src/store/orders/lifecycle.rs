//! Leaving PENDING without payment: cancel and expire give back stock and coupon exactly
//! once, because every status change is conditional on PENDING, and write `ORDER_CANCELLED` /
//! `ORDER_EXPIRED` in the same transaction. And PAID → CONFIRMED once the data platform has
//! the order.

use chrono::{DateTime, Utc};

use super::*;
use crate::db::work::Table;
use crate::db::{Arg, Db, Handle, Locks, Tx};
use crate::store::outbox;
use crate::{sql_all, sql_execute, sql_optional};

/// Lock the order row (a no-op conditional UPDATE) and check it belongs to the actor.
pub(super) async fn lock_order(
    tx: &mut Tx,
    order_id: i64,
    actor: Actor,
    now: DateTime<Utc>,
) -> AppResult<OrderRow> {
    let order = sql_optional!(OrderRow; tx,
        concat!("UPDATE orders SET updated_at = $1 WHERE id = $2 AND ($3 IS NULL OR user_id = $3) RETURNING ",
                order_columns!()),
        now, order_id, actor.member)?;
    order.ok_or_else(|| order_not_found(order_id))
}

/// Cancel a PENDING order at once. `Err(status)` if it is no longer PENDING.
pub async fn cancel_order(
    tx: &mut Tx,
    order_id: i64,
    actor: Actor,
    now: DateTime<Utc>,
) -> AppResult<Result<(), OrderStatus>> {
    let order = lock_order(tx, order_id, actor, now).await?;
    let status = order.status()?;
    if !status.can_become(OrderStatus::Cancelled) {
        return Ok(Err(status));
    }
    close_order(
        tx,
        &order,
        OrderStatus::Cancelled,
        "CANCELLED_BY_REQUEST",
        now,
    )
    .await?;
    Ok(Ok(()))
}

/// Expire one order if it is still PENDING past its reservation. True if it expired now.
pub async fn expire_order(tx: &mut Tx, order_id: i64, now: DateTime<Utc>) -> AppResult<bool> {
    let order = sql_optional!(OrderRow; tx,
        concat!("UPDATE orders SET updated_at = $1 WHERE id = $2 AND status = 'PENDING' AND expires_at <= $1 RETURNING ",
                order_columns!()),
        now, order_id)?;
    match order {
        Some(order) => {
            close_order(tx, &order, OrderStatus::Expired, "RESERVATION_EXPIRED", now).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// The rows cancelling or expiring `order_id` locks: the order and its products (an order's
/// lines never change, so this read outside the transaction is exact).
pub async fn closing_locks(db: &Db, order_id: i64) -> AppResult<Locks> {
    let mut conn = db.read().await?;
    let products = order_lines(&mut conn, order_id)
        .await?
        .into_iter()
        .map(|l| l.product_id)
        .collect();
    Ok(Locks {
        products,
        orders: vec![order_id],
        ..Locks::none()
    })
}

/// PENDING orders whose reservation has run out (oldest first).
pub async fn due_for_expiry(
    h: &mut impl Handle,
    now: DateTime<Utc>,
    limit: i64,
) -> AppResult<Vec<i64>> {
    Ok(sql_all!((i64,); h,
        "SELECT id FROM orders WHERE status = 'PENDING' AND expires_at <= $1 ORDER BY expires_at LIMIT $2", now, limit)?
    .into_iter()
    .map(|(id,)| id)
    .collect())
}

/// Move a PENDING order to CANCELLED or EXPIRED, give back its stock and coupon — exactly
/// once, because the status change is conditional on PENDING — and write its
/// `ORDER_CANCELLED` / `ORDER_EXPIRED` event.
pub(super) async fn close_order(
    tx: &mut Tx,
    order: &OrderRow,
    to: OrderStatus,
    reason: &str,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let closed = sql_execute!(
        tx,
        "UPDATE orders SET status = $1, updated_at = $2 WHERE id = $3 AND status = 'PENDING'",
        to.as_str(),
        now,
        order.id
    )?;
    if closed != 1 {
        return Err(anyhow::anyhow!("order {} was not PENDING when closing", order.id).into());
    }
    let lines = order_lines(tx, order.id).await?;
    for line in &lines {
        sql_execute!(
            tx,
            "UPDATE products SET stock = stock + $1 WHERE id = $2",
            line.quantity,
            line.product_id
        )?;
    }
    if let Some(user_coupon_id) = order.user_coupon_id {
        sql_execute!(
            tx,
            "UPDATE user_coupons SET status = 'AVAILABLE', used_at = NULL, order_id = NULL
             WHERE id = $1 AND order_id = $2",
            user_coupon_id,
            order.id
        )?;
    }
    record_transition(tx, order.id, Some(OrderStatus::Pending), to, reason, now).await?;
    let event_type = match to {
        OrderStatus::Expired => outbox::ORDER_EXPIRED,
        _ => outbox::ORDER_CANCELLED,
    };
    let mut released = order.clone();
    released.status = to.as_str().to_string();
    released.updated_at = now;
    outbox::enqueue_order_released(tx, event_type, &released, &lines, now).await?;
    Ok(())
}

/// PAID → CONFIRMED: the data platform acknowledged the order's `ORDER_PAID` event. Called in
/// the transaction that marks that event delivered. Conditional on PAID, so an order refunded
/// meanwhile stays refunded, and a redelivery changes nothing. True if it changed now.
pub async fn confirm_order(tx: &mut Tx, order_id: i64, now: DateTime<Utc>) -> AppResult<bool> {
    let confirmed = sql_execute!(
        tx,
        "UPDATE orders SET status = 'CONFIRMED', confirmed_at = $1, updated_at = $1
         WHERE id = $2 AND status = 'PAID'",
        now,
        order_id
    )?;
    if confirmed == 1 {
        record_transition(
            tx,
            order_id,
            Some(OrderStatus::Paid),
            OrderStatus::Confirmed,
            "PLATFORM_ACKNOWLEDGED",
            now,
        )
        .await?;
    }
    Ok(confirmed == 1)
}

pub(super) async fn record_transition(
    tx: &mut Tx,
    order_id: i64,
    from: Option<OrderStatus>,
    to: OrderStatus,
    reason: &str,
    now: DateTime<Utc>,
) -> AppResult<()> {
    crate::db::work::insert(
        tx,
        Table::OrderHistory,
        vec![vec![
            Arg::I64(order_id),
            Arg::OptText(from.map(|s| s.as_str().to_string())),
            Arg::Text(to.as_str().to_string()),
            Arg::Text(reason.to_string()),
            Arg::Time(now),
        ]],
    )
    .await?;
    Ok(())
}

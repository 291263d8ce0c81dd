//! Reading orders with their lines, payments, history and refunds (no N+1).

use super::refund::{member_refunds, order_refunds};
use super::*;
use crate::db::Handle;
use crate::{sql_all, sql_optional};

/// Lines in ascending product id (the lock order).
pub async fn order_lines(h: &mut impl Handle, order_id: i64) -> AppResult<Vec<LineRow>> {
    Ok(sql_all!(LineRow; h,
        "SELECT order_id, product_id, name, unit_price, quantity, line_total, refunded_quantity
         FROM order_lines WHERE order_id = $1 ORDER BY product_id", order_id)?)
}

pub async fn find_order(
    h: &mut impl Handle,
    order_id: i64,
    actor: Actor,
) -> AppResult<OrderDetails> {
    let order = sql_optional!(OrderRow; h,
        concat!("SELECT ", order_columns!(), " FROM orders WHERE id = $1 AND ($2 IS NULL OR user_id = $2)"),
        order_id, actor.member)?
    .ok_or_else(|| order_not_found(order_id))?;
    let lines = order_lines(h, order_id).await?;
    let payments = sql_all!(PaymentRow; h,
        "SELECT id, order_id, amount, status, failure_code, created_at FROM payments WHERE order_id = $1 ORDER BY id",
        order_id)?;
    let history = sql_all!(HistoryRow; h,
        "SELECT order_id, from_status, to_status, reason, created_at FROM order_status_history
         WHERE order_id = $1 ORDER BY id", order_id)?;
    let refunds = order_refunds(h, order_id).await?;
    Ok(OrderDetails {
        order,
        lines,
        payments,
        history,
        refunds,
    })
}

/// A member's orders, newest first, with details loaded in a few batched queries (no N+1).
pub async fn list_orders(
    h: &mut impl Handle,
    user_id: i64,
    status: Option<OrderStatus>,
    after: Option<i64>,
    limit: i64,
) -> AppResult<Vec<OrderDetails>> {
    let orders = sql_all!(OrderRow; h,
        concat!("SELECT ", order_columns!(), " FROM orders
                 WHERE user_id = $1 AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id < $3)
                 ORDER BY id DESC LIMIT $4"),
        user_id, status.map(OrderStatus::as_str), after, limit)?;
    let (Some(newest), Some(oldest)) = (orders.first().map(|o| o.id), orders.last().map(|o| o.id))
    else {
        return Ok(Vec::new());
    };
    let lines = sql_all!(LineRow; h,
        "SELECT l.order_id, l.product_id, l.name, l.unit_price, l.quantity, l.line_total, l.refunded_quantity
         FROM order_lines l JOIN orders o ON o.id = l.order_id
         WHERE o.user_id = $1 AND l.order_id BETWEEN $2 AND $3 ORDER BY l.order_id, l.product_id",
        user_id, oldest, newest)?;
    let payments = sql_all!(PaymentRow; h,
        "SELECT id, order_id, amount, status, failure_code, created_at FROM payments
         WHERE user_id = $1 AND order_id BETWEEN $2 AND $3 ORDER BY id",
        user_id, oldest, newest)?;
    let history = sql_all!(HistoryRow; h,
        "SELECT hi.order_id, hi.from_status, hi.to_status, hi.reason, hi.created_at
         FROM order_status_history hi JOIN orders o ON o.id = hi.order_id
         WHERE o.user_id = $1 AND hi.order_id BETWEEN $2 AND $3 ORDER BY hi.id",
        user_id, oldest, newest)?;
    let refunds = member_refunds(h, user_id, oldest, newest).await?;
    Ok(orders
        .into_iter()
        .map(|order| {
            let id = order.id;
            OrderDetails {
                order,
                lines: lines.iter().filter(|l| l.order_id == id).cloned().collect(),
                payments: payments
                    .iter()
                    .filter(|p| p.order_id == id)
                    .cloned()
                    .collect(),
                history: history
                    .iter()
                    .filter(|h| h.order_id == id)
                    .cloned()
                    .collect(),
                refunds: refunds
                    .iter()
                    .filter(|r| r.refund.order_id == id)
                    .cloned()
                    .collect(),
            }
        })
        .collect())
}

//! Refunds (SPEC §14): one command, one transaction — the refund and its lines, the units
//! refunded on each order line, stock put back (when asked), the member's balance credited
//! with a `REFUND` ledger entry (even above the maximum balance), the order's status and
//! history, and the `ORDER_REFUNDED` event.
//!
//! Refunds of one order serialize on the order row (locked first, like paying and
//! cancelling), and every unit is refunded at most once: the order line's `refunded_quantity`
//! never passes its quantity and the order's `refunded_amount` never passes its total (both
//! also database checks). What a unit refunds is [`crate::domain::refund`]'s arithmetic.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::lifecycle::{lock_order, record_transition};
use super::*;
use crate::db::{Arg, Db, Handle, Locks, Tx};
use crate::domain::money::LedgerKind;
use crate::domain::refund::{DiscountSpread, RefundError, plan_refund};
use crate::store::{balance, outbox};
use crate::{sql_all, sql_execute, sql_one, sql_scalar, sql_scalar_optional};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundRow {
    pub id: i64,
    pub order_id: i64,
    pub user_id: i64,
    pub amount: i64,
    pub restock: bool,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}
crate::lite_row!(RefundRow {
    id,
    order_id,
    user_id,
    amount,
    restock,
    reason,
    created_at
});

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundLineRow {
    pub refund_id: i64,
    pub product_id: i64,
    pub quantity: i64,
    pub amount: i64,
}
crate::lite_row!(RefundLineRow {
    refund_id,
    product_id,
    quantity,
    amount
});

/// A refund with its lines.
#[derive(Debug, Clone)]
pub struct RefundDetails {
    pub refund: RefundRow,
    pub lines: Vec<RefundLineRow>,
}

impl RefundDetails {
    /// The `refund` object of the `ORDER_REFUNDED` payload (SPEC §10).
    pub fn event_json(&self) -> Value {
        json!({
            "id": self.refund.id,
            "amount": self.refund.amount,
            "lines": self.lines.iter().map(|l| json!({
                "productId": l.product_id,
                "quantity": l.quantity,
                "amount": l.amount,
            })).collect::<Vec<_>>(),
            "restock": self.refund.restock,
            "reason": self.refund.reason,
            "createdAt": crate::domain::time::format_time(self.refund.created_at),
        })
    }
}

/// What to refund.
pub struct RefundOrder {
    pub order_id: i64,
    /// `(product_id, quantity)` as asked for (repeated products are merged; the position names
    /// the field of a product that is not in the order); `None`: every unit not refunded yet.
    pub lines: Option<Vec<(i64, i64)>>,
    /// Put the refunded units back in stock.
    pub restock: bool,
    pub reason: String,
    pub now: DateTime<Utc>,
}

fn not_refundable(order_id: i64, status: OrderStatus) -> AppError {
    AppError::conflict(
        "ORDER_NOT_REFUNDABLE",
        format!(
            "order {order_id} is {} and cannot be refunded (only PAID, CONFIRMED and PARTIALLY_REFUNDED orders can)",
            status.as_str()
        ),
        json!({ "orderId": order_id, "status": status }),
    )
}

/// Refund units of a paid order (see the module documentation).
pub async fn refund_order(tx: &mut Tx, cmd: RefundOrder) -> AppResult<RefundDetails> {
    let RefundOrder {
        order_id,
        lines: request,
        restock,
        reason,
        now,
    } = cmd;
    let order = lock_order(tx, order_id, Actor { member: None }, now).await?;
    let status = order.status()?;
    if !status.is_refundable() {
        return Err(not_refundable(order_id, status));
    }
    let lines = order_lines(tx, order_id).await?;
    let spread = DiscountSpread::new(
        &lines
            .iter()
            .map(|l| (l.product_id, l.unit_price, l.quantity))
            .collect::<Vec<_>>(),
        order.discount,
    )
    .map_err(|e| anyhow::anyhow!("order {order_id}: cannot spread its discount: {e:?}"))?;
    let refunded = |product_id: i64| {
        lines
            .iter()
            .find(|l| l.product_id == product_id)
            .map_or(0, |l| l.refunded_quantity)
    };
    let merged = request
        .as_deref()
        .map(|r| OrderLines::parse(r, "lines"))
        .transpose()?;
    let planned = plan_refund(&spread, refunded, merged.as_ref().map(|m| m.lines())).map_err(
        |e| match e {
            RefundError::NotInOrder { product_id } => {
                let index = request
                    .as_deref()
                    .and_then(|r| r.iter().position(|&(p, _)| p == product_id))
                    .unwrap_or(0);
                AppError::validation(
                    &format!("lines[{index}].productId"),
                    format!("product {product_id} is not in order {order_id}"),
                )
            }
            RefundError::Exceeds(short) => AppError::conflict(
                "REFUND_EXCEEDS_ORDER",
                format!("more units than remain refundable in order {order_id}"),
                json!({
                    "orderId": order_id,
                    "lines": short.iter().map(|s| json!({
                        "productId": s.product_id,
                        "requested": s.requested,
                        "remaining": s.remaining,
                    })).collect::<Vec<_>>(),
                }),
            ),
            RefundError::NothingLeft => not_refundable(order_id, status),
        },
    )?;
    let amount: i64 = planned.iter().map(|l| l.amount).sum();

    let refund = sql_one!(RefundRow; tx,
        "INSERT INTO refunds (order_id, user_id, amount, restock, reason, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, order_id, user_id, amount, restock, reason, created_at",
        order_id, order.user_id, amount, restock, reason.as_str(), now)?;
    let refund_lines: Vec<RefundLineRow> = planned
        .iter()
        .map(|l| RefundLineRow {
            refund_id: refund.id,
            product_id: l.product_id,
            quantity: l.quantity,
            amount: l.amount,
        })
        .collect();
    insert_refund_lines(tx, &refund_lines).await?;
    for line in &refund_lines {
        let counted = sql_execute!(
            tx,
            "UPDATE order_lines SET refunded_quantity = refunded_quantity + $1
             WHERE order_id = $2 AND product_id = $3 AND refunded_quantity + $1 <= quantity",
            line.quantity,
            order_id,
            line.product_id
        )?;
        if counted != 1 {
            return Err(anyhow::anyhow!(
                "order {order_id} line {} changed while refunding",
                line.product_id
            )
            .into());
        }
        if restock {
            sql_execute!(
                tx,
                "UPDATE products SET stock = stock + $1, updated_at = $2 WHERE id = $3",
                line.quantity,
                now,
                line.product_id
            )?;
        }
    }

    // Credited in full, even above the maximum balance (SPEC §9.2).
    let balance_after: i64 = sql_scalar!(
        tx,
        "UPDATE users SET balance = balance + $1, balance_updated_at = $2 WHERE id = $3 RETURNING balance",
        amount,
        now,
        order.user_id
    )?;
    balance::append_ledger(
        tx,
        order.user_id,
        LedgerKind::Refund,
        amount,
        balance_after,
        Some(order_id),
        now,
    )
    .await?;

    let units_left: i64 = lines
        .iter()
        .map(|l| {
            let now_refunded = planned
                .iter()
                .find(|p| p.product_id == l.product_id)
                .map_or(0, |p| p.quantity);
            l.quantity - l.refunded_quantity - now_refunded
        })
        .sum();
    let to = OrderStatus::after_refund(units_left);
    let changed = sql_execute!(
        tx,
        "UPDATE orders SET status = $1, refunded_amount = refunded_amount + $2, updated_at = $3
         WHERE id = $4 AND status = $5 AND refunded_amount + $2 <= total",
        to.as_str(),
        amount,
        now,
        order_id,
        status.as_str()
    )?;
    if changed != 1 {
        return Err(anyhow::anyhow!("order {order_id} changed while refunding").into());
    }
    record_transition(tx, order_id, Some(status), to, "REFUND", now).await?;

    let mut after = order;
    after.status = to.as_str().to_string();
    after.refunded_amount += amount;
    after.updated_at = now;
    let details = RefundDetails {
        refund,
        lines: refund_lines,
    };
    outbox::enqueue_order_refunded(tx, &after, &lines, details.event_json(), now).await?;
    Ok(details)
}

async fn insert_refund_lines(tx: &mut Tx, lines: &[RefundLineRow]) -> AppResult<()> {
    let sql = crate::db::multi_row(
        "INSERT INTO refund_lines (refund_id, product_id, quantity, amount)",
        4,
        lines.len(),
    );
    let mut args = Vec::with_capacity(lines.len() * 4);
    for l in lines {
        args.extend([
            Arg::I64(l.refund_id),
            Arg::I64(l.product_id),
            Arg::I64(l.quantity),
            Arg::I64(l.amount),
        ]);
    }
    crate::db::execute_args(tx, sql, &args).await?;
    Ok(())
}

/// The rows refunding `order_id` locks: its products (when restocking), its member's balance
/// row and the order. An order's lines never change, so this read outside the transaction is
/// exact; an unknown order declares only itself (the command answers 404).
pub async fn refunding_locks(db: &Db, order_id: i64, restock: bool) -> AppResult<Locks> {
    let mut conn = db.read().await?;
    let user_id: Option<i64> = sql_scalar_optional!(
        &mut conn,
        "SELECT user_id FROM orders WHERE id = $1",
        order_id
    )?;
    let products = if restock && user_id.is_some() {
        order_lines(&mut conn, order_id)
            .await?
            .into_iter()
            .map(|l| l.product_id)
            .collect()
    } else {
        Vec::new()
    };
    Ok(Locks {
        products,
        users: user_id.into_iter().collect(),
        orders: vec![order_id],
        ..Locks::none()
    })
}

/// The refunds of one order, oldest first, with their lines.
pub(super) async fn order_refunds(
    h: &mut impl Handle,
    order_id: i64,
) -> AppResult<Vec<RefundDetails>> {
    let refunds = sql_all!(RefundRow; h,
        "SELECT id, order_id, user_id, amount, restock, reason, created_at FROM refunds
         WHERE order_id = $1 ORDER BY id", order_id)?;
    if refunds.is_empty() {
        return Ok(Vec::new());
    }
    let lines = sql_all!(RefundLineRow; h,
        "SELECT rl.refund_id, rl.product_id, rl.quantity, rl.amount
         FROM refund_lines rl JOIN refunds r ON r.id = rl.refund_id
         WHERE r.order_id = $1 ORDER BY rl.refund_id, rl.product_id", order_id)?;
    Ok(attach(refunds, &lines))
}

/// The refunds of a member's orders with ids in `oldest..=newest` (one page of orders).
pub(super) async fn member_refunds(
    h: &mut impl Handle,
    user_id: i64,
    oldest: i64,
    newest: i64,
) -> AppResult<Vec<RefundDetails>> {
    let refunds = sql_all!(RefundRow; h,
        "SELECT id, order_id, user_id, amount, restock, reason, created_at FROM refunds
         WHERE user_id = $1 AND order_id BETWEEN $2 AND $3 ORDER BY id",
        user_id, oldest, newest)?;
    if refunds.is_empty() {
        return Ok(Vec::new());
    }
    let lines = sql_all!(RefundLineRow; h,
        "SELECT rl.refund_id, rl.product_id, rl.quantity, rl.amount
         FROM refund_lines rl JOIN refunds r ON r.id = rl.refund_id
         WHERE r.user_id = $1 AND r.order_id BETWEEN $2 AND $3 ORDER BY rl.refund_id, rl.product_id",
        user_id, oldest, newest)?;
    Ok(attach(refunds, &lines))
}

fn attach(refunds: Vec<RefundRow>, lines: &[RefundLineRow]) -> Vec<RefundDetails> {
    refunds
        .into_iter()
        .map(|refund| {
            let lines = lines
                .iter()
                .filter(|l| l.refund_id == refund.id)
                .cloned()
                .collect();
            RefundDetails { refund, lines }
        })
        .collect()
}

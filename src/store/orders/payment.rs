//! Paying: the debit (never below zero) and what follows it — ledger, payment, cart clean-up,
//! outbox event — or a recorded FAILED attempt; paying an existing PENDING order.

use chrono::{DateTime, Utc};

use super::lifecycle::{close_order, lock_order, record_transition};
use super::*;
use crate::db::work::{self, Table};
use crate::db::{Arg, Db, Locks, Tx};
use crate::domain::money::LedgerKind;
use crate::store::{balance, outbox};
use crate::{sql_execute, sql_one, sql_scalar, sql_scalar_optional};

/// Take `amount` from the member's balance if it covers it. The balance after, or `None`.
/// A PostgreSQL batch takes it from the balance row it holds (`db::work`): no round trip.
pub(super) async fn debit(
    tx: &mut Tx,
    user_id: i64,
    amount: i64,
    now: DateTime<Utc>,
) -> AppResult<Option<i64>> {
    if let Some(cached) = work::balance(tx, user_id).await? {
        return Ok(match cached {
            Some(balance) if balance >= amount => {
                work::set_balance(tx, user_id, balance - amount, now);
                Some(balance - amount)
            }
            _ => None,
        });
    }
    debit_now(tx, user_id, amount, now).await
}

/// [`debit`] as one conditional UPDATE, for a command that goes on with other statements.
async fn debit_now(
    tx: &mut Tx,
    user_id: i64,
    amount: i64,
    now: DateTime<Utc>,
) -> AppResult<Option<i64>> {
    Ok(sql_scalar_optional!(tx,
        "UPDATE users SET balance = balance - $1, balance_updated_at = $2 WHERE id = $3 AND balance >= $1
         RETURNING balance",
        amount, now, user_id)?)
}

/// A FAILED payment attempt (insufficient balance): recorded, the order stays PENDING.
pub(super) async fn record_failed(
    tx: &mut Tx,
    order: &OrderRow,
    now: DateTime<Utc>,
) -> AppResult<(Payment, PaymentRow)> {
    let attempt = match work::new_id(tx, Table::Payments).await? {
        Some(id) => insert_payment(tx, id, order, Some("INSUFFICIENT_BALANCE"), now).await?,
        None => sql_one!(PaymentRow; tx,
            "INSERT INTO payments (order_id, user_id, amount, status, failure_code, created_at)
             VALUES ($1, $2, $3, 'FAILED', 'INSUFFICIENT_BALANCE', $4)
             RETURNING id, order_id, amount, status, failure_code, created_at",
            order.id, order.user_id, order.total, now)?,
    };
    let balance: i64 = match work::balance(tx, order.user_id).await? {
        Some(Some(balance)) => balance,
        _ => sql_scalar!(tx, "SELECT balance FROM users WHERE id = $1", order.user_id)?,
    };
    let payment = Payment::InsufficientBalance {
        balance,
        total: order.total,
    };
    Ok((payment, attempt))
}

/// What follows a successful debit of a PAID order: ledger, payment, cart clean-up, outbox.
pub(super) async fn record_paid(
    tx: &mut Tx,
    order: &mut OrderRow,
    lines: &[LineRow],
    balance_after: i64,
    now: DateTime<Utc>,
) -> AppResult<PaymentRow> {
    balance::append_ledger(
        tx,
        order.user_id,
        LedgerKind::Payment,
        order.total,
        balance_after,
        Some(order.id),
        now,
    )
    .await?;
    let attempt = match work::new_id(tx, Table::Payments).await? {
        Some(id) => insert_payment(tx, id, order, None, now).await?,
        None => sql_one!(PaymentRow; tx,
            "INSERT INTO payments (order_id, user_id, amount, status, created_at) VALUES ($1, $2, $3, 'SUCCEEDED', $4)
             RETURNING id, order_id, amount, status, failure_code, created_at",
            order.id, order.user_id, order.total, now)?,
    };
    if order.from_cart {
        sql_execute!(
            tx,
            "DELETE FROM cart_items WHERE user_id = $1
             AND product_id IN (SELECT product_id FROM order_lines WHERE order_id = $2)",
            order.user_id,
            order.id
        )?;
    }
    order.status = OrderStatus::Paid.as_str().to_string();
    order.paid_at = Some(now);
    order.updated_at = now;
    outbox::enqueue_order_paid(tx, order, lines, now).await?;
    Ok(attempt)
}

/// A payment row with an id taken in advance, left to the batch's flush: SUCCEEDED, or
/// FAILED with `failure`.
async fn insert_payment(
    tx: &mut Tx,
    id: i64,
    order: &OrderRow,
    failure: Option<&str>,
    now: DateTime<Utc>,
) -> AppResult<PaymentRow> {
    let row = PaymentRow {
        id,
        order_id: order.id,
        amount: order.total,
        status: if failure.is_some() {
            "FAILED"
        } else {
            "SUCCEEDED"
        }
        .to_string(),
        failure_code: failure.map(str::to_string),
        created_at: now,
    };
    work::insert(
        tx,
        Table::Payments,
        vec![vec![
            Arg::I64(row.id),
            Arg::I64(row.order_id),
            Arg::I64(order.user_id),
            Arg::I64(row.amount),
            Arg::Text(row.status.clone()),
            Arg::OptText(row.failure_code.clone()),
            Arg::Time(row.created_at),
        ]],
    )
    .await?;
    Ok(row)
}

/// Pay a PENDING order whose row this transaction holds: debit (never below zero), PAID,
/// ledger, payment, cart clean-up, outbox event — or a recorded FAILED attempt.
/// `lines` are the order's lines (for the outbox payload); on success `order` is updated to PAID.
async fn settle(
    tx: &mut Tx,
    order: &mut OrderRow,
    lines: &[LineRow],
    now: DateTime<Utc>,
) -> AppResult<(Payment, PaymentRow)> {
    let Some(balance_after) = debit_now(tx, order.user_id, order.total, now).await? else {
        return record_failed(tx, order, now).await;
    };
    let paid = sql_execute!(
        tx,
        "UPDATE orders SET status = 'PAID', paid_at = $1, updated_at = $1 WHERE id = $2 AND status = 'PENDING'",
        now,
        order.id
    )?;
    if paid != 1 {
        return Err(
            anyhow::anyhow!("order {} left PENDING while its payment ran", order.id).into(),
        );
    }
    record_transition(
        tx,
        order.id,
        Some(OrderStatus::Pending),
        OrderStatus::Paid,
        "PAYMENT_SUCCEEDED",
        now,
    )
    .await?;
    let attempt = record_paid(tx, order, lines, balance_after, now).await?;
    Ok((Payment::Succeeded, attempt))
}

/// Pay an existing order.
pub async fn pay_order(
    tx: &mut Tx,
    order_id: i64,
    actor: Actor,
    now: DateTime<Utc>,
) -> AppResult<PayOutcome> {
    let order = lock_order(tx, order_id, actor, now).await?;
    let status = order.status()?;
    if !status.can_become(OrderStatus::Paid) {
        return Ok(PayOutcome::NotPayable(status));
    }
    if order.expires_at <= now {
        close_order(tx, &order, OrderStatus::Expired, "EXPIRED_AT_PAYMENT", now).await?;
        return Ok(PayOutcome::ExpiredNow);
    }
    let mut order = order;
    let lines = order_lines(tx, order.id).await?;
    Ok(PayOutcome::Paid(
        settle(tx, &mut order, &lines, now).await?.0,
    ))
}

/// The rows paying `order_id` locks: the order and its member's balance row.
pub async fn paying_locks(db: &Db, order_id: i64) -> AppResult<Locks> {
    let mut conn = db.read().await?;
    let user_id: Option<i64> = sql_scalar_optional!(
        &mut conn,
        "SELECT user_id FROM orders WHERE id = $1",
        order_id
    )?;
    Ok(Locks {
        users: user_id.into_iter().collect(),
        orders: vec![order_id],
        ..Locks::none()
    })
}

//! Orders and payments (SPEC §6): the business transactions, written once for both backends.
//!
//! Lock order (deadlock freedom): product rows in ascending id, then the user coupon, then the
//! member's balance row. Paying, cancelling and expiring first lock the order row itself with
//! a conditional UPDATE, so two of them never work on one order at the same time, and each
//! status change is a conditional `UPDATE … WHERE status = 'PENDING'`: whatever races, an
//! order leaves PENDING exactly once, and stock and coupon are given back exactly once.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::db::{Arg, Db, Handle, Locks, Tx};
use crate::domain::coupon::NotApplicable;
use crate::domain::money::LedgerKind;
use crate::domain::order::{OrderLines, OrderStatus, PricingError, line_total, price_order};
use crate::domain::product::ProductStatus;
use crate::error::{AppError, AppResult};
use crate::store::{balance, cart, coupons, outbox};
use crate::{sql_all, sql_execute, sql_one, sql_optional, sql_scalar, sql_scalar_optional};

macro_rules! order_columns {
    () => {
        "id, user_id, status, from_cart, subtotal, discount, total, user_coupon_id, coupon_id, expires_at, created_at, updated_at, paid_at"
    };
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: i64,
    pub user_id: i64,
    pub status: String,
    pub from_cart: bool,
    pub subtotal: i64,
    pub discount: i64,
    pub total: i64,
    pub user_coupon_id: Option<i64>,
    pub coupon_id: Option<i64>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}
crate::lite_row!(OrderRow {
    id,
    user_id,
    status,
    from_cart,
    subtotal,
    discount,
    total,
    user_coupon_id,
    coupon_id,
    expires_at,
    created_at,
    updated_at,
    paid_at
});

impl OrderRow {
    pub fn status(&self) -> AppResult<OrderStatus> {
        OrderStatus::parse(&self.status).ok_or_else(|| {
            anyhow::anyhow!("order {} has unknown status {:?}", self.id, self.status).into()
        })
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LineRow {
    pub order_id: i64,
    pub product_id: i64,
    pub name: String,
    pub unit_price: i64,
    pub quantity: i64,
    pub line_total: i64,
}
crate::lite_row!(LineRow {
    order_id,
    product_id,
    name,
    unit_price,
    quantity,
    line_total
});

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentRow {
    pub id: i64,
    pub order_id: i64,
    pub amount: i64,
    pub status: String,
    pub failure_code: Option<String>,
    pub created_at: DateTime<Utc>,
}
crate::lite_row!(PaymentRow {
    id,
    order_id,
    amount,
    status,
    failure_code,
    created_at
});

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryRow {
    pub order_id: i64,
    pub from_status: Option<String>,
    pub to_status: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}
crate::lite_row!(HistoryRow {
    order_id,
    from_status,
    to_status,
    reason,
    created_at
});

/// Where an order's lines come from.
pub enum OrderSource {
    Items(OrderLines),
    /// The whole cart, or only these products of it.
    Cart {
        product_ids: Option<Vec<i64>>,
    },
}

/// Which of the member's coupons to apply: by campaign (a member holds at most one per
/// campaign) or by user-coupon id.
#[derive(Clone, Copy, Debug)]
pub enum CouponRef {
    Campaign(i64),
    UserCoupon(i64),
}

pub struct PlaceOrder {
    pub user_id: i64,
    pub source: OrderSource,
    pub coupon: Option<CouponRef>,
    pub pay: bool,
    pub reservation_ttl: Duration,
    pub now: DateTime<Utc>,
}

/// What became of a payment attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payment {
    Succeeded,
    /// Recorded as FAILED; the order stays PENDING with everything held.
    InsufficientBalance {
        balance: i64,
        total: i64,
    },
}

pub struct Placed {
    /// The order as committed, assembled from what the transaction wrote (no re-read).
    pub details: OrderDetails,
    /// `None` when the order was placed with `pay: false`.
    pub payment: Option<Payment>,
}

#[derive(sqlx::FromRow)]
struct Reserved {
    name: String,
    price: i64,
}
crate::lite_row!(Reserved { name, price });

fn coupon_invalid(reason: &str, message: &str, extra: serde_json::Value) -> AppError {
    let mut details = json!({ "reason": reason });
    if let (Some(d), Some(e)) = (details.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    AppError::bad_request("COUPON_INVALID", message, details)
}

pub fn order_not_found(order_id: i64) -> AppError {
    AppError::not_found("ORDER_NOT_FOUND", "order", order_id)
}

/// Create an order: reserve stock, snapshot lines, take the coupon, and (if asked) pay.
pub async fn place_order(tx: &mut Tx, cmd: PlaceOrder) -> AppResult<Placed> {
    let PlaceOrder {
        user_id,
        source,
        coupon,
        pay,
        reservation_ttl,
        now,
    } = cmd;
    let (lines, from_cart) = match source {
        OrderSource::Items(lines) => (lines, false),
        OrderSource::Cart { product_ids } => (
            cart::lines_for_order(tx, user_id, product_ids.as_deref()).await?,
            true,
        ),
    };

    // Reserve stock in ascending product id; status, price and stock are read under the row lock.
    let mut snapshot: Vec<(i64, String, i64, i64, i64)> = Vec::with_capacity(lines.lines().len());
    for (index, &(product_id, quantity)) in lines.lines().iter().enumerate() {
        let reserved = sql_optional!(Reserved; tx,
            "UPDATE products SET stock = stock - $1 WHERE id = $2 AND status = 'ON_SALE' AND stock >= $1
             RETURNING name, price",
            quantity, product_id)?;
        let Some(r) = reserved else {
            return Err(why_not_reservable(tx, &lines, index).await?);
        };
        let total =
            line_total(r.price, quantity).map_err(|_| anyhow::anyhow!("line total overflow"))?;
        snapshot.push((product_id, r.name, r.price, quantity, total));
    }

    let user_coupon = match coupon {
        Some(c) => Some(usable_coupon(tx, user_id, c, now).await?),
        None => None,
    };
    let terms = user_coupon.as_ref().map(|c| c.terms()).transpose()?;
    let totals: Vec<i64> = snapshot.iter().map(|l| l.4).collect();
    let amounts = price_order(&totals, terms.as_ref()).map_err(|e| match e {
        PricingError::Coupon(NotApplicable::MinOrderAmountNotMet { min_order_amount }) => coupon_invalid(
            "MIN_ORDER_AMOUNT_NOT_MET",
            "the order does not reach the coupon's minimum order amount",
            json!({ "minOrderAmount": min_order_amount, "subtotal": totals.iter().sum::<i64>() }),
        ),
        PricingError::Overflow => AppError::validation("items", "order total is too large"),
    })?;

    // Pay at once when asked: debit first (never below zero), so the order row is written
    // once, already PAID, with its history in one statement.
    let debited = if pay {
        debit(tx, user_id, amounts.total, now).await?
    } else {
        None
    };
    let status = if debited.is_some() {
        OrderStatus::Paid
    } else {
        OrderStatus::Pending
    };
    let mut order = sql_one!(OrderRow; tx,
        concat!("INSERT INTO orders (user_id, status, from_cart, subtotal, discount, total, user_coupon_id, coupon_id,
                                     expires_at, created_at, updated_at, paid_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11) RETURNING ", order_columns!()),
        user_id, status.as_str(), from_cart, amounts.subtotal, amounts.discount, amounts.total,
        user_coupon.as_ref().map(|c| c.id), user_coupon.as_ref().map(|c| c.coupon_id),
        now + reservation_ttl, now, debited.map(|_| now))?;
    let lines: Vec<LineRow> = snapshot
        .into_iter()
        .map(
            |(product_id, name, unit_price, quantity, line_total)| LineRow {
                order_id: order.id,
                product_id,
                name,
                unit_price,
                quantity,
                line_total,
            },
        )
        .collect();
    insert_lines(tx, &lines).await?;
    if let Some(c) = &user_coupon {
        // Conditional: of several orders racing for one coupon, exactly one takes it.
        let taken = sql_execute!(
            tx,
            "UPDATE user_coupons SET status = 'USED', used_at = $1, order_id = $2
             WHERE id = $3 AND user_id = $4 AND status = 'AVAILABLE' AND expires_at > $1",
            now,
            order.id,
            c.id,
            user_id
        )?;
        if taken == 0 {
            return Err(coupon_invalid(
                "USED",
                "the coupon has already been used",
                json!({ "userCouponId": c.id }),
            ));
        }
    }
    let mut history = vec![HistoryRow {
        order_id: order.id,
        from_status: None,
        to_status: OrderStatus::Pending.as_str().to_string(),
        reason: "PLACED".to_string(),
        created_at: now,
    }];
    if debited.is_some() {
        history.push(HistoryRow {
            order_id: order.id,
            from_status: Some(OrderStatus::Pending.as_str().to_string()),
            to_status: OrderStatus::Paid.as_str().to_string(),
            reason: "PAYMENT_SUCCEEDED".to_string(),
            created_at: now,
        });
    }
    insert_history(tx, &history).await?;

    let mut payments = Vec::new();
    let payment = match (pay, debited) {
        (false, _) => None,
        (true, Some(balance_after)) => {
            payments.push(record_paid(tx, &mut order, &lines, balance_after, now).await?);
            Some(Payment::Succeeded)
        }
        (true, None) => {
            let (payment, attempt) = record_failed(tx, &order, now).await?;
            payments.push(attempt);
            Some(payment)
        }
    };
    Ok(Placed {
        details: OrderDetails {
            order,
            lines,
            payments,
            history,
        },
        payment,
    })
}

/// Lines of one order in one statement.
async fn insert_lines(tx: &mut Tx, lines: &[LineRow]) -> AppResult<()> {
    let sql = crate::db::multi_row(
        "INSERT INTO order_lines (order_id, product_id, name, unit_price, quantity, line_total)",
        6,
        lines.len(),
    );
    let mut args = Vec::with_capacity(lines.len() * 6);
    for l in lines {
        args.extend([
            Arg::I64(l.order_id),
            Arg::I64(l.product_id),
            Arg::Text(l.name.clone()),
            Arg::I64(l.unit_price),
            Arg::I64(l.quantity),
            Arg::I64(l.line_total),
        ]);
    }
    crate::db::execute_args(tx, sql, &args).await?;
    Ok(())
}

/// Status-history rows in one statement.
async fn insert_history(tx: &mut Tx, rows: &[HistoryRow]) -> AppResult<()> {
    let sql = crate::db::multi_row(
        "INSERT INTO order_status_history (order_id, from_status, to_status, reason, created_at)",
        5,
        rows.len(),
    );
    let mut args = Vec::with_capacity(rows.len() * 5);
    for h in rows {
        args.extend([
            Arg::I64(h.order_id),
            Arg::OptText(h.from_status.clone()),
            Arg::Text(h.to_status.clone()),
            Arg::Text(h.reason.clone()),
            Arg::Time(h.created_at),
        ]);
    }
    crate::db::execute_args(tx, sql, &args).await?;
    Ok(())
}

/// Take `amount` from the member's balance if it covers it. The balance after, or `None`.
async fn debit(
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
async fn record_failed(
    tx: &mut Tx,
    order: &OrderRow,
    now: DateTime<Utc>,
) -> AppResult<(Payment, PaymentRow)> {
    let attempt = sql_one!(PaymentRow; tx,
        "INSERT INTO payments (order_id, user_id, amount, status, failure_code, created_at)
         VALUES ($1, $2, $3, 'FAILED', 'INSUFFICIENT_BALANCE', $4)
         RETURNING id, order_id, amount, status, failure_code, created_at",
        order.id, order.user_id, order.total, now)?;
    let balance: i64 = sql_scalar!(tx, "SELECT balance FROM users WHERE id = $1", order.user_id)?;
    let payment = Payment::InsufficientBalance {
        balance,
        total: order.total,
    };
    Ok((payment, attempt))
}

/// What follows a successful debit of a PAID order: ledger, payment, cart clean-up, outbox.
async fn record_paid(
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
    let attempt = sql_one!(PaymentRow; tx,
        "INSERT INTO payments (order_id, user_id, amount, status, created_at) VALUES ($1, $2, $3, 'SUCCEEDED', $4)
         RETURNING id, order_id, amount, status, failure_code, created_at",
        order.id, order.user_id, order.total, now)?;
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

/// Explain why the line at `failed` could not be reserved, naming every product that fails.
async fn why_not_reservable(tx: &mut Tx, lines: &OrderLines, failed: usize) -> AppResult<AppError> {
    let mut missing = Vec::new();
    let mut not_on_sale = Vec::new();
    let mut short = Vec::new();
    for (index, &(product_id, quantity)) in lines.lines().iter().enumerate() {
        let row: Option<(String, i64)> = sql_optional!((String, i64); tx, "SELECT status, stock FROM products WHERE id = $1", product_id)?;
        let Some((status, stock)) = row else {
            missing.push(product_id);
            continue;
        };
        // Lines before `failed` were reserved in this (doomed) transaction: count them back.
        let available = if index < failed {
            stock + quantity
        } else {
            stock
        };
        if ProductStatus::parse(&status) != Some(ProductStatus::OnSale) {
            not_on_sale.push(json!({ "productId": product_id, "status": status }));
        } else if available < quantity {
            short.push(
                json!({ "productId": product_id, "requested": quantity, "available": available }),
            );
        }
    }
    Ok(if !missing.is_empty() {
        AppError::product_not_found(missing[0])
    } else if !not_on_sale.is_empty() {
        AppError::conflict(
            "PRODUCT_NOT_ON_SALE",
            "some products are not on sale",
            json!({ "products": not_on_sale }),
        )
    } else if !short.is_empty() {
        AppError::conflict(
            "PRODUCT_OUT_OF_STOCK",
            "some products are out of stock",
            json!({ "products": short }),
        )
    } else {
        // The row changed between the UPDATE and this read; report the line as out of stock.
        let (product_id, quantity) = lines.lines()[failed];
        AppError::conflict(
            "PRODUCT_OUT_OF_STOCK",
            "some products are out of stock",
            json!({ "products": [{ "productId": product_id, "requested": quantity }] }),
        )
    })
}

/// The member's coupon if it can be used now; `COUPON_INVALID` otherwise.
async fn usable_coupon(
    tx: &mut Tx,
    user_id: i64,
    coupon: CouponRef,
    now: DateTime<Utc>,
) -> AppResult<coupons::UserCouponRow> {
    let found = match coupon {
        CouponRef::UserCoupon(id) => coupons::find_user_coupon(tx, id).await?,
        CouponRef::Campaign(coupon_id) => {
            let id: Option<i64> = sql_scalar_optional!(
                tx,
                "SELECT id FROM user_coupons WHERE coupon_id = $1 AND user_id = $2",
                coupon_id,
                user_id
            )?;
            match id {
                Some(id) => coupons::find_user_coupon(tx, id).await?,
                None => None,
            }
        }
    };
    // Someone else's coupon is answered exactly like a missing one.
    let Some(c) = found.filter(|c| c.user_id == user_id) else {
        return Err(coupon_invalid(
            "NOT_FOUND",
            "you hold no such coupon",
            json!({}),
        ));
    };
    match c.visible_status(now) {
        crate::domain::coupon::UserCouponStatus::Available => Ok(c),
        crate::domain::coupon::UserCouponStatus::Used => Err(coupon_invalid(
            "USED",
            "the coupon has already been used",
            json!({ "userCouponId": c.id }),
        )),
        crate::domain::coupon::UserCouponStatus::Expired => Err(coupon_invalid(
            "EXPIRED",
            "the coupon has expired",
            json!({ "userCouponId": c.id }),
        )),
    }
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
    let Some(balance_after) = debit(tx, order.user_id, order.total, now).await? else {
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

/// Who asks: a member may only act on their own orders; admins on any.
#[derive(Clone, Copy, Debug)]
pub struct Actor {
    pub member: Option<i64>,
}

/// Lock the order row (a no-op conditional UPDATE) and check it belongs to the actor.
async fn lock_order(
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

/// What `POST /orders/{id}/pay` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayOutcome {
    Paid(Payment),
    /// The order was PENDING but past its reservation: it expired now (stock and coupon back).
    ExpiredNow,
    NotPayable(OrderStatus),
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

/// Move a PENDING order to CANCELLED or EXPIRED and give back its stock and coupon — exactly
/// once, because the status change is conditional on PENDING.
async fn close_order(
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
    for line in order_lines(tx, order.id).await? {
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
    record_transition(tx, order.id, Some(OrderStatus::Pending), to, reason, now).await
}

async fn record_transition(
    tx: &mut Tx,
    order_id: i64,
    from: Option<OrderStatus>,
    to: OrderStatus,
    reason: &str,
    now: DateTime<Utc>,
) -> AppResult<()> {
    sql_execute!(
        tx,
        "INSERT INTO order_status_history (order_id, from_status, to_status, reason, created_at) VALUES ($1, $2, $3, $4, $5)",
        order_id,
        from.map(OrderStatus::as_str),
        to.as_str(),
        reason,
        now
    )?;
    Ok(())
}

// ---- reads ----

/// Lines in ascending product id (the lock order).
pub async fn order_lines(h: &mut impl Handle, order_id: i64) -> AppResult<Vec<LineRow>> {
    Ok(sql_all!(LineRow; h,
        "SELECT order_id, product_id, name, unit_price, quantity, line_total FROM order_lines
         WHERE order_id = $1 ORDER BY product_id", order_id)?)
}

/// An order with everything shown about it.
pub struct OrderDetails {
    pub order: OrderRow,
    pub lines: Vec<LineRow>,
    pub payments: Vec<PaymentRow>,
    pub history: Vec<HistoryRow>,
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
    Ok(OrderDetails {
        order,
        lines,
        payments,
        history,
    })
}

/// A member's orders, newest first, with details loaded in three batched queries (no N+1).
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
        "SELECT l.order_id, l.product_id, l.name, l.unit_price, l.quantity, l.line_total
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
            }
        })
        .collect())
}

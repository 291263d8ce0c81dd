//! Orders and payments (SPEC §6): the business transactions, written once for both backends.
//!
//! Lock order (deadlock freedom): product rows in ascending id, then the member's balance
//! row, then the user coupon. Paying, cancelling and expiring first lock the order row itself
//! with a conditional UPDATE, so two of them never work on one order at the same time, and
//! each status change is a conditional `UPDATE … WHERE status = 'PENDING'`: whatever races, an
//! order leaves PENDING exactly once, and stock and coupon are given back exactly once. On
//! PostgreSQL the committer has already locked the declared rows of the whole batch in one
//! global order (`crate::db::committer`).
//!
//! Split by seam: [`place`] (reserve, price, write, pay at once), [`payment`] (debit and what
//! follows, paying an existing order), [`lifecycle`] (cancel, expire, give back), [`read`].

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::domain::order::{OrderLines, OrderStatus};
use crate::error::{AppError, AppResult};

macro_rules! order_columns {
    () => {
        "id, user_id, status, from_cart, subtotal, discount, total, user_coupon_id, coupon_id, expires_at, created_at, updated_at, paid_at, confirmed_at, refunded_amount"
    };
}
// The back office's order lists read the same columns (`store::admin`).
pub(crate) use order_columns;

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
    pub confirmed_at: Option<DateTime<Utc>>,
    /// Sum of the order's refunds.
    pub refunded_amount: i64,
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
    paid_at,
    confirmed_at,
    refunded_amount
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
    /// Units of this line refunded so far.
    pub refunded_quantity: i64,
}
crate::lite_row!(LineRow {
    order_id,
    product_id,
    name,
    unit_price,
    quantity,
    line_total,
    refunded_quantity
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

mod lifecycle;
mod payment;
mod place;
mod read;
mod refund;

pub use lifecycle::{cancel_order, closing_locks, confirm_order, due_for_expiry, expire_order};
pub use payment::{pay_order, paying_locks};
pub use place::place_order;
pub use read::{find_order, list_orders, order_lines};
pub use refund::{
    RefundDetails, RefundLineRow, RefundOrder, RefundRow, refund_order, refunding_locks,
};

pub(crate) fn coupon_invalid(reason: &str, message: &str, extra: serde_json::Value) -> AppError {
    let mut details = json!({ "reason": reason });
    if let (Some(d), Some(e)) = (details.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    AppError::bad_request("COUPON_INVALID", message, details)
}

pub fn order_not_found(order_id: i64) -> AppError {
    AppError::not_found("ORDER_NOT_FOUND", "order", order_id)
}

/// Who asks: a member may only act on their own orders; admins on any.
#[derive(Clone, Copy, Debug)]
pub struct Actor {
    pub member: Option<i64>,
}

/// What `POST /orders/{id}/pay` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayOutcome {
    Paid(Payment),
    /// The order was PENDING but past its reservation: it expired now (stock and coupon back).
    ExpiredNow,
    NotPayable(OrderStatus),
}

/// An order with everything shown about it.
pub struct OrderDetails {
    pub order: OrderRow,
    pub lines: Vec<LineRow>,
    pub payments: Vec<PaymentRow>,
    pub history: Vec<HistoryRow>,
    pub refunds: Vec<RefundDetails>,
}

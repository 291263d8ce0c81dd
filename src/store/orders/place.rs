//! Placing an order: reserve stock in ascending product id, price it with its coupon, write
//! it (already PAID when paid at once), and explain a rejection.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::payment::{debit, record_failed, record_paid};
use super::*;
use crate::db::work::{self, Table};
use crate::db::{Arg, Tx};
use crate::domain::coupon::NotApplicable;
use crate::domain::order::{PricingError, line_total, price_order};
use crate::domain::product::ProductStatus;
use crate::store::{cart, coupons};
use crate::{sql_execute, sql_one, sql_optional, sql_scalar_optional};

#[derive(sqlx::FromRow)]
struct Reserved {
    name: String,
    price: i64,
}
crate::lite_row!(Reserved { name, price });

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
        let Some(r) = reserve(tx, product_id, quantity).await? else {
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
    let user_coupon_id = user_coupon.as_ref().map(|c| c.id);
    let coupon_id = user_coupon.as_ref().map(|c| c.coupon_id);
    let paid_at = debited.map(|_| now);
    let mut order = match work::new_id(tx, Table::Orders).await? {
        // A PostgreSQL batch: the row is written by the batch's flush.
        Some(id) => {
            let order = OrderRow {
                id,
                user_id,
                status: status.as_str().to_string(),
                from_cart,
                subtotal: amounts.subtotal,
                discount: amounts.discount,
                total: amounts.total,
                user_coupon_id,
                coupon_id,
                expires_at: now + reservation_ttl,
                created_at: now,
                updated_at: now,
                paid_at,
                confirmed_at: None,
                refunded_amount: 0,
            };
            work::insert(tx, Table::Orders, vec![order_args(&order)]).await?;
            order
        }
        None => sql_one!(OrderRow; tx,
            concat!("INSERT INTO orders (user_id, status, from_cart, subtotal, discount, total, user_coupon_id, coupon_id,
                                         expires_at, created_at, updated_at, paid_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11) RETURNING ", order_columns!()),
            user_id, status.as_str(), from_cart, amounts.subtotal, amounts.discount, amounts.total,
            user_coupon_id, coupon_id, now + reservation_ttl, now, paid_at)?,
    };
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
                refunded_quantity: 0,
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
            refunds: Vec::new(),
        },
        payment,
    })
}

/// Take `quantity` of a product on sale, reading its name and price under the row lock;
/// `None` if it is missing, not on sale or short. A PostgreSQL batch takes it from the rows it
/// holds (`db::work`); elsewhere one conditional UPDATE carries the rule.
async fn reserve(tx: &mut Tx, product_id: i64, quantity: i64) -> AppResult<Option<Reserved>> {
    if let Some(cached) = work::product(tx, product_id).await? {
        return Ok(match cached {
            Some(p)
                if ProductStatus::parse(&p.status) == Some(ProductStatus::OnSale)
                    && p.stock >= quantity =>
            {
                work::set_stock(tx, product_id, p.stock - quantity);
                Some(Reserved {
                    name: p.name,
                    price: p.price,
                })
            }
            _ => None,
        });
    }
    Ok(sql_optional!(Reserved; tx,
        "UPDATE products SET stock = stock - $1 WHERE id = $2 AND status = 'ON_SALE' AND stock >= $1
         RETURNING name, price",
        quantity, product_id)?)
}

/// The values of an `orders` row written by a batch's flush (`Table::Orders`).
fn order_args(o: &OrderRow) -> Vec<Arg> {
    vec![
        Arg::I64(o.id),
        Arg::I64(o.user_id),
        Arg::Text(o.status.clone()),
        Arg::Bool(o.from_cart),
        Arg::I64(o.subtotal),
        Arg::I64(o.discount),
        Arg::I64(o.total),
        Arg::OptI64(o.user_coupon_id),
        Arg::OptI64(o.coupon_id),
        Arg::Time(o.expires_at),
        Arg::Time(o.created_at),
        Arg::Time(o.updated_at),
        Arg::OptTime(o.paid_at),
    ]
}

/// Lines of one order (one multi-row statement, or the batch's flush).
pub(super) async fn insert_lines(tx: &mut Tx, lines: &[LineRow]) -> AppResult<()> {
    let rows = lines
        .iter()
        .map(|l| {
            vec![
                Arg::I64(l.order_id),
                Arg::I64(l.product_id),
                Arg::Text(l.name.clone()),
                Arg::I64(l.unit_price),
                Arg::I64(l.quantity),
                Arg::I64(l.line_total),
            ]
        })
        .collect();
    crate::db::work::insert(tx, Table::OrderLines, rows).await?;
    Ok(())
}

/// Status-history rows (one multi-row statement, or the batch's flush).
pub(super) async fn insert_history(tx: &mut Tx, rows: &[HistoryRow]) -> AppResult<()> {
    let rows = rows
        .iter()
        .map(|h| {
            vec![
                Arg::I64(h.order_id),
                Arg::OptText(h.from_status.clone()),
                Arg::Text(h.to_status.clone()),
                Arg::Text(h.reason.clone()),
                Arg::Time(h.created_at),
            ]
        })
        .collect();
    crate::db::work::insert(tx, Table::OrderHistory, rows).await?;
    Ok(())
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

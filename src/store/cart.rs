//! The member's cart.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::db::{Handle, Tx};
use crate::domain::order::OrderLines;
use crate::error::{AppError, AppResult};
use crate::{sql_all, sql_execute};

/// Most distinct products a cart holds.
pub const MAX_CART_LINES: i64 = 100;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CartLineRow {
    pub product_id: i64,
    pub quantity: i64,
    pub name: String,
    pub price: i64,
    pub status: String,
    pub stock: i64,
    pub added_at: DateTime<Utc>,
}
crate::lite_row!(CartLineRow {
    product_id,
    quantity,
    name,
    price,
    status,
    stock,
    added_at
});

/// Set the quantity of a product in the cart (adding the line if needed).
pub async fn put_item(
    tx: &mut Tx,
    user_id: i64,
    product_id: i64,
    quantity: i64,
    now: DateTime<Utc>,
) -> AppResult<()> {
    sql_execute!(tx,
        "INSERT INTO cart_items (user_id, product_id, quantity, added_at, updated_at) VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = excluded.quantity, updated_at = excluded.updated_at",
        user_id, product_id, quantity, now)?;
    let lines: i64 = crate::sql_scalar!(
        tx,
        "SELECT COUNT(*) FROM cart_items WHERE user_id = $1",
        user_id
    )?;
    if lines > MAX_CART_LINES {
        return Err(AppError::conflict(
            "CART_FULL",
            format!("a cart holds at most {MAX_CART_LINES} products"),
            json!({ "maxLines": MAX_CART_LINES }),
        ));
    }
    Ok(())
}

pub async fn remove_item(tx: &mut Tx, user_id: i64, product_id: i64) -> AppResult<u64> {
    Ok(sql_execute!(
        tx,
        "DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2",
        user_id,
        product_id
    )?)
}

pub async fn clear(tx: &mut Tx, user_id: i64) -> AppResult<u64> {
    Ok(sql_execute!(
        tx,
        "DELETE FROM cart_items WHERE user_id = $1",
        user_id
    )?)
}

/// The cart with each product's current price, status and stock.
pub async fn lines(h: &mut impl Handle, user_id: i64) -> AppResult<Vec<CartLineRow>> {
    Ok(sql_all!(CartLineRow; h,
        "SELECT c.product_id, c.quantity, p.name, p.price, p.status, p.stock, c.added_at
         FROM cart_items c JOIN products p ON p.id = c.product_id
         WHERE c.user_id = $1 ORDER BY c.product_id", user_id)?)
}

/// The lines to order from the cart: all of it, or only `product_ids`.
/// The products in a member's cart.
pub async fn product_ids(h: &mut impl Handle, user_id: i64) -> AppResult<Vec<i64>> {
    Ok(sql_all!((i64,); h,
        "SELECT product_id FROM cart_items WHERE user_id = $1 ORDER BY product_id", user_id)?
    .into_iter()
    .map(|(id,)| id)
    .collect())
}

pub async fn lines_for_order(
    tx: &mut Tx,
    user_id: i64,
    product_ids: Option<&[i64]>,
) -> AppResult<OrderLines> {
    let cart: Vec<(i64, i64)> = sql_all!((i64, i64); tx,
        "SELECT product_id, quantity FROM cart_items WHERE user_id = $1 ORDER BY product_id", user_id)?;
    if cart.is_empty() {
        return Err(AppError::conflict(
            "CART_EMPTY",
            "the cart is empty",
            json!({}),
        ));
    }
    let chosen = match product_ids {
        None => cart,
        Some(ids) => {
            if let Some(missing) = ids.iter().find(|id| !cart.iter().any(|(p, _)| p == *id)) {
                return Err(AppError::validation(
                    "productIds",
                    format!("product {missing} is not in the cart"),
                ));
            }
            cart.into_iter().filter(|(p, _)| ids.contains(p)).collect()
        }
    };
    Ok(OrderLines::parse(&chosen, "productIds")?)
}

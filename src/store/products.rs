//! Products and stock. Stock only changes by conditional UPDATE (`stock + delta >= 0`), so it
//! can never go below zero however many requests race.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::db::{Handle, Tx};
use crate::domain::pagination::Page;
use crate::domain::product::{MAX_STOCK, NewProduct, ProductPatch, ProductStatus, StockDelta};
use crate::error::{AppError, AppResult};
use crate::{sql_all, sql_execute, sql_one, sql_optional, sql_scalar_optional};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProductRow {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub price: i64,
    pub status: String,
    pub stock: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
crate::lite_row!(ProductRow {
    id,
    name,
    description,
    price,
    status,
    stock,
    created_at,
    updated_at
});

impl ProductRow {
    pub fn status(&self) -> AppResult<ProductStatus> {
        ProductStatus::parse(&self.status).ok_or_else(|| {
            anyhow::anyhow!("product {} has unknown status {:?}", self.id, self.status).into()
        })
    }
}

pub async fn create_product(
    tx: &mut Tx,
    p: &NewProduct,
    now: DateTime<Utc>,
) -> AppResult<ProductRow> {
    let row = sql_one!(ProductRow; tx,
        "INSERT INTO products (name, description, price, status, stock, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)
         RETURNING id, name, description, price, status, stock, created_at, updated_at",
        &p.name, p.description.as_deref(), p.price, p.status.as_str(), p.stock, now)?;
    if p.stock > 0 {
        record_adjustment(tx, row.id, p.stock, "INITIAL", now).await?;
    }
    Ok(row)
}

pub async fn update_product(
    tx: &mut Tx,
    id: i64,
    patch: &ProductPatch,
    now: DateTime<Utc>,
) -> AppResult<ProductRow> {
    sql_optional!(ProductRow; tx,
        "UPDATE products SET
             name = COALESCE($1, name),
             description = COALESCE($2, description),
             price = COALESCE($3, price),
             status = COALESCE($4, status),
             updated_at = $5
         WHERE id = $6
         RETURNING id, name, description, price, status, stock, created_at, updated_at",
        patch.name.as_deref(), patch.description.as_deref(), patch.price,
        patch.status.map(ProductStatus::as_str), now, id)?
    .ok_or_else(|| AppError::product_not_found(id))
}

/// Restock (positive) or correct (negative). `409 STOCK_UNDERFLOW` if stock would drop below 0.
pub async fn adjust_stock(
    tx: &mut Tx,
    id: i64,
    delta: StockDelta,
    now: DateTime<Utc>,
) -> AppResult<ProductRow> {
    let delta = delta.get();
    let updated = sql_optional!(ProductRow; tx,
        "UPDATE products SET stock = stock + $1, updated_at = $2
         WHERE id = $3 AND stock + $1 >= 0 AND stock + $1 <= $4
         RETURNING id, name, description, price, status, stock, created_at, updated_at",
        delta, now, id, MAX_STOCK)?;
    let Some(row) = updated else {
        let stock: Option<i64> =
            sql_scalar_optional!(tx, "SELECT stock FROM products WHERE id = $1", id)?;
        return Err(match stock {
            None => AppError::product_not_found(id),
            Some(stock) if stock + delta < 0 => AppError::conflict(
                "STOCK_UNDERFLOW",
                format!("stock {stock} cannot change by {delta}"),
                json!({ "productId": id, "stock": stock, "delta": delta }),
            ),
            Some(stock) => AppError::validation(
                "delta",
                format!("stock {stock} + {delta} exceeds {MAX_STOCK}"),
            ),
        });
    };
    record_adjustment(tx, id, delta, "ADJUSTMENT", now).await?;
    Ok(row)
}

async fn record_adjustment(
    tx: &mut Tx,
    product_id: i64,
    delta: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> AppResult<()> {
    sql_execute!(
        tx,
        "INSERT INTO stock_adjustments (product_id, delta, reason, created_at) VALUES ($1, $2, $3, $4)",
        product_id,
        delta,
        reason,
        now
    )?;
    Ok(())
}

/// One product by id, whatever its status (callers decide what to hide).
pub async fn find_product(h: &mut impl Handle, id: i64) -> AppResult<Option<ProductRow>> {
    Ok(sql_optional!(ProductRow; h,
        "SELECT id, name, description, price, status, stock, created_at, updated_at
         FROM products WHERE id = $1", id)?)
}

/// ON_SALE products in id order.
pub async fn list_on_sale(h: &mut impl Handle, page: Page) -> AppResult<Vec<ProductRow>> {
    Ok(sql_all!(ProductRow; h,
        "SELECT id, name, description, price, status, stock, created_at, updated_at
         FROM products WHERE status = 'ON_SALE' AND ($1 IS NULL OR id > $1)
         ORDER BY id LIMIT $2",
        page.after, page.fetch_limit())?)
}

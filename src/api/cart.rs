//! The member's cart: current price, status and stock per line, and whether it can be ordered.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Principal;
use crate::db::{Locks, Tx};
use crate::domain::order::MAX_QUANTITY;
use crate::domain::product::ProductStatus;
use crate::error::{AppError, AppResult, ErrorBody};
use crate::extract::{JsonBody, ValidPath};
use crate::state::AppState;
use crate::store::{self, cart, products};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_cart, clear_cart))
        .routes(routes!(put_item, remove_item))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartItem {
    pub product_id: i64,
    pub name: String,
    /// Current unit price (orders snapshot the price at order time).
    pub price: i64,
    pub status: ProductStatus,
    pub stock: i64,
    pub quantity: i64,
    pub line_total: i64,
    /// ON_SALE with enough stock right now.
    pub orderable: bool,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub added_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cart {
    pub user_id: i64,
    pub items: Vec<CartItem>,
    /// Sum of the line totals of the orderable lines.
    pub orderable_total: i64,
}

#[derive(Deserialize, ToSchema)]
pub struct PutCartItemRequest {
    /// 1–1000.
    #[schema(example = 2, minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

impl PutCartItemRequest {
    /// The quantity, 1–[`MAX_QUANTITY`].
    pub fn parse(&self) -> AppResult<i64> {
        if !(1..=MAX_QUANTITY).contains(&self.quantity) {
            return Err(AppError::validation(
                "quantity",
                format!("must be between 1 and {MAX_QUANTITY}"),
            ));
        }
        Ok(self.quantity)
    }
}

async fn load_cart(state: &AppState, user_id: i64) -> AppResult<Cart> {
    let mut conn = state.db.read().await?;
    store::users::find_user(&mut conn, user_id)
        .await?
        .ok_or_else(|| AppError::user_not_found(user_id))?;
    let rows = cart::lines(&mut conn, user_id).await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        let status = ProductStatus::parse(&r.status)
            .ok_or_else(|| anyhow::anyhow!("product {} has unknown status", r.product_id))?;
        items.push(CartItem {
            orderable: status.is_orderable() && r.stock >= r.quantity,
            line_total: r.price.saturating_mul(r.quantity),
            status,
            product_id: r.product_id,
            name: r.name,
            price: r.price,
            stock: r.stock,
            quantity: r.quantity,
            added_at: r.added_at,
        });
    }
    let orderable_total = items
        .iter()
        .filter(|i| i.orderable)
        .map(|i| i.line_total)
        .sum();
    Ok(Cart {
        user_id,
        items,
        orderable_total,
    })
}

/// The cart with current prices, status, stock and orderability.
#[utoipa::path(get, path = "/users/{userId}/cart", tag = "cart", security(("bearer" = [])),
    params(("userId" = i64, Path)),
    responses((status = 200, body = Cart), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_cart(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath(user_id): ValidPath<i64>,
) -> AppResult<axum::Json<Cart>> {
    caller.authorize_user(user_id)?;
    Ok(axum::Json(load_cart(&state, user_id).await?))
}

/// Set a product's quantity in the cart (1–1000); adds the line if needed.
#[utoipa::path(put, path = "/users/{userId}/cart/items/{productId}", tag = "cart", security(("bearer" = [])),
    params(("userId" = i64, Path), ("productId" = i64, Path)),
    request_body = PutCartItemRequest,
    responses((status = 200, body = Cart), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND or PRODUCT_NOT_FOUND", body = ErrorBody), (status = 409, description = "CART_FULL", body = ErrorBody)))]
async fn put_item(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath((user_id, product_id)): ValidPath<(i64, i64)>,
    body: JsonBody<PutCartItemRequest>,
) -> AppResult<axum::Json<Cart>> {
    caller.authorize_user(user_id)?;
    let quantity = body.value.parse()?;
    state
        .db
        .write(Locks::none(), async move |tx: &mut Tx| {
            store::users::find_user(tx, user_id)
                .await?
                .ok_or_else(|| AppError::user_not_found(user_id))?;
            let product = products::find_product(tx, product_id).await?;
            if product.is_none_or(|p| p.status == ProductStatus::Discontinued.as_str()) {
                return Err(AppError::product_not_found(product_id));
            }
            cart::put_item(tx, user_id, product_id, quantity, store::now()).await
        })
        .await?;
    Ok(axum::Json(load_cart(&state, user_id).await?))
}

/// Remove a product from the cart (no error if it was not there).
#[utoipa::path(delete, path = "/users/{userId}/cart/items/{productId}", tag = "cart", security(("bearer" = [])),
    params(("userId" = i64, Path), ("productId" = i64, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn remove_item(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath((user_id, product_id)): ValidPath<(i64, i64)>,
) -> AppResult<StatusCode> {
    caller.authorize_user(user_id)?;
    state
        .db
        .write(Locks::none(), async move |tx: &mut Tx| {
            cart::remove_item(tx, user_id, product_id).await
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Empty the cart.
#[utoipa::path(delete, path = "/users/{userId}/cart", tag = "cart", security(("bearer" = [])),
    params(("userId" = i64, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn clear_cart(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath(user_id): ValidPath<i64>,
) -> AppResult<StatusCode> {
    caller.authorize_user(user_id)?;
    state
        .db
        .write(Locks::none(), async move |tx: &mut Tx| {
            cart::clear(tx, user_id).await
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

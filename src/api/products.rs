//! Catalogue (public reads) and admin product management.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{Admin, Principal};
use crate::db::{Locks, Tx};
use crate::domain::pagination::{Page, PageQuery};
use crate::domain::product::{NewProduct, ProductPatch, ProductStatus, StockDelta};
use crate::error::{AppError, AppResult, ErrorBody};
use crate::extract::{IdempotencyKey, JsonBody, ValidPath, ValidQuery};
use crate::idempotency::{self, Reply};
use crate::state::AppState;
use crate::store::{self, products};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_products))
        .routes(routes!(get_product))
        .routes(routes!(create_product))
        .routes(routes!(update_product))
        .routes(routes!(adjust_stock))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    /// Unit price in minor units.
    pub price: i64,
    pub status: ProductStatus,
    pub stock: i64,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<products::ProductRow> for Product {
    type Error = AppError;

    fn try_from(r: products::ProductRow) -> AppResult<Self> {
        Ok(Product {
            status: r.status()?,
            id: r.id,
            name: r.name,
            description: r.description,
            price: r.price,
            stock: r.stock,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductPage {
    pub items: Vec<Product>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateProductRequest {
    /// 1–200 characters, no control characters (trimmed).
    #[schema(
        example = "Ceramic mug",
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
    /// Up to 4000 characters; tab and line feed allowed, no other control character.
    #[schema(max_length = 4000, pattern = r"^[^\x00-\x08\x0B-\x1F\x7F-\x9F]*$")]
    pub description: Option<String>,
    #[schema(example = 12000, minimum = 0, maximum = 1_000_000_000)]
    pub price: i64,
    #[schema(example = 100, minimum = 0, maximum = 1_000_000_000)]
    pub stock: i64,
    /// Default `ON_SALE`.
    pub status: Option<ProductStatus>,
}

#[derive(Deserialize, ToSchema)]
/// At least one field.
pub struct UpdateProductRequest {
    /// 1–200 characters, no control characters (trimmed).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: Option<String>,
    /// Up to 4000 characters; tab and line feed allowed, no other control character.
    #[schema(max_length = 4000, pattern = r"^[^\x00-\x08\x0B-\x1F\x7F-\x9F]*$")]
    pub description: Option<String>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub price: Option<i64>,
    pub status: Option<ProductStatus>,
}

#[derive(Deserialize, ToSchema)]
pub struct StockRequest {
    /// Restock (positive) or correction (negative): non-zero, within ±1,000,000,000; the stock
    /// never goes below 0 (`409 STOCK_UNDERFLOW`).
    #[schema(example = 50, minimum = -1_000_000_000, maximum = 1_000_000_000)]
    pub delta: i64,
}

impl CreateProductRequest {
    /// The valid product this body asks for.
    pub fn parse(&self) -> AppResult<NewProduct> {
        Ok(NewProduct::parse(
            &self.name,
            self.description.as_deref(),
            self.price,
            self.stock,
            self.status,
        )?)
    }
}

impl UpdateProductRequest {
    /// The valid change this body asks for.
    pub fn parse(&self) -> AppResult<ProductPatch> {
        Ok(ProductPatch::parse(
            self.name.as_deref(),
            self.description.as_deref(),
            self.price,
            self.status,
        )?)
    }
}

impl StockRequest {
    pub fn parse(&self) -> AppResult<StockDelta> {
        Ok(StockDelta::parse(self.delta)?)
    }
}

/// Sellable (ON_SALE) products with current stock, in id order.
#[utoipa::path(get, path = "/products", tag = "products", params(PageQuery),
    responses((status = 200, body = ProductPage), (status = 400, body = ErrorBody)))]
async fn list_products(
    State(state): State<AppState>,
    ValidQuery(query): ValidQuery<PageQuery>,
) -> AppResult<axum::Json<ProductPage>> {
    let page = Page::try_from(&query)?;
    let mut conn = state.db.read().await?;
    let rows = products::list_on_sale(&mut conn, page).await?;
    let (rows, next_cursor) = page.finish(rows, |r| r.id);
    let items = rows
        .into_iter()
        .map(Product::try_from)
        .collect::<AppResult<_>>()?;
    Ok(axum::Json(ProductPage { items, next_cursor }))
}

/// One product in any status but DISCONTINUED (admins see those too).
#[utoipa::path(get, path = "/products/{productId}", tag = "products", params(("productId" = i64, Path)),
    responses((status = 200, body = Product),
        (status = 401, description = "UNAUTHORIZED: an Authorization header with an unknown token (none is needed; an admin's shows DISCONTINUED products too)", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_product(
    State(state): State<AppState>,
    caller: Option<Principal>,
    ValidPath(product_id): ValidPath<i64>,
) -> AppResult<axum::Json<Product>> {
    let mut conn = state.db.read().await?;
    let row = products::find_product(&mut conn, product_id).await?;
    let visible = row.filter(|r| {
        r.status != ProductStatus::Discontinued.as_str() || caller == Some(Principal::Admin)
    });
    let row = visible.ok_or_else(|| AppError::product_not_found(product_id))?;
    Ok(axum::Json(row.try_into()?))
}

/// Admin: add a product (its initial stock is recorded as a stock adjustment).
#[utoipa::path(post, path = "/admin/products", tag = "products", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header)),
    request_body = CreateProductRequest,
    responses((status = 201, body = Product), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_product(
    State(state): State<AppState>,
    _admin: Admin,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<CreateProductRequest>,
) -> AppResult<Response> {
    let product = body.value.parse()?;
    idempotency::run(
        &state,
        Principal::Admin,
        key,
        &body.fingerprint,
        Locks::none(),
        async move |tx: &mut Tx| {
            let row = products::create_product(tx, &product, store::now()).await?;
            Reply::json(StatusCode::CREATED, Product::try_from(row)?)
        },
    )
    .await
}

/// Admin: change name, description, price or status. Open orders keep their order-time price.
#[utoipa::path(patch, path = "/admin/products/{productId}", tag = "products", security(("bearer" = [])),
    params(("productId" = i64, Path)),
    request_body = UpdateProductRequest,
    responses((status = 200, body = Product), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_product(
    State(state): State<AppState>,
    _admin: Admin,
    ValidPath(product_id): ValidPath<i64>,
    body: JsonBody<UpdateProductRequest>,
) -> AppResult<axum::Json<Product>> {
    let patch = body.value.parse()?;
    let row = state
        .db
        .write(
            Locks {
                products: vec![product_id],
                ..Locks::none()
            },
            async move |tx: &mut Tx| {
                products::update_product(tx, product_id, &patch, store::now()).await
            },
        )
        .await?;
    Ok(axum::Json(row.try_into()?))
}

/// Admin: restock or correct stock. `409 STOCK_UNDERFLOW` if it would go below 0.
#[utoipa::path(post, path = "/admin/products/{productId}/stock", tag = "products", security(("bearer" = [])),
    params(("productId" = i64, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = StockRequest,
    responses((status = 200, body = Product), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "STOCK_UNDERFLOW", body = ErrorBody)))]
async fn adjust_stock(
    State(state): State<AppState>,
    _admin: Admin,
    ValidPath(product_id): ValidPath<i64>,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<StockRequest>,
) -> AppResult<Response> {
    let delta = body.value.parse()?;
    idempotency::run(
        &state,
        Principal::Admin,
        key,
        &body.fingerprint,
        Locks {
            products: vec![product_id],
            ..Locks::none()
        },
        async move |tx: &mut Tx| {
            let row = products::adjust_stock(tx, product_id, delta, store::now()).await?;
            Reply::json(StatusCode::OK, Product::try_from(row)?)
        },
    )
    .await
}

//! Back office (SPEC §15): admin lists with filters, campaign management, token reissue.
//!
//! Every list answers `{items, nextCursor}` and pages over an index (see `store::admin`).
//!
//! (Longer than most files: four lists share one filter/cursor vocabulary, and keeping their
//! request types, OpenAPI annotations and handlers side by side keeps them consistent.)

use axum::extract::State;
use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::api::coupons::Campaign;
use crate::api::products::{Product, ProductPage};
use crate::api::users::{TokenIssued, reissue_token};
use crate::auth::Admin;
use crate::db::{Locks, Tx};
use crate::domain::coupon::MAX_TOTAL_QUANTITY;
use crate::domain::order::OrderStatus;
use crate::domain::pagination::{Page, PageQuery};
use crate::domain::product::ProductStatus;
use crate::domain::text::{no_control_chars, required_text};
use crate::error::{AppError, AppResult, ErrorBody};
use crate::extract::{JsonBody, ValidPath, ValidQuery};
use crate::state::AppState;
use crate::store::admin::{self as store_admin, CampaignPatch, OrderFilter};
use crate::store::{self, orders::OrderRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin_list_orders))
        .routes(routes!(admin_list_members))
        .routes(routes!(admin_list_products))
        .routes(routes!(admin_list_campaigns))
        .routes(routes!(admin_update_campaign))
        .routes(routes!(admin_close_campaign))
        .routes(routes!(reissue_member_token))
}

/// The longest member search term, in characters.
pub const MAX_QUERY_CHARS: usize = 100;

/// An order as the back office lists it; `GET /orders/{orderId}` has lines, payments, history
/// and refunds.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminOrder {
    pub id: i64,
    pub user_id: i64,
    pub status: OrderStatus,
    pub from_cart: bool,
    pub subtotal: i64,
    pub discount: i64,
    pub total: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_coupon_id: Option<i64>,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub expires_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(
        serialize_with = "crate::api::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub paid_at: Option<DateTime<Utc>>,
    /// When the data platform acknowledged the order (PAID → CONFIRMED).
    #[serde(
        serialize_with = "crate::api::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub confirmed_at: Option<DateTime<Utc>>,
    /// Sum of the order's refunds (at most `total`); the refunds are at `GET /orders/{orderId}`.
    pub refunded_amount: i64,
}

impl TryFrom<OrderRow> for AdminOrder {
    type Error = AppError;

    fn try_from(o: OrderRow) -> AppResult<Self> {
        Ok(AdminOrder {
            status: o.status()?,
            id: o.id,
            user_id: o.user_id,
            from_cart: o.from_cart,
            subtotal: o.subtotal,
            discount: o.discount,
            total: o.total,
            coupon_id: o.coupon_id,
            user_coupon_id: o.user_coupon_id,
            expires_at: o.expires_at,
            created_at: o.created_at,
            updated_at: o.updated_at,
            paid_at: o.paid_at,
            confirmed_at: o.confirmed_at,
            refunded_amount: o.refunded_amount,
        })
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminOrderPage {
    pub items: Vec<AdminOrder>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AdminOrderQuery {
    /// PENDING, PAID, CONFIRMED, PARTIALLY_REFUNDED, REFUNDED, CANCELLED or EXPIRED.
    pub status: Option<OrderStatus>,
    /// Only this member's orders.
    #[param(minimum = 1)]
    pub user_id: Option<i64>,
    /// Orders created at or after this instant (RFC 3339, e.g. `2026-11-01T00:00:00Z`; an
    /// instant before 1970 or after 9999 counts as that bound).
    pub from: Option<DateTime<Utc>>,
    /// Orders created before this instant (exclusive). A `to` not after `from` is an empty
    /// window: no orders (a bound between two parameters has no place in the schema, so it is
    /// not an error either).
    pub to: Option<DateTime<Utc>>,
    /// Opaque cursor from the previous page's `nextCursor`.
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

fn earliest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

fn latest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .unwrap_or_default()
}

/// A bound of the order window, clamped to the years both backends store and compare the same
/// way: no order lies outside them, so the window selects the same orders, and any instant the
/// schema allows is accepted.
pub(crate) fn window_bound(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.map(|t| t.clamp(earliest(), latest()).trunc_subsecs(6))
}

/// A stored instant within the years both backends store and compare the same way.
pub(crate) fn time_bound(
    field: &str,
    t: Option<DateTime<Utc>>,
) -> AppResult<Option<DateTime<Utc>>> {
    match t {
        Some(t) if t < earliest() || t > latest() => Err(AppError::validation(
            field,
            "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
        )),
        t => Ok(t.map(|t| t.trunc_subsecs(6))),
    }
}

/// Admin: every order, newest first (by creation time, then id), optionally filtered by status,
/// member and creation time. Each page is one index range scan (docs/back-office.md).
#[utoipa::path(get, path = "/admin/orders", tag = "back office", security(("bearer" = [])),
    params(AdminOrderQuery),
    responses((status = 200, body = AdminOrderPage),
        (status = 400, description = "VALIDATION_ERROR: a bad status, userId, from, to, cursor or limit (`details.field`)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "FORBIDDEN: not an admin token", body = ErrorBody)))]
async fn admin_list_orders(
    State(state): State<AppState>,
    _admin: Admin,
    ValidQuery(query): ValidQuery<AdminOrderQuery>,
) -> AppResult<axum::Json<AdminOrderPage>> {
    let page = Page::try_from(&PageQuery {
        cursor: query.cursor.clone(),
        limit: query.limit,
    })?;
    if let Some(user_id) = query.user_id
        && user_id < 1
    {
        return Err(AppError::validation("userId", "must be a positive integer"));
    }
    let from = window_bound(query.from).unwrap_or_else(earliest);
    let to = window_bound(query.to).unwrap_or_else(latest);
    let mut conn = state.db.read().await?;
    let before = match page.after {
        None => None,
        Some(id) => match store_admin::order_created_at(&mut conn, id).await? {
            Some(at) => Some((at, id)),
            // A well-formed id of no order (never one this API issued as a cursor): the schema
            // cannot tell it from a real one, so it is not an error; there is no page after it.
            None => {
                return Ok(axum::Json(AdminOrderPage {
                    items: Vec::new(),
                    next_cursor: None,
                }));
            }
        },
    };
    let filter = OrderFilter {
        status: query.status,
        user_id: query.user_id,
        from,
        to,
        before,
        limit: page.fetch_limit(),
    };
    let rows = store_admin::list_orders(&mut conn, &filter).await?;
    let (rows, next_cursor) = page.finish(rows, |o| o.id);
    let items = rows
        .into_iter()
        .map(AdminOrder::try_from)
        .collect::<AppResult<_>>()?;
    Ok(axum::Json(AdminOrderPage { items, next_cursor }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminMember {
    pub id: i64,
    pub name: String,
    /// Current balance in minor units.
    pub balance: i64,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminMemberPage {
    pub items: Vec<AdminMember>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminMemberQuery {
    /// Name search: members whose name contains this text (ASCII letters match either case),
    /// up to 100 characters, no control characters. Empty or absent: every member.
    #[param(max_length = 100, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub q: Option<String>,
    /// Opaque cursor from the previous page's `nextCursor`.
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// Admin: members in id order with their balance, optionally searched by name.
#[utoipa::path(get, path = "/admin/users", tag = "back office", security(("bearer" = [])),
    params(AdminMemberQuery),
    responses((status = 200, body = AdminMemberPage),
        (status = 400, description = "VALIDATION_ERROR: a bad q, cursor or limit (`details.field`)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "FORBIDDEN: not an admin token", body = ErrorBody)))]
async fn admin_list_members(
    State(state): State<AppState>,
    _admin: Admin,
    ValidQuery(query): ValidQuery<AdminMemberQuery>,
) -> AppResult<axum::Json<AdminMemberPage>> {
    let page = Page::try_from(&PageQuery {
        cursor: query.cursor.clone(),
        limit: query.limit,
    })?;
    let pattern = match query.q.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(q) => {
            no_control_chars("q", q)?;
            if q.chars().count() > MAX_QUERY_CHARS {
                return Err(AppError::validation(
                    "q",
                    format!("must be at most {MAX_QUERY_CHARS} characters"),
                ));
            }
            Some(store_admin::NameSearch::new(q))
        }
    };
    let mut conn = state.db.read().await?;
    let rows = store_admin::list_members(&mut conn, pattern.as_ref(), page).await?;
    let (rows, next_cursor) = page.finish(rows, |m| m.id);
    let items = rows
        .into_iter()
        .map(|m| AdminMember {
            id: m.id,
            name: m.name,
            balance: m.balance,
            created_at: m.created_at,
        })
        .collect();
    Ok(axum::Json(AdminMemberPage { items, next_cursor }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminProductQuery {
    /// ON_SALE, SUSPENDED or DISCONTINUED; absent: every status.
    pub status: Option<ProductStatus>,
    /// Opaque cursor from the previous page's `nextCursor`.
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// Admin: products of every status (DISCONTINUED included), in id order.
#[utoipa::path(get, path = "/admin/products", tag = "back office", security(("bearer" = [])),
    params(AdminProductQuery),
    responses((status = 200, body = ProductPage),
        (status = 400, description = "VALIDATION_ERROR: a bad status, cursor or limit (`details.field`)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "FORBIDDEN: not an admin token", body = ErrorBody)))]
async fn admin_list_products(
    State(state): State<AppState>,
    _admin: Admin,
    ValidQuery(query): ValidQuery<AdminProductQuery>,
) -> AppResult<axum::Json<ProductPage>> {
    let page = Page::try_from(&PageQuery {
        cursor: query.cursor.clone(),
        limit: query.limit,
    })?;
    let mut conn = state.db.read().await?;
    let rows = store_admin::list_products(&mut conn, query.status, page).await?;
    let (rows, next_cursor) = page.finish(rows, |p| p.id);
    let items = rows
        .into_iter()
        .map(Product::try_from)
        .collect::<AppResult<_>>()?;
    Ok(axum::Json(ProductPage { items, next_cursor }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignPage {
    pub items: Vec<Campaign>,
    pub next_cursor: Option<String>,
}

/// Admin: every coupon campaign (future, open, ended, closed) with issued and total, in id
/// order.
#[utoipa::path(get, path = "/admin/coupons", tag = "back office", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = CampaignPage),
        (status = 400, description = "VALIDATION_ERROR: a bad cursor or limit (`details.field`)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "FORBIDDEN: not an admin token", body = ErrorBody)))]
async fn admin_list_campaigns(
    State(state): State<AppState>,
    _admin: Admin,
    ValidQuery(query): ValidQuery<PageQuery>,
) -> AppResult<axum::Json<CampaignPage>> {
    let page = Page::try_from(&query)?;
    let mut conn = state.db.read().await?;
    let rows = store_admin::list_campaigns(&mut conn, page).await?;
    let (rows, next_cursor) = page.finish(rows, |c| c.id);
    let items = rows
        .into_iter()
        .map(Campaign::try_from)
        .collect::<AppResult<_>>()?;
    Ok(axum::Json(CampaignPage { items, next_cursor }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
/// At least one field.
pub struct UpdateCouponRequest {
    /// 1–200 characters, no control characters (trimmed).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: Option<String>,
    /// New end of the issue window (exclusive); must be after `issueStartsAt`.
    pub issue_ends_at: Option<DateTime<Utc>>,
    /// New total, never below what is already issued (`409 COUPON_QUANTITY_BELOW_ISSUED`).
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub total_quantity: Option<i64>,
}

impl UpdateCouponRequest {
    pub fn parse(&self) -> AppResult<CampaignPatch> {
        if self.name.is_none() && self.issue_ends_at.is_none() && self.total_quantity.is_none() {
            return Err(AppError::validation(
                "body",
                "give at least one of name, issueEndsAt, totalQuantity",
            ));
        }
        let name = self
            .name
            .as_deref()
            .map(|n| required_text("name", n, 200))
            .transpose()?;
        if let Some(total) = self.total_quantity
            && !(1..=MAX_TOTAL_QUANTITY).contains(&total)
        {
            return Err(AppError::validation(
                "totalQuantity",
                format!("must be between 1 and {MAX_TOTAL_QUANTITY}"),
            ));
        }
        let issue_ends_at = time_bound("issueEndsAt", self.issue_ends_at)?;
        Ok(CampaignPatch {
            name,
            issue_ends_at,
            total_quantity: self.total_quantity,
        })
    }
}

/// Admin: rename a campaign, move the end of its issue window, or change its total quantity
/// (never below what is issued).
#[utoipa::path(patch, path = "/admin/coupons/{couponId}", tag = "back office", security(("bearer" = [])),
    params(("couponId" = i64, Path)),
    request_body = UpdateCouponRequest,
    responses((status = 200, body = Campaign),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "FORBIDDEN: not an admin token", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "COUPON_QUANTITY_BELOW_ISSUED: totalQuantity is less than issuedQuantity", body = ErrorBody)))]
async fn admin_update_campaign(
    State(state): State<AppState>,
    _admin: Admin,
    ValidPath(coupon_id): ValidPath<i64>,
    body: JsonBody<UpdateCouponRequest>,
) -> AppResult<axum::Json<Campaign>> {
    let patch = body.value.parse()?;
    let row = state
        .db
        .write(
            Locks {
                coupons: vec![coupon_id],
                ..Locks::none()
            },
            async move |tx: &mut Tx| store_admin::update_campaign(tx, coupon_id, &patch).await,
        )
        .await?;
    Ok(axum::Json(row.try_into()?))
}

/// Admin: close a campaign. No more coupons are issued (`409 COUPON_NOT_ISSUABLE`); coupons
/// already issued stay valid until they expire. Closing a closed campaign changes nothing.
#[utoipa::path(post, path = "/admin/coupons/{couponId}/close", tag = "back office", security(("bearer" = [])),
    params(("couponId" = i64, Path)),
    responses((status = 200, body = Campaign),
        (status = 401, body = ErrorBody), (status = 403, description = "FORBIDDEN: not an admin token", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody)))]
async fn admin_close_campaign(
    State(state): State<AppState>,
    _admin: Admin,
    ValidPath(coupon_id): ValidPath<i64>,
) -> AppResult<axum::Json<Campaign>> {
    let row = state
        .db
        .write(
            Locks {
                coupons: vec![coupon_id],
                ..Locks::none()
            },
            async move |tx: &mut Tx| store_admin::close_campaign(tx, coupon_id, store::now()).await,
        )
        .await?;
    Ok(axum::Json(row.try_into()?))
}

/// Admin: issue a member a new token (a lost or leaked one). The new token is shown once; the
/// old one is refused at once by this instance and within one second by every other
/// (README, "Tokens").
#[utoipa::path(post, path = "/admin/users/{userId}/tokens", tag = "back office", security(("bearer" = [])),
    params(("userId" = i64, Path)),
    responses((status = 200, body = TokenIssued),
        (status = 401, body = ErrorBody), (status = 403, description = "FORBIDDEN: not an admin token", body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND", body = ErrorBody)))]
async fn reissue_member_token(
    State(state): State<AppState>,
    _admin: Admin,
    ValidPath(user_id): ValidPath<i64>,
) -> AppResult<axum::Json<TokenIssued>> {
    Ok(axum::Json(reissue_token(&state, user_id).await?))
}

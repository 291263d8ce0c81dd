//! Coupon campaigns (admin), open campaigns (public), issuance and a member's coupons.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{Admin, Principal};
use crate::db::{Locks, Tx};
use crate::domain::coupon::{CampaignInput, Discount, DiscountType, NewCampaign, UserCouponStatus};
use crate::error::{AppError, AppResult, ErrorBody};
use crate::extract::{BodylessFingerprint, IdempotencyKey, JsonBody, ValidPath, ValidQuery};
use crate::idempotency::{self, Reply};
use crate::state::AppState;
use crate::store::{self, coupons};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_campaign))
        .routes(routes!(list_open_campaigns))
        .routes(routes!(get_campaign))
        .routes(routes!(issue_coupon))
        .routes(routes!(list_user_coupons))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
/// FIXED: `value` is the amount off in minor units (1–1,000,000,000, never more than the
/// subtotal) and `maxAmount` must be absent. PERCENT: `value` is 1–100 and the optional
/// `maxAmount` (1–1,000,000,000) caps the discount.
pub struct DiscountBody {
    #[serde(rename = "type")]
    pub kind: DiscountType,
    /// FIXED: amount off in minor units (1–1,000,000,000). PERCENT: 1–100.
    #[schema(example = 10, minimum = 1, maximum = 1_000_000_000)]
    pub value: i64,
    /// PERCENT only (a FIXED discount with `maxAmount` is a `400`): the largest discount.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_amount: Option<i64>,
}

impl From<Discount> for DiscountBody {
    fn from(d: Discount) -> Self {
        DiscountBody {
            kind: d.kind(),
            value: d.value(),
            max_amount: d.max_amount(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateCouponRequest {
    /// 1–200 characters, no control characters (trimmed).
    #[schema(
        example = "Welcome 10%",
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
    pub discount: DiscountBody,
    /// Default 0.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub min_order_amount: Option<i64>,
    #[schema(example = 100, minimum = 1, maximum = 100_000_000)]
    pub total_quantity: i64,
    /// Default: now.
    pub issue_starts_at: Option<DateTime<Utc>>,
    pub issue_ends_at: DateTime<Utc>,
    /// Days a coupon stays usable after it is issued (1–3650).
    #[schema(example = 7, minimum = 1, maximum = 3650)]
    pub valid_days: i64,
}

impl CreateCouponRequest {
    /// The valid campaign this body asks for; `now` is the default issue start. Times are kept
    /// to the microsecond, the precision every answer uses.
    pub fn parse(&self, now: DateTime<Utc>) -> AppResult<NewCampaign> {
        let input = CampaignInput {
            name: &self.name,
            discount_type: self.discount.kind,
            discount_value: self.discount.value,
            max_amount: self.discount.max_amount,
            min_order_amount: self.min_order_amount,
            total_quantity: self.total_quantity,
            issue_starts_at: self.issue_starts_at.map(|t| t.trunc_subsecs(6)),
            issue_ends_at: self.issue_ends_at.trunc_subsecs(6),
            valid_days: self.valid_days,
        };
        Ok(NewCampaign::parse(input, now)?)
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Campaign {
    pub id: i64,
    pub name: String,
    pub discount: DiscountBody,
    pub min_order_amount: i64,
    pub total_quantity: i64,
    /// Coupons issued so far (never more than `totalQuantity`).
    pub issued_quantity: i64,
    pub remaining_quantity: i64,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub issue_starts_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub issue_ends_at: DateTime<Utc>,
    pub valid_days: i64,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When an admin closed the campaign (`POST /admin/coupons/{couponId}/close`): no more
    /// issuance; coupons already issued stay valid. Absent while not closed.
    #[serde(
        serialize_with = "crate::api::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub closed_at: Option<DateTime<Utc>>,
}

impl TryFrom<coupons::CampaignRow> for Campaign {
    type Error = AppError;

    fn try_from(r: coupons::CampaignRow) -> AppResult<Self> {
        Ok(Campaign {
            discount: r.terms()?.discount.into(),
            remaining_quantity: (r.total_quantity - r.issued_quantity).max(0),
            id: r.id,
            name: r.name,
            min_order_amount: r.min_order_amount,
            total_quantity: r.total_quantity,
            issued_quantity: r.issued_quantity,
            issue_starts_at: r.issue_starts_at,
            issue_ends_at: r.issue_ends_at,
            valid_days: r.valid_days,
            created_at: r.created_at,
            closed_at: r.closed_at,
        })
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignList {
    pub items: Vec<Campaign>,
    /// Always `null`: every open campaign is in this one page (the list shape is the same as
    /// every other list's).
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserCoupon {
    pub user_coupon_id: i64,
    pub coupon_id: i64,
    pub name: String,
    pub discount: DiscountBody,
    pub min_order_amount: i64,
    pub status: UserCouponStatus,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub issued_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub expires_at: DateTime<Utc>,
    #[serde(
        serialize_with = "crate::api::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub used_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<i64>,
}

impl UserCoupon {
    pub fn from_row(r: coupons::UserCouponRow, now: DateTime<Utc>) -> AppResult<Self> {
        Ok(UserCoupon {
            discount: r.terms()?.discount.into(),
            status: r.visible_status(now),
            user_coupon_id: r.id,
            coupon_id: r.coupon_id,
            name: r.name,
            min_order_amount: r.min_order_amount,
            issued_at: r.issued_at,
            expires_at: r.expires_at,
            used_at: r.used_at,
            order_id: r.order_id,
        })
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserCouponList {
    pub items: Vec<UserCoupon>,
    /// Always `null`: a member's coupons (at most one per campaign) come in one page.
    pub next_cursor: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CouponStatusFilter {
    Available,
    Used,
    Expired,
    All,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserCouponQuery {
    /// AVAILABLE (default), USED, EXPIRED or ALL.
    #[param(inline)]
    pub status: Option<CouponStatusFilter>,
}

/// Admin: create a coupon campaign.
#[utoipa::path(post, path = "/admin/coupons", tag = "coupons", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header)),
    request_body = CreateCouponRequest,
    responses((status = 201, body = Campaign), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_campaign(
    State(state): State<AppState>,
    _admin: Admin,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<CreateCouponRequest>,
) -> AppResult<Response> {
    let campaign = body.value.parse(store::now())?;
    idempotency::run(
        &state,
        Principal::Admin,
        key,
        &body.fingerprint,
        Locks::none(),
        async move |tx: &mut Tx| {
            let row = coupons::create_campaign(tx, &campaign, store::now()).await?;
            Reply::json(StatusCode::CREATED, Campaign::try_from(row)?)
        },
    )
    .await
}

/// Campaigns open for issuance now, with the quantity left (0 when sold out).
#[utoipa::path(get, path = "/coupons", tag = "coupons", responses((status = 200, body = CampaignList)))]
async fn list_open_campaigns(State(state): State<AppState>) -> AppResult<axum::Json<CampaignList>> {
    let mut conn = state.db.read().await?;
    let rows = coupons::list_open(&mut conn, store::now()).await?;
    let items = rows
        .into_iter()
        .map(Campaign::try_from)
        .collect::<AppResult<_>>()?;
    Ok(axum::Json(CampaignList {
        items,
        next_cursor: None,
    }))
}

/// One campaign, whatever its window.
#[utoipa::path(get, path = "/coupons/{couponId}", tag = "coupons", params(("couponId" = i64, Path)),
    responses((status = 200, body = Campaign), (status = 404, body = ErrorBody)))]
async fn get_campaign(
    State(state): State<AppState>,
    ValidPath(coupon_id): ValidPath<i64>,
) -> AppResult<axum::Json<Campaign>> {
    let mut conn = state.db.read().await?;
    let row = coupons::find_campaign(&mut conn, coupon_id)
        .await?
        .ok_or_else(|| coupons::coupon_not_found(coupon_id))?;
    Ok(axum::Json(row.try_into()?))
}

/// Member: claim one coupon of the campaign, first come first served. Supports `Idempotency-Key`.
#[utoipa::path(post, path = "/coupons/{couponId}/issue", tag = "coupons", security(("bearer" = [])),
    params(("couponId" = i64, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses(
        (status = 201, body = UserCoupon),
        (status = 401, body = ErrorBody),
        (status = 403, description = "an admin token: coupons are issued to members", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "COUPON_SOLD_OUT, COUPON_ALREADY_ISSUED, COUPON_NOT_ISSUABLE or IDEMPOTENCY_IN_PROGRESS", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody)))]
async fn issue_coupon(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath(coupon_id): ValidPath<i64>,
    IdempotencyKey(key): IdempotencyKey,
    BodylessFingerprint(fingerprint): BodylessFingerprint,
) -> AppResult<Response> {
    let Principal::Member(user_id) = caller else {
        return Err(AppError::Forbidden(
            "coupons are issued to members: use a member token",
        ));
    };
    idempotency::run(
        &state,
        caller,
        key,
        &fingerprint,
        Locks {
            coupons: vec![coupon_id],
            ..Locks::none()
        },
        async move |tx: &mut Tx| {
            let now = store::now();
            let row = coupons::issue(
                tx,
                coupons::IssueCoupon {
                    coupon_id,
                    user_id,
                    now,
                },
            )
            .await?;
            Reply::json(StatusCode::CREATED, UserCoupon::from_row(row, now)?)
        },
    )
    .await
}

/// A member's coupons; `status` AVAILABLE (default), USED, EXPIRED or ALL.
#[utoipa::path(get, path = "/users/{userId}/coupons", tag = "coupons", security(("bearer" = [])),
    params(("userId" = i64, Path), UserCouponQuery),
    responses((status = 200, body = UserCouponList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_user_coupons(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath(user_id): ValidPath<i64>,
    ValidQuery(query): ValidQuery<UserCouponQuery>,
) -> AppResult<axum::Json<UserCouponList>> {
    caller.authorize_user(user_id)?;
    let filter = match query.status.unwrap_or(CouponStatusFilter::Available) {
        CouponStatusFilter::Available => coupons::CouponFilter::Only(UserCouponStatus::Available),
        CouponStatusFilter::Used => coupons::CouponFilter::Only(UserCouponStatus::Used),
        CouponStatusFilter::Expired => coupons::CouponFilter::Only(UserCouponStatus::Expired),
        CouponStatusFilter::All => coupons::CouponFilter::All,
    };
    let now = store::now();
    let mut conn = state.db.read().await?;
    store::users::find_user(&mut conn, user_id)
        .await?
        .ok_or_else(|| AppError::user_not_found(user_id))?;
    let rows = coupons::list_user_coupons(&mut conn, user_id, filter, now).await?;
    let items = rows
        .into_iter()
        .map(|r| UserCoupon::from_row(r, now))
        .collect::<AppResult<_>>()?;
    Ok(axum::Json(UserCouponList {
        items,
        next_cursor: None,
    }))
}

//! Coupon campaigns and first-come-first-served issuance.
//!
//! "Exactly N" comes from the database, not from application locks: a conditional increment
//! (`issued_quantity < total_quantity`) on the campaign row, and a unique `(coupon_id, user_id)`
//! constraint for "one per member". Both hold across any number of instances.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::db::{Handle, Tx, is_unique_violation};
use crate::domain::coupon::{
    CouponTerms, Discount, DiscountType, NewCampaign, UserCouponStatus, expires_at, is_issuable_at,
    user_coupon_status,
};
use crate::error::{AppError, AppResult};
use crate::{sql_all, sql_execute, sql_one, sql_optional, sql_scalar_optional};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CampaignRow {
    pub id: i64,
    pub name: String,
    pub discount_type: String,
    pub discount_value: i64,
    pub max_discount: Option<i64>,
    pub min_order_amount: i64,
    pub total_quantity: i64,
    pub issued_quantity: i64,
    pub issue_starts_at: DateTime<Utc>,
    pub issue_ends_at: DateTime<Utc>,
    pub valid_days: i64,
    pub created_at: DateTime<Utc>,
    /// Set by `POST /admin/coupons/{id}/close`: no more issuance.
    pub closed_at: Option<DateTime<Utc>>,
}
crate::lite_row!(CampaignRow {
    id,
    name,
    discount_type,
    discount_value,
    max_discount,
    min_order_amount,
    total_quantity,
    issued_quantity,
    issue_starts_at,
    issue_ends_at,
    valid_days,
    created_at,
    closed_at
});

/// Rebuild a coupon's terms from its stored columns (validated again: a bad row is a 500, not a
/// silently wrong discount).
fn stored_terms(
    id: i64,
    kind: &str,
    value: i64,
    max: Option<i64>,
    min_order_amount: i64,
) -> AppResult<CouponTerms> {
    let kind = DiscountType::parse(kind)
        .ok_or_else(|| anyhow::anyhow!("coupon {id} has unknown discount type {kind:?}"))?;
    let discount = Discount::parse(kind, value, max)
        .map_err(|e| anyhow::anyhow!("coupon {id} has an invalid stored discount: {e}"))?;
    Ok(CouponTerms {
        discount,
        min_order_amount,
    })
}

impl CampaignRow {
    pub fn terms(&self) -> AppResult<CouponTerms> {
        stored_terms(
            self.id,
            &self.discount_type,
            self.discount_value,
            self.max_discount,
            self.min_order_amount,
        )
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserCouponRow {
    pub id: i64,
    pub coupon_id: i64,
    pub user_id: i64,
    pub name: String,
    pub discount_type: String,
    pub discount_value: i64,
    pub max_discount: Option<i64>,
    pub min_order_amount: i64,
    pub status: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub order_id: Option<i64>,
}
crate::lite_row!(UserCouponRow {
    id,
    coupon_id,
    user_id,
    name,
    discount_type,
    discount_value,
    max_discount,
    min_order_amount,
    status,
    issued_at,
    expires_at,
    used_at,
    order_id
});

impl UserCouponRow {
    pub fn terms(&self) -> AppResult<CouponTerms> {
        stored_terms(
            self.coupon_id,
            &self.discount_type,
            self.discount_value,
            self.max_discount,
            self.min_order_amount,
        )
    }

    pub fn visible_status(&self, now: DateTime<Utc>) -> UserCouponStatus {
        user_coupon_status(self.status == "USED", self.expires_at, now)
    }
}

pub async fn create_campaign(
    tx: &mut Tx,
    c: &NewCampaign,
    now: DateTime<Utc>,
) -> AppResult<CampaignRow> {
    let d = c.terms.discount;
    Ok(sql_one!(CampaignRow; tx,
        "INSERT INTO coupons (name, discount_type, discount_value, max_discount, min_order_amount,
                              total_quantity, issued_quantity, issue_starts_at, issue_ends_at, valid_days, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $10)
         RETURNING id, name, discount_type, discount_value, max_discount, min_order_amount, total_quantity,
                   issued_quantity, issue_starts_at, issue_ends_at, valid_days, created_at, closed_at",
        &c.name, d.kind().as_str(), d.value(), d.max_amount(), c.terms.min_order_amount,
        c.total_quantity, c.issue_starts_at, c.issue_ends_at, c.valid_days, now)?)
}

pub async fn find_campaign(h: &mut impl Handle, id: i64) -> AppResult<Option<CampaignRow>> {
    Ok(sql_optional!(CampaignRow; h,
        "SELECT id, name, discount_type, discount_value, max_discount, min_order_amount, total_quantity,
                issued_quantity, issue_starts_at, issue_ends_at, valid_days, created_at, closed_at
         FROM coupons WHERE id = $1", id)?)
}

/// Campaigns whose issue window is open at `now` (sold-out ones included, with 0 remaining).
pub async fn list_open(h: &mut impl Handle, now: DateTime<Utc>) -> AppResult<Vec<CampaignRow>> {
    Ok(sql_all!(CampaignRow; h,
        "SELECT id, name, discount_type, discount_value, max_discount, min_order_amount, total_quantity,
                issued_quantity, issue_starts_at, issue_ends_at, valid_days, created_at, closed_at
         FROM coupons WHERE issue_starts_at <= $1 AND issue_ends_at > $1 AND closed_at IS NULL ORDER BY id LIMIT 500", now)?)
}

pub struct IssueCoupon {
    pub coupon_id: i64,
    pub user_id: i64,
    pub now: DateTime<Utc>,
}

fn already_issued(coupon_id: i64) -> AppError {
    AppError::conflict(
        "COUPON_ALREADY_ISSUED",
        "you already hold a coupon of this campaign",
        json!({ "couponId": coupon_id }),
    )
}

fn sold_out(coupon_id: i64) -> AppError {
    AppError::conflict(
        "COUPON_SOLD_OUT",
        "all coupons of this campaign have been issued",
        json!({ "couponId": coupon_id }),
    )
}

pub fn coupon_not_found(coupon_id: i64) -> AppError {
    AppError::not_found("COUPON_NOT_FOUND", "coupon", coupon_id)
}

/// Issue one coupon of the campaign to the member, first come first served.
pub async fn issue(tx: &mut Tx, cmd: IssueCoupon) -> AppResult<UserCouponRow> {
    let IssueCoupon {
        coupon_id,
        user_id,
        now,
    } = cmd;
    let campaign = find_campaign(tx, coupon_id)
        .await?
        .ok_or_else(|| coupon_not_found(coupon_id))?;
    if let Some(closed_at) = campaign.closed_at {
        return Err(AppError::conflict(
            "COUPON_NOT_ISSUABLE",
            "the campaign was closed",
            json!({ "couponId": coupon_id, "closedAt": closed_at }),
        ));
    }
    if !is_issuable_at(campaign.issue_starts_at, campaign.issue_ends_at, now) {
        return Err(AppError::conflict(
            "COUPON_NOT_ISSUABLE",
            "the campaign is outside its issue window",
            json!({ "couponId": coupon_id, "issueStartsAt": campaign.issue_starts_at, "issueEndsAt": campaign.issue_ends_at }),
        ));
    }
    let held: Option<i64> = sql_scalar_optional!(
        tx,
        "SELECT id FROM user_coupons WHERE coupon_id = $1 AND user_id = $2",
        coupon_id,
        user_id
    )?;
    if held.is_some() {
        return Err(already_issued(coupon_id));
    }
    // Issued counts never go down, so a sold-out read is final: answer without touching the
    // hot campaign row.
    if campaign.issued_quantity >= campaign.total_quantity {
        return Err(sold_out(coupon_id));
    }
    let claimed = sql_execute!(tx,
        "UPDATE coupons SET issued_quantity = issued_quantity + 1
         WHERE id = $1 AND issued_quantity < total_quantity AND issue_starts_at <= $2 AND issue_ends_at > $2
           AND closed_at IS NULL",
        coupon_id, now)?;
    if claimed == 0 {
        return Err(sold_out(coupon_id));
    }
    let inserted = sql_scalar_optional!(
        tx,
        "INSERT INTO user_coupons (coupon_id, user_id, status, issued_at, expires_at)
         VALUES ($1, $2, 'AVAILABLE', $3, $4) RETURNING id",
        coupon_id,
        user_id,
        now,
        expires_at(now, campaign.valid_days)
    );
    let id: i64 = match inserted {
        Ok(Some(id)) => id,
        Ok(None) => return Err(anyhow::anyhow!("insert returned no id").into()),
        // A concurrent claim by the same member won; this transaction (and its increment) rolls back.
        Err(err) if is_unique_violation(&err) => return Err(already_issued(coupon_id)),
        Err(err) => return Err(err.into()),
    };
    find_user_coupon(tx, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("issued coupon {id} vanished").into())
}

pub async fn find_user_coupon(h: &mut impl Handle, id: i64) -> AppResult<Option<UserCouponRow>> {
    Ok(sql_optional!(UserCouponRow; h,
        "SELECT uc.id, uc.coupon_id, uc.user_id, c.name, c.discount_type, c.discount_value, c.max_discount,
                c.min_order_amount, uc.status, uc.issued_at, uc.expires_at, uc.used_at, uc.order_id
         FROM user_coupons uc JOIN coupons c ON c.id = uc.coupon_id WHERE uc.id = $1", id)?)
}

/// Which of a member's coupons to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CouponFilter {
    Only(UserCouponStatus),
    All,
}

pub async fn list_user_coupons(
    h: &mut impl Handle,
    user_id: i64,
    filter: CouponFilter,
    now: DateTime<Utc>,
) -> AppResult<Vec<UserCouponRow>> {
    let mode = match filter {
        CouponFilter::All => "ALL",
        CouponFilter::Only(UserCouponStatus::Available) => "AVAILABLE",
        CouponFilter::Only(UserCouponStatus::Used) => "USED",
        CouponFilter::Only(UserCouponStatus::Expired) => "EXPIRED",
    };
    Ok(sql_all!(UserCouponRow; h,
        "SELECT uc.id, uc.coupon_id, uc.user_id, c.name, c.discount_type, c.discount_value, c.max_discount,
                c.min_order_amount, uc.status, uc.issued_at, uc.expires_at, uc.used_at, uc.order_id
         FROM user_coupons uc JOIN coupons c ON c.id = uc.coupon_id
         WHERE uc.user_id = $1 AND (
             $2 = 'ALL'
             OR ($2 = 'USED' AND uc.status = 'USED')
             OR ($2 = 'AVAILABLE' AND uc.status = 'AVAILABLE' AND uc.expires_at > $3)
             OR ($2 = 'EXPIRED' AND uc.status = 'AVAILABLE' AND uc.expires_at <= $3))
         ORDER BY uc.id DESC",
        user_id, mode, now)?)
}

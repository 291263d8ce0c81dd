//! Coupon campaigns and discounts (SPEC §5). Pure: the order flow calls [`CouponTerms::discount_for`].
//!
//! (Longer than most files because its unit tests of the discount arithmetic sit below it.)

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::invalid::Invalid;
use crate::domain::product::MAX_PRICE;
use crate::domain::text::required_text;

pub const MAX_TOTAL_QUANTITY: i64 = 100_000_000;
pub const MAX_VALID_DAYS: i64 = 3_650;
/// Largest amount-like value on a campaign (order minimums and FIXED discounts).
pub const MAX_AMOUNT: i64 = MAX_PRICE;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiscountType {
    Fixed,
    Percent,
}

impl DiscountType {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscountType::Fixed => "FIXED",
            DiscountType::Percent => "PERCENT",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "FIXED" => Some(DiscountType::Fixed),
            "PERCENT" => Some(DiscountType::Percent),
            _ => None,
        }
    }
}

/// A validated discount rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discount {
    /// `min(amount, subtotal)` off.
    Fixed { amount: i64 },
    /// `floor(subtotal × percent / 100)` off, capped by `max_amount`.
    Percent {
        percent: i64,
        max_amount: Option<i64>,
    },
}

impl Discount {
    pub fn parse(kind: DiscountType, value: i64, max_amount: Option<i64>) -> Result<Self, Invalid> {
        match kind {
            DiscountType::Fixed => {
                if !(1..=MAX_AMOUNT).contains(&value) {
                    return Err(Invalid::new(
                        "discount.value",
                        format!("must be between 1 and {MAX_AMOUNT}"),
                    ));
                }
                if max_amount.is_some() {
                    return Err(Invalid::new(
                        "discount.maxAmount",
                        "applies only to PERCENT discounts",
                    ));
                }
                Ok(Discount::Fixed { amount: value })
            }
            DiscountType::Percent => {
                if !(1..=100).contains(&value) {
                    return Err(Invalid::new(
                        "discount.value",
                        "must be a percentage between 1 and 100",
                    ));
                }
                if let Some(max) = max_amount
                    && !(1..=MAX_AMOUNT).contains(&max)
                {
                    return Err(Invalid::new(
                        "discount.maxAmount",
                        format!("must be between 1 and {MAX_AMOUNT}"),
                    ));
                }
                Ok(Discount::Percent {
                    percent: value,
                    max_amount,
                })
            }
        }
    }

    pub fn kind(&self) -> DiscountType {
        match self {
            Discount::Fixed { .. } => DiscountType::Fixed,
            Discount::Percent { .. } => DiscountType::Percent,
        }
    }

    pub fn value(&self) -> i64 {
        match *self {
            Discount::Fixed { amount } => amount,
            Discount::Percent { percent, .. } => percent,
        }
    }

    pub fn max_amount(&self) -> Option<i64> {
        match *self {
            Discount::Fixed { .. } => None,
            Discount::Percent { max_amount, .. } => max_amount,
        }
    }

    /// The discount on `subtotal` (never more than the subtotal, never negative).
    pub fn amount_off(&self, subtotal: i64) -> i64 {
        let subtotal = subtotal.max(0);
        match *self {
            Discount::Fixed { amount } => amount.min(subtotal),
            Discount::Percent {
                percent,
                max_amount,
            } => {
                // i128: subtotal × percent cannot overflow.
                let off = (i128::from(subtotal) * i128::from(percent) / 100) as i64;
                max_amount.map_or(off, |cap| off.min(cap)).min(subtotal)
            }
        }
    }
}

/// Why a coupon does not apply to an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotApplicable {
    MinOrderAmountNotMet { min_order_amount: i64 },
}

/// What a coupon gives and when it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CouponTerms {
    pub discount: Discount,
    pub min_order_amount: i64,
}

impl CouponTerms {
    /// The discount for an order of `subtotal`, if the order qualifies.
    pub fn discount_for(&self, subtotal: i64) -> Result<i64, NotApplicable> {
        if subtotal < self.min_order_amount {
            return Err(NotApplicable::MinOrderAmountNotMet {
                min_order_amount: self.min_order_amount,
            });
        }
        Ok(self.discount.amount_off(subtotal))
    }
}

/// A validated campaign definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCampaign {
    pub name: String,
    pub terms: CouponTerms,
    pub total_quantity: i64,
    pub issue_starts_at: DateTime<Utc>,
    pub issue_ends_at: DateTime<Utc>,
    pub valid_days: i64,
}

/// Raw campaign fields, as they arrive.
pub struct CampaignInput<'a> {
    pub name: &'a str,
    pub discount_type: DiscountType,
    pub discount_value: i64,
    pub max_amount: Option<i64>,
    pub min_order_amount: Option<i64>,
    pub total_quantity: i64,
    pub issue_starts_at: Option<DateTime<Utc>>,
    pub issue_ends_at: DateTime<Utc>,
    pub valid_days: i64,
}

impl NewCampaign {
    /// Validate a campaign; `now` is the default issue start.
    pub fn parse(input: CampaignInput<'_>, now: DateTime<Utc>) -> Result<Self, Invalid> {
        let name = required_text("name", input.name, 200)?;
        let discount =
            Discount::parse(input.discount_type, input.discount_value, input.max_amount)?;
        let min_order_amount = input.min_order_amount.unwrap_or(0);
        if !(0..=MAX_AMOUNT).contains(&min_order_amount) {
            return Err(Invalid::new(
                "minOrderAmount",
                format!("must be between 0 and {MAX_AMOUNT}"),
            ));
        }
        if !(1..=MAX_TOTAL_QUANTITY).contains(&input.total_quantity) {
            return Err(Invalid::new(
                "totalQuantity",
                format!("must be between 1 and {MAX_TOTAL_QUANTITY}"),
            ));
        }
        let issue_starts_at = input.issue_starts_at.unwrap_or(now);
        if input.issue_ends_at <= issue_starts_at {
            return Err(Invalid::new("issueEndsAt", "must be after issueStartsAt"));
        }
        if !(1..=MAX_VALID_DAYS).contains(&input.valid_days) {
            return Err(Invalid::new(
                "validDays",
                format!("must be between 1 and {MAX_VALID_DAYS}"),
            ));
        }
        Ok(Self {
            name,
            terms: CouponTerms {
                discount,
                min_order_amount,
            },
            total_quantity: input.total_quantity,
            issue_starts_at,
            issue_ends_at: input.issue_ends_at,
            valid_days: input.valid_days,
        })
    }
}

/// Issue window: `[starts, ends)`.
pub fn is_issuable_at(starts: DateTime<Utc>, ends: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    starts <= now && now < ends
}

/// When a coupon issued at `issued_at` stops being usable.
pub fn expires_at(issued_at: DateTime<Utc>, valid_days: i64) -> DateTime<Utc> {
    issued_at + Duration::days(valid_days)
}

/// What members see of their coupon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserCouponStatus {
    Available,
    Used,
    Expired,
}

/// The visible status: a taken coupon is USED; an untaken one past `expires_at` is EXPIRED.
pub fn user_coupon_status(
    taken: bool,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> UserCouponStatus {
    if taken {
        UserCouponStatus::Used
    } else if expires_at <= now {
        UserCouponStatus::Expired
    } else {
        UserCouponStatus::Available
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(v: i64) -> Discount {
        Discount::parse(DiscountType::Fixed, v, None).unwrap()
    }

    fn percent(v: i64, cap: Option<i64>) -> Discount {
        Discount::parse(DiscountType::Percent, v, cap).unwrap()
    }

    #[test]
    fn fixed_discount_never_exceeds_subtotal() {
        assert_eq!(fixed(3_000).amount_off(10_000), 3_000);
        assert_eq!(fixed(3_000).amount_off(2_000), 2_000);
        assert_eq!(fixed(3_000).amount_off(0), 0);
    }

    #[test]
    fn percent_discount_floors_and_caps() {
        assert_eq!(percent(10, None).amount_off(12_345), 1_234);
        assert_eq!(percent(15, None).amount_off(999), 149);
        assert_eq!(percent(10, Some(1_000)).amount_off(50_000), 1_000);
        assert_eq!(percent(100, None).amount_off(7_000), 7_000);
        assert_eq!(
            percent(33, None).amount_off(i64::MAX),
            (i128::from(i64::MAX) * 33 / 100) as i64
        );
    }

    #[test]
    fn minimum_order_amount_is_enforced() {
        let terms = CouponTerms {
            discount: fixed(5_000),
            min_order_amount: 30_000,
        };
        assert_eq!(
            terms.discount_for(29_999),
            Err(NotApplicable::MinOrderAmountNotMet {
                min_order_amount: 30_000
            })
        );
        assert_eq!(terms.discount_for(30_000), Ok(5_000));
    }

    #[test]
    fn invalid_discounts_are_rejected() {
        assert!(Discount::parse(DiscountType::Fixed, 0, None).is_err());
        assert!(Discount::parse(DiscountType::Fixed, -5, None).is_err());
        assert!(Discount::parse(DiscountType::Fixed, 100, Some(50)).is_err());
        assert!(Discount::parse(DiscountType::Percent, 101, None).is_err());
        assert!(Discount::parse(DiscountType::Percent, 0, None).is_err());
        assert!(Discount::parse(DiscountType::Percent, 10, Some(0)).is_err());
        assert!(Discount::parse(DiscountType::Percent, 10, Some(-1)).is_err());
    }

    fn input(now: DateTime<Utc>) -> CampaignInput<'static> {
        CampaignInput {
            name: "Welcome",
            discount_type: DiscountType::Percent,
            discount_value: 10,
            max_amount: Some(5_000),
            min_order_amount: Some(10_000),
            total_quantity: 100,
            issue_starts_at: Some(now),
            issue_ends_at: now + Duration::days(1),
            valid_days: 7,
        }
    }

    #[test]
    fn campaign_rules() {
        let now = Utc::now();
        assert!(NewCampaign::parse(input(now), now).is_ok());
        let field = |i: CampaignInput<'static>| NewCampaign::parse(i, now).unwrap_err().field;
        assert_eq!(
            field(CampaignInput {
                total_quantity: 0,
                ..input(now)
            }),
            "totalQuantity"
        );
        assert_eq!(
            field(CampaignInput {
                total_quantity: -1,
                ..input(now)
            }),
            "totalQuantity"
        );
        assert_eq!(
            field(CampaignInput {
                min_order_amount: Some(-1),
                ..input(now)
            }),
            "minOrderAmount"
        );
        assert_eq!(
            field(CampaignInput {
                discount_value: 150,
                ..input(now)
            }),
            "discount.value"
        );
        assert_eq!(
            field(CampaignInput {
                issue_ends_at: now - Duration::seconds(1),
                ..input(now)
            }),
            "issueEndsAt"
        );
        assert_eq!(
            field(CampaignInput {
                issue_ends_at: now,
                ..input(now)
            }),
            "issueEndsAt"
        );
        assert_eq!(
            field(CampaignInput {
                valid_days: 0,
                ..input(now)
            }),
            "validDays"
        );
        // The start defaults to now.
        let c = NewCampaign::parse(
            CampaignInput {
                issue_starts_at: None,
                ..input(now)
            },
            now,
        )
        .unwrap();
        assert_eq!(c.issue_starts_at, now);
    }

    #[test]
    fn issue_window_is_half_open() {
        let start = Utc::now();
        let end = start + Duration::hours(1);
        assert!(!is_issuable_at(
            start,
            end,
            start - Duration::microseconds(1)
        ));
        assert!(is_issuable_at(start, end, start));
        assert!(is_issuable_at(start, end, end - Duration::microseconds(1)));
        assert!(!is_issuable_at(start, end, end));
    }

    #[test]
    fn user_coupon_status_is_derived() {
        let now = Utc::now();
        assert_eq!(
            user_coupon_status(false, now + Duration::days(1), now),
            UserCouponStatus::Available
        );
        assert_eq!(
            user_coupon_status(false, now, now),
            UserCouponStatus::Expired
        );
        assert_eq!(
            user_coupon_status(true, now - Duration::days(1), now),
            UserCouponStatus::Used
        );
        assert_eq!(expires_at(now, 7), now + Duration::days(7));
    }
}

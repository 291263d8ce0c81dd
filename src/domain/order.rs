//! Orders: state machine, line validation and pricing (SPEC §6). Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::invalid::Invalid;
use crate::domain::coupon::{CouponTerms, NotApplicable};

pub const MAX_LINES: usize = 50;
pub const MAX_QUANTITY: i64 = 1_000;

/// `PENDING → PAID | CANCELLED | EXPIRED`; the three outcomes are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Paid,
    Cancelled,
    Expired,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Paid => "PAID",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(OrderStatus::Pending),
            "PAID" => Some(OrderStatus::Paid),
            "CANCELLED" => Some(OrderStatus::Cancelled),
            "EXPIRED" => Some(OrderStatus::Expired),
            _ => None,
        }
    }

    pub fn can_become(self, next: OrderStatus) -> bool {
        self == OrderStatus::Pending && next != OrderStatus::Pending
    }

    /// Does an order in this status hold stock and its coupon?
    pub fn holds_reservation(self) -> bool {
        matches!(self, OrderStatus::Pending | OrderStatus::Paid)
    }
}

/// A validated set of order lines: 1..=50 distinct products in ascending id order (the
/// order in which stock rows are locked, so concurrent orders cannot deadlock), each quantity
/// 1..=1000. Repeated products are merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLines(Vec<(i64, i64)>);

impl OrderLines {
    pub fn parse(items: &[(i64, i64)], field: &str) -> Result<Self, Invalid> {
        if items.is_empty() {
            return Err(Invalid::new(field, "must contain at least one item"));
        }
        let mut merged: BTreeMap<i64, i64> = BTreeMap::new();
        for (i, &(product_id, quantity)) in items.iter().enumerate() {
            if product_id <= 0 {
                return Err(Invalid::new(
                    &format!("{field}[{i}].productId"),
                    "must be a positive id",
                ));
            }
            if !(1..=MAX_QUANTITY).contains(&quantity) {
                return Err(Invalid::new(
                    &format!("{field}[{i}].quantity"),
                    format!("must be between 1 and {MAX_QUANTITY}"),
                ));
            }
            let total = merged.entry(product_id).or_insert(0);
            *total += quantity;
            if *total > MAX_QUANTITY {
                return Err(Invalid::new(
                    &format!("{field}[{i}].quantity"),
                    format!(
                        "product {product_id} is ordered more than {MAX_QUANTITY} times in total"
                    ),
                ));
            }
        }
        if merged.len() > MAX_LINES {
            return Err(Invalid::new(
                field,
                format!("at most {MAX_LINES} distinct products per order"),
            ));
        }
        Ok(Self(merged.into_iter().collect()))
    }

    /// `(product_id, quantity)` in ascending product id.
    pub fn lines(&self) -> &[(i64, i64)] {
        &self.0
    }

    pub fn product_ids(&self) -> Vec<i64> {
        self.0.iter().map(|(id, _)| *id).collect()
    }
}

/// Money of an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amounts {
    pub subtotal: i64,
    pub discount: i64,
    pub total: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PricingError {
    Overflow,
    Coupon(NotApplicable),
}

/// `unit_price × quantity` per line, checked.
pub fn line_total(unit_price: i64, quantity: i64) -> Result<i64, PricingError> {
    unit_price
        .checked_mul(quantity)
        .ok_or(PricingError::Overflow)
}

/// Subtotal of line totals, the coupon's discount, and what the member pays.
pub fn price_order(
    line_totals: &[i64],
    coupon: Option<&CouponTerms>,
) -> Result<Amounts, PricingError> {
    let subtotal = line_totals
        .iter()
        .try_fold(0i64, |acc, t| acc.checked_add(*t))
        .ok_or(PricingError::Overflow)?;
    let discount = match coupon {
        Some(terms) => terms.discount_for(subtotal).map_err(PricingError::Coupon)?,
        None => 0,
    };
    Ok(Amounts {
        subtotal,
        discount,
        total: subtotal - discount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::coupon::{Discount, DiscountType};

    #[test]
    fn state_machine() {
        use OrderStatus::*;
        for next in [Paid, Cancelled, Expired] {
            assert!(Pending.can_become(next));
            for terminal in [Paid, Cancelled, Expired] {
                assert!(!terminal.can_become(next), "{terminal:?} -> {next:?}");
            }
        }
        assert!(!Pending.can_become(Pending));
        assert!(Pending.holds_reservation() && Paid.holds_reservation());
        assert!(!Cancelled.holds_reservation() && !Expired.holds_reservation());
        for s in [Pending, Paid, Cancelled, Expired] {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn lines_are_merged_sorted_and_bounded() {
        let lines = OrderLines::parse(&[(5, 1), (2, 3), (5, 2)], "items").unwrap();
        assert_eq!(lines.lines(), &[(2, 3), (5, 3)]);
        assert_eq!(lines.product_ids(), vec![2, 5]);
        let field = |items: &[(i64, i64)]| OrderLines::parse(items, "items").unwrap_err().field;
        assert_eq!(field(&[]), "items");
        assert_eq!(field(&[(1, 0)]), "items[0].quantity");
        assert_eq!(field(&[(1, 1), (2, -1)]), "items[1].quantity");
        assert_eq!(field(&[(0, 1)]), "items[0].productId");
        assert_eq!(field(&[(1, 600), (1, 600)]), "items[1].quantity");
        let too_many: Vec<(i64, i64)> = (1..=51).map(|id| (id, 1)).collect();
        assert_eq!(field(&too_many), "items");
    }

    #[test]
    fn pricing_with_and_without_coupons() {
        let totals = [
            line_total(12_000, 2).unwrap(),
            line_total(4_500, 1).unwrap(),
        ];
        assert_eq!(
            price_order(&totals, None).unwrap(),
            Amounts {
                subtotal: 28_500,
                discount: 0,
                total: 28_500
            }
        );
        let fixed = CouponTerms {
            discount: Discount::parse(DiscountType::Fixed, 5_000, None).unwrap(),
            min_order_amount: 20_000,
        };
        assert_eq!(
            price_order(&totals, Some(&fixed)).unwrap(),
            Amounts {
                subtotal: 28_500,
                discount: 5_000,
                total: 23_500
            }
        );
        let percent = CouponTerms {
            discount: Discount::parse(DiscountType::Percent, 15, Some(4_000)).unwrap(),
            min_order_amount: 0,
        };
        assert_eq!(
            price_order(&totals, Some(&percent)).unwrap().discount,
            4_000
        );
        let strict = CouponTerms {
            min_order_amount: 30_000,
            ..fixed
        };
        assert!(matches!(
            price_order(&totals, Some(&strict)),
            Err(PricingError::Coupon(_))
        ));
        assert_eq!(line_total(i64::MAX, 2), Err(PricingError::Overflow));
        assert_eq!(
            price_order(&[i64::MAX, 1], None),
            Err(PricingError::Overflow)
        );
    }
}

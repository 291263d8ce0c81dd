//! Orders: state machine, line validation and pricing (SPEC §6, §14). Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::invalid::Invalid;
use crate::domain::coupon::{CouponTerms, NotApplicable};

pub const MAX_LINES: usize = 50;
pub const MAX_QUANTITY: i64 = 1_000;

/// `PENDING → PAID | CANCELLED | EXPIRED`; `PAID → CONFIRMED` once the data platform has
/// acknowledged the order's `ORDER_PAID` event; `PAID | CONFIRMED → PARTIALLY_REFUNDED →
/// REFUNDED` by refunds (a partial refund may follow a partial refund). CANCELLED, EXPIRED and
/// REFUNDED are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Paid,
    Confirmed,
    PartiallyRefunded,
    Refunded,
    Cancelled,
    Expired,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Paid => "PAID",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::PartiallyRefunded => "PARTIALLY_REFUNDED",
            OrderStatus::Refunded => "REFUNDED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(OrderStatus::Pending),
            "PAID" => Some(OrderStatus::Paid),
            "CONFIRMED" => Some(OrderStatus::Confirmed),
            "PARTIALLY_REFUNDED" => Some(OrderStatus::PartiallyRefunded),
            "REFUNDED" => Some(OrderStatus::Refunded),
            "CANCELLED" => Some(OrderStatus::Cancelled),
            "EXPIRED" => Some(OrderStatus::Expired),
            _ => None,
        }
    }

    /// Every status, in the order of the life cycle.
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::Pending,
        OrderStatus::Paid,
        OrderStatus::Confirmed,
        OrderStatus::PartiallyRefunded,
        OrderStatus::Refunded,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
    ];

    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        match self {
            Pending => matches!(next, Paid | Cancelled | Expired),
            Paid => matches!(next, Confirmed | PartiallyRefunded | Refunded),
            Confirmed => matches!(next, PartiallyRefunded | Refunded),
            PartiallyRefunded => matches!(next, PartiallyRefunded | Refunded),
            Refunded | Cancelled | Expired => false,
        }
    }

    /// Was the order paid (PAID and every later state)? Its payment, its `ORDER_PAID` event
    /// and its units sold stay with it whatever is refunded later.
    pub fn is_paid(self) -> bool {
        matches!(
            self,
            OrderStatus::Paid
                | OrderStatus::Confirmed
                | OrderStatus::PartiallyRefunded
                | OrderStatus::Refunded
        )
    }

    /// May the order be refunded (SPEC §14)?
    pub fn is_refundable(self) -> bool {
        matches!(
            self,
            OrderStatus::Paid | OrderStatus::Confirmed | OrderStatus::PartiallyRefunded
        )
    }

    /// Does an order in this status hold its stock (reserved or sold) and its coupon? Refunded
    /// units may have gone back to stock; a used coupon is never given back by a refund.
    pub fn holds_reservation(self) -> bool {
        self == OrderStatus::Pending || self.is_paid()
    }

    /// The status after a refund: REFUNDED once no unit is left to refund.
    pub fn after_refund(units_left: i64) -> OrderStatus {
        if units_left > 0 {
            OrderStatus::PartiallyRefunded
        } else {
            OrderStatus::Refunded
        }
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
        let allowed = [
            (Pending, Paid),
            (Pending, Cancelled),
            (Pending, Expired),
            (Paid, Confirmed),
            (Paid, PartiallyRefunded),
            (Paid, Refunded),
            (Confirmed, PartiallyRefunded),
            (Confirmed, Refunded),
            (PartiallyRefunded, PartiallyRefunded),
            (PartiallyRefunded, Refunded),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
        // Final states.
        for terminal in [Refunded, Cancelled, Expired] {
            assert!(OrderStatus::ALL.iter().all(|&to| !terminal.can_become(to)));
        }
        // CONFIRMED only ever comes from PAID: a refunded order is never confirmed.
        assert!(!PartiallyRefunded.can_become(Confirmed) && !Refunded.can_become(Confirmed));
        assert!(!Confirmed.can_become(Paid) && !Paid.can_become(Pending));
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        assert_eq!(OrderStatus::parse("SHIPPED"), None);
    }

    #[test]
    fn paid_refundable_and_held() {
        use OrderStatus::*;
        let paid: Vec<_> = OrderStatus::ALL
            .into_iter()
            .filter(|s| s.is_paid())
            .collect();
        assert_eq!(paid, [Paid, Confirmed, PartiallyRefunded, Refunded]);
        let refundable: Vec<_> = OrderStatus::ALL
            .into_iter()
            .filter(|s| s.is_refundable())
            .collect();
        assert_eq!(refundable, [Paid, Confirmed, PartiallyRefunded]);
        for s in OrderStatus::ALL {
            // Only a paid order can be refunded, and every refundable status may be refunded.
            assert!(!s.is_refundable() || s.is_paid());
            assert_eq!(s.is_refundable(), s.can_become(Refunded));
            assert_eq!(s.holds_reservation(), !matches!(s, Cancelled | Expired));
        }
        assert_eq!(OrderStatus::after_refund(3), PartiallyRefunded);
        assert_eq!(OrderStatus::after_refund(0), Refunded);
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

//! Refund arithmetic (SPEC §14). Pure.
//!
//! (Over 400 lines with its tests: the code is ~215 lines; the rest are unit and property
//! tests of the rounding rules.)
//!
//! Each unit of an order refunds its unit price minus its share of the order's discount. The
//! discount is spread over the units in proportion to their price: every unit of a line first
//! gets `floor(discount × unitPrice / subtotal)`; what this rounding leaves over (fewer won
//! than there are units) is added one won at a time to the LAST units — walking the lines
//! from the last (highest product id) to the first, and in a line its last units — skipping
//! units whose share already equals their price. So:
//!
//! - the shares add up to exactly the discount, so refunding every unit returns exactly the
//!   order's `total`;
//! - a unit never refunds less than zero nor more than its price;
//! - a line's units are refunded in order (first units first), each unit at most once, so any
//!   sequence of partial refunds adds up to at most the total, and to exactly the total once
//!   every unit is refunded.
//!
//! Worked example (docs/refunds.md): two lines, 3 × 1,000 and 1 × 2,000, subtotal 5,000, a
//! discount of 1,000: the shares are floor(1000 × 1000 / 5000) = 200 per 1,000 unit and 400 for
//! the 2,000 unit, 1,000 in all: each 1,000 unit refunds 800, the 2,000 unit 1,600.

/// How one line of an order shares the discount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineShare {
    pub product_id: i64,
    pub unit_price: i64,
    pub quantity: i64,
    /// Every unit's share of the discount, rounded down.
    pub base_share: i64,
    /// How many of the line's last units carry one more won of the discount.
    pub bumped: i64,
}

impl LineShare {
    /// The discount share of unit `index` (0-based) of this line.
    pub fn unit_share(&self, index: i64) -> i64 {
        self.base_share + i64::from(index >= self.quantity - self.bumped)
    }

    /// What unit `index` refunds.
    pub fn unit_refund(&self, index: i64) -> i64 {
        self.unit_price - self.unit_share(index)
    }

    /// What refunding `count` units refunds when `already` of the line's units were refunded
    /// before (the units `already .. already + count`). `None` if that passes the quantity.
    pub fn refund_of(&self, already: i64, count: i64) -> Option<i64> {
        if already < 0 || count < 0 || already.checked_add(count)? > self.quantity {
            return None;
        }
        let end = already + count;
        let bumped_from = self.quantity - self.bumped;
        let bumped_units = (end.min(self.quantity) - already.max(bumped_from)).max(0);
        count
            .checked_mul(self.unit_price - self.base_share)?
            .checked_sub(bumped_units)
    }
}

/// Why a discount cannot be spread over these lines (data that breaks the order's own
/// invariants: the database's checks make both impossible).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpreadError {
    /// The discount is negative or above the subtotal, or a price or quantity is negative.
    OutOfRange,
    Overflow,
}

/// The discount of an order spread over its units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscountSpread {
    lines: Vec<LineShare>,
}

impl DiscountSpread {
    /// `lines`: `(product_id, unit_price, quantity)` in the order's line order (ascending
    /// product id); `discount`: the order's discount.
    pub fn new(lines: &[(i64, i64, i64)], discount: i64) -> Result<Self, SpreadError> {
        let mut subtotal: i64 = 0;
        for &(_, price, quantity) in lines {
            if price < 0 || quantity < 0 {
                return Err(SpreadError::OutOfRange);
            }
            let line = price.checked_mul(quantity).ok_or(SpreadError::Overflow)?;
            subtotal = subtotal.checked_add(line).ok_or(SpreadError::Overflow)?;
        }
        if discount < 0 || discount > subtotal {
            return Err(SpreadError::OutOfRange);
        }
        let mut shares: Vec<LineShare> = lines
            .iter()
            .map(|&(product_id, unit_price, quantity)| {
                // discount <= subtotal, so the share is at most the price and fits in i64.
                let base_share = if subtotal == 0 {
                    0
                } else {
                    (i128::from(discount) * i128::from(unit_price) / i128::from(subtotal)) as i64
                };
                LineShare {
                    product_id,
                    unit_price,
                    quantity,
                    base_share,
                    bumped: 0,
                }
            })
            .collect();
        let spread: i128 = shares
            .iter()
            .map(|l| i128::from(l.base_share) * i128::from(l.quantity))
            .sum();
        // Less than one won per unit is left over, and more units than that can take one more.
        let mut left =
            i64::try_from(i128::from(discount) - spread).map_err(|_| SpreadError::Overflow)?;
        for line in shares.iter_mut().rev() {
            if left == 0 {
                break;
            }
            if line.base_share < line.unit_price {
                line.bumped = line.quantity.min(left);
                left -= line.bumped;
            }
        }
        if left != 0 {
            // Unreachable by the argument above; refuse rather than refund the wrong amount.
            return Err(SpreadError::OutOfRange);
        }
        Ok(DiscountSpread { lines: shares })
    }

    pub fn lines(&self) -> &[LineShare] {
        &self.lines
    }

    pub fn line(&self, product_id: i64) -> Option<&LineShare> {
        self.lines.iter().find(|l| l.product_id == product_id)
    }
}

/// One line of a refund: units of one product and what they refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefundLine {
    pub product_id: i64,
    pub quantity: i64,
    pub amount: i64,
}

/// Why a refund cannot be made as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundError {
    /// This product is not a line of the order.
    NotInOrder { product_id: i64 },
    /// More units than remain refundable (first offending lines, ascending product id).
    Exceeds(Vec<Shortfall>),
    /// Nothing is left to refund.
    NothingLeft,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    pub product_id: i64,
    pub requested: i64,
    pub remaining: i64,
}

/// Plan a refund. `refunded(product_id)`: units of that line refunded before. `request`:
/// `(product_id, quantity)` (distinct products), or `None` for every unit not yet refunded.
/// The lines come out in ascending product id with their amounts.
pub fn plan_refund(
    spread: &DiscountSpread,
    refunded: impl Fn(i64) -> i64,
    request: Option<&[(i64, i64)]>,
) -> Result<Vec<RefundLine>, RefundError> {
    let wanted: Vec<(i64, i64)> = match request {
        Some(request) => {
            let mut wanted = request.to_vec();
            wanted.sort_unstable();
            wanted
        }
        None => spread
            .lines()
            .iter()
            .map(|l| (l.product_id, l.quantity - refunded(l.product_id)))
            .filter(|&(_, left)| left > 0)
            .collect(),
    };
    let mut lines = Vec::with_capacity(wanted.len());
    let mut short = Vec::new();
    for (product_id, quantity) in wanted {
        let line = spread
            .line(product_id)
            .ok_or(RefundError::NotInOrder { product_id })?;
        let already = refunded(product_id);
        match line.refund_of(already, quantity) {
            Some(amount) if quantity > 0 => lines.push(RefundLine {
                product_id,
                quantity,
                amount,
            }),
            _ => short.push(Shortfall {
                product_id,
                requested: quantity,
                remaining: (line.quantity - already).max(0),
            }),
        }
    }
    if !short.is_empty() {
        return Err(RefundError::Exceeds(short));
    }
    if lines.is_empty() {
        return Err(RefundError::NothingLeft);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spread(lines: &[(i64, i64, i64)], discount: i64) -> DiscountSpread {
        DiscountSpread::new(lines, discount).expect("valid")
    }

    fn all_units(s: &DiscountSpread) -> i64 {
        s.lines()
            .iter()
            .map(|l| l.refund_of(0, l.quantity).unwrap())
            .sum()
    }

    #[test]
    fn worked_example_of_the_docs() {
        let s = spread(&[(1, 1_000, 3), (2, 2_000, 1)], 1_000);
        assert_eq!(s.lines()[0].base_share, 200);
        assert_eq!(s.lines()[1].base_share, 400);
        assert_eq!(s.lines()[0].bumped + s.lines()[1].bumped, 0);
        assert_eq!(s.lines()[0].refund_of(0, 1), Some(800));
        assert_eq!(s.lines()[1].refund_of(0, 1), Some(1_600));
        assert_eq!(all_units(&s), 4_000);
    }

    #[test]
    fn the_remainder_goes_to_the_last_units() {
        // 3 units of 1,000, discount 1,000: 333 each, one won left over, on the last unit.
        let s = spread(&[(7, 1_000, 3)], 1_000);
        let line = &s.lines()[0];
        assert_eq!((line.base_share, line.bumped), (333, 1));
        assert_eq!(
            (0..3).map(|i| line.unit_refund(i)).collect::<Vec<_>>(),
            [667, 667, 666]
        );
        // Refunded one at a time: 667 + 667 + 666 = 2,000 = the total.
        assert_eq!(line.refund_of(0, 1), Some(667));
        assert_eq!(line.refund_of(1, 1), Some(667));
        assert_eq!(line.refund_of(2, 1), Some(666));
        assert_eq!(line.refund_of(3, 1), None, "past the quantity");
        assert_eq!(line.refund_of(1, 2), Some(1_333));
        // Over several lines the remainder lands on the last line first.
        let s = spread(&[(1, 100, 1), (2, 100, 1), (3, 100, 1)], 100);
        let shares: Vec<_> = s.lines().iter().map(|l| l.unit_share(0)).collect();
        assert_eq!(shares, [33, 33, 34]);
        let s = spread(&[(1, 100, 1), (2, 100, 1), (3, 100, 1)], 101);
        let shares: Vec<_> = s.lines().iter().map(|l| l.unit_share(0)).collect();
        assert_eq!(shares, [33, 34, 34]);
    }

    #[test]
    fn free_units_take_no_share() {
        // A unit priced 0 never refunds below zero: the remainder skips it.
        let s = spread(&[(1, 3, 1), (2, 0, 5)], 2);
        assert!(s.lines()[1].base_share == 0 && s.lines()[1].bumped == 0);
        assert_eq!(s.lines()[0].refund_of(0, 1), Some(1));
        assert_eq!(s.lines()[1].refund_of(0, 5), Some(0));
        assert_eq!(all_units(&s), 1);
        // Everything free, or everything discounted away.
        assert_eq!(all_units(&spread(&[(1, 0, 2)], 0)), 0);
        assert_eq!(all_units(&spread(&[(1, 500, 2), (2, 300, 1)], 1_300)), 0);
    }

    #[test]
    fn impossible_input_is_refused() {
        assert_eq!(
            DiscountSpread::new(&[(1, 100, 1)], 101),
            Err(SpreadError::OutOfRange)
        );
        assert_eq!(
            DiscountSpread::new(&[(1, 100, 1)], -1),
            Err(SpreadError::OutOfRange)
        );
        assert_eq!(
            DiscountSpread::new(&[(1, i64::MAX, 2)], 0),
            Err(SpreadError::Overflow)
        );
    }

    #[test]
    fn planning_whole_and_by_line() {
        let s = spread(&[(1, 1_000, 3), (2, 2_000, 1)], 1_000);
        let none = |_: i64| 0;
        let all = plan_refund(&s, none, None).unwrap();
        assert_eq!(
            all,
            [
                RefundLine {
                    product_id: 1,
                    quantity: 3,
                    amount: 2_400
                },
                RefundLine {
                    product_id: 2,
                    quantity: 1,
                    amount: 1_600
                }
            ]
        );
        // After 2 units of product 1, "everything" is what is left.
        let two = |p: i64| if p == 1 { 2 } else { 0 };
        let rest = plan_refund(&s, two, None).unwrap();
        assert_eq!(
            rest.iter()
                .map(|l| (l.product_id, l.quantity))
                .collect::<Vec<_>>(),
            [(1, 1), (2, 1)]
        );
        assert_eq!(
            plan_refund(&s, two, Some(&[(1, 2)])),
            Err(RefundError::Exceeds(vec![Shortfall {
                product_id: 1,
                requested: 2,
                remaining: 1
            }]))
        );
        assert_eq!(
            plan_refund(&s, none, Some(&[(9, 1)])),
            Err(RefundError::NotInOrder { product_id: 9 })
        );
        let everything = |p: i64| if p == 1 { 3 } else { 1 };
        assert_eq!(
            plan_refund(&s, everything, None),
            Err(RefundError::NothingLeft)
        );
        // Requested lines come back in product order.
        let lines = plan_refund(&s, none, Some(&[(2, 1), (1, 1)])).unwrap();
        assert_eq!(lines[0].product_id, 1);
        assert_eq!(lines[0].amount + lines[1].amount, 800 + 1_600);
    }

    /// An order: 1–6 lines (prices 0–200,000, quantities 1–30) and a discount within the
    /// subtotal.
    fn order() -> impl Strategy<Value = (Vec<(i64, i64, i64)>, i64)> {
        prop::collection::vec((0i64..=200_000, 1i64..=30), 1..=6).prop_flat_map(|lines| {
            let lines: Vec<(i64, i64, i64)> = lines
                .into_iter()
                .enumerate()
                .map(|(i, (price, quantity))| (i as i64 + 1, price, quantity))
                .collect();
            let subtotal: i64 = lines.iter().map(|(_, p, q)| p * q).sum();
            (Just(lines), 0..=subtotal)
        })
    }

    proptest! {
        #[test]
        fn a_full_refund_returns_exactly_the_total((lines, discount) in order()) {
            let s = spread(&lines, discount);
            let subtotal: i64 = lines.iter().map(|(_, p, q)| p * q).sum();
            let planned = plan_refund(&s, |_| 0, None);
            let total = subtotal - discount;
            match planned {
                Ok(planned) => prop_assert_eq!(planned.iter().map(|l| l.amount).sum::<i64>(), total),
                Err(e) => prop_assert!(false, "{:?}", e),
            }
            prop_assert_eq!(all_units(&s), total);
        }

        #[test]
        fn shares_are_proportional_and_within_each_price((lines, discount) in order()) {
            let s = spread(&lines, discount);
            let subtotal: i64 = lines.iter().map(|(_, p, q)| p * q).sum();
            let mut shares = 0;
            for line in s.lines() {
                for i in 0..line.quantity {
                    let share = line.unit_share(i);
                    prop_assert!(share >= 0 && share <= line.unit_price);
                    // The exact proportional share rounded down, or one won more.
                    if subtotal > 0 {
                        let exact = i128::from(discount) * i128::from(line.unit_price);
                        let scaled = i128::from(share) * i128::from(subtotal);
                        prop_assert!(scaled > exact - i128::from(subtotal));
                        prop_assert!(scaled <= exact + i128::from(subtotal));
                    }
                    shares += share;
                }
            }
            prop_assert_eq!(shares, discount);
        }

        /// Any sequence of partial refunds (units chosen at random, lines in any order) adds up
        /// to at most the total, each refund is non-negative, and it reaches the total exactly
        /// when every unit has been refunded; asking for more than remains is refused.
        #[test]
        fn partial_refunds_never_add_up_to_more_than_the_total(
            (lines, discount) in order(),
            picks in prop::collection::vec((0usize..6, 1i64..=30), 1..40),
        ) {
            let s = spread(&lines, discount);
            let total: i64 = lines.iter().map(|(_, p, q)| p * q).sum::<i64>() - discount;
            let mut refunded: std::collections::HashMap<i64, i64> = Default::default();
            let mut sum = 0;
            for (pick, count) in picks {
                let line = &s.lines()[pick % s.lines().len()];
                let already = refunded.get(&line.product_id).copied().unwrap_or(0);
                let result = plan_refund(&s, |p| refunded.get(&p).copied().unwrap_or(0),
                                         Some(&[(line.product_id, count)]));
                if already + count > line.quantity {
                    prop_assert!(matches!(result, Err(RefundError::Exceeds(_))), "{:?}", result);
                    continue;
                }
                let planned = result.expect("within the quantity");
                prop_assert_eq!(planned.len(), 1);
                prop_assert!(planned[0].amount >= 0);
                prop_assert!(planned[0].amount <= count * line.unit_price);
                sum += planned[0].amount;
                prop_assert!(sum <= total, "{} > {}", sum, total);
                *refunded.entry(line.product_id).or_insert(0) += count;
            }
            // Refund whatever is left: the grand sum is the total, exactly.
            match plan_refund(&s, |p| refunded.get(&p).copied().unwrap_or(0), None) {
                Ok(rest) => sum += rest.iter().map(|l| l.amount).sum::<i64>(),
                Err(RefundError::NothingLeft) => {}
                Err(e) => prop_assert!(false, "{:?}", e),
            }
            prop_assert_eq!(sum, total);
        }
    }
}

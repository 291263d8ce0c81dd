//! Money: integer minor units (KRW won), never floats. Balance limits and ledger arithmetic.

use serde::Serialize;
use utoipa::ToSchema;

use super::invalid::Invalid;

/// Configured balance limits (SPEC §3).
#[derive(Clone, Copy, Debug)]
pub struct BalanceLimits {
    /// Largest balance a member may hold.
    pub max_balance: i64,
    /// Largest single charge.
    pub max_charge: i64,
}

impl Default for BalanceLimits {
    fn default() -> Self {
        Self {
            max_balance: 10_000_000,
            max_charge: 1_000_000,
        }
    }
}

/// A validated charge amount: positive and within the per-charge limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChargeAmount(i64);

impl ChargeAmount {
    pub fn parse(amount: i64, limits: &BalanceLimits) -> Result<Self, Invalid> {
        if amount <= 0 {
            return Err(Invalid::new("amount", "must be a positive integer"));
        }
        if amount > limits.max_charge {
            return Err(Invalid::new(
                "amount",
                format!("must be at most {} per charge", limits.max_charge),
            ));
        }
        Ok(Self(amount))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// The balance after charging `amount`, or `None` if it would pass `max_balance`.
pub fn balance_after_charge(balance: i64, amount: ChargeAmount, max_balance: i64) -> Option<i64> {
    balance
        .checked_add(amount.get())
        .filter(|after| *after <= max_balance)
}

/// The balance after paying `amount`, or `None` if the balance is short (never below zero).
pub fn balance_after_payment(balance: i64, amount: i64) -> Option<i64> {
    balance.checked_sub(amount).filter(|after| *after >= 0)
}

/// Kinds of ledger entries. Charges and refunds are positive, payments negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LedgerKind {
    Charge,
    Payment,
    Refund,
}

impl LedgerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::Charge => "CHARGE",
            LedgerKind::Payment => "PAYMENT",
            LedgerKind::Refund => "REFUND",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "CHARGE" => Some(LedgerKind::Charge),
            "PAYMENT" => Some(LedgerKind::Payment),
            "REFUND" => Some(LedgerKind::Refund),
            _ => None,
        }
    }

    /// The signed ledger amount for a movement of `magnitude`.
    pub fn signed(self, magnitude: i64) -> i64 {
        match self {
            LedgerKind::Charge | LedgerKind::Refund => magnitude,
            LedgerKind::Payment => -magnitude,
        }
    }
}

/// Checks a member's ledger, oldest first: each `balance_after` is the running sum, and the
/// last one equals `balance` (SPEC §9.2). Returns the first broken entry index on failure.
pub fn verify_ledger(entries: &[(i64, i64)], balance: i64) -> Result<(), usize> {
    let mut running = 0i64;
    for (i, (amount, after)) in entries.iter().enumerate() {
        running = running.checked_add(*amount).ok_or(i)?;
        if running != *after || running < 0 {
            return Err(i);
        }
    }
    if running == balance {
        Ok(())
    } else {
        Err(entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> BalanceLimits {
        BalanceLimits::default()
    }

    #[test]
    fn charge_amount_must_be_positive_and_within_limit() {
        assert!(ChargeAmount::parse(0, &limits()).is_err());
        assert!(ChargeAmount::parse(-5, &limits()).is_err());
        assert!(ChargeAmount::parse(1_000_001, &limits()).is_err());
        assert!(ChargeAmount::parse(i64::MAX, &limits()).is_err());
        assert_eq!(ChargeAmount::parse(1, &limits()).unwrap().get(), 1);
        assert_eq!(
            ChargeAmount::parse(1_000_000, &limits()).unwrap().get(),
            1_000_000
        );
    }

    #[test]
    fn charge_error_names_the_field() {
        let err = ChargeAmount::parse(0, &limits()).unwrap_err();
        assert_eq!(err.field, "amount");
    }

    #[test]
    fn balance_never_exceeds_maximum() {
        let amount = ChargeAmount::parse(1_000, &limits()).unwrap();
        assert_eq!(balance_after_charge(0, amount, 10_000_000), Some(1_000));
        assert_eq!(
            balance_after_charge(9_999_000, amount, 10_000_000),
            Some(10_000_000)
        );
        assert_eq!(balance_after_charge(9_999_001, amount, 10_000_000), None);
        assert_eq!(balance_after_charge(i64::MAX, amount, i64::MAX), None);
    }

    #[test]
    fn payment_never_goes_below_zero() {
        assert_eq!(balance_after_payment(5_000, 5_000), Some(0));
        assert_eq!(balance_after_payment(5_000, 5_001), None);
        assert_eq!(balance_after_payment(i64::MIN, 1), None);
    }

    #[test]
    fn ledger_signs() {
        assert_eq!(LedgerKind::Charge.signed(10), 10);
        assert_eq!(LedgerKind::Refund.signed(10), 10);
        assert_eq!(LedgerKind::Payment.signed(10), -10);
        for kind in [LedgerKind::Charge, LedgerKind::Payment, LedgerKind::Refund] {
            assert_eq!(LedgerKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(LedgerKind::parse("GIFT"), None);
    }

    #[test]
    fn ledger_arithmetic_is_checked() {
        assert_eq!(verify_ledger(&[], 0), Ok(()));
        assert_eq!(
            verify_ledger(&[(1_000, 1_000), (-400, 600), (100, 700)], 700),
            Ok(())
        );
        assert_eq!(verify_ledger(&[(1_000, 1_000), (-400, 500)], 500), Err(1));
        assert_eq!(verify_ledger(&[(1_000, 1_000)], 900), Err(1));
        assert_eq!(verify_ledger(&[(-1, -1)], -1), Err(0));
    }
}

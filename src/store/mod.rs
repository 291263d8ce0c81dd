//! Business commands and queries against the database, written once for both backends.
//!
//! Each command takes a transaction handle and a command value and returns an outcome, so
//! several commands can later share one transaction (group commit). Reads take any
//! [`crate::db::Handle`].

pub mod admin;
pub mod balance;
pub mod cart;
pub mod coupons;
pub mod idempotency;
pub mod list_plans;
pub mod orders;
pub mod outbox;
pub mod products;
pub mod ranking;
pub mod stats;
pub mod users;

use chrono::{DateTime, SubsecRound, Utc};

/// The current time, truncated to microseconds so SQLite text and PostgreSQL `timestamptz`
/// round-trip the same value.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

//! HTTP resources. Each module owns its request/response types and exposes `router()`.

pub mod admin;
pub mod balance;
pub mod cart;
pub mod coupons;
pub mod health;
pub mod openapi;
pub mod orders;
pub mod outbox;
pub mod products;
pub mod ranking;
pub mod refunds;
pub mod stats;
pub mod users;

use chrono::{DateTime, Utc};
use serde::Serializer;

pub use crate::domain::time::format_time;

/// Serialize a timestamp with [`format_time`].
pub fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*t))
}

pub fn rfc3339_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn timestamps_have_microseconds_always() {
        let t = Utc.with_ymd_and_hms(2026, 11, 21, 18, 42, 37).unwrap();
        assert_eq!(format_time(t), "2026-11-21T18:42:37.000000Z");
        let t = t + chrono::Duration::nanoseconds(385_815_999);
        assert_eq!(format_time(t), "2026-11-21T18:42:37.385815Z");
    }
}

//! HTTP resources. Each module owns its request/response types and exposes `router()`.

pub mod balance;
pub mod cart;
pub mod coupons;
pub mod health;
pub mod orders;
pub mod outbox;
pub mod products;
pub mod ranking;
pub mod users;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// Timestamps are RFC 3339 UTC with a `Z` (SPEC §1).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

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

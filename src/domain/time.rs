//! How instants are written down, in answers and in event payloads alike.

use chrono::{DateTime, SecondsFormat, Utc};

/// Timestamps are RFC 3339 UTC with a `Z` (SPEC §1), always with exactly six fractional digits
/// (microseconds, the precision PostgreSQL stores): `2026-11-21T18:42:37.385815Z`. Every
/// timestamp in every answer (and in outbox payloads) goes through here.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

//! The operator console's dashboard figures (SPEC §16): paid orders and revenue per hour, and
//! the outbox backlog. Admin only; each is read from an index (`store::stats`).

use axum::extract::State;
use chrono::{DateTime, Duration, DurationRound, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::api::admin::window_bound;
use crate::auth::Admin;
use crate::error::{AppError, AppResult, ErrorBody};
use crate::extract::ValidQuery;
use crate::state::AppState;
use crate::store::stats;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sales_by_hour))
        .routes(routes!(outbox_counts))
}

/// The longest range `GET /admin/stats/sales` answers, in hours (31 days).
pub const MAX_HOURS: i64 = 31 * 24;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SalesQuery {
    /// Start of the range (RFC 3339), rounded down to the hour. Default: 24 hours before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End of the range (exclusive, RFC 3339), rounded up to the hour. Default: the end of the
    /// current hour, or 31 days after `from` if that is earlier. A range over 31 days keeps its
    /// last 31 days; `to` not after `from` is an empty range.
    pub to: Option<DateTime<Utc>>,
}

/// One hour of sales.
#[derive(Serialize, ToSchema, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SalesHour {
    /// Start of the hour (UTC).
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub hour: DateTime<Utc>,
    /// Orders paid in this hour.
    pub orders: i64,
    /// Sum of their totals (what members paid), in minor units.
    pub revenue: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesStats {
    /// Start of the first hour.
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub from: DateTime<Utc>,
    /// End of the last hour (exclusive).
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub to: DateTime<Utc>,
    /// Orders paid in the range.
    pub orders: i64,
    /// Their totals, in minor units.
    pub revenue: i64,
    /// Every hour of the range, oldest first; hours without a payment are there with zeros.
    pub hours: Vec<SalesHour>,
}

fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::hours(1)).unwrap_or(t)
}

fn ceil_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_hour(t);
    if floor == t {
        t
    } else {
        floor + Duration::hours(1)
    }
}

/// The range asked for, on hour boundaries: `[from, to)`. Every instant the schema allows is
/// accepted (like the admin order window): bounds are clamped to the years both backends
/// store alike; `to` not after `from` is an empty range; a range over [`MAX_HOURS`] keeps its
/// last 31 days (the answer's `from` says where it starts); `from` alone ends 31 days later
/// or now, whichever is first.
pub fn sales_range(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let (from, to_given) = (window_bound(from), window_bound(to));
    let last_hour = floor_hour(window_bound(Some(DateTime::<Utc>::MAX_UTC)).unwrap_or(now));
    let hour = |t: DateTime<Utc>| t.clamp(floor_hour(DateTime::UNIX_EPOCH), last_hour);
    let mut to = hour(ceil_hour(
        to_given.unwrap_or(now + Duration::nanoseconds(1)),
    ));
    let from = hour(floor_hour(from.unwrap_or(to - Duration::hours(24))));
    if to_given.is_none() {
        to = to.min(from + Duration::hours(MAX_HOURS));
    }
    if to <= from {
        return (from, from);
    }
    (from.max(to - Duration::hours(MAX_HOURS)), to)
}

/// Spread the database's hours (only those with sales) over every hour of `[from, to)`.
pub fn dense_hours(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rows: Vec<stats::HourRow>,
) -> AppResult<Vec<SalesHour>> {
    let mut hours = Vec::new();
    let mut at = from;
    while at < to {
        hours.push(SalesHour {
            hour: at,
            orders: 0,
            revenue: 0,
        });
        at += Duration::hours(1);
    }
    for row in rows {
        let naive =
            NaiveDateTime::parse_from_str(&format!("{}:00:00", row.hour), "%Y-%m-%dT%H:%M:%S")
                .map_err(|e| {
                    AppError::from(anyhow::anyhow!(
                        "bad hour {:?} from the database: {e}",
                        row.hour
                    ))
                })?;
        let hour = Utc.from_utc_datetime(&naive);
        let index = (hour - from).num_hours();
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| hours.get_mut(i)) {
            slot.orders += row.orders;
            slot.revenue += row.revenue;
        }
    }
    Ok(hours)
}

/// Admin: orders paid per hour and their revenue (the totals members paid, refunds not
/// deducted), for the console's dashboard. Every hour of the range is listed, empty ones with
/// zeros. One range scan of an index on `paid_at` (migration 0010).
#[utoipa::path(get, path = "/admin/stats/sales", tag = "back office", security(("bearer" = [])),
    params(SalesQuery),
    responses((status = 200, body = SalesStats),
        (status = 400, description = "VALIDATION_ERROR: from or to is not an RFC 3339 instant (`details.field`)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "FORBIDDEN: not an admin token", body = ErrorBody)))]
async fn sales_by_hour(
    State(state): State<AppState>,
    _admin: Admin,
    ValidQuery(query): ValidQuery<SalesQuery>,
) -> AppResult<axum::Json<SalesStats>> {
    let (from, to) = sales_range(query.from, query.to, Utc::now());
    let mut conn = state.db.read().await?;
    let rows = stats::sales_by_hour(&mut conn, from, to).await?;
    let hours = dense_hours(from, to, rows)?;
    Ok(axum::Json(SalesStats {
        from,
        to,
        orders: hours.iter().map(|h| h.orders).sum(),
        revenue: hours.iter().map(|h| h.revenue).sum(),
        hours,
    }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxCounts {
    /// Events waiting for (another) delivery attempt.
    pub pending: i64,
    /// Events that used up their attempts; `POST /admin/outbox/{eventId}/retry` replays one.
    pub dead: i64,
}

/// Admin: how many outbox events are PENDING and DEAD (the dashboard's backlog).
#[utoipa::path(get, path = "/admin/stats/outbox", tag = "back office", security(("bearer" = [])),
    responses((status = 200, body = OutboxCounts),
        (status = 401, body = ErrorBody), (status = 403, description = "FORBIDDEN: not an admin token", body = ErrorBody)))]
async fn outbox_counts(
    State(state): State<AppState>,
    _admin: Admin,
) -> AppResult<axum::Json<OutboxCounts>> {
    let mut conn = state.db.read().await?;
    let (pending, dead) = stats::outbox_counts(&mut conn).await?;
    Ok(axum::Json(OutboxCounts { pending, dead }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn ranges_snap_to_whole_hours() {
        let now = t("2026-11-21T18:42:37Z");
        assert_eq!(
            sales_range(None, None, now),
            (t("2026-11-20T19:00:00Z"), t("2026-11-21T19:00:00Z"))
        );
        assert_eq!(
            sales_range(
                Some(t("2026-11-21T10:30:00Z")),
                Some(t("2026-11-21T12:00:00Z")),
                now
            ),
            (t("2026-11-21T10:00:00Z"), t("2026-11-21T12:00:00Z"))
        );
        // On the hour exactly: the current hour is still included.
        assert_eq!(
            sales_range(None, None, t("2026-11-21T18:00:00Z")).1,
            t("2026-11-21T19:00:00Z")
        );
    }

    #[test]
    fn every_schema_valid_range_has_an_answer() {
        let now = t("2026-11-21T18:42:37Z");
        let noon = t("2026-11-21T12:00:00Z");
        // `to` not after `from`: an empty range.
        assert_eq!(sales_range(Some(noon), Some(noon), now), (noon, noon));
        // Over 31 days: its last 31 days.
        assert_eq!(
            sales_range(
                Some(t("2026-10-01T00:00:00Z")),
                Some(t("2026-11-21T00:00:00Z")),
                now
            ),
            (t("2026-10-21T00:00:00Z"), t("2026-11-21T00:00:00Z"))
        );
        // Exactly 31 days: as asked.
        assert_eq!(
            sales_range(
                Some(t("2026-10-21T00:00:00Z")),
                Some(t("2026-11-21T00:00:00Z")),
                now
            ),
            (t("2026-10-21T00:00:00Z"), t("2026-11-21T00:00:00Z"))
        );
        // `from` alone, long ago: 31 days from it.
        assert_eq!(
            sales_range(Some(t("2000-01-01T00:00:00Z")), None, now),
            (t("2000-01-01T00:00:00Z"), t("2000-02-01T00:00:00Z"))
        );
        // Instants beyond the stored years are clamped, not refused.
        let (from, to) = sales_range(None, Some(t("0001-01-01T00:00:00Z")), now);
        assert_eq!((from, to), (DateTime::UNIX_EPOCH, DateTime::UNIX_EPOCH));
        let (from, to) = sales_range(Some(t("9999-12-31T23:30:00Z")), None, now);
        assert!(
            from <= to && to.format("%Y").to_string() == "9999",
            "{from} {to}"
        );
    }

    #[test]
    fn hours_without_sales_are_zero() {
        let rows = vec![stats::HourRow {
            hour: "2026-11-21T11".into(),
            orders: 2,
            revenue: 3_000,
        }];
        let hours =
            dense_hours(t("2026-11-21T10:00:00Z"), t("2026-11-21T13:00:00Z"), rows).unwrap();
        assert_eq!(hours.len(), 3);
        assert_eq!(
            (hours[0].orders, hours[1].orders, hours[2].orders),
            (0, 2, 0)
        );
        assert_eq!(hours[1].revenue, 3_000);
        assert_eq!(hours[1].hour, t("2026-11-21T11:00:00Z"));
    }
}

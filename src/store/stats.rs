//! The operator console's dashboard figures (SPEC §16), each read from an index
//! (migration 0010).

use chrono::{DateTime, Utc};

use crate::db::Handle;
use crate::error::AppResult;
use crate::sql_all;

/// Paid orders per hour with `paid_at` in `[$1, $2)`: `(hour, orders, revenue)`, the hour as
/// `YYYY-MM-DDTHH` (UTC). A range scan of `orders_by_paid_at`, which covers `total`.
///
/// SQLite stores instants as RFC 3339 text in UTC, so the hour is the first 13 characters.
pub const SALES_BY_HOUR_SQLITE: &str = "SELECT substr(paid_at, 1, 13) AS hour, \
     CAST(COUNT(*) AS BIGINT) AS orders, CAST(SUM(total) AS BIGINT) AS revenue \
     FROM orders WHERE paid_at >= $1 AND paid_at < $2 \
     GROUP BY substr(paid_at, 1, 13) ORDER BY 1";

/// The PostgreSQL spelling of [`SALES_BY_HOUR_SQLITE`] (`timestamptz` → UTC hour text).
pub const SALES_BY_HOUR_POSTGRES: &str = "SELECT to_char(paid_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24') AS hour, \
     CAST(COUNT(*) AS BIGINT) AS orders, CAST(SUM(total) AS BIGINT) AS revenue \
     FROM orders WHERE paid_at >= $1 AND paid_at < $2 \
     GROUP BY 1 ORDER BY 1";

/// `(pending, dead)` outbox counts, each from its partial index (`outbox_events_due`,
/// `outbox_events_dead`), so neither reads the delivered history.
pub const OUTBOX_COUNTS: &str = "SELECT \
     (SELECT CAST(COUNT(*) AS BIGINT) FROM outbox_events WHERE status = 'PENDING'), \
     (SELECT CAST(COUNT(*) AS BIGINT) FROM outbox_events WHERE status = 'DEAD')";

/// One hour of sales as the database groups it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HourRow {
    /// `YYYY-MM-DDTHH`, UTC.
    pub hour: String,
    pub orders: i64,
    pub revenue: i64,
}
crate::lite_row!(HourRow {
    hour,
    orders,
    revenue
});

/// The hours of `[from, to)` that had paid orders, in order (empty hours are absent).
pub async fn sales_by_hour(
    h: &mut impl Handle,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> AppResult<Vec<HourRow>> {
    let sql = h
        .dialect()
        .pick(SALES_BY_HOUR_SQLITE, SALES_BY_HOUR_POSTGRES);
    Ok(sql_all!(HourRow; h, sql, from, to)?)
}

/// `(pending, dead)` outbox events.
pub async fn outbox_counts(h: &mut impl Handle) -> AppResult<(i64, i64)> {
    Ok(crate::sql_one!((i64, i64); h, OUTBOX_COUNTS)?)
}

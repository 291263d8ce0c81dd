//! Best-seller aggregates (SPEC §11): `product_sales_daily` is recomputed from PAID orders by
//! the aggregation job; the read path only ever reads the aggregates.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::db::{Dialect, Handle, Tx};
use crate::error::AppResult;
use crate::{sql_all, sql_execute, sql_scalar, sql_scalar_optional};

/// Advisory-lock namespace of the aggregation job on PostgreSQL; the second key is the schema,
/// so shopd installations in different schemas of one database do not block each other.
const JOB_LOCK_NAMESPACE: i32 = 0x5348_4F50;

/// How to run the job.
#[derive(Debug, Clone, Copy, Default)]
pub struct AggregateOptions {
    /// Recompute every day, not only those that can have changed since the last run.
    pub full: bool,
    /// If another instance is running the job: wait for it and run after (on demand), rather
    /// than skip (the periodic job).
    pub wait_for_lock: bool,
}

/// The outcome of one aggregation run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRun {
    /// Recomputed every day from `since` (UTC date) on.
    Ran { since: Option<NaiveDate> },
    /// Another instance holds the job right now.
    Skipped,
}

pub fn day_string(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// Recompute the aggregates for every day that can have changed since the last run (from the
/// day before the last run; everything on the first run or when `full`). DELETE + INSERT in
/// one transaction, so running it again never double counts, and readers see the old or the
/// new numbers. `full` is for operators who corrected order data by hand.
pub async fn aggregate(
    tx: &mut Tx,
    now: DateTime<Utc>,
    options: AggregateOptions,
) -> AppResult<JobRun> {
    if tx.dialect() == Dialect::Postgres {
        if options.wait_for_lock {
            sql_execute!(
                tx,
                "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))",
                JOB_LOCK_NAMESPACE
            )?;
        } else {
            let locked: bool = sql_scalar!(
                tx,
                "SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))",
                JOB_LOCK_NAMESPACE
            )?;
            if !locked {
                return Ok(JobRun::Skipped);
            }
        }
    }
    let last: Option<DateTime<Utc>> =
        sql_scalar_optional!(tx, "SELECT computed_at FROM ranking_state WHERE id = 1")?;
    // A payment committed just before midnight may become visible just after: redo yesterday.
    let since = last
        .filter(|_| !options.full)
        .map(|t| t.date_naive() - Duration::days(1));
    let since_day = since
        .map(day_string)
        .unwrap_or_else(|| "0000-00-00".to_string());
    let since_time = since
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);

    sql_execute!(
        tx,
        "DELETE FROM product_sales_daily WHERE day >= $1",
        &since_day
    )?;
    let insert = tx.dialect().pick(
        "INSERT INTO product_sales_daily (day, product_id, quantity, revenue)
         SELECT substr(o.paid_at, 1, 10), l.product_id, SUM(l.quantity), SUM(l.line_total)
         FROM orders o JOIN order_lines l ON l.order_id = o.id
         WHERE o.status = 'PAID' AND o.paid_at >= $1
         GROUP BY substr(o.paid_at, 1, 10), l.product_id",
        "INSERT INTO product_sales_daily (day, product_id, quantity, revenue)
         SELECT to_char(o.paid_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), l.product_id, SUM(l.quantity), SUM(l.line_total)
         FROM orders o JOIN order_lines l ON l.order_id = o.id
         WHERE o.status = 'PAID' AND o.paid_at >= $1
         GROUP BY to_char(o.paid_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), l.product_id",
    );
    sql_execute!(tx, insert, since_time)?;
    sql_execute!(
        tx,
        "INSERT INTO ranking_state (id, computed_at) VALUES (1, $1)
         ON CONFLICT (id) DO UPDATE SET computed_at = excluded.computed_at",
        now
    )?;
    Ok(JobRun::Ran { since })
}

/// When the aggregates were last computed.
pub async fn computed_at(h: &mut impl Handle) -> AppResult<Option<DateTime<Utc>>> {
    Ok(sql_scalar_optional!(
        h,
        "SELECT computed_at FROM ranking_state WHERE id = 1"
    )?)
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RankedRow {
    pub product_id: i64,
    pub name: String,
    pub price: i64,
    pub status: String,
    pub sold_quantity: i64,
    pub revenue: i64,
}
crate::lite_row!(RankedRow {
    product_id,
    name,
    price,
    status,
    sold_quantity,
    revenue
});

/// Top `limit` products by quantity over days `>= from_day`, ties by revenue then id.
/// Discontinued products are hidden, as everywhere else.
pub async fn top(
    h: &mut impl Handle,
    from_day: NaiveDate,
    limit: i64,
) -> AppResult<Vec<RankedRow>> {
    Ok(sql_all!(RankedRow; h,
        "SELECT s.product_id, p.name, p.price, p.status,
                CAST(SUM(s.quantity) AS BIGINT) AS sold_quantity, CAST(SUM(s.revenue) AS BIGINT) AS revenue
         FROM product_sales_daily s JOIN products p ON p.id = s.product_id
         WHERE s.day >= $1 AND p.status <> 'DISCONTINUED'
         GROUP BY s.product_id, p.name, p.price, p.status
         ORDER BY sold_quantity DESC, revenue DESC, s.product_id
         LIMIT $2",
        day_string(from_day), limit)?)
}

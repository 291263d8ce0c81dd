//! Best-seller aggregates (SPEC §11): `product_sales_daily` is maintained from paid orders by
//! the aggregation job, net of refunded units (SPEC §14); the read path only ever reads the
//! aggregates.
//!
//! (Longer than most files: the incremental job, its refund counterpart and the full rebuild
//! must agree row for row, so they live together; the last 20 lines are unit tests.)
//!
//! A paid order is one with a `paid_at`: PAID, and every later state (CONFIRMED, PARTIALLY_
//! REFUNDED, REFUNDED) — an order counts on the day it was paid, whatever happened to it since.
//!
//! The job is incremental (issue #13): each run adds the paid orders it has not counted yet,
//! found through the `orders_by_paid_at` partial index from a lower bound (`window_from`) that
//! trails the newest payment seen by [`OVERLAP`]. A payment's `paid_at` is taken before its
//! transaction commits, so a payment can become visible after a run that already read past its
//! `paid_at`; re-reading the overlap window catches it, and `ranking_counted` (the orders
//! counted in that window) makes the re-read idempotent. The cost of a run is proportional to
//! the orders paid in the window, not to history. A paid order stays paid, so an order counted
//! once stays counted.
//!
//! Refunds (issue #14) are subtracted the same way, from their own trailing window
//! (`refund_window_from`, over `refunds.created_at`, remembered in `ranking_counted_refunds`):
//! each refund's units (and their gross revenue, unit price × quantity) come off the day its
//! order was PAID, even a day aggregated long ago, so the cost of a run grows with the new
//! refunds, not with history. Refunds are taken before payments in a run: a refund is committed
//! after its payment, so an order whose refund a run sees is counted by that run or before.
//!
//! `product_sales_daily` keeps [`MAX_DAYS`] + 1 days (the longest window plus one spare day);
//! older rows are pruned by every run.

use anyhow::Context;
use chrono::{DateTime, Duration, NaiveDate, TimeDelta, Utc};

use crate::db::{Dialect, Handle, Tx};
use crate::error::AppResult;
use crate::{sql_all, sql_execute, sql_optional, sql_scalar, sql_scalar_optional};

/// Advisory-lock namespace of the aggregation job on PostgreSQL; the second key is the schema,
/// so shopd installations in different schemas of one database do not block each other.
const JOB_LOCK_NAMESPACE: i32 = 0x5348_4F50;

/// The longest ranking window (`days` of `GET /products/popular`).
pub const MAX_DAYS: i64 = 30;

/// How long after its `paid_at` a payment may still commit (plus clock skew between the
/// instances that pay) and be counted. Payments commit within seconds (the committer's
/// acquire timeout is 5 s); five minutes is a wide margin that costs only the re-read of five
/// minutes of payments per run.
pub const OVERLAP: TimeDelta = TimeDelta::minutes(5);

/// The joins from a refund `r` to its lines `rl`, its order `o` and the order line `l` (for the
/// unit price), and a filter. Without a FROM: [`subtract_new_refunds`] starts from the counted
/// refunds and joins `refunds r` itself.
macro_rules! refunded_units_of {
    ($filter:literal) => {
        concat!(
            " JOIN refund_lines rl ON rl.refund_id = r.id
              JOIN orders o ON o.id = r.order_id
              JOIN order_lines l ON l.order_id = r.order_id AND l.product_id = rl.product_id
              WHERE ",
            $filter
        )
    };
}

/// Add the selected rows to the aggregates (negative rows subtract).
macro_rules! add_on_conflict {
    () => {
        " ON CONFLICT (day, product_id) DO UPDATE SET
             quantity = product_sales_daily.quantity + excluded.quantity,
             revenue = product_sales_daily.revenue + excluded.revenue"
    };
}

/// The statement that subtracts refunded units (and their revenue at the unit price) from the
/// day their order was paid, over the refunds `$from` names and `$filter` keeps:
/// `(SQLite, PostgreSQL)`, differing only in how a timestamp becomes its UTC day.
macro_rules! subtract_refunds {
    ($from:literal, $filter:literal) => {
        (
            concat!(
                "INSERT INTO product_sales_daily (day, product_id, quantity, revenue)
                 SELECT substr(o.paid_at, 1, 10), rl.product_id, -SUM(rl.quantity), -SUM(rl.quantity * l.unit_price)",
                $from,
                refunded_units_of!($filter),
                " GROUP BY substr(o.paid_at, 1, 10), rl.product_id",
                add_on_conflict!()
            ),
            concat!(
                "INSERT INTO product_sales_daily (day, product_id, quantity, revenue)
                 SELECT to_char(o.paid_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), rl.product_id,
                        -SUM(rl.quantity), -SUM(rl.quantity * l.unit_price)",
                $from,
                refunded_units_of!($filter),
                " GROUP BY to_char(o.paid_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), rl.product_id",
                add_on_conflict!()
            ),
        )
    };
}

/// How to run the job.
#[derive(Debug, Clone, Copy, Default)]
pub struct AggregateOptions {
    /// Rebuild the aggregates from the orders (day by day), not only add new payments.
    pub full: bool,
    /// If another instance is running the job: wait for it and run after (on demand), rather
    /// than skip (the periodic job).
    pub wait_for_lock: bool,
}

/// The outcome of one aggregation run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRun {
    /// Ran: a full rebuild or an incremental run; `counted` orders were added by the
    /// incremental step (a full rebuild counts older orders day by day, not here).
    Ran { full: bool, counted: u64 },
    /// Another instance holds the job right now.
    Skipped,
}

pub fn day_string(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// The first day kept in `product_sales_daily` when the job runs at `now`.
pub fn first_kept_day(now: DateTime<Utc>) -> NaiveDate {
    now.date_naive() - Duration::days(MAX_DAYS)
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct StateRow {
    window_from: Option<DateTime<Utc>>,
    refund_window_from: Option<DateTime<Utc>>,
    run: i64,
}
crate::lite_row!(StateRow {
    window_from,
    refund_window_from,
    run
});

/// Update the aggregates: add the paid orders and subtract the refunds not counted yet
/// (incremental), or rebuild them
/// (`full`, and on the first run). One transaction, so readers see the old or the new numbers,
/// and one job at a time (an advisory lock on PostgreSQL, `BEGIN IMMEDIATE` on SQLite).
/// `now` is the job's clock: it becomes `asOf` and decides which days are pruned.
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
    let state = sql_optional!(StateRow; tx,
        "SELECT window_from, refund_window_from, run FROM ranking_state WHERE id = 1")
    .context("reading the ranking job's state")?;
    let run = state.as_ref().map_or(0, |s| s.run) + 1;
    let resume = state
        .and_then(|s| s.window_from.map(|w| (w, s.refund_window_from)))
        .filter(|_| !options.full);
    let full = resume.is_none();
    let (from, refunds_from) = match resume {
        // No refund window yet (the first run after the upgrade that added refunds): every
        // refund is newer than that upgrade, so read them all once.
        Some((from, refunds_from)) => (from, refunds_from.unwrap_or(DateTime::UNIX_EPOCH)),
        None => {
            let settled = rebuild_settled_days(tx, now).await?;
            (settled, settled)
        }
    };
    // Refunds first (see the module documentation).
    let refunds = subtract_new_refunds(tx, run, refunds_from, now).await?;
    let counted = count_new_payments(tx, run, from).await?;
    if refunds > 0 {
        tracing::debug!(refunds, "best-sellers: refunds subtracted");
    }

    // Advance the window: it trails the newest payment seen (never past the job's clock, so
    // one instance's clock running ahead cannot hide the others' payments) by OVERLAP.
    let newest: Option<DateTime<Utc>> = sql_scalar!(
        tx,
        "SELECT MAX(paid_at) FROM ranking_counted WHERE run = $1",
        run
    )
    .context("reading the newest counted payment")?;
    let window_from = newest
        .map(|t| t.min(now) - OVERLAP)
        .map_or(from, |t| t.max(from));
    sql_execute!(
        tx,
        "DELETE FROM ranking_counted WHERE paid_at < $1",
        window_from
    )
    .context("pruning counted orders")?;
    let newest_refund: Option<DateTime<Utc>> = sql_scalar!(
        tx,
        "SELECT MAX(created_at) FROM ranking_counted_refunds WHERE run = $1",
        run
    )
    .context("reading the newest counted refund")?;
    let refund_window_from = newest_refund
        .map(|t| t.min(now) - OVERLAP)
        .map_or(refunds_from, |t| t.max(refunds_from));
    sql_execute!(
        tx,
        "DELETE FROM ranking_counted_refunds WHERE created_at < $1",
        refund_window_from
    )
    .context("pruning counted refunds")?;
    sql_execute!(
        tx,
        "DELETE FROM product_sales_daily WHERE day < $1",
        day_string(first_kept_day(now))
    )
    .context("pruning old daily aggregates")?;
    sql_execute!(
        tx,
        "INSERT INTO ranking_state (id, computed_at, window_from, refund_window_from, run)
         VALUES (1, $1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET computed_at = excluded.computed_at,
             window_from = excluded.window_from, refund_window_from = excluded.refund_window_from,
             run = excluded.run",
        now,
        window_from,
        refund_window_from,
        run
    )
    .context("recording the ranking job's state")?;
    Ok(JobRun::Ran { full, counted })
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct IdRange {
    low: Option<i64>,
    high: Option<i64>,
}
crate::lite_row!(IdRange { low, high });

/// Full rebuild of the days whose payments have settled (paid more than 2 × OVERLAP before
/// `now`), one day per statement so each aggregation stays small (no spill to disk at 1M
/// orders), less the refunds of those orders made before the same point; returns where the
/// incremental steps take over. Payments and refunds from that point on are counted by
/// [`count_new_payments`] and [`subtract_new_refunds`], which (unlike these per-day statements,
/// which may each see a newer snapshot under READ COMMITTED) record exactly what they added.
async fn rebuild_settled_days(tx: &mut Tx, now: DateTime<Utc>) -> AppResult<DateTime<Utc>> {
    sql_execute!(tx, "DELETE FROM product_sales_daily").context("clearing the aggregates")?;
    sql_execute!(tx, "DELETE FROM ranking_counted").context("clearing counted orders")?;
    sql_execute!(tx, "DELETE FROM ranking_counted_refunds").context("clearing counted refunds")?;
    let settled = now - OVERLAP * 2;
    if tx.dialect() == Dialect::Postgres {
        // One day's lines are sorted and grouped in memory (tens of MB at most), not on disk;
        // and every day gets a plan for its own bounds (a generic plan for "some day" reads
        // far more than one day).
        sql_execute!(tx, "SET LOCAL work_mem = '64MB'").context("sizing work_mem")?;
        sql_execute!(tx, "SET LOCAL plan_cache_mode = force_custom_plan")
            .context("planning per day")?;
    }
    let mut day = first_kept_day(now);
    while midnight(day) < settled {
        let start = midnight(day);
        let end = midnight(day + Duration::days(1)).min(settled);
        // The day's order ids bound the scan of order_lines to their primary-key range (ids
        // grow with time, so the range is tight): without it the planner reads every line.
        let bounds = sql_optional!(IdRange; tx,
            // `id + 0`: from the day's index range, not by walking the primary key from one end.
            "SELECT MIN(id + 0) AS low, MAX(id + 0) AS high FROM orders
             WHERE paid_at >= $1 AND paid_at < $2",
            start, end)
        .with_context(|| format!("finding the orders paid on {day}"))?;
        if let Some(IdRange {
            low: Some(low),
            high: Some(high),
        }) = bounds
        {
            sql_execute!(
                tx,
                "INSERT INTO product_sales_daily (day, product_id, quantity, revenue)
                 SELECT $1, l.product_id, SUM(l.quantity), SUM(l.line_total)
                 FROM orders o JOIN order_lines l ON l.order_id = o.id
                 WHERE o.paid_at >= $2 AND o.paid_at < $3
                   AND l.order_id >= $4 AND l.order_id <= $5
                 GROUP BY l.product_id",
                day_string(day),
                start,
                end,
                low,
                high
            )
            .with_context(|| format!("rebuilding the aggregates of {day}"))?;
        }
        day += Duration::days(1);
    }
    // Refunds made before `settled` of the orders counted above (refunds are few next to
    // orders: one statement). A refund follows its payment, so none is older than the first
    // kept day's orders.
    let first = midnight(first_kept_day(now));
    if first < settled {
        let (lite, pg) = subtract_refunds!(
            " FROM refunds r",
            "r.created_at >= $1 AND r.created_at < $2 AND o.paid_at >= $1 AND o.paid_at < $2"
        );
        let subtract = tx.dialect().pick(lite, pg);
        sql_execute!(tx, subtract, first, settled)
            .context("subtracting the settled days' refunds")?;
    }
    Ok(settled)
}

/// Subtract every refund made at or after `from` that is not counted yet, from the day its
/// order was paid (if that day is still kept): first record them (one statement, one
/// consistent set), then subtract exactly those refunds' units. The number of refunds.
async fn subtract_new_refunds(
    tx: &mut Tx,
    run: i64,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> AppResult<u64> {
    let counted = sql_execute!(
        tx,
        "INSERT INTO ranking_counted_refunds (refund_id, created_at, run)
         SELECT r.id, r.created_at, $1 FROM refunds r
         WHERE r.created_at >= $2
           AND NOT EXISTS (SELECT 1 FROM ranking_counted_refunds c WHERE c.refund_id = r.id)",
        run,
        from
    )
    .context("finding new refunds")?;
    if counted == 0 {
        return Ok(0);
    }
    let (lite, pg) = subtract_refunds!(
        " FROM ranking_counted_refunds c JOIN refunds r ON r.id = c.refund_id",
        "c.run = $1 AND o.paid_at >= $2"
    );
    let subtract = tx.dialect().pick(lite, pg);
    sql_execute!(tx, subtract, run, midnight(first_kept_day(now)))
        .context("subtracting new refunds from the aggregates")?;
    Ok(counted)
}

/// Add every order paid at or after `from` (PAID or any later state) that is not counted yet:
/// first record them
/// (one statement, so one consistent set of orders), then add exactly those orders' lines.
async fn count_new_payments(tx: &mut Tx, run: i64, from: DateTime<Utc>) -> AppResult<u64> {
    let counted = sql_execute!(
        tx,
        "INSERT INTO ranking_counted (order_id, paid_at, run)
         SELECT o.id, o.paid_at, $1 FROM orders o
         WHERE o.paid_at >= $2
           AND NOT EXISTS (SELECT 1 FROM ranking_counted c WHERE c.order_id = o.id)",
        run,
        from
    )
    .context("finding new payments")?;
    if counted == 0 {
        return Ok(0);
    }
    let add = tx.dialect().pick(
        "INSERT INTO product_sales_daily (day, product_id, quantity, revenue)
         SELECT substr(c.paid_at, 1, 10), l.product_id, SUM(l.quantity), SUM(l.line_total)
         FROM ranking_counted c JOIN order_lines l ON l.order_id = c.order_id
         WHERE c.run = $1
         GROUP BY substr(c.paid_at, 1, 10), l.product_id
         ON CONFLICT (day, product_id) DO UPDATE SET
             quantity = product_sales_daily.quantity + excluded.quantity,
             revenue = product_sales_daily.revenue + excluded.revenue",
        "INSERT INTO product_sales_daily (day, product_id, quantity, revenue)
         SELECT to_char(c.paid_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), l.product_id, SUM(l.quantity), SUM(l.line_total)
         FROM ranking_counted c JOIN order_lines l ON l.order_id = c.order_id
         WHERE c.run = $1
         GROUP BY to_char(c.paid_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), l.product_id
         ON CONFLICT (day, product_id) DO UPDATE SET
             quantity = product_sales_daily.quantity + excluded.quantity,
             revenue = product_sales_daily.revenue + excluded.revenue",
    );
    sql_execute!(tx, add, run).context("adding new payments to the aggregates")?;
    Ok(counted)
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
/// Discontinued products are hidden, as everywhere else, and so are products whose every unit
/// sold in the window was refunded.
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
         HAVING SUM(s.quantity) > 0
         ORDER BY sold_quantity DESC, revenue DESC, s.product_id
         LIMIT $2",
        day_string(from_day), limit)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_longest_window_plus_one_day() {
        let now = DateTime::parse_from_rfc3339("2030-01-02T00:00:30Z")
            .unwrap()
            .to_utc();
        let first = first_kept_day(now);
        assert_eq!(day_string(first), "2029-12-03");
        // `days = 30` at `now` starts 29 days back: inside what is kept.
        assert!(now.date_naive() - Duration::days(MAX_DAYS - 1) > first);
        assert_eq!(
            midnight(first),
            DateTime::parse_from_rfc3339("2029-12-03T00:00:00Z")
                .unwrap()
                .to_utc()
        );
    }
}

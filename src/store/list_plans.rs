//! The query plans of the back office's list statements (`shopd explain-admin-lists`, run by
//! `bench/admin-lists.sh` on a seeded database; docs/back-office.md shows them at 1M orders).
//!
//! The statements are the ones [`store::admin`](crate::store::admin) runs, taken from it, with
//! values bound as a request binds them: a change to a statement shows in its plan without a
//! copy to keep in step.

use chrono::{DateTime, TimeZone, Utc};
use sqlx::Row;

use crate::db::{Arg, Dialect, Handle, Raw, bind_args};
use crate::error::{AppError, AppResult};
use crate::store::admin::{MEMBERS_FTS_SQLITE, MEMBERS_LIKE, NameSearch, order_page_sql};

/// One statement to explain: a title, the statement, its values.
struct Case {
    title: String,
    sql: &'static str,
    values: Vec<Arg>,
}

/// One explained statement: its title and its plan, line by line.
#[derive(Clone, Debug)]
pub struct Plan {
    pub title: String,
    pub lines: Vec<String>,
}

/// The member and the status the filtered order pages use (`bench/admin-lists.sh` seeds
/// members 1..100,000 and 85 % of the orders `PAID`).
const MEMBER: i64 = 4242;
const STATUS: &str = "PAID";
const PAGE: i64 = 21;

fn at(y: i32, m: u32, d: u32, h: u32) -> AppResult<DateTime<Utc>> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
        .single()
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("no such time {y}-{m}-{d} {h}:00")))
}

/// The order pages (each filter: first page, a deep page with a cursor in March, one day) and
/// the member searches, as the back office runs them on `dialect`.
fn cases(dialect: Dialect) -> AppResult<Vec<Case>> {
    let all_time = (at(1970, 1, 1, 0)?, at(9999, 12, 31, 23)?);
    let cursor = at(2026, 3, 1, 12)?;
    let day = (at(2026, 6, 1, 0)?, at(2026, 6, 2, 0)?);
    // (from, upper created_at, upper id): see `store::admin::list_orders`.
    let windows = [
        ("first page", all_time.0, all_time.1, 0),
        ("deep page (cursor)", all_time.0, cursor, 172_800),
        ("from/to one day", day.0, day.1, 0),
    ];
    let mut cases = Vec::new();
    for (filter, status, member) in [
        ("none", false, false),
        ("status", true, false),
        ("userId", false, true),
        ("userId+status", true, true),
    ] {
        for (window, from, upper, id) in windows {
            let mut values = vec![
                Arg::Time(from),
                Arg::Time(upper),
                Arg::I64(id),
                Arg::I64(PAGE),
            ];
            if member {
                values.push(Arg::I64(MEMBER));
            }
            if status {
                values.push(Arg::Text(STATUS.into()));
            }
            cases.push(Case {
                title: format!("orders, filter {filter}, {window}"),
                sql: order_page_sql(dialect, status, member),
                values,
            });
        }
    }
    let terms: &[&str] = match dialect {
        Dialect::Sqlite => &["member 4242", "zz"],
        Dialect::Postgres => &["member 4242", "zzz", "kim", "zz"],
    };
    for term in terms {
        let search = NameSearch::new(term);
        let (sql, how, mut values) = match (dialect, search.fts_phrase()) {
            (Dialect::Sqlite, Some(phrase)) => (
                MEMBERS_FTS_SQLITE,
                "FTS5 trigram table, id order from the cursor",
                vec![Arg::Text(phrase.to_string())],
            ),
            (Dialect::Postgres, Some(_)) => (
                MEMBERS_LIKE,
                "planned with the term: the trigram index for a rare one, the primary key for a common one",
                Vec::new(),
            ),
            (_, None) => (
                MEMBERS_LIKE,
                "under 3 characters: the primary key is walked until a page of matches",
                Vec::new(),
            ),
        };
        let mut bound = vec![
            Arg::I64(0),
            Arg::I64(PAGE),
            Arg::Text(search.like_pattern().to_string()),
        ];
        bound.append(&mut values);
        cases.push(Case {
            title: format!("members, q={term} ({how})"),
            sql,
            values: bound,
        });
    }
    Ok(cases)
}

/// Explain every list statement of the back office on this database. PostgreSQL runs each
/// (`EXPLAIN ANALYZE`, with buffers: what a page reads); SQLite names the plan it would use
/// (`EXPLAIN QUERY PLAN`, drawn as a tree like the `sqlite3` shell draws it).
pub async fn explain_lists(h: &mut impl Handle) -> AppResult<Vec<Plan>> {
    let mut plans = Vec::new();
    for case in cases(h.dialect())? {
        let lines = match h.raw() {
            Raw::Sqlite(c) => {
                let sql = format!("EXPLAIN QUERY PLAN {}", case.sql);
                let query = bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql)), &case.values);
                let mut nodes = Vec::new();
                for row in query.fetch_all(c).await? {
                    nodes.push((
                        row.try_get::<i64, _>(0)?,
                        row.try_get::<i64, _>(1)?,
                        row.try_get::<String, _>(3)?,
                    ));
                }
                sqlite_tree(&nodes)
            }
            Raw::Postgres(c) => {
                let sql = format!(
                    "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF) {}",
                    case.sql
                );
                // Unprepared, like the member pages: planned with the values.
                let query = bind_args!(
                    sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false),
                    &case.values
                );
                let mut lines = Vec::new();
                for row in query.fetch_all(c).await? {
                    lines.push(row.try_get::<String, _>(0)?);
                }
                lines
            }
            Raw::Lite(_) => {
                return Err(AppError::Internal(anyhow::anyhow!(
                    "list plans are read on a reading connection"
                )));
            }
        };
        plans.push(Plan {
            title: case.title,
            lines,
        });
    }
    Ok(plans)
}

/// Draw SQLite's `EXPLAIN QUERY PLAN` rows `(id, parent, detail)` as the `sqlite3` shell does:
/// `|--` before a node with a later sibling, `` `-- `` before the last one.
fn sqlite_tree(nodes: &[(i64, i64, String)]) -> Vec<String> {
    let has_later_sibling = |i: usize| nodes[i + 1..].iter().any(|n| n.1 == nodes[i].1);
    let mut lines = Vec::new();
    for (i, (_, parent, detail)) in nodes.iter().enumerate() {
        // Ancestors from the nearest up: the latest row before this one with the parent's id.
        let mut prefix = Vec::new();
        let mut up = *parent;
        let mut before = i;
        while up != 0 {
            let Some(a) = nodes[..before].iter().rposition(|n| n.0 == up) else {
                break;
            };
            prefix.push(if has_later_sibling(a) { "|  " } else { "   " });
            up = nodes[a].1;
            before = a;
        }
        prefix.reverse();
        let branch = if has_later_sibling(i) { "|--" } else { "`--" };
        lines.push(format!("{}{branch}{detail}", prefix.concat()));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_plan_is_drawn_as_the_shell_draws_it() {
        let nodes = vec![
            (1, 0, "MERGE (UNION ALL)".to_string()),
            (2, 1, "LEFT".to_string()),
            (3, 2, "SEARCH a".to_string()),
            (4, 1, "RIGHT".to_string()),
            (5, 4, "SEARCH b".to_string()),
        ];
        assert_eq!(
            sqlite_tree(&nodes),
            vec![
                "`--MERGE (UNION ALL)",
                "   |--LEFT",
                "   |  `--SEARCH a",
                "   `--RIGHT",
                "      `--SEARCH b",
            ]
        );
    }

    #[test]
    fn every_order_filter_and_window_is_explained_on_both_dialects() -> AppResult<()> {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let cases = cases(dialect)?;
            assert_eq!(
                cases
                    .iter()
                    .filter(|c| c.title.starts_with("orders"))
                    .count(),
                12
            );
            for case in &cases {
                // Every parameter the statement names is bound, and no more.
                let highest = (1..=9)
                    .rev()
                    .find(|n| case.sql.contains(&format!("${n}")))
                    .unwrap_or(0);
                assert_eq!(case.values.len(), highest, "{}", case.title);
            }
        }
        Ok(())
    }
}

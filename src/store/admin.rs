//! Back office reads and campaign management (SPEC §15).
//!
//! Every list is keyset-paginated over an index, so a page costs the same on the first page
//! as on the ten-thousandth (docs/back-office.md shows the plans):
//!
//! - orders, newest first by `(created_at, id)`: `orders_by_status_created` (migration 0007),
//!   one branch per status merged when no status is asked ([`ALL_STATUSES_PAGE_SQLITE`]), or the
//!   member's `orders_by_user`; `from`/`to` bound the trailing `created_at`. Each filter
//!   combination is its own static statement, so no `$n IS NULL OR ...` term hides the index
//!   from a generic plan;
//! - members, products, campaigns: by id (primary key; `products_by_status` for `?status`); the
//!   member name search reads a trigram index for a term of 3+ characters (migration 0011,
//!   [`list_members`]).

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::db::{Dialect, Handle, Raw, Tx};
use crate::domain::order::OrderStatus;
use crate::domain::pagination::Page;
use crate::domain::product::ProductStatus;
use crate::error::{AppError, AppResult};
use crate::store::coupons::{CampaignRow, coupon_not_found, find_campaign};
use crate::store::orders::{OrderRow, order_columns};
use crate::store::products::ProductRow;
use crate::{sql_all, sql_optional, sql_scalar_optional};

/// Which orders, and where the page starts.
#[derive(Clone, Debug)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    pub user_id: Option<i64>,
    /// Inclusive lower bound on `created_at`.
    pub from: DateTime<Utc>,
    /// Exclusive upper bound on `created_at`.
    pub to: DateTime<Utc>,
    /// The last order of the previous page: `(created_at, id)`, exclusive.
    pub before: Option<(DateTime<Utc>, i64)>,
    pub limit: i64,
}

/// The page's window on `(created_at, id)`: from `$1`, up to the row `($2, $3)` exclusive.
macro_rules! page_window {
    () => {
        "created_at >= $1 AND created_at <= $2 AND (created_at < $2 OR id < $3)"
    };
}

macro_rules! admin_order_query {
    ($filter:literal) => {
        concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE ",
            $filter,
            " ",
            page_window!(),
            " ORDER BY created_at DESC, id DESC LIMIT $4"
        )
    };
}

/// One status's rows of the unfiltered page, for SQLite: no `ORDER BY` or `LIMIT` of its own.
macro_rules! status_rows {
    ($status:literal) => {
        concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE status = '",
            $status,
            "' AND ",
            page_window!()
        )
    };
}

/// The page of all orders, newest first, without an index of its own: the orders of each
/// status read backwards from `orders_by_status_created` and merged in `(created_at, id)`
/// order. Until migration 0017 an `orders_by_created (created_at, id)` index served it, one
/// more index entry written by every order (issue #10). A page reads at most `limit` entries
/// of each status, whatever the table's size (docs/back-office.md shows the plans).
///
/// SQLite merges plain `UNION ALL` branches under one `ORDER BY … LIMIT` as they come
/// (`MERGE (UNION ALL)`, each branch an index scan) and stops at `limit` rows in all.
pub const ALL_STATUSES_PAGE_SQLITE: &str = concat!(
    status_rows!("PENDING"),
    " UNION ALL ",
    status_rows!("PAID"),
    " UNION ALL ",
    status_rows!("CONFIRMED"),
    " UNION ALL ",
    status_rows!("PARTIALLY_REFUNDED"),
    " UNION ALL ",
    status_rows!("REFUNDED"),
    " UNION ALL ",
    status_rows!("CANCELLED"),
    " UNION ALL ",
    status_rows!("EXPIRED"),
    " ORDER BY created_at DESC, id DESC LIMIT $4"
);

/// PostgreSQL does not merge plain branches (it appended and sorted every row of the range).
/// Seven branches each with its own `LIMIT` do merge, but planning them took 0.6 ms a page
/// against 0.15 ms to run them (the plan is custom each time). So one lateral subquery is
/// planned once and run per status (a backward scan that stops after `limit` rows), and the
/// at most `7 × limit` rows are sorted.
pub const ALL_STATUSES_PAGE_POSTGRES: &str = concat!(
    "SELECT page.* FROM unnest('{PENDING,PAID,CONFIRMED,PARTIALLY_REFUNDED,REFUNDED,CANCELLED,EXPIRED}'::text[]) AS s(status) \
     CROSS JOIN LATERAL (",
    admin_order_query!("orders.status = s.status AND"),
    ") AS page ORDER BY created_at DESC, id DESC LIMIT $4"
);

/// One page of orders, newest first (`limit` rows as asked: the caller over-fetches by one).
///
/// The statement has a single upper bound on `created_at` (`<= $2`), so both planners take it
/// as the end of the index range: the page starts right at the cursor, never at `to` with the
/// rows in between skipped one by one. `(at, id)` is the cursor's row when it lies before `to`,
/// else `(to, 0)`, which reads "created before `to`" (`id < 0` never holds).
pub async fn list_orders(h: &mut impl Handle, f: &OrderFilter) -> AppResult<Vec<OrderRow>> {
    let (at, id) = match f.before {
        Some((at, id)) if at < f.to => (at, id),
        _ => (f.to, 0),
    };
    let sql = order_page_sql(h.dialect(), f.status.is_some(), f.user_id.is_some());
    let rows = match (f.status.map(OrderStatus::as_str), f.user_id) {
        (None, None) => sql_all!(OrderRow; h, sql, f.from, at, id, f.limit)?,
        (Some(status), None) => sql_all!(OrderRow; h, sql, f.from, at, id, f.limit, status)?,
        (None, Some(user_id)) => member_orders(h, sql, f, (at, id), user_id, None).await?,
        (Some(status), Some(user_id)) => {
            member_orders(h, sql, f, (at, id), user_id, Some(status)).await?
        }
    };
    Ok(rows)
}

/// The statement of one page of orders as [`list_orders`] runs it, by which filters are set.
/// Parameters: `$1` from, `$2` the upper `created_at`, `$3` the upper id, `$4` the limit, then
/// the member or the status as `$5`, or both as `$5` and `$6`. Public for
/// [`explain_lists`](crate::store::list_plans::explain_lists) (`shopd explain-admin-lists`).
pub fn order_page_sql(dialect: Dialect, status: bool, member: bool) -> &'static str {
    match (status, member) {
        (false, false) => dialect.pick(ALL_STATUSES_PAGE_SQLITE, ALL_STATUSES_PAGE_POSTGRES),
        (true, false) => admin_order_query!("status = $5 AND"),
        (false, true) => admin_order_query!("user_id = $5 AND"),
        // A member has few orders: walk the member's index and check the status on each row.
        // `status || ''` keeps SQLite (which has no statistics) from picking the status index.
        (true, true) => admin_order_query!("user_id = $5 AND (status || '') = $6 AND"),
    }
}

/// A page of one member's orders: the member's orders (`orders_by_user`) sorted by
/// `created_at`.
///
/// On PostgreSQL the statement is sent unprepared, so it is planned with its values: a cached
/// generic plan cannot tell a one-day window from all time and walked `orders_by_created`
/// (dropped since, migration 0017) backwards through everyone's orders looking for the
/// member's (p50 0.5 → 5.6 ms at 200,000 orders once migration 0013 dropped
/// `orders_by_user_created`); with its values it reads the member's few orders.
async fn member_orders(
    h: &mut impl Handle,
    sql: &'static str,
    f: &OrderFilter,
    (at, id): (DateTime<Utc>, i64),
    user_id: i64,
    status: Option<&'static str>,
) -> AppResult<Vec<OrderRow>> {
    if let Raw::Postgres(c) = h.raw() {
        let query = sqlx::query_as::<_, OrderRow>(sql)
            .bind(f.from)
            .bind(at)
            .bind(id)
            .bind(f.limit)
            .bind(user_id);
        let query = match status {
            Some(status) => query.bind(status),
            None => query,
        };
        return Ok(query.persistent(false).fetch_all(c).await?);
    }
    Ok(match status {
        None => sql_all!(OrderRow; h, sql, f.from, at, id, f.limit, user_id)?,
        Some(status) => sql_all!(OrderRow; h, sql, f.from, at, id, f.limit, user_id, status)?,
    })
}

/// The `created_at` of the order a cursor names (`None`: no such order).
pub async fn order_created_at(h: &mut impl Handle, id: i64) -> AppResult<Option<DateTime<Utc>>> {
    Ok(sql_scalar_optional!(
        h,
        "SELECT created_at FROM orders WHERE id = $1",
        id
    )?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub id: i64,
    pub name: String,
    pub balance: i64,
    pub created_at: DateTime<Utc>,
}
crate::lite_row!(MemberRow {
    id,
    name,
    balance,
    created_at
});

/// A member search term, as both indexes need it (docs/back-office.md, migration 0011).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameSearch {
    /// `%term%` for `name_folded LIKE $n ESCAPE '\'` (see [`like_contains`]).
    like: String,
    /// The folded term as one quoted FTS5 phrase (SQLite's trigram table), `None` when the
    /// term is shorter than a trigram.
    phrase: Option<String>,
}

/// The shortest term a trigram index can answer; a shorter one walks the primary key.
pub const MIN_INDEXED_CHARS: usize = 3;

impl NameSearch {
    pub fn new(term: &str) -> Self {
        let phrase = (term.chars().count() >= MIN_INDEXED_CHARS).then(|| {
            let folded = term.to_ascii_lowercase();
            format!("\"{}\"", folded.replace('"', "\"\""))
        });
        NameSearch {
            like: like_contains(term),
            phrase,
        }
    }

    /// Whether a trigram index answers this term (three characters or more).
    pub fn indexed(&self) -> bool {
        self.phrase.is_some()
    }

    /// The `LIKE` pattern (`$3` of [`MEMBERS_LIKE`] and [`MEMBERS_FTS_SQLITE`]).
    pub fn like_pattern(&self) -> &str {
        &self.like
    }

    /// The FTS5 phrase (`$4` of [`MEMBERS_FTS_SQLITE`]), for a term of three characters or more.
    pub fn fts_phrase(&self) -> Option<&str> {
        self.phrase.as_deref()
    }
}

/// Escape `%`, `_` and `\` so a search term matches literally inside a `LIKE ... ESCAPE '\'`.
pub fn like_contains(term: &str) -> String {
    let mut out = String::with_capacity(term.len() + 2);
    out.push('%');
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c.to_ascii_lowercase());
    }
    out.push('%');
    out
}

/// The name search over the primary key (and, on PostgreSQL, over `users_name_trgm`).
pub const MEMBERS_LIKE: &str = "SELECT id, name, balance, created_at FROM users
     WHERE id > $1 AND name_folded LIKE $3 ESCAPE '\\' ORDER BY id LIMIT $2";

/// SQLite's name search through the FTS5 trigram table: the phrase picks the candidates in id
/// order from the cursor on, and the `LIKE` on the member's row decides.
pub const MEMBERS_FTS_SQLITE: &str = "SELECT u.id, u.name, u.balance, u.created_at
     FROM users_name_search s JOIN users u ON u.id = s.rowid
     WHERE users_name_search MATCH $4 AND s.rowid > $1 AND u.name_folded LIKE $3 ESCAPE '\\'
     ORDER BY s.rowid LIMIT $2";

/// Members in id order; a search matches `name_folded`, the name with ASCII letters lowered at
/// sign-up, so other letters compare exactly and both backends answer alike (SQLite's `LIKE`
/// would fold ASCII anyway; PostgreSQL's is case-sensitive).
///
/// A term of three characters or more is answered by a trigram index (migration 0011):
/// - SQLite: the FTS5 table `users_name_search`, read in id order from the cursor, one
///   candidate at a time, until a page of matches;
/// - PostgreSQL: the planner chooses between `users_name_trgm` (a rare term: bitmap scan, then
///   a sort of the few matches) and the primary key (a common term: a page of matches is
///   near). The statement is sent unprepared, so it is planned with the term each time: a
///   cached generic plan knows nothing of the term and walks the primary key for every term.
///
/// A shorter term walks the primary key from the cursor until a page of matches: at most the
/// whole table for a rare one (docs/back-office.md).
pub async fn list_members(
    h: &mut impl Handle,
    search: Option<&NameSearch>,
    page: Page,
) -> AppResult<Vec<MemberRow>> {
    let after = page.after.unwrap_or(0);
    let limit = page.fetch_limit();
    let rows = match (search, h.dialect()) {
        (None, _) => sql_all!(MemberRow; h,
            "SELECT id, name, balance, created_at FROM users WHERE id > $1 ORDER BY id LIMIT $2",
            after, limit)?,
        (Some(s), Dialect::Sqlite) => match s.phrase.as_deref() {
            Some(phrase) => {
                sql_all!(MemberRow; h, MEMBERS_FTS_SQLITE, after, limit, s.like.as_str(), phrase)?
            }
            None => sql_all!(MemberRow; h, MEMBERS_LIKE, after, limit, s.like.as_str())?,
        },
        (Some(s), Dialect::Postgres) => match h.raw() {
            Raw::Postgres(c) => {
                sqlx::query_as::<_, MemberRow>(MEMBERS_LIKE)
                    .bind(after)
                    .bind(limit)
                    .bind(s.like.as_str())
                    .persistent(false)
                    .fetch_all(c)
                    .await?
            }
            _ => sql_all!(MemberRow; h, MEMBERS_LIKE, after, limit, s.like.as_str())?,
        },
    };
    Ok(rows)
}

/// Products of every status (or one), in id order.
pub async fn list_products(
    h: &mut impl Handle,
    status: Option<ProductStatus>,
    page: Page,
) -> AppResult<Vec<ProductRow>> {
    let after = page.after.unwrap_or(0);
    let rows = match status {
        None => sql_all!(ProductRow; h,
            "SELECT id, name, description, price, status, stock, created_at, updated_at
             FROM products WHERE id > $1 ORDER BY id LIMIT $2",
            after, page.fetch_limit())?,
        Some(status) => sql_all!(ProductRow; h,
            "SELECT id, name, description, price, status, stock, created_at, updated_at
             FROM products WHERE status = $3 AND id > $1 ORDER BY id LIMIT $2",
            after, page.fetch_limit(), status.as_str())?,
    };
    Ok(rows)
}

macro_rules! campaign_columns {
    () => {
        "id, name, discount_type, discount_value, max_discount, min_order_amount, total_quantity, \
         issued_quantity, issue_starts_at, issue_ends_at, valid_days, created_at, closed_at"
    };
}

/// Every campaign (open, future, ended, closed), in id order.
pub async fn list_campaigns(h: &mut impl Handle, page: Page) -> AppResult<Vec<CampaignRow>> {
    Ok(sql_all!(CampaignRow; h,
        concat!("SELECT ", campaign_columns!(), " FROM coupons WHERE id > $1 ORDER BY id LIMIT $2"),
        page.after.unwrap_or(0), page.fetch_limit())?)
}

/// A validated campaign change (at least one field).
#[derive(Clone, Debug)]
pub struct CampaignPatch {
    pub name: Option<String>,
    pub issue_ends_at: Option<DateTime<Utc>>,
    pub total_quantity: Option<i64>,
}

/// Change a campaign. The total never drops below what is issued (`409
/// COUPON_QUANTITY_BELOW_ISSUED`): checked here and again by the conditional UPDATE (and the
/// table's CHECK), so a concurrent issuance cannot slip in between.
pub async fn update_campaign(
    tx: &mut Tx,
    id: i64,
    patch: &CampaignPatch,
) -> AppResult<CampaignRow> {
    let current = find_campaign(tx, id)
        .await?
        .ok_or_else(|| coupon_not_found(id))?;
    if let Some(ends) = patch.issue_ends_at
        && ends <= current.issue_starts_at
    {
        return Err(AppError::validation(
            "issueEndsAt",
            "must be after issueStartsAt",
        ));
    }
    let below = |issued: i64, total: i64| {
        AppError::conflict(
            "COUPON_QUANTITY_BELOW_ISSUED",
            format!("{issued} coupons are already issued; the total cannot be {total}"),
            json!({ "couponId": id, "issuedQuantity": issued, "totalQuantity": total }),
        )
    };
    if let Some(total) = patch.total_quantity
        && total < current.issued_quantity
    {
        return Err(below(current.issued_quantity, total));
    }
    let updated = sql_optional!(CampaignRow; tx,
        concat!("UPDATE coupons SET
                     name = COALESCE($2, name),
                     issue_ends_at = COALESCE($3, issue_ends_at),
                     total_quantity = COALESCE($4, total_quantity)
                 WHERE id = $1 AND ($4 IS NULL OR issued_quantity <= $4)
                 RETURNING ", campaign_columns!()),
        id, patch.name.as_deref(), patch.issue_ends_at, patch.total_quantity)?;
    match updated {
        Some(row) => Ok(row),
        None => {
            let issued: Option<i64> =
                sql_scalar_optional!(tx, "SELECT issued_quantity FROM coupons WHERE id = $1", id)?;
            match issued {
                None => Err(coupon_not_found(id)),
                Some(issued) => Err(below(issued, patch.total_quantity.unwrap_or_default())),
            }
        }
    }
}

/// Close a campaign: no more issuance, issued coupons stay valid. Closing twice keeps the
/// first `closed_at`.
pub async fn close_campaign(tx: &mut Tx, id: i64, now: DateTime<Utc>) -> AppResult<CampaignRow> {
    sql_optional!(CampaignRow; tx,
        concat!("UPDATE coupons SET closed_at = COALESCE(closed_at, $2) WHERE id = $1 RETURNING ",
            campaign_columns!()),
        id, now)?
    .ok_or_else(|| coupon_not_found(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unfiltered_order_page_reads_every_status() {
        let sqlite = ALL_STATUSES_PAGE_SQLITE;
        assert_eq!(
            sqlite.matches(" UNION ALL ").count() + 1,
            OrderStatus::ALL.len()
        );
        let listed = ALL_STATUSES_PAGE_POSTGRES
            .split_once("unnest('{")
            .and_then(|(_, rest)| rest.split_once('}'))
            .map(|(list, _)| list.split(',').collect::<Vec<_>>())
            .unwrap_or_default();
        assert_eq!(listed.len(), OrderStatus::ALL.len());
        for status in OrderStatus::ALL {
            let term = format!("status = '{}' AND", status.as_str());
            assert_eq!(sqlite.matches(&term).count(), 1, "{term}");
            assert!(listed.contains(&status.as_str()), "{status:?}");
        }
    }

    #[test]
    fn search_terms_match_literally() {
        assert_eq!(like_contains("Kim"), "%kim%");
        assert_eq!(like_contains("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(like_contains("민지"), "%민지%");
    }

    #[test]
    fn terms_of_three_characters_or_more_go_to_the_trigram_index() {
        let kim = NameSearch::new("KIM");
        assert_eq!(kim.phrase.as_deref(), Some("\"kim\""));
        assert_eq!(kim.like, "%kim%");
        assert!(NameSearch::new("김민지").indexed());
        assert!(!NameSearch::new("민지").indexed());
        assert!(!NameSearch::new("ab").indexed());
        // A double quote inside the FTS5 phrase is doubled; nothing else is special there.
        assert_eq!(
            NameSearch::new("a\"b*c").phrase.as_deref(),
            Some("\"a\"\"b*c\"")
        );
    }
}

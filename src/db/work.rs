//! A PostgreSQL committer batch's unit of work: what its commands write without a round trip
//! each (SPEC §13, docs/architecture.md "The batch's unit of work").
//!
//! On PostgreSQL every statement is a round trip (~100 µs here), and an order used to cost
//! about ten. Inside a batch whose rows the committer has already locked, most of them need no
//! answer from the database:
//!
//! - **New rows** (orders, lines, history, payments, ledger, outbox) are kept in memory and
//!   written by one statement for the whole batch (`unnest` of column arrays per table, all
//!   tables in one `WITH`). Their ids come from the tables' sequences, taken a batch at a time.
//! - **The contended counters** — a product's stock, a member's balance — are read once per
//!   batch (the rows are locked: the committer declared them, or the load locks them) and
//!   changed in memory; the flush writes the final values with a guard on the value it read
//!   (`… WHERE stock = <read>`), and a mismatch fails the batch.
//!
//! Any other statement (`Handle::settle`, called by every `sql_*!` macro) first writes what is
//! pending, so it sees exactly what the commands before it did, then forgets the cached rows.
//! Savepoints are opened lazily, by the first such statement of a command: a command that only
//! used the cache and the pending rows needs none — undoing it is dropping its rows and
//! restoring the values it changed. What earlier commands left is written *before* the
//! savepoint, so rolling a command back never takes theirs with it.
//!
//! The same store functions run on every other handle (SQLite's committer, maintenance
//! transactions): there [`insert`] writes at once, and [`product`], [`balance`] and [`new_id`]
//! answer `None`, so the caller runs its SQL.
//!
//! (Longer than most files: the buffers, the cache with its undo log, the lazy savepoints and
//! the one flush statement are one protocol, checked together.)

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use sqlx::{Column as _, PgConnection, Row};

use super::{Arg, Tx, execute_args, multi_row};

/// Tables whose new rows a batch may write at its end. Flushed in this order (parents first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Orders,
    OrderLines,
    OrderHistory,
    Payments,
    Ledger,
    Outbox,
}

const TABLES: [Table; 6] = [
    Table::Orders,
    Table::OrderLines,
    Table::OrderHistory,
    Table::Payments,
    Table::Ledger,
    Table::Outbox,
];

/// A row that new rows name without a declared foreign key (see [`Table::parent`]).
#[derive(Clone, Copy)]
enum Parent {
    Member,
    Product,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    I64,
    OptI64,
    Text,
    OptText,
    Bool,
    Time,
    OptTime,
}

impl Ty {
    fn array(self) -> &'static str {
        match self {
            Ty::I64 | Ty::OptI64 => "bigint[]",
            Ty::Text | Ty::OptText => "text[]",
            Ty::Bool => "boolean[]",
            Ty::Time | Ty::OptTime => "timestamptz[]",
        }
    }
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Orders => "orders",
            Table::OrderLines => "order_lines",
            Table::OrderHistory => "order_status_history",
            Table::Payments => "payments",
            Table::Ledger => "balance_ledger",
            Table::Outbox => "outbox_events",
        }
    }

    /// The parent row `column` names, where its foreign key is not declared on PostgreSQL
    /// (migration 0015): the flush checks those itself.
    fn parent(self, column: &str) -> Option<Parent> {
        match (self, column) {
            (Table::Orders | Table::Payments | Table::Ledger, "user_id") => Some(Parent::Member),
            (Table::OrderLines, "product_id") => Some(Parent::Product),
            _ => None,
        }
    }

    /// The columns a row gives, in order (an [`Arg`] each).
    fn columns(self) -> &'static [(&'static str, Ty)] {
        use Ty::*;
        match self {
            Table::Orders => &[
                ("id", I64),
                ("user_id", I64),
                ("status", Text),
                ("from_cart", Bool),
                ("subtotal", I64),
                ("discount", I64),
                ("total", I64),
                ("user_coupon_id", OptI64),
                ("coupon_id", OptI64),
                ("expires_at", Time),
                ("created_at", Time),
                ("updated_at", Time),
                ("paid_at", OptTime),
            ],
            Table::OrderLines => &[
                ("order_id", I64),
                ("product_id", I64),
                ("name", Text),
                ("unit_price", I64),
                ("quantity", I64),
                ("line_total", I64),
            ],
            Table::OrderHistory => &[
                ("order_id", I64),
                ("from_status", OptText),
                ("to_status", Text),
                ("reason", Text),
                ("created_at", Time),
            ],
            Table::Payments => &[
                ("id", I64),
                ("order_id", I64),
                ("user_id", I64),
                ("amount", I64),
                ("status", Text),
                ("failure_code", OptText),
                ("created_at", Time),
            ],
            Table::Ledger => &[
                ("user_id", I64),
                ("kind", Text),
                ("amount", I64),
                ("balance_after", I64),
                ("order_id", OptI64),
                ("created_at", Time),
            ],
            Table::Outbox => &[
                ("id", Text),
                ("event_type", Text),
                ("aggregate_id", I64),
                ("payload", Text),
                ("status", Text),
                ("attempts", I64),
                ("next_attempt_at", Time),
                ("created_at", Time),
                ("locked_until", OptTime),
            ],
        }
    }

    /// `INSERT INTO t (c1, …)`: the head of the immediate (multi-row) form.
    fn head(self) -> &'static str {
        static HEADS: OnceLock<Vec<&'static str>> = OnceLock::new();
        let heads = HEADS.get_or_init(|| {
            TABLES
                .iter()
                .map(|t| {
                    let cols: Vec<&str> = t.columns().iter().map(|(c, _)| *c).collect();
                    &*Box::leak(
                        format!("INSERT INTO {} ({})", t.name(), cols.join(", ")).into_boxed_str(),
                    )
                })
                .collect()
        });
        heads[self as usize]
    }
}

/// Add rows to `table`: at the batch's flush on a PostgreSQL committer, at once (one
/// multi-row statement) anywhere else. Only for rows no statement of this batch reads before
/// the flush — other statements flush first (`Handle::settle`), so that holds by construction
/// for everything written through the `sql_*!` macros.
pub async fn insert(tx: &mut Tx, table: Table, rows: Vec<Vec<Arg>>) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let width = table.columns().len();
    if let Some(bad) = rows.iter().find(|r| r.len() != width) {
        return Err(sqlx::Error::Protocol(format!(
            "a row for {} has {} values, not {width}",
            table.name(),
            bad.len()
        )));
    }
    if let Tx::PgBatch(batch) = tx {
        batch.work.rows.extend(rows.into_iter().map(|r| (table, r)));
        return Ok(());
    }
    let sql = multi_row(table.head(), width, rows.len());
    let args: Vec<Arg> = rows.into_iter().flatten().collect();
    execute_args(tx, sql, &args).await?;
    Ok(())
}

/// A fresh id for a new row of `table` (orders, payments) on a PostgreSQL committer, taken
/// from its sequence a batch at a time; `None` elsewhere (insert with `RETURNING id`).
pub async fn new_id(tx: &mut Tx, table: Table) -> Result<Option<i64>, sqlx::Error> {
    let Tx::PgBatch(batch) = tx else {
        return Ok(None);
    };
    if let Some(id) = batch.work.ids.get_mut(&table).and_then(Vec::pop) {
        return Ok(Some(id));
    }
    // Sequences are not transactional: ids taken and not used are gaps, as with any insert
    // that rolls back. Topped up with the batch's own statement (orders and payments).
    batch.check()?;
    let taken = sqlx::raw_sql(sqlx::AssertSqlSafe(take_ids_sql(
        batch.work.batch_len.clamp(1, 1024),
    )))
    .fetch_all(&mut batch.conn)
    .await;
    let rows = batch.mark_broken(taken)?;
    batch.work.absorb(rows)?;
    Ok(batch.work.ids.get_mut(&table).and_then(Vec::pop))
}

/// A product as the batch sees it.
#[derive(Clone, Debug)]
pub struct Product {
    pub name: String,
    pub price: i64,
    pub status: String,
    pub stock: i64,
}

/// The product on a PostgreSQL committer: `Some(None)` if there is no such product; `None` on
/// any other handle (read it with SQL). Loads, and locks, every declared product not cached
/// yet with it, in one statement.
pub async fn product(tx: &mut Tx, id: i64) -> Result<Option<Option<Product>>, sqlx::Error> {
    let Tx::PgBatch(batch) = tx else {
        return Ok(None);
    };
    if !batch.work.products.contains_key(&id) {
        batch.load_products(id).await?;
    }
    Ok(Some(
        batch.work.products.get(&id).and_then(|e| e.state.clone()),
    ))
}

/// Set a cached product's stock (after [`product`] answered `Some(Some(_))`).
pub fn set_stock(tx: &mut Tx, id: i64, stock: i64) {
    let Tx::PgBatch(batch) = tx else { return };
    let work = &mut batch.work;
    if let Some(state) = work.products.get_mut(&id).and_then(|e| e.state.as_mut()) {
        work.undo.push(Undo::Stock(id, state.stock));
        state.stock = stock;
    }
}

/// A member's balance on a PostgreSQL committer: `Some(None)` if there is no such member;
/// `None` on any other handle.
pub async fn balance(tx: &mut Tx, user_id: i64) -> Result<Option<Option<i64>>, sqlx::Error> {
    let Tx::PgBatch(batch) = tx else {
        return Ok(None);
    };
    if !batch.work.users.contains_key(&user_id) {
        batch.load_users(user_id).await?;
    }
    Ok(Some(
        batch
            .work
            .users
            .get(&user_id)
            .and_then(|e| e.state.as_ref().map(|s| s.balance)),
    ))
}

/// Set a cached balance (after [`balance`] answered `Some(Some(_))`).
pub fn set_balance(tx: &mut Tx, user_id: i64, balance: i64, now: DateTime<Utc>) {
    let Tx::PgBatch(batch) = tx else { return };
    let work = &mut batch.work;
    if let Some(state) = work.users.get_mut(&user_id).and_then(|e| e.state.as_mut()) {
        work.undo
            .push(Undo::Balance(user_id, state.balance, state.updated_at));
        state.balance = balance;
        state.updated_at = Some(now);
    }
}

struct ProductEntry {
    /// `None`: no such product.
    state: Option<Product>,
    /// The stock in the database (as of the load or the last flush).
    stored: i64,
}

struct Balance {
    balance: i64,
    /// Set when the balance changed in this batch.
    updated_at: Option<DateTime<Utc>>,
}

struct UserEntry {
    state: Option<Balance>,
    stored: i64,
}

/// What a command changed in the cache, to restore if it fails without a savepoint.
enum Undo {
    Stock(i64, i64),
    Balance(i64, i64, Option<DateTime<Utc>>),
}

const RELEASE: &str = "RELEASE SAVEPOINT cmd";
const ROLL_BACK: &str = "ROLLBACK TO SAVEPOINT cmd; RELEASE SAVEPOINT cmd";

/// The unit of work of one batch.
#[derive(Default)]
pub(crate) struct Work {
    /// How the previous command's savepoint ends; sent before anything else.
    pending: Option<&'static str>,
    /// The running command has opened its savepoint.
    savepoint: bool,
    /// Where the running command's rows begin in `rows`.
    mark: usize,
    rows: Vec<(Table, Vec<Arg>)>,
    products: HashMap<i64, ProductEntry>,
    users: HashMap<i64, UserEntry>,
    undo: Vec<Undo>,
    ids: HashMap<Table, Vec<i64>>,
    declared_products: Vec<i64>,
    declared_users: Vec<i64>,
    batch_len: usize,
    /// A statement of the unit of work itself failed (or a flush found a row not as read):
    /// the transaction may be aborted outside any savepoint — PostgreSQL would turn its
    /// `COMMIT` into a silent `ROLLBACK` — so the batch must not be answered as committed.
    broken: Option<String>,
}

/// A PostgreSQL committer's connection with its batch's unit of work.
pub struct PgBatch {
    pub(crate) conn: PgConnection,
    pub(crate) work: Work,
}

/// Column arrays for one flush.
enum Column {
    I64(Vec<i64>),
    OptI64(Vec<Option<i64>>),
    Text(Vec<String>),
    OptText(Vec<Option<String>>),
    Bool(Vec<bool>),
    Time(Vec<DateTime<Utc>>),
    OptTime(Vec<Option<DateTime<Utc>>>),
}

impl Column {
    fn new(ty: Ty) -> Self {
        match ty {
            Ty::I64 => Column::I64(Vec::new()),
            Ty::OptI64 => Column::OptI64(Vec::new()),
            Ty::Text => Column::Text(Vec::new()),
            Ty::OptText => Column::OptText(Vec::new()),
            Ty::Bool => Column::Bool(Vec::new()),
            Ty::Time => Column::Time(Vec::new()),
            Ty::OptTime => Column::OptTime(Vec::new()),
        }
    }

    fn push(&mut self, arg: &Arg) -> Result<(), sqlx::Error> {
        match (self, arg) {
            (Column::I64(v), Arg::I64(x)) => v.push(*x),
            (Column::OptI64(v), Arg::I64(x)) => v.push(Some(*x)),
            (Column::OptI64(v), Arg::OptI64(x)) => v.push(*x),
            (Column::Text(v), Arg::Text(x)) => v.push(x.clone()),
            (Column::OptText(v), Arg::Text(x)) => v.push(Some(x.clone())),
            (Column::OptText(v), Arg::OptText(x)) => v.push(x.clone()),
            (Column::Bool(v), Arg::Bool(x)) => v.push(*x),
            (Column::Time(v), Arg::Time(x)) => v.push(*x),
            (Column::OptTime(v), Arg::Time(x)) => v.push(Some(*x)),
            (Column::OptTime(v), Arg::OptTime(x)) => v.push(*x),
            (_, arg) => {
                return Err(sqlx::Error::Protocol(format!(
                    "a deferred row has a value of the wrong type: {arg:?}"
                )));
            }
        }
        Ok(())
    }
}

/// The one statement of a flush: every table's new rows, then the stock and balance rows,
/// guarded by the values the batch read. Answers how many of each were updated. Public for
/// the test that reads its plan.
pub fn flush_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let mut n = 0;
        let mut next = |ty: &str| {
            n += 1;
            format!("${n}::{ty}")
        };
        let mut parts = Vec::new();
        for (i, table) in TABLES.iter().enumerate() {
            let cols: Vec<&str> = table.columns().iter().map(|(c, _)| *c).collect();
            let arrays: Vec<String> = table.columns().iter().map(|(_, t)| next(t.array())).collect();
            parts.push(format!(
                "t{i} AS (INSERT INTO {} ({}) SELECT * FROM unnest({}))",
                table.name(),
                cols.join(", "),
                arrays.join(", ")
            ));
        }
        let (a, b, c) = (next("bigint[]"), next("bigint[]"), next("bigint[]"));
        parts.push(format!(
            "p AS (UPDATE products SET stock = v.stock FROM unnest({a}, {b}, {c}) AS v(id, stock, stored)
             WHERE products.id = v.id AND products.stock = v.stored RETURNING 1)"
        ));
        let (a, b, c, d) = (
            next("bigint[]"),
            next("bigint[]"),
            next("bigint[]"),
            next("timestamptz[]"),
        );
        parts.push(format!(
            "u AS (UPDATE users SET balance = v.balance, balance_updated_at = v.at
             FROM unnest({a}, {b}, {c}, {d}) AS v(id, balance, stored, at)
             WHERE users.id = v.id AND users.balance = v.stored RETURNING 1)"
        ));
        // The foreign keys of these rows to their member and product are not declared on
        // PostgreSQL (migration 0015: a trigger and a row lock per row); the flush checks them
        // itself, one index probe per id the batch has not read (see `PgBatch::flush`).
        let (members, products) = (next("bigint[]"), next("bigint[]"));
        format!(
            "WITH {} SELECT (SELECT count(*) FROM p) AS products, (SELECT count(*) FROM u) AS users,
             (SELECT count(*) FROM unnest({members}) AS r(id)
              WHERE NOT EXISTS (SELECT 1 FROM users WHERE users.id = r.id)) AS missing_members,
             (SELECT count(*) FROM unnest({products}) AS r(id)
              WHERE NOT EXISTS (SELECT 1 FROM products WHERE products.id = r.id)) AS missing_products",
            parts.join(",\n"),
        )
    })
}

/// After a batch's `COMMIT` (made with `synchronous_commit = off`, so it releases its row
/// locks without waiting for the disk): a transaction of the session's
/// default `synchronous_commit = on` that writes one tiny WAL record (a transactional logical
/// message; any role may write one), so its commit waits until the write-ahead log is flushed
/// through its own commit record, which follows the batch's. It returns once the batch is
/// durable; the committer answers only then. (A transaction that only takes an id
/// writes no WAL of its own and PostgreSQL does not flush at its commit: measured, 3 fsyncs
/// for 200 such commits; 200 for 200 with the message.)
pub const DURABLE_BARRIER: &str =
    "BEGIN; SELECT pg_logical_emit_message(true, 'shopd', 'durable'); COMMIT";

/// The columns of a locked product row the batch caches (the lock statement reads them).
pub(crate) const PRODUCT_COLUMNS: &str = "id, name, price, status, stock";
/// The columns of a locked member row the batch caches.
pub(crate) const USER_COLUMNS: &str = "id, balance";

/// The batch's opening statements, prepared once on each committer connection (one round
/// trip when it opens): a batch then runs them by name (`EXECUTE`) inside its simple-protocol
/// prologue, and PostgreSQL neither parses nor plans them again (8 % of the committer's
/// backend time when each batch sent them as text). Locking is `= ANY` of an id array in id
/// order; the ids statement answers rows `(id_for, id)`, each sequence looked up once
/// (`pg_get_serial_sequence` per row was 4 % of the backend).
pub(crate) fn prepare_batch_statements_sql() -> String {
    let mut sql = String::new();
    for (table, columns) in [
        ("coupons", "id"),
        ("products", PRODUCT_COLUMNS),
        ("users", USER_COLUMNS),
        ("orders", "id"),
    ] {
        sql.push_str(&format!(
            "PREPARE shopd_lock_{table} (bigint[]) AS SELECT {columns} FROM {table} \
             WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE; "
        ));
    }
    sql.push_str(
        "PREPARE shopd_take_ids (int) AS \
         WITH s AS MATERIALIZED (SELECT pg_get_serial_sequence('orders', 'id')::regclass AS o, \
         pg_get_serial_sequence('payments', 'id')::regclass AS p) \
         SELECT 'orders' AS id_for, nextval(s.o) AS id FROM s, generate_series(1, $1) \
         UNION ALL SELECT 'payments', nextval(s.p) FROM s, generate_series(1, $1)",
    );
    sql
}

/// Lock the rows of `table` (coupons, products, users, orders) with these ids, in id order
/// (a prepared statement of [`prepare_batch_statements_sql`]; the ids are integers, written
/// into the text).
pub(crate) fn lock_rows_sql(table: &str, ids: &[i64]) -> String {
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("EXECUTE shopd_lock_{table}('{{{}}}')", list.join(","))
}

/// Take `count` ids for orders and as many for payments, as rows `(id_for, id)` (a prepared
/// statement of [`prepare_batch_statements_sql`]).
pub(crate) fn take_ids_sql(count: usize) -> String {
    format!("EXECUTE shopd_take_ids({count})")
}

impl PgBatch {
    /// Committer: run the batch's opening statements (`BEGIN`, the locks, the ids: simple
    /// protocol, one round trip) and keep what they read: locked products and balances, ids.
    pub(crate) async fn begin(&mut self, sql: String) -> Result<(), sqlx::Error> {
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut self.conn)
            .await?;
        let work = &mut self.work;
        work.products.clear();
        work.users.clear();
        work.ids.clear();
        work.absorb(rows)?;
        // Declared rows that do not exist are known to be missing.
        for id in &work.declared_products {
            work.products.entry(*id).or_insert(ProductEntry {
                state: None,
                stored: 0,
            });
        }
        for id in &work.declared_users {
            work.users.entry(*id).or_insert(UserEntry {
                state: None,
                stored: 0,
            });
        }
        Ok(())
    }

    pub(crate) fn new(
        conn: PgConnection,
        products: Vec<i64>,
        users: Vec<i64>,
        batch_len: usize,
    ) -> Self {
        PgBatch {
            conn,
            work: Work {
                declared_products: products,
                declared_users: users,
                batch_len,
                ..Work::default()
            },
        }
    }

    /// Committer: a command starts (its savepoint is opened lazily, by [`PgBatch::settle`]).
    pub(crate) fn begin_command(&mut self) {
        let work = &mut self.work;
        work.savepoint = false;
        work.mark = work.rows.len();
        work.undo.clear();
    }

    /// Committer: the command ended. A failure drops its rows and restores its cached values,
    /// or, if it opened a savepoint, rolls back to it (before anything else is sent) and forgets
    /// the cache, whose rows the rollback may have changed.
    pub(crate) fn end_command(&mut self, ok: bool) {
        let work = &mut self.work;
        if ok {
            if work.savepoint {
                work.pending = Some(RELEASE);
            }
        } else {
            work.rows.truncate(work.mark);
            if work.savepoint {
                work.pending = Some(ROLL_BACK);
                work.products.clear();
                work.users.clear();
            } else {
                while let Some(undo) = work.undo.pop() {
                    match undo {
                        Undo::Stock(id, stock) => {
                            if let Some(s) =
                                work.products.get_mut(&id).and_then(|e| e.state.as_mut())
                            {
                                s.stock = stock;
                            }
                        }
                        Undo::Balance(id, balance, at) => {
                            if let Some(s) = work.users.get_mut(&id).and_then(|e| e.state.as_mut())
                            {
                                s.balance = balance;
                                s.updated_at = at;
                            }
                        }
                    }
                }
            }
        }
        work.undo.clear();
        work.savepoint = false;
        work.mark = work.rows.len();
    }

    /// Committer: write what is pending and commit. Refuses (the batch then rolls back and
    /// every caller gets 503) if the unit of work failed earlier in the batch.
    pub(crate) async fn commit(&mut self) -> Result<(), sqlx::Error> {
        self.check()?;
        let result = self.write_and_commit().await;
        self.mark_broken(result)
    }

    async fn write_and_commit(&mut self) -> Result<(), sqlx::Error> {
        let pending = self.work.pending.take();
        if self.dirty() {
            if let Some(sql) = pending {
                sqlx::raw_sql(sql).execute(&mut self.conn).await?;
            }
            let rows = std::mem::take(&mut self.work.rows);
            self.flush(&rows, &HashMap::new(), &HashMap::new()).await?;
            sqlx::raw_sql("COMMIT").execute(&mut self.conn).await?;
        } else {
            let sql = match pending {
                Some(RELEASE) => "RELEASE SAVEPOINT cmd; COMMIT",
                Some(_) => "ROLLBACK TO SAVEPOINT cmd; RELEASE SAVEPOINT cmd; COMMIT",
                None => "COMMIT",
            };
            sqlx::raw_sql(sql).execute(&mut self.conn).await?;
        }
        // Committed, not yet durable: the committer answers once it is (`DURABLE_BARRIER`).
        Ok(())
    }

    /// Before a statement of the running command that is not one of the cached operations:
    /// write what is pending, open the command's savepoint if it has none yet (what earlier
    /// commands left goes in before it), and forget the cached rows (the statement may change
    /// them).
    pub(crate) async fn settle(&mut self) -> Result<(), sqlx::Error> {
        self.check()?;
        let result = self.settle_inner().await;
        self.mark_broken(result)
    }

    /// `Err` if the unit of work failed earlier in this batch.
    fn check(&self) -> Result<(), sqlx::Error> {
        match &self.work.broken {
            Some(why) => Err(sqlx::Error::Protocol(format!(
                "the batch's unit of work failed earlier: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// Remember a failure of the unit of work's own statements (see [`Work::broken`]).
    fn mark_broken<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        if let Err(err) = &result
            && self.work.broken.is_none()
        {
            self.work.broken = Some(err.to_string());
        }
        result
    }

    async fn settle_inner(&mut self) -> Result<(), sqlx::Error> {
        if self.work.savepoint {
            if self.dirty() {
                let rows = std::mem::take(&mut self.work.rows);
                self.flush(&rows, &HashMap::new(), &HashMap::new()).await?;
            }
        } else {
            // Values as they were before this command changed them: what the earlier commands
            // left, to be written outside this command's savepoint.
            let mut stock_before = HashMap::new();
            let mut balance_before = HashMap::new();
            for undo in &self.work.undo {
                match undo {
                    Undo::Stock(id, stock) => {
                        stock_before.entry(*id).or_insert(*stock);
                    }
                    Undo::Balance(id, balance, at) => {
                        balance_before.entry(*id).or_insert((*balance, *at));
                    }
                }
            }
            let earlier: Vec<(Table, Vec<Arg>)> = self.work.rows.drain(..self.work.mark).collect();
            let mut open = String::new();
            if let Some(sql) = self.work.pending.take() {
                open.push_str(sql);
                open.push_str("; ");
            }
            if self.dirty_except(&stock_before, &balance_before) || !earlier.is_empty() {
                if !open.is_empty() {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(std::mem::take(&mut open)))
                        .execute(&mut self.conn)
                        .await?;
                }
                self.flush(&earlier, &stock_before, &balance_before).await?;
            }
            open.push_str("SAVEPOINT cmd");
            sqlx::raw_sql(sqlx::AssertSqlSafe(open))
                .execute(&mut self.conn)
                .await?;
            self.work.savepoint = true;
            self.work.mark = 0;
            if self.dirty() {
                let rows = std::mem::take(&mut self.work.rows);
                self.flush(&rows, &HashMap::new(), &HashMap::new()).await?;
            }
        }
        self.work.forget();
        Ok(())
    }

    /// Before a nested savepoint (`SAVEPOINT op`): everything is written, so undoing the
    /// nested work is a rollback to it plus forgetting what the cache holds.
    pub(crate) fn undo_nested(&mut self) {
        self.work.forget();
    }

    /// Send the previous command's savepoint end, if it is still owed.
    async fn send_pending(&mut self) -> Result<(), sqlx::Error> {
        if let Some(sql) = self.work.pending.take() {
            sqlx::raw_sql(sql).execute(&mut self.conn).await?;
        }
        Ok(())
    }

    fn dirty(&self) -> bool {
        !self.work.rows.is_empty()
            || self
                .work
                .products
                .values()
                .any(|e| e.state.as_ref().is_some_and(|s| s.stock != e.stored))
            || self
                .work
                .users
                .values()
                .any(|e| e.state.as_ref().is_some_and(|s| s.balance != e.stored))
    }

    /// Whether anything but the running command's own changes is unwritten.
    fn dirty_except(
        &self,
        stock_before: &HashMap<i64, i64>,
        balance_before: &HashMap<i64, (i64, Option<DateTime<Utc>>)>,
    ) -> bool {
        self.work.products.iter().any(|(id, e)| {
            let value = stock_before
                .get(id)
                .copied()
                .or(e.state.as_ref().map(|s| s.stock));
            value.is_some_and(|v| v != e.stored)
        }) || self.work.users.iter().any(|(id, e)| {
            let value = balance_before
                .get(id)
                .map(|(b, _)| *b)
                .or(e.state.as_ref().map(|s| s.balance));
            value.is_some_and(|v| v != e.stored)
        })
    }

    /// Write `rows` and the cached stock and balances (for the ids in `stock_as`/`balance_as`,
    /// those values instead of the current ones) in one statement.
    async fn flush(
        &mut self,
        rows: &[(Table, Vec<Arg>)],
        stock_as: &HashMap<i64, i64>,
        balance_as: &HashMap<i64, (i64, Option<DateTime<Utc>>)>,
    ) -> Result<(), sqlx::Error> {
        let mut query = sqlx::query(flush_sql());
        // The members and products the new rows name, except those this batch read: those are
        // locked rows, and members and products are never deleted (migration 0015). The flush
        // probes the rest (in a hot-row sale, none).
        let (mut unread_members, mut unread_products) = (BTreeSet::new(), BTreeSet::new());
        for table in TABLES {
            let spec = table.columns();
            let mut columns: Vec<Column> = spec.iter().map(|(_, ty)| Column::new(*ty)).collect();
            for (_, row) in rows.iter().filter(|(t, _)| *t == table) {
                for (column, arg) in columns.iter_mut().zip(row) {
                    column.push(arg)?;
                }
            }
            for ((name, _), column) in spec.iter().zip(&columns) {
                let Some(parent) = table.parent(name) else {
                    continue;
                };
                let unread = match parent {
                    Parent::Member => &mut unread_members,
                    Parent::Product => &mut unread_products,
                };
                let work = &self.work;
                match column {
                    Column::I64(ids) => {
                        unread.extend(ids.iter().copied().filter(|&id| !work.read(parent, id)))
                    }
                    Column::OptI64(ids) => unread.extend(
                        ids.iter()
                            .flatten()
                            .copied()
                            .filter(|&id| !work.read(parent, id)),
                    ),
                    _ => {
                        return Err(sqlx::Error::Protocol(format!(
                            "{} names its {name} with a value that is not an id",
                            table.name()
                        )));
                    }
                }
            }
            for column in columns {
                query = match column {
                    Column::I64(v) => query.bind(v),
                    Column::OptI64(v) => query.bind(v),
                    Column::Text(v) => query.bind(v),
                    Column::OptText(v) => query.bind(v),
                    Column::Bool(v) => query.bind(v),
                    Column::Time(v) => query.bind(v),
                    Column::OptTime(v) => query.bind(v),
                };
            }
        }
        let (mut ids, mut stocks, mut stored) = (Vec::new(), Vec::new(), Vec::new());
        for (id, entry) in self.work.products.iter_mut() {
            let Some(state) = &entry.state else { continue };
            let value = stock_as.get(id).copied().unwrap_or(state.stock);
            if value != entry.stored {
                ids.push(*id);
                stocks.push(value);
                stored.push(entry.stored);
                entry.stored = value;
            }
        }
        let product_count = ids.len();
        query = query.bind(ids).bind(stocks).bind(stored);
        let (mut ids, mut balances, mut stored, mut at) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, entry) in self.work.users.iter_mut() {
            let Some(state) = &entry.state else { continue };
            let (value, when) = balance_as
                .get(id)
                .copied()
                .unwrap_or((state.balance, state.updated_at));
            if value != entry.stored {
                ids.push(*id);
                balances.push(value);
                stored.push(entry.stored);
                at.push(when.unwrap_or_else(Utc::now));
                entry.stored = value;
            }
        }
        let user_count = ids.len();
        query = query.bind(ids).bind(balances).bind(stored).bind(at);
        let unread_members: Vec<i64> = unread_members.into_iter().collect();
        let unread_products: Vec<i64> = unread_products.into_iter().collect();
        let row = query
            .bind(unread_members)
            .bind(unread_products)
            .fetch_one(&mut self.conn)
            .await?;
        let products: i64 = row.try_get("products")?;
        let users: i64 = row.try_get("users")?;
        let missing_members: i64 = row.try_get("missing_members")?;
        let missing_products: i64 = row.try_get("missing_products")?;
        if missing_members != 0 || missing_products != 0 {
            return Err(sqlx::Error::Protocol(format!(
                "batch flush: new rows name {missing_members} member(s) and {missing_products} \
                 product(s) that do not exist"
            )));
        }
        if usize::try_from(products).ok() != Some(product_count)
            || usize::try_from(users).ok() != Some(user_count)
        {
            return Err(sqlx::Error::Protocol(format!(
                "batch flush: {products} of {product_count} stock rows and {users} of {user_count} \
                 balance rows were as read"
            )));
        }
        Ok(())
    }

    /// Load (and lock, in id order) `id` and every declared product not cached yet.
    async fn load_products(&mut self, id: i64) -> Result<(), sqlx::Error> {
        let ids = uncached(&self.work.declared_products, &self.work.products, id);
        self.load(&ids, "SELECT id, name, price, status, stock FROM products WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
            .await?;
        for id in ids {
            self.work.products.entry(id).or_insert(ProductEntry {
                state: None,
                stored: 0,
            });
        }
        Ok(())
    }

    /// Load (and lock, in id order) `user_id` and every declared member not cached yet.
    async fn load_users(&mut self, user_id: i64) -> Result<(), sqlx::Error> {
        let ids = uncached(&self.work.declared_users, &self.work.users, user_id);
        self.load(
            &ids,
            "SELECT id, balance FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        )
        .await?;
        for id in ids {
            self.work.users.entry(id).or_insert(UserEntry {
                state: None,
                stored: 0,
            });
        }
        Ok(())
    }

    async fn load(&mut self, ids: &[i64], sql: &'static str) -> Result<(), sqlx::Error> {
        self.check()?;
        let result = async {
            self.send_pending().await?;
            let rows = sqlx::query(sql).bind(ids).fetch_all(&mut self.conn).await?;
            self.work.absorb(rows)
        }
        .await;
        self.mark_broken(result)
    }
}

/// `wanted` and the declared ids that `cache` does not hold yet.
fn uncached<T>(declared: &[i64], cache: &HashMap<i64, T>, wanted: i64) -> Vec<i64> {
    let mut ids: Vec<i64> = declared
        .iter()
        .copied()
        .filter(|id| !cache.contains_key(id))
        .collect();
    if !ids.contains(&wanted) {
        ids.push(wanted);
    }
    ids
}

impl Work {
    /// Whether this batch read member or product `id` (and so holds its row lock) since it
    /// last forgot.
    fn read(&self, parent: Parent, id: i64) -> bool {
        match parent {
            Parent::Member => self.users.get(&id).is_some_and(|e| e.state.is_some()),
            Parent::Product => self.products.get(&id).is_some_and(|e| e.state.is_some()),
        }
    }

    /// Drop the pending rows and the cached rows with their undo log: after everything was
    /// written (`settle`), or after a rollback to a nested savepoint undid it.
    fn forget(&mut self) {
        self.rows.clear();
        self.mark = 0;
        self.products.clear();
        self.users.clear();
        self.undo.clear();
    }

    /// Keep the rows a lock statement read: products, balances, ids taken ahead (told apart
    /// by their columns).
    fn absorb(&mut self, rows: Vec<sqlx::postgres::PgRow>) -> Result<(), sqlx::Error> {
        for row in rows {
            let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
            match names.as_slice() {
                ["id", "name", "price", "status", "stock"] => {
                    let state = Product {
                        name: row.try_get("name")?,
                        price: row.try_get("price")?,
                        status: row.try_get("status")?,
                        stock: row.try_get("stock")?,
                    };
                    self.products.insert(
                        row.try_get("id")?,
                        ProductEntry {
                            stored: state.stock,
                            state: Some(state),
                        },
                    );
                }
                ["id", "balance"] => {
                    let balance: i64 = row.try_get("balance")?;
                    self.users.insert(
                        row.try_get("id")?,
                        UserEntry {
                            state: Some(Balance {
                                balance,
                                updated_at: None,
                            }),
                            stored: balance,
                        },
                    );
                }
                ["id_for", "id"] => {
                    let table = match row.try_get::<String, _>("id_for")?.as_str() {
                        "orders" => Table::Orders,
                        _ => Table::Payments,
                    };
                    self.ids.entry(table).or_default().push(row.try_get("id")?);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

//! Statement macros: run one SQL string with the same bound arguments on either backend.
//!
//! Each first lets the handle settle (a PostgreSQL committer batch writes what its commands
//! left for the flush, `db/work.rs`), then expands to a `match` on the handle's backend; both arms bind identically, so the
//! argument types must be encodable on SQLite and PostgreSQL (i64, String, &str, bool,
//! `DateTime<Utc>`, `Option<_>` of those). Row types derive `sqlx::FromRow`, which is generic
//! over the row type and so decodes on both.

/// Execute a statement; evaluates to `Result<u64 /* rows affected */, sqlx::Error>`.
#[macro_export]
macro_rules! sql_execute {
    ($h:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        { let h = &mut *$h; match $crate::db::Handle::settle(&mut *h).await { Err(e) => Err(e), Ok(()) => match $crate::db::Handle::raw(&mut *h) {
            $crate::db::Raw::Sqlite(c) => ::sqlx::query($sql)$(.bind($arg))*.execute(c).await.map(|r| r.rows_affected()),
            $crate::db::Raw::Postgres(c) => ::sqlx::query($sql)$(.bind($arg))*.execute(c).await.map(|r| r.rows_affected()),
            $crate::db::Raw::Lite(c) => { let args: &[&dyn $crate::db::lite::Bind] = &[$(&$arg),*]; c.execute($sql, args) }
        }}}
    };
}

/// Fetch exactly one row as `$t: FromRow`.
#[macro_export]
macro_rules! sql_one {
    ($t:ty; $h:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        { let h = &mut *$h; match $crate::db::Handle::settle(&mut *h).await { Err(e) => Err(e), Ok(()) => match $crate::db::Handle::raw(&mut *h) {
            $crate::db::Raw::Sqlite(c) => ::sqlx::query_as::<_, $t>($sql)$(.bind($arg))*.fetch_one(c).await,
            $crate::db::Raw::Postgres(c) => ::sqlx::query_as::<_, $t>($sql)$(.bind($arg))*.fetch_one(c).await,
            $crate::db::Raw::Lite(c) => { let args: &[&dyn $crate::db::lite::Bind] = &[$(&$arg),*]; c.one::<$t>($sql, args) }
        }}}
    };
}

/// Fetch zero or one row as `Option<$t>`.
#[macro_export]
macro_rules! sql_optional {
    ($t:ty; $h:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        { let h = &mut *$h; match $crate::db::Handle::settle(&mut *h).await { Err(e) => Err(e), Ok(()) => match $crate::db::Handle::raw(&mut *h) {
            $crate::db::Raw::Sqlite(c) => ::sqlx::query_as::<_, $t>($sql)$(.bind($arg))*.fetch_optional(c).await,
            $crate::db::Raw::Postgres(c) => ::sqlx::query_as::<_, $t>($sql)$(.bind($arg))*.fetch_optional(c).await,
            $crate::db::Raw::Lite(c) => { let args: &[&dyn $crate::db::lite::Bind] = &[$(&$arg),*]; c.optional::<$t>($sql, args) }
        }}}
    };
}

/// Fetch all rows as `Vec<$t>`.
#[macro_export]
macro_rules! sql_all {
    ($t:ty; $h:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        { let h = &mut *$h; match $crate::db::Handle::settle(&mut *h).await { Err(e) => Err(e), Ok(()) => match $crate::db::Handle::raw(&mut *h) {
            $crate::db::Raw::Sqlite(c) => ::sqlx::query_as::<_, $t>($sql)$(.bind($arg))*.fetch_all(c).await,
            $crate::db::Raw::Postgres(c) => ::sqlx::query_as::<_, $t>($sql)$(.bind($arg))*.fetch_all(c).await,
            $crate::db::Raw::Lite(c) => { let args: &[&dyn $crate::db::lite::Bind] = &[$(&$arg),*]; c.all::<$t>($sql, args) }
        }}}
    };
}

/// Fetch one scalar (first column of exactly one row).
#[macro_export]
macro_rules! sql_scalar {
    ($h:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        { let h = &mut *$h; match $crate::db::Handle::settle(&mut *h).await { Err(e) => Err(e), Ok(()) => match $crate::db::Handle::raw(&mut *h) {
            $crate::db::Raw::Sqlite(c) => ::sqlx::query_scalar($sql)$(.bind($arg))*.fetch_one(c).await,
            $crate::db::Raw::Postgres(c) => ::sqlx::query_scalar($sql)$(.bind($arg))*.fetch_one(c).await,
            $crate::db::Raw::Lite(c) => { let args: &[&dyn $crate::db::lite::Bind] = &[$(&$arg),*]; c.scalar($sql, args) }
        }}}
    };
}

/// Fetch an optional scalar (first column of zero or one row).
#[macro_export]
macro_rules! sql_scalar_optional {
    ($h:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        { let h = &mut *$h; match $crate::db::Handle::settle(&mut *h).await { Err(e) => Err(e), Ok(()) => match $crate::db::Handle::raw(&mut *h) {
            $crate::db::Raw::Sqlite(c) => ::sqlx::query_scalar($sql)$(.bind($arg))*.fetch_optional(c).await,
            $crate::db::Raw::Postgres(c) => ::sqlx::query_scalar($sql)$(.bind($arg))*.fetch_optional(c).await,
            $crate::db::Raw::Lite(c) => { let args: &[&dyn $crate::db::lite::Bind] = &[$(&$arg),*]; c.scalar_optional($sql, args) }
        }}}
    };
}

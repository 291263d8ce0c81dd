//! Storage: one `Db` handle over SQLite or PostgreSQL.
//!
//! Business code is written once against [`Tx`] / [`Conn`] through the `sql_*!` macros, which
//! bind the same arguments to the same SQL string on whichever backend is live (`$1`
//! placeholders work on both). Only genuine dialect differences pick a string per backend with
//! [`Dialect::pick`].

mod macros;

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Transaction};

/// Which SQL dialect a handle speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Choose between two spellings of the same statement.
    pub fn pick(self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
        }
    }
}

/// How long the first connection to PostgreSQL may take before start-up gives up.
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pool sizing and durability knobs.
#[derive(Clone, Debug)]
pub struct DbOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// SQLite only: `synchronous=FULL` (durable) unless explicitly opted out.
    pub sqlite_durable: bool,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(30),
            sqlite_durable: true,
        }
    }
}

/// The application's database: cheap to clone.
#[derive(Clone, Debug)]
pub enum Db {
    /// SQLite allows one writer at a time; a dedicated single-connection write pool queues
    /// writers in-process (no `SQLITE_BUSY` storms) while readers use WAL snapshots in parallel.
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
    },
    Postgres(PgPool),
}

/// An open write transaction. Dropping it without [`Tx::commit`] rolls back.
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// A pooled connection for reads outside a transaction.
pub enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

/// The backend-specific connection a macro runs a statement on.
pub enum Raw<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

/// Anything a statement can run on: a transaction or a plain connection.
pub trait Handle: Send {
    fn raw(&mut self) -> Raw<'_>;
    fn dialect(&self) -> Dialect;
}

impl Handle for Tx {
    fn raw(&mut self) -> Raw<'_> {
        match self {
            Tx::Sqlite(tx) => Raw::Sqlite(tx),
            Tx::Postgres(tx) => Raw::Postgres(tx),
        }
    }
    fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(_) => Dialect::Sqlite,
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }
}

impl Handle for Conn {
    fn raw(&mut self) -> Raw<'_> {
        match self {
            Conn::Sqlite(c) => Raw::Sqlite(c),
            Conn::Postgres(c) => Raw::Postgres(c),
        }
    }
    fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

impl Db {
    /// Connect to `url` (`sqlite://path` or `postgres://...`). A missing SQLite file is created.
    /// The first connection fails fast and names the server or file (an operator starting
    /// against a PostgreSQL that is down learns it in seconds, not after the pool's timeout).
    pub async fn connect(url: &str, options: &DbOptions) -> anyhow::Result<Db> {
        use anyhow::Context;
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(url).context("invalid PostgreSQL URL")?;
            let server = format!("{}:{}", connect.get_host(), connect.get_port());
            let probe = tokio::time::timeout(
                FIRST_CONNECT_TIMEOUT,
                <PgConnection as sqlx::Connection>::connect_with(&connect),
            )
            .await;
            match probe {
                Ok(Ok(conn)) => {
                    let _ = sqlx::Connection::close(conn).await;
                }
                Ok(Err(err)) => {
                    anyhow::bail!("cannot connect to PostgreSQL at {server}: {err}")
                }
                Err(_) => anyhow::bail!(
                    "cannot connect to PostgreSQL at {server}: no answer within {}s",
                    FIRST_CONNECT_TIMEOUT.as_secs()
                ),
            }
            Self::connect_postgres(connect, options)
                .await
                .with_context(|| format!("cannot connect to PostgreSQL at {server}"))
        } else if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url).context("invalid SQLite URL")?;
            let path = connect.get_filename().display().to_string();
            Self::connect_sqlite(connect, options)
                .await
                .with_context(|| format!("cannot open the SQLite database {path}"))
        } else {
            anyhow::bail!(
                "unsupported database url {url:?}: expected sqlite://PATH or postgres://..."
            )
        }
    }

    pub async fn connect_postgres(
        connect: PgConnectOptions,
        options: &DbOptions,
    ) -> anyhow::Result<Db> {
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        Ok(Db::Postgres(pool))
    }

    pub async fn connect_sqlite(
        connect: SqliteConnectOptions,
        options: &DbOptions,
    ) -> anyhow::Result<Db> {
        let synchronous = if options.sqlite_durable {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        };
        let connect = connect
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.read_only(true))
            .await?;
        Ok(Db::Sqlite { write, read })
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite { .. } => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Apply this backend's migrations (`migrations/sqlite` or `migrations/postgres`).
    /// On PostgreSQL the migrator holds an advisory lock, so instances starting together are safe.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Sqlite { write, .. } => sqlx::migrate!("./migrations/sqlite").run(write).await?,
            Db::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// Begin a write transaction. SQLite takes the write lock up front (`BEGIN IMMEDIATE`) so a
    /// transaction never fails half-way on lock upgrade.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self {
            Db::Sqlite { write, .. } => Ok(Tx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?)),
            Db::Postgres(pool) => Ok(Tx::Postgres(pool.begin().await?)),
        }
    }

    /// A connection for reads that need no transaction.
    pub async fn read(&self) -> Result<Conn, sqlx::Error> {
        match self {
            Db::Sqlite { read, .. } => Ok(Conn::Sqlite(read.acquire().await?)),
            Db::Postgres(pool) => Ok(Conn::Postgres(pool.acquire().await?)),
        }
    }

    /// Readiness probe: a trivial round trip.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.read().await?;
        let _: i64 = crate::sql_scalar!(&mut conn, "SELECT CAST(1 AS BIGINT)")?;
        Ok(())
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// True if the error is a unique-constraint violation (matched by kind: SQLite gives no name).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

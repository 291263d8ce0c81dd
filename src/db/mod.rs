//! Storage: one `Db` handle over SQLite or PostgreSQL.
//!
//! Business code is written once against [`Tx`] / [`Conn`] through the `sql_*!` macros, which
//! bind the same arguments to the same SQL string on whichever backend is live (`$1`
//! placeholders work on both). Only genuine dialect differences pick a string per backend with
//! [`Dialect::pick`].

mod args;
pub mod committer;
pub mod lite;
mod lite_vfs;
mod macros;
pub mod work;

pub(crate) use args::bind_args;
pub use args::{Arg, execute_args, multi_row};

use committer::{Command, Committer, Target};
pub use committer::{CommandError, CommitOptions, Locks};
use lite::LiteConn;
use work::PgBatch;

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
    /// Group commit.
    pub commit: CommitOptions,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(30),
            sqlite_durable: true,
            commit: CommitOptions::default(),
        }
    }
}

/// The application's database: pools for reads (and maintenance jobs) plus the committer that
/// every request's write goes through. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pools: Pools,
    committer: Committer,
}

#[derive(Clone, Debug)]
enum Pools {
    /// Readers use WAL snapshots in parallel. The single-connection `write` pool serves
    /// migrations and maintenance jobs; request writes go through the committer's own
    /// connection.
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
    },
    Postgres(PgPool),
}

/// An open write transaction. Dropping a pooled one without [`Tx::commit`] rolls back; the
/// batch variants belong to a committer, which begins and ends them.
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
    /// A committer's batch on SQLite (rusqlite, on the committer's thread).
    Lite(LiteConn),
    /// A committer's batch on PostgreSQL (its own connection; BEGIN/COMMIT by the committer),
    /// with the batch's unit of work (`work.rs`).
    PgBatch(Box<PgBatch>),
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
    Lite(&'a mut LiteConn),
}

/// Anything a statement can run on: a transaction or a plain connection.
pub trait Handle: Send {
    fn raw(&mut self) -> Raw<'_>;
    fn dialect(&self) -> Dialect;
    /// Before a statement: a PostgreSQL committer batch writes what its commands left for the
    /// flush and opens the command's savepoint (`work.rs`). Nothing to do anywhere else.
    fn settle(&mut self) -> impl std::future::Future<Output = Result<(), sqlx::Error>> + Send {
        std::future::ready(Ok(()))
    }
}

impl Handle for Tx {
    fn raw(&mut self) -> Raw<'_> {
        match self {
            Tx::Sqlite(tx) => Raw::Sqlite(tx),
            Tx::Postgres(tx) => Raw::Postgres(tx),
            Tx::Lite(c) => Raw::Lite(c),
            Tx::PgBatch(b) => Raw::Postgres(&mut b.conn),
        }
    }
    fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(_) | Tx::Lite(_) => Dialect::Sqlite,
            Tx::Postgres(_) | Tx::PgBatch(_) => Dialect::Postgres,
        }
    }
    async fn settle(&mut self) -> Result<(), sqlx::Error> {
        match self {
            Tx::PgBatch(b) => b.settle().await,
            _ => Ok(()),
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
            Tx::Lite(mut c) => c.batch("COMMIT"),
            Tx::PgBatch(mut b) => b.commit().await,
        }
    }

    /// Open the savepoint nested in a command around an idempotent operation, so that a
    /// rejection can be undone while the key's stored answer is kept.
    pub async fn nested_savepoint(&mut self) -> Result<(), sqlx::Error> {
        self.settle().await?;
        self.raw_batch("SAVEPOINT op").await
    }

    /// Keep the nested operation's work.
    pub async fn release_nested(&mut self) -> Result<(), sqlx::Error> {
        self.raw_batch("RELEASE SAVEPOINT op").await
    }

    /// Undo the nested operation's work (one round trip).
    pub async fn undo_nested(&mut self) -> Result<(), sqlx::Error> {
        self.raw_batch("ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op")
            .await?;
        if let Tx::PgBatch(b) = self {
            b.undo_nested();
        }
        Ok(())
    }

    /// Committer: a command starts. SQLite opens its savepoint with `prologue` (which also
    /// ends the previous command's, in the same call); a PostgreSQL batch opens it lazily.
    pub(crate) async fn begin_command(
        &mut self,
        prologue: &'static str,
    ) -> Result<(), sqlx::Error> {
        match self {
            Tx::PgBatch(b) => {
                b.begin_command();
                Ok(())
            }
            _ => self.raw_batch(prologue).await,
        }
    }

    /// Committer: the command ended (`ok`: it keeps its work).
    pub(crate) fn end_command(&mut self, ok: bool) {
        if let Tx::PgBatch(b) = self {
            b.end_command(ok);
        }
    }

    /// Committer: end the batch's transaction; `epilogue` ends the last command's savepoint
    /// and commits on SQLite.
    pub(crate) async fn end_batch(&mut self, epilogue: &'static str) -> Result<(), sqlx::Error> {
        match self {
            Tx::PgBatch(b) => b.commit().await,
            _ => self.raw_batch(epilogue).await,
        }
    }

    /// Committer only: statements without parameters, several at once (one round trip on
    /// PostgreSQL's simple protocol): BEGIN, savepoints, COMMIT, ROLLBACK.
    pub(crate) async fn raw_batch(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        match self {
            Tx::Lite(c) => c.batch(sql),
            Tx::PgBatch(b) => sqlx::raw_sql(sql).execute(&mut b.conn).await.map(|_| ()),
            Tx::Sqlite(tx) => sqlx::raw_sql(sql).execute(&mut **tx).await.map(|_| ()),
            Tx::Postgres(tx) => sqlx::raw_sql(sql).execute(&mut **tx).await.map(|_| ()),
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
            .connect_with(connect.clone())
            .await?;
        let committer =
            Committer::start(Target::Postgres(Box::new(connect)), options.commit.clone())?;
        Ok(Db {
            pools: Pools::Postgres(pool),
            committer,
        })
    }

    pub async fn connect_sqlite(
        connect: SqliteConnectOptions,
        options: &DbOptions,
    ) -> anyhow::Result<Db> {
        lite::configure_library();
        // The committer writes through a connection of its own: it and the read pool must
        // open the same file.
        let file = connect.get_filename().to_string_lossy();
        if file.is_empty() || file.contains(":memory:") || file.contains("in-memory") {
            anyhow::bail!(
                "an in-memory SQLite database cannot be shared by the committer and the readers: \
                 give a file path (sqlite://PATH)"
            );
        }
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
            .connect_with(connect.clone().read_only(true))
            .await?;
        let target = Target::Sqlite {
            path: connect.get_filename().to_path_buf(),
            durable: options.sqlite_durable,
        };
        let committer = Committer::start(target, options.commit.clone())?;
        Ok(Db {
            pools: Pools::Sqlite { write, read },
            committer,
        })
    }

    pub fn dialect(&self) -> Dialect {
        match self.pools {
            Pools::Sqlite { .. } => Dialect::Sqlite,
            Pools::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Run a write command through the committer (group commit): it shares one transaction
    /// with other requests' commands, isolated by a savepoint, and this returns only after
    /// that transaction committed. `locks` declares the rows it will lock (PostgreSQL locks a
    /// batch's rows in one global order); see [`committer`].
    pub async fn write<T, E, F>(&self, locks: Locks, op: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut Tx) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: CommandError + Send + 'static,
    {
        let command: Command<T, E> = Box::new(move |tx: &mut Tx| Box::pin(op(tx)));
        self.committer.submit(locks, command).await
    }

    /// Hand the outbox events that commands write from now on to this process's relay once
    /// committed (see [`committer::Handoff`]).
    pub fn set_handoff(&self, handoff: std::sync::Arc<committer::Handoff>) {
        self.committer.set_handoff(handoff);
    }

    /// Stop handing events to `handoff` (the relay is stopping).
    pub fn clear_handoff(&self, handoff: &std::sync::Arc<committer::Handoff>) {
        self.committer.clear_handoff(handoff);
    }

    /// Apply this backend's migrations (`migrations/sqlite` or `migrations/postgres`).
    /// On PostgreSQL the migrator holds an advisory lock, so instances starting together are safe.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match &self.pools {
            Pools::Sqlite { write, .. } => sqlx::migrate!("./migrations/sqlite").run(write).await?,
            Pools::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// Begin a transaction of its own, outside the committer: for maintenance jobs that run
    /// long or take their own locks (ranking aggregation, seeding, first-start bootstrap).
    /// Request writes use [`Db::write`]. SQLite takes the write lock up front
    /// (`BEGIN IMMEDIATE`) so a transaction never fails half-way on lock upgrade.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match &self.pools {
            Pools::Sqlite { write, .. } => {
                Ok(Tx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?))
            }
            Pools::Postgres(pool) => Ok(Tx::Postgres(pool.begin().await?)),
        }
    }

    /// A connection for reads that need no transaction.
    pub async fn read(&self) -> Result<Conn, sqlx::Error> {
        match &self.pools {
            Pools::Sqlite { read, .. } => Ok(Conn::Sqlite(read.acquire().await?)),
            Pools::Postgres(pool) => Ok(Conn::Postgres(pool.acquire().await?)),
        }
    }

    /// Readiness probe: a trivial round trip.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.read().await?;
        let _: i64 = crate::sql_scalar!(&mut conn, "SELECT CAST(1 AS BIGINT)")?;
        Ok(())
    }

    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
            Pools::Postgres(pool) => pool.close().await,
        }
    }
}

/// True if the error is a unique-constraint violation (matched by kind: SQLite gives no name).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_in_memory_sqlite_database_is_refused_clearly() {
        let err = Db::connect("sqlite::memory:", &DbOptions::default())
            .await
            .expect_err("refused");
        assert!(format!("{err:#}").contains("file path"), "{err:#}");
    }
}

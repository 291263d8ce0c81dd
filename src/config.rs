//! Settings of SPEC §12: every flag has a `SHOPD_*` environment variable.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::db::{CommitOptions, DbOptions};
use crate::domain::money::BalanceLimits;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Whether an instance runs the background outbox relay (`--relay`). With `off`, the events
/// this instance writes are written unleased, so another instance's relay claims them at once
/// (tests drive delivery themselves with `crate::relay::Relay::deliver_due`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RelayMode {
    /// Deliver events (the default)
    On,
    /// Deliver none from this instance: another instance's relay claims its events
    Off,
}

/// Where the database is and how to pool it (shared by every subcommand).
#[derive(Args, Clone, Debug)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (created if missing) or `postgres://USER@HOST/DB`.
    // The environment value may hold a password: `--help` never prints it.
    #[arg(
        long,
        env = "SHOPD_DATABASE_URL",
        default_value = "sqlite://shopd.db",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Maximum pooled connections (SQLite: readers; writes always use one connection).
    #[arg(long, env = "SHOPD_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// SQLite only: trade durability for speed (`synchronous=NORMAL`: a power loss may lose
    /// the last commits, never corrupt). Default is durable (`synchronous=FULL`).
    #[arg(long, env = "SHOPD_SQLITE_RELAXED_DURABILITY", default_value_t = false)]
    pub sqlite_relaxed_durability: bool,
    /// How long a request waits for a pooled connection before it is answered `503`
    /// (`Retry-After`) instead of queueing without bound.
    #[arg(long, env = "SHOPD_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,
    /// Group commit: most write commands in one transaction.
    #[arg(long, env = "SHOPD_COMMIT_BATCH_MAX", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub commit_batch_max: u32,
    /// Group commit: after the first command arrives, wait this long for more (`0s`: batch
    /// only what is already queued — no added latency).
    #[arg(long, env = "SHOPD_COMMIT_WAIT", default_value = "0s", value_parser = humantime::parse_duration)]
    pub commit_wait: Duration,
    /// Group commit: write commands queued beyond this are answered `503` with `Retry-After`.
    #[arg(long, env = "SHOPD_COMMIT_QUEUE", default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(1..))]
    pub commit_queue: u32,
    /// PostgreSQL: committers (each with its own connection) per instance. A batch costs three
    /// round trips whatever its size (docs/architecture.md), so one committer with large
    /// batches measured best; more split the batches and queue on each other's row locks
    /// (docs/benchmarks.md).
    #[arg(long, env = "SHOPD_PG_COMMITTERS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub pg_committers: u32,
    /// PostgreSQL: most batches a committer has committed that wait for the disk at once. A
    /// batch releases its row locks at its commit and its callers are answered once it is
    /// durable, so the next batches run meanwhile (docs/architecture.md, "Early lock release").
    #[arg(long, env = "SHOPD_PG_COMMITS_IN_FLIGHT", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub pg_commits_in_flight: u32,
    /// Tests only: the statement that waits until a committed PostgreSQL batch is durable
    /// (`None`: the real one). A test makes it wait on a lock it holds, to watch a batch that is
    /// committed and not yet answered.
    #[arg(skip)]
    pub pg_durable_barrier: Option<&'static str>,
    /// SQLite: once the write-ahead log holds this many pages (4 KiB each), the committer
    /// completes a checkpoint between two batches and the log starts over from its beginning.
    /// Bounds the `-wal` file under steady load (≈ 16 MiB at the default).
    #[arg(long, env = "SHOPD_SQLITE_WAL_RESTART_PAGES", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub sqlite_wal_restart_pages: u32,
    /// Tests only: the SQLite WAL syncer takes this lock before each sync; a test holds it to
    /// watch batches that are committed and not yet durable (so not yet answered).
    #[arg(skip)]
    pub sqlite_sync_gate: Option<std::sync::Arc<std::sync::Mutex<()>>>,
}

impl DatabaseSettings {
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            database_url: url.into(),
            db_max_connections: 16,
            sqlite_relaxed_durability: false,
            db_acquire_timeout: Duration::from_secs(5),
            commit_batch_max: 256,
            commit_wait: Duration::ZERO,
            commit_queue: 16_384,
            pg_committers: 1,
            pg_commits_in_flight: 4,
            pg_durable_barrier: None,
            sqlite_wal_restart_pages: 4096,
            sqlite_sync_gate: None,
        }
    }

    pub fn db_options(&self) -> DbOptions {
        DbOptions {
            max_connections: self.db_max_connections,
            sqlite_durable: !self.sqlite_relaxed_durability,
            acquire_timeout: self.db_acquire_timeout,
            commit: CommitOptions {
                batch_max: self.commit_batch_max as usize,
                wait: self.commit_wait,
                queue_capacity: self.commit_queue as usize,
                pg_committers: self.pg_committers as usize,
                pg_in_flight: self.pg_commits_in_flight as usize,
                pg_durable_barrier: self
                    .pg_durable_barrier
                    .unwrap_or(crate::db::committer::DURABLE_BARRIER),
                sqlite_wal_restart_pages: self.sqlite_wal_restart_pages,
                sqlite_sync_gate: self.sqlite_sync_gate.clone(),
            },
        }
    }
}

/// Settings of `shopd serve`.
#[derive(Args, Clone, Debug)]
pub struct Settings {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "SHOPD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    #[command(flatten)]
    pub database: DatabaseSettings,

    /// Admin bearer token(s), comma-separated. Unset: one is generated on first start,
    /// stored hashed, and printed once.
    #[arg(
        long,
        env = "SHOPD_ADMIN_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_token: Vec<String>,

    /// Where order events (paid, cancelled, expired, refunded) are delivered. Unset: events stay PENDING (warned at start).
    #[arg(long, env = "SHOPD_DATA_PLATFORM_URL")]
    pub data_platform_url: Option<String>,

    /// HMAC-SHA256 secret for `shopd-signature`. Unset: events are sent unsigned.
    #[arg(long, env = "SHOPD_DATA_PLATFORM_SECRET", hide_env_values = true)]
    pub data_platform_secret: Option<String>,

    /// Delivery attempts before an event is DEAD.
    #[arg(long, env = "SHOPD_OUTBOX_MAX_ATTEMPTS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub outbox_max_attempts: u32,

    /// First retry delay; doubles per failed attempt (with jitter).
    #[arg(long, env = "SHOPD_OUTBOX_BACKOFF_BASE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub outbox_backoff_base: Duration,

    /// Longest retry delay.
    #[arg(long, env = "SHOPD_OUTBOX_BACKOFF_MAX", default_value = "5m", value_parser = humantime::parse_duration)]
    pub outbox_backoff_max: Duration,

    /// How often the relay sweeps for events it was not woken for (crash, restart, other instances).
    #[arg(long, env = "SHOPD_OUTBOX_SWEEP_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub outbox_sweep_interval: Duration,

    /// Timeout of one delivery request.
    #[arg(long, env = "SHOPD_DATA_PLATFORM_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub data_platform_timeout: Duration,

    /// Most deliveries in flight to the data platform at once (per instance). Connections are
    /// kept alive and reused, so this is also about how many the relay opens.
    #[arg(long, env = "SHOPD_RELAY_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub relay_concurrency: u32,

    /// `off`: this instance runs no outbox relay; its events are left for another instance's
    /// relay to claim (an API-only instance).
    #[arg(long, env = "SHOPD_RELAY", value_enum, default_value = "on")]
    pub relay: RelayMode,

    /// How long an unpaid order holds its stock and coupon.
    #[arg(long, env = "SHOPD_RESERVATION_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub reservation_ttl: Duration,

    /// Largest balance a member may hold (minor units).
    #[arg(long, env = "SHOPD_MAX_BALANCE", default_value_t = 10_000_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_balance: i64,

    /// Largest single charge (minor units).
    #[arg(long, env = "SHOPD_MAX_CHARGE", default_value_t = 1_000_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_charge: i64,

    /// How often the best-seller aggregation runs.
    #[arg(long, env = "SHOPD_RANKING_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub ranking_interval: Duration,

    /// Log format.
    #[arg(long, env = "SHOPD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Largest accepted request body in bytes (larger: 413 PAYLOAD_TOO_LARGE).
    #[arg(long, env = "SHOPD_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,

    /// Requests running longer are answered 503 REQUEST_TIMEOUT and rolled back.
    #[arg(long, env = "SHOPD_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// How often the expiry sweeper and the idempotency-key janitor run.
    #[arg(long, env = "SHOPD_SWEEP_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,
}

impl Settings {
    /// Defaults for a database URL, as if no flag were given (used by tests and tools).
    pub fn for_database(url: impl Into<String>) -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            database: DatabaseSettings::with_url(url),
            admin_token: Vec::new(),
            data_platform_url: None,
            data_platform_secret: None,
            outbox_max_attempts: 20,
            outbox_backoff_base: Duration::from_secs(1),
            outbox_backoff_max: Duration::from_secs(300),
            outbox_sweep_interval: Duration::from_secs(10),
            data_platform_timeout: Duration::from_secs(10),
            relay_concurrency: 16,
            relay: RelayMode::On,
            reservation_ttl: Duration::from_secs(15 * 60),
            max_balance: 10_000_000,
            max_charge: 1_000_000,
            ranking_interval: Duration::from_secs(60),
            log_format: LogFormat::Text,
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(5),
        }
    }

    pub fn balance_limits(&self) -> BalanceLimits {
        BalanceLimits {
            max_balance: self.max_balance,
            max_charge: self.max_charge,
        }
    }
}

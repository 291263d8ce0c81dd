//! Command line: `serve`, `migrate`, `seed-demo`, `rank`, `mock-platform`, `explain-admin-lists`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::app::Application;
use crate::config::{DatabaseSettings, LogFormat, RelayMode, Settings};
use crate::db::Db;

#[derive(Parser, Debug)]
#[command(name = "shopd", version, about = "Commerce order and payment service")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP service (migrations run on start).
    Serve(Box<Settings>),
    /// Apply database migrations and exit.
    Migrate(DatabaseSettings),
    /// Fill a demo catalogue and members, printing their tokens.
    SeedDemo(DatabaseSettings),
    /// Run the best-seller aggregation once and print the current top 5 over 3 days.
    Rank(RankArgs),
    /// Run a stand-in data platform that receives shopd's events (any type) and reports them.
    MockPlatform(MockPlatformArgs),
    /// Print the query plans of the back office's list statements on this database, with
    /// sample values (bench/admin-lists.sh runs it on a seeded database; PostgreSQL runs each
    /// statement: read-only, but a load on a busy production database).
    ExplainAdminLists(DatabaseSettings),
}

#[derive(clap::Args, Debug)]
pub struct RankArgs {
    #[command(flatten)]
    pub database: DatabaseSettings,
    /// Rebuild the last 31 days of aggregates from the orders (after correcting order data by
    /// hand), not only add the payments not counted yet.
    #[arg(long)]
    pub full: bool,
}

#[derive(clap::Args, Debug)]
pub struct MockPlatformArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: String,
    /// Verify `shopd-signature` with this secret.
    #[arg(long)]
    pub secret: Option<String>,
    /// Fraction of deliveries to fail on purpose with 503 (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Delay before answering each delivery (humantime, e.g. 200ms).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub delay: std::time::Duration,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(settings) => serve(*settings).await,
        Command::Migrate(db) => {
            init_logging(LogFormat::Text);
            let db = connect(&db).await?;
            db.migrate().await?;
            println!("migrations applied");
            db.close().await;
            Ok(())
        }
        Command::Rank(args) => {
            init_logging(LogFormat::Text);
            let db = connect(&args.database).await?;
            db.migrate().await?;
            let cache = crate::ranking::RankingCache::default();
            let started = std::time::Instant::now();
            let mut tx = db.begin().await.context("starting the ranking job")?;
            let run = crate::store::ranking::aggregate(
                &mut tx,
                crate::store::now(),
                crate::store::ranking::AggregateOptions {
                    full: args.full,
                    wait_for_lock: true,
                },
            )
            .await
            .map_err(anyhow::Error::new)?;
            tx.commit().await.context("committing the ranking job")?;
            let job = started.elapsed();
            let started = std::time::Instant::now();
            let snapshot = cache.reload(&db).await.map_err(anyhow::Error::new)?;
            let load = started.elapsed();
            match run {
                crate::store::ranking::JobRun::Ran {
                    full: false,
                    counted,
                } => {
                    println!("added {counted} newly PAID orders to the aggregates")
                }
                crate::store::ranking::JobRun::Ran {
                    full: true,
                    counted,
                } => {
                    println!(
                        "rebuilt the aggregates of the last {} days ({counted} recent orders counted one by one)",
                        crate::store::ranking::MAX_DAYS + 1
                    )
                }
                crate::store::ranking::JobRun::Skipped => {
                    println!("another instance is running the job; showing its last result")
                }
            }
            println!(
                "job took {:.1} ms, snapshot load {:.1} ms",
                job.as_secs_f64() * 1e3,
                load.as_secs_f64() * 1e3
            );
            println!(
                "best-sellers over 3 days, as of {}:",
                crate::api::format_time(snapshot.as_of)
            );
            for (i, r) in snapshot.top(3, 5).iter().enumerate() {
                println!(
                    "  {}. #{} {} — {} sold, revenue {}",
                    i + 1,
                    r.product_id,
                    r.name,
                    r.sold_quantity,
                    r.revenue
                );
            }
            db.close().await;
            Ok(())
        }
        Command::ExplainAdminLists(db) => {
            init_logging(LogFormat::Text);
            let db = connect(&db).await?;
            let mut conn = db.read().await.context("connecting to explain")?;
            let plans = crate::store::list_plans::explain_lists(&mut conn)
                .await
                .map_err(anyhow::Error::new)?;
            for plan in plans {
                println!("-- plan: {}", plan.title);
                for line in plan.lines {
                    println!("{line}");
                }
            }
            drop(conn);
            db.close().await;
            Ok(())
        }
        Command::MockPlatform(args) => {
            init_logging(LogFormat::Text);
            if !(0.0..=1.0).contains(&args.fail_rate) {
                anyhow::bail!("--fail-rate must be between 0 and 1");
            }
            let config = crate::mock_platform::MockConfig {
                secret: args.secret,
                fail_rate: args.fail_rate,
                delay: args.delay,
            };
            let addr = tokio::net::lookup_host(&args.listen)
                .await?
                .next()
                .with_context(|| format!("--listen {}: no address", args.listen))?;
            let listener = crate::mock_platform::bind(addr)?;
            println!(
                "mock data platform listening on http://{}/events",
                listener.local_addr()?
            );
            let shutdown = tokio_util::sync::CancellationToken::new();
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                on_signal.cancel();
            });
            crate::mock_platform::MockPlatform::new(config)
                .serve(listener, shutdown)
                .await?;
            Ok(())
        }
        Command::SeedDemo(db) => {
            init_logging(LogFormat::Text);
            let db = connect(&db).await?;
            db.migrate().await?;
            let report = crate::seed::seed_demo(&db).await?;
            print!("{report}");
            db.close().await;
            Ok(())
        }
    }
}

async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Db> {
    Db::connect(&settings.database_url, &settings.db_options()).await
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    init_logging(settings.log_format);
    let app = Application::build(settings.clone()).await?;
    if let Some(token) = app.generated_admin_token() {
        // The token goes to stdout, never into the log stream (stderr): log collectors do not
        // keep a secret, and `--log-format json` stays pure JSON.
        tracing::warn!("generated an admin token on this first start: printed once on stdout");
        println!("Admin token (shown once, stored hashed; keep it): {token}");
    }
    if settings.relay == RelayMode::Off {
        tracing::info!(
            "--relay off: this instance delivers no order events; another instance's relay claims them"
        );
    } else if settings.data_platform_url.is_none() {
        tracing::warn!("no --data-platform-url: order events will stay PENDING in the outbox");
    }
    log_startup(&settings, &app);
    app.run_until_stopped().await
}

/// One line with everything an operator needs to know about this instance (no secrets).
fn log_startup(s: &Settings, app: &Application) {
    let db = s.database.db_options();
    let pool = match app.state().db.dialect() {
        crate::db::Dialect::Sqlite => {
            format!("sqlite: 1 writer + {} readers", db.max_connections.max(1))
        }
        crate::db::Dialect::Postgres => format!("postgres: {} connections", db.max_connections),
    };
    let duration = |d: std::time::Duration| humantime::format_duration(d).to_string();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %app.local_addr().map_or_else(|| s.listen.clone(), |a| a.to_string()),
        database = %redact(&s.database.database_url),
        pool = %pool,
        data_platform_url = %s.data_platform_url.as_deref().map_or_else(|| "(none)".into(), redact),
        signing = if s.data_platform_secret.is_some() { "on" } else { "off" },
        admin_tokens = if s.admin_token.is_empty() { "stored" } else { "configured" },
        reservation_ttl = %duration(s.reservation_ttl),
        sweep_interval = %duration(s.sweep_interval),
        ranking_interval = %duration(s.ranking_interval),
        outbox_sweep_interval = %duration(s.outbox_sweep_interval),
        outbox_max_attempts = s.outbox_max_attempts,
        outbox_backoff = %format!("{}..{}", duration(s.outbox_backoff_base), duration(s.outbox_backoff_max)),
        data_platform_timeout = %duration(s.data_platform_timeout),
        relay = ?s.relay,
        request_timeout = %duration(s.request_timeout),
        body_limit = s.body_limit,
        max_balance = s.max_balance,
        max_charge = s.max_charge,
        "shopd listening"
    );
}

/// Hide a password in a database URL before logging it.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***{}", &url[..scheme], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Logs go to stderr (stdout is for command output, such as the generated admin token), in
/// colour only when stderr is a terminal: a log redirected to a file has no escape codes.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Ignore "already set" (tests may build several apps in one process).
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://shopd.db"), "sqlite://shopd.db");
    }

    #[test]
    fn cli_parses_settings_with_defaults() {
        let cli = Cli::try_parse_from(["shopd", "serve", "--reservation-ttl", "30s"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.reservation_ttl, std::time::Duration::from_secs(30));
        assert_eq!(s.max_balance, 10_000_000);
        assert!(Cli::try_parse_from(["shopd", "serve", "--max-charge", "0"]).is_err());
        assert!(Cli::try_parse_from(["shopd", "serve", "--reservation-ttl", "soon"]).is_err());
    }

    #[test]
    fn relay_concurrency_defaults_to_16_and_is_bounded() {
        let parse = |args: &[&str]| {
            let mut all = vec!["shopd", "serve"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map(|cli| match cli.command {
                Command::Serve(s) => s.relay_concurrency,
                _ => 0,
            })
        };
        assert_eq!(parse(&[]).ok(), Some(16));
        assert_eq!(
            Settings::for_database("sqlite://x.db").relay_concurrency,
            16,
            "the programmatic defaults match the flags'"
        );
        assert_eq!(parse(&["--relay-concurrency", "4"]).ok(), Some(4));
        assert!(parse(&["--relay-concurrency", "0"]).is_err());
        assert!(parse(&["--relay-concurrency", "100000"]).is_err());
    }

    #[test]
    fn the_relay_is_on_unless_turned_off() {
        let parse = |args: &[&str]| {
            let mut all = vec!["shopd", "serve"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map(|cli| match cli.command {
                Command::Serve(s) => Some(s.relay),
                _ => None,
            })
        };
        assert_eq!(parse(&[]).ok(), Some(Some(RelayMode::On)));
        assert_eq!(
            Settings::for_database("sqlite://x.db").relay,
            RelayMode::On,
            "the programmatic default matches the flag's"
        );
        assert_eq!(parse(&["--relay", "off"]).ok(), Some(Some(RelayMode::Off)));
        assert_eq!(parse(&["--relay", "on"]).ok(), Some(Some(RelayMode::On)));
        assert!(parse(&["--relay", "maybe"]).is_err());
    }
}

//! Test harness: spawn the real application on port 0 against a fresh database.
//!
//! SQLite: a new file in a temp dir. PostgreSQL: a new schema on the server named by
//! `SHOPD_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`). An
//! unreachable server FAILS every PostgreSQL test, with a message saying how to run or skip them,
//! unless `SHOPD_TEST_SKIP_POSTGRES=1` is set (and `SHOPD_TEST_POSTGRES_URL` is not): only that
//! explicit opt-out skips them, and the skip is written to the uncaptured stderr.

use std::str::FromStr;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shopd::config::Settings;
use shopd::db::{Db, DbOptions};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

pub const ADMIN_TOKEN: &str = "test-admin-token";
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each listed `async fn name(backend: Backend)` once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

enum Storage {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres {
        base_url: String,
        schema: String,
    },
    /// A second instance on another app's database: the owner cleans up.
    Shared,
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: Db,
    pub settings: Settings,
    /// The server's in-memory best-seller snapshot (to count its loads).
    pub ranking: shopd::ranking::RankingCache,
    /// The server's state, to run its background jobs directly (`None` for an external server).
    pub state: Option<shopd::AppState>,
    storage: Storage,
    /// Stops this harness's server (as SIGTERM would) and waits for it: run on drop, before
    /// the database is removed, so no worker is still using it.
    server: Option<RunningServer>,
}

struct RunningServer {
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// `TEST_LOG=1` (or a filter such as `TEST_LOG=shopd=debug`) shows the servers' tracing
/// output in the test's output; silent otherwise.
fn init_test_log() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let Ok(filter) = std::env::var("TEST_LOG") else {
            return;
        };
        let filter = if filter == "1" {
            "info".to_string()
        } else {
            filter
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

fn postgres_url() -> (String, bool) {
    match std::env::var("SHOPD_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => (url, true),
        _ => (DEFAULT_PG_URL.to_string(), false),
    }
}

/// Whether the optional (default-URL) server accepts TCP connections, probed once per process
/// with a short timeout (the pool would retry for 30 s in every test before giving up).
fn optional_postgres_listening(base_url: &str) -> Result<(), String> {
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| {
            use std::net::ToSocketAddrs;
            let options = PgConnectOptions::from_str(base_url).map_err(|e| e.to_string())?;
            let addr = (options.get_host(), options.get_port())
                .to_socket_addrs()
                .map_err(|e| e.to_string())?
                .next()
                .ok_or("no address")?;
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// The explicit opt-out: `SHOPD_TEST_SKIP_POSTGRES=1` (ignored when a URL is set, as in CI).
fn skip_postgres_allowed() -> bool {
    matches!(
        std::env::var("SHOPD_TEST_SKIP_POSTGRES").as_deref(),
        Ok("1")
    )
}

/// PostgreSQL is unreachable: fail, unless PostgreSQL is optional and explicitly skipped.
fn postgres_unreachable(base_url: &str, required: bool, err: &dyn std::fmt::Display) {
    if required {
        panic!(
            "PostgreSQL required (SHOPD_TEST_POSTGRES_URL) but unreachable at {base_url}: {err}"
        );
    }
    if !skip_postgres_allowed() {
        panic!(
            "PostgreSQL unreachable at {base_url}: {err}\n\
             Every test runs on PostgreSQL too. Start PostgreSQL (or point \
             SHOPD_TEST_POSTGRES_URL at one) to run this test, or set SHOPD_TEST_SKIP_POSTGRES=1 \
             to skip the PostgreSQL variants explicitly."
        );
    }
    announce_skip(&format!("cannot reach {base_url}: {err}"));
}

/// Count the skipped tests and say so on the real stderr (libtest captures `eprintln!`, not
/// direct writes to the stderr handle), so a skip cannot go unnoticed.
fn announce_skip(reason: &str) {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SKIPPED: AtomicUsize = AtomicUsize::new(0);
    let n = SKIPPED.fetch_add(1, Ordering::SeqCst) + 1;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "*** PostgreSQL test SKIPPED (#{n} so far; SHOPD_TEST_SKIP_POSTGRES=1): {reason}"
    );
}

impl TestApp {
    /// A fresh app with default settings. `None` only when PostgreSQL is optional and absent.
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// A fresh app with adjusted settings.
    pub async fn spawn_with(
        backend: Backend,
        adjust: impl FnOnce(&mut Settings),
    ) -> Option<TestApp> {
        init_test_log();
        let mut settings = Settings::for_database("(test)");
        settings.admin_token = vec![ADMIN_TOKEN.to_string()];
        // The service runs one PostgreSQL committer by default; tests run two, so that batches
        // of one instance also race each other for rows (lock order, deadlock retries).
        settings.database.pg_committers = 2;
        adjust(&mut settings);
        let options = settings.database.db_options();
        let (db, storage) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let connect = SqliteConnectOptions::new().filename(dir.path().join("shopd.db"));
                let db = Db::connect_sqlite(connect, &options)
                    .await
                    .expect("open sqlite");
                (db, Storage::Sqlite(dir))
            }
            Backend::Postgres => {
                let (base_url, required) = postgres_url();
                let schema = format!("shopd_test_{}", uuid::Uuid::new_v4().simple());
                if !required && let Err(err) = optional_postgres_listening(&base_url) {
                    postgres_unreachable(&base_url, required, &err);
                    return None;
                }
                let admin = match sqlx::PgPool::connect(&base_url).await {
                    Ok(pool) => pool,
                    Err(err) => {
                        postgres_unreachable(&base_url, required, &err);
                        return None;
                    }
                };
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&admin)
                    .await
                    .expect("create schema");
                ensure_pg_trgm(&admin).await;
                admin.close().await;
                let db = connect_pg_schema(&base_url, &schema, options).await;
                (db, Storage::Postgres { base_url, schema })
            }
        };
        db.migrate().await.expect("migrate");
        let (address, state, server) = Self::start(settings.clone(), db.clone()).await;
        Some(TestApp {
            address,
            client: reqwest::Client::new(),
            db,
            settings,
            ranking: state.ranking.clone(),
            state: Some(state),
            storage,
            server: Some(server),
        })
    }

    async fn start(settings: Settings, db: Db) -> (String, shopd::AppState, RunningServer) {
        let app = shopd::Application::build_with_db(settings, db)
            .await
            .expect("build app");
        let address = format!("http://127.0.0.1:{}", app.port());
        let state = app.state().clone();
        let shutdown = app.shutdown_token();
        let task = tokio::spawn(app.run_until_stopped());
        (address, state, RunningServer { shutdown, task })
    }

    /// The database file of a SQLite app (`None` on PostgreSQL or for a second instance).
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        match &self.storage {
            Storage::Sqlite(dir) => Some(dir.path().join("shopd.db")),
            _ => None,
        }
    }

    /// This server's state (for running its sweeper or relay directly).
    pub fn state(&self) -> &shopd::AppState {
        self.state.as_ref().expect("a server this harness started")
    }

    /// A relay of this server, for the test to run passes of itself
    /// ([`shopd::relay::Relay::deliver_due`]: claim what is due, send, record, report). Spawn
    /// the app with `relay = RelayMode::Off`, so no background relay delivers beside the test.
    pub fn relay(&self) -> shopd::relay::Relay {
        shopd::relay::Relay::new(self.state().clone())
            .expect("a relay for these settings")
            .expect("a data platform URL is configured")
    }

    /// Another server instance on the same database (multi-instance races).
    pub async fn second_instance(&self) -> TestApp {
        self.instance_with(|_| {}).await
    }

    /// Another server instance on the same database, with adjusted settings (a restart with a
    /// new configuration, or a differently configured peer).
    pub async fn instance_with(&self, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.settings.clone();
        adjust(&mut settings);
        let db = match &self.storage {
            Storage::Postgres { base_url, schema } => {
                connect_pg_schema(base_url, schema, settings.database.db_options()).await
            }
            Storage::Sqlite(_) | Storage::Shared => self.db.clone(),
        };
        let (address, state, server) = Self::start(settings.clone(), db.clone()).await;
        TestApp {
            address,
            client: reqwest::Client::new(),
            db,
            settings,
            ranking: state.ranking.clone(),
            state: Some(state),
            storage: Storage::Shared,
            server: Some(server),
        }
    }

    /// A handle on a server this harness did not start (a child process), for the HTTP
    /// helpers and the invariant checks; the caller owns the database.
    pub fn external(address: String, db: Db, settings: Settings) -> TestApp {
        TestApp {
            address,
            client: reqwest::Client::new(),
            db,
            settings,
            storage: Storage::Shared,
            // Not this process's server: its snapshot and state live in the child.
            ranking: shopd::ranking::RankingCache::default(),
            state: None,
            server: None,
        }
    }

    /// The PostgreSQL server the suite uses, or `None` (announced) when it is unreachable and
    /// explicitly skipped (`SHOPD_TEST_SKIP_POSTGRES=1`); otherwise unreachable fails.
    pub async fn postgres_admin() -> Option<(sqlx::PgPool, String)> {
        let (base_url, required) = postgres_url();
        if !required && let Err(err) = optional_postgres_listening(&base_url) {
            postgres_unreachable(&base_url, required, &err);
            return None;
        }
        match sqlx::PgPool::connect(&base_url).await {
            Ok(pool) => Some((pool, base_url)),
            Err(err) => {
                postgres_unreachable(&base_url, required, &err);
                None
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(key) = idempotency_key {
            req = req.header("idempotency-key", key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let response = req.send().await.expect("request sent");
        let status = response.status();
        assert!(
            response.headers().contains_key("x-request-id"),
            "every response carries x-request-id"
        );
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(reqwest::Method::GET, path, token, None, None)
            .await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(reqwest::Method::POST, path, token, Some(&body), None)
            .await
    }

    pub async fn post_idem(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
        key: &str,
    ) -> (StatusCode, Value) {
        self.request(reqwest::Method::POST, path, token, Some(&body), Some(key))
            .await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(reqwest::Method::PATCH, path, token, Some(&body), None)
            .await
    }

    /// Sign up a member; returns (id, token).
    pub async fn member(&self, name: &str) -> (i64, String) {
        let (status, body) = self.post("/users", None, json!({ "name": name })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["id"].as_i64().expect("id"),
            body["token"].as_str().expect("token").to_string(),
        )
    }

    /// Create a product as admin; returns its id.
    pub async fn product(&self, name: &str, price: i64, stock: i64) -> i64 {
        let (status, body) = self
            .post(
                "/admin/products",
                Some(ADMIN_TOKEN),
                json!({ "name": name, "price": price, "stock": stock }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().expect("id")
    }

    pub async fn charge(&self, user_id: i64, token: &str, amount: i64) -> (StatusCode, Value) {
        self.post(
            &format!("/users/{user_id}/balance/charge"),
            Some(token),
            json!({ "amount": amount }),
        )
        .await
    }
}

async fn connect_pg_schema(base_url: &str, schema: &str, options: DbOptions) -> Db {
    let connect = PgConnectOptions::from_str(base_url)
        .expect("pg url")
        .options([("search_path", schema)]);
    Db::connect_postgres(connect, &options)
        .await
        .expect("connect pg")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop the server first: no request, relay, sweeper or ranking job may still run
        // against a schema being dropped (they used to deadlock with DROP SCHEMA).
        let stopping = self.server.take().map(|server| {
            server.shutdown.cancel();
            server.task
        });
        // Waiting needs another runtime thread to drive the server (all tests here run on the
        // multi-threaded runtime; on a current-thread one, only cancel).
        let can_wait = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let waited = stopping.filter(|_| can_wait).map(|task| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !task.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            task.is_finished()
        });
        if let Storage::Postgres { base_url, schema } = &self.storage {
            let (base_url, schema) = (base_url.clone(), schema.clone());
            if waited == Some(false) {
                announce_slow_stop(&schema);
            }
            // Drop runs inside the test's runtime: clean up from a separate thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let pool = sqlx::PgPool::connect(&base_url).await.ok()?;
                    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                    // A second instance's server may still be stopping: retry a lock conflict.
                    for _ in 0..5 {
                        match sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                            .execute(&pool)
                            .await
                        {
                            Ok(_) => break,
                            Err(_) => {
                                tokio::time::sleep(std::time::Duration::from_millis(200)).await
                            }
                        }
                    }
                    pool.close().await;
                    Some(())
                })
            })
            .join();
        }
    }
}

/// A server that did not stop within 10 s of its shutdown: say so (its schema is dropped
/// anyway), since graceful shutdown is supposed to be quick.
fn announce_slow_stop(schema: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "*** test server on schema {schema} did not stop within 10 s of its shutdown"
    );
}

/// The error code of an error body.
pub fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or("<no code>")
}

impl TestApp {
    /// Many members at once (setup for races): inserted in one transaction, tokens returned.
    pub async fn members_bulk(&self, n: usize) -> Vec<(i64, String)> {
        let now = shopd::store::now();
        let mut tx = self.db.begin().await.expect("begin");
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let token = shopd::auth::generate_token("shp_");
            let hash = shopd::auth::hash_token(&token);
            let name = format!("member-{i}");
            let cmd = shopd::store::users::CreateUser {
                name: &name,
                token_hash: &hash,
                now,
            };
            let user = shopd::store::users::create_user(&mut tx, cmd)
                .await
                .expect("create member");
            members.push((user.id, token));
        }
        tx.commit().await.expect("commit");
        members
    }

    /// Create a coupon campaign open now; returns its id.
    pub async fn campaign(
        &self,
        discount: Value,
        min_order_amount: i64,
        total_quantity: i64,
    ) -> i64 {
        let ends = chrono::Utc::now() + chrono::Duration::days(1);
        let (status, body) = self
            .post(
                "/admin/coupons",
                Some(ADMIN_TOKEN),
                json!({
                    "name": "campaign",
                    "discount": discount,
                    "minOrderAmount": min_order_amount,
                    "totalQuantity": total_quantity,
                    "issueEndsAt": ends,
                    "validDays": 7,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().expect("id")
    }

    /// Claim a coupon of campaign `coupon_id` as a member.
    pub async fn issue(&self, coupon_id: i64, token: &str) -> (StatusCode, Value) {
        self.request(
            reqwest::Method::POST,
            &format!("/coupons/{coupon_id}/issue"),
            Some(token),
            None,
            None,
        )
        .await
    }
}

impl TestApp {
    /// Give each member `amount` of balance (setup for races), in one transaction.
    pub async fn fund_bulk(&self, members: &[(i64, String)], amount: i64) {
        let now = shopd::store::now();
        let amount =
            shopd::domain::money::ChargeAmount::parse(amount, &Default::default()).expect("amount");
        let mut tx = self.db.begin().await.expect("begin");
        for (user_id, _) in members {
            let cmd = shopd::store::balance::Charge {
                user_id: *user_id,
                amount,
                max_balance: self.settings.max_balance,
                now,
            };
            shopd::store::balance::charge(&mut tx, cmd)
                .await
                .expect("charge");
        }
        tx.commit().await.expect("commit");
    }

    /// Place an order of `items` ([(productId, quantity)]) with extra fields merged in.
    pub fn order(
        &self,
        token: &str,
        items: &[(i64, i64)],
        extra: Value,
    ) -> impl Future<Output = (StatusCode, Value)> + use<'_> {
        let mut body = json!({
            "items": items.iter().map(|(p, q)| json!({ "productId": p, "quantity": q })).collect::<Vec<_>>(),
        });
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let token = token.to_string();
        async move { self.post("/orders", Some(&token), body).await }
    }

    pub async fn stock_of(&self, product_id: i64) -> i64 {
        let (_, body) = self
            .get(&format!("/products/{product_id}"), Some(ADMIN_TOKEN))
            .await;
        body["stock"].as_i64().expect("stock")
    }

    pub async fn balance_of(&self, user_id: i64) -> i64 {
        let (_, body) = self
            .get(&format!("/users/{user_id}/balance"), Some(ADMIN_TOKEN))
            .await;
        body["balance"].as_i64().expect("balance")
    }
}

/// A mock data platform on a free port; returns it and its delivery URL.
pub async fn mock_platform(
    config: shopd::mock_platform::MockConfig,
) -> (shopd::mock_platform::MockPlatform, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/events", listener.local_addr().expect("addr"));
    let platform = shopd::mock_platform::MockPlatform::new(config);
    tokio::spawn(
        platform
            .clone()
            .serve(listener, tokio_util::sync::CancellationToken::new()),
    );
    (platform, url)
}

/// Poll `check` every 20 ms until it holds or `seconds` pass; returns whether it held.
pub async fn eventually<F, Fut>(seconds: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// Install pg_trgm (migration 0011) into `public` before a test schema's migrations run: left
/// to the migration, it would land in the first test schema, and dropping that schema would
/// take the extension, and every other schema's trigram index, with it. Tests create it at the
/// same time: losing that race is fine once the extension is there.
pub async fn ensure_pg_trgm(admin: &sqlx::PgPool) {
    let created = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
        .execute(admin)
        .await;
    if let Err(err) = created {
        let there: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
                .fetch_optional(admin)
                .await
                .expect("pg_extension");
        assert!(there.is_some(), "CREATE EXTENSION pg_trgm: {err}");
    }
}

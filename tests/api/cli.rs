//! Operating the binary (issue #12): `--help` keeps secrets, start-up failures name what
//! failed and fail fast, logs are plain when redirected, and the start-up line says how this
//! instance is configured.

use std::process::Stdio;
use std::time::{Duration, Instant};

use shopd::db::{Db, DbOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    serve_logs_its_configuration_plainly_and_keeps_the_token_off_the_log,
    address_in_use_names_the_address,
    seed_demo_fills_an_empty_database_once,
);

const SHOPD: &str = env!("CARGO_BIN_EXE_shopd");

#[tokio::test]
async fn serve_help_hides_secret_environment_values() {
    let output = tokio::process::Command::new(SHOPD)
        .args(["serve", "--help"])
        .env("SHOPD_ADMIN_TOKEN", "supersecret-admin")
        .env("SHOPD_DATA_PLATFORM_SECRET", "whsec_supersecret")
        .env("SHOPD_DATABASE_URL", "postgres://u:dbsupersecret@h/db")
        .output()
        .await
        .expect("run shopd");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("SHOPD_ADMIN_TOKEN"), "{help}");
    assert!(!help.contains("supersecret"), "{help}");
}

#[tokio::test]
async fn an_unreachable_postgres_fails_fast_naming_the_server() {
    // Nothing listens there: refused at once.
    let started = Instant::now();
    let err = Db::connect("postgres://postgres@127.0.0.1:1/x", &DbOptions::default())
        .await
        .expect_err("no server");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err:#}");
    assert!(format!("{err:#}").contains("refused"), "{err:#}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A server that accepts but never answers: given up after the first-connection timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let err = Db::connect(
        &format!("postgres://postgres@127.0.0.1:{port}/x"),
        &DbOptions::default(),
    )
    .await
    .expect_err("silent server");
    let elapsed = started.elapsed();
    hold.abort();
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err:#}"
    );
    assert!(err.to_string().contains("no answer within 5s"), "{err:#}");
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
}

#[tokio::test]
async fn a_bad_sqlite_path_is_named() {
    let err = Db::connect(
        "sqlite:///no/such/directory/shopd.db",
        &DbOptions::default(),
    )
    .await
    .expect_err("bad path");
    assert!(
        err.to_string().contains("/no/such/directory/shopd.db"),
        "{err:#}"
    );
}

async fn address_in_use_names_the_address(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let taken = app.address.trim_start_matches("http://").to_string();
    let mut settings = app.settings.clone();
    settings.listen = taken.clone();
    let Err(err) = shopd::Application::build_with_db(settings, app.db.clone()).await else {
        panic!("bound an address in use");
    };
    assert!(err.to_string().contains(&taken), "{err:#}");
    assert!(format!("{err:#}").contains("in use"), "{err:#}");
}

/// The database URL `shopd serve` gets for a fresh database, and a clean-up to run after.
async fn fresh_database_url(
    backend: Backend,
    dir: &std::path::Path,
) -> Option<(String, Option<String>)> {
    match backend {
        Backend::Sqlite => Some((format!("sqlite://{}", dir.join("serve.db").display()), None)),
        Backend::Postgres => {
            // Unreachable fails unless explicitly skipped (SHOPD_TEST_SKIP_POSTGRES=1).
            let (pool, base) = TestApp::postgres_admin().await?;
            let schema = format!("shopd_cli_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&pool)
                .await
                .expect("schema");
            crate::helpers::ensure_pg_trgm(&pool).await;
            pool.close().await;
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
            Some((url, Some(schema)))
        }
    }
}

async fn drop_schema(schema: Option<String>) {
    if let Some(schema) = schema {
        let (pool, _) = TestApp::postgres_admin().await.expect("postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&pool)
            .await
            .expect("drop schema");
        pool.close().await;
    }
}

/// Run `shopd serve` until it logs that it listens; returns (stdout, stderr) so far.
async fn serve_until_listening(url: &str, log_format: &str) -> (String, String) {
    let mut child = tokio::process::Command::new(SHOPD)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            log_format,
        ])
        .args(["--database-url", url])
        .env_remove("SHOPD_ADMIN_TOKEN")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shopd");
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = stderr.next_line().await {
            log.push_str(&line);
            log.push('\n');
            if line.contains("shopd listening") {
                return true;
            }
        }
        false
    })
    .await;
    child.kill().await.expect("stop shopd");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert_eq!(waited, Ok(true), "shopd did not start: {log}");
    (out, log)
}

async fn serve_logs_its_configuration_plainly_and_keeps_the_token_off_the_log(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((url, schema)) = fresh_database_url(backend, dir.path()).await else {
        return;
    };
    // Text: no colour codes in a redirected log; the token on stdout only.
    let (out, log) = serve_until_listening(&url, "text").await;
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a redirected log: {log:?}"
    );
    let token_line = out
        .lines()
        .find(|l| l.starts_with("Admin token"))
        .unwrap_or_else(|| panic!("no admin token on stdout: {out:?}"));
    let token = token_line.rsplit(' ').next().unwrap();
    assert!(token.starts_with("shpa_"), "{token_line}");
    assert!(!log.contains(token), "the token leaked into the log");
    // Stored hashed: the database holds the token's hash, never the token.
    {
        let db = shopd::db::Db::connect(&url, &shopd::db::DbOptions::default())
            .await
            .expect("open the served database");
        let mut conn = db.read().await.expect("connection");
        let stored: String = shopd::sql_scalar!(
            &mut conn,
            "SELECT token_hash FROM admin_tokens WHERE id = 1"
        )
        .expect("the generated admin token is stored");
        assert_eq!(stored, shopd::auth::hash_token(token));
        assert_ne!(stored, token);
        drop(conn);
        db.close().await;
    }
    for field in [
        "version=",
        "listen=127.0.0.1:",
        "pool=",
        "data_platform_url=",
        "signing=",
        "reservation_ttl=",
        "sweep_interval=",
        "ranking_interval=",
    ] {
        assert!(log.contains(field), "start-up line lacks {field}: {log}");
    }

    // JSON: every log line is JSON (the second start generates no token).
    let (out, log) = serve_until_listening(&url, "json").await;
    assert!(!out.contains("Admin token"), "{out}");
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if value["fields"]["message"] == "shopd listening" {
            assert!(value["fields"]["listen"].is_string(), "{line}");
            assert!(value["fields"]["version"].is_string(), "{line}");
        }
    }
    drop_schema(schema).await;
}

async fn seed_demo_fills_an_empty_database_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let report = shopd::seed::seed_demo(&app.db).await.expect("seed");
    let members: Vec<(i64, &str)> = report
        .lines()
        .filter_map(|line| {
            let token = line.split("token ").nth(1)?;
            let id = line
                .trim()
                .strip_prefix('#')?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            Some((id, token))
        })
        .collect();
    assert_eq!(members.len(), 3, "{report}");
    for (id, token) in &members {
        let (status, body) = app.get(&format!("/users/{id}/balance"), Some(token)).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        assert!(body["balance"].as_i64().unwrap() > 0, "member {id}: {body}");
    }
    let (_, products) = app.get("/products", None).await;
    let product_count = products["items"].as_array().unwrap().len();
    assert!(product_count >= 5, "{products}");
    let (_, campaigns) = app.get("/coupons", None).await;
    assert!(
        !campaigns["items"].as_array().unwrap().is_empty(),
        "{campaigns}"
    );

    // A second run is refused and changes nothing.
    let err = shopd::seed::seed_demo(&app.db)
        .await
        .expect_err("second run");
    assert!(err.to_string().contains("empty database"), "{err:#}");
    let (_, again) = app.get("/products", None).await;
    assert_eq!(again["items"].as_array().unwrap().len(), product_count);
    let (status, _) = app
        .get(&format!("/users/{}", members[2].0 + 1), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "no fourth member");
}

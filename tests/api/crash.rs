//! SIGKILL in the middle of group-committed batches (SPEC §9, §13): after a restart no answered
//! request is lost, nothing unanswered is half-applied, no idempotency key is left behind
//! without its effect, and every retry with the same key takes effect exactly once.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shopd::config::Settings;
use shopd::db::{Db, DbOptions};
use shopd::sql_scalar;

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp};
use crate::invariants::assert_invariants;
use crate::on_both_backends;

const SHOPD: &str = env!("CARGO_BIN_EXE_shopd");
const ORDERS: usize = 300;
const MEMBERS: usize = 20;

on_both_backends!(
    a_kill_mid_batch_loses_no_answer_and_half_applies_nothing,
    sigterm_finishes_in_flight_requests_then_exits,
);

/// SIGTERM (SPEC §12): the server stops accepting, answers what it has in flight, and exits 0.
/// A one-second commit wait keeps a write in flight when the signal arrives.
async fn sigterm_finishes_in_flight_requests_then_exits(backend: Backend) {
    let scratch = tempfile::tempdir().expect("temp dir");
    let Some((url, pg)) = scratch_database(backend, scratch.path()).await else {
        return;
    };
    let mut server = start_with(&url, &["--commit-wait", "1s"]).await;
    let client = reqwest::Client::new();
    let in_flight = tokio::spawn({
        let url = format!("{}/users", server.address);
        let client = client.clone();
        async move {
            client
                .post(url)
                .json(&json!({ "name": "late" }))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.child.id().expect("pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(sent.success());
    let response = in_flight
        .await
        .expect("join")
        .expect("answered, not dropped");
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "the in-flight write finished"
    );
    let exit = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("exits after draining")
        .expect("wait");
    assert!(exit.success(), "clean exit: {exit:?}");
    assert!(
        client
            .get(format!("{}/healthz", server.address))
            .send()
            .await
            .is_err(),
        "no longer accepting"
    );
    drop_scratch_database(pg).await;
}

pub(crate) struct Server {
    pub(crate) child: tokio::process::Child,
    pub(crate) address: String,
}

async fn start(url: &str) -> Server {
    // Batches of a few dozen commands, so the kill lands inside some of them.
    start_with(url, &["--commit-wait", "5ms", "--pg-committers", "2"]).await
}

/// `shopd serve` as a child process on `url` with `extra` flags, once it answers `/readyz`.
pub(crate) async fn start_with(url: &str, extra: &[&str]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = tokio::process::Command::new(SHOPD)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", url, "--admin-token", ADMIN_TOKEN])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shopd");
    let address = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{address}/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            return Server { child, address };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("shopd did not become ready");
}

async fn a_kill_mid_batch_loses_no_answer_and_half_applies_nothing(backend: Backend) {
    let scratch = tempfile::tempdir().expect("temp dir");
    let Some((url, pg)) = scratch_database(backend, scratch.path()).await else {
        return;
    };

    let mut server = start(&url).await;
    let db = Db::connect(&url, &DbOptions::default()).await.expect("db");
    let mut settings = Settings::for_database(url.clone());
    settings.admin_token = vec![ADMIN_TOKEN.to_string()];
    let app = TestApp::external(server.address.clone(), db.clone(), settings.clone());
    let product = app.product("Mug", 100, 100_000).await;
    let members = app.members_bulk(MEMBERS).await;
    app.fund_bulk(&members, 1_000_000).await;

    let body = json!({ "items": [{ "productId": product, "quantity": 1 }] });
    let attempt = |app: &TestApp, i: usize| {
        let (client, url, token, body) = (
            app.client.clone(),
            app.url("/orders"),
            members[i % MEMBERS].1.clone(),
            body.clone(),
        );
        async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", format!("crash-{i}"))
                .json(&body)
                .send()
                .await;
            match response {
                Ok(r) => {
                    let status = r.status();
                    let replayed = r.headers().contains_key("idempotent-replayed");
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    (i, Some((status, body, replayed)))
                }
                Err(_) => (i, None),
            }
        }
    };

    // Load, and SIGKILL once part of it has been answered.
    let mut inflight: FuturesUnordered<_> = (0..ORDERS).map(|i| attempt(&app, i)).collect();
    let mut answered: HashMap<usize, i64> = HashMap::new();
    while let Some((i, outcome)) = inflight.next().await {
        if let Some((status, body, _)) = outcome {
            assert_eq!(status, StatusCode::CREATED, "before the kill: {body}");
            answered.insert(i, body["id"].as_i64().expect("order id"));
        }
        if answered.len() == ORDERS / 4 {
            server.child.start_kill().expect("SIGKILL");
        }
    }
    let _ = server.child.wait().await;
    assert!(answered.len() >= ORDERS / 4);
    assert!(answered.len() < ORDERS, "the kill cut the load short");

    // Restart on the same database.
    let server = start(&url).await;
    let app = TestApp::external(server.address.clone(), db.clone(), settings);
    let mut conn = db.read().await.expect("read");
    let in_progress: i64 = sql_scalar!(
        &mut conn,
        "SELECT COUNT(*) FROM idempotency_keys WHERE status <> 'DONE'"
    )
    .expect("keys");
    assert_eq!(in_progress, 0, "no key without its effect");
    let committed: i64 = sql_scalar!(&mut conn, "SELECT COUNT(*) FROM orders").expect("orders");
    let keys: i64 = sql_scalar!(&mut conn, "SELECT COUNT(*) FROM idempotency_keys").expect("keys");
    assert_eq!(
        committed, keys,
        "every committed order has its key and no key lacks its order"
    );
    assert!(
        committed >= answered.len() as i64,
        "no answered order is lost"
    );
    drop(conn);

    // Every client retries with its key: answered ones are replayed with the same order; the
    // rest take effect now — exactly once each.
    let retries: Vec<_> = futures::future::join_all((0..ORDERS).map(|i| attempt(&app, i))).await;
    for (i, outcome) in retries {
        let (status, body, replayed) = outcome.expect("answered after the restart");
        assert_eq!(status, StatusCode::CREATED, "retry {i}: {body}");
        if let Some(id) = answered.get(&i) {
            assert!(replayed, "retry {i} of an answered request is a replay");
            assert_eq!(body["id"].as_i64(), Some(*id), "retry {i}: the same order");
        }
    }
    let mut conn = db.read().await.expect("read");
    let orders: i64 = sql_scalar!(&mut conn, "SELECT COUNT(*) FROM orders").expect("orders");
    assert_eq!(
        orders, ORDERS as i64,
        "each request took effect exactly once"
    );
    drop(conn);
    assert_eq!(app.stock_of(product).await, 100_000 - ORDERS as i64);
    assert_invariants(&app).await;

    drop(server);
    db.close().await;
    drop_scratch_database(pg).await;
}

/// A fresh database a child process can open: a SQLite file under `dir`, or a new PostgreSQL
/// database (returned for [`drop_scratch_database`]). `None` only when PostgreSQL is skipped.
pub(crate) async fn scratch_database(
    backend: Backend,
    dir: &std::path::Path,
) -> Option<(String, Option<(sqlx::PgPool, String)>)> {
    Some(match backend {
        Backend::Sqlite => (format!("sqlite://{}", dir.join("shopd.db").display()), None),
        Backend::Postgres => {
            let (admin, base_url) = TestApp::postgres_admin().await?;
            let name = format!("shopd_crash_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await
                .expect("create database");
            let (prefix, _) = base_url.rsplit_once('/').expect("url with a database");
            (format!("{prefix}/{name}"), Some((admin, name)))
        }
    })
}

pub(crate) async fn drop_scratch_database(pg: Option<(sqlx::PgPool, String)>) {
    if let Some((admin, name)) = pg {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
    }
}

//! Group commit (SPEC §13): many commands in one transaction, each isolated by a savepoint;
//! a failed commit answers every caller 503 and applies nothing; a full queue answers 503.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;

use shopd::db::committer::{Handoff, Written, current_batch, handoff_lease, wrote_event};
use shopd::db::{Dialect, Locks, Tx};
use shopd::error::{AppError, AppResult};
use shopd::{sql_execute, sql_scalar};
use tokio::sync::mpsc;

use crate::helpers::{Backend, TestApp};
use crate::invariants::assert_invariants;
use crate::on_both_backends;

on_both_backends!(
    rejections_roll_back_alone_and_the_rest_commits,
    an_out_of_stock_order_fails_alone_in_its_batch,
    a_batch_of_orders_with_every_outcome_keeps_exact_counts,
    a_command_failing_after_cached_changes_leaves_no_trace,
    a_deferred_row_that_breaks_fails_the_whole_batch,
    a_new_row_naming_a_missing_member_fails_as_a_foreign_key_would,
    a_failed_commit_answers_every_caller_503_and_applies_nothing,
    a_full_queue_answers_503_at_once,
    an_idempotent_order_leaves_no_key_when_its_batch_fails,
    an_exhausted_pool_answers_503_with_retry_after,
    a_background_job_error_keeps_its_root_cause,
    commits_are_durable_unless_relaxed,
    readyz_is_503_when_the_database_is_down,
    a_panicking_command_fails_its_batch_not_the_committer,
    only_committed_commands_hand_over_their_events,
    a_failed_batch_hands_over_nothing,
);

/// A committer's statements are planned once, often while the tables are still empty, and the
/// plan is kept for the connection's life (`force_generic_plan`). Planned on empty tables
/// with default settings, the batch's flush updated stock and balances through a hash join
/// over a sequential scan of every product and every member, at every batch, whatever the
/// tables grew to (10,000 members: 10,000 rows read per batch). The committer's connection
/// prices sequential scans and hash/merge joins out: the generic plan of the flush, made on
/// this fresh schema, reaches every row through an index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flush_reaches_rows_through_indexes_even_when_planned_on_empty_tables() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let sql = shopd::db::work::flush_sql();
    let params = sql
        .split('$')
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().ok()
        })
        .max()
        .expect("the flush has parameters");
    let explain = format!(
        "EXPLAIN EXECUTE shopd_flush_probe({})",
        vec!["NULL"; params].join(", ")
    );
    let plan = app
        .db
        .write(
            Locks::none(),
            async move |tx: &mut Tx| -> AppResult<Vec<String>> {
                shopd::db::Handle::settle(tx).await?;
                let shopd::db::Raw::Postgres(conn) = shopd::db::Handle::raw(tx) else {
                    return Err(AppError::Internal(anyhow::anyhow!("not PostgreSQL")));
                };
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "PREPARE shopd_flush_probe AS {sql}"
                )))
                .execute(&mut *conn)
                .await?;
                let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
                    .fetch_all(&mut *conn)
                    .await?;
                sqlx::raw_sql("DEALLOCATE shopd_flush_probe")
                    .execute(&mut *conn)
                    .await?;
                Ok(plan)
            },
        )
        .await
        .expect("explain the flush on the committer's connection");
    let plan = plan.join("\n");
    assert!(plan.contains("Index Scan using users_pkey"), "{plan}");
    assert!(plan.contains("Index Scan using products_pkey"), "{plan}");
    for scan in ["Seq Scan", "Hash Join", "Merge Join"] {
        assert!(!plan.contains(scan), "{scan} in the flush's plan:\n{plan}");
    }
}

/// Early lock release (PostgreSQL): a batch commits without waiting for the disk, so its rows
/// are committed (and its locks free) at once, and its callers are answered only once the
/// durable barrier has returned. Here the barrier first waits on an advisory lock the test
/// holds: both writes are committed, the second in a batch that ran while the first waited for
/// "the disk", and neither is answered until the test lets the barriers through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_batch_is_answered_only_once_durable_and_frees_its_rows_at_commit() {
    // The real barrier, behind a lock the test holds.
    let held: &'static str = Box::leak(
        format!(
            "SELECT pg_advisory_lock_shared(4242); SELECT pg_advisory_unlock_shared(4242); {}",
            shopd::db::committer::DURABLE_BARRIER
        )
        .into_boxed_str(),
    );
    let Some(app) = TestApp::spawn_with(Backend::Postgres, |s| {
        s.database.pg_durable_barrier = Some(held);
    })
    .await
    else {
        return;
    };
    create_scratch_table(&app).await;
    let mut gate = app.db.read().await.expect("read");
    let _: i64 = sql_scalar!(
        &mut gate,
        "SELECT COUNT(*) FROM (SELECT pg_advisory_lock(4242)) l"
    )
    .expect("hold the disk");
    let write = |n: i64| {
        let db = app.db.clone();
        tokio::spawn(async move {
            db.write(Locks::none(), async move |tx: &mut Tx| {
                sql_execute!(tx, "INSERT INTO scratch (n) VALUES ($1)", n)?;
                Ok::<_, AppError>(())
            })
            .await
        })
    };
    let first = write(1);
    wait_for_scratch_rows(&app, &[1]).await;
    let second = write(2);
    wait_for_scratch_rows(&app, &[1, 2]).await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "committed batches are not answered before they are durable"
    );
    let _: bool = sql_scalar!(&mut gate, "SELECT pg_advisory_unlock(4242)").expect("release");
    for answer in [first, second] {
        answer.await.expect("task").expect("answered once durable");
    }
    // The batch's own transaction does not wait for the disk; the barrier does.
    assert_eq!(committer_durability(&app).await, "off");
}

/// A committed batch whose durability cannot be confirmed (here the barrier always fails) is
/// answered `503` — its outcome is unknown, so it is not reported as applied or as not applied
/// — and the committer goes on with the next batches instead of waiting on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_postgres_batch_is_answered_503_and_the_committer_goes_on() {
    let Some(app) = TestApp::spawn_with(Backend::Postgres, |s| {
        s.database.pg_durable_barrier = Some("SELECT 1/0");
        s.database.pg_commits_in_flight = 1;
    })
    .await
    else {
        return;
    };
    // The table's own batch is unconfirmed too (it is committed all the same).
    let _ = app
        .db
        .write(Locks::none(), async move |tx: &mut Tx| -> AppResult<()> {
            sql_execute!(tx, "CREATE TABLE scratch (n BIGINT NOT NULL)")?;
            Ok(())
        })
        .await;
    for n in 1..=3_i64 {
        let answer = app
            .db
            .write(Locks::none(), async move |tx: &mut Tx| {
                sql_execute!(tx, "INSERT INTO scratch (n) VALUES ($1)", n)?;
                Ok::<_, AppError>(())
            })
            .await;
        let err = answer.expect_err("an unconfirmed batch is not answered as applied");
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err:?}");
        assert_eq!(err.code(), "SERVICE_UNAVAILABLE");
    }
    assert_eq!(
        scratch_rows(&app).await,
        vec![1, 2, 3],
        "committed, unconfirmed"
    );
}

/// SQLite's early sync release: a batch's commit does not wait for the disk (the next batch
/// runs at once) and its callers are answered only once the WAL syncer has synced the log.
/// Here the syncer first waits on a lock the test holds: both writes are committed — readable
/// — the second in a batch that ran while the first waited for "the disk", and neither is
/// answered until the test lets the syncer through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_batch_is_answered_only_once_its_log_is_synced() {
    let gate = Arc::new(std::sync::Mutex::new(()));
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.database.sqlite_sync_gate = Some(gate.clone());
    })
    .await
    else {
        return;
    };
    create_scratch_table(&app).await;
    // The lock is held by a thread of its own until the test sends `release`.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, is_held) = std::sync::mpsc::channel::<()>();
    let holder = {
        let gate = gate.clone();
        std::thread::spawn(move || {
            let _disk = gate.lock();
            let _ = held.send(());
            let _ = released.recv();
        })
    };
    is_held.recv().expect("the disk is held");
    let write = |n: i64| {
        let db = app.db.clone();
        tokio::spawn(async move {
            db.write(Locks::none(), async move |tx: &mut Tx| {
                sql_execute!(tx, "INSERT INTO scratch (n) VALUES ($1)", n)?;
                Ok::<_, AppError>(())
            })
            .await
        })
    };
    let first = write(1);
    wait_for_scratch_rows(&app, &[1]).await;
    let second = write(2);
    wait_for_scratch_rows(&app, &[1, 2]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "committed batches are not answered before their log is synced"
    );
    release.send(()).expect("release the disk");
    holder.join().expect("holder");
    for answer in [first, second] {
        answer.await.expect("task").expect("answered once synced");
    }
}

/// A WAL sync that fails (here the `-wal` file was removed behind SQLite's back, so the syncer
/// cannot open it) leaves the batch's outcome unknown: its caller gets `503`, and every later
/// write is refused — after a failed sync the kernel may have dropped pages it could not write,
/// so no later commit could be trusted to be durable either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_sync_answers_503_and_stops_writes() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    create_scratch_table(&app).await;
    let mut wal = app.sqlite_path().expect("a SQLite app").into_os_string();
    wal.push("-wal");
    std::fs::remove_file(&wal).expect("remove the WAL");
    let insert = |n: i64| {
        app.db.write(Locks::none(), async move |tx: &mut Tx| {
            sql_execute!(tx, "INSERT INTO scratch (n) VALUES ($1)", n)?;
            Ok::<_, AppError>(())
        })
    };
    // A commit that starts the log over syncs it itself (through SQLite's own descriptor);
    // the next one leaves its sync to the syncer, which fails.
    let mut failed = None;
    for n in 1..=5_i64 {
        if let Err(err) = insert(n).await {
            failed = Some(err);
            break;
        }
    }
    let err = failed.expect("a write whose log sync failed is not answered as applied");
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err:?}");
    let later = insert(100).await.expect_err("later writes are refused");
    assert_eq!(later.status(), StatusCode::SERVICE_UNAVAILABLE, "{later:?}");
    assert!(!scratch_rows(&app).await.contains(&100), "refused, not run");
}

/// Poll until the scratch table holds exactly `expected` (committed rows), at most 20 s.
async fn wait_for_scratch_rows(app: &TestApp, expected: &[i64]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = scratch_rows(app).await;
        if rows == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rows {expected:?} were not committed: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Under writes that never pause, the SQLite WAL still starts over from its beginning again and
/// again (the committer completes a checkpoint between two batches once the WAL holds
/// `--sqlite-wal-restart-pages`), so the `-wal` file stays bounded. A `PASSIVE` checkpoint
/// alone (the checkpointer thread) never catches up with a busy writer: without the
/// committer's part the WAL never restarted and the file grew by every page written.
#[tokio::test]
async fn sqlite_wal_starts_over_under_steady_writes() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.database.sqlite_wal_restart_pages = 64;
    })
    .await
    else {
        return;
    };
    let wal = {
        let mut path = app.sqlite_path().expect("a SQLite app").into_os_string();
        path.push("-wal");
        std::path::PathBuf::from(path)
    };
    create_table(&app, "CREATE TABLE wal_load (body TEXT NOT NULL)").await;
    // 16 writers, each inserting rows of ~3 KiB (about a page each) back to back for 3 s.
    let until = std::time::Instant::now() + Duration::from_secs(3);
    let writers = (0..16).map(|_| {
        let db = app.db.clone();
        async move {
            let mut rows = 0_u64;
            while std::time::Instant::now() < until {
                db.write(Locks::none(), async |tx: &mut Tx| -> AppResult<()> {
                    sql_execute!(
                        tx,
                        "INSERT INTO wal_load (body) VALUES ($1)",
                        "x".repeat(3_000)
                    )?;
                    Ok(())
                })
                .await
                .expect("write");
                rows += 1;
            }
            rows
        }
    });
    let rows: u64 = join_all(writers).await.into_iter().sum();
    // The WAL header counts how often the log started over (bytes 12..16, big-endian).
    let header = std::fs::read(&wal).expect("read the WAL");
    let restarts = u32::from_be_bytes(header[12..16].try_into().expect("4 bytes"));
    let wal_pages = header.len() as u64 / 4_120;
    assert!(
        restarts >= 3,
        "the WAL started over {restarts} times in 3 s of steady writes ({rows} rows)"
    );
    assert!(
        wal_pages < rows / 2,
        "the WAL file ({wal_pages} pages) is bounded, not as long as what was written ({rows} rows)"
    );
}

/// A relay's hand-off, set on the app's database (the test app runs no relay of its own).
fn listen_for_handoffs(app: &TestApp) -> (Arc<Handoff>, mpsc::Receiver<Written>) {
    let (queue, handed) = mpsc::channel(1_000);
    let handoff = Arc::new(Handoff {
        lease: chrono::Duration::seconds(30),
        queue,
        wake: Box::new(|| {}),
    });
    app.db.set_handoff(handoff.clone());
    (handoff, handed)
}

/// What a command writing event `n` tells the committer (leased, since a relay listens).
fn write_event(n: i64) {
    let now = chrono::Utc::now();
    let lease_until = handoff_lease(now).expect("a relay listens: the event is leased");
    wrote_event(Some(Written {
        id: format!("event-{n}"),
        event_type: "TEST".into(),
        aggregate_id: n,
        payload: "{}".into(),
        created_at: now,
        lease_until,
    }));
}

fn drain(handed: &mut mpsc::Receiver<Written>) -> Vec<i64> {
    let mut ids = Vec::new();
    while let Ok(w) = handed.try_recv() {
        ids.push(w.aggregate_id);
    }
    ids.sort_unstable();
    ids
}

async fn only_committed_commands_hand_over_their_events(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, batching).await else {
        return;
    };
    create_scratch_table(&app).await;
    let (handoff, mut handed) = listen_for_handoffs(&app);
    // Ten commands in one batch, each writing an event; the odd ones then fail, and their
    // savepoints (events included) are rolled back.
    let results = join_all((0..10_i64).map(|n| {
        let db = app.db.clone();
        async move {
            db.write(Locks::none(), async move |tx: &mut Tx| {
                sql_execute!(tx, "INSERT INTO scratch (n) VALUES ($1)", n)?;
                write_event(n);
                if n % 2 == 1 {
                    return Err(AppError::conflict("ODD", "odd", json!({})));
                }
                Ok(current_batch())
            })
            .await
        }
    }))
    .await;
    // Handed over before the callers were answered.
    assert_eq!(drain(&mut handed), vec![0, 2, 4, 6, 8]);
    let batches: std::collections::BTreeSet<_> =
        results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(batches.len(), 1, "one batch: {results:?}");
    // Without a relay listening, events are written unleased and nothing is handed over.
    app.db.clear_handoff(&handoff);
    app.db
        .write(Locks::none(), async |_tx: &mut Tx| -> AppResult<()> {
            assert_eq!(handoff_lease(chrono::Utc::now()), None);
            wrote_event(None);
            Ok(())
        })
        .await
        .expect("write");
    assert!(drain(&mut handed).is_empty());
}

async fn a_failed_batch_hands_over_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, batching).await else {
        return;
    };
    create_scratch_table(&app).await;
    arm_commit_bomb(&app).await;
    let (_handoff, mut handed) = listen_for_handoffs(&app);
    // Five commands that succeed, in a batch whose commit then fails.
    let results = join_all((0..5_i64).map(|n| {
        let db = app.db.clone();
        async move {
            db.write(Locks::none(), async move |tx: &mut Tx| {
                sql_execute!(tx, "INSERT INTO scratch (n) VALUES ($1)", n)?;
                write_event(n);
                if n == 4 {
                    sql_execute!(tx, "INSERT INTO bomb (parent) VALUES (42)")?;
                }
                Ok::<_, AppError>(())
            })
            .await
        }
    }))
    .await;
    assert!(results.iter().all(Result::is_err), "{results:?}");
    assert!(scratch_rows(&app).await.is_empty());
    assert!(drain(&mut handed).is_empty(), "nothing of the failed batch");
}

/// Settings that make concurrent writes land in one batch: one committer (PostgreSQL runs
/// several, which share the queue) that waits a little for more work.
fn batching(settings: &mut shopd::config::Settings) {
    settings.database.commit_wait = Duration::from_millis(300);
    settings.database.commit_batch_max = 1_000;
    settings.database.pg_committers = 1;
}

async fn create_table(app: &TestApp, ddl: &'static str) {
    app.db
        .write(Locks::none(), async move |tx: &mut Tx| -> AppResult<()> {
            sql_execute!(tx, ddl)?;
            Ok(())
        })
        .await
        .expect("create a table");
}

async fn create_scratch_table(app: &TestApp) {
    create_table(app, "CREATE TABLE scratch (n BIGINT NOT NULL)").await;
}

async fn scratch_rows(app: &TestApp) -> Vec<i64> {
    let mut conn = app.db.read().await.expect("read");
    let rows: Vec<(i64,)> = shopd::sql_all!((i64,); &mut conn, "SELECT n FROM scratch ORDER BY n")
        .expect("scratch rows");
    rows.into_iter().map(|(n,)| n).collect()
}

async fn rejections_roll_back_alone_and_the_rest_commits(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, batching).await else {
        return;
    };
    create_scratch_table(&app).await;
    // Ten commands at once: each writes its row; the odd ones then fail (after writing).
    let results = join_all((0..10_i64).map(|n| {
        let db = app.db.clone();
        async move {
            db.write(Locks::none(), async move |tx: &mut Tx| {
                sql_execute!(tx, "INSERT INTO scratch (n) VALUES ($1)", n)?;
                let batch = current_batch().expect("runs on a committer");
                if n % 2 == 1 {
                    return Err(AppError::conflict("ODD", "odd", json!({ "batch": batch })));
                }
                Ok(batch)
            })
            .await
        }
    }))
    .await;
    let mut batches = Vec::new();
    for (n, result) in results.iter().enumerate() {
        match result {
            Ok(batch) => {
                assert_eq!(n % 2, 0, "command {n} should have failed");
                batches.push(*batch);
            }
            Err(AppError::Conflict { details, .. }) => {
                assert_eq!(n % 2, 1, "command {n} should have succeeded");
                batches.push(details["batch"].as_u64().expect("batch"));
            }
            Err(other) => panic!("command {n}: unexpected {other:?}"),
        }
    }
    batches.sort_unstable();
    batches.dedup();
    assert_eq!(
        batches.len(),
        1,
        "all ten shared one transaction: {batches:?}"
    );
    assert_eq!(scratch_rows(&app).await, vec![0, 2, 4, 6, 8]);
}

async fn an_out_of_stock_order_fails_alone_in_its_batch(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, batching).await else {
        return;
    };
    let plenty = app.product("Mug", 1_000, 100).await;
    let none = app.product("Rare", 1_000, 0).await;
    let members = app.members_bulk(8).await;
    app.fund_bulk(&members, 100_000).await;
    let app = &app;
    let results = join_all(
        members
            .iter()
            .enumerate()
            .map(|(i, (_, token))| async move {
                let product = if i == 3 { none } else { plenty };
                app.order(token, &[(product, 1)], json!({})).await
            }),
    )
    .await;
    for (i, (status, body)) in results.iter().enumerate() {
        if i == 3 {
            assert_eq!(*status, StatusCode::CONFLICT, "{body}");
            assert_eq!(body["code"], "PRODUCT_OUT_OF_STOCK");
        } else {
            assert_eq!(*status, StatusCode::CREATED, "{body}");
            assert_eq!(body["status"], "PAID");
        }
    }
    assert_eq!(app.stock_of(plenty).await, 93);
    assert_eq!(app.stock_of(none).await, 0);
    assert_invariants(app).await;
}

/// One batch of orders with every outcome — paid, pending, 402, out of stock after an earlier
/// line was reserved, a coupon rejected after the stock was taken, a keyed order and its
/// replay, two orders for the last unit — ends with exact stock, balances and rows. On
/// PostgreSQL this drives the batch's unit of work (`db/work.rs`): cached stock and balances
/// undone for the commands that failed without a savepoint, rolled back with it for those that
/// opened one, everything else written by the one flush.
async fn a_batch_of_orders_with_every_outcome_keeps_exact_counts(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, batching).await else {
        return;
    };
    let a = app.product("Plenty", 1_000, 100).await;
    let b = app.product("Last one", 2_000, 1).await;
    let none = app.product("Gone", 500, 0).await;
    let members = app.members_bulk(9).await;
    app.fund_bulk(&members[..8], 100_000).await;
    let (poor, poor_token) = members[8].clone();
    assert_eq!(app.charge(poor, &poor_token, 500).await.0, StatusCode::OK);
    let t = |i: usize| members[i].1.as_str();
    let app = &app;
    let (paid, last_1, last_2, coupon, pending, broke, keyed, replay, gone) = futures::join!(
        app.order(t(0), &[(a, 2)], json!({})),
        app.order(t(1), &[(a, 1), (b, 1)], json!({})),
        app.order(t(2), &[(a, 3), (b, 1)], json!({})),
        app.order(t(3), &[(a, 1)], json!({ "userCouponId": 999_999 })),
        app.order(t(4), &[(a, 1)], json!({ "pay": false })),
        app.order(&poor_token, &[(a, 1)], json!({})),
        app.post_idem(
            "/orders",
            Some(t(5)),
            json!({ "items": [{ "productId": a, "quantity": 1 }] }),
            "k-1"
        ),
        app.post_idem(
            "/orders",
            Some(t(5)),
            json!({ "items": [{ "productId": a, "quantity": 1 }] }),
            "k-1"
        ),
        app.order(t(6), &[(a, 1), (none, 1)], json!({})),
    );
    assert_eq!(paid.0, StatusCode::CREATED, "{}", paid.1);
    assert_eq!(paid.1["status"], "PAID");
    // Exactly one of the two orders gets the last unit of `b`; the other's reservation of `a`
    // is given back.
    let (won, lost) = match (last_1.0, last_2.0) {
        (StatusCode::CREATED, StatusCode::CONFLICT) => (&last_1, &last_2),
        (StatusCode::CONFLICT, StatusCode::CREATED) => (&last_2, &last_1),
        other => panic!("one of the two should win the last unit: {other:?} {last_1:?} {last_2:?}"),
    };
    assert_eq!(won.1["status"], "PAID");
    assert_eq!(lost.1["code"], "PRODUCT_OUT_OF_STOCK", "{}", lost.1);
    let won_a = won.1["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|l| l["productId"] == a)
        .and_then(|l| l["quantity"].as_i64())
        .expect("line of a");
    assert_eq!(coupon.0, StatusCode::BAD_REQUEST, "{}", coupon.1);
    assert_eq!(coupon.1["code"], "COUPON_INVALID");
    assert_eq!(pending.0, StatusCode::CREATED, "{}", pending.1);
    assert_eq!(pending.1["status"], "PENDING");
    assert_eq!(broke.0, StatusCode::PAYMENT_REQUIRED, "{}", broke.1);
    let broke_order = broke.1["details"]["orderId"].as_i64().expect("orderId");
    assert_eq!(keyed.0, StatusCode::CREATED, "{}", keyed.1);
    assert_eq!(replay.0, StatusCode::CREATED, "{}", replay.1);
    assert_eq!(keyed.1["id"], replay.1["id"], "one order for one key");
    assert_eq!(gone.0, StatusCode::CONFLICT, "{}", gone.1);
    assert_eq!(gone.1["code"], "PRODUCT_OUT_OF_STOCK");

    // a: 2 (paid) + the winner's + 1 (pending) + 1 (402, PENDING holds it) + 1 (keyed, once).
    assert_eq!(app.stock_of(a).await, 100 - 2 - won_a - 1 - 1 - 1);
    assert_eq!(app.stock_of(b).await, 0);
    assert_eq!(app.stock_of(none).await, 0);
    assert_eq!(app.balance_of(members[0].0).await, 100_000 - 2_000);
    assert_eq!(
        app.balance_of(members[3].0).await,
        100_000,
        "coupon rejected: nothing paid"
    );
    assert_eq!(app.balance_of(members[4].0).await, 100_000, "pay: false");
    assert_eq!(app.balance_of(poor).await, 500, "402: nothing taken");
    assert_eq!(
        app.balance_of(members[5].0).await,
        100_000 - 1_000,
        "keyed: paid once"
    );
    assert_eq!(
        app.balance_of(members[6].0).await,
        100_000,
        "out of stock: nothing paid"
    );
    let (_, order) = app
        .get(&format!("/orders/{broke_order}"), Some(&poor_token))
        .await;
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["payments"][0]["status"], "FAILED", "{order}");
    assert_invariants(app).await;
}

/// Commands that change stock and balance and then fail without any other statement (on a
/// PostgreSQL batch: only the cache, no savepoint) leave nothing behind, while the commands
/// around them in the same batch keep theirs.
async fn a_command_failing_after_cached_changes_leaves_no_trace(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, batching).await else {
        return;
    };
    let product = app.product("Cup", 1_000, 50).await;
    let (member, _) = app.member("Ann").await;
    app.fund_bulk(&[(member, String::new())], 10_000).await;
    let results = join_all((0..6_i64).map(|n| {
        let db = app.db.clone();
        let locks = Locks {
            products: vec![product],
            users: vec![member],
            ..Locks::none()
        };
        db_write_take(db, locks, product, member, n)
    }))
    .await;
    let mut batches: Vec<u64> = results.iter().map(|(_, batch)| *batch).collect();
    batches.sort_unstable();
    batches.dedup();
    assert_eq!(batches.len(), 1, "one batch: {batches:?}");
    for (n, (result, _)) in results.iter().enumerate() {
        assert_eq!(result.is_ok(), n % 2 == 0, "command {n}: {result:?}");
    }
    // Three commands kept 1 unit and 100 each; the three that failed left nothing.
    assert_eq!(app.stock_of(product).await, 47);
    assert_eq!(app.balance_of(member).await, 10_000 - 300);
}

/// Take one unit of `product` and 100 from `member` (through the batch's cache where there is
/// one, by SQL elsewhere); odd `n` then fail.
async fn db_write_take(
    db: shopd::db::Db,
    locks: Locks,
    product: i64,
    member: i64,
    n: i64,
) -> (Result<(), String>, u64) {
    use shopd::db::work;
    let result = db
        .write(locks, async move |tx: &mut Tx| -> AppResult<u64> {
            let batch = current_batch().expect("runs on a committer");
            match work::product(tx, product).await? {
                Some(Some(p)) => work::set_stock(tx, product, p.stock - 1),
                Some(None) => panic!("the product exists"),
                None => {
                    sql_execute!(
                        tx,
                        "UPDATE products SET stock = stock - 1 WHERE id = $1",
                        product
                    )?;
                }
            }
            match work::balance(tx, member).await? {
                Some(Some(b)) => work::set_balance(tx, member, b - 100, chrono::Utc::now()),
                Some(None) => panic!("the member exists"),
                None => {
                    sql_execute!(
                        tx,
                        "UPDATE users SET balance = balance - 100 WHERE id = $1",
                        member
                    )?;
                }
            }
            if n % 2 == 1 {
                return Err(AppError::conflict("ODD", "odd", json!({ "batch": batch })));
            }
            Ok(batch)
        })
        .await;
    match result {
        Ok(batch) => (Ok(()), batch),
        Err(AppError::Conflict { details, .. }) => (
            Err("ODD".to_string()),
            details["batch"].as_u64().expect("batch"),
        ),
        Err(other) => panic!("unexpected {other:?}"),
    }
}

/// A row left to a PostgreSQL batch's flush that breaks a constraint fails the whole batch —
/// including when the flush runs before a later command's statement, outside any savepoint,
/// where PostgreSQL would otherwise turn the COMMIT into a silent ROLLBACK after the other
/// commands were told they succeeded. (On SQLite the row is written at once and its command
/// fails alone.)
async fn a_deferred_row_that_breaks_fails_the_whole_batch(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, batching).await else {
        return;
    };
    let (member, _) = app.member("Ann").await;
    // A ledger row with a negative balance breaks its CHECK.
    a_bad_ledger_row_fails_its_batch_or_its_command(&app, member, -1).await;
}

/// A ledger row for a member that does not exist. SQLite's foreign key refuses the statement
/// (that command alone fails); on PostgreSQL the key is not declared (migration 0015) and the
/// batch's flush checks it instead, failing the batch as the key would have failed the flush.
async fn a_new_row_naming_a_missing_member_fails_as_a_foreign_key_would(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, batching).await else {
        return;
    };
    a_bad_ledger_row_fails_its_batch_or_its_command(&app, 987_654_321, 1).await;
    let ledger: i64 = app
        .db
        .write(Locks::none(), async move |tx: &mut Tx| -> AppResult<i64> {
            Ok(sql_scalar!(
                tx,
                "SELECT count(*) FROM balance_ledger WHERE user_id = 987654321"
            )?)
        })
        .await
        .expect("count");
    assert_eq!(ledger, 0);
}

/// Three commands in one batch; the second appends a ledger row (`user_id`, `balance_after`)
/// that the database refuses, the others write scratch rows. On PostgreSQL the row waits for
/// the batch's flush, so the whole batch fails (every caller 503, nothing applied); on SQLite
/// it is written at once and its command fails alone.
async fn a_bad_ledger_row_fails_its_batch_or_its_command(
    app: &TestApp,
    user_id: i64,
    balance_after: i64,
) {
    create_scratch_table(app).await;
    let results = join_all((0..3_i64).map(|n| {
        let db = app.db.clone();
        async move {
            db.write(Locks::none(), async move |tx: &mut Tx| -> AppResult<u64> {
                let batch = current_batch().expect("runs on a committer");
                if n == 1 {
                    shopd::store::balance::append_ledger(
                        tx,
                        user_id,
                        shopd::domain::money::LedgerKind::Charge,
                        1,
                        balance_after,
                        None,
                        chrono::Utc::now(),
                    )
                    .await?;
                } else {
                    sql_execute!(tx, "INSERT INTO scratch (n) VALUES ($1)", n)?;
                }
                Ok(batch)
            })
            .await
        }
    }))
    .await;
    match app.db.dialect() {
        Dialect::Postgres => {
            for (n, result) in results.iter().enumerate() {
                assert!(
                    matches!(result, Err(e) if e.status() == StatusCode::SERVICE_UNAVAILABLE),
                    "command {n}: {result:?}"
                );
            }
            assert!(scratch_rows(app).await.is_empty(), "nothing applied");
        }
        Dialect::Sqlite => {
            assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
            assert!(results[1].is_err(), "{results:?}");
            assert_eq!(scratch_rows(app).await, vec![0, 2]);
        }
    }
}

/// PostgreSQL declares no foreign keys from an order's rows to its member and products
/// (migration 0015); in their place members and products are never deleted nor renumbered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_products_are_never_deleted_nor_renumbered_on_postgres() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let (member, _) = app.member("Ann").await;
    let product = app.product("Lamp", 1_000, 5).await;
    for sql in [
        format!("DELETE FROM users WHERE id = {member}"),
        format!("UPDATE users SET id = id + 1000000 WHERE id = {member}"),
        format!("DELETE FROM products WHERE id = {product}"),
        format!("UPDATE products SET id = id + 1000000 WHERE id = {product}"),
    ] {
        let refused = app
            .db
            .write(Locks::none(), async move |tx: &mut Tx| -> AppResult<()> {
                shopd::db::Handle::settle(tx).await?;
                let shopd::db::Raw::Postgres(conn) = shopd::db::Handle::raw(tx) else {
                    return Err(AppError::Internal(anyhow::anyhow!("not PostgreSQL")));
                };
                Ok(sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *conn)
                    .await
                    .map(|_| ())?)
            })
            .await;
        assert!(refused.is_err(), "{refused:?}");
    }
    let still: i64 = app
        .db
        .write(Locks::none(), async move |tx: &mut Tx| -> AppResult<i64> {
            Ok(sql_scalar!(tx,
                "SELECT (SELECT count(*) FROM users WHERE id = $1) + (SELECT count(*) FROM products WHERE id = $2)",
                member, product)?)
        })
        .await
        .expect("count");
    assert_eq!(still, 2);
}

/// A constraint checked only at COMMIT: the batch's commit fails after every command ran.
async fn arm_commit_bomb(app: &TestApp) {
    let dialect = app.db.dialect();
    app.db
        .write(Locks::none(), async move |tx: &mut Tx| -> AppResult<()> {
            match dialect {
                Dialect::Sqlite => {
                    sql_execute!(tx, "CREATE TABLE bomb_parent (id INTEGER PRIMARY KEY)")?;
                    sql_execute!(tx,
                        "CREATE TABLE bomb (parent INTEGER REFERENCES bomb_parent (id) DEFERRABLE INITIALLY DEFERRED)")?;
                }
                Dialect::Postgres => {
                    sql_execute!(tx, "CREATE TABLE bomb_parent (id BIGINT PRIMARY KEY)")?;
                    sql_execute!(tx,
                        "CREATE TABLE bomb (parent BIGINT REFERENCES bomb_parent (id) DEFERRABLE INITIALLY DEFERRED)")?;
                }
            }
            Ok(())
        })
        .await
        .expect("arm");
}

async fn a_failed_commit_answers_every_caller_503_and_applies_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, batching).await else {
        return;
    };
    create_scratch_table(&app).await;
    arm_commit_bomb(&app).await;
    let product = app.product("Mug", 1_000, 100).await;
    let members = app.members_bulk(4).await;
    app.fund_bulk(&members, 100_000).await;
    let app = &app;
    // Orders and scratch rows, plus one command whose row breaks the commit.
    let orders = join_all(
        members
            .iter()
            .map(|(_, token)| async move { app.order(token, &[(product, 1)], json!({})).await }),
    );
    let writes = join_all((0..5_i64).map(|n| {
        let db = app.db.clone();
        async move {
            db.write(Locks::none(), async move |tx: &mut Tx| {
                sql_execute!(tx, "INSERT INTO scratch (n) VALUES ($1)", n)?;
                if n == 4 {
                    sql_execute!(tx, "INSERT INTO bomb (parent) VALUES (42)")?;
                }
                Ok::<_, AppError>(current_batch())
            })
            .await
        }
    }));
    let (orders, writes) = tokio::join!(orders, writes);
    for result in &writes {
        match result {
            Err(err) => {
                assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err:?}");
                assert_eq!(err.code(), "SERVICE_UNAVAILABLE");
            }
            Ok(batch) => panic!("a write of the failed batch succeeded: {batch:?}"),
        }
    }
    for (status, body) in &orders {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
    }
    assert!(scratch_rows(app).await.is_empty(), "nothing applied");
    assert_eq!(app.stock_of(product).await, 100, "no stock taken");
    let mut conn = app.db.read().await.expect("read");
    let paid: i64 = sql_scalar!(&mut conn, "SELECT COUNT(*) FROM orders").expect("count");
    assert_eq!(paid, 0, "no order applied");
    let (status, body) = app
        .get(
            &format!("/users/{}/balance", members[0].0),
            Some(&members[0].1),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["balance"], 100_000, "no money taken");
    // The committer goes on: the next batch commits.
    let (status, body) = app.order(&members[0].1, &[(product, 1)], json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_invariants(app).await;
}

async fn a_full_queue_answers_503_at_once(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.database.commit_queue = 2;
        s.database.pg_committers = 1;
    })
    .await
    else {
        return;
    };
    // Hold the committer busy, then fill its queue.
    let db = app.db.clone();
    let busy = tokio::spawn(async move {
        db.write(Locks::none(), async |_tx: &mut Tx| {
            tokio::time::sleep(Duration::from_millis(800)).await;
            Ok::<_, AppError>(())
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued: Vec<_> = (0..2)
        .map(|_| {
            let db = app.db.clone();
            tokio::spawn(async move {
                db.write(Locks::none(), async |_tx: &mut Tx| Ok::<_, AppError>(()))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Over HTTP: the next write is refused with 503 and Retry-After, without waiting.
    let started = std::time::Instant::now();
    let response = app
        .client
        .post(app.url("/users"))
        .json(&json!({ "name": "late" }))
        .send()
        .await
        .expect("send");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered at once"
    );
    assert_retryable_503(response).await;
    assert!(busy.await.expect("join").is_ok());
    for q in queued {
        assert!(q.await.expect("join").is_ok(), "queued commands still run");
    }
}

async fn an_idempotent_order_leaves_no_key_when_its_batch_fails(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, batching).await else {
        return;
    };
    arm_commit_bomb(&app).await;
    let product = app.product("Mug", 1_000, 100).await;
    let members = app.members_bulk(1).await;
    app.fund_bulk(&members, 100_000).await;
    let (user_id, token) = &members[0];
    let key = "order-1";
    let keyed = app.post_idem(
        "/orders",
        Some(token),
        json!({ "items": [{ "productId": product, "quantity": 1 }] }),
        key,
    );
    let bomb = app.db.write(Locks::none(), async |tx: &mut Tx| {
        sql_execute!(tx, "INSERT INTO bomb (parent) VALUES (7)")?;
        Ok::<_, AppError>(())
    });
    let ((status, body), bombed) = tokio::join!(keyed, bomb);
    assert!(bombed.is_err());
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let mut conn = app.db.read().await.expect("read");
    let keys: i64 =
        sql_scalar!(&mut conn, "SELECT COUNT(*) FROM idempotency_keys").expect("count keys");
    assert_eq!(keys, 0, "the key commits with its effect or not at all");
    // The client's retry with the same key runs at once (no lease to wait out).
    let (status, body) = app
        .post_idem(
            "/orders",
            Some(token),
            json!({ "items": [{ "productId": product, "quantity": 1 }] }),
            key,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = app
        .get(&format!("/users/{user_id}/balance"), Some(token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_invariants(&app).await;
}

async fn an_exhausted_pool_answers_503_with_retry_after(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.database.db_max_connections = 1;
        s.database.db_acquire_timeout = Duration::from_millis(200);
    })
    .await
    else {
        return;
    };
    let product = app.product("Mug", 1_000, 10).await;
    // Hold the only pooled connection, as a stampede of slow reads would.
    let held = app.db.read().await.expect("the one connection");
    let response = app
        .client
        .get(app.url(&format!("/products/{product}")))
        .send()
        .await
        .expect("send");
    assert_retryable_503(response).await;
    drop(held);
    let (status, _) = app.get(&format!("/products/{product}"), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "served again once a connection is free"
    );
}

async fn a_background_job_error_keeps_its_root_cause(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let built = shopd::Application::build_with_db(app.settings.clone(), app.db.clone())
        .await
        .expect("build");
    let state = built.state().clone();
    // The database goes away under the sweeper.
    app.db.close().await;
    let err = shopd::workers::expire_overdue_orders(&state)
        .await
        .expect_err("the sweeper fails");
    let logged = format!("{err:?}");
    assert!(
        logged.contains("expiry") && logged.contains("closed"),
        "the logged chain names the job and the database's own cause: {logged}"
    );
}

/// A `503 SERVICE_UNAVAILABLE` that tells the client to retry (`Retry-After: 1`).
async fn assert_retryable_503(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
}

/// The durability setting the committer's own connection runs with (inside a real write).
async fn committer_durability(app: &TestApp) -> String {
    let dialect = app.db.dialect();
    app.db
        .write(
            Locks::none(),
            async move |tx: &mut Tx| -> AppResult<String> {
                Ok(match dialect {
                    Dialect::Sqlite => {
                        let level: i64 = sql_scalar!(tx, "PRAGMA synchronous")?;
                        level.to_string()
                    }
                    Dialect::Postgres => sql_scalar!(tx, "SHOW synchronous_commit")?,
                })
            },
        )
        .await
        .expect("read the committer's setting")
}

async fn commits_are_durable_unless_relaxed(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    match backend {
        // SQLite: synchronous=FULL (2) on the committer's connection and on the pool's.
        Backend::Sqlite => {
            assert_eq!(committer_durability(&app).await, "2", "synchronous=FULL");
            let mut conn = app.db.read().await.expect("read");
            let pooled: i64 = sql_scalar!(&mut conn, "PRAGMA synchronous").expect("pragma");
            assert_eq!(pooled, 2, "synchronous=FULL on pooled connections");
            drop(conn);
            let Some(relaxed) =
                TestApp::spawn_with(backend, |s| s.database.sqlite_relaxed_durability = true).await
            else {
                return;
            };
            assert_eq!(
                committer_durability(&relaxed).await,
                "1",
                "--sqlite-relaxed-durability: synchronous=NORMAL"
            );
        }
        // PostgreSQL: a batch's own COMMIT does not wait for the disk (early lock release);
        // its callers are answered after the durable barrier, a commit of the server's default
        // `synchronous_commit` (see the test below). The pool's connections keep the default.
        Backend::Postgres => {
            assert_eq!(committer_durability(&app).await, "off");
            let mut conn = app.db.read().await.expect("read");
            let pooled: String = sql_scalar!(&mut conn, "SHOW synchronous_commit").expect("show");
            assert_eq!(pooled, "on");
            assert!(shopd::db::committer::DURABLE_BARRIER.contains("pg_logical_emit_message"));
        }
    }
}

async fn readyz_is_503_when_the_database_is_down(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    assert_eq!(app.get("/readyz", None).await.0, StatusCode::OK);
    // The database goes away (its pool is closed under the running server).
    app.db.close().await;
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("NOT_READY")),
        "{body}"
    );
}

async fn a_panicking_command_fails_its_batch_not_the_committer(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    create_scratch_table(&app).await;
    let result = app
        .db
        .write(Locks::none(), async |tx: &mut Tx| -> AppResult<()> {
            sql_execute!(tx, "INSERT INTO scratch (n) VALUES ($1)", 1_i64)?;
            panic!("a bug in a command");
        })
        .await;
    let err = result.expect_err("the batch failed");
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err:?}");
    assert!(scratch_rows(&app).await.is_empty(), "nothing applied");
    // The committer is still there for the next write.
    app.db
        .write(Locks::none(), async |tx: &mut Tx| -> AppResult<()> {
            sql_execute!(tx, "INSERT INTO scratch (n) VALUES ($1)", 2_i64)?;
            Ok(())
        })
        .await
        .expect("later writes commit");
    assert_eq!(scratch_rows(&app).await, vec![2]);
}

/// A batch rewrites many members at once, before any old version can be pruned, and members
/// created one after another share pages. `users` keeps half of each page free (migration
/// 0018), so that every balance update of such a batch stays on its member's page — a HOT
/// update, with no entry in any of the table's indexes (one is member search's trigram GIN).
/// At 85 % most of a page's rows moved when one batch charged them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_charging_a_page_of_members_rewrites_each_in_place() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let members = app.members_bulk(120).await;
    let ids: Vec<i64> = members.iter().map(|(id, _)| *id).collect();
    let pages = || async {
        let mut conn = app.db.read().await.expect("read");
        let rows: Vec<(i64, i64)> = shopd::sql_all!(
            (i64, i64);
            &mut conn,
            "SELECT id, CAST((ctid::text::point)[0] AS BIGINT) FROM users ORDER BY id"
        )
        .expect("pages");
        rows
    };
    let before = pages().await;
    assert!(
        before.iter().map(|(_, page)| page).max() > Some(&0),
        "the members fill more than one page: {before:?}"
    );
    let charged = ids.clone();
    app.db
        .write(
            Locks {
                users: ids.clone(),
                ..Locks::none()
            },
            async move |tx: &mut Tx| -> AppResult<()> {
                let limits = shopd::domain::money::BalanceLimits::default();
                let amount = shopd::domain::money::ChargeAmount::parse(1_000, &limits)
                    .map_err(AppError::from)?;
                for user_id in charged {
                    shopd::store::balance::charge(
                        tx,
                        shopd::store::balance::Charge {
                            user_id,
                            amount,
                            max_balance: limits.max_balance,
                            now: shopd::store::now(),
                        },
                    )
                    .await?;
                }
                Ok(())
            },
        )
        .await
        .expect("charge every member in one batch");
    let after = pages().await;
    let moved: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, a)| (b.0, b.1, a.1))
        .collect();
    assert!(
        moved.is_empty(),
        "rows moved to another page (id, from, to): {moved:?}"
    );
    for id in ids {
        assert_eq!(app.balance_of(id).await, 1_000);
    }
}

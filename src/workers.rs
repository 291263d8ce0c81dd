//! Background workers, stopped by the shutdown token.

use std::time::Duration;

use chrono::TimeDelta;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use anyhow::Context;

use crate::config::RelayMode;
use crate::db::{Locks, Tx};
use crate::state::AppState;
use crate::store;

/// How long idempotency keys are kept (SPEC §7: at least 24 hours).
pub const IDEMPOTENCY_RETENTION: TimeDelta = TimeDelta::hours(25);

pub struct Workers(JoinSet<()>);

impl Workers {
    pub async fn join(mut self) {
        while self.0.join_next().await.is_some() {}
    }
}

pub fn spawn(state: AppState, shutdown: CancellationToken) -> Workers {
    let mut set = JoinSet::new();
    // `--relay off`: no relay here; this instance's events are claimed by another's.
    let relay = match state.settings.relay {
        RelayMode::On => crate::relay::Relay::new(state.clone()),
        RelayMode::Off => Ok(None),
    };
    match relay {
        Ok(Some(relay)) => {
            set.spawn(relay.run(shutdown.clone()));
        }
        Ok(None) => {}
        Err(err) => tracing::error!(error = ?err, "cannot start the outbox relay"),
    }
    let gauges_state = state.clone();
    set.spawn(every(Duration::from_secs(5), shutdown.clone(), move || {
        let state = gauges_state.clone();
        async move { crate::relay::update_gauges(&state).await }
    }));
    let ranking_state = state.clone();
    set.spawn(every(
        state.settings.ranking_interval,
        shutdown.clone(),
        move || {
            let state = ranking_state.clone();
            async move {
                crate::ranking::refresh(&state.db, &state.ranking, Default::default())
                    .await
                    .context("best-seller aggregation")?;
                Ok(())
            }
        },
    ));
    let sweeper_state = state.clone();
    set.spawn(every(
        state.settings.sweep_interval,
        shutdown.clone(),
        move || {
            let state = sweeper_state.clone();
            async move { expire_overdue_orders(&state).await.map(|_| ()) }
        },
    ));
    set.spawn(every(Duration::from_secs(600), shutdown, move || {
        let state = state.clone();
        async move { purge_idempotency_keys(&state).await }
    }));
    Workers(set)
}

/// Run `job` every `period` until shutdown; failures are logged and retried next period.
async fn every<F, Fut>(period: Duration, shutdown: CancellationToken, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {
                if let Err(err) = job().await {
                    tracing::warn!(error = ?err, "background job failed");
                }
            }
        }
    }
}

/// Expire PENDING orders past their reservation, giving back stock and coupons (each with its
/// `ORDER_EXPIRED` event). Each order is
/// its own short transaction, and the conditional status change makes concurrent sweepers (other
/// instances, or a payment racing the sweep) safe: an order expires at most once.
pub async fn expire_overdue_orders(state: &AppState) -> anyhow::Result<usize> {
    let mut expired = 0;
    // Bounded: a huge backlog is finished by the next ticks.
    for _ in 0..50 {
        let now = store::now();
        let due = {
            let mut conn = state.db.read().await.context("order expiry: connecting")?;
            store::orders::due_for_expiry(&mut conn, now, 100)
                .await
                .context("order expiry: listing orders due")?
        };
        // Each expiry is its own command, so one batch can expire many orders at once.
        let expiries = due.iter().map(|&order_id| {
            let db = state.db.clone();
            async move {
                let locks = store::orders::closing_locks(&db, order_id).await?;
                db.write(locks, async move |tx: &mut Tx| {
                    store::orders::expire_order(tx, order_id, now).await
                })
                .await
            }
        });
        for result in futures::future::join_all(expiries).await {
            if result.context("order expiry: expiring an order")? {
                expired += 1;
            }
        }
        if due.len() < 100 {
            break;
        }
    }
    if expired > 0 {
        tracing::info!(expired, "expired unpaid orders");
        metrics::counter!("orders_expired_total").increment(expired as u64);
    }
    Ok(expired)
}

/// Forget idempotency keys older than [`IDEMPOTENCY_RETENTION`] (SPEC §7: kept at least 24 h).
pub async fn purge_idempotency_keys(state: &AppState) -> anyhow::Result<()> {
    let now = store::now();
    let purged = state
        .db
        .write(Locks::none(), async move |tx: &mut Tx| {
            store::idempotency::purge_older_than(tx, now - IDEMPOTENCY_RETENTION, now).await
        })
        .await
        .context("purging idempotency keys")?;
    if purged > 0 {
        tracing::info!(purged, "purged expired idempotency keys");
    }
    Ok(())
}

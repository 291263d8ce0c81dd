//! Background workers, stopped by the shutdown token.

use std::time::Duration;

use chrono::TimeDelta;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
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

async fn purge_idempotency_keys(state: &AppState) -> anyhow::Result<()> {
    let now = store::now();
    let mut tx = state.db.begin().await?;
    let purged = store::idempotency::purge_older_than(&mut tx, now - IDEMPOTENCY_RETENTION, now)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tx.commit().await?;
    if purged > 0 {
        tracing::info!(purged, "purged expired idempotency keys");
    }
    Ok(())
}

//! The outbox relay: delivers `ORDER_PAID` events to the data platform (SPEC §10).
//!
//! Woken right after a payment commits (no polling delay on the happy path), and also on a
//! periodic sweep and whenever a retry falls due, so events missed by a crash or committed by
//! another instance are delivered too. Each batch is claimed with a lease (see
//! [`crate::store::outbox::claim_due`]): an event is in flight in one relay at a time, and
//! delivery is at-least-once — receivers dedupe on `shopd-event-id`.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use futures::future::join_all;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::db::{Locks, Tx};
use crate::domain::backoff::retry_delay;
use crate::error::AppError;
use crate::signature;
use crate::state::AppState;
use crate::store::{self, outbox};

const BATCH: i64 = 64;

/// What is recorded of one attempt.
enum Outcome {
    Delivered {
        id: String,
    },
    Failed {
        id: String,
        error: String,
        next: chrono::DateTime<Utc>,
        dead: bool,
    },
}

/// What one delivery attempt produced.
#[derive(Debug)]
enum Attempt {
    Delivered,
    Failed(String),
}

pub struct Relay {
    state: AppState,
    client: reqwest::Client,
    url: String,
}

impl Relay {
    /// `None` when no data platform is configured (events then wait, PENDING).
    pub fn new(state: AppState) -> anyhow::Result<Option<Relay>> {
        let Some(url) = state.settings.data_platform_url.clone() else {
            return Ok(None);
        };
        let client = reqwest::Client::builder()
            .timeout(state.settings.data_platform_timeout)
            .user_agent(concat!("shopd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Some(Relay { state, client, url }))
    }

    /// Deliver until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        let sweep = self.state.settings.outbox_sweep_interval;
        loop {
            let wait = match self.deliver_due().await {
                Ok(()) => self.until_next_due(sweep).await,
                Err(err) => {
                    tracing::warn!(error = ?err, "outbox relay pass failed");
                    sweep
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.state.outbox_wakeup.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sleep no longer than the sweep interval, and no longer than the next retry's due time.
    async fn until_next_due(&self, sweep: Duration) -> Duration {
        let next = async {
            let mut conn = self.state.db.read().await.ok()?;
            outbox::next_due(&mut conn).await.ok().flatten()
        };
        match next.await {
            Some(due) => (due - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_millis(5), sweep),
            None => sweep,
        }
    }

    /// Claim and deliver due events until none are left.
    pub async fn deliver_due(&self) -> anyhow::Result<()> {
        loop {
            let now = store::now();
            let lease = chrono::Duration::from_std(self.state.settings.data_platform_timeout * 3)?;
            let batch = self
                .state
                .db
                .write(Locks::none(), async move |tx: &mut Tx| {
                    outbox::claim_due(tx, now, now + lease, BATCH).await
                })
                .await
                .context("claiming due outbox events")?;
            if batch.is_empty() {
                return Ok(());
            }
            let attempts = join_all(batch.iter().map(|event| self.deliver(event))).await;
            let now = store::now();
            let outcomes = batch
                .iter()
                .zip(attempts)
                .map(|(event, attempt)| self.outcome(event, attempt, now))
                .collect::<anyhow::Result<Vec<_>>>()?;
            self.state
                .db
                .write(Locks::none(), async move |tx: &mut Tx| {
                    for outcome in &outcomes {
                        match outcome {
                            Outcome::Delivered { id } => {
                                outbox::mark_delivered(tx, id, now).await?
                            }
                            Outcome::Failed {
                                id,
                                error,
                                next,
                                dead,
                            } => outbox::mark_failed(tx, id, error, *next, *dead).await?,
                        }
                    }
                    Ok::<_, AppError>(())
                })
                .await
                .context("recording outbox delivery attempts")?;
        }
    }

    async fn deliver(&self, event: &outbox::ClaimedEvent) -> Attempt {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("shopd-event-id", &event.id)
            .header("shopd-event-type", &event.event_type);
        if let Some(secret) = &self.state.settings.data_platform_secret {
            let header = signature::sign(secret, Utc::now().timestamp(), event.payload.as_bytes());
            request = request.header(signature::HEADER, header);
        }
        let started = Instant::now();
        let outcome = match request.body(event.payload.clone()).send().await {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) => Attempt::Failed(format!("HTTP {}", response.status())),
            Err(err) => Attempt::Failed(format!("{err}")),
        };
        let label = if matches!(outcome, Attempt::Delivered) {
            "delivered"
        } else {
            "failed"
        };
        metrics::counter!("outbox_delivery_attempts_total", "outcome" => label).increment(1);
        metrics::histogram!("outbox_delivery_request_seconds")
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    /// What to record of one attempt (the backoff is decided here, outside the transaction).
    fn outcome(
        &self,
        event: &outbox::ClaimedEvent,
        attempt: Attempt,
        now: chrono::DateTime<Utc>,
    ) -> anyhow::Result<Outcome> {
        let settings = &self.state.settings;
        Ok(match attempt {
            Attempt::Delivered => {
                let latency = (now - event.created_at).to_std().unwrap_or_default();
                metrics::histogram!("outbox_commit_to_delivery_seconds")
                    .record(latency.as_secs_f64());
                Outcome::Delivered {
                    id: event.id.clone(),
                }
            }
            Attempt::Failed(error) => {
                let failures = u32::try_from(event.attempts + 1).unwrap_or(u32::MAX);
                let dead = failures >= settings.outbox_max_attempts;
                let jitter: f64 = rand::rng().random();
                let delay = retry_delay(
                    failures,
                    settings.outbox_backoff_base,
                    settings.outbox_backoff_max,
                    jitter,
                );
                let next = now + chrono::Duration::from_std(delay)?;
                if dead {
                    tracing::warn!(event_id = %event.id, failures, %error, "outbox event is DEAD");
                } else {
                    tracing::debug!(event_id = %event.id, failures, %error, ?delay, "outbox delivery failed; will retry");
                }
                Outcome::Failed {
                    id: event.id.clone(),
                    error,
                    next,
                    dead,
                }
            }
        })
    }
}

/// Publish the outbox gauges (pending and dead counts).
pub async fn update_gauges(state: &AppState) -> anyhow::Result<()> {
    let mut conn = state.db.read().await?;
    let (pending, dead) = outbox::counts(&mut conn).await?;
    metrics::gauge!("outbox_pending_events").set(pending as f64);
    metrics::gauge!("outbox_dead_events").set(dead as f64);
    Ok(())
}

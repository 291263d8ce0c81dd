//! The outbox relay: delivers outbox events to the data platform (SPEC §10).
//!
//! The normal path has no claim: an event written by a request of this process is written
//! already leased to this relay, and once its batch has committed the committer hands it over
//! in memory ([`crate::db::committer::Handoff`]; never before the commit, never for a
//! rolled-back command or a failed commit). The dispatcher sends it at once. If the hand-off
//! queue is full the event is left to its lease, and claimed when that runs out; if the process
//! dies, the same: another relay (or this one restarted) claims it when the lease has run out.
//!
//! The claimer still takes everything else: retries that fall due, expired leases, events of
//! other instances, and it sweeps periodically, so events missed by a crash are delivered too.
//!
//! Delivery is a pipeline with a bounded number of requests in flight
//! (`--relay-concurrency`, default 16):
//!
//! - the **claimer** claims due events with a lease (see [`crate::store::outbox::claim_due`]: an
//!   event is in flight in one relay of one instance at a time) into a short local queue (four
//!   events per slot): claims are database writes, so taking a few ahead keeps the slots busy
//!   while the next claim is on its way;
//! - the **dispatcher** takes a free slot, then the next queued event, and starts its delivery:
//!   one `POST` over a shared, pooled HTTP client (connections kept alive and reused; at most
//!   one per slot). An event whose lease would run out before its request could time out is
//!   not sent (another relay may take it by then): it is retried when its lease has run out;
//! - a delivery frees its slot as soon as the answer is in; the **recorder** writes the
//!   outcomes (delivered, or failed with the next attempt's time, or DEAD) in batches through
//!   the committer, off the delivery path.
//!
//! Delivery is at-least-once: an outcome lost to a crash (or a failed recording) leaves the
//! event leased, and it is sent again, with the same `shopd-event-id`, once the lease runs out.
//! Receivers dedupe on that id.
//!
//! [`Relay::deliver_due`] is one pass of the same machinery without the background loops: it
//! claims what is due at a given instant, sends it through the dispatcher and records the
//! outcomes before it returns. Tests run it on an instance started with `--relay off`, instead
//! of waiting for the background relay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use futures::FutureExt;
use rand::Rng;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::db::committer::{Handoff, Written};
use crate::db::{Dialect, Locks, Tx};
use crate::domain::backoff::retry_delay;
use crate::error::AppError;
use crate::signature;
use crate::state::AppState;
use crate::store::{self, outbox};

/// Events claimed ahead of free slots, per slot.
const QUEUE_PER_SLOT: usize = 4;
/// Most events claimed by one statement.
const CLAIM_MAX: usize = 256;
/// Most outcomes recorded in one transaction.
const RECORD_MAX: usize = 256;
/// Attempts at recording a batch of outcomes before leaving its events to their leases.
const RECORD_TRIES: u32 = 5;
/// Committed events handed over and not yet sent, at most (beyond, they wait out their lease).
const HANDOFF_CAPACITY: usize = 8_192;

/// What is recorded of one attempt.
#[derive(Debug)]
enum Outcome {
    Delivered {
        id: String,
        /// The order an `ORDER_PAID` delivery confirms (its row lock is declared).
        confirms: Option<i64>,
        at: chrono::DateTime<Utc>,
    },
    Failed {
        id: String,
        error: String,
        next: chrono::DateTime<Utc>,
        dead: bool,
    },
}

/// What one [`Relay::deliver_due`] pass did. Every claimed event is either sent (and counted
/// once in `delivered`, `failed` or `dead`) or `unsent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Events claimed: PENDING, due, and not leased to another relay.
    pub claimed: usize,
    /// Answered 2xx; recorded DELIVERED.
    pub delivered: usize,
    /// Failed; recorded with the time of their next attempt.
    pub failed: usize,
    /// Failed for the last allowed time; recorded DEAD.
    pub dead: usize,
    /// Claimed, not sent: the lease could have run out during the request. Left leased, they
    /// are claimed again once it has.
    pub unsent: usize,
}

/// What one delivery attempt produced.
#[derive(Debug)]
enum Attempt {
    Delivered,
    Failed(String),
}

/// A claimed (or handed-over) event and the end of its lease.
struct Claimed {
    event: outbox::ClaimedEvent,
    lease_until: chrono::DateTime<Utc>,
}

impl From<Written> for Claimed {
    fn from(w: Written) -> Self {
        Claimed {
            event: outbox::ClaimedEvent {
                id: w.id,
                event_type: w.event_type,
                aggregate_id: w.aggregate_id,
                payload: w.payload,
                attempts: 0,
                created_at: w.created_at,
            },
            lease_until: w.lease_until,
        }
    }
}

pub struct Relay {
    sender: Arc<Sender>,
    /// One permit per delivery allowed in flight.
    slots: Arc<Semaphore>,
    /// Events claimed but not yet sent, at most.
    queue_capacity: usize,
    lease: chrono::Duration,
    /// Set on the database while the relay runs: committed events come through `handed`.
    handoff: Arc<Handoff>,
    handed: Option<mpsc::Receiver<Written>>,
}

/// What a delivery task needs: the pooled client and where to send.
struct Sender {
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
        let concurrency = usize::try_from(state.settings.relay_concurrency)?.max(1);
        let timeout = state.settings.data_platform_timeout;
        // reqwest keeps connections alive and pools them per host; the pool never holds more
        // idle connections than can be busy at once.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("shopd/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(concurrency)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        // A claim is leased for three request timeouts: ample for the wait in the local queue,
        // the request and the recording of its outcome; short enough that a crashed instance's
        // claims come back soon.
        // Events handed over at commit are leased from the moment they are written, for as long.
        let lease = chrono::Duration::from_std(timeout.saturating_mul(3))
            .context("--data-platform-timeout is too long")?;
        let (queue, handed) = mpsc::channel(HANDOFF_CAPACITY);
        let wakeup = state.outbox_wakeup.clone();
        let handoff = Arc::new(Handoff {
            lease,
            queue,
            wake: Box::new(move || wakeup.notify()),
        });
        Ok(Some(Relay {
            sender: Arc::new(Sender { state, client, url }),
            slots: Arc::new(Semaphore::new(concurrency)),
            queue_capacity: concurrency.saturating_mul(QUEUE_PER_SLOT),
            lease,
            handoff,
            handed: Some(handed),
        }))
    }

    fn state(&self) -> &AppState {
        &self.sender.state
    }

    /// Deliver until shutdown; then let the deliveries in flight finish (each is bounded by the
    /// request timeout), record their outcomes, and give back the leases of events claimed but
    /// not sent.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let Some(handed) = self.handed.take() else {
            return;
        };
        // Before the first claim: an event committed from now on either comes through `handed`
        // or was written unleased and is claimed.
        self.state().db.set_handoff(self.handoff.clone());
        let (outcomes, recorded) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record(self.state().clone(), recorded));
        let (queue, queued) = mpsc::channel(self.queue_capacity);
        let ((), (mut queued, mut handed)) = tokio::join!(
            self.claim_loop(queue, &shutdown),
            self.dispatch_loop(queued, handed, outcomes, &shutdown),
        );
        // Events written from now on are left for any relay's claimer. (One handed over by a
        // batch committing right now keeps its lease until it runs out.)
        self.state().db.clear_handoff(&self.handoff);
        let mut unsent = Vec::new();
        while let Ok(claimed) = queued.try_recv() {
            unsent.push(claimed.event.id);
        }
        while let Ok(written) = handed.try_recv() {
            unsent.push(written.id);
        }
        if !unsent.is_empty() {
            let released = self
                .state()
                .db
                .write(Locks::none(), async move |tx: &mut Tx| {
                    for id in &unsent {
                        outbox::release(tx, id).await?;
                    }
                    Ok::<_, AppError>(())
                })
                .await;
            if let Err(err) = released {
                tracing::warn!(error = ?err, "could not release unsent outbox claims; they wait out their lease");
            }
        }
        if let Err(err) = recorder.await {
            tracing::error!(error = ?err, "outbox recorder failed");
        }
    }

    /// Keep the local queue topped up with due events until shutdown.
    async fn claim_loop(&self, queue: mpsc::Sender<Claimed>, shutdown: &CancellationToken) {
        let sweep = self.state().settings.outbox_sweep_interval;
        loop {
            // Wait for room in the queue (the dispatcher takes events as slots free up).
            let room = tokio::select! {
                _ = shutdown.cancelled() => return,
                permit = queue.reserve() => match permit {
                    Ok(permit) => {
                        drop(permit);
                        queue.capacity().max(1)
                    }
                    Err(_) => return,
                },
            };
            let wanted = room.min(CLAIM_MAX);
            let wait = match self.claim(store::now(), wanted).await {
                Ok(events) => {
                    let claimed = events.len();
                    for claimed in events {
                        // The dispatcher is the only other party: closed means shutdown.
                        if queue.send(claimed).await.is_err() {
                            return;
                        }
                    }
                    if claimed == wanted {
                        // As many as asked for: more may be due.
                        continue;
                    }
                    // Woken (a commit wrote events) while claiming: claim again at once.
                    if self
                        .state()
                        .outbox_wakeup
                        .notified()
                        .now_or_never()
                        .is_some()
                    {
                        continue;
                    }
                    self.until_next_due(sweep).await
                }
                Err(err) => {
                    tracing::warn!(error = ?err, "claiming outbox events failed");
                    sweep.min(Duration::from_secs(1))
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.state().outbox_wakeup.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Start one delivery per free slot and queued (claimed or handed-over) event until
    /// shutdown, then wait for those in flight. Returns both queues, with whatever was claimed
    /// or handed over and not sent.
    async fn dispatch_loop(
        &self,
        mut queue: mpsc::Receiver<Claimed>,
        mut handed: mpsc::Receiver<Written>,
        outcomes: mpsc::UnboundedSender<Outcome>,
        shutdown: &CancellationToken,
    ) -> (mpsc::Receiver<Claimed>, mpsc::Receiver<Written>) {
        let timeout = chrono::Duration::from_std(self.state().settings.data_platform_timeout)
            .unwrap_or(chrono::Duration::MAX);
        let mut deliveries = JoinSet::new();
        loop {
            while deliveries.try_join_next().is_some() {}
            let slot = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                slot = self.slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            // Handed-over events (fresh, the latency path) and claimed ones (retries, expired
            // leases, other instances'), whichever is ready; neither starves the other.
            let claimed = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(written) = handed.recv() => {
                    metrics::counter!("outbox_events_taken_total", "source" => "handoff").increment(1);
                    Claimed::from(written)
                }
                claimed = queue.recv() => match claimed {
                    Some(claimed) => {
                        metrics::counter!("outbox_events_taken_total", "source" => "claim").increment(1);
                        claimed
                    }
                    None => break,
                },
            };
            let now = Utc::now();
            if now
                .checked_add_signed(timeout)
                .is_none_or(|end| end >= claimed.lease_until)
            {
                // The request could outlive the lease: another relay might then send it too.
                // Left alone, it is claimed again when the lease has run out.
                tracing::debug!(event_id = %claimed.event.id, "outbox claim too old to send");
                metrics::counter!("outbox_claims_expired_total").increment(1);
                continue;
            }
            let sender = self.sender.clone();
            let outcomes = outcomes.clone();
            deliveries.spawn(async move {
                let outcome = sender.attempt(&claimed.event).await;
                drop(slot);
                // The recorder outlives every delivery (it stops when all senders are gone).
                let _ = outcomes.send(outcome);
            });
        }
        queue.close();
        handed.close();
        while deliveries.join_next().await.is_some() {}
        (queue, handed)
    }

    /// Claim up to `limit` events due at `now` (normally the current time), leased to this
    /// relay. The lease runs from `now` or from the current time, whichever is later. On
    /// PostgreSQL the claim is a short transaction of its own (`SKIP LOCKED` keeps it from
    /// waiting on anyone); a claim that took nothing is committed without waiting for the WAL
    /// flush, one that took events waits for it (see below). On SQLite it joins the
    /// committer's next batch (one writer).
    async fn claim(
        &self,
        now: chrono::DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Vec<Claimed>> {
        let lease_until = now.max(store::now()) + self.lease;
        let limit = i64::try_from(limit)?;
        let db = &self.state().db;
        let events = match db.dialect() {
            Dialect::Postgres => {
                let mut tx = db.begin().await.context("claiming due outbox events")?;
                crate::sql_execute!(&mut tx, "SET LOCAL synchronous_commit = off")?;
                let events = outbox::claim_due(&mut tx, now, lease_until, limit).await?;
                if !events.is_empty() {
                    // An event's batch may be committed and not yet durable (the committers
                    // release their locks at commit and answer after the disk flush): a commit
                    // that waits for the flush, after reading them, covers their batches too,
                    // so no event leaves before its order is durable.
                    crate::sql_execute!(&mut tx, "SET LOCAL synchronous_commit TO DEFAULT")?;
                }
                tx.commit().await.context("claiming due outbox events")?;
                events
            }
            Dialect::Sqlite => db
                .write(Locks::none(), async move |tx: &mut Tx| {
                    outbox::claim_due(tx, now, lease_until, limit).await
                })
                .await
                .context("claiming due outbox events")?,
        };
        Ok(events
            .into_iter()
            .map(|event| Claimed { event, lease_until })
            .collect())
    }

    /// One pass at the current time: see [`Relay::deliver_due`].
    pub async fn deliver_pending(&self) -> anyhow::Result<DeliveryReport> {
        self.deliver_due(store::now()).await
    }

    /// One delivery pass, without the background loops: claim every event due at `now` (its
    /// attempt is due and no relay holds a lease on it), send each once through the dispatcher
    /// (at most `--relay-concurrency` in flight), record the outcomes, and report. When it
    /// returns, every outcome is recorded: a failure's next attempt is scheduled from the time
    /// of the failure (SPEC §10 backoff), and an event at its last attempt is DEAD.
    ///
    /// `now` is normally the current time ([`Relay::deliver_pending`]); a later instant takes
    /// the events whose retry or lease falls due by then, so a caller can step over a backoff
    /// or a lease without waiting for it. An event is attempted at most once per pass, so a
    /// pass ends even when the platform fails everything.
    pub async fn deliver_due(&self, now: chrono::DateTime<Utc>) -> anyhow::Result<DeliveryReport> {
        // Claimed events are leased to this pass: a later claim of the pass never takes them.
        let mut events = Vec::new();
        loop {
            let batch = self.claim(now, CLAIM_MAX).await?;
            let more = batch.len() == CLAIM_MAX;
            events.extend(batch);
            if !more {
                break;
            }
        }
        let claimed = events.len();
        let (queue, queued) = mpsc::channel(claimed.max(1));
        for event in events {
            queue
                .try_send(event)
                .map_err(|_| anyhow::anyhow!("the pass's queue holds every claimed event"))?;
        }
        // Closed queues: the dispatcher stops once it has started a delivery of each event.
        drop(queue);
        let (_, handed) = mpsc::channel(1);
        let (outcomes, mut recorded) = mpsc::unbounded_channel();
        // Outcomes are recorded in batches as they come, as the background recorder does; a
        // batch that cannot be recorded is left to its leases, and the pass fails.
        let record = async {
            let mut buffer = Vec::with_capacity(RECORD_MAX);
            let mut counted = DeliveryReport::default();
            let mut result = Ok(());
            while recorded.recv_many(&mut buffer, RECORD_MAX).await > 0 {
                for outcome in &buffer {
                    match outcome {
                        Outcome::Delivered { .. } => counted.delivered += 1,
                        Outcome::Failed { dead: true, .. } => counted.dead += 1,
                        Outcome::Failed { dead: false, .. } => counted.failed += 1,
                    }
                }
                let batch = std::mem::take(&mut buffer);
                if let Err(err) = record_batch(self.state(), batch).await {
                    result = result.and(Err(err));
                }
            }
            result.map(|()| counted)
        };
        let never = CancellationToken::new();
        let (_, counted) =
            tokio::join!(self.dispatch_loop(queued, handed, outcomes, &never), record);
        let DeliveryReport {
            delivered,
            failed,
            dead,
            ..
        } = counted?;
        Ok(DeliveryReport {
            delivered,
            failed,
            dead,
            unsent: claimed.saturating_sub(delivered + failed + dead),
            claimed,
        })
    }

    /// Sleep no longer than the sweep interval, and no longer than until the next event can be
    /// claimed (its retry falls due, or another relay's lease on it runs out).
    async fn until_next_due(&self, sweep: Duration) -> Duration {
        let next = async {
            let mut conn = self.state().db.read().await.ok()?;
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
}

impl Sender {
    /// Deliver one event and decide what to record of it.
    async fn attempt(&self, event: &outbox::ClaimedEvent) -> Outcome {
        metrics::gauge!("outbox_deliveries_in_flight").increment(1.0);
        let attempt = self.deliver(event).await;
        metrics::gauge!("outbox_deliveries_in_flight").decrement(1.0);
        self.outcome(event, attempt, store::now())
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
    ) -> Outcome {
        let settings = &self.state.settings;
        match attempt {
            Attempt::Delivered => {
                let latency = (now - event.created_at).to_std().unwrap_or_default();
                metrics::histogram!("outbox_commit_to_delivery_seconds")
                    .record(latency.as_secs_f64());
                Outcome::Delivered {
                    id: event.id.clone(),
                    confirms: (event.event_type == outbox::ORDER_PAID)
                        .then_some(event.aggregate_id),
                    at: now,
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
                // A backoff too long for a timestamp waits a year (an operator's typo).
                let year = chrono::Duration::days(365);
                let delay = chrono::Duration::from_std(delay).map_or(year, |d| d.min(year));
                let next = now + delay;
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
        }
    }
}

/// Record delivery outcomes as they come, many per transaction, until every sender is gone.
/// After a failure is recorded the claim loop is woken, to sleep until that retry is due.
async fn record(state: AppState, mut outcomes: mpsc::UnboundedReceiver<Outcome>) {
    let mut buffer = Vec::with_capacity(RECORD_MAX);
    while outcomes.recv_many(&mut buffer, RECORD_MAX).await > 0 {
        let batch = std::mem::take(&mut buffer);
        let any_failed = batch.iter().any(|o| matches!(o, Outcome::Failed { .. }));
        let events = batch.len();
        if let Err(err) = record_batch(&state, batch).await {
            // Their leases run out and they are sent again (same event ids).
            tracing::error!(error = ?err, events, "could not record outbox delivery attempts");
        }
        if any_failed {
            state.outbox_wakeup.notify();
        }
    }
}

/// Record one batch of outcomes in one transaction, trying [`RECORD_TRIES`] times.
async fn record_batch(state: &AppState, batch: Vec<Outcome>) -> anyhow::Result<()> {
    let batch = Arc::new(batch);
    let mut attempt = 1;
    loop {
        match write_outcomes(state, batch.clone()).await {
            Ok(()) => return Ok(()),
            Err(err) if attempt < RECORD_TRIES => {
                tracing::warn!(error = ?err, attempt, "recording outbox delivery attempts failed; retrying");
                tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

async fn write_outcomes(state: &AppState, batch: Arc<Vec<Outcome>>) -> anyhow::Result<()> {
    // A delivered ORDER_PAID confirms its order: declare those rows, so on PostgreSQL they are
    // locked in the committers' global order like every other batch's (no deadlock with a
    // refund or a cancel of the same orders).
    let mut orders: Vec<i64> = batch
        .iter()
        .filter_map(|o| match o {
            Outcome::Delivered { confirms, .. } => *confirms,
            Outcome::Failed { .. } => None,
        })
        .collect();
    orders.sort_unstable();
    orders.dedup();
    let locks = Locks {
        orders,
        ..Locks::none()
    };
    state
        .db
        .write(locks, async move |tx: &mut Tx| {
            for outcome in batch.iter() {
                match outcome {
                    Outcome::Delivered { id, at, .. } => {
                        outbox::mark_delivered(tx, id, *at).await?
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
        .context("recording outbox delivery attempts")
}

/// Publish the outbox gauges (pending and dead counts).
pub async fn update_gauges(state: &AppState) -> anyhow::Result<()> {
    let mut conn = state.db.read().await?;
    let (pending, dead) = outbox::counts(&mut conn).await?;
    metrics::gauge!("outbox_pending_events").set(pending as f64);
    metrics::gauge!("outbox_dead_events").set(dead as f64);
    Ok(())
}

//! Group commit (SPEC §13): every write command is queued to a committer that runs many
//! commands in ONE transaction, each in its own savepoint, commits once, and only then answers
//! every caller.
//!
//! (Longer than most files: queueing, batching, savepoints, PostgreSQL pre-locks and retries,
//! the panic guard and the metrics are one protocol; split, its invariants would be spread
//! over several files.)
//!
//! - A command that fails (a business rejection or a statement error) rolls back only its own
//!   savepoint; its caller gets that failure, the rest of the batch commits.
//! - A failed commit (or a broken connection) answers every caller of the batch with a
//!   retryable `503`, and nothing of the batch is applied.
//! - The queue is bounded: when it is full the caller is answered `503` at once.
//! - SQLite: one committer thread owns the one write connection (rusqlite, cached statements,
//!   no per-statement thread hand-off).
//! - PostgreSQL: `--pg-committers` threads (default one), each with its own connection.
//!   Before running a batch a committer locks the rows the batch declared ([`Locks`]) in one
//!   global order (coupons, products, users, orders; ascending ids), so two batches never wait
//!   on each other in a cycle, and many orders of one batch on one hot product take its lock
//!   once. The same round trip reads the locked products and balances into the batch's unit
//!   of work (`work.rs`), which keeps new rows for one flush statement and opens each
//!   command's savepoint lazily. A command that still loses a deadlock (a row it did not
//!   declare) is answered `503` (retryable) alone.
//!
//! Each committer runs on its own OS thread with a single-threaded runtime, so the command
//! futures need not be `Send`; only the command closure crosses threads.
//!
//! (Longer than most files: the queue, the batch loop for each backend and the PostgreSQL lock
//! ordering are one mechanism, easier to check for correctness read together.)

use std::cell::RefCell;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use tokio::sync::oneshot;

mod wal_sync;

use super::Tx;
use super::lite::LiteConn;
use super::lite_vfs::{DeferCommitSync, take_owed_sync};
pub use super::work::DURABLE_BARRIER;
use super::work::PgBatch;

/// A future that runs on the committer's own thread.
pub type LocalFuture<'t, T> = Pin<Box<dyn Future<Output = T> + 't>>;

/// A write command: a closure over the batch transaction, sent to the committer thread.
pub type Command<T, E> =
    Box<dyn for<'t> FnOnce(&'t mut Tx) -> LocalFuture<'t, Result<T, E>> + Send + 'static>;

/// What the committer needs to know about a command's error type.
pub trait CommandError: Sized {
    /// The answer to every caller of a batch that could not commit, or of a full queue.
    fn unavailable(reason: &'static str) -> Self;
}

/// Rows a command will lock, declared up front so a batch locks them in one global order
/// (PostgreSQL). A command that touches rows it did not declare is still correct; it only
/// risks a deadlock, which answers that command `503`.
#[derive(Clone, Debug, Default)]
pub struct Locks {
    pub coupons: Vec<i64>,
    pub products: Vec<i64>,
    pub users: Vec<i64>,
    pub orders: Vec<i64>,
}

impl Locks {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn user(user_id: i64) -> Self {
        Self {
            users: vec![user_id],
            ..Self::default()
        }
    }

    fn extend(&mut self, other: &Locks) {
        self.coupons.extend_from_slice(&other.coupons);
        self.products.extend_from_slice(&other.products);
        self.users.extend_from_slice(&other.users);
        self.orders.extend_from_slice(&other.orders);
    }
}

/// Committer knobs.
#[derive(Clone, Debug)]
pub struct CommitOptions {
    /// Most commands in one transaction.
    pub batch_max: usize,
    /// After the first command arrives, wait this long for more (0: batch what is queued).
    pub wait: Duration,
    /// Commands queued beyond this are refused with `503`.
    pub queue_capacity: usize,
    /// PostgreSQL committers (connections) per instance.
    pub pg_committers: usize,
    /// PostgreSQL: most batches of one committer committed and waiting for the disk at once
    /// (see `DiskWaits`).
    pub pg_in_flight: usize,
    /// PostgreSQL: the statement that returns once a committed batch is durable
    /// ([`DURABLE_BARRIER`]; tests replace it).
    pub pg_durable_barrier: &'static str,
    /// SQLite: once the WAL holds this many pages, the committer completes a checkpoint
    /// between two batches so that the WAL starts over (see `sqlite_checkpointer`).
    pub sqlite_wal_restart_pages: u32,
    /// Tests only: the SQLite WAL syncer takes this lock before each sync (a test holds it
    /// to watch batches that are committed and not yet answered).
    pub sqlite_sync_gate: Option<Arc<std::sync::Mutex<()>>>,
}

impl Default for CommitOptions {
    fn default() -> Self {
        Self {
            batch_max: 256,
            wait: Duration::ZERO,
            queue_capacity: 16_384,
            pg_committers: 1,
            pg_in_flight: 4,
            pg_durable_barrier: DURABLE_BARRIER,
            sqlite_wal_restart_pages: 4096,
            sqlite_sync_gate: None,
        }
    }
}

/// The type-erased job the queue carries.
trait Job: Send {
    fn abandoned(&self) -> bool;
    fn locks(&self) -> &Locks;
    fn enqueued(&self) -> Instant;
    /// Run the command (in its savepoint: opened before it on SQLite, by its first statement
    /// on a PostgreSQL batch, `work.rs`). `Ok(true)` if the command
    /// succeeded, `Ok(false)` if it failed (its savepoint must be rolled back). `Err` only
    /// when the transaction itself broke.
    fn run<'t>(&'t mut self, tx: &'t mut Tx) -> LocalFuture<'t, Result<bool, sqlx::Error>>;
    /// Answer the caller once the batch's fate is known.
    fn finish(self: Box<Self>, fate: Fate);
}

/// How a batch ended, as its callers are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Committed (and, on PostgreSQL, confirmed durable): each caller gets its outcome.
    Committed,
    /// Not committed (or the command was never run): every caller gets `503`.
    Failed,
    /// Committed, but not confirmed durable: the outcome is unknown, every caller gets `503`.
    Unconfirmed,
}

struct TypedJob<T, E> {
    command: Option<Command<T, E>>,
    outcome: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
    locks: Locks,
    enqueued: Instant,
}

impl<T: Send + 'static, E: CommandError + Send + 'static> Job for TypedJob<T, E> {
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn locks(&self) -> &Locks {
        &self.locks
    }

    fn enqueued(&self) -> Instant {
        self.enqueued
    }

    fn run<'t>(&'t mut self, tx: &'t mut Tx) -> LocalFuture<'t, Result<bool, sqlx::Error>> {
        Box::pin(async move {
            let Some(command) = self.command.take() else {
                return Ok(true);
            };
            let outcome = command(tx).await;
            let ok = outcome.is_ok();
            self.outcome = Some(outcome);
            Ok(ok)
        })
    }

    fn finish(self: Box<Self>, fate: Fate) {
        let answer = match (fate, self.outcome) {
            (Fate::Committed, Some(outcome)) => outcome,
            (Fate::Committed, None) => Err(E::unavailable("the command did not run")),
            (Fate::Failed, _) => Err(E::unavailable("the batch could not be committed")),
            (Fate::Unconfirmed, _) => Err(E::unavailable(
                "the database went away after the batch committed: its outcome is unknown \
                 (retry with the same Idempotency-Key)",
            )),
        };
        // The caller may have gone (timeout); its effect, if any, is committed regardless.
        let _ = self.reply.send(answer);
    }
}

/// An outbox event a command wrote already leased to this process's relay: once its batch
/// has committed (never before, never if its savepoint was rolled back or the commit failed)
/// it is handed to the relay in memory, which sends it without claiming it first.
#[derive(Clone, Debug)]
pub struct Written {
    pub id: String,
    pub event_type: String,
    pub aggregate_id: i64,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
}

/// Where committed [`Written`] events go: this process's relay.
pub struct Handoff {
    /// How long an event written now is leased to this relay.
    pub lease: chrono::Duration,
    /// The relay's queue. Never waited on: when it is full the event is left to its lease (the
    /// relay's claimer takes it when the lease has run out).
    pub queue: tokio::sync::mpsc::Sender<Written>,
    /// Called after a commit whose events were not all handed over (queue full, or written
    /// before the relay was listening), so the claimer looks for them.
    pub wake: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// The handoff the committers of one database use (none while no relay is running).
type HandoffSlot = Arc<RwLock<Option<Arc<Handoff>>>>;

/// Where the committers write.
#[derive(Clone, Debug)]
pub enum Target {
    Sqlite { path: PathBuf, durable: bool },
    Postgres(Box<PgConnectOptions>),
}

/// Session settings of a PostgreSQL committer's connection (see [`Committer::start`]).
pub(crate) const COMMITTER_PG_SETTINGS: [(&str, &str); 4] = [
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
];

/// The handle requests use to submit commands. Cheap to clone; the committers stop when the
/// last handle is dropped.
#[derive(Clone, Debug)]
pub struct Committer {
    queue: flume::Sender<Box<dyn Job>>,
    handoff: HandoffSlot,
}

impl Committer {
    /// Start the committer thread(s) for `target`.
    pub fn start(target: Target, options: CommitOptions) -> std::io::Result<Self> {
        let (queue, jobs) = flume::bounded::<Box<dyn Job>>(options.queue_capacity.max(1));
        let handoff = HandoffSlot::default();
        match target {
            Target::Sqlite { path, durable } => {
                let (options, handoff) = (options.clone(), handoff.clone());
                std::thread::Builder::new()
                    .name("shopd-committer".into())
                    .spawn(move || sqlite_committer(path, durable, jobs, options, handoff))?;
            }
            Target::Postgres(connect) => {
                for i in 0..options.pg_committers.max(1) {
                    // The batch's flush is one large statement with array parameters: plan it
                    // once per connection instead of at every batch. A generic plan is made
                    // once, often while the tables are still empty, and kept: without the
                    // three `enable_*` settings the flush's `UPDATE users/products … FROM
                    // unnest(…)` was planned as a hash join over a sequential scan of every
                    // member and product, and ran so at every batch however large the tables
                    // grew. A committer runs keyed writes only, so an index is always the
                    // right path (a statement with none still runs: the settings only price
                    // the other paths out).
                    let (connect, jobs, options, handoff) = (
                        (*connect).clone().options(COMMITTER_PG_SETTINGS),
                        jobs.clone(),
                        options.clone(),
                        handoff.clone(),
                    );
                    std::thread::Builder::new()
                        .name(format!("shopd-committer-{i}"))
                        .spawn(move || postgres_committer(connect, jobs, options, handoff))?;
                }
            }
        }
        Ok(Self { queue, handoff })
    }

    /// From now on, events written leased ([`handoff_lease`]) go to `handoff` once committed.
    pub fn set_handoff(&self, handoff: Arc<Handoff>) {
        if let Ok(mut slot) = self.handoff.write() {
            *slot = Some(handoff);
        }
    }

    /// Stop handing events to `handoff` (if it is still the one set): events are written
    /// unleased again, for any relay's claimer.
    pub fn clear_handoff(&self, handoff: &Arc<Handoff>) {
        if let Ok(mut slot) = self.handoff.write()
            && slot.as_ref().is_some_and(|h| Arc::ptr_eq(h, handoff))
        {
            *slot = None;
        }
    }

    /// Queue `command` and wait for its answer, given after its batch committed.
    pub async fn submit<T, E>(&self, locks: Locks, command: Command<T, E>) -> Result<T, E>
    where
        T: Send + 'static,
        E: CommandError + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(TypedJob {
            command: Some(command),
            outcome: None,
            reply,
            locks,
            enqueued: Instant::now(),
        });
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(flume::TrySendError::Full(_)) => {
                metrics::counter!("shopd_commit_rejected_total", "reason" => "queue_full")
                    .increment(1);
                return Err(E::unavailable("the write queue is full"));
            }
            Err(flume::TrySendError::Disconnected(_)) => {
                return Err(E::unavailable("the committer has stopped"));
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err(E::unavailable("the committer stopped before answering")))
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(err) => {
            tracing::error!(error = %err, "committer: cannot start its runtime");
            None
        }
    }
}

/// Take the next batch: block for the first job, then whatever else is queued (up to the
/// maximum), optionally waiting a little for more. `None` when every handle is gone.
async fn next_batch(
    jobs: &flume::Receiver<Box<dyn Job>>,
    options: &CommitOptions,
) -> Option<Vec<Box<dyn Job>>> {
    let first = jobs.recv_async().await.ok()?;
    let mut batch = vec![first];
    drain(jobs, &mut batch, options.batch_max);
    if !options.wait.is_zero() && batch.len() < options.batch_max {
        let deadline = tokio::time::Instant::now() + options.wait;
        while batch.len() < options.batch_max {
            match tokio::time::timeout_at(deadline, jobs.recv_async()).await {
                Ok(Ok(job)) => {
                    batch.push(job);
                    drain(jobs, &mut batch, options.batch_max);
                }
                _ => break,
            }
        }
    }
    // A caller that gave up before its command ran is not run at all.
    let (live, gone): (Vec<_>, Vec<_>) = batch.into_iter().partition(|j| !j.abandoned());
    for job in gone {
        job.finish(Fate::Failed);
    }
    Some(live)
}

fn drain(jobs: &flume::Receiver<Box<dyn Job>>, batch: &mut Vec<Box<dyn Job>>, max: usize) {
    while batch.len() < max {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

fn record_batch(batch: &[Box<dyn Job>]) {
    metrics::histogram!("shopd_commit_batch_size").record(batch.len() as f64);
    let now = Instant::now();
    for job in batch {
        metrics::histogram!("shopd_commit_queue_wait_seconds")
            .record(now.duration_since(job.enqueued()).as_secs_f64());
    }
}

thread_local! {
    static CURRENT_BATCH: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    /// The handoff of the batch running on this thread (read once per batch).
    static HANDOFF: RefCell<Option<Arc<Handoff>>> = const { RefCell::new(None) };
    /// What the command running on this thread wrote to the outbox.
    static COMMAND_EVENTS: RefCell<CommandEvents> = const { RefCell::new(CommandEvents::new()) };
}

/// Outbox events written by one command (or kept from a batch's successful commands).
struct CommandEvents {
    leased: Vec<Written>,
    /// Events written without a lease (no relay was listening when they were written).
    unleased: usize,
}

impl CommandEvents {
    const fn new() -> Self {
        Self {
            leased: Vec::new(),
            unleased: 0,
        }
    }

    fn append(&mut self, other: CommandEvents) {
        self.leased.extend(other.leased);
        self.unleased += other.unleased;
    }
}

/// Until when an outbox event written now by the running command is leased to this process's
/// relay, which will be handed it once the batch commits; `None` outside a committer or when
/// no relay is listening (the event is then written unleased, for any relay's claimer).
pub fn handoff_lease(now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    CURRENT_BATCH.with(|b| b.get())?;
    HANDOFF.with(|h| {
        let lease = h.borrow().as_ref()?.lease;
        now.checked_add_signed(lease)
    })
}

/// Note an outbox event the running command wrote: `Some` if it was written leased (see
/// [`handoff_lease`]). Kept only if the command succeeds; handed over only after the commit.
/// Outside a committer this does nothing.
pub fn wrote_event(event: Option<Written>) {
    if CURRENT_BATCH.with(|b| b.get()).is_none() {
        return;
    }
    COMMAND_EVENTS.with(|e| {
        let mut events = e.borrow_mut();
        match event {
            Some(event) => events.leased.push(event),
            None => events.unleased += 1,
        }
    });
}

fn take_command_events() -> CommandEvents {
    COMMAND_EVENTS.with(|e| std::mem::replace(&mut *e.borrow_mut(), CommandEvents::new()))
}

/// After a commit: give the relay the events the batch's commands wrote, without waiting.
fn hand_over(events: CommandEvents, slot: &HandoffSlot) {
    if events.leased.is_empty() && events.unleased == 0 {
        return;
    }
    // The handoff as it is now: a relay that started listening during the batch still looks
    // for the batch's unleased events.
    let Some(handoff) = slot.read().ok().and_then(|h| h.clone()) else {
        return;
    };
    let mut missed = events.unleased;
    for event in events.leased {
        match handoff.queue.try_send(event) {
            Ok(()) => metrics::counter!("outbox_handoffs_total", "outcome" => "sent").increment(1),
            Err(_) => {
                // Left to its lease: claimed again when it runs out.
                metrics::counter!("outbox_handoffs_total", "outcome" => "dropped").increment(1);
                missed += 1;
            }
        }
    }
    if missed > 0 {
        (handoff.wake)();
    }
}

/// The sequence number of the batch whose commands run on this thread right now (`None`
/// outside a committer). Commands that share a transaction see the same number; tests use it
/// to show what was batched together, logs to correlate.
pub fn current_batch() -> Option<u64> {
    CURRENT_BATCH.with(|b| b.get())
}

/// Run every job of the batch on `tx`, then `COMMIT`. `Err` when the transaction broke or the
/// commit failed.
/// Returns the events the batch's successful commands wrote; the caller hands them to the
/// relay once the batch is durable.
async fn run_jobs(
    tx: &mut Tx,
    batch: &mut [Box<dyn Job>],
    handoff: &HandoffSlot,
) -> Result<CommandEvents, sqlx::Error> {
    static BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = BATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    CURRENT_BATCH.with(|b| b.set(Some(id)));
    let current = handoff.read().ok().and_then(|h| h.clone());
    HANDOFF.with(|h| *h.borrow_mut() = current);
    let result = run_each(tx, batch).await;
    end_batch();
    result
}

/// Forget the batch's thread-local state (also after a panic).
fn end_batch() {
    CURRENT_BATCH.with(|b| b.set(None));
    HANDOFF.with(|h| *h.borrow_mut() = None);
    take_command_events();
}

/// [`run_jobs`], but a command that panics fails its batch (rolled back, every caller 503)
/// instead of taking the committer thread — and with it every later write — down.
async fn run_jobs_guarded(
    tx: &mut Tx,
    batch: &mut [Box<dyn Job>],
    handoff: &HandoffSlot,
) -> Result<CommandEvents, sqlx::Error> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(run_jobs(tx, batch, handoff))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(_) => {
            end_batch();
            tracing::error!("committer: a command panicked; its batch is rolled back");
            Err(sqlx::Error::Protocol("a command panicked".into()))
        }
    }
}

/// Savepoint statements travel with their neighbours: ending one command's savepoint and
/// opening the next one's is a single round trip, and the last one ends with the COMMIT.
/// Returns the outbox events of the commands that succeeded, once committed.
async fn run_each(tx: &mut Tx, batch: &mut [Box<dyn Job>]) -> Result<CommandEvents, sqlx::Error> {
    const FIRST: &str = "SAVEPOINT cmd";
    const AFTER_OK: &str = "RELEASE SAVEPOINT cmd; SAVEPOINT cmd";
    const AFTER_ERR: &str = "ROLLBACK TO SAVEPOINT cmd; RELEASE SAVEPOINT cmd; SAVEPOINT cmd";
    let mut prologue = FIRST;
    let mut last_ok = true;
    let mut kept = CommandEvents::new();
    for job in batch.iter_mut() {
        take_command_events();
        tx.begin_command(prologue).await?;
        last_ok = job.run(tx).await?;
        tx.end_command(last_ok);
        // A failed command's savepoint is rolled back, and its events with it.
        let written = take_command_events();
        if last_ok {
            kept.append(written);
        }
        prologue = if last_ok { AFTER_OK } else { AFTER_ERR };
    }
    // A failed last command is undone before the commit; a successful one is released by it.
    let epilogue = if last_ok {
        "COMMIT"
    } else {
        "ROLLBACK TO SAVEPOINT cmd; COMMIT"
    };
    let result = tx.end_batch(epilogue).await;
    if result.is_err() {
        // SQLite keeps a transaction whose COMMIT failed open: end it.
        let _ = tx.raw_batch("ROLLBACK").await;
    }
    result.map(|()| kept)
}

fn answer(batch: Vec<Box<dyn Job>>, fate: Fate, started: Instant) {
    metrics::histogram!("shopd_commit_duration_seconds").record(started.elapsed().as_secs_f64());
    match fate {
        Fate::Committed => {}
        Fate::Failed => metrics::counter!("shopd_commit_failed_batches_total").increment(1),
        Fate::Unconfirmed => {
            metrics::counter!("shopd_commit_unconfirmed_batches_total").increment(1)
        }
    }
    for job in batch {
        job.finish(fate);
    }
}

/// Checkpoint the WAL from a connection of its own, so the committer never stops to copy pages
/// into the database file (its connection has `wal_autocheckpoint = 0`). Ends when the
/// committer does.
///
/// Every 300 ms: a page written many times in that span is copied once, and the database file
/// is synced once; 10 ms and 100 ms pauses measured 15 % and 8 % fewer orders/s, longer ones no
/// better (docs/benchmarks.md).
///
/// A `PASSIVE` checkpoint alone never lets a busy WAL start over: SQLite rewinds the WAL only
/// when a writer begins a transaction after *every* frame was copied, and under steady load
/// the committer has always appended more by the time a checkpoint ends, so the file grew
/// without bound (1.5 GB in 12 s of `uniform-orders`), and every frame written past its end
/// made the kernel zero fresh pages (a fifth of the committer's time). So once the WAL holds
/// `restart_frames` frames, this asks the committer to finish the checkpoint itself between
/// two batches (`restart_wal`): nothing is appended meanwhile, the frames left are copied,
/// and the next batch writes the WAL from its beginning again, over pages the kernel caches.
fn sqlite_checkpointer(
    path: PathBuf,
    committer_alive: std::sync::mpsc::Receiver<()>,
    restart_frames: i64,
    restart_wal: Arc<AtomicBool>,
) {
    let mut conn = None;
    loop {
        match committer_alive.recv_timeout(Duration::from_millis(300)) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if conn.is_none() {
            conn = LiteConn::open_checkpointer(&path).ok();
        }
        if let Some(c) = conn.as_mut() {
            match c.checkpoint() {
                Ok(frames) if frames >= restart_frames => {
                    restart_wal.store(true, Ordering::Relaxed)
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "WAL checkpoint failed; will retry");
                    conn = None;
                }
            }
        }
    }
}

fn sqlite_committer(
    path: PathBuf,
    durable: bool,
    jobs: flume::Receiver<Box<dyn Job>>,
    options: CommitOptions,
    handoff: HandoffSlot,
) {
    let Some(rt) = runtime() else { return };
    // Dropped when this thread ends, which stops the checkpointer.
    let (_alive, alive) = std::sync::mpsc::channel::<()>();
    let checkpoint_path = path.clone();
    let restart_wal = Arc::new(AtomicBool::new(false));
    let restart_flag = restart_wal.clone();
    let restart_frames = options.sqlite_wal_restart_pages.max(1) as i64;
    if let Err(err) = std::thread::Builder::new()
        .name("shopd-checkpointer".into())
        .spawn(move || sqlite_checkpointer(checkpoint_path, alive, restart_frames, restart_flag))
    {
        tracing::error!(error = %err, "cannot start the WAL checkpointer");
    }
    rt.block_on(async move {
        let mut conn: Option<LiteConn> = None;
        // Durable mode: commits leave the WAL's sync to the syncer thread, which answers the
        // batches (early sync release, `wal_sync.rs`). Started with the connection.
        let mut syncer: Option<wal_sync::WalSyncer> = None;
        while let Some(mut batch) = next_batch(&jobs, &options).await {
            if batch.is_empty() {
                continue;
            }
            let started = Instant::now();
            record_batch(&batch);
            if syncer.as_ref().is_some_and(|s| s.failed.load(Ordering::Relaxed)) {
                tracing::error!("committer: the write-ahead log could not be synced earlier; writes are refused until shopd restarts");
                answer(batch, Fate::Failed, started);
                continue;
            }
            let lite = match conn.take() {
                Some(c) => c,
                None => match LiteConn::open(&path, durable) {
                    Ok(c) => c,
                    Err(err) => {
                        tracing::error!(error = %err, path = %path.display(), "committer: cannot open the SQLite database");
                        answer(batch, Fate::Failed, started);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            if durable && syncer.is_none() {
                syncer = lite.wal_path().and_then(|wal| {
                    wal_sync::WalSyncer::start(wal, handoff.clone(), options.sqlite_sync_gate.clone())
                });
            }
            let mut tx = Tx::Lite(lite);
            let defer = syncer.as_ref().map(|_| DeferCommitSync::start());
            let committed = match tx.raw_batch("BEGIN IMMEDIATE").await {
                Ok(()) => match run_jobs_guarded(&mut tx, &mut batch, &handoff).await {
                    Ok(events) => Ok(events),
                    Err(err) => {
                        let _ = tx.raw_batch("ROLLBACK").await;
                        Err(err)
                    }
                },
                Err(err) => Err(err),
            };
            drop(defer);
            let owes_sync = take_owed_sync();
            if let Tx::Lite(lite) = tx {
                conn = Some(lite);
            }
            match committed {
                Ok(events) => {
                    let committed = wal_sync::Committed { batch, events, started, owes_sync };
                    match &syncer {
                        Some(s) => {
                            if let Err(committed) = s.send(committed) {
                                // The syncer thread is gone: sync here.
                                if let Some(wal) = conn.as_ref().and_then(LiteConn::wal_path) {
                                    wal_sync::sync_and_answer(&wal, vec![committed], &handoff, &s.failed);
                                } else {
                                    answer(committed.batch, Fate::Unconfirmed, started);
                                }
                            }
                        }
                        None => {
                            hand_over(committed.events, &handoff);
                            answer(committed.batch, Fate::Committed, started);
                        }
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "committer: commit failed; every caller of the batch gets 503");
                    answer(batch, Fate::Failed, started);
                }
            }
            // After answering: the callers do not wait for the copy.
            if restart_wal.swap(false, Ordering::Relaxed)
                && let Some(c) = conn.as_mut()
                && let Err(err) = c.checkpoint()
            {
                tracing::warn!(error = %err, "committer: WAL checkpoint failed");
            }
        }
    });
}

fn postgres_committer(
    connect: PgConnectOptions,
    jobs: flume::Receiver<Box<dyn Job>>,
    options: CommitOptions,
    handoff: HandoffSlot,
) {
    let Some(rt) = runtime() else { return };
    let local = tokio::task::LocalSet::new();
    let disk = Rc::new(DiskWaits::new(
        connect.clone(),
        options.pg_in_flight.max(1),
        options.pg_durable_barrier,
    ));
    local.block_on(&rt, async move {
        let mut conn: Option<(PgConnection, DateTime<Utc>)> = None;
        loop {
            disk.before_next_batch().await;
            let Some(mut batch) = next_batch(&jobs, &options).await else {
                break;
            };
            if batch.is_empty() {
                continue;
            }
            let started = Instant::now();
            record_batch(&batch);
            let (pg, server) = match conn.take() {
                Some(c) => c,
                None => match open_batch_connection(&connect).await {
                    Ok(c) => c,
                    Err(err) => {
                        tracing::error!(error = %err, "committer: cannot connect to PostgreSQL");
                        answer(batch, Fate::Failed, started);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let declared = declared_locks(&batch);
            let prologue = lock_statements(&batch, &declared);
            let Locks {
                products, users, ..
            } = declared;
            let mut tx = Tx::PgBatch(Box::new(PgBatch::new(pg, products, users, batch.len())));
            let result = async {
                begin_and_lock(&mut tx, prologue).await?;
                run_jobs_guarded(&mut tx, &mut batch, &handoff).await
            }
            .await;
            match result {
                Ok(events) => {
                    if let Tx::PgBatch(b) = tx {
                        conn = Some((b.conn, server));
                    }
                    // Committed, not yet durable: answered once it is, beside the next batch.
                    disk.answer_when_durable(batch, events, handoff.clone(), started, server);
                }
                Err(err) => {
                    tracing::error!(error = %err, "committer: batch failed; every caller of the batch gets 503");
                    // Leave the connection clean (or drop it if it is broken).
                    if tx.raw_batch("ROLLBACK").await.is_err() {
                        if let Tx::PgBatch(b) = tx {
                            let _ = b.conn.close().await;
                        }
                    } else if let Tx::PgBatch(b) = tx {
                        conn = Some((b.conn, server));
                    }
                    answer(batch, Fate::Failed, started);
                }
            }
        }
        // Every handle is gone: let the batches still waiting for the disk be answered.
        disk.drain().await;
    });
}

/// Early lock release (PostgreSQL). A batch commits with `synchronous_commit = off`: its
/// `COMMIT` releases the batch's row locks without waiting for the disk, and the committer's
/// connection runs the next batch at once. The batch's callers are answered only once it is
/// durable: a transaction of the default `synchronous_commit = on` that writes one WAL record
/// ([`DURABLE_BARRIER`]), started after the batch's `COMMIT` returned, on a connection of its
/// own, flushes the log through its own commit record, which follows the batch's.
///
/// Without this a batch held its row locks through its disk flush, and the next batch (which
/// nearly always shares a row with it: a batch of 30 orders locks some 60 products and members)
/// waited for it; with a slow disk one committer paid each flush in turn.
///
/// Before the next batch is taken, the committer waits for the batches in flight up to
/// [`OVERLAP_AFTER`]: on a fast disk their flush ends within it, and the next batch is as large
/// as it would have been without pipelining; on a slow disk the next batch starts anyway. At
/// most `limit` batches wait for the disk at once.
struct DiskWaits {
    connect: PgConnectOptions,
    idle: RefCell<Vec<PgConnection>>,
    in_flight: std::cell::Cell<usize>,
    settled: tokio::sync::Notify,
    limit: usize,
    /// The barrier, then the server's start time: one round trip, the last row is the time.
    barrier_sql: String,
}

/// How long the committer waits for batches in flight before it takes the next batch anyway.
const OVERLAP_AFTER: Duration = Duration::from_millis(1);

impl DiskWaits {
    fn new(connect: PgConnectOptions, limit: usize, barrier_sql: &'static str) -> Self {
        Self {
            connect,
            barrier_sql: format!("{barrier_sql}; {SERVER_STARTED}"),
            idle: RefCell::new(Vec::new()),
            in_flight: std::cell::Cell::new(0),
            settled: tokio::sync::Notify::new(),
            limit,
        }
    }

    /// Wait for the batches in flight: all of them for up to [`OVERLAP_AFTER`], and beyond it
    /// while `limit` of them are.
    async fn before_next_batch(&self) {
        let deadline = tokio::time::Instant::now() + OVERLAP_AFTER;
        self.until_fewer_than(1, Some(deadline)).await;
        self.until_fewer_than(self.limit, None).await;
    }

    /// Wait for every batch in flight.
    async fn drain(&self) {
        self.until_fewer_than(1, None).await;
    }

    /// Wait until fewer than `bound` batches are in flight, or until `deadline` if one is given.
    async fn until_fewer_than(&self, bound: usize, deadline: Option<tokio::time::Instant>) {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.in_flight.get() < bound {
                return;
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, settled).await.is_err() {
                        return;
                    }
                }
                None => settled.await,
            }
        }
    }

    /// Once the committed `batch` is durable, hand its events to the relay and answer its
    /// callers; if that cannot be confirmed, answer `503` (outcome unknown). `server` is when
    /// the PostgreSQL server that committed the batch started.
    fn answer_when_durable(
        self: &Rc<Self>,
        batch: Vec<Box<dyn Job>>,
        events: CommandEvents,
        handoff: HandoffSlot,
        started: Instant,
        server: DateTime<Utc>,
    ) {
        let committed = Instant::now();
        // Counted until the task ends, even if it panics (the loop must never wait on a leak).
        let in_flight = InFlight::enter(self.clone());
        tokio::task::spawn_local(async move {
            let durable = in_flight.0.barrier(server).await;
            metrics::histogram!("shopd_commit_durable_wait_seconds")
                .record(committed.elapsed().as_secs_f64());
            match durable {
                Ok(()) => {
                    hand_over(events, &handoff);
                    answer(batch, Fate::Committed, started);
                }
                Err(err) => {
                    tracing::error!(error = %err, "committer: cannot confirm that a committed batch is durable; every caller of the batch gets 503");
                    answer(batch, Fate::Unconfirmed, started);
                }
            }
            drop(in_flight);
        });
    }

    /// Run the barrier on an idle connection; if that fails (a stale connection), once more on
    /// a fresh one. Either way the barrier must have run on the server that committed the batch:
    /// one that restarted since may have lost it, and a barrier there proves nothing.
    async fn barrier(&self, server: DateTime<Utc>) -> Result<(), sqlx::Error> {
        let idle = self.idle.borrow_mut().pop();
        if let Some(conn) = idle {
            match self.barrier_on(conn, server).await {
                Ok(()) => return Ok(()),
                Err(err) => {
                    tracing::warn!(error = %err, "committer: durable barrier failed on an idle connection; retrying on a new one")
                }
            }
        }
        let conn = tokio::time::timeout(BARRIER_TIMEOUT, self.connect.connect())
            .await
            .map_err(|_| {
                sqlx::Error::Protocol("connecting for the durable barrier timed out".into())
            })??;
        self.barrier_on(conn, server).await
    }

    async fn barrier_on(
        &self,
        mut conn: PgConnection,
        server: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let rows = tokio::time::timeout(
            BARRIER_TIMEOUT,
            sqlx::raw_sql(sqlx::AssertSqlSafe(self.barrier_sql.as_str())).fetch_all(&mut conn),
        )
        .await
        .map_err(|_| sqlx::Error::Protocol("the durable barrier timed out".into()))??;
        let started_at: DateTime<Utc> = match rows.last() {
            Some(row) => row.try_get(0)?,
            None => return Err(sqlx::Error::RowNotFound),
        };
        if started_at != server {
            return Err(sqlx::Error::Protocol(
                "the database restarted after the batch committed; it may be lost".into(),
            ));
        }
        self.idle.borrow_mut().push(conn);
        Ok(())
    }
}

/// A batch between its commit and its answer (see [`DiskWaits`]).
struct InFlight(Rc<DiskWaits>);

impl InFlight {
    fn enter(disk: Rc<DiskWaits>) -> Self {
        disk.in_flight.set(disk.in_flight.get() + 1);
        Self(disk)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .set(self.0.in_flight.get().saturating_sub(1));
        self.0.settled.notify_waiters();
    }
}

/// How long a durable barrier (or connecting for one) may take before its batch is answered
/// `503` as unconfirmed. A flush takes milliseconds; this only bounds a hung connection.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(30);

/// When the PostgreSQL server behind `conn` started: a batch committed on one server is
/// confirmed durable only by a barrier on the same server (not one that restarted since).
async fn server_started(conn: &mut PgConnection) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(SERVER_STARTED).fetch_one(conn).await
}

const SERVER_STARTED: &str = "SELECT pg_postmaster_start_time()";

/// A committer's batch connection, with the batch's opening statements prepared on it, and
/// when its server started.
async fn open_batch_connection(
    connect: &PgConnectOptions,
) -> Result<(PgConnection, DateTime<Utc>), sqlx::Error> {
    let mut conn = connect.connect().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(
        crate::db::work::prepare_batch_statements_sql(),
    ))
    .execute(&mut conn)
    .await?;
    let server = server_started(&mut conn).await?;
    Ok((conn, server))
}

/// Begin the batch's transaction and take its declared locks with `prologue` (see
/// [`lock_statements`]), in one round trip, which also reads the locked products and balances
/// into the batch's cache and takes ids for the orders it may place (`work.rs`). Taking them is
/// retried (up to three times) when PostgreSQL picks this batch as a deadlock victim — nothing
/// has run yet, so starting over is safe — against a transaction that locks outside the global
/// order.
async fn begin_and_lock(tx: &mut Tx, prologue: String) -> Result<(), sqlx::Error> {
    let Tx::PgBatch(pg) = tx else {
        return Ok(());
    };
    let mut attempt = 0;
    loop {
        match pg.begin(prologue.clone()).await {
            Ok(()) => return Ok(()),
            Err(err) if attempt < 3 && is_deadlock(&err) => {
                attempt += 1;
                metrics::counter!("shopd_commit_lock_retries_total").increment(1);
                tracing::info!(
                    attempt,
                    "committer: lost a deadlock while locking; retrying"
                );
                sqlx::raw_sql("ROLLBACK").execute(&mut pg.conn).await?;
            }
            Err(err) => return Err(err),
        }
    }
}

fn is_deadlock(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

/// Every row the batch's commands declared, table by table, ascending, each once: the order
/// the prologue locks them in, and the products and members the unit of work loads together
/// on first use (`work.rs`).
fn declared_locks(batch: &[Box<dyn Job>]) -> Locks {
    let mut all = Locks::none();
    for job in batch {
        all.extend(job.locks());
    }
    for ids in [
        &mut all.coupons,
        &mut all.products,
        &mut all.users,
        &mut all.orders,
    ] {
        ids.sort_unstable();
        ids.dedup();
    }
    all
}

/// `BEGIN` and the statements that lock every row the batch declared (`declared`, from
/// [`declared_locks`]), table by table in one global order (coupons, products, users,
/// orders), ascending ids. The statements are prepared on the connection; the ids are
/// integers, written into the text, so the whole prologue is one simple-protocol round trip.
fn lock_statements(batch: &[Box<dyn Job>], declared: &Locks) -> String {
    // Early lock release: the batch's COMMIT does not wait for the disk, so its row locks are
    // free for the next batch at once; its callers are answered once a durable barrier has
    // returned ([`DiskWaits`]).
    let mut sql = String::from("BEGIN; SET LOCAL synchronous_commit = off");
    // Locked products and balances are read into the batch's cache on the way.
    for (table, ids) in [
        ("coupons", &declared.coupons),
        ("products", &declared.products),
        ("users", &declared.users),
        ("orders", &declared.orders),
    ] {
        if ids.is_empty() {
            continue;
        }
        sql.push_str("; ");
        sql.push_str(&crate::db::work::lock_rows_sql(table, ids));
    }
    // Commands that lock products but no order may place one: ids for them (and their
    // payments), taken from the sequences now.
    let placing = batch
        .iter()
        .filter(|j| !j.locks().products.is_empty() && j.locks().orders.is_empty())
        .count();
    if placing > 0 {
        sql.push_str("; ");
        sql.push_str(&crate::db::work::take_ids_sql(placing));
    }
    sql
}

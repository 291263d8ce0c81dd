//! SQLite's early sync release (docs/architecture.md): the committer commits a batch without
//! waiting for the disk and goes on with the next one; this thread syncs the write-ahead log
//! and only then hands the batch's events to the relay and answers its callers.
//!
//! A commit is published to readers when it returns and is durable once its WAL frames are
//! synced: the same window as PostgreSQL's `synchronous_commit = off` on that backend, and no
//! caller is ever answered inside it. One sync covers every batch committed before it, so the
//! syncs of batches that queue up here coalesce.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{CommandEvents, Fate, HandoffSlot, Job, answer, hand_over};

/// Most committed batches waiting for their sync at once; the committer waits beyond that.
pub(super) const IN_FLIGHT: usize = 4;

/// A committed batch, answered once the WAL is synced through its commit.
pub(super) struct Committed {
    pub batch: Vec<Box<dyn Job>>,
    pub events: CommandEvents,
    pub started: Instant,
    /// Its commit left the WAL's sync owed (`lite_vfs::take_owed_sync`). A batch that owes
    /// none still waits behind those that do: what it answers may rest on their writes.
    pub owes_sync: bool,
}

/// The committer's side: where committed batches go.
pub(super) struct WalSyncer {
    queue: SyncSender<Committed>,
    /// Set once a sync failed: the committer then refuses every later batch.
    pub failed: Arc<AtomicBool>,
}

impl WalSyncer {
    /// Start the syncer thread for the WAL at `wal`. `None` if the thread cannot start (the
    /// committer then keeps every sync in its commits).
    pub fn start(wal: PathBuf, handoff: HandoffSlot, gate: Option<Arc<Mutex<()>>>) -> Option<Self> {
        let (queue, committed) = std::sync::mpsc::sync_channel(IN_FLIGHT);
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        std::thread::Builder::new()
            .name("shopd-wal-sync".into())
            .spawn(move || run(wal, committed, handoff, gate, flag))
            .map_err(|err| tracing::error!(error = %err, "cannot start the WAL syncer"))
            .ok()?;
        Some(Self { queue, failed })
    }

    /// Hand a committed batch over (waits while `IN_FLIGHT` batches wait for the disk).
    /// Gives it back if the syncer thread is gone.
    pub fn send(&self, committed: Committed) -> Result<(), Committed> {
        match self.queue.try_send(committed) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(committed)) => self.queue.send(committed).map_err(|e| e.0),
            Err(TrySendError::Disconnected(committed)) => Err(committed),
        }
    }
}

fn run(
    wal: PathBuf,
    committed: Receiver<Committed>,
    handoff: HandoffSlot,
    gate: Option<Arc<Mutex<()>>>,
    failed: Arc<AtomicBool>,
) {
    while let Ok(first) = committed.recv() {
        let mut group = vec![first];
        group.extend(committed.try_iter());
        if let Some(gate) = &gate {
            // Tests: hold the "disk" here.
            drop(gate.lock());
        }
        sync_and_answer(&wal, group, &handoff, &failed);
    }
}

/// Sync the WAL if any batch of `group` owes it, then answer them all, in commit order. If the
/// sync fails, the batches' outcome is unknown (committed, maybe not durable): each caller gets
/// `503` ("outcome unknown"), and `failed` stops the committer — after a failed sync the kernel
/// may have dropped the pages it could not write, so no later commit could be trusted either.
pub(super) fn sync_and_answer(
    wal: &Path,
    group: Vec<Committed>,
    handoff: &HandoffSlot,
    failed: &AtomicBool,
) {
    let synced = if group.iter().any(|c| c.owes_sync) {
        metrics::counter!("shopd_commit_wal_syncs_total").increment(1);
        sync(wal)
    } else {
        Ok(())
    };
    let fate = match synced {
        Ok(()) => Fate::Committed,
        Err(err) => {
            failed.store(true, Ordering::Relaxed);
            tracing::error!(error = %err, wal = %wal.display(),
                "committer: the write-ahead log could not be synced; these batches are answered \
                 503 (outcome unknown) and every later write is refused until shopd restarts");
            Fate::Unconfirmed
        }
    };
    for c in group {
        if fate == Fate::Committed {
            hand_over(c.events, handoff);
        }
        answer(c.batch, fate, c.started);
    }
}

/// `fdatasync` the WAL through a descriptor of our own: a sync flushes the file, whichever
/// descriptor names it. (SQLite holds no lock on the `-wal` file itself, so opening and closing
/// one here cannot drop any of its locks.)
fn sync(wal: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(wal)?
        .sync_data()
}

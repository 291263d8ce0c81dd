//! Best-sellers served from memory (SPEC §11): the aggregation job refreshes an immutable
//! snapshot that requests read without touching the database, so the read path costs the same
//! at 1k or 1M paid orders.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Duration, Utc};

use crate::db::{Db, Handle};
use crate::error::AppResult;
use crate::store::{self, ranking};

pub const MAX_DAYS: i64 = ranking::MAX_DAYS;
pub const MAX_LIMIT: i64 = 100;

/// Rankings for every `days` in 1..=30, each up to 100 entries, as of one aggregation run.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub as_of: DateTime<Utc>,
    /// `by_days[d - 1]`: the ranking over the last `d` days (today included).
    pub by_days: Vec<Vec<ranking::RankedRow>>,
}

impl Snapshot {
    pub fn top(&self, days: i64, limit: i64) -> &[ranking::RankedRow] {
        let list = usize::try_from(days - 1)
            .ok()
            .and_then(|i| self.by_days.get(i))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        &list[..list.len().min(usize::try_from(limit).unwrap_or(0))]
    }
}

/// The shared, swappable snapshot. Loads are single-flight: concurrent callers that find no
/// snapshot (a cold start) wait for one load instead of each running its own 30 queries.
#[derive(Clone, Default)]
pub struct RankingCache(Arc<Inner>);

#[derive(Default)]
struct Inner {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// Held while a load runs.
    loading: tokio::sync::Mutex<()>,
    /// Loads run since start (tests and metrics).
    loads: AtomicU64,
}

impl RankingCache {
    pub fn get(&self) -> Option<Arc<Snapshot>> {
        match self.0.snapshot.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// How many times the snapshot was loaded from the database.
    pub fn loads(&self) -> u64 {
        self.0.loads.load(Ordering::Relaxed)
    }

    fn set(&self, snapshot: Arc<Snapshot>) {
        let snapshot = Some(snapshot);
        match self.0.snapshot.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    /// The snapshot, loading it first if there is none yet (once, however many callers wait).
    pub async fn get_or_load(&self, db: &Db) -> AppResult<Arc<Snapshot>> {
        if let Some(snapshot) = self.get() {
            return Ok(snapshot);
        }
        let _loading = self.0.loading.lock().await;
        if let Some(snapshot) = self.get() {
            return Ok(snapshot);
        }
        self.load_locked(db).await
    }

    /// Rebuild the snapshot from the aggregates (never from orders), e.g. after a job run.
    pub async fn reload(&self, db: &Db) -> AppResult<Arc<Snapshot>> {
        let _loading = self.0.loading.lock().await;
        self.load_locked(db).await
    }

    async fn load_locked(&self, db: &Db) -> AppResult<Arc<Snapshot>> {
        let mut conn = db.read().await?;
        let snapshot = Arc::new(Snapshot::load(&mut conn).await?);
        self.0.loads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ranking_snapshot_loads_total").increment(1);
        self.set(snapshot.clone());
        Ok(snapshot)
    }
}

impl Snapshot {
    /// Read the rankings for every window from the aggregates (30 small queries).
    pub async fn load(h: &mut impl Handle) -> AppResult<Snapshot> {
        let as_of = ranking::computed_at(h).await?.unwrap_or_else(store::now);
        let today = as_of.date_naive();
        let mut by_days = Vec::with_capacity(MAX_DAYS as usize);
        for days in 1..=MAX_DAYS {
            by_days.push(ranking::top(h, today - Duration::days(days - 1), MAX_LIMIT).await?);
        }
        Ok(Snapshot { as_of, by_days })
    }
}

/// Run the aggregation job once (if no other instance is running it) and reload the snapshot.
pub async fn refresh(
    db: &Db,
    cache: &RankingCache,
    options: ranking::AggregateOptions,
) -> AppResult<(ranking::JobRun, Arc<Snapshot>)> {
    let mut tx = db.begin().await?;
    let run = ranking::aggregate(&mut tx, store::now(), options).await?;
    tx.commit().await?;
    let snapshot = cache.reload(db).await?;
    Ok((run, snapshot))
}

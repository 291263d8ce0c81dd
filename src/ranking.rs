//! Best-sellers served from memory (SPEC §11): the aggregation job refreshes an immutable
//! snapshot that requests read without touching the database, so the read path costs the same
//! at 1k or 1M paid orders.

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Duration, Utc};

use crate::db::Db;
use crate::error::AppResult;
use crate::store::{self, ranking};

pub const MAX_DAYS: i64 = 30;
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

/// The shared, swappable snapshot.
#[derive(Clone, Default)]
pub struct RankingCache(Arc<RwLock<Option<Arc<Snapshot>>>>);

impl RankingCache {
    pub fn get(&self) -> Option<Arc<Snapshot>> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, snapshot: Snapshot) {
        let snapshot = Some(Arc::new(snapshot));
        match self.0.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    /// Rebuild the snapshot from the aggregates (never from orders).
    pub async fn reload(&self, db: &Db) -> AppResult<Arc<Snapshot>> {
        let mut conn = db.read().await?;
        let as_of = ranking::computed_at(&mut conn)
            .await?
            .unwrap_or_else(store::now);
        let today = as_of.date_naive();
        let mut by_days = Vec::with_capacity(MAX_DAYS as usize);
        for days in 1..=MAX_DAYS {
            by_days
                .push(ranking::top(&mut conn, today - Duration::days(days - 1), MAX_LIMIT).await?);
        }
        self.set(Snapshot { as_of, by_days });
        self.get()
            .ok_or_else(|| anyhow::anyhow!("ranking snapshot vanished").into())
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

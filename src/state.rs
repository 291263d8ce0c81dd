//! The state every handler shares, and the small shared handles inside it. It imports no
//! handler and no background job: the HTTP layer and the jobs depend on it, never the other
//! way round.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Settings;
use crate::db::Db;
use crate::domain::money::BalanceLimits;
use crate::error::AppError;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub limits: BalanceLimits,
    /// SHA-256 hashes of the accepted admin tokens.
    pub admin_token_hashes: Arc<[String]>,
    /// Wakes the outbox relay after a commit that wrote events.
    pub outbox_wakeup: Wakeup,
    /// The in-memory best-seller snapshot.
    pub ranking: crate::ranking::RankingCache,
    /// Member tokens already looked up (valid while the token epoch is unchanged).
    pub member_tokens: MemberTokenCache,
}

/// Wakes the relay after a commit that wrote outbox events.
#[derive(Clone, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    pub fn notify(&self) {
        self.0.notify_one();
    }

    pub(crate) async fn notified(&self) {
        self.0.notified().await
    }
}

/// Member tokens already looked up: a read of `users` per request was a sixth of the server's
/// CPU under order load. Only found tokens are kept. The cache is valid while the database's
/// `token_epoch` is unchanged; it is re-read at most once per [`MemberTokenCache::RECHECK`],
/// and any rotation or revocation bumps it ([`crate::store::users::bump_token_epoch`]), so a rotated token stops
/// working on every instance within a second and a new member's token works at once. The
/// instance that signs a member up keeps the new token at once (a flash sale's members order
/// right after signing up: each first order read `users` before). A token found before a
/// clear is never kept after it: [`Self::generation`] is read before the lookup (or the
/// sign-up) and [`Self::put`] keeps nothing once it moved.
#[derive(Clone, Default)]
pub struct MemberTokenCache(std::sync::Arc<std::sync::Mutex<TokenCacheState>>);

#[derive(Default)]
pub struct TokenCacheState {
    tokens: std::collections::HashMap<String, i64>,
    epoch: Option<i64>,
    checked_at: Option<std::time::Instant>,
    /// Moves at every clear.
    generation: u64,
}

impl MemberTokenCache {
    pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(1);
    const MAX_ENTRIES: usize = 200_000;

    /// Re-read the token epoch if the last check is older than [`Self::RECHECK`]; drop the
    /// cache when it changed.
    pub(crate) async fn revalidate(&self, db: &crate::db::Db) -> Result<(), AppError> {
        let due = match self.0.lock() {
            Ok(state) => state
                .checked_at
                .is_none_or(|at| at.elapsed() >= Self::RECHECK),
            Err(_) => true,
        };
        if !due {
            return Ok(());
        }
        let mut conn = db.read().await?;
        let epoch: i64 =
            crate::sql_scalar!(&mut conn, "SELECT epoch FROM token_epoch WHERE id = 1")?;
        if let Ok(mut state) = self.0.lock() {
            if state.epoch != Some(epoch) {
                state.tokens.clear();
                state.generation += 1;
                state.epoch = Some(epoch);
            }
            state.checked_at = Some(std::time::Instant::now());
        }
        Ok(())
    }

    pub(crate) fn get(&self, hash: &str) -> Option<i64> {
        self.0.lock().ok()?.tokens.get(hash).copied()
    }

    /// The cache's generation: read it before looking a token up, pass it to [`Self::put`].
    pub(crate) fn generation(&self) -> Option<u64> {
        self.0.lock().ok().map(|state| state.generation)
    }

    /// Keep a token found (or minted) while the cache was at `generation`; nothing if the
    /// cache was cleared since (a rotation may have revoked it in between).
    pub(crate) fn put(&self, hash: String, id: i64, generation: Option<u64>) {
        let Ok(mut state) = self.0.lock() else { return };
        if generation != Some(state.generation) {
            return;
        }
        if state.tokens.len() >= Self::MAX_ENTRIES {
            state.tokens.clear();
        }
        state.tokens.insert(hash, id);
    }

    /// Forget every cached token at once (the instance that rotates a token calls this).
    pub fn clear(&self) {
        if let Ok(mut state) = self.0.lock() {
            state.tokens.clear();
            state.generation += 1;
            state.checked_at = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MemberTokenCache;

    #[test]
    fn a_token_found_before_a_clear_is_not_kept_after_it() {
        let cache = MemberTokenCache::default();
        let before = cache.generation();
        cache.put("kept".into(), 1, before);
        assert_eq!(cache.get("kept"), Some(1));
        // A rotation clears the cache while another request holds a token it looked up (or a
        // sign-up a token it minted) under the old generation: that token is not kept.
        let looked_up_at = cache.generation();
        cache.clear();
        cache.put("stale".into(), 2, looked_up_at);
        assert_eq!(cache.get("stale"), None);
        assert_eq!(cache.get("kept"), None);
        // Looked up after the clear: kept.
        cache.put("fresh".into(), 3, cache.generation());
        assert_eq!(cache.get("fresh"), Some(3));
    }
}

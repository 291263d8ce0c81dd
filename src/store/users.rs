//! Members.

use chrono::{DateTime, Utc};

use crate::db::{Handle, Tx};
use crate::error::AppResult;
use crate::{sql_one, sql_optional};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
}
crate::lite_row!(UserRow {
    id,
    name,
    created_at
});

pub struct CreateUser<'a> {
    pub name: &'a str,
    pub token_hash: &'a str,
    pub now: DateTime<Utc>,
}

pub async fn create_user(tx: &mut Tx, cmd: CreateUser<'_>) -> AppResult<UserRow> {
    Ok(sql_one!(UserRow; tx,
        "INSERT INTO users (name, token_hash, balance, balance_updated_at, created_at, name_folded)
         VALUES ($1, $2, 0, $3, $3, $4) RETURNING id, name, created_at",
        cmd.name, cmd.token_hash, cmd.now, cmd.name.to_ascii_lowercase())?)
}

pub async fn find_user(h: &mut impl Handle, id: i64) -> AppResult<Option<UserRow>> {
    Ok(sql_optional!(UserRow; h, "SELECT id, name, created_at FROM users WHERE id = $1", id)?)
}

/// Replace a member's token (rotation or reissue): the old hash is gone in the same statement,
/// and the token epoch moves in the same transaction, so every instance drops its token cache
/// within a second. `None`: no such member.
pub async fn replace_token(tx: &mut Tx, id: i64, token_hash: &str) -> AppResult<Option<UserRow>> {
    let row = sql_optional!(UserRow; tx,
        "UPDATE users SET token_hash = $1 WHERE id = $2 RETURNING id, name, created_at",
        token_hash, id)?;
    if row.is_some() {
        bump_token_epoch(tx).await?;
    }
    Ok(row)
}

/// Call in the transaction that rotates or revokes a member token: every instance drops its
/// token cache within [`crate::state::MemberTokenCache::RECHECK`].
pub async fn bump_token_epoch(tx: &mut crate::db::Tx) -> AppResult<()> {
    crate::sql_execute!(tx, "UPDATE token_epoch SET epoch = epoch + 1 WHERE id = 1")?;
    Ok(())
}

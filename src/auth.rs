//! Bearer tokens: random, shown once, stored only as a SHA-256 hash.
//!
//! Tokens carry 256 bits of randomness, so a fast hash is enough (no password stretching):
//! guessing is hopeless and a leaked table reveals no usable token.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::sql_scalar_optional;
use crate::state::AppState;

/// Who is calling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Member(i64),
}

impl Principal {
    /// May this caller act on `user_id`'s resources? Admins may act on anyone's.
    pub fn authorize_user(self, user_id: i64) -> Result<(), AppError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Member(id) if id == user_id => Ok(()),
            Principal::Member(_) => Err(AppError::Forbidden(
                "this resource belongs to another member",
            )),
        }
    }

    /// Scope for idempotency keys: keys are per caller.
    pub fn scope(self) -> String {
        match self {
            Principal::Admin => "admin".to_string(),
            Principal::Member(id) => format!("user:{id}"),
        }
    }
}

/// A new random token with a recognisable prefix (`shp_` members, `shpa_` admins).
pub fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = bearer(parts).ok_or(AppError::Unauthorized)?;
        if token.len() > 200 {
            return Err(AppError::Unauthorized);
        }
        let hash = hash_token(token);
        if state.admin_token_hashes.contains(&hash) {
            return Ok(Principal::Admin);
        }
        state.member_tokens.revalidate(&state.db).await?;
        if let Some(id) = state.member_tokens.get(&hash) {
            return Ok(Principal::Member(id));
        }
        let generation = state.member_tokens.generation();
        let mut conn = state.db.read().await?;
        let id: Option<i64> = sql_scalar_optional!(
            &mut conn,
            "SELECT id FROM users WHERE token_hash = $1",
            &hash
        )?;
        let id = id.ok_or(AppError::Unauthorized)?;
        state.member_tokens.put(hash, id, generation);
        Ok(Principal::Member(id))
    }
}

/// Extractor for admin-only endpoints: a member token is `403`, no token `401`.
#[derive(Clone, Copy, Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        match Principal::from_request_parts(parts, state).await? {
            Principal::Admin => Ok(Admin),
            Principal::Member(_) => Err(AppError::Forbidden("admin token required")),
        }
    }
}

/// Admin token hashes to accept, and the token generated now if there was none.
///
/// Configured tokens (`--admin-token`) win. Otherwise the stored one is used; on the very first
/// start one is generated, stored hashed, and returned so the caller can print it once. Two
/// instances starting together race on the single row; the loser just reads the winner's.
pub async fn ensure_admin_tokens(
    db: &crate::db::Db,
    configured: &[String],
) -> anyhow::Result<(Vec<String>, Option<String>)> {
    let configured: Vec<String> = configured
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(hash_token)
        .collect();
    if !configured.is_empty() {
        return Ok((configured, None));
    }
    let mut tx = db.begin().await?;
    let stored: Option<String> =
        crate::sql_scalar_optional!(&mut tx, "SELECT token_hash FROM admin_tokens WHERE id = 1")?;
    if let Some(hash) = stored {
        return Ok((vec![hash], None));
    }
    let token = generate_token("shpa_");
    let hash = hash_token(&token);
    let inserted = crate::sql_execute!(
        &mut tx,
        "INSERT INTO admin_tokens (id, token_hash, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
        &hash,
        crate::store::now()
    )?;
    let stored: String =
        crate::sql_scalar!(&mut tx, "SELECT token_hash FROM admin_tokens WHERE id = 1")?;
    tx.commit().await?;
    Ok((vec![stored], (inserted == 1).then_some(token)))
}

/// Optional caller for public endpoints: no `Authorization` header is anonymous, but a
/// presented token must be valid.
impl axum::extract::OptionalFromRequestParts<AppState> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, AppError> {
        if parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .is_none()
        {
            return Ok(None);
        }
        <Principal as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let a = generate_token("shp_");
        let b = generate_token("shp_");
        assert_ne!(a, b);
        assert!(a.starts_with("shp_") && a.len() == 4 + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn members_only_touch_their_own() {
        assert!(Principal::Member(1).authorize_user(1).is_ok());
        assert_eq!(
            Principal::Member(1).authorize_user(2).unwrap_err().code(),
            "FORBIDDEN"
        );
        assert!(Principal::Admin.authorize_user(2).is_ok());
    }
}

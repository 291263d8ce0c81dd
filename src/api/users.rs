//! Members: sign-up (token shown once) and profile.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{Principal, generate_token, hash_token};
use crate::db::{Locks, Tx};
use crate::domain::text::required_text;
use crate::error::{AppError, AppResult, ErrorBody};
use crate::extract::{JsonBody, ValidPath};
use crate::state::AppState;
use crate::store::{self, users};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user))
        .routes(routes!(get_user))
        .routes(routes!(rotate_token))
}

pub const MAX_NAME_CHARS: usize = 100;

#[derive(Deserialize, ToSchema)]
pub struct CreateUserRequest {
    /// 1–100 characters, no control characters (trimmed).
    #[schema(
        example = "Kim Minji",
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
}

impl CreateUserRequest {
    /// The member's name, trimmed and checked.
    pub fn parse(&self) -> AppResult<String> {
        Ok(required_text("name", &self.name, MAX_NAME_CHARS)?)
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserCreated {
    pub id: i64,
    pub name: String,
    /// Bearer token: shown once, stored only as a hash.
    pub token: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: i64,
    pub name: String,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// Sign up a member; the response carries the member's token, shown only this once.
#[utoipa::path(post, path = "/users", tag = "members", request_body = CreateUserRequest,
    responses((status = 201, body = UserCreated), (status = 400, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    body: JsonBody<CreateUserRequest>,
) -> AppResult<(StatusCode, axum::Json<UserCreated>)> {
    let created = create_member(&state, &body.value.name).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// Create a member and return its one-time token (also used by `shopd seed-demo`).
pub async fn create_member(state: &AppState, name: &str) -> AppResult<UserCreated> {
    let name = required_text("name", name, MAX_NAME_CHARS)?;
    let token = generate_token("shp_");
    let token_hash = hash_token(&token);
    // Revalidated first, so the first member request does not clear what sign-ups kept.
    state.member_tokens.revalidate(&state.db).await?;
    let generation = state.member_tokens.generation();
    let stored_hash = token_hash.clone();
    let user = state
        .db
        .write(Locks::none(), async move |tx: &mut Tx| {
            users::create_user(
                tx,
                users::CreateUser {
                    name: &name,
                    token_hash: &stored_hash,
                    now: store::now(),
                },
            )
            .await
        })
        .await?;
    // Committed: this instance knows the token is valid without reading it back.
    state.member_tokens.put(token_hash, user.id, generation);
    Ok(UserCreated {
        id: user.id,
        name: user.name,
        token,
    })
}

/// A member's profile (the member or an admin).
#[utoipa::path(get, path = "/users/{userId}", tag = "members", security(("bearer" = [])),
    params(("userId" = i64, Path)),
    responses((status = 200, body = User), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_user(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath(user_id): ValidPath<i64>,
) -> AppResult<axum::Json<User>> {
    caller.authorize_user(user_id)?;
    let mut conn = state.db.read().await?;
    let user = users::find_user(&mut conn, user_id)
        .await?
        .ok_or_else(|| AppError::user_not_found(user_id))?;
    Ok(axum::Json(User {
        id: user.id,
        name: user.name,
        created_at: user.created_at,
    }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenIssued {
    pub user_id: i64,
    /// The new bearer token: shown once, stored only as a hash. The previous token no longer
    /// works.
    pub token: String,
}

/// Give a member a new token and forget the old one. This instance's token cache is cleared at
/// once; the rotation bumps the token epoch, which other instances re-read at most every
/// [`crate::state::MemberTokenCache::RECHECK`] (1 s), so the old token is refused everywhere
/// within a second (README, "Tokens").
pub async fn reissue_token(state: &AppState, user_id: i64) -> AppResult<TokenIssued> {
    let token = generate_token("shp_");
    let token_hash = hash_token(&token);
    let updated = state
        .db
        .write(Locks::user(user_id), async move |tx: &mut Tx| {
            users::replace_token(tx, user_id, &token_hash).await
        })
        .await?;
    updated.ok_or_else(|| AppError::user_not_found(user_id))?;
    state.member_tokens.clear();
    Ok(TokenIssued { user_id, token })
}

/// Rotate the caller's token: a new token is shown once and the old one stops working (the
/// member, or an admin for any member).
#[utoipa::path(post, path = "/users/{userId}/tokens", tag = "members", security(("bearer" = [])),
    params(("userId" = i64, Path)),
    responses((status = 200, body = TokenIssued), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn rotate_token(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath(user_id): ValidPath<i64>,
) -> AppResult<axum::Json<TokenIssued>> {
    caller.authorize_user(user_id)?;
    Ok(axum::Json(reissue_token(&state, user_id).await?))
}

//! Balance: read, charge (idempotent), ledger.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Principal;
use crate::db::{Locks, Tx};
use crate::domain::money::{ChargeAmount, LedgerKind};
use crate::domain::pagination::{Page, PageQuery};
use crate::error::{AppError, AppResult, ErrorBody};
use crate::extract::{IdempotencyKey, JsonBody, ValidPath, ValidQuery};
use crate::idempotency::{self, Reply};
use crate::state::AppState;
use crate::store::{self, balance};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_balance))
        .routes(routes!(charge))
        .routes(routes!(list_transactions))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    pub user_id: i64,
    /// Minor units (KRW won).
    pub balance: i64,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<balance::BalanceRow> for Balance {
    fn from(r: balance::BalanceRow) -> Self {
        Balance {
            user_id: r.user_id,
            balance: r.balance,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct ChargeRequest {
    /// Positive, at most the per-charge limit (`--max-charge`, default 1,000,000).
    #[schema(example = 50000, minimum = 1)]
    pub amount: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub id: i64,
    pub kind: LedgerKind,
    /// Signed: charges and refunds positive, payments negative.
    pub amount: i64,
    pub balance_after: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<i64>,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerPage {
    pub items: Vec<LedgerEntry>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A member's balance. A member who never charged has 0.
#[utoipa::path(get, path = "/users/{userId}/balance", tag = "balance", security(("bearer" = [])),
    params(("userId" = i64, Path)),
    responses((status = 200, body = Balance), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_balance(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath(user_id): ValidPath<i64>,
) -> AppResult<axum::Json<Balance>> {
    caller.authorize_user(user_id)?;
    let mut conn = state.db.read().await?;
    Ok(axum::Json(
        balance::get_balance(&mut conn, user_id).await?.into(),
    ))
}

/// Charge the balance. Supports `Idempotency-Key`.
#[utoipa::path(post, path = "/users/{userId}/balance/charge", tag = "balance", security(("bearer" = [])),
    params(("userId" = i64, Path), ("Idempotency-Key" = Option<String>, Header, description = "1–255 characters; a retry with the same key and body replays the first answer")),
    request_body = ChargeRequest,
    responses(
        (status = 200, body = Balance),
        (status = 400, description = "VALIDATION_ERROR or BALANCE_LIMIT_EXCEEDED", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "IDEMPOTENCY_IN_PROGRESS", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody)))]
async fn charge(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath(user_id): ValidPath<i64>,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<ChargeRequest>,
) -> AppResult<Response> {
    caller.authorize_user(user_id)?;
    let amount = ChargeAmount::parse(body.value.amount, &state.limits)?;
    let max_balance = state.limits.max_balance;
    idempotency::run(
        &state,
        caller,
        key,
        &body.fingerprint,
        Locks::user(user_id),
        async move |tx: &mut Tx| {
            let cmd = balance::Charge {
                user_id,
                amount,
                max_balance,
                now: store::now(),
            };
            let row = balance::charge(tx, cmd).await?;
            Reply::json(StatusCode::OK, Balance::from(row))
        },
    )
    .await
}

/// The ledger, newest first.
#[utoipa::path(get, path = "/users/{userId}/balance/transactions", tag = "balance", security(("bearer" = [])),
    params(("userId" = i64, Path), PageQuery),
    responses((status = 200, body = LedgerPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_transactions(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath(user_id): ValidPath<i64>,
    ValidQuery(query): ValidQuery<PageQuery>,
) -> AppResult<axum::Json<LedgerPage>> {
    caller.authorize_user(user_id)?;
    let page = Page::try_from(&query)?;
    let mut conn = state.db.read().await?;
    // Distinguish "no entries" from "no such member".
    balance::get_balance(&mut conn, user_id).await?;
    let rows = balance::ledger(&mut conn, user_id, page).await?;
    let (rows, next_cursor) = page.finish(rows, |r| r.id);
    let items = rows
        .into_iter()
        .map(|r| {
            let kind = LedgerKind::parse(&r.kind).ok_or_else(|| {
                AppError::from(anyhow::anyhow!("ledger entry {} has unknown kind", r.id))
            })?;
            Ok(LedgerEntry {
                id: r.id,
                kind,
                amount: r.amount,
                balance_after: r.balance_after,
                order_id: r.order_id,
                created_at: r.created_at,
            })
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok(axum::Json(LedgerPage { items, next_cursor }))
}

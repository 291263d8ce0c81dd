//! Admin view of the transactional outbox: list by status, replay a DEAD event.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Admin;
use crate::db::{Locks, Tx};
use crate::domain::pagination::{page_limit, uuid_cursor};
use crate::error::{AppError, AppResult, ErrorBody};
use crate::extract::{ValidPath, ValidQuery};
use crate::state::AppState;
use crate::store::{self, outbox};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(retry_event))
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboxStatus {
    Pending,
    Delivered,
    Dead,
}

impl OutboxStatus {
    fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "PENDING",
            OutboxStatus::Delivered => "DELIVERED",
            OutboxStatus::Dead => "DEAD",
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// PENDING, DELIVERED or DEAD (default: all).
    #[param(inline)]
    pub status: Option<OutboxStatus>,
    /// `nextCursor` of the previous page (an event id).
    #[param(
        pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    pub cursor: Option<String>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEvent {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub order_id: i64,
    /// PENDING, DELIVERED or DEAD.
    pub status: String,
    pub attempts: i64,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::api::rfc3339_opt")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// The JSON delivered to the data platform.
    #[schema(value_type = Object)]
    pub payload: Value,
}

impl From<outbox::EventRow> for OutboxEvent {
    fn from(r: outbox::EventRow) -> Self {
        OutboxEvent {
            payload: serde_json::from_str(&r.payload).unwrap_or(Value::String(r.payload)),
            event_id: r.id,
            kind: r.event_type,
            order_id: r.aggregate_id,
            status: r.status,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_error: r.last_error,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxPage {
    pub items: Vec<OutboxEvent>,
    pub next_cursor: Option<String>,
}

fn event_not_found(event_id: &str) -> AppError {
    AppError::not_found("OUTBOX_EVENT_NOT_FOUND", "outbox event", event_id)
}

/// Admin: outbox events in creation order, optionally by status.
#[utoipa::path(get, path = "/admin/outbox", tag = "outbox", security(("bearer" = [])), params(OutboxQuery),
    responses((status = 200, body = OutboxPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_events(
    State(state): State<AppState>,
    _admin: Admin,
    ValidQuery(query): ValidQuery<OutboxQuery>,
) -> AppResult<axum::Json<OutboxPage>> {
    let limit = page_limit(query.limit)?;
    let cursor = uuid_cursor(query.cursor.as_deref())?;
    let mut conn = state.db.read().await?;
    let mut rows = outbox::list(
        &mut conn,
        query.status.map(OutboxStatus::as_str),
        cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(axum::Json(OutboxPage {
        items: rows.into_iter().map(OutboxEvent::from).collect(),
        next_cursor,
    }))
}

/// Admin: put a DEAD event back in line with a fresh attempt budget (a DELIVERED one is `409`).
#[utoipa::path(post, path = "/admin/outbox/{eventId}/retry", tag = "outbox", security(("bearer" = [])),
    params(("eventId" = String, Path, description = "The event's UUID",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, body = OutboxEvent), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "OUTBOX_EVENT_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "OUTBOX_EVENT_DELIVERED", body = ErrorBody)))]
async fn retry_event(
    State(state): State<AppState>,
    _admin: Admin,
    ValidPath(event_id): ValidPath<String>,
) -> AppResult<axum::Json<OutboxEvent>> {
    let event_id = uuid::Uuid::try_parse(&event_id)
        .map_err(|_| AppError::validation("eventId", "must be a UUID"))?
        .hyphenated()
        .to_string();
    let row = state
        .db
        .write(Locks::none(), async move |tx: &mut Tx| {
            let before = outbox::requeue(tx, &event_id, store::now()).await?;
            match before.as_deref() {
                None => return Err(event_not_found(&event_id)),
                Some("DELIVERED") => {
                    return Err(AppError::conflict(
                        "OUTBOX_EVENT_DELIVERED",
                        "the event was already delivered",
                        json!({ "eventId": event_id }),
                    ));
                }
                Some(_) => {}
            }
            outbox::find(tx, &event_id)
                .await?
                .ok_or_else(|| event_not_found(&event_id))
        })
        .await?;
    state.outbox_wakeup.notify();
    Ok(axum::Json(row.into()))
}

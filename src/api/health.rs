//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::error::ErrorBody;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// The database is reachable and best-sellers are loaded.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
// Not ready until the best-seller snapshot is loaded (at start-up, before serving), so a load
// balancer never sends the first requests into a cold cache.
async fn readyz(State(state): State<AppState>) -> Response {
    let not_ready = |message: &str| {
        let body = ErrorBody {
            code: "NOT_READY",
            message: message.into(),
            details: serde_json::json!({}),
        };
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    };
    if let Err(err) = state.db.ping().await {
        tracing::warn!(error = %err, "readiness check failed");
        return not_ready("database unreachable");
    }
    if state.ranking.get().is_none() {
        return not_ready("best-seller snapshot not loaded yet");
    }
    axum::Json(Health { status: "ok" }).into_response()
}

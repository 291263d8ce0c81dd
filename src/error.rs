//! The one place where failures become HTTP responses.
//!
//! Every rejection is an [`AppError`] with a stable machine-readable `code` (SPEC §8). Handlers
//! and business commands return `Result<_, AppError>`; unexpected failures are logged with
//! their cause and answered `500 INTERNAL_SERVER_ERROR` without internals.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// Error body: `{"code", "message", "details"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `PRODUCT_OUT_OF_STOCK`.
    #[schema(example = "VALIDATION_ERROR")]
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Structured context (the offending field, product ids, the order id...).
    #[schema(value_type = Object)]
    pub details: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    Validation { message: String, details: Value },
    #[error("request body too large")]
    PayloadTooLarge { limit: usize },
    #[error("missing or unknown token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{what} not found")]
    NotFound {
        code: &'static str,
        what: &'static str,
        id: Value,
    },
    #[error("no such route")]
    RouteNotFound,
    #[error("method {method} is not allowed here")]
    MethodNotAllowed {
        method: String,
        allowed: Vec<String>,
    },
    #[error("the request body must be JSON (content-type: application/json)")]
    UnsupportedMediaType { content_type: Option<String> },
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        details: Value,
    },
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        details: Value,
    },
    #[error("insufficient balance")]
    InsufficientBalance { details: Value },
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this idempotency key is still running")]
    IdempotencyInProgress,
    #[error("request timed out")]
    Timeout,
    /// Retryable: the write queue is full, a batch could not commit, the pool is exhausted,
    /// or the command lost a deadlock. Answered `503` with `Retry-After`.
    #[error("service unavailable: {reason}")]
    Unavailable {
        reason: &'static str,
        #[source]
        cause: Option<anyhow::Error>,
    },
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

/// A domain rule refused an input: `400 VALIDATION_ERROR` naming the field.
impl From<crate::domain::invalid::Invalid> for AppError {
    fn from(invalid: crate::domain::invalid::Invalid) -> Self {
        AppError::validation(&invalid.field, invalid.reason)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        let retryable = match &err {
            sqlx::Error::PoolTimedOut => Some("no database connection is free"),
            // PostgreSQL: deadlock_detected, serialization_failure.
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("40P01") => Some("the write lost a deadlock"),
                Some("40001") => Some("the write lost a serialization conflict"),
                _ => None,
            },
            _ => None,
        };
        match retryable {
            Some(reason) => AppError::Unavailable {
                reason,
                cause: Some(anyhow::Error::new(err)),
            },
            None => AppError::Internal(anyhow::Error::new(err).context("database")),
        }
    }
}

impl crate::db::CommandError for AppError {
    fn unavailable(reason: &'static str) -> Self {
        AppError::Unavailable {
            reason,
            cause: None,
        }
    }
}

impl AppError {
    /// A `VALIDATION_ERROR` naming the offending field.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        AppError::Validation {
            details: json!({ "field": field, "reason": message }),
            message: format!("{field}: {message}"),
        }
    }

    /// A `409` with a stable code.
    pub fn conflict(code: &'static str, message: impl Into<String>, details: Value) -> Self {
        AppError::Conflict {
            code,
            message: message.into(),
            details,
        }
    }

    /// A `400` with a stable code other than `VALIDATION_ERROR`.
    pub fn bad_request(code: &'static str, message: impl Into<String>, details: Value) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
            details,
        }
    }

    /// A `404` with a stable code; `id` is echoed in `details.id`.
    pub fn not_found(code: &'static str, what: &'static str, id: impl Into<Value>) -> Self {
        AppError::NotFound {
            code,
            what,
            id: id.into(),
        }
    }

    pub fn user_not_found(id: i64) -> Self {
        Self::not_found("USER_NOT_FOUND", "user", id)
    }

    pub fn product_not_found(id: i64) -> Self {
        Self::not_found("PRODUCT_NOT_FOUND", "product", id)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Validation { .. } | AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound { .. } | AppError::RouteNotFound => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AppError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Conflict { .. } | AppError::IdempotencyInProgress => StatusCode::CONFLICT,
            AppError::InsufficientBalance { .. } => StatusCode::PAYMENT_REQUIRED,
            AppError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Timeout | AppError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::Validation { .. } => "VALIDATION_ERROR",
            AppError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            AppError::Unauthorized => "UNAUTHORIZED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::NotFound { code, .. } => code,
            AppError::RouteNotFound => "NOT_FOUND",
            AppError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            AppError::UnsupportedMediaType { .. } => "UNSUPPORTED_MEDIA_TYPE",
            AppError::Conflict { code, .. } | AppError::BadRequest { code, .. } => code,
            AppError::InsufficientBalance { .. } => "INSUFFICIENT_BALANCE",
            AppError::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            AppError::IdempotencyInProgress => "IDEMPOTENCY_IN_PROGRESS",
            AppError::Timeout => "REQUEST_TIMEOUT",
            AppError::Unavailable { .. } => "SERVICE_UNAVAILABLE",
            AppError::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    pub fn body(&self) -> ErrorBody {
        let details = match self {
            AppError::Validation { details, .. }
            | AppError::Conflict { details, .. }
            | AppError::BadRequest { details, .. }
            | AppError::InsufficientBalance { details } => details.clone(),
            AppError::PayloadTooLarge { limit } => json!({ "limitBytes": limit }),
            AppError::NotFound { id, .. } => json!({ "id": id }),
            AppError::MethodNotAllowed { method, allowed } => {
                json!({ "method": method, "allowed": allowed })
            }
            AppError::UnsupportedMediaType { content_type } => {
                json!({ "contentType": content_type, "expected": "application/json" })
            }
            _ => json!({}),
        };
        let message = match self {
            // Never leak internals.
            AppError::Internal(_) => "internal server error".to_string(),
            other => other.to_string(),
        };
        ErrorBody {
            code: self.code(),
            message,
            details,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            AppError::Internal(err) => tracing::error!(error = ?err, "request failed"),
            AppError::Unavailable {
                reason,
                cause: Some(cause),
            } => tracing::warn!(error = ?cause, reason, "request refused: retryable"),
            _ => {}
        }
        let retry_after = matches!(self, AppError::Unavailable { .. } | AppError::Timeout);
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// Middleware: give the error statuses produced outside the handlers (axum's `405` for a
/// known path with another method, a `404` from a nested service...) the standard JSON error
/// body, keeping their headers (`Allow`). Responses that already carry a JSON body pass as
/// they are.
pub async fn json_error_bodies(req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = response
                .headers()
                .get_all(ALLOW)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect();
            AppError::MethodNotAllowed { method, allowed }
        }
        StatusCode::NOT_FOUND => AppError::RouteNotFound,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => AppError::UnsupportedMediaType { content_type: None },
        _ => return response,
    };
    let (mut parts, _) = response.into_parts();
    let json = error.into_response();
    parts.headers.remove(CONTENT_LENGTH);
    for (name, value) in json.headers() {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, json.into_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::invalid::Invalid;

    #[test]
    fn a_domain_refusal_is_a_400_naming_the_field() {
        let err = AppError::from(Invalid::new("amount", "must be a positive integer"));
        assert_eq!(err.code(), "VALIDATION_ERROR");
        assert_eq!(err.body().details["field"], "amount");
        assert_eq!(err.body().details["reason"], "must be a positive integer");
    }
}

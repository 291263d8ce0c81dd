//! Request extractors that turn every malformed input into a `VALIDATION_ERROR` naming the
//! field (or `413 PAYLOAD_TOO_LARGE`), never axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::error::AppError;

/// A JSON body parsed into `T`, plus a fingerprint of the request for idempotency checks.
pub struct JsonBody<T> {
    pub value: T,
    /// SHA-256 over method, path and the canonical JSON (sorted keys, no whitespace).
    pub fingerprint: String,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let head = request_head(req.method(), req.uri());
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge {
                    limit: state.settings.body_limit,
                }
            } else {
                AppError::validation("body", rejection.body_text())
            }
        })?;
        let json: Value = serde_json::from_slice(&bytes)
            .map_err(|e| AppError::validation("body", format!("is not valid JSON: {e}")))?;
        if !json.is_object() {
            return Err(AppError::validation("body", "must be a JSON object"));
        }
        let value = serde_path_to_error::deserialize(&json).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            AppError::validation(&field_of(&path, &message), message)
        })?;
        Ok(JsonBody {
            value,
            fingerprint: fingerprint(&head, &json),
        })
    }
}

/// The field a deserialization error is about. serde reports a missing field at its parent
/// (``missing field `amount` ``), so take the name from the message then.
fn field_of(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (path, missing) {
        (".", Some(name)) => name.to_string(),
        (".", None) => "body".to_string(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (path, None) => path.to_string(),
    }
}

/// Fingerprint of a request: two requests are "the same" if method, path and JSON value match.
pub fn fingerprint(head: &str, json: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(head.as_bytes());
    hasher.update(b"\n");
    // serde_json's map is ordered by key, so this serialization is canonical.
    hasher.update(json.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

/// "METHOD /path": what, besides the body, makes two requests the same request.
fn request_head(method: &axum::http::Method, uri: &axum::http::Uri) -> String {
    format!("{method} {}", uri.path())
}

/// The idempotency fingerprint of a request without a body (method and path only), the same
/// way [`JsonBody`] computes it for requests with one.
pub struct BodylessFingerprint(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BodylessFingerprint {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(BodylessFingerprint(fingerprint(
            &request_head(&parts.method, &parts.uri),
            &Value::Null,
        )))
    }
}

/// `Path<T>` whose rejection is a `VALIDATION_ERROR`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct ValidPath<T>(pub T);

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        AppError::validation("path", rejection.body_text())
    }
}

/// `Query<T>` whose rejection is a `VALIDATION_ERROR`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct ValidQuery<T>(pub T);

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        AppError::validation("query", rejection.body_text())
    }
}

/// The optional `Idempotency-Key` header: 1–255 visible ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let Some(raw) = parts.headers.get(IDEMPOTENCY_HEADER) else {
            return Ok(IdempotencyKey(None));
        };
        let key = raw
            .to_str()
            .ok()
            .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                AppError::validation(
                    "Idempotency-Key",
                    "must be 1 to 255 visible ASCII characters",
                )
            })?;
        Ok(IdempotencyKey(Some(key.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_names_come_from_path_or_missing_field() {
        assert_eq!(field_of(".", "missing field `amount`"), "amount");
        assert_eq!(
            field_of("items[0]", "missing field `quantity`"),
            "items[0].quantity"
        );
        assert_eq!(field_of("amount", "invalid type"), "amount");
        assert_eq!(field_of(".", "invalid type: sequence"), "body");
    }

    #[test]
    fn fingerprint_ignores_key_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "b": 2, "a": 1 }"#).unwrap();
        assert_eq!(fingerprint("POST /x", &a), fingerprint("POST /x", &b));
        assert_ne!(fingerprint("POST /x", &a), fingerprint("POST /y", &a));
        assert_ne!(
            fingerprint("POST /x", &a),
            fingerprint("POST /x", &json!({"a": 1, "b": 3}))
        );
    }
}

//! Request extractors that turn every malformed input into a `VALIDATION_ERROR` naming the
//! field (or `413 PAYLOAD_TOO_LARGE`), never axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, RawPathParams, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::state::AppState;

/// A JSON body parsed into `T`, plus a fingerprint of the request for idempotency checks.
pub struct JsonBody<T> {
    pub value: T,
    /// SHA-256 over method, path and the canonical JSON (sorted keys, no whitespace).
    pub fingerprint: String,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let content_type = req.headers().get(CONTENT_TYPE);
        if !content_type.is_some_and(is_json_media_type) {
            return Err(AppError::UnsupportedMediaType {
                content_type: content_type.map(|v| String::from_utf8_lossy(v.as_bytes()).into()),
            });
        }
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
        decode_json_body(&head, &bytes)
    }
}

/// Decode a JSON request body as [`JsonBody`] does once the bytes are read (`head` is
/// "METHOD /path", for the fingerprint): valid JSON, an object, integral numbers as integers,
/// then `T`, every failure a `VALIDATION_ERROR` naming the field. Pure, for the fuzzer too.
pub fn decode_json_body<T: DeserializeOwned>(
    head: &str,
    bytes: &[u8],
) -> Result<JsonBody<T>, AppError> {
    let mut json: Value = serde_json::from_slice(bytes)
        .map_err(|e| AppError::validation("body", format!("is not valid JSON: {e}")))?;
    integral_numbers_as_integers(&mut json);
    if !json.is_object() {
        return Err(AppError::validation("body", "must be a JSON object"));
    }
    let value = serde_path_to_error::deserialize(&json).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        AppError::validation(&field_of(&path, &message), plain_reason(&message))
    })?;
    Ok(JsonBody {
        value,
        fingerprint: fingerprint(head, &json),
    })
}

/// JSON Schema counts `2.0` as an integer: so does the API (and `2` and `2.0` are then the same
/// request for idempotency). A fraction (`2.5`) still fails as "must be an integer".
fn integral_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && (-9_007_199_254_740_992.0..=9_007_199_254_740_992.0).contains(&f)
            {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

/// `application/json` or any `application/*+json`, with or without parameters (`charset`).
fn is_json_media_type(value: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Say what a serde error expects in plain words, without Rust type names: ``invalid type:
/// string "x", expected i64`` becomes `must be an integer (got a string)`.
pub fn plain_reason(message: &str) -> String {
    // serde_json appends " at line L column C"; the field is named separately.
    let message = message.split(" at line ").next().unwrap_or(message);
    if let Some(rest) = message.strip_prefix("unknown variant ")
        && let Some((_, expected)) = rest.split_once(", expected ")
    {
        let expected = expected.trim_start_matches("one of ").replace('`', "");
        return format!("must be one of {expected}");
    }
    if message.contains("provided string was not `true` or `false`") {
        return "must be true or false".into();
    }
    if message.contains("invalid digit")
        || message.contains("cannot parse integer")
        || message.contains("number too large")
        || message.contains("number too small")
    {
        return "must be an integer within range".into();
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((got, expected)) = rest.rsplit_once(", expected ")
        {
            let got = got.split(' ').next().unwrap_or(got);
            let got = match got {
                "string" => "a string",
                "integer" => "an integer",
                "floating" => "a number with a fraction",
                "boolean" => "a boolean",
                "sequence" => "an array",
                "map" => "an object",
                "null" => "null",
                other => other,
            };
            return format!("must be {} (got {got})", plain_type(expected));
        }
    }
    message.replace("`", "")
}

/// A serde `expected` clause in plain words.
fn plain_type(expected: &str) -> String {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".into(),
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer".into(),
        "f32" | "f64" => "a number".into(),
        "bool" | "a boolean" => "true or false".into(),
        "a sequence" => "an array".into(),
        other if other.starts_with("struct ") || other == "a map" => "an object".into(),
        other if other.starts_with("a string") => "a string".into(),
        other if other.contains("RFC 3339") || other.contains("datetime") => {
            "an RFC 3339 timestamp".into()
        }
        other => other.replace('`', ""),
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

/// `Path<T>` whose rejection is a `VALIDATION_ERROR` naming the parameter (`details.field` is
/// `userId`, `productId`...) in plain words.
pub struct ValidPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ValidPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ValidPath(value)),
            Err(rejection) => {
                let names: Vec<String> = RawPathParams::from_request_parts(parts, state)
                    .await
                    .map(|raw| raw.iter().map(|(k, _)| k.to_string()).collect())
                    .unwrap_or_default();
                Err(path_error(rejection, &names))
            }
        }
    }
}

fn path_error(rejection: PathRejection, names: &[String]) -> AppError {
    let PathRejection::FailedToDeserializePathParams(err) = rejection else {
        return AppError::Internal(anyhow::anyhow!(
            "path parameters: {}",
            rejection.body_text()
        ));
    };
    let reason = |expected: &str| {
        if ["i64", "i32", "u64", "u32"].contains(&expected) {
            "must be a positive integer".to_string()
        } else {
            format!("must be {}", plain_type(expected))
        }
    };
    match err.into_kind() {
        ErrorKind::ParseErrorAtKey {
            key, expected_type, ..
        } => AppError::validation(&key, reason(expected_type)),
        ErrorKind::ParseErrorAtIndex {
            index,
            expected_type,
            ..
        } => {
            let name = names.get(index).map_or("path", String::as_str);
            AppError::validation(name, reason(expected_type))
        }
        ErrorKind::ParseError { expected_type, .. } => {
            let name = names.first().map_or("path", String::as_str);
            AppError::validation(name, reason(expected_type))
        }
        ErrorKind::InvalidUtf8InPathParam { key } => {
            AppError::validation(&key, "must be valid UTF-8")
        }
        other => AppError::validation(names.first().map_or("path", String::as_str), {
            let text = other.to_string();
            plain_reason(&text)
        }),
    }
}

/// `Query<T>` whose rejection is a `VALIDATION_ERROR` naming the parameter (`details.field` is
/// `limit`, `status`...) in plain words.
pub struct ValidQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ValidQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        decode_query(parts.uri.query().unwrap_or_default()).map(ValidQuery)
    }
}

/// Decode a query string as [`ValidQuery`] does. Pure, for the fuzzer too.
pub fn decode_query<T: DeserializeOwned>(query: &str) -> Result<T, AppError> {
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let field = match field_of(&path, &message).as_str() {
            "body" => "query".to_string(),
            field => field.to_string(),
        };
        AppError::validation(&field, plain_reason(&message))
    })
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
        parse_idempotency_key(raw.as_bytes()).map(|key| IdempotencyKey(Some(key)))
    }
}

/// An `Idempotency-Key` header value: 1–255 visible ASCII characters.
pub fn parse_idempotency_key(raw: &[u8]) -> Result<String, AppError> {
    std::str::from_utf8(raw)
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .ok_or_else(|| {
            AppError::validation(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
        })
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
    fn reasons_are_plain_words() {
        assert_eq!(
            plain_reason("invalid type: string \"x\", expected i64 at line 1 column 12"),
            "must be an integer (got a string)"
        );
        assert_eq!(
            plain_reason("unknown variant `LOST`, expected one of `PENDING`, `DEAD`"),
            "must be one of PENDING, DEAD"
        );
        assert_eq!(
            plain_reason("invalid digit found in string"),
            "must be an integer within range"
        );
        assert_eq!(
            plain_reason("provided string was not `true` or `false`"),
            "must be true or false"
        );
        assert!(!plain_reason("invalid type: map, expected u32").contains("u32"));
    }

    #[test]
    fn integral_floats_become_integers() {
        let mut v: Value = serde_json::from_str(r#"{"a":2.0,"b":[1.5,-3.0],"c":1e300}"#).unwrap();
        integral_numbers_as_integers(&mut v);
        assert_eq!(v["a"], json!(2));
        assert!(v["a"].is_i64());
        assert_eq!(v["b"], json!([1.5, -3]));
        assert!(v["c"].is_f64(), "out of the exact range: left as it is");
    }

    #[test]
    fn json_media_types() {
        let ok = |v: &'static str| is_json_media_type(&HeaderValue::from_static(v));
        assert!(ok("application/json"));
        assert!(ok("Application/JSON; charset=utf-8"));
        assert!(ok("application/merge-patch+json"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/x-www-form-urlencoded"));
        assert!(!ok("application/jsonx"));
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

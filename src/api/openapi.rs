//! Cross-cutting facts of the OpenAPI document, applied to every operation in one place so no
//! handler annotation can forget them (SPEC §8: every status an operation can answer, every
//! bound the server enforces).
//!
//! - a path or query parameter → `400 VALIDATION_ERROR` (it may not parse);
//! - a JSON request body → `400`, `413 PAYLOAD_TOO_LARGE`, `415 UNSUPPORTED_MEDIA_TYPE`;
//! - a bearer token → `401 UNAUTHORIZED`;
//! - an `Idempotency-Key` header → its bounds (1–255 visible ASCII), `409
//!   IDEMPOTENCY_IN_PROGRESS` and `422 IDEMPOTENCY_KEY_REUSED`.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder};

/// The idempotency header's bounds, as [`crate::extract::IdempotencyKey`] enforces them.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[\\x21-\\x7E]{1,255}$";

/// The document as this instance serves it: bounds that come from configuration
/// (`--max-charge`) are filled in.
pub fn for_settings(doc: OpenApi, settings: &crate::config::Settings) -> OpenApi {
    let Ok(mut value) = serde_json::to_value(&doc) else {
        return doc;
    };
    if let Some(amount) = value.pointer_mut("/components/schemas/ChargeRequest/properties/amount") {
        amount["maximum"] = settings.max_charge.into();
    }
    serde_json::from_value(value).unwrap_or(doc)
}

pub struct ApiConventions;

impl utoipa::Modify for ApiConventions {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                apply(operation);
            }
        }
    }
}

fn apply(op: &mut Operation) {
    let mut has_path_or_query = false;
    let mut has_idempotency_key = false;
    for param in op.parameters.iter_mut().flatten() {
        match param.parameter_in {
            ParameterIn::Path | ParameterIn::Query => has_path_or_query = true,
            ParameterIn::Header if param.name.eq_ignore_ascii_case("Idempotency-Key") => {
                has_idempotency_key = true;
                param.description = Some(
                    "1–255 visible ASCII characters, scoped to the caller. A retry with the same \
                     key and request replays the first answer (header `idempotent-replayed: \
                     true`); the same key with another request is `422 IDEMPOTENCY_KEY_REUSED`."
                        .into(),
                );
                param.schema = Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(255))
                        .pattern(Some(IDEMPOTENCY_KEY_PATTERN))
                        .into(),
                );
            }
            _ => {}
        }
    }
    if has_path_or_query {
        ensure(
            op,
            "400",
            "VALIDATION_ERROR: a path or query parameter is malformed (`details.field` names it)",
        );
    }
    if op.request_body.is_some() {
        ensure(
            op,
            "400",
            "VALIDATION_ERROR: the body is malformed or out of bounds (`details.field` names the field)",
        );
        ensure(
            op,
            "413",
            "PAYLOAD_TOO_LARGE: the body is over `--body-limit`",
        );
        ensure(
            op,
            "415",
            "UNSUPPORTED_MEDIA_TYPE: the body is not `application/json`",
        );
    }
    if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
        ensure(
            op,
            "401",
            "UNAUTHORIZED: no, malformed or unknown bearer token",
        );
    }
    if has_idempotency_key {
        ensure(
            op,
            "409",
            "IDEMPOTENCY_IN_PROGRESS: the same key is still being processed",
        );
        ensure(
            op,
            "422",
            "IDEMPOTENCY_KEY_REUSED: the same key with a different request",
        );
    }
}

/// Declare `status` with the error body, or add `code` to an existing description.
fn ensure(op: &mut Operation, status: &str, description: &str) {
    let code = description.split(':').next().unwrap_or(description);
    match op.responses.responses.get_mut(status) {
        Some(RefOr::T(existing)) => {
            if !existing.description.contains(code) {
                existing.description = if existing.description.is_empty() {
                    description.to_string()
                } else {
                    format!("{}; {description}", existing.description)
                };
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build();
            op.responses
                .responses
                .insert(status.to_string(), RefOr::T(response));
        }
    }
}

//! Entry points for fuzzing request decoding (`fuzz/`, `cargo fuzz run decode`): the JSON body
//! of every write endpoint, decoded and validated exactly as its handler does before anything
//! touches the database, and the query strings with cursors of the lists. Pure: no database,
//! no I/O, no clock beyond `now`.
//!
//! The property: decoding never panics, and a refusal is always a client error (`400`, `413`,
//! `415`, `422`) with a stable code, never a `500`.

use chrono::{DateTime, Utc};

use crate::api::admin::{
    AdminMemberQuery, AdminOrderQuery, AdminProductQuery, UpdateCouponRequest,
};
use crate::api::balance::ChargeRequest;
use crate::api::cart::PutCartItemRequest;
use crate::api::coupons::{CreateCouponRequest, UserCouponQuery};
use crate::api::orders::{OrderIntent, OrderListQuery, PlaceOrderRequest};
use crate::api::outbox::OutboxQuery;
use crate::api::products::{CreateProductRequest, StockRequest, UpdateProductRequest};
use crate::api::users::CreateUserRequest;
use crate::domain::money::{BalanceLimits, ChargeAmount};
use crate::domain::pagination::{Page, PageQuery, page_limit, uuid_cursor};
use crate::error::AppError;
use crate::extract::{JsonBody, decode_json_body, decode_query, parse_idempotency_key};

/// What one fuzz input is decoded as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `POST /users`
    CreateUser,
    /// `POST /users/{userId}/balance/charge`
    Charge,
    /// `POST /admin/products`
    CreateProduct,
    /// `PATCH /admin/products/{productId}`
    UpdateProduct,
    /// `POST /admin/products/{productId}/stock`
    AdjustStock,
    /// `POST /admin/coupons`
    CreateCampaign,
    /// `PATCH /admin/coupons/{couponId}`
    UpdateCampaign,
    /// `PUT /users/{userId}/cart/items/{productId}`
    PutCartItem,
    /// `POST /orders`
    PlaceOrder,
    /// `?cursor&limit` of the id-keyed lists (products, ledger, admin coupons)
    PageQuery,
    /// `GET /users/{userId}/orders?status&cursor&limit`
    OrderListQuery,
    /// `GET /users/{userId}/coupons?status`
    UserCouponQuery,
    /// `GET /admin/orders`, `/admin/members`, `/admin/products` queries
    AdminQueries,
    /// `GET /admin/outbox?status&cursor&limit` (UUID cursors)
    OutboxQuery,
    /// A raw cursor through both cursor decoders.
    Cursor,
    /// The `Idempotency-Key` header.
    IdempotencyKey,
}

impl Target {
    pub const ALL: [Target; 16] = [
        Target::CreateUser,
        Target::Charge,
        Target::CreateProduct,
        Target::UpdateProduct,
        Target::AdjustStock,
        Target::CreateCampaign,
        Target::UpdateCampaign,
        Target::PutCartItem,
        Target::PlaceOrder,
        Target::PageQuery,
        Target::OrderListQuery,
        Target::UserCouponQuery,
        Target::AdminQueries,
        Target::OutboxQuery,
        Target::Cursor,
        Target::IdempotencyKey,
    ];

    /// The target a fuzz input's first byte selects.
    pub fn from_byte(b: u8) -> Target {
        Self::ALL[usize::from(b) % Self::ALL.len()]
    }
}

fn body<T: serde::de::DeserializeOwned>(input: &[u8]) -> Result<T, AppError> {
    decode_json_body::<T>("POST /fuzz", input).map(|JsonBody { value, .. }| value)
}

fn page(cursor: Option<String>, limit: Option<i64>) -> Result<(), AppError> {
    Ok(Page::try_from(&PageQuery { cursor, limit }).map(drop)?)
}

/// Decode `input` as `target`, as the server would: `Ok` if the server would go on to run the
/// request, the `AppError` it would answer otherwise.
pub fn decode(target: Target, input: &[u8], now: DateTime<Utc>) -> Result<(), AppError> {
    let text = || String::from_utf8_lossy(input).into_owned();
    match target {
        Target::CreateUser => body::<CreateUserRequest>(input)?.parse().map(drop),
        Target::Charge => {
            let req = body::<ChargeRequest>(input)?;
            Ok(ChargeAmount::parse(req.amount, &BalanceLimits::default()).map(drop)?)
        }
        Target::CreateProduct => body::<CreateProductRequest>(input)?.parse().map(drop),
        Target::UpdateProduct => body::<UpdateProductRequest>(input)?.parse().map(drop),
        Target::AdjustStock => body::<StockRequest>(input)?.parse().map(drop),
        Target::CreateCampaign => body::<CreateCouponRequest>(input)?.parse(now).map(drop),
        Target::UpdateCampaign => body::<UpdateCouponRequest>(input)?.parse().map(drop),
        Target::PutCartItem => body::<PutCartItemRequest>(input)?.parse().map(drop),
        Target::PlaceOrder => OrderIntent::try_from(&body::<PlaceOrderRequest>(input)?).map(drop),
        Target::PageQuery => Ok(Page::try_from(&decode_query::<PageQuery>(&text())?).map(drop)?),
        Target::OrderListQuery => {
            let q = decode_query::<OrderListQuery>(&text())?;
            page(q.cursor, q.limit)
        }
        Target::UserCouponQuery => decode_query::<UserCouponQuery>(&text()).map(drop),
        Target::AdminQueries => {
            let query = text();
            let q = decode_query::<AdminOrderQuery>(&query)?;
            page(q.cursor, q.limit)?;
            let q = decode_query::<AdminMemberQuery>(&query)?;
            page(q.cursor, q.limit)?;
            let q = decode_query::<AdminProductQuery>(&query)?;
            page(q.cursor, q.limit)
        }
        Target::OutboxQuery => {
            let q = decode_query::<OutboxQuery>(&text())?;
            page_limit(q.limit)?;
            Ok(uuid_cursor(q.cursor.as_deref()).map(drop)?)
        }
        Target::Cursor => {
            let cursor = text();
            let id = page(Some(cursor.clone()), None);
            let uuid = uuid_cursor(Some(&cursor));
            id.and(uuid.map(drop).map_err(AppError::from))
        }
        Target::IdempotencyKey => parse_idempotency_key(input).map(drop),
    }
}

/// One fuzz input: the first byte picks the target, the rest is the input. Panics only if
/// decoding refuses an input with something other than a client error (the fuzzer's finding).
pub fn fuzz_one(data: &[u8]) {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let target = Target::from_byte(first);
    if let Err(err) = decode(target, input, fixed_now()) {
        let status = err.status();
        assert!(
            status.is_client_error(),
            "{target:?} refused {input:?} with {status} {}",
            err.code()
        );
    }
}

/// A fixed "now", so a finding replays the same way.
pub fn fixed_now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzzer's seeds and every regression input it found (`fuzz/seeds/decode/`) replay
    /// without a panic or a server error on every test run, without cargo-fuzz.
    #[test]
    fn seeds_and_regressions_replay_cleanly() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/decode");
        let mut replayed = 0;
        for entry in std::fs::read_dir(dir).expect("fuzz/seeds/decode") {
            let data = std::fs::read(entry.expect("entry").path()).expect("seed");
            fuzz_one(&data);
            replayed += 1;
        }
        assert!(replayed >= Target::ALL.len(), "{replayed} seeds");
    }

    #[test]
    fn every_target_has_a_byte() {
        for (i, target) in Target::ALL.iter().enumerate() {
            assert_eq!(Target::from_byte(i as u8), *target);
        }
    }

    #[test]
    fn valid_inputs_decode_and_invalid_ones_are_client_errors() {
        let ok = |t, s: &str| decode(t, s.as_bytes(), fixed_now());
        assert!(
            ok(
                Target::PlaceOrder,
                r#"{"items":[{"productId":1,"quantity":2}]}"#
            )
            .is_ok()
        );
        assert!(ok(Target::Charge, r#"{"amount":2.0}"#).is_ok());
        assert!(
            ok(Target::Cursor, "42").is_err(),
            "an id is not a UUID cursor"
        );
        assert!(ok(Target::OutboxQuery, "cursor=garbage").is_err());
        for (t, s) in [
            (Target::CreateUser, r#"{"name":"a\u0000b"}"#),
            (Target::PlaceOrder, r#"{"fromCart":true,"items":[]}"#),
            (Target::AdjustStock, r#"{"delta":0}"#),
            (Target::PageQuery, "limit=0"),
            (Target::IdempotencyKey, " "),
        ] {
            let err = ok(t, s).expect_err(s);
            assert_eq!(
                err.status(),
                axum::http::StatusCode::BAD_REQUEST,
                "{t:?} {s}"
            );
        }
    }
}

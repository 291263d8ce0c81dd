//! Refunds (SPEC §14): the back office gives a paid order's money back to the member's
//! balance, whole or by line, optionally putting the units back in stock. The rules live in
//! `store::orders::refund` and the arithmetic in `domain::refund`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{Admin, Principal};
use crate::db::Tx;
use crate::domain::order::OrderLines;
use crate::domain::text::required_text;
use crate::error::{AppError, AppResult, ErrorBody};
use crate::extract::{IdempotencyKey, JsonBody, ValidPath};
use crate::idempotency::{self, Reply};
use crate::state::AppState;
use crate::store;
use crate::store::orders::{self as store_orders, RefundDetails, RefundOrder};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(refund_order))
}

/// The longest refund reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundLineRequest {
    /// A product of the order.
    pub product_id: i64,
    /// Units to refund, 1–1000 (repeated products are merged); at most what remains
    /// refundable of the line.
    #[schema(example = 1, minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

/// What to refund: `lines` (1–50 products of the order) or, without `lines`, every unit not
/// refunded yet.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundRequest {
    /// 1–50 distinct products of the order (repeated products are merged).
    #[schema(min_items = 1)]
    pub lines: Option<Vec<RefundLineRequest>>,
    /// Put the refunded units back in stock (default true).
    pub restock: Option<bool>,
    /// Why the money is given back (1–500 characters, no control characters).
    #[schema(
        min_length = 1,
        max_length = 500,
        example = "damaged in delivery",
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundLine {
    pub product_id: i64,
    pub quantity: i64,
    /// What these units refunded: their unit price less their share of the order's discount.
    pub amount: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Refund {
    pub id: i64,
    pub order_id: i64,
    /// Credited to the member's balance (a `REFUND` ledger entry).
    pub amount: i64,
    pub lines: Vec<RefundLine>,
    /// Whether the units went back to stock.
    pub restock: bool,
    pub reason: String,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<RefundDetails> for Refund {
    fn from(d: RefundDetails) -> Self {
        Refund {
            id: d.refund.id,
            order_id: d.refund.order_id,
            amount: d.refund.amount,
            lines: d
                .lines
                .into_iter()
                .map(|l| RefundLine {
                    product_id: l.product_id,
                    quantity: l.quantity,
                    amount: l.amount,
                })
                .collect(),
            restock: d.refund.restock,
            reason: d.refund.reason,
            created_at: d.refund.created_at,
        }
    }
}

/// A valid refund request, checked before anything runs.
struct RefundIntent {
    lines: Option<Vec<(i64, i64)>>,
    restock: bool,
    reason: String,
}

impl TryFrom<&RefundRequest> for RefundIntent {
    type Error = AppError;

    fn try_from(req: &RefundRequest) -> Result<Self, AppError> {
        let lines = match &req.lines {
            None => None,
            Some(lines) => {
                let pairs: Vec<(i64, i64)> =
                    lines.iter().map(|l| (l.product_id, l.quantity)).collect();
                OrderLines::parse(&pairs, "lines")?;
                Some(pairs)
            }
        };
        Ok(RefundIntent {
            lines,
            restock: req.restock.unwrap_or(true),
            reason: required_text("reason", &req.reason, MAX_REASON_CHARS)?,
        })
    }
}

/// Admin: refund a PAID, CONFIRMED or PARTIALLY_REFUNDED order, whole (no `lines`) or by line.
/// In one transaction: the member's balance is credited (a `REFUND` ledger entry, even above
/// the maximum balance), the units go back to stock unless `restock: false`, the order becomes
/// PARTIALLY_REFUNDED or REFUNDED, and an `ORDER_REFUNDED` event is written. Each unit refunds
/// its unit price less its share of the discount (spread over units in proportion to price,
/// rounded down, the remainder on the last units): refunding everything returns exactly the
/// order's `total`. A used coupon is not given back. Supports `Idempotency-Key`.
#[utoipa::path(post, path = "/admin/orders/{orderId}/refunds", tag = "refunds", security(("bearer" = [])),
    params(("orderId" = i64, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = RefundRequest,
    responses(
        (status = 201, description = "The refund", body = Refund),
        (status = 400, description = "VALIDATION_ERROR: a bad field, or a product that is not in the order (`details.field`, e.g. `lines[0].productId`)", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "FORBIDDEN: not an admin token", body = ErrorBody),
        (status = 404, description = "ORDER_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ORDER_NOT_REFUNDABLE (PENDING, CANCELLED, EXPIRED or already REFUNDED; `details.status`), REFUND_EXCEEDS_ORDER (more units than remain refundable; `details.lines`), IDEMPOTENCY_IN_PROGRESS", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody)))]
async fn refund_order(
    State(state): State<AppState>,
    _admin: Admin,
    ValidPath(order_id): ValidPath<i64>,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<RefundRequest>,
) -> AppResult<Response> {
    let RefundIntent {
        lines,
        restock,
        reason,
    } = RefundIntent::try_from(&body.value)?;
    let locks = store_orders::refunding_locks(&state.db, order_id, restock).await?;
    idempotency::run(
        &state,
        Principal::Admin,
        key,
        &body.fingerprint,
        locks,
        async move |tx: &mut Tx| {
            let cmd = RefundOrder {
                order_id,
                lines,
                restock,
                reason,
                now: store::now(),
            };
            let refund = store_orders::refund_order(tx, cmd).await?;
            metrics::counter!("refunds_total").increment(1);
            Reply::json(StatusCode::CREATED, Refund::from(refund))
        },
    )
    .await
}

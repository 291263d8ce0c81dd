//! Orders: place (reserve + optionally pay), pay later, cancel, read.
//!
//! (Longer than most files: the order resource's request/response types, their OpenAPI
//! annotations and five handlers; the business rules live in `store::orders`.)

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::api::refunds::Refund;
use crate::auth::Principal;
use crate::db::{Locks, Tx};
use crate::domain::order::{OrderLines, OrderStatus};
use crate::domain::pagination::{Page, PageQuery};
use crate::error::{AppError, AppResult, ErrorBody};
use crate::extract::{BodylessFingerprint, IdempotencyKey, JsonBody, ValidPath, ValidQuery};
use crate::idempotency::{self, Reply};
use crate::state::AppState;
use crate::store;
use crate::store::orders::{
    self as store_orders, Actor, CouponRef, OrderDetails, OrderSource, PayOutcome, Payment,
    PlaceOrder,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place_order))
        .routes(routes!(get_order))
        .routes(routes!(pay_order))
        .routes(routes!(cancel_order))
        .routes(routes!(list_orders))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderItemRequest {
    pub product_id: i64,
    /// 1–1000 (repeated products are merged).
    #[schema(example = 1, minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

/// Give exactly one of `items` (order from a product page, 1–50 distinct products) or
/// `fromCart: true`; `productIds` (a subset of the cart) only with `fromCart`. At most one of
/// `couponId` and `userCouponId`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaceOrderRequest {
    pub items: Option<Vec<OrderItemRequest>>,
    pub from_cart: Option<bool>,
    /// With `fromCart`: order only these products of the cart.
    pub product_ids: Option<Vec<i64>>,
    /// The campaign whose coupon (held by the member) to apply.
    pub coupon_id: Option<i64>,
    /// Alternatively, the member's coupon by its own id.
    pub user_coupon_id: Option<i64>,
    /// Pay from the balance right away (default true).
    pub pay: Option<bool>,
}

/// What a valid `POST /orders` body asks for, checked before anything runs: where the lines
/// come from (`items` xor `fromCart`, `productIds` only with `fromCart`), which coupon
/// (`couponId` xor `userCouponId`), and whether to pay now.
pub struct OrderIntent {
    pub source: OrderSource,
    pub coupon: Option<CouponRef>,
    pub pay: bool,
}

impl TryFrom<&PlaceOrderRequest> for OrderIntent {
    type Error = AppError;

    fn try_from(req: &PlaceOrderRequest) -> Result<Self, AppError> {
        let source = match (&req.items, req.from_cart.unwrap_or(false)) {
            (Some(_), true) => {
                return Err(AppError::validation(
                    "fromCart",
                    "give either items or fromCart, not both",
                ));
            }
            (None, false) => {
                return Err(AppError::validation(
                    "items",
                    "give items, or fromCart: true",
                ));
            }
            (Some(items), false) => {
                if req.product_ids.is_some() {
                    return Err(AppError::validation("productIds", "only with fromCart"));
                }
                let pairs: Vec<(i64, i64)> =
                    items.iter().map(|i| (i.product_id, i.quantity)).collect();
                OrderSource::Items(OrderLines::parse(&pairs, "items")?)
            }
            (None, true) => {
                if let Some(ids) = &req.product_ids {
                    let pairs: Vec<(i64, i64)> = ids.iter().map(|id| (*id, 1)).collect();
                    OrderLines::parse(&pairs, "productIds")?;
                }
                OrderSource::Cart {
                    product_ids: req.product_ids.clone(),
                }
            }
        };
        let coupon = match (req.coupon_id, req.user_coupon_id) {
            (Some(_), Some(_)) => {
                return Err(AppError::validation(
                    "userCouponId",
                    "give couponId or userCouponId, not both",
                ));
            }
            (Some(id), None) => Some(CouponRef::Campaign(id)),
            (None, Some(id)) => Some(CouponRef::UserCoupon(id)),
            (None, None) => None,
        };
        let pay = req.pay.unwrap_or(true);
        Ok(OrderIntent {
            source,
            coupon,
            pay,
        })
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderItem {
    pub product_id: i64,
    /// Name at order time.
    pub name: String,
    /// Unit price at order time.
    pub unit_price: i64,
    pub quantity: i64,
    pub line_total: i64,
    /// Units of this line refunded so far.
    pub refunded_quantity: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentAttempt {
    pub id: i64,
    pub amount: i64,
    /// SUCCEEDED or FAILED.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<String>,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusChange {
    pub from: Option<OrderStatus>,
    pub to: OrderStatus,
    pub reason: String,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: i64,
    pub user_id: i64,
    pub status: OrderStatus,
    pub from_cart: bool,
    pub items: Vec<OrderItem>,
    pub subtotal: i64,
    pub discount: i64,
    /// What the member pays: subtotal − discount.
    pub total: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_coupon_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon_id: Option<i64>,
    /// Until when a PENDING order holds its stock and coupon.
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub expires_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(
        serialize_with = "crate::api::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub paid_at: Option<DateTime<Utc>>,
    /// When the data platform acknowledged the order (PAID → CONFIRMED).
    #[serde(
        serialize_with = "crate::api::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub confirmed_at: Option<DateTime<Utc>>,
    /// Sum of the order's refunds (at most `total`).
    pub refunded_amount: i64,
    pub payments: Vec<PaymentAttempt>,
    pub history: Vec<StatusChange>,
    /// The order's refunds, oldest first.
    pub refunds: Vec<Refund>,
}

impl TryFrom<OrderDetails> for Order {
    type Error = AppError;

    fn try_from(d: OrderDetails) -> AppResult<Self> {
        let parse = |s: &str| {
            OrderStatus::parse(s)
                .ok_or_else(|| AppError::from(anyhow::anyhow!("unknown order status {s:?}")))
        };
        let history = d
            .history
            .into_iter()
            .map(|h| {
                Ok(StatusChange {
                    from: h.from_status.as_deref().map(parse).transpose()?,
                    to: parse(&h.to_status)?,
                    reason: h.reason,
                    at: h.created_at,
                })
            })
            .collect::<AppResult<_>>()?;
        let o = d.order;
        Ok(Order {
            status: o.status()?,
            id: o.id,
            user_id: o.user_id,
            from_cart: o.from_cart,
            items: d
                .lines
                .into_iter()
                .map(|l| OrderItem {
                    product_id: l.product_id,
                    name: l.name,
                    unit_price: l.unit_price,
                    quantity: l.quantity,
                    line_total: l.line_total,
                    refunded_quantity: l.refunded_quantity,
                })
                .collect(),
            subtotal: o.subtotal,
            discount: o.discount,
            total: o.total,
            user_coupon_id: o.user_coupon_id,
            coupon_id: o.coupon_id,
            expires_at: o.expires_at,
            created_at: o.created_at,
            updated_at: o.updated_at,
            paid_at: o.paid_at,
            confirmed_at: o.confirmed_at,
            refunded_amount: o.refunded_amount,
            payments: d
                .payments
                .into_iter()
                .map(|p| PaymentAttempt {
                    id: p.id,
                    amount: p.amount,
                    status: p.status,
                    failure_code: p.failure_code,
                    created_at: p.created_at,
                })
                .collect(),
            history,
            refunds: d.refunds.into_iter().map(Refund::from).collect(),
        })
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    pub items: Vec<Order>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderListQuery {
    /// PENDING, PAID, CONFIRMED, PARTIALLY_REFUNDED, REFUNDED, CANCELLED or EXPIRED.
    pub status: Option<OrderStatus>,
    /// Opaque cursor from the previous page's `nextCursor`.
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

fn actor(caller: Principal) -> Actor {
    match caller {
        Principal::Admin => Actor { member: None },
        Principal::Member(id) => Actor { member: Some(id) },
    }
}

/// The order as the transaction now sees it.
async fn order_reply(tx: &mut Tx, status: StatusCode, order_id: i64) -> AppResult<Reply> {
    let details = store_orders::find_order(tx, order_id, Actor { member: None }).await?;
    Reply::json(status, Order::try_from(details)?)
}

fn insufficient(order_id: i64, total: i64, balance: i64) -> AppResult<Reply> {
    Reply::error(&AppError::InsufficientBalance {
        details: json!({ "orderId": order_id, "total": total, "balance": balance }),
    })
}

fn not_payable(order_id: i64, status: OrderStatus) -> AppError {
    AppError::conflict(
        "ORDER_NOT_PAYABLE",
        format!("order {order_id} is {} and cannot be paid", status.as_str()),
        json!({ "orderId": order_id, "status": status }),
    )
}

/// Place an order: reserve stock, snapshot prices, take the coupon, and pay unless `pay: false`.
/// Supports `Idempotency-Key`.
#[utoipa::path(post, path = "/orders", tag = "orders", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header)),
    request_body = PlaceOrderRequest,
    responses(
        (status = 201, description = "PENDING (pay: false) or PAID", body = Order),
        (status = 400, description = "VALIDATION_ERROR or COUPON_INVALID", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 402, description = "INSUFFICIENT_BALANCE: the order exists (details.orderId), PENDING, with a FAILED payment", body = ErrorBody),
        (status = 404, description = "PRODUCT_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "PRODUCT_NOT_ON_SALE, PRODUCT_OUT_OF_STOCK (details.products), CART_EMPTY, IDEMPOTENCY_IN_PROGRESS", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody)))]
async fn place_order(
    State(state): State<AppState>,
    caller: Principal,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<PlaceOrderRequest>,
) -> AppResult<Response> {
    let Principal::Member(user_id) = caller else {
        return Err(AppError::Forbidden(
            "orders are placed by members: use a member token",
        ));
    };
    let OrderIntent {
        source,
        coupon,
        pay,
    } = OrderIntent::try_from(&body.value)?;
    let reservation_ttl = chrono::Duration::from_std(state.settings.reservation_ttl)
        .map_err(|_| anyhow::anyhow!("reservation TTL out of range"))?;
    let locks = placing_locks(&state, user_id, &source).await?;
    idempotency::run(
        &state,
        caller,
        key,
        &body.fingerprint,
        locks,
        async move |tx: &mut Tx| {
            let now = store::now();
            let cmd = PlaceOrder {
                user_id,
                source,
                coupon,
                pay,
                reservation_ttl,
                now,
            };
            let placed = store_orders::place_order(tx, cmd).await?;
            let outcome = match placed.payment {
                None => "PENDING",
                Some(Payment::Succeeded) => "PAID",
                Some(Payment::InsufficientBalance { .. }) => "INSUFFICIENT_BALANCE",
            };
            metrics::counter!("orders_placed_total", "outcome" => outcome).increment(1);
            match placed.payment {
                Some(Payment::InsufficientBalance { balance, total }) => {
                    insufficient(placed.details.order.id, total, balance)
                }
                _ => Reply::json(StatusCode::CREATED, Order::try_from(placed.details)?),
            }
        },
    )
    .await
    .inspect_err(|err| {
        metrics::counter!("orders_placed_total", "outcome" => err.code()).increment(1)
    })
}

/// One order with lines, amounts, coupon, payments, status history and refunds.
#[utoipa::path(get, path = "/orders/{orderId}", tag = "orders", security(("bearer" = [])),
    params(("orderId" = i64, Path)),
    responses((status = 200, body = Order), (status = 401, body = ErrorBody), (status = 404, description = "ORDER_NOT_FOUND (also for another member's order)", body = ErrorBody)))]
async fn get_order(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath(order_id): ValidPath<i64>,
) -> AppResult<axum::Json<Order>> {
    let mut conn = state.db.read().await?;
    let details = store_orders::find_order(&mut conn, order_id, actor(caller)).await?;
    Ok(axum::Json(details.try_into()?))
}

/// Pay a PENDING order at its order-time amounts. Supports `Idempotency-Key`.
#[utoipa::path(post, path = "/orders/{orderId}/pay", tag = "orders", security(("bearer" = [])),
    params(("orderId" = i64, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses(
        (status = 200, body = Order),
        (status = 401, body = ErrorBody),
        (status = 402, description = "INSUFFICIENT_BALANCE (a FAILED payment is recorded; the order stays PENDING)", body = ErrorBody),
        (status = 404, description = "ORDER_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ORDER_NOT_PAYABLE (not PENDING, or its reservation expired)", body = ErrorBody)))]
async fn pay_order(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath(order_id): ValidPath<i64>,
    IdempotencyKey(key): IdempotencyKey,
    BodylessFingerprint(fp): BodylessFingerprint,
) -> AppResult<Response> {
    let locks = store_orders::paying_locks(&state.db, order_id).await?;
    idempotency::run(&state, caller, key, &fp, locks, async move |tx: &mut Tx| {
        match store_orders::pay_order(tx, order_id, actor(caller), store::now()).await? {
            PayOutcome::Paid(Payment::Succeeded) => order_reply(tx, StatusCode::OK, order_id).await,
            PayOutcome::Paid(Payment::InsufficientBalance { balance, total }) => {
                insufficient(order_id, total, balance)
            }
            // The expiry is a real change: commit it, then answer 409.
            PayOutcome::ExpiredNow => Reply::error(&not_payable(order_id, OrderStatus::Expired)),
            PayOutcome::NotPayable(status) => Err(not_payable(order_id, status)),
        }
    })
    .await
}

/// Cancel a PENDING order: stock and coupon are given back at once, and an `ORDER_CANCELLED`
/// event is written.
#[utoipa::path(post, path = "/orders/{orderId}/cancel", tag = "orders", security(("bearer" = [])),
    params(("orderId" = i64, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Order), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "ORDER_NOT_CANCELLABLE (not PENDING)", body = ErrorBody)))]
async fn cancel_order(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath(order_id): ValidPath<i64>,
    IdempotencyKey(key): IdempotencyKey,
    BodylessFingerprint(fp): BodylessFingerprint,
) -> AppResult<Response> {
    let locks = store_orders::closing_locks(&state.db, order_id).await?;
    idempotency::run(&state, caller, key, &fp, locks, async move |tx: &mut Tx| {
        match store_orders::cancel_order(tx, order_id, actor(caller), store::now()).await? {
            Ok(()) => order_reply(tx, StatusCode::OK, order_id).await,
            Err(status) => Err(AppError::conflict(
                "ORDER_NOT_CANCELLABLE",
                format!(
                    "order {order_id} is {} and cannot be cancelled",
                    status.as_str()
                ),
                json!({ "orderId": order_id, "status": status }),
            )),
        }
    })
    .await
}

/// A member's orders, newest first.
#[utoipa::path(get, path = "/users/{userId}/orders", tag = "orders", security(("bearer" = [])),
    params(("userId" = i64, Path), OrderListQuery),
    responses((status = 200, body = OrderPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_orders(
    State(state): State<AppState>,
    caller: Principal,
    ValidPath(user_id): ValidPath<i64>,
    ValidQuery(query): ValidQuery<OrderListQuery>,
) -> AppResult<axum::Json<OrderPage>> {
    caller.authorize_user(user_id)?;
    let page = Page::try_from(&PageQuery {
        cursor: query.cursor.clone(),
        limit: query.limit,
    })?;
    let mut conn = state.db.read().await?;
    store::users::find_user(&mut conn, user_id)
        .await?
        .ok_or_else(|| AppError::user_not_found(user_id))?;
    let rows = store_orders::list_orders(
        &mut conn,
        user_id,
        query.status,
        page.after,
        page.fetch_limit(),
    )
    .await?;
    let (rows, next_cursor) = page.finish(rows, |d| d.order.id);
    let items = rows
        .into_iter()
        .map(Order::try_from)
        .collect::<AppResult<_>>()?;
    Ok(axum::Json(OrderPage { items, next_cursor }))
}

/// The rows placing an order locks: its products and the member's balance row. For a cart
/// order the cart is read first; if it changes meanwhile the order is still correct (the
/// declaration only orders the batch's locks).
async fn placing_locks(state: &AppState, user_id: i64, source: &OrderSource) -> AppResult<Locks> {
    let products = match source {
        OrderSource::Items(lines) => lines.lines().iter().map(|&(p, _)| p).collect(),
        OrderSource::Cart { .. } => {
            let mut conn = state.db.read().await?;
            store::cart::product_ids(&mut conn, user_id).await?
        }
    };
    Ok(Locks {
        products,
        users: vec![user_id],
        ..Locks::none()
    })
}

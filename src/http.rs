//! The HTTP surface: the API routes and their OpenAPI document, the middleware stack (request
//! ids, tracing, timeout, metrics, panic and error bodies), `/metrics`, Swagger UI and the
//! console. `app.rs` assembles it with the state and runs it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::api;
use crate::error::AppError;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shopd",
        description = "Commerce order and payment service: prepaid balance, products, coupons, orders.",
        license(name = "MIT")
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "members", description = "Sign-up and members"),
        (name = "balance", description = "Prepaid balance and its ledger"),
        (name = "products", description = "Catalogue and stock"),
        (name = "coupons", description = "Coupon campaigns and first-come-first-served issuance"),
        (name = "cart", description = "The member's cart"),
        (name = "orders", description = "Orders and payment from the balance"),
        (name = "refunds", description = "Refunds of paid orders to the member's balance (SPEC §14)"),
        (name = "outbox", description = "Delivery of order events to the data platform"),
        (name = "ranking", description = "Best-sellers from precomputed daily aggregates"),
        (name = "operations", description = "Health and readiness"),
        (name = "back office", description = "Admin lists, search, campaign management and token reissue (SPEC §15)"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API routes and their OpenAPI document.
pub fn api_router() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api::health::router())
        .merge(api::users::router())
        .merge(api::balance::router())
        .merge(api::products::router())
        .merge(api::coupons::router())
        .merge(api::cart::router())
        .merge(api::orders::router())
        .merge(api::outbox::router())
        .merge(api::ranking::router())
        .merge(api::admin::router())
        .merge(api::refunds::router())
        .merge(api::stats::router())
        .split_for_parts();
    let mut doc = doc;
    utoipa::Modify::modify(&api::openapi::ApiConventions, &mut doc);
    (router, doc)
}

/// The OpenAPI document served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().1
}

/// The complete HTTP application for `state`.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = api_router();
    let settings = state.settings.clone();
    let openapi = api::openapi::for_settings(openapi, &settings);
    let app = api.route("/metrics", axum::routing::get(render_metrics))
        .merge(
            SwaggerUi::new("/docs")
                .url("/openapi.json", openapi)
                // Offline: never send the document to validator.swagger.io.
                .config(utoipa_swagger_ui::Config::default().validator_url("none")),
        )
        .merge(crate::console::router())
        .fallback(|| async { AppError::RouteNotFound })
        .layer(middleware::from_fn_with_state(settings.request_timeout, enforce_timeout))
        .layer(middleware::from_fn(track_metrics))
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
                }))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CatchPanicLayer::custom(|_panic| {
                    AppError::Internal(anyhow::anyhow!("handler panicked")).into_response()
                })),
        )
        .with_state(state);
    // Outside the routes, so it sees the `Allow` header axum adds to a 405.
    Router::new()
        .fallback_service(app)
        .layer(middleware::from_fn(crate::error::json_error_bodies))
}

/// Answer `503 REQUEST_TIMEOUT` when a request outlives the configured timeout; dropping the
/// handler rolls back its open transaction.
async fn enforce_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => AppError::Timeout.into_response(),
    }
}

async fn track_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    response
}

/// The process-wide Prometheus recorder (installed once, shared by every app in the process).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let batch_sizes = [
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
        ];
        let builder = PrometheusBuilder::new()
            .set_buckets(&buckets)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("shopd_commit_batch_size".into()),
                    &batch_sizes,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; metrics then go there.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

async fn render_metrics() -> impl IntoResponse {
    let handle = prometheus();
    handle.run_upkeep();
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        handle.render(),
    )
}

//! Best-sellers: read from the in-memory snapshot; refreshed by the job or on demand.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Admin;
use crate::domain::product::ProductStatus;
use crate::error::{AppError, AppResult, ErrorBody};
use crate::extract::ValidQuery;
use crate::ranking::{self, MAX_DAYS, MAX_LIMIT};
use crate::state::AppState;
use crate::store::ranking::{AggregateOptions, JobRun};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(popular))
        .routes(routes!(refresh))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PopularQuery {
    /// Over the last 1–30 days, today included (default 3).
    #[param(minimum = 1, maximum = 30)]
    pub days: Option<i64>,
    /// 1–100 entries (default 5).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RankedProduct {
    pub rank: i64,
    pub product_id: i64,
    pub name: String,
    pub price: i64,
    pub status: ProductStatus,
    pub sold_quantity: i64,
    /// Sum of line totals (before coupon discounts).
    pub revenue: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Popular {
    /// When the aggregates behind this answer were computed.
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub as_of: DateTime<Utc>,
    pub days: i64,
    pub items: Vec<RankedProduct>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RefreshQuery {
    /// Rebuild the last 31 days of aggregates from the orders, not only add the payments not counted yet.
    pub full: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshResult {
    /// Whether the job ran (an on-demand refresh waits for a run in progress elsewhere).
    pub ran: bool,
    #[serde(serialize_with = "crate::api::rfc3339")]
    pub as_of: DateTime<Utc>,
}

/// Best-selling products by quantity sold in PAID orders, ties by revenue then product id.
#[utoipa::path(get, path = "/products/popular", tag = "ranking", params(PopularQuery),
    responses((status = 200, body = Popular), (status = 400, body = ErrorBody)))]
async fn popular(
    State(state): State<AppState>,
    ValidQuery(query): ValidQuery<PopularQuery>,
) -> AppResult<axum::Json<Popular>> {
    let days = query.days.unwrap_or(3);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(AppError::validation(
            "days",
            format!("must be between 1 and {MAX_DAYS}"),
        ));
    }
    let limit = query.limit.unwrap_or(5);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::validation(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    // Loaded at start-up (before /readyz answers 200); should that load have failed, the
    // first requests share one load.
    let snapshot = state.ranking.get_or_load(&state.db).await?;
    let items = snapshot
        .top(days, limit)
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(RankedProduct {
                rank: i as i64 + 1,
                product_id: r.product_id,
                status: ProductStatus::parse(&r.status)
                    .ok_or_else(|| anyhow::anyhow!("unknown product status"))?,
                name: r.name.clone(),
                price: r.price,
                sold_quantity: r.sold_quantity,
                revenue: r.revenue,
            })
        })
        .collect::<AppResult<_>>()?;
    Ok(axum::Json(Popular {
        as_of: snapshot.as_of,
        days,
        items,
    }))
}

/// Admin: run the aggregation job now and reload the snapshot.
#[utoipa::path(post, path = "/admin/ranking/refresh", tag = "ranking", security(("bearer" = [])), params(RefreshQuery),
    responses((status = 200, body = RefreshResult), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn refresh(
    State(state): State<AppState>,
    _admin: Admin,
    ValidQuery(query): ValidQuery<RefreshQuery>,
) -> AppResult<axum::Json<RefreshResult>> {
    let options = AggregateOptions {
        full: query.full.unwrap_or(false),
        wait_for_lock: true,
    };
    let (run, snapshot) = ranking::refresh(&state.db, &state.ranking, options).await?;
    Ok(axum::Json(RefreshResult {
        ran: matches!(run, JobRun::Ran { .. }),
        as_of: snapshot.as_of,
    }))
}

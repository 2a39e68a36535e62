//! `GET /v1/usage`: what the caller stores, holds in reservations, may store,
//! and what it costs.

use std::collections::BTreeMap;

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::{
    auth::Caller,
    error::{ApiError, CommonProblems},
};

/// The caller's usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub user_id: String,
    /// Bytes stored, as last reported by the ledger.
    pub used_bytes: u64,
    /// Bytes held for outstanding upload grants.
    pub reserved_bytes: u64,
    pub quota_bytes: u64,
    pub object_count: u64,
    /// `used_bytes` by S3 storage class.
    pub by_storage_class: BTreeMap<String, u64>,
    /// What the stored bytes cost a month at the deployment's prices, in USD.
    pub estimated_monthly_cost_usd: f64,
}

/// The caller's usage, quota and estimated storage cost.
#[utoipa::path(
    get, path = "/v1/usage", tag = "usage", operation_id = "getUsage",
    responses(
        (status = 200, description = "The caller's usage", body = Usage),
        CommonProblems,
    ),
    security(("bearer" = []))
)]
pub async fn show(State(state): State<AppState>, caller: Caller) -> Result<Json<Usage>, ApiError> {
    let account = state
        .store
        .load(&caller.user)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?
        .value;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let estimated_monthly_cost_usd = state.settings.storage_prices.monthly_total(
        account
            .by_storage_class
            .iter()
            .map(|(class, bytes)| (class.as_str(), *bytes)),
    );
    Ok(Json(Usage {
        user_id: caller.user.to_string(),
        used_bytes: account.used_bytes,
        reserved_bytes: account.reserved_bytes(now),
        quota_bytes: account.quota(state.settings.default_quota_bytes),
        object_count: account.object_count,
        by_storage_class: account.by_storage_class,
        estimated_monthly_cost_usd,
    }))
}

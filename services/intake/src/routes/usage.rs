//! `GET /v1/usage`: what the caller stores, holds in reservations, and may store.

use axum::{Json, extract::State};
use serde::Serialize;

use super::AppState;
use crate::{auth::Caller, error::ApiError};

/// The caller's usage.
#[derive(Debug, Serialize)]
pub struct Usage {
    pub user_id: String,
    /// Bytes stored, as last reported by the ledger.
    pub used_bytes: u64,
    /// Bytes held for outstanding upload grants.
    pub reserved_bytes: u64,
    pub quota_bytes: u64,
    pub object_count: u64,
}

pub async fn show(State(state): State<AppState>, caller: Caller) -> Result<Json<Usage>, ApiError> {
    let account = state
        .store
        .load(&caller.user)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?
        .value;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(Json(Usage {
        user_id: caller.user.to_string(),
        used_bytes: account.used_bytes,
        reserved_bytes: account.reserved_bytes(now),
        quota_bytes: account.quota(state.settings.default_quota_bytes),
        object_count: account.object_count,
    }))
}

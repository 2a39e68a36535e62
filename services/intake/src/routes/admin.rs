//! `PUT /v1/admin/quotas/{user_id}`: sets one user's quota. Only callers
//! whose token carries the configured admin claim may.

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection, rejection::PathRejection},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AppState, bad_json, integer};
use crate::{
    auth::Caller,
    domain::keys::UserId,
    error::{ApiError, CommonProblems, Problem},
};

/// A new quota.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SetQuota {
    /// Bytes the user may store; 0 stops new uploads.
    #[schema(minimum = 0, example = 10_737_418_240_i64)]
    #[serde(deserialize_with = "integer")]
    pub quota_bytes: i64,
}

/// A user's quota as set.
#[derive(Debug, Serialize, ToSchema)]
pub struct Quota {
    pub user_id: String,
    pub quota_bytes: u64,
    /// Bytes the user stores now; may exceed a lowered quota, which then
    /// refuses new uploads until usage drops below it.
    pub used_bytes: u64,
}

/// Sets a user's quota (administrators only).
#[utoipa::path(
    put, path = "/v1/admin/quotas/{user_id}", tag = "admin",
    params(("user_id" = String, Path, description = "The user's id (their tokens' `sub`)")),
    request_body = SetQuota,
    responses(
        (status = 200, description = "The quota is in force", body = Quota),
        (status = 400, description = "Invalid user id or quota", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token does not carry the admin claim", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is longer than any this API takes (`content-too-large`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON (`unsupported-media-type`)", body = Problem, content_type = "application/problem+json"),
        CommonProblems,
    ),
    security(("bearer" = []))
)]
pub async fn set_quota(
    State(state): State<AppState>,
    caller: Caller,
    user: Result<Path<String>, PathRejection>,
    body: Result<Json<SetQuota>, JsonRejection>,
) -> Result<Json<Quota>, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden);
    }
    let Path(user) = user.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let user = UserId::parse(&user).map_err(|e| ApiError::BadRequest(e.0))?;
    let quota = u64::try_from(body.map_err(bad_json)?.0.quota_bytes)
        .map_err(|_| ApiError::BadRequest("quota_bytes must not be negative".into()))?;
    let account = crate::accounts::set_quota(state.store.as_ref(), &user, quota)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    tracing::info!(admin = %caller.user, %user, quota, "quota set");
    Ok(Json(Quota {
        user_id: user.to_string(),
        quota_bytes: quota,
        used_bytes: account.used_bytes,
    }))
}

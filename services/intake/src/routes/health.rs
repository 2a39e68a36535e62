//! Liveness and readiness.

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::error::{ApiError, Problem};

/// A health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (live) or `ready`.
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(
    get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up", body = Health))
)]
pub async fn live() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The process can serve: its table and the bucket answer.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Dependencies answer", body = Health),
        (status = 503, description = "A dependency is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<(StatusCode, Json<Health>), ApiError> {
    let (table, bucket) = tokio::join!(state.store.ping(), state.objects.ping());
    table.map_err(|e| ApiError::Unavailable(e.into()))?;
    bucket.map_err(|e| ApiError::Unavailable(e.into()))?;
    Ok((StatusCode::OK, Json(Health { status: "ready" })))
}

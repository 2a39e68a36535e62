//! Liveness and readiness.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use super::AppState;
use crate::error::ApiError;

/// The process is up.
pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The process can serve: its table answers.
pub async fn ready(State(state): State<AppState>) -> Result<(StatusCode, Json<Value>), ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    Ok((StatusCode::OK, Json(json!({"status": "ready"}))))
}

//! `POST /v1/restores`: asks for an archived object to be brought back for a
//! number of days. Intake checks the object and publishes
//! `RestoreRequested.v1`; the lifecycle service starts the restore.

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use stowage_events::{EventMeta, RestoreRequestedV1};
use stowage_shared::telemetry::current_trace;
use utoipa::ToSchema;

use super::{AppState, bad_json, integer};
use crate::{
    auth::Caller,
    domain::keys::{UserPath, object_key},
    error::{ApiError, CommonProblems, Problem},
    ports::Readability,
};

/// A restore request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateRestore {
    /// The archived object's path.
    #[schema(min_length = 1, example = "archive/2019/taxes.pdf")]
    pub path: String,
    /// How long the restored copy stays readable, in days: 1 to the
    /// deployment's `STOWAGE_RESTORE_MAX_DAYS` (30 unless configured, at
    /// most 365).
    #[schema(minimum = 1, maximum = 365, example = 7)]
    #[serde(deserialize_with = "integer")]
    pub days: i64,
}

/// A restore request accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct RestoreAccepted {
    pub path: String,
    pub days: u32,
    pub storage_class: String,
    /// The object's state when the request was accepted: `ARCHIVED` (the
    /// restore will start), `RESTORING` (one is under way, and keeps the days
    /// it was asked with) or `RESTORED` (a restored copy exists; the request
    /// sets how long it stays).
    pub state: &'static str,
}

/// Requests the restore of one of the caller's archived objects.
#[utoipa::path(
    post, path = "/v1/restores", tag = "objects", operation_id = "createRestore",
    request_body = CreateRestore,
    responses(
        (status = 202, description = "The restore will start", body = RestoreAccepted),
        (status = 400, description = "Invalid path or days", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such object", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The object is not archived", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is longer than any this API takes (`content-too-large`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as JSON (`unsupported-media-type`)", body = Problem, content_type = "application/problem+json"),
        CommonProblems,
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateRestore>, JsonRejection>,
) -> Result<(StatusCode, Json<RestoreAccepted>), ApiError> {
    let request = body.map_err(bad_json)?.0;
    let path = UserPath::parse(&request.path).map_err(|e| ApiError::BadRequest(e.0))?;
    let max_days = state.settings.restore_max_days;
    let days = u32::try_from(request.days)
        .ok()
        .filter(|d| (1..=max_days).contains(d))
        .ok_or_else(|| ApiError::BadRequest(format!("days must be between 1 and {max_days}")))?;
    let key = object_key(&caller.user, &path);
    let head = state
        .objects
        .head(&key)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?
        .ok_or(ApiError::NotFound)?;
    if head.readability == Readability::Online {
        return Err(ApiError::NotArchived {
            storage_class: head.object.storage_class,
        });
    }
    let event = RestoreRequestedV1 {
        meta: EventMeta::new(caller.user.as_str(), current_trace()),
        key: key.clone(),
        days,
        storage_class: head.object.storage_class.clone(),
    };
    state
        .bus
        .publish(&event)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    tracing::info!(user = %caller.user, %key, days, "restore requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(RestoreAccepted {
            path: path.as_str().to_string(),
            days,
            storage_class: head.object.storage_class,
            state: head.readability.as_str(),
        }),
    ))
}

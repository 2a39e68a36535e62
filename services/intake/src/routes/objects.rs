//! The caller's objects: `GET /v1/objects` lists them, `GET
//! /v1/objects/{path}` hands out a download URL, `DELETE /v1/objects/{path}`
//! removes one. Every key is built from the caller's id and a validated path,
//! so no spelling of a path reaches another user's objects.

use axum::{
    Json,
    extract::{Path, Query, RawQuery, State, rejection::PathRejection, rejection::QueryRejection},
    http::{Method, StatusCode},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use stowage_events::{EventMeta, ObjectAccessedV1};
use stowage_shared::telemetry::current_trace;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use crate::{
    auth::Caller,
    domain::{
        download::{attachment, safe_content_type},
        keys::{
            MAX_KEY_BYTES, PathPrefix, UserId, UserPath, listed_path, object_key, path_of,
            user_prefix,
        },
    },
    error::{ApiError, CommonProblems, Problem},
    ports::{DownloadHeaders, StoredObject},
};

/// Most objects one page lists.
pub const MAX_PAGE: usize = 1000;

/// Listing parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only paths starting with this.
    #[param(example = "photos/")]
    pub prefix: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Objects per page, 1 to 1000 (default 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// One object as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectSummary {
    /// The object's path within the caller's folder.
    pub path: String,
    pub size: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub last_modified: OffsetDateTime,
    /// S3 storage class, e.g. `STANDARD` or `GLACIER`.
    pub storage_class: String,
    pub etag: String,
}

/// A page of the caller's objects, in path order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectList {
    pub objects: Vec<ObjectSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One object and a short-lived URL to download it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectDownload {
    pub path: String,
    pub size: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub last_modified: OffsetDateTime,
    pub storage_class: String,
    pub etag: String,
    /// The content type the download is served with.
    pub content_type: String,
    /// Presigned GET; the file downloads as an attachment.
    pub download_url: String,
    #[serde(with = "time::serde::rfc3339")]
    pub download_expires_at: OffsetDateTime,
}

fn summary(user: &UserId, object: StoredObject) -> Option<ObjectSummary> {
    Some(ObjectSummary {
        path: path_of(user, &object.key)?.to_string(),
        size: object.size,
        last_modified: object.last_modified,
        storage_class: object.storage_class,
        etag: object.etag,
    })
}

fn encode_cursor(path: &str) -> String {
    URL_SAFE_NO_PAD.encode(path)
}

/// The key under `root` a cursor resumes after: the path the bucket listed
/// last. Any path a listing can show is one: the listing stays within the
/// caller's prefix whatever it resumes after.
fn decode_cursor(root: &str, cursor: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::BadRequest("cursor is not one this API returned".into());
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let path = String::from_utf8(bytes).map_err(|_| invalid())?;
    listed_path(&path).map_err(|_| invalid())?;
    let key = format!("{root}{path}");
    if key.len() > MAX_KEY_BYTES {
        return Err(invalid());
    }
    Ok(key)
}

/// The key of a path in the request URL.
pub(super) fn key_of(
    user: &UserId,
    path: Result<Path<String>, PathRejection>,
) -> Result<(String, UserPath), ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let path = UserPath::parse(&raw).map_err(|e| ApiError::BadRequest(e.0))?;
    Ok((object_key(user, &path), path))
}

/// Lists the caller's objects.
#[utoipa::path(
    get, path = "/v1/objects", tag = "objects", operation_id = "listObjects",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of objects", body = ObjectList),
        (status = 400, description = "Bad prefix, cursor or limit", body = Problem, content_type = "application/problem+json"),
        CommonProblems,
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ObjectList>, ApiError> {
    // The query parser reads an escape that spells no UTF-8 as U+FFFD, which
    // would list another prefix or refuse a cursor with the wrong reason.
    if let Some(raw) = raw {
        percent_encoding::percent_decode_str(&raw)
            .decode_utf8()
            .map_err(|_| {
                ApiError::BadRequest("the query string's escapes do not spell UTF-8 text".into())
            })?;
    }
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = match query.limit {
        None => MAX_PAGE,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("limit must be between 1 and {MAX_PAGE}"))
            })?,
    };
    let prefix = PathPrefix::parse(query.prefix.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::BadRequest(e.0))?;
    let root = user_prefix(&caller.user);
    // Without a cursor a page starts after the root itself: the caller's
    // folder marker (`users/<id>/`, put there another way) has no path to
    // show, and its empty cursor would start the listing over.
    let start_after = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(cursor) => decode_cursor(&root, cursor)?,
        None => root.clone(),
    };
    let page = state
        .objects
        .list(
            &format!("{root}{}", prefix.as_str()),
            Some(&start_after),
            limit,
        )
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    let objects: Vec<ObjectSummary> = page
        .objects
        .into_iter()
        .filter_map(|o| summary(&caller.user, o))
        .collect();
    let next_cursor = page
        .truncated
        .then(|| objects.last().map(|o| encode_cursor(&o.path)))
        .flatten();
    Ok(Json(ObjectList {
        objects,
        next_cursor,
    }))
}

/// One of the caller's objects, with a download URL. An archived object must
/// be restored first (`POST /v1/restores`).
#[utoipa::path(
    get, path = "/v1/objects/{path}", tag = "objects", operation_id = "getObject",
    params(("path" = String, Path, min_length = 1, example = "photos/cat.jpg",
            description = "The object's path; slashes need not be encoded")),
    responses(
        (status = 200, description = "The object and its download URL", body = ObjectDownload),
        (status = 400, description = "Invalid path", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such object", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The object is archived; the problem carries its restore state", body = Problem, content_type = "application/problem+json"),
        CommonProblems,
    ),
    security(("bearer" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    method: Method,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ObjectDownload>, ApiError> {
    let (key, path) = key_of(&caller.user, path)?;
    let head = state
        .objects
        .head(&key)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?
        .ok_or(ApiError::NotFound)?;
    if !head.readability.can_read() {
        return Err(ApiError::Archived {
            storage_class: head.object.storage_class,
            restore: head.readability.as_str(),
        });
    }
    let headers = DownloadHeaders {
        disposition: attachment(path.as_str()),
        content_type: safe_content_type(
            head.content_type.as_deref(),
            &state.settings.allowed_content_types,
        ),
    };
    let ttl = state.settings.download_ttl();
    // Presigning fails when no credentials can be had (its lifetime is
    // checked at startup): retrying later may succeed.
    let download_url = state
        .objects
        .download_url(&key, &headers, ttl)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    let object = head.object;
    let event = ObjectAccessedV1 {
        meta: EventMeta::new(caller.user.as_str(), current_trace()),
        key: key.clone(),
        size: object.size,
        storage_class: object.storage_class.clone(),
        etag: Some(object.etag.clone()),
    };
    // A HEAD (the same answer without its body) hands out no URL, so it
    // reads nothing. The download works without the event; lifecycle only
    // loses one access.
    if method != Method::HEAD
        && let Err(error) = state.bus.publish(&event).await
    {
        tracing::warn!(error = format!("{error:#}"), %key, "ObjectAccessed not published");
    }
    Ok(Json(ObjectDownload {
        path: path.as_str().to_string(),
        size: object.size,
        last_modified: object.last_modified,
        storage_class: object.storage_class,
        etag: object.etag,
        content_type: headers.content_type,
        download_url,
        download_expires_at: OffsetDateTime::now_utc() + ttl,
    }))
}

/// Deletes one of the caller's objects. Deleting a missing object succeeds.
#[utoipa::path(
    delete, path = "/v1/objects/{path}", tag = "objects", operation_id = "deleteObject",
    params(("path" = String, Path, min_length = 1, example = "photos/old.jpg",
            description = "The object's path; slashes need not be encoded")),
    responses(
        (status = 204, description = "The object is gone"),
        (status = 400, description = "Invalid path", body = Problem, content_type = "application/problem+json"),
        CommonProblems,
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let (key, _) = key_of(&caller.user, path)?;
    state
        .objects
        .delete(&key)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    tracing::info!(user = %caller.user, %key, "object deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let path = "photos/caf\u{e9} 1.jpg";
        let root = "users/alice/";
        assert_eq!(
            decode_cursor(root, &encode_cursor(path)).unwrap(),
            format!("{root}{path}")
        );
        // Not base64, "/" then U+FFFF, a NUL, not UTF-8.
        for bad in ["%%%", "L--_vw", "AA", "_-_-"] {
            assert!(decode_cursor(root, bad).is_err(), "{bad}");
        }
    }
}

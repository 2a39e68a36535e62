//! API errors, rendered as RFC 9457 `application/problem+json`.

use std::time::Duration;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{auth::AuthError, domain::quota::Refusal};

/// Everything an API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The caller is not authenticated (never [`AuthError::Unavailable`],
    /// which is an outage: see the `From` impl).
    #[error(transparent)]
    Unauthenticated(AuthError),
    #[error("this operation needs an administrator's token")]
    Forbidden,
    #[error("{0}")]
    BadRequest(String),
    #[error("content type {0:?} is not allowed")]
    UnsupportedContentType(String),
    /// The request's body is not sent as JSON.
    #[error("the request body must be JSON, sent with Content-Type: application/json")]
    BodyNotJson,
    /// The request's body is longer than any this API takes.
    #[error("the request body is longer than {0} bytes")]
    BodyTooLarge(usize),
    /// A grant was refused and recorded as `REJECTED` under `grant_id`.
    #[error("{}", refusal_text(.refusal))]
    Refused { grant_id: Uuid, refusal: Refusal },
    #[error("too many upload grant requests; retry after {} s", retry_after_seconds(*.0))]
    RateLimited(Duration),
    #[error("not found")]
    NotFound,
    /// The path exists, not with this method (`Allow` names those it has).
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    #[error("the object is archived in {storage_class}; request a restore first")]
    Archived {
        storage_class: String,
        /// `ARCHIVED` or `RESTORING`.
        restore: &'static str,
    },
    #[error("the object is in {storage_class}, which is not archived; it can be read as it is")]
    NotArchived { storage_class: String },
    /// A dependency failed or is overloaded; retrying later may succeed.
    #[error("service temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unavailable(cause) => {
                Self::Unavailable(anyhow::anyhow!(cause).context("cannot verify bearer tokens"))
            }
            other => Self::Unauthenticated(other),
        }
    }
}

fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

fn refusal_text(refusal: &Refusal) -> String {
    match refusal {
        Refusal::QuotaExceeded { .. } => "the upload would exceed the storage quota".into(),
        Refusal::TooManyGrants { limit, retry_after } => format!(
            "too many outstanding upload grants (at most {limit}); the next lapses in {retry_after} s"
        ),
    }
}

/// An RFC 9457 problem document. `type` is `/problems/<slug>`; some problems
/// carry extra members.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `/problems/<slug>`, e.g. `/problems/quota-exceeded`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// `quota-exceeded`, `too-many-grants`: the refused grant, recorded as
    /// `REJECTED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<Uuid>,
    /// `quota-exceeded`: the caller's usage when the grant was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<ProblemUsage>,
    /// `quota-exceeded`: the size the refused grant asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_bytes: Option<u64>,
    /// `object-archived`, `not-archived`: the object's storage class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// `object-archived`: `ARCHIVED` (no restore yet) or `RESTORING`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<&'static str>,
    /// `rate-limited`, `too-many-grants`: seconds to wait, as in the
    /// `Retry-After` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// What every authenticated call may answer besides its own responses.
#[derive(Debug, utoipa::IntoResponses)]
pub enum CommonProblems {
    /// Missing or invalid bearer token
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthenticated(Problem),
    /// A dependency is unavailable; retry after `Retry-After`
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// A user's usage as a `quota-exceeded` problem reports it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemUsage {
    pub used_bytes: u64,
    pub reserved_bytes: u64,
    pub quota_bytes: u64,
}

impl ApiError {
    fn status_and_slug(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            Self::UnsupportedContentType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-content-type",
            ),
            Self::BodyNotJson => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type"),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "content-too-large"),
            Self::Refused {
                refusal: Refusal::QuotaExceeded { .. },
                ..
            } => (StatusCode::FORBIDDEN, "quota-exceeded"),
            Self::Refused {
                refusal: Refusal::TooManyGrants { .. },
                ..
            } => (StatusCode::TOO_MANY_REQUESTS, "too-many-grants"),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not-found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"),
            Self::Archived { .. } => (StatusCode::CONFLICT, "object-archived"),
            Self::NotArchived { .. } => (StatusCode::CONFLICT, "not-archived"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn problem(&self) -> Problem {
        let (status, slug) = self.status_and_slug();
        let mut problem = Problem {
            kind: format!("/problems/{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
            grant_id: None,
            usage: None,
            requested_bytes: None,
            storage_class: None,
            restore: None,
            retry_after: None,
        };
        match self {
            Self::Refused {
                grant_id,
                refusal:
                    Refusal::QuotaExceeded {
                        used_bytes,
                        reserved_bytes,
                        quota_bytes,
                        requested,
                    },
            } => {
                problem.grant_id = Some(*grant_id);
                problem.usage = Some(ProblemUsage {
                    used_bytes: *used_bytes,
                    reserved_bytes: *reserved_bytes,
                    quota_bytes: *quota_bytes,
                });
                problem.requested_bytes = Some(*requested);
            }
            Self::Archived {
                storage_class,
                restore,
            } => {
                problem.storage_class = Some(storage_class.clone());
                problem.restore = Some(restore);
            }
            Self::Refused {
                grant_id,
                refusal: Refusal::TooManyGrants { retry_after, .. },
            } => {
                problem.grant_id = Some(*grant_id);
                problem.retry_after = Some(*retry_after);
            }
            Self::NotArchived { storage_class } => {
                problem.storage_class = Some(storage_class.clone());
            }
            Self::RateLimited(wait) => problem.retry_after = Some(retry_after_seconds(*wait)),
            _ => {}
        }
        problem
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
        match &self {
            Self::Unavailable(cause) | Self::Internal(cause) => {
                tracing::error!(
                    error = format!("{cause:#}"),
                    status = problem.status,
                    "request failed"
                );
            }
            _ => {}
        }
        let mut response = (status, Json(&problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = problem.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_round_the_wait_up() {
        let response = ApiError::RateLimited(Duration::from_millis(1500)).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn archived_objects_report_their_restore_state() {
        let problem = ApiError::Archived {
            storage_class: "GLACIER".into(),
            restore: "RESTORING",
        }
        .problem();
        assert_eq!(problem.status, 409);
        assert_eq!(problem.kind, "/problems/object-archived");
        assert_eq!(problem.restore, Some("RESTORING"));
    }

    #[test]
    fn refused_tokens_are_401_and_uncheckable_ones_503() {
        let refused = ApiError::from(AuthError::Invalid("expired".into())).into_response();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(refused.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(
            refused.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let missing = ApiError::from(AuthError::Missing).into_response();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);

        let outage = ApiError::from(AuthError::Unavailable("JWKS: 500".into())).into_response();
        assert_eq!(outage.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!outage.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(
            outage.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}

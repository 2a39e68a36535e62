//! API errors, rendered as RFC 9457 `application/problem+json`.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use crate::{auth::AuthError, domain::quota::Refusal};

/// Everything an API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The caller is not authenticated (never [`AuthError::Unavailable`],
    /// which is an outage: see the `From` impl).
    #[error(transparent)]
    Unauthenticated(AuthError),
    #[error("{0}")]
    BadRequest(String),
    #[error("content type {0:?} is not allowed")]
    UnsupportedContentType(String),
    #[error("the upload would exceed the storage quota")]
    QuotaExceeded {
        used_bytes: u64,
        reserved_bytes: u64,
        quota_bytes: u64,
        requested: u64,
    },
    #[error("too many outstanding upload grants (at most {limit})")]
    TooManyGrants { limit: usize },
    #[error("not found")]
    NotFound,
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

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::QuotaExceeded {
                used_bytes,
                reserved_bytes,
                quota_bytes,
                requested,
            } => Self::QuotaExceeded {
                used_bytes,
                reserved_bytes,
                quota_bytes,
                requested,
            },
            Refusal::TooManyGrants { limit } => Self::TooManyGrants { limit },
        }
    }
}

impl ApiError {
    fn status_and_slug(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            Self::UnsupportedContentType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-content-type",
            ),
            Self::QuotaExceeded { .. } => (StatusCode::FORBIDDEN, "quota-exceeded"),
            Self::TooManyGrants { .. } => (StatusCode::TOO_MANY_REQUESTS, "too-many-grants"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not-found"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Renders a problem document.
pub fn problem(
    status: StatusCode,
    slug: &str,
    detail: &str,
    extra: Map<String, Value>,
) -> Response {
    let mut body = json!({
        "type": format!("/problems/{slug}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Value::Object(map) = &mut body {
        map.extend(extra);
    }
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug) = self.status_and_slug();
        let mut extra = Map::new();
        match &self {
            Self::Unavailable(cause) | Self::Internal(cause) => {
                tracing::error!(
                    error = format!("{cause:#}"),
                    status = status.as_u16(),
                    "request failed"
                );
            }
            Self::QuotaExceeded {
                used_bytes,
                reserved_bytes,
                quota_bytes,
                requested,
            } => {
                extra.insert(
                    "usage".into(),
                    json!({"used_bytes": used_bytes, "reserved_bytes": reserved_bytes, "quota_bytes": quota_bytes}),
                );
                extra.insert("requested_bytes".into(), json!(requested));
            }
            _ => {}
        }
        let mut response = problem(status, slug, &self.to_string(), extra);
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

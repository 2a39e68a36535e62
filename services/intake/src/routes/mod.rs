//! HTTP handlers, the router and the OpenAPI document generated from them.
//!
//! - [`uploads`]: `POST /v1/uploads` and `GET /v1/uploads/{grant_id}`, upload grants.
//! - [`objects`]: `GET /v1/objects`, `GET` and `DELETE /v1/objects/{path}`.
//! - [`restores`]: `POST /v1/restores`.
//! - [`usage`]: `GET /v1/usage`.
//! - [`admin`]: `PUT /v1/admin/quotas/{user_id}`.
//! - [`health`]: `GET /healthz`, `GET /readyz`.

pub mod admin;
pub mod health;
pub mod objects;
pub mod restores;
pub mod uploads;
pub mod usage;

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequestParts, rejection::JsonRejection},
    http::{StatusCode, header, request::Parts},
    routing::{get, post, put},
};
use stowage_shared::publisher::EventBus;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::{
    adapters::post_signer::PostSigner,
    auth::{AuthError, Authenticator, Caller},
    error::ApiError,
    ports::{AccountStore, ObjectStore},
    rate::GrantLimiter,
    settings::Settings,
};

/// What every handler can reach: one shared [`Services`], so that the
/// state axum hands each request is a single reference count.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Services>);

impl From<Services> for AppState {
    fn from(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The service's parts, behind [`AppState`].
#[derive(Debug)]
pub struct Services {
    pub settings: Settings,
    pub store: Arc<dyn AccountStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub signer: PostSigner,
    pub bus: EventBus,
    pub auth: Authenticator,
    pub limiter: GrantLimiter,
    /// `stowage.intake.grants`: grant requests by outcome (`issued`,
    /// `quota_exceeded`, `too_many_grants`, `rate_limited`, `invalid`,
    /// `failed`).
    pub grant_outcomes: opentelemetry::metrics::Counter<u64>,
}

impl std::fmt::Debug for dyn AccountStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountStore")
    }
}

impl std::fmt::Debug for dyn ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectStore")
    }
}

/// The API's OpenAPI 3.1 document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Stowage intake",
        description = "Per-user file storage on S3: upload grants against a quota, listing, downloads, restores and usage. Errors are RFC 9457 problem documents."
    ),
    paths(
        uploads::create,
        uploads::show,
        objects::list,
        objects::show,
        objects::delete,
        restores::create,
        usage::show,
        admin::set_quota,
        health::live,
        health::ready,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "uploads", description = "Upload grants"),
        (name = "objects", description = "The caller's files"),
        (name = "usage", description = "Usage, quota and cost"),
        (name = "admin", description = "Administration (tokens with the admin claim)"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    let document = Bytes::from(ApiDoc::openapi().to_json().unwrap_or_default());
    Router::new()
        .route("/v1/uploads", post(uploads::create))
        .route("/v1/uploads/{grant_id}", get(uploads::show))
        .route("/v1/objects", get(objects::list))
        .route(
            "/v1/objects/{*path}",
            get(objects::show).delete(objects::delete),
        )
        .route("/v1/restores", post(restores::create))
        .route("/v1/usage", get(usage::show))
        .route("/v1/admin/quotas/{user_id}", put(admin::set_quota))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route(
            "/openapi.json",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    document.clone(),
                )
            }),
        )
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = match parts.headers.get(header::AUTHORIZATION) {
            Some(value) => Some(value.to_str().map_err(|_| {
                AuthError::Invalid("the Authorization header is not plain text".into())
            })?),
            None => None,
        };
        Ok(state.auth.verify_header(header).await?)
    }
}

/// Pauses between attempts of a version-conditioned account write that lost
/// a race to a concurrent writer: short, jittered, capped at 100 ms.
pub(crate) fn conflict_pauses() -> impl Iterator<Item = std::time::Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(2))
        .with_max_delay(std::time::Duration::from_millis(100))
        .with_jitter()
        .without_max_times()
        .build()
}

/// The longest request body intake reads. The longest body of the
/// documented fields is an upload's: a path of at most 880 bytes in NFC
/// form, sent decomposed (about 7.9 KB with each character spelt as a
/// `\uXXXX` escape), and an allowed content type.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Turns axum's JSON body rejections into problem documents: `415` for a
/// body not sent as JSON, `413` for one longer than [`MAX_BODY_BYTES`], `400`
/// for the rest.
pub fn bad_json(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::BodyNotJson,
        JsonRejection::BytesRejection(bytes) if bytes.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::BodyTooLarge(MAX_BODY_BYTES)
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// Deserializes a JSON integer, also when written with a zero fraction
/// (`7.0`): JSON Schema's `integer`, which the OpenAPI document promises,
/// admits both.
pub(crate) fn integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::{Deserialize, de::Error};
    let number = serde_json::Number::deserialize(deserializer)?;
    number
        .as_i64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && (-(2f64.powi(63))..2f64.powi(63)).contains(f))
                .map(|f| f as i64)
        })
        .ok_or_else(|| D::Error::custom(format!("expected an integer, found {number}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_may_carry_a_zero_fraction_and_nothing_else() {
        #[derive(Debug, serde::Deserialize)]
        struct Days {
            #[serde(deserialize_with = "integer")]
            days: i64,
        }
        let parse = |json: &str| serde_json::from_str::<Days>(json).map(|d| d.days);
        assert_eq!(parse(r#"{"days": 7}"#).unwrap(), 7);
        assert_eq!(parse(r#"{"days": 7.0}"#).unwrap(), 7);
        assert_eq!(parse(r#"{"days": -3.0}"#).unwrap(), -3);
        assert_eq!(parse(r#"{"days": 1e3}"#).unwrap(), 1000);
        for bad in [
            r#"{"days": 7.5}"#,
            r#"{"days": "7"}"#,
            r#"{"days": null}"#,
            r#"{"days": 1e300}"#,
            r#"{"days": 18446744073709551615}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_names_every_operation() {
        let document: serde_json::Value =
            serde_json::from_str(&ApiDoc::openapi().to_json().unwrap()).unwrap();
        if std::env::var_os("PRINT_OPENAPI").is_some() {
            println!("{}", serde_json::to_string_pretty(&document).unwrap());
        }
        assert_eq!(document["openapi"], "3.1.0");
        let operations: Vec<String> = document["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| format!("{method} {path}"))
            })
            .collect();
        for expected in [
            "post /v1/uploads",
            "get /v1/uploads/{grant_id}",
            "get /v1/objects",
            "get /v1/objects/{path}",
            "delete /v1/objects/{path}",
            "post /v1/restores",
            "get /v1/usage",
            "put /v1/admin/quotas/{user_id}",
            "get /healthz",
            "get /readyz",
        ] {
            assert!(
                operations.iter().any(|o| o == expected),
                "{expected} missing: {operations:?}"
            );
        }
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let mut ids: Vec<&str> = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .map(|operation| operation["operationId"].as_str().unwrap())
            .collect();
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count, "operation ids must be unique: {ids:?}");
    }
}

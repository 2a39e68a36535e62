//! HTTP handlers and the router.
//!
//! - [`uploads`]: `POST /v1/uploads` and `GET /v1/uploads/{grant_id}`, upload grants.
//! - [`usage`]: `GET /v1/usage`.
//! - [`health`]: `GET /healthz`, `GET /readyz`.

pub mod health;
pub mod uploads;
pub mod usage;

use std::sync::Arc;

use axum::{
    Router,
    extract::{FromRequestParts, rejection::JsonRejection},
    http::{header, request::Parts},
    routing::{get, post},
};
use stowage_shared::publisher::EventBus;

use crate::{
    adapters::post_signer::PostSigner,
    auth::{Authenticator, Caller},
    error::ApiError,
    ports::AccountStore,
    settings::Settings,
};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn AccountStore>,
    pub signer: PostSigner,
    pub bus: EventBus,
    pub auth: Arc<Authenticator>,
}

impl std::fmt::Debug for dyn AccountStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountStore")
    }
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/uploads", post(uploads::create))
        .route("/v1/uploads/{grant_id}", get(uploads::show))
        .route("/v1/usage", get(usage::show))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Ok(state.auth.verify_header(header).await?)
    }
}

/// Turns axum's JSON body rejections into problem documents.
pub fn bad_json(rejection: JsonRejection) -> ApiError {
    ApiError::BadRequest(rejection.body_text())
}

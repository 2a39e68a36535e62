//! `POST /v1/uploads`: reserve quota for one upload and hand out a signed S3
//! POST policy that allows exactly that upload.

use axum::{
    Json,
    extract::{
        Path, State,
        rejection::{JsonRejection, PathRejection},
    },
    http::StatusCode,
};
use opentelemetry::KeyValue;
use serde::{Deserialize, Serialize, Serializer};
use stowage_events::{EventMeta, UploadGrantedV1};
use stowage_shared::telemetry::current_trace;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AppState, bad_json, integer};
use crate::{
    accounts::{self, GrantTerms},
    auth::Caller,
    domain::{
        keys::{UserId, UserPath, object_key},
        policy::UploadPolicy,
        quota::Refusal,
    },
    error::{ApiError, CommonProblems, Problem},
    ports::{GrantRecord, GrantState},
};

/// An upload request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUpload {
    /// Where the file goes, relative to the caller's own folder: segments
    /// joined by `/`, none empty, `.` or `..`, without backslashes, control
    /// characters or `${` (S3 reads it as a variable in a form upload), at
    /// most 880 bytes of UTF-8 once NFC-normalised.
    #[schema(min_length = 1, example = "photos/cat.jpg")]
    pub path: String,
    /// The file's size in bytes, at most the deployment's largest upload
    /// (5 GiB, S3's limit, unless configured lower); the grant accepts files
    /// up to this size.
    #[schema(minimum = 1, maximum = 5_368_709_120_i64, example = 12345)]
    #[serde(deserialize_with = "integer")]
    pub size: i64,
    /// The file's content type; one of the deployment's allowed types.
    #[schema(example = "image/jpeg")]
    pub content_type: String,
}

/// A signed grant for one browser upload: POST `fields` and then the file as
/// multipart/form-data to `url`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadGrant {
    pub grant_id: Uuid,
    pub key: String,
    /// Where the browser POSTs the form.
    pub url: String,
    /// Form fields to send, in this order, before the file field.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    #[serde(serialize_with = "in_order")]
    pub fields: Vec<(String, String)>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub max_size: u64,
}

/// Form fields as one JSON object, in the order the form sends them.
fn in_order<S: Serializer>(fields: &[(String, String)], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_map(fields.iter().map(|(name, value)| (name, value)))
}

/// Reserves quota for one upload and signs an S3 POST policy for it.
#[utoipa::path(
    post, path = "/v1/uploads", tag = "uploads", operation_id = "createUpload",
    request_body = CreateUpload,
    responses(
        (status = 201, description = "The grant: POST `fields` and the file to `url`", body = UploadGrant,
            links(("getUpload" = (
                operation_id = "getUpload",
                parameters(("grant_id" = "$response.body#/grant_id")),
                description = "Where the grant stands",
            )))),
        (status = 400, description = "Invalid path, size or body", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Over quota (`quota-exceeded`, with the caller's usage)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is longer than any this API takes (`content-too-large`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content type not allowed (`unsupported-content-type`), or the body is not sent as JSON (`unsupported-media-type`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests (`rate-limited`) or outstanding grants (`too-many-grants`)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait: until the rate allows another grant (`rate-limited`), or until enough outstanding grants lapse (`too-many-grants`)"))),
        CommonProblems,
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateUpload>, JsonRejection>,
) -> Result<(StatusCode, Json<UploadGrant>), ApiError> {
    let result = issue(&state, &caller, body).await;
    let outcome = match &result {
        Ok(_) => "issued",
        Err(ApiError::Refused {
            refusal: Refusal::QuotaExceeded { .. },
            ..
        }) => "quota_exceeded",
        Err(ApiError::Refused {
            refusal: Refusal::TooManyGrants { .. },
            ..
        }) => "too_many_grants",
        Err(ApiError::RateLimited(_)) => "rate_limited",
        Err(
            ApiError::BadRequest(_)
            | ApiError::UnsupportedContentType(_)
            | ApiError::BodyNotJson
            | ApiError::BodyTooLarge(_),
        ) => "invalid",
        Err(_) => "failed",
    };
    state
        .grant_outcomes
        .add(1, &[KeyValue::new("outcome", outcome)]);
    result
}

async fn issue(
    state: &AppState,
    caller: &Caller,
    body: Result<Json<CreateUpload>, JsonRejection>,
) -> Result<(StatusCode, Json<UploadGrant>), ApiError> {
    state
        .limiter
        .check(&caller.user)
        .map_err(ApiError::RateLimited)?;
    let request = body.map_err(bad_json)?.0;
    let settings = &state.settings;
    let path = UserPath::parse_upload(&request.path).map_err(|e| ApiError::BadRequest(e.0))?;
    let max_upload = settings.max_upload_bytes;
    let size = match u64::try_from(request.size) {
        Ok(size) if (1..=max_upload).contains(&size) => size,
        _ => {
            return Err(ApiError::BadRequest(format!(
                "size must be between 1 and {max_upload} bytes"
            )));
        }
    };
    let content_type = request.content_type.trim().to_ascii_lowercase();
    if !settings
        .allowed_content_types
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(&content_type))
    {
        return Err(ApiError::UnsupportedContentType(request.content_type));
    }

    // Credentials first: a grant that could not be signed must hold no
    // quota. Retrying later may succeed.
    let credentials = state
        .signer
        .credentials()
        .await
        .map_err(ApiError::Unavailable)?;

    let key = object_key(&caller.user, &path);
    let now = OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let expires_at = now + settings.grant_ttl();
    let grant_id = Uuid::new_v4();
    let grant = GrantRecord {
        grant_id: grant_id.to_string(),
        user_id: caller.user.to_string(),
        key: key.clone(),
        max_size: size,
        content_type: content_type.clone(),
        state: GrantState::Initiated,
        size: None,
        created_at: now,
        expires_at,
    };
    let terms = GrantTerms {
        default_quota: settings.default_quota_bytes,
        max_outstanding: settings.max_outstanding_grants,
        lapses_at: (expires_at + settings.settle_window()).unix_timestamp(),
    };
    let reserved = accounts::reserve(state.store.as_ref(), &caller.user, &grant, &terms)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    if let Err(refusal) = reserved {
        let rejected = GrantRecord {
            state: GrantState::Rejected,
            ..grant
        };
        if let Err(error) = state.store.record_grant(&rejected).await {
            tracing::warn!(error = format!("{error:#}"), grant_id = %rejected.grant_id, "could not record a refused grant");
        }
        tracing::info!(user = %caller.user, grant_id = %rejected.grant_id, ?refusal, "grant refused");
        return Err(ApiError::Refused { grant_id, refusal });
    }

    let policy = UploadPolicy {
        bucket: settings.bucket.clone(),
        key: key.clone(),
        content_type: content_type.clone(),
        max_size: size,
        expires_at,
    };
    let signed = state.signer.sign_with(&credentials, &policy, now);
    publish_granted(state, &caller.user, grant_id, &policy).await;
    tracing::info!(user = %caller.user, %grant_id, size, "grant issued");

    Ok((
        StatusCode::CREATED,
        Json(UploadGrant {
            grant_id,
            key,
            url: signed.url,
            fields: signed.fields,
            expires_at,
            max_size: size,
        }),
    ))
}

async fn publish_granted(state: &AppState, user: &UserId, grant_id: Uuid, policy: &UploadPolicy) {
    let event = UploadGrantedV1 {
        meta: EventMeta::new(user.as_str(), current_trace()),
        grant_id,
        key: policy.key.clone(),
        max_size: policy.max_size,
        content_type: policy.content_type.clone(),
        expires_at: policy.expires_at,
    };
    // The grant is valid without the event; the ledger only uses it to
    // report uploads that arrive without one.
    if let Err(error) = state.bus.publish(&event).await {
        tracing::warn!(error = format!("{error:#}"), %grant_id, expires_at = %policy.expires_at.format(&Rfc3339).unwrap_or_default(), "UploadGranted not published");
    }
}

/// Where an upload grant stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantStatus {
    pub grant_id: Uuid,
    pub key: String,
    /// `INITIATED`, `COMPLETE`, `REJECTED` or `EXPIRED` (initiated, never
    /// completed, and past its expiry).
    #[schema(value_type = String, pattern = "^(INITIATED|COMPLETE|REJECTED|EXPIRED)$")]
    pub state: &'static str,
    /// Bytes S3 stored under the grant, once complete.
    pub size: Option<u64>,
    pub max_size: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// One of the caller's upload grants; any other id, including another
/// user's grant, is not found.
#[utoipa::path(
    get, path = "/v1/uploads/{grant_id}", tag = "uploads", operation_id = "getUpload",
    params(("grant_id" = Uuid, Path, description = "The grant's id")),
    responses(
        (status = 200, description = "Where the grant stands", body = GrantStatus),
        (status = 404, description = "No such grant of the caller's", body = Problem, content_type = "application/problem+json"),
        CommonProblems,
    ),
    security(("bearer" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    grant_id: Result<Path<String>, PathRejection>,
) -> Result<Json<GrantStatus>, ApiError> {
    // An id that is not even text (bad percent-encoding) names no grant either.
    let grant_id = grant_id
        .ok()
        .and_then(|Path(id)| Uuid::parse_str(&id).ok())
        .ok_or(ApiError::NotFound)?;
    let grant = state
        .store
        .grant(&grant_id.to_string())
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?
        .filter(|g| g.user_id == caller.user.as_str())
        .ok_or(ApiError::NotFound)?;
    let expired =
        grant.state == GrantState::Initiated && OffsetDateTime::now_utc() > grant.expires_at;
    Ok(Json(GrantStatus {
        grant_id,
        key: grant.key,
        state: if expired {
            "EXPIRED"
        } else {
            grant.state.as_str()
        },
        size: grant.size,
        max_size: grant.max_size,
        expires_at: grant.expires_at,
    }))
}

#[cfg(test)]
mod tests {
    use std::{
        num::NonZeroU32,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use async_trait::async_trait;
    use aws_credential_types::provider::{
        ProvideCredentials, SharedCredentialsProvider, error::CredentialsError, future,
    };
    use clap::Parser;
    use stowage_shared::{aws, publisher::EventBus};

    use super::*;
    use crate::{
        adapters::{post_signer::PostSigner, s3::S3Objects},
        domain::quota::Account,
        ports::{AccountStore, StoreError, Versioned},
        rate::GrantLimiter,
        routes::Services,
        settings::Settings,
        startup::authenticator,
    };

    /// An empty store that counts its writes.
    #[derive(Default)]
    struct CountingStore {
        writes: AtomicUsize,
    }

    #[async_trait]
    impl AccountStore for CountingStore {
        async fn load(&self, _: &UserId) -> Result<Versioned<Account>, StoreError> {
            Ok(Versioned {
                value: Account::default(),
                version: None,
            })
        }
        async fn save(
            &self,
            _: &UserId,
            _: &Versioned<Account>,
            _: Account,
            _: Option<&GrantRecord>,
        ) -> Result<(), StoreError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn record_grant(&self, _: &GrantRecord) -> Result<(), StoreError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn grant(&self, _: &str) -> Result<Option<GrantRecord>, StoreError> {
            Ok(None)
        }
        async fn complete_grant(&self, _: &UserId, _: &str, _: u64) -> Result<(), StoreError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    /// Credentials that cannot be had, as when the instance role's
    /// endpoint does not answer.
    #[derive(Debug)]
    struct NoCredentials;

    impl ProvideCredentials for NoCredentials {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
                "no credentials here",
            )))
        }
    }

    #[tokio::test]
    async fn a_grant_that_cannot_be_signed_holds_no_quota() {
        let settings = Settings::try_parse_from([
            "stowage-intake",
            "--bucket=b",
            "--table=t",
            "--queue-url=http://127.0.0.1:1/q",
            "--jwt-secret=a-secret-of-enough-length",
        ])
        .unwrap();
        let sdk = aws::load().await;
        let store = Arc::new(CountingStore::default());
        let state = AppState::from(Services {
            auth: authenticator(&settings).unwrap(),
            store: Arc::clone(&store) as Arc<dyn AccountStore>,
            objects: Arc::new(S3Objects::new(aws::s3(&sdk, true), "b")),
            signer: PostSigner::new(
                SharedCredentialsProvider::new(NoCredentials),
                "us-east-1",
                "http://127.0.0.1:1/b",
            ),
            bus: EventBus::new(aws::eventbridge(&sdk), "stowage"),
            limiter: GrantLimiter::new(NonZeroU32::MAX, NonZeroU32::MAX),
            grant_outcomes: opentelemetry::global::meter("stowage")
                .u64_counter("stowage.intake.grants")
                .build(),
            settings,
        });
        let caller = Caller {
            user: UserId::parse("alice").unwrap(),
            admin: false,
        };
        let request: CreateUpload = serde_json::from_value(serde_json::json!({
            "path": "a.txt", "size": 10, "content_type": "text/plain"
        }))
        .unwrap();

        let answer = issue(&state, &caller, Ok(Json(request))).await;
        assert!(
            matches!(answer, Err(ApiError::Unavailable(_))),
            "{answer:?}"
        );
        assert_eq!(store.writes.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_grant_answers_its_form_fields_in_form_order() {
        let grant = UploadGrant {
            grant_id: Uuid::nil(),
            key: "users/alice/x.png".into(),
            url: "http://127.0.0.1:1/b".into(),
            fields: ["key", "Content-Type", "policy", "x-amz-signature"]
                .map(|name| (name.to_string(), format!("{name} value")))
                .to_vec(),
            expires_at: OffsetDateTime::UNIX_EPOCH,
            max_size: 10,
        };
        let json = serde_json::to_string(&grant).unwrap();
        let fields = &json[json.find("\"fields\":").unwrap()..];
        assert!(
            fields.starts_with(
                r#""fields":{"key":"key value","Content-Type":"Content-Type value","policy":"policy value","x-amz-signature":"x-amz-signature value"}"#
            ),
            "{json}"
        );
    }
}

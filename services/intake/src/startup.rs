//! Wiring: builds every part of intake from its settings and runs the HTTP
//! API and the usage projection side by side until shutdown.

use std::{net::SocketAddr, num::NonZeroU32, sync::Arc, time::Duration};

use anyhow::Context;
use stowage_shared::{
    aws,
    consumer::{ConsumerOptions, QueueConsumer},
    publisher::EventBus,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::{
    adapters::{dynamodb::DynamoAccountStore, post_signer::PostSigner, s3::S3Objects},
    auth::{Authenticator, JwksOptions, TokenRules},
    ports::AccountStore,
    projection::UsageProjection,
    rate::GrantLimiter,
    routes::{AppState, Services, router},
    settings::Settings,
};

/// Full `PutEvents` requests (ten events) intake keeps out at once; a
/// request with fewer goes only when none is out, so events published by
/// concurrent requests meanwhile share the next one.
const PUBLISH_IN_FLIGHT: usize = 4;

/// The token verifier the settings describe: exactly one of a JWKS URL and
/// an HS256 secret must be configured.
pub fn authenticator(settings: &Settings) -> anyhow::Result<Authenticator> {
    let rules = TokenRules {
        issuer: settings.jwt_issuer.clone(),
        audience: settings.jwt_audience.clone(),
        client_id_audience: settings.jwt_client_id_audience,
        token_use: settings.jwt_token_use.clone(),
        admin_claim: settings.admin_claim.clone(),
        admin_value: settings.admin_value.clone(),
    };
    let authenticator = match (&settings.jwks_url, &settings.jwt_secret) {
        (Some(url), None) => Authenticator::jwks(url, rules, JwksOptions::default())
            .context("invalid STOWAGE_JWKS_URL")?,
        (None, Some(secret)) => Authenticator::hs256(secret, rules),
        (Some(_), Some(_)) => anyhow::bail!(
            "both STOWAGE_JWKS_URL and STOWAGE_JWT_SECRET are set: configure exactly one way \
             to verify bearer tokens"
        ),
        (None, None) => anyhow::bail!(
            "no token verification configured: set STOWAGE_JWKS_URL (an identity provider's \
             keys) or STOWAGE_JWT_SECRET (HS256, local use)"
        ),
    };
    Ok(authenticator.keeping(settings.verified_tokens))
}

/// A built intake, bound to its port and ready to run.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    consumer: Arc<QueueConsumer<UsageProjection>>,
    limiter: GrantLimiter,
    /// How long a connection may wait on its client.
    idle: Duration,
}

impl App {
    /// Builds the app and binds its listener (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let sdk = aws::load().await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .context("no AWS region configured: set AWS_REGION")?;
        let credentials = sdk
            .credentials_provider()
            .context("no AWS credentials provider configured")?;
        let public_url = settings
            .s3_public_url
            .clone()
            .unwrap_or_else(|| format!("https://{}.s3.{region}.amazonaws.com", settings.bucket));
        let auth = authenticator(&settings)?;
        if let Err(error) = auth.preload().await {
            // Not fatal: requests answer 503 until the keys can be fetched.
            tracing::error!(%error, "cannot fetch the identity provider's keys yet");
        }

        let store: Arc<dyn AccountStore> = Arc::new(DynamoAccountStore::new(
            aws::dynamodb(&sdk),
            &settings.table,
        ));
        let limiter = GrantLimiter::new(
            NonZeroU32::new(settings.grant_rate_per_minute).unwrap_or(NonZeroU32::MIN),
            NonZeroU32::new(settings.grant_burst).unwrap_or(NonZeroU32::MIN),
        );
        let state = AppState::from(Services {
            objects: Arc::new(S3Objects::new(
                aws::s3(&sdk, settings.s3_path_style),
                &settings.bucket,
            )),
            limiter: limiter.clone(),
            grant_outcomes: opentelemetry::global::meter("stowage")
                .u64_counter("stowage.intake.grants")
                .with_description("Upload grant requests, by outcome")
                .build(),
            signer: PostSigner::new(credentials, region, public_url),
            bus: EventBus::new(aws::eventbridge(&sdk), &settings.event_bus)
                .coalescing(PUBLISH_IN_FLIGHT),
            auth,
            store: Arc::clone(&store),
            settings: settings.clone(),
        });
        let consumer = QueueConsumer::new(
            aws::sqs(&sdk),
            &settings.queue_url,
            Arc::new(UsageProjection::new(store)),
            ConsumerOptions {
                workers: settings.consumer_workers,
                wait: Duration::from_secs(settings.consumer_wait_seconds),
                dlq_poll: Duration::from_secs(settings.consumer_dlq_poll_seconds),
                ..ConsumerOptions::default()
            },
        );
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let idle = Duration::from_secs(settings.http_idle_seconds);
        let mut router = router(state).layer(RequestBodyTimeoutLayer::new(idle));
        if let Some(cors) = crate::cors::layer(&settings.cors_origins) {
            router = router.layer(cors);
        }
        Ok(Self {
            listener,
            router: router.layer(crate::http_trace::layer()),
            consumer: Arc::new(consumer),
            limiter,
            idle,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests
    /// and queue batches finish.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let consumer = tokio::spawn(Arc::clone(&self.consumer).run(shutdown.clone()));
        let limiter = self.limiter.clone();
        let pruning = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            while pruning.run_until_cancelled(every.tick()).await.is_some() {
                limiter.prune();
            }
        });
        crate::serve::serve(self.listener, self.router, self.idle, shutdown.clone()).await;
        consumer.await.context("usage projection panicked")
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use secrecy::SecretString;

    use super::*;

    /// Settings with exactly the given token verification, whatever the
    /// environment holds.
    fn settings(jwks_url: Option<&str>, secret: Option<&str>) -> Settings {
        let mut settings = Settings::try_parse_from([
            "stowage-intake",
            "--bucket=b",
            "--table=t",
            "--queue-url=http://127.0.0.1:1/q",
        ])
        .unwrap();
        settings.jwks_url = jwks_url.map(str::to_string);
        settings.jwt_secret = secret.map(|s| SecretString::from(s.to_string()));
        settings
    }

    #[test]
    fn exactly_one_way_to_verify_tokens_is_configured() {
        let secret = Some("a-secret-of-enough-length");
        let jwks = Some("http://127.0.0.1:1/.well-known/jwks.json");
        assert!(authenticator(&settings(None, secret)).is_ok());
        assert!(authenticator(&settings(jwks, None)).is_ok());

        let both = authenticator(&settings(jwks, secret)).unwrap_err();
        assert!(both.to_string().contains("exactly one"), "{both}");
        let neither = authenticator(&settings(None, None)).unwrap_err();
        assert!(
            neither.to_string().contains("STOWAGE_JWKS_URL"),
            "{neither}"
        );
        let plain = Some("http://idp.example.com/jwks.json");
        assert!(authenticator(&settings(plain, None)).is_err());
    }
}

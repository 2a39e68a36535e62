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
use tower_http::trace::TraceLayer;

use crate::{
    adapters::{dynamodb::DynamoAccountStore, post_signer::PostSigner, s3::S3Objects},
    auth::Authenticator,
    ports::AccountStore,
    projection::UsageProjection,
    rate::GrantLimiter,
    routes::{AppState, router},
    settings::Settings,
};

/// A built intake, bound to its port and ready to run.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    consumer: Arc<QueueConsumer<UsageProjection>>,
    limiter: GrantLimiter,
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
        let secret = settings
            .jwt_secret
            .as_ref()
            .context("no token verification configured: set STOWAGE_JWT_SECRET")?;
        let auth = Authenticator::hs256(secret, &settings.jwt_issuer, &settings.jwt_audience);

        let store: Arc<dyn AccountStore> = Arc::new(DynamoAccountStore::new(
            aws::dynamodb(&sdk),
            &settings.table,
        ));
        let limiter = GrantLimiter::new(
            NonZeroU32::new(settings.grant_rate_per_minute).unwrap_or(NonZeroU32::MIN),
            NonZeroU32::new(settings.grant_burst).unwrap_or(NonZeroU32::MIN),
        );
        let state = AppState {
            objects: Arc::new(S3Objects::new(
                aws::s3(&sdk, settings.s3_path_style),
                &settings.bucket,
            )),
            limiter: limiter.clone(),
            signer: PostSigner::new(credentials, region, public_url),
            bus: EventBus::new(aws::eventbridge(&sdk), &settings.event_bus),
            auth: Arc::new(auth),
            store: Arc::clone(&store),
            settings: Arc::new(settings.clone()),
        };
        let consumer = QueueConsumer::new(
            aws::sqs(&sdk),
            &settings.queue_url,
            Arc::new(UsageProjection::new(store)),
            ConsumerOptions {
                workers: settings.consumer_workers,
                wait: Duration::from_secs(settings.consumer_wait_seconds),
                ..ConsumerOptions::default()
            },
        );
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        Ok(Self {
            listener,
            router: router(state).layer(TraceLayer::new_for_http()),
            consumer: Arc::new(consumer),
            limiter,
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
        let stop = shutdown.clone();
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        shutdown.cancel();
        consumer.await.context("usage projection panicked")?;
        served.context("HTTP server failed")
    }
}

//! Wiring: builds the ledger from its settings and runs its queue consumer.

use std::{sync::Arc, time::Duration};

use stowage_shared::{
    aws,
    consumer::{ConsumerOptions, QueueConsumer},
    publisher::EventBus,
};
use tokio_util::sync::CancellationToken;

use crate::{
    adapters::{dynamodb::DynamoLedgerStore, s3::S3Bucket},
    ledger::Ledger,
    reconcile::Reconciler,
    settings::{DEFAULT_TOMBSTONE_TTL_DAYS, Settings},
};

/// A [`Reconciler`] for the bucket and table the given names point at.
pub async fn reconciler(
    bucket: &str,
    s3_path_style: bool,
    table: &str,
    event_bus: &str,
) -> Reconciler {
    let sdk = aws::load().await;
    let store = Arc::new(DynamoLedgerStore::new(
        aws::dynamodb(&sdk),
        table,
        Duration::from_secs(DEFAULT_TOMBSTONE_TTL_DAYS * 24 * 3600),
    ));
    Reconciler::new(
        store.clone(),
        store,
        Arc::new(S3Bucket::new(aws::s3(&sdk, s3_path_style), bucket)),
        Arc::new(EventBus::new(aws::eventbridge(&sdk), event_bus)),
    )
}

/// A built ledger, ready to consume.
#[derive(Debug)]
pub struct App {
    consumer: Arc<QueueConsumer<Ledger>>,
}

impl App {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let sdk = aws::load().await;
        let ledger = Ledger::new(
            Arc::new(DynamoLedgerStore::new(
                aws::dynamodb(&sdk),
                &settings.table,
                settings.tombstone_ttl(),
            )),
            Arc::new(S3Bucket::new(
                aws::s3(&sdk, settings.s3_path_style),
                &settings.bucket,
            )),
            Arc::new(EventBus::new(aws::eventbridge(&sdk), &settings.event_bus)),
            &settings.bucket,
        )
        .with_visibility_timeout(Duration::from_secs(settings.visibility_seconds));
        let consumer = QueueConsumer::new(
            aws::sqs(&sdk),
            &settings.queue_url,
            Arc::new(ledger),
            ConsumerOptions {
                workers: settings.workers,
                wait: Duration::from_secs(settings.wait_seconds),
                visibility_timeout: Duration::from_secs(settings.visibility_seconds),
                dlq_poll: Duration::from_secs(settings.dlq_poll_seconds),
                ..ConsumerOptions::default()
            },
        );
        Ok(Self {
            consumer: Arc::new(consumer),
        })
    }

    /// Consumes until `shutdown`, then finishes the batches in hand.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        self.consumer.run(shutdown).await;
    }
}

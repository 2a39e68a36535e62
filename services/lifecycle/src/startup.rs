//! Wiring: builds lifecycle from its settings, runs its queue consumer and,
//! when configured, its sweeps.

use std::{sync::Arc, time::Duration};

use stowage_shared::{
    aws,
    consumer::{BatchOutcome, ConsumerOptions, QueueConsumer},
    publisher::EventBus,
};
use tokio_util::sync::CancellationToken;

use crate::{
    adapters::{dynamodb::DynamoProjection, s3::S3Bucket},
    handler::{EventHandler, RestoreOptions},
    settings::{Settings, SweepSettings},
    sweep::Sweeper,
};

/// A [`Sweeper`] for the bucket, table and policy `settings` name.
pub async fn sweeper(settings: &SweepSettings) -> anyhow::Result<Sweeper> {
    let sdk = aws::load().await;
    sweeper_with_clients(
        settings,
        aws::dynamodb(&sdk),
        aws::s3(&sdk, settings.s3_path_style),
        aws::eventbridge(&sdk),
    )
}

/// A [`Sweeper`] on clients built by the caller (benchmarks and tests count
/// their requests).
pub fn sweeper_with_clients(
    settings: &SweepSettings,
    dynamodb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    eventbridge: aws_sdk_eventbridge::Client,
) -> anyhow::Result<Sweeper> {
    let projection = Arc::new(DynamoProjection::new(dynamodb, &settings.table));
    Ok(Sweeper::new(
        projection.clone(),
        projection,
        Arc::new(S3Bucket::new(s3, &settings.bucket)),
        Arc::new(EventBus::new(eventbridge, &settings.event_bus)),
        settings.options()?,
    ))
}

/// A built lifecycle service.
#[derive(Debug)]
pub struct App {
    consumer: Arc<QueueConsumer<EventHandler>>,
    sweeper: Arc<Sweeper>,
    /// `None` when the service does not sweep by itself.
    interval: Option<Duration>,
}

impl App {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let sdk = aws::load().await;
        let sweep = &settings.sweep;
        let projection = Arc::new(DynamoProjection::new(aws::dynamodb(&sdk), &sweep.table));
        let bucket = Arc::new(S3Bucket::new(
            aws::s3(&sdk, sweep.s3_path_style),
            &sweep.bucket,
        ));
        let publisher = Arc::new(EventBus::new(aws::eventbridge(&sdk), &sweep.event_bus));
        let options = sweep.options()?;
        let handler = EventHandler::new(
            projection.clone(),
            bucket.clone(),
            publisher.clone(),
            options.policies.clone(),
            &sweep.bucket,
            RestoreOptions {
                tier: settings.restore_tier.clone(),
                max_days: settings.restore_max_days,
            },
        );
        let consumer = QueueConsumer::new(
            aws::sqs(&sdk),
            &settings.queue_url,
            Arc::new(handler),
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
            sweeper: Arc::new(Sweeper::new(
                projection.clone(),
                projection,
                bucket,
                publisher,
                options,
            )),
            interval: (settings.sweep_interval_seconds > 0)
                .then(|| Duration::from_secs(settings.sweep_interval_seconds)),
        })
    }

    /// Receives and handles one batch from the queue; tests step through
    /// the queue with this instead of racing a running consumer.
    pub async fn process_batch(&self) -> anyhow::Result<BatchOutcome> {
        self.consumer.process_batch().await
    }

    /// The service's sweeper, for one-shot sweeps.
    pub fn sweeper(&self) -> Arc<Sweeper> {
        self.sweeper.clone()
    }

    /// Consumes (and sweeps every interval, when configured) until
    /// `shutdown`, then finishes the batch and the sweep in hand. First,
    /// beside the consumer, brings the due dates in line with a policy that
    /// lowered anyone's days ([`Sweeper::follow_policy`]).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let following = {
            let sweeper = self.sweeper.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                // Stopped, it is done again at the next start.
                tokio::select! {
                    _ = stop.cancelled() => {}
                    followed = sweeper.follow_policy() => if let Err(error) = followed {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "due dates not brought in line with the policy; the next start tries again"
                        );
                    }
                }
            })
        };
        let sweeps = self.interval.map(|interval| {
            let sweeper = self.sweeper.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                    match sweeper.run(time::OffsetDateTime::now_utc(), None).await {
                        Ok(report) => tracing::info!(
                            tiered = report.tiered,
                            tiered_bytes = report.tiered_bytes,
                            skipped = report.skipped,
                            changed = report.changed,
                            failed = report.failed,
                            "sweep done"
                        ),
                        Err(error) => {
                            tracing::warn!(
                                error = format!("{error:#}"),
                                "sweep failed; the next one tries again"
                            )
                        }
                    }
                }
            })
        });
        self.consumer.run(shutdown).await;
        let _ = following.await;
        if let Some(sweeps) = sweeps {
            let _ = sweeps.await;
        }
    }
}

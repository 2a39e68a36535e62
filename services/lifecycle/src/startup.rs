//! Wiring: builds lifecycle from its settings and runs its queue consumer.

use std::{sync::Arc, time::Duration};

use stowage_shared::{
    aws,
    consumer::{ConsumerOptions, QueueConsumer},
};
use tokio_util::sync::CancellationToken;

use crate::{observer::Observer, settings::Settings};

/// A built lifecycle service.
#[derive(Debug)]
pub struct App {
    consumer: Arc<QueueConsumer<Observer>>,
}

impl App {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let sdk = aws::load().await;
        let consumer = QueueConsumer::new(
            aws::sqs(&sdk),
            &settings.queue_url,
            Arc::new(Observer),
            ConsumerOptions {
                workers: settings.workers,
                wait: Duration::from_secs(settings.wait_seconds),
                ..ConsumerOptions::default()
            },
        );
        Ok(Self {
            consumer: Arc::new(consumer),
        })
    }

    /// Consumes until `shutdown`, then finishes the batch in hand.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        self.consumer.run(shutdown).await;
    }
}

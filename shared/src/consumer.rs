//! The SQS consumer loop shared by every service that reads a queue.
//!
//! A message is deleted only after its handler reports the effect durable.
//! Anything else stays on the queue: it becomes visible again, and after the
//! queue's `maxReceiveCount` receives SQS moves it to the dead-letter queue, so
//! a message that keeps failing never blocks the ones behind it.

use std::{future::Future, sync::Arc, time::Duration};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use backon::{BackoffBuilder, ExponentialBuilder};
use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Gauge},
};
use tokio_util::sync::CancellationToken;

/// One message as a handler sees it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    pub body: String,
    /// How many times SQS has handed this message out, this time included.
    pub receive_count: u32,
}

/// What a handler made of one message.
#[derive(Debug)]
pub enum Disposition {
    /// The effect is durable (or there is none to have); delete the message.
    /// The label names the outcome for logs and counts, e.g. `applied`.
    Done(&'static str),
    /// A passing failure (throttling, a conflict, a backend outage): leave the
    /// message for redelivery after its visibility timeout.
    Retry(anyhow::Error),
    /// The message can never be handled (unparseable, unknown version): make
    /// it visible again at once so it reaches the dead-letter queue quickly.
    Poison(String),
}

/// Handles the messages of a queue.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = Disposition> + Send;

    /// Handles the messages of one receive together, returning one
    /// disposition per delivery, in order. A handler overrides this to share
    /// work between messages (one read or write for several); each message
    /// still gets its own disposition, and only those `Done` are deleted.
    /// By default, each is handled on its own, in order.
    fn handle_batch(
        &self,
        deliveries: &[Delivery],
    ) -> impl Future<Output = Vec<Disposition>> + Send {
        async move {
            let mut dispositions = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                dispositions.push(self.handle(delivery).await);
            }
            dispositions
        }
    }
}

/// How a consumer polls its queue.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Concurrent long-polling workers.
    pub workers: usize,
    /// Long-poll wait, at most 20 s.
    pub wait: Duration,
    /// How long a received message stays hidden from other workers.
    pub visibility_timeout: Duration,
    /// Messages per receive, 1 to 10.
    pub batch_size: i32,
    /// Cap of the exponential backoff after errors.
    pub max_backoff: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            workers: 2,
            wait: Duration::from_secs(20),
            visibility_timeout: Duration::from_secs(60),
            batch_size: 10,
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What one `process_batch` call did, by outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub received: usize,
    pub deleted: usize,
    pub retried: usize,
    pub poisoned: usize,
    /// Labels of the messages handled to completion, in order.
    pub done: Vec<&'static str>,
}

/// The consumer's instruments: `stowage.consumer.messages` counts messages
/// by queue and outcome (the handler's label, `retried` or `poison`);
/// `stowage.consumer.lag` is the age in seconds of the oldest message of the
/// latest batch.
#[derive(Debug)]
struct Metrics {
    queue: KeyValue,
    messages: Counter<u64>,
    lag: Gauge<f64>,
}

impl Metrics {
    fn new(queue_url: &str) -> Self {
        let meter = global::meter("stowage");
        let name = queue_url
            .rsplit('/')
            .next()
            .unwrap_or(queue_url)
            .to_string();
        Self {
            queue: KeyValue::new("queue", name),
            messages: meter
                .u64_counter("stowage.consumer.messages")
                .with_description("Messages handled, by queue and outcome")
                .build(),
            lag: meter
                .f64_gauge("stowage.consumer.lag")
                .with_description("Age of the oldest message of the latest batch")
                .with_unit("s")
                .build(),
        }
    }

    fn count(&self, outcome: &'static str) {
        self.messages
            .add(1, &[self.queue.clone(), KeyValue::new("outcome", outcome)]);
    }
}

/// Reads one queue and hands each message to a [`Handler`].
#[derive(Debug)]
pub struct QueueConsumer<H> {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    handler: Arc<H>,
    options: ConsumerOptions,
    metrics: Metrics,
}

impl<H: Handler> QueueConsumer<H> {
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        handler: Arc<H>,
        options: ConsumerOptions,
    ) -> Self {
        let queue_url = queue_url.into();
        Self {
            metrics: Metrics::new(&queue_url),
            sqs,
            queue_url,
            handler,
            options,
        }
    }

    /// Receives one batch (long polling), handles its messages in order, and
    /// deletes the ones handled to completion. Tests call this to drain a
    /// queue step by step.
    pub async fn process_batch(&self) -> anyhow::Result<BatchOutcome> {
        let messages = self.receive().await?;
        self.handle_all(&messages).await
    }

    async fn receive(&self) -> anyhow::Result<Vec<Message>> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(self.options.batch_size)
            .wait_time_seconds(self.options.wait.as_secs().min(20) as i32)
            .visibility_timeout(self.options.visibility_timeout.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "ReceiveMessage on {}: {}",
                    self.queue_url,
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?;
        Ok(received.messages.unwrap_or_default())
    }

    /// Hands the received messages to the handler together and deletes the
    /// completed ones.
    async fn handle_all(&self, messages: &[Message]) -> anyhow::Result<BatchOutcome> {
        let mut outcome = BatchOutcome {
            received: messages.len(),
            ..Default::default()
        };
        self.record_lag(messages);
        let mut handles = Vec::with_capacity(messages.len());
        let mut deliveries = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            let (Some(handle), Some(message_id)) = (message.receipt_handle(), message.message_id())
            else {
                continue;
            };
            handles.push((index, handle));
            deliveries.push(Delivery {
                message_id: message_id.to_string(),
                body: message.body().unwrap_or_default().to_string(),
                receive_count: message
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            });
        }
        let dispositions = self.handler.handle_batch(&deliveries).await;
        // A delivery without a disposition is left for redelivery.
        debug_assert_eq!(dispositions.len(), deliveries.len());
        let mut to_delete = Vec::new();
        for (((index, handle), delivery), disposition) in
            handles.into_iter().zip(&deliveries).zip(dispositions)
        {
            match disposition {
                Disposition::Done(label) => {
                    self.metrics.count(label);
                    outcome.done.push(label);
                    to_delete.push(
                        DeleteMessageBatchRequestEntry::builder()
                            .id(index.to_string())
                            .receipt_handle(handle)
                            .build()?,
                    );
                }
                Disposition::Retry(error) => {
                    self.metrics.count("retried");
                    outcome.retried += 1;
                    tracing::warn!(
                        queue = %self.queue_url,
                        message_id = %delivery.message_id,
                        receive_count = delivery.receive_count,
                        error = format!("{error:#}"),
                        "message left for redelivery"
                    );
                }
                Disposition::Poison(reason) => {
                    self.metrics.count("poison");
                    outcome.poisoned += 1;
                    tracing::error!(
                        queue = %self.queue_url,
                        message_id = %delivery.message_id,
                        receive_count = delivery.receive_count,
                        %reason,
                        "poison message; it moves to the dead-letter queue after the queue's maxReceiveCount"
                    );
                    self.release(handle).await;
                }
            }
        }
        outcome.deleted = self.delete(to_delete).await?;
        Ok(outcome)
    }

    /// Records how long the oldest message of a batch waited on the queue.
    fn record_lag(&self, messages: &[Message]) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let oldest = messages
            .iter()
            .filter_map(|m| {
                m.attributes()?
                    .get(&MessageSystemAttributeName::SentTimestamp)
            })
            .filter_map(|sent| sent.parse::<u128>().ok())
            .min();
        if let Some(sent_ms) = oldest {
            let age = now_ms.saturating_sub(sent_ms) as f64 / 1000.0;
            self.metrics
                .lag
                .record(age, std::slice::from_ref(&self.metrics.queue));
        }
    }

    /// Makes a message visible again at once.
    async fn release(&self, receipt_handle: &str) {
        if let Err(error) = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(0)
            .send()
            .await
        {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(error), "could not release a message; it reappears after its visibility timeout");
        }
    }

    async fn delete(&self, entries: Vec<DeleteMessageBatchRequestEntry>) -> anyhow::Result<usize> {
        if entries.is_empty() {
            return Ok(0);
        }
        let requested = entries.len();
        let output = self
            .sqs
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "DeleteMessageBatch on {}: {}",
                    self.queue_url,
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?;
        for failed in output.failed() {
            // The effect is durable; the message will be redelivered and the
            // handler recognises it as a duplicate.
            tracing::warn!(queue = %self.queue_url, entry = failed.id(), code = failed.code(), "delete failed; the message will come back as a duplicate");
        }
        Ok(requested - output.failed().len())
    }

    /// Runs `options.workers` workers until `shutdown` is cancelled, then
    /// waits for each to finish the batch it is handling.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..self.options.workers.max(1) {
            let consumer = Arc::clone(&self);
            let shutdown = shutdown.clone();
            workers.spawn(async move { consumer.work(worker, shutdown).await });
        }
        while workers.join_next().await.is_some() {}
        tracing::info!(queue = %self.queue_url, "consumer stopped");
    }

    async fn work(&self, worker: usize, shutdown: CancellationToken) {
        let mut backoff = self.backoff();
        loop {
            // Only the long poll is cut short by shutdown; messages already
            // received are handled and deleted before the worker returns.
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = self.receive() => received,
            };
            let batch = match received {
                Ok(messages) => self.handle_all(&messages).await,
                Err(error) => Err(error),
            };
            let pause = match batch {
                Ok(outcome) if outcome.retried == 0 => {
                    backoff = self.backoff();
                    None
                }
                Ok(_) => backoff.next(),
                Err(error) => {
                    tracing::warn!(
                        worker,
                        error = format!("{error:#}"),
                        "receive failed; backing off"
                    );
                    backoff.next()
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {},
                }
            }
        }
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(self.options.max_backoff)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

//! The SQS consumer loop shared by every service that reads a queue.
//!
//! A message is deleted only after its handler reports the effect durable.
//! Anything else stays on the queue: it becomes visible again, and after the
//! queue's `maxReceiveCount` receives SQS moves it to the dead-letter queue, so
//! a message that keeps failing never blocks the ones behind it.
//!
//! Each message is handled in its own span, the child of the span that
//! published the event (`detail.trace`) when it names one.

use std::{future::Future, sync::Arc, time::Duration};

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use backon::{BackoffBuilder, ExponentialBuilder};
use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Gauge},
};
use serde::Deserialize;
use stowage_events::TraceContext;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, field};

use crate::telemetry;

/// One message as a handler sees it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    pub body: String,
    /// How many times SQS has handed this message out, this time included.
    pub receive_count: u32,
    /// The span the message is handled in (continuing the trace its event
    /// carries); work done for this message belongs inside it.
    pub span: tracing::Span,
}

impl Delivery {
    /// A delivery handled outside any span.
    pub fn new(message_id: impl Into<String>, body: impl Into<String>, receive_count: u32) -> Self {
        Self {
            message_id: message_id.into(),
            body: body.into(),
            receive_count,
            span: tracing::Span::none(),
        }
    }
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
    /// Nothing failed, but the message is finished only on a later delivery
    /// (a decision that must wait for work in flight elsewhere): leave it
    /// for redelivery after its visibility timeout, counted under the label
    /// and logged at `info`, with no back-off.
    Later(&'static str),
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
    /// By default, each is handled on its own, in order, in its span.
    fn handle_batch(
        &self,
        deliveries: &[Delivery],
    ) -> impl Future<Output = Vec<Disposition>> + Send {
        async move {
            let mut dispositions = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                dispositions.push(
                    self.handle(delivery)
                        .instrument(delivery.span.clone())
                        .await,
                );
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
    /// How often the depth of the queue's dead-letter queue is read.
    pub dlq_poll: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            workers: 2,
            wait: Duration::from_secs(20),
            visibility_timeout: Duration::from_secs(60),
            batch_size: 10,
            max_backoff: Duration::from_secs(30),
            dlq_poll: Duration::from_secs(60),
        }
    }
}

/// What one `process_batch` call did, by outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub received: usize,
    pub deleted: usize,
    pub retried: usize,
    /// Left for a later delivery without a failure ([`Disposition::Later`]).
    pub later: usize,
    pub poisoned: usize,
    /// Labels of the messages handled to completion, in order.
    pub done: Vec<&'static str>,
}

/// The consumer's instruments: `stowage.consumer.messages` counts messages
/// by queue and outcome (the handler's label, `retried` or `poison`);
/// `stowage.consumer.lag` is the age in seconds of the oldest message of the
/// latest batch (0 after a receive that found none);
/// `stowage.consumer.dlq_depth` the messages on the queue's dead-letter
/// queue.
#[derive(Debug)]
struct Metrics {
    /// The queue's name, the last part of its URL.
    name: String,
    queue: KeyValue,
    messages: Counter<u64>,
    lag: Gauge<f64>,
    dlq_depth: Gauge<u64>,
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
            queue: KeyValue::new("queue", name.clone()),
            name,
            messages: meter
                .u64_counter("stowage.consumer.messages")
                .with_description("Messages handled, by queue and outcome")
                .build(),
            lag: meter
                .f64_gauge("stowage.consumer.lag")
                .with_description("Age of the oldest message of the latest batch")
                .with_unit("s")
                .build(),
            dlq_depth: meter
                .u64_gauge("stowage.consumer.dlq_depth")
                .with_description("Messages on the queue's dead-letter queue")
                .build(),
        }
    }

    fn count(&self, outcome: &'static str) {
        self.messages
            .add(1, &[self.queue.clone(), KeyValue::new("outcome", outcome)]);
    }
}

/// The `detail.trace` of an event; empty for bodies without one.
fn carried_trace(body: &str) -> TraceContext {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        detail: Option<Detail>,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default)]
        trace: Option<TraceContext>,
    }
    serde_json::from_str::<Envelope>(body)
        .ok()
        .and_then(|e| e.detail?.trace)
        .unwrap_or_default()
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
            let mut delivery = Delivery::new(
                message_id,
                message.body().unwrap_or_default(),
                message
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            );
            delivery.span = self.message_span(&delivery);
            deliveries.push(delivery);
        }
        let dispositions = self.handler.handle_batch(&deliveries).await;
        // A delivery without a disposition is left for redelivery.
        debug_assert_eq!(dispositions.len(), deliveries.len());
        let mut to_delete = Vec::new();
        for (((index, handle), delivery), disposition) in
            handles.into_iter().zip(&deliveries).zip(dispositions)
        {
            let span = &delivery.span;
            match disposition {
                Disposition::Done(label) => {
                    span.record("outcome", label);
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
                    span.record("outcome", "retried");
                    span.record("otel.status_code", "ERROR");
                    self.metrics.count("retried");
                    outcome.retried += 1;
                    span.in_scope(|| {
                        tracing::warn!(
                            queue = %self.queue_url,
                            message_id = %delivery.message_id,
                            receive_count = delivery.receive_count,
                            error = format!("{error:#}"),
                            "message left for redelivery"
                        );
                    });
                }
                Disposition::Later(label) => {
                    span.record("outcome", label);
                    self.metrics.count(label);
                    outcome.later += 1;
                    span.in_scope(|| {
                        tracing::info!(
                            queue = %self.queue_url,
                            message_id = %delivery.message_id,
                            receive_count = delivery.receive_count,
                            outcome = label,
                            "message left to be finished on its next delivery"
                        );
                    });
                }
                Disposition::Poison(reason) => {
                    span.record("outcome", "poison");
                    span.record("otel.status_code", "ERROR");
                    self.metrics.count("poison");
                    outcome.poisoned += 1;
                    span.in_scope(|| {
                        tracing::error!(
                            queue = %self.queue_url,
                            message_id = %delivery.message_id,
                            receive_count = delivery.receive_count,
                            %reason,
                            "poison message; it moves to the dead-letter queue after the queue's maxReceiveCount"
                        );
                    });
                    self.release(handle).instrument(span.clone()).await;
                }
            }
        }
        outcome.deleted = self.delete(to_delete).await?;
        Ok(outcome)
    }

    /// The span one message is handled in: a child of the span that
    /// published the event when its `detail.trace` names one (S3's events
    /// carry none), a new trace otherwise.
    fn message_span(&self, delivery: &Delivery) -> tracing::Span {
        let span = tracing::info_span!(
            "message",
            otel.name = format!("process {}", self.metrics.name),
            otel.kind = "consumer",
            otel.status_code = field::Empty,
            messaging.system = "aws_sqs",
            messaging.operation.type = "process",
            messaging.destination.name = %self.metrics.name,
            messaging.message.id = %delivery.message_id,
            messaging.sqs.receive_count = delivery.receive_count,
            outcome = field::Empty,
        );
        telemetry::continue_trace(&span, &carried_trace(&delivery.body));
        span
    }

    /// Records how long the oldest message of a batch waited on the queue;
    /// a receive that found nothing waiting records 0, so the lag falls back
    /// once a backlog is worked off.
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
        let age = match oldest {
            Some(sent_ms) => now_ms.saturating_sub(sent_ms) as f64 / 1000.0,
            None if messages.is_empty() => 0.0,
            None => return,
        };
        self.metrics
            .lag
            .record(age, std::slice::from_ref(&self.metrics.queue));
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

    /// The URL of the queue's dead-letter queue, from its `RedrivePolicy`;
    /// `None` when it has none.
    async fn dead_letter_queue(&self) -> anyhow::Result<Option<String>> {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "GetQueueAttributes on {}: {}",
                    self.queue_url,
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?;
        let Some(policy) = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
        else {
            return Ok(None);
        };
        let arn = serde_json::from_str::<serde_json::Value>(policy)
            .ok()
            .and_then(|p| p["deadLetterTargetArn"].as_str().map(str::to_string))
            .ok_or_else(|| {
                anyhow::anyhow!("RedrivePolicy without deadLetterTargetArn: {policy}")
            })?;
        // arn:<partition>:sqs:<region>:<account>:<name>
        let [_, _, _, _, account, name] = arn.split(':').collect::<Vec<_>>()[..] else {
            anyhow::bail!("dead-letter queue ARN {arn} is not an SQS queue ARN");
        };
        let url = self
            .sqs
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "GetQueueUrl of {arn}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?
            .queue_url
            .ok_or_else(|| anyhow::anyhow!("GetQueueUrl of {arn} returned no URL"))?;
        Ok(Some(url))
    }

    /// Messages waiting on a queue (`ApproximateNumberOfMessages`).
    async fn waiting(&self, queue_url: &str) -> anyhow::Result<u64> {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "GetQueueAttributes on {queue_url}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?;
        attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("{queue_url} did not say how many messages it holds"))
    }

    /// Records the depth of the dead-letter queue every `options.dlq_poll`
    /// until `shutdown`. The dead-letter queue is looked up once, from the
    /// queue's `RedrivePolicy`.
    async fn watch_dead_letters(&self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.options.dlq_poll);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dlq = None;
        while shutdown.run_until_cancelled(every.tick()).await.is_some() {
            if dlq.is_none() {
                match self.dead_letter_queue().await {
                    Ok(Some(url)) => dlq = Some(url),
                    Ok(None) => {
                        tracing::warn!(queue = %self.queue_url, "the queue has no dead-letter queue; its depth is not reported");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "dead-letter queue not found yet"
                        );
                        continue;
                    }
                }
            }
            let Some(url) = &dlq else { continue };
            match self.waiting(url).await {
                Ok(depth) => self
                    .metrics
                    .dlq_depth
                    .record(depth, std::slice::from_ref(&self.metrics.queue)),
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "dead-letter queue depth not read"
                    );
                }
            }
        }
    }

    /// Runs `options.workers` workers until `shutdown` is cancelled, then
    /// waits for each to finish the batch it is handling. Meanwhile it
    /// reports the depth of the queue's dead-letter queue.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut workers = tokio::task::JoinSet::new();
        let watcher = Arc::clone(&self);
        let stop = shutdown.clone();
        workers.spawn(async move { watcher.watch_dead_letters(stop).await });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_an_event_carries_is_read_from_its_detail() {
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let stowage = format!(
            r#"{{"source":"stowage.ledger","detail-type":"UsageChanged.v1","detail":{{"user_id":"u","trace":{{"traceparent":"{traceparent}","tracestate":"k=v"}}}}}}"#
        );
        assert_eq!(
            carried_trace(&stowage),
            TraceContext {
                traceparent: Some(traceparent.to_string()),
                tracestate: Some("k=v".to_string()),
            }
        );
        let s3 = r#"{"source":"aws.s3","detail-type":"Object Created","detail":{"bucket":{"name":"b"},"object":{"key":"k"}}}"#;
        for body in [s3, r#"{"detail":null}"#, "[1, 2]", "not json", ""] {
            assert_eq!(carried_trace(body), TraceContext::default(), "{body}");
        }
    }
}

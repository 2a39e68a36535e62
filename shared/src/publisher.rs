//! Publishes Stowage events to the event bus.

use std::time::Duration;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use stowage_events::StowageEvent;
use tokio::sync::{mpsc, oneshot};

/// Entries per `PutEvents` request, EventBridge's limit.
pub const MAX_ENTRIES: usize = 10;

/// How often entries the bus refused are offered again within one
/// [`EventBus::publish_all`] call.
const ENTRY_ATTEMPTS: u32 = 3;

/// Why an event could not be published; the caller decides whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("event could not be encoded as JSON")]
    Encode(#[from] serde_json::Error),
    #[error("event bus {bus} refused the event: {code}: {message}")]
    Refused {
        bus: String,
        code: String,
        message: String,
    },
    #[error("could not reach the event bus {bus}")]
    Unreachable {
        bus: String,
        #[source]
        source: anyhow::Error,
    },
}

/// Puts events on one EventBridge bus.
#[derive(Debug, Clone)]
pub struct EventBus {
    client: aws_sdk_eventbridge::Client,
    name: String,
    /// Where [`EventBus::publish`] hands its entry when publishing is
    /// coalesced (see [`EventBus::coalescing`]).
    coalescer: Option<mpsc::UnboundedSender<Pending>>,
}

/// One entry waiting for a shared `PutEvents`, and where its fate goes.
#[derive(Debug)]
struct Pending {
    entry: PutEventsRequestEntry,
    fate: oneshot::Sender<Result<(), PublishError>>,
}

impl EventBus {
    pub fn new(client: aws_sdk_eventbridge::Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
            coalescer: None,
        }
    }

    /// The same bus, with [`EventBus::publish`] calls made at the same time
    /// by concurrent callers sharing `PutEvents` requests of up to
    /// [`MAX_ENTRIES`] entries, at most `in_flight` full ones out at once
    /// ([`crate::batching::send_in_batches`]). A caller alone is sent at
    /// once, so coalescing adds no wait; under load it divides the requests,
    /// and their CPU, by up to ten. Each caller still learns its own entry's
    /// fate. Must be called within a Tokio runtime: the requests are sent by
    /// a task that ends when the last clone of the returned bus is dropped
    /// and every entry handed to it is answered.
    pub fn coalescing(self, in_flight: usize) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let direct = Self {
            coalescer: None,
            ..self
        };
        let bus = direct.clone();
        tokio::spawn(crate::batching::send_in_batches(
            receiver,
            in_flight,
            MAX_ENTRIES,
            crate::batching::first(MAX_ENTRIES),
            move |batch| bus.clone().send_coalesced(batch),
        ));
        Self {
            coalescer: Some(sender),
            ..direct
        }
    }

    /// Sends one shared request and tells each entry's caller its fate.
    async fn send_coalesced(self, batch: Vec<Pending>) {
        let (entries, fates): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.entry, p.fate)).unzip();
        let mut results: Vec<Result<(), PublishError>> = entries.iter().map(|_| Ok(())).collect();
        self.put(entries.into_iter().enumerate().collect(), &mut results)
            .await;
        for (fate, result) in fates.into_iter().zip(results) {
            // A caller that stopped waiting has nobody to tell.
            let _ = fate.send(result);
        }
    }

    fn entry<E: StowageEvent>(&self, event: &E) -> Result<PutEventsRequestEntry, PublishError> {
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.name)
            .source(E::SOURCE)
            .detail_type(E::detail_type())
            .detail(serde_json::to_string(event)?)
            .build())
    }

    /// Publishes one event with its type's `source` and `detail-type`.
    pub async fn publish<E: StowageEvent>(&self, event: &E) -> Result<(), PublishError> {
        if let Some(coalescer) = &self.coalescer {
            let (fate, told) = oneshot::channel();
            let entry = self.entry(event)?;
            if coalescer.send(Pending { entry, fate }).is_ok()
                && let Ok(result) = told.await
            {
                return result;
            }
            // The coalescing task is gone (the runtime is shutting down):
            // send it directly.
        }
        self.publish_all(std::slice::from_ref(event))
            .await
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Publishes events, up to [`MAX_ENTRIES`] per request, and reports each
    /// one's fate, in order. Entries the bus refuses (EventBridge answers
    /// each entry on its own) are offered again, alone with the other refused
    /// ones, a few times before their error is reported.
    pub async fn publish_all<E: StowageEvent>(
        &self,
        events: &[E],
    ) -> Vec<Result<(), PublishError>> {
        let mut results: Vec<Result<(), PublishError>> = Vec::with_capacity(events.len());
        let mut pending = Vec::new();
        for (index, event) in events.iter().enumerate() {
            match self.entry(event) {
                Ok(entry) => {
                    results.push(Ok(()));
                    pending.push((index, entry));
                }
                Err(error) => results.push(Err(error)),
            }
        }
        self.put(pending, &mut results).await;
        results
    }

    /// Sends `pending` (each entry with its place in `results`), up to
    /// [`MAX_ENTRIES`] per request, and writes each entry's fate into
    /// `results`. Entries the bus refuses (EventBridge answers each entry on
    /// its own) are offered again, alone with the other refused ones, a few
    /// times before their error is reported.
    async fn put(
        &self,
        mut pending: Vec<(usize, PutEventsRequestEntry)>,
        results: &mut [Result<(), PublishError>],
    ) {
        for attempt in 0..ENTRY_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            for (index, _) in &pending {
                results[*index] = Ok(());
            }
            let mut refused = Vec::new();
            for chunk in pending.chunks(MAX_ENTRIES) {
                let output = self
                    .client
                    .put_events()
                    .set_entries(Some(chunk.iter().map(|(_, e)| e.clone()).collect()))
                    .send()
                    .await;
                let output = match output {
                    Ok(output) => output,
                    Err(error) => {
                        // The SDK has retried already; nothing more to try here.
                        let error = format!(
                            "PutEvents: {}",
                            aws_sdk_eventbridge::error::DisplayErrorContext(error)
                        );
                        for (index, _) in chunk {
                            results[*index] = Err(PublishError::Unreachable {
                                bus: self.name.clone(),
                                source: anyhow::anyhow!(error.clone()),
                            });
                        }
                        continue;
                    }
                };
                if output.failed_entry_count() == 0 {
                    continue;
                }
                // The answer's entries are in the request's order.
                let answers = output.entries();
                for (position, (index, entry)) in chunk.iter().enumerate() {
                    let answer = answers.get(position);
                    if answer.is_some_and(|a| a.error_code().is_none()) {
                        continue;
                    }
                    results[*index] = Err(PublishError::Refused {
                        bus: self.name.clone(),
                        code: answer
                            .and_then(|a| a.error_code())
                            .unwrap_or("unknown")
                            .to_string(),
                        message: answer
                            .and_then(|a| a.error_message())
                            .unwrap_or("")
                            .to_string(),
                    });
                    refused.push((*index, entry.clone()));
                }
            }
            pending = refused;
        }
    }
}

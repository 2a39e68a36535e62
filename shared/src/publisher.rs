//! Publishes Stowage events to the event bus.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use stowage_events::StowageEvent;

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

/// Entries EventBridge accepts in one `PutEvents` request.
const MAX_ENTRIES: usize = 10;

/// Puts events on one EventBridge bus.
#[derive(Debug, Clone)]
pub struct EventBus {
    client: aws_sdk_eventbridge::Client,
    name: String,
}

impl EventBus {
    pub fn new(client: aws_sdk_eventbridge::Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }

    /// Publishes one event with its type's `source` and `detail-type`.
    pub async fn publish<E: StowageEvent>(&self, event: &E) -> Result<(), PublishError> {
        self.put(vec![self.entry(event)?]).await
    }

    /// Publishes events of one type, up to ten to a `PutEvents` request
    /// (EventBridge's limit), so that a batch costs a tenth of the requests.
    /// Stops at the first request that fails.
    pub async fn publish_all<E: StowageEvent>(&self, events: &[E]) -> Result<(), PublishError> {
        for chunk in events.chunks(MAX_ENTRIES) {
            let entries = chunk
                .iter()
                .map(|e| self.entry(e))
                .collect::<Result<Vec<_>, _>>()?;
            self.put(entries).await?;
        }
        Ok(())
    }

    fn entry<E: StowageEvent>(&self, event: &E) -> Result<PutEventsRequestEntry, PublishError> {
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.name)
            .source(E::SOURCE)
            .detail_type(E::detail_type())
            .detail(serde_json::to_string(event)?)
            .build())
    }

    async fn put(&self, entries: Vec<PutEventsRequestEntry>) -> Result<(), PublishError> {
        let output = self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| PublishError::Unreachable {
                bus: self.name.clone(),
                source: anyhow::anyhow!(
                    "PutEvents: {}",
                    aws_sdk_eventbridge::error::DisplayErrorContext(e)
                ),
            })?;
        if output.failed_entry_count() > 0 {
            let entry = output.entries().iter().find(|e| e.error_code().is_some());
            return Err(PublishError::Refused {
                bus: self.name.clone(),
                code: entry
                    .and_then(|e| e.error_code())
                    .unwrap_or("unknown")
                    .to_string(),
                message: entry
                    .and_then(|e| e.error_message())
                    .unwrap_or("")
                    .to_string(),
            });
        }
        Ok(())
    }
}

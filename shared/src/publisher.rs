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
        let detail = serde_json::to_string(event)?;
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.name)
            .source(E::SOURCE)
            .detail_type(E::detail_type())
            .detail(detail)
            .build();
        let output = self
            .client
            .put_events()
            .entries(entry)
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
            let entry = output.entries().first();
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

//! [`UsagePublisher`] on the Stowage event bus.

use async_trait::async_trait;
use stowage_events::UsageChangedV1;
use stowage_shared::publisher::EventBus;

use crate::ports::UsagePublisher;

#[async_trait]
impl UsagePublisher for EventBus {
    async fn publish(&self, event: &UsageChangedV1) -> anyhow::Result<()> {
        Ok(EventBus::publish(self, event).await?)
    }

    async fn publish_all(&self, events: &[UsageChangedV1]) -> Vec<anyhow::Result<()>> {
        EventBus::publish_all(self, events)
            .await
            .into_iter()
            .map(|result| result.map_err(anyhow::Error::from))
            .collect()
    }
}

//! [`LifecyclePublisher`] on the Stowage event bus.

use async_trait::async_trait;
use stowage_events::{ObjectRestoredV1, ObjectTieredV1};
use stowage_shared::publisher::EventBus;

use crate::ports::LifecyclePublisher;

#[async_trait]
impl LifecyclePublisher for EventBus {
    async fn tiered(&self, events: &[ObjectTieredV1]) -> anyhow::Result<()> {
        self.publish_all(events)
            .await
            .into_iter()
            .collect::<Result<(), _>>()?;
        Ok(())
    }

    async fn restored(&self, event: &ObjectRestoredV1) -> anyhow::Result<()> {
        Ok(self.publish(event).await?)
    }
}

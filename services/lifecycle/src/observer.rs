//! Reads lifecycle's queue and logs each event by type, user and key.

use stowage_events::RawEnvelope;
use stowage_shared::consumer::{Delivery, Disposition, Handler};

/// Logs the events lifecycle receives.
#[derive(Debug, Default, Clone)]
pub struct Observer;

impl Handler for Observer {
    async fn handle(&self, delivery: &Delivery) -> Disposition {
        let envelope = match RawEnvelope::parse(&delivery.body) {
            Ok(envelope) => envelope,
            Err(error) => return Disposition::Poison(error.to_string()),
        };
        let key = envelope
            .detail
            .pointer("/object/key")
            .or_else(|| envelope.detail.get("key"));
        tracing::info!(
            source = %envelope.source,
            detail_type = %envelope.detail_type,
            key = key.and_then(|k| k.as_str()).unwrap_or(""),
            "event observed"
        );
        Disposition::Done("observed")
    }
}

//! Keeps each account's committed bytes in step with the ledger: applies
//! `UsageChanged.v1` events from intake's queue. Events may arrive twice or
//! out of order; the per-user `revision` makes applying them idempotent, and
//! [`Account::apply_usage`](crate::domain::quota::Account::apply_usage) keeps
//! reservations on the safe side when they do.

use std::{sync::Arc, time::Duration};

use stowage_events::{RawEnvelope, StowageEvent, UsageChangedV1, stowage::ObjectChange};
use stowage_shared::consumer::{Delivery, Disposition, Handler};

use crate::{
    domain::{keys::UserId, quota::UsageReport},
    ports::AccountStore,
};

/// Applies usage reports to accounts.
#[derive(Debug, Clone)]
pub struct UsageProjection {
    store: Arc<dyn AccountStore>,
}

impl UsageProjection {
    pub fn new(store: Arc<dyn AccountStore>) -> Self {
        Self { store }
    }

    /// Applies one event; returns the outcome label.
    pub async fn apply(&self, event: &UsageChangedV1) -> Result<&'static str, anyhow::Error> {
        let user = UserId::parse(&event.meta.user_id)?;
        let report = UsageReport {
            revision: event.revision,
            used_bytes: event.used_bytes,
            object_count: event.object_count,
            by_storage_class: &event.by_storage_class,
            key: &event.key,
            object_size: event.object_size,
        };
        for attempt in 0u32..50 {
            let stored = self.store.load(&user).await?;
            let mut account = stored.value.clone();
            // The ledger names the grant when it saw it; otherwise the newest
            // grant intake holds for the key is the one that was used.
            let grant = event.grant_id.map(|g| g.to_string()).or_else(|| {
                account
                    .reservations
                    .get(event.key.as_str())
                    .and_then(|r| r.grants.last().cloned())
            });
            let outcome = if !account.apply_usage(&report) {
                "stale"
            } else {
                match self.store.save(&user, &stored, account, None).await {
                    Ok(()) => "applied",
                    Err(error) if error.is_retryable() => {
                        tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt + 1))).await;
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                }
            };
            if let (ObjectChange::Created, Some(size), Some(grant)) =
                (event.change, event.object_size, grant)
            {
                self.store.complete_grant(&user, &grant, size).await?;
            }
            return Ok(outcome);
        }
        anyhow::bail!("account of {user} kept changing; giving up for now")
    }
}

impl Handler for UsageProjection {
    async fn handle(&self, delivery: &Delivery) -> Disposition {
        let envelope = match RawEnvelope::parse(&delivery.body) {
            Ok(envelope) => envelope,
            Err(error) => return Disposition::Poison(error.to_string()),
        };
        if envelope.source != UsageChangedV1::SOURCE
            || envelope.detail_type != UsageChangedV1::detail_type()
        {
            return Disposition::Poison(format!(
                "intake does not consume {} from {}",
                envelope.detail_type, envelope.source
            ));
        }
        let event = match envelope.decode::<UsageChangedV1>() {
            Ok(event) => event.detail,
            Err(error) => return Disposition::Poison(error.to_string()),
        };
        match self.apply(&event).await {
            Ok(label) => {
                tracing::debug!(user = %event.meta.user_id, revision = event.revision, outcome = label, "usage projected");
                Disposition::Done(label)
            }
            Err(error) => Disposition::Retry(error),
        }
    }
}

//! Keeps each account's committed bytes in step with the ledger: applies
//! `UsageChanged.v1` events from intake's queue. Events may arrive twice or
//! out of order; the per-user `revision` makes applying them idempotent, and
//! [`Account::apply_usage`](crate::domain::quota::Account::apply_usage) keeps
//! reservations on the safe side when they do.

use std::{sync::Arc, time::Duration};

use stowage_events::{RawEnvelope, StowageEvent, UsageChangedV1, stowage::ObjectChange};
use stowage_shared::consumer::{Delivery, Disposition, Handler};
use time::OffsetDateTime;

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
            repeated: event.repeated,
        };
        for attempt in 0u32..50 {
            let stored = self.store.load(&user).await?;
            let mut account = stored.value.clone();
            // The grants intake holds for the key, oldest first, in case the
            // ledger could not name the upload's.
            let held = account
                .reservations
                .get(event.key.as_str())
                .map(|r| r.grants.clone())
                .unwrap_or_default();
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
            // A grant is complete by an upload, never by the move of an
            // object already stored to another class.
            if let (ObjectChange::Created, Some(size), false) =
                (event.change, event.object_size, event.reclassified)
            {
                let grant = match event.grant_id {
                    Some(grant) => Some(grant.to_string()),
                    None => self.grant_of_upload(&held, event.uploaded_at).await?,
                };
                if let Some(grant) = grant {
                    self.store.complete_grant(&user, &grant, size).await?;
                }
            }
            return Ok(outcome);
        }
        anyhow::bail!("account of {user} kept changing; giving up for now")
    }
}

impl UsageProjection {
    /// The grant an upload the ledger could not name came under, among the
    /// key's `held` grants (oldest first): the newest issued before the
    /// upload, or the newest when the upload's time is not known.
    async fn grant_of_upload(
        &self,
        held: &[String],
        uploaded_at: Option<OffsetDateTime>,
    ) -> Result<Option<String>, anyhow::Error> {
        let Some(uploaded_at) = uploaded_at else {
            return Ok(held.last().cloned());
        };
        for grant in held.iter().rev() {
            if let Some(record) = self.store.grant(grant).await?
                && issued_before(record.created_at, uploaded_at)
            {
                return Ok(Some(grant.clone()));
            }
        }
        Ok(None)
    }
}

/// How far S3's clock may be behind intake's when it stamps an upload.
const CLOCK_SLACK: time::Duration = time::Duration::seconds(10);

/// Whether a grant issued at `issued_at` may have served an upload that S3
/// stored at `uploaded_at`.
fn issued_before(issued_at: OffsetDateTime, uploaded_at: OffsetDateTime) -> bool {
    issued_at <= uploaded_at + CLOCK_SLACK
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

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn an_upload_came_under_a_grant_issued_before_it_give_or_take_the_clocks() {
        let uploaded = datetime!(2026-11-23 10:01:00 UTC);
        assert!(issued_before(datetime!(2026-11-23 10:00:00 UTC), uploaded));
        assert!(issued_before(datetime!(2026-11-23 10:01:10 UTC), uploaded));
        assert!(!issued_before(datetime!(2026-11-23 10:01:11 UTC), uploaded));
        assert!(!issued_before(datetime!(2026-11-23 10:05:00 UTC), uploaded));
    }
}

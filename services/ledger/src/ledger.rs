//! Handles one message from the ledger's queue: an S3 object event becomes a
//! conditional write of the object's row and its owner's totals, then a
//! `UsageChanged.v1`; an `UploadGranted.v1` is remembered for its key.
//!
//! Every outcome has one name, logged here: `applied`, `duplicate`, `stale`,
//! `not-a-user-key`, `other-bucket`, `grant-recorded`, and poison messages.

use std::{sync::Arc, time::Duration};

use stowage_events::{
    EventMeta, RawEnvelope, StowageEvent, TraceContext, UploadGrantedV1, UsageChangedV1,
    s3::{self, ObjectEventDetail},
    stowage::ObjectChange,
};
use stowage_shared::{
    consumer::{Delivery, Disposition, Handler},
    publisher::EventBus,
};

use crate::{
    domain::{
        keys,
        sequencer::Sequencer,
        usage::{Change, DEFAULT_STORAGE_CLASS, Decision, ObjectEvent, ObjectRow, Usage, decide},
    },
    ports::{GrantNote, LedgerStore, ObjectProbe},
};

/// Conflicting writers on one user's totals retry this many times before the
/// message is left for redelivery.
const MAX_COMMIT_ATTEMPTS: u32 = 25;

/// The ledger's message handler.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn LedgerStore>,
    probe: Arc<dyn ObjectProbe>,
    bus: EventBus,
    bucket: String,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// Why a message was not handled to completion.
enum Failure {
    /// It can never be handled.
    Poison(String),
    /// It may succeed later.
    Transient(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::Transient(error)
    }
}

impl Ledger {
    pub fn new(
        store: Arc<dyn LedgerStore>,
        probe: Arc<dyn ObjectProbe>,
        bus: EventBus,
        bucket: &str,
    ) -> Self {
        Self {
            store,
            probe,
            bus,
            bucket: bucket.to_string(),
        }
    }

    async fn dispatch(&self, body: &str) -> Result<&'static str, Failure> {
        let envelope = RawEnvelope::parse(body).map_err(|e| Failure::Poison(e.to_string()))?;
        match (envelope.source.as_str(), envelope.detail_type.as_str()) {
            (s3::SOURCE, s3::OBJECT_CREATED | s3::OBJECT_DELETED) => {
                let created = envelope.detail_type == s3::OBJECT_CREATED;
                let detail = envelope
                    .decode::<ObjectEventDetail>()
                    .map_err(|e| Failure::Poison(e.to_string()))?
                    .detail;
                self.apply_object_event(created, &detail).await
            }
            (UploadGrantedV1::SOURCE, detail_type)
                if detail_type == UploadGrantedV1::detail_type() =>
            {
                let grant = envelope
                    .decode::<UploadGrantedV1>()
                    .map_err(|e| Failure::Poison(e.to_string()))?
                    .detail;
                self.store
                    .record_grant(&GrantNote {
                        user_id: grant.meta.user_id,
                        key: grant.key,
                        grant_id: grant.grant_id.to_string(),
                        max_size: grant.max_size,
                        expires_at: grant.expires_at.unix_timestamp(),
                    })
                    .await
                    .map_err(|e| Failure::Transient(e.into()))?;
                Ok("grant-recorded")
            }
            (source, detail_type) => Err(Failure::Poison(format!(
                "the ledger does not consume {detail_type:?} from {source:?}"
            ))),
        }
    }

    async fn apply_object_event(
        &self,
        created: bool,
        detail: &ObjectEventDetail,
    ) -> Result<&'static str, Failure> {
        if detail.bucket.name != self.bucket {
            return Ok("other-bucket");
        }
        let sequencer = Sequencer::parse(&detail.object.sequencer).map_err(Failure::Poison)?;
        let change = if created {
            let size = detail
                .object
                .size
                .ok_or_else(|| Failure::Poison("Object Created without a size".into()))?;
            Change::Created {
                size,
                etag: detail.object.etag.clone(),
                storage_class: DEFAULT_STORAGE_CLASS.to_string(),
            }
        } else {
            Change::Deleted
        };
        let key = self.resolve_key(&detail.object.key, &change).await?;
        let Some(user) = keys::owner(&key) else {
            tracing::warn!(%key, "object outside users/<id>/ is not counted");
            return Ok("not-a-user-key");
        };
        let event = ObjectEvent { change, sequencer };

        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            let snapshot = self
                .store
                .snapshot(user, &key)
                .await
                .map_err(|e| Failure::Transient(e.into()))?;
            match decide(snapshot.object.as_ref(), &snapshot.usage, &event) {
                Decision::Stale => return Ok("stale"),
                Decision::Duplicate => {
                    // The first delivery may have committed and then failed to
                    // publish; publishing the current totals again is harmless.
                    if let Some(row) = &snapshot.object {
                        self.publish(user, &key, row, &snapshot.usage).await?;
                    }
                    return Ok("duplicate");
                }
                Decision::Apply { object, usage } => {
                    match self
                        .store
                        .commit(user, &key, &snapshot, &object, &usage)
                        .await
                    {
                        Ok(()) => {
                            self.publish(user, &key, &object, &usage).await?;
                            return Ok("applied");
                        }
                        Err(error) if error.is_retryable() => {
                            tokio::time::sleep(Duration::from_millis(2 << attempt.min(6))).await;
                        }
                        Err(error) => return Err(Failure::Transient(error.into())),
                    }
                }
            }
        }
        Err(Failure::Transient(anyhow::anyhow!(
            "rows of {key} kept changing"
        )))
    }

    /// The key an event means. Unambiguous spellings are taken as they are;
    /// otherwise the reading S3 holds with the event's etag wins, then a
    /// reading the ledger already has a row for, then the likeliest.
    async fn resolve_key(&self, raw: &str, change: &Change) -> Result<String, Failure> {
        let candidates = keys::candidates(raw);
        if candidates.len() == 1 {
            return Ok(candidates.into_iter().next().unwrap_or_default());
        }
        if let Change::Created {
            etag: Some(etag), ..
        } = change
        {
            for candidate in &candidates {
                if let Some(head) = self.probe.head(candidate).await?
                    && head.etag.as_deref() == Some(etag.trim_matches('"'))
                {
                    return Ok(candidate.clone());
                }
            }
        }
        for candidate in &candidates {
            if let Some(user) = keys::owner(candidate) {
                let snapshot = self
                    .store
                    .snapshot(user, candidate)
                    .await
                    .map_err(|e| Failure::Transient(e.into()))?;
                if snapshot.object.is_some() {
                    return Ok(candidate.clone());
                }
            }
        }
        Ok(candidates.into_iter().next().unwrap_or_default())
    }

    async fn publish(
        &self,
        user: &str,
        key: &str,
        row: &ObjectRow,
        usage: &Usage,
    ) -> Result<(), Failure> {
        let event = UsageChangedV1 {
            meta: EventMeta::new(user, TraceContext::default()),
            revision: usage.revision,
            used_bytes: usage.used_bytes,
            object_count: usage.object_count,
            by_storage_class: usage.by_storage_class.clone(),
            key: key.to_string(),
            change: if row.live {
                ObjectChange::Created
            } else {
                ObjectChange::Deleted
            },
            object_size: row.live.then_some(row.size),
        };
        self.bus
            .publish(&event)
            .await
            .map_err(|e| Failure::Transient(e.into()))
    }
}

impl Handler for Ledger {
    async fn handle(&self, delivery: &Delivery) -> Disposition {
        match self.dispatch(&delivery.body).await {
            Ok(outcome) => {
                tracing::info!(message_id = %delivery.message_id, outcome, "event handled");
                Disposition::Done(outcome)
            }
            Err(Failure::Poison(reason)) => Disposition::Poison(reason),
            Err(Failure::Transient(error)) => Disposition::Retry(error),
        }
    }
}

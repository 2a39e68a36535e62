//! Handles one message from lifecycle's queue: S3's object events and
//! intake's `ObjectAccessed.v1` keep the projection; `RestoreRequested.v1`
//! starts a restore; S3's `Object Restore Completed` is recorded and
//! announced as `ObjectRestored.v1`.
//!
//! Every outcome has one name, logged here and counted by the consumer:
//! `applied`, `duplicate`, `stale`, `unchanged`, `superseded`,
//! `not-a-user-key`, `not-owner`, `other-bucket`, `restore-started`,
//! `restore-in-progress`, `already-requested`, `not-archived`, `not-found`
//! (also a restore completed of an object not stored), `restored`, and
//! poison messages.

use std::{sync::Arc, time::Duration};

use stowage_events::{
    EventMeta, ObjectAccessedV1, ObjectRestoredV1, RawEnvelope, RestoreRequestedV1, StowageEvent,
    keys,
    s3::{self, ObjectEventDetail, RestoreCompletedDetail},
    sequencer::Sequencer,
};
use stowage_shared::{
    consumer::{Delivery, Disposition, Handler},
    telemetry,
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tracing::Instrument as _;

use crate::{
    domain::{
        policy::Policies,
        projection::{Change, Encryption, Observation, Restore, STANDARD, apply},
    },
    ports::{Bucket, LifecyclePublisher, Projection, RestoreStart},
};

/// Conflicting writers on one row retry this many times before the message
/// is left for redelivery.
const MAX_ATTEMPTS: u32 = 25;

/// The `reason` of an upload through a signed POST policy, which binds the
/// class (Standard) and the encryption (SSE-S3).
const POST_UPLOAD: &str = "POST Object";

/// How restores are started.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// `Standard`, `Bulk` or `Expedited`.
    pub tier: String,
    /// The longest restore granted; longer requests are shortened.
    pub max_days: u32,
}

/// Lifecycle's message handler.
#[derive(Clone)]
pub struct EventHandler {
    projection: Arc<dyn Projection>,
    bucket: Arc<dyn Bucket>,
    publisher: Arc<dyn LifecyclePublisher>,
    policies: Arc<Policies>,
    bucket_name: String,
    restore: RestoreOptions,
}

impl std::fmt::Debug for EventHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHandler")
            .field("bucket", &self.bucket_name)
            .finish_non_exhaustive()
    }
}

/// The outcome of a change of storage class S3 reported before the
/// projection applied its object's creation (S3's events may come in any
/// order). The message is left for its next delivery
/// ([`Disposition::Later`]), until the creation is applied; one whose
/// object never comes reaches the dead-letter queue.
pub const CREATION_AWAITED: &str = "creation-awaited";

/// The outcome of a delete of a key whose spelling reads two ways, when no
/// reading is live in the projection, on its first delivery. An upload of
/// the key may have been read from S3 before the delete and not be recorded
/// yet: S3 then no longer holds it, and once recorded nothing would take it
/// off. The delete is judged again on its next delivery, a visibility
/// timeout later, by when such an upload (recorded as soon as S3 answered)
/// is recorded and the delete takes it off: the message is left for that
/// delivery ([`Disposition::Later`]).
pub const DELETE_JUDGED_ON_REDELIVERY: &str = "judged-on-redelivery";

/// The outcome of S3's `Object Restore Completed`, on its first delivery,
/// for an object with no row or no restore request recorded. S3 may report a restore
/// done before the request that started it is recorded (the emulators
/// restore at once; a restore started outside Stowage has no request at
/// all): the message is left for its next delivery ([`Disposition::Later`]),
/// a visibility timeout later, when the restore is announced in the trace
/// of the request recorded by then, if any.
pub const RESTORE_REQUEST_AWAITED: &str = "restore-request-awaited";

/// Why a message was not handled to completion.
enum Failure {
    Poison(String),
    Transient(anyhow::Error),
    /// It is finished on a later delivery, with this outcome now.
    Later(&'static str),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::Transient(error)
    }
}

impl From<stowage_shared::store::StoreError> for Failure {
    fn from(error: stowage_shared::store::StoreError) -> Self {
        Self::Transient(error.into())
    }
}

fn poison(error: stowage_events::envelope::DecodeError) -> Failure {
    Failure::Poison(error.to_string())
}

impl EventHandler {
    pub fn new(
        projection: Arc<dyn Projection>,
        bucket: Arc<dyn Bucket>,
        publisher: Arc<dyn LifecyclePublisher>,
        policies: Arc<Policies>,
        bucket_name: &str,
        restore: RestoreOptions,
    ) -> Self {
        Self {
            projection,
            bucket,
            publisher,
            policies,
            bucket_name: bucket_name.to_string(),
            restore,
        }
    }

    async fn dispatch(&self, body: &str, first_delivery: bool) -> Result<&'static str, Failure> {
        let envelope = RawEnvelope::parse(body).map_err(poison)?;
        match (envelope.source.as_str(), envelope.detail_type.as_str()) {
            (
                s3::SOURCE,
                s3::OBJECT_CREATED | s3::OBJECT_DELETED | s3::OBJECT_STORAGE_CLASS_CHANGED,
            ) => {
                let event = envelope.decode::<ObjectEventDetail>().map_err(poison)?;
                self.object_event(
                    &event.detail_type,
                    event.time,
                    &event.detail,
                    first_delivery,
                )
                .await
            }
            (s3::SOURCE, s3::OBJECT_RESTORE_COMPLETED) => {
                let event = envelope
                    .decode::<RestoreCompletedDetail>()
                    .map_err(poison)?;
                self.restore_completed(&event.id, event.time, &event.detail, first_delivery)
                    .await
            }
            (ObjectAccessedV1::SOURCE, t) if t == ObjectAccessedV1::detail_type() => {
                let event = envelope
                    .decode::<ObjectAccessedV1>()
                    .map_err(poison)?
                    .detail;
                if keys::owner(&event.key) != Some(event.meta.user_id.as_str()) {
                    tracing::warn!(key = %event.key, user = %event.meta.user_id, "read of another user's key ignored");
                    return Ok("not-owner");
                }
                let observation = Observation::Accessed {
                    at: event.meta.occurred_at.unix_timestamp(),
                    size: event.size,
                    etag: event.etag.map(|e| e.trim_matches('"').to_string()),
                    storage_class: event.storage_class,
                };
                self.record(&event.meta.user_id, &event.key, &observation)
                    .await
            }
            (RestoreRequestedV1::SOURCE, t) if t == RestoreRequestedV1::detail_type() => {
                let event = envelope
                    .decode::<RestoreRequestedV1>()
                    .map_err(poison)?
                    .detail;
                self.restore_requested(&event).await
            }
            (source, detail_type) => Err(Failure::Poison(format!(
                "lifecycle does not consume {detail_type:?} from {source:?}"
            ))),
        }
    }

    async fn object_event(
        &self,
        detail_type: &str,
        time: OffsetDateTime,
        detail: &ObjectEventDetail,
        first_delivery: bool,
    ) -> Result<&'static str, Failure> {
        if detail.bucket.name != self.bucket_name {
            return Ok("other-bucket");
        }
        let object = &detail.object;
        let sequencer = object
            .sequencer
            .as_deref()
            .map(Sequencer::parse)
            .transpose()
            .map_err(Failure::Poison)?;
        let sequenced = || {
            sequencer
                .clone()
                .ok_or_else(|| Failure::Poison(format!("{detail_type} without a sequencer")))
        };
        let etag = object
            .etag
            .as_deref()
            .map(|e| e.trim_matches('"').to_string());
        let at = time.unix_timestamp();
        let deleted =
            detail_type != s3::OBJECT_CREATED && detail_type != s3::OBJECT_STORAGE_CLASS_CHANGED;
        let Some(key) = self
            .resolve_key(&object.key, (!deleted).then_some(etag.as_deref()))
            .await?
        else {
            if deleted && first_delivery {
                return Err(Failure::Later(DELETE_JUDGED_ON_REDELIVERY));
            }
            return Ok("superseded");
        };
        let Some(user) = keys::owner(&key) else {
            return Ok("not-a-user-key");
        };
        let observation = match detail_type {
            s3::OBJECT_CREATED => {
                let size = object
                    .size
                    .ok_or_else(|| Failure::Poison("Object Created without a size".into()))?;
                let (storage_class, encryption) = if detail.reason.as_deref() == Some(POST_UPLOAD) {
                    (STANDARD.to_string(), Encryption::S3Managed)
                } else {
                    // Copies and API uploads may name any class and
                    // encryption, which the event does not carry.
                    match self.bucket.head(&key).await? {
                        Some(head) if head.etag == etag => (head.storage_class, head.encryption),
                        _ => (STANDARD.to_string(), Encryption::Unknown),
                    }
                };
                Observation::Created {
                    sequencer: sequenced()?,
                    at,
                    size,
                    etag,
                    storage_class,
                    encryption,
                }
            }
            s3::OBJECT_STORAGE_CLASS_CHANGED => {
                if detail.destination_storage_class.is_none() {
                    return Err(Failure::Poison(
                        "Object Storage Class Changed without a destination class".into(),
                    ));
                }
                // S3 says what a change of class means: the class its object
                // is in now, as long as S3 still holds that object. Changes
                // of one object may arrive in any order, and S3 gives them
                // no sequencer to tell.
                let Some(head) = self.bucket.head(&key).await?.filter(|h| {
                    etag.is_none()
                        || h.etag.as_deref().map(|e| e.trim_matches('"')) == etag.as_deref()
                }) else {
                    return Ok("superseded");
                };
                Observation::ClassChanged {
                    sequencer,
                    at,
                    size: Some(head.size),
                    etag: head.etag.map(|e| e.trim_matches('"').to_string()),
                    storage_class: head.storage_class,
                }
            }
            _ => Observation::Deleted {
                sequencer: sequenced()?,
            },
        };
        self.record(user, &key, &observation).await
    }

    async fn restore_requested(&self, event: &RestoreRequestedV1) -> Result<&'static str, Failure> {
        let user = event.meta.user_id.as_str();
        if keys::owner(&event.key) != Some(user) {
            tracing::warn!(key = %event.key, %user, "restore of another user's key refused");
            return Ok("not-owner");
        }
        let at = event.meta.occurred_at.unix_timestamp();
        // A request delivered again (a redrive, a replay of the archive) must
        // not pay for another retrieval: one no newer than the last request,
        // or than the object's last version, has nothing left to do.
        let row = self.projection.get(user, &event.key).await?;
        if let Some(row) = &row
            && (row
                .record
                .restore
                .requested_at()
                .is_some_and(|last| last >= at)
                || row.record.created_at > at)
        {
            tracing::info!(key = %event.key, "restore asked for before; nothing to do");
            return Ok("already-requested");
        }
        let days = event.days.clamp(1, self.restore.max_days.max(1));
        let outcome = match self
            .bucket
            .restore(&event.key, &event.storage_class, days, &self.restore.tier)
            .await?
        {
            RestoreStart::Started => "restore-started",
            RestoreStart::InProgress => "restore-in-progress",
            RestoreStart::NotArchived => return Ok("not-archived"),
            RestoreStart::NotFound => return Ok("not-found"),
        };
        tracing::info!(key = %event.key, days, tier = %self.restore.tier, outcome, "restore requested");
        // An object without a row (stored before the service knew of the
        // bucket) gets one from S3, as a backfill gives it, so that the
        // request is remembered and the same request again costs nothing.
        if row.is_none()
            && let Some(head) = self.bucket.head(&event.key).await?
        {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            self.record(user, &event.key, &head.observed(now)).await?;
        }
        // The restore's completion, hours later, is announced in this
        // span's trace: the request's.
        let observation = Observation::RestoreRequested {
            at,
            days,
            trace: telemetry::current_trace(),
        };
        self.record(user, &event.key, &observation).await?;
        Ok(outcome)
    }

    async fn restore_completed(
        &self,
        event_id: &str,
        time: OffsetDateTime,
        detail: &RestoreCompletedDetail,
        first_delivery: bool,
    ) -> Result<&'static str, Failure> {
        if detail.bucket.name != self.bucket_name {
            return Ok("other-bucket");
        }
        let etag = detail.object.etag.as_deref().map(|e| e.trim_matches('"'));
        let Some(key) = self.resolve_key(&detail.object.key, Some(etag)).await? else {
            return Ok("superseded");
        };
        let Some(user) = keys::owner(&key) else {
            return Ok("not-a-user-key");
        };
        // Only a live object the service knows is restored; a restore of a
        // version replaced since is not the object's.
        let requested_in = match self.projection.get(user, &key).await? {
            Some(row) if row.record.live => {
                if let (Some(held), Some(restored)) = (row.record.etag.as_deref(), etag)
                    && held != restored
                {
                    tracing::info!(%key, "restore of a replaced version; not announced");
                    return Ok("superseded");
                }
                if row.record.restore == Restore::None && first_delivery {
                    return Err(Failure::Later(RESTORE_REQUEST_AWAITED));
                }
                row.record.restore.trace().cloned()
            }
            // No row yet: S3 may have been quicker than the recording of the
            // request, which makes the row from S3's answer.
            None if first_delivery => return Err(Failure::Later(RESTORE_REQUEST_AWAITED)),
            _ => {
                tracing::info!(%key, "restore of an object not stored; not announced");
                return Ok("not-found");
            }
        };
        let until = detail
            .restore_expiry_time
            .as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
        let observation = Observation::RestoreCompleted {
            until: until.map(OffsetDateTime::unix_timestamp),
        };
        self.record(user, &key, &observation).await?;
        // Announced in the trace the restore was asked in, when it was
        // traced, linked to the span of S3's event, which carries none.
        let span = tracing::info_span!(
            "restored",
            otel.name = "announce restore",
            stowage.user_id = user,
            stowage.key = %key,
        );
        if let Some(trace) = &requested_in
            && telemetry::continue_trace(&span, trace)
        {
            telemetry::link(&span, &tracing::Span::current());
        }
        // Announced again on a repeat, as the same event: the first delivery
        // may have recorded the restore and failed to publish, and consumers
        // recognise the repeat by its id.
        let event = ObjectRestoredV1 {
            meta: EventMeta {
                event_id: restored_event_id(&self.bucket_name, &key, event_id, detail),
                occurred_at: time,
                ..EventMeta::new(user, span.in_scope(telemetry::current_trace))
            },
            key: key.clone(),
            storage_class: detail
                .source_storage_class
                .clone()
                .unwrap_or_else(|| "GLACIER".to_string()),
            expires_at: until,
            etag: etag.map(str::to_string),
        };
        self.publisher.restored(&event).instrument(span).await?;
        Ok("restored")
    }

    /// [`record`]s `observation` under the user's policy.
    async fn record(
        &self,
        user: &str,
        key: &str,
        observation: &Observation,
    ) -> Result<&'static str, Failure> {
        let days = self.policies.for_user(user).cold_after_days;
        match record(self.projection.as_ref(), user, key, observation, days).await? {
            Recorded::Early => Err(Failure::Later(CREATION_AWAITED)),
            recorded => Ok(recorded.label()),
        }
    }

    /// The key an event means, or `None` when no reading can be named
    /// safely. Unambiguous spellings are taken as they are; otherwise the
    /// readings are resolved against S3, as the ledger resolves them, never
    /// guessed from the projection's rows alone. `object` is `None` for a
    /// delete, and otherwise the event's entity tag, if it has one:
    /// - with an entity tag, the reading S3 holds with it (none: the object
    ///   was replaced or deleted since, and that event counts instead);
    /// - without one, the one reading S3 holds, if only one;
    /// - a delete means a reading the projection has live where S3 now
    ///   holds nothing (where S3 holds another object, its upload's event is
    ///   still to come and replaces the row itself); with none on its first
    ///   delivery, it is judged again ([`DELETE_JUDGED_ON_REDELIVERY`]).
    async fn resolve_key(
        &self,
        raw: &str,
        object: Option<Option<&str>>,
    ) -> Result<Option<String>, Failure> {
        let mut candidates = keys::candidates(raw);
        if candidates.len() == 1 {
            return Ok(Some(candidates.remove(0)));
        }
        let mut heads = Vec::with_capacity(candidates.len());
        for candidate in &candidates {
            heads.push(self.bucket.head(candidate).await?);
        }
        let found = match object {
            Some(Some(etag)) => heads
                .iter()
                .position(|h| h.as_ref().is_some_and(|h| h.etag.as_deref() == Some(etag))),
            Some(None) => {
                let mut held = heads.iter().enumerate().filter(|(_, h)| h.is_some());
                match (held.next(), held.next()) {
                    (Some((i, _)), None) => Some(i),
                    _ => None,
                }
            }
            None => {
                let mut gone = None;
                for (i, (candidate, head)) in candidates.iter().zip(&heads).enumerate() {
                    let Some(user) = keys::owner(candidate).filter(|_| head.is_none()) else {
                        continue;
                    };
                    let row = self.projection.get(user, candidate).await?;
                    if row.is_some_and(|row| row.record.live) {
                        gone = Some(i);
                        break;
                    }
                }
                gone
            }
        };
        Ok(found.map(|i| candidates.swap_remove(i)))
    }
}

/// The `event_id` of the `ObjectRestored.v1` announcing the restore S3
/// reported in `detail` of `key` in `bucket`: a name-based UUID (version 8,
/// SHA-256, as RFC 9562 describes it) of the object version and the
/// restore's expiry, so that every delivery of the restore's completion (a
/// redelivery, a replay of the archive, a duplicate from S3) is announced
/// under one id, and a later restore of the same version under another.
/// Without an expiry, the EventBridge id of the delivery (`event_id`) tells
/// restores apart instead.
pub(crate) fn restored_event_id(
    bucket: &str,
    key: &str,
    event_id: &str,
    detail: &RestoreCompletedDetail,
) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let object = &detail.object;
    let mut name = Sha256::new();
    for part in [
        "ObjectRestored.v1",
        bucket,
        key,
        object.version_id.as_deref().unwrap_or(""),
        object.etag.as_deref().unwrap_or("").trim_matches('"'),
        detail.restore_expiry_time.as_deref().unwrap_or(event_id),
    ] {
        // Each part with its length, so that no two lists of parts read
        // alike.
        name.update((part.len() as u64).to_be_bytes());
        name.update(part.as_bytes());
    }
    let digest = name.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// What [`record`] did with an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    Applied,
    Duplicate,
    Stale,
    Unchanged,
    /// Nothing written: a change of class of an object with no row yet.
    Early,
}

impl Recorded {
    /// The outcome as logs and metrics name it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
            Self::Unchanged => "unchanged",
            Self::Early => CREATION_AWAITED,
        }
    }
}

/// Applies `observation` to `key`'s row with a conditional write,
/// re-reading on conflicts, and indexes the row by the date it becomes due
/// under a policy of `days`.
pub(crate) async fn record(
    projection: &dyn Projection,
    user: &str,
    key: &str,
    observation: &Observation,
    days: u32,
) -> anyhow::Result<Recorded> {
    for attempt in 0..MAX_ATTEMPTS {
        let current = projection.get(user, key).await?;
        let record = match apply(current.as_ref().map(|c| &c.record), observation) {
            Change::Apply(record) => *record,
            Change::Duplicate => return Ok(Recorded::Duplicate),
            Change::Stale => return Ok(Recorded::Stale),
            Change::Unchanged => return Ok(Recorded::Unchanged),
            Change::Early => return Ok(Recorded::Early),
        };
        match projection
            .put(
                user,
                key,
                &record,
                record.due_at(days),
                current.map(|c| c.version),
            )
            .await
        {
            Ok(()) => return Ok(Recorded::Applied),
            Err(error) if error.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(2 << attempt.min(6))).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(anyhow::anyhow!("the row of {key} kept changing"))
}

impl Handler for EventHandler {
    async fn handle(&self, delivery: &Delivery) -> Disposition {
        match self
            .dispatch(&delivery.body, delivery.receive_count <= 1)
            .await
        {
            Ok(outcome) => {
                tracing::info!(message_id = %delivery.message_id, outcome, "event handled");
                Disposition::Done(outcome)
            }
            Err(Failure::Poison(reason)) => Disposition::Poison(reason),
            Err(Failure::Transient(error)) => Disposition::Retry(error),
            Err(Failure::Later(label)) => Disposition::Later(label),
        }
    }
}

//! Handles one message from the ledger's queue: an S3 object event becomes a
//! conditional write of the object's row and its owner's totals, then a
//! `UsageChanged.v1`; an `UploadGranted.v1` is remembered for its key.
//!
//! Every outcome has one name, logged here: `applied`, `duplicate`, `stale`,
//! `not-a-user-key`, `other-bucket`, `grant-recorded`, and poison messages.

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, UpDownCounter},
};
use std::{sync::Arc, time::Duration};

use stowage_events::{
    EventMeta, RawEnvelope, StowageEvent, UploadGrantedV1, UsageChangedV1,
    s3::{self, ObjectEventDetail},
    stowage::{ObjectChange, UploadViolation},
};
use stowage_shared::{
    consumer::{Delivery, Disposition, Handler},
    telemetry,
};
use time::OffsetDateTime;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{
    domain::{
        keys,
        sequencer::Sequencer,
        usage::{Change, DEFAULT_STORAGE_CLASS, Decision, ObjectEvent, ObjectRow, Usage, decide},
    },
    ports::{GrantNote, LedgerStore, ObjectHead, ObjectProbe, Snapshot, UsagePublisher},
};

/// Conflicting writers on one user's totals retry this many times before the
/// message is left for redelivery.
const MAX_COMMIT_ATTEMPTS: u32 = 25;

/// The ledger's message handler.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn LedgerStore>,
    probe: Arc<dyn ObjectProbe>,
    publisher: Arc<dyn UsagePublisher>,
    bucket: String,
    /// `stowage.ledger.violations`: uploads that broke their grant, by kind.
    violations: Counter<u64>,
    /// `stowage.ledger.bytes`: the change of the bytes stored, by storage
    /// class, added up over every change this process applied.
    bytes: UpDownCounter<i64>,
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
        publisher: Arc<dyn UsagePublisher>,
        bucket: &str,
    ) -> Self {
        Self {
            store,
            probe,
            publisher,
            bucket: bucket.to_string(),
            violations: global::meter("stowage")
                .u64_counter("stowage.ledger.violations")
                .with_description("Uploads counted that arrived without a grant or larger than it")
                .build(),
            bytes: global::meter("stowage")
                .i64_up_down_counter("stowage.ledger.bytes")
                .with_description(
                    "Bytes stored, by storage class, as changed by the changes this process applied",
                )
                .with_unit("By")
                .build(),
        }
    }

    async fn dispatch(&self, body: &str) -> Result<&'static str, Failure> {
        let envelope = RawEnvelope::parse(body).map_err(|e| Failure::Poison(e.to_string()))?;
        let poison = |e: stowage_events::envelope::DecodeError| Failure::Poison(e.to_string());
        match (envelope.source.as_str(), envelope.detail_type.as_str()) {
            (
                s3::SOURCE,
                s3::OBJECT_CREATED | s3::OBJECT_DELETED | s3::OBJECT_STORAGE_CLASS_CHANGED,
            ) => {
                let event = envelope.decode::<ObjectEventDetail>().map_err(poison)?;
                self.apply_object_event(&event.detail_type, event.time, &event.detail)
                    .await
            }
            (UploadGrantedV1::SOURCE, detail_type)
                if detail_type == UploadGrantedV1::detail_type() =>
            {
                let grant = envelope.decode::<UploadGrantedV1>().map_err(poison)?.detail;
                self.store
                    .record_grant(&GrantNote {
                        user_id: grant.meta.user_id,
                        key: grant.key,
                        grant_id: grant.grant_id.to_string(),
                        max_size: grant.max_size,
                        expires_at: grant.expires_at.unix_timestamp(),
                        trace: grant.meta.trace,
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

    /// Reads what the event says happened to the object.
    fn change_of(detail_type: &str, detail: &ObjectEventDetail) -> Result<Change, Failure> {
        let object = &detail.object;
        match detail_type {
            s3::OBJECT_CREATED => Ok(Change::Created {
                size: object
                    .size
                    .ok_or_else(|| Failure::Poison("Object Created without a size".into()))?,
                etag: object.etag.clone(),
                storage_class: DEFAULT_STORAGE_CLASS.to_string(),
            }),
            s3::OBJECT_STORAGE_CLASS_CHANGED => Ok(Change::ClassChanged {
                size: object.size,
                etag: object.etag.clone(),
                storage_class: detail.destination_storage_class.clone().ok_or_else(|| {
                    Failure::Poison(
                        "Object Storage Class Changed without a destination class".into(),
                    )
                })?,
            }),
            _ => Ok(Change::Deleted),
        }
    }

    async fn apply_object_event(
        &self,
        detail_type: &str,
        time: OffsetDateTime,
        detail: &ObjectEventDetail,
    ) -> Result<&'static str, Failure> {
        if detail.bucket.name != self.bucket {
            return Ok("other-bucket");
        }
        let sequencer = Sequencer::parse(&detail.object.sequencer).map_err(Failure::Poison)?;
        let mut change = Self::change_of(detail_type, detail)?;
        let (key, head) = self.resolve_key(&detail.object.key, &change).await?;
        let Some(user) = keys::owner(&key) else {
            tracing::warn!(%key, "object outside users/<id>/ is not counted");
            return Ok("not-a-user-key");
        };
        let reason = detail.reason.as_deref().unwrap_or("");
        if let Change::Created {
            etag,
            storage_class,
            ..
        } = &mut change
            && !POST_UPLOADS.contains(&reason)
        {
            // Only browser uploads are bound to STANDARD by their policy;
            // copies and API uploads may name another class, which S3's
            // event does not carry.
            let head = match head {
                Some(head) => Some(head),
                None => self.probe.head(&key).await?,
            };
            if let Some(head) =
                head.filter(|h| h.etag.as_deref() == etag.as_deref().map(|e| e.trim_matches('"')))
            {
                *storage_class = head.storage_class;
            }
        }
        let user_upload =
            USER_UPLOADS.contains(&reason) && matches!(change, Change::Created { .. });
        let event = ObjectEvent { change, sequencer };
        let first = self
            .store
            .snapshot(user, &key)
            .await
            .map_err(|e| Failure::Transient(e.into()))?;
        let grant = first
            .grant
            .as_ref()
            .filter(|g| user_upload && !expired(g, time));
        let span = apply_span(user, &key, grant);
        self.settle(user, &key, &event, user_upload, time, first)
            .instrument(span)
            .await
    }

    /// Applies `event` to `key`'s row and `user`'s totals, starting from
    /// the `first` snapshot and reading again after a conflicting write,
    /// then announces the totals.
    async fn settle(
        &self,
        user: &str,
        key: &str,
        event: &ObjectEvent,
        user_upload: bool,
        time: OffsetDateTime,
        first: Snapshot,
    ) -> Result<&'static str, Failure> {
        let mut next = Some(first);
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            let snapshot = match next.take() {
                Some(snapshot) => snapshot,
                None => self
                    .store
                    .snapshot(user, key)
                    .await
                    .map_err(|e| Failure::Transient(e.into()))?,
            };
            let grant = snapshot.grant.as_ref();
            match decide(snapshot.object.as_ref(), &snapshot.usage, event) {
                Decision::Stale => return Ok("stale"),
                Decision::Duplicate => {
                    // The first delivery may have committed and then failed to
                    // publish; publishing the current totals again is harmless.
                    if let Some(row) = &snapshot.object {
                        self.publish(user, key, row, &snapshot.usage, grant, None)
                            .await?;
                    }
                    return Ok("duplicate");
                }
                Decision::Apply { object, usage } => {
                    match self
                        .store
                        .commit(user, key, &snapshot, &object, &usage)
                        .await
                    {
                        Ok(()) => {
                            self.count_bytes(&snapshot.usage, &usage);
                            let violation = user_upload
                                .then(|| violation(grant, object.size, time))
                                .flatten();
                            if let Some(violation) = violation {
                                let kind = match violation {
                                    UploadViolation::NoGrant => "no_grant",
                                    UploadViolation::ExceedsGrant => "exceeds_grant",
                                };
                                self.violations.add(1, &[KeyValue::new("kind", kind)]);
                                tracing::warn!(%key, size = object.size, ?violation, grant = ?grant.map(|g| &g.grant_id), "upload broke its grant; counted all the same");
                            }
                            self.publish(user, key, &object, &usage, grant, violation)
                                .await?;
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

    /// The key an event means, with what S3 holds there when that was asked.
    /// Unambiguous spellings are taken as they are; otherwise the reading S3
    /// holds with the event's etag wins, then a reading the ledger already has
    /// a row for, then the likeliest.
    async fn resolve_key(
        &self,
        raw: &str,
        change: &Change,
    ) -> Result<(String, Option<ObjectHead>), Failure> {
        let mut candidates = keys::candidates(raw);
        if candidates.len() == 1 {
            return Ok((candidates.remove(0), None));
        }
        if let Change::Created {
            etag: Some(etag), ..
        } = change
        {
            for candidate in &candidates {
                if let Some(head) = self.probe.head(candidate).await?
                    && head.etag.as_deref() == Some(etag.trim_matches('"'))
                {
                    return Ok((candidate.clone(), Some(head)));
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
                    return Ok((candidate.clone(), None));
                }
            }
        }
        Ok((candidates.remove(0), None))
    }

    /// Adds what one applied change did to the bytes of each storage class.
    fn count_bytes(&self, before: &Usage, after: &Usage) {
        let classes: std::collections::BTreeSet<&String> = before
            .by_storage_class
            .keys()
            .chain(after.by_storage_class.keys())
            .collect();
        for class in classes {
            let bytes = |usage: &Usage| {
                usage
                    .by_storage_class
                    .get(class)
                    .map_or(0, |b| i64::try_from(*b).unwrap_or(i64::MAX))
            };
            let change = bytes(after) - bytes(before);
            if change != 0 {
                self.bytes
                    .add(change, &[KeyValue::new("storage_class", class.clone())]);
            }
        }
    }

    async fn publish(
        &self,
        user: &str,
        key: &str,
        row: &ObjectRow,
        usage: &Usage,
        grant: Option<&GrantNote>,
        violation: Option<UploadViolation>,
    ) -> Result<(), Failure> {
        let event = usage_changed(
            user,
            key,
            Some(row),
            usage,
            grant.and_then(|g| Uuid::parse_str(&g.grant_id).ok()),
            violation,
        );
        self.publisher
            .publish(&event)
            .await
            .map_err(Failure::Transient)
    }
}

/// The `UsageChanged.v1` announcing `usage` after `key` became `row`
/// (`None` when only the totals changed).
pub fn usage_changed(
    user: &str,
    key: &str,
    row: Option<&ObjectRow>,
    usage: &Usage,
    grant_id: Option<Uuid>,
    violation: Option<UploadViolation>,
) -> UsageChangedV1 {
    let live = row.filter(|r| r.live);
    UsageChangedV1 {
        meta: EventMeta::new(user, telemetry::current_trace()),
        revision: usage.revision,
        used_bytes: usage.used_bytes,
        object_count: usage.object_count,
        by_storage_class: usage.by_storage_class.clone(),
        key: key.to_string(),
        change: if live.is_some() {
            ObjectChange::Created
        } else {
            ObjectChange::Deleted
        },
        object_size: live.map(|r| r.size),
        storage_class: live.map(|r| r.storage_class.clone()),
        grant_id,
        violation,
    }
}

/// The `reason` of an upload through a signed POST policy, as S3 spells it
/// and as LocalStack does.
const POST_UPLOADS: [&str; 2] = ["POST Object", "PostObject"];
/// Reasons that mean a user uploaded the object (as opposed to a copy made by
/// the system, such as tiering).
const USER_UPLOADS: [&str; 4] = [
    "POST Object",
    "PostObject",
    "PutObject",
    "CompleteMultipartUpload",
];
/// An upload may reach S3 this long after its grant's expiry was checked.
const GRANT_EXPIRY_SLACK_SECONDS: i64 = 300;

/// Whether an upload at `time` came too late for `grant`.
fn expired(grant: &GrantNote, time: OffsetDateTime) -> bool {
    grant.expires_at + GRANT_EXPIRY_SLACK_SECONDS < time.unix_timestamp()
}

/// The span an S3 event is applied in. An upload under a live grant joins
/// the trace the grant was issued in (intake's request span), linked to the
/// span of the message S3's event came in; anything else stays in the
/// message's span.
fn apply_span(user: &str, key: &str, grant: Option<&GrantNote>) -> tracing::Span {
    let span = tracing::info_span!(
        "apply",
        otel.name = "apply object event",
        stowage.user_id = user,
        stowage.key = key,
        stowage.grant_id = grant.map(|g| g.grant_id.as_str()),
    );
    if let Some(grant) = grant
        && telemetry::continue_trace(&span, &grant.trace)
    {
        telemetry::link(&span, &tracing::Span::current());
    }
    span
}

/// How an upload of `size` bytes at `time` broke its grant, if it did.
fn violation(
    grant: Option<&GrantNote>,
    size: u64,
    time: OffsetDateTime,
) -> Option<UploadViolation> {
    match grant {
        Some(g) if expired(g, time) => Some(UploadViolation::NoGrant),
        Some(g) if size > g.max_size => Some(UploadViolation::ExceedsGrant),
        Some(_) => None,
        None => Some(UploadViolation::NoGrant),
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

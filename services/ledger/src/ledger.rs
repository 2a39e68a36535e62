//! Handles the messages of the ledger's queue: an S3 object event becomes a
//! conditional write of the object's row and its owner's totals, then a
//! `UsageChanged.v1`; an `UploadGranted.v1` is remembered for its key.
//!
//! The messages of one receive are handled together: their rows are read in
//! one request, every user's changes are folded in message order and written
//! in one transaction conditioned on every row read (so the result is the
//! one applying them one by one would give), and their `UsageChanged.v1`
//! are published in one request. When the transaction loses a race, each
//! user's changes are read and written again on their own.
//!
//! Every outcome has one name, logged here: `applied`, `duplicate`, `stale`,
//! `superseded`, `not-a-user-key`, `other-bucket`, `grant-recorded`, and
//! poison messages.

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, UpDownCounter},
};
use std::{collections::HashMap, sync::Arc, time::Duration};

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
use tokio::time::Instant;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{
    domain::{
        keys,
        sequencer::Sequencer,
        usage::{
            Change, DEFAULT_STORAGE_CLASS, Decision, ObjectEvent, ObjectRow, Usage, decide_holding,
            unquoted,
        },
    },
    ports::{
        GrantNote, LedgerStore, MAX_KEY_BYTES, ObjectCommit, ObjectHead, ObjectProbe, Snapshot,
        UsagePublisher, UserCommit,
    },
};

/// Conflicting writers on one user's totals retry this many times before the
/// message is left for redelivery.
const MAX_COMMIT_ATTEMPTS: u32 = 25;

/// Items per DynamoDB transaction, DynamoDB's limit.
const MAX_TRANSACTION_ITEMS: usize = 100;

/// The consumer's visibility timeout unless told otherwise.
const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// How long an upload of a key whose spelling reads two ways may be
    /// counted on what S3 answered for it: half the queue's visibility
    /// timeout, so that its transaction, sent within that, is written before
    /// a delete of the key that found nothing counted comes back
    /// ([`DELETE_JUDGED_ON_REDELIVERY`]).
    s3_read_valid: Duration,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// The outcome of a change of storage class S3 reported before the ledger
/// applied its object's creation (S3's events may come in any order). The
/// message is left for its next delivery ([`Disposition::Later`]), until
/// the creation is applied; one whose object never comes reaches the
/// dead-letter queue.
pub const CREATION_AWAITED: &str = "creation-awaited";

/// The outcome of a delete of a key whose spelling reads two ways, when no
/// reading is counted as live, on its first delivery. An upload of the key
/// may have been read from S3 before the delete and not be counted yet: S3
/// then no longer holds it, and once counted nothing would take it off. The
/// delete is judged again on its next delivery, a visibility timeout later,
/// by when such an upload is counted (see
/// [`Ledger::with_visibility_timeout`]) and the delete takes it off: the
/// message is left for that delivery ([`Disposition::Later`]).
pub const DELETE_JUDGED_ON_REDELIVERY: &str = "judged-on-redelivery";

/// Why a message was not handled to completion.
enum Failure {
    /// It can never be handled.
    Poison(String),
    /// It may succeed later.
    Transient(anyhow::Error),
    /// It is finished on a later delivery, with this outcome now.
    Later(&'static str),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::Transient(error)
    }
}

/// What a message needs once it is read.
enum Prepared {
    /// Nothing more: the outcome is final.
    Finished(&'static str),
    /// A grant to remember.
    Grant(GrantNote),
    /// An object event to apply.
    Object(Pending),
}

/// An object event, with the key and owner it concerns.
struct Pending {
    user: String,
    key: String,
    event: ObjectEvent,
    /// A user's upload (as opposed to a copy or a transition), held to its grant.
    user_upload: bool,
    /// The object was completed in parts: a user's upload in parts, or
    /// lifecycle's copy of an object above 5 GiB onto itself.
    in_parts: bool,
    time: OffsetDateTime,
    /// When S3 was asked which reading of the key the upload is at, for
    /// an upload of a key whose spelling reads two ways.
    read_at: Option<Instant>,
    /// The span of the message the event came in.
    span: tracing::Span,
}

/// A message handled to the end but for its announcement.
struct Applied {
    label: &'static str,
    /// The `UsageChanged.v1` to publish before the message is done.
    announce: Option<UsageChangedV1>,
}

/// What one event does, folded onto the events of its user before it.
enum Step {
    Stale,
    Early,
    Duplicate {
        row: Option<ObjectRow>,
        usage: Usage,
        grant: Option<GrantNote>,
    },
    Apply {
        row: ObjectRow,
        /// The totals before and after the change.
        before: Usage,
        usage: Usage,
        grant: Option<GrantNote>,
    },
}

/// One user's events folded in order onto the rows as read, and the write
/// that makes it so (`None` when nothing changes).
struct Plan {
    steps: Vec<Step>,
    commit: Option<UserCommit>,
}

impl Plan {
    /// `group` indexes `pending` (one user's events, in order); `snapshots`
    /// are their reads, in the same order.
    fn new(
        group: &[usize],
        pending: &[Pending],
        snapshots: Vec<Snapshot>,
        held: &HashMap<String, Option<String>>,
    ) -> Self {
        let first = &snapshots[0];
        let user = pending[group[0]].user.clone();
        let usage_read = first.usage_exists.then_some(first.usage.revision);
        let mut usage = first.usage.clone();
        // Each key's row as the fold goes, its version as read, and whether
        // the fold changed it.
        let mut rows: Vec<(&str, Option<ObjectRow>, Option<u64>, bool)> = Vec::new();
        let mut steps = Vec::with_capacity(group.len());
        for (&index, snapshot) in group.iter().zip(snapshots.iter()) {
            let Pending {
                key,
                event,
                time,
                user_upload,
                in_parts,
                ..
            } = &pending[index];
            let position = match rows.iter().position(|(k, ..)| k == key) {
                Some(position) => position,
                None => {
                    rows.push((key, snapshot.object.clone(), snapshot.object_version, false));
                    rows.len() - 1
                }
            };
            let row = &mut rows[position];
            // The key's newest grant, unless it was issued after the event:
            // then the upload came under an earlier grant, no longer held.
            let (grant, earlier_grant) = match &snapshot.grant {
                Some(grant) if issued_after(grant, *time) => (None, true),
                grant => (grant.clone(), false),
            };
            let held = held.get(key.as_str()).map(Option::as_deref);
            steps.push(match decide_holding(row.1.as_ref(), &usage, event, held) {
                Decision::Stale => Step::Stale,
                Decision::Early => Step::Early,
                Decision::Duplicate => Step::Duplicate {
                    row: row.1.clone(),
                    usage: usage.clone(),
                    grant,
                },
                Decision::Apply {
                    mut object,
                    usage: after,
                } => {
                    let previous = row.1.as_ref().filter(|p| p.live && p.size == object.size);
                    // The live object, same size, completed in parts into
                    // another class: a transition made by copying the object
                    // onto itself (as lifecycle does above 5 GiB), not an
                    // upload. A single upload of the same size (a file sent
                    // again over its tiered copy) is an upload all the same.
                    let transition = *in_parts
                        && previous.is_some_and(|p| p.storage_class != object.storage_class);
                    // The live object, same size, that no upload brought (a
                    // copy onto itself, a change of class) is the one already
                    // stored.
                    object.reclassified =
                        object.live && previous.is_some() && (transition || !*user_upload);
                    object.revision = after.revision;
                    // A user upload is judged against its grant, unless it
                    // came under one issued before the key's newest, which
                    // the ledger no longer holds.
                    object.violation = (object.live && !object.reclassified && !earlier_grant)
                        .then(|| violation(grant.as_ref(), object.size, *time))
                        .flatten();
                    row.1 = Some(object.clone());
                    row.3 = true;
                    let before = std::mem::replace(&mut usage, after.clone());
                    Step::Apply {
                        row: object,
                        before,
                        usage: after,
                        grant,
                    }
                }
            });
        }
        let objects: Vec<ObjectCommit> = rows
            .into_iter()
            .filter(|(.., changed)| *changed)
            .filter_map(|(key, row, version_read, _)| {
                Some(ObjectCommit {
                    key: key.to_string(),
                    version_read,
                    row: row?,
                })
            })
            .collect();
        let commit = (!objects.is_empty()).then_some(UserCommit {
            user,
            usage_read,
            usage,
            objects,
        });
        Self { steps, commit }
    }
}

/// Records `error` as the result of every event in `indices`.
fn fail<'a>(
    results: &mut [Option<Result<Applied, Failure>>],
    indices: impl IntoIterator<Item = &'a usize>,
    error: &anyhow::Error,
) {
    for &index in indices {
        results[index] = Some(Err(Failure::Transient(anyhow::anyhow!("{error:#}"))));
    }
}

fn finish(results: Vec<Option<Result<Applied, Failure>>>) -> Vec<Result<Applied, Failure>> {
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Failure::Transient(anyhow::anyhow!(
                    "the event was not applied"
                )))
            })
        })
        .collect()
}

fn grant_id(grant: &Option<GrantNote>) -> Option<Uuid> {
    grant
        .as_ref()
        .and_then(|g| Uuid::parse_str(&g.grant_id).ok())
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
            s3_read_valid: DEFAULT_VISIBILITY_TIMEOUT / 2,
        }
    }

    /// The visibility timeout of the queue the ledger consumes (by default
    /// 60 s): a message left for redelivery comes back no sooner.
    #[must_use]
    pub fn with_visibility_timeout(mut self, timeout: Duration) -> Self {
        self.s3_read_valid = timeout / 2;
        self
    }

    /// Reads a message: a grant is returned to be remembered, an object
    /// event ready to apply.
    async fn prepare(&self, body: &str, first_delivery: bool) -> Result<Prepared, Failure> {
        let envelope = RawEnvelope::parse(body).map_err(|e| Failure::Poison(e.to_string()))?;
        let poison = |e: stowage_events::envelope::DecodeError| Failure::Poison(e.to_string());
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
            (UploadGrantedV1::SOURCE, detail_type)
                if detail_type == UploadGrantedV1::detail_type() =>
            {
                let grant = envelope.decode::<UploadGrantedV1>().map_err(poison)?.detail;
                Ok(Prepared::Grant(GrantNote {
                    user_id: grant.meta.user_id,
                    key: grant.key,
                    grant_id: grant.grant_id.to_string(),
                    max_size: grant.max_size,
                    issued_at: grant.meta.occurred_at.unix_timestamp(),
                    expires_at: grant.expires_at.unix_timestamp(),
                    trace: grant.meta.trace,
                }))
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

    /// The key, owner and change an S3 event means.
    async fn object_event(
        &self,
        detail_type: &str,
        time: OffsetDateTime,
        detail: &ObjectEventDetail,
        first_delivery: bool,
    ) -> Result<Prepared, Failure> {
        if detail.bucket.name != self.bucket {
            return Ok(Prepared::Finished("other-bucket"));
        }
        let sequencer = match &detail.object.sequencer {
            Some(sequencer) => Some(Sequencer::parse(sequencer).map_err(Failure::Poison)?),
            None if detail_type == s3::OBJECT_STORAGE_CLASS_CHANGED => None,
            None => {
                return Err(Failure::Poison(format!(
                    "{detail_type} without a sequencer"
                )));
            }
        };
        let mut change = Self::change_of(detail_type, detail)?;
        let asked_at = Instant::now();
        let Some((key, head)) = self.resolve_key(&detail.object.key, &change).await? else {
            if matches!(change, Change::Deleted) && first_delivery {
                return Err(Failure::Later(DELETE_JUDGED_ON_REDELIVERY));
            }
            tracing::debug!(key = %detail.object.key, "no reading of the key holds the event's object: a later event supersedes it");
            return Ok(Prepared::Finished("superseded"));
        };
        let Some(user) = keys::owner(&key).map(str::to_string) else {
            tracing::warn!(%key, "object outside users/<id>/ is not counted");
            return Ok(Prepared::Finished("not-a-user-key"));
        };
        // S3 allows 1024 bytes; this event alone fails, not the others read
        // and written with it.
        if key.len() > MAX_KEY_BYTES {
            return Err(Failure::Poison(format!(
                "a key of {} bytes is longer than the ledger's rows hold ({MAX_KEY_BYTES})",
                key.len()
            )));
        }
        // Only the readings of an ambiguous spelling come with what S3 holds.
        let read_at =
            (matches!(change, Change::Created { .. }) && head.is_some()).then_some(asked_at);
        let reason = detail.reason.as_deref().unwrap_or("");
        // A change of class, and any upload but a browser's (bound to
        // STANDARD by its policy), takes its class from what S3 holds:
        // copies and API uploads may name another class, which S3's event
        // does not carry.
        let from_s3 = match &change {
            Change::ClassChanged { .. } => true,
            Change::Created { .. } => !POST_UPLOADS.contains(&reason),
            Change::Deleted => false,
        };
        if from_s3 {
            let head = match head {
                Some(head) => Some(head),
                None => self.probe.head(&key).await?,
            };
            let event_etag = unquoted(detail.object.etag.as_deref());
            let same_object = |h: &ObjectHead| unquoted(h.etag.as_deref()) == event_etag;
            match &mut change {
                // S3 says what a change of class means: the class its object
                // is in now, as long as S3 still holds that object. Changes
                // of one object may arrive in any order, and S3 gives them
                // no sequencer to tell.
                Change::ClassChanged { .. } => {
                    let Some(held) = head.filter(|h| event_etag.is_none() || same_object(h)) else {
                        return Ok(Prepared::Finished("superseded"));
                    };
                    change = Change::ClassChanged {
                        size: Some(held.size),
                        etag: unquoted(held.etag.as_deref()).map(str::to_string),
                        storage_class: held.storage_class,
                    };
                }
                Change::Created { storage_class, .. } => {
                    if let Some(held) = head.filter(same_object) {
                        *storage_class = held.storage_class;
                    }
                }
                Change::Deleted => {}
            }
        }
        let user_upload =
            USER_UPLOADS.contains(&reason) && matches!(change, Change::Created { .. });
        Ok(Prepared::Object(Pending {
            user,
            key,
            event: ObjectEvent { change, sequencer },
            user_upload,
            in_parts: reason == IN_PARTS,
            time,
            read_at,
            span: tracing::Span::current(),
        }))
    }

    /// Applies object events: reads their rows together, folds each user's
    /// events in order, and writes every user's rows in one transaction
    /// (after a lost race, each user's on their own, read again). One result
    /// per event, in order.
    async fn apply_all(&self, pending: &[Pending]) -> Vec<Result<Applied, Failure>> {
        let mut results: Vec<Option<Result<Applied, Failure>>> =
            pending.iter().map(|_| None).collect();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (index, event) in pending.iter().enumerate() {
            match groups.iter_mut().find(|g| pending[g[0]].user == event.user) {
                Some(group) => group.push(index),
                None => groups.push(vec![index]),
            }
        }
        let mut together = true;
        let mut read_at: Vec<Option<Instant>> = pending.iter().map(|p| p.read_at).collect();
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            if attempt > 0 {
                self.read_again(&mut groups, pending, &mut read_at, &mut results)
                    .await;
            }
            if groups.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(2 << attempt.min(6))).await;
            }
            let wanted: Vec<(&str, &str)> = groups
                .iter()
                .flatten()
                .map(|&i| (pending[i].user.as_str(), pending[i].key.as_str()))
                .collect();
            let snapshots = match self.store.snapshots(&wanted).await {
                Ok(snapshots) if snapshots.len() == wanted.len() => snapshots,
                Ok(_) => {
                    let error = anyhow::anyhow!("the store answered a different number of reads");
                    fail(&mut results, groups.iter().flatten(), &error);
                    return finish(results);
                }
                Err(error) => {
                    fail(&mut results, groups.iter().flatten(), &error.into());
                    return finish(results);
                }
            };
            let held = match self.held_at_ties(&groups, pending, &snapshots).await {
                Ok(held) => held,
                Err(error) => {
                    fail(&mut results, groups.iter().flatten(), &error);
                    return finish(results);
                }
            };
            let mut snapshots = snapshots.into_iter();
            let plans: Vec<Plan> = groups
                .iter()
                .map(|group| {
                    let snapshots = snapshots.by_ref().take(group.len()).collect();
                    Plan::new(group, pending, snapshots, &held)
                })
                .collect();
            let (writing, settled): (Vec<_>, Vec<_>) = groups
                .into_iter()
                .zip(plans)
                .partition(|(_, plan)| plan.commit.is_some());
            for (group, plan) in settled {
                self.settle(&mut results, pending, &group, plan);
            }
            // An upload of an ambiguous key is written only while what S3
            // said of it is recent (see `s3_read_valid`); otherwise S3 is
            // asked again and its user's rows read again.
            let (writing, outdated): (Vec<_>, Vec<_>) = writing
                .into_iter()
                .partition(|(group, _)| group.iter().all(|&i| self.recent(read_at[i])));
            groups = outdated.into_iter().map(|(group, _)| group).collect();
            if writing.is_empty() {
                continue;
            }
            // Together: as many users per transaction as its item limit
            // allows (a receive's 10 events write at most 20 items).
            let mut commits: Vec<Vec<UserCommit>> = Vec::new();
            let mut items = 0;
            for commit in writing.iter().filter_map(|(_, p)| p.commit.clone()) {
                let size = commit.objects.len() + 1;
                match commits.last_mut() {
                    Some(last) if together && items + size <= MAX_TRANSACTION_ITEMS => {
                        last.push(commit);
                        items += size;
                    }
                    _ => {
                        commits.push(vec![commit]);
                        items = size;
                    }
                }
            }
            let outcomes = futures::future::join_all(
                commits.iter().map(|commits| self.store.commit_all(commits)),
            )
            .await;
            // Each transaction covers the next users of `writing`, in order.
            let mut writing = writing.into_iter();
            for (commits, outcome) in commits.iter().zip(outcomes) {
                let users: Vec<_> = writing.by_ref().take(commits.len()).collect();
                match outcome {
                    Ok(()) => {
                        for (group, plan) in users {
                            self.settle(&mut results, pending, &group, plan);
                        }
                    }
                    Err(error) if error.is_retryable() => {
                        together = false;
                        groups.extend(users.into_iter().map(|(group, _)| group));
                    }
                    Err(error) => {
                        let error = error.into();
                        fail(&mut results, users.iter().flat_map(|(g, _)| g), &error);
                    }
                }
            }
        }
        for group in &groups {
            let error = anyhow::anyhow!(
                "the rows of {} kept changing, or what S3 said of its uploads kept going stale",
                pending[group[0]].user
            );
            fail(&mut results, group, &error);
        }
        finish(results)
    }

    /// Whether what S3 said at `read_at` may still be counted on.
    fn recent(&self, read_at: Option<Instant>) -> bool {
        read_at.is_none_or(|at| at.elapsed() < self.s3_read_valid)
    }

    /// Asks S3 again about each upload in `groups` whose reading is no
    /// longer [`Self::recent`]: one S3 still holds is read as of now, one it
    /// no longer holds is superseded (the event that replaced or deleted
    /// it counts) and leaves its group.
    async fn read_again(
        &self,
        groups: &mut Vec<Vec<usize>>,
        pending: &[Pending],
        read_at: &mut [Option<Instant>],
        results: &mut [Option<Result<Applied, Failure>>],
    ) {
        for group in groups.iter_mut() {
            for &index in group.iter() {
                if self.recent(read_at[index]) {
                    continue;
                }
                let Pending { key, event, .. } = &pending[index];
                let asked_at = Instant::now();
                match self.probe.head(key).await {
                    Ok(head) => {
                        // An upload without an entity tag means the one
                        // reading S3 holds.
                        let etag = match &event.change {
                            Change::Created { etag, .. } => unquoted(etag.as_deref()),
                            _ => None,
                        };
                        if head
                            .is_some_and(|h| etag.is_none() || unquoted(h.etag.as_deref()) == etag)
                        {
                            read_at[index] = Some(asked_at);
                        } else {
                            results[index] = Some(Ok(Applied {
                                label: "superseded",
                                announce: None,
                            }));
                        }
                    }
                    Err(error) => {
                        fail(results, group.iter(), &error);
                        break;
                    }
                }
            }
            group.retain(|&i| results[i].is_none());
        }
        groups.retain(|group| !group.is_empty());
    }

    /// What S3 holds (the entity tag, or nothing) at each key where two
    /// different events share a sequencer: one read and the row, or two in
    /// this batch. Only the emulators send such events (they give every
    /// event of a key one sequencer); S3 then says which of them stands.
    async fn held_at_ties(
        &self,
        groups: &[Vec<usize>],
        pending: &[Pending],
        snapshots: &[Snapshot],
    ) -> anyhow::Result<HashMap<String, Option<String>>> {
        let indices: Vec<usize> = groups.iter().flatten().copied().collect();
        let mut held = HashMap::new();
        for (position, &index) in indices.iter().enumerate() {
            let Pending { key, event, .. } = &pending[index];
            let Some(sequencer) = &event.sequencer else {
                continue;
            };
            let fingerprint = event.fingerprint();
            let with_row = snapshots[position].object.as_ref().is_some_and(|row| {
                &row.sequencer == sequencer && !row.applied.contains(&fingerprint)
            });
            let with_another = indices.iter().any(|&other| {
                let other = &pending[other];
                &other.key == key
                    && other.event.sequencer.as_ref() == Some(sequencer)
                    && other.event.fingerprint() != fingerprint
            });
            if (with_row || with_another) && !held.contains_key(key) {
                let head = self.probe.head(key).await?;
                let etag = head.and_then(|h| unquoted(h.etag.as_deref()).map(str::to_string));
                held.insert(key.clone(), etag);
            }
        }
        Ok(held)
    }

    /// Turns a written (or write-free) plan into its events' results.
    fn settle(
        &self,
        results: &mut [Option<Result<Applied, Failure>>],
        pending: &[Pending],
        group: &[usize],
        plan: Plan,
    ) {
        for (&index, step) in group.iter().zip(plan.steps) {
            let Pending {
                user,
                key,
                time,
                span,
                ..
            } = &pending[index];
            let applied = match step {
                Step::Stale => Applied {
                    label: "stale",
                    announce: None,
                },
                Step::Early => {
                    results[index] = Some(Err(Failure::Later(CREATION_AWAITED)));
                    continue;
                }
                // The first delivery may have committed and then failed to
                // publish; publishing the current totals again is harmless.
                // The row says whether it was an upload, unless S3 changed
                // the object's class since (then it names no grant). The
                // announcement joins the upload's trace as the first did.
                // While the totals are those the row's last change made, it
                // tells what that change's announcement told, its violation
                // included; after other changes, it is a repeat (see
                // `UsageChangedV1::repeated`).
                Step::Duplicate { row, usage, grant } => Applied {
                    label: "duplicate",
                    announce: row.map(|row| {
                        let apply =
                            span.in_scope(|| apply_span(user, key, &row, grant.as_ref(), *time));
                        let repeated = row.revision == 0 || row.revision != usage.revision;
                        apply.in_scope(|| UsageChangedV1 {
                            repeated,
                            ..usage_changed(
                                user,
                                key,
                                Some(&row),
                                &usage,
                                grant_id(&grant),
                                row.violation.filter(|_| !repeated),
                                Some(*time),
                            )
                        })
                    }),
                },
                Step::Apply {
                    row,
                    before,
                    usage,
                    grant,
                } => {
                    self.count_bytes(&before, &usage);
                    let apply =
                        span.in_scope(|| apply_span(user, key, &row, grant.as_ref(), *time));
                    let _entered = apply.enter();
                    let violation = row.violation;
                    if let Some(violation) = violation {
                        self.violations
                            .add(1, &[KeyValue::new("kind", violation.as_str())]);
                        tracing::warn!(%key, size = row.size, ?violation, grant = ?grant.as_ref().map(|g| &g.grant_id), "upload broke its grant; counted all the same");
                    }
                    Applied {
                        label: "applied",
                        announce: Some(usage_changed(
                            user,
                            key,
                            Some(&row),
                            &usage,
                            grant_id(&grant),
                            violation,
                            Some(*time),
                        )),
                    }
                }
            };
            results[index] = Some(Ok(applied));
        }
    }

    /// The key an event means, with what S3 holds there when that was asked,
    /// or `None` when no reading can be named safely, because a later event
    /// of the key supersedes this one or there is nothing left to do.
    ///
    /// Unambiguous spellings are taken as they are. Otherwise the readings
    /// are resolved against S3, never guessed from the ledger's rows alone:
    /// a guess could move one key's event onto another key of the same user,
    /// and sequencers of different keys say nothing of their order.
    /// - An event with an entity tag means the reading S3 holds with that
    ///   tag. When none does, its object has since been replaced or deleted
    ///   under its key, and the event that did so is the one that counts.
    /// - A delete means a reading the ledger counts as live where S3 now
    ///   holds nothing. When there is none on its second delivery (on the
    ///   first, an upload of the key may be on its way to being counted:
    ///   [`DELETE_JUDGED_ON_REDELIVERY`]), the delete has nothing left to do: where S3 holds another object than the one counted, the upload
    ///   that stored it is still to come and replaces the counted one itself
    ///   (a delete taken for that reading could be another key's, and its
    ///   sequencer would say nothing of the upload's); an upload the delete
    ///   came before is counted only if S3 still holds it (above).
    /// - A change of class without an entity tag means the one reading S3
    ///   holds, if only one.
    async fn resolve_key(
        &self,
        raw: &str,
        change: &Change,
    ) -> Result<Option<(String, Option<ObjectHead>)>, Failure> {
        let mut candidates = keys::candidates(raw);
        if candidates.len() == 1 {
            return Ok(Some((candidates.remove(0), None)));
        }
        let mut heads = Vec::with_capacity(candidates.len());
        for candidate in &candidates {
            heads.push(self.probe.head(candidate).await?);
        }
        let found = match change {
            Change::Created {
                etag: Some(etag), ..
            }
            | Change::ClassChanged {
                etag: Some(etag), ..
            } => {
                let etag = unquoted(Some(etag));
                heads.iter().position(|h| {
                    h.as_ref()
                        .is_some_and(|h| unquoted(h.etag.as_deref()) == etag)
                })
            }
            Change::Deleted => self.deleted_reading(&candidates, &heads).await?,
            Change::Created { etag: None, .. } | Change::ClassChanged { etag: None, .. } => {
                let mut held = heads.iter().enumerate().filter(|(_, h)| h.is_some());
                match (held.next(), held.next()) {
                    (Some((i, _)), None) => Some(i),
                    _ => None,
                }
            }
        };
        Ok(found.map(|i| (candidates.swap_remove(i), heads.swap_remove(i))))
    }

    /// The reading of an ambiguous key a delete means: the first the ledger
    /// counts as live where S3 holds nothing.
    async fn deleted_reading(
        &self,
        candidates: &[String],
        heads: &[Option<ObjectHead>],
    ) -> Result<Option<usize>, Failure> {
        for (i, (candidate, head)) in candidates.iter().zip(heads).enumerate() {
            // A reading too long for a row is counted nowhere.
            let Some(user) = keys::owner(candidate)
                .filter(|_| head.is_none() && candidate.len() <= MAX_KEY_BYTES)
            else {
                continue;
            };
            let snapshot = self
                .store
                .snapshot(user, candidate)
                .await
                .map_err(|e| Failure::Transient(e.into()))?;
            if snapshot.object.is_some_and(|row| row.live) {
                return Ok(Some(i));
            }
        }
        Ok(None)
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
}

/// The `UsageChanged.v1` announcing `usage` after `key` became `row`
/// (`None` when only the totals changed), by an event S3 sent at
/// `uploaded_at` when it stored an object. A row that is not an upload's
/// names neither grant nor upload time.
pub fn usage_changed(
    user: &str,
    key: &str,
    row: Option<&ObjectRow>,
    usage: &Usage,
    grant_id: Option<Uuid>,
    violation: Option<UploadViolation>,
    uploaded_at: Option<OffsetDateTime>,
) -> UsageChangedV1 {
    let live = row.filter(|r| r.live);
    let reclassified = live.is_some_and(|r| r.reclassified);
    // Only an upload comes under a grant, at a time S3 stored it.
    let upload = live.is_some() && !reclassified;
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
        grant_id: grant_id.filter(|_| upload),
        uploaded_at: uploaded_at.filter(|_| upload),
        violation,
        repeated: false,
        reclassified,
    }
}

/// The `reason` of an upload through a signed POST policy, as S3 spells it
/// and as LocalStack does.
const POST_UPLOADS: [&str; 2] = ["POST Object", "PostObject"];
/// Reasons that mean a user uploaded the object (as opposed to a copy made by
/// the system, such as tiering).
const USER_UPLOADS: [&str; 4] = ["POST Object", "PostObject", "PutObject", IN_PARTS];
/// The `reason` of an object completed in parts.
const IN_PARTS: &str = "CompleteMultipartUpload";
/// An upload may reach S3 this long after its grant's expiry was checked.
const GRANT_EXPIRY_SLACK_SECONDS: i64 = 300;

/// How far S3's clock may be behind intake's when it stamps an upload.
const GRANT_ISSUE_SLACK_SECONDS: i64 = 10;

/// Whether `grant` was issued after an upload at `time`, so that the upload
/// cannot have come under it.
fn issued_after(grant: &GrantNote, time: OffsetDateTime) -> bool {
    grant.issued_at > time.unix_timestamp() + GRANT_ISSUE_SLACK_SECONDS
}

/// Whether an upload at `time` came too late for `grant`.
fn expired(grant: &GrantNote, time: OffsetDateTime) -> bool {
    grant.expires_at + GRANT_EXPIRY_SLACK_SECONDS < time.unix_timestamp()
}

/// The span an S3 event that left `row` is applied (or announced again) in.
/// A user's upload under a live grant joins the trace the grant was issued
/// in (intake's request span), linked to the span of the message S3's event
/// came in; anything else (the stored object found in another class, an
/// expired grant) stays in the message's span.
fn apply_span(
    user: &str,
    key: &str,
    row: &ObjectRow,
    grant: Option<&GrantNote>,
    time: OffsetDateTime,
) -> tracing::Span {
    let grant = grant.filter(|g| row.live && !row.reclassified && !expired(g, time));
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
        self.handle_batch(std::slice::from_ref(delivery))
            .await
            .pop()
            .unwrap_or_else(|| Disposition::Retry(anyhow::anyhow!("no disposition")))
    }

    async fn handle_batch(&self, deliveries: &[Delivery]) -> Vec<Disposition> {
        let mut results: Vec<Option<Result<Applied, Failure>>> =
            deliveries.iter().map(|_| None).collect();
        let (mut pending, mut owners) = (Vec::new(), Vec::new());
        let (mut grants, mut granters) = (Vec::new(), Vec::new());
        // Read together, so that what S3 says of each is as recent as can be
        // when the batch is written.
        let prepared = futures::future::join_all(deliveries.iter().map(|delivery| {
            self.prepare(&delivery.body, delivery.receive_count <= 1)
                .instrument(delivery.span.clone())
        }))
        .await;
        for (index, prepared) in prepared.into_iter().enumerate() {
            match prepared {
                Ok(Prepared::Finished(label)) => {
                    results[index] = Some(Ok(Applied {
                        label,
                        announce: None,
                    }));
                }
                Ok(Prepared::Grant(grant)) => {
                    grants.push(grant);
                    granters.push(index);
                }
                Ok(Prepared::Object(event)) => {
                    pending.push(event);
                    owners.push(index);
                }
                Err(failure) => results[index] = Some(Err(failure)),
            }
        }
        // The batch's grants are remembered before its uploads are judged.
        if !grants.is_empty() {
            let recorded = self.store.record_grants(&grants).await;
            for (index, outcome) in granters.into_iter().zip(recorded) {
                results[index] = Some(match outcome {
                    Ok(()) => Ok(Applied {
                        label: "grant-recorded",
                        announce: None,
                    }),
                    Err(error) => Err(Failure::Transient(error.into())),
                });
            }
        }
        for (index, result) in owners.into_iter().zip(self.apply_all(&pending).await) {
            results[index] = Some(result);
        }
        let mut results = finish(results);

        // A message is done only once its announcement is out too.
        let (announcing, events): (Vec<usize>, Vec<UsageChangedV1>) = results
            .iter_mut()
            .enumerate()
            .filter_map(|(index, result)| Some((index, result.as_mut().ok()?.announce.take()?)))
            .unzip();
        let published = self.publisher.publish_all(&events).await;
        for (index, outcome) in announcing.into_iter().zip(published) {
            if let Err(error) = outcome {
                results[index] = Err(Failure::Transient(error));
            }
        }

        results
            .into_iter()
            .zip(deliveries)
            .map(|(result, delivery)| match result {
                Ok(Applied { label, .. }) => {
                    delivery.span.in_scope(|| {
                        tracing::info!(message_id = %delivery.message_id, outcome = label, "event handled");
                    });
                    Disposition::Done(label)
                }
                Err(Failure::Poison(reason)) => Disposition::Poison(reason),
                Err(Failure::Transient(error)) => Disposition::Retry(error),
                Err(Failure::Later(label)) => Disposition::Later(label),
            })
            .collect()
    }
}

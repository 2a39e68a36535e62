//! A sweep: finds the due objects through the due index, decides for each
//! whether tiering pays off, copies the ones that do onto themselves in the
//! target class, records every decision, and announces the transitions.
//!
//! [`Sweeper::plan`] does everything but the copies and writes, so an
//! operator sees beforehand what [`Sweeper::run`] would do.
//!
//! Requests: one query per index shard (more only past 1 MB of due rows),
//! one claim per 100 objects to tier (in one request: a transaction, or a
//! conditional `PutItem` for one row; more claims of fewer rows for large
//! objects, so that no claimed object waits behind more than
//! [`CLAIM_AHEAD_BYTES`] of copying), one copy per object tiered (parts plus two above the
//! multipart threshold), one transaction per 100 decisions and one
//! `PutEvents` per 10 transitions. Nothing is read per object that is not
//! due.
//!
//! [`Sweeper::backfill`] brings objects that were stored before the service
//! knew of them (it was deployed later, or its table was lost) into the
//! projection, so that sweeps consider them too.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use opentelemetry::{KeyValue, global, metrics::Counter};
use serde::Serialize;
use stowage_events::{EventMeta, ObjectTieredV1, keys};
use stowage_shared::{pricing::PriceTable, telemetry};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tracing::Instrument;

use crate::{
    domain::{
        plan::{Action, CopyPlan, Decision, FAILED, decide, retry_at},
        policy::{IndexedDays, Policies, Redating},
        projection::{Encryption, ObjectRecord, Restore, STANDARD, TIERED, Verdict},
    },
    handler::{Recorded, record},
    ports::{
        Bucket, CopyError, DueIndex, DueObject, LifecyclePublisher, ObjectHead, Projection,
        Settlement, StoreError, Versioned,
    },
};

/// The row of `row`'s key as S3 was found holding it, `head` (`None`: no
/// object), at `now`, when a copy conditional on the row's entity tag found
/// another object or none: S3's events of the change were not applied (lost
/// past the queues' retention, or still on their way). The row keeps its
/// place in the order of S3's events, so that every event that would have
/// outranked it still does (the one that made what S3 holds among them),
/// and the reads it recorded; the restore and the verdict were the old
/// object's.
fn as_s3_holds(row: &ObjectRecord, head: Option<ObjectHead>, now: i64) -> ObjectRecord {
    let held = match head {
        Some(head) => ObjectRecord::new_object(
            head.size,
            &head.storage_class,
            head.etag.as_deref(),
            &head.encryption,
            head.last_modified.unwrap_or(now),
        ),
        None => ObjectRecord {
            live: false,
            size: 0,
            etag: None,
            encryption: Encryption::Unknown,
            restore: Restore::None,
            verdict: None,
            ..row.clone()
        },
    };
    ObjectRecord {
        sequencer: row.sequencer.clone(),
        applied: row.applied.clone(),
        last_access: row.last_access,
        ..held
    }
}

/// How long a sweep's claim on a row keeps other sweeps from finding it
/// due, from the moment it is claimed: longer than a sweep takes, since a
/// sweep settles its rows when it ends. A sweep that stops before it
/// settles leaves the row due again after it.
const CLAIM_SECONDS: i64 = 24 * 3600;

/// How far the clocks of the hosts that sweep and re-date (a service
/// instance, an operator's machine) may disagree.
const CLOCK_SLACK_SECONDS: i64 = 3600;

/// A due object, the decision on it, and what a sweep would do with it.
type Decided = (DueObject, Decision, PlannedObject);

/// Most rows a sweep claims in one request.
const CLAIM_BATCH: usize = 100;

/// Most bytes of copying a claimed object waits behind. A read of an
/// object after its row is claimed does not stop its copy, so a row is
/// claimed only when the copying ahead of it is short: at most this many
/// bytes, a few seconds of S3's server-side copying.
const CLAIM_AHEAD_BYTES: u64 = 1 << 30;

/// The next objects whose rows to claim in one request, when `free` copy
/// slots are free and copies of `copying` bytes run: at most
/// [`CLAIM_BATCH`]; beyond the first `free` (whose copies start at once),
/// only those with at most [`CLAIM_AHEAD_BYTES`] running or claimed ahead
/// of them. Objects of up to 10 MiB are claimed a hundred at a time.
fn claim_batch(
    waiting: &mut std::iter::Peekable<impl Iterator<Item = Decided>>,
    free: usize,
    copying: u64,
) -> Vec<Decided> {
    let mut batch = Vec::new();
    let mut ahead = copying;
    while batch.len() < CLAIM_BATCH {
        let Some((_, _, planned)) = waiting.peek() else {
            break;
        };
        if batch.len() >= free && ahead > CLAIM_AHEAD_BYTES {
            break;
        }
        ahead = ahead.saturating_add(planned.size);
        batch.extend(waiting.next());
    }
    batch
}

/// A decision and, for a transition, the copy's new entity tag and whether
/// it went in parts, or why it did not happen.
type Copied = (
    DueObject,
    Decision,
    PlannedObject,
    Option<Result<(String, bool), CopyError>>,
);

/// What S3 holds at a key whose copy it refused as archived.
enum Held {
    /// The object the sweep decided on, in this class.
    Archived(String),
    /// Another object, or none (`None`): the row is put right from it.
    Other(Option<ObjectHead>),
    /// Not known, for this reason.
    Unknown(String),
}

/// Objects a backfill looks at, at once.
const BACKFILL_CONCURRENCY: usize = 16;

/// What a backfill found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackfillReport {
    /// Objects listed under the users' folders (`users/<id>/`).
    pub listed: usize,
    /// Rows written: objects the projection did not know, or knew only
    /// from reads.
    pub added: usize,
    /// Objects whose rows S3's events (or an earlier backfill) made already.
    pub known: usize,
    /// Objects deleted between the listing and the look at them.
    pub gone: usize,
}

/// What a backfill did with one listed key.
enum Found {
    Added,
    Known,
    Gone,
}

/// What a sweep would do with one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedObject {
    pub user: String,
    pub key: String,
    pub size: u64,
    pub storage_class: String,
    /// The class the user's policy moves objects to.
    pub target: String,
    /// `tier`, `skip` or `postpone`.
    pub action: &'static str,
    /// `cold`, `too_small`, `costs_more`, `customer_key`, `not_candidate`
    /// or `not_due`.
    pub reason_code: &'static str,
    pub reason: String,
    /// Estimated storage saved per month (USD), when the cost model was
    /// asked; negative when the move would cost more.
    pub monthly_saving_usd: Option<f64>,
    /// What the transition requests cost (USD).
    pub transition_cost_usd: Option<f64>,
    /// When the index said the object was due (RFC 3339).
    pub due_at: String,
    /// The entity tag the copy is conditional on.
    pub etag: Option<String>,
}

/// What the next sweep would do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierPlan {
    /// The time the plan is for (RFC 3339).
    pub at: String,
    pub objects: Vec<PlannedObject>,
    /// Objects to tier, their bytes and their estimated monthly saving.
    pub to_tier: usize,
    pub bytes_to_tier: u64,
    pub monthly_saving_usd: f64,
}

/// What a sweep did with one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweptObject {
    #[serde(flatten)]
    pub planned: PlannedObject,
    /// `tiered`, `skipped`, `postponed`, `changed` (read, overwritten or
    /// deleted since it was planned, or taken by another sweep: left alone)
    /// or `failed` (tried again after a wait that grows with each failure
    /// in a row).
    pub outcome: &'static str,
    /// Why a copy failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a sweep did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepReport {
    pub at: String,
    pub objects: Vec<SweptObject>,
    pub tiered: usize,
    pub tiered_bytes: u64,
    pub monthly_saving_usd: f64,
    pub skipped: usize,
    pub postponed: usize,
    pub changed: usize,
    pub failed: usize,
}

/// How sweeps decide and copy.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub policies: Arc<Policies>,
    pub prices: PriceTable,
    pub copy: CopyPlan,
    /// Days before a skipped object is looked at again.
    pub recheck_days: u32,
    /// Copies in flight at once.
    pub concurrency: usize,
}

/// The sweep's instruments.
#[derive(Debug)]
struct Metrics {
    /// `stowage.lifecycle.tiered_bytes`, by target class.
    tiered_bytes: Counter<u64>,
    /// `stowage.lifecycle.saving_usd`: estimated monthly saving of the
    /// transitions made, by target class.
    saving_usd: Counter<f64>,
    /// `stowage.lifecycle.decisions`, by outcome and reason.
    decisions: Counter<u64>,
}

impl Metrics {
    fn new() -> Self {
        let meter = global::meter("stowage");
        Self {
            tiered_bytes: meter
                .u64_counter("stowage.lifecycle.tiered_bytes")
                .with_description("Bytes moved to an archive class, by target class")
                .with_unit("By")
                .build(),
            saving_usd: meter
                .f64_counter("stowage.lifecycle.saving_usd")
                .with_description(
                    "Estimated monthly storage saving of the transitions made, by target class",
                )
                .with_unit("{USD}")
                .build(),
            decisions: meter
                .u64_counter("stowage.lifecycle.decisions")
                .with_description("Sweep decisions on due objects, by outcome and reason")
                .build(),
        }
    }
}

/// Runs sweeps.
pub struct Sweeper {
    index: Arc<dyn DueIndex>,
    projection: Arc<dyn Projection>,
    bucket: Arc<dyn Bucket>,
    publisher: Arc<dyn LifecyclePublisher>,
    options: SweepOptions,
    metrics: Metrics,
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Tier => "tier",
        Action::Skip => "skip",
        Action::Postpone => "postpone",
    }
}

impl Sweeper {
    pub fn new(
        index: Arc<dyn DueIndex>,
        projection: Arc<dyn Projection>,
        bucket: Arc<dyn Bucket>,
        publisher: Arc<dyn LifecyclePublisher>,
        options: SweepOptions,
    ) -> Self {
        Self {
            index,
            projection,
            bucket,
            publisher,
            options,
            metrics: Metrics::new(),
        }
    }

    /// The due objects at `now` (of `user` only, when given) with the
    /// decision on each.
    async fn decisions(&self, now: i64, user: Option<&str>) -> anyhow::Result<Vec<Decided>> {
        let due = self.index.due(now).await?;
        Ok(due
            .into_iter()
            .filter(|d| user.is_none_or(|u| d.user == u))
            .map(|d| {
                let policy = self.options.policies.for_user(&d.user);
                let decision = decide(
                    &d.row.record,
                    &policy,
                    &self.options.prices,
                    &self.options.copy,
                    now,
                    self.options.recheck_days,
                );
                let record = &d.row.record;
                let planned = PlannedObject {
                    user: d.user.clone(),
                    key: d.key.clone(),
                    size: record.size,
                    storage_class: record.storage_class.clone(),
                    target: decision.target.to_string(),
                    action: action_name(decision.action),
                    reason_code: decision.reason_code,
                    reason: decision.reason.clone(),
                    monthly_saving_usd: decision.estimate.map(|e| e.monthly_saving),
                    transition_cost_usd: decision.estimate.map(|e| e.transition_cost),
                    due_at: rfc3339(d.due_at),
                    etag: record.etag.clone(),
                };
                (d, decision, planned)
            })
            .collect())
    }

    /// Claims the rows of `batch`, objects the sweep copies at once, at
    /// `now`: each row is written as the sweep read it, at the next version
    /// and due only after [`CLAIM_SECONDS`] (so that other sweeps do not
    /// find it due meanwhile), if it is still at the version read, in one
    /// request. A row changed since (a read re-dates it, an upload replaces
    /// it) or claimed by another sweep is left alone, for the next sweep to
    /// decide on afresh. Pairs each object with whether its row is claimed
    /// (at `due.row.version + 1`).
    async fn claim(&self, batch: Vec<Decided>, now: i64) -> Vec<(Decided, Result<(), CopyError>)> {
        let rows: Vec<&DueObject> = batch.iter().map(|(due, ..)| due).collect();
        let mut claims = self
            .projection
            .claim(&rows, now.saturating_add(CLAIM_SECONDS))
            .await
            .into_iter();
        batch
            .into_iter()
            .map(|decided| {
                let claim = match claims.next() {
                    Some(Ok(())) => Ok(()),
                    Some(Err(StoreError::Conflict)) | None => Err(CopyError::Changed),
                    // Not claimed: the row stays due, for the next sweep.
                    Some(Err(error)) => Err(CopyError::NotClaimed(error.into())),
                };
                (decided, claim)
            })
            .collect()
    }

    /// Copies the object of `decided`, whose row is claimed, into the
    /// decision's class, conditional on the entity tag it was decided on.
    /// Returns the new entity tag and whether the copy went in parts,
    /// beside the decision.
    async fn copy(&self, decided: Decided) -> Copied {
        let (due, decision, planned) = decided;
        let result = match planned.etag.as_deref() {
            Some(etag) => {
                let parts = self.options.copy.parts(planned.size);
                self.bucket
                    .copy_to_class(
                        &planned.key,
                        etag,
                        decision.target,
                        &due.row.record.encryption,
                        parts.as_deref(),
                    )
                    .await
                    .map(|etag| (etag, parts.is_some()))
            }
            None => Err(CopyError::Changed),
        };
        let result = match result {
            // What S3 holds instead, so that a row whose events were not
            // applied can be put right: one `HeadObject`, only for such a
            // refusal.
            Err(CopyError::Changed) if planned.etag.is_some() => {
                match self.bucket.head(&planned.key).await {
                    Ok(head) => Err(CopyError::Replaced(head)),
                    Err(error) => {
                        tracing::warn!(key = %planned.key, error = format!("{error:#}"), "cannot ask S3 what replaced the object");
                        Err(CopyError::Changed)
                    }
                }
            }
            other => other,
        };
        (due, decision, planned, Some(result))
    }

    /// Puts right the claimed row of `due`, whose copy found S3 holding
    /// another object than the row says, or none (`head`): unless S3 holds
    /// the object planned after all, the row takes what S3 holds
    /// ([`as_s3_holds`]), if it is still at the version the claim wrote. A
    /// row an event changed meanwhile is left to that event.
    async fn put_right(&self, due: &DueObject, planned: &PlannedObject, head: Option<ObjectHead>) {
        if head.as_ref().is_some_and(|head| head.etag == planned.etag) {
            return;
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let row = as_s3_holds(&due.row.record, head, now);
        let days = self.options.policies.for_user(&due.user).cold_after_days;
        let claimed = Some(due.row.version + 1);
        match self
            .projection
            .put(&due.user, &due.key, &row, row.due_at(days), claimed)
            .await
        {
            Ok(()) => tracing::info!(
                key = %due.key,
                live = row.live,
                etag = row.etag.as_deref().unwrap_or_default(),
                "S3 holds another object than the row said; the row now says what S3 holds"
            ),
            Err(StoreError::Conflict) => {}
            Err(error) => tracing::warn!(
                key = %due.key,
                error = %error,
                "the row of a replaced object was not put right; the next sweep finds it again"
            ),
        }
    }

    /// The settlement of an object whose transition failed with `error`:
    /// the claimed row records the failure and is due again only at
    /// [`retry_at`], later after each failure in a row, so that an object
    /// S3 keeps refusing to copy does not come first in every sweep.
    fn failed(&self, due: &DueObject, decision: &Decision, error: &str, at: i64) -> Settlement {
        let retry = retry_at(
            due.row.record.verdict.as_ref(),
            at,
            self.options.recheck_days,
        );
        tracing::warn!(key = %due.key, error, retry_at = %rfc3339(retry), "transition failed; tried again later");
        Settlement::Kept {
            user: due.user.clone(),
            key: due.key.clone(),
            version: due.row.version + 1,
            due_at: Some(retry),
            verdict: Some(Verdict {
                outcome: FAILED.to_string(),
                reason: format!(
                    "the copy to {} failed: {error}; tried again from {}",
                    decision.target,
                    rfc3339(retry)
                ),
                at,
                recheck_at: Some(retry),
            }),
        }
    }

    /// What S3 holds at the key of `due`, whose copy S3 refused because the
    /// object is archived: one `HeadObject`, only for such a refusal.
    async fn archived(&self, due: &DueObject, planned: &PlannedObject) -> Held {
        match self.bucket.head(&due.key).await {
            Ok(Some(head)) if head.etag.as_deref() != planned.etag.as_deref() => {
                Held::Other(Some(head))
            }
            Ok(Some(head)) if head.storage_class != STANDARD => Held::Archived(head.storage_class),
            Ok(Some(head)) => Held::Unknown(format!("yet S3 says {}", head.storage_class)),
            Ok(None) => Held::Other(None),
            Err(error) => Held::Unknown(format!("HeadObject: {error:#}")),
        }
    }

    /// What a sweep at `now` would do, without doing it.
    pub async fn plan(&self, now: OffsetDateTime, user: Option<&str>) -> anyhow::Result<TierPlan> {
        let objects: Vec<PlannedObject> = self
            .decisions(now.unix_timestamp(), user)
            .await?
            .into_iter()
            .map(|(_, _, planned)| planned)
            .collect();
        let tier = objects.iter().filter(|o| o.action == "tier");
        Ok(TierPlan {
            at: rfc3339(now.unix_timestamp()),
            to_tier: tier.clone().count(),
            bytes_to_tier: tier.clone().map(|o| o.size).sum(),
            monthly_saving_usd: tier.filter_map(|o| o.monthly_saving_usd).sum(),
            objects,
        })
    }

    /// Sweeps at `now`: tiers what pays off, records every decision, and
    /// publishes `ObjectTiered.v1` for each transition. One trace: each
    /// copy is a child of the sweep's span, and the events carry the sweep's.
    #[tracing::instrument(name = "sweep", skip_all, fields(otel.name = "lifecycle sweep", user = user.unwrap_or("*")))]
    pub async fn run(
        &self,
        now: OffsetDateTime,
        user: Option<&str>,
    ) -> anyhow::Result<SweepReport> {
        let at = now.unix_timestamp();
        let (to_copy, others): (Vec<_>, Vec<_>) = self
            .decisions(at, user)
            .await?
            .into_iter()
            .partition(|(_, decision, planned)| {
                decision.action == Action::Tier && planned.etag.is_some()
            });
        // Rows are claimed a batch at a time, when a copy slot is free and
        // every object claimed before has been handed to a copy, and only so
        // many that the copying ahead of them is short ([`claim_batch`]): a
        // read or an upload that reaches a row before its claim keeps its
        // object where it is. A claim lasts from when it is written.
        let started = tokio::time::Instant::now();
        let concurrency = self.options.concurrency.max(1);
        let mut waiting = to_copy.into_iter().peekable();
        let mut claimed: std::collections::VecDeque<Decided> = std::collections::VecDeque::new();
        let mut running = futures::stream::FuturesUnordered::new();
        // Bytes of the copies running.
        let mut copying = 0u64;
        let mut copies = Vec::new();
        loop {
            while running.len() < concurrency {
                if let Some(decided) = claimed.pop_front() {
                    copying = copying.saturating_add(decided.2.size);
                    let span = tracing::info_span!("tier object", key = %decided.0.key);
                    running.push(self.copy(decided).instrument(span));
                    continue;
                }
                let batch = claim_batch(&mut waiting, concurrency - running.len(), copying);
                if batch.is_empty() {
                    break;
                }
                let elapsed = i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
                let now = at.saturating_add(elapsed);
                for (decided, claim) in self.claim(batch, now).await {
                    match claim {
                        Ok(()) => claimed.push_back(decided),
                        Err(error) => {
                            let (due, decision, planned) = decided;
                            copies.push((due, decision, planned, Some(Err(error))));
                        }
                    }
                }
            }
            match running.next().await {
                Some(copied) => {
                    copying = copying.saturating_sub(copied.2.size);
                    copies.push(copied);
                    // Copies that ended meanwhile free their slots too, so
                    // that one claim serves them all.
                    while let Some(Some(copied)) = running.next().now_or_never() {
                        copying = copying.saturating_sub(copied.2.size);
                        copies.push(copied);
                    }
                }
                None => break,
            }
        }
        copies.extend(others.into_iter().map(|(due, decision, planned)| {
            // A transition without an entity tag to make it conditional on
            // is not attempted.
            let result = (decision.action == Action::Tier).then_some(Err(CopyError::Changed));
            (due, decision, planned, result)
        }));

        let mut settlements = Vec::new();
        let mut events = Vec::new();
        let mut objects = Vec::new();
        for (due, decision, planned, result) in copies {
            let verdict = |outcome: &str| Verdict {
                outcome: outcome.to_string(),
                reason: decision.reason.clone(),
                at,
                recheck_at: decision.next_due,
            };
            let (outcome, error) = match (decision.action, result) {
                (Action::Tier, Some(Ok((etag, multipart)))) => {
                    let from_etag = planned.etag.clone().unwrap_or_default();
                    settlements.push(Settlement::Tiered {
                        user: due.user.clone(),
                        key: due.key.clone(),
                        // The version the copy's claim wrote.
                        version: due.row.version + 1,
                        from_etag: from_etag.clone(),
                        storage_class: decision.target.to_string(),
                        etag: etag.clone(),
                        verdict: verdict(TIERED),
                    });
                    let estimate = decision.estimate.expect("a transition has an estimate");
                    events.push(ObjectTieredV1 {
                        meta: EventMeta::new(due.user.as_str(), telemetry::current_trace()),
                        key: due.key.clone(),
                        size: planned.size,
                        from_storage_class: planned.storage_class.clone(),
                        to_storage_class: decision.target.to_string(),
                        source_etag: from_etag,
                        etag,
                        monthly_saving_usd: (estimate.monthly_saving * 1e9).round() / 1e9,
                        transition_cost_usd: (estimate.transition_cost * 1e9).round() / 1e9,
                        multipart,
                    });
                    let class = KeyValue::new("storage_class", decision.target.as_str());
                    self.metrics
                        .tiered_bytes
                        .add(planned.size, std::slice::from_ref(&class));
                    self.metrics
                        .saving_usd
                        .add(estimate.monthly_saving, &[class]);
                    ("tiered", None)
                }
                (Action::Tier, Some(Err(CopyError::Changed))) => ("changed", None),
                (Action::Tier, Some(Err(CopyError::Replaced(head)))) => {
                    self.put_right(&due, &planned, head).await;
                    ("changed", None)
                }
                (Action::Tier, Some(Err(CopyError::Archived))) => {
                    match self.archived(&due, &planned).await {
                        Held::Archived(class) => {
                            let error = format!(
                                "S3 holds the object in {class} already: it cannot be copied without a restore"
                            );
                            tracing::warn!(key = %due.key, storage_class = %class, "transition failed; the row now says what S3 holds");
                            // The row takes the class S3 holds and leaves
                            // the index: no sweep tries it again.
                            settlements.push(Settlement::Tiered {
                                user: due.user.clone(),
                                key: due.key.clone(),
                                version: due.row.version + 1,
                                from_etag: planned.etag.clone().unwrap_or_default(),
                                storage_class: class,
                                etag: planned.etag.clone().unwrap_or_default(),
                                verdict: Verdict {
                                    outcome: FAILED.to_string(),
                                    reason: error.clone(),
                                    at,
                                    recheck_at: None,
                                },
                            });
                            (FAILED, Some(error))
                        }
                        Held::Other(head) => {
                            self.put_right(&due, &planned, head).await;
                            ("changed", None)
                        }
                        Held::Unknown(error) => {
                            let error = format!("{}; {error}", CopyError::Archived);
                            settlements.push(self.failed(&due, &decision, &error, at));
                            (FAILED, Some(error))
                        }
                    }
                }
                (Action::Tier, Some(Err(CopyError::Other(error)))) => {
                    let error = format!("{error:#}");
                    settlements.push(self.failed(&due, &decision, &error, at));
                    (FAILED, Some(error))
                }
                (Action::Tier, Some(Err(error @ CopyError::NotClaimed(_)))) => {
                    tracing::warn!(key = %due.key, error = %error, "transition not attempted; the row stays due");
                    (FAILED, Some(error.to_string()))
                }
                (Action::Tier, None) => (FAILED, None),
                (Action::Skip, _) => {
                    settlements.push(Settlement::Kept {
                        user: due.user.clone(),
                        key: due.key.clone(),
                        version: due.row.version,
                        due_at: decision.next_due,
                        verdict: Some(verdict("skipped")),
                    });
                    ("skipped", None)
                }
                (Action::Postpone, _) => {
                    settlements.push(Settlement::Kept {
                        user: due.user.clone(),
                        key: due.key.clone(),
                        version: due.row.version,
                        due_at: decision.next_due,
                        verdict: None,
                    });
                    ("postponed", None)
                }
            };
            self.metrics.decisions.add(
                1,
                &[
                    KeyValue::new("outcome", outcome),
                    KeyValue::new("reason", decision.reason_code),
                ],
            );
            tracing::info!(key = %due.key, outcome, reason = %decision.reason, "sweep decision");
            objects.push(SweptObject {
                planned,
                outcome,
                error,
            });
        }
        objects.sort_by(|a, b| {
            (&a.planned.due_at, &a.planned.key).cmp(&(&b.planned.due_at, &b.planned.key))
        });
        // The transitions happened whether or not their rows are settled:
        // they are announced first.
        if let Err(error) = self.publisher.tiered(&events).await {
            // S3's own events carry the transitions to the ledger; only the
            // announcement is lost.
            tracing::warn!(
                error = format!("{error:#}"),
                count = events.len(),
                "ObjectTiered not published"
            );
        }
        self.index.settle(&settlements).await?;
        let count = |o: &str| objects.iter().filter(|s| s.outcome == o).count();
        let tiered = objects.iter().filter(|s| s.outcome == "tiered");
        Ok(SweepReport {
            at: rfc3339(at),
            tiered: count("tiered"),
            tiered_bytes: tiered.clone().map(|s| s.planned.size).sum(),
            monthly_saving_usd: tiered.filter_map(|s| s.planned.monthly_saving_usd).sum(),
            skipped: count("skipped"),
            postponed: count("postponed"),
            changed: count("changed"),
            failed: count("failed"),
            objects,
        })
    }

    /// Lists the bucket under every user's folder (or `user`'s alone) and
    /// gives each object the projection has no row for (or only a row
    /// from reads) one from `HeadObject`: size, class, entity tag,
    /// encryption and last modification, indexed by the date it becomes
    /// due. Rows that S3's events made are left alone, and any S3 event
    /// still to come outranks a backfilled row, so running it while the
    /// service consumes events, or twice, is safe. Costs a `ListObjectsV2`
    /// per 1,000 objects and a `HeadObject` and a read per object.
    /// `progress` sees the running totals after each page.
    pub async fn backfill(
        &self,
        user: Option<&str>,
        progress: impl Fn(&BackfillReport),
    ) -> anyhow::Result<BackfillReport> {
        let prefix = user.map_or_else(|| "users/".to_string(), |u| format!("users/{u}/"));
        let mut report = BackfillReport::default();
        let mut after = None;
        loop {
            let page = self.bucket.list(&prefix, after).await?;
            let found: Vec<anyhow::Result<Found>> = futures::stream::iter(
                // A key directly under `users/` belongs to nobody.
                page.keys.iter().filter(|key| keys::owner(key).is_some()),
            )
            .map(|key| self.backfill_key(key))
            .buffer_unordered(BACKFILL_CONCURRENCY)
            .collect()
            .await;
            for outcome in found {
                report.listed += 1;
                match outcome? {
                    Found::Added => report.added += 1,
                    Found::Known => report.known += 1,
                    Found::Gone => report.gone += 1,
                }
            }
            progress(&report);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(report),
            }
        }
    }

    async fn backfill_key(&self, key: &str) -> anyhow::Result<Found> {
        let user = keys::owner(key).unwrap_or_default();
        let Some(head) = self.bucket.head(key).await? else {
            return Ok(Found::Gone);
        };
        let observation = head.observed(OffsetDateTime::now_utc().unix_timestamp());
        let days = self.options.policies.for_user(user).cold_after_days;
        Ok(
            match record(self.projection.as_ref(), user, key, &observation, days).await? {
                Recorded::Applied => Found::Added,
                Recorded::Duplicate | Recorded::Stale | Recorded::Unchanged => Found::Known,
                // A HEAD's observation is never a change of class.
                Recorded::Early => Found::Known,
            },
        )
    }

    /// Recomputes the due dates of `user`'s objects under the policy in
    /// force. Needed after a user's days were lowered: their objects stay
    /// indexed at the dates the old policy gave them until then (a raised
    /// number of days needs nothing: sweeps postpone objects that are not
    /// due yet). Reads every row of the user once. A row a sweep holds is
    /// left to it (see [`Self::redate`]). Returns the rows changed.
    pub async fn reindex(&self, user: &str) -> anyhow::Result<usize> {
        let mut changed = 0;
        for (key, row, indexed) in self.projection.rows(user).await? {
            changed += usize::from(self.redate(user, &key, &row, indexed).await?);
        }
        Ok(changed)
    }

    /// Recomputes the due date of every indexed row under the policy in
    /// force; needed after the default days (`STOWAGE_TIER_AFTER_DAYS`)
    /// were lowered, or several users' at once. Only indexed rows can have
    /// a date to change (the others are not candidates under any policy),
    /// so it walks the due index, a page at a time, and writes only the
    /// rows whose date changes. `progress` sees the rows read and changed
    /// after each page. Returns the rows changed.
    pub async fn reindex_all(&self, progress: impl Fn(usize, usize)) -> anyhow::Result<usize> {
        let (mut read, mut changed) = (0, 0);
        let mut pages = self.index.indexed();
        while let Some(rows) = pages.next().await {
            let rows = rows?;
            for due in &rows {
                changed += usize::from(
                    self.redate(&due.user, &due.key, &due.row, Some(due.due_at))
                        .await?,
                );
            }
            read += rows.len();
            progress(read, changed);
        }
        Ok(changed)
    }

    /// Brings the due index in line with the policy in force when it
    /// lowered anyone's days since the last time: re-dates the rows of the
    /// users whose days went down, or every indexed row when the default
    /// went down (see [`IndexedDays::redating`]), then records the days the
    /// dates now follow. The service does this when it starts; an
    /// interrupted run is done again at the next start, and two instances
    /// doing it at once write the same dates. The first time nothing is
    /// re-dated: the rows are taken to follow the policy in force. Returns
    /// the rows re-dated.
    pub async fn follow_policy(&self) -> anyhow::Result<usize> {
        let now = IndexedDays::of(&self.options.policies);
        let stored = self.projection.indexed_days().await?;
        if stored.as_ref().is_some_and(|(days, _)| *days == now) {
            return Ok(0);
        }
        let redating = stored
            .as_ref()
            .map_or(Redating::Nothing, |(days, _)| days.redating(&now));
        let changed = match &redating {
            Redating::Nothing => 0,
            Redating::Users(users) => {
                let mut changed = 0;
                for user in users {
                    changed += self.reindex(user).await?;
                }
                changed
            }
            Redating::All => self.reindex_all(|_, _| {}).await?,
        };
        match self
            .projection
            .set_indexed_days(&now, stored.map(|(_, version)| version))
            .await
        {
            // Another instance recorded them meanwhile.
            Ok(()) | Err(StoreError::Conflict) => {}
            Err(error) => return Err(error.into()),
        }
        let redated = match &redating {
            Redating::Nothing => "nothing".to_string(),
            Redating::Users(users) => format!("{} user(s)' rows", users.len()),
            Redating::All => "every indexed row".to_string(),
        };
        tracing::info!(
            redated,
            changed,
            default_days = now.default,
            "due dates follow the tiering policy"
        );
        Ok(changed)
    }

    /// Writes `key`'s row again if the policy in force dates it otherwise
    /// than `indexed`. True when it wrote.
    async fn redate(
        &self,
        user: &str,
        key: &str,
        row: &Versioned,
        indexed: Option<i64>,
    ) -> anyhow::Result<bool> {
        let days = self.options.policies.for_user(user).cold_after_days;
        let due = row.record.due_at(days);
        if due == indexed {
            return Ok(false);
        }
        // A row indexed within the next claim's length (an hour more for
        // clocks that disagree) and due before that date is one a sweep has
        // claimed, most likely: re-dated earlier, it would be found due and
        // copied by another sweep while this one copies it. It is left to
        // that sweep, which dates it when it settles (or, if the date was an
        // old policy's, it is found due at that date, within the day).
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if let (Some(due), Some(indexed)) = (due, indexed)
            && due < indexed
            && indexed > now
            && indexed <= now.saturating_add(CLAIM_SECONDS + CLOCK_SLACK_SECONDS)
        {
            return Ok(false);
        }
        match self
            .projection
            .put(user, key, &row.record, due, Some(row.version))
            .await
        {
            Ok(()) => Ok(true),
            // Changed meanwhile: that write computed the date afresh. A
            // throttled write is an error: the row keeps its old date.
            Err(StoreError::Conflict) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}

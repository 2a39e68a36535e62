//! The handler and the sweeper on an in-memory projection and bucket: keys
//! an event spells ambiguously are resolved against S3, restore requests
//! delivered again cost nothing, due dates are brought in line with a
//! policy even when the table throttles, and a sweep copies only rows as it
//! found them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use futures::{StreamExt, stream::BoxStream};
use serde_json::json;
use stowage_events::sequencer::Sequencer;
use stowage_events::{ObjectRestoredV1, ObjectTieredV1, TraceContext};
use stowage_lifecycle::{
    domain::{
        plan::CopyPlan,
        policy::{ArchiveClass, IndexedDays, Policies, Policy},
        projection::{Encryption, ObjectRecord, Restore, Verdict},
    },
    handler::{
        CREATION_AWAITED, DELETE_JUDGED_ON_REDELIVERY, EventHandler, RESTORE_REQUEST_AWAITED,
        RestoreOptions,
    },
    ports::{
        Bucket, CopyError, DueIndex, DueObject, KeyPage, LifecyclePublisher, ObjectHead,
        Projection, RestoreStart, Settlement, StoreError, Versioned,
    },
    sweep::{SweepOptions, Sweeper},
};
use stowage_shared::consumer::{Delivery, Disposition, Handler};
use stowage_shared::pricing::PriceTable;

const BUCKET: &str = "bucket";
/// The due date [`Rows::rows`] reports every row indexed at.
const INDEXED_AT: i64 = 1_900_000_000;

#[derive(Default)]
struct Rows {
    rows: Mutex<HashMap<String, Versioned>>,
    /// The date each row is due at in the index, by key.
    due: Mutex<HashMap<String, i64>>,
    /// Writes refused as throttled before any is taken.
    throttle_next: Mutex<u32>,
    /// The rows each claim named, claim after claim.
    claims: Mutex<Vec<usize>>,
    /// What sweeps settled, in order; the rows are left as they are.
    settled: Mutex<Vec<Settlement>>,
}

impl Rows {
    /// Writes `key`'s row as `record` at `version`, outside the index.
    fn insert(&self, key: &str, record: ObjectRecord, version: u64) {
        self.rows
            .lock()
            .unwrap()
            .insert(key.into(), Versioned { record, version });
    }
}

/// The rows as a due index; settlements are recorded, not applied.
#[async_trait]
impl DueIndex for Rows {
    async fn due(&self, until: i64) -> Result<Vec<DueObject>, StoreError> {
        let rows = self.rows.lock().unwrap();
        Ok(self
            .due
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, due_at)| **due_at <= until)
            .map(|(key, due_at)| DueObject {
                user: key.split('/').nth(1).unwrap_or_default().to_string(),
                key: key.clone(),
                due_at: *due_at,
                row: rows[key].clone(),
            })
            .collect())
    }

    fn indexed(&self) -> BoxStream<'_, Result<Vec<DueObject>, StoreError>> {
        futures::stream::empty().boxed()
    }

    async fn settle(&self, settlements: &[Settlement]) -> Result<(), StoreError> {
        self.settled
            .lock()
            .unwrap()
            .extend(settlements.iter().cloned());
        Ok(())
    }
}

#[async_trait]
impl Projection for Rows {
    /// One conditional write per row, as the trait does; the rows of each
    /// claim are counted.
    async fn claim(&self, due: &[&DueObject], due_at: i64) -> Vec<Result<(), StoreError>> {
        self.claims.lock().unwrap().push(due.len());
        stowage_lifecycle::ports::claim_each(self, due, due_at).await
    }

    async fn get(&self, _user: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.rows.lock().unwrap().get(key).cloned())
    }

    async fn put(
        &self,
        _user: &str,
        key: &str,
        record: &ObjectRecord,
        due_at: Option<i64>,
        before: Option<u64>,
    ) -> Result<(), StoreError> {
        {
            let mut throttle = self.throttle_next.lock().unwrap();
            if *throttle > 0 {
                *throttle -= 1;
                return Err(StoreError::Throttled(anyhow::anyhow!("slow down")));
            }
        }
        let mut rows = self.rows.lock().unwrap();
        if rows.get(key).map(|row| row.version) != before {
            return Err(StoreError::Conflict);
        }
        let version = before.map_or(1, |v| v + 1);
        let mut due = self.due.lock().unwrap();
        match due_at {
            Some(at) => due.insert(key.to_string(), at),
            None => due.remove(key),
        };
        rows.insert(
            key.to_string(),
            Versioned {
                record: record.clone(),
                version,
            },
        );
        Ok(())
    }

    /// Every row, indexed at the date it was first written with.
    async fn rows(&self, _user: &str) -> Result<Vec<(String, Versioned, Option<i64>)>, StoreError> {
        Ok(self
            .rows
            .lock()
            .unwrap()
            .iter()
            .map(|(key, row)| {
                let indexed = self.due.lock().unwrap().get(key).copied();
                (key.clone(), row.clone(), indexed.or(Some(INDEXED_AT)))
            })
            .collect())
    }

    async fn indexed_days(&self) -> Result<Option<(IndexedDays, u64)>, StoreError> {
        Ok(None)
    }

    async fn set_indexed_days(
        &self,
        _days: &IndexedDays,
        _before: Option<u64>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

/// What S3 holds when the events are handled, and the restores and copies
/// asked of it.
struct Holding(
    HashMap<String, ObjectHead>,
    Mutex<Vec<String>>,
    Mutex<Vec<String>>,
);

impl Holding {
    fn new(objects: HashMap<String, ObjectHead>) -> Self {
        Self(objects, Mutex::default(), Mutex::default())
    }
}

#[async_trait]
impl Bucket for Holding {
    async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectHead>> {
        Ok(self.0.get(key).cloned())
    }

    async fn list(&self, _prefix: &str, _after: Option<String>) -> anyhow::Result<KeyPage> {
        anyhow::bail!("not used by the handler")
    }

    async fn copy_to_class(
        &self,
        key: &str,
        etag: &str,
        _class: ArchiveClass,
        _encryption: &Encryption,
        _parts: Option<&[(u64, u64)]>,
    ) -> Result<String, CopyError> {
        self.2.lock().unwrap().push(key.to_string());
        Ok(etag.to_string())
    }

    async fn restore(
        &self,
        key: &str,
        _class: &str,
        _days: u32,
        _tier: &str,
    ) -> anyhow::Result<RestoreStart> {
        self.1.lock().unwrap().push(key.to_string());
        Ok(RestoreStart::Started)
    }
}

#[derive(Default)]
struct Announced(Mutex<Vec<ObjectRestoredV1>>);

#[async_trait]
impl LifecyclePublisher for Announced {
    async fn tiered(&self, _events: &[ObjectTieredV1]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn restored(&self, event: &ObjectRestoredV1) -> anyhow::Result<()> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

/// A bucket holding one SSE-S3 object at `key`.
fn holding(key: &str, size: u64, etag: &str, class: &str) -> Holding {
    Holding::new(HashMap::from([(
        key.to_string(),
        ObjectHead {
            size,
            etag: Some(etag.into()),
            storage_class: class.into(),
            encryption: Encryption::S3Managed,
            last_modified: None,
        },
    )]))
}

/// Hands `bodies` to `handler` one by one; the outcome of each, as its
/// label when done.
fn handle_all(handler: &EventHandler, bodies: Vec<String>) -> Vec<String> {
    runtime().block_on(async {
        let mut outcomes = Vec::new();
        for (i, body) in bodies.into_iter().enumerate() {
            let mut delivery = Delivery::new(i.to_string(), body, 1);
            let mut outcome = handler.handle(&delivery).await;
            // A delete judged on redelivery comes again, as SQS brings it.
            // So does a restore completed before its request is recorded.
            if matches!(outcome, Disposition::Later(_)) {
                delivery.receive_count += 1;
                outcome = handler.handle(&delivery).await;
            }
            outcomes.push(match outcome {
                Disposition::Done(label) => label.to_string(),
                Disposition::Later(CREATION_AWAITED) => "early".into(),
                other => format!("{other:?}"),
            });
        }
        outcomes
    })
}

/// The event handler on `rows` and `bucket`, tiering to Glacier Instant
/// Retrieval after 90 days.
fn handler(rows: Arc<Rows>, bucket: impl Into<Arc<Holding>>) -> EventHandler {
    let bucket: Arc<Holding> = bucket.into();
    handler_over(rows, bucket)
}

/// [`handler`] over any bucket.
fn handler_over(rows: Arc<Rows>, bucket: Arc<dyn Bucket>) -> EventHandler {
    let policy = Policy {
        cold_after_days: 90,
        target: ArchiveClass::GlacierIr,
        min_size: 0,
    };
    EventHandler::new(
        rows,
        bucket,
        Arc::new(Announced::default()),
        Arc::new(Policies::with_overrides(policy, "").expect("policies")),
        BUCKET,
        RestoreOptions {
            tier: "Standard".into(),
            max_days: 30,
        },
    )
}

/// An S3 event on EventBridge about the key spelt `raw`.
fn s3_event(detail_type: &str, sequencer: &str, raw: &str, object: serde_json::Value) -> String {
    let mut object = object;
    object["key"] = json!(raw);
    object["sequencer"] = json!(sequencer);
    json!({
        "version": "0", "id": format!("id-{sequencer}"), "detail-type": detail_type,
        "source": "aws.s3", "account": "1", "time": "2026-11-23T10:00:00Z",
        "region": "us-east-1", "resources": [],
        "detail": {
            "version": "0", "bucket": {"name": BUCKET}, "reason": "PutObject",
            "object": object,
        },
    })
    .to_string()
}

/// An `Object Created` event of `size` bytes with entity tag `etag`, its
/// key spelt `raw`.
fn created(sequencer: &str, raw: &str, size: u64, etag: &str) -> String {
    s3_event(
        "Object Created",
        sequencer,
        raw,
        json!({"size": size, "etag": etag}),
    )
}

#[test]
fn an_ambiguous_key_never_moves_one_object_s_events_onto_another() {
    // The user keeps an object under the literal key `a%2Bb`, then uploads
    // `a+b` and deletes it at once: percent-encoded as the events carry
    // them, both keys read `a%2Bb`.
    let kept = "users/u/a%2Bb";
    let rows = Arc::new(Rows::default());
    let handler = handler(rows.clone(), holding(kept, 1_000_000, "kept", "STANDARD"));
    let outcomes = handle_all(
        &handler,
        vec![
            created("01", "users/u/a%252Bb", 1_000_000, "kept"),
            // S3 holds no `a+b` by the time these are handled.
            created("05", "users/u/a%2Bb", 1, "brief"),
            s3_event("Object Deleted", "06", "users/u/a%2Bb", json!({})),
        ],
    );
    assert_eq!(outcomes[1..], ["superseded", "superseded"], "{outcomes:?}");
    let rows = rows.rows.lock().unwrap();
    let row = &rows[kept].record;
    assert!(row.live);
    assert_eq!((row.size, row.etag.as_deref()), (1_000_000, Some("kept")));
    assert!(rows.get("users/u/a+b").is_none_or(|row| !row.record.live));
}

/// S3 holding one object until the first HEAD that finds it: that HEAD
/// answers as S3 did before the user deleted the object, and the delete's
/// event (`delete`) is handled before the answer arrives.
struct DeletedDuringHead {
    object: Mutex<Option<(String, ObjectHead)>>,
    handler: std::sync::OnceLock<Arc<EventHandler>>,
    delete: String,
    outcome: Mutex<Option<String>>,
}

#[async_trait]
impl Bucket for DeletedDuringHead {
    async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectHead>> {
        let found = {
            let mut object = self.object.lock().unwrap();
            match object.take() {
                Some((held, head)) if held == key => Some(head),
                other => {
                    *object = other;
                    None
                }
            }
        };
        if found.is_some() {
            let handler = self.handler.get().expect("the handler is set");
            let outcome = handler
                .handle(&Delivery::new("delete", self.delete.clone(), 1))
                .await;
            *self.outcome.lock().unwrap() = Some(format!("{outcome:?}"));
        }
        Ok(found)
    }

    async fn list(&self, _prefix: &str, _after: Option<String>) -> anyhow::Result<KeyPage> {
        anyhow::bail!("not used by the handler")
    }

    async fn copy_to_class(
        &self,
        _key: &str,
        _etag: &str,
        _class: ArchiveClass,
        _encryption: &Encryption,
        _parts: Option<&[(u64, u64)]>,
    ) -> Result<String, CopyError> {
        Err(CopyError::Other(anyhow::anyhow!("not used by the handler")))
    }

    async fn restore(
        &self,
        _key: &str,
        _class: &str,
        _days: u32,
        _tier: &str,
    ) -> anyhow::Result<RestoreStart> {
        anyhow::bail!("not used by the handler")
    }
}

#[test]
fn a_delete_handled_while_its_upload_is_being_recorded_still_takes_it_off() {
    // `a+b` reads `a%2Bb` in events, so S3 says which reading an upload is
    // at. The user uploads `a+b` and deletes it while lifecycle, having
    // asked S3, is about to record the upload.
    let key = "users/u/a+b";
    let head = holding(key, 40, "e1", "STANDARD").0[key].clone();
    let bucket = Arc::new(DeletedDuringHead {
        object: Mutex::new(Some((key.into(), head))),
        handler: std::sync::OnceLock::new(),
        delete: s3_event("Object Deleted", "02", "users/u/a%2Bb", json!({})),
        outcome: Mutex::default(),
    });
    let rows = Arc::new(Rows::default());
    let handler = Arc::new(handler_over(rows.clone(), bucket.clone()));
    bucket.handler.set(handler.clone()).ok().unwrap();
    runtime().block_on(async {
        let upload = Delivery::new("upload", created("01", "users/u/a%2Bb", 40, "e1"), 1);
        let outcome = handler.handle(&upload).await;
        assert!(
            matches!(outcome, Disposition::Done("applied")),
            "{outcome:?}"
        );
        // Meanwhile the delete found nothing live: it is judged again when
        // SQS delivers it again.
        let meanwhile = bucket.outcome.lock().unwrap().clone().unwrap();
        assert!(
            meanwhile.contains(DELETE_JUDGED_ON_REDELIVERY),
            "{meanwhile}"
        );
        let again = Delivery::new("delete", bucket.delete.clone(), 2);
        let outcome = handler.handle(&again).await;
        assert!(
            matches!(outcome, Disposition::Done("applied")),
            "{outcome:?}"
        );
    });
    assert!(!rows.rows.lock().unwrap()[key].record.live);
}

#[test]
fn a_delete_of_an_ambiguous_key_never_takes_an_object_s3_still_holds() {
    // The projection has `a%2Bb` with tag e2. The user overwrites it (tag
    // e3), then uploads `a+b` and deletes it: percent-encoded, `a+b` reads
    // `a%2Bb` too, and S3 holds e3 there, so the delete is not its.
    let kept = "users/u/a%2Bb";
    let rows = Arc::new(Rows::default());
    rows.insert(
        kept,
        ObjectRecord {
            size: 100,
            etag: Some("e2".into()),
            sequencer: Sequencer::parse("01").unwrap(),
            ..record("STANDARD", Restore::None)
        },
        1,
    );
    let handler = handler(rows.clone(), holding(kept, 300, "e3", "STANDARD"));
    handle_all(
        &handler,
        vec![
            s3_event("Object Deleted", "04", "users/u/a%2Bb", json!({})),
            created("02", "users/u/a%252Bb", 300, "e3"),
            created("03", "users/u/a%2Bb", 1, "e1"),
        ],
    );
    let rows = rows.rows.lock().unwrap();
    let row = &rows[kept].record;
    assert!(row.live);
    assert_eq!((row.size, row.etag.as_deref()), (300, Some("e3")));
    assert!(rows.get("users/u/a+b").is_none_or(|row| !row.record.live));
}

#[test]
fn a_class_change_without_a_sequencer_moves_only_its_own_object_once_recorded() {
    let key = "users/u/a.bin";
    let rows = Arc::new(Rows::default());
    let handler = handler(rows.clone(), holding(key, 7, "two", "GLACIER"));
    // As S3 sends it: no sequencer, and the class of this one change, which
    // a later change of the same object may have overtaken.
    let class_changed = |etag: &str| {
        let mut event: serde_json::Value = serde_json::from_str(&s3_event(
            "Object Storage Class Changed",
            "00",
            key,
            json!({"size": 7, "etag": etag}),
        ))
        .unwrap();
        event["detail"]["object"]
            .as_object_mut()
            .unwrap()
            .remove("sequencer");
        event["detail"]["destination-storage-class"] = json!("STANDARD_IA");
        event.to_string()
    };
    let uploaded = |sequencer: &str, size: u64, etag: &str| {
        let mut event: serde_json::Value = serde_json::from_str(&s3_event(
            "Object Created",
            sequencer,
            key,
            json!({"size": size, "etag": etag}),
        ))
        .unwrap();
        event["detail"]["reason"] = json!("POST Object");
        event.to_string()
    };
    let outcomes = handle_all(
        &handler,
        vec![
            class_changed("two"),
            uploaded("01", 5, "one"),
            class_changed("one"),
            uploaded("02", 7, "two"),
            class_changed("two"),
            class_changed("two"),
            // The upload delivered again, as posted and as S3 now tells.
            uploaded("02", 7, "two"),
            s3_event(
                "Object Created",
                "02",
                key,
                json!({"size": 7, "etag": "two"}),
            ),
        ],
    );
    assert_eq!(
        outcomes,
        [
            "early",
            "applied",
            "superseded",
            "applied",
            "applied",
            "duplicate",
            "duplicate",
            "duplicate"
        ]
    );
    let rows = rows.rows.lock().unwrap();
    let row = &rows[key].record;
    assert_eq!((row.size, row.etag.as_deref()), (7, Some("two")));
    assert_eq!(row.storage_class, "GLACIER");
    assert_eq!(row.sequencer, Sequencer::parse("02").unwrap());
}

#[test]
fn a_throttled_re_dating_is_an_error_not_a_row_left_late() {
    let rows = Arc::new(Rows::default());
    let record = record("STANDARD", Restore::None);
    rows.rows
        .lock()
        .unwrap()
        .insert("users/u/a.bin".into(), Versioned { record, version: 1 });
    let sweeper = sweeper(
        Arc::new(DueNow(Vec::new())),
        &rows,
        Arc::new(Holding::new(HashMap::new())),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        *rows.throttle_next.lock().unwrap() = 1;
        assert!(sweeper.reindex("u").await.is_err());
        assert_eq!(rows.rows.lock().unwrap()["users/u/a.bin"].version, 1);
        // Tried again, the row takes the policy's date.
        assert_eq!(sweeper.reindex("u").await.expect("re-dated"), 1);
        assert_eq!(rows.rows.lock().unwrap()["users/u/a.bin"].version, 2);
    });
}

#[test]
fn re_dating_leaves_a_row_a_sweep_has_claimed_to_that_sweep() {
    let rows = Arc::new(Rows::default());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // Both long due under the policy; one indexed a day ahead by a sweep's
    // claim an hour ago, the other a month ahead by a policy since lowered.
    for (key, indexed) in [
        ("users/u/claimed.bin", now + 23 * 3600),
        ("users/u/lowered.bin", now + 30 * 86_400),
    ] {
        let record = record("STANDARD", Restore::None);
        rows.rows
            .lock()
            .unwrap()
            .insert(key.into(), Versioned { record, version: 2 });
        rows.due.lock().unwrap().insert(key.into(), indexed);
    }
    let sweeper = sweeper(
        Arc::new(DueNow(Vec::new())),
        &rows,
        Arc::new(Holding::new(HashMap::new())),
    );
    let changed = runtime().block_on(sweeper.reindex("u")).expect("re-dated");
    assert_eq!(changed, 1);
    let versions: HashMap<String, u64> = rows
        .rows
        .lock()
        .unwrap()
        .iter()
        .map(|(key, row)| (key.clone(), row.version))
        .collect();
    assert_eq!(versions["users/u/claimed.bin"], 2, "the claim stands");
    assert_eq!(versions["users/u/lowered.bin"], 3);
    let due = rows.due.lock().unwrap();
    assert_eq!(due["users/u/claimed.bin"], now + 23 * 3600);
    assert!(due["users/u/lowered.bin"] < now, "due now");
}

/// A live object of 1 MiB in `class`, stored at 1,700,000,000.
fn record(class: &str, restore: Restore) -> ObjectRecord {
    ObjectRecord {
        live: true,
        size: 1 << 20,
        storage_class: class.into(),
        etag: Some("e".into()),
        encryption: Encryption::S3Managed,
        created_at: 1_700_000_000,
        last_access: None,
        restore,
        sequencer: Sequencer::lowest(),
        applied: Vec::new(),
        verdict: None,
    }
}

/// A `RestoreRequested.v1` from intake, asked for at `at` (unix seconds).
fn restore_requested(key: &str, at: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(at)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    json!({
        "version": "0", "id": format!("id-{at}"), "detail-type": "RestoreRequested.v1",
        "source": "stowage.intake", "account": "1", "time": at,
        "region": "us-east-1", "resources": [],
        "detail": {
            "event_id": "00000000-0000-4000-8000-000000000009", "occurred_at": at,
            "user_id": "u", "key": key, "days": 7, "storage_class": "GLACIER",
        },
    })
    .to_string()
}

#[test]
fn a_restore_of_an_object_without_a_row_is_remembered_and_not_paid_for_twice() {
    // Stored before the service knew of the bucket: no row yet.
    let key = "users/u/before.bin";
    let requested = 1_750_000_000;
    let rows = Arc::new(Rows::default());
    let bucket = Arc::new(holding(key, 1 << 20, "e", "GLACIER"));
    let handler = handler(rows.clone(), bucket.clone());
    let outcomes = handle_all(
        &handler,
        vec![
            restore_requested(key, requested),
            restore_requested(key, requested),
        ],
    );
    assert_eq!(outcomes, ["restore-started", "already-requested"]);
    assert_eq!(*bucket.1.lock().unwrap(), [key]);
    let rows = rows.rows.lock().unwrap();
    let row = &rows[key].record;
    assert_eq!((row.size, row.storage_class.as_str()), (1 << 20, "GLACIER"));
    assert_eq!(
        row.restore,
        Restore::Requested {
            at: requested,
            days: 7,
            trace: TraceContext::default(),
        }
    );
}

#[test]
fn a_restore_request_delivered_again_asks_s3_for_nothing() {
    let key = "users/u/old.bin";
    let requested = 1_750_000_000;
    let rows = Arc::new(Rows::default());
    // Restored after the request at `requested`; the copy has expired since.
    rows.insert(
        key,
        record(
            "GLACIER",
            Restore::Restored {
                until: Some(requested + 86_400),
                requested_at: Some(requested),
                trace: TraceContext::default(),
            },
        ),
        3,
    );
    let bucket = Arc::new(Holding::new(HashMap::new()));
    let policy = Policy {
        cold_after_days: 90,
        target: ArchiveClass::Glacier,
        min_size: 0,
    };
    let handler = EventHandler::new(
        rows.clone(),
        bucket.clone(),
        Arc::new(Announced::default()),
        Arc::new(Policies::with_overrides(policy, "").expect("policies")),
        BUCKET,
        RestoreOptions {
            tier: "Bulk".into(),
            max_days: 30,
        },
    );
    let outcomes = runtime().block_on(async {
        let mut outcomes = Vec::new();
        for (i, at) in [requested, requested - 3_600, 1_600_000_000, requested + 60]
            .into_iter()
            .enumerate()
        {
            let delivery = Delivery::new(i.to_string(), restore_requested(key, at), 1);
            outcomes.push(format!("{:?}", handler.handle(&delivery).await));
        }
        outcomes
    });
    assert_eq!(
        outcomes,
        [
            // The request itself, a replay of an earlier one, and one from
            // before the object was stored, again...
            "Done(\"already-requested\")",
            "Done(\"already-requested\")",
            "Done(\"already-requested\")",
            // ...and a new one.
            "Done(\"restore-started\")",
        ]
    );
    assert_eq!(*bucket.1.lock().unwrap(), [key]);
    assert_eq!(
        rows.rows.lock().unwrap()[key].record.restore,
        Restore::Requested {
            at: requested + 60,
            days: 7,
            trace: TraceContext::default(),
        }
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The due index as a sweep found it: `due`, whatever the rows say now.
struct DueNow(Vec<DueObject>);

#[async_trait]
impl DueIndex for DueNow {
    async fn due(&self, _until: i64) -> Result<Vec<DueObject>, StoreError> {
        Ok(self.0.clone())
    }

    fn indexed(&self) -> BoxStream<'_, Result<Vec<DueObject>, StoreError>> {
        futures::stream::empty().boxed()
    }

    async fn settle(&self, _settlements: &[Settlement]) -> Result<(), StoreError> {
        Ok(())
    }
}

#[test]
fn an_object_read_after_the_sweep_found_it_due_is_not_copied() {
    let key = "users/u/cold.bin";
    let cold = record("STANDARD", Restore::None);
    let due = DueObject {
        user: "u".into(),
        key: key.into(),
        due_at: 1_710_000_000,
        row: Versioned {
            record: cold.clone(),
            version: 1,
        },
    };
    // Read just after the index was queried: the row was written again.
    let rows = Arc::new(Rows::default());
    rows.insert(
        key,
        ObjectRecord {
            last_access: Some(1_800_000_000),
            ..cold
        },
        2,
    );
    let bucket = Arc::new(Holding::new(HashMap::new()));
    let sweep = sweep_of(Arc::new(DueNow(vec![due])), &rows, &bucket);
    assert_eq!(sweep(), ["changed"]);
    assert!(bucket.2.lock().unwrap().is_empty(), "nothing copied");
}

/// A sweeper that finds due what `index` says (GLACIER after 30 days), on
/// `rows` and `bucket`, one copy at a time.
fn sweeper(index: Arc<dyn DueIndex>, rows: &Arc<Rows>, bucket: Arc<dyn Bucket>) -> Sweeper {
    sweeper_copying(index, rows, bucket, 1)
}

/// [`sweeper`] with `concurrency` copies in flight.
fn sweeper_copying(
    index: Arc<dyn DueIndex>,
    rows: &Arc<Rows>,
    bucket: Arc<dyn Bucket>,
    concurrency: usize,
) -> Sweeper {
    let policy = Policy {
        cold_after_days: 30,
        target: ArchiveClass::Glacier,
        min_size: 0,
    };
    Sweeper::new(
        index,
        rows.clone(),
        bucket,
        Arc::new(Announced::default()),
        SweepOptions {
            policies: Arc::new(Policies::with_overrides(policy, "").expect("policies")),
            prices: PriceTable::default(),
            copy: CopyPlan {
                multipart_threshold: 5 << 30,
                part_size: 64 << 20,
            },
            recheck_days: 30,
            concurrency,
        },
    )
}

/// Runs a sweep at 1,800,000,100 of [`sweeper`]; returns each object's
/// outcome.
fn sweep_of(
    index: Arc<dyn DueIndex>,
    rows: &Arc<Rows>,
    bucket: &Arc<Holding>,
) -> impl Fn() -> Vec<&'static str> {
    let sweeper = sweeper(index, rows, bucket.clone());
    move || sweep_with(&sweeper)
}

/// Runs a sweep of `sweeper` at 1,800,000,100; returns each object's
/// outcome.
fn sweep_with(sweeper: &Sweeper) -> Vec<&'static str> {
    let report = runtime()
        .block_on(sweeper.run(
            time::OffsetDateTime::from_unix_timestamp(1_800_000_100).unwrap(),
            None,
        ))
        .expect("swept");
    report.objects.iter().map(|o| o.outcome).collect()
}

#[test]
fn two_sweeps_of_the_same_due_object_copy_it_once() {
    let key = "users/u/cold.bin";
    let rows = Arc::new(Rows::default());
    rows.insert(key, record("STANDARD", Restore::None), 1);
    rows.due.lock().unwrap().insert(key.into(), 1_710_000_000);
    let bucket = Arc::new(Holding::new(HashMap::new()));
    // The second runs before the first settles (settling is left out here).
    let first = sweep_of(rows.clone(), &rows, &bucket);
    let second = sweep_of(rows.clone(), &rows, &bucket);
    assert_eq!(first(), ["tiered"]);
    assert!(second().is_empty(), "claimed rows are not due");
    assert_eq!(*bucket.2.lock().unwrap(), [key]);
}

/// What happens while a bucket's first copy runs.
enum Meanwhile {
    /// Every other due object is read (each read writes its row again,
    /// whether or not a sweep claimed it).
    EveryOtherObjectIsRead,
    /// An hour passes.
    AnHourPasses,
}

/// A bucket whose first copy takes long enough for [`Meanwhile`].
struct DuringFirstCopy {
    rows: Arc<Rows>,
    meanwhile: Meanwhile,
    copied: Mutex<Vec<String>>,
}

#[async_trait]
impl Bucket for DuringFirstCopy {
    async fn head(&self, _key: &str) -> anyhow::Result<Option<ObjectHead>> {
        anyhow::bail!("not used by a sweep")
    }

    async fn list(&self, _prefix: &str, _after: Option<String>) -> anyhow::Result<KeyPage> {
        anyhow::bail!("not used by a sweep")
    }

    async fn copy_to_class(
        &self,
        key: &str,
        etag: &str,
        _class: ArchiveClass,
        _encryption: &Encryption,
        _parts: Option<&[(u64, u64)]>,
    ) -> Result<String, CopyError> {
        let first = self.copied.lock().unwrap().is_empty();
        self.copied.lock().unwrap().push(key.to_string());
        if first {
            match self.meanwhile {
                Meanwhile::EveryOtherObjectIsRead => {
                    for (other, row) in self.rows.rows.lock().unwrap().iter_mut() {
                        if other != key {
                            row.record.last_access = Some(1_800_000_050);
                            row.version += 1;
                        }
                    }
                }
                Meanwhile::AnHourPasses => {
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                }
            }
        }
        Ok(etag.to_string())
    }

    async fn restore(
        &self,
        _key: &str,
        _class: &str,
        _days: u32,
        _tier: &str,
    ) -> anyhow::Result<RestoreStart> {
        anyhow::bail!("not used by a sweep")
    }
}

/// `count` cold objects of `size` bytes, due since 1,710,000,000.
fn cold_rows(count: usize, size: u64) -> Arc<Rows> {
    let rows = Arc::new(Rows::default());
    for i in 0..count {
        let key = format!("users/u/cold-{i}.bin");
        rows.insert(
            &key,
            ObjectRecord {
                size,
                ..record("STANDARD", Restore::None)
            },
            1,
        );
        rows.due.lock().unwrap().insert(key, 1_710_000_000);
    }
    rows
}

#[test]
fn an_object_read_while_copies_ahead_of_it_run_is_not_copied() {
    // One copy at a time, of 512 MiB objects: a sweep claims a row only
    // while at most 1 GiB of copying is ahead of it, so it claims the first
    // three together (the third waits behind the first two) and each of the
    // others after the copies ahead of it have started.
    let rows = cold_rows(250, 512 << 20);
    let bucket = Arc::new(DuringFirstCopy {
        rows: rows.clone(),
        meanwhile: Meanwhile::EveryOtherObjectIsRead,
        copied: Mutex::default(),
    });
    let outcomes = sweep_with(&sweeper(rows.clone(), &rows, bucket.clone()));
    let count = |outcome| outcomes.iter().filter(|o| **o == outcome).count();
    // Read while the first copy ran, the objects not yet claimed are no
    // longer cold when their turn comes: left alone.
    assert_eq!((count("tiered"), count("changed")), (3, 247));
    let copied = bucket.copied.lock().unwrap().clone();
    assert_eq!(copied.len(), 3, "{copied:?}");
    assert_eq!(rows.claims.lock().unwrap()[0], 3);
    for (key, row) in rows.rows.lock().unwrap().iter() {
        if copied.contains(key) {
            continue;
        }
        assert_eq!(row.version, 2, "{key}: read once, never claimed");
        assert_eq!(
            rows.due.lock().unwrap()[key],
            1_710_000_000,
            "{key}: left as read"
        );
    }
}

#[test]
fn rows_are_claimed_a_hundred_at_a_time_within_the_bytes_allowed_ahead() {
    // 1 MiB objects: 100 rows to a claim.
    let rows = cold_rows(250, 1 << 20);
    let bucket = Arc::new(Holding::new(HashMap::new()));
    let outcomes = sweep_with(&sweeper_copying(rows.clone(), &rows, bucket.clone(), 4));
    assert_eq!(outcomes, ["tiered"; 250]);
    assert_eq!(*rows.claims.lock().unwrap(), [100, 100, 50]);
    assert_eq!(bucket.2.lock().unwrap().len(), 250);

    // 300 MiB objects: a fifth would wait behind 1200 MiB, so four at a
    // time, as slots free.
    let rows = cold_rows(12, 300 << 20);
    let outcomes = sweep_with(&sweeper_copying(rows.clone(), &rows, bucket.clone(), 4));
    assert_eq!(outcomes, ["tiered"; 12]);
    assert_eq!(*rows.claims.lock().unwrap(), [4, 4, 4]);
}

#[test]
fn a_claim_lasts_a_day_from_when_it_is_written() {
    let rows = cold_rows(250, 1 << 20);
    let bucket = Arc::new(DuringFirstCopy {
        rows: rows.clone(),
        meanwhile: Meanwhile::AnHourPasses,
        copied: Mutex::default(),
    });
    let sweeper = sweeper(rows.clone(), &rows, bucket.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let at = 1_800_000_100;
    let report = runtime
        .block_on(sweeper.run(time::OffsetDateTime::from_unix_timestamp(at).unwrap(), None))
        .expect("swept");
    assert_eq!(report.tiered, 250);
    // The first hundred rows were claimed as the sweep began; the others
    // an hour later, after the first copy: each is due again a day after
    // its claim.
    let mut due_at: HashMap<i64, usize> = HashMap::new();
    for due in rows.due.lock().unwrap().values() {
        *due_at.entry(*due).or_default() += 1;
    }
    assert_eq!(
        due_at,
        HashMap::from([(at + 86_400, 100), (at + 3_600 + 86_400, 150)])
    );
}

/// What happens elsewhere while a copy is refused.
type WhileRefused = Box<dyn FnOnce() + Send>;

/// A bucket that refuses every copy with `refusal`, and whose HEAD answers
/// `held`.
struct Refusing {
    held: Option<ObjectHead>,
    refusal: fn() -> CopyError,
    copies: Mutex<usize>,
    /// Run when the first copy is refused.
    while_refused: Mutex<Option<WhileRefused>>,
}

impl Refusing {
    fn new(held: Option<ObjectHead>, refusal: fn() -> CopyError) -> Arc<Self> {
        Arc::new(Self {
            held,
            refusal,
            copies: Mutex::new(0),
            while_refused: Mutex::new(None),
        })
    }
}

/// What S3 holds: `size` bytes with entity tag `etag`, in `class`, last
/// modified at `modified`.
fn held(size: u64, etag: &str, class: &str, modified: Option<i64>) -> Option<ObjectHead> {
    Some(ObjectHead {
        size,
        etag: Some(etag.into()),
        storage_class: class.into(),
        encryption: Encryption::S3Managed,
        last_modified: modified,
    })
}

#[async_trait]
impl Bucket for Refusing {
    async fn head(&self, _key: &str) -> anyhow::Result<Option<ObjectHead>> {
        Ok(self.held.clone())
    }

    async fn list(&self, _prefix: &str, _after: Option<String>) -> anyhow::Result<KeyPage> {
        anyhow::bail!("not used by a sweep")
    }

    async fn copy_to_class(
        &self,
        _key: &str,
        _etag: &str,
        _class: ArchiveClass,
        _encryption: &Encryption,
        _parts: Option<&[(u64, u64)]>,
    ) -> Result<String, CopyError> {
        *self.copies.lock().unwrap() += 1;
        if let Some(happening) = self.while_refused.lock().unwrap().take() {
            happening();
        }
        Err((self.refusal)())
    }

    async fn restore(
        &self,
        _key: &str,
        _class: &str,
        _days: u32,
        _tier: &str,
    ) -> anyhow::Result<RestoreStart> {
        anyhow::bail!("not used by a sweep")
    }
}

#[test]
fn a_failed_copy_is_tried_again_later_after_each_failure_in_a_row() {
    const DAY: i64 = 86_400;
    let at = 1_800_000_100;
    let rows = cold_rows(1, 1 << 20);
    let bucket = Refusing::new(None, || {
        CopyError::Other(anyhow::anyhow!("CopyObject: AccessDenied"))
    });
    let sweeper = sweeper(rows.clone(), &rows, bucket.clone());
    assert_eq!(sweep_with(&sweeper), ["failed"]);
    let settled = std::mem::take(&mut *rows.settled.lock().unwrap());
    let [
        Settlement::Kept {
            version: 2,
            due_at: Some(due_at),
            verdict: Some(verdict),
            ..
        },
    ] = settled.as_slice()
    else {
        panic!("the claimed row is kept: {settled:?}");
    };
    // Due again a day later, not at the next sweep, and why is recorded.
    assert_eq!(*due_at, at + DAY);
    assert_eq!(
        (verdict.outcome.as_str(), verdict.recheck_at),
        ("failed", Some(at + DAY))
    );
    assert!(
        verdict.reason.contains("AccessDenied"),
        "{}",
        verdict.reason
    );

    // Failed a day ago, due again now and failing again: it waits twice
    // as long.
    let key = "users/u/cold-0.bin";
    {
        let mut all = rows.rows.lock().unwrap();
        let row = all.get_mut(key).unwrap();
        row.record.verdict = Some(Verdict {
            at: at - DAY,
            recheck_at: Some(at),
            ..verdict.clone()
        });
        rows.due.lock().unwrap().insert(key.into(), at);
    }
    assert_eq!(sweep_with(&sweeper), ["failed"]);
    let settled = rows.settled.lock().unwrap();
    let [
        Settlement::Kept {
            due_at: Some(due_at),
            ..
        },
    ] = settled.as_slice()
    else {
        panic!("the claimed row is kept: {settled:?}");
    };
    assert_eq!(*due_at, at + 2 * DAY);
    assert_eq!(*bucket.copies.lock().unwrap(), 2);
}

#[test]
fn an_object_s3_holds_archived_already_takes_the_class_s3_holds() {
    let rows = cold_rows(1, 1 << 20);
    let bucket = Refusing::new(held(1 << 20, "e", "DEEP_ARCHIVE", None), || {
        CopyError::Archived
    });
    let report = runtime()
        .block_on(sweeper(rows.clone(), &rows, bucket.clone()).run(
            time::OffsetDateTime::from_unix_timestamp(1_800_000_100).unwrap(),
            None,
        ))
        .expect("swept");
    assert_eq!(report.failed, 1, "{report:?}");
    assert!(
        report.objects[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("DEEP_ARCHIVE")),
        "{report:?}"
    );
    let settled = rows.settled.lock().unwrap();
    let [
        Settlement::Tiered {
            version: 2,
            storage_class,
            etag,
            from_etag,
            verdict,
            ..
        },
    ] = settled.as_slice()
    else {
        panic!("the row takes what S3 holds: {settled:?}");
    };
    // The row leaves the index in the class S3 holds: no sweep tries again.
    assert_eq!(
        (storage_class.as_str(), etag.as_str(), from_etag.as_str()),
        ("DEEP_ARCHIVE", "e", "e")
    );
    assert_eq!(
        (verdict.outcome.as_str(), verdict.recheck_at),
        ("failed", None)
    );
}

/// S3's `Object Restore Completed` of `key` (entity tag `e`), delivered
/// by EventBridge as event `id`, the restored copy readable until
/// `expiry`.
fn restore_completed(id: &str, key: &str, expiry: &str) -> String {
    json!({
        "version": "0", "id": id, "detail-type": "Object Restore Completed",
        "source": "aws.s3", "account": "1", "time": "2026-11-23T10:00:00Z",
        "region": "us-east-1", "resources": [],
        "detail": {
            "version": "0", "bucket": {"name": BUCKET},
            "object": {"key": key, "size": 1 << 20, "etag": "\"e\""},
            "request-id": "R", "requester": "s3.amazonaws.com",
            "restore-expiry-time": expiry, "source-storage-class": "GLACIER",
        },
    })
    .to_string()
}

#[test]
fn a_restore_completed_delivered_again_is_announced_as_the_same_event() {
    let key = "users/u/archived.bin";
    let rows = Arc::new(Rows::default());
    rows.insert(
        key,
        record(
            "GLACIER",
            Restore::Requested {
                at: 5,
                days: 7,
                trace: TraceContext::default(),
            },
        ),
        3,
    );
    let announced = Arc::new(Announced::default());
    let handler = EventHandler::new(
        rows.clone(),
        Arc::new(holding(key, 1 << 20, "e", "GLACIER")),
        announced.clone(),
        Arc::new(
            Policies::with_overrides(
                Policy {
                    cold_after_days: 90,
                    target: ArchiveClass::Glacier,
                    min_size: 0,
                },
                "",
            )
            .expect("policies"),
        ),
        BUCKET,
        RestoreOptions {
            tier: "Standard".into(),
            max_days: 30,
        },
    );
    let outcomes = handle_all(
        &handler,
        vec![
            restore_completed("first", key, "2026-11-30T00:00:00Z"),
            // SQS delivers it again...
            restore_completed("first", key, "2026-11-30T00:00:00Z"),
            // ...and the archive replays it, or S3 sends it twice.
            restore_completed("replayed", key, "2026-11-30T00:00:00Z"),
            // A later restore of the same object is another event.
            restore_completed("later", key, "2026-12-09T00:00:00Z"),
            // A restore of a key the service does not hold is not announced.
            restore_completed("gone", "users/u/deleted.bin", "2026-11-30T00:00:00Z"),
        ],
    );
    assert_eq!(
        outcomes,
        ["restored", "restored", "restored", "restored", "not-found"]
    );
    let announced = announced.0.lock().unwrap();
    let ids: Vec<_> = announced.iter().map(|e| e.meta.event_id).collect();
    assert_eq!(ids.len(), 4, "{announced:?}");
    assert_eq!((ids[0], ids[0]), (ids[1], ids[2]), "one restore, one id");
    assert_ne!(ids[3], ids[0], "another restore, another id");
    assert_eq!(announced[0], announced[1], "the very same announcement");
    assert!(announced.iter().all(|e| e.key == key));
}

#[test]
fn a_restore_completed_before_its_request_is_recorded_waits_for_the_next_delivery() {
    let key = "users/u/archived.bin";
    let rows = Arc::new(Rows::default());
    rows.insert(key, record("GLACIER", Restore::None), 3);
    let handler = handler(rows.clone(), holding(key, 1 << 20, "e", "GLACIER"));
    let trace = TraceContext {
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: None,
    };
    let body = restore_completed("first", key, "2026-11-30T00:00:00Z");
    runtime().block_on(async {
        // S3 reports the restore done before the request is recorded.
        let first = handler.handle(&Delivery::new("1", body.clone(), 1)).await;
        assert!(
            matches!(first, Disposition::Later(RESTORE_REQUEST_AWAITED)),
            "{first:?}"
        );
        assert_eq!(rows.rows.lock().unwrap()[key].version, 3, "nothing written");
        // Meanwhile the request is recorded; the next delivery announces
        // the restore in its trace, which the row keeps.
        rows.rows
            .lock()
            .unwrap()
            .get_mut(key)
            .unwrap()
            .record
            .restore = Restore::Requested {
            at: 5,
            days: 7,
            trace: trace.clone(),
        };
        let again = handler.handle(&Delivery::new("1", body.clone(), 2)).await;
        assert!(matches!(again, Disposition::Done("restored")), "{again:?}");
    });
    assert_eq!(
        rows.rows.lock().unwrap()[key].record.restore,
        Restore::Restored {
            until: Some(1_795_996_800),
            requested_at: Some(5),
            trace,
        }
    );

    // A restore started outside Stowage, never requested here, is
    // announced on its next delivery all the same.
    let other = "users/u/elsewhere.bin";
    rows.insert(other, record("GLACIER", Restore::None), 1);
    let outcomes = handle_all(
        &handler,
        vec![restore_completed("other", other, "2026-11-30T00:00:00Z")],
    );
    assert_eq!(outcomes, ["restored"]);

    // An object with no row yet (the request makes it from S3's answer)
    // waits too, and is not announced on a later delivery without one.
    let unknown = restore_completed("unknown", "users/u/unknown.bin", "2026-11-30T00:00:00Z");
    runtime().block_on(async {
        let first = handler
            .handle(&Delivery::new("2", unknown.clone(), 1))
            .await;
        assert!(
            matches!(first, Disposition::Later(RESTORE_REQUEST_AWAITED)),
            "{first:?}"
        );
        let again = handler.handle(&Delivery::new("2", unknown, 2)).await;
        assert!(matches!(again, Disposition::Done("not-found")), "{again:?}");
    });
}

#[test]
fn an_object_whose_row_could_not_be_claimed_is_left_due_as_it_was() {
    let rows = cold_rows(1, 1 << 20);
    *rows.throttle_next.lock().unwrap() = 1;
    let bucket = Arc::new(Holding::new(HashMap::new()));
    let outcomes = sweep_with(&sweeper(rows.clone(), &rows, bucket.clone()));
    assert_eq!(outcomes, ["failed"]);
    assert!(bucket.2.lock().unwrap().is_empty(), "not copied");
    // No settlement: nothing would match the claim that was not written.
    assert!(rows.settled.lock().unwrap().is_empty());
    assert_eq!(
        rows.due.lock().unwrap().values().collect::<Vec<_>>(),
        [&1_710_000_000]
    );
}

/// Rows of `key` made by its `Object Created` at sequencer `0A`, due now;
/// the events of what S3 holds since were not applied.
fn row_behind_s3(key: &str) -> (Arc<Rows>, EventHandler) {
    let rows = Arc::new(Rows::default());
    let events = handler(rows.clone(), Holding::new(HashMap::new()));
    assert_eq!(
        handle_all(&events, vec![created("0A", key, 1 << 20, "e")]),
        ["applied"]
    );
    rows.due.lock().unwrap().insert(key.into(), 1_710_000_000);
    (rows, events)
}

#[test]
fn a_copy_that_finds_another_object_puts_the_row_right_from_s3() {
    let key = "users/u/overwritten.bin";
    let (rows, events) = row_behind_s3(key);
    let modified = 1_799_000_000;
    let bucket = Refusing::new(held(2 << 20, "f", "STANDARD", Some(modified)), || {
        CopyError::Changed
    });
    let sweeper = sweeper(rows.clone(), &rows, bucket.clone());
    assert_eq!(sweep_with(&sweeper), ["changed"]);
    let row = rows.rows.lock().unwrap()[key].clone();
    assert_eq!(
        (
            row.version,
            row.record.live,
            row.record.size,
            row.record.etag.as_deref()
        ),
        (3, true, 2 << 20, Some("f")),
        "claimed, then put right"
    );
    // Due by the object S3 holds, 30 days after it was written: not now.
    assert_eq!(
        rows.due.lock().unwrap().get(key),
        Some(&(modified + 30 * 86_400))
    );
    assert_eq!(sweep_with(&sweeper), Vec::<&str>::new());
    assert_eq!(*bucket.copies.lock().unwrap(), 1);
    // The row keeps its place among S3's events: an older one is stale,
    // the first delivered again a duplicate, and the event that made what
    // S3 holds, come at last, applies.
    assert_eq!(
        handle_all(
            &events,
            vec![
                created("09", key, 5, "d"),
                created("0A", key, 1 << 20, "e"),
                created("0B", key, 2 << 20, "f"),
            ]
        ),
        ["stale", "duplicate", "applied"]
    );
    let row = rows.rows.lock().unwrap()[key].record.clone();
    assert_eq!(
        (row.sequencer, row.etag.as_deref()),
        (Sequencer::parse("0B").unwrap(), Some("f"))
    );
}

#[test]
fn a_copy_that_finds_no_object_leaves_the_row_deleted() {
    let key = "users/u/deleted.bin";
    let (rows, events) = row_behind_s3(key);
    let bucket = Refusing::new(None, || CopyError::Changed);
    let sweeper = sweeper(rows.clone(), &rows, bucket.clone());
    assert_eq!(sweep_with(&sweeper), ["changed"]);
    let row = rows.rows.lock().unwrap()[key].clone();
    assert_eq!((row.version, row.record.live), (3, false));
    // Out of the index: no sweep copies it again.
    assert_eq!(rows.due.lock().unwrap().get(key), None);
    assert_eq!(sweep_with(&sweeper), Vec::<&str>::new());
    // An upload of the key after the delete counts as ever.
    assert_eq!(
        handle_all(&events, vec![created("0C", key, 7, "g")]),
        ["applied"]
    );
    let row = rows.rows.lock().unwrap()[key].record.clone();
    assert_eq!((row.live, row.etag.as_deref()), (true, Some("g")));
}

#[test]
fn a_row_an_event_changed_since_the_refused_copy_is_left_to_that_event() {
    let key = "users/u/raced.bin";
    let (rows, _) = row_behind_s3(key);
    let bucket = Refusing::new(held(2 << 20, "f", "STANDARD", None), || CopyError::Changed);
    // The overwrite's own event is applied while its copy is refused.
    let applied = ObjectRecord {
        size: 2 << 20,
        etag: Some("f".into()),
        sequencer: Sequencer::parse("0B").unwrap(),
        ..rows.rows.lock().unwrap()[key].record.clone()
    };
    *bucket.while_refused.lock().unwrap() = Some(Box::new({
        let (rows, applied) = (rows.clone(), applied.clone());
        move || {
            let mut all = rows.rows.lock().unwrap();
            let row = all.get_mut(key).unwrap();
            *row = Versioned {
                record: applied,
                version: row.version + 1,
            };
        }
    }));
    let sweeper = sweeper(rows.clone(), &rows, bucket.clone());
    assert_eq!(sweep_with(&sweeper), ["changed"]);
    let row = rows.rows.lock().unwrap()[key].clone();
    assert_eq!(
        (row.version, row.record),
        (3, applied),
        "claimed, then written by the event alone"
    );
}

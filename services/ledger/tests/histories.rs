//! Random histories of puts, overwrites, copies, storage-class transitions
//! and deletes on a few keys (two of them spelt alike in events), delivered to the real ledger handler with random
//! duplication and reordering, as S3 and EventBridge may deliver them. The
//! ledger's final rows and totals must equal what S3 holds.
//!
//! Messages are handled in batches of random sizes, as one receive hands
//! them out, by one worker or four concurrent ones, and with a store and a
//! bus that fail at random, after which the failed messages come back.
//!
//! The store here is an in-memory model of the DynamoDB table with the same
//! conditional-write semantics (a commit fails if any object row's version or
//! usage revision changed since it was read; reads of several rows are not
//! one transaction).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use proptest::prelude::*;
use serde_json::json;
use stowage_events::{UsageChangedV1, stowage::UploadViolation};
use stowage_ledger::{
    domain::{
        sequencer::Sequencer,
        usage::{ObjectRow, Usage},
    },
    ledger::{CREATION_AWAITED, DELETE_JUDGED_ON_REDELIVERY, Ledger},
    ports::{
        BucketLister, GrantNote, LedgerRows, LedgerStore, ListedObject, ObjectHead, ObjectProbe,
        Snapshot, StoreError, UsagePublisher, UserCommit,
    },
    reconcile::{Reconciler, Report},
};
use stowage_shared::consumer::{Delivery, Disposition, Handler};

const BUCKET: &str = "bucket";
/// Keys `0..KEYS` belong to `USERS` users in turn.
const KEYS: u8 = 4;
const USERS: u8 = 2;

/// Fails one call in `one_in`, from a deterministic sequence.
struct Flaky {
    state: Mutex<u64>,
    one_in: u64,
}

impl Flaky {
    fn new(seed: u64, one_in: u64) -> Option<Self> {
        Some(Self {
            state: Mutex::new(seed),
            one_in,
        })
    }

    fn fails(flaky: &Option<Self>) -> bool {
        let Some(flaky) = flaky else { return false };
        let mut state = flaky.state.lock().unwrap();
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*state >> 33) % flaky.one_in == 0
    }
}

#[derive(Default)]
struct MemoryStore {
    objects: Mutex<HashMap<String, (ObjectRow, u64)>>,
    usage: Mutex<HashMap<String, Usage>>,
    grants: Mutex<HashMap<String, GrantNote>>,
    flaky: Option<Flaky>,
}

#[async_trait]
impl LedgerStore for MemoryStore {
    async fn snapshots(&self, wanted: &[(&str, &str)]) -> Result<Vec<Snapshot>, StoreError> {
        // DynamoDB refuses a read naming a sort key over 1024 bytes.
        if let Some((_, key)) = wanted
            .iter()
            .find(|(_, key)| "GRANT#".len() + key.len() > 1024)
        {
            return Err(StoreError::Other(anyhow::anyhow!(
                "ValidationException: the sort key of {key} is too long"
            )));
        }
        let mut snapshots = Vec::new();
        for (user, key) in wanted {
            // Rows are read one at a time; other workers may write between.
            tokio::task::yield_now().await;
            let usage = self.usage.lock().unwrap().get(*user).cloned();
            tokio::task::yield_now().await;
            let object = self.objects.lock().unwrap().get(*key).cloned();
            snapshots.push(Snapshot {
                object_version: object.as_ref().map(|(_, v)| *v),
                object: object.map(|(row, _)| row),
                usage_exists: usage.is_some(),
                usage: usage.unwrap_or_default(),
                grant: self.grants.lock().unwrap().get(*key).cloned(),
            });
        }
        Ok(snapshots)
    }

    async fn commit_all(&self, commits: &[UserCommit]) -> Result<(), StoreError> {
        if Flaky::fails(&self.flaky) {
            return Err(StoreError::Other(anyhow::anyhow!(
                "the store is unavailable"
            )));
        }
        let mut objects = self.objects.lock().unwrap();
        let mut usage = self.usage.lock().unwrap();
        let mut users = HashSet::new();
        let mut keys = HashSet::new();
        for commit in commits {
            assert!(
                users.insert(&commit.user),
                "a user twice in one transaction"
            );
            if usage.get(&commit.user).map(|u| u.revision) != commit.usage_read {
                return Err(StoreError::Conflict);
            }
            for object in &commit.objects {
                assert!(keys.insert(&object.key), "a key twice in one transaction");
                if objects.get(&object.key).map(|(_, v)| *v) != object.version_read {
                    return Err(StoreError::Conflict);
                }
            }
        }
        for commit in commits {
            for object in &commit.objects {
                let version = object.version_read.map_or(1, |v| v + 1);
                objects.insert(object.key.clone(), (object.row.clone(), version));
            }
            usage.insert(commit.user.clone(), commit.usage.clone());
        }
        Ok(())
    }

    async fn record_grant(&self, grant: &GrantNote) -> Result<(), StoreError> {
        self.grants
            .lock()
            .unwrap()
            .insert(grant.key.clone(), grant.clone());
        Ok(())
    }
}

#[async_trait]
impl LedgerRows for MemoryStore {
    async fn objects(&self, user: &str) -> Result<Vec<(String, ObjectRow, u64)>, StoreError> {
        let prefix = format!("users/{user}/");
        Ok(self
            .objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .map(|(key, (row, version))| (key.clone(), row.clone(), *version))
            .collect())
    }

    async fn users(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.usage.lock().unwrap().keys().cloned().collect())
    }

    async fn replace_usage(
        &self,
        user: &str,
        before: &Snapshot,
        usage: &Usage,
    ) -> Result<(), StoreError> {
        let mut all = self.usage.lock().unwrap();
        if all.get(user).map(|u| u.revision) != before.usage_exists.then_some(before.usage.revision)
        {
            return Err(StoreError::Conflict);
        }
        all.insert(user.to_string(), usage.clone());
        Ok(())
    }
}

/// What S3 holds once the history has happened: HEAD answers from it.
struct Bucket(BTreeMap<String, Stored>);

#[async_trait]
impl ObjectProbe for Bucket {
    async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectHead>> {
        Ok(self.0.get(key).map(|s| ObjectHead {
            size: s.size,
            etag: Some(s.etag.clone()),
            storage_class: s.class.clone(),
        }))
    }
}

#[derive(Default)]
struct Published {
    events: Mutex<Vec<UsageChangedV1>>,
    flaky: Option<Flaky>,
    /// Entries to refuse before any other is taken.
    refuse_next: Mutex<u32>,
}

#[async_trait]
impl UsagePublisher for Published {
    async fn publish(&self, event: &UsageChangedV1) -> anyhow::Result<()> {
        {
            let mut refuse = self.refuse_next.lock().unwrap();
            if *refuse > 0 {
                *refuse -= 1;
                anyhow::bail!("the bus refused the entry");
            }
        }
        if Flaky::fails(&self.flaky) {
            anyhow::bail!("the bus refused the entry");
        }
        self.events.lock().unwrap().push(event.clone());
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Stored {
    size: u64,
    class: String,
    etag: String,
}

#[derive(Debug, Clone)]
enum Op {
    Upload {
        key: u8,
        size: u64,
        post: bool,
    },
    CopyToClass {
        key: u8,
        class: &'static str,
    },
    /// S3 reports it without a sequencer; `sequenced` gives it one anyway,
    /// as the ledger also takes.
    Transition {
        key: u8,
        class: &'static str,
        sequenced: bool,
    },
    Delete {
        key: u8,
    },
}

const CLASSES: [&str; 3] = ["STANDARD_IA", "GLACIER_IR", "GLACIER"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..KEYS, 0u64..1_000, any::<bool>()).prop_map(|(key, size, post)| Op::Upload { key, size, post }),
        1 => (0u8..KEYS, 0usize..3).prop_map(|(key, c)| Op::CopyToClass { key, class: CLASSES[c] }),
        1 => (0u8..KEYS, 0usize..3, proptest::bool::weighted(0.25)).prop_map(|(key, c, sequenced)| Op::Transition { key, class: CLASSES[c], sequenced }),
        2 => (0u8..KEYS).prop_map(|key| Op::Delete { key }),
    ]
}

fn user_of(key: u8) -> String {
    format!("u{}", key % USERS)
}

/// Keys 0 and 2 (one user's) are `a+b` and `a%2Bb`: percent-encoded as
/// the events carry them, the first reads as the second too.
fn key_name(key: u8) -> String {
    match key {
        0 => "users/u0/a+b".into(),
        2 => "users/u0/a%2Bb".into(),
        _ => format!("users/{}/file-{key}.bin", user_of(key)),
    }
}

/// `key` as S3's events on EventBridge spell it: percent-encoded.
fn event_key(key: &str) -> String {
    key.replace('%', "%25")
        .replace('+', "%2B")
        .replace(' ', "%20")
}

/// Runs the history against a simulated bucket; returns the S3 events it
/// produced (in order) and the bucket's final contents.
fn simulate(ops: &[Op], suffixes: &[u8]) -> (Vec<String>, BTreeMap<String, Stored>) {
    let mut bucket: BTreeMap<String, Stored> = BTreeMap::new();
    let mut events = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        // Sequencers grow with time; their lengths vary, so ordering needs
        // the zero-padding rule.
        let extra = suffixes.get(i).copied().unwrap_or(0) % 3;
        let sequencer = format!("{:012X}{}", i + 1, "7".repeat(extra as usize));
        let etag = format!("etag{i}");
        let mut unsequenced = false;
        let (detail_type, key, object, reason, class) = match op {
            Op::Upload { key, size, post } => {
                let name = key_name(*key);
                bucket.insert(
                    name.clone(),
                    Stored {
                        size: *size,
                        class: "STANDARD".into(),
                        etag: etag.clone(),
                    },
                );
                let reason = if *post { "POST Object" } else { "PutObject" };
                (
                    "Object Created",
                    name,
                    json!({"size": size, "etag": etag}),
                    reason,
                    None,
                )
            }
            Op::CopyToClass { key, class } => {
                let name = key_name(*key);
                let Some(stored) = bucket.get_mut(&name) else {
                    continue;
                };
                stored.class = class.to_string();
                stored.etag = etag.clone();
                let size = stored.size;
                (
                    "Object Created",
                    name,
                    json!({"size": size, "etag": etag}),
                    "CopyObject",
                    None,
                )
            }
            Op::Transition {
                key,
                class,
                sequenced,
            } => {
                let name = key_name(*key);
                let Some(stored) = bucket.get_mut(&name) else {
                    continue;
                };
                stored.class = class.to_string();
                let (size, etag) = (stored.size, stored.etag.clone());
                unsequenced = !sequenced;
                (
                    "Object Storage Class Changed",
                    name,
                    json!({"size": size, "etag": etag}),
                    "Lifecycle Transition",
                    Some(*class),
                )
            }
            Op::Delete { key } => {
                let name = key_name(*key);
                bucket.remove(&name);
                ("Object Deleted", name, json!({}), "DeleteObject", None)
            }
        };
        let mut object = object;
        object["key"] = json!(event_key(&key));
        if !unsequenced {
            object["sequencer"] = json!(sequencer);
        }
        let mut detail =
            json!({"version": "0", "bucket": {"name": BUCKET}, "object": object, "reason": reason});
        if let Some(class) = class {
            detail["destination-storage-class"] = json!(class);
        }
        events.push(
            json!({
                "version": "0", "id": format!("id-{i}"), "detail-type": detail_type, "source": "aws.s3",
                "account": "1", "time": "2026-11-23T10:00:00Z", "region": "us-east-1", "resources": [],
                "detail": detail,
            })
            .to_string(),
        );
    }
    (events, bucket)
}

fn expected_usage(
    bucket: &BTreeMap<String, Stored>,
    user: &str,
) -> (u64, u64, BTreeMap<String, u64>) {
    let prefix = format!("users/{user}/");
    let mut by_class = BTreeMap::new();
    let mine: Vec<&Stored> = bucket
        .iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .map(|(_, stored)| stored)
        .collect();
    for stored in &mine {
        *by_class.entry(stored.class.clone()).or_default() += stored.size;
    }
    by_class.retain(|_, bytes| *bytes > 0);
    (
        mine.iter().map(|s| s.size).sum(),
        mine.len() as u64,
        by_class,
    )
}

fn ledger(
    bucket: BTreeMap<String, Stored>,
    store: MemoryStore,
    published: Published,
) -> (Ledger, Arc<MemoryStore>, Arc<Published>) {
    let store = Arc::new(store);
    let published = Arc::new(published);
    let ledger = Ledger::new(
        store.clone(),
        Arc::new(Bucket(bucket)),
        published.clone(),
        BUCKET,
    );
    (ledger, store, published)
}

/// The ledger's rows and totals equal the bucket, and the last
/// `UsageChanged.v1` of each user announced the final totals.
fn check(
    store: &MemoryStore,
    published: &Published,
    bucket: &BTreeMap<String, Stored>,
) -> Result<(), TestCaseError> {
    let all_usage = store.usage.lock().unwrap().clone();
    let events = published.events.lock().unwrap();
    for user in (0..USERS).map(user_of) {
        let usage = all_usage.get(&user).cloned().unwrap_or_default();
        let (bytes, count, mut by_class) = expected_usage(bucket, &user);
        let mut got_by_class = usage.by_storage_class.clone();
        got_by_class.retain(|_, b| *b > 0);
        by_class.retain(|_, b| *b > 0);
        prop_assert_eq!(usage.used_bytes, bytes);
        prop_assert_eq!(usage.object_count, count);
        prop_assert_eq!(got_by_class, by_class);
        let last = events
            .iter()
            .filter(|e| e.meta.user_id == user)
            .max_by_key(|e| e.revision);
        if let Some(last) = last {
            prop_assert_eq!(last.revision, usage.revision);
            prop_assert_eq!(last.used_bytes, usage.used_bytes);
        } else {
            prop_assert_eq!(usage.revision, 0, "changes of {} never announced", user);
        }
    }
    let objects = store.objects.lock().unwrap();
    for key in 0..KEYS {
        let name = key_name(key);
        let row = objects.get(&name).map(|(row, _)| row);
        match bucket.get(&name) {
            Some(stored) => {
                let row = row.expect("a row for every stored object");
                prop_assert!(row.live);
                prop_assert_eq!(row.size, stored.size);
                prop_assert_eq!(&row.storage_class, &stored.class);
            }
            None => prop_assert!(row.is_none_or(|r| !r.live), "{name} must not be live"),
        }
    }
    Ok(())
}

fn deliveries(events: &[String], copies: &[u8]) -> Vec<String> {
    events
        .iter()
        .zip(copies.iter().chain(std::iter::repeat(&0)))
        .flat_map(|(e, c)| std::iter::repeat_n(e.clone(), 1 + usize::from(*c % 3)))
        .collect()
}

fn history() -> impl Strategy<Value = (Vec<Op>, Vec<u8>, Vec<u8>, u64)> {
    (
        proptest::collection::vec(op(), 1..25),
        proptest::collection::vec(any::<u8>(), 25),
        proptest::collection::vec(any::<u8>(), 25),
        any::<u64>(),
    )
}

/// A deterministic shuffle from `seed` (Fisher–Yates with an LCG).
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = (seed >> 33) as usize % (i + 1);
        items.swap(i, j);
    }
}

/// A queue of message bodies handed out in batches of 1 to `max_batch`,
/// where messages that were not handled to completion come back.
struct Queue {
    /// Each message with the times it was received.
    messages: Mutex<Vec<(String, u32)>>,
    seed: Mutex<u64>,
    max_batch: usize,
}

impl Queue {
    fn new(messages: Vec<String>, seed: u64, max_batch: usize) -> Arc<Self> {
        Arc::new(Self {
            messages: Mutex::new(messages.into_iter().map(|m| (m, 0)).collect()),
            seed: Mutex::new(seed),
            max_batch,
        })
    }

    fn receive(&self) -> Vec<Delivery> {
        let size = {
            let mut seed = self.seed.lock().unwrap();
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            1 + (*seed >> 33) as usize % self.max_batch
        };
        let mut messages = self.messages.lock().unwrap();
        let keep = messages.len().saturating_sub(size);
        messages
            .split_off(keep)
            .into_iter()
            .map(|(body, received)| Delivery::new("", body, received + 1))
            .collect()
    }

    /// Puts back the messages not done; the first of them goes to the far
    /// end, so redelivery also reorders.
    fn settle(&self, deliveries: Vec<Delivery>, outcomes: Vec<Disposition>, flaky: bool) {
        assert_eq!(deliveries.len(), outcomes.len());
        for (delivery, outcome) in deliveries.into_iter().zip(outcomes) {
            match outcome {
                Disposition::Done(_) => {}
                outcome if comes_back(&outcome, flaky) => {
                    let message = (delivery.body, delivery.receive_count);
                    self.messages.lock().unwrap().insert(0, message);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

/// Whether a message left with `outcome` must come back: a delete judged
/// when delivered again, a change of class that came too early, or (with
/// `flaky` stores) any passing failure.
fn comes_back(outcome: &Disposition, flaky: bool) -> bool {
    match outcome {
        Disposition::Later(label) => {
            [DELETE_JUDGED_ON_REDELIVERY, CREATION_AWAITED].contains(label)
        }
        Disposition::Retry(_) => flaky,
        _ => false,
    }
}

/// Hands the ledger one message, and again, as SQS does after the
/// visibility timeout, while it is a delete judged on redelivery.
async fn judged(ledger: &Ledger, id: &str, body: String) -> Disposition {
    let mut delivery = Delivery::new(id, body, 1);
    loop {
        match ledger.handle(&delivery).await {
            Disposition::Later(DELETE_JUDGED_ON_REDELIVERY) if delivery.receive_count == 1 => {
                delivery.receive_count += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Runs `workers` workers over the queue until it is empty.
async fn drain(ledger: Arc<Ledger>, queue: Arc<Queue>, workers: usize, flaky: bool) {
    let workers: Vec<_> = (0..workers)
        .map(|_| {
            let (ledger, queue) = (ledger.clone(), queue.clone());
            tokio::spawn(async move {
                // Bounded, so a message that can never be done fails the test.
                for _ in 0..10_000 {
                    let deliveries = queue.receive();
                    if deliveries.is_empty() {
                        return;
                    }
                    let outcomes = ledger.handle_batch(&deliveries).await;
                    queue.settle(deliveries, outcomes, flaky);
                }
                panic!("the queue never drained");
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn any_delivery_order_with_duplicates_ends_in_the_bucket_s_state((ops, suffixes, copies, seed) in history()) {
        let (events, bucket) = simulate(&ops, &suffixes);
        let mut messages = deliveries(&events, &copies);
        shuffle(&mut messages, seed);
        let (ledger, store, published) = ledger(bucket.clone(), MemoryStore::default(), Published::default());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            // A change of class that came too early comes back after the
            // rest, as SQS redelivers it; a bounded number of times.
            let mut queue: std::collections::VecDeque<(String, u32)> =
                messages.into_iter().map(|m| (m, 0)).collect();
            for i in 0..10_000 {
                let Some((body, received)) = queue.pop_front() else { return };
                let delivery = Delivery::new(i.to_string(), body, received + 1);
                match ledger.handle(&delivery).await {
                    Disposition::Done(_) => {}
                    outcome if comes_back(&outcome, false) => {
                        queue.push_back((delivery.body, delivery.receive_count));
                    }
                    outcome => panic!("{outcome:?}"),
                }
            }
            panic!("an early change of class never applied");
        });
        check(&store, &published, &bucket)?;
        // Revisions only grow across the changes the ledger announced.
        let events = published.events.lock().unwrap();
        for user in (0..USERS).map(user_of) {
            let revisions: Vec<u64> = events.iter().filter(|e| e.meta.user_id == user).map(|e| e.revision).collect();
            prop_assert!(revisions.windows(2).all(|w| w[0] <= w[1]), "{revisions:?}");
        }
    }

    /// The same, handled in batches as one receive hands them out.
    #[test]
    fn batches_end_in_the_bucket_s_state((ops, suffixes, copies, seed) in history()) {
        let (events, bucket) = simulate(&ops, &suffixes);
        let mut messages = deliveries(&events, &copies);
        shuffle(&mut messages, seed);
        let (ledger, store, published) = ledger(bucket.clone(), MemoryStore::default(), Published::default());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(drain(Arc::new(ledger), Queue::new(messages, seed, 10), 1, false));
        check(&store, &published, &bucket)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Four workers applying batches concurrently: the conditional commits
    /// keep the totals exact.
    #[test]
    fn concurrent_workers_keep_the_totals_exact((ops, suffixes, copies, seed) in history()) {
        let (events, bucket) = simulate(&ops, &suffixes);
        let mut messages = deliveries(&events, &copies);
        shuffle(&mut messages, seed);
        let (ledger, store, published) = ledger(bucket.clone(), MemoryStore::default(), Published::default());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
        runtime.block_on(drain(Arc::new(ledger), Queue::new(messages, seed, 10), 4, false));
        check(&store, &published, &bucket)?;
    }

    /// Four workers, with a store and a bus that fail now and then: the
    /// failed messages come back, and the ledger still ends exact, with the
    /// final totals announced.
    #[test]
    fn failures_and_redelivery_keep_the_totals_exact((ops, suffixes, copies, seed) in history()) {
        let (events, bucket) = simulate(&ops, &suffixes);
        let mut messages = deliveries(&events, &copies);
        shuffle(&mut messages, seed);
        let store = MemoryStore { flaky: Flaky::new(seed ^ 1, 4), ..MemoryStore::default() };
        let published = Published { flaky: Flaky::new(seed ^ 2, 4), ..Published::default() };
        let (ledger, store, published) = ledger(bucket.clone(), store, published);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
        runtime.block_on(drain(Arc::new(ledger), Queue::new(messages, seed, 10), 4, true));
        check(&store, &published, &bucket)?;
    }
}

/// An `Object Created` event as S3 sends it on EventBridge.
fn created(sequencer: &str, key: &str, size: u64, etag: &str, reason: &str) -> String {
    json!({
        "version": "0", "id": format!("id-{sequencer}"), "detail-type": "Object Created",
        "source": "aws.s3", "account": "1", "time": "2026-11-23T10:00:00Z",
        "region": "us-east-1", "resources": [],
        "detail": {
            "version": "0", "bucket": {"name": BUCKET}, "reason": reason,
            "object": {"key": key, "size": size, "etag": etag, "sequencer": sequencer},
        },
    })
    .to_string()
}

#[test]
fn a_copy_in_parts_into_an_archive_class_is_a_transition_not_an_upload_without_a_grant() {
    let moved = key_name(1);
    let archived_directly = key_name(3);
    let stored = |size, class: &str, etag: &str| Stored {
        size,
        class: class.into(),
        etag: etag.into(),
    };
    // What S3 holds at the end: the first object copied onto itself into
    // GLACIER (a new entity tag), the second uploaded straight into GLACIER.
    let bucket = BTreeMap::from([
        (moved.clone(), stored(7000, "GLACIER", "copied")),
        (archived_directly.clone(), stored(5000, "GLACIER", "direct")),
    ]);
    let (ledger, store, published) =
        ledger(bucket.clone(), MemoryStore::default(), Published::default());
    let messages = [
        created("01", &moved, 7000, "uploaded", "PutObject"),
        created("02", &moved, 7000, "copied", "CompleteMultipartUpload"),
        created(
            "03",
            &archived_directly,
            5000,
            "direct",
            "CompleteMultipartUpload",
        ),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (i, body) in messages.into_iter().enumerate() {
            let outcome = ledger.handle(&Delivery::new(i.to_string(), body, 1)).await;
            assert!(
                matches!(outcome, Disposition::Done("applied")),
                "{outcome:?}"
            );
        }
    });
    let events = published.events.lock().unwrap();
    let violations: Vec<_> = events
        .iter()
        .map(|e| (e.key.as_str(), e.violation, e.reclassified))
        .collect();
    assert_eq!(
        violations,
        [
            // An upload that no grant allowed is reported...
            (moved.as_str(), Some(UploadViolation::NoGrant), false),
            // ...its move to GLACIER in parts is not, and is no upload...
            (moved.as_str(), None, true),
            // ...but an object arriving in GLACIER without a grant is.
            (
                archived_directly.as_str(),
                Some(UploadViolation::NoGrant),
                false
            ),
        ]
    );
    assert_eq!(
        events[1].by_storage_class,
        BTreeMap::from([("GLACIER".to_string(), 7000)])
    );
    drop(events);
    check(&store, &published, &bucket).unwrap();
}

/// An `Object Deleted` event as S3 sends it on EventBridge.
fn deleted(sequencer: &str, key: &str) -> String {
    json!({
        "version": "0", "id": format!("id-{sequencer}"), "detail-type": "Object Deleted",
        "source": "aws.s3", "account": "1", "time": "2026-11-23T10:00:00Z",
        "region": "us-east-1", "resources": [],
        "detail": {
            "version": "0", "bucket": {"name": BUCKET}, "reason": "DeleteObject",
            "object": {"key": key, "sequencer": sequencer},
        },
    })
    .to_string()
}

#[test]
fn an_ambiguous_key_never_moves_one_object_s_events_onto_another() {
    // The user keeps 1,000,000 bytes under the literal key `a%2Bb`, then
    // uploads one byte to `a+b` and deletes it at once. Percent-encoded as
    // the events carry them, the second object's key reads `a%2Bb` too.
    let kept = "users/u0/a%2Bb";
    let bucket = BTreeMap::from([(
        kept.to_string(),
        Stored {
            size: 1_000_000,
            class: "STANDARD".into(),
            etag: "kept".into(),
        },
    )]);
    let (ledger, store, published) =
        ledger(bucket.clone(), MemoryStore::default(), Published::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcomes = runtime.block_on(async {
        let mut outcomes = Vec::new();
        for (i, body) in [
            created("01", "users/u0/a%252Bb", 1_000_000, "kept", "PutObject"),
            // By the time these are handled S3 holds no `a+b`.
            created("05", "users/u0/a%2Bb", 1, "brief", "PutObject"),
            deleted("06", "users/u0/a%2Bb"),
        ]
        .into_iter()
        .enumerate()
        {
            let outcome = judged(&ledger, &i.to_string(), body).await;
            outcomes.push(format!("{outcome:?}"));
        }
        outcomes
    });
    assert_eq!(
        outcomes,
        [
            "Done(\"applied\")",
            "Done(\"superseded\")",
            "Done(\"superseded\")"
        ]
    );
    let usage = store.usage.lock().unwrap()["u0"].clone();
    assert_eq!((usage.used_bytes, usage.object_count), (1_000_000, 1));
    let objects = store.objects.lock().unwrap();
    assert!(objects[kept].0.live);
    assert!(objects.get("users/u0/a+b").is_none_or(|(row, _)| !row.live));
    drop(objects);
    check(&store, &published, &bucket).unwrap();
}

/// A store that counts one object at `key` (its only row, applied at
/// sequencer `01`), as its user's only one.
fn counting(key: &str, size: u64, class: &str, etag: &str) -> MemoryStore {
    let row = ObjectRow {
        live: true,
        size,
        storage_class: class.into(),
        etag: Some(etag.into()),
        sequencer: Sequencer::parse("01").unwrap(),
        applied: vec![format!("created:{etag}:{size}:{class}")],
        reclassified: false,
        revision: 0,
        violation: None,
    };
    let user = key.split('/').nth(1).unwrap().to_string();
    MemoryStore {
        objects: Mutex::new(HashMap::from([(key.to_string(), (row, 1))])),
        usage: Mutex::new(HashMap::from([(
            user,
            Usage {
                used_bytes: size,
                object_count: 1,
                by_storage_class: BTreeMap::from([(class.to_string(), size)]),
                revision: 1,
            },
        )])),
        ..MemoryStore::default()
    }
}

#[test]
fn a_delete_of_an_ambiguous_key_never_takes_an_object_s3_still_holds() {
    // The ledger counts `a%2Bb` (key 2) with tag e2. The user overwrites it
    // (tag e3), then uploads `a+b` (key 0) and deletes it. Percent-encoded,
    // `a+b` reads `a%2Bb` too, and S3 holds e3 there: the delete is not
    // the overwritten object's.
    let (kept, brief) = (key_name(2), key_name(0));
    let store = counting(&kept, 100, "STANDARD", "e2");
    let stored = Stored {
        size: 300,
        class: "STANDARD".into(),
        etag: "e3".into(),
    };
    let bucket = BTreeMap::from([(kept.clone(), stored)]);
    let (ledger, store, published) = ledger(bucket.clone(), store, Published::default());
    handle_each(
        &ledger,
        [
            deleted("04", &event_key(&brief)),
            created("02", &event_key(&kept), 300, "e3", "PutObject"),
            created("03", &event_key(&brief), 1, "e1", "PutObject"),
        ],
    );
    let objects = store.objects.lock().unwrap();
    assert_eq!(objects[&kept].0.etag.as_deref(), Some("e3"));
    assert!(objects.get(&brief).is_none_or(|(row, _)| !row.live));
    drop(objects);
    check(&store, &published, &bucket).unwrap();
}

/// A listing of the bucket taken at one moment, while the ledger goes on:
/// `meanwhile` is handled by the ledger during the listing, after the
/// moment it shows.
struct ListingThen {
    listed: Vec<ListedObject>,
    ledger: Arc<Ledger>,
    meanwhile: Vec<String>,
}

#[async_trait]
impl BucketLister for ListingThen {
    async fn list(&self, _prefix: &str) -> anyhow::Result<Vec<ListedObject>> {
        for (i, body) in self.meanwhile.iter().enumerate() {
            let outcome = judged(&self.ledger, &format!("meanwhile-{i}"), body.clone()).await;
            assert!(matches!(outcome, Disposition::Done(_)), "{outcome:?}");
        }
        Ok(self.listed.clone())
    }

    /// `u1`, and a folder under `users/` that names no user.
    async fn users(&self) -> anyhow::Result<Vec<String>> {
        Ok(vec!["u1".into(), "not a user".into()])
    }
}

/// One thread, as the tests that deliver their messages in order use.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Reconciles every user with `--fix`, listing `listed` while the ledger
/// handles `meanwhile`; returns the store and the report.
fn reconcile_while(
    listed: Vec<ListedObject>,
    meanwhile: Vec<String>,
) -> (Arc<MemoryStore>, Report) {
    let (ledger, store, published) = ledger(
        BTreeMap::new(),
        MemoryStore::default(),
        Published::default(),
    );
    let ledger = Arc::new(ledger);
    let report = runtime().block_on(async {
        let lister = ListingThen {
            listed,
            ledger: ledger.clone(),
            meanwhile,
        };
        Reconciler::new(store.clone(), store.clone(), Arc::new(lister), published)
            .run(None, true)
            .await
            .expect("reconciled")
    });
    (store, report)
}

#[test]
fn reconcile_never_undoes_an_upload_committed_while_it_listed() {
    let key = key_name(1);
    // The listing was taken before the upload; the ledger commits the
    // upload's event while the listing is on its way.
    let (store, report) = reconcile_while(
        Vec::new(),
        vec![created("01", &key, 100, "up", "POST Object")],
    );
    assert_eq!(store.usage.lock().unwrap()["u1"].used_bytes, 100);
    assert!(store.objects.lock().unwrap()[&key].0.live);
    // A folder that names no user is no user's.
    let users: Vec<_> = report.users.iter().map(|u| u.user.as_str()).collect();
    assert_eq!(users, ["u1"]);
}

#[test]
fn reconcile_of_a_name_that_is_no_user_id_is_refused_and_announces_nothing() {
    let (ledger, store, published) = ledger(
        BTreeMap::new(),
        MemoryStore::default(),
        Published::default(),
    );
    let lister = ListingThen {
        listed: Vec::new(),
        ledger: Arc::new(ledger),
        meanwhile: Vec::new(),
    };
    let reconciler = Reconciler::new(store.clone(), store, Arc::new(lister), published.clone());
    let error = runtime()
        .block_on(reconciler.run(Some("Bad.Name"), true))
        .expect_err("refused");
    assert!(error.to_string().contains("not a user id"), "{error}");
    assert!(published.events.lock().unwrap().is_empty());
}

#[test]
fn reconcile_never_revives_an_object_deleted_while_it_listed() {
    let key = key_name(1);
    // The listing shows the upload; its delete follows, and the ledger
    // commits both while the listing is on its way.
    let (store, report) = reconcile_while(
        vec![ListedObject {
            key: key.clone(),
            size: 100,
            etag: Some("up".into()),
            storage_class: "STANDARD".into(),
        }],
        vec![
            created("01", &key, 100, "up", "POST Object"),
            deleted("02", &key),
        ],
    );
    assert_eq!(store.usage.lock().unwrap()["u1"].used_bytes, 0);
    assert!(!store.objects.lock().unwrap()[&key].0.live);
    // The drift it saw is reported, as left to the key's events.
    let left: Vec<_> = report
        .drift
        .iter()
        .map(|d| (d.key.as_str(), d.corrected))
        .collect();
    assert_eq!(left, [(key.as_str(), false)]);
    assert!(!report.settled());
}

#[test]
fn a_correction_whose_announcement_failed_is_announced_by_the_next_run() {
    let key = key_name(1);
    let (ledger, store, published) = ledger(
        BTreeMap::new(),
        MemoryStore::default(),
        Published::default(),
    );
    let ledger = Arc::new(ledger);
    runtime().block_on(async {
        // Counted, but S3 no longer holds it (its delete event was lost).
        ledger
            .handle(&Delivery::new(
                "0".to_string(),
                created("01", &key, 100, "up", "POST Object"),
                1,
            ))
            .await;
        let reconciler = || {
            let lister = ListingThen {
                listed: Vec::new(),
                ledger: ledger.clone(),
                meanwhile: Vec::new(),
            };
            Reconciler::new(
                store.clone(),
                store.clone(),
                Arc::new(lister),
                published.clone(),
            )
        };
        *published.refuse_next.lock().unwrap() = 1;
        assert!(reconciler().run(Some("u1"), true).await.is_err());
        let usage = store.usage.lock().unwrap()["u1"].clone();
        assert_eq!(usage.used_bytes, 0, "the correction is committed");
        assert!(
            published
                .events
                .lock()
                .unwrap()
                .iter()
                .all(|e| e.revision < usage.revision),
            "its announcement failed"
        );
        let report = reconciler()
            .run(Some("u1"), true)
            .await
            .expect("reconciled");
        assert!(report.clean());
        let events = published.events.lock().unwrap();
        let last = events.last().expect("an announcement");
        assert_eq!(
            (last.revision, last.used_bytes),
            (usage.revision, usage.used_bytes)
        );
    });
}

/// An `UploadGranted.v1` as intake publishes it, issued at `issued` (RFC
/// 3339) for 15 minutes.
fn granted(grant_id: &str, key: &str, issued: &str, expires: &str) -> String {
    json!({
        "version": "0", "id": format!("id-{grant_id}"), "detail-type": "UploadGranted.v1",
        "source": "stowage.intake", "account": "1", "time": issued,
        "region": "us-east-1", "resources": [],
        "detail": {
            "event_id": grant_id, "occurred_at": issued, "user_id": "u1",
            "grant_id": grant_id, "key": key, "max_size": 100,
            "content_type": "text/plain", "expires_at": expires,
        },
    })
    .to_string()
}

/// `event` as S3 sent it at `time` (RFC 3339).
fn at(event: String, time: &str) -> String {
    let mut event: serde_json::Value = serde_json::from_str(&event).unwrap();
    event["time"] = json!(time);
    event.to_string()
}

/// Hands the ledger each message in turn; each is done with.
fn handle_each(ledger: &Ledger, bodies: impl IntoIterator<Item = String>) {
    runtime().block_on(async {
        for (i, body) in bodies.into_iter().enumerate() {
            let outcome = judged(ledger, &i.to_string(), body).await;
            assert!(matches!(outcome, Disposition::Done(_)), "{outcome:?}");
        }
    });
}

#[test]
fn an_upload_is_never_credited_to_a_grant_issued_after_it() {
    let key = key_name(1);
    let first = "00000000-0000-4000-8000-000000000001";
    let second = "00000000-0000-4000-8000-000000000002";
    let uploaded = |sequencer: &str, size: u64, time: &str| {
        at(
            created(sequencer, &key, size, sequencer, "POST Object"),
            time,
        )
    };
    let (ledger, _, published) = ledger(
        BTreeMap::new(),
        MemoryStore::default(),
        Published::default(),
    );
    handle_each(
        &ledger,
        [
            granted(first, &key, "2026-11-23T10:00:00Z", "2026-11-23T10:15:00Z"),
            // A second grant for the key, issued after the first upload...
            granted(second, &key, "2026-11-23T10:05:00Z", "2026-11-23T10:20:00Z"),
            // ...whose event the ledger handles only now: it came under the
            // first grant, and is larger than the second allows.
            uploaded("01", 90, "2026-11-23T10:01:00Z"),
            // The upload under the second grant.
            uploaded("02", 100, "2026-11-23T10:06:00Z"),
        ],
    );
    let events = published.events.lock().unwrap();
    let credited: Vec<_> = events
        .iter()
        .map(|e| (e.grant_id.map(|g| g.to_string()), e.violation))
        .collect();
    assert_eq!(credited, [(None, None), (Some(second.to_string()), None)]);
}

#[test]
fn an_event_delivered_again_after_another_change_is_announced_as_repeated() {
    let key = key_name(1);
    let (ledger, _, published) = ledger(
        BTreeMap::new(),
        MemoryStore::default(),
        Published::default(),
    );
    let upload = created("01", &key, 100, "up", "POST Object");
    let another = created("01", &key_name(3), 7, "up", "POST Object");
    runtime().block_on(async {
        for (id, body) in [&upload, &upload, &another, &upload]
            .into_iter()
            .enumerate()
        {
            let delivery = Delivery::new(id.to_string(), body.clone(), 1);
            ledger.handle(&delivery).await;
        }
    });
    let events = published.events.lock().unwrap();
    let announced: Vec<_> = events.iter().map(|e| (e.revision, e.repeated)).collect();
    // Delivered again before any other change, the upload's announcement
    // is the one its change made (the first may not have been published);
    // after another key's change, the totals are another change's.
    assert_eq!(announced, [(1, false), (1, false), (2, false), (2, true)]);
}

#[test]
fn a_move_to_another_class_names_no_grant_even_when_delivered_again() {
    let key = key_name(1);
    let first = "00000000-0000-4000-8000-000000000001";
    let second = "00000000-0000-4000-8000-000000000002";
    // S3 holds the upload copied onto itself into GLACIER.
    let bucket = BTreeMap::from([(
        key.clone(),
        Stored {
            size: 100,
            class: "GLACIER".into(),
            etag: "copied".into(),
        },
    )]);
    let (ledger, store, published) =
        ledger(bucket.clone(), MemoryStore::default(), Published::default());
    let copy = at(
        created("02", &key, 100, "copied", "CopyObject"),
        "2026-11-23T10:06:00Z",
    );
    handle_each(
        &ledger,
        [
            granted(first, &key, "2026-11-23T10:00:00Z", "2026-11-23T10:15:00Z"),
            at(
                created("01", &key, 100, "up", "POST Object"),
                "2026-11-23T10:01:00Z",
            ),
            // The user is granted an overwrite of the key and has not
            // uploaded it when lifecycle moves the object to GLACIER.
            granted(second, &key, "2026-11-23T10:05:00Z", "2026-11-23T10:20:00Z"),
            copy.clone(),
            copy,
        ],
    );
    let events = published.events.lock().unwrap();
    let announced: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.grant_id.map(|g| g.to_string()),
                e.uploaded_at.is_some(),
                e.reclassified,
                e.repeated,
            )
        })
        .collect();
    assert_eq!(
        announced,
        [
            (Some(first.to_string()), true, false, false),
            // Neither the move nor its second delivery (announcing the
            // same change: nothing changed in between) completes the
            // second grant, whose upload is still to come.
            (None, false, true, false),
            (None, false, true, false),
        ]
    );
    assert_eq!(
        events[1].by_storage_class,
        BTreeMap::from([("GLACIER".to_string(), 100)])
    );
    drop(events);
    check(&store, &published, &bucket).unwrap();
}

#[test]
fn a_file_uploaded_again_over_its_tiered_copy_completes_its_grant() {
    // The ledger counts the object in GLACIER_IR, where lifecycle moved it;
    // the user uploads the same file (same size) again under a grant.
    let key = key_name(1);
    let grant = "00000000-0000-4000-8000-000000000001";
    let store = counting(&key, 100, "GLACIER_IR", "up");
    let stored = Stored {
        size: 100,
        class: "STANDARD".into(),
        etag: "again".into(),
    };
    let bucket = BTreeMap::from([(key.clone(), stored)]);
    let (ledger, store, published) = ledger(bucket.clone(), store, Published::default());
    handle_each(
        &ledger,
        [
            granted(grant, &key, "2026-11-23T10:00:00Z", "2026-11-23T10:15:00Z"),
            at(
                created("02", &key, 100, "again", "POST Object"),
                "2026-11-23T10:01:00Z",
            ),
        ],
    );
    let events = published.events.lock().unwrap();
    let announced: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.grant_id.map(|g| g.to_string()),
                e.reclassified,
                e.violation,
            )
        })
        .collect();
    assert_eq!(announced, [(Some(grant.to_string()), false, None)]);
    drop(events);
    check(&store, &published, &bucket).unwrap();
}

#[test]
fn another_object_copied_onto_a_key_is_no_reclassification() {
    // An operator copies another object (another size) onto the key.
    let key = key_name(1);
    let store = counting(&key, 100, "STANDARD", "up");
    let stored = Stored {
        size: 250,
        class: "STANDARD".into(),
        etag: "other".into(),
    };
    let bucket = BTreeMap::from([(key.clone(), stored)]);
    let (ledger, store, published) = ledger(bucket.clone(), store, Published::default());
    handle_each(&ledger, [created("02", &key, 250, "other", "CopyObject")]);
    let events = published.events.lock().unwrap();
    let announced: Vec<_> = events
        .iter()
        .map(|e| (e.object_size, e.reclassified))
        .collect();
    assert_eq!(announced, [(Some(250), false)]);
    drop(events);
    check(&store, &published, &bucket).unwrap();
}

/// What S3 holds, as it changes: HEAD answers from it at the moment asked.
#[derive(Default)]
struct ChangingBucket(Mutex<BTreeMap<String, Stored>>);

#[async_trait]
impl ObjectProbe for ChangingBucket {
    async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectHead>> {
        let now = Bucket(self.0.lock().unwrap().clone());
        now.head(key).await
    }
}

/// S3 holding 40 bytes at `key` (entity tag `e1`), for now.
fn holding_one(key: &str) -> Arc<ChangingBucket> {
    let stored = Stored {
        size: 40,
        class: "STANDARD".into(),
        etag: "e1".into(),
    };
    Arc::new(ChangingBucket(Mutex::new(BTreeMap::from([(
        key.to_string(),
        stored,
    )]))))
}

/// A store that, when the ledger first reads rows to count an upload, lets
/// the user delete the object in S3 and hands the ledger the delete's event
/// before the upload is written: the upload was read from S3 before the
/// delete and is counted after it.
struct DeletedMeanwhile {
    inner: MemoryStore,
    bucket: Arc<ChangingBucket>,
    ledger: std::sync::OnceLock<Arc<Ledger>>,
    delete: Mutex<Option<String>>,
    outcome: Mutex<Option<String>>,
}

#[async_trait]
impl LedgerStore for DeletedMeanwhile {
    async fn snapshots(&self, wanted: &[(&str, &str)]) -> Result<Vec<Snapshot>, StoreError> {
        let delete = self.delete.lock().unwrap().take();
        if let Some(delete) = delete {
            self.bucket.0.lock().unwrap().clear();
            let ledger = self.ledger.get().expect("the ledger is set");
            let outcome = ledger.handle(&Delivery::new("delete", delete, 1)).await;
            *self.outcome.lock().unwrap() = Some(format!("{outcome:?}"));
        }
        self.inner.snapshots(wanted).await
    }

    async fn commit_all(&self, commits: &[UserCommit]) -> Result<(), StoreError> {
        self.inner.commit_all(commits).await
    }

    async fn record_grant(&self, grant: &GrantNote) -> Result<(), StoreError> {
        self.inner.record_grant(grant).await
    }
}

#[test]
fn a_delete_handled_while_its_upload_is_being_counted_still_takes_it_off() {
    // `a+b` reads like `a%2Bb` in events, so S3 says which reading an
    // upload is at. The user uploads `a+b` and deletes it while the ledger,
    // having asked S3, is about to count the upload.
    let key = key_name(0);
    let user = key.split('/').nth(1).unwrap().to_string();
    let bucket = holding_one(&key);
    let store = Arc::new(DeletedMeanwhile {
        inner: MemoryStore::default(),
        bucket: bucket.clone(),
        ledger: std::sync::OnceLock::new(),
        delete: Mutex::new(Some(deleted("02", &event_key(&key)))),
        outcome: Mutex::new(None),
    });
    let published = Arc::new(Published::default());
    let ledger = Arc::new(Ledger::new(
        store.clone(),
        bucket.clone(),
        published.clone(),
        BUCKET,
    ));
    store.ledger.set(ledger.clone()).ok().unwrap();
    runtime().block_on(async {
        let upload = created("01", &event_key(&key), 40, "e1", "PutObject");
        let outcome = ledger.handle(&Delivery::new("upload", upload, 1)).await;
        assert!(
            matches!(outcome, Disposition::Done("applied")),
            "{outcome:?}"
        );
        // Meanwhile the delete found nothing counted: it is judged again
        // when SQS delivers it again.
        let meanwhile = store.outcome.lock().unwrap().clone().unwrap();
        assert!(
            meanwhile.contains(DELETE_JUDGED_ON_REDELIVERY),
            "{meanwhile}"
        );
        let again = Delivery::new("delete", deleted("02", &event_key(&key)), 2);
        let outcome = ledger.handle(&again).await;
        assert!(
            matches!(outcome, Disposition::Done("applied")),
            "{outcome:?}"
        );
    });
    let usage = store.inner.usage.lock().unwrap()[&user].clone();
    assert_eq!((usage.used_bytes, usage.object_count), (0, 0));
    check(&store.inner, &published, &BTreeMap::new()).unwrap();
}

/// A store whose first read takes `delay`, while which S3 loses its
/// objects when `deleted_meanwhile`.
struct Slow {
    inner: MemoryStore,
    delay: Mutex<Option<Duration>>,
    bucket: Arc<ChangingBucket>,
    deleted_meanwhile: bool,
}

#[async_trait]
impl LedgerStore for Slow {
    async fn snapshots(&self, wanted: &[(&str, &str)]) -> Result<Vec<Snapshot>, StoreError> {
        let delay = self.delay.lock().unwrap().take();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
            if self.deleted_meanwhile {
                self.bucket.0.lock().unwrap().clear();
            }
        }
        self.inner.snapshots(wanted).await
    }

    async fn commit_all(&self, commits: &[UserCommit]) -> Result<(), StoreError> {
        self.inner.commit_all(commits).await
    }

    async fn record_grant(&self, grant: &GrantNote) -> Result<(), StoreError> {
        self.inner.record_grant(grant).await
    }
}

/// Counts an upload of an ambiguous key whose rows take longer to read than
/// what S3 said of it may be counted on (half a visibility timeout of 10 s),
/// with its object kept or deleted in S3 meanwhile.
async fn counted_after_a_slow_read(deleted_meanwhile: bool) -> (Disposition, Arc<Slow>) {
    let key = key_name(0);
    let bucket = holding_one(&key);
    let store = Arc::new(Slow {
        inner: MemoryStore::default(),
        delay: Mutex::new(Some(Duration::from_secs(6))),
        bucket: bucket.clone(),
        deleted_meanwhile,
    });
    let ledger = Ledger::new(
        store.clone(),
        bucket,
        Arc::new(Published::default()),
        BUCKET,
    )
    .with_visibility_timeout(Duration::from_secs(10));
    let upload = created("01", &event_key(&key), 40, "e1", "PutObject");
    let outcome = ledger.handle(&Delivery::new("1", upload, 1)).await;
    (outcome, store)
}

#[tokio::test(start_paused = true)]
async fn an_upload_counted_after_half_a_visibility_timeout_asks_s3_again() {
    let (outcome, store) = counted_after_a_slow_read(false).await;
    assert!(
        matches!(outcome, Disposition::Done("applied")),
        "{outcome:?}"
    );
    assert!(store.inner.objects.lock().unwrap()[&key_name(0)].0.live);

    let (outcome, store) = counted_after_a_slow_read(true).await;
    assert!(
        matches!(outcome, Disposition::Done("superseded")),
        "{outcome:?}"
    );
    let objects = store.inner.objects.lock().unwrap();
    assert!(objects.values().all(|(row, _)| !row.live), "{:?}", *objects);
}

#[test]
fn a_change_whose_announcement_failed_is_announced_as_itself_when_delivered_again() {
    let key = key_name(1);
    let published = Published {
        refuse_next: Mutex::new(1),
        ..Published::default()
    };
    let (ledger, _, published) = ledger(BTreeMap::new(), MemoryStore::default(), published);
    let upload = created("01", &key, 100, "up", "POST Object");
    runtime().block_on(async {
        let first = ledger.handle(&Delivery::new("1", upload.clone(), 1)).await;
        assert!(matches!(first, Disposition::Retry(_)), "{first:?}");
        let again = ledger.handle(&Delivery::new("1", upload, 2)).await;
        assert!(matches!(again, Disposition::Done("duplicate")), "{again:?}");
    });
    // Intake fills in revision 1 from it, as from the announcement lost,
    // and the upload, made without a grant, is told as such.
    let events = published.events.lock().unwrap();
    let announced: Vec<_> = events
        .iter()
        .map(|e| (e.revision, e.repeated, e.violation))
        .collect();
    assert_eq!(announced, [(1, false, Some(UploadViolation::NoGrant))]);
}

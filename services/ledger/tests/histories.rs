//! Random histories of puts, overwrites, copies, storage-class transitions
//! and deletes on a few keys, delivered to the real ledger handler with random
//! duplication and reordering, as S3 and EventBridge may deliver them. The
//! ledger's final rows and totals must equal what S3 holds.
//!
//! The store here is an in-memory model of the DynamoDB table with the same
//! conditional-write semantics (a commit fails if the object row's version or
//! the usage revision changed since the snapshot).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use proptest::prelude::*;
use serde_json::json;
use stowage_events::UsageChangedV1;
use stowage_ledger::{
    domain::usage::{ObjectRow, Usage},
    ledger::Ledger,
    ports::{
        GrantNote, LedgerStore, ObjectHead, ObjectProbe, Snapshot, StoreError, UsagePublisher,
    },
};
use stowage_shared::consumer::{Delivery, Disposition, Handler};

const BUCKET: &str = "bucket";
const USER: &str = "u1";

#[derive(Default)]
struct MemoryStore {
    objects: Mutex<HashMap<String, (ObjectRow, u64)>>,
    usage: Mutex<Option<Usage>>,
    grants: Mutex<HashMap<String, GrantNote>>,
}

#[async_trait]
impl LedgerStore for MemoryStore {
    async fn snapshot(&self, _user: &str, key: &str) -> Result<Snapshot, StoreError> {
        let objects = self.objects.lock().unwrap();
        let usage = self.usage.lock().unwrap();
        let object = objects.get(key).cloned();
        Ok(Snapshot {
            object_version: object.as_ref().map(|(_, v)| *v),
            object: object.map(|(row, _)| row),
            usage: usage.clone().unwrap_or_default(),
            usage_exists: usage.is_some(),
            grant: self.grants.lock().unwrap().get(key).cloned(),
        })
    }

    async fn commit(
        &self,
        _user: &str,
        key: &str,
        before: &Snapshot,
        object: &ObjectRow,
        usage: &Usage,
    ) -> Result<(), StoreError> {
        let mut objects = self.objects.lock().unwrap();
        let mut stored_usage = self.usage.lock().unwrap();
        let current_version = objects.get(key).map(|(_, v)| *v);
        let current_revision = stored_usage.as_ref().map(|u| u.revision);
        let expected_revision = before.usage_exists.then_some(before.usage.revision);
        if current_version != before.object_version || current_revision != expected_revision {
            return Err(StoreError::Conflict);
        }
        objects.insert(
            key.to_string(),
            (object.clone(), before.object_version.map_or(1, |v| v + 1)),
        );
        *stored_usage = Some(usage.clone());
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
struct Published(Mutex<Vec<UsageChangedV1>>);

#[async_trait]
impl UsagePublisher for Published {
    async fn publish(&self, event: &UsageChangedV1) -> anyhow::Result<()> {
        self.0.lock().unwrap().push(event.clone());
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
    Upload { key: u8, size: u64, post: bool },
    CopyToClass { key: u8, class: &'static str },
    Transition { key: u8, class: &'static str },
    Delete { key: u8 },
}

const CLASSES: [&str; 3] = ["STANDARD_IA", "GLACIER_IR", "GLACIER"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 0u64..1_000, any::<bool>()).prop_map(|(key, size, post)| Op::Upload { key, size, post }),
        1 => (0u8..3, 0usize..3).prop_map(|(key, c)| Op::CopyToClass { key, class: CLASSES[c] }),
        1 => (0u8..3, 0usize..3).prop_map(|(key, c)| Op::Transition { key, class: CLASSES[c] }),
        2 => (0u8..3).prop_map(|key| Op::Delete { key }),
    ]
}

fn key_name(key: u8) -> String {
    format!("users/{USER}/file-{key}.bin")
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
            Op::Transition { key, class } => {
                let name = key_name(*key);
                let Some(stored) = bucket.get_mut(&name) else {
                    continue;
                };
                stored.class = class.to_string();
                let (size, etag) = (stored.size, stored.etag.clone());
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
        object["key"] = json!(key);
        object["sequencer"] = json!(sequencer);
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

fn expected_usage(bucket: &BTreeMap<String, Stored>) -> (u64, u64, BTreeMap<String, u64>) {
    let mut by_class = BTreeMap::new();
    for stored in bucket.values() {
        *by_class.entry(stored.class.clone()).or_default() += stored.size;
    }
    by_class.retain(|_, bytes| *bytes > 0);
    (
        bucket.values().map(|s| s.size).sum(),
        bucket.len() as u64,
        by_class,
    )
}

fn ledger(bucket: BTreeMap<String, Stored>) -> (Ledger, Arc<MemoryStore>, Arc<Published>) {
    let store = Arc::new(MemoryStore::default());
    let published = Arc::new(Published::default());
    let ledger = Ledger::new(
        store.clone(),
        Arc::new(Bucket(bucket)),
        published.clone(),
        BUCKET,
    );
    (ledger, store, published)
}

fn check(store: &MemoryStore, bucket: &BTreeMap<String, Stored>) -> Result<(), TestCaseError> {
    let usage = store.usage.lock().unwrap().clone().unwrap_or_default();
    let (bytes, count, mut by_class) = expected_usage(bucket);
    let mut got_by_class = usage.by_storage_class.clone();
    got_by_class.retain(|_, b| *b > 0);
    by_class.retain(|_, b| *b > 0);
    prop_assert_eq!(usage.used_bytes, bytes);
    prop_assert_eq!(usage.object_count, count);
    prop_assert_eq!(got_by_class, by_class);
    let objects = store.objects.lock().unwrap();
    for key in 0..3 {
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn any_delivery_order_with_duplicates_ends_in_the_bucket_s_state((ops, suffixes, copies, seed) in history()) {
        let (events, bucket) = simulate(&ops, &suffixes);
        let mut messages = deliveries(&events, &copies);
        shuffle(&mut messages, seed);
        let (ledger, store, published) = ledger(bucket.clone());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            for (i, body) in messages.into_iter().enumerate() {
                let delivery = Delivery { message_id: i.to_string(), body, receive_count: 1 };
                let outcome = ledger.handle(&delivery).await;
                assert!(matches!(outcome, Disposition::Done(_)), "{outcome:?}");
            }
        });
        check(&store, &bucket)?;
        // Revisions only grow across the changes the ledger announced.
        let events = published.0.lock().unwrap();
        let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
        prop_assert!(revisions.windows(2).all(|w| w[0] <= w[1]), "{revisions:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The same, with four workers applying deliveries concurrently: the
    /// conditional commits keep the totals exact.
    #[test]
    fn concurrent_workers_keep_the_totals_exact((ops, suffixes, copies, seed) in history()) {
        let (events, bucket) = simulate(&ops, &suffixes);
        let mut messages = deliveries(&events, &copies);
        shuffle(&mut messages, seed);
        let (ledger, store, _) = ledger(bucket.clone());
        let ledger = Arc::new(ledger);
        let queue = Arc::new(Mutex::new(messages));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
        runtime.block_on(async {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let (ledger, queue) = (ledger.clone(), queue.clone());
                    tokio::spawn(async move {
                        loop {
                            let Some(body) = queue.lock().unwrap().pop() else { return };
                            let delivery = Delivery { message_id: String::new(), body, receive_count: 1 };
                            let outcome = ledger.handle(&delivery).await;
                            assert!(matches!(outcome, Disposition::Done(_)), "{outcome:?}");
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.await.unwrap();
            }
        });
        check(&store, &bucket)?;
    }
}

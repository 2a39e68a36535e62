//! The ledger against the emulators: poison messages, replays, awkward keys,
//! reconciliation.

use std::time::Duration;

use stowage_e2e::{Parts, System, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_message_goes_to_the_dead_letter_queue_without_blocking_the_rest() {
    let system = System::start().await.expect("system starts");
    let queue = system.stack.get("STOWAGE_LEDGER_QUEUE_URL").to_string();
    let dlq = system.stack.get("STOWAGE_LEDGER_DLQ_URL").to_string();
    system
        .send(
            &queue,
            &[
                "this is not JSON".to_string(),
                r#"{"version":"0","id":"x","detail-type":"UsageChanged.v9","source":"stowage.ledger","time":"2026-11-23T10:00:00Z","detail":{}}"#
                    .to_string(),
            ],
        )
        .await;

    let token = system.token("erin");
    system
        .put(&token, "after-the-poison.txt", vec![1; 321])
        .await;
    system.used_bytes_reach(&token, 321).await;

    let dead = eventually(
        Duration::from_secs(60),
        "both poison messages in the DLQ",
        || async {
            let depth = system.queue_depth(&dlq).await;
            (depth == 2).then_some(depth)
        },
    )
    .await;
    assert_eq!(dead, 2);
    let bodies = system.drain(&dlq).await;
    assert!(bodies.contains(&"this is not JSON".to_string()));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replaying_every_event_leaves_usage_unchanged() {
    // Lifecycle is left out: its queue keeps a copy of every S3 event.
    let system = System::start_parts(&[], Parts::WITHOUT_LIFECYCLE)
        .await
        .expect("system starts");
    let token = system.token("frank");
    system.put(&token, "a.bin", vec![1; 1000]).await;
    system.put(&token, "b.bin", vec![2; 2000]).await;
    system.put(&token, "a.bin", vec![3; 500]).await;
    system.delete("users/frank/b.bin").await;
    let settled = system.used_bytes_reach(&token, 500).await;
    assert_eq!(settled["object_count"], 1);

    eventually(
        Duration::from_secs(30),
        "four S3 events on the lifecycle queue",
        || async {
            let depth = system
                .queue_depth(system.stack.get("STOWAGE_LIFECYCLE_QUEUE_URL"))
                .await;
            (depth >= 4).then_some(())
        },
    )
    .await;
    let mut history = system
        .drain(system.stack.get("STOWAGE_LIFECYCLE_QUEUE_URL"))
        .await;
    history.retain(|body| body.contains("\"aws.s3\""));
    assert_eq!(history.len(), 4, "three uploads and a delete");

    // The same events again, twice, newest first.
    history.reverse();
    let ledger_queue = system.stack.get("STOWAGE_LEDGER_QUEUE_URL").to_string();
    system.send(&ledger_queue, &history).await;
    system.send(&ledger_queue, &history).await;
    eventually(
        Duration::from_secs(60),
        "the replay to be consumed",
        || async { (system.queue_depth(&ledger_queue).await == 0).then_some(()) },
    )
    .await;

    // The replay's UsageChanged events may still be on their way to intake
    // once the ledger's queue is empty. One more upload is announced after
    // them, at a newer revision: once intake shows it, its totals are the
    // ledger's after the replay, and a report of the replay that arrives
    // later is older and changes no total.
    system.put(&token, "c.bin", vec![4; 10]).await;
    let usage = system.used_bytes_reach(&token, 510).await;
    assert_eq!(
        (usage["used_bytes"].as_u64(), usage["object_count"].as_u64()),
        (Some(510), Some(2))
    );
    let report = system
        .reconciler()
        .await
        .run(Some("frank"), false)
        .await
        .expect("reconcile");
    assert!(report.clean(), "{report:?}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_with_spaces_plus_percent_and_non_ascii_are_counted_under_their_true_names() {
    let system = System::start().await.expect("system starts");
    let token = system.token("gina");
    let paths = [
        "with space.txt",
        "plus+sign.txt",
        "percent%41.txt",
        "accent/café ü.txt",
        "a+b c%2Bd.txt",
    ];
    for (i, path) in paths.iter().enumerate() {
        system.put(&token, path, vec![0; 100 + i]).await;
    }
    let total: u64 = (0..paths.len() as u64).map(|i| 100 + i).sum();
    let usage = system.used_bytes_reach(&token, total).await;
    assert_eq!(usage["object_count"], paths.len());

    // The ledger's rows name exactly the keys the bucket holds.
    let report = system
        .reconciler()
        .await
        .run(Some("gina"), false)
        .await
        .expect("reconcile");
    assert!(report.clean(), "{report:?}");

    for path in paths {
        system.delete(&format!("users/gina/{path}")).await;
    }
    let usage = system.used_bytes_reach(&token, 0).await;
    assert_eq!(usage["object_count"], 0);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconcile_finds_lost_events_and_fixes_the_ledger() {
    let system = System::start_parts(&[], Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let token = system.token("hank");
    system.put(&token, "one.bin", vec![1; 111]).await;
    system.put(&token, "two.bin", vec![2; 222]).await;
    // The events are lost before the ledger sees them.
    eventually(
        Duration::from_secs(30),
        "both events on the ledger queue",
        || async {
            (system
                .queue_depth(system.stack.get("STOWAGE_LEDGER_QUEUE_URL"))
                .await
                >= 4)
                .then_some(())
        },
    )
    .await;
    system
        .drain(system.stack.get("STOWAGE_LEDGER_QUEUE_URL"))
        .await;

    let reconciler = system.reconciler().await;
    let report = reconciler
        .run(Some("hank"), false)
        .await
        .expect("reconcile");
    assert_eq!(report.drift.len(), 2, "{report:?}");
    assert!(
        report
            .drift
            .iter()
            .all(|d| d.ledger.is_none() && d.bucket.is_some())
    );
    let usage = system.usage(&token).await;
    assert_eq!(usage["used_bytes"], 0, "nothing was counted yet");

    let fixed = reconciler
        .run(Some("hank"), true)
        .await
        .expect("reconcile --fix");
    assert_eq!(fixed.drift.len(), 2);
    assert!(
        reconciler
            .run(Some("hank"), false)
            .await
            .expect("reconcile")
            .clean()
    );
    // Intake hears of the corrected totals like of any other change.
    let usage = system.used_bytes_reach(&token, 333).await;
    assert_eq!(usage["object_count"], 2);
    system.stop().await;
}

fn note(
    user: &str,
    key: &str,
    grant_id: &str,
    expires_at: i64,
) -> stowage_ledger::ports::GrantNote {
    stowage_ledger::ports::GrantNote {
        user_id: user.to_string(),
        key: key.to_string(),
        grant_id: grant_id.to_string(),
        max_size: 100,
        issued_at: expires_at - 900,
        expires_at,
        trace: Default::default(),
    }
}

/// The grants of one batch are remembered in one transaction; a grant older
/// than the one stored for its key, or than another of the batch for the
/// same key, is done without replacing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_grants_is_remembered_in_one_transaction_newest_first() {
    use stowage_ledger::{adapters::dynamodb::DynamoLedgerStore, ports::LedgerStore};

    let stack = stowage_e2e::Stack::deploy().expect("stack deploys");
    let sdk = stowage_shared::aws::load().await;
    let counter = stowage_e2e::RequestCounter::default();
    let store = DynamoLedgerStore::new(
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(counter.clone())
                .build(),
        ),
        stack.get("STOWAGE_LEDGER_TABLE"),
        std::time::Duration::from_secs(3600),
    );
    store
        .record_grant(&note("ann", "users/ann/kept", "stored-newer", 2_000))
        .await
        .expect("grant recorded");
    let before = counter.get();

    let mut batch: Vec<_> = (0..6)
        .map(|i| note("ann", &format!("users/ann/f{i}"), &format!("g{i}"), 1_000))
        .collect();
    batch.push(note("bob", "users/bob/twice", "older", 1_000));
    batch.push(note("ann", "users/ann/kept", "late-older", 1_500));
    batch.push(note("bob", "users/bob/twice", "newer", 1_100));
    let outcomes = store.record_grants(&batch).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    // One transaction, cancelled by the late older grant, then one without it.
    assert_eq!(counter.get() - before, 2);

    let granted = |user: &'static str, key: String| {
        let store = &store;
        async move {
            store
                .snapshot(user, &key)
                .await
                .expect("snapshot")
                .grant
                .map(|g| g.grant_id)
        }
    };
    for i in 0..6 {
        assert_eq!(
            granted("ann", format!("users/ann/f{i}")).await.as_deref(),
            Some(format!("g{i}").as_str())
        );
    }
    assert_eq!(
        granted("ann", "users/ann/kept".into()).await.as_deref(),
        Some("stored-newer")
    );
    assert_eq!(
        granted("bob", "users/bob/twice".into()).await.as_deref(),
        Some("newer")
    );
}

//! The lifecycle service against the emulators: what a sweep tiers and what
//! it leaves alone (and why), conditional copies, restores, and what a sweep
//! costs in requests.
//!
//! Sweeps run as `stowctl tier` runs them, through the service's
//! [`Sweeper`] "as of" a later day, so objects created a moment ago can be
//! 100 days old to the sweep.

use std::time::Duration;

use serde_json::{Value, json};
use stowage_e2e::{
    Parts, RequestCounter, System, counted_sweeper, eventually, load_projection, put_for_etag,
    standard_row,
};
use stowage_events::{EventMeta, ObjectAccessedV1, TraceContext};
use stowage_lifecycle::{
    domain::projection::ObjectRecord,
    sweep::{Sweeper, TierPlan},
};
use stowage_shared::publisher::EventBus;
use time::OffsetDateTime;

fn days_from_now(days: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::days(days)
}

/// The keys a plan lists, sorted.
fn keys(plan: &TierPlan) -> Vec<&str> {
    let mut keys: Vec<&str> = plan.objects.iter().map(|o| o.key.as_str()).collect();
    keys.sort();
    keys
}

/// Waits until a plan of `user` as of `at` lists exactly `expected`.
async fn plan_lists(
    sweeper: &Sweeper,
    user: &str,
    at: OffsetDateTime,
    expected: &[&str],
) -> TierPlan {
    eventually(
        Duration::from_secs(30),
        &format!("a plan of {expected:?}"),
        || async {
            let plan = sweeper.plan(at, Some(user)).await.expect("plan");
            (keys(&plan) == expected).then_some(plan)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_objects_are_tiered_while_recently_read_and_small_ones_stay() {
    let system = System::start().await.expect("system starts");
    let bucket = system.stack.get("STOWAGE_BUCKET").to_string();
    let token = system.token("lena");
    system.put(&token, "cold.bin", vec![7; 2 << 20]).await;
    let recent = system.put(&token, "recent.bin", vec![8; 2 << 20]).await;
    system.put(&token, "tiny.txt", vec![9; 1000]).await;
    // 12 MiB with metadata and tags, copied in three parts below.
    system
        .s3
        .put_object()
        .bucket(&bucket)
        .key("users/lena/big.bin")
        .content_type("video/mp4")
        .metadata("origin", "camera")
        .tagging("project=Trip%202026&owner%3Ateam=a%2Bb%3Dc%2Fd%40e")
        .body(vec![1u8; 12 << 20].into())
        .send()
        .await
        .expect("PutObject");
    let total = 2 * (2 << 20) + 1000 + (12 << 20);
    system.used_bytes_reach(&token, total).await;
    let tiered = system.capture("stowage.lifecycle", "ObjectTiered.v1").await;

    // Read through intake today: cold.bin is still idle on day 100.
    let read = system.get(&token, "/v1/objects/cold.bin").await;
    assert_eq!(read.status, 200, "{}", read.body);
    // recent.bin is read on day 60, as intake would announce it.
    let head = system.head(recent["key"].as_str().expect("key")).await;
    let sdk = stowage_shared::aws::load().await;
    EventBus::new(
        stowage_shared::aws::eventbridge(&sdk),
        system.stack.get("STOWAGE_EVENT_BUS"),
    )
    .publish(&ObjectAccessedV1 {
        meta: EventMeta {
            occurred_at: days_from_now(60),
            ..EventMeta::new("lena", TraceContext::default())
        },
        key: "users/lena/recent.bin".into(),
        size: 2 << 20,
        storage_class: "STANDARD".into(),
        etag: head.e_tag().map(|e| e.trim_matches('"').to_string()),
    })
    .await
    .expect("ObjectAccessed published");

    let sweeper = system
        .sweeper(&[
            ("tier-class", "GLACIER"),
            ("tier-multipart-threshold-bytes", &(8u64 << 20).to_string()),
            ("tier-part-size-bytes", &(5u64 << 20).to_string()),
        ])
        .await;
    let day_100 = days_from_now(100);
    let plan = plan_lists(
        &sweeper,
        "lena",
        day_100,
        &[
            "users/lena/big.bin",
            "users/lena/cold.bin",
            "users/lena/tiny.txt",
        ],
    )
    .await;
    let planned = |key: &str| {
        plan.objects
            .iter()
            .find(|o| o.key == key)
            .expect("planned")
            .clone()
    };
    let cold_plan = planned("users/lena/cold.bin");
    assert_eq!((cold_plan.action, cold_plan.reason_code), ("tier", "cold"));
    assert_eq!(cold_plan.target, "GLACIER");
    // 2 MiB: (0.023 - 0.0036) * 2/1024 a month, less the overhead.
    let saving = cold_plan.monthly_saving_usd.expect("estimated");
    assert!(
        (saving - (0.0194 * 2.0 / 1024.0 - 0.000_000_285_339)).abs() < 1e-9,
        "{saving}"
    );
    let tiny = planned("users/lena/tiny.txt");
    assert_eq!((tiny.action, tiny.reason_code), ("skip", "too_small"));
    assert_eq!(tiny.reason, "1000 bytes is below the 131072 byte minimum");
    assert_eq!(planned("users/lena/big.bin").action, "tier");
    let table = stowctl::tier::plan_table(&plan);
    let line = table
        .lines()
        .find(|l| l.contains("tiny.txt"))
        .unwrap_or_else(|| panic!("no line for tiny.txt in\n{table}"));
    assert!(
        line.contains("skip") && line.contains("below the 131072 byte minimum"),
        "{line}"
    );
    assert!(
        table.ends_with("2 of 3 due object(s) to tier, 14.0 MiB, saving about $0.000265 a month."),
        "{table}"
    );
    let json = serde_json::to_value(&plan).expect("JSON");
    assert_eq!(json["to_tier"], 2);

    let report = sweeper.run(day_100, Some("lena")).await.expect("sweep");
    assert_eq!(
        (report.tiered, report.skipped, report.changed, report.failed),
        (2, 1, 0, 0),
        "{report:?}"
    );
    assert_eq!(report.tiered_bytes, (2 << 20) + (12 << 20));
    let table = stowctl::tier::report_table(&report);
    let line = table
        .lines()
        .find(|l| l.contains("big.bin"))
        .unwrap_or_else(|| panic!("no line for big.bin in\n{table}"));
    assert!(
        line.contains("12.0 MiB")
            && line.contains("STANDARD -> GLACIER")
            && line.contains("tiered"),
        "{line}"
    );
    assert!(
        table.ends_with("Tiered 2 object(s), 14.0 MiB, saving about $0.000265 a month; 1 skipped, 0 postponed, 0 changed since planned, 0 failed."),
        "{table}"
    );
    let head = |key: &'static str| system.head(key);
    let cold_head = head("users/lena/cold.bin").await;
    assert_eq!(
        cold_head.storage_class().map(|c| c.as_str()),
        Some("GLACIER")
    );
    assert_eq!(
        cold_head.e_tag(),
        Some(format!("\"{}\"", cold_plan.etag.as_deref().unwrap_or_default()).as_str())
    );
    assert_eq!(cold_head.content_type(), Some("application/octet-stream"));
    let big = head("users/lena/big.bin").await;
    assert_eq!(big.storage_class().map(|c| c.as_str()), Some("GLACIER"));
    assert!(
        big.e_tag().is_some_and(|e| e.ends_with("-3\"")),
        "copied in 3 parts: {:?}",
        big.e_tag()
    );
    assert_eq!(big.content_type(), Some("video/mp4"));
    assert_eq!(
        big.metadata()
            .and_then(|m| m.get("origin"))
            .map(String::as_str),
        Some("camera")
    );
    let tags = system
        .s3
        .get_object_tagging()
        .bucket(&bucket)
        .key("users/lena/big.bin")
        .send()
        .await
        .expect("GetObjectTagging");
    let mut tags: Vec<(&str, &str)> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key(), t.value()))
        .collect();
    tags.sort_unstable();
    assert_eq!(
        tags,
        [("owner:team", "a+b=c/d@e"), ("project", "Trip 2026")]
    );
    assert_eq!(
        big.server_side_encryption().map(|e| e.as_str()),
        Some("AES256")
    );
    assert_eq!(head("users/lena/recent.bin").await.storage_class(), None);
    assert_eq!(head("users/lena/tiny.txt").await.storage_class(), None);

    // The ledger follows S3's own events of the copies.
    let usage = eventually(
        Duration::from_secs(30),
        "GLACIER bytes in the usage",
        || async {
            let usage = system.usage(&token).await;
            (usage["by_storage_class"]["GLACIER"] == (2 << 20) + (12 << 20)).then_some(usage)
        },
    )
    .await;
    assert_eq!(usage["by_storage_class"]["STANDARD"], (2 << 20) + 1000);
    assert_eq!(usage["used_bytes"], total);

    // Once lifecycle has applied S3's own events of the copies too, their
    // rows still say why they moved.
    let sdk = stowage_shared::aws::load().await;
    let projection = stowage_lifecycle::adapters::dynamodb::DynamoProjection::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        system.stack.get("STOWAGE_LIFECYCLE_TABLE"),
    );
    for key in ["users/lena/cold.bin", "users/lena/big.bin"] {
        let row = eventually(
            Duration::from_secs(30),
            &format!("the copy's Object Created of {key} applied"),
            || async {
                let row = stowage_lifecycle::ports::Projection::get(&projection, "lena", key)
                    .await
                    .expect("row")
                    .expect("row exists")
                    .record;
                row.applied
                    .iter()
                    .any(|event| event.ends_with(":GLACIER"))
                    .then_some(row)
            },
        )
        .await;
        assert_eq!(row.storage_class, "GLACIER", "{key}");
        let verdict = row.verdict.expect("the tiered verdict is kept");
        assert_eq!(verdict.outcome, "tiered", "{key}");
        assert!(
            verdict.reason.starts_with("idle for 100 days"),
            "{key}: {}",
            verdict.reason
        );
    }

    // Nothing is due any more on day 100: tiny.txt comes back on day 130.
    assert!(
        sweeper
            .plan(day_100, Some("lena"))
            .await
            .expect("plan")
            .objects
            .is_empty()
    );
    let later = sweeper
        .plan(days_from_now(131), Some("lena"))
        .await
        .expect("plan");
    assert_eq!(keys(&later), ["users/lena/tiny.txt"]);

    eventually(Duration::from_secs(30), "two ObjectTiered.v1", || async {
        (system.queue_depth(&tiered).await >= 2).then_some(())
    })
    .await;
    let events: Vec<Value> = system
        .drain(&tiered)
        .await
        .iter()
        .map(|b| serde_json::from_str::<Value>(b).expect("JSON")["detail"].clone())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    let big_event = events
        .iter()
        .find(|e| e["key"] == "users/lena/big.bin")
        .expect("big.bin announced");
    assert_eq!(
        (
            &big_event["to_storage_class"],
            &big_event["multipart"],
            &big_event["size"],
            &big_event["user_id"]
        ),
        (
            &json!("GLACIER"),
            &json!(true),
            &json!(12 << 20),
            &json!("lena")
        )
    );
    assert!(big_event["monthly_saving_usd"].as_f64().unwrap_or(0.0) > 0.0);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_object_overwritten_between_plan_and_run_is_not_clobbered() {
    // Lifecycle handles its queue only when the test steps through it, so
    // that the overwrite reaches S3 but not the projection before the sweep.
    let system = System::start_parts(&[], Parts::WITHOUT_LIFECYCLE)
        .await
        .expect("system starts");
    let token = system.token("omar");
    let lifecycle = system.lifecycle().await;
    system.put(&token, "draft.bin", vec![1; 2 << 20]).await;
    let sweeper = system.sweeper(&[]).await;
    let day_100 = days_from_now(100);
    let planned = eventually(Duration::from_secs(30), "draft.bin planned", || async {
        lifecycle.process_batch().await.expect("batch");
        let plan = sweeper.plan(day_100, Some("omar")).await.expect("plan");
        (plan.objects.len() == 1).then(|| plan.objects[0].clone())
    })
    .await;
    assert_eq!(
        (planned.key.as_str(), planned.action),
        ("users/omar/draft.bin", "tier")
    );
    let planned_etag = planned.etag.clone().expect("etag");

    system.put(&token, "draft.bin", vec![2; 3 << 20]).await;
    let report = sweeper.run(day_100, Some("omar")).await.expect("sweep");
    assert_eq!((report.tiered, report.changed), (0, 1), "{report:?}");
    assert_eq!(report.objects[0].outcome, "changed");
    let head = system.head("users/omar/draft.bin").await;
    assert_eq!(
        head.storage_class(),
        None,
        "the new version stays in STANDARD"
    );
    assert_eq!(head.content_length(), Some(3 << 20));
    assert_ne!(
        head.e_tag().map(|e| e.trim_matches('"')),
        Some(planned_etag.as_str())
    );

    // Once lifecycle hears of the new version, it plans that one.
    eventually(
        Duration::from_secs(30),
        "the new version planned",
        || async {
            lifecycle.process_batch().await.expect("batch");
            let plan = sweeper.plan(day_100, Some("omar")).await.expect("plan");
            (plan.objects.len() == 1 && plan.objects[0].size == 3 << 20).then_some(())
        },
    )
    .await;
    system.stop().await;
}

fn restore_request(user: &str, key: &str) -> String {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "RestoreRequested.v1",
        "source": "stowage.intake",
        "account": "000000000000",
        "time": "2026-11-23T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "event_id": uuid::Uuid::new_v4().to_string(),
            "occurred_at": "2026-11-23T10:00:00Z",
            "user_id": user,
            "key": key,
            "days": 2,
            "storage_class": "GLACIER"
        }
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_request_restores_the_owners_key_and_nobody_elses() {
    let system = System::start().await.expect("system starts");
    let token = system.token("rita");
    system
        .put_object("users/rita/old.bin", vec![3; 4096], "GLACIER")
        .await;
    system
        .put_object("users/rita/other.bin", vec![4; 4096], "GLACIER")
        .await;
    let restored = system
        .capture("stowage.lifecycle", "ObjectRestored.v1")
        .await;
    let restore_header = |key: &'static str| {
        let system = &system;
        async move { system.head(key).await.restore().map(str::to_string) }
    };

    // Mallory asks for Rita's object: lifecycle refuses, whatever intake
    // would have said.
    let queue = system.stack.get("STOWAGE_LIFECYCLE_QUEUE_URL").to_string();
    system
        .send(
            &queue,
            &[restore_request("mallory", "users/rita/other.bin")],
        )
        .await;
    eventually(
        Duration::from_secs(30),
        "lifecycle's queue drained",
        || async { (system.queue_depth(&queue).await == 0).then_some(()) },
    )
    .await;
    assert_eq!(restore_header("users/rita/other.bin").await, None);

    let archived = system.get(&token, "/v1/objects/old.bin").await;
    assert_eq!(archived.status, 409, "{}", archived.body);
    let accepted = system
        .call(
            reqwest::Method::POST,
            "/v1/restores",
            Some(&token),
            Some(&json!({"path": "old.bin", "days": 2})),
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let header = eventually(Duration::from_secs(30), "old.bin restored", || async {
        restore_header("users/rita/old.bin").await
    })
    .await;
    assert!(header.contains("ongoing-request=\"false\""), "{header}");
    let readable = system.get(&token, "/v1/objects/old.bin").await;
    assert_eq!(readable.status, 200, "{}", readable.body);

    // S3's Object Restore Completed became ObjectRestored.v1.
    let announced = eventually(Duration::from_secs(30), "ObjectRestored.v1", || async {
        let bodies = system.drain(&restored).await;
        (!bodies.is_empty()).then_some(bodies)
    })
    .await;
    let event: Value = serde_json::from_str(&announced[0]).expect("JSON");
    assert_eq!(event["detail"]["key"], "users/rita/old.bin");
    assert_eq!(event["detail"]["user_id"], "rita");
    assert_eq!(event["detail"]["storage_class"], "GLACIER");
    assert_eq!(
        restore_header("users/rita/other.bin").await,
        None,
        "still not restored"
    );
    system.stop().await;
}

/// Puts `count` objects of 1 MiB in the bucket and returns their rows,
/// due a day ago.
async fn due_objects(
    system: &System,
    prefix: &str,
    count: usize,
) -> Vec<(String, ObjectRecord, i64)> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut rows = Vec::new();
    for i in 0..count {
        let key = format!("users/{prefix}/due-{i}.bin");
        let etag = put_for_etag(
            &system.s3,
            system.stack.get("STOWAGE_BUCKET"),
            &key,
            vec![5u8; 1 << 20],
        )
        .await;
        rows.push((
            key,
            standard_row(1 << 20, &etag, now - 91 * 86_400),
            now - 86_400,
        ));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sweep_costs_requests_per_due_object_not_per_object() {
    // No consumer runs: the projection is loaded directly.
    let system = System::start_parts(&[], Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let now = OffsetDateTime::now_utc().unix_timestamp();
    // 3,000 indexed objects, due in the coming weeks.
    let idle: Vec<(String, ObjectRecord, i64)> = (0..3000)
        .map(|i| {
            let key = format!("users/u{}/file-{i}.bin", i % 30);
            (
                key,
                standard_row(1 << 20, "e", now),
                now + (1 + i % 80) * 86_400,
            )
        })
        .collect();
    load_projection(system.stack.get("STOWAGE_LIFECYCLE_TABLE"), &idle, 4).await;
    let due = due_objects(&system, "sam", 5).await;
    load_projection(system.stack.get("STOWAGE_LIFECYCLE_TABLE"), &due, 4).await;

    let counter = RequestCounter::default();
    let sweeper = counted_sweeper(&system.sweep_settings(&[]), &counter).await;
    let plan = sweeper
        .plan(OffsetDateTime::now_utc(), None)
        .await
        .expect("plan");
    assert_eq!(plan.to_tier, 5, "{plan:?}");
    // One query per index shard.
    assert_eq!(counter.get(), 8);

    let before = counter.get();
    let report = sweeper
        .run(OffsetDateTime::now_utc(), None)
        .await
        .expect("sweep");
    assert_eq!(report.tiered, 5, "{report:?}");
    // 8 queries, one transaction claiming the 5 rows, 5 copies, one
    // transaction settling them, one PutEvents.
    assert_eq!(counter.get() - before, 8 + 1 + 5 + 1 + 1);

    let due = due_objects(&system, "tess", 25).await;
    load_projection(system.stack.get("STOWAGE_LIFECYCLE_TABLE"), &due, 4).await;
    let before = counter.get();
    let report = sweeper
        .run(OffsetDateTime::now_utc(), None)
        .await
        .expect("sweep");
    assert_eq!(report.tiered, 25, "{report:?}");
    // 8 queries, one claiming transaction, 25 copies, one settling
    // transaction, three PutEvents: the cost grows with the due objects;
    // the 3,000 others are never read.
    assert_eq!(counter.get() - before, 8 + 1 + 25 + 1 + 3);
    system.stop().await;
}

/// Loads one Standard row of 1 MiB for each of `names` under
/// `users/sam/`, all due at 1,700,000,000, into `stack`'s projection, and
/// returns the projection on a client whose requests `counter` counts.
async fn sams_rows(
    stack: &stowage_e2e::Stack,
    names: &[&str],
    counter: &RequestCounter,
) -> stowage_lifecycle::adapters::dynamodb::DynamoProjection {
    let table = stack.get("STOWAGE_LIFECYCLE_TABLE");
    let rows: Vec<(String, ObjectRecord, i64)> = names
        .iter()
        .map(|name| {
            (
                format!("users/sam/{name}"),
                standard_row(1 << 20, &format!("etag-{name}"), 1_700_000_000),
                1_700_000_000,
            )
        })
        .collect();
    load_projection(table, &rows, 1).await;
    let sdk = stowage_shared::aws::load().await;
    stowage_lifecycle::adapters::dynamodb::DynamoProjection::new(
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(counter.clone())
                .build(),
        ),
        table,
    )
}

/// A sweep claims the rows it copies in one transaction; a row that changed
/// since the sweep read it cancels it, is left as it is and answered as a
/// conflict, and the others are claimed in one more transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_skip_a_row_that_changed_and_write_the_others_together() {
    use stowage_lifecycle::ports::{DueIndex, DueObject, Projection, StoreError};

    let stack = stowage_e2e::Stack::deploy().expect("stack deploys");
    let counter = RequestCounter::default();
    let projection = sams_rows(&stack, &["a", "b", "c"], &counter).await;
    let due = projection.due(1_700_000_000).await.expect("due rows");
    assert_eq!(due.len(), 3, "{due:?}");
    // `b` is read after the sweep found it due: its row is written again.
    let b = due
        .iter()
        .find(|d| d.key == "users/sam/b")
        .expect("b is due");
    let read = ObjectRecord {
        last_access: Some(1_700_000_100),
        ..b.row.record.clone()
    };
    projection
        .put(
            "sam",
            &b.key,
            &read,
            Some(1_800_000_000),
            Some(b.row.version),
        )
        .await
        .expect("written again");

    let before = counter.get();
    let claimed_until = 1_700_086_400;
    let refs: Vec<&DueObject> = due.iter().collect();
    let claims = projection.claim(&refs, claimed_until).await;
    assert_eq!(
        counter.get() - before,
        2,
        "the cancelled transaction and one more"
    );
    for (row, claim) in due.iter().zip(&claims) {
        if row.key == "users/sam/b" {
            assert!(matches!(claim, Err(StoreError::Conflict)), "{claim:?}");
        } else {
            assert!(claim.is_ok(), "{}: {claim:?}", row.key);
        }
    }
    // Claimed rows are at the next version and no longer due; the row that
    // changed keeps what it was written with.
    let now_due = projection.due(1_700_000_000).await.expect("due rows");
    assert!(now_due.is_empty(), "{now_due:?}");
    for row in &due {
        let stored = projection
            .get("sam", &row.key)
            .await
            .expect("row")
            .expect("row exists");
        assert_eq!(stored.version, row.row.version + 1, "{}", row.key);
        let expected = if row.key == b.key {
            &read
        } else {
            &row.row.record
        };
        assert_eq!(&stored.record, expected, "{}", row.key);
    }
    // A second sweep's claim of the same rows, as it read them, finds every
    // one taken.
    let again = projection.claim(&refs, claimed_until).await;
    assert!(
        again.iter().all(|c| matches!(c, Err(StoreError::Conflict))),
        "{again:?}"
    );
}

/// A sweep's write-back is one transaction; a row that changed since the
/// plan cancels it, is left as it is, and the others are written in one
/// more transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlements_skip_a_row_that_changed_and_write_the_others_together() {
    use stowage_lifecycle::{
        domain::projection::Verdict,
        ports::{DueIndex, Projection, Settlement},
    };

    let stack = stowage_e2e::Stack::deploy().expect("stack deploys");
    let counter = RequestCounter::default();
    let projection = sams_rows(&stack, &["a", "b", "c", "d"], &counter).await;
    let tiered = |name: &str, from_etag: &str| Settlement::Tiered {
        user: "sam".into(),
        key: format!("users/sam/{name}"),
        version: 1,
        from_etag: from_etag.into(),
        storage_class: "GLACIER_IR".into(),
        etag: format!("copied-{name}"),
        verdict: Verdict {
            outcome: "tiered".into(),
            reason: "cold".into(),
            at: 1_800_000_000,
            recheck_at: None,
        },
    };
    // `d` was uploaded again after its copy, with the same bytes and so the
    // same entity tag: its row was written since.
    let d = projection
        .get("sam", "users/sam/d")
        .await
        .expect("row")
        .expect("row exists");
    projection
        .put(
            "sam",
            "users/sam/d",
            &d.record,
            Some(1_700_000_000),
            Some(1),
        )
        .await
        .expect("written again");
    let before = counter.get();
    // `b` was overwritten after the plan: its entity tag is no longer the
    // one its copy was conditional on.
    projection
        .settle(&[
            tiered("a", "etag-a"),
            tiered("b", "etag-b-before"),
            tiered("c", "etag-c"),
            tiered("d", "etag-d"),
        ])
        .await
        .expect("settled");
    assert_eq!(
        counter.get() - before,
        2,
        "the cancelled transaction and one more"
    );

    for (name, class, etag) in [
        ("a", "GLACIER_IR", "copied-a"),
        ("b", "STANDARD", "etag-b"),
        ("c", "GLACIER_IR", "copied-c"),
        ("d", "STANDARD", "etag-d"),
    ] {
        let row = projection
            .get("sam", &format!("users/sam/{name}"))
            .await
            .expect("row")
            .expect("row exists")
            .record;
        assert_eq!(
            (row.storage_class.as_str(), row.etag.as_deref()),
            (class, Some(etag)),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backfill_brings_objects_stored_before_lifecycle_knew_them_into_sweeps() {
    // No lifecycle consumer runs: S3's events of these objects never reach
    // the projection, as for objects stored before the service was deployed.
    let system = System::start_parts(&[], Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let bucket = system.stack.get("STOWAGE_BUCKET");
    let mut etags = Vec::new();
    for (key, size) in [
        ("users/nina/a.bin", 1 << 20),
        ("users/nina/b.bin", 3 << 20),
        ("users/olaf/c.bin", 1 << 20),
        // Directly under users/: nobody's, never tiered.
        ("users/stray.bin", 1 << 20),
    ] {
        etags.push((
            key,
            put_for_etag(&system.s3, bucket, key, vec![3; size]).await,
        ));
    }
    let counter = RequestCounter::default();
    let sweeper = counted_sweeper(
        &system.sweep_settings(&[("tier-class", "GLACIER")]),
        &counter,
    )
    .await;
    let day_100 = days_from_now(100);
    let plan = sweeper.plan(day_100, None).await.expect("plan");
    assert!(plan.objects.is_empty(), "nothing known yet: {plan:?}");

    // A listing, and per object a HeadObject, a read and, if added, a write.
    let requests = |before: usize| counter.get() - before;
    let before = counter.get();
    let pages = std::sync::atomic::AtomicUsize::new(0);
    let nina = sweeper
        .backfill(Some("nina"), |_| {
            pages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .await
        .expect("backfill");
    assert_eq!(
        (nina.listed, nina.added, nina.known, nina.gone),
        (2, 2, 0, 0)
    );
    assert_eq!(pages.into_inner(), 1, "one page of keys");
    assert_eq!(requests(before), 1 + 2 * 3);
    let before = counter.get();
    let everyone = sweeper.backfill(None, |_| {}).await.expect("backfill");
    assert_eq!((everyone.listed, everyone.added, everyone.known), (3, 1, 2));
    assert_eq!(requests(before), 1 + 3 * 2 + 1);
    let before = counter.get();
    let again = sweeper.backfill(None, |_| {}).await.expect("backfill");
    assert_eq!((again.listed, again.added, again.known), (3, 0, 3));
    assert_eq!(requests(before), 1 + 3 * 2);
    assert_eq!(
        stowctl::tier::backfill_summary(&again),
        "Looked at 3 object(s): 0 added to the lifecycle projection, 3 known already, 0 deleted meanwhile."
    );

    // Due 90 days after their upload, with what S3 holds.
    let plan = sweeper.plan(day_100, None).await.expect("plan");
    assert_eq!(
        keys(&plan),
        ["users/nina/a.bin", "users/nina/b.bin", "users/olaf/c.bin"]
    );
    for object in &plan.objects {
        let (_, etag) = etags.iter().find(|(k, _)| *k == object.key).expect("put");
        assert_eq!(object.etag.as_deref(), Some(etag.as_str()));
        assert_eq!(object.storage_class, "STANDARD");
        assert_eq!(object.action, "tier", "{object:?}");
    }
    let b = plan.objects.iter().find(|o| o.key == "users/nina/b.bin");
    assert_eq!(b.map(|o| o.size), Some(3 << 20));
    let day_80 = sweeper.plan(days_from_now(80), None).await.expect("plan");
    assert!(
        day_80.objects.is_empty(),
        "not due before day 90: {day_80:?}"
    );

    // A sweep tiers them, keeping their encryption.
    let report = sweeper.run(day_100, None).await.expect("sweep");
    assert_eq!((report.tiered, report.failed), (3, 0), "{report:?}");
    let head = system.head("users/nina/b.bin").await;
    assert_eq!(head.storage_class().map(|c| c.as_str()), Some("GLACIER"));
    assert_eq!(
        head.server_side_encryption().map(|e| e.as_str()),
        Some("AES256")
    );
    assert_eq!(
        system.head("users/stray.bin").await.storage_class(),
        None,
        "nobody's object stays"
    );
    system.stop().await;
}

/// A stack without consumers whose projection holds `count` rows of 1 MiB
/// objects of users `u0`.. `u<users - 1>`, created 40 days ago and indexed
/// as due in `due_in_days`.
async fn with_cold_rows(count: usize, users: usize, due_in_days: i64) -> System {
    let system = System::start_parts(&[], Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let day = 86_400;
    let rows: Vec<(String, ObjectRecord, i64)> = (0..count)
        .map(|i| {
            (
                format!("users/u{}/file-{i}.bin", i % users),
                standard_row(1 << 20, "e", now - 40 * day),
                now + due_in_days * day,
            )
        })
        .collect();
    load_projection(system.stack.get("STOWAGE_LIFECYCLE_TABLE"), &rows, 4).await;
    system
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reindexing_everything_follows_lowered_default_and_user_days() {
    // 3,000 rows of 30 users indexed under 90 days: created 40 days ago,
    // due in 50.
    let system = with_cold_rows(3000, 30, 50).await;
    // Then the default is lowered to 30 days, and u0's to 60.
    let sweeper = system
        .sweeper(&[
            ("tier-after-days", "30"),
            ("tier-user-policies", "u0:days=60"),
        ])
        .await;
    let today = OffsetDateTime::now_utc();
    let plan = sweeper.plan(today, None).await.expect("plan");
    assert!(plan.objects.is_empty(), "indexed at the old dates");

    let pages = std::sync::atomic::AtomicUsize::new(0);
    let changed = sweeper
        .reindex_all(|_, _| {
            pages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .await
        .expect("reindex");
    assert_eq!(changed, 3000);
    assert!(
        pages.into_inner() > 8,
        "some shards take more than one page"
    );
    // Everyone else's are due 10 days ago; u0's in 20 days.
    let plan = sweeper.plan(today, None).await.expect("plan");
    assert_eq!(plan.objects.len(), 2900);
    assert!(plan.objects.iter().all(|o| o.user != "u0"));
    let later = sweeper.plan(days_from_now(21), None).await.expect("plan");
    assert_eq!(later.objects.len(), 3000);
    assert_eq!(sweeper.reindex_all(|_, _| {}).await.expect("reindex"), 0);
    system.stop().await;
}

/// What a lifecycle service with `flags` re-dates when it starts.
async fn follow(system: &System, flags: &[(&str, &str)]) -> usize {
    let sweeper = system.sweeper(flags).await;
    sweeper.follow_policy().await.expect("follow the policy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn due_dates_follow_a_policy_that_lowered_days() {
    // 60 rows of 3 users, created 40 days ago, indexed under 120 days.
    let system = with_cold_rows(60, 3, 80).await;
    let today = OffsetDateTime::now_utc();

    // The first time, the rows are taken to follow the policy in force.
    const DAYS_120: &[(&str, &str)] = &[("tier-after-days", "120")];
    assert_eq!(follow(&system, DAYS_120).await, 0);
    assert_eq!(follow(&system, DAYS_120).await, 0);
    // One user's days lowered: that user's rows alone.
    const U1_30: &[(&str, &str)] = &[
        ("tier-after-days", "120"),
        ("tier-user-policies", "u1:days=30"),
    ];
    assert_eq!(follow(&system, U1_30).await, 20);
    assert_eq!(follow(&system, U1_30).await, 0);
    let plan = system
        .sweeper(U1_30)
        .await
        .plan(today, None)
        .await
        .expect("plan");
    let due = keys(&plan);
    assert_eq!(due.len(), 20);
    assert!(due.iter().all(|k| k.starts_with("users/u1/")), "{due:?}");

    // The service, started with the default of 90 days (lowered from 120),
    // dates every row by it.
    let lifecycle = system.lifecycle().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(lifecycle.run_until_stopped(stop.clone()));
    let sweeper = system.sweeper(&[]).await;
    eventually(
        Duration::from_secs(30),
        "every row due on day 50",
        || async {
            let before = sweeper.plan(days_from_now(49), None).await.expect("plan");
            let after = sweeper.plan(days_from_now(51), None).await.expect("plan");
            (before.objects.is_empty() && after.objects.len() == 60).then_some(())
        },
    )
    .await;
    stop.cancel();
    running.await.expect("lifecycle stops");
    assert_eq!(follow(&system, &[]).await, 0, "recorded by the service");
    system.stop().await;
}

/// Puts `body` at `key` when a `CompleteMultipartUpload` of it is about to
/// go: an upload that lands after the last part was copied.
#[derive(Debug)]
struct UploadBeforeComplete {
    bucket: String,
    key: String,
    body: Vec<u8>,
}

impl aws_sdk_s3::config::Intercept for UploadBeforeComplete {
    fn name(&self) -> &'static str {
        "UploadBeforeComplete"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let request = context.request();
        let completes = request.method() == "POST" && request.uri().contains("uploadId=");
        if completes {
            let (bucket, key, body) = (self.bucket.clone(), self.key.clone(), self.body.clone());
            // The interceptor cannot wait for a future: the upload runs on a
            // thread of its own, and the copy goes on once it is stored.
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(async {
                        let sdk = stowage_shared::aws::load().await;
                        stowage_shared::aws::s3(&sdk, true)
                            .put_object()
                            .bucket(bucket)
                            .key(key)
                            .body(body.into())
                            .send()
                            .await
                            .expect("PutObject");
                    });
            })
            .join()
            .expect("the upload ran");
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_in_parts_never_replaces_an_upload_made_while_it_copied() {
    use stowage_lifecycle::{
        adapters::s3::S3Bucket,
        domain::{policy::ArchiveClass, projection::Encryption},
        ports::{Bucket, CopyError},
    };

    let stack = stowage_e2e::Stack::deploy().expect("stack deploys");
    let bucket = stack.get("STOWAGE_BUCKET");
    let key = "users/uma/video.bin";
    let sdk = stowage_shared::aws::load().await;
    let s3 = stowage_shared::aws::s3(&sdk, true);
    let put = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(vec![1u8; 12 << 20].into())
        .send()
        .await
        .expect("PutObject");
    let etag = put.e_tag().expect("etag").trim_matches('"').to_string();
    let copying = S3Bucket::new(
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .interceptor(UploadBeforeComplete {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    body: vec![2u8; 1 << 20],
                })
                .build(),
        ),
        bucket,
    );
    let parts = [
        (0, (5 << 20) - 1),
        (5 << 20, (10 << 20) - 1),
        (10 << 20, (12 << 20) - 1),
    ];
    let copied = copying
        .copy_to_class(
            key,
            &etag,
            ArchiveClass::Glacier,
            &Encryption::S3Managed,
            Some(&parts),
        )
        .await;
    assert!(matches!(copied, Err(CopyError::Changed)), "{copied:?}");
    let head = s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("HeadObject");
    assert_eq!(head.content_length(), Some(1 << 20), "the upload stays");
    assert_eq!(head.storage_class(), None);
}

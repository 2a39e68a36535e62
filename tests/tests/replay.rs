//! `stowctl replay` against an EventBridge that replays: moto's. (LocalStack
//! 4.12 answers StartReplay with a 500.) The stack runs on LocalStack as
//! always; the S3 events it delivers are captured, archived on a bus in moto
//! exactly as EventBridge archives the stack's bus, replayed there by
//! `stowctl replay`, and what moto's replay delivers is handed to the
//! ledger's queue, where on AWS the bus's rule would put it. Usage must not
//! change: every replayed event is a duplicate or older than what the ledger
//! applied.

use std::time::Duration;

use aws_sdk_eventbridge::{primitives::DateTime, types::PutEventsRequestEntry};
use serde_json::{Value, json};
use stowage_e2e::{System, drain, eventually, queue_arn};
use stowctl::replay::{ReplayRequest, replay};

/// A deleted, an overwritten and a kept object: four S3 events.
async fn history(system: &System, token: &str) {
    system.put(token, "keep.txt", vec![1; 100]).await;
    system.put(token, "gone.txt", vec![2; 200]).await;
    system.used_bytes_reach(token, 300).await;
    system.put(token, "keep.txt", vec![3; 150]).await;
    system.used_bytes_reach(token, 350).await;
    let deleted = system
        .call(
            reqwest::Method::DELETE,
            "/v1/objects/gone.txt",
            Some(token),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    system.used_bytes_reach(token, 150).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replaying_an_hour_of_archived_events_leaves_usage_unchanged() {
    let system = System::start().await.expect("system starts");
    let sdk = stowage_shared::aws::load().await;
    let local_events = stowage_shared::aws::eventbridge(&sdk);
    let bus = system.stack.get("STOWAGE_EVENT_BUS").to_string();

    // A queue beside the ledger's that receives the same S3 events.
    let (capture, capture_arn) = queue(&system.sqs, format!("{}-capture", system.stack.name)).await;
    let s3_events =
        r#"{"source": ["aws.s3"], "detail-type": ["Object Created", "Object Deleted"]}"#;
    route(&local_events, &bus, "capture", s3_events, &capture_arn).await;

    let token = system.token("rae");
    history(&system, &token).await;
    let before = system.usage(&token).await;
    let captured = std::sync::Mutex::new(Vec::new());
    eventually(Duration::from_secs(60), "four S3 events captured", || {
        let (system, capture, captured) = (&system, &capture, &captured);
        async move {
            let bodies = drain(&system.sqs, capture).await;
            let mut captured = captured.lock().expect("lock");
            captured.extend(bodies);
            (captured.len() >= 4).then_some(())
        }
    })
    .await;
    let captured = captured.into_inner().expect("lock");
    assert_eq!(captured.len(), 4, "{captured:#?}");

    // The same events on an archived bus in moto.
    let moto = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").expect("moto's endpoint");
    let events = aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(&sdk)
            .endpoint_url(&moto)
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk)
            .endpoint_url(&moto)
            .build(),
    );
    let moto_bus = format!("{}-replayed", system.stack.name);
    let bus_arn = events
        .create_event_bus()
        .name(&moto_bus)
        .send()
        .await
        .expect("CreateEventBus")
        .event_bus_arn
        .expect("bus ARN");
    events
        .create_archive()
        .archive_name(format!("{moto_bus}-archive"))
        .event_source_arn(&bus_arn)
        .send()
        .await
        .expect("CreateArchive");
    let (target, target_arn) = queue(&sqs, format!("{moto_bus}-ledger")).await;
    route(&events, &moto_bus, "ledger", s3_events, &target_arn).await;
    // Usage events go to a rule of their own, which the replay must skip.
    let (usage_queue, usage_arn) = queue(&sqs, format!("{moto_bus}-intake")).await;
    route(
        &events,
        &moto_bus,
        "intake",
        r#"{"source": ["stowage.ledger"]}"#,
        &usage_arn,
    )
    .await;
    for body in &captured {
        let event: Value = serde_json::from_str(body).expect("an EventBridge event");
        let time = time::OffsetDateTime::parse(
            event["time"].as_str().expect("time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339 time");
        let put = events
            .put_events()
            .entries(
                PutEventsRequestEntry::builder()
                    .event_bus_name(&moto_bus)
                    .source(event["source"].as_str().expect("source"))
                    .detail_type(event["detail-type"].as_str().expect("detail-type"))
                    .detail(event["detail"].to_string())
                    .time(DateTime::from_secs(time.unix_timestamp()))
                    .build(),
            )
            .send()
            .await
            .expect("PutEvents");
        assert_eq!(put.failed_entry_count, 0);
    }
    // What the rule delivered when the events first arrived.
    let first = drain(&sqs, &target).await;
    assert_eq!(first.len(), 4);

    let report = replay(
        &events,
        &ReplayRequest {
            bus: moto_bus.clone(),
            archive: None,
            from: time::OffsetDateTime::now_utc() - time::Duration::hours(1),
            to: time::OffsetDateTime::now_utc(),
            source: Some("aws.s3".into()),
            detail_type: None,
        },
        Duration::from_millis(200),
        |_| {},
        std::future::pending(),
    )
    .await
    .expect("replay");
    assert!(report.completed(), "{report:?}");
    assert_eq!(report.archive, format!("{moto_bus}-archive"));
    assert_eq!(report.rules, [format!("{moto_bus}-ledger")]);
    assert!(report.archive_events >= 4, "{report:?}");
    assert!(
        report.summary().contains("COMPLETED"),
        "{}",
        report.summary()
    );
    let json = serde_json::to_value(&report).expect("JSON");
    assert_eq!(json["state"], "COMPLETED");
    assert_eq!(json["rules"][0], format!("{moto_bus}-ledger"));

    let replayed = drain(&sqs, &target).await;
    assert_eq!(replayed.len(), 4, "{replayed:#?}");
    for body in &replayed {
        let event: Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(event["replay-name"], report.replay.as_str());
        assert_eq!(event["source"], "aws.s3");
    }
    assert!(drain(&sqs, &usage_queue).await.is_empty());

    // Into the ledger, as the bus's rule would deliver them on AWS.
    let ledger_queue = system.stack.get("STOWAGE_LEDGER_QUEUE_URL").to_string();
    system.send(&ledger_queue, &replayed).await;
    eventually(
        Duration::from_secs(60),
        "the ledger took the replay",
        || {
            let (system, ledger_queue) = (&system, &ledger_queue);
            async move { (system.queue_depth(ledger_queue).await == 0).then_some(()) }
        },
    )
    .await;
    let dlq = system.stack.get("STOWAGE_LEDGER_DLQ_URL").to_string();
    assert_eq!(system.queue_depth(&dlq).await, 0, "nothing dead-lettered");

    // The replay's UsageChanged events may still be on their way to intake
    // once the ledger's queue is empty. One more upload is announced after
    // them, at a newer revision: once intake shows it, its totals are the
    // ledger's after the replay, and a report of the replay that arrives
    // later is older and changes no total. The usage is then the history's
    // plus that upload.
    system.put(&token, "marker.txt", vec![4; 10]).await;
    let after = system.used_bytes_reach(&token, 160).await;
    let plus =
        |value: &Value, n: u64| json!(value.as_u64().expect("a number of bytes or objects") + n);
    let mut expected = before.clone();
    expected["used_bytes"] = plus(&before["used_bytes"], 10);
    expected["object_count"] = plus(&before["object_count"], 1);
    expected["by_storage_class"]["STANDARD"] = plus(&before["by_storage_class"]["STANDARD"], 10);
    // The estimated cost follows from the bytes by storage class.
    expected["estimated_monthly_cost_usd"] = after["estimated_monthly_cost_usd"].clone();
    assert_eq!(after, expected);
    let report = system
        .reconciler()
        .await
        .run(Some("rae"), false)
        .await
        .expect("reconcile");
    assert!(report.clean(), "{report:?}");
    system.stop().await;
}

/// A new queue's URL and ARN.
async fn queue(sqs: &aws_sdk_sqs::Client, name: String) -> (String, String) {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("queue URL");
    let arn = queue_arn(sqs, &url).await;
    (url, arn)
}

/// A rule named `<bus>-<name>` routing `pattern` to a queue.
async fn route(
    events: &aws_sdk_eventbridge::Client,
    bus: &str,
    name: &str,
    pattern: &str,
    queue_arn: &str,
) {
    stowage_e2e::route(events, bus, &format!("{bus}-{name}"), pattern, queue_arn).await;
}

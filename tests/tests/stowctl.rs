//! stowctl's queue commands against the emulators: a poison message shows in
//! `queues` and `dlq peek`, and `dlq redrive` moves it back.

use std::time::Duration;

use serde_json::Value;
use stowage_e2e::{Parts, System, eventually, queue_depth};
use stowctl::queues::{self, Consumer, Queues};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_show_in_queues_and_peek_and_redrive_moves_them_back() {
    // No ledger runs: the test receives the poison itself, as a consumer that
    // keeps failing does, so that nothing else takes the messages redrive
    // moves back. (tests/ledger.rs shows the ledger dead-lettering poison.)
    let system = System::start_parts(&[], Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let stack = system.stack.clone();
    let sqs = system.sqs.clone();
    let ledger_queue = stack.get("STOWAGE_LEDGER_QUEUE_URL").to_string();
    let ledger_dlq = stack.get("STOWAGE_LEDGER_DLQ_URL").to_string();
    system
        .send(
            &ledger_queue,
            &[
                "this is not JSON".to_string(),
                r#"{"version":"0","id":"x","detail-type":"UsageChanged.v9","source":"stowage.ledger","time":"2026-11-23T10:00:00Z","detail":{"user_id":"ivy","key":"users/ivy/poison.txt"}}"#
                    .to_string(),
            ],
        )
        .await;
    eventually(
        Duration::from_secs(60),
        "both poison messages in the ledger DLQ",
        || async {
            // Received and released at once, until maxReceiveCount is spent.
            sqs.receive_message()
                .queue_url(&ledger_queue)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .send()
                .await
                .expect("ReceiveMessage");
            (queue_depth(&sqs, &ledger_dlq).await.expect("depth") == 2).then_some(())
        },
    )
    .await;

    let queues = Queues::from_settings(|name| stack.settings.get(name).cloned());

    let rows = queues::status(&sqs, &queues).await.expect("queues");
    assert_eq!(rows.len(), 6, "three queues and their DLQs: {rows:?}");
    let dlq_row = rows
        .iter()
        .find(|r| r.consumer == Consumer::Ledger && r.role == queues::Role::Dlq)
        .expect("a ledger DLQ row");
    assert_eq!((dlq_row.visible, dlq_row.in_flight), (2, 0));
    assert_eq!(dlq_row.url, ledger_dlq);
    assert!(dlq_row.oldest_age_seconds.is_some());
    for row in rows.iter().filter(|r| r.role == queues::Role::Queue) {
        assert_eq!(row.oldest_age_seconds, None, "{row:?}");
    }
    let table = queues::status_table(&rows);
    let line = table
        .lines()
        .find(|l| l.contains("ledger DLQ"))
        .unwrap_or_else(|| panic!("no ledger DLQ line in\n{table}"));
    assert!(
        line.contains(&format!("{}-ledger-dlq", stack.name)),
        "{line}"
    );
    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
    assert_eq!(cells[3..5], ["2", "0"], "{line}");
    let json: Value = serde_json::to_value(&rows).expect("JSON");
    assert_eq!(json[3]["consumer"], "ledger");
    assert_eq!(json[3]["role"], "dlq");
    assert_eq!(json[3]["visible"], 2);

    // A scan that outlasts the time it hides what it has seen (here none at
    // all) meets the same messages again, and stops there.
    let again = tokio::time::timeout(
        Duration::from_secs(60),
        queues::peek_hiding(&sqs, &queues, Consumer::Ledger, 10, 0),
    )
    .await
    .expect("the peek ends")
    .expect("dlq peek");
    assert_eq!(again.messages.len(), 2, "{again:?}");
    // Met again, each message is released with its latest receipt only.
    assert_eq!(again.not_released, 0, "{again:?}");
    let peek = queues::peek(&sqs, &queues, Consumer::Ledger, 10)
        .await
        .expect("dlq peek");
    assert_eq!(peek.messages.len(), 2, "{peek:?}");
    assert_eq!((peek.not_released, peek.release_warning()), (0, None));
    let junk = peek
        .messages
        .iter()
        .find(|m| m.undecodable.is_some())
        .expect("the body that is not JSON");
    assert_eq!(junk.body, "this is not JSON");
    let usage = peek
        .messages
        .iter()
        .find(|m| m.undecodable.is_none())
        .expect("the event of an unknown version");
    assert_eq!(usage.detail_type.as_deref(), Some("UsageChanged.v9"));
    assert_eq!(usage.version.as_deref(), Some("9"));
    assert_eq!(usage.source.as_deref(), Some("stowage.ledger"));
    assert_eq!(usage.user.as_deref(), Some("ivy"));
    assert_eq!(usage.key.as_deref(), Some("users/ivy/poison.txt"));
    // Dead-lettered after maxReceiveCount (5) receives, plus this peek's.
    assert!(usage.receive_count.unwrap_or(0) > 5, "{usage:?}");

    let table = queues::peek_table(&peek);
    let junk_line = table
        .lines()
        .find(|l| l.contains(&junk.message_id))
        .unwrap_or_else(|| panic!("no line for the junk message in\n{table}"));
    assert!(
        junk_line.contains("(undecodable) this is not JSON"),
        "{junk_line}"
    );
    let usage_line = table
        .lines()
        .find(|l| l.contains(&usage.message_id))
        .unwrap_or_else(|| panic!("no line for the event in\n{table}"));
    for cell in [
        "UsageChanged.v9",
        "stowage.ledger",
        "ivy",
        "users/ivy/poison.txt",
    ] {
        assert!(usage_line.contains(cell), "{cell} missing in {usage_line}");
    }
    assert!(table.ends_with("2 of about 2 message(s) in the ledger dead-letter queue."));
    let json: Value = serde_json::to_value(&peek).expect("JSON");
    assert_eq!(json["consumer"], "ledger");
    let messages = json["messages"].as_array().expect("messages");
    assert!(messages.iter().any(|m| m["undecodable"].is_string()
        && m["body"] == "this is not JSON"
        && m["detail_type"].is_null()));
    assert!(
        messages
            .iter()
            .any(|m| m["detail_type"] == "UsageChanged.v9"
                && m["version"] == "9"
                && m["source"] == "stowage.ledger"
                && m["user"] == "ivy"
                && m["key"] == "users/ivy/poison.txt"
                && m["message_id"] == usage.message_id.as_str()
                && m["receive_count"].as_u64() == usage.receive_count)
    );
    // A peek consumes nothing and leaves every message visible.
    let rows = queues::status(&sqs, &queues).await.expect("queues");
    let dlq_row = rows
        .iter()
        .find(|r| r.consumer == Consumer::Ledger && r.role == queues::Role::Dlq)
        .expect("a ledger DLQ row");
    assert_eq!((dlq_row.visible, dlq_row.in_flight), (2, 0));
    let one = queues::peek(&sqs, &queues, Consumer::Ledger, 1)
        .await
        .expect("dlq peek -n 1");
    assert_eq!((one.messages.len(), one.visible), (1, 2));

    let mut reports = Vec::new();
    let redrive = queues::redrive(
        &sqs,
        &queues,
        Consumer::Ledger,
        None,
        Duration::from_millis(200),
        |p| reports.push(p),
        std::future::pending(),
    )
    .await
    .expect("dlq redrive");
    assert!(redrive.completed(), "{redrive:?}");
    assert_eq!(redrive.moved, 2);
    assert_eq!(reports.last().map(|p| p.moved), Some(2));
    assert_eq!(
        queues::redrive_summary(&redrive),
        format!(
            "Moved 2 message(s) from the ledger dead-letter queue back to {}-ledger. About 0 message(s) are left in the dead-letter queue.",
            stack.name
        )
    );
    let json: Value = serde_json::to_value(&redrive).expect("JSON");
    assert_eq!(
        (json["status"].as_str(), json["moved"].as_i64()),
        (Some("COMPLETED"), Some(2))
    );
    assert_eq!(json["left_in_dlq"], 0);
    assert_eq!(queue_depth(&sqs, &ledger_dlq).await.expect("depth"), 0);
    assert_eq!(queue_depth(&sqs, &ledger_queue).await.expect("depth"), 2);
    let mut bodies: Vec<String> = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&ledger_queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("ReceiveMessage");
        if received.messages().is_empty() {
            break;
        }
        bodies.extend(
            received
                .messages()
                .iter()
                .map(|m| m.body().unwrap_or_default().to_string()),
        );
    }
    bodies.sort();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0], "this is not JSON");
    assert!(bodies[1].contains("UsageChanged.v9"));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_queue_is_named_with_what_to_do() {
    let system = System::start_parts(&[], Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let missing = system
        .stack
        .get("STOWAGE_LEDGER_QUEUE_URL")
        .replace("-ledger", "-nonexistent");
    let queues = Queues::new([(Consumer::Ledger, missing.clone())]);
    let error = queues::peek(&system.sqs, &queues, Consumer::Ledger, 1)
        .await
        .expect_err("no such queue");
    let text = format!("{error:#}");
    assert!(
        text.contains(&format!(
            "GetQueueAttributes on the ledger queue ({missing}) failed"
        )),
        "{text}"
    );
    assert!(text.contains("the queue does not exist"), "{text}");

    let error = queues::status(&system.sqs, &queues)
        .await
        .expect_err("intake's queue is not configured");
    assert!(
        format!("{error:#}").starts_with("STOWAGE_INTAKE_QUEUE_URL is not set"),
        "{error:#}"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_shows_what_the_api_reports_and_quota_set_changes_what_grants_may_take() {
    use stowage_intake::{
        accounts::set_quota, adapters::dynamodb::DynamoAccountStore, domain::keys::UserId,
    };
    use stowctl::accounts::{self, UsageReport};

    let system = System::start().await.expect("system starts");
    let sdk = stowage_shared::aws::load().await;
    let store = DynamoAccountStore::new(
        stowage_shared::aws::dynamodb(&sdk),
        system.stack.get("STOWAGE_INTAKE_TABLE"),
    );
    let prices = stowage_shared::pricing::PriceTable::default();
    let token = system.token("uma");
    let uma = UserId::parse("uma").expect("valid id");

    system.put(&token, "a.bin", vec![7; 3000]).await;
    system.used_bytes_reach(&token, 3000).await;
    let pending = system
        .grant(
            &token,
            &serde_json::json!({"path": "b.bin", "size": 500, "content_type": "text/plain"}),
        )
        .await;
    assert_eq!(pending.status, 201, "{}", pending.body);

    let api = system.usage(&token).await;
    let default_quota = api["quota_bytes"].as_u64().expect("quota");
    let report = accounts::usage(&store, &uma, default_quota, &prices)
        .await
        .expect("usage");
    assert_eq!(report.user_id, "uma");
    assert_eq!(report.used_bytes, 3000);
    assert_eq!(report.reserved_bytes, 500);
    assert_eq!(report.reserved_keys, 1);
    assert_eq!(report.object_count, 1);
    assert!(!report.quota_is_own);
    let json = serde_json::to_value(&report).expect("JSON");
    for field in [
        "used_bytes",
        "reserved_bytes",
        "quota_bytes",
        "object_count",
        "by_storage_class",
        "estimated_monthly_cost_usd",
    ] {
        assert_eq!(json[field], api[field], "{field}: {json} vs {api}");
    }
    let table = report.table().to_string();
    let row = |label: &str| {
        table
            .lines()
            .find(|l| l.contains(label))
            .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>()[2].to_string())
            .unwrap_or_else(|| panic!("no {label} row in\n{table}"))
    };
    assert_eq!(row("used bytes"), "3000");
    assert_eq!(row("reserved bytes"), "500");
    assert_eq!(row("quota bytes"), format!("{default_quota} (default)"));
    assert_eq!(row("bytes in STANDARD"), "3000");

    // 3,000 stored and 500 reserved: a quota of 3,600 leaves room for 100
    // more bytes, not 101.
    let account = set_quota(&store, &uma, 3600).await.expect("quota set");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let report = UsageReport::new(&uma, &account, default_quota, &prices, now);
    assert_eq!((report.quota_bytes, report.quota_is_own), (3600, true));
    assert!(report.table().to_string().contains("3600 (own)"));
    assert_eq!(system.usage(&token).await["quota_bytes"], 3600);
    let grant = |path: &'static str, size: u64| {
        let (system, token) = (&system, &token);
        async move {
            system
                .grant(
                    token,
                    &serde_json::json!({"path": path, "size": size, "content_type": "text/plain"}),
                )
                .await
        }
    };
    let refused = grant("c.bin", 101).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(grant("c.bin", 100).await.status, 201);
    // The reservations made meanwhile survive a later quota change.
    set_quota(&store, &uma, 1 << 20).await.expect("quota set");
    let report = accounts::usage(&store, &uma, default_quota, &prices)
        .await
        .expect("usage");
    assert_eq!(
        (
            report.quota_bytes,
            report.reserved_bytes,
            report.reserved_keys
        ),
        (1 << 20, 600, 2)
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_dead_lettered_while_the_ledger_failed_count_exactly_once_after_redrive() {
    let mut system = System::start_parts(&[], Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let stack = system.stack.clone();
    let sqs = system.sqs.clone();
    let ledger_queue = stack.get("STOWAGE_LEDGER_QUEUE_URL").to_string();
    let ledger_dlq = stack.get("STOWAGE_LEDGER_DLQ_URL").to_string();
    let token = system.token("dee");
    for (path, size) in [("a.bin", 1000), ("b.bin", 2000), ("c.bin", 3000)] {
        system.put(&token, path, vec![9; size]).await;
    }
    // Three grants and three uploads, each received and never deleted, as by
    // a ledger that keeps failing, until SQS dead-letters all six.
    eventually(
        Duration::from_secs(90),
        "six events in the ledger DLQ",
        || async {
            sqs.receive_message()
                .queue_url(&ledger_queue)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .send()
                .await
                .expect("ReceiveMessage");
            (queue_depth(&sqs, &ledger_dlq).await.expect("depth") == 6).then_some(())
        },
    )
    .await;
    assert_eq!(system.usage(&token).await["used_bytes"], 0);

    // The ledger works again; the dead letters go back once.
    system.start_ledger().await.expect("ledger starts");
    let queues = Queues::from_settings(|name| stack.settings.get(name).cloned());
    let redrive = queues::redrive(
        &sqs,
        &queues,
        Consumer::Ledger,
        None,
        Duration::from_millis(200),
        |_| {},
        std::future::pending(),
    )
    .await
    .expect("dlq redrive");
    assert_eq!((redrive.completed(), redrive.moved), (true, 6));
    let usage = system.used_bytes_reach(&token, 6000).await;
    assert_eq!(usage["object_count"], 3);
    eventually(
        Duration::from_secs(30),
        "the ledger queue empty",
        || async { (queue_depth(&sqs, &ledger_queue).await.expect("depth") == 0).then_some(()) },
    )
    .await;
    assert_eq!(queue_depth(&sqs, &ledger_dlq).await.expect("depth"), 0);
    let report = system
        .reconciler()
        .await
        .run(Some("dee"), false)
        .await
        .expect("reconcile");
    assert!(report.clean(), "{report:?}");
    assert_eq!(system.usage(&token).await["used_bytes"], 6000);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_redrive_cancels_its_move_task_or_starts_none() {
    let system = System::start_parts(&[], Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let stack = system.stack.clone();
    let sqs = system.sqs.clone();
    let ledger_queue = stack.get("STOWAGE_LEDGER_QUEUE_URL").to_string();
    let ledger_dlq = stack.get("STOWAGE_LEDGER_DLQ_URL").to_string();
    let letters: Vec<String> = (0..5).map(|i| format!("dead letter {i}")).collect();
    system.send(&ledger_dlq, &letters).await;
    assert_eq!(queue_depth(&sqs, &ledger_dlq).await.expect("depth"), 5);
    let queues = Queues::from_settings(|name| stack.settings.get(name).cloned());

    // Interrupted before the task starts: nothing is started.
    let error = queues::redrive(
        &sqs,
        &queues,
        Consumer::Ledger,
        Some(1),
        Duration::from_millis(200),
        |_| {},
        std::future::ready(()),
    )
    .await
    .expect_err("interrupted");
    assert!(error.to_string().contains("nothing was moved"), "{error:#}");
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&ledger_dlq)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .cloned()
        .expect("the DLQ's ARN");
    let tasks = sqs
        .list_message_move_tasks()
        .source_arn(&dlq_arn)
        .send()
        .await
        .expect("ListMessageMoveTasks");
    assert!(tasks.results().is_empty(), "{tasks:?}");
    assert_eq!(queue_depth(&sqs, &ledger_dlq).await.expect("depth"), 5);

    // Interrupted once it runs (a message a second): the task is cancelled
    // and the report says how many were moved before.
    let (started, interrupt) = tokio::sync::oneshot::channel::<()>();
    let mut started = Some(started);
    let redrive = queues::redrive(
        &sqs,
        &queues,
        Consumer::Ledger,
        Some(1),
        Duration::from_millis(200),
        |_| {
            if let Some(started) = started.take() {
                let _ = started.send(());
            }
        },
        async {
            let _ = interrupt.await;
        },
    )
    .await
    .expect("dlq redrive");
    assert_eq!(redrive.status, "CANCELLED", "{redrive:?}");
    assert!(redrive.cancelled_by_stowctl, "{redrive:?}");
    assert!(redrive.moved < 5, "{redrive:?}");
    assert!(!redrive.completed());
    assert!(!redrive.task_handle.is_empty());
    let left = queue_depth(&sqs, &ledger_dlq).await.expect("depth");
    let moved = queue_depth(&sqs, &ledger_queue).await.expect("depth");
    assert_eq!((left + moved, moved), (5, redrive.moved as u64));
    assert_eq!(redrive.left_in_dlq, Some(left));
    assert!(
        queues::redrive_summary(&redrive).starts_with(&format!(
            "Interrupted: cancelled the move task after it moved {} message(s) back to {}-ledger.",
            redrive.moved, stack.name
        )),
        "{}",
        queues::redrive_summary(&redrive)
    );
    system.stop().await;
}

//! Ledger throughput on the local emulators: events applied per second with
//! 1 and 4 workers, beside the emulator's raw rate for the same DynamoDB
//! transaction and the emulators' raw rate for the ledger's whole request
//! set (receive, read, write, publish, delete, batched as the ledger batches
//! them, without the ledger's work); AWS requests per event (counted in the
//! emulators' request logs); the ledger process's CPU time per event and
//! peak resident memory.
//!
//! Run with `make bench` (it builds the release ledger and starts the
//! emulators). Prints a Markdown table.
//!
//! `bench_ledger --stub [--stub-delay-ms N] <ledger>` needs no emulator:
//! the same messages, on the queue of [`stowage_e2e::aws_stub`], which
//! answers every request of the ledger at once (or after N ms), so the
//! figures are the ledger's own work when its backend keeps up.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use clap::Parser;
use serde_json::json;
use stowage_e2e::{
    Stack,
    aws_stub::{AwsStub, StubOptions},
    emulator_requests, eventually, process_usage, queue_depth,
};
use stowage_ledger::{domain::usage::Usage, ledger::usage_changed};
use stowage_shared::publisher::EventBus;

const EVENTS: usize = 2_000;
const USERS: usize = 20;

fn s3_event(bucket: &str, i: usize) -> String {
    json!({
        "version": "0", "id": format!("bench-{i}"), "detail-type": "Object Created", "source": "aws.s3",
        "account": "000000000000", "time": "2026-11-23T10:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {
            "version": "0", "bucket": {"name": bucket},
            "object": {"key": format!("users/bench{}/file-{i}.bin", i % USERS), "size": 1000 + i, "etag": format!("e{i}"), "sequencer": format!("{:018X}", i + 1)},
            "reason": "POST Object"
        }
    })
    .to_string()
}

/// The `UploadGranted.v1` for `s3_event(bucket, i)`'s upload, as the bus
/// delivers it to the ledger's queue.
fn grant_event(i: usize) -> String {
    let user = format!("bench{}", i % USERS);
    let detail = stowage_events::UploadGrantedV1 {
        meta: stowage_events::EventMeta::new(user.as_str(), Default::default()),
        grant_id: uuid::Uuid::new_v4(),
        key: format!("users/{user}/file-{i}.bin"),
        max_size: 1000 + i as u64,
        content_type: "application/octet-stream".to_string(),
        expires_at: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    };
    json!({
        "version": "0", "id": format!("grant-{i}"), "detail-type": "UploadGranted.v1", "source": "stowage.intake",
        "account": "000000000000", "time": "2026-11-23T09:59:00Z", "region": "us-east-1", "resources": [],
        "detail": detail,
    })
    .to_string()
}

async fn fill(sqs: &aws_sdk_sqs::Client, queue: &str, bodies: Vec<String>) {
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .expect("entry")
            })
            .collect();
        sqs.send_message_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("SendMessageBatch");
    }
}

/// The `count` messages of a run: with `grants`, half of them are
/// uploads' `UploadGranted.v1` and half the uploads, each grant 5 messages
/// before its upload, as browser uploads produce them; otherwise every
/// message is an upload.
fn messages(bucket: &str, grants: bool, count: usize) -> Vec<String> {
    if grants {
        (0..count / 2 + 5)
            .flat_map(|i| {
                let grant = (i < count / 2).then(|| grant_event(i));
                let upload = i.checked_sub(5).map(|j| s3_event(bucket, j));
                grant.into_iter().chain(upload)
            })
            .collect()
    } else {
        (0..count).map(|i| s3_event(bucket, i)).collect()
    }
}

/// Messages per run on the stub: enough for the CPU time, counted by the
/// kernel in 10 ms ticks, to be read to about 1%.
const STUB_MESSAGES: usize = 20_000;

/// Starts the ledger with `command` on `[bucket, table, queue URL, event
/// bus]` and `workers` workers, polling an empty queue every second.
fn ledger(
    mut command: tokio::process::Command,
    [bucket, table, queue, bus]: [&str; 4],
    workers: usize,
) -> tokio::process::Child {
    command
        .args(["--bucket", bucket, "--s3-path-style", "true"])
        .args(["--table", table, "--queue-url", queue])
        .args(["--event-bus", bus, "--wait-seconds", "1"])
        .args(["--workers", &workers.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ledger starts")
}

struct Run {
    workers: usize,
    per_second: f64,
    requests_per_event: f64,
    cpu_us_per_event: f64,
    peak_rss_mb: f64,
}

/// Runs the ledger over `EVENTS` [`messages`] on the emulators.
async fn run_ledger(binary: &Path, logs: &Path, workers: usize, grants: bool) -> Run {
    let stack = Stack::deploy().expect("stack deploys");
    let sdk = stowage_shared::aws::load().await;
    let sqs = stowage_shared::aws::sqs(&sdk);
    let queue = stack.get("STOWAGE_LEDGER_QUEUE_URL").to_string();
    fill(
        &sqs,
        &queue,
        messages(stack.get("STOWAGE_BUCKET"), grants, EVENTS),
    )
    .await;

    let before = emulator_requests(logs);
    let started = Instant::now();
    let mut ledger = ledger(
        tokio::process::Command::new(binary),
        [
            stack.get("STOWAGE_BUCKET"),
            stack.get("STOWAGE_LEDGER_TABLE"),
            &queue,
            stack.get("STOWAGE_EVENT_BUS"),
        ],
        workers,
    );
    let pid = ledger.id().expect("pid");
    eventually(
        Duration::from_secs(900),
        "the ledger to apply every event",
        || async {
            queue_depth(&sqs, &queue)
                .await
                .is_ok_and(|d| d == 0)
                .then_some(())
        },
    )
    .await;
    let elapsed = started.elapsed();
    let usage = process_usage(pid);
    // The final depth polls and the idle long polls are not the ledger's work.
    let requests = emulator_requests(logs) - before;
    ledger.kill().await.expect("ledger stops");
    Run {
        workers,
        per_second: EVENTS as f64 / elapsed.as_secs_f64(),
        requests_per_event: requests as f64 / EVENTS as f64,
        cpu_us_per_event: usage.cpu_ns as f64 / 1_000.0 / EVENTS as f64,
        peak_rss_mb: usage.peak_rss_kb as f64 / 1024.0,
    }
}

/// Runs the ledger over `STUB_MESSAGES` [`messages`] with every AWS
/// request answered by `stub`, measured from when it first polls the empty
/// queue; also returns the requests per message by operation.
async fn run_ledger_on_stub(
    binary: &Path,
    stub: &AwsStub,
    workers: usize,
    grants: bool,
) -> (Run, BTreeMap<String, f64>) {
    const RECEIVE: &str = "AmazonSQS.ReceiveMessage";
    let receives = stub.requests().get(RECEIVE).copied().unwrap_or(0);
    let mut command = tokio::process::Command::new(binary);
    stub.point(&mut command);
    let mut ledger = ledger(
        command,
        [
            "stub-bucket",
            "stub-ledger",
            "http://127.0.0.1/000000000000/stub-ledger",
            "stub-bus",
        ],
        workers,
    );
    let pid = ledger.id().expect("pid");
    eventually(Duration::from_secs(60), "the ledger to poll", || async {
        (stub.requests().get(RECEIVE).copied().unwrap_or(0) > receives).then_some(())
    })
    .await;
    let (idle, before) = (process_usage(pid), stub.requests());
    let started = Instant::now();
    stub.enqueue(messages("stub-bucket", grants, STUB_MESSAGES));
    eventually(
        Duration::from_secs(300),
        "the ledger to apply every message",
        || async { (stub.queued() == (0, 0)).then_some(()) },
    )
    .await;
    let elapsed = started.elapsed();
    let usage = process_usage(pid);
    ledger.kill().await.expect("ledger stops");
    let per_message = |n: usize| n as f64 / STUB_MESSAGES as f64;
    let by_operation: BTreeMap<String, f64> = stub
        .requests_since(&before)
        .into_iter()
        .map(|(operation, count)| (operation, per_message(count)))
        .collect();
    let run = Run {
        workers,
        per_second: STUB_MESSAGES as f64 / elapsed.as_secs_f64(),
        requests_per_event: by_operation.values().sum(),
        cpu_us_per_event: usage.cpu_ns.saturating_sub(idle.cpu_ns) as f64
            / 1e3
            / STUB_MESSAGES as f64,
        peak_rss_mb: usage.peak_rss_kb as f64 / 1024.0,
    };
    (run, by_operation)
}

/// What a run's queue holds.
fn kind(grants: bool) -> &'static str {
    if grants {
        "uploads with their grants"
    } else {
        "uploads"
    }
}

/// The ledger on the stub, answering at once or after `delay`: the
/// ledger's own work when its backend keeps up.
async fn on_stub(binary: &Path, delay: Duration) {
    let stub = AwsStub::start(StubOptions {
        delay,
        ..StubOptions::default()
    })
    .await
    .expect("the stub starts");
    println!(
        "| workers | messages | messages/s | AWS requests per message | ledger CPU µs per message | ledger peak RSS |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut operations = Vec::new();
    for grants in [false, true] {
        for workers in [1, 4] {
            let (run, by_operation) = run_ledger_on_stub(binary, &stub, workers, grants).await;
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.0} | {:.1} MB |",
                run.workers,
                kind(grants),
                run.per_second,
                run.requests_per_event,
                run.cpu_us_per_event,
                run.peak_rss_mb
            );
            operations.push((workers, grants, by_operation));
        }
    }
    println!();
    for (workers, grants, by_operation) in operations {
        let per: Vec<String> = by_operation
            .iter()
            .map(|(operation, n)| format!("{operation} {n:.3}"))
            .collect();
        println!(
            "- {workers} worker(s), {}: {}",
            kind(grants),
            per.join(", ")
        );
    }
}

/// The ledger's transaction (object row + usage row, both conditional),
/// issued directly, `workers` at a time, each on its own user.
async fn raw_transactions(workers: usize) -> f64 {
    let stack = Stack::deploy().expect("stack deploys");
    let sdk = stowage_shared::aws::load().await;
    let client = stowage_shared::aws::dynamodb(&sdk);
    let table = stack.get("STOWAGE_LEDGER_TABLE").to_string();
    let per_worker = EVENTS / workers;
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (client, table) = (client.clone(), table.clone());
            tokio::spawn(async move {
                let s = |v: String| AttributeValue::S(v);
                let n = |v: usize| AttributeValue::N(v.to_string());
                for i in 0..per_worker {
                    let object = Put::builder()
                        .table_name(&table)
                        .item("pk", s(format!("USER#raw{w}")))
                        .item("sk", s(format!("OBJ#users/raw{w}/f{i}")))
                        .item("size", n(i))
                        .item("ver", n(1))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .expect("put");
                    let usage = Put::builder()
                        .table_name(&table)
                        .item("pk", s(format!("USER#raw{w}")))
                        .item("sk", s("USAGE".into()))
                        .item("revision", n(i + 1))
                        .condition_expression("attribute_not_exists(pk) OR revision = :r")
                        .expression_attribute_values(":r", n(i))
                        .build()
                        .expect("put");
                    client
                        .transact_write_items()
                        .transact_items(TransactWriteItem::builder().put(object).build())
                        .transact_items(TransactWriteItem::builder().put(usage).build())
                        .send()
                        .await
                        .expect("TransactWriteItems");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("worker");
    }
    (per_worker * workers) as f64 / started.elapsed().as_secs_f64()
}

/// The ledger's requests for the same events, issued directly by `workers`
/// loops: receive 10, read their rows (object, totals, grant) in one
/// `BatchGetItem`, write object and totals rows of every user in one
/// conditional `TransactWriteItems`, publish 10 `UsageChanged.v1` in one
/// `PutEvents`, delete the 10. Events per second.
async fn raw_request_set(workers: usize) -> f64 {
    let stack = Stack::deploy().expect("stack deploys");
    let sdk = stowage_shared::aws::load().await;
    let sqs = stowage_shared::aws::sqs(&sdk);
    let dynamodb = stowage_shared::aws::dynamodb(&sdk);
    let bus = EventBus::new(
        stowage_shared::aws::eventbridge(&sdk),
        stack.get("STOWAGE_EVENT_BUS"),
    );
    let table = stack.get("STOWAGE_LEDGER_TABLE").to_string();
    let queue = stack.get("STOWAGE_LEDGER_QUEUE_URL").to_string();
    fill(
        &sqs,
        &queue,
        (0..EVENTS)
            .map(|i| s3_event(stack.get("STOWAGE_BUCKET"), i))
            .collect(),
    )
    .await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (sqs, dynamodb, bus) = (sqs.clone(), dynamodb.clone(), bus.clone());
            let (table, queue) = (table.clone(), queue.clone());
            tokio::spawn(async move {
                let s = |v: String| AttributeValue::S(v);
                let (mut done, mut last) = (0, Instant::now());
                loop {
                    let messages = sqs
                        .receive_message()
                        .queue_url(&queue)
                        .max_number_of_messages(10)
                        .wait_time_seconds(1)
                        .send()
                        .await
                        .expect("ReceiveMessage")
                        .messages
                        .unwrap_or_default();
                    if messages.is_empty() {
                        return (done, last);
                    }
                    // (user, key) of each event, read from its body.
                    let events: Vec<(String, String)> = messages
                        .iter()
                        .map(|m| {
                            let body: serde_json::Value =
                                serde_json::from_str(m.body().expect("body")).expect("JSON");
                            let key = body["detail"]["object"]["key"]
                                .as_str()
                                .expect("key")
                                .to_string();
                            (key.split('/').nth(1).expect("user").to_string(), key)
                        })
                        .collect();
                    let mut keys = Vec::new();
                    let mut users: Vec<&str> = Vec::new();
                    for (user, key) in &events {
                        for sk in [format!("OBJ#{key}"), format!("GRANT#{key}")] {
                            keys.push(
                                [("pk", user), ("sk", &sk)]
                                    .map(|(n, v)| {
                                        (
                                            n.to_string(),
                                            s(if n == "pk" {
                                                format!("USER#{v}")
                                            } else {
                                                v.to_string()
                                            }),
                                        )
                                    })
                                    .into_iter()
                                    .collect(),
                            );
                        }
                        if !users.contains(&user.as_str()) {
                            users.push(user);
                            keys.push(
                                [
                                    ("pk".to_string(), s(format!("USER#{user}"))),
                                    ("sk".to_string(), s("USAGE".into())),
                                ]
                                .into_iter()
                                .collect(),
                            );
                        }
                    }
                    dynamodb
                        .batch_get_item()
                        .request_items(
                            &table,
                            KeysAndAttributes::builder()
                                .set_keys(Some(keys))
                                .consistent_read(true)
                                .build()
                                .expect("keys"),
                        )
                        .send()
                        .await
                        .expect("BatchGetItem");
                    let mut puts = Vec::new();
                    for (user, key) in &events {
                        puts.push(
                            Put::builder()
                                .table_name(&table)
                                .item("pk", s(format!("USER#{user}")))
                                .item("sk", s(format!("OBJ#{key}")))
                                .item("size", AttributeValue::N("1000".into()))
                                .item("ver", AttributeValue::N("1".into()))
                                .condition_expression("attribute_not_exists(pk)")
                                .build()
                                .expect("put"),
                        );
                    }
                    for user in &users {
                        puts.push(
                            Put::builder()
                                .table_name(&table)
                                .item("pk", s(format!("USER#{user}")))
                                .item("sk", s("USAGE".into()))
                                .item("revision", AttributeValue::N("1".into()))
                                .condition_expression(
                                    "attribute_not_exists(pk) OR attribute_exists(revision)",
                                )
                                .build()
                                .expect("put"),
                        );
                    }
                    dynamodb
                        .transact_write_items()
                        .set_transact_items(Some(
                            puts.into_iter()
                                .map(|p| TransactWriteItem::builder().put(p).build())
                                .collect(),
                        ))
                        .send()
                        .await
                        .expect("TransactWriteItems");
                    let announcements: Vec<_> = events
                        .iter()
                        .map(|(user, key)| {
                            usage_changed(user, key, None, &Usage::default(), None, None, None)
                        })
                        .collect();
                    for published in bus.publish_all(&announcements).await {
                        published.expect("PutEvents");
                    }
                    sqs.delete_message_batch()
                        .queue_url(&queue)
                        .set_entries(Some(
                            messages
                                .iter()
                                .enumerate()
                                .map(|(i, m)| {
                                    DeleteMessageBatchRequestEntry::builder()
                                        .id(i.to_string())
                                        .receipt_handle(m.receipt_handle().expect("handle"))
                                        .build()
                                        .expect("entry")
                                })
                                .collect(),
                        ))
                        .send()
                        .await
                        .expect("DeleteMessageBatch");
                    done += messages.len();
                    last = Instant::now();
                }
            })
        })
        .collect();
    let (mut done, mut finished) = (0, started);
    for task in tasks {
        let (count, last) = task.await.expect("worker");
        done += count;
        finished = finished.max(last);
    }
    assert_eq!(done, EVENTS, "every event handled once");
    done as f64 / (finished - started).as_secs_f64()
}

/// Ledger throughput, requests, CPU and memory; `make bench` runs it.
#[derive(Debug, Parser)]
struct Cli {
    /// The release `stowage-ledger` binary.
    ledger: PathBuf,
    /// Answer the ledger's AWS requests with the in-process stub instead of
    /// the emulators.
    #[arg(long)]
    stub: bool,
    /// With `--stub`: milliseconds the stub waits before each answer.
    #[arg(long, default_value_t = 0)]
    stub_delay_ms: u64,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let binary = cli.ledger;
    if cli.stub {
        return on_stub(&binary, Duration::from_millis(cli.stub_delay_ms)).await;
    }
    let logs = PathBuf::from(
        std::env::var("STOWAGE_EMULATOR_LOGS").expect("run with `make bench`, or pass --stub"),
    );
    println!(
        "| workers | events/s | raw transactions/s | ledger / raw | raw request set, events/s | ledger / raw set | AWS requests per event | ledger CPU µs per event | ledger peak RSS |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for workers in [1, 4] {
        let raw = raw_transactions(workers).await;
        let raw_set = raw_request_set(workers).await;
        let run = run_ledger(&binary, &logs, workers, false).await;
        println!(
            "| {} | {:.0} | {:.0} | {:.0}% | {:.0} | {:.0}% | {:.2} | {:.0} | {:.1} MB |",
            run.workers,
            run.per_second,
            raw,
            100.0 * run.per_second / raw,
            raw_set,
            100.0 * run.per_second / raw_set,
            run.requests_per_event,
            run.cpu_us_per_event,
            run.peak_rss_mb
        );
    }
    println!();
    println!(
        "| workers | uploads with their grants: messages/s | AWS requests per message | ledger CPU µs per message | ledger peak RSS |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for workers in [1, 4] {
        let run = run_ledger(&binary, &logs, workers, true).await;
        println!(
            "| {} | {:.0} | {:.2} | {:.0} | {:.1} MB |",
            run.workers,
            run.per_second,
            run.requests_per_event,
            run.cpu_us_per_event,
            run.peak_rss_mb
        );
    }
}

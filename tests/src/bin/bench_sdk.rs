//! CPU cost of one AWS request through the clients of [`stowage_shared::aws`]:
//! issues DynamoDB `GetItem` and `TransactWriteItems`, SQS `SendMessage` and
//! EventBridge `PutEvents` one after another against the endpoints in the
//! environment, and prints this process's CPU time (user + system, every
//! thread) and wall time per request, as a Markdown table.
//!
//! It creates its own table, queue and bus, named `bench-sdk-<pid>`, so it
//! needs only running emulators:
//!
//! ```sh
//! cargo build --release -p stowage-e2e --bin bench_sdk
//! .stowage/venv/localstack/bin/python infra/local/stack.py run --state .stowage/perf -- \
//!     target/release/bench_sdk [REQUESTS] [OPERATION...]
//! ```
//!
//! `REQUESTS` (default 2000) is the number of requests per operation;
//! operations are `get-item`, `transact-write`, `send-message`, `put-events`
//! (default: all). Logging is set up as in the services (`RUST_LOG`, default
//! `info`).
//!
//! `bench_sdk --stub [--delay-us=MICROS] [--close] [REQUESTS] [OPERATION...]`
//! needs no emulator: it answers every request itself with
//! [`stowage_e2e::aws_stub`], on a keep-alive connection, and measures a
//! child process that sends the requests to it.
//! The child's figures are then the cost of the SDK, hyper and the kernel's
//! loopback alone, without the emulators' work on the same cores between
//! every request and its answer. `--delay-us` makes the stub wait before
//! each answer, as a remote server would, so that the measured process goes
//! idle between request and answer as it does in production; `--close`
//! makes it close the connection after each answer, as the emulators do
//! unless asked to keep it.
//!
//! Flags for the measured process: `--concurrency=N` issues the requests
//! from N tasks at once (default 1); `--current-thread` runs them on
//! tokio's single-threaded runtime instead of the multi-threaded one the
//! services use.

use std::{
    fs,
    process::Stdio,
    time::{Duration, Instant},
};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put,
    ScalarAttributeType, TransactWriteItem,
};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use stowage_e2e::aws_stub::{AwsStub, StubOptions};

const OPERATIONS: [&str; 4] = ["get-item", "transact-write", "send-message", "put-events"];
const WARM_UP: usize = 50;

/// CPU time of this process, user + system, every thread. Two readings:
/// the sum of the live threads' `sum_exec_runtime` from `schedstat`
/// (nanoseconds, but blind to threads that exited), and `utime + stime` of
/// the process from `stat` (every thread, dead ones included, in 10 ms
/// ticks).
#[derive(Debug, Clone, Copy)]
struct Cpu {
    threads_ns: u64,
    process_ns: u64,
}

fn cpu() -> Cpu {
    let threads_ns = fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|task| {
                let path = task.ok()?.path().join("schedstat");
                fs::read_to_string(path)
                    .ok()?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
        })
        .unwrap_or(0);
    Cpu {
        threads_ns,
        process_ns: stowage_e2e::process_usage(std::process::id()).cpu_ns,
    }
}

#[derive(Clone)]
struct Clients {
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    eventbridge: aws_sdk_eventbridge::Client,
    name: String,
    queue_url: String,
}

impl Clients {
    async fn setup() -> anyhow::Result<Self> {
        let sdk = stowage_shared::aws::load().await;
        let clients = Self {
            dynamodb: stowage_shared::aws::dynamodb(&sdk),
            sqs: stowage_shared::aws::sqs(&sdk),
            eventbridge: stowage_shared::aws::eventbridge(&sdk),
            name: format!("bench-sdk-{}", std::process::id()),
            queue_url: String::new(),
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        clients
            .dynamodb
            .create_table()
            .table_name(&clients.name)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .attribute_definitions(attribute("pk")?)
            .attribute_definitions(attribute("sk")?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await?;
        let queue_url = clients
            .sqs
            .create_queue()
            .queue_name(&clients.name)
            .send()
            .await?
            .queue_url
            .unwrap_or_default();
        clients
            .eventbridge
            .create_event_bus()
            .name(&clients.name)
            .send()
            .await?;
        Ok(Self {
            queue_url,
            ..clients
        })
    }

    async fn teardown(&self) -> anyhow::Result<()> {
        self.dynamodb
            .delete_table()
            .table_name(&self.name)
            .send()
            .await?;
        self.sqs
            .delete_queue()
            .queue_url(&self.queue_url)
            .send()
            .await?;
        self.eventbridge
            .delete_event_bus()
            .name(&self.name)
            .send()
            .await?;
        Ok(())
    }

    /// Issues request `i` of `operation` by `task`, which has a user of
    /// its own.
    async fn request(&self, operation: &str, task: usize, i: usize) -> anyhow::Result<()> {
        let user = format!("bench{task}");
        let s = |v: String| AttributeValue::S(v);
        let n = |v: usize| AttributeValue::N(v.to_string());
        match operation {
            "get-item" => {
                self.dynamodb
                    .get_item()
                    .table_name(&self.name)
                    .key("pk", s(format!("USER#{user}")))
                    .key("sk", s("USAGE".into()))
                    .consistent_read(true)
                    .send()
                    .await?;
            }
            "transact-write" => {
                // The ledger's transaction: a new object row and the usage
                // row at the next revision, both conditional.
                let object = Put::builder()
                    .table_name(&self.name)
                    .item("pk", s(format!("USER#{user}")))
                    .item("sk", s(format!("OBJ#users/{user}/file-{i}.bin")))
                    .item("size", n(1000 + i))
                    .item("ver", n(1))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()?;
                let usage = Put::builder()
                    .table_name(&self.name)
                    .item("pk", s(format!("USER#{user}")))
                    .item("sk", s("USAGE".into()))
                    .item("revision", n(i + 1))
                    .condition_expression("attribute_not_exists(pk) OR revision = :r")
                    .expression_attribute_values(":r", n(i))
                    .build()?;
                self.dynamodb
                    .transact_write_items()
                    .transact_items(TransactWriteItem::builder().put(object).build())
                    .transact_items(TransactWriteItem::builder().put(usage).build())
                    .send()
                    .await?;
            }
            "send-message" => {
                self.sqs
                    .send_message()
                    .queue_url(&self.queue_url)
                    .message_body(format!(r#"{{"bench":{i}}}"#))
                    .send()
                    .await?;
            }
            "put-events" => {
                let entry = PutEventsRequestEntry::builder()
                    .event_bus_name(&self.name)
                    .source("stowage.bench")
                    .detail_type("Bench.v1")
                    .detail(format!(r#"{{"user":"{user}","bytes":{i}}}"#))
                    .build();
                let output = self.eventbridge.put_events().entries(entry).send().await?;
                anyhow::ensure!(output.failed_entry_count() == 0, "PutEvents refused");
            }
            other => anyhow::bail!("unknown operation {other}"),
        }
        Ok(())
    }
}

/// Requests that are not measured: the first connection, lazily
/// initialised state.
async fn warm_up(clients: &Clients, operation: &str, task: usize) -> anyhow::Result<()> {
    for i in 0..WARM_UP {
        clients.request(operation, task, i).await?;
    }
    Ok(())
}

/// `count` requests of `operation` by `task`, one after another; the
/// transaction's revisions continue from the warm-up's.
async fn issue(
    clients: &Clients,
    operation: &str,
    task: usize,
    count: usize,
) -> anyhow::Result<()> {
    for i in WARM_UP..WARM_UP + count {
        clients.request(operation, task, i).await?;
    }
    Ok(())
}

/// Serves the stub and runs this program against it in a child process,
/// whose output is the result.
async fn run_stub(stub: StubOptions, args: Vec<String>) -> anyhow::Result<()> {
    let stub = AwsStub::start(stub).await?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?);
    stub.point(&mut child);
    let status = child
        .args(args)
        .stdout(Stdio::inherit())
        .kill_on_drop(true)
        .status()
        .await?;
    anyhow::ensure!(status.success(), "the measured process failed");
    Ok(())
}

/// The command line: flags first, then `REQUESTS` and operations.
#[derive(Debug, Default)]
struct Options {
    stub: Option<StubOptions>,
    current_thread: bool,
    concurrency: usize,
    requests: usize,
    operations: Vec<String>,
    /// Everything but the stub's flags, for the measured child.
    child_args: Vec<String>,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        concurrency: 1,
        requests: 2000,
        ..Options::default()
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut args = args.into_iter().peekable();
    while let Some(flag) = args.next_if(|a| a.starts_with("--")) {
        if flag == "--stub" {
            options.stub.get_or_insert_default();
            continue;
        }
        if let Some(micros) = flag.strip_prefix("--delay-us=") {
            options.stub.get_or_insert_default().delay = Duration::from_micros(micros.parse()?);
            continue;
        }
        if flag == "--close" {
            options.stub.get_or_insert_default().close = true;
            continue;
        }
        if flag == "--current-thread" {
            options.current_thread = true;
        } else if let Some(n) = flag.strip_prefix("--concurrency=") {
            options.concurrency = n.parse()?;
            anyhow::ensure!(options.concurrency > 0, "--concurrency must be at least 1");
        } else {
            anyhow::bail!("unknown flag {flag}");
        }
        options.child_args.push(flag);
    }
    options.child_args.extend(args.clone());
    if let Some(requests) = args.next() {
        options.requests = requests.parse()?;
    }
    options.operations = args.collect();
    if options.operations.is_empty() {
        options.operations = OPERATIONS.iter().map(ToString::to_string).collect();
    }
    Ok(options)
}

async fn run(options: Options) -> anyhow::Result<()> {
    if let Some(stub) = options.stub {
        return run_stub(stub, options.child_args).await;
    }
    let clients = Clients::setup().await?;
    println!(
        "| operation | requests | concurrency | wall µs/request | CPU µs/request (threads) | CPU µs/request (process) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let per_task = options.requests / options.concurrency;
    let requests = per_task * options.concurrency;
    for operation in &options.operations {
        for task in 0..options.concurrency {
            warm_up(&clients, operation, task).await?;
        }
        // In tasks of the runtime, as the services issue their requests.
        let (before, started) = (cpu(), Instant::now());
        let tasks: Vec<_> = (0..options.concurrency)
            .map(|task| {
                let (clients, operation) = (clients.clone(), operation.clone());
                tokio::spawn(async move { issue(&clients, &operation, task, per_task).await })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        let (after, wall) = (cpu(), started.elapsed());
        let per = |ns: u64| ns as f64 / 1_000.0 / requests as f64;
        println!(
            "| {operation} | {requests} | {} | {:.0} | {:.1} | {:.1} |",
            options.concurrency,
            wall.as_secs_f64() * 1e6 / requests as f64,
            per(after.threads_ns.saturating_sub(before.threads_ns)),
            per(after.process_ns.saturating_sub(before.process_ns)),
        );
    }
    clients.teardown().await
}

fn main() -> anyhow::Result<()> {
    let telemetry = stowage_shared::telemetry::init("bench_sdk");
    let options = options()?;
    let runtime = if options.current_thread && options.stub.is_none() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Runtime::new()?
    };
    let result = runtime.block_on(run(options));
    telemetry.shutdown();
    result
}

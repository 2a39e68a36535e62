//! A stand-in for the JSON APIs of DynamoDB, SQS and EventBridge that
//! answers every request with an empty success, at once or after
//! [`StubOptions::delay`], for benchmarks that measure what a process spends
//! on its own side of a request, without the emulators' work on the same
//! cores.
//!
//! Answers: `PutEvents` accepts every entry it was sent; `ReceiveMessage`
//! returns up to the asked number of the messages given to
//! [`AwsStub::enqueue`] (one queue, whatever the URL), or holds the long
//! poll for the asked `WaitTimeSeconds` and returns none; `DeleteMessage`
//! and `DeleteMessageBatch` remove received messages (a received message is
//! never delivered again: there is no visibility timeout);
//! `GetQueueAttributes` returns no attribute, `CreateQueue` and
//! `GetQueueUrl` a queue URL; every other operation `{}`, which the SDK
//! reads as an empty success (no item found, a transaction written).
//!
//! Requests are counted when they arrive; [`AwsStub::hold`] keeps every
//! answer back until [`AwsStub::release`], so a test can act while requests
//! are known to be out.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};

/// How the stub answers.
#[derive(Debug, Default, Clone, Copy)]
pub struct StubOptions {
    /// Waits this long before each answer, as a remote server would.
    pub delay: Duration,
    /// Answers `Connection: close` and closes after each answer.
    pub close: bool,
}

/// A running stub on a loopback port; stops when dropped.
#[derive(Debug)]
pub struct AwsStub {
    /// `http://127.0.0.1:<port>`, for `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    requests: Arc<Mutex<BTreeMap<String, usize>>>,
    held: watch::Sender<bool>,
    queue: Arc<Mutex<Queue>>,
    server: JoinHandle<()>,
}

/// The one queue's messages: waiting to be received (id and body), and the
/// receipt handles of those received but not deleted.
#[derive(Debug, Default)]
struct Queue {
    ready: VecDeque<(String, String)>,
    received: HashSet<String>,
    sent: u64,
}

#[derive(Clone)]
struct Stub {
    options: StubOptions,
    requests: Arc<Mutex<BTreeMap<String, usize>>>,
    held: watch::Sender<bool>,
    queue: Arc<Mutex<Queue>>,
}

impl AwsStub {
    /// Starts serving on a free loopback port.
    pub async fn start(options: StubOptions) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(Mutex::new(BTreeMap::new()));
        let held = watch::Sender::new(false);
        let queue = Arc::new(Mutex::new(Queue::default()));
        let app = Router::new().fallback(answer).with_state(Stub {
            options,
            requests: Arc::clone(&requests),
            held: held.clone(),
            queue: Arc::clone(&queue),
        });
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("AWS stub stopped: {error}");
            }
        });
        Ok(Self {
            endpoint,
            requests,
            held,
            queue,
            server,
        })
    }

    /// Sends every AWS request of the child process `command` starts here,
    /// with test credentials.
    pub fn point(&self, command: &mut tokio::process::Command) {
        for service in ["DYNAMODB", "SQS", "EVENTBRIDGE", "S3"] {
            command.env_remove(format!("AWS_ENDPOINT_URL_{service}"));
        }
        command
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "stub")
            .env("AWS_SECRET_ACCESS_KEY", "stub")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE");
    }

    /// Puts messages with these bodies on the queue, in order.
    pub fn enqueue(&self, bodies: impl IntoIterator<Item = String>) {
        let mut queue = self.queue.lock().expect("stub queue");
        for body in bodies {
            queue.sent += 1;
            let id = format!("stub-message-{}", queue.sent);
            queue.ready.push_back((id, body));
        }
    }

    /// Messages on the queue: waiting to be received, and received but not
    /// yet deleted.
    pub fn queued(&self) -> (usize, usize) {
        let queue = self.queue.lock().expect("stub queue");
        (queue.ready.len(), queue.received.len())
    }

    /// Keeps every answer back, those of requests already waiting included,
    /// until [`AwsStub::release`].
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Sends the answers held back, and answers at once again.
    pub fn release(&self) {
        self.held.send_replace(false);
    }

    /// SDK configuration sending every request to this stub, for the
    /// clients of [`stowage_shared::aws`].
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::for_tests(),
                ),
            )
            .build()
    }

    /// Requests received so far, by operation (`x-amz-target`).
    pub fn requests(&self) -> BTreeMap<String, usize> {
        self.requests.lock().expect("stub counts").clone()
    }

    /// Requests received since `before` (an earlier [`AwsStub::requests`]),
    /// by operation; operations with none left out.
    pub fn requests_since(&self, before: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
        self.requests()
            .into_iter()
            .map(|(operation, count)| {
                let count = count - before.get(&operation).copied().unwrap_or(0);
                (operation, count)
            })
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    /// Requests received so far, all operations.
    pub fn total_requests(&self) -> usize {
        self.requests.lock().expect("stub counts").values().sum()
    }
}

impl Drop for AwsStub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(State(stub): State<Stub>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .unwrap_or("")
        .to_string();
    let operation = target.rsplit('.').next().unwrap_or("").to_string();
    *stub
        .requests
        .lock()
        .expect("stub counts")
        .entry(target)
        .or_default() += 1;
    // Held answers wait here; a dropped stub answers nothing anyway.
    let _ = stub.held.subscribe().wait_for(|held| !held).await;
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answer = match operation.as_str() {
        "PutEvents" => {
            let sent = request["Entries"].as_array().map_or(0, Vec::len);
            let entries: Vec<Value> = (0..sent)
                .map(|i| json!({ "EventId": format!("stub-{i}") }))
                .collect();
            json!({ "FailedEntryCount": 0, "Entries": entries })
        }
        "ReceiveMessage" => {
            let messages = receive(&stub.queue, &request);
            if messages.is_empty() {
                let wait = request["WaitTimeSeconds"].as_u64().unwrap_or(0).min(20);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                json!({})
            } else {
                json!({ "Messages": messages })
            }
        }
        "DeleteMessage" => {
            let handle = request["ReceiptHandle"].as_str().unwrap_or("");
            stub.queue
                .lock()
                .expect("stub queue")
                .received
                .remove(handle);
            json!({})
        }
        "DeleteMessageBatch" => {
            let mut queue = stub.queue.lock().expect("stub queue");
            let deleted: Vec<Value> = request["Entries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|entry| {
                    let handle = entry["ReceiptHandle"].as_str().unwrap_or("");
                    queue.received.remove(handle);
                    json!({ "Id": entry["Id"] })
                })
                .collect();
            json!({ "Successful": deleted, "Failed": [] })
        }
        "GetQueueAttributes" => json!({ "Attributes": {} }),
        "CreateQueue" | "GetQueueUrl" => {
            json!({ "QueueUrl": "http://127.0.0.1/000000000000/stub" })
        }
        _ => json!({}),
    };
    if !stub.options.delay.is_zero() {
        tokio::time::sleep(stub.options.delay).await;
    }
    let mut response = (
        [(header::CONTENT_TYPE, "application/x-amz-json-1.0")],
        answer.to_string(),
    )
        .into_response();
    if stub.options.close {
        response
            .headers_mut()
            .insert(header::CONNECTION, "close".parse().expect("a header value"));
    }
    response
}

/// Takes up to the asked number of waiting messages off the queue, as
/// `ReceiveMessage` answers them.
fn receive(queue: &Mutex<Queue>, request: &Value) -> Vec<Value> {
    let wanted = request["MaxNumberOfMessages"]
        .as_u64()
        .unwrap_or(1)
        .clamp(1, 10) as usize;
    let sent_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut queue = queue.lock().expect("stub queue");
    let Queue {
        ready, received, ..
    } = &mut *queue;
    let count = wanted.min(ready.len());
    ready
        .drain(..count)
        .map(|(id, body)| {
            let handle = format!("{id}-handle");
            let message = json!({
                "MessageId": id,
                "ReceiptHandle": handle,
                "Body": body,
                "Attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": sent_at.to_string(),
                },
            });
            received.insert(handle);
            message
        })
        .collect()
}

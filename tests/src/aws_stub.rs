//! A stand-in for the JSON APIs of DynamoDB, SQS and EventBridge that
//! answers every request at once with an empty success, for benchmarks that
//! measure what a process spends on its own side of a request, without the
//! emulators' work on the same cores.
//!
//! Answers: `PutEvents` accepts every entry it was sent, `ReceiveMessage`
//! holds the long poll for the asked `WaitTimeSeconds` and returns no
//! message, `GetQueueAttributes` returns no attribute, `CreateQueue` and
//! `GetQueueUrl` a queue URL; every other operation `{}`, which the SDK reads
//! as an empty success (an item not found, a transaction written).
//!
//! Requests are counted when they arrive; [`AwsStub::hold`] keeps every
//! answer back until [`AwsStub::release`], so a test can act while requests
//! are known to be out.

use std::{
    collections::BTreeMap,
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
    server: JoinHandle<()>,
}

#[derive(Clone)]
struct Stub {
    options: StubOptions,
    requests: Arc<Mutex<BTreeMap<String, usize>>>,
    held: watch::Sender<bool>,
}

impl AwsStub {
    /// Starts serving on a free loopback port.
    pub async fn start(options: StubOptions) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(Mutex::new(BTreeMap::new()));
        let held = watch::Sender::new(false);
        let app = Router::new().fallback(answer).with_state(Stub {
            options,
            requests: Arc::clone(&requests),
            held: held.clone(),
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
            server,
        })
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
            let wait = request["WaitTimeSeconds"].as_u64().unwrap_or(0).min(20);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            json!({})
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

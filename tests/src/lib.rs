//! The end-to-end harness: deploys an isolated copy of the stack (its own
//! bucket, bus, queues and tables under a random name) to the running
//! emulators, runs intake, ledger and lifecycle in this process against it,
//! and drives them only through their public surfaces: HTTP, S3, the queues.
//!
//! The emulators are started by `make test` (`infra/local/stack.py run`),
//! which exports their endpoints and the path of the deploy script.

pub mod aws_stub;
pub mod openapi;

use std::{
    collections::HashMap,
    future::Future,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context;
use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// HS256 secret the test system's intake accepts.
pub const JWT_SECRET: &str = "end-to-end-test-secret-0123456789";
/// `iss` of the test system's tokens.
pub const ISSUER: &str = "stowage-e2e";
/// `aud` of the test system's tokens.
pub const AUDIENCE: &str = "stowage";
/// Seconds a message the ledger or lifecycle received stays hidden. The
/// services' defaults (60 s, 300 s) outlast the tests' waits, so a message
/// a handler left for redelivery would come back only after the test gave
/// up; this is still longer than handling a batch takes. (intake's consumer
/// has no such setting.)
pub const VISIBILITY_SECONDS: &str = "5";

/// One deployed copy of the stack's resources.
#[derive(Debug, Clone)]
pub struct Stack {
    pub name: String,
    /// The settings `stack.py deploy` printed: endpoints and resource names.
    pub settings: HashMap<String, String>,
}

impl Stack {
    /// Deploys a fresh stack with a random name.
    pub fn deploy() -> anyhow::Result<Self> {
        let python = std::env::var("STOWAGE_STACK_PYTHON")
            .context("the end-to-end tests need the emulators: run them with `make test`")?;
        let script = std::env::var("STOWAGE_STACK_SCRIPT")
            .context("the end-to-end tests need the emulators: run them with `make test`")?;
        let name = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let output = Command::new(python)
            .args([&script, "deploy", "--name", &name, "--json"])
            .output()
            .context("cannot run the deploy script")?;
        anyhow::ensure!(
            output.status.success(),
            "deploying stack {name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let settings =
            serde_json::from_slice(&output.stdout).context("deploy printed no settings")?;
        Ok(Self { name, settings })
    }

    /// One setting, e.g. `STOWAGE_BUCKET`.
    pub fn get(&self, key: &str) -> &str {
        self.settings
            .get(key)
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// intake's command line against this stack (program name first):
    /// listening on a free loopback port, accepting [`token_with`]'s tokens,
    /// with `flags` added (e.g. a small quota).
    pub fn intake_args(&self, flags: &[(&str, &str)]) -> Vec<String> {
        let mut args = self.args(
            "stowage-intake",
            &[
                ("bucket", "STOWAGE_BUCKET"),
                ("s3-public-url", "STOWAGE_S3_PUBLIC_URL"),
                ("s3-path-style", "STOWAGE_S3_PATH_STYLE"),
                ("table", "STOWAGE_INTAKE_TABLE"),
                ("event-bus", "STOWAGE_EVENT_BUS"),
                ("queue-url", "STOWAGE_INTAKE_QUEUE_URL"),
            ],
        );
        args.extend(
            [
                ("listen", "127.0.0.1:0"),
                ("jwt-secret", JWT_SECRET),
                ("jwt-issuer", ISSUER),
                ("jwt-audience", AUDIENCE),
                ("consumer-wait-seconds", "1"),
                ("consumer-dlq-poll-seconds", "1"),
            ]
            .iter()
            .chain(flags)
            .flat_map(|(flag, value)| [format!("--{flag}"), value.to_string()]),
        );
        args
    }

    /// The ledger's command line against this stack (program name first).
    /// A message left for redelivery comes back after [`VISIBILITY_SECONDS`].
    pub fn ledger_args(&self) -> Vec<String> {
        let mut args = self.args(
            "stowage-ledger",
            &[
                ("bucket", "STOWAGE_BUCKET"),
                ("s3-path-style", "STOWAGE_S3_PATH_STYLE"),
                ("table", "STOWAGE_LEDGER_TABLE"),
                ("queue-url", "STOWAGE_LEDGER_QUEUE_URL"),
                ("event-bus", "STOWAGE_EVENT_BUS"),
            ],
        );
        args.extend(
            [
                "--wait-seconds",
                "1",
                "--dlq-poll-seconds",
                "1",
                "--visibility-seconds",
                VISIBILITY_SECONDS,
            ]
            .into_iter()
            .map(str::to_string),
        );
        args
    }

    /// Lifecycle's command line against this stack (program name first).
    /// Tests sweep when they choose to, through `System::sweeper`. A message
    /// left for redelivery comes back after [`VISIBILITY_SECONDS`].
    pub fn lifecycle_args(&self) -> Vec<String> {
        let mut args = self.args(
            "stowage-lifecycle",
            &[
                ("bucket", "STOWAGE_BUCKET"),
                ("s3-path-style", "STOWAGE_S3_PATH_STYLE"),
                ("table", "STOWAGE_LIFECYCLE_TABLE"),
                ("queue-url", "STOWAGE_LIFECYCLE_QUEUE_URL"),
                ("event-bus", "STOWAGE_EVENT_BUS"),
            ],
        );
        args.extend(
            [
                "--wait-seconds",
                "1",
                "--sweep-interval-seconds",
                "0",
                "--visibility-seconds",
                VISIBILITY_SECONDS,
            ]
            .map(str::to_string),
        );
        args
    }

    /// Command-line arguments for a service's settings parser.
    fn args(&self, binary: &str, pairs: &[(&str, &str)]) -> Vec<String> {
        std::iter::once(binary.to_string())
            .chain(
                pairs
                    .iter()
                    .flat_map(|(flag, key)| [format!("--{flag}"), self.get(key).to_string()]),
            )
            .collect()
    }
}

/// An intake response that matched the OpenAPI document.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body; `null` when there was none.
    pub body: Value,
}

/// Which consumers a [`System`] runs besides intake.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub ledger: bool,
    pub lifecycle: bool,
}

impl Parts {
    /// Intake and the ledger; lifecycle's queue is left for the test to read.
    pub const WITHOUT_LIFECYCLE: Self = Self {
        ledger: true,
        lifecycle: false,
    };
    /// Intake alone; every consumer queue is left for the test to read.
    pub const INTAKE_ONLY: Self = Self {
        ledger: false,
        lifecycle: false,
    };
}

impl Default for Parts {
    fn default() -> Self {
        Self {
            ledger: true,
            lifecycle: true,
        }
    }
}

/// Intake, ledger and lifecycle running against one stack.
#[derive(Debug)]
pub struct System {
    pub stack: Stack,
    pub intake_url: String,
    pub http: reqwest::Client,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl System {
    /// Deploys a stack and starts every service on it.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// Like [`System::start`], with extra intake flags (e.g. a small quota).
    pub async fn start_with(intake_flags: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_parts(intake_flags, Parts::default()).await
    }

    /// Deploys a stack and starts intake and the chosen consumers.
    pub async fn start_parts(intake_flags: &[(&str, &str)], parts: Parts) -> anyhow::Result<Self> {
        init_logs();
        let stack = Stack::deploy()?;
        let shutdown = CancellationToken::new();

        let intake = stowage_intake::App::build(stowage_intake::Settings::try_parse_from(
            stack.intake_args(intake_flags),
        )?)
        .await?;
        let intake_url = format!("http://{}", intake.local_addr());

        let ledger = ledger(&stack).await?;

        let lifecycle = stowage_lifecycle::App::build(stowage_lifecycle::Settings::try_parse_from(
            stack.lifecycle_args(),
        )?)
        .await?;

        let mut tasks = vec![tokio::spawn({
            let stop = shutdown.clone();
            async move {
                if let Err(error) = intake.run_until_stopped(stop).await {
                    eprintln!("intake failed: {error:#}");
                }
            }
        })];
        if parts.ledger {
            tasks.push(tokio::spawn(ledger.run_until_stopped(shutdown.clone())));
        }
        if parts.lifecycle {
            tasks.push(tokio::spawn(lifecycle.run_until_stopped(shutdown.clone())));
        }

        let sdk = stowage_shared::aws::load().await;
        Ok(Self {
            stack,
            intake_url,
            http: reqwest::Client::new(),
            s3: stowage_shared::aws::s3(&sdk, true),
            sqs: stowage_shared::aws::sqs(&sdk),
            shutdown,
            tasks,
        })
    }

    /// Starts a ledger on this stack, e.g. in a system started without one.
    pub async fn start_ledger(&mut self) -> anyhow::Result<()> {
        let ledger = ledger(&self.stack).await?;
        self.tasks.push(tokio::spawn(
            ledger.run_until_stopped(self.shutdown.clone()),
        ));
        Ok(())
    }

    /// Stops every service and waits for them.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// A valid bearer token for `user`.
    pub fn token(&self, user: &str) -> String {
        token_with(json!({ "sub": user }))
    }

    /// Calls intake and checks the response against its OpenAPI document.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.intake_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("intake answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("intake sends a body");
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        openapi::check(method.as_str(), path, status, content_type, &bytes);
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// Sends `method raw_path` exactly as written (no client-side URL
    /// normalisation, unlike a URL library) and checks the response against
    /// the OpenAPI document.
    pub async fn raw(&self, method: &str, raw_path: &str, token: &str) -> Reply {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.intake_url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("intake accepts connections");
        let request = format!(
            "{method} {raw_path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("request sent");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("response read");
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("response has a head");
        let head = String::from_utf8_lossy(&response[..split]).to_string();
        let body = &response[split + 4..];
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let mut headers = reqwest::header::HeaderMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':')
                && let (Ok(name), Ok(value)) = (
                    reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()),
                    reqwest::header::HeaderValue::from_str(value.trim()),
                )
            {
                headers.insert(name, value);
            }
        }
        assert!(
            !headers.contains_key(reqwest::header::TRANSFER_ENCODING),
            "{method} {raw_path}: chunked responses are not expected"
        );
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        openapi::check(method, raw_path, status, content_type, body);
        Reply {
            status,
            headers,
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
        }
    }

    /// `GET path` as the holder of `token`.
    pub async fn get(&self, token: &str, path: &str) -> Reply {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    /// A valid bearer token for `user` carrying the admin claim.
    pub fn admin_token(&self, user: &str) -> String {
        token_with(json!({ "sub": user, "cognito:groups": ["stowage-admins"] }))
    }

    /// `POST /v1/uploads`.
    pub async fn grant(&self, token: &str, body: &Value) -> Reply {
        self.call(
            reqwest::Method::POST,
            "/v1/uploads",
            Some(token),
            Some(body),
        )
        .await
    }

    /// `GET /v1/usage`.
    pub async fn usage(&self, token: &str) -> Value {
        let reply = self.get(token, "/v1/usage").await;
        assert_eq!(reply.status, 200, "GET /v1/usage: {}", reply.body);
        reply.body
    }

    /// Uploads `data` the way a browser does: the grant's fields and then the
    /// file, as multipart/form-data, straight to S3.
    pub async fn upload(&self, grant: &Value, data: Vec<u8>) -> reqwest::Response {
        upload(&self.http, grant, data).await
    }

    /// Lists every key in the stack's bucket.
    pub async fn bucket_keys(&self) -> Vec<String> {
        let listed = self
            .s3
            .list_objects_v2()
            .bucket(self.stack.get("STOWAGE_BUCKET"))
            .send()
            .await
            .expect("ListObjectsV2");
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }
}

impl System {
    /// Grants and uploads `data` to `path` for the holder of `token`.
    pub async fn put(&self, token: &str, path: &str, data: Vec<u8>) -> Value {
        let reply = self
            .grant(token, &json!({"path": path, "size": data.len(), "content_type": "application/octet-stream"}))
            .await;
        assert_eq!(reply.status, 201, "grant for {path}: {}", reply.body);
        let grant = reply.body;
        let uploaded = self.upload(&grant, data).await;
        assert!(
            uploaded.status().is_success(),
            "upload of {path}: {}",
            uploaded.status()
        );
        grant
    }

    /// Waits until the caller's usage reports `bytes` used.
    pub async fn used_bytes_reach(&self, token: &str, bytes: u64) -> Value {
        eventually(
            Duration::from_secs(30),
            &format!("used_bytes = {bytes}"),
            || async {
                let usage = self.usage(token).await;
                (usage["used_bytes"] == bytes).then_some(usage)
            },
        )
        .await
    }

    /// Stores `data` at `key` straight in the bucket, bypassing intake, in
    /// `storage_class` (e.g. `GLACIER`).
    pub async fn put_object(&self, key: &str, data: Vec<u8>, storage_class: &str) {
        self.s3
            .put_object()
            .bucket(self.stack.get("STOWAGE_BUCKET"))
            .key(key)
            .content_type("text/plain")
            .storage_class(storage_class.into())
            .body(data.into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PutObject {key}: {e}"));
    }

    /// `key`'s metadata in the stack's bucket; it must exist.
    pub async fn head(&self, key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
        self.try_head(key)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
            .unwrap_or_else(|| panic!("HeadObject {key}: no such key"))
    }

    /// Whether `key` exists in the bucket.
    pub async fn exists(&self, key: &str) -> bool {
        matches!(self.try_head(key).await, Ok(Some(_)))
    }

    async fn try_head(
        &self,
        key: &str,
    ) -> anyhow::Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>> {
        stowage_shared::aws::head_object(&self.s3, self.stack.get("STOWAGE_BUCKET"), key).await
    }

    /// Deletes `key` from the stack's bucket, as a user's S3 client would.
    pub async fn delete(&self, key: &str) {
        self.s3
            .delete_object()
            .bucket(self.stack.get("STOWAGE_BUCKET"))
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DeleteObject {key}: {e}"));
    }

    /// Messages visible plus in flight on a queue.
    pub async fn queue_depth(&self, queue_url: &str) -> u64 {
        queue_depth(&self.sqs, queue_url)
            .await
            .expect("GetQueueAttributes")
    }

    /// Receives (and deletes) every message on a queue until it stays empty.
    pub async fn drain(&self, queue_url: &str) -> Vec<String> {
        drain(&self.sqs, queue_url).await
    }

    /// Sends raw message bodies to a queue.
    pub async fn send(&self, queue_url: &str, bodies: &[String]) {
        for body in bodies {
            self.sqs
                .send_message()
                .queue_url(queue_url)
                .message_body(body)
                .send()
                .await
                .expect("SendMessage");
        }
    }

    /// A lifecycle sweeper for this stack, with extra sweep flags (e.g. a
    /// small multipart threshold).
    pub async fn sweeper(&self, flags: &[(&str, &str)]) -> stowage_lifecycle::sweep::Sweeper {
        stowage_lifecycle::startup::sweeper(&self.sweep_settings(flags))
            .await
            .expect("sweeper builds")
    }

    /// A lifecycle service for this stack, not yet running: for tests that
    /// start and stop it themselves (with [`Parts::WITHOUT_LIFECYCLE`]).
    pub async fn lifecycle(&self) -> stowage_lifecycle::App {
        stowage_lifecycle::App::build(
            stowage_lifecycle::Settings::try_parse_from(self.stack.lifecycle_args())
                .expect("lifecycle settings"),
        )
        .await
        .expect("lifecycle builds")
    }

    /// Lifecycle's sweep settings for this stack, with extra flags.
    pub fn sweep_settings(
        &self,
        flags: &[(&str, &str)],
    ) -> stowage_lifecycle::settings::SweepSettings {
        let mut args = self.stack.args(
            "stowage-lifecycle",
            &[
                ("bucket", "STOWAGE_BUCKET"),
                ("s3-path-style", "STOWAGE_S3_PATH_STYLE"),
                ("table", "STOWAGE_LIFECYCLE_TABLE"),
                ("event-bus", "STOWAGE_EVENT_BUS"),
            ],
        );
        args.extend(
            flags
                .iter()
                .flat_map(|(flag, value)| [format!("--{flag}"), value.to_string()]),
        );
        stowage_lifecycle::settings::SweepSettings::try_parse_from(args)
            .expect("sweep settings parse")
    }

    /// A new queue that receives every event of `detail_type` from
    /// `source` on the stack's bus (through a rule of its own), for tests
    /// to read what a service published.
    pub async fn capture(&self, source: &str, detail_type: &str) -> String {
        let sdk = stowage_shared::aws::load().await;
        let events = stowage_shared::aws::eventbridge(&sdk);
        let name = format!(
            "{}-capture-{}",
            self.stack.name,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let queue_url = self
            .sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .expect("CreateQueue")
            .queue_url
            .expect("queue URL");
        let arn = queue_arn(&self.sqs, &queue_url).await;
        let pattern = json!({"source": [source], "detail-type": [detail_type]}).to_string();
        route(
            &events,
            self.stack.get("STOWAGE_EVENT_BUS"),
            &name,
            &pattern,
            &arn,
        )
        .await;
        queue_url
    }

    /// The ledger's reconciler for this stack.
    pub async fn reconciler(&self) -> stowage_ledger::reconcile::Reconciler {
        stowage_ledger::startup::reconciler(
            self.stack.get("STOWAGE_BUCKET"),
            true,
            self.stack.get("STOWAGE_LEDGER_TABLE"),
            self.stack.get("STOWAGE_EVENT_BUS"),
        )
        .await
    }
}

/// A ledger for `stack`, polling with a short wait.
async fn ledger(stack: &Stack) -> anyhow::Result<stowage_ledger::App> {
    stowage_ledger::App::build(stowage_ledger::Settings::try_parse_from(
        stack.ledger_args(),
    )?)
    .await
}

/// Receives (and deletes) every message on a queue until it stays empty.
pub async fn drain(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(2)
            .send()
            .await
            .expect("ReceiveMessage");
        if received.messages().is_empty() {
            return bodies;
        }
        for message in received.messages() {
            bodies.push(message.body().unwrap_or_default().to_string());
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("DeleteMessage");
        }
    }
}

/// Uploads `data` the way a browser does: the grant's fields and then the
/// file, as multipart/form-data, straight to S3.
pub async fn upload(http: &reqwest::Client, grant: &Value, data: Vec<u8>) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in grant["fields"].as_object().expect("fields") {
        form = form.text(
            name.clone(),
            value.as_str().expect("string field").to_string(),
        );
    }
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(data).file_name("upload.bin"),
    );
    http.post(grant["url"].as_str().expect("url"))
        .multipart(form)
        .send()
        .await
        .expect("S3 answers")
}

/// The path of a service's binary (package and binary share the name, e.g.
/// `stowage-ledger`), built first if it is stale, for tests that run a
/// service as a process of its own.
pub fn service_binary(name: &str) -> PathBuf {
    // cargo answers at once when the binary is current.
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", name, "--bin", name])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {name} failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug").join(name)
}

/// The ARN of the queue at `url`.
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .and_then(|mut a| a.remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .expect("queue ARN")
}

/// A rule `rule` on `bus` that sends the events matching `pattern` to the
/// queue `queue_arn`.
pub async fn route(
    events: &aws_sdk_eventbridge::Client,
    bus: &str,
    rule: &str,
    pattern: &str,
    queue_arn: &str,
) {
    events
        .put_rule()
        .name(rule)
        .event_bus_name(bus)
        .event_pattern(pattern)
        .send()
        .await
        .expect("PutRule");
    events
        .put_targets()
        .rule(rule)
        .event_bus_name(bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(queue_arn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("PutTargets");
}

/// Messages visible plus in flight on a queue.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> anyhow::Result<u64> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await?;
    let count = |name: A| -> anyhow::Result<u64> {
        Ok(attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .context("attribute missing")?
            .parse()?)
    };
    Ok(count(A::ApproximateNumberOfMessages)? + count(A::ApproximateNumberOfMessagesNotVisible)?)
}

/// Signs a token with the test secret; `claims` override the valid defaults.
pub fn token_with(claims: Value) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut all = json!({ "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600 });
    if let (Some(all), Some(extra)) = (all.as_object_mut(), claims.as_object()) {
        all.extend(extra.clone());
    }
    encode(
        &Header::new(Algorithm::HS256),
        &all,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("token encodes")
}

/// Polls `probe` until it returns `Some`, or fails after `limit`. Events
/// travel S3 → EventBridge → SQS → ledger → EventBridge → SQS → intake, so
/// effects arrive after a delay that has an upper bound but no exact value.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// CPU time and memory of a running process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessUsage {
    /// User + system CPU time of every thread so far, in nanoseconds
    /// (counted by the kernel in clock ticks of 10 ms).
    pub cpu_ns: u64,
    /// Resident memory now (`VmRSS`), in KiB.
    pub rss_kb: u64,
    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub peak_rss_kb: u64,
    /// Context switches so far, voluntary and not, of the threads alive
    /// now: how often the process was put to sleep or woken.
    pub switches: u64,
}

/// What a process used between two readings: CPU time and context switches
/// between them; memory as of the later one.
impl std::ops::Sub for ProcessUsage {
    type Output = ProcessUsage;

    fn sub(self, earlier: ProcessUsage) -> ProcessUsage {
        ProcessUsage {
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
            switches: self.switches.saturating_sub(earlier.switches),
            ..self
        }
    }
}

/// Reads [`ProcessUsage`] of process `pid`; zeros for what cannot be read.
pub fn process_usage(pid: u32) -> ProcessUsage {
    // Fields 14 and 15 of /proc/<pid>/stat, after the parenthesised name.
    let cpu_ns = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some(ticks * 10_000_000)
        })
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let switches = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    ProcessUsage {
        cpu_ns,
        rss_kb: kb("VmRSS:"),
        peak_rss_kb: kb("VmHWM:"),
        switches,
    }
}

/// Counts the requests of the SDK clients it is installed on, to show what
/// an operation costs: one per call, however many attempts the SDK's
/// retries make of it, so a throttled emulator does not change the count.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl RequestCounter {
    /// Requests made so far.
    pub fn get(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl aws_sdk_s3::config::Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_execution(
        &self,
        _context: &aws_sdk_s3::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// Turns the status of the answers to the requests `matches` picks into
/// `status` once the server has acted on them (at most `limit` of them,
/// when set), as a refusing server or an answer lost on the way back does.
/// Installs on any SDK client.
#[derive(Debug, Clone)]
pub struct StatusRewrite {
    matches: fn(&aws_sdk_s3::config::http::HttpRequest) -> bool,
    status: u16,
    limit: Option<usize>,
    pending: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rewritten: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl StatusRewrite {
    pub fn new(
        matches: fn(&aws_sdk_s3::config::http::HttpRequest) -> bool,
        status: u16,
        limit: Option<usize>,
    ) -> Self {
        Self {
            matches,
            status,
            limit,
            pending: Default::default(),
            rewritten: Default::default(),
        }
    }

    /// Answers rewritten so far.
    pub fn rewritten(&self) -> usize {
        self.rewritten.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl aws_sdk_s3::config::Intercept for StatusRewrite {
    fn name(&self) -> &'static str {
        "StatusRewrite"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let room = self.limit.is_none_or(|limit| self.rewritten() < limit);
        self.pending.store(
            room && (self.matches)(context.request()),
            std::sync::atomic::Ordering::SeqCst,
        );
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextMut<
            '_,
        >,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        if self
            .pending
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.rewritten
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            *context.response_mut().status_mut() = self.status.try_into()?;
        }
        Ok(())
    }
}

/// A lifecycle sweeper whose DynamoDB, S3 and EventBridge requests all
/// go through `counter`.
pub async fn counted_sweeper(
    settings: &stowage_lifecycle::settings::SweepSettings,
    counter: &RequestCounter,
) -> stowage_lifecycle::sweep::Sweeper {
    let sdk = stowage_shared::aws::load().await;
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build(),
    );
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(settings.s3_path_style)
            .interceptor(counter.clone())
            .build(),
    );
    let eventbridge = aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build(),
    );
    stowage_lifecycle::startup::sweeper_with_clients(settings, dynamodb, s3, eventbridge)
        .expect("sweeper builds")
}

/// A live Standard object's projection row, as lifecycle would write it.
pub fn standard_row(
    size: u64,
    etag: &str,
    created_at: i64,
) -> stowage_lifecycle::domain::projection::ObjectRecord {
    use stowage_lifecycle::domain::projection::{Encryption, ObjectRecord, Restore};
    ObjectRecord {
        live: true,
        size,
        storage_class: "STANDARD".into(),
        etag: Some(etag.to_string()),
        encryption: Encryption::S3Managed,
        created_at,
        last_access: None,
        restore: Restore::None,
        sequencer: stowage_events::sequencer::Sequencer::lowest(),
        applied: vec![],
        verdict: None,
    }
}

/// Puts `data` at `key` in `bucket` (Standard) and answers its entity tag
/// without quotes, for a projection row that matches the object.
pub async fn put_for_etag(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    data: Vec<u8>,
) -> String {
    let put = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(data.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutObject {key}: {e}"));
    put.e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_string()
}

/// Writes projection rows `(key, row, due_at)` straight to lifecycle's
/// `table`, 25 to a request, `concurrency` requests at a time.
pub async fn load_projection(
    table: &str,
    rows: &[(
        String,
        stowage_lifecycle::domain::projection::ObjectRecord,
        i64,
    )],
    concurrency: usize,
) {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    use futures::StreamExt;
    let sdk = stowage_shared::aws::load().await;
    let dynamodb = stowage_shared::aws::dynamodb(&sdk);
    let batches = rows.chunks(25).map(|chunk| {
        let writes: Vec<WriteRequest> = chunk
            .iter()
            .map(|(key, record, due)| {
                let user = key.split('/').nth(1).expect("users/<user>/...");
                let item = stowage_lifecycle::adapters::dynamodb::record_item(
                    user,
                    key,
                    record,
                    Some(*due),
                    1,
                );
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .expect("put"),
                    )
                    .build()
            })
            .collect();
        let dynamodb = dynamodb.clone();
        async move {
            let mut pending = Some(HashMap::from([(table.to_string(), writes)]));
            while let Some(items) = pending.filter(|p| p.values().any(|v| !v.is_empty())) {
                pending = dynamodb
                    .batch_write_item()
                    .set_request_items(Some(items))
                    .send()
                    .await
                    .expect("BatchWriteItem")
                    .unprocessed_items;
            }
        }
    });
    futures::stream::iter(batches)
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<()>>()
        .await;
}

/// AWS requests the emulators have served so far, counted in the request
/// logs `stack.py run` keeps in `logs` (`STOWAGE_EMULATOR_LOGS`): moto logs
/// every request it serves, LocalStack every AWS call.
pub fn emulator_requests(logs: &std::path::Path) -> usize {
    let lines = |name: &str, needle: &str| {
        std::fs::read_to_string(logs.join(name)).map_or(0, |text| {
            text.lines().filter(|l| l.contains(needle)).count()
        })
    };
    lines("moto.log", "\"POST / HTTP/1.1\"") + lines("localstack.log", "localstack.request.aws")
}

fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_test_writer()
            .try_init();
    }
}

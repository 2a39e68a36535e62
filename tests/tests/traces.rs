//! One upload is one trace: intake's request span, the ledger's span that
//! records the grant, the ledger's span that applies the S3 event (linked to
//! the span of the S3 event's message), and intake's projection of the
//! `UsageChanged` it publishes, all under the frontend's `traceparent`; the
//! same event delivered again is announced again in the same trace. A sweep
//! is a trace of its own that its events carry, and a restore is announced
//! in the trace it was asked in.
//!
//! The OpenTelemetry providers are process-wide, so intake and the ledger run
//! as processes of their own (the real binaries), each exporting over
//! OTLP/HTTP to a receiver this test serves on loopback.

use std::{
    collections::HashMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value::Value as AnyValue,
    trace::v1::span::SpanKind,
};
use prost::Message as _;
use serde_json::{Value, json};
use stowage_e2e::{Stack, eventually, queue_arn, route, service_binary, token_with, upload};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// One span as a service exported it.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    kind: SpanKind,
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent_span_id: String,
    /// (trace id, span id) of each linked span.
    links: Vec<(String, String)>,
}

/// An OTLP/HTTP receiver on loopback that keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Exported>>>);

impl Receiver {
    /// Serves the receiver; returns its base URL, for
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    async fn serve(&self) -> String {
        let app = Router::new()
            .route("/v1/traces", post(receive_traces))
            // Metrics are exported too; this test has no use for them.
            .route("/v1/metrics", post(|| async { StatusCode::OK }))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("receiver binds");
        let address = listener.local_addr().expect("receiver address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    fn spans(&self) -> Vec<Exported> {
        self.0.lock().expect("spans lock").clone()
    }
}

async fn receive_traces(
    State(receiver): State<Receiver>,
    body: Bytes,
) -> Result<([(&'static str, &'static str); 1], Vec<u8>), StatusCode> {
    let request = ExportTraceServiceRequest::decode(body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(name) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.push(Exported {
                service: service.clone(),
                kind: span.kind(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                links: span
                    .links
                    .iter()
                    .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                    .collect(),
            });
        }
    }
    receiver.0.lock().expect("spans lock").extend(received);
    Ok((
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts a service binary exporting to `endpoint`, with JSON logs on its
/// stdout passed on to the test's output; `on_line` sees each line.
fn start(
    binary: &str,
    args: &[String],
    endpoint: &str,
    on_line: impl Fn(&str) + Send + 'static,
) -> Child {
    let mut child = Command::new(service_binary(binary))
        .args(&args[1..])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("STOWAGE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{binary} starts: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            on_line(&line);
            println!("{line}");
        }
    });
    child
}

/// Adds a second rule that sends S3's `Object Created` events to the
/// ledger's queue, so that each reaches the ledger twice.
async fn deliver_uploads_twice(stack: &Stack) {
    let sdk = stowage_shared::aws::load().await;
    let arn = queue_arn(
        &stowage_shared::aws::sqs(&sdk),
        stack.get("STOWAGE_LEDGER_QUEUE_URL"),
    )
    .await;
    let pattern = json!({"source": ["aws.s3"], "detail-type": ["Object Created"]}).to_string();
    route(
        &stowage_shared::aws::eventbridge(&sdk),
        stack.get("STOWAGE_EVENT_BUS"),
        &format!("{}-uploads-again", stack.name),
        &pattern,
        &arn,
    )
    .await;
}

/// Starts intake and returns it with its URL, read from its log.
async fn start_intake(stack: &Stack, endpoint: &str) -> (Child, String) {
    let (sender, mut address) = tokio::sync::mpsc::unbounded_channel();
    let intake = start(
        "stowage-intake",
        &stack.intake_args(&[]),
        endpoint,
        move |line| {
            let line: Value = serde_json::from_str(line).unwrap_or_default();
            if line["message"] == "intake listening"
                && let Some(at) = line["address"].as_str()
            {
                let _ = sender.send(at.to_string());
            }
        },
    );
    let address = tokio::time::timeout(Duration::from_secs(60), address.recv())
        .await
        .expect("intake starts listening within a minute")
        .expect("intake logs its address");
    (intake, format!("http://{address}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_upload_is_one_trace_across_intake_and_ledger() {
    let receiver = Receiver::default();
    let endpoint = receiver.serve().await;
    let stack = Stack::deploy().expect("stack deploys");
    let (_intake, intake_url) = start_intake(&stack, &endpoint).await;
    let _ledger = start("stowage-ledger", &stack.ledger_args(), &endpoint, |_| {});

    // The frontend's span, which the whole upload continues.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let frontend_span = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    let http = reqwest::Client::new();
    let token = token_with(json!({ "sub": "tracy" }));
    let data = b"one trace".to_vec();
    let grant: Value = http
        .post(format!("{intake_url}/v1/uploads"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{frontend_span}-01"))
        .json(&json!({"path": "t.txt", "size": data.len(), "content_type": "text/plain"}))
        .send()
        .await
        .expect("intake answers")
        .error_for_status()
        .expect("grant issued")
        .json()
        .await
        .expect("grant is JSON");

    let in_trace = |spans: &[Exported]| -> Vec<Exported> {
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    };
    let one = |spans: &[Exported], what: &str, test: &dyn Fn(&Exported) -> bool| {
        let found: Vec<&Exported> = spans.iter().filter(|s| test(s)).collect();
        assert_eq!(found.len(), 1, "one {what} in {spans:#?}");
        found[0].clone()
    };
    let request = eventually(Duration::from_secs(30), "intake's request span", || {
        let spans = in_trace(&receiver.spans());
        async move {
            spans
                .into_iter()
                .find(|s| s.service == "stowage-intake" && s.kind == SpanKind::Server)
        }
    })
    .await;
    assert_eq!(request.name, "POST /v1/uploads");
    assert_eq!(request.parent_span_id, frontend_span, "{request:?}");

    // The ledger records the grant, with its trace, before the upload
    // arrives (the wait keeps the test from racing the two events).
    let granted = eventually(
        Duration::from_secs(30),
        "the ledger's span for UploadGranted",
        || {
            let spans = in_trace(&receiver.spans());
            let parent = request.span_id.clone();
            async move {
                spans.into_iter().find(|s| {
                    s.service == "stowage-ledger"
                        && s.kind == SpanKind::Consumer
                        && s.parent_span_id == parent
                })
            }
        },
    )
    .await;

    // S3's event reaches the ledger twice, as SQS may deliver it: once
    // applied, once a duplicate that announces the totals again.
    deliver_uploads_twice(&stack).await;
    let uploaded = upload(&http, &grant, data.clone()).await;
    assert!(uploaded.status().is_success(), "{}", uploaded.status());
    let grant_url = format!(
        "{intake_url}/v1/uploads/{}",
        grant["grant_id"].as_str().expect("grant id")
    );
    eventually(Duration::from_secs(30), "the upload COMPLETE", || {
        let request = http.get(&grant_url).bearer_auth(&token).send();
        async move {
            let status: Value = request.await.ok()?.json().await.ok()?;
            (status["state"] == "COMPLETE").then_some(())
        }
    })
    .await;

    // intake's projections of the ledger's two UsageChanged end the trace.
    // The two processes export on timers of their own, so intake's spans
    // can arrive before the ledger's: wait for every span read below.
    let applies = |spans: &[Exported]| -> Vec<Exported> {
        in_trace(spans)
            .into_iter()
            .filter(|s| s.service == "stowage-ledger" && s.name == "apply object event")
            .collect()
    };
    let projections = |spans: &[Exported]| -> Vec<Exported> {
        in_trace(spans)
            .into_iter()
            .filter(|s| s.service == "stowage-intake" && s.kind == SpanKind::Consumer)
            .collect()
    };
    let spans = eventually(
        Duration::from_secs(30),
        "the ledger's apply spans (two at least), the spans of the S3 event's messages \
         they link to, and intake's spans for UsageChanged (two at least)",
        || {
            let spans = receiver.spans();
            let applied = applies(&spans);
            let linked = applied.iter().flat_map(|a| &a.links).all(|(trace, span)| {
                spans
                    .iter()
                    .any(|s| &s.trace_id == trace && &s.span_id == span)
            });
            // A message redelivered on a slow machine adds an apply span
            // and a projection of its own; each is checked below.
            let complete = applied.len() >= 2 && linked && projections(&spans).len() >= 2;
            async move { complete.then_some(spans) }
        },
    )
    .await;
    let trace = in_trace(&spans);
    let by_id: HashMap<&str, &Exported> = trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let applied = applies(&spans);
    for apply in &applied {
        assert_eq!(
            apply.parent_span_id, request.span_id,
            "the upload is applied, and its duplicate announced, as part of the request \
             that granted it"
        );
        // Each apply span links to the span of the message its copy of S3's
        // event came in, a trace of its own (S3 carries no trace context).
        let [(link_trace, link_span)] = apply.links.as_slice() else {
            panic!("one link from {apply:?}");
        };
        assert_ne!(link_trace, &trace_id);
        let delivery = one(&spans, "span of the S3 event's message", &|s| {
            &s.span_id == link_span && &s.trace_id == link_trace
        });
        assert_eq!(
            (delivery.service.as_str(), delivery.kind),
            ("stowage-ledger", SpanKind::Consumer)
        );
        assert!(delivery.parent_span_id.is_empty(), "{delivery:?}");
    }
    let messages: std::collections::BTreeSet<_> = applied.iter().map(|a| &a.links).collect();
    assert_eq!(
        messages.len(),
        applied.len(),
        "each from a message of its own"
    );
    for projection in projections(&spans) {
        assert!(
            applied
                .iter()
                .any(|a| a.span_id == projection.parent_span_id),
            "intake applies each UsageChanged the ledger published while applying the \
             upload: {projection:?}"
        );
    }
    assert_eq!(granted.parent_span_id, request.span_id);

    // Every span of the trace hangs off another span of it, up to the
    // frontend's, and the trace crosses both services.
    for span in &trace {
        assert!(
            span.parent_span_id == frontend_span
                || by_id.contains_key(span.parent_span_id.as_str()),
            "{span:?} has a parent outside the trace"
        );
    }
    assert_eq!(
        trace
            .iter()
            .filter(|s| s.parent_span_id == frontend_span)
            .count(),
        1,
        "only intake's request span is the frontend's child: {trace:#?}"
    );
    let services: std::collections::BTreeSet<&str> =
        trace.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        ["stowage-intake", "stowage-ledger"].into_iter().collect()
    );
}

/// Makes this process's spans (of the services the harness runs in it)
/// exported to the returned exporter.
fn trace_this_process() -> opentelemetry_sdk::trace::InMemorySpanExporter {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt as _;

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test"))),
    )
    .expect("the test's subscriber is the process's first");
    exporter
}

/// The trace id in the `traceparent` of the first event captured in
/// `queue`, which must be of `key`.
async fn carried_trace(system: &stowage_e2e::System, queue: &str, key: &str) -> String {
    let event = eventually(Duration::from_secs(60), "an event captured", || async {
        system.drain(queue).await.into_iter().next()
    })
    .await;
    let event: Value = serde_json::from_str(&event).expect("event JSON");
    assert_eq!(event["detail"]["key"], key);
    let traceparent = event["detail"]["trace"]["traceparent"]
        .as_str()
        .expect("the event carries a trace");
    traceparent
        .split('-')
        .nth(1)
        .unwrap_or_else(|| panic!("{traceparent} names a trace"))
        .to_string()
}

/// A sweep is one trace: each copy is a span of it, and the `ObjectTiered.v1`
/// it publishes carries it, so a transition can be followed from its event.
/// The sweep runs in this process, under a tracer of the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sweep_is_one_trace_that_its_events_carry() {
    let exporter = trace_this_process();
    let system = stowage_e2e::System::start_parts(&[], stowage_e2e::Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let tiered = system.capture("stowage.lifecycle", "ObjectTiered.v1").await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let bucket = system.stack.get("STOWAGE_BUCKET").to_string();
    let etag =
        stowage_e2e::put_for_etag(&system.s3, &bucket, "users/tom/cold.bin", vec![1; 1 << 20])
            .await;
    let row = stowage_e2e::standard_row(1 << 20, &etag, now - 100 * 86_400);
    stowage_e2e::load_projection(
        system.stack.get("STOWAGE_LIFECYCLE_TABLE"),
        &[("users/tom/cold.bin".to_string(), row, now - 86_400)],
        1,
    )
    .await;
    let report = system
        .sweeper(&[])
        .await
        .run(time::OffsetDateTime::now_utc(), None)
        .await
        .expect("sweep");
    assert_eq!(report.tiered, 1, "{report:?}");

    let spans = exporter.get_finished_spans().expect("spans readable");
    let named = |name: &str| {
        let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name} span in {spans:#?}");
        found[0].clone()
    };
    let sweep = named("lifecycle sweep");
    let copy = named("tier object");
    assert_eq!(copy.parent_span_id, sweep.span_context.span_id());
    assert_eq!(copy.span_context.trace_id(), sweep.span_context.trace_id());

    assert_eq!(
        carried_trace(&system, &tiered, "users/tom/cold.bin").await,
        sweep.span_context.trace_id().to_string()
    );
    system.stop().await;
}

/// A restore is announced in the trace it was asked in: the
/// `ObjectRestored.v1` published when S3 reports the restore done, hours
/// later in production, carries the trace of the frontend's
/// `POST /v1/restores`, and the span that announces it is linked to the span
/// of S3's event, which carries no trace. The services run in this process,
/// under a tracer of the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_is_announced_in_the_trace_it_was_asked_in() {
    let exporter = trace_this_process();
    let system = stowage_e2e::System::start().await.expect("system starts");
    let restored = system
        .capture("stowage.lifecycle", "ObjectRestored.v1")
        .await;
    system
        .put_object("users/rosa/old.bin", vec![3; 4096], "GLACIER")
        .await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let accepted = system
        .http
        .post(format!("{}/v1/restores", system.intake_url))
        .bearer_auth(system.token("rosa"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"path": "old.bin", "days": 2}))
        .send()
        .await
        .expect("intake answers");
    assert_eq!(accepted.status(), 202);

    assert_eq!(
        carried_trace(&system, &restored, "users/rosa/old.bin").await,
        trace_id
    );

    // The span it was announced from: in the request's trace, linked to the
    // span of the message that brought S3's event.
    let announce = eventually(Duration::from_secs(10), "the announcing span", || {
        let spans = exporter.get_finished_spans().expect("spans readable");
        async move { spans.into_iter().find(|s| s.name == "announce restore") }
    })
    .await;
    assert_eq!(announce.span_context.trace_id().to_string(), trace_id);
    let links: Vec<_> = announce.links.iter().collect();
    assert_eq!(links.len(), 1, "{announce:#?}");
    assert_ne!(links[0].span_context.trace_id().to_string(), trace_id);
    system.stop().await;
}

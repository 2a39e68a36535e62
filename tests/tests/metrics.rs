//! The services' OpenTelemetry metrics, read back through an in-memory
//! exporter installed as the process's meter provider before the services
//! start: consumer outcomes, upload violations, grant outcomes, bytes by
//! storage class, the depth of the dead-letter queues, sweeps, and messages
//! left for their next delivery.

use std::time::Duration;

use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::metrics::{
    InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
    data::{AggregatedMetrics, MetricData},
};
use serde_json::json;
use stowage_e2e::{System, eventually};

/// A number type metric points are read as.
trait Number: Copy + std::iter::Sum<Self> {
    fn data(metrics: &AggregatedMetrics) -> Option<&MetricData<Self>>;
}

impl Number for u64 {
    fn data(metrics: &AggregatedMetrics) -> Option<&MetricData<u64>> {
        match metrics {
            AggregatedMetrics::U64(data) => Some(data),
            _ => None,
        }
    }
}

impl Number for i64 {
    fn data(metrics: &AggregatedMetrics) -> Option<&MetricData<i64>> {
        match metrics {
            AggregatedMetrics::I64(data) => Some(data),
            _ => None,
        }
    }
}

impl Number for f64 {
    fn data(metrics: &AggregatedMetrics) -> Option<&MetricData<f64>> {
        match metrics {
            AggregatedMetrics::F64(data) => Some(data),
            _ => None,
        }
    }
}

/// True when `attributes` include every one of `with`.
fn has<'a>(attributes: impl Iterator<Item = &'a KeyValue>, with: &[KeyValue]) -> bool {
    let attributes: Vec<&KeyValue> = attributes.collect();
    with.iter().all(|wanted| attributes.contains(&wanted))
}

/// What `read` makes of each metric called `name` in the newest export
/// (metrics are cumulative: the newest export holds the totals).
fn newest<T: Number, R>(
    exporter: &InMemoryMetricExporter,
    name: &str,
    read: impl Fn(&MetricData<T>) -> Option<R>,
) -> Vec<R> {
    let finished = exporter.get_finished_metrics().expect("metrics readable");
    let Some(latest) = finished.last() else {
        return Vec::new();
    };
    latest
        .scope_metrics()
        .flat_map(|scope| scope.metrics())
        .filter(|metric| metric.name() == name)
        .filter_map(|metric| read(T::data(metric.data())?))
        .collect()
}

/// The sum of (up-down) counter `name`'s points whose attributes include
/// `with`; zero when there are none.
fn sum_of<T: Number>(exporter: &InMemoryMetricExporter, name: &str, with: &[KeyValue]) -> T {
    newest(exporter, name, |data: &MetricData<T>| match data {
        MetricData::Sum(sum) => Some(
            sum.data_points()
                .filter(|point| has(point.attributes(), with))
                .map(|point| point.value())
                .sum::<T>(),
        ),
        _ => None,
    })
    .into_iter()
    .sum()
}

/// The latest value of gauge `name` whose attributes include `with`, if it
/// was recorded.
fn gauge<T: Number>(exporter: &InMemoryMetricExporter, name: &str, with: &[KeyValue]) -> Option<T> {
    newest(exporter, name, |data: &MetricData<T>| match data {
        MetricData::Gauge(gauge) => gauge
            .data_points()
            .find(|point| has(point.attributes(), with))
            .map(|point| point.value()),
        _ => None,
    })
    .into_iter()
    .next()
}

/// Installs the process's meter provider, exporting to the returned
/// exporter; call before the services start.
fn measure() -> (InMemoryMetricExporter, SdkMeterProvider) {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    global::set_meter_provider(provider.clone());
    (exporter, provider)
}

/// A queue's name, the last part of its URL.
fn name_of(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_violations_grants_bytes_and_dead_letters_are_measured() {
    let (exporter, provider) = measure();

    let system = System::start_with(&[("default-quota-bytes", "1000")])
        .await
        .expect("system starts");
    let ledger_queue = system.stack.get("STOWAGE_LEDGER_QUEUE_URL").to_string();
    system
        .send(&ledger_queue, &["not an event".to_string()])
        .await;
    let flush = || {
        let provider = provider.clone();
        async move {
            tokio::task::spawn_blocking(move || provider.force_flush())
                .await
                .expect("flush ran")
                .expect("metrics flushed");
        }
    };
    let queue_name = name_of(&ledger_queue);
    let ledger_outcome = |outcome: &'static str| {
        sum_of::<u64>(
            &exporter,
            "stowage.consumer.messages",
            &[
                KeyValue::new("queue", queue_name.clone()),
                KeyValue::new("outcome", outcome),
            ],
        )
    };

    let token = system.token("ivan");
    let granted = system
        .grant(
            &token,
            &json!({"path": "granted.txt", "size": 100, "content_type": "application/octet-stream"}),
        )
        .await;
    assert_eq!(granted.status, 201, "{}", granted.body);
    // The ledger records the grant before the upload arrives; its workers
    // handle batches side by side, so an S3 event received at the same time
    // as the grant could be applied first and counted as an upload without
    // one.
    eventually(
        Duration::from_secs(30),
        "the ledger recorded the grant",
        || async {
            flush().await;
            (ledger_outcome("grant-recorded") >= 1).then_some(())
        },
    )
    .await;
    let uploaded = system.upload(&granted.body, vec![1; 100]).await;
    assert!(uploaded.status().is_success(), "{}", uploaded.status());
    let refused = system
        .grant(
            &token,
            &json!({"path": "huge.bin", "size": 5000, "content_type": "text/plain"}),
        )
        .await;
    assert_eq!(refused.status, 403);
    system
        .put_object("users/ivan/ungranted.txt", vec![2; 50], "GLACIER")
        .await;
    system.used_bytes_reach(&token, 150).await;

    eventually(
        Duration::from_secs(60),
        "a poison message counted",
        || async {
            flush().await;
            (ledger_outcome("poison") >= 1).then_some(())
        },
    )
    .await;
    flush().await;
    assert_eq!(
        ledger_outcome("applied"),
        2,
        "two objects applied by the ledger"
    );
    assert_eq!(
        sum_of::<u64>(
            &exporter,
            "stowage.ledger.violations",
            &[KeyValue::new("kind", "no_grant")]
        ),
        1
    );
    assert_eq!(
        sum_of::<u64>(
            &exporter,
            "stowage.ledger.violations",
            &[KeyValue::new("kind", "exceeds_grant")]
        ),
        0
    );
    let grants = |outcome: &'static str| {
        sum_of::<u64>(
            &exporter,
            "stowage.intake.grants",
            &[KeyValue::new("outcome", outcome)],
        )
    };
    assert_eq!((grants("issued"), grants("quota_exceeded")), (1, 1));
    let bytes = |class: &'static str| {
        sum_of::<i64>(
            &exporter,
            "stowage.ledger.bytes",
            &[KeyValue::new("storage_class", class)],
        )
    };
    assert_eq!((bytes("STANDARD"), bytes("GLACIER")), (100, 50));

    // The poison message reaches the ledger's dead-letter queue after the
    // queue's maxReceiveCount receives; intake's stays empty.
    eventually(
        Duration::from_secs(60),
        "the ledger's dead-letter queue reported holding the poison message",
        || async {
            flush().await;
            let depth = gauge::<u64>(
                &exporter,
                "stowage.consumer.dlq_depth",
                &[KeyValue::new("queue", queue_name.clone())],
            );
            (depth == Some(1)).then_some(())
        },
    )
    .await;
    let intake_queue = name_of(system.stack.get("STOWAGE_INTAKE_QUEUE_URL"));
    assert_eq!(
        gauge::<u64>(
            &exporter,
            "stowage.consumer.dlq_depth",
            &[KeyValue::new("queue", intake_queue)],
        ),
        Some(0)
    );

    // The poison message waited on the queue for its many receives; with
    // it gone, the next receive finds nothing and the lag falls back to 0.
    eventually(
        Duration::from_secs(30),
        "the ledger queue's lag back to 0",
        || async {
            flush().await;
            let lag = gauge::<f64>(
                &exporter,
                "stowage.consumer.lag",
                &[KeyValue::new("queue", queue_name.clone())],
            );
            (lag == Some(0.0)).then_some(())
        },
    )
    .await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweeps_count_tiered_bytes_savings_and_decisions() {
    let (exporter, provider) = measure();

    let system = System::start_parts(&[], stowage_e2e::Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let bucket = system.stack.get("STOWAGE_BUCKET").to_string();
    let etag = stowage_e2e::put_for_etag(
        &system.s3,
        &bucket,
        "users/vera/cold.bin",
        vec![1u8; 1 << 20],
    )
    .await;
    let rows = vec![
        (
            "users/vera/cold.bin".to_string(),
            stowage_e2e::standard_row(1 << 20, &etag, now - 100 * 86_400),
            now - 86_400,
        ),
        (
            "users/vera/tiny.txt".to_string(),
            stowage_e2e::standard_row(10, "e", now - 100 * 86_400),
            now - 86_400,
        ),
    ];
    stowage_e2e::load_projection(system.stack.get("STOWAGE_LIFECYCLE_TABLE"), &rows, 1).await;
    let report = system
        .sweeper(&[])
        .await
        .run(time::OffsetDateTime::now_utc(), None)
        .await
        .expect("sweep");
    assert_eq!((report.tiered, report.skipped), (1, 1), "{report:?}");

    tokio::task::spawn_blocking(move || provider.force_flush())
        .await
        .expect("flush ran")
        .expect("metrics flushed");
    let class = [KeyValue::new("storage_class", "GLACIER_IR")];
    assert_eq!(
        sum_of::<u64>(&exporter, "stowage.lifecycle.tiered_bytes", &class),
        1 << 20
    );
    // 1 MiB from 0.023 to 0.004 a GB-month.
    let saving = sum_of::<f64>(&exporter, "stowage.lifecycle.saving_usd", &class);
    assert!((saving - 0.019 / 1024.0).abs() < 1e-12, "{saving}");
    let decisions = |outcome: &'static str, reason: &'static str| {
        sum_of::<u64>(
            &exporter,
            "stowage.lifecycle.decisions",
            &[
                KeyValue::new("outcome", outcome),
                KeyValue::new("reason", reason),
            ],
        )
    };
    assert_eq!(
        (
            decisions("tiered", "cold"),
            decisions("skipped", "too_small")
        ),
        (1, 1)
    );
    system.stop().await;
}

/// Leaves each message for its next delivery once, as the ledger and the
/// lifecycle service leave a delete they judge again.
struct OnTheSecondDelivery;

impl stowage_shared::consumer::Handler for OnTheSecondDelivery {
    async fn handle(
        &self,
        delivery: &stowage_shared::consumer::Delivery,
    ) -> stowage_shared::consumer::Disposition {
        use stowage_shared::consumer::Disposition;
        if delivery.receive_count == 1 {
            Disposition::Later("judged-on-redelivery")
        } else {
            Disposition::Done("applied")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_finished_on_its_next_delivery_is_counted_as_such_not_as_a_failure() {
    use stowage_shared::consumer::{ConsumerOptions, QueueConsumer};

    let (exporter, provider) = measure();

    let system = System::start_parts(&[], stowage_e2e::Parts::INTAKE_ONLY)
        .await
        .expect("system starts");
    let queue_url = system
        .sqs
        .create_queue()
        .queue_name(format!("{}-later", system.stack.name))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("queue URL");
    let consumer = QueueConsumer::new(
        system.sqs.clone(),
        &queue_url,
        std::sync::Arc::new(OnTheSecondDelivery),
        ConsumerOptions {
            wait: Duration::from_secs(1),
            visibility_timeout: Duration::from_secs(1),
            ..ConsumerOptions::default()
        },
    );
    system.send(&queue_url, &["a delete".to_string()]).await;

    let first = eventually(Duration::from_secs(30), "the message received", || async {
        let outcome = consumer.process_batch().await.expect("batch");
        (outcome.received == 1).then_some(outcome)
    })
    .await;
    assert_eq!(
        (first.later, first.retried, first.deleted),
        (1, 0, 0),
        "{first:?}"
    );
    // Still on the queue: delivered again after the visibility timeout, and
    // finished then.
    let second = eventually(
        Duration::from_secs(30),
        "the message delivered again",
        || async {
            let outcome = consumer.process_batch().await.expect("batch");
            (outcome.received == 1).then_some(outcome)
        },
    )
    .await;
    assert_eq!(second.done, ["applied"], "{second:?}");
    assert_eq!(second.deleted, 1);

    tokio::task::spawn_blocking(move || provider.force_flush())
        .await
        .expect("flush ran")
        .expect("metrics flushed");
    let counted = |outcome: &'static str| {
        sum_of::<u64>(
            &exporter,
            "stowage.consumer.messages",
            &[
                KeyValue::new("queue", name_of(&queue_url)),
                KeyValue::new("outcome", outcome),
            ],
        )
    };
    assert_eq!(
        (
            counted("judged-on-redelivery"),
            counted("applied"),
            counted("retried")
        ),
        (1, 1, 0)
    );
    system.stop().await;
}

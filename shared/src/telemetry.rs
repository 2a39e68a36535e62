//! Logs, traces and metrics.
//!
//! Logs: `RUST_LOG` filters (default `info`); with `STOWAGE_LOG_FORMAT=json`
//! every line is one JSON object, otherwise lines are for people.
//!
//! Traces and metrics are exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads the standard
//! `OTEL_*` variables); otherwise nothing is exported and the instruments
//! cost next to nothing.

use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_otlp::{MetricExporter, SpanExporter};
use opentelemetry_sdk::{
    Resource, metrics::SdkMeterProvider, propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
};
use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// The exporters of one process; [`Telemetry::shutdown`] flushes them.
#[derive(Debug, Default)]
#[must_use = "call shutdown() before exiting so buffered spans and metrics are sent"]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Sends what is buffered and stops the exporters.
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer
            && let Err(error) = tracer.shutdown()
        {
            tracing::warn!(%error, "trace exporter did not shut down cleanly");
        }
        if let Some(meter) = self.meter
            && let Err(error) = meter.shutdown()
        {
            tracing::warn!(%error, "metric exporter did not shut down cleanly");
        }
    }
}

/// Installs logging and, when configured, OTLP export. Call once, first thing
/// in `main`; `service` names the process in traces and metrics.
pub fn init(service: &'static str) -> Telemetry {
    let exporting = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some_and(|v| !v.is_empty());
    let telemetry = if exporting {
        exporters(service)
    } else {
        Telemetry::default()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("STOWAGE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let logs = if json {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_target(true)
            .boxed()
    } else {
        fmt::layer().with_target(true).boxed()
    };
    let spans = telemetry.tracer.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(format!("stowage-{service}")))
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .try_init();
    if installed.is_ok() {
        tracing::debug!(service, exporting, "telemetry initialised");
    }
    telemetry
}

fn exporters(service: &'static str) -> Telemetry {
    let resource = Resource::builder()
        .with_service_name(format!("stowage-{service}"))
        .build();
    global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = match SpanExporter::builder().with_http().build() {
        Ok(exporter) => Some(
            SdkTracerProvider::builder()
                .with_resource(resource.clone())
                .with_batch_exporter(exporter)
                .build(),
        ),
        Err(error) => {
            eprintln!("OTLP trace exporter not started: {error}");
            None
        }
    };
    let meter = match MetricExporter::builder().with_http().build() {
        Ok(exporter) => {
            let provider = SdkMeterProvider::builder()
                .with_resource(resource)
                .with_periodic_exporter(exporter)
                .build();
            global::set_meter_provider(provider.clone());
            Some(provider)
        }
        Err(error) => {
            eprintln!("OTLP metric exporter not started: {error}");
            None
        }
    };
    if let Some(tracer) = &tracer {
        global::set_tracer_provider(tracer.clone());
    }
    Telemetry { tracer, meter }
}

//! Logs, traces and metrics.
//!
//! Logs: `RUST_LOG` filters (default `info`); with `STOWAGE_LOG_FORMAT=json`
//! every line is one JSON object, otherwise lines are for people.
//!
//! Traces and metrics are exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads the standard
//! `OTEL_*` variables); otherwise nothing is exported and the instruments
//! cost next to nothing. `RUST_LOG` filters the logs only: every span and
//! event at `info` or above is exported.
//!
//! A trace crosses services inside the events: a producer puts
//! [`current_trace`] in the event's `detail.trace`, and the consumer makes
//! its span a child of it with [`continue_trace`].

use std::collections::HashMap;

use opentelemetry::{
    global,
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_otlp::{MetricExporter, SpanExporter};
use opentelemetry_sdk::{
    Resource, metrics::SdkMeterProvider, propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
};
use stowage_events::TraceContext;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    EnvFilter, Layer, filter::LevelFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt,
};

/// The W3C trace context of the current `tracing` span, for the `trace`
/// of an event this span produces: `EventMeta::new(user, current_trace())`.
/// Empty when no trace is exported.
pub fn current_trace() -> TraceContext {
    let context = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier);
    });
    TraceContext {
        traceparent: carrier.remove("traceparent"),
        tracestate: carrier.remove("tracestate").filter(|s| !s.is_empty()),
    }
}

/// Makes `span` a child of the span `trace` names (an event's
/// `detail.trace`, or a request's `traceparent` header), so it joins that
/// trace. Call it before `span` is first entered. Returns whether `span`
/// was given that parent: false when `trace` names no valid span or no
/// trace is exported, and `span` keeps its own parent.
pub fn continue_trace(span: &tracing::Span, trace: &TraceContext) -> bool {
    let Some(traceparent) = &trace.traceparent else {
        return false;
    };
    let mut carrier = HashMap::from([("traceparent".to_string(), traceparent.clone())]);
    if let Some(tracestate) = &trace.tracestate {
        carrier.insert("tracestate".to_string(), tracestate.clone());
    }
    let parent = global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    parent.span().span_context().is_valid() && span.set_parent(parent).is_ok()
}

/// Links `span` to `other`: for a span that continues another trace than
/// the one it was caused in, so the cause stays one step away.
pub fn link(span: &tracing::Span, other: &tracing::Span) {
    span.add_link(other.context().span().span_context().clone());
}

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
    install(service, "info", std::io::stdout)
}

/// [`init`] for a command-line tool: logs go to stderr and show warnings
/// and errors unless `RUST_LOG` says otherwise, so that stdout holds only
/// the command's answer. Traces and metrics are exported as by a service.
pub fn init_cli(service: &'static str) -> Telemetry {
    install(service, "warn", std::io::stderr)
}

fn install<W>(service: &'static str, default_filter: &str, writer: W) -> Telemetry
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let exporting = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some_and(|v| !v.is_empty());
    global::set_text_map_propagator(TraceContextPropagator::new());
    let telemetry = if exporting {
        exporters(service)
    } else {
        Telemetry::default()
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("STOWAGE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let logs = if json {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_target(true)
            .with_writer(writer)
            .with_filter(filter)
            .boxed()
    } else {
        fmt::layer()
            .with_target(true)
            .with_writer(writer)
            .with_filter(filter)
            .boxed()
    };
    let spans = telemetry.tracer.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(format!("stowage-{service}")))
            .with_filter(LevelFilter::INFO)
    });
    let installed = tracing_subscriber::registry()
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

#[cfg(test)]
mod tests {
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
    use tracing::info_span;

    use super::*;

    /// Runs `f` with spans exported to memory, and returns them.
    fn traced(f: impl FnOnce()) -> Vec<SpanData> {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
        exporter.get_finished_spans().expect("spans readable")
    }

    fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in {spans:?}"))
    }

    #[test]
    fn an_event_carries_its_producer_span_to_the_consumer_span() {
        let mut carried = TraceContext::default();
        let spans = traced(|| {
            carried = info_span!("produce").in_scope(current_trace);
            let consume = info_span!("consume");
            assert!(continue_trace(&consume, &carried));
            consume.in_scope(|| info_span!("inner").in_scope(|| {}));
        });
        let (produce, consume, inner) = (
            named(&spans, "produce"),
            named(&spans, "consume"),
            named(&spans, "inner"),
        );
        assert_eq!(
            carried.traceparent.as_deref(),
            Some(
                format!(
                    "00-{}-{}-01",
                    produce.span_context.trace_id(),
                    produce.span_context.span_id()
                )
                .as_str()
            )
        );
        assert_eq!(carried.tracestate, None);
        assert_eq!(
            consume.span_context.trace_id(),
            produce.span_context.trace_id()
        );
        assert_eq!(consume.parent_span_id, produce.span_context.span_id());
        assert_eq!(inner.parent_span_id, consume.span_context.span_id());
        assert_eq!(
            inner.span_context.trace_id(),
            produce.span_context.trace_id()
        );
    }

    #[test]
    fn a_span_without_a_valid_parent_starts_its_own_trace() {
        let spans = traced(|| {
            for (name, traceparent) in [
                ("none", None),
                ("garbage", Some("not a traceparent")),
                (
                    "zero",
                    Some("00-00000000000000000000000000000000-0000000000000000-01"),
                ),
            ] {
                let span = info_span!("root", otel.name = name);
                let trace = TraceContext {
                    traceparent: traceparent.map(str::to_string),
                    tracestate: None,
                };
                assert!(!continue_trace(&span, &trace), "{name}");
                span.in_scope(|| {});
            }
        });
        assert_eq!(spans.len(), 3);
        for span in &spans {
            assert_eq!(
                span.parent_span_id,
                opentelemetry::trace::SpanId::INVALID,
                "{}",
                span.name
            );
        }
    }

    #[test]
    fn without_a_span_or_an_exporter_no_trace_is_carried() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        assert_eq!(current_trace(), TraceContext::default());
        let span = info_span!("unexported");
        assert_eq!(span.in_scope(current_trace), TraceContext::default());
        let trace = TraceContext {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: None,
        };
        assert!(!continue_trace(&span, &trace));
    }

    #[test]
    fn a_linked_span_joins_another_trace_and_points_back_to_its_cause() {
        let spans = traced(|| {
            let upload = info_span!("upload");
            let trace = upload.in_scope(current_trace);
            let delivery = info_span!("delivery");
            delivery.in_scope(|| {
                let apply = info_span!("apply");
                assert!(continue_trace(&apply, &trace));
                link(&apply, &delivery);
                apply.in_scope(|| {});
            });
        });
        let (upload, delivery, apply) = (
            named(&spans, "upload"),
            named(&spans, "delivery"),
            named(&spans, "apply"),
        );
        assert_ne!(
            delivery.span_context.trace_id(),
            upload.span_context.trace_id()
        );
        assert_eq!(
            apply.span_context.trace_id(),
            upload.span_context.trace_id()
        );
        assert_eq!(apply.parent_span_id, upload.span_context.span_id());
        let links: Vec<_> = apply.links.iter().map(|l| l.span_context.clone()).collect();
        assert_eq!(links, vec![delivery.span_context.clone()]);
    }
}

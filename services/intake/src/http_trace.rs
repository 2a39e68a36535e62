//! One server span per HTTP request, the parent of everything the request
//! does, including the trace its events carry. A request that arrives with a
//! W3C `traceparent` header (a traced frontend) continues that trace.

use std::time::Duration;

use axum::{
    body::Body,
    extract::MatchedPath,
    http::{HeaderMap, Request, Response},
};
use stowage_events::TraceContext;
use stowage_shared::telemetry;
use tower_http::{
    classify::{ServerErrorsAsFailures, SharedClassifier},
    trace::{DefaultOnRequest, TraceLayer},
};
use tracing::{Span, field};

/// The tracing layer intake's router runs every request through.
pub type HttpTraceLayer = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    fn(&Request<Body>) -> Span,
    DefaultOnRequest,
    fn(&Response<Body>, Duration, &Span),
>;

/// Spans named `<method> <route>` (the route template, never the caller's
/// path), with the response status recorded.
pub fn layer() -> HttpTraceLayer {
    TraceLayer::new_for_http()
        .make_span_with(request_span as fn(&Request<Body>) -> Span)
        .on_response(record_response as fn(&Response<Body>, Duration, &Span))
}

fn request_span(request: &Request<Body>) -> Span {
    let method = request.method();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let span = tracing::info_span!(
        "request",
        otel.name = route.map_or_else(|| method.to_string(), |route| format!("{method} {route}")),
        otel.kind = "server",
        otel.status_code = field::Empty,
        http.request.method = %method,
        http.route = route,
        http.response.status_code = field::Empty,
    );
    telemetry::continue_trace(&span, &incoming_trace(request.headers()));
    span
}

/// The caller's trace, from its `traceparent` and `tracestate` headers.
fn incoming_trace(headers: &HeaderMap) -> TraceContext {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    TraceContext {
        traceparent: header("traceparent"),
        tracestate: header("tracestate"),
    }
}

fn record_response(response: &Response<Body>, latency: Duration, span: &Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    tracing::debug!(
        status = status.as_u16(),
        latency_ms = latency.as_millis() as u64,
        "finished processing request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_trace_is_read_from_its_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(incoming_trace(&headers), TraceContext::default());
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        headers.insert("traceparent", traceparent.parse().unwrap());
        headers.insert("tracestate", "vendor=1".parse().unwrap());
        assert_eq!(
            incoming_trace(&headers),
            TraceContext {
                traceparent: Some(traceparent.to_string()),
                tracestate: Some("vendor=1".to_string()),
            }
        );
    }
}

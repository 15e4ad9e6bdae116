//! The `http.request` span of a request: W3C `traceparent` from the
//! request's headers, the span's fields, and its close (status, outcome,
//! request metrics). The actix-specific half of tracing; the rest is in
//! [`crate::telemetry`].

use std::time::Duration;

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{Status, TraceContextExt};
use tracing::{field, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::{trace_context_enabled, trace_id};

/// Reads `traceparent` / `tracestate` from actix request headers.
struct HeaderExtractor<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Opens the `http.request` server span of a request: `otel.kind = server`,
/// method, route, path, user agent, and (filled later by
/// [`finish_http_span`]) status code and outcome. When tracing is exported,
/// a valid incoming W3C `traceparent` header becomes its remote parent, and
/// its `trace_id` is recorded so every log line inside the request names it.
pub fn http_server_span(req: &actix_web::HttpRequest, route: &'static str) -> Span {
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = route,
        url.path = %req.path(),
        user_agent.original = field::Empty,
        http.response.status_code = field::Empty,
        job_id = field::Empty,
        outcome = field::Empty,
        trace_id = field::Empty,
    );
    if let Some(ua) = req
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        span.record("user_agent.original", ua);
    }
    if trace_context_enabled() {
        // Before anything starts the span: its parent is fixed at start.
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(req.headers()))
        });
        if parent.span().span_context().is_valid() {
            if let Err(e) = span.set_parent(parent) {
                tracing::debug!(error = %e, "could not adopt the incoming traceparent");
            }
        }
        if let Some(id) = trace_id(&span) {
            span.record("trace_id", id.as_str());
        }
    }
    span
}

/// Closes the books on a request: records status and outcome on its span
/// (an error status for 5xx, as OpenTelemetry's HTTP conventions want for
/// server spans) and counts it in the request metrics.
pub fn finish_http_span(span: &Span, status: u16, outcome: &'static str, elapsed: Duration) {
    span.record("http.response.status_code", i64::from(status));
    span.record("outcome", outcome);
    if status >= 500 && trace_context_enabled() {
        span.set_status(Status::error(outcome));
    }
    crate::metrics::http_request(outcome, status, elapsed);
}

//! Logs, trace export, and the spans of a request's path through the node.
//!
//! # Set-up
//! [`init`] installs one `tracing` subscriber for the process:
//! - human-readable log lines on stderr, filtered by `RUST_LOG` (default
//!   `info`, with ractor's per-actor spans at `warn`);
//! - when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   is set (and `OTEL_SDK_DISABLED` is not `true`, and `OTEL_TRACES_EXPORTER`
//!   is not `none`), a `tracing-opentelemetry` layer that exports every span
//!   with OTLP over HTTP/protobuf through a batch span processor. The service
//!   name is `OTEL_SERVICE_NAME` (default `whisper-node`); the W3C
//!   TraceContext propagator is installed globally. The generic endpoint gets
//!   `/v1/traces` appended, the traces endpoint is used as is (the OTLP
//!   exporter spec). Batch settings follow the standard `OTEL_BSP_*`
//!   variables.
//!
//! Without an endpoint there is no OpenTelemetry layer at all, and every
//! helper below skips its OpenTelemetry work after one relaxed atomic load:
//! tracing off costs nothing on the hot path.
//!
//! [`init`] also installs the Prometheus recorder ([`crate::metrics::install`]).
//! It returns a [`TelemetryGuard`]; dropping it (or
//! [`TelemetryGuard::shutdown`]) flushes the spans still buffered and shuts
//! the exporter down.
//!
//! # The span tree of one request
//! ```text
//! http.request          (server; incoming traceparent honoured)   src/http/routes.rs
//! ├── audio.decode      (decode + resample the upload)            src/http/routes.rs
//! └── asr.job           (job id, audio seconds)                   IngressActor
//!     ├── queue.wait    (admission → dispatch; depth, wait ms)    BoundedQueueActor
//!     └── worker.decode (dispatch → answer; worker id, model, rtf, outcome)  WorkerProxyActor
//!         ├── features        ┐ recorded from the worker's reported
//!         ├── encode          │ phase timings with their real start and
//!         ├── generate        │ end times (one per window / temperature)
//!         └── …               ┘
//! ```
//! A job retried after a worker crash gets a second `queue.wait` and
//! `worker.decode` under the same `asr.job`; the crashed attempt's
//! `worker.decode` ends with an error status.
//!
//! Every span is created with an explicit parent. Ractor's default feature
//! `message_span_propogation` runs an actor's `handle()` inside the
//! *sender's* span, which is not necessarily the job's, so nothing here
//! relies on the current span.
//!
//! # Logs
//! Log lines about a job are emitted inside its `asr.job` span, which carries
//! `job_id` and (when tracing is exported) `trace_id`; the fmt layer prints
//! the span's fields on every line, so each line names its job and trace.
//!
//! # Embedding
//! A host with its own subscriber and OpenTelemetry pipeline does not call
//! [`init`]. The node's spans are ordinary `tracing` spans and reach the
//! host's layers; the phase spans go to the global tracer provider. A host
//! that exports with `tracing-opentelemetry` calls
//! [`set_trace_context_enabled`] so the node fills `traceparent` and
//! `trace_id` and records the worker's phases.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{field, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Service name used when `OTEL_SERVICE_NAME` is not set.
pub const DEFAULT_SERVICE_NAME: &str = "whisper-node";

/// Instrumentation scope of the node's spans.
pub const TRACER_NAME: &str = "whisper-node";

/// Default log filter.
const DEFAULT_FILTER: &str =
    "info,ractor=warn,actix_server=warn,symphonia_core::formats::probe=off,\
                              opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn";

/// Crates whose own spans and events must never reach the OpenTelemetry
/// layer: the exporter's HTTP stack would trace its own exports.
const NOT_EXPORTED: &[&str] = &[
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "tower",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry_http",
];

/// Whether spans are exported (read on the hot path, written at start-up).
static TRACE_CONTEXT: AtomicBool = AtomicBool::new(false);

/// Whether the node's spans carry OpenTelemetry context: set by [`init`]
/// when an OTLP endpoint is configured, or by [`set_trace_context_enabled`].
#[inline]
pub fn trace_context_enabled() -> bool {
    TRACE_CONTEXT.load(Ordering::Relaxed)
}

/// For hosts that install their own `tracing-opentelemetry` layer instead of
/// calling [`init`]: makes the node read incoming trace context headers
/// (with the global text-map propagator, so install one, e.g.
/// `TraceContextPropagator`), record `trace_id` on its spans, fill the worker
/// job's `traceparent` and record the worker's phases (with the global tracer
/// provider, so set it too).
pub fn set_trace_context_enabled(enabled: bool) {
    TRACE_CONTEXT.store(enabled, Ordering::Relaxed);
}

/// Where and as what spans are exported, read from the standard variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelSettings {
    /// The endpoint variable that enabled export, and its value.
    pub endpoint: (String, String),
    /// `service.name` resource attribute.
    pub service_name: String,
}

impl OtelSettings {
    /// Reads the process environment; `None` means tracing export is off.
    pub fn from_env() -> Option<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`OtelSettings::from_env`] over any variable lookup (for tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return None;
        }
        if get("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none")) {
            return None;
        }
        let endpoint = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .find_map(|k| get(k).map(|v| (k.to_string(), v)))?;
        let service_name =
            get("OTEL_SERVICE_NAME").unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
        Some(Self {
            endpoint,
            service_name,
        })
    }
}

/// Keeps the trace pipeline alive; flushes and shuts it down when dropped.
#[must_use = "dropping the guard shuts trace export down"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes buffered spans and shuts the exporter down (also done on
    /// drop). Blocks for at most the exporter's timeout.
    pub fn shutdown(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(provider) = self.provider.take() {
            set_trace_context_enabled(false);
            if let Err(e) = provider.force_flush() {
                tracing::warn!(error = %e, "flushing spans failed");
            }
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "shutting the span exporter down failed");
            }
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// The log filter, minus the exporter's own crates.
fn export_filter() -> EnvFilter {
    NOT_EXPORTED.iter().fold(env_filter(), |f, target| {
        match format!("{target}=off").parse() {
            Ok(d) => f.add_directive(d),
            Err(_) => f,
        }
    })
}

fn build_provider(settings: &OtelSettings) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Installs logging, trace export (when an OTLP endpoint is configured, see
/// the module docs) and the Prometheus recorder. Call once, early, from
/// inside the tokio runtime; keep the guard until the process ends.
///
/// A misconfigured exporter (e.g. an unparsable endpoint) is logged as an
/// error and the node runs without trace export rather than not at all.
pub fn init() -> TelemetryGuard {
    let settings = OtelSettings::from_env();
    let (provider, failure) = match settings.as_ref().map(build_provider) {
        None => (None, None),
        Some(Ok(p)) => (Some(p), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let otel_layer = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(TRACER_NAME))
            .with_filter(export_filter())
    });
    let fmt_layer = fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(env_filter());
    let installed = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .is_ok();

    if let Some(p) = &provider {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(p.clone());
        set_trace_context_enabled(installed);
    }
    match (&settings, &failure) {
        (Some(s), Some(e)) => tracing::error!(
            variable = %s.endpoint.0, endpoint = %s.endpoint.1, error = %e,
            "trace export disabled: the OTLP exporter could not be built"
        ),
        (Some(s), None) if installed => tracing::info!(
            variable = %s.endpoint.0, endpoint = %s.endpoint.1, service_name = %s.service_name,
            "exporting traces (OTLP over HTTP/protobuf)"
        ),
        (Some(_), None) => {
            tracing::warn!("trace export disabled: a tracing subscriber was already installed")
        }
        (None, _) => tracing::debug!("trace export off: no OTEL_EXPORTER_OTLP_ENDPOINT"),
    }
    crate::metrics::install();
    TelemetryGuard {
        provider: if installed { provider } else { None },
    }
}

/// Installs a `tracing` subscriber writing human-readable lines to stderr,
/// without trace export. The filter comes from `RUST_LOG` (default: `info`,
/// with ractor's life-long per-actor spans at `warn`).
pub fn init_logging() {
    let _ = fmt()
        .with_env_filter(env_filter())
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The trace id of a span, as 32 lowercase hex digits, when it has one.
pub fn trace_id(span: &Span) -> Option<String> {
    if !trace_context_enabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The W3C `traceparent` of a span, when tracing is exported.
pub fn traceparent(span: &Span) -> Option<String> {
    if !trace_context_enabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Opens the `asr.job` span of a job under `parent` (usually the request's
/// `http.request` span), with `job_id` and `audio_secs`; `trace_id` is
/// recorded on it unless its parent is the node's own `http.request` span,
/// which already carries it.
pub fn job_span(parent: &Span, job_id: u64, audio_secs: f64) -> Span {
    // Integers go out as i64: tracing-opentelemetry exports u64 as strings.
    let span = tracing::info_span!(
        parent: parent,
        "asr.job",
        job_id = job_id as i64,
        audio_secs,
        trace_id = field::Empty
    );
    if trace_context_enabled() && parent.metadata().map(|m| m.name()) != Some("http.request") {
        if let Some(id) = trace_id(&span) {
            span.record("trace_id", id.as_str());
        }
    }
    span
}

/// A staged job became the one the engine decodes, after `staged` in the
/// worker behind the previous job.
pub fn decode_started_after_staging(span: &Span, staged: Duration) {
    span.record("staged_ms", staged.as_secs_f64() * 1e3);
}

/// A staged job was taken back before the engine started it (`reason`:
/// `client_gone`, `expired`, `shutting_down`, `worker_exited`): not a
/// decode failure, so nothing is counted.
pub fn decode_skipped(span: &Span, reason: &'static str) {
    span.record("outcome", reason);
}

/// Ends a successful decode: records decode time, real-time factor, language
/// and segment count, the worker's phases as child spans, and the decode
/// metrics.
pub fn decode_succeeded(
    span: &Span,
    audio_secs: f64,
    result: &asr_ipc::JobResult,
    decode_time: Duration,
) {
    let rtf = (audio_secs > 0.0).then(|| decode_time.as_secs_f64() / audio_secs);
    span.record("decode_ms", decode_time.as_secs_f64() * 1e3);
    if let Some(rtf) = rtf {
        span.record("rtf", rtf);
    }
    span.record("language", result.language.as_str());
    span.record("segments", result.segments.len() as i64);
    span.record("outcome", "ok");
    record_phases(span, &result.timings);
    crate::metrics::decode_succeeded(audio_secs, decode_time, rtf);
}

/// Ends a failed decode: `reason` (`worker_crashed`, `decode_timeout`,
/// `rejected`, `shutting_down`) as outcome, an error status with `detail`,
/// and a count in `asr_decode_failures_total{reason}`.
pub fn decode_failed(span: &Span, reason: &'static str, detail: &dyn std::fmt::Display) {
    let detail = detail.to_string();
    span.record("outcome", reason);
    span.record("error", detail.as_str());
    if trace_context_enabled() {
        span.set_status(Status::error(format!("{reason}: {detail}")));
    }
    crate::metrics::decode_failed(reason);
}

/// [`decode_failed`] for a node error (its [`crate::metrics::error_kind`]
/// is the reason).
pub fn decode_error(span: &Span, err: &crate::api::AsrError) {
    decode_failed(span, crate::metrics::error_kind(err), err);
}

fn unix_ns(ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
}

/// Records the worker's reported phases as child spans of `parent` with
/// their real start and end times (OpenTelemetry API: `with_start_time` and
/// `end_with_timestamp`), parented to the span's OpenTelemetry context.
/// A no-op unless tracing is exported.
pub fn record_phases(parent: &Span, timings: &asr_ipc::Timings) {
    if !trace_context_enabled() || timings.phases.is_empty() {
        return;
    }
    let cx = parent.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    let tracer = opentelemetry::global::tracer(TRACER_NAME);
    for phase in &timings.phases {
        let mut attributes = Vec::with_capacity(3);
        attributes.push(KeyValue::new(
            "duration_ms",
            phase.end_unix_ns.saturating_sub(phase.start_unix_ns) as f64 / 1e6,
        ));
        if let Some(w) = phase.window {
            attributes.push(KeyValue::new("window", i64::from(w)));
        }
        if let Some(t) = phase.temperature {
            attributes.push(KeyValue::new("temperature", f64::from(t)));
        }
        let mut span = tracer
            .span_builder(Cow::Owned(phase.name.clone()))
            .with_start_time(unix_ns(phase.start_unix_ns))
            .with_attributes(attributes)
            .start_with_context(&tracer, &cx);
        span.end_with_timestamp(unix_ns(phase.end_unix_ns.max(phase.start_unix_ns)));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};

    use super::*;
    // The test follows a request through every layer's spans.
    use crate::http::trace::{finish_http_span, http_server_span};

    #[test]
    fn export_is_configured_by_the_standard_variables_only() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            OtelSettings::from_lookup(env(&[])),
            None,
            "no endpoint, no export"
        );
        assert_eq!(
            OtelSettings::from_lookup(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            None
        );
        let s = OtelSettings::from_lookup(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]))
            .unwrap();
        assert_eq!(s.service_name, "whisper-node");
        assert_eq!(s.endpoint.0, "OTEL_EXPORTER_OTLP_ENDPOINT");
        let s = OtelSettings::from_lookup(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://t:4318/v1/traces",
            ),
            ("OTEL_SERVICE_NAME", "asr-eu-1"),
        ]))
        .unwrap();
        assert_eq!(
            s.endpoint.1, "http://t:4318/v1/traces",
            "the signal-specific endpoint wins"
        );
        assert_eq!(s.service_name, "asr-eu-1");
        assert_eq!(
            OtelSettings::from_lookup(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "true")
            ])),
            None
        );
        assert_eq!(
            OtelSettings::from_lookup(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_TRACES_EXPORTER", "none")
            ])),
            None
        );
    }

    /// Keeps exported spans in memory.
    #[derive(Debug, Clone, Default)]
    struct Memory(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Memory {
        fn export(
            &self,
            batch: Vec<SpanData>,
        ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            self.0.lock().unwrap().extend(batch);
            std::future::ready(Ok(()))
        }
    }

    /// The span helpers with an in-memory exporter (the OTLP path is tested
    /// against a real receiver in tests/otel.rs).
    #[test]
    fn spans_join_the_callers_trace_and_phases_keep_the_workers_times() {
        let memory = Memory::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(memory.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer(TRACER_NAME)));
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(provider.clone());
        set_trace_context_enabled(true);

        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let t0 = 1_700_000_000_000_000_000u64;
        let (tp, job_trace_id) = tracing::subscriber::with_default(subscriber, || {
            let req = actix_web::test::TestRequest::post()
                .uri("/v1/audio/transcriptions")
                .insert_header(("traceparent", format!("00-{trace}-00f067aa0ba902b7-01")))
                .insert_header(("user-agent", "test"))
                .to_http_request();
            let http = http_server_span(&req, "/v1/audio/transcriptions");
            let job = job_span(&http, 7, 2.0);
            let decode = tracing::info_span!(parent: &job, "worker.decode");
            let tp = traceparent(&decode);
            record_phases(
                &decode,
                &asr_ipc::Timings {
                    started_unix_ns: t0,
                    total_us: 3_000,
                    idle_before_us: None,
                    phases: vec![
                        asr_ipc::Phase {
                            name: "features".into(),
                            start_unix_ns: t0,
                            end_unix_ns: t0 + 1_000_000,
                            window: None,
                            temperature: None,
                        },
                        asr_ipc::Phase {
                            name: "generate".into(),
                            start_unix_ns: t0 + 1_000_000,
                            end_unix_ns: t0 + 3_000_000,
                            window: Some(0),
                            temperature: Some(0.2),
                        },
                    ],
                },
            );
            decode_failed(&decode, "worker_crashed", &"killed by SIGKILL (9)");
            finish_http_span(&http, 500, "worker_crashed", Duration::from_millis(5));
            (tp, trace_id(&job))
        });
        set_trace_context_enabled(false);
        provider.force_flush().unwrap();

        let spans = memory.0.lock().unwrap().clone();
        let by_name = |n: &str| {
            spans
                .iter()
                .find(|s| s.name == n)
                .unwrap_or_else(|| panic!("no {n} in {spans:#?}"))
        };
        let trace_id = TraceId::from_hex(trace).unwrap();
        for s in &spans {
            assert_eq!(
                s.span_context.trace_id(),
                trace_id,
                "{} is in the caller's trace",
                s.name
            );
        }
        let http = by_name("http.request");
        assert_eq!(
            http.parent_span_id,
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        assert_eq!(http.span_kind, opentelemetry::trace::SpanKind::Server);
        assert!(
            matches!(http.status, Status::Error { .. }),
            "a 500 is an error: {:?}",
            http.status
        );
        let job = by_name("asr.job");
        assert_eq!(job.parent_span_id, http.span_context.span_id());
        assert_eq!(job_trace_id.as_deref(), Some(trace));
        let decode = by_name("worker.decode");
        assert_eq!(decode.parent_span_id, job.span_context.span_id());
        assert!(
            matches!(&decode.status, Status::Error { description } if description.contains("SIGKILL"))
        );
        assert_eq!(
            tp.as_deref(),
            Some(format!("00-{trace}-{}-01", decode.span_context.span_id()).as_str()),
            "the job's traceparent names the worker.decode span"
        );
        let generate = by_name("generate");
        assert_eq!(generate.parent_span_id, decode.span_context.span_id());
        assert_eq!(generate.start_time, unix_ns(t0 + 1_000_000));
        assert_eq!(generate.end_time, unix_ns(t0 + 3_000_000));
        assert!(generate.attributes.contains(&KeyValue::new("window", 0i64)));
        assert_eq!(by_name("features").end_time, unix_ns(t0 + 1_000_000));
    }
}

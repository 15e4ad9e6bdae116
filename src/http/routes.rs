//! The handlers and [`configure`], which mounts them.
//!
//! A transcription request goes: fault header → an upload permit of the
//! node's [`Ingest`](crate::ingest::Ingest) (429 `too_many_uploads` at once
//! when none is free) → multipart form (streamed under the upload limit and
//! the minimum rate, large files spooled to disk; see [`super::form`]) →
//! streaming audio decode through [`Ingest::decode`](crate::ingest::Ingest::decode)
//! (on the blocking pool, one decode per core, shared with the async jobs,
//! under the decoded-PCM budget) → [`AsrNode::transcribe`] → rendering.
//! The decoded audio's share of the budget is held until the answer. Every
//! step's failure is an [`ApiError`]. If the client disconnects, actix drops
//! the handler future and with it the pending `transcribe` future, which
//! is how the node learns the reply is no longer wanted.
//!
//! Audio lost to damage below the refusal threshold of
//! [`crate::audio::MAX_SKIPPED_FRACTION`] (above it the upload is a 422
//! `damaged_audio`) is reported with the answer: `X-Audio-Skipped-Packets`
//! (packets that failed to decode) and `X-Audio-Gap-Seconds` (audio the
//! container skipped), each sent when above zero.
//! Capacity refusals (429, 503) are logged through [`super::refusals`],
//! which summarises floods.
//!
//! Each request runs in an `http.request` server span
//! ([`crate::http::trace::http_server_span`]: an incoming W3C `traceparent` is
//! its parent; fields `http.request.method`, `http.route`,
//! `http.response.status_code`, `job_id`, `outcome`, `trace_id`) that is
//! handed to the node as [`TranscriptionRequest::parent_span`], so the node's
//! `asr.job`, `queue.wait` and `worker.decode` spans become its descendants;
//! the upload's decode runs in an `audio.decode` child span. Every request is
//! counted in `asr_requests_total{outcome,status}`.

use super::form::parse_fault;
use crate::error_code::Code;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use tracing::{field, Instrument, Span};

use super::error::ApiError;
use super::form::{read_form, FormLimits};
use super::format::render;
use crate::api::{AsrError, NodeStatus, Task, Transcript, TranscriptionRequest};
use crate::audio;
use crate::config::NodeConfig;
use crate::ingest::{Ingest, IngestError, PcmLease};
use crate::node::AsrNode;

/// Route of the transcription endpoint.
pub const TRANSCRIPTIONS_ROUTE: &str = "/v1/audio/transcriptions";
/// Route of the translation endpoint (Whisper's translate task: speech in
/// any language to English text; same form and formats).
pub const TRANSLATIONS_ROUTE: &str = "/v1/audio/translations";
/// Route of the liveness probe.
pub const HEALTH_ROUTE: &str = "/health";
/// Route of the readiness probe.
pub const READY_ROUTE: &str = "/ready";
pub use super::probes::ADMISSION_QUERY;

/// Request header with which a load balancer asks for a full queue to be
/// answered 503 instead of 429 (`X-Busy-Status: 503`): HAProxy before 2.8
/// can retry a 503 on another node but not a 429. The answer keeps its body
/// (`queue_full`) and `Retry-After` and carries [`QUEUE_FULL_HEADER`], so
/// the balancer can turn the last refusal back into the node's 429 (see
/// `deploy/haproxy/haproxy.cfg`).
pub const BUSY_STATUS_HEADER: &str = "x-busy-status";
/// Response header on a full-queue refusal answered 503 because of
/// [`BUSY_STATUS_HEADER`].
pub const QUEUE_FULL_HEADER: &str = "x-queue-full";

/// Response header: packets of the upload that failed to decode and were
/// skipped (sent when above zero).
pub const SKIPPED_PACKETS_HEADER: &str = "x-audio-skipped-packets";
/// Response header: seconds of audio missing where the container skipped
/// damaged frames (sent when above zero).
pub const GAP_SECONDS_HEADER: &str = "x-audio-gap-seconds";

/// The damage headers of an accepted upload.
fn damage_headers(report: &audio::DecodeReport) -> Vec<(header::HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if report.skipped_packets > 0 {
        out.push((
            header::HeaderName::from_static(SKIPPED_PACKETS_HEADER),
            HeaderValue::from(report.skipped_packets),
        ));
    }
    if report.gap_secs > 0.0 {
        if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", report.gap_secs)) {
            out.push((header::HeaderName::from_static(GAP_SECONDS_HEADER), v));
        }
    }
    out
}

/// Mounts every route of the node on `cfg`: `POST /v1/audio/transcriptions`,
/// `GET /health`, `GET /ready`, `GET /metrics` (each also answers `HEAD`;
/// other methods get a JSON 405).
///
/// The handlers expect a `web::Data<AsrNode>` in the app data (see
/// [`app_data`]); without it they answer a JSON 500 and log an error.
/// The transcription handler streams the body itself under the limits of
/// [`AsrNode::config`] (read per request), so it needs no `PayloadConfig` or
/// `MultipartConfig` and an oversized upload is a JSON 413, not actix's
/// generic 400. Nothing app-wide is registered: a host `App` that calls
/// `.configure(whisper_node::http::configure)` behaves exactly like the
/// standalone server, and its own extractor settings neither change nor
/// affect these routes.
///
/// ```no_run
/// use actix_web::{App, HttpServer};
/// use whisper_node::{AsrNode, NodeConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // Start the actor tree once, outside the App factory: every HTTP worker
/// // shares the same node.
/// let node = AsrNode::start(NodeConfig::default()).await?;
/// let data = whisper_node::http::app_data(&node);
/// HttpServer::new(move || {
///     App::new()
///         .app_data(data.clone())
///         .configure(whisper_node::http::configure)
///     // .service(...) the host's own routes
/// })
/// .bind(("127.0.0.1", 8080))?
/// .run()
/// .await?;
/// # Ok(())
/// # }
/// ```
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Installs the Prometheus recorder early (once per process; a host's
    // own recorder installed before stays in place).
    crate::metrics::install();
    configure_for::<AsrNode>(cfg);
}

/// The `web::Data` that [`configure`]'s handlers look up; clone it into
/// every `App` (it shares one node).
pub fn app_data(node: &AsrNode) -> web::Data<AsrNode> {
    web::Data::new(node.clone())
}

/// What the handlers need from the node; [`AsrNode`] in production, a fake
/// in the handler tests.
pub(crate) trait Backend: 'static {
    /// The node's configuration.
    fn config(&self) -> &NodeConfig;
    /// The shared ingest limits.
    fn ingest(&self) -> &Ingest;
    /// A status snapshot.
    fn status(&self) -> NodeStatus;
    /// Whether a job submitted now would certainly be refused (see
    /// [`AsrNode::admission_precheck`]).
    fn admission_precheck(&self) -> Result<(), AsrError> {
        Ok(())
    }
    /// Submits a job and waits for its answer.
    fn transcribe(
        &self,
        req: TranscriptionRequest,
    ) -> impl Future<Output = Result<Transcript, AsrError>>;
}

impl Backend for AsrNode {
    fn config(&self) -> &NodeConfig {
        AsrNode::config(self)
    }

    fn ingest(&self) -> &Ingest {
        AsrNode::ingest(self)
    }

    fn status(&self) -> NodeStatus {
        AsrNode::status(self)
    }

    fn admission_precheck(&self) -> Result<(), AsrError> {
        AsrNode::admission_precheck(self)
    }

    fn transcribe(
        &self,
        req: TranscriptionRequest,
    ) -> impl Future<Output = Result<Transcript, AsrError>> {
        AsrNode::transcribe(self, req)
    }
}

/// [`configure`] for any backend.
pub(crate) fn configure_for<B: Backend>(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(TRANSCRIPTIONS_ROUTE)
            .wrap(actix_web::middleware::from_fn(busy_status))
            .route(web::post().to(transcriptions::<B>))
            .default_service(web::to(|| method_not_allowed("POST"))),
    )
    .service(
        web::resource(TRANSLATIONS_ROUTE)
            .wrap(actix_web::middleware::from_fn(busy_status))
            .route(web::post().to(translations::<B>))
            .default_service(web::to(|| method_not_allowed("POST"))),
    )
    .service(
        web::resource(super::models::MODELS_ROUTE)
            .route(web::get().to(super::models::list::<B>))
            .default_service(web::to(|| method_not_allowed("GET"))),
    )
    .service(
        web::resource(super::models::MODEL_ROUTE)
            .route(web::get().to(super::models::get::<B>))
            .default_service(web::to(|| method_not_allowed("GET"))),
    )
    .service(
        web::resource(HEALTH_ROUTE)
            .route(web::get().to(super::probes::health::<B>))
            .route(web::head().to(super::probes::health::<B>))
            .default_service(web::to(|| method_not_allowed("GET, HEAD"))),
    )
    .service(
        web::resource(READY_ROUTE)
            .route(web::get().to(super::probes::ready::<B>))
            .route(web::head().to(super::probes::ready::<B>))
            .default_service(web::to(|| method_not_allowed("GET, HEAD"))),
    );
    super::metrics::configure(cfg);
    // `/v1/jobs…`: live when the app data holds a `web::Data<JobService>`
    // (see `super::jobs::app_data`), 404 `jobs_disabled` otherwise.
    super::jobs::configure(cfg);
    // `GET /v1/realtime` (WebSocket) and the web page at `/`.
    super::realtime::configure(cfg);
    super::page::configure(cfg);
}

/// Honours [`BUSY_STATUS_HEADER`]: a 429 (queue full) becomes a 503 with
/// [`QUEUE_FULL_HEADER`], everything else passes unchanged. Streamed answers
/// are refused before their status line, so they are covered too.
async fn busy_status(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let as_503 = req
        .headers()
        .get(BUSY_STATUS_HEADER)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"503");
    let mut res = next.call(req).await?;
    if as_503 && res.status() == StatusCode::TOO_MANY_REQUESTS {
        *res.response_mut().status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        res.headers_mut().insert(
            header::HeaderName::from_static(QUEUE_FULL_HEADER),
            HeaderValue::from_static("true"),
        );
    }
    Ok(res)
}

async fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut res =
        ApiError::new(Code::MethodNotAllowed, "method not allowed on this route").error_response();
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

pub(crate) fn backend<B: Backend>(req: &HttpRequest) -> Result<web::Data<B>, ApiError> {
    req.app_data::<web::Data<B>>().cloned().ok_or_else(|| {
        tracing::error!(
            "web::Data<{}> is missing from the app data; add it with App::app_data",
            std::any::type_name::<B>()
        );
        ApiError::internal()
    })
}

/// Marks the request span when the handler future is dropped before it
/// finished: the client went away.
struct SpanGuard {
    span: Span,
    finished: bool,
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.span.record("outcome", "client_disconnected");
            crate::metrics::http_request_abandoned();
            tracing::info!(parent: &self.span, "client disconnected before the answer");
        }
    }
}

async fn transcriptions<B: Backend>(req: HttpRequest, body: web::Payload) -> HttpResponse {
    audio_endpoint::<B>(req, body, Task::Transcribe).await
}

async fn translations<B: Backend>(req: HttpRequest, body: web::Payload) -> HttpResponse {
    audio_endpoint::<B>(req, body, Task::Translate).await
}

/// Both audio endpoints: the request span, the answer, its log and count.
async fn audio_endpoint<B: Backend>(
    req: HttpRequest,
    body: web::Payload,
    task: Task,
) -> HttpResponse {
    let route = match task {
        Task::Transcribe => TRANSCRIPTIONS_ROUTE,
        Task::Translate => TRANSLATIONS_ROUTE,
    };
    let span = crate::http::trace::http_server_span(&req, route);
    let mut guard = SpanGuard {
        span: span.clone(),
        finished: false,
    };
    let started = Instant::now();
    let result = transcribe_request::<B>(&req, body, task, span.clone())
        .instrument(span.clone())
        .await;
    guard.finished = true;

    let (response, outcome) = match result {
        Ok(res) => (res, "ok"),
        Err(e) => (e.error_response(), e.code()),
    };
    let status = response.status().as_u16();
    crate::http::trace::finish_http_span(&span, status, outcome, started.elapsed());
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if super::refusals::is_refusal(status) {
        super::refusals::refused(route, status, outcome, elapsed_ms);
    } else if response.status().is_server_error() {
        tracing::warn!(parent: &span, status, outcome, elapsed_ms, "transcription request failed");
    } else {
        tracing::info!(parent: &span, status, outcome, elapsed_ms, "transcription request finished");
    }
    response
}

async fn transcribe_request<B: Backend>(
    req: &HttpRequest,
    body: web::Payload,
    task: Task,
    span: Span,
) -> Result<HttpResponse, ApiError> {
    let node = backend::<B>(req)?;
    let config = node.config();
    let fault = parse_fault(req.headers(), config.enable_fault_injection)?;
    let max_queue_wait = parse_max_queue_wait(req.headers())?;
    let ingest = node.ingest().clone();
    // Held while the body is read and decoded.
    let upload_permit = ingest.try_upload()?;
    let form = read_form(
        req.headers(),
        body,
        FormLimits::new(config.max_upload_bytes, ingest.upload_settings()),
    )
    .await?;
    if let Some(model) = &form.model {
        tracing::debug!(model = %model, "requested model maps to the loaded model");
    }
    let model = super::models::model_id(config);
    if task == Task::Translate && super::models::is_multilingual(&config.model_dir) == Some(false) {
        return Err(ApiError::new(
            Code::ModelCannotTranslate,
            format!(
                "the model '{model}' is English-only and cannot translate; \
                 translations need a multilingual model"
            ),
        )
        .with_param("model"));
    }

    // Full queue or shutting down: answer before the audio is decoded, so a
    // busy answer costs no CPU and stays fast however many clients upload
    // at once. (The server refuses most such requests before their body:
    // see `super::expect`; this catches a place taken during the upload.)
    node.admission_precheck().map_err(|e| {
        log_asr_error(&e);
        ApiError::from(e)
    })?;
    let mut options = form.decode_options(config.beam_size);
    options.task = task;
    options.text_only = form.answers_text_only();
    let hint = form.file_hint.clone();
    let file = Arc::new(form.file);
    let decode_span = tracing::info_span!(
        parent: &span,
        "audio.decode",
        bytes = file.len(),
        spooled = file.is_spooled(),
        audio_secs = field::Empty,
        skipped_packets = field::Empty
    );
    let (decoded, pcm) = ingest
        .decode(file, hint)
        .instrument(decode_span.clone())
        .await
        .map_err(|e| decode_error(&decode_span, e))?;
    decode_span.record("audio_secs", decoded.report.audio_secs);
    decode_span.record("skipped_packets", decoded.report.skipped_packets);
    drop(upload_permit);
    let mut damage = damage_headers(&decoded.report);
    if let Ok(v) = HeaderValue::from_str(&model) {
        damage.push((
            header::HeaderName::from_static(super::models::MODEL_HEADER),
            v,
        ));
    }

    // Built from `new` so fields added to the request later keep a default.
    let mut request = TranscriptionRequest::new(decoded.samples);
    request.options = options;
    request.parent_span = span.clone();
    request.fault = fault;
    request.max_queue_wait = max_queue_wait;
    if form.stream {
        return stream_answer::<B>(
            req,
            node,
            request,
            span,
            form.granularities.word,
            pcm,
            damage,
        )
        .await;
    }
    // If the client leaves while the job waits, stop waiting: the job's
    // reply port closes and the queue drops the job before decode.
    let answer = tokio::select! {
        answer = node.transcribe(request) => answer,
        () = super::disconnect::closed(req) => Err(AsrError::Cancelled),
    };
    // The decoded audio leaves the budget once the node has answered.
    drop(pcm);
    let transcript = answer.map_err(|e| {
        log_asr_error(&e);
        ApiError::from(e)
    })?;
    span.record("job_id", transcript.job_id as i64);

    let rendered = render(&transcript, form.response_format, form.granularities, task);
    let mut ok = HttpResponse::Ok();
    ok.content_type(rendered.content_type)
        .insert_header(("x-job-id", transcript.job_id))
        .insert_header(("x-queue-wait-ms", transcript.queue_wait.as_millis() as u64))
        .insert_header(("x-decode-ms", transcript.decode_time.as_millis() as u64))
        .insert_header(("x-worker-generation", transcript.worker_generation));
    if let Some(idle) = transcript.result.timings.idle_before_us {
        ok.insert_header(("x-engine-idle-us", idle));
    }
    for h in damage {
        ok.insert_header(h);
    }
    Ok(ok.body(rendered.body))
}

/// The answer to a failed decode, logged (capacity refusals aside, which
/// [`super::refusals`] logs).
fn decode_error(span: &Span, e: IngestError) -> ApiError {
    match e {
        IngestError::Audio(e) => {
            if !matches!(e, audio::AudioError::OverBudget { .. }) {
                tracing::info!(parent: span, code = e.code().name(), error = %e, "upload refused");
            }
            ApiError::from(e)
        }
        IngestError::Internal(e) => {
            tracing::error!(parent: span, error = %e, "audio decode task failed");
            ApiError::internal()
        }
    }
}

/// `stream=true` (see [`super::stream`]): waits for the first segments,
/// then answers 200 with the events; an error before them is an ordinary
/// error answer.
async fn stream_answer<B: Backend>(
    req: &HttpRequest,
    node: web::Data<B>,
    mut request: TranscriptionRequest,
    span: Span,
    words: bool,
    pcm: PcmLease,
    damage: Vec<(header::HeaderName, HeaderValue)>,
) -> Result<HttpResponse, ApiError> {
    let (tx, mut segments) = tokio::sync::mpsc::unbounded_channel();
    request.segments = Some(tx);
    let mut answer: super::stream::Answer = Box::pin(async move {
        // The decoded audio's budget is held until the node answers.
        let answer = node.transcribe(request).await;
        drop(pcm);
        answer
    });
    let mut events = match super::stream::start(req, &mut answer, &mut segments).await {
        super::stream::Start::Segments(first) => {
            super::stream::EventStream::new(req.clone(), span, words, answer, segments)
                .into_response(Some(first))
        }
        super::stream::Start::Ended(Ok(transcript)) => {
            let done: super::stream::Answer = Box::pin(std::future::ready(Ok(transcript)));
            super::stream::EventStream::new(req.clone(), span, words, done, segments)
                .into_response(None)
        }
        super::stream::Start::Ended(Err(e)) => {
            log_asr_error(&e);
            return Err(ApiError::from(e));
        }
    };
    for (name, value) in damage {
        events.headers_mut().insert(name, value);
    }
    Ok(events)
}

/// Logs the internal detail of a node error that the client will not see.
fn log_asr_error(e: &AsrError) {
    match e {
        AsrError::WorkerCrashed { .. }
        | AsrError::WorkerProtocol { .. }
        | AsrError::Unsendable { .. }
        | AsrError::Internal(_)
        | AsrError::Rejected(crate::api::WorkerError::Engine(_)) => {
            tracing::error!(error = %e, "transcription failed")
        }
        AsrError::DecodeTimeout { .. } | AsrError::WorkerUnresponsive { .. } => {
            tracing::warn!(error = %e, "transcription failed")
        }
        // Capacity refusals: summarised by `super::refusals`.
        AsrError::Busy { .. } | AsrError::Unavailable { .. } | AsrError::ShuttingDown => {
            tracing::debug!(error = %e, "transcription refused")
        }
        _ => tracing::info!(error = %e, "transcription refused"),
    }
}

/// The header with which a client shortens its own queue deadline.
pub const MAX_QUEUE_WAIT_HEADER: &str = "x-max-queue-wait-ms";

/// Reads `X-Max-Queue-Wait-Ms: <ms>`: the longest this request may wait for
/// the worker before it is answered 504 (the node caps it at
/// `--max-queue-wait-secs`); a 400 unless it is a whole number above 0.
pub fn parse_max_queue_wait(headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    let Some(value) = headers.get(MAX_QUEUE_WAIT_HEADER) else {
        return Ok(None);
    };
    match value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        Some(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
        _ => Err(ApiError::new(
            Code::InvalidMaxQueueWait,
            "X-Max-Queue-Wait-Ms must be a whole number of milliseconds above 0",
        )),
    }
}

#[cfg(test)]
mod tests;

//! Prometheus metrics: the names, the recorder, and one small function per
//! thing worth counting, so the actors record with one-line calls.
//!
//! Served at `GET /metrics` in the Prometheus text format (see
//! [`crate::http::metrics`]). Recording goes through the `metrics` facade;
//! [`install`] installs a `metrics-exporter-prometheus` recorder as the
//! process's global recorder, once. When the node is embedded in a host that
//! installed its own recorder first, [`install`] does not panic or replace
//! it: the node's metrics flow into the host's recorder (and whatever the host
//! exports), and the node's `/metrics` answers 404 `metrics_unavailable`.
//! A host that wants the node's Prometheus recorder calls [`install`] before
//! installing anything else (mounting the routes with
//! [`crate::http::configure`] does it).
//!
//! The metrics are process-wide: two nodes in one process add up their
//! counters and overwrite each other's gauges.
//!
//! | metric | type | meaning |
//! | --- | --- | --- |
//! | `asr_queue_depth` | gauge | jobs waiting: in the queue, plus the one staged in the worker |
//! | `asr_queue_capacity` | gauge | jobs the queue admits |
//! | `asr_queue_wait_seconds` | histogram | admission → dispatch, per dispatched job (avg = `_sum/_count`, p95 with `histogram_quantile`) |
//! | `asr_queue_timeouts_total` | counter | jobs that waited past their deadline |
//! | `asr_busy_rejections_total` | counter | jobs refused because the queue was full (429) |
//! | `asr_in_flight_jobs` | gauge | jobs being decoded (every job of a batch in flight, over all workers) |
//! | `asr_decode_seconds` | histogram | dispatch → answer, per successful decode |
//! | `asr_real_time_factor` | histogram | decode seconds per audio second, per successful decode |
//! | `asr_engine_idle_seconds` | histogram | measured inside the worker: how long the engine sat without work before each job (end of its previous job to the start of this one); under sustained load, the hand-over gap between jobs |
//! | `asr_audio_seconds_total` | counter | audio seconds transcribed successfully (whole seconds; the remainder carries over) |
//! | `asr_decode_failures_total{reason}` | counter | decodes that failed: `worker_crashed`, `decode_timeout`, `worker_unresponsive` (heartbeat timeout), `worker_protocol` (answer for the wrong job), `unsendable`, `rejected`, `shutting_down` (rate with `rate()`) |
//! | `asr_jobs_total{outcome}` | counter | jobs answered by the node, by outcome (`ok` or the error code: `queue_full`, `worker_crashed`, …, as in the HTTP answer) |
//! | `asr_worker_restarts_total` | counter | worker restarts (all workers) |
//! | `asr_worker_generation` | gauge | generation of the current (first) worker (0, +1 per restart) |
//! | `asr_worker_state{state}` | gauge | 1 for the worker pool's state (`starting`, `ready`, `busy`, `unresponsive`, `restarting`, `stopped`; with several workers the most useful state of any, as in `/health`), 0 for the others |
//! | `asr_worker_pool_state{worker,state}` | gauge | per worker of the pool (`worker` is its id, `0`..): 1 for its current state, 0 for the others |
//! | `asr_worker_pool_generation{worker}` | gauge | per worker: generation of its current process |
//! | `asr_worker_pool_restarts_total{worker}` | counter | per worker: its restarts |
//! | `asr_workers_accepting` | gauge | workers that accept work now (loaded: ready or busy) |
//! | `asr_ready` | gauge | 1 when a request sent now would be admitted |
//! | `asr_requests_total{outcome,status}` | counter | transcription HTTP requests by outcome code (`ok` or the error `code`) and status; `client_disconnected` with status `499` when the client left first |
//! | `asr_request_duration_seconds` | histogram | transcription HTTP request latency |
//! | `asr_auth_refusals_total{code}` | counter | requests refused for their API key: `missing_api_key`, `invalid_api_key` |
//!
//! Every counter is exported from the first scrape, at zero, with each
//! label value it can take that is known up front ([`JOB_OUTCOMES`],
//! [`DECODE_FAILURE_REASONS`], every error code for `asr_requests_total`),
//! so a `rate()` or `increase()` alert sees the series before its first
//! event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::api::{AsrError, Transcript, WorkerState};
use crate::error_code::Code;

/// Jobs waiting in the queue (gauge).
pub const QUEUE_DEPTH: &str = "asr_queue_depth";
/// Queue capacity in jobs (gauge).
pub const QUEUE_CAPACITY: &str = "asr_queue_capacity";
/// Time from admission to dispatch (histogram, seconds).
pub const QUEUE_WAIT_SECONDS: &str = "asr_queue_wait_seconds";
/// Jobs that waited past their deadline (counter).
pub const QUEUE_TIMEOUTS_TOTAL: &str = "asr_queue_timeouts_total";
/// Jobs refused because the queue was full (counter).
pub const BUSY_REJECTIONS_TOTAL: &str = "asr_busy_rejections_total";
/// Jobs being decoded (gauge).
pub const IN_FLIGHT_JOBS: &str = "asr_in_flight_jobs";
/// Decode time of successful decodes (histogram, seconds).
pub const DECODE_SECONDS: &str = "asr_decode_seconds";
/// Decode seconds per audio second (histogram).
pub const REAL_TIME_FACTOR: &str = "asr_real_time_factor";
/// Engine idle time before each job, measured in the worker (histogram,
/// seconds).
pub const ENGINE_IDLE_SECONDS: &str = "asr_engine_idle_seconds";
/// Audio seconds transcribed (counter).
pub const AUDIO_SECONDS_TOTAL: &str = "asr_audio_seconds_total";
/// Failed decodes by reason (counter).
pub const DECODE_FAILURES_TOTAL: &str = "asr_decode_failures_total";
/// Jobs answered by outcome (counter).
pub const JOBS_TOTAL: &str = "asr_jobs_total";
/// Worker restarts (counter).
pub const WORKER_RESTARTS_TOTAL: &str = "asr_worker_restarts_total";
/// Current worker generation (gauge).
pub const WORKER_GENERATION: &str = "asr_worker_generation";
/// Worker state, one series per state (gauge, 0 or 1).
pub const WORKER_STATE: &str = "asr_worker_state";
/// Per-worker state, one series per worker and state (gauge, 0 or 1).
pub const WORKER_POOL_STATE: &str = "asr_worker_pool_state";
/// Per-worker generation (gauge).
pub const WORKER_POOL_GENERATION: &str = "asr_worker_pool_generation";
/// Per-worker restarts (counter).
pub const WORKER_POOL_RESTARTS_TOTAL: &str = "asr_worker_pool_restarts_total";
/// Workers accepting work (gauge).
pub const WORKERS_ACCEPTING: &str = "asr_workers_accepting";
/// Readiness (gauge, 0 or 1).
pub const READY: &str = "asr_ready";
/// Transcription HTTP requests by outcome and status (counter).
pub const REQUESTS_TOTAL: &str = "asr_requests_total";
/// Transcription HTTP request latency (histogram, seconds).
pub const REQUEST_DURATION_SECONDS: &str = "asr_request_duration_seconds";

/// Requests refused for their API key, by code (counter).
pub const AUTH_REFUSALS_TOTAL: &str = "asr_auth_refusals_total";

/// The outcomes of a job answered by the node besides `ok` (the codes of
/// [`AsrError::code`]), exported at zero from the start.
pub const JOB_OUTCOMES: &[Code] = &[
    Code::QueueFull,
    Code::WorkerUnavailable,
    Code::ShuttingDown,
    Code::QueueTimeout,
    Code::DecodeTimeout,
    Code::WorkerUnresponsive,
    Code::WorkerProtocolError,
    Code::JobUnsendable,
    Code::WorkerCrashed,
    Code::InputQuarantined,
    Code::InvalidOptions,
    Code::InvalidAudio,
    Code::EngineError,
    Code::Cancelled,
    Code::InternalError,
];

/// The reasons of a failed decode (`asr_decode_failures_total`): the
/// codes of the errors a decode in the worker can end with.
pub const DECODE_FAILURE_REASONS: &[Code] = &[
    Code::WorkerCrashed,
    Code::DecodeTimeout,
    Code::WorkerUnresponsive,
    Code::WorkerProtocolError,
    Code::JobUnsendable,
    Code::InputQuarantined,
    Code::InvalidOptions,
    Code::InvalidAudio,
    Code::EngineError,
    Code::ShuttingDown,
    Code::Cancelled,
    Code::InternalError,
];

/// Bucket bounds (seconds) of the queue-wait histogram.
pub const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Bucket bounds (seconds) of the decode and request histograms.
pub const DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Bucket bounds (seconds) of the engine-idle histogram: fine below 1 ms,
/// where the hand-over gap of back-to-back jobs lies.
pub const ENGINE_IDLE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 10.0, 60.0,
];
/// Bucket bounds of the real-time-factor histogram.
pub const RTF_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0,
];

const WORKER_STATES: [(WorkerState, &str); 6] = [
    (WorkerState::Starting, "starting"),
    (WorkerState::Ready, "ready"),
    (WorkerState::Busy, "busy"),
    (WorkerState::Unresponsive, "unresponsive"),
    (WorkerState::Restarting, "restarting"),
    (WorkerState::Stopped, "stopped"),
];

/// How often histograms are drained when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Audio transcribed, microseconds (exact; the counter shows whole seconds).
static AUDIO_US: AtomicU64 = AtomicU64::new(0);

fn builder() -> PrometheusBuilder {
    let b = PrometheusBuilder::new();
    let with = |b: PrometheusBuilder, name: &str, buckets: &[f64]| {
        b.set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)
            .expect("bucket lists are not empty")
    };
    let b = with(b, QUEUE_WAIT_SECONDS, QUEUE_WAIT_BUCKETS);
    let b = with(b, DECODE_SECONDS, DURATION_BUCKETS);
    let b = with(b, REQUEST_DURATION_SECONDS, DURATION_BUCKETS);
    let b = with(b, ENGINE_IDLE_SECONDS, ENGINE_IDLE_BUCKETS);
    let b = with(b, REALTIME_FINAL_LATENCY_SECONDS, REALTIME_LATENCY_BUCKETS);
    with(b, REAL_TIME_FACTOR, RTF_BUCKETS)
}

/// Installs the node's Prometheus recorder as the global `metrics` recorder
/// if this is the first call in the process, and returns its handle; later
/// calls return the same handle. Returns `None` (after one warning) when the
/// host installed another recorder first. Never panics.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            let ours = match metrics::set_global_recorder(recorder) {
                Ok(()) => true,
                Err(_) => {
                    tracing::warn!("a metrics recorder is already installed; the node records into it and /metrics is off");
                    false
                }
            };
            describe();
            if ours {
                let h = handle.clone();
                let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    h.run_upkeep();
                });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "no metrics upkeep thread; histograms drain at scrape time only");
                }
            }
            ours.then_some(handle)
        })
        .as_ref()
}

/// The node's recorder handle, if [`install`] installed it.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get().and_then(Option::as_ref)
}

/// Describes every metric and makes each appear (at zero) in the first
/// scrape, before anything happened.
fn describe() {
    describe_gauge!(QUEUE_DEPTH, "Jobs waiting in the queue.");
    describe_gauge!(
        QUEUE_CAPACITY,
        "Jobs the queue admits before answering busy."
    );
    describe_histogram!(
        QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        "Time a dispatched job waited from admission to dispatch."
    );
    describe_counter!(
        QUEUE_TIMEOUTS_TOTAL,
        "Jobs that waited in the queue past their deadline (504)."
    );
    describe_counter!(
        BUSY_REJECTIONS_TOTAL,
        "Jobs refused because the queue was full (429)."
    );
    describe_gauge!(IN_FLIGHT_JOBS, "Jobs being decoded by the worker.");
    describe_histogram!(
        DECODE_SECONDS,
        Unit::Seconds,
        "Time from dispatch to the worker's answer, successful decodes."
    );
    describe_histogram!(
        REAL_TIME_FACTOR,
        "Decode seconds per audio second, successful decodes."
    );
    describe_histogram!(
        ENGINE_IDLE_SECONDS,
        Unit::Seconds,
        "Time the engine sat without work before each job, measured in the worker."
    );
    describe_counter!(
        AUDIO_SECONDS_TOTAL,
        Unit::Seconds,
        "Audio seconds transcribed successfully."
    );
    describe_counter!(DECODE_FAILURES_TOTAL, "Decodes that failed, by reason.");
    describe_counter!(JOBS_TOTAL, "Jobs answered by the node, by outcome.");
    describe_counter!(WORKER_RESTARTS_TOTAL, "Worker process restarts.");
    describe_gauge!(
        WORKER_GENERATION,
        "Generation of the current worker process (restart count)."
    );
    describe_gauge!(
        WORKER_STATE,
        "1 for the worker's current state, 0 for the others."
    );
    describe_gauge!(
        WORKER_POOL_STATE,
        "Per worker: 1 for its current state, 0 for the others."
    );
    describe_gauge!(
        WORKER_POOL_GENERATION,
        "Per worker: generation of its current process."
    );
    describe_counter!(WORKER_POOL_RESTARTS_TOTAL, "Per worker: its restarts.");
    describe_gauge!(WORKERS_ACCEPTING, "Workers that accept work now.");
    describe_gauge!(READY, "1 when a request sent now would be admitted.");
    describe_counter!(
        REQUESTS_TOTAL,
        "Transcription HTTP requests by outcome and status code."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Transcription HTTP request latency."
    );
    describe_counter!(
        AUTH_REFUSALS_TOTAL,
        "Requests refused for their API key, by code."
    );

    counter!(JOBS_TOTAL, "outcome" => "ok").increment(0);
    for code in JOB_OUTCOMES {
        counter!(JOBS_TOTAL, "outcome" => code.name()).increment(0);
    }
    for code in DECODE_FAILURE_REASONS {
        counter!(DECODE_FAILURES_TOTAL, "reason" => code.name()).increment(0);
    }
    counter!(REQUESTS_TOTAL, "outcome" => "ok", "status" => "200").increment(0);
    counter!(REQUESTS_TOTAL, "outcome" => "client_disconnected", "status" => "499").increment(0);
    for code in Code::ALL {
        counter!(REQUESTS_TOTAL, "outcome" => code.name(), "status" => status_label(code.status()))
            .increment(0);
    }
    for code in [Code::MissingApiKey, Code::InvalidApiKey] {
        counter!(AUTH_REFUSALS_TOTAL, "code" => code.name()).increment(0);
    }
    for name in [
        QUEUE_TIMEOUTS_TOTAL,
        BUSY_REJECTIONS_TOTAL,
        AUDIO_SECONDS_TOTAL,
        WORKER_RESTARTS_TOTAL,
    ] {
        counter!(name).increment(0);
    }
    for name in [
        QUEUE_WAIT_SECONDS,
        DECODE_SECONDS,
        REAL_TIME_FACTOR,
        REQUEST_DURATION_SECONDS,
        ENGINE_IDLE_SECONDS,
    ] {
        let _ = histogram!(name);
    }
    gauge!(QUEUE_DEPTH).set(0.0);
    gauge!(IN_FLIGHT_JOBS).set(0.0);
    describe_realtime();
}

/// The stable outcome label of a job's answer: `ok`, or [`error_kind`].
pub fn outcome(answer: &Result<Transcript, AsrError>) -> &'static str {
    match answer {
        Ok(_) => "ok",
        Err(e) => error_kind(e),
    }
}

/// The stable label of a node error: its code's name (`queue_full`,
/// `worker_crashed`, …; see [`crate::error_code`]), the same string the
/// HTTP answer carries, so `asr_jobs_total` and `asr_requests_total` name
/// an event alike.
pub fn error_kind(e: &AsrError) -> &'static str {
    e.code().name()
}

/// A job was answered with `outcome` (see [`outcome`]).
pub fn job_finished(outcome: &'static str) {
    counter!(JOBS_TOTAL, "outcome" => outcome).increment(1);
}

/// A job left the queue for the worker after waiting `wait`.
pub fn job_dispatched(wait: Duration) {
    histogram!(QUEUE_WAIT_SECONDS).record(wait.as_secs_f64());
}

/// A job was refused because the queue was full.
pub fn busy_rejection() {
    counter!(BUSY_REJECTIONS_TOTAL).increment(1);
}

/// A job waited past its queue deadline.
pub fn queue_timeout() {
    counter!(QUEUE_TIMEOUTS_TOTAL).increment(1);
}

/// A decode succeeded.
pub fn decode_succeeded(audio_secs: f64, decode_time: Duration, rtf: Option<f64>) {
    // Counters are integers: keep the exact total in microseconds and publish
    // whole seconds, so rounding never accumulates.
    let us = (audio_secs.max(0.0) * 1e6) as u64;
    let total = AUDIO_US.fetch_add(us, Ordering::Relaxed) + us;
    counter!(AUDIO_SECONDS_TOTAL).absolute(total / 1_000_000);
    histogram!(DECODE_SECONDS).record(decode_time.as_secs_f64());
    if let Some(rtf) = rtf.filter(|r| r.is_finite()) {
        histogram!(REAL_TIME_FACTOR).record(rtf);
    }
}

/// The worker reported how long its engine waited before a job.
pub fn engine_idle(idle: Duration) {
    histogram!(ENGINE_IDLE_SECONDS).record(idle.as_secs_f64());
}

/// A decode failed for `reason`.
pub fn decode_failed(reason: &'static str) {
    counter!(DECODE_FAILURES_TOTAL, "reason" => reason).increment(1);
}

/// A request was refused for its API key (`code` is `missing_api_key` or
/// `invalid_api_key`).
pub fn auth_refused(code: Code) {
    counter!(AUTH_REFUSALS_TOTAL, "code" => code.name()).increment(1);
}

/// The `worker` label of worker `id` (the ids of a pool, `0`..`MAX_WORKERS`,
/// are made once).
fn worker_label(id: usize) -> &'static str {
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    let labels = LABELS.get_or_init(|| {
        (0..crate::workers::MAX_WORKERS)
            .map(|i| i.to_string())
            .collect()
    });
    labels.get(id).map_or("other", String::as_str)
}

/// The supervisor restarted worker `id`.
pub fn worker_restarted(id: usize) {
    counter!(WORKER_RESTARTS_TOTAL).increment(1);
    counter!(WORKER_POOL_RESTARTS_TOTAL, "worker" => worker_label(id)).increment(1);
}

/// Publishes worker `id`'s gauges (called on every state change, for each
/// worker; its restart counter appears at zero with its first call).
pub fn worker_gauges(id: usize, state: WorkerState, generation: u64) {
    let worker = worker_label(id);
    for (s, label) in WORKER_STATES {
        gauge!(WORKER_POOL_STATE, "worker" => worker, "state" => label).set(if s == state {
            1.0
        } else {
            0.0
        });
    }
    gauge!(WORKER_POOL_GENERATION, "worker" => worker).set(generation as f64);
    counter!(WORKER_POOL_RESTARTS_TOTAL, "worker" => worker).increment(0);
}

/// The node's published state, as gauges.
#[derive(Debug, Clone, Copy)]
pub struct NodeGauges {
    /// Worker lifecycle state.
    pub worker_state: WorkerState,
    /// Worker generation.
    pub worker_generation: u64,
    /// Jobs being decoded.
    pub in_flight: usize,
    /// Jobs waiting.
    pub queue_depth: usize,
    /// Queue capacity.
    pub queue_capacity: usize,
    /// Whether a request would be admitted now.
    pub ready: bool,
    /// Workers accepting work.
    pub workers_accepting: usize,
}

/// Publishes the node's state gauges (called on every state change).
pub fn node_gauges(g: NodeGauges) {
    for (state, label) in WORKER_STATES {
        gauge!(WORKER_STATE, "state" => label).set(if state == g.worker_state { 1.0 } else { 0.0 });
    }
    gauge!(WORKER_GENERATION).set(g.worker_generation as f64);
    gauge!(IN_FLIGHT_JOBS).set(g.in_flight as f64);
    gauge!(QUEUE_DEPTH).set(g.queue_depth as f64);
    gauge!(QUEUE_CAPACITY).set(g.queue_capacity as f64);
    gauge!(READY).set(if g.ready { 1.0 } else { 0.0 });
    gauge!(WORKERS_ACCEPTING).set(g.workers_accepting as f64);
}

/// A transcription HTTP request ended with `outcome` and `status` after
/// `elapsed`.
pub fn http_request(outcome: &'static str, status: u16, elapsed: Duration) {
    counter!(REQUESTS_TOTAL, "outcome" => outcome, "status" => status_label(status)).increment(1);
    histogram!(REQUEST_DURATION_SECONDS).record(elapsed.as_secs_f64());
}

/// A transcription HTTP request whose client left before the answer
/// (counted as outcome `client_disconnected`, status `499`).
pub fn http_request_abandoned() {
    counter!(REQUESTS_TOTAL, "outcome" => "client_disconnected", "status" => "499").increment(1);
}

/// Status codes as static labels (no allocation per request).
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        202 => "202",
        400 => "400",
        401 => "401",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        413 => "413",
        415 => "415",
        421 => "421",
        422 => "422",
        429 => "429",
        499 => "499",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

// --- realtime sessions (`/v1/realtime`, src/realtime) ----------------------

/// Open realtime sessions.
pub const REALTIME_SESSIONS_ACTIVE: &str = "asr_realtime_sessions_active";
/// Realtime sessions by outcome (`opened`, `refused`).
pub const REALTIME_SESSIONS_TOTAL: &str = "asr_realtime_sessions_total";
/// Committed realtime utterances by outcome (`ok`, or an error code).
pub const REALTIME_UTTERANCES_TOTAL: &str = "asr_realtime_utterances_total";
/// End of speech (`speech_stopped`, or the commit) to the `completed`
/// event, seconds.
pub const REALTIME_FINAL_LATENCY_SECONDS: &str = "asr_realtime_final_latency_seconds";
/// Buckets of [`REALTIME_FINAL_LATENCY_SECONDS`].
pub const REALTIME_LATENCY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
];

fn describe_realtime() {
    describe_gauge!(REALTIME_SESSIONS_ACTIVE, "Open realtime sessions.");
    describe_counter!(
        REALTIME_SESSIONS_TOTAL,
        "Realtime session upgrades by outcome (opened, refused)."
    );
    describe_counter!(
        REALTIME_UTTERANCES_TOTAL,
        "Committed realtime utterances by outcome."
    );
    describe_histogram!(
        REALTIME_FINAL_LATENCY_SECONDS,
        Unit::Seconds,
        "End of speech to final transcript of a realtime utterance."
    );
    gauge!(REALTIME_SESSIONS_ACTIVE).set(0.0);
    let _ = histogram!(REALTIME_FINAL_LATENCY_SECONDS);
}

/// The number of open realtime sessions changed.
pub fn realtime_sessions_active(n: usize) {
    gauge!(REALTIME_SESSIONS_ACTIVE).set(n as f64);
}

/// A realtime upgrade was `opened` or `refused`.
pub fn realtime_session(outcome: &'static str) {
    counter!(REALTIME_SESSIONS_TOTAL, "outcome" => outcome).increment(1);
}

/// A committed utterance ended with `outcome`; `latency` is end of speech
/// to final transcript, for the ones that completed.
pub fn realtime_utterance(outcome: &'static str, latency: Option<Duration>) {
    counter!(REALTIME_UTTERANCES_TOTAL, "outcome" => outcome).increment(1);
    if let Some(l) = latency {
        histogram!(REALTIME_FINAL_LATENCY_SECONDS).record(l.as_secs_f64());
    }
}

#[cfg(test)]
mod tests;

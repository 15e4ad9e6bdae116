//! The HTTP face of the node (actix-web), compatible with OpenAI's audio
//! transcription API.
//!
//! | method | route | answer |
//! | --- | --- | --- |
//! | `POST` | `/v1/audio/transcriptions` | multipart form (see [`form`]) → transcript in the requested `response_format` (see [`format`]) or, with `stream=true`, Server-Sent Events (see [`stream`]), with `X-Job-Id`, `X-Queue-Wait-Ms`, `X-Decode-Ms`, `X-Worker-Generation` and (after the worker's first job) `X-Engine-Idle-Us` (how long the engine waited for this job since its previous one) headers; errors as [`ApiError`] |
//! | `POST` | `/v1/audio/translations` | the same form and answers, with Whisper's translate task (speech in any language → English text); 400 `model_cannot_translate` on an English-only model |
//! | `GET` | `/v1/models`, `/v1/models/{id}` | the loaded model (its directory's name) and the alias `whisper-1`, in OpenAI's shape (see [`models`]) |
//! | `GET`, `HEAD` | `/health` | 200 while the process is alive: the [`NodeStatus`](crate::api::NodeStatus) JSON plus `"status": "ok"`, `"ingest"` ([`IngestStats`](crate::ingest::IngestStats): uploads in progress, decode budget in use) and `"async_jobs"` (`{"state": "ok" \| "failing" \| "unavailable" \| "disabled", …}`, the job store) |
//! | `GET`, `HEAD` | `/ready` | 200 with `"status": "ready"` when the node takes work (worker loaded, not draining; a busy node is ready: work queues), else 503 with `Retry-After: 1` and `"status": "not_ready"` or `"shutting_down"`; `/ready?admission=1` is also 503 `"status": "busy"` while the queue is full (a transcription sent now would get 429), for load balancers |
//! | `GET`, `HEAD` | `/metrics` | the node's metrics in the Prometheus text format (see [`crate::metrics`]) |
//! | `POST`, `GET`, `DELETE` | `/v1/jobs`, `/v1/jobs/{id}`, `/v1/jobs/{id}/result` | async jobs (see [`jobs`]); live when the app data also holds a `web::Data<JobService>` (from [`jobs::app_data`]) |
//!
//! Every route answers 421 `host_not_allowed` to a `Host` outside
//! `--allowed-hosts` when the app is wrapped with [`host::check`] (the
//! binary does). Other methods on these routes get a JSON 405. Test-only request header:
//! `X-Fault-Inject: crash | hang | slow:<ms> | out-of-order | wrong-id`, honoured only when the node
//! runs with `enable_fault_injection` and ignored otherwise.
//!
//! Mount the routes with [`configure`]; it needs a `web::Data<AsrNode>`
//! (from [`app_data`]) in the app data.
//!
//! # Layout
//! - [`routes`]: handlers, [`configure`], tracing span per request.
//! - [`form`]: streaming multipart parsing under the upload limit, and
//!   form fields → decode options.
//! - [`format`]: `json`, `text`, `srt`, `vtt`, `verbose_json` rendering.
//! - [`stream`]: `stream=true`, the transcript as Server-Sent Events.
//! - [`error`]: [`ApiError`] and the status-code table.
//! - [`language`]: Whisper's languages, codes and names.
//! - [`metrics`]: `GET /metrics` (Prometheus text format).
//! - [`models`]: `GET /v1/models`, the model's id and languages.
//! - [`probes`]: `GET /health`, `GET /ready`.
//! - [`host`]: the `Host` check (`--allowed-hosts`, DNS rebinding).
//! - [`refusals`]: rate-limited logging of capacity refusals.
//! - [`access`]: `--api-keys-file`, `--cors-origins` and the per-key limit,
//!   built once ([`access::Access`]); [`auth`]: the key check middleware
//!   and [`auth::ClientId`].
//! - [`expect`]: refusing a transcription before its body is read
//!   (`Expect: 100-continue`, `--refused-body`).
//! - [`fairness`]: per-client fair share of the node ([`fairness::ClientId`]).

pub mod access;
pub mod auth;
pub mod disconnect;
pub mod error;
pub mod expect;
pub mod fairness;
pub mod form;
pub mod format;
pub mod host;
pub mod jobs;
/// Whisper's languages (a domain module; re-exported for the HTTP layer).
pub use crate::language;
pub mod metrics;
pub mod models;
pub mod page;
pub mod probes;
pub mod realtime;
pub mod refusals;
pub mod routes;
pub mod stream;
pub mod trace;

pub use disconnect::on_connect;
pub use error::ApiError;
pub use form::{FormLimits, TranscriptionForm, FAULT_HEADER};
pub use format::{Granularities, ResponseFormat};
pub use metrics::METRICS_ROUTE;
pub use routes::{
    app_data, configure, HEALTH_ROUTE, MAX_QUEUE_WAIT_HEADER, READY_ROUTE, TRANSCRIPTIONS_ROUTE,
    TRANSLATIONS_ROUTE,
};

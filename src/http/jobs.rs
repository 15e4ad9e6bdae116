//! The async job endpoints (see [`crate::jobs`] for the protocol, the
//! durability guarantees and the scheduling policy).
//!
//! | method | route | answer |
//! | --- | --- | --- |
//! | `POST` | `/v1/jobs` | the multipart form of `/v1/audio/transcriptions` (see [`super::form`]) → `202 Accepted`, `Location: /v1/jobs/{id}`, the job's JSON (status `queued`), once the upload and the record are durable |
//! | `GET` | `/v1/jobs` | `{"object": "list", "data": [jobs, newest first, without results], "counts": {...}}`; `?status=queued\|running\|done\|failed\|cancelled`, `?limit=` (default 100, at most 1000) |
//! | `GET` | `/v1/jobs/{id}` | the job's JSON; with `?format=json\|text\|srt\|vtt\|verbose_json` the result rendered in that format instead (409 until done) |
//! | `GET` | `/v1/jobs/{id}/result` | the result in the job's own `response_format` (or `?format=`); 409 `job_not_done` until done |
//! | `DELETE` | `/v1/jobs/{id}` | queued or running: cancelled at once, `200` with the job; finished (done, failed, cancelled): deleted with its result, `204`; a later `GET` is 404 |
//!
//! The job's JSON: `id`, `object` (`"transcription.job"`), `status`,
//! `progress` (`decoded_secs`, `total_secs`), `queue_position` (while
//! queued, 1 = next), `created_at`, `started_at`, `finished_at`,
//! `expires_at` (Unix seconds; `expires_at` is when a finished job is
//! purged), `response_format`, `error` (`{code, message}` when failed),
//! `result` (when done: the `verbose_json` body of the synchronous endpoint,
//! with `words` when `timestamp_granularities[]=word` was asked for).
//!
//! Errors are [`ApiError`] JSON bodies: 400/413/415 for a bad form or
//! upload (exactly as the synchronous endpoint), 429 `job_backlog_full`
//! with `Retry-After` when `max_pending` jobs are queued or running, 503
//! `store_unavailable` (with `Retry-After`) when the job could not be made
//! durable, 503 `shutting_down`, 404 `job_not_found` for an unknown or
//! malformed id, 404 `jobs_disabled` when the node runs without a
//! [`JobService`] (no `web::Data<JobService>` in the app data), 503
//! `store_unavailable` on every job route when the service could not start
//! (its data folder is unwritable, locked or corrupt: the app data holds a
//! [`JobsUnavailable`] instead; synchronous transcription is unaffected).
//! Uploads take a permit of the node's shared
//! [`Ingest`](crate::ingest::Ingest) like the synchronous endpoint (429
//! `too_many_uploads`) and are validated by a counting decode that holds no
//! PCM.
//!
//! Polls are answered from memory: no handler here waits on the store or
//! the node, except `POST`, which waits for its own durable write.

use crate::error_code::Code;
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use tracing::Instrument;

use super::error::ApiError;
use super::form::parse_fault;
use super::form::{read_form, FormLimits};
use super::format::{render, ResponseFormat};
use crate::api::{Task, Transcript};
use crate::jobs::{CancelOutcome, JobId, JobStatus, JobSubmission, JobView, Jobs, SubmitError};

/// Route of job submission and listing.
pub const JOBS_ROUTE: &str = "/v1/jobs";
/// Route of one job.
pub const JOB_ROUTE: &str = "/v1/jobs/{id}";
/// Route of one job's rendered result.
pub const JOB_RESULT_ROUTE: &str = "/v1/jobs/{id}/result";

/// Most jobs in one listing.
const MAX_LIST: usize = 1000;

/// The `web::Data` the job handlers look up; clone it into every `App`
/// (next to [`super::app_data`]) to turn the job endpoints on.
pub fn app_data(jobs: &Jobs) -> web::Data<Jobs> {
    web::Data::new(jobs.clone())
}

/// App data saying that the job service was configured but could not
/// start: the job routes answer 503 `store_unavailable` with this reason's
/// gist, and `/health` and `/ready` report it.
#[derive(Debug, Clone)]
pub struct JobsUnavailable {
    /// Why (logged at start-up; shown in `/health`).
    pub reason: String,
}

/// `Retry-After` of the job routes while the job service is unavailable.
const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Mounts the job routes (called by [`super::configure`]).
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(JOBS_ROUTE)
            .route(web::post().to(create))
            .route(web::get().to(list))
            .default_service(web::to(|| method_not_allowed("GET, POST"))),
    )
    .service(
        web::resource(JOB_RESULT_ROUTE)
            .route(web::get().to(result))
            .default_service(web::to(|| method_not_allowed("GET"))),
    )
    .service(
        web::resource(JOB_ROUTE)
            .route(web::get().to(get))
            .route(web::delete().to(delete))
            .default_service(web::to(|| method_not_allowed("GET, DELETE"))),
    );
}

async fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut res =
        ApiError::new(Code::MethodNotAllowed, "method not allowed on this route").error_response();
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

fn service(req: &HttpRequest) -> Result<web::Data<Jobs>, ApiError> {
    if let Some(jobs) = req.app_data::<web::Data<Jobs>>() {
        return Ok(jobs.clone());
    }
    if req.app_data::<web::Data<JobsUnavailable>>().is_some() {
        return Err(ApiError::new(
            Code::StoreUnavailable,
            "async jobs are unavailable: the job store could not be opened \
             (synchronous transcription still works)",
        )
        .with_retry_after(UNAVAILABLE_RETRY_AFTER));
    }
    Err(ApiError::new(
        Code::JobsDisabled,
        "async jobs are not enabled on this server",
    ))
}

fn not_found() -> ApiError {
    ApiError::new(Code::JobNotFound, "no such job")
}

fn job_id(req: &HttpRequest) -> Result<JobId, ApiError> {
    req.match_info()
        .get("id")
        .and_then(JobId::parse)
        .ok_or_else(not_found)
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::BacklogFull {
                pending,
                retry_after,
            } => ApiError::new(
                Code::JobBacklogFull,
                format!("{pending} async jobs are queued or running; retry later"),
            )
            .with_retry_after(retry_after),
            SubmitError::UploadTooLarge { limit } => ApiError::upload_too_large(limit),
            SubmitError::Audio(e) => ApiError::from(e),
            SubmitError::Store(_) => ApiError::new(
                Code::StoreUnavailable,
                "the job could not be stored; retry later",
            )
            .with_retry_after(Duration::from_secs(5)),
            SubmitError::ShuttingDown => ApiError::new(
                Code::ShuttingDown,
                "the server is shutting down; retry on another instance",
            )
            .with_retry_after(Duration::from_secs(1)),
            SubmitError::Internal(_) => ApiError::internal(),
        }
    }
}

/// `POST /v1/jobs`.
async fn create(req: HttpRequest, body: web::Payload) -> HttpResponse {
    let span = crate::http::trace::http_server_span(&req, JOBS_ROUTE);
    let started = Instant::now();
    let result = create_job(&req, body).instrument(span.clone()).await;
    let (response, outcome) = match result {
        Ok(res) => (res, "accepted"),
        Err(e) => (e.error_response(), e.code()),
    };
    let status = response.status().as_u16();
    crate::http::trace::finish_http_span(&span, status, outcome, started.elapsed());
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if super::refusals::is_refusal(status) {
        super::refusals::refused(JOBS_ROUTE, status, outcome, elapsed_ms);
    } else if response.status().is_server_error() {
        tracing::warn!(parent: &span, status, outcome, elapsed_ms, "job submission failed");
    } else {
        tracing::info!(parent: &span, status, outcome, elapsed_ms, "job submission answered");
    }
    response
}

async fn create_job(req: &HttpRequest, body: web::Payload) -> Result<HttpResponse, ApiError> {
    let jobs = service(req)?;
    let limits = jobs.limits();
    let fault = parse_fault(req.headers(), limits.fault_injection)?;
    let ingest = jobs.ingest().clone();
    // Held while the body is read and validated.
    let _upload_permit = ingest.try_upload()?;
    let form = read_form(
        req.headers(),
        body,
        FormLimits::new(limits.max_upload_bytes, ingest.upload_settings()),
    )
    .await?;
    if form.stream {
        return Err(ApiError::invalid_param(
            "stream",
            "a job is polled, not streamed: send stream=true to /v1/audio/transcriptions",
        ));
    }
    let options = form.decode_options(limits.beam_size);
    let view = jobs
        .submit(JobSubmission {
            upload: form.file,
            file_hint: form.file_hint,
            options,
            response_format: form.response_format,
            granularities: form.granularities,
            fault,
        })
        .await
        .map_err(|e| {
            match &e {
                SubmitError::Store(_) | SubmitError::Internal(_) => {
                    tracing::error!(error = %e, "job not accepted")
                }
                // Capacity refusals: summarised by `super::refusals`.
                SubmitError::BacklogFull { .. }
                | SubmitError::ShuttingDown
                | SubmitError::Audio(crate::audio::AudioError::OverBudget { .. }) => {
                    tracing::debug!(error = %e, "job refused")
                }
                _ => tracing::info!(error = %e, "job refused"),
            }
            ApiError::from(e)
        })?;
    // Relative to where the routes are mounted (a host may use a scope).
    let location = format!("{}/{}", req.path().trim_end_matches('/'), view.id);
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, location))
        .json(job_json(&view)))
}

/// The job's JSON, with `result` (the `verbose_json` shape) when done.
fn job_json(view: &JobView) -> serde_json::Value {
    let mut v = serde_json::to_value(view).unwrap_or_else(|e| {
        tracing::error!(error = %e, "job serialisation failed");
        serde_json::json!({ "id": view.id })
    });
    if let (Some(map), Some(result)) = (v.as_object_mut(), view.result.as_ref()) {
        let rendered = render_result(view, ResponseFormat::VerboseJson, result);
        let value = serde_json::from_str(&rendered.body).unwrap_or(serde_json::Value::Null);
        map.insert("result".into(), value);
    }
    v
}

fn render_result(
    view: &JobView,
    format: ResponseFormat,
    result: &std::sync::Arc<crate::api::JobResult>,
) -> super::format::Rendered {
    let transcript = Transcript {
        job_id: 0,
        result: (**result).clone(),
        queue_wait: Duration::ZERO,
        decode_time: Duration::ZERO,
        worker_generation: 0,
    };
    render(&transcript, format, view.granularities, Task::Transcribe)
}

#[derive(Debug, Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

fn format_param(req: &HttpRequest) -> Result<Option<ResponseFormat>, ApiError> {
    let q = web::Query::<FormatQuery>::from_query(req.query_string())
        .map_err(|_| ApiError::invalid_param("format", "malformed query string"))?;
    q.into_inner()
        .format
        .filter(|f| !f.trim().is_empty())
        .map(|f| {
            f.parse::<ResponseFormat>()
                .map_err(|e| ApiError::invalid_param("format", e.to_string()))
        })
        .transpose()
}

/// The result rendered in `format`; 409 unless the job is done.
fn rendered(view: &JobView, format: ResponseFormat) -> Result<HttpResponse, ApiError> {
    let Some(result) = view
        .result
        .as_ref()
        .filter(|_| view.status == JobStatus::Done)
    else {
        let message = match &view.error {
            Some(e) => format!("the job is {}: {}", view.status.as_str(), e.message),
            None => format!("the job is {}; it has no result", view.status.as_str()),
        };
        return Err(ApiError::new(Code::JobNotDone, message));
    };
    let r = render_result(view, format, result);
    Ok(HttpResponse::Ok()
        .content_type(r.content_type)
        .insert_header(("x-job-id", view.id.to_string()))
        .body(r.body))
}

/// `GET /v1/jobs/{id}`.
async fn get(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let jobs = service(&req)?;
    let view = jobs
        .get(job_id(&req)?)
        .await
        .map_err(store_down)?
        .ok_or_else(not_found)?;
    match format_param(&req)? {
        Some(format) => rendered(&view, format),
        None => Ok(HttpResponse::Ok().json(job_json(&view))),
    }
}

/// `GET /v1/jobs/{id}/result`.
async fn result(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let jobs = service(&req)?;
    let view = jobs
        .get(job_id(&req)?)
        .await
        .map_err(store_down)?
        .ok_or_else(not_found)?;
    let format = format_param(&req)?.unwrap_or(view.format);
    rendered(&view, format)
}

/// `DELETE /v1/jobs/{id}`.
async fn delete(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let jobs = service(&req)?;
    match jobs.cancel(job_id(&req)?).await.map_err(store_down)? {
        CancelOutcome::Cancelled(view) => Ok(HttpResponse::Ok().json(job_json(&view))),
        CancelOutcome::Deleted => Ok(HttpResponse::NoContent().finish()),
        CancelOutcome::NotFound => Err(not_found()),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/jobs`.
async fn list(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let jobs = service(&req)?;
    let q = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|_| {
            ApiError::new(
                Code::InvalidParameter,
                "malformed query: status must be a job status, limit a number",
            )
        })?
        .into_inner();
    let status = match q.status.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::invalid_param(
                "status",
                "status must be queued, running, done, failed or cancelled",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100).min(MAX_LIST);
    let data: Vec<serde_json::Value> = jobs
        .list(status, limit)
        .await
        .map_err(store_down)?
        .iter()
        .map(job_json)
        .collect();
    let counts = jobs.counts().await.map_err(store_down)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "object": "list",
        "data": data,
        "counts": counts,
    })))
}

/// The shared job database did not answer a read: 503, try again.
fn store_down(e: crate::jobs::StoreUnavailable) -> ApiError {
    tracing::warn!(error = %e.0, "job store read failed");
    ApiError::new(
        Code::StoreUnavailable,
        "the job store did not answer; try again",
    )
    .with_retry_after(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_errors_map_to_statuses() {
        let cases = [
            (
                SubmitError::BacklogFull {
                    pending: 100,
                    retry_after: Duration::from_millis(1500),
                },
                429,
                "job_backlog_full",
                Some(2),
            ),
            (
                SubmitError::UploadTooLarge { limit: 10 },
                413,
                "upload_too_large",
                None,
            ),
            (
                SubmitError::Audio(crate::audio::AudioError::Unsupported("x".into())),
                415,
                "unsupported_audio",
                None,
            ),
            (
                SubmitError::Store("disk full at /x".into()),
                503,
                "store_unavailable",
                Some(5),
            ),
            (SubmitError::ShuttingDown, 503, "shutting_down", Some(1)),
            (
                SubmitError::Internal("join".into()),
                500,
                "internal_error",
                None,
            ),
        ];
        for (e, status, code, retry) in cases {
            let api = ApiError::from(e);
            assert_eq!(
                (api.status().as_u16(), api.code(), api.retry_after_secs()),
                (status, code, retry)
            );
            assert!(!api.message().contains("disk full"));
        }
    }
}

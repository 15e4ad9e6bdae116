//! `GET /health` and `GET /ready` (also `HEAD`): the liveness and
//! readiness probes, with the node's status as JSON. Always open: the API
//! key check ([`super::auth`]) never applies to them.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;
use super::routes::{backend, Backend};
use crate::api::NodeStatus;

fn status_json<B: Backend>(
    req: &HttpRequest,
    node: &B,
    status: &NodeStatus,
    label: &str,
) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_else(|e| {
        tracing::error!(error = %e, "node status serialisation failed");
        serde_json::json!({})
    });
    if let Some(map) = v.as_object_mut() {
        map.insert("status".into(), label.into());
        map.insert(
            "ingest".into(),
            serde_json::to_value(node.ingest().stats()).unwrap_or_default(),
        );
        map.insert("async_jobs".into(), jobs_health(req));
    }
    v
}

/// The async job service's state for `/health` and `/ready`: `ok`,
/// `failing` (its last store transaction failed: new jobs get 503
/// `store_unavailable`, later state changes of running jobs may be lost),
/// `unavailable` (it could not start; the job routes answer 503) or
/// `disabled`. Synchronous transcription does not depend on it, so it does
/// not change `/ready`'s status code.
fn jobs_health(req: &HttpRequest) -> serde_json::Value {
    if let Some(jobs) = req.app_data::<web::Data<crate::jobs::Jobs>>() {
        let error = jobs.store_error();
        return serde_json::json!({
            "state": if error.is_some() { "failing" } else { "ok" },
            "store_error": error,
            "store_failed_transactions": jobs.store_failures(),
        });
    }
    if let Some(u) = req.app_data::<web::Data<super::jobs::JobsUnavailable>>() {
        return serde_json::json!({ "state": "unavailable", "error": u.reason });
    }
    serde_json::json!({ "state": "disabled" })
}

/// `GET /health`: 200 while the process is alive, with the node's status.
pub(crate) async fn health<B: Backend>(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let node = backend::<B>(&req)?;
    let status = node.status();
    Ok(HttpResponse::Ok().json(status_json(&req, &**node, &status, "ok")))
}

/// Query flag of `/ready` that adds the queue to the check:
/// `GET /ready?admission=1`.
pub const ADMISSION_QUERY: &str = "admission";

/// Whether the query string asks for the admission check
/// (`admission`, `admission=1` or `admission=true`).
fn wants_admission(query: &str) -> bool {
    query.split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, "1"));
        key == ADMISSION_QUERY && matches!(value, "" | "1" | "true")
    })
}

/// `GET /ready`: 200 when the node can take work (worker loaded, not
/// draining), else 503 with `Retry-After: 1`; both with the node's status.
/// A busy node is ready: a request sent now queues. This is the probe for
/// orchestrators (Kubernetes readiness), where a momentarily full queue
/// must not take the node out of service.
///
/// `GET /ready?admission=1` also answers 503, with `"status": "busy"`, while
/// the queue is full, i.e. exactly while a transcription sent now would be
/// refused 429 at once. It flips the moment the queue fills or frees a
/// place (a read of the published state under a short lock: no actor is
/// asked), so a load balancer's health check can steer new requests to the
/// nodes with room (see `deploy/haproxy/haproxy.cfg`).
pub(crate) async fn ready<B: Backend>(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let node = backend::<B>(&req)?;
    let status = node.status();
    let busy = wants_admission(req.query_string())
        && status.queue_capacity > 0
        && status.queue_depth >= status.queue_capacity;
    if status.ready && !busy {
        return Ok(HttpResponse::Ok().json(status_json(&req, &**node, &status, "ready")));
    }
    let label = if status.shutting_down {
        "shutting_down"
    } else if !status.ready {
        "not_ready"
    } else {
        "busy"
    };
    Ok(HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, HeaderValue::from(1u64)))
        .json(status_json(&req, &**node, &status, label)))
}

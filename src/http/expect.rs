//! Refusing a transcription before its body is read.
//!
//! A full node used to read (and parse) every upload before it looked at
//! the queue: under a flood of clients that retry at once, the refusals'
//! uploads took the CPU from the engine (issue 17). Now a request the node
//! will certainly refuse — queue full, shutting down, or its client over
//! its fair share ([`super::fairness`]) — is answered before its body:
//!
//! - **`Expect: 100-continue`** ([`expect_service`], the HTTP/1.1
//!   dispatcher's expect hook, run before the app): the node answers the
//!   429 (or 503) at once, with `Retry-After` and the usual JSON error, and
//!   never sends `100 Continue`, so the client never sends its body (RFC
//!   9110 §10.1.1). The connection is then closed (its framing is broken:
//!   the announced body will not come).
//! - **Clients that send the body anyway** ([`early_refusal`], a middleware
//!   around the app): the refusal is decided before the body is touched;
//!   then, by `--refused-body`:
//!   - `drain` (default): the body is read and thrown away (no multipart
//!     parsing, no copy), up to [`DRAIN_MAX_BYTES`], then answered; the
//!     connection stays open. A larger body is not read: the answer goes
//!     out with `Connection: close` as below.
//!   - `close`: answered at once with `Connection: close`; the connection
//!     lingers, discarding what the client still sends, until the client
//!     closes (at most the client-disconnect timeout, 1 s), so the client
//!     reads the 429 instead of a reset.
//!
//!   Both were measured under a retry storm (`make overload`, issue 17):
//!   the bytes cross loopback either way (the lingering connection reads
//!   them too), and `close` adds a new connection per refusal on both
//!   sides, which cost more CPU than the drained body (BENCHMARKS.md).
//!
//! Requests that pass go on as before (the handler still checks the queue
//! again after the upload: a place may have gone meanwhile). Both paths
//! count the refusal in `asr_requests_total` and log it through
//! [`super::refusals`]; `X-Busy-Status: 503` is honoured as on the route.
//! Requests for a host outside `--allowed-hosts` are left to the Host check.

use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, HttpResponse, ResponseError};
use futures::StreamExt;

use super::access::Access;
use super::auth::{client_before_app, ClientId};
use super::error::ApiError;
use super::fairness::{Fairness, OVER_SHARE_RETRY_AFTER};
use super::host::AllowedHosts;
use super::routes::{
    BUSY_STATUS_HEADER, QUEUE_FULL_HEADER, TRANSCRIPTIONS_ROUTE, TRANSLATIONS_ROUTE,
};
use crate::error_code::Code;
use crate::node::AsrNode;

/// Most body bytes `--refused-body drain` reads of a refused request;
/// a larger body closes the connection instead.
pub const DRAIN_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// Longest `--refused-body drain` waits for the body.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What becomes of the body of a request refused before it was read (and
/// sent without `Expect: 100-continue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RefusedBody {
    /// Read and discard the body (up to 4 MiB), answer, keep the
    /// connection.
    Drain,
    /// Answer at once and close the connection (lingering until the client
    /// has sent its body, at most 1 s).
    Close,
}

/// The early-refusal settings and state shared by the expect hook and the
/// middleware (one per server; cheap to clone).
#[derive(Clone)]
pub struct EarlyRefusal {
    node: AsrNode,
    access: web::Data<Access>,
    fairness: Option<Fairness>,
    hosts: Option<AllowedHosts>,
    refused_body: RefusedBody,
}

impl EarlyRefusal {
    /// For `node`; `fairness: false` turns the per-client rule off.
    pub fn new(
        node: AsrNode,
        access: web::Data<Access>,
        hosts: Option<AllowedHosts>,
        fairness: bool,
        refused_body: RefusedBody,
    ) -> EarlyRefusal {
        // The waiting jobs, and the batch in the worker.
        let slots = node.config().effective_queue_capacity() + node.config().max_batch;
        EarlyRefusal {
            node,
            access,
            fairness: fairness.then(|| Fairness::new(slots)),
            hosts,
            refused_body,
        }
    }

    fn applies(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        if method != Method::POST || (path != TRANSCRIPTIONS_ROUTE && path != TRANSLATIONS_ROUTE) {
            return false;
        }
        match (
            &self.hosts,
            headers.get(header::HOST).and_then(|h| h.to_str().ok()),
        ) {
            (Some(hosts), Some(host)) => hosts.allows(host),
            _ => true,
        }
    }

    /// The node-wide refusal (queue full, shutting down), if any; the
    /// client is remembered as waiting.
    fn node_refusal(&self, client: &ClientId) -> Option<ApiError> {
        let e = self.node.admission_precheck().err()?;
        if let (Some(f), Some(after)) = (&self.fairness, e.retry_after()) {
            f.refused(client, after);
        }
        Some(ApiError::from(e))
    }

    /// Whether a request of `client` would be refused now (expect hook:
    /// nothing held).
    fn would_refuse(&self, client: &ClientId) -> Option<ApiError> {
        if let Some(e) = self.node_refusal(client) {
            return Some(e);
        }
        let f = self.fairness.as_ref()?;
        f.check(client).err().map(|o| {
            f.refused(client, OVER_SHARE_RETRY_AFTER);
            over_share(o)
        })
    }

    /// The expect hook's decision (see the module doc).
    fn expect(&self, req: &actix_http::Request) -> Option<HttpResponse> {
        if !self.applies(req.method(), req.path(), req.headers()) {
            return None;
        }
        let started = Instant::now();
        // Without a valid key (when keys are required) the app answers 401.
        let client = client_before_app(&self.access, req.headers(), req.peer_addr())?;
        let e = self.would_refuse(&client)?;
        Some(refusal_response(&e, req.headers(), started))
    }
}

fn over_share(o: super::fairness::OverShare) -> ApiError {
    ApiError::new(
        Code::ClientOverShare,
        format!(
            "this client already has {} of its {} transcriptions in progress while other clients wait; retry later",
            o.held, o.share
        ),
    )
    .with_retry_after(OVER_SHARE_RETRY_AFTER)
}

/// The refusal's answer (with `X-Busy-Status` honoured), counted and logged.
fn refusal_response(e: &ApiError, headers: &HeaderMap, started: Instant) -> HttpResponse {
    let mut res = e.error_response();
    let as_503 = headers
        .get(BUSY_STATUS_HEADER)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"503");
    if as_503 && res.status() == StatusCode::TOO_MANY_REQUESTS {
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        res.headers_mut().insert(
            header::HeaderName::from_static(QUEUE_FULL_HEADER),
            HeaderValue::from_static("true"),
        );
    }
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    crate::metrics::http_request(e.code(), status, elapsed);
    super::refusals::refused(
        TRANSCRIPTIONS_ROUTE,
        status,
        e.code(),
        elapsed.as_millis() as u64,
    );
    res
}

/// The error of the expect hook: the refusal, sent instead of
/// `100 Continue`.
pub struct ExpectRefusal(HttpResponse);

impl From<ExpectRefusal> for actix_http::Response<BoxBody> {
    fn from(r: ExpectRefusal) -> Self {
        r.0.into()
    }
}

/// The expect hook for `actix_http::HttpService::build().expect(…)`: passes
/// the request on (the dispatcher then sends `100 Continue`), or answers the
/// refusal without `100 Continue`.
pub fn expect_service(
    early: EarlyRefusal,
) -> impl actix_service::ServiceFactory<
    actix_http::Request,
    Config = (),
    Response = actix_http::Request,
    Error = ExpectRefusal,
    InitError = (),
> + Clone {
    actix_service::fn_service(move |req: actix_http::Request| {
        let refusal = early.expect(&req);
        std::future::ready(match refusal {
            Some(res) => Err(ExpectRefusal(res)),
            None => Ok(req),
        })
    })
}

/// The middleware for requests that arrive with their body (see the module
/// doc). Needs a `web::Data<EarlyRefusal>` in the app data (passes
/// everything without one). Wrap it inside the Host check.
pub async fn early_refusal<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    let early = match req.app_data::<web::Data<EarlyRefusal>>() {
        Some(e) if e.applies(req.method(), req.path(), req.headers()) => e.clone(),
        _ => return Ok(next.call(req).await?.map_into_left_body()),
    };
    let started = Instant::now();
    // Set by the key check, which runs first (see `server::run`).
    let client = ClientId::of(req.request());
    let refusal = match early.node_refusal(&client) {
        Some(e) => e,
        None => match early.fairness.as_ref().map(|f| f.admit(&client)) {
            None => return Ok(next.call(req).await?.map_into_left_body()),
            Some(Ok(held)) => {
                let res = next.call(req).await;
                drop(held);
                return Ok(res?.map_into_left_body());
            }
            Some(Err(o)) => over_share(o),
        },
    };
    if early.refused_body == RefusedBody::Drain {
        let length = content_length(req.headers());
        if length.is_some_and(|n| n <= DRAIN_MAX_BYTES) || is_chunked(req.headers()) {
            let payload = req.take_payload();
            drain(payload).await;
        }
    }
    let res = refusal_response(&refusal, req.headers(), started);
    Ok(req.into_response(res).map_into_right_body())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

/// Reads and discards a body, up to [`DRAIN_MAX_BYTES`] and
/// [`DRAIN_TIMEOUT`] (past either, the connection closes after the answer).
async fn drain(mut payload: actix_web::dev::Payload) {
    let read = async {
        let mut total = 0u64;
        while let Some(chunk) = payload.next().await {
            match chunk {
                Ok(b) => {
                    total += b.len() as u64;
                    if total > DRAIN_MAX_BYTES {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, read).await;
}

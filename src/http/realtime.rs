//! `GET /v1/realtime?intent=transcription`: the WebSocket upgrade of a
//! realtime transcription session (the protocol is in [`crate::realtime`]).
//!
//! Before the upgrade: the API key (checked by [`super::auth::check`]:
//! `Authorization: Bearer`, or for browsers the subprotocol
//! `openai-insecure-api-key.<key>`), `intent` (absent or
//! `transcription`; anything else is 400 `invalid_parameter`), the node
//! not shutting down (503), and a free session slot (429
//! `too_many_sessions` with `Retry-After`). Then a reader task passes each
//! frame to the session actor and waits until it is handled before it
//! reads the next one, and answers pings.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures::StreamExt;
use tracing::Instrument;

use super::error::ApiError;
use crate::error_code::Code;
use crate::realtime::session::{Inbound, SessionArgs, SessionMsg};
use crate::realtime::sessions::{self, OpenError, SESSIONS_RETRY_AFTER};
use crate::AsrNode;

/// Route of the realtime endpoint.
pub const REALTIME_ROUTE: &str = "/v1/realtime";

/// Mounts `GET /v1/realtime`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource(REALTIME_ROUTE).route(web::get().to(upgrade)));
}

#[derive(serde::Deserialize)]
struct Query {
    intent: Option<String>,
}

async fn upgrade(req: HttpRequest, body: web::Payload) -> HttpResponse {
    let span = crate::http::trace::http_server_span(&req, REALTIME_ROUTE);
    let started = std::time::Instant::now();
    let result = open(&req, body, span.clone())
        .instrument(span.clone())
        .await;
    let (res, outcome) = match result {
        Ok(res) => (res, "ok"),
        Err(e) => {
            if e.status().as_u16() == 429 {
                crate::metrics::realtime_session("refused");
            }
            (e.error_response(), e.code())
        }
    };
    crate::http::trace::finish_http_span(&span, res.status().as_u16(), outcome, started.elapsed());
    res
}

async fn open(
    req: &HttpRequest,
    body: web::Payload,
    span: tracing::Span,
) -> Result<HttpResponse, ApiError> {
    let node = req
        .app_data::<web::Data<AsrNode>>()
        .cloned()
        .ok_or_else(ApiError::internal)?;
    let fault = super::form::parse_fault(req.headers(), node.config().enable_fault_injection)?;
    let limits = &node.config().realtime;
    if limits.realtime_max_sessions == 0 {
        return Err(ApiError::new(
            Code::InvalidParameter,
            "realtime sessions are disabled on this node (--realtime-max-sessions 0)",
        ));
    }
    let query = web::Query::<Query>::from_query(req.query_string())
        .map_err(|e| ApiError::invalid_param("intent", e.to_string()))?;
    if let Some(intent) = query.intent.as_deref() {
        if intent != "transcription" {
            return Err(ApiError::invalid_param(
                "intent",
                format!("intent {intent:?} is not served; this node takes intent=transcription"),
            ));
        }
    }
    if node.status().shutting_down {
        return Err(ApiError::from(crate::api::AsrError::ShuttingDown));
    }
    let (mut res, socket, stream) = actix_ws::handle(req, body).map_err(|e| {
        ApiError::new(
            Code::InvalidParameter,
            format!("{REALTIME_ROUTE} expects a WebSocket upgrade: {e}"),
        )
    })?;
    // A browser that offered subprotocols (the page with a key: `realtime,
    // openai-insecure-api-key.<key>`) fails the handshake unless one is
    // chosen: choose `realtime`, never echo the key.
    let offers_realtime = req
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "realtime"));
    if offers_realtime {
        res.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("realtime"),
        );
    }
    // An append over the limit must arrive whole to be answered with an
    // error event; a frame past twice the limit ends the connection.
    let max_frame = (limits.realtime_max_append_bytes * 8 / 3).max(64 * 1024) + 4096;
    let stream = stream
        .max_frame_size(max_frame)
        .aggregate_continuations()
        .max_continuation_size(max_frame);
    let id = format!("sess_{}", uuid::Uuid::new_v4().simple());
    let args = SessionArgs {
        id: id.clone(),
        node: node.get_ref().clone(),
        socket: socket.clone(),
        parent_span: span,
        fault,
    };
    let session = match sessions::open(&node, args).await {
        Ok(s) => s,
        Err(OpenError::TooMany { open }) => {
            return Err(ApiError::new(
                Code::TooManySessions,
                format!("{open} realtime sessions are open, the most this node takes; retry later"),
            )
            .with_retry_after(SESSIONS_RETRY_AFTER))
        }
        Err(e @ OpenError::Spawn(_)) => {
            tracing::error!(error = %e, "could not open a realtime session");
            return Err(ApiError::internal());
        }
    };
    crate::metrics::realtime_session("opened");
    actix_web::rt::spawn(read_frames(stream, socket, session));
    res.headers_mut().insert(
        header::HeaderName::from_static("x-session-id"),
        HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("")),
    );
    Ok(res)
}

/// Passes frames to the session, one at a time.
async fn read_frames(
    mut stream: actix_ws::AggregatedMessageStream,
    mut socket: actix_ws::Session,
    session: ractor::ActorRef<SessionMsg>,
) {
    while let Some(msg) = stream.next().await {
        let inbound = match msg {
            Ok(actix_ws::AggregatedMessage::Text(t)) => Inbound::Text(t.to_string()),
            Ok(actix_ws::AggregatedMessage::Binary(b)) => Inbound::Binary(b.len()),
            Ok(actix_ws::AggregatedMessage::Ping(p)) => {
                let _ = socket.pong(&p).await;
                continue;
            }
            Ok(actix_ws::AggregatedMessage::Pong(_)) => continue,
            Ok(actix_ws::AggregatedMessage::Close(_)) => break,
            Err(e) => {
                tracing::info!(error = %e, "realtime socket protocol error; closing");
                let _ = socket
                    .close(Some(actix_ws::CloseReason {
                        code: actix_ws::CloseCode::Size,
                        description: Some(e.to_string()),
                    }))
                    .await;
                break;
            }
        };
        let handled = session
            .call(|reply| SessionMsg::Frame(inbound, reply), None)
            .await;
        if !matches!(handled, Ok(ractor::rpc::CallResult::Success(()))) {
            // The session ended (closed by the server).
            return;
        }
    }
    let _ = session.cast(SessionMsg::ClientGone);
}

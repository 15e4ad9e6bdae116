//! API keys on the `/v1/…` routes, the per-key limit on work in progress,
//! and [`ClientId`], the one way to tell who sent a request.
//!
//! [`check`] is a middleware (`middleware::from_fn(check)`) that reads the
//! [`Access`] app data:
//! - `/health` and `/ready` are always open; `/metrics` is open unless
//!   `--metrics-require-key`; every other route under `/v1/` (transcriptions,
//!   translations, models, jobs, streaming, live transcription) needs
//!   `Authorization: Bearer <key>` when keys are configured. Paths outside
//!   `/v1/` are left to the host (an embedding app's own routes).
//! - Missing key: 401 `missing_api_key`; a key not in the file: 401
//!   `invalid_api_key`; both in OpenAI's error shape with
//!   `WWW-Authenticate: Bearer`. The key is never logged or echoed.
//! - Keys are compared as SHA-256 digests with `subtle`'s constant-time
//!   equality, against every key (no early exit), so the time of a refusal
//!   says nothing about how close a guess was or which key it matched.
//! - With keys, a `POST` under `/v1/` holds one of its key's
//!   [`PerKeyLimit`] slots until its answer is produced (for an event
//!   stream, until the stream ends); past the limit, 429 `key_busy` with
//!   `Retry-After`. Async jobs count while they are submitted (upload and
//!   checks), not while they wait in the job store, which has its own
//!   backlog limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, ResponseError};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

pub use super::access::Access;
use super::error::ApiError;
use crate::error_code::Code;

/// `Retry-After` of a `key_busy` refusal.
pub const KEY_BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A key's public name: its line number in the keys file (1-based, counting
/// only key lines), shown as `key-<n>` in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub u32);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key-{}", self.0)
    }
}

/// Who sent a request: its API key when keys are required, else its peer
/// address. For fairness and limits per client (put in the request's
/// extensions by [`check`]; [`ClientId::of`] falls back to the peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientId {
    /// An authenticated key.
    Key(KeyId),
    /// The TCP peer (no keys configured); behind a proxy, the proxy.
    Peer(IpAddr),
    /// Neither is known (a test request without a peer).
    Unknown,
}

impl ClientId {
    /// The client of `req`.
    pub fn of(req: &HttpRequest) -> ClientId {
        if let Some(id) = req.extensions().get::<ClientId>() {
            return *id;
        }
        req.peer_addr()
            .map_or(ClientId::Unknown, |a| ClientId::Peer(a.ip()))
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientId::Key(k) => k.fmt(f),
            ClientId::Peer(ip) => ip.fmt(f),
            ClientId::Unknown => f.write_str("unknown"),
        }
    }
}

/// The configured keys, as SHA-256 digests.
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

/// Why a keys file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// No key line.
    #[error("the file has no keys")]
    Empty,
    /// A key with characters a header cannot carry.
    #[error("the key on key line {0} has spaces or control characters")]
    Malformed(u32),
}

impl ApiKeys {
    /// Keys from a file's text: one per line, surrounding whitespace
    /// trimmed, blank lines and `#` comments skipped.
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        let mut digests = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(KeysError::Malformed(digests.len() as u32 + 1));
            }
            digests.push(digest(line.as_bytes()));
        }
        if digests.is_empty() {
            return Err(KeysError::Empty);
        }
        Ok(Self { digests })
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether there are none (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The key `presented` is, if it is one: compared with every key in
    /// constant time.
    pub fn verify(&self, presented: &[u8]) -> Option<KeyId> {
        let presented = digest(presented);
        let mut found = 0u32;
        for (i, d) in self.digests.iter().enumerate() {
            let hit = d.ct_eq(&presented);
            // Branch-free select of the (1-based) index of a hit.
            found |= u32::conditional_select(&0, &(i as u32 + 1), hit);
        }
        (found != 0).then_some(KeyId(found))
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The client of a request that has not reached the app yet (the
/// `Expect: 100-continue` hook, [`super::expect`]): its verified key when
/// keys are required, else its peer. `None` when keys are required and the
/// request has no valid one: the app's key check answers it (401).
pub fn client_before_app(
    access: &Access,
    headers: &HeaderMap,
    peer: Option<std::net::SocketAddr>,
) -> Option<ClientId> {
    match &access.keys {
        None => Some(peer.map_or(ClientId::Unknown, |a| ClientId::Peer(a.ip()))),
        Some(keys) => presented_key(headers)
            .and_then(|token| keys.verify(token))
            .map(ClientId::Key),
    }
}

/// Prefix of the WebSocket subprotocol that carries an API key (OpenAI's
/// Realtime convention for browsers, which cannot set `Authorization` on
/// a WebSocket): `Sec-WebSocket-Protocol: realtime,
/// openai-insecure-api-key.<key>`.
pub const WS_KEY_PROTOCOL_PREFIX: &str = "openai-insecure-api-key.";

/// The key a request presents: `Authorization: Bearer`, else (only on a
/// WebSocket upgrade) the [`WS_KEY_PROTOCOL_PREFIX`] subprotocol.
fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    bearer(headers).or_else(|| {
        headers
            .get(header::SEC_WEBSOCKET_PROTOCOL)?
            .to_str()
            .ok()?
            .split(',')
            .map(str::trim)
            .find_map(|p| p.strip_prefix(WS_KEY_PROTOCOL_PREFIX))
            .filter(|k| !k.is_empty())
            .map(str::as_bytes)
    })
}

/// The bearer token of `Authorization`, if the header has one.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Requests in progress per key, under a maximum.
#[derive(Debug)]
pub struct PerKeyLimit {
    max: usize,
    counts: Arc<Mutex<HashMap<KeyId, usize>>>,
}

/// One request's slot; freed on drop.
#[derive(Debug)]
pub struct KeySlot {
    key: KeyId,
    counts: Arc<Mutex<HashMap<KeyId, usize>>>,
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl PerKeyLimit {
    /// At most `max` requests per key.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            counts: Arc::default(),
        }
    }

    /// The maximum.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for `key`, or `None` when it has `max` already.
    pub fn try_acquire(&self, key: KeyId) -> Option<KeySlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(KeySlot {
            key,
            counts: Arc::clone(&self.counts),
        })
    }

    /// Requests in progress for `key`.
    pub fn in_progress(&self, key: KeyId) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&key).copied().unwrap_or(0)
    }
}

/// Whether `path` needs a key under `access`.
fn protected(access: &Access, path: &str) -> bool {
    match path {
        "/health" | "/ready" => false,
        "/metrics" => access.metrics_require_key,
        p => p == "/v1" || p.starts_with("/v1/"),
    }
}

/// The middleware (see the module docs).
pub async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(access) = req.app_data::<web::Data<Access>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let Some(keys) = access.keys.as_ref() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if !protected(&access, req.path()) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let key = match presented_key(req.headers()) {
        None => Err(ApiError::new(
            Code::MissingApiKey,
            "this node requires an API key: send it as 'Authorization: Bearer <key>' (on a WebSocket, also as the subprotocol 'openai-insecure-api-key.<key>')",
        )),
        Some(token) => keys.verify(token).ok_or_else(|| {
            ApiError::new(
                Code::InvalidApiKey,
                "the API key is not valid for this node",
            )
        }),
    };
    let key = match key {
        Ok(key) => key,
        Err(e) => {
            tracing::info!(
                path = req.path(),
                code = e.code(),
                "request refused: API key"
            );
            crate::metrics::auth_refused(e.error_code());
            let mut res = e.error_response();
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Ok(req.into_response(res));
        }
    };
    req.extensions_mut().insert(ClientId::Key(key));
    if req.method() != actix_web::http::Method::POST {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let Some(slot) = access.per_key.try_acquire(key) else {
        let e = ApiError::new(
            Code::KeyBusy,
            format!(
                "this API key already has {} requests in progress; retry when one is answered",
                access.per_key.max()
            ),
        )
        .with_retry_after(KEY_BUSY_RETRY_AFTER);
        super::refusals::refused("/v1/*", e.status().as_u16(), e.code(), 0);
        return Ok(req.into_response(e.error_response()));
    };
    let res = next.call(req).await?;
    // The slot is held by the body: until the whole answer (an event
    // stream included) is sent or the client leaves.
    Ok(res.map_body(|_, body| {
        Held {
            body: body.boxed(),
            _slot: slot,
        }
        .boxed()
    }))
}

/// A body holding a [`KeySlot`] until it is dropped.
struct Held {
    body: BoxBody,
    _slot: KeySlot,
}

impl MessageBody for Held {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_parsed_and_verified_by_line() {
        let keys = ApiKeys::parse("# comment\n\n  sk-one \nsk-two\n").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.verify(b"sk-one"), Some(KeyId(1)));
        assert_eq!(keys.verify(b"sk-two"), Some(KeyId(2)));
        assert_eq!(keys.verify(b"sk-on"), None);
        assert_eq!(keys.verify(b""), None);
        assert!(matches!(ApiKeys::parse("# x\n"), Err(KeysError::Empty)));
        assert!(matches!(
            ApiKeys::parse("a\nb c\n"),
            Err(KeysError::Malformed(2))
        ));
        assert_eq!(format!("{keys:?}"), "ApiKeys(2 keys)", "never the keys");
    }

    #[test]
    fn the_per_key_limit_counts_slots_and_frees_them_on_drop() {
        let limit = PerKeyLimit::new(2);
        let (a, b) = (KeyId(1), KeyId(2));
        let s1 = limit.try_acquire(a).unwrap();
        let _s2 = limit.try_acquire(a).unwrap();
        assert!(limit.try_acquire(a).is_none());
        assert!(
            limit.try_acquire(b).is_some(),
            "other keys are not affected"
        );
        drop(s1);
        assert_eq!(limit.in_progress(a), 1);
        assert!(limit.try_acquire(a).is_some());
    }

    #[test]
    fn only_v1_routes_and_optionally_metrics_are_protected() {
        let mut access = Access::open();
        for (path, want) in [
            ("/health", false),
            ("/ready", false),
            ("/metrics", false),
            ("/v1/audio/transcriptions", true),
            ("/v1/models", true),
            ("/v1/jobs/abc", true),
            ("/v1", true),
            ("/v10", false),
            ("/host/route", false),
        ] {
            assert_eq!(protected(&access, path), want, "{path}");
        }
        access.metrics_require_key = true;
        assert!(protected(&access, "/metrics"));
    }

    #[test]
    fn a_key_is_taken_from_bearer_or_the_websocket_subprotocol() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(
                "realtime, openai-insecure-api-key.sk-one, openai-beta.realtime-v1",
            ),
        );
        assert_eq!(presented_key(&h), Some(&b"sk-one"[..]));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-two"),
        );
        assert_eq!(
            presented_key(&h),
            Some(&b"sk-two"[..]),
            "Authorization first"
        );
        let mut empty = HeaderMap::new();
        empty.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("realtime, openai-insecure-api-key."),
        );
        assert_eq!(presented_key(&empty), None);
    }
}

//! [`ApiError`]: the one error type of the HTTP layer, and the table that
//! maps every way a request can fail to a status code.
//!
//! Bodies are shaped like OpenAI's:
//! `{"error": {"message": "...", "type": "...", "param": null, "code": "..."}}`.
//! `code` is stable and machine-readable; `message` is a short human
//! sentence that never carries internal error text (that goes to the logs).
//! 429 and 503 always carry `Retry-After` in whole seconds (rounded up, at
//! least 1).
//!
//! Every error's code comes from the one table in [`crate::error_code`],
//! which fixes its status and `type`: domain errors map into it
//! ([`AsrError::code`], [`AudioError::code`]) and so do the HTTP layer's own
//! (form, routing, Host check, job routes). The human messages of node
//! errors are the domain's ([`AsrError::client_message`]).

use std::fmt;
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::api::{AsrError, WorkerError};
use crate::audio::AudioError;
pub use crate::error_code::Code;

/// An HTTP error answer: status, stable code, human message, optional
/// offending parameter and retry hint.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    code: Code,
    message: String,
    param: Option<&'static str>,
    retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with this code (which fixes its status) and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// A 400 `invalid_parameter` naming the offending form field.
    pub fn invalid_param(param: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::InvalidParameter, message).with_param(param)
    }

    /// A 413 `upload_too_large` for an upload over `limit` bytes.
    pub fn upload_too_large(limit: usize) -> Self {
        Self::new(
            Code::UploadTooLarge,
            format!("the upload is larger than the limit of {limit} bytes"),
        )
    }

    /// A 500 `internal_error`; the cause belongs in the logs, not here.
    pub fn internal() -> Self {
        Self::new(Code::InternalError, "an internal error occurred")
    }

    /// Names the form field the error is about.
    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// Sets the retry hint (sent as `Retry-After` on 429 and 503).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The HTTP status (fixed by the code).
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The stable, machine-readable code's name.
    pub fn code(&self) -> &'static str {
        self.code.name()
    }

    /// The code itself.
    pub fn error_code(&self) -> Code {
        self.code
    }

    /// The human message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The form field the error is about, if any.
    pub fn param(&self) -> Option<&'static str> {
        self.param
    }

    /// OpenAI-style error `type` (from the code's status).
    pub fn error_type(&self) -> &'static str {
        self.code.error_type()
    }

    /// The `Retry-After` value in whole seconds (rounded up, at least 1), for
    /// 429 and 503 answers; `None` for other statuses.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self.status() {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Some(
                retry_after_secs(self.retry_after.unwrap_or(Duration::from_secs(1))),
            ),
            _ => None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            error_type: &'a str,
            param: Option<&'a str>,
            code: &'a str,
        }
        serde_json::json!({ "error": Inner {
            message: &self.message,
            error_type: self.error_type(),
            param: self.param,
            code: self.code.name(),
        }})
    }
}

/// Whole seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(after: Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(1)
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.status(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status());
        if let Some(secs) = self.retry_after_secs() {
            res.insert_header((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        res.json(self.body())
    }
}

impl From<AudioError> for ApiError {
    fn from(e: AudioError) -> Self {
        let retry = matches!(e, AudioError::OverBudget { .. });
        let api = ApiError::new(e.code(), e.to_string()).with_param("file");
        if retry {
            api.with_retry_after(crate::audio::OVER_BUDGET_RETRY_AFTER)
        } else {
            api
        }
    }
}

impl From<crate::ingest::UploadsBusy> for ApiError {
    fn from(e: crate::ingest::UploadsBusy) -> Self {
        ApiError::new(Code::TooManyUploads, e.to_string())
            .with_retry_after(crate::ingest::UPLOADS_BUSY_RETRY_AFTER)
    }
}

impl From<AsrError> for ApiError {
    fn from(e: AsrError) -> Self {
        // The code, the client's message and the retry hint all come from
        // the domain error; internal detail stays in the logs.
        let mut api = ApiError::new(e.code(), e.client_message());
        if let Some(after) = e.retry_after() {
            api = api.with_retry_after(after);
        }
        if matches!(
            e,
            AsrError::Quarantined | AsrError::Rejected(WorkerError::InvalidAudio(_))
        ) {
            api = api.with_param("file");
        }
        api
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    async fn body_of(e: &ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let res = e.error_response();
        let status = res.status();
        let retry = res
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = to_bytes(res.into_body()).await.unwrap();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    #[actix_web::test]
    async fn body_is_openai_shaped() {
        let (status, retry, body) = body_of(&ApiError::invalid_param("temperature", "bad")).await;
        assert_eq!(status, 400);
        assert_eq!(retry, None);
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "message": "bad", "type": "invalid_request_error", "param": "temperature", "code": "invalid_parameter"
            }})
        );
    }

    #[actix_web::test]
    async fn busy_is_429_with_retry_after_rounded_up() {
        let e = ApiError::from(AsrError::Busy {
            retry_after: Duration::from_millis(2100),
            queued: 3,
        });
        let (status, retry, body) = body_of(&e).await;
        assert_eq!(status, 429);
        assert_eq!(retry.as_deref(), Some("3"));
        assert_eq!(body["error"]["code"], "queue_full");
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }

    #[actix_web::test]
    async fn unavailable_and_shutdown_are_503_with_retry_after_at_least_1() {
        let e = ApiError::from(AsrError::Unavailable {
            retry_after: Duration::ZERO,
            reason: "sigsegv at 0x0".into(),
        });
        let (status, retry, body) = body_of(&e).await;
        assert_eq!(status, 503);
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(
            !body.to_string().contains("sigsegv"),
            "internal detail leaked"
        );
        let (status, retry, _) = body_of(&ApiError::from(AsrError::ShuttingDown)).await;
        assert_eq!((status.as_u16(), retry.as_deref()), (503, Some("1")));
    }

    #[test]
    fn every_asr_error_has_its_status() {
        let cases: Vec<(AsrError, u16, &str)> = vec![
            (
                AsrError::QueueTimeout {
                    waited: Duration::from_secs(9),
                },
                504,
                "queue_timeout",
            ),
            (
                AsrError::DecodeTimeout {
                    limit: Duration::from_secs(30),
                },
                504,
                "decode_timeout",
            ),
            (
                AsrError::WorkerCrashed {
                    detail: "signal 11".into(),
                },
                500,
                "worker_crashed",
            ),
            (
                AsrError::WorkerUnresponsive {
                    silent_for: Duration::from_secs(10),
                },
                504,
                "worker_unresponsive",
            ),
            (
                AsrError::WorkerProtocol {
                    detail: "worker answered job 7 while job 6 was in flight (mailbox)".into(),
                },
                502,
                "worker_protocol_error",
            ),
            (
                AsrError::Unsendable {
                    detail: "a job of 9 samples exceeds the limit (cuda)".into(),
                },
                500,
                "job_unsendable",
            ),
            (AsrError::Quarantined, 422, "input_quarantined"),
            (
                AsrError::Rejected(WorkerError::InvalidOptions(
                    "language fr on an .en model".into(),
                )),
                400,
                "invalid_options",
            ),
            (
                AsrError::Rejected(WorkerError::InvalidAudio("empty".into())),
                400,
                "invalid_audio",
            ),
            (
                AsrError::Rejected(WorkerError::Engine("cuda oom at foo.cc:12".into())),
                500,
                "engine_error",
            ),
            (AsrError::Cancelled, 408, "cancelled"),
            (
                AsrError::Internal("mailbox closed".into()),
                500,
                "internal_error",
            ),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e.clone());
            assert_eq!(api.status().as_u16(), status, "{e:?}");
            assert_eq!(api.code(), code, "{e:?}");
            assert_eq!(api.retry_after_secs(), None);
            for secret in ["signal 11", "cuda", "mailbox"] {
                assert!(!api.message().contains(secret), "{e:?} leaked {secret}");
            }
        }
    }

    #[test]
    fn audio_errors_map_to_400_413_415() {
        assert_eq!(ApiError::from(AudioError::Empty).status(), 400);
        assert_eq!(
            ApiError::from(AudioError::Corrupt("x".into())).status(),
            400
        );
        assert_eq!(ApiError::from(AudioError::NoSamples).status(), 400);
        assert_eq!(ApiError::from(AudioError::NonFinite).status(), 400);
        assert_eq!(
            ApiError::from(AudioError::Unsupported("x".into())).status(),
            415
        );
        assert_eq!(
            ApiError::from(AudioError::TooLong {
                secs: 9.0,
                max_secs: 1.0
            })
            .status(),
            413
        );
        let damaged = ApiError::from(AudioError::Damaged {
            skipped_packets: 0,
            total_packets: 13,
            gap_secs: 7.9,
        });
        assert_eq!(
            (damaged.status().as_u16(), damaged.code()),
            (422, "damaged_audio")
        );
        let busy = ApiError::from(AudioError::OverBudget { needed_bytes: 1 });
        assert_eq!(
            (busy.status().as_u16(), busy.code(), busy.retry_after_secs()),
            (503, "decode_busy", Some(2))
        );
        let uploads = ApiError::from(crate::ingest::UploadsBusy { limit: 3 });
        assert_eq!(
            (
                uploads.status().as_u16(),
                uploads.code(),
                uploads.retry_after_secs()
            ),
            (429, "too_many_uploads", Some(1))
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
    }

    #[test]
    fn long_worker_messages_are_cut() {
        let e = ApiError::from(AsrError::Rejected(WorkerError::InvalidOptions(
            "é".repeat(1000),
        )));
        assert!(
            e.message().chars().count() < 200 + 30,
            "quoted at most 200 characters"
        );
    }
}

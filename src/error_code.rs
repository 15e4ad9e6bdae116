//! The one table of error codes: every way the node can refuse or fail a
//! request has exactly one [`Code`], and the code fixes the stable string
//! clients and dashboards see, the HTTP status, and OpenAI's error `type`.
//!
//! Domain errors map into it ([`crate::api::AsrError::code`],
//! [`crate::audio::AudioError::code`], the job service's refusals, the HTTP
//! layer's own form and routing errors); the HTTP answer
//! ([`crate::http::ApiError`]), the metric labels (`asr_jobs_total`,
//! `asr_requests_total`, `asr_decode_failures_total`, the job service's
//! counters) and the job records all take the code's [`Code::name`], so the
//! same event has the same name everywhere.
//!
//! This module depends on nothing of the crate: it is the bottom layer.

/// Defines [`Code`] and its table from one list: variant, name, status.
macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $status:literal;)*) => {
        /// A stable error code (see the module docs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in table order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The stable, machine-readable name (`queue_full`, …): the
            /// `code` of an HTTP error body and the value of metric labels.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }

            /// The HTTP status this code is answered with.
            pub const fn status(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)*
                }
            }
        }
    };
}

codes! {
    // --- the request itself -------------------------------------------
    /// A form field or query parameter has a bad value.
    InvalidParameter => "invalid_parameter", 400;
    /// The body is not `multipart/form-data` with a boundary.
    InvalidContentType => "invalid_content_type", 400;
    /// The multipart body is malformed.
    InvalidMultipart => "invalid_multipart", 400;
    /// The form has no `file` part.
    MissingFile => "missing_file", 400;
    /// The form has more than one `file` part.
    DuplicateFile => "duplicate_file", 400;
    /// The form has too many parts.
    TooManyFields => "too_many_fields", 400;
    /// A text field is too long.
    FieldTooLong => "field_too_long", 400;
    /// `X-Max-Queue-Wait-Ms` is not a positive number.
    InvalidMaxQueueWait => "invalid_max_queue_wait", 400;
    /// `X-Fault-Inject` is not a known fault.
    InvalidFault => "invalid_fault", 400;
    /// The route does not take this method.
    MethodNotAllowed => "method_not_allowed", 405;
    /// The body came too slowly or took too long.
    UploadTimeout => "upload_timeout", 408;
    /// The body is larger than `--max-upload-bytes`.
    UploadTooLarge => "upload_too_large", 413;
    /// `Host` is not in `--allowed-hosts`.
    HostNotAllowed => "host_not_allowed", 421;
    /// Too many uploads are being read at once.
    TooManyUploads => "too_many_uploads", 429;
    /// The client already holds its fair share of the node while other
    /// clients wait (per API key, else per peer address).
    ClientOverShare => "client_over_share", 429;

    // --- the audio -----------------------------------------------------
    /// The file has zero bytes.
    EmptyFile => "empty_file", 400;
    /// The container is malformed, or none of its audio decodes.
    CorruptAudio => "corrupt_audio", 400;
    /// The file holds no audio samples.
    NoAudio => "no_audio", 400;
    /// The audio holds NaN or infinite samples.
    InvalidSamples => "invalid_samples", 400;
    /// The audio is longer than `--max-audio-secs`.
    AudioTooLong => "audio_too_long", 413;
    /// Unknown container or codec.
    UnsupportedAudio => "unsupported_audio", 415;
    /// Too much of the audio is undecodable (bad CRCs, damaged frames).
    DamagedAudio => "damaged_audio", 422;
    /// The shared decoded-audio memory budget is full.
    DecodeBusy => "decode_busy", 503;

    // --- admission and decoding -----------------------------------------
    /// The queue is full.
    QueueFull => "queue_full", 429;
    /// The worker is starting, restarting or down.
    WorkerUnavailable => "worker_unavailable", 503;
    /// The node is draining for shutdown.
    ShuttingDown => "shutting_down", 503;
    /// The request waited past its queue deadline.
    QueueTimeout => "queue_timeout", 504;
    /// The decode passed its deadline; the worker was killed.
    DecodeTimeout => "decode_timeout", 504;
    /// The worker stopped sending heartbeats; it was killed.
    WorkerUnresponsive => "worker_unresponsive", 504;
    /// The worker answered out of turn; it was restarted.
    WorkerProtocolError => "worker_protocol_error", 502;
    /// The job could not be handed to the worker.
    JobUnsendable => "job_unsendable", 500;
    /// The worker process died while decoding.
    WorkerCrashed => "worker_crashed", 500;
    /// The input crashed the worker repeatedly and is refused.
    InputQuarantined => "input_quarantined", 422;
    /// The worker refused the decode options.
    InvalidOptions => "invalid_options", 400;
    /// The worker refused the audio.
    InvalidAudio => "invalid_audio", 400;
    /// The engine failed on this request.
    EngineError => "engine_error", 500;
    /// The client left, or the job was cancelled.
    Cancelled => "cancelled", 408;
    /// A bug or a failed internal task (details in the logs).
    InternalError => "internal_error", 500;

    // --- async jobs and the rest ----------------------------------------
    /// No such job (or a malformed id, or it was deleted or purged).
    JobNotFound => "job_not_found", 404;
    /// A rendered result was asked for before the job is done.
    JobNotDone => "job_not_done", 409;
    /// `--jobs-max-pending` jobs are queued or running.
    JobBacklogFull => "job_backlog_full", 429;
    /// The job store cannot be written or was not opened.
    StoreUnavailable => "store_unavailable", 503;
    /// A job's stored audio is missing or unreadable.
    AudioLost => "audio_lost", 500;
    /// The service stopped too many times while decoding this job.
    Interrupted => "interrupted", 500;
    /// The node runs without the job service.
    JobsDisabled => "jobs_disabled", 404;
    /// `/metrics` is exported through another recorder in this process.
    MetricsUnavailable => "metrics_unavailable", 404;

    // --- access and the OpenAI API surface ------------------------------
    /// The node requires an API key and the request has none
    /// (`Authorization: Bearer <key>`).
    MissingApiKey => "missing_api_key", 401;
    /// The request's API key is not one of the node's.
    InvalidApiKey => "invalid_api_key", 401;
    /// The request's API key already has its most requests in progress.
    KeyBusy => "key_busy", 429;
    /// `GET /v1/models/{id}` for a model the node does not serve.
    ModelNotFound => "model_not_found", 404;
    /// A translation asked of an English-only model.
    ModelCannotTranslate => "model_cannot_translate", 400;
    /// A field OpenAI's API has but the node cannot honour
    /// (`known_speaker_names`, diarization formats).
    UnsupportedParameter => "unsupported_parameter", 400;
    // --- realtime sessions (`/v1/realtime`; `error` events) --------------
    /// A client event is not JSON, or not an object with a string `type`,
    /// or a required field is missing.
    InvalidEvent => "invalid_event", 400;
    /// A client event's `type` is not one a transcription session takes.
    UnknownEvent => "unknown_event", 400;
    /// An append's `audio` is not base64 of whole 16-bit samples.
    InvalidAudioChunk => "invalid_audio_chunk", 400;
    /// One append carries more audio than `--realtime-max-append-bytes`.
    AppendTooLarge => "append_too_large", 413;
    /// The session's audio buffer holds `--realtime-max-utterance-secs`.
    AudioBufferFull => "input_audio_buffer_full", 413;
    /// A commit with (almost) no audio in the buffer.
    AudioBufferEmpty => "input_audio_buffer_commit_empty", 400;
    /// `--realtime-max-sessions` sessions are open.
    TooManySessions => "too_many_sessions", 429;
    /// The session received nothing for `--realtime-idle-timeout-secs`.
    SessionIdle => "session_idle_timeout", 408;
    /// The session reached `--realtime-max-session-secs`.
    SessionExpired => "session_expired", 408;
}

impl Code {
    /// OpenAI's error `type` for this code's status.
    pub const fn error_type(self) -> &'static str {
        match self.status() {
            429 => "rate_limit_error",
            503 => "service_unavailable_error",
            408 | 504 => "timeout_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// Whether a client may retry the same request later (the answer
    /// carries `Retry-After`).
    pub const fn is_retryable(self) -> bool {
        matches!(self.status(), 429 | 503)
    }
}

/// `code == "queue_full"`: compares the name.
impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_statuses_are_errors() {
        let mut seen = HashSet::new();
        for code in Code::ALL {
            let name = code.name();
            assert!(seen.insert(name), "{name} twice");
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
                "{name}"
            );
            assert!((400..600).contains(&code.status()), "{name}");
            assert_eq!(code.to_string(), name);
        }
    }

    #[test]
    fn types_follow_the_status() {
        assert_eq!(Code::QueueFull.error_type(), "rate_limit_error");
        assert_eq!(
            Code::WorkerUnavailable.error_type(),
            "service_unavailable_error"
        );
        assert_eq!(Code::QueueTimeout.error_type(), "timeout_error");
        assert_eq!(Code::UploadTimeout.error_type(), "timeout_error");
        assert_eq!(Code::WorkerCrashed.error_type(), "server_error");
        assert_eq!(Code::InvalidParameter.error_type(), "invalid_request_error");
        assert!(Code::QueueFull.is_retryable() && Code::DecodeBusy.is_retryable());
        assert!(!Code::QueueTimeout.is_retryable());
    }
}

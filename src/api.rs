//! The node's request and answer types: what the HTTP layer (or a host
//! application embedding the node) hands to the actor tree, and what it gets
//! back. Every way a request can end is a variant here, so a client always
//! learns what happened.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::error_code::Code;
pub use asr_ipc::{
    DecodeOptions, Fault, JobResult, Segment, Task, TokenLogprob, Word, WorkerError,
};

/// One transcription request, audio already decoded to 16 kHz mono.
#[derive(Debug)]
pub struct TranscriptionRequest {
    /// 16 kHz mono 16-bit PCM (`x / 32768.0` is the sample in [-1, 1)), the
    /// format faster-whisper decodes audio to; see [`Self::from_f32`] for
    /// float audio.
    pub samples: Vec<i16>,
    /// Decode options passed to the worker.
    pub options: DecodeOptions,
    /// Longest time the request may wait in the queue before it is answered
    /// with [`AsrError::QueueTimeout`]; `None` uses the node's default, and a
    /// longer value than the node's default is capped to it.
    pub max_queue_wait: Option<Duration>,
    /// The span the node's spans (`queue.wait`, `worker.decode`, …) become
    /// children of. Usually the HTTP request's span.
    pub parent_span: tracing::Span,
    /// Fault to inject in the worker (only honoured when the worker runs with
    /// fault injection enabled; for tests).
    pub fault: Option<Fault>,
    /// Receives decode progress after each 30 s window (async jobs).
    pub progress: Option<ProgressSink>,
    /// Receives each window's finished segments as soon as the worker has
    /// them (streaming answers). After a worker crash the retried job sends
    /// its segments again from id 0: keep the ids already seen.
    pub segments: Option<SegmentSink>,
    /// Hash of `samples` (to recognise a quarantined input), computed by
    /// [`crate::AsrNode::transcribe`] on the blocking pool before the
    /// request reaches the actors, whose handlers must not spend a second
    /// hashing hours of audio. Leave it `None`.
    pub fingerprint: Option<u64>,
    /// The job's priority class in the queue ([`JobClass`]).
    pub class: JobClass,
}

/// A job's priority class: the queue hands the worker the waiting job of
/// the highest class first (first come, first served within a class), and
/// every class shares the one capacity. See [`crate::actors::queue`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobClass {
    /// A live utterance of a realtime session (`/v1/realtime`): a person
    /// is waiting for the words as they speak.
    Realtime,
    /// A synchronous upload (`POST /v1/audio/transcriptions`, the library).
    #[default]
    Sync,
    /// An async job (`/v1/jobs`): its client polls later.
    Async,
}

/// Decode progress of one job.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// Audio seconds decoded so far.
    pub decoded_secs: f32,
    /// Audio seconds in the job.
    pub total_secs: f32,
}

/// Where a job's progress is published; the latest value wins.
pub type ProgressSink = tokio::sync::watch::Sender<Progress>;

/// Where a job's segments go while it decodes, one batch per window.
pub type SegmentSink = tokio::sync::mpsc::UnboundedSender<Vec<Segment>>;

impl TranscriptionRequest {
    /// A request with default options and no parent span.
    pub fn new(samples: Vec<i16>) -> Self {
        Self {
            samples,
            options: DecodeOptions::default(),
            max_queue_wait: None,
            parent_span: tracing::Span::current(),
            fault: None,
            progress: None,
            segments: None,
            fingerprint: None,
            class: JobClass::Sync,
        }
    }

    /// A request for 16 kHz mono `f32` PCM in [-1, 1] (converted to 16-bit;
    /// samples outside the range saturate), with default options.
    pub fn from_f32(samples: &[f32]) -> Self {
        Self::new(crate::audio::to_i16(samples))
    }

    /// Seconds of audio in the request.
    pub fn audio_secs(&self) -> f64 {
        self.samples.len() as f64 / asr_ipc::SAMPLE_RATE as f64
    }
}

// --- What a request asks the answer to look like ---------------------

/// One of OpenAI's `response_format` values.
///
/// Serialised as that value (`"verbose_json"`), which is how job records
/// store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// `{"text": "..."}` (the default).
    #[default]
    Json,
    /// Plain text.
    Text,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
    /// JSON with language, duration, segments and optionally words.
    VerboseJson,
}

impl ResponseFormat {
    /// The value as clients spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFormat::Json => "json",
            ResponseFormat::Text => "text",
            ResponseFormat::Srt => "srt",
            ResponseFormat::Vtt => "vtt",
            ResponseFormat::VerboseJson => "verbose_json",
        }
    }
}

/// An unknown `response_format` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown response_format {0:?}; expected json, text, srt, vtt or verbose_json")]
pub struct UnknownFormat(pub String);

impl FromStr for ResponseFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(ResponseFormat::Json),
            "text" => Ok(ResponseFormat::Text),
            "srt" => Ok(ResponseFormat::Srt),
            "vtt" => Ok(ResponseFormat::Vtt),
            "verbose_json" => Ok(ResponseFormat::VerboseJson),
            _ => Err(UnknownFormat(s.to_string())),
        }
    }
}

/// Which timestamp detail `verbose_json` carries
/// (`timestamp_granularities[]`).
///
/// Serialised as `segment_timestamps` / `word_timestamps` (the fields job
/// records have always stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granularities {
    /// Include `segments`.
    #[serde(rename = "segment_timestamps")]
    pub segment: bool,
    /// Include `words` (and ask the worker for word timestamps).
    #[serde(rename = "word_timestamps")]
    pub word: bool,
}

impl Default for Granularities {
    /// Segments only, like OpenAI when the field is absent.
    fn default() -> Self {
        Self {
            segment: true,
            word: false,
        }
    }
}

/// A finished transcription and how the node got there.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// Node-assigned job id.
    pub job_id: u64,
    /// The worker's result.
    pub result: JobResult,
    /// Time spent waiting in the queue.
    pub queue_wait: Duration,
    /// Time from handing the job to the worker until its answer arrived.
    pub decode_time: Duration,
    /// Generation (restart count) of the worker that decoded it.
    pub worker_generation: u64,
}

/// Every way a request can fail. The HTTP layer maps each to a status code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AsrError {
    /// The queue is full (429).
    #[error("the server is busy: {queued} jobs are waiting")]
    Busy {
        /// When a retry is likely to be admitted.
        retry_after: Duration,
        /// Jobs waiting when the request was refused.
        queued: usize,
    },
    /// The worker is starting, restarting or down (503).
    #[error("the transcription worker is unavailable: {reason}")]
    Unavailable {
        /// When a retry is likely to succeed.
        retry_after: Duration,
        /// Why, for humans.
        reason: String,
    },
    /// Waited past its deadline in the queue; never decoded (504).
    #[error("waited {waited:?} in the queue, past its deadline")]
    QueueTimeout {
        /// How long it waited.
        waited: Duration,
    },
    /// The decode took longer than its deadline; the worker was killed (504).
    #[error("decoding exceeded its deadline of {limit:?}")]
    DecodeTimeout {
        /// The deadline that was exceeded.
        limit: Duration,
    },
    /// The worker sent no heartbeat for this long while holding the job
    /// (frozen: stopped, starved, swapped out); it was killed and
    /// restarted (504).
    #[error("the worker stopped responding (no heartbeat for {silent_for:?})")]
    WorkerUnresponsive {
        /// How long it had been silent.
        silent_for: Duration,
    },
    /// The worker answered a job other than the one it was decoding, so no
    /// answer it gave can be trusted: every job it held fails with this and
    /// it is restarted (502).
    #[error("the worker broke the protocol: {detail}")]
    WorkerProtocol {
        /// What it did.
        detail: String,
    },
    /// The job could not be handed to the worker; nothing was sent (500).
    #[error("the job could not be sent to the worker: {detail}")]
    Unsendable {
        /// Why.
        detail: String,
    },
    /// The worker died while decoding this request (502/500).
    #[error("the worker process died while decoding: {detail}")]
    WorkerCrashed {
        /// Exit status or signal.
        detail: String,
    },
    /// This input crashed the worker twice and is refused (422).
    #[error("this input crashed the worker twice and was quarantined")]
    Quarantined,
    /// The worker refused the job (bad options or audio) (400/422).
    #[error("{0}")]
    Rejected(WorkerError),
    /// The node is shutting down (503).
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The client went away before decoding; nothing was decoded.
    #[error("the client disconnected")]
    Cancelled,
    /// An internal fault of the node (500).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Longest worker message quoted back to a client.
const MAX_QUOTED_LEN: usize = 200;

impl AsrError {
    /// The error's stable code (which fixes its HTTP status): see
    /// [`crate::error_code`].
    pub fn code(&self) -> Code {
        match self {
            AsrError::Busy { .. } => Code::QueueFull,
            AsrError::Unavailable { .. } => Code::WorkerUnavailable,
            AsrError::ShuttingDown => Code::ShuttingDown,
            AsrError::QueueTimeout { .. } => Code::QueueTimeout,
            AsrError::DecodeTimeout { .. } => Code::DecodeTimeout,
            AsrError::WorkerUnresponsive { .. } => Code::WorkerUnresponsive,
            AsrError::WorkerProtocol { .. } => Code::WorkerProtocolError,
            AsrError::Unsendable { .. } => Code::JobUnsendable,
            AsrError::WorkerCrashed { .. } => Code::WorkerCrashed,
            AsrError::Quarantined => Code::InputQuarantined,
            AsrError::Rejected(WorkerError::InvalidOptions(_)) => Code::InvalidOptions,
            AsrError::Rejected(WorkerError::InvalidAudio(_)) => Code::InvalidAudio,
            AsrError::Rejected(WorkerError::Engine(_)) => Code::EngineError,
            AsrError::Cancelled | AsrError::Rejected(WorkerError::Cancelled) => Code::Cancelled,
            AsrError::Internal(_) => Code::InternalError,
        }
    }

    /// What a client is told: a short sentence about its request that
    /// never carries internal detail (exit statuses, signals, paths: those
    /// are in `Display`, for the logs). The worker's own reason is quoted
    /// only for invalid options or audio, which are about the client's input.
    pub fn client_message(&self) -> String {
        match self {
            AsrError::Busy { queued, .. } => {
                format!("the server is busy ({queued} requests waiting); retry later")
            }
            AsrError::Unavailable { .. } => {
                "the transcription worker is starting or restarting; retry later".into()
            }
            AsrError::ShuttingDown => {
                "the server is shutting down; retry on another instance".into()
            }
            AsrError::QueueTimeout { .. } => {
                "the request waited too long in the queue and was not transcribed".into()
            }
            AsrError::DecodeTimeout { .. } => {
                "transcription took longer than its deadline and was stopped".into()
            }
            AsrError::WorkerUnresponsive { .. } => {
                "the transcription worker stopped responding while holding this request; \
                 it was restarted and the request was not transcribed"
                    .into()
            }
            AsrError::WorkerProtocol { .. } => {
                "the transcription worker answered out of turn, so its answers could not be \
                 trusted; it was restarted and this request was not transcribed"
                    .into()
            }
            AsrError::Unsendable { .. } => {
                "the request could not be handed to the transcription worker and was not \
                 transcribed"
                    .into()
            }
            AsrError::WorkerCrashed { .. } => {
                "the transcription worker failed while processing this request".into()
            }
            AsrError::Quarantined => {
                "this audio repeatedly crashed the transcription worker and is refused".into()
            }
            AsrError::Rejected(WorkerError::InvalidOptions(m)) => {
                format!("invalid options: {}", quote(m))
            }
            AsrError::Rejected(WorkerError::InvalidAudio(m)) => {
                format!("invalid audio: {}", quote(m))
            }
            AsrError::Rejected(WorkerError::Engine(_)) => {
                "the transcription engine failed on this request".into()
            }
            AsrError::Cancelled | AsrError::Rejected(WorkerError::Cancelled) => {
                "the request was cancelled".into()
            }
            AsrError::Internal(_) => "an internal error occurred".into(),
        }
    }

    /// When a retry is likely to be admitted, for the refusals a client
    /// should retry (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AsrError::Busy { retry_after, .. } | AsrError::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            AsrError::ShuttingDown => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// A worker message cut to a sane length at a character boundary.
fn quote(m: &str) -> String {
    let m = m.trim();
    match m.char_indices().nth(MAX_QUOTED_LEN) {
        Some((i, _)) => format!("{}…", &m[..i]),
        None => m.to_string(),
    }
}

/// Lifecycle of the worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Spawned, loading the model.
    Starting,
    /// Loaded and idle.
    Ready,
    /// Loaded and decoding a job.
    Busy,
    /// Loaded, but its heartbeat is late: not ready; killed and restarted
    /// if it stays silent past the heartbeat timeout.
    Unresponsive,
    /// Died; a restart is pending (possibly after a backoff).
    Restarting,
    /// Gave up (model failed to load) or stopped at shutdown.
    Stopped,
}

/// One worker of the pool, in [`NodeStatus::workers`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerStatus {
    /// Its id (`0..N`, stable across restarts).
    pub id: usize,
    /// The device it runs on, as configured (`cpu`, `cuda:1`, …).
    pub device: String,
    /// Its engine threads (0 = CTranslate2's default).
    pub threads: u32,
    /// Its lifecycle state.
    pub state: WorkerState,
    /// Its process id, when one runs.
    pub pid: Option<u32>,
    /// 0 for its first process, +1 per restart.
    pub generation: u64,
    /// Its restarts since start.
    pub restarts: u64,
    /// Cause of its last exit, if any.
    pub last_exit: Option<String>,
    /// Jobs it is decoding.
    pub in_flight: usize,
}

/// A snapshot of the node for `/health`, `/ready` and embedding hosts.
///
/// With several workers (`--workers`, `--devices`) the `worker_*` fields sum
/// up the pool: `worker_state` is the most useful state of any worker
/// (ready, else busy, unresponsive, starting, restarting, stopped),
/// `worker_pid` and `worker_generation` are the first worker's, and
/// `worker_restarts`, `in_flight` count all of them; `workers` has each.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    /// Whether a request sent now would be admitted and decoded (some
    /// worker accepts work).
    pub ready: bool,
    /// Worker lifecycle state (of the pool, see above).
    pub worker_state: WorkerState,
    /// The first worker's process id, when one runs.
    pub worker_pid: Option<u32>,
    /// The first worker's generation: 0 for its first process, +1 per
    /// restart.
    pub worker_generation: u64,
    /// Restarts since start, all workers.
    pub worker_restarts: u64,
    /// Cause of the last worker exit (any worker), if any.
    pub last_worker_exit: Option<String>,
    /// Workers that accept work now (loaded, ready or busy).
    pub workers_accepting: usize,
    /// Each worker of the pool, by id.
    pub workers: Vec<WorkerStatus>,
    /// Model name reported by the worker's handshake.
    pub model: Option<String>,
    /// Device reported by the worker.
    pub device: Option<String>,
    /// Compute type reported by the worker.
    pub compute_type: Option<String>,
    /// The inference engine the worker runs (CTranslate2 version, library,
    /// CPU backend or GPU), from its handshake.
    pub engine: Option<asr_ipc::EngineInfo>,
    /// Jobs waiting in the queue.
    pub queue_depth: usize,
    /// Queue capacity.
    pub queue_capacity: usize,
    /// Jobs being decoded, all workers.
    pub in_flight: usize,
    /// Seconds since the node started.
    pub uptime_secs: f64,
    /// Whether the node is draining for shutdown.
    pub shutting_down: bool,
    /// Jobs answered since start, by outcome (`ok`, `busy`, `unavailable`,
    /// `queue_timeout`, `decode_timeout`, `worker_unresponsive`,
    /// `worker_protocol`, `unsendable`, `worker_crashed`, `quarantined`,
    /// `rejected`, `shutting_down`, `internal`); outcomes that never
    /// happened are absent.
    pub jobs: std::collections::BTreeMap<&'static str, u64>,
}

/// The node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The worker could not load the model.
    #[error("the worker could not load the model at {model_path}: {cause}")]
    ModelLoad {
        /// Model path tried.
        model_path: String,
        /// Cause.
        cause: String,
    },
    /// The worker binary could not be started.
    #[error("could not start the worker {path}: {cause}")]
    WorkerSpawn {
        /// Worker path tried.
        path: String,
        /// Cause.
        cause: String,
    },
    /// An actor failed to spawn.
    #[error("actor start-up failed: {0}")]
    Actor(String),
}

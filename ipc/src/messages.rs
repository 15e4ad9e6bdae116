//! The frames: [`ToWorker`] and [`FromWorker`] and the types they carry
//! (the worker's [`Hello`], a job's [`JobHeader`] and [`AudioChunk`]s).

use serde::{Deserialize, Serialize};

use crate::{DecodeOptions, JobResult, Pcm, Segment, WorkerError};

/// Messages from the parent to the worker.
// A job is much larger than `Shutdown`; it is decoded once and moved once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Decode this job; its audio follows in [`ToWorker::AudioChunk`]
    /// frames, before any other frame.
    Job(JobHeader),
    /// The next piece of the audio of the job whose header came last.
    AudioChunk(AudioChunk),
    /// Finish and exit cleanly (closing stdin has the same effect).
    Shutdown,
    /// Do not decode this job, or stop decoding it (see the protocol).
    Cancel {
        /// The job to cancel.
        job_id: u64,
    },
    /// The next jobs (each a [`ToWorker::Job`] header and its audio, as
    /// always), with exactly these ids in this order, form one batch: the
    /// worker decodes them together and answers each by its own id. At
    /// least two distinct ids; nothing else may come between this frame
    /// and the end of the last job's audio. (Last variant: the borrowed
    /// `ToWorkerRef` mirrors the first two.)
    Batch {
        /// The batch's jobs, in the order their headers follow.
        job_ids: Vec<u64>,
    },
}

/// Messages from the worker to the parent.
// A result is much larger than the other variants, but every frame is decoded
// once and moved once; boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    /// The model is loaded; the worker accepts jobs.
    Hello(Hello),
    /// The model could not be loaded; the worker exits after sending this.
    LoadFailed(LoadFailure),
    /// Audio seconds decoded so far for a job (sent after each window).
    Progress {
        /// The job this is about.
        job_id: u64,
        /// Seconds of audio decoded so far.
        decoded_secs: f32,
        /// Seconds of audio in the job.
        total_secs: f32,
        /// The segments this window finished, final (ids, times and text as
        /// in the job's [`JobResult`]); always empty unless the job asked
        /// for them with [`Job::stream_segments`].
        segments: Vec<Segment>,
    },
    /// A job finished with a transcript.
    Done(JobResult),
    /// A job failed without crashing the worker.
    Failed {
        /// The job this is about.
        job_id: u64,
        /// What went wrong.
        error: WorkerError,
    },
    /// The worker process is alive (sent every heartbeat interval from its
    /// own thread, busy or idle).
    Heartbeat {
        /// The job the engine is decoding, if any (informational).
        running: Option<u64>,
    },
}

/// The worker's handshake, sent once after the model is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// `worker-proc` crate version.
    pub worker_version: String,
    /// Model name (the model directory's name).
    pub model: String,
    /// Whether the model is multilingual (`false` for `.en` models).
    pub multilingual: bool,
    /// Device the model runs on (`cpu` or `cuda`).
    pub device: String,
    /// Compute type in effect (`int8`, `float32`, …).
    pub compute_type: String,
    /// Engine threads (intra-op) in effect.
    pub threads: u32,
    /// Time it took to load the model.
    pub load_ms: u64,
    /// The worker's process id.
    pub pid: u32,
    /// The inference engine the worker runs on.
    pub engine: EngineInfo,
}

/// Which CTranslate2 the worker runs, and on what.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EngineInfo {
    /// CTranslate2 version (`4.8.4`).
    pub version: String,
    /// The shared library the worker loaded (its path), or how the engine
    /// was linked (`static (built from source …)`).
    pub library: String,
    /// What it runs on, in one line: `cpu, <vendor>, ISA AVX2, SGEMM DNNL,
    /// GEMM_S8 DNNL` or `cuda: GPU #0: <name> (CC=9.0)`.
    pub backend: String,
    /// CTranslate2's own system report, a line each.
    pub system_config: Vec<String>,
}

/// Why the model failed to load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadFailure {
    /// The model path the worker tried.
    pub model_path: String,
    /// Human-readable cause.
    pub cause: String,
}

/// What the model is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Task {
    /// Transcribe in the spoken language.
    #[default]
    Transcribe,
    /// Translate into English.
    Translate,
}

/// Deliberate faults, honoured only by a worker started with
/// `--enable-fault-injection`; used by crash and hang tests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Fault {
    /// Abort the process (SIGABRT) when the job starts.
    Crash,
    /// Never answer the job (sleep forever on the main thread).
    Hang,
    /// Sleep this many milliseconds before decoding.
    SlowMs(u64),
    /// Answer out of order: wait for the next job, decode and answer it
    /// first, then this one (a broken worker, for the pairing tests).
    AnswerOutOfOrder,
    /// Answer this job under another id (its own plus 1000).
    AnswerWrongId,
}

/// The header of one transcription job, sent as [`ToWorker::Job`]; its
/// `sample_count` samples follow in [`ToWorker::AudioChunk`] frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobHeader {
    /// Id assigned by the parent, echoed in every answer.
    pub id: u64,
    /// W3C `traceparent` of the span the worker's phases belong to.
    pub traceparent: Option<String>,
    /// Samples of 16 kHz mono PCM that follow (at most [`MAX_JOB_SAMPLES`]).
    pub sample_count: u64,
    /// Decode options.
    pub options: DecodeOptions,
    /// Fault to inject (ignored unless fault injection is enabled).
    pub fault: Option<Fault>,
    /// Send each window's finished segments in its
    /// [`FromWorker::Progress`] (for streaming answers).
    pub stream_segments: bool,
}

/// One piece of a job's audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioChunk {
    /// The job it belongs to (the one whose header came last).
    pub job_id: u64,
    /// At most [`CHUNK_SAMPLES`] samples.
    pub pcm: Pcm,
}

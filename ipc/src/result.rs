//! What a job gives back: [`JobResult`] with its segments, words and
//! timings, or a [`WorkerError`].

use serde::{Deserialize, Serialize};

/// A finished transcription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job this is about.
    pub job_id: u64,
    /// Full text (segments joined).
    pub text: String,
    /// Segments with their times.
    pub segments: Vec<Segment>,
    /// Language used or detected (ISO 639-1).
    pub language: String,
    /// Probability of the detected language (1.0 when it was given).
    pub language_probability: f32,
    /// Seconds of audio in the job.
    pub duration_secs: f32,
    /// The worker's own phase timings.
    pub timings: Timings,
}

/// One decoded segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Index in the job.
    pub id: u32,
    /// Window start, in 10 ms frames.
    pub seek: u32,
    /// Start time, seconds.
    pub start: f32,
    /// End time, seconds.
    pub end: f32,
    /// Text of the segment.
    pub text: String,
    /// Token ids (text and timestamp tokens).
    pub tokens: Vec<u32>,
    /// Temperature the window was decoded at.
    pub temperature: f32,
    /// Mean token log-probability of the window.
    pub avg_logprob: f32,
    /// gzip compression ratio of the window's text.
    pub compression_ratio: f32,
    /// Probability that the window holds no speech.
    pub no_speech_prob: f32,
    /// Word timings when requested.
    pub words: Vec<Word>,
}

/// A word with its times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    /// Start time, seconds.
    pub start: f32,
    /// End time, seconds.
    pub end: f32,
    /// The word, with its leading space if any.
    pub word: String,
    /// Mean probability of the word's tokens.
    pub probability: f32,
    /// The word's tokens with their log-probabilities, when the job asked
    /// for them ([`crate::DecodeOptions::token_logprobs`]); else empty.
    #[serde(default)]
    pub tokens: Vec<TokenLogprob>,
}

/// One token and its log-probability (OpenAI's `logprobs` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text (lossy where it holds part of a UTF-8 character).
    pub token: String,
    /// Natural log of the token's probability.
    pub logprob: f32,
    /// The token's bytes.
    pub bytes: Vec<u8>,
}

/// Phase timings measured inside the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Timings {
    /// Wall-clock time (Unix ns) when the worker began the job.
    pub started_unix_ns: u64,
    /// Total time the worker spent on the job, microseconds.
    pub total_us: u64,
    /// Each phase in order, with wall-clock start and end.
    pub phases: Vec<Phase>,
    /// How long the engine sat without work before this job, microseconds:
    /// from the end of the worker's previous job to the start of this one
    /// (`None` for the first job). Under sustained load this is the hand-over
    /// gap between jobs; otherwise it is simply idle time.
    pub idle_before_us: Option<u64>,
}

/// One timed phase of a decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// `features`, `detect_language`, `encode`, `generate`, `align`…
    pub name: String,
    /// Wall-clock start, Unix ns.
    pub start_unix_ns: u64,
    /// Wall-clock end, Unix ns.
    pub end_unix_ns: u64,
    /// Index of the 30 s window this phase belongs to, if any.
    pub window: Option<u32>,
    /// Temperature of a `generate` phase.
    pub temperature: Option<f32>,
}

/// A job failure that the worker survived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum WorkerError {
    /// The job's options are not valid for this model.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The audio is unusable (empty, non-finite samples…).
    #[error("invalid audio: {0}")]
    InvalidAudio(String),
    /// The engine returned an error.
    #[error("engine error: {0}")]
    Engine(String),
    /// The parent cancelled the job ([`ToWorker::Cancel`]).
    #[error("cancelled")]
    Cancelled,
}

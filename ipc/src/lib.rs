//! The wire contract between the service and `worker-proc`.
//!
//! Both ends depend on this crate, so they cannot disagree about the frames.
//!
//! # Framing
//! Every message is one frame: a 4-byte big-endian length followed by that
//! many bytes of [postcard]-encoded payload. This is exactly the default
//! layout of `tokio_util::codec::LengthDelimitedCodec`, which the (async)
//! parent uses; the (blocking) child uses [`read_frame`] / [`write_frame`].
//! Frames longer than [`MAX_FRAME_LEN`] are refused on both sides.
//!
//! # Protocol
//! 1. The child loads the model, then writes [`FromWorker::Hello`] (or
//!    [`FromWorker::LoadFailed`] and exits non-zero).
//! 2. The parent checks [`Hello::protocol_version`] against
//!    [`PROTOCOL_VERSION`]; postcard is not self-describing, so a mismatch
//!    means the parent must not send anything.
//! 3. The parent sends [`ToWorker::Job`]; the child decodes it on its main
//!    thread and answers with zero or more [`FromWorker::Progress`] frames
//!    and exactly one [`FromWorker::Done`] or [`FromWorker::Failed`], in the
//!    order the jobs were sent.
//!    The parent may stage the next job before the answer arrives: the
//!    child reads (and deserialises) frames on a thread of its own while it
//!    decodes, so the next job's audio is already in memory when the current
//!    one ends, and the engine does not wait for it.
//! 4. [`ToWorker::Cancel`] may come at any time: a staged job it names is
//!    answered [`WorkerError::Cancelled`] without being decoded, a running
//!    one stops at its next 30 s window and is answered the same; a job
//!    already answered is not affected.
//! 5. The child exits when its stdin reaches EOF or on [`ToWorker::Shutdown`]
//!    (after the jobs sent before it).
//!
//! Decoding never panics on malformed input: [`decode`] returns an error.

#![warn(missing_docs)]

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Version of this protocol. Bump on any change of the frame types.
///
/// 2: `DecodeOptions::vad_filter` and `DecodeOptions::vad`;
/// `ToWorker::Cancel` and `WorkerError::Cancelled`; `Timings::idle_before_us`.
///
/// 3: `Job::stream_segments` and `FromWorker::Progress::segments`.
pub const PROTOCOL_VERSION: u32 = 4;

/// Largest frame either side accepts: 512 MiB, about 2.3 hours of 16 kHz
/// mono f32 PCM in one job.
pub const MAX_FRAME_LEN: usize = 512 * 1024 * 1024;

/// Sample rate of every PCM buffer that crosses the boundary.
pub const SAMPLE_RATE: u32 = 16_000;

/// Messages from the parent to the worker.
// A job is much larger than `Shutdown`; it is decoded once and moved once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Decode this job.
    Job(Job),
    /// Finish and exit cleanly (closing stdin has the same effect).
    Shutdown,
    /// Do not decode this job, or stop decoding it (see the protocol).
    Cancel {
        /// The job to cancel.
        job_id: u64,
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
}

/// One transcription job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Id assigned by the parent, echoed in every answer.
    pub id: u64,
    /// W3C `traceparent` of the span the worker's phases belong to.
    pub traceparent: Option<String>,
    /// 16 kHz mono PCM in [-1, 1].
    pub samples: Vec<f32>,
    /// Decode options.
    pub options: DecodeOptions,
    /// Fault to inject (ignored unless fault injection is enabled).
    pub fault: Option<Fault>,
    /// Send each window's finished segments in its
    /// [`FromWorker::Progress`] (for streaming answers).
    pub stream_segments: bool,
}

/// A borrowed view of [`ToWorker::Job`] with the same wire layout, so the
/// parent can send PCM it keeps (for a retry) without copying it.
#[derive(Debug, Serialize)]
pub enum ToWorkerRef<'a> {
    /// Same as [`ToWorker::Job`].
    Job(JobRef<'a>),
}

/// Borrowed [`Job`]; serialises to exactly the same bytes.
#[derive(Debug, Serialize)]
pub struct JobRef<'a> {
    /// See [`Job::id`].
    pub id: u64,
    /// See [`Job::traceparent`].
    pub traceparent: Option<&'a str>,
    /// See [`Job::samples`].
    pub samples: &'a [f32],
    /// See [`Job::options`].
    pub options: &'a DecodeOptions,
    /// See [`Job::fault`].
    pub fault: Option<Fault>,
    /// See [`Job::stream_segments`].
    pub stream_segments: bool,
}

/// Decode options; the defaults are faster-whisper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeOptions {
    /// Spoken language (ISO 639-1), or `None` to detect it.
    pub language: Option<String>,
    /// Transcribe or translate.
    pub task: Task,
    /// Beam width at temperature 0 (1 = greedy).
    pub beam_size: u32,
    /// Candidates sampled at temperatures above 0.
    pub best_of: u32,
    /// Beam search patience factor.
    pub patience: f32,
    /// Exponential length penalty.
    pub length_penalty: f32,
    /// Penalty on repeated tokens (1 = none).
    pub repetition_penalty: f32,
    /// Forbid repeating n-grams of this size (0 = off).
    pub no_repeat_ngram_size: u32,
    /// Temperatures tried in order when a window's result fails the
    /// compression-ratio or log-probability checks.
    pub temperatures: Vec<f32>,
    /// A window whose text compresses better than this is retried hotter.
    pub compression_ratio_threshold: Option<f32>,
    /// A window whose mean token log-probability is below this is retried.
    pub log_prob_threshold: Option<f32>,
    /// A window whose no-speech probability is above this (and whose
    /// log-probability is below `log_prob_threshold`) is skipped as silence.
    pub no_speech_threshold: Option<f32>,
    /// Feed the previous window's text as a prompt to the next one.
    pub condition_on_previous_text: bool,
    /// Text to prime the first window with (names, spellings, style).
    pub initial_prompt: Option<String>,
    /// Produce no timestamps (a single segment per window).
    pub without_timestamps: bool,
    /// Latest allowed first timestamp in a window, seconds.
    pub max_initial_timestamp: f32,
    /// Word-level timestamps.
    pub word_timestamps: bool,
    /// Suppress blank outputs at the start of sampling.
    pub suppress_blank: bool,
    /// Voice-activity detection first (faster-whisper's `vad_filter`): only
    /// the speech is decoded, and timestamps are mapped back to the
    /// original timeline. Off by default, as in faster-whisper.
    #[serde(default)]
    pub vad_filter: bool,
    /// Parameters of the voice-activity detection (used with `vad_filter`).
    #[serde(default)]
    pub vad: VadOptions,
}

/// Voice-activity detection parameters; the defaults and meanings are
/// faster-whisper's `VadOptions` (for `WhisperModel.transcribe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VadOptions {
    /// A frame whose speech probability is at least this is speech.
    pub threshold: f32,
    /// Below this a frame ends speech; between it and `threshold` a frame
    /// keeps the current state. `None`: `max(threshold - 0.15, 0.01)`.
    pub neg_threshold: Option<f32>,
    /// Speech chunks this short or shorter are dropped.
    pub min_speech_duration_ms: u32,
    /// Longer speech chunks are split (at the last silence of at least
    /// 98 ms if any); `None` = unlimited (faster-whisper's default).
    pub max_speech_duration_s: Option<f32>,
    /// Silence must last this long to end a speech chunk.
    pub min_silence_duration_ms: u32,
    /// Padding added on each side of every speech chunk.
    pub speech_pad_ms: u32,
}

impl Default for VadOptions {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_duration_ms: 0,
            max_speech_duration_s: None,
            min_silence_duration_ms: 2000,
            speech_pad_ms: 400,
        }
    }
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            language: None,
            task: Task::Transcribe,
            beam_size: 5,
            best_of: 5,
            patience: 1.0,
            length_penalty: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            log_prob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            condition_on_previous_text: true,
            initial_prompt: None,
            without_timestamps: false,
            max_initial_timestamp: 1.0,
            word_timestamps: false,
            suppress_blank: true,
            vad_filter: false,
            vad: VadOptions::default(),
        }
    }
}

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

/// A frame that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The payload is not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// The frame is longer than [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLong(usize),
    /// Reading or writing the stream failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Serialises a message into a frame payload (without the length prefix).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let bytes = postcard::to_stdvec(msg)?;
    if bytes.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(bytes.len()));
    }
    Ok(bytes)
}

/// Parses a frame payload. Never panics, whatever the bytes.
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, FrameError> {
    Ok(postcard::from_bytes(payload)?)
}

/// Writes one length-prefixed frame and flushes.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let payload = encode(msg)?;
    w.write_all(&(payload.len() as u32).to_be_bytes())?;
    w.write_all(&payload)?;
    w.flush()?;
    Ok(())
}

/// Reads one length-prefixed frame payload.
///
/// Returns `Ok(None)` on a clean EOF before a frame starts; EOF inside a
/// frame is an error, and so is a length above [`MAX_FRAME_LEN`].
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// The codec the async side uses: 4-byte big-endian length, limit
/// [`MAX_FRAME_LEN`]. Wire-compatible with [`read_frame`]/[`write_frame`].
pub fn codec() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job() -> Job {
        Job {
            id: 7,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            samples: vec![0.0, 0.5, -0.25, 1.0],
            options: DecodeOptions::default(),
            fault: None,
            stream_segments: true,
        }
    }

    #[test]
    fn frames_round_trip_through_a_byte_stream() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &ToWorker::Job(job())).unwrap();
        write_frame(&mut wire, &ToWorker::Cancel { job_id: 7 }).unwrap();
        write_frame(&mut wire, &ToWorker::Shutdown).unwrap();
        let mut r = io::Cursor::new(wire);
        let a: ToWorker = decode(&read_frame(&mut r).unwrap().unwrap()).unwrap();
        let c: ToWorker = decode(&read_frame(&mut r).unwrap().unwrap()).unwrap();
        let b: ToWorker = decode(&read_frame(&mut r).unwrap().unwrap()).unwrap();
        assert_eq!(a, ToWorker::Job(job()));
        assert_eq!(c, ToWorker::Cancel { job_id: 7 });
        assert_eq!(b, ToWorker::Shutdown);
        assert!(
            read_frame(&mut r).unwrap().is_none(),
            "clean EOF is Ok(None)"
        );
    }

    #[test]
    fn eof_inside_a_frame_is_an_error() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &ToWorker::Job(job())).unwrap();
        wire.truncate(wire.len() - 3);
        assert!(read_frame(&mut io::Cursor::new(wire)).is_err());
        // and inside the length prefix
        assert!(read_frame(&mut io::Cursor::new(vec![0u8, 0])).is_err());
    }

    #[test]
    fn oversized_length_is_refused_without_allocating() {
        let wire = u32::MAX.to_be_bytes().to_vec();
        match read_frame(&mut io::Cursor::new(wire)) {
            Err(FrameError::TooLong(n)) => assert_eq!(n, u32::MAX as usize),
            other => panic!("expected TooLong, got {other:?}"),
        }
    }

    #[test]
    fn blocking_and_async_framing_agree() {
        use bytes::BytesMut;
        use tokio_util::codec::Decoder;
        let mut wire = Vec::new();
        write_frame(&mut wire, &ToWorker::Job(job())).unwrap();
        let mut buf = BytesMut::from(&wire[..]);
        let frame = codec().decode(&mut buf).unwrap().unwrap();
        assert_eq!(decode::<ToWorker>(&frame).unwrap(), ToWorker::Job(job()));
    }

    #[test]
    fn borrowed_job_frame_is_byte_identical_to_the_owned_one() {
        let j = job();
        let owned = encode(&ToWorker::Job(j.clone())).unwrap();
        let borrowed = encode(&ToWorkerRef::Job(JobRef {
            id: j.id,
            traceparent: j.traceparent.as_deref(),
            samples: &j.samples,
            options: &j.options,
            fault: j.fault,
            stream_segments: j.stream_segments,
        }))
        .unwrap();
        assert_eq!(owned, borrowed);
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<ToWorker>(&bytes);
            let _ = decode::<FromWorker>(&bytes);
            let _ = read_frame(&mut io::Cursor::new(&bytes));
        }

        #[test]
        fn mutated_valid_frames_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let mut payload = encode(&ToWorker::Job(job())).unwrap();
            for (i, b) in flips {
                let i = i.index(payload.len());
                payload[i] ^= b;
            }
            let _ = decode::<ToWorker>(&payload);
        }

        #[test]
        fn results_round_trip(text in ".{0,64}", start in 0f32..100.0, n in 0u32..5) {
            let r = FromWorker::Done(JobResult {
                job_id: 1,
                text: text.clone(),
                segments: (0..n).map(|i| Segment {
                    id: i, seek: 0, start, end: start + 1.0, text: text.clone(), tokens: vec![1, 2],
                    temperature: 0.0, avg_logprob: -0.1, compression_ratio: 1.2, no_speech_prob: 0.01,
                    words: vec![],
                }).collect(),
                language: "en".into(),
                language_probability: 1.0,
                duration_secs: 3.0,
                timings: Timings::default(),
            });
            let bytes = encode(&r).unwrap();
            prop_assert_eq!(decode::<FromWorker>(&bytes).unwrap(), r);
        }
    }
}

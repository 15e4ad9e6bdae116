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
//! 3. The parent sends a job as a [`ToWorker::Job`] header followed at once
//!    by its audio in [`ToWorker::AudioChunk`] frames (see *Audio* below);
//!    the child decodes it on its main thread and answers with zero or more
//!    [`FromWorker::Progress`] frames and exactly one [`FromWorker::Done`] or
//!    [`FromWorker::Failed`], in the order the jobs were sent. Every answer
//!    carries the id of the job it is about; the parent delivers an answer
//!    only to the job with that id, and treats any other id as a broken
//!    worker (see `worker_proxy` in the service).
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
//! 6. From its `Hello` on, the child sends [`FromWorker::Heartbeat`] every
//!    `--heartbeat-interval-ms` from a thread of its own, whatever the engine
//!    does, so a frozen (stopped, swapped-out, deadlocked process) worker is
//!    told from a busy one by the silence, not by the decode deadline.
//!
//! # Audio
//! PCM crosses as 16 kHz mono **16-bit** samples, which is exactly what
//! faster-whisper decodes to (`decode_audio` resamples to s16, then divides
//! by 32768): half the bytes of `f32`, and no precision the model would use.
//! A job's samples are split into [`ToWorker::AudioChunk`] frames of at most
//! [`CHUNK_SAMPLES`] (1 MiB each), sent right after the job's header and
//! before any other frame, so no frame grows with the audio: every length up
//! to [`MAX_JOB_SAMPLES`] (24 h) travels, both ends hold one chunk at a time
//! in their codecs, and [`MAX_FRAME_LEN`] can stay small. The sender uses
//! [`encode_job_header`] and [`encode_audio_chunks`] (or [`write_job`]); the
//! receiver puts the job back together with a [`JobAssembler`], which
//! refuses any chunk that is not the next piece of the job being received.
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
///
/// 4: `Hello::engine`.
///
/// 5: the job's audio as 16-bit PCM in `ToWorker::AudioChunk` frames after
/// a `ToWorker::Job` header (`JobHeader::sample_count`);
/// `FromWorker::Heartbeat`.
pub const PROTOCOL_VERSION: u32 = 5;

/// Largest frame either side accepts: 64 MiB. Audio never comes near it (it
/// travels in chunks of [`CHUNK_SAMPLES`]); the largest other frames are
/// results, well under a megabyte even for hours of speech with word
/// timestamps.
pub const MAX_FRAME_LEN: usize = 64 * 1024 * 1024;

/// Samples per [`ToWorker::AudioChunk`]: 2^19 (1 MiB of PCM, about 33 s).
pub const CHUNK_SAMPLES: usize = 1 << 19;

/// Most samples one job may carry: 24 hours at [`SAMPLE_RATE`]. The
/// receiver refuses a header announcing more (it reserves the announced
/// length up front); the service refuses at start-up an audio limit above
/// it (see [`MAX_JOB_SECS`]).
pub const MAX_JOB_SAMPLES: u64 = 24 * 3600 * SAMPLE_RATE as u64;

/// [`MAX_JOB_SAMPLES`] in seconds.
pub const MAX_JOB_SECS: f64 = MAX_JOB_SAMPLES as f64 / SAMPLE_RATE as f64;

/// Interval of [`FromWorker::Heartbeat`] when the parent does not choose one.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 1000;

/// Sample rate of every PCM buffer that crosses the boundary.
pub const SAMPLE_RATE: u32 = 16_000;

/// Widest beam (and `best_of`) a job may ask for: the HTTP form refuses
/// more (400) and the worker refuses more (`InvalidOptions`); one bound for
/// both ends.
pub const MAX_BEAM_SIZE: u32 = 32;

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

/// 16-bit PCM on the wire: postcard bytes (a length, then the samples
/// little-endian), so a chunk is copied, not encoded sample by sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pcm(pub Vec<i16>);

impl Serialize for Pcm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PcmRef(&self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Pcm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Pcm;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("little-endian 16-bit PCM bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Pcm, E> {
                if !b.len().is_multiple_of(2) {
                    return Err(E::invalid_length(b.len(), &"an even number of bytes"));
                }
                Ok(Pcm(b
                    .chunks_exact(2)
                    .map(|p| i16::from_le_bytes([p[0], p[1]]))
                    .collect()))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Borrowed [`Pcm`]; serialises to exactly the same bytes.
#[derive(Debug, Clone, Copy)]
pub struct PcmRef<'a>(pub &'a [i16]);

impl Serialize for PcmRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.0.len() * 2);
        for x in self.0 {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        s.serialize_bytes(&bytes)
    }
}

/// A borrowed view of [`ToWorker`]'s first two variants with the same wire
/// layout, so the parent can send PCM it keeps (for a retry) without
/// copying all of it.
#[derive(Debug, Serialize)]
pub enum ToWorkerRef<'a> {
    /// Same as [`ToWorker::Job`].
    Job(&'a JobHeader),
    /// Same as [`ToWorker::AudioChunk`].
    AudioChunk(AudioChunkRef<'a>),
}

/// Borrowed [`AudioChunk`]; serialises to exactly the same bytes.
#[derive(Debug, Serialize)]
pub struct AudioChunkRef<'a> {
    /// See [`AudioChunk::job_id`].
    pub job_id: u64,
    /// See [`AudioChunk::pcm`].
    pub pcm: PcmRef<'a>,
}

/// A whole job as the worker decodes it: the header's fields and all of
/// its audio (put together by a [`JobAssembler`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// See [`JobHeader::id`].
    pub id: u64,
    /// See [`JobHeader::traceparent`].
    pub traceparent: Option<String>,
    /// 16 kHz mono PCM; `x / 32768.0` is the sample in [-1, 1).
    pub samples: Vec<i16>,
    /// See [`JobHeader::options`].
    pub options: DecodeOptions,
    /// See [`JobHeader::fault`].
    pub fault: Option<Fault>,
    /// See [`JobHeader::stream_segments`].
    pub stream_segments: bool,
}

/// Encodes a job's header frame payload, refusing more than
/// [`MAX_JOB_SAMPLES`]. Nothing is sent when this fails, so a caller that
/// encodes the header before it records the job as sent can answer the
/// job at once and stay as if it had never seen it.
pub fn encode_job_header(header: &JobHeader) -> Result<Vec<u8>, FrameError> {
    if header.sample_count > MAX_JOB_SAMPLES {
        return Err(FrameError::TooManySamples(header.sample_count));
    }
    encode(&ToWorkerRef::Job(header))
}

/// The chunk frame payloads of a job's audio, in order; none for no audio.
/// Each is at most [`CHUNK_SAMPLES`] samples, far below [`MAX_FRAME_LEN`],
/// so encoding cannot fail for length.
pub fn encode_audio_chunks(
    job_id: u64,
    samples: &[i16],
) -> impl Iterator<Item = Result<Vec<u8>, FrameError>> + '_ {
    samples.chunks(CHUNK_SAMPLES).map(move |pcm| {
        encode(&ToWorkerRef::AudioChunk(AudioChunkRef {
            job_id,
            pcm: PcmRef(pcm),
        }))
    })
}

/// Writes a whole job (header, then its audio in chunks) to a blocking
/// stream; `header.sample_count` is set from `samples`.
pub fn write_job<W: Write>(
    w: &mut W,
    header: &JobHeader,
    samples: &[i16],
) -> Result<(), FrameError> {
    let header = JobHeader {
        sample_count: samples.len() as u64,
        ..header.clone()
    };
    write_payload(w, &encode_job_header(&header)?)?;
    for chunk in encode_audio_chunks(header.id, samples) {
        write_payload(w, &chunk?)?;
    }
    Ok(())
}

/// Why the frames of a job do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    /// A header announced more than [`MAX_JOB_SAMPLES`].
    #[error("job {job_id} announces {samples} samples, more than the limit of {MAX_JOB_SAMPLES}")]
    TooManySamples {
        /// The job.
        job_id: u64,
        /// What it announced.
        samples: u64,
    },
    /// A header or another frame came while a job's audio was incomplete.
    #[error("job {job_id} received {got} of its {expected} samples when another frame came")]
    Incomplete {
        /// The job whose audio was cut.
        job_id: u64,
        /// Samples received.
        got: u64,
        /// Samples announced.
        expected: u64,
    },
    /// An audio chunk came with no job waiting for audio.
    #[error("audio chunk for job {job_id} with no job waiting for audio")]
    Unexpected {
        /// The chunk's job id.
        job_id: u64,
    },
    /// An audio chunk named another job than the one receiving audio.
    #[error("audio chunk for job {got} while job {expected} receives its audio")]
    WrongJob {
        /// The job receiving audio.
        expected: u64,
        /// The chunk's job id.
        got: u64,
    },
    /// More samples came than the header announced.
    #[error("job {job_id} got {got} samples, more than the {expected} announced")]
    TooLong {
        /// The job.
        job_id: u64,
        /// Samples received with this chunk.
        got: u64,
        /// Samples announced.
        expected: u64,
    },
}

/// Puts jobs back together from a header and its chunks (the receiving
/// side of *Audio* in the crate docs). Strict: the chunks must follow their
/// header, name its job and add up to exactly its `sample_count`.
#[derive(Debug, Default)]
pub struct JobAssembler {
    pending: Option<(Job, u64)>,
}

impl JobAssembler {
    /// A new job's header: `Ok(Some(job))` at once if it has no audio.
    pub fn header(&mut self, h: JobHeader) -> Result<Option<Job>, AssemblyError> {
        self.expect_idle()?;
        if h.sample_count > MAX_JOB_SAMPLES {
            return Err(AssemblyError::TooManySamples {
                job_id: h.id,
                samples: h.sample_count,
            });
        }
        let job = Job {
            id: h.id,
            traceparent: h.traceparent,
            samples: Vec::with_capacity(h.sample_count as usize),
            options: h.options,
            fault: h.fault,
            stream_segments: h.stream_segments,
        };
        if h.sample_count == 0 {
            return Ok(Some(job));
        }
        self.pending = Some((job, h.sample_count));
        Ok(None)
    }

    /// The next chunk: `Ok(Some(job))` when it completes its job.
    pub fn chunk(&mut self, c: AudioChunk) -> Result<Option<Job>, AssemblyError> {
        let Some((job, expected)) = self.pending.as_mut() else {
            return Err(AssemblyError::Unexpected { job_id: c.job_id });
        };
        if c.job_id != job.id {
            return Err(AssemblyError::WrongJob {
                expected: job.id,
                got: c.job_id,
            });
        }
        let got = (job.samples.len() + c.pcm.0.len()) as u64;
        if got > *expected {
            return Err(AssemblyError::TooLong {
                job_id: job.id,
                got,
                expected: *expected,
            });
        }
        job.samples.extend_from_slice(&c.pcm.0);
        if got < *expected {
            return Ok(None);
        }
        Ok(self.pending.take().map(|(job, _)| job))
    }

    /// The id of the job whose audio is being received, if any.
    pub fn receiving(&self) -> Option<u64> {
        self.pending.as_ref().map(|(j, _)| j.id)
    }

    /// `Ok` unless a job's audio is incomplete (call before acting on any
    /// frame other than a chunk, and at EOF).
    pub fn expect_idle(&self) -> Result<(), AssemblyError> {
        match &self.pending {
            None => Ok(()),
            Some((job, expected)) => Err(AssemblyError::Incomplete {
                job_id: job.id,
                got: job.samples.len() as u64,
                expected: *expected,
            }),
        }
    }
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
    /// A job announces more samples than [`MAX_JOB_SAMPLES`].
    #[error("a job of {0} samples exceeds the limit of {MAX_JOB_SAMPLES}")]
    TooManySamples(u64),
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
    write_payload(w, &encode(msg)?)
}

/// Writes an already encoded payload (from [`encode`]) as one
/// length-prefixed frame and flushes.
pub fn write_payload<W: Write>(w: &mut W, payload: &[u8]) -> Result<(), FrameError> {
    if payload.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(payload.len()));
    }
    w.write_all(&(payload.len() as u32).to_be_bytes())?;
    w.write_all(payload)?;
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

    fn header(id: u64, sample_count: u64) -> JobHeader {
        JobHeader {
            id,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            sample_count,
            options: DecodeOptions::default(),
            fault: None,
            stream_segments: true,
        }
    }

    /// Reads every frame of `wire` back as `ToWorker` messages.
    fn read_all(wire: Vec<u8>) -> Vec<ToWorker> {
        let mut r = io::Cursor::new(wire);
        let mut out = vec![];
        while let Some(p) = read_frame(&mut r).unwrap() {
            out.push(decode(&p).unwrap());
        }
        out
    }

    /// Feeds messages to an assembler; returns the finished jobs.
    fn assemble(msgs: Vec<ToWorker>) -> Result<Vec<Job>, AssemblyError> {
        let mut a = JobAssembler::default();
        let mut jobs = vec![];
        for m in msgs {
            let done = match m {
                ToWorker::Job(h) => a.header(h)?,
                ToWorker::AudioChunk(c) => a.chunk(c)?,
                _ => {
                    a.expect_idle()?;
                    None
                }
            };
            jobs.extend(done);
        }
        a.expect_idle()?;
        Ok(jobs)
    }

    #[test]
    fn frames_round_trip_through_a_byte_stream() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &ToWorker::Job(header(7, 0))).unwrap();
        write_frame(&mut wire, &ToWorker::Cancel { job_id: 7 }).unwrap();
        write_frame(&mut wire, &ToWorker::Shutdown).unwrap();
        let msgs = read_all(wire);
        assert_eq!(
            msgs,
            vec![
                ToWorker::Job(header(7, 0)),
                ToWorker::Cancel { job_id: 7 },
                ToWorker::Shutdown
            ]
        );
    }

    #[test]
    fn a_job_travels_as_a_header_and_bounded_chunks_and_comes_back_whole() {
        // Two and a half chunks, with the extremes of i16 in them.
        let n = CHUNK_SAMPLES * 2 + CHUNK_SAMPLES / 2;
        let samples: Vec<i16> = (0..n)
            .map(|i| match i % 5 {
                0 => i16::MIN,
                1 => i16::MAX,
                _ => (i as i16).wrapping_mul(31),
            })
            .collect();
        let mut wire = Vec::new();
        write_job(&mut wire, &header(9, 0), &samples).unwrap();
        let msgs = read_all(wire.clone());
        assert_eq!(msgs.len(), 4, "a header and three chunks");
        match &msgs[0] {
            ToWorker::Job(h) => assert_eq!(h.sample_count, n as u64),
            other => panic!("expected the header first, got {other:?}"),
        }
        for m in &msgs[1..] {
            match m {
                ToWorker::AudioChunk(c) => {
                    assert_eq!(c.job_id, 9);
                    assert!(c.pcm.0.len() <= CHUNK_SAMPLES);
                }
                other => panic!("expected a chunk, got {other:?}"),
            }
        }
        // No frame is larger than a chunk's PCM plus a few bytes.
        let mut r = io::Cursor::new(wire);
        while let Some(p) = read_frame(&mut r).unwrap() {
            assert!(
                p.len() <= CHUNK_SAMPLES * 2 + 32,
                "frame of {} bytes",
                p.len()
            );
        }
        let jobs = assemble(msgs).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].id, 9);
        assert_eq!(jobs[0].samples, samples);
        assert_eq!(jobs[0].options, DecodeOptions::default());
        assert!(jobs[0].stream_segments);
    }

    #[test]
    fn three_hours_of_audio_fit_the_protocol_in_bounded_frames() {
        // The case of issue 18: 3 h of 16 kHz audio was one 691 MB frame.
        let samples = 3 * 3600 * SAMPLE_RATE as u64;
        assert!(encode_job_header(&header(1, samples)).is_ok());
        const { assert!(3 * 3600 * (SAMPLE_RATE as u64) <= MAX_JOB_SAMPLES) };
        const { assert!(CHUNK_SAMPLES * 2 + 16 < MAX_FRAME_LEN) };
    }

    #[test]
    fn a_header_over_the_limit_is_refused_on_both_sides() {
        let h = header(3, MAX_JOB_SAMPLES + 1);
        assert!(matches!(
            encode_job_header(&h),
            Err(FrameError::TooManySamples(n)) if n == MAX_JOB_SAMPLES + 1
        ));
        // A receiver refuses it without reserving memory for it.
        assert_eq!(
            JobAssembler::default().header(h),
            Err(AssemblyError::TooManySamples {
                job_id: 3,
                samples: MAX_JOB_SAMPLES + 1
            })
        );
    }

    #[test]
    fn an_empty_job_is_complete_at_its_header() {
        let mut a = JobAssembler::default();
        let job = a.header(header(4, 0)).unwrap().expect("complete");
        assert!(job.samples.is_empty());
        assert_eq!(a.receiving(), None);
    }

    #[test]
    fn chunks_that_do_not_fit_their_job_are_refused() {
        let chunk = |job_id, n: usize| {
            ToWorker::AudioChunk(AudioChunk {
                job_id,
                pcm: Pcm(vec![1; n]),
            })
        };
        // A chunk without a header.
        assert_eq!(
            assemble(vec![chunk(1, 4)]),
            Err(AssemblyError::Unexpected { job_id: 1 })
        );
        // A chunk of another job.
        assert_eq!(
            assemble(vec![ToWorker::Job(header(1, 8)), chunk(2, 4)]),
            Err(AssemblyError::WrongJob {
                expected: 1,
                got: 2
            })
        );
        // More than announced.
        assert_eq!(
            assemble(vec![ToWorker::Job(header(1, 8)), chunk(1, 4), chunk(1, 5)]),
            Err(AssemblyError::TooLong {
                job_id: 1,
                got: 9,
                expected: 8
            })
        );
        // Another job, a cancel or the end before the audio is complete.
        let cut = Err(AssemblyError::Incomplete {
            job_id: 1,
            got: 4,
            expected: 8,
        });
        assert_eq!(
            assemble(vec![
                ToWorker::Job(header(1, 8)),
                chunk(1, 4),
                ToWorker::Job(header(2, 0))
            ]),
            cut
        );
        assert_eq!(
            assemble(vec![
                ToWorker::Job(header(1, 8)),
                chunk(1, 4),
                ToWorker::Cancel { job_id: 1 }
            ]),
            cut
        );
        assert_eq!(
            assemble(vec![ToWorker::Job(header(1, 8)), chunk(1, 4)]),
            cut
        );
        // And the happy path: two jobs back to back.
        let jobs = assemble(vec![
            ToWorker::Job(header(1, 8)),
            chunk(1, 4),
            chunk(1, 4),
            ToWorker::Job(header(2, 1)),
            chunk(2, 1),
        ])
        .unwrap();
        assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn an_odd_number_of_pcm_bytes_is_malformed() {
        // Hand-made chunk: variant 1, job id 5, 3 bytes of "PCM".
        let payload = [1u8, 5, 3, 0, 0, 0];
        assert!(matches!(
            decode::<ToWorker>(&payload),
            Err(FrameError::Malformed(_))
        ));
        let payload = [1u8, 5, 4, 1, 0, 0xff, 0xff];
        assert_eq!(
            decode::<ToWorker>(&payload).unwrap(),
            ToWorker::AudioChunk(AudioChunk {
                job_id: 5,
                pcm: Pcm(vec![1, -1])
            })
        );
    }

    #[test]
    fn eof_inside_a_frame_is_an_error() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &ToWorker::Job(header(7, 0))).unwrap();
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
        write_job(&mut wire, &header(7, 0), &[1, 2, 3]).unwrap();
        let mut buf = BytesMut::from(&wire[..]);
        let mut codec = codec();
        let h = codec.decode(&mut buf).unwrap().unwrap();
        let c = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(decode::<ToWorker>(&h).unwrap(), ToWorker::Job(header(7, 3)));
        assert_eq!(
            decode::<ToWorker>(&c).unwrap(),
            ToWorker::AudioChunk(AudioChunk {
                job_id: 7,
                pcm: Pcm(vec![1, 2, 3])
            })
        );
    }

    #[test]
    fn borrowed_frames_are_byte_identical_to_the_owned_ones() {
        let h = header(7, 3);
        assert_eq!(
            encode(&ToWorker::Job(h.clone())).unwrap(),
            encode_job_header(&h).unwrap()
        );
        let pcm = vec![0i16, 1, -1, i16::MAX, i16::MIN];
        let owned = encode(&ToWorker::AudioChunk(AudioChunk {
            job_id: 7,
            pcm: Pcm(pcm.clone()),
        }))
        .unwrap();
        let borrowed: Vec<_> = encode_audio_chunks(7, &pcm).collect();
        assert_eq!(borrowed.len(), 1);
        assert_eq!(&owned, borrowed[0].as_ref().unwrap());
    }

    #[test]
    fn heartbeats_round_trip() {
        for running in [None, Some(42)] {
            let m = FromWorker::Heartbeat { running };
            assert_eq!(decode::<FromWorker>(&encode(&m).unwrap()).unwrap(), m);
        }
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
            let mut payload = encode(&ToWorker::Job(header(7, 100))).unwrap();
            for (i, b) in flips {
                let i = i.index(payload.len());
                payload[i] ^= b;
            }
            let _ = decode::<ToWorker>(&payload);
        }

        #[test]
        fn any_pcm_round_trips_through_chunks(pcm in proptest::collection::vec(any::<i16>(), 0..2048)) {
            let mut wire = Vec::new();
            write_job(&mut wire, &header(11, 0), &pcm).unwrap();
            let jobs = assemble(read_all(wire)).unwrap();
            prop_assert_eq!(jobs.len(), 1);
            prop_assert_eq!(&jobs[0].samples, &pcm);
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

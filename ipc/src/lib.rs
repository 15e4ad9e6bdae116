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
//!    Several jobs may be sent as one *batch*: a [`ToWorker::Batch`] frame
//!    naming their ids, then each job as above, back to back. The child
//!    decodes them together and answers each by its own id, with its own
//!    `Progress` frames and its own `Done` or `Failed`; the answers of the
//!    jobs of one batch may come in any order, but all of them before any
//!    answer about a job sent after the batch. A lone job is sent without
//!    a `Batch` frame, exactly as before (and decoded by the sequential
//!    pipeline).
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

mod batch;
mod frame;
mod job;
mod messages;
mod options;
mod pcm;
mod result;
#[cfg(test)]
mod tests;

pub use batch::*;
pub use frame::*;
pub use job::*;
pub use messages::*;
pub use options::*;
pub use pcm::*;
pub use result::*;

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
///
/// 6: `DecodeOptions::hotwords`, `language_detection_segments`,
/// `language_detection_threshold` and `token_logprobs`; `Word::tokens`.
///
/// 7: `DecodeOptions::batch_size` (batched long-form decoding).
/// 8: `ToWorker::Batch` (several jobs decoded together).
/// 9: `DecodeOptions::text_only`.
pub const PROTOCOL_VERSION: u32 = 9;

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

/// Largest `DecodeOptions::batch_size` (windows per engine call): 64
/// windows of 30 s are 32 minutes of audio in one encoder batch (about
/// 60 MB of features; on a GPU the decoder's beams are the limit).
pub const MAX_BATCH_SIZE: u32 = 64;

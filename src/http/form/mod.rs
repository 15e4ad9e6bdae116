//! Reading the multipart form of `POST /v1/audio/transcriptions` under a
//! size limit, and turning its fields into [`DecodeOptions`].
//!
//! # Fields
//! | field | meaning |
//! | --- | --- |
//! | `file` (required) | the audio; its file name's extension (or its part's `Content-Type`) is passed to the decoder as a hint |
//! | `model` | accepted and mapped to the model the node loaded, whatever the value (`whisper-1`, …); the answer's `X-Model` names it (see [`super::models`]) |
//! | `language` | ISO 639-1 code or English name of a Whisper language (`en`, `English`); absent = detect |
//! | `prompt` | the initial prompt (names, spellings, style) |
//! | `response_format` | `json` (default), `text`, `srt`, `vtt`, `verbose_json` |
//! | `temperature` | 0..=1; 0 (default) = faster-whisper's fallback list 0, 0.2, …, 1.0; t > 0 = the list t, t + 0.2, … up to 1.0 |
//! | `timestamp_granularities[]` | `segment` and/or `word` (repeatable); `word` turns on word timestamps and needs `verbose_json` (as at OpenAI) |
//! | `beam_size` (extension) | beam width 1..=[`MAX_BEAM_SIZE`]; default: the node's `--beam-size` |
//! | `batch_size` (extension) | audio longer than 30 s: 1 = the sequential seek loop (each 30 s window conditioned on the previous text), 2..=[`MAX_BATCH_SIZE`] = batched long-form decoding (windows cut at speech pauses, this many per engine call, no conditioning across windows, temperature fallback only for a window that runs away, and for `json`/`text` answers no timestamp tokens: faster, see BENCHMARKS.md); default: the node's `--batch-size` with `vad_filter` on and no `stream`, else 1. Shorter audio is always decoded sequentially |
//! | `vad_filter` (extension) | `true`/`false` (`1`/`0`): voice-activity detection first, so only speech is decoded and silence cannot be "transcribed"; times stay those of the original audio. Default [`DEFAULT_VAD_FILTER`] |
//! | `chunking_strategy` | `auto` or `{"type": "server_vad", …}`: voice-activity detection on (as `vad_filter=true`; the node's VAD settings apply); `vad_filter` wins when both are sent |
//! | `known_speaker_names[]`, `known_speaker_references[]`, `response_format=diarized_json` | 400 `unsupported_parameter`: the node does not identify speakers |
//! | `include[]` | `logprobs`: the answer (`json` only, not streamed) also has `"logprobs"`, OpenAI's list of `{"token", "logprob", "bytes"}`, one per text token; the log-probabilities come from the alignment pass of word timestamps (faster-whisper's word probabilities, per token), which costs about one extra decoder pass per window and leaves the text and times unchanged |
//! | `hotwords` (extension, as faster-whisper) | words or phrases the decoder should favour (names, jargon), put in every window's prompt; unlike `prompt` they do not stop applying after the first window |
//! | `language_detection_segments`, `language_detection_threshold` (extensions, as faster-whisper) | with no `language`: how many 30 s windows (1..=80, default [`DEFAULT_LANGUAGE_DETECTION_SEGMENTS`]) the language may be detected over, and the probability (0..=1, default 0.5) of the top language that settles it; past an unsure window (music, silence) the next is tried, and if none is sure the language most often on top wins |
//! | `stream` | `true`/`false` (`1`/`0`), default `false`: `true` answers with Server-Sent Events, one `transcript.text.delta` per segment as the worker finishes it, then `transcript.text.done` (see [`super::stream`]); needs `response_format` `json`, `text` or `verbose_json` |
//!
//! Other fields are read and ignored, so newer clients keep working.
//! Empty text fields count as absent.
//!
//! # Limits
//! The whole body is counted as it streams in and reading stops at
//! `max_upload_bytes` + [`FORM_OVERHEAD_BYTES`]; the `file` field alone may
//! hold at most `max_upload_bytes`. Either overflow, or a `Content-Length`
//! over the body limit, is a 413 before more is read. Nothing beyond the
//! limits is ever buffered. Text fields are capped at
//! [`MAX_TEXT_FIELD_BYTES`] (400) and a form at [`MAX_FIELDS`] parts (400).
//!
//! # Slow bodies
//! A body must arrive at [`FormLimits::min_bytes_per_sec`] or faster in
//! every [`RATE_WINDOW`] (10 s) from the start of the request (so a client
//! that sends 50 MiB and then trickles, or one that sends a byte a second,
//! is cut off within one window), and whole within [`FormLimits::timeout`].
//! Either is a 408 `upload_timeout`, answered as soon as the window or the
//! time runs out, not when the next byte happens to arrive. (How many
//! uploads may be read at once is [`crate::ingest::Ingest`]'s limit.)
//!
//! # Where the file goes
//! The `file` part is kept in memory up to [`SPOOL_THRESHOLD_BYTES`]
//! (1 MiB); a larger one is written, as it arrives, to an unnamed
//! temporary file (`tempfile::tempfile_in`: no name on disk, removed by the
//! OS when closed, even if the process dies) in
//! [`FormLimits::spool_dir`], and decoded from there. So a slow or large
//! upload holds at most 1 MiB of memory.

mod fault;
mod fields;
mod paced;
mod parts;
mod spool;
#[cfg(test)]
mod tests;

pub use fault::{parse_fault, FAULT_HEADER};
pub use parts::upload_timeout;

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use actix_multipart::{Multipart, MultipartError};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::error::ApiError;
use super::format::{Granularities, ResponseFormat};
use crate::api::{DecodeOptions, Task};
use crate::audio::Upload;
use crate::error_code::Code;
use crate::ingest::UploadSettings;
use fields::RawForm;
use paced::Paced;
use parts::{check_content_type, file_hint, multipart_error, read_text, Trip};
use spool::read_file;

/// Room for multipart framing and the text fields on top of the file.
pub const FORM_OVERHEAD_BYTES: usize = 64 * 1024;

/// Largest text field (a long `prompt`).
pub const MAX_TEXT_FIELD_BYTES: usize = 8 * 1024;

/// Largest `file` part kept in memory; larger ones are spooled to disk.
pub const SPOOL_THRESHOLD_BYTES: usize = 1024 * 1024;

/// The window over which the minimum upload rate is measured.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Most parts a form may have.
pub const MAX_FIELDS: usize = 32;

/// Largest accepted `beam_size`.
pub use asr_ipc::MAX_BEAM_SIZE;

/// Largest accepted `batch_size`.
pub use asr_ipc::MAX_BATCH_SIZE;

/// `vad_filter` when the form does not say: on. Measured with `tiny.en`
/// (tests/fixtures/longform/README.md), voice-activity detection first made
/// long clips with pauses at least as accurate as without it, cost ~1 ms per
/// second of audio, and turned silence and noise into an empty transcript
/// instead of invented words. faster-whisper's own default is off; OpenAI's
/// API has no such switch. `vad_filter=false` decodes every sample.
pub const DEFAULT_VAD_FILTER: bool = true;

/// `language_detection_segments` when the form does not say: up to three
/// 30 s windows (faster-whisper's default is one). Only an unsure first
/// window (music, noise, silence kept with `vad_filter=false`: top language
/// at most 0.5) makes the node look at the next, so clear speech costs
/// nothing more.
pub const DEFAULT_LANGUAGE_DETECTION_SEGMENTS: u32 = 3;
/// Largest `language_detection_segments` accepted.
pub const MAX_LANGUAGE_DETECTION_SEGMENTS: u32 = 80;

/// Limits for reading a form.
#[derive(Debug, Clone, PartialEq)]
pub struct FormLimits {
    /// Largest `file` field, bytes.
    pub max_file_bytes: usize,
    /// Largest whole body, bytes (file + framing + text fields).
    pub max_body_bytes: usize,
    /// Longest time to receive the whole body.
    pub timeout: Duration,
    /// Least bytes per [`RATE_WINDOW`] / its seconds; 0 = no minimum.
    pub min_bytes_per_sec: u64,
    /// Largest `file` kept in memory (see [`SPOOL_THRESHOLD_BYTES`]).
    pub spool_threshold: usize,
    /// Folder of spooled files (`None`: the system's temp folder).
    pub spool_dir: Option<PathBuf>,
}

impl FormLimits {
    /// Limits for an upload limit of `max_upload_bytes` (the node's
    /// `--max-upload-bytes`), with the default pacing and spooling.
    pub fn for_upload_limit(max_upload_bytes: usize) -> Self {
        Self::new(max_upload_bytes, &UploadSettings::default())
    }

    /// Limits for an upload limit of `max_upload_bytes` read under
    /// `settings` (the node's, from [`crate::ingest::Ingest`]).
    pub fn new(max_upload_bytes: usize, settings: &UploadSettings) -> Self {
        Self {
            max_file_bytes: max_upload_bytes,
            max_body_bytes: max_upload_bytes.saturating_add(FORM_OVERHEAD_BYTES),
            timeout: settings.timeout,
            min_bytes_per_sec: settings.min_bytes_per_sec,
            spool_threshold: SPOOL_THRESHOLD_BYTES,
            spool_dir: settings.spool_dir.clone(),
        }
    }
}

/// A parsed and validated transcription form.
#[derive(Debug)]
pub struct TranscriptionForm {
    /// The audio: in memory, or spooled to a temporary file.
    pub file: Upload,
    /// The decoder hint: the file name's extension, else the part's
    /// content type.
    pub file_hint: Option<String>,
    /// The `model` field as sent (informational).
    pub model: Option<String>,
    /// Normalised Whisper language code.
    pub language: Option<&'static str>,
    /// Initial prompt.
    pub prompt: Option<String>,
    /// Output format.
    pub response_format: ResponseFormat,
    /// Requested temperature (0..=1).
    pub temperature: Option<f32>,
    /// Requested timestamp detail.
    pub granularities: Granularities,
    /// Requested beam size.
    pub beam_size: Option<u32>,
    /// Requested windows per engine call (`None`: the node's default).
    pub batch_size: Option<u32>,
    /// Requested voice-activity detection (`None`: [`DEFAULT_VAD_FILTER`]).
    pub vad_filter: Option<bool>,
    /// Answer with Server-Sent Events as segments are decoded.
    pub stream: bool,
    /// Words to bias the decoder towards.
    pub hotwords: Option<String>,
    /// `include[]=logprobs`: each token's log-probability in the answer.
    pub logprobs: bool,
    /// Windows language detection may look at (`None`:
    /// [`DEFAULT_LANGUAGE_DETECTION_SEGMENTS`]).
    pub language_detection_segments: Option<u32>,
    /// Probability that settles the language (`None`: 0.5).
    pub language_detection_threshold: Option<f32>,
}

impl TranscriptionForm {
    /// The worker options for this form; `default_beam_size` is the node's.
    pub fn decode_options(&self, default_beam_size: u32) -> DecodeOptions {
        let defaults = DecodeOptions::default();
        DecodeOptions {
            language: self.language.map(str::to_string),
            task: Task::Transcribe,
            beam_size: self.beam_size.unwrap_or(default_beam_size),
            // 0: the node fills in its `--batch-size`.
            batch_size: self.batch_size.unwrap_or(0),
            temperatures: temperature_schedule(self.temperature, &defaults.temperatures),
            initial_prompt: self.prompt.clone(),
            word_timestamps: self.granularities.word,
            vad_filter: self.vad_filter.unwrap_or(DEFAULT_VAD_FILTER),
            hotwords: self.hotwords.clone(),
            token_logprobs: self.logprobs,
            language_detection_segments: self
                .language_detection_segments
                .unwrap_or(DEFAULT_LANGUAGE_DETECTION_SEGMENTS),
            language_detection_threshold: self
                .language_detection_threshold
                .unwrap_or(defaults.language_detection_threshold),
            ..defaults
        }
    }

    /// Whether the synchronous answer carries the text alone (`json` or
    /// `text`, without words, log-probabilities or a stream): long audio
    /// may then be decoded without timestamp tokens
    /// ([`DecodeOptions::text_only`]). Jobs keep their segments (their
    /// records hold them whatever the format).
    pub fn answers_text_only(&self) -> bool {
        matches!(
            self.response_format,
            ResponseFormat::Json | ResponseFormat::Text
        ) && !self.granularities.word
            && !self.logprobs
            && !self.stream
    }
}

/// The fallback temperatures for a requested temperature: the default list
/// for none or 0, else `t, t + 0.2, …` while ≤ 1.0.
pub fn temperature_schedule(t: Option<f32>, default: &[f32]) -> Vec<f32> {
    match t {
        Some(t) if t > 0.0 => (0..)
            .map(|i| t + 0.2 * i as f32)
            .take_while(|x| *x <= 1.0 + 1e-4)
            .map(|x| (x * 1000.0).round() / 1000.0)
            .collect(),
        _ => default.to_vec(),
    }
}

/// Reads and validates a transcription form from a request's headers and
/// body stream, enforcing `limits` while the body streams in.
pub async fn read_form<S>(
    headers: &HeaderMap,
    body: S,
    limits: FormLimits,
) -> Result<TranscriptionForm, ApiError>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + 'static,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(ApiError::upload_too_large(limits.max_file_bytes));
    }

    check_content_type(headers)?;

    // Count the body as it streams; past the limit the stream fails and the
    // flag tells that failure apart from a malformed body. The pacing
    // wrapper fails it the same way when the body comes too slowly.
    let tripped = Rc::new(Cell::new(Trip::None));
    let flag = Rc::clone(&tripped);
    let mut seen = 0usize;
    let max_body = limits.max_body_bytes;
    let limited = body.map(move |chunk| {
        let chunk = chunk?;
        seen = seen.saturating_add(chunk.len());
        if seen > max_body {
            flag.set(Trip::Overflow);
            return Err(PayloadError::Overflow);
        }
        Ok(chunk)
    });
    let limited = Paced::new(limited, &limits, Rc::clone(&tripped));
    let mut multipart = Multipart::new(headers, limited);
    let map_err = |e: MultipartError| multipart_error(e, tripped.get(), &limits);

    let mut raw = RawForm::default();
    let mut fields = 0usize;
    // Never poll the multipart stream again after it yielded an error.
    while let Some(field) = multipart.next().await {
        let mut field = field.map_err(map_err)?;
        fields += 1;
        if fields > MAX_FIELDS {
            return Err(ApiError::new(
                Code::TooManyFields,
                format!("the form has more than {MAX_FIELDS} parts"),
            ));
        }
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" => {
                if raw.file.is_some() {
                    return Err(ApiError::new(
                        Code::DuplicateFile,
                        "the form has more than one file field",
                    )
                    .with_param("file"));
                }
                raw.file_hint = file_hint(&field);
                // Pre-size from the declared length, but never beyond what
                // is kept in memory.
                let capacity = declared.map_or(0, |n| {
                    usize::try_from(n)
                        .unwrap_or(usize::MAX)
                        .min(limits.max_file_bytes)
                        .min(limits.spool_threshold)
                });
                raw.file = Some(read_file(&mut field, capacity, &limits, &map_err).await?);
            }
            "model"
            | "language"
            | "prompt"
            | "response_format"
            | "temperature"
            | "timestamp_granularities[]"
            | "timestamp_granularities"
            | "beam_size"
            | "batch_size"
            | "vad_filter"
            | "stream"
            | "chunking_strategy"
            | "hotwords"
            | "include[]"
            | "include"
            | "language_detection_segments"
            | "language_detection_threshold"
            | "known_speaker_names[]"
            | "known_speaker_names"
            | "known_speaker_references[]"
            | "known_speaker_references" => {
                let value = read_text(&mut field, &name, &map_err).await?;
                raw.push(&name, value);
            }
            _ => {
                tracing::debug!(field = %name, "ignoring unknown form field");
                while let Some(chunk) = field.next().await {
                    chunk.map_err(map_err)?;
                }
            }
        }
    }
    raw.validate()
}

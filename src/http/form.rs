//! Reading the multipart form of `POST /v1/audio/transcriptions` under a
//! size limit, and turning its fields into [`DecodeOptions`].
//!
//! # Fields
//! | field | meaning |
//! | --- | --- |
//! | `file` (required) | the audio; its file name's extension (or its part's `Content-Type`) is passed to the decoder as a hint |
//! | `model` | accepted and ignored: every value (`whisper-1`, …) maps to the model the node loaded |
//! | `language` | ISO 639-1 code or English name of a Whisper language (`en`, `English`); absent = detect |
//! | `prompt` | the initial prompt (names, spellings, style) |
//! | `response_format` | `json` (default), `text`, `srt`, `vtt`, `verbose_json` |
//! | `temperature` | 0..=1; 0 (default) = faster-whisper's fallback list 0, 0.2, …, 1.0; t > 0 = the list t, t + 0.2, … up to 1.0 |
//! | `timestamp_granularities[]` | `segment` and/or `word` (repeatable); `word` turns on word timestamps and needs `verbose_json` (as at OpenAI) |
//! | `beam_size` (extension) | beam width 1..=[`MAX_BEAM_SIZE`]; default: the node's `--beam-size` |
//! | `vad_filter` (extension) | `true`/`false` (`1`/`0`): voice-activity detection first, so only speech is decoded and silence cannot be "transcribed"; times stay those of the original audio. Default [`DEFAULT_VAD_FILTER`] |
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

use crate::error_code::Code;
use std::cell::Cell;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_multipart::{Field, Multipart, MultipartError};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap};
use actix_web::mime::{self, Mime};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::error::ApiError;
use super::format::{Granularities, ResponseFormat};
use super::language;
use crate::api::{DecodeOptions, Task};
use crate::audio::Upload;
use crate::ingest::UploadSettings;

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

/// `vad_filter` when the form does not say: on. Measured with `tiny.en`
/// (tests/fixtures/longform/README.md), voice-activity detection first made
/// long clips with pauses at least as accurate as without it, cost ~1 ms per
/// second of audio, and turned silence and noise into an empty transcript
/// instead of invented words. faster-whisper's own default is off; OpenAI's
/// API has no such switch. `vad_filter=false` decodes every sample.
pub const DEFAULT_VAD_FILTER: bool = true;

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
    /// Requested voice-activity detection (`None`: [`DEFAULT_VAD_FILTER`]).
    pub vad_filter: Option<bool>,
    /// Answer with Server-Sent Events as segments are decoded.
    pub stream: bool,
}

impl TranscriptionForm {
    /// The worker options for this form; `default_beam_size` is the node's.
    pub fn decode_options(&self, default_beam_size: u32) -> DecodeOptions {
        let defaults = DecodeOptions::default();
        DecodeOptions {
            language: self.language.map(str::to_string),
            task: Task::Transcribe,
            beam_size: self.beam_size.unwrap_or(default_beam_size),
            temperatures: temperature_schedule(self.temperature, &defaults.temperatures),
            initial_prompt: self.prompt.clone(),
            word_timestamps: self.granularities.word,
            vad_filter: self.vad_filter.unwrap_or(DEFAULT_VAD_FILTER),
            ..defaults
        }
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
            | "vad_filter"
            | "stream" => {
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

/// Why the body stream was failed on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trip {
    None,
    Overflow,
    Slow,
    Late,
}

/// The 408 of a body that came too slowly.
pub fn upload_timeout(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::UploadTimeout, message)
}

fn multipart_error(e: MultipartError, tripped: Trip, limits: &FormLimits) -> ApiError {
    match tripped {
        Trip::None => {}
        Trip::Overflow => return ApiError::upload_too_large(limits.max_file_bytes),
        Trip::Slow => {
            return upload_timeout(format!(
                "the upload arrived slower than {} bytes per second over {} s",
                limits.min_bytes_per_sec,
                RATE_WINDOW.as_secs()
            ))
        }
        Trip::Late => {
            return upload_timeout(format!(
                "the upload was not complete within {} s",
                limits.timeout.as_secs_f64()
            ))
        }
    }
    match e {
        // `check_content_type` has already refused these; kept for safety.
        MultipartError::ContentTypeMissing
        | MultipartError::ContentTypeParse
        | MultipartError::ContentTypeIncompatible => ApiError::new(
            Code::InvalidContentType,
            "the request body must be multipart/form-data with a boundary",
        ),
        MultipartError::Payload(PayloadError::Overflow) => ApiError::new(
            Code::InvalidMultipart,
            "a multipart part header is too large",
        ),
        other => ApiError::new(
            Code::InvalidMultipart,
            format!("malformed multipart body: {other}"),
        ),
    }
}

/// Refuses a body that is not `multipart/form-data` with a boundary, so
/// that later multipart errors are about the body itself.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Mime>().ok());
    let ok = mime.is_some_and(|m| {
        m.type_() == mime::MULTIPART
            && m.subtype() == mime::FORM_DATA
            && m.get_param(mime::BOUNDARY)
                .is_some_and(|b| !b.as_str().is_empty())
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::InvalidContentType,
            "the request body must be multipart/form-data with a boundary",
        ))
    }
}

/// The decoder hint of the `file` part: its file name's extension, else its
/// content type.
fn file_hint(field: &Field) -> Option<String> {
    let ext = field
        .content_disposition()
        .and_then(|cd| cd.get_filename())
        .and_then(|name| {
            name.rsplit_once('.')
                .map(|(_, ext)| ext.to_ascii_lowercase())
        })
        .filter(|ext| {
            !ext.is_empty() && ext.len() <= 8 && ext.chars().all(|c| c.is_ascii_alphanumeric())
        });
    ext.or_else(|| {
        field
            .content_type()
            .map(|m| m.essence_str().to_string())
            .filter(|m| m != "application/octet-stream")
    })
}

async fn read_file(
    field: &mut Field,
    capacity: usize,
    limits: &FormLimits,
    map_err: &impl Fn(MultipartError) -> ApiError,
) -> Result<Upload, ApiError> {
    let mut spool = Spool::new(capacity, limits);
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(map_err)?;
        if spool.len + chunk.len() as u64 > limits.max_file_bytes as u64 {
            return Err(ApiError::upload_too_large(limits.max_file_bytes));
        }
        spool.write(&chunk).await.map_err(spool_error)?;
    }
    spool.finish().await.map_err(spool_error)
}

fn spool_error(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "could not spool an upload to disk");
    ApiError::internal()
}

/// The `file` part: in memory up to the threshold, then in an unnamed
/// temporary file.
struct Spool {
    mem: Vec<u8>,
    file: Option<tokio::fs::File>,
    len: u64,
    threshold: usize,
    dir: Option<PathBuf>,
}

impl Spool {
    fn new(capacity: usize, limits: &FormLimits) -> Self {
        Self {
            mem: Vec::with_capacity(capacity),
            file: None,
            len: 0,
            threshold: limits.spool_threshold,
            dir: limits.spool_dir.clone(),
        }
    }

    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.len += chunk.len() as u64;
        if let Some(f) = self.file.as_mut() {
            return f.write_all(chunk).await;
        }
        if self.mem.len() + chunk.len() <= self.threshold {
            self.mem.extend_from_slice(chunk);
            return Ok(());
        }
        let dir = self.dir.clone();
        let file = tokio::task::spawn_blocking(move || match dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        })
        .await
        .map_err(std::io::Error::other)??;
        let mut file = tokio::fs::File::from_std(file);
        file.write_all(&std::mem::take(&mut self.mem)).await?;
        file.write_all(chunk).await?;
        self.file = Some(file);
        Ok(())
    }

    async fn finish(self) -> std::io::Result<Upload> {
        match self.file {
            None => Ok(Upload::Memory(Bytes::from(self.mem))),
            Some(mut f) => {
                f.flush().await?;
                Ok(Upload::File {
                    file: f.into_std().await,
                    len: self.len,
                })
            }
        }
    }
}

/// A body stream that fails (and marks `trip`) when it falls behind the
/// minimum rate in a [`RATE_WINDOW`] or runs past the total time; the
/// timer fires on its own, so a stalled client is answered on time.
struct Paced<S> {
    inner: Pin<Box<S>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    end: tokio::time::Instant,
    window_end: tokio::time::Instant,
    window_bytes: u64,
    quota: u64,
    trip: Rc<Cell<Trip>>,
    done: bool,
}

impl<S> Paced<S> {
    fn new(inner: S, limits: &FormLimits, trip: Rc<Cell<Trip>>) -> Self {
        let now = tokio::time::Instant::now();
        let end = now + limits.timeout;
        let (quota, window_end) = if limits.min_bytes_per_sec == 0 {
            (0, end)
        } else {
            (
                limits
                    .min_bytes_per_sec
                    .saturating_mul(RATE_WINDOW.as_secs()),
                now + RATE_WINDOW,
            )
        };
        Self {
            inner: Box::pin(inner),
            sleep: Box::pin(tokio::time::sleep_until(window_end.min(end))),
            end,
            window_end,
            window_bytes: 0,
            quota,
            trip,
            done: false,
        }
    }

    fn fail(&mut self, why: Trip) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.trip.set(why);
        self.done = true;
        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the upload is too slow",
        )))))
    }
}

impl<S> Stream for Paced<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>>,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let now = tokio::time::Instant::now();
                if now >= self.end {
                    return self.fail(Trip::Late);
                }
                if self.quota > 0 {
                    if now >= self.window_end
                        && self.window_bytes + (chunk.len() as u64) < self.quota
                    {
                        return self.fail(Trip::Slow);
                    }
                    self.window_bytes += chunk.len() as u64;
                    if self.window_bytes >= self.quota {
                        // Quota met: a new window starts now.
                        self.window_bytes = 0;
                        self.window_end = now + RATE_WINDOW;
                        let deadline = self.window_end.min(self.end);
                        self.sleep.as_mut().reset(deadline);
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                if self.sleep.as_mut().poll(cx).is_ready() {
                    let why = if tokio::time::Instant::now() >= self.end {
                        Trip::Late
                    } else {
                        Trip::Slow
                    };
                    return self.fail(why);
                }
                Poll::Pending
            }
        }
    }
}

async fn read_text(
    field: &mut Field,
    name: &str,
    map_err: &impl Fn(MultipartError) -> ApiError,
) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(map_err)?;
        if buf.len() + chunk.len() > MAX_TEXT_FIELD_BYTES {
            return Err(ApiError::new(
                Code::FieldTooLong,
                format!("the {name} field is longer than {MAX_TEXT_FIELD_BYTES} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| {
        ApiError::new(
            Code::InvalidParameter,
            format!("the {name} field is not valid UTF-8"),
        )
    })
}

/// Form values as sent, before validation.
#[derive(Debug, Default)]
struct RawForm {
    file: Option<Upload>,
    file_hint: Option<String>,
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    response_format: Option<String>,
    temperature: Option<String>,
    granularities: Vec<String>,
    beam_size: Option<String>,
    vad_filter: Option<String>,
    stream: Option<String>,
}

impl RawForm {
    fn push(&mut self, name: &str, value: String) {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return;
        }
        let slot = match name {
            "model" => &mut self.model,
            "language" => &mut self.language,
            // The prompt keeps its own spacing.
            "prompt" => {
                self.prompt = Some(value);
                return;
            }
            "response_format" => &mut self.response_format,
            "temperature" => &mut self.temperature,
            "beam_size" => &mut self.beam_size,
            "vad_filter" => &mut self.vad_filter,
            "stream" => &mut self.stream,
            _ => {
                self.granularities
                    .extend(trimmed.split(',').map(|g| g.trim().to_ascii_lowercase()));
                return;
            }
        };
        *slot = Some(trimmed.to_string());
    }

    fn validate(self) -> Result<TranscriptionForm, ApiError> {
        let file = self.file.ok_or_else(|| {
            ApiError::new(Code::MissingFile, "the form has no file field").with_param("file")
        })?;

        let response_format = match &self.response_format {
            None => ResponseFormat::Json,
            Some(f) => f.parse().map_err(|e: super::format::UnknownFormat| {
                ApiError::invalid_param("response_format", e.to_string())
            })?,
        };

        let language = match &self.language {
            None => None,
            Some(l) => Some(language::normalize(l).ok_or_else(|| {
                ApiError::invalid_param("language", format!("unsupported language {:?}", cut(l)))
            })?),
        };

        let temperature = match &self.temperature {
            None => None,
            Some(t) => {
                let v = t
                    .parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite() && (0.0..=1.0).contains(v))
                    .ok_or_else(|| {
                        ApiError::invalid_param(
                            "temperature",
                            format!("temperature must be a number from 0 to 1, got {:?}", cut(t)),
                        )
                    })?;
                Some(v)
            }
        };

        let beam_size = match &self.beam_size {
            None => None,
            Some(b) => Some(
                b.parse::<u32>()
                    .ok()
                    .filter(|b| (1..=MAX_BEAM_SIZE).contains(b))
                    .ok_or_else(|| {
                        ApiError::invalid_param(
                            "beam_size",
                            format!("beam_size must be an integer from 1 to {MAX_BEAM_SIZE}"),
                        )
                    })?,
            ),
        };

        let granularities = if self.granularities.is_empty() {
            Granularities::default()
        } else {
            let mut g = Granularities {
                segment: false,
                word: false,
            };
            for v in &self.granularities {
                match v.as_str() {
                    "segment" => g.segment = true,
                    "word" => g.word = true,
                    "" => {}
                    other => {
                        return Err(ApiError::invalid_param(
                            "timestamp_granularities[]",
                            format!(
                                "unknown timestamp granularity {:?}; expected segment or word",
                                cut(other)
                            ),
                        ))
                    }
                }
            }
            g
        };
        if granularities.word && response_format != ResponseFormat::VerboseJson {
            return Err(ApiError::invalid_param(
                "timestamp_granularities[]",
                "word timestamps need response_format verbose_json",
            ));
        }

        let vad_filter = match self.vad_filter.as_deref().map(str::to_ascii_lowercase) {
            None => None,
            Some(v) if v == "true" || v == "1" => Some(true),
            Some(v) if v == "false" || v == "0" => Some(false),
            Some(v) => {
                return Err(ApiError::invalid_param(
                    "vad_filter",
                    format!("vad_filter must be true or false, got {:?}", cut(&v)),
                ))
            }
        };

        let stream = match self.stream.as_deref().map(str::to_ascii_lowercase) {
            None => false,
            Some(v) if v == "true" || v == "1" => true,
            Some(v) if v == "false" || v == "0" => false,
            Some(v) => {
                return Err(ApiError::invalid_param(
                    "stream",
                    format!("stream must be true or false, got {:?}", cut(&v)),
                ))
            }
        };
        if stream && matches!(response_format, ResponseFormat::Srt | ResponseFormat::Vtt) {
            return Err(ApiError::invalid_param(
                "stream",
                "a stream is JSON events: use response_format json, text or verbose_json with stream=true",
            ));
        }

        Ok(TranscriptionForm {
            file,
            file_hint: self.file_hint,
            model: self.model,
            language,
            prompt: self.prompt,
            response_format,
            temperature,
            granularities,
            beam_size,
            vad_filter,
            stream,
        })
    }
}

/// A client value cut short for quoting in an error message.
fn cut(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Request header that injects a worker fault (tests only; honoured only
/// when the node runs with `enable_fault_injection`).
pub const FAULT_HEADER: &str = "x-fault-inject";

/// Reads `X-Fault-Inject: crash | hang | slow:<ms> | out-of-order |
/// wrong-id`; ignored (with a debug log) unless fault injection is enabled,
/// a 400 when enabled and malformed.
pub fn parse_fault(
    headers: &actix_web::http::header::HeaderMap,
    enabled: bool,
) -> Result<Option<crate::api::Fault>, ApiError> {
    let Some(value) = headers.get(FAULT_HEADER) else {
        return Ok(None);
    };
    if !enabled {
        tracing::debug!("ignoring the fault injection header: fault injection is disabled");
        return Ok(None);
    }
    let bad = || {
        ApiError::new(
            Code::InvalidFault,
            "X-Fault-Inject must be crash, hang, slow:<ms>, out-of-order or wrong-id",
        )
    };
    let value = value
        .to_str()
        .map_err(|_| bad())?
        .trim()
        .to_ascii_lowercase();
    match value.as_str() {
        "crash" => Ok(Some(crate::api::Fault::Crash)),
        "hang" => Ok(Some(crate::api::Fault::Hang)),
        "out-of-order" => Ok(Some(crate::api::Fault::AnswerOutOfOrder)),
        "wrong-id" => Ok(Some(crate::api::Fault::AnswerWrongId)),
        other => {
            let ms = other
                .strip_prefix("slow:")
                .and_then(|ms| ms.trim().parse::<u64>().ok())
                .ok_or_else(bad)?;
            Ok(Some(crate::api::Fault::SlowMs(ms)))
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_multipart::test::{create_form_data_payload_and_headers_from_fields, TestFormField};
    use actix_web::http::header::HeaderValue;

    use super::*;

    const LIMITS: FormLimits = FormLimits {
        max_file_bytes: 1024,
        max_body_bytes: 1024 + FORM_OVERHEAD_BYTES,
        timeout: Duration::from_secs(60),
        min_bytes_per_sec: 0,
        spool_threshold: 512,
        spool_dir: None,
    };

    /// The body as a stream of `chunk`-byte pieces.
    fn chunked(
        body: Bytes,
        chunk: usize,
    ) -> impl Stream<Item = Result<Bytes, PayloadError>> + 'static {
        let pieces: Vec<_> = body
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(pieces)
    }

    async fn parse(
        fields: Vec<TestFormField<'static>>,
        limits: FormLimits,
    ) -> Result<TranscriptionForm, ApiError> {
        let (body, headers) = create_form_data_payload_and_headers_from_fields(fields);
        read_form(&headers, chunked(body, 100), limits).await
    }

    fn file(bytes: &'static [u8]) -> TestFormField<'static> {
        TestFormField::new("file", bytes).filename("speech.WAV")
    }

    fn text(name: &'static str, value: &'static str) -> TestFormField<'static> {
        TestFormField::new(name, value)
    }

    #[actix_web::test]
    async fn a_full_form_parses() {
        let form = parse(
            vec![
                text("model", "whisper-1"),
                file(b"RIFFxxxx"),
                text("language", "English"),
                text("prompt", " Names: Ada, Grace."),
                text("response_format", "verbose_json"),
                text("temperature", "0.3"),
                text("timestamp_granularities[]", "word"),
                text("timestamp_granularities[]", "segment"),
                text("beam_size", "2"),
                text("vad_filter", "False"),
                text("stream", "TRUE"),
                text("chunking_strategy", "auto"),
            ],
            LIMITS,
        )
        .await
        .unwrap();
        assert_eq!(form.file.to_vec().unwrap(), b"RIFFxxxx");
        assert!(!form.file.is_spooled());
        assert_eq!(form.file_hint.as_deref(), Some("wav"));
        assert_eq!(form.model.as_deref(), Some("whisper-1"));
        assert_eq!(form.language, Some("en"));
        assert_eq!(form.response_format, ResponseFormat::VerboseJson);
        assert_eq!(
            form.granularities,
            Granularities {
                segment: true,
                word: true
            }
        );
        let o = form.decode_options(5);
        assert_eq!(o.language.as_deref(), Some("en"));
        assert_eq!(o.initial_prompt.as_deref(), Some(" Names: Ada, Grace."));
        assert_eq!(o.temperatures, vec![0.3, 0.5, 0.7, 0.9]);
        assert_eq!(o.beam_size, 2);
        assert!(o.word_timestamps);
        assert!(!o.vad_filter);
        assert!(form.stream);
    }

    #[actix_web::test]
    async fn subtitles_cannot_be_streamed() {
        for (format, streams) in [
            ("srt", false),
            ("vtt", false),
            ("json", true),
            ("text", true),
            ("verbose_json", true),
        ] {
            let fields = vec![
                file(b"abc"),
                text("response_format", format),
                text("stream", "1"),
            ];
            match parse(fields, LIMITS).await {
                Ok(form) => assert!(streams && form.stream, "{format}"),
                Err(e) => assert_eq!(
                    (streams, e.status().as_u16(), e.param()),
                    (false, 400, Some("stream")),
                    "{format}: {e}"
                ),
            }
        }
    }

    #[actix_web::test]
    async fn defaults_when_only_a_file_is_sent() {
        let form = parse(vec![file(b"abc")], LIMITS).await.unwrap();
        assert_eq!(form.response_format, ResponseFormat::Json);
        assert_eq!(form.granularities, Granularities::default());
        assert!(!form.stream);
        let o = form.decode_options(3);
        assert_eq!(o.beam_size, 3);
        assert_eq!(o.vad_filter, DEFAULT_VAD_FILTER);
        assert_eq!(o.temperatures, DecodeOptions::default().temperatures);
        assert_eq!(o.language, None);
        assert!(!o.word_timestamps);
    }

    #[actix_web::test]
    async fn content_type_is_the_hint_without_a_file_name() {
        let f = TestFormField::new("file", &b"abc"[..]).content_type("audio/mpeg".parse().unwrap());
        let form = parse(vec![f], LIMITS).await.unwrap();
        assert_eq!(form.file_hint.as_deref(), Some("audio/mpeg"));
    }

    #[actix_web::test]
    async fn missing_file_is_400() {
        let e = parse(vec![text("model", "whisper-1")], LIMITS)
            .await
            .unwrap_err();
        assert_eq!(
            (e.status().as_u16(), e.code(), e.param()),
            (400, "missing_file", Some("file"))
        );
    }

    #[actix_web::test]
    async fn oversized_file_is_413() {
        static BIG: [u8; 1025] = [7u8; 1025];
        let e = parse(vec![file(&BIG)], LIMITS).await.unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (413, "upload_too_large"));
        // exactly at the limit is fine
        static EXACT: [u8; 1024] = [7u8; 1024];
        let exact = parse(vec![file(&EXACT)], LIMITS).await.unwrap().file;
        assert_eq!(exact.len(), 1024);
        // Past the spool threshold (512 here) the file is on disk.
        assert!(exact.is_spooled());
        assert_eq!(exact.to_vec().unwrap(), EXACT);
    }

    #[actix_web::test]
    async fn oversized_body_is_413_while_streaming() {
        // Lots of ignored fields: the file is small but the body is not.
        static JUNK: [u8; 4000] = [b'x'; 4000];
        let limits = FormLimits {
            max_file_bytes: 1024,
            max_body_bytes: 2048,
            ..LIMITS
        };
        let fields = vec![file(b"abc"), TestFormField::new("junk", &JUNK[..])];
        let e = parse(fields, limits).await.unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (413, "upload_too_large"));
    }

    #[actix_web::test]
    async fn declared_oversize_is_413_before_reading() {
        let (body, mut headers) =
            create_form_data_payload_and_headers_from_fields(vec![file(b"abc")]);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(10_000_000u64));
        // A body stream that must never be polled.
        let never = futures::stream::iter(vec![Err::<Bytes, _>(PayloadError::Incomplete(None))]);
        let e = read_form(&headers, never, LIMITS).await.unwrap_err();
        assert_eq!(e.status().as_u16(), 413);
        drop(body);
    }

    #[actix_web::test]
    async fn bad_parameters_are_400_with_param() {
        let cases: Vec<(TestFormField<'static>, &str)> = vec![
            (text("response_format", "xml"), "response_format"),
            (text("temperature", "1.5"), "temperature"),
            (text("temperature", "-0.1"), "temperature"),
            (text("temperature", "NaN"), "temperature"),
            (text("temperature", "warm"), "temperature"),
            (text("language", "klingon"), "language"),
            (text("beam_size", "0"), "beam_size"),
            (text("beam_size", "99"), "beam_size"),
            (text("vad_filter", "maybe"), "vad_filter"),
            (
                text("timestamp_granularities[]", "sentence"),
                "timestamp_granularities[]",
            ),
            (
                text("timestamp_granularities[]", "word"),
                "timestamp_granularities[]",
            ), // not verbose_json
            (text("stream", "yes"), "stream"),
        ];
        for (field, param) in cases {
            let e = parse(vec![file(b"abc"), field], LIMITS).await.unwrap_err();
            assert_eq!((e.status().as_u16(), e.param()), (400, Some(param)), "{e}");
        }
    }

    #[actix_web::test]
    async fn empty_text_fields_count_as_absent() {
        let form = parse(
            vec![file(b"abc"), text("language", ""), text("temperature", " ")],
            LIMITS,
        )
        .await
        .unwrap();
        assert_eq!(form.language, None);
        assert_eq!(form.temperature, None);
    }

    #[actix_web::test]
    async fn duplicate_file_and_long_text_are_400() {
        let e = parse(vec![file(b"a"), file(b"b")], LIMITS)
            .await
            .unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (400, "duplicate_file"));
        static LONG: [u8; MAX_TEXT_FIELD_BYTES + 1] = [b'a'; MAX_TEXT_FIELD_BYTES + 1];
        let limits = FormLimits::for_upload_limit(1024);
        let e = parse(
            vec![file(b"a"), TestFormField::new("prompt", &LONG[..])],
            limits,
        )
        .await
        .unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (400, "field_too_long"));
    }

    #[actix_web::test]
    async fn not_multipart_is_400() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = futures::stream::iter(vec![Ok::<_, PayloadError>(Bytes::from_static(b"{}"))]);
        let e = read_form(&headers, body, LIMITS).await.unwrap_err();
        assert_eq!(
            (e.status().as_u16(), e.code()),
            (400, "invalid_content_type")
        );
    }

    #[actix_web::test]
    async fn truncated_multipart_is_400() {
        let (body, headers) =
            create_form_data_payload_and_headers_from_fields(vec![file(b"abcdef")]);
        let cut = body.slice(..body.len() - 10);
        let e = read_form(&headers, chunked(cut, 7), LIMITS)
            .await
            .unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (400, "invalid_multipart"));
    }

    #[actix_web::test]
    async fn a_stalled_body_is_408_when_its_time_runs_out() {
        let (body, headers) =
            create_form_data_payload_and_headers_from_fields(vec![file(b"abcdef")]);
        // Half the body, then nothing, ever.
        let half = futures::stream::iter(vec![Ok::<_, PayloadError>(body.slice(..body.len() / 2))])
            .chain(futures::stream::pending());
        let limits = FormLimits {
            timeout: Duration::from_millis(200),
            ..LIMITS
        };
        let started = std::time::Instant::now();
        let e = read_form(&headers, half, limits).await.unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (408, "upload_timeout"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn temperature_schedules() {
        let d = DecodeOptions::default().temperatures;
        assert_eq!(temperature_schedule(None, &d), d);
        assert_eq!(temperature_schedule(Some(0.0), &d), d);
        assert_eq!(
            temperature_schedule(Some(0.2), &d),
            vec![0.2, 0.4, 0.6, 0.8, 1.0]
        );
        assert_eq!(temperature_schedule(Some(0.9), &d), vec![0.9]);
        assert_eq!(temperature_schedule(Some(1.0), &d), vec![1.0]);
    }
}

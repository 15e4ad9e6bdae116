//! [`RawForm`]: the text fields as sent, and their validation into a
//! [`TranscriptionForm`].

use super::{TranscriptionForm, MAX_BATCH_SIZE, MAX_BEAM_SIZE, MAX_LANGUAGE_DETECTION_SEGMENTS};
use crate::audio::Upload;
use crate::error_code::Code;
use crate::http::error::ApiError;
use crate::http::format::{Granularities, ResponseFormat};
use crate::http::language;

/// Form values as sent, before validation.
#[derive(Debug, Default)]
pub(super) struct RawForm {
    pub(super) file: Option<Upload>,
    pub(super) file_hint: Option<String>,
    pub(super) model: Option<String>,
    pub(super) language: Option<String>,
    pub(super) prompt: Option<String>,
    pub(super) response_format: Option<String>,
    pub(super) temperature: Option<String>,
    pub(super) granularities: Vec<String>,
    pub(super) beam_size: Option<String>,
    pub(super) batch_size: Option<String>,
    pub(super) vad_filter: Option<String>,
    pub(super) stream: Option<String>,
    pub(super) chunking_strategy: Option<String>,
    pub(super) hotwords: Option<String>,
    pub(super) include: Vec<String>,
    pub(super) language_detection_segments: Option<String>,
    pub(super) language_detection_threshold: Option<String>,
    /// A field of OpenAI's API the node cannot honour, if one was sent.
    pub(super) unsupported: Option<&'static str>,
}

impl RawForm {
    pub(super) fn push(&mut self, name: &str, value: String) {
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
            "batch_size" => &mut self.batch_size,
            "vad_filter" => &mut self.vad_filter,
            "stream" => &mut self.stream,
            "chunking_strategy" => &mut self.chunking_strategy,
            "hotwords" => &mut self.hotwords,
            "include[]" | "include" => {
                self.include
                    .extend(trimmed.split(',').map(|v| v.trim().to_ascii_lowercase()));
                return;
            }
            "language_detection_segments" => &mut self.language_detection_segments,
            "language_detection_threshold" => &mut self.language_detection_threshold,
            "known_speaker_names[]" | "known_speaker_names" => {
                self.unsupported = Some("known_speaker_names");
                return;
            }
            "known_speaker_references[]" | "known_speaker_references" => {
                self.unsupported = Some("known_speaker_references");
                return;
            }
            _ => {
                self.granularities
                    .extend(trimmed.split(',').map(|g| g.trim().to_ascii_lowercase()));
                return;
            }
        };
        *slot = Some(trimmed.to_string());
    }

    pub(super) fn validate(self) -> Result<TranscriptionForm, ApiError> {
        let file = self.file.ok_or_else(|| {
            ApiError::new(Code::MissingFile, "the form has no file field").with_param("file")
        })?;

        if let Some(field) = self.unsupported {
            return Err(ApiError::new(
                Code::UnsupportedParameter,
                format!("{field} is not supported: this node does not identify speakers (no diarization)"),
            )
            .with_param(field));
        }
        let response_format = match &self.response_format {
            None => ResponseFormat::Json,
            Some(f) if f.eq_ignore_ascii_case("diarized_json") => {
                return Err(ApiError::new(
                    Code::UnsupportedParameter,
                    "response_format diarized_json is not supported: this node does not identify speakers (no diarization)",
                )
                .with_param("response_format"))
            }
            Some(f) => f.parse().map_err(|e: crate::http::format::UnknownFormat| {
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

        let batch_size = match &self.batch_size {
            None => None,
            Some(b) => Some(
                b.parse::<u32>()
                    .ok()
                    .filter(|b| (1..=MAX_BATCH_SIZE).contains(b))
                    .ok_or_else(|| {
                        ApiError::invalid_param(
                            "batch_size",
                            format!(
                                "batch_size must be an integer from 1 (sequential) to \
                                 {MAX_BATCH_SIZE}"
                            ),
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

        let chunking = match self.chunking_strategy.as_deref() {
            None => None,
            Some(c) => Some(chunking_strategy(c)?),
        };
        let vad_filter = match self.vad_filter.as_deref().map(str::to_ascii_lowercase) {
            None => chunking,
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

        let mut logprobs = false;
        for value in self.include.iter().filter(|v| !v.is_empty()) {
            if value != "logprobs" {
                return Err(ApiError::invalid_param(
                    "include[]",
                    format!("unknown include value {:?}; expected logprobs", cut(value)),
                ));
            }
            logprobs = true;
        }
        if logprobs && (response_format != ResponseFormat::Json || stream) {
            return Err(ApiError::invalid_param(
                "include[]",
                "logprobs come with response_format json, without stream",
            ));
        }
        let language_detection_segments = match &self.language_detection_segments {
            None => None,
            Some(n) => Some(
                n.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LANGUAGE_DETECTION_SEGMENTS).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid_param(
                            "language_detection_segments",
                            format!(
                                "language_detection_segments must be an integer from 1 to \
                                 {MAX_LANGUAGE_DETECTION_SEGMENTS}"
                            ),
                        )
                    })?,
            ),
        };
        let language_detection_threshold = match &self.language_detection_threshold {
            None => None,
            Some(t) => Some(
                t.parse::<f32>()
                    .ok()
                    .filter(|t| (0.0..=1.0).contains(t))
                    .ok_or_else(|| {
                        ApiError::invalid_param(
                            "language_detection_threshold",
                            "language_detection_threshold must be a number from 0 to 1",
                        )
                    })?,
            ),
        };

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
            batch_size,
            vad_filter,
            stream,
            hotwords: self.hotwords,
            logprobs,
            language_detection_segments,
            language_detection_threshold,
        })
    }
}

/// `chunking_strategy`: `auto` or a `server_vad` object (OpenAI's) turn on
/// the node's voice-activity detection, which cuts the audio into speech
/// before decoding ([`crate::api::DecodeOptions::vad_filter`]); its
/// parameters (`threshold`, `silence_duration_ms`, `prefix_padding_ms`) are
/// accepted and the node's own VAD settings used. Anything else is a 400.
fn chunking_strategy(value: &str) -> Result<bool, ApiError> {
    let bad = || {
        ApiError::invalid_param(
            "chunking_strategy",
            format!(
                "chunking_strategy must be \"auto\" or {{\"type\": \"server_vad\"}}, got {:?}",
                cut(value)
            ),
        )
    };
    let value = value.trim();
    if value.eq_ignore_ascii_case("auto") {
        return Ok(true);
    }
    let json: serde_json::Value = serde_json::from_str(value).map_err(|_| bad())?;
    match json.get("type").and_then(|t| t.as_str()) {
        Some("server_vad") => Ok(true),
        _ => Err(bad()),
    }
}

/// A client value cut short for quoting in an error message.
pub(super) fn cut(s: &str) -> String {
    s.chars().take(40).collect()
}

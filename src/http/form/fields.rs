//! [`RawForm`]: the text fields as sent, and their validation into a
//! [`TranscriptionForm`].

use super::{TranscriptionForm, MAX_BEAM_SIZE};
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
    pub(super) vad_filter: Option<String>,
    pub(super) stream: Option<String>,
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

    pub(super) fn validate(self) -> Result<TranscriptionForm, ApiError> {
        let file = self.file.ok_or_else(|| {
            ApiError::new(Code::MissingFile, "the form has no file field").with_param("file")
        })?;

        let response_format = match &self.response_format {
            None => ResponseFormat::Json,
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
pub(super) fn cut(s: &str) -> String {
    s.chars().take(40).collect()
}

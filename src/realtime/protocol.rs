//! OpenAI's Realtime transcription events: what a client may send
//! ([`ClientEvent`], parsed from a text frame, every failure a
//! [`ProtocolError`] with a stable [`Code`]); what the server sends is
//! [`ServerEvent`] (in [`super::events`]).
//!
//! Both the GA shape (`session.update` with `session.audio.input.{format,
//! transcription, turn_detection}`) and the beta shape
//! (`transcription_session.update` with `input_audio_format`,
//! `input_audio_transcription`, `turn_detection`) are accepted; the answer
//! carries both sets of fields.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

pub use super::events::ServerEvent;

use crate::error_code::Code;

/// Audio sample rates a session accepts (PCM16 mono, little-endian).
pub const RATES: [u32; 2] = [24_000, 16_000];

/// A client event that failed, answered with an `error` event.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolError {
    /// Stable code (the `error.code` of the event).
    pub code: Code,
    /// What was wrong, for a person.
    pub message: String,
    /// The offending field, if one.
    pub param: Option<String>,
}

impl ProtocolError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
        }
    }

    /// The same, naming the field.
    pub fn param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }
}

/// Turn detection of a session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TurnDetection {
    /// The client commits each utterance.
    None,
    /// The node's VAD commits when the speaker stops.
    ServerVad(VadParams),
}

/// OpenAI's `server_vad` parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadParams {
    /// Speech probability above which a frame is speech (0–1).
    pub threshold: f32,
    /// Audio kept before the detected start of speech.
    pub prefix_padding_ms: u32,
    /// Silence that ends an utterance.
    pub silence_duration_ms: u32,
}

impl Default for VadParams {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
        }
    }
}

/// A session's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// Input sample rate.
    pub rate: u32,
    /// Transcription model name as the client gave it (the node has one).
    pub model: String,
    /// Whisper language code, `None` to detect.
    pub language: Option<String>,
    /// Initial prompt.
    pub prompt: Option<String>,
    /// Turn detection.
    pub turn: TurnDetection,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            rate: 24_000,
            model: "whisper-1".into(),
            language: None,
            prompt: None,
            turn: TurnDetection::ServerVad(VadParams::default()),
        }
    }
}

/// A parsed client event.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// `session.update` (or the beta `transcription_session.update`, then
    /// `beta` is set) with the session's new settings.
    SessionUpdate {
        /// The client's event id.
        event_id: Option<String>,
        /// The settings after the update.
        config: SessionConfig,
        /// Sent as `transcription_session.update`.
        beta: bool,
    },
    /// `input_audio_buffer.append`: PCM16 little-endian bytes.
    Append {
        /// The client's event id.
        event_id: Option<String>,
        /// Decoded audio bytes (even length).
        pcm: Vec<u8>,
    },
    /// `input_audio_buffer.commit`.
    Commit {
        /// The client's event id.
        event_id: Option<String>,
    },
    /// `input_audio_buffer.clear`.
    Clear {
        /// The client's event id.
        event_id: Option<String>,
    },
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    event_id: Option<String>,
}

/// Parses a text frame into an event, applying a session update to
/// `current`. `max_append_bytes` bounds one append's decoded audio.
/// Errors carry the client's `event_id` when it could be read.
pub fn parse(
    text: &str,
    current: &SessionConfig,
    max_append_bytes: usize,
) -> Result<ClientEvent, (ProtocolError, Option<String>)> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (
            ProtocolError::new(
                Code::InvalidEvent,
                format!("the event is not valid JSON: {e}"),
            ),
            None,
        )
    })?;
    let env: Envelope = serde_json::from_value(value.clone()).map_err(|_| {
        (
            ProtocolError::new(
                Code::InvalidEvent,
                "an event is a JSON object with a string \"type\"",
            )
            .param("type"),
            None,
        )
    })?;
    let id = env.event_id.clone();
    let with_id = |e: ProtocolError| (e, id.clone());
    match env.kind.as_str() {
        "session.update" | "transcription_session.update" => {
            let beta = env.kind == "transcription_session.update";
            let session = value.get("session").cloned().unwrap_or(Value::Null);
            let config = apply_update(current, &session).map_err(with_id)?;
            Ok(ClientEvent::SessionUpdate {
                event_id: env.event_id,
                config,
                beta,
            })
        }
        "input_audio_buffer.append" => {
            let audio = value
                .get("audio")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    with_id(
                        ProtocolError::new(
                            Code::InvalidEvent,
                            "input_audio_buffer.append needs \"audio\", a base64 string",
                        )
                        .param("audio"),
                    )
                })?;
            // base64 is 4 characters per 3 bytes: refuse before decoding.
            if audio.len() / 4 * 3 > max_append_bytes + 3 {
                return Err(with_id(
                    ProtocolError::new(
                        Code::AppendTooLarge,
                        format!(
                            "one append may carry at most {max_append_bytes} bytes of audio; send smaller chunks"
                        ),
                    )
                    .param("audio"),
                ));
            }
            let pcm = base64::engine::general_purpose::STANDARD
                .decode(audio)
                .map_err(|e| {
                    with_id(
                        ProtocolError::new(
                            Code::InvalidAudioChunk,
                            format!("\"audio\" is not valid base64: {e}"),
                        )
                        .param("audio"),
                    )
                })?;
            if pcm.len() % 2 != 0 {
                return Err(with_id(
                    ProtocolError::new(
                        Code::InvalidAudioChunk,
                        format!(
                            "\"audio\" must be 16-bit PCM: {} bytes is not a whole number of samples",
                            pcm.len()
                        ),
                    )
                    .param("audio"),
                ));
            }
            Ok(ClientEvent::Append {
                event_id: env.event_id,
                pcm,
            })
        }
        "input_audio_buffer.commit" => Ok(ClientEvent::Commit {
            event_id: env.event_id,
        }),
        "input_audio_buffer.clear" => Ok(ClientEvent::Clear {
            event_id: env.event_id,
        }),
        other => Err(with_id(
            ProtocolError::new(
                Code::UnknownEvent,
                format!(
                    "unknown event type {other:?}; a transcription session takes session.update, \
                     input_audio_buffer.append, input_audio_buffer.commit and input_audio_buffer.clear"
                ),
            )
            .param("type"),
        )),
    }
}

/// `current` with the fields of a `session` object (GA or beta shape).
fn apply_update(current: &SessionConfig, s: &Value) -> Result<SessionConfig, ProtocolError> {
    if !s.is_object() {
        return Err(
            ProtocolError::new(Code::InvalidEvent, "\"session\" must be an object")
                .param("session"),
        );
    }
    let mut next = current.clone();
    let input = s.pointer("/audio/input");
    // Format: GA `audio.input.format` {type, rate}; beta `input_audio_format`.
    let format = input
        .and_then(|i| i.get("format"))
        .or_else(|| s.get("input_audio_format"));
    if let Some(f) = format.filter(|f| !f.is_null()) {
        next.rate = parse_format(f, s.get("input_audio_rate"))?;
    }
    let tr = input
        .and_then(|i| i.get("transcription"))
        .or_else(|| s.get("input_audio_transcription"));
    if let Some(t) = tr.filter(|t| !t.is_null()) {
        if let Some(m) = t.get("model").and_then(Value::as_str) {
            next.model = m.to_string();
        }
        match t.get("language") {
            None => {}
            Some(Value::Null) => next.language = None,
            Some(Value::String(l)) if l.trim().is_empty() => next.language = None,
            Some(Value::String(l)) => {
                let code = crate::language::normalize(l).ok_or_else(|| {
                    ProtocolError::new(
                        Code::InvalidParameter,
                        format!("unknown transcription language {l:?}"),
                    )
                    .param("language")
                })?;
                next.language = Some(code.to_string());
            }
            Some(_) => {
                return Err(ProtocolError::new(
                    Code::InvalidParameter,
                    "transcription language must be a string",
                )
                .param("language"))
            }
        }
        match t.get("prompt") {
            None => {}
            Some(Value::Null) => next.prompt = None,
            Some(Value::String(p)) => {
                next.prompt = (!p.is_empty()).then(|| p.clone());
            }
            Some(_) => {
                return Err(ProtocolError::new(
                    Code::InvalidParameter,
                    "transcription prompt must be a string",
                )
                .param("prompt"))
            }
        }
    }
    let td = match input.and_then(|i| i.get("turn_detection")) {
        Some(v) => Some(v),
        None => s.get("turn_detection"),
    };
    if let Some(td) = td {
        next.turn = parse_turn(td, &current.turn)?;
    }
    Ok(next)
}

fn parse_format(f: &Value, beta_rate: Option<&Value>) -> Result<u32, ProtocolError> {
    let unsupported = |what: &str| {
        ProtocolError::new(
            Code::UnsupportedAudio,
            format!(
                "unsupported input audio format {what}; this node takes 16-bit PCM mono \
                 (\"audio/pcm\" or \"pcm16\") at 24000 or 16000 Hz"
            ),
        )
        .param("format")
    };
    let (kind, rate) = match f {
        Value::String(s) => (s.as_str(), beta_rate),
        Value::Object(o) => (
            o.get("type").and_then(Value::as_str).unwrap_or(""),
            o.get("rate"),
        ),
        other => return Err(unsupported(&other.to_string())),
    };
    if !matches!(kind, "audio/pcm" | "pcm16") {
        return Err(unsupported(&format!("{kind:?}")));
    }
    match rate {
        None | Some(Value::Null) => Ok(24_000),
        Some(r) => match r.as_u64() {
            Some(r) if RATES.contains(&(r as u32)) && r <= u64::from(u32::MAX) => Ok(r as u32),
            _ => Err(unsupported(&format!("at rate {r}"))),
        },
    }
}

fn parse_turn(td: &Value, current: &TurnDetection) -> Result<TurnDetection, ProtocolError> {
    let bad = |m: String, p: &str| ProtocolError::new(Code::InvalidParameter, m).param(p);
    if td.is_null() {
        return Ok(TurnDetection::None);
    }
    let kind = td
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("server_vad");
    match kind {
        "none" => return Ok(TurnDetection::None),
        "server_vad" => {}
        other => {
            return Err(bad(
                format!(
                    "turn_detection type {other:?} is not supported; use \"server_vad\" or null"
                ),
                "turn_detection.type",
            ))
        }
    }
    let mut p = match current {
        TurnDetection::ServerVad(p) => *p,
        TurnDetection::None => VadParams::default(),
    };
    if let Some(v) = td.get("threshold").filter(|v| !v.is_null()) {
        match v.as_f64() {
            Some(t) if (0.0..=1.0).contains(&t) => p.threshold = t as f32,
            _ => {
                return Err(bad(
                    format!("turn_detection.threshold must be between 0 and 1, got {v}"),
                    "turn_detection.threshold",
                ))
            }
        }
    }
    for (name, slot, max) in [
        ("prefix_padding_ms", &mut p.prefix_padding_ms, 5_000u64),
        ("silence_duration_ms", &mut p.silence_duration_ms, 10_000u64),
    ] {
        if let Some(v) = td.get(name).filter(|v| !v.is_null()) {
            match v.as_u64() {
                Some(ms) if ms <= max => *slot = ms as u32,
                _ => {
                    return Err(bad(
                        format!("turn_detection.{name} must be 0 to {max} ms, got {v}"),
                        &format!("turn_detection.{name}"),
                    ))
                }
            }
        }
    }
    Ok(TurnDetection::ServerVad(p))
}

#[cfg(test)]
mod tests;

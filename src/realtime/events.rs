//! The server's events, in OpenAI's JSON shapes ([`ServerEvent`]).

use serde_json::{json, Value};

use super::protocol::{ProtocolError, SessionConfig, TurnDetection};
/// An event for the client. `event_id` is filled in when it is sent.
#[derive(Debug, Clone)]
pub enum ServerEvent {
    /// `session.created` / `session.updated` / `transcription_session.updated`.
    Session {
        /// The event type.
        kind: &'static str,
        /// Session id.
        id: String,
        /// Its settings.
        config: SessionConfig,
    },
    /// `input_audio_buffer.speech_started`.
    SpeechStarted {
        /// Item the speech will become.
        item_id: String,
        /// Where speech starts, in ms of the session's audio.
        audio_start_ms: u64,
    },
    /// `input_audio_buffer.speech_stopped`.
    SpeechStopped {
        /// The item.
        item_id: String,
        /// Where speech ends, in ms of the session's audio.
        audio_end_ms: u64,
    },
    /// `input_audio_buffer.committed`.
    Committed {
        /// The new item.
        item_id: String,
        /// The item committed before it, if any.
        previous_item_id: Option<String>,
    },
    /// `input_audio_buffer.cleared`.
    Cleared,
    /// `conversation.item.input_audio_transcription.delta`: stable text.
    Delta {
        /// The item.
        item_id: String,
        /// Text appended to the item's stable prefix.
        delta: String,
    },
    /// `conversation.item.input_audio_transcription.completed`.
    Completed {
        /// The item.
        item_id: String,
        /// The final transcript.
        transcript: String,
        /// Seconds of audio in the item (usage).
        audio_secs: f64,
        /// This node's extension `x_timing`: the utterance's queue wait and
        /// decode time, in ms (OpenAI clients ignore unknown fields).
        timing: (f64, f64),
    },
    /// `conversation.item.input_audio_transcription.failed`.
    Failed {
        /// The item.
        item_id: String,
        /// Why.
        error: ProtocolError,
    },
    /// `error`.
    Error {
        /// What went wrong.
        error: ProtocolError,
        /// The client event that caused it.
        client_event_id: Option<String>,
        /// The item it concerns, if one.
        item_id: Option<String>,
        /// When to try again, if retrying can help.
        retry_after_ms: Option<u64>,
    },
}

impl ServerEvent {
    /// The event's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerEvent::Session { kind, .. } => kind,
            ServerEvent::SpeechStarted { .. } => "input_audio_buffer.speech_started",
            ServerEvent::SpeechStopped { .. } => "input_audio_buffer.speech_stopped",
            ServerEvent::Committed { .. } => "input_audio_buffer.committed",
            ServerEvent::Cleared => "input_audio_buffer.cleared",
            ServerEvent::Delta { .. } => "conversation.item.input_audio_transcription.delta",
            ServerEvent::Completed { .. } => {
                "conversation.item.input_audio_transcription.completed"
            }
            ServerEvent::Failed { .. } => "conversation.item.input_audio_transcription.failed",
            ServerEvent::Error { .. } => "error",
        }
    }

    /// OpenAI's JSON for this event, with the server's `event_id`.
    pub fn to_json(&self, event_id: &str) -> String {
        let kind = self.kind();
        let v = match self {
            ServerEvent::Session { id, config, .. } => {
                json!({"type": kind, "event_id": event_id, "session": session_json(id, config)})
            }
            ServerEvent::SpeechStarted {
                item_id,
                audio_start_ms,
            } => json!({"type": kind, "event_id": event_id, "item_id": item_id,
                         "audio_start_ms": audio_start_ms}),
            ServerEvent::SpeechStopped {
                item_id,
                audio_end_ms,
            } => json!({"type": kind, "event_id": event_id, "item_id": item_id,
                         "audio_end_ms": audio_end_ms}),
            ServerEvent::Committed {
                item_id,
                previous_item_id,
            } => json!({"type": kind, "event_id": event_id, "item_id": item_id,
                         "previous_item_id": previous_item_id}),
            ServerEvent::Cleared => json!({"type": kind, "event_id": event_id}),
            ServerEvent::Delta { item_id, delta } => json!({"type": kind, "event_id": event_id,
                "item_id": item_id, "content_index": 0, "delta": delta}),
            ServerEvent::Completed {
                item_id,
                transcript,
                audio_secs,
                timing: (queue_wait_ms, decode_ms),
            } => json!({"type": kind, "event_id": event_id, "item_id": item_id,
                "content_index": 0, "transcript": transcript,
                "usage": {"type": "duration", "seconds": (audio_secs * 1000.0).round() / 1000.0},
                "x_timing": {"queue_wait_ms": queue_wait_ms.round(), "decode_ms": decode_ms.round()}}),
            ServerEvent::Failed { item_id, error } => json!({"type": kind, "event_id": event_id,
                "item_id": item_id, "content_index": 0, "error": error_json(error, None, None)}),
            ServerEvent::Error {
                error,
                client_event_id,
                item_id,
                retry_after_ms,
            } => {
                let mut e = error_json(error, client_event_id.as_deref(), *retry_after_ms);
                if let Some(item) = item_id {
                    e["item_id"] = json!(item);
                }
                json!({"type": kind, "event_id": event_id, "error": e})
            }
        };
        v.to_string()
    }
}

/// OpenAI's error object, plus `retry_after_ms` when retrying can help.
fn error_json(e: &ProtocolError, client_event_id: Option<&str>, retry_ms: Option<u64>) -> Value {
    let mut v = json!({
        "type": e.code.error_type(),
        "code": e.code.name(),
        "message": e.message,
        "param": e.param,
        "event_id": client_event_id,
    });
    if let Some(ms) = retry_ms {
        v["retry_after_ms"] = json!(ms);
    }
    v
}

/// The session object, in the GA shape with the beta fields alongside.
fn session_json(id: &str, c: &SessionConfig) -> Value {
    let turn = match c.turn {
        TurnDetection::None => Value::Null,
        TurnDetection::ServerVad(p) => json!({
            "type": "server_vad",
            "threshold": p.threshold,
            "prefix_padding_ms": p.prefix_padding_ms,
            "silence_duration_ms": p.silence_duration_ms,
        }),
    };
    let transcription = json!({
        "model": c.model,
        "language": c.language,
        "prompt": c.prompt.clone().unwrap_or_default(),
    });
    json!({
        "id": id,
        "object": "realtime.transcription_session",
        "type": "transcription",
        "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": c.rate},
            "transcription": transcription,
            "turn_detection": turn,
            "noise_reduction": null,
        }},
        "input_audio_format": "pcm16",
        "input_audio_rate": c.rate,
        "input_audio_transcription": transcription,
        "turn_detection": turn,
    })
}

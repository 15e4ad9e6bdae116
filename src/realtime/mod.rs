//! Live transcription: OpenAI's Realtime transcription protocol, one
//! supervised actor per session.
//!
//! `GET /v1/realtime?intent=transcription` ([`crate::http::realtime`])
//! upgrades to a WebSocket. The client sends `session.update` (or the beta
//! `transcription_session.update`), `input_audio_buffer.append` (base64
//! PCM16 mono, 24 kHz as OpenAI or 16 kHz), `input_audio_buffer.commit`
//! and `input_audio_buffer.clear`; the server answers `session.created` /
//! `session.updated`, `input_audio_buffer.speech_started` /
//! `speech_stopped` / `committed` / `cleared`,
//! `conversation.item.input_audio_transcription.delta` / `.completed` /
//! `.failed`, and `error` events in OpenAI's error shape (its `code` from
//! [`crate::error_code`], plus `retry_after_ms` when a retry can help and
//! `item_id` when it concerns an utterance). See [`protocol`].
//!
//! # Turn detection
//! `server_vad` (the default, as OpenAI; `threshold`, `prefix_padding_ms`,
//! `silence_duration_ms`) runs earshot on the 16 kHz stream ([`vad`]) and
//! commits when the speaker stops; `turn_detection: null` leaves commits to
//! the client.
//!
//! # Scheduling policy
//! Each committed utterance is one job in the node's one bounded queue, in
//! class [`crate::JobClass::Realtime`], which the queue serves before
//! synchronous uploads and async jobs (within a class, first come first
//! served; a job already decoding is never preempted). The classes share
//! the queue's capacity: when it is full an utterance gets an `error`
//! event (`queue_full`, `retry_after_ms`) and a `…transcription.failed`
//! event, never a silent drop or a hang. Terminal events (completed or
//! error) come in commit order. A worker crash while an utterance decodes
//! retries it once (`--max-crash-retries`), then the utterance gets an
//! error event; the session goes on.
//!
//! # Partial results: provisional and final
//! Under `server_vad`, while an utterance is open and at least 1 s long,
//! the session re-decodes it at most every `--realtime-partial-interval-ms`,
//! and only when nothing waits in the queue and none of its own utterances
//! is waiting for a transcript: partials never delay a final transcript
//! more than the one decode already running. Text is sent as `delta` only
//! once it is **stable** (two consecutive decodes agree on it); the deltas
//! of an item concatenated are always a prefix of its `completed`
//! transcript, which is final. See [`stable`].
//!
//! # Backpressure and limits ([`RealtimeConfig`])
//! - at most `--realtime-max-sessions` sessions (the upgrade answers 429
//!   `too_many_sessions` with `Retry-After`);
//! - per session: at most `--realtime-max-utterance-secs` of buffered
//!   audio, `--realtime-max-pending-utterances` utterances waiting, one
//!   append of `--realtime-max-append-bytes`; a client that does not read
//!   its events is closed once `--realtime-send-buffer-events` are queued
//!   (close code 1008); no event for `--realtime-idle-timeout-secs`, or a
//!   session of `--realtime-max-session-secs`, ends it with an error event
//!   and close 1008;
//! - frames are read one at a time: the reader waits until the session
//!   handled a frame before it reads the next, so a client sending faster
//!   than the session works is slowed by TCP, not buffered.
//!
//! # Observability
//! A `realtime.session` span (child of the upgrade request's span) per
//! session, a `realtime.utterance` child per committed utterance (the
//! node's `asr.job`, `queue.wait` and `worker.decode` spans below it), and
//! `realtime.partial` per provisional decode. Metrics:
//! `asr_realtime_sessions_active`, `asr_realtime_sessions_total{outcome}`,
//! `asr_realtime_utterances_total{outcome}` and
//! `asr_realtime_final_latency_seconds` (end of speech to `completed`).

pub mod config;
pub mod events;
pub mod protocol;
pub mod resample;
pub mod session;
pub mod sessions;
pub mod stable;
pub mod vad;

pub use config::RealtimeConfig;
pub use session::{SessionActor, SessionMsg};
pub use sessions::{SessionsActor, SessionsMsg};

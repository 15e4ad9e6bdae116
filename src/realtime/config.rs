//! Limits of realtime sessions (`--realtime-*` flags), part of
//! [`crate::NodeConfig`].

use std::time::Duration;

/// Limits of `/v1/realtime` sessions. Each bound is what keeps a session's
/// memory and the node's work finite whatever a client does.
#[derive(Debug, Clone, clap::Args)]
pub struct RealtimeConfig {
    /// Concurrent realtime sessions; one more is refused at the upgrade
    /// with 429 and `Retry-After`. 0 turns the endpoint off (404).
    #[arg(long, env = "WHISPER_NODE_REALTIME_MAX_SESSIONS", default_value_t = 16)]
    pub realtime_max_sessions: usize,

    /// Longest utterance a session buffers, in seconds (the session's audio
    /// memory cap). With `server_vad` a longer turn is committed in pieces
    /// of this length; in manual mode appends past it are refused with an
    /// `input_audio_buffer_full` error.
    #[arg(
        long,
        env = "WHISPER_NODE_REALTIME_MAX_UTTERANCE_SECS",
        default_value_t = 30.0
    )]
    pub realtime_max_utterance_secs: f64,

    /// Committed utterances a session may have waiting for their
    /// transcript; one more is an error event (`queue_full`), like a full
    /// queue.
    #[arg(
        long,
        env = "WHISPER_NODE_REALTIME_MAX_PENDING_UTTERANCES",
        default_value_t = 4
    )]
    pub realtime_max_pending_utterances: usize,

    /// Largest decoded audio of one `input_audio_buffer.append`, in bytes;
    /// a larger one is an `append_too_large` error event (OpenAI allows
    /// 15 MiB; live clients send 20–100 ms).
    #[arg(
        long,
        env = "WHISPER_NODE_REALTIME_MAX_APPEND_BYTES",
        default_value_t = 1024 * 1024
    )]
    pub realtime_max_append_bytes: usize,

    /// Events queued for a client that does not read them; past this the
    /// session is closed (1008, `slow_consumer`).
    #[arg(
        long,
        env = "WHISPER_NODE_REALTIME_SEND_BUFFER_EVENTS",
        default_value_t = 256
    )]
    pub realtime_send_buffer_events: usize,

    /// A session that receives no event for this long is closed.
    #[arg(
        long,
        env = "WHISPER_NODE_REALTIME_IDLE_TIMEOUT_SECS",
        default_value_t = 60.0
    )]
    pub realtime_idle_timeout_secs: f64,

    /// Longest session, in seconds; then it is closed (`session_expired`).
    #[arg(
        long,
        env = "WHISPER_NODE_REALTIME_MAX_SESSION_SECS",
        default_value_t = 3600.0
    )]
    pub realtime_max_session_secs: f64,

    /// Cadence of provisional re-decodes of an open utterance
    /// (`conversation.item.input_audio_transcription.delta`), in
    /// milliseconds; 0 (the default) turns partial results off. A
    /// re-decode is only submitted while the queue is empty. Off by default
    /// because a provisional decode still running when the speaker stops
    /// delays the final transcript: at 1000 ms, end of speech → completed
    /// was 1.83× the decode time at p95 (1.00× off; `make bench-realtime`,
    /// BENCHMARKS.md). Turn it on for live captions where that trade is
    /// wanted.
    #[arg(
        long,
        env = "WHISPER_NODE_REALTIME_PARTIAL_INTERVAL_MS",
        default_value_t = 0
    )]
    pub realtime_partial_interval_ms: u64,
}

impl RealtimeConfig {
    /// Checks values that clap cannot.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        let err = |m: &str| Err(crate::config::ConfigError(m.to_string()));
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.realtime_max_utterance_secs) || self.realtime_max_utterance_secs > 600.0 {
            return err("realtime max utterance must be between 0 and 600 seconds");
        }
        if !positive(self.realtime_idle_timeout_secs) || !positive(self.realtime_max_session_secs) {
            return err("realtime idle timeout and max session length must be positive");
        }
        if self.realtime_send_buffer_events < 8 {
            return err("realtime send buffer must hold at least 8 events");
        }
        if self.realtime_max_pending_utterances == 0 || self.realtime_max_append_bytes < 2 {
            return err("realtime pending utterances and append size must be positive");
        }
        Ok(())
    }

    /// [`Self::realtime_idle_timeout_secs`].
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.realtime_idle_timeout_secs)
    }

    /// [`Self::realtime_max_session_secs`].
    pub fn max_session(&self) -> Duration {
        Duration::from_secs_f64(self.realtime_max_session_secs)
    }

    /// [`Self::realtime_partial_interval_ms`]; `None` when off.
    pub fn partial_interval(&self) -> Option<Duration> {
        (self.realtime_partial_interval_ms > 0)
            .then(|| Duration::from_millis(self.realtime_partial_interval_ms))
    }

    /// The session's buffer cap in 16 kHz samples.
    pub fn max_utterance_samples(&self) -> usize {
        (self.realtime_max_utterance_secs * f64::from(asr_ipc::SAMPLE_RATE)) as usize
    }
}

//! [`DecodeOptions`]: what a job asks of the decoder (faster-whisper's
//! defaults).

use serde::{Deserialize, Serialize};

use crate::Task;

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
    /// Words or phrases to bias the decoder towards (names, jargon):
    /// faster-whisper's `hotwords`, put in every window's prompt (after
    /// `<|startofprev|>`, before the previous text).
    #[serde(default)]
    pub hotwords: Option<String>,
    /// Windows of 30 s used to detect the language when none is given:
    /// detection stops at the first window whose top language is more
    /// probable than `language_detection_threshold`, else the language
    /// most often on top wins (faster-whisper's
    /// `language_detection_segments`, default 1).
    #[serde(default = "one")]
    pub language_detection_segments: u32,
    /// See `language_detection_segments` (faster-whisper's default 0.5).
    #[serde(default = "half")]
    pub language_detection_threshold: f32,
    /// Give every text token's log-probability (`Word::tokens`): the
    /// alignment pass of word timestamps is run for its token
    /// probabilities, without changing segments or their times.
    #[serde(default)]
    pub token_logprobs: bool,
    /// Windows decoded per engine call for long audio: 0 = the server's
    /// default (`--batch-size`; the node fills it in before the worker sees
    /// the job, and a worker given 0 decodes sequentially), 1 = the
    /// sequential seek loop (each window conditioned on the previous
    /// text), 2..=[`crate::MAX_BATCH_SIZE`] = batched long-form: the audio
    /// is cut into windows of at most 30 s (its speech chunks merged, with
    /// `vad_filter`) that are decoded this many at a time, without
    /// conditioning on previous text, falling back to the next temperature
    /// only for a window that runs away (a loop). Audio that fits one
    /// window is always decoded sequentially.
    #[serde(default)]
    pub batch_size: u32,
    /// The answer needs only the text (the node sets it for `json` and
    /// `text` answers without words, log-probabilities or a stream).
    /// Batched long-form decoding (`batch_size` above 1, audio over one
    /// window, `vad_filter`) then decodes its windows without timestamp
    /// tokens, as faster-whisper's `BatchedInferencePipeline` does: each
    /// window is one segment, its speech chunks are cut at pauses of 160 ms
    /// or more (the VAD's `min_silence_duration_ms`, if longer, is lowered
    /// to it) so no window ends inside a word, and no window is continued.
    /// No effect on other decoding.
    #[serde(default)]
    pub text_only: bool,
}

/// Serde default of `language_detection_segments` (records written before
/// the field existed).
fn one() -> u32 {
    1
}

/// Serde default of `language_detection_threshold`.
fn half() -> f32 {
    0.5
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
            hotwords: None,
            language_detection_segments: 1,
            language_detection_threshold: 0.5,
            token_logprobs: false,
            batch_size: 0,
            text_only: false,
        }
    }
}

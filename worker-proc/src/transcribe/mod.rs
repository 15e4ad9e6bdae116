//! The decode pipeline: a port of faster-whisper 1.x's
//! `WhisperModel.transcribe` / `generate_segments` / `generate_with_fallback`
//! for everything that decides the words and their times.
//!
//! For one job:
//! 1. log-mel features of the whole clip ([`crate::features`]);
//! 2. the language: `en` for English-only models, the given one, or
//!    `detect_language` on the first 30 s;
//! 3. the seek loop over 3000-frame windows: encode the window once, build
//!    the prompt (`<|startofprev|>` + the last 223 previous tokens, then the
//!    start-of-transcript sequence), decode with temperature fallback, skip
//!    windows judged silent, split the tokens into segments at timestamp
//!    tokens and advance `seek` to the last complete timestamp (or, with
//!    word timestamps, to the last word's end; see [`crate::words`]).
//!
//! Differences in form only: `Segment::id` counts from 0 (faster-whisper's
//! from 1); segment texts keep their leading space, and the job's text is
//! their concatenation with the outer whitespace trimmed.
//!
//! With `vad_filter`, the clip is first cut to its speech
//! ([`crate::vad`]) and the times are mapped back at the end, as
//! faster-whisper's `transcribe` does.
//!
//! Not ported (the IPC options do not carry them): `clip_timestamps`,
//! `prefix`, `hotwords`, `max_new_tokens`, `multilingual` (per-window
//! language detection), `hallucination_silence_threshold`.
//!
//! Batched long-form decoding ([`Pipeline::transcribe_many`], module
//! `batched`): windows cut at speech pauses and decoded several per engine
//! call, without conditioning on previous text; chosen per job by
//! `DecodeOptions::batch_size` for audio longer than one window.
//!
//! Every engine call is timed as a [`Phase`] with wall-clock start and end.

mod batched;
mod clock;
mod fallback;
mod plan;
mod round;
mod seek;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_batched;
mod windows;

pub use batched::BatchItem;
pub use clock::Clock;
pub use fallback::{Attempts, WindowDecode};
pub use plan::{plan, validate_audio, LanguagePlan, Plan};
pub use windows::{fixed_windows, merge_chunks, Window};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use asr_ipc::{DecodeOptions, Segment, Timings, WorkerError};

use crate::engine::Backend;
use crate::features::FeatureExtractor;
use crate::tokenizer::WhisperTokenizer;
use crate::vad;

/// The prompt is reset after a window decoded hotter than this.
pub const PROMPT_RESET_ON_TEMPERATURE: f64 = 0.5;
/// Largest beam or `best_of` accepted (the bound the HTTP form enforces too).
pub use asr_ipc::MAX_BEAM_SIZE as MAX_BEAM;

/// A model ready to decode: engine, tokenizer, features and the fixed
/// per-model decode settings.
pub struct Pipeline<B: Backend> {
    /// The engine.
    pub backend: B,
    /// The tokenizer.
    pub tokenizer: WhisperTokenizer,
    /// The feature extractor (owns the FFT plan).
    pub extractor: FeatureExtractor,
    /// Whether the model is multilingual.
    pub multilingual: bool,
    /// Token ids never to sample (faster-whisper's `suppress_tokens=[-1]`).
    pub suppress_tokens: Vec<i32>,
    /// Set (by another thread) to stop the running job: the seek loop checks
    /// it before each 30 s window and returns [`WorkerError::Cancelled`].
    pub cancel: Arc<AtomicBool>,
}

/// A finished transcription (the job-independent part of a `JobResult`).
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// The segments, in order.
    pub segments: Vec<Segment>,
    /// Language used (ISO 639-1).
    pub language: String,
    /// Probability of the detected language (1.0 when given).
    pub language_probability: f32,
    /// Seconds of audio.
    pub duration_secs: f32,
    /// Phase timings.
    pub timings: Timings,
}

impl Transcript {
    /// The full text: the segments' texts joined, without the leading space.
    pub fn text(&self) -> String {
        let joined: String = self.segments.iter().map(|s| s.text.as_str()).collect();
        joined.trim().to_string()
    }
}

pub(super) fn engine_err(e: anyhow::Error) -> WorkerError {
    WorkerError::Engine(format!("{e:#}"))
}

impl<B: Backend> Pipeline<B> {
    /// Transcribes one clip. `progress(decoded_secs, total_secs, segments)`
    /// is called after every window with the segments that window finished
    /// (final: the same as in the result).
    ///
    /// With `opts.batch_size` above 1 and audio longer than one window
    /// (30 s), the clip is decoded by the batched long-form pipeline
    /// ([`Pipeline::transcribe_many`] with this one clip, `batch_size`
    /// windows per engine call, [`Pipeline::cancel`] as its cancel flag);
    /// otherwise (0, 1, or a clip that fits one window) by the sequential
    /// seek loop.
    ///
    /// With `opts.vad_filter`, only the speech found by [`crate::vad`] is
    /// decoded (the chunks concatenated, as faster-whisper does), and every
    /// segment and word time is mapped back to the original timeline;
    /// `progress` still counts seconds of the original audio. Audio without
    /// speech then gives no segments, with the requested language (`en` for
    /// English-only models and, as nothing was heard, for detection too,
    /// with probability 0).
    pub fn transcribe(
        &mut self,
        samples: &[f32],
        opts: &DecodeOptions,
        progress: &mut dyn FnMut(f32, f32, &[Segment]),
    ) -> Result<Transcript, WorkerError> {
        validate_audio(samples)?;
        let plan = plan(opts, &self.tokenizer, self.multilingual)?;
        let window_samples = self.extractor.config().n_samples();
        if opts.batch_size > 1 && samples.len() > window_samples {
            let cancel = Arc::clone(&self.cancel);
            let item = BatchItem {
                samples,
                opts,
                cancel: Some(&cancel),
            };
            return self
                .transcribe_many(
                    &[item],
                    opts.batch_size as usize,
                    &mut |_, done, total, segments| progress(done, total, segments),
                )
                .pop()
                .unwrap_or(Err(WorkerError::Cancelled));
        }
        let mut clock = Clock::start();
        if !opts.vad_filter {
            return self.decode_clip(samples, opts, plan, clock, None, progress);
        }
        vad::validate(&opts.vad)?;
        // earshot works at 16 kHz, the rate of every job.
        let sampling_rate = asr_ipc::SAMPLE_RATE;
        let duration = samples.len() as f64 / sampling_rate as f64;
        let chunks = clock.phase("vad", None, None, || {
            vad::speech_timestamps(samples, &opts.vad)
        });
        let speech = vad::collect_chunks(samples, &chunks);
        if speech.is_empty() {
            progress(duration as f32, duration as f32, &[]);
            let (language, language_probability) = match plan.language {
                LanguagePlan::Fixed { code, .. } => (code, 1.0),
                LanguagePlan::Detect => ("en".to_string(), 0.0),
            };
            return Ok(Transcript {
                segments: Vec::new(),
                language,
                language_probability,
                duration_secs: duration as f32,
                timings: clock.finish(),
            });
        }
        let map = vad::SpeechTimestampsMap::new(&chunks, sampling_rate);
        let mut original_progress = |decoded: f32, speech_secs: f32, segments: &[Segment]| {
            // The seek loop reports whole 10 ms frames: within one frame of
            // the end of the speech, the whole clip is done.
            let done = if decoded as f64 + 0.011 >= speech_secs as f64 {
                duration
            } else {
                map.original_time(decoded as f64, None, true).min(duration)
            };
            progress(done as f32, duration as f32, segments);
        };
        let mut t = self.decode_clip(
            &speech,
            opts,
            plan,
            clock,
            Some(&map),
            &mut original_progress,
        )?;
        t.duration_secs = duration as f32;
        Ok(t)
    }
}

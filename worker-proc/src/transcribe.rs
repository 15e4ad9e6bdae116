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
//! Every engine call is timed as a [`Phase`] with wall-clock start and end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use asr_ipc::{DecodeOptions, Phase, Segment, Task, Timings, WorkerError};
use ct2rs::sys::WhisperOptions;

use crate::engine::{Backend, Generation};
use crate::features::FeatureExtractor;
use crate::segments::{
    build_prompt, compression_ratio, decimal, split_by_timestamps, MAX_LENGTH, TIME_PRECISION,
};
use crate::tokenizer::WhisperTokenizer;
use crate::{vad, words};

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

/// Where the language comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LanguagePlan {
    /// A known language (`token` is `None` for English-only models, whose
    /// start sequence has no language token).
    Fixed {
        /// ISO code.
        code: String,
        /// `<|code|>` id, for multilingual models.
        token: Option<u32>,
    },
    /// Detect on the first window.
    Detect,
}

/// A validated job: what the options resolve to for this model.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Language source.
    pub language: LanguagePlan,
    /// `<|transcribe|>` / `<|translate|>` id, for multilingual models.
    pub task_token: Option<u32>,
    /// Tokens of the initial prompt (`" " + prompt.strip()`).
    pub initial_prompt_tokens: Vec<u32>,
}

/// Rejects empty audio and non-finite samples.
pub fn validate_audio(samples: &[f32]) -> Result<(), WorkerError> {
    if samples.is_empty() {
        return Err(WorkerError::InvalidAudio("the job has no samples".into()));
    }
    if let Some(i) = samples.iter().position(|s| !s.is_finite()) {
        return Err(WorkerError::InvalidAudio(format!(
            "sample {i} is not a finite number ({})",
            samples[i]
        )));
    }
    Ok(())
}

fn invalid(msg: impl Into<String>) -> WorkerError {
    WorkerError::InvalidOptions(msg.into())
}

/// Checks the options against the model and resolves language and task.
pub fn plan(
    opts: &DecodeOptions,
    tokenizer: &WhisperTokenizer,
    multilingual: bool,
) -> Result<Plan, WorkerError> {
    if opts.beam_size == 0 || opts.beam_size > MAX_BEAM {
        return Err(invalid(format!(
            "beam_size must be between 1 and {MAX_BEAM}, got {}",
            opts.beam_size
        )));
    }
    if opts.temperatures.is_empty() {
        return Err(invalid("temperatures must not be empty"));
    }
    if let Some(t) = opts
        .temperatures
        .iter()
        .find(|t| !t.is_finite() || **t < 0.0)
    {
        return Err(invalid(format!("temperature {t} is not a number >= 0")));
    }
    if opts.temperatures.iter().any(|t| *t > 0.0) && (opts.best_of == 0 || opts.best_of > MAX_BEAM)
    {
        return Err(invalid(format!(
            "best_of must be between 1 and {MAX_BEAM}, got {}",
            opts.best_of
        )));
    }
    if !opts.patience.is_finite() || opts.patience <= 0.0 {
        return Err(invalid(format!(
            "patience must be > 0, got {}",
            opts.patience
        )));
    }
    if !opts.length_penalty.is_finite() {
        return Err(invalid("length_penalty must be finite"));
    }
    if !opts.repetition_penalty.is_finite() || opts.repetition_penalty <= 0.0 {
        return Err(invalid(format!(
            "repetition_penalty must be > 0, got {}",
            opts.repetition_penalty
        )));
    }
    for (name, v) in [
        (
            "compression_ratio_threshold",
            opts.compression_ratio_threshold,
        ),
        ("log_prob_threshold", opts.log_prob_threshold),
        ("no_speech_threshold", opts.no_speech_threshold),
    ] {
        if let Some(v) = v {
            if !v.is_finite() {
                return Err(invalid(format!("{name} must be finite")));
            }
        }
    }
    if !opts.max_initial_timestamp.is_finite() || opts.max_initial_timestamp < 0.0 {
        return Err(invalid("max_initial_timestamp must be a number >= 0"));
    }
    let requested = opts
        .language
        .as_deref()
        .map(|l| l.trim().to_ascii_lowercase());
    let language = if multilingual {
        match requested {
            None => LanguagePlan::Detect,
            Some(code) => match tokenizer.language_token(&code) {
                Some(token) => LanguagePlan::Fixed {
                    code,
                    token: Some(token),
                },
                None => return Err(invalid(format!("unknown language {code:?}"))),
            },
        }
    } else {
        match requested.as_deref() {
            None | Some("en") => LanguagePlan::Fixed {
                code: "en".into(),
                token: None,
            },
            Some(other) => {
                return Err(invalid(format!(
                    "this model is English-only; language {other:?} is not supported"
                )))
            }
        }
    };
    let task_token = if multilingual {
        let token = match opts.task {
            Task::Transcribe => tokenizer.transcribe,
            Task::Translate => tokenizer.translate,
        };
        Some(token.ok_or_else(|| invalid("the vocabulary has no token for this task"))?)
    } else {
        if opts.task == Task::Translate {
            return Err(invalid("this model is English-only and cannot translate"));
        }
        None
    };
    let initial_prompt_tokens = match &opts.initial_prompt {
        Some(p) => tokenizer
            .encode(&format!(" {}", p.trim()))
            .map_err(|e| invalid(format!("initial_prompt: {e}")))?,
        None => Vec::new(),
    };
    Ok(Plan {
        language,
        task_token,
        initial_prompt_tokens,
    })
}

/// The outcome of [`generate_with_fallback`] for one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowDecode {
    /// The chosen hypothesis.
    pub generation: Generation,
    /// Its mean log-probability per token (eot included).
    pub avg_logprob: f64,
    /// The temperature reported for the window (the last one tried when
    /// every temperature failed, as in faster-whisper).
    pub temperature: f64,
    /// Compression ratio of its text.
    pub compression_ratio: f64,
}

/// Wall-clock phase recorder.
pub struct Clock {
    start_unix_ns: u64,
    start: Instant,
    phases: Vec<Phase>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::start()
    }
}

impl Clock {
    /// Starts the clock now.
    pub fn start() -> Self {
        let start_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            start_unix_ns,
            start: Instant::now(),
            phases: Vec::new(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.start_unix_ns + self.start.elapsed().as_nanos() as u64
    }

    /// Runs `f` and records it as a phase.
    pub fn phase<T>(
        &mut self,
        name: &str,
        window: Option<u32>,
        temperature: Option<f32>,
        f: impl FnOnce() -> T,
    ) -> T {
        let start_unix_ns = self.now_ns();
        let out = f();
        self.phases.push(Phase {
            name: name.to_string(),
            start_unix_ns,
            end_unix_ns: self.now_ns(),
            window,
            temperature,
        });
        out
    }

    /// The recorded phases and the total.
    pub fn finish(self) -> Timings {
        Timings {
            started_unix_ns: self.start_unix_ns,
            total_us: self.start.elapsed().as_micros() as u64,
            phases: self.phases,
            idle_before_us: None,
        }
    }
}

fn engine_err(e: anyhow::Error) -> WorkerError {
    WorkerError::Engine(format!("{e:#}"))
}

impl<B: Backend> Pipeline<B> {
    /// The CTranslate2 options for one attempt at temperature `t`.
    fn whisper_options(&self, opts: &DecodeOptions, t: f32) -> WhisperOptions {
        let max_initial_timestamp_index = (decimal(opts.max_initial_timestamp) / TIME_PRECISION)
            .round_ties_even()
            .min(self.tokenizer.vocab_size() as f64)
            as usize;
        let base = WhisperOptions {
            length_penalty: opts.length_penalty,
            repetition_penalty: opts.repetition_penalty,
            no_repeat_ngram_size: opts.no_repeat_ngram_size as usize,
            max_length: MAX_LENGTH,
            return_scores: true,
            return_no_speech_prob: true,
            suppress_blank: opts.suppress_blank,
            suppress_tokens: self.suppress_tokens.clone(),
            max_initial_timestamp_index,
            ..WhisperOptions::default()
        };
        if t > 0.0 {
            WhisperOptions {
                beam_size: 1,
                num_hypotheses: opts.best_of as usize,
                sampling_topk: 0,
                sampling_temperature: t,
                ..base
            }
        } else {
            WhisperOptions {
                beam_size: opts.beam_size as usize,
                patience: opts.patience,
                ..base
            }
        }
    }

    /// faster-whisper's `generate_with_fallback`.
    pub fn generate_with_fallback(
        &self,
        encoded: &B::Encoded,
        prompt: &[u32],
        opts: &DecodeOptions,
        clock: &mut Clock,
        window: u32,
    ) -> Result<WindowDecode, WorkerError> {
        let prompt_strs: Vec<&str> = prompt
            .iter()
            .map(|&id| {
                self.tokenizer.id_to_token(id).ok_or_else(|| {
                    WorkerError::Engine(format!("token id {id} is not in the vocabulary"))
                })
            })
            .collect::<Result<_, _>>()?;
        let cr_threshold = opts.compression_ratio_threshold.map(decimal);
        let lp_threshold = opts.log_prob_threshold.map(decimal);
        let ns_threshold = opts.no_speech_threshold.map(decimal);
        let mut all: Vec<WindowDecode> = Vec::new();
        let mut below_cr: Vec<usize> = Vec::new();
        let mut last_t = 0.0f64;
        for &t in &opts.temperatures {
            let wopts = self.whisper_options(opts, t);
            let generation = clock
                .phase("generate", Some(window), Some(t), || {
                    self.backend.generate(encoded, &prompt_strs, &wopts)
                })
                .map_err(engine_err)?;
            let seq_len = generation.tokens.len() as f64;
            let cum_logprob = generation.score as f64 * seq_len.powf(opts.length_penalty as f64);
            let avg_logprob = cum_logprob / (seq_len + 1.0);
            let text = self
                .tokenizer
                .decode(&generation.tokens)
                .map_err(engine_err)?;
            let cr = compression_ratio(text.trim());
            let t64 = decimal(t);
            last_t = t64;
            let no_speech_prob = generation.no_speech_prob as f64;
            all.push(WindowDecode {
                generation,
                avg_logprob,
                temperature: t64,
                compression_ratio: cr,
            });
            let mut needs_fallback = false;
            if let Some(th) = cr_threshold {
                if cr > th {
                    needs_fallback = true;
                } else {
                    below_cr.push(all.len() - 1);
                }
            }
            if let Some(th) = lp_threshold {
                if avg_logprob < th {
                    needs_fallback = true;
                }
            }
            if let (Some(ns), Some(lp)) = (ns_threshold, lp_threshold) {
                if no_speech_prob > ns && avg_logprob < lp {
                    needs_fallback = false; // silence
                }
            }
            if !needs_fallback {
                return Ok(all.pop().expect("just pushed"));
            }
        }
        // Every temperature failed: the best mean log-probability among the
        // results under the compression threshold (or among all), first wins.
        let candidates: Vec<usize> = if below_cr.is_empty() {
            (0..all.len()).collect()
        } else {
            below_cr
        };
        let mut best = candidates[0];
        for &i in &candidates[1..] {
            if all[i].avg_logprob > all[best].avg_logprob {
                best = i;
            }
        }
        let mut chosen = all.swap_remove(best);
        chosen.temperature = last_t;
        Ok(chosen)
    }

    /// Transcribes one clip. `progress(decoded_secs, total_secs, segments)`
    /// is called after every window with the segments that window finished
    /// (final: the same as in the result).
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

    /// The seek loop over one clip (the whole audio, or its speech with
    /// `map` restoring the original times of the segments and words).
    fn decode_clip(
        &mut self,
        samples: &[f32],
        opts: &DecodeOptions,
        plan: Plan,
        mut clock: Clock,
        map: Option<&vad::SpeechTimestampsMap>,
        progress: &mut dyn FnMut(f32, f32, &[Segment]),
    ) -> Result<Transcript, WorkerError> {
        let cfg = *self.extractor.config();
        let features = clock.phase("features", None, None, || self.extractor.compute(samples));
        let nb = cfg.nb_max_frames();
        let tpf = cfg.time_per_frame();
        let n_mels = features.n_mels;
        let content_frames = features.content_frames();
        let duration = samples.len() as f64 / cfg.sampling_rate as f64;

        // Language. faster-whisper detects on features[:, :3000] (which for
        // clips under 30 s holds one frame more than the first decode window).
        let mut first_window: Option<B::Encoded> = None;
        let (language, language_probability, language_token) = match plan.language {
            LanguagePlan::Fixed { code, token } => (code, 1.0f32, token),
            LanguagePlan::Detect => {
                let width = nb.min(features.n_frames);
                let mut mel = features.window(0, width, nb);
                let encoded = clock
                    .phase("encode", Some(0), None, || {
                        self.backend.encode(&mut mel, n_mels, nb)
                    })
                    .map_err(engine_err)?;
                let langs = clock
                    .phase("detect_language", Some(0), None, || {
                        self.backend.detect_language(&encoded)
                    })
                    .map_err(engine_err)?;
                let (token_str, prob) = langs.into_iter().next().ok_or_else(|| {
                    WorkerError::Engine("language detection returned nothing".into())
                })?;
                let code = token_str
                    .trim_start_matches("<|")
                    .trim_end_matches("|>")
                    .to_string();
                let token = self.tokenizer.token_to_id(&token_str).ok_or_else(|| {
                    WorkerError::Engine(format!(
                        "detected language {token_str} is not in the vocabulary"
                    ))
                })?;
                if width == nb.min(content_frames) {
                    first_window = Some(encoded);
                }
                (code, prob, Some(token))
            }
        };
        let mut sot_sequence = vec![self.tokenizer.sot];
        sot_sequence.extend(language_token);
        sot_sequence.extend(plan.task_token);

        let mut all_tokens: Vec<u32> = plan.initial_prompt_tokens.clone();
        let mut prompt_reset_since = 0usize;
        let mut segments: Vec<Segment> = Vec::new();
        let mut seek = 0usize;
        let mut window = 0u32;
        let mut last_speech_timestamp = 0.0f64;
        while seek < content_frames {
            if self.cancel.load(Ordering::Acquire) {
                return Err(WorkerError::Cancelled);
            }
            let time_offset = seek as f64 * tpf;
            let segment_size = nb.min(content_frames - seek);
            let segment_duration = segment_size as f64 * tpf;
            let encoded = match first_window.take() {
                Some(e) if seek == 0 => e,
                _ => {
                    let mut mel = features.window(seek, segment_size, nb);
                    clock
                        .phase("encode", Some(window), None, || {
                            self.backend.encode(&mut mel, n_mels, nb)
                        })
                        .map_err(engine_err)?
                }
            };
            let prompt = build_prompt(
                &self.tokenizer,
                &all_tokens[prompt_reset_since..],
                &sot_sequence,
                opts.without_timestamps,
            );
            let decoded =
                self.generate_with_fallback(&encoded, &prompt, opts, &mut clock, window)?;

            if let Some(ns) = opts.no_speech_threshold.map(decimal) {
                let mut should_skip = decoded.generation.no_speech_prob as f64 > ns;
                if let Some(lp) = opts.log_prob_threshold.map(decimal) {
                    if decoded.avg_logprob > lp {
                        should_skip = false;
                    }
                }
                if should_skip {
                    seek += segment_size;
                    window += 1;
                    progress(
                        (seek.min(content_frames) as f64 * tpf) as f32,
                        duration as f32,
                        &[],
                    );
                    continue;
                }
            }

            let previous_seek = seek;
            let (mut current, next_seek, single_timestamp_ending) = split_by_timestamps(
                &decoded.generation.tokens,
                self.tokenizer.timestamp_begin,
                time_offset,
                segment_size,
                segment_duration,
                seek,
            );
            seek = next_seek;

            let mut words_per_segment: Vec<Vec<words::WordTiming>> =
                vec![Vec::new(); current.len()];
            if opts.word_timestamps {
                let aligned = clock
                    .phase("align", Some(window), None, || {
                        words::add_word_timestamps(
                            &self.backend,
                            &self.tokenizer,
                            &encoded,
                            &sot_sequence,
                            &mut current,
                            segment_size,
                            last_speech_timestamp,
                            &language,
                        )
                    })
                    .map_err(engine_err)?;
                words_per_segment = aligned.words;
                // faster-whisper's get_end: the last word's end, else the
                // last segment's end.
                let last_end = words_per_segment
                    .iter()
                    .flatten()
                    .last()
                    .map(|w| w.end)
                    .or_else(|| current.last().map(|s| s.end));
                if let Some(end) = last_end {
                    if !single_timestamp_ending && end > time_offset {
                        seek = (end * cfg.frames_per_second() as f64).round_ties_even() as usize;
                    }
                    last_speech_timestamp = end;
                }
            }

            let window_first_segment = segments.len();
            for (raw, mut seg_words) in current.into_iter().zip(words_per_segment) {
                let text = self.tokenizer.decode(&raw.tokens).map_err(engine_err)?;
                if raw.start == raw.end || text.trim().is_empty() {
                    continue;
                }
                all_tokens.extend_from_slice(&raw.tokens);
                let (start, end) = match map {
                    Some(map) => map.restore_segment(raw.start, raw.end, &mut seg_words),
                    None => (raw.start, raw.end),
                };
                segments.push(Segment {
                    id: segments.len() as u32,
                    seek: previous_seek as u32,
                    start: start as f32,
                    end: end as f32,
                    text,
                    tokens: raw.tokens,
                    temperature: decoded.temperature as f32,
                    avg_logprob: decoded.avg_logprob as f32,
                    compression_ratio: decoded.compression_ratio as f32,
                    no_speech_prob: decoded.generation.no_speech_prob,
                    words: seg_words.iter().map(words::WordTiming::to_word).collect(),
                });
            }

            if !opts.condition_on_previous_text || decoded.temperature > PROMPT_RESET_ON_TEMPERATURE
            {
                prompt_reset_since = all_tokens.len();
            }
            window += 1;
            progress(
                (seek.min(content_frames) as f64 * tpf) as f32,
                duration as f32,
                &segments[window_first_segment..],
            );
        }

        Ok(Transcript {
            segments,
            language,
            language_probability,
            duration_secs: duration as f32,
            timings: clock.finish(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::Alignment;
    use crate::features::FeatureConfig;
    use std::cell::RefCell;
    use std::collections::{HashMap, VecDeque};

    /// Token ids of the toy tokenizer: "a"=0, "b"=1, " c"=2, then specials.
    pub(crate) const SOT: u32 = 4;
    pub(crate) const SOT_PREV: u32 = 9;
    pub(crate) const NO_TS: u32 = 11;
    pub(crate) const TS0: u32 = 12;

    /// A toy tokenizer whose BPE really decodes: 0 → "a", 1 → "b", 2 → " c".
    pub(crate) fn toy_tokenizer() -> WhisperTokenizer {
        use tokenizers::decoders::byte_level::ByteLevel;
        use tokenizers::models::bpe::BPE;
        let mut vocab: Vec<String> = ["a", "b", "Ġc"].iter().map(|s| s.to_string()).collect();
        for s in [
            "<|endoftext|>",
            "<|startoftranscript|>",
            "<|en|>",
            "<|translate|>",
            "<|transcribe|>",
            "<|startoflm|>",
            "<|startofprev|>",
            "<|nocaptions|>",
            "<|notimestamps|>",
        ] {
            vocab.push(s.to_string());
        }
        for i in 0..1501 {
            vocab.push(format!("<|{:.2}|>", i as f64 * 0.02));
        }
        // A bare space, so that " " + initial_prompt encodes.
        vocab.push("Ġ".to_string());
        let map: HashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(
                map.into_iter().collect::<tokenizers::models::bpe::Vocab>(),
                vec![],
            )
            .build()
            .unwrap();
        let mut hf = tokenizers::Tokenizer::new(bpe);
        hf.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        hf.with_decoder(Some(ByteLevel::default()));
        WhisperTokenizer::new(vocab, hf).unwrap()
    }

    /// A backend that replays scripted generations and records prompts.
    pub(crate) struct Script {
        pub generations: RefCell<VecDeque<Generation>>,
        pub prompts: RefCell<Vec<Vec<String>>>,
        pub temps: RefCell<Vec<f32>>,
        pub encodes: RefCell<usize>,
    }

    impl Script {
        pub(crate) fn new(gens: Vec<Generation>) -> Self {
            Self {
                generations: RefCell::new(gens.into()),
                prompts: RefCell::new(vec![]),
                temps: RefCell::new(vec![]),
                encodes: RefCell::new(0),
            }
        }
    }

    impl Backend for Script {
        type Encoded = ();
        fn encode(&self, mel: &mut [f32], n_mels: usize, n_frames: usize) -> Result<()> {
            assert_eq!(mel.len(), n_mels * n_frames);
            *self.encodes.borrow_mut() += 1;
            Ok(())
        }
        fn generate(&self, _: &(), prompt: &[&str], o: &WhisperOptions) -> Result<Generation> {
            self.prompts
                .borrow_mut()
                .push(prompt.iter().map(|s| s.to_string()).collect());
            self.temps.borrow_mut().push(if o.sampling_topk == 0 {
                o.sampling_temperature
            } else {
                0.0
            });
            self.generations
                .borrow_mut()
                .pop_front()
                .ok_or_else(|| anyhow::anyhow!("script exhausted"))
        }
        fn detect_language(&self, _: &()) -> Result<Vec<(String, f32)>> {
            Ok(vec![("<|en|>".into(), 0.9)])
        }
        fn align(&self, _: &(), _: &[usize], _: &[usize], _: usize, _: i64) -> Result<Alignment> {
            Ok(Alignment::default())
        }
    }

    pub(crate) fn pipeline(gens: Vec<Generation>) -> Pipeline<Script> {
        Pipeline {
            backend: Script::new(gens),
            tokenizer: toy_tokenizer(),
            extractor: FeatureExtractor::new(FeatureConfig::default()),
            multilingual: false,
            suppress_tokens: vec![],
            cancel: Arc::default(),
        }
    }

    fn gen(tokens: Vec<u32>, score: f32, no_speech: f32) -> Generation {
        Generation {
            tokens,
            score,
            no_speech_prob: no_speech,
        }
    }

    /// The timestamp token of `seconds`.
    pub(crate) fn ts(seconds: f64) -> u32 {
        TS0 + (seconds / 0.02).round() as u32
    }

    #[test]
    fn seek_loop_advances_by_timestamps_and_conditions_on_previous_text() {
        // 45 s of audio: window 0 ends with an unfinished segment at 20 s,
        // window 1 starts at 20 s and covers the rest.
        let samples = vec![0.01f32; 16_000 * 45];
        let gens = vec![
            gen(
                vec![ts(0.0), 0, ts(10.0), ts(10.0), 1, ts(20.0), ts(20.0), 2],
                -0.1,
                0.0,
            ),
            gen(vec![ts(0.0), 2, ts(5.0)], -0.2, 0.0),
        ];
        let mut p = pipeline(gens);
        let mut progress = vec![];
        let mut streamed: Vec<Vec<Segment>> = vec![];
        let t = p
            .transcribe(
                &samples,
                &DecodeOptions::default(),
                &mut |d, total, segs| {
                    progress.push((d, total));
                    streamed.push(segs.to_vec());
                },
            )
            .unwrap();
        // Each window's progress carries the segments it finished: 2, then 1.
        assert_eq!(
            streamed.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert_eq!(streamed.concat(), t.segments);
        let texts: Vec<&str> = t.segments.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, vec!["a", "b", " c"]);
        let times: Vec<(f32, f32)> = t.segments.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(times, vec![(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]);
        assert_eq!(t.segments[2].seek, 2000);
        assert_eq!(t.text(), "ab c");
        // The second prompt carries the first window's segments.
        let prompts = p.backend.prompts.borrow();
        assert_eq!(prompts[0], vec!["<|startoftranscript|>"]);
        assert_eq!(prompts[1][0], "<|startofprev|>");
        assert_eq!(prompts[1].last().unwrap(), "<|startoftranscript|>");
        assert_eq!(prompts[1].len(), 1 + 6 + 1);
        assert_eq!(progress.len(), 2);
        assert!((progress[0].0 - 20.0).abs() < 1e-4 && (progress[1].0 - 45.0).abs() < 1e-4);
        let phases: Vec<&str> = t.timings.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            phases,
            vec!["features", "encode", "generate", "encode", "generate"]
        );
    }

    #[test]
    fn low_logprob_falls_back_to_higher_temperatures() {
        let samples = vec![0.01f32; 16_000 * 3];
        let gens = vec![
            gen(vec![ts(0.0), 0, ts(1.0)], -3.0, 0.1),
            gen(vec![ts(0.0), 1, ts(1.0)], -2.0, 0.1),
            gen(vec![ts(0.0), 2, ts(1.0)], -0.5, 0.1),
        ];
        let mut p = pipeline(gens);
        let t = p
            .transcribe(&samples, &DecodeOptions::default(), &mut |_, _, _| {})
            .unwrap();
        assert_eq!(*p.backend.temps.borrow(), vec![0.0, 0.2, 0.4]);
        assert_eq!(t.segments.len(), 1);
        assert_eq!(t.segments[0].text, " c");
        assert!((t.segments[0].temperature - 0.4).abs() < 1e-6);
    }

    #[test]
    fn when_every_temperature_fails_the_best_logprob_wins() {
        let samples = vec![0.01f32; 16_000 * 3];
        let opts = DecodeOptions {
            temperatures: vec![0.0, 0.6],
            ..DecodeOptions::default()
        };
        let gens = vec![
            gen(vec![ts(0.0), 0, ts(1.0)], -1.5, 0.1),
            gen(vec![ts(0.0), 1, ts(1.0)], -4.0, 0.1),
        ];
        let mut p = pipeline(gens);
        let t = p.transcribe(&samples, &opts, &mut |_, _, _| {}).unwrap();
        assert_eq!(t.segments[0].text, "a");
        // The temperature reported is the last one tried.
        assert!((t.segments[0].temperature - 0.6).abs() < 1e-6);
    }

    #[test]
    fn silent_windows_are_skipped() {
        let samples = vec![0.0f32; 16_000 * 5];
        // High no-speech probability and low log-probability: skip.
        let gens = vec![gen(vec![ts(0.0), 0, ts(1.0)], -3.0, 0.9)];
        let mut p = pipeline(gens);
        let t = p
            .transcribe(&samples, &DecodeOptions::default(), &mut |_, _, _| {})
            .unwrap();
        assert!(t.segments.is_empty());
        // No fallback was tried for silence.
        assert_eq!(p.backend.temps.borrow().len(), 1);
    }

    #[test]
    fn initial_prompt_and_prompt_reset() {
        let samples = vec![0.01f32; 16_000 * 40];
        let opts = DecodeOptions {
            condition_on_previous_text: false,
            initial_prompt: Some("  a  ".into()),
            ..DecodeOptions::default()
        };
        let gens = vec![
            gen(vec![ts(0.0), 0, ts(30.0)], -0.1, 0.0),
            gen(vec![ts(0.0), 1, ts(5.0)], -0.1, 0.0),
        ];
        let mut p = pipeline(gens);
        let t = p.transcribe(&samples, &opts, &mut |_, _, _| {}).unwrap();
        assert_eq!(t.segments.len(), 2);
        let prompts = p.backend.prompts.borrow();
        // The first window is primed with the initial prompt...
        assert_eq!(prompts[0][0], "<|startofprev|>");
        // ...and without conditioning the second is not.
        assert_eq!(prompts[1], vec!["<|startoftranscript|>"]);
    }

    #[test]
    fn invalid_options_are_refused() {
        let tok = toy_tokenizer();
        let bad = |o: DecodeOptions, multi: bool| plan(&o, &tok, multi).unwrap_err();
        let d = DecodeOptions::default;
        assert!(matches!(
            bad(
                DecodeOptions {
                    beam_size: 0,
                    ..d()
                },
                false
            ),
            WorkerError::InvalidOptions(_)
        ));
        assert!(matches!(
            bad(
                DecodeOptions {
                    language: Some("de".into()),
                    ..d()
                },
                false
            ),
            WorkerError::InvalidOptions(_)
        ));
        assert!(matches!(
            bad(
                DecodeOptions {
                    task: Task::Translate,
                    ..d()
                },
                false
            ),
            WorkerError::InvalidOptions(_)
        ));
        assert!(matches!(
            bad(
                DecodeOptions {
                    language: Some("xx".into()),
                    ..d()
                },
                true
            ),
            WorkerError::InvalidOptions(_)
        ));
        assert!(matches!(
            bad(
                DecodeOptions {
                    temperatures: vec![],
                    ..d()
                },
                false
            ),
            WorkerError::InvalidOptions(_)
        ));
        assert!(matches!(
            bad(
                DecodeOptions {
                    temperatures: vec![f32::NAN],
                    ..d()
                },
                false
            ),
            WorkerError::InvalidOptions(_)
        ));
        let ok = plan(
            &DecodeOptions {
                language: Some("EN".into()),
                ..d()
            },
            &tok,
            false,
        )
        .unwrap();
        assert_eq!(
            ok.language,
            LanguagePlan::Fixed {
                code: "en".into(),
                token: None
            }
        );
        let ok = plan(&d(), &tok, true).unwrap();
        assert_eq!(ok.language, LanguagePlan::Detect);
        assert_eq!(ok.task_token, Some(7));
        assert!(matches!(
            validate_audio(&[]),
            Err(WorkerError::InvalidAudio(_))
        ));
        assert!(matches!(
            validate_audio(&[0.0, f32::INFINITY]),
            Err(WorkerError::InvalidAudio(_))
        ));
    }

    /// `hello.wav` (4.2 s of espeak-ng speech) between stretches of silence.
    fn speech_between_silences() -> Vec<f32> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/speech/hello.wav");
        let hello = crate::transcribe_cmd::read_wav(&path).unwrap();
        let mut samples = vec![0.0f32; 16_000 * 3];
        samples.extend_from_slice(&hello);
        samples.extend(std::iter::repeat_n(0.0, 16_000 * 6));
        samples.extend_from_slice(&hello);
        samples.extend(std::iter::repeat_n(0.0, 16_000 * 2));
        samples
    }

    #[test]
    fn vad_decodes_only_speech_and_restores_the_original_times() {
        let samples = speech_between_silences();
        let opts = DecodeOptions {
            vad_filter: true,
            ..DecodeOptions::default()
        };
        let chunks = vad::speech_timestamps(&samples, &opts.vad);
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        let first_len = (chunks[0].end - chunks[0].start) as f64 / 16_000.0;
        // One window over the concatenated speech: a segment in each chunk.
        let in_second = (first_len + 1.0) / 0.02;
        let gens = vec![gen(
            vec![
                ts(0.0),
                0,
                ts(2.0),
                ts(2.0),
                1,
                ts(first_len.floor()),
                ts(in_second.round() * 0.02),
                2,
                ts(in_second.round() * 0.02 + 1.0),
            ],
            -0.1,
            0.0,
        )];
        let mut p = pipeline(gens);
        let mut progress = vec![];
        let mut streamed: Vec<Segment> = vec![];
        let t = p
            .transcribe(&samples, &opts, &mut |d, total, segs| {
                progress.push((d, total));
                streamed.extend_from_slice(segs);
            })
            .unwrap();
        // Streamed segments already have their original times.
        assert_eq!(streamed, t.segments);
        // One window only: the speech is under 30 s although the clip is not.
        assert_eq!(*p.backend.encodes.borrow(), 1);
        let offset0 = chunks[0].start as f64 / 16_000.0;
        let offset1 = offset0 + (chunks[1].start - chunks[0].end) as f64 / 16_000.0;
        let near = |a: f32, b: f64| (a as f64 - b).abs() < 0.011;
        assert_eq!(t.segments.len(), 3);
        assert!(near(t.segments[0].start, offset0), "{:?}", t.segments[0]);
        assert!(near(t.segments[0].end, offset0 + 2.0));
        assert!(near(t.segments[1].end, offset0 + first_len.floor()));
        let s2 = in_second.round() * 0.02;
        assert!(
            near(t.segments[2].start, offset1 + s2),
            "{:?}",
            t.segments[2]
        );
        assert!(near(t.segments[2].end, offset1 + s2 + 1.0));
        assert!((t.duration_secs as f64 - samples.len() as f64 / 16_000.0).abs() < 1e-3);
        // Progress counts the original audio and ends at its duration.
        let (last, total) = *progress.last().unwrap();
        assert_eq!(last, total);
        assert!((total - t.duration_secs).abs() < 1e-3);
        let phases: Vec<&str> = t.timings.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(phases, vec!["vad", "features", "encode", "generate"]);
    }

    #[test]
    fn vad_on_silence_gives_an_empty_transcript_without_decoding() {
        let samples = vec![0.0f32; 16_000 * 40];
        let opts = DecodeOptions {
            vad_filter: true,
            ..DecodeOptions::default()
        };
        let mut p = pipeline(vec![]);
        let mut progress = vec![];
        let t = p
            .transcribe(&samples, &opts, &mut |d, total, _| {
                progress.push((d, total))
            })
            .unwrap();
        assert!(t.segments.is_empty());
        assert_eq!(t.text(), "");
        assert_eq!(t.language, "en");
        assert_eq!(*p.backend.encodes.borrow(), 0);
        assert_eq!(progress, vec![(40.0, 40.0)]);
        // Invalid VAD options are refused like any other option.
        let bad = DecodeOptions {
            vad_filter: true,
            vad: asr_ipc::VadOptions {
                threshold: 2.0,
                ..Default::default()
            },
            ..DecodeOptions::default()
        };
        assert!(matches!(
            p.transcribe(&samples, &bad, &mut |_, _, _| {}),
            Err(WorkerError::InvalidOptions(_))
        ));
    }

    #[test]
    fn multilingual_models_detect_and_prompt_with_language_and_task() {
        let samples = vec![0.01f32; 16_000 * 2];
        let mut p = pipeline(vec![gen(vec![ts(0.0), 0, ts(1.0)], -0.1, 0.0)]);
        p.multilingual = true;
        let t = p
            .transcribe(&samples, &DecodeOptions::default(), &mut |_, _, _| {})
            .unwrap();
        assert_eq!(t.language, "en");
        assert!((t.language_probability - 0.9).abs() < 1e-6);
        let prompts = p.backend.prompts.borrow();
        assert_eq!(
            prompts[0],
            vec!["<|startoftranscript|>", "<|en|>", "<|transcribe|>"]
        );
        // Clip under 30 s: the detection window differs by one frame from
        // the decode window, so both are encoded (as faster-whisper does).
        assert_eq!(*p.backend.encodes.borrow(), 2);
    }
}

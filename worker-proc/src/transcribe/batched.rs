//! Batched long-form decoding: [`Pipeline::transcribe_many`], after
//! faster-whisper's `BatchedInferencePipeline`.
//!
//! Each clip (a [`BatchItem`]) is cut into windows of at most 30 s
//! ([`super::windows`]: its speech chunks merged, with `vad_filter`, the
//! VAD's longest chunk capped at 30 s; else consecutive 30 s windows), and
//! the windows of every clip are decoded together, up to `batch_size` per
//! engine call:
//! 1. each window's log-mel features are computed on its own audio and
//!    zero-padded to 3000 frames; the windows of one call are stacked and
//!    encoded at once;
//! 2. one batched `generate`, one prompt per window: the start-of-transcript
//!    sequence (language, task, `<|notimestamps|>` if asked), after
//!    `<|startofprev|>` + hotwords + initial prompt when given (in every
//!    window). There is no conditioning on the previous window's text:
//!    that is what lets windows be decoded at once, and the accuracy
//!    trade-off against the sequential seek loop (BENCHMARKS.md);
//! 3. each window is judged as in `generate_with_fallback`
//!    ([`super::fallback::Attempts`]); the windows that need the next
//!    temperature are decoded again, batched among themselves, on their
//!    rows of the call's encoder output ([`Backend::select`]: not encoded
//!    again). The windows of a long clip (over one window) fall back only
//!    when they ran away ([`super::fallback::runaway`]); a clip of one
//!    window (a job of a dynamic batch) keeps the whole fallback. A long
//!    clip with `text_only` and `vad_filter` is decoded without timestamp
//!    tokens, its chunks cut at [`UNTIMED_MIN_SILENCE_MS`] pauses;
//! 4. a window judged silent (no-speech rule) gives no segment; the others
//!    are split at timestamp tokens. As in the seek loop, a window whose
//!    tokens stop at a timestamp pair (the model's "more follows") well
//!    before its end, or end with text cut by the window's end, is
//!    continued: the rest of the window, from that timestamp, becomes a new
//!    window decoded in a later call ([`CONTINUE_MIN_SECS`] or more; a
//!    shorter rest's text becomes a segment ending at the window's end).
//!    With word timestamps (or token log-probabilities), one batched
//!    `align` per call;
//! 5. windows become segments in order, per clip: times are the window's
//!    offset plus the timestamps, mapped back to the original timeline with
//!    the VAD map; `progress` is called after every window with its
//!    segments.
//!
//! The language is the given one, `en` for English-only models, or
//! detected (batched over the clips that need it) on their first windows
//! under the `language_detection_segments` / `_threshold` rules.
//!
//! Windows share an engine call only when CTranslate2 allows it and the
//! decode is the same: equal decoding options at the same temperature, the
//! `<|startoftranscript|>` token at the same place of the prompt, the same
//! number of task tokens after it, and (when aligning) the same start
//! sequence. Clips whose windows cannot share are decoded in separate
//! calls.
//!
//! A clip whose audio or options are invalid gets its own error; a clip
//! whose `cancel` flag is set is dropped before the next engine call
//! ([`WorkerError::Cancelled`]); an engine error fails the clips of that
//! call only.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use asr_ipc::{DecodeOptions, Segment, WorkerError};

use super::fallback::Attempts;
use super::windows::{fixed_windows, merge_chunks, Window};
use super::WindowDecode;
use super::{engine_err, plan, validate_audio, Clock, LanguagePlan, Pipeline, Plan, Transcript};
use crate::engine::Backend;
use crate::segments::{build_prompt, decimal, RawSegment};
use crate::vad;
use crate::words::{self, WordTiming};

/// `progress(item_index, decoded_secs, total_secs, finished_segments)` of
/// [`Pipeline::transcribe_many`].
pub type ItemProgress<'a> = dyn FnMut(usize, f32, f32, &[Segment]) + 'a;

/// One clip of a [`Pipeline::transcribe_many`] call.
pub struct BatchItem<'a> {
    /// 16 kHz mono samples.
    pub samples: &'a [f32],
    /// Its options. The items of one call should have compatible options
    /// (same beam, temperatures, …); language and initial prompt may
    /// differ. Items whose windows cannot share an engine call are decoded
    /// in separate calls.
    pub opts: &'a DecodeOptions,
    /// Set => the item is dropped from later engine calls and its result
    /// is `Err(WorkerError::Cancelled)`.
    pub cancel: Option<&'a AtomicBool>,
}

/// Longest speech chunk asked of the VAD in batched mode: one window.
const WINDOW_SECS: f32 = 30.0;

/// Silence that ends a speech chunk when long-form windows are decoded
/// without timestamps, ms (faster-whisper's `BatchedInferencePipeline`
/// default): without timestamp tokens a window that stops early cannot be
/// continued, so windows are made of chunks cut at short pauses and never
/// end inside a word. (With timestamps, the request's VAD settings apply
/// and a cut window is continued.)
pub const UNTIMED_MIN_SILENCE_MS: u32 = 160;

/// Shortest rest of a window decoded again as a continuation, seconds.
pub const CONTINUE_MIN_SECS: f64 = 1.0;

/// A clip being decoded.
pub(super) struct Item<'a> {
    /// Its options; `without_timestamps` set for a long clip with
    /// `text_only` and `vad_filter`.
    pub(super) opts: Cow<'a, DecodeOptions>,
    /// Longer than one window: the long-form rules apply (fallback only
    /// for runaway windows, `text_only`).
    pub(super) long_form: bool,
    cancel: Option<&'a AtomicBool>,
    /// The decoded audio: the clip, or its speech concatenated.
    pub(super) audio: Cow<'a, [f32]>,
    map: Option<vad::SpeechTimestampsMap>,
    /// Seconds of the original clip.
    duration: f64,
    pub(super) windows: Vec<Window>,
    pub(super) plan: Plan,
    pub(super) language: String,
    pub(super) language_probability: f32,
    pub(super) sot_sequence: Vec<u32>,
    pub(super) prompt: Vec<u32>,
    /// Decoded windows not yet turned into segments.
    pub(super) done: Vec<Option<Finished>>,
    /// The order of the windows in the transcript (a continuation comes
    /// right after the window it continues).
    pub(super) order: Vec<usize>,
    /// Windows of `order` already turned into segments.
    emitted: usize,
    segments: Vec<Segment>,
    last_speech_timestamp: f64,
    pub(super) clock: Clock,
}

impl Item<'_> {
    pub(super) fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Acquire))
    }

    /// Whether its windows need the alignment pass.
    pub(super) fn aligns(&self) -> bool {
        self.opts.word_timestamps || self.opts.token_logprobs
    }
}

/// A decoded window.
pub(super) struct Finished {
    /// `None`: skipped as silence.
    pub(super) decode: Option<WindowDecode>,
    /// Its segments, times in the decoded audio.
    pub(super) raw: Vec<RawSegment>,
    /// Its words from the alignment, before they are placed.
    pub(super) aligned: Option<Vec<WordTiming>>,
}

/// A window still to decode, at temperature index `attempt`.
pub(super) struct Task<E> {
    pub(super) item: usize,
    pub(super) window: usize,
    pub(super) attempt: usize,
    pub(super) attempts: Attempts,
    /// Where its encoder output already is, after a failed attempt: the
    /// batch encoding of that attempt's call, the window's index in it and
    /// its content frames.
    pub(super) encoded: Option<(Rc<Encoding<E>>, usize, usize)>,
}

/// The encoder output of one engine call.
pub(super) struct Encoding<E> {
    pub(super) value: E,
    /// Windows in it.
    pub(super) batch: usize,
}

enum Prepared<'a> {
    Decode(Box<Item<'a>>),
    /// No speech: the transcript is empty.
    Silent(Transcript),
}

impl<B: Backend> Pipeline<B> {
    /// Decodes several clips together: every item is cut into windows
    /// (batched long-form rules, see the module docs), and the windows of
    /// all items are pooled into engine calls of at most `batch_size`
    /// windows (clamped to 1..=64). One result per item, in order.
    /// `progress(item_index, decoded_secs, total_secs, finished_segments)`
    /// is called after each window of an item, in order, with the segments
    /// it finished (final: the same as in the result).
    pub fn transcribe_many(
        &mut self,
        items: &[BatchItem<'_>],
        batch_size: usize,
        progress: &mut ItemProgress<'_>,
    ) -> Vec<Result<Transcript, WorkerError>> {
        let batch_size = batch_size.clamp(1, asr_ipc::MAX_BATCH_SIZE as usize);
        let mut results: Vec<Option<Result<Transcript, WorkerError>>> =
            items.iter().map(|_| None).collect();
        let mut states: Vec<Option<Box<Item<'_>>>> = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            match self.prepare(it) {
                Ok(Prepared::Decode(item)) => states.push(Some(item)),
                Ok(Prepared::Silent(t)) => {
                    progress(i, t.duration_secs, t.duration_secs, &[]);
                    results[i] = Some(Ok(t));
                    states.push(None);
                }
                Err(e) => {
                    results[i] = Some(Err(e));
                    states.push(None);
                }
            }
        }
        self.detect_languages(&mut states, &mut results, batch_size);

        let mut tasks: VecDeque<Task<B::Encoded>> = VecDeque::new();
        for (i, state) in states.iter().enumerate() {
            if let Some(item) = state {
                tasks.extend((0..item.windows.len()).map(|window| Task {
                    item: i,
                    window,
                    attempt: 0,
                    attempts: Attempts::default(),
                    encoded: None,
                }));
            }
        }
        loop {
            drop_cancelled(&mut states, &mut results);
            let round = self.next_round(&mut tasks, &states, batch_size);
            if round.is_empty() {
                break;
            }
            let mut members: Vec<usize> = round.iter().map(|t| t.item).collect();
            members.sort_unstable();
            members.dedup();
            match self.decode_round(&mut states, round) {
                Ok(retry) => tasks.extend(retry),
                Err(e) => {
                    for &i in &members {
                        states[i] = None;
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
            for &i in &members {
                let Some(item) = states[i].as_mut() else {
                    continue;
                };
                match self.emit(i, item, progress) {
                    Ok(false) => {}
                    Ok(true) => {
                        if let Some(item) = states[i].take() {
                            results[i] = Some(Ok(item.finish()));
                        }
                    }
                    Err(e) => {
                        states[i] = None;
                        results[i] = Some(Err(e));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(WorkerError::Cancelled)))
            .collect()
    }

    /// Checks one clip and cuts it into windows.
    fn prepare<'a>(&mut self, it: &BatchItem<'a>) -> Result<Prepared<'a>, WorkerError> {
        validate_audio(it.samples)?;
        let plan = plan(it.opts, &self.tokenizer, self.multilingual)?;
        let mut clock = Clock::start();
        let cfg = *self.extractor.config();
        let sr = cfg.sampling_rate;
        let max = cfg.n_samples();
        let duration = it.samples.len() as f64 / sr as f64;
        let long_form = it.samples.len() > max;
        let opts = if long_form
            && it.opts.text_only
            && it.opts.vad_filter
            && !it.opts.without_timestamps
        {
            Cow::Owned(DecodeOptions {
                without_timestamps: true,
                ..it.opts.clone()
            })
        } else {
            Cow::Borrowed(it.opts)
        };
        let (audio, map, windows) = if it.opts.vad_filter {
            vad::validate(&it.opts.vad)?;
            let vad_opts = window_vad_options(&opts, long_form);
            let chunks: Vec<vad::SpeechChunk> = clock
                .phase("vad", None, None, || {
                    vad::speech_timestamps(it.samples, &vad_opts)
                })
                .into_iter()
                .map(|c| vad::SpeechChunk {
                    start: c.start.min(it.samples.len()),
                    end: c.end.min(it.samples.len()),
                })
                .filter(|c| c.end > c.start)
                .collect();
            if chunks.is_empty() {
                let (language, language_probability) = match plan.language {
                    LanguagePlan::Fixed { code, .. } => (code, 1.0),
                    LanguagePlan::Detect => ("en".to_string(), 0.0),
                };
                return Ok(Prepared::Silent(Transcript {
                    segments: Vec::new(),
                    language,
                    language_probability,
                    duration_secs: duration as f32,
                    timings: clock.finish(),
                }));
            }
            let speech = vad::collect_chunks(it.samples, &chunks);
            let windows = merge_chunks(&chunks, max);
            let map = vad::SpeechTimestampsMap::new(&chunks, sr as u32);
            (Cow::Owned(speech), Some(map), windows)
        } else {
            (
                Cow::Borrowed(it.samples),
                None,
                fixed_windows(it.samples.len(), max),
            )
        };
        let (language, language_probability, language_token) = match &plan.language {
            LanguagePlan::Fixed { code, token } => (code.clone(), 1.0, *token),
            LanguagePlan::Detect => (String::new(), 0.0, None),
        };
        let mut item = Box::new(Item {
            opts,
            long_form,
            cancel: it.cancel,
            audio,
            map,
            duration,
            done: windows.iter().map(|_| None).collect(),
            order: (0..windows.len()).collect(),
            windows,
            plan,
            language,
            language_probability,
            sot_sequence: Vec::new(),
            prompt: Vec::new(),
            emitted: 0,
            segments: Vec::new(),
            last_speech_timestamp: 0.0,
            clock,
        });
        if item.plan.language != LanguagePlan::Detect {
            self.set_language(&mut item, language_token);
        }
        Ok(Prepared::Decode(item))
    }

    /// Builds the start sequence and prompt of a clip whose language is
    /// known.
    pub(super) fn set_language(&self, item: &mut Item<'_>, language_token: Option<u32>) {
        let mut sot_sequence = vec![self.tokenizer.sot];
        sot_sequence.extend(language_token);
        sot_sequence.extend(item.plan.task_token);
        item.prompt = build_prompt(
            &self.tokenizer,
            &item.plan.initial_prompt_tokens,
            &item.plan.hotword_tokens,
            &sot_sequence,
            item.opts.without_timestamps,
        );
        item.sot_sequence = sot_sequence;
    }

    /// What windows must agree on to share an engine call.
    fn round_key(&self, item: &Item<'_>, attempt: usize) -> String {
        let t = item.opts.temperatures[attempt];
        let wopts = self.whisper_options(&item.opts, t);
        let tail = item.sot_sequence.len() + usize::from(item.opts.without_timestamps);
        let sot_index = item.prompt.len().saturating_sub(tail);
        let align = item.aligns().then_some(&item.sot_sequence);
        format!(
            "{wopts:?}|{t}|{sot_index}|{}|{}|{align:?}",
            item.sot_sequence.len(),
            item.opts.without_timestamps
        )
    }

    /// Takes the next engine call's windows off the queue: the first
    /// task's, and up to `batch_size` in all that can share its call (and,
    /// after a failed attempt, come from the same batch encoding).
    fn next_round(
        &self,
        tasks: &mut VecDeque<Task<B::Encoded>>,
        states: &[Option<Box<Item<'_>>>],
        batch_size: usize,
    ) -> Vec<Task<B::Encoded>> {
        tasks.retain(|t| states[t.item].is_some());
        let mut round = Vec::new();
        let source = |t: &Task<B::Encoded>| t.encoded.as_ref().map(|(e, _, _)| Rc::as_ptr(e));
        let Some(first) = tasks.front() else {
            return round;
        };
        let key = match &states[first.item] {
            Some(item) => (self.round_key(item, first.attempt), source(first)),
            None => return round,
        };
        let mut rest = VecDeque::with_capacity(tasks.len());
        while let Some(t) = tasks.pop_front() {
            let fits = round.len() < batch_size
                && source(&t) == key.1
                && states[t.item]
                    .as_ref()
                    .is_some_and(|item| self.round_key(item, t.attempt) == key.0);
            if fits {
                round.push(t);
            } else {
                rest.push_back(t);
            }
        }
        *tasks = rest;
        round
    }

    /// Turns the decoded windows at the head of a clip into segments and
    /// reports them; `true` once every window is done.
    fn emit(
        &self,
        index: usize,
        item: &mut Item<'_>,
        progress: &mut ItemProgress<'_>,
    ) -> Result<bool, WorkerError> {
        let sr = self.extractor.config().sampling_rate as f64;
        while item.emitted < item.order.len() {
            let w = item.order[item.emitted];
            let Some(finished) = item.done[w].take() else {
                break;
            };
            let first = item.segments.len();
            self.window_segments(item, w, finished)?;
            item.emitted += 1;
            let done = match item.order.get(item.emitted) {
                None => item.duration,
                Some(&next) => {
                    // Up to the next window's start (a continuation starts
                    // inside the window it continues).
                    let end = item.windows[w].end.min(item.windows[next].start) as f64 / sr;
                    match &item.map {
                        Some(map) => map.original_time(end, None, true),
                        None => end,
                    }
                    .min(item.duration)
                }
            };
            progress(
                index,
                done as f32,
                item.duration as f32,
                &item.segments[first..],
            );
        }
        Ok(item.emitted == item.order.len())
    }

    /// The segments of window `w`, appended to the clip's.
    fn window_segments(
        &self,
        item: &mut Item<'_>,
        w: usize,
        finished: Finished,
    ) -> Result<(), WorkerError> {
        let Some(decode) = finished.decode else {
            return Ok(());
        };
        let sr = self.extractor.config().sampling_rate as f64;
        let time_offset = item.windows[w].start as f64 / sr;
        let mut raw = finished.raw;
        let mut words_per_segment: Vec<Vec<WordTiming>> = vec![Vec::new(); raw.len()];
        if let Some(aligned) = finished.aligned {
            if item.opts.word_timestamps {
                let placed = words::place_words(
                    &self.tokenizer,
                    &mut raw,
                    aligned,
                    item.last_speech_timestamp,
                    time_offset,
                );
                words_per_segment = placed.words;
                let last_end = words_per_segment
                    .iter()
                    .flatten()
                    .last()
                    .map(|w| w.end)
                    .or_else(|| raw.last().map(|s| s.end));
                if let Some(end) = last_end {
                    item.last_speech_timestamp = end;
                }
            } else {
                // Token log-probabilities only: segments and times stay
                // those of a decode without them.
                let mut copy = raw.clone();
                words_per_segment = words::place_words(
                    &self.tokenizer,
                    &mut copy,
                    aligned,
                    item.last_speech_timestamp,
                    time_offset,
                )
                .words;
            }
        }
        for (r, mut seg_words) in raw.into_iter().zip(words_per_segment) {
            let text = self.tokenizer.decode(&r.tokens).map_err(engine_err)?;
            if r.start == r.end || text.trim().is_empty() {
                continue;
            }
            // A window starts exactly at a chunk's start, where most first
            // segments start too: nudged by 1 µs (gone in the 10 ms
            // rounding), the start cannot fall, by float error, into the
            // previous chunk and take its silence.
            let (start, end) = match &item.map {
                Some(map) => map.restore_segment(r.start + 1e-6, r.end, &mut seg_words),
                None => (r.start, r.end),
            };
            let words = seg_words
                .iter()
                .map(|w| {
                    if item.opts.token_logprobs {
                        w.to_word_with_logprobs(&self.tokenizer)
                    } else {
                        w.to_word()
                    }
                })
                .collect();
            item.segments.push(Segment {
                id: item.segments.len() as u32,
                seek: r.seek as u32,
                start: start as f32,
                end: end as f32,
                text,
                tokens: r.tokens,
                temperature: decode.temperature as f32,
                avg_logprob: decode.avg_logprob as f32,
                compression_ratio: decode.compression_ratio as f32,
                no_speech_prob: decode.generation.no_speech_prob,
                words,
            });
        }
        Ok(())
    }
}

impl Item<'_> {
    fn finish(self: Box<Self>) -> Transcript {
        let item = *self;
        Transcript {
            segments: item.segments,
            language: item.language,
            language_probability: item.language_probability,
            duration_secs: item.duration as f32,
            timings: item.clock.finish(),
        }
    }
}

/// Ends the clips whose cancel flag is set.
fn drop_cancelled(
    states: &mut [Option<Box<Item<'_>>>],
    results: &mut [Option<Result<Transcript, WorkerError>>],
) {
    for (state, result) in states.iter_mut().zip(results.iter_mut()) {
        if state.as_ref().is_some_and(|item| item.cancelled()) {
            *state = None;
            *result = Some(Err(WorkerError::Cancelled));
        }
    }
}

/// The VAD settings that cut a clip into windows: the request's, with
/// speech chunks capped at one window, and for long-form decoding without
/// timestamps ended by pauses of [`UNTIMED_MIN_SILENCE_MS`] (no
/// continuation: a window must not end inside a word).
pub(super) fn window_vad_options(opts: &DecodeOptions, long_form: bool) -> asr_ipc::VadOptions {
    let mut vad_opts = opts.vad.clone();
    vad_opts.max_speech_duration_s = Some(match vad_opts.max_speech_duration_s {
        Some(s) if s < WINDOW_SECS => s,
        _ => WINDOW_SECS,
    });
    if long_form && opts.without_timestamps {
        vad_opts.min_silence_duration_ms =
            vad_opts.min_silence_duration_ms.min(UNTIMED_MIN_SILENCE_MS);
    }
    vad_opts
}

/// Whether a decoded window is skipped as silence (the seek loop's rule).
pub(super) fn is_silent(opts: &DecodeOptions, decode: &WindowDecode) -> bool {
    let Some(ns) = opts.no_speech_threshold.map(decimal) else {
        return false;
    };
    let mut skip = decode.generation.no_speech_prob as f64 > ns;
    if let Some(lp) = opts.log_prob_threshold.map(decimal) {
        if decode.avg_logprob > lp {
            skip = false;
        }
    }
    skip
}

//! The seek loop over one clip (faster-whisper's `generate_segments`).

use std::sync::atomic::Ordering;

use asr_ipc::{DecodeOptions, Segment, WorkerError};

use super::{
    engine_err, Clock, LanguagePlan, Pipeline, Plan, Transcript, PROMPT_RESET_ON_TEMPERATURE,
};
use crate::engine::Backend;
use crate::segments::{build_prompt, decimal, split_by_timestamps};
use crate::{vad, words};

impl<B: Backend> Pipeline<B> {
    /// The seek loop over one clip (the whole audio, or its speech with
    /// `map` restoring the original times of the segments and words).
    pub(super) fn decode_clip(
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
                // faster-whisper's `detect_language` over up to
                // `language_detection_segments` windows: the first window
                // whose top language is sure enough decides; else the
                // language most often on top (its best probability).
                let mut votes: Vec<(String, usize, f32)> = Vec::new();
                let mut decided = None;
                let windows = (opts.language_detection_segments as usize).max(1);
                for i in 0..windows {
                    let start = i * nb;
                    if i > 0 && start >= features.n_frames {
                        break;
                    }
                    let width = nb.min(features.n_frames - start);
                    let mut mel = features.window(start, width, nb);
                    let at = Some(i as u32);
                    let encoded = clock
                        .phase("encode", at, None, || {
                            self.backend.encode(&mut mel, n_mels, nb)
                        })
                        .map_err(engine_err)?;
                    let langs = clock
                        .phase("detect_language", at, None, || {
                            self.backend.detect_language(&encoded)
                        })
                        .map_err(engine_err)?;
                    let (token_str, prob) = langs.into_iter().next().ok_or_else(|| {
                        WorkerError::Engine("language detection returned nothing".into())
                    })?;
                    if i == 0 && width == nb.min(content_frames) {
                        first_window = Some(encoded);
                    }
                    if prob > opts.language_detection_threshold {
                        decided = Some((token_str, prob));
                        break;
                    }
                    match votes.iter_mut().find(|(t, _, _)| *t == token_str) {
                        Some((_, n, best)) => {
                            *n += 1;
                            *best = best.max(prob);
                        }
                        None => votes.push((token_str, 1, prob)),
                    }
                }
                let (token_str, prob) = match decided {
                    Some(d) => d,
                    // Ties go to the language seen first, as Python's max().
                    None => votes
                        .iter()
                        .fold(None::<&(String, usize, f32)>, |best, v| match best {
                            Some(b) if b.1 >= v.1 => Some(b),
                            _ => Some(v),
                        })
                        .map(|(t, _, p)| (t.clone(), *p))
                        .ok_or_else(|| {
                            WorkerError::Engine("language detection returned nothing".into())
                        })?,
                };
                let code = token_str
                    .trim_start_matches("<|")
                    .trim_end_matches("|>")
                    .to_string();
                let token = self.tokenizer.token_to_id(&token_str).ok_or_else(|| {
                    WorkerError::Engine(format!(
                        "detected language {token_str} is not in the vocabulary"
                    ))
                })?;
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
                &plan.hotword_tokens,
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
            } else if opts.token_logprobs && !current.is_empty() {
                // Only the tokens' probabilities: align a copy, so the
                // segments, their times and the seek stay exactly those of
                // a decode without it.
                let mut copy = current.clone();
                let aligned = clock
                    .phase("align", Some(window), None, || {
                        words::add_word_timestamps(
                            &self.backend,
                            &self.tokenizer,
                            &encoded,
                            &sot_sequence,
                            &mut copy,
                            segment_size,
                            last_speech_timestamp,
                            &language,
                        )
                    })
                    .map_err(engine_err)?;
                words_per_segment = aligned.words;
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
                    words: seg_words
                        .iter()
                        .map(|w| {
                            if opts.token_logprobs {
                                w.to_word_with_logprobs(&self.tokenizer)
                            } else {
                                w.to_word()
                            }
                        })
                        .collect(),
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

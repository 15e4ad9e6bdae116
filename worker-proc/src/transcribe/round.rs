//! One engine call of batched decoding ([`super::batched`]): the windows'
//! features stacked and encoded, one batched `generate` (or
//! `detect_language`), the fallback judgement per window, and one batched
//! `align` for the windows that want words.

use std::collections::HashMap;
use std::rc::Rc;

use asr_ipc::WorkerError;

use super::batched::{is_silent, Encoding, Finished, Item, Task, CONTINUE_MIN_SECS};
use super::clock::unix_now_ns;
use super::fallback::runaway;
use super::{engine_err, LanguagePlan, Pipeline, Transcript};
use crate::engine::Backend;
use crate::segments::{split_by_timestamps, RawSegment, TIME_PRECISION};
use crate::words::{self, MEDIAN_FILTER_WIDTH};

type States<'s, 'a> = &'s mut [Option<Box<Item<'a>>>];

impl<B: Backend> Pipeline<B> {
    /// Features of `(item, window)` pairs stacked `[batch, n_mels, 3000]`,
    /// and each window's content frames.
    fn stack_features(
        &mut self,
        states: States<'_, '_>,
        windows: &[(usize, usize)],
    ) -> (Vec<f32>, usize, Vec<usize>) {
        let cfg = *self.extractor.config();
        let nb = cfg.nb_max_frames();
        let n_mels = cfg.feature_size;
        let mut mel = Vec::with_capacity(windows.len() * n_mels * nb);
        let mut frames = Vec::with_capacity(windows.len());
        for &(i, w) in windows {
            let Some(item) = states[i].as_mut() else {
                continue;
            };
            let window = item.windows[w];
            let start = unix_now_ns();
            let f = self
                .extractor
                .compute(&item.audio[window.start..window.end]);
            let content = f.content_frames().min(nb);
            mel.extend(f.window(0, content, nb));
            frames.push(content);
            item.clock
                .record("features", Some(w as u32), None, start, unix_now_ns());
        }
        (mel, n_mels, frames)
    }

    /// Records one shared engine call in each clip that took part (once
    /// per clip, at its first window in the call).
    fn record_call(
        states: States<'_, '_>,
        windows: &[(usize, usize)],
        name: &str,
        temperature: Option<f32>,
        start: u64,
    ) {
        let end = unix_now_ns();
        let mut seen: Vec<usize> = Vec::new();
        for &(i, w) in windows {
            if seen.contains(&i) {
                continue;
            }
            seen.push(i);
            if let Some(item) = states[i].as_mut() {
                item.clock
                    .record(name, Some(w as u32), temperature, start, end);
            }
        }
    }

    /// Decodes the windows of `round` in one engine call; returns the
    /// windows that must be tried at their next temperature.
    pub(super) fn decode_round(
        &mut self,
        states: States<'_, '_>,
        round: Vec<Task<B::Encoded>>,
    ) -> Result<Vec<Task<B::Encoded>>, WorkerError> {
        let windows: Vec<(usize, usize)> = round.iter().map(|t| (t.item, t.window)).collect();
        // The encoder output: the rows of an earlier call's when the
        // windows come back for their next temperature, else encoded now.
        let (encoding, frames) = match round[0].encoded.as_ref() {
            Some((source, _, _)) => {
                let rows: Vec<usize> = round
                    .iter()
                    .map(|t| t.encoded.as_ref().map_or(0, |(_, i, _)| *i))
                    .collect();
                let frames: Vec<usize> = round
                    .iter()
                    .map(|t| t.encoded.as_ref().map_or(0, |(_, _, f)| *f))
                    .collect();
                let all =
                    rows.len() == source.batch && rows.iter().enumerate().all(|(k, &i)| k == i);
                let encoding = if all {
                    Rc::clone(source)
                } else {
                    let value = self
                        .backend
                        .select(&source.value, &rows)
                        .map_err(engine_err)?;
                    Rc::new(Encoding {
                        value,
                        batch: rows.len(),
                    })
                };
                (encoding, frames)
            }
            None => {
                let (mut mel, n_mels, frames) = self.stack_features(states, &windows);
                if frames.len() != round.len() {
                    return Err(WorkerError::Engine("a window lost its clip".into()));
                }
                let nb = self.extractor.config().nb_max_frames();
                let start = unix_now_ns();
                let encoded = self.backend.encode_batch(&mut mel, round.len(), n_mels, nb);
                Self::record_call(states, &windows, "encode", None, start);
                let value = encoded.map_err(engine_err)?;
                (
                    Rc::new(Encoding {
                        value,
                        batch: round.len(),
                    }),
                    frames,
                )
            }
        };
        let encoded = &encoding.value;

        let first = states[round[0].item]
            .as_ref()
            .ok_or_else(|| WorkerError::Engine("a window lost its clip".into()))?;
        let t = first.opts.temperatures[round[0].attempt];
        let wopts = self.whisper_options(&first.opts, t);
        let mut prompts: Vec<Vec<&str>> = Vec::with_capacity(round.len());
        for task in &round {
            let item = states[task.item]
                .as_ref()
                .ok_or_else(|| WorkerError::Engine("a window lost its clip".into()))?;
            prompts.push(self.prompt_strings(&item.prompt)?);
        }
        let start = unix_now_ns();
        let generations = self.backend.generate_batch(encoded, &prompts, &wopts);
        Self::record_call(states, &windows, "generate", Some(t), start);
        let generations = generations.map_err(engine_err)?;
        if generations.len() != round.len() {
            return Err(WorkerError::Engine(format!(
                "the engine decoded {} of {} windows",
                generations.len(),
                round.len()
            )));
        }

        // Judge each window: accepted, next temperature, or out of them.
        let sr = self.extractor.config().sampling_rate as f64;
        let mut retry = Vec::new();
        let mut finished: Vec<(usize, usize, usize, super::WindowDecode)> = Vec::new();
        for (k, (mut task, generation)) in round.into_iter().zip(generations).enumerate() {
            let Some(item) = states[task.item].as_ref() else {
                continue;
            };
            let opts = &item.opts;
            let t = opts.temperatures[task.attempt];
            // Long-form windows fall back only when they ran away.
            let may_fall_back = !item.long_form
                || runaway(
                    generation.tokens.len(),
                    item.prompt.len(),
                    item.windows[task.window].len() as f64 / sr,
                );
            match task.attempts.push(&self.tokenizer, opts, t, generation)? {
                Some(decode) => finished.push((k, task.item, task.window, decode)),
                None if may_fall_back && task.attempt + 1 < opts.temperatures.len() => {
                    task.attempt += 1;
                    task.encoded = Some((Rc::clone(&encoding), k, frames[k]));
                    retry.push(task);
                }
                None => {
                    let decode = std::mem::take(&mut task.attempts).best();
                    finished.push((k, task.item, task.window, decode));
                }
            }
        }

        // Segments of the finished windows.
        let mut done: Vec<(usize, usize, usize, Finished)> = Vec::with_capacity(finished.len());
        let mut continued: Vec<(usize, usize, usize)> = Vec::new();
        for (k, i, w, decode) in finished {
            let Some(item) = states[i].as_ref() else {
                continue;
            };
            if is_silent(&item.opts, &decode) {
                done.push((
                    k,
                    i,
                    w,
                    Finished {
                        decode: None,
                        raw: Vec::new(),
                        aligned: None,
                    },
                ));
                continue;
            }
            let (raw, consumed) = self.split_window(item, w, frames[k], &decode.generation.tokens);
            if let Some(consumed) = consumed {
                continued.push((i, w, consumed));
            }
            done.push((
                k,
                i,
                w,
                Finished {
                    decode: Some(decode),
                    raw,
                    aligned: None,
                },
            ));
        }

        // One alignment for the windows that want words.
        let wants: Vec<bool> = {
            let mut wants = vec![false; windows.len()];
            for (k, i, _, f) in &done {
                let aligns = states[*i].as_ref().is_some_and(|item| item.aligns());
                wants[*k] = aligns && !f.raw.is_empty();
            }
            wants
        };
        if wants.iter().any(|w| *w) {
            let mut texts: Vec<Vec<usize>> = vec![Vec::new(); windows.len()];
            let mut num_frames: Vec<usize> = vec![0; windows.len()];
            let mut start_sequence: Vec<usize> = Vec::new();
            for (k, i, _, f) in &done {
                if !wants[*k] {
                    continue;
                }
                if let Some(item) = states[*i].as_ref() {
                    start_sequence = item.sot_sequence.iter().map(|&t| t as usize).collect();
                }
                texts[*k] = words::text_tokens_of(&self.tokenizer, &f.raw)
                    .concat()
                    .into_iter()
                    .map(|t| t as usize)
                    .collect();
                num_frames[*k] = frames[*k];
            }
            let start = unix_now_ns();
            let aligned = self.backend.align_batch(
                encoded,
                &start_sequence,
                &texts,
                &num_frames,
                MEDIAN_FILTER_WIDTH,
            );
            let aligning: Vec<(usize, usize)> = done
                .iter()
                .filter(|(k, ..)| wants[*k])
                .map(|(_, i, w, _)| (*i, *w))
                .collect();
            Self::record_call(states, &aligning, "align", None, start);
            let aligned = aligned.map_err(engine_err)?;
            for (k, i, _, f) in done.iter_mut() {
                if !wants[*k] {
                    continue;
                }
                let (Some(item), Some(alignment)) = (states[*i].as_ref(), aligned.get(*k)) else {
                    continue;
                };
                let text: Vec<u32> = texts[*k].iter().map(|&t| t as u32).collect();
                f.aligned = Some(
                    words::words_from_alignment(&self.tokenizer, &text, alignment, &item.language)
                        .map_err(engine_err)?,
                );
            }
        }
        for (_, i, w, f) in done {
            if let Some(item) = states[i].as_mut() {
                item.done[w] = Some(f);
            }
        }
        // The rests of the windows that stopped early: new windows, right
        // after the one they continue.
        for (i, w, consumed) in continued {
            let Some(item) = states[i].as_mut() else {
                continue;
            };
            let parent = item.windows[w];
            let c = item.windows.len();
            item.windows.push(super::Window {
                start: parent.start + consumed,
                end: parent.end,
            });
            item.done.push(None);
            let at = item
                .order
                .iter()
                .position(|&x| x == w)
                .map_or(item.order.len(), |p| p + 1);
            item.order.insert(at, c);
            retry.push(Task {
                item: i,
                window: c,
                attempt: 0,
                attempts: Default::default(),
                encoded: None,
            });
        }
        Ok(retry)
    }

    /// A window's tokens split into segments at timestamp tokens, times in
    /// the decoded audio; and, when the tokens stop before the window's end
    /// ([`super::batched::CONTINUE_MIN_SECS`] or more left), the samples
    /// they consumed: the rest is decoded again as a continuation. Text
    /// after the last timestamp pair with less left becomes a segment
    /// ending at the window's end.
    pub(super) fn split_window(
        &self,
        item: &Item<'_>,
        w: usize,
        content_frames: usize,
        tokens: &[u32],
    ) -> (Vec<RawSegment>, Option<usize>) {
        let cfg = self.extractor.config();
        let window = item.windows[w];
        let sr = cfg.sampling_rate as f64;
        let time_offset = window.start as f64 / sr;
        let seek = window.start / cfg.hop_length;
        let duration = window.len() as f64 / sr;
        let begin = self.tokenizer.timestamp_begin;
        let (mut segments, next_seek, single_ending) =
            split_by_timestamps(tokens, begin, time_offset, content_frames, duration, seek);
        let used: usize = segments.iter().map(|s| s.tokens.len()).sum();
        let has_pairs = used < tokens.len() || single_ending;
        let consumed = (next_seek.saturating_sub(seek) * cfg.hop_length).min(window.len());
        if has_pairs
            && !single_ending
            && consumed > 0
            && (window.len() - consumed) as f64 >= CONTINUE_MIN_SECS * sr
        {
            return (segments, Some(consumed));
        }
        let tail = &tokens[used.min(tokens.len())..];
        if tail.iter().any(|&t| t < self.tokenizer.eot) {
            let from = tokens[..used.min(tokens.len())]
                .iter()
                .chain(tail.first())
                .rev()
                .find(|&&t| t >= begin)
                .map_or(0.0, |&t| (t - begin) as f64 * TIME_PRECISION);
            segments.push(RawSegment {
                seek,
                start: time_offset + from.min(duration),
                end: time_offset + duration,
                tokens: tail.to_vec(),
            });
        }
        (segments, None)
    }

    /// Resolves the language of every clip that asks for detection:
    /// batched `detect_language` on their first windows, then their next
    /// ones while unsure (`language_detection_segments` / `_threshold`, as
    /// the seek loop decides).
    pub(super) fn detect_languages(
        &mut self,
        states: States<'_, '_>,
        results: &mut [Option<Result<Transcript, WorkerError>>],
        batch_size: usize,
    ) {
        let asking: Vec<usize> = (0..states.len())
            .filter(|&i| {
                states[i]
                    .as_ref()
                    .is_some_and(|item| item.plan.language == LanguagePlan::Detect)
            })
            .collect();
        if asking.is_empty() {
            return;
        }
        let mut decided: HashMap<usize, (String, f32)> = HashMap::new();
        let mut votes: HashMap<usize, Vec<(String, usize, f32)>> = HashMap::new();
        let most = asking
            .iter()
            .filter_map(|&i| states[i].as_ref())
            .map(|item| (item.opts.language_detection_segments as usize).max(1))
            .max()
            .unwrap_or(1);
        for r in 0..most {
            let now: Vec<(usize, usize)> = asking
                .iter()
                .copied()
                .filter(|i| !decided.contains_key(i))
                .filter(|&i| {
                    states[i].as_ref().is_some_and(|item| {
                        r < (item.opts.language_detection_segments as usize).max(1)
                            && r < item.windows.len()
                    })
                })
                .map(|i| (i, r))
                .collect();
            for call in now.chunks(batch_size) {
                let call: Vec<(usize, usize)> = call
                    .iter()
                    .copied()
                    .filter(|&(i, _)| {
                        let cancelled = states[i].as_ref().is_some_and(|item| item.cancelled());
                        if cancelled {
                            states[i] = None;
                            results[i] = Some(Err(WorkerError::Cancelled));
                        }
                        !cancelled && states[i].is_some()
                    })
                    .collect();
                if call.is_empty() {
                    continue;
                }
                match self.detect_call(states, &call) {
                    Ok(found) => {
                        for (&(i, _), top) in call.iter().zip(found) {
                            let Some(item) = states[i].as_ref() else {
                                continue;
                            };
                            let Some((token, prob)) = top else {
                                continue;
                            };
                            if prob > item.opts.language_detection_threshold {
                                decided.insert(i, (token, prob));
                                continue;
                            }
                            let v = votes.entry(i).or_default();
                            match v.iter_mut().find(|(t, _, _)| *t == token) {
                                Some((_, n, best)) => {
                                    *n += 1;
                                    *best = best.max(prob);
                                }
                                None => v.push((token, 1, prob)),
                            }
                        }
                    }
                    Err(e) => {
                        for &(i, _) in &call {
                            states[i] = None;
                            results[i] = Some(Err(e.clone()));
                        }
                    }
                }
            }
        }
        for i in asking {
            if states[i].is_none() {
                continue;
            }
            // Ties go to the language seen first, as Python's max().
            let choice = decided.remove(&i).or_else(|| {
                votes
                    .get(&i)?
                    .iter()
                    .fold(None::<&(String, usize, f32)>, |best, v| match best {
                        Some(b) if b.1 >= v.1 => Some(b),
                        _ => Some(v),
                    })
                    .map(|(t, _, p)| (t.clone(), *p))
            });
            let resolved = match choice {
                None => Err(WorkerError::Engine(
                    "language detection returned nothing".into(),
                )),
                Some((token_str, prob)) => match self.tokenizer.token_to_id(&token_str) {
                    None => Err(WorkerError::Engine(format!(
                        "detected language {token_str} is not in the vocabulary"
                    ))),
                    Some(token) => Ok((token_str, prob, token)),
                },
            };
            match resolved {
                Ok((token_str, prob, token)) => {
                    if let Some(item) = states[i].as_mut() {
                        item.language = token_str
                            .trim_start_matches("<|")
                            .trim_end_matches("|>")
                            .to_string();
                        item.language_probability = prob;
                        self.set_language(item, Some(token));
                    }
                }
                Err(e) => {
                    states[i] = None;
                    results[i] = Some(Err(e));
                }
            }
        }
    }

    /// One batched language detection: each window's top language.
    fn detect_call(
        &mut self,
        states: States<'_, '_>,
        call: &[(usize, usize)],
    ) -> Result<Vec<Option<(String, f32)>>, WorkerError> {
        let (mut mel, n_mels, frames) = self.stack_features(states, call);
        let nb = self.extractor.config().nb_max_frames();
        let start = unix_now_ns();
        let encoded = self
            .backend
            .encode_batch(&mut mel, frames.len(), n_mels, nb);
        Self::record_call(states, call, "encode", None, start);
        let encoded = encoded.map_err(engine_err)?;
        let start = unix_now_ns();
        let found = self.backend.detect_language_batch(&encoded);
        Self::record_call(states, call, "detect_language", None, start);
        let found = found.map_err(engine_err)?;
        Ok((0..call.len())
            .map(|k| found.get(k).and_then(|langs| langs.first().cloned()))
            .collect())
    }
}

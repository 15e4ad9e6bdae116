//! One 30 s window decoded with temperature fallback (faster-whisper's
//! `generate_with_fallback`).

use asr_ipc::{DecodeOptions, WorkerError};
use ct2rs::sys::WhisperOptions;

use super::{engine_err, Clock, Pipeline};
use crate::engine::{Backend, Generation};
use crate::segments::{compression_ratio, decimal, MAX_LENGTH, TIME_PRECISION};
use crate::tokenizer::WhisperTokenizer;

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

impl<B: Backend> Pipeline<B> {
    /// The CTranslate2 options for one attempt at temperature `t`.
    pub(super) fn whisper_options(&self, opts: &DecodeOptions, t: f32) -> WhisperOptions {
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

    /// A window's prompt as vocabulary strings.
    pub(super) fn prompt_strings(&self, prompt: &[u32]) -> Result<Vec<&str>, WorkerError> {
        prompt
            .iter()
            .map(|&id| {
                self.tokenizer.id_to_token(id).ok_or_else(|| {
                    WorkerError::Engine(format!("token id {id} is not in the vocabulary"))
                })
            })
            .collect()
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
        let prompt_strs = self.prompt_strings(prompt)?;
        let mut attempts = Attempts::default();
        for &t in &opts.temperatures {
            let wopts = self.whisper_options(opts, t);
            let generation = clock
                .phase("generate", Some(window), Some(t), || {
                    self.backend.generate(encoded, &prompt_strs, &wopts)
                })
                .map_err(engine_err)?;
            if let Some(accepted) = attempts.push(&self.tokenizer, opts, t, generation)? {
                return Ok(accepted);
            }
        }
        Ok(attempts.best())
    }
}

/// Text tokens per second of window audio above which a decode is taken
/// for a loop: speech is 2 to 5 tokens a second (timestamps included); a
/// phrase repeated over and over runs far above.
pub const RUNAWAY_TOKENS_PER_SEC: f64 = 12.0;

/// Whether a window's decode ran away: it filled the decoder
/// ([`MAX_LENGTH`] with its prompt of `prompt` tokens) or produced more
/// than [`RUNAWAY_TOKENS_PER_SEC`] per second of its `window_secs` of
/// audio (at least one second counted).
///
/// Batched long-form windows fall back to the next temperature only then
/// (faster-whisper's `BatchedInferencePipeline` never falls back): without
/// conditioning on previous text a window cannot inherit a loop, and the
/// compression-ratio rule mostly flags genuinely repetitive speech there
/// (menus, refrains), where sampling five candidates per temperature costs
/// seconds and gives a worse text (BENCHMARKS.md, issue 13).
pub fn runaway(tokens: usize, prompt: usize, window_secs: f64) -> bool {
    tokens + prompt + 1 >= MAX_LENGTH
        || tokens as f64 > RUNAWAY_TOKENS_PER_SEC * window_secs.max(1.0)
}

/// The attempts at one window, temperature after temperature (the state of
/// `generate_with_fallback` between two `generate` calls).
#[derive(Debug, Clone, Default)]
pub struct Attempts {
    all: Vec<WindowDecode>,
    below_cr: Vec<usize>,
    last_t: f64,
}

impl Attempts {
    /// Judges the result of the attempt at temperature `t`: `Some` when it
    /// is accepted (no fallback needed), `None` when the next temperature
    /// should be tried.
    pub fn push(
        &mut self,
        tokenizer: &WhisperTokenizer,
        opts: &DecodeOptions,
        t: f32,
        generation: Generation,
    ) -> Result<Option<WindowDecode>, WorkerError> {
        let cr_threshold = opts.compression_ratio_threshold.map(decimal);
        let lp_threshold = opts.log_prob_threshold.map(decimal);
        let ns_threshold = opts.no_speech_threshold.map(decimal);
        let seq_len = generation.tokens.len() as f64;
        let cum_logprob = generation.score as f64 * seq_len.powf(opts.length_penalty as f64);
        let avg_logprob = cum_logprob / (seq_len + 1.0);
        let text = tokenizer.decode(&generation.tokens).map_err(engine_err)?;
        let cr = compression_ratio(text.trim());
        let t64 = decimal(t);
        self.last_t = t64;
        let no_speech_prob = generation.no_speech_prob as f64;
        self.all.push(WindowDecode {
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
                self.below_cr.push(self.all.len() - 1);
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
        if needs_fallback {
            Ok(None)
        } else {
            Ok(self.all.pop())
        }
    }

    /// Every temperature failed: the best mean log-probability among the
    /// results under the compression threshold (or among all), first
    /// wins, reported at the last temperature tried.
    pub fn best(mut self) -> WindowDecode {
        let candidates: Vec<usize> = if self.below_cr.is_empty() {
            (0..self.all.len()).collect()
        } else {
            std::mem::take(&mut self.below_cr)
        };
        let mut best = candidates[0];
        for &i in &candidates[1..] {
            if self.all[i].avg_logprob > self.all[best].avg_logprob {
                best = i;
            }
        }
        let mut chosen = self.all.swap_remove(best);
        chosen.temperature = self.last_t;
        chosen
    }
}

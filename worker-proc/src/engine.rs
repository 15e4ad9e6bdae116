//! The CTranslate2 engine behind a small trait.
//!
//! [`Engine`] wraps the low-level `ct2rs::sys::Whisper` (encode, generate,
//! detect_language, align). The high-level `ct2rs::Whisper` is not used: it
//! builds the wrong prompt for `.en` models, normalises features per frame
//! and leaks special tokens.
//!
//! The seek loop in [`crate::transcribe`] only sees the [`Backend`] trait, so
//! its logic is tested with a scripted backend and no model.
//!
//! Every call runs on the caller's thread and blocks until CTranslate2 is
//! done: the worker decodes strictly serially, with no pool and no timeout
//! around the engine (a hung decode is the parent's to kill).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use ct2rs::sys::{self, ComputeType, Config, Device, StorageView, WhisperOptions};

/// The best hypothesis of one `generate` call.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated token ids (text and timestamps, no `<|endoftext|>`).
    pub tokens: Vec<u32>,
    /// Length-normalised cumulative log-probability, as CTranslate2 reports it.
    pub score: f32,
    /// Probability of the no-speech token at the start of the transcript.
    pub no_speech_prob: f32,
}

/// One step of a token-to-frame alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlignStep {
    /// Index of the text token.
    pub token: usize,
    /// Index of the encoder frame (20 ms each).
    pub frame: usize,
}

/// Result of [`Backend::align`] for one sequence.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Alignment {
    /// The monotonic DTW path.
    pub steps: Vec<AlignStep>,
    /// Probability of each text token.
    pub text_token_probs: Vec<f32>,
}

/// What the decode pipeline needs from a Whisper engine.
pub trait Backend {
    /// Encoder output of one window.
    type Encoded;

    /// Runs the encoder on `[1, n_mels, n_frames]` features.
    fn encode(&self, mel: &mut [f32], n_mels: usize, n_frames: usize) -> Result<Self::Encoded>;

    /// Decodes one window from a prompt of vocabulary strings.
    fn generate(
        &self,
        encoded: &Self::Encoded,
        prompt: &[&str],
        options: &WhisperOptions,
    ) -> Result<Generation>;

    /// Language tokens (`<|en|>`…) with their probabilities, best first.
    fn detect_language(&self, encoded: &Self::Encoded) -> Result<Vec<(String, f32)>>;

    /// Aligns text tokens with encoder frames (for word timestamps).
    fn align(
        &self,
        encoded: &Self::Encoded,
        start_sequence: &[usize],
        text_tokens: &[usize],
        num_frames: usize,
        median_filter_width: i64,
    ) -> Result<Alignment>;

    /// Runs the encoder on `batch` windows at once: `mel` holds
    /// `[batch, n_mels, n_frames]` features, window after window.
    fn encode_batch(
        &self,
        mel: &mut [f32],
        batch: usize,
        n_mels: usize,
        n_frames: usize,
    ) -> Result<Self::Encoded>;

    /// Decodes every window of a batch encoding, one prompt per window, in
    /// one call (the prompts must agree on where `<|startoftranscript|>`
    /// is and on the tokens after it: CTranslate2's rule). One result per
    /// prompt, in order.
    fn generate_batch(
        &self,
        encoded: &Self::Encoded,
        prompts: &[Vec<&str>],
        options: &WhisperOptions,
    ) -> Result<Vec<Generation>>;

    /// Windows `indices` of a batch encoding, in that order (for a decode
    /// of just those windows, without encoding them again).
    fn select(&self, encoded: &Self::Encoded, indices: &[usize]) -> Result<Self::Encoded>;

    /// [`Backend::detect_language`] for every window of a batch encoding.
    fn detect_language_batch(&self, encoded: &Self::Encoded) -> Result<Vec<Vec<(String, f32)>>>;

    /// [`Backend::align`] for every window of a batch encoding, with one
    /// start sequence for all; `text_tokens[i]` and `num_frames[i]` are
    /// window `i`'s.
    fn align_batch(
        &self,
        encoded: &Self::Encoded,
        start_sequence: &[usize],
        text_tokens: &[Vec<usize>],
        num_frames: &[usize],
        median_filter_width: i64,
    ) -> Result<Vec<Alignment>>;
}

fn generation(result: sys::WhisperGenerationResult) -> Result<Generation> {
    let tokens = result
        .sequences_ids
        .first()
        .ok_or_else(|| anyhow!("the engine returned no hypothesis"))?
        .iter()
        .map(|&t| t as u32)
        .collect();
    Ok(Generation {
        tokens,
        score: result.scores.first().copied().unwrap_or(0.0),
        no_speech_prob: result.no_speech_prob,
    })
}

fn alignment(result: &sys::WhisperAlignmentResult) -> Alignment {
    Alignment {
        steps: result
            .alignments
            .iter()
            .map(|a| AlignStep {
                token: a.token_x.max(0) as usize,
                frame: a.frame_x.max(0) as usize,
            })
            .collect(),
        text_token_probs: result.text_token_probs.clone(),
    }
}

/// How to load the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings {
    /// CPU or CUDA.
    pub device: Device,
    /// CTranslate2 compute type.
    pub compute_type: ComputeType,
    /// Intra-op threads (0 = CTranslate2's default).
    pub threads: usize,
}

/// The loaded CTranslate2 Whisper model.
pub struct Engine {
    whisper: sys::Whisper,
}

impl Engine {
    /// Loads `model.bin` and its config from `model_dir`.
    pub fn load(model_dir: &Path, settings: EngineSettings) -> Result<Self> {
        let config = Config {
            device: settings.device,
            compute_type: settings.compute_type,
            num_threads_per_replica: settings.threads,
            ..Config::default()
        };
        let whisper = sys::Whisper::new(model_dir, config)
            .with_context(|| format!("CTranslate2 could not load {}", model_dir.display()))?;
        Ok(Self { whisper })
    }

    /// Whether the model is multilingual (CTranslate2's own test).
    pub fn is_multilingual(&self) -> bool {
        self.whisper.is_multilingual()
    }

    /// Mel bins the encoder expects.
    pub fn n_mels(&self) -> usize {
        self.whisper.n_mels()
    }
}

impl Backend for Engine {
    type Encoded = StorageView<'static>;

    fn encode(&self, mel: &mut [f32], n_mels: usize, n_frames: usize) -> Result<Self::Encoded> {
        let view = StorageView::new(&[1, n_mels, n_frames], mel, Device::CPU)?;
        self.whisper.encode(&view, false)
    }

    fn generate(
        &self,
        encoded: &Self::Encoded,
        prompt: &[&str],
        options: &WhisperOptions,
    ) -> Result<Generation> {
        let prompts = [prompt.to_vec()];
        let result = self
            .whisper
            .generate(encoded, &prompts, options)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the engine returned no result"))?;
        generation(result)
    }

    fn detect_language(&self, encoded: &Self::Encoded) -> Result<Vec<(String, f32)>> {
        let all = self.whisper.detect_language(encoded)?;
        let first = all
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the engine returned no language"))?;
        Ok(first
            .into_iter()
            .map(|d| (d.language, d.probability))
            .collect())
    }

    fn align(
        &self,
        encoded: &Self::Encoded,
        start_sequence: &[usize],
        text_tokens: &[usize],
        num_frames: usize,
        median_filter_width: i64,
    ) -> Result<Alignment> {
        let result = self
            .whisper
            .align(
                encoded,
                start_sequence,
                &[text_tokens.to_vec()],
                &[num_frames],
                median_filter_width,
            )?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the engine returned no alignment"))?;
        Ok(alignment(&result))
    }

    fn encode_batch(
        &self,
        mel: &mut [f32],
        batch: usize,
        n_mels: usize,
        n_frames: usize,
    ) -> Result<Self::Encoded> {
        let view = StorageView::new(&[batch, n_mels, n_frames], mel, Device::CPU)?;
        self.whisper.encode(&view, false)
    }

    fn generate_batch(
        &self,
        encoded: &Self::Encoded,
        prompts: &[Vec<&str>],
        options: &WhisperOptions,
    ) -> Result<Vec<Generation>> {
        let results = self.whisper.generate(encoded, prompts, options)?;
        if results.len() != prompts.len() {
            return Err(anyhow!(
                "the engine returned {} results for {} prompts",
                results.len(),
                prompts.len()
            ));
        }
        results.into_iter().map(generation).collect()
    }

    fn select(&self, encoded: &Self::Encoded, indices: &[usize]) -> Result<Self::Encoded> {
        let indices: Vec<i32> = indices
            .iter()
            .map(|&i| i32::try_from(i).map_err(|_| anyhow!("batch index {i} out of range")))
            .collect::<Result<_>>()?;
        encoded.select_batch(&indices)
    }

    fn detect_language_batch(&self, encoded: &Self::Encoded) -> Result<Vec<Vec<(String, f32)>>> {
        Ok(self
            .whisper
            .detect_language(encoded)?
            .into_iter()
            .map(|all| {
                all.into_iter()
                    .map(|d| (d.language, d.probability))
                    .collect()
            })
            .collect())
    }

    fn align_batch(
        &self,
        encoded: &Self::Encoded,
        start_sequence: &[usize],
        text_tokens: &[Vec<usize>],
        num_frames: &[usize],
        median_filter_width: i64,
    ) -> Result<Vec<Alignment>> {
        let results = self.whisper.align(
            encoded,
            start_sequence,
            text_tokens,
            num_frames,
            median_filter_width,
        )?;
        if results.len() != text_tokens.len() {
            return Err(anyhow!(
                "the engine returned {} alignments for {} sequences",
                results.len(),
                text_tokens.len()
            ));
        }
        Ok(results.iter().map(alignment).collect())
    }
}

/// The thread count CTranslate2 will use for `--threads N`.
pub fn effective_threads(requested: usize) -> u32 {
    if requested > 0 {
        return requested as u32;
    }
    if let Some(n) = std::env::var("OMP_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(4);
    cores.min(4)
}

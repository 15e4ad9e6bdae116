//! Checking a job's options against the model and resolving its language
//! and task ([`plan`]).

use asr_ipc::{DecodeOptions, Task, WorkerError};

use super::MAX_BEAM;

/// Most 30 s windows language detection may look at (40 min).
pub const MAX_DETECTION_SEGMENTS: u32 = 80;
use crate::tokenizer::WhisperTokenizer;

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
    /// Tokens of the hotwords (`" " + hotwords.strip()`), in every prompt.
    pub hotword_tokens: Vec<u32>,
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

pub(super) fn invalid(msg: impl Into<String>) -> WorkerError {
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
    if opts.batch_size > asr_ipc::MAX_BATCH_SIZE {
        return Err(invalid(format!(
            "batch_size must be between 0 and {}, got {}",
            asr_ipc::MAX_BATCH_SIZE,
            opts.batch_size
        )));
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
    if opts.language_detection_segments == 0
        || opts.language_detection_segments > MAX_DETECTION_SEGMENTS
    {
        return Err(invalid(format!(
            "language_detection_segments must be between 1 and {MAX_DETECTION_SEGMENTS}, got {}",
            opts.language_detection_segments
        )));
    }
    if !(0.0..=1.0).contains(&opts.language_detection_threshold) {
        return Err(invalid(
            "language_detection_threshold must be a number from 0 to 1",
        ));
    }
    let hotword_tokens = match opts.hotwords.as_deref().map(str::trim) {
        Some(h) if !h.is_empty() => tokenizer
            .encode(&format!(" {h}"))
            .map_err(|e| invalid(format!("hotwords: {e}")))?,
        _ => Vec::new(),
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
        hotword_tokens,
    })
}

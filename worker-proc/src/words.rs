//! Word-level timestamps: a port of faster-whisper's `add_word_timestamps`,
//! `find_alignment`, `split_to_word_tokens` and `merge_punctuations`.
//!
//! CTranslate2's `align` runs dynamic time warping over the cross-attention
//! of the model's alignment heads and returns, for each text token, the
//! encoder frame (20 ms) where it starts. Tokens are grouped into words
//! (at spaces and punctuation, or at every complete character for
//! languages written without spaces), punctuation is merged into its
//! neighbour, and faster-whisper's heuristics clamp over-long words at
//! sentence and segment boundaries. The segment's own start and end are
//! then moved to its first and last word, as faster-whisper does.

use anyhow::Result;
use asr_ipc::{TokenLogprob, Word};

use crate::engine::{Alignment, Backend};
use crate::segments::RawSegment;
use crate::tokenizer::WhisperTokenizer;

/// Punctuation merged into the following word.
pub const PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";
/// Punctuation merged into the preceding word.
pub const APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";
/// Python's `string.punctuation`.
const ASCII_PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
/// Encoder frames per second (16000 / (160 * 2)).
const TOKENS_PER_SECOND: f64 = 50.0;
/// Feature frames per second.
const FRAMES_PER_SECOND: f64 = 100.0;
/// Languages split at characters rather than spaces.
const NO_SPACE_LANGUAGES: &[&str] = &["zh", "ja", "th", "lo", "my", "yue"];

/// One word of an alignment, before it becomes a [`Word`].
#[derive(Debug, Clone, PartialEq)]
pub struct WordTiming {
    /// The word with its leading space.
    pub word: String,
    /// Its tokens.
    pub tokens: Vec<u32>,
    /// Start, seconds from the window start.
    pub start: f64,
    /// End, seconds from the window start.
    pub end: f64,
    /// Mean token probability.
    pub probability: f64,
    /// The probability of each of `tokens` (from the alignment).
    pub token_probs: Vec<f64>,
}

/// What [`add_word_timestamps`] produced for one window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlignedWords {
    /// The words of each segment, in order.
    pub words: Vec<Vec<WordTiming>>,
}

impl WordTiming {
    /// The IPC form.
    pub fn to_word(&self) -> Word {
        Word {
            start: self.start as f32,
            end: self.end as f32,
            word: self.word.clone(),
            probability: self.probability as f32,
            tokens: Vec::new(),
        }
    }

    /// The IPC form with each token's log-probability.
    pub fn to_word_with_logprobs(&self, tok: &WhisperTokenizer) -> Word {
        let mut word = self.to_word();
        word.tokens = self
            .tokens
            .iter()
            .zip(&self.token_probs)
            .map(|(&id, &p)| TokenLogprob {
                token: tok.decode(&[id]).unwrap_or_default(),
                logprob: p.max(f64::MIN_POSITIVE).ln() as f32,
                bytes: tok.token_bytes(id),
            })
            .collect();
        word
    }
}

/// Python's `round(x, 2)`: the exact binary value rounded to 2 decimals.
pub fn round2(x: f64) -> f64 {
    format!("{x:.2}").parse().unwrap_or(x)
}

/// Text of tokens with timestamps shown as `<|t|>` (faster-whisper's
/// `decode_with_timestamps`).
fn decode_with_timestamps(tok: &WhisperTokenizer, tokens: &[u32]) -> Result<String> {
    let mut out = String::new();
    let mut run: Vec<u32> = Vec::new();
    for &t in tokens {
        if t >= tok.timestamp_begin {
            out.push_str(&tok.decode(&run)?);
            run.clear();
            out.push_str(&format!(
                "<|{:.2}|>",
                (t - tok.timestamp_begin) as f64 * 0.02
            ));
        } else {
            run.push(t);
        }
    }
    out.push_str(&tok.decode(&run)?);
    Ok(out)
}

/// Splits tokens where the decoded text is complete Unicode.
pub fn split_tokens_on_unicode(
    tok: &WhisperTokenizer,
    tokens: &[u32],
) -> Result<(Vec<String>, Vec<Vec<u32>>)> {
    const REPLACEMENT: char = '\u{fffd}';
    let full: Vec<char> = decode_with_timestamps(tok, tokens)?.chars().collect();
    let mut words = Vec::new();
    let mut word_tokens = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    let mut unicode_offset = 0usize;
    for &t in tokens {
        current.push(t);
        let decoded = decode_with_timestamps(tok, &current)?;
        let chars: Vec<char> = decoded.chars().collect();
        let replacement = chars
            .iter()
            .position(|&c| c == REPLACEMENT)
            .map(|i| i + unicode_offset);
        let complete = match replacement {
            None => true,
            Some(i) => i < full.len() && full[i] == REPLACEMENT,
        };
        if complete {
            unicode_offset += chars.len();
            words.push(decoded);
            word_tokens.push(std::mem::take(&mut current));
        }
    }
    Ok((words, word_tokens))
}

/// Splits tokens into words at spaces and punctuation.
pub fn split_tokens_on_spaces(
    tok: &WhisperTokenizer,
    tokens: &[u32],
) -> Result<(Vec<String>, Vec<Vec<u32>>)> {
    let (subwords, subword_tokens) = split_tokens_on_unicode(tok, tokens)?;
    let mut words: Vec<String> = Vec::new();
    let mut word_tokens: Vec<Vec<u32>> = Vec::new();
    for (subword, toks) in subwords.into_iter().zip(subword_tokens) {
        let special = toks.first().is_some_and(|&t| t >= tok.eot);
        let with_space = subword.starts_with(' ');
        // Python's `s in string.punctuation` is a substring test ("" is in).
        let punctuation = ASCII_PUNCTUATION.contains(subword.trim());
        if special || with_space || punctuation || words.is_empty() {
            words.push(subword);
            word_tokens.push(toks);
        } else if let (Some(w), Some(t)) = (words.last_mut(), word_tokens.last_mut()) {
            w.push_str(&subword);
            t.extend(toks);
        }
    }
    Ok((words, word_tokens))
}

/// faster-whisper's `split_to_word_tokens`.
pub fn split_to_word_tokens(
    tok: &WhisperTokenizer,
    tokens: &[u32],
    language: &str,
) -> Result<(Vec<String>, Vec<Vec<u32>>)> {
    if NO_SPACE_LANGUAGES.contains(&language) {
        split_tokens_on_unicode(tok, tokens)
    } else {
        split_tokens_on_spaces(tok, tokens)
    }
}

/// faster-whisper's `merge_punctuations`.
pub fn merge_punctuations(alignment: &mut [WordTiming], prepended: &str, appended: &str) {
    if alignment.len() >= 2 {
        let mut i = alignment.len() as isize - 2;
        let mut j = alignment.len() - 1;
        while i >= 0 {
            let iu = i as usize;
            let merge = {
                let previous = &alignment[iu];
                previous.word.starts_with(' ') && prepended.contains(previous.word.trim())
            };
            if merge {
                let prev_word = std::mem::take(&mut alignment[iu].word);
                let prev_tokens = std::mem::take(&mut alignment[iu].tokens);
                let prev_probs = std::mem::take(&mut alignment[iu].token_probs);
                let following = &mut alignment[j];
                following.word = prev_word + &following.word;
                let mut tokens = prev_tokens;
                tokens.extend_from_slice(&following.tokens);
                following.tokens = tokens;
                let mut probs = prev_probs;
                probs.extend_from_slice(&following.token_probs);
                following.token_probs = probs;
            } else {
                j = iu;
            }
            i -= 1;
        }
    }
    let mut i = 0usize;
    let mut j = 1usize;
    while j < alignment.len() {
        let merge =
            !alignment[i].word.ends_with(' ') && appended.contains(alignment[j].word.as_str());
        if merge {
            let word = std::mem::take(&mut alignment[j].word);
            let tokens = std::mem::take(&mut alignment[j].tokens);
            let probs = std::mem::take(&mut alignment[j].token_probs);
            alignment[i].word.push_str(&word);
            alignment[i].tokens.extend(tokens);
            alignment[i].token_probs.extend(probs);
        } else {
            i = j;
        }
        j += 1;
    }
}

/// faster-whisper's `find_alignment` for one sequence.
pub fn find_alignment<B: Backend>(
    backend: &B,
    tok: &WhisperTokenizer,
    encoded: &B::Encoded,
    sot_sequence: &[u32],
    text_tokens: &[u32],
    num_frames: usize,
    language: &str,
) -> Result<Vec<WordTiming>> {
    if text_tokens.is_empty() {
        // faster-whisper gets a single (end-of-text) word back and returns
        // nothing; skip the engine call.
        return Ok(Vec::new());
    }
    let start: Vec<usize> = sot_sequence.iter().map(|&t| t as usize).collect();
    let text: Vec<usize> = text_tokens.iter().map(|&t| t as usize).collect();
    let result = backend.align(encoded, &start, &text, num_frames, MEDIAN_FILTER_WIDTH)?;
    words_from_alignment(tok, text_tokens, &result, language)
}

/// The median filter width of the alignment (faster-whisper's).
pub const MEDIAN_FILTER_WIDTH: i64 = 7;

/// The words of `text_tokens` timed by the engine's `result` (the part of
/// [`find_alignment`] after the engine call).
pub fn words_from_alignment(
    tok: &WhisperTokenizer,
    text_tokens: &[u32],
    result: &Alignment,
    language: &str,
) -> Result<Vec<WordTiming>> {
    if text_tokens.is_empty() {
        return Ok(Vec::new());
    }
    let mut with_eot = text_tokens.to_vec();
    with_eot.push(tok.eot);
    let (words, word_tokens) = split_to_word_tokens(tok, &with_eot, language)?;
    if word_tokens.len() <= 1 {
        return Ok(Vec::new());
    }
    // word_boundaries = pad(cumsum(len(t) for t in word_tokens[:-1]), (1, 0))
    let mut boundaries = vec![0usize];
    for t in &word_tokens[..word_tokens.len() - 1] {
        boundaries.push(boundaries[boundaries.len() - 1] + t.len());
    }
    // jumps: the first step and every step where the token index changes.
    let mut jump_times: Vec<f64> = Vec::new();
    let mut previous: Option<usize> = None;
    for step in &result.steps {
        if previous != Some(step.token) {
            jump_times.push(step.frame as f64 / TOKENS_PER_SECOND);
        }
        previous = Some(step.token);
    }
    let probs = &result.text_token_probs;
    let mut out = Vec::new();
    for (k, (word, tokens)) in words.into_iter().zip(word_tokens).enumerate() {
        if k + 1 >= boundaries.len() {
            break;
        }
        let (i, j) = (boundaries[k], boundaries[k + 1]);
        let (Some(&start), Some(&end)) = (jump_times.get(i), jump_times.get(j)) else {
            break;
        };
        let slice = &probs[i.min(probs.len())..j.min(probs.len())];
        let probability = if slice.is_empty() {
            f64::NAN
        } else {
            slice.iter().map(|&p| p as f64).sum::<f64>() / slice.len() as f64
        };
        out.push(WordTiming {
            word,
            tokens,
            start,
            end,
            probability,
            token_probs: slice.iter().map(|&p| f64::from(p)).collect(),
        });
    }
    Ok(out)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Clamps over-long words at sentence ends, then merges punctuation;
/// returns `(median_duration, max_duration)`.
pub fn clamp_and_merge(alignment: &mut [WordTiming]) -> (f64, f64) {
    let mut durations: Vec<f64> = alignment
        .iter()
        .map(|w| w.end - w.start)
        .filter(|d| *d != 0.0)
        .collect();
    let median_duration = if durations.is_empty() {
        0.0
    } else {
        median(&mut durations)
    };
    let median_duration = median_duration.min(0.7);
    let max_duration = median_duration * 2.0;
    if !durations.is_empty() {
        const SENTENCE_END_MARKS: &str = ".。!！?？";
        for i in 1..alignment.len() {
            if alignment[i].end - alignment[i].start > max_duration {
                if SENTENCE_END_MARKS.contains(alignment[i].word.as_str()) {
                    alignment[i].end = alignment[i].start + max_duration;
                } else if SENTENCE_END_MARKS.contains(alignment[i - 1].word.as_str()) {
                    alignment[i].start = alignment[i].end - max_duration;
                }
            }
        }
    }
    merge_punctuations(alignment, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);
    (median_duration, max_duration)
}

/// Adds words to the segments of one window and moves each segment's start
/// and end to its words (faster-whisper's `add_word_timestamps`).
#[allow(clippy::too_many_arguments)]
pub fn add_word_timestamps<B: Backend>(
    backend: &B,
    tok: &WhisperTokenizer,
    encoded: &B::Encoded,
    sot_sequence: &[u32],
    segments: &mut [RawSegment],
    num_frames: usize,
    last_speech_timestamp: f64,
    language: &str,
) -> Result<AlignedWords> {
    if segments.is_empty() {
        return Ok(AlignedWords::default());
    }
    let text_tokens: Vec<u32> = text_tokens_of(tok, segments).concat();
    let alignment = find_alignment(
        backend,
        tok,
        encoded,
        sot_sequence,
        &text_tokens,
        num_frames,
        language,
    )?;
    let time_offset = segments[0].seek as f64 / FRAMES_PER_SECOND;
    Ok(place_words(
        tok,
        segments,
        alignment,
        last_speech_timestamp,
        time_offset,
    ))
}

/// The text tokens (no timestamps, no specials) of each segment: what the
/// alignment of a window is asked for, concatenated.
pub fn text_tokens_of(tok: &WhisperTokenizer, segments: &[RawSegment]) -> Vec<Vec<u32>> {
    segments
        .iter()
        .map(|s| s.tokens.iter().copied().filter(|&t| t < tok.eot).collect())
        .collect()
}

/// The part of [`add_word_timestamps`] after the alignment: clamps and
/// merges the window's words, hands them to their segments (word times
/// are from the window start, `time_offset` seconds) and moves each
/// segment's start and end to its words.
pub fn place_words(
    tok: &WhisperTokenizer,
    segments: &mut [RawSegment],
    mut alignment: Vec<WordTiming>,
    mut last_speech_timestamp: f64,
    time_offset: f64,
) -> AlignedWords {
    if segments.is_empty() {
        return AlignedWords::default();
    }
    let per_segment = text_tokens_of(tok, segments);
    let (median_duration, max_duration) = clamp_and_merge(&mut alignment);

    let mut word_index = 0usize;
    let mut result = Vec::with_capacity(segments.len());
    for (segment, seg_tokens) in segments.iter_mut().zip(&per_segment) {
        let mut saved_tokens = 0usize;
        let mut words: Vec<WordTiming> = Vec::new();
        while word_index < alignment.len() && saved_tokens < seg_tokens.len() {
            let timing = &alignment[word_index];
            if !timing.word.is_empty() {
                words.push(WordTiming {
                    word: timing.word.clone(),
                    tokens: timing.tokens.clone(),
                    token_probs: timing.token_probs.clone(),
                    start: round2(time_offset + timing.start),
                    end: round2(time_offset + timing.end),
                    probability: timing.probability,
                });
            }
            saved_tokens += timing.tokens.len();
            word_index += 1;
        }
        if !words.is_empty() {
            // Truncate a long first word after a pause.
            if words[0].end - last_speech_timestamp > median_duration * 4.0
                && (words[0].end - words[0].start > max_duration
                    || (words.len() > 1 && words[1].end - words[0].start > max_duration * 2.0))
            {
                if words.len() > 1 && words[1].end - words[1].start > max_duration {
                    let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
                    words[0].end = boundary;
                    words[1].start = boundary;
                }
                words[0].start = (words[0].end - max_duration).max(0.0);
            }
            // Prefer the segment-level start if the first word is too long.
            if segment.start < words[0].end && segment.start - 0.5 > words[0].start {
                words[0].start = (words[0].end - median_duration).min(segment.start).max(0.0);
            } else {
                segment.start = words[0].start;
            }
            // Prefer the segment-level end if the last word is too long.
            let last = words.len() - 1;
            if segment.end > words[last].start && segment.end + 0.5 < words[last].end {
                words[last].end = (words[last].start + median_duration).max(segment.end);
            } else {
                segment.end = words[last].end;
            }
            last_speech_timestamp = segment.end;
        }
        result.push(words);
    }
    AlignedWords { words: result }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wt(word: &str, start: f64, end: f64) -> WordTiming {
        WordTiming {
            word: word.into(),
            tokens: vec![1],
            start,
            end,
            probability: 0.5,
            token_probs: vec![0.5],
        }
    }

    #[test]
    fn punctuation_merges_into_neighbours() {
        let mut a = vec![
            wt(" Hello", 0.0, 0.5),
            wt(",", 0.5, 0.6),
            wt(" \"", 0.6, 0.7),
            wt("world", 0.7, 1.0),
            wt(".", 1.0, 1.1),
        ];
        merge_punctuations(&mut a, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);
        let words: Vec<&str> = a.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(words, vec![" Hello,", "", "", " \"world.", ""]);
        assert_eq!(a[0].tokens.len(), 2);
        assert_eq!(a[3].tokens.len(), 3);
    }

    #[test]
    fn long_words_after_sentence_ends_are_clamped() {
        let mut a = vec![
            wt(" a", 0.0, 0.2),
            wt(".", 0.2, 0.4),
            wt(" b", 0.4, 3.0),
            wt(" c", 3.0, 3.2),
        ];
        let (median, max) = clamp_and_merge(&mut a);
        assert!((median - 0.2).abs() < 1e-9 && (max - 0.4).abs() < 1e-9);
        // " b" follows a sentence end: its start moves to end - max.
        assert!((a[2].start - 2.6).abs() < 1e-9);
    }

    #[test]
    fn round2_is_pythons_round() {
        assert_eq!(round2(1.005), 1.0); // 1.005 is 1.00499999... in binary
        assert_eq!(round2(2.675), 2.67);
        assert_eq!(round2(0.125), 0.12);
        assert_eq!(round2(1.23456), 1.23);
    }
}

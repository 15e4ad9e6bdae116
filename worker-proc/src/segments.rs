//! The pure rules of a window's decode, from faster-whisper 1.x: the
//! prompt (`get_prompt`), the split of generated tokens into timed segments
//! (`_split_segments_by_timestamps`), the compression ratio that flags
//! repetitive output (`get_compression_ratio`), and the exact decimal value
//! of f32 options.

use crate::tokenizer::WhisperTokenizer;

/// Seconds per timestamp token.
pub const TIME_PRECISION: f64 = 0.02;
/// Feature frames per encoder frame (the encoder's conv stride).
pub const INPUT_STRIDE: usize = 2;
/// Whisper's maximum decoder length (prompt + generated tokens).
pub const MAX_LENGTH: usize = 448;

/// faster-whisper's `get_prompt` (without prefix):
/// `[<|startofprev|> + first 223 hotword tokens + last 223 previous tokens]
/// + sot_sequence [+ <|notimestamps|>]`.
pub fn build_prompt(
    tokenizer: &WhisperTokenizer,
    previous_tokens: &[u32],
    hotword_tokens: &[u32],
    sot_sequence: &[u32],
    without_timestamps: bool,
) -> Vec<u32> {
    let mut prompt = Vec::with_capacity(MAX_LENGTH + sot_sequence.len() + 1);
    if !previous_tokens.is_empty() || !hotword_tokens.is_empty() {
        prompt.push(tokenizer.sot_prev);
        // faster-whisper's `get_prompt`: hotwords (cut to half the context)
        // before the previous text.
        prompt.extend_from_slice(&hotword_tokens[..hotword_tokens.len().min(MAX_LENGTH / 2 - 1)]);
        let keep = MAX_LENGTH / 2 - 1;
        prompt.extend_from_slice(&previous_tokens[previous_tokens.len().saturating_sub(keep)..]);
    }
    prompt.extend_from_slice(sot_sequence);
    if without_timestamps {
        prompt.push(tokenizer.no_timestamps);
    }
    prompt
}

/// A segment cut out of one window's tokens, before text decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSegment {
    /// Window start, frames.
    pub seek: usize,
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Its tokens, timestamps included.
    pub tokens: Vec<u32>,
}

/// faster-whisper's `_split_segments_by_timestamps`.
///
/// Returns the segments, the next `seek` and whether the tokens end with a
/// single timestamp (no speech after it).
pub fn split_by_timestamps(
    tokens: &[u32],
    timestamp_begin: u32,
    time_offset: f64,
    segment_size: usize,
    segment_duration: f64,
    seek: usize,
) -> (Vec<RawSegment>, usize, bool) {
    let is_ts = |t: u32| t >= timestamp_begin;
    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
    let consecutive: Vec<usize> = (1..n)
        .filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1]))
        .collect();
    let mut segments = Vec::new();
    let mut seek = seek;
    if !consecutive.is_empty() {
        let mut slices = consecutive;
        if single_timestamp_ending {
            slices.push(n);
        }
        let mut last_slice = 0;
        for &current in &slices {
            let sliced = &tokens[last_slice..current];
            let start_pos = sliced[0].saturating_sub(timestamp_begin) as f64;
            let end_pos = sliced[sliced.len() - 1].saturating_sub(timestamp_begin) as f64;
            segments.push(RawSegment {
                seek,
                start: time_offset + start_pos * TIME_PRECISION,
                end: time_offset + end_pos * TIME_PRECISION,
                tokens: sliced.to_vec(),
            });
            last_slice = current;
        }
        if single_timestamp_ending {
            seek += segment_size;
        } else {
            let last_pos = tokens[last_slice - 1].saturating_sub(timestamp_begin) as usize;
            seek += last_pos * INPUT_STRIDE;
        }
    } else {
        let mut duration = segment_duration;
        if let Some(&last) = tokens.iter().rev().find(|&&t| is_ts(t)) {
            if last != timestamp_begin {
                duration = (last - timestamp_begin) as f64 * TIME_PRECISION;
            }
        }
        segments.push(RawSegment {
            seek,
            start: time_offset,
            end: time_offset + duration,
            tokens: tokens.to_vec(),
        });
        seek += segment_size;
    }
    (segments, seek, single_timestamp_ending)
}

/// `len(text) / len(zlib.compress(text))`, as faster-whisper computes it
/// (zlib level 6, through the real zlib so the sizes match CPython's).
pub fn compression_ratio(text: &str) -> f64 {
    let bytes = text.as_bytes();
    bytes.len() as f64 / zlib_compressed_len(bytes).max(1) as f64
}

/// Size of `zlib.compress(src)` (level 6, zlib header and checksum).
fn zlib_compressed_len(src: &[u8]) -> usize {
    let src_len = src.len() as libz_sys::uLong;
    // SAFETY: compressBound is a pure function; compress2 writes at most
    // `dest_len` bytes into `dest`, which has exactly that capacity, and
    // reads `src_len` bytes from `src`.
    unsafe {
        let bound = libz_sys::compressBound(src_len);
        let mut dest = vec![0u8; bound as usize];
        let mut dest_len = bound;
        let rc = libz_sys::compress2(dest.as_mut_ptr(), &mut dest_len, src.as_ptr(), src_len, 6);
        if rc == libz_sys::Z_OK {
            dest_len as usize
        } else {
            // Only out-of-memory can fail here; an unknown size counts as
            // "incompressible", which never triggers a fallback.
            src.len().max(1)
        }
    }
}

/// The decimal value an f32 option was written as (`0.6f32` → `0.6f64`),
/// so thresholds compare exactly like faster-whisper's Python floats.
pub fn decimal(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(x as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcribe::tests::{toy_tokenizer, ts, NO_TS, SOT, SOT_PREV, TS0};

    #[test]
    fn split_on_consecutive_timestamps_seeks_to_the_last_complete_one() {
        // <|0.00|> a <|1.00|><|1.00|> b <|2.50|><|2.50|> c   (unfinished)
        let tokens = vec![ts(0.0), 0, ts(1.0), ts(1.0), 1, ts(2.5), ts(2.5), 2];
        let (segs, seek, single) = split_by_timestamps(&tokens, TS0, 10.0, 3000, 30.0, 1000);
        assert!(!single);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].tokens, vec![ts(0.0), 0, ts(1.0)]);
        assert!((segs[0].start - 10.0).abs() < 1e-9 && (segs[0].end - 11.0).abs() < 1e-9);
        assert_eq!(segs[1].tokens, vec![ts(1.0), 1, ts(2.5)]);
        assert!((segs[1].start - 11.0).abs() < 1e-9 && (segs[1].end - 12.5).abs() < 1e-9);
        assert!(segs.iter().all(|s| s.seek == 1000));
        // last complete timestamp 2.50 s = position 125 → 250 frames
        assert_eq!(seek, 1250);
    }

    #[test]
    fn single_timestamp_ending_consumes_the_whole_window() {
        // <|0.00|> a <|1.00|><|1.00|> b <|2.00|>   (ends on one timestamp)
        let tokens = vec![ts(0.0), 0, ts(1.0), ts(1.0), 1, ts(2.0)];
        let (segs, seek, single) = split_by_timestamps(&tokens, TS0, 0.0, 950, 9.5, 0);
        assert!(single);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[1].tokens, vec![ts(1.0), 1, ts(2.0)]);
        assert!((segs[1].end - 2.0).abs() < 1e-9);
        assert_eq!(seek, 950);
    }

    #[test]
    fn no_consecutive_timestamps_makes_one_segment() {
        // <|0.00|> a b <|4.00|>: one segment ending at the last timestamp.
        let tokens = vec![ts(0.0), 0, 1, ts(4.0)];
        let (segs, seek, single) = split_by_timestamps(&tokens, TS0, 30.0, 3000, 30.0, 3000);
        assert!(single);
        assert_eq!(segs.len(), 1);
        assert!((segs[0].start - 30.0).abs() < 1e-9 && (segs[0].end - 34.0).abs() < 1e-9);
        assert_eq!(seek, 6000);
        // No timestamps at all (without_timestamps): the window's duration.
        let (segs, seek, single) = split_by_timestamps(&[0, 1, 2], TS0, 0.0, 812, 8.12, 0);
        assert!(!single);
        assert_eq!(segs.len(), 1);
        assert!((segs[0].end - 8.12).abs() < 1e-9);
        assert_eq!(seek, 812);
        // Only <|0.00|> as timestamp: duration stays the window's.
        let (segs, _, _) = split_by_timestamps(&[ts(0.0), 0], TS0, 0.0, 500, 5.0, 0);
        assert!((segs[0].end - 5.0).abs() < 1e-9);
        // Nothing generated.
        let (segs, seek, single) = split_by_timestamps(&[], TS0, 0.0, 500, 5.0, 0);
        assert_eq!((segs.len(), seek, single), (1, 500, false));
        assert!(segs[0].tokens.is_empty());
    }

    #[test]
    fn hotwords_come_after_startofprev_and_before_the_previous_text() {
        let tok = toy_tokenizer();
        assert_eq!(
            build_prompt(&tok, &[], &[2, 0], &[SOT], false),
            vec![SOT_PREV, 2, 0, SOT],
            "hotwords alone open the previous-text part"
        );
        assert_eq!(
            build_prompt(&tok, &[1], &[2], &[SOT], true),
            vec![SOT_PREV, 2, 1, SOT, NO_TS]
        );
        let many: Vec<u32> = vec![2; 400];
        assert_eq!(
            build_prompt(&tok, &[], &many, &[SOT], false).len(),
            1 + 223 + 1
        );
    }

    #[test]
    fn prompt_keeps_the_last_223_previous_tokens() {
        let tok = toy_tokenizer();
        assert_eq!(build_prompt(&tok, &[], &[], &[SOT], false), vec![SOT]);
        assert_eq!(build_prompt(&tok, &[], &[], &[SOT], true), vec![SOT, NO_TS]);
        assert_eq!(
            build_prompt(&tok, &[0, 1], &[], &[SOT, 5, 7], false),
            vec![SOT_PREV, 0, 1, SOT, 5, 7]
        );
        let previous: Vec<u32> = (0..300).map(|i| i % 3).collect();
        let p = build_prompt(&tok, &previous, &[], &[SOT], false);
        assert_eq!(p.len(), 1 + 223 + 1);
        assert_eq!(p[0], SOT_PREV);
        assert_eq!(&p[1..224], &previous[77..]);
        assert_eq!(p[224], SOT);
    }

    #[test]
    fn compression_ratio_matches_python_zlib() {
        // (text, len(zlib.compress(text))) from CPython's zlib.
        let cases: [(&str, usize); 4] = [
            ("Hello world.", 20),
            ("The quick brown fox jumps over the lazy dog. Speech recognition turns spoken words into written text.", 90),
            ("Good morning everyone, and welcome to the weekly project meeting. Today we will review the status of the speech recognition service.", 107),
            (&"the same words again and again ".repeat(12), 39),
        ];
        assert_eq!(compression_ratio(""), 0.0);
        for (text, compressed) in cases {
            let text = text.trim();
            let want = text.len() as f64 / compressed as f64;
            assert!(
                (compression_ratio(text) - want).abs() < 1e-12,
                "{text:?}: {} vs {want}",
                compression_ratio(text)
            );
        }
    }

    #[test]
    fn decimal_restores_python_floats() {
        assert_eq!(decimal(0.6), 0.6f64);
        assert_eq!(decimal(2.4), 2.4f64);
        assert_eq!(decimal(-1.0), -1.0f64);
    }
}

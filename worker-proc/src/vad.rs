//! Voice-activity detection: faster-whisper's `vad_filter`, on earshot.
//!
//! With `DecodeOptions::vad_filter`, a job is decoded in four steps, each a
//! port of faster-whisper 1.2's `faster_whisper/vad.py` and
//! `restore_speech_timestamps`:
//! 1. [`speech_probabilities`]: a speech probability for every 16 ms frame
//!    (256 samples at 16 kHz), from [earshot](https://crates.io/crates/earshot),
//!    a small pure-Rust VAD network compiled into the binary: nothing to
//!    download, ship or load at run time. faster-whisper runs Silero VAD v6
//!    on 32 ms frames through onnxruntime instead; on the long-form test
//!    clips both give the same speech chunks to within ~0.1 s through the
//!    rules below (see `tests/fixtures/longform/README.md`).
//! 2. [`speech_timestamps`]: `get_speech_timestamps`, the rules that turn
//!    frame probabilities into padded speech chunks (threshold with
//!    hysteresis, minimum silence, minimum speech, maximum chunk length,
//!    padding), with the same [`VadOptions`] and defaults.
//! 3. [`collect_chunks`]: the speech chunks, concatenated (silence dropped);
//!    this audio is what the seek loop decodes.
//! 4. [`SpeechTimestampsMap`]: maps times in the concatenated audio back to
//!    the original timeline: every time is shifted by the silence removed
//!    before its chunk; a word's start and end are resolved in the chunk of
//!    the word's middle, so a word never straddles a cut
//!    ([`SpeechTimestampsMap::restore_segment`]).
//!
//! Silence-only audio yields no chunk and so an empty transcript, which is
//! how VAD stops Whisper's hallucinations on silence ("You").

use asr_ipc::{VadOptions, WorkerError};

use crate::segments::decimal;
use crate::words::{round2, WordTiming};

/// Samples per VAD frame (earshot's fixed frame: 16 ms at 16 kHz).
pub const FRAME_SAMPLES: usize = 256;

/// A speech chunk, in samples: `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeechChunk {
    /// First sample.
    pub start: usize,
    /// One past the last sample.
    pub end: usize,
}

/// Checks the VAD options of a job.
pub fn validate(opts: &VadOptions) -> Result<(), WorkerError> {
    let bad = |m: String| Err(WorkerError::InvalidOptions(m));
    if !opts.threshold.is_finite() || !(0.0..=1.0).contains(&opts.threshold) {
        return bad(format!(
            "vad threshold must be between 0 and 1, got {}",
            opts.threshold
        ));
    }
    if let Some(t) = opts.neg_threshold {
        if !t.is_finite() || !(0.0..=1.0).contains(&t) {
            return bad(format!(
                "vad neg_threshold must be between 0 and 1, got {t}"
            ));
        }
    }
    if let Some(s) = opts.max_speech_duration_s {
        if !s.is_finite() || s <= 0.0 {
            return bad(format!(
                "vad max_speech_duration_s must be a number > 0, got {s}"
            ));
        }
    }
    Ok(())
}

/// earshot's speech probability of every 256-sample frame of 16 kHz audio
/// (the last frame zero-padded). Samples are clamped to [-1, 1].
pub fn speech_probabilities(samples: &[f32]) -> Vec<f32> {
    let mut detector = earshot::Detector::default_boxed();
    let mut frame = [0.0f32; FRAME_SAMPLES];
    samples
        .chunks(FRAME_SAMPLES)
        .map(|chunk| {
            frame.fill(0.0);
            for (f, s) in frame.iter_mut().zip(chunk) {
                *f = s.clamp(-1.0, 1.0);
            }
            detector.predict_f32(&frame)
        })
        .collect()
}

/// Speech chunks of `samples` (16 kHz): [`speech_probabilities`], then
/// [`speech_chunks_from_probabilities`].
pub fn speech_timestamps(samples: &[f32], opts: &VadOptions) -> Vec<SpeechChunk> {
    let probs = speech_probabilities(samples);
    speech_chunks_from_probabilities(
        &probs,
        FRAME_SAMPLES,
        samples.len(),
        asr_ipc::SAMPLE_RATE,
        opts,
    )
}

/// faster-whisper's `get_speech_timestamps` after the model: frame
/// probabilities (`window` samples each) to padded speech chunks of a clip
/// of `n_samples` samples.
pub fn speech_chunks_from_probabilities(
    probs: &[f32],
    window: usize,
    n_samples: usize,
    sampling_rate: u32,
    opts: &VadOptions,
) -> Vec<SpeechChunk> {
    let sr = sampling_rate as f64;
    let threshold = decimal(opts.threshold);
    let neg_threshold = opts
        .neg_threshold
        .map(decimal)
        .unwrap_or_else(|| (threshold - 0.15).max(0.01));
    let min_speech_samples = sr * opts.min_speech_duration_ms as f64 / 1000.0;
    let speech_pad_samples = sr * opts.speech_pad_ms as f64 / 1000.0;
    let max_speech_samples = match opts.max_speech_duration_s {
        Some(s) => sr * decimal(s) - window as f64 - 2.0 * speech_pad_samples,
        None => f64::INFINITY,
    };
    let min_silence_samples = sr * opts.min_silence_duration_ms as f64 / 1000.0;
    let min_silence_samples_at_max_speech = sr * 98.0 / 1000.0;

    let mut triggered = false;
    let mut speeches: Vec<SpeechChunk> = Vec::new();
    // `current_speech`: its start once speech began (faster-whisper's dict).
    let mut current: Option<usize> = None;
    // A potential end of speech (0 = none), to tolerate short silences.
    let mut temp_end = 0usize;
    // Potential split points for when the maximum length is reached.
    let mut prev_end = 0usize;
    let mut next_start = 0usize;

    for (i, &p) in probs.iter().enumerate() {
        let p = p as f64;
        let pos = window * i;
        if p >= threshold && temp_end != 0 {
            temp_end = 0;
            if next_start < prev_end {
                next_start = pos;
            }
        }
        if p >= threshold && !triggered {
            triggered = true;
            current = Some(pos);
            continue;
        }
        if triggered {
            if let Some(start) = current {
                if (pos as f64 - start as f64) > max_speech_samples {
                    if prev_end != 0 {
                        speeches.push(SpeechChunk {
                            start,
                            end: prev_end,
                        });
                        // Previously reached silence and still not speech.
                        if next_start < prev_end {
                            current = None;
                            triggered = false;
                        } else {
                            current = Some(next_start);
                        }
                        prev_end = 0;
                        next_start = 0;
                        temp_end = 0;
                    } else {
                        speeches.push(SpeechChunk { start, end: pos });
                        current = None;
                        prev_end = 0;
                        next_start = 0;
                        temp_end = 0;
                        triggered = false;
                        continue;
                    }
                }
            }
        }
        if p < neg_threshold && triggered {
            if temp_end == 0 {
                temp_end = pos;
            }
            // Remember silences long enough to split at, should the chunk
            // grow past the maximum.
            if (pos - temp_end) as f64 > min_silence_samples_at_max_speech {
                prev_end = temp_end;
            }
            if ((pos - temp_end) as f64) < min_silence_samples {
                continue;
            }
            if let Some(start) = current {
                if (temp_end as f64 - start as f64) > min_speech_samples {
                    speeches.push(SpeechChunk {
                        start,
                        end: temp_end,
                    });
                }
            }
            current = None;
            prev_end = 0;
            next_start = 0;
            temp_end = 0;
            triggered = false;
        }
    }
    if let Some(start) = current {
        if (n_samples as f64 - start as f64) > min_speech_samples {
            speeches.push(SpeechChunk {
                start,
                end: n_samples,
            });
        }
    }

    // Padding: split short gaps between chunks, pad the others.
    let n = speeches.len();
    for i in 0..n {
        if i == 0 {
            speeches[0].start = (speeches[0].start as f64 - speech_pad_samples).max(0.0) as usize;
        }
        if i + 1 < n {
            let silence = speeches[i + 1].start as i64 - speeches[i].end as i64;
            if (silence as f64) < 2.0 * speech_pad_samples {
                let half = silence.div_euclid(2);
                speeches[i].end = (speeches[i].end as i64 + half).max(0) as usize;
                speeches[i + 1].start = (speeches[i + 1].start as i64 - half).max(0) as usize;
            } else {
                speeches[i].end =
                    (speeches[i].end as f64 + speech_pad_samples).min(n_samples as f64) as usize;
                speeches[i + 1].start =
                    (speeches[i + 1].start as f64 - speech_pad_samples).max(0.0) as usize;
            }
        } else {
            speeches[i].end =
                (speeches[i].end as f64 + speech_pad_samples).min(n_samples as f64) as usize;
        }
    }
    speeches
}

/// faster-whisper's `collect_chunks` (without a maximum duration): the
/// chunks' audio, concatenated.
pub fn collect_chunks(samples: &[f32], chunks: &[SpeechChunk]) -> Vec<f32> {
    let total: usize = chunks.iter().map(|c| c.end.saturating_sub(c.start)).sum();
    let mut out = Vec::with_capacity(total);
    for c in chunks {
        let end = c.end.min(samples.len());
        let start = c.start.min(end);
        out.extend_from_slice(&samples[start..end]);
    }
    out
}

/// faster-whisper's `SpeechTimestampsMap`: restores times in the
/// concatenated speech to the original timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechTimestampsMap {
    sampling_rate: f64,
    /// Each chunk's end, in samples of the concatenated audio.
    chunk_end_sample: Vec<i64>,
    /// Seconds of silence removed before each chunk.
    total_silence_before: Vec<f64>,
}

impl SpeechTimestampsMap {
    /// The map of `chunks` (in order, not overlapping) at `sampling_rate`.
    pub fn new(chunks: &[SpeechChunk], sampling_rate: u32) -> Self {
        let sr = sampling_rate as f64;
        let mut previous_end = 0i64;
        let mut silent_samples = 0i64;
        let mut chunk_end_sample = Vec::with_capacity(chunks.len());
        let mut total_silence_before = Vec::with_capacity(chunks.len());
        for c in chunks {
            silent_samples += c.start as i64 - previous_end;
            previous_end = c.end as i64;
            chunk_end_sample.push(c.end as i64 - silent_samples);
            total_silence_before.push(silent_samples as f64 / sr);
        }
        Self {
            sampling_rate: sr,
            chunk_end_sample,
            total_silence_before,
        }
    }

    /// The chunk a time of the concatenated audio falls in; with `is_end`, a
    /// time exactly at a chunk's end belongs to that chunk (not the next).
    pub fn chunk_index(&self, time: f64, is_end: bool) -> usize {
        let sample = (time * self.sampling_rate) as i64;
        if is_end {
            if let Some(i) = self.chunk_end_sample.iter().position(|&e| e == sample) {
                return i;
            }
        }
        let after = self.chunk_end_sample.partition_point(|&e| e <= sample);
        after.min(self.chunk_end_sample.len().saturating_sub(1))
    }

    /// The original time of `time` (seconds of the concatenated audio),
    /// rounded to 10 ms, in `chunk` or else in the chunk found by
    /// [`Self::chunk_index`].
    pub fn original_time(&self, time: f64, chunk: Option<usize>, is_end: bool) -> f64 {
        let i = chunk.unwrap_or_else(|| self.chunk_index(time, is_end));
        let before = self.total_silence_before.get(i).copied().unwrap_or(0.0);
        round2(before + time)
    }

    /// faster-whisper's `restore_speech_timestamps` for one segment: with
    /// words, each word is mapped within the chunk of its middle and the
    /// segment spans its words; without, the start and end are mapped on
    /// their own (the end as an end). Returns the segment's start and end.
    pub fn restore_segment(&self, start: f64, end: f64, words: &mut [WordTiming]) -> (f64, f64) {
        if words.is_empty() {
            return (
                self.original_time(start, None, false),
                self.original_time(end, None, true),
            );
        }
        for w in words.iter_mut() {
            let middle = (w.start + w.end) / 2.0;
            let chunk = self.chunk_index(middle, false);
            w.start = self.original_time(w.start, Some(chunk), false);
            w.end = self.original_time(w.end, Some(chunk), false);
        }
        (words[0].start, words[words.len() - 1].end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SR: u32 = 16_000;

    fn opts() -> VadOptions {
        VadOptions::default()
    }

    /// Frame probabilities from (seconds, probability) runs at 512-sample
    /// frames (Silero's), for comparison with faster-whisper's arithmetic.
    fn probs(runs: &[(f64, f32)], window: usize) -> (Vec<f32>, usize) {
        let mut p = Vec::new();
        for &(secs, prob) in runs {
            let frames = (secs * SR as f64 / window as f64).round() as usize;
            p.extend(std::iter::repeat_n(prob, frames));
        }
        let n = p.len() * window;
        (p, n)
    }

    fn secs(chunks: &[SpeechChunk]) -> Vec<(f64, f64)> {
        chunks
            .iter()
            .map(|c| (c.start as f64 / SR as f64, c.end as f64 / SR as f64))
            .collect()
    }

    #[test]
    fn short_pauses_are_kept_and_long_ones_cut_and_padded() {
        // 1 s silence, 3 s speech, 1 s pause (< 2 s: kept), 2 s speech,
        // 5 s silence (cut), 2 s speech, 1 s silence (< 2 s: the last chunk
        // runs to the end of the audio).
        let (p, n) = probs(
            &[
                (1.0, 0.0),
                (3.0, 0.9),
                (1.0, 0.1),
                (2.0, 0.9),
                (5.0, 0.0),
                (2.0, 0.9),
                (1.0, 0.0),
            ],
            512,
        );
        let chunks = speech_chunks_from_probabilities(&p, 512, n, SR, &opts());
        // Starts and ends snap to 512-sample frames; 0.4 s of padding.
        let got = secs(&chunks);
        assert_eq!(got.len(), 2, "{got:?}");
        let close = |a: f64, b: f64| (a - b).abs() < 0.04;
        assert!(close(got[0].0, 0.6) && close(got[0].1, 7.4), "{got:?}");
        assert!(close(got[1].0, 11.6) && close(got[1].1, 15.0), "{got:?}");
    }

    #[test]
    fn matches_faster_whisper_on_a_hand_computed_case() {
        // Frames of 512 samples: speech frames 10..20 and 100..110, 200
        // frames in all. faster-whisper (min_silence 2000 ms = 32000
        // samples, pad 6400): chunk 1 = [5120, 10240) ends at temp_end =
        // 10240 once 32000 samples of silence passed; chunk 2 = [51200,
        // 56320) likewise (90 silent frames = 46080 samples follow it).
        // Padding: first start 5120 - 6400 -> 0; the gap 40960 >= 12800, so
        // 10240 + 6400 = 16640 and 51200 - 6400 = 44800; last end 62720.
        let mut p = vec![0.0f32; 200];
        for x in &mut p[10..20] {
            *x = 0.8;
        }
        for x in &mut p[100..110] {
            *x = 0.8;
        }
        let chunks = speech_chunks_from_probabilities(&p, 512, 200 * 512, SR, &opts());
        assert_eq!(
            chunks,
            vec![
                SpeechChunk {
                    start: 0,
                    end: 16640
                },
                SpeechChunk {
                    start: 44800,
                    end: 62720
                }
            ]
        );
    }

    #[test]
    fn hysteresis_between_the_thresholds_keeps_speech_going() {
        // 0.4 is below 0.5 (no start) but above 0.35 (no end).
        let mut p = vec![0.4f32; 50];
        p[0] = 0.0;
        p[5] = 0.9;
        let o = VadOptions {
            min_silence_duration_ms: 100,
            speech_pad_ms: 0,
            ..opts()
        };
        let chunks = speech_chunks_from_probabilities(&p, 512, 50 * 512, SR, &o);
        assert_eq!(
            chunks,
            vec![SpeechChunk {
                start: 5 * 512,
                end: 50 * 512
            }]
        );
        // With neg_threshold above 0.4, the 0.4 frames end it.
        let o = VadOptions {
            neg_threshold: Some(0.45),
            ..o
        };
        let chunks = speech_chunks_from_probabilities(&p, 512, 50 * 512, SR, &o);
        assert_eq!(
            chunks,
            vec![SpeechChunk {
                start: 5 * 512,
                end: 6 * 512
            }]
        );
    }

    #[test]
    fn short_speech_is_dropped_and_close_chunks_share_the_gap() {
        let mut p = vec![0.0f32; 400];
        p[10] = 0.9; // one frame of 512 samples: 32 ms
        for x in &mut p[100..200] {
            *x = 0.9;
        }
        for x in &mut p[310..330] {
            *x = 0.9;
        }
        let o = VadOptions {
            min_speech_duration_ms: 100,
            min_silence_duration_ms: 500,
            ..opts()
        };
        let chunks = speech_chunks_from_probabilities(&p, 512, 400 * 512, SR, &o);
        // The 32 ms blip is gone; the two real chunks are padded by 6400.
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].start, 100 * 512 - 6400);
        assert_eq!(chunks[1].end, 330 * 512 + 6400);
        // A gap under 2 x 400 ms is split in the middle instead.
        let mut p = vec![0.0f32; 100];
        for x in &mut p[10..30] {
            *x = 0.9;
        }
        for x in &mut p[50..70] {
            *x = 0.9;
        }
        let o = VadOptions {
            min_silence_duration_ms: 300,
            ..opts()
        };
        let chunks = speech_chunks_from_probabilities(&p, 512, 100 * 512, SR, &o);
        assert_eq!(chunks.len(), 2);
        // Gap 30*512..50*512 = 10240 samples < 12800: each side gets 5120.
        assert_eq!(chunks[0].end, 30 * 512 + 5120);
        assert_eq!(chunks[1].start, 50 * 512 - 5120);
        assert_eq!(chunks[0].end, chunks[1].start);
    }

    #[test]
    fn long_speech_is_split_at_a_silence_or_at_the_maximum() {
        // 20 s of speech with a 0.2 s dip at 8 s, max 10 s: split at the dip.
        let mut p = vec![0.9f32; 625];
        for x in &mut p[250..256] {
            *x = 0.1;
        }
        let o = VadOptions {
            max_speech_duration_s: Some(10.0),
            speech_pad_ms: 0,
            ..opts()
        };
        let chunks = speech_chunks_from_probabilities(&p, 512, 625 * 512, SR, &o);
        assert_eq!(
            chunks[0],
            SpeechChunk {
                start: 0,
                end: 250 * 512
            }
        );
        assert_eq!(chunks[1].start, 256 * 512);
        // Without any dip it is cut hard just before the maximum.
        let p = vec![0.9f32; 625];
        let chunks = speech_chunks_from_probabilities(&p, 512, 625 * 512, SR, &o);
        assert!(chunks.len() >= 2);
        assert!(chunks.iter().all(|c| c.end - c.start <= 10 * SR as usize));
    }

    #[test]
    fn silence_and_empty_audio_have_no_chunks() {
        assert!(speech_timestamps(&[], &opts()).is_empty());
        assert!(speech_timestamps(&vec![0.0; 16_000 * 5], &opts()).is_empty());
        let p = vec![0.1f32; 100];
        assert!(speech_chunks_from_probabilities(&p, 256, 25_600, SR, &opts()).is_empty());
    }

    #[test]
    fn probabilities_cover_every_frame_and_tolerate_out_of_range_samples() {
        let samples = vec![1.5f32; 1000];
        let p = speech_probabilities(&samples);
        assert_eq!(p.len(), 4); // 3 full frames + one padded
        assert!(p.iter().all(|x| (0.0..=1.0).contains(x)));
    }

    #[test]
    fn chunks_are_concatenated() {
        let samples: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let chunks = [
            SpeechChunk { start: 10, end: 20 },
            SpeechChunk { start: 50, end: 55 },
            SpeechChunk {
                start: 98,
                end: 200,
            },
        ];
        let out = collect_chunks(&samples, &chunks);
        assert_eq!(out.len(), 10 + 5 + 2);
        assert_eq!(out[9], 19.0);
        assert_eq!(out[10], 50.0);
        assert_eq!(out[16], 99.0);
    }

    fn word(start: f64, end: f64) -> WordTiming {
        WordTiming {
            word: " w".into(),
            tokens: vec![],
            start,
            end,
            probability: 0.9,
            token_probs: vec![],
        }
    }

    #[test]
    fn timestamps_map_back_like_faster_whisper() {
        // Chunks [1 s, 3 s) and [10 s, 12 s): 1 s of silence removed before
        // the first, 8 s in all before the second; in the concatenated audio
        // the first ends at 2 s and the second at 4 s.
        let chunks = [
            SpeechChunk {
                start: 16_000,
                end: 48_000,
            },
            SpeechChunk {
                start: 160_000,
                end: 192_000,
            },
        ];
        let map = SpeechTimestampsMap::new(&chunks, SR);
        assert_eq!(map.chunk_end_sample, vec![32_000, 64_000]);
        assert_eq!(map.total_silence_before, vec![1.0, 8.0]);
        assert_eq!(map.original_time(0.0, None, false), 1.0);
        assert_eq!(map.original_time(1.5, None, false), 2.5);
        // Exactly at the first chunk's end: a start goes to the next chunk,
        // an end stays in the first.
        assert_eq!(map.original_time(2.0, None, false), 10.0);
        assert_eq!(map.original_time(2.0, None, true), 3.0);
        assert_eq!(map.original_time(3.337, None, false), 11.34);
        // Past the last chunk: the last chunk's shift.
        assert_eq!(map.original_time(9.0, None, true), 17.0);

        // Without words: start and end mapped on their own.
        let (s, e) = map.restore_segment(1.0, 2.0, &mut []);
        assert_eq!((s, e), (2.0, 3.0));
        // A segment across the cut, without words, stretches over the gap.
        let (s, e) = map.restore_segment(1.0, 3.0, &mut []);
        assert_eq!((s, e), (2.0, 11.0));
        // With words: each word in the chunk of its middle; a word whose
        // middle is past the cut moves wholly to the second chunk.
        let mut words = vec![word(1.0, 1.5), word(1.9, 2.3), word(2.5, 2.9)];
        let (s, e) = map.restore_segment(1.0, 2.9, &mut words);
        assert_eq!((words[0].start, words[0].end), (2.0, 2.5));
        assert_eq!((words[1].start, words[1].end), (9.9, 10.3));
        assert_eq!((words[2].start, words[2].end), (10.5, 10.9));
        assert_eq!((s, e), (2.0, 10.9));
    }

    #[test]
    fn restored_times_are_monotonic() {
        let chunks = [
            SpeechChunk {
                start: 3_000,
                end: 40_000,
            },
            SpeechChunk {
                start: 90_000,
                end: 91_000,
            },
            SpeechChunk {
                start: 200_000,
                end: 330_000,
            },
        ];
        let map = SpeechTimestampsMap::new(&chunks, SR);
        let mut last = f64::MIN;
        for i in 0..2000 {
            let t = i as f64 * 0.005;
            let o = map.original_time(t, None, false);
            assert!(o >= last, "{t}: {o} < {last}");
            last = o;
        }
    }

    #[test]
    fn invalid_options_are_refused() {
        assert!(validate(&opts()).is_ok());
        for o in [
            VadOptions {
                threshold: f32::NAN,
                ..opts()
            },
            VadOptions {
                threshold: 1.5,
                ..opts()
            },
            VadOptions {
                neg_threshold: Some(-0.1),
                ..opts()
            },
            VadOptions {
                max_speech_duration_s: Some(0.0),
                ..opts()
            },
            VadOptions {
                max_speech_duration_s: Some(f32::INFINITY),
                ..opts()
            },
        ] {
            assert!(matches!(validate(&o), Err(WorkerError::InvalidOptions(_))));
        }
    }
}

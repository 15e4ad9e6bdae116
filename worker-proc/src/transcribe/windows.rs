//! The windows of batched long-form decoding: where a clip is cut.
//!
//! With `vad_filter`, the speech chunks (already concatenated by
//! [`crate::vad::collect_chunks`]) are merged in order while their total
//! stays within one window of 30 s, as faster-whisper's
//! `collect_chunks(max_duration=30)` does for its `BatchedInferencePipeline`:
//! a window never cuts a chunk, so it never cuts speech. Without VAD the
//! clip is cut into consecutive 30 s windows (the last one shorter).
//!
//! Window bounds are samples of the audio the pipeline decodes (the whole
//! clip, or its speech concatenated); [`crate::vad::SpeechTimestampsMap`]
//! maps times in the latter back to the original timeline.

use crate::vad::SpeechChunk;

/// A window: samples `start..end` of the decoded audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First sample.
    pub start: usize,
    /// One past the last sample.
    pub end: usize,
}

impl Window {
    /// Its length in samples.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether it holds no sample.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Speech chunks (in the original timeline, in order) merged into windows
/// of at most `max_samples` of the concatenated speech. A chunk longer than
/// a window (possible only when the VAD's `max_speech_duration_s` allows
/// it) is cut into whole windows.
pub fn merge_chunks(chunks: &[SpeechChunk], max_samples: usize) -> Vec<Window> {
    let max_samples = max_samples.max(1);
    let mut windows = Vec::new();
    let mut offset = 0usize; // start of the current chunk in the speech
    let mut current: Option<Window> = None;
    for c in chunks {
        let len = c.end.saturating_sub(c.start);
        if len == 0 {
            continue;
        }
        match current {
            Some(w) if w.len() + len <= max_samples => {
                current = Some(Window {
                    start: w.start,
                    end: w.end + len,
                });
            }
            _ => {
                windows.extend(current.take());
                let mut start = offset;
                let end = offset + len;
                while end - start > max_samples {
                    windows.push(Window {
                        start,
                        end: start + max_samples,
                    });
                    start += max_samples;
                }
                current = Some(Window { start, end });
            }
        }
        offset += len;
    }
    windows.extend(current);
    windows
}

/// Consecutive windows of `max_samples` over `n_samples` (the last one
/// holds the rest).
pub fn fixed_windows(n_samples: usize, max_samples: usize) -> Vec<Window> {
    let max_samples = max_samples.max(1);
    (0..n_samples)
        .step_by(max_samples)
        .map(|start| Window {
            start,
            end: (start + max_samples).min(n_samples),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(start: usize, end: usize) -> SpeechChunk {
        SpeechChunk { start, end }
    }

    fn w(start: usize, end: usize) -> Window {
        Window { start, end }
    }

    #[test]
    fn chunks_merge_while_they_fit_one_window() {
        // Speech lengths 10, 15, 8, 20 (max 30): [10+15] [8+20].
        let chunks = [
            chunk(5, 15),
            chunk(20, 35),
            chunk(100, 108),
            chunk(200, 220),
        ];
        assert_eq!(merge_chunks(&chunks, 30), vec![w(0, 25), w(25, 53)]);
        // Exactly full still fits.
        let chunks = [chunk(0, 10), chunk(50, 70)];
        assert_eq!(merge_chunks(&chunks, 30), vec![w(0, 30)]);
        assert_eq!(merge_chunks(&[], 30), vec![]);
        // Empty chunks are ignored.
        assert_eq!(merge_chunks(&[chunk(7, 7), chunk(8, 9)], 30), vec![w(0, 1)]);
    }

    #[test]
    fn a_chunk_longer_than_a_window_is_cut_into_whole_windows() {
        let chunks = [chunk(0, 10), chunk(20, 95), chunk(100, 105)];
        assert_eq!(
            merge_chunks(&chunks, 30),
            vec![w(0, 10), w(10, 40), w(40, 70), w(70, 90)]
        );
    }

    #[test]
    fn fixed_windows_cover_the_clip() {
        assert_eq!(fixed_windows(70, 30), vec![w(0, 30), w(30, 60), w(60, 70)]);
        assert_eq!(fixed_windows(30, 30), vec![w(0, 30)]);
        assert_eq!(fixed_windows(0, 30), vec![]);
    }
}

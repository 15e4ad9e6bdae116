//! Streaming turn detection for `server_vad`: earshot's speech probability
//! for every 16 ms frame (256 samples at 16 kHz, the same network the
//! worker's `vad_filter` uses), turned into start and stop of speech with
//! OpenAI's parameters.
//!
//! Rules (frame = 16 ms):
//! - speech starts after [`MIN_SPEECH_MS`] of consecutive frames at or
//!   above `threshold`, at the first of them (so a click does not open an
//!   utterance);
//! - speech stops after `silence_duration_ms` of consecutive frames below
//!   `threshold - 0.15` (hysteresis, as faster-whisper's VAD), at the end
//!   of the last speech frame.
//!
//! Positions are sample offsets in the session's 16 kHz stream.

use super::protocol::VadParams;

/// Samples per earshot frame.
pub const FRAME: usize = 256;

/// Speech shorter than this does not start an utterance.
pub const MIN_SPEECH_MS: u64 = 64;

/// A change of turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Speech started at this sample.
    Started(u64),
    /// Speech stopped at this sample (detected `silence_duration_ms` later).
    Stopped(u64),
}

/// The streaming detector of one session.
pub struct TurnDetector {
    detector: Box<earshot::Detector>,
    params: VadParams,
    pending: Vec<i16>,
    /// Samples consumed by whole frames so far.
    position: u64,
    speaking: bool,
    /// First sample of the current run of speech frames (not yet speaking).
    run_start: Option<u64>,
    run_frames: u64,
    /// End of the last speech frame, and silent frames since.
    last_speech_end: u64,
    silent_frames: u64,
}

impl TurnDetector {
    /// A detector with `params`, in silence.
    pub fn new(params: VadParams) -> Self {
        Self {
            detector: earshot::Detector::default_boxed(),
            params,
            pending: Vec::with_capacity(FRAME),
            position: 0,
            speaking: false,
            run_start: None,
            run_frames: 0,
            last_speech_end: 0,
            silent_frames: 0,
        }
    }

    /// New parameters (a `session.update`), keeping the state.
    pub fn set_params(&mut self, params: VadParams) {
        self.params = params;
    }

    /// Whether speech is going on.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// Silence since the last speech frame of the current turn, in ms
    /// (0 outside a turn).
    pub fn trailing_silence_ms(&self) -> u64 {
        if self.speaking {
            self.silent_frames * FRAME as u64 * 1000 / u64::from(asr_ipc::SAMPLE_RATE)
        } else {
            0
        }
    }

    /// Forgets the current turn (the buffer was cleared or committed by
    /// the client).
    pub fn reset_turn(&mut self) {
        self.speaking = false;
        self.run_start = None;
        self.run_frames = 0;
        self.silent_frames = 0;
    }

    /// Feeds 16 kHz samples; returns the turns they complete, in order.
    pub fn push(&mut self, samples: &[i16]) -> Vec<Turn> {
        let mut turns = Vec::new();
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (FRAME - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == FRAME {
                let p = self.detector.predict_i16(&self.pending);
                self.pending.clear();
                let start = self.position;
                self.position += FRAME as u64;
                if let Some(t) = self.frame(p, start) {
                    turns.push(t);
                }
            }
        }
        turns
    }

    fn frame(&mut self, p: f32, start: u64) -> Option<Turn> {
        let ms_per_frame = FRAME as u64 * 1000 / u64::from(asr_ipc::SAMPLE_RATE);
        let threshold = self.params.threshold;
        let neg = (threshold - 0.15).max(0.01);
        if self.speaking {
            if p >= threshold {
                self.last_speech_end = start + FRAME as u64;
                self.silent_frames = 0;
            } else if p < neg {
                self.silent_frames += 1;
                if self.silent_frames * ms_per_frame >= u64::from(self.params.silence_duration_ms) {
                    self.reset_turn();
                    return Some(Turn::Stopped(self.last_speech_end));
                }
            }
            return None;
        }
        if p >= threshold {
            let run_start = *self.run_start.get_or_insert(start);
            self.run_frames += 1;
            if self.run_frames * ms_per_frame >= MIN_SPEECH_MS {
                self.speaking = true;
                self.run_start = None;
                self.run_frames = 0;
                self.silent_frames = 0;
                self.last_speech_end = start + FRAME as u64;
                return Some(Turn::Started(run_start));
            }
        } else {
            self.run_start = None;
            self.run_frames = 0;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(secs: f64) -> Vec<i16> {
        // A voiced-like signal: a 150 Hz buzz with harmonics. earshot is a
        // speech model, so the real-speech cases are in tests/realtime.rs;
        // here only silence is certain.
        (0..(secs * 16_000.0) as usize)
            .map(|i| {
                let t = i as f64 / 16_000.0;
                let s: f64 = (1..8)
                    .map(|h| (2.0 * std::f64::consts::PI * 150.0 * h as f64 * t).sin() / h as f64)
                    .sum();
                (s * 6000.0) as i16
            })
            .collect()
    }

    #[test]
    fn silence_never_starts_a_turn() {
        let mut d = TurnDetector::new(VadParams::default());
        assert!(d.push(&vec![0; 16_000 * 3]).is_empty());
        assert!(!d.speaking());
    }

    #[test]
    fn frames_are_counted_across_uneven_chunks() {
        let mut d = TurnDetector::new(VadParams::default());
        for chunk in tone(0.5).chunks(100) {
            d.push(chunk);
        }
        assert_eq!(d.position, (8000 / FRAME * FRAME) as u64);
        assert_eq!(d.pending.len(), 8000 % FRAME);
    }
}

//! Streaming PCM16 resampling to 16 kHz for realtime sessions (OpenAI
//! clients send 24 kHz): [`crate::audio::StreamResampler`] (the one the
//! uploads use) on 20 ms input chunks, so the 16 kHz stream stays aligned
//! with the input (the VAD's timestamps are the client's) and little audio
//! waits in it. 16 kHz input passes through untouched.

use crate::audio::{AudioError, StreamResampler as Resampler};

/// Input rate to 16 kHz, in pieces of any length.
pub struct StreamResampler {
    rate: u32,
    /// `None` at 16 kHz.
    inner: Option<Resampler>,
    scratch: Vec<f32>,
}

impl StreamResampler {
    /// A resampler from `rate` (a rate of [`super::protocol::RATES`]).
    pub fn new(rate: u32) -> Result<Self, AudioError> {
        let inner = if rate == asr_ipc::SAMPLE_RATE {
            None
        } else {
            Some(Resampler::with_chunk(rate, rate as usize / 50)?)
        };
        Ok(Self {
            rate,
            inner,
            scratch: Vec::new(),
        })
    }

    /// The input rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Resamples `pcm` (16-bit, mono) and appends the 16 kHz output that is
    /// ready to `sink`.
    pub fn push(&mut self, pcm: &[i16], sink: &mut Vec<i16>) -> Result<(), AudioError> {
        let Some(inner) = self.inner.as_mut() else {
            sink.extend_from_slice(pcm);
            return Ok(());
        };
        self.scratch.clear();
        self.scratch
            .extend(pcm.iter().map(|&s| f32::from(s) / 32768.0));
        inner.push(&self.scratch, sink)
    }

    /// Pushes out everything held back (the last partial chunk and the
    /// filter delay) and starts afresh: the client committed, so what it
    /// sent so far must be in this utterance.
    pub fn flush(&mut self, sink: &mut Vec<i16>) -> Result<(), AudioError> {
        match self.inner.as_mut() {
            Some(inner) => inner.finish(sink),
            None => Ok(()),
        }
    }

    /// Forgets what was pushed and not yet returned (a cleared buffer).
    pub fn reset(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            inner.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_24k_tone_comes_out_at_16k_with_the_right_length_and_pitch() {
        let tone: Vec<i16> = (0..24_000)
            .map(|i| {
                ((i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 24_000.0).sin() * 10_000.0) as i16
            })
            .collect();
        let mut r = StreamResampler::new(24_000).unwrap();
        let mut out = Vec::new();
        for c in tone.chunks(2400) {
            r.push(c, &mut out).unwrap();
        }
        r.flush(&mut out).unwrap();
        assert_eq!(out.len(), 16_000);
        // Zero crossings of 440 Hz over one second: ~880.
        let crossings = out.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        assert!((870..=890).contains(&crossings), "{crossings}");
    }

    #[test]
    fn sixteen_khz_passes_through() {
        let mut r = StreamResampler::new(16_000).unwrap();
        let mut out = Vec::new();
        r.push(&[1, 2, 3], &mut out).unwrap();
        r.flush(&mut out).unwrap();
        assert_eq!(out, [1, 2, 3]);
    }
}

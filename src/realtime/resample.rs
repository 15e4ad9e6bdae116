//! Streaming PCM16 resampling to 16 kHz for realtime sessions (OpenAI
//! clients send 24 kHz): rubato's synchronous FFT resampler on fixed 20 ms
//! input chunks, its start-up delay trimmed, so the 16 kHz stream stays
//! aligned with the input (the VAD's timestamps are the client's).
//!
//! A local wrapper: `crate::audio` resamples whole uploads; when it exposes
//! a streaming resampler this can go.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

/// Input rate to 16 kHz, in pieces of any length.
pub struct StreamResampler {
    rate: u32,
    fft: Option<Fft<f32>>,
    chunk: usize,
    pending: Vec<f32>,
    out: Vec<f32>,
    to_trim: usize,
    input_frames: u64,
    output_frames: u64,
}

impl StreamResampler {
    /// A resampler from `rate` (16 kHz passes through untouched).
    pub fn new(rate: u32) -> Self {
        let target = asr_ipc::SAMPLE_RATE;
        let chunk = rate as usize / 50;
        let fft = (rate != target)
            .then(|| {
                Fft::<f32>::new(rate as usize, target as usize, chunk, 1, FixedSync::Input).ok()
            })
            .flatten();
        let (out, to_trim) = match &fft {
            Some(f) => (vec![0.0; f.output_frames_max()], f.output_delay()),
            None => (Vec::new(), 0),
        };
        Self {
            rate,
            fft,
            chunk,
            pending: Vec::with_capacity(chunk * 2),
            out,
            to_trim,
            input_frames: 0,
            output_frames: 0,
        }
    }

    /// The input rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    fn expected(&self) -> u64 {
        (self.input_frames as f64 * f64::from(asr_ipc::SAMPLE_RATE) / f64::from(self.rate)).ceil()
            as u64
    }

    /// Resamples `pcm` (16-bit, mono) and appends the 16 kHz output that is
    /// ready to `sink`.
    pub fn push(&mut self, pcm: &[i16], sink: &mut Vec<i16>) {
        if self.fft.is_none() {
            sink.extend_from_slice(pcm);
            return;
        }
        self.input_frames += pcm.len() as u64;
        self.pending
            .extend(pcm.iter().map(|&s| f32::from(s) / 32768.0));
        self.drain(sink);
    }

    fn drain(&mut self, sink: &mut Vec<i16>) {
        let Some(fft) = self.fft.as_mut() else { return };
        let mut offset = 0;
        while self.pending.len() - offset >= self.chunk {
            let slice = &self.pending[offset..offset + self.chunk];
            let out_len = self.out.len();
            let (Ok(input), Ok(mut output)) = (
                InterleavedSlice::new(slice, 1, self.chunk),
                InterleavedSlice::new_mut(&mut self.out[..], 1, out_len),
            ) else {
                break;
            };
            let Ok((_, produced)) = fft.process_into_buffer(&input, &mut output, None) else {
                break;
            };
            offset += self.chunk;
            let mut produced = &self.out[..produced];
            let cut = self.to_trim.min(produced.len());
            produced = &produced[cut..];
            self.to_trim -= cut;
            let expected = (self.input_frames as f64 * f64::from(asr_ipc::SAMPLE_RATE)
                / f64::from(self.rate))
            .ceil() as u64;
            let take = produced
                .len()
                .min(expected.saturating_sub(self.output_frames) as usize);
            self.output_frames += take as u64;
            sink.extend(
                produced[..take]
                    .iter()
                    .map(|&s| crate::audio::f32_to_i16(s)),
            );
        }
        self.pending.drain(..offset);
    }

    /// Pushes out everything held back (the last partial chunk and the
    /// filter delay) and starts afresh: the client committed, so what it
    /// sent so far must be in this utterance.
    pub fn flush(&mut self, sink: &mut Vec<i16>) {
        if self.fft.is_none() {
            return;
        }
        let expected = self.expected();
        let mut guard = 0;
        while self.output_frames < expected && guard < 16 {
            self.pending.resize(self.pending.len() + self.chunk, 0.0);
            self.drain(sink);
            guard += 1;
        }
        *self = Self::new(self.rate);
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
        let mut r = StreamResampler::new(24_000);
        let mut out = Vec::new();
        for c in tone.chunks(2400) {
            r.push(c, &mut out);
        }
        r.flush(&mut out);
        assert_eq!(out.len(), 16_000);
        // Zero crossings of 440 Hz over one second: ~880.
        let crossings = out.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        assert!((870..=890).contains(&crossings), "{crossings}");
    }

    #[test]
    fn sixteen_khz_passes_through() {
        let mut r = StreamResampler::new(16_000);
        let mut out = Vec::new();
        r.push(&[1, 2, 3], &mut out);
        r.flush(&mut out);
        assert_eq!(out, [1, 2, 3]);
    }
}

//! Streaming resampling of mono audio to 16 kHz, chunk by chunk: the one
//! resampler of the node, used for uploads ([`super::decode`]: 1024-frame
//! chunks) and realtime sessions ([`crate::realtime`]: 20 ms chunks, so
//! little audio waits in it).

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

use super::budget::Output;
use super::{f32_to_i16, AudioError, RESAMPLER_CHUNK, TARGET_SAMPLE_RATE};

/// Where the 16 kHz output goes.
pub trait Sink16k {
    /// Takes resampled samples (in -1..1).
    fn push(&mut self, chunk: &[f32]);
    /// Whether more output is wanted (false: the resampler may stop early).
    fn wants_more(&self) -> bool {
        true
    }
}

impl Sink16k for Output<'_> {
    fn push(&mut self, chunk: &[f32]) {
        Output::push(self, chunk);
    }
    fn wants_more(&self) -> bool {
        self.keep
    }
}

/// 16-bit PCM collected in a vector.
impl Sink16k for Vec<i16> {
    fn push(&mut self, chunk: &[f32]) {
        self.extend(chunk.iter().map(|&s| f32_to_i16(s)));
    }
}

/// Mono audio at the source rate to 16 kHz, chunk by chunk: rubato's FFT
/// resampler fed fixed input chunks, its start-up delay trimmed and the
/// output cut to `ceil(ratio × input)`, exactly as rubato's `process_all`
/// does for a clip in memory (so the output stays aligned with the input).
pub struct StreamResampler {
    fft: Fft<f32>,
    rate: u32,
    ratio: f64,
    pending: Vec<f32>,
    out: Vec<f32>,
    to_trim: usize,
    input_frames: u64,
    output_frames: u64,
}

impl StreamResampler {
    /// From `rate` to 16 kHz in chunks of [`RESAMPLER_CHUNK`] input frames.
    pub fn new(rate: u32) -> Result<Self, AudioError> {
        Self::with_chunk(rate, RESAMPLER_CHUNK)
    }

    /// From `rate` to 16 kHz in chunks of `chunk` input frames (smaller:
    /// less audio held back, more calls).
    pub fn with_chunk(rate: u32, chunk: usize) -> Result<Self, AudioError> {
        let fft = Fft::<f32>::new(
            rate as usize,
            TARGET_SAMPLE_RATE as usize,
            chunk.max(1),
            1,
            FixedSync::Input,
        )
        .map_err(|e| resample_error(&e, rate))?;
        let out = vec![0.0; fft.output_frames_max()];
        let to_trim = fft.output_delay();
        Ok(Self {
            rate,
            ratio: f64::from(TARGET_SAMPLE_RATE) / f64::from(rate),
            fft,
            pending: Vec::with_capacity(chunk * 2),
            out,
            to_trim,
            input_frames: 0,
            output_frames: 0,
        })
    }

    /// The input rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Forgets everything pushed so far (held-back input, filter state).
    pub fn reset(&mut self) {
        self.fft.reset();
        self.pending.clear();
        self.to_trim = self.fft.output_delay();
        self.input_frames = 0;
        self.output_frames = 0;
    }

    /// Resamples `mono` and hands `sink` what is ready; the rest of the
    /// last chunk waits for more input (or [`Self::finish`]).
    pub fn push<S: Sink16k + ?Sized>(
        &mut self,
        mono: &[f32],
        sink: &mut S,
    ) -> Result<(), AudioError> {
        self.input_frames += mono.len() as u64;
        self.pending.extend_from_slice(mono);
        let mut offset = 0;
        loop {
            let need = self.fft.input_frames_next();
            if self.pending.len() - offset < need {
                break;
            }
            let n = self.chunk(offset, None, sink)?;
            offset += n;
            if !sink.wants_more() {
                break;
            }
        }
        self.pending.drain(..offset.min(self.pending.len()));
        Ok(())
    }

    /// One call of the resampler at `offset` of `pending`.
    fn chunk<S: Sink16k + ?Sized>(
        &mut self,
        offset: usize,
        partial: Option<usize>,
        sink: &mut S,
    ) -> Result<usize, AudioError> {
        let rate = self.rate;
        let frames_in = self.pending.len();
        let input = InterleavedSlice::new(&self.pending[..], 1, frames_in)
            .map_err(|e| resample_error(&e, rate))?;
        let out_len = self.out.len();
        let mut output = InterleavedSlice::new_mut(&mut self.out[..], 1, out_len)
            .map_err(|e| resample_error(&e, rate))?;
        let mut indexing = Indexing::new().input_offset(offset);
        if let Some(p) = partial {
            indexing = indexing.partial_len(p);
        }
        let (used, produced) = self
            .fft
            .process_into_buffer(&input, &mut output, Some(&indexing))
            .map_err(|e| resample_error(&e, rate))?;
        let mut produced = &self.out[..produced];
        if self.to_trim > 0 {
            let cut = self.to_trim.min(produced.len());
            produced = &produced[cut..];
            self.to_trim -= cut;
        }
        let expected = (self.ratio * self.input_frames as f64).ceil() as u64;
        let room = expected.saturating_sub(self.output_frames) as usize;
        let take = produced.len().min(room);
        self.output_frames += take as u64;
        sink.push(&produced[..take]);
        Ok(used)
    }

    /// Flushes the last partial chunk and the resampler's delay: the output
    /// then holds `ceil(ratio × input)` frames in all. The resampler is
    /// [`Self::reset`] afterwards, ready for a new stream.
    pub fn finish<S: Sink16k + ?Sized>(&mut self, sink: &mut S) -> Result<(), AudioError> {
        let expected = (self.ratio * self.input_frames as f64).ceil() as u64;
        let left = self.pending.len();
        if left > 0 {
            // Pad to a whole chunk; `partial_len` makes the rest silence.
            let need = self.fft.input_frames_next();
            self.pending.resize(need.max(left), 0.0);
            self.chunk(0, Some(left), sink)?;
        }
        self.pending.clear();
        let need = self.fft.input_frames_next();
        self.pending.resize(need, 0.0);
        while self.output_frames < expected && sink.wants_more() {
            self.chunk(0, Some(0), sink)?;
        }
        self.reset();
        Ok(())
    }
}

pub(super) fn resample_error(e: &dyn std::fmt::Display, rate: u32) -> AudioError {
    tracing::warn!(error = %e, rate, "resampler refused the audio");
    AudioError::Unsupported(format!("audio at {rate} Hz cannot be resampled to 16 kHz"))
}

//! Log-mel features: a faithful port of faster-whisper's `FeatureExtractor`.
//!
//! The rule, step by step (as in faster-whisper 1.x):
//! 1. pad the waveform with `hop_length` zero samples at the end;
//! 2. STFT with `n_fft` points, hop `hop_length`, a periodic Hann window,
//!    `center=True` (reflect padding of `n_fft / 2` on both sides);
//! 3. power spectrum `|X|²`, dropping the last STFT frame;
//! 4. Slaney-style mel filter bank (librosa formula, 0–8 kHz);
//! 5. `log10(max(mel, 1e-10))`, then `max(x, global_max - 8)` over the whole
//!    clip, then `(x + 4) / 4`.
//!
//! The result is one `[n_mels, n_frames]` matrix for the whole clip; the seek
//! loop cuts 30 s windows out of it with [`Features::window`], padding with
//! zeros exactly like faster-whisper's `pad_or_trim`.
//!
//! The FFT plan and the scratch buffers live in [`FeatureExtractor`] and are
//! reused across jobs. The mel product only visits each filter's non-zero
//! bins, so 10 s of audio takes a few milliseconds.

use std::sync::Arc;

use anyhow::{bail, Result};
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use serde::Deserialize;

/// The feature parameters of a model, read from `preprocessor_config.json`.
///
/// Only the keys faster-whisper reads are used; `mel_filters`, if present,
/// is ignored, as faster-whisper computes the filters itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct FeatureConfig {
    /// Number of mel bins (80, or 128 for large-v3).
    #[serde(default = "default_feature_size")]
    pub feature_size: usize,
    /// Sample rate of the input, Hz.
    #[serde(default = "default_sampling_rate")]
    pub sampling_rate: usize,
    /// Hop between STFT frames, samples.
    #[serde(default = "default_hop_length")]
    pub hop_length: usize,
    /// Window length in seconds that the encoder sees.
    #[serde(default = "default_chunk_length")]
    pub chunk_length: usize,
    /// FFT size, samples.
    #[serde(default = "default_n_fft")]
    pub n_fft: usize,
}

fn default_feature_size() -> usize {
    80
}
fn default_sampling_rate() -> usize {
    16_000
}
fn default_hop_length() -> usize {
    160
}
fn default_chunk_length() -> usize {
    30
}
fn default_n_fft() -> usize {
    400
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            feature_size: default_feature_size(),
            sampling_rate: default_sampling_rate(),
            hop_length: default_hop_length(),
            chunk_length: default_chunk_length(),
            n_fft: default_n_fft(),
        }
    }
}

impl FeatureConfig {
    /// Checks the values are usable (and that the sample rate is the one the
    /// IPC contract carries).
    pub fn validate(&self) -> Result<()> {
        if self.sampling_rate != asr_ipc::SAMPLE_RATE as usize {
            bail!(
                "sampling_rate is {} but the worker receives {} Hz audio",
                self.sampling_rate,
                asr_ipc::SAMPLE_RATE
            );
        }
        if self.feature_size == 0 || self.feature_size > 512 {
            bail!("feature_size {} is out of range", self.feature_size);
        }
        if self.n_fft < 2 || self.n_fft > 1 << 16 {
            bail!("n_fft {} is out of range", self.n_fft);
        }
        if self.hop_length == 0 || self.hop_length > self.n_fft {
            bail!("hop_length {} is out of range", self.hop_length);
        }
        if self.chunk_length == 0 || self.chunk_length > 600 {
            bail!("chunk_length {} is out of range", self.chunk_length);
        }
        Ok(())
    }

    /// Samples in one encoder window (`chunk_length * sampling_rate`).
    pub fn n_samples(&self) -> usize {
        self.chunk_length * self.sampling_rate
    }

    /// Frames in one encoder window (3000 for Whisper).
    pub fn nb_max_frames(&self) -> usize {
        self.n_samples() / self.hop_length
    }

    /// Seconds per feature frame (0.01 for Whisper).
    pub fn time_per_frame(&self) -> f64 {
        self.hop_length as f64 / self.sampling_rate as f64
    }

    /// Frames per second (100 for Whisper).
    pub fn frames_per_second(&self) -> usize {
        self.sampling_rate / self.hop_length
    }
}

/// A log-mel spectrogram, row-major `[n_mels][n_frames]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Number of mel bins (rows).
    pub n_mels: usize,
    /// Number of frames (columns).
    pub n_frames: usize,
    /// The values, row after row.
    pub data: Vec<f32>,
}

impl Features {
    /// Frames that hold audio: faster-whisper's `features.shape[-1] - 1`.
    pub fn content_frames(&self) -> usize {
        self.n_frames.saturating_sub(1)
    }

    /// `features[:, start:start+len]` zero-padded (or cut) to `width` frames,
    /// as a row-major `[n_mels][width]` buffer ready for the encoder.
    pub fn window(&self, start: usize, len: usize, width: usize) -> Vec<f32> {
        let start = start.min(self.n_frames);
        let len = len.min(self.n_frames - start).min(width);
        let mut out = vec![0.0f32; self.n_mels * width];
        for m in 0..self.n_mels {
            let src = &self.data[m * self.n_frames + start..m * self.n_frames + start + len];
            out[m * width..m * width + len].copy_from_slice(src);
        }
        out
    }

    /// The value at mel bin `m`, frame `t`.
    pub fn at(&self, m: usize, t: usize) -> f32 {
        self.data[m * self.n_frames + t]
    }
}

/// A mel filter bank, dense `[n_mels][n_freqs]`, with each row's non-zero
/// span remembered so the product skips the zeros.
#[derive(Debug, Clone)]
pub struct MelFilters {
    /// Number of filters.
    pub n_mels: usize,
    /// Number of FFT bins (`n_fft / 2 + 1`).
    pub n_freqs: usize,
    /// The weights, row after row.
    pub weights: Vec<f32>,
    spans: Vec<(usize, usize)>,
}

impl MelFilters {
    /// faster-whisper's `get_mel_filters` (librosa's Slaney mel, `htk=False`,
    /// `norm="slaney"`, 0 Hz to 8 kHz), computed in f64 and stored as f32.
    pub fn new(sr: usize, n_fft: usize, n_mels: usize) -> Self {
        let n_freqs = n_fft / 2 + 1;
        // Centre frequency of each FFT bin (np.fft.rfftfreq).
        let fftfreqs: Vec<f64> = (0..n_freqs)
            .map(|i| i as f64 * sr as f64 / n_fft as f64)
            .collect();
        // Mel band edges, uniformly spaced between mel(0) and mel(8000).
        let min_mel = 0.0f64;
        let max_mel = 45.245_640_471_924_965f64;
        let n_pts = n_mels + 2;
        let f_sp = 200.0f64 / 3.0;
        let min_log_hz = 1000.0f64;
        let min_log_mel = min_log_hz / f_sp;
        let logstep = 6.4f64.ln() / 27.0;
        let freqs: Vec<f64> = (0..n_pts)
            .map(|i| {
                // np.linspace(min_mel, max_mel, n_pts)
                let mel = if n_pts == 1 {
                    min_mel
                } else {
                    min_mel + (max_mel - min_mel) * i as f64 / (n_pts - 1) as f64
                };
                if mel >= min_log_mel {
                    min_log_hz * (logstep * (mel - min_log_mel)).exp()
                } else {
                    f_sp * mel
                }
            })
            .collect();
        let mut weights = vec![0.0f32; n_mels * n_freqs];
        let mut spans = Vec::with_capacity(n_mels);
        for m in 0..n_mels {
            let fdiff_lo = freqs[m + 1] - freqs[m];
            let fdiff_hi = freqs[m + 2] - freqs[m + 1];
            let enorm = 2.0 / (freqs[m + 2] - freqs[m]);
            let (mut lo, mut hi) = (usize::MAX, 0usize);
            for (k, &f) in fftfreqs.iter().enumerate() {
                let lower = -(freqs[m] - f) / fdiff_lo;
                let upper = (freqs[m + 2] - f) / fdiff_hi;
                let w = 0.0f64.max(lower.min(upper)) * enorm;
                let w = w as f32;
                weights[m * n_freqs + k] = w;
                if w != 0.0 {
                    lo = lo.min(k);
                    hi = hi.max(k + 1);
                }
            }
            spans.push(if lo == usize::MAX { (0, 0) } else { (lo, hi) });
        }
        Self {
            n_mels,
            n_freqs,
            weights,
            spans,
        }
    }

    /// Weight of filter `m` at FFT bin `k`.
    pub fn weight(&self, m: usize, k: usize) -> f32 {
        self.weights[m * self.n_freqs + k]
    }

    /// `filters @ power` for one frame.
    fn apply(&self, power: &[f32], out: &mut [f32]) {
        for (m, o) in out.iter_mut().enumerate() {
            let (lo, hi) = self.spans[m];
            let row = &self.weights[m * self.n_freqs + lo..m * self.n_freqs + hi];
            *o = row.iter().zip(&power[lo..hi]).map(|(w, p)| w * p).sum();
        }
    }
}

/// The periodic Hann window of length `n` (`np.hanning(n + 1)[:-1]`).
pub fn hann_periodic(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()) as f32)
        .collect()
}

/// Index into a signal of length `len` for position `i` of its `reflect`
/// extension (numpy's `np.pad(mode="reflect")`, edge sample not repeated).
fn reflect_index(i: isize, len: usize) -> usize {
    if len <= 1 {
        return 0;
    }
    let period = 2 * (len as isize - 1);
    let m = i.rem_euclid(period);
    if m >= len as isize {
        (period - m) as usize
    } else {
        m as usize
    }
}

/// Computes log-mel features; holds the FFT plan and buffers between jobs.
pub struct FeatureExtractor {
    config: FeatureConfig,
    window: Vec<f32>,
    filters: MelFilters,
    fft: Arc<dyn RealToComplex<f32>>,
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
}

impl FeatureExtractor {
    /// Builds the window, filters and FFT plan for `config`.
    pub fn new(config: FeatureConfig) -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(config.n_fft);
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        Self {
            window: hann_periodic(config.n_fft),
            filters: MelFilters::new(config.sampling_rate, config.n_fft, config.feature_size),
            frame: fft.make_input_vec(),
            power: vec![0.0; config.n_fft / 2 + 1],
            fft,
            spectrum,
            scratch,
            config,
        }
    }

    /// The parameters in use.
    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    /// The mel filter bank in use.
    pub fn filters(&self) -> &MelFilters {
        &self.filters
    }

    /// Log-mel features of the whole clip, normalised over the whole clip.
    pub fn compute(&mut self, samples: &[f32]) -> Features {
        let mut features = self.log_mel(samples);
        normalize(&mut features.data);
        features
    }

    /// `log10(max(mel, 1e-10))` of every frame, before normalisation.
    pub fn log_mel(&mut self, samples: &[f32]) -> Features {
        let n_fft = self.config.n_fft;
        let hop = self.config.hop_length;
        let n_mels = self.config.feature_size;
        let pad = n_fft / 2;
        // waveform + `hop` zeros (faster-whisper's `padding=160`).
        let len = samples.len() + hop;
        let sample = |i: usize| if i < samples.len() { samples[i] } else { 0.0 };
        // Centre padding by reflection: padded[j] = x[reflect(j - pad)].
        let padded: Vec<f32> = (0..len + 2 * pad)
            .map(|j| sample(reflect_index(j as isize - pad as isize, len)))
            .collect();
        // STFT frames: 1 + (len + 2 pad - n_fft) / hop, minus the last one.
        let n_stft = 1 + (padded.len() - n_fft) / hop;
        let n_frames = n_stft - 1;
        let mut data = vec![0.0f32; n_mels * n_frames];
        let mut mel = vec![0.0f32; n_mels];
        for t in 0..n_frames {
            let src = &padded[t * hop..t * hop + n_fft];
            for ((d, s), w) in self.frame.iter_mut().zip(src).zip(&self.window) {
                *d = s * w;
            }
            // Lengths always match the plan, so this cannot fail.
            let _ = self.fft.process_with_scratch(
                &mut self.frame,
                &mut self.spectrum,
                &mut self.scratch,
            );
            for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
                *p = c.re * c.re + c.im * c.im;
            }
            self.filters.apply(&self.power, &mut mel);
            for (m, v) in mel.iter().enumerate() {
                data[m * n_frames + t] = v.max(1e-10).log10();
            }
        }
        Features {
            n_mels,
            n_frames,
            data,
        }
    }
}

/// Whisper's whole-clip rule: `max(x, global_max - 8)`, then `(x + 4) / 4`.
pub fn normalize(log_spec: &mut [f32]) {
    let max = log_spec.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let floor = max - 8.0;
    for v in log_spec.iter_mut() {
        *v = (v.max(floor) + 4.0) / 4.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extractor() -> FeatureExtractor {
        FeatureExtractor::new(FeatureConfig::default())
    }

    #[test]
    fn mel_filters_have_whisper_shape_and_slaney_area() {
        let f = MelFilters::new(16_000, 400, 80);
        assert_eq!((f.n_mels, f.n_freqs), (80, 201));
        for m in 0..80 {
            let row: Vec<f32> = (0..201).map(|k| f.weight(m, k)).collect();
            assert!(row.iter().all(|w| *w >= 0.0));
            assert!(row.iter().any(|w| *w > 0.0), "filter {m} is empty");
            // Slaney normalisation: each triangle has area ~1 in Hz·weight,
            // so sum(weights) * 40 Hz/bin is about 1 (coarse at low bins).
            let area: f32 = row.iter().sum::<f32>() * 40.0;
            assert!((0.9..1.1).contains(&area), "filter {m} area {area}");
        }
        // Known values from faster-whisper's float32 filters.
        assert!((f.weight(0, 1) - 0.024_862_595).abs() < 1e-8);
        assert!((f.weight(1, 1) - 0.001_990_822).abs() < 1e-8);
        assert!((f.weight(1, 2) - 0.022_871_772).abs() < 1e-8);
        assert!((f.weight(79, 190) - 0.002_232_055).abs() < 1e-8);
        assert_eq!(f.weight(0, 0), 0.0);
        assert_eq!(f.weight(79, 185), 0.0);
    }

    #[test]
    fn hann_window_is_periodic() {
        let w = hann_periodic(400);
        assert_eq!(w.len(), 400);
        assert_eq!(w[0], 0.0);
        assert!((w[200] - 1.0).abs() < 1e-7);
        assert!((w[100] - 0.5).abs() < 1e-6);
        assert!((w[1] - w[399]).abs() < 1e-7);
    }

    #[test]
    fn reflect_matches_numpy() {
        // np.pad([0,1,2,3], 3, mode="reflect") == [3,2,1,0,1,2,3,2,1,0]
        let got: Vec<usize> = (-3..7).map(|i| reflect_index(i, 4)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        assert_eq!(reflect_index(-5, 1), 0);
    }

    #[test]
    fn frame_count_matches_faster_whisper() {
        let mut fx = extractor();
        // 1 s of audio: 101 frames, 100 of them content.
        let f = fx.compute(&vec![0.0; 16_000]);
        assert_eq!((f.n_mels, f.n_frames, f.content_frames()), (80, 101, 100));
        let f = fx.compute(&vec![0.0; 16_001]);
        assert_eq!(f.n_frames, 101);
        let f = fx.compute(&[0.5]);
        assert_eq!(f.n_frames, 1);
    }

    #[test]
    fn pure_tone_peaks_in_the_right_mel_bin() {
        let mut fx = extractor();
        let freq = 1000.0f64;
        let samples: Vec<f32> = (0..16_000)
            .map(|i| (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / 16_000.0).sin()) as f32)
            .collect();
        let f = fx.compute(&samples);
        // Expected bin: the filter with the largest weight at FFT bin 25 (1 kHz).
        let filters = fx.filters();
        let expected = (0..80)
            .max_by(|&a, &b| filters.weight(a, 25).total_cmp(&filters.weight(b, 25)))
            .unwrap();
        let t = 50;
        let peak = (0..80)
            .max_by(|&a, &b| f.at(a, t).total_cmp(&f.at(b, t)))
            .unwrap();
        assert_eq!(peak, expected);
        // The tone is the loudest thing in the clip: the peak is near the max.
        let max = f.data.iter().copied().fold(f32::MIN, f32::max);
        assert!(f.at(peak, t) > max - 0.05);
    }

    #[test]
    fn normalisation_is_whole_clip() {
        let mut v = vec![2.0f32, -10.0, -5.0, 1.0];
        normalize(&mut v);
        // max 2 → floor -6: [-10 → -6]; then (x + 4) / 4.
        assert_eq!(v, vec![1.5, -0.5, -0.25, 1.25]);
    }

    #[test]
    fn silence_is_flat_after_normalisation() {
        let mut fx = extractor();
        let f = fx.compute(&vec![0.0; 8_000]);
        // log10(1e-10) = -10 everywhere → (−10 + 4) / 4 = −1.5.
        assert!(f.data.iter().all(|v| (*v + 1.5).abs() < 1e-6));
    }

    #[test]
    fn window_pads_with_zeros_and_cuts() {
        let f = Features {
            n_mels: 2,
            n_frames: 3,
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        };
        assert_eq!(
            f.window(1, 2, 4),
            vec![2.0, 3.0, 0.0, 0.0, 5.0, 6.0, 0.0, 0.0]
        );
        assert_eq!(f.window(0, 3, 2), vec![1.0, 2.0, 4.0, 5.0]);
        assert_eq!(f.window(5, 3, 1), vec![0.0, 0.0]);
    }

    #[test]
    fn ten_seconds_are_fast() {
        let mut fx = extractor();
        let samples: Vec<f32> = (0..160_000)
            .map(|i| ((i % 97) as f32 / 97.0) - 0.5)
            .collect();
        let t = std::time::Instant::now();
        let f = fx.compute(&samples);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(f.n_frames, 1001);
        assert!(ms < 200.0, "10 s of features took {ms:.1} ms");
    }
}

use super::*;
use proptest::prelude::*;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

const SR: u32 = TARGET_SAMPLE_RATE;

#[test]
fn to_i16_scales_rounds_and_saturates() {
    let pcm = super::to_i16(&[
        0.0,
        0.5,
        -0.5,
        1.0,
        -1.0,
        1.7,
        -3.0,
        1.0 / 32768.0,
        f32::NAN,
    ]);
    assert_eq!(
        pcm,
        vec![0, 16384, -16384, 32767, -32768, 32767, -32768, 1, 0]
    );
    // What the worker gets back is within half a step of the original.
    for x in [0.123_f32, -0.777, 0.999] {
        let back = f32::from(super::to_i16(&[x])[0]) / 32768.0;
        assert!((back - x).abs() <= 0.5 / 32768.0, "{x} -> {back}");
    }
}

/// [`decode_to_mono_16k`] as `f32`.
fn decode(bytes: &[u8], hint: Option<&str>) -> Result<Vec<f32>, AudioError> {
    decode_to_mono_16k(bytes, hint).map(|s| i16_to_f32(&s))
}

/// [`decode_to_mono_16k_limited`] as `f32`.
fn decode_limited(bytes: &[u8], hint: Option<&str>, max: f64) -> Result<Vec<f32>, AudioError> {
    decode_to_mono_16k_limited(bytes, hint, max).map(|s| i16_to_f32(&s))
}

/// A decode without the `catch_unwind` guard (a panic fails the test).
fn decode_inner(bytes: &[u8], hint: Option<&str>, max: f64) -> Result<DecodeReport, AudioError> {
    let upload = Upload::from(bytes.to_vec());
    let mut budget = Unbudgeted;
    let mut out = Output::collect(&mut budget, max_output_frames(max), 0);
    decode_pass(&upload, hint, max, &mut out)
}

/// Sample format of a synthesized WAV.
#[derive(Clone, Copy)]
enum WavFormat {
    Pcm16,
    Float32,
}

/// A RIFF/WAVE file written by hand.
fn wav_bytes(rate: u32, channels: u16, format: WavFormat, frames: &[Vec<f32>]) -> Vec<u8> {
    let (tag, bits): (u16, u16) = match format {
        WavFormat::Pcm16 => (1, 16),
        WavFormat::Float32 => (3, 32),
    };
    let block_align = channels * bits / 8;
    let mut data = Vec::new();
    for frame in frames {
        assert_eq!(frame.len(), channels as usize);
        for &s in frame {
            match format {
                WavFormat::Pcm16 => data.extend_from_slice(
                    &((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes(),
                ),
                WavFormat::Float32 => data.extend_from_slice(&s.to_le_bytes()),
            }
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

fn tone(rate: u32, channels: u16, secs: f64, freq: f64, amp: f32) -> Vec<Vec<f32>> {
    let n = (secs * f64::from(rate)).round() as usize;
    (0..n)
        .map(|i| {
            let v =
                (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin() as f32 * amp;
            vec![v; channels as usize]
        })
        .collect()
}

/// Dominant frequency estimated from the zero-crossing rate, ignoring
/// the first and last 50 ms (resampler edges).
fn zcr_freq(samples: &[f32]) -> f64 {
    let edge = (SR / 20) as usize;
    let body = &samples[edge..samples.len() - edge];
    let crossings = body
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count();
    crossings as f64 / 2.0 / (body.len() as f64 / f64::from(SR))
}

/// Checks length (within `tolerance` seconds), dominant frequency and
/// range.
fn assert_tone_within(samples: &[f32], secs: f64, freq: f64, tolerance: f64) {
    let expected = secs * f64::from(SR);
    let len = samples.len() as f64;
    assert!(
        (len - expected).abs() <= tolerance * f64::from(SR),
        "length {len} vs {expected}"
    );
    let f = zcr_freq(samples);
    assert!(
        (f - freq).abs() < freq * 0.03,
        "dominant frequency {f} Hz, wanted {freq} Hz"
    );
    assert!(samples
        .iter()
        .all(|s| s.is_finite() && (-1.0..=1.0).contains(s)));
}

fn assert_tone(samples: &[f32], secs: f64, freq: f64) {
    assert_tone_within(samples, secs, freq, 0.01);
}

/// The compressed fixtures under `tests/fixtures/audio/`.
const FIXTURES: [&str; 5] = [
    "tone440_44k1_stereo.flac",
    "tone440_44k1_stereo.mp3",
    "tone440_48k_mono.ogg",
    "tone440_16k_mono.m4a",
    "tone440_48k_mono_2s.webm",
];

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audio")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

#[test]
fn wav_pcm16_44k1_stereo_is_downmixed_and_resampled() {
    let wav = wav_bytes(
        44_100,
        2,
        WavFormat::Pcm16,
        &tone(44_100, 2, 2.0, 440.0, 0.5),
    );
    let out = decode(&wav, Some("wav")).unwrap();
    assert_tone(&out, 2.0, 440.0);
    let peak = out.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    assert!((peak - 0.5).abs() < 0.02, "peak {peak}");
}

#[test]
fn wav_float_8k_mono_is_upsampled() {
    let wav = wav_bytes(
        8_000,
        1,
        WavFormat::Float32,
        &tone(8_000, 1, 1.5, 440.0, 0.3),
    );
    let out = decode(&wav, Some("audio/wav")).unwrap();
    assert_tone(&out, 1.5, 440.0);
}

#[test]
fn wav_at_16k_is_passed_through_unchanged() {
    let frames = tone(SR, 1, 0.5, 440.0, 0.25);
    let wav = wav_bytes(SR, 1, WavFormat::Float32, &frames);
    let out = decode(&wav, None).unwrap();
    assert_eq!(out.len(), frames.len());
    for (a, b) in out.iter().zip(frames.iter()) {
        assert!((*a - b[0]).abs() <= 1.0 / 32768.0, "{a} vs {}", b[0]);
    }
}

#[test]
fn opposite_channels_average_to_silence() {
    let frames: Vec<Vec<f32>> = tone(SR, 1, 0.2, 440.0, 0.5)
        .into_iter()
        .map(|f| vec![f[0], -f[0]])
        .collect();
    let out = decode(&wav_bytes(SR, 2, WavFormat::Float32, &frames), None).unwrap();
    assert!(out.iter().all(|s| s.abs() < 1e-6));
}

#[test]
fn flac_mp3_ogg_and_aac_fixtures_decode() {
    // Length tolerance: FLAC, MP3 and Vorbis are gapless in symphonia;
    // its AAC decoder is not, so the encoder's priming and padding
    // frames (1024 samples each) stay in.
    for (name, hint, secs, tolerance) in [
        ("tone440_44k1_stereo.flac", Some("flac"), 1.0, 0.001),
        ("tone440_44k1_stereo.mp3", Some("audio/mpeg"), 1.0, 0.01),
        ("tone440_48k_mono.ogg", None, 1.0, 0.01),
        ("tone440_16k_mono.m4a", Some("m4a"), 1.0, 0.15),
        ("tone440_48k_mono_2s.webm", Some("webm"), 2.0, 0.03),
    ] {
        let out = decode(&fixture(name), hint).unwrap_or_else(|e| panic!("{name}: {e}"));
        // ffmpeg's sine source has amplitude 1/8 (lossy codecs overshoot a little).
        let peak = out.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.08 && peak < 0.3, "{name}: peak {peak}");
        assert_tone_within(&out, secs, 440.0, tolerance);
    }
}

#[test]
fn truncated_webm_decodes_what_arrived() {
    // Over a seekable source the MKV reader wants the end of the file; the
    // forward-only retry decodes a cut recording (MediaRecorder uploads).
    let bytes = fixture("tone440_48k_mono_2s.webm");
    // (Half of this tiny file is Vorbis headers.)
    let out = decode(&bytes[..bytes.len() * 8 / 10], None).unwrap();
    let secs = out.len() as f64 / f64::from(SR);
    assert!(
        secs > 0.5 && secs < 1.7,
        "decoded {secs} s of a 2 s file cut at 80 %"
    );
}

#[test]
fn empty_input_is_empty() {
    assert_eq!(decode(&[], None), Err(AudioError::Empty));
    assert_eq!(AudioError::Empty.code(), "empty_file");
}

#[test]
fn text_garbage_is_unsupported() {
    let garbage = b"this is definitely not an audio file, just some words in ascii".repeat(40);
    match decode(&garbage, Some("wav")) {
        Err(AudioError::Unsupported(_)) => {}
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn every_truncation_of_a_wav_header_is_a_clean_error() {
    let wav = wav_bytes(SR, 1, WavFormat::Pcm16, &tone(SR, 1, 0.1, 440.0, 0.5));
    for cut in 1..44 {
        match decode(&wav[..cut], Some("wav")) {
            Err(AudioError::Corrupt(_))
            | Err(AudioError::Unsupported(_))
            | Err(AudioError::NoSamples) => {}
            other => panic!("cut at {cut}: expected an error, got {other:?}"),
        }
    }
    // Cut inside the fmt chunk, after the RIFF/WAVE magic: a known
    // container with a broken header.
    match decode(&wav[..30], Some("wav")) {
        Err(AudioError::Corrupt(_)) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn wav_header_without_samples_is_no_samples() {
    let wav = wav_bytes(SR, 1, WavFormat::Pcm16, &[]);
    assert_eq!(decode(&wav, None), Err(AudioError::NoSamples));
}

#[test]
fn wav_truncated_mid_data_keeps_what_arrived() {
    let wav = wav_bytes(
        44_100,
        2,
        WavFormat::Pcm16,
        &tone(44_100, 2, 2.0, 440.0, 0.5),
    );
    let out = decode(&wav[..wav.len() / 2], None).unwrap();
    let secs = out.len() as f64 / f64::from(SR);
    assert!(
        (secs - 1.0).abs() < 0.05,
        "decoded {secs} s of a file cut at 1 s"
    );
}

#[test]
fn lossy_streams_truncated_mid_stream_decode_or_fail_cleanly() {
    for name in FIXTURES {
        let bytes = fixture(name);
        for frac in [0.1, 0.5, 0.9] {
            let cut = (bytes.len() as f64 * frac) as usize;
            match decode(&bytes[..cut], None) {
                Ok(out) => assert!(out.iter().all(|s| s.is_finite())),
                Err(e) => assert!(
                    matches!(
                        e,
                        AudioError::Corrupt(_) | AudioError::NoSamples | AudioError::Unsupported(_)
                    ),
                    "{name} cut at {frac}: {e:?}"
                ),
            }
        }
    }
}

#[test]
fn non_finite_samples_are_refused() {
    let mut frames = tone(SR, 1, 0.1, 440.0, 0.5);
    frames[100][0] = f32::NAN;
    assert_eq!(
        decode(&wav_bytes(SR, 1, WavFormat::Float32, &frames), None),
        Err(AudioError::NonFinite)
    );
    frames[100][0] = f32::INFINITY;
    assert_eq!(
        decode(&wav_bytes(SR, 1, WavFormat::Float32, &frames), None),
        Err(AudioError::NonFinite)
    );
}

#[test]
fn loud_float_samples_are_clamped() {
    let frames = tone(SR, 1, 0.1, 440.0, 4.0);
    let out = decode(&wav_bytes(SR, 1, WavFormat::Float32, &frames), None).unwrap();
    assert!(out.iter().all(|s| (-1.0..=1.0).contains(s)));
}

#[test]
fn audio_over_the_limit_is_too_long() {
    let wav = wav_bytes(
        44_100,
        1,
        WavFormat::Pcm16,
        &tone(44_100, 1, 2.0, 440.0, 0.5),
    );
    match decode_limited(&wav, None, 1.5) {
        Err(AudioError::TooLong { secs, max_secs }) => {
            assert!((secs - 2.0).abs() < 0.01);
            assert_eq!(max_secs, 1.5);
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    assert!(decode_limited(&wav, None, 2.5).is_ok());
    // Streams with no declared length are checked while decoding.
    match decode_limited(&fixture("tone440_44k1_stereo.mp3"), None, 0.5) {
        Err(AudioError::TooLong { .. }) => {}
        other => panic!("expected TooLong, got {other:?}"),
    }
}

/// The 13 s speech FLAC with one byte flipped every KiB from `from`
/// on: most frames fail their CRC and the reader skips them silently.
fn bad_crc_flac(from: usize) -> Vec<u8> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speech/clip10.flac");
    let mut b = std::fs::read(path).unwrap();
    for i in (from..b.len()).step_by(1024) {
        b[i] ^= 0x55;
    }
    b
}

#[test]
fn flac_with_bad_crcs_is_damaged_not_a_short_success() {
    let upload = Upload::from(bad_crc_flac(8 * 1024));
    match measure_upload(&upload, None, 60.0) {
        Err(AudioError::Damaged { gap_secs, .. }) => {
            assert!(gap_secs > 0.3, "gap {gap_secs}")
        }
        other => panic!("expected Damaged, got {other:?}"),
    }
    let e = decode_to_mono_16k(&bad_crc_flac(8 * 1024), None).unwrap_err();
    assert_eq!(e.code(), "damaged_audio");
    // Every frame damaged: nothing (or next to nothing) decodes.
    assert!(matches!(
        decode_to_mono_16k(&bad_crc_flac(1024), None),
        Err(AudioError::Corrupt(_)) | Err(AudioError::Damaged { .. })
    ));
    // The intact file has no gaps and no skipped packets.
    let r = measure_upload(
        &Upload::from(fixture("tone440_44k1_stereo.flac")),
        None,
        60.0,
    )
    .unwrap();
    assert_eq!((r.gap_secs, r.skipped_packets), (0.0, 0));
}

#[test]
fn streaming_resampling_matches_resampling_the_whole_clip() {
    // rubato's own whole-clip path, as the decoder used to do it.
    let rate = 44_100;
    let frames = tone(rate, 1, 3.3, 440.0, 0.5);
    let mono: Vec<f32> = frames.iter().map(|f| f[0]).collect();
    let mut fft = Fft::<f32>::new(
        rate as usize,
        SR as usize,
        RESAMPLER_CHUNK,
        1,
        FixedSync::Input,
    )
    .unwrap();
    let input = InterleavedSlice::new(&mono[..], 1, mono.len()).unwrap();
    let whole = fft
        .process_all(&input, mono.len(), None)
        .unwrap()
        .take_data();
    let streamed = decode(&wav_bytes(rate, 1, WavFormat::Float32, &frames), None).unwrap();
    assert_eq!(streamed.len(), whole.len());
    for (a, b) in streamed.iter().zip(&whole) {
        assert!(
            (a - b.clamp(-1.0, 1.0)).abs() <= 1.0 / 32768.0,
            "{a} vs {b}"
        );
    }
}

#[test]
fn the_budget_bounds_the_output_and_a_full_budget_refuses() {
    /// A budget of `limit` bytes that records its peak.
    struct Capped {
        limit: usize,
        held: usize,
        peak: usize,
    }
    impl PcmBudget for Capped {
        fn try_resize(&mut self, total: usize) -> bool {
            if total > self.limit {
                return false;
            }
            self.held = total;
            self.peak = self.peak.max(total);
            true
        }
    }
    let wav = wav_bytes(
        48_000,
        2,
        WavFormat::Pcm16,
        &tone(48_000, 2, 20.0, 440.0, 0.5),
    );
    let upload = Upload::from(wav);
    // Room for it: the reservation ends at exactly the samples' size.
    let mut b = Capped {
        limit: 1 << 20,
        held: 0,
        peak: 0,
    };
    let d = decode_upload(&upload, None, 60.0, &mut b).unwrap();
    assert_eq!(d.samples.len(), 320_000);
    assert_eq!(b.held, 640_000);
    assert!(b.peak <= 1 << 20);
    // No room: refused, nothing left reserved.
    let mut b = Capped {
        limit: 600_000,
        held: 0,
        peak: 0,
    };
    assert_eq!(
        decode_upload(&upload, None, 60.0, &mut b),
        Err(AudioError::OverBudget {
            needed_bytes: 640_000
        })
    );
    assert_eq!(b.held, 0);
    assert!(b.peak <= 600_000);
    // Too long beats over budget.
    let mut b = Capped {
        limit: 100_000,
        held: 0,
        peak: 0,
    };
    assert!(matches!(
        decode_upload(&upload, None, 10.0, &mut b),
        Err(AudioError::TooLong { .. })
    ));
}

#[test]
fn spooled_uploads_decode_like_memory_ones() {
    use std::io::Write as _;
    let wav = wav_bytes(
        22_050,
        1,
        WavFormat::Pcm16,
        &tone(22_050, 1, 1.0, 440.0, 0.5),
    );
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&wav).unwrap();
    let spooled = Upload::File {
        file,
        len: wav.len() as u64,
    };
    let a = decode_upload(&spooled, None, 60.0, &mut Unbudgeted).unwrap();
    // Twice: each pass reads from the start.
    let b = decode_upload(&spooled, None, 60.0, &mut Unbudgeted).unwrap();
    let c = decode_upload(&Upload::from(wav), None, 60.0, &mut Unbudgeted).unwrap();
    assert_eq!(a, c);
    assert_eq!(b, c);
}

#[test]
fn absurd_sample_rates_are_unsupported() {
    let wav = wav_bytes(10, 1, WavFormat::Pcm16, &tone(10, 1, 10.0, 1.0, 0.5));
    assert!(matches!(
        decode(&wav, None),
        Err(AudioError::Unsupported(_)) | Err(AudioError::Corrupt(_))
    ));
}

#[test]
fn codes_are_stable() {
    assert_eq!(
        AudioError::Unsupported(String::new()).code(),
        "unsupported_audio"
    );
    assert_eq!(AudioError::Corrupt(String::new()).code(), "corrupt_audio");
    assert_eq!(AudioError::NoSamples.code(), "no_audio");
    assert_eq!(AudioError::NonFinite.code(), "invalid_samples");
    assert_eq!(
        AudioError::TooLong {
            secs: 2.0,
            max_secs: 1.0
        }
        .code(),
        "audio_too_long"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bytes never panic the decoder (checked without the
    /// `catch_unwind` guard, so a symphonia panic fails the test).
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_inner(&bytes, None, 60.0);
    }

    /// A valid WAV with random bytes flipped never panics.
    #[test]
    fn mutated_wavs_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16)) {
        let mut wav = wav_bytes(22_050, 2, WavFormat::Pcm16, &tone(22_050, 2, 0.05, 440.0, 0.5));
        for (i, b) in flips {
            let i = i.index(wav.len());
            wav[i] ^= b;
        }
        let _ = decode_inner(&wav, None, 60.0);
    }

    /// Mutated compressed fixtures never panic either.
    #[test]
    fn mutated_compressed_streams_never_panic(which in 0usize..FIXTURES.len(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let name = FIXTURES[which];
        let mut bytes = fixture(name);
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= b;
        }
        let _ = decode_inner(&bytes, None, 60.0);
    }
}

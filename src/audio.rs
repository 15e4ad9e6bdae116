//! In-process decoding of uploads to what the worker wants: 16 kHz mono
//! `f32` PCM in [-1, 1].
//!
//! [`decode_to_mono_16k`] probes the container with symphonia (WAV, FLAC,
//! MP3, Ogg/Vorbis, MP4/AAC, MKV/WebM), decodes every packet of the default
//! audio track, averages the channels to mono, and resamples to 16 kHz with
//! rubato's synchronous FFT resampler (the polynomial resampler aliases, so
//! it is not used). Audio already at 16 kHz is not resampled.
//!
//! This is CPU work (tens of milliseconds per minute of audio): async callers
//! must run it on a blocking thread (`web::block`, `spawn_blocking`).
//!
//! # What is refused, and how
//! | input | error | HTTP |
//! | --- | --- | --- |
//! | zero bytes | [`AudioError::Empty`] | 400 |
//! | no known container or codec, no audio track, odd sample rate | [`AudioError::Unsupported`] | 415 |
//! | a known container whose header is cut or malformed (a truncated WAV header), or a stream none of whose packets decode | [`AudioError::Corrupt`] | 400 |
//! | a valid container holding no samples | [`AudioError::NoSamples`] | 400 |
//! | NaN or infinite samples (float WAV) | [`AudioError::NonFinite`] | 400 |
//! | longer than the limit | [`AudioError::TooLong`] | 413 |
//!
//! # Truncated and damaged streams
//! A stream that starts right but ends early (an upload cut mid-stream) is
//! decoded up to its last complete packet and accepted: the client gets the
//! transcript of what arrived, as with ffmpeg-based services. This holds for
//! WAV, FLAC, MP3, Ogg and MKV/WebM (the MKV reader needs a forward-only
//! retry, see `open_format`). An MP4/M4A whose index (`moov`) is at the end
//! cannot be decoded once cut, and neither can a file cut inside its
//! headers: both are [`AudioError::Corrupt`] (400), never a panic.
//! Single packets that fail to decode are skipped and counted in a warning;
//! a stream in which *no* packet decodes is [`AudioError::Corrupt`]. Other
//! mid-stream failures (an unsupported feature, a sample-rate change) refuse
//! the whole file rather than silently dropping the rest of it.
//!
//! Decoding never panics: symphonia documents that some malformed streams
//! may panic inside it, so the decoder runs under `catch_unwind` and such a
//! panic becomes [`AudioError::Corrupt`].

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;

/// Sample rate of the decoder's output.
pub const TARGET_SAMPLE_RATE: u32 = asr_ipc::SAMPLE_RATE;

/// Lowest source sample rate accepted (telephony is 8 kHz).
pub const MIN_SOURCE_RATE: u32 = 1_000;

/// Highest source sample rate accepted.
pub const MAX_SOURCE_RATE: u32 = 768_000;

/// Why an upload could not be turned into samples.
///
/// [`AudioError::code`] is a stable identifier for clients; the `Display`
/// text is a short human message about the client's file (it may quote the
/// decoder's reason, never anything about the server).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AudioError {
    /// The upload has zero bytes.
    #[error("the audio file is empty")]
    Empty,
    /// The container or codec is not recognised or not supported.
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    /// The container was recognised but is malformed or cut short before any
    /// audio, or none of its packets could be decoded.
    #[error("the audio file could not be decoded: {0}")]
    Corrupt(String),
    /// The file is valid but holds no audio samples.
    #[error("the audio file contains no audio samples")]
    NoSamples,
    /// The audio holds NaN or infinite samples.
    #[error("the audio contains non-finite samples")]
    NonFinite,
    /// The audio is longer than the limit.
    #[error("the audio is {secs:.1} s long; the limit is {max_secs:.1} s")]
    TooLong {
        /// Length of the audio (or, when refused before decoding, the length
        /// the container declares), seconds.
        secs: f64,
        /// The limit, seconds.
        max_secs: f64,
    },
}

impl AudioError {
    /// A stable, machine-readable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            AudioError::Empty => "empty_file",
            AudioError::Unsupported(_) => "unsupported_audio",
            AudioError::Corrupt(_) => "corrupt_audio",
            AudioError::NoSamples => "no_audio",
            AudioError::NonFinite => "invalid_samples",
            AudioError::TooLong { .. } => "audio_too_long",
        }
    }
}

/// 16-bit PCM of `f32` samples in [-1, 1], as the node sends audio to the
/// worker: `round(x × 32768)` clamped to the `i16` range (out-of-range
/// samples, from resampler ringing, saturate), which is what
/// ffmpeg's float → s16 conversion gives faster-whisper's `decode_audio`.
/// The worker divides by 32768 again, so a sample round-trips within 2^-16.
pub fn to_i16(samples: &[f32]) -> Vec<i16> {
    samples
        .iter()
        .map(|&x| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// Decodes an upload to 16 kHz mono `f32` PCM in [-1, 1], with no limit on
/// its length. See [`decode_to_mono_16k_limited`]; servers should use that.
///
/// `hint` is the file extension (`"mp3"`, `".wav"`) or MIME type
/// (`"audio/flac"`) if known; the container is always detected from the
/// bytes, so a wrong hint does no harm.
pub fn decode_to_mono_16k(bytes: &[u8], hint: Option<&str>) -> Result<Vec<f32>, AudioError> {
    decode_to_mono_16k_limited(bytes, hint, f64::INFINITY)
}

/// Decodes an upload to 16 kHz mono `f32` PCM in [-1, 1], refusing audio
/// longer than `max_audio_secs` with [`AudioError::TooLong`].
///
/// The limit is checked against the length the container declares before
/// decoding starts, and against the samples decoded so far while decoding,
/// so a small file that expands to hours of audio is refused without
/// decoding (or holding) more than the limit.
pub fn decode_to_mono_16k_limited(
    bytes: &[u8],
    hint: Option<&str>,
    max_audio_secs: f64,
) -> Result<Vec<f32>, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    match catch_unwind(AssertUnwindSafe(|| {
        decode_inner(bytes, hint, max_audio_secs)
    })) {
        Ok(result) => result,
        Err(_) => {
            tracing::error!(bytes = bytes.len(), "audio decoder panicked on an upload");
            Err(AudioError::Corrupt(
                "the decoder failed on this file".into(),
            ))
        }
    }
}

/// Decoded mono audio at its source rate.
struct Mono {
    samples: Vec<f32>,
    rate: u32,
}

fn decode_inner(
    bytes: &[u8],
    hint: Option<&str>,
    max_audio_secs: f64,
) -> Result<Vec<f32>, AudioError> {
    let mono = decode_mono(bytes, hint, max_audio_secs)?;
    let mut samples = resample_to_16k(&mono.samples, mono.rate)?;
    // The FFT resampler can overshoot slightly on clipped input.
    for s in &mut samples {
        *s = s.clamp(-1.0, 1.0);
    }
    Ok(samples)
}

fn make_hint(hint: Option<&str>) -> Hint {
    let mut h = Hint::new();
    if let Some(hint) = hint.map(str::trim).filter(|s| !s.is_empty()) {
        if hint.contains('/') {
            h.mime_type(hint);
        } else {
            h.with_extension(hint.trim_start_matches('.'));
        }
    }
    h
}

/// Maps an error raised while probing or opening the container.
fn probe_error(e: SymphoniaError) -> AudioError {
    match e {
        SymphoniaError::Unsupported(what) if is_no_format(what) => AudioError::Unsupported(
            "the file is not in a recognised audio format \
             (wav, flac, mp3, ogg/vorbis, mp4/aac, mkv/webm)"
                .into(),
        ),
        // A recognised container missing a required part ("isomp4: missing
        // moov atom", "wav: missing data chunk"): damaged or cut short.
        SymphoniaError::Unsupported(what) if what.contains("missing") => {
            AudioError::Corrupt(format!("the file is incomplete ({what})"))
        }
        SymphoniaError::Unsupported(what) => AudioError::Unsupported(what.to_string()),
        SymphoniaError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::Corrupt("the file ends inside its header (truncated)".into())
        }
        SymphoniaError::IoError(_) => {
            AudioError::Corrupt("the file's header could not be read".into())
        }
        SymphoniaError::DecodeError(what) => {
            AudioError::Corrupt(format!("malformed header ({what})"))
        }
        SymphoniaError::LimitError(what) => {
            AudioError::Corrupt(format!("a decoder limit was reached ({what})"))
        }
        other => AudioError::Corrupt(other.to_string()),
    }
}

/// Whether the probe found no container at all.
fn is_no_format(what: &str) -> bool {
    what.contains("no suitable format reader")
}

/// Probes the container. A recognised container that fails to open is
/// tried once more as a forward-only stream: over a seekable source some
/// readers look past the data they need (the MKV/WebM reader fails on any
/// file cut short, which is common for browser `MediaRecorder` uploads);
/// read forward, they decode what is there.
fn open_format<'a>(
    bytes: &'a [u8],
    hint: Option<&str>,
) -> Result<Box<dyn FormatReader + 'a>, AudioError> {
    let probe = symphonia::default::get_probe();
    let hint = make_hint(hint);
    let seekable = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    match probe.probe(
        &hint,
        seekable,
        FormatOptions::default(),
        MetadataOptions::default(),
    ) {
        Ok(format) => Ok(format),
        Err(SymphoniaError::Unsupported(what)) if is_no_format(what) => {
            Err(probe_error(SymphoniaError::Unsupported(what)))
        }
        Err(first) => {
            let forward = MediaSourceStream::new(
                Box::new(ReadOnlySource::new(Cursor::new(bytes))),
                Default::default(),
            );
            probe
                .probe(
                    &hint,
                    forward,
                    FormatOptions::default(),
                    MetadataOptions::default(),
                )
                .map_err(|_| probe_error(first))
        }
    }
}

/// Opens a decoder for the default audio track; returns it with the track id.
fn open_track(format: &dyn FormatReader) -> Result<(Box<dyn AudioDecoder>, u32), AudioError> {
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| AudioError::Unsupported("the file has no audio track".into()))?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| AudioError::Unsupported("the audio track's codec is unknown".into()))?;
    let decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            SymphoniaError::Unsupported(what) => {
                AudioError::Unsupported(format!("the audio codec is not supported ({what})"))
            }
            other => probe_error(other),
        })?;
    Ok((decoder, track.id))
}

fn check_rate(rate: u32) -> Result<(), AudioError> {
    if (MIN_SOURCE_RATE..=MAX_SOURCE_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(AudioError::Unsupported(format!(
            "a sample rate of {rate} Hz is outside {MIN_SOURCE_RATE}..={MAX_SOURCE_RATE} Hz"
        )))
    }
}

fn decode_mono(bytes: &[u8], hint: Option<&str>, max_audio_secs: f64) -> Result<Mono, AudioError> {
    let mut format = open_format(bytes, hint)?;

    // Refuse early when the container declares a length over the limit.
    if let Some(track) = format.default_track(TrackType::Audio) {
        let rate = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .and_then(|a| a.sample_rate);
        if let (Some(frames), Some(rate)) = (track.num_frames, rate) {
            if rate > 0 {
                let secs = frames as f64 / f64::from(rate);
                if secs > max_audio_secs {
                    return Err(AudioError::TooLong {
                        secs,
                        max_secs: max_audio_secs,
                    });
                }
            }
        }
    }

    let (mut decoder, mut track_id) = open_track(format.as_ref())?;
    let mut rate: Option<u32> = None;
    let mut mono: Vec<f32> = Vec::new();
    let mut scratch: Vec<f32> = Vec::new();
    let mut decoded_packets = 0u64;
    let mut skipped_packets = 0u64;
    let mut truncated = false;

    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(SymphoniaError::ResetRequired) => {
                // A chained stream (e.g. concatenated Ogg streams): new track
                // list, new decoder; a sample-rate change is refused below.
                (decoder, track_id) = open_track(format.as_ref())?;
                continue;
            }
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                truncated = true;
                break;
            }
            Err(e) if decoded_packets > 0 => {
                // Damage after good audio: the container cannot be followed
                // any further; keep what decoded, like an early end.
                tracing::warn!(error = %e, decoded_packets, "audio container unreadable past this point, keeping decoded audio");
                truncated = true;
                break;
            }
            Err(e) => return Err(probe_error(e)),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            Err(SymphoniaError::DecodeError(_)) | Err(SymphoniaError::IoError(_)) => {
                skipped_packets += 1;
                continue;
            }
            Err(SymphoniaError::Unsupported(what)) => {
                return Err(AudioError::Unsupported(format!(
                    "the stream uses an unsupported feature ({what})"
                )));
            }
            Err(e) => return Err(AudioError::Corrupt(e.to_string())),
        };
        decoded_packets += 1;
        let buf_rate = buf.spec().rate();
        match rate {
            None => {
                check_rate(buf_rate)?;
                rate = Some(buf_rate);
            }
            Some(r) if r != buf_rate => {
                return Err(AudioError::Unsupported(format!(
                    "the sample rate changes mid-stream ({r} Hz to {buf_rate} Hz)"
                )));
            }
            Some(_) => {}
        }
        let channels = buf.num_planes();
        if channels == 0 || buf.frames() == 0 {
            continue;
        }
        buf.copy_to_vec_interleaved::<f32>(&mut scratch);
        downmix_into(&scratch, channels, &mut mono)?;

        let secs = mono.len() as f64 / f64::from(buf_rate);
        if secs > max_audio_secs {
            return Err(AudioError::TooLong {
                secs,
                max_secs: max_audio_secs,
            });
        }
    }

    if skipped_packets > 0 || truncated {
        tracing::warn!(
            decoded_packets,
            skipped_packets,
            truncated,
            "audio decoded with damaged or missing packets"
        );
    }
    if mono.is_empty() {
        return Err(if skipped_packets > 0 {
            AudioError::Corrupt("none of the audio packets could be decoded".into())
        } else {
            AudioError::NoSamples
        });
    }
    let rate = rate.ok_or(AudioError::NoSamples)?;
    Ok(Mono {
        samples: mono,
        rate,
    })
}

/// Averages interleaved frames of `channels` samples into `out`, clamping
/// to [-1, 1] and refusing non-finite samples.
fn downmix_into(
    interleaved: &[f32],
    channels: usize,
    out: &mut Vec<f32>,
) -> Result<(), AudioError> {
    out.reserve(interleaved.len() / channels);
    if channels == 1 {
        for &s in interleaved {
            if !s.is_finite() {
                return Err(AudioError::NonFinite);
            }
            out.push(s.clamp(-1.0, 1.0));
        }
        return Ok(());
    }
    let scale = 1.0 / channels as f32;
    for frame in interleaved.chunks_exact(channels) {
        let mut sum = 0.0f32;
        for &s in frame {
            if !s.is_finite() {
                return Err(AudioError::NonFinite);
            }
            sum += s;
        }
        out.push((sum * scale).clamp(-1.0, 1.0));
    }
    Ok(())
}

/// Resamples mono audio from `rate` to 16 kHz with rubato's FFT resampler;
/// returns the input unchanged when it is already at 16 kHz.
fn resample_to_16k(samples: &[f32], rate: u32) -> Result<Vec<f32>, AudioError> {
    if rate == TARGET_SAMPLE_RATE {
        return Ok(samples.to_vec());
    }
    let unsupported = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, rate, "resampler refused the audio");
        AudioError::Unsupported(format!("audio at {rate} Hz cannot be resampled to 16 kHz"))
    };
    let mut resampler = Fft::<f32>::new(
        rate as usize,
        TARGET_SAMPLE_RATE as usize,
        1024,
        1,
        FixedSync::Input,
    )
    .map_err(|e| unsupported(&e))?;
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| unsupported(&e))?;
    let output = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|e| unsupported(&e))?;
    Ok(output.take_data())
}

/// WAV files for the crate's unit tests.
#[cfg(test)]
pub(crate) mod test_wav {
    /// `secs` of a 440 Hz tone peaking at `amplitude`, as a mono 16-bit
    /// PCM WAV at `rate` Hz.
    pub fn tone(rate: u32, secs: f32, amplitude: f32) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut out, spec).expect("WAV header");
        for i in 0..(secs * rate as f32) as u32 {
            let t = i as f32 / rate as f32;
            let v = (std::f32::consts::TAU * 440.0 * t).sin() * amplitude;
            w.write_sample(v as i16).expect("WAV sample");
        }
        w.finalize().expect("WAV finalize");
        out.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
                let v = (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin()
                    as f32
                    * amp;
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
        let out = decode_to_mono_16k(&wav, Some("wav")).unwrap();
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
        let out = decode_to_mono_16k(&wav, Some("audio/wav")).unwrap();
        assert_tone(&out, 1.5, 440.0);
    }

    #[test]
    fn wav_at_16k_is_passed_through_unchanged() {
        let frames = tone(SR, 1, 0.5, 440.0, 0.25);
        let wav = wav_bytes(SR, 1, WavFormat::Float32, &frames);
        let out = decode_to_mono_16k(&wav, None).unwrap();
        assert_eq!(out.len(), frames.len());
        for (a, b) in out.iter().zip(frames.iter()) {
            assert_eq!(*a, b[0]);
        }
    }

    #[test]
    fn opposite_channels_average_to_silence() {
        let frames: Vec<Vec<f32>> = tone(SR, 1, 0.2, 440.0, 0.5)
            .into_iter()
            .map(|f| vec![f[0], -f[0]])
            .collect();
        let out = decode_to_mono_16k(&wav_bytes(SR, 2, WavFormat::Float32, &frames), None).unwrap();
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
            let out =
                decode_to_mono_16k(&fixture(name), hint).unwrap_or_else(|e| panic!("{name}: {e}"));
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
        let out = decode_to_mono_16k(&bytes[..bytes.len() * 8 / 10], None).unwrap();
        let secs = out.len() as f64 / f64::from(SR);
        assert!(
            secs > 0.5 && secs < 1.7,
            "decoded {secs} s of a 2 s file cut at 80 %"
        );
    }

    #[test]
    fn empty_input_is_empty() {
        assert_eq!(decode_to_mono_16k(&[], None), Err(AudioError::Empty));
        assert_eq!(AudioError::Empty.code(), "empty_file");
    }

    #[test]
    fn text_garbage_is_unsupported() {
        let garbage = b"this is definitely not an audio file, just some words in ascii".repeat(40);
        match decode_to_mono_16k(&garbage, Some("wav")) {
            Err(AudioError::Unsupported(_)) => {}
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn every_truncation_of_a_wav_header_is_a_clean_error() {
        let wav = wav_bytes(SR, 1, WavFormat::Pcm16, &tone(SR, 1, 0.1, 440.0, 0.5));
        for cut in 1..44 {
            match decode_to_mono_16k(&wav[..cut], Some("wav")) {
                Err(AudioError::Corrupt(_))
                | Err(AudioError::Unsupported(_))
                | Err(AudioError::NoSamples) => {}
                other => panic!("cut at {cut}: expected an error, got {other:?}"),
            }
        }
        // Cut inside the fmt chunk, after the RIFF/WAVE magic: a known
        // container with a broken header.
        match decode_to_mono_16k(&wav[..30], Some("wav")) {
            Err(AudioError::Corrupt(_)) => {}
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn wav_header_without_samples_is_no_samples() {
        let wav = wav_bytes(SR, 1, WavFormat::Pcm16, &[]);
        assert_eq!(decode_to_mono_16k(&wav, None), Err(AudioError::NoSamples));
    }

    #[test]
    fn wav_truncated_mid_data_keeps_what_arrived() {
        let wav = wav_bytes(
            44_100,
            2,
            WavFormat::Pcm16,
            &tone(44_100, 2, 2.0, 440.0, 0.5),
        );
        let out = decode_to_mono_16k(&wav[..wav.len() / 2], None).unwrap();
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
                match decode_to_mono_16k(&bytes[..cut], None) {
                    Ok(out) => assert!(out.iter().all(|s| s.is_finite())),
                    Err(e) => assert!(
                        matches!(
                            e,
                            AudioError::Corrupt(_)
                                | AudioError::NoSamples
                                | AudioError::Unsupported(_)
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
            decode_to_mono_16k(&wav_bytes(SR, 1, WavFormat::Float32, &frames), None),
            Err(AudioError::NonFinite)
        );
        frames[100][0] = f32::INFINITY;
        assert_eq!(
            decode_to_mono_16k(&wav_bytes(SR, 1, WavFormat::Float32, &frames), None),
            Err(AudioError::NonFinite)
        );
    }

    #[test]
    fn loud_float_samples_are_clamped() {
        let frames = tone(SR, 1, 0.1, 440.0, 4.0);
        let out = decode_to_mono_16k(&wav_bytes(SR, 1, WavFormat::Float32, &frames), None).unwrap();
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
        match decode_to_mono_16k_limited(&wav, None, 1.5) {
            Err(AudioError::TooLong { secs, max_secs }) => {
                assert!((secs - 2.0).abs() < 0.01);
                assert_eq!(max_secs, 1.5);
            }
            other => panic!("expected TooLong, got {other:?}"),
        }
        assert!(decode_to_mono_16k_limited(&wav, None, 2.5).is_ok());
        // Streams with no declared length are checked while decoding.
        match decode_to_mono_16k_limited(&fixture("tone440_44k1_stereo.mp3"), None, 0.5) {
            Err(AudioError::TooLong { .. }) => {}
            other => panic!("expected TooLong, got {other:?}"),
        }
    }

    #[test]
    fn absurd_sample_rates_are_unsupported() {
        let wav = wav_bytes(10, 1, WavFormat::Pcm16, &tone(10, 1, 10.0, 1.0, 0.5));
        assert!(matches!(
            decode_to_mono_16k(&wav, None),
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
}

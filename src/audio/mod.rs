//! In-process decoding of uploads to what the worker wants: 16 kHz mono
//! 16-bit PCM (`i16`, what faster-whisper's `decode_audio` produces; the
//! worker scales it by 1/32768).
//!
//! [`decode_upload`] probes the container with symphonia (WAV, FLAC, MP3,
//! Ogg, MP4/M4A, MKV/WebM; codecs PCM, FLAC, MP3, AAC, Vorbis and Opus, see
//! `codecs`) and then *streams*: each packet of the
//! default audio track is decoded, averaged to mono, pushed through
//! rubato's synchronous FFT resampler one 1024-frame chunk at a time (the
//! polynomial resampler aliases, so it is not used; audio already at 16 kHz
//! is not resampled) and appended as `i16`. Nothing is ever held at the
//! source rate beyond one packet and one resampler chunk, so the memory of
//! a decode is its 16 kHz output (32,000 bytes per second of audio) plus a
//! few hundred KiB of decoder state, whatever the source rate or channels.
//!
//! # Limits while decoding
//! - **Length.** The length a container declares is checked before
//!   decoding; the samples decoded are checked after every packet, so a
//!   small file that expands to hours (a FLAC of 10 h of silence with no
//!   declared length) is refused with [`AudioError::TooLong`] as soon as it
//!   passes the limit, having decoded at most the limit plus one packet.
//! - **Memory.** The output grows in steps, each reserved first from a
//!   [`PcmBudget`] (the node's shared decode budget, see
//!   [`crate::ingest`]). When the budget cannot grow, the decode drops what
//!   it holds and goes on *counting* (no resampling, no output): a stream
//!   past the length limit is still a 413, never a budget refusal. If the
//!   whole stream fits the length limit, its exact size is now known: it is
//!   reserved in one go and the stream decoded again; if even that does not
//!   fit, [`AudioError::OverBudget`] (503 + `Retry-After`). A decode never
//!   waits for budget while holding some, so decodes cannot deadlock each
//!   other.
//! - [`measure_upload`] only counts (validation of async jobs): no output,
//!   no budget.
//!
//! This is CPU work (tens of milliseconds per minute of audio): async callers
//! must run it on a blocking thread ([`crate::ingest::Ingest`] does).
//!
//! # What is refused, and how
//! | input | error | HTTP |
//! | --- | --- | --- |
//! | zero bytes | [`AudioError::Empty`] | 400 |
//! | no known container or codec (the answer names the codec: "AC-3", "ALAC", …), no audio track, odd sample rate | [`AudioError::Unsupported`] | 415 |
//! | a known container whose header is cut or malformed (a truncated WAV header), or a stream none of whose packets decode | [`AudioError::Corrupt`] | 400 |
//! | a valid container holding no samples | [`AudioError::NoSamples`] | 400 |
//! | NaN or infinite samples (float WAV) | [`AudioError::NonFinite`] | 400 |
//! | more than [`MAX_SKIPPED_FRACTION`] of the packets fail to decode (bad CRCs, damaged frames) | [`AudioError::Damaged`] | 422 |
//! | longer than the limit | [`AudioError::TooLong`] | 413 |
//! | the decode budget is exhausted | [`AudioError::OverBudget`] | 503 + `Retry-After` |
//!
//! # Truncated and damaged streams
//! A stream that starts right but ends early (an upload cut mid-stream) is
//! decoded up to its last complete packet and accepted: the client gets the
//! transcript of what arrived, as with ffmpeg-based services. This holds for
//! WAV, FLAC, MP3, Ogg and MKV/WebM (the MKV reader needs a forward-only
//! retry, see `open_format`). An MP4/M4A whose index (`moov`) is at the end
//! cannot be decoded once cut, and neither can a file cut inside its
//! headers: both are [`AudioError::Corrupt`] (400), never a panic.
//!
//! Single packets that fail to decode are skipped and counted in the
//! [`DecodeReport`] (the HTTP layer reports them in `X-Audio-Skipped-Packets`);
//! past [`MAX_SKIPPED_FRACTION`] of all packets the audio is refused as
//! [`AudioError::Damaged`] (422) rather than transcribed from fragments (a
//! FLAC with a bad CRC every kilobyte used to answer 200 with an empty text
//! from 0.1 s of 11 s). A stream in which *no* packet decodes is
//! [`AudioError::Corrupt`]. Other mid-stream failures (an unsupported
//! feature, a sample-rate change) refuse
//! the whole file rather than silently
//! dropping the rest of it.
//!
//! Decoding never panics: symphonia documents that some malformed streams
//! may panic inside it, so the decoder runs under `catch_unwind` and such a
//! panic becomes [`AudioError::Corrupt`].

mod budget;
mod codecs;
mod decode;
mod error;
mod probe;
mod report;
mod resample;
#[cfg(test)]
pub(crate) mod test_wav;
#[cfg(test)]
mod tests;
mod upload;

pub use budget::{PcmBudget, Unbudgeted};
pub use error::AudioError;
pub use report::{DecodeReport, Decoded};
pub use resample::{Sink16k, StreamResampler};
pub use upload::Upload;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use bytes::Bytes;

use budget::Output;
use decode::decode_pass;

/// Sample rate of the decoder's output.
pub const TARGET_SAMPLE_RATE: u32 = asr_ipc::SAMPLE_RATE;

/// Bytes of decoded output per second of audio (16 kHz mono `i16`).
pub const PCM_BYTES_PER_SEC: usize = TARGET_SAMPLE_RATE as usize * 2;

/// Lowest source sample rate accepted (telephony is 8 kHz).
pub const MIN_SOURCE_RATE: u32 = 1_000;

/// Highest source sample rate accepted.
pub const MAX_SOURCE_RATE: u32 = 768_000;

/// Largest share of a stream's packets that may fail to decode (and be
/// skipped) before the audio is refused as [`AudioError::Damaged`]: 5 %.
/// Below it, the skipped packets are reported with the answer.
pub const MAX_SKIPPED_FRACTION: f64 = 0.05;

/// `Retry-After` of [`AudioError::OverBudget`].
pub const OVER_BUDGET_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Frames per resampler chunk.
const RESAMPLER_CHUNK: usize = 1024;

/// Smallest growth step of the output, frames (4 s, 128 KiB).
const MIN_GROWTH_FRAMES: usize = 4 * TARGET_SAMPLE_RATE as usize;

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

/// Decodes an upload to 16 kHz mono `i16` PCM, with no limit on its length
/// or memory. See [`decode_upload`]; servers should use that.
///
/// `hint` is the file extension (`"mp3"`, `".wav"`) or MIME type
/// (`"audio/flac"`) if known; the container is always detected from the
/// bytes, so a wrong hint does no harm.
pub fn decode_to_mono_16k(bytes: &[u8], hint: Option<&str>) -> Result<Vec<i16>, AudioError> {
    decode_to_mono_16k_limited(bytes, hint, f64::INFINITY)
}

/// [`decode_to_mono_16k`], refusing audio longer than `max_audio_secs`
/// with [`AudioError::TooLong`].
pub fn decode_to_mono_16k_limited(
    bytes: &[u8],
    hint: Option<&str>,
    max_audio_secs: f64,
) -> Result<Vec<i16>, AudioError> {
    let upload = Upload::Memory(Bytes::copy_from_slice(bytes));
    decode_upload(&upload, hint, max_audio_secs, &mut Unbudgeted).map(|d| d.samples)
}

/// Decodes an upload to 16 kHz mono `i16` PCM, streaming, under a length
/// limit and a memory budget (see the [module doc](self)). On success the
/// budget holds exactly the bytes of the returned samples.
pub fn decode_upload(
    upload: &Upload,
    hint: Option<&str>,
    max_audio_secs: f64,
    budget: &mut dyn PcmBudget,
) -> Result<Decoded, AudioError> {
    guarded(upload, || {
        let max_frames = max_output_frames(max_audio_secs);
        let mut out = Output::collect(budget, max_frames, 0);
        let report = decode_pass(upload, hint, max_audio_secs, &mut out)?;
        if out.keep {
            let samples = out.finish();
            return Ok(Decoded { samples, report });
        }
        // Over budget: the stream fits the length limit and its exact
        // size is known now; reserve it whole, or refuse.
        drop(out);
        let frames = usize::try_from(report.frames).unwrap_or(usize::MAX);
        let needed = frames.saturating_mul(2);
        if !budget.try_resize(needed) {
            budget.try_resize(0);
            return Err(AudioError::OverBudget {
                needed_bytes: needed as u64,
            });
        }
        tracing::debug!(needed, "decode budget reserved in full; decoding again");
        let mut out = Output::collect(budget, max_frames, frames);
        let report = decode_pass(upload, hint, max_audio_secs, &mut out)?;
        if !out.keep {
            // The same bytes decoded differently the second time (cannot
            // happen with a deterministic decoder); refuse rather than loop.
            return Err(AudioError::OverBudget {
                needed_bytes: needed as u64,
            });
        }
        Ok(Decoded {
            samples: out.finish(),
            report,
        })
    })
    .inspect_err(|_| {
        budget.try_resize(0);
    })
}

/// Decodes an upload only to learn its length and damage (no output, no
/// memory beyond the decoder's own), under a length limit.
pub fn measure_upload(
    upload: &Upload,
    hint: Option<&str>,
    max_audio_secs: f64,
) -> Result<DecodeReport, AudioError> {
    guarded(upload, || {
        let mut out = Output::count();
        decode_pass(upload, hint, max_audio_secs, &mut out)
    })
}

/// 16 kHz `i16` to the `f32` in [-1, 1] that faster-whisper feeds its
/// model (`x / 32768`).
pub fn i16_to_f32(samples: &[i16]) -> Vec<f32> {
    samples.iter().map(|&s| f32::from(s) / 32768.0).collect()
}

/// `f32` in [-1, 1] to `i16` (clamped, rounded to nearest).
pub fn f32_to_i16(s: f32) -> i16 {
    (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// Most output frames an audio under `max_audio_secs` can have (plus one
/// resampler chunk of slack).
fn max_output_frames(max_audio_secs: f64) -> usize {
    if !max_audio_secs.is_finite() {
        return usize::MAX;
    }
    (max_audio_secs * f64::from(TARGET_SAMPLE_RATE)).ceil() as usize + 4 * RESAMPLER_CHUNK
}

/// Bytes of 16 kHz `i16` output the decode of `secs` of audio may reserve
/// at most (the output plus resampler slack).
pub fn pcm_bytes_for(secs: f64) -> usize {
    max_output_frames(secs).saturating_mul(2)
}

/// Runs a decode under `catch_unwind`.
fn guarded<T>(upload: &Upload, f: impl FnOnce() -> Result<T, AudioError>) -> Result<T, AudioError> {
    if upload.is_empty() {
        return Err(AudioError::Empty);
    }
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(_) => {
            tracing::error!(bytes = upload.len(), "audio decoder panicked on an upload");
            Err(AudioError::Corrupt(
                "the decoder failed on this file".into(),
            ))
        }
    }
}

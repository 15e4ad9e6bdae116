//! In-process decoding of uploads to what the worker wants: 16 kHz mono
//! 16-bit PCM (`i16`, what faster-whisper's `decode_audio` produces; the
//! worker scales it by 1/32768).
//!
//! [`decode_upload`] probes the container with symphonia (WAV, FLAC, MP3,
//! Ogg/Vorbis, MP4/AAC, MKV/WebM) and then *streams*: each packet of the
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
//! | no known container or codec, no audio track, odd sample rate | [`AudioError::Unsupported`] | 415 |
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

use crate::error_code::Code;
use std::fs::File;
use std::io::{Cursor, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use bytes::Bytes;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;

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
    /// Too much of the audio was lost to damage (see
    /// [`MAX_SKIPPED_FRACTION`]): packets that failed to decode, or gaps
    /// where the container skipped damaged frames.
    #[error(
        "the audio is damaged: {skipped_packets} of {total_packets} audio packets could not be \
         decoded and {gap_secs:.1} s are missing where damaged frames were skipped \
         (more than {max_percent:.0} % lost)",
        max_percent = MAX_SKIPPED_FRACTION * 100.0
    )]
    Damaged {
        /// Packets that failed to decode.
        skipped_packets: u64,
        /// Packets of the audio track.
        total_packets: u64,
        /// Seconds missing between packets (frames the container skipped).
        gap_secs: f64,
    },
    /// The audio is longer than the limit.
    #[error("the audio is longer than the limit of {max_secs:.1} s (at least {secs:.1} s)")]
    TooLong {
        /// Length of the audio when it was refused: the length the container
        /// declares, or what was decoded when the limit was passed.
        secs: f64,
        /// The limit, seconds.
        max_secs: f64,
    },
    /// The node's decode memory budget cannot hold this audio now (a
    /// capacity refusal, not a fault of the file).
    #[error(
        "the server cannot hold another {:.0} MiB of decoded audio right now; retry later",
        *needed_bytes as f64 / (1024.0 * 1024.0)
    )]
    OverBudget {
        /// Bytes of 16 kHz PCM the audio needs.
        needed_bytes: u64,
    },
}

impl AudioError {
    /// A stable, machine-readable code for clients.
    pub fn code(&self) -> Code {
        match self {
            AudioError::Empty => Code::EmptyFile,
            AudioError::Unsupported(_) => Code::UnsupportedAudio,
            AudioError::Corrupt(_) => Code::CorruptAudio,
            AudioError::NoSamples => Code::NoAudio,
            AudioError::NonFinite => Code::InvalidSamples,
            AudioError::Damaged { .. } => Code::DamagedAudio,
            AudioError::TooLong { .. } => Code::AudioTooLong,
            AudioError::OverBudget { .. } => Code::DecodeBusy,
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

/// An upload's bytes: in memory (small bodies) or spooled to an unnamed
/// temporary file (see [`crate::http::form`]). Decoding reads either the
/// same way, so a spooled upload is never loaded into memory.
#[derive(Debug)]
pub enum Upload {
    /// The bytes.
    Memory(Bytes),
    /// A file holding `len` bytes from offset 0 (deleted by the OS when
    /// closed, if it came from `tempfile::tempfile`).
    File {
        /// The file.
        file: File,
        /// Its length.
        len: u64,
    },
}

impl From<Vec<u8>> for Upload {
    fn from(v: Vec<u8>) -> Self {
        Upload::Memory(Bytes::from(v))
    }
}

impl From<Bytes> for Upload {
    fn from(b: Bytes) -> Self {
        Upload::Memory(b)
    }
}

impl Upload {
    /// Its length, bytes.
    pub fn len(&self) -> u64 {
        match self {
            Upload::Memory(b) => b.len() as u64,
            Upload::File { len, .. } => *len,
        }
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it lives in a file.
    pub fn is_spooled(&self) -> bool {
        matches!(self, Upload::File { .. })
    }

    /// Copies every byte to `w` (blocking for a file).
    pub fn copy_to(&self, w: &mut impl std::io::Write) -> std::io::Result<u64> {
        match self {
            Upload::Memory(b) => {
                w.write_all(b)?;
                Ok(b.len() as u64)
            }
            Upload::File { file, .. } => {
                let mut f = file.try_clone()?;
                f.seek(SeekFrom::Start(0))?;
                std::io::copy(&mut f, w)
            }
        }
    }

    /// The bytes in memory (blocking for a file; for tests and small
    /// uploads).
    pub fn to_vec(&self) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(self.len() as usize);
        self.copy_to(&mut v)?;
        Ok(v)
    }

    /// A seekable source positioned at the start.
    fn source(&self) -> Result<Box<dyn MediaSource + '_>, AudioError> {
        match self {
            Upload::Memory(b) => Ok(Box::new(Cursor::new(b.as_ref()))),
            Upload::File { file, .. } => {
                let mut f = file.try_clone().map_err(read_error)?;
                f.seek(SeekFrom::Start(0)).map_err(read_error)?;
                Ok(Box::new(f))
            }
        }
    }

    /// A forward-only source positioned at the start.
    fn forward_source(&self) -> Result<Box<dyn MediaSource + '_>, AudioError> {
        match self {
            Upload::Memory(b) => Ok(Box::new(ReadOnlySource::new(Cursor::new(b.as_ref())))),
            Upload::File { file, .. } => {
                let mut f = file.try_clone().map_err(read_error)?;
                f.seek(SeekFrom::Start(0)).map_err(read_error)?;
                Ok(Box::new(ReadOnlySource::new(f)))
            }
        }
    }
}

/// A spooled upload that cannot be read back: the server's fault, but
/// reported as undecodable rather than hidden (it is logged).
fn read_error(e: std::io::Error) -> AudioError {
    tracing::error!(error = %e, "could not read a spooled upload back");
    AudioError::Corrupt("the upload could not be read back".into())
}

/// Where a decode reserves the memory of its output before it grows.
/// [`crate::ingest::PcmLease`] is the node's; [`Unbudgeted`] never refuses.
pub trait PcmBudget {
    /// Sets this decode's reservation to `total_bytes` (growing or
    /// shrinking it); `false`, with the reservation unchanged, when growing
    /// does not fit. Never blocks.
    fn try_resize(&mut self, total_bytes: usize) -> bool;
}

/// A [`PcmBudget`] without limit (tests, embedding hosts that bound memory
/// themselves).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unbudgeted;

impl PcmBudget for Unbudgeted {
    fn try_resize(&mut self, _total_bytes: usize) -> bool {
        true
    }
}

/// What a decode saw.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeReport {
    /// Seconds of audio at 16 kHz.
    pub audio_secs: f64,
    /// Frames of 16 kHz output.
    pub frames: u64,
    /// Source sample rate.
    pub source_rate: u32,
    /// Packets decoded.
    pub decoded_packets: u64,
    /// Packets that failed to decode and were skipped (each is a gap).
    pub skipped_packets: u64,
    /// The stream ended early (cut upload) or became unreadable after good
    /// audio; what decoded before is kept.
    pub truncated: bool,
    /// The container became unreadable after good audio (not a clean cut):
    /// the rest of the file was dropped.
    pub unreadable_tail: bool,
    /// Frames at 16 kHz the container declares, if it does.
    pub declared_frames: Option<u64>,
    /// Seconds missing between packets: a packet whose timestamp lies past
    /// the end of the one before means the container skipped frames (a
    /// FLAC reader resyncing past frames with bad CRCs does that silently).
    pub gap_secs: f64,
}

impl DecodeReport {
    /// Whether more than [`MAX_SKIPPED_FRACTION`] of the audio was lost.
    pub fn too_damaged(&self) -> bool {
        let total = self.decoded_packets + self.skipped_packets;
        let packets = self.skipped_packets as f64 > MAX_SKIPPED_FRACTION * total as f64;
        let gaps = self.gap_secs > MAX_SKIPPED_FRACTION * (self.audio_secs + self.gap_secs);
        packets || gaps
    }
}

/// A decoded upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// 16 kHz mono PCM.
    pub samples: Vec<i16>,
    /// What the decode saw.
    pub report: DecodeReport,
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

/// The 16 kHz side of a decode: collects `i16` under a budget, or counts.
struct Output<'b> {
    samples: Vec<i16>,
    /// Still collecting (false: counting only).
    keep: bool,
    budget: Option<&'b mut dyn PcmBudget>,
    /// Capacity is never grown past this.
    max_frames: usize,
    /// Frames produced (kept or not).
    frames: u64,
}

impl<'b> Output<'b> {
    /// Collects, with `prealloc` frames already reserved in `budget`.
    fn collect(budget: &'b mut dyn PcmBudget, max_frames: usize, prealloc: usize) -> Self {
        Self {
            samples: Vec::with_capacity(prealloc),
            keep: true,
            budget: Some(budget),
            max_frames,
            frames: 0,
        }
    }

    fn count() -> Self {
        Self {
            samples: Vec::new(),
            keep: false,
            budget: None,
            max_frames: 0,
            frames: 0,
        }
    }

    /// Appends 16 kHz samples (or counts them).
    fn push(&mut self, chunk: &[f32]) {
        self.frames += chunk.len() as u64;
        if !self.keep {
            return;
        }
        let need = self.samples.len() + chunk.len();
        if need > self.samples.capacity() {
            let cap = self.samples.capacity();
            let grown = need
                .max(cap + (cap / 8).max(MIN_GROWTH_FRAMES))
                .min(self.max_frames.max(need));
            let ok = self
                .budget
                .as_mut()
                .is_some_and(|b| b.try_resize(grown * 2));
            if !ok {
                // Over budget: stop holding audio, keep counting.
                self.keep = false;
                self.samples = Vec::new();
                if let Some(b) = self.budget.as_mut() {
                    b.try_resize(0);
                }
                return;
            }
            self.samples.reserve_exact(grown - self.samples.len());
        }
        self.samples.extend(chunk.iter().map(|&s| f32_to_i16(s)));
    }

    /// The samples, with the budget shrunk to their size.
    fn finish(mut self) -> Vec<i16> {
        self.samples.shrink_to_fit();
        if let Some(b) = self.budget.as_mut() {
            b.try_resize(self.samples.len() * 2);
        }
        std::mem::take(&mut self.samples)
    }
}

/// Mono audio at the source rate to 16 kHz, chunk by chunk: rubato's FFT
/// resampler fed fixed 1024-frame input chunks, its start-up delay trimmed
/// and the output cut to `ceil(ratio × input)`, exactly as rubato's
/// `process_all` does for a clip in memory.
struct StreamResampler {
    fft: Fft<f32>,
    ratio: f64,
    pending: Vec<f32>,
    out: Vec<f32>,
    to_trim: usize,
    input_frames: u64,
    output_frames: u64,
}

impl StreamResampler {
    fn new(rate: u32) -> Result<Self, AudioError> {
        let fft = Fft::<f32>::new(
            rate as usize,
            TARGET_SAMPLE_RATE as usize,
            RESAMPLER_CHUNK,
            1,
            FixedSync::Input,
        )
        .map_err(|e| resample_error(&e, rate))?;
        let out = vec![0.0; fft.output_frames_max()];
        let to_trim = fft.output_delay();
        Ok(Self {
            ratio: f64::from(TARGET_SAMPLE_RATE) / f64::from(rate),
            fft,
            pending: Vec::with_capacity(RESAMPLER_CHUNK * 2),
            out,
            to_trim,
            input_frames: 0,
            output_frames: 0,
        })
    }

    fn push(&mut self, mono: &[f32], sink: &mut Output<'_>) -> Result<(), AudioError> {
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
            if !sink.keep {
                break;
            }
        }
        self.pending.drain(..offset.min(self.pending.len()));
        Ok(())
    }

    /// One call of the resampler at `offset` of `pending`.
    fn chunk(
        &mut self,
        offset: usize,
        partial: Option<usize>,
        sink: &mut Output<'_>,
    ) -> Result<usize, AudioError> {
        let rate = (f64::from(TARGET_SAMPLE_RATE) / self.ratio).round() as u32;
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

    /// Flushes the last partial chunk and the resampler's delay.
    fn finish(mut self, sink: &mut Output<'_>) -> Result<(), AudioError> {
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
        while self.output_frames < expected && sink.keep {
            self.chunk(0, Some(0), sink)?;
        }
        Ok(())
    }
}

fn resample_error(e: &dyn std::fmt::Display, rate: u32) -> AudioError {
    tracing::warn!(error = %e, rate, "resampler refused the audio");
    AudioError::Unsupported(format!("audio at {rate} Hz cannot be resampled to 16 kHz"))
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
    upload: &'a Upload,
    hint: Option<&str>,
) -> Result<Box<dyn FormatReader + 'a>, AudioError> {
    let probe = symphonia::default::get_probe();
    let hint = make_hint(hint);
    let seekable = MediaSourceStream::new(upload.source()?, Default::default());
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
            let forward = MediaSourceStream::new(upload.forward_source()?, Default::default());
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

/// One pass over the stream: every packet decoded, downmixed, resampled
/// into `out` (unless `out` only counts), the length limit checked after
/// each packet.
fn decode_pass(
    upload: &Upload,
    hint: Option<&str>,
    max_audio_secs: f64,
    out: &mut Output<'_>,
) -> Result<DecodeReport, AudioError> {
    let mut format = open_format(upload, hint)?;

    // Refuse early when the container declares a length over the limit.
    let mut declared_frames = None;
    if let Some(track) = format.default_track(TrackType::Audio) {
        let rate = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .and_then(|a| a.sample_rate);
        if let (Some(frames), Some(rate)) = (track.num_frames, rate) {
            if rate > 0 {
                let secs = frames as f64 / f64::from(rate);
                declared_frames = Some((secs * f64::from(TARGET_SAMPLE_RATE)).ceil() as u64);
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
    let mut tick_secs = tick_secs(format.as_ref(), track_id);
    let mut next_pts: Option<i64> = None;
    let mut gap_ticks = 0f64;
    let mut rate: Option<u32> = None;
    let mut resampler: Option<StreamResampler> = None;
    let mut source_frames = 0u64;
    let mut mono: Vec<f32> = Vec::new();
    let mut scratch: Vec<f32> = Vec::new();
    let mut report = DecodeReport {
        declared_frames,
        ..DecodeReport::default()
    };

    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(SymphoniaError::ResetRequired) => {
                // A chained stream (e.g. concatenated Ogg streams): new track
                // list, new decoder; a sample-rate change is refused below.
                report.gap_secs += gap_ticks * tick_secs.unwrap_or(0.0);
                gap_ticks = 0.0;
                (decoder, track_id) = open_track(format.as_ref())?;
                tick_secs = self::tick_secs(format.as_ref(), track_id);
                next_pts = None;
                continue;
            }
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                report.truncated = true;
                break;
            }
            Err(e) if report.decoded_packets > 0 => {
                // Damage after good audio: the container cannot be followed
                // any further; keep what decoded, like an early end.
                tracing::warn!(error = %e, decoded_packets = report.decoded_packets, "audio container unreadable past this point, keeping decoded audio");
                report.truncated = true;
                report.unreadable_tail = true;
                break;
            }
            Err(e) => return Err(probe_error(e)),
        };
        if packet.track_id != track_id {
            continue;
        }
        let pts = packet.pts.get();
        if let Some(expected) = next_pts {
            // (Not after the first packet: Vorbis's first block overlaps.)
            if pts > expected && report.decoded_packets + report.skipped_packets > 1 {
                gap_ticks += (pts - expected) as f64;
            }
        }
        // Containers that do not time their packets (MKV blocks: no
        // duration) cannot show gaps.
        next_pts = (!packet.dur.is_zero())
            .then(|| pts.saturating_add(i64::try_from(packet.dur.get()).unwrap_or(i64::MAX)));
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            Err(SymphoniaError::DecodeError(_)) | Err(SymphoniaError::IoError(_)) => {
                report.skipped_packets += 1;
                continue;
            }
            Err(SymphoniaError::Unsupported(what)) => {
                return Err(AudioError::Unsupported(format!(
                    "the stream uses an unsupported feature ({what})"
                )));
            }
            Err(e) => return Err(AudioError::Corrupt(e.to_string())),
        };
        report.decoded_packets += 1;
        let buf_rate = buf.spec().rate();
        match rate {
            None => {
                check_rate(buf_rate)?;
                rate = Some(buf_rate);
                if buf_rate != TARGET_SAMPLE_RATE {
                    resampler = Some(StreamResampler::new(buf_rate)?);
                }
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
        mono.clear();
        downmix_into(&scratch, channels, &mut mono)?;
        source_frames += mono.len() as u64;

        let secs = source_frames as f64 / f64::from(buf_rate);
        if secs > max_audio_secs {
            return Err(AudioError::TooLong {
                secs,
                max_secs: max_audio_secs,
            });
        }
        if !out.keep {
            continue;
        }
        match resampler.as_mut() {
            Some(r) => r.push(&mono, out)?,
            None => out.push(&mono),
        }
    }

    let rate = match rate {
        Some(rate) if source_frames > 0 => rate,
        _ => {
            let declared = report.declared_frames.is_some_and(|f| f > 0);
            return Err(if report.skipped_packets > 0 || declared {
                AudioError::Corrupt("none of the audio packets could be decoded".into())
            } else {
                AudioError::NoSamples
            });
        }
    };
    if let Some(r) = resampler.take() {
        if out.keep {
            r.finish(out)?;
        }
    }
    // What the output holds, or (counting) would hold.
    report.frames = if rate == TARGET_SAMPLE_RATE {
        source_frames
    } else {
        (source_frames as f64 * f64::from(TARGET_SAMPLE_RATE) / f64::from(rate)).ceil() as u64
    };
    report.source_rate = rate;
    report.audio_secs = report.frames as f64 / f64::from(TARGET_SAMPLE_RATE);
    report.gap_secs += gap_ticks * tick_secs.unwrap_or(0.0);

    if report.skipped_packets > 0 || report.truncated || report.gap_secs > 0.0 {
        tracing::warn!(
            decoded_packets = report.decoded_packets,
            skipped_packets = report.skipped_packets,
            gap_secs = report.gap_secs,
            truncated = report.truncated,
            "audio decoded with damaged or missing packets"
        );
    }
    if report.too_damaged() {
        return Err(AudioError::Damaged {
            skipped_packets: report.skipped_packets,
            total_packets: report.decoded_packets + report.skipped_packets,
            gap_secs: (report.gap_secs * 1000.0).round() / 1000.0,
        });
    }
    Ok(report)
}

/// Seconds per timestamp tick of a track, when it says.
fn tick_secs(format: &dyn FormatReader, track_id: u32) -> Option<f64> {
    format
        .tracks()
        .iter()
        .find(|t| t.id == track_id)
        .and_then(|t| t.time_base)
        .map(|tb| f64::from(tb.numer.get()) / f64::from(tb.denom.get()))
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

    /// [`decode_to_mono_16k`] as `f32`.
    fn decode(bytes: &[u8], hint: Option<&str>) -> Result<Vec<f32>, AudioError> {
        decode_to_mono_16k(bytes, hint).map(|s| i16_to_f32(&s))
    }

    /// [`decode_to_mono_16k_limited`] as `f32`.
    fn decode_limited(bytes: &[u8], hint: Option<&str>, max: f64) -> Result<Vec<f32>, AudioError> {
        decode_to_mono_16k_limited(bytes, hint, max).map(|s| i16_to_f32(&s))
    }

    /// A decode without the `catch_unwind` guard (a panic fails the test).
    fn decode_inner(
        bytes: &[u8],
        hint: Option<&str>,
        max: f64,
    ) -> Result<DecodeReport, AudioError> {
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
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/speech/clip10.flac");
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
}

//! [`AudioError`]: why an upload could not be turned into samples, with its
//! stable code.

use super::MAX_SKIPPED_FRACTION;
use crate::error_code::Code;

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

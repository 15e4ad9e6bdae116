//! What a decode saw ([`DecodeReport`]) and what it produced ([`Decoded`]).

use super::MAX_SKIPPED_FRACTION;

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

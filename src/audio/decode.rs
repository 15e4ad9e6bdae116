//! One streaming pass over an upload: packets decoded, downmixed, resampled
//! and checked against the length limit.

use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatReader, TrackType};

use super::budget::Output;
use super::probe::{check_rate, open_format, open_track, probe_error};
use super::resample::StreamResampler;
use super::{AudioError, DecodeReport, Upload, TARGET_SAMPLE_RATE};

/// One pass over the stream: every packet decoded, downmixed, resampled
/// into `out` (unless `out` only counts), the length limit checked after
/// each packet.
pub(super) fn decode_pass(
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
    if let Some(mut r) = resampler.take() {
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
pub(super) fn tick_secs(format: &dyn FormatReader, track_id: u32) -> Option<f64> {
    format
        .tracks()
        .iter()
        .find(|t| t.id == track_id)
        .and_then(|t| t.time_base)
        .map(|tb| f64::from(tb.numer.get()) / f64::from(tb.denom.get()))
}

/// Averages interleaved frames of `channels` samples into `out`, clamping
/// to [-1, 1] and refusing non-finite samples.
pub(super) fn downmix_into(
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

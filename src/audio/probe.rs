//! Finding the container and the audio track's decoder, and mapping
//! symphonia's probe errors to [`AudioError`].

use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use super::{AudioError, Upload, MAX_SOURCE_RATE, MIN_SOURCE_RATE};

pub(super) fn make_hint(hint: Option<&str>) -> Hint {
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
pub(super) fn probe_error(e: SymphoniaError) -> AudioError {
    match e {
        SymphoniaError::Unsupported(what) if is_no_format(what) => AudioError::Unsupported(
            "the file is not in a recognised audio format \
             (wav, flac, mp3, ogg, webm/mkv, mp4/m4a)"
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
pub(super) fn is_no_format(what: &str) -> bool {
    what.contains("no suitable format reader")
}

/// Probes the container. A recognised container that fails to open is
/// tried once more as a forward-only stream: over a seekable source some
/// readers look past the data they need (the MKV/WebM reader fails on any
/// file cut short, which is common for browser `MediaRecorder` uploads);
/// read forward, they decode what is there.
pub(super) fn open_format<'a>(
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
pub(super) fn open_track(
    format: &dyn FormatReader,
) -> Result<(Box<dyn AudioDecoder>, u32), AudioError> {
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| AudioError::Unsupported("the file has no audio track".into()))?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| AudioError::Unsupported("the audio track's codec is unknown".into()))?;
    let registry = super::codecs::registry();
    if registry.get_audio_decoder(params.codec).is_none() {
        return Err(AudioError::Unsupported(format!(
            "the audio codec {} is not supported (supported: PCM, FLAC, MP3, AAC, Vorbis, Opus)",
            super::codecs::codec_name(params.codec)
        )));
    }
    let decoder = registry
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            SymphoniaError::Unsupported(what) => AudioError::Unsupported(format!(
                "the {} stream is not supported ({what})",
                super::codecs::codec_name(params.codec)
            )),
            other => probe_error(other),
        })?;
    Ok((decoder, track.id))
}

pub(super) fn check_rate(rate: u32) -> Result<(), AudioError> {
    if (MIN_SOURCE_RATE..=MAX_SOURCE_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(AudioError::Unsupported(format!(
            "a sample rate of {rate} Hz is outside {MIN_SOURCE_RATE}..={MAX_SOURCE_RATE} Hz"
        )))
    }
}

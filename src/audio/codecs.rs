//! The audio codecs the node decodes, and their names for refusals.
//!
//! symphonia's own decoders (PCM, ADPCM, FLAC, MP3, AAC-LC, Vorbis) plus
//! Opus through libopus (`symphonia-adapter-libopus`): WebM/Opus is what
//! every browser's `MediaRecorder` produces and Ogg/Opus what many phones
//! and messengers do. A track in any other codec is refused 415 with the
//! codec's name ([`codec_name`]), e.g. "AC-3" or "ALAC".

use std::sync::LazyLock;

use symphonia::core::codecs::audio::well_known::*;
use symphonia::core::codecs::audio::AudioCodecId;
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia_adapter_libopus::OpusDecoder;

/// The registry: symphonia's enabled codecs and Opus.
pub(super) fn registry() -> &'static CodecRegistry {
    static REGISTRY: LazyLock<CodecRegistry> = LazyLock::new(|| {
        let mut registry = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut registry);
        registry.register_audio_decoder::<OpusDecoder>();
        registry
    });
    &REGISTRY
}

/// A human name for a codec the demuxer recognised, for a 415 answer.
pub(super) fn codec_name(id: AudioCodecId) -> String {
    let known = [
        (CODEC_ID_AC3, "AC-3"),
        (CODEC_ID_EAC3, "E-AC-3"),
        (CODEC_ID_AC4, "AC-4"),
        (CODEC_ID_DCA, "DTS"),
        (CODEC_ID_TRUEHD, "Dolby TrueHD"),
        (CODEC_ID_ALAC, "ALAC (Apple Lossless)"),
        (CODEC_ID_WAVPACK, "WavPack"),
        (CODEC_ID_MONKEYS_AUDIO, "Monkey's Audio"),
        (CODEC_ID_TTA, "TTA"),
        (CODEC_ID_WMA, "WMA"),
        (CODEC_ID_SPEEX, "Speex"),
        (CODEC_ID_MUSEPACK, "Musepack"),
        (CODEC_ID_MP1, "MPEG-1 Layer I"),
        (CODEC_ID_MP2, "MPEG-1 Layer II"),
        (CODEC_ID_MP3, "MP3"),
        (CODEC_ID_AAC, "AAC"),
        (CODEC_ID_OPUS, "Opus"),
        (CODEC_ID_VORBIS, "Vorbis"),
        (CODEC_ID_FLAC, "FLAC"),
        (CODEC_ID_ATRAC3, "ATRAC3"),
        (CODEC_ID_ATRAC9, "ATRAC9"),
        (CODEC_ID_COOK, "RealAudio Cook"),
        (CODEC_ID_SBC, "SBC"),
        (CODEC_ID_APTX, "aptX"),
        (CODEC_ID_LDAC, "LDAC"),
        (CODEC_ID_ADPCM_G722, "G.722"),
        (CODEC_ID_ADPCM_G726, "G.726"),
    ];
    known
        .iter()
        .find(|(k, _)| *k == id)
        .map_or_else(|| format!("codec {id}"), |(_, name)| (*name).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_is_registered_and_other_codecs_have_names() {
        assert!(registry().get_audio_decoder(CODEC_ID_OPUS).is_some());
        assert!(registry().get_audio_decoder(CODEC_ID_FLAC).is_some());
        assert!(registry().get_audio_decoder(CODEC_ID_AC3).is_none());
        assert_eq!(codec_name(CODEC_ID_AC3), "AC-3");
        assert_eq!(
            codec_name(symphonia::core::codecs::audio::CODEC_ID_NULL_AUDIO),
            "codec 0x0"
        );
    }

    fn read(dir: &str, name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{dir}/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn browser_and_phone_formats_decode_to_the_same_audio_as_the_wav() {
        let wav = crate::audio::decode_to_mono_16k(&read("speech", "clip10.wav"), None).unwrap();
        for name in ["clip10.webm", "clip10.opus", "clip10.m4a"] {
            let pcm = crate::audio::decode_to_mono_16k(&read("speech", name), None)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            // Same length within the codecs' padding (Opus pre-skip, AAC
            // priming), and the same loudness (a lossy copy of the speech,
            // not silence or noise).
            let secs = |s: &[i16]| s.len() as f64 / 16_000.0;
            assert!(
                (secs(&pcm) - secs(&wav)).abs() < 0.1,
                "{name}: {} s vs {} s",
                secs(&pcm),
                secs(&wav)
            );
            let rms = |s: &[i16]| {
                (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
            };
            let ratio = rms(&pcm) / rms(&wav);
            assert!(
                (0.8..1.25).contains(&ratio),
                "{name}: loudness ratio {ratio}"
            );
        }
    }

    #[test]
    fn an_unsupported_codec_is_refused_by_name() {
        let err =
            crate::audio::decode_to_mono_16k(&read("audio", "tone440_48k_mono_ac3.mka"), None)
                .unwrap_err();
        assert_eq!(err.code(), crate::error_code::Code::UnsupportedAudio);
        assert!(err.to_string().contains("AC-3"), "{err}");
    }
}

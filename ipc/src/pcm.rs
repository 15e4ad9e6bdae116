//! 16-bit PCM on the wire ([`Pcm`]), and the borrowed forms the parent
//! encodes from without copying the audio.

use serde::{Deserialize, Serialize};

use crate::JobHeader;

/// 16-bit PCM on the wire: postcard bytes (a length, then the samples
/// little-endian), so a chunk is copied, not encoded sample by sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pcm(pub Vec<i16>);

impl Serialize for Pcm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PcmRef(&self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Pcm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Pcm;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("little-endian 16-bit PCM bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Pcm, E> {
                if !b.len().is_multiple_of(2) {
                    return Err(E::invalid_length(b.len(), &"an even number of bytes"));
                }
                Ok(Pcm(b
                    .chunks_exact(2)
                    .map(|p| i16::from_le_bytes([p[0], p[1]]))
                    .collect()))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Borrowed [`Pcm`]; serialises to exactly the same bytes.
#[derive(Debug, Clone, Copy)]
pub struct PcmRef<'a>(pub &'a [i16]);

impl Serialize for PcmRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.0.len() * 2);
        for x in self.0 {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        s.serialize_bytes(&bytes)
    }
}

/// A borrowed view of [`ToWorker`]'s first two variants with the same wire
/// layout, so the parent can send PCM it keeps (for a retry) without
/// copying all of it.
#[derive(Debug, Serialize)]
pub enum ToWorkerRef<'a> {
    /// Same as [`ToWorker::Job`].
    Job(&'a JobHeader),
    /// Same as [`ToWorker::AudioChunk`].
    AudioChunk(AudioChunkRef<'a>),
}

/// Borrowed [`AudioChunk`]; serialises to exactly the same bytes.
#[derive(Debug, Serialize)]
pub struct AudioChunkRef<'a> {
    /// See [`AudioChunk::job_id`].
    pub job_id: u64,
    /// See [`AudioChunk::pcm`].
    pub pcm: PcmRef<'a>,
}

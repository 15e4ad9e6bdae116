//! Length-prefixed postcard frames: [`encode`] / [`decode`], the blocking
//! [`read_frame`] / [`write_frame`], and the async [`codec`].

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::{MAX_FRAME_LEN, MAX_JOB_SAMPLES};

/// A frame that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The payload is not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// The frame is longer than [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLong(usize),
    /// A job announces more samples than [`MAX_JOB_SAMPLES`].
    #[error("a job of {0} samples exceeds the limit of {MAX_JOB_SAMPLES}")]
    TooManySamples(u64),
    /// Reading or writing the stream failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Serialises a message into a frame payload (without the length prefix).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let bytes = postcard::to_stdvec(msg)?;
    if bytes.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(bytes.len()));
    }
    Ok(bytes)
}

/// Parses a frame payload. Never panics, whatever the bytes.
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, FrameError> {
    Ok(postcard::from_bytes(payload)?)
}

/// Writes one length-prefixed frame and flushes.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    write_payload(w, &encode(msg)?)
}

/// Writes an already encoded payload (from [`encode`]) as one
/// length-prefixed frame and flushes.
pub fn write_payload<W: Write>(w: &mut W, payload: &[u8]) -> Result<(), FrameError> {
    if payload.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(payload.len()));
    }
    w.write_all(&(payload.len() as u32).to_be_bytes())?;
    w.write_all(payload)?;
    w.flush()?;
    Ok(())
}

/// Reads one length-prefixed frame payload.
///
/// Returns `Ok(None)` on a clean EOF before a frame starts; EOF inside a
/// frame is an error, and so is a length above [`MAX_FRAME_LEN`].
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// The codec the async side uses: 4-byte big-endian length, limit
/// [`MAX_FRAME_LEN`]. Wire-compatible with [`read_frame`]/[`write_frame`].
pub fn codec() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

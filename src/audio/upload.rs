//! [`Upload`]: an upload's bytes, in memory or spooled to a file, read the
//! same way by the decoder.

use std::fs::File;
use std::io::{Cursor, Seek, SeekFrom};

use bytes::Bytes;
use symphonia::core::io::{MediaSource, ReadOnlySource};

use super::AudioError;

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
    pub(super) fn source(&self) -> Result<Box<dyn MediaSource + '_>, AudioError> {
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
    pub(super) fn forward_source(&self) -> Result<Box<dyn MediaSource + '_>, AudioError> {
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
pub(super) fn read_error(e: std::io::Error) -> AudioError {
    tracing::error!(error = %e, "could not read a spooled upload back");
    AudioError::Corrupt("the upload could not be read back".into())
}

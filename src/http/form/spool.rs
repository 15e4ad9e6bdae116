//! Receiving the `file` part: in memory up to a threshold, then streamed
//! to an unnamed temporary file.

use std::path::PathBuf;

use actix_multipart::{Field, MultipartError};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::FormLimits;
use crate::audio::Upload;
use crate::http::error::ApiError;

pub(super) async fn read_file(
    field: &mut Field,
    capacity: usize,
    limits: &FormLimits,
    map_err: &impl Fn(MultipartError) -> ApiError,
) -> Result<Upload, ApiError> {
    let mut spool = Spool::new(capacity, limits);
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(map_err)?;
        if spool.len + chunk.len() as u64 > limits.max_file_bytes as u64 {
            return Err(ApiError::upload_too_large(limits.max_file_bytes));
        }
        spool.write(&chunk).await.map_err(spool_error)?;
    }
    spool.finish().await.map_err(spool_error)
}

pub(super) fn spool_error(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "could not spool an upload to disk");
    ApiError::internal()
}

/// The `file` part: in memory up to the threshold, then in an unnamed
/// temporary file.
pub(super) struct Spool {
    mem: Vec<u8>,
    file: Option<tokio::fs::File>,
    len: u64,
    threshold: usize,
    dir: Option<PathBuf>,
}

impl Spool {
    fn new(capacity: usize, limits: &FormLimits) -> Self {
        Self {
            mem: Vec::with_capacity(capacity),
            file: None,
            len: 0,
            threshold: limits.spool_threshold,
            dir: limits.spool_dir.clone(),
        }
    }

    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.len += chunk.len() as u64;
        if let Some(f) = self.file.as_mut() {
            return f.write_all(chunk).await;
        }
        if self.mem.len() + chunk.len() <= self.threshold {
            self.mem.extend_from_slice(chunk);
            return Ok(());
        }
        let dir = self.dir.clone();
        let file = tokio::task::spawn_blocking(move || match dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        })
        .await
        .map_err(std::io::Error::other)??;
        let mut file = tokio::fs::File::from_std(file);
        file.write_all(&std::mem::take(&mut self.mem)).await?;
        file.write_all(chunk).await?;
        self.file = Some(file);
        Ok(())
    }

    async fn finish(self) -> std::io::Result<Upload> {
        match self.file {
            None => Ok(Upload::Memory(Bytes::from(self.mem))),
            Some(mut f) => {
                f.flush().await?;
                Ok(Upload::File {
                    file: f.into_std().await,
                    len: self.len,
                })
            }
        }
    }
}

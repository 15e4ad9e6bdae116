//! Acceptance: a submission becomes a durable, queued job, or is refused.
//! The order is fixed (see the [jobs module doc](crate::jobs)): backlog
//! reservation → size → validate (decode, counting only) → upload on disk
//! → record committed → registered in memory → `202`. The size check, the
//! validation and the spec it yields are shared with the PostgreSQL path
//! ([`crate::jobs::shared`]), which puts its fleet-wide backlog check
//! between the size check and the validation.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::table::Entry;
use super::{EngineLimits, Inner, JobService};
use crate::api::{DecodeOptions, Fault, Granularities, ResponseFormat};
use crate::audio::{AudioError, Upload};
use crate::ingest::{Ingest, IngestError};
use crate::jobs::store::{self, StoredJob, Write};
use crate::jobs::types::{now_ms, JobId, JobSpec, JobStatus, JobView};

/// Longest an accept waits for the store's commit before it answers 503.
const INSERT_TIMEOUT: Duration = Duration::from_secs(30);

/// A job to accept: the upload as sent and how to decode and render it.
#[derive(Debug)]
pub struct JobSubmission {
    /// The upload (in memory or spooled), stored as it is.
    pub upload: Upload,
    /// Decoder hint: file extension or content type.
    pub file_hint: Option<String>,
    /// Decode options.
    pub options: DecodeOptions,
    /// Default rendering of the result.
    pub response_format: ResponseFormat,
    /// Timestamp detail of `verbose_json`.
    pub granularities: Granularities,
    /// Injected worker fault (tests; the node ignores it unless fault
    /// injection is enabled).
    pub fault: Option<Fault>,
}

/// Why a submission was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// The async backlog is full (429).
    #[error("the async job backlog is full ({pending} jobs)")]
    BacklogFull {
        /// Jobs queued or running.
        pending: usize,
        /// When a slot is likely to be free.
        retry_after: Duration,
    },
    /// The upload is larger than the node's limit (413).
    #[error("the upload is larger than the limit of {limit} bytes")]
    UploadTooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// The upload is not usable audio (400/413/415/422), or could not be
    /// decoded now (503 `decode_busy`).
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The job could not be made durable (503).
    #[error("the job store is unavailable: {0}")]
    Store(String),
    /// The service is shutting down (503).
    #[error("the job service is shutting down")]
    ShuttingDown,
    /// A blocking task failed (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<IngestError> for SubmitError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Audio(e) => SubmitError::Audio(e),
            IngestError::Internal(e) => SubmitError::Internal(e),
        }
    }
}

/// What a submission says about the job besides its audio; it becomes the
/// job's [`JobSpec`] once the audio is measured.
pub(crate) struct Draft {
    file_hint: Option<String>,
    options: DecodeOptions,
    response_format: ResponseFormat,
    granularities: Granularities,
    fault: Option<Fault>,
}

impl Draft {
    /// The decoder hint (file extension or content type).
    pub(crate) fn file_hint(&self) -> Option<String> {
        self.file_hint.clone()
    }

    /// The stored spec of a job whose upload holds `audio_secs` of audio.
    pub(crate) fn into_spec(self, audio_secs: f64, upload_bytes: u64) -> JobSpec {
        JobSpec {
            options: self.options,
            response_format: self.response_format,
            granularities: self.granularities,
            file_hint: self.file_hint,
            audio_secs,
            upload_bytes,
            fault: self.fault,
        }
    }
}

impl JobSubmission {
    /// The first check of every acceptance path: the upload's size
    /// (413 before any other work); then the upload and the rest.
    pub(crate) fn checked(self, limits: &EngineLimits) -> Result<(Upload, Draft), SubmitError> {
        let JobSubmission {
            upload,
            file_hint,
            options,
            response_format,
            granularities,
            fault,
        } = self;
        if upload.len() > limits.max_upload_bytes as u64 {
            return Err(SubmitError::UploadTooLarge {
                limit: limits.max_upload_bytes,
            });
        }
        let draft = Draft {
            file_hint,
            options,
            response_format,
            granularities,
            fault,
        };
        Ok((upload, draft))
    }
}

/// Validates an upload: decodes all of it, counting only (no PCM is kept,
/// so validation needs none of the decode budget), off the async threads
/// in one of the node's shared decode slots. Returns its audio seconds.
pub(crate) async fn measure(
    ingest: &Ingest,
    upload: Arc<Upload>,
    file_hint: Option<String>,
) -> Result<f64, SubmitError> {
    Ok(ingest.measure(upload, file_hint).await?.audio_secs)
}

/// A backlog slot held while a submission is validated and made durable;
/// released when dropped (by then the job is in the queue, or refused).
struct Reservation {
    inner: Arc<Inner>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut t = self.inner.lock();
        t.reserved = t.reserved.saturating_sub(1);
    }
}

impl JobService {
    /// Validates the upload (decodes it, off the async threads), then makes
    /// the upload and the job record durable, and only then returns the
    /// queued job. The work after validation runs in its own task, so a
    /// caller that goes away cannot leave a half-accepted job behind.
    pub async fn submit(&self, sub: JobSubmission) -> Result<JobView, SubmitError> {
        if !self.inner.accepting.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        let reservation = {
            let mut t = self.inner.lock();
            let pending = t.pending();
            if pending >= self.inner.config.max_pending {
                return Err(SubmitError::BacklogFull {
                    pending,
                    retry_after: t.retry_after(),
                });
            }
            t.reserved += 1;
            Reservation {
                inner: self.inner.clone(),
            }
        };
        let inner = self.inner.clone();
        tokio::spawn(accept(inner, sub, reservation))
            .await
            .map_err(|e| SubmitError::Internal(e.to_string()))?
    }
}

/// The acceptance path after the backlog check (runs in its own task).
async fn accept(
    inner: Arc<Inner>,
    sub: JobSubmission,
    reservation: Reservation,
) -> Result<JobView, SubmitError> {
    let (upload, draft) = sub.checked(&inner.limits)?;
    let upload = Arc::new(upload);

    // 1. Validate.
    let audio_secs = measure(&inner.ingest, upload.clone(), draft.file_hint()).await?;

    // 2. The upload, durably.
    let id = JobId::random();
    {
        let (dir, upload) = (inner.data_dir.clone(), upload.clone());
        tokio::task::spawn_blocking(move || store::write_upload(&dir, id, &upload))
            .await
            .map_err(|e| SubmitError::Internal(e.to_string()))?
            .map_err(|e| {
                tracing::error!(job = %id, error = %e, "could not store the upload");
                SubmitError::Store("the upload could not be stored".into())
            })?;
    }

    // 3. The record, committed.
    let spec = draft.into_spec(audio_secs, upload.len());
    let created_at_ms = now_ms();
    let (ack, committed) = oneshot::channel();
    inner.store.send(Write::Insert {
        job: Box::new(StoredJob {
            id,
            status: JobStatus::Queued,
            created_at_ms,
            started_at_ms: None,
            finished_at_ms: None,
            decoded_secs: 0.0,
            interruptions: 0,
            spec: spec.clone(),
            result: None,
            error: None,
        }),
        ack,
    });
    let failure = match tokio::time::timeout(INSERT_TIMEOUT, committed).await {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some(e),
        Ok(Err(_)) => Some("the store thread is gone".to_string()),
        Err(_) => Some(format!("no commit within {INSERT_TIMEOUT:?}")),
    };
    if let Some(e) = failure {
        tracing::error!(job = %id, error = %e, "could not record the job; refusing it");
        // Queued behind the insert: whatever happens to the insert, the job
        // ends up gone, and so does its audio.
        inner.store.send(Write::Delete { ids: vec![id] });
        return Err(SubmitError::Store("the job could not be recorded".into()));
    }

    // 4. Durable: register it and publish the change (wakes the runner).
    let view = {
        let mut t = inner.lock();
        t.jobs.insert(
            id,
            Entry {
                status: JobStatus::Queued,
                created_at_ms,
                started_at_ms: None,
                finished_at_ms: None,
                spec: Arc::new(spec),
                decoded_secs: 0.0,
                live: None,
                cancel: None,
                result: None,
                error: None,
            },
        );
        t.queue.push_back(id);
        t.view(id, (inner.config.retention_secs * 1000.0) as u64)
    };
    drop(reservation);
    inner.publish();
    tracing::info!(job = %id, audio_secs, bytes = upload.len(), "job accepted");
    view.ok_or_else(|| SubmitError::Internal("the job vanished".into()))
}

//! Acceptance over the shared store: the same checks as the SQLite path
//! ([`crate::jobs::service`]'s size check, validation and spec), with the
//! fleet-wide backlog check between the size check and the validation, and
//! the upload and its record committed in one row before the `202`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{timed, view_of, Inner, SharedJobs};
use crate::jobs::pg::PgJob;
use crate::jobs::service::{measure, JobSubmission, SubmitError};
use crate::jobs::types::{now_ms, JobId, JobStatus, JobView};

impl SharedJobs {
    /// Validates, then commits the upload and the record in one row.
    pub async fn submit(&self, sub: JobSubmission) -> Result<JobView, SubmitError> {
        if !self.inner.accepting.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        let inner = self.inner.clone();
        // Its own task: a client that goes away cannot cut it in half.
        tokio::spawn(async move { accept(&inner, sub).await })
            .await
            .map_err(|e| SubmitError::Internal(e.to_string()))?
    }
}

async fn accept(inner: &Arc<Inner>, sub: JobSubmission) -> Result<JobView, SubmitError> {
    // The order of refusals: size (413), then the fleet-wide backlog (429),
    // then validation (400/415/422).
    let (upload, draft) = sub.checked(&inner.limits)?;
    let pending = timed(inner.pg.pending()).await;
    inner.record(&pending);
    let pending = pending.map_err(|e| SubmitError::Store(e.0))? as usize;
    if pending >= inner.config.max_pending {
        return Err(SubmitError::BacklogFull {
            pending,
            retry_after: Duration::from_secs(5),
        });
    }
    let upload = Arc::new(upload);
    let audio_secs = measure(&inner.ingest, upload.clone(), draft.file_hint()).await?;
    let bytes = {
        let upload = upload.clone();
        tokio::task::spawn_blocking(move || upload.to_vec())
            .await
            .map_err(|e| SubmitError::Internal(e.to_string()))?
            .map_err(|e| SubmitError::Internal(format!("reading the upload: {e}")))?
    };
    let spec = draft.into_spec(audio_secs, upload.len());
    let id = JobId::random();
    // Committed before the 202: any node can now run it.
    let inserted = timed(inner.pg.insert(id, &spec, &bytes)).await;
    inner.record(&inserted);
    if let Err(e) = inserted {
        tracing::error!(job = %id, error = %e.0, "could not record the job; refusing it");
        return Err(SubmitError::Store("the job could not be recorded".into()));
    }
    inner.wake.notify_one();
    tracing::info!(job = %id, audio_secs = spec.audio_secs, bytes = bytes.len(), "job accepted (shared store)");
    let now = now_ms();
    let job = PgJob {
        id,
        status: JobStatus::Queued,
        created_at_ms: now,
        started_at_ms: None,
        finished_at_ms: None,
        decoded_secs: 0.0,
        claims: 0,
        spec,
        result: None,
        error: None,
        lease_owner: None,
    };
    Ok(view_of(
        &job,
        (inner.config.retention_secs * 1000.0) as u64,
        None,
    ))
}

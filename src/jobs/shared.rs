//! The async job service over the shared PostgreSQL store ([`super::pg`]),
//! selected with `--jobs-store postgres://…`: a fleet's nodes share one
//! backlog, and any node runs and answers any job.
//!
//! - **Submit**: the upload is validated like the SQLite path (counted, no
//!   PCM kept), then the upload and its record are committed in one row
//!   before the `202`.
//! - **Runner**: one job at a time. It claims (`FOR UPDATE SKIP LOCKED`)
//!   only while this node's worker is idle, so a busy node leaves the
//!   backlog to idle ones; it renews the lease every third of
//!   `--jobs-lease-secs` with the progress, and writes the outcome (or
//!   gives the job back) under the claim's fencing token. A lost lease
//!   (expired and taken over, or cancelled) stops the wait.
//! - **Reads**: a job running on this node is answered from memory (its
//!   live progress); any other from the database, under a time limit, so a
//!   slow database never blocks decoding (the runner alone talks to it
//!   about the running job, off the decode path).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::pg::{Claim, PgCancel, PgJob, PgStore};
use super::service::{
    CancelOutcome, Engine, EngineLimits, JobCounts, JobSubmission, JobsError, SubmitError,
    MAX_INTERRUPTIONS,
};
use super::types::{now_ms, JobError, JobId, JobProgress, JobSpec, JobStatus, JobView};
use crate::api::{AsrError, Progress, TranscriptionRequest};
use crate::audio::{self, AudioError, Upload};
use crate::config::JobsConfig;
use crate::ingest::{Ingest, IngestError};

/// Longest a read from the database may take before it is answered 503.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle runner looks for work in the shared backlog.
const POLL: Duration = Duration::from_millis(500);

/// A store read failed or timed out.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreUnavailable(pub String);

/// The shared-store job service. Cheap to clone.
#[derive(Clone)]
pub struct SharedJobs {
    inner: Arc<Inner>,
}

struct Inner {
    pg: PgStore,
    config: JobsConfig,
    limits: EngineLimits,
    engine: Arc<dyn Engine>,
    ingest: Ingest,
    /// Names this node in `lease_owner`.
    owner: String,
    lease: Duration,
    /// The job this node runs now.
    running: Mutex<Option<Running>>,
    wake: Notify,
    stop: CancellationToken,
    accepting: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    last_error: Mutex<Option<String>>,
    failures: AtomicU64,
}

struct Running {
    job: PgJob,
    live: watch::Receiver<Progress>,
    cancel: CancellationToken,
}

fn view_of(job: &PgJob, retention_ms: u64, live_decoded: Option<f64>) -> JobView {
    let format = job.spec.response_format;
    let decoded = match job.status {
        JobStatus::Done => job.spec.audio_secs,
        _ => job
            .decoded_secs
            .max(live_decoded.unwrap_or(0.0))
            .min(job.spec.audio_secs),
    };
    JobView {
        id: job.id,
        object: "transcription.job",
        status: job.status,
        progress: JobProgress {
            decoded_secs: decoded,
            total_secs: job.spec.audio_secs,
        },
        queue_position: None,
        created_at: job.created_at_ms / 1000,
        started_at: job.started_at_ms.map(|t| t / 1000),
        finished_at: job.finished_at_ms.map(|t| t / 1000),
        expires_at: job
            .finished_at_ms
            .map(|t| t.saturating_add(retention_ms) / 1000),
        response_format: format.as_str(),
        error: job.error.clone(),
        result: job.result.clone().map(Arc::new),
        granularities: job.spec.granularities,
        format,
    }
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, super::pg::PgError>>,
) -> Result<T, StoreUnavailable> {
    match tokio::time::timeout(READ_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StoreUnavailable(e.to_string())),
        Err(_) => Err(StoreUnavailable(format!(
            "no answer from the job database within {READ_TIMEOUT:?}"
        ))),
    }
}

impl SharedJobs {
    /// Connects (migrating the schema) and starts the runner.
    pub(crate) async fn start_with(
        engine: Arc<dyn Engine>,
        config: JobsConfig,
    ) -> Result<SharedJobs, JobsError> {
        config.validate()?;
        let pg = PgStore::connect(&config.store)
            .await
            .map_err(|e| JobsError::Shared(format!("job database: {e}")))?;
        let owner = format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let inner = Arc::new(Inner {
            pg,
            limits: engine.limits(),
            ingest: engine.ingest(),
            engine,
            lease: Duration::from_secs_f64(config.lease_secs),
            config,
            owner,
            running: Mutex::new(None),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            accepting: AtomicBool::new(true),
            tasks: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            failures: AtomicU64::new(0),
        });
        let runner = tokio::spawn(run(inner.clone()));
        let janitor = tokio::spawn(janitor(inner.clone()));
        lock(&inner.tasks).extend([runner, janitor]);
        tracing::info!(owner = %inner.owner, lease_secs = inner.lease.as_secs_f64(), "async jobs in the shared PostgreSQL store");
        Ok(SharedJobs { inner })
    }

    /// The node's upload limits.
    pub fn limits(&self) -> EngineLimits {
        self.inner.limits
    }

    /// The shared ingest limits.
    pub fn ingest(&self) -> &Ingest {
        &self.inner.ingest
    }

    /// The last database error, if the last operation failed.
    pub fn store_error(&self) -> Option<String> {
        lock(&self.inner.last_error).clone()
    }

    /// Failed database operations so far.
    pub fn store_failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    fn retention_ms(&self) -> u64 {
        (self.inner.config.retention_secs * 1000.0) as u64
    }

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

    /// A job: from memory when this node runs it, else from the database.
    pub async fn get(&self, id: JobId) -> Result<Option<JobView>, StoreUnavailable> {
        if let Some(v) = self.local_view(id) {
            return Ok(Some(v));
        }
        let job = timed(self.inner.pg.get(id)).await;
        self.inner.record(&job);
        Ok(job?.map(|j| view_of(&j, self.retention_ms(), None)))
    }

    fn local_view(&self, id: JobId) -> Option<JobView> {
        let running = lock(&self.inner.running);
        let r = running.as_ref().filter(|r| r.job.id == id)?;
        let live = f64::from(r.live.borrow().decoded_secs);
        Some(view_of(&r.job, self.retention_ms(), Some(live)))
    }

    /// Jobs newest first (without results).
    pub async fn list(
        &self,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<JobView>, StoreUnavailable> {
        let jobs = timed(self.inner.pg.list(status, limit)).await;
        self.inner.record(&jobs);
        Ok(jobs?
            .iter()
            .map(|j| {
                let mut v = self
                    .local_view(j.id)
                    .unwrap_or_else(|| view_of(j, self.retention_ms(), None));
                v.result = None;
                v
            })
            .collect())
    }

    /// Counts by status, fleet-wide.
    pub async fn counts(&self) -> Result<JobCounts, StoreUnavailable> {
        let counts = timed(self.inner.pg.counts()).await;
        self.inner.record(&counts);
        let mut c = JobCounts {
            max_pending: self.inner.config.max_pending,
            ..JobCounts::default()
        };
        for (status, n) in counts? {
            let n = n as usize;
            match status {
                JobStatus::Queued => c.queued = n,
                JobStatus::Running => c.running = n,
                JobStatus::Done => c.done = n,
                JobStatus::Failed => c.failed = n,
                JobStatus::Cancelled => c.cancelled = n,
            }
        }
        Ok(c)
    }

    /// `DELETE`, through the database; the running node (this one or
    /// another) stops waiting at once here, or at its next renewal there.
    pub async fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreUnavailable> {
        let outcome = timed(self.inner.pg.cancel(id)).await;
        self.inner.record(&outcome);
        match outcome? {
            PgCancel::NotFound => Ok(CancelOutcome::NotFound),
            PgCancel::Deleted => Ok(CancelOutcome::Deleted),
            PgCancel::Cancelled => {
                if let Some(r) = lock(&self.inner.running)
                    .as_ref()
                    .filter(|r| r.job.id == id)
                {
                    r.cancel.cancel();
                }
                let job = timed(self.inner.pg.get(id)).await?;
                Ok(match job {
                    Some(j) => {
                        CancelOutcome::Cancelled(Box::new(view_of(&j, self.retention_ms(), None)))
                    }
                    None => CancelOutcome::NotFound,
                })
            }
        }
    }

    /// Stops accepting and claiming; the job running here is finished (the
    /// node drains it) or given back.
    pub async fn shutdown(&self) {
        self.inner.accepting.store(false, Ordering::Release);
        self.inner.stop.cancel();
        self.inner.wake.notify_waiters();
        let tasks: Vec<_> = std::mem::take(&mut *lock(&self.inner.tasks));
        let limit = self.inner.limits.shutdown_grace + Duration::from_secs(15);
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(limit, task).await.is_err() {
                tracing::warn!("a job service task did not stop in time; aborting it");
                abort.abort();
            }
        }
        tracing::info!("job service stopped");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "node".into())
}

impl Inner {
    fn record<T, E: std::fmt::Display>(&self, r: &Result<T, E>) {
        match r {
            Ok(_) => *lock(&self.last_error) = None,
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                *lock(&self.last_error) = Some(e.to_string());
            }
        }
    }
}

async fn accept(inner: &Arc<Inner>, sub: JobSubmission) -> Result<JobView, SubmitError> {
    let JobSubmission {
        upload,
        file_hint,
        options,
        response_format,
        granularities,
        fault,
    } = sub;
    if upload.len() > inner.limits.max_upload_bytes as u64 {
        return Err(SubmitError::UploadTooLarge {
            limit: inner.limits.max_upload_bytes,
        });
    }
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
    let report = inner
        .ingest
        .measure(upload.clone(), file_hint.clone())
        .await
        .map_err(|e| match e {
            IngestError::Audio(e) => SubmitError::Audio(e),
            IngestError::Internal(e) => SubmitError::Internal(e),
        })?;
    let bytes = {
        let upload = upload.clone();
        tokio::task::spawn_blocking(move || upload.to_vec())
            .await
            .map_err(|e| SubmitError::Internal(e.to_string()))?
            .map_err(|e| SubmitError::Internal(format!("reading the upload: {e}")))?
    };
    let spec = JobSpec {
        options,
        response_format,
        granularities,
        file_hint,
        audio_secs: report.audio_secs,
        upload_bytes: upload.len(),
        fault,
    };
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

/// The runner: claims a job only while this node's worker is idle.
async fn run(inner: Arc<Inner>) {
    loop {
        if inner.stop.is_cancelled() {
            break;
        }
        let load = inner.engine.load();
        if !load.idle || load.shutting_down {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = inner.stop.cancelled() => break,
            }
            continue;
        }
        let claimed = inner
            .pg
            .claim(&inner.owner, inner.lease, MAX_INTERRUPTIONS)
            .await;
        inner.record(&claimed);
        let wait = match claimed {
            Ok(Some(claim)) => match run_claim(&inner, claim).await {
                Some(wait) => wait,
                None => continue,
            },
            Ok(None) => POLL,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim a job from the shared store");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = inner.wake.notified() => {}
            () = inner.stop.cancelled() => break,
        }
    }
}

/// Runs one claimed job; `Some(wait)` when it was given back.
async fn run_claim(inner: &Arc<Inner>, claim: Claim) -> Option<Duration> {
    let Claim { job, audio, token } = claim;
    let id = job.id;
    let spec = job.spec.clone();
    let span = tracing::info_span!("async_job", job = %id, audio_secs = spec.audio_secs, claims = job.claims);
    tracing::info!(parent: &span, "job claimed from the shared store");
    let cancel = CancellationToken::new();
    let (progress_tx, live) = watch::channel(Progress {
        decoded_secs: job.decoded_secs as f32,
        total_secs: spec.audio_secs as f32,
    });
    *lock(&inner.running) = Some(Running {
        job: PgJob {
            status: JobStatus::Running,
            ..job
        },
        live: live.clone(),
        cancel: cancel.clone(),
    });

    // The lease, renewed every third of it with the progress; a renewal
    // that finds the lease gone (taken over, cancelled) stops the wait.
    let renewer = {
        let (inner, cancel, live) = (inner.clone(), cancel.clone(), live.clone());
        tokio::spawn(async move {
            let every = inner.lease / 3;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = cancel.cancelled() => return,
                }
                let decoded = f64::from(live.borrow().decoded_secs);
                let renewed = inner.pg.renew(id, token, inner.lease, decoded).await;
                inner.record(&renewed);
                match renewed {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(job = %id, "lease lost (cancelled or taken over); stopping");
                        cancel.cancel();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(job = %id, error = %e, "lease renewal failed; retrying")
                    }
                }
            }
        })
    };
    let end = run_decode(inner, id, &spec, audio, token, &cancel, progress_tx)
        .instrument(span)
        .await;
    cancel.cancel();
    let _ = renewer.await;
    *lock(&inner.running) = None;
    end
}

async fn run_decode(
    inner: &Arc<Inner>,
    id: JobId,
    spec: &JobSpec,
    audio: Vec<u8>,
    token: uuid::Uuid,
    cancel: &CancellationToken,
    progress_tx: watch::Sender<Progress>,
) -> Option<Duration> {
    let decoded = inner
        .ingest
        .decode(Arc::new(Upload::from(audio)), spec.file_hint.clone())
        .await;
    let (samples, _pcm) = match decoded {
        Ok((d, lease)) => (d.samples, lease),
        Err(IngestError::Audio(AudioError::OverBudget { .. })) => {
            release(inner, id, token).await;
            return Some(audio::OVER_BUDGET_RETRY_AFTER);
        }
        Err(e) => {
            tracing::error!(error = %e, "the stored audio of a job is unusable");
            let err = JobError {
                code: "audio_lost".into(),
                message: "the job's stored audio could not be read".into(),
            };
            write_finish(inner, id, token, Err(&err)).await;
            return None;
        }
    };
    let mut request = TranscriptionRequest::new(samples);
    request.options = spec.options.clone();
    request.parent_span = tracing::Span::current();
    request.fault = spec.fault;
    request.progress = Some(progress_tx);
    tracing::info!("async job handed to the node");
    let answer = tokio::select! {
        a = inner.engine.transcribe(request) => a,
        () = cancel.cancelled() => {
            tracing::info!("stopped waiting: the job was cancelled or its lease lost");
            return None;
        }
    };
    match answer {
        Ok(t) => {
            tracing::info!(
                decode_ms = t.decode_time.as_millis() as u64,
                "async job done"
            );
            write_finish(inner, id, token, Ok(&t.result)).await;
            None
        }
        Err(e) => {
            let again = matches!(
                e,
                AsrError::Busy { .. }
                    | AsrError::Unavailable { .. }
                    | AsrError::QueueTimeout { .. }
                    | AsrError::Cancelled
                    | AsrError::ShuttingDown
            ) || inner.stop.is_cancelled();
            if again {
                tracing::info!(error = %e, "async job not decoded now; given back to the shared backlog");
                release(inner, id, token).await;
                Some(Duration::from_secs(1))
            } else {
                let api = crate::http::ApiError::from(e.clone());
                tracing::warn!(error = %e, code = api.code(), "async job failed");
                let err = JobError {
                    code: api.code().into(),
                    message: api.message().into(),
                };
                write_finish(inner, id, token, Err(&err)).await;
                None
            }
        }
    }
}

/// The final write, under the fencing token; retried while the database
/// is unreachable (until the lease would have expired anyway).
async fn write_finish(
    inner: &Arc<Inner>,
    id: JobId,
    token: uuid::Uuid,
    outcome: Result<&crate::api::JobResult, &JobError>,
) {
    let deadline = tokio::time::Instant::now() + inner.lease;
    loop {
        let r = inner.pg.finish(id, token, outcome).await;
        inner.record(&r);
        match r {
            Ok(true) => return,
            Ok(false) => {
                tracing::warn!(job = %id, "outcome dropped: the lease was no longer this node's");
                return;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(job = %id, error = %e, "could not write the outcome; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                tracing::error!(job = %id, error = %e, "could not write the outcome; the job will run again elsewhere");
                return;
            }
        }
    }
}

async fn release(inner: &Arc<Inner>, id: JobId, token: uuid::Uuid) {
    let r = inner.pg.release(id, token).await;
    inner.record(&r);
    if let Err(e) = r {
        tracing::warn!(job = %id, error = %e, "could not give the job back; it returns when its lease expires");
    }
}

/// Purges finished jobs past their retention, from time to time.
async fn janitor(inner: Arc<Inner>) {
    let retention = Duration::from_secs_f64(inner.config.retention_secs);
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            () = inner.stop.cancelled() => return,
        }
        let r = inner.pg.purge(retention).await;
        inner.record(&r);
    }
}

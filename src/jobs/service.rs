//! [`JobService`]: the in-memory job table, the acceptance path, the runner
//! that feeds the node one async job at a time, and the janitor that purges
//! expired jobs. See the [module doc](super) for the protocol.

use crate::error_code::Code;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::store::{self, StoreHandle, StoredJob, Write};
use super::types::{now_ms, JobError, JobId, JobProgress, JobSpec, JobStatus, JobView};
use crate::api::{
    AsrError, DecodeOptions, Fault, JobResult, Progress, Transcript, TranscriptionRequest,
};
use crate::api::{Granularities, ResponseFormat};
use crate::audio::{self, AudioError, Upload};
use crate::config::JobsConfig;
use crate::ingest::{Ingest, IngestError};
use crate::node::AsrNode;

/// Longest an accept waits for the store's commit before it answers 503.
const INSERT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the runner looks at the node while it waits for a free worker.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Longest the runner waits after a busy or unavailable answer.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// A job found running at start-up more often than this is failed
/// (`interrupted`) instead of re-queued, so an input that kills the whole
/// service cannot crash-loop it.
pub const MAX_INTERRUPTIONS: u32 = 3;
/// Starting guess of decode seconds per audio second, until measured.
const INITIAL_RTF: f64 = 0.2;

/// What the service needs from the node; [`AsrNode`] in production, a
/// fake in unit tests.
pub(crate) trait Engine: Send + Sync + 'static {
    /// Submits a job and waits for its answer.
    fn transcribe(
        &self,
        req: TranscriptionRequest,
    ) -> BoxFuture<'static, Result<Transcript, AsrError>>;
    /// What the node is doing now; never waits.
    fn load(&self) -> EngineLoad;
    /// The node's limits for uploads.
    fn limits(&self) -> EngineLimits;
    /// The node's shared ingest limits (decode slots, PCM budget, uploads).
    fn ingest(&self) -> Ingest;
}

/// A glance at the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EngineLoad {
    /// A request sent now would be admitted.
    pub ready: bool,
    /// Nothing waits in the node's queue and nothing is being decoded.
    pub idle: bool,
    /// The node is draining.
    pub shutting_down: bool,
}

/// The node's limits that the acceptance path applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineLimits {
    /// Largest upload, bytes.
    pub max_upload_bytes: usize,
    /// Longest audio, seconds.
    pub max_audio_secs: f64,
    /// The node's default beam size.
    pub beam_size: u32,
    /// Whether `X-Fault-Inject` is honoured.
    pub fault_injection: bool,
    /// The node's shutdown grace period.
    pub shutdown_grace: Duration,
}

impl Engine for AsrNode {
    fn transcribe(
        &self,
        req: TranscriptionRequest,
    ) -> BoxFuture<'static, Result<Transcript, AsrError>> {
        let node = self.clone();
        Box::pin(async move { node.transcribe(req).await })
    }

    fn load(&self) -> EngineLoad {
        let s = self.status();
        EngineLoad {
            ready: s.ready,
            idle: s.queue_depth == 0 && s.in_flight == 0,
            shutting_down: s.shutting_down,
        }
    }

    fn limits(&self) -> EngineLimits {
        let c = self.config();
        EngineLimits {
            max_upload_bytes: c.max_upload_bytes,
            max_audio_secs: c.max_audio_secs,
            beam_size: c.beam_size,
            fault_injection: c.enable_fault_injection,
            shutdown_grace: c.shutdown_grace(),
        }
    }

    fn ingest(&self) -> Ingest {
        AsrNode::ingest(self).clone()
    }
}

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

/// What [`JobService::cancel`] did.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// The job was queued or running and is now cancelled.
    Cancelled(Box<JobView>),
    /// The job had finished; it is now deleted (record, result, audio).
    Deleted,
    /// No such job.
    NotFound,
}

/// The job service could not start.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::OpenError),
    /// The opening task failed.
    #[error("job store start-up failed: {0}")]
    Internal(String),
    /// The shared (PostgreSQL) store could not be reached or migrated.
    #[error("{0}")]
    Shared(String),
}

/// Counts of jobs by status, for listings and health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct JobCounts {
    /// Waiting for their turn.
    pub queued: usize,
    /// Handed to the node.
    pub running: usize,
    /// Finished with a result.
    pub done: usize,
    /// Finished with an error.
    pub failed: usize,
    /// Cancelled.
    pub cancelled: usize,
    /// Limit of queued + running.
    pub max_pending: usize,
}

/// Handle to the async job service. Cheap to clone; every clone shares the
/// same table, runner and store.
#[derive(Clone)]
pub struct JobService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JobService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobService")
            .field("data_dir", &self.inner.data_dir)
            .field("counts", &self.counts())
            .finish()
    }
}

struct Inner {
    config: JobsConfig,
    data_dir: PathBuf,
    limits: EngineLimits,
    engine: Arc<dyn Engine>,
    table: Mutex<Table>,
    store: StoreHandle,
    /// The runner waits here for work.
    wake: Notify,
    /// Cancelled at shutdown.
    stop: CancellationToken,
    accepting: AtomicBool,
    /// Decode slots and the PCM budget, shared with the sync endpoint.
    ingest: Ingest,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    store_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The job table: every job's state, in memory. Guarded by a mutex that is
/// held for a few map operations only, never across an await or I/O.
#[derive(Default)]
struct Table {
    jobs: HashMap<JobId, Entry>,
    /// Queued jobs, oldest first.
    queue: VecDeque<JobId>,
    /// Accepts in progress (counted against the backlog limit).
    reserved: usize,
    /// Moving average of decode seconds per audio second of async jobs.
    rtf: f64,
}

struct Entry {
    status: JobStatus,
    created_at_ms: u64,
    started_at_ms: Option<u64>,
    finished_at_ms: Option<u64>,
    spec: Arc<JobSpec>,
    /// Last known progress (audio seconds decoded).
    decoded_secs: f64,
    /// Live progress while running.
    live: Option<watch::Receiver<Progress>>,
    /// Cancels the runner's wait for this job while running.
    cancel: Option<CancellationToken>,
    result: Option<Arc<JobResult>>,
    error: Option<JobError>,
}

impl Table {
    fn pending(&self) -> usize {
        self.queue.len()
            + self
                .jobs
                .values()
                .filter(|e| e.status == JobStatus::Running)
                .count()
            + self.reserved
    }

    /// Time until the job ahead of everyone is likely done.
    fn retry_after(&self) -> Duration {
        let running = self.jobs.values().find(|e| e.status == JobStatus::Running);
        let remaining = match running {
            Some(e) => (e.spec.audio_secs - e.decoded_now()).max(0.0),
            None => self
                .queue
                .front()
                .and_then(|id| self.jobs.get(id))
                .map_or(0.0, |e| e.spec.audio_secs),
        };
        Duration::from_secs_f64((remaining * self.rtf).clamp(1.0, 600.0).ceil())
    }

    fn view(&self, id: JobId, retention_ms: u64) -> Option<JobView> {
        let e = self.jobs.get(&id)?;
        let queue_position = (e.status == JobStatus::Queued)
            .then(|| self.queue.iter().position(|q| *q == id).map(|p| p + 1))
            .flatten();
        let format = e.spec.response_format;
        Some(JobView {
            id,
            object: "transcription.job",
            status: e.status,
            progress: JobProgress {
                decoded_secs: e.decoded_now(),
                total_secs: e.spec.audio_secs,
            },
            queue_position,
            created_at: e.created_at_ms / 1000,
            started_at: e.started_at_ms.map(|t| t / 1000),
            finished_at: e.finished_at_ms.map(|t| t / 1000),
            expires_at: e
                .finished_at_ms
                .map(|t| t.saturating_add(retention_ms) / 1000),
            response_format: format.as_str(),
            error: e.error.clone(),
            result: e.result.clone(),
            granularities: e.spec.granularities,
            format,
        })
    }
}

impl Entry {
    fn decoded_now(&self) -> f64 {
        let live = self
            .live
            .as_ref()
            .map_or(0.0, |rx| f64::from(rx.borrow().decoded_secs));
        match self.status {
            JobStatus::Done => self.spec.audio_secs,
            _ => self.decoded_secs.max(live).min(self.spec.audio_secs),
        }
    }
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
    /// Opens the store in `config.data_dir`, re-queues every job that was
    /// accepted but not finished (a job interrupted more than
    /// [`MAX_INTERRUPTIONS`] times is failed instead), and starts the runner
    /// that feeds `node` and the janitor that purges expired jobs.
    ///
    /// Call it on the tokio runtime the node runs on, after
    /// [`AsrNode::start`]; stop it with [`JobService::shutdown`].
    pub async fn start(node: AsrNode, config: JobsConfig) -> Result<JobService, JobsError> {
        Self::start_with(Arc::new(node), config).await
    }

    pub(crate) async fn start_with(
        engine: Arc<dyn Engine>,
        config: JobsConfig,
    ) -> Result<JobService, JobsError> {
        config.validate()?;
        let data_dir = config.data_dir.clone();
        let opened = {
            let dir = data_dir.clone();
            tokio::task::spawn_blocking(move || store::open(&dir))
                .await
                .map_err(|e| JobsError::Internal(e.to_string()))??
        };
        let store = opened.handle;
        let mut table = Table {
            rtf: INITIAL_RTF,
            ..Table::default()
        };
        let (mut requeued, mut failed) = (0usize, 0usize);
        for job in opened.jobs {
            let StoredJob {
                id,
                mut status,
                created_at_ms,
                started_at_ms,
                mut finished_at_ms,
                decoded_secs,
                interruptions,
                spec,
                result,
                mut error,
            } = job;
            let mut started_at_ms = started_at_ms;
            if !status.is_finished() {
                let interrupted = status == JobStatus::Running;
                let interruptions = interruptions + u32::from(interrupted);
                let missing = !store::audio_path(&data_dir, id).exists();
                if missing || interruptions > MAX_INTERRUPTIONS {
                    let e = if missing {
                        JobError {
                            code: Code::AudioLost.name().into(),
                            message: "the job's stored audio is missing".into(),
                        }
                    } else {
                        JobError {
                            code: Code::Interrupted.name().into(),
                            message: format!(
                                "the service stopped {interruptions} times while decoding this job"
                            ),
                        }
                    };
                    tracing::error!(job = %id, code = %e.code, "failing an unfinished job at start-up");
                    status = JobStatus::Failed;
                    finished_at_ms = Some(now_ms());
                    error = Some(e.clone());
                    store.send(Write::Finished {
                        id,
                        status,
                        finished_at_ms: finished_at_ms.unwrap_or_default(),
                        result: None,
                        error: Some(e),
                    });
                    failed += 1;
                } else {
                    if interrupted {
                        store.send(Write::Interrupted { id, interruptions });
                    }
                    status = JobStatus::Queued;
                    started_at_ms = None;
                    table.queue.push_back(id);
                    requeued += 1;
                }
            }
            table.jobs.insert(
                id,
                Entry {
                    status,
                    created_at_ms,
                    started_at_ms,
                    finished_at_ms,
                    spec: Arc::new(spec),
                    decoded_secs: if status.is_finished() {
                        decoded_secs
                    } else {
                        0.0
                    },
                    live: None,
                    cancel: None,
                    result: result.map(Arc::new),
                    error,
                },
            );
        }
        tracing::info!(
            data_dir = %data_dir.display(),
            jobs = table.jobs.len(),
            requeued,
            failed,
            "job service started"
        );
        let limits = engine.limits();
        let ingest = engine.ingest();
        let inner = Arc::new(Inner {
            config,
            data_dir,
            limits,
            engine,
            table: Mutex::new(table),
            store,
            wake: Notify::new(),
            stop: CancellationToken::new(),
            accepting: AtomicBool::new(true),
            ingest,
            tasks: Mutex::new(Vec::new()),
            store_thread: Mutex::new(Some(opened.thread)),
        });
        let runner = tokio::spawn(run(inner.clone()));
        let janitor = tokio::spawn(janitor(inner.clone()));
        inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([runner, janitor]);
        Ok(JobService { inner })
    }

    /// The node's limits that acceptance applies (upload size, audio
    /// length, default beam size, fault injection).
    pub fn limits(&self) -> EngineLimits {
        self.inner.limits
    }

    /// The service's settings.
    pub fn config(&self) -> &JobsConfig {
        &self.inner.config
    }

    /// The node's shared ingest limits, which job uploads go through.
    pub fn ingest(&self) -> &Ingest {
        &self.inner.ingest
    }

    /// The store's health for `/health` and `/ready`: `None` while its
    /// transactions succeed, else the last failure.
    pub fn store_error(&self) -> Option<String> {
        self.inner.store.health().current_error()
    }

    /// Store transactions that failed since start.
    pub fn store_failures(&self) -> u64 {
        self.inner
            .store
            .health()
            .failed_transactions
            .load(std::sync::atomic::Ordering::Acquire)
    }

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

    /// A job's state, from memory; never waits on the store or the node.
    pub fn get(&self, id: JobId) -> Option<JobView> {
        let retention = self.retention_ms();
        self.inner.lock().view(id, retention)
    }

    /// Jobs, newest first, optionally only those with `status`, at most
    /// `limit`.
    pub fn list(&self, status: Option<JobStatus>, limit: usize) -> Vec<JobView> {
        let retention = self.retention_ms();
        let t = self.inner.lock();
        let mut ids: Vec<(u64, JobId)> = t
            .jobs
            .iter()
            .filter(|(_, e)| status.is_none_or(|s| e.status == s))
            .map(|(id, e)| (e.created_at_ms, *id))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.into_iter()
            .take(limit)
            .filter_map(|(_, id)| t.view(id, retention))
            .map(|mut v| {
                v.result = None;
                v
            })
            .collect()
    }

    /// Counts by status.
    pub fn counts(&self) -> JobCounts {
        let t = self.inner.lock();
        let mut c = JobCounts {
            max_pending: self.inner.config.max_pending,
            ..JobCounts::default()
        };
        for e in t.jobs.values() {
            match e.status {
                JobStatus::Queued => c.queued += 1,
                JobStatus::Running => c.running += 1,
                JobStatus::Done => c.done += 1,
                JobStatus::Failed => c.failed += 1,
                JobStatus::Cancelled => c.cancelled += 1,
            }
        }
        c
    }

    /// `DELETE`: a queued job is cancelled at once and never decoded; a
    /// running job is cancelled at once and the runner stops waiting for it
    /// (a decode already in the worker runs to its end and its result is
    /// discarded); a finished job is deleted with its result.
    pub fn cancel(&self, id: JobId) -> CancelOutcome {
        let retention = self.retention_ms();
        let mut t = self.inner.lock();
        let Some(e) = t.jobs.get_mut(&id) else {
            return CancelOutcome::NotFound;
        };
        if e.status.is_finished() {
            t.jobs.remove(&id);
            drop(t);
            self.inner.store.send(Write::Delete { ids: vec![id] });
            tracing::info!(job = %id, "job deleted");
            return CancelOutcome::Deleted;
        }
        let was = e.status;
        let now = now_ms();
        e.decoded_secs = e.decoded_now();
        e.status = JobStatus::Cancelled;
        e.finished_at_ms = Some(now);
        e.live = None;
        if let Some(token) = e.cancel.take() {
            token.cancel();
        }
        t.queue.retain(|q| *q != id);
        let view = t.view(id, retention);
        drop(t);
        self.inner.store.send(Write::Finished {
            id,
            status: JobStatus::Cancelled,
            finished_at_ms: now,
            result: None,
            error: None,
        });
        self.inner.wake.notify_one();
        tracing::info!(job = %id, was = was.as_str(), "job cancelled");
        match view {
            Some(v) => CancelOutcome::Cancelled(Box::new(v)),
            None => CancelOutcome::NotFound,
        }
    }

    /// Stops accepting (new submissions get [`SubmitError::ShuttingDown`]),
    /// lets the runner finish or hand back the job it holds (a job the node
    /// did not finish goes back to `queued` and runs after the restart),
    /// then commits the last writes and closes the store. Run it together
    /// with [`AsrNode::shutdown`] (which drains the in-flight decode).
    /// Idempotent.
    pub async fn shutdown(&self) {
        self.inner.accepting.store(false, Ordering::Release);
        self.inner.stop.cancel();
        self.inner.wake.notify_waiters();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let limit = self.inner.limits.shutdown_grace + Duration::from_secs(15);
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(limit, task).await.is_err() {
                tracing::warn!("a job service task did not stop in time; aborting it");
                abort.abort();
            }
        }
        if !self.inner.store.flush().await {
            tracing::warn!("the job store stopped before its last writes were flushed");
        }
        tracing::info!(counts = ?self.counts(), "job service stopped");
    }

    /// Waits until every write sent so far is committed (tests, tools).
    pub async fn flush(&self) -> bool {
        self.inner.store.flush().await
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.data_dir
    }

    #[cfg(test)]
    pub(crate) fn store_hooks(&self) -> &store::StoreHooks {
        self.inner.store.hooks()
    }

    /// [`JobService::shutdown`], then, if this is the last handle, waits
    /// until the store thread has committed everything and closed the
    /// database, which releases the data directory (so a new service may
    /// open it in the same process). With other handles alive, the store
    /// closes when the last one is dropped.
    pub async fn close(self) {
        self.shutdown().await;
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => {
                let thread = inner
                    .store_thread
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                // Drops the last store handle: the thread finishes and exits.
                drop(inner);
                if let Some(thread) = thread {
                    if tokio::task::spawn_blocking(move || thread.join())
                        .await
                        .map_or(true, |r| r.is_err())
                    {
                        tracing::error!("the job store thread panicked");
                    }
                }
            }
            Err(_) => {
                tracing::debug!(
                    "other job service handles remain; the store closes with the last one"
                )
            }
        }
    }

    fn retention_ms(&self) -> u64 {
        (self.inner.config.retention_secs * 1000.0) as u64
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Only plain data under the lock; a panic elsewhere leaves it usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The acceptance path after the backlog check (runs in its own task).
async fn accept(
    inner: Arc<Inner>,
    sub: JobSubmission,
    reservation: Reservation,
) -> Result<JobView, SubmitError> {
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
    let upload = Arc::new(upload);

    // 1. Validate: decode the whole upload, counting only (no PCM is kept,
    //    so validation needs none of the decode budget), off the async
    //    threads in one of the node's shared decode slots.
    let report = inner
        .ingest
        .measure(upload.clone(), file_hint.clone())
        .await
        .map_err(|e| match e {
            IngestError::Audio(e) => SubmitError::Audio(e),
            IngestError::Internal(e) => SubmitError::Internal(e),
        })?;
    let audio_secs = report.audio_secs;

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
    let spec = JobSpec {
        options,
        response_format,
        granularities,
        file_hint,
        audio_secs,
        upload_bytes: upload.len(),
        fault,
    };
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

    // 4. Durable: register it and wake the runner.
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
    inner.wake.notify_one();
    tracing::info!(job = %id, audio_secs, bytes = upload.len(), "job accepted");
    view.ok_or_else(|| SubmitError::Internal("the job vanished".into()))
}

/// What happened to the job the runner handed to the node.
enum RunEnd {
    /// Done, failed or cancelled: take the next job.
    Finished,
    /// Back in the backlog; try again after this long.
    Requeued(Duration),
    /// The service is stopping.
    Stop,
}

/// The runner: one async job at a time, oldest first, handed to the node
/// when its worker is idle (or after `max_defer_secs`).
async fn run(inner: Arc<Inner>) {
    loop {
        if inner.stop.is_cancelled() {
            break;
        }
        let next = inner.lock().queue.front().copied();
        let Some(id) = next else {
            tokio::select! {
                () = inner.wake.notified() => continue,
                () = inner.stop.cancelled() => break,
            }
        };
        if !wait_for_turn(&inner, id).await {
            continue;
        }
        match run_one(&inner, id).await {
            RunEnd::Finished => {}
            RunEnd::Requeued(wait) => {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = inner.stop.cancelled() => break,
                }
            }
            RunEnd::Stop => break,
        }
    }
    tracing::debug!("job runner stopped");
}

/// Waits until the node can take `id` without making an interactive
/// request wait: the worker is idle and nothing is queued, or the job has
/// been deferred for `max_defer_secs`. `false` if `id` is no longer first
/// in line or the service stops.
async fn wait_for_turn(inner: &Arc<Inner>, id: JobId) -> bool {
    let max_defer = Duration::from_secs_f64(inner.config.max_defer_secs);
    let deferred_since = tokio::time::Instant::now();
    loop {
        if inner.stop.is_cancelled() || inner.lock().queue.front() != Some(&id) {
            return false;
        }
        let load = inner.engine.load();
        if load.shutting_down {
            return false;
        }
        if load.ready && (load.idle || deferred_since.elapsed() >= max_defer) {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(IDLE_POLL) => {}
            () = inner.stop.cancelled() => return false,
        }
    }
}

/// Hands one job to the node and records how it ended.
async fn run_one(inner: &Arc<Inner>, id: JobId) -> RunEnd {
    // Take it from the backlog.
    let (spec, token, progress_tx) = {
        let mut t = inner.lock();
        if t.queue.front() != Some(&id) {
            return RunEnd::Finished;
        }
        t.queue.pop_front();
        let Some(e) = t.jobs.get_mut(&id) else {
            return RunEnd::Finished;
        };
        // Not a child of `stop`: at shutdown the runner keeps waiting for
        // the node, which drains the in-flight decode.
        let token = CancellationToken::new();
        let (tx, rx) = watch::channel(Progress {
            decoded_secs: 0.0,
            total_secs: e.spec.audio_secs as f32,
        });
        e.status = JobStatus::Running;
        let started = now_ms();
        e.started_at_ms = Some(started);
        e.decoded_secs = 0.0;
        e.live = Some(rx);
        e.cancel = Some(token.clone());
        inner.store.send(Write::Running {
            id,
            started_at_ms: started,
        });
        (e.spec.clone(), token, tx)
    };
    let span = tracing::info_span!("async_job", job = %id, audio_secs = spec.audio_secs);

    // Its audio, decoded from the stored file through the node's shared
    // decode slots and PCM budget; the budget is held until the answer.
    let opened = {
        let dir = inner.data_dir.clone();
        tokio::task::spawn_blocking(move || store::open_audio(&dir, id))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| format!("opening the stored audio: {e}")))
    };
    let decoded = match opened {
        Ok(upload) => {
            inner
                .ingest
                .decode(Arc::new(upload), spec.file_hint.clone())
                .instrument(span.clone())
                .await
        }
        Err(e) => Err(IngestError::Internal(e)),
    };
    let (samples, _pcm) = match decoded {
        Ok((d, lease)) => (d.samples, lease),
        Err(IngestError::Audio(AudioError::OverBudget { needed_bytes })) => {
            // The node holds too much decoded audio right now (sync
            // requests): try again later rather than fail the job.
            tracing::info!(parent: &span, needed_bytes, "no decode budget for this async job now; back to the backlog");
            requeue(inner, id);
            return RunEnd::Requeued(audio::OVER_BUDGET_RETRY_AFTER);
        }
        Err(e) => {
            tracing::error!(parent: &span, error = %e, "the stored audio of a job is unusable");
            finish(
                inner,
                id,
                Err(JobError {
                    code: Code::AudioLost.name().into(),
                    message: "the job's stored audio could not be read".into(),
                }),
            );
            return RunEnd::Finished;
        }
    };

    if token.is_cancelled() {
        return RunEnd::Finished;
    }
    let mut request = TranscriptionRequest::new(samples);
    request.options = spec.options.clone();
    request.parent_span = span.clone();
    request.fault = spec.fault;
    let mut progress_rx = progress_tx.subscribe();
    request.progress = Some(progress_tx);
    tracing::info!(parent: &span, "async job handed to the node");
    let mut answer = inner.engine.transcribe(request);
    let answer = loop {
        tokio::select! {
            a = &mut answer => break Some(a),
            () = token.cancelled() => break None,
            changed = progress_rx.changed() => {
                if changed.is_ok() {
                    let decoded = f64::from(progress_rx.borrow_and_update().decoded_secs);
                    inner.store.send(Write::Progress { id, decoded_secs: decoded });
                } else {
                    // The sender went with the request: only the answer is left.
                    break Some(answer.await);
                }
            }
        }
    };
    let Some(answer) = answer else {
        // DELETE already marked it cancelled; dropping the request makes
        // the node drop it if it has not reached the worker yet.
        tracing::info!(parent: &span, "stopped waiting for a cancelled job");
        return RunEnd::Finished;
    };
    match answer {
        Ok(t) => {
            if spec.audio_secs >= 1.0 {
                let rtf = t.decode_time.as_secs_f64() / spec.audio_secs;
                let mut table = inner.lock();
                table.rtf = 0.7 * table.rtf + 0.3 * rtf;
            }
            tracing::info!(parent: &span, decode_ms = t.decode_time.as_millis() as u64, "async job done");
            finish(inner, id, Ok(Arc::new(t.result)));
            RunEnd::Finished
        }
        Err(e) => {
            let stopping = inner.stop.is_cancelled();
            let retry = match &e {
                _ if stopping => Some(Duration::ZERO),
                AsrError::Busy { retry_after, .. } | AsrError::Unavailable { retry_after, .. } => {
                    Some((*retry_after).clamp(Duration::from_millis(100), MAX_RETRY_WAIT))
                }
                AsrError::QueueTimeout { .. } | AsrError::Cancelled | AsrError::ShuttingDown => {
                    Some(Duration::ZERO)
                }
                _ => None,
            };
            match retry {
                Some(wait) => {
                    tracing::info!(parent: &span, error = %e, ?wait, "async job not decoded now; back to the backlog");
                    requeue(inner, id);
                    if stopping || matches!(e, AsrError::ShuttingDown) {
                        RunEnd::Stop
                    } else {
                        RunEnd::Requeued(wait)
                    }
                }
                None => {
                    let code = e.code();
                    tracing::warn!(parent: &span, error = %e, code = code.name(), "async job failed");
                    finish(
                        inner,
                        id,
                        Err(JobError {
                            code: code.name().into(),
                            message: e.client_message(),
                        }),
                    );
                    RunEnd::Finished
                }
            }
        }
    }
}

/// Records a running job's end, unless it was cancelled meanwhile.
fn finish(inner: &Inner, id: JobId, outcome: Result<Arc<JobResult>, JobError>) {
    let now = now_ms();
    let write = {
        let mut t = inner.lock();
        let Some(e) = t.jobs.get_mut(&id) else { return };
        if e.status != JobStatus::Running {
            return;
        }
        e.finished_at_ms = Some(now);
        e.cancel = None;
        e.decoded_secs = e.decoded_now();
        e.live = None;
        match outcome {
            Ok(result) => {
                e.status = JobStatus::Done;
                e.decoded_secs = e.spec.audio_secs;
                e.result = Some(result.clone());
                Write::Finished {
                    id,
                    status: JobStatus::Done,
                    finished_at_ms: now,
                    result: Some(result),
                    error: None,
                }
            }
            Err(err) => {
                e.status = JobStatus::Failed;
                e.error = Some(err.clone());
                Write::Finished {
                    id,
                    status: JobStatus::Failed,
                    finished_at_ms: now,
                    result: None,
                    error: Some(err),
                }
            }
        }
    };
    inner.store.send(write);
}

/// Puts a running job back at the head of the backlog.
fn requeue(inner: &Inner, id: JobId) {
    let mut t = inner.lock();
    let Some(e) = t.jobs.get_mut(&id) else { return };
    if e.status != JobStatus::Running {
        return;
    }
    e.status = JobStatus::Queued;
    e.started_at_ms = None;
    e.decoded_secs = 0.0;
    e.live = None;
    e.cancel = None;
    t.queue.push_front(id);
    drop(t);
    inner.store.send(Write::Requeued { id });
}

/// Purges finished jobs past the retention time, now and then.
async fn janitor(inner: Arc<Inner>) {
    let retention_ms = (inner.config.retention_secs * 1000.0) as u64;
    let every = Duration::from_secs_f64((inner.config.retention_secs / 4.0).clamp(0.05, 60.0));
    loop {
        let now = now_ms();
        let expired: Vec<JobId> = {
            let mut t = inner.lock();
            let ids: Vec<JobId> = t
                .jobs
                .iter()
                .filter(|(_, e)| {
                    e.status.is_finished()
                        && e.finished_at_ms
                            .is_some_and(|f| f.saturating_add(retention_ms) <= now)
                })
                .map(|(id, _)| *id)
                .collect();
            for id in &ids {
                t.jobs.remove(id);
            }
            ids
        };
        if !expired.is_empty() {
            tracing::info!(jobs = expired.len(), "purging expired jobs");
            inner.store.send(Write::Delete { ids: expired });
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = inner.stop.cancelled() => break,
        }
    }
}

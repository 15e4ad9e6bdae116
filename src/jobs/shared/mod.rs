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
//!
//! Files: this one holds the service handle, its reads, cancel and
//! shutdown; `accept` the acceptance path; `runner` the runner (and why
//! it alone still polls the database) and the janitor.

mod accept;
mod runner;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::pg::{PgCancel, PgJob, PgStore};
use super::service::{CancelOutcome, Engine, EngineLimits, JobCounts, JobsError};
use super::types::{JobId, JobProgress, JobStatus, JobView};
use crate::api::Progress;
use crate::config::JobsConfig;
use crate::ingest::Ingest;

/// Longest a read from the database may take before it is answered 503.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

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
        let runner = tokio::spawn(runner::run(inner.clone()));
        let janitor = tokio::spawn(runner::janitor(inner.clone()));
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

//! [`JobService`]: the async job service of a node with its own SQLite
//! store. See the [jobs module doc](super) for the protocol.
//!
//! One concept per file:
//! - [`engine`]: what the service needs from the node (a fake in tests).
//! - `table`: the in-memory job table, rebuilt from the store at start.
//! - `accept`: submissions become durable queued jobs, or are refused.
//! - `runner`: feeds the node one job at a time when its worker is idle.
//! - `queries`: `GET` and `DELETE`, answered from memory.
//! - `drain`: shutdown: stop accepting, let the running job end, close.
//! - `retention`: the janitor that purges expired jobs.
//!
//! # Status publication
//! Every job status change (queued, running, done, failed, cancelled,
//! requeued, purged, and the service stopping) is applied to the table and
//! then published on a `watch` channel ([`JobService::subscribe`]). The
//! runner and the drain wait on it instead of polling the table; a host
//! can wait on it too.

mod accept;
mod drain;
pub(crate) mod engine;
mod queries;
mod retention;
mod runner;
mod table;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) use accept::measure;
pub use accept::{JobSubmission, SubmitError};
pub(crate) use engine::Engine;
pub use engine::EngineLimits;
pub use queries::{CancelOutcome, JobCounts};

use super::store::{self, StoreHandle};
use crate::config::JobsConfig;
use crate::ingest::Ingest;
use crate::node::AsrNode;
use table::Table;

/// A job found running at start-up more often than this is failed
/// (`interrupted`) instead of re-queued, so an input that kills the whole
/// service cannot crash-loop it.
pub const MAX_INTERRUPTIONS: u32 = 3;

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
    /// Marked changed after every job status change ([`Inner::publish`]).
    changes: watch::Sender<()>,
    /// Cancelled at shutdown.
    stop: CancellationToken,
    accepting: AtomicBool,
    /// Decode slots and the PCM budget, shared with the sync endpoint.
    ingest: Ingest,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    store_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
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
        let (table, requeued, failed) = Table::recover(opened.jobs, &data_dir, &store);
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
            changes: watch::Sender::new(()),
            stop: CancellationToken::new(),
            accepting: AtomicBool::new(true),
            ingest,
            tasks: Mutex::new(Vec::new()),
            store_thread: Mutex::new(Some(opened.thread)),
        });
        let runner = tokio::spawn(runner::run(inner.clone()));
        let janitor = tokio::spawn(retention::janitor(inner.clone()));
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

    /// A receiver marked changed after every job status change of this
    /// service (a job queued, running, finished, cancelled, requeued or
    /// purged, or the service stopping): wait on it, then read
    /// [`JobService::get`], instead of polling.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.inner.changes.subscribe()
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
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Only plain data under the lock; a panic elsewhere leaves it usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the runner, the drain and subscribers that a job's status
    /// changed. Call it after the table is updated (and its lock released).
    fn publish(&self) {
        self.changes.send_replace(());
    }
}

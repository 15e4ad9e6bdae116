//! Async transcription jobs that are never lost: submit, poll, fetch the
//! result later, even across a crash of the service.
//!
//! # Protocol (HTTP: [`crate::http::jobs`])
//! - `POST /v1/jobs`, the same multipart form as `/v1/audio/transcriptions`
//!   → `202 Accepted`, `Location: /v1/jobs/{id}`, the job as JSON with
//!   status `queued`. The upload is decoded once to validate it (400, 413,
//!   415 like the synchronous endpoint) before anything is stored. A full
//!   backlog is `429` with `Retry-After`.
//! - `GET /v1/jobs/{id}` → the job: `status` (`queued`, `running`, `done`,
//!   `failed`, `cancelled`), `progress` (audio seconds decoded of the total,
//!   updated after each 30 s window), timestamps, `error` (code and
//!   message) when failed, `result` (the `verbose_json` shape) when done.
//! - `DELETE /v1/jobs/{id}` cancels a queued or running job, or deletes a
//!   finished one.
//!
//! # Durability
//! The order of an acceptance is fixed: validate → write the upload to
//! `audio/<id>` and fsync it and its directory → insert the record and
//! commit (SQLite, WAL, `synchronous=FULL`) → register the job in memory →
//! `202`. So every `202` names a job whose audio and record are on disk.
//!
//! Every later change (running, progress, done/failed/cancelled, purge) is
//! applied in memory first and sent fire-and-forget to the store's writer
//! thread (see [`store`]). If the service dies before such a write commits,
//! the job is found at restart in an earlier state: `queued` or `running`
//! jobs are re-queued and decoded again (a job that was running at more
//! than [`MAX_INTERRUPTIONS`] crashes is failed instead, so one input cannot
//! crash-loop the service). Delivery is therefore at-least-once: a job may
//! be decoded twice, never zero times. Results and errors stay retrievable
//! for `retention_secs` after the job finished, then record and audio are
//! purged; the upload itself is deleted as soon as the job's final state is
//! committed.
//!
//! # Memory, not storage, answers polls
//! The job table lives in memory behind a mutex held only for a few map
//! operations (never across an await or any I/O). `GET` reads it and never
//! touches the store; decoding never waits for the store either. SQLite is
//! owned by one dedicated OS thread; nothing in async code calls it. A slow
//! or failing store delays (or fails, with `503`) new acceptances only,
//! because those must be durable before they are answered.
//!
//! # Scheduling: async jobs never starve interactive requests
//! One runner task hands async jobs to [`AsrNode::transcribe`], one at a
//! time, oldest first, through the same bounded queue and admission rules
//! as interactive requests. It hands a job over only when the node is ready
//! and idle (nothing waiting, nothing decoding), so an async job normally
//! goes straight to the worker and an interactive request competes with at
//! most that one job. A job that has waited `max_defer_secs` for an idle
//! moment is submitted anyway and takes one place in the node's FIFO queue,
//! so a steady interactive load cannot starve async work forever either.
//! When the node answers busy (429) or unavailable (503), the job goes back
//! to the head of the backlog and the runner waits the `Retry-After` (at
//! most 30 s); a queue timeout or a shutdown also re-queues it. Async
//! submissions use the node's default queue wait: they are submitted when
//! the queue is empty, so they rarely wait at all, and a longer wait would
//! only hold a queue slot that interactive requests need. The async backlog
//! has its own, larger limit (`max_pending`, default 100 jobs queued or
//! running).
//!
//! # Cancellation
//! A queued job is cancelled at once and never reaches the node. A running
//! job is marked cancelled at once and the runner stops waiting for it: if
//! it still waits in the node's queue it is dropped there, before decode;
//! if the worker already decodes it, that decode runs to its end (the
//! worker has no way to abort a decode without being killed) and its result
//! is discarded. A finished job is deleted (record, result, audio).
//!
//! # Embedding
//! ```no_run
//! # async fn host() -> Result<(), Box<dyn std::error::Error>> {
//! use actix_web::{App, HttpServer};
//! use whisper_node::config::JobsConfig;
//! use whisper_node::jobs::{JobService, Jobs};
//! use whisper_node::{AsrNode, NodeConfig};
//!
//! let node = AsrNode::start(NodeConfig::default()).await?;
//! let mut jobs_config = JobsConfig::default();
//! jobs_config.data_dir = "/var/lib/asr-jobs".into();
//! let jobs = Jobs::Local(JobService::start(node.clone(), jobs_config).await?);
//! let (node_data, jobs_data) = (
//!     whisper_node::http::app_data(&node),
//!     whisper_node::http::jobs::app_data(&jobs),
//! );
//! HttpServer::new(move || {
//!     App::new()
//!         .app_data(node_data.clone())
//!         .app_data(jobs_data.clone()) // enables /v1/jobs
//!         .configure(whisper_node::http::configure)
//! })
//! .bind(("127.0.0.1", 8080))?
//! .run()
//! .await?;
//! tokio::join!(node.shutdown(), jobs.shutdown());
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`types`]: ids, statuses, the stored spec, the client's view.
//! - [`store`]: the SQLite store: its writer thread, recovery at open,
//!   durable uploads.
//! - [`service`]: [`JobService`] over the SQLite store, one concept per
//!   file: the node seam, the job table, acceptance, the runner, queries
//!   and cancel, drain, retention. Job status changes are published on a
//!   `watch` channel ([`JobService::subscribe`]); the runner and the drain
//!   wait on it (and on the node's state channel) instead of polling.
//! - [`pg`]: the shared PostgreSQL store of a fleet: claims with
//!   `FOR UPDATE SKIP LOCKED`, leases, fencing, versioned migrations.
//! - [`shared`]: [`SharedJobs`] over the PostgreSQL store
//!   (`--jobs-store postgres://…`): acceptance, reads, the runner.
//!
//! [`AsrNode::transcribe`]: crate::AsrNode::transcribe

pub mod pg;
pub mod service;
pub mod shared;
pub mod store;
pub mod types;

pub use service::{
    CancelOutcome, EngineLimits, JobCounts, JobService, JobSubmission, JobsError, SubmitError,
    MAX_INTERRUPTIONS,
};
pub use types::{JobError, JobId, JobProgress, JobSpec, JobStatus, JobView};

pub use shared::{SharedJobs, StoreUnavailable};

/// The job service a node runs: its own SQLite store (the default) or the
/// fleet's shared PostgreSQL store (`--jobs-store postgres://…`). Reads are
/// async because the shared store answers jobs of other nodes from the
/// database; the local one answers from memory.
#[derive(Clone, Debug)]
pub enum Jobs {
    /// `--jobs-store sqlite`.
    Local(JobService),
    /// `--jobs-store postgres://…`.
    Shared(SharedJobs),
}

impl std::fmt::Debug for SharedJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedJobs").finish_non_exhaustive()
    }
}

impl Jobs {
    /// Starts the store chosen by `config.store` next to `node`.
    pub async fn start(
        node: crate::AsrNode,
        config: crate::config::JobsConfig,
    ) -> Result<Jobs, JobsError> {
        if config.store == "sqlite" {
            Ok(Jobs::Local(JobService::start(node, config).await?))
        } else {
            Ok(Jobs::Shared(
                SharedJobs::start_with(std::sync::Arc::new(node), config).await?,
            ))
        }
    }

    /// The node's upload limits.
    pub fn limits(&self) -> EngineLimits {
        match self {
            Jobs::Local(j) => j.limits(),
            Jobs::Shared(j) => j.limits(),
        }
    }

    /// The shared ingest limits.
    pub fn ingest(&self) -> &crate::ingest::Ingest {
        match self {
            Jobs::Local(j) => j.ingest(),
            Jobs::Shared(j) => j.ingest(),
        }
    }

    /// See [`JobService::submit`], [`SharedJobs::submit`].
    pub async fn submit(&self, sub: JobSubmission) -> Result<JobView, SubmitError> {
        match self {
            Jobs::Local(j) => j.submit(sub).await,
            Jobs::Shared(j) => j.submit(sub).await,
        }
    }

    /// A job's state.
    pub async fn get(&self, id: JobId) -> Result<Option<JobView>, StoreUnavailable> {
        match self {
            Jobs::Local(j) => Ok(j.get(id)),
            Jobs::Shared(j) => j.get(id).await,
        }
    }

    /// Jobs, newest first.
    pub async fn list(
        &self,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<JobView>, StoreUnavailable> {
        match self {
            Jobs::Local(j) => Ok(j.list(status, limit)),
            Jobs::Shared(j) => j.list(status, limit).await,
        }
    }

    /// Counts by status.
    pub async fn counts(&self) -> Result<JobCounts, StoreUnavailable> {
        match self {
            Jobs::Local(j) => Ok(j.counts()),
            Jobs::Shared(j) => j.counts().await,
        }
    }

    /// `DELETE`.
    pub async fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreUnavailable> {
        match self {
            Jobs::Local(j) => Ok(j.cancel(id)),
            Jobs::Shared(j) => j.cancel(id).await,
        }
    }

    /// The store's current error.
    pub fn store_error(&self) -> Option<String> {
        match self {
            Jobs::Local(j) => j.store_error(),
            Jobs::Shared(j) => j.store_error(),
        }
    }

    /// Failed store transactions.
    pub fn store_failures(&self) -> u64 {
        match self {
            Jobs::Local(j) => j.store_failures(),
            Jobs::Shared(j) => j.store_failures(),
        }
    }

    /// Stops the service (see [`JobService::shutdown`]).
    pub async fn shutdown(&self) {
        match self {
            Jobs::Local(j) => j.shutdown().await,
            Jobs::Shared(j) => j.shutdown().await,
        }
    }
}

#[cfg(test)]
mod tests;

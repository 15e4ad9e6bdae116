//! Status queries and cancellation: what `GET` and `DELETE /v1/jobs/…`
//! do. Reads are answered from the in-memory table and never wait on the
//! store or the node; a cancellation is applied in memory, published (so
//! the runner stops waiting for that job at once) and sent to the store.

use super::{Inner, JobService};
use crate::jobs::store::Write;
use crate::jobs::types::{now_ms, JobId, JobStatus, JobView};

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

impl JobService {
    /// A job's state, from memory; never waits on the store or the node.
    pub fn get(&self, id: JobId) -> Option<JobView> {
        let retention = self.inner.retention_ms();
        self.inner.lock().view(id, retention)
    }

    /// Jobs, newest first, optionally only those with `status`, at most
    /// `limit`.
    pub fn list(&self, status: Option<JobStatus>, limit: usize) -> Vec<JobView> {
        let retention = self.inner.retention_ms();
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
        let retention = self.inner.retention_ms();
        let mut t = self.inner.lock();
        let Some(e) = t.jobs.get_mut(&id) else {
            return CancelOutcome::NotFound;
        };
        if e.status.is_finished() {
            t.jobs.remove(&id);
            drop(t);
            self.inner.store.send(Write::Delete { ids: vec![id] });
            self.inner.publish();
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
        self.inner.publish();
        tracing::info!(job = %id, was = was.as_str(), "job cancelled");
        match view {
            Some(v) => CancelOutcome::Cancelled(Box::new(v)),
            None => CancelOutcome::NotFound,
        }
    }
}

impl Inner {
    /// How long a finished job stays retrievable, in milliseconds.
    pub(super) fn retention_ms(&self) -> u64 {
        (self.config.retention_secs * 1000.0) as u64
    }
}

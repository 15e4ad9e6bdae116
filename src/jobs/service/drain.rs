//! Drain and shutdown: stop accepting, let the runner finish or hand back
//! the job it holds, then commit the last writes and close the store.
//!
//! The drain waits for the published status change that leaves no job
//! running on this node (the node finished it, or it went back to the
//! queue); it never polls. It is bounded by the node's shutdown grace plus
//! 15 s, after which the service's tasks are aborted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::JobService;

impl JobService {
    /// Stops accepting (new submissions get [`SubmitError::ShuttingDown`]),
    /// lets the runner finish or hand back the job it holds (a job the node
    /// did not finish goes back to `queued` and runs after the restart),
    /// then commits the last writes and closes the store. Run it together
    /// with [`AsrNode::shutdown`] (which drains the in-flight decode).
    /// Idempotent.
    pub async fn shutdown(&self) {
        self.inner.accepting.store(false, Ordering::Release);
        self.inner.stop.cancel();
        self.inner.publish();
        let limit = self.inner.limits.shutdown_grace + Duration::from_secs(15);
        let deadline = tokio::time::Instant::now() + limit;
        if tokio::time::timeout_at(deadline, self.drained())
            .await
            .is_err()
        {
            tracing::warn!("the running async job did not end within {limit:?}");
        }
        let tasks: Vec<_> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::warn!("a job service task did not stop in time; aborting it");
                abort.abort();
            }
        }
        if !self.inner.store.flush().await {
            tracing::warn!("the job store stopped before its last writes were flushed");
        }
        tracing::info!(counts = ?self.counts(), "job service stopped");
    }

    /// Returns once no job runs on this node: woken by each published
    /// status change, never polling.
    pub(crate) async fn drained(&self) {
        let mut changes = self.inner.changes.subscribe();
        loop {
            changes.borrow_and_update();
            if self.inner.lock().running() == 0 {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
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
}

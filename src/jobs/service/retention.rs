//! Retention: finished jobs stay retrievable for `retention_secs`, then
//! the janitor purges them from memory and the store (record, result,
//! audio).
//!
//! The janitor is a timer, not a poll of state: expiry is a point in time,
//! not an event anyone publishes. It looks every quarter of the retention
//! (between 50 ms and 60 s), so a job is purged at most that long after it
//! expired, and the store gets its deletes in batches.

use std::sync::Arc;
use std::time::Duration;

use super::Inner;
use crate::jobs::store::Write;
use crate::jobs::types::{now_ms, JobId};

/// Purges finished jobs past the retention time, now and then.
pub(super) async fn janitor(inner: Arc<Inner>) {
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
            inner.publish();
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = inner.stop.cancelled() => break,
        }
    }
}

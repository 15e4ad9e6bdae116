//! The job table: every job of this node, in memory, which answers polls
//! and feeds the runner. It is rebuilt from the store at start-up
//! ([`Table::recover`]), where unfinished jobs are re-queued or failed.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::MAX_INTERRUPTIONS;
use crate::api::{JobResult, Progress};
use crate::error_code::Code;
use crate::jobs::store::{self, StoreHandle, StoredJob, Write};
use crate::jobs::types::{now_ms, JobError, JobId, JobProgress, JobSpec, JobStatus, JobView};

/// Starting guess of decode seconds per audio second, until measured.
const INITIAL_RTF: f64 = 0.2;

/// The job table: every job's state, in memory. Guarded by a mutex that is
/// held for a few map operations only, never across an await or I/O.
#[derive(Default)]
pub(super) struct Table {
    pub(super) jobs: HashMap<JobId, Entry>,
    /// Queued jobs, oldest first.
    pub(super) queue: VecDeque<JobId>,
    /// Accepts in progress (counted against the backlog limit).
    pub(super) reserved: usize,
    /// Moving average of decode seconds per audio second of async jobs.
    pub(super) rtf: f64,
}

pub(super) struct Entry {
    pub(super) status: JobStatus,
    pub(super) created_at_ms: u64,
    pub(super) started_at_ms: Option<u64>,
    pub(super) finished_at_ms: Option<u64>,
    pub(super) spec: Arc<JobSpec>,
    /// Last known progress (audio seconds decoded).
    pub(super) decoded_secs: f64,
    /// Live progress while running.
    pub(super) live: Option<watch::Receiver<Progress>>,
    /// Cancels the runner's wait for this job while running.
    pub(super) cancel: Option<CancellationToken>,
    pub(super) result: Option<Arc<JobResult>>,
    pub(super) error: Option<JobError>,
}

impl Table {
    /// Jobs handed to the node now (zero or one).
    pub(super) fn running(&self) -> usize {
        self.jobs
            .values()
            .filter(|e| e.status == JobStatus::Running)
            .count()
    }

    /// Jobs queued or running, and accepts in progress: what the backlog
    /// limit counts.
    pub(super) fn pending(&self) -> usize {
        self.queue.len() + self.running() + self.reserved
    }

    /// Time until the job ahead of everyone is likely done.
    pub(super) fn retry_after(&self) -> Duration {
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

    pub(super) fn view(&self, id: JobId, retention_ms: u64) -> Option<JobView> {
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
    pub(super) fn decoded_now(&self) -> f64 {
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

impl Table {
    /// The table of the jobs read back from the store: finished ones as
    /// they are; unfinished ones re-queued (oldest first), or failed when
    /// their audio is missing or they were interrupted more than
    /// [`MAX_INTERRUPTIONS`] times. Corrections are sent to `store`.
    /// Returns the table and how many jobs were re-queued and failed.
    pub(super) fn recover(
        jobs: Vec<StoredJob>,
        data_dir: &Path,
        store: &StoreHandle,
    ) -> (Table, usize, usize) {
        let mut table = Table {
            rtf: INITIAL_RTF,
            ..Table::default()
        };
        let (mut requeued, mut failed) = (0usize, 0usize);
        for job in jobs {
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
                let missing = !store::audio_path(data_dir, id).exists();
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
        (table, requeued, failed)
    }
}

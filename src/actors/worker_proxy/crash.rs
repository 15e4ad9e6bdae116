//! What the [`WorkerProxyActor`](super::WorkerProxyActor) does with the
//! batch in flight when the child dies or is killed (see *Failure* in
//! [`super`]): a lone job is retried, quarantined or failed per
//! `max_crash_retries`; each job of a batch of more goes back to the queue
//! to be decoded alone.

use super::exit::ExitCause;
use super::slots;
use super::state::{Held, WorkerProxyState};
use crate::actors::queue::QueueMsg;
use crate::api::AsrError;

impl WorkerProxyState {
    /// The worker is being killed with a batch in flight (decode deadline,
    /// silence): a lone job is answered `err`; the jobs of a batch of more
    /// than one go back to the queue to run alone (see
    /// [`Self::retry_alone`]), since nothing tells which of them is to
    /// blame.
    pub(super) fn fail_in_flight(&mut self, err: AsrError) {
        if let Some(f) = self.slots.take_in_flight() {
            if f.is_batch() && self.args.config.max_crash_retries > 0 {
                tracing::warn!(generation = self.generation(), jobs = f.jobs.len(), error = %err, "batch failed in the worker, retrying each of its jobs alone");
                self.retry_alone(f.jobs, &err);
            } else {
                for h in f.jobs {
                    crate::telemetry::decode_error(&h.span, &err);
                    tracing::warn!(parent: &h.job.span, job_id = h.job.id, generation = self.generation(), error = %err, "job failed in the worker");
                    let _ = h.job.reply.send(Err(err.clone()));
                }
            }
        }
        self.args.shared.worker_in_flight(0);
    }

    /// The child died with the batch `f` in flight: a lone job is retried,
    /// quarantined or failed per `max_crash_retries`; each job of a batch
    /// of more goes back to run alone, its crash count unchanged (a crash
    /// in a batch is no evidence against any one of its jobs; alone, a
    /// poisoned job crashes again and meets the rules above).
    pub(super) fn crashed_in_flight(&mut self, f: slots::InFlight<Held>, cause: &ExitCause) {
        if f.is_batch() && self.args.config.max_crash_retries > 0 {
            tracing::warn!(generation = self.generation(), jobs = f.jobs.len(), cause = %cause, "worker crashed with a batch in flight, retrying each of its jobs alone");
            self.retry_alone(f.jobs, cause);
            return;
        }
        for h in f.jobs {
            self.crashed_alone(h, cause);
        }
    }

    /// Sends each job back to the front of the queue, in order, to be
    /// decoded alone ([`QueuedJob::solo`](crate::actors::job::QueuedJob::solo)).
    pub(super) fn retry_alone(&self, jobs: Vec<Held>, why: &dyn std::fmt::Display) {
        // The queue puts each retry first in line: the last one goes first.
        for h in jobs.into_iter().rev() {
            crate::telemetry::decode_failed(&h.span, "batch_failed", why);
            let mut job = h.job;
            tracing::warn!(parent: &job.span, job_id = job.id, "retrying the job alone after its batch failed");
            job.solo = true;
            let _ = self.args.queue.cast(QueueMsg::Retry(job));
        }
    }

    /// The child died with `f` in flight alone: retry it, quarantine it, or
    /// fail it, per `max_crash_retries`.
    pub(super) fn crashed_alone(&self, f: Held, cause: &ExitCause) {
        crate::telemetry::decode_failed(&f.span, "worker_crashed", cause);
        let max = self.args.config.max_crash_retries;
        let mut job = f.job;
        if max == 0 {
            let _ = job.reply.send(Err(AsrError::WorkerCrashed {
                detail: cause.to_string(),
            }));
        } else if job.attempts < max {
            job.attempts += 1;
            job.solo = true;
            let _ = self.args.queue.cast(QueueMsg::Retry(job));
        } else {
            tracing::error!(parent: &job.span, job_id = job.id, attempts = job.attempts + 1, "input crashed the worker repeatedly, quarantining it");
            let _ = self.args.queue.cast(QueueMsg::Quarantine(job.fingerprint));
            let _ = job.reply.send(Err(AsrError::Quarantined));
        }
    }
}

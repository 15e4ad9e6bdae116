//! The [`WorkerProxyActor`](super::WorkerProxyActor)'s state and what it
//! does with each event: jobs into slots and frames out to the child,
//! answers to their clients, kills, and the exit's hand-back to the queue
//! and the supervisor. The rules are in [`super`]'s docs; the decisions
//! about slots are [`super::slots`]'.

use crate::error_code::Code;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::exit::{ExitCause, KillReason, WorkerExit};
use super::slots::{self, Liveness, Pairing, Placement, SlotJob, Slots};
use super::{WorkerProxyArgs, WorkerProxyMsg, TICK};
use crate::actors::child::io::Outgoing;
use crate::actors::child::{ChildGuard, ProcessExit};
use crate::actors::queue::{JobPayload, QueueMsg, QueuedJob};
use crate::actors::supervisor::SupervisorMsg;
use crate::api::{AsrError, Transcript};
use crate::config::NodeConfig;

/// A job in a slot, with its `worker.decode` span (see
/// [`QueuedJob::decode_span`](crate::actors::job::QueuedJob::decode_span)). A staged job's `queue.wait` span
/// stays open until the engine starts it.
pub(super) struct Held {
    pub(super) job: QueuedJob,
    pub(super) span: tracing::Span,
}

impl SlotJob for Held {
    fn id(&self) -> u64 {
        self.job.id
    }
    fn client_gone(&self) -> bool {
        self.job.reply.is_closed()
    }
    fn queue_deadline(&self) -> Instant {
        self.job.deadline
    }
    fn audio_secs(&self) -> f64 {
        self.job.audio_secs
    }
}

impl AsRef<[i16]> for JobPayload {
    fn as_ref(&self) -> &[i16] {
        &self.samples
    }
}

/// State of the [`WorkerProxyActor`].
pub struct WorkerProxyState {
    pub(super) args: WorkerProxyArgs,
    pub(super) guard: ChildGuard,
    /// Frames to the child; `None` once its stdin is to close.
    pub(super) to_child: Option<mpsc::UnboundedSender<Outgoing>>,
    /// Its handshake, once it loaded.
    pub(super) hello: Option<asr_ipc::Hello>,
    pub(super) slots: Slots<Held>,
    /// What it reported with `LoadFailed`, if it did.
    pub(super) load_failure: Option<asr_ipc::LoadFailure>,
    pub(super) tasks: Vec<JoinHandle<()>>,
}

impl Drop for WorkerProxyState {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // `guard` drops after this and kills the process group.
    }
}

impl WorkerProxyState {
    pub(super) fn generation(&self) -> u64 {
        self.args.generation
    }

    /// Tells the queue it may send a job, if a slot is free. `rtf` is that
    /// of the job just finished, if any.
    pub(super) fn report_idle(&self, myself: &ActorRef<WorkerProxyMsg>, rtf: Option<f64>) {
        if let Some(stage) = self.slots.free_slot(self.stopping()) {
            let _ = self.args.queue.cast(QueueMsg::WorkerIdle {
                worker: myself.clone(),
                worker_id: self.args.plan.id,
                rtf,
                stage,
            });
        }
    }

    /// Kills the child's process group for `reason`; its exit (and the
    /// restart) follow, and the exit's cause carries the first reason.
    pub(super) fn kill(&mut self, reason: KillReason) {
        self.slots.kill(reason);
        self.guard.kill();
    }

    /// Kills a loaded child for `reason` and publishes it not ready from
    /// this instant, so nobody reads "ready" between a job's error and the
    /// exit.
    pub(super) fn kill_loaded(&mut self, reason: KillReason) {
        self.args.shared.worker_exited(reason.to_string());
        self.kill(reason);
    }

    pub(super) fn stopping(&self) -> bool {
        self.args.shared.is_shutting_down()
    }

    pub(super) fn send(&self, out: Outgoing) -> bool {
        self.to_child
            .as_ref()
            .map(|tx| tx.send(out).is_ok())
            .unwrap_or(false)
    }

    /// Sends `jobs` to the child as one batch (a lone job as before, more
    /// after a [`Outgoing::Batch`] frame); returns those sent, with their
    /// `worker.decode` spans. Every header is encoded here, first: a job
    /// that cannot be sent is refused ([`Self::refuse_unsendable`]) before
    /// anything of it reaches the child or the slots.
    pub(super) fn send_batch(&self, jobs: Vec<QueuedJob>) -> Vec<Held> {
        let mut ready = Vec::with_capacity(jobs.len());
        for job in jobs {
            match self.encode(job) {
                (held, Ok(header)) => ready.push((held, header)),
                (held, Err(err)) => self.refuse_unsendable(held, err),
            }
        }
        let mut sent = true;
        if ready.len() > 1 {
            sent = self.send(Outgoing::Batch(
                ready.iter().map(|(h, _)| h.job.id).collect(),
            ));
        }
        let mut held = Vec::with_capacity(ready.len());
        for (h, header) in ready {
            sent = sent
                && self.send(Outgoing::Job {
                    id: h.job.id,
                    header,
                    audio: h.job.payload.clone(),
                });
            held.push(h);
        }
        if !sent {
            // The writer stopped: the child is dying; Exited follows and
            // answers (or requeues) the jobs.
            tracing::warn!(jobs = held.len(), "worker stdin closed at dispatch");
        }
        held
    }

    /// Opens `job`'s `worker.decode` span and encodes its header.
    fn encode(&self, job: QueuedJob) -> (Held, Result<Vec<u8>, AsrError>) {
        let span = job.decode_span(self.args.plan.id, self.generation(), self.hello.as_ref());
        // The worker may ignore it; it makes the process boundary explicit.
        let traceparent = crate::telemetry::traceparent(&span);
        let header = asr_ipc::JobHeader {
            id: job.id,
            traceparent,
            sample_count: job.payload.samples.len() as u64,
            options: job.payload.options.clone(),
            fault: job.payload.fault,
            stream_segments: job.payload.stream_segments,
        };
        let held = Held { job, span };
        let header = asr_ipc::encode_job_header(&header).map_err(|e| AsrError::Unsendable {
            detail: e.to_string(),
        });
        (held, header)
    }

    /// Answers a job that could not be sent; the slots are untouched.
    pub(super) fn refuse_unsendable(&self, held: Held, err: AsrError) {
        let Held { mut job, span } = held;
        tracing::error!(parent: &job.span, job_id = job.id, audio_secs = job.audio_secs, error = %err, "job could not be sent to the worker");
        job.end_queue_wait(Code::JobUnsendable.name());
        crate::telemetry::decode_error(&span, &err);
        let _ = job.reply.send(Err(err));
    }

    /// Whether an answer about `job_id` goes to the job in flight; on a
    /// broken pairing every held job is failed and the child killed.
    pub(super) fn deliverable(&mut self, job_id: u64, is_final: bool) -> bool {
        match self.slots.pair(job_id, is_final) {
            Pairing::Deliver => true,
            Pairing::Drop => {
                tracing::debug!(job_id, "answer nobody waits for dropped");
                false
            }
            Pairing::Broken(detail) => {
                self.broken_pairing(detail);
                false
            }
        }
    }

    /// The child's answers no longer pair with the jobs: fail every job it
    /// holds explicitly, and kill it (the supervisor restarts it).
    pub(super) fn broken_pairing(&mut self, detail: String) {
        tracing::error!(generation = self.generation(), %detail, "worker answers cannot be paired with jobs any more; failing every job it holds and restarting it");
        // Not ready from this instant, as after a decode deadline.
        self.args.shared.worker_exited(format!("killed: {detail}"));
        let held = self.slots.break_pairing(detail.clone());
        self.guard.kill();
        let err = AsrError::WorkerProtocol { detail };
        for f in held.in_flight.map(|f| f.jobs).unwrap_or_default() {
            crate::telemetry::decode_error(&f.span, &err);
            tracing::warn!(parent: &f.job.span, job_id = f.job.id, error = %err, "job failed: worker broke the protocol");
            let _ = f.job.reply.send(Err(err.clone()));
        }
        for s in held.staged.map(|s| s.jobs).unwrap_or_default() {
            let Held { mut job, span } = s;
            job.end_queue_wait(Code::WorkerProtocolError.name());
            crate::telemetry::decode_error(&span, &err);
            tracing::warn!(parent: &job.span, job_id = job.id, error = %err, "staged job failed: worker broke the protocol");
            let _ = job.reply.send(Err(err.clone()));
        }
    }

    /// A frame arrived: the child is alive.
    pub(super) fn heard(&mut self) {
        if self.slots.heard(Instant::now()) {
            tracing::warn!(
                generation = self.generation(),
                "worker heartbeat back, ready again"
            );
            self.args.shared.worker_heartbeat_late(false);
        }
    }

    /// The liveness check of every [`TICK`] (see *Liveness*).
    pub(super) fn check_heartbeat(&mut self) {
        let config = &self.args.config;
        let verdict = self.slots.liveness(
            Instant::now(),
            config.heartbeat_late(),
            config.heartbeat_timeout(),
        );
        let generation = self.generation();
        match verdict {
            Liveness::Alive => {}
            Liveness::Late(silent) => {
                tracing::warn!(
                    generation,
                    ?silent,
                    "worker heartbeat late, not ready until it comes back"
                );
                self.args.shared.worker_heartbeat_late(true);
            }
            Liveness::Unresponsive(silent) => {
                let job_ids: Vec<u64> = self
                    .slots
                    .in_flight()
                    .map(|f| f.jobs.iter().map(|h| h.job.id).collect())
                    .unwrap_or_default();
                tracing::error!(
                    generation,
                    ?silent,
                    ?job_ids,
                    "no heartbeat from the worker within the timeout, killing it"
                );
                self.kill_loaded(KillReason::Unresponsive { silent });
                self.fail_in_flight(AsrError::WorkerUnresponsive { silent_for: silent });
            }
        }
    }

    /// The decode deadline of a batch: the node's floor plus its factor
    /// times the batch's total audio (as for one job of the summed length,
    /// which a sequential decode of the batch also meets).
    fn batch_deadline(config: &NodeConfig, jobs: &[Held]) -> Duration {
        config.decode_deadline(jobs.iter().map(|h| h.job.audio_secs).sum())
    }

    /// `jobs` are now the batch the engine decodes: start its decode
    /// deadline.
    pub(super) fn start(&mut self, myself: &ActorRef<WorkerProxyMsg>, jobs: Vec<Held>) {
        let Some(key) = jobs.first().map(|h| h.job.id) else {
            return;
        };
        let deadline = Self::batch_deadline(&self.args.config, &jobs);
        let n = jobs.len();
        self.slots.start(jobs, Instant::now(), deadline);
        self.args.shared.worker_in_flight(n);
        myself.send_after(deadline, move || WorkerProxyMsg::DecodeDeadline(key));
    }

    /// The batch in flight was answered: the staged batch (if any) takes
    /// its place.
    pub(super) fn promote(&mut self, myself: &ActorRef<WorkerProxyMsg>) {
        let config = self.args.config.clone();
        let promoted = self
            .slots
            .promote(Instant::now(), |jobs| Self::batch_deadline(&config, jobs));
        match promoted {
            Some((f, staged_for)) => {
                let (key, deadline) = (f.key, f.deadline);
                for h in &mut f.jobs {
                    tracing::debug!(parent: &h.job.span, job_id = h.job.id, "staged job in flight");
                    h.job.end_queue_wait("dispatched");
                    crate::telemetry::decode_started_after_staging(&h.span, staged_for);
                }
                self.args.shared.worker_in_flight(f.jobs.len());
                myself.send_after(deadline, move || WorkerProxyMsg::DecodeDeadline(key));
            }
            None => self.args.shared.worker_in_flight(0),
        }
    }

    /// Takes staged job `id` back from the child (it may not decode it).
    pub(super) fn unstage(&mut self, id: u64, why: &'static str) -> Option<QueuedJob> {
        let Held { mut job, span } = self.slots.unstage(id)?;
        self.send(Outgoing::Cancel(job.id));
        job.end_queue_wait(why);
        crate::telemetry::decode_skipped(&span, why);
        Some(job)
    }

    /// Takes every staged job back from the child.
    pub(super) fn unstage_all(&mut self, why: &'static str) -> Vec<QueuedJob> {
        let ids = self.slots.staged_ids();
        ids.into_iter()
            .filter_map(|id| self.unstage(id, why))
            .collect()
    }

    /// The periodic check ([`WorkerProxyMsg::Tick`]).
    pub(super) fn tick(&mut self, myself: &ActorRef<WorkerProxyMsg>) {
        self.check_heartbeat();
        let now = Instant::now();
        let mut freed = false;
        for (id, why) in self.slots.check_staged(now, self.stopping()) {
            let Some(job) = self.unstage(id, why.label()) else {
                continue;
            };
            match why {
                slots::Unstage::ClientGone => {
                    tracing::info!(parent: &job.span, job_id = job.id, "client gone, dropping job before decode");
                    freed = true;
                }
                slots::Unstage::Expired => {
                    let waited = now - job.admitted_at;
                    tracing::info!(parent: &job.span, job_id = job.id, ?waited, "job waited past its deadline");
                    crate::metrics::queue_timeout();
                    let _ = job.reply.send(Err(AsrError::QueueTimeout { waited }));
                    freed = true;
                }
                slots::Unstage::ShuttingDown => {
                    let _ = job.reply.send(Err(AsrError::ShuttingDown));
                }
            }
        }
        if freed {
            self.report_idle(myself, None);
        }
        for id in self.slots.cancel_in_flight_if_gone() {
            if let Some(h) = self.slots.in_flight_job(id) {
                tracing::info!(parent: &h.job.span, job_id = id, "client gone, cancelling the job in the worker");
            }
            self.send(Outgoing::Cancel(id));
        }
    }

    pub(super) fn on_hello(&mut self, myself: &ActorRef<WorkerProxyMsg>, hello: asr_ipc::Hello) {
        let generation = self.generation();
        if hello.protocol_version != asr_ipc::PROTOCOL_VERSION {
            let reason = KillReason::WrongProtocol {
                worker: hello.protocol_version,
                service: asr_ipc::PROTOCOL_VERSION,
            };
            tracing::error!(generation, "{reason}");
            self.kill(reason);
            return;
        }
        if !self.slots.loaded(Instant::now()) {
            tracing::warn!(generation, lifecycle = ?self.slots.lifecycle(), "unexpected Hello ignored");
            return;
        }
        tracing::info!(
            generation,
            pid = hello.pid,
            model = %hello.model,
            device = %hello.device,
            compute_type = %hello.compute_type,
            load_ms = hello.load_ms,
            engine = %hello.engine.version,
            engine_library = %hello.engine.library,
            engine_backend = %hello.engine.backend,
            "worker ready"
        );
        self.args.shared.worker_loaded(&hello);
        let _ = self.args.supervisor.cast(SupervisorMsg::WorkerLoaded {
            worker: self.args.plan.id,
            generation,
            hello: hello.clone(),
        });
        self.hello = Some(hello);
        self.tasks
            .push(myself.send_interval(TICK, || WorkerProxyMsg::Tick));
        self.report_idle(myself, None);
    }

    pub(super) fn on_done(
        &mut self,
        myself: &ActorRef<WorkerProxyMsg>,
        result: asr_ipc::JobResult,
    ) {
        if !self.deliverable(result.job_id, true) {
            return;
        }
        let Some(a) = self.slots.answered(result.job_id, true, Instant::now()) else {
            return; // (`deliverable` said it is in flight)
        };
        let generation = self.generation();
        if let Some(idle) = result.timings.idle_before_us {
            crate::metrics::engine_idle(Duration::from_micros(idle));
        }
        let Held { job, span } = a.job;
        let decode_time = a.started_at.elapsed();
        crate::telemetry::decode_succeeded(&span, job.audio_secs, &result, decode_time);
        tracing::info!(
            parent: &job.span,
            job_id = job.id,
            generation,
            audio_secs = job.audio_secs,
            decode_ms = decode_time.as_millis() as u64,
            "job done"
        );
        // Publish "idle" (or the staged batch in flight) and ask for the
        // next batch before the client can see its answer, so a status read
        // right after the answer never shows this job still in flight.
        self.batch_answered(myself, a.batch_done);
        let _ = job.reply.send(Ok(Transcript {
            job_id: job.id,
            queue_wait: a.started_at - job.admitted_at,
            decode_time,
            worker_generation: generation,
            result,
        }));
    }

    /// After an answer: if it was the batch's last, the staged batch is
    /// promoted and the queue asked for more, with the batch's real-time
    /// factor.
    fn batch_answered(
        &mut self,
        myself: &ActorRef<WorkerProxyMsg>,
        done: Option<slots::BatchDone>,
    ) {
        let Some(done) = done else { return };
        if done.size > 1 {
            tracing::debug!(
                generation = self.generation(),
                jobs = done.size,
                decode_ms = done.decode_time.as_millis() as u64,
                rtf = done.rtf,
                "batch done"
            );
        }
        self.promote(myself);
        self.report_idle(myself, done.rtf);
    }

    pub(super) fn on_failed(
        &mut self,
        myself: &ActorRef<WorkerProxyMsg>,
        job_id: u64,
        error: asr_ipc::WorkerError,
    ) {
        if !self.deliverable(job_id, true) {
            return;
        }
        let Some(a) = self.slots.answered(job_id, false, Instant::now()) else {
            return; // (`deliverable` said it is in flight)
        };
        self.batch_answered(myself, a.batch_done);
        let error = AsrError::Rejected(error);
        crate::telemetry::decode_error(&a.job.span, &error);
        tracing::info!(parent: &a.job.job.span, job_id, generation = self.generation(), error = %error, "worker refused job");
        let _ = a.job.job.reply.send(Err(error));
    }

    pub(super) fn on_run(&mut self, myself: &ActorRef<WorkerProxyMsg>, jobs: Vec<QueuedJob>) {
        match self.slots.placement() {
            placement @ (Placement::Gone | Placement::Requeue) => {
                // Gone: lost a race with the child's exit, the queue serves
                // them to the next worker. Requeue: two answers to one
                // request for work crossed. Either way they go back first
                // in line, in order.
                for mut job in jobs.into_iter().rev() {
                    if placement == Placement::Gone {
                        tracing::warn!(parent: &job.span, job_id = job.id, "job dispatched to a worker that is gone, requeueing");
                    } else {
                        tracing::debug!(
                            job_id = job.id,
                            "no free slot, returning the job to the queue"
                        );
                    }
                    job.end_queue_wait("requeued");
                    let _ = self.args.queue.cast(QueueMsg::Requeue(job));
                }
                return;
            }
            Placement::Run => {
                // (A no-op unless the queue sent them for staging and the
                // batch in flight finished meanwhile.)
                let mut jobs = jobs;
                for job in &mut jobs {
                    job.end_queue_wait("dispatched");
                }
                let sent = self.send_batch(jobs);
                if !sent.is_empty() {
                    self.start(myself, sent);
                }
            }
            Placement::Stage => {
                let sent = self.send_batch(jobs);
                for h in &sent {
                    tracing::debug!(parent: &h.job.span, job_id = h.job.id, "job staged in the worker");
                }
                self.slots.stage(sent, Instant::now());
            }
        }
        self.report_idle(myself, None);
    }

    pub(super) fn on_exited(&mut self, myself: &ActorRef<WorkerProxyMsg>, status: ProcessExit) {
        let generation = self.generation();
        let (held, killed) = self.slots.exited();
        let cause = ExitCause::new(status, killed);
        self.to_child = None;
        tracing::warn!(generation, cause = %cause, kind = cause.label(), "worker exited");
        self.args.shared.worker_exited(cause.to_string());
        // First of all, the queue must stop dispatching to us: the requeued
        // jobs below arrive after this.
        let _ = self.args.queue.cast(QueueMsg::WorkerGone {
            worker: myself.clone(),
        });
        // The staged jobs never reached the engine: they go back to the
        // front of the queue (in order), behind the in-flight jobs' retries.
        for s in held
            .staged
            .map(|s| s.jobs)
            .unwrap_or_default()
            .into_iter()
            .rev()
        {
            let Held { mut job, span } = s;
            job.end_queue_wait("requeued");
            crate::telemetry::decode_skipped(&span, "worker_exited");
            let _ = self.args.queue.cast(QueueMsg::Requeue(job));
        }
        if let Some(f) = held.in_flight {
            self.crashed_in_flight(f, &cause);
        }
        let exit = WorkerExit {
            cause,
            loaded: self.hello.is_some(),
            reported_load_failure: self.load_failure.take(),
        };
        let desc = exit.to_string();
        let _ = self.args.supervisor.cast(SupervisorMsg::WorkerExited {
            worker: self.args.plan.id,
            generation,
            exit,
        });
        let _ = myself.cast(WorkerProxyMsg::Stop(desc));
    }
}

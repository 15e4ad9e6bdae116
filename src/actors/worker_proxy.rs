//! `WorkerProxyActor`: owns one `worker-proc` child process.
//!
//! # Protocol
//! - On start it spawns the child (see [`super::child`]) and four tasks: a
//!   writer that encodes jobs onto the child's stdin, a reader that turns
//!   stdout frames into [`WorkerProxyMsg::Frame`], a stderr forwarder that
//!   logs the child's lines with its generation, and an exit watcher that
//!   waits on the child and sends [`WorkerProxyMsg::Exited`] the moment it
//!   dies (no polling, seed lesson 3).
//! - When the child's `Hello` arrives it tells the supervisor
//!   ([`SupervisorMsg::WorkerLoaded`]) and the queue ([`QueueMsg::WorkerIdle`]).
//! - It holds one job in flight and, with `stage_next_job` (the default),
//!   one more *staged*: sent to the child while the first decodes, so the
//!   child has the next job's audio in memory when the engine finishes and
//!   the engine does not wait for the hand-over (one decode at a time all
//!   the same: the child runs jobs strictly in order). It asks the queue
//!   for a job ([`QueueMsg::WorkerIdle`]) whenever a slot is free; an answer
//!   goes straight to the job's reply port and the staged job becomes the
//!   one in flight.
//! - A staged job is still waiting: every [`TICK`] the proxy checks it
//!   like the queue would, and cancels it in the child
//!   ([`asr_ipc::ToWorker::Cancel`]) if its client has gone (no answer),
//!   its queue deadline passed ([`AsrError::QueueTimeout`]) or the node is
//!   shutting down ([`AsrError::ShuttingDown`]). A job in flight whose
//!   client has gone (a closed connection, a cancelled async job) is
//!   cancelled in the child too, which stops it before its next 30 s window.
//! - Each job has a decode deadline from its audio length, counted from the
//!   moment it is in flight; past it the child's process group is killed and
//!   the job answered [`AsrError::DecodeTimeout`].
//!
//! # Sending a job
//! A job's header ([`asr_ipc::JobHeader`]) is encoded in the actor before
//! anything else happens to it: if that fails (a job the protocol cannot
//! carry), the job is answered [`AsrError::Unsendable`] at once and the
//! proxy is left exactly as if it had never seen it (nothing sent, nothing
//! in flight or staged; the free slot is offered to the queue again). The
//! writer task then sends the header and the audio as 16-bit PCM chunks
//! (`asr_ipc` *Audio*), encoding one chunk (1 MiB) at a time, so sending
//! hours of audio costs neither a second copy of it nor a giant frame.
//!
//! # Pairing answers with jobs
//! An answer ([`FromWorker::Progress`], [`FromWorker::Done`],
//! [`FromWorker::Failed`]) is delivered only to the job whose id it carries,
//! and that must be the job in flight (the child decodes in the order jobs
//! were sent); answers for staged jobs cancelled earlier are dropped. Any
//! other id (the staged job's, answered out of turn, or an unknown one)
//! means the child and the proxy disagree about what is running, so
//! nothing it says can be paired any more: every job the proxy holds (in
//! flight and staged) is answered [`AsrError::WorkerProtocol`], the node is
//! not ready from that instant, and the child is killed and restarted. No
//! client can ever receive a transcript of another client's audio. Once a
//! child is being killed, nothing it still sends is delivered.
//!
//! # Liveness
//! From its `Hello` on, the child sends [`FromWorker::Heartbeat`] every
//! `worker_heartbeat_interval_secs` (1 s) from a thread of its own that the
//! engine cannot block; any frame counts as a sign of life. Every [`TICK`]
//! the proxy checks the silence: past `heartbeat_late` (three intervals)
//! the worker is published [`crate::api::WorkerState::Unresponsive`] and the
//! node is not ready (it is ready again if the heartbeat comes back); past
//! `worker_heartbeat_timeout_secs` (10 s) it is taken for hung (stopped,
//! starved, swapped out): as for a decode deadline, its process group is
//! killed, the job in flight is answered [`AsrError::WorkerUnresponsive`]
//! (504) at once, the staged job goes back to the queue, and the
//! supervisor restarts the worker. A frozen worker is thus found within
//! the heartbeat timeout instead of the job's length-based deadline.
//!
//! # Failure
//! When the child exits, a staged job goes back to the front of the queue
//! ([`QueueMsg::Requeue`]: it never reached the engine), and the in-flight
//! job (if not answered yet) goes back too as [`QueueMsg::Retry`], ahead of
//! it, while it has crash retries left
//! (`max_crash_retries`, default 1); past that its input is quarantined and it
//! is answered [`AsrError::Quarantined`] (with retries set to 0 it is answered
//! [`AsrError::WorkerCrashed`]). The supervisor gets
//! [`SupervisorMsg::WorkerExited`], and this actor stops; the supervisor
//! decides about the restart. The child is killed by [`ChildGuard`]'s `Drop`
//! however this actor ends, panics included.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use asr_ipc::{FromWorker, ToWorker};
use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use super::child::{describe_exit, spawn_worker, ChildGuard};
use super::queue::{JobPayload, QueueMsg, QueuedJob};
use super::shared::Shared;
use super::supervisor::SupervisorMsg;
use crate::api::{AsrError, Transcript};
use crate::config::NodeConfig;

/// Messages of the [`WorkerProxyActor`].
#[derive(Debug)]
pub enum WorkerProxyMsg {
    /// Decode this job (sent by the queue only when this proxy said idle).
    Run(QueuedJob),
    /// A frame from the child.
    Frame(FromWorker),
    /// The child's stdout carried something that is not a valid frame.
    ProtocolError(String),
    /// The child exited (exit code or signal).
    Exited(String),
    /// A job's decode deadline passed.
    DecodeDeadline(u64),
    /// The model-load deadline passed.
    LoadDeadline,
    /// Periodic check of the staged and in-flight jobs' clients and
    /// deadlines (every [`TICK`]).
    Tick,
    /// Stop now (sent to itself after the child exited, behind any job the
    /// queue had already dispatched, so that job is requeued, not lost).
    Stop(String),
}

/// How often staged and in-flight jobs are checked for a vanished client, a
/// passed queue deadline or a shutdown (the HTTP layer notices a closed
/// connection within 50 ms too).
pub const TICK: Duration = Duration::from_millis(50);

/// Arguments of the [`WorkerProxyActor`].
pub struct WorkerProxyArgs {
    /// Node configuration.
    pub config: Arc<NodeConfig>,
    /// 0 for the first worker, +1 per restart.
    pub generation: u64,
    /// Where to report idleness.
    pub queue: ActorRef<QueueMsg>,
    /// Where to report load and exit.
    pub supervisor: ActorRef<SupervisorMsg>,
    /// Published state.
    pub shared: Arc<Shared>,
}

/// The actor owning the child process.
pub struct WorkerProxyActor;

struct InFlight {
    job: QueuedJob,
    /// When it became the job in flight (its decode began).
    dispatched_at: Instant,
    deadline: Duration,
    /// The `worker.decode` span (see [`crate::telemetry::decode_span`]).
    span: tracing::Span,
    /// A `Cancel` was sent for it (its client left).
    cancel_sent: bool,
}

/// A job sent to the child ahead of time, waiting for the one in flight.
/// Its `queue.wait` span stays open until the engine starts it.
struct Staged {
    job: QueuedJob,
    span: tracing::Span,
    staged_at: Instant,
}

/// What the writer task sends to the child.
enum Outgoing {
    Job {
        id: u64,
        /// The encoded [`asr_ipc::JobHeader`] frame payload.
        header: Vec<u8>,
        /// Its audio, sent in chunks after the header.
        payload: Arc<JobPayload>,
    },
    Cancel(u64),
}

/// State of the [`WorkerProxyActor`].
pub struct WorkerProxyState {
    args: WorkerProxyArgs,
    guard: ChildGuard,
    to_child: Option<mpsc::UnboundedSender<Outgoing>>,
    hello: Option<asr_ipc::Hello>,
    in_flight: Option<InFlight>,
    staged: Option<Staged>,
    /// Staged jobs cancelled in the child, oldest first: their answers
    /// (`Cancelled`, or a result if the child had started) are dropped.
    skipped: VecDeque<u64>,
    load_failure: Option<String>,
    exited: bool,
    /// The child was killed (deadline, protocol error): it takes no more
    /// jobs while its exit is on the way.
    dying: bool,
    /// When the child last sent a frame (its heartbeat or any other).
    last_heard: Instant,
    /// Its heartbeat is late and the node is published not ready.
    heartbeat_late: bool,
    /// Why this proxy killed the child, if it did.
    kill_reason: Option<String>,
    tasks: Vec<JoinHandle<()>>,
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
    /// Answers the in-flight job (if any) with `err`.
    fn fail_in_flight(&mut self, err: AsrError) {
        if let Some(f) = self.in_flight.take() {
            crate::telemetry::decode_error(&f.span, &err);
            tracing::warn!(parent: &f.job.span, job_id = f.job.id, generation = self.args.generation, error = %err, "job failed in the worker");
            let _ = f.job.reply.send(Err(err));
        }
        self.args.shared.worker_busy(false);
    }

    /// The child died with a job in flight: retry it, quarantine it, or fail
    /// it, per `max_crash_retries`.
    fn crashed_in_flight(&mut self, cause: &str) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        crate::telemetry::decode_failed(&f.span, "worker_crashed", &cause);
        let max = self.args.config.max_crash_retries;
        let mut job = f.job;
        if max == 0 {
            let _ = job.reply.send(Err(AsrError::WorkerCrashed {
                detail: cause.to_string(),
            }));
        } else if job.attempts < max {
            job.attempts += 1;
            let _ = self.args.queue.cast(QueueMsg::Retry(job));
        } else {
            tracing::error!(parent: &job.span, job_id = job.id, attempts = job.attempts + 1, "input crashed the worker repeatedly, quarantining it");
            let _ = self.args.queue.cast(QueueMsg::Quarantine(job.fingerprint));
            let _ = job.reply.send(Err(AsrError::Quarantined));
        }
    }

    /// Tells the queue it may send a job, if a slot is free: none in flight,
    /// or (staging on) one in flight and none staged. `rtf` is that of the job
    /// just finished, if any.
    fn report_idle(&self, myself: &ActorRef<WorkerProxyMsg>, rtf: Option<f64>) {
        if !self.can_take_jobs() {
            return;
        }
        let stage = match (&self.in_flight, &self.staged) {
            (None, _) => false,
            (Some(_), None) if self.args.config.stage_next_job && !self.stopping() => true,
            _ => return,
        };
        let _ = self.args.queue.cast(QueueMsg::WorkerIdle {
            worker: myself.clone(),
            rtf,
            stage,
        });
    }

    fn can_take_jobs(&self) -> bool {
        self.hello.is_some() && !self.exited && !self.dying
    }

    /// Kills the child's process group for `why`; its exit (and the
    /// restart) follow, and the exit's description (`/health`'s
    /// `last_worker_exit`, the supervisor's log) carries `why`.
    fn kill(&mut self, why: impl Into<String>) {
        if !self.dying {
            self.kill_reason = Some(why.into());
        }
        self.dying = true;
        self.guard.kill();
    }

    fn stopping(&self) -> bool {
        self.args.shared.is_shutting_down()
    }

    /// True (and forgotten) if `job_id` is a staged job cancelled earlier,
    /// whose answer nobody waits for.
    fn skip_answer(&mut self, job_id: u64) -> bool {
        match self.skipped.iter().position(|&id| id == job_id) {
            Some(i) => {
                self.skipped.remove(i);
                tracing::debug!(job_id, "answer of a cancelled staged job dropped");
                true
            }
            None => false,
        }
    }

    fn send(&self, out: Outgoing) -> bool {
        self.to_child
            .as_ref()
            .map(|tx| tx.send(out).is_ok())
            .unwrap_or(false)
    }

    /// Sends `job` to the child; returns its `worker.decode` span. Its
    /// header is encoded here, first: a job that cannot be sent is refused
    /// (`Err`) before anything of it reaches the child or this state.
    fn send_job(&self, job: &QueuedJob) -> Result<tracing::Span, (tracing::Span, AsrError)> {
        let span = crate::telemetry::decode_span(job, self.args.generation, self.hello.as_ref());
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
        let header = match asr_ipc::encode_job_header(&header) {
            Ok(h) => h,
            Err(e) => {
                let detail = e.to_string();
                return Err((span, AsrError::Unsendable { detail }));
            }
        };
        let sent = self.send(Outgoing::Job {
            id: job.id,
            header,
            payload: job.payload.clone(),
        });
        if !sent {
            // The writer stopped: the child is dying; Exited follows and
            // answers (or requeues) the job.
            tracing::warn!(job_id = job.id, "worker stdin closed at dispatch");
        }
        Ok(span)
    }

    /// Answers a job that could not be sent; the proxy's state is untouched.
    fn refuse_unsendable(&self, mut job: QueuedJob, span: tracing::Span, err: AsrError) {
        tracing::error!(parent: &job.span, job_id = job.id, audio_secs = job.audio_secs, error = %err, "job could not be sent to the worker");
        crate::telemetry::queue_wait_end(&mut job, "unsendable");
        crate::telemetry::decode_error(&span, &err);
        let _ = job.reply.send(Err(err));
    }

    /// Whether an answer about `job_id` may be delivered: `Ok(true)` to the
    /// job in flight, `Ok(false)` to nobody (a cancelled staged job's, or
    /// anything from a child being killed), `Err` when it pairs with no job
    /// the child may be answering (see *Pairing* in the module docs).
    fn pair(&mut self, job_id: u64, is_final: bool) -> Result<bool, String> {
        if self.dying || self.exited {
            tracing::debug!(job_id, "answer from a worker being stopped, dropped");
            return Ok(false);
        }
        if self.in_flight.as_ref().is_some_and(|f| f.job.id == job_id) {
            return Ok(true);
        }
        let skipped = if is_final {
            self.skip_answer(job_id)
        } else {
            self.skipped.contains(&job_id)
        };
        if skipped {
            return Ok(false);
        }
        Err(match (&self.in_flight, &self.staged) {
            (Some(f), Some(s)) if s.job.id == job_id => format!(
                "worker answered job {job_id} (staged) while job {} was in flight",
                f.job.id
            ),
            (Some(f), _) => format!(
                "worker answered job {job_id} while job {} was in flight",
                f.job.id
            ),
            (None, _) => format!("worker answered job {job_id} with no job in flight"),
        })
    }

    /// The child's answers no longer pair with the jobs: fail every job it
    /// holds explicitly, and kill it (the supervisor restarts it).
    fn broken_pairing(&mut self, detail: String) {
        tracing::error!(generation = self.args.generation, %detail, "worker answers cannot be paired with jobs any more; failing every job it holds and restarting it");
        // Not ready from this instant, as after a decode deadline.
        self.args.shared.worker_exited(format!("killed: {detail}"));
        self.kill(format!("its answers no longer paired with jobs: {detail}"));
        let err = AsrError::WorkerProtocol { detail };
        if let Some(f) = self.in_flight.take() {
            crate::telemetry::decode_error(&f.span, &err);
            tracing::warn!(parent: &f.job.span, job_id = f.job.id, error = %err, "job failed: worker broke the protocol");
            let _ = f.job.reply.send(Err(err.clone()));
        }
        if let Some(mut s) = self.staged.take() {
            crate::telemetry::queue_wait_end(&mut s.job, "worker_protocol");
            crate::telemetry::decode_error(&s.span, &err);
            tracing::warn!(parent: &s.job.span, job_id = s.job.id, error = %err, "staged job failed: worker broke the protocol");
            let _ = s.job.reply.send(Err(err));
        }
    }

    /// A frame arrived: the child is alive.
    fn heard(&mut self) {
        self.last_heard = Instant::now();
        if self.heartbeat_late {
            self.heartbeat_late = false;
            tracing::warn!(
                generation = self.args.generation,
                "worker heartbeat back, ready again"
            );
            self.args.shared.worker_heartbeat_late(false);
        }
    }

    /// The liveness check of every [`TICK`] (see *Liveness*).
    fn check_heartbeat(&mut self) {
        if !self.can_take_jobs() {
            return;
        }
        let config = &self.args.config;
        let silent = self.last_heard.elapsed();
        let generation = self.args.generation;
        if silent >= config.heartbeat_timeout() {
            let job_id = self.in_flight.as_ref().map(|f| f.job.id);
            tracing::error!(
                generation,
                ?silent,
                ?job_id,
                "no heartbeat from the worker within the timeout, killing it"
            );
            let why = format!(
                "killed after {:.1} s without a heartbeat",
                silent.as_secs_f64()
            );
            self.args.shared.worker_exited(why.clone());
            self.kill(why);
            self.fail_in_flight(AsrError::WorkerUnresponsive { silent_for: silent });
        } else if silent >= config.heartbeat_late() && !self.heartbeat_late {
            self.heartbeat_late = true;
            tracing::warn!(
                generation,
                ?silent,
                "worker heartbeat late, not ready until it comes back"
            );
            self.args.shared.worker_heartbeat_late(true);
        }
    }

    /// `job` is now the one the engine decodes: start its decode deadline.
    fn start(&mut self, myself: &ActorRef<WorkerProxyMsg>, job: QueuedJob, span: tracing::Span) {
        let deadline = self.args.config.decode_deadline(job.audio_secs);
        let id = job.id;
        self.in_flight = Some(InFlight {
            job,
            dispatched_at: Instant::now(),
            deadline,
            span,
            cancel_sent: false,
        });
        self.args.shared.worker_busy(true);
        myself.send_after(deadline, move || WorkerProxyMsg::DecodeDeadline(id));
    }

    /// The in-flight job was answered: the staged job (if any) takes its place.
    fn promote(&mut self, myself: &ActorRef<WorkerProxyMsg>) {
        match self.staged.take() {
            Some(mut s) => {
                tracing::debug!(parent: &s.job.span, job_id = s.job.id, "staged job in flight");
                crate::telemetry::queue_wait_end(&mut s.job, "dispatched");
                crate::telemetry::decode_started_after_staging(&s.span, s.staged_at.elapsed());
                self.start(myself, s.job, s.span);
            }
            None => self.args.shared.worker_busy(false),
        }
    }

    /// Takes the staged job back from the child (it may not decode it).
    fn unstage(&mut self, why: &'static str) -> Option<QueuedJob> {
        let mut s = self.staged.take()?;
        self.send(Outgoing::Cancel(s.job.id));
        self.skipped.push_back(s.job.id);
        crate::telemetry::queue_wait_end(&mut s.job, why);
        crate::telemetry::decode_skipped(&s.span, why);
        Some(s.job)
    }

    /// The periodic check ([`WorkerProxyMsg::Tick`]).
    fn tick(&mut self, myself: &ActorRef<WorkerProxyMsg>) {
        self.check_heartbeat();
        if let Some(s) = &self.staged {
            let now = Instant::now();
            if s.job.reply.is_closed() {
                if let Some(job) = self.unstage("client_gone") {
                    tracing::info!(parent: &job.span, job_id = job.id, "client gone, dropping job before decode");
                }
                self.report_idle(myself, None);
            } else if now >= s.job.deadline {
                if let Some(job) = self.unstage("expired") {
                    let waited = now - job.admitted_at;
                    tracing::info!(parent: &job.span, job_id = job.id, ?waited, "job waited past its deadline");
                    crate::metrics::queue_timeout();
                    let _ = job.reply.send(Err(AsrError::QueueTimeout { waited }));
                }
                self.report_idle(myself, None);
            } else if self.stopping() {
                if let Some(job) = self.unstage("shutting_down") {
                    let _ = job.reply.send(Err(AsrError::ShuttingDown));
                }
            }
        }
        if let Some(f) = self.in_flight.as_mut() {
            if !f.cancel_sent && f.job.reply.is_closed() {
                f.cancel_sent = true;
                let id = f.job.id;
                tracing::info!(parent: &f.job.span, job_id = id, "client gone, cancelling the job in the worker");
                self.send(Outgoing::Cancel(id));
            }
        }
    }
}

impl Actor for WorkerProxyActor {
    type Msg = WorkerProxyMsg;
    type State = WorkerProxyState;
    type Arguments = WorkerProxyArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: WorkerProxyArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let generation = args.generation;
        let (mut child, guard) = spawn_worker(&args.config).await.map_err(|e| {
            format!(
                "could not start {}: {e}",
                args.config.resolve_worker_path().display()
            )
        })?;
        let pid = guard.pid();
        args.shared.worker_spawned(pid, generation);
        tracing::info!(pid, generation, "worker spawned, loading model");

        let stdin = child.stdin.take().ok_or("child has no stdin")?;
        let stdout = child.stdout.take().ok_or("child has no stdout")?;
        let stderr = child.stderr.take().ok_or("child has no stderr")?;
        let mut tasks = Vec::with_capacity(4);

        // Writer: encoding happens here, off the actor.
        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        tasks.push(tokio::spawn(async move {
            let mut stdin = stdin;
            while let Some(out) = rx.recv().await {
                let res = match out {
                    Outgoing::Job {
                        id,
                        header,
                        payload,
                    } => write_job(&mut stdin, id, &header, &payload.samples).await,
                    Outgoing::Cancel(id) => match asr_ipc::encode(&ToWorker::Cancel { job_id: id })
                    {
                        Ok(frame) => write_frame(&mut stdin, &frame)
                            .await
                            .map_err(|e| (id, e.to_string())),
                        Err(e) => Err((id, e.to_string())),
                    },
                };
                if let Err((id, e)) = res {
                    // The child is gone (its exit watcher reports it), or a
                    // chunk could not be encoded after its header went out,
                    // which leaves the child waiting for audio that cannot
                    // come: either way the child must go (closing its stdin
                    // makes it exit), and its exit answers or requeues the
                    // jobs.
                    tracing::warn!(job_id = id, error = %e, "sending to the worker failed, closing its input");
                    break;
                }
            }
            // Dropping stdin here makes the child exit on EOF.
        }));

        // Reader: frames → messages to ourselves.
        let me = myself.clone();
        tasks.push(tokio::spawn(async move {
            let mut frames = FramedRead::new(stdout, asr_ipc::codec());
            while let Some(frame) = frames.next().await {
                let msg = match frame {
                    Ok(bytes) => match asr_ipc::decode::<FromWorker>(&bytes) {
                        Ok(m) => WorkerProxyMsg::Frame(m),
                        Err(e) => WorkerProxyMsg::ProtocolError(e.to_string()),
                    },
                    Err(e) => WorkerProxyMsg::ProtocolError(e.to_string()),
                };
                let stop = matches!(msg, WorkerProxyMsg::ProtocolError(_));
                if me.cast(msg).is_err() || stop {
                    break;
                }
            }
        }));

        // Stderr: forwarded into our log with the generation.
        tasks.push(tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "worker_proc", generation, pid, "{line}");
            }
        }));

        // Exit watcher: instant detection through wait().
        let me = myself.clone();
        let reaped = guard.reaped_flag();
        tasks.push(tokio::spawn(async move {
            let desc = match child.wait().await {
                Ok(status) => describe_exit(&status),
                Err(e) => format!("wait failed: {e}"),
            };
            reaped.store(true, Ordering::Release);
            let _ = me.cast(WorkerProxyMsg::Exited(desc));
        }));

        myself.send_after(
            Duration::from_secs_f64(args.config.load_timeout_secs),
            || WorkerProxyMsg::LoadDeadline,
        );

        Ok(WorkerProxyState {
            args,
            guard,
            to_child: Some(tx),
            hello: None,
            in_flight: None,
            staged: None,
            skipped: VecDeque::new(),
            load_failure: None,
            exited: false,
            dying: false,
            last_heard: Instant::now(),
            heartbeat_late: false,
            kill_reason: None,
            tasks,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(f) = state.in_flight.take() {
            crate::telemetry::decode_failed(
                &f.span,
                "shutting_down",
                &"the node stopped before the answer",
            );
            let _ = f.job.reply.send(Err(AsrError::ShuttingDown));
        }
        // As in `tick` during a drain; the cancel (sent before stdin closes)
        // also spares the child decoding it before it exits.
        if let Some(job) = state.unstage("shutting_down") {
            let _ = job.reply.send(Err(AsrError::ShuttingDown));
        }
        if !state.exited {
            // Closing stdin asks the worker to exit; give it a moment, then
            // the guard's SIGKILL (on drop) makes sure.
            state.to_child = None;
            let reaped = state.guard.reaped_flag();
            let deadline = Instant::now() + Duration::from_secs(2);
            while !reaped.load(Ordering::Acquire) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let generation = state.args.generation;
        if matches!(msg, WorkerProxyMsg::Frame(_)) {
            state.heard();
        }
        match msg {
            WorkerProxyMsg::Frame(FromWorker::Heartbeat { running }) => {
                tracing::trace!(generation, ?running, "worker heartbeat");
            }
            WorkerProxyMsg::Frame(FromWorker::Hello(hello)) => {
                if hello.protocol_version != asr_ipc::PROTOCOL_VERSION {
                    let cause = format!(
                        "worker speaks protocol {} but the service speaks {}",
                        hello.protocol_version,
                        asr_ipc::PROTOCOL_VERSION
                    );
                    tracing::error!(generation, "{cause}");
                    state.load_failure = Some(cause.clone());
                    state.kill(cause);
                    return Ok(());
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
                state.args.shared.worker_loaded(&hello);
                let _ = state.args.supervisor.cast(SupervisorMsg::WorkerLoaded {
                    generation,
                    hello: hello.clone(),
                });
                state.hello = Some(hello);
                state.last_heard = Instant::now();
                state
                    .tasks
                    .push(myself.send_interval(TICK, || WorkerProxyMsg::Tick));
                state.report_idle(&myself, None);
            }
            WorkerProxyMsg::Frame(FromWorker::LoadFailed(f)) => {
                tracing::error!(generation, model_path = %f.model_path, cause = %f.cause, "worker could not load the model");
                state.load_failure = Some(format!("{}: {}", f.model_path, f.cause));
            }
            WorkerProxyMsg::Frame(FromWorker::Progress {
                job_id,
                decoded_secs,
                total_secs,
                segments,
            }) => {
                tracing::debug!(
                    job_id,
                    decoded_secs,
                    total_secs,
                    segments = segments.len(),
                    "decode progress"
                );
                match state.pair(job_id, false) {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(detail) => {
                        state.broken_pairing(detail);
                        return Ok(());
                    }
                }
                if let Some(job) = state.in_flight.as_ref().map(|f| &f.job) {
                    if let Some(sink) = &job.progress {
                        let _ = sink.send(crate::api::Progress {
                            decoded_secs,
                            total_secs,
                        });
                    }
                    if let (Some(sink), false) = (&job.segments, segments.is_empty()) {
                        let _ = sink.send(segments);
                    }
                }
            }
            WorkerProxyMsg::Frame(FromWorker::Done(result)) => {
                match state.pair(result.job_id, true) {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(detail) => {
                        state.broken_pairing(detail);
                        return Ok(());
                    }
                }
                let Some(f) = state.in_flight.take() else {
                    return Ok(()); // (`pair` said it is in flight)
                };
                if let Some(idle) = result.timings.idle_before_us {
                    crate::metrics::engine_idle(Duration::from_micros(idle));
                }
                let decode_time = f.dispatched_at.elapsed();
                let rtf =
                    (f.job.audio_secs > 0.0).then(|| decode_time.as_secs_f64() / f.job.audio_secs);
                crate::telemetry::decode_succeeded(&f.span, f.job.audio_secs, &result, decode_time);
                tracing::info!(
                    parent: &f.job.span,
                    job_id = f.job.id,
                    generation,
                    audio_secs = f.job.audio_secs,
                    decode_ms = decode_time.as_millis() as u64,
                    "job done"
                );
                // Publish "idle" (or the staged job in flight) and ask for the
                // next job before the client can see its answer, so a status
                // read right after the answer never shows this job still in
                // flight.
                state.promote(&myself);
                state.report_idle(&myself, rtf);
                let _ = f.job.reply.send(Ok(Transcript {
                    job_id: f.job.id,
                    queue_wait: f.dispatched_at - f.job.admitted_at,
                    decode_time,
                    worker_generation: generation,
                    result,
                }));
            }
            WorkerProxyMsg::Frame(FromWorker::Failed { job_id, error }) => {
                match state.pair(job_id, true) {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(detail) => {
                        state.broken_pairing(detail);
                        return Ok(());
                    }
                }
                let Some(f) = state.in_flight.take() else {
                    return Ok(()); // (`pair` said it is in flight)
                };
                state.promote(&myself);
                state.report_idle(&myself, None);
                crate::telemetry::decode_failed(&f.span, "rejected", &error);
                tracing::info!(parent: &f.job.span, job_id, generation, error = %error, "worker refused job");
                let _ = f.job.reply.send(Err(AsrError::Rejected(error)));
            }
            WorkerProxyMsg::Run(mut job) => {
                if !state.can_take_jobs() {
                    // Lost a race with the child's exit: the queue serves it
                    // to the next worker.
                    tracing::warn!(parent: &job.span, job_id = job.id, "job dispatched to a worker that is gone, requeueing");
                    crate::telemetry::queue_wait_end(&mut job, "requeued");
                    let _ = state.args.queue.cast(QueueMsg::Requeue(job));
                    return Ok(());
                }
                if state.in_flight.is_none() {
                    // (A no-op unless the queue sent it for staging and the
                    // job in flight finished meanwhile.)
                    crate::telemetry::queue_wait_end(&mut job, "dispatched");
                    match state.send_job(&job) {
                        Ok(span) => state.start(&myself, job, span),
                        Err((span, err)) => state.refuse_unsendable(job, span, err),
                    }
                } else if state.staged.is_none() && state.args.config.stage_next_job {
                    match state.send_job(&job) {
                        Ok(span) => {
                            tracing::debug!(parent: &job.span, job_id = job.id, "job staged in the worker");
                            state.staged = Some(Staged {
                                job,
                                span,
                                staged_at: Instant::now(),
                            });
                        }
                        Err((span, err)) => state.refuse_unsendable(job, span, err),
                    }
                } else {
                    // Two answers to one request for work crossed: keep it
                    // first in line.
                    tracing::debug!(
                        job_id = job.id,
                        "no free slot, returning the job to the queue"
                    );
                    crate::telemetry::queue_wait_end(&mut job, "requeued");
                    let _ = state.args.queue.cast(QueueMsg::Requeue(job));
                    return Ok(());
                }
                state.report_idle(&myself, None);
            }
            WorkerProxyMsg::Tick => state.tick(&myself),
            WorkerProxyMsg::DecodeDeadline(id) => {
                if state.in_flight.as_ref().is_some_and(|f| f.job.id == id) {
                    let limit = state
                        .in_flight
                        .as_ref()
                        .map(|f| f.deadline)
                        .unwrap_or_default();
                    tracing::error!(
                        job_id = id,
                        generation,
                        ?limit,
                        "decode deadline passed, killing the worker"
                    );
                    // Not ready from this instant: the kill is on its way,
                    // so nobody may read "ready" between the 504 and the exit.
                    let why = format!("killed after the decode deadline of {limit:?}");
                    state.args.shared.worker_exited(why.clone());
                    state.kill(why);
                    state.fail_in_flight(AsrError::DecodeTimeout { limit });
                }
            }
            WorkerProxyMsg::LoadDeadline => {
                if state.hello.is_none() && !state.exited {
                    let cause = format!(
                        "model did not load within {} s",
                        state.args.config.load_timeout_secs
                    );
                    tracing::error!(generation, "{cause}");
                    state.load_failure = Some(cause.clone());
                    state.kill(cause);
                }
            }
            WorkerProxyMsg::ProtocolError(e) => {
                tracing::error!(generation, error = %e, "worker broke the protocol, killing it");
                state.kill(format!("broke the protocol: {e}"));
            }
            WorkerProxyMsg::Exited(desc) => {
                let desc = match &state.kill_reason {
                    Some(why) => format!("{desc}; {why}"),
                    None => desc,
                };
                state.exited = true;
                state.to_child = None;
                tracing::warn!(generation, cause = %desc, "worker exited");
                state.args.shared.worker_exited(desc.clone());
                // First of all, the queue must stop dispatching to us: the
                // requeued jobs below arrive after this.
                let _ = state.args.queue.cast(QueueMsg::WorkerGone {
                    worker: myself.clone(),
                });
                // The staged job never reached the engine: it goes back to the
                // front of the queue, behind the in-flight job's retry.
                if let Some(mut s) = state.staged.take() {
                    crate::telemetry::queue_wait_end(&mut s.job, "requeued");
                    crate::telemetry::decode_skipped(&s.span, "worker_exited");
                    let _ = state.args.queue.cast(QueueMsg::Requeue(s.job));
                }
                state.crashed_in_flight(&desc);
                let loaded = state.hello.is_some();
                let load_failure = match (&state.load_failure, loaded) {
                    (Some(f), _) => Some(f.clone()),
                    (None, false) => Some(format!("worker {desc} while loading the model")),
                    (None, true) => None,
                };
                let _ = state.args.supervisor.cast(SupervisorMsg::WorkerExited {
                    generation,
                    cause: desc.clone(),
                    load_failure,
                });
                let _ = myself.cast(WorkerProxyMsg::Stop(desc));
            }
            WorkerProxyMsg::Stop(desc) => {
                myself.stop(Some(desc));
            }
        }
        Ok(())
    }
}

/// Writes one frame (length prefix, payload) to the child's stdin.
async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
) -> std::io::Result<()> {
    w.write_all(&(payload.len() as u32).to_be_bytes()).await?;
    w.write_all(payload).await?;
    w.flush().await
}

/// Writes a job: its encoded header, then its audio chunk by chunk (each
/// encoded just before it is written, so at most one chunk's copy exists).
async fn write_job<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    id: u64,
    header: &[u8],
    samples: &[i16],
) -> Result<(), (u64, String)> {
    write_frame(w, header)
        .await
        .map_err(|e| (id, e.to_string()))?;
    for chunk in asr_ipc::encode_audio_chunks(id, samples) {
        let chunk = chunk.map_err(|e| (id, e.to_string()))?;
        write_frame(w, &chunk)
            .await
            .map_err(|e| (id, e.to_string()))?;
    }
    Ok(())
}

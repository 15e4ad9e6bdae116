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
//! - It holds exactly one job in flight ([`WorkerProxyMsg::Run`]); the answer
//!   goes straight to the job's reply port, then it reports idle again.
//! - Each job has a decode deadline from its audio length; past it the
//!   child's process group is killed and the job answered
//!   [`AsrError::DecodeTimeout`].
//!
//! # Failure
//! When the child exits, the in-flight job (if not answered yet) goes back to
//! the queue as [`QueueMsg::Retry`] while it has crash retries left
//! (`max_crash_retries`, default 1); past that its input is quarantined and it
//! is answered [`AsrError::Quarantined`] (with retries set to 0 it is answered
//! [`AsrError::WorkerCrashed`]). The supervisor gets
//! [`SupervisorMsg::WorkerExited`], and this actor stops; the supervisor
//! decides about the restart. The child is killed by [`ChildGuard`]'s `Drop`
//! however this actor ends, panics included.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use asr_ipc::{FromWorker, JobRef, ToWorkerRef};
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
}

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
    dispatched_at: Instant,
    deadline: Duration,
    /// The `worker.decode` span (see [`crate::telemetry::decode_span`]).
    span: tracing::Span,
}

struct Outgoing {
    id: u64,
    traceparent: Option<String>,
    payload: Arc<JobPayload>,
}

/// State of the [`WorkerProxyActor`].
pub struct WorkerProxyState {
    args: WorkerProxyArgs,
    guard: ChildGuard,
    to_child: Option<mpsc::UnboundedSender<Outgoing>>,
    hello: Option<asr_ipc::Hello>,
    in_flight: Option<InFlight>,
    load_failure: Option<String>,
    exited: bool,
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

    fn report_idle(&self, myself: &ActorRef<WorkerProxyMsg>, rtf: Option<f64>) {
        self.args.shared.worker_busy(false);
        let _ = self.args.queue.cast(QueueMsg::WorkerIdle {
            worker: myself.clone(),
            rtf,
        });
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
                let frame = asr_ipc::encode(&ToWorkerRef::Job(JobRef {
                    id: out.id,
                    traceparent: out.traceparent.as_deref(),
                    samples: &out.payload.samples,
                    options: &out.payload.options,
                    fault: out.payload.fault,
                }));
                let frame = match frame {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!(job_id = out.id, error = %e, "could not encode job");
                        continue;
                    }
                };
                let len = (frame.len() as u32).to_be_bytes();
                let res = async {
                    stdin.write_all(&len).await?;
                    stdin.write_all(&frame).await?;
                    stdin.flush().await
                }
                .await;
                if let Err(e) = res {
                    // The child is gone; the exit watcher reports it.
                    tracing::warn!(job_id = out.id, error = %e, "writing to the worker failed");
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
            load_failure: None,
            exited: false,
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
        match msg {
            WorkerProxyMsg::Frame(FromWorker::Hello(hello)) => {
                if hello.protocol_version != asr_ipc::PROTOCOL_VERSION {
                    let cause = format!(
                        "worker speaks protocol {} but the service speaks {}",
                        hello.protocol_version,
                        asr_ipc::PROTOCOL_VERSION
                    );
                    tracing::error!(generation, "{cause}");
                    state.load_failure = Some(cause);
                    state.guard.kill();
                    return Ok(());
                }
                tracing::info!(
                    generation,
                    pid = hello.pid,
                    model = %hello.model,
                    device = %hello.device,
                    compute_type = %hello.compute_type,
                    load_ms = hello.load_ms,
                    "worker ready"
                );
                state.args.shared.worker_loaded(&hello);
                let _ = state.args.supervisor.cast(SupervisorMsg::WorkerLoaded {
                    generation,
                    hello: hello.clone(),
                });
                state.hello = Some(hello);
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
            }) => {
                tracing::debug!(job_id, decoded_secs, total_secs, "decode progress");
                if let Some(sink) = state
                    .in_flight
                    .as_ref()
                    .filter(|f| f.job.id == job_id)
                    .and_then(|f| f.job.progress.as_ref())
                {
                    let _ = sink.send(crate::api::Progress {
                        decoded_secs,
                        total_secs,
                    });
                }
            }
            WorkerProxyMsg::Frame(FromWorker::Done(result)) => {
                let Some(f) = state.in_flight.take() else {
                    tracing::warn!(
                        job_id = result.job_id,
                        "result for a job that is no longer in flight"
                    );
                    return Ok(());
                };
                if f.job.id != result.job_id {
                    tracing::error!(
                        expected = f.job.id,
                        got = result.job_id,
                        "worker answered the wrong job"
                    );
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
                // Publish "idle" (and hand the worker the next job) before the
                // client can see its answer, so a status read right after the
                // answer never shows this job still in flight.
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
                let in_flight = state.in_flight.take();
                state.report_idle(&myself, None);
                match in_flight {
                    Some(f) => {
                        crate::telemetry::decode_failed(&f.span, "rejected", &error);
                        tracing::info!(parent: &f.job.span, job_id, generation, error = %error, "worker refused job");
                        let _ = f.job.reply.send(Err(AsrError::Rejected(error)));
                    }
                    None => tracing::warn!(job_id, "failure for a job that is no longer in flight"),
                }
            }
            WorkerProxyMsg::Run(job) => {
                if state.in_flight.is_some() || state.hello.is_none() || state.exited {
                    tracing::error!(parent: &job.span, job_id = job.id, "job dispatched to a worker that cannot take it");
                    let _ = job.reply.send(Err(AsrError::Unavailable {
                        retry_after: Duration::from_secs(1),
                        reason: "the worker is not ready".into(),
                    }));
                    return Ok(());
                }
                let deadline = state.args.config.decode_deadline(job.audio_secs);
                let span = crate::telemetry::decode_span(&job, generation, state.hello.as_ref());
                // The worker may ignore it; it makes the process boundary explicit.
                let traceparent = crate::telemetry::traceparent(&span);
                let out = Outgoing {
                    id: job.id,
                    traceparent,
                    payload: job.payload.clone(),
                };
                let sent = state
                    .to_child
                    .as_ref()
                    .map(|tx| tx.send(out).is_ok())
                    .unwrap_or(false);
                let id = job.id;
                state.in_flight = Some(InFlight {
                    job,
                    dispatched_at: Instant::now(),
                    deadline,
                    span,
                });
                state.args.shared.worker_busy(true);
                if !sent {
                    // The writer stopped: the child is dying; Exited follows
                    // and answers the job.
                    tracing::warn!(job_id = id, "worker stdin closed at dispatch");
                }
                myself.send_after(deadline, move || WorkerProxyMsg::DecodeDeadline(id));
            }
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
                    state
                        .args
                        .shared
                        .worker_exited(format!("killed after the decode deadline of {limit:?}"));
                    state.guard.kill();
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
                    state.load_failure = Some(cause);
                    state.guard.kill();
                }
            }
            WorkerProxyMsg::ProtocolError(e) => {
                tracing::error!(generation, error = %e, "worker broke the protocol, killing it");
                state.guard.kill();
            }
            WorkerProxyMsg::Exited(desc) => {
                state.exited = true;
                state.to_child = None;
                tracing::warn!(generation, cause = %desc, "worker exited");
                state.args.shared.worker_exited(desc.clone());
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
                myself.stop(Some(desc));
            }
        }
        Ok(())
    }
}

//! [`AsrNode`]: start the supervision tree and talk to it.
//!
//! This is what a host application embeds:
//!
//! ```no_run
//! # async fn host() -> Result<(), Box<dyn std::error::Error>> {
//! use whisper_node::{AsrNode, NodeConfig, TranscriptionRequest};
//!
//! let mut config = NodeConfig::default();
//! config.model_dir = "models/tiny.en".into();
//! let node = AsrNode::start(config).await?; // returns once the model is loaded
//! let pcm: Vec<i16> = vec![0; 16_000]; // 16 kHz mono 16-bit PCM
//! let transcript = node.transcribe(TranscriptionRequest::new(pcm)).await?;
//! // f32 audio in [-1, 1]: TranscriptionRequest::from_f32(&samples)
//! println!("{}", transcript.result.text);
//! node.shutdown().await;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use ractor::{Actor, ActorRef};

use crate::actors::supervisor::{Handles, SupervisorArgs};
use crate::actors::{IngressMsg, QueueMsg, Shared, SupervisorActor, SupervisorMsg};
pub use crate::api::StartError;
use crate::api::{AsrError, NodeStatus, Transcript, TranscriptionRequest};
use crate::config::NodeConfig;

/// Handle to a running node. Cheap to clone; every clone talks to the same
/// actor tree.
#[derive(Clone)]
pub struct AsrNode {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<NodeConfig>,
    ingest: crate::ingest::Ingest,
    shared: Arc<Shared>,
    supervisor: ActorRef<SupervisorMsg>,
    handles: Handles,
}

impl std::fmt::Debug for AsrNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsrNode")
            .field("status", &self.status())
            .finish()
    }
}

impl AsrNode {
    /// Starts the supervision tree on the current tokio runtime and waits
    /// until every worker has loaded the model (or one failed to, which is an
    /// error naming the model path and the cause).
    pub async fn start(config: NodeConfig) -> Result<AsrNode, StartError> {
        Self::start_under(config, None).await
    }

    /// [`AsrNode::start`], with the node's root supervisor spawned *linked*
    /// under `host`, an actor of the host application's own ractor tree
    /// (usually its supervisor).
    ///
    /// The host then receives ractor's supervision events for the ASR tree
    /// like for any child: `ActorTerminated` when it stops (after
    /// [`AsrNode::shutdown`], or when it gives up because a core actor
    /// stopped), `ActorFailed` if its supervisor panics. The ASR tree keeps
    /// its own restart policy for the worker process inside; the host
    /// decides what to do when the tree as a whole ends (start a new node,
    /// stop itself, …). [`AsrNode::supervisor`] is the child's ref, to tell
    /// its events apart from the host's other children. A graceful stop
    /// from the host is [`AsrNode::shutdown`] (drain, then stop).
    ///
    /// ```no_run
    /// # use ractor::ActorCell;
    /// # async fn host(host_cell: ActorCell) -> Result<(), Box<dyn std::error::Error>> {
    /// use whisper_node::{AsrNode, NodeConfig};
    /// let node = AsrNode::spawn_linked(host_cell, NodeConfig::default()).await?;
    /// let asr_supervisor_id = node.supervisor().get_id(); // match events on this
    /// # Ok(()) }
    /// ```
    ///
    /// `examples/ractor_host.rs` is a whole host.
    pub async fn spawn_linked(
        host: ractor::ActorCell,
        config: NodeConfig,
    ) -> Result<AsrNode, StartError> {
        Self::start_under(config, Some(host)).await
    }

    async fn start_under(
        config: NodeConfig,
        host: Option<ractor::ActorCell>,
    ) -> Result<AsrNode, StartError> {
        config.validate()?;
        let config = Arc::new(config);
        let plans = crate::workers::plan(&config)?;
        let shared = Arc::new(Shared::with_workers(
            config.effective_queue_capacity(),
            &plans,
        ));
        let (startup, started) = tokio::sync::oneshot::channel();
        let args = SupervisorArgs {
            config: config.clone(),
            shared: shared.clone(),
            plans,
            startup,
        };
        let spawned = match host {
            None => Actor::spawn(None, SupervisorActor, args).await,
            Some(host) => Actor::spawn_linked(None, SupervisorActor, args, host).await,
        };
        let (supervisor, _) = spawned.map_err(|e| StartError::Actor(e.to_string()))?;
        let handles = match started.await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(StartError::Actor(
                    "the supervisor stopped during start-up".into(),
                ))
            }
        };
        Ok(AsrNode {
            inner: Arc::new(Inner {
                ingest: crate::ingest::Ingest::new(&config),
                config,
                shared,
                supervisor,
                handles,
            }),
        })
    }

    /// Submits a job and waits for its answer. Every path through the tree
    /// answers; if an actor dies holding the job, this returns
    /// [`AsrError::Internal`] rather than hanging.
    pub async fn transcribe(&self, mut req: TranscriptionRequest) -> Result<Transcript, AsrError> {
        if req.options.batch_size == 0 {
            req.options.batch_size = default_batch_size(&req, self.inner.config.batch_size);
        }
        // The quarantine fingerprint hashes every sample: for long audio
        // (a second or so for 3 h) that is blocking work, done here on the
        // blocking pool and not in the ingress actor's handler.
        if req.fingerprint.is_none() {
            req = fingerprinted(req).await?;
        }
        let res = self
            .inner
            .handles
            .ingress
            .call(|reply| IngressMsg::Transcribe(Box::new(req), reply), None)
            .await;
        let answer = match res {
            Ok(ractor::rpc::CallResult::Success(answer)) => answer,
            Ok(ractor::rpc::CallResult::Timeout) => Err(AsrError::Internal("timed out".into())),
            Ok(ractor::rpc::CallResult::SenderError) => Err(AsrError::Internal(
                "the job was dropped without an answer".into(),
            )),
            Err(_) => Err(AsrError::ShuttingDown),
        };
        // Counted in `NodeStatus::jobs` and `asr_jobs_total{outcome}`.
        self.inner
            .shared
            .job_finished(crate::metrics::outcome(&answer));
        answer
    }

    /// Answers, without waiting on the actors, whether a job submitted now
    /// would certainly be refused: the queue is full ([`AsrError::Busy`]
    /// with the queue's Retry-After) or the node is shutting down. The HTTP
    /// layer asks before it reads and decodes an upload, so a busy answer
    /// costs neither. `Ok` is not a promise: the queue decides.
    pub fn admission_precheck(&self) -> Result<(), AsrError> {
        match self.inner.shared.early_refusal() {
            None => Ok(()),
            Some(e) => {
                if matches!(e, AsrError::Busy { .. }) {
                    crate::metrics::busy_rejection();
                }
                self.inner
                    .shared
                    .job_finished(crate::metrics::error_kind(&e));
                Err(e)
            }
        }
    }

    /// A snapshot of the node's state; never waits on the actors.
    pub fn status(&self) -> NodeStatus {
        self.inner.shared.status()
    }

    /// A receiver marked changed whenever [`Self::status`] may have
    /// changed (worker state, queue depth, in-flight, shutdown), for a
    /// reader that waits for a state instead of polling.
    pub fn status_changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.inner.shared.subscribe()
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The ingest limits (uploads, decodes, decoded-PCM budget) that every
    /// path into this node shares.
    pub fn ingest(&self) -> &crate::ingest::Ingest {
        &self.inner.ingest
    }

    /// The ingress actor, for hosts that want to message the tree directly.
    pub fn ingress(&self) -> &ActorRef<IngressMsg> {
        &self.inner.handles.ingress
    }

    /// The queue actor.
    pub fn queue(&self) -> &ActorRef<QueueMsg> {
        &self.inner.handles.queue
    }

    /// The root supervisor of the ASR tree (the child a host sees in its
    /// supervision events after [`AsrNode::spawn_linked`]).
    pub fn supervisor(&self) -> &ActorRef<SupervisorMsg> {
        &self.inner.supervisor
    }

    /// Graceful shutdown: stop admitting (new requests get 503), answer every
    /// queued job 503, let the in-flight job finish within the configured
    /// grace period, then stop the tree and the worker process.
    pub async fn shutdown(&self) {
        self.drain(self.inner.config.shutdown_grace()).await;
    }

    /// [`AsrNode::shutdown`] with an explicit grace period for the in-flight job.
    pub async fn drain(&self, grace: std::time::Duration) {
        let shared = &self.inner.shared;
        shared.set_shutting_down();
        let _ = self.inner.handles.ingress.cast(IngressMsg::StopAdmitting);
        let _ = self.inner.handles.queue.cast(QueueMsg::Drain);
        let deadline = tokio::time::Instant::now() + grace;
        while shared.status().in_flight > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if shared.status().in_flight > 0 {
            tracing::warn!(
                ?grace,
                "in-flight job did not finish within the grace period"
            );
        }
        let _ = self
            .inner
            .supervisor
            .stop_and_wait(
                Some("shutdown".into()),
                Some(std::time::Duration::from_secs(10)),
            )
            .await;
    }
}

/// The `batch_size` of a request that left it to the node (0): the node's
/// `--batch-size` where batched long-form decoding is safe and pays, with
/// voice-activity detection (windows end at pauses, never inside a word)
/// and without a segment stream (batched windows finish a call at a time,
/// so a stream's first segments would wait for the whole first call);
/// else 1, the sequential seek loop.
fn default_batch_size(req: &TranscriptionRequest, node_default: u32) -> u32 {
    if req.options.vad_filter && req.segments.is_none() {
        node_default
    } else {
        1
    }
}

/// Samples above which the fingerprint is computed on the blocking pool
/// (a minute of audio hashes in well under a millisecond inline).
const INLINE_FINGERPRINT_SAMPLES: usize = 60 * asr_ipc::SAMPLE_RATE as usize;

/// `req` with its audio's fingerprint.
async fn fingerprinted(mut req: TranscriptionRequest) -> Result<TranscriptionRequest, AsrError> {
    if req.samples.len() <= INLINE_FINGERPRINT_SAMPLES {
        req.fingerprint = Some(crate::actors::job::fingerprint(&req.samples));
        return Ok(req);
    }
    tokio::task::spawn_blocking(move || {
        req.fingerprint = Some(crate::actors::job::fingerprint(&req.samples));
        req
    })
    .await
    .map_err(|e| AsrError::Internal(format!("fingerprint task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_default_batches_only_vad_requests_without_a_stream() {
        let mut req = TranscriptionRequest::new(vec![0; 16]);
        req.options.vad_filter = true;
        assert_eq!(default_batch_size(&req, 8), 8);
        req.options.vad_filter = false;
        assert_eq!(default_batch_size(&req, 8), 1, "no VAD: sequential");
        req.options.vad_filter = true;
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        req.segments = Some(tx);
        assert_eq!(default_batch_size(&req, 8), 1, "a stream: sequential");
    }
}

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
//! let pcm: Vec<f32> = vec![0.0; 16_000]; // 16 kHz mono
//! let transcript = node.transcribe(TranscriptionRequest::new(pcm)).await?;
//! println!("{}", transcript.result.text);
//! node.shutdown().await;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use ractor::{Actor, ActorRef};

use crate::actors::supervisor::{Handles, SupervisorArgs};
use crate::actors::{IngressMsg, QueueMsg, Shared, SupervisorActor, SupervisorMsg};
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

/// The node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The worker could not load the model.
    #[error("the worker could not load the model at {model_path}: {cause}")]
    ModelLoad {
        /// Model path tried.
        model_path: String,
        /// Cause.
        cause: String,
    },
    /// The worker binary could not be started.
    #[error("could not start the worker {path}: {cause}")]
    WorkerSpawn {
        /// Worker path tried.
        path: String,
        /// Cause.
        cause: String,
    },
    /// An actor failed to spawn.
    #[error("actor start-up failed: {0}")]
    Actor(String),
}

impl AsrNode {
    /// Starts the supervision tree on the current tokio runtime and waits
    /// until the worker has loaded the model (or failed to, which is an
    /// error naming the model path and the cause).
    pub async fn start(config: NodeConfig) -> Result<AsrNode, StartError> {
        config.validate()?;
        let config = Arc::new(config);
        let shared = Arc::new(Shared::new(config.queue_capacity));
        let (startup, started) = tokio::sync::oneshot::channel();
        let (supervisor, _) = Actor::spawn(
            None,
            SupervisorActor,
            SupervisorArgs {
                config: config.clone(),
                shared: shared.clone(),
                startup,
            },
        )
        .await
        .map_err(|e| StartError::Actor(e.to_string()))?;
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
    pub async fn transcribe(&self, req: TranscriptionRequest) -> Result<Transcript, AsrError> {
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

    /// The root supervisor, for hosts that link the node into their own tree.
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

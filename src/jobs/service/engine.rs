//! The seam between the job service and the node: what the runner and the
//! acceptance path need from an [`AsrNode`] ([`Engine`]), so the service
//! can be unit-tested against a fake node without a model.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::api::{AsrError, Transcript, TranscriptionRequest};
use crate::ingest::Ingest;
use crate::node::AsrNode;

/// What the service needs from the node; [`AsrNode`] in production, a
/// fake in unit tests.
pub(crate) trait Engine: Send + Sync + 'static {
    /// Submits a job and waits for its answer.
    fn transcribe(
        &self,
        req: TranscriptionRequest,
    ) -> BoxFuture<'static, Result<Transcript, AsrError>>;
    /// What the node is doing now; never waits.
    fn load(&self) -> EngineLoad;
    /// A receiver marked changed whenever [`Engine::load`] may have
    /// changed, so the runners wait for an idle node instead of polling.
    fn load_changes(&self) -> watch::Receiver<()>;
    /// The node's limits for uploads.
    fn limits(&self) -> EngineLimits;
    /// The node's shared ingest limits (decode slots, PCM budget, uploads).
    fn ingest(&self) -> Ingest;
}

/// A glance at the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EngineLoad {
    /// A request sent now would be admitted.
    pub ready: bool,
    /// Nothing waits in the node's queue and nothing is being decoded.
    pub idle: bool,
    /// The node is draining.
    pub shutting_down: bool,
}

/// The node's limits that the acceptance path applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineLimits {
    /// Largest upload, bytes.
    pub max_upload_bytes: usize,
    /// Longest audio, seconds.
    pub max_audio_secs: f64,
    /// The node's default beam size.
    pub beam_size: u32,
    /// Whether `X-Fault-Inject` is honoured.
    pub fault_injection: bool,
    /// The node's shutdown grace period.
    pub shutdown_grace: Duration,
}

impl Engine for AsrNode {
    fn transcribe(
        &self,
        req: TranscriptionRequest,
    ) -> BoxFuture<'static, Result<Transcript, AsrError>> {
        let node = self.clone();
        Box::pin(async move { node.transcribe(req).await })
    }

    fn load(&self) -> EngineLoad {
        let s = self.status();
        EngineLoad {
            ready: s.ready,
            idle: s.queue_depth == 0 && s.in_flight == 0,
            shutting_down: s.shutting_down,
        }
    }

    fn load_changes(&self) -> watch::Receiver<()> {
        self.status_changes()
    }

    fn limits(&self) -> EngineLimits {
        let c = self.config();
        EngineLimits {
            max_upload_bytes: c.max_upload_bytes,
            max_audio_secs: c.max_audio_secs,
            beam_size: c.beam_size,
            fault_injection: c.enable_fault_injection,
            shutdown_grace: c.shutdown_grace(),
        }
    }

    fn ingest(&self) -> Ingest {
        AsrNode::ingest(self).clone()
    }
}

//! The ractor supervision tree.
//!
//! ```text
//! SupervisorActor ── restart strategy per worker (intensity limit, then backoff)
//!   ├── IngressActor        job ids, spans, per-request limits
//!   ├── BoundedQueueActor   admission, deadlines, dispatch to any idle worker
//!   └── WorkerProxyActor ×N owns one worker-proc child (restarted; --workers)
//! ```

pub mod child;
pub mod ingress;
pub mod job;
pub mod queue;
pub mod shared;
pub mod supervisor;
#[cfg(test)]
pub(crate) mod testing;
pub mod worker_proxy;

pub use ingress::{IngressActor, IngressMsg};
pub use queue::{BoundedQueueActor, QueueMsg, QueuedJob};
pub use shared::Shared;
pub use supervisor::{SupervisorActor, SupervisorMsg};
pub use worker_proxy::{WorkerProxyActor, WorkerProxyMsg};

//! A supervised Whisper speech-to-text serving node.
//!
//! Clients upload audio over HTTP; the node answers with text and segments,
//! or with a fast, explicit status (busy, timed out, worker restarting, bad
//! input). The inference engine (CTranslate2 through `ct2rs`) is not
//! thread-safe and can crash natively, so it runs strictly serially in a
//! child process (`worker-proc`) that the node supervises.
//!
//! # Layout
//! - [`config`]: the one configuration struct, CLI flags and env variables.
//! - [`api`]: request, answer and error types shared by HTTP and the actors.
//! - [`node`]: [`AsrNode`], the handle that starts the tree and submits jobs;
//!   what a host application embeds.
//! - [`actors`]: the ractor supervision tree: supervisor, ingress, bounded
//!   queue, worker proxy (which owns the child process).
//! - [`audio`]: in-process, streaming decoding of uploads (symphonia) and
//!   resampling to 16 kHz mono 16-bit PCM (rubato), before anything is
//!   queued.
//! - [`ingest`]: [`ingest::Ingest`], the limits shared by every upload
//!   and decode (concurrent uploads, decode slots, the decoded-PCM memory
//!   budget).
//! - [`http`]: actix-web routes (`/v1/audio/transcriptions`, `/health`,
//!   `/ready`, `/metrics`), errors → status codes, and [`http::configure`]
//!   for mounting the routes in a host's `App`.
//! - [`telemetry`]: logging, OTLP trace export, and the spans of a request
//!   (`http.request` → `asr.job` → `queue.wait`, `worker.decode` → phases).
//! - [`metrics`]: the Prometheus metrics and their recorder.
//! - [`jobs`]: async jobs (`/v1/jobs`): [`jobs::JobService`], an in-memory
//!   job table with a crash-safe SQLite store owned by one writer thread,
//!   and the runner that feeds the node one async job at a time.
//! - `asr_ipc` (crate `ipc/`): the framed protocol spoken with the worker.

#![warn(missing_docs)]

#[cfg(feature = "actix")]
pub mod actix_actor;
pub mod actors;
pub mod api;
pub mod audio;
pub mod config;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod metrics;
pub mod node;
pub mod telemetry;

pub use api::{AsrError, NodeStatus, Transcript, TranscriptionRequest};
pub use config::NodeConfig;
pub use node::AsrNode;

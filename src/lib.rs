//! A supervised Whisper speech-to-text serving node.
//!
//! Clients upload audio over HTTP; the node answers with text and segments,
//! or with a fast, explicit status (busy, timed out, worker restarting, bad
//! input). The inference engine (CTranslate2 through `ct2rs`) is not
//! thread-safe and can crash natively, so it runs strictly serially in a
//! child process (`worker-proc`) that the node supervises; `--workers N`
//! (or `--devices`) runs N of them side by side behind the one queue.
//!
//! # Layout
//! - [`config`]: the one configuration struct, CLI flags and env variables.
//! - [`error_code`]: the one table of error codes (name, HTTP status, type)
//!   every error maps into, and every metric label uses.
//! - [`api`]: request, answer and error types shared by HTTP and the actors.
//! - [`node`]: [`AsrNode`], the handle that starts the tree and submits jobs;
//!   what a host application embeds.
//! - [`actors`]: the ractor supervision tree: supervisor, ingress, bounded
//!   queue, worker proxies (each owns one child process).
//! - [`workers`]: the worker pool's layout (`--workers`, `--devices`):
//!   each worker's id, device and engine threads.
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
//! - [`server`]: the whole service as one call, [`server::run`] on a
//!   listener until a shutdown future resolves (what `whisper-node` runs).
//! - `actix_actor` (feature `actix`): the node as an actix actor.
//! - `asr_ipc` (crate `ipc/`): the framed protocol spoken with the worker.
//!
//! # Ways in for a host application
//! Every one reaches the same actor tree (one bounded queue, its worker
//! processes, the same admission rules and typed answers):
//! - **tokio**: [`AsrNode::start`] → [`AsrNode::transcribe`] with 16 kHz
//!   mono `i16` PCM; [`AsrNode::status`], [`AsrNode::shutdown`].
//! - **actix-web**: mount the HTTP API in the host's own `App` with
//!   [`http::configure`] (and [`http::app_data`] for the node), under any
//!   scope, beside the host's routes.
//! - **ractor**: [`AsrNode::spawn_linked`] starts the ASR tree as a child of
//!   a host actor, which receives its supervision events
//!   (`examples/ractor_host.rs`).
//! - **actix actors** (feature `actix`): `actix_actor::AsrActor`, with
//!   handlers for `Transcribe`, `TranscribeAudio` and `GetStatus`
//!   (`examples/actix_host.rs`).

#![warn(missing_docs)]

#[cfg(feature = "actix")]
pub mod actix_actor;
pub mod actors;
pub mod api;
pub mod audio;
pub mod cli;
pub mod config;
pub mod error_code;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod language;
pub mod metrics;
pub mod node;
pub mod realtime;
pub mod server;
pub mod telemetry;
pub mod workers;

pub use api::{AsrError, JobClass, NodeStatus, Transcript, TranscriptionRequest};
pub use config::NodeConfig;
pub use node::AsrNode;

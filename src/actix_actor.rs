//! The node as an [actix](https://docs.rs/actix) actor, for hosts built on
//! actix (feature `actix`).
//!
//! [`AsrActor`] wraps an [`AsrNode`]: an actix-based node sends it messages
//! like to any of its own actors, and gets the same typed answers the HTTP
//! layer turns into status codes:
//!
//! | message | answer |
//! | --- | --- |
//! | [`Transcribe`] (16 kHz mono PCM and options) | `Result<Transcript, AsrError>` |
//! | [`TranscribeAudio`] (an encoded file: WAV, FLAC, MP3, Ogg, M4A…) | `Result<Transcript, TranscribeError>` |
//! | [`GetStatus`] | [`NodeStatus`] |
//!
//! Busy ([`AsrError::Busy`] with its Retry-After), queue and decode
//! timeouts, a restarting worker ([`AsrError::Unavailable`]) and shutdown
//! come back as those variants, exactly as over HTTP; bad audio as
//! [`TranscribeError::Audio`].
//!
//! ```no_run
//! # #[actix::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use actix::Actor;
//! use whisper_node::actix_actor::{AsrActor, TranscribeAudio};
//! use whisper_node::{AsrNode, NodeConfig};
//!
//! let node = AsrNode::start(NodeConfig::default()).await?;
//! let asr = AsrActor::new(node.clone()).start();
//! let wav = std::fs::read("tests/fixtures/speech/hello.wav")?;
//! let transcript = asr.send(TranscribeAudio::new(wav.into())).await??;
//! println!("{}", transcript.result.text);
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The actor holds no state of its own and never blocks its arbiter: each
//! message becomes a future that waits on the ractor tree (the one queue
//! and worker every other entry point shares); an encoded file is decoded
//! through the node's shared decode path ([`crate::ingest::Ingest`]: decode
//! slots on the blocking pool, the length limit, the PCM memory budget),
//! like HTTP uploads. Several `AsrActor`s (one per arbiter, say)
//! may wrap clones of the same node. Stopping the actor does not stop the
//! node: [`AsrNode::shutdown`] does.

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use bytes::Bytes;

use crate::api::{AsrError, DecodeOptions, NodeStatus, Transcript, TranscriptionRequest};
use std::sync::Arc;

use crate::audio::{AudioError, Upload};
use crate::ingest::IngestError;
use crate::node::AsrNode;

/// The node, as an actix actor.
#[derive(Debug, Clone)]
pub struct AsrActor {
    node: AsrNode,
}

impl AsrActor {
    /// Wraps a started node.
    pub fn new(node: AsrNode) -> Self {
        Self { node }
    }
}

impl Actor for AsrActor {
    type Context = Context<Self>;
}

/// Transcribe decoded audio (16 kHz mono PCM).
#[derive(Debug, Message)]
#[rtype(result = "Result<Transcript, AsrError>")]
pub struct Transcribe(pub TranscriptionRequest);

/// Transcribe an encoded audio file (any format the HTTP endpoint takes).
#[derive(Debug, Message)]
#[rtype(result = "Result<Transcript, TranscribeError>")]
pub struct TranscribeAudio {
    /// The file's bytes.
    pub audio: Bytes,
    /// File extension or MIME type, if known (the format is detected from
    /// the bytes; a wrong hint does no harm).
    pub format_hint: Option<String>,
    /// Decode options.
    pub options: DecodeOptions,
}

impl TranscribeAudio {
    /// A file with default options.
    pub fn new(audio: Bytes) -> Self {
        Self {
            audio,
            format_hint: None,
            options: DecodeOptions::default(),
        }
    }
}

/// The node's status snapshot (never waits on the actors).
#[derive(Debug, Message)]
#[rtype(result = "NodeStatus")]
pub struct GetStatus;

/// Why a [`TranscribeAudio`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    /// The file could not be decoded (or is too long); nothing was queued.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The node's answer: busy, timeout, worker restarting, …
    #[error(transparent)]
    Asr(#[from] AsrError),
}

impl Handler<Transcribe> for AsrActor {
    type Result = ResponseFuture<Result<Transcript, AsrError>>;

    fn handle(&mut self, msg: Transcribe, _ctx: &mut Context<Self>) -> Self::Result {
        let node = self.node.clone();
        Box::pin(async move { node.transcribe(msg.0).await })
    }
}

impl Handler<TranscribeAudio> for AsrActor {
    type Result = ResponseFuture<Result<Transcript, TranscribeError>>;

    fn handle(&mut self, msg: TranscribeAudio, _ctx: &mut Context<Self>) -> Self::Result {
        let node = self.node.clone();
        Box::pin(async move {
            // A full queue is answered before the file is decoded, as over
            // HTTP.
            node.admission_precheck()?;
            // The node's one decode path: a decode slot, the blocking pool,
            // the length limit and the shared PCM budget, whose lease is
            // held until the answer (the queued samples are in memory).
            let (decoded, lease) = node
                .ingest()
                .decode(Arc::new(Upload::from(msg.audio)), msg.format_hint)
                .await
                .map_err(|e| match e {
                    IngestError::Audio(e) => TranscribeError::Audio(e),
                    IngestError::Internal(e) => {
                        TranscribeError::Asr(AsrError::Internal(format!("audio decode: {e}")))
                    }
                })?;
            let mut request = TranscriptionRequest::new(decoded.samples);
            request.options = msg.options;
            let answer = node.transcribe(request).await;
            drop(lease);
            Ok(answer?)
        })
    }
}

impl Handler<GetStatus> for AsrActor {
    type Result = actix::MessageResult<GetStatus>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.node.status())
    }
}

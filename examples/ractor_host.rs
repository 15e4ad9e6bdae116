//! A ractor host that runs the ASR tree as a child of its own supervisor.
//!
//! ```sh
//! make build   # the worker and the engine
//! cargo run --release --example ractor_host -- models/tiny.en tests/fixtures/speech/hello.wav
//! ```
//!
//! The host actor starts the node linked under itself
//! ([`AsrNode::spawn_linked`]), transcribes the file, shuts the node down
//! gracefully and sees the ASR tree's supervisor terminate in its own
//! `handle_supervisor_evt`, as it would if the tree stopped on its own.

use std::path::PathBuf;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;
use whisper_node::{AsrNode, NodeConfig, TranscriptionRequest};

/// The host's own supervisor.
struct Host;

struct HostArgs {
    config: NodeConfig,
    started: oneshot::Sender<AsrNode>,
    asr_ended: oneshot::Sender<String>,
}

struct HostState {
    asr_supervisor: ractor::ActorId,
    asr_ended: Option<oneshot::Sender<String>>,
}

impl Actor for Host {
    type Msg = ();
    type State = HostState;
    type Arguments = HostArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        args: HostArgs,
    ) -> Result<HostState, ActorProcessingErr> {
        // Returns once the worker has loaded the model.
        let node = AsrNode::spawn_linked(myself.get_cell(), args.config).await?;
        let asr_supervisor = node.supervisor().get_id();
        let _ = args.started.send(node);
        Ok(HostState {
            asr_supervisor,
            asr_ended: Some(args.asr_ended),
        })
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        // The host's policy: note the end of the ASR tree and keep running
        // (a real host might start a new node, or stop itself).
        let what = match &event {
            SupervisionEvent::ActorTerminated(cell, _, reason)
                if cell.get_id() == state.asr_supervisor =>
            {
                format!(
                    "the ASR tree stopped ({})",
                    reason.as_deref().unwrap_or("no reason")
                )
            }
            SupervisionEvent::ActorFailed(cell, err) if cell.get_id() == state.asr_supervisor => {
                format!("the ASR tree failed: {err}")
            }
            _ => return Ok(()),
        };
        if let Some(tx) = state.asr_ended.take() {
            let _ = tx.send(what);
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model_dir = PathBuf::from(args.next().unwrap_or_else(|| "models/tiny.en".into()));
    let wav = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "tests/fixtures/speech/hello.wav".into()),
    );
    let config = NodeConfig {
        model_dir,
        ..NodeConfig::default()
    };

    let (started, node) = oneshot::channel();
    let (asr_ended, ended) = oneshot::channel();
    let (host, host_handle) = Actor::spawn(
        None,
        Host,
        HostArgs {
            config,
            started,
            asr_ended,
        },
    )
    .await?;
    let node = node.await?;

    let bytes = std::fs::read(&wav)?;
    let pcm = whisper_node::audio::decode_to_mono_16k(&bytes, None)?;
    let transcript = node.transcribe(TranscriptionRequest::new(pcm)).await?;
    println!("transcript: {}", transcript.result.text);

    node.shutdown().await;
    println!("host: {}", ended.await?);

    host.stop(None);
    host_handle.await?;
    Ok(())
}

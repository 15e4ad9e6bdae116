//! An actix host that talks to the node through its actor (feature `actix`).
//!
//! ```sh
//! make build
//! cargo run --release --features actix --example actix_host -- models/tiny.en tests/fixtures/speech/hello.wav
//! ```

use std::path::PathBuf;

use actix::Actor;
use whisper_node::actix_actor::{AsrActor, GetStatus, TranscribeAudio, TranscribeError};
use whisper_node::{AsrError, AsrNode, NodeConfig};

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model_dir = PathBuf::from(args.next().unwrap_or_else(|| "models/tiny.en".into()));
    let file = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "tests/fixtures/speech/hello.wav".into()),
    );
    let node = AsrNode::start(NodeConfig {
        model_dir,
        ..NodeConfig::default()
    })
    .await?;
    let asr = AsrActor::new(node.clone()).start();

    let status = asr.send(GetStatus).await?;
    println!("model {:?} ready: {}", status.model, status.ready);

    let audio = std::fs::read(&file)?;
    match asr.send(TranscribeAudio::new(audio.into())).await? {
        Ok(t) => println!("transcript: {}", t.result.text),
        // The same answers the HTTP layer maps to 429 / 503 / 504 / 4xx.
        Err(TranscribeError::Asr(AsrError::Busy { retry_after, .. })) => {
            println!("busy, retry after {retry_after:?}")
        }
        Err(e) => println!("failed: {e}"),
    }
    node.shutdown().await;
    Ok(())
}

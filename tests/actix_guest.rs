//! The node as an actix actor (feature `actix`, on in `make test`): an
//! actix host sends it PCM, an encoded file, bad audio and a status query,
//! and gets the typed answers HTTP clients get as status codes.
#![cfg(feature = "actix")]

mod common;

use actix::Actor;
use common::*;
use whisper_node::actix_actor::{
    AsrActor, GetStatus, Transcribe, TranscribeAudio, TranscribeError,
};
use whisper_node::{AsrError, AsrNode, NodeConfig, TranscriptionRequest};

#[actix_web::test]
async fn an_actix_host_transcribes_through_the_actor() {
    let node = AsrNode::start(NodeConfig {
        model_dir: model_dir(),
        worker_path: Some(worker_bin()),
        threads: 2,
        // One worker, one job per decode, one waiting: the test fills the
        // node to see Busy.
        workers: Some(1),
        max_batch: 1,
        queue_capacity: 1,
        ..NodeConfig::default()
    })
    .await
    .expect("node starts");
    let asr = AsrActor::new(node.clone()).start();

    let status = asr.send(GetStatus).await.expect("mailbox");
    assert!(status.ready);
    assert_eq!(status.model.as_deref(), Some("tiny.en"));

    // An encoded file.
    let wav = std::fs::read(fixture("hello.wav")).unwrap();
    let t = asr
        .send(TranscribeAudio::new(wav.clone().into()))
        .await
        .expect("mailbox")
        .expect("transcribes");
    assert_words(&t.result.text, &["hello", "world"]);

    // Decoded PCM.
    let pcm = whisper_node::audio::decode_to_mono_16k(&wav, Some("wav")).unwrap();
    let t = asr
        .send(Transcribe(TranscriptionRequest::new(pcm)))
        .await
        .expect("mailbox")
        .expect("transcribes");
    assert_words(&t.result.text, &["hello", "world"]);

    // Bad audio is a typed audio error; nothing is queued.
    let err = asr
        .send(TranscribeAudio::new(
            b"definitely not audio".to_vec().into(),
        ))
        .await
        .expect("mailbox")
        .expect_err("garbage is refused");
    assert!(matches!(err, TranscribeError::Audio(_)), "{err:?}");

    // A full node answers Busy with its Retry-After, as HTTP answers 429:
    // a long job in flight, one waiting (capacity 1), then one more.
    let long = std::fs::read(fixture("long60.wav")).unwrap();
    let first = asr.send(TranscribeAudio::new(long.clone().into()));
    let second = asr.send(TranscribeAudio::new(long.clone().into()));
    let first = actix::spawn(first);
    let second = actix::spawn(second);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s = asr.send(GetStatus).await.unwrap();
        if s.in_flight == 1 && s.queue_depth == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queue never filled: {s:?}"
        );
        actix::clock::sleep(std::time::Duration::from_millis(20)).await;
    }
    let busy = asr
        .send(TranscribeAudio::new(wav.into()))
        .await
        .expect("mailbox")
        .expect_err("the queue is full");
    match busy {
        TranscribeError::Asr(AsrError::Busy { retry_after, .. }) => {
            assert!(
                retry_after >= std::time::Duration::from_secs(1),
                "{retry_after:?}"
            )
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(first.await.unwrap().unwrap().is_ok());
    assert!(second.await.unwrap().unwrap().is_ok());
    node.shutdown().await;
}

//! Embedding: a host's own actix-web `App` mounts the node's routes with
//! `configure` (under its own scope, next to its own routes) and transcribes
//! through them; the host also uses the `AsrNode` handle directly.

mod common;

use actix_web::{test, web, App};
use common::*;
use whisper_node::{AsrNode, NodeConfig, TranscriptionRequest};

fn multipart(file: &[u8], filename: &str) -> (String, Vec<u8>) {
    let boundary = "host-boundary-7d1c";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[actix_web::test]
async fn a_host_app_mounts_the_routes_and_transcribes() {
    let config = NodeConfig {
        model_dir: model_dir(),
        worker_path: Some(worker_bin()),
        threads: 2,
        ..NodeConfig::default()
    };
    let node = AsrNode::start(config).await.expect("node starts");

    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(node.clone()))
            .route(
                "/host/hello",
                web::get().to(|| async { "the host's own route" }),
            )
            .service(web::scope("/asr").configure(whisper_node::http::configure)),
    )
    .await;

    let resp = test::call_service(
        &app,
        test::TestRequest::get().uri("/host/hello").to_request(),
    )
    .await;
    assert!(resp.status().is_success());

    let resp = test::call_service(
        &app,
        test::TestRequest::get().uri("/asr/ready").to_request(),
    )
    .await;
    assert_eq!(resp.status(), 200);

    let (ctype, body) = multipart(&std::fs::read(fixture("hello.wav")).unwrap(), "hello.wav");
    let req = test::TestRequest::post()
        .uri("/asr/v1/audio/transcriptions")
        .insert_header(("content-type", ctype))
        .set_payload(body)
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = test::read_body_json(resp).await;
    assert_words(json["text"].as_str().unwrap(), &["hello", "world"]);

    // The library API, without HTTP: PCM in, transcript out.
    let pcm = whisper_node::audio::decode_to_mono_16k(
        &std::fs::read(fixture("hello.wav")).unwrap(),
        Some("wav"),
    )
    .expect("decode fixture");
    let t = node
        .transcribe(TranscriptionRequest::new(pcm))
        .await
        .expect("transcribes");
    assert_words(&t.result.text, &["hello", "world"]);
    assert_eq!(t.worker_generation, 0);

    node.shutdown().await;
    assert!(!node.status().ready, "not ready after shutdown");
}

/// A ractor host: the ASR tree runs linked under the host's own supervisor,
/// which sees it stop (here after a graceful shutdown from the host).
mod ractor_host {
    use super::*;
    use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
    use tokio::sync::{mpsc, oneshot};

    pub struct Host;

    pub struct Args {
        pub config: NodeConfig,
        pub started: oneshot::Sender<AsrNode>,
        pub events: mpsc::UnboundedSender<(ractor::ActorId, Option<String>)>,
    }

    impl Actor for Host {
        type Msg = ();
        type State = mpsc::UnboundedSender<(ractor::ActorId, Option<String>)>;
        type Arguments = Args;

        async fn pre_start(
            &self,
            myself: ActorRef<()>,
            args: Args,
        ) -> Result<Self::State, ActorProcessingErr> {
            let node = AsrNode::spawn_linked(myself.get_cell(), args.config).await?;
            let _ = args.started.send(node);
            Ok(args.events)
        }

        async fn handle_supervisor_evt(
            &self,
            _myself: ActorRef<()>,
            event: SupervisionEvent,
            events: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            match event {
                SupervisionEvent::ActorTerminated(cell, _, reason) => {
                    let _ = events.send((cell.get_id(), reason));
                }
                SupervisionEvent::ActorFailed(cell, err) => {
                    let _ = events.send((cell.get_id(), Some(format!("failed: {err}"))));
                }
                _ => {}
            }
            Ok(())
        }
    }
}

#[tokio::test]
async fn a_ractor_host_supervises_the_asr_tree_and_sees_it_stop() {
    let config = NodeConfig {
        model_dir: model_dir(),
        worker_path: Some(worker_bin()),
        threads: 2,
        ..NodeConfig::default()
    };
    let (started, node) = tokio::sync::oneshot::channel();
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let (host, host_handle) = ractor::Actor::spawn(
        None,
        ractor_host::Host,
        ractor_host::Args {
            config,
            started,
            events: events_tx,
        },
    )
    .await
    .expect("host starts");
    let node = node.await.expect("the host started the node");
    let asr_supervisor = node.supervisor().get_id();

    // The tree is the host's child, and it works.
    let children: Vec<_> = host.get_children().iter().map(|c| c.get_id()).collect();
    assert!(
        children.contains(&asr_supervisor),
        "ASR supervisor {asr_supervisor} not among the host's children {children:?}"
    );
    let pcm = whisper_node::audio::decode_to_mono_16k(
        &std::fs::read(fixture("hello.wav")).unwrap(),
        Some("wav"),
    )
    .expect("decode fixture");
    let t = node
        .transcribe(TranscriptionRequest::new(pcm))
        .await
        .expect("transcribes");
    assert_words(&t.result.text, &["hello", "world"]);
    assert!(events.try_recv().is_err(), "no event while the tree runs");

    // The host stops it gracefully and is told, with the reason.
    node.shutdown().await;
    let (id, reason) = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
        .await
        .expect("the host saw the ASR tree stop within 10 s")
        .expect("event channel open");
    assert_eq!(id, asr_supervisor);
    assert_eq!(reason.as_deref(), Some("shutdown"));
    // The host itself is still alive: what to do is its decision.
    assert_eq!(host.get_status(), ractor::ActorStatus::Running);
    host.stop(None);
    host_handle.await.unwrap();
}

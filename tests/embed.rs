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
        // TEMPORARY widening until the request carries i16 (worker proxy).
        .transcribe(TranscriptionRequest::new(whisper_node::audio::i16_to_f32(
            &pcm,
        )))
        .await
        .expect("transcribes");
    assert_words(&t.result.text, &["hello", "world"]);
    assert_eq!(t.worker_generation, 0);

    node.shutdown().await;
    assert!(!node.status().ready, "not ready after shutdown");
}
